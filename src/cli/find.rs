//! `snap find`

use std::io::Write;

use anyhow::Result;
use snap::ops::find::{Finder, Pattern};

use super::{ls, Ctx, FilterArgs};

#[derive(clap::Args)]
pub struct Args {
    /// A glob: without `/` matched against entry names (`*.tif`), with `/` against
    /// whole paths in the snapshot (`/srv/ngw/**/*.tif`; `*` stays within a name); a
    /// name's bytes as `ls` shows them (`\xFF`) or raw
    #[arg(value_parser = super::snapshot_path_arg())]
    pattern: String,
    #[command(flatten)]
    filter: FilterArgs,
    /// One JSON object per line: the snapshot, then the entry as `ls --json` gives it
    #[arg(long)]
    json: bool,
}

pub fn run(ctx: &Ctx, a: Args) -> Result<i32> {
    let pattern = Pattern::new(&a.pattern)?;
    let repo = ctx.open(false)?;
    // Shared: prune (exclusive) must not delete packs this reads.
    let _lock = repo.lock(false, "find")?;
    let filter = a.filter.filter();
    let snaps: Vec<_> = repo
        .snapshots()?
        .into_iter()
        .filter(|(_, s)| filter.matches(s))
        .collect();
    let mut finder = Finder::new(&repo, pattern);
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    let mut found = 0u64;
    for (id, s) in &snaps {
        finder.find(&s.tree, &mut |path, node| {
            found += 1;
            let line = if a.json {
                let mut v = ls::entry_json(path, node);
                v["snapshot"] = serde_json::json!(id);
                v["snapshot_time"] = serde_json::json!(s.time);
                v.to_string()
            } else {
                format!(
                    "{}  {}  {}",
                    id.short(),
                    snap::host::local_time(&s.time),
                    ls::entry_line(path, node)
                )
            };
            writeln!(out, "{line}").map_err(|e| snap::error::Error::Io {
                path: "<standard output>".into(),
                source: e,
            })
        })?;
    }
    out.flush()?;
    if !ctx.quiet && !a.json {
        eprintln!(
            "{found} {} in {} {}",
            if found == 1 { "entry" } else { "entries" },
            snaps.len(),
            if snaps.len() == 1 {
                "snapshot"
            } else {
                "snapshots"
            }
        );
    }
    Ok(0)
}
