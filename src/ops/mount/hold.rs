//! The mount's repository lock: held while the file system is in use, given up once
//! it has been idle for a while, so that a nightly prune can run beside a mount that
//! lasts for weeks.
//!
//! "In use" means a request that reads the repository is being served or a file is
//! open. After [`Hold::idle`] without either, the shared lock is released; the next
//! request takes a shared lock again before it reads anything, waiting (up to
//! [`RETAKE_WAIT`]) while a prune holds the exclusive one. Whatever the mount kept of
//! where blobs are is then stale (a prune rewrites packs), so taking the lock again
//! reads the index anew ([`Repository::lock`] does), closes the pack files kept open
//! (which would read deleted packs, and keep their space), and tells the caller to
//! drop its cached places ([`Entered::retaken`]). What is kept by content id (trees, decoded
//! chunks) stays valid: an id names the same bytes in every pack.

use std::sync::{Arc, Mutex, MutexGuard, TryLockError};
use std::time::{Duration, Instant};

use crate::error::{Error, Result};
use crate::locked;
use crate::repo::Lock;
use crate::repo::Repository;

/// How long a request waits for a prune (or any exclusive holder) to finish before it
/// fails with "resource temporarily unavailable". Short: the process that made the
/// request cannot be interrupted meanwhile, not even by SIGKILL (the kernel waits for
/// the answer to a request the mount has taken, and the FUSE library answers the
/// kernel's interrupts with ENOSYS), so a long wait is a process stuck in state D.
pub(super) const RETAKE_WAIT: Duration = Duration::from_secs(10);
/// How often a held lock is checked for having been taken over as stale.
const CHECK_LOCK_EVERY: Duration = Duration::from_secs(60);

struct State {
    lock: Option<Lock>,
    /// Requests being served.
    busy: usize,
    /// Open files.
    open: usize,
    /// When the last request ended or the last file was closed.
    last: Instant,
    checked: Instant,
}

/// The lock of one mount.
pub(super) struct Hold {
    repo: Arc<Repository>,
    state: Mutex<State>,
    idle: Duration,
}

/// A request being served; ends on drop.
pub(super) struct Entered<'a> {
    hold: &'a Hold,
    /// The lock was taken again after a pause: the repository may have changed.
    pub(super) retaken: bool,
}

impl Drop for Entered<'_> {
    fn drop(&mut self) {
        let mut s = locked(&self.hold.state);
        s.busy -= 1;
        s.last = Instant::now();
    }
}

impl Hold {
    /// Takes the shared lock for a mount that gives it up after `idle` without use.
    pub(super) fn new(repo: Arc<Repository>, idle: Duration) -> Result<Hold> {
        let lock = repo.lock(false, "mount")?;
        let now = Instant::now();
        Ok(Hold {
            repo,
            state: Mutex::new(State {
                lock: Some(lock),
                busy: 0,
                open: 0,
                last: now,
                checked: now,
            }),
            idle,
        })
    }

    /// Marks a request that reads the repository as being served, taking the lock
    /// again first if it was given up.
    pub(super) fn enter(&self) -> Result<Entered<'_>> {
        let mut s = locked(&self.state);
        let retaken = s.lock.is_none();
        if retaken {
            // Other requests wait on the state meanwhile: none may read before it.
            let lock = self.repo.lock_within(false, "mount", RETAKE_WAIT)?;
            self.repo.close_files();
            log::info!("repository lock taken again");
            s.lock = Some(lock);
            s.checked = Instant::now();
        }
        s.busy += 1;
        Ok(Entered {
            hold: self,
            retaken,
        })
    }

    /// A file was opened (within a request: the lock is held).
    pub(super) fn opened(&self) {
        locked(&self.state).open += 1;
    }

    /// A file was closed.
    pub(super) fn closed(&self) {
        let mut s = locked(&self.state);
        s.open = s.open.saturating_sub(1);
        s.last = Instant::now();
    }

    /// Called every fraction of a second by the thread that owns the mount: gives the
    /// lock up when the mount is idle, and checks now and then that a held lock is
    /// still there. Never waits for a request in progress.
    pub(super) fn tick(&self) {
        let mut s: MutexGuard<'_, State> = match self.state.try_lock() {
            Ok(s) => s,
            Err(TryLockError::Poisoned(p)) => p.into_inner(),
            Err(TryLockError::WouldBlock) => return,
        };
        if s.lock.is_none() {
            return;
        }
        if s.busy == 0 && s.open == 0 && s.last.elapsed() >= self.idle {
            s.lock = None;
            log::info!("idle: repository lock given up until the next request");
            return;
        }
        if s.checked.elapsed() >= CHECK_LOCK_EVERY {
            s.checked = Instant::now();
            let held = s.lock.as_ref().map(Lock::check);
            if let Some(Err(e @ Error::Locked { .. })) = held {
                // Taken over as stale (this process was stopped for long): the next
                // request takes a new one and reads the repository anew.
                log::warn!("{e}; taking a new lock at the next request");
                s.lock = None;
            }
        }
    }
}
