//! Changing snapshots' tags (`snap tag`). A snapshot record is immutable and named by
//! its hash, so a new tag set is a new record: it is written (durably) before the old
//! one is removed, so a crash in between leaves both, never neither. Nothing else of
//! the record changes; the new id is reported.

use crate::error::Result;
use crate::format::id::SnapshotId;
use crate::format::snapshot::Snapshot;
use crate::repo::Repository;

/// How the tags change.
#[derive(Clone, Debug, Default)]
pub struct TagChange {
    /// Replace the tags by these (then `add` and `remove` apply to them).
    pub set: Option<Vec<String>>,
    /// Tags to add.
    pub add: Vec<String>,
    /// Tags to remove.
    pub remove: Vec<String>,
}

impl TagChange {
    /// The tags of `s` after the change: sorted, each once.
    pub fn apply(&self, s: &Snapshot) -> Vec<String> {
        let mut tags = self.set.clone().unwrap_or_else(|| s.tags.clone());
        tags.extend(self.add.iter().cloned());
        tags.retain(|t| !self.remove.contains(t));
        tags.sort();
        tags.dedup();
        tags
    }
}

/// One snapshot's new record.
#[derive(Clone, Debug)]
pub struct Retagged {
    /// The record replaced.
    pub old: SnapshotId,
    /// The record written.
    pub new: SnapshotId,
    /// Its tags.
    pub tags: Vec<String>,
}

/// Applies `change` to `snapshots` (under the caller's exclusive lock, as `forget`
/// takes it); those whose tags do not change are left alone.
pub fn retag(
    repo: &Repository,
    snapshots: &[(SnapshotId, Snapshot)],
    change: &TagChange,
) -> Result<Vec<Retagged>> {
    let mut done = Vec::new();
    for (id, s) in snapshots {
        let tags = change.apply(s);
        let mut current = s.tags.clone();
        current.sort();
        current.dedup();
        if tags == current {
            continue;
        }
        crate::interrupt::check()?;
        let new = repo.save_snapshot(&Snapshot {
            tags: tags.clone(),
            ..s.clone()
        })?;
        repo.remove_snapshots(&[*id])?;
        done.push(Retagged {
            old: *id,
            new,
            tags,
        });
    }
    Ok(done)
}
