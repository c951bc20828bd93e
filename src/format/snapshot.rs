//! Snapshot records: one small JSON document per snapshot, named by its BLAKE3.
//!
//! A snapshot file is written last, after every blob it references is durable, so its
//! presence means the snapshot is complete.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::format::chunker::Profile;
use crate::format::id::{Id, SnapshotId, TreeId};

/// Snapshot record version written and read by this build.
pub const VERSION: u32 = 1;
/// Largest snapshot record accepted on read.
pub const MAX_LEN: u64 = 16 << 20;

/// Why `label` cannot be a new snapshot's host, or with `tag` its tag, if it cannot.
/// Both name directories of `snap mount` (`hosts/<host>`, `tags/<tag>`) and words of
/// `snap list`; a tag holds no comma either, as `--tag a,b` means the tags `a` and `b`.
pub fn label_problem(label: &str, tag: bool) -> Option<&'static str> {
    if label.is_empty() {
        Some("it is empty")
    } else if label == "." || label == ".." {
        Some("it is . or ..")
    } else if label.contains('/') {
        Some("it contains /")
    } else if tag && label.contains(',') {
        Some("it contains a comma")
    } else if label.chars().any(char::is_control) {
        Some("it contains a control character")
    } else if label.len() > 255 {
        Some("it is longer than 255 bytes")
    } else {
        None
    }
}

/// One snapshot.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Snapshot {
    /// Record version ([`VERSION`]).
    pub version: u32,
    /// When the backup started, UTC.
    pub time: DateTime<Utc>,
    /// Host name of the machine that made it.
    pub host: String,
    /// User who ran it.
    pub user: String,
    /// Free-form labels.
    #[serde(default)]
    pub tags: Vec<String>,
    /// What went in: paths, then an NGW instance, standard input, commands.
    pub sources: Vec<Source>,
    /// Root tree.
    pub tree: TreeId,
    /// The snapshot whose metadata let unchanged files skip reading.
    #[serde(default)]
    pub parent: Option<SnapshotId>,
    /// The snapshot of another repository this one is a rewritten copy of (`sync` into
    /// a repository with other blob ids).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub original: Option<SnapshotId>,
    /// Figures of the run.
    pub summary: Summary,
    /// Program and version that wrote it.
    pub program: String,
}

/// One source of a snapshot.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Source {
    /// A file or directory, stored under its absolute path.
    Path {
        /// Absolute path on the host.
        path: String,
    },
    /// Standard input, stored as one file.
    Stdin {
        /// Path inside the snapshot.
        name: String,
        /// Chunking profile used.
        profile: Profile,
    },
    /// A NextGIS Web instance, stored under `ngw/` (see `backup::ngw`).
    Ngw {
        /// Its `config.ini`.
        config: String,
        /// External raster storages whose objects were left out (`--ngw-skip-external`
        /// and unreachable), described; empty (and not written) when none was.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        skipped_external: Vec<String>,
    },
    /// An imported `.ngwbackup` archive, stored under `ngw/` like an instance.
    Archive {
        /// The archive's file name.
        file: String,
        /// BLAKE3 of the whole archive: importing it again is a no-op.
        blake3: Id,
    },
    /// A command's standard output, stored as one file.
    Command {
        /// The command line, run by `sh -c`.
        command: String,
        /// Path inside the snapshot.
        name: String,
        /// Chunking profile used.
        profile: Profile,
        /// Its exit status (always 0: a failed command records no snapshot).
        exit_status: i32,
    },
    /// A command that writes a directory (`{dir}` in its line), stored under `name/`.
    CommandDir {
        /// The command line, run by `sh -c`.
        command: String,
        /// Directory inside the snapshot.
        name: String,
    },
    /// A PostgreSQL database, `pg_dump --format=directory --compress=0` under `name/`.
    Pg {
        /// Connection string, without its password.
        dsn: String,
        /// Directory inside the snapshot (`db/<database>`).
        name: String,
    },
    /// A whole PostgreSQL cluster, `pg_dumpall` plain SQL, stored as one file.
    PgAll {
        /// Connection string, without its password.
        dsn: String,
        /// Path inside the snapshot.
        name: String,
    },
    /// A MongoDB deployment, `mongodump --archive`, stored as one file.
    Mongo {
        /// Connection URI, without its password.
        uri: String,
        /// Path inside the snapshot.
        name: String,
    },
    /// A physical base backup of a PostgreSQL cluster (`pg_basebackup`), its data
    /// directory under `name/`; the WAL to recover it comes from the WAL archive.
    PgBase {
        /// Connection string, without its password.
        dsn: String,
        /// Directory inside the snapshot (`pg/base`).
        name: String,
        /// Timeline the backup started on.
        timeline: u32,
        /// WAL location where it started (`0/2000028`).
        start_lsn: String,
        /// WAL location it must be recovered to before it is consistent.
        stop_lsn: String,
        /// Timeline of `stop_lsn`.
        stop_timeline: u32,
        /// The cluster's WAL segment size in bytes.
        wal_segment_size: u64,
        /// The cluster's system identifier (its WAL belongs to it alone).
        system_identifier: String,
        /// `server_version_num`, e.g. 150010.
        server_version: u32,
    },
}

/// Figures of one backup run.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    /// Regular files (and streams) in the snapshot.
    pub files: u64,
    /// Directories.
    pub dirs: u64,
    /// Symlinks, devices, FIFOs and sockets.
    pub others: u64,
    /// Files whose content was read (the rest were unchanged since the parent).
    pub files_read: u64,
    /// Logical size of all file contents.
    pub bytes_total: u64,
    /// Bytes read from files and streams.
    pub bytes_read: u64,
    /// Blobs this run added to the repository.
    pub blobs_added: u64,
    /// Their raw size.
    pub bytes_added_raw: u64,
    /// Their stored (compressed) size: what the repository grew by, before pack overhead.
    pub bytes_added: u64,
    /// Entries that could not be read and were left out.
    pub warnings: u64,
    /// Wall time of the run, seconds.
    pub duration: f64,
}

/// Checks that a record file's bytes hash to its name `id`.
pub fn check_id(id: &SnapshotId, b: &[u8]) -> Result<()> {
    check_record_id("snapshot", &id.0, b)
}

/// Checks that the bytes of a record file (`what`: `snapshot`, `drill`) hash to its
/// name `id`.
pub(crate) fn check_record_id(what: &str, id: &Id, b: &[u8]) -> Result<()> {
    let actual = Id::hash(b);
    if actual != *id {
        return Err(Error::ChecksumMismatch {
            what: what.into(),
            expected: id.to_hex(),
            actual: actual.to_hex(),
        });
    }
    Ok(())
}

/// Parses the JSON of a record (`what`, named `id` in errors) whose `version` must be
/// `version`: records of another version are refused before the rest is read.
pub(crate) fn parse_record<T: serde::de::DeserializeOwned>(
    what: &'static str,
    version: u32,
    id: &str,
    b: &[u8],
) -> Result<T> {
    #[derive(Deserialize)]
    struct V {
        version: u32,
    }
    let v: V = serde_json::from_slice(b).map_err(|e| Error::corrupt(what, id, e))?;
    if v.version != version {
        return Err(Error::UnsupportedVersion {
            what,
            expected: version,
            found: v.version,
        });
    }
    serde_json::from_slice(b).map_err(|e| Error::corrupt(what, id, e))
}

impl Snapshot {
    /// The external raster storages of its NGW instance left out of it
    /// (`--ngw-skip-external`), described; empty when none was.
    pub fn skipped_external(&self) -> Vec<String> {
        self.sources
            .iter()
            .flat_map(|s| match s {
                Source::Ngw {
                    skipped_external, ..
                } => skipped_external.clone(),
                _ => Vec::new(),
            })
            .collect()
    }

    /// Serializes; the id of a snapshot is the BLAKE3 of these bytes.
    pub fn encode(&self) -> Vec<u8> {
        let mut b = serde_json::to_vec_pretty(self).expect("snapshots serialize");
        b.push(b'\n');
        b
    }

    /// Parses and checks a snapshot record read from a file named `id`.
    pub fn decode(id: &SnapshotId, b: &[u8]) -> Result<Snapshot> {
        check_id(id, b)?;
        Snapshot::parse(id, b)
    }

    /// Parses a record's JSON (of snapshot `id`, for errors).
    pub fn parse(id: &SnapshotId, b: &[u8]) -> Result<Snapshot> {
        parse_record("snapshot", VERSION, &id.to_hex(), b)
    }

    /// What a later backup must share with this one to use it as its parent: the
    /// sorted file-system sources (paths and NGW instances). Streams never count.
    pub fn parent_key(sources: &[Source]) -> Vec<String> {
        let mut key: Vec<String> = sources
            .iter()
            .filter_map(|s| match s {
                Source::Path { path } => Some(format!("path:{path}")),
                Source::Ngw { config, .. } => Some(format!("ngw:{config}")),
                _ => None,
            })
            .collect();
        key.sort_unstable();
        key
    }

    /// What `forget` groups snapshots by, besides the host: every source by kind and
    /// place, not by command line (imported archives share one group whatever their
    /// file names, so nightly imports age like nightly backups).
    pub fn group_key(sources: &[Source]) -> Vec<String> {
        let mut key: Vec<String> = sources.iter().map(Source::key).collect();
        key.sort_unstable();
        key.dedup();
        key
    }
}

impl Source {
    /// The source by kind and place (`pg:db/app`, `path:/srv/data`), as snapshots are
    /// grouped (see [`Snapshot::group_key`]) and drill records name their sources.
    pub fn key(&self) -> String {
        match self {
            Source::Path { path } => format!("path:{path}"),
            Source::Ngw { config, .. } => format!("ngw:{config}"),
            Source::Archive { .. } => "ngw-archive".to_string(),
            Source::Stdin { name, .. } => format!("stdin:{name}"),
            Source::Command { name, .. } => format!("command:{name}"),
            Source::CommandDir { name, .. } => format!("command-dir:{name}"),
            Source::Pg { name, .. } => format!("pg:{name}"),
            Source::PgAll { name, .. } => format!("pg-all:{name}"),
            Source::Mongo { name, .. } => format!("mongo:{name}"),
            Source::PgBase { name, .. } => format!("pg-base:{name}"),
        }
    }

    /// Where a source made by snap's own reading (a stream, a dump, a command's
    /// directory) sits in the snapshot; `None` for paths and NGW instances.
    pub fn stream_name(&self) -> Option<&str> {
        match self {
            Source::Stdin { name, .. }
            | Source::Command { name, .. }
            | Source::CommandDir { name, .. }
            | Source::Pg { name, .. }
            | Source::PgAll { name, .. }
            | Source::Mongo { name, .. }
            | Source::PgBase { name, .. } => Some(name),
            Source::Path { .. } | Source::Ngw { .. } | Source::Archive { .. } => None,
        }
    }

    /// Short description for listings.
    pub fn describe(&self) -> String {
        match self {
            Source::Path { path } => path.clone(),
            Source::Stdin { name, .. } => format!("{name} (stdin)"),
            Source::Command { name, .. } => format!("{name} (command)"),
            Source::Ngw {
                config,
                skipped_external,
            } if !skipped_external.is_empty() => format!(
                "ngw/ (NextGIS Web, {config}; INCOMPLETE: rasters of {} left out)",
                skipped_external.join(", ")
            ),
            Source::Ngw { config, .. } => format!("ngw/ (NextGIS Web, {config})"),
            Source::Archive { file, .. } => format!("ngw/ (imported {file})"),
            Source::CommandDir { name, .. } => format!("{name}/ (command)"),
            Source::Pg { name, .. } => format!("{name}/ (pg_dump)"),
            Source::PgAll { name, .. } => format!("{name} (pg_dumpall)"),
            Source::Mongo { name, .. } => format!("{name} (mongodump)"),
            Source::PgBase {
                name, start_lsn, ..
            } => format!("{name}/ (PostgreSQL base backup from {start_lsn})"),
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A snapshot record of two sources, for tests.
    pub(crate) fn sample() -> Snapshot {
        Snapshot {
            version: VERSION,
            time: "2026-11-21T02:00:00.123456789Z".parse().unwrap(),
            host: "ngw1".into(),
            user: "root".into(),
            tags: vec!["nightly".into()],
            sources: vec![
                Source::Path {
                    path: "/srv/ngw".into(),
                },
                Source::Command {
                    command: "pg_dump -Fc -Z0 ngw".into(),
                    name: "db/ngw.dump".into(),
                    profile: Profile::Dump,
                    exit_status: 0,
                },
            ],
            tree: TreeId(Id::hash(b"tree")),
            parent: None,
            original: None,
            summary: Summary::default(),
            program: "snap test".into(),
        }
    }

    #[test]
    fn round_trip_and_id_check() {
        let s = sample();
        let b = s.encode();
        let id = SnapshotId(Id::hash(&b));
        assert_eq!(Snapshot::decode(&id, &b).unwrap(), s);
        assert!(matches!(
            Snapshot::decode(&SnapshotId(Id::hash(b"x")), &b),
            Err(Error::ChecksumMismatch { .. })
        ));
        assert_eq!(Snapshot::parent_key(&s.sources), vec!["path:/srv/ngw"]);
    }

    #[test]
    fn future_version_is_refused() {
        let mut s = sample();
        s.version = 9;
        let b = s.encode();
        assert!(matches!(
            Snapshot::decode(&SnapshotId(Id::hash(&b)), &b),
            Err(Error::UnsupportedVersion { found: 9, .. })
        ));
    }
}
