//! Restores of database dumps, streamed from the repository: a pg_dump directory into
//! `pg_restore` (through named pipes), pg_dumpall SQL into `psql`, and any file into a
//! command's standard input. Nothing is staged on disk but pg_dump's `toc.dat`.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use crate::error::{Error, IoContext, Refusal, Result, Usage};
use crate::format::snapshot::{Snapshot, Source};
use crate::format::tree::{Content, NodeKind, Tree};
use crate::ops::ngw_part::file_content;
use crate::ops::restore::node_at;
use crate::progress::Progress;
use crate::repo::Repository;
use crate::source::command::Running;
use crate::source::pg::{ident, literal, user_objects, Dsn};

/// Stages the pg_dump directory `dump` in a temporary directory under `tmp_base` (a
/// real `toc.dat`, a named pipe for every other file), runs the pg_restore `cmd` makes
/// for that directory (`what` in errors) and fills each pipe when pg_restore opens it;
/// returns the bytes fed.
pub fn feed_pg_restore(
    repo: &Repository,
    dump: &Tree,
    tmp_base: &Path,
    cmd: impl FnOnce(&Path) -> std::process::Command,
    what: &str,
    progress: &dyn Progress,
) -> Result<u64> {
    let stage = crate::scratch::dir(tmp_base, "restore")?;
    let dir = stage.path();
    let mut pending: Vec<(PathBuf, &Content)> = Vec::new();
    for n in &dump.nodes {
        let name = String::from_utf8_lossy(&n.name).into_owned();
        let path = dir.join(&name);
        let content = file_content(&name, n)?;
        if name == "toc.dat" {
            let mut f = File::create_new(&path).at(&path)?;
            repo.write_content(content, &mut f)?;
            continue;
        }
        rustix::fs::mknodat(
            rustix::fs::CWD,
            &path,
            rustix::fs::FileType::Fifo,
            rustix::fs::Mode::from_raw_mode(0o600),
            0,
        )
        .map_err(std::io::Error::from)
        .at(&path)?;
        pending.push((path, content));
    }
    // The sizes are in the tree: the total costs nothing.
    let sizes = dump.nodes.iter().filter(|n| n.name != b"toc.dat");
    progress.total(
        Some(sizes.map(|n| n.meta.size).sum()),
        Some(pending.len() as u64),
        "file",
    );
    let mut pg = Running::start(cmd(dir), what)?;
    let mut fed = 0u64;
    let mut tick = 0u64;
    // pg_restore reads the files in list order, so the next one is nearly always at
    // the front; the whole list is scanned now and then in case it is not.
    while !pending.is_empty() && !pg.has_exited()? {
        let scan = if tick.is_multiple_of(64) {
            pending.len()
        } else {
            pending.len().min(4)
        };
        let mut opened = None;
        for (i, (path, _)) in pending.iter().enumerate().take(scan) {
            match open_pipe(path) {
                Ok(Some(f)) => {
                    opened = Some((i, f));
                    break;
                }
                Ok(None) => {}
                Err(e) => {
                    pg.kill();
                    return Err(e);
                }
            }
        }
        let Some((i, mut f)) = opened else {
            tick += 1;
            std::thread::sleep(std::time::Duration::from_millis(2));
            continue;
        };
        let (path, content) = pending.remove(i);
        progress.entry(&path);
        match write_counted(repo, content, &mut f, progress) {
            Ok(n) => {
                fed += n;
                progress.items(1);
            }
            // pg_restore went away: its own error says why.
            Err(Error::Io { source, .. }) if source.kind() == std::io::ErrorKind::BrokenPipe => {
                break
            }
            Err(e) => {
                // Stop pg_restore before the pipe closes, or it would take the cut-off
                // data as a whole table.
                pg.kill();
                drop(f);
                return Err(Error::Entry {
                    path: path
                        .file_name()
                        .unwrap_or_default()
                        .to_string_lossy()
                        .into_owned(),
                    source: Box::new(e),
                });
            }
        }
    }
    pg.finish()?;
    Ok(fed)
}

/// Opens the write end of a named pipe if its reader is there (`None` if not yet).
fn open_pipe(path: &Path) -> Result<Option<File>> {
    let nonblock = rustix::fs::OFlags::NONBLOCK.bits() as i32;
    match OpenOptions::new()
        .write(true)
        .custom_flags(nonblock)
        .open(path)
    {
        Ok(f) => {
            rustix::fs::fcntl_setfl(&f, rustix::fs::OFlags::empty())
                .map_err(std::io::Error::from)
                .at(path)?;
            Ok(Some(f))
        }
        Err(e) if e.raw_os_error() == Some(rustix::io::Errno::NXIO.raw_os_error()) => Ok(None),
        Err(e) => Err(e).at(path),
    }
}

/// Writes `content` to `out`, counting bytes into the progress display.
fn write_counted(
    repo: &Repository,
    content: &Content,
    out: &mut dyn Write,
    progress: &dyn Progress,
) -> Result<u64> {
    let mut n = 0u64;
    repo.read_content(content, &mut |c| {
        out.write_all(c).at("<restore output>")?;
        n += c.len() as u64;
        progress.bytes(c.len() as u64);
        Ok(())
    })?;
    Ok(n)
}

/// The kinds of database dump a restore can take.
#[derive(Clone, Copy)]
enum DumpKind {
    Pg,
    PgAll,
}

impl DumpKind {
    fn flag(self) -> &'static str {
        match self {
            DumpKind::Pg => "--pg",
            DumpKind::PgAll => "--pg-all",
        }
    }

    /// The path a source of this kind stores its dump under.
    fn name_of(self, s: &Source) -> Option<&String> {
        match (self, s) {
            (DumpKind::Pg, Source::Pg { name, .. })
            | (DumpKind::PgAll, Source::PgAll { name, .. }) => Some(name),
            _ => None,
        }
    }

    /// The dump a restore takes: `from` if given, else the snapshot's only dump of
    /// this kind, or the one named `default`.
    fn pick(self, snap: &Snapshot, from: Option<&str>, default: &str) -> Result<String> {
        if let Some(f) = from {
            return Ok(f.trim_matches('/').to_string());
        }
        let flag = self.flag();
        let names: Vec<&String> = snap
            .sources
            .iter()
            .filter_map(|s| self.name_of(s))
            .collect();
        match names.as_slice() {
            [one] => Ok((*one).clone()),
            [] => Err(Usage::NoDump {
                flag,
                sources: snap.sources.iter().map(Source::describe).collect(),
            }
            .into()),
            many if many.iter().any(|n| *n == default) => Ok(default.to_string()),
            many => Err(Usage::SeveralDumps {
                flag,
                names: many.iter().map(|n| (*n).clone()).collect(),
            }
            .into()),
        }
    }
}

/// What a database restore did.
#[derive(Debug, Default)]
pub struct DbRestoreOutcome {
    /// Which dump of the snapshot was restored.
    pub from: String,
    /// Whether snap created the target database.
    pub created: bool,
    /// Databases dropped first (`--pg-all` with `replace`).
    pub dropped: Vec<String>,
    /// Dump bytes streamed.
    pub bytes: u64,
}

/// Restores a `--pg` dump (directory format) into the database `target` names,
/// creating it when absent; a database with tables, views or sequences of its own is
/// refused unless `replace` (then pg_restore `--clean`s what the dump has).
pub fn restore_pg(
    repo: &Repository,
    snap: &Snapshot,
    from: Option<&str>,
    target: &Dsn,
    replace: bool,
    progress: &dyn Progress,
) -> Result<DbRestoreOutcome> {
    let _lock = repo.read_lock("restore")?;
    let db = target.dbname()?;
    let from = DumpKind::Pg.pick(snap, from, &format!("db/{db}"))?;
    let node = node_at(repo, snap, &from)?;
    let NodeKind::Dir(tree_id) = node.kind else {
        return Err(Usage::NotPgDumpDir { path: from }.into());
    };
    let tree = repo.load_tree(&tree_id)?;
    if tree.get(b"toc.dat").is_none() {
        return Err(Usage::NoToc { path: from }.into());
    }
    let maint = target.with_dbname("postgres");
    let exists = !maint
        .query(&format!(
            "SELECT 1 FROM pg_catalog.pg_database WHERE datname = {}",
            literal(&db)
        ))?
        .is_empty();
    let mut out = DbRestoreOutcome {
        from: from.clone(),
        ..Default::default()
    };
    let mut clean = false;
    if exists {
        let objs = user_objects(target, 6)?;
        if !objs.is_empty() && !replace {
            return Err(Refusal::DatabaseNotEmpty {
                db,
                objects: objs.iter().take(5).cloned().collect(),
                more: objs.len() > 5,
            }
            .into());
        }
        clean = !objs.is_empty();
    } else {
        maint.query(&format!("CREATE DATABASE {}", ident(&db)))?;
        out.created = true;
    }
    let pg_restore = |dir: &Path| {
        let mut cmd = target.tool("pg_restore");
        cmd.args(["--exit-on-error", "--no-owner", "--no-privileges"]);
        if clean {
            cmd.args(["--clean", "--if-exists"]);
        }
        cmd.arg(dir);
        cmd
    };
    out.bytes = feed_pg_restore(
        repo,
        &tree,
        &std::env::temp_dir(),
        pg_restore,
        &format!("pg_restore into database {db}"),
        progress,
    )?;
    Ok(out)
}

/// The line pg_dumpall ends its output with.
const PG_DUMPALL_END: &[u8] = b"-- PostgreSQL database cluster dump complete";

/// Reads an SQL identifier as pg_dumpall writes it (`name` or `"Quoted ""Name"""`)
/// from the start of `s`.
fn read_ident(s: &str) -> Option<String> {
    if let Some(rest) = s.strip_prefix('"') {
        let mut out = String::new();
        let mut chars = rest.chars().peekable();
        while let Some(c) = chars.next() {
            if c == '"' && chars.next_if_eq(&'"').is_none() {
                return Some(out);
            }
            out.push(c);
        }
        None
    } else {
        let end = s
            .find(|c: char| !(c.is_alphanumeric() || c == '_' || c == '$'))
            .unwrap_or(s.len());
        (end > 0).then(|| s[..end].to_string())
    }
}

/// Calls `f` with every line of a file of the snapshot (without its newline).
fn for_each_line(
    repo: &Repository,
    content: &Content,
    f: &mut dyn FnMut(&[u8]) -> Result<()>,
) -> Result<()> {
    let mut partial: Vec<u8> = Vec::new();
    repo.read_content(content, &mut |chunk| {
        let mut start = 0;
        for (i, b) in chunk.iter().enumerate() {
            if *b == b'\n' {
                if partial.is_empty() {
                    f(&chunk[start..i])?;
                } else {
                    partial.extend_from_slice(&chunk[start..i]);
                    f(&partial)?;
                    partial.clear();
                }
                start = i + 1;
            }
        }
        partial.extend_from_slice(&chunk[start..]);
        Ok(())
    })?;
    if !partial.is_empty() {
        f(&partial)?;
    }
    Ok(())
}

/// Restores a `--pg-all` dump into the cluster `target` reaches, through `psql` with
/// `ON_ERROR_STOP`. Databases the dump creates that already exist are refused unless
/// `replace` (then they are dropped first); `CREATE ROLE` of roles that exist is left
/// out, so the role's `ALTER ROLE` applies to the existing one. A dump that lacks the
/// comment pg_dumpall ends its output with (cut short) is refused before anything
/// changes.
pub fn restore_pg_all(
    repo: &Repository,
    snap: &Snapshot,
    from: Option<&str>,
    target: &Dsn,
    replace: bool,
    progress: &dyn Progress,
) -> Result<DbRestoreOutcome> {
    let _lock = repo.read_lock("restore")?;
    let from = DumpKind::PgAll.pick(snap, from, "db/pg_dumpall.sql")?;
    let node = node_at(repo, snap, &from)?;
    let content = file_content(&from, &node)?;
    let (mut dbs, mut roles, mut complete) = (Vec::new(), Vec::new(), false);
    for_each_line(repo, content, &mut |line| {
        complete |= line == PG_DUMPALL_END;
        let line = String::from_utf8_lossy(line);
        if let Some(rest) = line.strip_prefix("CREATE DATABASE ") {
            dbs.extend(read_ident(rest));
        } else if let Some(rest) = line.strip_prefix("CREATE ROLE ") {
            roles.extend(read_ident(rest));
        }
        Ok(())
    })?;
    if !complete {
        return Err(Refusal::DumpNotRestorable {
            dump: from,
            why: "it lacks the \"cluster dump complete\" comment pg_dumpall ends its output with, so it was cut short (pg_dumpall failed or was stopped while it wrote); `snap cat` gives what it holds".into(),
        }
        .into());
    }
    let maint = target.maintenance();
    let existing = maint.query("SELECT datname FROM pg_catalog.pg_database")?;
    let clash: Vec<String> = dbs
        .iter()
        .filter(|d| existing.contains(d))
        .cloned()
        .collect();
    if !clash.is_empty() && !replace {
        return Err(Refusal::DatabasesExist { databases: clash }.into());
    }
    let have_roles = maint.query("SELECT rolname FROM pg_catalog.pg_roles")?;
    let skip_roles: Vec<String> = roles
        .into_iter()
        .filter(|r| have_roles.contains(r))
        .collect();
    for d in &clash {
        maint.query(&format!(
            "DROP DATABASE IF EXISTS {} WITH (FORCE)",
            ident(d)
        ))?;
    }
    let mut psql = maint.tool("psql");
    // Query results (the dump's set_config and setval calls) are not the user's news.
    psql.args([
        "-X",
        "-q",
        "-o",
        "/dev/null",
        "-v",
        "ON_ERROR_STOP=1",
        "-f",
        "-",
    ]);
    let what = format!("psql into {}", maint.shown());
    let bytes = feed_stdin(psql, &what, &mut |stdin| {
        let mut bytes = 0u64;
        for_each_line(repo, content, &mut |line| {
            let text = String::from_utf8_lossy(line);
            let skip = text
                .strip_prefix("CREATE ROLE ")
                .and_then(read_ident)
                .is_some_and(|r| skip_roles.contains(&r) && text.ends_with(';'));
            if !skip {
                stdin.write_all(line).at("<psql input>")?;
                stdin.write_all(b"\n").at("<psql input>")?;
            }
            bytes += line.len() as u64 + 1;
            progress.bytes(line.len() as u64 + 1);
            Ok(())
        })?;
        Ok(bytes)
    })?;
    Ok(DbRestoreOutcome {
        from,
        created: false,
        dropped: clash,
        bytes,
    })
}

/// Streams the file at `path` of `snap` into the standard input of `sh -c command`.
pub fn restore_pipe(
    repo: &Repository,
    snap: &Snapshot,
    path: &str,
    command: &str,
    progress: &dyn Progress,
) -> Result<u64> {
    let _lock = repo.read_lock("restore")?;
    let node = node_at(repo, snap, path)?;
    let NodeKind::File(content) = &node.kind else {
        return Err(Usage::NotAFile {
            path: path.to_string(),
        }
        .into());
    };
    let mut sh = std::process::Command::new("sh");
    sh.arg("-c").arg(command);
    feed_stdin(sh, command, &mut |stdin| {
        write_counted(repo, content, stdin, progress)
    })
}

/// Runs `cmd` (`what` in errors) with `feed` writing its standard input; the command's
/// own failure is reported first, as it explains a broken pipe on our side.
fn feed_stdin(
    cmd: std::process::Command,
    what: &str,
    feed: &mut dyn FnMut(&mut dyn Write) -> Result<u64>,
) -> Result<u64> {
    let (run, mut stdin) = Running::start_piped(cmd, what)?;
    let fed = feed(&mut stdin);
    drop(stdin);
    run.finish()?;
    match fed {
        // It ended well, but before all of its input: what it got is incomplete.
        Err(Error::Io { source, .. }) if source.kind() == std::io::ErrorKind::BrokenPipe => {
            Err(Error::Command {
                command: what.to_string(),
                status: "stopped reading its input before the end (what it got is incomplete)"
                    .into(),
                stderr: String::new(),
            })
        }
        fed => fed,
    }
}
