//! `snap export`

use std::fmt::Write as _;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use snap::format::snapshot::{Snapshot, Source};
use snap::ops::export::{export_dir, export_zip, export_zip_file, keep_newest};
use snap::ops::ngw_part::NgwPart;
use snap::source::ngw::NgwConfig;

use super::{human, Ctx, EXIT_WARNINGS};

#[derive(clap::Args)]
pub struct Args {
    /// Snapshot: `latest` or an id prefix
    snapshot: String,
    #[command(flatten)]
    of: super::SnapshotOf,
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
    /// After writing, keep the destination's folder at the N newest exports: files
    /// whose names match the instance's backup.filename pattern, by the time in their
    /// names (the file just written is always kept; nothing else is touched)
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..), conflicts_with = "no_zip")]
    keep: Option<u32>,
    /// Print the result as JSON (a failure: {"error": {"message", "kind"}})
    #[arg(long)]
    json: bool,
}

/// The instance's config.ini: `--ngw`, else the one the snapshot was made from.
fn instance_config(a: &Args, snap: &Snapshot) -> Result<(PathBuf, NgwConfig)> {
    let config = match &a.ngw {
        Some(p) => p.clone(),
        None => snap
            .sources
            .iter()
            .find_map(|s| match s {
                Source::Ngw { config, .. } => Some(PathBuf::from(config)),
                _ => None,
            })
            .context("the snapshot has no NextGIS Web instance; give a destination")?,
    };
    let cfg = NgwConfig::load(&config)?;
    Ok((config, cfg))
}

/// `<backup.path>/<strftime(backup.filename)>` at the snapshot's time (UTC).
fn default_dest(a: &Args, snap: &Snapshot) -> Result<PathBuf> {
    let (config, cfg) = instance_config(a, snap)?;
    let Some(dir) = cfg.backup_path else {
        return Err(super::output::usage(format!(
            "{}: [core] backup.path is not set; give a destination file",
            config.display()
        )));
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
    let (id, snap) = a.of.find(&repo, &a.snapshot)?;
    let dest = match &a.dest {
        Some(d) => d.clone(),
        None => default_dest(&a, &snap)?,
    };
    if dest == Path::new("-") {
        if a.keep.is_some() {
            return Err(super::output::usage("--keep prunes a folder of exports; give a file or leave the destination to backup.path, not -"));
        }
        if a.no_zip {
            return Err(super::output::usage(
                "--no-zip writes a directory; give its path instead of -",
            ));
        }
        if std::io::stdout().is_terminal() {
            return Err(super::output::usage(
                "refusing to write a ZIP to a terminal: redirect standard output or give a file",
            ));
        }
        let stdout = std::io::stdout();
        let mut out = std::io::BufWriter::with_capacity(1 << 20, stdout.lock());
        export_zip(&repo, &snap, &mut out)?;
        std::io::Write::flush(&mut out)?;
        let external = external_note(&repo, &id, &snap)?;
        return Ok(if external.is_some() { EXIT_WARNINGS } else { 0 });
    }
    let stats = if a.no_zip {
        export_dir(&repo, &snap, &dest)
    } else {
        export_zip_file(&repo, &snap, &dest)
    }
    .with_context(|| format!("exporting snapshot {} to {}", id.short(), dest.display()))?;
    let removed = match a.keep {
        Some(n) => {
            let (_, cfg) = instance_config(&a, &snap)?;
            let dir = dest
                .parent()
                .filter(|p| !p.as_os_str().is_empty())
                .unwrap_or(Path::new("."));
            keep_newest(dir, &cfg.backup_filename, n as usize, &dest).with_context(|| {
                format!("--keep {n}: pruning older exports in {}", dir.display())
            })?
        }
        None => Vec::new(),
    };
    let external = external_note(&repo, &id, &snap)?;
    if a.json {
        ctx.print_json(&serde_json::json!({
            "snapshot": id, "dest": dest, "files": stats.files, "bytes": stats.bytes,
            "removed": removed, "external_not_exported": external,
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
        for r in &removed {
            outln!("removed older export {}", r.display());
        }
    }
    Ok(if external.is_some() { EXIT_WARNINGS } else { 0 })
}

/// When the snapshot holds objects of external raster storages, which an
/// `.ngwbackup` cannot carry (NGW's own backups keep only their rows), or was made
/// without some of them (`--ngw-skip-external`): says so on stderr, naming where they
/// are, and returns the note (the export then exits 3).
fn external_note(
    repo: &snap::repo::Repository,
    id: &snap::format::id::SnapshotId,
    snap: &Snapshot,
) -> Result<Option<String>> {
    let incomplete = super::warn_skipped_external(id, snap, "");
    let objects = NgwPart::open(repo, snap)?.rasters()?;
    if objects.is_empty() {
        return Ok(incomplete.then(|| "incomplete snapshot".to_string()));
    }
    let mut places: Vec<String> = objects
        .iter()
        .map(|(o, _)| format!("{} bucket {} ({})", o.endpoint, o.bucket, o.name))
        .collect();
    places.dedup();
    let note = format!(
        "the archive does not carry the {} raster object(s) the instance keeps in external storages ({}): NGW's backups hold only their rows. They are in snapshot {} under ngw/raster_layer_storage/ (`snap restore {} --target DIR --include ngw/raster_layer_storage`, or `snap restore {} --ngw` puts them back)",
        objects.len(),
        places.join("; "),
        id.short(),
        id.short(),
        id.short()
    );
    eprintln!("snap: warning: {note}");
    Ok(Some(note))
}
