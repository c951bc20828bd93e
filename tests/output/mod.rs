//! Output that is the same for every command (issue 25), through the real binary:
//! one time rule (local time with its offset from UTC; RFC 3339 under `--json`),
//! success lines that never start with `snap:` (the error prefix), results on stdout,
//! a JSON error document on stdout when a `--json` command fails, global options in
//! their own help group, and the small words (import's count, `key list`'s user,
//! `-v` on `backup --ngw`).

use std::fs;

use crate::util::{pg::Pg, Env};

/// A zone far from UTC, without daylight saving time (the expected offset is fixed).
const ZONE: &str = "Asia/Novosibirsk";

fn stdout(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// The text after `short` id on its line of `text` up to `host`: the time column.
fn time_after(text: &str, short: &str, host: &str) -> String {
    let line = text
        .lines()
        .find(|l| l.contains(short))
        .unwrap_or_else(|| panic!("no line with {short} in:\n{text}"));
    let rest = &line[line.find(short).unwrap() + short.len()..];
    rest[..rest.find(host).unwrap_or(rest.len())]
        .trim()
        .to_string()
}

#[test]
fn list_forget_find_ls_and_check_show_one_local_time() {
    let env = Env::new();
    env.init();
    fs::create_dir(env.path("d")).unwrap();
    fs::write(env.path("d/report.txt"), b"hello").unwrap();
    let snap = env.backup_json(&[env.path("d").to_str().unwrap()]);
    let short = snap["id"].as_str().unwrap()[..8].to_string();
    let run = |args: &[&str]| {
        let o = env.snap(args).env("TZ", ZONE).output().unwrap();
        assert!(o.status.success(), "{args:?}: {}", stderr(&o));
        stdout(&o)
    };
    // JSON: RFC 3339 with an offset, the instant every table shows.
    let listed = env.snapshots();
    let time = chrono::DateTime::parse_from_rfc3339(listed[0]["time"].as_str().unwrap())
        .expect("RFC 3339");
    let expected = time
        .with_timezone(&chrono::FixedOffset::east_opt(7 * 3600).unwrap())
        .format("%Y-%m-%d %H:%M:%S +07:00")
        .to_string();

    let host = listed[0]["host"].as_str().unwrap();
    let in_list = time_after(&run(&["list"]), &short, host);
    let forget = run(&["forget", "--keep-last", "1"]);
    let in_forget = time_after(&forget, &short, "last snapshot");
    assert_eq!(in_list, expected, "list");
    assert_eq!(in_forget, expected, "forget:\n{forget}");
    let found = run(&["find", "report.txt"]);
    assert!(found.contains(&format!("{short}  {expected}")), "{found}");
    let check = run(&["check", "--max-age", "1d"]);
    assert!(check.contains(&expected), "{check}");
    // ls shows the file's modification time the same way.
    let ls = run(&["ls", "latest"]);
    assert!(
        ls.lines()
            .any(|l| l.ends_with("/d/report.txt") && l.contains(" +07:00  ")),
        "{ls}"
    );
    // A lock message (from the library) follows the rule too.
    let lock = r#"{"host":"elsewhere","pid":1,"time":"2024-01-01T00:00:00Z","exclusive":true,"purpose":"prune"}"#;
    fs::create_dir_all(env.repo().join("locks")).unwrap();
    fs::write(env.repo().join("locks/00000000000000b1.json"), lock).unwrap();
    let o = env
        .snap(&["forget", "--keep-last", "1"])
        .env("TZ", ZONE)
        .output()
        .unwrap();
    assert!(
        stderr(&o).contains("since 2024-01-01 07:00:00 +07:00"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn a_failed_json_command_prints_an_error_document() {
    let env = Env::new();
    fs::create_dir(env.path("d")).unwrap();
    // backup --json into no repository: stdout has the error, in the words of stderr.
    let o = env
        .snap(&["backup", "--json", env.path("d").to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1));
    let doc: serde_json::Value = serde_json::from_slice(&o.stdout).expect("JSON on stdout");
    let line = stderr(&o);
    let msg = doc["error"]["message"].as_str().unwrap();
    assert_eq!(line.trim_end(), format!("snap: {msg}"));
    assert_eq!(doc["error"]["kind"], "not_found");

    // Without --json nothing reaches stdout.
    let o = env.snap(&["list"]).output().unwrap();
    assert_eq!(o.status.code(), Some(1));
    assert!(o.stdout.is_empty());

    // check --max-age --json: a report when fresh, an error document when too old.
    env.init();
    env.backup_json(&[env.path("d").to_str().unwrap()]);
    let fresh = crate::util::json(env.snap(&["check", "--max-age", "1h", "--json"]));
    assert_eq!(fresh["max_age"], "1h");
    assert!(fresh["newest"].as_str().unwrap().ends_with('Z'));
    std::thread::sleep(std::time::Duration::from_millis(2100));
    let o = env
        .snap(&["check", "--max-age", "1s", "--json"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1));
    let doc: serde_json::Value = serde_json::from_slice(&o.stdout).expect("JSON on stdout");
    assert!(doc["error"]["message"]
        .as_str()
        .unwrap()
        .contains("older than the allowed 1s"));
    assert_eq!(doc["error"]["kind"], "stale");

    // Wrong usage, whether the parser (exit 2) or snap (exit 1) finds it: `snap:` on
    // stderr, and the error document under --json.
    let d = env.path("d");
    let d = d.to_str().unwrap();
    let bad_as = [
        "backup",
        "--json",
        "--command",
        "true",
        "--command",
        "true",
        "--as",
        "a",
    ];
    for (args, words, code) in [
        (&["check", "--max-age", "2x", "--json"][..], "2x", 2),
        (
            &["backup", "--json", "--no-such-option", d][..],
            "--no-such-option",
            2,
        ),
        (&bad_as[..], "--as", 1),
    ] {
        let o = env.snap(args).output().unwrap();
        let line = stderr(&o);
        assert_eq!(o.status.code(), Some(code), "{args:?}: {line}");
        assert!(
            line.starts_with("snap: ") && line.contains(words),
            "{args:?}: {line}"
        );
        let doc: serde_json::Value = serde_json::from_slice(&o.stdout)
            .unwrap_or_else(|e| panic!("{args:?}: no JSON on stdout ({e}): {line}"));
        assert_eq!(doc["error"]["kind"], "usage", "{args:?}: {doc}");
        assert!(
            doc["error"]["message"].as_str().unwrap().contains(words),
            "{args:?}: {doc}"
        );
    }

    // run --json with a broken configuration: a body for `| curl -d @-`.
    fs::write(env.path("snap.toml"), "[profiles.x]\n").unwrap();
    let o = env
        .snap(&["run", "--json"])
        .env("SNAP_CONFIG", env.path("snap.toml"))
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1));
    let doc: serde_json::Value = serde_json::from_slice(&o.stdout).expect("JSON on stdout");
    assert_eq!(doc["error"]["kind"], "usage");
    assert!(doc["error"]["message"]
        .as_str()
        .unwrap()
        .contains("snap.toml"));
    // One document: run's own summary of a failed step carries the failure.
    fs::write(
        env.path("snap.toml"),
        format!(
            "default = \"x\"\n[profile.x]\nrepository = \"{}\"\npaths = [\"{}\"]\n",
            env.path("none").display(),
            env.path("d").display()
        ),
    )
    .unwrap();
    let o = env
        .snap(&["run", "--json"])
        .env("SNAP_CONFIG", env.path("snap.toml"))
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    let doc: serde_json::Value =
        serde_json::from_slice(&o.stdout).expect("exactly one JSON document");
    assert_eq!(doc["exit"], 1, "{doc}");
}

#[test]
fn key_list_json_names_the_user_without_user_set() {
    let env = Env::new();
    fs::write(env.path("pass"), "secret\n").unwrap();
    env.snap(&["init", "--encrypt"])
        .env("SNAP_PASSWORD_FILE", env.path("pass"))
        .env_remove("USER")
        .env_remove("LOGNAME")
        .assert()
        .success();
    let me = std::process::Command::new("id")
        .arg("-un")
        .output()
        .unwrap();
    let me = String::from_utf8(me.stdout).unwrap().trim().to_string();
    let keys = crate::util::json(
        env.snap(&["key", "list", "--json"])
            .env("SNAP_PASSWORD_FILE", env.path("pass")),
    );
    assert_eq!(keys[0]["user"], me.as_str(), "{keys}");
    assert_eq!(keys[0]["current"], true);
}

#[test]
fn success_goes_to_stdout_without_the_error_prefix() {
    let env = Env::new();
    env.init();
    fs::create_dir(env.path("d")).unwrap();
    fs::write(env.path("d/f"), b"data").unwrap();
    env.backup_json(&[env.path("d").to_str().unwrap()]);
    let no_prefix = |o: &std::process::Output, what: &str| {
        assert!(o.status.success(), "{what}: {}", stderr(o));
        assert!(
            !stderr(o).lines().any(|l| l.starts_with("snap:")),
            "{what}: {}",
            stderr(o)
        );
    };
    // A sync that creates its destination.
    let o = env
        .snap(&["sync", "--to", env.path("copy").to_str().unwrap()])
        .output()
        .unwrap();
    no_prefix(&o, "sync");
    assert!(stdout(&o).contains("as a copy of"), "{}", stdout(&o));

    // restore --pipe.
    let o = env
        .snap(&["backup", "--stdin-name", "db/x.sql"])
        .write_stdin("stream bytes")
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let out = env.path("piped");
    let cmd = format!("cat > {}", out.display());
    let o = env
        .snap(&["restore", "latest", "--pipe", &cmd, "db/x.sql"])
        .output()
        .unwrap();
    no_prefix(&o, "restore --pipe");
    assert!(
        stdout(&o).starts_with("restored db/x.sql"),
        "{}",
        stdout(&o)
    );
    assert_eq!(fs::read(&out).unwrap(), b"stream bytes");

    // restore --pg.
    let Some(pg) = Pg::start() else { return };
    pg.createdb("shop");
    pg.sql("shop", "CREATE TABLE t (a int); INSERT INTO t VALUES (1);");
    env.backup_json(&["--pg", &pg.dsn("shop")]);
    let o = env
        .snap(&["restore", "latest", "--pg", &pg.dsn("copy")])
        .output()
        .unwrap();
    no_prefix(&o, "restore --pg");
    assert!(stdout(&o).contains("into database copy"), "{}", stdout(&o));
}

#[test]
fn help_lists_a_commands_own_options_before_the_global_ones() {
    for args in [
        &["backup", "--help"][..],
        &["list", "--help"],
        &["restore", "--help"],
        &["key", "list", "--help"],
        &["check", "--help"],
    ] {
        let o = crate::util::snap_bin().args(args).output().unwrap();
        let help = stdout(&o);
        let own = help.find("\nOptions:").expect("own options");
        let global = help.find("\nGlobal options:").expect("global group");
        assert!(own < global, "{args:?}:\n{help}");
        for g in ["--repo", "--quiet", "--verbose", "--config", "--cache-dir"] {
            let at = help.find(&format!(" {g}")).unwrap();
            assert!(
                at > global,
                "{args:?}: {g} not in the global group:\n{help}"
            );
        }
    }
}

#[test]
fn import_of_only_bad_archives_says_none_was_imported() {
    let env = Env::new();
    env.init();
    let files: Vec<String> = (0..4)
        .map(|i| {
            let p = env.path(&format!("bad{i}.ngwbackup"));
            fs::write(&p, b"not a zip").unwrap();
            p.display().to_string()
        })
        .collect();
    let mut args = vec!["import"];
    args.extend(files.iter().map(String::as_str));
    let o = env.snap(&args).output().unwrap();
    assert_eq!(o.status.code(), Some(1));
    let err = stderr(&o);
    assert!(
        err.contains("none of the 4 archives could be imported"),
        "{err}"
    );
    assert!(!err.contains("the other"), "{err}");
}

#[test]
fn verbose_backup_ngw_says_each_phase() {
    let Some(pg) = Pg::start() else { return };
    let env = Env::new();
    env.init();
    pg.createdb("ngw");
    let uuid = "0123456789abcdef0123456789abcdef";
    pg.sql(
        "ngw",
        &format!(
            "CREATE TABLE fileobj (id serial PRIMARY KEY, component varchar(50) NOT NULL, uuid varchar(32) NOT NULL);
             CREATE TABLE core_migration (component varchar, revision varchar);
             CREATE TABLE setting (component varchar, name varchar, value jsonb, PRIMARY KEY (component, name));
             INSERT INTO fileobj (component, uuid) VALUES ('raster_layer', '{uuid}');"
        ),
    );
    let blob = env.path(&format!("fs/raster_layer/01/23/{uuid}"));
    fs::create_dir_all(blob.parent().unwrap()).unwrap();
    fs::write(&blob, b"raster").unwrap();
    let cfg = env.path("config.ini");
    fs::write(
        &cfg,
        format!(
            "[core]\ndatabase.host = {}\ndatabase.port = 5432\ndatabase.name = ngw\ndatabase.user = postgres\n\n[file_storage]\npath = {}\n",
            pg.sock(),
            env.path("fs").display()
        ),
    )
    .unwrap();
    let backup = |verbose: bool| {
        let mut args = vec!["backup", "--ngw", cfg.to_str().unwrap()];
        if verbose {
            args.insert(0, "-v");
        }
        let o = env.snap(&args).output().unwrap();
        assert!(o.status.success(), "{}", stderr(&o));
        stderr(&o)
    };
    let quiet = backup(false);
    assert!(!quiet.contains("connecting"), "{quiet}");
    let said = backup(true);
    for phase in [
        "connecting to database ngw on ",
        "file storage ",
        "1 blobs listed",
        "dumping database ngw",
        "file storage stored: 1 files, 6 bytes",
    ] {
        assert!(said.contains(phase), "{phase:?} missing from:\n{said}");
    }
    // -v's lines are not errors: none starts with the error prefix.
    assert!(!said.lines().any(|l| l.starts_with("snap:")), "{said}");
}

#[test]
fn ls_shows_setuid_setgid_and_sticky_as_ls_does() {
    use std::os::unix::fs::PermissionsExt;
    let env = Env::new();
    env.init();
    let src = env.path("src");
    fs::create_dir_all(src.join("shared")).unwrap();
    for (name, mode) in [("su", 0o4755), ("sg", 0o2644)] {
        fs::write(src.join(name), "x").unwrap();
        fs::set_permissions(src.join(name), fs::Permissions::from_mode(mode)).unwrap();
    }
    fs::set_permissions(src.join("shared"), fs::Permissions::from_mode(0o1777)).unwrap();
    env.backup_json(&[src.to_str().unwrap()]);
    let o = env
        .snap(&["ls", "latest", src.to_str().unwrap()])
        .output()
        .unwrap();
    let text = stdout(&o);
    for (mode, name) in [
        ("-rwsr-xr-x", "su"),
        ("-rw-r-Sr--", "sg"),
        ("drwxrwxrwt", "shared"),
    ] {
        assert!(
            text.lines()
                .any(|l| l.starts_with(mode) && l.ends_with(&format!("/{name}"))),
            "{mode} {name} not in\n{text}"
        );
    }
}
