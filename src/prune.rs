//! `prune`: deletes packs no snapshot needs and rewrites packs that are mostly garbage.
//!
//! Under the exclusive lock (no backup can be choosing blobs to reuse meanwhile):
//! 1. pick up snapshots and packs other processes made, and packs an interrupted run
//!    left unindexed;
//! 2. mark every blob the snapshots reach (on disk, see [`crate::reach`]); a missing
//!    or unreadable one stops prune before anything changes;
//! 3. plan: packs without live blobs go; partly used packs are rewritten, most wasteful
//!    first, until the unused bytes left are at most `max_unused` of the used bytes;
//! 4. copy the live blobs of rewritten packs, verified, into new packs made durable;
//! 5. in one index transaction, drop the old packs' rows and add the new packs;
//! 6. only then delete the old pack files, and leftover temp files.
//!
//! A crash before 5 leaves new packs unindexed (picked up as garbage by the next
//! prune); after 5, old files not yet deleted are unindexed garbage likewise. No step
//! deletes a blob a snapshot needs before its copy is durable and indexed.

use crate::error::{Error, Result};
use crate::id::Id;
use crate::pack;
use crate::progress::Progress;
use crate::reach::mark_reachable;
use crate::repo::{Repacker, Repository};

/// How `prune` runs.
#[derive(Clone, Copy, Debug)]
pub struct PruneOptions {
    /// Unused bytes to tolerate, as a share of the used bytes (0.05 = 5 %).
    pub max_unused: f64,
    /// Plan and report only.
    pub dry_run: bool,
}

impl Default for PruneOptions {
    fn default() -> Self {
        PruneOptions {
            max_unused: 0.05,
            dry_run: false,
        }
    }
}

/// What `prune` did (or, with `dry_run`, would do).
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct PruneReport {
    /// Snapshots kept (all of them: prune removes no snapshot).
    pub snapshots: u64,
    /// Packs before.
    pub packs: u64,
    /// Packs found on disk but not in the index (left by interrupted runs).
    pub packs_unindexed: u64,
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
}

/// Runs prune; see the module docs.
pub fn prune(
    repo: &Repository,
    opts: &PruneOptions,
    progress: &dyn Progress,
) -> Result<PruneReport> {
    let lock = repo.lock(true, "prune")?;
    if let Some((path, why)) = repo.sync_snapshots()?.first() {
        return Err(Error::Invalid(format!(
            "snapshot record {} cannot be read ({why}), so prune cannot tell what it needs; move it out of the repository if it is garbage; nothing was deleted",
            path.display()
        )));
    }
    if !repo.index().is_complete()? {
        return Err(Error::Invalid(
            "the index is incomplete (some packs could not be read); run `snap check`, then `snap repair index`; nothing was deleted".into(),
        ));
    }
    let mut report = PruneReport {
        packs_unindexed: repo.index_unknown_packs()?,
        ..Default::default()
    };
    let roots: Vec<Id> = repo.snapshots()?.iter().map(|(_, s)| s.tree).collect();
    report.snapshots = roots.len() as u64;
    let reach = mark_reachable(repo, &roots)?;
    if let Some(p) = reach.problems.first() {
        return Err(Error::Invalid(format!(
            "the repository is damaged: {} blobs the snapshots need are missing or unreadable (blob {}: {}); run `snap check` to see which snapshots are affected; nothing was deleted",
            reach.problems.len(),
            p.id,
            p.why
        )));
    }

    // Plan.
    let usage = repo.index().pack_usage()?;
    report.packs = usage.len() as u64;
    let overhead =
        |blobs: u64| pack::HEADER_LEN + pack::FOOTER_LEN as u64 + blobs * pack::ENTRY_LEN as u64;
    let mut delete = Vec::new();
    let mut removed_bytes = 0u64;
    let mut partly = Vec::new();
    let mut live_total = 0u64;
    let mut unused_total = 0u64;
    for u in &usage {
        report.bytes_before += u.size;
        if u.live_blobs == 0 {
            delete.push(u.name);
            removed_bytes += u.size;
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
    let allowed = (opts.max_unused.max(0.0) * live_total as f64) as u64;
    let mut repack = Vec::new();
    for (unused, u) in partly {
        if unused_total <= allowed {
            break;
        }
        unused_total -= unused;
        removed_bytes += u.size;
        repack.push(u);
    }
    report.packs_deleted = delete.len() as u64;
    report.packs_repacked = repack.len() as u64;
    report.bytes_unused_after = unused_total;
    if opts.dry_run {
        let copied: u64 = repack
            .iter()
            .map(|u| u.live_bytes + overhead(u.live_blobs))
            .sum();
        report.blobs_repacked = repack.iter().map(|u| u.live_blobs).sum();
        report.bytes_repacked = repack.iter().map(|u| u.live_bytes).sum();
        report.bytes_after = report.bytes_before - removed_bytes + copied;
        return Ok(report);
    }

    // Copy, index, delete.
    let mut repacker = Repacker::new(repo);
    for u in &repack {
        for (id, loc) in repo.index().blobs_in(&u.name, true)? {
            let n = repacker.copy(&id, &loc)?;
            report.blobs_repacked += 1;
            report.bytes_repacked += n;
            progress.bytes(n);
        }
    }
    let written = repacker.finish()?;
    report.packs_written = written.len() as u64;
    let written_bytes: u64 = written.iter().map(|(_, size, _)| size).sum();
    let mut gone: Vec<Id> = delete;
    gone.extend(repack.iter().map(|u| u.name));
    // A lock taken over as stale means someone else may be in here: stop before the
    // index changes.
    lock.check()?;
    repo.index().replace_packs(&gone, &written)?;
    // A pack is named by its bytes: a rewrite can produce a pack that is also on the
    // delete list (an identical one an interrupted prune wrote and this one indexed as
    // garbage). Its file is the new pack now; deleting it would lose its blobs.
    let new: std::collections::HashSet<Id> = written.iter().map(|(id, _, _)| *id).collect();
    gone.retain(|id| !new.contains(id));
    repo.delete_packs(&gone)?;
    report.tmp_files_removed = repo.clean_tmp()?;
    report.bytes_after = report.bytes_before - removed_bytes + written_bytes;
    Ok(report)
}
