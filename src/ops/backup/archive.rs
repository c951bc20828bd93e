//! Import of an existing `.ngwbackup` archive, stored under `ngw/` exactly as an
//! instance backup is, so that unchanged members dedup against earlier snapshots and
//! `snap export` gives every member back byte-identical.
//!
//! Each member's payload is chunked on its own (ZIP headers never break dedup), and
//! blob members are placed by the uuid their `$index` line names, never by their
//! shifting `{id:08d}` names. The archive is checked before anything is stored:
//! members escaping the tree, symlinks, duplicate names, absurd compression ratios,
//! unknown members and the legacy pre-3.3 format are refused; CRCs are checked as each
//! member is read, and a mismatch fails the import before its snapshot is written.

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::io::{Read, Seek};
use std::path::Path;

use chrono::{DateTime, NaiveDate, TimeZone, Utc};
use zip::ZipArchive;

use super::vdir::VDir;
use super::Run;
use crate::error::{Error, IoContext, Result, SourceError};
use crate::format::chunker::Profile;
use crate::format::tree::{is_safe_name, Timestamp};
use crate::source::ngw::{
    blob_snapshot_path, font_snapshot_path, parse_index_line, snapshot_path, IndexItem,
};

/// A member may expand at most this many times its compressed size...
const MAX_RATIO: u64 = 1000;
/// ...once it is larger than this.
const RATIO_FLOOR: u64 = 16 << 20;

fn refuse(path: &Path, why: impl std::fmt::Display) -> Error {
    SourceError::Archive {
        path: path.to_path_buf(),
        why: why.to_string(),
    }
    .into()
}

/// The time in an archive's name (`...YYYYmmdd-HHMMSS...`, as NGW's default
/// `backup.filename` writes it, UTC), if it has one.
pub fn time_from_name(name: &str) -> Option<DateTime<Utc>> {
    let b = name.as_bytes();
    (0..b.len().saturating_sub(14)).find_map(|i| {
        let s = std::str::from_utf8(&b[i..i + 15]).ok()?;
        let ok = s.bytes().enumerate().all(|(j, c)| {
            if j == 8 {
                c == b'-'
            } else {
                c.is_ascii_digit()
            }
        });
        if !ok {
            return None;
        }
        let num = |r: std::ops::Range<usize>| s[r].parse::<u32>().ok();
        let date = NaiveDate::from_ymd_opt(num(0..4)? as i32, num(4..6)?, num(6..8)?)?;
        Some(
            date.and_hms_opt(num(9..11)?, num(11..13)?, num(13..15)?)?
                .and_utc(),
        )
    })
}

/// One file member of a checked archive: its index and name in the ZIP, and where and
/// how it is stored in the snapshot.
struct Placed {
    index: usize,
    name: String,
    at: Vec<Vec<u8>>,
    profile: Profile,
}

/// Imports the archive at `path` into `root`.
pub(super) fn import(run: &Run<'_>, path: &Path, root: &mut VDir, now: Timestamp) -> Result<()> {
    let file = File::open(path).at(path)?;
    let mut zip = open_zip(path, file)?;
    for p in plan(path, &mut zip)? {
        let mut m = zip
            .by_index(p.index)
            .map_err(|e| refuse(path, format!("{}: {e}", p.name)))?;
        let mtime = m
            .last_modified()
            .and_then(|t| {
                NaiveDate::from_ymd_opt(t.year().into(), t.month().into(), t.day().into())?
                    .and_hms_opt(t.hour().into(), t.minute().into(), t.second().into())
            })
            // Local time, as Python's zipfile (and snap's export) writes it.
            .and_then(|t| chrono::Local.from_local_datetime(&t).earliest())
            .map(|t| Timestamp {
                sec: t.timestamp(),
                nsec: 0,
            })
            .unwrap_or(now);
        let size_hint = m.size();
        let (content, size) = run
            .ingest(&mut m, run.repo.params(p.profile), Some(size_hint), None)?
            .map_err(|e| refuse(path, format!("{}: {e}", p.name)))?;
        run.put_stream(root, &p.at, content, size, 0o100644, mtime)?;
    }
    Ok(())
}

/// Checks an archive's bytes as [`import`] does (every member name and size, the
/// `$index` files, every member's CRC) without storing anything; returns the bytes of
/// file members read. The entry point of the `ngw_archive` fuzz target.
#[doc(hidden)]
pub fn check_archive(path: &Path, bytes: &[u8]) -> Result<u64> {
    let mut zip = open_zip(path, std::io::Cursor::new(bytes))?;
    let mut total = 0;
    for p in plan(path, &mut zip)? {
        let mut m = zip
            .by_index(p.index)
            .map_err(|e| refuse(path, format!("{}: {e}", p.name)))?;
        total += std::io::copy(&mut m, &mut std::io::sink())
            .map_err(|e| refuse(path, format!("{}: {e}", p.name)))?;
    }
    Ok(total)
}

/// Refuses a directory (an unpacked `nextgisweb backup --no-zip`) by name.
pub(super) fn not_a_directory(path: &Path) -> Result<()> {
    if path.is_dir() {
        return Err(refuse(
            path,
            "it is a directory; snap imports .ngwbackup ZIP archives: make one of an unpacked backup with `cd DIR && zip -r -0 ../NAME.ngwbackup .`",
        ));
    }
    Ok(())
}

fn open_zip<R: Read + Seek>(path: &Path, r: R) -> Result<ZipArchive<R>> {
    ZipArchive::new(r).map_err(|e| {
        refuse(
            path,
            format!("not a readable ZIP archive ({e}); is it complete?"),
        )
    })
}

/// Checks every member's name and size and reads the `$index` files: where each file
/// member goes, before anything is stored.
fn plan<R: Read + Seek>(path: &Path, zip: &mut ZipArchive<R>) -> Result<Vec<Placed>> {
    if zip.has_duplicate_names() {
        return Err(refuse(path, "a member name appears twice"));
    }
    // Pass 1: names and sizes.
    let mut seen = HashSet::new();
    let mut files: Vec<(usize, String)> = Vec::new();
    for i in 0..zip.len() {
        let m = zip
            .by_index_raw(i)
            .map_err(|e| refuse(path, format!("member {i}: {e}")))?;
        let raw = m
            .name()
            .map_err(|e| refuse(path, format!("member {i}: {e}")))?
            .to_string();
        if m.enclosed_name().is_none() || raw.starts_with('/') || raw.split('/').any(|c| c == "..")
        {
            return Err(refuse(
                path,
                format!("member {raw:?} would land outside the backup tree"),
            ));
        }
        if m.is_symlink() {
            return Err(refuse(path, format!("member {raw:?} is a symlink")));
        }
        let name = raw.strip_prefix("./").unwrap_or(&raw).to_string();
        // Every component becomes a tree entry name: one that a tree cannot hold
        // (`postgres/.`, `a//b`) is refused here, by name, not at the end of the run.
        let path_part = if m.is_dir() {
            name.strip_suffix('/').unwrap_or(&name)
        } else {
            &name
        };
        // `./`, NGW's entry for the root of the backup, names no tree entry.
        let root = m.is_dir() && path_part.is_empty();
        if !root && !path_part.split('/').all(|c| is_safe_name(c.as_bytes())) {
            return Err(refuse(
                path,
                format!("member {raw:?} has an empty, . or NUL path component"),
            ));
        }
        if !seen.insert(name.clone()) {
            return Err(refuse(path, format!("member {name:?} appears twice")));
        }
        if name == "db.sqlite" {
            return Err(refuse(
                path,
                "this is a NextGIS Web backup in the legacy format (before 3.3.0, db.sqlite at the root), which snap does not read",
            ));
        }
        if m.size() > RATIO_FLOOR && m.size() / m.compressed_size().max(1) > MAX_RATIO {
            return Err(refuse(
                path,
                format!(
                    "member {name:?} expands {} bytes to {} (a ZIP bomb?)",
                    m.compressed_size(),
                    m.size()
                ),
            ));
        }
        if !m.is_dir() {
            files.push((i, name));
        } else if !matches!(
            path_part.split('/').collect::<Vec<_>>()[..],
            ["" | "postgres" | "component"] | ["component", _]
        ) {
            return Err(refuse(path, format!("unexpected member {raw:?}")));
        }
    }
    let Some(toc) = files.iter().find(|(_, n)| n == "postgres/toc.dat") else {
        return Err(refuse(
            path,
            "no postgres/toc.dat: not a NextGIS Web backup",
        ));
    };
    let mut head = Vec::new();
    zip.by_index(toc.0)
        .map_err(|e| refuse(path, format!("postgres/toc.dat: {e}")))?
        .take(5)
        .read_to_end(&mut head)
        .map_err(|e| refuse(path, format!("postgres/toc.dat: {e}")))?;
    if head != b"PGDMP" {
        return Err(refuse(
            path,
            "postgres/toc.dat is not a pg_dump TOC (it does not begin with PGDMP)",
        ));
    }

    // The $index files say which blob each numbered member is.
    let mut blobs: HashMap<String, Vec<Vec<u8>>> = HashMap::new();
    let mut places: HashSet<Vec<Vec<u8>>> = HashSet::new();
    for (i, name) in &files {
        let Some(component) = name
            .strip_prefix("component/")
            .and_then(|r| r.strip_suffix("/$index"))
        else {
            continue;
        };
        let mut text = String::new();
        let mut m = zip
            .by_index(*i)
            .map_err(|e| refuse(path, format!("{name}: {e}")))?;
        m.read_to_string(&mut text)
            .map_err(|e| refuse(path, format!("{name}: {e}")))?;
        for line in text.lines() {
            let (id, item) = parse_index_line(line).map_err(|e| SourceError::ArchiveIndex {
                path: path.to_path_buf(),
                source: Box::new(e),
            })?;
            let at = match item {
                IndexItem::FileObj(o) => blob_snapshot_path(&o.component, &o.uuid),
                IndexItem::Font(f) => font_snapshot_path(&f),
            };
            let member = format!("component/{component}/{id:08}");
            if !places.insert(at.clone()) || blobs.insert(member.clone(), at).is_some() {
                return Err(refuse(
                    path,
                    format!("{name} lists one item twice (line {line:?})"),
                ));
            }
            if !seen.contains(&member) {
                return Err(refuse(
                    path,
                    format!("{name} lists item {id}, but the archive has no member {member:?}: it is incomplete"),
                ));
            }
        }
    }

    // Pass 2: where every member goes (its CRC is checked as it is read).
    let mut placed = Vec::with_capacity(files.len());
    for (index, name) in files {
        let (at, profile) = match name.split('/').collect::<Vec<_>>()[..] {
            ["postgres", f] => (snapshot_path(&["postgres", f]), Profile::Dump),
            ["component", c, "$index"] => {
                (snapshot_path(&["component", c, "$index"]), Profile::Dump)
            }
            ["component", _, _] => match blobs.get(&name) {
                Some(at) => (at.clone(), Profile::Files),
                None => {
                    return Err(refuse(
                        path,
                        format!("member {name:?} is listed in no $index"),
                    ))
                }
            },
            _ => return Err(refuse(path, format!("unexpected member {name:?}"))),
        };
        placed.push(Placed {
            index,
            name,
            at,
            profile,
        });
    }
    Ok(placed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_in_archive_names() {
        let t = |s: &str| time_from_name(s).map(|t| t.to_rfc3339());
        assert_eq!(
            t("20261121-020000.ngwbackup").as_deref(),
            Some("2026-11-21T02:00:00+00:00")
        );
        assert_eq!(
            t("nextgisweb-20260102-235959.ngwbackup").as_deref(),
            Some("2026-01-02T23:59:59+00:00")
        );
        assert_eq!(t("backup.ngwbackup"), None);
        assert_eq!(t("20261399-020000.ngwbackup"), None);
    }
}
