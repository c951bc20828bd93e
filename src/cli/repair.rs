//! `snap repair`

use anyhow::{Context, Result};
use snap::repo::Repository;

use super::Ctx;

#[derive(clap::Args)]
pub struct Args {
    #[command(subcommand)]
    what: What,
}

#[derive(clap::Subcommand)]
enum What {
    /// Rebuild the index from the pack files and snapshot records
    Index,
}

pub fn run(ctx: &Ctx, a: Args) -> Result<i32> {
    let What::Index = a.what;
    let (path, _) = ctx.repo_path()?;
    let key = ctx.master_key(&path)?;
    let s = Repository::rebuild_index(&path, key)
        .with_context(|| format!("rebuilding the index of {}", path.display()))?;
    if !ctx.quiet {
        println!(
            "index rebuilt: {} packs, {} blobs, {} snapshots",
            s.packs, s.blobs, s.snapshots
        );
    }
    if !s.skipped.is_empty() {
        super::print_list(
            "packs that could not be read (their data is not available)",
            &s.skipped,
        );
        anyhow::bail!(
            "{} packs could not be read; the index is incomplete",
            s.skipped.len()
        );
    }
    Ok(0)
}
