//! Interrupted runs: Ctrl-C (SIGINT) and kill -9 in the middle of a backup, Ctrl-C in
//! the steps of `snap run` and in a restore. Nothing is recorded half, nothing is left behind, and
//! the next run reuses what reached the repository instead of storing it again.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::util::{random_bytes, Env};

/// Bytes of all pack files of the repository at `repo`.
fn pack_bytes(repo: &Path) -> u64 {
    fn walk(d: &Path) -> u64 {
        fs::read_dir(d).map_or(0, |rd| {
            rd.map(|e| {
                let p = e.unwrap().path();
                if p.is_dir() {
                    walk(&p)
                } else {
                    fs::metadata(&p).unwrap().len()
                }
            })
            .sum()
        })
    }
    walk(&repo.join("packs"))
}

fn backup_cmd(env: &Env, src: &Path) -> Command {
    let mut c = Command::new(assert_cmd::cargo::cargo_bin("snap"));
    c.env("SNAP_CACHE_DIR", env.cache())
        .env_remove("SNAP_REPO")
        .arg("--repo")
        .arg(env.repo())
        .args(["--quiet", "backup", "--json"])
        .arg(src)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    c
}

/// A repository and a source of one 160 MiB file of new data, long enough to back up
/// that a signal finds the run in the middle.
fn big_source() -> (Env, PathBuf) {
    let env = Env::new();
    env.init();
    let src = env.path("src");
    fs::create_dir_all(&src).unwrap();
    fs::write(src.join("big"), random_bytes(160 << 20, "big")).unwrap();
    (env, src)
}

/// Waits until the packs below `repo` hold at least `bytes`, while `child` runs.
fn wait_for_packs(child: &mut std::process::Child, repo: &Path, bytes: u64) {
    let start = Instant::now();
    while pack_bytes(repo) < bytes {
        assert!(
            child.try_wait().unwrap().is_none(),
            "the run finished before it could be interrupted"
        );
        assert!(start.elapsed() < Duration::from_secs(120));
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// Interrupts a backup of 160 MiB of new data with `signal` once some of its packs
/// are durable; then checks what the issue promises.
fn interrupted_backup_resumes(signal: rustix::process::Signal) {
    let (env, src) = big_source();
    let total = 160u64 << 20;
    // Signal once a third of the data is in packs.
    let mut child = backup_cmd(&env, &src).spawn().unwrap();
    wait_for_packs(&mut child, &env.repo(), total / 3);
    let pid = rustix::process::Pid::from_child(&child);
    rustix::process::kill_process(pid, signal).unwrap();
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    if signal == rustix::process::Signal::INT {
        assert_eq!(out.status.code(), Some(130), "{stderr}");
        assert!(
            stderr.contains("interrupted: no snapshot was recorded"),
            "{stderr}"
        );
    } else {
        assert!(!out.status.success());
    }
    assert!(
        env.snapshots().is_empty(),
        "an interrupted run recorded a snapshot"
    );
    let written = pack_bytes(&env.repo());
    let left: Vec<_> = fs::read_dir(env.repo().join("tmp")).unwrap().collect();
    eprintln!(
        "{signal:?}: the interrupted run left {} temp files",
        left.len()
    );
    if signal == rustix::process::Signal::INT {
        assert!(left.is_empty(), "temp files left: {left:?}");
    }

    let second = env.backup_json(&[src.to_str().unwrap()]);
    let added = second["summary"]["bytes_added"].as_u64().unwrap();
    eprintln!(
        "{signal:?}: the interrupted run left {written} bytes of packs; the next run stored {added} of {total}"
    );
    assert!(written >= total / 3);
    // What reached the repository is reused: the second run stores at most the rest
    // and a few percent of what the first wrote.
    assert!(
        added <= total - written + written / 20,
        "the next backup stored {added} bytes; {written} were already durable"
    );
    env.snap(&["check", "--read-data"]).assert().success();
    // Nothing is left behind: no journal of the dead run, and no temp file (Ctrl-C
    // removes its own; a killed run's half-filled packs go with the next backup here).
    let journal = env.index_cache_of(&env.repo()).with_file_name("journal");
    let journals: Vec<_> = fs::read_dir(&journal).map_or(Vec::new(), std::iter::Iterator::collect);
    assert!(journals.is_empty(), "journals left: {journals:?}");
    let tmp: Vec<_> = fs::read_dir(env.repo().join("tmp")).unwrap().collect();
    assert!(tmp.is_empty(), "temp files left: {tmp:?}");
    env.restore("latest", &env.path("out"));
    assert_eq!(
        fs::read(crate::util::restored(&env.path("out"), &src).join("big")).unwrap(),
        fs::read(src.join("big")).unwrap()
    );
}

#[test]
fn ctrl_c_records_nothing_and_the_next_backup_reuses_what_was_stored() {
    interrupted_backup_resumes(rustix::process::Signal::INT);
}

#[test]
fn kill_9_records_nothing_and_the_next_backup_reuses_what_was_stored() {
    interrupted_backup_resumes(rustix::process::Signal::KILL);
}

#[test]
fn ctrl_c_stops_a_restore_leaving_only_whole_files_and_the_lock_released() {
    let (env, src) = big_source();
    fs::write(src.join("small"), b"small file").unwrap();
    env.backup_json(&[src.to_str().unwrap()]);
    let target = env.path("out");
    let run = Command::new(assert_cmd::cargo::cargo_bin("snap"))
        .env("SNAP_CACHE_DIR", env.cache())
        .env_remove("SNAP_REPO")
        .arg("--repo")
        .arg(env.repo())
        .args(["--quiet", "restore", "latest", "--target"])
        .arg(&target)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Once the big file is partly written.
    let out = crate::util::ctrl_c_restore_at(run, &target, 8 << 20);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(130), "{stderr}");
    assert!(
        stderr.contains("interrupted: every file restored so far is whole"),
        "{stderr}"
    );
    let left = crate::util::restore_temps(&target);
    assert!(left.is_empty(), "temporary files left: {left:?}");
    let restored = crate::util::restored(&target, &src);
    // Stopped within the big file, which is therefore not placed at all.
    assert!(
        !restored.join("big").exists(),
        "the big file was finished or placed cut"
    );
    let locks: Vec<_> = fs::read_dir(env.repo().join("locks")).unwrap().collect();
    assert!(locks.is_empty(), "locks left: {locks:?}");
    // Run again, it finishes what was left.
    env.restore("latest", &target);
    crate::util::assert_same_tree(&src, &restored);
}

/// `snap run` of a profile that backs up `src` and syncs to `offsite`, started.
fn run_profile(env: &Env, src: &Path, offsite: &Path) -> std::process::Child {
    let config = env.path("snap.toml");
    fs::write(
        &config,
        format!(
            "[profile.app]\nrepository = {:?}\npaths = [{:?}]\nsync = [{:?}]\n",
            env.repo(),
            src,
            offsite
        ),
    )
    .unwrap();
    Command::new(assert_cmd::cargo::cargo_bin("snap"))
        .env("SNAP_CACHE_DIR", env.cache())
        .env("SNAP_CONFIG", &config)
        .env_remove("SNAP_REPO")
        .args(["--quiet", "run", "app"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// Sends SIGINT to `child` and returns its exit code and stderr.
fn ctrl_c(child: std::process::Child) -> (Option<i32>, String) {
    rustix::process::kill_process(
        rustix::process::Pid::from_child(&child),
        rustix::process::Signal::INT,
    )
    .unwrap();
    let out = child.wait_with_output().unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn ctrl_c_in_snap_run_stops_its_backup_cleanly_at_the_first_signal() {
    let (env, src) = big_source();
    let mut child = run_profile(&env, &src, &env.path("offsite"));
    wait_for_packs(&mut child, &env.repo(), 50 << 20);
    let (code, stderr) = ctrl_c(child);
    assert_eq!(code, Some(130), "{stderr}");
    assert!(
        stderr.contains("stopping at the next safe point")
            && stderr.contains("interrupted: profile app, step backup: no snapshot was recorded")
            && stderr.contains("the steps after it did not run"),
        "{stderr}"
    );
    assert!(env.snapshots().is_empty());
    let tmp: Vec<_> = fs::read_dir(env.repo().join("tmp")).unwrap().collect();
    assert!(tmp.is_empty(), "temp files left: {tmp:?}");
    assert!(!env.path("offsite").exists(), "the sync step ran");
}

#[test]
fn ctrl_c_in_snap_run_stops_its_sync_and_keeps_the_snapshot() {
    let (env, src) = big_source();
    let offsite = env.path("offsite");
    // The signal goes once the first pack arrived; on a loaded machine it may be
    // seen only after the last pack was started, with nothing left to stop: then the
    // run is tried again (its backup step only adds a snapshot).
    for attempt in 1..=3 {
        let _ = fs::remove_dir_all(&offsite);
        let mut child = run_profile(&env, &src, &offsite);
        wait_for_packs(&mut child, &offsite, 1);
        let (code, stderr) = ctrl_c(child);
        assert_eq!(code, Some(130), "{stderr}");
        assert_eq!(
            env.snapshots().len(),
            attempt,
            "the backup steps' snapshots"
        );
        if stderr.contains("step sync (the steps before it finished): it finished") {
            continue;
        }
        assert!(
            stderr.contains(
                "interrupted: profile app, step sync (the steps before it finished): the packs sent so far stay there"
            ),
            "{stderr}"
        );
        // The rest is sent by the next sync, which leaves the copy whole.
        env.snap(&["sync", "--to", offsite.to_str().unwrap()])
            .assert()
            .success();
        crate::util::snap_bin()
            .env("SNAP_CACHE_DIR", env.cache())
            .arg("--repo")
            .arg(&offsite)
            .args(["check", "--read-data"])
            .assert()
            .success();
        return;
    }
    panic!("in three runs the sync was never stopped before its last pack");
}

/// A reader (`check`, `cat`, `dump`, a drill) stopped by SIGINT or SIGTERM ends at
/// once with status 130 and says so, and takes its shared lock along: left behind, it
/// would keep a prune on another host waiting until it went stale (30 minutes). So
/// does `repair index`, stopped while it reads, with its exclusive lock.
#[test]
fn a_signal_ends_a_reader_at_once_and_takes_its_lock_along() {
    use rustix::process::Signal;
    let (env, src) = big_source();
    env.backup_json(&[src.to_str().unwrap()]);
    let big = src.join("big");
    let big = big.to_str().unwrap();
    let scratch = env.path("scratch");
    fs::create_dir_all(&scratch).unwrap();
    let locks = env.repo().join("locks");
    let runs: [(&[&str], Signal); 5] = [
        (&["check", "--read-data"], Signal::INT),
        // Exclusive, stopped before it changes anything.
        (&["repair", "index", "--read-data"], Signal::INT),
        (&["cat", "latest", big], Signal::TERM),
        (&["dump", "latest", big], Signal::INT),
        (
            &["drill", "latest", "--scratch", scratch.to_str().unwrap()],
            Signal::INT,
        ),
    ];
    for (args, signal) in runs {
        let mut child = Command::new(assert_cmd::cargo::cargo_bin("snap"))
            .env("SNAP_CACHE_DIR", env.cache())
            .env_remove("SNAP_REPO")
            .arg("--repo")
            .arg(env.repo())
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let start = Instant::now();
        while fs::read_dir(&locks).unwrap().next().is_none() {
            assert!(
                child.try_wait().unwrap().is_none(),
                "{args:?} finished before it could be interrupted"
            );
            assert!(start.elapsed() < Duration::from_secs(60));
            std::thread::sleep(Duration::from_millis(1));
        }
        rustix::process::kill_process(rustix::process::Pid::from_child(&child), signal).unwrap();
        let out = child.wait_with_output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(130), "{args:?}: {stderr}");
        assert!(stderr.contains("snap: interrupted"), "{args:?}: {stderr}");
        let left: Vec<_> = fs::read_dir(&locks).unwrap().collect();
        assert!(left.is_empty(), "{args:?} left its lock: {left:?}");
    }
}

/// A signal to a backup whose `--command` writes nothing (a dump waiting on a lock)
/// ends it at once, and the command with everything it started (a shell's children):
/// the backup waited for the command's next output, and the command outlived snap.
#[test]
fn a_signal_ends_a_silent_command_and_what_it_started() {
    let env = Env::new();
    env.init();
    let marker = format!("sleep 3{}", std::process::id() % 1000);
    let mut child = Command::new(assert_cmd::cargo::cargo_bin("snap"))
        .env("SNAP_CACHE_DIR", env.cache())
        .env_remove("SNAP_REPO")
        .arg("--repo")
        .arg(env.repo())
        .args([
            "backup",
            "--command",
            &format!("{marker}; echo late"),
            "--as",
            "db.sql",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_secs(1));
    let started = std::time::Instant::now();
    rustix::process::kill_process(
        rustix::process::Pid::from_child(&child),
        rustix::process::Signal::TERM,
    )
    .unwrap();
    while child.try_wait().unwrap().is_none() {
        assert!(
            started.elapsed() < std::time::Duration::from_secs(20),
            "the backup still waits for its silent command"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(130), "{out:?}");
    std::thread::sleep(std::time::Duration::from_millis(300));
    let left = std::process::Command::new("pgrep")
        .args(["-f", &marker])
        .output()
        .unwrap();
    assert!(
        left.stdout.is_empty(),
        "left running: {}",
        String::from_utf8_lossy(&left.stdout)
    );
    assert!(env.snapshots().is_empty());
}
