//! Repository locks: one small file per holder in `locks/`.
//!
//! Backups take shared locks (many may run at once); maintenance that rewrites the
//! index takes an exclusive one. A lock whose process is gone (same host, PID dead) or
//! that has not been refreshed for [`STALE_AFTER`] is taken over with a warning, so no
//! lock ever needs deleting by hand. A live holder refreshes its file's mtime every
//! [`REFRESH_EVERY`].

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::error::{Error, IoContext, Result};

/// A lock not refreshed for this long is stale.
pub const STALE_AFTER: Duration = Duration::from_secs(30 * 60);
/// How often a holder refreshes its lock.
pub const REFRESH_EVERY: Duration = Duration::from_secs(60);

/// What a lock file says.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct LockInfo {
    /// Host of the holder.
    pub host: String,
    /// Process id of the holder.
    pub pid: u32,
    /// When it was taken.
    pub time: DateTime<Utc>,
    /// Whether it excludes all other holders.
    pub exclusive: bool,
    /// What the holder is doing.
    pub purpose: String,
}

impl std::fmt::Display for LockInfo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} lock for {} by pid {} on {} since {}",
            if self.exclusive {
                "an exclusive"
            } else {
                "a shared"
            },
            self.purpose,
            self.pid,
            self.host,
            self.time.format("%Y-%m-%d %H:%M:%S UTC")
        )
    }
}

/// A held lock; released on drop.
pub struct Lock {
    path: PathBuf,
    stop: Option<mpsc::Sender<()>>,
    refresher: Option<JoinHandle<()>>,
}

/// The name of this machine.
pub fn hostname() -> String {
    rustix::system::uname()
        .nodename()
        .to_string_lossy()
        .into_owned()
}

fn pid_alive(pid: u32) -> bool {
    let Some(p) = i32::try_from(pid)
        .ok()
        .and_then(rustix::process::Pid::from_raw)
    else {
        return false;
    };
    !matches!(
        rustix::process::test_kill_process(p),
        Err(rustix::io::Errno::SRCH)
    )
}

impl Lock {
    /// Takes a lock in `dir` (the repository's `locks/`).
    pub fn acquire(dir: &Path, exclusive: bool, purpose: &str) -> Result<Lock> {
        let info = LockInfo {
            host: hostname(),
            pid: std::process::id(),
            time: Utc::now(),
            exclusive,
            purpose: purpose.to_string(),
        };
        let mut rnd = [0u8; 8];
        getrandom::getrandom(&mut rnd)
            .map_err(|e| Error::Invalid(format!("no randomness: {e}")))?;
        let path = dir.join(format!("{}.json", hex::encode(rnd)));
        let body = serde_json::to_vec_pretty(&info).expect("lock serializes");
        fs::write(&path, body).at(&path)?;
        let lock = Lock {
            path,
            stop: None,
            refresher: None,
        };
        for entry in fs::read_dir(dir).at(dir)? {
            let entry = entry.at(dir)?;
            let other = entry.path();
            if other == lock.path {
                continue;
            }
            let Some(holder) = read_lock(&other) else {
                continue;
            };
            if is_stale(&other, &holder) {
                log::warn!("removing stale lock {}: {holder}", other.display());
                let _ = fs::remove_file(&other);
                continue;
            }
            if exclusive || holder.exclusive {
                return Err(Error::Locked {
                    holder: holder.to_string(),
                });
            }
        }
        Ok(lock.refreshing())
    }

    /// Fails when the lock file is gone (another process took it over as stale, e.g.
    /// after this one was paused): the holder must then not commit anything.
    pub fn check(&self) -> Result<()> {
        if self.path.exists() {
            Ok(())
        } else {
            Err(Error::Locked {
                holder: format!(
                    "nobody: this process's lock {} was removed as stale; rerun the operation",
                    self.path.display()
                ),
            })
        }
    }

    fn refreshing(mut self) -> Lock {
        let (tx, rx) = mpsc::channel::<()>();
        let path = self.path.clone();
        self.refresher = Some(std::thread::spawn(move || {
            while let Err(mpsc::RecvTimeoutError::Timeout) = rx.recv_timeout(REFRESH_EVERY) {
                if let Ok(f) = fs::File::options().write(true).open(&path) {
                    let _ = f.set_modified(SystemTime::now());
                }
            }
        }));
        self.stop = Some(tx);
        self
    }
}

fn read_lock(path: &Path) -> Option<LockInfo> {
    let b = fs::read(path).ok()?;
    serde_json::from_slice(&b).ok()
}

fn is_stale(path: &Path, info: &LockInfo) -> bool {
    if info.host == hostname() && !pid_alive(info.pid) {
        return true;
    }
    let age = fs::metadata(path)
        .and_then(|m| m.modified())
        .ok()
        .and_then(|t| SystemTime::now().duration_since(t).ok())
        .unwrap_or_default();
    age > STALE_AFTER
}

impl Drop for Lock {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(t) = self.refresher.take() {
            let _ = t.join();
        }
        let _ = fs::remove_file(&self.path);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shared_and_exclusive() {
        let d = tempfile::tempdir().unwrap();
        let a = Lock::acquire(d.path(), false, "backup").unwrap();
        let b = Lock::acquire(d.path(), false, "backup").unwrap();
        let e = Lock::acquire(d.path(), true, "repair");
        assert!(matches!(e, Err(Error::Locked { .. })));
        drop((a, b));
        let x = Lock::acquire(d.path(), true, "repair").unwrap();
        assert!(Lock::acquire(d.path(), false, "backup").is_err());
        drop(x);
        assert_eq!(fs::read_dir(d.path()).unwrap().count(), 0);
    }

    #[test]
    fn dead_holder_is_taken_over() {
        let d = tempfile::tempdir().unwrap();
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id();
        child.wait().unwrap();
        let info = LockInfo {
            host: hostname(),
            pid,
            time: Utc::now(),
            exclusive: true,
            purpose: "crashed".into(),
        };
        fs::write(
            d.path().join("dead.json"),
            serde_json::to_vec(&info).unwrap(),
        )
        .unwrap();
        let l = Lock::acquire(d.path(), true, "repair").unwrap();
        assert!(!d.path().join("dead.json").exists());
        drop(l);
    }
}
