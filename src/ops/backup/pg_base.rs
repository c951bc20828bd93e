//! `--pg-base DSN`: a physical base backup of a PostgreSQL cluster. `pg_basebackup`
//! streams the data directory as a tar archive (the server verifies page checksums
//! where they are enabled); each file goes into the snapshot under `pg/base/` as it
//! arrives, chunked on its own against its previous version ([`ChunkParams::PG_DATA`]),
//! so a second base backup of a mostly unchanged cluster stores about what changed. No WAL is taken
//! (`--wal-method=none`): the cluster's `archive_command` pushes it into the WAL
//! archive, which the backup checks is on, and which recovery reads.

use std::io::Read;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use super::vdir::{synthetic_meta, VDir};
use super::{stream_components, Run};
use crate::error::{Error, Result, SourceError};
use crate::format::chunker::ChunkParams;
use crate::format::snapshot::Source;
use crate::format::tree::{is_safe_name, Timestamp};
use crate::repo::wal::WalFile;
use crate::source::command::Running;
use crate::source::pg::{parse_lsn, Dsn};
use crate::source::tar_stream::{Kind, TarStream};

/// Where a base backup goes in the snapshot.
pub const BASE_DIR: &str = "pg/base";
/// The largest `backup_label` or `backup_manifest` read into memory.
const MAX_LABEL: u64 = 256 << 20;

/// What the server says about itself before the backup.
struct Cluster {
    archive_mode: String,
    seg_size: u64,
    system_identifier: String,
    server_version: u32,
}

/// How long a base backup waits, once the data is in, while the server fails to
/// archive the backup's last segment (`SNAP_PG_ARCHIVE_TIMEOUT`, as pgBackRest's
/// `archive-timeout`): pg_basebackup itself would wait for ever.
static ARCHIVE_TIMEOUT: OnceLock<Duration> = OnceLock::new();
/// [`ARCHIVE_TIMEOUT`] unless set.
const DEFAULT_ARCHIVE_TIMEOUT: Duration = Duration::from_secs(60);

/// Sets how long a base backup waits while archiving fails (once, at start).
pub fn set_archive_timeout(d: Duration) {
    let _ = ARCHIVE_TIMEOUT.set(d);
}

/// Watches the server's archiver while pg_basebackup (process `pid`, connected as
/// application `name`) runs, until `done`. The server sends the end of the backup
/// only once it has archived the backup's last segment, and while archive_command
/// fails it waits for ever: after [`ARCHIVE_TIMEOUT`] of failures the watch ends
/// pg_basebackup and the server's side of the backup (which would go on waiting), and
/// returns why. A signal to snap ends both too, so that the read of the output ends.
fn watch_archiving(dsn: &Dsn, pid: u32, name: &str, done: &AtomicBool) -> Option<Error> {
    let patience = ARCHIVE_TIMEOUT
        .get()
        .copied()
        .unwrap_or(DEFAULT_ARCHIVE_TIMEOUT);
    let stop = || {
        if let Some(p) = i32::try_from(pid)
            .ok()
            .and_then(rustix::process::Pid::from_raw)
        {
            let _ = rustix::process::kill_process(p, rustix::process::Signal::TERM);
        }
        let _ = dsn.maintenance().query(&format!(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = '{}'",
            name.replace('\'', "''")
        ));
    };
    let mut asked = Instant::now();
    let mut failing_since: Option<Instant> = None;
    while !done.load(Ordering::Acquire) {
        if crate::interrupt::requested() {
            stop();
            return None;
        }
        std::thread::sleep(Duration::from_millis(50));
        // A psql run each time: not too often during an hour-long backup.
        if asked.elapsed() < Duration::from_secs(5) {
            continue;
        }
        asked = Instant::now();
        // Failing: its last failure is newer than its last success. A query that fails
        // proves nothing: pg_basebackup will say what is wrong.
        let Ok(rows) = dsn.maintenance().query(
            "SELECT coalesce(last_failed_wal, ''),
                    coalesce(last_failed_time > coalesce(last_archived_time, '-infinity'), false)
               FROM pg_stat_archiver",
        ) else {
            continue;
        };
        let failing = rows
            .first()
            .and_then(|r| r.rsplit_once('|'))
            .filter(|(_, f)| f.trim() == "t")
            .map(|(wal, _)| wal.to_string());
        // Archiving that works, however slowly, is waited for.
        let Some(wal) = failing else {
            failing_since = None;
            continue;
        };
        let since = *failing_since.get_or_insert_with(Instant::now);
        if since.elapsed() >= patience {
            stop();
            return Some(refuse(
                dsn,
                format!(
                    "the server's archive_command has failed for {} s (last on WAL segment {wal}; the server's log says why), and the server finishes a base backup only once its last segment is archived; fix archive_command (snap --repo REPO wal push %p), then back up again (SNAP_PG_ARCHIVE_TIMEOUT sets the wait); nothing was recorded",
                    since.elapsed().as_secs()
                ),
            ));
        }
    }
    None
}

fn refuse(dsn: &Dsn, why: impl std::fmt::Display) -> Error {
    SourceError::PgBase {
        dsn: dsn.shown(),
        why: why.to_string(),
    }
    .into()
}

fn cluster(dsn: &Dsn) -> Result<Cluster> {
    let rows = dsn.maintenance().query(
        "SELECT current_setting('archive_mode'),
                (SELECT setting FROM pg_settings WHERE name = 'wal_segment_size'),
                (SELECT system_identifier FROM pg_control_system()),
                current_setting('server_version_num')",
    )?;
    let row = rows.first().map(|r| r.split('|').collect::<Vec<_>>());
    let Some([mode, seg, sysid, version]) = row.as_deref() else {
        return Err(refuse(
            dsn,
            format!("unexpected answer {rows:?} about the cluster"),
        ));
    };
    let num = |s: &str, what: &str| {
        s.trim()
            .parse::<u64>()
            .map_err(|_| refuse(dsn, format!("the server's {what} {s:?} is not a number")))
    };
    Ok(Cluster {
        archive_mode: mode.trim().to_string(),
        seg_size: num(seg, "wal_segment_size")?,
        system_identifier: sysid.trim().to_string(),
        server_version: u32::try_from(num(version, "server_version_num")?)
            .map_err(|_| refuse(dsn, "server_version_num is out of range"))?,
    })
}

/// Backs up the cluster of `dsn` into `root` under [`BASE_DIR`].
pub(super) fn pg_base(run: &Run<'_>, dsn: &Dsn, root: &mut VDir) -> Result<Source> {
    let c = cluster(dsn)?;
    if c.archive_mode == "off" {
        return Err(refuse(
            dsn,
            "the cluster does not archive its WAL (archive_mode = off), and a base backup cannot be recovered without it: set archive_mode = on and archive_command = 'snap --repo REPO wal push %p' in postgresql.conf and restart the server",
        ));
    }
    let at = stream_components(BASE_DIR)?;
    run.progress.entry(std::path::Path::new(BASE_DIR));
    let display = format!("pg_basebackup of {}", dsn.shown());
    // Named, so that the watch can end the server's side of this backup too.
    let name = format!("snap pg-base {}", std::process::id());
    let mut cmd = dsn
        .with_param("application_name", &name)
        .tool("pg_basebackup");
    cmd.args([
        "--pgdata=-",
        "--format=tar",
        "--wal-method=none",
        "--checkpoint=fast",
        "--no-password",
    ]);
    let mut child = Running::start(cmd, &display)?;
    let pid = child.id();
    let done = AtomicBool::new(false);
    let (read, gave_up) = std::thread::scope(|s| {
        let watch = s.spawn(|| watch_archiving(dsn, pid, &name, &done));
        let read = read_tar(run, child.stdout(), &at, root);
        done.store(true, Ordering::Release);
        (read, watch.join().unwrap_or(None))
    });
    let read = match gave_up {
        Some(e) => Err(e),
        None => crate::interrupt::check().and(read),
    };
    let label = match read {
        Ok(l) => l,
        Err(e) => {
            child.kill();
            return Err(e);
        }
    };
    let stderr = child.finish()?;
    if !stderr.trim().is_empty() {
        log::debug!("{display}: {}", stderr.trim_end());
    }
    let bad = |why: &str| refuse(dsn, why);
    let label_text = label
        .label
        .ok_or_else(|| bad("the backup has no backup_label"))?;
    let manifest = label.manifest.ok_or_else(|| {
        bad("the backup has no backup_manifest (pg_basebackup 13 or newer is needed)")
    })?;
    let field = |key: &str| {
        label_text
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .map(str::trim)
            .ok_or_else(|| bad(&format!("backup_label has no {key}")))
    };
    let start_lsn = field("START WAL LOCATION:")?
        .split_whitespace()
        .next()
        .unwrap_or_default()
        .to_string();
    let timeline: u32 = field("START TIMELINE:")?
        .parse()
        .map_err(|_| bad("backup_label's START TIMELINE is not a number"))?;
    let (stop_timeline, stop_lsn) = wal_end(&manifest)
        .ok_or_else(|| bad("backup_manifest has no WAL-Ranges entry with an End-LSN"))?;
    let lsn = |l: &str| parse_lsn(l).ok_or_else(|| bad(&format!("{l:?} is not a WAL location")));
    lsn(&start_lsn)?;
    let stop = lsn(&stop_lsn)?;
    // pg_basebackup returned once the server had archived the backup's last segment:
    // not finding it here means archive_command pushes somewhere else.
    let last = WalFile::segment(stop_timeline, stop / c.seg_size, c.seg_size);
    if !run.repo.wal().contains(&last)? {
        run.warn(format!(
            "the base backup's last WAL segment {last} is not in this repository's WAL archive: point the cluster's archive_command at it (snap --repo {} wal push %p), or the backup cannot be recovered",
            run.repo.location()
        ));
    }
    Ok(Source::PgBase {
        dsn: dsn.shown(),
        name: BASE_DIR.to_string(),
        timeline,
        start_lsn,
        stop_lsn,
        stop_timeline,
        wal_segment_size: c.seg_size,
        system_identifier: c.system_identifier,
        server_version: c.server_version,
    })
}

/// The label files of a base backup, kept while it is stored.
#[derive(Default)]
struct Label {
    label: Option<String>,
    manifest: Option<Vec<u8>>,
}

/// Stores every member of the tar stream `r` under `at`, returning the label files.
fn read_tar(
    run: &Run<'_>,
    r: &mut (dyn Read + Send),
    at: &[Vec<u8>],
    root: &mut VDir,
) -> Result<Label> {
    let archive_err = |why: String| -> Error { SourceError::PgBaseArchive { why }.into() };
    let mut label = Label::default();
    let mut tar = TarStream::new(r);
    while let Some(m) = tar.next_member().map_err(|e| archive_err(e.to_string()))? {
        let name = String::from_utf8_lossy(&m.name).into_owned();
        let mut comps = at.to_vec();
        for c in m
            .name
            .split(|&b| b == b'/')
            .filter(|c| !c.is_empty() && *c != b".")
        {
            if !is_safe_name(c) {
                return Err(archive_err(format!("member {name:?} is not a safe path")));
            }
            comps.push(c.to_vec());
        }
        let mtime = Timestamp {
            sec: m.mtime,
            nsec: 0,
        };
        match m.kind {
            Kind::Dir => {
                if comps.len() > at.len() {
                    root.set_dir_meta(&comps, synthetic_meta(0o040000 | m.mode, 0, mtime));
                }
            }
            Kind::File if name == "backup_label" || name == "backup_manifest" => {
                if m.size > MAX_LABEL {
                    return Err(archive_err(format!("{name} is {} bytes long", m.size)));
                }
                let mut b = Vec::new();
                tar.read_to_end(&mut b)
                    .map_err(|e| archive_err(e.to_string()))?;
                run.put_bytes_as(root, &comps, &b, 0o100000 | m.mode, mtime)?;
                if name == "backup_label" {
                    label.label = Some(String::from_utf8_lossy(&b).into_owned());
                } else {
                    label.manifest = Some(b);
                }
            }
            Kind::File => {
                let prev = run.hints(run.previous(&comps));
                let (content, len) = run
                    .ingest(&mut tar, ChunkParams::PG_DATA, Some(m.size), prev)?
                    .map_err(|e| archive_err(format!("{name}: {e}")))?;
                run.put_stream(root, &comps, content, len, 0o100000 | m.mode, mtime)?;
            }
            Kind::Symlink => {
                return Err(archive_err(format!(
                    "member {name:?} is a symlink (a tablespace): clusters with tablespaces are not supported yet"
                )))
            }
        }
    }
    Ok(label)
}

/// The timeline and location where the backup's WAL ends, from its manifest.
fn wal_end(manifest: &[u8]) -> Option<(u32, String)> {
    let v: serde_json::Value = serde_json::from_slice(manifest).ok()?;
    let last = v.get("WAL-Ranges")?.as_array()?.last()?;
    Some((
        u32::try_from(last.get("Timeline")?.as_u64()?).ok()?,
        last.get("End-LSN")?.as_str()?.to_string(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manifest_ends_parse() {
        let m = br#"{"PostgreSQL-Backup-Manifest-Version": 1, "Files": [],
            "WAL-Ranges": [{"Timeline": 2, "Start-LSN": "0/5000028", "End-LSN": "0/5000100"}]}"#;
        assert_eq!(wal_end(m), Some((2, "0/5000100".to_string())));
        assert_eq!(wal_end(b"{}"), None);
    }
}
