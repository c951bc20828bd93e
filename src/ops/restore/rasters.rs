//! Puts a snapshot's external raster objects (`backup::rasters`) back into their
//! storages, once the instance's database is restored: with the restored rows' own
//! endpoint, bucket, prefix and keys, after `--ngw-storage` moved a storage's row
//! elsewhere if asked. An object already there with the same content is left alone:
//! the same size and the ETag the snapshot recorded, or the same size and bytes.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;

use super::ngw::{same_content, NgwRestoreOutcome};
use crate::error::{Error, Result, Usage};
use crate::format::tree::Node;
use crate::ops::ngw_part::file_content;
use crate::progress::Progress;
use crate::repo::Repository;
use crate::source::ngw::Target;
use crate::source::raster_storage::{Bucket, RasterStorage, StorageMap, StoredObject, GDAL_REGION};

/// Where external rasters go on restore.
#[derive(Clone, Debug, Default)]
pub struct Placement {
    /// S3 region of the storages (`us-east-1` when `None`).
    pub region: Option<String>,
    /// Storages moved to another endpoint, bucket or prefix.
    pub map: Vec<StorageMap>,
}

/// Checks, before anything changes, that every storage `how` moves has objects in the
/// snapshot.
pub(super) fn check_map(objects: &[(StoredObject, Node)], how: &Placement) -> Result<()> {
    for m in &how.map {
        if !objects.iter().any(|(o, _)| o.storage == m.id) {
            return Err(Usage::NoSuchRasterStorage { id: m.id }.into());
        }
    }
    Ok(())
}

/// Restores `objects` into the storages of the restored database `target`: only those
/// its raster layers name (a snapshot's `$index` does not choose what is written
/// where). An object that cannot be put back is an error in `out.errors`.
pub(super) fn restore(
    repo: &Repository,
    objects: Vec<(StoredObject, Node)>,
    target: &mut Target,
    how: &Placement,
    progress: &dyn Progress,
    out: &mut NgwRestoreOutcome,
) -> Result<()> {
    for m in &how.map {
        target.move_raster_storage(m)?;
    }
    if objects.is_empty() {
        return Ok(());
    }
    let (storages, layers) = target.raster_objects()?;
    let named: HashSet<(i32, String)> = layers
        .into_iter()
        .map(|o| (o.storage, o.filename))
        .collect();
    let storages: HashMap<i32, RasterStorage> = storages.into_iter().map(|s| (s.id, s)).collect();
    let region = how.region.as_deref().unwrap_or(GDAL_REGION);
    let mut buckets: HashMap<i32, Result<Bucket>> = HashMap::new();
    for (o, node) in objects {
        let label = |s: Option<&RasterStorage>| match s {
            Some(s) => format!("{}: object {}", s.describe(), s.key(&o.filename)),
            None => format!("raster layer storage id {}: object {}", o.storage, o.key),
        };
        let s = storages.get(&o.storage);
        let entry = |e: Error| Error::Entry {
            path: label(s),
            source: Box::new(e),
        };
        if !named.contains(&(o.storage, o.filename.clone())) {
            out.errors.push(entry(Error::corrupt(
                "snapshot",
                "ngw/raster_layer_storage/$index",
                "no raster layer of the restored database names this object",
            )));
            continue;
        }
        let Some(s) = s else {
            out.errors.push(entry(Error::corrupt(
                "snapshot",
                "ngw/raster_layer_storage/$index",
                "its storage is not in the restored database",
            )));
            continue;
        };
        progress.entry(std::path::Path::new(&o.key));
        let bucket = match buckets
            .entry(s.id)
            .or_insert_with(|| Bucket::open(s, region))
        {
            Ok(b) => b,
            Err(e) => {
                out.errors.push(entry(Error::Storage {
                    location: s.describe(),
                    detail: e.to_string(),
                }));
                continue;
            }
        };
        match put_object(repo, bucket, s, &o, &node) {
            Ok(None) => out.objects_unchanged += 1,
            Ok(Some(n)) => {
                out.objects_written += 1;
                out.bytes_written += n;
            }
            Err(e) => out.errors.push(entry(e)),
        }
        progress.bytes(node.meta.size);
    }
    Ok(())
}

/// Puts one object in place unless the same content is there; the bytes written,
/// `None` when it was left alone.
fn put_object(
    repo: &Repository,
    bucket: &Bucket,
    s: &RasterStorage,
    o: &StoredObject,
    node: &Node,
) -> Result<Option<u64>> {
    let key = s.key(&o.filename);
    let content = file_content(&o.path, node)?;
    let size = node.meta.size;
    if let Some(head) = bucket.head(&key)? {
        if head.size == size {
            if head.etag == o.etag && !o.etag.is_empty() {
                return Ok(None);
            }
            let mut r = bucket.reader(&key, &head.etag)?;
            let label = PathBuf::from(format!("{}: object {key}", s.describe()));
            if same_content(repo, content, &mut r, &label)? {
                return Ok(None);
            }
        }
    }
    let n = bucket.put(&key, |w| repo.write_content(content, w))?;
    Ok(Some(n))
}
