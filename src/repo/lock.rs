//! Repository locks: one small file per holder in `locks/`, in whatever store holds
//! the repository (on S3, an object).
//!
//! Backups take shared locks (many may run at once); maintenance that rewrites the
//! index takes an exclusive one. A lock whose process is gone (same host, PID dead or
//! file older than the host's boot) or that has not been refreshed for [`STALE_AFTER`](crate::host::STALE_AFTER)
//! is taken over with a warning, so no lock ever needs deleting by hand. Lock files
//! are written without fsync: a power cut may leave one torn (not JSON at all), and a
//! torn file older than this host's boot is stale too, since every live writer
//! replaces its file whole. A live holder refreshes its file's mtime every
//! [`REFRESH_EVERY`].
//!
//! Each process writes its own file before it lists the others, so of two conflicting
//! processes the one that lists second sees the first: at most one proceeds, on any
//! store whose listings show completed writes (local, SFTP, S3). A file that cannot be
//! read or parsed is never taken for no lock.
//!
//! Where the store creates files atomically ([`Store::create_volatile`]: a local
//! directory by a rename that refuses to replace, S3 by `If-None-Match: *`, found out
//! once per process by a probe), an exclusive lock has one name, [`EXCLUSIVE`]: of
//! two processes taking it at once, exactly one creates it, where listing alone may
//! turn both away. A stale one is read again just before it is removed, so that a
//! lock another process has just taken over is not; a holder whose lock was taken
//! over (it was paused past the stale age) neither refreshes nor removes it, and its
//! [`Lock::check`] fails. Elsewhere (SFTP; stores that ignore the header, such as
//! Garage) an exclusive lock has a name of its own like any other.
//!
//! A process that meets a conflicting lock fails at once, or, given a wait
//! ([`Lock::acquire_waiting`], `--retry-lock`), removes its own file and tries again
//! with growing pauses (`retry_pause`) until the wait is over; then it fails with
//! the same message.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::host::{boot_time, hostname, pid_alive, stale_by_age};
use crate::locked;
use crate::store::{Create, Entry, Store};

/// Largest lock file read.
const MAX_LEN: u64 = 64 << 10;
/// How often a holder refreshes its lock.
pub const REFRESH_EVERY: Duration = Duration::from_secs(60);

/// The pause before retry `attempt` (0, 1, ...) of a lock: 250 ms doubling up to 16 s,
/// never past the `left` of the wait.
fn retry_pause(attempt: u32, left: Duration) -> Duration {
    let pause = Duration::from_millis(250).saturating_mul(1 << attempt.min(6));
    pause.min(left)
}

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
            crate::host::local_time(&self.time)
        )
    }
}

/// The one name of exclusive locks on a store that creates files atomically
/// ([`Store::create_volatile`]).
const EXCLUSIVE: &str = "locks/exclusive.json";

/// The shared locks this process holds (store, path), for [`release_shared`].
static SHARED: Mutex<Vec<(Arc<dyn Store>, String)>> = Mutex::new(Vec::new());

/// Deletes the files of the shared locks this process holds, for a process about to
/// exit on a signal, whose destructors do not run: another host would otherwise find
/// them in the way of a prune until they are stale (30 minutes). An exclusive lock
/// stays: its holder may be changing the repository, and an exit then must look like
/// a crash (the next run on this host takes it over at once).
pub fn release_shared() {
    for (store, path) in locked(&SHARED).drain(..) {
        let _ = store.delete_volatile(&path);
    }
}

/// A lock file that could not be written: what it was, and how to read without one.
fn unwritable(store: &dyn Store, e: Error) -> Error {
    let full =
        matches!(&e, Error::Io { source, .. } if source.kind() == std::io::ErrorKind::StorageFull);
    if full || matches!(e, Error::Locked { .. }) {
        return e;
    }
    Error::Storage {
        location: format!("{}/locks", store.location()),
        detail: format!(
            "cannot write this process's lock file ({e}); snap locks a repository even to read it, so that a prune elsewhere cannot delete what it reads: to read one it cannot write (read-only media or credentials), pass --no-lock"
        ),
    }
}

/// A held lock; released on drop.
pub struct Lock {
    store: Arc<dyn Store>,
    path: String,
    /// What its file says ([`LockInfo`] as JSON).
    body: Vec<u8>,
    exclusive: bool,
    stop: Option<mpsc::Sender<()>>,
    refresher: Option<JoinHandle<()>>,
    /// The snapshot records that could not be read when the lock was taken (path,
    /// reason): left out of the index; prune must not run while they exist.
    pub unreadable: Vec<(String, String)>,
    /// The count of locks a repository handle holds, while this one is among them.
    count: Option<Arc<AtomicUsize>>,
}

impl Lock {
    /// Takes a lock in `store`'s `locks/`.
    pub fn acquire(store: Arc<dyn Store>, exclusive: bool, purpose: &str) -> Result<Lock> {
        let info = LockInfo {
            host: hostname(),
            pid: std::process::id(),
            time: Utc::now(),
            exclusive,
            purpose: purpose.to_string(),
        };
        let body = serde_json::to_vec_pretty(&info).expect("lock serializes");
        let boot = boot_time();
        let mut lock = Lock {
            store,
            path: String::new(),
            body,
            exclusive,
            stop: None,
            refresher: None,
            unreadable: Vec::new(),
            count: None,
        };
        let made = if exclusive {
            lock.create_exclusive(boot)
        } else {
            Ok(None)
        };
        lock.path = made
            .and_then(|p| p.map_or_else(|| lock.put_own(), Ok))
            .map_err(|e| unwritable(lock.store.as_ref(), e))?;
        for entry in lock.store.list("locks")? {
            if entry.path != lock.path {
                if let Some(e) = lock.conflict(&entry, boot)? {
                    return Err(e);
                }
            }
        }
        if !exclusive {
            locked(&SHARED).push((lock.store.clone(), lock.path.clone()));
        }
        Ok(lock.refreshing())
    }

    /// Writes this lock under a name of its own; returns the name. Not durable: a lock
    /// matters to live processes only, and one a crash takes along is one nobody has
    /// to find stale.
    fn put_own(&self) -> Result<String> {
        let mut rnd = [0u8; 8];
        getrandom::getrandom(&mut rnd).map_err(Error::NoRandomness)?;
        let path = format!("locks/{}.json", hex::encode(rnd));
        self.store.put_volatile(&path, &self.body)?;
        Ok(path)
    }

    /// Creates [`EXCLUSIVE`] where the store can do so atomically (then `Some` of it;
    /// `None` where it cannot): of two processes, one creates it and the other finds
    /// it there. One found there blocks unless its holder is gone (then it is removed
    /// and creating is tried again, three times in all).
    fn create_exclusive(&self, boot: Option<SystemTime>) -> Result<Option<String>> {
        for _ in 0..3 {
            match self.store.create_volatile(EXCLUSIVE, &self.body)? {
                Create::Created => return Ok(Some(EXCLUSIVE.to_string())),
                Create::Unsupported => return Ok(None),
                Create::Exists => {}
            }
            // (A retried write whose first try went through finds this lock itself.)
            if self.is_ours(EXCLUSIVE)? {
                return Ok(Some(EXCLUSIVE.to_string()));
            }
            let found = self.store.list("locks")?;
            if let Some(entry) = found.iter().find(|e| e.path == EXCLUSIVE) {
                if let Some(e) = self.conflict(entry, boot)? {
                    return Err(e);
                }
            }
        }
        Err(Error::Locked {
            holder: format!(
                "other processes, which took and released {}/{EXCLUSIVE} while this one tried; rerun",
                self.store.location()
            ),
        })
    }

    /// What lock file `entry` means for this lock: `Some` error when its holder
    /// conflicts; `None` when it is compatible, gone, or stale (then it is removed,
    /// unless it changed since it was read).
    fn conflict(&self, entry: &Entry, boot: Option<SystemTime>) -> Result<Option<Error>> {
        // Gone between the listing and the read: released.
        let Some((holder, bytes)) = read_lock(self.store.as_ref(), &entry.path)? else {
            return Ok(None);
        };
        if holder.is_stale(entry.modified, boot) {
            // Read again just before deleting: another process may have taken the
            // stale lock over with a live one of the same name (`EXCLUSIVE`).
            if read_lock(self.store.as_ref(), &entry.path)?.is_some_and(|(_, b)| b == bytes) {
                log::warn!("removing stale lock {}: {holder}", entry.path);
                let _ = self.store.delete(&entry.path);
            }
            return Ok(None);
        }
        if !self.exclusive && !holder.is_exclusive() {
            return Ok(None);
        }
        Ok(Some(Error::Locked {
            holder: format!(
                "{holder} ({}/{}); wait for it to finish and rerun. If that process is gone, the lock is removed as stale once it is 30 minutes old (at once if it was this host's and the host has restarted since), or delete the file",
                self.store.location(),
                entry.path
            ),
        }))
    }

    /// Whether file `path` holds this lock (as written, not another's).
    fn is_ours(&self, path: &str) -> Result<bool> {
        match self.store.read(path, MAX_LEN) {
            Ok(b) => Ok(b == self.body),
            Err(Error::NotFound { .. }) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Like [`Lock::acquire`], but a conflicting lock is waited for up to `wait` (said
    /// once in the log), trying again after pauses of 250 ms doubling up to 16 s; a
    /// signal ends the wait.
    pub fn acquire_waiting(
        store: Arc<dyn Store>,
        exclusive: bool,
        purpose: &str,
        wait: Duration,
    ) -> Result<Lock> {
        let deadline = std::time::Instant::now() + wait;
        let mut attempt = 0;
        loop {
            match Lock::acquire(store.clone(), exclusive, purpose) {
                Err(Error::Locked { holder }) => {
                    let left = deadline.saturating_duration_since(std::time::Instant::now());
                    if left.is_zero() || crate::interrupt::requested() {
                        return Err(Error::Locked { holder });
                    }
                    if attempt == 0 {
                        log::warn!(
                            "waiting up to {}s for the repository lock: held by {holder}",
                            wait.as_secs()
                        );
                    }
                    std::thread::sleep(retry_pause(attempt, left));
                    attempt += 1;
                }
                other => return other,
            }
        }
    }

    /// No lock at all, for `--no-lock`: a reader of a repository it cannot write. Nothing
    /// then keeps a prune elsewhere from deleting what it reads.
    pub(crate) fn none(store: Arc<dyn Store>) -> Lock {
        Lock {
            store,
            path: String::new(),
            body: Vec::new(),
            exclusive: false,
            stop: None,
            refresher: None,
            unreadable: Vec::new(),
            count: None,
        }
    }

    /// Fails when the lock file is gone or another's (another process took it over as
    /// stale, e.g. after this one was paused): the holder must then not commit
    /// anything.
    pub fn check(&self) -> Result<()> {
        if self.is_ours(&self.path)? {
            Ok(())
        } else {
            Err(Error::Locked {
                holder: format!(
                    "another process: this process's lock {}/{} was removed as stale; rerun the operation",
                    self.store.location(),
                    self.path
                ),
            })
        }
    }

    /// Counts this lock in `count` until it is released.
    pub(crate) fn count_in(&mut self, count: Arc<AtomicUsize>) {
        count.fetch_add(1, Ordering::AcqRel);
        self.count = Some(count);
    }

    fn refreshing(mut self) -> Lock {
        let (tx, rx) = mpsc::channel::<()>();
        let path = self.path.clone();
        let store = self.store.clone();
        let body = self.body.clone();
        self.refresher = Some(std::thread::spawn(move || {
            while let Err(mpsc::RecvTimeoutError::Timeout) = rx.recv_timeout(REFRESH_EVERY) {
                // Rewriting the file renews its modification time; a file removed as
                // stale, or taken over, is left alone.
                if store.read(&path, MAX_LEN).is_ok_and(|b| b == body) {
                    let _ = store.put_volatile(&path, &body);
                }
            }
        }));
        self.stop = Some(tx);
        self
    }
}

/// Another lock file, as read by a process taking a lock.
enum Holder {
    Known(LockInfo),
    /// A file in `locks/` that is JSON but not a lock this version reads (a later
    /// version's, or a stranger's): it counts as an exclusive lock of unknown holder
    /// until it is stale by age, never as no lock.
    Unknown,
    /// A file that is not JSON at all: what a power cut leaves of a lock written
    /// without fsync. Like `Unknown`, but stale once older than this host's boot.
    Torn,
}

impl Holder {
    fn is_exclusive(&self) -> bool {
        match self {
            Holder::Known(info) => info.exclusive,
            Holder::Unknown | Holder::Torn => true,
        }
    }

    /// Whether the holder of a file last modified at `modified` is gone, on a host
    /// that booted at `boot`. A file older than the boot (by more than two refresh
    /// periods, so a clock stepped forward does not retire a live holder) was written
    /// before it: by this host's processes, all dead, or torn by the cut itself.
    fn is_stale(&self, modified: Option<SystemTime>, boot: Option<SystemTime>) -> bool {
        let before_boot = match (modified, boot) {
            (Some(m), Some(b)) => m + 2 * REFRESH_EVERY < b,
            _ => false,
        };
        let gone = match self {
            Holder::Known(info) => info.host == hostname() && (!pid_alive(info.pid) || before_boot),
            Holder::Torn => before_boot,
            Holder::Unknown => false,
        };
        gone || stale_by_age(modified)
    }
}

impl std::fmt::Display for Holder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Holder::Known(info) => info.fmt(f),
            Holder::Unknown => f.write_str("a lock file snap cannot read"),
            Holder::Torn => f.write_str("a lock file snap cannot read (not JSON: torn?)"),
        }
    }
}

/// Reads another holder's lock file; `None` when it is gone. A read that fails for any
/// reason but the file's absence is an error: a lock that cannot be read must not be
/// taken for no lock.
fn read_lock(store: &dyn Store, path: &str) -> Result<Option<(Holder, Vec<u8>)>> {
    match store.read(path, MAX_LEN) {
        Ok(b) => {
            let holder = match serde_json::from_slice(&b) {
                Ok(info) => Holder::Known(info),
                Err(_) if serde_json::from_slice::<serde_json::Value>(&b).is_ok() => {
                    Holder::Unknown
                }
                Err(_) => Holder::Torn,
            };
            Ok(Some((holder, b)))
        }
        Err(Error::NotFound { .. }) => Ok(None),
        Err(Error::Corrupt { .. }) => Ok(Some((Holder::Unknown, Vec::new()))),
        Err(e) => Err(e),
    }
}

impl Drop for Lock {
    fn drop(&mut self) {
        if !self.exclusive {
            locked(&SHARED).retain(|(_, path)| *path != self.path);
        }
        if let Some(c) = self.count.take() {
            c.fetch_sub(1, Ordering::AcqRel);
        }
        drop(self.stop.take());
        if let Some(t) = self.refresher.take() {
            let _ = t.join();
        }
        // The shared name may hold another's lock by now (this one was taken over).
        if !self.path.is_empty()
            && (self.path != EXCLUSIVE || self.is_ours(&self.path).unwrap_or(false))
        {
            let _ = self.store.delete_volatile(&self.path);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store(d: &tempfile::TempDir) -> Arc<dyn Store> {
        std::fs::create_dir(d.path().join("tmp")).unwrap();
        Arc::new(crate::store::Local::new(d.path().to_path_buf()))
    }

    #[test]
    fn shared_and_exclusive() {
        let d = tempfile::tempdir().unwrap();
        let s = store(&d);
        let a = Lock::acquire(s.clone(), false, "backup").unwrap();
        let b = Lock::acquire(s.clone(), false, "backup").unwrap();
        let e = Lock::acquire(s.clone(), true, "repair");
        assert!(matches!(e, Err(Error::Locked { .. })));
        drop((a, b));
        let x = Lock::acquire(s.clone(), true, "repair").unwrap();
        assert!(Lock::acquire(s.clone(), false, "backup").is_err());
        drop(x);
        assert!(s.list("locks").unwrap().is_empty());
    }

    /// The store of `d` with atomic creation, and without.
    fn both_stores(d: &tempfile::TempDir) -> [Arc<dyn Store>; 2] {
        let local = store(d);
        let root = local.local_root().unwrap().to_path_buf();
        [
            local,
            Arc::new(crate::store::test_store::TestStore::new(&root)),
        ]
    }

    #[test]
    fn of_racing_exclusive_takers_exactly_one_wins_where_creation_is_atomic() {
        use std::sync::Barrier;
        let d = tempfile::tempdir().unwrap();
        let s = store(&d);
        let threads = 4;
        let (tried, done) = (Barrier::new(threads), Barrier::new(threads));
        for round in 0..30 {
            let won: Vec<bool> = std::thread::scope(|scope| {
                let takers: Vec<_> = (0..threads)
                    .map(|_| {
                        let (s, tried, done) = (&s, &tried, &done);
                        scope.spawn(move || {
                            let l = Lock::acquire(s.clone(), true, "race");
                            tried.wait();
                            let won = match l {
                                Ok(_) => true,
                                Err(Error::Locked { .. }) => false,
                                Err(e) => panic!("{e}"),
                            };
                            done.wait();
                            won
                        })
                    })
                    .collect();
                takers.into_iter().map(|t| t.join().unwrap()).collect()
            });
            let winners = won.iter().filter(|&&w| w).count();
            assert_eq!(
                winners, 1,
                "round {round}: {winners} of {threads} took the lock"
            );
        }
        assert!(s.list("locks").unwrap().is_empty());
    }

    #[test]
    fn exclusive_holders_never_overlap() {
        let d = tempfile::tempdir().unwrap();
        for s in both_stores(&d) {
            holders_never_overlap(&s);
        }
    }

    fn holders_never_overlap(s: &Arc<dyn Store>) {
        use std::sync::atomic::{AtomicU32, Ordering};
        let inside = AtomicU32::new(0);
        let (taken, refused) = (AtomicU32::new(0), AtomicU32::new(0));
        std::thread::scope(|scope| {
            for t in 0..4u64 {
                let (inside, taken, refused) = (&inside, &taken, &refused);
                scope.spawn(move || {
                    for round in 0..25u64 {
                        let l = loop {
                            match Lock::acquire(s.clone(), true, "race") {
                                Ok(l) => break l,
                                Err(Error::Locked { .. }) => {
                                    refused.fetch_add(1, Ordering::Relaxed);
                                    std::thread::sleep(Duration::from_micros(
                                        100 + (t * 37 + round * 11) % 400,
                                    ));
                                }
                                Err(e) => panic!("{e}"),
                            }
                        };
                        assert_eq!(inside.fetch_add(1, Ordering::SeqCst), 0, "two holders");
                        std::thread::sleep(Duration::from_micros(200));
                        inside.fetch_sub(1, Ordering::SeqCst);
                        taken.fetch_add(1, Ordering::Relaxed);
                        drop(l);
                    }
                });
            }
        });
        assert_eq!(taken.into_inner(), 100);
        assert!(refused.into_inner() > 0, "the threads never contended");
        assert!(s.list("locks").unwrap().is_empty());
    }

    #[test]
    fn an_unreadable_lock_file_blocks_until_stale() {
        let d = tempfile::tempdir().unwrap();
        let s = store(&d);
        s.put("locks/odd.json", b"not a lock").unwrap();
        let e = Lock::acquire(s.clone(), false, "backup")
            .err()
            .expect("blocked");
        assert!(e.to_string().contains("cannot read"), "{e}");
        assert!(
            s.list("locks").unwrap().len() == 1,
            "the refused lock is gone"
        );
        let old = rustix::fs::Timespec {
            tv_sec: chrono::Utc::now().timestamp() - 31 * 60,
            tv_nsec: 0,
        };
        let times = rustix::fs::Timestamps {
            last_access: old,
            last_modification: old,
        };
        rustix::fs::utimensat(
            rustix::fs::CWD,
            d.path().join("locks/odd.json"),
            &times,
            rustix::fs::AtFlags::empty(),
        )
        .unwrap();
        let l = Lock::acquire(s.clone(), false, "backup").unwrap();
        assert_eq!(s.size("locks/odd.json").unwrap(), None, "stale: removed");
        drop(l);
    }

    #[test]
    fn what_a_reboot_retires() {
        let now = SystemTime::now();
        let min = |m: u64| now - Duration::from_secs(60 * m);
        let mine = Holder::Known(LockInfo {
            host: hostname(),
            pid: std::process::id(),
            time: Utc::now(),
            exclusive: false,
            purpose: "backup".into(),
        });
        let theirs = Holder::Known(LockInfo {
            host: format!("{}-other", hostname()),
            ..match &mine {
                Holder::Known(i) => i.clone(),
                _ => unreachable!(),
            }
        });
        // Written 10 minutes ago, booted 5 minutes ago: a live PID is a reused one.
        assert!(mine.is_stale(Some(min(10)), Some(min(5))));
        assert!(Holder::Torn.is_stale(Some(min(10)), Some(min(5))));
        // Another host's lock, or a later version's, is no business of our boot.
        assert!(!theirs.is_stale(Some(min(10)), Some(min(5))));
        assert!(!Holder::Unknown.is_stale(Some(min(10)), Some(min(5))));
        // Written after the boot (or within two refresh periods of it, or the boot
        // unknown): alive, until stale by age.
        assert!(!mine.is_stale(Some(min(4)), Some(min(5))));
        assert!(!Holder::Torn.is_stale(Some(min(6)), Some(min(5))));
        assert!(!Holder::Torn.is_stale(Some(min(10)), None));
        assert!(Holder::Torn.is_stale(Some(min(31)), None));
    }

    #[test]
    fn torn_and_foreign_files_are_told_apart() {
        let d = tempfile::tempdir().unwrap();
        let s = store(&d);
        for (body, torn) in [
            (&b""[..], true),
            (b"{\"host\": \"a\", \"pi", true),
            (b"\0\0\0\0", true),
            (b"{\"version\": 9}", false),
        ] {
            s.put("locks/x.json", body).unwrap();
            let (h, _) = read_lock(s.as_ref(), "locks/x.json").unwrap().unwrap();
            assert_eq!(matches!(h, Holder::Torn), torn, "{body:?}");
            assert!(!matches!(h, Holder::Known(_)));
        }
    }

    #[test]
    fn retry_pauses_grow_and_stop_at_the_deadline() {
        let ms = |a, left| retry_pause(a, Duration::from_secs(left)).as_millis();
        assert_eq!(
            [ms(0, 60), ms(1, 60), ms(2, 60), ms(6, 60), ms(40, 60)],
            [250, 500, 1000, 16000, 16000]
        );
        assert_eq!(ms(6, 3), 3000);
        assert_eq!(ms(0, 0), 0);
    }

    #[test]
    fn a_waiting_lock_is_taken_once_the_holder_goes() {
        let d = tempfile::tempdir().unwrap();
        let s = store(&d);
        let held = Lock::acquire(s.clone(), true, "prune").unwrap();
        let e = Lock::acquire_waiting(s.clone(), false, "backup", Duration::from_millis(300));
        assert!(matches!(e, Err(Error::Locked { .. })), "the wait ends");
        std::thread::scope(|scope| {
            scope.spawn(move || {
                std::thread::sleep(Duration::from_millis(300));
                drop(held);
            });
            let l = Lock::acquire_waiting(s.clone(), false, "backup", Duration::from_secs(60));
            assert!(l.is_ok(), "taken after the holder left");
        });
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
        let dead = serde_json::to_vec(&info).unwrap();
        // Under a name of its own (any store), and under the one exclusive name
        // (where a store creates atomically, or left by a process that used one).
        for s in both_stores(&d) {
            for name in ["locks/dead.json", EXCLUSIVE] {
                s.put(name, &dead).unwrap();
                let l = Lock::acquire(s.clone(), true, "repair").unwrap();
                assert!(l.check().is_ok());
                assert!(s.read(name, MAX_LEN).map_or(true, |b| b != dead), "{name}");
                drop(l);
                assert!(s.list("locks").unwrap().is_empty());
            }
        }
    }

    #[test]
    fn a_lock_taken_over_is_no_longer_checked_refreshed_or_removed_as_ours() {
        let d = tempfile::tempdir().unwrap();
        let s = store(&d);
        let l = Lock::acquire(s.clone(), true, "prune").unwrap();
        assert_eq!(l.path, EXCLUSIVE, "atomic creation takes the one name");
        assert!(l.check().is_ok());
        // This process was paused past the stale age; another took the lock over.
        s.put(EXCLUSIVE, b"{\"someone\": \"else\"}").unwrap();
        assert!(matches!(l.check(), Err(Error::Locked { .. })));
        drop(l);
        assert_eq!(
            s.read(EXCLUSIVE, MAX_LEN).unwrap(),
            b"{\"someone\": \"else\"}",
            "the other's lock stays"
        );
    }
}
