//! `$index` lines of an `.ngwbackup`. Invariant: an accepted line places its blob or
//! font at safe tree names only.
#![no_main]

use libfuzzer_sys::fuzz_target;
use snap::source::ngw::{blob_snapshot_path, font_snapshot_path, parse_index_line, IndexItem};
use snap::format::tree::is_safe_name;

fuzz_target!(|b: &[u8]| {
    let Ok(text) = std::str::from_utf8(b) else {
        return;
    };
    for line in text.lines() {
        if let Ok((_, item)) = parse_index_line(line) {
            let at = match item {
                IndexItem::FileObj(o) => blob_snapshot_path(&o.component, &o.uuid),
                IndexItem::Font(f) => font_snapshot_path(&f),
            };
            assert!(at.iter().all(|c| is_safe_name(c)), "{line:?}");
        }
    }
});
