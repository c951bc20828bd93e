//! Chunk-list blobs. Invariant: a node that decodes encodes back to the same bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use snap::format::id::Id;
use snap::format::tree::ListNode;

fuzz_target!(|b: &[u8]| {
    if let Ok(n) = ListNode::decode(&Id::hash(b), b) {
        assert_eq!(n.encode(), b);
    }
});
