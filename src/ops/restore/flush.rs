//! A restore is on the disk when it ends, and gets there while it runs. Linux starts
//! writing dirty pages back only once a tenth of memory is dirty, so a restore smaller
//! than that would sit in the page cache until something syncs it, and a sync at the
//! end would then wait for every byte with the disk idle until that moment. Instead a
//! thread of its own syncs the target's file system each time [`STEP`] more bytes were
//! written, while the restore goes on, and [`Flusher::finish`] syncs what is left:
//! after a crash or a power cut a finished restore is there.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, SyncSender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use crate::error::{IoContext, Result};
use crate::locked;

/// Bytes written between two syncs while the restore runs.
const STEP: u64 = 64 << 20;

/// Syncs the file system of a restore's target (see the module docs).
pub(super) struct Flusher {
    target: PathBuf,
    root: Arc<File>,
    unsynced: AtomicU64,
    wake: Option<SyncSender<()>>,
    thread: Option<JoinHandle<()>>,
    /// The first error of a sync in the background: each file description sees a
    /// write-back error once, and the background syncs would see it first.
    failed: Arc<Mutex<Option<std::io::Error>>>,
}

impl Flusher {
    /// Starts the syncing thread for the file system holding directory `target`.
    pub(super) fn start(target: &Path) -> Result<Flusher> {
        let root = Arc::new(File::open(target).at(target)?);
        let failed = Arc::new(Mutex::new(None));
        let (wake, woken) = sync_channel::<()>(1);
        let thread = {
            let (root, failed) = (root.clone(), failed.clone());
            std::thread::Builder::new()
                .name("snap-flush".into())
                .spawn(move || {
                    for () in woken {
                        if let Err(e) = rustix::fs::syncfs(&*root) {
                            locked(&failed).get_or_insert(e.into());
                        }
                    }
                })
                .at(target)?
        };
        Ok(Flusher {
            target: target.to_path_buf(),
            root,
            unsynced: AtomicU64::new(0),
            wake: Some(wake),
            thread: Some(thread),
            failed,
        })
    }

    /// Counts `n` bytes written; wakes the thread each [`STEP`] bytes (unless it is
    /// still syncing: then its sync takes these along).
    pub(super) fn wrote(&self, n: u64) {
        if self.unsynced.fetch_add(n, Ordering::Relaxed) + n >= STEP {
            self.unsynced.store(0, Ordering::Relaxed);
            if let Some(wake) = &self.wake {
                let _ = wake.try_send(());
            }
        }
    }

    /// Stops the thread and syncs what is left; an error of any sync is the result.
    pub(super) fn finish(mut self) -> Result<()> {
        self.stop();
        let last = rustix::fs::syncfs(&*self.root).map_err(std::io::Error::from);
        match locked(&self.failed).take() {
            Some(e) => Err(e),
            None => last,
        }
        .at(&self.target)
    }

    fn stop(&mut self) {
        self.wake = None;
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Flusher {
    /// A restore that failed before [`Flusher::finish`] still ends the thread.
    fn drop(&mut self) {
        self.stop();
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
