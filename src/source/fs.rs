//! Reading the file system: metadata, safe opening, sorted listings, and what a
//! backup leaves out ([`Selection`]: exclude patterns, `CACHEDIR.TAG` and marker files,
//! sizes, mount points). A path named on the command line is always taken; the
//! selection applies to what is found below it.

use std::ffi::{OsStr, OsString};
use std::fs::{File, Metadata};
use std::io::{self, Read};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use globset::{Glob, GlobSet, GlobSetBuilder};

use crate::error::{Error, Result, Usage};
use crate::format::tree::{shown, shown_glob, shown_name, Meta, Timestamp};

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
/// without matches the file name (as restic and rsync do). A pattern with a `/` that
/// starts with neither `/` nor `*` is relative to the working directory, as the paths
/// named are: `--exclude proj/target` leaves out `$PWD/proj/target`.
#[derive(Default)]
pub struct Excludes {
    by_path: Option<GlobSet>,
    by_name: Option<GlobSet>,
}

impl Excludes {
    /// Compiles the patterns; a bad pattern is an error naming it. A path pattern (one
    /// with a `/`) that starts with neither `/` nor `*` is relative: joined to `base`
    /// when given (backup: the working directory, as the paths are), else matched at
    /// any depth (restore: paths inside a snapshot have no working directory). Names
    /// are matched as [`shown_name`] writes them, so a pattern names a byte that is
    /// not text as `\xHH`, as `ls` shows it.
    pub fn new(patterns: &[String], base: Option<&Path>) -> Result<Excludes> {
        let mut path = GlobSetBuilder::new();
        let mut name = GlobSetBuilder::new();
        let (mut np, mut nn) = (0, 0);
        for p in patterns {
            let bad = |source| Usage::Exclude {
                pattern: Some(p.clone()),
                source,
            };
            let glob = shown_glob(p);
            if p.contains('/') {
                path.add(Glob::new(&anchored(&glob, base)?).map_err(bad)?);
                np += 1;
            } else {
                name.add(Glob::new(&glob).map_err(bad)?);
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
        self.by_name
            .as_ref()
            .is_some_and(|g| g.is_match(&*shown(name.as_bytes())))
            || self
                .by_path
                .as_ref()
                .is_some_and(|g| g.is_match(&*shown(path.as_os_str().as_bytes())))
    }
}

/// A path pattern made absolute: one starting with `/` or `*` as it is, any other
/// joined to `base` (its glob characters escaped) and `.`/`..` resolved, or without a
/// base put below `**/`.
fn anchored(pattern: &str, base: Option<&Path>) -> Result<String> {
    if pattern.starts_with('/') || pattern.starts_with('*') {
        return Ok(pattern.to_string());
    }
    let Some(base) = base else {
        return Ok(format!("**/{}", normalize(Path::new(pattern)).display()));
    };
    let text = base.to_str().ok_or_else(|| Usage::SourcePathNotUtf8 {
        path: base.to_path_buf(),
    })?;
    let joined = normalize(&Path::new(&globset::escape(text)).join(pattern));
    Ok(joined.to_string_lossy().into_owned())
}

/// Resolves `.` and `..` lexically (as restic does), so `../../x` is stored where it is.
pub fn normalize(p: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            std::path::Component::ParentDir => {
                out.pop();
            }
            std::path::Component::CurDir => {}
            other => out.push(other),
        }
    }
    out
}

/// The lines of an `--exclude-file` or `--files-from` list that say something: each
/// trimmed, blank lines and `#` comments left out.
pub fn list_lines(text: &str) -> impl Iterator<Item = &str> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
}

/// Reads the `--exclude-file` `path` (see [`list_lines`]), a line's bytes that are not
/// text as `\xHH` ([`shown_name`]), as [`Excludes`] matches them.
pub fn read_patterns(path: &Path) -> Result<Vec<String>> {
    let bytes = std::fs::read(path).map_err(|source| Usage::ListFile {
        option: "--exclude-file",
        path: path.to_path_buf(),
        source,
    })?;
    Ok(bytes
        .split(|b| *b == b'\n')
        .map(<[u8]>::trim_ascii)
        .filter(|l| !l.is_empty() && !l.starts_with(b"#"))
        .map(shown_name)
        .collect())
}

/// Reads the list file `path` given to `option` (see [`list_lines`]); an error names
/// both.
pub fn read_list(option: &'static str, path: &Path) -> Result<Vec<String>> {
    let text = std::fs::read_to_string(path).map_err(|source| Usage::ListFile {
        option,
        path: path.to_path_buf(),
        source,
    })?;
    Ok(list_lines(&text).map(str::to_string).collect())
}

/// The first bytes of a valid cache directory tag (<https://bford.info/cachedir/>).
pub const CACHEDIR_SIGNATURE: &[u8] = b"Signature: 8a477f597d28d172789f06886806bc55";

/// The name of a cache directory tag.
const CACHEDIR_TAG: &str = "CACHEDIR.TAG";

/// Whether `e` is a regular file that starts with [`CACHEDIR_SIGNATURE`].
fn is_cache_tag(e: &Entry) -> bool {
    let Ok(md) = &e.md else { return false };
    let mut head = Vec::with_capacity(CACHEDIR_SIGNATURE.len());
    md.is_file()
        && open_regular(&e.path, md)
            .and_then(|f| {
                f.take(CACHEDIR_SIGNATURE.len() as u64)
                    .read_to_end(&mut head)
            })
            .is_ok()
        && head == CACHEDIR_SIGNATURE
}

/// What a backup leaves out below the paths it names. Entries left out are not
/// warnings: they are not looked at beyond what deciding takes.
#[derive(Default)]
pub struct Selection {
    /// `--exclude` patterns.
    pub excludes: Excludes,
    /// Do not cross mount points: a directory of another file system is kept empty
    /// (so the mount point is restored), anything else there is left out.
    pub one_file_system: bool,
    /// A directory holding a valid `CACHEDIR.TAG` keeps only that file.
    pub exclude_caches: bool,
    /// A directory holding an entry of one of these names keeps only that entry.
    pub if_present: Vec<OsString>,
    /// Regular files larger than this many bytes are left out.
    pub larger_than: Option<u64>,
}

impl Selection {
    /// The entries of directory `dir`, itself on device `dev`, sorted by name (see
    /// [`read_dir_sorted`]) without those left out.
    pub fn list(&self, dir: &Path, dev: u64) -> io::Result<Vec<Entry>> {
        let mut entries = read_dir_sorted(dir, |p, n| self.excludes.excluded(p, n))?;
        let tag = |e: &Entry| {
            self.if_present.contains(&e.name)
                || (self.exclude_caches && e.name == CACHEDIR_TAG && is_cache_tag(e))
        };
        if self.exclude_caches || !self.if_present.is_empty() {
            // Each entry judged once: a cache tag is a file read.
            let tagged: Vec<bool> = entries.iter().map(tag).collect();
            if tagged.contains(&true) {
                let mut tagged = tagged.into_iter();
                entries.retain(|_| tagged.next().unwrap_or(false));
            }
        }
        entries.retain(|e| {
            let Ok(md) = &e.md else { return true };
            let large = self
                .larger_than
                .is_some_and(|l| md.is_file() && md.len() > l);
            let elsewhere = self.one_file_system && !md.is_dir() && md.dev() != dev;
            !(large || elsewhere)
        });
        Ok(entries)
    }

    /// Whether an entry (metadata `md`) of a directory on device `dev` is a mount
    /// point not to be entered.
    pub fn mount_point(&self, md: &Metadata, dev: u64) -> bool {
        self.one_file_system && md.is_dir() && md.dev() != dev
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn excludes_by_name_and_path() {
        let x = Excludes::new(&["*.tmp".into(), "/srv/cache/**".into()], None).unwrap();
        assert!(x.excluded(Path::new("/a/b.tmp"), OsStr::new("b.tmp")));
        assert!(x.excluded(Path::new("/srv/cache/x/y"), OsStr::new("y")));
        assert!(!x.excluded(Path::new("/srv/data/y"), OsStr::new("y")));
        assert!(Excludes::new(&["a[".into()], None).is_err());
    }

    #[test]
    fn a_relative_path_pattern_is_anchored_at_the_working_directory() {
        let cwd = Path::new("/home/u/proj");
        let x = Excludes::new(
            &["build/*.o".into(), "./a/../c/**".into(), "*/tmp".into()],
            Some(cwd),
        )
        .unwrap();
        let at = |p: &str| x.excluded(&cwd.join(p), OsStr::new("n"));
        assert!(at("build/x.o") && at("c/d/e") && at("z/tmp"));
        assert!(!at("a/c/d") && !at("other/build/x.o"));
        assert!(!x.excluded(Path::new("/build/x.o"), OsStr::new("x.o")));
    }

    #[test]
    fn without_a_base_a_relative_path_pattern_matches_at_any_depth() {
        let x = Excludes::new(&["build/*.o".into()], None).unwrap();
        assert!(x.excluded(Path::new("/srv/app/build/x.o"), OsStr::new("x.o")));
        assert!(!x.excluded(Path::new("/srv/app/build/x.c"), OsStr::new("x.c")));
    }

    #[test]
    fn list_lines_skip_blanks_and_comments() {
        let got: Vec<&str> = list_lines("# c\n\n  *.log \n\t\n/a b\n").collect();
        assert_eq!(got, ["*.log", "/a b"]);
    }

    #[test]
    fn selection_keeps_tags_and_drops_large_files() {
        let d = tempfile::tempdir().unwrap();
        let dev = std::fs::metadata(d.path()).unwrap().dev();
        std::fs::write(d.path().join("big"), [0u8; 101]).unwrap();
        std::fs::write(d.path().join("small"), [0u8; 100]).unwrap();
        let names = |s: &Selection| -> Vec<String> {
            s.list(d.path(), dev)
                .unwrap()
                .into_iter()
                .map(|e| e.name.to_string_lossy().into_owned())
                .collect()
        };
        let sel = Selection {
            larger_than: Some(100),
            exclude_caches: true,
            ..Default::default()
        };
        assert_eq!(names(&sel), ["small"]);
        // A tag with only part of the signature is no tag.
        std::fs::write(d.path().join("CACHEDIR.TAG"), &CACHEDIR_SIGNATURE[..42]).unwrap();
        assert_eq!(names(&sel), ["CACHEDIR.TAG", "small"]);
        std::fs::write(d.path().join("CACHEDIR.TAG"), CACHEDIR_SIGNATURE).unwrap();
        assert_eq!(names(&sel), ["CACHEDIR.TAG"]);
        let marker = Selection {
            if_present: vec!["small".into()],
            ..Default::default()
        };
        assert_eq!(names(&marker), ["small"]);
        assert_eq!(
            names(&Selection::default()),
            ["CACHEDIR.TAG", "big", "small"]
        );
    }

    #[test]
    fn a_bad_exclude_pattern_is_a_usage_error_naming_it() {
        let e = Excludes::new(&["*.tmp".into(), "a[".into()], None)
            .err()
            .unwrap();
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
