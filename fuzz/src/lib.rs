//! What the fuzz targets share: the master key of the seed repository, so that the
//! sealed seeds (trailers, index files, configs) open and mutations of them reach the
//! decoders behind the seal.

use snap::format::crypto::MasterKey;

/// Id of the encrypted repository the sealed seeds come from.
pub const REPO_ID: &str = "06c878e560e93ff80317a46a1cbf8e353ac0289c56bec1e58bd4ae6eb2b7f80a";

/// That repository's master key, as `snap key export` wrote it (a throwaway key).
const EXPORTED: &str = r#"{
  "snap_master_key": 1,
  "repo": "06c878e560e93ff80317a46a1cbf8e353ac0289c56bec1e58bd4ae6eb2b7f80a",
  "key": "c91a75f288ac35cb7a435044918ebafa0e3660c64595f4246062fb43384a42836d3a3048539e5ebb7602fa9d2021129ce211fb5d728650716f97ebd966a2ffd2"
}"#;

/// The seed repository's master key.
pub fn key() -> MasterKey {
    MasterKey::import(EXPORTED.as_bytes(), REPO_ID).expect("the embedded key imports")
}
