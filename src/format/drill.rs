//! Drill records: the proof that a snapshot was restored for real. One small JSON
//! document per drill under `drills/`, named by the BLAKE3 of its bytes as stored
//! (sealed in an encrypted repository, as snapshot records are).
//!
//! A record says which snapshot was drilled, when, on which host, and per source
//! whether its restore passed, why not, how long it took (the measured RTO), how many
//! bytes it restored, which checks ran and, for databases, the rows of each table.
//! It names the group of its snapshot (host and sources) itself, so that a record
//! outlives its snapshot and the next drill of the group can compare row counts.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::error::Result;
use crate::format::id::{DrillId, SnapshotId};

/// Drill record version written and read by this build.
pub const VERSION: u32 = 1;
/// Largest drill record accepted on read.
pub const MAX_LEN: u64 = 4 << 20;

/// Whether a drill (or one source of it) proved its restore.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// Restored and every check held.
    Passed,
    /// The restore or a check failed (the reason says which).
    Failed,
}

/// One drill of one snapshot.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Drill {
    /// Record version ([`VERSION`]).
    pub version: u32,
    /// The snapshot drilled.
    pub snapshot: SnapshotId,
    /// When the drill started, UTC.
    pub time: DateTime<Utc>,
    /// Host that ran the drill.
    pub host: String,
    /// Program and version that ran it.
    pub program: String,
    /// The host of the snapshot's group.
    pub group_host: String,
    /// The sources of the snapshot's group
    /// ([`Snapshot::group_key`](crate::format::snapshot::Snapshot::group_key)).
    pub group: Vec<String>,
    /// Passed when every source passed.
    pub result: Outcome,
    /// Wall time of the whole drill, seconds.
    pub seconds: f64,
    /// One entry per source drilled.
    pub sources: Vec<SourceDrill>,
}

/// The drill of one source.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SourceDrill {
    /// The source by kind and place
    /// ([`Source::key`](crate::format::snapshot::Source::key)), e.g. `pg:db/app`.
    pub source: String,
    /// Passed or failed.
    pub result: Outcome,
    /// Why it failed; or a note on a passed one (`application-level check not run`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Restore time in seconds, checks included: the measured RTO.
    pub seconds: f64,
    /// Bytes restored.
    pub bytes: u64,
    /// The checks that ran, by name (`content`, `metadata`, `tables`, `row_counts`...).
    pub checks: Vec<String>,
    /// Databases: the rows of each table restored.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tables: Vec<TableRows>,
}

/// The rows of one restored table.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TableRows {
    /// `database.schema.table` (`schema.table` for a `--pg` dump).
    pub table: String,
    /// Rows found after the restore.
    pub rows: u64,
    /// Rows the last passed drill of the same group and source found.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous: Option<u64>,
    /// The count fell sharply since then (see [`fell_sharply`]).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub flagged: bool,
}

/// Whether a table's row count fell sharply from `previous` to `now`: to under half of
/// a previous count of at least [`FLAG_MIN_ROWS`], or from any rows to none. Smaller
/// tables swing by design (queues, sessions); an emptied one never does silently.
pub fn fell_sharply(previous: u64, now: u64) -> bool {
    (previous > 0 && now == 0) || (previous >= FLAG_MIN_ROWS && now < previous / 2)
}

/// The smallest previous row count a fall to under half of it is flagged from.
pub const FLAG_MIN_ROWS: u64 = 100;

impl Drill {
    /// Serializes; the id of a drill record is the BLAKE3 of these bytes as stored.
    pub fn encode(&self) -> Vec<u8> {
        let mut b = serde_json::to_vec_pretty(self).expect("drill records serialize");
        b.push(b'\n');
        b
    }

    /// Parses a record's JSON (of drill `id`, for errors).
    pub fn parse(id: &DrillId, b: &[u8]) -> Result<Drill> {
        crate::format::snapshot::parse_record("drill", VERSION, &id.to_hex(), b)
    }
}

/// Checks that a record file's bytes hash to its name `id`.
pub fn check_id(id: &DrillId, b: &[u8]) -> Result<()> {
    crate::format::snapshot::check_record_id("drill", &id.0, b)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::Error;
    use crate::format::id::Id;

    fn sample() -> Drill {
        Drill {
            version: VERSION,
            snapshot: SnapshotId(Id::hash(b"snap")),
            time: "2026-11-21T03:00:00Z".parse().unwrap(),
            host: "ngw1".into(),
            program: "snap test".into(),
            group_host: "ngw1".into(),
            group: vec!["pg:db/app".into()],
            result: Outcome::Failed,
            seconds: 2.5,
            sources: vec![SourceDrill {
                source: "pg:db/app".into(),
                result: Outcome::Failed,
                reason: Some("table public.orders fell from 500 to 0 rows".into()),
                seconds: 2.0,
                bytes: 4096,
                checks: vec!["restore".into(), "tables".into(), "row_counts".into()],
                tables: vec![TableRows {
                    table: "public.orders".into(),
                    rows: 0,
                    previous: Some(500),
                    flagged: true,
                }],
            }],
        }
    }

    #[test]
    fn round_trip_and_future_version() {
        let d = sample();
        let b = d.encode();
        let id = DrillId(Id::hash(&b));
        check_id(&id, &b).unwrap();
        assert_eq!(Drill::parse(&id, &b).unwrap(), d);
        assert!(check_id(&DrillId(Id::hash(b"x")), &b).is_err());
        let mut v9 = d;
        v9.version = 9;
        assert!(matches!(
            Drill::parse(&id, &v9.encode()),
            Err(Error::UnsupportedVersion { found: 9, .. })
        ));
    }

    #[test]
    fn sharp_falls_are_an_emptied_table_or_a_big_one_halved() {
        assert!(fell_sharply(1, 0));
        assert!(fell_sharply(100, 49));
        assert!(!fell_sharply(100, 50));
        assert!(!fell_sharply(99, 10), "small tables swing");
        assert!(!fell_sharply(0, 0));
        assert!(!fell_sharply(500, 600));
    }
}
