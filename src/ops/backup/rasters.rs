//! The objects an NGW instance's raster layers keep in external S3-compatible storages
//! (NGW 5.4 and later), stored beside its file storage:
//!
//! ```text
//! ngw/raster_layer_storage/$index            JSON Lines, one StoredObject each
//! ngw/raster_layer_storage/<id>/<key>        each object, under its storage's id
//! ```
//! An object whose size, ETag and modification time equal the parent snapshot's record
//! of it is taken from the parent and not downloaded; a changed one is cut against its
//! previous version. A storage that cannot be reached fails the backup, naming it and
//! its endpoint; with `skip`, its objects are left out and the storage is named in the
//! snapshot's source and a warning. An object a layer names that is missing fails the
//! backup too, or with `allow_missing` is a warning.

use std::collections::{HashMap, HashSet};

use super::vdir::VDir;
use super::{add, Run, STREAM_MODE};
use crate::error::{Error, Result};
use crate::format::tree::{Node, NodeKind, Timestamp};
use crate::repo::PathLookup;
use crate::source::raster_storage::{
    snapshot_path as at, Bucket, RasterObject, RasterStorage, StoredObject,
};

/// The parent snapshot's records of objects, by storage and key; an unreadable parent
/// only costs downloading again.
fn parent_records(
    parent: Option<&PathLookup<'_>>,
    run: &Run<'_>,
) -> HashMap<(i32, String), StoredObject> {
    let Some(parent) = parent else {
        return HashMap::new();
    };
    let read = || -> Result<Vec<StoredObject>> {
        let Some(node) = parent.node(&at("$index"))? else {
            return Ok(Vec::new());
        };
        let NodeKind::File(content) = &node.kind else {
            return Ok(Vec::new());
        };
        let mut text = Vec::new();
        run.repo.write_content(content, &mut text)?;
        StoredObject::parse_index(&text)
    };
    match read() {
        Ok(v) => v
            .into_iter()
            .map(|o| ((o.storage, o.key.clone()), o))
            .collect(),
        Err(e) => {
            log::warn!("parent snapshot's raster storage index unreadable ({e}); downloading every object again");
            HashMap::new()
        }
    }
}

/// RFC 3339 to a tree timestamp (the epoch when the store gave none).
fn timestamp(rfc3339: &str) -> Timestamp {
    chrono::DateTime::parse_from_rfc3339(rfc3339).map_or(Timestamp { sec: 0, nsec: 0 }, |t| {
        Timestamp {
            sec: t.timestamp(),
            nsec: t.timestamp_subsec_nanos(),
        }
    })
}

/// Backs up `objects` of `storages` into `root`; returns the storages left out (with
/// `skip`), described.
#[allow(clippy::too_many_arguments)]
pub(super) fn backup(
    run: &Run<'_>,
    storages: &[RasterStorage],
    objects: &[RasterObject],
    skip: bool,
    allow_missing: bool,
    region: &str,
    parent: Option<&PathLookup<'_>>,
    root: &mut VDir,
    now: Timestamp,
) -> Result<Vec<String>> {
    if objects.is_empty() {
        return Ok(Vec::new());
    }
    let before = parent_records(parent, run);
    let mut index = String::new();
    let mut skipped = Vec::new();
    let mut paths = HashSet::new();
    for s in storages {
        let mine: Vec<&RasterObject> = objects.iter().filter(|o| o.storage == s.id).collect();
        if mine.is_empty() {
            continue;
        }
        log::debug!("{}: {} objects", s.describe(), mine.len());
        let mut stored = Vec::new();
        let outcome = (|| -> Result<()> {
            let bucket = Bucket::open(s, region)?;
            for o in &mine {
                let key = s.key(&o.filename);
                let Some(head) = bucket.head(&key)? else {
                    let e = format!(
                        "{}: object {key:?} of a raster layer is missing",
                        s.describe()
                    );
                    if allow_missing {
                        run.warn(format!(
                            "{e}: left out of the snapshot (--allow-missing-blobs)"
                        ));
                        continue;
                    }
                    return Err(Error::Storage {
                        location: s.describe(),
                        detail: format!("object {key:?} of a raster layer is missing; no snapshot recorded (--allow-missing-blobs records it without)"),
                    });
                };
                let path = StoredObject::path_for(s.id, &key);
                if !paths.insert(path.clone()) {
                    return Err(Error::Storage {
                        location: s.describe(),
                        detail: format!(
                            "object {key:?} would be stored at {path:?}, where another object is"
                        ),
                    });
                }
                let record = StoredObject {
                    storage: s.id,
                    name: s.name.clone(),
                    endpoint: s.endpoint.clone(),
                    bucket: s.bucket.clone(),
                    prefix: s.prefix.clone(),
                    filename: o.filename.clone(),
                    key: key.clone(),
                    size: head.size,
                    etag: head.etag.clone(),
                    modified: head.modified.clone(),
                    path,
                };
                let old = before.get(&(s.id, key.clone()));
                let old_node = match old {
                    Some(old) => parent.and_then(|p| p.node(&at(&old.path)).ok().flatten()),
                    None => None,
                };
                let unchanged = old.is_some_and(|old| {
                    (old.size, &old.etag, &old.modified) == (head.size, &head.etag, &head.modified)
                        && !head.etag.is_empty()
                });
                let node = match (&old_node, unchanged) {
                    (
                        Some(
                            n @ Node {
                                kind: NodeKind::File(c),
                                ..
                            },
                        ),
                        true,
                    ) if run.repo.content_complete(c)? => {
                        add(&run.counts.files, 1);
                        add(&run.counts.bytes_total, head.size);
                        run.progress.items(1);
                        n.clone()
                    }
                    _ => {
                        run.progress.entry(std::path::Path::new(&key));
                        let prev = match &old_node {
                            Some(Node {
                                kind: NodeKind::File(c),
                                ..
                            }) => run.hints(Some(c.clone())),
                            _ => None,
                        };
                        let mut r = bucket.reader(&key, &head.etag)?;
                        let (content, size) = run
                            .ingest(&mut r, run.files_params, Some(head.size), prev)?
                            .map_err(|e| Error::Storage {
                                location: format!("{}: object {key}", s.describe()),
                                detail: e.to_string(),
                            })?;
                        if size != head.size {
                            return Err(Error::Storage {
                                location: format!("{}: object {key}", s.describe()),
                                detail: format!("{size} bytes read where the store said {}: it changed while being read; run the backup again", head.size),
                            });
                        }
                        add(&run.counts.files, 1);
                        add(&run.counts.files_read, 1);
                        add(&run.counts.bytes_total, size);
                        run.progress.items(1);
                        Node {
                            name: Vec::new(),
                            kind: NodeKind::File(content),
                            meta: super::vdir::synthetic_meta(
                                STREAM_MODE,
                                size,
                                timestamp(&head.modified),
                            ),
                        }
                    }
                };
                stored.push((record, node));
            }
            Ok(())
        })();
        match outcome {
            Ok(()) => {}
            Err(e @ Error::Storage { .. }) if skip => {
                run.warn(format!("{e}: its rasters are left out of the snapshot (--ngw-skip-external)"));
                skipped.push(s.describe());
                continue;
            }
            Err(Error::Storage { location, detail }) => {
                return Err(Error::Storage {
                    location,
                    detail: format!("{detail}; no snapshot recorded (--ngw-skip-external records one without this storage's rasters)"),
                })
            }
            Err(e) => return Err(e),
        }
        for (record, node) in stored {
            root.insert(&at(&record.path), node)?;
            index.push_str(&record.line());
        }
    }
    if !index.is_empty() {
        run.put_bytes(root, &at("$index"), index.into_bytes(), now)?;
    }
    Ok(skipped)
}
