//! forget, prune and check through the real binary: retention, space reclaimed, damage
//! found and named, and no snapshot lost when any of them is killed at a random moment.

use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use predicates::prelude::*;

use crate::util::{du, fault_run, random_bytes, restored, Env};

fn json(env: &Env, args: &[&str]) -> serde_json::Value {
    let out = env.snap(args).output().unwrap();
    assert!(
        out.status.success(),
        "snap {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

fn ids(env: &Env) -> Vec<String> {
    env.snapshots()
        .iter()
        .map(|s| s["id"].as_str().unwrap().to_string())
        .collect()
}

fn packs(repo: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for sub in fs::read_dir(repo.join("packs")).unwrap() {
        for f in fs::read_dir(sub.unwrap().path()).unwrap() {
            out.push(f.unwrap().path());
        }
    }
    out.sort();
    out
}

/// File name -> content of every file in `dir`.
fn contents(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    fs::read_dir(dir)
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            (
                e.file_name().to_string_lossy().into_owned(),
                fs::read(e.path()).unwrap(),
            )
        })
        .collect()
}

/// Writes `n` files `<name>0..` of `size` random bytes into `dir`, their content
/// derived from `seed` and the name.
fn write_files(dir: &Path, name: &str, n: usize, size: usize, seed: &str) {
    fs::create_dir_all(dir).unwrap();
    for i in 0..n {
        fs::write(
            dir.join(format!("{name}{i}")),
            random_bytes(size, &format!("{seed}{name}{i}")),
        )
        .unwrap();
    }
}

/// Restores snapshot `id` and asserts that `src`'s files in it are `want`.
fn assert_restores(env: &Env, id: &str, src: &Path, want: &BTreeMap<String, Vec<u8>>) {
    let target = env.path(&format!("out-{id}"));
    env.restore(id, &target);
    let got = contents(&restored(&target, src));
    assert!(
        got == *want,
        "snapshot {id} does not restore what was backed up"
    );
    fs::remove_dir_all(&target).unwrap();
}

#[test]
fn forget_keeps_what_the_policy_keeps_and_prune_frees_the_rest() {
    let env = Env::new();
    env.init();
    let src = env.path("src");
    fs::create_dir_all(&src).unwrap();
    let mut want = HashMap::new();
    for i in 0..5 {
        // Each backup holds one 2 MiB file of its own: forgotten ones free their data.
        for e in fs::read_dir(&src).unwrap() {
            fs::remove_file(e.unwrap().path()).unwrap();
        }
        fs::write(
            src.join(format!("f{i}")),
            random_bytes(2 << 20, &format!("f{i}")),
        )
        .unwrap();
        let tag = if i == 0 { "keep" } else { "nightly" };
        let out = env.backup_json(&[src.to_str().unwrap(), "--tag", tag]);
        want.insert(out["id"].as_str().unwrap().to_string(), contents(&src));
    }
    let all = ids(&env);
    assert_eq!(all.len(), 5);
    let before = du(&env.repo());

    // Dry run: the table says what would go; nothing goes.
    env.snap(&[
        "forget",
        "--keep-last",
        "2",
        "--keep-tag",
        "keep",
        "--dry-run",
    ])
    .assert()
    .success()
    .stdout(
        predicate::str::contains("3 kept, 2 removed")
            .and(predicate::str::contains("tagged keep"))
            .and(predicate::str::contains("last snapshot")),
    );
    assert_eq!(ids(&env), all);
    env.snap(&["forget"])
        .assert()
        .code(1)
        .stderr(predicate::str::contains("no --keep-* option"));

    let decisions = json(
        &env,
        &["forget", "--keep-last", "2", "--keep-tag", "keep", "--json"],
    );
    assert_eq!(decisions["prune"], serde_json::Value::Null, "{decisions}");
    assert_eq!(decisions["removed"].as_array().unwrap().len(), 2);
    let kept: Vec<&str> = decisions["snapshots"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|d| d["keep"].as_bool().unwrap())
        .map(|d| d["id"].as_str().unwrap())
        .collect();
    assert_eq!(kept.len(), 3);
    let left = ids(&env);
    assert_eq!(left, vec![all[0].clone(), all[3].clone(), all[4].clone()]);

    let report = json(&env, &["prune", "--json"]);
    assert!(report["packs_deleted"].as_u64().unwrap() >= 2, "{report}");
    let after = du(&env.repo());
    assert!(
        after + (3 << 20) < before,
        "prune freed too little: {before} -> {after} bytes"
    );
    env.snap(&["check", "--read-data"]).assert().success();
    for id in &left {
        assert_restores(&env, id, &src, &want[id]);
    }
}

/// A repository whose one data pack is partly used: `files` 1 MiB files backed up,
/// then all but `keep` of them removed, backed up again, and the first snapshot
/// forgotten. Returns the source and its content.
fn partly_used(env: &Env, files: usize, keep: usize) -> (PathBuf, BTreeMap<String, Vec<u8>>) {
    env.init();
    let src = env.path("src");
    write_files(&src, "f", files, 1 << 20, "p");
    env.backup_json(&[src.to_str().unwrap()]);
    for i in keep..files {
        fs::remove_file(src.join(format!("f{i}"))).unwrap();
    }
    env.backup_json(&[src.to_str().unwrap()]);
    env.snap(&["forget", "--keep-last", "1"]).assert().success();
    let want = contents(&src);
    (src, want)
}

#[test]
fn prune_rewrites_partly_used_packs_and_keeps_every_blob_needed() {
    let env = Env::new();
    let (src, want) = partly_used(&env, 8, 2);
    // `unlimited` rewrites nothing (so writes nothing: what frees a full disk).
    let none = json(
        &env,
        &["prune", "--dry-run", "--max-unused", "unlimited", "--json"],
    );
    assert_eq!(none["packs_repacked"], 0, "{none}");
    let dry = json(
        &env,
        &["prune", "--dry-run", "--max-unused", "0%", "--json"],
    );
    assert_eq!(dry["packs_repacked"], 1, "{dry}");
    let packs_before = packs(&env.repo());
    let report = json(&env, &["prune", "--max-unused", "0%", "--json"]);
    assert_eq!(report["packs_repacked"], 1, "{report}");
    assert_eq!(report["blobs_repacked"], dry["blobs_repacked"]);
    assert!(
        report["bytes_after"].as_u64().unwrap() < 3 << 20,
        "{report}"
    );
    let packs_after = packs(&env.repo());
    assert!(
        packs_after.iter().any(|p| !packs_before.contains(p)),
        "a new pack was written"
    );
    env.snap(&["check", "--read-data"]).assert().success();
    let id = ids(&env).pop().unwrap();
    assert_restores(&env, &id, &src, &want);
    // Nothing left to do.
    let again = json(&env, &["prune", "--max-unused", "0%", "--json"]);
    assert_eq!(
        (
            again["packs_deleted"].as_u64(),
            again["packs_repacked"].as_u64()
        ),
        (Some(0), Some(0))
    );
}

/// An interrupted prune leaves its new packs unindexed; the next prune indexes them as
/// garbage and rewrites the same packs again, producing byte-identical packs with the
/// same names. Those files must survive as the new packs.
#[test]
fn prune_after_an_interrupted_prune_keeps_the_packs_it_rewrites_again() {
    let env = Env::new();
    let (src, want) = partly_used(&env, 4, 1);
    // The interrupted prune: run it on a copy and bring back only its new packs.
    let copy = env.path("copy");
    let cp = std::process::Command::new("cp")
        .arg("-a")
        .arg(env.repo())
        .arg(&copy)
        .status()
        .unwrap();
    assert!(cp.success());
    let before = packs(&env.repo());
    let mut c = crate::util::snap_bin();
    c.env_remove("SNAP_REPO")
        .args([
            "--repo",
            copy.to_str().unwrap(),
            "prune",
            "--max-unused",
            "0%",
        ])
        .assert()
        .success();
    let mut brought = 0;
    for p in packs(&copy) {
        let rel = p.strip_prefix(&copy).unwrap();
        let dest = env.repo().join(rel);
        if !before.contains(&dest) {
            fs::create_dir_all(dest.parent().unwrap()).unwrap();
            fs::copy(&p, &dest).unwrap();
            brought += 1;
        }
    }
    assert!(brought > 0, "the prune on the copy wrote no pack");
    let on_disk = || -> u64 {
        packs(&env.repo())
            .iter()
            .map(|p| fs::metadata(p).unwrap().len())
            .sum()
    };
    let dry = json(
        &env,
        &["prune", "--max-unused", "0%", "--dry-run", "--json"],
    );
    let bytes_before = on_disk();
    let report = json(&env, &["prune", "--max-unused", "0%", "--json"]);
    assert_eq!(
        report["packs_unindexed"].as_u64(),
        Some(brought),
        "{report}"
    );
    // The report says what it did: every pack byte before and after, the unlisted
    // packs' too, and the dry run said the same.
    assert_eq!(
        report["bytes_before"].as_u64(),
        Some(bytes_before),
        "{report}"
    );
    assert_eq!(report["bytes_after"].as_u64(), Some(on_disk()), "{report}");
    assert_eq!(dry["bytes_after"], report["bytes_after"], "{dry} {report}");
    assert_eq!(dry["packs_unindexed"], report["packs_unindexed"]);
    env.snap(&["check", "--read-data"]).assert().success();
    let id = ids(&env).pop().unwrap();
    assert_restores(&env, &id, &src, &want);
}

/// Two snapshots whose data sits in separate packs: `victim` and `other`.
fn two_snapshots(env: &Env) -> (PathBuf, String, PathBuf, String, PathBuf) {
    env.init();
    let a = env.path("a");
    let b = env.path("b");
    fs::create_dir_all(&a).unwrap();
    fs::create_dir_all(&b).unwrap();
    fs::write(a.join("victim.bin"), random_bytes(3 << 20, "victim")).unwrap();
    let before = packs(&env.repo());
    let sa = env.backup_json(&[a.to_str().unwrap()])["id"]
        .as_str()
        .unwrap()
        .to_string();
    let data_pack = packs(&env.repo())
        .into_iter()
        .filter(|p| !before.contains(p))
        .max_by_key(|p| fs::metadata(p).unwrap().len())
        .unwrap();
    fs::write(b.join("other.bin"), random_bytes(3 << 20, "other")).unwrap();
    let sb = env.backup_json(&[b.to_str().unwrap()])["id"]
        .as_str()
        .unwrap()
        .to_string();
    (a, sa, b, sb, data_pack)
}

#[test]
fn a_flipped_byte_is_found_by_read_data_and_named_with_the_files_it_hits() {
    let env = Env::new();
    let (_, sa, b, sb, pack) = two_snapshots(&env);
    env.snap(&["check", "--read-data"]).assert().success();
    let mut bytes = fs::read(&pack).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x10;
    fs::write(&pack, bytes).unwrap();
    // Structure alone does not read data chunks.
    env.snap(&["check"]).assert().success();
    let pack_name = pack.file_name().unwrap().to_str().unwrap();
    env.snap(&["check", "--read-data"])
        .assert()
        .code(1)
        .stderr(predicate::str::contains(pack_name))
        .stdout(
            predicate::str::contains(format!("damaged snapshot {}", &sa[..8]))
                .and(predicate::str::contains("victim.bin"))
                .and(predicate::str::contains(&sb[..8]).not()),
        );
    assert_restores(&env, &sb, &b, &contents(&b));
}

/// Flips one byte in the middle of `pack` (inside the victim's data).
fn flip(pack: &Path) {
    let mut bytes = fs::read(pack).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x10;
    fs::write(pack, bytes).unwrap();
}

/// Backs `dir` up again reading every file; returns the raw bytes it stored.
fn forced_backup(env: &Env, dir: &Path) -> u64 {
    env.backup_json(&["--force", dir.to_str().unwrap()])["summary"]["bytes_added_raw"]
        .as_u64()
        .unwrap()
}

#[test]
fn damage_is_never_copied_forward_and_the_next_backup_heals_it() {
    // As a user following snap's advice: check finds the damage, repair index, then
    // a backup of the still-intact source.
    let env = Env::new();
    let (a, sa, _, _, pack) = two_snapshots(&env);
    flip(&pack);
    env.snap(&["check", "--read-data"]).assert().code(1);
    env.snap(&["repair", "index"]).assert().success().stderr(
        predicate::str::contains("salvaged").and(predicate::str::contains(
            pack.file_name().unwrap().to_str().unwrap(),
        )),
    );
    assert!(!pack.exists(), "the damaged pack is still there");
    // The victim's chunk is no longer in the index: the old snapshot is damaged.
    env.snap(&["check"])
        .assert()
        .code(1)
        .stdout(predicate::str::contains(&sa[..8]));
    let added = forced_backup(&env, &a);
    assert!(
        added > 0,
        "the backup deduplicated against the damaged blob"
    );
    // Healed: the old snapshot needs the same chunk ids, stored afresh.
    env.snap(&["check", "--read-data"]).assert().success();
    assert_restores(&env, &sa, &a, &contents(&a));
}

#[test]
fn repair_index_with_read_data_finds_damage_no_check_recorded() {
    let env = Env::new();
    let (a, sa, _, _, pack) = two_snapshots(&env);
    flip(&pack);
    // Without --read-data repair reads trailers only: the damage stays unknown.
    env.snap(&["repair", "index"]).assert().success();
    assert!(pack.exists());
    env.snap(&["repair", "index", "--read-data"])
        .assert()
        .success()
        .stderr(predicate::str::contains("1 damaged blobs dropped"));
    assert!(forced_backup(&env, &a) > 0);
    env.snap(&["check", "--read-data"]).assert().success();
    assert_restores(&env, &sa, &a, &contents(&a));
}

#[test]
fn a_backup_right_after_check_stores_damaged_data_afresh() {
    // check alone (no repair yet) takes the damaged copy out of this client's index:
    // the next backup does not reuse it, and its snapshot restores.
    let env = Env::new();
    let (a, _, _, _, pack) = two_snapshots(&env);
    flip(&pack);
    env.snap(&["check", "--read-data"]).assert().code(1);
    assert!(forced_backup(&env, &a) > 0);
    let id = env.snapshots().last().unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    assert_restores(&env, &id, &a, &contents(&a));
    // The damaged copy is still on disk until repair drops it.
    env.snap(&["check", "--read-data"]).assert().code(1);
    env.snap(&["repair", "index"]).assert().success();
    env.snap(&["check", "--read-data"]).assert().success();
}

#[test]
fn read_data_subset_runs_cover_every_pack_in_turn() {
    let env = Env::new();
    let (_, sa, _, _, pack) = two_snapshots(&env);
    let total = packs(&env.repo()).len();
    assert!(total >= 4, "{total} packs");
    let mut bytes = fs::read(&pack).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x01;
    fs::write(&pack, bytes).unwrap();
    // 25 % a run: the damaged pack, verified never, must come up within four runs,
    // and each run reads packs no earlier run read.
    let mut found = false;
    let mut read = 0;
    for _ in 0..4 {
        let out = env
            .snap(&["check", "--read-data-subset", "25%", "--json"])
            .output()
            .unwrap();
        let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        read += r["packs_read"].as_u64().unwrap();
        if !out.status.success() {
            assert!(r["damaged"][0]["id"].as_str().unwrap() == sa, "{r}");
            found = true;
            break;
        }
    }
    assert!(
        found,
        "four 25% runs did not reach the damaged pack ({read} packs read of {total})"
    );
}

#[test]
fn truncated_and_deleted_packs_and_a_deleted_index_are_found_and_named() {
    let env = Env::new();
    let (_, sa, b, sb, pack) = two_snapshots(&env);
    let name = pack.file_name().unwrap().to_str().unwrap().to_string();

    // Truncated: the trailer is gone, structure check alone sees it.
    let full = fs::read(&pack).unwrap();
    fs::write(&pack, &full[..full.len() / 2]).unwrap();
    env.snap(&["check"])
        .assert()
        .code(1)
        .stderr(predicate::str::contains(&name))
        .stdout(predicate::str::contains(&sa[..8]).and(predicate::str::contains("victim.bin")));
    assert_restores(&env, &sb, &b, &contents(&b));

    // Deleted: named as missing; after `repair index` the blobs are reported missing.
    fs::remove_file(&pack).unwrap();
    env.snap(&["check"])
        .assert()
        .code(1)
        .stderr(predicate::str::contains(format!("pack {name} is missing")));
    env.snap(&["repair", "index"]).assert().success();
    env.snap(&["check"])
        .assert()
        .code(1)
        .stderr(predicate::str::contains("in no pack of the index"))
        .stdout(predicate::str::contains(&sa[..8]).and(predicate::str::contains(&sb[..8]).not()));
    // prune refuses to delete anything in a damaged repository.
    env.snap(&["prune"])
        .assert()
        .code(1)
        .stderr(predicate::str::contains("nothing was deleted"));
    assert_restores(&env, &sb, &b, &contents(&b));

    // A deleted index cache is rebuilt from the index files.
    env.snap(&["forget", &sa]).assert().success();
    env.delete_index_cache_of(&env.repo());
    env.snap(&["check", "--read-data"]).assert().success();
    assert_restores(&env, &sb, &b, &contents(&b));

    // Deleted index files leave packs nobody lists: check names them and the
    // snapshot they break; repair index rewrites the index files from the packs.
    for f in fs::read_dir(env.repo().join("index")).unwrap() {
        fs::remove_file(f.unwrap().path()).unwrap();
    }
    env.snap(&["check"])
        .assert()
        .code(1)
        .stderr(predicate::str::contains("is not in the index"))
        .stdout(predicate::str::contains(&sb[..8]));
    env.snap(&["repair", "index"]).assert().success();
    env.snap(&["check", "--read-data"]).assert().success();
    assert_restores(&env, &sb, &b, &contents(&b));
}

#[test]
fn an_unreadable_snapshot_record_fails_check_and_stops_prune() {
    let env = Env::new();
    env.init();
    let src = env.path("src");
    fs::create_dir_all(&src).unwrap();
    fs::write(src.join("f"), random_bytes(1 << 20, "f")).unwrap();
    let id = env.backup_json(&[src.to_str().unwrap()])["id"]
        .as_str()
        .unwrap()
        .to_string();
    fs::write(env.repo().join("snapshots").join(&id), b"{ not json").unwrap();
    env.snap(&["check"])
        .assert()
        .code(1)
        .stderr(predicate::str::contains("snapshot record").and(predicate::str::contains(&id)));
    // With the index's verified copy of the record, prune knows what it needs; without
    // (a rebuilt index), it must stop.
    env.delete_index_cache_of(&env.repo());
    let before = packs(&env.repo());
    env.snap(&["prune", "--max-unused", "0%"])
        .assert()
        .code(1)
        .stderr(
            predicate::str::contains("cannot be read")
                .and(predicate::str::contains("nothing was deleted")),
        );
    assert_eq!(
        packs(&env.repo()),
        before,
        "prune deleted packs the record may need"
    );
}

#[test]
fn max_age_fails_when_the_newest_snapshot_is_too_old() {
    let env = Env::new();
    env.init();
    env.snap(&["check", "--max-age", "26h"])
        .assert()
        .code(1)
        .stderr(predicate::str::contains("no snapshot"));
    let src = env.path("src");
    fs::create_dir_all(&src).unwrap();
    env.backup_json(&[src.to_str().unwrap()]);
    env.snap(&["check", "--max-age", "26h"]).assert().success();
    env.snap(&["check", "--max-age", "1h", "--host", "elsewhere"])
        .assert()
        .code(1)
        .stderr(predicate::str::contains("of host elsewhere"));
    env.snap(&["check", "--max-age", "26"]).assert().code(2);
}

/// `snap --repo <repo> ARGS...` with its clock moved by `offset` (`+31m`, `-40m`) by
/// `faketime`; `None`, after a notice (a failure in CI), when faketime is missing.
fn at(env: &Env, offset: &str, args: &[&str]) -> Option<assert_cmd::Command> {
    if std::process::Command::new("faketime")
        .args(["-f", "+0", "true"])
        .status()
        .is_err()
    {
        crate::util::missing("faketime", "Debian: apt-get install faketime");
        return None;
    }
    let mut c = assert_cmd::Command::new("faketime");
    c.env("SNAP_CACHE_DIR", env.cache())
        .env_remove("SNAP_REPO")
        .args(["-f", offset])
        .arg(assert_cmd::cargo::cargo_bin("snap"))
        .arg("--repo")
        .arg(env.repo())
        .args(args);
    Some(c)
}

/// `--no-lock` reads without a lock file and refuses what writes.
#[test]
fn no_lock_reads_and_refuses_writes() {
    let env = Env::new();
    env.init();
    let src = env.path("src");
    fs::create_dir_all(&src).unwrap();
    fs::write(src.join("f"), b"read me").unwrap();
    env.backup_json(&[src.to_str().unwrap()]);
    let f = src.join("f");
    env.snap(&["--no-lock", "cat", "latest", f.to_str().unwrap()])
        .assert()
        .success()
        .stdout("read me");
    assert_eq!(fs::read_dir(env.repo().join("locks")).unwrap().count(), 0);
    for args in [
        &["backup", src.to_str().unwrap()][..],
        &["prune"][..],
        &["drill"][..],
    ] {
        env.snap(&[&["--no-lock"][..], args].concat())
            .assert()
            .failure()
            .stderr(predicate::str::contains("--no-lock only reads"));
    }
}

/// A snapshot dated ahead of this host's clock (another host's clock runs fast) does
/// not make the probe pass: it is named and not counted.
#[test]
fn max_age_does_not_count_a_snapshot_dated_ahead() {
    let env = Env::new();
    env.init();
    let src = env.path("src");
    fs::create_dir_all(&src).unwrap();
    env.backup_json(&[src.to_str().unwrap()]);
    let Some(mut ahead) = at(&env, "+365d", &["backup", src.to_str().unwrap()]) else {
        return;
    };
    ahead.assert().success();
    // A day later, by this host's clock: the snapshot of a year ahead is not fresh.
    at(&env, "+1d", &["check", "--max-age", "26h"])
        .unwrap()
        .assert()
        .success();
    at(&env, "+2d", &["check", "--max-age", "26h"])
        .unwrap()
        .assert()
        .code(1)
        .stderr(
            predicate::str::contains("ahead of this host's clock: it is not counted")
                .and(predicate::str::contains("older than the allowed 26h")),
        );
    // Of another host, whose only snapshot is ahead: not "nothing backed up".
    let Some(mut other) = at(
        &env,
        "+365d",
        &["backup", "--host", "fast", src.to_str().unwrap()],
    ) else {
        return;
    };
    other.assert().success();
    env.snap(&["check", "--max-age", "26h", "--host", "fast"])
        .assert()
        .code(1)
        .stderr(
            predicate::str::contains("no snapshot of host fast")
                .and(predicate::str::contains("1 snapshot ahead of it"))
                .and(predicate::str::contains("nothing is backed up").not()),
        );
}

#[test]
fn max_age_reads_minutes_as_minutes_and_refuses_unknown_units() {
    let env = Env::new();
    env.init();
    let src = env.path("src");
    fs::create_dir_all(&src).unwrap();
    env.backup_json(&[src.to_str().unwrap()]);
    let Some(mut late) = at(&env, "+31m", &["check", "--max-age", "30m"]) else {
        return;
    };
    late.assert()
        .code(1)
        .stderr(predicate::str::contains("older than the allowed 30min"));
    for (offset, span) in [("+29m", "30m"), ("+29m", "30min"), ("+89m", "1h30m")] {
        at(&env, offset, &["check", "--max-age", span])
            .unwrap()
            .assert()
            .success();
    }
    // What snap prints as an age reads back as the same span.
    at(&env, "+121m", &["check", "--max-age", "2h00m"])
        .unwrap()
        .assert()
        .code(1);
    for bad in ["30M", "30x", "", "1y6m"] {
        env.snap(&["check", "--max-age", bad])
            .assert()
            .code(2)
            .stderr(
                predicate::str::contains(format!("{bad:?}"))
                    .and(predicate::str::contains("mo or month(s), y or year(s)")),
            );
    }
}

#[test]
fn keep_within_and_profiles_read_the_same_spans() {
    let env = Env::new();
    env.init();
    let src = env.path("src");
    fs::create_dir_all(&src).unwrap();
    for offset in ["-50m", "-20m"] {
        let Some(mut backup) = at(&env, offset, &["backup", src.to_str().unwrap()]) else {
            return;
        };
        backup.assert().success();
    }
    env.backup_json(&[src.to_str().unwrap()]);
    let keep = |span: &str| -> Vec<bool> {
        let out = json(
            &env,
            &["forget", "--keep-within", span, "--dry-run", "--json"],
        );
        let mut keep: Vec<bool> = out["snapshots"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["keep"].as_bool().unwrap())
            .collect();
        keep.sort();
        keep
    };
    assert_eq!(keep("30min"), [false, true, true], "30 minutes, not months");
    assert_eq!(keep("1h"), [true, true, true]);
    assert_eq!(keep("10min"), [false, false, true]);
    // `30m`: months to a restic user, minutes elsewhere in snap: refused here.
    for bad in ["30M", "6m7d", "2x", "30m", "1h30m"] {
        env.snap(&["forget", "--keep-within", bad])
            .assert()
            .code(2)
            .stderr(predicate::str::contains(format!("{bad:?}")));
    }
    // A profile's keep_within is read by the same parser: a fourth backup, then the
    // 50-minute-old snapshot goes.
    let config = env.path("snap.toml");
    let profile = |within: &str| {
        format!(
            "[profile.p]\nrepository = \"{}\"\npaths = [\"{}\"]\n[profile.p.retention]\nkeep_within = \"{within}\"\n",
            env.repo().display(),
            src.display()
        )
    };
    let run = || {
        let mut c = crate::util::snap_bin();
        c.env("SNAP_CACHE_DIR", env.cache())
            .env_remove("SNAP_REPO")
            .env("SNAP_CONFIG", &config)
            .args(["run", "p"]);
        c
    };
    fs::write(&config, profile("30min")).unwrap();
    run().assert().success();
    assert_eq!(env.snapshots().len(), 3);
    fs::write(&config, profile("30M")).unwrap();
    run().assert().code(1).stderr(
        predicate::str::contains(config.display().to_string())
            .and(predicate::str::contains("line 5"))
            .and(predicate::str::contains(
                "30mo for months or 30min for minutes",
            )),
    );
    assert_eq!(env.snapshots().len(), 3, "nothing ran");
}

/// kill -9 of backup, forget --prune and prune at random moments: after each, check
/// --read-data passes and every snapshot there restores what was backed up; no
/// snapshot the policy keeps is ever lost. SNAP_FAULT_ITERATIONS (default 50) and
/// SNAP_FAULT_SEED make longer or other runs.
#[test]
fn kill_9_at_random_moments_loses_nothing() {
    let (iterations, seed, mut rng) = fault_run(50);
    let env = Env::new();
    env.init();
    let src = env.path("src");
    write_files(&src, "f", 4, 512 << 10, "s");
    let bin = assert_cmd::cargo::cargo_bin("snap");
    let mut want: HashMap<String, BTreeMap<String, Vec<u8>>> = HashMap::new();
    let (mut killed, mut finished) = (0, 0);
    // The longest wait before a kill, per kind of run (µs): it shrinks when runs
    // finish first and grows when they are killed, so kills land throughout a run.
    let mut typical = [200_000u64; 4];
    for i in 0..iterations {
        let before = ids(&env);
        let op = rng.below(4);
        let args: Vec<String> = match op {
            0 | 1 => {
                let f = rng.below(4);
                fs::write(
                    src.join(format!("f{f}")),
                    random_bytes(512 << 10, &format!("i{i}")),
                )
                .unwrap();
                vec!["backup".into(), src.to_str().unwrap().into()]
            }
            2 => [
                "forget",
                "--keep-last",
                "3",
                "--prune",
                "--max-unused",
                "0%",
            ]
            .map(String::from)
            .to_vec(),
            _ => ["prune", "--max-unused", "0%"].map(String::from).to_vec(),
        };
        let mut child = std::process::Command::new(&bin)
            .env("SNAP_CACHE_DIR", env.cache())
            .env_remove("SNAP_REPO")
            .arg("--repo")
            .arg(env.repo())
            .args(&args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let started = std::time::Instant::now();
        let kind = usize::try_from(op.max(1)).unwrap();
        std::thread::sleep(Duration::from_micros(rng.below(typical[kind])));
        if let Some(status) = child.try_wait().unwrap() {
            typical[kind] = u64::try_from(started.elapsed().as_micros())
                .unwrap()
                .max(1000);
            assert!(
                status.success(),
                "iteration {i} (seed {seed}): snap {args:?} failed"
            );
            finished += 1;
        } else {
            child.kill().unwrap();
            child.wait().unwrap();
            typical[kind] = typical[kind] * 3 / 2;
            killed += 1;
        }
        let after = ids(&env);
        for id in &after {
            if !want.contains_key(id) {
                assert!(
                    op < 2,
                    "iteration {i} (seed {seed}): snapshot {id} appeared from {args:?}"
                );
                want.insert(id.clone(), contents(&src));
            }
        }
        if op == 2 {
            let newest: Vec<&String> = before.iter().rev().take(3).collect();
            for id in newest {
                assert!(
                    after.contains(id),
                    "iteration {i} (seed {seed}): forget lost kept snapshot {id}"
                );
            }
        } else {
            for id in &before {
                assert!(
                    after.contains(id),
                    "iteration {i} (seed {seed}): {args:?} lost snapshot {id}"
                );
            }
        }
        let check = env.snap(&["check", "--read-data"]).output().unwrap();
        assert!(
            check.status.success(),
            "iteration {i} (seed {seed}) after {args:?}: check failed: {}{}",
            String::from_utf8_lossy(&check.stdout),
            String::from_utf8_lossy(&check.stderr)
        );
        for id in &after {
            assert_restores(&env, id, &src, &want[id]);
        }
    }
    eprintln!("fault test: {killed} killed, {finished} finished of {iterations} (seed {seed})");
    assert!(
        killed >= iterations / 5,
        "too few runs were interrupted: {killed}"
    );
    // Finally the garbage of all the interrupted runs goes.
    let report = json(&env, &["prune", "--max-unused", "0%", "--json"]);
    assert_eq!(report["bytes_unused_after"], 0, "{report}");
    env.snap(&["check", "--read-data"]).assert().success();
}

/// A small tmpfs, unmounted on drop.
struct Mount(PathBuf);

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg(&self.0).status();
    }
}

#[test]
fn disk_full_during_backup_is_a_clear_error_and_prune_reclaims_the_space() {
    let env = Env::new();
    let mnt = env.path("small");
    fs::create_dir_all(&mnt).unwrap();
    let ok = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=8m", "tmpfs"])
        .arg(&mnt)
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        crate::util::missing("a tmpfs mount", "run the tests as root");
        return;
    }
    let _guard = Mount(mnt.clone());
    let repo = mnt.join("repo");
    let snap = |args: &[&str]| {
        let mut c = crate::util::snap_bin();
        c.env_remove("SNAP_REPO")
            .arg("--repo")
            .arg(&repo)
            .args(args);
        c
    };
    snap(&["init"]).assert().success();
    let small = env.path("small-src");
    fs::create_dir_all(&small).unwrap();
    fs::write(small.join("a"), random_bytes(1 << 20, "a")).unwrap();
    snap(&["backup", small.to_str().unwrap()])
        .assert()
        .success();
    let used = du(&repo);

    let big = env.path("big-src");
    write_files(&big, "b", 3, 4 << 20, "b");
    snap(&["backup", big.to_str().unwrap()])
        .assert()
        .code(1)
        .stderr(
            predicate::str::contains("No space left on device")
                .and(predicate::str::contains("that file system is full")),
        );
    let out = snap(&["list", "--json"]).output().unwrap();
    let list: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        list.as_array().unwrap().len(),
        1,
        "no snapshot of the failed backup"
    );
    snap(&["check", "--read-data"]).assert().success();
    snap(&["prune"]).assert().success();
    let left = du(&repo);
    assert!(
        left <= used + (1 << 20),
        "prune left {left} bytes, {used} before the failed backup"
    );
    // And the space is usable again.
    fs::write(small.join("b"), random_bytes(1 << 20, "b")).unwrap();
    snap(&["backup", small.to_str().unwrap()])
        .assert()
        .success();
    snap(&["check", "--read-data"]).assert().success();
}
