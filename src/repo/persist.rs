//! Packs being written: a new pack opens as a temp file; a finished one is made
//! durable under its name (fsync and rename, or an upload) on a thread of its own, so
//! that the threads that fill packs go on compressing while the disk catches up. At
//! most [`RUNNING`] packs are under way at once: a disk slower than compression makes
//! the next finished pack wait for the oldest.

use std::collections::VecDeque;
use std::io::BufWriter;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use super::journal::Journal;
use super::{pack_path, PackRecord, Repository};
use crate::error::{Error, IoContext, Result};
use crate::format::pack::PackWriter;
use crate::locked;
use crate::store::Store;

/// A pack being filled, in a temp file.
pub(super) type PackFile = PackWriter<BufWriter<tempfile::NamedTempFile>>;

impl PackFile {
    /// The temp file's path, for messages.
    pub(super) fn path(&self) -> &Path {
        self.get_ref().get_ref().path()
    }
}

/// Packs being made durable while the filling threads go on; a thread that finishes
/// one more waits for the oldest.
const RUNNING: usize = 2;

/// Opens a new pack in the repository's `tmp/`.
pub(super) fn new_pack(repo: &Repository) -> Result<PackFile> {
    let file = repo.new_pack_file()?;
    let path = file.path().to_path_buf();
    PackWriter::new(BufWriter::with_capacity(1 << 20, file), repo.key.clone()).at(&path)
}

/// Makes finished packs durable; see the module docs. Safe to share between threads.
pub(super) struct Persister {
    store: Arc<dyn Store>,
    /// Where a backup notes its durable packs, for a run after an interruption.
    journal: Option<Arc<Journal>>,
    running: Mutex<VecDeque<JoinHandle<Result<PackRecord>>>>,
}

impl Persister {
    pub(super) fn new(repo: &Repository, journal: Option<Arc<Journal>>) -> Self {
        Persister {
            store: repo.store.clone(),
            journal,
            running: Mutex::new(VecDeque::new()),
        }
    }

    /// Finishes `pack` and starts making it durable; returns the packs that became
    /// durable meanwhile, having waited for the oldest if [`RUNNING`] were under way.
    pub(super) fn start(&self, pack: PackFile) -> Result<Vec<PackRecord>> {
        let path = pack.path().to_path_buf();
        let (id, entries, size, buf) = pack.finish().at(&path)?;
        let file = buf
            .into_inner()
            .map_err(std::io::IntoInnerError::into_error)
            .at(&path)?;
        let store = self.store.clone();
        let journal = self.journal.clone();
        let handle = std::thread::Builder::new()
            .name("snap-pack".into())
            .spawn(move || {
                // Noted before it is placed: a run killed while the pack is visible
                // but not yet durable still has it resumed (made durable first).
                if let Some(j) = journal {
                    j.add(&id)?;
                }
                store.put_file(&pack_path(&id), file)?;
                Ok(PackRecord { id, size, entries })
            })
            .at(&path)?;
        let done: Vec<_> = {
            let mut running = locked(&self.running);
            running.push_back(handle);
            let mut done = Vec::new();
            while running.len() > RUNNING
                || running
                    .front()
                    .is_some_and(std::thread::JoinHandle::is_finished)
            {
                done.extend(running.pop_front());
            }
            done
        };
        join_all(done)
    }

    /// Waits for every pack started; returns them, durable.
    pub(super) fn finish(&self) -> Result<Vec<PackRecord>> {
        let all: Vec<_> = locked(&self.running).drain(..).collect();
        join_all(all)
    }
}

/// Joins every thread (none is left running), then reports the first failure.
fn join_all(handles: Vec<JoinHandle<Result<PackRecord>>>) -> Result<Vec<PackRecord>> {
    let results: Vec<Result<PackRecord>> = handles
        .into_iter()
        .map(|h| {
            h.join().unwrap_or_else(|_| {
                Err(Error::internal(
                    "a thread making a pack durable panicked",
                    None,
                ))
            })
        })
        .collect();
    results.into_iter().collect()
}

impl Drop for Persister {
    /// A run that failed still waits for its packs: no write outlives the repository
    /// handle. Those packs are durable and unlisted, garbage for prune.
    fn drop(&mut self) {
        let _ = self.finish();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::pack::BlobKind;

    #[test]
    fn packs_are_durable_once_returned() {
        let d = tempfile::tempdir().unwrap();
        let repo =
            Repository::init(&d.path().join("repo"), &crate::repo::InitOptions::default()).unwrap();
        let p = Persister::new(&repo, None);
        let mut started = Vec::new();
        let mut returned = Vec::new();
        for i in 0u8..7 {
            let mut pack = new_pack(&repo).unwrap();
            let blob = [i; 100];
            let id = repo.blob_id(&blob);
            pack.add(
                BlobKind::Data,
                crate::format::compress::Compression::Raw,
                id,
                100,
                &blob,
            )
            .unwrap();
            started.push(id);
            returned.extend(p.start(pack).unwrap());
            assert!(
                started.len() - returned.len() <= RUNNING,
                "no more than {RUNNING} packs under way"
            );
        }
        returned.extend(p.finish().unwrap());
        let mut listed: Vec<_> = returned.iter().map(|r| r.entries[0].id).collect();
        listed.sort();
        started.sort();
        assert_eq!(listed, started, "each pack returned once, with its blob");
        for PackRecord { id, size, .. } in &returned {
            let on_disk = repo.store().size(&pack_path(id)).unwrap();
            assert_eq!(on_disk, Some(*size), "pack {id} is in place");
        }
    }
}
