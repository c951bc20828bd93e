//! Per-blob compression: zstd, or the raw bytes when zstd does not make them smaller.
//!
//! Decoding never trusts a length read from disk: the caller passes the expected raw
//! length (already capped at [`crate::format::chunker::ChunkParams::MAX_CHUNK`] or the tree cap),
//! and output of any other length is an error.

use std::cell::RefCell;

use serde::{Deserialize, Serialize};

/// How a blob's bytes are stored in a pack (one byte on disk).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[repr(u8)]
pub enum Compression {
    /// Stored as is.
    Raw = 0,
    /// One zstd frame.
    Zstd = 1,
}

impl Compression {
    /// Decodes the on-disk byte.
    pub fn from_u8(b: u8) -> Option<Compression> {
        match b {
            0 => Some(Compression::Raw),
            1 => Some(Compression::Zstd),
            _ => None,
        }
    }
}

/// Default zstd level of new repositories.
pub const DEFAULT_LEVEL: i32 = 3;

thread_local! {
    static COMPRESSOR: RefCell<Option<(i32, zstd::bulk::Compressor<'static>)>> = const { RefCell::new(None) };
    static DECOMPRESSOR: RefCell<Option<zstd::bulk::Decompressor<'static>>> = const { RefCell::new(None) };
}

/// Compresses `raw` at `level`; returns `None` when the result would not be smaller than
/// `raw` (incompressible data is stored raw and costs no decompression on restore).
/// Level 0 disables compression.
pub fn compress(raw: &[u8], level: i32) -> Option<Vec<u8>> {
    if level == 0 || raw.len() < 64 {
        return None;
    }
    COMPRESSOR.with(|cell| {
        let mut slot = cell.borrow_mut();
        if slot.as_ref().map(|(l, _)| *l) != Some(level) {
            *slot = Some((level, zstd::bulk::Compressor::new(level).ok()?));
        }
        let (_, c) = slot.as_mut()?;
        // A buffer one byte short of raw: zstd fails when it cannot fit, which is
        // exactly the "not smaller" case.
        let mut out = Vec::with_capacity(raw.len() - 1);
        c.compress_to_buffer(raw, &mut out).ok()?;
        Some(out)
    })
}

/// Decompresses one zstd frame that must expand to exactly `raw_len` bytes, appending
/// them to `out` (straight into its spare capacity: runs of blobs decode into one buffer
/// without a copy). On error `out` is as it was.
pub fn decompress_into(stored: &[u8], raw_len: usize, out: &mut Vec<u8>) -> Result<(), String> {
    DECOMPRESSOR.with(|cell| {
        let mut slot = cell.borrow_mut();
        if slot.is_none() {
            *slot = Some(zstd::bulk::Decompressor::new().map_err(|e| e.to_string())?);
        }
        let d = slot.as_mut().ok_or("no zstd context")?;
        let start = out.len();
        out.reserve_exact(raw_len);
        let mut tail = std::io::Cursor::new(&mut *out);
        tail.set_position(start as u64);
        let why = match d.decompress_to_buffer(stored, &mut tail) {
            Ok(n) if n == raw_len => return Ok(()),
            Ok(n) => format!("decompressed to {n} bytes, expected {raw_len}"),
            Err(e) => format!("zstd: {e}"),
        };
        out.truncate(start);
        Err(why)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn incompressible_stays_raw() {
        let mut buf = vec![0; 100_000];
        blake3::Hasher::new()
            .update(b"seed")
            .finalize_xof()
            .fill(&mut buf);
        assert!(compress(&buf, 3).is_none());
        assert!(compress(&vec![7u8; 100_000], 3).unwrap().len() < 1000);
        assert!(compress(&vec![7u8; 100_000], 0).is_none());
    }

    fn decompress(stored: &[u8], raw_len: usize) -> Result<Vec<u8>, String> {
        let mut out = Vec::new();
        decompress_into(stored, raw_len, &mut out).map(|()| out)
    }

    #[test]
    fn wrong_length_or_garbage_is_an_error() {
        let z = compress(&vec![1u8; 5000], 3).unwrap();
        assert!(decompress(&z, 4999).is_err());
        assert!(decompress(&z, 5001).is_err());
        assert!(decompress(b"not zstd at all", 10).is_err());
    }

    #[test]
    fn frames_append_after_what_the_buffer_holds() {
        let (a, b) = (vec![1u8; 5000], b"xyz".repeat(3000));
        let mut out = b"head".to_vec();
        decompress_into(&compress(&a, 3).unwrap(), a.len(), &mut out).unwrap();
        decompress_into(&compress(&b, 3).unwrap(), b.len(), &mut out).unwrap();
        assert_eq!(out, [&b"head"[..], &a, &b].concat());
        let len = out.len();
        let z = compress(&a, 3).unwrap();
        assert!(decompress_into(&z, a.len() - 1, &mut out).is_err());
        assert!(decompress_into(&z[..z.len() - 4], a.len(), &mut out).is_err());
        assert_eq!(out.len(), len, "a failed frame leaves nothing behind");
    }

    proptest! {
        #[test]
        fn round_trip(data in proptest::collection::vec(0u8..4, 0..20_000), level in 1i32..6) {
            match compress(&data, level) {
                Some(z) => prop_assert_eq!(decompress(&z, data.len()).unwrap(), data),
                None => prop_assert!(data.len() < 1000, "{} bytes of 4 symbols did not compress", data.len()),
            }
        }
    }
}
