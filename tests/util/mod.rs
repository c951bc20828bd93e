//! Helpers for the end-to-end tests: the real `snap` binary, generated data, tree
//! comparison.

use std::collections::HashMap;
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use assert_cmd::Command;

/// Runs `c`, which must succeed, and parses its standard output as JSON.
pub fn json(mut c: impl std::borrow::BorrowMut<Command>) -> serde_json::Value {
    let out = c.borrow_mut().output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// Called when a server or tool is missing: a failure in CI, a notice elsewhere.
pub fn missing(what: &str, install: &str) {
    let msg = format!("{what} is not available: install it ({install}) to run this test");
    if std::env::var("SNAP_TEST_REQUIRE_SERVERS").as_deref() == Ok("1") {
        panic!("{msg} (SNAP_TEST_REQUIRE_SERVERS=1)");
    }
    eprintln!("SKIPPED: {msg}");
}

/// The real `snap` binary, with its index caches in the test target's scratch
/// directory rather than the user's.
pub fn snap_bin() -> Command {
    let mut c = Command::cargo_bin("snap").unwrap();
    c.env(
        "SNAP_CACHE_DIR",
        Path::new(env!("CARGO_TARGET_TMPDIR")).join("snap-cache"),
    );
    c
}

/// `snap --repo REPO ARGS` with `vars` set and its own cache directory `cache`, as a
/// process to start.
pub fn snap_process(
    repo: &str,
    cache: &Path,
    vars: &[(&'static str, String)],
    args: &[&str],
) -> std::process::Command {
    let mut c = std::process::Command::new(assert_cmd::cargo::cargo_bin("snap"));
    c.env_remove("SNAP_REPO")
        .env("SNAP_CACHE_DIR", cache)
        .envs(vars.iter().map(|(k, v)| (*k, v.as_str())))
        .arg("--repo")
        .arg(repo)
        .args(args);
    c
}

/// [`snap_process`] as a command to run and assert on.
pub fn snap_at(
    repo: &str,
    cache: &Path,
    vars: &[(&'static str, String)],
    args: &[&str],
) -> Command {
    Command::from_std(snap_process(repo, cache, vars, args))
}

/// The files below `dir`, recursively.
pub fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in fs::read_dir(dir).unwrap().flatten() {
        if e.file_type().unwrap().is_dir() {
            out.extend(walk(&e.path()));
        } else {
            out.push(e.path());
        }
    }
    out
}

/// The restore's temporary files below `target` (absent: none).
pub fn restore_temps(target: &Path) -> Vec<(PathBuf, u64)> {
    if !target.exists() {
        return Vec::new();
    }
    walk(target)
        .into_iter()
        .filter(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with(".snap-restore-"))
        })
        .filter_map(|p| fs::metadata(&p).ok().map(|m| (p, m.len())))
        .collect()
}

/// Sends Ctrl-C to `run`, a restore into `target`, once one of its temporary files
/// holds `bytes`, and returns its output. It is stopped (SIGSTOP) first, so that the
/// signal surely finds it in the middle, and sees the signal when it goes on.
pub fn ctrl_c_restore_at(
    mut run: std::process::Child,
    target: &Path,
    bytes: u64,
) -> std::process::Output {
    use std::time::{Duration, Instant};
    let start = Instant::now();
    while !restore_temps(target).iter().any(|(_, len)| *len >= bytes) {
        assert!(
            run.try_wait().unwrap().is_none(),
            "the restore finished before it could be interrupted"
        );
        assert!(start.elapsed() < Duration::from_secs(120));
        std::thread::sleep(Duration::from_millis(1));
    }
    let pid = rustix::process::Pid::from_child(&run);
    for sig in [
        rustix::process::Signal::STOP,
        rustix::process::Signal::INT,
        rustix::process::Signal::CONT,
    ] {
        rustix::process::kill_process(pid, sig).unwrap();
    }
    run.wait_with_output().unwrap()
}

/// A scratch directory with a repository path inside it.
pub struct Env {
    pub dir: tempfile::TempDir,
}

impl Env {
    pub fn new() -> Env {
        Env {
            dir: tempfile::tempdir().unwrap(),
        }
    }

    pub fn path(&self, p: &str) -> PathBuf {
        self.dir.path().join(p)
    }

    pub fn repo(&self) -> PathBuf {
        self.path("repo")
    }

    /// The index caches of this scratch directory's repositories.
    pub fn cache(&self) -> PathBuf {
        self.path("cache")
    }

    /// The index cache file of the repository at `repo` (named by the id in its config
    /// and the BLAKE3 of its canonical path).
    pub fn index_cache_of(&self, repo: &Path) -> PathBuf {
        let config: serde_json::Value =
            serde_json::from_slice(&fs::read(repo.join("config")).unwrap()).unwrap();
        let path = fs::canonicalize(repo).unwrap();
        let place = blake3::hash(path.display().to_string().as_bytes()).to_hex();
        self.cache()
            .join(config["id"].as_str().unwrap())
            .join(&place[..16])
            .join("index.sqlite")
    }

    /// Deletes the index cache of the repository at `repo` (SQLite's file and its WAL).
    pub fn delete_index_cache_of(&self, repo: &Path) {
        let db = self.index_cache_of(repo);
        for suffix in ["", "-wal", "-shm"] {
            let mut p = db.clone().into_os_string();
            p.push(suffix);
            match fs::remove_file(&p) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => panic!("{e}"),
                _ => {}
            }
        }
    }

    /// `snap --repo <repo> ARGS...`, with a clean environment and this directory's
    /// cache.
    pub fn snap(&self, args: &[&str]) -> Command {
        let mut c = snap_bin();
        c.env("SNAP_CACHE_DIR", self.cache())
            .env_remove("SNAP_REPO")
            .arg("--repo")
            .arg(self.repo())
            .args(args);
        c
    }

    pub fn init(&self) {
        self.snap(&["init"]).assert().success();
    }

    /// Runs a backup with `--json` and returns its output.
    pub fn backup_json(&self, args: &[&str]) -> serde_json::Value {
        json(self.snap(&[&["backup", "--json"], args].concat()))
    }

    pub fn snapshots(&self) -> Vec<serde_json::Value> {
        serde_json::from_value(json(self.snap(&["list", "--json"]))).unwrap()
    }

    pub fn restore(&self, snapshot: &str, target: &Path) {
        self.snap(&["restore", snapshot, "--target", target.to_str().unwrap()])
            .assert()
            .success();
    }
}

/// Finds the data pack holding most bytes.
pub fn largest_pack(repo: &Path) -> std::path::PathBuf {
    let mut best = (0, None);
    for sub in fs::read_dir(repo.join("packs")).unwrap() {
        for f in fs::read_dir(sub.unwrap().path()).unwrap() {
            let p = f.unwrap().path();
            let len = fs::metadata(&p).unwrap().len();
            if len > best.0 {
                best = (len, Some(p));
            }
        }
    }
    best.1.unwrap()
}

/// Bytes of the files below `dir`.
pub fn du(dir: &Path) -> u64 {
    let mut n = 0;
    for e in fs::read_dir(dir).unwrap() {
        let e = e.unwrap();
        let md = e.metadata().unwrap();
        n += if md.is_dir() { du(&e.path()) } else { md.len() };
    }
    n
}

/// Deterministic incompressible bytes (BLAKE3 in XOF mode).
pub fn random_bytes(len: usize, seed: &str) -> Vec<u8> {
    let mut out = vec![0u8; len];
    blake3::Hasher::new()
        .update(seed.as_bytes())
        .finalize_xof()
        .fill(&mut out);
    out
}

/// The path of `src` as restored under `target` (sources keep their absolute path).
pub fn restored(target: &Path, src: &Path) -> PathBuf {
    target.join(src.strip_prefix("/").unwrap())
}

/// Asserts that two trees hold the same entries with the same types, permissions,
/// mtimes (ns), contents, link targets and hard-link structure.
pub fn assert_same_tree(a: &Path, b: &Path) {
    let mut inode_map: HashMap<u64, u64> = HashMap::new();
    compare(a, b, &mut inode_map, true);
}

/// `top`: the two roots themselves, whose mtimes may differ (a restore target's is not
/// restored).
fn compare(a: &Path, b: &Path, inodes: &mut HashMap<u64, u64>, top: bool) {
    let ma = fs::symlink_metadata(a).unwrap();
    let mb = fs::symlink_metadata(b).unwrap_or_else(|e| panic!("{}: {e}", b.display()));
    assert_eq!(ma.file_type(), mb.file_type(), "type of {}", b.display());
    if !ma.file_type().is_symlink() {
        assert_eq!(ma.mode(), mb.mode(), "mode of {}", b.display());
    }
    if !top {
        assert_eq!(
            (ma.mtime(), ma.mtime_nsec()),
            (mb.mtime(), mb.mtime_nsec()),
            "mtime of {}",
            b.display()
        );
    }
    if ma.is_file() {
        assert_eq!(ma.len(), mb.len(), "size of {}", b.display());
        assert!(
            fs::read(a).unwrap() == fs::read(b).unwrap(),
            "content of {}",
            b.display()
        );
        if ma.nlink() > 1 {
            assert_eq!(ma.nlink(), mb.nlink(), "link count of {}", b.display());
            let want = *inodes.entry(ma.ino()).or_insert(mb.ino());
            assert_eq!(want, mb.ino(), "{} should be a hard link", b.display());
        }
    } else if ma.file_type().is_symlink() {
        assert_eq!(fs::read_link(a).unwrap(), fs::read_link(b).unwrap());
    } else if ma.is_dir() {
        let names = |p: &Path| {
            let mut v: Vec<_> = fs::read_dir(p)
                .unwrap()
                .map(|e| e.unwrap().file_name())
                .collect();
            v.sort();
            v
        };
        let na = names(a);
        assert_eq!(na, names(b), "entries of {}", b.display());
        for n in na {
            compare(&a.join(&n), &b.join(&n), inodes, false);
        }
    }
}
pub mod garage;
pub mod link;
pub mod pg;
pub mod servers;

/// A tiny xorshift generator: a fault test's moments, reproducible from a seed.
pub struct Rng(u64);

impl Rng {
    pub fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

/// A kill -9 test's run: its iterations (`SNAP_FAULT_ITERATIONS`, else `default`), its
/// seed (`SNAP_FAULT_SEED`) and the generator of its moments.
pub fn fault_run(default: u64) -> (u64, u64, Rng) {
    let var = |name: &str| std::env::var(name).ok().and_then(|v| v.parse().ok());
    let iterations = var("SNAP_FAULT_ITERATIONS").unwrap_or(default);
    let seed = var("SNAP_FAULT_SEED").unwrap_or(0x5eed);
    (iterations, seed, Rng(seed | 1))
}

/// How many of `path`'s pages in the page cache are dirty (written, not yet on the
/// disk), from the kernel's page flags: the file is mapped and read by python3, its
/// pages' frame numbers come from `/proc/self/pagemap` and their flags from
/// `/proc/kpageflags` (`KPF_DIRTY`). `None` when that cannot be read here (no python3,
/// or not root: frame numbers read as 0).
pub fn dirty_pages(path: &Path) -> Option<u64> {
    const SCRIPT: &str = r#"
import mmap, os, struct, sys
path = sys.argv[1]
fd = os.open(path, os.O_RDONLY)
size = os.fstat(fd).st_size
m = mmap.mmap(fd, size, prot=mmap.PROT_READ)
n = (size + 4095) // 4096
for i in range(n):
    m[i * 4096]
start = next(int(l.split("-")[0], 16) for l in open("/proc/self/maps") if l.rstrip().endswith(path))
pagemap, flags = open("/proc/self/pagemap", "rb"), open("/proc/kpageflags", "rb")
dirty = 0
for i in range(n):
    pagemap.seek((start // 4096 + i) * 8)
    pfn = struct.unpack("<Q", pagemap.read(8))[0] & ((1 << 55) - 1)
    if pfn == 0:
        sys.exit(3)
    flags.seek(pfn * 8)
    dirty += (struct.unpack("<Q", flags.read(8))[0] >> 4) & 1
print(dirty)
"#;
    let out = std::process::Command::new("python3")
        .args(["-c", SCRIPT])
        .arg(fs::canonicalize(path).unwrap())
        .output()
        .ok()?;
    if !out.status.success() {
        return None;
    }
    String::from_utf8_lossy(&out.stdout).trim().parse().ok()
}
