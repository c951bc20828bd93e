//! `snap metrics`, and the `metrics_file` a profile's `snap run` writes.

use std::path::Path;

use anyhow::Result;
use snap::ops::metrics::{gather, render, write_atomic, RunOutcome};

use super::{message, Ctx};

#[derive(clap::Args)]
pub struct Args {
    /// Print the figures as JSON instead
    #[arg(long)]
    json: bool,
}

pub fn run(ctx: &Ctx, a: Args) -> Result<i32> {
    let repo = ctx.open(false)?;
    let m = gather(&repo)?;
    if a.json {
        ctx.print_json(&m)?;
    } else {
        outln!("{}", render(Some(&m), None).trim_end());
    }
    Ok(0)
}

/// Writes the metrics of `ctx`'s repository and of the run `outcome` to `file`,
/// atomically. Never fails the run: a repository that cannot be read leaves its series
/// out (the run's are written), a file that cannot be written is a warning.
pub fn write_run_file(ctx: &Ctx, file: &Path, outcome: &RunOutcome) {
    let gathered = ctx
        .open(false)
        .and_then(|repo| Ok(gather(&repo)?))
        .map_err(|e| {
            eprintln!(
                "snap: warning: metrics_file {}: the repository's series are left out: {}",
                file.display(),
                message(&e)
            );
        })
        .ok();
    if let Err(e) = write_atomic(file, render(gathered.as_ref(), Some(outcome)).as_bytes()) {
        eprintln!("snap: warning: metrics_file not written: {e}");
    }
}
