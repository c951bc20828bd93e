//! What a host remembers of a remote encrypted repository so that opening it costs no
//! request: its config file and the key file that last opened it, as read (on S3 each
//! would be a GET, on SFTP a round trip).
//!
//! Both are proven current by the first listing of `keys/` after opening, which comes
//! with the listing of `index/` that refreshes the cache (on S3 one request for both),
//! before any index file or snapshot is read: key files are never rewritten (a new
//! passphrase is a new file, and the old one is removed), the config never changes,
//! and a new repository at the same location has key files of new random ids. So the remembered key file still listed means the same repository and
//! the same key file. One no longer listed fails the run ([`Error::KeyFileGone`]) and
//! is forgotten, and the next run reads both from the repository again. A memory whose
//! key file does not open with the passphrase given (or does not decode), or whose
//! config does not open (damaged on this host's disk), is not used: the run reads both
//! from the repository and remembers what opened.
//!
//! The copy is as secret as the repository's own: the master key wrapped by the
//! passphrase. It lives under the cache root, `remembered/<hash of the location and
//! endpoint>`, readable by its owner only.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::config::ConfigFile;
use super::Probe;
use crate::error::{Error, Result};
use crate::format::crypto::{KeyFile, MasterKey};
use crate::format::id::Id;
use crate::store::{Entry, Store};

/// A remote repository's config file and one of its key files, as this host read them.
#[derive(Clone, Serialize, Deserialize)]
pub struct Remembered {
    /// The config file.
    config: String,
    /// The id of the key file.
    key_id: String,
    /// The key file.
    key_file: String,
}

/// Where the memory of the repository in `store` lives, by its location and endpoint;
/// `None` for a local store, which is read without requests, or where no cache root is
/// set.
fn path(store: &dyn Store) -> Option<PathBuf> {
    if store.local_root().is_some() {
        return None;
    }
    let mut at = store.location();
    if let Some(e) = store.endpoint() {
        at = format!("{at}\n{e}");
    }
    let name = Id::hash(at.as_bytes()).to_hex();
    Some(
        super::cache_root()
            .ok()?
            .join("remembered")
            .join(&name[..16]),
    )
}

/// What this host remembers of the repository in `store`: `None` when nothing, or
/// nothing usable (a memory that does not parse, or whose config is not an encrypted
/// repository's).
pub fn recall(store: &dyn Store) -> Option<Remembered> {
    let bytes = std::fs::read(path(store)?).ok()?;
    let r: Remembered = serde_json::from_slice(&bytes).ok()?;
    match ConfigFile::decode(r.config.as_bytes()) {
        Ok(ConfigFile::Sealed { .. }) => Some(r),
        _ => None,
    }
}

/// Remembers the config file `config` of the repository in `store` and its key file
/// `key_id` (`key_file`), which opened it. Only a memory: a failure to write it is
/// logged, and the next run reads both from the repository.
pub fn remember(store: &dyn Store, config: &[u8], key_id: &str, key_file: &[u8]) {
    let Some(path) = path(store) else { return };
    let (Ok(config), Ok(key_file)) = (std::str::from_utf8(config), std::str::from_utf8(key_file))
    else {
        return;
    };
    let r = Remembered {
        config: config.to_string(),
        key_id: key_id.to_string(),
        key_file: key_file.to_string(),
    };
    let write = || -> std::io::Result<()> {
        let dir = path.parent().expect("a remembered file has a directory");
        std::fs::create_dir_all(dir)?;
        // Made readable by its owner only.
        let mut tmp = tempfile::NamedTempFile::new_in(dir)?;
        serde_json::to_writer(&mut tmp, &r)?;
        tmp.persist(&path)?;
        Ok(())
    };
    if let Err(e) = write() {
        log::debug!("could not remember {}: {e}", store.location());
    }
}

/// Forgets what this host remembered of the repository in `store`.
pub fn forget(store: &dyn Store) {
    if let Some(path) = path(store) {
        let _ = std::fs::remove_file(path);
    }
}

impl Remembered {
    /// The remembered config, as [`super::Repository::probe`] would have read it.
    pub fn probe(&self) -> Result<Probe> {
        Probe::decode(self.config.as_bytes())
    }

    /// The master key the remembered key file yields with `passphrase`; `None` when it
    /// opens nothing.
    pub fn unlock(&self, store: &dyn Store, passphrase: &[u8]) -> Result<Option<MasterKey>> {
        KeyFile::decode(&self.key_name(store), self.key_file.as_bytes())?.unlock(passphrase)
    }

    /// Whether the remembered config opens with `key` (one damaged on this host's
    /// disk does not).
    pub fn config_opens(&self, key: &MasterKey) -> bool {
        self.probe().and_then(|p| p.config(Some(key))).is_ok()
    }

    /// The remembered key file's id.
    pub fn key_id(&self) -> &str {
        &self.key_id
    }

    fn key_path(&self) -> String {
        format!("keys/{}.json", self.key_id)
    }

    fn key_name(&self, store: &dyn Store) -> String {
        format!("{}/{}", store.location(), self.key_path())
    }

    /// Whether `keys`, a listing of `keys/`, still has the remembered key file (at its
    /// size, where the store lists sizes: some SFTP servers leave them out).
    pub(super) fn listed_in(&self, keys: &[Entry]) -> bool {
        let path = self.key_path();
        let len = self.key_file.len() as u64;
        keys.iter()
            .any(|e| e.path == path && (e.size == len || e.size == 0))
    }

    /// The error of a remembered key file that is gone from the repository.
    pub(super) fn gone(&self, store: &dyn Store) -> Error {
        Error::KeyFileGone {
            key: self.key_name(store),
        }
    }
}
