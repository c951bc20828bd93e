//! `snap tag`

use anyhow::Result;
use snap::ops::tag::{retag, TagChange};

use super::{Ctx, FilterArgs};

#[derive(clap::Args)]
pub struct Args {
    /// Snapshots (ids, unique prefixes or `latest`); none: every snapshot the filters
    /// pass
    snapshots: Vec<String>,
    #[command(flatten)]
    filter: FilterArgs,
    /// Add this tag (repeatable; `a,b` adds both)
    #[arg(long, value_delimiter = ',', value_parser = super::parse_tag)]
    add: Vec<String>,
    /// Remove this tag (repeatable; `a,b` removes both)
    #[arg(long, value_delimiter = ',')]
    remove: Vec<String>,
    /// Replace the tags by these (repeatable; `a,b` sets both; `--set ''` removes every
    /// tag)
    #[arg(long, conflicts_with = "add", value_delimiter = ',', value_parser = set_tag)]
    set: Vec<String>,
    /// Print the changes as one JSON array
    #[arg(long)]
    json: bool,
}

/// A tag of `--set`, or none (`--set ''`).
fn set_tag(s: &str) -> Result<String, String> {
    if s.is_empty() {
        Ok(String::new())
    } else {
        super::parse_tag(s)
    }
}

pub fn run(ctx: &Ctx, a: Args) -> Result<i32> {
    if a.add.is_empty() && a.remove.is_empty() && a.set.is_empty() {
        return Err(super::output::usage(
            "say what to change: --add TAG, --remove TAG or --set TAG",
        ));
    }
    let change = TagChange {
        set: (!a.set.is_empty()).then(|| a.set.iter().filter(|t| !t.is_empty()).cloned().collect()),
        add: a.add.clone(),
        remove: a.remove.clone(),
    };
    let repo = ctx.open(false)?;
    // Exclusive, as forget: a record is replaced, and prune must see one or the other.
    let lock = repo.lock(true, "tag")?;
    let filter = a.filter.filter();
    let mut chosen = Vec::new();
    if a.snapshots.is_empty() {
        chosen = repo.snapshots()?;
    } else {
        for spec in &a.snapshots {
            chosen.push(repo.find_snapshot(spec)?);
        }
    }
    chosen.retain(|(_, s)| filter.matches(s));
    let done = retag(&repo, &chosen, &change)?;
    drop(lock);
    if a.json {
        let arr: Vec<serde_json::Value> = done
            .iter()
            .map(|r| serde_json::json!({"old": r.old, "new": r.new, "tags": r.tags}))
            .collect();
        outln!("{}", serde_json::to_string_pretty(&arr)?);
        return Ok(0);
    }
    for r in &done {
        outln!(
            "{} -> {}  tags: {}",
            r.old.short(),
            r.new.short(),
            if r.tags.is_empty() {
                "(none)".to_string()
            } else {
                r.tags.join(",")
            }
        );
    }
    if !ctx.quiet {
        let n = done.len();
        let left = chosen.len() - n;
        eprintln!(
            "{n} {} changed{}",
            if n == 1 { "snapshot" } else { "snapshots" },
            if left > 0 {
                format!(", {left} already as asked")
            } else {
                String::new()
            }
        );
    }
    Ok(0)
}
