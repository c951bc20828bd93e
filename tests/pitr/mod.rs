//! PostgreSQL point-in-time recovery: a real cluster archiving its WAL into a
//! repository through `snap wal push`, a base backup through `backup --pg-base`, and
//! restores to a time, to `immediate` and to the end of the archive, started as real
//! servers whose dumps must equal the source's at that point; the archive contract
//! (durable before exit 0, identical repeats accepted, different bytes refused) and
//! `wal check`'s gaps.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::util::pg::Pg;
use crate::util::{json, snap_bin, Env};

/// A cluster archiving into a repository in a directory its server can write to.
struct Archiving {
    pg: Pg,
    /// Holds the repository (owned by the server's user).
    _place: tempfile::TempDir,
    repo: PathBuf,
    env: Env,
}

impl Archiving {
    fn start() -> Option<Archiving> {
        let place = Pg::server_dir();
        let repo = place.path().join("repo");
        let env = Env::new();
        snap_bin()
            .env("SNAP_CACHE_DIR", env.cache())
            .args(["--repo", repo.to_str().unwrap(), "init"])
            .assert()
            .success();
        give_to_postgres(&repo);
        let exe = assert_cmd::cargo::cargo_bin("snap");
        let pg = Pg::start_with(&[
            "archive_mode = on".into(),
            format!(
                "archive_command = '{} --repo {} wal push %p'",
                exe.display(),
                repo.display()
            ),
            "wal_level = replica".into(),
        ])?;
        Some(Archiving {
            pg,
            _place: place,
            repo,
            env,
        })
    }

    fn snap(&self, args: &[&str]) -> assert_cmd::Command {
        let mut c = snap_bin();
        c.env("SNAP_CACHE_DIR", self.env.cache())
            .env_remove("SNAP_REPO")
            .arg("--repo")
            .arg(&self.repo)
            .args(args);
        c
    }

    /// Switches to a new WAL segment and waits until the one it ended is archived.
    fn archive_now(&self) {
        let seg = self
            .pg
            .sql("postgres", "SELECT pg_walfile_name(pg_switch_wal())");
        let seg = seg.trim().to_string();
        let start = Instant::now();
        loop {
            let last = self
                .pg
                .sql("postgres", "SELECT last_archived_wal FROM pg_stat_archiver");
            if last.trim() >= seg.as_str() {
                return;
            }
            assert!(
                start.elapsed() < Duration::from_secs(60),
                "{seg} was not archived within a minute (last {last:?}); server log:\n{}",
                self.pg.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn churn(&self, tx: u32) {
        let out = self
            .pg
            .client("pgbench", "app")
            .args(["-n", "-t", &tx.to_string()])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "pgbench: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
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
/// server on it and waits until recovery has ended (promoted).
fn recover(a: &Archiving, args: &[&str]) -> (tempfile::TempDir, Pg) {
    let place = Pg::server_dir();
    let data = place.path().join("data");
    let mut cmd = vec![
        "restore",
        "--pg-base",
        "latest",
        "--pg-data",
        data.to_str().unwrap(),
    ];
    cmd.extend_from_slice(args);
    a.snap(&cmd).assert().success();
    assert!(data.join("recovery.signal").exists());
    let pg = Pg::on_data_dir(&data, "-c archive_mode=off").unwrap();
    let start = Instant::now();
    loop {
        let out = pg
            .client("psql", "postgres")
            .args(["-X", "-A", "-t", "-c", "SELECT pg_is_in_recovery()"])
            .output()
            .unwrap();
        if String::from_utf8_lossy(&out.stdout).trim() == "f" {
            return (place, pg);
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
    let init =
        a.pg.client("pgbench", "app")
            .args(["-i", "-s", "2", "-q"])
            .output()
            .unwrap();
    assert!(
        init.status.success(),
        "{}",
        String::from_utf8_lossy(&init.stderr)
    );
    let dsn = format!("host={} user=postgres", a.pg.sock());
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
    let (_p2, immediate) = recover(&a, &["--target", "immediate", "--target-action", "promote"]);
    assert_eq!(
        immediate.dump("app", &[]),
        at_base,
        "recovery to the backup's end"
    );
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
    let dsn = format!("host={} user=postgres", a.pg.sock());
    a.snap(&["backup", "--pg-base", &dsn]).assert().success();
    for _ in 0..3 {
        a.pg.sql(
            "app",
            "INSERT INTO t SELECT g FROM generate_series(1, 1000) g",
        );
        a.archive_now();
    }
    // The contract: the same bytes again succeed, other bytes fail and change nothing.
    let wal_dir = a.repo.join("wal");
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
    let place = Pg::server_dir();
    let data = place.path().join("data");
    let out = a
        .snap(&[
            "restore",
            "--pg-base",
            "latest",
            "--pg-data",
            data.to_str().unwrap(),
            "--target-lsn",
            &lsn,
        ])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains(&name) && err.contains("earlier target"),
        "{err}"
    );
    assert!(!data.exists(), "a refused restore wrote {}", data.display());
}
