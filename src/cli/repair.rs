//! `snap repair`

use anyhow::{Context, Result};

use super::Ctx;

#[derive(clap::Args)]
pub struct Args {
    #[command(subcommand)]
    what: What,
}

#[derive(clap::Subcommand)]
enum What {
    /// Rewrite the index files from the pack trailers (reads every pack's trailer),
    /// and rebuild the local index cache
    Index,
}

pub fn run(ctx: &Ctx, a: Args) -> Result<i32> {
    let What::Index = a.what;
    let repo = ctx.open(false)?;
    let s = repo
        .rebuild_index()
        .with_context(|| format!("rebuilding the index of {}", repo.location()))?;
    if !ctx.quiet {
        outln!(
            "index rebuilt: {} packs, {} blobs in {} index files, {} snapshots",
            s.packs,
            s.blobs,
            s.index_files,
            s.snapshots
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
