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
mod export;
mod find;
mod forget;
mod import;
mod init;
mod key;
mod list;
mod ls;
mod mount;
mod profile;
mod prune;
mod repair;
mod restore;
mod shell;
mod stats;
mod sync;
mod tag;

use std::cell::RefCell;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::sync::Arc;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use snap::repo::Repository;
use snap::store::{self, Store};

/// Exit status when a snapshot was made but some entries could not be read.
pub const EXIT_WARNINGS: i32 = 3;
/// Exit status of a run stopped by SIGINT or SIGTERM (128 + SIGINT, as shells report).
pub const EXIT_INTERRUPTED: i32 = 130;

#[derive(Parser)]
#[command(
    name = "snap",
    version,
    about = "Deduplicating snapshots of application data: files, database dumps, command output"
)]
struct Cli {
    /// Repository: a directory, sftp://[USER@]HOST[:PORT]/PATH or s3://BUCKET/PREFIX
    /// (S3 endpoint from AWS_ENDPOINT_URL) [default: $XDG_DATA_HOME/snap/repo]
    #[arg(long, global = true, env = "SNAP_REPO", value_name = "REPO")]
    repo: Option<String>,
    /// Print nothing but errors and the final line
    #[arg(short, long, global = true)]
    quiet: bool,
    /// Print more about what happens
    #[arg(short, long, global = true)]
    verbose: bool,
    /// Configuration file with profiles [default: $XDG_CONFIG_HOME/snap/snap.toml, else
    /// /etc/snap/snap.toml]
    #[arg(long, global = true, env = "SNAP_CONFIG", value_name = "FILE")]
    config: Option<PathBuf>,
    /// Where this client keeps its index caches, one directory per repository id
    /// [default: $XDG_CACHE_HOME/snap, else ~/.cache/snap]
    #[arg(long, global = true, env = "SNAP_CACHE_DIR", value_name = "DIR")]
    cache_dir: Option<PathBuf>,
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
    List(list::Args),
    /// List the entries of a snapshot
    Ls(ls::Args),
    /// Find entries by name or path in every snapshot
    Find(find::Args),
    /// Add, remove or set snapshots' tags
    Tag(tag::Args),
    /// Write a file of a snapshot to standard output
    Cat(cat::Args),
    /// Show the snapshots as a read-only file system (FUSE), in the foreground
    Mount(mount::Args),
    /// Restore a snapshot into a directory, or into a NextGIS Web instance
    Restore(restore::Args),
    /// Write a snapshot's NextGIS Web instance as a .ngwbackup for `nextgisweb restore`
    Export(export::Args),
    /// Import .ngwbackup archives, one snapshot each, deduplicated
    Import(import::Args),
    /// Show what changed between two snapshots (tables of pg_dump directory dumps named)
    Diff(diff::Args),
    /// Copy snapshots with their data to another repository (directory, SFTP, S3)
    Sync(sync::Args),
    /// Remove snapshots by a retention policy (then, with --prune, their data)
    Forget(forget::Args),
    /// Delete data no snapshot needs; rewrite packs that are mostly garbage
    Prune(prune::Args),
    /// Repository size, deduplication and compression, growth over time
    Stats(stats::Args),
    /// Verify the repository: structure, and with --read-data every blob
    Check(check::Args),
    /// Repair repository metadata
    Repair(repair::Args),
    /// Manage the passphrases of an encrypted repository
    Key(key::Args),
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell)
    Completions(shell::CompletionsArgs),
    /// Print the man page, or write every page into a directory
    Man(shell::ManArgs),
}

/// Which snapshots a command considers (`list`, `find`).
#[derive(clap::Args)]
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
    repo: Option<String>,
    quiet: bool,
    /// `--config`/`SNAP_CONFIG`.
    config: Option<PathBuf>,
    /// A profile's passphrase file (overrides the environment).
    password_file: Option<PathBuf>,
    /// Under `snap run --json`: where the steps' JSON reports go instead of stdout.
    reports: Option<Rc<RefCell<Vec<serde_json::Value>>>>,
}

impl Ctx {
    /// Prints a command's `--json` report, or hands it to `snap run --json`.
    fn print_json(&self, report: &impl serde::Serialize) -> Result<()> {
        if let Some(r) = &self.reports {
            r.borrow_mut().push(serde_json::to_value(report)?);
        } else {
            outln!("{}", serde_json::to_string_pretty(report)?);
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
        let (store, is_default) = self.store()?;
        let loc = store.location();
        if is_default && create_default && store.size("config")?.is_none() {
            let repo = Repository::create(store, &snap::repo::InitOptions::default(), None)
                .with_context(|| format!("creating the default repository {loc}"))?;
            eprintln!("snap: created a new repository at {loc}");
            return Ok(repo);
        }
        self.open_store(store)
            .with_context(|| format!("opening repository {loc}"))
    }

    /// Opens the repository in `store`, unlocking it if it is encrypted.
    fn open_store(&self, store: Arc<dyn Store>) -> Result<Repository> {
        let key = self.master_key(store.as_ref())?;
        Ok(Repository::open_store(store, key)?)
    }

    /// The master key of the repository in `store`, if it is encrypted.
    fn master_key(&self, store: &dyn Store) -> Result<Option<snap::format::crypto::MasterKey>> {
        let (encrypted, id) = Repository::probe(store)?;
        if !encrypted {
            return Ok(None);
        }
        Ok(Some(
            key::unlock(store, &id, self.password_file.as_deref(), "SNAP")?.1,
        ))
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
            let kind = match r.level() {
                log::Level::Error => "error: ",
                log::Level::Warn => "warning: ",
                _ => "",
            };
            eprintln!("snap: {kind}{}", r.args());
        }
    }
    fn flush(&self) {}
}

/// Parses arguments, runs the command, prints errors; returns the exit status.
pub fn run() -> i32 {
    let matches = <Cli as clap::CommandFactory>::command().get_matches();
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
    let ctx = Ctx {
        repo: cli.repo,
        quiet: cli.quiet,
        config: cli.config,
        password_file: None,
        reports: None,
    };
    let command = matches.subcommand_name().unwrap_or_default().to_string();
    let res = dispatch(&ctx, cli.command, &matches);
    match res {
        Ok(code) => code,
        Err(e) if is_broken_pipe(&e) => 0,
        Err(e) if snap::interrupt::requested() => {
            match e.downcast_ref::<Stopped>() {
                Some(stopped) => eprintln!("snap: interrupted: {stopped}"),
                None => eprintln!("snap: interrupted: {}", interrupted_note(&command)),
            }
            EXIT_INTERRUPTED
        }
        Err(e) => {
            eprintln!("snap: {}", message(&e));
            1
        }
    }
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

/// The settings of remote stores that come from the environment: the S3 endpoint
/// (`endpoint` when given, else `AWS_ENDPOINT_URL_S3`, else `AWS_ENDPOINT_URL`), the
/// region (`AWS_REGION`, else `AWS_DEFAULT_REGION`) and SFTP host-key checking
/// (`SNAP_SSH_KNOWN_HOSTS`: `strict`, the default, `add` or `accept`). Credentials
/// are read by the S3 client itself, as the AWS tools read them.
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
    }
}

/// What a command stopped by a signal leaves behind, as its last words say.
fn interrupted_note(command: &str) -> &'static str {
    match command {
        "sync" => "the packs sent so far stay there and are not sent again; rerun sync to finish",
        "forget" | "prune" => {
            "prune deleted nothing (snapshots already forgotten stay forgotten); the next prune removes the packs it had written"
        }
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
/// signal ends the process at once. Called once, by [`dispatch`] (`snap run`'s steps
/// call the subcommands' code, not `dispatch`): a second registration would make the
/// first signal the second.
fn stop_cleanly_on_signals() -> Result<()> {
    use signal_hook::consts::{SIGINT, SIGTERM};
    let flag = snap::interrupt::flag();
    for sig in [SIGINT, SIGTERM] {
        signal_hook::flag::register_conditional_shutdown(sig, EXIT_INTERRUPTED, flag.clone())?;
        signal_hook::flag::register(sig, flag.clone())?;
    }
    Ok(())
}

/// Runs one parsed command.
fn dispatch(ctx: &Ctx, command: Command, matches: &clap::ArgMatches) -> Result<i32> {
    if matches!(
        command,
        Command::Backup(_)
            | Command::Run(_)
            | Command::Import(_)
            | Command::Forget(_)
            | Command::Prune(_)
            | Command::Sync(_)
            | Command::Mount(_)
    ) {
        stop_cleanly_on_signals()?;
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
                anyhow::bail!(
                    "no configuration file: write $XDG_CONFIG_HOME/snap/snap.toml or /etc/snap/snap.toml, or pass --config FILE (see the README)"
                );
            };
            run_profile(ctx, config, a.profile.as_deref(), false, a.json)
        }
        Command::List(a) => list::run(ctx, a),
        Command::Ls(a) => ls::run(ctx, a),
        Command::Find(a) => find::run(ctx, a),
        Command::Tag(a) => tag::run(ctx, a),
        Command::Cat(a) => cat::run(ctx, a),
        Command::Mount(a) => mount::run(ctx, a),
        Command::Restore(a) => restore::run(ctx, a),
        Command::Export(a) => export::run(ctx, a),
        Command::Import(a) => import::run(ctx, a),
        Command::Diff(a) => diff::run(ctx, a),
        Command::Sync(a) => sync::run(ctx, a),
        Command::Forget(a) => forget::run(ctx, a),
        Command::Prune(a) => prune::run(ctx, a),
        Command::Check(a) => check::run(ctx, a),
        Command::Stats(a) => stats::run(ctx, a),
        Command::Repair(a) => repair::run(ctx, a),
        Command::Key(a) => key::run(ctx, a),
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
/// failure. A backup that left entries out (exit 3) does not stop the run, and makes
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
        quiet: ctx.quiet || json,
        config: ctx.config.clone(),
        password_file: run.password_file.clone(),
        reports: json.then(|| Rc::new(RefCell::new(Vec::new()))),
    };
    let started = chrono::Utc::now();
    let clock = std::time::Instant::now();
    let mut code = 0;
    let mut done = Vec::new();
    let mut failure = None;
    let count = if backup_only { 1 } else { run.steps.len() };
    for step in run.steps.into_iter().take(count) {
        let clock = std::time::Instant::now();
        let (step_name, to) = (step.name(), step.to().map(str::to_string));
        let outcome = run_step(&sub, name, step);
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
            Err(e) => {
                failure = Some(e);
                break;
            }
        }
    }
    if json {
        outln!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({
                "profile": name,
                "config": path,
                "started": started,
                "seconds": clock.elapsed().as_secs_f64(),
                "exit": if failure.is_some() { 1 } else { code },
                "error": failure.as_ref().map(message),
                "steps": done,
            }))?
        );
    }
    match failure {
        Some(e) => Err(e),
        None => Ok(code),
    }
}

/// Runs one step of profile `name` through the code of its subcommand, in `ctx` (the
/// profile's repository and passphrase); a step that exits other than 0 or 3 is an
/// error.
fn run_step(ctx: &Ctx, name: &str, step: profile::Step) -> Result<i32> {
    let step_name = step.name();
    // Under `snap run --json` each step reports as its `--json` would.
    let json = ctx.reports.is_some();
    let c = match step {
        profile::Step::Backup(opts) => backup::execute(ctx, &opts, json),
        profile::Step::Forget(mut a) => {
            a.json = json;
            forget::run(ctx, a)
        }
        profile::Step::Sync(mut a) => {
            a.json = json;
            sync::run(ctx, a)
        }
    }
    .with_context(|| format!("profile {name}: {step_name} failed; later steps were not run"))?;
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
        Error::SnapshotNotFound { .. } => format!("{e}; `snap list` shows the snapshots"),
        Error::NoSnapshots { .. } => format!("{e}; run `snap backup` first"),
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
    out
}

fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    })
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

/// A spinner with bytes, rate and the current entry, on stderr.
pub struct Bar {
    bar: indicatif::ProgressBar,
}

impl Bar {
    fn new(ctx: &Ctx, verb: &str) -> Option<Bar> {
        if !ctx.progress() {
            return None;
        }
        let bar = indicatif::ProgressBar::new_spinner();
        let style = indicatif::ProgressStyle::with_template(&format!(
            "{{spinner}} {verb} {{bytes}} ({{binary_bytes_per_sec}}, {{elapsed}}) {{wide_msg}}"
        ))
        .expect("static template");
        bar.set_style(style);
        bar.enable_steady_tick(std::time::Duration::from_millis(120));
        Some(Bar { bar })
    }
}

impl snap::progress::Progress for Bar {
    fn entry(&self, path: &Path) {
        self.bar.set_message(path.display().to_string());
    }
    fn bytes(&self, n: u64) {
        self.bar.inc(n);
    }
}

impl Drop for Bar {
    fn drop(&mut self) {
        self.bar.finish_and_clear();
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
