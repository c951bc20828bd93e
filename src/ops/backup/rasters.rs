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
use crate::ops::ngw_part::raster_index;
use crate::repo::PathLookup;
use crate::source::raster_storage::{
    plain_key, snapshot_path as at, Bucket, RasterObject, RasterStorage, StoredObject,
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
    match raster_index(run.repo, parent) {
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

/// Why a storage's objects could not be stored.
enum Fail {
    /// The storage could not be reached or read: `--ngw-skip-external` leaves it out.
    Unreachable(Error),
    /// Anything else fails the backup.
    Fatal(Error),
}

impl From<Error> for Fail {
    fn from(e: Error) -> Fail {
        Fail::Fatal(e)
    }
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
        // By key: `a.tif` and `/a.tif` name one object.
        let mut mine: Vec<(String, &RasterObject)> = objects
            .iter()
            .filter(|o| o.storage == s.id)
            .map(|o| (s.key(&o.filename), o))
            .collect();
        mine.sort_by(|a, b| a.0.cmp(&b.0));
        mine.dedup_by(|a, b| a.0 == b.0);
        if mine.is_empty() {
            continue;
        }
        // Keys that are other keys' folders (`r` beside `r/a`).
        let folders: HashSet<&str> = mine
            .iter()
            .flat_map(|(k, _)| k.match_indices('/').map(|(i, _)| &k[..i]))
            .collect();
        log::debug!("{}: {} objects", s.describe(), mine.len());
        let mut stored = Vec::new();
        let outcome = (|| -> Result<(), Fail> {
            let bucket = Bucket::open(s, region).map_err(Fail::Unreachable)?;
            for (key, o) in &mine {
                let key = key.clone();
                let odd = !plain_key(&key);
                let head = if odd {
                    None
                } else {
                    bucket.head(&key).map_err(Fail::Unreachable)?
                };
                let Some(head) = head else {
                    let what = if odd {
                        format!("object {key:?} of a raster layer cannot be read as named (S3 clients rewrite keys with empty, . or .. parts or spaces at the ends)")
                    } else {
                        format!("object {key:?} of a raster layer is missing")
                    };
                    if allow_missing {
                        run.warn(format!(
                            "{}: {what}: left out of the snapshot (--allow-missing-blobs)",
                            s.describe()
                        ));
                        continue;
                    }
                    return Err(Fail::Fatal(Error::Storage {
                        location: s.describe(),
                        detail: format!("{what}; no snapshot recorded (--allow-missing-blobs records one without it)"),
                    }));
                };
                let path = StoredObject::path_for(s.id, &key, folders.contains(key.as_str()));
                if !paths.insert(path.clone()) {
                    return Err(Fail::Fatal(Error::Storage {
                        location: s.describe(),
                        detail: format!(
                            "object {key:?} would be stored at {path:?}, where another object is"
                        ),
                    }));
                }
                let record = StoredObject {
                    storage: s.id,
                    name: s.name.clone(),
                    endpoint: s.endpoint.clone(),
                    bucket: s.bucket.clone(),
                    prefix: s.prefix.clone(),
                    filename: o.filename.clone(),
                    key,
                    size: head.size,
                    etag: head.etag,
                    modified: head.modified,
                    path,
                };
                let node = object(
                    run,
                    &bucket,
                    s,
                    &record,
                    before.get(&(s.id, record.key.clone())),
                    parent,
                )?;
                stored.push((record, node));
            }
            Ok(())
        })();
        match outcome {
            Ok(()) => {}
            Err(Fail::Unreachable(e)) if skip => {
                run.warn(format!(
                    "{e}: its rasters are left out of the snapshot (--ngw-skip-external)"
                ));
                skipped.push(s.describe());
                continue;
            }
            Err(Fail::Unreachable(Error::Storage { location, detail })) => {
                return Err(Error::Storage {
                    location,
                    detail: format!("{detail}; no snapshot recorded (--ngw-skip-external records one without this storage's rasters)"),
                })
            }
            Err(Fail::Unreachable(e) | Fail::Fatal(e)) => return Err(e),
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

/// The entry of the object `record` describes: the parent's when `old`, the parent's
/// record of it, matches in size, ETag and time; else downloaded, cut against the
/// parent's version.
fn object(
    run: &Run<'_>,
    bucket: &Bucket,
    s: &RasterStorage,
    record: &StoredObject,
    old: Option<&StoredObject>,
    parent: Option<&PathLookup<'_>>,
) -> Result<Node, Fail> {
    let old_content = match (old, parent) {
        (Some(old), Some(p)) => match p.node(&at(&old.path)) {
            Ok(Some(Node {
                kind: NodeKind::File(c),
                meta,
                ..
            })) => Some((old, c, meta)),
            _ => None,
        },
        _ => None,
    };
    if let Some((old, content, meta)) = &old_content {
        let same = (old.size, &old.etag, &old.modified)
            == (record.size, &record.etag, &record.modified)
            && !record.etag.is_empty();
        if same && run.reusable(content)? {
            add(&run.counts.files, 1);
            add(&run.counts.bytes_total, record.size);
            run.progress.items(1);
            return Ok(Node {
                name: Vec::new(),
                kind: NodeKind::File(content.clone()),
                meta: *meta,
            });
        }
    }
    let key = &record.key;
    run.progress.entry(std::path::Path::new(key));
    let prev = old_content.and_then(|(_, c, _)| run.hints(Some(c)));
    let changed = || {
        Fail::Fatal(Error::Storage {
            location: format!("{}: object {key}", s.describe()),
            detail: "it changed while being read; run the backup again".into(),
        })
    };
    let mut r = bucket
        .reader(key, &record.etag)
        .map_err(Fail::Unreachable)?;
    let read = run.ingest(&mut r, run.files_params, Some(record.size), prev)?;
    let (content, size) = match read {
        Ok(read) => read,
        // The read is made on the ETag of the HEAD: one that fails on a new ETag
        // found the object rewritten, not the store away.
        Err(_)
            if bucket
                .head(key)
                .ok()
                .flatten()
                .is_some_and(|h| h.etag != record.etag) =>
        {
            return Err(changed())
        }
        Err(e) => {
            return Err(Fail::Unreachable(Error::Storage {
                location: format!("{}: object {key}", s.describe()),
                detail: e.to_string(),
            }))
        }
    };
    if size != record.size {
        return Err(changed());
    }
    add(&run.counts.files, 1);
    add(&run.counts.files_read, 1);
    add(&run.counts.bytes_total, size);
    run.progress.items(1);
    Ok(Node {
        name: Vec::new(),
        kind: NodeKind::File(content),
        meta: super::vdir::synthetic_meta(STREAM_MODE, size, timestamp(&record.modified)),
    })
}
