//! A pack file as `Repository::pack_trailer` reads it: header, footer, the trailer
//! entries (plain, and sealed with the seed key), then every zstd blob they list.
//! Invariants: a plain trailer re-encodes to its bytes; blobs lie between header and
//! trailer.
#![no_main]

use libfuzzer_sys::fuzz_target;
use snap::format::compress::{decompress_into, Compression};
use snap::format::pack::{check_header, decode_entries, decode_footer, encode_entries};
use snap::format::pack::{FOOTER_LEN, HEADER_LEN};

/// Largest raw length decompressed here (the repository caps it at the chunk or tree
/// limit before decompressing).
const MAX_RAW: u32 = 1 << 20;

fuzz_target!(|file: &[u8]| {
    let len = file.len() as u64;
    if len < HEADER_LEN + FOOTER_LEN as u64 || check_header("p", file).is_err() {
        return;
    }
    let footer = &file[file.len() - FOOTER_LEN..];
    let key = snapvault_fuzz::key();
    for key in [None, Some(&key)] {
        let Ok((start, n)) = decode_footer("p", footer, len, key.is_some()) else {
            continue;
        };
        let trailer = &file[start as usize..start as usize + n];
        let Ok(entries) = decode_entries("p", footer, trailer, len, key) else {
            continue;
        };
        if key.is_none() {
            assert_eq!(encode_entries(&entries), trailer);
        }
        let mut out = Vec::new();
        for e in &entries {
            assert!(e.offset >= HEADER_LEN && e.offset + e.stored_len as u64 <= start);
            let stored = &file[e.offset as usize..][..e.stored_len as usize];
            if key.is_none() && e.compression == Compression::Zstd && e.raw_len <= MAX_RAW {
                out.clear();
                if decompress_into(stored, e.raw_len as usize, &mut out).is_ok() {
                    assert_eq!(out.len(), e.raw_len as usize);
                }
            }
        }
    }
});
