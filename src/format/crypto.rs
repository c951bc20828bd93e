//! Encryption at rest.
//!
//! An encrypted repository has one random master key: 32 bytes for XChaCha20-Poly1305
//! and 32 bytes that key BLAKE3 for blob ids (so equal content in two repositories has
//! unrelated ids). The master key is stored only wrapped, in key files, each sealed with
//! a key derived from a passphrase by Argon2id; any key file's passphrase opens the
//! repository. Every sealed object is `nonce (24 random bytes) | ciphertext | tag (16)`,
//! with the object's identity as associated data, so an object moved to another place
//! fails to open like a damaged one. A third key, derived from the master key, keys the
//! chunker's gear table in version 3 repositories (`K_chunk`).

use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, CHACHA20_POLY1305};
use serde::{Deserialize, Serialize};
use zeroize::{Zeroize, ZeroizeOnDrop};

use crate::error::{Error, KeyMismatch, Refusal, Result, Usage};
use crate::format::id::Id;

/// BLAKE3 `derive_key` context of [`MasterKey::chunker_key`].
const CHUNKER_KEY_CONTEXT: &str = "snap 2026-12 chunker gear table";

/// Nonce length.
pub const NONCE_LEN: usize = 24;
/// Bytes a sealed object has more than its plaintext: nonce and tag.
pub const OVERHEAD: usize = NONCE_LEN + 16;

fn random<const N: usize>() -> Result<[u8; N]> {
    let mut b = [0u8; N];
    getrandom::getrandom(&mut b).map_err(Error::NoRandomness)?;
    Ok(b)
}

/// XChaCha20-Poly1305 (draft-irtf-cfrg-xchacha): HChaCha20 of the key and the first
/// 16 nonce bytes gives a subkey for ChaCha20-Poly1305 (RFC 8439) with nonce
/// `0000 | nonce[16..24]`. ring's assembly runs the second step about twice as fast as
/// a portable implementation on this hot path; a test checks the result against
/// RustCrypto's XChaCha20Poly1305.
fn xchacha(key: &[u8; 32], nonce: &[u8; NONCE_LEN]) -> (LessSafeKey, Nonce) {
    let sub = chacha20::hchacha::<chacha20::cipher::consts::U10>(key.into(), nonce[..16].into());
    let unbound = UnboundKey::new(&CHACHA20_POLY1305, &sub).expect("32-byte key");
    let mut n = [0u8; 12];
    n[4..].copy_from_slice(&nonce[16..]);
    (LessSafeKey::new(unbound), Nonce::assume_unique_for_key(n))
}

fn seal_with(key: &[u8; 32], aad: &[u8], plain: &[u8]) -> Result<Vec<u8>> {
    let nonce: [u8; NONCE_LEN] = random()?;
    // One copy: nonce and plaintext into the output, encrypted there, tag appended.
    let mut out = Vec::with_capacity(plain.len() + OVERHEAD);
    out.extend_from_slice(&nonce);
    out.extend_from_slice(plain);
    let (k, n) = xchacha(key, &nonce);
    let tag = k
        .seal_in_place_separate_tag(n, Aad::from(aad), &mut out[NONCE_LEN..])
        .map_err(|_| Error::internal("encryption failed", None))?;
    out.extend_from_slice(tag.as_ref());
    Ok(out)
}

fn open_with(key: &[u8; 32], aad: &[u8], sealed: &[u8]) -> Option<Vec<u8>> {
    if sealed.len() < OVERHEAD {
        return None;
    }
    let nonce: &[u8; NONCE_LEN] = sealed[..NONCE_LEN].try_into().expect("checked length");
    let mut buf = sealed[NONCE_LEN..].to_vec();
    let (k, n) = xchacha(key, nonce);
    let len = k.open_in_place(n, Aad::from(aad), &mut buf).ok()?.len();
    buf.truncate(len);
    Some(buf)
}

/// A repository's master key.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct MasterKey {
    seal: [u8; 32],
    ids: [u8; 32],
}

impl std::fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MasterKey(..)")
    }
}

impl MasterKey {
    /// A new random key.
    pub fn generate() -> Result<MasterKey> {
        Ok(MasterKey {
            seal: random()?,
            ids: random()?,
        })
    }

    fn from_bytes(b: &[u8]) -> Option<MasterKey> {
        (b.len() == 64).then(|| {
            let mut k = MasterKey {
                seal: [0; 32],
                ids: [0; 32],
            };
            k.seal.copy_from_slice(&b[..32]);
            k.ids.copy_from_slice(&b[32..]);
            k
        })
    }

    fn to_bytes(&self) -> Vec<u8> {
        [&self.seal[..], &self.ids[..]].concat()
    }

    /// The id of a blob: BLAKE3 keyed with this repository's id key.
    pub fn blob_id(&self, data: &[u8]) -> Id {
        Id::from(blake3::keyed_hash(&self.ids, data))
    }

    /// The key of a version 3 repository's gear table (`K_chunk`, see
    /// [`crate::format::chunker::Gear::keyed`]): derived from the whole master key under its
    /// own context, so it reveals nothing of the sealing or id keys.
    pub fn chunker_key(&self) -> zeroize::Zeroizing<[u8; 32]> {
        let mut h = blake3::Hasher::new_derive_key(CHUNKER_KEY_CONTEXT);
        h.update(&self.seal).update(&self.ids);
        zeroize::Zeroizing::new(*h.finalize().as_bytes())
    }

    /// Seals `plain`, bound to `aad`.
    pub fn seal(&self, aad: &[u8], plain: &[u8]) -> Result<Vec<u8>> {
        seal_with(&self.seal, aad, plain)
    }

    /// Opens what [`MasterKey::seal`] made with the same `aad`; `None` if it was
    /// altered, truncated, moved or sealed with another key.
    pub fn open(&self, aad: &[u8], sealed: &[u8]) -> Option<Vec<u8>> {
        open_with(&self.seal, aad, sealed)
    }

    /// The key as an export file (`snap key export`): whoever has it can read the
    /// repository, with or without a passphrase.
    pub fn export(&self, repo_id: &str) -> Vec<u8> {
        let mut b = serde_json::to_vec_pretty(&Exported {
            snap_master_key: 1,
            repo: repo_id.to_string(),
            key: hex::encode(self.to_bytes()),
        })
        .expect("serializes");
        b.push(b'\n');
        b
    }

    /// Reads an export file; checks that it belongs to repository `repo_id`.
    pub fn import(b: &[u8], repo_id: &str) -> Result<MasterKey> {
        let bad = |why: &str| {
            Error::from(Usage::KeyExport {
                why: why.to_string(),
            })
        };
        let e: Exported = serde_json::from_slice(b).map_err(|e| bad(&e.to_string()))?;
        if e.snap_master_key != 1 {
            return Err(bad("unknown version"));
        }
        if e.repo != repo_id {
            return Err(KeyMismatch::OtherRepository {
                key_repo: e.repo,
                repo: repo_id.to_string(),
            }
            .into());
        }
        let raw = hex::decode(&e.key).map_err(|_| bad("key is not hex"))?;
        MasterKey::from_bytes(&raw).ok_or_else(|| bad("key is not 64 bytes"))
    }
}

#[derive(Serialize, Deserialize)]
struct Exported {
    snap_master_key: u32,
    repo: String,
    key: String,
}

/// Argon2id cost parameters.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Kdf {
    /// Memory in KiB.
    pub m_cost: u32,
    /// Passes.
    pub t_cost: u32,
    /// Lanes.
    pub p_cost: u32,
}

impl Default for Kdf {
    /// 64 MiB, 3 passes, 1 lane: about half a second on one core of this machine.
    fn default() -> Kdf {
        Kdf {
            m_cost: 64 * 1024,
            t_cost: 3,
            p_cost: 1,
        }
    }
}

/// The largest Argon2id costs accepted, on write and on read: 4 GiB, 100 passes, 64
/// lanes, far above the defaults, yet bounded so that an altered key file cannot make
/// an unlock allocate without limit or run for days.
pub const MAX_KDF: Kdf = Kdf {
    m_cost: 4 << 20,
    t_cost: 100,
    p_cost: 64,
};

impl Kdf {
    /// The Argon2id parameters, if within [`MAX_KDF`] and Argon2's own minimums.
    fn params(&self) -> std::result::Result<argon2::Params, String> {
        for (what, v, max) in [
            ("m_cost", self.m_cost, MAX_KDF.m_cost),
            ("t_cost", self.t_cost, MAX_KDF.t_cost),
            ("p_cost", self.p_cost, MAX_KDF.p_cost),
        ] {
            if v > max {
                return Err(format!("Argon2id {what} {v} is above the limit {max}"));
            }
        }
        argon2::Params::new(self.m_cost, self.t_cost, self.p_cost, Some(32))
            .map_err(|e| format!("Argon2id parameters: {e}"))
    }

    fn derive(&self, passphrase: &[u8], salt: &[u8]) -> Result<[u8; 32]> {
        let params = self.params().map_err(|why| Refusal::KdfParams { why })?;
        let mut out = [0u8; 32];
        argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params)
            .hash_password_into(passphrase, salt, &mut out)
            .map_err(|e| Error::internal(format!("Argon2id: {e}"), None))?;
        Ok(out)
    }
}

/// A key file (`keys/<id>.json`): the master key sealed with a passphrase's key. Its
/// other fields are bound to the seal as associated data, so no bit of it can change
/// unnoticed.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct KeyFile {
    /// Format version, 1.
    pub version: u32,
    /// When it was made.
    pub created: chrono::DateTime<chrono::Utc>,
    /// Where and by whom.
    pub host: String,
    /// Where and by whom.
    pub user: String,
    /// Argon2id parameters.
    pub kdf: Kdf,
    /// Argon2id salt, hex.
    pub salt: String,
    /// The sealed master key, hex.
    pub wrapped: String,
}

impl KeyFile {
    /// Parses a key file read from `name` (its path, for errors), refusing an unknown
    /// version, Argon2id costs above [`MAX_KDF`] and fields that are not hex before any
    /// key is derived.
    pub fn decode(name: &str, b: &[u8]) -> Result<KeyFile> {
        let bad = |why: String| Error::corrupt("key file", name, why);
        let f: KeyFile = serde_json::from_slice(b).map_err(|e| bad(e.to_string()))?;
        if f.version != 1 {
            return Err(Error::UnsupportedVersion {
                what: "key file",
                expected: 1,
                found: f.version,
            });
        }
        f.kdf.params().map_err(bad)?;
        for (field, hex) in [("salt", &f.salt), ("wrapped key", &f.wrapped)] {
            if hex::decode(hex).is_err() {
                return Err(bad(format!("{field} is not hex")));
            }
        }
        Ok(f)
    }

    /// Wraps `master` with `passphrase`, recording who made it.
    pub fn new(
        master: &MasterKey,
        passphrase: &[u8],
        kdf: Kdf,
        host: String,
        user: String,
    ) -> Result<KeyFile> {
        let salt: [u8; 16] = random()?;
        let mut f = KeyFile {
            version: 1,
            created: chrono::Utc::now(),
            host,
            user,
            kdf,
            salt: hex::encode(salt),
            wrapped: String::new(),
        };
        let mut k = kdf.derive(passphrase, &salt)?;
        let sealed = seal_with(&k, &f.aad(), &master.to_bytes());
        k.zeroize();
        f.wrapped = hex::encode(sealed?);
        Ok(f)
    }

    /// The associated data: every field but `wrapped`.
    fn aad(&self) -> Vec<u8> {
        let mut f = self.clone();
        f.wrapped.clear();
        serde_json::to_vec(&f).expect("serializes")
    }

    /// The master key, if `passphrase` is this file's; `None` if it is not (or the file
    /// was altered).
    pub fn unlock(&self, passphrase: &[u8]) -> Result<Option<MasterKey>> {
        let bad = |why: &str| Error::corrupt("key file", "keys", why.to_string());
        if self.version != 1 {
            return Err(bad("unknown version"));
        }
        let salt = hex::decode(&self.salt).map_err(|_| bad("salt is not hex"))?;
        let wrapped = hex::decode(&self.wrapped).map_err(|_| bad("wrapped key is not hex"))?;
        let mut k = self.kdf.derive(passphrase, &salt)?;
        let opened = open_with(&k, &self.aad(), &wrapped);
        k.zeroize();
        Ok(opened.and_then(|mut b| {
            let m = MasterKey::from_bytes(&b);
            b.zeroize();
            m
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FAST: Kdf = Kdf {
        m_cost: 64,
        t_cost: 1,
        p_cost: 1,
    };

    /// Golden `K_chunk` (format-spec, Chunking): the master key whose 64 bytes are
    /// 0, 1, ..., 63; `chunker::tests::golden_keyed_boundaries` goes on from it.
    #[test]
    fn golden_chunker_key() {
        let bytes: Vec<u8> = (0..64).collect();
        let k = MasterKey::from_bytes(&bytes).unwrap();
        assert_eq!(
            hex::encode(*k.chunker_key()),
            "736392d9c5e9946150d23f95e1ecaf7ddd1479b2f9f9f5eef42560c595adf54c"
        );
        let other = MasterKey::generate().unwrap();
        assert_ne!(*other.chunker_key(), *k.chunker_key());
    }

    #[test]
    fn seal_open_and_binding() {
        let k = MasterKey::generate().unwrap();
        let s = k.seal(b"here", b"secret").unwrap();
        assert_eq!(s.len(), 6 + OVERHEAD);
        assert_eq!(k.open(b"here", &s).unwrap(), b"secret");
        assert!(k.open(b"there", &s).is_none(), "moved objects fail");
        for i in 0..s.len() {
            let mut t = s.clone();
            t[i] ^= 0x01;
            assert!(k.open(b"here", &t).is_none(), "flip at {i} passed");
        }
        assert!(k.open(b"here", &s[..s.len() - 1]).is_none());
        let other = MasterKey::generate().unwrap();
        assert!(other.open(b"here", &s).is_none());
        assert_ne!(k.blob_id(b"x"), other.blob_id(b"x"), "ids are keyed");
        assert_ne!(k.blob_id(b"x"), Id::hash(b"x"));
    }

    #[test]
    fn sealing_is_standard_xchacha20_poly1305() {
        use chacha20poly1305::aead::{Aead, KeyInit, Payload};
        let key = [7u8; 32];
        let plain = b"interoperable with any XChaCha20-Poly1305".repeat(100);
        let sealed = seal_with(&key, b"aad", &plain).unwrap();
        let theirs = chacha20poly1305::XChaCha20Poly1305::new(&key.into());
        let nonce = chacha20poly1305::XNonce::from_slice(&sealed[..NONCE_LEN]);
        let opened = theirs
            .decrypt(
                nonce,
                Payload {
                    msg: &sealed[NONCE_LEN..],
                    aad: b"aad",
                },
            )
            .unwrap();
        assert_eq!(opened, plain);
        let again = theirs
            .encrypt(
                nonce,
                Payload {
                    msg: &plain,
                    aad: b"aad",
                },
            )
            .unwrap();
        assert_eq!(&again[..], &sealed[NONCE_LEN..]);
        assert_eq!(open_with(&key, b"aad", &sealed).unwrap(), plain);
    }

    #[test]
    fn key_files_wrap_and_detect_tampering() {
        let m = MasterKey::generate().unwrap();
        let f = KeyFile::new(&m, b"correct horse", FAST, "h".into(), "u".into()).unwrap();
        let got = f.unlock(b"correct horse").unwrap().unwrap();
        assert_eq!(got.to_bytes(), m.to_bytes());
        assert!(f.unlock(b"wrong").unwrap().is_none());
        let mut g = f.clone();
        g.host.push('x');
        assert!(
            g.unlock(b"correct horse").unwrap().is_none(),
            "metadata is bound"
        );
        let mut h = f.clone();
        h.kdf.t_cost = 2;
        assert!(h.unlock(b"correct horse").unwrap().is_none());
    }

    #[test]
    fn key_file_costs_are_capped_on_read() {
        let m = MasterKey::generate().unwrap();
        let f = KeyFile::new(&m, b"pw", FAST, "h".into(), "u".into()).unwrap();
        let ok = serde_json::to_vec(&f).unwrap();
        assert!(KeyFile::decode("keys/a.json", &ok).is_ok());
        let over = [
            ("m_cost", MAX_KDF.m_cost + 1),
            ("t_cost", MAX_KDF.t_cost + 1),
            ("p_cost", MAX_KDF.p_cost + 1),
            ("t_cost", 0),
        ];
        for (field, v) in over {
            let mut g = f.clone();
            match field {
                "m_cost" => g.kdf.m_cost = v,
                "t_cost" => g.kdf.t_cost = v,
                _ => g.kdf.p_cost = v,
            }
            let b = serde_json::to_vec(&g).unwrap();
            let err = KeyFile::decode("keys/a.json", &b).unwrap_err().to_string();
            assert!(err.contains("keys/a.json"), "{err}");
            assert!(g.unlock(b"pw").is_err(), "{field} {v} unlocked");
        }
        assert!(KeyFile::new(&m, b"pw", MAX_KDF_PLUS_ONE_LANE, "h".into(), "u".into()).is_err());
    }

    const MAX_KDF_PLUS_ONE_LANE: Kdf = Kdf {
        p_cost: MAX_KDF.p_cost + 1,
        ..FAST
    };

    #[test]
    fn exports_round_trip_for_their_repository_only() {
        let m = MasterKey::generate().unwrap();
        let e = m.export("repo-a");
        assert_eq!(
            MasterKey::import(&e, "repo-a").unwrap().to_bytes(),
            m.to_bytes()
        );
        assert!(MasterKey::import(&e, "repo-b").is_err());
        assert!(MasterKey::import(b"{}", "repo-a").is_err());
    }
}
