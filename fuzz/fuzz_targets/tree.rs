//! Tree blobs. Invariant: a tree that decodes encodes back to the same bytes (the
//! encoding is canonical, and encode accepts every name decode accepts).
#![no_main]

use libfuzzer_sys::fuzz_target;
use snap::format::id::{Id, TreeId};
use snap::format::tree::Tree;

fuzz_target!(|b: &[u8]| {
    if let Ok(t) = Tree::decode(&TreeId(Id::hash(b)), b) {
        assert_eq!(t.encode().expect("a decoded tree encodes"), b);
    }
});
