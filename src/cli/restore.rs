//! `snap restore`

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Result};
use snap::id::Id;
use snap::repo::Repository;
use snap::restore::ngw::{restore_instance, Migrations};
use snap::restore::{restore, RestoreOptions};
use snap::snapshot::Snapshot;
use snap::source::ngw::NgwConfig;

use super::{human, ngw_config, print_list, progress_for, Bar, Ctx};

#[derive(clap::Args)]
pub struct Args {
    /// Snapshot: `latest` or an id prefix
    snapshot: String,
    /// Directory to restore into (created if absent)
    #[arg(long, short, required_unless_present = "ngw")]
    target: Option<PathBuf>,
    /// Restore the snapshot's NextGIS Web instance into the instance of this
    /// config.ini: its database and file storage [default: $NEXTGISWEB_CONFIG]
    #[arg(long, value_name = "CONFIG", num_args = 0..=1, conflicts_with_all = ["target", "include"])]
    ngw: Option<Option<PathBuf>>,
    /// With --ngw: drop the tables the database already has
    #[arg(long, requires = "ngw")]
    yes: bool,
    /// Restore only this path of the snapshot (repeatable)
    #[arg(long, value_name = "PATH")]
    include: Vec<String>,
    /// Print the result as JSON
    #[arg(long)]
    json: bool,
}

pub fn run(ctx: &Ctx, a: Args) -> Result<i32> {
    let repo = ctx.open(false)?;
    let (id, snap) = repo.find_snapshot(&a.snapshot)?;
    if let Some(config) = ngw_config(a.ngw.clone())? {
        return run_ngw(ctx, &repo, &id, &snap, &config, &a);
    }
    let started = Instant::now();
    let target = a.target.expect("clap requires --target without --ngw");
    let bar = Bar::new(ctx, "restore");
    let opts = RestoreOptions {
        target: target.clone(),
        include: a.include,
    };
    let out = restore(&repo, &snap, &opts, progress_for(&bar))?;
    drop(bar);
    print_list("not restored", &out.warnings);
    if !out.errors.is_empty() {
        let errs: Vec<String> = out.errors.iter().map(|e| e.to_string()).collect();
        print_list("FAILED to restore", &errs);
        bail!(
            "{} entries of snapshot {} could not be restored (listed above); the others are in {}",
            out.errors.len(),
            id.short(),
            target.display()
        );
    }
    if a.json {
        let v = serde_json::json!({
            "snapshot": id,
            "target": target,
            "files": out.files,
            "dirs": out.dirs,
            "others": out.others,
            "bytes": out.bytes,
            "warnings": out.warnings,
            "seconds": started.elapsed().as_secs_f64(),
        });
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else if !ctx.quiet {
        println!(
            "restored snapshot {} to {}: {} files, {} dirs, {} in {:.1} s",
            id.short(),
            target.display(),
            out.files,
            out.dirs,
            human(out.bytes),
            started.elapsed().as_secs_f64()
        );
    }
    Ok(0)
}

fn run_ngw(
    ctx: &Ctx,
    repo: &Repository,
    id: &Id,
    snap: &Snapshot,
    config: &Path,
    a: &Args,
) -> Result<i32> {
    let started = Instant::now();
    let cfg = NgwConfig::load(config)?;
    let bar = Bar::new(ctx, "restore");
    let out = restore_instance(repo, snap, &cfg, a.yes, progress_for(&bar))?;
    drop(bar);
    let hint = match &out.migrations {
        Migrations::Current => None,
        Migrations::Older(lacking) => Some(format!(
            "the snapshot comes from an older NextGIS Web ({} migration(s) of this instance are missing, e.g. {}:{}): run `nextgisweb migration upgrade`, then `nextgisweb migration upgrade --no-dry-run`",
            lacking.len(),
            lacking[0].0,
            lacking[0].1
        )),
        Migrations::Unknown => Some(
            "if this instance runs a newer NextGIS Web than the snapshot was made with, run `nextgisweb migration upgrade`, then `nextgisweb migration upgrade --no-dry-run`".to_string(),
        ),
    };
    if !out.errors.is_empty() {
        let errs: Vec<String> = out.errors.iter().map(|e| e.to_string()).collect();
        print_list("FAILED to restore", &errs);
        bail!(
            "{} file(s) of snapshot {} could not be written into the file storage {} (listed above); the database is restored",
            out.errors.len(),
            id.short(),
            cfg.file_storage.display()
        );
    }
    if a.json {
        let v = serde_json::json!({
            "snapshot": id,
            "config": config,
            "tables_dropped": out.tables_dropped,
            "dump_bytes": out.dump_bytes,
            "files_written": out.files_written,
            "bytes_written": out.bytes_written,
            "files_unchanged": out.files_unchanged,
            "fonts_removed": out.fonts_removed,
            "next": hint,
            "seconds": started.elapsed().as_secs_f64(),
        });
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(0);
    }
    if !ctx.quiet {
        println!(
            "restored snapshot {} into the NextGIS Web instance of {}: database {} ({} of dump, {} old table(s) dropped), {} file(s) written ({}), {} already in place, in {:.1} s",
            id.short(),
            config.display(),
            cfg.db.name,
            human(out.dump_bytes),
            out.tables_dropped,
            out.files_written,
            human(out.bytes_written),
            out.files_unchanged,
            started.elapsed().as_secs_f64()
        );
    }
    if let Some(h) = hint {
        eprintln!("snap: next: {h}");
    }
    Ok(0)
}
