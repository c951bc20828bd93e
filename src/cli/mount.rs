//! `snap mount`

use std::path::PathBuf;

use anyhow::Result;
use snap::ops::mount::{mount, MountOptions};

use super::Ctx;

#[derive(clap::Args)]
pub struct Args {
    /// An existing directory to mount on. The mount shows `snapshots/<time>_<id>/`
    /// (local start time with its offset) with a `latest` link, and `hosts/<host>/` and `tags/<tag>/`
    /// of links to them; new snapshots appear within seconds. It lasts until Ctrl-C,
    /// SIGTERM or `fusermount3 -u MOUNTPOINT`
    mountpoint: PathBuf,
    /// Give the repository lock up after the mount has been unused (no file open, no
    /// request) for DURATION (30s, 5m, 1h), so that a prune can run; the next request
    /// takes it again, waiting for a running prune to end. While the lock is held, a
    /// prune fails (naming the mount), or waits with `--retry-lock`
    #[arg(long, value_name = "DURATION", default_value = "60s", value_parser = super::parse_wait)]
    unlock_after: std::time::Duration,
    /// Memory for decoded file contents (100M, 1G): more keeps more of what was read
    /// for readers that come back to it
    #[arg(long, value_name = "SIZE", default_value = "16M", value_parser = super::backup::parse_size)]
    cache_size: u64,
}

pub fn run(ctx: &Ctx, a: Args) -> Result<i32> {
    let repo = ctx.open(false)?;
    let location = repo.location();
    let shown = a.mountpoint.display();
    let opts = MountOptions {
        idle: a.unlock_after,
        cache_bytes: a.cache_size,
        ..MountOptions::default()
    };
    mount(repo, &a.mountpoint, &opts, &|| {
        if !ctx.quiet {
            eprintln!(
                "snap: {location} mounted at {shown} (read-only); Ctrl-C or `fusermount3 -u {shown}` unmounts"
            );
        }
    })?;
    if !ctx.quiet {
        eprintln!("snap: unmounted {shown}");
    }
    Ok(0)
}
