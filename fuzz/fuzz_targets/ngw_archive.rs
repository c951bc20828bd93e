//! `.ngwbackup` archives as `snap import` checks them: ZIP central directory and local
//! headers, member names, sizes and CRCs, the `$index` files.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|b: &[u8]| {
    let _ = snap::ops::backup::check_archive(Path::new("fuzz.ngwbackup"), b);
});
