//! Snapshot records (`snapshots/<id>`), named by their hash as in the store.
//! Invariant: a record that decodes re-encodes to a record that decodes to it.
#![no_main]

use libfuzzer_sys::fuzz_target;
use snap::format::id::{Id, SnapshotId};
use snap::format::snapshot::Snapshot;

fuzz_target!(|b: &[u8]| {
    if let Ok(s) = Snapshot::decode(&SnapshotId(Id::hash(b)), b) {
        let again = s.encode();
        let back = Snapshot::decode(&SnapshotId(Id::hash(&again)), &again).expect("re-encoded record");
        assert_eq!(back.sources, s.sources);
        for src in &s.sources {
            let _ = (src.describe(), src.stream_name());
        }
        let _ = (
            Snapshot::parent_key(&s.sources),
            Snapshot::group_key(&s.sources),
        );
    }
});
