//! `snap mount`: the repository's snapshots as a read-only FUSE file system, laid out
//! as restic's mount is:
//!
//! ```text
//! snapshots/2026-12-03T20:50:39+07:00_1a2b3c4d/...   each snapshot (local start time; short id)
//! snapshots/latest                             -> the newest
//! hosts/<host>/<time>_<id>, hosts/<host>/latest   -> ../../snapshots/<time>_<id>
//! tags/<tag>/<time>_<id>, tags/<tag>/latest
//! ```
//!
//! Inside a snapshot the paths are those `snap ls` shows, with the recorded modes,
//! owners, times, link targets, hard-link counts and sizes. Trees are loaded when a
//! directory is looked into (see `fs`); file contents are read from the packs through
//! a bounded cache of decoded chunks (see `cache`).
//!
//! [`mount`] runs in the foreground for as long as the mount lasts. While the file
//! system is in use it holds a shared lock of the repository, so that prune, which
//! needs the exclusive lock, cannot delete packs the mount reads; when idle it gives
//! the lock up and takes it again at the next request (see `hold`). It returns once
//! the file system is unmounted: by `fusermount3 -u`, or by the interruption flag
//! (SIGINT or SIGTERM, which the CLI sets), on which it unmounts.

mod cache;
mod fs;
mod hold;

use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::error::{Error, Result, Usage};
use crate::repo::Repository;

/// Options of a mount.
#[derive(Clone, Debug)]
pub struct MountOptions {
    /// Bytes of decoded chunks kept in memory.
    pub cache_bytes: u64,
    /// Threads serving the kernel's requests (readers of different files, or of
    /// different parts of one, are served at once).
    pub threads: usize,
    /// How long the file system stays unused (no request, no open file) before the
    /// repository lock is given up.
    pub idle: Duration,
}

impl Default for MountOptions {
    fn default() -> Self {
        MountOptions {
            cache_bytes: 16 << 20,
            threads: 4,
            idle: Duration::from_secs(60),
        }
    }
}

/// How often the mount looks for an unmount or an interruption, and at its lock.
const POLL: Duration = Duration::from_millis(100);

/// Mounts the snapshots of `repo` on directory `mountpoint` and serves them until the
/// file system is unmounted (or the interruption flag is set: then it unmounts);
/// `mounted` is called once the mount is in place.
pub fn mount(
    repo: Repository,
    mountpoint: &Path,
    opts: &MountOptions,
    mounted: &dyn Fn(),
) -> Result<()> {
    check_mount_point(mountpoint)?;
    let repo = Arc::new(repo);
    // Shared: prune (exclusive) must not delete packs the mount reads.
    let hold = Arc::new(hold::Hold::new(repo.clone(), opts.idle)?);
    let fs = fs::SnapFs::new(repo, opts, hold.clone());
    let mut config = fuser::Config::default();
    config.mount_options = vec![
        fuser::MountOption::RO,
        fuser::MountOption::FSName("snap".into()),
        fuser::MountOption::Subtype("snap".into()),
        // The kernel checks the recorded modes and owners, as for restored files.
        fuser::MountOption::DefaultPermissions,
        fuser::MountOption::NoSuid,
        fuser::MountOption::NoDev,
    ];
    config.n_threads = Some(opts.threads.max(1));
    let mount_error = |source: std::io::Error| Error::Mount {
        path: mountpoint.to_path_buf(),
        source,
    };
    let session = fuser::Session::new(fs, mountpoint, &config).map_err(mount_error)?;
    let session = session.spawn().map_err(mount_error)?;
    mounted();
    loop {
        if crate::interrupt::requested() {
            return unmount(session, mountpoint).map_err(mount_error);
        }
        if session.guard.is_finished() {
            // Unmounted from outside (`fusermount3 -u`).
            return session.join().map_err(mount_error);
        }
        hold.tick();
        std::thread::sleep(POLL);
    }
}

/// Unmounts, lazily (`fusermount3 -u -z`): the mount point is free at once, and
/// processes that still have files open in it are served until they close them.
/// Without `fusermount3` (root needs none to mount), a plain unmount, which fails while
/// the file system is in use.
fn unmount(session: fuser::BackgroundSession, mountpoint: &Path) -> std::io::Result<()> {
    let detached = std::process::Command::new("fusermount3")
        .args(["-u", "-z", "--"])
        .arg(mountpoint)
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !detached {
        return session.umount_and_join();
    }
    let start = Instant::now();
    let mut said = false;
    while !session.guard.is_finished() {
        if !said && start.elapsed() > Duration::from_secs(1) {
            log::warn!(
                "{} is unmounted; files still open in it are served until they are closed",
                mountpoint.display()
            );
            said = true;
        }
        std::thread::sleep(POLL);
    }
    session.join()
}

/// Checks that `path` is a directory nothing is mounted on.
fn check_mount_point(path: &Path) -> Result<()> {
    let problem = |problem: &str| -> Error {
        Usage::MountPoint {
            path: path.to_path_buf(),
            problem: problem.to_string(),
        }
        .into()
    };
    let meta = match std::fs::metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(problem("does not exist; create the directory first"))
        }
        Err(e) if e.raw_os_error() == Some(rustix::io::Errno::NOTCONN.raw_os_error()) => {
            return Err(problem(
                "is a FUSE mount whose process is gone; unmount it with `fusermount3 -u` first",
            ))
        }
        Err(source) => {
            return Err(Error::Io {
                path: path.to_path_buf(),
                source,
            })
        }
    };
    if !meta.is_dir() {
        return Err(problem("is not a directory"));
    }
    let up = path.join("..");
    let parent = std::fs::metadata(&up).map_err(|source| Error::Io { path: up, source })?;
    if parent.dev() != meta.dev() || parent.ino() == meta.ino() {
        return Err(problem(
            "is busy: something is mounted on it already; unmount it or choose another directory",
        ));
    }
    Ok(())
}
