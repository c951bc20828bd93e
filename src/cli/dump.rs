//! `snap dump`

use std::io::{IsTerminal, Write};
use std::path::PathBuf;

use anyhow::{Context, Result};
use snap::ops::dump::{dump, Archive};

use super::{human, Ctx};

#[derive(clap::Args)]
pub struct Args {
    /// Snapshot: `latest` or an id prefix
    snapshot: String,
    #[command(flatten)]
    of: super::SnapshotOf,
    /// Path in the snapshot: a file is written as it is (unless --archive is given), a
    /// directory (or `/`, the whole snapshot), a symlink or a special file as an archive
    #[arg(value_parser = super::snapshot_path_arg())]
    path: String,
    /// Archive format [default: tar, and a file as it is]
    #[arg(long, value_enum)]
    archive: Option<ArchiveArg>,
    /// Write to this new file (complete or not at all) instead of standard output
    #[arg(short, long, value_name = "FILE")]
    output: Option<PathBuf>,
}

/// `--archive`.
#[derive(Clone, Copy, Debug, clap::ValueEnum)]
enum ArchiveArg {
    /// POSIX tar: modes, owners, times, symlinks, hard links, FIFOs, devices
    Tar,
    /// ZIP (ZIP64 where needed): modes, times, symlinks; hard links as copies
    Zip,
}

pub fn run(ctx: &Ctx, a: Args) -> Result<i32> {
    let repo = ctx.open(false)?;
    let (id, snap) = a.of.find(&repo, &a.snapshot)?;
    let archive = a.archive.map(|a| match a {
        ArchiveArg::Tar => Archive::Tar,
        ArchiveArg::Zip => Archive::Zip,
    });
    let Some(dest) = &a.output else {
        if std::io::stdout().is_terminal() {
            return Err(super::output::usage(format!(
                "refusing to write {} of snapshot {} to a terminal: redirect standard output or give --output FILE",
                a.path,
                id.short()
            )));
        }
        let stdout = std::io::stdout();
        let mut out = std::io::BufWriter::with_capacity(1 << 20, stdout.lock());
        dump(&repo, &snap, &a.path, archive, &mut out)?;
        out.flush()?;
        return Ok(0);
    };
    let stats =
        snap::ops::export::write_new_file(dest, |w| dump(&repo, &snap, &a.path, archive, w))
            .with_context(|| {
                format!(
                    "dumping {} of snapshot {} to {}",
                    a.path,
                    id.short(),
                    dest.display()
                )
            })?;
    if !ctx.quiet {
        outln!(
            "{} ({} files, {})",
            dest.display(),
            stats.files,
            human(stats.bytes)
        );
    }
    Ok(0)
}
