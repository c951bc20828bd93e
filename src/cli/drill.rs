//! `snap drill`: restore every source of a snapshot for real into a throw-away target,
//! check it, time it, record the proof in the repository (see `snap::ops::drill`).

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::Result;
use snap::format::drill::{Drill, Outcome};
use snap::format::id::DrillId;
use snap::format::snapshot::Snapshot;
use snap::ops::drill::{drill_snapshot, latest_per_group, with_source, DrillOptions};

use super::profile::DrillEvery;
use super::{human, progress_for, Bar, Ctx, EXIT_INTERRUPTED};

#[derive(clap::Args)]
pub struct Args {
    /// Snapshot: `latest` or an id prefix [default: the latest snapshot of each group
    /// (host and sources)]
    snapshot: Option<String>,
    /// Drill only this source: its name in the snapshot (db/app), its path
    /// (/srv/data), `ngw`, or its key as `snap drill --json` shows it (pg:db/app)
    #[arg(long, value_name = "NAME")]
    source: Option<String>,
    /// Directory for the scratch copies and clusters; needs room for the largest
    /// source [default: the system's temporary directory]
    #[arg(long, value_name = "DIR")]
    scratch: Option<PathBuf>,
    /// Print the drill records as JSON
    #[arg(long)]
    json: bool,
}

pub fn run(ctx: &Ctx, a: Args) -> Result<i32> {
    // Under a profile, its verify commands, and (with no snapshot named) only its
    // own snapshots: another profile's group drilled without that profile's
    // commands would pass a drill its own checks fail.
    let scope = super::profile::drill_scope(ctx)?;
    let opts = DrillOptions {
        source: a.source,
        scratch: a.scratch.unwrap_or_else(std::env::temp_dir),
        verify: scope.as_ref().map(|s| s.verify.clone()).unwrap_or_default(),
    };
    abandon_on_signals()?;
    let target = match &a.snapshot {
        Some(spec) => Target::Named(spec),
        None => Target::Groups(scope.as_ref()),
    };
    let r = execute(ctx, target, &opts, a.json, None);
    if snap::interrupt::requested() {
        // The signal thread is stopping the scratch cluster and removing the scratch
        // directory; it ends the process when done, which this thread must not do
        // first.
        loop {
            std::thread::park();
        }
    }
    r
}

/// On SIGINT or SIGTERM: stops the scratch clusters, removes the scratch directories
/// and exits 130 at once (a drill records nothing when stopped; a long restore need
/// not run to its end first).
fn abandon_on_signals() -> Result<()> {
    use signal_hook::consts::{SIGINT, SIGTERM};
    let mut signals = signal_hook::iterator::Signals::new([SIGINT, SIGTERM])?;
    std::thread::spawn(move || {
        if signals.forever().next().is_some() {
            snap::ops::drill::abandon();
            snap::repo::release_shared();
            eprintln!("snap: interrupted: the drill stopped; its scratch cluster and files are removed and nothing was recorded");
            std::process::exit(EXIT_INTERRUPTED);
        }
    });
    Ok(())
}

/// What a drill drills.
enum Target<'a> {
    /// This snapshot (`latest` or an id prefix).
    Named(&'a str),
    /// The latest snapshot of each group; with a profile's scope, of each of its own
    /// groups (its host, carrying its tags).
    Groups(Option<&'a super::profile::DrillScope>),
}

/// Drills `target` with `opts` (with `every`: only when a drill of its group is due,
/// see [`due`]); prints each result; exit 1 when a source failed.
fn execute(
    ctx: &Ctx,
    target: Target<'_>,
    opts: &DrillOptions,
    json: bool,
    every: Option<DrillEvery>,
) -> Result<i32> {
    // What a new host would read: the config and key file as the repository has them.
    let repo = ctx.open_unremembered()?;
    // Shared: a drill only reads the repository and adds its record.
    let _lock = repo.lock(false, "drill")?;
    let targets = match target {
        Target::Named(spec) => vec![repo.find_snapshot(spec)?],
        Target::Groups(scope) => {
            let mut all = latest_per_group(&repo)?;
            if let Some(scope) = scope {
                all.retain(|(_, s)| {
                    s.host == scope.host && scope.tags.iter().all(|t| s.tags.contains(t))
                });
            }
            all
        }
    };
    if targets.is_empty() {
        return Err(super::output::not_found(format!(
            "{} has no snapshots yet: nothing to drill",
            repo.location()
        )));
    }
    let history = repo.drills()?;
    if let Some(every) = every {
        let mut any_due = false;
        for (_, s) in &targets {
            any_due |= due(&repo, every, s, &history)?;
        }
        if !any_due {
            if json {
                ctx.print_json(&serde_json::json!({ "drills": [], "due": false }))?;
            } else if !ctx.quiet {
                outln!("drill: not due yet ({every})");
            }
            return Ok(0);
        }
    }
    let targets = with_source(targets, opts)?;
    let mut done: Vec<(DrillId, Drill)> = Vec::new();
    for (id, snap) in &targets {
        let bar = Bar::new(ctx, "drill", json);
        let r = drill_snapshot(&repo, id, snap, &history, opts, progress_for(bar.as_ref()))?;
        drop(bar);
        if !json {
            print_drill(ctx, &r.0, &r.1)?;
        }
        done.push(r);
    }
    let failed: Vec<String> = done
        .iter()
        .flat_map(|(_, d)| {
            d.sources
                .iter()
                .filter(|s| s.result == Outcome::Failed)
                .map(move |s| {
                    format!(
                        "snapshot {} source {}: {}",
                        d.snapshot.short(),
                        s.source,
                        s.reason.as_deref().unwrap_or("failed")
                    )
                })
        })
        .collect();
    if json {
        let v: Vec<serde_json::Value> = done
            .iter()
            .map(|(rid, d)| {
                let mut v = serde_json::to_value(d).expect("drill records serialize");
                v["record"] = serde_json::json!(rid);
                v
            })
            .collect();
        ctx.print_json(&serde_json::json!({ "drills": v }))?;
    }
    for f in &failed {
        eprintln!("snap: drill failed: {f}");
    }
    Ok(i32::from(!failed.is_empty()))
}

/// `snap run`'s drill step: drills the snapshot its backup step `made` (not the
/// repository's latest, which may be another host's) when the profile's `drill` says
/// it is due (see [`due`]); says so and exits 0 when it is not.
pub fn run_step(
    ctx: &Ctx,
    every: DrillEvery,
    verify: BTreeMap<String, String>,
    json: bool,
    made: &str,
) -> Result<i32> {
    let opts = DrillOptions {
        source: None,
        scratch: std::env::temp_dir(),
        verify,
    };
    execute(ctx, Target::Named(made), &opts, json, Some(every))
}

/// Whether a drill of `snap`'s group is due: its last drill in `history` is older
/// than the period, or N snapshots of the group were made since (none yet: due).
fn due(
    repo: &snap::repo::Repository,
    every: DrillEvery,
    snap: &Snapshot,
    history: &[(DrillId, Drill)],
) -> Result<bool> {
    let group = Snapshot::group_key(&snap.sources);
    let last = history
        .iter()
        .filter(|(_, d)| d.group_host == snap.host && d.group == group)
        .map(|(_, d)| d.time)
        .max();
    let Some(last) = last else {
        return Ok(true);
    };
    Ok(match every {
        DrillEvery::Period(p) => chrono::Utc::now() - last >= p.length(),
        DrillEvery::Runs(n) => {
            let since = repo
                .snapshots()?
                .into_iter()
                .filter(|(_, s)| {
                    s.host == snap.host && s.time > last && Snapshot::group_key(&s.sources) == group
                })
                .count();
            since >= usize::try_from(n).unwrap_or(usize::MAX)
        }
    })
}

/// The human report of one drill: a line for it, a row per source.
fn print_drill(ctx: &Ctx, rid: &DrillId, d: &Drill) -> Result<()> {
    let verdict = match d.result {
        Outcome::Passed => "passed",
        Outcome::Failed => "FAILED",
    };
    outln!(
        "drill {} of snapshot {} ({}): {verdict} in {:.1} s",
        rid.short(),
        d.snapshot.short(),
        d.group_host,
        d.seconds
    );
    if ctx.quiet {
        return Ok(());
    }
    let width = d
        .sources
        .iter()
        .map(|s| s.source.len())
        .max()
        .unwrap_or(6)
        .max(6);
    outln!(
        "  {:<width$}  {:<6}  {:>8}  {:>10}  CHECKS",
        "SOURCE",
        "RESULT",
        "RTO",
        "BYTES"
    );
    for s in &d.sources {
        let result = match s.result {
            Outcome::Passed => "passed",
            Outcome::Failed => "FAILED",
        };
        outln!(
            "  {:<width$}  {result:<6}  {:>6.1} s  {:>10}  {}",
            s.source,
            s.seconds,
            human(s.bytes),
            s.checks.join(", ")
        );
        if let Some(r) = &s.reason {
            outln!("  {:<width$}  {r}", "");
        }
        let flagged: Vec<String> = s
            .tables
            .iter()
            .filter(|t| t.flagged)
            .map(|t| {
                format!(
                    "{} {} -> {}",
                    t.table,
                    t.previous.unwrap_or_default(),
                    t.rows
                )
            })
            .collect();
        if !flagged.is_empty() {
            outln!("  {:<width$}  flagged: {}", "", flagged.join(", "));
        }
    }
    Ok(())
}
