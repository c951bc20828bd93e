//! `sync`: copies snapshots with everything they need to another repository. When
//! the destination shares the source's id and key (`sync` creates it so when it is
//! empty), packs, index files and snapshot records travel as they are stored; into
//! any other repository the snapshots are rewritten (module `rewrite`).
//!
//! Copying as stored goes in this order, so the destination never shows a snapshot
//! whose data has not arrived:
//! 1. packs the destination lacks (or holds at another size), each checked against
//!    its name (the BLAKE3 of its bytes) before it is sent, several in flight;
//! 2. a listing of the destination that must show every sent pack at its size;
//! 3. index files: the source's own, where the destination holds every pack they list,
//!    and a new one for packs no such file covers;
//! 4. the snapshot records, last.
//!
//! Every file is written atomically, so an interrupted sync leaves whole files only,
//! and the next run sends just what is missing. What a killed run left in the
//! destination's `tmp/` goes at the end of the next one: the temp files of writers that
//! are gone (a dead PID on this host, or untouched for the lock staleness window), never
//! those of a live writer. Nothing else on the destination is deleted unless asked
//! (`delete`): then, after the copy, snapshot records, index files and packs the source
//! no longer has go, in that order.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};

use rayon::prelude::*;

use crate::error::{Error, Refusal, Result, Usage};
use crate::format::id::{Id, IndexFileId, PackId, SnapshotId, TreeId};
use crate::progress::Progress;
use crate::repo::reach::mark_reachable;
use crate::repo::{pack_path, PackRecord, Repository};

mod rewrite;

/// Packs in flight at once.
const IN_FLIGHT: usize = 4;
/// Largest pack file copied (packs are closed at 1 GiB at most).
const MAX_PACK: u64 = 2 << 30;

/// What to copy.
#[derive(Clone, Debug, Default)]
pub struct SyncOptions {
    /// The snapshots to copy; `None`: all.
    pub snapshots: Option<Vec<SnapshotId>>,
    /// Delete on the destination what the source no longer has (only with all
    /// snapshots).
    pub delete: bool,
}

/// What `sync` did.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct SyncReport {
    /// Snapshot records written to the destination.
    pub snapshots_sent: u64,
    /// Selected snapshots the destination had already.
    pub snapshots_present: u64,
    /// Packs sent.
    pub packs_sent: u64,
    /// Their bytes.
    pub bytes_sent: u64,
    /// Needed packs the destination had already.
    pub packs_present: u64,
    /// Index files copied from the source.
    pub index_files_sent: u64,
    /// Index files written for packs no copied index file covers.
    pub index_files_written: u64,
    /// Deleted on the destination (`delete`): snapshot records, index files, packs
    /// (rewritten copies: records and packs deleted or repacked by its prune).
    pub deleted: [u64; 3],
    /// The destination has other blob ids, so snapshots were rewritten, not copied as
    /// stored.
    pub rewritten: bool,
    /// Rewritten copies: new blobs stored on the destination (their stored bytes are
    /// `bytes_sent`).
    pub blobs_sent: u64,
    /// Rewritten copies: data chunks read from the source (the others were there
    /// from earlier runs).
    pub chunks_read: u64,
    /// Temp files of interrupted earlier writers removed from the destination.
    pub tmp_files_removed: u64,
}

/// Copies snapshots from `src` to `dst`: as stored when `dst` is a copy of `src` (same
/// repository id), else rewritten, each chunk re-hashed and re-sealed
/// for the destination.
pub fn sync(
    src: &Repository,
    dst: &Repository,
    opts: &SyncOptions,
    progress: &dyn Progress,
) -> Result<SyncReport> {
    if opts.delete && opts.snapshots.is_some() {
        return Err(Usage::DeleteWithChoice.into());
    }
    let mut report = if src.config().id == dst.config().id {
        copy_as_stored(src, dst, opts, progress)?
    } else {
        rewrite::copy(src, dst, opts, progress)?
    };
    report.tmp_files_removed = remove_orphaned_temp_files(dst)?;
    Ok(report)
}

/// Removes from `dst`'s `tmp/` the files of writers that are gone (see
/// [`crate::store::temp_is_orphan`]); returns how many.
fn remove_orphaned_temp_files(dst: &Repository) -> Result<u64> {
    let orphans: Vec<String> = dst
        .store()
        .list("tmp")?
        .into_iter()
        .filter(crate::store::temp_is_orphan)
        .map(|e| e.path)
        .collect();
    for p in &orphans {
        log::info!(
            "removing {}/{p}, left by a writer that is gone",
            dst.location()
        );
    }
    dst.store().delete_all(&orphans)?;
    Ok(orphans.len() as u64)
}

/// [`sync`] into a copy of `src` (same id): files travel as stored.
fn copy_as_stored(
    src: &Repository,
    dst: &Repository,
    opts: &SyncOptions,
    progress: &dyn Progress,
) -> Result<SyncReport> {
    let _src_lock = src.lock(false, "sync (source)")?;
    let dst_lock = dst.lock(opts.delete, "sync (destination)")?;
    let mut report = SyncReport::default();

    // What the chosen snapshots need.
    let all = src.snapshots()?;
    let chosen: Vec<SnapshotId> = match &opts.snapshots {
        None => all.iter().map(|(id, _)| *id).collect(),
        Some(ids) => ids.clone(),
    };
    let needed: Vec<(PackId, u64)> = if opts.snapshots.is_none() {
        src.index().packs_by_verification()?
    } else {
        let roots: Vec<TreeId> = all
            .iter()
            .filter(|(id, _)| chosen.contains(id))
            .map(|(_, s)| s.tree)
            .collect();
        let reach = mark_reachable(src, &roots)?;
        if let Some(p) = reach.problems.first() {
            return Err(Refusal::SyncSourceDamaged {
                blob: p.id.to_string(),
                why: p.why.clone(),
            }
            .into());
        }
        src.index()
            .pack_usage()?
            .into_iter()
            .filter(|u| u.live_blobs > 0)
            .map(|u| (u.name, u.size))
            .collect()
    };

    // 1. Packs.
    let there: HashMap<PackId, u64> = dst.pack_files()?.into_iter().collect();
    let send: Vec<(PackId, u64)> = needed
        .iter()
        .filter(|(id, size)| there.get(id) != Some(size))
        .copied()
        .collect();
    report.packs_present = (needed.len() - send.len()) as u64;
    let sent_bytes = AtomicU64::new(0);
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(IN_FLIGHT)
        .build()
        .map_err(|e| Error::internal("cannot start sync threads", Some(Box::new(e))))?;
    pool.install(|| {
        send.par_iter().try_for_each(|(id, _)| -> Result<()> {
            // A pack sent is kept by the next run: stopping between packs wastes none.
            crate::interrupt::check()?;
            let path = pack_path(id);
            let bytes = src.store().read(&path, MAX_PACK)?;
            if Id::hash(&bytes) != id.0 {
                return Err(Error::corrupt(
                    "pack",
                    id,
                    format!(
                        "in {} does not hash to its name; run `snap check` there; nothing more was sent",
                        src.location()
                    ),
                ));
            }
            dst.store().put(&path, &bytes)?;
            sent_bytes.fetch_add(bytes.len() as u64, Ordering::Relaxed);
            progress.bytes(bytes.len() as u64);
            Ok(())
        })
    })?;
    report.packs_sent = send.len() as u64;
    report.bytes_sent = sent_bytes.into_inner();

    // 2. Verify what arrived.
    let there: HashMap<PackId, u64> = dst.pack_files()?.into_iter().collect();
    for (id, size) in &needed {
        match there.get(id) {
            Some(s) if s == size => {}
            other => {
                return Err(Error::Storage {
                    location: format!("{}/{}", dst.location(), pack_path(id)),
                    detail: format!(
                        "after sending, the destination lists it {}, not at {size} bytes; rerun sync",
                        other.map_or("missing".to_string(), |s| format!("at {s} bytes"))
                    ),
                });
            }
        }
    }

    // 3. Index files. Those the destination has are in its cache already (with their
    // packs); the others are read once, and sent as read where all their packs arrived.
    let src_files = src.index_files()?;
    let dst_files = dst.index_files()?;
    let mut covered: HashSet<PackId> = HashSet::new();
    let needed_set: HashSet<PackId> = needed.iter().map(|(id, _)| *id).collect();
    let mut uncovered: Vec<PackRecord> = Vec::new();
    for f in src_files.difference(&dst_files) {
        let bytes = src.index_file_bytes(f)?;
        let packs = src.decode_index_file(f, &bytes)?;
        if packs.iter().all(|p| there.contains_key(&p.id)) {
            covered.extend(packs.iter().map(|p| p.id));
            dst.store().put(&format!("index/{}", f.to_hex()), &bytes)?;
            report.index_files_sent += 1;
        } else {
            uncovered.extend(packs.into_iter().filter(|p| needed_set.contains(&p.id)));
        }
    }
    // A pack the destination's own index files list needs no new listing.
    let dst_packs = dst.index().pack_names()?;
    uncovered.retain(|p| !covered.contains(&p.id) && !dst_packs.contains(&p.id));
    uncovered.sort_by_key(|p| p.id);
    uncovered.dedup_by(|a, b| a.id == b.id);
    for batch in crate::repo::batches(uncovered) {
        dst.write_index_file(&batch)?;
        report.index_files_written += 1;
    }

    // 4. Snapshot records, last, as the source's index holds them.
    let records: HashMap<SnapshotId, Vec<u8>> = src.index().snapshots()?.into_iter().collect();
    let dst_snaps: HashSet<SnapshotId> = dst
        .index()
        .snapshots()?
        .into_iter()
        .map(|(id, _)| id)
        .collect();
    for id in &chosen {
        if dst_snaps.contains(id) {
            report.snapshots_present += 1;
            continue;
        }
        let record = records.get(id).ok_or_else(|| Error::NotFound {
            what: "snapshot",
            id: id.to_hex(),
        })?;
        if Id::hash(record) != id.0 {
            return Err(Error::corrupt(
                "snapshot",
                id,
                "the source's index holds a record that does not hash to its id; run `snap repair index` there",
            ));
        }
        dst.store()
            .put(&format!("snapshots/{}", id.to_hex()), record)?;
        report.snapshots_sent += 1;
    }

    if opts.delete {
        dst_lock.check()?;
        let keep_snaps: HashSet<SnapshotId> = records.into_keys().collect();
        let gone: Vec<SnapshotId> = dst_snaps.difference(&keep_snaps).copied().collect();
        report.deleted = mirror_deletions(dst, &gone, &src_files, &needed_set, &there)?;
    }
    Ok(report)
}

/// Deletes on `dst` the snapshot records `snaps`, then the index files that list a
/// pack the source does not index (`keep_packs`; the source's own `keep_files` list
/// none), then those of its packs (`dst_packs`, as listed after sending). `dst` holds
/// every one of the source's by now.
fn mirror_deletions(
    dst: &Repository,
    snaps: &[SnapshotId],
    keep_files: &HashSet<IndexFileId>,
    keep_packs: &HashSet<PackId>,
    dst_packs: &HashMap<PackId, u64>,
) -> Result<[u64; 3]> {
    dst.remove_snapshots(snaps)?;
    let mut files = Vec::new();
    for f in dst.index_files()?.difference(keep_files) {
        if !dst
            .read_index_file(f)?
            .iter()
            .all(|p| keep_packs.contains(&p.id))
        {
            files.push(*f);
        }
    }
    dst.delete_index_files(&files)?;
    let packs: Vec<PackId> = dst_packs
        .keys()
        .filter(|id| !keep_packs.contains(id))
        .copied()
        .collect();
    dst.delete_packs(&packs)?;
    Ok([snaps.len() as u64, files.len() as u64, packs.len() as u64])
}
