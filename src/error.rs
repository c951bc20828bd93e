//! The one public error type of the library.
//!
//! Every variant carries the data a user needs to act on it: the path of a failed
//! I/O call, the object that is damaged, the version that was found. rusqlite's
//! error type never leaves `index`; it arrives here as [`Error::Index`] text.

use std::path::{Path, PathBuf};

/// Errors of the snap library.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An I/O call failed on a named path.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file or directory the call was about.
        path: PathBuf,
        /// What the operating system said.
        source: std::io::Error,
    },
    /// A repository object failed to decode or verify.
    #[error("corrupt {what} {id}: {detail}")]
    Corrupt {
        /// Kind of object (pack, tree, snapshot, chunk, ...).
        what: &'static str,
        /// Its id or file name.
        id: String,
        /// What is wrong with it.
        detail: String,
    },
    /// A format version this build does not read.
    #[error(
        "unsupported {what} version {found} (this snap reads version {expected}); upgrade snap"
    )]
    UnsupportedVersion {
        /// What carries the version.
        what: &'static str,
        /// The version this build reads.
        expected: u32,
        /// The version on disk.
        found: u32,
    },
    /// Content does not hash to its id.
    #[error("checksum mismatch in {what}: expected {expected}, got {actual}")]
    ChecksumMismatch {
        /// What was checked.
        what: String,
        /// The id it should have.
        expected: String,
        /// The hash it has.
        actual: String,
    },
    /// Another process holds a conflicting lock.
    #[error("repository is locked by {holder}")]
    Locked {
        /// Who holds it (host, pid, time, kind).
        holder: String,
    },
    /// A named object does not exist.
    #[error("{what} {id} not found")]
    NotFound {
        /// Kind of object.
        what: &'static str,
        /// The name or id asked for.
        id: String,
    },
    /// The SQLite index failed; the index can be rebuilt with `snap repair index`.
    #[error("index {path}: {detail}")]
    Index {
        /// The index file.
        path: PathBuf,
        /// SQLite's message.
        detail: String,
    },
    /// A source command failed: no snapshot is recorded.
    #[error("command `{command}` {status}{}", stderr_tail(stderr))]
    Command {
        /// The command line as given.
        command: String,
        /// How it ended ("exited with status 2", "was killed by signal 9").
        status: String,
        /// The last lines it wrote to stderr.
        stderr: String,
    },
    /// An error while handling one entry of a snapshot.
    #[error("{path}: {source}")]
    Entry {
        /// The entry's path inside the snapshot.
        path: String,
        /// What went wrong.
        source: Box<Error>,
    },
    /// A remote store failed (after retries, for transient errors).
    #[error("{location}: {detail}")]
    Storage {
        /// The file and where it is (`s3://bucket/prefix/packs/…`).
        location: String,
        /// What the store or the connection said.
        detail: String,
    },
    /// There is no repository where one was looked for (no config file).
    #[error("no repository at {location} (no config file)")]
    NoRepository {
        /// Where it was looked for.
        location: String,
    },
    /// Where a repository was looked for is a file, or below one.
    #[error("no repository at {location}: it is not a directory")]
    NotADirectory {
        /// Where it was looked for.
        location: String,
    },
    /// An encrypted repository has no key file, so no passphrase can open it.
    #[error("{keys} has no key files: the repository cannot be opened with a passphrase")]
    NoKeyFiles {
        /// The key directory (`<repository>/keys`).
        keys: String,
    },
    /// No key file of the repository opens with the passphrase given.
    #[error("wrong passphrase: no key file in {keys} opens with it, or they were altered ({})", files.join(", "))]
    WrongPassphrase {
        /// The key directory (`<repository>/keys`).
        keys: String,
        /// The key files tried.
        files: Vec<String>,
    },
    /// The key file this host remembered opening a remote repository with is no longer
    /// among the repository's key files ([`crate::repo::remembered`]).
    #[error("key file {key} opened this repository from this host's memory of it, but the repository no longer has it (removed by `snap key remove` or `snap key passwd`, or the repository was deleted or made anew at the same location); the memory is forgotten: rerun, and the passphrase is tried against the key files the repository has now")]
    KeyFileGone {
        /// The key file (`<repository>/keys/<id>.json`).
        key: String,
    },
    /// The run was interrupted (SIGINT or SIGTERM) and stopped before recording
    /// anything.
    #[error("interrupted")]
    Interrupted,
    /// No snapshot of the repository matches the id or prefix given.
    #[error("snapshot {spec} not found in {location}")]
    SnapshotNotFound {
        /// The id or prefix asked for.
        spec: String,
        /// The repository.
        location: String,
    },
    /// `latest` was asked for, and the repository has no snapshots (none readable, when
    /// `unreadable` records could not be read).
    #[error("{}", no_snapshots(location, *unreadable))]
    NoSnapshots {
        /// The repository.
        location: String,
        /// Snapshot records that exist but cannot be read.
        unreadable: usize,
    },
    /// An argument, option or input the caller gave cannot be used as given.
    #[error(transparent)]
    Usage(#[from] Usage),
    /// A safety check refused the operation; nothing was changed, deleted or sent.
    #[error(transparent)]
    Refused(#[from] Refusal),
    /// A key does not fit the repository it was given for.
    #[error(transparent)]
    KeyMismatch(#[from] KeyMismatch),
    /// A source (a path, an NGW instance or its database, an archive) gave data or
    /// settings snap cannot use; no snapshot was recorded.
    #[error(transparent)]
    Source(#[from] SourceError),
    /// A file's content could not be read back from the repository; the partly written
    /// file was removed.
    #[error("{source}; the file was not restored")]
    NotRestored {
        /// Why the content could not be read (damage, a failed read or write).
        source: Box<Error>,
    },
    /// A restored file, read back (`restore --verify`), does not hold the snapshot's
    /// content.
    #[error("the restored file does not match the snapshot: {detail}")]
    NotVerified {
        /// Where it differs.
        detail: String,
    },
    /// FUSE could not mount, or unmount, the file system.
    #[error(
        "FUSE mount at {}: {source} (mounting needs /dev/fuse, and fusermount3 from the fuse3 package when not root)",
        path.display()
    )]
    Mount {
        /// The mount point.
        path: PathBuf,
        /// What the kernel or fusermount3 said.
        source: std::io::Error,
    },
    /// A restore drill could not set up or run a check: its scratch PostgreSQL
    /// cluster, a `verify` command.
    #[error("drill: {what}: {detail}")]
    Drill {
        /// What failed (`scratch PostgreSQL cluster`, `verify command ...`).
        what: String,
        /// Why, with the tail of its log where there is one.
        detail: String,
    },
    /// The operating system gave no random bytes.
    #[error("no randomness: {0}")]
    NoRandomness(#[source] getrandom::Error),
    /// A step that does not fail in a sound build and system did (a thread pool, the
    /// cipher, the ZIP writer): nothing a caller can tell apart or fix but by reporting
    /// it.
    #[error("{what}{}", source.as_ref().map(|s| format!(": {s}")).unwrap_or_default())]
    Internal {
        /// What failed.
        what: String,
        /// The underlying error, where there is one.
        source: Option<Box<dyn std::error::Error + Send + Sync>>,
    },
}

/// An argument, option or input the caller gave that cannot be used as given.
#[derive(Debug, thiserror::Error)]
pub enum Usage {
    /// An `--exclude` pattern is not a valid glob (`pattern` is `None` when the set as
    /// a whole failed to build).
    #[error("--exclude{}: {source}", pattern.as_ref().map(|p| format!(" {p:?}")).unwrap_or_default())]
    Exclude {
        /// The pattern given.
        pattern: Option<String>,
        /// What globset said.
        source: globset::Error,
    },
    /// `--group-by` names something snapshots cannot be grouped by.
    #[error("--group-by: unknown {given:?}; group by host, paths or tags (comma-separated)")]
    GroupBy {
        /// The word given.
        given: String,
    },
    /// `--keep-within` asks for a time before the calendar can express.
    #[error("--keep-within reaches before the calendar's start")]
    KeepWithin,
    /// `sync --delete` was combined with a choice of snapshots.
    #[error(
        "--delete mirrors the whole repository; it cannot be combined with a choice of snapshots"
    )]
    DeleteWithChoice,
    /// A backup was asked for with no source.
    #[error(
        "nothing to back up: give paths, --files-from, --stdin-name, --command, --command-dir, --pg, --pg-all, --mongo or --ngw"
    )]
    NothingToBackUp,
    /// An `--exclude-file` or `--files-from` list could not be read.
    #[error("{option} {}: {source}", path.display())]
    ListFile {
        /// The option that named it.
        option: &'static str,
        /// The file given.
        path: PathBuf,
        /// What the operating system said.
        source: std::io::Error,
    },
    /// `--ngw` and an imported archive were given for one snapshot.
    #[error("--ngw and an imported archive cannot share a snapshot")]
    NgwWithArchive,
    /// `--stdin-name` was given, and there is no standard input to read.
    #[error("--stdin-name given but no standard input")]
    NoStdin,
    /// A name for a stream or dump inside a snapshot is not a safe relative path.
    #[error(
        "{name:?} is not a usable name inside a snapshot (use a relative path such as db/app.sql, without . or ..)"
    )]
    SnapshotName {
        /// The name given.
        name: String,
    },
    /// A restore `--include` path the snapshot does not have.
    #[error(
        "--include {path:?} is not in the snapshot (paths inside a snapshot are absolute, as they were backed up)"
    )]
    IncludeNotFound {
        /// The path given.
        path: String,
    },
    /// A path inside a snapshot holds `.` or `..`.
    #[error("{path:?}: paths inside a snapshot may not contain . or ..")]
    SnapshotPath {
        /// The path given.
        path: String,
    },
    /// A backup source path is not UTF-8.
    #[error("{}: source paths must be UTF-8 (names below them need not be)", path.display())]
    SourcePathNotUtf8 {
        /// The path given.
        path: PathBuf,
    },
    /// A path of a snapshot given where a file is needed (`restore --pipe`) is not one.
    #[error("{path} is not a file in the snapshot (a directory of a pg_dump restores with --pg; `snap ls` shows what is there)")]
    NotAFile {
        /// The path in the snapshot.
        path: String,
    },
    /// Two sources of one backup would be placed at the same path.
    #[error("sources overlap at {at}: two sources of the backup (two --as or stream names, or one inside another) would be stored there; give each its own place")]
    SourcesOverlap {
        /// The path inside the snapshot they share.
        at: String,
    },
    /// A `--command-dir` command lacks the `{dir}` placeholder.
    #[error(
        "--command-dir `{command}`: put {{dir}} where the command takes its output directory (mongodump --out {{dir}})"
    )]
    CommandDirPlaceholder {
        /// The command given.
        command: String,
    },
    /// A PostgreSQL connection string that does not parse.
    #[error(
        "{dsn}: not a PostgreSQL connection string ({why}); use postgresql://user@host:port/db or 'host=... dbname=...'"
    )]
    PgDsn {
        /// The connection string as shown (without its password).
        dsn: String,
        /// What is wrong with it.
        why: String,
    },
    /// A PostgreSQL connection string that names no database.
    #[error("{dsn}: names no database; add one (postgresql://host/DBNAME)")]
    PgNoDatabase {
        /// The connection string as shown (without its password).
        dsn: String,
    },
    /// `--no-lock` given to a command that changes the repository.
    #[error("--no-lock only reads: {purpose} changes the repository, and needs its lock")]
    NoLockWrites {
        /// What the command is.
        purpose: String,
    },
    /// `restore --pg-base` of a snapshot without a base backup.
    #[error("snapshot {snapshot} holds no PostgreSQL base backup (made with backup --pg-base); `snap list` shows each snapshot's sources")]
    NoPgBase {
        /// The snapshot.
        snapshot: String,
    },
    /// A WAL location that does not parse.
    #[error("{lsn:?} is not a WAL location; write it as PostgreSQL does, e.g. 0/3000060")]
    Lsn {
        /// What was given.
        lsn: String,
    },
    /// A recovery target time snap cannot read.
    #[error(
        "--target-time {time:?} is not a date and time: write it as YYYY-MM-DD HH:MM[:SS[.frac]] and a zone offset, e.g. '2026-12-03 14:05:00+00' or '2026-12-03 21:05:00+07:00' (`snap list` prints times so)"
    )]
    TargetTime {
        /// What was given.
        time: String,
    },
    /// A name `wal push` or `wal fetch` was given that is not a WAL file's.
    #[error("{name:?} is not the name of a WAL segment, timeline history or backup history file; archive_command passes %p and restore_command %f %p")]
    WalName {
        /// The name given.
        name: String,
    },
    /// A MongoDB URI that does not parse.
    #[error("{uri:?}: not a MongoDB URI (mongodb://user@host:27017/db)")]
    MongoUri {
        /// The URI after its credentials.
        uri: String,
    },
    /// A MongoDB database name that cannot be used.
    #[error("{db:?}: not a usable database name")]
    MongoDatabase {
        /// The name given.
        db: String,
    },
    /// A repository location that is not a usable URL.
    #[error("{url}: {why}; expected s3://BUCKET/PREFIX or sftp://[USER@]HOST[:PORT]/PATH")]
    RemoteUrl {
        /// The location given.
        url: String,
        /// What is wrong with it.
        why: String,
    },
    /// A `find` pattern is not a valid glob.
    #[error("pattern {pattern:?}: {source}")]
    FindPattern {
        /// The pattern given.
        pattern: String,
        /// What globset said.
        source: globset::Error,
    },
    /// `--ngw-storage` names a raster layer storage the snapshot holds no object of.
    #[error("--ngw-storage {id}: the snapshot holds no object of a raster layer storage with id {id}; `snap cat SNAPSHOT ngw/raster_layer_storage/$index` lists the snapshot's; nothing was changed")]
    NoSuchRasterStorage {
        /// The id given.
        id: i32,
    },
    /// A remote location given to a build without the `remote` feature.
    #[error("{location}: this snap was built without remote stores (SFTP, S3); build it with the default cargo feature `remote`")]
    NoRemoteStores {
        /// The location given.
        location: String,
    },
    /// An `sftp://` location without a host.
    #[error("{location}: no host; expected sftp://[USER@]HOST[:PORT]/PATH")]
    SftpNoHost {
        /// The location given.
        location: String,
    },
    /// `snap diff SNAPSHOT` for a snapshot with no earlier one to compare it with.
    #[error("snapshot {snapshot} has no parent (no earlier snapshot of the same host and sources): name the older one too, `snap diff OLD {snapshot}`")]
    NoParent {
        /// The snapshot's short id.
        snapshot: String,
    },
    /// A snapshot id prefix that matches more than one snapshot.
    #[error("snapshot id prefix {prefix:?} is ambiguous; give more digits")]
    AmbiguousSnapshot {
        /// The prefix given.
        prefix: String,
    },
    /// A database restore from a snapshot without a dump of that kind.
    #[error(
        "the snapshot has no {flag} dump (its sources: {}); restore one made with {flag} (`snap list` shows each snapshot's sources), or name a dump of that format inside this one",
        sources.join(", ")
    )]
    NoDump {
        /// The option of the dump kind (`--pg`, `--pg-all`, `--mongo`).
        flag: &'static str,
        /// The snapshot's sources, described.
        sources: Vec<String>,
    },
    /// `drill --source` names a source no drilled snapshot has.
    #[error("no snapshot drilled has the source {name:?} (they have: {}); name it as `snap list` shows it, e.g. db/app or /srv/data", sources.join(", "))]
    DrillSource {
        /// The name given.
        name: String,
        /// The sources the snapshots have.
        sources: Vec<String>,
    },
    /// A database restore from a snapshot with several dumps of that kind, none named.
    #[error("the snapshot holds several {flag} dumps ({}); name the one to restore", names.join(", "))]
    SeveralDumps {
        /// The option of the dump kind.
        flag: &'static str,
        /// The dumps' paths inside the snapshot.
        names: Vec<String>,
    },
    /// The path named for a `--pg` restore is not a directory.
    #[error("{path}: not a pg_dump directory (for a single dump file use snap cat or --pipe)")]
    NotPgDumpDir {
        /// The path inside the snapshot.
        path: String,
    },
    /// The directory named for a `--pg` restore has no `toc.dat`.
    #[error("{path}: has no toc.dat, so it is not a pg_dump directory")]
    NoToc {
        /// The path inside the snapshot.
        path: String,
    },
    /// An NGW export or restore from a snapshot without an NGW instance.
    #[error(
        "the snapshot has no NextGIS Web instance (back one up with --ngw, or import a .ngwbackup)"
    )]
    NoNgw,
    /// Chunker parameters that cannot be used.
    #[error("{why}")]
    ChunkParams {
        /// What is wrong with them.
        why: String,
    },
    /// A key export file that cannot be read as one.
    #[error("not a snap key export file: {why}")]
    KeyExport {
        /// What is wrong with it.
        why: String,
    },
    /// No directory for the index cache could be found.
    #[error(
        "no directory for the index cache: set SNAP_CACHE_DIR, XDG_CACHE_HOME or HOME, or give --cache-dir"
    )]
    NoCacheDir,
    /// A mount point that is missing, not a directory, or busy.
    #[error("mount point {}: {problem}", path.display())]
    MountPoint {
        /// The mount point given.
        path: PathBuf,
        /// What is wrong with it.
        problem: String,
    },
}

/// A refusal by a safety check: the operation would destroy, overwrite or build on
/// something it must not; nothing was changed.
#[derive(Debug, thiserror::Error)]
pub enum Refusal {
    /// `init` on an existing repository.
    #[error("{location} is already a snap repository")]
    AlreadyRepository {
        /// The location given.
        location: String,
    },
    /// `init` on a directory with files in it.
    #[error("{} exists and is not empty; choose an empty or new directory", path.display())]
    NotEmpty {
        /// The directory.
        path: PathBuf,
    },
    /// `init` where a file (not a directory) is.
    #[error("{} is a file, not a directory; choose an empty or new directory", path.display())]
    InitOnFile {
        /// The file.
        path: PathBuf,
    },
    /// A restore target that exists and is not a directory.
    #[error(
        "restore target {} exists and is not a directory (a symlink is not followed); choose a new or existing directory",
        target.display()
    )]
    TargetNotDir {
        /// The target given.
        target: PathBuf,
    },
    /// A restored directory would replace something that is not a directory.
    #[error("{}: exists and is not a directory; not replaced (remove it, or restore with --delete)", path.display())]
    WouldReplaceNonDir {
        /// What is in the way.
        path: PathBuf,
    },
    /// `restore --delete` into a directory it must not empty.
    #[error("restore --delete into {}: {why}; nothing was restored or deleted", target.display())]
    DeleteTarget {
        /// The target given.
        target: PathBuf,
        /// Why it is refused, and how to go ahead where that is possible.
        why: String,
    },
    /// A restored entry would replace a directory.
    #[error("{}: is a directory; not replaced (remove it, or restore with --delete, which removes it with all it holds)", path.display())]
    WouldReplaceDir {
        /// The directory in the way.
        path: PathBuf,
    },
    /// An export or dump to a path that exists.
    #[error("{} exists; snap never overwrites an output file: remove it or choose another name", path.display())]
    OutputExists {
        /// The destination given.
        path: PathBuf,
    },
    /// `forget` without any `--keep-*` option.
    #[error("no --keep-* option given: refusing to remove every snapshot")]
    NoPolicy,
    /// Removing the repository's only key file.
    #[error(
        "refusing to remove the last key: the repository could then only be opened with an exported key"
    )]
    LastKey,
    /// Key derivation parameters beyond what snap accepts (a damaged or hostile key
    /// file).
    #[error("{why}")]
    KdfParams {
        /// Which parameter, and its limit.
        why: String,
    },
    /// Prune with a snapshot record it cannot read.
    #[error(
        "snapshot record {path} cannot be read ({why}), so prune cannot tell what it needs; move it out of the repository if it is garbage; nothing was deleted"
    )]
    PruneUnreadableSnapshot {
        /// The record's path in the repository.
        path: String,
        /// Why it cannot be read.
        why: String,
    },
    /// Prune with an incomplete index.
    #[error(
        "the index is incomplete (some index files could not be read); run `snap check`, then `snap repair index`; nothing was deleted"
    )]
    PruneIndexIncomplete,
    /// Prune of a repository missing blobs the snapshots need.
    #[error(
        "the repository is damaged: {missing} blobs the snapshots need are missing or unreadable (blob {blob}: {why}); run `snap check` to see which snapshots are affected; nothing was deleted"
    )]
    PruneDamaged {
        /// How many blobs are missing or unreadable.
        missing: usize,
        /// The first of them.
        blob: String,
        /// What is wrong with it.
        why: String,
    },
    /// A base backup whose WAL the archive lacks.
    #[error("base backup {snapshot} cannot be recovered: the WAL archive in {location} lacks segment {missing}, and recovery needs every segment up to {needed}; is archive_command pushing into this repository (`snap wal check`)? Nothing was restored")]
    PgBaseWalMissing {
        /// The snapshot.
        snapshot: String,
        /// The last segment the backup needs.
        needed: String,
        /// The first one missing.
        missing: String,
        /// The repository.
        location: String,
    },
    /// A recovery target beyond a gap in the WAL archive.
    #[error("recovery to {target} would stop early: the WAL archive lacks the segments {first} to {last} before it; choose an earlier target (`snap wal check` shows the gaps); nothing was restored")]
    PgTargetPastGap {
        /// The target given.
        target: String,
        /// The first missing segment.
        first: String,
        /// The last missing segment.
        last: String,
    },
    /// A recovery target WAL location past the newest archived segment.
    #[error(
        "the target {target} is past the WAL archived in {location}, which ends with segment {newest}: recovery cannot reach it; wait for PostgreSQL to archive it (`SELECT pg_switch_wal()` closes the current segment), or choose an earlier target"
    )]
    PgTargetPastArchive {
        /// The target given.
        target: String,
        /// The newest segment the backup's recovery reaches.
        newest: String,
        /// The repository.
        location: String,
    },
    /// A recovery target time before the chosen base backup's end.
    #[error(
        "the target time {target} is before base backup {snapshot} ended ({ended}): recovery from it cannot stop earlier than that, and would silently restore a later state; choose an older base backup (`snap list` shows them)"
    )]
    PgTargetBeforeBase {
        /// The target given.
        target: String,
        /// The base backup's snapshot.
        snapshot: String,
        /// When it ended.
        ended: String,
    },
    /// A WAL push of a file the archive holds with other bytes.
    #[error(
        "{location} already archives WAL file {name} with different content: another cluster (or a restored copy of this one on the same timeline) archives into this repository; give each cluster its own repository, or check which cluster wrote it; nothing was overwritten"
    )]
    WalDiffers {
        /// The file's name.
        name: String,
        /// The repository.
        location: String,
    },
    /// Sync from a repository missing blobs the snapshots sent need.
    #[error("the source is damaged: blob {blob} is {why}; run `snap check`; nothing was sent")]
    SyncSourceDamaged {
        /// The blob.
        blob: String,
        /// What is wrong with it.
        why: String,
    },
    /// A `--pg` restore into a database with objects of its own, without `--yes`.
    #[error(
        "database {db} is not empty ({}{}); run again with --yes to restore over it (pg_restore --clean replaces what the dump has); nothing was changed",
        objects.join(", "), if *more { ", ..." } else { "" }
    )]
    DatabaseNotEmpty {
        /// The database.
        db: String,
        /// Some of its objects.
        objects: Vec<String>,
        /// Whether it has more than those.
        more: bool,
    },
    /// A `--pg-all` restore into a cluster that has databases the dump creates,
    /// without `--yes`.
    #[error(
        "the cluster already has database(s) {} that the dump creates; run again with --yes to drop and recreate them; nothing was changed",
        databases.join(", ")
    )]
    DatabasesExist {
        /// The databases in the way.
        databases: Vec<String>,
    },
    /// A dump that cannot be restored as a whole, found before the restore changed
    /// anything.
    #[error("{dump} cannot be restored: {why}; nothing was changed")]
    DumpNotRestorable {
        /// The dump, as the snapshot names it.
        dump: String,
        /// Why.
        why: String,
    },
    /// An NGW restore into a database with tables, without `--yes`.
    #[error(
        "database {db} already holds {count} table(s) ({}{}); restoring drops them and puts the snapshot's in their place: run again with --yes to do that; nothing was changed",
        tables.join(", "), if *count > tables.len() { ", ..." } else { "" }
    )]
    TablesExist {
        /// The database.
        db: String,
        /// How many tables it holds.
        count: usize,
        /// Some of them (`schema.table`).
        tables: Vec<String>,
    },
    /// An NGW restore into a database without extensions the snapshot's had.
    #[error(
        "database {db} lacks the extension(s) {} that the snapshot's database had; create them first (as a superuser: {}); nothing was changed",
        missing.join(", "),
        missing.iter().map(|e| format!("CREATE EXTENSION {e};")).collect::<Vec<_>>().join(" ")
    )]
    MissingExtensions {
        /// The database.
        db: String,
        /// The extensions it lacks.
        missing: Vec<String>,
    },
    /// An NGW restore of custom fonts into an instance without `[core] sdir`.
    #[error(
        "{}: [core] sdir is not set, so there is nowhere to put the snapshot's custom fonts; nothing was changed",
        config.display()
    )]
    NoFontDir {
        /// The instance's config.ini.
        config: PathBuf,
    },
    /// An NGW restore into a file storage snap cannot write.
    #[error("{}: the file storage cannot be written ({source}); nothing was changed", path.display())]
    StorageNotWritable {
        /// The file storage directory.
        path: PathBuf,
        /// What the operating system said.
        source: std::io::Error,
    },
}

/// A key that does not fit the repository it was given for.
#[derive(Debug, thiserror::Error)]
pub enum KeyMismatch {
    /// A key was given for a repository that is not encrypted.
    #[error("the repository is not encrypted, but a key was given")]
    NotEncrypted,
    /// An encrypted repository was opened without a key.
    #[error("the repository is encrypted and no key was given")]
    NoKey,
    /// The key does not open the repository's config.
    #[error(
        "the key does not open this repository's config (another repository's key, or the config was altered)"
    )]
    WrongKey,
    /// A key export made for another repository.
    #[error("the key file is for repository {key_repo}, not this one ({repo})")]
    OtherRepository {
        /// The repository id in the key file.
        key_repo: String,
        /// This repository's id.
        repo: String,
    },
}

/// A source that gave data or settings snap cannot use.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    /// A backup source path that cannot be reached.
    #[error("backup source {}: {source}; check the path (nothing was recorded)", path.display())]
    Missing {
        /// The path given.
        path: PathBuf,
        /// What the operating system said.
        source: std::io::Error,
    },
    /// A backup source path that could not be read.
    #[error("{}: could not be read: {why}; run snap as a user who can read it, or leave it out", path.display())]
    Unreadable {
        /// The path given.
        path: PathBuf,
        /// The warning its read left.
        why: String,
    },
    /// An entry whose name no snapshot can hold.
    #[error("entry {name:?} cannot be stored in a snapshot: {problem}")]
    EntryName {
        /// The name (its start, lossily decoded).
        name: String,
        /// What is wrong with it.
        problem: &'static str,
    },
    /// A PostgreSQL cluster that cannot be backed up physically (`--pg-base`).
    #[error("base backup of {dsn}: {why}; nothing was recorded")]
    PgBase {
        /// The connection, without its password.
        dsn: String,
        /// What is wrong.
        why: String,
    },
    /// pg_basebackup's archive, unreadable or holding what a data directory must not.
    #[error("pg_basebackup's archive: {why}; nothing was recorded")]
    PgBaseArchive {
        /// What is wrong.
        why: String,
    },
    /// A file in a pg_dump output directory that pg_dump does not write.
    #[error("{}: unexpected pg_dump file name", path.display())]
    PgDumpFileName {
        /// The file.
        path: PathBuf,
    },
    /// An NGW `config.ini` that cannot be read.
    #[error("{}: {source}", path.display())]
    NgwConfig {
        /// The config.ini.
        path: PathBuf,
        /// What the INI reader said.
        source: ini::Error,
    },
    /// An NGW `config.ini` without a key snap needs.
    #[error("{}: [{section}] {key} is missing; snap needs it to reach the instance", path.display())]
    NgwConfigMissing {
        /// The config.ini.
        path: PathBuf,
        /// The section.
        section: String,
        /// The key.
        key: String,
    },
    /// An NGW `config.ini` whose database port is not a number.
    #[error("{}: [core] database.port {value:?} is not a port number", path.display())]
    NgwConfigPort {
        /// The config.ini.
        path: PathBuf,
        /// The value found.
        value: String,
    },
    /// A query on an NGW instance's database failed.
    #[error(
        "database {db} on {host}:{port} as {user}: {what}: {}",
        server_words(error)
    )]
    NgwDatabase {
        /// The database.
        db: String,
        /// Its host.
        host: String,
        /// Its port.
        port: u16,
        /// The user snap connected as.
        user: String,
        /// What snap was doing.
        what: &'static str,
        /// What PostgreSQL or the connection said, quoted whole in the message (not a
        /// `source`, which the CLI would print a second time).
        error: postgres::Error,
    },
    /// A `fileobj` row of an NGW database that is not a component and a uuid.
    #[error("fileobj row ({component:?}, {uuid:?}) is not a component and a 32-hex uuid")]
    NgwFileObj {
        /// The row's component.
        component: String,
        /// The row's uuid.
        uuid: String,
    },
    /// A file the NGW instance lists that cannot be read.
    #[error(
        "{}: listed by the instance but not readable ({why}); the file storage is incomplete, no snapshot recorded",
        path.display()
    )]
    NgwFileUnreadable {
        /// The file.
        path: PathBuf,
        /// Why it cannot be read.
        why: String,
    },
    /// An NGW `$index` line snap cannot use.
    #[error("$index line {line:?}: {why}")]
    NgwIndexLine {
        /// The line.
        line: String,
        /// What is wrong with it.
        why: String,
    },
    /// An archive to import that is damaged or unsafe.
    #[error("{}: {why}; nothing was imported from it", path.display())]
    Archive {
        /// The archive.
        path: PathBuf,
        /// What is wrong with it.
        why: String,
    },
    /// An archive to import with an index snap cannot use.
    #[error("{}: {source}; nothing was imported from it", path.display())]
    ArchiveIndex {
        /// The archive.
        path: PathBuf,
        /// What is wrong with its index.
        source: Box<Error>,
    },
}

fn stderr_tail(stderr: &str) -> String {
    let trimmed = stderr.trim_end();
    if trimmed.is_empty() {
        String::new()
    } else {
        format!("; its stderr ends with:\n{trimmed}")
    }
}

/// Result with [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Attaches a path to an `io::Result`.
pub trait IoContext<T> {
    /// Turns an I/O error into [`Error::Io`] naming `path`.
    fn at(self, path: impl AsRef<Path>) -> Result<T>;
}

impl<T> IoContext<T> for std::io::Result<T> {
    fn at(self, path: impl AsRef<Path>) -> Result<T> {
        self.map_err(|source| Error::Io {
            path: path.as_ref().to_path_buf(),
            source,
        })
    }
}

impl Error {
    /// Whether this error, met reading a pack or blob, proves its bytes damaged (rather
    /// than the storage unreachable or refusing for now): only damage may make `repair`
    /// drop a pack, or `check` record a damaged copy.
    pub fn is_damage(&self) -> bool {
        match self {
            Error::Corrupt { .. }
            | Error::ChecksumMismatch { .. }
            | Error::UnsupportedVersion { .. } => true,
            Error::Io { source, .. } => {
                source.kind() == std::io::ErrorKind::UnexpectedEof
                    || source.raw_os_error() == Some(rustix::io::Errno::IO.raw_os_error())
            }
            _ => false,
        }
    }

    /// Shorthand for [`Error::Corrupt`].
    pub fn corrupt(what: &'static str, id: impl ToString, detail: impl ToString) -> Self {
        Error::Corrupt {
            what,
            id: id.to_string(),
            detail: detail.to_string(),
        }
    }

    /// Shorthand for [`Error::Internal`].
    pub fn internal(
        what: impl ToString,
        source: Option<Box<dyn std::error::Error + Send + Sync>>,
    ) -> Self {
        Error::Internal {
            what: what.to_string(),
            source,
        }
    }
}

/// What the server said, as psql and pg_dump print it (`FATAL:  database "x" does not
/// exist`), or for a connection that failed, the error with its causes: the postgres
/// crate's own text is only `db error` or `error connecting to server`.
fn server_words(e: &postgres::Error) -> String {
    if let Some(db) = e.as_db_error() {
        return format!("{}:  {}", db.severity(), db.message());
    }
    let mut words = e.to_string();
    let mut cause = std::error::Error::source(e);
    while let Some(c) = cause {
        words = format!("{words}: {c}");
        cause = c.source();
    }
    words
}

/// The words of [`Error::NoSnapshots`].
fn no_snapshots(location: &str, unreadable: usize) -> String {
    if unreadable == 0 {
        format!("{location} has no snapshots yet, so there is no `latest`")
    } else {
        format!(
            "{location} has no readable snapshot, so there is no `latest`: {unreadable} snapshot record(s) cannot be read (see the warnings above); `snap check` names them"
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_damage_is_damage() {
        let io = |kind: std::io::ErrorKind| Error::Io {
            path: "packs/ab/ab".into(),
            source: kind.into(),
        };
        assert!(Error::corrupt("pack", "ab", "bad trailer magic").is_damage());
        assert!(io(std::io::ErrorKind::UnexpectedEof).is_damage());
        assert!(Error::Io {
            path: "packs/ab/ab".into(),
            source: std::io::Error::from_raw_os_error(rustix::io::Errno::IO.raw_os_error()),
        }
        .is_damage());
        // A network failure, a refused permission or a vanished file prove nothing about
        // the pack's bytes.
        assert!(!Error::Storage {
            location: "s3://b/r".into(),
            detail: "connection reset".into()
        }
        .is_damage());
        assert!(!io(std::io::ErrorKind::PermissionDenied).is_damage());
        assert!(!Error::NotFound {
            what: "file",
            id: "packs/ab/ab".into()
        }
        .is_damage());
    }
}
