//! The repository config: written once by `init`, never changed.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::error::{Error, KeyMismatch, Result};
use crate::format::chunker::Profiles;
use crate::format::crypto::MasterKey;

/// Repository format version of unencrypted repositories.
pub const VERSION: u32 = 1;
/// Repository format version of encrypted repositories whose chunker uses the public
/// gear table (made before [`VERSION_KEYED_CHUNKER`]; they keep it).
pub const VERSION_ENCRYPTED: u32 = 2;
/// Repository format version of encrypted repositories whose chunker's gear table is
/// keyed by the master key: what `init` makes.
pub const VERSION_KEYED_CHUNKER: u32 = 3;
/// The cipher of encrypted repositories, as the config file names it.
pub const CIPHER: &str = "xchacha20poly1305";
/// Associated data of the sealed config.
const CONFIG_AAD: &[u8] = b"snap config";
/// Largest config file accepted on read.
pub const MAX_LEN: u64 = 1 << 20;

/// Contents of `<repo>/config` (JSON).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Config {
    /// Repository format version ([`VERSION`], [`VERSION_ENCRYPTED`] or
    /// [`VERSION_KEYED_CHUNKER`]).
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

/// The outside of an encrypted repository's config file: what can be read without
/// the key, and the sealed [`Config`].
#[derive(Serialize, Deserialize)]
struct SealedFile {
    version: u32,
    /// The repository id, also inside the seal (a key export names it).
    id: String,
    encryption: String,
    /// The sealed config JSON, hex.
    sealed: String,
}

/// A config file as read, before any key is at hand.
pub enum ConfigFile {
    /// An unencrypted repository's config.
    Plain(Config),
    /// An encrypted repository's: its version and id, and the sealed config.
    Sealed {
        /// Format version, which the sealed config repeats.
        version: u32,
        /// Repository id.
        id: String,
        /// The sealed config.
        sealed: Vec<u8>,
    },
}

fn bad(e: impl std::fmt::Display) -> Error {
    Error::corrupt("repository", "config", e)
}

impl ConfigFile {
    /// Parses a config file.
    pub fn decode(b: &[u8]) -> Result<ConfigFile> {
        #[derive(Deserialize)]
        struct V {
            version: u32,
        }
        let v: V = serde_json::from_slice(b).map_err(bad)?;
        match v.version {
            VERSION => Ok(ConfigFile::Plain(Config::decode(b)?)),
            VERSION_ENCRYPTED | VERSION_KEYED_CHUNKER => {
                let f: SealedFile = serde_json::from_slice(b).map_err(bad)?;
                if f.encryption != CIPHER {
                    return Err(bad(format!("unknown encryption {:?}", f.encryption)));
                }
                let sealed = hex::decode(&f.sealed).map_err(|_| bad("sealed config is not hex"))?;
                Ok(ConfigFile::Sealed {
                    version: v.version,
                    id: f.id,
                    sealed,
                })
            }
            found => Err(Error::UnsupportedVersion {
                what: "repository",
                expected: VERSION_KEYED_CHUNKER,
                found,
            }),
        }
    }

    /// The config, opening a sealed one with `key`.
    pub fn open(self, key: Option<&MasterKey>) -> Result<Config> {
        match (self, key) {
            (ConfigFile::Plain(c), None) => Ok(c),
            (ConfigFile::Plain(_), Some(_)) => Err(KeyMismatch::NotEncrypted.into()),
            (ConfigFile::Sealed { .. }, None) => Err(KeyMismatch::NoKey.into()),
            (
                ConfigFile::Sealed {
                    version,
                    id,
                    sealed,
                },
                Some(k),
            ) => {
                let plain = k.open(CONFIG_AAD, &sealed).ok_or(KeyMismatch::WrongKey)?;
                let c = Config::decode(&plain)?;
                if c.id != id || c.version != version {
                    return Err(bad("the sealed config does not match its outside"));
                }
                Ok(c)
            }
        }
    }
}

impl Config {
    /// Parses and validates a config (the plain file, or the inside of a sealed one).
    pub fn decode(b: &[u8]) -> Result<Config> {
        let c: Config = serde_json::from_slice(b).map_err(bad)?;
        if ![VERSION, VERSION_ENCRYPTED, VERSION_KEYED_CHUNKER].contains(&c.version) {
            return Err(Error::UnsupportedVersion {
                what: "repository",
                expected: VERSION_KEYED_CHUNKER,
                found: c.version,
            });
        }
        for p in [c.chunking.files, c.chunking.dump] {
            p.validate()
                .map_err(|e| Error::corrupt("repository", "config", e))?;
        }
        if !(-7..=22).contains(&c.compression_level) {
            return Err(Error::corrupt(
                "repository",
                "config",
                "compression_level out of range -7..=22",
            ));
        }
        if !(1 << 20..=1 << 30).contains(&c.pack_size) {
            return Err(Error::corrupt(
                "repository",
                "config",
                "pack_size out of range 1 MiB..=1 GiB",
            ));
        }
        Ok(c)
    }

    /// Serializes as pretty JSON, sealed inside an outer file with `key`.
    pub fn encode(&self, key: Option<&MasterKey>) -> Result<Vec<u8>> {
        let mut b = serde_json::to_vec_pretty(self).expect("config serializes");
        b.push(b'\n');
        if let Some(k) = key {
            let f = SealedFile {
                version: self.version,
                id: self.id.clone(),
                encryption: CIPHER.into(),
                sealed: hex::encode(k.seal(CONFIG_AAD, &b)?),
            };
            b = serde_json::to_vec_pretty(&f).expect("config serializes");
            b.push(b'\n');
        }
        Ok(b)
    }
}
