//! `snap list`: the snapshots, each with the result of its last drill (`drill`
//! column: passed, FAILED, or - when never drilled).

use anyhow::Result;
use snap::format::drill::Outcome;
use snap::host::local_time;

use super::{count, human, Ctx, FilterArgs};

#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    filter: FilterArgs,
    /// Print the snapshots as a JSON array
    #[arg(long)]
    json: bool,
}

pub fn run(ctx: &Ctx, a: Args) -> Result<i32> {
    let repo = ctx.open(false)?;
    let filter = a.filter.filter();
    let mut snaps = repo.snapshots()?;
    snaps.retain(|(_, s)| filter.matches(s));
    let drills = snap::ops::drill::last_per_snapshot(repo.drills()?);
    if a.json {
        let arr: Vec<serde_json::Value> = snaps
            .iter()
            .map(|(id, s)| {
                let mut v = serde_json::to_value(s).expect("snapshots serialize");
                v["id"] = serde_json::json!(id);
                v["short_id"] = serde_json::json!(id.short());
                if let Some(d) = drills.get(id) {
                    v["drill"] = serde_json::json!({
                        "time": d.time,
                        "result": d.result,
                        "rto_seconds": snap::ops::drill::rto(d),
                    });
                }
                v
            })
            .collect();
        outln!("{}", serde_json::to_string_pretty(&arr)?);
        return Ok(0);
    }
    outln!(
        "{:<8}  {:<26}  {:<12}  {:>7}  {:>10}  {:>10}  {:<12}  {:<6}  sources",
        "id",
        "time",
        "host",
        "files",
        "size",
        "added",
        "tags",
        "drill"
    );
    for (id, s) in &snaps {
        let sources: Vec<String> = s
            .sources
            .iter()
            .map(snap::format::snapshot::Source::describe)
            .collect();
        let drill = match drills.get(id).map(|d| d.result) {
            Some(Outcome::Passed) => "passed",
            Some(Outcome::Failed) => "FAILED",
            None => "-",
        };
        outln!(
            "{:<8}  {:<26}  {:<12}  {:>7}  {:>10}  {:>10}  {:<12}  {drill:<6}  {}",
            id.short(),
            local_time(&s.time),
            s.host,
            s.summary.files,
            human(s.summary.bytes_total),
            human(s.summary.bytes_added),
            s.tags.join(","),
            sources.join(" ")
        );
    }
    if !ctx.quiet {
        outln!("{}", count(snaps.len(), "snapshot"));
    }
    Ok(0)
}
