//! `snap export`

use std::fmt::Write as _;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use snap::format::snapshot::{Snapshot, Source};
use snap::ops::export::{export_dir, export_zip, export_zip_file};
use snap::source::ngw::NgwConfig;

use super::{human, Ctx};

#[derive(clap::Args)]
pub struct Args {
    /// Snapshot: `latest` or an id prefix
    snapshot: String,
    /// File to write, `-` for standard output [default: <backup.path>/<backup.filename>
    /// from the instance's config.ini]
    dest: Option<PathBuf>,
    /// Write the unpacked directory instead of a ZIP (as `nextgisweb backup --no-zip`)
    #[arg(long)]
    no_zip: bool,
    /// The instance's config.ini, for the default destination [default: the one the
    /// snapshot was made from]
    #[arg(long, value_name = "CONFIG", env = "NEXTGISWEB_CONFIG")]
    ngw: Option<PathBuf>,
    /// Print the result as JSON (a failure: {"error": {"message", "kind"}})
    #[arg(long)]
    json: bool,
}

/// `<backup.path>/<strftime(backup.filename)>` at the snapshot's time (UTC).
fn default_dest(a: &Args, snap: &Snapshot) -> Result<PathBuf> {
    let config = match &a.ngw {
        Some(p) => p.clone(),
        None => snap
            .sources
            .iter()
            .find_map(|s| match s {
                Source::Ngw { config } => Some(PathBuf::from(config)),
                _ => None,
            })
            .context("the snapshot has no NextGIS Web instance; give a destination")?,
    };
    let cfg = NgwConfig::load(&config)?;
    let Some(dir) = cfg.backup_path else {
        bail!(
            "{}: [core] backup.path is not set; give a destination file",
            config.display()
        );
    };
    let mut name = String::new();
    write!(name, "{}", snap.time.format(&cfg.backup_filename))
        .ok()
        .filter(|_| !name.is_empty() && !name.contains('/'))
        .with_context(|| {
            format!(
                "{}: backup.filename {:?} is not a usable strftime pattern",
                config.display(),
                cfg.backup_filename
            )
        })?;
    Ok(dir.join(name))
}

pub fn run(ctx: &Ctx, a: Args) -> Result<i32> {
    let repo = ctx.open(false)?;
    // Shared: prune (exclusive) must not delete packs this reads.
    let _lock = repo.lock(false, "export")?;
    let (id, snap) = repo.find_snapshot(&a.snapshot)?;
    let dest = match &a.dest {
        Some(d) => d.clone(),
        None => default_dest(&a, &snap)?,
    };
    if dest == Path::new("-") {
        if a.no_zip {
            bail!("--no-zip writes a directory; give its path instead of -");
        }
        if std::io::stdout().is_terminal() {
            bail!("refusing to write a ZIP to a terminal: redirect standard output or give a file");
        }
        let stdout = std::io::stdout();
        let mut out = std::io::BufWriter::with_capacity(1 << 20, stdout.lock());
        export_zip(&repo, &snap, &mut out)?;
        return Ok(0);
    }
    let stats = if a.no_zip {
        export_dir(&repo, &snap, &dest)
    } else {
        export_zip_file(&repo, &snap, &dest)
    }
    .with_context(|| format!("exporting snapshot {} to {}", id.short(), dest.display()))?;
    if a.json {
        ctx.print_json(&serde_json::json!({
            "snapshot": id, "dest": dest, "files": stats.files, "bytes": stats.bytes,
        }))?;
    } else if ctx.quiet {
        outln!("{}", dest.display());
    } else {
        outln!(
            "{} ({} files, {})",
            dest.display(),
            stats.files,
            human(stats.bytes)
        );
    }
    Ok(0)
}
