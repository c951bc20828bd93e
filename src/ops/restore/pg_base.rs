//! `restore --pg-base`: a base backup laid into a new, empty data directory and set up
//! to recover from the WAL archive to a point in time: `recovery.signal`, and in
//! `postgresql.auto.conf` the `restore_command` that fetches from snap, the target and
//! what the server does on reaching it. Before a byte is written, the archive is
//! checked to hold every segment the backup needs to become consistent, and, for an
//! LSN target, every segment up to it.

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use super::pg_start::Started;
use super::{plan_tree, RestoreOutcome};
use crate::error::{Error, IoContext, Refusal, Result, Usage};
use crate::format::id::SnapshotId;
use crate::format::snapshot::{Snapshot, Source};
use crate::format::tree::NodeKind;
use crate::ops::backup::BASE_DIR;
use crate::ops::wal;
use crate::progress::Progress;
use crate::repo::Repository;
use crate::source::pg::parse_lsn;

/// Where recovery stops.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    /// At the end of the archived WAL.
    Latest,
    /// As soon as the backup is consistent.
    Immediate,
    /// At a time (`recovery_target_time`, as PostgreSQL parses it).
    Time(String),
    /// At a WAL location.
    Lsn(String),
    /// At a restore point made with `pg_create_restore_point(name)`
    /// (`recovery_target_name`).
    Name(String),
}

/// What the server does on reaching the target (`recovery_target_action`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    Pause,
    Promote,
    Shutdown,
}

impl Action {
    fn as_str(self) -> &'static str {
        match self {
            Action::Pause => "pause",
            Action::Promote => "promote",
            Action::Shutdown => "shutdown",
        }
    }
}

/// How to restore a base backup.
#[derive(Clone, Debug)]
pub struct PgBaseRestore {
    /// The new data directory: absent or empty.
    pub data: PathBuf,
    pub target: Target,
    pub action: Action,
    /// The timeline recovery follows: `None` for the newest (`latest`), else a
    /// timeline id (an older branch's point, after a later promotion).
    pub timeline: Option<u32>,
    /// The `restore_command` to write (`%f` and `%p` in it).
    pub restore_command: String,
    /// Start a server on it and wait until recovery has reached the target.
    pub start: bool,
}

/// What a base backup restore did.
#[derive(Debug)]
pub struct PgBaseOutcome {
    /// The files laid out.
    pub restore: RestoreOutcome,
    /// The owner the data directory was given (when run as root).
    pub owner: Option<(u32, u32)>,
    /// Warnings about the recovery ahead (a gap it will stop at).
    pub warnings: Vec<String>,
    /// The settings appended to `postgresql.auto.conf`.
    pub settings: Vec<String>,
    /// The server started on it (`start`).
    pub started: Option<Started>,
}

/// A string as a `postgresql.conf` value.
fn conf_quote(s: &str) -> String {
    format!("'{}'", s.replace('\\', "\\\\").replace('\'', "''"))
}

/// Refuses a data directory that exists and is not empty; creates it (mode 0700)
/// otherwise.
fn empty_data_dir(data: &Path) -> Result<()> {
    match fs::read_dir(data) {
        Ok(mut rd) => {
            if rd.next().is_some() {
                return Err(Refusal::NotEmpty {
                    path: data.to_path_buf(),
                }
                .into());
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            fs::create_dir_all(data).at(data)?;
        }
        Err(e) => return Err(e).at(data),
    }
    fs::set_permissions(data, fs::Permissions::from_mode(0o700)).at(data)
}

/// Gives everything below `dir` (and itself) to `uid:gid`, following no symlink.
fn chown_tree(dir: &Path, uid: u32, gid: u32) -> Result<()> {
    let own = |p: &Path| {
        rustix::fs::chownat(
            rustix::fs::CWD,
            p,
            Some(rustix::fs::Uid::from_raw(uid)),
            Some(rustix::fs::Gid::from_raw(gid)),
            rustix::fs::AtFlags::SYMLINK_NOFOLLOW,
        )
        .map_err(std::io::Error::from)
        .at(p)
    };
    own(dir)?;
    for e in fs::read_dir(dir).at(dir)? {
        let p = e.at(dir)?.path();
        if fs::symlink_metadata(&p).at(&p)?.is_dir() {
            chown_tree(&p, uid, gid)?;
        } else {
            own(&p)?;
        }
    }
    Ok(())
}

/// Restores the base backup of snapshot `id` as `opts` say.
pub fn restore_pg_base(
    repo: &Repository,
    id: &SnapshotId,
    snap: &Snapshot,
    opts: &PgBaseRestore,
    progress: &dyn Progress,
) -> Result<PgBaseOutcome> {
    let Some(&Source::PgBase {
        server_version,
        wal_segment_size: seg_size,
        ..
    }) = wal::base_of(snap)
    else {
        return Err(Usage::NoPgBase {
            snapshot: id.short(),
        }
        .into());
    };
    let report = wal::check(&repo.wal(), &[(*id, snap.clone())])?;
    let base = report
        .bases
        .first()
        .ok_or_else(|| Error::internal("a base backup without a report", None))?;
    let location = repo.location();
    if !base.consistent {
        return Err(Refusal::PgBaseWalMissing {
            snapshot: id.short(),
            needed: base.consistent_at.clone(),
            missing: base
                .gaps
                .first()
                .map(|g| g.first.clone())
                .unwrap_or_default(),
            location,
        }
        .into());
    }
    let reaches = base.reaches.clone().unwrap_or_default();
    let mut warnings = Vec::new();
    match &opts.target {
        Target::Time(t) => {
            // The backup is consistent once snap's run of it ended, at the latest.
            #[allow(clippy::cast_possible_truncation, reason = "seconds of a backup run")]
            let ran =
                chrono::Duration::milliseconds((snap.summary.duration * 1000.0).ceil() as i64);
            let ended = snap.time + ran;
            match parse_target_time(t) {
                TargetTime::At(at) if at < ended => {
                    return Err(Refusal::PgTargetBeforeBase {
                        target: t.clone(),
                        snapshot: id.short(),
                        ended: crate::host::local_time(&ended),
                    }
                    .into());
                }
                TargetTime::At(_) => {}
                TargetTime::Unplaced => warnings.push(format!(
                    "--target-time {t:?} has no zone offset: PostgreSQL reads it in the server's time zone, so snap cannot check that it is after base backup {} ended ({}); recovery to an earlier moment would silently give a later state",
                    id.short(),
                    crate::host::local_time(&ended)
                )),
                TargetTime::Invalid => return Err(Usage::TargetTime { time: t.clone() }.into()),
            }
        }
        Target::Lsn(l) => {
            let lsn = parse_lsn(l).ok_or_else(|| Usage::Lsn { lsn: l.clone() })?;
            let reached = crate::repo::wal::WalFile::parse(&reaches)
                .and_then(|f| f.segno(seg_size))
                .unwrap_or(0);
            if lsn / seg_size > reached {
                return Err(match base.gaps.first() {
                    Some(gap) => Refusal::PgTargetPastGap {
                        target: l.clone(),
                        first: gap.first.clone(),
                        last: gap.last.clone(),
                    },
                    None => Refusal::PgTargetPastArchive {
                        target: l.clone(),
                        newest: reaches.clone(),
                        location: location.clone(),
                    },
                }
                .into());
            }
        }
        Target::Latest | Target::Immediate | Target::Name(_) => {}
    }
    if let Some(gap) = base.gaps.first() {
        if !matches!(opts.target, Target::Lsn(_)) {
            warnings.push(format!(
                "the WAL archive lacks {} segment(s) from {} to {}: recovery cannot go past {reaches}",
                gap.segments, gap.first, gap.last
            ));
        }
    }
    let comps = super::snapshot_path(BASE_DIR)?;
    let node = repo
        .find_node(&snap.tree, &comps)?
        .ok_or_else(|| Usage::NoPgBase {
            snapshot: id.short(),
        })?;
    let NodeKind::Dir(tree) = node.kind else {
        return Err(Usage::NoPgBase {
            snapshot: id.short(),
        }
        .into());
    };
    empty_data_dir(&opts.data)?;
    let restored = plan_tree(repo, tree, &opts.data)?.execute(progress)?;
    if let Some(e) = restored.errors.first() {
        return Err(Error::internal(
            format!("the base backup could not be restored whole: {e}"),
            None,
        ));
    }
    for dir in ["pg_wal", "pg_wal/archive_status"] {
        let p = opts.data.join(dir);
        fs::create_dir_all(&p).at(&p)?;
    }
    let mut settings = vec![
        format!("restore_command = {}", conf_quote(&opts.restore_command)),
        match opts.timeline {
            None => "recovery_target_timeline = 'latest'".to_string(),
            Some(t) => format!("recovery_target_timeline = '{t}'"),
        },
    ];
    match &opts.target {
        Target::Latest => {}
        Target::Immediate => settings.push("recovery_target = 'immediate'".into()),
        Target::Time(t) => settings.push(format!("recovery_target_time = {}", conf_quote(t))),
        Target::Lsn(l) => settings.push(format!("recovery_target_lsn = {}", conf_quote(l))),
        Target::Name(n) => settings.push(format!("recovery_target_name = {}", conf_quote(n))),
    }
    if opts.target != Target::Latest {
        settings.push(format!(
            "recovery_target_action = '{}'",
            opts.action.as_str()
        ));
    }
    write_recovery_conf(&opts.data.join("postgresql.auto.conf"), id, &settings)?;
    let signal = opts.data.join("recovery.signal");
    fs::write(&signal, b"").at(&signal)?;
    let owner = if rustix::process::geteuid().is_root() {
        let parent = opts
            .data
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        let md = fs::metadata(parent).at(parent)?;
        chown_tree(&opts.data, md.uid(), md.gid())?;
        Some((md.uid(), md.gid()))
    } else {
        None
    };
    let started = if opts.start {
        Some(super::pg_start::start(&opts.data, server_version, owner)?)
    } else {
        None
    };
    Ok(PgBaseOutcome {
        restore: restored,
        owner,
        warnings,
        settings,
        started,
    })
}

/// What snap makes of a `--target-time`.
#[derive(Debug, PartialEq)]
enum TargetTime {
    /// A moment: `YYYY-MM-DD HH:MM[:SS[.frac]]` (or a `T` between date and time) with a
    /// zone offset (`+00`, `+07:00`, `-0330`), `Z`, `UTC` or `GMT`.
    At(chrono::DateTime<chrono::FixedOffset>),
    /// A date and time without an offset snap reads (none, or a zone's name):
    /// PostgreSQL reads it in the server's time zone, which snap cannot know.
    Unplaced,
    /// Not a date and time.
    Invalid,
}

fn parse_target_time(t: &str) -> TargetTime {
    let mut s = t.trim().to_string();
    if s.get(10..11) == Some("T") {
        s.replace_range(10..11, " ");
    }
    for utc in ["UTC", "GMT", "Z"] {
        if let Some(rest) = s.strip_suffix(utc) {
            s = format!("{}+00", rest.trim_end());
            break;
        }
    }
    let zoned = ["%Y-%m-%d %H:%M:%S%.f%#z", "%Y-%m-%d %H:%M%#z"]
        .iter()
        .find_map(|f| chrono::DateTime::parse_from_str(&s, f).ok());
    if let Some(at) = zoned {
        return TargetTime::At(at);
    }
    let unplaced = [
        "%Y-%m-%d %H:%M:%S%.f",
        "%Y-%m-%d %H:%M:%S",
        "%Y-%m-%d %H:%M",
    ]
    .iter()
    .any(|f| {
        chrono::NaiveDateTime::parse_and_remainder(&s, f)
            .is_ok_and(|(_, rest)| rest.is_empty() || rest.starts_with(' '))
    });
    if unplaced {
        TargetTime::Unplaced
    } else {
        TargetTime::Invalid
    }
}

/// Whether `line` of a PostgreSQL configuration file sets a recovery setting (as
/// `name = value` or `name value`, any case).
fn sets_recovery(line: &str) -> bool {
    let name: String = line
        .trim_start()
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
        .collect::<String>()
        .to_ascii_lowercase();
    name == "restore_command"
        || name == "recovery_end_command"
        || name == "archive_cleanup_command"
        || name.starts_with("recovery_target")
}

/// Writes this recovery's `settings` at the end of `postgresql.auto.conf` (`conf`),
/// commenting out the recovery settings the base backup's copy brought along (a
/// cluster that was itself recovered to a point keeps its `recovery_target_time`, and
/// `pg_basebackup` copies it): left in, they would stop this recovery at that old
/// point, whatever this restore asked for.
fn write_recovery_conf(conf: &Path, id: &SnapshotId, settings: &[String]) -> Result<()> {
    let text = match fs::read_to_string(conf) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => return Err(e).at(conf),
    };
    let mut out = String::with_capacity(text.len() + 512);
    for line in text.lines() {
        if sets_recovery(line) {
            out.push_str("# Removed by snap restore of snapshot ");
            out.push_str(&id.short());
            out.push_str(", an earlier recovery's: ");
        }
        out.push_str(line);
        out.push('\n');
    }
    out.push_str("# Recovery from snap snapshot ");
    out.push_str(&id.short());
    out.push('\n');
    for s in settings {
        out.push_str(s);
        out.push('\n');
    }
    fs::write(conf, out).at(conf)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn target_times_are_placed_when_they_carry_a_zone() {
        for (t, utc) in [
            ("2026-12-03 14:05:00+00", "2026-12-03T14:05:00+00:00"),
            (
                "2026-12-03 21:05:00.5+07:00",
                "2026-12-03T14:05:00.500+00:00",
            ),
            ("2026-12-03T14:05Z", "2026-12-03T14:05:00+00:00"),
            ("2026-12-03 10:35:00-0330", "2026-12-03T14:05:00+00:00"),
            ("2026-12-03 14:05:00 UTC", "2026-12-03T14:05:00+00:00"),
        ] {
            let TargetTime::At(at) = parse_target_time(t) else {
                panic!("{t}")
            };
            assert_eq!(at.with_timezone(&chrono::Utc).to_rfc3339(), utc, "{t}");
        }
        for t in [
            "2026-12-03 14:05:00",
            "2026-12-03 14:05:00.25",
            "2026-12-03 14:05",
            "2026-12-03 14:05 Europe/Moscow",
        ] {
            assert_eq!(parse_target_time(t), TargetTime::Unplaced, "{t}");
        }
        for t in ["2026-13-45 99:00+00", "yesterday", "", "2026-12-03x"] {
            assert_eq!(parse_target_time(t), TargetTime::Invalid, "{t}");
        }
    }

    #[test]
    fn an_earlier_recovery_s_settings_are_commented_out_and_the_rest_kept() {
        let d = tempfile::tempdir().unwrap();
        let conf = d.path().join("postgresql.auto.conf");
        fs::write(
            &conf,
            "# Do not edit this file manually!\nwork_mem = '64MB'\nrestore_command = 'x %f %p'\nrecovery_target_time = '2026-12-05 14:47:11+00'\nRecovery_Target_Action='promote'\nrecovery_target_timeline = 'latest'\n",
        )
        .unwrap();
        let id = SnapshotId(crate::format::id::Id::hash(b"s"));
        write_recovery_conf(&conf, &id, &[]).unwrap();
        let text = fs::read_to_string(&conf).unwrap();
        let live: Vec<&str> = text.lines().filter(|l| !l.starts_with('#')).collect();
        assert_eq!(live, ["work_mem = '64MB'"], "{text}");
        assert_eq!(
            text.matches("# Removed by snap restore").count(),
            4,
            "{text}"
        );
    }

    #[test]
    fn conf_values_are_quoted() {
        assert_eq!(conf_quote("a 'b' c\\d"), "'a ''b'' c\\\\d'");
    }
}
