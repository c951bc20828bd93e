//! A restore is on the disk when it ends, and gets there while it runs. Linux starts
//! writing dirty pages back only once a tenth of memory is dirty, so a restore smaller
//! than that would sit in the page cache until something syncs it, and a sync at the
//! end would then wait for every byte with the disk idle until that moment. Instead a
//! thread of its own syncs the target's file system each time [`STEP`] more bytes were
//! written, while the restore goes on, and [`Flusher::finish`] syncs what is left:
//! after a crash or a power cut a finished restore is there.

use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, SyncSender};
use std::thread::JoinHandle;

use crate::error::{IoContext, Result};

/// Bytes written between two syncs while the restore runs.
const STEP: u64 = 64 << 20;

/// Syncs the file system of a restore's target (see the module docs). Dropped without
/// [`Flusher::finish`] (a restore that failed), the thread makes its last sync alone.
pub(super) struct Flusher {
    target: PathBuf,
    unsynced: AtomicU64,
    wake: SyncSender<()>,
    /// Syncs on each wake and once more when `wake` is dropped; returns the first
    /// error: each file description sees a write-back error once, so a later sync
    /// would not report what an earlier one saw.
    thread: JoinHandle<io::Result<()>>,
}

impl Flusher {
    /// Starts the syncing thread for the file system holding directory `target`.
    pub(super) fn start(target: &Path) -> Result<Flusher> {
        let root = File::open(target).at(target)?;
        let (wake, woken) = sync_channel::<()>(1);
        let thread = std::thread::Builder::new()
            .name("snap-flush".into())
            .spawn(move || {
                let sync = || rustix::fs::syncfs(&root).map_err(io::Error::from);
                let mut first = Ok(());
                for () in woken {
                    first = first.and(sync());
                }
                first.and(sync())
            })
            .at(target)?;
        Ok(Flusher {
            target: target.to_path_buf(),
            unsynced: AtomicU64::new(0),
            wake,
            thread,
        })
    }

    /// Counts `n` bytes written; wakes the thread each [`STEP`] bytes (unless it is
    /// still syncing: then its sync takes these along).
    pub(super) fn wrote(&self, n: u64) {
        if self.unsynced.fetch_add(n, Ordering::Relaxed) + n >= STEP {
            self.unsynced.store(0, Ordering::Relaxed);
            let _ = self.wake.try_send(());
        }
    }

    /// Ends the thread after its last sync; an error of any sync is the result.
    pub(super) fn finish(self) -> Result<()> {
        drop(self.wake);
        self.thread
            .join()
            .unwrap_or_else(|_| Err(io::Error::other("the syncing thread panicked")))
            .at(&self.target)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn syncs_in_the_background_each_step_and_finishes() {
        let dir = tempfile::tempdir().unwrap();
        let f = Flusher::start(dir.path()).unwrap();
        for i in 0..8u8 {
            std::fs::write(dir.path().join(format!("f{i}")), [i; 4096]).unwrap();
            // Each call passes a step: the thread is woken (or already syncing).
            f.wrote(STEP);
        }
        f.finish().unwrap();
        let missing = Flusher::start(&dir.path().join("missing")).err().unwrap();
        assert!(missing.to_string().contains("missing"), "{missing}");
    }
}
