//! Writing new blobs: dedup against the index, compress, append to the open pack,
//! commit full packs. Safe to call from many threads at once.
//!
//! Data blobs and metadata blobs (trees, chunk lists) go to separate packs. A blob is
//! claimed in an in-memory set before it is written, so two threads never store the
//! same new blob twice. Finished packs are made durable in the background (see
//! [`super::persist`]) and, once durable, listed in an index file every
//! [`index_files::BLOBS_PER_FILE`] blobs and at [`Saver::flush`]; then they enter the
//! index cache and their claims are dropped (the index answers from then on), so the
//! set stays bounded however long the run.
//!
//! A [`Saver::dry_run`] saver stores nothing: it deduplicates and compresses as usual
//! and only counts; its claims stay (memory grows with the new blobs of the run).

use std::borrow::Cow;
use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use super::journal::Journal;
use super::persist::{new_pack, PackFile, Persister};
use super::{index_files, PackRecord, Repository};
use crate::error::{IoContext, Result};
use crate::format::compress::{self, Compression};
use crate::format::id::{Id, TreeId};
use crate::format::pack::BlobKind;
use crate::format::tree::Tree;
use crate::locked;

/// What a run added to the repository.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Added {
    /// New blobs.
    pub blobs: u64,
    /// Their raw bytes.
    pub raw: u64,
    /// Their stored bytes.
    pub stored: u64,
}

/// Stores new blobs into packs; see the module docs.
pub struct Saver<'r> {
    repo: &'r Repository,
    level: i32,
    /// Where packs are closed ([`Repository::pack_target`]).
    pack_target: u64,
    claimed: Mutex<HashSet<Id>>,
    /// Durable packs no index file lists yet.
    pending: Mutex<Vec<PackRecord>>,
    data: Mutex<Option<PackFile>>,
    meta: Mutex<Option<PackFile>>,
    persister: Persister,
    journal: Arc<Journal>,
    blobs: AtomicU64,
    raw: AtomicU64,
    stored: AtomicU64,
    /// Count, do not store.
    dry: bool,
}

impl<'r> Saver<'r> {
    pub(super) fn new(repo: &'r Repository, level: i32) -> Result<Self> {
        let journal = Arc::new(Journal::new(&repo.cache)?);
        Ok(Saver {
            repo,
            level,
            pack_target: repo.pack_target()?,
            claimed: Mutex::new(HashSet::new()),
            pending: Mutex::new(Vec::new()),
            data: Mutex::new(None),
            meta: Mutex::new(None),
            persister: Persister::new(repo, Some(journal.clone())),
            journal,
            blobs: AtomicU64::new(0),
            raw: AtomicU64::new(0),
            stored: AtomicU64::new(0),
            dry: false,
        })
    }

    /// This saver made one that stores nothing, for a `--dry-run`: what it would add is
    /// counted in [`Saver::added`], and no pack is ever opened.
    #[must_use]
    pub fn dry_run(mut self) -> Self {
        self.dry = true;
        self
    }

    /// Stores `raw` unless the repository has it; returns its id.
    pub fn save(&self, kind: BlobKind, raw: &[u8]) -> Result<Id> {
        let id = self.repo.blob_id(raw);
        self.save_hashed(kind, id, raw)?;
        Ok(id)
    }

    /// Stores directory tree `tree` unless the repository has it; returns its id.
    pub fn save_tree(&self, tree: &Tree) -> Result<TreeId> {
        self.save(BlobKind::Tree, &tree.encode()?).map(TreeId)
    }

    /// Like [`Saver::save`] for a blob whose id the caller computed.
    pub fn save_hashed(&self, kind: BlobKind, id: Id, raw: &[u8]) -> Result<()> {
        crate::interrupt::check()?;
        if locked(&self.claimed).contains(&id) || self.repo.has_blob(&id)? {
            return Ok(());
        }
        if !locked(&self.claimed).insert(id) {
            return Ok(());
        }
        let (compression, mut stored) = match compress::compress(raw, self.level) {
            Some(z) => (Compression::Zstd, Cow::Owned(z)),
            None => (Compression::Raw, Cow::Borrowed(raw)),
        };
        if self.dry {
            self.count(raw.len(), stored.len());
            return Ok(());
        }
        if let Some(k) = &self.repo.key {
            stored = Cow::Owned(k.seal(&super::blobs::blob_aad(&id, kind), &stored)?);
        }
        let raw_len = u32::try_from(raw.len()).expect("blobs are capped far below 4 GiB");
        let slot = if kind.is_metadata() {
            // The next run compares with these trees: no request for them then.
            self.repo.meta_cache.put(&id, &stored);
            &self.meta
        } else {
            &self.data
        };
        let full = {
            let mut open = locked(slot);
            if open.is_none() {
                *open = Some(new_pack(self.repo)?);
            }
            let p = open.as_mut().expect("just opened");
            p.add(kind, compression, id, raw_len, &stored)
                .at(p.path())?;
            if p.is_full(self.pack_target) {
                open.take()
            } else {
                None
            }
        };
        self.count(raw.len(), stored.len());
        if let Some(p) = full {
            self.commit(p)?;
        }
        Ok(())
    }

    /// Counts one new blob in [`Saver::added`].
    fn count(&self, raw: usize, stored: usize) {
        self.blobs.fetch_add(1, Ordering::Relaxed);
        self.raw.fetch_add(raw as u64, Ordering::Relaxed);
        self.stored.fetch_add(stored as u64, Ordering::Relaxed);
    }

    fn commit(&self, p: PackFile) -> Result<()> {
        let durable = self.persister.start(p)?;
        self.list(durable, false)
    }

    /// Adds durable packs to those awaiting an index file; writes one when they hold
    /// enough blobs, or with `all`.
    fn list(&self, durable: Vec<PackRecord>, all: bool) -> Result<()> {
        let batch = {
            let mut pending = locked(&self.pending);
            pending.extend(durable);
            let blobs: usize = pending.iter().map(|r| r.entries.len()).sum();
            if all || blobs >= index_files::BLOBS_PER_FILE {
                std::mem::take(&mut *pending)
            } else {
                Vec::new()
            }
        };
        self.write_index(batch)
    }

    /// Lists `packs` in an index file; they are in the cache then, and their claims go.
    fn write_index(&self, packs: Vec<PackRecord>) -> Result<()> {
        if packs.is_empty() {
            return Ok(());
        }
        self.repo.write_index_file(&packs)?;
        let mut claimed = locked(&self.claimed);
        for PackRecord { entries, .. } in &packs {
            for e in entries {
                claimed.remove(&e.id);
            }
        }
        Ok(())
    }

    /// Commits the open packs and lists every pack in an index file; every blob saved
    /// so far is then durable and indexed.
    pub fn flush(&self) -> Result<()> {
        for slot in [&self.data, &self.meta] {
            let open = locked(slot).take();
            match open {
                Some(p) if !p.is_empty() => self.commit(p)?,
                _ => {}
            }
        }
        self.list(self.persister.finish()?, true)?;
        self.journal.clear()
    }

    /// What this saver added so far.
    pub fn added(&self) -> Added {
        Added {
            blobs: self.blobs.load(Ordering::Relaxed),
            raw: self.raw.load(Ordering::Relaxed),
            stored: self.stored.load(Ordering::Relaxed),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::pack;

    #[test]
    fn claims_are_dropped_once_their_pack_is_indexed() {
        let d = tempfile::tempdir().unwrap();
        let repo =
            Repository::init(&d.path().join("repo"), &crate::repo::InitOptions::default()).unwrap();
        let saver = repo.saver(3).unwrap();
        let blobs: Vec<Vec<u8>> = (0u32..100).map(|i| i.to_le_bytes().repeat(100)).collect();
        for b in &blobs {
            saver.save(BlobKind::Data, b).unwrap();
        }
        assert_eq!(locked(&saver.claimed).len(), 100);
        saver.flush().unwrap();
        assert!(
            locked(&saver.claimed).is_empty(),
            "claims outlived their pack"
        );
        for b in &blobs {
            saver.save(BlobKind::Data, b).unwrap();
        }
        assert_eq!(
            saver.added().blobs,
            100,
            "known blobs are deduplicated through the index"
        );
        assert!(locked(&saver.claimed).is_empty());
    }

    #[test]
    fn new_packs_grow_with_what_the_repository_holds() {
        let d = tempfile::tempdir().unwrap();
        let opts = crate::repo::InitOptions {
            pack_size: 1 << 20,
            ..Default::default()
        };
        let repo = Repository::init(&d.path().join("repo"), &opts).unwrap();
        // Incompressible blobs of 64 KiB: 24 MiB stored in all.
        let blob = |i: u32| {
            let mut b = vec![0u8; 64 << 10];
            blake3::Hasher::new()
                .update(&i.to_le_bytes())
                .finalize_xof()
                .fill(&mut b);
            b
        };
        let first = repo.saver(3).unwrap();
        assert_eq!(
            first.pack_target,
            1 << 20,
            "an empty repository: the config's"
        );
        for i in 0..192 {
            first.save(BlobKind::Data, &blob(i)).unwrap();
        }
        first.flush().unwrap();
        let second = repo.saver(3).unwrap();
        let held = repo.index().pack_bytes().unwrap();
        assert!(held > 8 << 20);
        assert_eq!(second.pack_target, pack::target_size(1 << 20, held));
        for i in 192..384 {
            second.save(BlobKind::Data, &blob(i)).unwrap();
        }
        second.flush().unwrap();
        let sizes: Vec<u64> = repo
            .index()
            .packs_by_verification()
            .unwrap()
            .into_iter()
            .map(|(_, size)| size)
            .collect();
        let grown = sizes.iter().filter(|&&s| s >= second.pack_target).count();
        assert!(
            grown >= 5,
            "the second run closed its packs at {} bytes: {sizes:?}",
            second.pack_target
        );
    }
}
