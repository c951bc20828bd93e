//! Backup of a NextGIS Web instance, stored under `ngw/` in the snapshot:
//!
//! ```text
//! ngw/postgres/<pg_dump -Fd -Z0 files>   toc.dat, <dumpId>.dat, ...
//! ngw/postgres/restore                   NGW's pg_restore --use-list file
//! ngw/file_storage/<comp>/<u0u1>/<u2u3>/<uuid>   every blob fileobj lists
//! ngw/component/file_storage/$index      JSON Lines, exactly as NGW writes it
//! ngw/fonts/<name>, ngw/component/core/$index    custom fonts
//! ngw/raster_layer_storage/...           rasters kept in external S3 storages (`rasters`)
//! ```
//! A blob `fileobj` lists that is missing or unreadable fails the backup, as it fails
//! NGW's own; with `allow_missing` the snapshot is recorded without it (and without
//! its `$index` line, so that the snapshot's index lists exactly the blobs it holds),
//! and each such blob is a warning (exit 3).
//!
//! Blobs keep their file-storage paths (not the `{id:08d}` names of an `.ngwbackup`,
//! which shift whenever a row is added), so unchanged blobs are matched against the
//! parent by path and never re-read, and unchanged directories dedup whole. Dump files
//! are chunked with the stream profile, so an unchanged table costs nothing even when
//! pg_dump renumbers its file.

use rayon::prelude::*;

use super::db::{ingest_pg_dump, scratch};
use super::vdir::VDir;
use super::{rasters, BackupOptions, Run};
use crate::error::{Error, Result, SourceError};
use crate::format::id::TreeId;
use crate::format::tree::{Node, Timestamp};
use crate::repo::PathLookup;
use crate::source::command::Running;
use crate::source::fs as sfs;
use crate::source::ngw::{
    blob_snapshot_path, fileobj_index, font_index, font_snapshot_path, snapshot_path as comps,
    NgwConfig, Session,
};
use crate::source::raster_storage::GDAL_REGION;

/// The parent snapshot's entry at `path`, if it has one; a damaged parent only costs
/// re-reading.
fn parent_node(parent: Option<&PathLookup<'_>>, path: &[Vec<u8>]) -> Option<Node> {
    match parent?.node(path) {
        Ok(n) => n,
        Err(e) => {
            log::warn!("parent snapshot unreadable ({e}); reading those blobs again");
            None
        }
    }
}

/// Backs up the instance described by `cfg` into `root`. Any failure (database
/// unreachable, pg_dump failing, a listed blob missing) is an error: no snapshot;
/// with `allow_missing_blobs`, a listed blob missing or unreadable is a warning
/// instead. Returns the external raster storages left out (see [`rasters`]).
pub(super) fn backup(
    run: &Run<'_>,
    cfg: &NgwConfig,
    opts: &BackupOptions,
    parent_root: Option<TreeId>,
    root: &mut VDir,
    now: Timestamp,
) -> Result<Vec<String>> {
    let allow_missing = opts.allow_missing_blobs;
    let db = &cfg.db;
    log::debug!(
        "connecting to database {} on {}:{} as {}",
        db.name,
        db.host,
        db.port,
        db.user
    );
    let mut session = Session::begin(db)?;
    let mut objs = session.fileobjs()?;
    let (storages, rasters) = session.raster_objects()?;
    let fonts = cfg.fonts()?;
    log::debug!(
        "file storage {}: {} blobs listed, {} custom fonts",
        cfg.file_storage.display(),
        objs.len(),
        fonts.len()
    );

    let tmp_base = cfg.backup_tmpdir.clone().unwrap_or_else(std::env::temp_dir);
    let tmp = scratch(&tmp_base)?;
    let dump_dir = tmp.path().join("postgres");
    log::debug!("dumping database {} (pg_dump -Fd)", db.name);
    ingest_pg_dump(
        run,
        session.pg_dump(&dump_dir),
        "pg_dump of the NextGIS Web database",
        &dump_dir,
        root,
        &comps(&["postgres"]),
        now,
    )?;
    run.progress.phase(crate::progress::Phase::ReadingFiles);
    let mut list = std::process::Command::new("pg_restore");
    list.arg("--list").arg(&dump_dir);
    let listing = Running::capture(list, "pg_restore --list")?;
    let restore_list = session.restore_list(&listing)?;
    session.finish()?;
    drop(tmp);
    run.put_bytes(
        root,
        &comps(&["postgres", "restore"]),
        restore_list.into_bytes(),
        now,
    )?;

    let parent = parent_root.map(|root| PathLookup::new(run.repo, root));
    let blobs: Vec<(Vec<Vec<u8>>, std::path::PathBuf)> = objs
        .iter()
        .map(|o| {
            (
                blob_snapshot_path(&o.component, &o.uuid),
                cfg.blob_path(&o.component, &o.uuid),
            )
        })
        .chain(fonts.iter().map(|f| {
            let dir = cfg
                .sdir
                .as_ref()
                .expect("fonts come from sdir")
                .join("core/fontconfig");
            (font_snapshot_path(f), dir.join(f))
        }))
        .collect();
    let nodes: Vec<Option<Node>> = blobs
        .par_iter()
        .enumerate()
        .map(|(i, (at, path))| {
            let missing = |e: &dyn std::fmt::Display| {
                Error::from(SourceError::NgwFileUnreadable {
                    path: path.clone(),
                    why: e.to_string(),
                })
            };
            let node = match std::fs::symlink_metadata(path) {
                Err(e) => Err(missing(&e)),
                Ok(md) if !md.is_file() => Err(missing(&"not a regular file")),
                Ok(md) => {
                    let prev = parent_node(parent.as_ref(), at);
                    let name = at.last().expect("non-empty").clone();
                    run.file(path, name, md.clone(), sfs::meta_of(&md), prev.as_ref())?
                        .ok_or_else(|| missing(&run.last_warning()))
                }
            };
            match node {
                // Fonts (after the fileobj blobs) were listed from their directory.
                Err(e) if allow_missing && i < objs.len() => {
                    run.warn(format!(
                        "{e}: left out of the snapshot (--allow-missing-blobs)"
                    ));
                    Ok(None)
                }
                other => other.map(Some),
            }
        })
        .collect::<Result<_>>()?;
    log::debug!(
        "file storage stored: {} files, {} bytes (unchanged ones matched against the parent snapshot, not read)",
        nodes.iter().flatten().count(),
        nodes.iter().flatten().map(|n| n.meta.size).sum::<u64>()
    );
    let mut stored = Vec::with_capacity(nodes.len());
    for ((at, _), node) in blobs.iter().zip(nodes) {
        stored.push(node.is_some());
        if let Some(node) = node {
            root.insert(at, node)?;
        }
    }
    let mut kept = stored.into_iter();
    objs.retain(|_| kept.next().unwrap_or(true));
    for (component, text) in [
        ("file_storage", fileobj_index(&objs)),
        ("core", font_index(&fonts)),
    ] {
        if text.is_empty() {
            continue;
        }
        run.put_bytes(
            root,
            &comps(&["component", component, "$index"]),
            text.into_bytes(),
            now,
        )?;
    }
    rasters::backup(
        run,
        &storages,
        &rasters,
        opts.ngw_skip_external,
        allow_missing,
        opts.ngw_s3_region.as_deref().unwrap_or(GDAL_REGION),
        parent.as_ref(),
        root,
        now,
    )
}
