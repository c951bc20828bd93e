//! Monitoring figures in the Prometheus text exposition format (version 0.0.4): what
//! `snap metrics` prints and a profile's `metrics_file` holds.
//!
//! [`gather`] reads them cheaply, from the index cache (snapshot records and pack
//! sizes; no pack is read) and from this client's record of its last `check`
//! ([`record_check`]: a small JSON file in the repository's cache directory, never part
//! of the repository, so it tells what checks run from this host found). The facts of
//! each group of snapshots (host and sources, as `forget` groups them) are collected
//! in one place, [`groups`], into a [`GroupMetrics`]; each series is one row of a
//! table ([`GROUP_SERIES`] and the others), which [`render`] and the `--help` text
//! ([`series_help`]) both read, so a series is added once.
//!
//! [`render`] gives every family HELP and TYPE lines, escapes label values (backslash,
//! double quote, newline) and help texts (backslash, newline), and names carry their
//! units (`_seconds`, `_bytes`, `_timestamp_seconds`, `_ratio`). A family with no
//! sample (no check recorded yet) is left out. [`write_atomic`] replaces a file the
//! way node_exporter's textfile collector needs: a temp file in the same directory,
//! fsynced, mode 0644, renamed over the old one.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::{Read as _, Write as _};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::error::{Error, IoContext, Result};
use crate::format::drill::{Drill, Outcome};
use crate::format::id::{DrillId, SnapshotId};
use crate::format::snapshot::{Snapshot, Summary};
use crate::ops::drill;
use crate::repo::Repository;

/// The file in the repository's cache directory that holds the last check.
pub const CHECK_FILE: &str = "last-check.json";
/// Largest check record read back.
const CHECK_FILE_MAX: u64 = 64 << 10;

/// What a group of snapshots (same host, same sources) shows.
#[derive(Clone, Debug, Serialize)]
pub struct GroupMetrics {
    /// The host that made them.
    pub host: String,
    /// Their sources ([`Snapshot::group_key`]).
    pub sources: Vec<String>,
    /// How many the repository holds.
    pub snapshots: u64,
    /// The newest: the last successful backup (a failed one records no snapshot).
    pub last_id: SnapshotId,
    /// When its backup started.
    pub last_time: DateTime<Utc>,
    /// Its figures.
    pub last_summary: Summary,
    /// The group's newest drill, passed or failed.
    pub last_drill: Option<DrillFacts>,
    /// Its newest passed drill.
    pub last_passed_drill: Option<DrillFacts>,
}

/// What the metrics say of one drill.
#[derive(Clone, Debug, Serialize)]
pub struct DrillFacts {
    /// When it ran.
    pub time: DateTime<Utc>,
    /// Whether every source came back.
    pub passed: bool,
    /// Its restore time ([`drill::rto`]).
    pub rto_seconds: f64,
}

impl DrillFacts {
    fn of(d: &Drill) -> DrillFacts {
        DrillFacts {
            time: d.time,
            passed: d.result == Outcome::Passed,
            rto_seconds: drill::rto(d),
        }
    }
}

/// What the repository as a whole shows.
#[derive(Clone, Debug, Serialize)]
pub struct RepositoryMetrics {
    /// The pack files' bytes, by the index.
    pub size_bytes: u64,
    /// Pack files.
    pub packs: u64,
    /// Snapshots, all groups.
    pub snapshots: u64,
    /// Files in the WAL archive (`snap wal push`).
    pub wal_files: u64,
    /// When the newest of them was written, where the store tells.
    pub wal_last_archived: Option<DateTime<Utc>>,
}

/// The last `check` this client ran on a repository, as [`record_check`] keeps it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CheckRecord {
    /// When it finished.
    pub time: DateTime<Utc>,
    /// How long it took, seconds.
    pub seconds: f64,
    /// Whether it found no error.
    pub ok: bool,
    /// The errors it found.
    pub errors: u64,
    /// The share of packs it read and verified: 0 (structure only), 1
    /// (`--read-data`), or a `--read-data-subset` share.
    pub read_data: f64,
}

/// Everything [`gather`] reads.
#[derive(Clone, Debug, Serialize)]
pub struct Metrics {
    /// Repository-wide figures.
    pub repository: RepositoryMetrics,
    /// This client's last check, if it ran one.
    pub last_check: Option<CheckRecord>,
    /// One entry per group, by host and sources.
    pub groups: Vec<GroupMetrics>,
}

/// How a `snap run` of a profile ended, for its `metrics_file`.
#[derive(Clone, Debug)]
pub struct RunOutcome {
    /// The profile.
    pub profile: String,
    /// When the run ended.
    pub finished: DateTime<Utc>,
    /// How long it took, seconds.
    pub seconds: f64,
    /// Its exit status: 0 ok, 3 snapshot made with entries left out, else failed.
    pub exit: i32,
}

/// Reads the figures of `repo`; see the module docs.
pub fn gather(repo: &Repository) -> Result<Metrics> {
    let totals = repo.totals()?;
    let snapshots = repo.snapshots()?;
    let wal = repo.wal().listing()?;
    Ok(Metrics {
        repository: RepositoryMetrics {
            size_bytes: totals.pack_bytes,
            packs: totals.packs,
            snapshots: snapshots.len() as u64,
            wal_files: wal.len() as u64,
            wal_last_archived: wal.iter().filter_map(|(_, t)| *t).max().map(DateTime::from),
        },
        last_check: last_check(repo)?,
        groups: groups(snapshots, &repo.drills()?),
    })
}

/// The snapshots by group (host and sources), each group with its count, its newest
/// snapshot and its newest drills (of `drills`, oldest first); ordered by host, then
/// sources.
pub fn groups(
    snapshots: Vec<(SnapshotId, Snapshot)>,
    drills: &[(DrillId, Drill)],
) -> Vec<GroupMetrics> {
    let mut by_key: BTreeMap<drill::Group, GroupMetrics> = BTreeMap::new();
    for (id, s) in snapshots {
        let g = by_key
            .entry(drill::group_of(&s))
            .or_insert_with_key(|(host, sources)| GroupMetrics {
                host: host.clone(),
                sources: sources.clone(),
                snapshots: 0,
                last_id: id,
                last_time: s.time,
                last_summary: s.summary.clone(),
                last_drill: None,
                last_passed_drill: None,
            });
        g.snapshots += 1;
        if s.time > g.last_time {
            (g.last_id, g.last_time, g.last_summary) = (id, s.time, s.summary);
        }
    }
    for (_, d) in drills {
        if let Some(g) = by_key.get_mut(&(d.group_host.clone(), d.group.clone())) {
            g.last_drill = Some(DrillFacts::of(d));
            if d.result == Outcome::Passed {
                g.last_passed_drill = Some(DrillFacts::of(d));
            }
        }
    }
    by_key.into_values().collect()
}

/// Records `check` as this client's last check of `repo`, replacing the one before.
pub fn record_check(repo: &Repository, check: &CheckRecord) -> Result<()> {
    let bytes = serde_json::to_vec_pretty(check)
        .map_err(|e| Error::internal("encoding the check record", Some(Box::new(e))))?;
    write_atomic(&repo.cache_dir().join(CHECK_FILE), &bytes)
}

/// This client's last check of `repo`, if it ran one; a record that cannot be read is
/// an error naming its file.
pub fn last_check(repo: &Repository) -> Result<Option<CheckRecord>> {
    let path = repo.cache_dir().join(CHECK_FILE);
    let file = match std::fs::File::open(&path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        r => r.at(&path)?,
    };
    let mut bytes = Vec::new();
    file.take(CHECK_FILE_MAX + 1)
        .read_to_end(&mut bytes)
        .at(&path)?;
    let corrupt = |detail: String| {
        Error::corrupt(
            "check record",
            path.display(),
            format!("{detail} (delete it: the next `snap check` writes it again)"),
        )
    };
    if bytes.len() as u64 > CHECK_FILE_MAX {
        return Err(corrupt(format!("larger than {CHECK_FILE_MAX} bytes")));
    }
    serde_json::from_slice(&bytes)
        .map(Some)
        .map_err(|e| corrupt(e.to_string()))
}

/// Replaces `path` with `bytes` atomically: a reader sees the old file or the new one
/// whole, never a part. A temp file (hidden, not ending in `.prom`, so that
/// node_exporter ignores it) is written in the same directory, fsynced, given mode
/// 0644 and renamed over `path`; then the directory is fsynced.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let name = path
        .file_name()
        .unwrap_or(path.as_os_str())
        .to_string_lossy();
    let mut tmp = tempfile::Builder::new()
        .prefix(&format!(".{name}."))
        .suffix(".tmp")
        .tempfile_in(dir)
        .at(path)?;
    tmp.write_all(bytes).at(tmp.path())?;
    let file = tmp.as_file();
    file.set_permissions(std::fs::Permissions::from_mode(0o644))
        .and_then(|()| file.sync_all())
        .at(tmp.path())?;
    tmp.persist(path).map_err(|e| e.error).at(path)?;
    std::fs::File::open(dir).and_then(|d| d.sync_all()).at(dir)
}

/// One series: its name, type, help text and how a sample's value is read.
pub struct Series<T> {
    /// The metric name, `snap_` and its unit included.
    pub name: &'static str,
    /// `gauge` (every series of snap is a level, not a count that only grows).
    pub kind: &'static str,
    /// What it measures.
    pub help: &'static str,
    /// Its value; `None` leaves the sample out.
    pub value: fn(&T) -> Option<f64>,
}

/// Seconds since the Unix epoch, with the fraction.
fn seconds(t: &DateTime<Utc>) -> f64 {
    t.timestamp() as f64 + f64::from(t.timestamp_subsec_nanos()) / 1e9
}

/// The series of each group, labelled `host` and `sources` (the group's sources,
/// space-separated, each `kind:place` as in `snap forget`'s group titles).
pub const GROUP_SERIES: &[Series<GroupMetrics>] = &[
    Series {
        name: "snap_snapshots",
        kind: "gauge",
        help: "Snapshots of the group in the repository.",
        value: |g| Some(g.snapshots as f64),
    },
    Series {
        name: "snap_backup_last_timestamp_seconds",
        kind: "gauge",
        help: "When the group's newest snapshot (its last successful backup) started, Unix time.",
        value: |g| Some(seconds(&g.last_time)),
    },
    Series {
        name: "snap_backup_last_duration_seconds",
        kind: "gauge",
        help: "How long the group's last backup ran.",
        value: |g| Some(g.last_summary.duration),
    },
    Series {
        name: "snap_backup_last_added_bytes",
        kind: "gauge",
        help: "Bytes the group's last backup added to the repository, as stored (after deduplication and compression).",
        value: |g| Some(g.last_summary.bytes_added as f64),
    },
    Series {
        name: "snap_backup_last_read_bytes",
        kind: "gauge",
        help: "Bytes the group's last backup read from its sources (unchanged files are not read).",
        value: |g| Some(g.last_summary.bytes_read as f64),
    },
    Series {
        name: "snap_backup_last_size_bytes",
        kind: "gauge",
        help: "Logical size of the group's newest snapshot: all its file contents.",
        value: |g| Some(g.last_summary.bytes_total as f64),
    },
    Series {
        name: "snap_backup_last_files",
        kind: "gauge",
        help: "Files (and streams) in the group's newest snapshot.",
        value: |g| Some(g.last_summary.files as f64),
    },
    Series {
        name: "snap_backup_last_warnings",
        kind: "gauge",
        help: "Entries the group's last backup could not read and left out.",
        value: |g| Some(g.last_summary.warnings as f64),
    },
    Series {
        name: "snap_drill_last_timestamp_seconds",
        kind: "gauge",
        help: "When the group's last restore drill ran (passed or failed), Unix time.",
        value: |g| g.last_drill.as_ref().map(|d| seconds(&d.time)),
    },
    Series {
        name: "snap_drill_last_success",
        kind: "gauge",
        help: "1 if the group's last restore drill passed, 0 if it failed.",
        value: |g| g.last_drill.as_ref().map(|d| f64::from(u8::from(d.passed))),
    },
    Series {
        name: "snap_drill_last_rto_seconds",
        kind: "gauge",
        help: "The restore time (RTO) the group's last restore drill measured.",
        value: |g| g.last_drill.as_ref().map(|d| d.rto_seconds),
    },
    Series {
        name: "snap_drill_last_passed_timestamp_seconds",
        kind: "gauge",
        help: "When the group's last passed restore drill ran, Unix time: the last proven restore.",
        value: |g| g.last_passed_drill.as_ref().map(|d| seconds(&d.time)),
    },
];

/// The series of the repository, without labels.
pub const REPOSITORY_SERIES: &[Series<Metrics>] = &[
    Series {
        name: "snap_repository_size_bytes",
        kind: "gauge",
        help: "Bytes of the repository's pack files, by the index.",
        value: |m| Some(m.repository.size_bytes as f64),
    },
    Series {
        name: "snap_repository_packs",
        kind: "gauge",
        help: "Pack files in the repository, by the index.",
        value: |m| Some(m.repository.packs as f64),
    },
    Series {
        name: "snap_repository_snapshots",
        kind: "gauge",
        help: "Snapshots in the repository, all groups.",
        value: |m| Some(m.repository.snapshots as f64),
    },
    Series {
        name: "snap_wal_files",
        kind: "gauge",
        help: "Files in the repository's PostgreSQL WAL archive (absent without one).",
        value: |m| (m.repository.wal_files > 0).then_some(m.repository.wal_files as f64),
    },
    Series {
        name: "snap_wal_last_archived_timestamp_seconds",
        kind: "gauge",
        help: "When the newest file of the WAL archive was written, Unix time: alert when time() minus this passes your archive_timeout by a margin.",
        value: |m| m.repository.wal_last_archived.as_ref().map(seconds),
    },
    Series {
        name: "snap_check_last_timestamp_seconds",
        kind: "gauge",
        help: "When the last check run from this host finished, Unix time (absent before the first).",
        value: |m| m.last_check.as_ref().map(|c| seconds(&c.time)),
    },
    Series {
        name: "snap_check_last_success",
        kind: "gauge",
        help: "1 if the last check run from this host found no error, else 0.",
        value: |m| m.last_check.as_ref().map(|c| f64::from(u8::from(c.ok))),
    },
    Series {
        name: "snap_check_last_errors",
        kind: "gauge",
        help: "Errors the last check run from this host found.",
        value: |m| m.last_check.as_ref().map(|c| c.errors as f64),
    },
    Series {
        name: "snap_check_last_read_data_ratio",
        kind: "gauge",
        help: "Share of the packs the last check run from this host read and verified: 0 structure only, 1 --read-data.",
        value: |m| m.last_check.as_ref().map(|c| c.read_data),
    },
    Series {
        name: "snap_check_last_duration_seconds",
        kind: "gauge",
        help: "How long the last check run from this host took.",
        value: |m| m.last_check.as_ref().map(|c| c.seconds),
    },
];

/// The series of a `snap run`, in its profile's `metrics_file` only, labelled
/// `profile`.
pub const RUN_SERIES: &[Series<RunOutcome>] = &[
    Series {
        name: "snap_run_last_timestamp_seconds",
        kind: "gauge",
        help: "When the profile's last run ended, Unix time.",
        value: |r| Some(seconds(&r.finished)),
    },
    Series {
        name: "snap_run_success",
        kind: "gauge",
        help: "1 if the profile's last run succeeded (exit 0, or 3: entries left out), else 0.",
        value: |r| Some(f64::from(u8::from(matches!(r.exit, 0 | 3)))),
    },
    Series {
        name: "snap_run_exit_status",
        kind: "gauge",
        help: "Exit status of the profile's last run.",
        value: |r| Some(f64::from(r.exit)),
    },
    Series {
        name: "snap_run_duration_seconds",
        kind: "gauge",
        help: "How long the profile's last run took.",
        value: |r| Some(r.seconds),
    },
];

/// Every series, as the help text of `snap metrics` lists them.
pub fn series_help() -> String {
    let mut out = String::from("Series (all gauges):\n");
    let mut list = |title: &str, rows: &mut dyn Iterator<Item = (&str, &str)>| {
        let _ = writeln!(out, "\n{title}");
        for (name, help) in rows {
            let _ = writeln!(out, "  {name}\n      {help}");
        }
    };
    list(
        "Per group of snapshots (labels host, sources; in a metrics_file also profile):",
        &mut GROUP_SERIES.iter().map(|s| (s.name, s.help)),
    );
    list(
        "Repository (the check series reflect checks run from this host; in a metrics_file label profile):",
        &mut REPOSITORY_SERIES.iter().map(|s| (s.name, s.help)),
    );
    list(
        "In a profile's metrics_file only, after `snap run` (label profile):",
        &mut RUN_SERIES.iter().map(|s| (s.name, s.help)),
    );
    out
}

/// The exposition text of `metrics` and of a run's `outcome`, each if given. With an
/// outcome (a profile's `metrics_file`) every series carries the label `profile`: two
/// profiles of one repository write the same repository and groups, and their files,
/// read together by node_exporter's textfile collector, must not repeat a series.
pub fn render(metrics: Option<&Metrics>, outcome: Option<&RunOutcome>) -> String {
    let mut out = String::new();
    let profile: Labels = outcome
        .map(|r| ("profile", r.profile.clone()))
        .into_iter()
        .collect();
    if let Some(m) = metrics {
        for s in GROUP_SERIES {
            family(
                &mut out,
                s,
                m.groups.iter().map(|g| {
                    let mut labels = profile.clone();
                    labels.push(("host", g.host.clone()));
                    labels.push(("sources", g.sources.join(" ")));
                    (labels, g)
                }),
            );
        }
        for s in REPOSITORY_SERIES {
            family(&mut out, s, std::iter::once((profile.clone(), m)));
        }
    }
    if let Some(r) = outcome {
        for s in RUN_SERIES {
            family(&mut out, s, std::iter::once((profile.clone(), r)));
        }
    }
    out
}

/// A sample's labels, in order.
type Labels = Vec<(&'static str, String)>;

/// Appends one family: HELP and TYPE, then a sample for each item that has a value;
/// nothing when none has.
fn family<'a, T: 'a>(
    out: &mut String,
    s: &Series<T>,
    items: impl Iterator<Item = (Labels, &'a T)>,
) {
    let samples: Vec<String> = items
        .filter_map(|(labels, item)| {
            let v = (s.value)(item)?;
            let labels: Vec<String> = labels
                .iter()
                .map(|(k, v)| format!("{k}=\"{}\"", escape_label(v)))
                .collect();
            let labels = if labels.is_empty() {
                String::new()
            } else {
                format!("{{{}}}", labels.join(","))
            };
            Some(format!("{}{labels} {}", s.name, number(v)))
        })
        .collect();
    if samples.is_empty() {
        return;
    }
    let _ = writeln!(out, "# HELP {} {}", s.name, escape_help(s.help));
    let _ = writeln!(out, "# TYPE {} {}", s.name, s.kind);
    for line in samples {
        let _ = writeln!(out, "{line}");
    }
}

/// A label value as the format quotes it: backslash, double quote and newline escaped.
fn escape_label(v: &str) -> String {
    v.replace('\\', r"\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// A help text as the format writes it: backslash and newline escaped.
fn escape_help(v: &str) -> String {
    v.replace('\\', r"\\").replace('\n', "\\n")
}

/// A sample value: integers without a fraction, the rest as Rust prints them (never
/// an exponent); `NaN` and `±Inf` as the format spells them.
fn number(v: f64) -> String {
    if v.is_nan() {
        "NaN".into()
    } else if v.is_infinite() {
        if v > 0.0 { "+Inf" } else { "-Inf" }.into()
    } else {
        format!("{v}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::snapshot::tests::sample;

    #[test]
    fn labels_and_help_are_escaped() {
        assert_eq!(escape_label("a\\b\"c\nd"), r#"a\\b\"c\nd"#);
        assert_eq!(escape_help("a\\b\"c\nd"), r#"a\\b"c\nd"#);
    }

    #[test]
    fn numbers_read_back_as_prometheus_reads_them() {
        assert_eq!(number(3.0), "3");
        assert_eq!(number(0.25), "0.25");
        assert_eq!(number(1_764_811_234.5), "1764811234.5");
        assert_eq!(number(1e-7), "0.0000001");
        assert_eq!(number(f64::NAN), "NaN");
        assert_eq!(number(f64::NEG_INFINITY), "-Inf");
    }

    #[test]
    fn groups_count_and_keep_the_newest() {
        let a = sample();
        let mut newer = a.clone();
        newer.time += chrono::Duration::hours(1);
        newer.summary.bytes_added = 7;
        let mut other_host = a.clone();
        other_host.host = "ngw2".into();
        let ids: Vec<SnapshotId> = (0u8..3)
            .map(|i| SnapshotId(crate::format::id::Id::hash(&[i])))
            .collect();
        let g = groups(
            vec![
                (ids[1], newer.clone()),
                (ids[0], a.clone()),
                (ids[2], other_host),
            ],
            &[],
        );
        assert_eq!(g.len(), 2);
        assert_eq!((g[0].host.as_str(), g[0].snapshots), ("ngw1", 2));
        assert_eq!((g[0].last_id, g[0].last_time), (ids[1], newer.time));
        assert_eq!(g[0].last_summary.bytes_added, 7);
        assert_eq!((g[1].host.as_str(), g[1].snapshots), ("ngw2", 1));
    }

    #[test]
    fn empty_families_are_left_out() {
        let m = Metrics {
            repository: RepositoryMetrics {
                size_bytes: 10,
                packs: 1,
                snapshots: 0,
                wal_files: 0,
                wal_last_archived: None,
            },
            last_check: None,
            groups: Vec::new(),
        };
        let text = render(Some(&m), None);
        assert!(text
            .contains("# TYPE snap_repository_size_bytes gauge\nsnap_repository_size_bytes 10\n"));
        assert!(!text.contains("snap_check_"), "{text}");
        assert!(!text.contains("snap_wal_"), "{text}");
        assert!(!text.contains("snap_snapshots"), "{text}");
    }

    #[test]
    fn two_profiles_files_of_one_repository_repeat_no_series() {
        let mut m = Metrics {
            repository: RepositoryMetrics {
                size_bytes: 10,
                packs: 1,
                snapshots: 1,
                wal_files: 0,
                wal_last_archived: None,
            },
            last_check: None,
            groups: Vec::new(),
        };
        m.groups = groups(
            vec![(SnapshotId(crate::format::id::Id::hash(b"s")), sample())],
            &[],
        );
        let file = |profile: &str| {
            let r = RunOutcome {
                profile: profile.into(),
                finished: chrono::Utc::now(),
                seconds: 1.0,
                exit: 0,
            };
            render(Some(&m), Some(&r))
        };
        let both = format!("{}{}", file("nightly"), file("hourly"));
        let samples: Vec<&str> = both
            .lines()
            .filter(|l| !l.starts_with('#'))
            .map(|l| l.rsplit_once(' ').unwrap().0)
            .collect();
        let unique: std::collections::HashSet<&&str> = samples.iter().collect();
        assert_eq!(unique.len(), samples.len(), "{both}");
        assert!(
            samples
                .iter()
                .any(|s| s.starts_with("snap_snapshots{profile=\"nightly\",host=")),
            "{both}"
        );
    }
}
