//! The WAL archive: the files PostgreSQL's `archive_command` hands over (WAL segments,
//! partial segments, timeline history and backup history files), each stored whole and
//! compressed under `wal/`, beside the packs (see format-spec.md, WAL archive).
//!
//! It is append-only and takes no lock: a push only ever creates a file that is not
//! there, so it never waits behind a prune or a check, and prune deletes only files
//! that no kept base backup needs (older than the oldest one's start).

use std::fmt;

use crate::error::{Error, Refusal, Result};
use crate::format::crypto::MasterKey;
use crate::format::id::Id;
use crate::store::Store;

/// The directory of the WAL archive in a repository.
pub const WAL_DIR: &str = "wal";
/// First bytes of an archived file (before sealing).
const MAGIC: &[u8; 8] = b"SNAPWAL\x01";
/// Header: magic, raw length (u64 LE), BLAKE3 of the raw bytes; the zstd frame follows.
const HEADER: usize = 8 + 8 + 32;
/// The largest file accepted: PostgreSQL's largest WAL segment size is 1 GiB.
pub const MAX_RAW: u64 = 1 << 30;

/// A file of PostgreSQL's WAL archive, by its name.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum WalFile {
    /// A WAL segment, `TTTTTTTTXXXXXXXXYYYYYYYY`: timeline, then the segment number
    /// split in two (see [`WalFile::segno`]).
    Segment { tli: u32, log: u32, seg: u32 },
    /// The last, partial segment of a timeline a promotion ended (`….partial`).
    Partial { tli: u32, log: u32, seg: u32 },
    /// A backup history file (`…SEGMENT.OFFSET.backup`).
    BackupHistory {
        tli: u32,
        log: u32,
        seg: u32,
        offset: u32,
    },
    /// A timeline history file (`TTTTTTTT.history`).
    History { tli: u32 },
}

fn hex8(s: &str) -> Option<u32> {
    (s.len() == 8
        && s.bytes()
            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_lowercase()))
    .then(|| u32::from_str_radix(s, 16).ok())
    .flatten()
}

fn segment(s: &str) -> Option<(u32, u32, u32)> {
    if s.len() != 24 {
        return None;
    }
    Some((hex8(&s[..8])?, hex8(&s[8..16])?, hex8(&s[16..])?))
}

impl WalFile {
    /// Parses a name as PostgreSQL writes it (upper-case hex); `None` for anything else.
    pub fn parse(name: &str) -> Option<WalFile> {
        if let Some(tli) = name.strip_suffix(".history") {
            return Some(WalFile::History { tli: hex8(tli)? });
        }
        if let Some(s) = name.strip_suffix(".partial") {
            let (tli, log, seg) = segment(s)?;
            return Some(WalFile::Partial { tli, log, seg });
        }
        if let Some(s) = name.strip_suffix(".backup") {
            let (s, offset) = s.split_once('.')?;
            let (tli, log, seg) = segment(s)?;
            return Some(WalFile::BackupHistory {
                tli,
                log,
                seg,
                offset: hex8(offset)?,
            });
        }
        let (tli, log, seg) = segment(name)?;
        Some(WalFile::Segment { tli, log, seg })
    }

    /// A segment's name from its timeline and number, for segments of `seg_size` bytes.
    pub fn segment(tli: u32, segno: u64, seg_size: u64) -> WalFile {
        let per_log = segs_per_log(seg_size);
        WalFile::Segment {
            tli,
            // An LSN has 64 bits: the number over the segments per log is below 2^32.
            log: u32::try_from(segno / per_log).unwrap_or(u32::MAX),
            seg: u32::try_from(segno % per_log).expect("below the segments per log"),
        }
    }

    /// The timeline it belongs to.
    pub fn tli(&self) -> u32 {
        match *self {
            WalFile::Segment { tli, .. }
            | WalFile::Partial { tli, .. }
            | WalFile::BackupHistory { tli, .. }
            | WalFile::History { tli } => tli,
        }
    }

    /// The number of the segment a file is (full or partial) or belongs to (a backup
    /// history file), for segments of `seg_size` bytes; `None` for a timeline history
    /// file.
    pub fn segno(&self, seg_size: u64) -> Option<u64> {
        match *self {
            WalFile::Segment { log, seg, .. }
            | WalFile::Partial { log, seg, .. }
            | WalFile::BackupHistory { log, seg, .. } => {
                Some(u64::from(log) * segs_per_log(seg_size) + u64::from(seg))
            }
            WalFile::History { .. } => None,
        }
    }

    /// Its path in the repository: segments grouped by timeline and high half of their
    /// number (`wal/0000000100000000/000000010000000000000002`), history files in
    /// `wal/` itself.
    pub fn path(&self) -> String {
        match self {
            WalFile::History { .. } => format!("{WAL_DIR}/{self}"),
            _ => format!("{WAL_DIR}/{}/{self}", &self.to_string()[..16]),
        }
    }
}

/// Segments per "log file" (the middle eight hex digits of a name).
fn segs_per_log(seg_size: u64) -> u64 {
    0x1_0000_0000 / seg_size.max(1)
}

impl fmt::Display for WalFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            WalFile::Segment { tli, log, seg } => write!(f, "{tli:08X}{log:08X}{seg:08X}"),
            WalFile::Partial { tli, log, seg } => {
                write!(f, "{tli:08X}{log:08X}{seg:08X}.partial")
            }
            WalFile::BackupHistory {
                tli,
                log,
                seg,
                offset,
            } => write!(f, "{tli:08X}{log:08X}{seg:08X}.{offset:08X}.backup"),
            WalFile::History { tli } => write!(f, "{tli:08X}.history"),
        }
    }
}

/// What a push did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pushed {
    /// The file is now stored, durably.
    Stored,
    /// The archive held it already, with the same bytes.
    AlreadyThere,
}

/// The WAL archive of a repository.
pub struct WalArchive<'a> {
    store: &'a dyn Store,
    key: Option<&'a MasterKey>,
    level: i32,
}

impl<'a> WalArchive<'a> {
    /// The archive in `store`, sealed with `key` in an encrypted repository, compressed
    /// at zstd `level`.
    pub fn new(store: &'a dyn Store, key: Option<&'a MasterKey>, level: i32) -> WalArchive<'a> {
        WalArchive { store, key, level }
    }

    /// Stores `raw` as `file`, durably before it returns. A file already there with
    /// the same bytes is left alone; with other bytes the push is refused (PostgreSQL's
    /// archive contract: never overwrite). One the archive cannot read back (damaged)
    /// is replaced.
    pub fn push(&self, file: &WalFile, raw: &[u8]) -> Result<Pushed> {
        let path = file.path();
        match self.fetch(file) {
            Ok(Some(old)) if old == raw => return Ok(Pushed::AlreadyThere),
            Ok(Some(_)) => {
                return Err(Refusal::WalDiffers {
                    name: file.to_string(),
                    location: self.store.location(),
                }
                .into())
            }
            Ok(None) => {}
            Err(e @ Error::Corrupt { .. }) => log::warn!("{e}; replacing it"),
            Err(e) => return Err(e),
        }
        self.store.put(&path, &self.encode(file, raw)?)?;
        Ok(Pushed::Stored)
    }

    /// The bytes of `file`, checked, or `None` when the archive lacks it.
    pub fn fetch(&self, file: &WalFile) -> Result<Option<Vec<u8>>> {
        let stored = match self.store.read(&file.path(), MAX_RAW + 4096) {
            Ok(b) => b,
            Err(Error::NotFound { .. }) => return Ok(None),
            Err(e) => return Err(e),
        };
        let body = match self.key {
            Some(k) => k
                .open(&aad(file), &stored)
                .ok_or_else(|| corrupt(file, "fails authentication (altered or damaged)"))?,
            None => stored,
        };
        if body.len() < HEADER || &body[..8] != MAGIC {
            return Err(corrupt(file, "is not an archived WAL file"));
        }
        let len = u64::from_le_bytes(body[8..16].try_into().expect("8 bytes"));
        if len > MAX_RAW {
            return Err(corrupt(file, "records an impossible length"));
        }
        let cap = usize::try_from(len).map_err(|_| corrupt(file, "is longer than memory"))?;
        let raw = zstd::bulk::decompress(&body[HEADER..], cap)
            .map_err(|e| corrupt(file, &format!("does not decompress ({e})")))?;
        if raw.len() as u64 != len || Id::hash(&raw).0[..] != body[16..HEADER] {
            return Err(corrupt(file, "does not match its checksum"));
        }
        Ok(Some(raw))
    }

    /// Whether the archive holds `file` (not reading it).
    pub fn contains(&self, file: &WalFile) -> Result<bool> {
        Ok(self.store.size(&file.path())?.is_some())
    }

    /// Every file of the archive, sorted; names that are not WAL files are skipped
    /// (temporary files of writers among them).
    pub fn list(&self) -> Result<Vec<WalFile>> {
        Ok(self.listing()?.into_iter().map(|(f, _)| f).collect())
    }

    /// [`WalArchive::list`] with each file's modification time, where the store tells.
    pub fn listing(&self) -> Result<Vec<(WalFile, Option<std::time::SystemTime>)>> {
        let mut files: Vec<(WalFile, Option<std::time::SystemTime>)> = self
            .store
            .list(WAL_DIR)?
            .iter()
            .filter_map(|e| {
                let name = e.path.rsplit('/').next()?;
                let f = WalFile::parse(name).filter(|f| f.path() == e.path)?;
                Some((f, e.modified))
            })
            .collect();
        files.sort();
        Ok(files)
    }

    /// Deletes `files` from the archive.
    pub fn delete(&self, files: &[WalFile]) -> Result<()> {
        let paths: Vec<String> = files.iter().map(WalFile::path).collect();
        self.store.delete_all(&paths)
    }

    fn encode(&self, file: &WalFile, raw: &[u8]) -> Result<Vec<u8>> {
        let mut body = Vec::with_capacity(HEADER + raw.len() / 4);
        body.extend_from_slice(MAGIC);
        body.extend_from_slice(&(raw.len() as u64).to_le_bytes());
        body.extend_from_slice(&Id::hash(raw).0);
        let z = zstd::bulk::compress(raw, self.level)
            .map_err(|e| Error::internal("zstd compression failed", Some(e.into())))?;
        body.extend_from_slice(&z);
        match self.key {
            Some(k) => k.seal(&aad(file), &body),
            None => Ok(body),
        }
    }
}

/// What a sealed file is bound to: its name, so that one cannot stand in for another.
fn aad(file: &WalFile) -> Vec<u8> {
    format!("snap wal {file}").into_bytes()
}

fn corrupt(file: &WalFile, detail: &str) -> Error {
    Error::corrupt("archived WAL file", file.path(), detail)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_parse_print_and_place() {
        for (name, path) in [
            (
                "000000010000000000000002",
                "wal/0000000100000000/000000010000000000000002",
            ),
            (
                "0000000200000001000000FF.partial",
                "wal/0000000200000001/0000000200000001000000FF.partial",
            ),
            (
                "000000010000000000000002.00000028.backup",
                "wal/0000000100000000/000000010000000000000002.00000028.backup",
            ),
            ("00000002.history", "wal/00000002.history"),
        ] {
            let f = WalFile::parse(name).unwrap_or_else(|| panic!("{name}"));
            assert_eq!((f.to_string().as_str(), f.path().as_str()), (name, path));
        }
        for bad in [
            "00000001000000000000000",
            "000000010000000000000002x",
            "000000010000000000000002.history",
            "0000000g0000000000000002",
            "000000010000000000000a02",
            "../00000002.history",
            "",
        ] {
            assert_eq!(WalFile::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn segment_numbers_follow_the_segment_size() {
        let mib16 = 16 << 20;
        let f = WalFile::parse("0000000100000001000000FF").unwrap();
        assert_eq!(f.segno(mib16), Some(0x1FF));
        assert_eq!(
            WalFile::segment(1, 0x200, mib16).to_string(),
            "000000010000000200000000"
        );
        // 64 MiB segments: 64 a log.
        assert_eq!(
            WalFile::segment(3, 65, 64 << 20).to_string(),
            "000000030000000100000001"
        );
    }

    #[test]
    fn push_fetch_duplicate_and_conflict() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("tmp")).unwrap();
        let store = crate::store::Local::new(dir.path().to_path_buf());
        let key = MasterKey::generate().unwrap();
        for key in [None, Some(&key)] {
            let wal = WalArchive::new(&store, key, 3);
            let f = WalFile::parse("000000010000000000000007").unwrap();
            let raw: Vec<u8> = (0..1u32 << 20)
                .map(|i| u8::try_from(i % 251).unwrap())
                .collect();
            let _ = wal.delete(&[f]);
            assert_eq!(wal.fetch(&f).unwrap(), None);
            assert_eq!(wal.push(&f, &raw).unwrap(), Pushed::Stored);
            assert_eq!(wal.push(&f, &raw).unwrap(), Pushed::AlreadyThere);
            let mut other = raw.clone();
            other[100] ^= 1;
            let e = wal.push(&f, &other).unwrap_err().to_string();
            assert!(e.contains("000000010000000000000007"), "{e}");
            assert_eq!(wal.fetch(&f).unwrap().as_deref(), Some(&raw[..]));
            assert_eq!(wal.list().unwrap(), vec![f]);
            // A damaged file is reported by fetch, and replaced by the next push.
            let p = dir.path().join(f.path());
            let mut b = std::fs::read(&p).unwrap();
            let n = b.len();
            b[n - 5] ^= 0x40;
            std::fs::write(&p, &b).unwrap();
            assert!(wal.fetch(&f).is_err());
            assert_eq!(wal.push(&f, &raw).unwrap(), Pushed::Stored);
            assert_eq!(wal.fetch(&f).unwrap().as_deref(), Some(&raw[..]));
        }
    }
}
