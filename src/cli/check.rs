//! `snap check`

use anyhow::Result;
use snap::format::drill::Outcome;
use snap::ops::check::{check, ReadData};
use snap::ops::metrics::{record_check, CheckRecord};
use snap::span::Span;

use super::{count, progress_for, prune::parse_percent, Bar, Ctx};

#[derive(clap::Args)]
pub struct Args {
    /// Also read every pack and verify every blob's hash
    #[arg(long, conflicts_with = "read_data_subset")]
    read_data: bool,
    /// Read this share of the packs (e.g. 10%), those verified longest ago first, so
    /// that repeated runs cover the whole repository
    #[arg(long, value_name = "PERCENT", value_parser = parse_percent)]
    read_data_subset: Option<f64>,
    /// Only check that the newest snapshot is younger than SPAN (e.g. 30m, 1h30m, 26h,
    /// 2d): exit 1 if not. For monitoring; reads no data. Units: s, m or min, h, d, w,
    /// mo or month(s), y or year(s); `M` and unknown units are refused
    #[arg(long, value_name = "SPAN", conflicts_with_all = ["read_data", "read_data_subset"])]
    max_age: Option<Span>,
    /// Only check that every group of snapshots (host and sources) has a passed
    /// `snap drill` younger than SPAN (e.g. 7d): exit 1 if one has not. For
    /// monitoring; reads only snapshot and drill records
    #[arg(long, value_name = "SPAN", conflicts_with_all = ["read_data", "read_data_subset", "max_age"])]
    max_drill_age: Option<Span>,
    /// With --max-age or --max-drill-age: only snapshots (groups) of this host count
    #[arg(long, value_name = "HOST")]
    host: Option<String>,
    /// Print the report as JSON (with --max-age: the newest snapshot's time and age);
    /// a failure prints {"error": {"message", "kind"}}
    #[arg(long)]
    json: bool,
}

pub fn run(ctx: &Ctx, a: Args) -> Result<i32> {
    // A probe (--max-age, --max-drill-age) reads what the cache knows; a check proves
    // the repository's own config and key file too, as a host without this one's memory
    // of them would read them.
    let repo = if a.max_age.is_some() || a.max_drill_age.is_some() {
        ctx.open(false)?
    } else {
        ctx.open_unremembered()?
    };
    if let Some(span) = a.max_drill_age {
        return drill_age(ctx, &repo, span, a.host.as_deref(), a.json);
    }
    if a.host.is_some() && a.max_age.is_none() {
        return Err(super::output::usage(
            "--host goes with --max-age or --max-drill-age",
        ));
    }
    if let Some(span) = a.max_age {
        let now = chrono::Utc::now();
        // A snapshot dated ahead of this host's clock (another host's clock runs fast)
        // would read as fresh for as long as it is ahead: it does not count.
        let (ahead, counted): (Vec<_>, Vec<_>) = repo
            .snapshots()?
            .into_iter()
            .filter(|(_, s)| a.host.as_ref().is_none_or(|h| *h == s.host))
            .partition(|(_, s)| s.time > now + CLOCK_SKEW);
        for (id, s) in &ahead {
            eprintln!(
                "snap: warning: snapshot {} of host {} is dated {}, ahead of this host's clock: it is not counted; set that host's clock right",
                id.short(),
                s.host,
                snap::host::local_time(&s.time)
            );
        }
        let newest = counted.into_iter().map(|(_, s)| s.time).max();
        let limit = span
            .before(&now)
            .ok_or_else(|| super::output::usage("--max-age reaches before the calendar's start"))?;
        let who = a
            .host
            .as_deref()
            .map(|h| format!(" of host {h}"))
            .unwrap_or_default();
        return match newest {
            None if !ahead.is_empty() => Err(super::output::stale(format!(
                "no snapshot{who} in {} is dated before this host's clock ({} ahead of it, named above)",
                repo.location(),
                count(ahead.len(), "snapshot")
            ))),
            None => Err(super::output::stale(format!(
                "no snapshot{who} in {}: nothing is backed up yet; run `snap backup`",
                repo.location()
            ))),
            Some(t) if t < limit => Err(super::output::stale(format!(
                "the newest snapshot{who} in {} is from {}, older than the allowed {}",
                repo.location(),
                snap::host::local_time(&t),
                span
            ))),
            Some(t) if a.json => {
                ctx.print_json(&serde_json::json!({
                    "newest": t,
                    "host": a.host,
                    "age_seconds": (now - t).num_seconds(),
                    "max_age": span.to_string(),
                }))?;
                Ok(0)
            }
            Some(t) => {
                if !ctx.quiet {
                    outln!(
                        "newest snapshot{who}: {} ({} ago)",
                        snap::host::local_time(&t),
                        human_age(now - t)
                    );
                }
                Ok(0)
            }
        };
    }
    let read = match (a.read_data, a.read_data_subset) {
        (true, _) => ReadData::All,
        (false, Some(s)) => ReadData::Subset(s),
        (false, None) => ReadData::None,
    };
    let bar = if read == ReadData::None {
        None
    } else {
        Bar::new(ctx, "read", a.json)
    };
    let clock = std::time::Instant::now();
    let r = check(&repo, read, progress_for(bar.as_ref()))?;
    drop(bar);
    // For `snap metrics`: kept in this client's cache, never in the repository.
    let record = CheckRecord {
        time: chrono::Utc::now(),
        seconds: clock.elapsed().as_secs_f64(),
        ok: r.errors.is_empty(),
        errors: r.errors.len() as u64,
        read_data: match read {
            ReadData::None => 0.0,
            ReadData::All => 1.0,
            ReadData::Subset(share) => share,
        },
    };
    if let Err(e) = record_check(&repo, &record) {
        eprintln!("snap: warning: the check's outcome is not recorded for `snap metrics`: {e}");
    }
    if a.json {
        ctx.print_json(&r)?;
    } else {
        for w in &r.warnings {
            eprintln!("snap: warning: {w}");
        }
        for e in &r.errors {
            eprintln!("snap: error: {e}");
        }
        for d in &r.damaged {
            outln!(
                "damaged snapshot {} ({}): {}",
                d.id.short(),
                d.describe,
                count(d.paths.len(), "path")
            );
            for p in d.paths.iter().take(20) {
                outln!("  {p}");
            }
            if d.paths.len() > 20 {
                outln!("  ... and {} more", d.paths.len() - 20);
            }
        }
        if !ctx.quiet || !r.errors.is_empty() {
            outln!(
                "{}, {}, {} trees and lists checked; {} read, {} verified: {}",
                count(r.snapshots, "snapshot"),
                count(r.packs, "pack"),
                r.metadata_blobs,
                count(r.packs_read, "pack"),
                count(r.blobs_verified, "blob"),
                if r.errors.is_empty() {
                    "no errors".to_string()
                } else {
                    format!(
                        "{}, {} damaged",
                        count(r.errors.len(), "error"),
                        count(r.damaged.len(), "snapshot")
                    )
                }
            );
        }
    }
    if r.errors.is_empty() {
        Ok(0)
    } else if r.errors.len() == r.unreadable.len() + r.damaged_records.len() {
        if !a.json && !r.damaged_records.is_empty() {
            eprintln!("snap: no backed up data is damaged, but the records listed above are; do what each says");
        }
        if !a.json && !r.unreadable.is_empty() {
            eprintln!("snap: some packs could not be read (listed above), for reasons that prove no damage; fix what stopped the reads and run check again");
        }
        Ok(1)
    } else {
        if !a.json {
            eprintln!("snap: the repository is damaged; snapshots not listed above restore fine. `snap repair index` fixes index errors and drops damaged blobs from the index (no backup reuses them); lost data comes back only from another copy (see `snap sync`) or, for data still on disk, with the next backup after `snap repair index`");
        }
        Ok(1)
    }
}

/// How far ahead of this host's clock a record may be dated and still count as made
/// now: clocks kept by NTP differ by far less.
const CLOCK_SKEW: chrono::Duration = chrono::Duration::minutes(5);

/// `--max-drill-age`: every group's last passed drill younger than `span`, else exit 1
/// naming the groups that are not.
fn drill_age(
    ctx: &Ctx,
    repo: &snap::repo::Repository,
    span: Span,
    host: Option<&str>,
    json: bool,
) -> Result<i32> {
    let now = chrono::Utc::now();
    let limit = span.before(&now).ok_or_else(|| {
        super::output::usage("--max-drill-age reaches before the calendar's start")
    })?;
    let drills = repo.drills()?;
    let failing = snap::ops::drill::failing(&drills);
    let mut groups = snap::ops::drill::proven(&repo.snapshots()?, drills.clone());
    groups.retain(|(g, _)| host.is_none_or(|h| g.0 == h));
    if groups.is_empty() {
        let who = host.map(|h| format!(" of host {h}")).unwrap_or_default();
        return Err(super::output::stale(format!(
            "no snapshot{who} in {}: nothing is backed up, so nothing is proven; run `snap backup`",
            repo.location()
        )));
    }
    let mut stale = Vec::new();
    let mut rows = Vec::new();
    for (g, passed) in &groups {
        let last = passed.as_ref().map(|d| d.time);
        let name = format!("{} {}", g.0, g.1.join(" "));
        match (last, failing.get(g)) {
            (_, Some(failed)) => stale.push(format!(
                "{name}: its last drill, {}, FAILED ({})",
                snap::host::local_time(&failed.time),
                failed
                    .sources
                    .iter()
                    .filter_map(|s| s.reason.as_deref().filter(|_| s.result == Outcome::Failed))
                    .collect::<Vec<_>>()
                    .join("; ")
            )),
            (None, None) => stale.push(format!("{name}: never passed a drill")),
            (Some(t), None) if t < limit => stale.push(format!(
                "{name}: last passed drill {}",
                snap::host::local_time(&t)
            )),
            (Some(_), None) => {}
        }
        rows.push(serde_json::json!({ "host": g.0, "group": g.1, "last_passed_drill": last }));
    }
    if !stale.is_empty() {
        return Err(super::output::stale(format!(
            "{} without a passed drill within {span}: {}; run `snap drill`",
            count(stale.len(), "group"),
            stale.join("; ")
        )));
    }
    if json {
        ctx.print_json(&serde_json::json!({ "max_drill_age": span.to_string(), "groups": rows }))?;
    } else if !ctx.quiet {
        outln!(
            "{} proven by a passed drill within {span}",
            count(groups.len(), "group")
        );
    }
    Ok(0)
}

fn human_age(d: chrono::Duration) -> String {
    let m = d.num_minutes().max(0);
    match m {
        0..=59 => format!("{m} min"),
        60..=2879 => format!("{}h{:02}m", m / 60, m % 60),
        _ => format!("{} days", m / 1440),
    }
}
