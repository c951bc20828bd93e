//! Index files (`index/<id>`): immutable lists of packs with their trailer entries,
//! written after the packs they list and before any snapshot that needs them. The
//! local SQLite index is a cache of their union, so a host with an empty cache reads
//! the index files, never every pack.
//!
//! ```text
//! "SNAPINDX" | version u32 (1) | reserved u32 (0) | body
//! body (sealed with associated data "snap index" in encrypted repositories):
//!   per pack: id [32] | file size u64 | N u32 | reserved u32 (0) | N trailer entries
//! ```
//! A file's name is the BLAKE3 of its bytes.

use crate::error::{Error, Result};
use crate::format::crypto::{MasterKey, OVERHEAD};
use crate::format::id::{Id, IndexFileId, PackId};
use crate::format::pack::{self, PackRecord};

/// Magic of an index file.
pub const MAGIC: &[u8; 8] = b"SNAPINDX";
/// Version of the index file format.
pub const VERSION: u32 = 1;
/// Largest index file accepted.
pub const MAX_LEN: u64 = 1 << 30;
/// Blobs per index file a writer aims at (about 4.4 MB of entries).
pub const BLOBS_PER_FILE: usize = 100_000;
/// Associated data of a sealed body.
const AAD: &[u8] = b"snap index";
const HEADER_LEN: usize = 16;

/// Encodes the index file of `packs`; returns its name and bytes.
pub fn encode(packs: &[PackRecord], key: Option<&MasterKey>) -> Result<(IndexFileId, Vec<u8>)> {
    let mut body = Vec::new();
    for PackRecord { id, size, entries } in packs {
        body.extend_from_slice(id.bytes());
        body.extend_from_slice(&size.to_le_bytes());
        let n = u32::try_from(entries.len()).expect("packs hold far fewer blobs");
        body.extend_from_slice(&n.to_le_bytes());
        body.extend_from_slice(&[0; 4]);
        body.extend_from_slice(&pack::encode_entries(entries));
    }
    if let Some(k) = key {
        body = k.seal(AAD, &body)?;
    }
    let mut out = Vec::with_capacity(HEADER_LEN + body.len());
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&VERSION.to_le_bytes());
    out.extend_from_slice(&[0; 4]);
    out.extend_from_slice(&body);
    Ok((IndexFileId(Id::hash(&out)), out))
}

/// Decodes index file `name`, checking its hash, its seal and that every pack's
/// entries exactly fill the pack size it gives.
pub fn decode(
    name: &IndexFileId,
    bytes: &[u8],
    key: Option<&MasterKey>,
) -> Result<Vec<PackRecord>> {
    let bad = |why: String| Error::corrupt("index file", name, why);
    if Id::hash(bytes) != name.0 {
        return Err(bad("its content does not hash to its name".into()));
    }
    if bytes.len() < HEADER_LEN || &bytes[..8] != MAGIC || bytes[12..16] != [0; 4] {
        return Err(bad("bad header".into()));
    }
    let version = u32::from_le_bytes(bytes[8..12].try_into().expect("4 bytes"));
    if version != VERSION {
        return Err(Error::UnsupportedVersion {
            what: "index file",
            expected: VERSION,
            found: version,
        });
    }
    let opened;
    let mut body = &bytes[HEADER_LEN..];
    if let Some(k) = key {
        opened = k
            .open(AAD, body)
            .ok_or_else(|| bad("fails authentication (wrong key or altered)".into()))?;
        body = &opened;
    }
    let sealed = if key.is_some() { OVERHEAD as u64 } else { 0 };
    let mut out = Vec::new();
    while !body.is_empty() {
        if body.len() < 48 {
            return Err(bad("truncated pack record".into()));
        }
        let id = PackId(Id::from_slice(&body[..32]).expect("32 bytes"));
        let size = u64::from_le_bytes(body[32..40].try_into().expect("8 bytes"));
        let n = u32::from_le_bytes(body[40..44].try_into().expect("4 bytes")) as usize;
        if body[44..48] != [0; 4] {
            return Err(bad(format!("pack {id}: reserved bytes are not zero")));
        }
        let len = n * pack::ENTRY_LEN;
        let Some(entries) = body.get(48..48 + len) else {
            return Err(bad(format!("pack {id}: truncated entries")));
        };
        let trailer = (pack::FOOTER_LEN as u64) + len as u64 + sealed;
        let blobs_end = size
            .checked_sub(trailer)
            .filter(|e| *e >= pack::HEADER_LEN)
            .ok_or_else(|| bad(format!("pack {id}: {size} bytes cannot hold {n} blobs")))?;
        let entries = pack::parse_entries(&id.to_hex(), entries, blobs_end)
            .map_err(|e| bad(format!("pack {id}: {e}")))?;
        out.push(PackRecord { id, size, entries });
        body = &body[48 + len..];
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::compress::Compression;
    use crate::format::pack::BlobKind;
    use crate::format::pack::PackEntry;

    fn record(seed: u8, sealed: bool) -> PackRecord {
        let entries: Vec<PackEntry> = (0..3u8)
            .map(|i| PackEntry {
                kind: BlobKind::Data,
                compression: Compression::Zstd,
                id: Id::hash(&[seed, i]),
                offset: pack::HEADER_LEN + 100 * u64::from(i),
                stored_len: 100,
                raw_len: 300,
            })
            .collect();
        let seal = if sealed { OVERHEAD as u64 } else { 0 };
        let size = pack::HEADER_LEN + 300 + 3 * pack::ENTRY_LEN as u64 + seal + 48;
        PackRecord {
            id: PackId(Id::hash(&[seed])),
            size,
            entries,
        }
    }

    #[test]
    fn round_trip_plain_and_sealed() {
        let plain = vec![record(1, false), record(2, false)];
        let (name, bytes) = encode(&plain, None).unwrap();
        assert_eq!(decode(&name, &bytes, None).unwrap(), plain);

        let key = MasterKey::generate().unwrap();
        let sealed = vec![record(3, true)];
        let (name, bytes) = encode(&sealed, Some(&key)).unwrap();
        assert_eq!(decode(&name, &bytes, Some(&key)).unwrap(), sealed);
        let other = MasterKey::generate().unwrap();
        assert!(decode(&name, &bytes, Some(&other)).is_err());
    }

    #[test]
    fn damage_is_refused() {
        let (name, mut bytes) = encode(&[record(1, false)], None).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        assert!(decode(&name, &bytes, None).is_err(), "hash checked");
        // A size that the entries do not fill, under a name that matches.
        let PackRecord {
            mut id,
            mut size,
            entries,
        } = record(1, false);
        size += 1;
        id.0 .0[0] ^= 1;
        let (name, bytes) = encode(&[PackRecord { id, size, entries }], None).unwrap();
        let err = decode(&name, &bytes, None).unwrap_err().to_string();
        assert!(err.contains("blobs end at"), "{err}");
    }

    /// Found by the `index_file` fuzz target: an entry's reserved bytes were not
    /// checked, so two index files decoded to the same records.
    #[test]
    fn entry_reserved_bytes_must_be_zero() {
        let (_, mut bytes) = encode(&[record(1, false)], None).unwrap();
        // Header 16, pack record head 48, then the first entry: kind, compression, reserved.
        bytes[16 + 48 + 2] = 8;
        let err = decode(&IndexFileId(Id::hash(&bytes)), &bytes, None)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("entry 0: reserved bytes are not zero"),
            "{err}"
        );
    }
}
