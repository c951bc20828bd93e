//! The file-system calls a [`super::Local`] store makes, behind one small trait, so
//! that a test can put a model of power loss ([`super::crash::CrashFs`]) where the
//! real file system ([`RealFs`], the default) is.
//!
//! Every call takes absolute paths and returns plain `io::Result`s; the store adds
//! the paths to its errors. Durability is explicit: a written file is durable after
//! [`Fs::sync_file`], a directory entry (a new file, a rename, a removal, a new
//! subdirectory) after [`Fs::sync_dir`] of the directory holding it.

use std::fs::{self, File, Metadata, ReadDir};
use std::io::{self, Write};
use std::path::Path;

use tempfile::NamedTempFile;

/// The file-system calls of a local store; see the module docs.
pub trait Fs: Send + Sync {
    /// Creates a new temp file in `dir` holding `bytes`, not yet durable.
    fn write_temp(&self, dir: &Path, prefix: &str, bytes: &[u8]) -> io::Result<NamedTempFile>;
    /// Takes note of a temp file its caller wrote (a pack), before it is made durable.
    fn adopt(&self, _file: &NamedTempFile) -> io::Result<()> {
        Ok(())
    }
    /// Makes a file's data durable (`fsync`).
    fn sync_file(&self, file: &NamedTempFile) -> io::Result<()>;
    /// Makes the data of file `path`, opened by name, durable (`fsync`).
    fn sync_path(&self, path: &Path) -> io::Result<()>;
    /// Renames a temp file to `to`, replacing any file there.
    fn rename(&self, file: NamedTempFile, to: &Path) -> io::Result<()>;
    /// Renames a temp file to `to` unless a file is there (then an error of kind
    /// `AlreadyExists`), atomically: of two renames to one name, one fails.
    fn rename_new(&self, file: NamedTempFile, to: &Path) -> io::Result<()>;
    /// Makes the entries of directory `dir` durable (`fsync` of the directory).
    fn sync_dir(&self, dir: &Path) -> io::Result<()>;
    /// Creates directory `dir`, whose parent exists.
    fn create_dir(&self, dir: &Path) -> io::Result<()>;
    /// Removes file `path`.
    fn remove_file(&self, path: &Path) -> io::Result<()>;
    /// Reads file `path` whole.
    fn read(&self, path: &Path) -> io::Result<Vec<u8>>;
    /// Opens file `path` for reading at offsets.
    fn open(&self, path: &Path) -> io::Result<File>;
    /// The metadata of `path`.
    fn metadata(&self, path: &Path) -> io::Result<Metadata>;
    /// The entries of directory `dir`.
    fn read_dir(&self, dir: &Path) -> io::Result<ReadDir>;
}

/// The real file system.
pub struct RealFs;

impl Fs for RealFs {
    fn write_temp(&self, dir: &Path, prefix: &str, bytes: &[u8]) -> io::Result<NamedTempFile> {
        let mut f = tempfile::Builder::new().prefix(prefix).tempfile_in(dir)?;
        f.write_all(bytes)?;
        Ok(f)
    }

    fn sync_file(&self, file: &NamedTempFile) -> io::Result<()> {
        file.as_file().sync_all()
    }

    fn sync_path(&self, path: &Path) -> io::Result<()> {
        File::open(path)?.sync_all()
    }

    fn rename(&self, file: NamedTempFile, to: &Path) -> io::Result<()> {
        file.persist(to).map(drop).map_err(|e| e.error)
    }

    fn rename_new(&self, file: NamedTempFile, to: &Path) -> io::Result<()> {
        file.persist_noclobber(to).map(drop).map_err(|e| e.error)
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        File::open(dir)?.sync_all()
    }

    fn create_dir(&self, dir: &Path) -> io::Result<()> {
        fs::create_dir(dir)
    }

    fn remove_file(&self, path: &Path) -> io::Result<()> {
        fs::remove_file(path)
    }

    fn read(&self, path: &Path) -> io::Result<Vec<u8>> {
        fs::read(path)
    }

    fn open(&self, path: &Path) -> io::Result<File> {
        File::open(path)
    }

    fn metadata(&self, path: &Path) -> io::Result<Metadata> {
        fs::metadata(path)
    }

    fn read_dir(&self, dir: &Path) -> io::Result<ReadDir> {
        fs::read_dir(dir)
    }
}
