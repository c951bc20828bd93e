//! Drill records (`drills/<id>`): writing one (a drill only adds its record, under the
//! shared lock), reading them all, removing those prune lets go.
//!
//! Records are not in the index cache: there are few, and listing `drills/` and
//! reading each is cheap. A record that cannot be read is skipped with a warning, so
//! one damaged record never hides the others. A repository without `drills/` (made
//! before drills existed) simply has none.

use std::collections::HashSet;

use rayon::prelude::*;

use super::{listed_names, Repository};
use crate::error::{Error, Result};
use crate::format::drill::{check_id, Drill, Outcome, MAX_LEN};
use crate::format::id::{DrillId, Id, SnapshotId};

/// Associated data of a sealed drill record.
const DRILL_AAD: &[u8] = b"snap drill";

fn drill_path(id: &DrillId) -> String {
    format!("drills/{}", id.to_hex())
}

impl Repository {
    /// Writes a drill record (sealed in an encrypted repository); returns its id.
    pub fn save_drill(&self, d: &Drill) -> Result<DrillId> {
        let mut bytes = d.encode();
        if let Some(k) = &self.key {
            bytes = k.seal(DRILL_AAD, &bytes)?;
        }
        let id = DrillId(Id::hash(&bytes));
        self.store.put(&drill_path(&id), &bytes)?;
        Ok(id)
    }

    /// Reads and verifies drill record `id`.
    pub fn read_drill(&self, id: &DrillId) -> Result<Drill> {
        let b = self.store.read(&drill_path(id), MAX_LEN)?;
        check_id(id, &b)?;
        match &self.key {
            None => Drill::parse(id, &b),
            Some(k) => {
                let plain = k.open(DRILL_AAD, &b).ok_or_else(|| {
                    Error::corrupt("drill", id, "fails authentication (altered or damaged)")
                })?;
                Drill::parse(id, &plain)
            }
        }
    }

    /// Every drill record, read and verified, or why it cannot be.
    fn read_drills(&self) -> Result<Vec<(DrillId, Result<Drill>)>> {
        let ids: Vec<DrillId> = listed_names(self.store.as_ref(), "drills")?
            .into_iter()
            .map(DrillId)
            .collect();
        Ok(ids
            .par_iter()
            .map(|id| (*id, self.read_drill(id)))
            .collect())
    }

    /// Every readable drill record, oldest first; unreadable ones are skipped with a
    /// warning naming the file (`check` names them as errors: [`Repository::damaged_drills`]).
    pub fn drills(&self) -> Result<Vec<(DrillId, Drill)>> {
        let mut out: Vec<(DrillId, Drill)> = self
            .read_drills()?
            .into_iter()
            .filter_map(|(id, r)| match r {
                Ok(d) => Some((id, d)),
                Err(e) => {
                    log::warn!(
                        "skipping drill record {}/{}: {e}",
                        self.store.location(),
                        drill_path(&id)
                    );
                    None
                }
            })
            .collect();
        out.sort_by(|a, b| a.1.time.cmp(&b.1.time).then(a.0.cmp(&b.0)));
        Ok(out)
    }

    /// The drill records that cannot be read or do not verify: their paths (below the
    /// repository) and why, in path order.
    pub fn damaged_drills(&self) -> Result<Vec<(String, Error)>> {
        let mut out: Vec<(String, Error)> = self
            .read_drills()?
            .into_iter()
            .filter_map(|(id, r)| r.err().map(|e| (drill_path(&id), e)))
            .collect();
        out.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(out)
    }

    /// Deletes drill records.
    pub fn remove_drills(&self, ids: &[DrillId]) -> Result<()> {
        self.store
            .delete_all(&ids.iter().map(drill_path).collect::<Vec<_>>())
    }

    /// Deletes the drill records whose snapshot is gone, except the newest record of
    /// each source of each group, and its newest passed one (the next drill compares its
    /// row counts with that); returns how many went. Prune runs it, under the
    /// exclusive lock.
    pub fn prune_drills(&self) -> Result<u64> {
        let live: HashSet<SnapshotId> = self.snapshots()?.into_iter().map(|(id, _)| id).collect();
        let drills = self.drills()?;
        let (mut seen, mut seen_passed) = (HashSet::new(), HashSet::new());
        let mut keep = HashSet::new();
        // Newest first: the first record of a group's source is its newest.
        for (id, d) in drills.iter().rev() {
            for s in &d.sources {
                let key = (d.group_host.clone(), d.group.clone(), s.source.clone());
                if s.result == Outcome::Passed && seen_passed.insert(key.clone()) {
                    keep.insert(*id);
                }
                if seen.insert(key) {
                    keep.insert(*id);
                }
            }
        }
        let doomed: Vec<DrillId> = drills
            .iter()
            .filter(|(id, d)| !live.contains(&d.snapshot) && !keep.contains(id))
            .map(|(id, _)| *id)
            .collect();
        self.remove_drills(&doomed)?;
        Ok(doomed.len() as u64)
    }
}

#[cfg(test)]
mod tests {
    use crate::format::drill::{Drill, Outcome, VERSION};
    use crate::format::id::{Id, SnapshotId};
    use crate::repo::drills::drill_path;
    use crate::repo::{InitOptions, Repository};

    fn record(n: u8) -> Drill {
        Drill {
            version: VERSION,
            snapshot: SnapshotId(Id::hash(&[n])),
            time: chrono::Utc::now(),
            host: "h".into(),
            program: "snap test".into(),
            group_host: "h".into(),
            group: vec!["path:/x".into()],
            result: Outcome::Passed,
            seconds: 1.0,
            sources: Vec::new(),
        }
    }

    #[test]
    fn none_without_the_directory_and_a_damaged_record_is_skipped() {
        let d = tempfile::tempdir().unwrap();
        let root = d.path().join("repo");
        let repo = Repository::init(&root, &InitOptions::default()).unwrap();
        assert!(repo.drills().unwrap().is_empty(), "no drills/ means none");
        let a = repo.save_drill(&record(1)).unwrap();
        let b = repo.save_drill(&record(2)).unwrap();
        std::fs::write(root.join("drills").join(b.to_hex()), b"{").unwrap();
        let got = repo.drills().unwrap();
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].0, a);
        // Its snapshot is gone, but it is the group's newest record of its source.
        let mut with_source = record(3);
        with_source.sources.push(crate::format::drill::SourceDrill {
            source: "path:/x".into(),
            result: Outcome::Passed,
            reason: None,
            seconds: 1.0,
            bytes: 1,
            checks: Vec::new(),
            tables: Vec::new(),
        });
        let mut older = with_source.clone();
        older.time -= chrono::Duration::hours(1);
        let old = repo.save_drill(&older).unwrap();
        let newest = repo.save_drill(&with_source).unwrap();
        assert_eq!(repo.prune_drills().unwrap(), 2, "a and the older record go");
        let left: Vec<_> = repo
            .drills()
            .unwrap()
            .into_iter()
            .map(|(id, _)| id)
            .collect();
        assert_eq!(left, vec![newest]);
        assert!(!left.contains(&old));
        // `check` names the damaged record.
        let damaged = repo.damaged_drills().unwrap();
        assert_eq!(damaged.len(), 1);
        assert_eq!(damaged[0].0, drill_path(&b));
        repo.remove_drills(&[b, newest]).unwrap();
        assert!(repo.drills().unwrap().is_empty());
        assert!(repo.damaged_drills().unwrap().is_empty());
    }

    #[test]
    fn prune_keeps_the_newest_passed_drill_of_a_source_after_a_failed_one() {
        let d = tempfile::tempdir().unwrap();
        let repo = Repository::init(&d.path().join("repo"), &InitOptions::default()).unwrap();
        let drilled = |n: u8, result: Outcome, hours_ago: i64| {
            let mut r = record(n);
            r.time -= chrono::Duration::hours(hours_ago);
            r.result = result;
            r.sources.push(crate::format::drill::SourceDrill {
                source: "pg:db/app".into(),
                result,
                reason: None,
                seconds: 1.0,
                bytes: 1,
                checks: Vec::new(),
                tables: Vec::new(),
            });
            repo.save_drill(&r).unwrap()
        };
        let _older = drilled(1, Outcome::Passed, 3);
        let passed = drilled(2, Outcome::Passed, 2);
        let failed = drilled(3, Outcome::Failed, 1);
        // Every snapshot is gone.
        assert_eq!(repo.prune_drills().unwrap(), 1);
        let mut left: Vec<_> = repo
            .drills()
            .unwrap()
            .into_iter()
            .map(|(id, _)| id)
            .collect();
        left.sort();
        let mut want = vec![passed, failed];
        want.sort();
        assert_eq!(left, want, "the baseline of row counts went");
    }
}
