//! A local store with faults and hooks, for tests: seen from elsewhere (so that its
//! handles keep caches of their own), without atomic creation (as Garage or SFTP),
//! refusing writes (read-only media) or the reads of some files (a wrong mode, a 403),
//! or running code the first time `snapshots/` is listed (another process finishing
//! a backup at that moment).

use std::path::Path;
use std::sync::Mutex;

use super::{Entry, Local, Store};
use crate::error::{Error, Result};
use crate::locked;

/// See the module docs; built by [`TestStore::new`] and its setters.
pub(crate) struct TestStore {
    inner: Local,
    elsewhere: bool,
    read_only: bool,
    refused: Option<String>,
    before_snapshots: Mutex<Option<Box<dyn FnOnce() + Send>>>,
}

impl TestStore {
    /// The local store at `root`, as it is (but for atomic creation, which it lacks).
    pub(crate) fn new(root: &Path) -> TestStore {
        TestStore {
            inner: Local::new(root.to_path_buf()),
            elsewhere: false,
            read_only: false,
            refused: None,
            before_snapshots: Mutex::new(None),
        }
    }

    /// Seen from elsewhere: another location, and not local.
    pub(crate) fn elsewhere(mut self) -> TestStore {
        self.elsewhere = true;
        self
    }

    /// Every write fails, as on read-only media.
    pub(crate) fn read_only(mut self) -> TestStore {
        self.read_only = true;
        self
    }

    /// Reads of the files whose path starts with `prefix` fail with a refused
    /// permission.
    pub(crate) fn refusing(mut self, prefix: &str) -> TestStore {
        self.refused = Some(prefix.to_string());
        self
    }

    /// Runs `f` before the next listing of `snapshots/`, once.
    pub(crate) fn before_snapshots(&self, f: impl FnOnce() + Send + 'static) {
        *locked(&self.before_snapshots) = Some(Box::new(f));
    }

    fn fail(path: &str, kind: std::io::ErrorKind) -> Error {
        Error::Io {
            path: path.into(),
            source: kind.into(),
        }
    }

    fn may_read(&self, path: &str) -> Result<()> {
        match &self.refused {
            Some(p) if path.starts_with(p.as_str()) => {
                Err(Self::fail(path, std::io::ErrorKind::PermissionDenied))
            }
            _ => Ok(()),
        }
    }

    fn may_write(&self, path: &str) -> Result<()> {
        if self.read_only {
            return Err(Self::fail(path, std::io::ErrorKind::ReadOnlyFilesystem));
        }
        Ok(())
    }
}

impl Store for TestStore {
    fn location(&self) -> String {
        if self.elsewhere {
            format!("elsewhere:{}", self.inner.location())
        } else {
            self.inner.location()
        }
    }
    fn local_root(&self) -> Option<&Path> {
        if self.elsewhere {
            None
        } else {
            self.inner.local_root()
        }
    }
    fn read(&self, path: &str, cap: u64) -> Result<Vec<u8>> {
        self.may_read(path)?;
        self.inner.read(path, cap)
    }
    fn read_at(&self, path: &str, offset: u64, len: usize) -> Result<Vec<u8>> {
        self.may_read(path)?;
        self.inner.read_at(path, offset, len)
    }
    fn size(&self, path: &str) -> Result<Option<u64>> {
        self.inner.size(path)
    }
    fn list(&self, dir: &str) -> Result<Vec<Entry>> {
        if dir == "snapshots" {
            let before = locked(&self.before_snapshots).take();
            if let Some(f) = before {
                f();
            }
        }
        self.inner.list(dir)
    }
    fn put(&self, path: &str, bytes: &[u8]) -> Result<()> {
        self.may_write(path)?;
        self.inner.put(path, bytes)
    }
    fn put_file(&self, path: &str, file: tempfile::NamedTempFile) -> Result<()> {
        self.may_write(path)?;
        self.inner.put_file(path, file)
    }
    fn delete(&self, path: &str) -> Result<()> {
        self.may_write(path)?;
        self.inner.delete(path)
    }
}
