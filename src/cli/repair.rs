//! `snap repair`

use anyhow::{Context, Result};

use snap::ops::repair::{repair_index, RepairOptions};
use snap::progress::NoProgress;

use super::Ctx;

#[derive(clap::Args)]
pub struct Args {
    #[command(subcommand)]
    what: What,
}

#[derive(clap::Subcommand)]
enum What {
    /// Rewrite the index files from the pack trailers (reads every pack's trailer),
    /// and rebuild the local index cache. Packs with damaged blobs (found by `snap
    /// check --read-data`, or with --read-data here) are salvaged: their intact blobs
    /// are copied into new packs and the damaged copies dropped, so that the next
    /// backup stores that data afresh
    Index(IndexArgs),
}

#[derive(clap::Args)]
struct IndexArgs {
    /// Also read and verify every blob (slow: reads the whole repository)
    #[arg(long)]
    read_data: bool,
    /// Print the result as JSON (a failure: {"error": {"message", "kind"}})
    #[arg(long)]
    json: bool,
}

pub fn run(ctx: &Ctx, a: Args) -> Result<i32> {
    let What::Index(args) = a.what;
    let repo = ctx.open(false)?;
    let opts = RepairOptions {
        read_data: args.read_data,
    };
    let s = repair_index(&repo, opts, &NoProgress)
        .with_context(|| format!("rebuilding the index of {}", repo.location()))?;
    if args.json {
        ctx.print_json(&serde_json::json!({
            "packs": s.packs, "blobs": s.blobs, "index_files": s.index_files,
            "snapshots": s.snapshots, "salvaged": s.salvaged, "skipped": s.skipped,
        }))?;
    } else if !ctx.quiet {
        outln!(
            "index rebuilt: {} packs, {} blobs in {} index files, {} snapshots",
            s.packs,
            s.blobs,
            s.index_files,
            s.snapshots
        );
    }
    if !s.salvaged.is_empty() {
        super::print_list(
            "packs with damaged blobs, salvaged (back up the sources again to store the dropped data afresh)",
            &s.salvaged,
        );
    }
    if !s.skipped.is_empty() {
        super::print_list(
            "packs that could not be read (their data is not available)",
            &s.skipped,
        );
        anyhow::bail!(
            "{} packs could not be read; their blobs are not indexed (run `snap check` to see which snapshots need them)",
            s.skipped.len()
        );
    }
    Ok(0)
}
