//! Where a repository's files live: a local directory, an SFTP server or an
//! S3-compatible bucket. The repository sees only [`Store`]: named files, written
//! whole, durably and atomically (a reader sees all of a file or none of it), read
//! whole or by range, listed and deleted. Paths are relative to the repository root
//! and use `/` (`packs/ab/ab12…`, `snapshots/…`). A local store reaches the file
//! system through [`Fs`], which tests replace by a model of power loss.

#[doc(hidden)]
pub mod crash;
mod fs;
mod local;
mod remote;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

pub use self::fs::{Fs, RealFs};
pub use self::local::Local;
pub use self::remote::Remote;
use crate::error::{Error, Result};

/// One file of a listing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    /// Its path relative to the repository root.
    pub path: String,
    /// Its size in bytes.
    pub size: u64,
    /// When it was last written, where the store tells.
    pub modified: Option<SystemTime>,
}

/// A repository's file storage; see the module docs.
pub trait Store: Send + Sync {
    /// Where it is, for messages and for `--repo` (`/srv/repo`, `s3://bucket/prefix`).
    fn location(&self) -> String;
    /// The directory, for a store on the local file system.
    fn local_root(&self) -> Option<&Path>;
    /// Reads file `path` whole; a file larger than `cap` bytes is refused as corrupt.
    fn read(&self, path: &str, cap: u64) -> Result<Vec<u8>>;
    /// Reads `len` bytes of file `path` at `offset`.
    fn read_at(&self, path: &str, offset: u64, len: usize) -> Result<Vec<u8>>;
    /// The size of file `path`, `None` when it does not exist.
    fn size(&self, path: &str) -> Result<Option<u64>>;
    /// Every file below directory `dir` (recursively), in no particular order; an
    /// absent directory is empty.
    fn list(&self, dir: &str) -> Result<Vec<Entry>>;
    /// Writes `bytes` as file `path`, durably and atomically, replacing any file there.
    fn put(&self, path: &str, bytes: &[u8]) -> Result<()>;
    /// Like [`Store::put`] with the content of a finished local temp file, which is
    /// consumed (a local store renames it into place; large files go up in parts).
    fn put_file(&self, path: &str, file: tempfile::NamedTempFile) -> Result<()>;
    /// Writes `bytes` as file `path` atomically for other processes to see, without
    /// waiting for it to be durable: for lock files, which a crash may as well take
    /// along. A store whose writes are all durable simply puts.
    fn put_volatile(&self, path: &str, bytes: &[u8]) -> Result<()> {
        self.put(path, bytes)
    }
    /// Deletes file `path`; deleting an absent file is not an error.
    fn delete(&self, path: &str) -> Result<()>;
    /// Like [`Store::delete`], without waiting for the deletion to be durable.
    fn delete_volatile(&self, path: &str) -> Result<()> {
        self.delete(path)
    }
    /// Deletes every file of `paths`, durably once it returns (a local store syncs
    /// each directory once, not once per file).
    fn delete_all(&self, paths: &[String]) -> Result<()> {
        use rayon::prelude::*;
        paths.par_iter().try_for_each(|p| self.delete(p))
    }
}

/// Options of a remote location that its URL does not carry.
#[derive(Clone, Debug, Default)]
pub struct RemoteOptions {
    /// The S3 endpoint (`http://127.0.0.1:9000`); else `AWS_ENDPOINT_URL`, else AWS.
    pub endpoint: Option<String>,
}

/// Opens the store a `--repo` or `--to` argument names: `s3://bucket/prefix`,
/// `sftp://[user@]host[:port]/path`, or a local directory.
pub fn open(location: &str, opts: &RemoteOptions) -> Result<Arc<dyn Store>> {
    if location.contains("://") {
        Ok(Arc::new(Remote::open(location, opts)?))
    } else {
        Ok(Arc::new(Local::new(PathBuf::from(location))))
    }
}

/// The error of a file that should exist and does not.
pub(crate) fn missing(store: &dyn Store, path: &str) -> Error {
    Error::NotFound {
        what: "file",
        id: format!("{}/{path}", store.location()),
    }
}

/// The error of a file larger than its cap.
fn too_large(location: &str, path: &str, len: u64, cap: u64) -> Error {
    Error::corrupt(
        "file",
        format!("{location}/{path}"),
        format!("{len} bytes, more than the {cap} allowed"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn local_store_round_trips_and_lists_recursively() {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir(d.path().join("tmp")).unwrap();
        let s = Local::new(d.path().to_path_buf());
        s.put("packs/ab/abcd", b"hello").unwrap();
        s.put("snapshots/x", b"rec").unwrap();
        assert_eq!(s.read("packs/ab/abcd", 5).unwrap(), b"hello");
        assert!(matches!(
            s.read("packs/ab/abcd", 4),
            Err(Error::Corrupt { .. })
        ));
        assert_eq!(s.read_at("packs/ab/abcd", 1, 3).unwrap(), b"ell");
        assert_eq!(s.size("packs/ab/abcd").unwrap(), Some(5));
        assert_eq!(s.size("packs/ab/none").unwrap(), None);
        let listed: Vec<(String, u64)> = s
            .list("packs")
            .unwrap()
            .into_iter()
            .map(|e| (e.path, e.size))
            .collect();
        assert_eq!(listed, vec![("packs/ab/abcd".to_string(), 5)]);
        assert!(s.list("absent").unwrap().is_empty());
        s.delete("packs/ab/abcd").unwrap();
        s.delete("packs/ab/abcd").unwrap();
        assert!(matches!(
            s.read("packs/ab/abcd", 5),
            Err(Error::NotFound { .. })
        ));
        s.put_volatile("locks/l.json", b"{}").unwrap();
        s.put_volatile("locks/l.json", b"{1}").unwrap();
        assert_eq!(s.read("locks/l.json", 3).unwrap(), b"{1}");
        s.delete_volatile("locks/l.json").unwrap();
        s.delete_volatile("locks/l.json").unwrap();
        assert_eq!(s.size("locks/l.json").unwrap(), None);
        assert!(
            s.list("tmp").unwrap().is_empty(),
            "no temp file is left behind"
        );
    }
}
