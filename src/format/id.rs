//! Content ids: 32-byte BLAKE3 hashes, printed as lowercase hex.
//!
//! [`Id`] names a blob of any kind where the kind travels beside it (a pack entry, the
//! index, a chunk list whose level says what it lists). Where one kind is meant, the
//! id has a type of its own: [`DataId`] (a data chunk), [`TreeId`] (a directory tree),
//! [`PackId`], [`SnapshotId`] and [`IndexFileId`] (files named by their content). The
//! typed ids are the same 32 bytes and print, parse and serialise alike, so the
//! format is the same whichever type the code holds.

use std::fmt;

/// Length of an id in bytes.
pub const ID_LEN: usize = 32;

/// A BLAKE3-256 digest naming a chunk, tree, list, pack or snapshot by its content.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Id(pub [u8; ID_LEN]);

impl Id {
    /// The id of `data`.
    pub fn hash(data: &[u8]) -> Id {
        Id(*blake3::hash(data).as_bytes())
    }

    /// Parses 64 lowercase hex digits (the only form snap writes).
    pub fn from_hex(s: &str) -> Option<Id> {
        if s.bytes().any(|b| b.is_ascii_uppercase()) {
            return None;
        }
        let mut out = [0u8; ID_LEN];
        hex::decode_to_slice(s, &mut out).ok()?;
        Some(Id(out))
    }

    /// Reads an id from the first 32 bytes of `b`, which must be at least that long.
    pub fn from_slice(b: &[u8]) -> Option<Id> {
        Some(Id(b.get(..ID_LEN)?.try_into().ok()?))
    }

    /// Full lowercase hex form.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    /// The 8-digit prefix used in listings.
    pub fn short(&self) -> String {
        hex::encode(&self.0[..4])
    }
}

impl From<blake3::Hash> for Id {
    fn from(h: blake3::Hash) -> Id {
        Id(*h.as_bytes())
    }
}

impl fmt::Display for Id {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for Id {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Id({})", self.short())
    }
}

impl serde::Serialize for Id {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_hex())
    }
}

impl<'de> serde::Deserialize<'de> for Id {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Id, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        Id::from_hex(&s).ok_or_else(|| serde::de::Error::custom("expected 64 hex digits"))
    }
}

/// Declares an id of one kind of object: the bytes of an [`Id`] under a type of its
/// own, so that an id of one kind cannot be passed where another kind belongs. It
/// prints, parses and serialises as the [`Id`] it wraps.
macro_rules! typed_id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
        #[serde(transparent)]
        pub struct $name(pub Id);

        impl $name {
            /// Parses 64 lowercase hex digits.
            pub fn from_hex(s: &str) -> Option<$name> {
                Id::from_hex(s).map($name)
            }

            /// 64 lowercase hex digits.
            pub fn to_hex(&self) -> String {
                self.0.to_hex()
            }

            /// The first 8 hex digits, for people.
            pub fn short(&self) -> String {
                self.0.short()
            }

            /// The 32 bytes.
            pub fn bytes(&self) -> &[u8] {
                &self.0 .0
            }
        }

        impl From<Id> for $name {
            fn from(id: Id) -> $name {
                $name(id)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.fmt(f)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({})", stringify!($name), self.0.short())
            }
        }
    };
}

typed_id!(
    /// A data chunk's id: the BLAKE3 (keyed, in a keyed repository) of a piece of file
    /// or stream content.
    DataId
);

typed_id!(
    /// A tree blob's id: the BLAKE3 of one directory's encoded [`Tree`](crate::format::tree::Tree).
    TreeId
);

typed_id!(
    /// A pack file's name: the BLAKE3 of its bytes.
    PackId
);

typed_id!(
    /// A snapshot record's name: the BLAKE3 of its bytes as stored.
    SnapshotId
);

typed_id!(
    /// An index file's name: the BLAKE3 of its bytes as stored.
    IndexFileId
);

typed_id!(
    /// A drill record's name: the BLAKE3 of its bytes as stored.
    DrillId
);

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn blake3_of_empty_input() {
        assert_eq!(
            Id::hash(b"").to_hex(),
            "af1349b9f5f9a1a6a0404dea36dcc9499bcb25c9adc112b7cc9a93cae41f3262"
        );
    }

    proptest! {
        #[test]
        fn hex_round_trip(bytes in any::<[u8; 32]>()) {
            let id = Id(bytes);
            prop_assert_eq!(Id::from_hex(&id.to_hex()), Some(id));
            let json = serde_json::to_string(&id).unwrap();
            prop_assert_eq!(serde_json::from_str::<Id>(&json).unwrap(), id);
        }
    }

    #[test]
    fn rejects_bad_hex() {
        assert!(Id::from_hex("abc").is_none());
        assert!(Id::from_hex(&"g".repeat(64)).is_none());
    }
}
