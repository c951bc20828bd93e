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
//! 4. the snapshot records, last;
//! 5. then the drill records of the chosen snapshots the destination lacks, naming the
//!    destination's snapshot (the same, or its rewritten copy), sealed for it.
//!
//! Every file is written atomically, so an interrupted sync leaves whole files only,
//! and the next run sends just what is missing. What a killed run left in the
//! destination's `tmp/` goes at the end of the next one: the temp files of writers that
//! are gone (a dead PID on this host, or untouched for the lock staleness window), never
//! those of a live writer. Nothing else on the destination is deleted unless asked
//! (`delete`): then, after the copy, the snapshot records the source's retention
//! removed (see `gone_here`) go, then the index files and packs the source no longer
//! has, in that order; or, where the destination keeps snapshots the source lacks
//! (another repository's), a prune there removes the data none of its snapshots needs.
//!
//! [`plan_sync`] takes the locks and works out what will travel and what `delete`
//! would remove (a [`SyncPlan`], which `snap sync --dry-run` prints);
//! [`SyncPlan::execute`] does it. [`sync`] is the two in one.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use chrono::{DateTime, Utc};
use rayon::prelude::*;

use crate::error::{Error, Refusal, Result, Usage};
use crate::format::id::{Id, IndexFileId, PackId, SnapshotId, TreeId};
use crate::format::snapshot::Snapshot;
use crate::ops::prune::{plan_prune, PruneOptions};
use crate::progress::Progress;
use crate::repo::reach::mark_reachable;
use crate::repo::{pack_path, Lock, PackRecord, Repository};
use crate::store::Store;

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
    /// Drill records of the copied snapshots written to the destination.
    pub drills_sent: u64,
    /// Archived WAL files the destination lacked, copied (every one: WAL belongs to
    /// the cluster, not to a snapshot).
    pub wal_files_sent: u64,
    /// Their raw bytes.
    pub wal_bytes_sent: u64,
}

/// Where [`plan_sync`] sends.
pub enum Destination<'r> {
    /// An existing repository: a copy of the source (the same id) gets files as
    /// stored, any other one rewritten snapshots.
    Repository(&'r Repository),
    /// A store that holds no repository yet: [`SyncPlan::execute`] makes it a copy of
    /// the source (the same config and key files), then sends files as stored.
    Empty(Arc<dyn Store>),
}

/// What sync will send and delete, made under the locks that must cover it until
/// [`SyncPlan::execute`] has run or it is dropped: a shared lock on the source, and on
/// the destination a shared one, or an exclusive one for `delete` when files travel
/// as stored. Rewritten copies keep the shared destination lock only for the copy,
/// as prune runs on the destination after it (see module `rewrite`): there `delete`
/// takes the exclusive lock then, and lists again what it removes.
pub struct SyncPlan<'r> {
    src: &'r Repository,
    dst: Destination<'r>,
    opts: SyncOptions,
    src_lock: Lock,
    /// `None` for a destination made at execution (it is locked once made).
    dst_lock: Option<Lock>,
    work: Work,
    /// The snapshots that will be sent (copied as stored, or rewritten), in the
    /// source's order (oldest first).
    pub snapshots: Vec<SnapshotId>,
    /// Chosen snapshots the destination has already (a copy of them, when rewritten).
    pub snapshots_present: u64,
    /// Packs that will be sent: those the chosen snapshots need and the destination
    /// lacks or holds at another size. Always 0 for rewritten copies (new packs are
    /// made there).
    pub packs: u64,
    /// Needed packs the destination has already (0 for rewritten copies).
    pub packs_present: u64,
    /// Bytes that will be sent: exactly the size of those packs when files travel as
    /// stored. `None` for rewritten copies: what they store is known only once every
    /// chunk the destination lacks is read, re-hashed and re-sealed, which is the
    /// sync itself (the report's `bytes_sent` tells it after).
    pub bytes: Option<u64>,
    /// Destination snapshots `delete` would remove: those the source's retention
    /// removed (see `gone_here`). Empty without `delete`.
    pub delete: Vec<SnapshotId>,
    /// With `delete`: destination snapshots the source lacks that stay, since they
    /// cannot be told to be its own (another repository's, backed up there directly,
    /// or the last of a group forgotten here).
    pub left: Vec<SnapshotId>,
    /// Whether the destination will be created (it holds no repository yet).
    pub create: bool,
    /// Whether snapshots will be rewritten: the destination has other blob ids.
    pub rewrite: bool,
}

/// What execution works from.
enum Work {
    /// Files as stored: the packs the chosen snapshots need, and those of them the
    /// destination lacks (the snapshots are the plan's).
    Copy {
        needed: Vec<(PackId, u64)>,
        send: Vec<(PackId, u64)>,
        /// With `delete`: snapshots stay there that the source lacks.
        others_stay: bool,
    },
    /// Rewritten copies.
    Rewrite(rewrite::Todo),
}

/// Takes the locks and plans a sync of `src` into `dst`; see [`SyncPlan`]. Changes
/// nothing on either side (a local destination's index cache is brought up to date).
/// Fails when `delete` comes with a choice of snapshots, when an empty destination
/// cannot be made a repository (a local directory that holds other files), and, for
/// chosen snapshots, when one of them needs a blob the source lacks.
pub fn plan_sync<'r>(
    src: &'r Repository,
    dst: Destination<'r>,
    opts: &SyncOptions,
) -> Result<SyncPlan<'r>> {
    if opts.delete && opts.snapshots.is_some() {
        return Err(Usage::DeleteWithChoice.into());
    }
    let existing = match &dst {
        Destination::Repository(r) => Some(*r),
        Destination::Empty(store) => {
            crate::repo::check_empty(store.as_ref())?;
            None
        }
    };
    if let Some(d) = existing.filter(|d| src.config().id != d.config().id) {
        let t = rewrite::plan(src, d, opts)?;
        return Ok(SyncPlan {
            src,
            opts: opts.clone(),
            src_lock: t.src_lock,
            dst_lock: Some(t.dst_lock),
            snapshots: t.send,
            snapshots_present: t.present,
            packs: 0,
            packs_present: 0,
            bytes: None,
            delete: t.delete,
            left: t.left,
            create: false,
            rewrite: true,
            work: Work::Rewrite(t.todo),
            dst,
        });
    }

    let src_lock = src.lock(false, "sync (source)")?;
    let dst_lock = existing
        .map(|d| d.lock(opts.delete, "sync (destination)"))
        .transpose()?;

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
    let there: HashMap<PackId, u64> = match existing {
        Some(d) => d.pack_files()?.into_iter().collect(),
        None => HashMap::new(),
    };
    let send: Vec<(PackId, u64)> = needed
        .iter()
        .filter(|(id, size)| there.get(id) != Some(size))
        .copied()
        .collect();

    let dst_snaps: Vec<(SnapshotId, Snapshot)> = match existing {
        Some(d) => d.snapshots()?,
        None => Vec::new(),
    };
    let dst_set: HashSet<SnapshotId> = dst_snaps.iter().map(|(id, _)| *id).collect();
    let snapshots: Vec<SnapshotId> = chosen
        .iter()
        .filter(|id| !dst_set.contains(id))
        .copied()
        .collect();
    let (delete, left) = if opts.delete {
        gone_here(&all, &dst_snaps, false)
    } else {
        (Vec::new(), Vec::new())
    };
    // Snapshots that stay there though this repository lacks them: their packs are
    // not this repository's to judge, so a prune there removes what none needs.
    let others_stay = !left.is_empty();
    Ok(SyncPlan {
        src,
        opts: opts.clone(),
        src_lock,
        dst_lock,
        snapshots_present: (chosen.len() - snapshots.len()) as u64,
        snapshots,
        packs: send.len() as u64,
        packs_present: (needed.len() - send.len()) as u64,
        bytes: Some(send.iter().map(|(_, size)| size).sum()),
        delete,
        left,
        create: existing.is_none(),
        rewrite: false,
        work: Work::Copy {
            needed,
            send,
            others_stay,
        },
        dst,
    })
}

/// What `sync --delete` does with the snapshots of `there` (the destination's) that
/// are not (`rewritten`: copy none of) the snapshots `here` holds: the first list, to
/// remove, holds those that copy a snapshot here no longer has, as retention here
/// removes them. It always keeps a group's newest, so `here` must hold a snapshot of
/// the same host and sources at least as new. The second list, left, holds the rest: a
/// snapshot of another host or sources, or newer than any of its group here (synced
/// in from another repository, or backed up into the destination itself), and a
/// rewritten one that copies none.
fn gone_here(
    here: &[(SnapshotId, Snapshot)],
    there: &[(SnapshotId, Snapshot)],
    rewritten: bool,
) -> (Vec<SnapshotId>, Vec<SnapshotId>) {
    let ids: HashSet<SnapshotId> = here.iter().map(|(id, _)| *id).collect();
    let mut newest: HashMap<(&str, Vec<String>), DateTime<Utc>> = HashMap::new();
    for (_, s) in here {
        let t = newest
            .entry((s.host.as_str(), Snapshot::group_key(&s.sources)))
            .or_insert(s.time);
        *t = (*t).max(s.time);
    }
    let (mut gone, mut left) = (Vec::new(), Vec::new());
    for (id, s) in there {
        let from = if rewritten { s.original } else { Some(*id) };
        if from.is_some_and(|o| ids.contains(&o)) {
            continue;
        }
        let retained_here = newest
            .get(&(s.host.as_str(), Snapshot::group_key(&s.sources)))
            .is_some_and(|t| *t >= s.time);
        if from.is_some() && retained_here {
            gone.push(*id);
        } else {
            left.push(*id);
        }
    }
    (gone, left)
}

impl SyncPlan<'_> {
    /// Carries the plan out (creating the destination first if it is to be), in the
    /// order of the module docs, then lets the locks go and removes the temp files
    /// writers that are gone left on the destination. Stops between packs when an
    /// interruption is asked for, and before writing snapshot records or deleting
    /// when the destination's lock was taken over.
    pub fn execute(self, progress: &dyn Progress) -> Result<SyncReport> {
        let SyncPlan {
            src,
            dst,
            opts,
            src_lock,
            dst_lock,
            work,
            snapshots,
            snapshots_present,
            delete,
            ..
        } = self;
        let made;
        let dst: &Repository = match dst {
            Destination::Repository(r) => r,
            Destination::Empty(store) => {
                made = Repository::create_copy(store, src)?;
                &made
            }
        };
        let mut report = match work {
            Work::Rewrite(todo) => {
                let dst_lock = dst_lock.ok_or_else(|| {
                    Error::internal("a rewriting sync is planned under a lock", None)
                })?;
                rewrite::execute(src, dst, &opts, src_lock, dst_lock, todo, progress)?
            }
            Work::Copy {
                needed,
                send,
                others_stay,
            } => {
                let dst_lock = match dst_lock {
                    Some(l) => l,
                    None => dst.lock(opts.delete, "sync (destination)")?,
                };
                let work = Planned {
                    src_lock,
                    dst_lock,
                    snapshots,
                    snapshots_present,
                    delete,
                    others_stay,
                    needed,
                    send,
                };
                copy_as_stored(src, dst, &opts, work, progress)?
            }
        };
        report.tmp_files_removed = remove_orphaned_temp_files(dst)?;
        report.drills_sent = copy_drills(src, dst, opts.snapshots.as_deref())?;
        (report.wal_files_sent, report.wal_bytes_sent) =
            crate::ops::wal::copy(&src.wal(), &dst.wal())?;
        Ok(report)
    }
}

/// Copies snapshots from `src` to `dst`: as stored when `dst` is a copy of `src` (same
/// repository id), else rewritten, each chunk re-hashed and re-sealed
/// for the destination. [`plan_sync`], then [`SyncPlan::execute`].
pub fn sync(
    src: &Repository,
    dst: &Repository,
    opts: &SyncOptions,
    progress: &dyn Progress,
) -> Result<SyncReport> {
    plan_sync(src, Destination::Repository(dst), opts)?.execute(progress)
}

/// Writes to `dst` the drill records of `src` whose snapshot is among `chosen` (all
/// when `None`) and is on `dst` (as itself, or as its rewritten copy), unless `dst`
/// has a record of that snapshot and time already; returns how many it wrote.
fn copy_drills(src: &Repository, dst: &Repository, chosen: Option<&[SnapshotId]>) -> Result<u64> {
    let drills = src.drills()?;
    if drills.is_empty() {
        return Ok(0);
    }
    // Shared: a drill record is only added.
    let _lock = dst.lock(false, "sync (drill records)")?;
    let mut there: HashMap<SnapshotId, SnapshotId> = HashMap::new();
    for (id, s) in dst.snapshots()? {
        there.insert(s.original.unwrap_or(id), id);
        there.insert(id, id);
    }
    let have: HashSet<(SnapshotId, chrono::DateTime<chrono::Utc>)> = dst
        .drills()?
        .into_iter()
        .map(|(_, d)| (d.snapshot, d.time))
        .collect();
    let mut sent = 0;
    for (_, mut d) in drills {
        if chosen.is_some_and(|c| !c.contains(&d.snapshot)) {
            continue;
        }
        let Some(to) = there.get(&d.snapshot) else {
            continue;
        };
        d.snapshot = *to;
        if !have.contains(&(d.snapshot, d.time)) {
            dst.save_drill(&d)?;
            sent += 1;
        }
    }
    Ok(sent)
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

/// The locks and lists [`copy_as_stored`] works from: the plan's snapshots to send,
/// to delete (with `delete`) and the count of those there already, and its packs
/// (see [`Work::Copy`]). The destination's lock keeps them true: no other sync can
/// delete there meanwhile, and with `delete` nothing can add either.
struct Planned {
    src_lock: Lock,
    dst_lock: Lock,
    snapshots: Vec<SnapshotId>,
    snapshots_present: u64,
    delete: Vec<SnapshotId>,
    others_stay: bool,
    needed: Vec<(PackId, u64)>,
    send: Vec<(PackId, u64)>,
}

/// [`sync`] into a copy of `src` (same id): files travel as stored.
fn copy_as_stored(
    src: &Repository,
    dst: &Repository,
    opts: &SyncOptions,
    work: Planned,
    progress: &dyn Progress,
) -> Result<SyncReport> {
    let Planned {
        src_lock: _src_lock,
        dst_lock,
        snapshots,
        snapshots_present,
        delete,
        others_stay,
        needed,
        send,
    } = work;
    // 1. Packs.
    let mut report = SyncReport {
        packs_present: (needed.len() - send.len()) as u64,
        snapshots_present,
        ..Default::default()
    };
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
            progress.items(1);
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

    // Asked to stop: the packs sent stay for the next run, which sends only the rest.
    crate::interrupt::check()?;

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
    for id in &snapshots {
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

    if opts.delete && others_stay {
        dst_lock.check()?;
        dst.remove_snapshots(&delete)?;
        drop(dst_lock);
        let p = plan_prune(dst, &PruneOptions::default())?.execute(progress)?;
        report.deleted = [delete.len() as u64, 0, p.packs_deleted + p.packs_repacked];
    } else if opts.delete {
        dst_lock.check()?;
        report.deleted = mirror_deletions(dst, &delete, &src_files, &needed_set, &there)?;
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
