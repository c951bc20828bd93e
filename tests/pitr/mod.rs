//! PostgreSQL point-in-time recovery: a real cluster archiving its WAL into a
//! repository through `snap wal push`, a base backup through `backup --pg-base`, and
//! restores to a time, to `immediate` and to the end of the archive, started as real
//! servers whose dumps must equal the source's at that point; the archive contract
//! (durable before exit 0, identical repeats accepted, different bytes refused) and
//! `wal check`'s gaps.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use predicates::prelude::*;

use crate::util::garage::Garage;
use crate::util::pg::Pg;
use crate::util::servers::Sshd;
use crate::util::{fault_run, json, random_bytes, snap_at, snap_process, Env};

/// A cluster archiving into a repository.
struct Archiving {
    pg: Pg,
    /// Holds a local repository, in `repo` (owned by the server's user).
    place: tempfile::TempDir,
    /// `--repo`'s argument, and the environment a client of the repository needs.
    url: String,
    repo_env: Vec<(&'static str, String)>,
    env: Env,
}

impl Archiving {
    /// Archiving into a local repository in a directory its server can write to.
    fn start() -> Option<Archiving> {
        let place = Pg::server_dir();
        let repo = place.path().join("repo").display().to_string();
        Archiving::start_in(place, repo, Vec::new())
    }

    /// Archiving into the repository at `url`, which `archive_command` reaches with
    /// `repo_env` set in front of it, as an admin would write it.
    fn start_in(
        place: tempfile::TempDir,
        url: String,
        repo_env: Vec<(&'static str, String)>,
    ) -> Option<Archiving> {
        let env = Env::new();
        snap_at(&url, &env.cache(), &repo_env, &["init"])
            .assert()
            .success();
        let repo = place.path().join("repo");
        if repo.exists() {
            give_to_postgres(&repo);
        }
        let exe = assert_cmd::cargo::cargo_bin("snap");
        let vars: String = repo_env.iter().map(|(k, v)| format!("{k}={v} ")).collect();
        let pg = Pg::start_with(&[
            "archive_mode = on".into(),
            format!(
                "archive_command = '{vars}{} --repo {url} wal push %p'",
                exe.display()
            ),
            "wal_level = replica".into(),
        ])?;
        Some(Archiving {
            pg,
            place,
            url,
            repo_env,
            env,
        })
    }

    /// A local repository's directory.
    fn repo(&self) -> PathBuf {
        self.place.path().join("repo")
    }

    fn snap(&self, args: &[&str]) -> assert_cmd::Command {
        snap_at(&self.url, &self.env.cache(), &self.repo_env, args)
    }

    fn archive_now(&self) {
        archive_now(&self.pg);
    }

    fn churn(&self, tx: u32) {
        churn(&self.pg, tx);
    }

    /// Database `app`, pgbench's tables at scale 1, and a base backup of the cluster.
    fn app_and_base_backup(&self) {
        self.pg.createdb("app");
        churn_init(&self.pg);
        self.base_backup();
    }

    fn base_backup(&self) {
        let dsn = self.pg.dsn("postgres");
        self.snap(&["backup", "--pg-base", &dsn]).assert().success();
    }

    /// `restore --pg-base latest --pg-data DIR ARGS` with DIR new, in a place its
    /// server can use: the place, DIR and the command.
    fn restore(&self, args: &[&str]) -> (tempfile::TempDir, PathBuf, assert_cmd::Command) {
        let place = Pg::server_dir();
        let data = place.path().join("data");
        let mut c = self.snap(&["restore", "--pg-base", "latest", "--pg-data"]);
        c.arg(&data).args(args);
        (place, data, c)
    }

    /// `wal check --json`, with its exit status.
    fn wal_check(&self) -> (Option<i32>, serde_json::Value) {
        let out = self.snap(&["wal", "check", "--json"]).output().unwrap();
        (
            out.status.code(),
            serde_json::from_slice(&out.stdout).unwrap(),
        )
    }
}

/// `len` bytes of WAL named `name`, as `wal push` accepts them: the first page's long
/// header PostgreSQL writes (the segment's address and size), random bytes after it.
fn segment(name: &str, len: usize, seed: &str) -> Vec<u8> {
    let mut b = random_bytes(len, seed);
    let hex = |r: std::ops::Range<usize>| u64::from_str_radix(&name[r], 16).unwrap();
    let segno = hex(8..16) * (0x1_0000_0000 / len as u64) + hex(16..24);
    let tli = u32::try_from(hex(0..8)).unwrap();
    let size = u32::try_from(len).unwrap();
    b[0..2].copy_from_slice(&0xD10Du16.to_ne_bytes());
    b[2..4].copy_from_slice(&2u16.to_ne_bytes());
    b[4..8].copy_from_slice(&tli.to_ne_bytes());
    b[8..16].copy_from_slice(&(segno * len as u64).to_ne_bytes());
    b[16..24].fill(0);
    b[24..32].copy_from_slice(&7_000_000_000_000_000_001u64.to_ne_bytes());
    b[32..36].copy_from_slice(&size.to_ne_bytes());
    b[36..40].copy_from_slice(&8192u32.to_ne_bytes());
    b
}

/// Switches `pg` to a new WAL segment and waits until the one it ended is archived.
fn archive_now(pg: &Pg) {
    let seg = pg.sql("postgres", "SELECT pg_walfile_name(pg_switch_wal())");
    let seg = seg.trim().to_string();
    let start = Instant::now();
    loop {
        let last = pg.sql("postgres", "SELECT last_archived_wal FROM pg_stat_archiver");
        if last.trim() >= seg.as_str() {
            return;
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "{seg} was not archived within a minute (last {last:?}); server log:\n{}",
            pg.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// `pgbench ARGS` on database `app`, which must succeed.
fn pgbench(pg: &Pg, args: &[&str]) {
    let out = pg.client("pgbench", "app").args(args).output().unwrap();
    assert!(
        out.status.success(),
        "pgbench {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// pgbench's tables at scale 1 in database `app`.
fn churn_init(pg: &Pg) {
    pgbench(pg, &["-i", "-s", "1", "-q"]);
}

fn churn(pg: &Pg, tx: u32) {
    pgbench(pg, &["-n", "-t", &tx.to_string()]);
}

fn give_to_postgres(p: &Path) {
    if rustix::process::geteuid().is_root() {
        let st = std::process::Command::new("chown")
            .args(["-R", "postgres:"])
            .arg(p)
            .status()
            .unwrap();
        assert!(st.success());
    }
}

/// Restores the latest base backup into a new data directory with `args`, starts a
/// server on it (not archiving) and waits until recovery has ended (promoted).
fn recover(a: &Archiving, args: &[&str]) -> (tempfile::TempDir, Pg) {
    recover_with(a, args, "-c archive_mode=off")
}

/// [`recover`] with the server options `opts`.
fn recover_with(a: &Archiving, args: &[&str], opts: &str) -> (tempfile::TempDir, Pg) {
    let (place, data, mut restore) = a.restore(args);
    restore.assert().success();
    assert!(data.join("recovery.signal").exists());
    let pg = Pg::on_data_dir(&data, opts).unwrap();
    until_promoted(&pg);
    (place, pg)
}

/// Waits until `pg`'s recovery has ended.
fn until_promoted(pg: &Pg) {
    let start = Instant::now();
    loop {
        let out = pg
            .client("psql", "postgres")
            .args(["-X", "-A", "-t", "-c", "SELECT pg_is_in_recovery()"])
            .output()
            .unwrap();
        if String::from_utf8_lossy(&out.stdout).trim() == "f" {
            return;
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "recovery did not end within a minute; server log:\n{}",
            pg.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn recovery_to_a_time_to_immediate_and_to_the_end_gives_the_database_of_that_moment() {
    let Some(a) = Archiving::start() else { return };
    a.pg.createdb("app");
    pgbench(&a.pg, &["-i", "-s", "2", "-q"]);
    let dsn = a.pg.dsn("postgres");
    let backup = json(a.snap(&["backup", "--json", "--pg-base", &dsn]));
    let at_base = a.pg.dump("app", &[]);
    let record = &json(a.snap(&["list", "--json"]))[0];
    let text = record.to_string();
    assert!(
        text.contains("pg_base") && text.contains("start_lsn"),
        "{text}"
    );
    assert!(
        backup["summary"]["files"].as_u64().unwrap() > 100,
        "{backup}"
    );
    // Every file of the data directory is in the snapshot, label and manifest too.
    let ls = a.snap(&["ls", "latest", "pg/base"]).output().unwrap();
    let ls = String::from_utf8_lossy(&ls.stdout);
    for f in ["backup_label", "backup_manifest", "PG_VERSION", "global"] {
        assert!(ls.contains(f), "{f} missing from:\n{ls}");
    }

    a.churn(300);
    a.pg.sql("app", "CREATE TABLE marker AS SELECT 1 AS before_t");
    std::thread::sleep(Duration::from_millis(1100));
    let t = a.pg.sql("postgres", "SELECT now()").trim().to_string();
    let at_t = a.pg.dump("app", &[]);
    a.pg.sql("postgres", "SELECT pg_create_restore_point('at t')");
    std::thread::sleep(Duration::from_millis(1100));
    a.churn(300);
    a.pg.sql("app", "CREATE TABLE after_t AS SELECT 2 AS x");
    let at_end = a.pg.dump("app", &[]);
    a.archive_now();
    // Three different moments, so that each recovery below can only match its own.
    assert!(at_base != at_t && at_t != at_end && at_base != at_end);

    let check = a.snap(&["wal", "check"]).output().unwrap();
    let said = String::from_utf8_lossy(&check.stdout);
    assert!(check.status.success(), "{said}");
    assert!(said.contains("ok: recoverable"), "{said}");

    let (_p1, to_t) = recover(&a, &["--target-time", &t, "--target-action", "promote"]);
    assert_eq!(to_t.dump("app", &[]), at_t, "recovery to {t}");
    drop(to_t);
    let (_p1, to_point) = recover(&a, &["--target-name", "at t", "--target-action", "promote"]);
    assert!(
        to_point.dump("app", &[]) == at_t,
        "recovery to the restore point"
    );
    drop(to_point);
    // snap starts this one itself and waits: paused at the target, read-only.
    let (_p2, data, restore) = a.restore(&["--target", "immediate", "--start", "--json"]);
    let out = json(restore);
    assert_eq!(out["recovery"], "paused", "{out}");
    let sock = PathBuf::from(out["socket_dir"].as_str().unwrap());
    let immediate = Pg::adopt(&data, &sock);
    assert_eq!(
        immediate.dump("app", &[]),
        at_base,
        "recovery to the backup's end"
    );
    drop(immediate);
    fs::remove_dir_all(&sock).unwrap();
    let (_p3, latest) = recover(&a, &[]);
    assert_eq!(
        latest.dump("app", &[]),
        at_end,
        "recovery to the end of the archive"
    );
}

#[test]
fn pushes_are_refused_on_different_bytes_and_gaps_are_named() {
    let Some(a) = Archiving::start() else { return };
    a.pg.createdb("app");
    a.pg.sql(
        "app",
        "CREATE TABLE t AS SELECT g FROM generate_series(1, 1000) g",
    );
    let dsn = a.pg.dsn("postgres");
    a.snap(&["backup", "--pg-base", &dsn]).assert().success();
    for _ in 0..3 {
        a.pg.sql(
            "app",
            "INSERT INTO t SELECT g FROM generate_series(1, 1000) g",
        );
        a.archive_now();
    }
    // The contract: the same bytes again succeed, other bytes fail and change nothing.
    let wal_dir = a.repo().join("wal");
    let seg_dir = fs::read_dir(&wal_dir)
        .unwrap()
        .flatten()
        .find(|e| e.path().is_dir())
        .unwrap()
        .path();
    let mut segs: Vec<PathBuf> = fs::read_dir(&seg_dir)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.file_name().unwrap().len() == 24)
        .collect();
    segs.sort();
    assert!(segs.len() >= 3, "{segs:?}");
    // One archived after the base backup, with a newer one after it.
    let lost = segs[segs.len() - 2].clone();
    let name = lost.file_name().unwrap().to_str().unwrap().to_string();
    let scratch = a.env.path("x");
    fs::create_dir_all(&scratch).unwrap();
    let fetched = scratch.join("fetched");
    a.snap(&["wal", "fetch", &name, fetched.to_str().unwrap()])
        .assert()
        .success();
    let copy = scratch.join(&name);
    fs::copy(&fetched, &copy).unwrap();
    a.snap(&["wal", "push", copy.to_str().unwrap()])
        .assert()
        .success();
    let mut bytes = fs::read(&copy).unwrap();
    bytes[9000] ^= 1;
    fs::write(&copy, &bytes).unwrap();
    let before = fs::read(&lost).unwrap();
    let out = a
        .snap(&["wal", "push", copy.to_str().unwrap()])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains(&name) && err.contains("different content"),
        "{err}"
    );
    assert_eq!(
        fs::read(&lost).unwrap(),
        before,
        "the archived file changed"
    );
    // A real segment under another segment's name, or no WAL at all: refused before
    // anything is stored.
    let elsewhere = format!(
        "{}{:08X}",
        &name[..16],
        u32::from_str_radix(&name[16..], 16).unwrap() + 0x40
    );
    let renamed = scratch.join(&elsewhere);
    fs::copy(&fetched, &renamed).unwrap();
    let junk = scratch.join("000000010000000000000099");
    let history = scratch.join("00000002.history");
    fs::write(&history, "junk\n").unwrap();
    let newest_before = a.wal_check().1["newest"].as_str().unwrap().to_string();
    fs::write(&junk, random_bytes(100, "junk")).unwrap();
    for (path, says) in [
        (&renamed, "its header places it at"),
        (&junk, "is no WAL file"),
        (&history, "is no earlier timeline and location"),
    ] {
        let out = a
            .snap(&["wal", "push", path.to_str().unwrap()])
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{err}");
        assert!(
            err.contains("is no WAL file of that name") && err.contains(says),
            "{err}"
        );
    }
    assert_eq!(
        a.wal_check().1["newest"].as_str(),
        Some(newest_before.as_str()),
        "a refused file was stored"
    );
    // A name the archive lacks: exit 1, and nothing written.
    let absent = scratch.join("absent");
    let out = a
        .snap(&[
            "wal",
            "fetch",
            "0000000900000000000000AA",
            absent.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(!absent.exists());

    // A segment lost from the middle: named by wal check, and a restore to a point
    // past it is refused before anything is written.
    fs::remove_file(&lost).unwrap();
    let out = a.snap(&["wal", "check"]).output().unwrap();
    let said = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{said}");
    assert!(said.contains(&format!("{name} .. {name}")), "{said}");
    let out = a.snap(&["wal", "check", "--json"]).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        report["bases"][0]["gaps"][0]["first"],
        name.as_str(),
        "{report}"
    );
    let lsn =
        a.pg.sql("postgres", "SELECT pg_current_wal_lsn()")
            .trim()
            .to_string();
    let (_place, data, mut restore) = a.restore(&["--target-lsn", &lsn]);
    let out = restore.output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains(&name) && err.contains("earlier target"),
        "{err}"
    );
    assert!(!data.exists(), "a refused restore wrote {}", data.display());
}

/// A restored copy promoted at a past time starts timeline 2 and archives into the
/// same repository; recovery of the base backup to the end then follows the switch.
#[test]
fn recovery_follows_a_timeline_switch() {
    let Some(a) = Archiving::start() else { return };
    a.app_and_base_backup();
    a.churn(200);
    std::thread::sleep(Duration::from_millis(1100));
    let t = a.pg.sql("postgres", "SELECT now()").trim().to_string();
    std::thread::sleep(Duration::from_millis(1100));
    a.churn(200);
    let at_end_tl1 = a.pg.dump("app", &[]);
    a.archive_now();
    // The copy archives too: its postgresql.conf is the source's.
    let (_p, copy) = recover_with(&a, &["--target-time", &t, "--target-action", "promote"], "");
    churn(&copy, 300);
    copy.sql("app", "CREATE TABLE on_timeline_2 AS SELECT 1 AS x");
    let at_copy = copy.dump("app", &[]);
    archive_now(&copy);
    let history = a.repo().join("wal/00000002.history");
    assert!(
        history.exists(),
        "the promoted copy archived no timeline history"
    );
    let (code, report) = a.wal_check();
    assert_eq!(code, Some(0), "{report}");
    assert_eq!(
        report["bases"][0]["timelines"],
        serde_json::json!([1, 2]),
        "{report}"
    );
    drop(copy);
    let (_p2, latest) = recover(&a, &[]);
    assert_eq!(
        latest.dump("app", &[]),
        at_copy,
        "recovery did not follow timeline 2"
    );
    drop(latest);
    // The old branch, asked for: timeline 1 to its end, as the source left it.
    let (_p3, on_tl1) = recover(&a, &["--target-timeline", "1"]);
    assert!(
        on_tl1.dump("app", &[]) == at_end_tl1,
        "recovery did not stay on timeline 1"
    );
    drop(on_tl1);
    // Without the history file, recovery would silently stay on timeline 1.
    fs::remove_file(&history).unwrap();
    let (code, report) = a.wal_check();
    assert_eq!(code, Some(1), "{report}");
    assert_eq!(
        report["missing_history"],
        serde_json::json!(["00000002.history"]),
        "{report}"
    );
}

/// forget and prune drop the WAL only the forgotten base backup needed; a push goes
/// through while another process holds the exclusive lock; sync takes the archive
/// along.
#[test]
fn retention_locks_and_sync_of_the_archive() {
    let Some(a) = Archiving::start() else { return };
    a.app_and_base_backup();
    for _ in 0..3 {
        a.churn(100);
        a.archive_now();
    }
    a.base_backup();
    a.churn(100);
    a.archive_now();
    let (code, before) = a.wal_check();
    assert_eq!(code, Some(0), "{before}");
    let second_start = before["bases"][1]["start"].as_str().unwrap().to_string();
    let count = |r: &serde_json::Value| r["segments"].as_u64().unwrap();
    let out = a
        .snap(&["forget", "--keep-last", "1", "--prune"])
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{said}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        said.contains("archived WAL files older than the oldest base backup"),
        "{said}"
    );
    let (code, after) = a.wal_check();
    assert_eq!(code, Some(0), "{after}");
    assert!(count(&after) < count(&before), "{before} {after}");
    let seg_dir = a.repo().join("wal").join(&second_start[..16]);
    let names: Vec<String> = fs::read_dir(&seg_dir)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.len() == 24)
        .collect();
    assert!(
        names.iter().all(|n| *n >= second_start),
        "{names:?} before {second_start}"
    );
    assert!(names.contains(&second_start), "{names:?}");

    // An exclusive lock held by a live process (this one) stops a backup, not a push.
    let lock = a.repo().join("locks/0123456789abcdef.json");
    let host = fs::read_to_string("/proc/sys/kernel/hostname").unwrap();
    fs::write(
        &lock,
        serde_json::json!({"host": host.trim(), "pid": std::process::id(),
            "time": chrono::Utc::now(), "exclusive": true, "purpose": "prune"})
        .to_string(),
    )
    .unwrap();
    let dsn = a.pg.dsn("postgres");
    let out = a.snap(&["backup", "--pg-base", &dsn]).output().unwrap();
    assert!(
        !out.status.success(),
        "a backup ran beside an exclusive lock"
    );
    a.churn(100);
    a.archive_now();
    fs::remove_file(&lock).unwrap();
    assert_eq!(a.wal_check().0, Some(0));

    // sync sends the archive with the snapshots; the copy recovers on its own.
    let copy = a.env.path("copy");
    a.snap(&["sync", "--to", copy.to_str().unwrap()])
        .assert()
        .success();
    let out = snap_at(
        copy.to_str().unwrap(),
        &a.env.cache(),
        &[],
        &["wal", "check", "--json"],
    )
    .output()
    .unwrap();
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(out.status.code(), Some(0), "{report}");
    assert_eq!(report["segments"], a.wal_check().1["segments"]);

    // snap metrics tells when the newest file arrived, for an archive-lag alert.
    let out = a.snap(&["metrics"]).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let value = |name: &str| -> f64 {
        let line = text
            .lines()
            .find(|l| l.starts_with(&format!("{name} ")))
            .unwrap_or_else(|| panic!("{name} missing:\n{text}"));
        line.split_whitespace().nth(1).unwrap().parse().unwrap()
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    let last = value("snap_wal_last_archived_timestamp_seconds");
    assert!(
        last <= now + 1.0 && now - last < 300.0,
        "{last} against {now}"
    );
    assert!(value("snap_wal_files") >= 3.0);
}

/// A push into a repository that cannot be reached fails (below 128, so the archiver
/// retries); once it can be reached again, the retries archive everything, no gap.
#[test]
fn an_unreachable_repository_fails_pushes_until_it_is_back_and_nothing_is_lost() {
    let Some(a) = Archiving::start() else { return };
    a.app_and_base_backup();
    let exe = assert_cmd::cargo::cargo_bin("snap");
    let away = a.repo().with_file_name("moved-away");
    let set = |repo: &Path| {
        a.pg.sql(
            "postgres",
            &format!(
                "ALTER SYSTEM SET archive_command = '{} --repo {} wal push %p'",
                exe.display(),
                repo.display()
            ),
        );
        a.pg.sql("postgres", "SELECT pg_reload_conf()");
    };
    set(&away);
    a.churn(100);
    a.pg.sql("postgres", "SELECT pg_switch_wal()");
    let start = Instant::now();
    while a
        .pg
        .sql("postgres", "SELECT failed_count FROM pg_stat_archiver")
        .trim()
        == "0"
    {
        assert!(start.elapsed() < Duration::from_secs(60), "no push failed");
        std::thread::sleep(Duration::from_millis(100));
    }
    let out = std::process::Command::new(&exe)
        .args(["--repo", away.to_str().unwrap(), "wal", "push"])
        .arg(a.env.path("000000010000000000000001"))
        .output()
        .unwrap();
    let code = out.status.code().unwrap();
    assert!(code > 0 && code < 128, "exit {code}");
    set(&a.repo());
    a.churn(100);
    a.archive_now();
    let (code, report) = a.wal_check();
    assert_eq!(code, Some(0), "{report}");
}

/// An encrypted repository: segments are sealed in the archive, the server pushes with
/// an exported key file, and a restore run with that key file writes a
/// `restore_command` that carries it, so recovery fetches without a passphrase.
#[test]
fn an_encrypted_archive_recovers_with_a_key_file() {
    let place = Pg::server_dir();
    let repo = place.path().join("repo");
    let key = place.path().join("key");
    let env = Env::new();
    let url = repo.display().to_string();
    let pass = [("SNAP_PASSWORD", "pitr passphrase".to_string())];
    let snap = |args: &[&str]| {
        let mut c = snap_at(&url, &env.cache(), &pass, args);
        c.env_remove("SNAP_PASSWORD_FILE")
            .env_remove("SNAP_KEY_FILE");
        c
    };
    snap(&["init", "--encrypt"]).assert().success();
    snap(&["key", "export", key.to_str().unwrap()])
        .assert()
        .success();
    give_to_postgres(place.path());
    let exe = assert_cmd::cargo::cargo_bin("snap");
    let Some(pg) = Pg::start_with(&[
        "archive_mode = on".into(),
        format!(
            "archive_command = 'SNAP_KEY_FILE={} {} --repo {} wal push %p'",
            key.display(),
            exe.display(),
            repo.display()
        ),
        "wal_level = replica".into(),
    ]) else {
        return;
    };
    pg.createdb("app");
    churn_init(&pg);
    let dsn = pg.dsn("postgres");
    snap(&["backup", "--pg-base", &dsn]).assert().success();
    churn(&pg, 200);
    let at_end = pg.dump("app", &[]);
    archive_now(&pg);
    let sealed = crate::util::walk(&repo.join("wal"));
    assert!(!sealed.is_empty());
    for f in &sealed {
        assert!(
            !fs::read(f).unwrap().starts_with(b"SNAPWAL"),
            "{} is not sealed",
            f.display()
        );
    }

    let target = Pg::server_dir();
    let data = target.path().join("data");
    let mut restore = snap(&[
        "restore",
        "--pg-base",
        "latest",
        "--pg-data",
        data.to_str().unwrap(),
    ]);
    restore
        .env_remove("SNAP_PASSWORD")
        .env("SNAP_KEY_FILE", &key);
    restore.assert().success();
    let conf = fs::read_to_string(data.join("postgresql.auto.conf")).unwrap();
    assert!(
        conf.contains(&format!("SNAP_KEY_FILE=''{}''", key.display())),
        "{conf}"
    );
    let restored = Pg::on_data_dir(&data, "-c archive_mode=off").unwrap();
    until_promoted(&restored);
    assert_eq!(restored.dump("app", &[]), at_end);
}

/// A base backup into a repository the cluster does not archive into is recorded, with
/// a warning (exit 3) that names the missing segment and the fix.
#[test]
fn a_base_backup_without_its_wal_in_the_repository_is_a_warning() {
    let Some(a) = Archiving::start() else { return };
    a.pg.createdb("app");
    let elsewhere = a.env.path("elsewhere");
    let snap_elsewhere =
        |args: &[&str]| snap_at(elsewhere.to_str().unwrap(), &a.env.cache(), &[], args);
    snap_elsewhere(&["init"]).assert().success();
    let dsn = a.pg.dsn("postgres");
    let out = snap_elsewhere(&["backup", "--pg-base", &dsn])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{err}");
    assert!(
        err.contains("is not in this repository's WAL archive") && err.contains("wal push"),
        "{err}"
    );
}

/// While the server's archive_command fails, pg_basebackup waits for the backup's last
/// segment for ever: the backup gives up after SNAP_PG_ARCHIVE_TIMEOUT of failures,
/// says why, records nothing and leaves no pg_basebackup behind.
#[test]
fn a_base_backup_gives_up_while_archiving_fails() {
    let Some(pg) = Pg::start_with(&[
        "archive_mode = on".into(),
        "archive_command = 'false'".into(),
        "wal_level = replica".into(),
    ]) else {
        return;
    };
    let env = Env::new();
    env.init();
    let started = Instant::now();
    let out = env
        .snap(&["backup", "--pg-base", &pg.dsn("postgres")])
        .env("SNAP_PG_ARCHIVE_TIMEOUT", "2s")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("archive_command has failed for"), "{err}");
    assert!(
        started.elapsed() < Duration::from_secs(60),
        "took {:?}",
        started.elapsed()
    );
    assert!(env.snapshots().is_empty(), "a snapshot was recorded");
    // pg_basebackup's connection to this cluster goes with it.
    let gone = Instant::now();
    while pg
        .sql(
            "postgres",
            "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'walsender'",
        )
        .trim()
        != "0"
    {
        assert!(
            gone.elapsed() < Duration::from_secs(20),
            "pg_basebackup left running"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The archive in S3 (Garage): the server pushes into a bucket with the endpoint and a
/// credentials file named in `archive_command`, the base backup goes beside it, and
/// the restore's `restore_command` carries those names (never the secret itself), so
/// recovery fetches from the bucket and reaches the end.
#[test]
fn an_archive_in_s3_recovers_with_the_names_it_was_pushed_with() {
    let Some(garage) = Garage::single() else {
        return;
    };
    let place = Pg::server_dir();
    let creds = place.path().join("aws-credentials");
    let (id, secret) = Garage::keys();
    fs::write(
        &creds,
        format!("[default]\naws_access_key_id = {id}\naws_secret_access_key = {secret}\n"),
    )
    .unwrap();
    let mut repo_env: Vec<(&'static str, String)> = garage
        .env()
        .into_iter()
        .filter(|(k, _)| !k.contains("KEY"))
        .collect();
    repo_env.push(("AWS_SHARED_CREDENTIALS_FILE", creds.display().to_string()));
    let Some(a) = Archiving::start_in(place, garage.url("pitr"), repo_env) else {
        return;
    };
    a.app_and_base_backup();
    a.churn(200);
    let at_end = a.pg.dump("app", &[]);
    a.archive_now();
    let (code, report) = a.wal_check();
    assert_eq!(code, Some(0), "{report}");
    assert!(
        !garage.objects("pitr/wal/").is_empty(),
        "no WAL in the bucket"
    );
    let (place, latest) = recover(&a, &[]);
    assert_eq!(latest.dump("app", &[]), at_end);
    let conf = fs::read_to_string(place.path().join("data/postgresql.auto.conf")).unwrap();
    assert!(
        conf.contains("AWS_SHARED_CREDENTIALS_FILE=") && conf.contains("AWS_ENDPOINT_URL="),
        "{conf}"
    );
    assert!(!conf.contains(secret), "the secret was written: {conf}");
}

/// kill -9 of `wal push` at random moments: a push that exited 0 is always fetched
/// whole; a killed one leaves its file whole or absent, never a part that the archive
/// would hand back (or that a fetch would fail on), and the archiver's retry succeeds.
/// SNAP_FAULT_ITERATIONS (default 60) and SNAP_FAULT_SEED make longer or other runs.
#[test]
fn kill_9_of_wal_push_at_random_moments_leaves_it_whole_or_absent() {
    let (iterations, seed, mut rng) = fault_run(60);
    let env = Env::new();
    env.init();
    let repo = env.repo().display().to_string();
    let snap = |args: &[&str]| {
        let mut c = snap_process(&repo, &env.cache(), &[], args);
        c.stdout(Stdio::null()).stderr(Stdio::piped());
        c
    };
    let fetched = env.path("fetched");
    // How long a push lasts (µs), as last seen: a kill lands in its second half and
    // after, where the compression and the write are (the first half starts the process
    // and reads the segment); the span grows while pushes are killed.
    let mut typical = 200_000u64;
    let (mut killed, mut finished) = (0, 0);
    for i in 0..iterations {
        let name = format!("0000000100000000{:08X}", i + 1);
        let seg = env.path(&name);
        let bytes = segment(&name, 4 << 20, &format!("{seed} {name}"));
        fs::write(&seg, &bytes).unwrap();
        let push = ["wal", "push", seg.to_str().unwrap()];
        let mut child = snap(&push).spawn().unwrap();
        let started = Instant::now();
        std::thread::sleep(Duration::from_micros(typical / 2 + rng.below(typical / 2)));
        let done = if let Some(status) = child.try_wait().unwrap() {
            typical = u64::try_from(started.elapsed().as_micros())
                .unwrap()
                .max(1000);
            assert!(status.success(), "iteration {i} (seed {seed}): push failed");
            finished += 1;
            true
        } else {
            child.kill().unwrap();
            child.wait().unwrap();
            typical = typical * 3 / 2;
            killed += 1;
            false
        };
        let _ = fs::remove_file(&fetched);
        let fetch = ["wal", "fetch", &name, fetched.to_str().unwrap()];
        let out = snap(&fetch).output().unwrap();
        let why = String::from_utf8_lossy(&out.stderr);
        match out.status.code() {
            Some(0) => assert!(
                fs::read(&fetched).unwrap() == bytes,
                "iteration {i} (seed {seed}): {name} came back with other bytes"
            ),
            Some(1) if !done && why.contains("is not in") => {
                assert!(!fetched.exists(), "a failed fetch wrote {name}");
            }
            c => panic!(
                "iteration {i} (seed {seed}): {name} (push {}) fetches with {c:?}: {why}",
                if done { "reported done" } else { "killed" }
            ),
        }
        // The archiver's retry, then the segment is there whole.
        let out = snap(&push).output().unwrap();
        assert!(
            out.status.success(),
            "retry of {name}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(snap(&fetch).status().unwrap().success());
        assert!(fs::read(&fetched).unwrap() == bytes);
        fs::remove_file(&seg).unwrap();
    }
    assert!(
        killed > 0 && finished > 0,
        "{killed} killed, {finished} finished: the kills missed the pushes"
    );
}

/// sync while pushes go on: after every run each archived file at the destination is
/// whole and equal to the source's, and a run after the pushes have ended has them all.
#[test]
fn sync_while_pushes_continue_copies_whole_files_and_catches_up() {
    let env = Env::new();
    env.init();
    let offsite = env.path("offsite");
    let segs: Vec<(String, Vec<u8>)> = (1..=40)
        .map(|i| {
            let name = format!("0000000100000000{i:08X}");
            let bytes = segment(&name, 256 << 10, &name);
            (name, bytes)
        })
        .collect();
    let (repo, offsite_url) = (
        env.repo().display().to_string(),
        offsite.display().to_string(),
    );
    let snap = |repo: &str, args: &[&str]| {
        snap_at(repo, &env.cache(), &[], args).assert().success();
    };
    let sync = ["sync", "--to", &offsite_url];
    // The files at the destination, each fetched and compared with what was pushed.
    let mut checked = std::collections::BTreeSet::new();
    let check_offsite = |checked: &mut std::collections::BTreeSet<String>| {
        for f in crate::util::walk(&offsite.join("wal")) {
            let name = f.file_name().unwrap().to_string_lossy().into_owned();
            let Some((_, want)) = segs.iter().find(|(n, _)| *n == name) else {
                continue;
            };
            if checked.insert(name.clone()) {
                let got = env.path("got");
                snap(
                    &offsite_url,
                    &["wal", "fetch", &name, got.to_str().unwrap()],
                );
                assert!(fs::read(&got).unwrap() == *want, "{name} differs offsite");
            }
        }
    };
    // The pushes go in batches of ten, each after a sync run has ended since the last
    // one, so that runs overlap the pushes however the machine schedules them.
    let synced = std::sync::atomic::AtomicUsize::new(0);
    let (mut runs, mut partial) = (0, false);
    std::thread::scope(|s| {
        let pusher = s.spawn(|| {
            for (i, (name, bytes)) in segs.iter().enumerate() {
                if i > 0 && i % 10 == 0 {
                    let seen = synced.load(Ordering::Acquire);
                    while synced.load(Ordering::Acquire) == seen {
                        std::thread::sleep(Duration::from_millis(10));
                    }
                }
                let seg = env.path(name);
                fs::write(&seg, bytes).unwrap();
                snap(&repo, &["wal", "push", seg.to_str().unwrap()]);
            }
        });
        while !pusher.is_finished() {
            snap(&repo, &sync);
            check_offsite(&mut checked);
            partial |= !checked.is_empty() && checked.len() < segs.len();
            runs += 1;
            synced.store(runs, Ordering::Release);
        }
    });
    assert!(
        runs >= 4 && partial,
        "the syncs did not overlap the pushes ({runs} runs)"
    );
    snap(&repo, &sync);
    check_offsite(&mut checked);
    assert_eq!(
        checked.len(),
        segs.len(),
        "a run after the pushes left some behind"
    );
}

/// The archive contract on an SFTP repository: a push stores the file, the same bytes
/// again succeed, other bytes fail and leave it as it was, a fetch gives it back and an
/// absent one fails without writing; on the server the archive holds that one file
/// under its final name, no temporary file beside it; and `wal check` fails while no
/// base backup is there to replay it from.
#[test]
fn the_archive_keeps_its_contract_on_sftp() {
    let Some(sshd) = Sshd::start() else { return };
    let env = Env::new();
    let dir = env.path("sftp-repo");
    let url = sshd.url(&dir);
    let vars = sshd.env();
    let cache = env.path("cache");
    let snap = |args: &[&str]| snap_at(&url, &cache, &vars, args);
    snap(&["init"]).assert().success();
    let name = "000000010000000000000007";
    let seg = env.path(name);
    let bytes = segment(name, 1 << 20, name);
    fs::write(&seg, &bytes).unwrap();
    let push = ["wal", "push", seg.to_str().unwrap()];
    snap(&push).assert().success();
    snap(&push).assert().success();
    fs::write(&seg, segment(name, 1 << 20, "other bytes")).unwrap();
    let out = snap(&push).output().unwrap();
    assert_eq!(out.status.code(), Some(1), "other bytes were accepted");
    let got = env.path("got");
    let fetch = |name: &str| {
        snap(&["wal", "fetch", name, got.to_str().unwrap()])
            .output()
            .unwrap()
    };
    assert!(fetch(name).status.success());
    assert!(fs::read(&got).unwrap() == bytes, "the first push's bytes");
    fs::remove_file(&got).unwrap();
    let out = fetch("000000010000000000000008");
    assert_eq!(out.status.code(), Some(1));
    assert!(!got.exists(), "an absent fetch wrote a file");
    let stored = crate::util::walk(&dir.join("wal"));
    assert_eq!(stored.len(), 1, "{stored:?}");
    assert!(stored[0].ends_with(format!("0000000100000000/{name}")));
    // WAL without any base backup recovers nothing: wal check says so, exit 1.
    let out = snap(&["wal", "check"]).output().unwrap();
    let said = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{said}");
    assert!(said.contains("no base backup"), "{said}");
}

/// `--start` with a target past the archived WAL fails with the server's own words
/// and the log's place; `--target-action shutdown` ends with the server stopped at the
/// target, and says so.
#[test]
fn a_target_past_the_archive_fails_and_shutdown_stops_at_the_target() {
    let Some(a) = Archiving::start() else { return };
    a.app_and_base_backup();
    a.churn(100);
    let at_end = a.pg.dump("app", &[]);
    a.archive_now();

    let (_p1, _, mut restore) = a.restore(&["--target-time", "2999-01-01 00:00:00+00", "--start"]);
    let out = restore.output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("recovery ended before configured recovery target was reached")
            && err.contains("log"),
        "{err}"
    );

    let (_p2, data, restore) = a.restore(&[
        "--target",
        "immediate",
        "--target-action",
        "shutdown",
        "--start",
        "--json",
    ]);
    let out = json(restore);
    assert_eq!(out["recovery"], "shut down", "{out}");
    assert!(
        !data.join("postmaster.pid").exists(),
        "the server still runs"
    );
    // Started again without a target, it replays the rest of the archive.
    let conf = data.join("postgresql.auto.conf");
    let kept: String = fs::read_to_string(&conf)
        .unwrap()
        .lines()
        .filter(|l| !l.starts_with("recovery_target"))
        .map(|l| format!("{l}\n"))
        .collect();
    fs::write(&conf, kept).unwrap();
    let pg = Pg::on_data_dir(&data, "-c archive_mode=off").unwrap();
    until_promoted(&pg);
    assert_eq!(pg.dump("app", &[]), at_end);
}

/// What a restore takes on trust no more: the recovery settings an earlier recovery
/// left in the cluster's `postgresql.auto.conf` (pg_basebackup copies them), a target
/// time before the base backup or without its zone, a location past the archive, and a
/// damaged segment, which must stop recovery with an error rather than end it early
/// and promote; `check --read-data` names that segment.
#[test]
fn a_restore_trusts_no_old_target_and_stops_at_a_damaged_segment() {
    let Some(a) = Archiving::start() else { return };
    a.pg.createdb("app");
    churn_init(&a.pg);
    // As a cluster that was itself recovered to a point keeps them.
    a.pg.sql(
        "postgres",
        "ALTER SYSTEM SET recovery_target_time = '2000-01-01 00:00:00+00'",
    );
    a.pg.sql(
        "postgres",
        "ALTER SYSTEM SET recovery_target_action = 'promote'",
    );
    let before = a.pg.sql("postgres", "SELECT now()").trim().to_string();
    std::thread::sleep(Duration::from_millis(1100));
    a.base_backup();
    a.churn(300);
    a.pg.sql("app", "CREATE TABLE after_base AS SELECT 1 AS x");
    let at_end = a.pg.dump("app", &[]);
    a.archive_now();
    let (_p, latest) = recover(&a, &[]);
    assert!(
        latest.dump("app", &[]) == at_end,
        "recovery stopped at an earlier recovery's target"
    );
    drop(latest);

    for (args, says) in [
        (
            vec!["--target-time", before.as_str()],
            "is before base backup",
        ),
        (
            vec!["--target-time", "2026-13-45 99:00+00"],
            "is not a date and time",
        ),
        (vec!["--target-lsn", "FF/0"], "is past the WAL archived"),
    ] {
        let (_q, data, mut restore) = a.restore(&args);
        restore
            .assert()
            .failure()
            .stderr(predicate::str::contains(says));
        assert!(!data.join("PG_VERSION").exists(), "{args:?} restored files");
    }

    // Without a zone PostgreSQL reads the time in its own: passed on, with a warning.
    let (_q, _data, mut restore) = a.restore(&["--target-time", "2999-01-01 00:00:00"]);
    restore
        .assert()
        .success()
        .stderr(predicate::str::contains("has no zone offset"));

    // The newest segment, damaged in the repository.
    let newest = a.wal_check().1["newest"].as_str().unwrap().to_string();
    let stored = a.repo().join("wal").join(&newest[..16]).join(&newest);
    let mut bytes = fs::read(&stored).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x55;
    fs::write(&stored, bytes).unwrap();
    a.snap(&["check", "--read-data"]).assert().code(1).stderr(
        predicate::str::contains("WAL file").and(predicate::str::contains(newest.as_str())),
    );
    let (_q, _data, mut restore) = a.restore(&["--start"]);
    let out = restore.output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(1),
        "recovery ended early instead: {err}"
    );
}
