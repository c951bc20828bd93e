//! `restore --pg-base … --start`: starts a server on the restored data directory, on a
//! Unix socket in a scratch directory of its own (no TCP, archiving off, so that an
//! inspection copy neither clashes with the source's port nor archives a new timeline
//! into the repository), and waits until its recovery has reached the target, reading
//! the server's log (in the C locale): paused there, promoted, shut down as asked, or
//! failed (a target past the archived WAL).

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::error::{Error, IoContext, Result};

/// A server started on a restored data directory.
#[derive(Clone, Debug)]
pub struct Started {
    /// The directory holding its socket and log (`host` for clients).
    pub socket_dir: PathBuf,
    /// Its log file.
    pub log: PathBuf,
    /// Where its recovery ended.
    pub state: Recovered,
}

/// Where a started server's recovery ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Recovered {
    /// Paused at the target, read-only: `SELECT pg_wal_replay_resume()` promotes it.
    Paused,
    /// Recovery is over and the server accepts writes.
    Promoted,
    /// It reached the target and shut down, as asked.
    ShutDown,
}

/// How long recovery may take before `--start` gives up waiting (the server keeps
/// going).
const PATIENCE: Duration = Duration::from_secs(24 * 3600);

/// The directory of PostgreSQL `major`'s server programs, as Debian installs them;
/// else `None` (they are then looked for on `PATH`).
fn bin_dir(major: u32) -> Option<PathBuf> {
    let d = PathBuf::from(format!("/usr/lib/postgresql/{major}/bin"));
    d.join("pg_ctl").exists().then_some(d)
}

/// Starts PostgreSQL `server_version` (`server_version_num`) on `data`, as `owner`
/// when given, and waits for its recovery to end.
pub fn start(data: &Path, server_version: u32, owner: Option<(u32, u32)>) -> Result<Started> {
    let socket_dir = tempfile::Builder::new()
        .prefix("snap-pg.")
        .tempdir()
        .at(std::env::temp_dir())?
        .keep();
    if let Some((uid, gid)) = owner {
        rustix::fs::chown(
            &socket_dir,
            Some(rustix::fs::Uid::from_raw(uid)),
            Some(rustix::fs::Gid::from_raw(gid)),
        )
        .map_err(std::io::Error::from)
        .at(&socket_dir)?;
    }
    let log = socket_dir.join("log");
    let pg_ctl =
        bin_dir(server_version / 10000).map_or_else(|| "pg_ctl".into(), |d| d.join("pg_ctl"));
    let mut cmd = Command::new(&pg_ctl);
    cmd.arg("-D")
        .arg(data)
        .arg("-l")
        .arg(&log)
        .arg("-o")
        .arg(format!(
            "-c listen_addresses='' -c unix_socket_directories='{}' -c archive_mode=off -c lc_messages=C",
            socket_dir.display()
        ))
        .arg("-W")
        .arg("start");
    if let Some((uid, gid)) = owner {
        cmd.uid(uid).gid(gid);
    }
    let what = format!("pg_ctl start on {}", data.display());
    crate::source::command::Running::capture(cmd, &what)?;
    let state = wait(&log, data)?;
    Ok(Started {
        socket_dir,
        log,
        state,
    })
}

/// Reads the server log at `log` until recovery has ended one way or the other.
fn wait(log: &Path, data: &Path) -> Result<Recovered> {
    let started = Instant::now();
    loop {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        if let Some(line) = text
            .lines()
            .find(|l| l.contains("FATAL:") || l.contains("PANIC:"))
        {
            return Err(Error::internal(
                format!(
                    "the restored server on {} stopped: {}; its log is {}",
                    data.display(),
                    line.trim(),
                    log.display()
                ),
                None,
            ));
        }
        if text.contains("pausing at the end of recovery") {
            return Ok(Recovered::Paused);
        }
        if text.contains("database system is shut down") {
            return Ok(Recovered::ShutDown);
        }
        if text.contains("selected new timeline ID")
            && text.contains("database system is ready to accept connections")
        {
            return Ok(Recovered::Promoted);
        }
        if started.elapsed() > PATIENCE {
            return Err(Error::internal(
                format!(
                    "the restored server on {} is still recovering after a day; its log is {}",
                    data.display(),
                    log.display()
                ),
                None,
            ));
        }
        crate::interrupt::check()?;
        std::thread::sleep(Duration::from_millis(100));
    }
}
