//! An ephemeral PostgreSQL cluster for the tests: `initdb` into a temp directory, a
//! unix socket only (no TCP), trust authentication, fsync off. When the tests run as
//! root, the server runs as the `postgres` user (PostgreSQL refuses to run as root).
//!
//! Without server binaries a test says so and returns; with
//! `SNAP_TEST_REQUIRE_SERVERS=1` (set by `.ci/run`) that is a failure.

use std::path::{Path, PathBuf};
use std::process::Command;

pub struct Pg {
    pub dir: tempfile::TempDir,
    bin: PathBuf,
    run_as: Option<String>,
    /// The data directory: `dir/data`, or a restored one elsewhere.
    data: PathBuf,
    /// The directory of its socket and log: `dir`, or that of a server started by
    /// another program.
    sock: PathBuf,
}

/// The user the servers run as: `postgres` when the tests run as root (PostgreSQL
/// refuses root), else the tests' own.
fn server_user() -> Option<String> {
    rustix::process::geteuid()
        .is_root()
        .then(|| "postgres".to_string())
}

/// [`server_bin`], or `None` after reporting that there is none.
fn installed() -> Option<PathBuf> {
    let bin = server_bin();
    if bin.is_none() {
        super::missing(
            "a PostgreSQL server (initdb, pg_ctl)",
            "apt-get install postgresql",
        );
    }
    bin
}

/// Newest `/usr/lib/postgresql/<version>/bin` with `initdb`, or `SNAP_TEST_PG_BIN`.
fn server_bin() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("SNAP_TEST_PG_BIN") {
        return Some(PathBuf::from(p));
    }
    let mut found: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .flatten()
        .filter_map(|e| {
            let v: u32 = e.file_name().to_str()?.parse().ok()?;
            let bin = e.path().join("bin");
            bin.join("initdb").exists().then_some((v, bin))
        })
        .collect();
    found.sort();
    found.pop().map(|(_, b)| b)
}

impl Pg {
    /// Starts a cluster, or reports that none can be started and returns `None`.
    pub fn start() -> Option<Pg> {
        Pg::start_with(&[])
    }

    /// A directory owned by the server's user (a place for a repository the server's
    /// `archive_command` writes to, or for a restored data directory).
    pub fn server_dir() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        if rustix::process::geteuid().is_root() {
            let st = Command::new("chown")
                .arg("postgres:")
                .arg(dir.path())
                .status()
                .unwrap();
            assert!(
                st.success(),
                "chown of {} to postgres failed",
                dir.path().display()
            );
        }
        dir
    }

    /// [`Pg::start`] with `conf` lines added to `postgresql.conf`.
    pub fn start_with(conf: &[String]) -> Option<Pg> {
        let bin = installed()?;
        let dir = Pg::server_dir();
        let run_as = server_user();
        let data = dir.path().join("data");
        let sock = dir.path().to_path_buf();
        let pg = Pg {
            dir,
            bin,
            run_as,
            data,
            sock,
        };
        pg.server_cmd(
            "initdb",
            &[
                "-D",
                &pg.data(),
                "-U",
                "postgres",
                "--auth=trust",
                "-E",
                "UTF8",
                "--locale=C",
            ],
        );
        let conf_file = pg.data.join("postgresql.conf");
        let mut text = std::fs::read_to_string(&conf_file).unwrap();
        for line in conf {
            text.push_str(line);
            text.push('\n');
        }
        std::fs::write(&conf_file, text).unwrap();
        pg.run_server("");
        Some(pg)
    }

    /// Starts a server on the data directory `data` (a restored base backup, owned by
    /// the server's user), its socket and log in a directory of its own; `opts` are
    /// more server options (`-c name=value ...`).
    pub fn on_data_dir(data: &Path, opts: &str) -> Option<Pg> {
        let bin = installed()?;
        let dir = Pg::server_dir();
        let pg = Pg {
            sock: dir.path().to_path_buf(),
            dir,
            bin,
            run_as: server_user(),
            data: data.to_path_buf(),
        };
        pg.run_server(opts);
        Some(pg)
    }

    /// A handle on a server another program started on `data`, with its socket and
    /// log in `sock`; stopped when dropped, like the others.
    pub fn adopt(data: &Path, sock: &Path) -> Pg {
        Pg {
            dir: tempfile::tempdir().unwrap(),
            bin: server_bin().expect("a server was started"),
            run_as: server_user(),
            data: data.to_path_buf(),
            sock: sock.to_path_buf(),
        }
    }

    fn run_server(&self, more: &str) {
        let pg = self;
        let opts = format!("-c listen_addresses='' -c unix_socket_directories={} -c fsync=off -c full_page_writes=off {more}", pg.sock());
        pg.server_cmd(
            "pg_ctl",
            &[
                "-D",
                &pg.data(),
                "-o",
                &opts,
                "-w",
                "-l",
                &format!("{}/log", pg.dir.path().display()),
                "start",
            ],
        );
    }

    fn data(&self) -> String {
        self.data.display().to_string()
    }

    /// The server's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.sock.join("log")).unwrap_or_default()
    }

    /// The socket directory: the value for `host`.
    pub fn sock(&self) -> String {
        self.sock.display().to_string()
    }

    /// A server tool, run as the cluster's owner.
    fn server_tool(&self, tool: &str) -> Command {
        let exe = self.bin.join(tool);
        match &self.run_as {
            Some(user) => {
                let mut c = Command::new("runuser");
                c.args(["-u", user, "--"]).arg(exe);
                c
            }
            None => Command::new(exe),
        }
    }

    fn server_cmd(&self, tool: &str, args: &[&str]) {
        let out = self.server_tool(tool).args(args).output().unwrap();
        assert!(
            out.status.success(),
            "{tool} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// A client tool (psql, pg_dump, ...) from the server's version, connected to `db`.
    pub fn client(&self, tool: &str, db: &str) -> Command {
        let mut c = Command::new(self.bin.join(tool));
        c.env("PGHOST", self.sock())
            .env("PGPORT", "5432")
            .env("PGUSER", "postgres")
            .env("PGDATABASE", db);
        c
    }

    /// Runs SQL with psql (stop on the first error) and returns its unaligned output.
    pub fn sql(&self, db: &str, sql: &str) -> String {
        let out = self
            .client("psql", db)
            .args(["-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-c", sql])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "psql failed on {sql:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    /// A libpq connection string for database `db`.
    pub fn dsn(&self, db: &str) -> String {
        format!("host={} user=postgres dbname={db}", self.sock())
    }

    /// Database `db` as plain SQL (schema and data, no owners), comparable across
    /// clusters and runs; `extra` pg_dump options.
    pub fn dump(&self, db: &str, extra: &[String]) -> String {
        let out = self
            .client("pg_dump", db)
            .args(["-Fp", "--restrict-key=snaptest", "--no-owner"])
            .args(extra)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "pg_dump {db}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout)
            .unwrap()
            .lines()
            .filter(|l| !l.starts_with("-- Dumped"))
            .collect::<Vec<_>>()
            .join("\n")
    }

    pub fn createdb(&self, name: &str) {
        self.sql("postgres", &format!("CREATE DATABASE {name}"));
    }
}

impl Drop for Pg {
    fn drop(&mut self) {
        let _ = self
            .server_tool("pg_ctl")
            .args(["-D", &self.data(), "-m", "immediate", "stop"])
            .output();
    }
}
