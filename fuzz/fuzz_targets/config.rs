//! The repository `config`, plain and sealed with the seed key. Invariant: a config
//! that opens encodes to one that decodes to it.
#![no_main]

use libfuzzer_sys::fuzz_target;
use snap::repo::{Config, ConfigFile};

fuzz_target!(|b: &[u8]| {
    let Ok(file) = ConfigFile::decode(b) else {
        return;
    };
    let key = snapvault_fuzz::key();
    let key = matches!(file, ConfigFile::Sealed { .. }).then_some(&key);
    if let Ok(c) = file.open(key) {
        let again = c.encode(None).expect("encodes");
        let inner = again.strip_suffix(b"\n").expect("ends with a newline");
        assert_eq!(Config::decode(inner).expect("re-encoded config decodes"), c);
    }
});
