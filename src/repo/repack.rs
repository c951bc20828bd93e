//! Copying live blobs out of packs `prune` rewrites: their stored bytes go unchanged
//! (verified first) into new packs, data and metadata apart as in a backup. The new
//! packs are made durable but listed in no index file; prune writes the index files
//! that list them, and only then deletes the old packs.

use super::persist::{new_pack, PackFile, Persister};
use super::{PackRecord, Repository};
use crate::error::{IoContext, Result};
use crate::format::id::Id;
use crate::repo::index::BlobLoc;

/// Writes repacked blobs; see the module docs.
pub struct Repacker<'r> {
    repo: &'r Repository,
    /// Where packs are closed ([`Repository::pack_target`]).
    pack_target: u64,
    data: Option<PackFile>,
    meta: Option<PackFile>,
    persister: Persister,
    done: Vec<PackRecord>,
}

impl<'r> Repacker<'r> {
    /// Starts with no open pack.
    pub fn new(repo: &'r Repository) -> Result<Self> {
        Ok(Repacker {
            repo,
            pack_target: repo.pack_target()?,
            data: None,
            meta: None,
            persister: Persister::new(repo, None),
            done: Vec::new(),
        })
    }

    /// Copies blob `id` from `loc`, after verifying it; returns its stored size.
    pub fn copy(&mut self, id: &Id, loc: &BlobLoc) -> Result<u64> {
        let stored = self.repo.read_stored(id, loc)?;
        let slot = if loc.kind.is_metadata() {
            &mut self.meta
        } else {
            &mut self.data
        };
        if slot.is_none() {
            *slot = Some(new_pack(self.repo)?);
        }
        let w = slot.as_mut().expect("just opened");
        w.add(loc.kind, loc.compression, *id, loc.raw_len, &stored)
            .at(w.path())?;
        if w.is_full(self.pack_target) {
            let full = slot.take().expect("open");
            let durable = self.persister.start(full)?;
            self.done.extend(durable);
        }
        Ok(stored.len() as u64)
    }

    /// Closes the open packs; returns every new pack, durable, for the index.
    pub fn finish(mut self) -> Result<Vec<PackRecord>> {
        for w in [self.data.take(), self.meta.take()].into_iter().flatten() {
            if !w.is_empty() {
                let durable = self.persister.start(w)?;
                self.done.extend(durable);
            }
        }
        self.done.extend(self.persister.finish()?);
        Ok(self.done)
    }
}
