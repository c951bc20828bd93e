//! Lock files (`locks/<name>`): what another holder's lock says, and its description.
#![no_main]

use libfuzzer_sys::fuzz_target;
use snap::repo::LockInfo;

fuzz_target!(|b: &[u8]| {
    if let Ok(info) = serde_json::from_slice::<LockInfo>(b) {
        let _ = info.to_string();
    }
});
