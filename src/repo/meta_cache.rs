//! This client's copies of a remote repository's metadata blobs (directory trees and
//! chunk lists), as stored (sealed, in an encrypted repository), in the cache
//! directory under `blobs/<hh>/<id>`. A backup compares with its parent's trees, and
//! `ls`, `diff`, `find`, the mount and restore walk trees: with the copies, none of them
//! costs a request per directory after the first time (or at all, for the trees a
//! backup itself wrote).
//!
//! Blobs are named by their content, so a copy is never stale; one that does not
//! decode to its id (a damaged disk, a stray file) is dropped and the blob read from
//! the repository again. Copies are written with a temp file and a rename, without
//! fsync; the directory can be deleted at any time. A local repository has none (its
//! trees are a read away). `check` and `drill`, which must prove what the repository
//! holds, read past the copies ([`Repository::read_past_cache`]).

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};

use super::Repository;
use crate::format::id::Id;

/// Copies of metadata blobs; see the module docs.
pub(super) struct MetaCache {
    /// `blobs/` of the cache directory; `None` for a local repository.
    dir: Option<PathBuf>,
    /// Off once the repository is to be read past the copies.
    on: AtomicBool,
}

impl MetaCache {
    pub(super) fn new(dir: Option<PathBuf>) -> Self {
        MetaCache {
            dir,
            on: AtomicBool::new(true),
        }
    }

    fn path(&self, id: &Id) -> Option<PathBuf> {
        if !self.on.load(Ordering::Relaxed) {
            return None;
        }
        let hex = id.to_hex();
        Some(self.dir.as_ref()?.join(&hex[..2]).join(hex))
    }

    /// The stored bytes of blob `id`, if a copy is here.
    pub(super) fn get(&self, id: &Id) -> Option<Vec<u8>> {
        std::fs::read(self.path(id)?).ok()
    }

    /// Keeps a copy of blob `id`'s stored bytes. A copy that cannot be written is no
    /// loss: the blob is read from the repository next time.
    pub(super) fn put(&self, id: &Id, stored: &[u8]) {
        let Some(path) = self.path(id) else { return };
        let dir = path.parent().expect("a copy has a directory");
        let written = std::fs::create_dir_all(dir).and_then(|()| {
            let mut tmp = tempfile::NamedTempFile::new_in(dir)?;
            std::io::Write::write_all(&mut tmp, stored)?;
            tmp.persist(&path).map_err(|e| e.error)
        });
        if let Err(e) = written {
            log::debug!("cannot keep a copy of blob {id} in {}: {e}", dir.display());
        }
    }

    /// Drops the copy of blob `id` (it did not decode).
    pub(super) fn forget(&self, id: &Id) {
        if let Some(path) = self.path(id) {
            let _ = std::fs::remove_file(path);
        }
    }
}

impl Repository {
    /// From now on, metadata blobs are read from the repository itself, never from
    /// this client's copies: for checks, which must see the repository's bytes.
    pub fn read_past_cache(&self) {
        self.meta_cache.on.store(false, Ordering::Relaxed);
    }
}
