//! Tree blobs. Invariant: a tree that decodes encodes back to the same bytes (the
//! encoding is canonical, and encode accepts every name decode accepts).
#![no_main]

use libfuzzer_sys::fuzz_target;
use snap::id::Id;
use snap::tree::Tree;

fuzz_target!(|b: &[u8]| {
    if let Ok(t) = Tree::decode(&Id::hash(b), b) {
        assert_eq!(t.encode().expect("a decoded tree encodes"), b);
    }
});
