//! `snap diff` across pg_dump's renumbered files and against a snapshot's parent, and
//! the progress display on a terminal, through the real binary.

use std::collections::HashMap;
use std::fs;

use crate::util::pg::Pg;
use crate::util::Env;

/// `<dumpId>.dat` -> `schema.table` of the pg_dump directory `db/<db>` in `snapshot`,
/// from pg_restore's own listing of the stored `toc.dat`.
fn tables(env: &Env, pg: &Pg, snapshot: &str, db: &str) -> HashMap<String, String> {
    let out = env
        .snap(&["cat", snapshot, &format!("db/{db}/toc.dat")])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let dir = tempfile::tempdir().unwrap();
    fs::write(dir.path().join("toc.dat"), out.stdout).unwrap();
    let list = pg
        .client("pg_restore", db)
        .arg("--list")
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(list.status.success(), "{list:?}");
    String::from_utf8(list.stdout)
        .unwrap()
        .lines()
        .filter_map(|l| {
            let (id, rest) = l.split_once(';')?;
            let w: Vec<&str> = rest.split_whitespace().collect();
            (w.len() >= 6 && w[2..4] == ["TABLE", "DATA"])
                .then(|| (format!("{}.dat", id.trim()), format!("{}.{}", w[4], w[5])))
        })
        .collect()
}

/// `snap diff --json` as (change, file name, table, old file name) rows.
fn diff_rows(env: &Env, args: &[&str]) -> Vec<(String, String, String, String)> {
    let out = env
        .snap(&[&["diff", "--json"], args].concat())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let field = |v: &serde_json::Value, k: &str| {
        let s = v[k].as_str().unwrap_or_default();
        s.rsplit('/').next().unwrap().to_string()
    };
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            let table = v["table"].as_str().unwrap_or_default().to_string();
            (
                v["change"].as_str().unwrap().to_string(),
                field(&v, "path"),
                table,
                field(&v, "old_path"),
            )
        })
        .collect()
}

/// A day that adds a table renumbers every table's data file: `diff` still pairs each
/// table with itself (the new one added, the edited one modified, the others not
/// listed), one snapshot is compared with its predecessor, and each file of the new
/// dump is cut against the previous file of its own table.
#[test]
fn diff_and_hints_pair_dump_files_by_table_across_renumbering() {
    let Some(pg) = Pg::start() else { return };
    let env = Env::new();
    env.init();
    pg.createdb("app");
    pg.sql(
        "app",
        "CREATE TABLE layer (id int, geom text);
         INSERT INTO layer SELECT i, repeat(md5(i::text), 8) FROM generate_series(1, 20000) i;
         CREATE TABLE resource (id int, name text);
         INSERT INTO resource SELECT i, 'resource ' || i FROM generate_series(1, 3000) i;
         CREATE TABLE core_migration (name text);
         INSERT INTO core_migration SELECT 'migration ' || i FROM generate_series(1, 100) i;
         CREATE TABLE spatial_ref_sys (srid int, proj text);
         INSERT INTO spatial_ref_sys SELECT i, 'proj ' || i FROM generate_series(1, 500) i;
         CREATE TABLE auth_user (id int, name text);
         INSERT INTO auth_user SELECT i, 'user ' || i FROM generate_series(1, 50) i;
         CREATE TABLE feature_layer (id int, attrs text);
         INSERT INTO feature_layer SELECT i, md5(i::text) FROM generate_series(1, 800) i;
         CREATE TABLE webmap (id int, title text);
         INSERT INTO webmap SELECT i, 'map ' || i FROM generate_series(1, 40) i;
         CREATE TABLE audit (id int, what text);
         INSERT INTO audit SELECT i, 'event ' || i FROM generate_series(1, 400) i;",
    );
    let dsn = pg.dsn("app");
    let day1 = env.backup_json(&["--pg", &dsn])["id"]
        .as_str()
        .unwrap()
        .to_string();
    // A new table, and an edit of one row of `resource`.
    pg.sql(
        "app",
        "CREATE TABLE aaa_added (id int);
         INSERT INTO aaa_added SELECT generate_series(1, 10);
         UPDATE resource SET name = 'renamed' WHERE id = 1500;",
    );
    let out = env
        .snap(&["-v", "backup", "--json", "--pg", &dsn])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let log = String::from_utf8_lossy(&out.stderr).into_owned();
    let day2: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let day2 = day2["id"].as_str().unwrap().to_string();

    let (old, new) = (
        tables(&env, &pg, &day1, "app"),
        tables(&env, &pg, &day2, "app"),
    );
    let file_of = |t: &HashMap<String, String>, table: &str| {
        t.iter()
            .find(|(_, v)| *v == table)
            .map(|(k, _)| k.clone())
            .unwrap()
    };
    for table in old.values() {
        let (was, is) = (file_of(&old, table), file_of(&new, table));
        assert_ne!(was, is, "the test needs {table}'s file renumbered");
        assert!(
            log.contains(&format!("{is}: cut against the previous dump's {was}")),
            "{table} ({is}, was {was}) not cut against its own previous file:\n{log}"
        );
    }

    assert!(
        new.iter().any(|(f, t)| old.get(f).is_some_and(|o| o != t)),
        "the test needs a file name that held another table the day before: {old:?} {new:?}"
    );

    let rows = diff_rows(&env, &[&day1, &day2]);
    let added = file_of(&new, "public.aaa_added");
    let (res_old, res_new) = (
        file_of(&old, "public.resource"),
        file_of(&new, "public.resource"),
    );
    let want = vec![
        (
            "modified".to_string(),
            res_new,
            "public.resource".to_string(),
            res_old,
        ),
        (
            "added".to_string(),
            added,
            "public.aaa_added".to_string(),
            String::new(),
        ),
    ];
    let data: Vec<_> = rows.iter().filter(|r| r.1 != "toc.dat").cloned().collect();
    let mut sorted = want.clone();
    sorted.sort_by(|a, b| a.1.cmp(&b.1));
    assert_eq!(data, sorted, "all rows: {rows:?}");

    // One snapshot: compared with the one before it (a database-only backup records
    // no parent, so the latest earlier one of the same host and sources).
    assert_eq!(diff_rows(&env, &[&day2]), rows);
    let out = env.snap(&["diff", &day1]).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("has no parent") && err.contains("snap diff OLD"),
        "{err}"
    );
    let text = env.snap(&["diff", &day2]).output().unwrap();
    let text = String::from_utf8_lossy(&text.stdout);
    let (was, is) = (
        file_of(&old, "public.resource"),
        file_of(&new, "public.resource"),
    );
    assert!(
        text.lines().any(
            |l| l.starts_with(&format!("M /db/app/{is} (table public.resource)  "))
                && l.ends_with(&format!(", was {was}"))
        ) && text.contains("(table public.aaa_added)"),
        "{text}"
    );
}

/// Runs `snap ARGS` under `script`, which gives it a terminal; returns what it wrote
/// there (stdout and stderr), or `None` without `script`.
fn on_terminal(env: &Env, args: &[&str]) -> Option<String> {
    let bin = env!("CARGO_BIN_EXE_snap");
    let line = format!("{bin} --repo {} {}", env.repo().display(), args.join(" "));
    let Ok(out) = std::process::Command::new("script")
        .args(["-qec", &line, "/dev/null"])
        .env("SNAP_CACHE_DIR", env.cache())
        .env("TERM", "xterm")
        .output()
    else {
        crate::util::missing("script, to give snap a terminal", "Debian's bsdutils");
        return None;
    };
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "snap {args:?}: {text}");
    Some(text)
}

/// On a terminal, a restore's status line names its phase and the total it works
/// towards (the snapshot's size and file count), and a backup with a parent shows the
/// parent's size as its estimate; `--json` and `--quiet` show no status line.
#[test]
fn progress_on_a_terminal_shows_phase_and_totals() {
    let env = Env::new();
    env.init();
    let src = env.path("src");
    fs::create_dir_all(&src).unwrap();
    for (i, mib) in [24usize, 24, 16].iter().enumerate() {
        let data = crate::util::random_bytes(mib << 20, &format!("progress {i}"));
        fs::write(src.join(format!("f{i}")), data).unwrap();
    }
    let first = on_terminal(&env, &["backup", src.to_str().unwrap()]);
    let Some(first) = first else { return };
    assert!(first.contains("reading files  "), "{first}");
    let again = on_terminal(&env, &["backup", src.to_str().unwrap()]).unwrap();
    assert!(
        again.contains("reading files  ") && again.contains(" of 64.0 MiB ("),
        "the parent's size as the estimate: {again}"
    );
    let target = env.path("target");
    let restore = ["restore", "latest", "--target", target.to_str().unwrap()];
    let shown = on_terminal(&env, &restore).unwrap();
    assert!(
        shown.contains("restore  ")
            && shown.contains(" of 64.0 MiB (")
            && shown.contains(" of 3 files"),
        "{shown}"
    );
    fs::remove_dir_all(&target).unwrap();
    for quiet in [&["--json"][..], &["--quiet"]] {
        let shown = on_terminal(&env, &[&restore[..], quiet].concat()).unwrap();
        assert!(!shown.contains(" of 64.0 MiB ("), "{quiet:?}: {shown}");
        fs::remove_dir_all(&target).unwrap();
    }
}
