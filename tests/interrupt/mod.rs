//! Interrupted backups: Ctrl-C (SIGINT) and kill -9 in the middle of a run. Nothing
//! is recorded, nothing is left behind, and the next backup reuses what reached the
//! repository instead of storing it again.

use std::fs;
use std::path::Path;
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

/// Interrupts a backup of 160 MiB of new data with `signal` once some of its packs
/// are durable; then checks what the issue promises.
fn interrupted_backup_resumes(signal: rustix::process::Signal) {
    let env = Env::new();
    env.init();
    let src = env.path("src");
    fs::create_dir_all(&src).unwrap();
    fs::write(src.join("big"), random_bytes(160 << 20, "big")).unwrap();
    let total = 160u64 << 20;
    // Signal once a third of the data is in packs.
    let mut child = backup_cmd(&env, &src).spawn().unwrap();
    let start = Instant::now();
    while pack_bytes(&env.repo()) < total / 3 {
        assert!(
            child.try_wait().unwrap().is_none(),
            "the backup finished before it could be interrupted"
        );
        assert!(start.elapsed() < Duration::from_secs(120));
        std::thread::sleep(Duration::from_millis(5));
    }
    let pid = rustix::process::Pid::from_child(&child);
    rustix::process::kill_process(pid, signal).unwrap();
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    if signal == rustix::process::Signal::Int {
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
    // Nothing is left behind: no journal of the dead run; after Ctrl-C no temp files
    // either (a killed run's are removed by the next prune).
    let journal = env.index_cache_of(&env.repo()).with_file_name("journal");
    let journals: Vec<_> = fs::read_dir(&journal).map_or(Vec::new(), |d| d.collect());
    assert!(journals.is_empty(), "journals left: {journals:?}");
    let tmp: Vec<_> = fs::read_dir(env.repo().join("tmp")).unwrap().collect();
    if signal == rustix::process::Signal::Int {
        assert!(tmp.is_empty(), "temp files left: {tmp:?}");
    }
    env.restore("latest", &env.path("out"));
    assert_eq!(
        fs::read(crate::util::restored(&env.path("out"), &src).join("big")).unwrap(),
        fs::read(src.join("big")).unwrap()
    );
}

#[test]
fn ctrl_c_records_nothing_and_the_next_backup_reuses_what_was_stored() {
    interrupted_backup_resumes(rustix::process::Signal::Int);
}

#[test]
fn kill_9_records_nothing_and_the_next_backup_reuses_what_was_stored() {
    interrupted_backup_resumes(rustix::process::Signal::Kill);
}
