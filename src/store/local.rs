//! A repository directory on the local file system (or a mounted one). A file is
//! written to `tmp/`, fsynced, renamed into place and its directory fsynced, so it
//! survives power loss once `put` returns and is never seen half-written.

use std::collections::HashMap;
use std::fs::{self, File};
use std::io::{ErrorKind, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use super::{too_large, Entry, Store};
use crate::error::{IoContext, Result};
use crate::locked;

/// Pack files kept open for reading.
const OPEN_FILES: usize = 64;

/// A local repository directory; see the module docs.
pub struct Local {
    root: PathBuf,
    open: Mutex<HashMap<String, Arc<File>>>,
}

fn fsync_dir(dir: &Path) -> Result<()> {
    File::open(dir).and_then(|d| d.sync_all()).at(dir)
}

impl Local {
    /// The repository at directory `root`.
    pub fn new(root: PathBuf) -> Local {
        Local {
            root,
            open: Mutex::new(HashMap::new()),
        }
    }

    fn path(&self, p: &str) -> PathBuf {
        self.root.join(p)
    }

    fn file(&self, p: &str) -> Result<Arc<File>> {
        let mut open = locked(&self.open);
        if let Some(f) = open.get(p) {
            return Ok(f.clone());
        }
        let path = self.path(p);
        let f = Arc::new(File::open(&path).map_err(|e| self.not_found(p, e))?);
        if open.len() >= OPEN_FILES {
            open.clear();
        }
        open.insert(p.to_string(), f.clone());
        Ok(f)
    }

    /// Drops the open handle of a file replaced or deleted.
    fn forget_handle(&self, p: &str) {
        locked(&self.open).remove(p);
    }

    fn not_found(&self, p: &str, e: std::io::Error) -> crate::error::Error {
        if e.kind() == ErrorKind::NotFound {
            super::missing(self, p)
        } else {
            crate::error::Error::Io {
                path: self.path(p),
                source: e,
            }
        }
    }

    /// A temp file in the store's `tmp/` holding `bytes`.
    fn temp_with(&self, bytes: &[u8]) -> Result<tempfile::NamedTempFile> {
        let tmp = self.root.join("tmp");
        let mut f = tempfile::Builder::new()
            .prefix(&super::temp_prefix())
            .tempfile_in(&tmp)
            .at(&tmp)?;
        f.write_all(bytes).at(f.path())?;
        Ok(f)
    }

    /// Renames a finished temp file to `p`; returns the directory that now lists it.
    fn place(&self, p: &str, file: tempfile::NamedTempFile) -> Result<PathBuf> {
        let dest = self.path(p);
        let dir = self.make_parent(&dest)?;
        file.persist(&dest).map_err(|e| e.error).at(&dest)?;
        self.forget_handle(p);
        Ok(dir)
    }

    /// Removes file `p`; returns the directory that listed it, `None` when it was absent.
    fn remove(&self, p: &str) -> Result<Option<PathBuf>> {
        self.forget_handle(p);
        let path = self.path(p);
        match fs::remove_file(&path) {
            Ok(()) => Ok(Some(
                path.parent().expect("store paths have a parent").to_owned(),
            )),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e).at(&path),
        }
    }

    /// Creates the parent directory of `dest` when absent, durably.
    fn make_parent(&self, dest: &Path) -> Result<PathBuf> {
        let dir = dest
            .parent()
            .expect("store paths have a parent")
            .to_path_buf();
        if !dir.exists() {
            fs::create_dir_all(&dir).at(&dir)?;
            fsync_dir(dir.parent().expect("below the root"))?;
        }
        Ok(dir)
    }

    fn walk(&self, dir: &Path, out: &mut Vec<Entry>) -> Result<()> {
        let rd = match fs::read_dir(dir) {
            Ok(rd) => rd,
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(e).at(dir),
        };
        for e in rd {
            let e = e.at(dir)?;
            let md = match e.metadata() {
                Ok(m) => m,
                Err(err) if err.kind() == ErrorKind::NotFound => continue,
                Err(err) => return Err(err).at(e.path()),
            };
            if md.is_dir() {
                self.walk(&e.path(), out)?;
            } else if md.is_file() {
                let rel = e
                    .path()
                    .strip_prefix(&self.root)
                    .expect("below the root")
                    .to_string_lossy()
                    .into_owned();
                out.push(Entry {
                    path: rel,
                    size: md.len(),
                    modified: md.modified().ok(),
                });
            }
        }
        Ok(())
    }
}

impl Store for Local {
    fn location(&self) -> String {
        self.root.display().to_string()
    }

    fn local_root(&self) -> Option<&Path> {
        Some(&self.root)
    }

    fn read(&self, p: &str, cap: u64) -> Result<Vec<u8>> {
        let path = self.path(p);
        let len = fs::metadata(&path).map_err(|e| self.not_found(p, e))?.len();
        if len > cap {
            return Err(too_large(&self.location(), p, len, cap));
        }
        fs::read(&path).map_err(|e| self.not_found(p, e))
    }

    fn read_at(&self, p: &str, offset: u64, len: usize) -> Result<Vec<u8>> {
        let f = self.file(p)?;
        let mut buf = vec![0u8; len];
        f.read_exact_at(&mut buf, offset).at(self.path(p))?;
        Ok(buf)
    }

    fn size(&self, p: &str) -> Result<Option<u64>> {
        match fs::metadata(self.path(p)) {
            Ok(m) => Ok(Some(m.len())),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e).at(self.path(p)),
        }
    }

    fn list(&self, dir: &str) -> Result<Vec<Entry>> {
        let mut out = Vec::new();
        self.walk(&self.path(dir), &mut out)?;
        Ok(out)
    }

    fn put(&self, p: &str, bytes: &[u8]) -> Result<()> {
        self.put_file(p, self.temp_with(bytes)?)
    }

    fn put_file(&self, p: &str, file: tempfile::NamedTempFile) -> Result<()> {
        file.as_file().sync_all().at(file.path())?;
        fsync_dir(&self.place(p, file)?)
    }

    fn put_volatile(&self, p: &str, bytes: &[u8]) -> Result<()> {
        self.place(p, self.temp_with(bytes)?).map(drop)
    }

    fn delete(&self, p: &str) -> Result<()> {
        self.delete_all(&[p.to_string()])
    }

    fn delete_all(&self, paths: &[String]) -> Result<()> {
        let mut dirs = std::collections::BTreeSet::new();
        for p in paths {
            dirs.extend(self.remove(p)?);
        }
        dirs.iter().try_for_each(|d| fsync_dir(d))
    }

    fn delete_volatile(&self, p: &str) -> Result<()> {
        self.remove(p).map(drop)
    }
}
