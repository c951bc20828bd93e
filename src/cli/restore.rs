//! `snap restore`

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Result};
use snap::error::{Error, Refusal, Usage};
use snap::format::id::SnapshotId;
use snap::format::snapshot::Snapshot;
use snap::ops::restore::db::{restore_pg, restore_pg_all, restore_pipe};
use snap::ops::restore::ngw::{restore_instance, Migrations};
use snap::ops::restore::rasters::Placement;
use snap::ops::restore::{plan_restore, Overwrite, RestoreOptions};
use snap::repo::Repository;
use snap::source::ngw::NgwConfig;
use snap::source::pg::Dsn;
use snap::source::raster_storage::StorageMap;

use snap::progress::Progress as _;

use super::{count, human, ngw_config, print_list, progress_for, Bar, Ctx};

#[derive(clap::Args)]
pub struct Args {
    /// Snapshot: `latest` or an id prefix
    #[arg(required_unless_present = "pg_base")]
    snapshot: Option<String>,
    #[command(flatten)]
    of: super::SnapshotOf,
    /// With --pg or --pg-all: the dump of the snapshot to use [default: its only dump
    /// of that kind]; with --pipe: the file to stream (required)
    #[arg(value_name = "PATH", conflicts_with_all = ["target", "ngw"], value_parser = super::snapshot_path_arg())]
    path: Option<String>,
    /// Directory to restore into (created if absent)
    /// (with --pg-base: `--target immediate` ends recovery as soon as the backup is
    /// consistent)
    #[arg(long, short, required_unless_present_any = ["ngw", "pg", "pg_all", "pipe", "pg_base"])]
    target: Option<PathBuf>,
    /// Restore this snapshot's PostgreSQL base backup (backup --pg-base) into the new
    /// data directory --pg-data, set up to recover from the WAL archive: to the end of
    /// it, or to --target-time, --target-lsn or --target immediate
    #[arg(long, value_name = "SNAPSHOT", requires = "pg_data", conflicts_with_all = ["snapshot", "ngw", "pg", "pg_all", "pipe", "include", "exclude", "delete", "verify", "dry_run"])]
    pg_base: Option<String>,
    /// With --pg-base: the data directory to create (absent or empty); when run as
    /// root, it is given to the owner of its parent directory
    #[arg(long, value_name = "DIR", requires = "pg_base")]
    pg_data: Option<PathBuf>,
    /// With --pg-base: recover up to this time, e.g. '2026-12-03 14:05:00+00'
    #[arg(long, value_name = "TIME", requires = "pg_base", conflicts_with_all = ["target_lsn", "target"])]
    target_time: Option<String>,
    /// With --pg-base: recover up to the restore point of this name, made with
    /// SELECT pg_create_restore_point('NAME')
    #[arg(long, value_name = "NAME", requires = "pg_base", conflicts_with_all = ["target_time", "target_lsn", "target"])]
    target_name: Option<String>,
    /// With --pg-base: follow this timeline (a number) instead of the newest, to reach
    /// a point on a branch a later promotion left
    #[arg(long, value_name = "TLI", requires = "pg_base")]
    target_timeline: Option<u32>,
    /// With --pg-base: recover up to this WAL location, e.g. 0/3000060
    #[arg(
        long,
        value_name = "LSN",
        requires = "pg_base",
        conflicts_with = "target"
    )]
    target_lsn: Option<String>,
    /// With --pg-base and a target: what the server does there (pause lets you look
    /// before `SELECT pg_wal_replay_resume()` promotes it)
    #[arg(long, value_enum, default_value_t = ActionArg::Pause, requires = "pg_base")]
    target_action: ActionArg,
    /// With --pg-base: start a server on the restored directory (socket in a scratch
    /// directory, no TCP, archiving off) and wait until recovery reaches the target
    #[arg(long, requires = "pg_base")]
    start: bool,
    /// Recreate a --pg dump in this PostgreSQL database (created if absent):
    /// pg_restore, streamed from the repository
    #[arg(long, value_name = "DSN", conflicts_with_all = ["target", "ngw", "pg_all", "pipe"])]
    pg: Option<String>,
    /// Replay a --pg-all dump into this PostgreSQL cluster with psql (e.g. a new major
    /// version)
    #[arg(long, value_name = "DSN", conflicts_with_all = ["target", "ngw", "pipe"])]
    pg_all: Option<String>,
    /// Stream the file PATH into this shell command's standard input
    /// (e.g. 'mongorestore --archive')
    #[arg(long, value_name = "CMD", requires = "path", conflicts_with_all = ["target", "ngw"])]
    pipe: Option<String>,
    /// Restore the snapshot's NextGIS Web instance into the instance of this
    /// config.ini: its database and file storage [default: $NEXTGISWEB_CONFIG]
    #[arg(long, value_name = "CONFIG", num_args = 0..=1, conflicts_with_all = ["target", "include"])]
    ngw: Option<Option<PathBuf>>,
    /// With --ngw: put the rasters of external storage ID (NGW 5.4+) into another
    /// endpoint, bucket and prefix, and point the restored storage there; its keys
    /// stay the row's (repeatable; ID=http(s)://HOST[:PORT]/BUCKET[/PREFIX])
    #[arg(long, value_name = "ID=URL", requires = "ngw", value_parser = StorageMap::parse)]
    ngw_storage: Vec<StorageMap>,
    /// With --ngw: leave the external raster storages alone (restore the database and
    /// the file storage only)
    #[arg(long, requires = "ngw", conflicts_with = "ngw_storage")]
    ngw_skip_external: bool,
    /// With --ngw: the S3 region of the instance's external raster storages
    #[arg(long, env = "SNAP_NGW_S3_REGION", default_value = snap::source::raster_storage::GDAL_REGION)]
    ngw_s3_region: String,
    /// With --ngw, --pg or --pg-all: restore over what the database already has;
    /// with --delete: allow your home directory as target
    #[arg(long)]
    yes: bool,
    /// Restore only this path of the snapshot (repeatable; absolute as backed up,
    /// `snap ls SNAPSHOT` shows them)
    #[arg(long, value_name = "PATH", value_parser = super::snapshot_path_arg())]
    include: Vec<String>,
    /// Leave out entries matching this glob (repeatable; with a / it matches the path
    /// inside the snapshot, else the name)
    #[arg(long, value_name = "GLOB", conflicts_with_all = ["ngw", "pg", "pg_all", "pipe"], value_parser = super::snapshot_path_arg())]
    exclude: Vec<String>,
    /// What to do with an entry already in the target: replace it (always), unless it
    /// holds the snapshot's content already (if-changed: same size and mtime, or same
    /// chunks), only when it is older than the snapshot's (if-newer), or keep it (never)
    #[arg(long, value_enum, default_value_t = OverwriteArg::Always, conflicts_with_all = ["ngw", "pg", "pg_all", "pipe"])]
    overwrite: OverwriteArg,
    /// Make the target match the snapshot: remove what the restored directories hold
    /// and the snapshot does not (entries matching --exclude are kept; symlinks are
    /// removed as links, never followed); refused for / and, without --yes, for $HOME
    #[arg(long, conflicts_with_all = ["ngw", "pg", "pg_all", "pipe"])]
    delete: bool,
    /// After restoring, read every restored file back and check each chunk against the
    /// snapshot; a file that differs is an error naming it
    #[arg(long, conflicts_with_all = ["ngw", "pg", "pg_all", "pipe", "dry_run"])]
    verify: bool,
    /// Return without waiting for the restored files to reach the disk (by default the
    /// restore ends once they are there, synced as it goes: a power cut after it loses
    /// nothing); for a scratch copy that is read at once and thrown away
    #[arg(long, conflicts_with_all = ["ngw", "pg", "pg_all", "pipe", "dry_run"])]
    no_sync: bool,
    /// Show what would be written (files, directories, bytes), write nothing
    #[arg(long, short = 'n', conflicts_with_all = ["ngw", "pg", "pg_all", "pipe"])]
    dry_run: bool,
    /// Print the result as JSON
    #[arg(long)]
    json: bool,
}

/// `--target-action` values, as PostgreSQL's `recovery_target_action`.
#[derive(Clone, Copy, Debug, clap::ValueEnum)]
enum ActionArg {
    Pause,
    Promote,
    Shutdown,
}

/// `--overwrite` values, as restic spells them.
#[derive(Clone, Copy, Debug, clap::ValueEnum)]
enum OverwriteArg {
    Always,
    IfChanged,
    IfNewer,
    Never,
}

impl From<OverwriteArg> for Overwrite {
    fn from(o: OverwriteArg) -> Overwrite {
        match o {
            OverwriteArg::Always => Overwrite::Always,
            OverwriteArg::IfChanged => Overwrite::IfChanged,
            OverwriteArg::IfNewer => Overwrite::IfNewer,
            OverwriteArg::Never => Overwrite::Never,
        }
    }
}

/// Refuses `--delete` into the home directory without `--yes` (the library refuses
/// the root itself).
fn check_delete_target(target: &Path, yes: bool) -> Result<()> {
    let home = std::env::var_os("HOME").and_then(|h| std::fs::canonicalize(h).ok());
    if !yes && home.is_some() && std::fs::canonicalize(target).ok() == home {
        return Err(Error::from(Refusal::DeleteTarget {
            target: target.to_path_buf(),
            why: "it is your home directory; add --yes if it is meant".into(),
        })
        .into());
    }
    Ok(())
}

pub fn run(ctx: &Ctx, a: Args) -> Result<i32> {
    let repo = ctx.open(false)?;
    // Shared: prune (exclusive) must not delete packs this reads.
    let _lock = repo.lock(false, "restore")?;
    let spec = a.snapshot.as_deref().or(a.pg_base.as_deref());
    let (id, snap) = a.of.find(&repo, spec.expect("clap requires a snapshot"))?;
    if a.pg_base.is_some() {
        return run_pg_base(ctx, &repo, &id, &snap, a);
    }
    if let Some(config) = ngw_config(a.ngw.clone())? {
        return run_ngw(ctx, &repo, &id, &snap, &config, &a);
    }
    if a.pg.is_some() || a.pg_all.is_some() || a.pipe.is_some() {
        return run_db(ctx, &repo, &id, &snap, &a);
    }
    let started = Instant::now();
    let target = a.target.expect("clap requires --target without --ngw");
    if a.delete {
        check_delete_target(&target, a.yes)?;
    }
    let opts = RestoreOptions {
        target: target.clone(),
        include: a.include,
        exclude: a.exclude,
        overwrite: a.overwrite.into(),
        delete: a.delete,
        verify: a.verify,
        no_sync: a.no_sync,
    };
    let plan = plan_restore(&repo, &snap, &opts).map_err(|e| match e {
        Error::Usage(Usage::IncludeNotFound { .. } | Usage::SnapshotPath { .. }) => {
            super::output::usage(format!(
                "{e}; `snap ls {}` shows the paths inside",
                id.short()
            ))
        }
        e => e.into(),
    })?;
    if a.dry_run {
        let tally = plan.tally()?;
        if a.json {
            let v = serde_json::json!({
                "snapshot": id,
                "target": target,
                "files": tally.files,
                "dirs": tally.dirs,
                "others": tally.others,
                "bytes": tally.bytes,
                "deletes": tally.deletes,
                "blocked": tally.blocked,
                "dry_run": true,
            });
            outln!("{}", serde_json::to_string_pretty(&v)?);
        } else {
            let deletes = if a.delete {
                format!(", would delete {}", count(tally.deletes, "path"))
            } else {
                String::new()
            };
            outln!(
                "would restore snapshot {} to {}: {} files, {} dirs, {} other entries, {}{deletes}; dry run, nothing written",
                id.short(),
                target.display(),
                tally.files,
                tally.dirs,
                tally.others,
                human(tally.bytes)
            );
        }
        if tally.blocked > 0 {
            eprintln!(
                "snap: the restore would fail at {} of the target in the way (a directory where the snapshot has a file, or the reverse): remove them, or restore with --delete",
                match tally.blocked {
                    1 => "1 entry".to_string(),
                    n => format!("{n} entries"),
                }
            );
            return Ok(1);
        }
        return Ok(0);
    }
    // Only here: the other restores hand their streams to other programs, which a
    // signal stops at once (see `exit_on_signals`).
    super::stop_cleanly_on_signals()?;
    let bar = Bar::new(ctx, "restore", a.json);
    if let (Some(b), true) = (&bar, opts.include.is_empty()) {
        // The whole snapshot: its summary tells the total without a walk.
        b.total(
            Some(snap.summary.bytes_total),
            Some(snap.summary.files),
            "file",
        );
    }
    let out = plan.execute(progress_for(bar.as_ref()))?;
    drop(bar);
    print_list("not restored", &out.warnings);
    if !out.mismatches.is_empty() {
        let errs: Vec<String> = out.mismatches.iter().map(ToString::to_string).collect();
        print_list("FAILED verification", &errs);
    }
    if !out.errors.is_empty() {
        let errs: Vec<String> = out
            .errors
            .iter()
            .map(std::string::ToString::to_string)
            .collect();
        print_list("FAILED to restore", &errs);
        bail!(
            "{} of snapshot {} could not be restored (listed above); {} restored into {}",
            count(out.errors.len(), "path"),
            id.short(),
            count(out.files, "file"),
            target.display()
        );
    }
    if !out.mismatches.is_empty() {
        bail!(
            "verification failed for {} of snapshot {} (listed above): read back from {}, they do not hold the snapshot's content",
            count(out.mismatches.len(), "restored file"),
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
            "replaced": out.replaced,
            "skipped": out.skipped,
            "deleted": out.deleted,
            "verified": a.verify.then_some(out.verified),
            "warnings": out.warnings,
            "seconds": started.elapsed().as_secs_f64(),
        });
        outln!("{}", serde_json::to_string_pretty(&v)?);
    } else if !ctx.quiet {
        let mut extra = Vec::new();
        if out.replaced > 0 {
            extra.push(format!("{} replaced", out.replaced));
        }
        if out.skipped > 0 {
            extra.push(format!("{} already there left in place", out.skipped));
        }
        if a.delete {
            extra.push(format!("{} deleted", count(out.deleted, "path")));
        }
        if a.verify {
            extra.push(format!("{} verified", count(out.verified, "file")));
        }
        let extra: String = extra.iter().map(|e| format!(", {e}")).collect();
        outln!(
            "restored snapshot {} to {}: {} files, {} dirs, {}{extra} in {:.1} s",
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
    id: &SnapshotId,
    snap: &Snapshot,
    config: &Path,
    a: &Args,
) -> Result<i32> {
    super::exit_on_signals(
        a.json,
        "the restore stopped; the instance is partly restored: run the restore again",
    )?;
    let started = Instant::now();
    let cfg = NgwConfig::load(config)?;
    let bar = Bar::new(ctx, "restore", a.json);
    let rasters = Placement {
        region: Some(a.ngw_s3_region.clone()),
        map: a.ngw_storage.clone(),
    };
    let out = restore_instance(
        repo,
        snap,
        &cfg,
        a.yes,
        (!a.ngw_skip_external).then_some(&rasters),
        progress_for(bar.as_ref()),
    )?;
    drop(bar);
    super::warn_skipped_external(id, snap, ": they were not restored");
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
        let errs: Vec<String> = out
            .errors
            .iter()
            .map(std::string::ToString::to_string)
            .collect();
        print_list("FAILED to restore", &errs);
        bail!(
            "{} file(s) of snapshot {} could not be written into the file storage {} or the external raster storages (listed above); the database is restored",
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
            "objects_written": out.objects_written,
            "objects_unchanged": out.objects_unchanged,
            "external_skipped": a.ngw_skip_external,
            "fonts_removed": out.fonts_removed,
            "next": hint,
            "seconds": started.elapsed().as_secs_f64(),
        });
        outln!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(0);
    }
    if !ctx.quiet {
        outln!(
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
        if out.objects_written + out.objects_unchanged > 0 {
            outln!(
                "external raster storages: {} object(s) uploaded, {} already in place",
                out.objects_written,
                out.objects_unchanged
            );
        }
        if a.ngw_skip_external {
            outln!("external raster storages left alone (--ngw-skip-external)");
        }
    }
    if let Some(h) = hint {
        outln!("next: {h}");
    }
    Ok(0)
}

fn run_db(ctx: &Ctx, repo: &Repository, id: &SnapshotId, snap: &Snapshot, a: &Args) -> Result<i32> {
    super::exit_on_signals(
        a.json,
        "the restore stopped; what it was writing into is partly restored: run the restore again",
    )?;
    let started = Instant::now();
    let bar = Bar::new(ctx, "restore", a.json);
    let progress = progress_for(bar.as_ref());
    let from = a.path.as_deref();
    let (what, bytes) = if let Some(cmd) = &a.pipe {
        let path = from.expect("clap requires PATH with --pipe");
        let n = restore_pipe(repo, snap, path, cmd, progress)?;
        (format!("{path} into `{cmd}`"), n)
    } else if let Some(dsn) = &a.pg {
        let dsn = Dsn::parse(dsn)?;
        let out = restore_pg(repo, snap, from, &dsn, a.yes, progress)?;
        let db = dsn.dbname()?;
        let created = if out.created { " (created)" } else { "" };
        (
            format!("{} into database {db}{created}", out.from),
            out.bytes,
        )
    } else {
        let dsn = Dsn::parse(a.pg_all.as_deref().expect("one of the three"))?;
        let out = restore_pg_all(repo, snap, from, &dsn, a.yes, progress)?;
        let dropped = if out.dropped.is_empty() {
            String::new()
        } else {
            format!(" (dropped and recreated: {})", out.dropped.join(", "))
        };
        (format!("{} into the cluster{dropped}", out.from), out.bytes)
    };
    drop(bar);
    if a.json {
        let v = serde_json::json!({
            "snapshot": id,
            "restored": what,
            "bytes": bytes,
            "seconds": started.elapsed().as_secs_f64(),
        });
        outln!("{}", serde_json::to_string_pretty(&v)?);
    } else if !ctx.quiet {
        outln!(
            "restored {what} from snapshot {}: {} in {:.1} s",
            id.short(),
            human(bytes),
            started.elapsed().as_secs_f64()
        );
    }
    Ok(0)
}

/// `restore --pg-base SNAPSHOT --pg-data DIR`.
fn run_pg_base(
    ctx: &Ctx,
    repo: &Repository,
    id: &SnapshotId,
    snap: &Snapshot,
    a: Args,
) -> Result<i32> {
    use snap::ops::restore::pg_base::{restore_pg_base, Action, PgBaseRestore, Target};
    use snap::ops::restore::pg_start::Recovered;
    super::exit_on_signals(
        a.json,
        "the restore stopped; the data directory is incomplete: remove it and run the restore again",
    )?;
    let data = a.pg_data.expect("clap requires --pg-data");
    let target = match (&a.target, a.target_time, a.target_lsn) {
        (Some(t), _, _) if t.as_os_str() == "immediate" => Target::Immediate,
        (Some(t), _, _) => return Err(super::output::usage(format!(
            "with --pg-base, --target takes only `immediate` (got {}); the data directory is --pg-data",
            t.display()
        ))),
        (None, Some(t), _) => Target::Time(t),
        (None, None, Some(l)) => Target::Lsn(l),
        (None, None, None) => a.target_name.map_or(Target::Latest, Target::Name),
    };
    let action = match a.target_action {
        ActionArg::Pause => Action::Pause,
        ActionArg::Promote => Action::Promote,
        ActionArg::Shutdown => Action::Shutdown,
    };
    let (location, _) = ctx.repo_location()?;
    let location = match std::fs::canonicalize(&location) {
        Ok(p) if repo.store().local_root().is_some() => p.display().to_string(),
        _ => location,
    };
    let exe = std::env::current_exe()?;
    let quote = snap::source::command::shell_quote;
    let carried = carried_env(&location, repo.key().is_some());
    let key_env: String = carried
        .iter()
        .map(|(var, value)| format!("{var}={} ", quote(value)))
        .collect();
    let restore_command = format!(
        "{key_env}{} --repo {} wal fetch %f %p",
        quote(&exe.display().to_string()),
        quote(&location)
    );
    let opts = PgBaseRestore {
        data: data.clone(),
        target,
        action,
        timeline: a.target_timeline,
        restore_command,
        start: a.start,
    };
    let bar = Bar::new(ctx, "restore", a.json);
    let out = restore_pg_base(repo, id, snap, &opts, progress_for(bar.as_ref()))?;
    drop(bar);
    for w in &out.warnings {
        eprintln!("snap: warning: {w}");
    }
    let started = out.started.as_ref().map(|s| {
        let state = match s.state {
            Recovered::Paused => "paused",
            Recovered::Promoted => "promoted",
            Recovered::ShutDown => "shut down",
        };
        (s, state)
    });
    if a.json {
        let v = serde_json::json!({
            "snapshot": id,
            "pg_data": data,
            "files": out.restore.files,
            "bytes": out.restore.bytes,
            "settings": out.settings,
            "warnings": out.warnings,
            "socket_dir": started.map(|(s, _)| &s.socket_dir),
            "recovery": started.map(|(_, state)| state),
        });
        outln!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(0);
    }
    outln!(
        "restored base backup {} into {}: {} files, {}",
        id.short(),
        data.display(),
        out.restore.files,
        human(out.restore.bytes)
    );
    outln!("recovery settings added to postgresql.auto.conf, and recovery.signal written:");
    for s in &out.settings {
        outln!("  {s}");
    }
    if let Some((s, state)) = started {
        outln!(
            "started a server on it: recovery {state}; connect with psql -h {} (log {}), stop it with pg_ctl -D {} stop",
            s.socket_dir.display(),
            s.log.display(),
            data.display()
        );
        if s.state == Recovered::Paused {
            outln!("it is read-only at the target: SELECT pg_wal_replay_resume() promotes it");
        }
        return Ok(0);
    }
    let owner = if out.owner.is_some() {
        "its owner"
    } else {
        "this user"
    };
    let needs = match (
        repo.key().is_some() && !carried.iter().any(|(v, _)| v.starts_with("SNAP_")),
        location.starts_with("s3://")
            && !carried
                .iter()
                .any(|(v, _)| *v == "AWS_SHARED_CREDENTIALS_FILE"),
    ) {
        (true, true) => " (its fetches need SNAP_KEY_FILE and S3 credentials in the server's environment or its user's ~/.aws)",
        (true, false) => " (this encrypted repository's fetches need SNAP_KEY_FILE in the server's environment)",
        (false, true) => " (its fetches need S3 credentials in the server's environment or its user's ~/.aws)",
        (false, false) => "",
    };
    outln!(
        "start it (as {owner}) with: pg_ctl -D {} start; it replays the archived WAL{needs}",
        data.display(),
    );
    outln!(
        "it keeps the archive_command of the cluster it came from: once promoted it archives a new timeline into that repository, which later restores to the newest point follow; for a copy to look at, start it with -o '-c archive_mode=off' (as --start does)"
    );
    Ok(0)
}

/// What `restore_command` carries from this process's environment so that the
/// server's fetches reach the repository the way this restore did: an encrypted
/// repository's key or passphrase file, and for a remote store its endpoint, region,
/// profile, credentials and config files and host-key rule. Only names and paths,
/// never a secret itself (`AWS_SECRET_ACCESS_KEY` stays out of `postgresql.auto.conf`).
fn carried_env(location: &str, encrypted: bool) -> Vec<(&'static str, String)> {
    let key = ["SNAP_KEY_FILE", "SNAP_PASSWORD_FILE"]
        .into_iter()
        .filter(|_| encrypted)
        .find(|var| super::env_var(var).is_some());
    let remote: &[&'static str] = if location.starts_with("s3://") {
        &[
            "AWS_ENDPOINT_URL_S3",
            "AWS_ENDPOINT_URL",
            "AWS_REGION",
            "AWS_DEFAULT_REGION",
            "AWS_PROFILE",
            "AWS_SHARED_CREDENTIALS_FILE",
            "AWS_CONFIG_FILE",
        ]
    } else if location.starts_with("sftp://") {
        &["SNAP_SSH_KNOWN_HOSTS"]
    } else {
        &[]
    };
    key.into_iter()
        .chain(remote.iter().copied())
        .filter_map(|var| {
            let value = super::env_var(var)?;
            if !var.ends_with("_FILE") {
                return Some((var, value));
            }
            let path = std::path::absolute(value).ok()?;
            Some((var, path.display().to_string()))
        })
        .collect()
}
