//! Restore drills: every source of a snapshot restored for real into a throw-away
//! target, checked, timed, and thrown away; the result recorded in the repository as
//! a [`Drill`] record.
//!
//! Each source is restored through the code `restore` uses for it, into a scratch
//! directory `snap-drill.<pid>.<random>` under [`DrillOptions::scratch`]:
//! - a path, a stream or a command's output: `restore --verify` into the scratch
//!   directory (module `files`); a `verify` command, if given for the source, then runs on
//!   the restored path, else the record notes that no application-level check ran;
//! - `--pg`, `--pg-all`, and plain SQL streams (`*.sql`): restored into a scratch
//!   PostgreSQL cluster ([`cluster`]) with `restore --pg`/`--pg-all`'s functions, then
//!   every table of the dump must exist, and each table's rows are counted and
//!   compared with the last passed drill of the same group and source (module `db`);
//! - a NextGIS Web instance or an imported `.ngwbackup`: the database into a scratch
//!   cluster and the file storage into the scratch directory as `restore --ngw` does,
//!   then every `fileobj` row must have its blob with the right size, every `$index`
//!   entry must resolve and the migrations table must exist (module `ngw`).
//!
//! A source's time (its RTO) counts its restore and checks, not the making of the
//! scratch cluster, which a real restore has already. A drill never writes to the
//! production database or file storage, and adds only its record to the repository
//! (under the shared lock). Scratch clusters stop with snap however it ends
//! ([`cluster`]); the scratch directory is removed when the drill ends, by
//! [`abandon`] on a signal, or by the next drill after a SIGKILL.

pub mod cluster;
mod db;
mod files;
mod ngw;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Instant;

use crate::error::{Error, Result, Usage};
use crate::format::drill::{Drill, Outcome, SourceDrill, TableRows, VERSION};
use crate::format::id::{DrillId, SnapshotId};
use crate::format::snapshot::{Snapshot, Source};
use crate::locked;
use crate::progress::Progress;
use crate::repo::Repository;

/// How to drill.
#[derive(Clone, Debug, Default)]
pub struct DrillOptions {
    /// Only the source of this name (`db/app`, `/srv/data`, `ngw`, or its key
    /// `pg:db/app`).
    pub source: Option<String>,
    /// Where scratch directories go (e.g. `/tmp`, or a disk large enough for the
    /// biggest source).
    pub scratch: PathBuf,
    /// Application-level checks: source name (as in [`DrillOptions::source`]) ->
    /// shell command run on the restored copy, `{path}` replaced by its path.
    pub verify: BTreeMap<String, String>,
}

/// What the drill of one source found.
#[derive(Debug, Default)]
struct Proof {
    bytes: u64,
    checks: Vec<String>,
    tables: Vec<TableRows>,
    /// A note on a passed source.
    note: Option<String>,
    /// Why the source fails, when its restore went through but a check did not.
    problem: Option<String>,
}

/// The latest snapshot of each group (host and sources, as `forget` groups them),
/// oldest group first.
pub fn latest_per_group(repo: &Repository) -> Result<Vec<(SnapshotId, Snapshot)>> {
    let mut latest: BTreeMap<Group, (SnapshotId, Snapshot)> = BTreeMap::new();
    for (id, snap) in repo.snapshots()? {
        latest.insert(group_of(&snap), (id, snap));
    }
    let mut out: Vec<_> = latest.into_values().collect();
    out.sort_by_key(|a| a.1.time);
    Ok(out)
}

/// A group of snapshots: host and sources ([`Snapshot::group_key`]).
pub type Group = (String, Vec<String>);

/// The group of a snapshot.
pub fn group_of(snap: &Snapshot) -> Group {
    (snap.host.clone(), Snapshot::group_key(&snap.sources))
}

/// The last drill of each snapshot (`drills` oldest first, as
/// [`Repository::drills`] gives them).
pub fn last_per_snapshot(drills: Vec<(DrillId, Drill)>) -> BTreeMap<SnapshotId, Drill> {
    drills.into_iter().map(|(_, d)| (d.snapshot, d)).collect()
}

/// Each group of `snapshots` with its last passed drill of `drills` (oldest first),
/// if it has one: its last proven restore. Ordered by group.
pub fn proven(
    snapshots: &[(SnapshotId, Snapshot)],
    drills: Vec<(DrillId, Drill)>,
) -> Vec<(Group, Option<Drill>)> {
    let mut passed: BTreeMap<Group, Drill> = drills
        .into_iter()
        .filter(|(_, d)| d.result == Outcome::Passed)
        .map(|(_, d)| ((d.group_host.clone(), d.group.clone()), d))
        .collect();
    let groups: BTreeSet<Group> = snapshots.iter().map(|(_, s)| group_of(s)).collect();
    groups
        .into_iter()
        .map(|g| {
            let d = passed.remove(&g);
            (g, d)
        })
        .collect()
}

/// The groups whose newest drill of `drills` (oldest first) failed, with that drill:
/// a passed drill before it proves nothing about the backup since.
pub fn failing(drills: &[(DrillId, Drill)]) -> BTreeMap<Group, &Drill> {
    let mut newest: BTreeMap<Group, &Drill> = BTreeMap::new();
    for (_, d) in drills {
        newest.insert((d.group_host.clone(), d.group.clone()), d);
    }
    newest.retain(|_, d| d.result == Outcome::Failed);
    newest
}

/// A drill's restore time: its sources' restores one after the other, checks
/// included (the scratch clusters' start left out).
pub fn rto(d: &Drill) -> f64 {
    d.sources.iter().map(|s| s.seconds).sum()
}

/// Whether `name` names source `s`: its key (`pg:db/app`), its place in the snapshot
/// (`db/app`), its path (`/srv/data`), or `ngw` for a NextGIS Web part.
pub fn names(s: &Source, name: &str) -> bool {
    let bare = name.trim_end_matches('/');
    s.key() == name
        || s.stream_name() == Some(bare.trim_start_matches('/'))
        || matches!(s, Source::Path { path } if path.trim_end_matches('/') == bare)
        || (bare == "ngw" && matches!(s, Source::Ngw { .. } | Source::Archive { .. }))
}

/// The sources of `snap` a drill with `opts` covers.
fn chosen<'s>(snap: &'s Snapshot, opts: &DrillOptions) -> Vec<&'s Source> {
    snap.sources
        .iter()
        .filter(|s| opts.source.as_deref().is_none_or(|n| names(s, n)))
        .collect()
}

/// Of `snapshots`, those with a source `opts` covers; an error naming the sources
/// there are when `--source` matches none.
pub fn with_source(
    snapshots: Vec<(SnapshotId, Snapshot)>,
    opts: &DrillOptions,
) -> Result<Vec<(SnapshotId, Snapshot)>> {
    let Some(name) = &opts.source else {
        return Ok(snapshots);
    };
    let mut all: Vec<String> = snapshots
        .iter()
        .flat_map(|(_, s)| s.sources.iter().map(Source::key))
        .collect();
    let out: Vec<_> = snapshots
        .into_iter()
        .filter(|(_, s)| !chosen(s, opts).is_empty())
        .collect();
    if out.is_empty() {
        all.sort();
        all.dedup();
        return Err(Usage::DrillSource {
            name: name.clone(),
            sources: all,
        }
        .into());
    }
    Ok(out)
}

/// The scratch directories and scratch servers of drills running in this process,
/// for [`abandon`].
static LIVE: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());

/// Stops the scratch servers and removes the scratch directories of the drills
/// running in this process, for a front end about to exit on a signal (destructors
/// do not run then).
pub fn abandon() {
    // The drill still running in another thread must record nothing now.
    crate::interrupt::flag().store(true, std::sync::atomic::Ordering::SeqCst);
    cluster::stop_all();
    for dir in locked(&LIVE).drain(..) {
        // The drill's own clean-up may be removing it at the same moment: try again
        // until it is gone (a second or so, longer on a loaded machine).
        for _ in 0..250 {
            if std::fs::remove_dir_all(&dir).is_ok() || !dir.exists() {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }
}

/// A scratch directory registered for [`abandon`] while it lives.
struct Scratch(tempfile::TempDir);

impl Scratch {
    fn new(base: &Path) -> Result<Scratch> {
        let d = crate::scratch::dir(base, "drill")?;
        locked(&LIVE).push(d.path().to_path_buf());
        Ok(Scratch(d))
    }

    fn path(&self) -> &Path {
        self.0.path()
    }

    /// A scratch cluster in this directory (`n`: a name of its own).
    fn cluster(&self, n: usize) -> Result<cluster::ScratchCluster> {
        cluster::ScratchCluster::start(self.path(), &format!("pg{n}"))
    }
}

impl Drop for Scratch {
    /// Removes the directory before it leaves [`LIVE`]: a signal's [`abandon`] that no
    /// longer finds it there ends the process at once, which must not cut the removal
    /// short.
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(self.0.path());
        locked(&LIVE).retain(|p| p != self.0.path());
    }
}

/// Drills the sources of snapshot `id` that `opts` covers, records the result in the
/// repository and returns it. A source that fails is in the record, not an error; an
/// error is what stops the drill itself (the repository cannot be read, an
/// interruption), and then nothing is recorded. `history` is the repository's drill
/// records, oldest first ([`Repository::drills`]), read once for all snapshots.
pub fn drill_snapshot(
    repo: &Repository,
    id: &SnapshotId,
    snap: &Snapshot,
    history: &[(DrillId, Drill)],
    opts: &DrillOptions,
    progress: &dyn Progress,
) -> Result<(DrillId, Drill)> {
    // It adds a record: a writer, under the shared lock.
    repo.refuse_without_lock("drill")?;
    let _lock = repo.read_lock("drill")?;
    // A drill proves what another host, with no copies of the trees, would restore.
    repo.read_past_cache();
    let time = chrono::Utc::now();
    let clock = Instant::now();
    let group = Snapshot::group_key(&snap.sources);
    let previous = previous_sources(history, &snap.host, &group);
    let scratch = Scratch::new(&opts.scratch)?;
    let mut sources = Vec::new();
    for (n, src) in chosen(snap, opts).into_iter().enumerate() {
        crate::interrupt::check()?;
        let key = src.key();
        let started = Instant::now();
        let work = scratch.path().join(format!("s{n}"));
        let verify = opts
            .verify
            .iter()
            .find(|(name, _)| names(src, name))
            .map(|(_, cmd)| cmd.as_str());
        let ctx = SourceCtx {
            repo,
            snap,
            scratch: &scratch,
            n,
            work: &work,
            verify,
            previous: previous.get(key.as_str()).copied(),
            progress,
        };
        let (result, reason, proof, seconds) = match ctx.run(src) {
            Ok((proof, seconds)) => match &proof.problem {
                Some(p) => (Outcome::Failed, Some(p.clone()), proof, seconds),
                None => (Outcome::Passed, proof.note.clone(), proof, seconds),
            },
            Err(Error::Interrupted) => return Err(Error::Interrupted),
            Err(e) => (
                Outcome::Failed,
                Some(e.to_string()),
                Proof::default(),
                started.elapsed().as_secs_f64(),
            ),
        };
        let _ = std::fs::remove_dir_all(&work);
        sources.push(SourceDrill {
            source: key,
            result,
            reason,
            seconds,
            bytes: proof.bytes,
            checks: proof.checks,
            tables: proof.tables,
        });
    }
    drop(scratch);
    crate::interrupt::check()?;
    let result = if sources.iter().all(|s| s.result == Outcome::Passed) {
        Outcome::Passed
    } else {
        Outcome::Failed
    };
    let record = Drill {
        version: VERSION,
        snapshot: *id,
        time,
        host: crate::host::hostname(),
        program: format!("snap {}", env!("CARGO_PKG_VERSION")),
        group_host: snap.host.clone(),
        group,
        result,
        seconds: clock.elapsed().as_secs_f64(),
        sources,
    };
    let rid = repo.save_drill(&record)?;
    Ok((rid, record))
}

/// The newest passed drill in `history` (oldest first) of each source of the group
/// (host `host`, sources `group`): what row counts are compared with. A failed one is
/// no baseline: drilling the same emptied tables again must fail again.
fn previous_sources<'h>(
    history: &'h [(DrillId, Drill)],
    host: &str,
    group: &[String],
) -> HashMap<&'h str, &'h SourceDrill> {
    let mut out = HashMap::new();
    // Oldest first: later drills replace earlier ones.
    for (_, d) in history {
        if d.group_host == host && d.group == group {
            for s in &d.sources {
                if !s.tables.is_empty() && s.result == Outcome::Passed {
                    out.insert(s.source.as_str(), s);
                }
            }
        }
    }
    out
}

/// How many problems a failed source's reason lists.
const LISTED: usize = 5;

/// The first [`LISTED`] of `problems`, then how many more there are.
fn listed(problems: &[String]) -> String {
    let mut out = problems[..problems.len().min(LISTED)].join("; ");
    let more = problems.len().saturating_sub(LISTED);
    if more > 0 {
        let _ = write!(out, "; and {more} more");
    }
    out
}

/// Runs `f`; returns what it found and the seconds it took.
fn timed(f: impl FnOnce() -> Result<Proof>) -> Result<(Proof, f64)> {
    let started = Instant::now();
    let p = f()?;
    Ok((p, started.elapsed().as_secs_f64()))
}

/// What the drill of one source works with.
struct SourceCtx<'a> {
    repo: &'a Repository,
    snap: &'a Snapshot,
    scratch: &'a Scratch,
    /// The source's number, naming its scratch files.
    n: usize,
    /// Its own scratch directory (a file restore's target).
    work: &'a Path,
    /// Its `verify` command.
    verify: Option<&'a str>,
    /// Its last passed drill with row counts.
    previous: Option<&'a SourceDrill>,
    progress: &'a dyn Progress,
}

impl SourceCtx<'_> {
    /// Restores and checks one source; returns what it found and the seconds its
    /// restore and checks took.
    fn run(&self, src: &Source) -> Result<(Proof, f64)> {
        let is_sql = |name: &str| name.ends_with(".sql");
        match src {
            Source::Pg { name, .. } => self.in_cluster(|c| db::drill_pg(self, c, name)),
            Source::PgAll { name, .. } => self.in_cluster(|c| db::drill_sql(self, c, name, true)),
            Source::Stdin { name, .. } | Source::Command { name, .. } if is_sql(name) => {
                self.in_cluster(|c| db::drill_sql(self, c, name, false))
            }
            Source::Ngw { .. } | Source::Archive { .. } => self.in_cluster(|c| ngw::drill(self, c)),
            Source::Path { path } => timed(|| files::drill(self, path)),
            Source::Stdin { name, .. }
            | Source::Command { name, .. }
            | Source::CommandDir { name, .. }
            | Source::Mongo { name, .. }
            | Source::PgBase { name, .. } => timed(|| files::drill(self, name)),
        }
    }

    /// Runs `f` with a scratch cluster of its own, timing `f` only; stops the
    /// cluster after.
    fn in_cluster(
        &self,
        f: impl FnOnce(&cluster::ScratchCluster) -> Result<Proof>,
    ) -> Result<(Proof, f64)> {
        let c = self.scratch.cluster(self.n)?;
        let r = timed(|| f(&c));
        drop(c);
        r
    }
}
