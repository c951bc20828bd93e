//! Encrypted repositories through the real binary: nothing readable at rest, every
//! altered file detected and named, passphrases managed without losing access.

use std::fs;
use std::path::{Path, PathBuf};

use predicates::prelude::*;

use crate::util::{json, random_bytes, restored, Env};

const PASS: &str = "correct horse battery staple";

/// `snap --repo <repo> ARGS` with passphrase `pass`.
fn snap(env: &Env, pass: &str, args: &[&str]) -> assert_cmd::Command {
    let mut c = env.snap(args);
    c.env("SNAP_PASSWORD", pass)
        .env_remove("SNAP_PASSWORD_FILE")
        .env_remove("SNAP_KEY_FILE");
    c
}

fn files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(files(&p));
        } else {
            out.push(p);
        }
    }
    out.sort();
    out
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

/// Restores the latest snapshot and asserts it holds `src` as it is.
fn assert_restores(env: &Env, src: &Path) {
    assert_restores_as(env, PASS, src);
}

/// [`assert_restores`] with passphrase `pass`.
fn assert_restores_as(env: &Env, pass: &str, src: &Path) {
    let out = env.path("out");
    snap(
        env,
        pass,
        &["restore", "latest", "--target", out.to_str().unwrap()],
    )
    .assert()
    .success();
    crate::util::assert_same_tree(src, &restored(&out, src));
    fs::remove_dir_all(&out).unwrap();
}

/// An encrypted repository with one snapshot of `src`: a marker-filled text file with
/// a marker name, random data, and a command's output.
fn encrypted(env: &Env) -> PathBuf {
    snap(env, PASS, &["init", "--encrypt"])
        .assert()
        .success()
        .stderr(predicate::str::contains("snap key export"));
    let src = env.path("src");
    fs::create_dir_all(&src).unwrap();
    fs::write(
        src.join("plainname-marker.txt"),
        "PLAINTEXT-MARKER ".repeat(4000),
    )
    .unwrap();
    fs::write(src.join("rand.bin"), random_bytes(3 << 20, "enc")).unwrap();
    backup_sources(env, &src);
    src
}

/// Backs up `src` and the stream of [`encrypted`] together (one group).
fn backup_sources(env: &Env, src: &Path) {
    snap(
        env,
        PASS,
        &[
            "backup",
            src.to_str().unwrap(),
            "--command",
            "echo STREAM-MARKER-42",
            "--as",
            "db/streamname-marker.sql",
        ],
    )
    .assert()
    .success();
}

/// [`encrypted`], with a second key file, for passphrase `second`.
fn with_second_key(env: &Env) -> PathBuf {
    let src = encrypted(env);
    snap(env, PASS, &["key", "add"])
        .env("SNAP_NEW_PASSWORD", "second")
        .assert()
        .success();
    src
}

#[test]
fn no_plaintext_of_the_sources_is_anywhere_in_the_repository() {
    let env = Env::new();
    let src = encrypted(&env);
    snap(&env, PASS, &["check", "--read-data"])
        .assert()
        .success();
    let text = fs::read(src.join("plainname-marker.txt")).unwrap();
    let needles: Vec<Vec<u8>> = vec![
        b"PLAINTEXT-MARKER".to_vec(),
        b"plainname-marker".to_vec(),
        b"STREAM-MARKER-42".to_vec(),
        b"streamname-marker".to_vec(),
        src.to_str().unwrap().as_bytes().to_vec(),
        // The unkeyed id of the text file's one chunk, raw and as hex.
        blake3::hash(&text).as_bytes().to_vec(),
        blake3::hash(&text).to_hex().as_bytes().to_vec(),
    ];
    let mut all = files(&env.repo());
    all.extend(files(&env.cache()));
    assert!(all.iter().any(|p| p.ends_with("index.sqlite")));
    for f in &all {
        let b = fs::read(f).unwrap();
        for n in &needles {
            assert!(
                !contains(&b, n),
                "{} holds {:?}",
                f.display(),
                String::from_utf8_lossy(n)
            );
        }
    }
    // The same data unencrypted does show its ids: the scan can find things.
    let plain = Env::new();
    plain.init();
    plain.backup_json(&[src.to_str().unwrap()]);
    let id = blake3::hash(&text);
    assert!(files(&plain.repo())
        .iter()
        .any(|f| contains(&fs::read(f).unwrap(), id.as_bytes())));

    assert_restores(&env, &src);
}

#[test]
fn a_wrong_or_missing_passphrase_is_a_clear_error_and_writes_nothing() {
    let env = Env::new();
    encrypted(&env);
    let out = env.path("out");
    snap(
        &env,
        "wrong",
        &["restore", "latest", "--target", out.to_str().unwrap()],
    )
    .assert()
    .code(1)
    .stderr(predicate::str::contains("wrong passphrase"));
    assert!(!out.exists(), "a failed unlock wrote to the target");
    let mut c = env.snap(&["list"]);
    c.env_remove("SNAP_PASSWORD")
        .env_remove("SNAP_PASSWORD_FILE")
        .env_remove("SNAP_KEY_FILE")
        .assert()
        .code(1)
        .stderr(predicate::str::contains("set SNAP_PASSWORD"));
    // A passphrase file works like the variable.
    let pw = env.path("pw");
    fs::write(&pw, format!("{PASS}\n")).unwrap();
    let mut c = env.snap(&["list"]);
    c.env_remove("SNAP_PASSWORD")
        .env("SNAP_PASSWORD_FILE", &pw)
        .assert()
        .success()
        .stdout(predicate::str::ends_with("\n1 snapshot\n"));
}

#[test]
fn a_flipped_bit_in_any_repository_file_is_detected_and_named() {
    let env = Env::new();
    encrypted(&env);
    snap(&env, PASS, &["check", "--read-data"])
        .assert()
        .success();
    let repo = env.repo();
    let targets: Vec<PathBuf> = files(&repo)
        .into_iter()
        .filter(|p| {
            let rel = p.strip_prefix(&repo).unwrap();
            rel == Path::new("config")
                || ["packs", "snapshots", "keys"]
                    .iter()
                    .any(|d| rel.starts_with(d))
        })
        .collect();
    assert!(targets.len() >= 5, "{targets:?}");
    for f in targets {
        let good = fs::read(&f).unwrap();
        for at in [good.len() / 2, 20, good.len() - 3] {
            let mut bad = good.clone();
            bad[at] ^= 0x04;
            fs::write(&f, &bad).unwrap();
            let out = snap(&env, PASS, &["check", "--read-data"])
                .output()
                .unwrap();
            let said = format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
            let name = f.file_name().unwrap().to_str().unwrap();
            let name = name.strip_suffix(".json").unwrap_or(name);
            assert!(
                !out.status.success() && said.contains(name),
                "bit flip at {at} of {} went unnoticed or unnamed: {said}",
                f.display()
            );
            fs::write(&f, &good).unwrap();
        }
    }
    snap(&env, PASS, &["check", "--read-data"])
        .assert()
        .success();
}

#[test]
fn keys_add_list_remove_passwd_and_export_round_trip() {
    let env = Env::new();
    let src = with_second_key(&env);
    let list = snap(&env, "second", &["key", "list"]).output().unwrap();
    let text = String::from_utf8_lossy(&list.stdout).to_string();
    let ids: Vec<(bool, String)> = text
        .lines()
        .skip(1)
        .map(|l| (l.starts_with('*'), l[2..18].to_string()))
        .collect();
    assert_eq!(ids.len(), 2, "{text}");
    let first = ids.iter().find(|(cur, _)| !cur).unwrap().1.clone();
    let second = ids.iter().find(|(cur, _)| *cur).unwrap().1.clone();
    // An empty new passphrase (an unset variable in a script) is refused, as by init.
    for cmd in ["add", "passwd"] {
        snap(&env, "second", &["key", cmd])
            .env("SNAP_NEW_PASSWORD", "")
            .assert()
            .code(1)
            .stderr(predicate::str::contains(
                "an empty passphrase is not allowed",
            ));
    }
    // The key in use cannot be removed; the other can.
    snap(&env, "second", &["key", "remove", &second])
        .assert()
        .code(1)
        .stderr(predicate::str::contains("in use"));
    snap(&env, "second", &["key", "remove", &first])
        .assert()
        .success();
    snap(&env, PASS, &["list"])
        .assert()
        .code(1)
        .stderr(predicate::str::contains("wrong passphrase"));
    // The last key cannot be removed, even by its own name from an exported key.
    let exported = env.path("master.key");
    snap(
        &env,
        "second",
        &["key", "export", exported.to_str().unwrap()],
    )
    .assert()
    .success();
    snap(
        &env,
        "second",
        &["key", "export", exported.to_str().unwrap()],
    )
    .assert()
    .code(1);
    let mut c = env.snap(&["key", "remove", &second]);
    c.env_remove("SNAP_PASSWORD")
        .env("SNAP_KEY_FILE", &exported)
        .assert()
        .code(1)
        .stderr(predicate::str::contains("last key"));
    // passwd replaces the passphrase in use.
    snap(&env, "second", &["key", "passwd"])
        .env("SNAP_NEW_PASSWORD", "third")
        .assert()
        .success();
    snap(&env, "second", &["list"]).assert().code(1);
    snap(&env, "third", &["list"]).assert().success();
    // With every passphrase forgotten, the exported key still reads everything.
    let out = env.path("out");
    let mut c = env.snap(&["restore", "latest", "--target", out.to_str().unwrap()]);
    c.env_remove("SNAP_PASSWORD")
        .env("SNAP_KEY_FILE", &exported)
        .assert()
        .success();
    crate::util::assert_same_tree(&src, &restored(&out, &src));
    // Another repository's key is refused by name.
    let other = Env::new();
    snap(&other, "x", &["init", "--encrypt"]).assert().success();
    let mut c = other.snap(&["list"]);
    c.env_remove("SNAP_PASSWORD")
        .env("SNAP_KEY_FILE", &exported)
        .assert()
        .code(1)
        .stderr(predicate::str::contains("is for repository"));
}

#[test]
fn a_damaged_key_file_locks_out_only_its_own_passphrase_and_check_names_it() {
    let env = Env::new();
    let src = with_second_key(&env);
    let listed = json(snap(&env, "second", &["key", "list", "--json"]));
    let ids: Vec<(String, bool)> = listed
        .as_array()
        .unwrap()
        .iter()
        .map(|k| (k["id"].as_str().unwrap().to_string(), k["current"] == true))
        .collect();
    // The key file read first (ids in order) is damaged, so that an unlock stopping at
    // it fails; its passphrase is `lost`, the other's `kept`.
    let (other, second_is_damaged) = ids.iter().min().unwrap().clone();
    let (lost, kept) = if second_is_damaged {
        ("second", PASS)
    } else {
        (PASS, "second")
    };
    let path = env.repo().join(format!("keys/{other}.json"));
    let text = fs::read_to_string(&path).unwrap();
    fs::write(&path, text.replace("\"wrapped\"", "\"wrappeX\"")).unwrap();
    // A new cache, which has no hint of the key file that opened last: the first run
    // reads every key file in order.
    let fresh = env.path("cache-2");
    for args in [&["list"][..], &["backup", src.to_str().unwrap()]] {
        snap(&env, kept, args)
            .env("SNAP_CACHE_DIR", &fresh)
            .assert()
            .success();
    }
    assert_restores_as(&env, kept, &src);
    // The damaged one's own passphrase is refused, naming it.
    snap(&env, lost, &["list"])
        .assert()
        .code(1)
        .stderr(predicate::str::contains(other.as_str()));
    snap(&env, kept, &["check"])
        .assert()
        .code(1)
        .stderr(predicate::str::contains(format!("key remove {other}")));
    let listed = json(snap(&env, kept, &["key", "list", "--json"]));
    let damaged = listed
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["id"] == other.as_str())
        .unwrap();
    assert!(
        damaged["damaged"].as_str().unwrap().contains("wrapped"),
        "{listed}"
    );
    snap(&env, kept, &["key", "remove", &other])
        .assert()
        .success();
    snap(&env, kept, &["check"]).assert().success();
}

#[test]
fn a_repository_whose_only_snapshot_record_is_damaged_is_not_called_empty() {
    let env = Env::new();
    encrypted(&env);
    let record = files(&env.repo().join("snapshots")).pop().unwrap();
    let mut bytes = fs::read(&record).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 1;
    fs::write(&record, bytes).unwrap();
    let id = record.file_name().unwrap().to_str().unwrap().to_string();
    // A new cache, which reads the record from the repository.
    let out = env.path("out");
    let o = snap(
        &env,
        PASS,
        &[
            "restore",
            "latest",
            "--target",
            out.to_str().unwrap(),
            "--json",
        ],
    )
    .env("SNAP_CACHE_DIR", env.path("cache-2"))
    .output()
    .unwrap();
    let said = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{said}");
    assert!(
        said.contains(&id) && said.contains("cannot be read") && !said.contains("snap backup"),
        "{said}"
    );
    let doc = serde_json::from_slice::<serde_json::Value>(&o.stdout).unwrap();
    assert_eq!(doc["error"]["kind"], "damaged", "{doc}");
}

#[test]
fn an_encrypted_repository_is_pruned_and_repaired_like_any_other() {
    let env = Env::new();
    let src = encrypted(&env);
    fs::remove_file(src.join("rand.bin")).unwrap();
    fs::write(src.join("new.bin"), random_bytes(1 << 20, "new")).unwrap();
    snap(&env, PASS, &["backup", src.to_str().unwrap()])
        .assert()
        .success();
    snap(
        &env,
        PASS,
        &[
            "forget",
            "--keep-last",
            "1",
            "--prune",
            "--max-unused",
            "0%",
        ],
    )
    .assert()
    .success();
    env.delete_index_cache_of(&env.repo());
    snap(&env, PASS, &["repair", "index"]).assert().success();
    snap(&env, PASS, &["check", "--read-data"])
        .assert()
        .success();
    assert_restores(&env, &src);
}

/// `snap --repo REPO ARGS` with passphrase `pass`.
fn snap_at(repo: &Path, pass: &str, args: &[&str]) -> assert_cmd::Command {
    let mut c = crate::util::snap_bin();
    c.env_remove("SNAP_REPO")
        .env("SNAP_PASSWORD", pass)
        .arg("--repo")
        .arg(repo)
        .args(args);
    c
}

#[test]
fn sync_into_a_repository_with_another_key_rewrites_and_later_reads_only_new_chunks() {
    const OTHER: &str = "another passphrase for the offsite copy";
    let env = Env::new();
    let src = encrypted(&env);
    let dest = env.path("offsite");
    let to = dest.to_str().unwrap();
    snap_at(&dest, OTHER, &["init", "--encrypt"])
        .assert()
        .success();
    let sync = |to_pass: Option<&str>| {
        let mut c = snap(&env, PASS, &["sync", "--to", to, "--json"]);
        c.env_remove("SNAP_TO_PASSWORD")
            .env_remove("SNAP_TO_PASSWORD_FILE")
            .env_remove("SNAP_TO_KEY_FILE");
        if let Some(p) = to_pass {
            c.env("SNAP_TO_PASSWORD", p);
        }
        c
    };
    // The destination's own passphrase is needed, and a wrong one is refused.
    sync(None)
        .assert()
        .code(1)
        .stderr(predicate::str::contains("SNAP_TO_PASSWORD").and(predicate::str::contains(to)));
    sync(Some(PASS))
        .assert()
        .code(1)
        .stderr(predicate::str::contains("passphrase").and(predicate::str::contains(to)));
    assert!(
        json(snap_at(&dest, OTHER, &["list", "--json"]))
            .as_array()
            .unwrap()
            .is_empty(),
        "a refused sync wrote no snapshot"
    );

    let first = json(sync(Some(OTHER)));
    assert_eq!(
        (&first["rewritten"], &first["snapshots_sent"]),
        (&serde_json::json!(true), &serde_json::json!(1)),
        "{first}"
    );
    assert!(first["chunks_read"].as_u64().unwrap() > 2, "{first}");
    let here = json(snap(&env, PASS, &["list", "--json"]));
    let there = json(snap_at(&dest, OTHER, &["list", "--json"]));
    assert_eq!(there[0]["original"], here[0]["id"], "{there}");
    assert_ne!(
        there[0]["tree"], here[0]["tree"],
        "blob ids are keyed per repository"
    );
    snap_at(&dest, OTHER, &["check", "--read-data"])
        .assert()
        .success();
    let restores_same = || {
        let out = env.path("out");
        snap_at(
            &dest,
            OTHER,
            &["restore", "latest", "--target", out.to_str().unwrap()],
        )
        .assert()
        .success();
        crate::util::assert_same_tree(&src, &restored(&out, &src));
        fs::remove_dir_all(&out).unwrap();
    };
    restores_same();
    for f in files(&dest) {
        let b = fs::read(&f).unwrap();
        for n in [
            &b"PLAINTEXT-MARKER"[..],
            b"plainname-marker",
            b"STREAM-MARKER-42",
        ] {
            assert!(!contains(&b, n), "{} holds plaintext", f.display());
        }
    }

    // Nothing new: nothing read. One new small file: one chunk read.
    let again = json(sync(Some(OTHER)));
    assert_eq!(
        (&again["snapshots_sent"], &again["chunks_read"]),
        (&serde_json::json!(0), &serde_json::json!(0)),
        "{again}"
    );
    fs::write(src.join("new.txt"), "a new small file\n").unwrap();
    // The same sources as the first, so that forgetting that one is retention's work.
    backup_sources(&env, &src);
    let next = json(sync(Some(OTHER)));
    assert_eq!(
        (&next["snapshots_sent"], &next["chunks_read"]),
        (&serde_json::json!(1), &serde_json::json!(1)),
        "only the new file's chunk is read: {next}"
    );
    let there = json(snap_at(&dest, OTHER, &["list", "--json"]));
    assert_eq!(
        there[1]["parent"], there[0]["id"],
        "a copy's parent is the copy of its source's parent: {there}"
    );
    restores_same();

    // Forget the first snapshot here: --delete removes its copy and prunes.
    let first_id = here[0]["id"].as_str().unwrap();
    snap(&env, PASS, &["forget", first_id]).assert().success();
    let mirrored = json(sync(Some(OTHER)).arg("--delete"));
    assert_eq!(mirrored["deleted"][0], 1, "{mirrored}");
    let there = json(snap_at(&dest, OTHER, &["list", "--json"]));
    assert_eq!(there.as_array().unwrap().len(), 1, "{there}");
    assert_ne!(there[0]["original"].as_str(), Some(first_id));
    snap_at(&dest, OTHER, &["check", "--read-data"])
        .assert()
        .success();
}

/// `snap --repo REPO ARGS` with passphrase [`PASS`] and `env`'s index caches.
fn snap_in(env: &Env, repo: &Path, args: &[&str]) -> assert_cmd::Command {
    let mut c = snap_at(repo, PASS, args);
    c.env("SNAP_CACHE_DIR", env.cache())
        .env_remove("SNAP_PASSWORD_FILE")
        .env_remove("SNAP_KEY_FILE");
    c
}

/// Backs `data` up into `repo` as the stream `db.sql` (the `dump` profile).
fn backup_stream(env: &Env, repo: &Path, data: &[u8]) -> serde_json::Value {
    let mut c = snap_in(env, repo, &["backup", "--stdin-name", "db.sql", "--json"]);
    c.write_stdin(data.to_vec());
    json(c)
}

/// The raw lengths of the data chunks in `repo`, sorted, as the key holder's index
/// cache lists them.
fn chunk_lengths(env: &Env, repo: &Path) -> Vec<usize> {
    let db = rusqlite::Connection::open(env.index_cache_of(repo)).unwrap();
    let mut q = db
        .prepare(
            "SELECT raw_len FROM (SELECT raw_len, kind FROM blobs
                                  UNION ALL SELECT raw_len, kind FROM fresh)
              WHERE kind = 0 ORDER BY raw_len",
        )
        .unwrap();
    let lens = q.query_map([], |r| r.get(0)).unwrap();
    lens.map(Result::unwrap).collect()
}

/// The chunk lengths anyone holding `data` computes with FastCDC's public table and
/// the default `dump` profile, sorted.
fn public_lengths(data: &[u8]) -> Vec<usize> {
    let mut l: Vec<usize> = fastcdc::v2020::FastCDC::new(data, 4 << 10, 16 << 10, 64 << 10)
        .map(|c| c.length)
        .collect();
    l.sort();
    l
}

/// How many of `a`'s lengths `b` also has (as multisets).
fn shared(a: &[usize], b: &[usize]) -> usize {
    let mut left: std::collections::HashMap<usize, usize> = std::collections::HashMap::default();
    for l in b {
        *left.entry(*l).or_default() += 1;
    }
    let mut n = 0;
    for l in a {
        if let Some(k) = left.get_mut(l).filter(|k| **k > 0) {
            *k -= 1;
            n += 1;
        }
    }
    n
}

#[test]
fn a_keyed_chunker_hides_cut_points_and_still_dedups_within_the_repository() {
    let env = Env::new();
    let data = random_bytes(4 << 20, "candidate file");
    let (a, b) = (env.path("a"), env.path("b"));
    for r in [&a, &b] {
        snap_in(&env, r, &["init", "--encrypt"]).assert().success();
        let config: serde_json::Value =
            serde_json::from_slice(&fs::read(r.join("config")).unwrap()).unwrap();
        assert_eq!(
            config["version"], 3,
            "a new encrypted repository is version 3"
        );
    }
    backup_stream(&env, &a, &data);
    let again = backup_stream(&env, &a, &data);
    let added = again["summary"]["bytes_added"].as_u64().unwrap();
    assert!(added < 16 << 10, "the same data again added {added} bytes");
    backup_stream(&env, &b, &data);
    let (la, lb) = (chunk_lengths(&env, &a), chunk_lengths(&env, &b));
    let public = public_lengths(&data);
    assert_eq!(la.iter().sum::<usize>(), data.len(), "stored once");
    assert_eq!(lb.iter().sum::<usize>(), data.len());
    // An attacker with the candidate file computes `public`: it does not match what
    // either repository stores, and the two repositories do not match each other.
    for (what, x, y) in [
        ("public table", &la, &public),
        ("public table", &lb, &public),
        ("other repository", &la, &lb),
    ] {
        let n = shared(x, y);
        assert!(
            n * 10 < x.len(),
            "{n} of {} chunk lengths as the {what} predicts",
            x.len()
        );
    }
    snap_in(&env, &a, &["check", "--read-data"])
        .assert()
        .success();
    let out = snap_in(&env, &b, &["cat", "latest", "db.sql"])
        .output()
        .unwrap();
    assert!(out.stdout == data, "the stream restores");
    // A copy with the same id and key (what `sync` into an empty directory makes)
    // holds the packs as they are and cuts as the original does: a backup there adds
    // nothing. (Its own cache: two repositories with one id share one.)
    let copy = env.path("copy");
    let cp = std::process::Command::new("cp")
        .arg("-a")
        .arg(&a)
        .arg(&copy)
        .status()
        .unwrap();
    assert!(cp.success());
    let there = || {
        let mut c = snap_in(&env, &copy, &["backup", "--stdin-name", "db.sql", "--json"]);
        c.env("SNAP_CACHE_DIR", env.path("copy-cache"))
            .write_stdin(data.clone());
        json(c)
    };
    assert!(there()["summary"]["bytes_added"].as_u64().unwrap() < 16 << 10);
}

/// Rewrites the encrypted repository at `repo` into a version 2 one, as versions
/// before the keyed chunker wrote it: the sealed config and its outside say 2.
fn downgrade_to_version_2(env: &Env, repo: &Path) {
    use chacha20poly1305::aead::{Aead, KeyInit, Payload};
    use chacha20poly1305::{XChaCha20Poly1305, XNonce};
    let exported = env.path("v2.key");
    snap_in(env, repo, &["key", "export", exported.to_str().unwrap()])
        .assert()
        .success();
    let key: serde_json::Value = serde_json::from_slice(&fs::read(&exported).unwrap()).unwrap();
    let key = hex::decode(key["key"].as_str().unwrap()).unwrap();
    let cipher = XChaCha20Poly1305::new_from_slice(&key[..32]).unwrap();
    let path = repo.join("config");
    let mut outer: serde_json::Value = serde_json::from_slice(&fs::read(&path).unwrap()).unwrap();
    let sealed = hex::decode(outer["sealed"].as_str().unwrap()).unwrap();
    let aad = b"snap config";
    let (nonce, body) = sealed.split_at(24);
    let plain = cipher
        .decrypt(XNonce::from_slice(nonce), Payload { msg: body, aad })
        .unwrap();
    let mut inner: serde_json::Value = serde_json::from_slice(&plain).unwrap();
    assert_eq!(inner["version"], 3);
    inner["version"] = 2.into();
    let mut resealed = nonce.to_vec();
    let msg = serde_json::to_vec_pretty(&inner).unwrap();
    resealed.extend(
        cipher
            .encrypt(XNonce::from_slice(nonce), Payload { msg: &msg, aad })
            .unwrap(),
    );
    outer["version"] = 2.into();
    outer["sealed"] = hex::encode(resealed).into();
    fs::write(&path, serde_json::to_vec_pretty(&outer).unwrap()).unwrap();
}

#[test]
fn a_version_2_repository_keeps_the_public_chunker_backs_up_and_restores() {
    let env = Env::new();
    let repo = env.repo();
    snap_in(&env, &repo, &["init", "--encrypt"])
        .assert()
        .success();
    downgrade_to_version_2(&env, &repo);
    let data = random_bytes(2 << 20, "old repository");
    backup_stream(&env, &repo, &data);
    // Its chunks are cut as they always were, so they dedup against its history.
    assert_eq!(chunk_lengths(&env, &repo), public_lengths(&data));
    let again = backup_stream(&env, &repo, &data);
    assert!(again["summary"]["bytes_added"].as_u64().unwrap() < 16 << 10);
    let src = env.path("src");
    fs::create_dir_all(&src).unwrap();
    fs::write(src.join("rand.bin"), random_bytes(3 << 20, "v2 files")).unwrap();
    snap(&env, PASS, &["backup", src.to_str().unwrap()])
        .assert()
        .success();
    assert_restores(&env, &src);
    snap(&env, PASS, &["check", "--read-data"])
        .assert()
        .success();
    let config: serde_json::Value =
        serde_json::from_slice(&fs::read(repo.join("config")).unwrap()).unwrap();
    assert_eq!(config["version"], 2, "an old repository stays version 2");
}

#[test]
fn sync_dry_run_into_a_repository_with_another_key_names_the_snapshots_to_rewrite() {
    const OTHER: &str = "the offsite copy's own passphrase";
    let env = Env::new();
    encrypted(&env);
    let here = json(snap(&env, PASS, &["list", "--json"]));
    let dest = env.path("offsite");
    let to = dest.to_str().unwrap();
    snap_at(&dest, OTHER, &["init", "--encrypt"])
        .assert()
        .success();
    let sync = |args: &[&str]| {
        let mut c = snap(
            &env,
            PASS,
            &[&["sync", "--to", to, "--json"], args].concat(),
        );
        c.env_remove("SNAP_TO_PASSWORD_FILE")
            .env_remove("SNAP_TO_KEY_FILE")
            .env("SNAP_TO_PASSWORD", OTHER);
        c
    };
    let there = || json(snap_at(&dest, OTHER, &["list", "--json"]));

    let plan = json(sync(&["--dry-run"]));
    assert_eq!(
        (&plan["dry_run"], &plan["rewritten"], &plan["create"]),
        (
            &serde_json::json!(true),
            &serde_json::json!(true),
            &serde_json::json!(false)
        ),
        "{plan}"
    );
    assert_eq!(plan["snapshots"][0], here[0]["id"], "{plan}");
    assert_eq!(plan["snapshots_to_send"], 1, "{plan}");
    assert_eq!(
        plan["bytes_to_send"],
        serde_json::Value::Null,
        "rewritten sizes are not known before the chunks are read: {plan}"
    );
    assert!(
        there().as_array().unwrap().is_empty(),
        "a dry run rewrites nothing"
    );
    assert!(
        fs::read_dir(dest.join("locks")).unwrap().next().is_none(),
        "a dry run leaves no lock behind"
    );

    let real = json(sync(&[]));
    assert_eq!(real["snapshots_sent"], plan["snapshots_to_send"], "{real}");
    assert_eq!(there()[0]["original"], here[0]["id"]);
    let again = json(sync(&["--dry-run"]));
    assert_eq!(
        (&again["snapshots_to_send"], &again["snapshots_present"]),
        (&serde_json::json!(0), &serde_json::json!(1)),
        "{again}"
    );
}

/// A profile that names a `password_file`: `snap init` seals its repository with that
/// passphrase (it made a plaintext one), and a plaintext repository under such a
/// profile is named in a warning.
#[test]
fn a_profiles_password_file_encrypts_the_repository_it_inits() {
    let env = Env::new();
    let src = env.path("src");
    fs::create_dir_all(&src).unwrap();
    fs::write(src.join("secret.txt"), b"profile plaintext marker").unwrap();
    let pass = env.path("pass");
    fs::write(&pass, format!("{PASS}\n")).unwrap();
    let config = env.path("snap.toml");
    let profile = |repo: &Path| {
        format!(
            "default = \"p\"\n[profile.p]\nrepository = \"{}\"\npassword_file = \"{}\"\npaths = [\"{}\"]\n",
            repo.display(),
            pass.display(),
            src.display()
        )
    };
    let with_config = |args: &[&str]| {
        let mut c = crate::util::snap_bin();
        c.env_remove("SNAP_REPO")
            .env_remove("SNAP_PASSWORD")
            .env_remove("SNAP_PASSWORD_FILE")
            .env("SNAP_CACHE_DIR", env.cache())
            .env("SNAP_CONFIG", &config)
            .args(args);
        c
    };
    let repo = env.path("sealed");
    fs::write(&config, profile(&repo)).unwrap();
    let made = json(with_config(&["init", "--json"]));
    assert_eq!(made["encrypted"], true, "{made}");
    with_config(&["run"]).assert().success();
    for f in files(&repo) {
        assert!(
            !contains(&fs::read(&f).unwrap(), b"profile plaintext marker"),
            "{f:?}"
        );
    }
    // Without the profile's file, SNAP_PASSWORD opens it: the same passphrase.
    crate::util::snap_bin()
        .env("SNAP_PASSWORD", PASS)
        .env("SNAP_CACHE_DIR", env.cache())
        .args(["--repo", repo.to_str().unwrap(), "list"])
        .assert()
        .success();
    // A plaintext repository under a profile with a password_file: said.
    let plain = env.path("plain");
    crate::util::snap_bin()
        .args(["--repo", plain.to_str().unwrap(), "init"])
        .assert()
        .success();
    fs::write(&config, profile(&plain)).unwrap();
    with_config(&["run"])
        .assert()
        .success()
        .stderr(predicate::str::contains("is not encrypted"));
}
