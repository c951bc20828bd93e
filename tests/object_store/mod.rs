//! Object storage for real: repositories on a three-node Garage cluster (replication
//! 3) survive a node killed during `backup` and during `sync`; locks use conditional
//! writes where the store honours them (moto, as AWS) and fall back to listing where
//! it does not (Garage); and the requests S3 bills for stay few (Garage's own counts):
//! small files restored together, trees kept by the client, one PUT per pack.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Output, Stdio};
use std::time::{Duration, Instant};

use crate::util::garage::Garage;
use crate::util::link::Link;
use crate::util::servers::Moto;
use crate::util::{random_bytes, snap_at, snap_process, walk, Env};

/// `snap_process` started in the background, its output captured.
fn spawn_at(repo: &str, cache: &Path, vars: &[(&'static str, String)], args: &[&str]) -> Child {
    snap_process(repo, cache, vars, args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// A new repository under `prefix` of `g`'s bucket, and a cache directory for it.
fn new_repo(g: &Garage, env: &Env, prefix: &str) -> (String, PathBuf) {
    let (repo, cache) = (g.url(prefix), env.path("cache"));
    snap_at(&repo, &cache, &g.env(), &["init"])
        .assert()
        .success();
    (repo, cache)
}

/// A new encrypted repository under `prefix` of `g`'s bucket (its passphrase is
/// `prefix` too), a cache directory for it, and the environment that opens it.
fn new_sealed_repo(
    g: &Garage,
    env: &Env,
    prefix: &str,
) -> (String, PathBuf, Vec<(&'static str, String)>) {
    let (repo, cache) = (g.url(prefix), env.path("cache"));
    let vars = with_password(g.env(), prefix);
    snap_at(&repo, &cache, &vars, &["init", "--encrypt"])
        .assert()
        .success();
    (repo, cache, vars)
}

/// The environment `vars` with passphrase `pass`.
fn with_password(mut vars: Vec<(&'static str, String)>, pass: &str) -> Vec<(&'static str, String)> {
    vars.push(("SNAP_PASSWORD", pass.to_string()));
    vars
}

/// A backup of `src` into `repo` with cache `cache` and environment `vars`.
fn backup_at(repo: &str, cache: &Path, vars: &[(&'static str, String)], src: &Path) -> Output {
    snap_at(repo, cache, vars, &["backup", src.to_str().unwrap()])
        .output()
        .unwrap()
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Files of random bytes (`n` of `size` each) in a new directory `name` of `env`.
fn source(env: &Env, name: &str, n: usize, size: usize) -> PathBuf {
    source_in(env.dir.path(), name, n, size)
}

/// [`source`] in directory `parent`.
fn source_in(parent: &Path, name: &str, n: usize, size: usize) -> PathBuf {
    let dir = parent.join(name);
    fs::create_dir_all(&dir).unwrap();
    for i in 0..n {
        fs::write(
            dir.join(format!("f{i}")),
            random_bytes(size, &format!("{name} {i}")),
        )
        .unwrap();
    }
    dir
}

/// Kills node `node` of `g` once `run` has run for `after`, then waits for `run`.
fn kill_during(g: &mut Garage, node: usize, run: Child, after: Duration) -> Output {
    let start = Instant::now();
    while start.elapsed() < after {
        std::thread::sleep(Duration::from_millis(50));
    }
    g.kill_node(node);
    run.wait_with_output().unwrap()
}

/// `check --read-data` through node `node`, which must pass.
fn checks_clean(g: &Garage, node: usize, repo: &str, cache: &Path) {
    let out = snap_at(repo, cache, &g.env_of(node), &["check", "--read-data"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "check --read-data through node {node}: {}",
        text(&out)
    );
}

#[test]
fn a_node_killed_during_backup_or_sync_loses_nothing() {
    let Some(mut g) = Garage::cluster() else {
        return;
    };
    let env = Env::new();
    let (repo, cache) = new_repo(&g, &env, "cluster");
    // Uploads paced to ~8 MB/s, so that the node dies well inside the run.
    let slow = ["--limit-upload", "8000"];

    // A node the client does not talk to dies: the run completes through the other
    // two, and the repository checks clean, before and after the node comes back.
    let src = source(&env, "a", 6, 8 << 20);
    let mut args = slow.to_vec();
    args.extend(["backup", "--json", src.to_str().unwrap()]);
    let run = spawn_at(&repo, &cache, &g.env_of(0), &args);
    let out = kill_during(&mut g, 2, run, Duration::from_secs(2));
    assert!(
        out.status.success(),
        "backup with a node down: {}",
        text(&out)
    );
    checks_clean(&g, 0, &repo, &cache);
    g.restart_node(2);
    checks_clean(&g, 2, &repo, &cache);

    // The node the client talks to dies: the run fails with a clear error, the
    // repository still checks clean through another node, and the next run completes.
    let src = source(&env, "b", 6, 8 << 20);
    let mut args = slow.to_vec();
    args.extend(["backup", "--json", src.to_str().unwrap()]);
    let run = spawn_at(&repo, &env.path("cache-1"), &g.env_of(1), &args);
    let out = kill_during(&mut g, 1, run, Duration::from_secs(2));
    let said = text(&out);
    assert_eq!(out.status.code(), Some(1), "{said}");
    assert!(!said.contains("panicked"), "{said}");
    assert!(
        said.contains(&g.endpoint_of(1)) || said.contains("s3://snap/cluster"),
        "the error names where it failed: {said}"
    );
    checks_clean(&g, 0, &repo, &cache);
    let list = snap_at(&repo, &cache, &g.env_of(0), &["list", "--json"])
        .output()
        .unwrap();
    let list: serde_json::Value = serde_json::from_slice(&list.stdout).unwrap();
    assert_eq!(
        list.as_array().unwrap().len(),
        1,
        "no half-written snapshot is shown: {list}"
    );
    snap_at(
        &repo,
        &cache,
        &g.env_of(0),
        &["backup", src.to_str().unwrap()],
    )
    .assert()
    .success();
    g.restart_node(1);
    checks_clean(&g, 1, &repo, &cache);

    // sync from a local repository to the bucket, with a node dying on the way.
    env.init();
    let src = source(&env, "c", 6, 8 << 20);
    env.snap(&["backup", src.to_str().unwrap()])
        .assert()
        .success();
    let synced = g.url("synced");
    let mut args = slow.to_vec();
    args.extend(["sync", "--to", &synced]);
    let run = spawn_at(
        env.repo().to_str().unwrap(),
        &env.cache(),
        &g.env_of(0),
        &args,
    );
    let out = kill_during(&mut g, 2, run, Duration::from_secs(2));
    assert!(
        out.status.success(),
        "sync with a node down: {}",
        text(&out)
    );
    checks_clean(&g, 0, &synced, &env.path("cache-synced"));
    g.restart_node(2);
    checks_clean(&g, 2, &synced, &env.path("cache-synced"));
}

/// Starts `n` `snap prune` at once on `repo`, `rounds` times; returns how many took
/// the lock in each round. Every one that did not must say the repository is locked.
fn racing_prunes(
    repo: &str,
    vars: &[(&'static str, String)],
    env: &Env,
    n: usize,
    rounds: usize,
) -> Vec<usize> {
    (0..rounds)
        .map(|round| {
            let runs: Vec<Child> = (0..n)
                .map(|i| spawn_at(repo, &env.path(&format!("cache-{i}")), vars, &["prune"]))
                .collect();
            let mut won = 0;
            for run in runs {
                let out = run.wait_with_output().unwrap();
                if out.status.success() {
                    won += 1;
                } else {
                    assert!(
                        text(&out).contains("is locked by"),
                        "round {round}: {}",
                        text(&out)
                    );
                }
            }
            won
        })
        .collect()
}

/// Makes a repository at `repo` and prunes it with `-v`, which must succeed; what the
/// prune said.
fn first_prune(repo: &str, vars: &[(&'static str, String)], env: &Env) -> String {
    snap_at(repo, &env.path("cache"), vars, &["init"])
        .assert()
        .success();
    let out = snap_at(repo, &env.path("cache"), vars, &["-v", "prune"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    text(&out)
}

#[test]
fn locks_use_conditional_writes_where_the_store_honours_them() {
    let Some(moto) = Moto::start() else { return };
    let env = Env::new();
    let repo = moto.url("locks");
    let said = first_prune(&repo, &moto.env(), &env);
    assert!(said.contains("honours If-None-Match"), "{said}");
    // Of prunes started together, one always takes the lock (with listing alone, two
    // that see each other may both step back).
    let won = racing_prunes(&repo, &moto.env(), &env, 4, 6);
    assert!(won.iter().all(|&w| w >= 1), "winners per round: {won:?}");
}

#[test]
fn locks_fall_back_to_listing_where_the_store_ignores_conditions() {
    let Some(g) = Garage::single() else { return };
    let env = Env::new();
    let repo = g.url("locks");
    let said = first_prune(&repo, &g.env(), &env);
    assert!(said.contains("ignores If-None-Match"), "{said}");
    // Every prune either ran or was told the repository is locked, and the repository
    // is whole.
    racing_prunes(&repo, &g.env(), &env, 4, 3);
    snap_at(&repo, &env.path("cache"), &g.env(), &["check"])
        .assert()
        .success();
}

/// Restores `latest` of `repo` into the new directory `target`; its output.
fn restore_into(g: &Garage, repo: &str, cache: &Path, target: &Path) -> Output {
    snap_at(
        repo,
        cache,
        &g.env(),
        &["restore", "latest", "--target", target.to_str().unwrap()],
    )
    .output()
    .unwrap()
}

#[test]
fn small_files_restore_from_s3_in_few_requests_and_a_damaged_one_fails_alone() {
    let Some(g) = Garage::single() else { return };
    let env = Env::new();
    let (repo, cache) = new_repo(&g, &env, "small");
    // Three directories of 100 text files of 1-4 KB, as attachments are.
    let src = env.path("src");
    for d in 0..3 {
        let dir = src.join(format!("d{d}"));
        fs::create_dir_all(&dir).unwrap();
        for i in 0..100 {
            let words: String = (0..200 + (d * 100 + i) * 3)
                .map(|w| format!("w{} ", (w * 7 + i) % 991))
                .collect();
            fs::write(dir.join(format!("f{i}.txt")), words).unwrap();
        }
    }
    snap_at(&repo, &cache, &g.env(), &["backup", src.to_str().unwrap()])
        .assert()
        .success();

    // Read file by file, 300 files would take at least 300 GETs.
    let before = g.requests(0, "GetObject");
    let target = env.path("whole");
    let out = restore_into(&g, &repo, &cache, &target);
    assert!(out.status.success(), "{}", text(&out));
    let gets = g.requests(0, "GetObject") - before;
    crate::util::assert_same_tree(&src, &crate::util::restored(&target, &src));
    assert!(gets < 60, "{gets} GETs to restore 300 small files");

    // One byte flipped in the data pack: the file whose chunk it hits fails by name,
    // its neighbours (read in the same request) are restored whole.
    let (pack, _) = g
        .objects("small/packs/")
        .into_iter()
        .max_by_key(|(_, size)| *size)
        .unwrap();
    g.damage(&pack);
    let target = env.path("damaged");
    let out = restore_into(&g, &repo, &cache, &target);
    let said = text(&out);
    assert_eq!(out.status.code(), Some(1), "{said}");
    let restored = crate::util::restored(&target, &src);
    let mut failed = Vec::new();
    for d in 0..3 {
        for i in 0..100 {
            let name = format!("d{d}/f{i}.txt");
            match fs::read(restored.join(&name)) {
                Ok(got) => assert_eq!(got, fs::read(src.join(&name)).unwrap(), "{name}"),
                Err(_) => failed.push(name),
            }
        }
    }
    assert_eq!(failed.len(), 1, "failed: {failed:?}; {said}");
    assert!(
        said.contains(&failed[0]),
        "the failed file is named: {said}"
    );
}

/// Files backed up together share packs: read file by file, in runs of adjacent
/// chunks, they cost a request per run; read in pack order, a request per pack.
#[test]
fn a_restore_from_s3_reads_each_pack_with_one_request() {
    let Some(g) = Garage::single() else { return };
    let env = Env::new();
    let (repo, cache) = new_repo(&g, &env, "packed");
    // Four 12 MiB files, written chunk by chunk into the same packs as they are read
    // in parallel, and 200 small ones; a duplicate, whose chunks are read once.
    let src = source(&env, "src", 4, 12 << 20);
    for i in 0..200 {
        fs::write(
            src.join(format!("s{i}")),
            random_bytes(3000, &format!("s{i}")),
        )
        .unwrap();
    }
    fs::copy(src.join("f0"), src.join("f0-copy")).unwrap();
    snap_at(&repo, &cache, &g.env(), &["backup", src.to_str().unwrap()])
        .assert()
        .success();
    let packs = g.objects("packed/packs/").len() as u64;
    let before = g.requests(0, "GetObject");
    let target = env.path("out");
    let out = restore_into(&g, &repo, &cache, &target);
    assert!(out.status.success(), "{}", text(&out));
    let gets = g.requests(0, "GetObject") - before;
    crate::util::assert_same_tree(&src, &crate::util::restored(&target, &src));
    // At most one read per pack, and the snapshot record.
    assert!(
        gets <= packs + 1,
        "{gets} GETs to restore from {packs} packs (file by file it takes 48 or more)"
    );
}

/// Ctrl-C in a restore from S3, which writes files in pack order under temporary names:
/// it stops at once, removes every unfinished file, and a second restore finishes.
#[test]
fn ctrl_c_stops_a_restore_from_s3_leaving_only_whole_files() {
    let Some(g) = Garage::single() else { return };
    let env = Env::new();
    let (repo, cache) = new_repo(&g, &env, "stopped");
    let src = source(&env, "src", 6, 24 << 20);
    snap_at(&repo, &cache, &g.env(), &["backup", src.to_str().unwrap()])
        .assert()
        .success();
    let target = env.path("out");
    let run = spawn_at(
        &repo,
        &cache,
        &g.env(),
        &["restore", "latest", "--target", target.to_str().unwrap()],
    );
    let out = crate::util::ctrl_c_restore_at(run, &target, 1 << 20);
    assert_eq!(out.status.code(), Some(130), "{}", text(&out));
    let left = crate::util::restore_temps(&target);
    assert!(left.is_empty(), "temporary files left: {left:?}");
    let restored = crate::util::restored(&target, &src);
    let mut placed = 0;
    for i in 0..6 {
        if let Ok(got) = fs::read(restored.join(format!("f{i}"))) {
            assert_eq!(got, fs::read(src.join(format!("f{i}"))).unwrap(), "f{i}");
            placed += 1;
        }
    }
    assert!(
        placed < 6,
        "every file was placed: the restore was not stopped"
    );
    let out = restore_into(&g, &repo, &cache, &target);
    assert!(out.status.success(), "{}", text(&out));
    crate::util::assert_same_tree(&src, &restored);
}

/// The environment of `g`'s first node reached through `link`, with
/// `SNAP_REMOTE_TIMEOUT` 2 s.
fn through(g: &Garage, link: &Link) -> Vec<(&'static str, String)> {
    let mut vars: Vec<_> = g
        .env()
        .into_iter()
        .filter(|(k, _)| *k != "AWS_ENDPOINT_URL")
        .collect();
    vars.push(("AWS_ENDPOINT_URL", link.endpoint()));
    vars.push(("SNAP_REMOTE_TIMEOUT", "2s".into()));
    vars
}

/// A pack going up a slow link takes longer than the silence allowed, and goes up all
/// the same: only silence is timed, not a request that keeps moving.
#[test]
fn a_pack_slower_to_upload_than_the_timeout_still_goes_up() {
    let Some(g) = Garage::single() else { return };
    let env = Env::new();
    let (repo, cache) = new_repo(&g, &env, "slow");
    // 4 MiB/s up: a 32 MiB pack takes 8 s, four times the 2 s allowed.
    let link = Link::start(g.s3_port(0), 4 << 20);
    let src = source(&env, "src", 1, 40 << 20);
    let out = backup_at(&repo, &cache, &through(&g, &link), &src);
    assert!(out.status.success(), "{}", text(&out));
    checks_clean(&g, 0, &repo, &cache);
}

/// A server that stops answering mid-upload (its connections open, nothing moving)
/// fails the backup within a bound set by `SNAP_REMOTE_TIMEOUT` and the retries, not
/// never; nothing half-written is left, and once it answers again the next run
/// completes.
#[test]
fn a_server_that_stops_answering_fails_the_backup_in_bounded_time() {
    let Some(g) = Garage::single() else { return };
    let env = Env::new();
    let (repo, cache) = new_repo(&g, &env, "silent");
    let link = Link::start(g.s3_port(0), 16 << 20);
    let vars = through(&g, &link);
    // 16 MiB a second up: time to see the first pack arrive and stop the link.
    let src = source(&env, "src", 4, 32 << 20);
    let run = spawn_at(&repo, &cache, &vars, &["backup", src.to_str().unwrap()]);
    let start = Instant::now();
    while g.objects("silent/packs/").is_empty() {
        assert!(start.elapsed() < Duration::from_secs(60), "no pack went up");
        std::thread::sleep(Duration::from_millis(20));
    }
    link.pause();
    let stopped = Instant::now();
    let mut run = run;
    // Six tries of 2 s of silence and backoff between them (at most 6.2 s in all),
    // for the packs under way together: well under two minutes. Without the
    // client's own timing it waited for the 1 h backstop.
    while run.try_wait().unwrap().is_none() {
        if stopped.elapsed() > Duration::from_secs(120) {
            let _ = run.kill();
            link.resume();
            panic!("the backup still waited for a silent server after two minutes");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let took = stopped.elapsed();
    let out = run.wait_with_output().unwrap();
    link.resume();
    let said = text(&out);
    assert_eq!(out.status.code(), Some(1), "{said}");
    assert!(
        said.contains("s3://") && said.contains("no answer for 2 s"),
        "the error names the store and the silence: {said}"
    );
    eprintln!("gave up {took:?} after the server went silent");
    checks_clean(&g, 0, &repo, &cache);
    let out = backup_at(&repo, &cache, &vars, &src);
    assert!(out.status.success(), "{}", text(&out));
}

/// A pack of a thousand small files, restored by a process allowed 128 open files:
/// a read in pack order keeps few of them open at once.
#[test]
fn a_pack_of_many_small_files_restores_within_a_low_descriptor_limit() {
    let Some(g) = Garage::single() else { return };
    let env = Env::new();
    let (repo, cache) = new_repo(&g, &env, "many");
    let src = env.path("src");
    fs::create_dir_all(&src).unwrap();
    for i in 0..1000 {
        fs::write(
            src.join(format!("f{i}")),
            random_bytes(1500, &format!("f{i}")),
        )
        .unwrap();
    }
    snap_at(&repo, &cache, &g.env(), &["backup", src.to_str().unwrap()])
        .assert()
        .success();
    let target = env.path("out");
    let snap = crate::util::snap_process(
        &repo,
        &cache,
        &g.env(),
        &["restore", "latest", "--target", target.to_str().unwrap()],
    );
    let out = std::process::Command::new("sh")
        .args(["-c", "ulimit -n 128 && exec \"$@\"", "sh"])
        .arg(snap.get_program())
        .args(snap.get_args())
        .envs(snap.get_envs().filter_map(|(k, v)| Some((k, v?))))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    crate::util::assert_same_tree(&src, &crate::util::restored(&target, &src));
}

/// What a restore in pack order must still get right: hard links, a sparse file that
/// stays sparse, empty files, a file with one chunk twice, modes and times, symlinks;
/// and `--verify` reads every file back.
#[test]
fn a_restore_in_pack_order_keeps_links_holes_modes_and_times() {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let Some(g) = Garage::single() else { return };
    let env = Env::new();
    let (repo, cache) = new_repo(&g, &env, "kinds");
    let src = env.path("src");
    let deep = src.join("a/b");
    fs::create_dir_all(&deep).unwrap();
    let block = random_bytes(2 << 20, "block");
    fs::write(deep.join("twice"), [&block[..], &block[..]].concat()).unwrap();
    fs::write(deep.join("empty"), b"").unwrap();
    fs::write(src.join("a/linked"), random_bytes(300_000, "linked")).unwrap();
    fs::hard_link(src.join("a/linked"), deep.join("also-linked")).unwrap();
    let sparse = src.join("a/sparse");
    let f = fs::File::create(&sparse).unwrap();
    f.set_len(64 << 20).unwrap();
    std::os::unix::fs::FileExt::write_all_at(&f, b"end", (64 << 20) - 3).unwrap();
    drop(f);
    fs::set_permissions(deep.join("empty"), fs::Permissions::from_mode(0o600)).unwrap();
    std::os::unix::fs::symlink("b/twice", src.join("a/link")).unwrap();
    snap_at(&repo, &cache, &g.env(), &["backup", src.to_str().unwrap()])
        .assert()
        .success();
    let target = env.path("out");
    let out = snap_at(
        &repo,
        &cache,
        &g.env(),
        &[
            "restore",
            "latest",
            "--verify",
            "--target",
            target.to_str().unwrap(),
        ],
    )
    .output()
    .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let restored = crate::util::restored(&target, &src);
    crate::util::assert_same_tree(&src, &restored);
    let holes = fs::metadata(restored.join("a/sparse")).unwrap();
    assert!(
        holes.blocks() * 512 < 1 << 20,
        "the sparse file was filled in"
    );
    let left: Vec<_> = crate::util::walk(&target)
        .into_iter()
        .filter(|p| p.to_string_lossy().contains(".snap-restore-"))
        .collect();
    assert!(left.is_empty(), "temporary files left: {left:?}");
}

#[test]
fn trees_are_kept_by_the_client_so_a_no_op_backup_reads_almost_nothing_and_check_reads_past_them() {
    let Some(g) = Garage::single() else { return };
    let env = Env::new();
    let (repo, cache) = new_repo(&g, &env, "trees");
    // 40 directories: 40 trees and more to compare with on the next run.
    let src = env.path("src");
    for d in 0..40 {
        let dir = src.join(format!("d{d}"));
        fs::create_dir_all(&dir).unwrap();
        // Incompressible, so that the data pack is larger than the tree pack.
        fs::write(dir.join("f"), random_bytes(4096, &format!("file {d}"))).unwrap();
    }
    let backup = || {
        snap_at(&repo, &cache, &g.env(), &["backup", src.to_str().unwrap()])
            .assert()
            .success();
    };
    backup();
    let before = g.requests(0, "GetObject");
    backup();
    let gets = g.requests(0, "GetObject") - before;
    assert!(
        gets < 10,
        "{gets} GETs for a backup of 40 unchanged directories"
    );

    // A copy damaged on the client's disk is dropped and read again.
    let copies: Vec<PathBuf> = walk(&cache)
        .into_iter()
        .filter(|p| p.components().any(|c| c.as_os_str() == "blobs"))
        .collect();
    assert!(copies.len() >= 40, "{} copies", copies.len());
    for c in &copies {
        fs::write(c, b"not a tree").unwrap();
    }
    let target = env.path("out");
    let out = restore_into(&g, &repo, &cache, &target);
    assert!(out.status.success(), "{}", text(&out));
    crate::util::assert_same_tree(&src, &crate::util::restored(&target, &src));

    // The trees damaged in the bucket (the smaller pack), their copies intact here.
    let (pack, _) = g
        .objects("trees/packs/")
        .into_iter()
        .min_by_key(|(_, size)| *size)
        .unwrap();
    g.damage(&pack);
    // A drill, which proves what a host without the copies would restore, fails;
    let scratch = env.path("scratch");
    fs::create_dir_all(&scratch).unwrap();
    let out = snap_at(
        &repo,
        &cache,
        &g.env(),
        &["drill", "--scratch", scratch.to_str().unwrap()],
    )
    .output()
    .unwrap();
    assert_ne!(out.status.code(), Some(0), "{}", text(&out));
    // and check, which reads past the copies too, finds the damage.
    let out = snap_at(&repo, &cache, &g.env(), &["check", "--read-data"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
}

#[test]
fn packs_go_up_with_one_put_each() {
    let Some(g) = Garage::single() else { return };
    let env = Env::new();
    let (repo, cache) = new_repo(&g, &env, "puts");
    // Three packs' worth of incompressible data.
    let src = source(&env, "src", 12, 8 << 20);
    let before = (g.requests(0, "PutObject"), g.requests(0, "UploadPart"));
    snap_at(&repo, &cache, &g.env(), &["backup", src.to_str().unwrap()])
        .assert()
        .success();
    let packs = g.objects("puts/packs/");
    assert!(packs.len() >= 3, "{packs:?}");
    assert_eq!(g.requests(0, "UploadPart"), before.1, "no multipart upload");
    let puts = g.requests(0, "PutObject") - before.0;
    // The packs, an index file, the snapshot record, the lock (and its refreshes).
    assert!(
        puts <= packs.len() as u64 + 6,
        "{puts} PUTs for {} packs",
        packs.len()
    );
}

/// A no-op backup of an encrypted repository costs six requests: the lock (put, its
/// listing of `locks/`, the check before the snapshot is saved, delete), one listing
/// of `index/` and `keys/` together, and the snapshot record; the config and the key
/// file are what the host remembered, the parent what its cache holds. Seven
/// unencrypted, where the config is read (nothing would prove a remembered one
/// current). Neither lists `snapshots/`, not even the first backup after `init`
/// (whose cache knows the repository has none). Every file is read
/// with one GET, no HEAD before it. A file longer than its kind may be is refused (the
/// GET dropped past the limit), an empty one is told apart from a missing one.
#[test]
fn a_no_op_backup_costs_six_requests_and_reads_are_bounded() {
    let Some(g) = Garage::single() else { return };
    let env = Env::new();
    // The source's directories up to `/` are in every snapshot with their mtimes: under
    // /tmp, which other tests change all the time, a second backup would store a new
    // tree for it and not be a no-op. /var/tmp is left alone.
    let stable = tempfile::tempdir_in("/var/tmp").unwrap();
    let src = source_in(stable.path(), "src", 4, 64 << 10);
    let kinds = [
        "GetObject",
        "HeadObject",
        "ListObjectsV2",
        "PutObject",
        "DeleteObject",
    ];
    // The requests of a second, no-op backup into a new repository at `prefix`.
    let no_op = |prefix: &str, init: &[&str], vars: &[(&'static str, String)]| {
        let (repo, cache) = (g.url(prefix), env.path(&format!("cache-{prefix}")));
        snap_at(&repo, &cache, vars, init).assert().success();
        let backup = || {
            snap_at(&repo, &cache, vars, &["backup", src.to_str().unwrap()])
                .assert()
                .success();
        };
        let lists = || g.requests(0, "ListObjectsV2");
        let before = lists();
        backup();
        assert_eq!(lists() - before, 2, "listings of a first backup ({prefix})");
        let before = kinds.map(|k| g.requests(0, k));
        backup();
        let after = kinds.map(|k| g.requests(0, k));
        let made: Vec<(&str, u64)> = kinds
            .iter()
            .zip(after.iter().zip(before.iter()))
            .map(|(k, (a, b))| (*k, a - b))
            .collect();
        (made.iter().map(|(_, n)| n).sum::<u64>(), made, repo, cache)
    };
    let mut sealed = g.env();
    sealed.push(("SNAP_PASSWORD", "no-op".into()));
    let (total, made, ..) = no_op("noop-sealed", &["init", "--encrypt"], &sealed);
    assert!(
        total <= 6,
        "{total} requests for an encrypted no-op backup: {made:?}"
    );
    let (total, made, repo, cache) = no_op("noop", &["init"], &g.env());
    assert!(total <= 7, "{total} requests for a no-op backup: {made:?}");
    assert_eq!(made[1].1, 0, "HEADs: {made:?}");

    let list = || {
        snap_at(&repo, &cache, &g.env(), &["list"])
            .output()
            .unwrap()
    };
    g.put(&g.bucket, "noop/config", &vec![b'{'; (1 << 20) + 1]);
    let out = list();
    assert!(!out.status.success());
    assert!(
        text(&out).contains("more than the 1048576 allowed"),
        "{}",
        text(&out)
    );
    g.put(&g.bucket, "noop/config", b"");
    let out = list();
    assert!(!out.status.success());
    assert!(
        text(&out).contains("corrupt repository config"),
        "{}",
        text(&out)
    );
}

/// The one listing that serves the index refresh and the proof of a remembered key
/// file reads past pages of other files: with 300 files in `index/` that are not index
/// files (the first page holds the index files the cache holds and 64 more, the rest a
/// thousand each), the key file is still found in `keys/`; and another process's
/// exclusive lock in `locks/`, listed before, still stops a backup.
#[test]
fn the_shared_listing_of_index_and_keys_reads_every_page() {
    let Some(g) = Garage::single() else { return };
    let env = Env::new();
    let (repo, cache, vars) = new_sealed_repo(&g, &env, "pages");
    let src = source(&env, "src", 2, 4096);
    let backup = || backup_at(&repo, &cache, &vars, &src);
    // The cache then holds one index file: pages of 65 names.
    let out = backup();
    assert!(out.status.success(), "{}", text(&out));
    g.put_many("pages/index/junk-", 300);
    let lists = g.requests(0, "ListObjectsV2");
    let out = backup();
    assert!(out.status.success(), "{}", text(&out));
    let lists = g.requests(0, "ListObjectsV2") - lists;
    // The lock's listing of locks/; for the 302 names of index/ and keys/ the page the
    // cache expected (65 names), then one of a thousand (no snapshot listing: the
    // parent is the cache's).
    assert_eq!(lists, 3, "listings");

    // An exclusive lock of a live process on another host, past the junk.
    let info = serde_json::json!({
        "host": "elsewhere", "pid": 1, "time": chrono::Utc::now(),
        "exclusive": true, "purpose": "prune",
    });
    g.put(
        &g.bucket,
        "pages/locks/0123456789abcdef.json",
        info.to_string().as_bytes(),
    );
    let out = backup();
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        text(&out).contains("prune by pid 1 on elsewhere"),
        "{}",
        text(&out)
    );
}

/// A host remembers the config and key file of an encrypted repository on S3 (its
/// own, readable by it only) and opens it without reading them; the first listing of
/// `keys/` proves the key file still there. Once it is gone (the passphrase was
/// changed on another host), the run fails before it reads anything else, says why,
/// and forgets it; the next run tries the passphrase against the key files the
/// repository has now. A passphrase changed on the host itself forgets at once.
#[test]
fn a_remembered_key_file_gone_from_the_repository_fails_the_run_and_is_forgotten() {
    use std::os::unix::fs::PermissionsExt;
    let Some(g) = Garage::single() else { return };
    let env = Env::new();
    let (repo, cache) = (g.url("memory"), env.path("cache"));
    let (one, two) = (with_password(g.env(), "one"), with_password(g.env(), "two"));
    snap_at(&repo, &cache, &one, &["init", "--encrypt"])
        .assert()
        .success();
    let memory: Vec<PathBuf> = walk(&cache.join("remembered"));
    assert_eq!(memory.len(), 1, "{memory:?}");
    let mode = fs::metadata(&memory[0]).unwrap().permissions().mode();
    assert_eq!(mode & 0o077, 0, "{mode:o}");
    let src = source(&env, "src", 2, 4096);
    let backup = |vars: &[(&'static str, String)]| backup_at(&repo, &cache, vars, &src);
    let gets = g.requests(0, "GetObject");
    let out = backup(&one);
    assert!(out.status.success(), "{}", text(&out));
    // Only the lock's check before the snapshot is saved: no config, no key file.
    assert_eq!(g.requests(0, "GetObject") - gets, 1);

    // Another host changes the passphrase: a new key file, the old one removed.
    let other = env.path("other-cache");
    let mut passwd = one.clone();
    passwd.push(("SNAP_NEW_PASSWORD", "two".into()));
    snap_at(&repo, &other, &passwd, &["key", "passwd"])
        .assert()
        .success();
    let snapshots = g.objects("memory/snapshots/").len();
    let out = backup(&one);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        text(&out).contains("the repository no longer has it"),
        "{}",
        text(&out)
    );
    assert_eq!(g.objects("memory/snapshots/").len(), snapshots);
    assert!(g.objects("memory/locks/").is_empty());
    assert!(walk(&cache.join("remembered")).is_empty());
    let out = backup(&one);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("wrong passphrase"), "{}", text(&out));
    let out = backup(&two);
    assert!(out.status.success(), "{}", text(&out));
    let gets = g.requests(0, "GetObject");
    let out = backup(&two);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(g.requests(0, "GetObject") - gets, 1);

    // A passphrase changed on this host: the memory of the removed key file goes with it.
    let mut passwd = two.clone();
    passwd.push(("SNAP_NEW_PASSWORD", "three".into()));
    snap_at(&repo, &cache, &passwd, &["key", "passwd"])
        .assert()
        .success();
    let out = backup(&two);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("wrong passphrase"), "{}", text(&out));
}

/// `check` and `drill` prove what the repository itself holds, as a host without this
/// one's memory would read it: a damaged config or key file in the bucket fails them
/// on the host that remembers both intact.
#[test]
fn check_and_drill_read_the_config_and_key_file_from_the_repository() {
    let Some(g) = Garage::single() else { return };
    let env = Env::new();
    let (repo, cache, vars) = new_sealed_repo(&g, &env, "proof");
    let src = source(&env, "src", 2, 4096);
    snap_at(&repo, &cache, &vars, &["backup", src.to_str().unwrap()])
        .assert()
        .success();
    let scratch = env.path("scratch");
    fs::create_dir_all(&scratch).unwrap();
    let run = |args: &[&str]| snap_at(&repo, &cache, &vars, args).output().unwrap();
    let (key, _) = g.objects("proof/keys/").remove(0);
    for object in ["proof/config".to_string(), key] {
        let intact = g.get(&g.bucket, &object).unwrap();
        g.damage(&object);
        let name = object.trim_start_matches("proof/");
        for args in [
            &["check"][..],
            &["drill", "--scratch", scratch.to_str().unwrap()][..],
        ] {
            let out = run(args);
            assert_ne!(out.status.code(), Some(0), "{args:?}: {}", text(&out));
            assert!(text(&out).contains(name), "{args:?}: {}", text(&out));
        }
        g.put(&g.bucket, &object, &intact);
    }
    let out = run(&["check"]);
    assert!(out.status.success(), "{}", text(&out));
}

/// A memory damaged on the host's own disk (its sealed config, then its key file) is not
/// used: the run reads both from the repository, succeeds, and remembers them afresh.
#[test]
fn a_memory_damaged_on_the_hosts_disk_is_read_again_from_the_repository() {
    let Some(g) = Garage::single() else { return };
    let env = Env::new();
    let (repo, cache, vars) = new_sealed_repo(&g, &env, "damaged");
    let src = source(&env, "src", 2, 4096);
    let memory = walk(&cache.join("remembered")).remove(0);
    let intact = fs::read_to_string(&memory).unwrap();
    let config = g.get(&g.bucket, "damaged/config").unwrap();
    // The JSON still whole: in the config, one hex digit of the sealed part changed (it
    // no longer opens); in the key file, one made no hex digit (it no longer decodes).
    for (field, sealed) in [
        ("config", "\"sealed\": \""),
        ("key_file", "\"wrapped\": \""),
    ] {
        let mut m: serde_json::Value = serde_json::from_str(&intact).unwrap();
        let file = m[field].as_str().unwrap().to_string();
        let at = file.find(sealed).unwrap() + sealed.len() + 10;
        let flipped = match (field, &file[at..=at]) {
            ("key_file", _) => "z",
            (_, "0") => "1",
            _ => "0",
        };
        m[field] = format!("{}{flipped}{}", &file[..at], &file[at + 1..]).into();
        fs::write(&memory, m.to_string()).unwrap();
        let out = backup_at(&repo, &cache, &vars, &src);
        assert!(out.status.success(), "{field}: {}", text(&out));
        let now: serde_json::Value =
            serde_json::from_str(&fs::read_to_string(&memory).unwrap()).unwrap();
        assert_eq!(now["config"].as_str().unwrap().as_bytes(), &config[..]);
        let intact: serde_json::Value = serde_json::from_str(&intact).unwrap();
        assert_eq!(now, intact, "remembered afresh");
    }
}

/// One location on two endpoints is two repositories, and a host remembers each: here
/// `s3://snap/twins` on Garage and on moto, used in turn, each opens from its own
/// memory (no GET of its config or key file).
#[test]
fn the_same_location_on_two_endpoints_is_remembered_apart() {
    let Some(g) = Garage::single() else { return };
    let Some(moto) = Moto::start() else { return };
    let env = Env::new();
    let (repo, cache) = (g.url("twins"), env.path("cache"));
    assert_eq!(repo, moto.url("twins"));
    let (on_garage, on_moto) = (
        with_password(g.env(), "twins"),
        with_password(moto.env(), "twins"),
    );
    for vars in [&on_garage, &on_moto] {
        snap_at(&repo, &cache, vars, &["init", "--encrypt"])
            .assert()
            .success();
    }
    assert_eq!(walk(&cache.join("remembered")).len(), 2);
    let src = source(&env, "src", 2, 4096);
    for (vars, garage) in [(&on_garage, true), (&on_moto, false), (&on_garage, true)] {
        let gets = g.requests(0, "GetObject");
        let out = backup_at(&repo, &cache, vars, &src);
        assert!(out.status.success(), "{}", text(&out));
        if garage {
            // Only the lock's check before the snapshot is saved.
            assert_eq!(g.requests(0, "GetObject") - gets, 1);
        }
    }
}
