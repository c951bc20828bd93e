//! `prune`: deletes packs no snapshot needs and rewrites packs that are mostly garbage.
//!
//! Under the exclusive lock (no backup can be choosing blobs to reuse meanwhile):
//! 1. pick up the index files and snapshots other processes and hosts wrote; packs no
//!    index file lists (an interrupted run left them) are garbage;
//! 2. mark every blob the snapshots reach (on disk, see [`crate::repo::reach`]); a missing
//!    or unreadable one stops prune before anything changes;
//! 3. plan ([`plan_prune`] makes a [`PrunePlan`]): packs without live blobs go; partly
//!    used packs are rewritten, most wasteful first, until the unused bytes left are at
//!    most `max_unused` of the used bytes;
//! 4. ([`PrunePlan::execute`] from here on) copy the live blobs of rewritten packs,
//!    verified, into new packs made durable;
//! 5. write new index files listing the new packs and every kept pack of the index
//!    files that list a deleted one (small index files are merged in too), then update
//!    the cache in one transaction;
//! 6. only then delete the replaced index files, then the old pack files, and leftover
//!    temp files; then the drill records of forgotten snapshots (each group's newest
//!    record of each source stays, for the next drill's row-count comparison).
//!
//! A crash before 5 leaves new packs no index file lists (garbage for the next prune);
//! during 6, packs listed by no index file likewise. No step deletes a blob a snapshot
//! needs before its copy is durable and listed.

use std::collections::HashSet;

use crate::error::{Refusal, Result};
use crate::format::id::{IndexFileId, PackId, TreeId};
use crate::format::pack;
use crate::progress::Progress;
use crate::repo::index::PackUsage;
use crate::repo::reach::mark_reachable;
use crate::repo::{batches, Lock, PackRecord, Repacker, Repository};

/// How `prune` runs.
#[derive(Clone, Copy, Debug)]
pub struct PruneOptions {
    /// Unused bytes to tolerate, as a share of the used bytes (0.05 = 5 %).
    pub max_unused: f64,
}

impl Default for PruneOptions {
    fn default() -> Self {
        PruneOptions { max_unused: 0.05 }
    }
}

/// What `prune` did (or, from [`PrunePlan::expected`], would do).
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct PruneReport {
    /// Snapshots kept (all of them: prune removes no snapshot).
    pub snapshots: u64,
    /// Packs before.
    pub packs: u64,
    /// Packs found on disk but listed by no index file (left by interrupted runs):
    /// garbage, deleted (counted in `packs` and the byte figures too).
    pub packs_unindexed: u64,
    /// Their size.
    pub bytes_unindexed: u64,
    /// Packs deleted because no snapshot needs anything in them.
    pub packs_deleted: u64,
    /// Partly used packs rewritten.
    pub packs_repacked: u64,
    /// New packs written by the rewrite.
    pub packs_written: u64,
    /// Live blobs copied.
    pub blobs_repacked: u64,
    /// Stored bytes of the copied blobs.
    pub bytes_repacked: u64,
    /// Size of all packs before.
    pub bytes_before: u64,
    /// Size of all packs after.
    pub bytes_after: u64,
    /// Bytes in the remaining packs that no snapshot uses.
    pub bytes_unused_after: u64,
    /// Leftover temp files removed.
    pub tmp_files_removed: u64,
    /// Drill records of forgotten snapshots deleted (see
    /// [`Repository::prune_drills`]).
    pub drills_deleted: u64,
    /// Archived WAL files deleted: older than the oldest base backup kept.
    pub wal_files_deleted: u64,
}

/// What prune will delete and rewrite (steps 1 to 3 of the module docs), made under
/// the exclusive lock it holds until [`PrunePlan::execute`] has run or it is dropped:
/// nothing can change the repository in between, so the plan cannot go stale.
pub struct PrunePlan<'r> {
    repo: &'r Repository,
    lock: Lock,
    /// Snapshots in the repository (prune keeps them all).
    pub snapshots: u64,
    /// Packs on disk that no index file lists: deleted.
    pub unindexed: Vec<PackId>,
    /// Their size.
    pub bytes_unindexed: u64,
    /// Packs before: indexed and unindexed.
    pub packs: u64,
    /// Indexed packs no snapshot needs anything in: deleted.
    pub delete: Vec<PackUsage>,
    /// Partly used packs whose live blobs are copied into new packs, most wasteful
    /// first: deleted after.
    pub repack: Vec<PackUsage>,
    /// Size of all packs now.
    pub bytes_before: u64,
    /// Bytes no snapshot uses in the packs that stay.
    pub bytes_unused_after: u64,
    /// Archived WAL files no kept base backup needs: deleted.
    pub wal_delete: Vec<crate::repo::wal::WalFile>,
}

/// Pack bytes besides its blobs' for a pack of `blobs` blobs.
fn overhead(blobs: u64) -> u64 {
    pack::HEADER_LEN + pack::FOOTER_LEN as u64 + blobs * pack::ENTRY_LEN as u64
}

/// Takes the exclusive lock and plans prune; see the module docs. Fails, with nothing
/// changed, when a snapshot record or index file cannot be read or a blob a snapshot
/// needs is missing.
pub fn plan_prune<'r>(repo: &'r Repository, opts: &PruneOptions) -> Result<PrunePlan<'r>> {
    let lock = repo.lock(true, "prune")?;
    if let Some((path, why)) = lock.unreadable.first() {
        return Err(Refusal::PruneUnreadableSnapshot {
            path: path.clone(),
            why: why.clone(),
        }
        .into());
    }
    if !repo.index().is_complete()? {
        return Err(Refusal::PruneIndexIncomplete.into());
    }
    let unindexed = repo.unindexed_packs()?;
    let sizes: std::collections::HashMap<PackId, u64> = repo.pack_files()?.into_iter().collect();
    let bytes_unindexed: u64 = unindexed.iter().filter_map(|id| sizes.get(id)).sum();
    let snapshots = repo.snapshots()?;
    let wal_delete = crate::ops::wal::unneeded(&repo.wal(), &snapshots)?;
    let roots: Vec<TreeId> = snapshots.iter().map(|(_, s)| s.tree).collect();
    let reach = mark_reachable(repo, &roots)?;
    if let Some(p) = reach.problems.first() {
        return Err(Refusal::PruneDamaged {
            missing: reach.problems.len(),
            blob: p.id.to_string(),
            why: p.why.clone(),
        }
        .into());
    }

    let usage = repo.index().pack_usage()?;
    let mut bytes_before = bytes_unindexed;
    let mut delete = Vec::new();
    let mut partly = Vec::new();
    let mut live_total = 0u64;
    let mut unused_total = 0u64;
    for u in &usage {
        bytes_before += u.size;
        if u.live_blobs == 0 {
            delete.push(*u);
            continue;
        }
        let live = u.live_bytes + overhead(u.live_blobs);
        let unused = u.size.saturating_sub(live);
        live_total += live;
        unused_total += unused;
        if unused > 0 {
            partly.push((unused, *u));
        }
    }
    partly.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.name.cmp(&b.1.name)));
    #[allow(clippy::cast_possible_truncation, reason = "a float cast saturates")]
    let allowed = (opts.max_unused.max(0.0) * live_total as f64) as u64;
    let mut repack = Vec::new();
    for (unused, u) in partly {
        if unused_total <= allowed {
            break;
        }
        unused_total -= unused;
        repack.push(u);
    }
    Ok(PrunePlan {
        repo,
        lock,
        snapshots: roots.len() as u64,
        packs: (usage.len() + unindexed.len()) as u64,
        unindexed,
        bytes_unindexed,
        delete,
        repack,
        bytes_before,
        bytes_unused_after: unused_total,
        wal_delete,
    })
}

impl PrunePlan<'_> {
    /// Bytes of the packs deleted or replaced.
    fn removed_bytes(&self) -> u64 {
        let packs = self.delete.iter().chain(&self.repack);
        self.bytes_unindexed + packs.map(|u| u.size).sum::<u64>()
    }

    /// The figures known before anything runs.
    fn figures(&self) -> PruneReport {
        PruneReport {
            snapshots: self.snapshots,
            packs: self.packs,
            packs_unindexed: self.unindexed.len() as u64,
            bytes_unindexed: self.bytes_unindexed,
            packs_deleted: self.delete.len() as u64,
            packs_repacked: self.repack.len() as u64,
            bytes_before: self.bytes_before,
            bytes_unused_after: self.bytes_unused_after,
            wal_files_deleted: self.wal_delete.len() as u64,
            ..Default::default()
        }
    }

    /// The report [`PrunePlan::execute`] is expected to give: its copies estimated
    /// from the index (no packs written, no temp files counted).
    pub fn expected(&self) -> PruneReport {
        let copied: u64 = self
            .repack
            .iter()
            .map(|u| u.live_bytes + overhead(u.live_blobs))
            .sum();
        PruneReport {
            blobs_repacked: self.repack.iter().map(|u| u.live_blobs).sum(),
            bytes_repacked: self.repack.iter().map(|u| u.live_bytes).sum(),
            bytes_after: self.bytes_before - self.removed_bytes() + copied,
            ..self.figures()
        }
    }

    /// Carries the plan out (steps 4 to 6 of the module docs), then lets the lock go.
    /// Stops, before the index changes, when an interruption is asked for or the lock
    /// was taken over.
    pub fn execute(self, progress: &dyn Progress) -> Result<PruneReport> {
        let repo = self.repo;
        let mut report = self.figures();
        let mut repacker = Repacker::new(repo)?;
        for u in &self.repack {
            for (id, loc) in repo.index().blobs_in(&u.name, true)? {
                // Until the index changes, stopping leaves only new packs nobody lists.
                crate::interrupt::check()?;
                let n = repacker.copy(&id, &loc)?;
                report.blobs_repacked += 1;
                report.bytes_repacked += n;
                progress.bytes(n);
            }
        }
        let written = repacker.finish()?;
        report.packs_written = written.len() as u64;
        let written_bytes: u64 = written.iter().map(|r| r.size).sum();
        let mut gone: Vec<PackId> = self.delete.iter().map(|u| u.name).collect();
        gone.extend(self.repack.iter().map(|u| u.name));
        // A lock taken over as stale means someone else may be in here, and an
        // interruption asked for is still honoured: stop before the index changes.
        crate::interrupt::check()?;
        self.lock.check()?;
        let (old_files, new_files) = rewrite_index_files(repo, &gone, &written)?;
        repo.index()
            .replace_packs(&gone, &written, &old_files, &new_files)?;
        repo.delete_index_files(&old_files)?;
        // A pack is named by its bytes: a rewrite can produce a pack that is also on the
        // delete list (an identical one an interrupted prune wrote). Its file is the new
        // pack now; deleting it would lose its blobs.
        let new: HashSet<PackId> = written.iter().map(|r| r.id).collect();
        gone.extend(&self.unindexed);
        gone.retain(|id| !new.contains(id));
        repo.delete_packs(&gone)?;
        report.tmp_files_removed = repo.clean_tmp()?;
        report.drills_deleted = repo.prune_drills()?;
        repo.wal().delete(&self.wal_delete)?;
        report.bytes_after = self.bytes_before - self.removed_bytes() + written_bytes;
        Ok(report)
    }
}

/// Index files smaller than this share of a full one are merged into new ones.
const SMALL_INDEX_FILE: usize = crate::repo::INDEX_FILE_BLOBS / 4;

/// Writes index files for the `written` packs and for the kept packs of the index
/// files that list a `gone` pack or are small; returns the replaced files and the new
/// ones (the new ones durable, the old ones not yet deleted).
///
/// Kept packs go out as soon as they fill an index file, so memory holds about one
/// index file's entries however many files are rewritten.
fn rewrite_index_files(
    repo: &Repository,
    gone: &[PackId],
    written: &[PackRecord],
) -> Result<(Vec<IndexFileId>, Vec<IndexFileId>)> {
    let gone: HashSet<&PackId> = gone.iter().collect();
    let mut replaced = Vec::new();
    let mut new = Vec::new();
    let mut kept: Vec<PackRecord> = written.to_vec();
    for f in repo.index_files()? {
        let packs = repo.read_index_file(&f)?;
        let blobs: usize = packs.iter().map(|p| p.entries.len()).sum();
        if blobs < SMALL_INDEX_FILE || packs.iter().any(|p| gone.contains(&p.id)) {
            kept.extend(packs.into_iter().filter(|p| !gone.contains(&p.id)));
            replaced.push(f);
            // Every batch but the last is full (see `batches`): those are written now.
            let mut full = batches(std::mem::take(&mut kept));
            kept = full.pop().unwrap_or_default();
            for batch in full {
                new.push(repo.put_index_file(&batch)?);
            }
        }
    }
    if new.is_empty() && gone.is_empty() && written.is_empty() && replaced.len() <= 1 {
        // Nothing to drop or add, and at most one small file: leave it.
        return Ok((Vec::new(), Vec::new()));
    }
    for batch in batches(kept) {
        new.push(repo.put_index_file(&batch)?);
    }
    replaced.retain(|f| !new.contains(f));
    Ok((replaced, new))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::compress::Compression;
    use crate::format::id::Id;
    use crate::format::pack::{BlobKind, PackEntry};
    use crate::repo::INDEX_FILE_BLOBS;

    /// A pack record of `blobs` made-up blobs (index files never open the packs).
    fn record(pack: u32, blobs: u32) -> PackRecord {
        let entries = (0..blobs)
            .map(|i| PackEntry {
                kind: BlobKind::Data,
                compression: Compression::Raw,
                id: Id::hash(&[pack.to_le_bytes(), i.to_le_bytes()].concat()),
                offset: pack::HEADER_LEN + u64::from(i) * 10,
                stored_len: 10,
                raw_len: 10,
            })
            .collect();
        let size = pack::HEADER_LEN
            + u64::from(blobs) * (10 + pack::ENTRY_LEN as u64)
            + pack::FOOTER_LEN as u64;
        PackRecord {
            id: PackId(Id::hash(&pack.to_le_bytes())),
            size,
            entries,
        }
    }

    #[test]
    fn rewritten_index_files_list_every_kept_pack_once_in_full_files() {
        let d = tempfile::tempdir().unwrap();
        let repo =
            Repository::init(&d.path().join("repo"), &crate::repo::InitOptions::default()).unwrap();
        // Three index files of 15 packs of 4,000 blobs, each listing one gone pack: the
        // 42 kept packs fill one index file while the old ones are still being read.
        let mut kept = Vec::new();
        let mut gone = Vec::new();
        for f in 0..3u32 {
            let packs: Vec<PackRecord> = (0..15).map(|p| record(f * 100 + p, 4000)).collect();
            repo.put_index_file(&packs).unwrap();
            gone.push(packs[0].id);
            kept.extend(packs[1..].iter().map(|p| p.id));
        }
        let (replaced, new) = rewrite_index_files(&repo, &gone, &[]).unwrap();
        assert_eq!(replaced.len(), 3);
        let mut listed = Vec::new();
        let mut sizes = Vec::new();
        for f in &new {
            let packs = repo.read_index_file(f).unwrap();
            sizes.push(packs.iter().map(|p| p.entries.len()).sum::<usize>());
            listed.extend(packs.into_iter().map(|p| p.id));
        }
        listed.sort();
        kept.sort();
        assert_eq!(listed, kept, "every kept pack once, no gone one");
        assert_eq!(sizes, [INDEX_FILE_BLOBS, 42 * 4000 - INDEX_FILE_BLOBS]);
    }

    #[test]
    fn new_packs_alone_are_split_into_index_file_sized_files() {
        let d = tempfile::tempdir().unwrap();
        let repo =
            Repository::init(&d.path().join("repo"), &crate::repo::InitOptions::default()).unwrap();
        let written: Vec<PackRecord> = (0..30).map(|p| record(p, 4000)).collect();
        let (replaced, new) = rewrite_index_files(&repo, &[], &written).unwrap();
        assert!(replaced.is_empty());
        let mut sizes: Vec<usize> = new
            .iter()
            .map(|f| {
                repo.read_index_file(f)
                    .unwrap()
                    .iter()
                    .map(|p| p.entries.len())
                    .sum()
            })
            .collect();
        sizes.sort();
        assert_eq!(sizes, [30 * 4000 - INDEX_FILE_BLOBS, INDEX_FILE_BLOBS]);
    }
}
