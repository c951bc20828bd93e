//! Pack files: many blobs in one immutable file, with a trailer that lists them.
//!
//! ```text
//! header  "SNAPPACK" | version u32 LE | reserved u32                      16 bytes
//! blobs   stored bytes, back to back, in trailer order
//! entries count x 44 bytes: kind u8 | compression u8 | reserved u16 |
//!         raw_len u32 LE | stored_len u32 LE | id [32]
//! footer  count u32 LE | reserved u32 | BLAKE3(entries) [32] | "SNAPTAIL"  48 bytes
//! ```
//! A pack's name is the BLAKE3 of the whole file. The trailer alone rebuilds the index.
//! This module is a pure codec: the repository does the file I/O.

use std::io::Write;

use crate::error::{Error, Result};
use crate::format::compress::Compression;
use crate::format::crypto::{MasterKey, OVERHEAD};
use crate::format::id::{Id, PackId, ID_LEN};

/// First bytes of every pack.
pub const MAGIC: &[u8; 8] = b"SNAPPACK";
/// Last bytes of every pack.
pub const TAIL_MAGIC: &[u8; 8] = b"SNAPTAIL";
/// Pack format version written and read by this build.
pub const VERSION: u32 = 1;
/// Header length.
pub const HEADER_LEN: u64 = 16;
/// [`HEADER_LEN`] as a length in memory.
#[allow(clippy::cast_possible_truncation, reason = "16")]
pub const HEADER_USIZE: usize = HEADER_LEN as usize;
/// One trailer entry.
pub const ENTRY_LEN: usize = 44;
/// Footer length.
pub const FOOTER_LEN: usize = 48;
/// Default size at which a pack is closed in an empty repository.
pub const DEFAULT_TARGET_SIZE: u64 = 32 << 20;
/// The largest size [`target_size`] grows a pack to.
const MAX_GROWN_SIZE: u64 = 1 << 30;

/// The size at which a writer closes a pack when the repository's packs already hold
/// `stored` bytes: `base` (the config's `pack_size`) plus 32 x sqrt(`stored`), at most
/// four times `base` and 1 GiB (never below `base`). Packs grow with the repository,
/// as rustic's do, so a large repository is not split into ever more objects (each
/// one a request on object storage, an entry in every listing); a small one keeps
/// packs small, so a prune rewrites little.
pub fn target_size(base: u64, stored: u64) -> u64 {
    let limit = base.saturating_mul(4).min(MAX_GROWN_SIZE).max(base);
    base.saturating_add(32 * stored.isqrt()).min(limit)
}
/// A pack is also closed at this many blobs: a pack of tiny files (a million files of
/// a hundred bytes) would otherwise hold 200,000 of them, and the writer keeps every
/// entry, and a backup every claim, until the pack is done.
const MAX_BLOBS: usize = 1 << 15;

/// What a blob holds (one byte on disk).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum BlobKind {
    /// File or stream content.
    Data = 0,
    /// A directory: encoded [`crate::format::tree::Tree`].
    Tree = 1,
    /// A node of a large file's chunk list: encoded [`crate::format::tree::ListNode`].
    List = 2,
}

impl BlobKind {
    /// Decodes the on-disk byte.
    pub fn from_u8(b: u8) -> Option<BlobKind> {
        match b {
            0 => Some(BlobKind::Data),
            1 => Some(BlobKind::Tree),
            2 => Some(BlobKind::List),
            _ => None,
        }
    }

    /// Data goes to data packs; trees and lists to metadata packs, so that metadata can
    /// be read (and later cached) without touching bulk data.
    pub fn is_metadata(self) -> bool {
        self != BlobKind::Data
    }
}

/// A pack as an index file (and the index cache) lists it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PackRecord {
    /// Its name: the BLAKE3 of its bytes.
    pub id: PackId,
    /// Its file size.
    pub size: u64,
    /// Its trailer entries, one per blob.
    pub entries: Vec<PackEntry>,
}

/// One blob as the trailer lists it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PackEntry {
    /// What the blob holds.
    pub kind: BlobKind,
    /// How it is stored.
    pub compression: Compression,
    /// BLAKE3 of the raw bytes.
    pub id: Id,
    /// Offset of the stored bytes from the start of the file.
    pub offset: u64,
    /// Stored length.
    pub stored_len: u32,
    /// Length after decompression.
    pub raw_len: u32,
}

/// Writes a pack to `W`, hashing as it goes. After an I/O error every call fails
/// (sticky error), so a half-written pack can never be finished by mistake.
pub struct PackWriter<W: Write> {
    out: W,
    hasher: blake3::Hasher,
    entries: Vec<PackEntry>,
    len: u64,
    /// The first write error, repeated by every later call.
    broken: Option<(std::io::ErrorKind, String)>,
    /// Seals the trailer (encrypted repositories).
    key: Option<MasterKey>,
}

impl<W: Write> PackWriter<W> {
    /// Starts a pack by writing its header; with `key`, its trailer will be sealed.
    pub fn new(out: W, key: Option<MasterKey>) -> std::io::Result<Self> {
        let mut w = PackWriter {
            out,
            hasher: blake3::Hasher::new(),
            entries: Vec::new(),
            len: 0,
            broken: None,
            key,
        };
        let mut header = [0u8; HEADER_USIZE];
        header[..8].copy_from_slice(MAGIC);
        header[8..12].copy_from_slice(&VERSION.to_le_bytes());
        w.write(&header)?;
        Ok(w)
    }

    fn write(&mut self, b: &[u8]) -> std::io::Result<()> {
        if let Some((kind, msg)) = &self.broken {
            return Err(std::io::Error::new(
                *kind,
                format!("pack writer failed earlier: {msg}"),
            ));
        }
        if let Err(e) = self.out.write_all(b) {
            self.broken = Some((e.kind(), e.to_string()));
            return Err(e);
        }
        self.hasher.update(b);
        self.len += b.len() as u64;
        Ok(())
    }

    /// Appends one blob. `stored.len()` and `raw_len` must fit the format's u32 fields
    /// (blobs are capped far below).
    pub fn add(
        &mut self,
        kind: BlobKind,
        compression: Compression,
        id: Id,
        raw_len: u32,
        stored: &[u8],
    ) -> std::io::Result<()> {
        let stored_len = u32::try_from(stored.len()).map_err(std::io::Error::other)?;
        let offset = self.len;
        self.write(stored)?;
        self.entries.push(PackEntry {
            kind,
            compression,
            id,
            offset,
            stored_len,
            raw_len,
        });
        Ok(())
    }

    /// The sink being written to.
    pub fn get_ref(&self) -> &W {
        &self.out
    }

    /// Bytes written so far.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Whether the pack is to be closed: at `target_size` bytes (see [`target_size`])
    /// or 32,768 blobs.
    pub fn is_full(&self, target_size: u64) -> bool {
        self.len >= target_size || self.entries.len() >= MAX_BLOBS
    }

    /// True when no blob was added.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Writes the trailer; returns the pack id, its entries, its size and the sink.
    pub fn finish(mut self) -> std::io::Result<(PackId, Vec<PackEntry>, u64, W)> {
        let mut entries = encode_entries(&self.entries);
        if let Some(k) = &self.key {
            entries = k
                .seal(TRAILER_AAD, &entries)
                .map_err(std::io::Error::other)?;
        }
        let count = u32::try_from(self.entries.len()).map_err(std::io::Error::other)?;
        let mut footer = [0u8; FOOTER_LEN];
        footer[..4].copy_from_slice(&count.to_le_bytes());
        footer[8..40].copy_from_slice(blake3::hash(&entries).as_bytes());
        footer[40..].copy_from_slice(TAIL_MAGIC);
        self.write(&entries)?;
        self.write(&footer)?;
        self.out.flush()?;
        let id = PackId(Id::from(self.hasher.finalize()));
        Ok((id, self.entries, self.len, self.out))
    }
}

/// The plain trailer entries of `entries` ([`ENTRY_LEN`] bytes each).
pub fn encode_entries(entries: &[PackEntry]) -> Vec<u8> {
    let mut out = Vec::with_capacity(entries.len() * ENTRY_LEN);
    for e in entries {
        out.push(e.kind as u8);
        out.push(e.compression as u8);
        out.extend_from_slice(&[0, 0]);
        out.extend_from_slice(&e.raw_len.to_le_bytes());
        out.extend_from_slice(&e.stored_len.to_le_bytes());
        out.extend_from_slice(&e.id.0);
    }
    out
}

/// Checks a pack's header (its first [`HEADER_LEN`] bytes).
pub fn check_header(name: &str, header: &[u8]) -> Result<()> {
    if header.len() < HEADER_USIZE || &header[..8] != MAGIC {
        return Err(Error::corrupt("pack", name, "bad header magic"));
    }
    let version = u32::from_le_bytes(header[8..12].try_into().expect("4 bytes"));
    if version != VERSION {
        return Err(Error::UnsupportedVersion {
            what: "pack",
            expected: VERSION,
            found: version,
        });
    }
    if header[12..16] != [0; 4] {
        return Err(Error::corrupt(
            "pack",
            name,
            "reserved header bytes are not zero",
        ));
    }
    Ok(())
}

/// Associated data of a sealed trailer.
const TRAILER_AAD: &[u8] = b"snap pack trailer";

/// Reads the footer (the last [`FOOTER_LEN`] bytes of a pack of `file_len` bytes) and
/// returns where the trailer starts and its length, after checking it fits the file
/// (`sealed`: the trailer of an encrypted repository's pack, [`OVERHEAD`] longer).
pub fn decode_footer(
    name: &str,
    footer: &[u8],
    file_len: u64,
    sealed: bool,
) -> Result<(u64, usize)> {
    if footer.len() != FOOTER_LEN || &footer[40..] != TAIL_MAGIC {
        return Err(Error::corrupt(
            "pack",
            name,
            "bad trailer magic (truncated?)",
        ));
    }
    if footer[4..8] != [0; 4] {
        return Err(Error::corrupt(
            "pack",
            name,
            "reserved footer bytes are not zero",
        ));
    }
    let count = u64::from(u32::from_le_bytes(footer[..4].try_into().expect("4 bytes")));
    let entries_len = count * ENTRY_LEN as u64 + if sealed { OVERHEAD as u64 } else { 0 };
    let min_len = HEADER_LEN + entries_len + FOOTER_LEN as u64;
    if min_len > file_len {
        return Err(Error::corrupt(
            "pack",
            name,
            format!("trailer lists {count} blobs, more than a {file_len}-byte file holds"),
        ));
    }
    let start = file_len - FOOTER_LEN as u64 - entries_len;
    let entries_len = usize::try_from(entries_len)
        .map_err(|_| Error::corrupt("pack", name, "trailer larger than this machine addresses"))?;
    Ok((start, entries_len))
}

/// Decodes trailer entries, verifying their hash against the footer (and, with `key`,
/// opening the sealed trailer) and that the blobs exactly fill the space between
/// header and trailer.
pub fn decode_entries(
    name: &str,
    footer: &[u8],
    trailer: &[u8],
    file_len: u64,
    key: Option<&MasterKey>,
) -> Result<Vec<PackEntry>> {
    if blake3::hash(trailer).as_bytes() != &footer[8..40] {
        return Err(Error::corrupt("pack", name, "trailer checksum mismatch"));
    }
    let opened;
    let entries = match key {
        Some(k) => {
            opened = k.open(TRAILER_AAD, trailer).ok_or_else(|| {
                Error::corrupt(
                    "pack",
                    name,
                    "trailer fails authentication (wrong key or altered)",
                )
            })?;
            &opened[..]
        }
        None => trailer,
    };
    let trailer_start = file_len - FOOTER_LEN as u64 - trailer.len() as u64;
    parse_entries(name, entries, trailer_start)
}

/// Parses plain trailer entries (a whole number of them), computing each blob's
/// offset, and checks that the blobs end exactly at `blobs_end` (where the trailer of
/// the pack starts).
pub fn parse_entries(name: &str, entries: &[u8], blobs_end: u64) -> Result<Vec<PackEntry>> {
    if !entries.len().is_multiple_of(ENTRY_LEN) {
        return Err(Error::corrupt(
            "pack",
            name,
            "trailer length is not a whole number of entries",
        ));
    }
    let mut out = Vec::with_capacity(entries.len() / ENTRY_LEN);
    let mut offset = HEADER_LEN;
    for (i, e) in entries.chunks_exact(ENTRY_LEN).enumerate() {
        let bad = |what: &str| Error::corrupt("pack", name, format!("entry {i}: {what}"));
        let kind = BlobKind::from_u8(e[0]).ok_or_else(|| bad("unknown blob kind"))?;
        let compression = Compression::from_u8(e[1]).ok_or_else(|| bad("unknown compression"))?;
        if e[2..4] != [0; 2] {
            return Err(bad("reserved bytes are not zero"));
        }
        let raw_len = u32::from_le_bytes(e[4..8].try_into().expect("4 bytes"));
        let stored_len = u32::from_le_bytes(e[8..12].try_into().expect("4 bytes"));
        let id = Id::from_slice(&e[12..12 + ID_LEN]).ok_or_else(|| bad("short id"))?;
        out.push(PackEntry {
            kind,
            compression,
            id,
            offset,
            stored_len,
            raw_len,
        });
        offset += u64::from(stored_len);
    }
    if offset != blobs_end {
        return Err(Error::corrupt(
            "pack",
            name,
            format!("blobs end at {offset} but the trailer starts at {blobs_end}"),
        ));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn packs_grow_with_the_repository_up_to_their_limit() {
        let base = DEFAULT_TARGET_SIZE;
        assert_eq!(target_size(base, 0), base, "an empty repository: the base");
        // 10 GB stored: 32 x 100,000 bytes more.
        assert_eq!(target_size(base, 10_000_000_000), base + 3_200_000);
        // 1 TB: 32 MB more, about twice the base.
        assert_eq!(target_size(base, 1_000_000_000_000), base + 32_000_000);
        assert_eq!(
            target_size(base, u64::MAX),
            4 * base,
            "four times the base at most"
        );
        assert_eq!(
            target_size(512 << 20, u64::MAX),
            1 << 30,
            "and 1 GiB at most"
        );
        assert_eq!(
            target_size(1 << 30, u64::MAX),
            1 << 30,
            "never below the base"
        );
    }

    fn decode(name: &str, file: &[u8]) -> Result<Vec<PackEntry>> {
        let len = file.len() as u64;
        check_header(name, file)?;
        let footer = &file[file.len() - FOOTER_LEN..];
        let (start, n) = decode_footer(name, footer, len, false)?;
        decode_entries(
            name,
            footer,
            &file[usize::try_from(start).unwrap()..][..n],
            len,
            None,
        )
    }

    proptest! {
        #[test]
        fn round_trip(blobs in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..300), 0..20)) {
            let mut w = PackWriter::new(Vec::new(), None).unwrap();
            for b in &blobs {
                w.add(BlobKind::Data, Compression::Raw, Id::hash(b), u32::try_from(b.len()).unwrap(), b).unwrap();
            }
            let (id, entries, len, file) = w.finish().unwrap();
            prop_assert_eq!(id, PackId(Id::hash(&file)));
            prop_assert_eq!(len, file.len() as u64);
            let got = decode("p", &file).unwrap();
            prop_assert_eq!(&got, &entries);
            for (e, b) in got.iter().zip(&blobs) {
                let at = usize::try_from(e.offset).unwrap();
                let s = &file[at..at + e.stored_len as usize];
                prop_assert_eq!(s, &b[..]);
            }
        }
    }

    #[test]
    fn damage_is_detected() {
        let mut w = PackWriter::new(Vec::new(), None).unwrap();
        w.add(BlobKind::Tree, Compression::Raw, Id::hash(b"x"), 1, b"x")
            .unwrap();
        let (_, _, _, file) = w.finish().unwrap();
        for i in 0..file.len() {
            let mut f = file.clone();
            f[i] ^= 0x40;
            // The blob byte itself is caught by its id when read; every structural
            // byte is caught here.
            if i as u64 == HEADER_LEN {
                continue;
            }
            assert!(decode("p", &f).is_err(), "flip at {i} not detected");
        }
        assert!(decode("p", &file[..file.len() - 1]).is_err());
    }

    #[test]
    fn sticky_error() {
        struct Failing(u32);
        impl Write for Failing {
            fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
                self.0 += 1;
                if self.0 == 2 {
                    Err(std::io::Error::other("disk full"))
                } else {
                    Ok(b.len())
                }
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let mut w = PackWriter::new(Failing(0), None).unwrap();
        assert!(w
            .add(BlobKind::Data, Compression::Raw, Id::hash(b"a"), 1, b"a")
            .is_err());
        assert!(w
            .add(BlobKind::Data, Compression::Raw, Id::hash(b"b"), 1, b"b")
            .is_err());
        assert!(w.finish().is_err());
    }
}
