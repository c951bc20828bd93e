//! Configuration that follows the user, through the real binary: every command uses
//! the configuration's profile (repository and passphrase file), `--retry-lock` waits
//! for a live holder, bandwidth limits on a remote store, `forget`'s filters and
//! groups with the notes that explain them, and NGW backups that tolerate missing
//! file-storage blobs when asked.

use std::fs;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::Stdio;

use predicates::prelude::*;

use crate::util::pg::Pg;
use crate::util::servers::Sshd;
use crate::util::{random_bytes, snap_bin, Env};

/// `snap ARGS` with no `--repo`: configuration `config`, no SNAP_REPO, no passphrase
/// in the environment, and a HOME of the scratch directory (so no default repository
/// or configuration of the user running the tests is seen).
fn bare(env: &Env, config: &Path, args: &[&str]) -> assert_cmd::Command {
    let mut c = assert_cmd::Command::from_std(std_snap(env, &[]));
    c.env("SNAP_CONFIG", config)
        .env("HOME", env.path("home"))
        .env_remove("SNAP_REPO")
        .env_remove("XDG_CONFIG_HOME")
        .env_remove("XDG_DATA_HOME")
        .env_remove("SNAP_PASSWORD")
        .env_remove("SNAP_PASSWORD_FILE")
        .env_remove("SNAP_KEY_FILE")
        .args(args);
    c
}

/// The real binary as a `std::process::Command` (to spawn), with this directory's
/// cache and no SNAP_REPO.
fn std_snap(env: &Env, args: &[&str]) -> std::process::Command {
    let mut c = std::process::Command::new(assert_cmd::cargo::cargo_bin("snap"));
    c.env("SNAP_CACHE_DIR", env.cache())
        .env_remove("SNAP_REPO")
        .args(args);
    c
}

fn stdout_json(out: &std::process::Output) -> serde_json::Value {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

fn data(env: &Env, name: &str) -> String {
    let dir = env.path(name);
    fs::create_dir_all(&dir).unwrap();
    fs::write(dir.join("f"), random_bytes(64 << 10, name)).unwrap();
    dir.display().to_string()
}

/// After `snap backup` with no arguments wrote into the default profile's encrypted
/// repository, `list`, `ls`, `check` and `stats` read that repository with the
/// profile's passphrase file; `-p` picks another profile, SNAP_REPO overrides the
/// default profile, and `--repo` with `-p` is refused.
#[test]
fn every_command_follows_the_default_profile() {
    let env = Env::new();
    let (home, work) = (env.path("home-repo"), env.path("work-repo"));
    let pass = env.path("pass");
    fs::write(&pass, "profile secret\n").unwrap();
    for (repo, encrypt) in [(&home, true), (&work, false)] {
        let mut c = snap_bin();
        c.env("SNAP_CACHE_DIR", env.cache())
            .env("SNAP_PASSWORD", "profile secret")
            .env("SNAP_NEW_PASSWORD", "profile secret")
            .arg("--repo")
            .arg(repo)
            .arg("init");
        if encrypt {
            c.arg("--encrypt");
        }
        c.assert().success();
    }
    let (a, b) = (data(&env, "a"), data(&env, "b"));
    let config = env.path("snap.toml");
    fs::write(
        &config,
        format!(
            "default = \"home\"\n\n[profile.home]\nrepository = \"{}\"\npassword_file = \"{}\"\npaths = [\"{a}\"]\n\n[profile.work]\nrepository = \"{}\"\npaths = [\"{b}\"]\n",
            home.display(),
            pass.display(),
            work.display()
        ),
    )
    .unwrap();

    bare(&env, &config, &["backup"]).assert().success();
    let list = stdout_json(&bare(&env, &config, &["list", "--json"]).output().unwrap());
    let list = list.as_array().unwrap();
    assert_eq!(list.len(), 1, "{list:?}");
    assert!(list[0].to_string().contains(&a), "{list:?}");
    bare(&env, &config, &["ls", "latest"])
        .assert()
        .success()
        .stdout(predicate::str::contains(format!("{a}/f")));
    bare(&env, &config, &["check"]).assert().success();
    bare(&env, &config, &["stats"]).assert().success();

    // -p: another profile's repository, for backup and for list.
    bare(&env, &config, &["-p", "work", "backup"])
        .assert()
        .success();
    bare(&env, &config, &["backup", "-p", "work", &a])
        .assert()
        .success();
    let work_list = stdout_json(
        &bare(&env, &config, &["--profile", "work", "list", "--json"])
            .output()
            .unwrap(),
    );
    assert_eq!(work_list.as_array().unwrap().len(), 2, "{work_list}");
    assert_eq!(
        stdout_json(&bare(&env, &config, &["list", "--json"]).output().unwrap())
            .as_array()
            .unwrap()
            .len(),
        1,
        "the default profile's repository is untouched"
    );

    // SNAP_REPO overrides the default profile; -p overrides SNAP_REPO.
    let via_env = bare(&env, &config, &["list", "--json"])
        .env("SNAP_REPO", &work)
        .output()
        .unwrap();
    assert_eq!(stdout_json(&via_env).as_array().unwrap().len(), 2);
    let p_over_env = bare(&env, &config, &["-p", "home", "list", "--json"])
        .env("SNAP_REPO", &work)
        .output()
        .unwrap();
    assert_eq!(stdout_json(&p_over_env).as_array().unwrap().len(), 1);

    bare(
        &env,
        &config,
        &["--repo", work.to_str().unwrap(), "-p", "home", "list"],
    )
    .assert()
    .code(1)
    .stderr(predicate::str::contains("--repo and --profile home"));
    bare(&env, &config, &["-p", "nosuch", "list"])
        .assert()
        .code(1)
        .stderr(predicate::str::contains(
            "no profile \"nosuch\" (defined: home, work)",
        ));
    bare(&env, &env.path("absent.toml"), &["-p", "home", "list"])
        .assert()
        .code(1)
        .stderr(predicate::str::contains("absent.toml"));
}

/// A lock file naming a live process of another host, exclusive (a prune running
/// there): without
/// `--retry-lock` a reader fails at once; with a short wait it fails with the same
/// message after saying it waits; with a long one it waits, and succeeds once the
/// holder's file is gone.
#[test]
fn retry_lock_waits_for_a_live_holder() {
    let env = Env::new();
    env.init();
    let src = data(&env, "src");
    env.backup_json(&[&src]);
    let mut holder = std::process::Command::new("sleep")
        .arg("600")
        .spawn()
        .unwrap();
    let lock = env.repo().join("locks/held-by-prune.json");
    fs::write(
        &lock,
        serde_json::to_vec(&serde_json::json!({
            "host": "another-host", "pid": holder.id(), "time": chrono::Utc::now(),
            "exclusive": true, "purpose": "prune",
        }))
        .unwrap(),
    )
    .unwrap();
    let locked = "repository is locked by an exclusive lock for prune";
    // `ls` takes a shared lock, which the exclusive one excludes.
    env.snap(&["ls", "latest"])
        .assert()
        .code(1)
        .stderr(predicate::str::contains(locked))
        .stderr(predicate::str::contains("waiting").not());
    env.snap(&["--retry-lock", "1s", "ls", "latest"])
        .assert()
        .code(1)
        .stderr(predicate::str::contains("waiting up to"))
        .stderr(predicate::str::contains(locked));
    env.snap(&["list", "--retry-lock", "soon"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("not a duration like 30s"));

    let repo = env.repo().display().to_string();
    let mut waiter = std_snap(
        &env,
        &["--repo", &repo, "--retry-lock", "5m", "ls", "latest"],
    )
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .spawn()
    .unwrap();
    let mut stderr = BufReader::new(waiter.stderr.take().unwrap());
    let mut line = String::new();
    stderr.read_line(&mut line).unwrap();
    assert!(line.contains("waiting up to 300s"), "{line}");
    assert!(line.contains("another-host"), "{line}");
    // The holder finishes: its file goes, then the process.
    fs::remove_file(&lock).unwrap();
    holder.kill().unwrap();
    holder.wait().unwrap();
    let out = waiter.wait_with_output().unwrap();
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains(&format!("{src}/f")));
}

/// `--limit-upload` and `--limit-download` are accepted by every command, and a sync
/// to an SFTP repository and a check of it with limits move every byte (how they pace
/// is the unit tests' business: `store::limit`).
#[test]
fn bandwidth_limits_on_an_sftp_destination() {
    let env = Env::new();
    env.init();
    let src = data(&env, "src");
    env.backup_json(&[&src, "--limit-upload", "100000"]);
    env.snap(&["list", "--limit-upload", "0"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("--limit-upload"));
    let Some(sshd) = Sshd::start() else { return };
    let e = sshd.env();
    let url = sshd.url(&env.path("offsite"));
    env.snap(&[
        "sync",
        "--to",
        &url,
        "--limit-upload",
        "20000",
        "--limit-download",
        "20000",
    ])
    .envs(e.iter().map(|(k, v)| (*k, v.as_str())))
    .assert()
    .success();
    let mut c = snap_bin();
    c.env("SNAP_CACHE_DIR", env.path("cache2"))
        .envs(e.iter().map(|(k, v)| (*k, v.as_str())))
        .args(["--repo", &url, "--limit-download", "20000"])
        .args(["check", "--read-data"]);
    c.assert().success();
    env.restore("latest", &env.path("back"));
}

/// `forget --tag`, `--path` and `--group-by`, and the notes that say why same-day
/// runs go and why a changed set of sources is a group of its own.
#[test]
fn forget_filters_groups_and_says_why() {
    let env = Env::new();
    env.init();
    let (a, b) = (data(&env, "a"), data(&env, "b"));
    env.backup_json(&[&a, "--tag", "nightly"]);
    env.backup_json(&[&a, "--tag", "nightly"]);
    env.backup_json(&[&a, &b, "--tag", "manual"]);
    env.backup_json(&[&b]);
    let count = |args: &[&str]| -> usize {
        let out = env.snap(&[&["forget", "--json"], args].concat()).output();
        stdout_json(&out.unwrap())["removed"]
            .as_array()
            .unwrap()
            .len()
    };
    // Dry runs: each filter narrows what is judged; the rest stays.
    assert_eq!(
        count(&["-n", "--keep-last", "1"]),
        1,
        "two of a, one of a+b, one of b"
    );
    assert_eq!(count(&["-n", "--keep-last", "1", "--group-by", "host"]), 3);
    assert_eq!(count(&["-n", "--keep-last", "1", "--group-by", ""]), 3);
    assert_eq!(count(&["-n", "--keep-last", "1", "--group-by", "tags"]), 1);
    assert_eq!(
        count(&[
            "-n",
            "--keep-last",
            "1",
            "--group-by",
            "host",
            "--tag",
            "nightly"
        ]),
        1
    );
    assert_eq!(
        count(&["-n", "--keep-last", "1", "--group-by", "host", "--path", &b]),
        1,
        "a+b and b"
    );
    assert_eq!(
        count(&[
            "-n",
            "--keep-last",
            "1",
            "--group-by",
            "host",
            "--host",
            "nowhere"
        ]),
        0
    );
    env.snap(&["forget", "--keep-last", "1", "--group-by", "host,colour"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("unknown \"colour\""));

    let out = env
        .snap(&["forget", "-n", "--keep-daily", "1", "--path", &a])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(
        text.contains("remove") && text.contains("a newer snapshot of the same day is kept"),
        "{text}"
    );
    assert!(
        text.contains("2 groups that differ only in their sources")
            && text.contains("--group-by host"),
        "{text}"
    );
    env.snap(&["forget", "--keep-last", "1", "--tag", "nightly"])
        .assert()
        .success()
        .stdout(predicate::str::contains("removed 1 snapshot"));
    assert_eq!(env.snapshots().len(), 3);
}

/// A small NextGIS Web instance: a database with `fileobj`, two blobs in the file
/// storage, a config.ini.
struct Ngw {
    _pg: Pg,
    env: Env,
}

const UUIDS: [&str; 2] = [
    "0a1b2c3d4e5f60718293a4b5c6d7e8f9",
    "f9e8d7c6b5a4938271605f4e3d2c1b0a",
];

impl Ngw {
    fn new() -> Option<Ngw> {
        let pg = Pg::start()?;
        let env = Env::new();
        pg.createdb("ngw");
        pg.sql(
            "ngw",
            "CREATE TABLE fileobj (id serial PRIMARY KEY, component varchar(50) NOT NULL, uuid varchar(32) NOT NULL);
             CREATE TABLE setting (component varchar, name varchar, value jsonb, PRIMARY KEY (component, name));
             INSERT INTO setting VALUES ('core', 'system.name', '\"Test NGW\"');",
        );
        for u in UUIDS {
            let p = Ngw::blob_in(&env, u);
            fs::create_dir_all(p.parent().unwrap()).unwrap();
            fs::write(&p, random_bytes(100 << 10, u)).unwrap();
            pg.sql(
                "ngw",
                &format!("INSERT INTO fileobj (component, uuid) VALUES ('raster_layer', '{u}')"),
            );
        }
        fs::create_dir_all(env.path("sdir")).unwrap();
        fs::write(
            env.path("config.ini"),
            format!(
                "[core]\ndatabase.host = {}\ndatabase.port = 5432\ndatabase.name = ngw\ndatabase.user = postgres\nsdir = {}\n\n[file_storage]\npath = {}\n",
                pg.sock(),
                env.path("sdir").display(),
                env.path("fs").display()
            ),
        )
        .unwrap();
        env.init();
        Some(Ngw { _pg: pg, env })
    }

    fn blob_in(env: &Env, u: &str) -> std::path::PathBuf {
        env.path(&format!("fs/raster_layer/{}/{}/{u}", &u[..2], &u[2..4]))
    }
}

/// One blob gone from the file storage: the backup fails as before; with
/// `--allow-missing-blobs` (or the profile's `allow_missing_blobs`) it records the
/// snapshot with the other blob, the missing one named as a warning and left out of
/// the `$index`, and exits 3.
#[test]
fn ngw_missing_blobs_fail_unless_allowed() {
    let Some(ngw) = Ngw::new() else { return };
    let env = &ngw.env;
    let cfg = env.path("config.ini").display().to_string();
    let gone = Ngw::blob_in(env, UUIDS[1]);
    fs::remove_file(&gone).unwrap();
    env.snap(&["backup", "--ngw", &cfg])
        .assert()
        .code(1)
        .stderr(predicate::str::contains(gone.display().to_string()));
    assert!(env.snapshots().is_empty());

    let out = env
        .snap(&["backup", "--json", "--ngw", &cfg, "--allow-missing-blobs"])
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(3),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let warnings = report["warnings"].as_array().unwrap();
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert!(
        warnings[0]
            .as_str()
            .unwrap()
            .contains(&gone.display().to_string()),
        "{warnings:?}"
    );
    let index = env
        .snap(&["cat", "latest", "ngw/component/file_storage/$index"])
        .output()
        .unwrap();
    let index = String::from_utf8(index.stdout).unwrap();
    assert_eq!(index.lines().count(), 1, "{index}");
    assert!(
        index.contains(UUIDS[0]) && !index.contains(UUIDS[1]),
        "{index}"
    );
    env.snap(&["ls", "latest"])
        .assert()
        .success()
        .stdout(predicate::str::contains(UUIDS[0]))
        .stdout(predicate::str::contains(UUIDS[1]).not());
    env.snap(&["check", "--read-data"]).assert().success();

    // The same from a profile.
    let config = env.path("snap.toml");
    let profile = format!(
        "default = \"ngw\"\n\n[profile.ngw]\nrepository = \"{}\"\nngw = \"{cfg}\"\n",
        env.repo().display()
    );
    fs::write(&config, &profile).unwrap();
    bare(env, &config, &["backup"]).assert().code(1);
    fs::write(&config, format!("{profile}allow_missing_blobs = true\n")).unwrap();
    bare(env, &config, &["backup"])
        .assert()
        .code(3)
        .stderr(predicate::str::contains(gone.display().to_string()));
    assert_eq!(env.snapshots().len(), 2);
}
