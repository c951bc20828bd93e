//! `snap mount` through the real binary and a real FUSE mount: a mounted snapshot
//! against its source tree, random and concurrent reads, an encrypted repository, new
//! snapshots appearing, a damaged pack, prune against a live mount, and unmounting by
//! SIGINT and by `fusermount3 -u`.

use std::ffi::OsStr;
use std::fs;
use std::io::Read;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::util::{largest_pack, random_bytes, Env};

const PASS: &str = "mount test passphrase";

/// A running `snap mount`: killed, and its mount point unmounted, on drop.
struct Mounted {
    child: Option<Child>,
    point: PathBuf,
    stderr: PathBuf,
}

impl Mounted {
    /// Starts `snap mount` of `env`'s repository on `point` (created), with the extra
    /// environment `vars`, and waits until the file system is there; `None` (said, or a
    /// failure under SNAP_TEST_REQUIRE_SERVERS=1) when this machine cannot mount FUSE.
    fn start(env: &Env, repo: &str, point: &Path, vars: &[(&str, &str)]) -> Option<Mounted> {
        Mounted::start_with(env, repo, point, vars, &[])
    }

    /// [`Mounted::start`] with extra `snap mount` options `args`.
    fn start_with(
        env: &Env,
        repo: &str,
        point: &Path,
        vars: &[(&str, &str)],
        args: &[&str],
    ) -> Option<Mounted> {
        if !fuse_available() {
            crate::util::missing(
                "FUSE (/dev/fuse and fusermount3)",
                "apt-get install fuse3; in a container, give it /dev/fuse and CAP_SYS_ADMIN",
            );
            return None;
        }
        fs::create_dir_all(point).unwrap();
        let stderr = env.path(&format!(
            "mount-{}.stderr",
            point.file_name().unwrap().to_string_lossy()
        ));
        let child = mount_command(env, repo, point, vars)
            .args(args)
            .stdout(Stdio::null())
            .stderr(fs::File::create(&stderr).unwrap())
            .spawn()
            .unwrap();
        let mut m = Mounted {
            child: Some(child),
            point: point.to_path_buf(),
            stderr,
        };
        let start = Instant::now();
        while !is_mounted(point) {
            if let Some(status) = m.child.as_mut().unwrap().try_wait().unwrap() {
                panic!("snap mount exited with {status}: {}", m.stderr());
            }
            assert!(
                start.elapsed() < Duration::from_secs(60),
                "not mounted within a minute: {}",
                m.stderr()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        Some(m)
    }

    fn stderr(&self) -> String {
        fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    /// Sends `signal`, and returns the exit code once the process is gone.
    fn signal(&mut self, signal: rustix::process::Signal) -> Option<i32> {
        let mut child = self.child.take().unwrap();
        rustix::process::kill_process(rustix::process::Pid::from_child(&child), signal).unwrap();
        wait(&mut child, &self.stderr)
    }

    /// Unmounts with `fusermount3 -u`, and returns the exit code of `snap mount`.
    fn fusermount_u(&mut self) -> Option<i32> {
        let ok = Command::new("fusermount3")
            .arg("-u")
            .arg(&self.point)
            .status()
            .unwrap();
        assert!(ok.success(), "fusermount3 -u failed");
        let mut child = self.child.take().unwrap();
        wait(&mut child, &self.stderr)
    }
}

impl Drop for Mounted {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        // Also when the process is gone and left the mount stale (`mountpoint` then
        // fails to stat it).
        let _ = Command::new("fusermount3")
            .args(["-u", "-z", "-q"])
            .arg(&self.point)
            .stderr(Stdio::null())
            .status();
    }
}

/// Waits up to a minute for `child` to exit; its exit code.
fn wait(child: &mut Child, stderr: &Path) -> Option<i32> {
    let start = Instant::now();
    loop {
        if let Some(s) = child.try_wait().unwrap() {
            return s.code();
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "snap mount did not exit: {}",
            fs::read_to_string(stderr).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// `snap --repo REPO ARGS` with `env`'s cache and the extra environment `vars`.
fn snap_at(env: &Env, repo: &str, vars: &[(&str, &str)], args: &[&OsStr]) -> Command {
    let mut c = Command::new(assert_cmd::cargo::cargo_bin("snap"));
    c.env("SNAP_CACHE_DIR", env.cache())
        .env_remove("SNAP_REPO")
        .env_remove("SNAP_PASSWORD_FILE")
        .env_remove("SNAP_KEY_FILE")
        .args(["--repo", repo])
        .args(args);
    for (k, v) in vars {
        c.env(k, v);
    }
    c
}

fn mount_command(env: &Env, repo: &str, point: &Path, vars: &[(&str, &str)]) -> Command {
    snap_at(env, repo, vars, &["mount".as_ref(), point.as_os_str()])
}

fn local(env: &Env) -> String {
    env.repo().to_str().unwrap().to_string()
}

fn fuse_available() -> bool {
    Path::new("/dev/fuse").exists()
        && Command::new("fusermount3")
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok()
}

fn is_mounted(point: &Path) -> bool {
    Command::new("mountpoint")
        .arg("-q")
        .arg(point)
        .status()
        .is_ok_and(|s| s.success())
}

/// The directory of `src` inside the mounted snapshot `snapshot` (`latest`, a name).
fn inside(m: &Mounted, snapshot: &str, src: &Path) -> PathBuf {
    m.point
        .join("snapshots")
        .join(snapshot)
        .join(src.strip_prefix("/").unwrap())
}

/// Asserts owners, sizes and link counts of every entry below `a` equal those below `b`
/// (modes, times, contents, link targets and hard links: `assert_same_tree`).
fn assert_same_owners_and_sizes(a: &Path, b: &Path) {
    for e in fs::read_dir(a).unwrap() {
        let e = e.unwrap();
        let (pa, pb) = (e.path(), b.join(e.file_name()));
        let (ma, mb) = (
            fs::symlink_metadata(&pa).unwrap(),
            fs::symlink_metadata(&pb).unwrap(),
        );
        assert_eq!(
            (ma.uid(), ma.gid()),
            (mb.uid(), mb.gid()),
            "{}",
            pb.display()
        );
        if ma.is_dir() {
            assert_same_owners_and_sizes(&pa, &pb);
        } else {
            assert_eq!(ma.len(), mb.len(), "size of {}", pb.display());
            assert_eq!(ma.nlink(), mb.nlink(), "links of {}", pb.display());
        }
    }
}

#[test]
fn a_mounted_snapshot_reads_as_its_source_tree() {
    let env = Env::new();
    env.init();
    let src = env.path("src");
    crate::make_tree(&src);
    env.backup_json(&[src.to_str().unwrap(), "--tag", "nightly"]);
    let point = env.path("mnt");
    let Some(mut m) = Mounted::start(&env, &local(&env), &point, &[]) else {
        return;
    };
    let snap = inside(&m, "latest", &src);
    crate::util::assert_same_tree(&src, &snap);
    assert_same_owners_and_sizes(&src, &snap);
    let diff = Command::new("diff")
        .args(["-r", "--no-dereference"])
        .arg(&src)
        .arg(&snap)
        .output()
        .unwrap();
    // GNU diff compares no FIFOs: it names each pair, and that is all it may say.
    let said = String::from_utf8_lossy(&diff.stdout);
    let fifo = |l: &str| l.contains("/a/fifo is a fifo while file ") && l.ends_with("is a fifo");
    assert!(
        diff.status.code().is_some_and(|c| c <= 1)
            && diff.stderr.is_empty()
            && said.lines().all(fifo),
        "diff -r: {said}{}",
        String::from_utf8_lossy(&diff.stderr)
    );

    // The layout: one snapshot, reached from latest, its host and its tag.
    let names: Vec<String> = fs::read_dir(point.join("snapshots"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(names.len(), 2, "{names:?}");
    let name = names.iter().find(|n| *n != "latest").unwrap();
    let id = env.snapshots()[0]["id"].as_str().unwrap()[..8].to_string();
    assert!(
        name.len() == 25 + 1 + 8 && name.ends_with(&format!("_{id}")),
        "{name}"
    );
    let host = fs::read_dir(point.join("hosts"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    for via in [host, point.join("tags/nightly")] {
        assert_eq!(
            fs::read_link(via.join(name)).unwrap(),
            Path::new("../../snapshots").join(name)
        );
        let small = via
            .join("latest")
            .join(src.strip_prefix("/").unwrap())
            .join("a/small.txt");
        assert_eq!(fs::read(small).unwrap(), b"hello snap\n");
    }

    // Random offsets of the large file, and several readers at once.
    let want = fs::read(src.join("big.bin")).unwrap();
    let big = fs::File::open(snap.join("big.bin")).unwrap();
    let mut rng = 0x9e37_79b9_7f4a_7c15u64;
    for _ in 0..300 {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        let at = usize::try_from(rng % want.len() as u64).unwrap();
        let len = usize::try_from((rng >> 40) % (3 << 20)).unwrap();
        let end = (at + len).min(want.len());
        let mut got = vec![0u8; end - at];
        big.read_exact_at(&mut got, at as u64).unwrap();
        assert!(got == want[at..end], "bytes {at}..{end} differ");
    }
    std::thread::scope(|s| {
        for t in 0..4usize {
            let (path, want) = (snap.join("big.bin"), &want);
            s.spawn(move || {
                let mut got = Vec::new();
                let mut f = fs::File::open(path).unwrap();
                let mut buf = vec![0u8; (64 << 10) * (t + 1)];
                loop {
                    let n = f.read(&mut buf).unwrap();
                    if n == 0 {
                        break;
                    }
                    got.extend_from_slice(&buf[..n]);
                }
                assert!(got == *want, "reader {t} read other bytes");
            });
        }
    });

    drop(big);

    // A second mount on a busy mount point is refused by name.
    let said = env.path("second.stderr");
    let mut second = mount_command(&env, &local(&env), &point, &[])
        .stderr(fs::File::create(&said).unwrap())
        .spawn()
        .unwrap();
    let start = Instant::now();
    let code = loop {
        if let Some(s) = second.try_wait().unwrap() {
            break s.code();
        }
        if start.elapsed() > Duration::from_secs(30) {
            let _ = second.kill();
            let _ = second.wait();
            let _ = Command::new("fusermount3").arg("-u").arg(&point).status();
            panic!("a second mount on the busy mount point was not refused");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let said = fs::read_to_string(said).unwrap();
    assert!(
        code == Some(1) && said.contains(&point.display().to_string()) && said.contains("busy"),
        "{said}"
    );

    // Ctrl-C unmounts cleanly.
    assert_eq!(
        m.signal(rustix::process::Signal::INT),
        Some(0),
        "{}",
        m.stderr()
    );
    assert!(!is_mounted(&point), "still mounted after SIGINT");
    assert!(m.stderr().contains("unmounted"), "{}", m.stderr());
}

#[test]
fn a_missing_mount_point_is_named() {
    let env = Env::new();
    env.init();
    let point = env.path("nowhere");
    let out = mount_command(&env, &local(&env), &point, &[])
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.code() == Some(1)
            && said.contains(&format!("mount point {}: does not exist", point.display())),
        "{said}"
    );
}

#[test]
fn an_encrypted_mount_shows_new_snapshots_and_keeps_prune_out() {
    let env = Env::new();
    let with_pass = |args: &[&str]| {
        let mut c = env.snap(args);
        c.env("SNAP_PASSWORD", PASS)
            .env_remove("SNAP_PASSWORD_FILE")
            .env_remove("SNAP_KEY_FILE");
        c
    };
    with_pass(&["init", "--encrypt"]).assert().success();
    let src = env.path("src");
    fs::create_dir_all(&src).unwrap();
    fs::write(src.join("one"), random_bytes(5 << 20, "one")).unwrap();
    with_pass(&["backup", src.to_str().unwrap()])
        .assert()
        .success();
    let point = env.path("mnt");
    let Some(mut m) = Mounted::start(&env, &local(&env), &point, &[("SNAP_PASSWORD", PASS)]) else {
        return;
    };
    assert!(
        fs::read(inside(&m, "latest", &src).join("one")).unwrap() == random_bytes(5 << 20, "one")
    );

    // A backup while mounted (both hold shared locks) shows up without remounting.
    fs::write(src.join("two"), b"second snapshot").unwrap();
    with_pass(&["backup", src.to_str().unwrap()])
        .assert()
        .success();
    let start = Instant::now();
    loop {
        let n = fs::read_dir(point.join("snapshots")).unwrap().count();
        if n == 3 {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "the new snapshot did not appear ({n} entries)"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let start = Instant::now();
    let two = loop {
        match fs::read(inside(&m, "latest", &src).join("two")) {
            Ok(b) => break b,
            // `latest` may still point at the first snapshot for a second.
            Err(_) if start.elapsed() < Duration::from_secs(20) => {
                std::thread::sleep(Duration::from_millis(200));
            }
            Err(e) => panic!("{e}"),
        }
    };
    assert_eq!(two, b"second snapshot");

    // Prune needs the exclusive lock: refused while mounted, naming the mount.
    let out = with_pass(&["prune"]).output().unwrap();
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && said.contains("locked") && said.contains("lock for mount"),
        "{said}"
    );

    assert_eq!(m.fusermount_u(), Some(0), "{}", m.stderr());
    assert!(!is_mounted(&point));
    with_pass(&["prune"]).assert().success();
}

#[test]
fn an_idle_mount_lets_prune_run_and_reads_what_it_moved() {
    let env = Env::new();
    env.init();
    let src = env.path("src");
    fs::create_dir_all(&src).unwrap();
    let kept = random_bytes(12 << 20, "kept");
    fs::write(src.join("kept.bin"), &kept).unwrap();
    fs::write(src.join("gone.bin"), random_bytes(4 << 20, "gone")).unwrap();
    let first = env.backup_json(&[src.to_str().unwrap()])["id"]
        .as_str()
        .unwrap()
        .to_string();
    fs::remove_file(src.join("gone.bin")).unwrap();
    env.backup_json(&[src.to_str().unwrap()]);
    let point = env.path("mnt");
    let Some(m) = Mounted::start_with(
        &env,
        &local(&env),
        &point,
        &[],
        &["--unlock-after", "1s", "--cache-size", "1M"],
    ) else {
        return;
    };
    let file = inside(&m, "latest", &src).join("kept.bin");
    assert!(fs::read(&file).unwrap() == kept);

    // An open file keeps the lock, however long it stays open.
    let open = fs::File::open(inside(&m, "latest", &src).join("kept.bin")).unwrap();
    std::thread::sleep(Duration::from_secs(3));
    let out = env.snap(&["prune"]).output().unwrap();
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && said.contains("lock for mount"),
        "{said}"
    );
    drop(open);

    // Idle, the mount gives the lock up: forgetting the first snapshot and pruning
    // rewrites the pack both files were in, moving kept.bin's chunks.
    let both = largest_pack(&env.repo());
    env.snap(&["--retry-lock", "30s", "forget", &first, "--prune"])
        .assert()
        .success();
    assert!(
        !both.exists(),
        "prune left the pack in place: the test reads nothing moved"
    );
    // The kernel must ask again, not answer from the pages it kept.
    let f = fs::File::open(&file).unwrap();
    rustix::fs::fadvise(&f, 0, None, rustix::fs::Advice::DontNeed).unwrap();
    drop(f);
    // The next request takes the lock again and reads where prune moved the chunks.
    assert!(fs::read(&file).unwrap() == kept, "{}", m.stderr());
    assert_eq!(
        fs::read_dir(point.join("snapshots")).unwrap().count(),
        2,
        "the forgotten snapshot is still listed"
    );
    let said = m.stderr();
    assert!(!said.contains("error"), "{said}");

    // An exclusive holder that does not go (this test's own live process): a request of
    // the idle mount fails with EAGAIN after a short wait, rather than leaving its
    // caller unkillable until the holder is done.
    std::thread::sleep(Duration::from_secs(3));
    let lock = serde_json::json!({
        "host": rustix::system::uname().nodename().to_string_lossy(),
        "pid": std::process::id(),
        "time": chrono::Utc::now().to_rfc3339(),
        "exclusive": true,
        "purpose": "prune",
    });
    fs::write(env.repo().join("locks/exclusive.json"), lock.to_string()).unwrap();
    let started = Instant::now();
    // Opened while the kernel still knew the file: read it afresh, past its pages.
    let e = match fs::File::open(&file) {
        Ok(f) => {
            rustix::fs::fadvise(&f, 0, None, rustix::fs::Advice::DontNeed).unwrap();
            drop(f);
            fs::read(&file).unwrap_err()
        }
        Err(e) => e,
    };
    assert_eq!(
        e.raw_os_error(),
        Some(rustix::io::Errno::AGAIN.raw_os_error()),
        "{e}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(45),
        "the request waited {:?}",
        started.elapsed()
    );
    fs::remove_file(env.repo().join("locks/exclusive.json")).unwrap();
    assert!(fs::read(&file).unwrap() == kept, "{}", m.stderr());
}

#[test]
fn a_damaged_pack_fails_only_its_files_with_eio() {
    let env = Env::new();
    env.init();
    let src = env.path("src");
    fs::create_dir_all(&src).unwrap();
    fs::write(src.join("victim.bin"), random_bytes(3 << 20, "victim")).unwrap();
    fs::write(src.join("other.txt"), b"unaffected").unwrap();
    env.backup_json(&[src.to_str().unwrap()]);
    let pack = largest_pack(&env.repo());
    let mut bytes = fs::read(&pack).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x01;
    fs::write(&pack, bytes).unwrap();
    let point = env.path("mnt");
    let Some(m) = Mounted::start(&env, &local(&env), &point, &[]) else {
        return;
    };
    let dir = inside(&m, "latest", &src);
    let e = fs::read(dir.join("victim.bin")).unwrap_err();
    assert_eq!(
        e.raw_os_error(),
        Some(rustix::io::Errno::IO.raw_os_error()),
        "{e}"
    );
    assert_eq!(fs::read(dir.join("other.txt")).unwrap(), b"unaffected");
    let said = m.stderr();
    assert!(
        said.contains("victim.bin") && said.contains("checksum mismatch"),
        "{said}"
    );
    assert!(
        m.child.is_some() && is_mounted(&point),
        "the mount went away"
    );
}

#[test]
fn an_s3_repository_mounts() {
    let Some(s3) = crate::util::garage::Garage::single() else {
        return;
    };
    let env = Env::new();
    let vars: Vec<(&str, String)> = s3.env();
    let vars: Vec<(&str, &str)> = vars.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let repo = s3.url("mounted");
    let run = |args: &[&str]| {
        let args: Vec<&OsStr> = args.iter().map(OsStr::new).collect();
        let out = snap_at(&env, &repo, &vars, &args).output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    run(&["init"]);
    let src = env.path("src");
    fs::create_dir_all(src.join("d")).unwrap();
    fs::write(src.join("d/f"), random_bytes(2 << 20, "s3")).unwrap();
    run(&["backup", src.to_str().unwrap()]);
    let point = env.path("mnt");
    let Some(mut m) = Mounted::start(&env, &repo, &point, &vars) else {
        return;
    };
    assert!(
        fs::read(inside(&m, "latest", &src).join("d/f")).unwrap() == random_bytes(2 << 20, "s3")
    );
    assert_eq!(
        m.signal(rustix::process::Signal::TERM),
        Some(0),
        "{}",
        m.stderr()
    );
    assert!(!is_mounted(&point));
}
