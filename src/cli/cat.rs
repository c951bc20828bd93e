//! `snap cat`

use std::io::Write;

use anyhow::Result;
use snap::format::tree::NodeKind;
use snap::ops::restore::snapshot_path;

use super::Ctx;

#[derive(clap::Args)]
pub struct Args {
    /// Snapshot: `latest` or an id prefix
    snapshot: String,
    #[command(flatten)]
    of: super::SnapshotOf,
    /// Path of a file in the snapshot (e.g. db/ngw.dump)
    #[arg(value_parser = super::snapshot_path_arg())]
    path: String,
}

pub fn run(ctx: &Ctx, a: Args) -> Result<i32> {
    let repo = ctx.open(false)?;
    // Shared: prune (exclusive) must not delete packs this reads.
    let _lock = repo.lock(false, "cat")?;
    let (id, snap) = a.of.find(&repo, &a.snapshot)?;
    let comps = snapshot_path(&a.path)?;
    let node = repo.find_node(&snap.tree, &comps)?;
    let Some(NodeKind::File(content)) = node.map(|n| n.kind) else {
        return Err(super::output::not_found(format!(
            "{} is not a file in snapshot {} (see `snap ls {}`)",
            a.path,
            id.short(),
            id.short()
        )));
    };
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    repo.write_content(&content, &mut out)?;
    out.flush()?;
    Ok(0)
}
