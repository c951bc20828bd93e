//! `snap forget`

use anyhow::Result;
use snap::format::id::SnapshotId;
use snap::format::snapshot::Snapshot;
use snap::ops::retention::{self, GroupBy, Policy};
use snap::repo::{Lock, Repository};
use snap::span::Span;

use super::{count, prune, Ctx, FilterArgs};

#[derive(clap::Args)]
pub struct Args {
    /// Remove these snapshots (ids or unique prefixes) instead of applying a policy
    #[arg(value_name = "SNAPSHOT", conflicts_with_all = ["keep_last", "keep_hourly", "keep_daily", "keep_weekly", "keep_monthly", "keep_yearly", "keep_within", "keep_tag"])]
    pub(super) snapshots: Vec<String>,
    /// Keep the N newest snapshots (each count may be `unlimited`)
    #[arg(long, value_name = "N", default_value_t = 0, value_parser = parse_keep, allow_hyphen_values = true)]
    pub(super) keep_last: u32,
    /// Keep the newest snapshot of each of the last N hours that have one
    #[arg(long, value_name = "N", default_value_t = 0, value_parser = parse_keep, allow_hyphen_values = true)]
    pub(super) keep_hourly: u32,
    /// Keep the newest snapshot of each of the last N days that have one
    #[arg(long, value_name = "N", default_value_t = 0, value_parser = parse_keep, allow_hyphen_values = true)]
    pub(super) keep_daily: u32,
    /// Keep the newest snapshot of each of the last N ISO weeks that have one
    #[arg(long, value_name = "N", default_value_t = 0, value_parser = parse_keep, allow_hyphen_values = true)]
    pub(super) keep_weekly: u32,
    /// Keep the newest snapshot of each of the last N months that have one
    #[arg(long, value_name = "N", default_value_t = 0, value_parser = parse_keep, allow_hyphen_values = true)]
    pub(super) keep_monthly: u32,
    /// Keep the newest snapshot of each of the last N years that have one
    #[arg(long, value_name = "N", default_value_t = 0, value_parser = parse_keep, allow_hyphen_values = true)]
    pub(super) keep_yearly: u32,
    /// Keep every snapshot newer than SPAN before the newest one not dated ahead of now
    /// (e.g. 2d, 12h, 1y6mo). Units: s, min, h, d, w, mo or month(s), y or year(s); a
    /// bare `m` (restic's months, elsewhere snap's minutes), `M` and unknown units are
    /// refused
    #[arg(long, value_name = "SPAN", value_parser = parse_keep_within)]
    pub(super) keep_within: Option<Span>,
    /// Keep every snapshot with this tag (repeatable; `a,b`: with both)
    #[arg(long, value_name = "TAG")]
    pub(super) keep_tag: Vec<String>,
    /// Which snapshots the policy considers (the others are kept)
    #[command(flatten)]
    pub(super) filter: FilterArgs,
    /// Judge the snapshots in groups by host, paths (the sources) and tags, any of
    /// them comma-separated; each group keeps its own counts. `''` puts every
    /// snapshot in one group. A profile whose sources change starts a new group
    #[arg(long, value_name = "KEYS", default_value = "host,paths")]
    pub(super) group_by: GroupBy,
    /// Show what would be removed, remove nothing
    #[arg(long, short = 'n')]
    pub(super) dry_run: bool,
    /// Run prune afterwards, deleting the data only removed snapshots used
    #[arg(long)]
    pub(super) prune: bool,
    /// With --prune: unused space to tolerate, e.g. 5%, or `unlimited` (see `snap prune`)
    #[arg(long, value_name = "PERCENT", default_value = "5%", value_parser = prune::parse_max_unused)]
    pub(super) max_unused: f64,
    /// Print the decisions (and prune's report) as one JSON object
    #[arg(long)]
    pub(super) json: bool,
    /// A profile's own snapshots: of this host and group key of sources (`snap run`
    /// gives those of the snapshot its backup step made).
    #[arg(skip)]
    pub(super) group: Option<(String, Vec<String>)>,
}

/// A `--keep-*` count: a number, or `unlimited` (restic's `-1` too) for every one.
pub fn parse_keep(s: &str) -> Result<u32, String> {
    match s {
        "unlimited" | "-1" => Ok(u32::MAX),
        _ => s
            .parse()
            .map_err(|_| format!("{s:?} is not a count: a number, or `unlimited`")),
    }
}

/// A retention span: as any span, but `6m`, months to a restic user and minutes to
/// snap, is refused rather than read either way.
pub fn parse_keep_within(s: &str) -> Result<Span, String> {
    let b = s.as_bytes();
    let bare_m = (0..b.len()).any(|i| {
        b[i] == b'm'
            && i > 0
            && b[i - 1].is_ascii_digit()
            && b.get(i + 1).is_none_or(u8::is_ascii_digit)
    });
    if bare_m {
        return Err(format!(
            "{s:?}: a bare `m` in a retention span is ambiguous (months in restic, minutes in snap): write mo for months or min for minutes"
        ));
    }
    s.parse()
}

pub fn run(ctx: &Ctx, a: Args) -> Result<i32> {
    let policy = Policy {
        last: a.keep_last,
        hourly: a.keep_hourly,
        daily: a.keep_daily,
        weekly: a.keep_weekly,
        monthly: a.keep_monthly,
        yearly: a.keep_yearly,
        within: a.keep_within,
        tags: a.keep_tag.clone(),
    };
    if a.snapshots.is_empty() && policy.is_empty() {
        return Err(super::output::usage(
            "no --keep-* option and no snapshot given: refusing to remove every snapshot",
        ));
    }
    let repo = ctx.open(false)?;
    let lock = repo.lock(true, "forget")?;
    repo.sync_snapshots()?;
    if !a.snapshots.is_empty() {
        let mut remove = Vec::new();
        for spec in &a.snapshots {
            let (id, s) = repo.find_snapshot(spec)?;
            if !ctx.quiet && !a.json {
                outln!(
                    "remove  {}  {}  {}",
                    id.short(),
                    snap::host::local_time(&s.time),
                    s.host
                );
            }
            remove.push(id);
        }
        let json: Vec<serde_json::Value> = remove
            .iter()
            .map(|id| serde_json::json!({"id": id, "keep": false, "reasons": ["given"]}))
            .collect();
        return finish(ctx, &a, &repo, lock, remove, json);
    }
    let filter = a.filter.filter();
    let mut chosen = repo.snapshots()?;
    chosen.retain(|(_, s)| filter.matches(s));
    if let Some((host, sources)) = &a.group {
        chosen.retain(|(_, s)| s.host == *host && Snapshot::group_key(&s.sources) == *sources);
    }
    let plan = retention::plan(
        chosen,
        &policy,
        a.group_by,
        &chrono::Local,
        chrono::Utc::now(),
    )?;
    let mut json = Vec::new();
    for g in &plan.groups {
        let kept = g.snapshots.iter().filter(|(_, _, d)| d.keep).count();
        if !a.json && !ctx.quiet {
            outln!("{}:", group_title(&g.key));
            outln!(
                "  {:<6}  {:<8}  {:<26}  {:<12}  reasons",
                "",
                "id",
                "time",
                "tags"
            );
        }
        for (id, s, d) in g.snapshots.iter().rev() {
            if a.json {
                json.push(serde_json::json!({
                    "id": id, "time": s.time, "host": s.host, "keep": d.keep, "reasons": d.reasons,
                    "notes": d.notes,
                }));
            } else if !ctx.quiet {
                outln!(
                    "  {:<6}  {:<8}  {:<26}  {:<12}  {}",
                    if d.keep { "keep" } else { "remove" },
                    id.short(),
                    snap::host::local_time(&s.time),
                    s.tags.join(","),
                    if d.keep { &d.reasons } else { &d.notes }.join(", ")
                );
            }
        }
        if !a.json && !ctx.quiet {
            outln!("  {kept} kept, {} removed", g.snapshots.len() - kept);
        }
    }
    if !a.json && !ctx.quiet {
        for note in split_groups(&plan.groups) {
            outln!("{note}");
        }
    }
    let remove = plan.remove();
    finish(ctx, &a, &repo, lock, remove, json)
}

/// `host db1, sources path:/srv ngw:/etc/ngw.ini, tags daily`: what a group shares.
fn group_title(key: &retention::GroupKey) -> String {
    let mut parts = Vec::new();
    if let Some(h) = &key.host {
        parts.push(format!("host {h}"));
    }
    if let Some(s) = &key.sources {
        parts.push(format!("sources {}", s.join(" ")));
    }
    if let Some(t) = &key.tags {
        let t = if t.is_empty() {
            "(none)".to_string()
        } else {
            t.join(",")
        };
        parts.push(format!("tags {t}"));
    }
    if parts.is_empty() {
        "all snapshots".to_string()
    } else {
        parts.join(", ")
    }
}

/// A note for each host whose snapshots fall into several groups by their sources
/// alone: each of those groups keeps its own counts, which surprises whoever changed a
/// profile's sources and expected `keep_daily = 7` to keep 7 days in all.
fn split_groups(groups: &[retention::Group]) -> Vec<String> {
    let mut by_rest: std::collections::BTreeMap<_, usize> = std::collections::BTreeMap::new();
    for g in groups.iter().filter(|g| g.key.sources.is_some()) {
        *by_rest.entry((&g.key.host, &g.key.tags)).or_default() += 1;
    }
    by_rest
        .into_iter()
        .filter(|(_, n)| *n > 1)
        .map(|((host, _), n)| {
            let whose = host
                .as_ref()
                .map_or("the snapshots".to_string(), |h| format!("host {h}"));
            format!(
                "note: {whose} has {n} groups that differ only in their sources, each judged alone with its own counts (changing a profile's sources starts a new group); `--group-by host` judges them together"
            )
        })
        .collect()
}

/// Removes `remove` (unless a dry run), then prunes if asked; prints the JSON report
/// (`decisions`, one object per snapshot considered) with `--json`.
fn finish(
    ctx: &Ctx,
    a: &Args,
    repo: &Repository,
    lock: Lock,
    remove: Vec<SnapshotId>,
    decisions: Vec<serde_json::Value>,
) -> Result<i32> {
    let mut pruned = None;
    if a.dry_run {
        if !a.json {
            outln!(
                "dry run: {} would be removed, nothing changed",
                count(remove.len(), "snapshot")
            );
        }
    } else {
        lock.check()?;
        repo.remove_snapshots(&remove)?;
        drop(lock);
        // Quiet, the last line only: prune's, when it runs.
        if !(a.json || ctx.quiet && a.prune) {
            outln!("removed {}", count(remove.len(), "snapshot"));
        }
        if a.prune {
            let r = prune::run_prune(ctx, repo, a.max_unused, false, a.json)?;
            if !a.json {
                prune::print_report(&r, false, ctx.quiet)?;
            }
            pruned = Some(r);
        }
    }
    if a.json {
        ctx.print_json(&serde_json::json!({
            "snapshots": decisions,
            "removed": remove,
            "dry_run": a.dry_run,
            "prune": pruned,
        }))?;
    }
    Ok(0)
}
