//! `snap drill`: real restores of files, `--pg` dumps and NextGIS Web instances into
//! throw-away targets (scratch PostgreSQL clusters), the records they leave, and what
//! `list`, `stats`, `check --max-drill-age` and `sync` make of them.

use std::fs;
use std::path::Path;
use std::time::{Duration, Instant};

use predicates::prelude::*;

use crate::util::pg::Pg;
use crate::util::{json, largest_pack, random_bytes, Env};

/// The scratch directories under `dir` (drill scratch of any process).
fn scratch_left(dir: &Path) -> Vec<String> {
    fs::read_dir(dir)
        .map(|rd| {
            rd.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.starts_with("snap-drill."))
                .collect()
        })
        .unwrap_or_default()
}

/// A database `app` with 500 orders and a small table, in a test cluster.
fn app_db(pg: &Pg) {
    pg.createdb("app");
    pg.sql(
        "app",
        "CREATE TABLE orders (id serial PRIMARY KEY, item text);
         INSERT INTO orders (item) SELECT 'item ' || i FROM generate_series(1, 500) i;
         CREATE TABLE settings (k text PRIMARY KEY, v text);
         INSERT INTO settings VALUES ('a', '1');",
    );
}

/// An NGW-shaped database `ngw` and its file storage with two blobs; returns the
/// config.ini path.
fn ngw_instance(pg: &Pg, env: &Env) -> String {
    pg.createdb("ngw");
    pg.sql(
        "ngw",
        "CREATE EXTENSION pg_trgm;
         CREATE TABLE fileobj (id serial PRIMARY KEY, component varchar(50) NOT NULL, uuid varchar(32) NOT NULL);
         CREATE TABLE core_migration (component varchar, revision varchar);
         CREATE TABLE setting (component varchar, name varchar, value jsonb, PRIMARY KEY (component, name));
         INSERT INTO core_migration VALUES ('core', '2026-01-01');
         CREATE SCHEMA vector_layer;
         CREATE TABLE vector_layer.layer_a (id serial PRIMARY KEY, name text);
         INSERT INTO vector_layer.layer_a (name) SELECT 'f' || i FROM generate_series(1, 300) i;",
    );
    for (component, uuid) in [
        ("raster_layer", "0a1b2c3d4e5f60718293a4b5c6d7e8f9"),
        ("feature_attachment", "1b2c3d4e5f60718293a4b5c6d7e8f90a"),
    ] {
        let p = env
            .path("fs")
            .join(component)
            .join(&uuid[..2])
            .join(&uuid[2..4])
            .join(uuid);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(&p, random_bytes(200_000, uuid)).unwrap();
        pg.sql(
            "ngw",
            &format!("INSERT INTO fileobj (component, uuid) VALUES ('{component}', '{uuid}')"),
        );
    }
    fs::create_dir_all(env.path("sdir")).unwrap();
    let cfg = format!(
        "[core]\ndatabase.host = {}\ndatabase.port = 5432\ndatabase.name = ngw\ndatabase.user = postgres\nsdir = {}\n\n[file_storage]\npath = {}\n",
        pg.sock(),
        env.path("sdir").display(),
        env.path("fs").display()
    );
    fs::write(env.path("ngw.ini"), cfg).unwrap();
    env.path("ngw.ini").display().to_string()
}

/// A new repository in `env` with one backup of `data/f`; returns `data`.
fn one_file_backed_up(env: &Env) -> std::path::PathBuf {
    env.init();
    let data = env.path("data");
    fs::create_dir_all(&data).unwrap();
    fs::write(data.join("f"), b"x").unwrap();
    env.backup_json(&[data.to_str().unwrap()]);
    data
}

/// `snap drill` with the scratch directory of `env`.
fn drill(env: &Env, args: &[&str]) -> assert_cmd::Command {
    let scratch = env.path("scratch");
    fs::create_dir_all(&scratch).unwrap();
    let mut c = env.snap(&["drill", "--scratch", scratch.to_str().unwrap()]);
    c.args(args);
    c
}

#[test]
fn drill_restores_files_pg_and_ngw_for_real_and_records_it() {
    let Some(pg) = Pg::start() else { return };
    let env = Env::new();
    env.init();
    app_db(&pg);
    let config = ngw_instance(&pg, &env);
    fs::create_dir_all(env.path("data/sub")).unwrap();
    fs::write(env.path("data/sub/a.bin"), random_bytes(3 << 20, "a")).unwrap();
    let data = env.path("data");
    env.backup_json(&[
        data.to_str().unwrap(),
        "--pg",
        &pg.dsn("app"),
        "--ngw",
        &config,
    ]);
    let out = json(drill(&env, &["--json"]));
    let d = &out["drills"][0];
    assert_eq!(d["result"], "passed", "{out:#}");
    let sources = d["sources"].as_array().unwrap();
    assert_eq!(sources.len(), 3, "{out:#}");
    let by = |prefix: &str| {
        sources
            .iter()
            .find(|s| s["source"].as_str().unwrap().starts_with(prefix))
            .unwrap()
    };
    let files = by("path:");
    assert_eq!(files["result"], "passed");
    assert!(files["bytes"].as_u64().unwrap() >= 3 << 20);
    assert!(files["reason"]
        .as_str()
        .unwrap()
        .contains("application-level check not run"));
    let db = by("pg:");
    assert_eq!(db["result"], "passed", "{db:#}");
    assert_eq!(
        db["checks"],
        serde_json::json!(["restore", "tables", "row_counts"])
    );
    let rows: Vec<(String, u64)> = db["tables"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            (
                t["table"].as_str().unwrap().to_string(),
                t["rows"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        rows,
        vec![("public.orders".into(), 500), ("public.settings".into(), 1)]
    );
    let ngw = by("ngw:");
    assert_eq!(ngw["result"], "passed", "{ngw:#}");
    assert!(ngw["checks"]
        .as_array()
        .unwrap()
        .contains(&"fileobj_blobs".into()));
    assert!(ngw["tables"]
        .as_array()
        .unwrap()
        .iter()
        .any(|t| t["table"] == "vector_layer.layer_a" && t["rows"] == 300));
    for s in sources {
        assert!(s["seconds"].as_f64().unwrap() > 0.0);
    }
    // The record is in the repository, list and stats show it, scratch is gone.
    let record = d["record"].as_str().unwrap();
    assert!(env.repo().join("drills").join(record).is_file());
    let snaps = env.snapshots();
    assert_eq!(snaps[0]["drill"]["result"], "passed");
    let stats = json(env.snap(&["stats", "--json"]));
    assert!(stats["drills"][0]["rto_seconds"].as_f64().unwrap() > 0.0);
    env.snap(&["list"])
        .assert()
        .success()
        .stdout(predicate::str::contains("passed"));
    assert!(scratch_left(&env.path("scratch")).is_empty());
    // The production database was not touched.
    assert_eq!(pg.sql("app", "SELECT count(*) FROM orders").trim(), "500");
}

#[test]
fn a_damaged_pack_fails_the_drill_naming_source_and_file() {
    let env = Env::new();
    env.init();
    fs::create_dir_all(env.path("data")).unwrap();
    fs::write(env.path("data/big.bin"), random_bytes(4 << 20, "big")).unwrap();
    let data = env.path("data");
    env.backup_json(&[data.to_str().unwrap()]);
    let pack = largest_pack(&env.repo());
    let mut bytes = fs::read(&pack).unwrap();
    let mid = bytes.len() / 2;
    for b in &mut bytes[mid..mid + 64] {
        *b ^= 0xff;
    }
    fs::write(&pack, bytes).unwrap();
    drill(&env, &[])
        .assert()
        .code(1)
        .stdout(predicate::str::contains("FAILED"))
        .stderr(
            predicate::str::contains(format!("source path:{}", data.display()))
                .and(predicate::str::contains("big.bin")),
        );
    assert_eq!(env.snapshots()[0]["drill"]["result"], "failed");
}

#[test]
fn a_table_emptied_between_backups_is_flagged_by_the_drill() {
    let Some(pg) = Pg::start() else { return };
    let env = Env::new();
    env.init();
    app_db(&pg);
    env.backup_json(&["--pg", &pg.dsn("app")]);
    drill(&env, &[]).assert().success();
    pg.sql("app", "DELETE FROM orders");
    // The backup of the emptied table succeeds...
    env.backup_json(&["--pg", &pg.dsn("app")]);
    // ...its drill does not.
    drill(&env, &["--source", "db/app"])
        .assert()
        .code(1)
        .stdout(predicate::str::contains("public.orders 500 -> 0"))
        .stderr(predicate::str::contains(
            "public.orders fell from 500 to 0 rows",
        ));
    let out = json(env.snap(&["list", "--json"]));
    assert_eq!(out[1]["drill"]["result"], "failed");
    // The probe fails while the group's last drill failed, though one passed within
    // the span; drilling the same data again fails again (a failed drill is no
    // baseline).
    env.snap(&["check", "--max-drill-age", "7d"])
        .assert()
        .code(1)
        .stderr(
            predicate::str::contains("FAILED").and(predicate::str::contains(
                "public.orders fell from 500 to 0 rows",
            )),
        );
    drill(&env, &["--source", "db/app"])
        .assert()
        .code(1)
        .stderr(predicate::str::contains(
            "public.orders fell from 500 to 0 rows",
        ));
    pg.sql(
        "app",
        "INSERT INTO orders (item) SELECT 'item ' || i FROM generate_series(1, 500) i",
    );
    env.backup_json(&["--pg", &pg.dsn("app")]);
    drill(&env, &[]).assert().success();
    env.snap(&["check", "--max-drill-age", "7d"])
        .assert()
        .success();
}

#[test]
fn an_empty_or_cut_sql_dump_and_a_dropped_table_fail_the_drill() {
    let Some(pg) = Pg::start() else { return };
    let env = Env::new();
    env.init();
    app_db(&pg);
    let stream = |sql: &str| {
        env.snap(&["backup", "--stdin-name", "db/app.sql"])
            .write_stdin(sql.to_string())
            .assert()
            .success();
    };
    let whole = pg.dump("app", &[]);
    stream(&whole);
    drill(&env, &[]).assert().success();
    // pg_dump stopped before the orders' rows: psql restores the rest without an error.
    let cut = whole.find("COPY public.orders").unwrap();
    stream(&whole[..cut]);
    drill(&env, &[])
        .assert()
        .code(1)
        .stderr(predicate::str::contains("db/app.sql is cut short"));
    // pg_dump failed at once in `pg_dump | snap backup --stdin-name`.
    stream("");
    drill(&env, &[])
        .assert()
        .code(1)
        .stderr(predicate::str::contains("db/app.sql is empty"));
    // A table dropped, the dump whole: gone since the last passed drill.
    pg.sql("app", "DROP TABLE orders");
    stream(&pg.dump("app", &[]));
    drill(&env, &[])
        .assert()
        .code(1)
        .stderr(predicate::str::contains(
            "public.orders is gone (it had 500 rows)",
        ));
}

#[test]
fn max_drill_age_fails_without_a_recent_passed_drill() {
    let env = Env::new();
    one_file_backed_up(&env);
    env.snap(&["check", "--max-drill-age", "7d"])
        .assert()
        .code(1)
        .stderr(predicate::str::contains("never passed a drill"));
    drill(&env, &[]).assert().success();
    env.snap(&["check", "--max-drill-age", "7d"])
        .assert()
        .success();
    // Of another host: none.
    env.snap(&["check", "--max-drill-age", "7d", "--host", "elsewhere"])
        .assert()
        .code(1)
        .stderr(predicate::str::contains("no snapshot of host elsewhere"));
    env.snap(&["check", "--host", "elsewhere"])
        .assert()
        .code(1)
        .stderr(predicate::str::contains("--host goes with"));
    std::thread::sleep(Duration::from_millis(2100));
    env.snap(&["check", "--max-drill-age", "2s"])
        .assert()
        .code(1)
        .stderr(predicate::str::contains("last passed drill"));
    // A new group (other sources) has no drill yet.
    fs::create_dir_all(env.path("other")).unwrap();
    let other = env.path("other");
    env.backup_json(&[other.to_str().unwrap()]);
    env.snap(&["check", "--max-drill-age", "7d"])
        .assert()
        .code(1);
}

/// The pid in a cluster's `postmaster.pid` under the scratch directory, once one runs.
fn scratch_postmaster(scratch: &Path) -> Option<u32> {
    for d in scratch_left(scratch) {
        for e in fs::read_dir(scratch.join(&d)).ok()?.flatten() {
            let pidfile = e.path().join("data/postmaster.pid");
            if let Ok(text) = fs::read_to_string(&pidfile) {
                if let Some(pid) = text.lines().next().and_then(|l| l.trim().parse().ok()) {
                    return Some(pid);
                }
            }
        }
    }
    None
}

fn alive(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
        && !fs::read_to_string(format!("/proc/{pid}/stat"))
            .unwrap_or_default()
            .contains(") Z ")
}

fn wait_gone(pid: u32) -> bool {
    let t = Instant::now();
    while alive(pid) && t.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(50));
    }
    !alive(pid)
}

#[test]
fn a_killed_drill_leaves_no_cluster_and_no_scratch() {
    let Some(pg) = Pg::start() else { return };
    let env = Env::new();
    env.init();
    pg.createdb("big");
    pg.sql(
        "big",
        "CREATE TABLE t AS SELECT i, md5(i::text) AS m FROM generate_series(1, 2000000) i",
    );
    env.backup_json(&["--pg", &pg.dsn("big")]);
    let scratch = env.path("scratch");
    for signal in ["TERM", "KILL"] {
        fs::create_dir_all(&scratch).unwrap();
        let mut child = std::process::Command::new(assert_cmd::cargo::cargo_bin("snap"))
            .env("SNAP_CACHE_DIR", env.cache())
            .env_remove("SNAP_REPO")
            .arg("--repo")
            .arg(env.repo())
            .args(["drill", "--scratch"])
            .arg(&scratch)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let t = Instant::now();
        let pid = loop {
            if let Some(p) = scratch_postmaster(&scratch) {
                break p;
            }
            assert!(
                t.elapsed() < Duration::from_secs(60),
                "no scratch cluster started"
            );
            std::thread::sleep(Duration::from_millis(20));
        };
        // Half-way: the restore is running.
        std::thread::sleep(Duration::from_millis(300));
        assert!(
            child.try_wait().unwrap().is_none(),
            "the drill ended too soon"
        );
        std::process::Command::new("kill")
            .args([&format!("-{signal}"), &child.id().to_string()])
            .status()
            .unwrap();
        let status = child.wait().unwrap();
        assert!(!status.success());
        assert!(
            wait_gone(pid),
            "SIG{signal}: the scratch server {pid} outlived snap"
        );
        if signal == "TERM" {
            assert_eq!(status.code(), Some(130));
            let find = std::process::Command::new("find")
                .arg(&scratch)
                .output()
                .unwrap();
            assert!(
                scratch_left(&scratch).is_empty(),
                "SIGTERM left scratch files:\n{}",
                String::from_utf8_lossy(&find.stdout)
            );
        }
    }
    // SIGKILL leaves the directory to the next drill, which removes it.
    assert!(!scratch_left(&scratch).is_empty());
    drill(&env, &[]).assert().success();
    assert!(
        scratch_left(&scratch).is_empty(),
        "{:?}",
        scratch_left(&scratch)
    );
    // Nothing was recorded for the killed drills: only the last one.
    assert_eq!(fs::read_dir(env.repo().join("drills")).unwrap().count(), 1);
}

#[test]
fn an_encrypted_record_is_sealed_and_sync_carries_it() {
    let env = Env::new();
    let pass = "drill pass";
    let snap = |args: &[&str]| {
        let mut c = env.snap(args);
        c.env("SNAP_PASSWORD", pass)
            .env_remove("SNAP_PASSWORD_FILE")
            .env_remove("SNAP_KEY_FILE");
        c
    };
    snap(&["init", "--encrypt"]).assert().success();
    fs::create_dir_all(env.path("data")).unwrap();
    fs::write(env.path("data/f"), b"secret drill content").unwrap();
    let data = env.path("data");
    snap(&["backup", data.to_str().unwrap()]).assert().success();
    let scratch = env.path("scratch");
    fs::create_dir_all(&scratch).unwrap();
    snap(&["drill", "--scratch", scratch.to_str().unwrap()])
        .assert()
        .success();
    let files: Vec<_> = fs::read_dir(env.repo().join("drills"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(files.len(), 1);
    let raw = fs::read(&files[0]).unwrap();
    assert!(serde_json::from_slice::<serde_json::Value>(&raw).is_err());
    assert!(!String::from_utf8_lossy(&raw).contains("passed"));
    // Into a new directory (a copy as stored) and into a plain repository (rewritten).
    let copy = env.path("copy");
    let sent = json(snap(&["sync", "--to", copy.to_str().unwrap(), "--json"]));
    assert_eq!(sent["drills_sent"], 1, "{sent:#}");
    let again = json(snap(&["sync", "--to", copy.to_str().unwrap(), "--json"]));
    assert_eq!(again["drills_sent"], 0, "a record is sent once");
    let mut list = crate::util::snap_bin();
    list.env("SNAP_CACHE_DIR", env.cache())
        .env("SNAP_PASSWORD", pass)
        .env_remove("SNAP_REPO")
        .args(["--repo", copy.to_str().unwrap(), "list", "--json"]);
    let listed = json(list);
    assert_eq!(listed[0]["drill"]["result"], "passed", "{listed:#}");
}

#[test]
fn a_repository_made_before_drills_works_and_takes_one() {
    // The version 1 fixture: no drills/ directory.
    let env = Env::new();
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/repo-v1-plain.tar.gz");
    let st = std::process::Command::new("tar")
        .arg("-xzf")
        .arg(&fixture)
        .arg("-C")
        .arg(env.dir.path())
        .status()
        .unwrap();
    assert!(st.success());
    assert!(!env.repo().join("drills").exists());
    assert!(env.snapshots()[0].get("drill").is_none());
    env.snap(&["stats"])
        .assert()
        .success()
        .stdout(predicate::str::contains("never (run `snap drill`)"));
    env.snap(&["check"]).assert().success();
    env.snap(&["check", "--max-drill-age", "7d"])
        .assert()
        .code(1);
    // Its stream db/dump.sql is no restorable SQL (rows without their table): the
    // drill says so; the path-only group passes.
    drill(&env, &[]).assert().code(1).stderr(
        predicate::str::contains("source stdin:db/dump.sql").and(predicate::str::contains(
            "relation \"items\" does not exist",
        )),
    );
    env.snap(&["check", "--max-drill-age", "7d"])
        .assert()
        .code(1)
        .stderr(predicate::str::contains("1 group without a passed drill"));
    env.snap(&["check", "--read-data"]).assert().success();
}

#[test]
fn a_profile_drills_after_its_backup_when_due() {
    let env = Env::new();
    fs::create_dir_all(env.path("data")).unwrap();
    fs::write(env.path("data/f"), b"profile data").unwrap();
    let config = env.path("snap.toml");
    let write = |every: &str| {
        fs::write(
            &config,
            format!(
                "[profile.app]\nrepository = {:?}\npaths = [{:?}]\ndrill = {every}\n",
                env.repo().display().to_string(),
                env.path("data").display().to_string()
            ),
        )
        .unwrap();
    };
    let run = || {
        let mut c = crate::util::snap_bin();
        c.env("SNAP_CACHE_DIR", env.cache())
            .env("SNAP_CONFIG", &config)
            .env("TMPDIR", env.path("scratch"))
            .env_remove("SNAP_REPO")
            .args(["run", "app", "--json"]);
        json(c)
    };
    fs::create_dir_all(env.path("scratch")).unwrap();
    env.init();
    write("2");
    let records = || fs::read_dir(env.repo().join("drills")).map_or(0, Iterator::count);
    let first = run();
    assert_eq!(first["steps"][1]["step"], "drill", "{first:#}");
    assert_eq!(records(), 1, "no drill yet: due");
    run();
    assert_eq!(records(), 1, "one snapshot since: not due");
    run();
    assert_eq!(records(), 2, "two snapshots since: due");
    write("\"weekly\"");
    run();
    assert_eq!(records(), 2, "drilled today: not due this week");
}

#[test]
fn check_names_a_damaged_drill_record() {
    let env = Env::new();
    one_file_backed_up(&env);
    drill(&env, &[]).assert().success();
    env.snap(&["check"]).assert().success();
    let record = fs::read_dir(env.repo().join("drills"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let mut bytes = fs::read(&record).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 1;
    fs::write(&record, bytes).unwrap();
    let name = record.file_name().unwrap().to_str().unwrap().to_string();
    env.snap(&["check"]).assert().code(1).stderr(
        predicate::str::contains("drill record")
            .and(predicate::str::contains(name))
            .and(predicate::str::contains("no backed up data is damaged"))
            .and(predicate::str::contains("repository is damaged").not()),
    );
}

/// Names that need quoting drill as they restore: a database whose name holds quotes
/// and a space (a `--pg-all` drill connects to each database), a schema with a space
/// (which `pg_restore --list` cannot tell from a table with one).
#[test]
fn odd_database_and_schema_names_drill_as_they_restore() {
    let Some(pg) = Pg::start() else { return };
    let env = Env::new();
    env.init();
    pg.sql("postgres", r#"CREATE DATABASE "cöpy ""2"" 'x""#);
    pg.createdb("plain");
    pg.sql(
        "plain",
        r#"CREATE SCHEMA "a b"; CREATE TABLE "a b".t (i int); INSERT INTO "a b".t VALUES (1);"#,
    );
    env.backup_json(&["--pg", &pg.dsn("plain")]);
    env.backup_json(&["--pg-all", &pg.dsn("postgres")]);
    let out = drill(&env, &["--json"]).output().unwrap();
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // Each database was counted (it has no table): none failed to connect.
    let said = String::from_utf8_lossy(&out.stdout);
    assert_eq!(said.matches("\"result\": \"passed\"").count(), 4, "{said}");
}

/// A profile's `verify` command runs on the restored copy with `{path}` filled in; one
/// that fails fails the drill, naming the command as it ran, and the record keeps the
/// restore's figures and checks.
#[test]
fn a_profile_s_verify_command_checks_the_restored_copy() {
    let env = Env::new();
    env.init();
    let data = env.path("data");
    fs::create_dir_all(&data).unwrap();
    fs::write(data.join("f"), b"needle").unwrap();
    env.backup_json(&[data.to_str().unwrap()]);
    let config = env.path("snap.toml");
    let scratch = env.path("scratch");
    fs::create_dir_all(&scratch).unwrap();
    let run = |check: &str| {
        fs::write(
            &config,
            format!(
                "[profile.app]\nrepository = {:?}\npaths = [{:?}]\n[profile.app.verify]\n{:?} = {check:?}\n",
                env.repo().display().to_string(),
                data.display().to_string(),
                data.display().to_string(),
            ),
        )
        .unwrap();
        let mut c = crate::util::snap_bin();
        c.env("SNAP_CACHE_DIR", env.cache())
            .env("SNAP_CONFIG", &config)
            .env_remove("SNAP_REPO")
            .args([
                "-p",
                "app",
                "drill",
                "--scratch",
                scratch.to_str().unwrap(),
                "--json",
            ]);
        c.output().unwrap()
    };
    let out = run("grep -q needle {path}/f");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let said: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let checks = &said["drills"][0]["sources"][0]["checks"];
    assert!(checks.to_string().contains("verify_command"), "{said:#}");

    let out = run("grep -q nothere {path}/f");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("the verify command failed: command `grep -q nothere ")
            && !err.contains("{path}"),
        "{err}"
    );
    let said: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let source = &said["drills"][0]["sources"][0];
    assert_eq!(source["result"], "failed", "{said:#}");
    assert!(source["bytes"].as_u64().unwrap() > 0, "{said:#}");
    assert!(source["checks"].to_string().contains("restore"), "{said:#}");
}

/// Two profiles of one repository, each with its tags: `snap -p a drill` drills a's
/// groups only. It drilled every group with a's verify commands, so b's group passed
/// a drill its own check fails.
#[test]
fn a_profile_drills_only_its_own_snapshots() {
    let env = Env::new();
    env.init();
    let (a, b) = (env.path("a"), env.path("b"));
    for d in [&a, &b] {
        fs::create_dir_all(d).unwrap();
        fs::write(d.join("f"), b"data").unwrap();
    }
    let config = env.path("snap.toml");
    fs::write(
        &config,
        format!(
            "[profile.a]\nrepository = {repo:?}\npaths = [{a:?}]\ntags = [\"a\"]\n\
             [profile.b]\nrepository = {repo:?}\npaths = [{b:?}]\ntags = [\"b\"]\n\
             [profile.b.verify]\n{b:?} = \"false\"\n",
            repo = env.repo().display().to_string(),
            a = a.display().to_string(),
            b = b.display().to_string(),
        ),
    )
    .unwrap();
    let snap = |args: &[&str]| {
        let mut c = crate::util::snap_bin();
        c.env("SNAP_CACHE_DIR", env.cache())
            .env("SNAP_CONFIG", &config)
            .env_remove("SNAP_REPO")
            .args(args);
        c.output().unwrap()
    };
    for p in ["a", "b"] {
        assert!(snap(&["run", p]).status.success());
    }
    let out = snap(&["-p", "a", "drill", "--json"]);
    assert!(out.status.success(), "{out:?}");
    let said: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(said["drills"].as_array().unwrap().len(), 1, "{said:#}");
    let out = snap(&["-p", "b", "drill"]);
    assert_eq!(out.status.code(), Some(1), "b's own check fails: {out:?}");
}
