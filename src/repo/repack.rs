//! Copying live blobs out of packs `prune` rewrites: their stored bytes go unchanged
//! (verified first) into new packs, data and metadata apart as in a backup. The new
//! packs are made durable but listed in no index file; prune writes the index files
//! that list them, and only then deletes the old packs.

use std::io::BufWriter;

use super::{PackRecord, Repository};
use crate::error::{IoContext, Result};
use crate::id::Id;
use crate::index::BlobLoc;
use crate::pack::PackWriter;

type Writer = PackWriter<BufWriter<tempfile::NamedTempFile>>;

/// Writes repacked blobs; see the module docs.
pub struct Repacker<'r> {
    repo: &'r Repository,
    data: Option<Writer>,
    meta: Option<Writer>,
    done: Vec<PackRecord>,
}

impl<'r> Repacker<'r> {
    /// Starts with no open pack.
    pub fn new(repo: &'r Repository) -> Self {
        Repacker {
            repo,
            data: None,
            meta: None,
            done: Vec::new(),
        }
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
            let file = self.repo.new_pack_file()?;
            let path = file.path().to_path_buf();
            *slot = Some(
                PackWriter::new(
                    BufWriter::with_capacity(1 << 20, file),
                    self.repo.key.clone(),
                )
                .at(&path)?,
            );
        }
        let w = slot.as_mut().expect("just opened");
        w.add(loc.kind, loc.compression, *id, loc.raw_len, &stored)
            .at(w.get_ref().get_ref().path())?;
        if w.is_full(self.repo.config.pack_size) {
            let full = slot.take().expect("open");
            self.close(full)?;
        }
        Ok(stored.len() as u64)
    }

    fn close(&mut self, w: Writer) -> Result<()> {
        let path = w.get_ref().get_ref().path().to_path_buf();
        let (id, entries, size, buf) = w.finish().at(&path)?;
        let file = buf.into_inner().map_err(|e| e.into_error()).at(&path)?;
        self.repo.persist_pack(file, &id)?;
        self.done.push((id, size, entries));
        Ok(())
    }

    /// Closes the open packs; returns every new pack, durable, for the index.
    pub fn finish(mut self) -> Result<Vec<PackRecord>> {
        for w in [self.data.take(), self.meta.take()].into_iter().flatten() {
            if !w.is_empty() {
                self.close(w)?;
            }
        }
        Ok(self.done)
    }
}
