//! A repository directory on the local file system (or a mounted one). A file is
//! written to `tmp/`, fsynced, renamed into place and its directory fsynced, so it
//! survives power loss once `put` returns and is never seen half-written. A directory
//! a file goes into is durable in its parent before the file is renamed into it, also
//! when several threads put into one new directory at once.
//!
//! Every file-system call goes through [`Fs`]: the real one, or a model of power loss
//! in tests ([`Local::with_fs`]).

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::io::ErrorKind;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use super::fs::{Fs, RealFs};
use super::{too_large, Create, Entry, Store};
use crate::error::{IoContext, Result};
use crate::locked;

/// Pack files kept open for reading.
const OPEN_FILES: usize = 64;

/// A local repository directory; see the module docs.
pub struct Local {
    root: PathBuf,
    fs: Arc<dyn Fs>,
    open: Mutex<HashMap<String, Arc<File>>>,
    /// Directories this handle knows to be durable in their parent. Held while one is
    /// made durable, so that no thread puts into it before.
    durable_dirs: Mutex<HashSet<PathBuf>>,
}

impl Local {
    /// The repository at directory `root`.
    pub fn new(root: PathBuf) -> Local {
        Local::with_fs(root, Arc::new(RealFs))
    }

    /// The repository at directory `root`, reached through `fs` (a test's model of
    /// power loss).
    pub fn with_fs(root: PathBuf, fs: Arc<dyn Fs>) -> Local {
        Local {
            root,
            fs,
            open: Mutex::new(HashMap::new()),
            durable_dirs: Mutex::new(HashSet::new()),
        }
    }

    fn fsync_dir(&self, dir: &Path) -> Result<()> {
        self.fs.sync_dir(dir).at(dir)
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
        let f = Arc::new(self.fs.open(&path).map_err(|e| self.not_found(p, e))?);
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
        self.fs
            .write_temp(&tmp, &super::temp_prefix(), bytes)
            .at(&tmp)
    }

    /// Renames a finished temp file to `p`; returns the directory that now lists it.
    fn place(&self, p: &str, file: tempfile::NamedTempFile) -> Result<PathBuf> {
        let dest = self.path(p);
        let dir = self.make_parent(&dest)?;
        self.fs.rename(file, &dest).at(&dest)?;
        self.forget_handle(p);
        Ok(dir)
    }

    /// Removes file `p`; returns the directory that listed it, `None` when it was absent.
    fn remove(&self, p: &str) -> Result<Option<PathBuf>> {
        self.forget_handle(p);
        let path = self.path(p);
        match self.fs.remove_file(&path) {
            Ok(()) => Ok(Some(
                path.parent().expect("store paths have a parent").to_owned(),
            )),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e).at(&path),
        }
    }

    /// Creates the parent directory of `dest` when absent; returns it once it is
    /// durable in its own parent.
    fn make_parent(&self, dest: &Path) -> Result<PathBuf> {
        let dir = dest
            .parent()
            .expect("store paths have a parent")
            .to_path_buf();
        self.make_durable(&mut locked(&self.durable_dirs), &dir)?;
        Ok(dir)
    }

    /// Makes directory `dir` (below the root) exist durably, and its parents. One
    /// found in place is synced into its parent too, once per handle: another thread
    /// or process may have just created it and not synced it yet.
    fn make_durable(&self, known: &mut HashSet<PathBuf>, dir: &Path) -> Result<()> {
        if dir == self.root || known.contains(dir) {
            return Ok(());
        }
        let parent = dir.parent().expect("below the root");
        self.make_durable(known, parent)?;
        if self.fs.metadata(dir).is_err() {
            match self.fs.create_dir(dir) {
                Err(e) if e.kind() != ErrorKind::AlreadyExists => return Err(e).at(dir),
                _ => {}
            }
        }
        self.fsync_dir(parent)?;
        known.insert(dir.to_owned());
        Ok(())
    }

    fn walk(&self, dir: &Path, out: &mut Vec<Entry>) -> Result<()> {
        let rd = match self.fs.read_dir(dir) {
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
        let len = self
            .fs
            .metadata(&path)
            .map_err(|e| self.not_found(p, e))?
            .len();
        if len > cap {
            return Err(too_large(&self.location(), p, len, cap));
        }
        self.fs.read(&path).map_err(|e| self.not_found(p, e))
    }

    fn read_at(&self, p: &str, offset: u64, len: usize) -> Result<Vec<u8>> {
        let f = self.file(p)?;
        let mut buf = vec![0u8; len];
        f.read_exact_at(&mut buf, offset).at(self.path(p))?;
        Ok(buf)
    }

    fn size(&self, p: &str) -> Result<Option<u64>> {
        match self.fs.metadata(&self.path(p)) {
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
        self.fs.adopt(&file).at(file.path())?;
        self.fs.sync_file(&file).at(file.path())?;
        let dir = self.place(p, file)?;
        self.fsync_dir(&dir)
    }

    fn make_durable(&self, p: &str) -> Result<()> {
        let path = self.path(p);
        self.fs.sync_path(&path).at(&path)?;
        self.fsync_dir(path.parent().expect("store paths have a parent"))
    }

    fn put_volatile(&self, p: &str, bytes: &[u8]) -> Result<()> {
        self.place(p, self.temp_with(bytes)?).map(drop)
    }

    fn create_volatile(&self, p: &str, bytes: &[u8]) -> Result<Create> {
        let dest = self.path(p);
        self.make_parent(&dest)?;
        match self.fs.rename_new(self.temp_with(bytes)?, &dest) {
            Ok(()) => Ok(Create::Created),
            Err(e) if e.kind() == ErrorKind::AlreadyExists => Ok(Create::Exists),
            Err(e) => Err(e).at(&dest),
        }
    }

    fn close_files(&self) {
        locked(&self.open).clear();
    }

    fn delete(&self, p: &str) -> Result<()> {
        self.delete_all(&[p.to_string()])
    }

    fn delete_all(&self, paths: &[String]) -> Result<()> {
        let mut dirs = std::collections::BTreeSet::new();
        for p in paths {
            dirs.extend(self.remove(p)?);
        }
        dirs.iter().try_for_each(|d| self.fsync_dir(d))
    }

    fn delete_volatile(&self, p: &str) -> Result<()> {
        self.remove(p).map(drop)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::store::crash::CrashFs;

    #[test]
    fn a_second_writer_into_a_new_directory_returns_only_once_it_is_durable() {
        let d = tempfile::tempdir().unwrap();
        let root = d.path().join("repo");
        for sub in ["tmp", "packs"] {
            std::fs::create_dir_all(root.join(sub)).unwrap();
        }
        // A repository made before init created the fan-out directories; two handles
        // on it, as two processes.
        let crash = Arc::new(CrashFs::new(&root, None).unwrap());
        let handle = || Arc::new(Local::with_fs(root.clone(), crash.clone()));
        let (this, other) = (handle(), handle());
        let put = |store: &Arc<Local>, name: &'static str| {
            let s = store.clone();
            std::thread::spawn(move || s.put(&format!("packs/ab/{name}"), name.as_bytes()))
        };
        // The first writer creates packs/ab/ and is held before syncing packs/.
        let release = crash.hold_after_create_dir();
        let first = put(&this, "first");
        while !root.join("packs/ab").exists() {
            std::thread::sleep(Duration::from_millis(1));
        }
        // Another thread of this process, and another process.
        let racers = [put(&this, "thread"), put(&other, "process")];
        std::thread::sleep(Duration::from_millis(300));
        let returned: Vec<bool> = racers
            .iter()
            .map(std::thread::JoinHandle::is_finished)
            .collect();
        crash.cut_now();
        drop(release);
        assert!(first.join().unwrap().is_err());
        let after = d.path().join("after");
        let results: Vec<_> = racers.into_iter().map(|r| r.join().unwrap()).collect();
        crash.materialize(&after, None).unwrap();
        for ((name, before_cut), result) in ["thread", "process"].iter().zip(returned).zip(results)
        {
            let survived = std::fs::read(after.join("packs/ab").join(name)).ok();
            assert!(
                !(before_cut && result.is_ok()) || survived.as_deref() == Some(name.as_bytes()),
                "the {name} writer's put returned before its directory was durable, and the power cut lost it"
            );
        }
    }
}
