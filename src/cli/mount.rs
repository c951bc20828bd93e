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
    /// SIGTERM or `fusermount3 -u MOUNTPOINT`, and holds a shared lock meanwhile, so
    /// prune waits for it (fails, naming the mount)
    mountpoint: PathBuf,
}

pub fn run(ctx: &Ctx, a: Args) -> Result<i32> {
    let repo = ctx.open(false)?;
    let location = repo.location();
    let shown = a.mountpoint.display();
    mount(repo, &a.mountpoint, &MountOptions::default(), &|| {
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
