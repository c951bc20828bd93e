//! `snap backup`

use std::io::IsTerminal;
use std::path::PathBuf;

use anyhow::{bail, Result};
use snap::format::chunker::Profile;
use snap::ops::backup::{backup, BackupOptions};

use super::{human, ngw_config, print_list, progress_for, Bar, Ctx, EXIT_WARNINGS};

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
    /// Leave out entries matching this glob (repeatable; with a / it matches the full path)
    #[arg(long, value_name = "GLOB")]
    exclude: Vec<String>,
    /// Tag the snapshot (repeatable)
    #[arg(long, value_name = "TAG")]
    tag: Vec<String>,
    /// Host name to record [default: this machine's]
    #[arg(long)]
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
        bail!(
            "{} --command/--command-dir but {} --as: follow each with the name its output is stored under (--command 'pg_dump -Fc -Z0 db' --as db/db.dump)",
            runs.len(),
            names.len()
        );
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
        bail!("--stdin-name reads standard input, but it is a terminal: pipe the data in");
    }
    let ngw = ngw_config(a.ngw)?;
    let opts = BackupOptions {
        paths: a.paths,
        stdin_name: a.stdin_name.clone(),
        commands,
        command_dirs,
        pg: a.pg,
        pg_all: a.pg_all,
        mongo: a.mongo,
        ngw,
        allow_missing_blobs: a.allow_missing_blobs,
        archive: None,
        time: None,
        excludes: a.exclude,
        tags: a.tag,
        host: a.host,
        compression: a.compression,
        stream_profile: a.stream_profile.into(),
        no_parent: a.force,
    };
    // No source and no --repo: the profile (`-p`, else the default) says what.
    if !opts.has_source() && (ctx.repo.is_none() || ctx.profile.is_some()) {
        if let Some(config) = super::profile::load(ctx)? {
            return super::run_profile(ctx, config, ctx.profile.as_deref(), true, a.json);
        }
    }
    execute(ctx, &opts, a.json)
}

/// Backs up what `opts` names into the selected repository and prints the result (as
/// JSON with `json`); also a `snap run` step. Exits 3 when entries were left out.
pub fn execute(ctx: &Ctx, opts: &BackupOptions, json: bool) -> Result<i32> {
    let repo = ctx.open(true)?;
    let bar = Bar::new(ctx, "backup");
    let mut stdin = std::io::stdin();
    let input: Option<&mut (dyn std::io::Read + Send)> = if opts.stdin_name.is_some() {
        snap::source::command::widen_pipe(&stdin);
        Some(&mut stdin)
    } else {
        None
    };
    let done = backup(&repo, opts, input, progress_for(bar.as_ref()))?;
    drop(bar);
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
    print_list("some entries were left out", &done.warnings);
    Ok(if done.warnings.is_empty() {
        0
    } else {
        EXIT_WARNINGS
    })
}
