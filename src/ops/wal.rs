//! `snap wal`: PostgreSQL's `archive_command` and `restore_command`, and the check that
//! the archive holds every segment its base backups need.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write as _;
use std::path::Path;

use serde::Serialize;

use crate::error::{Error, IoContext, Result, Usage};
use crate::format::id::SnapshotId;
use crate::format::snapshot::{Snapshot, Source};
use crate::repo::wal::{Pushed, WalArchive, WalFile, MAX_RAW};
use crate::source::pg::parse_lsn;

/// The segment size assumed where no base backup tells it: PostgreSQL's default.
pub const DEFAULT_SEG_SIZE: u64 = 16 << 20;

/// The WAL file PostgreSQL names by `path`'s last component.
fn wal_name(name: &str) -> Result<WalFile> {
    WalFile::parse(name).ok_or_else(|| {
        Usage::WalName {
            name: name.to_string(),
        }
        .into()
    })
}

/// `archive_command`: archives the file at `path` (PostgreSQL's `%p`), durably before
/// it returns.
pub fn push(wal: &WalArchive<'_>, path: &Path) -> Result<(WalFile, Pushed)> {
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or_default();
    let file = wal_name(name)?;
    let len = std::fs::metadata(path).at(path)?.len();
    if len > MAX_RAW {
        return Err(Error::corrupt(
            "WAL file",
            path.display(),
            format!("is {len} bytes long, more than any WAL segment"),
        ));
    }
    let raw = std::fs::read(path).at(path)?;
    let wrong = match file {
        WalFile::Segment { .. } | WalFile::Partial { .. } => not_a_segment(&file, &raw),
        WalFile::History { tli } => parse_history(tli, &raw).err(),
        WalFile::BackupHistory { .. } => (!raw.starts_with(b"START WAL LOCATION:"))
            .then(|| "it does not begin with START WAL LOCATION".to_string()),
    };
    if let Some(why) = wrong {
        return Err(Error::corrupt(
            "WAL file",
            path.display(),
            format!("is no WAL file of that name: {why}; PostgreSQL hands archive_command the files it writes, so this is another one (or damaged), and recovery would stop at it; nothing was archived"),
        ));
    }
    Ok((file, wal.push(&file, &raw)?))
}

/// The first page's header of a WAL segment (PostgreSQL's `XLogLongPageHeaderData`, in
/// the host's byte order, as the server writes it): magic u16, info u16, timeline
/// u32, page address u64, remaining length u32, padding, system identifier u64,
/// segment size u32, block size u32.
const LONG_HEADER: usize = 40;
/// The info bit of a segment's first page: its header is the long one.
const XLP_LONG_HEADER: u16 = 0x0002;

/// Why `raw` is not the segment `file` names: the first page must have the long
/// header, give the file's own length as the segment size, and the address where the
/// name puts the segment (a segment pushed under another's name, a truncated one, or
/// any other file fails). `None` when it is one.
fn not_a_segment(file: &WalFile, raw: &[u8]) -> Option<String> {
    if raw.len() < LONG_HEADER {
        return Some(format!("{} bytes, shorter than a page header", raw.len()));
    }
    let u16_at = |i: usize| u16::from_ne_bytes(raw[i..i + 2].try_into().expect("2 bytes"));
    let u32_at = |i: usize| u32::from_ne_bytes(raw[i..i + 4].try_into().expect("4 bytes"));
    let u64_at = |i: usize| u64::from_ne_bytes(raw[i..i + 8].try_into().expect("8 bytes"));
    if u16_at(2) & XLP_LONG_HEADER == 0 {
        return Some("its first page lacks the long header every segment starts with".into());
    }
    let seg_size = u64::from(u32_at(32));
    if seg_size != raw.len() as u64 {
        return Some(format!(
            "its header gives a segment size of {seg_size} bytes, the file is {}",
            raw.len()
        ));
    }
    let named = file.segno(seg_size).expect("a segment has a number") * seg_size;
    let at = u64_at(8);
    (at != named).then(|| {
        format!(
            "its header places it at {:X}/{:08X}, its name at {:X}/{:08X}",
            at >> 32,
            at & 0xFFFF_FFFF,
            named >> 32,
            named & 0xFFFF_FFFF
        )
    })
}

/// `restore_command`: writes archived file `name` (`%f`) to `dest` (`%p`), whole or not
/// at all (through a temporary file renamed into place). `false` when the archive
/// lacks it, which PostgreSQL expects at the end of the archive.
pub fn fetch(wal: &WalArchive<'_>, name: &str, dest: &Path) -> Result<bool> {
    let file = wal_name(name)?;
    let Some(raw) = wal.fetch(&file)? else {
        return Ok(false);
    };
    let dir = match dest.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let mut tmp = tempfile::Builder::new()
        .prefix(".snap-wal-")
        .tempfile_in(dir)
        .at(dir)?;
    tmp.write_all(&raw).at(tmp.path())?;
    tmp.persist(dest).map_err(|e| e.error).at(dest)?;
    Ok(true)
}

/// A run of segments the archive lacks.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Gap {
    /// The first missing segment.
    pub first: String,
    /// The last missing segment.
    pub last: String,
    /// How many are missing.
    pub segments: u64,
}

/// What the archive holds for one base backup.
#[derive(Clone, Debug, Serialize)]
pub struct BaseReport {
    pub snapshot: SnapshotId,
    pub time: chrono::DateTime<chrono::Utc>,
    /// The segment its recovery starts from.
    pub start: String,
    /// The last segment it needs to become consistent.
    pub consistent_at: String,
    /// The timelines its recovery follows to the newest one, in order.
    pub timelines: Vec<u32>,
    /// The newest segment it reaches without a gap.
    pub reaches: Option<String>,
    /// Segments missing between its start and the newest archived segment.
    pub gaps: Vec<Gap>,
    /// Whether every segment up to `consistent_at` is archived.
    pub consistent: bool,
}

/// `snap wal check`: the archive's continuity from each base backup.
#[derive(Clone, Debug, Serialize)]
pub struct WalReport {
    /// Segment files archived (full ones).
    pub segments: usize,
    /// Timelines with archived segments.
    pub timelines: Vec<u32>,
    /// The newest segment of the newest timeline.
    pub newest: Option<String>,
    /// Per base backup, oldest first.
    pub bases: Vec<BaseReport>,
    /// Without base backups: runs of segments missing inside each timeline.
    pub gaps: Vec<Gap>,
    /// The history files of timelines after the first with archived segments that the
    /// archive lacks: without one, recovery cannot follow its timeline, and stops at
    /// the end of the one before.
    pub missing_history: Vec<String>,
    /// History files recovery would fail on (PostgreSQL stops with a syntax error),
    /// each with why.
    pub unreadable_history: Vec<String>,
}

impl WalReport {
    /// Whether every base backup can be recovered to the newest segment, and archived
    /// WAL has a base backup to replay it from.
    pub fn ok(&self) -> bool {
        !self.without_base()
            && self.gaps.is_empty()
            && self.missing_history.is_empty()
            && self.unreadable_history.is_empty()
            && self.bases.iter().all(|b| b.gaps.is_empty() && b.consistent)
    }

    /// Whether WAL is archived but no base backup is kept: nothing can be recovered.
    pub fn without_base(&self) -> bool {
        self.segments > 0 && self.bases.is_empty()
    }
}

/// The base backup a snapshot holds, if any: its source record.
pub fn base_of(snap: &Snapshot) -> Option<&Source> {
    snap.sources
        .iter()
        .find(|s| matches!(s, Source::PgBase { .. }))
}

/// What the archive holds, by timeline: segment numbers, and the switch points the
/// history files record.
pub struct Archived {
    seg_size: u64,
    segments: BTreeMap<u32, BTreeSet<u64>>,
    /// For each timeline with a history file: its ancestors, oldest first, each with
    /// the location where it ended.
    histories: BTreeMap<u32, Vec<(u32, u64)>>,
    /// History files PostgreSQL could not read, and why.
    unreadable_history: Vec<String>,
}

impl Archived {
    /// Reads the archive's listing and history files; segment numbers assume
    /// `seg_size`.
    pub fn read(wal: &WalArchive<'_>, seg_size: u64) -> Result<Archived> {
        let mut segments: BTreeMap<u32, BTreeSet<u64>> = BTreeMap::new();
        let mut histories = BTreeMap::new();
        let mut unreadable_history = Vec::new();
        for f in wal.list()? {
            match f {
                WalFile::Segment { tli, .. } => {
                    let segno = f.segno(seg_size).expect("a segment");
                    segments.entry(tli).or_default().insert(segno);
                }
                WalFile::History { tli } => {
                    if let Some(raw) = wal.fetch(&f)? {
                        match parse_history(tli, &raw) {
                            Ok(h) => {
                                histories.insert(tli, h);
                            }
                            Err(why) => unreadable_history.push(format!("{f}: {why}")),
                        }
                    }
                }
                WalFile::Partial { .. } | WalFile::BackupHistory { .. } => {}
            }
        }
        Ok(Archived {
            seg_size,
            segments,
            histories,
            unreadable_history,
        })
    }

    fn newest_tli(&self) -> Option<u32> {
        self.segments
            .keys()
            .chain(self.histories.keys())
            .max()
            .copied()
    }

    /// The timelines recovery from timeline `tli` at segment `from` follows to the
    /// newest timeline (only `tli` when the newest does not descend from it), each
    /// with the segment range it is read for.
    fn path_from(&self, tli: u32, from: u64) -> Vec<(u32, u64, Option<u64>)> {
        let newest = self.newest_tli().unwrap_or(tli);
        let ancestors = self.histories.get(&newest).cloned().unwrap_or_default();
        let Some(i) = ancestors.iter().position(|(t, _)| *t == tli) else {
            return vec![(tli, from, None)];
        };
        let mut path = Vec::new();
        let mut start = from;
        for (t, end) in &ancestors[i..] {
            // The segment holding the switch point is read from the new timeline.
            let switch_seg = end / self.seg_size;
            path.push((*t, start, Some(switch_seg.saturating_sub(1))));
            start = switch_seg.max(start);
        }
        path.push((newest, start, None));
        path
    }

    fn name(&self, tli: u32, segno: u64) -> String {
        WalFile::segment(tli, segno, self.seg_size).to_string()
    }

    /// Gaps in timeline `tli` between segments `from` and `to` (its newest when
    /// `None`), and the last segment reached before the first gap.
    fn gaps(&self, tli: u32, from: u64, to: Option<u64>) -> (Vec<Gap>, Option<u64>) {
        let empty = BTreeSet::new();
        let have = self.segments.get(&tli).unwrap_or(&empty);
        let Some(to) = to.or_else(|| have.iter().next_back().copied()) else {
            return (
                vec![Gap {
                    first: self.name(tli, from),
                    last: self.name(tli, from),
                    segments: 1,
                }],
                None,
            );
        };
        if from > to {
            return (Vec::new(), None);
        }
        let mut gaps = Vec::new();
        let mut reached = None;
        let mut next = from;
        for &s in have.range(from..=to) {
            if s > next {
                gaps.push(Gap {
                    first: self.name(tli, next),
                    last: self.name(tli, s - 1),
                    segments: s - next,
                });
            }
            if gaps.is_empty() {
                reached = Some(s);
            }
            next = s + 1;
        }
        if next <= to {
            gaps.push(Gap {
                first: self.name(tli, next),
                last: self.name(tli, to),
                segments: to - next + 1,
            });
        }
        (gaps, reached)
    }
}

/// Timeline `tli`'s history file (`parentTLI <tab> switchpoint <tab> reason` lines) as
/// PostgreSQL reads it: every line but blank ones and comments must name an earlier
/// timeline and a location, and there is at least one; else why not.
pub(crate) fn parse_history(tli: u32, raw: &[u8]) -> std::result::Result<Vec<(u32, u64)>, String> {
    let text = std::str::from_utf8(raw).map_err(|_| "it is not text".to_string())?;
    let mut out = Vec::new();
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let mut f = line.split_whitespace();
        let parent = f.next().and_then(|t| t.parse::<u32>().ok());
        let at = f.next().and_then(parse_lsn);
        match (parent, at) {
            (Some(p), Some(at)) if p < tli => out.push((p, at)),
            _ => return Err(format!("{line:?} is no earlier timeline and location")),
        }
    }
    if out.is_empty() {
        return Err("it names no earlier timeline".into());
    }
    Ok(out)
}

/// The segment size of the base backups among `snaps` (the newest's), or the default.
pub fn seg_size(snaps: &[(SnapshotId, Snapshot)]) -> u64 {
    snaps
        .iter()
        .rev()
        .find_map(|(_, s)| match base_of(s) {
            Some(Source::PgBase {
                wal_segment_size, ..
            }) => Some(*wal_segment_size),
            _ => None,
        })
        .unwrap_or(DEFAULT_SEG_SIZE)
}

/// Checks the archive against the base backups among `snaps`.
pub fn check(wal: &WalArchive<'_>, snaps: &[(SnapshotId, Snapshot)]) -> Result<WalReport> {
    let seg_size = seg_size(snaps);
    let archived = Archived::read(wal, seg_size)?;
    let newest = archived.newest_tli().and_then(|t| {
        let s = archived.segments.get(&t)?.iter().next_back()?;
        Some(archived.name(t, *s))
    });
    let mut bases = Vec::new();
    for (id, snap) in snaps {
        let Some(Source::PgBase {
            timeline,
            start_lsn,
            stop_lsn,
            stop_timeline,
            ..
        }) = base_of(snap)
        else {
            continue;
        };
        let (Some(start), Some(stop)) = (parse_lsn(start_lsn), parse_lsn(stop_lsn)) else {
            continue;
        };
        let (start_seg, stop_seg) = (start / seg_size, stop / seg_size);
        let path = archived.path_from(*timeline, start_seg);
        let mut gaps = Vec::new();
        let mut reaches = None;
        let mut consistent = false;
        for &(tli, from, to) in &path {
            let (g, reached) = archived.gaps(tli, from, to);
            if gaps.is_empty() {
                if let Some(r) = reached {
                    reaches = Some(archived.name(tli, r));
                    if tli == *stop_timeline && r >= stop_seg {
                        consistent = true;
                    }
                }
            }
            gaps.extend(g);
        }
        bases.push(BaseReport {
            snapshot: *id,
            time: snap.time,
            start: archived.name(*timeline, start_seg),
            consistent_at: archived.name(*stop_timeline, stop_seg),
            timelines: path.iter().map(|p| p.0).collect(),
            reaches,
            gaps,
            consistent,
        });
    }
    let mut gaps = Vec::new();
    if bases.is_empty() {
        for (&tli, have) in &archived.segments {
            let first = *have.iter().next().expect("a timeline has segments");
            gaps.extend(archived.gaps(tli, first, None).0);
        }
    }
    let missing_history = archived
        .segments
        .keys()
        .filter(|&&t| t > 1 && !archived.histories.contains_key(&t))
        .map(|&tli| WalFile::History { tli }.to_string())
        .collect();
    Ok(WalReport {
        segments: archived.segments.values().map(BTreeSet::len).sum(),
        timelines: archived.segments.keys().copied().collect(),
        newest,
        bases,
        gaps,
        missing_history,
        unreadable_history: archived.unreadable_history,
    })
}

/// The archived files no base backup among `snaps` needs: segments (full, partial)
/// and backup history files before the start segment of the oldest base backup.
/// Nothing when `snaps` holds no base backup (WAL archived before the first one is
/// kept until there is one), and timeline history files never.
pub fn unneeded(wal: &WalArchive<'_>, snaps: &[(SnapshotId, Snapshot)]) -> Result<Vec<WalFile>> {
    let seg_size = seg_size(snaps);
    let oldest = snaps
        .iter()
        .filter_map(|(_, s)| match base_of(s) {
            Some(Source::PgBase { start_lsn, .. }) => parse_lsn(start_lsn),
            _ => None,
        })
        .min();
    let Some(oldest) = oldest else {
        return Ok(Vec::new());
    };
    let first = oldest / seg_size;
    Ok(wal
        .list()?
        .into_iter()
        .filter(|f| f.segno(seg_size).is_some_and(|n| n < first))
        .collect())
}

/// Copies to `dst` the archived files `src` has and `dst` lacks, each opened and
/// sealed again for `dst`; returns how many and their raw bytes. Files pushed while it
/// runs go with the next run.
pub fn copy(src: &WalArchive<'_>, dst: &WalArchive<'_>) -> Result<(u64, u64)> {
    let have: BTreeSet<WalFile> = dst.list()?.into_iter().collect();
    let (mut files, mut bytes) = (0, 0);
    for f in src.list()? {
        if have.contains(&f) {
            continue;
        }
        // Gone since the listing (prune): nothing to copy.
        let Some(raw) = src.fetch(&f)? else { continue };
        dst.push(&f, &raw)?;
        files += 1;
        bytes += raw.len() as u64;
    }
    Ok((files, bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A segment of `len` bytes named `name` as PostgreSQL writes one: its first page's
    /// long header, zeros after it.
    fn segment(name: &str, len: usize) -> Vec<u8> {
        let file = WalFile::parse(name).unwrap();
        let mut b = vec![0u8; len];
        b[0..2].copy_from_slice(&0xD10Du16.to_ne_bytes());
        b[2..4].copy_from_slice(&XLP_LONG_HEADER.to_ne_bytes());
        b[4..8].copy_from_slice(&file.tli().to_ne_bytes());
        let at = file.segno(len as u64).unwrap() * len as u64;
        b[8..16].copy_from_slice(&at.to_ne_bytes());
        b[24..32].copy_from_slice(&7_000_000_000_000_000_001u64.to_ne_bytes());
        b[32..36].copy_from_slice(&u32::try_from(len).unwrap().to_ne_bytes());
        b[36..40].copy_from_slice(&8192u32.to_ne_bytes());
        b
    }

    #[test]
    fn history_files_are_read_as_postgresql_reads_them() {
        let real =
            b"1\t0/3000148\tno recovery target specified\n\n2\t0/5000000\tat restore point \"x\"\n";
        assert_eq!(
            parse_history(3, real),
            Ok(vec![(1, 0x300_0148), (2, 0x500_0000)])
        );
        assert!(parse_history(2, b"junk\n").unwrap_err().contains("junk"));
        assert!(parse_history(2, b"# only a comment\n").is_err());
        assert!(parse_history(2, b"2\t0/3000148\tits own timeline\n").is_err());
        assert!(parse_history(2, &[0xff, 0xfe]).is_err());
    }

    #[test]
    fn only_the_segment_a_name_gives_is_pushed() {
        let name = "000000010000000200000003";
        let file = WalFile::parse(name).unwrap();
        let good = segment(name, 1 << 20);
        assert_eq!(not_a_segment(&file, &good), None);
        let other = segment("000000010000000200000004", 1 << 20);
        assert!(not_a_segment(&file, &other)
            .unwrap()
            .contains("its name at 2/00300000"));
        assert!(not_a_segment(&file, &good[..1 << 19])
            .unwrap()
            .contains("segment size"));
        let mut short_header = good.clone();
        short_header[2] = 0;
        assert!(not_a_segment(&file, &short_header)
            .unwrap()
            .contains("long header"));
        assert!(not_a_segment(&file, b"junk").unwrap().contains("shorter"));
    }

    fn archive_with(dir: &Path, names: &[&str]) -> crate::store::Local {
        std::fs::create_dir(dir.join("tmp")).unwrap();
        let store = crate::store::Local::new(dir.to_path_buf());
        let wal = WalArchive::new(&store, None, 1);
        for n in names {
            let f = WalFile::parse(n).unwrap();
            let body: &[u8] = if n.ends_with(".history") {
                b"1\t0/5000000\tno recovery target specified\n"
            } else {
                n.as_bytes()
            };
            wal.push(&f, body).unwrap();
        }
        store
    }

    #[test]
    fn gaps_and_timeline_switches_are_found() {
        let dir = tempfile::tempdir().unwrap();
        let store = archive_with(
            dir.path(),
            &[
                "000000010000000000000002",
                "000000010000000000000003",
                "000000010000000000000004",
                "00000002.history",
                "000000020000000000000005",
                "000000020000000000000006",
                "000000020000000000000008",
            ],
        );
        let wal = WalArchive::new(&store, None, 1);
        let a = Archived::read(&wal, DEFAULT_SEG_SIZE).unwrap();
        let path = a.path_from(1, 2);
        assert_eq!(path, vec![(1, 2, Some(4)), (2, 5, None)]);
        let (gaps, reached) = a.gaps(2, 5, None);
        assert_eq!(
            gaps,
            vec![Gap {
                first: "000000020000000000000007".into(),
                last: "000000020000000000000007".into(),
                segments: 1
            }]
        );
        assert_eq!(reached, Some(6));
        let (gaps, reached) = a.gaps(1, 2, Some(4));
        assert!(gaps.is_empty());
        assert_eq!(reached, Some(4));
        // A backup on a timeline the newest does not descend from stays on it.
        assert_eq!(a.path_from(3, 9), vec![(3, 9, None)]);
    }
}
