//! `snap init`

use anyhow::{Context, Result};
use snap::repo::{InitOptions, Repository};

use super::Ctx;

#[derive(clap::Args)]
pub struct Args {
    /// zstd level of new data (0 = none, 1 fastest .. 19 smallest)
    #[arg(long, default_value_t = snap::compress::DEFAULT_LEVEL, value_parser = clap::value_parser!(i32).range(0..=19))]
    compression: i32,
}

pub fn run(ctx: &Ctx, a: Args) -> Result<i32> {
    let (path, _) = ctx.repo_path()?;
    let opts = InitOptions {
        compression_level: a.compression,
        ..Default::default()
    };
    let repo = Repository::init(&path, &opts)
        .with_context(|| format!("creating repository {}", path.display()))?;
    if !ctx.quiet {
        println!(
            "created snap repository {} at {}",
            &repo.config().id[..8],
            path.display()
        );
    }
    Ok(0)
}
