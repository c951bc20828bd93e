//! Snapshot records: writing one last, reading and finding them, removing them, and
//! bringing the index cache's list of them up to date.

use std::collections::HashSet;

use rayon::prelude::*;

use super::{ids_of, Repository};
use crate::error::{Error, Result, Usage};
use crate::format::id::{Id, SnapshotId};
use crate::format::snapshot::Snapshot;
use crate::store::Entry;

/// A snapshot record read from the store: its id, and its parsed form and bytes.
type ReadRecord = (SnapshotId, Result<(Snapshot, Vec<u8>)>);

impl Repository {
    /// Records a snapshot: the file last, after everything it references is durable.
    pub fn save_snapshot(&self, snap: &Snapshot) -> Result<SnapshotId> {
        let mut bytes = snap.encode();
        if let Some(k) = &self.key {
            bytes = k.seal(SNAPSHOT_AAD, &bytes)?;
        }
        let id = SnapshotId(Id::hash(&bytes));
        self.store.put(&snapshot_path(&id), &bytes)?;
        self.index.add_snapshot(&id, snap, &bytes)?;
        Ok(id)
    }

    /// How many times blob rows have left the index cache: a backup reads it after
    /// taking its lock, before its first lookup, and hands it to
    /// [`Repository::mark_verified`] with the snapshot it saved.
    pub fn removals(&self) -> Result<i64> {
        self.index.removals()
    }

    /// Records that every blob snapshot `id` references was in the index cache while it
    /// had counted `removals` (see [`Repository::removals`]).
    pub fn mark_verified(&self, id: &SnapshotId, removals: i64) -> Result<()> {
        self.index.mark_verified(id, removals)
    }

    /// Whether every blob snapshot `id` references is in the index cache, without a
    /// lookup: a backup on this client saved it ([`Repository::mark_verified`]) and no
    /// blob row has left the cache since.
    pub fn is_verified(&self, id: &SnapshotId) -> Result<bool> {
        self.index.is_verified(id)
    }

    /// Writes back each snapshot record file that is damaged in the store but whole in
    /// this host's cache (its bytes hash to its name, so they are the record as it was
    /// saved); returns their ids. Files that could not be read for another reason are
    /// left alone.
    pub fn restore_damaged_records(&self) -> Result<Vec<SnapshotId>> {
        let mut restored = Vec::new();
        for (id, bytes) in self.index.snapshots()? {
            match self.read_snapshot_file(&id) {
                Err(e) if e.is_damage() && Id::hash(&bytes) == id.0 => {
                    self.store.put(&snapshot_path(&id), &bytes)?;
                    restored.push(id);
                }
                _ => {}
            }
        }
        Ok(restored)
    }

    /// Reads and verifies snapshot `id`'s record file (not the index's copy of it).
    pub fn read_snapshot_file(&self, id: &SnapshotId) -> Result<Snapshot> {
        let b = self
            .store
            .read(&snapshot_path(id), crate::format::snapshot::MAX_LEN)?;
        self.decode_snapshot(id, &b)
    }

    /// Verifies a snapshot record file's bytes against its name, opens them
    /// (encrypted repositories) and parses them.
    fn decode_snapshot(&self, id: &SnapshotId, b: &[u8]) -> Result<Snapshot> {
        let Some(k) = &self.key else {
            return Snapshot::decode(id, b);
        };
        crate::format::snapshot::check_id(id, b)?;
        let plain = k.open(SNAPSHOT_AAD, b).ok_or_else(|| {
            Error::corrupt("snapshot", id, "fails authentication (altered or damaged)")
        })?;
        Snapshot::parse(id, &plain)
    }

    /// All snapshots, oldest first.
    pub fn snapshots(&self) -> Result<Vec<(SnapshotId, Snapshot)>> {
        self.ensure_fresh()?;
        self.cached_snapshots()
    }

    /// The snapshots the index cache holds, oldest first, as they are.
    pub(super) fn cached_snapshots(&self) -> Result<Vec<(SnapshotId, Snapshot)>> {
        self.index
            .snapshots()?
            .into_iter()
            .map(|(id, rec)| Ok((id, self.decode_snapshot(&id, &rec)?)))
            .collect()
    }

    /// Resolves `latest` or a unique prefix of a snapshot id.
    pub fn find_snapshot(&self, spec: &str) -> Result<(SnapshotId, Snapshot)> {
        self.find_snapshot_of(spec, None)
    }

    /// [`Repository::find_snapshot`] among the snapshots of `host` when given. Without
    /// a host, `latest` is the newest of any host; when that is another host's while
    /// this one has snapshots too, a warning says so.
    pub fn find_snapshot_of(
        &self,
        spec: &str,
        host: Option<&str>,
    ) -> Result<(SnapshotId, Snapshot)> {
        let mut all = self.snapshots()?;
        if let Some(h) = host {
            all.retain(|(_, s)| s.host == h);
            if all.is_empty() {
                return Err(Error::SnapshotNotFound {
                    spec: format!("{spec} of host {h}"),
                    location: self.location(),
                });
            }
        }
        if spec == "latest" {
            let latest = all.pop().ok_or_else(|| Error::NoSnapshots {
                location: self.location(),
                unreadable: self.unreadable.load(std::sync::atomic::Ordering::Relaxed),
            })?;
            let this = crate::host::hostname();
            if host.is_none() && latest.1.host != this {
                if let Some((own_id, own)) = all.iter().rev().find(|(_, s)| s.host == this) {
                    log::warn!(
                        "latest is snapshot {} of host {}; this host's newest is {} of {} (`--host {this}` takes it)",
                        latest.0.short(),
                        latest.1.host,
                        own_id.short(),
                        crate::host::local_time(&own.time)
                    );
                }
            }
            return Ok(latest);
        }
        let spec_lc = spec.to_ascii_lowercase();
        let mut hits = all
            .into_iter()
            .filter(|(id, _)| id.to_hex().starts_with(&spec_lc));
        match (hits.next(), hits.next()) {
            (Some(one), None) if !spec.is_empty() => Ok(one),
            (Some(_), Some(_)) => Err(Usage::AmbiguousSnapshot {
                prefix: spec.to_string(),
            }
            .into()),
            _ => Err(Error::SnapshotNotFound {
                spec: spec.to_string(),
                location: self.location(),
            }),
        }
    }

    /// Deletes snapshot records, files first (under the caller's exclusive lock). The
    /// data they referenced stays until `prune`.
    pub fn remove_snapshots(&self, ids: &[SnapshotId]) -> Result<()> {
        self.store
            .delete_all(&ids.iter().map(snapshot_path).collect::<Vec<_>>())?;
        for id in ids {
            self.index.remove_snapshot(id)?;
        }
        Ok(())
    }

    /// Makes the index's snapshot list match the files in `snapshots/`. Returns the
    /// records that cannot be read (path, reason): they are left out of the index (one
    /// damaged record must not make the repository unusable), but prune must not run
    /// while they exist, as it cannot know what they reference.
    pub fn sync_snapshots(&self) -> Result<Vec<(String, String)>> {
        self.sync_listed_snapshots(&self.store.list("snapshots")?)
    }

    /// [`Repository::sync_snapshots`] with `listed`, a listing of `snapshots/` made
    /// before (see [`Repository::refresh`] for why it may be).
    pub(super) fn sync_listed_snapshots(&self, listed: &[Entry]) -> Result<Vec<(String, String)>> {
        let stored: HashSet<SnapshotId> = ids_of(listed).map(|(id, _)| SnapshotId(id)).collect();
        let indexed: HashSet<SnapshotId> = self
            .index
            .snapshots()?
            .into_iter()
            .map(|(id, _)| id)
            .collect();
        for id in indexed.difference(&stored) {
            self.index.remove_snapshot(id)?;
        }
        let new: Vec<SnapshotId> = stored.difference(&indexed).copied().collect();
        let read: Vec<ReadRecord> = new
            .par_iter()
            .map(|id| {
                let r = self
                    .store
                    .read(&snapshot_path(id), crate::format::snapshot::MAX_LEN)
                    .and_then(|b| Ok((self.decode_snapshot(id, &b)?, b)));
                (*id, r)
            })
            .collect();
        let mut unreadable = Vec::new();
        for (id, r) in read {
            match r {
                Ok((snap, bytes)) => self.index.add_snapshot(&id, &snap, &bytes)?,
                Err(e) => {
                    let path = format!("{}/{}", self.store.location(), snapshot_path(&id));
                    log::warn!("skipping snapshot {path}: {e}");
                    unreadable.push((path, e.to_string()));
                }
            }
        }
        unreadable.sort();
        Ok(unreadable)
    }
}

/// Associated data of a sealed snapshot record.
const SNAPSHOT_AAD: &[u8] = b"snap snapshot";

fn snapshot_path(id: &SnapshotId) -> String {
    format!("snapshots/{}", id.to_hex())
}
