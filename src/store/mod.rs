//! Where a repository's files live: a local directory, an SFTP server or an
//! S3-compatible bucket. The repository sees only [`Store`]: named files, written
//! whole, durably and atomically (a reader sees all of a file or none of it), read
//! whole or by range, listed and deleted. Paths are relative to the repository root
//! and use `/` (`packs/ab/ab12…`, `snapshots/…`). A local store reaches the file
//! system through [`Fs`], which tests replace by a model of power loss.
//!
//! Files being written wait in `tmp/` under a name that says who writes them (see
//! [`temp_prefix`]), so that a later process can tell the leftovers of dead writers
//! from the files of live ones.

#[doc(hidden)]
pub mod crash;
mod fs;
#[cfg(feature = "remote")]
mod http;
mod limit;
mod local;
#[cfg(feature = "remote")]
pub(crate) mod remote;
#[cfg(feature = "remote")]
mod sftp;
#[cfg(test)]
pub(crate) mod test_store;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

pub use self::fs::{Fs, RealFs};
pub use self::limit::{Bucket, Limited, Limits};
pub use self::local::Local;
#[cfg(feature = "remote")]
pub use self::remote::Remote;
#[cfg(feature = "remote")]
pub use self::sftp::Sftp;
use crate::error::{Error, Result, Usage};

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

/// What [`Store::create_volatile`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Create {
    /// The file is written.
    Created,
    /// A file was there already; it is unchanged.
    Exists,
    /// The store cannot create files atomically; nothing was written.
    Unsupported,
}

/// A repository's file storage; see the module docs.
pub trait Store: Send + Sync {
    /// Where it is, for messages and for `--repo` (`/srv/repo`, `s3://bucket/prefix`).
    fn location(&self) -> String;
    /// The directory, for a store on the local file system.
    fn local_root(&self) -> Option<&Path>;
    /// Where the store is reached, where [`Store::location`] does not say (an S3
    /// endpoint): one location on two endpoints is two stores.
    fn endpoint(&self) -> Option<&str> {
        None
    }
    /// Reads file `path` whole; a file larger than `cap` bytes is refused as corrupt.
    fn read(&self, path: &str, cap: u64) -> Result<Vec<u8>>;
    /// Reads `len` bytes of file `path` at `offset`.
    fn read_at(&self, path: &str, offset: u64, len: usize) -> Result<Vec<u8>>;
    /// `len` bytes of file `path` at `offset` as a stream, for reads too long to hold
    /// at once (a restore reads whole packs); a store without streamed reads reads
    /// them at once. A stream that ends early is an error of its reader.
    fn read_stream(
        &self,
        path: &str,
        offset: u64,
        len: u64,
    ) -> Result<Box<dyn std::io::Read + Send + '_>> {
        let len = usize::try_from(len).map_err(|_| Error::Storage {
            location: format!("{}/{path}", self.location()),
            detail: format!("a read of {len} bytes is longer than memory"),
        })?;
        Ok(Box::new(std::io::Cursor::new(
            self.read_at(path, offset, len)?,
        )))
    }
    /// The size of file `path`, `None` when it does not exist.
    fn size(&self, path: &str) -> Result<Option<u64>>;
    /// Every file below directory `dir` (recursively), in no particular order; an
    /// absent directory is empty.
    fn list(&self, dir: &str) -> Result<Vec<Entry>>;
    /// The listings ([`Store::list`]) of directories `dirs`, in their order, which hold
    /// about `expect` files in all (what the caller found last time). Where a listing
    /// is one request per page of names (S3), they come from one listing of the names
    /// from the first directory to the last in name order, so directories adjacent in
    /// that order (`index`, `keys`) cost one request together; elsewhere each is
    /// listed alone. That one listing relies on the store listing names in order, and
    /// shows the directories as they were when it reached each: not for a caller that
    /// needs one directory listed after another, nor one that deletes what a listing
    /// lacks.
    fn list_dirs(&self, dirs: &[&str], expect: usize) -> Result<Vec<Vec<Entry>>> {
        let _ = expect;
        list_each(self, dirs)
    }
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
    /// Writes `bytes` as file `path` unless a file is there, atomically for other
    /// processes (of two writers, one creates it and the other is told it exists),
    /// without waiting for it to be durable: for locks. `Unsupported` where the store
    /// cannot promise that (then nothing was written).
    fn create_volatile(&self, _path: &str, _bytes: &[u8]) -> Result<Create> {
        Ok(Create::Unsupported)
    }
    /// Makes file `path`, which another process placed and may have died before it
    /// was durable, durable: its data and its directory entry. Where every file a
    /// listing shows is durable (S3) there is nothing to do.
    fn make_durable(&self, _path: &str) -> Result<()> {
        Ok(())
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
    /// Closes the files kept open for reading. A long-lived reader calls it after
    /// another process may have deleted some (a prune): an open handle would still
    /// read a deleted pack and keep its disk space.
    fn close_files(&self) {}
}

/// Directories `dirs` of `store`, each listed alone.
fn list_each<S: Store + ?Sized>(store: &S, dirs: &[&str]) -> Result<Vec<Vec<Entry>>> {
    dirs.iter().map(|d| store.list(d)).collect()
}

/// Options of a remote location that its URL does not carry. The library reads no
/// environment: the front end fills these (the CLI from `--endpoint`,
/// `AWS_ENDPOINT_URL_S3`, `AWS_ENDPOINT_URL`, `AWS_REGION`, `AWS_DEFAULT_REGION`,
/// `SNAP_SSH_KNOWN_HOSTS` and `SNAP_REMOTE_TIMEOUT`).
#[derive(Clone, Debug)]
pub struct RemoteOptions {
    /// The S3 endpoint (`http://127.0.0.1:9000`); AWS when `None`.
    pub endpoint: Option<String>,
    /// The S3 region; `us-east-1` when `None`.
    pub region: Option<String>,
    /// How an SFTP server's host key is checked.
    pub host_keys: HostKeys,
    /// Bandwidth limits of transfers to and from the remote store.
    pub limits: Limits,
    /// How long a remote store may stay silent (nothing received, nothing sent
    /// acknowledged) before a request is abandoned and retried; a slow transfer that
    /// keeps moving is never cut.
    pub silence: std::time::Duration,
}

/// [`RemoteOptions::silence`] unless `SNAP_REMOTE_TIMEOUT` says otherwise.
pub const DEFAULT_SILENCE: std::time::Duration = std::time::Duration::from_secs(60);

impl Default for RemoteOptions {
    fn default() -> Self {
        RemoteOptions {
            endpoint: None,
            region: None,
            host_keys: HostKeys::default(),
            limits: Limits::default(),
            silence: DEFAULT_SILENCE,
        }
    }
}

/// How an SFTP server's host key is checked against `~/.ssh/known_hosts`
/// (OpenSSH's `StrictHostKeyChecking`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum HostKeys {
    /// An unknown or changed key is refused (`yes`).
    #[default]
    Strict,
    /// An unknown key is added, a changed one refused (`accept-new`).
    Add,
    /// Any key is accepted (`no`).
    Accept,
}

/// Opens the store a `--repo` or `--to` argument names: `s3://bucket/prefix`,
/// `sftp://[user@]host[:port]/path`, or a local directory.
pub fn open(location: &str, opts: &RemoteOptions) -> Result<Arc<dyn Store>> {
    if location.contains("://") {
        open_remote(location, opts)
    } else {
        Ok(Arc::new(Local::new(PathBuf::from(location))))
    }
}

#[cfg(feature = "remote")]
fn open_remote(location: &str, opts: &RemoteOptions) -> Result<Arc<dyn Store>> {
    let Some(rest) = location.strip_prefix("sftp://") else {
        let s3: Arc<dyn Store> = Arc::new(Remote::open(location, opts)?);
        return Ok(Limited::wrap(s3, opts.limits));
    };
    let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
    if authority.is_empty() {
        return Err(Usage::SftpNoHost {
            location: location.to_string(),
        }
        .into());
    }
    let sftp: Arc<dyn Store> = Arc::new(Sftp::open(location, authority, path, opts)?);
    Ok(Limited::wrap(sftp, opts.limits))
}

/// A build without the `remote` feature stores only in local directories.
#[cfg(not(feature = "remote"))]
fn open_remote(location: &str, _opts: &RemoteOptions) -> Result<Arc<dyn Store>> {
    Err(Usage::NoRemoteStores {
        location: location.to_string(),
    }
    .into())
}

/// The start of the names this process gives its files in `tmp/`: `<host>.<pid>.`,
/// the host name with every character but letters, digits, `-` and `_` made `_`.
pub fn temp_prefix() -> String {
    format!(
        "{}.{}.",
        temp_host(&crate::host::hostname()),
        std::process::id()
    )
}

fn temp_host(host: &str) -> String {
    host.chars()
        .map(|c| match c {
            'a'..='z' | 'A'..='Z' | '0'..='9' | '-' | '_' => c,
            _ => '_',
        })
        .collect()
}

/// A new name in `tmp/` for a file this process writes.
#[cfg(feature = "remote")]
pub(crate) fn temp_name() -> Result<String> {
    let mut r = [0u8; 8];
    getrandom::getrandom(&mut r).map_err(Error::NoRandomness)?;
    Ok(format!("tmp/{}{}", temp_prefix(), hex::encode(r)))
}

/// Who writes temp file `path` (`tmp/<host>.<pid>.…`): `Some((host, pid))` for a name
/// [`temp_prefix`] made, with `host` as written there; `None` for any other name.
pub fn temp_owner(path: &str) -> Option<(String, u32)> {
    let name = path.rsplit('/').next()?;
    let mut parts = name.splitn(3, '.');
    let (host, pid) = (parts.next()?, parts.next()?.parse().ok()?);
    parts.next()?;
    Some((host.to_string(), pid))
}

/// Whether temp file `entry` belongs to a writer that is gone: its name says this host
/// and a PID that no longer runs, or it has not been written to for the staleness
/// window of locks (a writer that is merely slow keeps touching its file).
pub fn temp_is_orphan(entry: &Entry) -> bool {
    temp_of_dead_writer_here(entry) || crate::host::stale_by_age(entry.modified)
}

/// Whether temp file `entry`'s name says this host and a PID that no longer runs: a
/// file no live writer can hold, whatever lock is held.
pub fn temp_of_dead_writer_here(entry: &Entry) -> bool {
    let here = temp_host(&crate::host::hostname());
    temp_owner(&entry.path).is_some_and(|(host, pid)| host == here && !crate::host::pid_alive(pid))
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

#[cfg(all(test, feature = "remote"))]
mod temp_tests {
    use super::*;

    fn entry(path: &str, age_secs: u64) -> Entry {
        Entry {
            path: path.into(),
            size: 1,
            modified: Some(SystemTime::now() - std::time::Duration::from_secs(age_secs)),
        }
    }

    #[test]
    fn temp_files_of_dead_writers_are_told_from_live_ones() {
        let mine = temp_name().unwrap();
        let (host, pid) = temp_owner(&mine).expect("a name temp_name gave parses");
        assert_eq!(pid, std::process::id());
        assert!(!host.contains('.') && !host.contains('/'), "{host}");
        assert!(!temp_is_orphan(&entry(&mine, 0)), "a live writer's file");
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let dead = child.id();
        child.wait().unwrap();
        let theirs = format!("tmp/{host}.{dead}.0123");
        assert!(temp_is_orphan(&entry(&theirs, 0)), "a dead writer's file");
        let elsewhere = format!("tmp/other_host.{dead}.0123");
        assert!(!temp_is_orphan(&entry(&elsewhere, 60)), "another host's");
        assert!(temp_is_orphan(&entry(&elsewhere, 31 * 60)), "idle too long");
        assert!(!temp_is_orphan(&entry("tmp/.tmpAbC", 60)));
        assert!(temp_is_orphan(&entry("tmp/.tmpAbC", 31 * 60)));
        assert_eq!(temp_owner("tmp/abcdef0123"), None);
    }
}
