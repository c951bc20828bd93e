//! `snap restore` into a target that already holds files, through the real binary:
//! `--exclude`, `--overwrite`, `--delete` (and its refusals), `--verify`, the `snap ls`
//! hint of an `--include` that matches nothing, and no half-written file under a final
//! name when a restore is killed.

use std::fs;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, SystemTime};

use predicates::prelude::*;

use crate::util::{dirty_pages, json, missing, random_bytes, restored, Env};

/// A repository with one snapshot of `src`: `a.txt`, `b.txt`, `sub/c.txt`, `x.log`,
/// `cache/junk`; returns the source directory.
fn setup(env: &Env) -> PathBuf {
    env.init();
    let src = env.path("src");
    fs::create_dir_all(src.join("sub")).unwrap();
    fs::create_dir_all(src.join("cache")).unwrap();
    fs::write(src.join("a.txt"), b"alpha").unwrap();
    fs::write(src.join("b.txt"), b"bravo").unwrap();
    fs::write(src.join("sub/c.txt"), b"charlie").unwrap();
    fs::write(src.join("x.log"), b"log").unwrap();
    fs::write(src.join("cache/junk"), b"junk").unwrap();
    set_mtime(&src.join("a.txt"), 1_000_000_000);
    set_mtime(&src.join("b.txt"), 1_000_000_000);
    env.backup_json(&[src.to_str().unwrap()]);
    src
}

fn set_mtime(p: &Path, sec: u64) {
    fs::File::options()
        .write(true)
        .open(p)
        .unwrap()
        .set_modified(SystemTime::UNIX_EPOCH + Duration::from_secs(sec))
        .unwrap();
}

fn mtime(p: &Path) -> SystemTime {
    fs::metadata(p).unwrap().modified().unwrap()
}

/// `snap restore latest --target TARGET --json ARGS...`, which must succeed.
fn restore_json(env: &Env, target: &Path, args: &[&str]) -> serde_json::Value {
    json(
        env.snap(
            &[
                &[
                    "restore",
                    "latest",
                    "--target",
                    target.to_str().unwrap(),
                    "--json",
                ],
                args,
            ]
            .concat(),
        ),
    )
}

#[test]
fn exclude_leaves_out_names_and_paths_inside_the_snapshot() {
    let env = Env::new();
    let src = setup(&env);
    let target = env.path("out");
    let by_path = format!("{}/cache", src.display());
    let t = target.to_str().unwrap();
    let args = ["--exclude", "*.log", "--exclude", &by_path];
    let plan = json(
        env.snap(
            &[
                &["restore", "latest", "--target", t, "--dry-run", "--json"],
                &args[..],
            ]
            .concat(),
        ),
    );
    assert_eq!(plan["files"], 3, "{plan}");
    let out = restore_json(&env, &target, &args);
    assert_eq!(out["files"], 3, "{out}");
    let r = restored(&target, &src);
    assert_eq!(fs::read(r.join("sub/c.txt")).unwrap(), b"charlie");
    assert!(!r.join("x.log").exists());
    assert!(!r.join("cache").exists());
    env.snap(&["restore", "latest", "--target", t, "--exclude", "a["])
        .assert()
        .code(1)
        .stderr(predicate::str::contains("--exclude \"a[\""));
}

/// The target of a full restore of `src` (returned: where `src` is in it), then
/// changed: `a.txt` edited now (same size), `b.txt` the same bytes with a newer mtime,
/// `sub/c.txt` removed.
fn changed_target(env: &Env, src: &Path, name: &str) -> PathBuf {
    let target = env.path(name);
    env.restore("latest", &target);
    let r = restored(&target, src);
    fs::write(r.join("a.txt"), b"ALPHA").unwrap();
    set_mtime(&r.join("b.txt"), 1_100_000_000);
    fs::remove_file(r.join("sub/c.txt")).unwrap();
    r
}

#[test]
fn overwrite_always_is_the_default_and_replaces_what_is_there() {
    let env = Env::new();
    let src = setup(&env);
    let r = changed_target(&env, &src, "out");
    let out = restore_json(&env, &env.path("out"), &[]);
    assert_eq!(fs::read(r.join("a.txt")).unwrap(), b"alpha");
    assert_eq!(mtime(&r.join("b.txt")), mtime(&src.join("b.txt")));
    assert_eq!(fs::read(r.join("sub/c.txt")).unwrap(), b"charlie");
    assert_eq!(out["files"], 5, "{out}");
    assert_eq!(out["replaced"], 4, "every file but the removed one: {out}");
    assert_eq!(out["skipped"], 0, "{out}");
}

#[test]
fn overwrite_never_keeps_existing_files_and_writes_missing_ones() {
    let env = Env::new();
    let src = setup(&env);
    let r = changed_target(&env, &src, "out");
    let out = restore_json(&env, &env.path("out"), &["--overwrite", "never"]);
    assert_eq!(fs::read(r.join("a.txt")).unwrap(), b"ALPHA");
    assert_eq!(fs::read(r.join("sub/c.txt")).unwrap(), b"charlie");
    assert_eq!(
        (out["files"].as_u64(), out["skipped"].as_u64()),
        (Some(1), Some(4)),
        "{out}"
    );
    assert_eq!(out["replaced"], 0, "{out}");
}

/// A hard-linked file whose first path `--overwrite never` keeps (another file there,
/// or a link out of the target): its other paths get the snapshot's bytes, linked to
/// each other, never to what was kept.
#[test]
fn kept_first_path_of_hard_links_does_not_take_the_others_along() {
    let env = Env::new();
    env.init();
    let src = env.path("src");
    fs::create_dir_all(src.join("sub")).unwrap();
    fs::write(src.join("l1"), b"linked").unwrap();
    fs::hard_link(src.join("l1"), src.join("l2")).unwrap();
    fs::hard_link(src.join("l1"), src.join("sub/l3")).unwrap();
    env.backup_json(&[src.to_str().unwrap()]);
    let outside = env.path("outside");
    fs::write(&outside, b"VICTIM").unwrap();
    for (name, first_is_link) in [("edited", false), ("link", true)] {
        let target = env.path(name);
        let r = target.join(src.strip_prefix("/").unwrap());
        fs::create_dir_all(&r).unwrap();
        if first_is_link {
            symlink(&outside, r.join("l1")).unwrap();
        } else {
            fs::write(r.join("l1"), b"LOCAL EDIT").unwrap();
        }
        let out = restore_json(&env, &target, &["--overwrite", "never", "--verify"]);
        assert_eq!(out["skipped"], 1, "{out}");
        for other in ["l2", "sub/l3"] {
            let p = r.join(other);
            let md = fs::symlink_metadata(&p).unwrap();
            assert!(md.is_file(), "{name}: {other} is not a file of its own");
            assert_eq!(fs::read(&p).unwrap(), b"linked", "{name}: {other}");
        }
        let ino = |p: &str| std::os::unix::fs::MetadataExt::ino(&fs::metadata(r.join(p)).unwrap());
        assert_eq!(ino("l2"), ino("sub/l3"), "{name}: the others are one file");
        assert_eq!(fs::read(&outside).unwrap(), b"VICTIM");
    }
}

/// Entries of the other kind in the way (a directory tree where the snapshot has a
/// file, a file where it has a directory): a dry run names them as the real restore
/// fails on them, and with `--delete` counts what the real one deletes.
#[test]
fn a_dry_run_foresees_what_is_in_the_way() {
    let env = Env::new();
    let src = setup(&env);
    let target = env.path("out");
    let t = target.to_str().unwrap();
    let r = target.join(src.strip_prefix("/").unwrap());
    fs::create_dir_all(r.join("a.txt/deep")).unwrap();
    for i in 0..3 {
        fs::write(r.join(format!("a.txt/deep/{i}")), b"mine").unwrap();
    }
    fs::write(r.join("sub"), b"a file where the snapshot has a directory").unwrap();
    let dry = env
        .snap(&["restore", "latest", "--target", t, "--dry-run", "--json"])
        .output()
        .unwrap();
    assert_eq!(dry.status.code(), Some(1), "{dry:?}");
    let plan: serde_json::Value = serde_json::from_slice(&dry.stdout).unwrap();
    assert_eq!(plan["blocked"], 2, "{plan}");
    assert!(String::from_utf8_lossy(&dry.stderr).contains("would fail at 2 entries"));
    env.snap(&["restore", "latest", "--target", t])
        .assert()
        .code(1)
        .stderr(predicate::str::contains("restore with --delete"));
    let plan = json(env.snap(&[
        "restore",
        "latest",
        "--target",
        t,
        "--delete",
        "--dry-run",
        "--json",
    ]));
    assert_eq!(
        (&plan["blocked"], &plan["deletes"]),
        (&0.into(), &1.into()),
        "{plan}"
    );
    let out = restore_json(&env, &target, &["--delete"]);
    assert_eq!(out["deleted"], plan["deletes"], "{out}");
    assert_eq!(fs::read(r.join("a.txt")).unwrap(), b"alpha");
    assert_eq!(fs::read(r.join("sub/c.txt")).unwrap(), b"charlie");
}

#[test]
fn overwrite_if_newer_replaces_only_files_older_than_the_snapshots() {
    let env = Env::new();
    let src = setup(&env);
    let r = changed_target(&env, &src, "out");
    // a.txt was edited now (newer): kept; b.txt made older than the snapshot's.
    set_mtime(&r.join("b.txt"), 900_000_000);
    fs::write(r.join("b.txt"), b"BRAVO").unwrap();
    set_mtime(&r.join("b.txt"), 900_000_000);
    let out = restore_json(&env, &env.path("out"), &["--overwrite", "if-newer"]);
    assert_eq!(fs::read(r.join("a.txt")).unwrap(), b"ALPHA");
    assert_eq!(fs::read(r.join("b.txt")).unwrap(), b"bravo");
    assert_eq!(fs::read(r.join("sub/c.txt")).unwrap(), b"charlie");
    assert_eq!(out["replaced"], 1, "{out}");
}

#[test]
fn overwrite_if_changed_compares_content_and_keeps_what_matches() {
    let env = Env::new();
    let src = setup(&env);
    let r = changed_target(&env, &src, "out");
    let out = restore_json(&env, &env.path("out"), &["--overwrite", "if-changed"]);
    // a.txt: same size, new mtime, other bytes: replaced. b.txt: same bytes, other
    // mtime: kept, its mtime set back. x.log, cache/junk: same size and mtime: kept.
    assert_eq!(fs::read(r.join("a.txt")).unwrap(), b"alpha");
    assert_eq!(mtime(&r.join("b.txt")), mtime(&src.join("b.txt")));
    assert_eq!(fs::read(r.join("sub/c.txt")).unwrap(), b"charlie");
    assert_eq!(out["replaced"], 1, "{out}");
    assert_eq!(out["skipped"], 3, "{out}");
    assert_eq!(out["files"], 2, "{out}");
}

#[test]
fn delete_makes_the_target_match_and_removes_a_symlink_as_a_link() {
    let env = Env::new();
    let src = setup(&env);
    let target = env.path("out");
    env.restore("latest", &target);
    let r = restored(&target, &src);
    let outside = env.path("outside");
    fs::create_dir_all(&outside).unwrap();
    fs::write(outside.join("precious"), b"keep me").unwrap();
    fs::write(r.join("extra.txt"), b"x").unwrap();
    fs::create_dir_all(r.join("extra-dir/deeper")).unwrap();
    fs::write(r.join("extra-dir/deeper/f"), b"x").unwrap();
    fs::write(r.join("kept.log"), b"matches --exclude").unwrap();
    symlink(&outside, r.join("link-out")).unwrap();
    // Where the snapshot has a directory, a symlink to the outside directory.
    fs::remove_dir_all(r.join("sub")).unwrap();
    symlink(&outside, r.join("sub")).unwrap();
    fs::write(target.join("top-extra"), b"x").unwrap();

    let t = target.to_str().unwrap();
    let plan = json(env.snap(&[
        "restore",
        "latest",
        "--target",
        t,
        "--delete",
        "--exclude",
        "*.log",
        "--dry-run",
        "--json",
    ]));
    assert_eq!(
        plan["deletes"], 4,
        "extra.txt, extra-dir, link-out, top-extra: {plan}"
    );
    assert!(r.join("extra.txt").exists(), "a dry run deletes nothing");

    let out = restore_json(&env, &target, &["--delete", "--exclude", "*.log"]);
    assert_eq!(out["deleted"], 4, "{out}");
    assert!(!r.join("extra.txt").exists());
    assert!(!r.join("extra-dir").exists());
    assert!(!target.join("top-extra").exists());
    assert!(
        fs::symlink_metadata(r.join("link-out")).is_err(),
        "the link is gone"
    );
    assert!(r.join("kept.log").exists(), "excluded entries are kept");
    assert!(
        fs::symlink_metadata(r.join("sub")).unwrap().is_dir(),
        "a real directory replaced the link"
    );
    assert_eq!(fs::read(r.join("sub/c.txt")).unwrap(), b"charlie");
    assert_eq!(
        fs::read(outside.join("precious")).unwrap(),
        b"keep me",
        "the link's target untouched"
    );
    assert_eq!(
        fs::read_dir(&outside).unwrap().count(),
        1,
        "nothing written outside"
    );

    // Inside an --include, only the included directory is cleaned.
    fs::write(r.join("extra.txt"), b"x").unwrap();
    fs::write(r.join("sub/extra"), b"x").unwrap();
    let inc = format!("{}/sub", src.display());
    let out = restore_json(&env, &target, &["--delete", "--include", &inc]);
    assert_eq!(out["deleted"], 1, "{out}");
    assert!(r.join("extra.txt").exists());
    assert!(!r.join("sub/extra").exists());
}

#[test]
fn delete_refuses_the_root_and_the_home_directory_without_yes() {
    let env = Env::new();
    setup(&env);
    env.snap(&[
        "restore",
        "latest",
        "--target",
        "/",
        "--delete",
        "--dry-run",
    ])
    .assert()
    .failure()
    .stderr(predicate::str::contains("it is the file system root"));
    let home = env.path("home");
    fs::create_dir_all(&home).unwrap();
    fs::write(home.join(".bashrc"), b"mine").unwrap();
    let h = home.to_str().unwrap();
    env.snap(&["restore", "latest", "--target", h, "--delete"])
        .env("HOME", &home)
        .assert()
        .failure()
        .stderr(predicate::str::contains("your home directory; add --yes"));
    assert_eq!(fs::read(home.join(".bashrc")).unwrap(), b"mine");
    env.snap(&["restore", "latest", "--target", h, "--delete", "--yes"])
        .env("HOME", &home)
        .assert()
        .success();
    assert!(!home.join(".bashrc").exists());
}

#[test]
fn verify_reads_back_and_catches_a_file_if_changed_trusted_by_size_and_mtime() {
    let env = Env::new();
    let src = setup(&env);
    let target = env.path("out");
    let out = restore_json(&env, &target, &["--verify"]);
    assert_eq!(out["verified"], 5, "{out}");
    // Same size and mtime, other bytes: if-changed's quick check keeps the file...
    let a = restored(&target, &src).join("a.txt");
    fs::write(&a, b"ALPHA").unwrap();
    set_mtime(&a, 1_000_000_000);
    let t = target.to_str().unwrap();
    env.snap(&[
        "restore",
        "latest",
        "--target",
        t,
        "--overwrite",
        "if-changed",
    ])
    .assert()
    .success();
    assert_eq!(fs::read(&a).unwrap(), b"ALPHA");
    // ...and --verify reads it back and says so.
    env.snap(&[
        "restore",
        "latest",
        "--target",
        t,
        "--overwrite",
        "if-changed",
        "--verify",
    ])
    .assert()
    .code(1)
    .stderr(predicate::str::contains("FAILED verification"))
    .stderr(predicate::str::contains(
        "a.txt: the restored file does not match the snapshot: bytes 0..5 differ",
    ))
    .stderr(predicate::str::contains(
        "verification failed for 1 restored file of snapshot",
    ));
}

#[test]
fn an_include_that_matches_nothing_points_at_snap_ls() {
    let env = Env::new();
    setup(&env);
    let t = env.path("out");
    for inc in ["src/a.txt", "./a.txt"] {
        env.snap(&[
            "restore",
            "latest",
            "--target",
            t.to_str().unwrap(),
            "--include",
            inc,
        ])
        .assert()
        .failure()
        .stderr(
            predicate::str::contains("` shows the paths inside")
                .and(predicate::str::contains("`snap ls ")),
        );
    }
}

#[test]
fn a_killed_restore_leaves_no_half_written_file_under_its_name() {
    let env = Env::new();
    env.init();
    let src = env.path("src");
    fs::create_dir_all(&src).unwrap();
    let data = random_bytes(256 << 20, "killed restore");
    fs::write(src.join("big"), &data).unwrap();
    env.backup_json(&[src.to_str().unwrap()]);
    let target = env.path("out");
    let dir = restored(&target, &src);
    let mut child = std::process::Command::new(assert_cmd::cargo::cargo_bin("snap"))
        .env("SNAP_CACHE_DIR", env.cache())
        .env_remove("SNAP_REPO")
        .arg("--repo")
        .arg(env.repo())
        .args(["restore", "latest", "--target", target.to_str().unwrap()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Kill it once some file in the directory has part of the content.
    let mut caught = false;
    while child.try_wait().unwrap().is_none() {
        let partly = fs::read_dir(&dir).into_iter().flatten().flatten().any(|e| {
            e.metadata()
                .is_ok_and(|m| m.len() > 0 && m.len() < data.len() as u64)
        });
        if partly {
            child.kill().unwrap();
            caught = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    child.wait().unwrap();
    assert!(caught, "the restore finished before it was seen writing");
    match fs::read(dir.join("big")) {
        Ok(got) => assert!(got == data, "a half-written file under its final name"),
        Err(e) => assert_eq!(e.kind(), std::io::ErrorKind::NotFound),
    }
}

#[test]
fn a_restore_ends_with_its_files_on_the_disk() {
    let env = Env::new();
    env.init();
    let src = env.path("src");
    fs::create_dir_all(&src).unwrap();
    fs::write(src.join("big"), random_bytes(16 << 20, "synced")).unwrap();
    env.backup_json(&[src.to_str().unwrap()]);
    let synced = env.path("synced");
    restore_json(&env, &synced, &[]);
    let Some(dirty) = dirty_pages(&restored(&synced, &src).join("big")) else {
        return missing(
            "reading page flags (/proc/kpageflags)",
            "python3, run as root",
        );
    };
    assert_eq!(dirty, 0, "pages of a finished restore not yet on the disk");
    // The check sees what it looks for. Not on the disk's file system: a sync by any
    // other test running beside this one writes every dirty page of it back. tmpfs
    // has nothing to write back to, so its pages stay dirty.
    let unsynced = tempfile::tempdir_in("/dev/shm").unwrap();
    restore_json(&env, unsynced.path(), &["--no-sync"]);
    let dirty = dirty_pages(&restored(unsynced.path(), &src).join("big")).unwrap();
    assert!(dirty > 0, "no dirty page of a file on tmpfs");
}

#[test]
fn latest_of_a_host_is_taken_with_host_and_another_hosts_latest_is_named() {
    let env = Env::new();
    env.init();
    let (mine, theirs) = (env.path("mine"), env.path("theirs"));
    for (dir, text) in [(&mine, "this host"), (&theirs, "another host")] {
        fs::create_dir_all(dir).unwrap();
        fs::write(dir.join("f"), text).unwrap();
    }
    env.backup_json(&[mine.to_str().unwrap()]);
    // Later, from another host into the same repository.
    json(env.snap(&[
        "backup",
        "--json",
        "--host",
        "elsewhere",
        theirs.to_str().unwrap(),
    ]));
    let this = rustix::system::uname()
        .nodename()
        .to_string_lossy()
        .into_owned();

    // latest is the other host's, and a warning says so and how to take this one's.
    let t = env.path("any");
    env.snap(&["restore", "latest", "--target", t.to_str().unwrap()])
        .assert()
        .success()
        .stderr(
            predicate::str::contains("of host elsewhere")
                .and(predicate::str::contains(format!("--host {this}"))),
        );
    assert!(restored(&t, &theirs).join("f").exists());

    let t = env.path("own");
    env.snap(&[
        "restore",
        "latest",
        "--host",
        &this,
        "--target",
        t.to_str().unwrap(),
    ])
    .assert()
    .success()
    .stderr(predicate::str::contains("of host").not());
    assert_eq!(
        fs::read(restored(&t, &mine).join("f")).unwrap(),
        b"this host"
    );
    assert!(!restored(&t, &theirs).exists());
    let f = format!("{}/f", mine.display());
    env.snap(&["cat", "latest", &f, "--host", &this])
        .assert()
        .success()
        .stdout("this host");
    env.snap(&["ls", "latest", "--host", "nowhere"])
        .assert()
        .code(1)
        .stderr(predicate::str::contains("latest of host nowhere not found"));
}
