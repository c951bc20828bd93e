//! `snap prune`

use anyhow::Result;
use snap::ops::prune::{plan_prune, PruneOptions, PruneReport};
use snap::repo::Repository;

use super::{human, progress_for, Bar, Ctx};

#[derive(clap::Args)]
pub struct Args {
    /// Show what would be deleted and rewritten, change nothing
    #[arg(long, short = 'n')]
    dry_run: bool,
    /// Unused space to tolerate in partly used packs, as a share of the used space
    /// (0% rewrites every pack with garbage in it; `unlimited` rewrites none, so prune
    /// writes no pack: what frees space in a full repository)
    #[arg(long, value_name = "PERCENT", default_value = "5%", value_parser = parse_max_unused)]
    max_unused: f64,
    /// Print the report as JSON
    #[arg(long)]
    json: bool,
}

/// Parses `5%` or `5` as 0.05.
pub fn parse_percent(s: &str) -> Result<f64, String> {
    let v: f64 = s
        .trim_end_matches('%')
        .parse()
        .map_err(|_| format!("{s:?} is not a percentage like 5%"))?;
    if !(0.0..=100.0).contains(&v) {
        return Err(format!("{s:?} is not between 0% and 100%"));
    }
    Ok(v / 100.0)
}

/// `--max-unused`: a percentage (above 100% too) or `unlimited`.
pub fn parse_max_unused(s: &str) -> Result<f64, String> {
    if s == "unlimited" {
        return Ok(f64::INFINITY);
    }
    let v: f64 = s
        .trim_end_matches('%')
        .parse()
        .map_err(|_| format!("{s:?} is not a percentage like 5%, nor `unlimited`"))?;
    if !(v >= 0.0 && v.is_finite()) {
        return Err(format!("{s:?} is not a percentage of 0% or more"));
    }
    Ok(v / 100.0)
}

pub fn run(ctx: &Ctx, a: Args) -> Result<i32> {
    let repo = ctx.open(false)?;
    let r = run_prune(ctx, &repo, a.max_unused, a.dry_run, a.json)?;
    if a.json {
        ctx.print_json(&r)?;
    } else {
        print_report(&r, a.dry_run, ctx.quiet)?;
    }
    Ok(0)
}

/// Plans prune, then (unless `dry_run`, which gives the plan's expected report)
/// carries it out with a progress bar (also for `forget --prune`).
pub fn run_prune(
    ctx: &Ctx,
    repo: &Repository,
    max_unused: f64,
    dry_run: bool,
    json: bool,
) -> Result<PruneReport> {
    let bar = Bar::new(ctx, "repack", json);
    let plan = plan_prune(repo, &PruneOptions { max_unused })?;
    let r = if dry_run {
        plan.expected()
    } else {
        plan.execute(progress_for(bar.as_ref()))?
    };
    drop(bar);
    Ok(r)
}

/// Prints what prune did (or would do); `quiet`, only its last line.
pub fn print_report(r: &PruneReport, dry_run: bool, quiet: bool) -> Result<()> {
    let verb = if dry_run { "would " } else { "" };
    if !quiet {
        if r.packs_unindexed > 0 {
            outln!(
                "{} packs ({}) that no index file lists, left by interrupted runs: {verb}delete them",
                r.packs_unindexed,
                human(r.bytes_unindexed)
            );
        }
        outln!(
            "{} snapshots, {} packs ({}); {verb}delete {} packs, {verb}rewrite {} ({} blobs, {})",
            r.snapshots,
            r.packs,
            human(r.bytes_before),
            r.packs_deleted,
            r.packs_repacked,
            r.blobs_repacked,
            human(r.bytes_repacked)
        );
        if r.wal_files_deleted > 0 {
            outln!(
                "{} archived WAL files older than the oldest base backup: {verb}delete them",
                r.wal_files_deleted
            );
        }
    }
    outln!(
        "repository {}{} -> {} ({} unused left){}",
        if dry_run { "would go " } else { "" },
        human(r.bytes_before),
        human(r.bytes_after),
        human(r.bytes_unused_after),
        if dry_run {
            "; dry run, nothing changed"
        } else {
            ""
        }
    );
    Ok(())
}
