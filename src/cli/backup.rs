//! `snap backup`

use std::io::{IsTerminal, Read};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use snap::format::chunker::Profile;
use snap::format::id::SnapshotId;
use snap::format::snapshot::Snapshot;
use snap::ops::backup::{backup, dry_run, BackupOptions};
use snap::source::fs::list_lines;

use super::{count, human, ngw_config, print_list, progress_for, Bar, Ctx, EXIT_WARNINGS};

#[derive(clap::Args)]
pub struct Args {
    /// Files and directories to back up
    #[arg(value_name = "PATH")]
    paths: Vec<PathBuf>,
    /// Read standard input and store it under this name (e.g. db/app.sql)
    #[arg(long, value_name = "NAME")]
    stdin_name: Option<String>,
    /// Run this shell command and store its standard output (repeatable; pair with --as)
    #[arg(long = "command", value_name = "CMD")]
    commands: Vec<String>,
    /// Run this shell command with {dir} replaced by an empty directory, and store what
    /// it writes there (repeatable; pair with --as), e.g. 'mongodump --out {dir}'
    #[arg(long = "command-dir", value_name = "CMD")]
    command_dirs: Vec<String>,
    /// Name inside the snapshot for the --command or --command-dir just before it
    #[arg(long = "as", value_name = "NAME")]
    names: Vec<String>,
    /// Dump a PostgreSQL database (pg_dump's directory format, uncompressed) into
    /// db/<name>/ (repeatable): postgresql://user@host:port/db or 'host=... dbname=...';
    /// passwords from .pgpass or PGPASSWORD rather than the DSN
    #[arg(long, value_name = "DSN")]
    pg: Vec<String>,
    /// Dump a whole PostgreSQL cluster with pg_dumpall into db/pg_dumpall.sql
    #[arg(long, value_name = "DSN")]
    pg_all: Vec<String>,
    /// Physical base backup of a PostgreSQL cluster (pg_basebackup) into pg/base/, for
    /// point-in-time recovery with the WAL that `snap wal push` archives
    #[arg(long, value_name = "DSN")]
    pg_base: Option<String>,
    /// Dump MongoDB with mongodump --archive into mongo/<db>.archive (repeatable)
    #[arg(long, value_name = "URI")]
    mongo: Vec<String>,
    /// Back up a NextGIS Web instance (database, file storage, fonts) from its
    /// config.ini [default: $NEXTGISWEB_CONFIG]
    #[arg(long, value_name = "CONFIG", num_args = 0..=1)]
    ngw: Option<Option<PathBuf>>,
    /// With --ngw: record the snapshot even when file-storage blobs the database lists
    /// are missing or unreadable, each listed as a warning (exit 3); without it, one
    /// missing blob fails the backup, as it fails NGW's own
    #[arg(long, requires = "ngw")]
    allow_missing_blobs: bool,
    /// With --ngw: leave the instance's last_backup setting alone (as nextgisweb backup
    /// --one-shot does); without it a saved snapshot updates it, so NGW's healthcheck
    /// and system page see the backup
    #[arg(long, requires = "ngw")]
    one_shot: bool,
    /// With --ngw: when an external raster storage (NGW 5.4+) cannot be reached, record
    /// the snapshot without its rasters, saying so in the snapshot, in `snap list` and
    /// as a warning (exit 3); without it the backup fails
    #[arg(long, requires = "ngw")]
    ngw_skip_external: bool,
    /// With --ngw: the S3 region of the instance's external raster storages
    #[arg(long, env = "SNAP_NGW_S3_REGION", default_value = snap::source::raster_storage::GDAL_REGION)]
    ngw_s3_region: String,
    /// Leave out entries matching this glob (repeatable); with a / it matches the full
    /// path, relative to the working directory unless it starts with / or *; a byte
    /// that is not text as `ls` shows it (`\xFF`) or raw
    #[arg(long, value_name = "GLOB", value_parser = super::snapshot_path_arg())]
    exclude: Vec<String>,
    /// Read --exclude globs from FILE, one a line; blank lines and # comments are
    /// ignored (repeatable)
    #[arg(long, value_name = "FILE")]
    exclude_file: Vec<PathBuf>,
    /// Read paths to back up from FILE, one a line, - for standard input; blank lines
    /// and # comments are ignored (repeatable)
    #[arg(long, value_name = "FILE")]
    files_from: Vec<PathBuf>,
    /// Leave out the contents of directories tagged by a valid CACHEDIR.TAG (the tag
    /// file itself is kept)
    #[arg(long)]
    exclude_caches: bool,
    /// Leave out the contents of directories holding an entry named NAME (that entry is
    /// kept; repeatable)
    #[arg(long, value_name = "NAME")]
    exclude_if_present: Vec<String>,
    /// Leave out files larger than SIZE: bytes, or with a unit K, M, G, T (powers of
    /// 1024), e.g. 100M, 1.5G
    #[arg(long, value_name = "SIZE", value_parser = parse_size)]
    exclude_larger_than: Option<u64>,
    /// Do not cross mount points: a directory of another file system is stored empty
    #[arg(long, short = 'x')]
    one_file_system: bool,
    /// Read what the backup would read and report what it would add; write nothing to
    /// the repository
    #[arg(long, short = 'n')]
    dry_run: bool,
    /// Tag the snapshot (repeatable; `a,b` gives it both tags)
    #[arg(long, value_name = "TAG", value_delimiter = ',', value_parser = super::parse_tag)]
    tag: Vec<String>,
    /// Host name to record [default: this machine's]
    #[arg(long, value_parser = super::parse_host)]
    host: Option<String>,
    /// zstd level for new data [default: the repository's]
    #[arg(long, value_parser = clap::value_parser!(i32).range(0..=19))]
    compression: Option<i32>,
    /// Chunking profile of --stdin-name and --command data
    #[arg(long, value_enum, default_value_t = StreamProfile::Dump)]
    stream_profile: StreamProfile,
    /// Read every file, even those unchanged since the parent snapshot
    #[arg(long)]
    force: bool,
    /// Print the result as JSON
    #[arg(long)]
    json: bool,
}

/// `--stream-profile`: the chunker's profiles as the command line names them.
#[derive(Clone, Copy, Debug, clap::ValueEnum)]
enum StreamProfile {
    /// Large chunks, for file trees.
    Files,
    /// Small chunks, for database dumps and other streams.
    Dump,
}

impl From<StreamProfile> for Profile {
    fn from(p: StreamProfile) -> Profile {
        match p {
            StreamProfile::Files => Profile::Files,
            StreamProfile::Dump => Profile::Dump,
        }
    }
}

/// Parses a size such as `100M`, `1.5G` or `4096` (units are powers of 1024; a
/// trailing `B` or `iB` is allowed).
pub fn parse_size(s: &str) -> Result<u64, String> {
    let bad = || format!("{s:?} is not a size like 100M, 1G or 4096");
    let t = s.trim();
    let t = t
        .strip_suffix("iB")
        .or_else(|| t.strip_suffix(['B', 'b']))
        .unwrap_or(t);
    let (num, unit) = match t.char_indices().last() {
        Some((i, c)) if c.is_ascii_alphabetic() => (&t[..i], c.to_ascii_uppercase()),
        _ => (t, ' '),
    };
    let shift = match unit {
        ' ' => 0,
        'K' => 10,
        'M' => 20,
        'G' => 30,
        'T' => 40,
        _ => return Err(bad()),
    };
    let v: f64 = num.trim().parse().map_err(|_| bad())?;
    let bytes = v * (1u64 << shift) as f64;
    if !bytes.is_finite() || bytes < 0.0 || bytes >= u64::MAX as f64 {
        return Err(bad());
    }
    #[allow(
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss,
        reason = "in range, checked above; a fraction of a byte is dropped"
    )]
    Ok(bytes as u64)
}

/// Commands with the names their output is stored under.
type Named = Vec<(String, String)>;

/// Pairs each --command and --command-dir with the --as that follows it on the
/// command line.
fn pair_names(a: &Args, m: &clap::ArgMatches) -> Result<(Named, Named)> {
    let at =
        |id: &str| -> Vec<usize> { m.indices_of(id).map(Iterator::collect).unwrap_or_default() };
    let mut runs: Vec<(usize, bool, &String)> = at("commands")
        .into_iter()
        .zip(&a.commands)
        .map(|(i, c)| (i, false, c))
        .chain(
            at("command_dirs")
                .into_iter()
                .zip(&a.command_dirs)
                .map(|(i, c)| (i, true, c)),
        )
        .collect();
    runs.sort();
    let names: Vec<(usize, &String)> = at("names").into_iter().zip(&a.names).collect();
    let paired = runs.len() == names.len()
        && runs.iter().enumerate().all(|(k, (i, _, _))| {
            names[k].0 > *i
                && runs
                    .get(k + 1)
                    .is_none_or(|(next, _, _)| names[k].0 < *next)
        });
    if !paired {
        return Err(super::output::usage(format!(
            "{} --command/--command-dir but {} --as: follow each with the name its output is stored under (--command 'pg_dump -Fc -Z0 db' --as db/db.dump)",
            runs.len(),
            names.len()
        )));
    }
    let (mut commands, mut dirs) = (Vec::new(), Vec::new());
    for ((_, is_dir, c), (_, n)) in runs.into_iter().zip(names) {
        if is_dir {
            dirs.push((c.clone(), n.clone()));
        } else {
            commands.push((c.clone(), n.clone()));
        }
    }
    Ok((commands, dirs))
}

pub fn run(ctx: &Ctx, a: Args, m: &clap::ArgMatches) -> Result<i32> {
    let (commands, command_dirs) = pair_names(&a, m)?;
    if a.stdin_name.is_some() && std::io::stdin().is_terminal() {
        return Err(super::output::usage(
            "--stdin-name reads standard input, but it is a terminal: pipe the data in",
        ));
    }
    let ngw = ngw_config(a.ngw)?;
    let (mut paths, mut files_from) = (a.paths, Vec::new());
    for f in a.files_from {
        if f != Path::new("-") {
            files_from.push(f);
            continue;
        }
        if a.stdin_name.is_some() {
            return Err(super::output::usage(
                "--files-from - and --stdin-name both read standard input: give one of them",
            ));
        }
        if std::io::stdin().is_terminal() {
            return Err(super::output::usage("--files-from - reads paths from standard input, but it is a terminal: pipe them in"));
        }
        let mut text = String::new();
        std::io::stdin()
            .read_to_string(&mut text)
            .context("--files-from -: reading standard input")?;
        paths.extend(list_lines(&text).map(PathBuf::from));
    }
    let opts = BackupOptions {
        paths,
        stdin_name: a.stdin_name.clone(),
        commands,
        command_dirs,
        pg: a.pg,
        pg_all: a.pg_all,
        mongo: a.mongo,
        pg_base: a.pg_base.into_iter().collect(),
        ngw,
        allow_missing_blobs: a.allow_missing_blobs,
        ngw_one_shot: a.one_shot,
        ngw_skip_external: a.ngw_skip_external,
        ngw_s3_region: Some(a.ngw_s3_region),
        archive: None,
        time: None,
        excludes: a.exclude,
        exclude_files: a.exclude_file,
        files_from,
        one_file_system: a.one_file_system,
        exclude_caches: a.exclude_caches,
        exclude_if_present: a.exclude_if_present,
        exclude_larger_than: a.exclude_larger_than,
        tags: a.tag,
        host: a.host,
        compression: a.compression,
        stream_profile: a.stream_profile.into(),
        no_parent: a.force,
    };
    // No source and no --repo: the profile (`-p`, else the default) says what.
    if !opts.has_source() && (ctx.repo.is_none() || ctx.profile.is_some()) {
        if let Some(config) = super::profile::load(ctx)? {
            if a.dry_run {
                return Err(super::output::usage("--dry-run needs the sources on the command line; a profile's backup cannot be dry-run yet"));
            }
            return super::run_profile(ctx, config, ctx.profile.as_deref(), true, a.json);
        }
    }
    if a.dry_run {
        return execute_dry(ctx, &opts, a.json);
    }
    execute(ctx, &opts, a.json).map(|(code, _, _)| code)
}

/// The signature of [`backup`] and [`dry_run`].
type Op<T> = fn(
    &snap::repo::Repository,
    &BackupOptions,
    Option<&mut (dyn Read + Send)>,
    &dyn snap::progress::Progress,
) -> snap::error::Result<T>;

/// Runs `op` on the selected repository (created if it is the default one and
/// `create`) with a progress bar, and standard input when `opts` stores it.
/// `json`: no progress bar, the result goes out as JSON.
fn run_op<T>(
    ctx: &Ctx,
    opts: &BackupOptions,
    create: bool,
    json: bool,
    what: &'static str,
    op: Op<T>,
) -> Result<T> {
    let repo = ctx.open(create)?;
    let bar = Bar::new(ctx, what, json);
    let mut stdin = std::io::stdin();
    let input: Option<&mut (dyn Read + Send)> = if opts.stdin_name.is_some() {
        snap::source::command::widen_pipe(&stdin);
        Some(&mut stdin)
    } else {
        None
    };
    Ok(op(&repo, opts, input, progress_for(bar.as_ref()))?)
}

/// Lists the entries left out under `heading`; the exit code: 3 if there were any.
fn left_out(heading: &str, warnings: &[String]) -> i32 {
    print_list(heading, warnings);
    if warnings.is_empty() {
        0
    } else {
        EXIT_WARNINGS
    }
}

/// `backup --dry-run`: reads what `opts` names and prints what a backup would add.
fn execute_dry(ctx: &Ctx, opts: &BackupOptions, json: bool) -> Result<i32> {
    let done = run_op(ctx, opts, false, json, "backup --dry-run", dry_run)?;
    let s = &done.summary;
    if json {
        let out = serde_json::json!({
            "dry_run": true,
            "summary": s,
            "warnings": done.warnings,
        });
        ctx.print_json(&out)?;
    } else {
        outln!(
            "dry run, nothing written: {} ({} read), {} read, {} new ({} compressed), {:.1} s",
            count(s.files, "file"),
            s.files_read,
            human(s.bytes_read),
            human(s.bytes_added_raw),
            human(s.bytes_added),
            s.duration
        );
    }
    Ok(left_out("some entries would be left out", &done.warnings))
}

/// Backs up what `opts` names into the selected repository and prints the result (as
/// JSON with `json`); also a `snap run` step. Returns the exit code (3 when entries
/// were left out) and the snapshot made, with its id.
pub fn execute(ctx: &Ctx, opts: &BackupOptions, json: bool) -> Result<(i32, SnapshotId, Snapshot)> {
    let done = run_op(ctx, opts, true, json, "backup", backup)?;
    let s = &done.snapshot.summary;
    if json {
        let out = serde_json::json!({
            "id": done.id,
            "short_id": done.id.short(),
            "time": done.snapshot.time,
            "parent": done.snapshot.parent,
            "summary": s,
            "warnings": done.warnings,
        });
        ctx.print_json(&out)?;
    } else {
        outln!(
            "snapshot {} saved: {} files ({} read), {} read, {} added, {:.1} s",
            done.id.short(),
            s.files,
            s.files_read,
            human(s.bytes_read),
            human(s.bytes_added),
            s.duration
        );
    }
    let code = left_out(
        "some entries were left out, or changed while being read",
        &done.warnings,
    );
    Ok((code, done.id, done.snapshot))
}

#[cfg(test)]
mod tests {
    use super::parse_size;

    #[test]
    fn sizes_in_binary_units() {
        for (s, n) in [
            ("4096", 4096),
            ("100M", 100 << 20),
            ("1g", 1 << 30),
            ("1.5G", 3 << 29),
            ("2KiB", 2048),
            ("3 MB", 3 << 20),
            ("1T", 1 << 40),
        ] {
            assert_eq!(parse_size(s), Ok(n), "{s}");
        }
        for s in ["", "M", "12X", "-1K", "1e30T", "NaN"] {
            assert!(parse_size(s).is_err(), "{s}");
        }
    }
}
