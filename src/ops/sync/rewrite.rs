//! Copying snapshots into a repository whose blob ids differ from the source's:
//! another key, or encrypted from a plain source or the reverse. Packs cannot travel
//! as they are, so every chunk is read, hashed with the destination's id key and
//! stored there as the destination stores blobs (compressed, sealed), and every chunk
//! list and tree is rewritten bottom-up with the new ids.
//!
//! - A copy records the source snapshot's id as `original`: a source snapshot some
//!   destination snapshot names so is there already and is skipped.
//! - The destination's cache remembers the id each copied chunk got (its `copies`
//!   table), so a chunk an earlier run copied, and the destination still holds, is not
//!   read again. Trees and chunk lists (small) are read and rewritten every time a new
//!   snapshot needs them; unchanged ones encode to blobs the destination has.
//! - Order is a backup's: blobs into packs, index files, then the snapshot records.
//! - With `delete`, destination snapshots that copy a snapshot the source's retention
//!   removed (see `gone_here`) are removed and the destination is pruned.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};

use rayon::prelude::*;

use super::{SyncOptions, SyncReport, IN_FLIGHT};
use crate::error::{Error, Result};
use crate::format::id::{Id, SnapshotId, TreeId};
use crate::format::pack::BlobKind;
use crate::format::snapshot::Snapshot;
use crate::format::tree::NodeKind;
use crate::ops::prune::{plan_prune, PruneOptions};
use crate::progress::Progress;
use crate::repo::{Lock, Repository, Saver};

/// What a rewriting sync works from: the source's snapshots, and the destination's
/// copies of them (source id to copy id).
pub(super) struct Todo {
    all: Vec<(SnapshotId, Snapshot)>,
    copied: HashMap<SnapshotId, SnapshotId>,
}

/// A planned rewriting sync: its locks (shared, both), what it works from, and the
/// figures of the plan.
pub(super) struct Planned {
    pub src_lock: Lock,
    pub dst_lock: Lock,
    pub todo: Todo,
    /// The chosen snapshots no destination snapshot copies: rewritten.
    pub send: Vec<SnapshotId>,
    /// The chosen snapshots some destination snapshot copies.
    pub present: u64,
    /// With `delete`: destination snapshots the source's retention removed.
    pub delete: Vec<SnapshotId>,
    /// With `delete`: destination snapshots the source lacks that stay.
    pub left: Vec<SnapshotId>,
}

/// Takes the shared locks on both sides and plans the copy of the chosen snapshots of
/// `src` into `dst`; see the module docs.
pub(super) fn plan(src: &Repository, dst: &Repository, opts: &SyncOptions) -> Result<Planned> {
    let src_lock = src.lock(false, "sync (source)")?;
    let dst_lock = dst.lock(false, "sync (destination)")?;
    let all = src.snapshots()?;
    let there = dst.snapshots()?;
    let copied: HashMap<SnapshotId, SnapshotId> = there
        .iter()
        .filter_map(|(id, s)| s.original.map(|o| (o, *id)))
        .collect();
    let chosen: Vec<SnapshotId> = all
        .iter()
        .map(|(id, _)| *id)
        .filter(|id| opts.snapshots.as_ref().is_none_or(|c| c.contains(id)))
        .collect();
    let send: Vec<SnapshotId> = chosen
        .iter()
        .filter(|id| !copied.contains_key(id))
        .copied()
        .collect();
    let (delete, left) = if opts.delete {
        super::gone_here(&all, &there, true)
    } else {
        (Vec::new(), Vec::new())
    };
    Ok(Planned {
        src_lock,
        dst_lock,
        present: (chosen.len() - send.len()) as u64,
        send,
        delete,
        left,
        todo: Todo { all, copied },
    })
}

/// Copies the chosen snapshots of `src` into `dst`, rewriting them, under the locks
/// of the plan, which go after the copy; see the module docs.
pub(super) fn execute(
    src: &Repository,
    dst: &Repository,
    opts: &SyncOptions,
    src_lock: Lock,
    dst_lock: Lock,
    todo: Todo,
    progress: &dyn Progress,
) -> Result<SyncReport> {
    let mut report = SyncReport {
        rewritten: true,
        ..Default::default()
    };
    let all = {
        let _src_lock = src_lock;
        let dst_lock = dst_lock;
        let Todo { all, mut copied } = todo;
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(IN_FLIGHT)
            .build()
            .map_err(|e| Error::internal("cannot start sync threads", Some(Box::new(e))))?;
        let mut rw = Rewriter {
            src,
            dst,
            saver: dst.saver(dst.config().compression_level)?,
            done: HashMap::new(),
            same_ids: src.blob_id(b"snap") == dst.blob_id(b"snap"),
            chunks_read: AtomicU64::new(0),
            progress,
        };
        let mut made = HashMap::new();
        for (id, snap) in &all {
            if opts.snapshots.as_ref().is_some_and(|c| !c.contains(id)) {
                continue;
            }
            if copied.contains_key(id) {
                report.snapshots_present += 1;
                continue;
            }
            made.insert(*id, pool.install(|| rw.tree(&snap.tree))?);
        }
        rw.saver.flush()?;
        let added = rw.saver.added();
        report.blobs_sent = added.blobs;
        report.bytes_sent = added.stored;
        report.chunks_read = rw.chunks_read.into_inner();
        // Asked to stop: the data stays for the next run, no record is written.
        crate::interrupt::check()?;
        // Oldest first, so a copy's parent is the copy of its source's parent.
        dst_lock.check()?;
        for (id, snap) in &all {
            let Some(tree) = made.get(id) else { continue };
            let mut s = snap.clone();
            s.tree = *tree;
            s.parent = s.parent.and_then(|p| copied.get(&p).copied());
            s.original = Some(*id);
            copied.insert(*id, dst.save_snapshot(&s)?);
            report.snapshots_sent += 1;
        }
        all
    };
    if opts.delete {
        let lock = dst.lock(true, "sync --delete (destination)")?;
        let (gone, _) = super::gone_here(&all, &dst.snapshots()?, true);
        lock.check()?;
        dst.remove_snapshots(&gone)?;
        drop(lock);
        let p = plan_prune(dst, &PruneOptions::default())?.execute(progress)?;
        report.deleted = [gone.len() as u64, 0, p.packs_deleted + p.packs_repacked];
    }
    Ok(report)
}

struct Rewriter<'a> {
    src: &'a Repository,
    dst: &'a Repository,
    saver: Saver<'a>,
    /// Trees and chunk lists rewritten in this run: source id to destination id.
    done: HashMap<Id, Id>,
    /// Both repositories give content the same id (neither is encrypted).
    same_ids: bool,
    chunks_read: AtomicU64,
    progress: &'a dyn Progress,
}

impl Rewriter<'_> {
    /// Rewrites tree `id` and everything below it; returns the destination's id.
    fn tree(&mut self, id: &TreeId) -> Result<TreeId> {
        if let Some(d) = self.done.get(&id.0) {
            return Ok(TreeId(*d));
        }
        let mut tree = self.src.load_tree(id)?;
        // The small files' chunks of the whole directory in one batch, for parallelism.
        let flat: Vec<Id> = tree
            .nodes
            .iter()
            .filter_map(|n| match &n.kind {
                NodeKind::File(c) if c.depth == 0 => Some(c.ids.iter().copied()),
                _ => None,
            })
            .flatten()
            .collect();
        let mut mapped = self.chunks(&flat)?.into_iter();
        for node in &mut tree.nodes {
            match &mut node.kind {
                NodeKind::Dir(sub) => *sub = self.tree(sub)?,
                NodeKind::File(c) if c.depth == 0 => {
                    for (slot, new) in c.ids.iter_mut().zip(mapped.by_ref()) {
                        *slot = new;
                    }
                }
                NodeKind::File(c) => {
                    for slot in &mut c.ids {
                        *slot = self.list(slot, c.depth - 1)?;
                    }
                }
                _ => {}
            }
        }
        let new = self.saver.save_tree(&tree)?;
        self.done.insert(id.0, new.0);
        Ok(new)
    }

    /// Rewrites chunk-list node `id` of `level` and what it lists.
    fn list(&mut self, id: &Id, level: u8) -> Result<Id> {
        if let Some(d) = self.done.get(id) {
            return Ok(*d);
        }
        let mut node = self.src.list_node(id, level)?;
        node.ids = if level == 0 {
            self.chunks(&node.ids)?
        } else {
            node.ids
                .iter()
                .map(|i| self.list(i, level - 1))
                .collect::<Result<_>>()?
        };
        let new = self.saver.save(BlobKind::List, &node.encode())?;
        self.done.insert(*id, new);
        Ok(new)
    }

    /// The destination's ids of data chunks `ids`, copying those it lacks (in
    /// parallel).
    fn chunks(&self, ids: &[Id]) -> Result<Vec<Id>> {
        let mut out: Vec<Option<Id>> = if self.same_ids {
            ids.iter()
                .map(|i| Ok(self.dst.has_blob(i)?.then_some(*i)))
                .collect::<Result<_>>()?
        } else {
            self.dst.index().copies(ids)?
        };
        let todo: Vec<usize> = (0..ids.len()).filter(|k| out[*k].is_none()).collect();
        let fresh: Vec<(Id, Id)> = todo
            .par_iter()
            .map(|&k| {
                let raw = self.src.read_blob(&ids[k])?;
                let new = self.dst.blob_id(&raw);
                self.saver.save_hashed(BlobKind::Data, new, &raw)?;
                self.chunks_read.fetch_add(1, Ordering::Relaxed);
                self.progress.bytes(raw.len() as u64);
                Ok((ids[k], new))
            })
            .collect::<Result<_>>()?;
        if !self.same_ids {
            self.dst.index().add_copies(&fresh)?;
        }
        for (k, (_, new)) in todo.into_iter().zip(fresh) {
            out[k] = Some(new);
        }
        Ok(out.into_iter().flatten().collect())
    }
}
