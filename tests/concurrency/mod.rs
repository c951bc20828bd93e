//! Concurrent writers: backups racing `forget --prune` in other processes, on one
//! local repository, and on one S3 bucket (Garage) where two "hosts" (own caches) back
//! up at once and a third prunes, must never record a snapshot that cannot be
//! restored nor lose one that is not forgotten.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use crate::util::garage::Garage;
use crate::util::{random_bytes, walk, Env};

/// Rounds of backup against prune; `SNAP_RACE_ROUNDS` runs more.
fn rounds() -> u32 {
    std::env::var("SNAP_RACE_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(24)
}

/// One client of the repository: where it is, its environment and its own cache.
#[derive(Clone)]
struct Client {
    repo: String,
    cache: PathBuf,
    env: Vec<(&'static str, String)>,
}

impl Client {
    fn run(&self, args: &[&str]) -> std::process::Output {
        let mut c = crate::util::snap_bin();
        c.env_remove("SNAP_REPO")
            .env("SNAP_CACHE_DIR", &self.cache)
            .envs(self.env.iter().map(|(k, v)| (*k, v.as_str())))
            .arg("--repo")
            .arg(&self.repo)
            .args(args);
        c.output().unwrap()
    }

    /// Runs `args`, which must succeed.
    fn ok(&self, args: &[&str]) -> std::process::Output {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "snap {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        out
    }

    /// Backs up `src` as host `h`: the report, and what the run wrote to stderr.
    fn backup_as_h(&self, src: &Path) -> (serde_json::Value, String) {
        let out = self.ok(&["backup", "--json", "--host", "h", src.to_str().unwrap()]);
        let report = serde_json::from_slice(&out.stdout).unwrap();
        (report, String::from_utf8_lossy(&out.stderr).into_owned())
    }

    /// Prunes every pack with garbage in it; panics unless some pack was deleted.
    fn prune_deleting(&self) {
        let out = self.ok(&["prune", "--max-unused", "0", "--json"]);
        let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert!(report["packs_deleted"].as_u64().unwrap() > 0, "{report}");
    }

    /// Runs `args` until no other process's lock stands in its way (for two minutes at
    /// most); returns its output, successful or not for another reason.
    fn run_through_locks(&self, args: &[&str]) -> std::process::Output {
        let start = std::time::Instant::now();
        loop {
            let out = self.run(args);
            let err = String::from_utf8_lossy(&out.stderr);
            if out.status.success() || !err.contains("is locked by") {
                return out;
            }
            assert!(
                start.elapsed() < Duration::from_secs(120),
                "snap {args:?} found the repository locked for two minutes: {err}"
            );
            // Jittered, or two processes that refuse each other retry in step forever.
            let jitter = u64::from(
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap()
                    .subsec_nanos(),
            ) % 40;
            std::thread::sleep(Duration::from_millis(10 + jitter));
        }
    }
}

/// The content of every file below `dir`, by name, as a hash.
fn contents(dir: &Path) -> BTreeMap<String, String> {
    fs::read_dir(dir)
        .unwrap()
        .map(|e| {
            let p = e.unwrap().path();
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            (
                name,
                blake3::hash(&fs::read(&p).unwrap()).to_hex().to_string(),
            )
        })
        .collect()
}

/// Changes the source for `round`: one of six files rewritten, a file added and an
/// old one removed, so that prune has whole and partly used packs to delete.
fn churn(src: &Path, round: u32) {
    fs::create_dir_all(src).unwrap();
    if round == 0 {
        for i in 0..6 {
            fs::write(
                src.join(format!("f{i}")),
                random_bytes(150_000, &format!("f{i}")),
            )
            .unwrap();
        }
    }
    fs::write(
        src.join(format!("f{}", round % 6)),
        random_bytes(150_000, &format!("f{} {round}", round % 6)),
    )
    .unwrap();
    fs::write(
        src.join(format!("new{round}")),
        random_bytes(40_000, &format!("new {round}")),
    )
    .unwrap();
    let _ = fs::remove_file(src.join(format!("new{}", round.wrapping_sub(2))));
}

/// Restores snapshot `id` and compares it with `want`; `false` when the snapshot is
/// gone (forgotten meanwhile), a panic when it exists and does not restore.
fn restores(
    client: &Client,
    scratch: &Path,
    id: &str,
    src: &Path,
    want: &BTreeMap<String, String>,
) -> bool {
    let target = tempfile::tempdir_in(scratch).unwrap();
    let out =
        client.run_through_locks(&["restore", id, "--target", target.path().to_str().unwrap()]);
    let err = String::from_utf8_lossy(&out.stderr);
    if !out.status.success() && err.contains("not found in") && err.contains("snapshot") {
        return false;
    }
    assert!(
        out.status.success(),
        "snapshot {id} does not restore: {err}"
    );
    let got = contents(&target.path().join(src.strip_prefix("/").unwrap()));
    assert_eq!(&got, want, "snapshot {id} restores other content");
    true
}

/// Backups by each of `writers` (each of its own source) race `forget --keep-last 1
/// --prune` by `pruner` for `rounds` rounds; every snapshot a backup reports is
/// restored at once (unless already forgotten), and at the end the repository checks
/// clean with every byte read and each writer's last snapshot restores.
fn race(env: &Env, writers: &[&Client], pruner: &Client, rounds: u32) {
    // Stops the prune loop however the backup loops end, a failed assertion included.
    struct Stop<'a>(&'a AtomicBool);
    impl Drop for Stop<'_> {
        fn drop(&mut self) {
            self.0.store(true, Ordering::Relaxed);
        }
    }
    let done = AtomicBool::new(false);
    let srcs: Vec<PathBuf> = (0..writers.len())
        .map(|i| env.path(&format!("src{i}")))
        .collect();
    let (mut made, mut restored, mut prunes) = (0u32, 0u32, 0u64);
    std::thread::scope(|s| {
        let pruning = s.spawn(|| {
            let mut n = 0;
            while !done.load(Ordering::Relaxed) {
                let out = pruner.run_through_locks(&["forget", "--keep-last", "1", "--prune"]);
                assert!(
                    out.status.success(),
                    "forget --prune failed: {}",
                    String::from_utf8_lossy(&out.stderr)
                );
                n += 1;
                // Room for the backups' locks: back to back, the prunes could starve
                // them on a loaded machine.
                std::thread::sleep(Duration::from_millis(50 + 10 * (n % 7)));
            }
            n
        });
        let stop = Stop(&done);
        let backing_up: Vec<_> = writers
            .iter()
            .zip(&srcs)
            .map(|(writer, src)| {
                s.spawn(move || {
                    let (mut made, mut restored) = (0, 0);
                    for round in 0..rounds {
                        churn(src, round);
                        let want = contents(src);
                        let out =
                            writer.run_through_locks(&["backup", "--json", src.to_str().unwrap()]);
                        assert!(
                            out.status.success(),
                            "backup failed: {}",
                            String::from_utf8_lossy(&out.stderr)
                        );
                        let report: serde_json::Value =
                            serde_json::from_slice(&out.stdout).unwrap();
                        made += 1;
                        let id = report["id"].as_str().unwrap();
                        if restores(writer, env.dir.path(), id, src, &want) {
                            restored += 1;
                        }
                    }
                    (made, restored)
                })
            })
            .collect();
        for b in backing_up {
            let (m, r) = b.join().unwrap();
            made += m;
            restored += r;
        }
        drop(stop);
        prunes = pruning.join().unwrap();
    });
    eprintln!("{made} backups, {restored} restored before they were forgotten, {prunes} forget --prune runs");
    assert!(prunes > 1, "the prune process never overlapped the backups");
    let out = pruner.run_through_locks(&["check", "--read-data"]);
    assert!(
        out.status.success(),
        "check after the race: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // What survived restores too (each source's last snapshot is kept).
    let list = pruner.run_through_locks(&["list", "--json"]);
    let list: serde_json::Value = serde_json::from_slice(&list.stdout).unwrap();
    for (writer, src) in writers.iter().zip(&srcs) {
        let last = list
            .as_array()
            .unwrap()
            .iter()
            .rfind(|s| s["sources"].to_string().contains(src.to_str().unwrap()))
            .unwrap_or_else(|| panic!("no snapshot of {} kept: {list}", src.display()));
        assert!(restores(
            writer,
            env.dir.path(),
            last["id"].as_str().unwrap(),
            src,
            &contents(src)
        ));
    }
}

#[test]
fn backups_racing_prune_in_another_process_never_record_a_broken_snapshot() {
    let env = Env::new();
    env.init();
    let client = Client {
        repo: env.repo().to_str().unwrap().to_string(),
        cache: env.cache(),
        env: Vec::new(),
    };
    race(&env, &[&client], &client, rounds());
}

#[test]
fn two_hosts_backing_up_into_one_bucket_and_a_third_pruning_never_lose_a_snapshot() {
    let Some(s3) = Garage::single() else { return };
    let env = Env::new();
    let host = |name: &str| Client {
        repo: s3.url("race"),
        cache: env.path(&format!("cache-{name}")),
        env: s3.env(),
    };
    let (a, b, c) = (host("a"), host("b"), host("c"));
    let out = a.run(&["init"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    race(&env, &[&a, &b], &c, rounds() / 2);
}

/// A backup takes its parent from what its cache holds of `snapshots/` without listing
/// it, but lists it when that may be wrong: in a new cache, and after a prune elsewhere
/// (which replaced index files, so the cache was rebuilt). A parent forgotten
/// elsewhere and not pruned is still whole: a snapshot that names it restores, and a
/// prune later keeps what it reuses.
#[test]
fn a_backup_lists_snapshots_again_when_its_cache_cannot_vouch_for_its_parent() {
    let env = Env::new();
    env.init();
    let client = |cache: &str| local_client(&env, cache);
    let (a, b) = (client("cache-a"), client("cache-b"));
    let src = env.path("src");
    churn(&src, 0);
    let backup = |c: &Client| c.backup_as_h(&src).0;
    let id = |v: &serde_json::Value| v["id"].as_str().unwrap().to_string();
    // Whether snapshot `v` restores what the source holds now.
    let restored =
        |v: &serde_json::Value| restores(&b, env.dir.path(), &id(v), &src, &contents(&src));
    let first = backup(&a);
    // A new cache of the same host lists snapshots/ and finds the parent.
    let again = backup(&client("cache-a2"));
    assert_eq!(again["parent"], first["id"], "a new cache found no parent");

    // Forgotten elsewhere, not pruned: still whole, so still a parent to a's cache.
    b.ok(&["forget", &id(&first), &id(&again)]);
    let reused = backup(&a);
    assert_eq!(reused["parent"], first["id"]);
    b.ok(&["prune"]);
    b.ok(&["check", "--read-data"]);
    assert!(restored(&reused));

    // A prune elsewhere that rewrote packs: a's cache is rebuilt, which empties its
    // snapshots, and it lists snapshots/ again to find its parent.
    churn(&src, 1);
    let changed = backup(&a);
    assert_eq!(changed["parent"], reused["id"]);
    b.ok(&["forget", &id(&reused)]);
    b.prune_deleting();
    let after = backup(&a);
    assert_eq!(
        after["parent"], changed["id"],
        "no parent after a prune elsewhere"
    );

    // The parent itself forgotten and pruned elsewhere: gone from a's rebuilt cache,
    // so no parent, and what it held is read anew.
    b.ok(&["forget", &id(&changed), &id(&after), "--prune"]);
    let fresh = backup(&a);
    assert!(fresh["parent"].is_null(), "parent {}", fresh["parent"]);
    assert!(fresh["summary"]["files_read"].as_u64().unwrap() > 0);
    b.ok(&["check", "--read-data"]);
    assert!(restored(&fresh));
}

/// The cache file of the one repository a client's cache holds.
fn index_of(cache: &Path) -> PathBuf {
    let found: Vec<PathBuf> = walk(cache)
        .into_iter()
        .filter(|p| p.file_name().is_some_and(|n| n == "index.sqlite"))
        .collect();
    assert_eq!(found.len(), 1, "{found:?}");
    found[0].clone()
}

/// A cache can hold a snapshot record without the index file of its data: another
/// client of the same host saved both between this one's listing of `index/` and its
/// listing of `snapshots/`. Once that snapshot is forgotten and pruned elsewhere, this
/// cache has lost nothing it held, so nothing tells it the record is gone but the
/// record's tree, not in the cache: the backup lists `snapshots/` again, and takes the
/// parent that is still there, with no warning.
#[test]
fn a_cached_snapshot_whose_tree_the_cache_lacks_makes_the_backup_list_snapshots() {
    let env = Env::new();
    env.init();
    let client = |cache: &str| local_client(&env, cache);
    let (a, a2, b) = (client("cache-a"), client("cache-a2"), client("cache-b"));
    let src = env.path("src");
    churn(&src, 0);
    let backup = |c: &Client| c.backup_as_h(&src);
    let (first, _) = backup(&a);
    churn(&src, 1);
    let (second, _) = backup(&a2);
    // a's cache as that race leaves it: the second record without its index file.
    let id = second["id"].as_str().unwrap();
    let row: (Vec<u8>, String, Vec<u8>) = rusqlite::Connection::open(index_of(&a2.cache))
        .unwrap()
        .query_row(
            "SELECT id, time, record FROM snapshots WHERE hex(id) = upper(?1)",
            [id],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .unwrap();
    rusqlite::Connection::open(index_of(&a.cache))
        .unwrap()
        .execute(
            "INSERT INTO snapshots VALUES (?1, ?2, ?3)",
            rusqlite::params![row.0, row.1, row.2],
        )
        .unwrap();
    b.ok(&["forget", id]);
    b.prune_deleting();
    let (third, warnings) = backup(&a);
    assert_eq!(third["parent"], first["id"], "{warnings}");
    assert!(!warnings.contains("warning"), "{warnings}");
    b.ok(&["check", "--read-data"]);
}

/// A client of `env`'s local repository with its own cache, `cache`.
fn local_client(env: &Env, cache: &str) -> Client {
    Client {
        repo: env.repo().to_str().unwrap().to_string(),
        cache: env.path(cache),
        env: Vec::new(),
    }
}
