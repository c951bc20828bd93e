//! Crash consistency: every operation that writes to a repository is run with the
//! power cut at each of its I/O steps (a model of power loss, `snap::store::crash`,
//! sits under the local store); then the repository a reboot would find must open,
//! pass `check --read-data`, restore every snapshot it kept identical to its source
//! (every one the operation reported complete among them), and take a new backup.
//!
//! By default each operation is cut at every step (and just after it returned), each
//! cut checked twice: with exactly the durable state, and with a seeded share of the
//! unsynced writes reaching the disk (reordered, torn); the index cache is kept or
//! deleted. For a long run, `SNAP_CRASH_ITERATIONS` sets the cuts per operation (steps
//! drawn at random) and `SNAP_CRASH_SEED` the seed.

#[allow(dead_code)]
#[path = "util/mod.rs"]
mod util;

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use chrono::{TimeZone, Utc};
use snap::error::Result;
use snap::format::crypto::Kdf;
use snap::format::id::{IndexFileId, PackId, SnapshotId};
use snap::format::snapshot::Source;
use snap::ops::backup::{backup, BackupOptions};
use snap::ops::check::{check, ReadData};
use snap::ops::prune::{plan_prune, PruneOptions};
use snap::ops::restore::{plan_restore, RestoreOptions};
use snap::ops::retention::{self, Policy};
use snap::ops::sync::sync;
use snap::ops::tag::{retag, TagChange};
use snap::progress::NoProgress;
use snap::repo::{keys, Repository};
use snap::store::crash::{mix, CrashFs};
use snap::store::{Local, Store};
use util::{assert_same_tree, random_bytes, restored};

const PASS: &[u8] = b"first passphrase";
const PASS2: &[u8] = b"second passphrase";
/// Argon2id at its cheapest: key files are opened on every check.
const KDF: Kdf = Kdf {
    m_cost: 8,
    t_cost: 1,
    p_cost: 1,
};

/// What must hold after a cut.
#[derive(Default)]
struct Expect {
    present: Vec<SnapshotId>,
    absent: Vec<SnapshotId>,
    /// How many snapshots there must be, when known (rewritten copies get new ids).
    count: Option<usize>,
    /// How many there must be at least (a retagged record may be there twice).
    at_least: usize,
    /// Passphrases and whether each must open the repository.
    opens: Vec<(&'static [u8], bool)>,
}

/// The repository an operation starts from, and what it holds.
struct Base {
    dir: tempfile::TempDir,
    /// The repository under test, copied for every cut.
    repo: PathBuf,
    /// Where its index cache lives, and a copy of the cache as the base left it.
    cache: PathBuf,
    cache_copy: PathBuf,
    /// The passphrase of an encrypted repository.
    pass: Option<&'static [u8]>,
    /// The snapshots it holds.
    snapshots: Vec<SnapshotId>,
    /// Another repository the operation reads (sync's source), and its snapshots.
    other: Option<(PathBuf, Vec<SnapshotId>)>,
    /// Source directories, one per snapshot and one more for new backups.
    sources: Vec<PathBuf>,
    /// Packs that no index file lists (`Kind::Interrupted`).
    unlisted: Vec<PackId>,
}

/// Where the scratch directories go: a RAM disk when there is one, as thousands of
/// runs of the real (durable) store would otherwise wait on the disk's fsyncs.
fn scratch() -> PathBuf {
    let shm = Path::new("/dev/shm");
    if shm.is_dir() {
        shm.to_path_buf()
    } else {
        std::env::temp_dir()
    }
}

/// Sets the index caches' directory (each base repository removes its own).
fn cache_root() -> PathBuf {
    let root = scratch().join("snap-crash-cache");
    snap::repo::set_cache_root(root.clone());
    root
}

fn copy_dir(from: &Path, to: &Path) {
    fs::create_dir_all(to).unwrap();
    for e in fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &to.join(e.file_name()));
        } else {
            fs::copy(e.path(), to.join(e.file_name())).unwrap();
        }
    }
}

/// Dates every file in `repo`'s `locks/` three minutes before this host booted, as if the
/// machine had restarted since they were written.
fn reboot(repo: &Path) {
    let before = snap::host::boot_time().expect("boot time") - Duration::from_secs(180);
    for e in fs::read_dir(repo.join("locks")).unwrap() {
        let f = fs::File::options()
            .write(true)
            .open(e.unwrap().path())
            .unwrap();
        f.set_modified(before).unwrap();
    }
}

fn remove_dir(p: &Path) {
    match fs::remove_dir_all(p) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => panic!("{}: {e}", p.display()),
        _ => {}
    }
}

/// Source version `v`: two files every version shares and two of its own (about
/// 1.2 MB, so that a snapshot spans more than one 1 MiB pack).
fn make_source(dir: &Path, v: usize) -> PathBuf {
    let p = dir.join(format!("data{v}"));
    fs::create_dir_all(p.join("sub")).unwrap();
    for i in 0..2 {
        fs::write(
            p.join(format!("shared{i}")),
            random_bytes(300_000, &format!("s{i}")),
        )
        .unwrap();
        fs::write(
            p.join(format!("sub/own{i}")),
            random_bytes(300_000, &format!("v{v}-{i}")),
        )
        .unwrap();
    }
    p
}

fn back_up(repo: &Repository, src: &Path, hour: u32) -> Result<SnapshotId> {
    let opts = BackupOptions {
        paths: vec![src.to_path_buf()],
        time: Some(Utc.with_ymd_and_hms(2026, 1, 1, hour, 0, 0).unwrap()),
        ..Default::default()
    };
    Ok(backup(repo, &opts, None, &NoProgress)?.id)
}

fn open(root: &Path, pass: Option<&[u8]>) -> Result<Repository> {
    let store: Arc<dyn Store> = Arc::new(Local::new(root.to_path_buf()));
    let key = match pass {
        Some(p) => Some(keys::unlock(store.as_ref(), p)?.1),
        None => None,
    };
    Repository::open_store(store, key)
}

/// The id in a repository's config.
fn repo_id(root: &Path) -> String {
    Repository::probe(&Local::new(root.to_path_buf()))
        .unwrap()
        .id()
        .to_string()
}

#[derive(Clone, Copy, PartialEq)]
enum Kind {
    Plain,
    /// Encrypted, with a second key file for `PASS2`.
    Encrypted,
    /// The oldest snapshot forgotten: its data is garbage for prune.
    Forgotten,
    /// An empty repository; `other` has three snapshots for it.
    SyncTarget,
    /// Without the empty `packs/<hh>/` directories, as made before init created them.
    OldLayout,
    /// A fourth backup's packs left unlisted, as by a run killed before its index
    /// file (`Base::unlisted` names them).
    Interrupted,
}

impl Base {
    /// Three snapshots of three source versions in a new repository of `kind`.
    fn new(kind: Kind) -> Base {
        let dir = tempfile::tempdir_in(scratch()).unwrap();
        let sources: Vec<PathBuf> = (1..=4).map(|v| make_source(dir.path(), v)).collect();
        let first = dir.path().join("first");
        let opts = snap::repo::InitOptions {
            pack_size: 1 << 20,
            ..Default::default()
        };
        let cache = cache_root();
        let pass = (kind == Kind::Encrypted).then_some(PASS);
        let repo = match pass {
            Some(p) => {
                let store = Arc::new(Local::new(first.clone()));
                let r = Repository::init_encrypted(store, &opts, p, KDF).unwrap();
                keys::add(r.store().as_ref(), r.key().unwrap(), PASS2, KDF).unwrap();
                r
            }
            None => Repository::init(&first, &opts).unwrap(),
        };
        let mut snapshots: Vec<SnapshotId> = (0..3u32)
            .map(|i| back_up(&repo, &sources[i as usize], i + 1).unwrap())
            .collect();
        if kind == Kind::Forgotten {
            repo.remove_snapshots(&snapshots[..1]).unwrap();
            snapshots.remove(0);
        }
        let mut unlisted = Vec::new();
        if kind == Kind::Interrupted {
            let before: Vec<PackId> = repo
                .pack_files()
                .unwrap()
                .into_iter()
                .map(|p| p.0)
                .collect();
            let files = repo.index_files().unwrap();
            let fourth = back_up(&repo, &sources[3], 4).unwrap();
            repo.remove_snapshots(&[fourth]).unwrap();
            let new_files: Vec<IndexFileId> = repo
                .index_files()
                .unwrap()
                .difference(&files)
                .copied()
                .collect();
            repo.delete_index_files(&new_files).unwrap();
            unlisted = repo
                .pack_files()
                .unwrap()
                .into_iter()
                .map(|p| p.0)
                .filter(|id| !before.contains(id))
                .collect();
            assert!(!unlisted.is_empty());
        }
        let (under_test, other) = if kind == Kind::SyncTarget {
            // Not a copy of the same id (`create_copy`): two repositories with one id
            // share one index cache in a process, and sync then sends nothing.
            let target = dir.path().join("target");
            Repository::init(&target, &opts).unwrap();
            (target, Some((first, std::mem::take(&mut snapshots))))
        } else {
            (first, None)
        };
        drop(repo);
        if kind == Kind::OldLayout {
            for e in fs::read_dir(under_test.join("packs")).unwrap() {
                // Fails for a directory that holds packs, which stays.
                let _ = fs::remove_dir(e.unwrap().path());
            }
        }
        let cache = cache.join(repo_id(&under_test));
        if kind == Kind::Interrupted {
            // It still lists the packs whose index files were deleted.
            remove_dir(&cache);
            let r = open(&under_test, None).unwrap();
            drop(r.lock(false, "rebuild the cache").unwrap());
        }
        let cache_copy = dir.path().join("cache-copy");
        copy_dir(&cache, &cache_copy);
        Base {
            dir,
            repo: under_test,
            cache,
            cache_copy,
            pass,
            snapshots,
            other,
            sources,
            unlisted,
        }
    }
}

/// The source a snapshot was taken of.
fn source_of(snap: &snap::format::snapshot::Snapshot) -> PathBuf {
    match &snap.sources[..] {
        [Source::Path { path }] => PathBuf::from(path),
        other => panic!("unexpected sources {other:?}"),
    }
}

impl Drop for Base {
    fn drop(&mut self) {
        remove_dir(&self.cache);
        if let Some((src, _)) = &self.other {
            remove_dir(&cache_root().join(repo_id(src)));
        }
    }
}

/// An operation under test: what it does to the repository (opened through the crash
/// model) and what must hold after a cut, whether or not it returned.
struct Op {
    name: &'static str,
    kind: Kind,
    run: fn(&Repository, &Base) -> Result<Expect>,
    /// What must hold when the operation did not return `Ok`.
    interrupted: fn(&Base) -> Expect,
}

/// Every base snapshot stays.
fn all_stay(base: &Base) -> Expect {
    Expect {
        present: base.snapshots.clone(),
        opens: base.pass.map(|p| (p, true)).into_iter().collect(),
        ..Default::default()
    }
}

fn op_backup(repo: &Repository, base: &Base) -> Result<Expect> {
    let id = back_up(repo, &base.sources[3], 10)?;
    let mut e = all_stay(base);
    e.present.push(id);
    Ok(e)
}

/// A backup after one killed while its packs were placed but not yet durable: this
/// remakes that state through the crash model (each unlisted pack placed again without
/// any fsync, and noted in the journal of a process that is gone), then backs up the
/// same source, which resumes those packs.
fn op_backup_resuming(repo: &Repository, base: &Base) -> Result<Expect> {
    let store = repo.store();
    let journal = repo.cache_dir().join("journal");
    fs::create_dir_all(&journal).unwrap();
    let mut noted = String::new();
    for id in &base.unlisted {
        let path = snap::repo::pack_path(id);
        let bytes = store.read(&path, u64::MAX)?;
        store.delete(&path)?;
        store.put_volatile(&path, &bytes)?;
        noted.push_str(&id.to_hex());
        noted.push('\n');
    }
    // No PID reaches 4000000000: its process is gone.
    fs::write(journal.join("4000000000-00000000"), noted).unwrap();
    op_backup(repo, base)
}

fn op_forget(repo: &Repository, _: &Base) -> Result<Expect> {
    let _lock = repo.lock(true, "forget")?;
    let snaps = repo.snapshots()?;
    let times: Vec<_> = snaps
        .iter()
        .map(|(_, s)| (s.time, s.tags.clone()))
        .collect();
    let policy = Policy {
        last: 2,
        ..Default::default()
    };
    let decisions = retention::apply(&times, &policy, &Utc, Utc::now())?;
    let (keep, gone): (Vec<_>, Vec<_>) = snaps.iter().zip(&decisions).partition(|(_, d)| d.keep);
    let gone: Vec<SnapshotId> = gone.into_iter().map(|((id, _), _)| *id).collect();
    repo.remove_snapshots(&gone)?;
    Ok(Expect {
        present: keep.into_iter().map(|((id, _), _)| *id).collect(),
        absent: gone,
        ..Default::default()
    })
}

fn forget_interrupted(base: &Base) -> Expect {
    Expect {
        present: base.snapshots[1..].to_vec(),
        ..Default::default()
    }
}

/// Retags the oldest snapshot: a new record, then the old one removed.
fn op_tag(repo: &Repository, base: &Base) -> Result<Expect> {
    let _lock = repo.lock(true, "tag")?;
    let oldest = repo.snapshots()?.remove(0);
    let change = TagChange {
        add: vec!["kept".into()],
        ..Default::default()
    };
    let done = retag(repo, &[oldest], &change)?;
    let mut present = base.snapshots[1..].to_vec();
    present.push(done[0].new);
    Ok(Expect {
        present,
        absent: vec![base.snapshots[0]],
        count: Some(3),
        ..Default::default()
    })
}

/// The oldest snapshot, under its old record or its new one or both, and the others.
fn tag_interrupted(base: &Base) -> Expect {
    Expect {
        present: base.snapshots[1..].to_vec(),
        at_least: 3,
        ..Default::default()
    }
}

fn op_prune(repo: &Repository, base: &Base) -> Result<Expect> {
    let opts = PruneOptions { max_unused: 0.0 };
    let report = plan_prune(repo, &opts)?.execute(&NoProgress)?;
    assert!(report.packs_repacked > 0, "prune has packs to rewrite");
    Ok(all_stay(base))
}

fn op_sync(repo: &Repository, base: &Base) -> Result<Expect> {
    let (src, sent) = base.other.as_ref().expect("a source");
    let report = sync(
        &open(src, None)?,
        repo,
        &snap::ops::sync::SyncOptions::default(),
        &NoProgress,
    )?;
    assert!(report.rewritten, "the target has an id of its own");
    Ok(Expect {
        count: Some(sent.len()),
        ..Default::default()
    })
}

fn op_key_add(repo: &Repository, _: &Base) -> Result<Expect> {
    keys::add(
        repo.store().as_ref(),
        repo.key().expect("encrypted"),
        b"new",
        KDF,
    )?;
    Ok(Expect {
        opens: vec![(PASS, true), (b"new", true)],
        ..Default::default()
    })
}

fn op_key_remove(repo: &Repository, _: &Base) -> Result<Expect> {
    let (id, _) = keys::unlock(repo.store().as_ref(), PASS2)?;
    keys::remove(repo.store().as_ref(), &id)?;
    Ok(Expect {
        opens: vec![(PASS, true), (PASS2, false)],
        ..Default::default()
    })
}

fn op_repair_index(repo: &Repository, base: &Base) -> Result<Expect> {
    snap::ops::repair::repair_index(
        repo,
        snap::ops::repair::RepairOptions::default(),
        &snap::progress::NoProgress,
    )?;
    Ok(all_stay(base))
}

/// How one cut is checked.
#[derive(Clone, Copy, Debug)]
struct Variant {
    cut: u64,
    /// Seed of the unsynced writes that reach the disk; `None`: none do.
    chaos: Option<u64>,
    drop_cache: bool,
}

/// Runs `op` on a fresh copy of the base through the crash model; returns its result
/// and the model.
fn run_op(op: &Op, base: &Base, cut: Option<u64>, work: &Path) -> (Result<Expect>, Arc<CrashFs>) {
    remove_dir(work);
    copy_dir(&base.repo, work);
    remove_dir(&base.cache);
    copy_dir(&base.cache_copy, &base.cache);
    let crash = Arc::new(CrashFs::new(work, cut).unwrap());
    let store: Arc<dyn Store> = Arc::new(Local::with_fs(work.to_path_buf(), crash.clone()));
    let result = (|| {
        let key = match base.pass {
            Some(p) => Some(keys::unlock(store.as_ref(), p)?.1),
            None => None,
        };
        let repo = Repository::open_store(store, key)?;
        (op.run)(&repo, base)
    })();
    (result, crash)
}

/// Cuts `op` as `v` says and checks the repository a reboot finds.
fn cut_and_check(op: &Op, base: &Base, v: Variant) {
    let work = base.dir.path().join("work");
    let after = base.dir.path().join("after");
    let (result, crash) = run_op(op, base, Some(v.cut), &work);
    let ctx = format!("{} cut at step {} ({v:?})", op.name, v.cut);
    let expect = match result {
        Ok(e) => e,
        Err(_) => (op.interrupted)(base),
    };
    remove_dir(&after);
    crash.materialize(&after, v.chaos).unwrap();
    // The reboot: whatever the cut left in locks/ (volatile files, maybe torn) now
    // predates the boot, and the next run must retire it by itself.
    reboot(&after);
    if v.drop_cache {
        remove_dir(&base.cache);
    }
    for (pass, opens) in &expect.opens {
        let store = Local::new(after.clone());
        assert_eq!(
            keys::unlock(&store, pass).is_ok(),
            *opens,
            "{ctx}: passphrase {:?}",
            String::from_utf8_lossy(pass)
        );
    }
    let repo = open(&after, base.pass).unwrap_or_else(|e| panic!("{ctx}: opening: {e}"));
    let report = check(&repo, ReadData::All, &NoProgress).unwrap();
    assert!(
        report.errors.is_empty() && report.damaged.is_empty(),
        "{ctx}: check --read-data: {:?}",
        report.errors
    );
    let snaps = repo.snapshots().unwrap();
    let ids: Vec<SnapshotId> = snaps.iter().map(|(id, _)| *id).collect();
    for id in &expect.present {
        assert!(ids.contains(id), "{ctx}: snapshot {id} is lost");
    }
    if let Some(n) = expect.count {
        assert_eq!(ids.len(), n, "{ctx}: snapshots");
    }
    assert!(
        ids.len() >= expect.at_least,
        "{ctx}: {} snapshots",
        ids.len()
    );
    for id in &expect.absent {
        assert!(!ids.contains(id), "{ctx}: forgotten snapshot {id} is back");
    }
    let target = base.dir.path().join("restored");
    for (_, s) in &snaps {
        remove_dir(&target);
        let opts = RestoreOptions {
            target: target.clone(),
            ..Default::default()
        };
        let out = plan_restore(&repo, s, &opts)
            .and_then(|p| p.execute(&NoProgress))
            .unwrap();
        assert!(out.errors.is_empty(), "{ctx}: restore: {:?}", out.errors);
        let src = source_of(s);
        assert_same_tree(&src, &restored(&target, &src));
    }
    back_up(&repo, &base.sources[3], 20).unwrap_or_else(|e| panic!("{ctx}: next backup: {e}"));
}

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok().map(|v| {
        v.parse()
            .unwrap_or_else(|_| panic!("{name}={v} is not a number"))
    })
}

/// Counts `op`'s steps, then cuts it at each and once more just after it returned (or
/// at `SNAP_CRASH_ITERATIONS` random ones of those) and checks every outcome.
fn crash_test(op: Op) {
    let base = Base::new(op.kind);
    let (result, crash) = run_op(&op, &base, None, &base.dir.path().join("work"));
    if let Err(e) = result {
        panic!("{} without a cut: {e}", op.name);
    }
    let steps = crash.steps();
    let seed = env_u64("SNAP_CRASH_SEED").unwrap_or(1);
    let iterations = env_u64("SNAP_CRASH_ITERATIONS");
    let n = iterations.unwrap_or(2 * (steps + 1));
    for i in 0..n {
        let r = mix(seed ^ mix(i));
        let cut = match iterations {
            Some(_) => 1 + r % (steps + 1),
            None => 1 + i / 2,
        };
        let v = Variant {
            cut,
            chaos: (i % 2 == 1).then_some(r),
            drop_cache: i % 3 == 2,
        };
        cut_and_check(&op, &base, v);
    }
    eprintln!("{}: {steps} steps, {n} cuts checked", op.name);
}

#[test]
fn backup_survives_a_power_cut_at_every_step() {
    crash_test(Op {
        name: "backup",
        kind: Kind::Plain,
        run: op_backup,
        interrupted: all_stay,
    });
}

#[test]
fn backup_creating_pack_directories_survives_a_power_cut_at_every_step() {
    crash_test(Op {
        name: "backup (old layout)",
        kind: Kind::OldLayout,
        run: op_backup,
        interrupted: all_stay,
    });
}

#[test]
fn backup_resuming_an_interrupted_run_survives_a_power_cut_at_every_step() {
    crash_test(Op {
        name: "backup resuming",
        kind: Kind::Interrupted,
        run: op_backup_resuming,
        interrupted: all_stay,
    });
}

#[test]
fn forget_survives_a_power_cut_at_every_step() {
    crash_test(Op {
        name: "forget",
        kind: Kind::Plain,
        run: op_forget,
        interrupted: forget_interrupted,
    });
}

#[test]
fn tag_survives_a_power_cut_at_every_step() {
    crash_test(Op {
        name: "tag",
        kind: Kind::Plain,
        run: op_tag,
        interrupted: tag_interrupted,
    });
}

#[test]
fn prune_survives_a_power_cut_at_every_step() {
    crash_test(Op {
        name: "prune",
        kind: Kind::Forgotten,
        run: op_prune,
        interrupted: all_stay,
    });
}

#[test]
fn sync_survives_a_power_cut_at_every_step() {
    crash_test(Op {
        name: "sync",
        kind: Kind::SyncTarget,
        run: op_sync,
        interrupted: all_stay,
    });
}

#[test]
fn key_add_survives_a_power_cut_at_every_step() {
    crash_test(Op {
        name: "key add",
        kind: Kind::Encrypted,
        run: op_key_add,
        interrupted: all_stay,
    });
}

#[test]
fn key_remove_survives_a_power_cut_at_every_step() {
    crash_test(Op {
        name: "key remove",
        kind: Kind::Encrypted,
        run: op_key_remove,
        interrupted: all_stay,
    });
}

#[test]
fn repair_index_survives_a_power_cut_at_every_step() {
    crash_test(Op {
        name: "repair index",
        kind: Kind::Plain,
        run: op_repair_index,
        interrupted: all_stay,
    });
}

/// `wal push` with the power cut at each of its steps, and twice more with a second
/// push of the same file after the reboot: a push that returned success left the file
/// durable (the reboot finds it, whole); one that did not leaves nothing that reads as
/// archived with other bytes, and the retry PostgreSQL makes succeeds.
#[test]
fn wal_push_survives_a_power_cut_at_every_step() {
    use snap::repo::wal::{WalArchive, WalFile};
    let dir = tempfile::tempdir_in(scratch()).unwrap();
    let base = dir.path().join("base");
    cache_root();
    Repository::init(&base, &snap::repo::InitOptions::default()).unwrap();
    let file = WalFile::parse("000000010000000000000003").unwrap();
    let raw = random_bytes(1 << 20, "wal segment");
    let work = dir.path().join("work");
    let after = dir.path().join("after");
    let push = |cut: Option<u64>| {
        remove_dir(&work);
        copy_dir(&base, &work);
        let crash = Arc::new(CrashFs::new(&work, cut).unwrap());
        let store = Local::with_fs(work.clone(), crash.clone());
        let r = WalArchive::new(&store, None, 3).push(&file, &raw);
        (r, crash)
    };
    let (r, crash) = push(None);
    r.unwrap();
    let steps = crash.steps();
    for cut in 1..=steps + 1 {
        for chaos in [None, Some(mix(cut))] {
            let (r, crash) = push(Some(cut));
            remove_dir(&after);
            crash.materialize(&after, chaos).unwrap();
            let store = Local::new(after.clone());
            let wal = WalArchive::new(&store, None, 3);
            let ctx = format!("cut at step {cut} of {steps} ({chaos:?})");
            match wal.fetch(&file) {
                Ok(Some(b)) => assert!(b == raw, "{ctx}: the archive holds other bytes"),
                Ok(None) => assert!(r.is_err(), "{ctx}: a push reported done is lost"),
                Err(e) => assert!(
                    r.is_err(),
                    "{ctx}: a push reported done reads back damaged: {e}"
                ),
            }
            wal.push(&file, &raw)
                .unwrap_or_else(|e| panic!("{ctx}: the retry failed: {e}"));
            assert_eq!(
                wal.fetch(&file).unwrap().as_deref(),
                Some(&raw[..]),
                "{ctx}"
            );
        }
    }
    eprintln!("wal push: {steps} steps, {} cuts checked", 2 * (steps + 1));
}
