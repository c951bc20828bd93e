//! Export of a snapshot's NextGIS Web part as the `.ngwbackup` that `nextgisweb backup`
//! writes (see `ngwbackup-format.md`): a ZIP with every member stored, or the same tree
//! as a directory (`--no-zip`).
//!
//! The ZIP is streamed (data descriptors, ZIP64 where needed), so memory is constant
//! and the output may be a pipe. Blob members get the `{id:08d}` names of their line in
//! `$index`, resolved to the blobs the snapshot keeps by uuid.

use std::io::{Seek, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use chrono::{DateTime, Datelike, Timelike, Utc};

use crate::error::{Error, IoContext, Refusal, Result};
use crate::format::snapshot::Snapshot;
use crate::format::tree::Node;
use crate::ops::ngw_part::{file_content, NgwPart, COMPONENTS};
use crate::repo::Repository;

/// What an export wrote.
#[derive(Clone, Copy, Debug, Default)]
pub struct ExportStats {
    /// Files written (directories not counted).
    pub files: u64,
    /// Their bytes.
    pub bytes: u64,
}

/// Where members go: a ZIP stream or a directory.
trait Sink {
    fn dir(&mut self, name: &str, mtime: DateTime<Utc>) -> Result<()>;
    fn file(
        &mut self,
        name: &str,
        mtime: DateTime<Utc>,
        size: u64,
        write: &mut dyn FnMut(&mut dyn Write) -> Result<u64>,
    ) -> Result<()>;
}

pub(crate) fn zip_err(e: zip::result::ZipError) -> Error {
    match e {
        zip::result::ZipError::Io(io) => Error::Io {
            path: PathBuf::from("<archive output>"),
            source: io,
        },
        other => Error::internal("writing the ZIP", Some(Box::new(other))),
    }
}

#[allow(
    clippy::cast_possible_truncation,
    reason = "calendar fields, the year clamped"
)]
pub(crate) fn dos_time(t: DateTime<Utc>) -> zip::DateTime {
    // In local time, as Python's zipfile and Info-ZIP write and read it. ZIP times
    // start in 1980; earlier mtimes are clamped as Python's zipfile does.
    let t = t
        .max(DateTime::from_timestamp(315_532_800, 0).expect("valid"))
        .with_timezone(&chrono::Local);
    zip::DateTime::from_date_and_time(
        t.year().min(2107) as u16,
        t.month() as u8,
        t.day() as u8,
        t.hour() as u8,
        t.minute() as u8,
        t.second() as u8,
    )
    .unwrap_or_default()
}

/// A ZIP being written: into a file, whose local headers get each member's sizes and
/// CRC once it is written, as Python's zipfile writes them; or onto a stream, where
/// they follow each member (data descriptors).
struct ZipSink<W: Write + Seek> {
    zip: zip::ZipWriter<W>,
}

impl<W: Write + Seek> Sink for ZipSink<W> {
    fn dir(&mut self, name: &str, mtime: DateTime<Utc>) -> Result<()> {
        let opts = zip::write::SimpleFileOptions::default()
            .compression_method(zip::CompressionMethod::Stored)
            .last_modified_time(dos_time(mtime))
            .unix_permissions(0o755);
        self.zip.add_directory(name, opts).map_err(zip_err)
    }

    fn file(
        &mut self,
        name: &str,
        mtime: DateTime<Utc>,
        size: u64,
        write: &mut dyn FnMut(&mut dyn Write) -> Result<u64>,
    ) -> Result<()> {
        let opts = zip::write::SimpleFileOptions::default()
            .compression_method(zip::CompressionMethod::Stored)
            .last_modified_time(dos_time(mtime))
            .unix_permissions(0o644)
            .large_file(size >= u64::from(u32::MAX));
        self.zip.start_file(name, opts).map_err(zip_err)?;
        write(&mut self.zip)?;
        Ok(())
    }
}

struct DirSink {
    root: PathBuf,
}

impl Sink for DirSink {
    fn dir(&mut self, name: &str, _mtime: DateTime<Utc>) -> Result<()> {
        let p = self.root.join(name);
        std::fs::create_dir_all(&p).at(&p)
    }

    fn file(
        &mut self,
        name: &str,
        _mtime: DateTime<Utc>,
        _size: u64,
        write: &mut dyn FnMut(&mut dyn Write) -> Result<u64>,
    ) -> Result<()> {
        let p = self.root.join(name);
        let mut f = std::io::BufWriter::new(std::fs::File::create_new(&p).at(&p)?);
        write(&mut f)?;
        f.flush().at(&p)?;
        Ok(())
    }
}

fn mtime_of(n: &Node) -> DateTime<Utc> {
    DateTime::from_timestamp(n.meta.mtime.sec, n.meta.mtime.nsec).unwrap_or_default()
}

/// Writes one member and counts it; errors name the member.
fn put(
    sink: &mut dyn Sink,
    stats: &mut ExportStats,
    name: &str,
    mtime: DateTime<Utc>,
    size: u64,
    write: &mut dyn FnMut(&mut dyn Write) -> Result<u64>,
) -> Result<()> {
    sink.file(name, mtime, size, write)
        .map_err(|e| Error::Entry {
            path: name.to_string(),
            source: Box::new(e),
        })?;
    stats.files += 1;
    stats.bytes += size;
    Ok(())
}

/// Writes the members of `snap`'s NGW part to `sink`.
fn write_members(repo: &Repository, snap: &Snapshot, sink: &mut dyn Sink) -> Result<ExportStats> {
    let part = NgwPart::open(repo, snap)?;
    let mut stats = ExportStats::default();
    let put_node = |sink: &mut dyn Sink, stats: &mut ExportStats, name: &str, node: &Node| {
        let content = file_content(name, node)?;
        put(
            sink,
            stats,
            name,
            mtime_of(node),
            node.meta.size,
            &mut |w| repo.write_content(content, w),
        )
    };
    sink.dir("./", snap.time)?;
    sink.dir("postgres/", snap.time)?;
    for n in &part.postgres().nodes {
        put_node(
            sink,
            &mut stats,
            &format!("postgres/{}", String::from_utf8_lossy(&n.name)),
            n,
        )?;
    }
    sink.dir("component/", snap.time)?;
    for component in COMPONENTS {
        // Read once: written as the $index member, then parsed for the blob members.
        let Some((index, text)) = part.index(component)? else {
            continue;
        };
        sink.dir(&format!("component/{component}/"), snap.time)?;
        put(
            sink,
            &mut stats,
            &format!("component/{component}/$index"),
            mtime_of(&index),
            index.meta.size,
            &mut |w| {
                w.write_all(&text).at("<export output>")?;
                Ok(text.len() as u64)
            },
        )?;
        part.for_each_item(component, &text, &mut |id, _, node| {
            put_node(
                sink,
                &mut stats,
                &format!("component/{component}/{id:08}"),
                &node,
            )
        })?;
    }
    Ok(stats)
}

/// Streams the `.ngwbackup` ZIP of `snap` to `out`.
pub fn export_zip(repo: &Repository, snap: &Snapshot, out: &mut dyn Write) -> Result<ExportStats> {
    let _lock = repo.read_lock("export")?;
    let (stats, zip) = write_zip(repo, snap, zip::ZipWriter::new_stream(out))?;
    zip.into_inner().flush().at("<export output>")?;
    Ok(stats)
}

/// The members of `snap`'s NGW part written into `zip`, finished.
fn write_zip<W: Write + Seek>(
    repo: &Repository,
    snap: &Snapshot,
    zip: zip::ZipWriter<W>,
) -> Result<(ExportStats, W)> {
    let mut sink = ZipSink { zip };
    let stats = write_members(repo, snap, &mut sink)?;
    Ok((stats, sink.zip.finish().map_err(zip_err)?))
}

/// Refuses an existing `dest`; returns the directory its temporary sibling goes in.
fn new_sibling_dir(dest: &Path) -> Result<&Path> {
    if dest.exists() {
        return Err(Refusal::OutputExists {
            path: dest.to_path_buf(),
        }
        .into());
    }
    Ok(dest
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new(".")))
}

/// Writes the new file `dest` through `write`: to a temporary name in the same
/// directory, made durable and renamed only when complete, so `dest` is never a
/// partial file; an existing `dest` is refused.
pub fn write_new_file<T>(
    dest: &Path,
    write: impl FnOnce(&mut std::io::BufWriter<&std::fs::File>) -> Result<T>,
) -> Result<T> {
    let dir = new_sibling_dir(dest)?;
    let tmp = tempfile::Builder::new()
        .prefix(".snap-output-")
        .tempfile_in(dir)
        .at(dir)?;
    let mut w = std::io::BufWriter::with_capacity(1 << 20, tmp.as_file());
    let done = write(&mut w)?;
    w.into_inner()
        .map_err(std::io::IntoInnerError::into_error)
        .at(tmp.path())?;
    // The mode a new file gets (the temporary one was made 0600), so that whoever
    // serves backups from the directory (NGW's web process) can read it.
    let mode = 0o666 & !umask();
    std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(mode)).at(tmp.path())?;
    tmp.as_file().sync_all().at(tmp.path())?;
    tmp.persist_noclobber(dest).map_err(|e| e.error).at(dest)?;
    Ok(done)
}

/// This process's umask, as `/proc/self/status` tells it (reading it by `umask(2)`
/// would change it for a moment, under the other threads' feet); 022 if it cannot.
fn umask() -> u32 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Umask:"))
                .and_then(|v| u32::from_str_radix(v.trim(), 8).ok())
        })
        .unwrap_or(0o022)
}

/// Writes the `.ngwbackup` ZIP of `snap` to the new file `dest` (see
/// [`write_new_file`]).
pub fn export_zip_file(repo: &Repository, snap: &Snapshot, dest: &Path) -> Result<ExportStats> {
    let _lock = repo.read_lock("export")?;
    write_new_file(dest, |w| {
        let (stats, w) = write_zip(repo, snap, zip::ZipWriter::new(w))?;
        w.flush().at(dest)?;
        Ok(stats)
    })
}

/// Writes the same tree as a new directory `dest` (`nextgisweb backup --no-zip`), built
/// under a temporary name and renamed when complete.
pub fn export_dir(repo: &Repository, snap: &Snapshot, dest: &Path) -> Result<ExportStats> {
    let _lock = repo.read_lock("export")?;
    let dir = new_sibling_dir(dest)?;
    let tmp = tempfile::Builder::new()
        .prefix(".snap-export-")
        .tempdir_in(dir)
        .at(dir)?;
    let stats = write_members(
        repo,
        snap,
        &mut DirSink {
            root: tmp.path().to_path_buf(),
        },
    )?;
    let path = tmp.keep();
    if let Err(e) = std::fs::rename(&path, dest) {
        let _ = std::fs::remove_dir_all(&path);
        return Err(e).at(dest);
    }
    Ok(stats)
}

/// The time an export's file name carries when `name` matches `pattern` (NGW's
/// `backup.filename`, a strftime pattern), as seconds since the epoch.
fn name_time(name: &str, pattern: &str) -> Option<i64> {
    use chrono::format::{parse, Parsed, StrftimeItems};
    let mut p = Parsed::new();
    parse(&mut p, name, StrftimeItems::new(pattern)).ok()?;
    if let Some(t) = p.timestamp() {
        return Some(t);
    }
    let date = chrono::NaiveDate::from_ymd_opt(p.year()?, p.month()?, p.day().unwrap_or(1))?;
    let hour = p.hour_div_12().unwrap_or(0) * 12 + p.hour_mod_12().unwrap_or(0);
    let time = date.and_hms_opt(hour, p.minute().unwrap_or(0), p.second().unwrap_or(0))?;
    Some(time.and_utc().timestamp())
}

/// Keeps the exports in `dir` at the `keep` newest (`export --keep`): of the regular
/// files whose names match `pattern`, `written` is kept, and the newest others by the
/// time in their names up to `keep` in all; the rest are removed, durably. Anything
/// else in the folder is left alone. Returns the files removed.
pub fn keep_newest(dir: &Path, pattern: &str, keep: usize, written: &Path) -> Result<Vec<PathBuf>> {
    let mut found = Vec::new();
    for e in std::fs::read_dir(dir).at(dir)? {
        let e = e.at(dir)?;
        let path = e.path();
        let Some(t) = e.file_name().to_str().and_then(|n| name_time(n, pattern)) else {
            continue;
        };
        // By name: `dir` is `written`'s own folder, however either path is spelt.
        let is_written = Some(e.file_name().as_os_str()) == written.file_name();
        if !is_written && e.file_type().at(&path)?.is_file() {
            found.push((t, path));
        }
    }
    found.sort_by(|a, b| b.cmp(a));
    let remove: Vec<PathBuf> = found
        .into_iter()
        .skip(keep.saturating_sub(1))
        .map(|(_, p)| p)
        .collect();
    for p in &remove {
        std::fs::remove_file(p).at(p)?;
    }
    if !remove.is_empty() {
        std::fs::File::open(dir)
            .and_then(|d| d.sync_all())
            .at(dir)?;
    }
    Ok(remove)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn export_names_carry_their_time() {
        let p = "nextgisweb-%Y%m%d-%H%M%S.ngwbackup";
        assert_eq!(
            name_time("nextgisweb-20261121-020000.ngwbackup", p),
            Some(1_795_226_400)
        );
        assert_eq!(
            name_time("nextgisweb-20261121-020000.ngwbackup.part", p),
            None
        );
        assert_eq!(name_time("notes.txt", p), None);
        assert_eq!(
            name_time("2026-11-21.zip", "%Y-%m-%d.zip"),
            Some(1_795_219_200)
        );
    }

    #[test]
    fn keep_removes_only_older_matching_files_and_never_the_one_written() {
        let d = tempfile::tempdir().unwrap();
        let p = "%Y%m%d-%H%M%S.ngwbackup";
        for n in [
            "20261101-020000.ngwbackup",
            "20261102-020000.ngwbackup",
            "20261103-020000.ngwbackup",
            "20261104-020000.ngwbackup",
            "notes.txt",
            "20261101-020000.ngwbackup.bak",
        ] {
            std::fs::write(d.path().join(n), n).unwrap();
        }
        std::fs::create_dir(d.path().join("20261020-020000.ngwbackup")).unwrap();
        // The one written is an old snapshot's: kept all the same.
        let written = d.path().join("20261101-020000.ngwbackup");
        let removed = keep_newest(d.path(), p, 2, &written).unwrap();
        let mut names: Vec<String> = std::fs::read_dir(d.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        assert_eq!(
            names,
            [
                "20261020-020000.ngwbackup",
                "20261101-020000.ngwbackup",
                "20261101-020000.ngwbackup.bak",
                "20261104-020000.ngwbackup",
                "notes.txt"
            ]
        );
        assert_eq!(removed.len(), 2);
    }
}
