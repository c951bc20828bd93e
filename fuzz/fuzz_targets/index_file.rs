//! Index files (`index/<id>`), named by their hash as in the store, plain and sealed
//! with the seed key. Invariant: a plain file that decodes encodes back to itself.
#![no_main]

use libfuzzer_sys::fuzz_target;
use snap::format::id::{Id, IndexFileId};
use snap::repo::{decode_index_file, encode_index_file};

fuzz_target!(|b: &[u8]| {
    let name = IndexFileId(Id::hash(b));
    if let Ok(packs) = decode_index_file(&name, b, None) {
        let (id, again) = encode_index_file(&packs, None).expect("plain encode");
        assert_eq!((id, &again[..]), (name, b));
    }
    let _ = decode_index_file(&name, b, Some(&snapvault_fuzz::key()));
});
