//! `snap stats`: size, deduplication, growth, and per group the last proven
//! restore (passed drill) with its RTO.

use anyhow::Result;
use snap::format::drill::Drill;
use snap::ops::drill::{proven, Group};

use super::{human, Ctx};

#[derive(clap::Args)]
pub struct Args {
    /// Print the figures as JSON
    #[arg(long)]
    json: bool,
}

/// Rows of the growth chart at most.
const CHART_ROWS: usize = 20;
/// Width of the chart's longest bar.
const CHART_WIDTH: usize = 40;

pub fn run(ctx: &Ctx, a: Args) -> Result<i32> {
    let repo = ctx.open(false)?;
    let totals = repo.totals()?;
    let snaps = repo.snapshots()?;
    let proven = proven(&snaps, repo.drills()?);
    let logical: u64 = snaps.iter().map(|(_, s)| s.summary.bytes_total).sum();
    // Growth: the stored bytes each backup added, summed in time order, on top of
    // what the repository held for the snapshots before them: data of forgotten
    // snapshots that the kept ones still use or prune has not yet freed, and the
    // packs' own headers. The last row is then every stored byte.
    let added: u64 = snaps.iter().map(|(_, s)| s.summary.bytes_added).sum();
    let earlier = totals.pack_bytes.saturating_sub(added);
    let mut cumulative = earlier;
    let mut growth: Vec<(String, u64, u64)> = Vec::new();
    if earlier > 0 && !snaps.is_empty() {
        growth.push(("before these snapshots".to_string(), earlier, earlier));
    }
    growth.extend(snaps.iter().map(|(id, s)| {
        cumulative += s.summary.bytes_added;
        (
            format!("{} {}", snap::host::local_time(&s.time), id.short()),
            s.summary.bytes_added,
            cumulative,
        )
    }));
    if a.json {
        let per: Vec<serde_json::Value> = snaps
            .iter()
            .map(|(id, s)| {
                serde_json::json!({
                    "id": id, "time": s.time, "host": s.host,
                    "bytes_total": s.summary.bytes_total, "bytes_added": s.summary.bytes_added,
                })
            })
            .collect();
        let out = serde_json::json!({
            "repository": totals,
            "snapshots": snaps.len(),
            "logical_bytes": logical,
            "stored_before_snapshots": earlier,
            "per_snapshot": per,
            "drills": drill_rows(&proven),
        });
        outln!("{}", serde_json::to_string_pretty(&out)?);
        return Ok(0);
    }
    let ratio = |a: u64, b: u64| if b == 0 { 0.0 } else { a as f64 / b as f64 };
    outln!(
        "{} snapshots, {} of data in them (logical)",
        snaps.len(),
        human(logical)
    );
    outln!(
        "stored: {} in {} packs; {} distinct blobs, {} before compression",
        human(totals.pack_bytes),
        totals.packs,
        totals.blobs,
        human(totals.raw_bytes)
    );
    outln!(
        "deduplication {:.1}x, compression {:.1}x, together {:.1}x",
        ratio(logical, totals.raw_bytes),
        ratio(totals.raw_bytes, totals.stored_bytes),
        ratio(logical, totals.pack_bytes)
    );
    print_drills(&proven)?;
    if growth.is_empty() || ctx.quiet {
        return Ok(0);
    }
    outln!("\ngrowth (stored bytes added by each backup, summed to what is stored):");
    // At most CHART_ROWS rows: evenly spaced snapshots, always the last one.
    let step = growth.len().div_ceil(CHART_ROWS);
    let rows: Vec<&(String, u64, u64)> = growth
        .iter()
        .enumerate()
        .filter(|(i, _)| (growth.len() - 1 - i).is_multiple_of(step))
        .map(|(_, r)| r)
        .collect();
    let max = rows.iter().map(|r| r.2).max().unwrap_or(1).max(1);
    for (label, added, total) in rows {
        let eighths = usize::try_from(total * (CHART_WIDTH as u64) * 8 / max)
            .expect("at most CHART_WIDTH * 8: total <= max");
        let mut bar = "█".repeat(eighths / 8);
        if !eighths.is_multiple_of(8) {
            bar.push([' ', '▏', '▎', '▍', '▌', '▋', '▊', '▉'][eighths % 8]);
        }
        outln!(
            "  {label:<35}  {:>10}  {:<width$}  +{}",
            human(*total),
            bar,
            human(*added),
            width = CHART_WIDTH + 1
        );
    }
    if cumulative > totals.pack_bytes {
        outln!(
            "  (the snapshots' counts exceed what is stored by {}: a copy made by sync keeps its source's counts)",
            human(cumulative - totals.pack_bytes)
        );
    }
    Ok(0)
}

/// Per group of the snapshots (host and sources): its last passed drill and RTO.
fn drill_rows(proven: &[(Group, Option<Drill>)]) -> Vec<serde_json::Value> {
    proven
        .iter()
        .map(|((host, group), d)| {
            serde_json::json!({
                "host": host,
                "group": group,
                "last_passed_drill": d.as_ref().map(|d| d.time),
                "snapshot": d.as_ref().map(|d| d.snapshot),
                "rto_seconds": d.as_ref().map(snap::ops::drill::rto),
            })
        })
        .collect()
}

/// The last proven restore of each group, in words.
fn print_drills(proven: &[(Group, Option<Drill>)]) -> Result<()> {
    if proven.is_empty() {
        return Ok(());
    }
    outln!("last proven restore (passed drill) per group:");
    for ((host, group), d) in proven {
        let group = format!("{host} {}", group.join(" "));
        if let Some(d) = d {
            outln!(
                "  {group}: {}, RTO {:.1} s",
                snap::host::local_time(&d.time),
                snap::ops::drill::rto(d)
            );
        } else {
            outln!("  {group}: never (run `snap drill`)");
        }
    }
    Ok(())
}
