//! Reading blobs: where each is, fetching its stored bytes (one blob, a run of
//! neighbours in one read, or the wanted blobs of a pack in one streamed read),
//! checking lengths, and decoding (open the seal, then decompress).

use std::borrow::Cow;
use std::io::Read;

use super::{pack_path, Repository};
use crate::error::{Error, Result};
use crate::format::chunker::ChunkParams;
use crate::format::compress::{self, Compression};
use crate::format::crypto::OVERHEAD;
use crate::format::id::Id;
use crate::format::pack;
use crate::format::tree::MAX_META_BLOB;
use crate::repo::index::BlobLoc;

impl Repository {
    /// Where blob `id` is stored.
    pub fn locate(&self, id: &Id) -> Result<BlobLoc> {
        self.index.lookup(id)?.ok_or_else(|| Error::NotFound {
            what: "blob",
            id: id.to_hex(),
        })
    }

    /// Whether blob `id` is stored (see [`Index::may_contain`]: `false` may also mean
    /// that another process stored it meanwhile).
    ///
    /// [`Index::may_contain`]: crate::repo::index::Index::may_contain
    pub fn has_blob(&self, id: &Id) -> Result<bool> {
        self.index.may_contain(id)
    }

    /// Reads, decompresses and verifies blob `id`.
    pub fn read_blob(&self, id: &Id) -> Result<Vec<u8>> {
        self.read_blob_at(id, &self.locate(id)?)
    }

    /// Reads blob `id` from a known location, verifying its hash. A metadata blob of a
    /// remote repository comes from this client's copy in its cache directory when
    /// there is one, and is copied there when read (see
    /// [`Repository::read_past_cache`]).
    pub fn read_blob_at(&self, id: &Id, loc: &BlobLoc) -> Result<Vec<u8>> {
        if !loc.kind.is_metadata() {
            let stored = self.fetch(id, loc)?;
            return self.decode(id, loc, Cow::Owned(stored));
        }
        if let Some(stored) = self.meta_cache.get(id) {
            match self.decode(id, loc, Cow::Borrowed(&stored)) {
                Ok(raw) => return Ok(raw),
                Err(_) => self.meta_cache.forget(id),
            }
        }
        let stored = self.fetch(id, loc)?;
        let raw = self.decode(id, loc, Cow::Borrowed(&stored))?;
        self.meta_cache.put(id, &stored);
        Ok(raw)
    }

    /// Reads blob `id` as stored (compressed or not) after verifying it decodes to its
    /// id, for copying into a new pack unchanged.
    pub fn read_stored(&self, id: &Id, loc: &BlobLoc) -> Result<Vec<u8>> {
        let stored = self.fetch(id, loc)?;
        self.decode(id, loc, Cow::Borrowed(&stored))?;
        Ok(stored)
    }

    /// The stored bytes of blob `id`, after checking that the lengths are plausible.
    fn fetch(&self, id: &Id, loc: &BlobLoc) -> Result<Vec<u8>> {
        self.check_lengths(id, loc)?;
        self.read_span(id, loc, loc.stored_len as usize)
    }

    /// Reads, decodes and verifies a run of blobs stored back to back in one pack with
    /// one read (fewer requests to a remote store, fewer calls to a local one); returns
    /// their raw bytes back to back in one buffer, so that the run is written with one
    /// call (and a file system zeroes no partly written block between two chunks).
    pub(super) fn read_run(&self, run: &[(Id, BlobLoc)]) -> Result<Vec<u8>> {
        let Some((first, start)) = run.first() else {
            return Ok(Vec::new());
        };
        for (id, loc) in run {
            self.check_lengths(id, loc)?;
        }
        let span: usize = run.iter().map(|(_, l)| l.stored_len as usize).sum();
        let bytes = self.read_span(first, start, span)?;
        let mut out = Vec::with_capacity(run.iter().map(|(_, l)| l.raw_len as usize).sum());
        let mut at = 0;
        for (id, loc) in run {
            let stored = &bytes[at..at + loc.stored_len as usize];
            at += loc.stored_len as usize;
            self.decode_into(id, loc, Cow::Borrowed(stored), &mut out)?;
        }
        Ok(out)
    }

    /// Reads the blobs of `group` (blobs of one pack, in offset order, each once) with
    /// one streamed read from the start of the first to the end of the last, the bytes
    /// between them read and dropped, and hands each to `each` as it arrives: decoded
    /// and verified, or the error that says why it is not. Memory is one blob, however
    /// long the read. A read that fails stops the stream with its error; the blobs not
    /// handed over by then are the caller's to read again.
    pub fn read_pack_stream(
        &self,
        group: &[(Id, BlobLoc)],
        each: &mut dyn FnMut(&Id, Result<Vec<u8>>),
    ) -> Result<()> {
        let Some((_, first)) = group.first() else {
            return Ok(());
        };
        let last = &group[group.len() - 1].1;
        let path = pack_path(&first.pack);
        let len = last.offset + u64::from(last.stored_len) - first.offset;
        let mut r = self.store.read_stream(&path, first.offset, len)?;
        let failed = |e: std::io::Error| Error::Storage {
            location: format!("{}/{path}", self.store.location()),
            detail: format!("reading {len} bytes at {}: {e}", first.offset),
        };
        let mut pos = first.offset;
        let mut stored = Vec::new();
        for (id, loc) in group {
            let gap = loc
                .offset
                .checked_sub(pos)
                .ok_or_else(|| Error::internal("blobs of a pack read out of order", None))?;
            let skipped =
                std::io::copy(&mut (&mut r).take(gap), &mut std::io::sink()).map_err(failed)?;
            if skipped < gap {
                return Err(failed(std::io::ErrorKind::UnexpectedEof.into()));
            }
            let raw = self.check_lengths(id, loc).and_then(|()| {
                stored.resize(loc.stored_len as usize, 0);
                r.read_exact(&mut stored).map_err(failed)?;
                Ok(())
            });
            pos = loc.offset + u64::from(loc.stored_len);
            match raw {
                Ok(()) => each(id, self.decode(id, loc, Cow::Borrowed(&stored))),
                // Its bytes were not read: the stream cannot go on past them.
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Checks that a blob's lengths are plausible before anything is read or allocated.
    fn check_lengths(&self, id: &Id, loc: &BlobLoc) -> Result<()> {
        let cap = if loc.kind.is_metadata() {
            MAX_META_BLOB
        } else {
            ChunkParams::MAX_CHUNK
        };
        // Named only in errors: this runs for every blob read.
        let pack_name = || format!("packs/{}", loc.pack);
        let seal = if self.key.is_some() {
            u32::try_from(OVERHEAD).expect("a few bytes")
        } else {
            0
        };
        let sane = loc.raw_len <= cap
            && match loc.compression {
                Compression::Raw => Some(loc.stored_len) == loc.raw_len.checked_add(seal),
                Compression::Zstd => loc.stored_len <= loc.raw_len.saturating_add(seal),
            };
        if !sane {
            return Err(Error::corrupt(
                "blob",
                id,
                format!("implausible lengths in {}", pack_name()),
            ));
        }
        Ok(())
    }

    /// `len` stored bytes of pack `loc.pack` from `loc.offset` (blob `id` first).
    fn read_span(&self, id: &Id, loc: &BlobLoc, len: usize) -> Result<Vec<u8>> {
        let pack_name = || format!("packs/{}", loc.pack);
        self.store
            .read_at(&pack_path(&loc.pack), loc.offset, len)
            .map_err(|e| match e {
                // Neither a network failure nor a refused permission is damage (a
                // missing pack or a short read is).
                Error::Storage { .. } => e,
                Error::Io { ref source, .. }
                    if !e.is_damage() && source.kind() != std::io::ErrorKind::NotFound =>
                {
                    e
                }
                e => Error::corrupt(
                    "blob",
                    id,
                    format!("cannot read {} at {}: {e}", pack_name(), loc.offset),
                ),
            })
    }

    /// Opens (encrypted repositories) and decompresses stored bytes, and checks that
    /// they hash to `id`. Borrowed bytes are copied only when stored raw and plain.
    fn decode(&self, id: &Id, loc: &BlobLoc, stored: Cow<'_, [u8]>) -> Result<Vec<u8>> {
        let mut raw = Vec::new();
        self.decode_into(id, loc, stored, &mut raw)?;
        Ok(raw)
    }

    /// Like [`Repository::decode`], appending the raw bytes to `out`; on error `out` is
    /// as it was.
    fn decode_into(
        &self,
        id: &Id,
        loc: &BlobLoc,
        stored: Cow<'_, [u8]>,
        out: &mut Vec<u8>,
    ) -> Result<()> {
        let pack_name = || format!("packs/{}", loc.pack);
        let stored = match &self.key {
            Some(k) => Cow::Owned(k.open(&blob_aad(id, loc.kind), &stored).ok_or_else(|| {
                Error::corrupt(
                    "blob",
                    id,
                    format!(
                        "in {} fails authentication (altered or damaged)",
                        pack_name()
                    ),
                )
            })?),
            None => stored,
        };
        let start = out.len();
        match loc.compression {
            Compression::Raw if out.capacity() == 0 => *out = stored.into_owned(),
            Compression::Raw => out.extend_from_slice(&stored),
            Compression::Zstd => compress::decompress_into(&stored, loc.raw_len as usize, out)
                .map_err(|e| Error::corrupt("blob", id, format!("in {}: {e}", pack_name())))?,
        }
        let actual = self.blob_id(&out[start..]);
        if actual != *id {
            out.truncate(start);
            return Err(Error::ChecksumMismatch {
                what: format!("blob in {}", pack_name()),
                expected: id.to_hex(),
                actual: actual.to_hex(),
            });
        }
        Ok(())
    }
}

/// Associated data of a sealed blob: its id and kind.
pub(super) fn blob_aad(id: &Id, kind: pack::BlobKind) -> [u8; 33] {
    let mut a = [0u8; 33];
    a[..32].copy_from_slice(&id.0);
    a[32] = kind as u8;
    a
}

/// Splits blobs (in order) into reads of one pack each: a blob joins the read of the
/// one before it when it follows it in the same pack with at most `max_gap` bytes
/// between them (read and dropped) and the read stays within `max_span` bytes;
/// returns index ranges.
pub(crate) fn reads(
    blobs: &[(Id, BlobLoc)],
    max_gap: u64,
    max_span: u64,
) -> Vec<std::ops::Range<usize>> {
    let mut out = Vec::new();
    let mut start = 0;
    for i in 1..=blobs.len() {
        let joins = blobs.get(i).is_some_and(|(_, loc)| {
            let (first, prev) = (&blobs[start].1, &blobs[i - 1].1);
            let prev_end = prev.offset + u64::from(prev.stored_len);
            loc.pack == prev.pack
                && loc.offset >= prev_end
                && loc.offset - prev_end <= max_gap
                && loc.offset + u64::from(loc.stored_len) - first.offset <= max_span
        });
        if !joins {
            out.push(start..i);
            start = i;
        }
    }
    out
}

/// Splits blobs (in file order) into runs stored back to back in one pack, each at
/// most 4 MiB so that a batch still decodes on several cores; returns index ranges.
pub(super) fn runs(blobs: &[(Id, BlobLoc)]) -> Vec<std::ops::Range<usize>> {
    reads(blobs, 0, 4 << 20)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::id::PackId;

    fn at(pack: u8, offset: u64, len: u32) -> (Id, BlobLoc) {
        (
            Id::hash(&offset.to_le_bytes()),
            BlobLoc {
                pack: PackId(Id::hash(&[pack])),
                offset,
                stored_len: len,
                raw_len: len,
                kind: pack::BlobKind::Data,
                compression: Compression::Raw,
            },
        )
    }

    #[test]
    fn runs_join_adjacent_blobs_of_one_pack_up_to_the_cap() {
        let big = 3 << 20;
        let blobs = vec![
            at(1, 16, 100),
            at(1, 116, 50),
            at(1, 200, 10), // a gap
            at(2, 210, 10), // another pack
            at(2, 220, big),
            at(2, 220 + u64::from(big), big), // would pass 4 MiB
        ];
        let lens: Vec<usize> = runs(&blobs)
            .iter()
            .map(std::iter::ExactSizeIterator::len)
            .collect();
        assert_eq!(lens, vec![2, 1, 2, 1]);
        assert!(runs(&[]).is_empty());
    }
}
