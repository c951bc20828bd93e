//! Command-line interface: argument parsing, repository selection, progress display,
//! output formats and exit codes (0 ok, 1 error, 3 snapshot made but some entries were
//! left out).

/// `println!` that returns an error instead of panicking when stdout is gone (`snap
/// list | head`): `run` then exits quietly.
macro_rules! outln {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        writeln!(std::io::stdout(), $($arg)*).map_err(|source| snap::error::Error::Io {
            path: "<standard output>".into(),
            source,
        })?
    }};
}

mod backup;
mod cat;
mod check;
mod diff;
mod drill;
mod dump;
mod export;
mod find;
mod forget;
mod import;
mod init;
mod key;
mod list;
mod ls;
mod metrics;
mod mount;
mod output;
mod ping;
mod profile;
mod prune;
mod repair;
mod restore;
mod shell;
mod stats;
mod sync;
mod tag;
mod wal;

use std::cell::{Cell, RefCell};
use std::io::{IsTerminal, Write as _};
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::sync::Arc;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use snap::repo::{remembered, Repository};
use snap::store::{self, Store};

/// Exit status when a snapshot was made but some entries could not be read.
pub const EXIT_WARNINGS: i32 = 3;
/// Exit status of a run stopped by SIGINT or SIGTERM (128 + SIGINT, as shells report).
pub const EXIT_INTERRUPTED: i32 = 130;
/// Exit status of a command line that cannot be parsed (as clap's own).
pub const EXIT_USAGE: i32 = 2;

/// The help group of the options every subcommand takes, listed after its own.
const GLOBAL: &str = "Global options";

#[derive(Parser)]
#[command(
    name = "snap",
    version,
    about = "Deduplicating snapshots of application data: files, database dumps, command output",
    after_help = "Times are shown in this host's local time (TZ) with their offset from UTC, as \
                  2024-01-02 15:48:00 +07:00; --json gives RFC 3339 times. Under --json a \
                  failure prints {\"error\": {\"message\", \"kind\"}} on standard output."
)]
struct Cli {
    /// Repository: a directory, sftp://[USER@]HOST[:PORT]/PATH or s3://BUCKET/PREFIX
    /// (S3 endpoint from AWS_ENDPOINT_URL) [default: the default profile's, else
    /// $XDG_DATA_HOME/snap/repo]
    #[arg(long, global = true, env = "SNAP_REPO", value_name = "REPO", help_heading = GLOBAL)]
    repo: Option<String>,
    /// Use this profile's repository and passphrase file (and, for `run` and a `backup`
    /// without sources, its sources) [default: the configuration's `default`]
    #[arg(short, long, global = true, value_name = "PROFILE", help_heading = GLOBAL)]
    profile: Option<String>,
    /// Print nothing but errors and the final line
    #[arg(short, long, global = true, help_heading = GLOBAL)]
    quiet: bool,
    /// Print more about what happens
    #[arg(short, long, global = true, help_heading = GLOBAL)]
    verbose: bool,
    /// Configuration file with profiles [default: $XDG_CONFIG_HOME/snap/snap.toml, else
    /// /etc/snap/snap.toml]
    #[arg(long, global = true, env = "SNAP_CONFIG", value_name = "FILE", help_heading = GLOBAL)]
    config: Option<PathBuf>,
    /// Where this client keeps its index caches, one directory per repository id
    /// [default: $XDG_CACHE_HOME/snap, else ~/.cache/snap]
    #[arg(long, global = true, env = "SNAP_CACHE_DIR", value_name = "DIR", help_heading = GLOBAL)]
    cache_dir: Option<PathBuf>,
    /// Wait up to DURATION (30s, 5m, 1h) for another process's conflicting repository
    /// lock to go, retrying with growing pauses, instead of failing at once
    #[arg(long, global = true, value_name = "DURATION", value_parser = parse_wait, help_heading = GLOBAL)]
    retry_lock: Option<std::time::Duration>,
    /// Read without locking the repository, for one this process cannot write
    /// (read-only media or credentials); commands that change it are refused. Nothing
    /// then keeps a prune elsewhere from deleting what is being read
    #[arg(long, global = true, help_heading = GLOBAL)]
    no_lock: bool,
    /// Limit uploads to SFTP and S3 repositories to this many KiB/s
    #[arg(long, global = true, value_name = "KiB/s", value_parser = clap::value_parser!(u64).range(1..), help_heading = GLOBAL)]
    limit_upload: Option<u64>,
    /// Limit downloads from SFTP and S3 repositories to this many KiB/s
    #[arg(long, global = true, value_name = "KiB/s", value_parser = clap::value_parser!(u64).range(1..), help_heading = GLOBAL)]
    limit_download: Option<u64>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Create a repository
    Init(init::Args),
    /// Back up paths, standard input and command output into a new snapshot (with no
    /// source: the configuration's default profile)
    Backup(backup::Args),
    /// Run a profile of the configuration: backup, then forget and prune by its policy,
    /// then sync to its offsite repositories
    Run(RunArgs),
    /// List snapshots
    ///
    /// Times are this host's local time (TZ) with their offset from UTC, as in every
    /// table and message of snap; --json gives RFC 3339.
    List(list::Args),
    /// List the entries of a snapshot
    Ls(ls::Args),
    /// Find entries by name or path in every snapshot
    Find(find::Args),
    /// Add, remove or set snapshots' tags
    Tag(tag::Args),
    /// Write a file of a snapshot to standard output
    Cat(cat::Args),
    /// Write a directory of a snapshot as a tar or ZIP archive (a file as it is) to
    /// standard output or a new file
    Dump(dump::Args),
    /// Show the snapshots as a read-only file system (FUSE), in the foreground
    Mount(mount::Args),
    /// Restore a snapshot into a directory, or into a NextGIS Web instance
    Restore(restore::Args),
    /// Write a snapshot's NextGIS Web instance as a .ngwbackup for `nextgisweb restore`
    Export(export::Args),
    /// Import .ngwbackup archives, one snapshot each, deduplicated
    Import(import::Args),
    /// Restore every source of a snapshot for real into a throw-away target, check it,
    /// time it (the RTO) and record the proof in the repository
    ///
    /// Without SNAPSHOT: the latest snapshot of each group (host and sources). Files
    /// are restored with --verify into a scratch directory; --pg, --pg-all and .sql
    /// dumps into a scratch PostgreSQL cluster (every table present, rows counted; a
    /// table whose rows fell to none, or under half of at least 100, since the last
    /// drill fails the drill); NextGIS Web into a throw-away instance (every fileobj
    /// has its blob). Exit 0 when every source passed, 1 when one failed.
    Drill(drill::Args),
    /// Show what changed between two snapshots, or a snapshot and its parent
    ///
    /// `+` added, `-` removed, `M` content changed, `U` only metadata. With one snapshot,
    /// it is compared with its parent (the snapshot its backup started from, or else the
    /// latest earlier one of the same host and sources). pg_dump table files are paired
    /// and named by their table, even when pg_dump renumbered them.
    Diff(diff::Args),
    /// Copy snapshots with their data to another repository (directory, SFTP, S3)
    Sync(sync::Args),
    /// Remove snapshots by a retention policy (then, with --prune, their data)
    Forget(forget::Args),
    /// Delete data no snapshot needs; rewrite packs that are mostly garbage
    Prune(prune::Args),
    /// Repository size, deduplication and compression, growth over time
    Stats(stats::Args),
    /// Print monitoring figures in the Prometheus text format
    ///
    /// Per group of snapshots (host and sources): the last successful backup's time,
    /// duration and bytes, and the snapshot count; for the repository: its size and
    /// this host's last `snap check`. Reads the index cache only, so it is cheap to run
    /// often. A profile's `metrics_file` gets the same after every `snap run`, with the
    /// run's outcome. Missing series: no check has run from this host yet.
    #[command(after_long_help = snap::ops::metrics::series_help())]
    Metrics(metrics::Args),
    /// Verify the repository: structure, and with --read-data every blob
    Check(check::Args),
    /// Repair repository metadata
    Repair(repair::Args),
    /// Manage the passphrases of an encrypted repository
    Key(key::Args),
    /// Archive a PostgreSQL cluster's WAL (archive_command, restore_command) and check
    /// its continuity, for point-in-time recovery with `backup --pg-base`
    Wal(wal::Args),
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell)
    Completions(shell::CompletionsArgs),
    /// Print the man page, or write every page into a directory
    Man(shell::ManArgs),
}

/// A tag for a new snapshot (`--tag`, `tag --add`; a comma parts several, as in restic).
pub fn parse_tag(s: &str) -> Result<String, String> {
    match snap::format::snapshot::label_problem(s, true) {
        None => Ok(s.to_string()),
        Some(why) => Err(format!("{s:?} cannot be a tag: {why}")),
    }
}

/// A host name for a new snapshot (`--host` of `backup` and `import`).
pub fn parse_host(s: &str) -> Result<String, String> {
    match snap::format::snapshot::label_problem(s, false) {
        None => Ok(s.to_string()),
        Some(why) => Err(format!("{s:?} cannot be a host name: {why}")),
    }
}

/// Whose snapshot a command that names one (`latest` or an id prefix) reads.
#[derive(clap::Args)]
pub struct SnapshotOf {
    /// With `latest`: the newest snapshot of this host, not of any host; an id prefix
    /// must be of it too
    #[arg(long, value_name = "HOST")]
    host: Option<String>,
}

impl SnapshotOf {
    /// The snapshot `spec` names (see [`Repository::find_snapshot_of`]).
    pub fn find(
        &self,
        repo: &Repository,
        spec: &str,
    ) -> snap::error::Result<(
        snap::format::id::SnapshotId,
        snap::format::snapshot::Snapshot,
    )> {
        repo.find_snapshot_of(spec, self.host.as_deref())
    }
}

/// Which snapshots a command considers (`list`, `find`).
#[derive(clap::Args, Default)]
pub struct FilterArgs {
    /// Only snapshots of this host (repeatable: any of them)
    #[arg(long)]
    host: Vec<String>,
    /// Only snapshots with this tag (repeatable: any of them; `a,b`: both)
    #[arg(long)]
    tag: Vec<String>,
    /// Only snapshots that backed up this path, or stored a stream, dump or command
    /// under this name (repeatable: all of them)
    #[arg(long)]
    path: Vec<String>,
}

impl FilterArgs {
    pub fn filter(&self) -> snap::ops::select::SnapshotFilter {
        snap::ops::select::SnapshotFilter {
            hosts: self.host.clone(),
            tags: self.tag.clone(),
            paths: self.path.clone(),
        }
    }
}

/// `snap run` arguments.
#[derive(clap::Args)]
pub struct RunArgs {
    /// The profile [default: the configuration's `default`]
    profile: Option<String>,
    /// Print one JSON summary of every step (for monitoring), also when one fails
    #[arg(long)]
    json: bool,
}

/// Global settings every subcommand sees.
pub struct Ctx {
    /// The repository: `--repo`/`SNAP_REPO`, else the selected profile's.
    repo: Option<String>,
    /// The profile whose repository was selected (named by `-p`, or the default).
    profile: Option<String>,
    quiet: bool,
    /// `--config`/`SNAP_CONFIG`.
    config: Option<PathBuf>,
    /// `--retry-lock`: how long taking a lock waits for a conflicting holder.
    retry_lock: std::time::Duration,
    /// `--no-lock`.
    no_lock: bool,
    /// A profile's passphrase file (overrides the environment).
    password_file: Option<PathBuf>,
    /// Under `snap run --json`: where the steps' JSON reports go instead of stdout.
    reports: Option<Rc<RefCell<Vec<serde_json::Value>>>>,
    /// Whether the command's JSON document is out (`snap run --json`'s summary, which
    /// carries its failure): a failure then adds no error document of its own.
    json_printed: Cell<bool>,
}

impl Ctx {
    /// Prints a command's `--json` report, or hands it to `snap run --json`.
    fn print_json(&self, report: &impl serde::Serialize) -> Result<()> {
        if let Some(r) = &self.reports {
            r.borrow_mut().push(serde_json::to_value(report)?);
        } else {
            outln!("{}", serde_json::to_string_pretty(report)?);
            self.json_printed.set(true);
        }
        Ok(())
    }

    /// Chooses the repository when `--repo` does not: `-p PROFILE`'s, else (unless
    /// `SNAP_REPO` is set) the configuration's default profile's, with the profile's
    /// passphrase file. `--repo` on the command line and `-p` together are refused;
    /// `-p` overrides `SNAP_REPO`.
    fn select_profile(&mut self, repo_on_command_line: bool) -> Result<()> {
        if let Some(p) = &self.profile {
            if repo_on_command_line {
                return Err(output::usage(format!(
                    "--repo and --profile {p} both name a repository: give one of them"
                )));
            }
            self.repo = None;
        }
        if self.repo.is_some() {
            return Ok(());
        }
        let Some((path, file)) = profile::load(self)? else {
            if let Some(p) = &self.profile {
                return Err(output::usage(format!(
                    "--profile {p}: no configuration file (write $XDG_CONFIG_HOME/snap/snap.toml or /etc/snap/snap.toml, or pass --config FILE)"
                )));
            }
            return Ok(());
        };
        if let Some(chosen) = file.repository(&path, self.profile.as_deref())? {
            self.profile = Some(chosen.name);
            self.repo = Some(chosen.repository);
            self.password_file = chosen.password_file;
        }
        Ok(())
    }

    /// The selected repository location, and whether it is the default one.
    fn repo_location(&self) -> Result<(String, bool)> {
        if let Some(r) = &self.repo {
            return Ok((r.clone(), false));
        }
        let base = xdg_dir("XDG_DATA_HOME", ".local/share")
            .context("neither --repo, SNAP_REPO, XDG_DATA_HOME nor HOME is set")?;
        Ok((base.join("snap/repo").display().to_string(), true))
    }

    /// The store of the selected repository, and whether it is the default one.
    fn store(&self) -> Result<(Arc<dyn Store>, bool)> {
        let (loc, is_default) = self.repo_location()?;
        Ok((store::open(&loc, &remote_options(None))?, is_default))
    }

    /// Opens the selected repository; `create_default` creates the default one on first
    /// use (so `snap backup DIR` works on a fresh machine).
    fn open(&self, create_default: bool) -> Result<Repository> {
        self.open_as(create_default, true)
    }

    /// [`Ctx::open`] reading the config and the key file from the repository, not from
    /// this host's memory of them: for `check` and `drill`, which prove what the
    /// repository itself holds (a host without the memory needs both).
    fn open_unremembered(&self) -> Result<Repository> {
        self.open_as(false, false)
    }

    /// [`Ctx::open`], with this host's memory of the repository where `use_memory`.
    fn open_as(&self, create_default: bool, use_memory: bool) -> Result<Repository> {
        let (store, is_default) = self.store()?;
        let loc = store.location();
        if is_default && create_default && store.size("config")?.is_none() {
            let mut repo = Repository::create(store, &snap::repo::InitOptions::default(), None)
                .with_context(|| format!("creating the default repository {loc}"))?;
            repo.set_lock_wait(self.retry_lock);
            if self.no_lock {
                repo.set_no_lock();
            }
            eprintln!("created a new repository at {loc}");
            return Ok(repo);
        }
        self.open_store(store, use_memory)
            .with_context(|| format!("opening repository {loc}"))
    }

    /// Opens the repository in `store`, unlocking it if it is encrypted: with what this
    /// host remembered of it, where `use_memory` and that opens with the passphrase (a
    /// remote repository then opens without a request), else as the repository has it
    /// now.
    fn open_store(&self, store: Arc<dyn Store>, use_memory: bool) -> Result<Repository> {
        // An exported key opens no key file, so nothing would prove a memory current.
        let exported = key::exported_key_file(self.password_file.as_deref(), "SNAP").is_some();
        let memory = (use_memory && !exported)
            .then(|| remembered::recall(store.as_ref()))
            .flatten();
        let probe = match &memory {
            Some(m) => m.probe()?,
            None => Repository::probe(store.as_ref())?,
        };
        let unlocked = self.master_key(store.as_ref(), &probe, memory.as_ref())?;
        let mut repo = match (memory, unlocked) {
            (Some(m), Some(key::Unlocked::Remembered(k))) if m.config_opens(&k) => {
                Repository::open_remembered(store, m, k)?
            }
            (Some(_), Some(key::Unlocked::Remembered(_))) => {
                // A memory damaged on this host's disk is only not used.
                log::warn!(
                    "this host's memory of {} does not open its config; reading the repository's own config and key files",
                    store.location()
                );
                remembered::forget(store.as_ref());
                return self.open_store(store, false);
            }
            (memory, unlocked) => {
                let probe = if memory.is_some() {
                    // Remembered, but not what opened it: read as it is now.
                    remembered::forget(store.as_ref());
                    Repository::probe(store.as_ref())?
                } else {
                    probe
                };
                let config = probe.bytes().to_vec();
                let (key, opened) = match unlocked {
                    Some(key::Unlocked::File(o)) => (Some(o.key.clone()), Some(o)),
                    u => (u.map(key::Unlocked::key), None),
                };
                let repo = Repository::open_probed(store.clone(), probe, key)?;
                if let Some(o) = opened {
                    remembered::remember(store.as_ref(), &config, &o.id, &o.file);
                }
                repo
            }
        };
        repo.set_lock_wait(self.retry_lock);
        if self.no_lock {
            repo.set_no_lock();
        }
        Ok(repo)
    }

    /// How the repository `probe` read in `store` unlocks, if it is encrypted: first
    /// with the key file of `memory`, if any.
    fn master_key(
        &self,
        store: &dyn Store,
        probe: &snap::repo::Probe,
        memory: Option<&remembered::Remembered>,
    ) -> Result<Option<key::Unlocked>> {
        if !probe.encrypted() {
            if let Some(f) = &self.password_file {
                eprintln!(
                    "snap: warning: the profile's password_file {} is set, but repository {} is not encrypted: anyone who can read its files can read the backups",
                    f.display(),
                    store.location()
                );
            }
            return Ok(None);
        }
        key::unlock(
            store,
            probe.id(),
            self.password_file.as_deref(),
            "SNAP",
            memory,
        )
        .map(Some)
    }

    /// Whether to draw progress bars.
    fn progress(&self) -> bool {
        !self.quiet && std::io::stderr().is_terminal()
    }
}

struct Logger {
    level: log::LevelFilter,
}

impl log::Log for Logger {
    fn enabled(&self, m: &log::Metadata) -> bool {
        m.level() <= self.level && m.target().starts_with("snap")
    }
    fn log(&self, r: &log::Record) {
        if self.enabled(r.metadata()) {
            // `snap:` starts errors and warnings only; -v's lines are plain.
            match r.level() {
                log::Level::Error => eprintln!("snap: error: {}", r.args()),
                log::Level::Warn => eprintln!("snap: warning: {}", r.args()),
                _ => eprintln!("{}", r.args()),
            }
        }
    }
    fn flush(&self) {}
}

/// Parses arguments, runs the command, prints errors; returns the exit status.
pub fn run() -> i32 {
    let matches = match <Cli as clap::CommandFactory>::command().try_get_matches() {
        Ok(m) => m,
        Err(e) => return usage_error(&e),
    };
    let cli =
        <Cli as clap::FromArgMatches>::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    let level = if cli.verbose {
        log::LevelFilter::Debug
    } else if cli.quiet {
        log::LevelFilter::Error
    } else {
        log::LevelFilter::Warn
    };
    let _ = log::set_boxed_logger(Box::new(Logger { level }));
    log::set_max_level(level);
    let cache_root = cli
        .cache_dir
        .clone()
        .filter(|d| !d.as_os_str().is_empty())
        .or_else(|| xdg_dir("XDG_CACHE_HOME", ".cache").map(|d| d.join("snap")));
    if let Some(dir) = cache_root {
        snap::repo::set_cache_root(dir);
    }
    // Directory recursion runs on rayon's workers: give them room for deep trees.
    let _ = rayon::ThreadPoolBuilder::new()
        .stack_size(64 << 20)
        .build_global();
    let repo_on_command_line =
        matches.value_source("repo") == Some(clap::parser::ValueSource::CommandLine);
    match (
        env_duration("SNAP_REMOTE_TIMEOUT", false),
        env_duration("SNAP_PG_ARCHIVE_TIMEOUT", true),
    ) {
        (Ok(silence), Ok(archive)) => {
            if let Some(d) = silence {
                let _ = SILENCE.set(d);
            }
            if let Some(d) = archive {
                snap::ops::backup::set_archive_timeout(d);
            }
        }
        (Err(bad), _) | (_, Err(bad)) => {
            eprintln!("snap: {bad}");
            return EXIT_USAGE;
        }
    }
    let _ = LIMITS.set(store::Limits {
        upload: cli.limit_upload.map(|k| k.saturating_mul(1024)),
        download: cli.limit_download.map(|k| k.saturating_mul(1024)),
    });
    let mut ctx = Ctx {
        repo: cli.repo,
        profile: cli.profile,
        quiet: cli.quiet,
        config: cli.config,
        retry_lock: cli.retry_lock.unwrap_or_default(),
        no_lock: cli.no_lock,
        password_file: None,
        reports: None,
        json_printed: Cell::new(false),
    };
    let command = matches.subcommand_name().unwrap_or_default().to_string();
    let res = match cli.command {
        // They open no repository: a broken configuration must not stop them.
        c @ (Command::Completions(_) | Command::Man(_)) => dispatch(&ctx, c, &matches),
        c => ctx
            .select_profile(repo_on_command_line)
            .and_then(|()| dispatch(&ctx, c, &matches)),
    };
    let e = match res {
        Ok(code) => return code,
        // A listing cut by `| head` is what its reader asked for; a file or an
        // archive cut is data lost on the way.
        Err(e) if is_broken_pipe(&e) && !matches!(command.as_str(), "cat" | "dump" | "export") => {
            return 0
        }
        Err(e) if is_broken_pipe(&e) => {
            eprintln!("snap: {command}: standard output was closed before all of it was written (the command reading it ended early): what that command got is incomplete");
            return 1;
        }
        Err(e) => e,
    };
    let interrupted = snap::interrupt::requested();
    let kind = output::kind(&e, interrupted);
    let (text, code) = if interrupted {
        let why = match e.downcast_ref::<Stopped>() {
            Some(stopped) => stopped.to_string(),
            None => interrupted_note(&command).to_string(),
        };
        (format!("interrupted: {why}"), EXIT_INTERRUPTED)
    } else {
        (message(&e), 1)
    };
    let json = output::wants_json(&matches) && !ctx.json_printed.get();
    report(&text, kind, json.then_some(text.as_str()));
    code
}

/// A failure's words on stderr after `snap: `, and with `json` (the message for it) its
/// error document on stdout.
fn report(text: &str, kind: &str, json: Option<&str>) {
    eprintln!("snap: {text}");
    if let Some(message) = json {
        let doc = output::error_json(message, kind);
        let _ = writeln!(std::io::stdout(), "{doc:#}");
    }
}

/// A command line clap refused: its message on stderr as snap's errors are (help and
/// version requests print as clap prints them), as JSON on stdout when `--json` is
/// among the arguments; exit status 2.
fn usage_error(e: &clap::Error) -> i32 {
    use clap::error::ErrorKind;
    if matches!(
        e.kind(),
        ErrorKind::DisplayHelp
            | ErrorKind::DisplayVersion
            | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
    ) {
        e.exit();
    }
    let rendered = e.render().to_string();
    let text = rendered.trim_end();
    let first = text.lines().next().unwrap_or_default();
    let first = first.strip_prefix("error: ").unwrap_or(first);
    let json = std::env::args_os().any(|a| a == "--json");
    report(text, "usage", json.then_some(first));
    EXIT_USAGE
}

/// A variable of the environment, unset when empty.
fn env_var(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

/// An XDG base directory: `$var` when set, else `$HOME/home_rel`.
pub(crate) fn xdg_dir(var: &str, home_rel: &str) -> Option<PathBuf> {
    std::env::var_os(var)
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(home_rel)))
}

/// `--limit-upload` and `--limit-download`, in bytes per second, for every remote
/// store the command opens.
static LIMITS: std::sync::OnceLock<store::Limits> = std::sync::OnceLock::new();

/// `--retry-lock`'s DURATION: a number with `s`, `m` (or `min`) or `h`, seconds
/// without a unit.
pub(super) fn parse_wait(s: &str) -> std::result::Result<std::time::Duration, String> {
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (n, unit) = s.split_at(split);
    let n: u64 = n
        .parse()
        .map_err(|_| format!("{s:?} is not a duration like 30s, 5m or 1h"))?;
    let secs = match unit {
        "" | "s" => 1,
        "m" | "min" => 60,
        "h" => 3600,
        _ => return Err(format!("{s:?}: unknown unit {unit:?} (use s, m or h)")),
    };
    Ok(std::time::Duration::from_secs(n.saturating_mul(secs)))
}

/// The settings of remote stores that come from the environment: the S3 endpoint
/// (`endpoint` when given, else `AWS_ENDPOINT_URL_S3`, else `AWS_ENDPOINT_URL`), the
/// region (`AWS_REGION`, else `AWS_DEFAULT_REGION`) and SFTP host-key checking
/// (`SNAP_SSH_KNOWN_HOSTS`: `strict`, the default, `add` or `accept`), and how long a
/// store may stay silent (`SNAP_REMOTE_TIMEOUT`). Credentials are read by the S3
/// client itself, as the AWS tools read them.
pub(crate) fn remote_options(endpoint: Option<String>) -> store::RemoteOptions {
    store::RemoteOptions {
        endpoint: endpoint
            .or_else(|| env_var("AWS_ENDPOINT_URL_S3"))
            .or_else(|| env_var("AWS_ENDPOINT_URL")),
        region: env_var("AWS_REGION").or_else(|| env_var("AWS_DEFAULT_REGION")),
        host_keys: match env_var("SNAP_SSH_KNOWN_HOSTS").as_deref() {
            Some("add") => store::HostKeys::Add,
            Some("accept") => store::HostKeys::Accept,
            _ => store::HostKeys::Strict,
        },
        limits: LIMITS.get().copied().unwrap_or_default(),
        silence: SILENCE.get().copied().unwrap_or(store::DEFAULT_SILENCE),
    }
}

/// The duration environment variable `name` holds (zero only with `zero`), if set;
/// what is wrong with its value, if anything.
fn env_duration(
    name: &str,
    zero: bool,
) -> std::result::Result<Option<std::time::Duration>, String> {
    let Some(v) = env_var(name) else {
        return Ok(None);
    };
    match parse_wait(&v) {
        Ok(d) if zero || !d.is_zero() => Ok(Some(d)),
        _ => Err(format!(
            "{name}={v:?} is not a duration like 60, 30s, 5m or 1h"
        )),
    }
}

/// `SNAP_REMOTE_TIMEOUT`, read once in [`run`] (where a bad value is refused).
static SILENCE: std::sync::OnceLock<std::time::Duration> = std::sync::OnceLock::new();

/// What a command stopped by a signal leaves behind, as its last words say.
fn interrupted_note(command: &str) -> &'static str {
    match command {
        "sync" => "the packs sent so far stay there and are not sent again; rerun sync to finish",
        "restore" => {
            "every file restored so far is whole under its name, the unfinished ones were removed; run the restore again to finish (`--overwrite if-changed` keeps what is already there)"
        }
        "forget" | "prune" => {
            "prune deleted nothing (snapshots already forgotten stay forgotten); the next prune removes the packs it had written"
        }
        "repair" => "the repair stopped while reading packs, before it changed anything",
        "tag" => "the snapshots retagged so far keep their new tags, the others their old ones",
        _ => "no snapshot was recorded; the data already stored is reused by the next backup",
    }
}

/// A `snap run` stopped by a signal: where, and what stands.
#[derive(Debug)]
struct Stopped(String);

impl std::fmt::Display for Stopped {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Stopped {}

/// Lets SIGINT and SIGTERM stop a command that writes snapshots or moves packs at its
/// next safe point, cleanly (nothing half recorded, scratch files removed); a second
/// signal ends the process at once. Called once: by [`dispatch`] for those commands
/// (`snap run`'s steps call the subcommands' code, not `dispatch`), by a restore into
/// a directory; a second registration would make the first signal the second.
pub(crate) fn stop_cleanly_on_signals() -> Result<()> {
    use signal_hook::consts::{SIGINT, SIGTERM};
    let flag = snap::interrupt::flag();
    for sig in [SIGINT, SIGTERM] {
        signal_hook::flag::register_conditional_shutdown(sig, EXIT_INTERRUPTED, flag.clone())?;
        signal_hook::flag::register(sig, flag.clone())?;
    }
    Ok(())
}

/// [`stop_cleanly_on_signals`], saying at the first signal that the command is
/// stopping (a sync finishing the uploads in flight on a slow link takes a while), and
/// asking the commands it runs (a backup's `--command`, pg_dump) to stop too: a
/// command that writes nothing would keep the backup waiting for its next chunk.
fn stop_cleanly_and_say_so() -> Result<()> {
    stop_cleanly_on_signals()?;
    let mut signals = signal_hook::iterator::Signals::new([
        signal_hook::consts::SIGINT,
        signal_hook::consts::SIGTERM,
    ])?;
    std::thread::spawn(move || {
        if signals.forever().next().is_some() {
            eprintln!("snap: stopping at the next safe point (Ctrl-C again stops at once)");
            snap::source::command::terminate_all();
        }
    });
    Ok(())
}

/// Lets SIGINT and SIGTERM end a command that stops where it is (a reader, or one that
/// hands its data to other programs) at once, as by default, but without its shared
/// locks, which would otherwise keep a prune on another host waiting until they are
/// stale: `what` says what it leaves (for `--json`, `json`, also as an error
/// document).
pub(crate) fn exit_on_signals(json: bool, what: &'static str) -> Result<()> {
    use signal_hook::consts::{SIGINT, SIGTERM};
    let mut signals = signal_hook::iterator::Signals::new([SIGINT, SIGTERM])?;
    std::thread::spawn(move || {
        if signals.forever().next().is_some() {
            snap::repo::release_shared();
            snap::source::command::terminate_all();
            let text = format!("interrupted: {what}");
            report(&text, "interrupted", json.then_some(text.as_str()));
            std::process::exit(EXIT_INTERRUPTED);
        }
    });
    Ok(())
}

/// Runs one parsed command.
fn dispatch(ctx: &Ctx, command: Command, matches: &clap::ArgMatches) -> Result<i32> {
    // What a signal does (restores and drills choose for themselves).
    match command {
        Command::Backup(_)
        | Command::Run(_)
        | Command::Import(_)
        | Command::Forget(_)
        | Command::Prune(_)
        | Command::Sync(_)
        | Command::Repair(_)
        | Command::Tag(_) => stop_cleanly_and_say_so()?,
        Command::Mount(_) => stop_cleanly_on_signals()?,
        Command::Check(_)
        | Command::Ls(_)
        | Command::Cat(_)
        | Command::Dump(_)
        | Command::Diff(_)
        | Command::Find(_)
        | Command::Export(_) => exit_on_signals(
            output::wants_json(matches),
            "the command stopped; it changed nothing in the repository",
        )?,
        _ => {}
    }
    match command {
        Command::Init(a) => init::run(ctx, a),
        Command::Backup(a) => backup::run(
            ctx,
            a,
            matches
                .subcommand_matches("backup")
                .expect("backup was given"),
        ),
        Command::Run(a) => {
            let Some(config) = profile::load(ctx)? else {
                return Err(output::usage("no configuration file: write $XDG_CONFIG_HOME/snap/snap.toml or /etc/snap/snap.toml, or pass --config FILE (see the README)"));
            };
            let name = a.profile.as_deref().or(ctx.profile.as_deref());
            run_profile(ctx, config, name, false, a.json)
        }
        Command::List(a) => list::run(ctx, a),
        Command::Ls(a) => ls::run(ctx, a),
        Command::Find(a) => find::run(ctx, a),
        Command::Tag(a) => tag::run(ctx, a),
        Command::Cat(a) => cat::run(ctx, a),
        Command::Dump(a) => dump::run(ctx, a),
        Command::Mount(a) => mount::run(ctx, a),
        Command::Restore(a) => restore::run(ctx, a),
        Command::Export(a) => export::run(ctx, a),
        Command::Import(a) => import::run(ctx, a),
        Command::Diff(a) => diff::run(ctx, a),
        Command::Drill(a) => drill::run(ctx, a),
        Command::Sync(a) => sync::run(ctx, a),
        Command::Forget(a) => forget::run(ctx, a),
        Command::Prune(a) => prune::run(ctx, a),
        Command::Check(a) => check::run(ctx, a),
        Command::Stats(a) => stats::run(ctx, a),
        Command::Metrics(a) => metrics::run(ctx, a),
        Command::Repair(a) => repair::run(ctx, a),
        Command::Key(a) => key::run(ctx, a),
        Command::Wal(a) => wal::run(ctx, a),
        Command::Completions(a) => Ok(shell::completions(a)),
        Command::Man(a) => shell::man(a),
    }
}

/// What one step of `snap run --json` did.
#[derive(serde::Serialize)]
struct StepReport {
    /// `backup`, `forget` or `sync`.
    step: &'static str,
    /// The sync destination.
    #[serde(skip_serializing_if = "Option::is_none")]
    to: Option<String>,
    /// Its exit status (1 when it failed).
    exit: i32,
    seconds: f64,
    /// Why it failed.
    error: Option<String>,
    /// Its own `--json` report.
    report: Option<serde_json::Value>,
}

/// Runs profile `name` (or the default) of the configuration file: its backup, then
/// (unless `backup_only`) its forget and prune and its syncs; stops at the first
/// failure, but tries every sync. A backup that left entries out (exit 3) does not stop the run, and makes
/// its exit 3. With `json`, prints one summary of every step (also when one failed).
fn run_profile(
    ctx: &Ctx,
    (path, file): (PathBuf, profile::File),
    name: Option<&str>,
    backup_only: bool,
    json: bool,
) -> Result<i32> {
    let run = file.steps(&path, name)?;
    let name = &run.name;
    // The steps run quietly under `--json`, their reports collected for the summary.
    let sub = Ctx {
        repo: Some(run.repository.clone()),
        profile: Some(name.clone()),
        quiet: ctx.quiet || json,
        config: ctx.config.clone(),
        retry_lock: ctx.retry_lock,
        no_lock: ctx.no_lock,
        password_file: run.password_file.clone(),
        reports: json.then(|| Rc::new(RefCell::new(Vec::new()))),
        json_printed: Cell::new(false),
    };
    let started = chrono::Utc::now();
    let clock = std::time::Instant::now();
    let ping = run.ping.as_deref().map(ping::Ping::new);
    if let Some(p) = &ping {
        p.start();
    }
    let mut code = 0;
    let mut done = Vec::new();
    let mut failure = None;
    let count = if backup_only { 1 } else { run.steps.len() };
    let mut made = None;
    // Each offsite is on its own: one that fails does not keep the next from its copy.
    let mut failed_syncs: Vec<anyhow::Error> = Vec::new();
    for (i, step) in run.steps.into_iter().take(count).enumerate() {
        let clock = std::time::Instant::now();
        let (step_name, to) = (step.name(), step.to().map(str::to_string));
        let outcome = run_step(&sub, name, step, &mut made);
        done.push(StepReport {
            step: step_name,
            to,
            exit: *outcome.as_ref().unwrap_or(&1),
            seconds: clock.elapsed().as_secs_f64(),
            error: outcome.as_ref().err().map(message),
            report: sub
                .reports
                .as_ref()
                .and_then(|r| std::mem::take(&mut *r.borrow_mut()).pop()),
        });
        if snap::interrupt::requested() {
            let what = match &outcome {
                Ok(_) if i + 1 == count => "it finished, and it was the last".to_string(),
                Ok(_) => "it finished; the steps after it did not run".to_string(),
                Err(_) => format!(
                    "{}; the steps after it did not run",
                    interrupted_note(step_name)
                ),
            };
            let before = if done.len() > 1 {
                " (the steps before it finished)"
            } else {
                ""
            };
            failure = Some(anyhow::Error::new(Stopped(format!(
                "profile {name}, step {step_name}{before}: {what}"
            ))));
            break;
        }
        match outcome {
            Ok(c) => code = code.max(c),
            Err(e) if step_name == "sync" => failed_syncs.push(e),
            Err(e) => {
                failure = Some(e);
                break;
            }
        }
    }
    if failure.is_none() && !failed_syncs.is_empty() {
        let all: Vec<String> = failed_syncs.iter().map(message).collect();
        failure = Some(anyhow::anyhow!("{}", all.join("; ")));
    }
    let exit = match &failure {
        None => code,
        Some(_) if snap::interrupt::requested() => EXIT_INTERRUPTED,
        Some(_) => 1,
    };
    if let Some(file) = &run.metrics_file {
        let outcome = snap::ops::metrics::RunOutcome {
            profile: name.clone(),
            finished: chrono::Utc::now(),
            seconds: clock.elapsed().as_secs_f64(),
            exit,
        };
        metrics::write_run_file(&sub, file, &outcome);
    }
    if let Some(p) = &ping {
        match &failure {
            None => p.success(format!(
                "snap run {name}: exit {code} after {:.1} s",
                clock.elapsed().as_secs_f64()
            )),
            Some(e) => p.fail(&message(e)),
        }
    }
    if json {
        ctx.print_json(&serde_json::json!({
            "profile": name,
            "config": path,
            "started": started,
            "seconds": clock.elapsed().as_secs_f64(),
            "exit": exit,
            "error": failure.as_ref().map(message),
            "steps": done,
        }))?;
    }
    match failure {
        Some(e) => Err(e),
        None => Ok(code),
    }
}

/// Runs one step of profile `name` through the code of its subcommand, in `ctx` (the
/// profile's repository and passphrase); a step that exits other than 0 or 3 is an
/// error. The backup step leaves its snapshot in `made`, and retention judges only
/// the snapshots of its host and sources.
fn run_step(
    ctx: &Ctx,
    name: &str,
    step: profile::Step,
    made: &mut Option<(
        snap::format::id::SnapshotId,
        snap::format::snapshot::Snapshot,
    )>,
) -> Result<i32> {
    let (step_name, to) = (step.name(), step.to().map(str::to_string));
    // Under `snap run --json` each step reports as its `--json` would.
    let json = ctx.reports.is_some();
    let c = match step {
        profile::Step::Backup(opts) => backup::execute(ctx, &opts, json).map(|(c, id, s)| {
            *made = Some((id, s));
            c
        }),
        profile::Step::Forget(mut a) => {
            a.json = json;
            a.group = made.as_ref().map(|(_, s)| {
                (
                    s.host.clone(),
                    snap::format::snapshot::Snapshot::group_key(&s.sources),
                )
            });
            forget::run(ctx, a)
        }
        profile::Step::Sync(mut a) => {
            a.json = json;
            sync::run(ctx, a)
        }
        profile::Step::Drill(every, verify) => {
            let made = made
                .as_ref()
                .map_or(String::from("latest"), |(id, _)| id.to_hex());
            drill::run_step(ctx, every, verify, json, &made)
        }
    }
    .with_context(|| match &to {
        // Each sync is on its own (see `run_profile`).
        Some(to) => format!("profile {name}: sync to {to} failed"),
        None => format!("profile {name}: {step_name} failed; later steps were not run"),
    })?;
    if c != 0 && c != EXIT_WARNINGS {
        anyhow::bail!("profile {name}: {step_name} exited {c}; later steps were not run");
    }
    Ok(c)
}

/// A library error as the CLI words it: the library's text, and for the errors a user
/// fixes by a setting or a command, the setting or command to use.
fn worded(e: &snap::error::Error) -> String {
    use snap::error::Error;
    match e {
        Error::NoRepository { location } => format!(
            "{e}: point --repo or SNAP_REPO at your repository, or create one with `snap init --repo {location}`"
        ),
        Error::NotADirectory { .. } => {
            format!("{e}; point --repo or SNAP_REPO at your repository's directory")
        }
        Error::NoKeyFiles { .. } => format!("{e} (use SNAP_KEY_FILE with an exported key)"),
        Error::Corrupt {
            what: "repository",
            id,
            ..
        } if id == "config" => format!(
            "{e}; put the config file back from a copy of this repository (a `snap sync` destination made from it has the same one); nothing else opens it"
        ),
        Error::SnapshotNotFound { .. } => format!("{e}; `snap list` shows the snapshots"),
        Error::NoSnapshots { unreadable: 0, .. } => format!("{e}; run `snap backup` first"),
        Error::NotFound {
            what: "path in snapshot",
            ..
        } => format!("{e}; `snap ls SNAPSHOT` shows the paths inside"),
        _ => e.to_string(),
    }
}

/// The error and its causes, each cause left out when the text before already says
/// it (our errors quote their source, as `path: No such file or directory`).
fn message(e: &anyhow::Error) -> String {
    let mut out = String::new();
    for cause in e.chain() {
        let text = match cause.downcast_ref::<snap::error::Error>() {
            Some(e) => worded(e),
            None => cause.to_string(),
        };
        if out.is_empty() {
            out = text;
        } else if !out.contains(&text) {
            out = format!("{out}: {text}");
        }
    }
    if is_io(e, std::io::ErrorKind::StorageFull) {
        out.push_str(
            "; that file system is full: free space there (or point the command elsewhere) and rerun; in a full repository, `snap prune --max-unused unlimited` frees space while writing only a few KiB (its lock and index files, no pack), so free that much first if even it fails",
        );
    }
    out
}

/// Whether an I/O error of `kind` is among the causes of `e`.
fn is_io(e: &anyhow::Error, kind: std::io::ErrorKind) -> bool {
    e.chain().any(|c| {
        let io = c.downcast_ref::<std::io::Error>().or_else(|| {
            match c.downcast_ref::<snap::error::Error>() {
                Some(snap::error::Error::Io { source, .. }) => Some(source),
                _ => None,
            }
        });
        io.is_some_and(|io| io.kind() == kind)
    })
}

/// Whether `e` is standard output closed by its reader (`snap ls ... | head`); a
/// pipe to a command snap runs is an `Error::Io` naming it, and stays an error.
fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

/// A path inside a snapshot as the command line gives it: bytes that are not UTF-8
/// (a name in another encoding, typed or pasted raw) become `\xHH`, as snap shows them
/// (`snap::format::tree::shown_name`), and are read back as those bytes.
pub(crate) fn snapshot_path_arg() -> impl clap::builder::TypedValueParser<Value = String> {
    use clap::builder::TypedValueParser;
    use std::os::unix::ffi::OsStrExt;
    clap::builder::OsStringValueParser::new().map(|s| snap::format::tree::shown_name(s.as_bytes()))
}

/// `1 snapshot`, `2 snapshots`: a count and its noun, plural when it is not one.
pub fn count(n: impl TryInto<u64>, noun: &str) -> String {
    match n.try_into().ok() {
        Some(1) => format!("1 {noun}"),
        Some(n) => format!("{n} {noun}s"),
        None => format!("many {noun}s"),
    }
}

/// Bytes in binary units, as `1.5 GiB`.
pub fn human(bytes: u64) -> String {
    const UNITS: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let mut v = bytes as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{bytes} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

/// A status line on stderr, redrawn a few times a second: the phase, bytes and items
/// done (of their totals where known, with a percentage), the rate, the time left
/// where a total is known (else the time spent), and the current entry.
pub struct Bar {
    bar: indicatif::ProgressBar,
    labels: Arc<std::sync::Mutex<Labels>>,
    items: Arc<std::sync::atomic::AtomicU64>,
}

/// What the status line says besides the byte count.
struct Labels {
    phase: &'static str,
    noun: &'static str,
    items_total: Option<u64>,
}

impl Bar {
    /// A bar for `verb` (the phase until the operation names one); `None` unless
    /// stderr is a terminal and neither `--quiet` nor `json` is asked for.
    fn new(ctx: &Ctx, verb: &'static str, json: bool) -> Option<Bar> {
        if !ctx.progress() || json || ctx.reports.is_some() {
            return None;
        }
        let labels = Arc::new(std::sync::Mutex::new(Labels {
            phase: verb,
            noun: "file",
            items_total: None,
        }));
        let items = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let (l, n) = (labels.clone(), items.clone());
        let draw = move |s: &indicatif::ProgressState, w: &mut dyn std::fmt::Write| {
            let l = l.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            let line = status(&Status {
                phase: l.phase,
                bytes: s.pos(),
                bytes_total: s.len(),
                items: n.load(std::sync::atomic::Ordering::Relaxed),
                items_total: l.items_total,
                noun: l.noun,
                rate: s.per_sec(),
                elapsed: s.elapsed(),
            });
            let _ = w.write_str(&line);
        };
        let bar = indicatif::ProgressBar::new_spinner();
        let style = indicatif::ProgressStyle::with_template("{spinner} {status}  {wide_msg}")
            .expect("static template")
            .with_key("status", draw);
        bar.set_style(style);
        bar.enable_steady_tick(std::time::Duration::from_millis(120));
        Some(Bar { bar, labels, items })
    }

    fn labels(&self) -> std::sync::MutexGuard<'_, Labels> {
        self.labels
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl snap::progress::Progress for Bar {
    fn phase(&self, phase: snap::progress::Phase) {
        self.labels().phase = phase.label();
    }
    fn total(&self, bytes: Option<u64>, items: Option<u64>, noun: &'static str) {
        {
            let mut l = self.labels();
            l.items_total = items;
            l.noun = noun;
        }
        // The labels first: setting the length draws the line, and what the user waits
        // for is shown from here, even for an operation over before the next tick.
        match bytes {
            Some(b) => self.bar.set_length(b),
            None => self.bar.unset_length(),
        }
        self.bar.tick();
    }
    fn entry(&self, path: &Path) {
        self.bar.set_message(path.display().to_string());
    }
    fn bytes(&self, n: u64) {
        self.bar.inc(n);
    }
    fn items(&self, n: u64) {
        self.items
            .fetch_add(n, std::sync::atomic::Ordering::Relaxed);
    }
}

impl Drop for Bar {
    fn drop(&mut self) {
        self.bar.finish_and_clear();
    }
}

/// One moment of an operation, as the status line shows it.
struct Status {
    phase: &'static str,
    bytes: u64,
    bytes_total: Option<u64>,
    items: u64,
    items_total: Option<u64>,
    /// What an item is (`file`, `pack`).
    noun: &'static str,
    /// Bytes per second, lately.
    rate: f64,
    elapsed: std::time::Duration,
}

/// `reading files  1.2 GiB of 3.4 GiB (35%), 120 of 300 files, 45.0 MiB/s, ETA 0:52`;
/// without totals the time spent instead of the time left.
fn status(s: &Status) -> String {
    let mut done = human(s.bytes);
    if let Some(total) = s.bytes_total {
        let pct = if total == 0 {
            100
        } else {
            (u128::from(s.bytes) * 100 / u128::from(total)).min(100)
        };
        done = format!("{done} of {} ({pct}%)", human(total));
    }
    let mut parts = vec![format!("{}  {done}", s.phase)];
    match s.items_total {
        Some(total) => parts.push(format!("{} of {}", s.items, count(total, s.noun))),
        None if s.items > 0 => parts.push(count(s.items, s.noun)),
        None => {}
    }
    if s.rate.is_finite() && s.rate >= 1.0 {
        #[allow(
            clippy::cast_possible_truncation,
            clippy::cast_sign_loss,
            reason = "a rate, rounded"
        )]
        let rate = s.rate as u64;
        parts.push(format!("{}/s", human(rate)));
    }
    parts.push(match s.bytes_total.and_then(|t| eta(s.bytes, t, s.rate)) {
        Some(left) => format!("ETA {}", clock(left)),
        None => clock(s.elapsed),
    });
    parts.join(", ")
}

/// The time left to reach `total` bytes from `done` at `rate` bytes per second; `None`
/// when it cannot be told (no rate yet, or past an estimated total).
fn eta(done: u64, total: u64, rate: f64) -> Option<std::time::Duration> {
    if done >= total || !rate.is_finite() || rate < 1.0 {
        return None;
    }
    #[allow(clippy::cast_precision_loss, reason = "an estimate")]
    let secs = (total - done) as f64 / rate;
    std::time::Duration::try_from_secs_f64(secs.ceil()).ok()
}

/// A duration as `m:ss`, or `h:mm:ss` from an hour on.
fn clock(d: std::time::Duration) -> String {
    let s = d.as_secs();
    if s >= 3600 {
        format!("{}:{:02}:{:02}", s / 3600, s / 60 % 60, s % 60)
    } else {
        format!("{}:{:02}", s / 60, s % 60)
    }
}

/// The progress sink for an operation: a bar on a terminal, nothing otherwise.
fn progress_for(bar: Option<&Bar>) -> &dyn snap::progress::Progress {
    match bar {
        Some(b) => b,
        None => &snap::progress::NoProgress,
    }
}

/// The config.ini of `--ngw [CONFIG]`: the path given, else `$NEXTGISWEB_CONFIG`.
fn ngw_config(arg: Option<Option<PathBuf>>) -> Result<Option<PathBuf>> {
    match arg {
        None => Ok(None),
        Some(Some(p)) => Ok(Some(p)),
        Some(None) => std::env::var_os("NEXTGISWEB_CONFIG")
            .map(|p| Some(PathBuf::from(p)))
            .context(
                "--ngw needs the instance's config.ini: give its path or set NEXTGISWEB_CONFIG",
            ),
    }
}

/// Warns on stderr (ending with `tail`) when `snap` was made without the rasters of
/// some external storages (`--ngw-skip-external`); whether it was.
fn warn_skipped_external(
    id: &snap::format::id::SnapshotId,
    snap: &snap::format::snapshot::Snapshot,
    tail: &str,
) -> bool {
    let skipped = snap.skipped_external();
    if !skipped.is_empty() {
        eprintln!(
            "snap: warning: snapshot {} was made without the rasters of {} (--ngw-skip-external){tail}",
            id.short(),
            skipped.join(", ")
        );
    }
    !skipped.is_empty()
}

/// Prints up to 20 lines of `items` under `title` on stderr.
fn print_list(title: &str, items: &[String]) {
    if items.is_empty() {
        return;
    }
    eprintln!("snap: {title}:");
    for i in items.iter().take(20) {
        eprintln!("  {i}");
    }
    if items.len() > 20 {
        eprintln!("  ... and {} more", items.len() - 20);
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::{clock, eta, status, Cli, Status};

    /// `snap help` and the man pages say what each command is for.
    #[test]
    fn every_command_says_what_it_is_for() {
        fn walk(cmd: &clap::Command, path: &str) {
            for sub in cmd.get_subcommands() {
                let path = format!("{path} {}", sub.get_name());
                assert!(sub.get_about().is_some(), "{path} has no description");
                walk(sub, &path);
            }
        }
        walk(&<Cli as clap::CommandFactory>::command(), "snap");
    }

    #[test]
    fn clock_reads_minutes_then_hours() {
        assert_eq!(clock(Duration::from_secs(0)), "0:00");
        assert_eq!(clock(Duration::from_secs(59)), "0:59");
        assert_eq!(clock(Duration::from_millis(61_900)), "1:01");
        assert_eq!(clock(Duration::from_secs(3725)), "1:02:05");
        assert_eq!(clock(Duration::from_secs(100 * 3600)), "100:00:00");
    }

    #[test]
    fn eta_is_what_is_left_at_the_rate() {
        assert_eq!(
            eta(0, 100 << 20, f64::from(1u32 << 20)),
            Some(Duration::from_secs(100))
        );
        // Rounded up: a second and a bit left shows 0:02, never 0:00 before the end.
        assert_eq!(eta(0, 1100, 1000.0), Some(Duration::from_secs(2)));
        assert_eq!(eta(5, 5, 1000.0), None, "done");
        assert_eq!(eta(7, 5, 1000.0), None, "past an estimate");
        assert_eq!(eta(0, 5, 0.0), None, "no rate yet");
        assert_eq!(eta(0, 5, f64::NAN), None);
        assert_eq!(eta(0, u64::MAX, 1.0), None, "longer than a Duration holds");
    }

    fn at(bytes: u64, total: Option<u64>, items: u64, items_total: Option<u64>) -> Status {
        Status {
            phase: "reading files",
            bytes,
            bytes_total: total,
            items,
            items_total,
            noun: "file",
            rate: f64::from(1u32 << 20),
            elapsed: Duration::from_secs(75),
        }
    }

    #[test]
    fn status_shows_totals_rate_and_eta_where_known() {
        assert_eq!(
            status(&at(1 << 30, Some(3 << 30), 120, Some(300))),
            "reading files  1.0 GiB of 3.0 GiB (33%), 120 of 300 files, 1.0 MiB/s, ETA 34:08"
        );
        // No totals: what is done, and the time spent.
        assert_eq!(
            status(&at(5 << 20, None, 1, None)),
            "reading files  5.0 MiB, 1 file, 1.0 MiB/s, 1:15"
        );
        // Past an estimate: 100%, and no time left to show.
        assert_eq!(
            status(&at(4 << 30, Some(3 << 30), 0, Some(1))),
            "reading files  4.0 GiB of 3.0 GiB (100%), 0 of 1 file, 1.0 MiB/s, 1:15"
        );
        let mut idle = at(0, Some(0), 0, None);
        idle.rate = 0.0;
        assert_eq!(status(&idle), "reading files  0 B of 0 B (100%), 1:15");
    }
}
