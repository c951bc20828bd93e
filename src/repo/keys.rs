//! Key files of an encrypted repository: `keys/<16 hex>.json`, each the master key
//! wrapped by one passphrase (see [`crate::format::crypto::KeyFile`]).

use crate::error::{Error, Refusal, Result};
use crate::format::crypto::{Kdf, KeyFile, MasterKey};
use crate::host::user_name;
use crate::store::Store;

/// Largest key file accepted.
pub const MAX_LEN: u64 = 64 << 10;

fn dir(store: &dyn Store) -> String {
    format!("{}/keys", store.location())
}

/// Key file `id`, read and decoded, and its bytes.
fn read_key(store: &dyn Store, id: &str) -> Result<(KeyFile, Vec<u8>)> {
    let path = format!("keys/{id}.json");
    let name = format!("{}/{path}", store.location());
    let bytes = store.read(&path, MAX_LEN)?;
    Ok((KeyFile::decode(&name, &bytes)?, bytes))
}

/// A key file's id and its decoded form and bytes, or why it cannot be read.
type Read = (String, Result<(KeyFile, Vec<u8>)>);

/// Every key file, sorted by id. One damaged key file must not lock out the passphrases
/// of the others.
fn read_all(store: &dyn Store) -> Result<Vec<Read>> {
    let mut out = Vec::new();
    for e in store.list("keys")? {
        let Some(id) = e
            .path
            .strip_prefix("keys/")
            .and_then(|n| n.strip_suffix(".json"))
        else {
            continue;
        };
        match read_key(store, id) {
            // Removed since the listing.
            Err(Error::NotFound { .. }) => {}
            r => out.push((id.to_string(), r)),
        }
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(out)
}

/// Every key file, by id, sorted by id, or why it cannot be read.
pub fn list(store: &dyn Store) -> Result<Vec<(String, Result<KeyFile>)>> {
    Ok(read_all(store)?
        .into_iter()
        .map(|(id, f)| (id, f.map(|(f, _)| f)))
        .collect())
}

/// A key file that opened with a passphrase, and what it yielded.
pub struct Opened {
    /// Its id.
    pub id: String,
    /// Its bytes, as read.
    pub file: Vec<u8>,
    /// The master key.
    pub key: MasterKey,
}

/// The master key and the id of the key file `passphrase` opens.
pub fn unlock(store: &dyn Store, passphrase: &[u8]) -> Result<(String, MasterKey)> {
    unlock_first(store, passphrase, None).map(|o| (o.id, o.key))
}

/// [`unlock`], trying key file `first` (the one that opened the repository last time,
/// as a cache remembers it) before the others: when it opens, one read instead of a
/// listing and a read of every key file (a request each on S3). One that is gone or
/// opens nothing is tried once only. A key file that cannot be read or decoded is
/// passed over; its error is returned only when no other opens.
pub fn unlock_first(store: &dyn Store, passphrase: &[u8], first: Option<&str>) -> Result<Opened> {
    let first = first.filter(|id| id.len() == 16 && id.bytes().all(|b| b.is_ascii_hexdigit()));
    // The key file tried first and not opened by the passphrase (a damaged one is read
    // again below, so that its damage is reported if nothing opens).
    let mut tried = None;
    if let Some(id) = first {
        if let Ok((f, file)) = read_key(store, id) {
            match f.unlock(passphrase) {
                Ok(Some(key)) => {
                    let id = id.to_string();
                    return Ok(Opened { id, file, key });
                }
                Ok(None) => tried = Some(id),
                Err(_) => {}
            }
        }
    }
    let keys = read_all(store)?;
    if keys.is_empty() {
        return Err(Error::NoKeyFiles { keys: dir(store) });
    }
    let files = keys.iter().map(|(id, _)| format!("{id}.json")).collect();
    let mut damage = None;
    for (id, read) in keys {
        if Some(id.as_str()) == tried {
            continue;
        }
        // A damaged key file (or one asking for costs above the limits) is passed over:
        // another may open, and `check` names it.
        match read.and_then(|(f, file)| Ok((f.unlock(passphrase)?, file))) {
            Ok((Some(key), file)) => return Ok(Opened { id, file, key }),
            Ok((None, _)) => {}
            Err(e) => {
                damage.get_or_insert(e);
            }
        }
    }
    // None opened: a damaged one may have been this passphrase's.
    Err(damage.unwrap_or(Error::WrongPassphrase {
        keys: dir(store),
        files,
    }))
}

/// Adds a key file for `passphrase`; returns its id.
pub fn add(store: &dyn Store, master: &MasterKey, passphrase: &[u8], kdf: Kdf) -> Result<String> {
    add_file(store, master, passphrase, kdf).map(|(id, _)| id)
}

/// [`add`], returning the key file's bytes too.
pub fn add_file(
    store: &dyn Store,
    master: &MasterKey,
    passphrase: &[u8],
    kdf: Kdf,
) -> Result<(String, Vec<u8>)> {
    let f = KeyFile::new(master, passphrase, kdf, super::hostname(), user_name())?;
    let mut id = [0u8; 8];
    getrandom::getrandom(&mut id).map_err(Error::NoRandomness)?;
    let id = hex::encode(id);
    let mut b = serde_json::to_vec_pretty(&f).expect("key files serialize");
    b.push(b'\n');
    store.put(&format!("keys/{id}.json"), &b)?;
    Ok((id, b))
}

/// Removes key file `id`; refuses to remove the last one.
pub fn remove(store: &dyn Store, id: &str) -> Result<()> {
    let keys = list(store)?;
    if !keys.iter().any(|(k, _)| k == id) {
        return Err(Error::NotFound {
            what: "key",
            id: id.to_string(),
        });
    }
    if keys.len() == 1 {
        return Err(Refusal::LastKey.into());
    }
    store.delete(&format!("keys/{id}.json"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::crypto::MAX_KDF;
    use crate::store::Local;

    /// Why unlocking fails once the one key file of a new repository (passphrase `pw`)
    /// has `edit` applied to its text; panics unless the edit changed it.
    fn unlock_error_after(edit: impl Fn(&str) -> String) -> (String, String) {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir(d.path().join("tmp")).unwrap();
        let store = Local::new(d.path().to_path_buf());
        let m = MasterKey::generate().unwrap();
        let fast = Kdf {
            m_cost: 64,
            t_cost: 1,
            p_cost: 1,
        };
        let id = add(&store, &m, b"pw", fast).unwrap();
        let path = d.path().join(format!("keys/{id}.json"));
        let text = std::fs::read_to_string(&path).unwrap();
        let edited = edit(&text);
        assert_ne!(edited, text);
        std::fs::write(&path, edited).unwrap();
        let err = unlock(&store, b"pw").unwrap_err().to_string();
        (format!("keys/{id}.json"), err)
    }

    #[test]
    fn a_key_file_asking_for_too_many_passes_is_refused_by_name() {
        // Cheap to try even without the cap: 64 KiB, but many passes.
        let (name, err) = unlock_error_after(|text| {
            text.replace(
                "\"t_cost\": 1,",
                &format!("\"t_cost\": {},", MAX_KDF.t_cost * 10),
            )
        });
        assert!(err.contains(&name), "{err}");
        assert!(err.contains("t_cost"), "{err}");
    }

    #[test]
    fn a_key_file_whose_wrapped_key_is_not_hex_is_refused_by_name() {
        let (name, err) =
            unlock_error_after(|text| text.replacen("\"wrapped\": \"", "\"wrapped\": \"z", 1));
        assert!(err.contains(&name), "{err}");
        assert!(err.contains("wrapped key is not hex"), "{err}");
    }
}
