//! A throw-away PostgreSQL cluster for a drill: `initdb` of the newest installed
//! server into a directory of the drill's scratch directory, a unix socket in that
//! directory only (no TCP, so no port can clash: the port merely names the socket
//! file), trust authentication, fsync off. When snap runs as root the server runs as
//! the `postgres` user, which PostgreSQL requires.
//!
//! The server never outlives snap. It is started by a small `sh` watchdog whose
//! standard input is a pipe from snap: when snap ends in any way (an error, a signal,
//! even SIGKILL), the kernel closes that pipe, the watchdog's `read` returns and it
//! stops the server with SIGQUIT (immediate shutdown). Dropping the cluster does the
//! same and waits. The cluster's files are in the drill's scratch directory, which the
//! drill removes, or the next drill does when the process was killed (see
//! [`crate::scratch`]). The production database is never connected to.

use std::io::{BufRead, BufReader};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::error::{Error, IoContext, Result};
use crate::host::pid_alive;
use crate::locked;
use crate::source::pg::Dsn;

/// How long the server may take to accept connections.
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// The port number in the socket's name (`.s.PGSQL.5432`): the socket directory is
/// the drill's own, so any number is free.
const PORT: u16 = 5432;

/// Starts the server in the background and stops it when standard input closes:
/// `$1` the server's bin directory, `$2` data directory, `$3` socket directory, `$4`
/// port, `$5` log file. Prints the server's pid first.
const WATCHDOG: &str = r#""$1/postgres" -D "$2" -k "$3" -p "$4" -c listen_addresses= \
  -c fsync=off -c full_page_writes=off -c synchronous_commit=off >"$5" 2>&1 </dev/null &
echo $!
read -r _
kill -QUIT $! 2>/dev/null
wait"#;

/// A running scratch cluster.
pub struct ScratchCluster {
    dir: PathBuf,
    watchdog: Child,
    stdin: Option<ChildStdin>,
    /// The postmaster's pid.
    pub pid: u32,
}

/// The bin directory of the newest PostgreSQL server installed: Debian's
/// `/usr/lib/postgresql/<major>/bin`, RHEL's `/usr/pgsql-<major>/bin`, else the
/// directory of `initdb` on `PATH`.
pub fn server_bin() -> Option<PathBuf> {
    let mut found: Vec<(u32, PathBuf)> = Vec::new();
    let mut scan = |parent: &str, prefix: &str, sub: &str| {
        for e in std::fs::read_dir(parent).into_iter().flatten().flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let Some(v) = name.strip_prefix(prefix).and_then(|v| v.parse().ok()) else {
                continue;
            };
            let bin = e.path().join(sub);
            if bin.join("initdb").exists() && bin.join("postgres").exists() {
                found.push((v, bin));
            }
        }
    };
    scan("/usr/lib/postgresql", "", "bin");
    scan("/usr", "pgsql-", "bin");
    found.sort();
    if let Some((_, b)) = found.pop() {
        return Some(b);
    }
    std::env::split_paths(&std::env::var_os("PATH")?)
        .find(|d| d.join("initdb").exists() && d.join("postgres").exists())
}

/// The uid and gid of user `name`, from `/etc/passwd`.
fn user_ids(name: &str) -> Option<(u32, u32)> {
    let passwd = std::fs::read_to_string("/etc/passwd").ok()?;
    passwd.lines().find_map(|l| {
        let f: Vec<&str> = l.split(':').collect();
        (f.len() > 3 && f[0] == name).then(|| Some((f[2].parse().ok()?, f[3].parse().ok()?)))?
    })
}

fn fail(detail: impl Into<String>) -> Error {
    Error::Drill {
        what: "scratch PostgreSQL cluster".into(),
        detail: detail.into(),
    }
}

/// The last lines of a server or initdb log, for an error.
fn log_tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(8)..].join("\n")
}

impl ScratchCluster {
    /// Makes and starts a cluster in directory `name` of the drill's scratch directory
    /// `scratch` (made traversable for the server's user).
    pub fn start(scratch: &Path, name: &str) -> Result<ScratchCluster> {
        let bin = server_bin().ok_or_else(|| {
            fail("no PostgreSQL server found (initdb, postgres): install the server package of your major version, e.g. apt-get install postgresql")
        })?;
        let dir = scratch.join(name);
        std::fs::create_dir(&dir).at(&dir)?;
        let ids = if rustix::process::geteuid().is_root() {
            let ids = user_ids("postgres").ok_or_else(|| {
                fail("snap runs as root and PostgreSQL refuses to; no `postgres` user to run it as")
            })?;
            std::fs::set_permissions(scratch, std::fs::Permissions::from_mode(0o711))
                .at(scratch)?;
            std::os::unix::fs::chown(&dir, Some(ids.0), Some(ids.1)).at(&dir)?;
            Some(ids)
        } else {
            None
        };
        let as_owner = |c: &mut Command| {
            if let Some((uid, gid)) = ids {
                c.uid(uid).gid(gid);
            }
        };
        let data = dir.join("data");
        let log = dir.join("log");
        let mut initdb = Command::new(bin.join("initdb"));
        initdb
            .arg("-D")
            .arg(&data)
            .args([
                "-U",
                "postgres",
                "--auth=trust",
                "-E",
                "UTF8",
                "--locale=C",
                "-N",
            ])
            .current_dir(&dir);
        as_owner(&mut initdb);
        let out = initdb
            .output()
            .map_err(|e| fail(format!("cannot run {}: {e}", bin.join("initdb").display())))?;
        if !out.status.success() {
            return Err(fail(format!(
                "initdb failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            )));
        }
        let mut sh = Command::new("sh");
        sh.arg("-c")
            .arg(WATCHDOG)
            .arg("snap-drill-pg")
            .arg(&bin)
            .arg(&data)
            .arg(&dir)
            .arg(PORT.to_string())
            .arg(&log)
            .current_dir(&dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null());
        as_owner(&mut sh);
        let mut watchdog = sh
            .spawn()
            .map_err(|e| fail(format!("cannot start the server: {e}")))?;
        let stdin = watchdog.stdin.take();
        let mut line = String::new();
        let stdout = watchdog.stdout.take().expect("stdout is piped");
        let read = BufReader::new(stdout).read_line(&mut line);
        let mut cluster = ScratchCluster {
            dir,
            watchdog,
            stdin,
            pid: 0,
        };
        cluster.pid = match (read, line.trim().parse()) {
            (Ok(_), Ok(pid)) => pid,
            _ => return Err(fail("the server's watchdog did not start")),
        };
        // Known to [`stop_all`] from its first moment, before it accepts connections.
        locked(&RUNNING).push(cluster.pid);
        cluster.wait_ready(&bin, &log)?;
        Ok(cluster)
    }

    /// Waits until the server accepts connections.
    fn wait_ready(&self, bin: &Path, log: &Path) -> Result<()> {
        let started = Instant::now();
        loop {
            let ready = Command::new(bin.join("pg_isready"))
                .args(["-q", "-h"])
                .arg(&self.dir)
                .args(["-p", &PORT.to_string()])
                .status()
                .is_ok_and(|s| s.success());
            if ready {
                return Ok(());
            }
            if !pid_alive(self.pid) {
                return Err(fail(format!("the server exited:\n{}", log_tail(log))));
            }
            if started.elapsed() > START_TIMEOUT {
                return Err(fail(format!(
                    "the server did not accept connections within {} s:\n{}",
                    START_TIMEOUT.as_secs(),
                    log_tail(log)
                )));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// A connection string for database `db` of the cluster (any name: quotes,
    /// spaces and backslashes in it are set as a value, never parsed).
    pub fn dsn(&self, db: &str) -> Dsn {
        Dsn::parse(&format!("port={PORT} user=postgres"))
            .expect("the scratch cluster's connection string parses")
            .with_param("host", &self.dir.display().to_string())
            .with_dbname(db)
    }

    /// The socket directory (libpq's `host`).
    pub fn socket_dir(&self) -> &Path {
        &self.dir
    }

    /// The port the socket is named by.
    pub fn port(&self) -> u16 {
        PORT
    }
}

/// Whether process `pid` runs: alive and not a zombie (the watchdog reaps its server
/// only when snap is gone).
fn running(pid: u32) -> bool {
    pid_alive(pid)
        && !std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| {
            s.rsplit_once(')')
                .is_some_and(|(_, r)| r.trim_start().starts_with('Z'))
        })
}

/// The servers of the scratch clusters running in this process.
static RUNNING: Mutex<Vec<u32>> = Mutex::new(Vec::new());

/// Stops every scratch server of this process at once (see [`stop`]), for a front end
/// about to exit on a signal, when destructors do not run.
pub fn stop_all() {
    for pid in locked(&RUNNING).drain(..) {
        stop(pid);
    }
}

/// Stops server `pid` at once (immediate shutdown, as the watchdog does) and waits up
/// to five seconds for it to be gone.
pub fn stop(pid: u32) {
    if let Some(p) = i32::try_from(pid)
        .ok()
        .and_then(rustix::process::Pid::from_raw)
    {
        let _ = rustix::process::kill_process(p, rustix::process::Signal::QUIT);
    }
    let t = Instant::now();
    while running(pid) && t.elapsed() < Duration::from_secs(5) {
        std::thread::sleep(Duration::from_millis(20));
    }
}

impl Drop for ScratchCluster {
    /// Closes the watchdog's pipe, so it stops the server, and waits for both. The
    /// server stays listed for [`stop_all`] until it is gone: a signal handler that
    /// finds it no longer listed removes its directory, and a server still shutting
    /// down there would write into it.
    fn drop(&mut self) {
        drop(self.stdin.take());
        let _ = self.watchdog.wait();
        locked(&RUNNING).retain(|p| *p != self.pid);
    }
}
