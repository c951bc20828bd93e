//! `snap diff`

use anyhow::Result;
use snap::error::{Error, Usage};
use snap::ops::diff::{diff, parent_of, Change, Entry};

use super::{human, Ctx};

#[derive(clap::Args)]
pub struct Args {
    /// The older snapshot, or with no second one the snapshot to compare with its
    /// parent
    old: String,
    /// The newer snapshot
    new: Option<String>,
    #[command(flatten)]
    of: super::SnapshotOf,
    /// Print one JSON object per changed entry
    #[arg(long)]
    json: bool,
}

pub fn run(ctx: &Ctx, a: Args) -> Result<i32> {
    let repo = ctx.open(false)?;
    let _lock = repo.lock(false, "diff")?;
    let (old, new) = if let Some(new) = &a.new {
        (a.of.find(&repo, &a.old)?.1, a.of.find(&repo, new)?.1)
    } else {
        let (id, new) = a.of.find(&repo, &a.old)?;
        let all = repo.snapshots()?;
        let (_, old) = parent_of(&all, &id, &new).ok_or_else(|| {
            Error::from(Usage::NoParent {
                snapshot: id.short(),
            })
        })?;
        (old, new)
    };
    let mut counts = [0u64; 4];
    let mut bytes = (0u64, 0u64);
    diff(&repo, &old.tree, &new.tree, &mut |e: Entry| {
        counts[e.change as usize] += 1;
        if e.kind == "file" {
            bytes.0 += e.old_size;
            bytes.1 += e.new_size;
        }
        if a.json {
            outln!("{}", serde_json::to_string(&e).expect("entries serialize"));
            return Ok(());
        }
        let mark = match e.change {
            Change::Added => "+",
            Change::Removed => "-",
            Change::Modified => "M",
            Change::Metadata => "U",
        };
        let slash = if e.kind == "dir" { "/" } else { "" };
        let size = match e.change {
            Change::Added => human(e.new_size),
            Change::Removed => human(e.old_size),
            _ if e.old_size == e.new_size => human(e.new_size),
            _ => format!("{} -> {}", human(e.old_size), human(e.new_size)),
        };
        let table = e.table.map(|t| format!(" (table {t})")).unwrap_or_default();
        // A renumbered pg_dump file: its name in the older snapshot.
        let was = e
            .old_path
            .as_deref()
            .and_then(|p| p.rsplit('/').next())
            .map(|w| format!(", was {w}"))
            .unwrap_or_default();
        if e.kind == "dir" {
            outln!("{mark} {}{slash}{table}", e.path);
        } else {
            outln!("{mark} {}{table}  {size}{was}", e.path);
        }
        Ok(())
    })?;
    if !a.json && !ctx.quiet {
        outln!(
            "{} added, {} removed, {} changed, {} metadata only; changed files: {} -> {}",
            counts[Change::Added as usize],
            counts[Change::Removed as usize],
            counts[Change::Modified as usize],
            counts[Change::Metadata as usize],
            human(bytes.0),
            human(bytes.1)
        );
    }
    Ok(0)
}
