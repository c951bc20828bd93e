//! Offsite: `snap sync` to another directory, SFTP (OpenSSH's sshd) and S3 (moto),
//! and repositories used directly on S3, from hosts with empty caches.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use predicates::prelude::*;

use crate::util::garage::Garage;
use crate::util::servers::Sshd;
use crate::util::{assert_same_tree, json, random_bytes, restored, snap_at, walk, Env};

/// A source tree of a few files, changed by `day`.
fn files(env: &Env, day: u32) -> std::path::PathBuf {
    let src = env.path("src");
    fs::create_dir_all(&src).unwrap();
    for i in 0..4 {
        fs::write(
            src.join(format!("f{i}")),
            random_bytes(600_000, &format!("f{i}")),
        )
        .unwrap();
    }
    fs::write(
        src.join("daily"),
        random_bytes(300_000, &format!("day {day}")),
    )
    .unwrap();
    src
}

fn ids(list: &serde_json::Value) -> Vec<String> {
    list.as_array()
        .unwrap()
        .iter()
        .map(|s| s["id"].as_str().unwrap().to_string())
        .collect()
}

/// Restores `id` from `repo` (with its own empty cache) and compares with `src`.
fn restores_same(env: &Env, repo: &str, extra: &[(&'static str, String)], id: &str, src: &Path) {
    let cache = tempfile::tempdir().unwrap();
    let target = tempfile::tempdir_in(env.dir.path()).unwrap();
    snap_at(
        repo,
        cache.path(),
        extra,
        &["restore", id, "--target", target.path().to_str().unwrap()],
    )
    .assert()
    .success();
    assert_same_tree(src, &restored(target.path(), src));
}

#[test]
fn sync_to_a_directory_sends_only_the_delta_and_mirrors_deletions_when_asked() {
    let env = Env::new();
    env.init();
    let src = files(&env, 1);
    env.backup_json(&[src.to_str().unwrap()]);
    let dest = env.path("usb/repo");
    let to = dest.to_str().unwrap();
    let first = json(env.snap(&["sync", "--to", to, "--json"]));
    assert_eq!(first["snapshots_sent"], 1, "{first}");
    assert!(first["bytes_sent"].as_u64().unwrap() > 2_000_000, "{first}");
    let again = json(env.snap(&["sync", "--to", to, "--json"]));
    assert_eq!(
        (
            again["packs_sent"].as_u64(),
            again["snapshots_sent"].as_u64()
        ),
        (Some(0), Some(0)),
        "a second sync sends nothing: {again}"
    );

    // A new day: only its data travels.
    let src = files(&env, 2);
    env.backup_json(&[src.to_str().unwrap()]);
    let delta = json(env.snap(&["sync", "--to", to, "--json"]));
    let sent = delta["bytes_sent"].as_u64().unwrap();
    assert!(
        (300_000..1_000_000).contains(&sent),
        "only the changed file travels: {delta}"
    );
    let list = json(env.snap(&["list", "--json"]));
    let all = ids(&list);
    let dest_list = json(snap_at(to, &env.path("c"), &[], &["list", "--json"]));
    assert_eq!(ids(&dest_list), all);
    restores_same(&env, to, &[], &all[1], &src);
    snap_at(to, &env.path("c"), &[], &["check", "--read-data"])
        .assert()
        .success();

    // Forget and prune here; sync keeps the destination's copy unless --delete.
    env.snap(&["forget", &all[0], "--prune"]).assert().success();
    let kept = json(env.snap(&["sync", "--to", to, "--json"]));
    assert_eq!(kept["deleted"], serde_json::json!([0, 0, 0]), "{kept}");
    assert_eq!(
        ids(&json(snap_at(to, &env.path("c"), &[], &["list", "--json"]))).len(),
        2
    );
    let mirrored = json(env.snap(&["sync", "--to", to, "--delete", "--json"]));
    assert_eq!(mirrored["deleted"][0], 1, "{mirrored}");
    assert_eq!(
        ids(&json(snap_at(to, &env.path("c"), &[], &["list", "--json"]))),
        vec![all[1].clone()]
    );
    snap_at(to, &env.path("c"), &[], &["check", "--read-data"])
        .assert()
        .success();
    restores_same(&env, to, &[], &all[1], &src);

    // Another (plain) repository gets rewritten copies, mixed with its own snapshots.
    let other = env.path("other");
    let o = other.to_str().unwrap();
    snap_at(o, &env.path("c"), &[], &["init"])
        .assert()
        .success();
    snap_at(o, &env.path("c"), &[], &["backup", src.to_str().unwrap()])
        .assert()
        .success();
    let r = json(env.snap(&["sync", "--to", o, "--json"]));
    assert_eq!(
        (&r["rewritten"], &r["snapshots_sent"], &r["chunks_read"]),
        (
            &serde_json::json!(true),
            &serde_json::json!(1),
            &serde_json::json!(0)
        ),
        "plain repositories share blob ids: the data there is not read again: {r}"
    );
    let listed = json(snap_at(o, &env.path("c"), &[], &["list", "--json"]));
    let copy = listed
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["original"].as_str() == Some(all[1].as_str()))
        .unwrap_or_else(|| panic!("no copy of {} in {listed}", all[1]));
    snap_at(o, &env.path("c"), &[], &["check", "--read-data"])
        .assert()
        .success();
    restores_same(&env, o, &[], copy["id"].as_str().unwrap(), &src);
}

#[test]
fn chosen_snapshots_travel_with_only_the_data_they_need() {
    let env = Env::new();
    env.init();
    let src = files(&env, 1);
    env.backup_json(&["--tag", "keep", src.to_str().unwrap()]);
    let src = files(&env, 2);
    env.backup_json(&[src.to_str().unwrap()]);
    let dest = env.path("dest");
    let r = json(env.snap(&[
        "sync",
        "--to",
        dest.to_str().unwrap(),
        "--tag",
        "keep",
        "--json",
    ]));
    assert_eq!(r["snapshots_sent"], 1, "{r}");
    let d = dest.to_str().unwrap();
    let list = json(snap_at(d, &env.path("c"), &[], &["list", "--json"]));
    assert_eq!(list[0]["tags"], serde_json::json!(["keep"]));
    snap_at(d, &env.path("c"), &[], &["check", "--read-data"])
        .assert()
        .success();
    // The rest follows later without resending.
    let rest = json(env.snap(&["sync", "--to", d, "--json"]));
    assert_eq!(rest["snapshots_sent"], 1, "{rest}");
    assert!(
        rest["bytes_sent"].as_u64().unwrap() < 1_500_000,
        "the shared files were not sent again: {rest}"
    );
}

#[test]
fn an_s3_repository_is_used_directly_by_hosts_with_empty_caches() {
    let Some(s3) = Garage::single() else { return };
    let env = Env::new();
    let e = s3.env();
    let repo = s3.url("team/repo");
    let cache_a = env.path("cache-a");
    snap_at(&repo, &cache_a, &e, &["init"]).assert().success();
    let src = files(&env, 1);
    let b = json(snap_at(
        &repo,
        &cache_a,
        &e,
        &["backup", "--json", src.to_str().unwrap()],
    ));
    let id = b["id"].as_str().unwrap().to_string();
    // A second host: nothing cached, lists and restores from the index files.
    let list = json(snap_at(
        &repo,
        &env.path("cache-b"),
        &e,
        &["list", "--json"],
    ));
    assert_eq!(ids(&list), vec![id.clone()]);
    restores_same(&env, &repo, &e, &id, &src);
    snap_at(&repo, &env.path("cache-c"), &e, &["check", "--read-data"])
        .assert()
        .success();

    // Two hosts back up at once, each with its own cache; both snapshots land, told
    // apart by host, and the data they share is stored once.
    let src_b = env.path("src-b");
    fs::create_dir_all(&src_b).unwrap();
    fs::write(src_b.join("own"), random_bytes(500_000, "host b")).unwrap();
    for i in 0..4 {
        fs::copy(src.join(format!("f{i}")), src_b.join(format!("f{i}"))).unwrap();
    }
    let spawn = |cache: &str, host: &str, dir: &Path| {
        snap_at(&repo, &env.path(cache), &e, &[])
            .args(["backup", "--json", "--host", host])
            .arg(dir)
            .output()
    };
    let (ra, rb) = std::thread::scope(|sc| {
        let a = sc.spawn(|| spawn("cache-a", "host-a", &src).unwrap());
        let b = sc.spawn(|| spawn("cache-b", "host-b", &src_b).unwrap());
        (a.join().unwrap(), b.join().unwrap())
    });
    for r in [&ra, &rb] {
        assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    }
    let added_b: serde_json::Value = serde_json::from_slice(&rb.stdout).unwrap();
    assert!(
        added_b["summary"]["bytes_added_raw"].as_u64().unwrap() < 1_500_000,
        "host b stored the shared files again: {added_b}"
    );
    let list = json(snap_at(
        &repo,
        &env.path("cache-d"),
        &e,
        &["list", "--json"],
    ));
    let hosts: Vec<&str> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["host"].as_str().unwrap())
        .collect();
    assert!(
        hosts.contains(&"host-a") && hosts.contains(&"host-b"),
        "{list}"
    );
    let snap_b = serde_json::from_slice::<serde_json::Value>(&rb.stdout).unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    restores_same(&env, &repo, &e, &snap_b, &src_b);
    snap_at(&repo, &env.path("cache-e"), &e, &["check", "--read-data"])
        .assert()
        .success();
}

#[test]
fn an_encrypted_repository_syncs_to_s3_sealed_and_reads_back_with_its_passphrase() {
    let Some(s3) = Garage::single() else { return };
    let env = Env::new();
    let mut e = s3.env();
    e.push(("SNAP_PASSWORD", "correct horse".into()));
    let local = env.repo();
    let l = local.to_str().unwrap();
    snap_at(l, &env.path("c"), &e, &["init", "--encrypt"])
        .assert()
        .success();
    let src = files(&env, 1);
    let b = json(snap_at(
        l,
        &env.path("c"),
        &e,
        &["backup", "--json", src.to_str().unwrap()],
    ));
    let id = b["id"].as_str().unwrap().to_string();
    let remote = s3.url("sealed");
    snap_at(l, &env.path("c"), &e, &["sync", "--to", &remote])
        .assert()
        .success();
    restores_same(&env, &remote, &e, &id, &src);
    let mut wrong = e.clone();
    wrong.retain(|(k, _)| *k != "SNAP_PASSWORD");
    wrong.push(("SNAP_PASSWORD", "wrong".into()));
    snap_at(&remote, &env.path("w"), &wrong, &["list"])
        .assert()
        .code(1)
        .stderr(predicate::str::contains("wrong passphrase"));
}

#[test]
fn sync_over_sftp_survives_the_server_going_away_and_resumes() {
    let Some(mut sshd) = Sshd::start() else {
        return;
    };
    let env = Env::new();
    env.init();
    let src = files(&env, 1);
    // Several packs, so the server can go away between them.
    fs::write(src.join("big"), random_bytes(40 << 20, "big")).unwrap();
    env.backup_json(&[src.to_str().unwrap()]);
    let id = ids(&json(env.snap(&["list", "--json"])))[0].clone();
    let dest = env.path("offsite/repo");
    let url = sshd.url(&dest);
    let e = sshd.env();

    let child = std::process::Command::new(assert_cmd::cargo::cargo_bin("snap"))
        .env_remove("SNAP_REPO")
        .env("SNAP_CACHE_DIR", env.cache())
        .envs(e.iter().map(|(k, v)| (*k, v.as_str())))
        .args(["--repo", env.repo().to_str().unwrap(), "sync", "--to", &url])
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Wait for the first pack to arrive, then take the server away.
    let start = std::time::Instant::now();
    while fs::read_dir(dest.join("packs")).map_or(0, std::iter::Iterator::count) == 0 {
        assert!(start.elapsed().as_secs() < 60, "no pack arrived");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    sshd.stop();
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    if out.status.success() {
        // It finished first on this fast machine: nothing to resume, but the copy holds.
        eprintln!("sync finished before the server went away");
    } else {
        assert_eq!(out.status.code(), Some(1), "{stderr}");
        assert!(
            stderr.contains("sftp://") && stderr.contains("then rerun"),
            "the error names the destination and what to do: {stderr}"
        );
        assert!(!stderr.contains("panicked"), "{stderr}");
        // No snapshot record before its data: the destination lists nothing it cannot
        // restore.
        let local = dest.to_str().unwrap();
        if dest.join("config").exists() {
            snap_at(local, &env.path("c1"), &[], &["check", "--read-data"])
                .assert()
                .success();
        }
    }
    sshd.restart();
    let resumed = json(
        env.snap(&["sync", "--to", &url, "--json"])
            .envs(e.iter().map(|(k, v)| (*k, v.as_str()))),
    );
    assert_eq!(
        resumed["snapshots_sent"].as_u64(),
        Some(u64::from(!out.status.success()))
    );
    restores_same(&env, &url, &e, &id, &src);
    snap_at(
        dest.to_str().unwrap(),
        &env.path("c2"),
        &[],
        &["check", "--read-data"],
    )
    .assert()
    .success();
}

#[test]
fn an_s3_server_going_away_gives_a_clear_error() {
    let Some(mut s3) = Garage::single() else {
        return;
    };
    let env = Env::new();
    env.init();
    let src = files(&env, 1);
    env.backup_json(&[src.to_str().unwrap()]);
    let e = s3.env();
    s3.kill();
    env.snap(&["sync", "--to", &s3.url("gone")])
        .envs(e.iter().map(|(k, v)| (*k, v.as_str())))
        .timeout(std::time::Duration::from_secs(120))
        .assert()
        .code(1)
        .stderr(
            predicate::str::contains("s3://snap/gone")
                .and(predicate::str::contains("panicked").not()),
        );
}

/// kill -9 at random moments of a sync, then resume: the destination never lists a
/// snapshot it cannot restore, and the final copy is whole.
#[test]
fn kill_9_during_sync_then_resume() {
    let env = Env::new();
    env.init();
    let src = files(&env, 1);
    fs::write(src.join("big"), random_bytes(24 << 20, "big")).unwrap();
    env.backup_json(&[src.to_str().unwrap()]);
    let src2 = files(&env, 2);
    env.backup_json(&[src2.to_str().unwrap()]);
    let dest = env.path("dest");
    let d = dest.to_str().unwrap();
    let seed: u64 = std::env::var("SNAP_FAULT_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(7);
    for i in 0..6u64 {
        let mut child = std::process::Command::new(assert_cmd::cargo::cargo_bin("snap"))
            .env_remove("SNAP_REPO")
            .env("SNAP_CACHE_DIR", env.cache())
            .args(["--repo", env.repo().to_str().unwrap(), "sync", "--to", d])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let wait = (seed.wrapping_mul(31).wrapping_add(i * 97)) % 400;
        std::thread::sleep(std::time::Duration::from_millis(wait));
        let _ = child.kill();
        let _ = child.wait();
        if dest.join("config").exists() {
            snap_at(d, &env.path("c"), &[], &["check", "--read-data"])
                .assert()
                .success();
        }
    }
    env.snap(&["sync", "--to", d]).assert().success();
    let all = ids(&json(env.snap(&["list", "--json"])));
    assert_eq!(
        ids(&json(snap_at(d, &env.path("c"), &[], &["list", "--json"]))),
        all
    );
    restores_same(&env, d, &[], &all[1], &src2);
}

/// The processes left talking to `sshd` once a run has returned: its `ssh` clients at
/// once, the server's side of their connections within `secs` (sshd notices a closed
/// connection on its own time).
fn left_connected(sshd: &Sshd, secs: u64) -> Vec<String> {
    let clients: Vec<String> = sshd
        .connected()
        .into_iter()
        .filter(|p| p.starts_with("client"))
        .collect();
    if !clients.is_empty() {
        return clients;
    }
    let start = std::time::Instant::now();
    loop {
        let left = sshd.connected();
        if left.is_empty() || start.elapsed().as_secs() >= secs {
            return left;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

/// Each run over SFTP ends the ssh it started and with it the server's session: none
/// piles up under a nightly cron job.
#[test]
fn sftp_runs_end_every_process_they_start() {
    let Some(sshd) = Sshd::start() else { return };
    let env = Env::new();
    env.init();
    let src = files(&env, 1);
    env.backup_json(&[src.to_str().unwrap()]);
    let e = sshd.env();
    assert_eq!(left_connected(&sshd, 0), Vec::<String>::new());
    let url = sshd.url(&env.path("offsite/repo"));
    env.snap(&["sync", "--to", &url])
        .envs(e.iter().map(|(k, v)| (*k, v.as_str())))
        .assert()
        .success();
    let left = left_connected(&sshd, 3);
    assert!(left.is_empty(), "after sync:\n{}", left.join("\n"));

    let direct = sshd.url(&env.path("direct"));
    let cache = env.path("c");
    let src = src.to_str().unwrap();
    for args in [&["init"][..], &["backup", src], &["check", "--read-data"]] {
        snap_at(&direct, &cache, &e, args).assert().success();
        let left = left_connected(&sshd, 3);
        assert!(left.is_empty(), "after {args:?}:\n{}", left.join("\n"));
    }
}

/// A server whose host key changed since it was recorded is refused, also under
/// `SNAP_SSH_KNOWN_HOSTS=add`, with words that say what that may mean and how to
/// record the new key on purpose (ssh's own warning, not only its last line).
#[test]
fn a_changed_host_key_is_refused_and_named_as_a_possible_interception() {
    let Some(mut sshd) = Sshd::start() else {
        return;
    };
    let env = Env::new();
    // ssh with a known_hosts of its own, through a wrapper first on PATH.
    let bin = env.path("bin");
    fs::create_dir_all(&bin).unwrap();
    let known = env.path("known_hosts");
    fs::write(
        bin.join("ssh"),
        format!(
            "#!/bin/sh\nexec /usr/bin/ssh -o UserKnownHostsFile={} \"$@\"\n",
            known.display()
        ),
    )
    .unwrap();
    fs::set_permissions(bin.join("ssh"), fs::Permissions::from_mode(0o755)).unwrap();
    let path = format!("{}:{}", bin.display(), std::env::var("PATH").unwrap());
    let mut e: Vec<(&'static str, String)> = sshd
        .env()
        .into_iter()
        .filter(|(k, _)| *k != "SNAP_SSH_KNOWN_HOSTS")
        .collect();
    e.push(("PATH", path));
    e.push(("SNAP_SSH_KNOWN_HOSTS", "add".into()));
    let url = sshd.url(&env.path("remote"));
    let cache = env.path("c");
    snap_at(&url, &cache, &e, &["init"]).assert().success();
    assert!(fs::read_to_string(&known).unwrap().contains("ssh-ed25519"));

    sshd.restart_with_new_host_key();
    let out = snap_at(&url, &cache, &e, &["list"]).output().unwrap();
    let said = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{said}");
    let remove = format!("ssh-keygen -R '[127.0.0.1]:{}'", sshd.port());
    for words in [
        "host key is not the one known_hosts records",
        "intercepting",
        &remove,
    ] {
        assert!(said.contains(words), "{words:?} not in {said}");
    }
}

/// The quoted paths of an sftp-server log line `verb "a" ... "b"`.
fn quoted(line: &str) -> Vec<&str> {
    line.split('"').skip(1).step_by(2).collect()
}

/// Every file an SFTP store puts durably reaches the server's disk before it is
/// renamed into place (fsync@openssh.com on the temp file), and again under its final
/// name after (which commits the rename on ext4 and XFS); deletions end with an fsync.
#[test]
fn sftp_writes_are_fsynced_before_and_after_their_rename() {
    let Some(sshd) = Sshd::start() else { return };
    let env = Env::new();
    env.init();
    let src = files(&env, 1);
    env.backup_json(&[src.to_str().unwrap()]);
    let dest = env.path("offsite/repo");
    let url = sshd.url(&dest);
    let e = sshd.env();
    env.snap(&["sync", "--to", &url])
        .envs(e.iter().map(|(k, v)| (*k, v.as_str())))
        .assert()
        .success();
    let log = sshd.sftp_log();
    let lines: Vec<&str> = log.lines().collect();
    let mut placed = std::collections::BTreeSet::new();
    for (i, line) in lines.iter().enumerate() {
        if !line.starts_with("posix-rename ") {
            continue;
        }
        let [old, new] = quoted(line)[..] else {
            panic!("unexpected log line {line}")
        };
        if new.contains("/locks/") {
            continue;
        }
        let fsync = |p: &str| format!("fsync \"{p}\"");
        assert!(
            lines[..i].contains(&fsync(old).as_str()),
            "{new} was renamed into place before its data was fsynced:\n{log}"
        );
        assert!(
            lines[i + 1..].contains(&fsync(new).as_str()),
            "{new} was not fsynced after its rename:\n{log}"
        );
        placed.insert(new.to_string());
    }
    let mut files = Vec::new();
    for dir in ["packs", "index", "snapshots"] {
        for e in walk(&dest.join(dir)) {
            files.push(e.display().to_string());
        }
    }
    files.push(dest.join("config").display().to_string());
    assert!(files.len() >= 4, "{files:?}");
    for f in &files {
        assert!(placed.contains(f), "{f} was not written durably:\n{log}");
    }

    // Deletions (forget and prune on the copy) end with a barrier: a temp file fsynced
    // after the last removal.
    let id = ids(&json(env.snap(&["list", "--json"])))[0].clone();
    let before = log.len();
    snap_at(&url, &env.path("c"), &e, &["forget", &id, "--prune"])
        .assert()
        .success();
    let log = sshd.sftp_log();
    let lines: Vec<&str> = log[before..].lines().collect();
    let tmp = format!("{}/tmp/", dest.display());
    let last_removal = lines
        .iter()
        .rposition(|l| l.starts_with("remove name ") && !l.contains(&tmp) && !l.contains("/locks/"))
        .unwrap_or_else(|| panic!("prune removed nothing:\n{}", lines.join("\n")));
    assert!(
        lines[last_removal..]
            .iter()
            .any(|l| l.starts_with("fsync ") && l.contains(&tmp)),
        "no fsync after the last removal:\n{}",
        lines.join("\n")
    );
}

/// The files in `dest`'s `tmp/` and their total size.
fn temp_files(dest: &Path) -> (Vec<String>, u64) {
    let mut names = Vec::new();
    let mut bytes = 0;
    for e in fs::read_dir(dest.join("tmp"))
        .into_iter()
        .flatten()
        .flatten()
    {
        names.push(e.file_name().to_string_lossy().into_owned());
        bytes += e.metadata().map_or(0, |m| m.len());
    }
    names.sort();
    (names, bytes)
}

/// kill -9 of a sync while a file is in the destination's `tmp/`, then a resumed
/// sync: it removes what the dead writer left, keeps the temp file of a live writer,
/// and the copy checks clean.
fn killed_sync_then_resumed(env: &Env, to: &str, dest: &Path, extra: &[(&'static str, String)]) {
    let src = files(env, 1);
    fs::write(src.join("big"), random_bytes(80 << 20, "big")).unwrap();
    env.backup_json(&[src.to_str().unwrap()]);
    let mut child = std::process::Command::new(assert_cmd::cargo::cargo_bin("snap"))
        .env_remove("SNAP_REPO")
        .env("SNAP_CACHE_DIR", env.cache())
        .envs(extra.iter().map(|(k, v)| (*k, v.as_str())))
        .args(["--repo", env.repo().to_str().unwrap(), "sync", "--to", to])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // A pack in flight (the destination's config is in place by then: a killed
    // creation is another matter).
    let start = std::time::Instant::now();
    while temp_files(dest).1 < 1 << 20 {
        assert!(
            child.try_wait().unwrap().is_none(),
            "the sync ended before a temp file was seen"
        );
        assert!(start.elapsed().as_secs() < 120, "no temp file appeared");
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    // Over SFTP the server may still carry out requests the killed run had sent before
    // its ssh saw the pipe close: the leftovers are what is there once nothing changes.
    let mut settled = temp_files(dest);
    loop {
        std::thread::sleep(std::time::Duration::from_millis(300));
        let now = temp_files(dest);
        if now == settled {
            break;
        }
        settled = now;
    }
    let (left, bytes) = settled;
    eprintln!(
        "the killed sync left {bytes} bytes in {} temp files",
        left.len()
    );
    // A live writer's temp file, named as snap names them, with this test's PID.
    let host = left[0].split('.').next().unwrap();
    let live = format!("{host}.{}.live", std::process::id());
    fs::write(dest.join("tmp").join(&live), b"being written").unwrap();
    // Names snap did not give count by age alone: one untouched for 31 minutes goes,
    // a fresh one stays.
    let fresh = "written-by-someone-else";
    fs::write(dest.join("tmp").join(fresh), b"fresh").unwrap();
    let old = dest.join("tmp").join("left-long-ago");
    fs::write(&old, b"old").unwrap();
    fs::File::options()
        .write(true)
        .open(&old)
        .unwrap()
        .set_modified(std::time::SystemTime::now() - std::time::Duration::from_secs(31 * 60))
        .unwrap();

    let resumed = json(
        env.snap(&["sync", "--to", to, "--json"])
            .envs(extra.iter().map(|(k, v)| (*k, v.as_str()))),
    );
    assert_eq!(resumed["tmp_files_removed"], left.len() + 1, "{resumed}");
    let mut kept = vec![live.clone(), fresh.to_string()];
    kept.sort();
    assert_eq!(
        temp_files(dest).0,
        kept,
        "only the live writers' files are left"
    );
    for f in kept {
        fs::remove_file(dest.join("tmp").join(f)).unwrap();
    }
    let d = dest.to_str().unwrap();
    snap_at(d, &env.path("c"), &[], &["check", "--read-data"])
        .assert()
        .success();
    let id = ids(&json(env.snap(&["list", "--json"])))[0].clone();
    restores_same(env, d, &[], &id, &src);
}

#[test]
fn a_resumed_sync_clears_what_a_killed_one_left_in_a_directory() {
    let env = Env::new();
    env.init();
    let dest = env.path("usb/repo");
    killed_sync_then_resumed(&env, dest.to_str().unwrap(), &dest, &[]);
}

#[test]
fn a_resumed_sync_clears_what_a_killed_one_left_over_sftp() {
    let Some(sshd) = Sshd::start() else { return };
    let env = Env::new();
    env.init();
    let dest = env.path("offsite/repo");
    killed_sync_then_resumed(&env, &sshd.url(&dest), &dest, &sshd.env());
    let left = left_connected(&sshd, 3);
    assert!(left.is_empty(), "{}", left.join("\n"));
}

/// The lock files in repository directory `repo` (none when it has no `locks/`).
fn lock_files(repo: &Path) -> Vec<std::path::PathBuf> {
    match fs::read_dir(repo.join("locks")) {
        Ok(d) => d.map(|e| e.unwrap().path()).collect(),
        Err(_) => Vec::new(),
    }
}

/// `sync --to TO --dry-run --json ARGS`, checked to be a dry run.
fn dry_run(env: &Env, to: &str, args: &[&str]) -> serde_json::Value {
    let plan = json(env.snap(&[&["sync", "--to", to, "--dry-run", "--json"], args].concat()));
    assert_eq!(plan["dry_run"], true, "{plan}");
    plan
}

#[test]
fn sync_dry_run_into_a_new_directory_creates_nothing_and_names_what_sync_sends() {
    let env = Env::new();
    env.init();
    let src = files(&env, 1);
    env.backup_json(&[src.to_str().unwrap()]);
    let src = files(&env, 2);
    env.backup_json(&[src.to_str().unwrap()]);
    let all = ids(&json(env.snap(&["list", "--json"])));
    let dest = env.path("usb/repo");
    let to = dest.to_str().unwrap();

    let plan = dry_run(&env, to, &[]);
    assert!(!dest.exists(), "a dry run creates no destination");
    assert!(
        !env.path("usb").exists(),
        "nor the directory it would be in"
    );
    assert!(
        lock_files(&env.repo()).is_empty(),
        "a dry run leaves no lock behind in the source"
    );
    assert_eq!(plan["create"], true, "{plan}");
    assert_eq!(plan["rewritten"], false, "{plan}");
    assert_eq!(plan["snapshots_to_send"], 2, "{plan}");
    assert_eq!(plan["snapshots"], serde_json::json!(all), "{plan}");
    assert_eq!(plan["snapshots_to_delete"], 0, "{plan}");
    let packs = plan["packs_to_send"].as_u64().unwrap();
    assert!(packs > 0, "{plan}");

    // The short flag and the text: the same figures, still nothing created.
    env.snap(&["sync", "--to", to, "-n"])
        .assert()
        .success()
        .stdout(
            predicate::str::contains(format!("would send 2 snapshots, {packs} packs ("))
                .and(predicate::str::contains("would create it"))
                .and(predicate::str::contains("dry run, nothing sent")),
        );
    assert!(!dest.exists(), "-n creates no destination either");

    let real = json(env.snap(&["sync", "--to", to, "--json"]));
    assert_eq!(real["snapshots_sent"], plan["snapshots_to_send"], "{real}");
    assert_eq!(real["packs_sent"], plan["packs_to_send"], "{real}");
    assert_eq!(real["bytes_sent"], plan["bytes_to_send"], "{real}");
    assert_eq!(
        ids(&json(snap_at(to, &env.path("c"), &[], &["list", "--json"]))),
        all
    );
}

#[test]
fn sync_dry_run_names_only_what_the_destination_lacks_and_what_delete_would_remove() {
    let env = Env::new();
    env.init();
    let src = files(&env, 1);
    env.backup_json(&["--tag", "first", src.to_str().unwrap()]);
    let dest = env.path("dest");
    let to = dest.to_str().unwrap();
    let first = json(env.snap(&["sync", "--to", to, "--tag", "first", "--json"]));
    assert_eq!(first["snapshots_sent"], 1, "{first}");
    let src = files(&env, 2);
    env.backup_json(&[src.to_str().unwrap()]);
    let src = files(&env, 3);
    env.backup_json(&[src.to_str().unwrap()]);
    let all = ids(&json(env.snap(&["list", "--json"])));
    let dest_list = || ids(&json(snap_at(to, &env.path("c"), &[], &["list", "--json"])));
    let packs_there = || walk(&dest.join("packs")).len();
    let packs_before = packs_there();

    let plan = dry_run(&env, to, &[]);
    assert_eq!(plan["create"], false, "{plan}");
    assert_eq!(plan["snapshots"], serde_json::json!(all[1..]), "{plan}");
    assert_eq!(plan["snapshots_present"], 1, "{plan}");
    assert!(plan["packs_present"].as_u64().unwrap() > 0, "{plan}");
    assert_eq!(dest_list(), all[..1], "a dry run sends no snapshot");
    assert_eq!(packs_there(), packs_before, "a dry run sends no pack");
    assert!(
        lock_files(&dest).is_empty(),
        "no lock left on the destination"
    );
    assert!(
        lock_files(&env.repo()).is_empty(),
        "no lock left on the source"
    );

    let real = json(env.snap(&["sync", "--to", to, "--json"]));
    assert_eq!(real["snapshots_sent"], plan["snapshots_to_send"], "{real}");
    assert_eq!(
        real["snapshots_present"], plan["snapshots_present"],
        "{real}"
    );
    assert_eq!(real["packs_sent"], plan["packs_to_send"], "{real}");
    assert_eq!(real["packs_present"], plan["packs_present"], "{real}");
    assert_eq!(real["bytes_sent"], plan["bytes_to_send"], "{real}");
    assert_eq!(dest_list(), all);

    // Forgotten here: --delete names them there, and a dry run removes none.
    env.snap(&["forget", &all[0], &all[1], "--prune"])
        .assert()
        .success();
    let plan = dry_run(&env, to, &["--delete"]);
    assert_eq!(plan["snapshots_to_send"], 0, "{plan}");
    assert_eq!(plan["snapshots_to_delete"], 2, "{plan}");
    assert_eq!(plan["delete"], serde_json::json!(all[..2]), "{plan}");
    assert_eq!(dest_list(), all, "a dry run deletes nothing");
    assert!(
        lock_files(&dest).is_empty(),
        "no exclusive lock left behind"
    );
    let short: Vec<&str> = all[..2].iter().map(|id| &id[..8]).collect();
    env.snap(&["sync", "--to", to, "--delete", "-n"])
        .assert()
        .success()
        .stdout(predicate::str::contains(format!(
            "would delete 2 snapshots there: {}",
            short.join(", ")
        )));
    assert_eq!(dest_list(), all);
    let real = json(env.snap(&["sync", "--to", to, "--delete", "--json"]));
    assert_eq!(real["deleted"][0], plan["snapshots_to_delete"], "{real}");
    assert_eq!(dest_list(), all[2..]);

    // Another repository gets rewritten copies: named, with no byte figure claimed.
    let other = env.path("other");
    let o = other.to_str().unwrap();
    snap_at(o, &env.path("c"), &[], &["init"])
        .assert()
        .success();
    snap_at(o, &env.path("c"), &[], &["backup", src.to_str().unwrap()])
        .assert()
        .success();
    let own = ids(&json(snap_at(o, &env.path("c"), &[], &["list", "--json"])));
    let plan = dry_run(&env, o, &["--delete"]);
    assert_eq!(plan["rewritten"], true, "{plan}");
    assert_eq!(plan["snapshots"], serde_json::json!(all[2..]), "{plan}");
    assert_eq!(plan["bytes_to_send"], serde_json::Value::Null, "{plan}");
    // Its own backup is no copy of a snapshot this repository's retention removed.
    assert_eq!(plan["delete"], serde_json::json!([]), "{plan}");
    assert_eq!(
        ids(&json(snap_at(o, &env.path("c"), &[], &["list", "--json"]))),
        own,
        "a dry run rewrites and deletes nothing"
    );
    assert!(lock_files(&other).is_empty(), "no lock left on the other");
    let real = json(env.snap(&["sync", "--to", o, "--delete", "--json"]));
    assert_eq!(real["snapshots_sent"], plan["snapshots_to_send"], "{real}");
    assert_eq!(real["deleted"][0], plan["snapshots_to_delete"], "{real}");
    let after = ids(&json(snap_at(o, &env.path("c"), &[], &["list", "--json"])));
    assert!(after.contains(&own[0]), "{after:?}");
}

/// Two repositories (two hosts) sync into one offsite with `--delete`, as every `snap
/// run` with retention does: each removes there only what its own retention removed
/// (an older snapshot of a group it still has), never the other's snapshots or their
/// data.
#[test]
fn sync_delete_into_a_shared_offsite_keeps_the_other_repositorys_snapshots() {
    let env = Env::new();
    env.init();
    let dest = env.path("dest");
    let to = dest.to_str().unwrap();
    let src_a = files(&env, 1);
    env.backup_json(&["--host", "alpha", src_a.to_str().unwrap()]);
    env.snap(&["sync", "--to", to]).assert().success();
    // Host gamma: a repository of its own (another id: its snapshots are rewritten).
    let b = env.path("repo-b").to_str().unwrap().to_string();
    let cache_b = env.path("cache-b");
    let at_b = |args: &[&str]| snap_at(&b, &cache_b, &[], args);
    at_b(&["init"]).assert().success();
    let src_b = env.path("src-b");
    fs::create_dir_all(&src_b).unwrap();
    fs::write(src_b.join("g"), random_bytes(700_000, "gamma")).unwrap();
    at_b(&["backup", "--host", "gamma", src_b.to_str().unwrap()])
        .assert()
        .success();
    at_b(&["sync", "--to", to, "--delete"]).assert().success();
    let dest_list = || json(snap_at(to, &env.path("c"), &[], &["list", "--json"]));
    let hosts = || {
        let mut h: Vec<String> = dest_list()
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["host"].as_str().unwrap().to_string())
            .collect();
        h.sort();
        h
    };
    assert_eq!(hosts(), ["alpha", "gamma"], "gamma's sync kept alpha's");
    // Alpha backs up twice more and forgets its oldest: only that goes there.
    let src_a = files(&env, 2);
    env.backup_json(&["--host", "alpha", src_a.to_str().unwrap()]);
    let first = ids(&json(env.snap(&["list", "--json"])))[0].clone();
    env.snap(&["forget", &first, "--prune"]).assert().success();
    let plan = dry_run(&env, to, &["--delete"]);
    assert_eq!(plan["delete"], serde_json::json!([first]), "{plan}");
    assert_eq!(plan["left"].as_array().unwrap().len(), 1, "gamma's: {plan}");
    env.snap(&["sync", "--to", to, "--delete"])
        .assert()
        .success();
    assert_eq!(hosts(), ["alpha", "gamma"], "alpha's sync kept gamma's");
    assert!(!ids(&dest_list()).contains(&first));
    snap_at(to, &env.path("c"), &[], &["check", "--read-data"])
        .assert()
        .success();
    let gamma = dest_list()
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["host"] == "gamma")
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    restores_same(&env, to, &[], &gamma, &src_b);
    let latest = ids(&json(env.snap(&["list", "--json"])))[0].clone();
    restores_same(&env, to, &[], &latest, &src_a);
    // Gamma's next mirror leaves alpha's newer snapshot too.
    at_b(&["sync", "--to", to, "--delete"]).assert().success();
    assert!(ids(&dest_list()).contains(&latest));
}

/// `sync --host` and `--path` choose snapshots as `list` does (restic's `copy`
/// takes the same filters).
#[test]
fn sync_copies_the_snapshots_the_filters_pass() {
    let env = Env::new();
    env.init();
    let src = files(&env, 1);
    let other = env.path("other");
    fs::create_dir_all(&other).unwrap();
    fs::write(other.join("o"), b"o").unwrap();
    env.backup_json(&["--host", "alpha", src.to_str().unwrap()]);
    env.backup_json(&["--host", "beta", src.to_str().unwrap()]);
    env.backup_json(&["--host", "alpha", other.to_str().unwrap()]);
    let to = env.path("dest");
    let to = to.to_str().unwrap();
    let hosts_there = || -> Vec<(String, String)> {
        json(snap_at(to, &env.path("c"), &[], &["list", "--json"]))
            .as_array()
            .unwrap()
            .iter()
            .map(|s| {
                (
                    s["host"].as_str().unwrap().to_string(),
                    s["sources"][0]["path"].as_str().unwrap().to_string(),
                )
            })
            .collect()
    };
    env.snap(&[
        "sync",
        "--to",
        to,
        "--host",
        "alpha",
        "--path",
        src.to_str().unwrap(),
    ])
    .assert()
    .success();
    assert_eq!(
        hosts_there(),
        [("alpha".to_string(), src.display().to_string())]
    );
    env.snap(&["sync", "--to", to, "--host", "nowhere"])
        .assert()
        .code(1)
        .stderr(predicate::str::contains("no snapshot passes"));
}
