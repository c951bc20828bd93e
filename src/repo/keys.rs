//! Key files of an encrypted repository: `keys/<16 hex>.json`, each the master key
//! wrapped by one passphrase (see [`crate::crypto::KeyFile`]).

use std::fs;
use std::path::{Path, PathBuf};

use super::{read_capped, write_atomic};
use crate::crypto::{Kdf, KeyFile, MasterKey};
use crate::error::{Error, IoContext, Result};

/// Largest key file accepted.
const MAX_LEN: u64 = 64 << 10;

fn dir(root: &Path) -> PathBuf {
    root.join("keys")
}

/// Every key file, by id, sorted by id.
pub fn list(root: &Path) -> Result<Vec<(String, KeyFile)>> {
    let d = dir(root);
    let mut out = Vec::new();
    for e in fs::read_dir(&d).at(&d)? {
        let path = e.at(&d)?.path();
        let Some(id) = path
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.strip_suffix(".json"))
        else {
            continue;
        };
        let f: KeyFile = serde_json::from_slice(&read_capped(&path, MAX_LEN)?)
            .map_err(|e| Error::corrupt("key file", path.display(), e))?;
        out.push((id.to_string(), f));
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(out)
}

/// The master key and the id of the key file `passphrase` opens.
pub fn unlock(root: &Path, passphrase: &[u8]) -> Result<(String, MasterKey)> {
    let keys = list(root)?;
    if keys.is_empty() {
        return Err(Error::Invalid(format!(
            "{} has no key files: the repository cannot be opened with a passphrase (use SNAP_KEY_FILE with an exported key)",
            dir(root).display()
        )));
    }
    for (id, f) in &keys {
        if let Some(k) = f.unlock(passphrase)? {
            return Ok((id.clone(), k));
        }
    }
    let names: Vec<String> = keys.iter().map(|(id, _)| format!("{id}.json")).collect();
    Err(Error::Invalid(format!(
        "wrong passphrase: no key file in {} opens with it, or they were altered ({})",
        dir(root).display(),
        names.join(", ")
    )))
}

/// Adds a key file for `passphrase`; returns its id.
pub fn add(root: &Path, master: &MasterKey, passphrase: &[u8], kdf: Kdf) -> Result<String> {
    let user = std::env::var("USER").unwrap_or_default();
    let f = KeyFile::new(master, passphrase, kdf, super::hostname(), user)?;
    let mut id = [0u8; 8];
    getrandom::getrandom(&mut id).map_err(|e| Error::Invalid(format!("no randomness: {e}")))?;
    let id = hex::encode(id);
    let d = dir(root);
    fs::create_dir_all(&d).at(&d)?;
    let mut b = serde_json::to_vec_pretty(&f).expect("key files serialize");
    b.push(b'\n');
    write_atomic(&root.join("tmp"), &d.join(format!("{id}.json")), &b)?;
    Ok(id)
}

/// Removes key file `id`; refuses to remove the last one.
pub fn remove(root: &Path, id: &str) -> Result<()> {
    let keys = list(root)?;
    if !keys.iter().any(|(k, _)| k == id) {
        return Err(Error::NotFound {
            what: "key",
            id: id.to_string(),
        });
    }
    if keys.len() == 1 {
        return Err(Error::Invalid(
            "refusing to remove the last key: the repository could then only be opened with an exported key".into(),
        ));
    }
    let path = dir(root).join(format!("{id}.json"));
    fs::remove_file(&path).at(&path)?;
    super::fsync_dir(&dir(root))
}
