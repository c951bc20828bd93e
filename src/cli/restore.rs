//! `snap restore`

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{bail, Result};
use snap::restore::{restore, RestoreOptions};

use super::{human, print_list, progress_for, Bar, Ctx};

#[derive(clap::Args)]
pub struct Args {
    /// Snapshot: `latest` or an id prefix
    snapshot: String,
    /// Directory to restore into (created if absent)
    #[arg(long, short)]
    target: PathBuf,
    /// Restore only this path of the snapshot (repeatable)
    #[arg(long, value_name = "PATH")]
    include: Vec<String>,
    /// Print the result as JSON
    #[arg(long)]
    json: bool,
}

pub fn run(ctx: &Ctx, a: Args) -> Result<i32> {
    let repo = ctx.open(false)?;
    let (id, snap) = repo.find_snapshot(&a.snapshot)?;
    let started = Instant::now();
    let bar = Bar::new(ctx, "restore");
    let opts = RestoreOptions {
        target: a.target.clone(),
        include: a.include,
    };
    let out = restore(&repo, &snap, &opts, progress_for(&bar))?;
    drop(bar);
    print_list("not restored", &out.warnings);
    if !out.errors.is_empty() {
        let errs: Vec<String> = out.errors.iter().map(|e| e.to_string()).collect();
        print_list("FAILED to restore", &errs);
        bail!(
            "{} entries of snapshot {} could not be restored (listed above); the others are in {}",
            out.errors.len(),
            id.short(),
            a.target.display()
        );
    }
    if a.json {
        let v = serde_json::json!({
            "snapshot": id,
            "target": a.target,
            "files": out.files,
            "dirs": out.dirs,
            "others": out.others,
            "bytes": out.bytes,
            "warnings": out.warnings,
            "seconds": started.elapsed().as_secs_f64(),
        });
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else if !ctx.quiet {
        println!(
            "restored snapshot {} to {}: {} files, {} dirs, {} in {:.1} s",
            id.short(),
            a.target.display(),
            out.files,
            out.dirs,
            human(out.bytes),
            started.elapsed().as_secs_f64()
        );
    }
    Ok(0)
}
