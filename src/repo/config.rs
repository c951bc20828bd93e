//! The repository config: written once by `init`, never changed.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::chunker::Profiles;
use crate::error::{Error, Result};

/// Repository format version written and read by this build.
pub const VERSION: u32 = 1;
/// Largest config file accepted on read.
pub const MAX_LEN: u64 = 1 << 20;

/// Contents of `<repo>/config` (JSON).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Config {
    /// Repository format version ([`VERSION`]).
    pub version: u32,
    /// Random id (64 hex digits), ties the local index to this repository.
    pub id: String,
    /// When `init` ran.
    pub created: DateTime<Utc>,
    /// Chunk sizes of each profile.
    pub chunking: Profiles,
    /// Default zstd level of new blobs (0: no compression).
    pub compression_level: i32,
    /// Size at which a pack file is closed, in bytes.
    pub pack_size: u64,
}

impl Config {
    /// Parses and validates a config file.
    pub fn decode(b: &[u8]) -> Result<Config> {
        #[derive(Deserialize)]
        struct V {
            version: u32,
        }
        let bad = |e: serde_json::Error| Error::corrupt("config", "config", e);
        let v: V = serde_json::from_slice(b).map_err(bad)?;
        if v.version != VERSION {
            return Err(Error::UnsupportedVersion {
                what: "repository",
                expected: VERSION,
                found: v.version,
            });
        }
        let c: Config = serde_json::from_slice(b).map_err(bad)?;
        for p in [c.chunking.files, c.chunking.dump] {
            p.validate()
                .map_err(|e| Error::corrupt("config", "config", e))?;
        }
        if !(-7..=22).contains(&c.compression_level) {
            return Err(Error::corrupt(
                "config",
                "config",
                "compression_level out of range -7..=22",
            ));
        }
        if !(1 << 20..=1 << 30).contains(&c.pack_size) {
            return Err(Error::corrupt(
                "config",
                "config",
                "pack_size out of range 1 MiB..=1 GiB",
            ));
        }
        Ok(c)
    }

    /// Serializes as pretty JSON.
    pub fn encode(&self) -> Vec<u8> {
        let mut b = serde_json::to_vec_pretty(self).expect("config serializes");
        b.push(b'\n');
        b
    }
}
