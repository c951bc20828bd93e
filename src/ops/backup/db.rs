//! Database sources and commands that write directories: `--pg` (pg_dump's directory
//! format, ingested file by file while pg_dump runs), `--pg-all` (pg_dumpall),
//! `--mongo` (mongodump's archive) and `--command-dir`. Each writes uncompressed,
//! byte-stable output (see `dump-dedup.md`) and is chunked with the stream profile.

use std::collections::HashSet;
use std::io::{self, Read};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use super::vdir::VDir;
use super::walk::file_content;
use super::{stream_components, Run, STREAM_MODE};
use crate::error::{IoContext, Result, SourceError, Usage};
use crate::format::chunker::Hints;
use crate::format::snapshot::Source;
use crate::format::tree::{Timestamp, Tree};
use crate::ops::dump_tables::{DumpTables, Pairing, TOC};
use crate::source::command::{shell_quote, Running};
use crate::source::fs as sfs;
use crate::source::mongo::MongoUri;
use crate::source::pg::{pg_dump_dir, pg_dumpall, Dsn};

/// (device, inode) of the files process `pid` has open, or `None` where `/proc` cannot
/// tell.
fn open_files(pid: u32) -> Option<HashSet<(u64, u64)>> {
    let dir = PathBuf::from(format!("/proc/{pid}/fd"));
    let entries = std::fs::read_dir(&dir).ok()?;
    Some(
        entries
            .flatten()
            .filter_map(|e| std::fs::metadata(e.path()).ok())
            .map(|m| (m.dev(), m.ino()))
            .collect(),
    )
}

/// A file another process is writing: at its end, a read waits for more until the
/// writer has closed it. pg_dump writes each file once, front to back, so what it has
/// written stays as it is.
struct Growing {
    file: std::fs::File,
    /// (device, inode) of the file.
    key: (u64, u64),
    writer: u32,
}

impl Read for Growing {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            let n = self.file.read(buf)?;
            if n > 0 || buf.is_empty() {
                return Ok(n);
            }
            // Closed (or the writer gone): everything written before the close is
            // visible now, so one more read finds the true end.
            if !open_files(self.writer).is_some_and(|open| open.contains(&self.key)) {
                return self.file.read(buf);
            }
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
    }
}

/// Runs pg_dump's `cmd` (`what` in errors), which writes a directory-format dump into
/// `dir`, and stores its files at `at/<file>` as it goes: the file pg_dump is writing
/// is read as it grows, so chunking, hashing and compressing hide behind the dump;
/// each file is deleted once stored, keeping temporary disk use to about one table
/// instead of a whole dump. Without `/proc`, the files are taken when pg_dump has
/// ended. `toc.dat` stays (for `pg_restore --list`).
pub(super) fn ingest_pg_dump(
    run: &Run<'_>,
    cmd: Command,
    what: &str,
    dir: &Path,
    root: &mut VDir,
    at: &[Vec<u8>],
    now: Timestamp,
) -> Result<()> {
    let mut dump = Running::start(cmd, what)?;
    if let Err(e) = ingest_dump_dir(run, &mut dump, dir, root, at, now) {
        dump.kill();
        return Err(e);
    }
    dump.finish()?;
    Ok(())
}

fn ingest_dump_dir(
    run: &Run<'_>,
    dump: &mut Running,
    dir: &Path,
    root: &mut VDir,
    at: &[Vec<u8>],
    now: Timestamp,
) -> Result<()> {
    let params = run.repo.params(crate::format::chunker::Profile::Dump);
    let prev_dir = run.previous_dir(at);
    // Each file is cut against the previous dump's file of the same table: pg_dump
    // writes (and closes) toc.dat before any table's data, so the new dump's tables
    // are known before its first data file is read.
    let listed = |tables: Result<Option<DumpTables>>| {
        tables.unwrap_or_else(|e| {
            log::warn!("dump files cut against the previous ones of the same name: {e}");
            None
        })
    };
    let mut pairing = Pairing {
        old: listed(match &prev_dir {
            Some(d) => DumpTables::of_nodes(run.repo, &d.nodes),
            None => Ok(None),
        }),
        new: None,
    };
    let mut done: HashSet<std::ffi::OsString> = HashSet::new();
    loop {
        let exited = dump.has_exited()?;
        // List first, then see what is open: a listed file that is not open has been
        // closed, so it is complete (the other order would take a file created between
        // the two looks for a finished one); an open one is followed as it grows.
        let mut entries = match sfs::read_dir_sorted(dir, |_, _| false) {
            Ok(e) => e,
            Err(e) if e.kind() == io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(e).at(dir),
        };
        let open = if exited {
            Some(HashSet::new())
        } else {
            open_files(dump.id())
        };
        entries.sort_by_key(|e| e.name.as_encoded_bytes() != TOC);
        if let Some(open) = open {
            for sfs::Entry { name, path, md } in entries {
                if done.contains(&name) {
                    continue;
                }
                let Ok(md) = md else {
                    continue;
                };
                if !md.is_file() {
                    continue;
                }
                let text = name
                    .to_str()
                    .ok_or_else(|| SourceError::PgDumpFileName { path: path.clone() })?;
                let key = (md.dev(), md.ino());
                let file = std::fs::File::open(&path).at(&path)?;
                let mut comps = at.to_vec();
                comps.push(text.as_bytes().to_vec());
                let old = pairing.old_name(text.as_bytes());
                let prev = old.and_then(|n| prev_file(run, prev_dir.as_ref(), n));
                if let (Some(old), Some(_)) = (old, &prev) {
                    let old = String::from_utf8_lossy(old);
                    log::debug!("{text}: cut against the previous dump's {old}");
                }
                let (content, size) = if open.contains(&key) {
                    let mut f = Growing {
                        file,
                        key,
                        writer: dump.id(),
                    };
                    run.ingest(&mut f, params, None, prev)?.at(&path)?
                } else {
                    run.ingest(&mut { file }, params, Some(md.len()), prev)?
                        .at(&path)?
                };
                if text.as_bytes() != TOC {
                    std::fs::remove_file(&path).at(&path)?;
                } else if pairing.old.is_some() {
                    pairing.new = listed(DumpTables::of_dir(dir).map(Some));
                }
                run.put_stream(root, &comps, content, size, STREAM_MODE, now)?;
                done.insert(name);
            }
        }
        if exited {
            return Ok(());
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// Hints for file `name` of a directory whose previous version is `dir`.
fn prev_file<'r>(run: &'r Run<'_>, dir: Option<&Tree>, name: &[u8]) -> Option<Hints<'r>> {
    run.hints(dir?.get(name).and_then(file_content))
}

/// A temporary directory for a dump, under `base`.
pub(super) fn scratch(base: &Path) -> Result<tempfile::TempDir> {
    crate::scratch::dir(base, "dump")
}

/// `--pg DSN`: the database under `db/<name>/`.
pub(super) fn pg(run: &Run<'_>, dsn: &Dsn, root: &mut VDir, now: Timestamp) -> Result<Source> {
    let db = dsn.dbname()?;
    let name = format!("db/{db}");
    let at = stream_components(&name)?;
    let tmp = scratch(&std::env::temp_dir())?;
    let dir = tmp.path().join("dump");
    run.progress.entry(Path::new(&name));
    let what = format!("pg_dump of database {db}");
    ingest_pg_dump(run, pg_dump_dir(dsn, &dir), &what, &dir, root, &at, now)?;
    Ok(Source::Pg {
        dsn: dsn.shown(),
        name,
    })
}

/// `--pg-all DSN`: the cluster as `db/pg_dumpall.sql`.
pub(super) fn pg_all(run: &Run<'_>, dsn: &Dsn, root: &mut VDir, now: Timestamp) -> Result<Source> {
    let name = "db/pg_dumpall.sql".to_string();
    let cmd = pg_dumpall(dsn)?;
    run.stream_command(cmd, "pg_dumpall", &name, root, now)?;
    Ok(Source::PgAll {
        dsn: dsn.shown(),
        name,
    })
}

/// `--mongo URI`: `mongodump --archive` of the deployment (or the URI's database) as
/// `mongo/<db>.archive`, one collection at a time so the archive's order is stable.
/// The URI (which may hold a password) goes to mongodump in a private config file.
pub(super) fn mongo(
    run: &Run<'_>,
    uri: &MongoUri,
    root: &mut VDir,
    now: Timestamp,
) -> Result<Source> {
    let name = format!("mongo/{}.archive", uri.db().unwrap_or("all"));
    let tmp = scratch(&std::env::temp_dir())?;
    let config = tmp.path().join("mongodump.yaml");
    std::fs::write(&config, uri.config_yaml()).at(&config)?;
    let mut cmd = Command::new("mongodump");
    cmd.arg(format!("--config={}", config.display()))
        .arg("--archive")
        .arg("--numParallelCollections=1");
    run.stream_command(cmd, "mongodump", &name, root, now)?;
    Ok(Source::Mongo {
        uri: uri.shown(),
        name,
    })
}

/// `--command-dir CMD --as NAME`: runs CMD with `{dir}` replaced by an empty temporary
/// directory, then stores every file it wrote there under `NAME/`.
pub(super) fn command_dir(
    run: &Run<'_>,
    command: &str,
    name: &str,
    root: &mut VDir,
    now: Timestamp,
) -> Result<Source> {
    if !command.contains("{dir}") {
        return Err(Usage::CommandDirPlaceholder {
            command: command.to_string(),
        }
        .into());
    }
    let at = stream_components(name)?;
    let tmp = scratch(&std::env::temp_dir())?;
    let dir = tmp.path().join("out");
    std::fs::create_dir(&dir).at(&dir)?;
    run.progress.entry(Path::new(name));
    let quoted = shell_quote(&dir.display().to_string());
    let mut child = Running::spawn(&command.replace("{dir}", &quoted))?;
    let mut sink = Vec::new();
    let drained = child.stdout().read_to_end(&mut sink);
    let stderr = child.finish()?;
    drained.at("<command output>")?;
    if !stderr.trim().is_empty() {
        log::debug!("`{command}`: {}", stderr.trim_end());
    }
    put_tree(run, &dir, &at, root, now)?;
    Ok(Source::CommandDir {
        command: command.to_string(),
        name: name.to_string(),
    })
}

/// Stores the regular files below `dir` at `at/...`; anything else is left out with a
/// warning.
fn put_tree(
    run: &Run<'_>,
    dir: &Path,
    at: &[Vec<u8>],
    root: &mut VDir,
    now: Timestamp,
) -> Result<()> {
    let prev_dir = run.previous_dir(at);
    for sfs::Entry { name, path, md } in sfs::read_dir_sorted(dir, |_, _| false).at(dir)? {
        let name = std::os::unix::ffi::OsStrExt::as_bytes(name.as_os_str());
        let mut comps = at.to_vec();
        comps.push(name.to_vec());
        let md = md.at(&path)?;
        if md.is_dir() {
            put_tree(run, &path, &comps, root, now)?;
        } else if md.is_file() {
            let mut f = std::fs::File::open(&path).at(&path)?;
            let prev = prev_file(run, prev_dir.as_ref(), name);
            let (content, size) = run
                .ingest(&mut f, run.stream_params, Some(md.len()), prev)?
                .at(&path)?;
            run.put_stream(root, &comps, content, size, STREAM_MODE, now)?;
        } else {
            run.warn(format!(
                "{}: not a regular file or directory, left out",
                path.display()
            ));
        }
    }
    Ok(())
}
