//! The bytes of the format: how content is cut, named, compressed, encrypted and laid
//! out in packs, trees, snapshot records and drill records (`format-spec.md` is the text of it).
//!
//! These codecs do no I/O of their own: each turns values into bytes and back, and
//! rejects bytes it cannot vouch for with [`crate::error::Error::Corrupt`] or
//! [`crate::error::Error::UnsupportedVersion`]. Everything above writes and reads
//! through them.

pub mod chunker;
pub mod compress;
pub mod crypto;
pub mod drill;
pub mod id;
pub mod pack;
pub mod snapshot;
pub mod tree;
