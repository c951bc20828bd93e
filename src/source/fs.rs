//! Reading the file system: metadata, safe opening, sorted listings, excludes.

use std::ffi::{OsStr, OsString};
use std::fs::{File, Metadata};
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use globset::{Glob, GlobSet, GlobSetBuilder};

use crate::error::{Error, Result, Usage};
use crate::format::tree::{Meta, Timestamp};

/// The metadata snap keeps of a file system entry.
pub fn meta_of(md: &Metadata) -> Meta {
    Meta {
        mode: md.mode(),
        uid: md.uid(),
        gid: md.gid(),
        mtime: Timestamp {
            sec: md.mtime(),
            nsec: md.mtime_nsec().clamp(0, 999_999_999) as u32,
        },
        ctime: Timestamp {
            sec: md.ctime(),
            nsec: md.ctime_nsec().clamp(0, 999_999_999) as u32,
        },
        dev: md.dev(),
        ino: md.ino(),
        nlink: u32::try_from(md.nlink()).unwrap_or(u32::MAX),
        size: md.size(),
    }
}

/// Whether a file can be taken as unchanged from its previous snapshot: same size,
/// mtime, ctime and inode.
pub fn unchanged(old: &Meta, new: &Meta) -> bool {
    old.size == new.size && old.mtime == new.mtime && old.ctime == new.ctime && old.ino == new.ino
}

/// Kinds of entries that are not regular files, directories or symlinks.
pub enum Special {
    /// A named pipe.
    Fifo,
    /// A socket.
    Socket,
    /// A character device.
    CharDev(u64),
    /// A block device.
    BlockDev(u64),
}

/// Classifies a special file, if `md` describes one.
pub fn special(md: &Metadata) -> Option<Special> {
    let t = md.file_type();
    if t.is_fifo() {
        Some(Special::Fifo)
    } else if t.is_socket() {
        Some(Special::Socket)
    } else if t.is_char_device() {
        Some(Special::CharDev(md.rdev()))
    } else if t.is_block_device() {
        Some(Special::BlockDev(md.rdev()))
    } else {
        None
    }
}

/// Opens a regular file for reading without following a symlink and without blocking
/// should it have been replaced by a FIFO; checks it is still the inode `expected`
/// describes.
pub fn open_regular(path: &Path, expected: &Metadata) -> io::Result<File> {
    let flags =
        rustix::fs::OFlags::NOFOLLOW | rustix::fs::OFlags::NONBLOCK | rustix::fs::OFlags::NOCTTY;
    let f = File::options()
        .read(true)
        .custom_flags(flags.bits() as i32)
        .open(path)?;
    let md = f.metadata()?;
    if !md.is_file() || md.ino() != expected.ino() || md.dev() != expected.dev() {
        return Err(io::Error::other(
            "replaced by another file while being backed up",
        ));
    }
    Ok(f)
}

/// An entry of a directory listing.
pub struct Entry {
    /// Its name.
    pub name: OsString,
    /// Its path (the directory's path joined with the name).
    pub path: PathBuf,
    /// Its metadata, a symlink not followed.
    pub md: io::Result<Metadata>,
}

/// The entries of a directory, sorted by name bytes, but those `skip` rejects (given
/// path and name; they are not looked at). Each entry's metadata is read relative to
/// the open directory: the kernel resolves one name, not the whole path again.
pub fn read_dir_sorted(dir: &Path, skip: impl Fn(&Path, &OsStr) -> bool) -> io::Result<Vec<Entry>> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir)? {
        let e = e?;
        let (name, path) = (e.file_name(), e.path());
        if !skip(&path, &name) {
            let md = e.metadata();
            out.push(Entry { name, path, md });
        }
    }
    out.sort_by(|a, b| a.name.as_bytes().cmp(b.name.as_bytes()));
    Ok(out)
}

/// `--exclude` patterns: a pattern with a `/` matches the whole absolute path, one
/// without matches the file name (as restic and rsync do).
#[derive(Default)]
pub struct Excludes {
    by_path: Option<GlobSet>,
    by_name: Option<GlobSet>,
}

impl Excludes {
    /// Compiles the patterns; a bad pattern is an error naming it.
    pub fn new(patterns: &[String]) -> Result<Excludes> {
        let mut path = GlobSetBuilder::new();
        let mut name = GlobSetBuilder::new();
        let (mut np, mut nn) = (0, 0);
        for p in patterns {
            let g = Glob::new(p).map_err(|source| Usage::Exclude {
                pattern: Some(p.clone()),
                source,
            })?;
            if p.contains('/') {
                path.add(g);
                np += 1;
            } else {
                name.add(g);
                nn += 1;
            }
        }
        let build = |b: GlobSetBuilder, n: usize| -> Result<Option<GlobSet>> {
            if n == 0 {
                return Ok(None);
            }
            b.build().map(Some).map_err(|source| {
                Error::from(Usage::Exclude {
                    pattern: None,
                    source,
                })
            })
        };
        Ok(Excludes {
            by_path: build(path, np)?,
            by_name: build(name, nn)?,
        })
    }

    /// Whether the entry at `path`, named `name`, is excluded.
    pub fn excluded(&self, path: &Path, name: &OsStr) -> bool {
        self.by_name.as_ref().is_some_and(|g| g.is_match(name))
            || self.by_path.as_ref().is_some_and(|g| g.is_match(path))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn excludes_by_name_and_path() {
        let x = Excludes::new(&["*.tmp".into(), "/srv/cache/**".into()]).unwrap();
        assert!(x.excluded(Path::new("/a/b.tmp"), OsStr::new("b.tmp")));
        assert!(x.excluded(Path::new("/srv/cache/x/y"), OsStr::new("y")));
        assert!(!x.excluded(Path::new("/srv/data/y"), OsStr::new("y")));
        assert!(Excludes::new(&["a[".into()]).is_err());
    }

    #[test]
    fn a_bad_exclude_pattern_is_a_usage_error_naming_it() {
        let e = Excludes::new(&["*.tmp".into(), "a[".into()]).err().unwrap();
        assert!(
            matches!(&e, Error::Usage(Usage::Exclude { pattern: Some(p), .. }) if p == "a["),
            "{e}"
        );
        assert!(e.to_string().starts_with("--exclude \"a[\": "), "{e}");
    }

    #[test]
    fn open_regular_refuses_fifo_and_symlink() {
        let d = tempfile::tempdir().unwrap();
        let fifo = d.path().join("fifo");
        rustix::fs::mknodat(
            rustix::fs::CWD,
            &fifo,
            rustix::fs::FileType::Fifo,
            rustix::fs::Mode::from_raw_mode(0o600),
            0,
        )
        .unwrap();
        let md = std::fs::symlink_metadata(&fifo).unwrap();
        assert!(open_regular(&fifo, &md).is_err());
        let file = d.path().join("f");
        std::fs::write(&file, b"x").unwrap();
        let link = d.path().join("l");
        std::os::unix::fs::symlink(&file, &link).unwrap();
        assert!(open_regular(&link, &std::fs::metadata(&file).unwrap()).is_err());
        assert!(open_regular(&file, &std::fs::metadata(&file).unwrap()).is_ok());
    }
}
