//! `repair index`: rewrites the index files from the packs themselves, under the
//! exclusive lock.
//!
//! Every pack's trailer is read. A pack whose trailer is damaged is salvaged from what
//! the index placed in it (as restic's `repair packs` does): each such blob that reads
//! intact at its place is copied into a new pack, and the pack goes; one the index did
//! not know is left out (prune later deletes it). A pack holding blob copies
//! known to be damaged (recorded by `check --read-data`, or found by reading every
//! blob with [`RepairOptions::read_data`]) is salvaged: its intact blobs are copied,
//! verified, into new packs, and the pack leaves the index and the store, so no backup
//! can deduplicate against a damaged copy again; the next backup of the intact source
//! stores those blobs afresh. Only damage may drop a pack: a storage error that is not
//! damage (a network failure, a permission error) stops the repair before any change.
//!
//! Order: new packs durable, new index files, old index files deleted, then the
//! salvaged packs; a crash at any point leaves every listed pack durable.

use std::collections::HashSet;
use std::sync::Mutex;

use rayon::prelude::*;

use crate::error::Result;
use crate::format::id::{IndexFileId, PackId};
use crate::format::pack::PackEntry;
use crate::locked;
use crate::progress::Progress;
use crate::repo::index::BlobLoc;
use crate::repo::{batches, pack_path, PackRecord, Repacker, Repository};

/// What `repair index` does besides reading trailers.
#[derive(Clone, Copy, Debug, Default)]
pub struct RepairOptions {
    /// Also read and verify every blob of every pack, salvaging packs with damage
    /// that no `check --read-data` recorded.
    pub read_data: bool,
}

/// What `repair index` found and did.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct RepairReport {
    /// Packs indexed.
    pub packs: u64,
    /// Blobs indexed.
    pub blobs: u64,
    /// Index files written.
    pub index_files: u64,
    /// Snapshots indexed.
    pub snapshots: u64,
    /// Packs whose trailer could not be read, with the reason; they are left out.
    pub skipped: Vec<String>,
    /// Packs that held damaged blobs: their intact blobs were copied into new packs
    /// and the pack deleted. One line each, naming the pack and what was dropped.
    pub salvaged: Vec<String>,
    /// Damaged blob copies dropped (the data they held comes back with the next
    /// backup of a source that still has it).
    pub blobs_dropped: u64,
}

/// The blobs the index places in `pack`, as its trailer would list them.
fn placed_by_index(repo: &Repository, pack: &PackId) -> Result<Vec<PackEntry>> {
    Ok(repo
        .index()
        .blobs_in(pack, false)?
        .into_iter()
        .map(|(id, l)| PackEntry {
            kind: l.kind,
            compression: l.compression,
            id,
            offset: l.offset,
            stored_len: l.stored_len,
            raw_len: l.raw_len,
        })
        .collect())
}

/// Runs `repair index`; see the module docs.
pub fn repair_index(
    repo: &Repository,
    opts: RepairOptions,
    progress: &dyn Progress,
) -> Result<RepairReport> {
    let _lock = repo.lock(true, "repair index")?;
    repo.clean_tmp()?;
    for id in repo.restore_damaged_records()? {
        log::warn!("snapshot record {id} was damaged; written back from this host's cache");
    }
    let old = repo.index_files()?;
    let known = repo.index().damaged()?;
    let skipped = Mutex::new(Vec::new());
    let packs = repo.pack_files()?;
    // Each pack, with the offsets of its damaged copies and whether its trailer read.
    let read: Vec<Option<(PackRecord, HashSet<u64>, bool)>> = packs
        .par_iter()
        .map(|(id, size)| {
            // Nothing has changed yet: a signal may stop the repair here.
            crate::interrupt::check()?;
            let (entries, trailer_ok) = match repo.pack_trailer(id, *size) {
                Ok(entries) => (entries, true),
                Err(e) if e.is_damage() => {
                    let known = placed_by_index(repo, id)?;
                    if known.is_empty() {
                        log::warn!("unreadable pack {}: {e}", pack_path(id));
                        locked(&skipped).push(format!("{}: {e}", pack_path(id)));
                        return Ok(None);
                    }
                    log::warn!(
                        "pack {}: {e}; the {} blobs the index placed in it are salvaged",
                        pack_path(id),
                        known.len()
                    );
                    (known, false)
                }
                Err(e) => return Err(e),
            };
            let mut bad: HashSet<u64> = known
                .get(id)
                .into_iter()
                .flatten()
                .map(|(_, offset)| *offset)
                .collect();
            if opts.read_data || !trailer_ok {
                for e in &entries {
                    crate::interrupt::check()?;
                    match repo.read_blob_at(&e.id, &BlobLoc::in_pack(*id, e)) {
                        Ok(_) => {}
                        Err(err) if err.is_damage() => {
                            bad.insert(e.offset);
                        }
                        Err(err) => return Err(err),
                    }
                    progress.bytes(u64::from(e.stored_len));
                }
            }
            Ok(Some((
                PackRecord {
                    id: *id,
                    size: *size,
                    entries,
                },
                bad,
                trailer_ok,
            )))
        })
        .collect::<Result<_>>()?;
    let mut records = Vec::new();
    let mut damaged: Vec<(PackRecord, HashSet<u64>)> = Vec::new();
    for (record, bad, trailer_ok) in read.into_iter().flatten() {
        if bad.is_empty() && trailer_ok {
            records.push(record);
        } else {
            damaged.push((record, bad));
        }
    }
    damaged.sort_by_key(|(r, _)| r.id);
    let mut report = RepairReport {
        skipped: skipped
            .into_inner()
            .unwrap_or_else(std::sync::PoisonError::into_inner),
        ..Default::default()
    };
    let mut repacker = Repacker::new(repo)?;
    for (
        PackRecord {
            id: pack, entries, ..
        },
        bad,
    ) in &damaged
    {
        let (mut copied, mut dropped) = (0u64, 0u64);
        for e in entries {
            if !bad.contains(&e.offset) {
                match repacker.copy(&e.id, &BlobLoc::in_pack(*pack, e)) {
                    Ok(_) => {
                        copied += 1;
                        continue;
                    }
                    Err(err) if err.is_damage() => {}
                    Err(err) => return Err(err),
                }
            }
            dropped += 1;
        }
        report.blobs_dropped += dropped;
        report.salvaged.push(format!(
            "{}: {dropped} damaged blobs dropped, {copied} intact blobs copied into new packs",
            pack_path(pack)
        ));
    }
    records.extend(repacker.finish()?);
    records.sort_by_key(|r| r.id);
    let remade: HashSet<PackId> = records.iter().map(|r| r.id).collect();
    report.packs = records.len() as u64;
    report.blobs = records.iter().map(|r| r.entries.len() as u64).sum();
    repo.index().clear()?;
    let mut written = HashSet::new();
    for batch in batches(records) {
        written.insert(repo.write_index_file(&batch)?);
        report.index_files += 1;
    }
    let stale: Vec<IndexFileId> = old.into_iter().filter(|f| !written.contains(f)).collect();
    repo.delete_index_files(&stale)?;
    // Listed by no index file now: the damaged copies go with their packs. A pack
    // whose blobs were all copied, in the same order, is written again under its own
    // name (packs are named by their bytes): that one is the good copy and stays.
    let salvaged: Vec<PackId> = damaged.iter().map(|(r, _)| r.id).collect();
    let doomed: Vec<PackId> = salvaged
        .iter()
        .filter(|p| !remade.contains(p))
        .copied()
        .collect();
    repo.delete_packs(&doomed)?;
    let present: HashSet<PackId> = packs.iter().map(|(id, _)| *id).collect();
    let gone: Vec<PackId> = known
        .keys()
        .filter(|p| !present.contains(*p))
        .chain(&salvaged)
        .copied()
        .collect();
    repo.index().forget_damaged(&gone)?;
    repo.refresh()?;
    report.snapshots = repo.snapshots()?.len() as u64;
    Ok(report)
}
