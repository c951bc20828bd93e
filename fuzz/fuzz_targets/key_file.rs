//! Key files (`keys/<id>.json`) and exported master keys. A key file that decodes is
//! unlocked when its Argon2id costs are small enough for a fuzzer (the caps on read
//! bound the rest).
#![no_main]

use libfuzzer_sys::fuzz_target;
use snap::format::crypto::{KeyFile, MasterKey};

fuzz_target!(|b: &[u8]| {
    if let Ok(f) = KeyFile::decode("keys/fuzz.json", b) {
        if f.kdf.m_cost <= 1024 && f.kdf.t_cost <= 2 && f.kdf.p_cost <= 2 {
            let _ = f.unlock(b"fuzz");
        }
    }
    let _ = MasterKey::import(b, snapvault_fuzz::REPO_ID);
});
