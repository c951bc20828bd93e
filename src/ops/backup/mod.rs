//! The backup operation: sources in, one snapshot out.
//!
//! Streams (standard input, commands, dumps, archives) are stored one after another
//! while, beside them, files are walked in name order, directories in parallel (rayon);
//! each file or stream is cut into chunks window by window, and the chunks of a window
//! are hashed, deduplicated and compressed on all cores. Memory is bounded by the windows in flight
//! and one directory listing per level, never by file, stream or repository size.
//!
//! With a parent snapshot (same host, same paths), a file whose size, mtime, ctime and
//! inode are unchanged reuses the parent's chunk list without being read. Standard
//! input and command output are always read in full; each stream (and each changed
//! file) is cut against its previous version ([`Hints`]), so that where its bytes did
//! not change only hashing is done.
//!
//! Per-file problems (unreadable, vanished) are warnings; any repository error or a
//! failing command aborts the run before the snapshot record is written. Entries the
//! options leave out ([`sfs::Selection`]) are neither stored nor warned about.
//!
//! [`dry_run`] does all of it but store: the saver deduplicates and compresses as
//! usual and counts what it would add, and no pack, index file or snapshot is
//! written.

use std::collections::HashMap;
use std::io::{self, Read};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Instant;

use chrono::Utc;
use rayon::prelude::*;

mod archive;
mod db;
mod ngw;
mod pg_base;
mod rasters;
mod streams;
mod vdir;
mod walk;

#[doc(hidden)]
pub use archive::check_archive;
pub use archive::time_from_name;
pub use pg_base::{set_archive_timeout, BASE_DIR};

use crate::error::{Error, IoContext, Result, SourceError, Usage};
use crate::format::chunker::{
    Batch, ChunkParams, HintSource, Hints, Known, LenFn, Profile, StreamChunker,
};
use crate::format::id::{DataId, Id, SnapshotId, TreeId};
use crate::format::pack::BlobKind;
use crate::format::snapshot::{self, Snapshot, Source, Summary};
use crate::format::tree::{split_path, Content, ListBuilder, ListNode, Timestamp};
use crate::host::hostname;
use crate::locked;
use crate::progress::{Phase, Progress};
use crate::repo::{Repository, Saver};
use crate::source::fs as sfs;

/// What to back up and how (at least one source: see [`BackupOptions::has_source`]).
#[derive(Clone, Debug)]
pub struct BackupOptions {
    /// Files and directories, stored under their absolute paths.
    pub paths: Vec<PathBuf>,
    /// Store standard input under this name.
    pub stdin_name: Option<String>,
    /// Commands and the names their output is stored under.
    pub commands: Vec<(String, String)>,
    /// Commands that write a directory (`{dir}`) and the names it is stored under.
    pub command_dirs: Vec<(String, String)>,
    /// PostgreSQL databases (DSNs), each stored under `db/<name>/`.
    pub pg: Vec<String>,
    /// PostgreSQL clusters (DSNs) for pg_dumpall.
    pub pg_all: Vec<String>,
    /// MongoDB URIs for mongodump.
    pub mongo: Vec<String>,
    /// PostgreSQL clusters (DSNs) for a physical base backup under `pg/base/`.
    pub pg_base: Vec<String>,
    /// A NextGIS Web instance's `config.ini`, stored under `ngw/`.
    pub ngw: Option<PathBuf>,
    /// Record an NGW snapshot whose file storage lacks blobs `fileobj` lists, each a
    /// warning, instead of failing.
    pub allow_missing_blobs: bool,
    /// With `ngw`: leave the instance's `last_backup` setting alone (NGW's `--one-shot`).
    pub ngw_one_shot: bool,
    /// With `ngw`: record the snapshot without the rasters of an external storage that
    /// cannot be reached, naming it, instead of failing.
    pub ngw_skip_external: bool,
    /// With `ngw`: the S3 region of external raster storages (`us-east-1` when `None`,
    /// as GDAL's default).
    pub ngw_s3_region: Option<String>,
    /// An `.ngwbackup` archive and its BLAKE3 ([`archive_id`]), imported under `ngw/`.
    pub archive: Option<(PathBuf, Id)>,
    /// The snapshot's time (default: now), e.g. an imported archive's.
    pub time: Option<chrono::DateTime<Utc>>,
    /// Exclude patterns.
    pub excludes: Vec<String>,
    /// Files of exclude patterns, one a line (blank lines and `#` comments ignored).
    pub exclude_files: Vec<PathBuf>,
    /// Files listing more paths to back up, one a line (as `exclude_files`).
    pub files_from: Vec<PathBuf>,
    /// Do not cross mount points (see [`sfs::Selection::one_file_system`]).
    pub one_file_system: bool,
    /// Leave out the contents of directories tagged by a valid `CACHEDIR.TAG`, but the
    /// tag itself.
    pub exclude_caches: bool,
    /// Leave out the contents of directories holding an entry of one of these names,
    /// but that entry.
    pub exclude_if_present: Vec<String>,
    /// Leave out regular files larger than this many bytes.
    pub exclude_larger_than: Option<u64>,
    /// Tags of the snapshot.
    pub tags: Vec<String>,
    /// Host name to record (default: this machine's).
    pub host: Option<String>,
    /// zstd level (default: the repository's).
    pub compression: Option<i32>,
    /// Chunking profile of stdin and commands.
    pub stream_profile: Profile,
    /// Read every file even when a parent snapshot has it unchanged.
    pub no_parent: bool,
}

impl Default for BackupOptions {
    fn default() -> Self {
        BackupOptions {
            paths: Vec::new(),
            stdin_name: None,
            commands: Vec::new(),
            command_dirs: Vec::new(),
            pg: Vec::new(),
            pg_all: Vec::new(),
            mongo: Vec::new(),
            pg_base: Vec::new(),
            ngw: None,
            allow_missing_blobs: false,
            ngw_one_shot: false,
            ngw_skip_external: false,
            ngw_s3_region: None,
            archive: None,
            time: None,
            excludes: Vec::new(),
            exclude_files: Vec::new(),
            files_from: Vec::new(),
            one_file_system: false,
            exclude_caches: false,
            exclude_if_present: Vec::new(),
            exclude_larger_than: None,
            tags: Vec::new(),
            host: None,
            compression: None,
            stream_profile: Profile::Dump,
            no_parent: false,
        }
    }
}

/// The result of a backup.
#[derive(Debug)]
pub struct BackupOutcome {
    /// The new snapshot's id.
    pub id: SnapshotId,
    /// The new snapshot.
    pub snapshot: Snapshot,
    /// Entries left out, with the reason.
    pub warnings: Vec<String>,
}

/// What a [`dry_run`] found: the summary the snapshot would have (`blobs_added` and
/// the bytes added are what the repository lacks, before encryption), and the
/// warnings.
#[derive(Debug)]
pub struct DryRun {
    /// What would be read and added.
    pub summary: Summary,
    /// Entries that would be left out, with the reason.
    pub warnings: Vec<String>,
}

/// Splits a name given for a stream (`db/ngw.dump`) into safe components.
pub fn stream_components(name: &str) -> Result<Vec<Vec<u8>>> {
    match split_path(name) {
        Some(c) if !c.is_empty() => Ok(c),
        _ => Err(Usage::SnapshotName {
            name: name.to_string(),
        }
        .into()),
    }
}

impl BackupOptions {
    /// Whether anything is to be backed up.
    pub fn has_source(&self) -> bool {
        !(self.paths.is_empty() && self.files_from.is_empty()) || self.has_stream()
    }

    /// Whether anything but paths is to be backed up.
    fn has_stream(&self) -> bool {
        !(self.stdin_name.is_none()
            && self.commands.is_empty()
            && self.command_dirs.is_empty()
            && self.pg.is_empty()
            && self.pg_all.is_empty()
            && self.mongo.is_empty()
            && self.pg_base.is_empty()
            && self.ngw.is_none()
            && self.archive.is_none())
    }
}

/// Runs a backup; `stdin` is read when `opts.stdin_name` is set.
pub fn backup(
    repo: &Repository,
    opts: &BackupOptions,
    stdin: Option<&mut (dyn Read + Send)>,
    progress: &dyn Progress,
) -> Result<BackupOutcome> {
    let done = run(repo, opts, stdin, progress, false)?;
    // Sorted, each once, as `snap tag` leaves them.
    let mut tags = opts.tags.clone();
    tags.sort();
    tags.dedup();
    let snapshot = Snapshot {
        version: snapshot::VERSION,
        time: done.time,
        host: done.host,
        user: crate::host::user_name(),
        tags,
        sources: done.sources,
        tree: done
            .tree
            .ok_or_else(|| Error::internal("a backup without a tree", None))?,
        parent: done.parent,
        original: None,
        summary: done.summary,
        program: format!("snap {}", env!("CARGO_PKG_VERSION")),
    };
    done.lock.check()?;
    let id = repo.save_snapshot(&snapshot)?;
    repo.mark_verified(&id, done.removals)?;
    let mut warnings = done.warnings;
    // After the snapshot is durable, never before: the instance says it was backed up
    // only when it was.
    if let (Some(db), false) = (&done.ngw_db, opts.ngw_one_shot) {
        if let Err(e) = db.record_last_backup(snapshot.time) {
            warnings.push(format!(
                "the snapshot is saved, but the instance's last_backup setting was not updated: {e}"
            ));
        }
    }
    Ok(BackupOutcome {
        id,
        snapshot,
        warnings,
    })
}

/// Reads what [`backup`] would read, and writes nothing to the repository: see the
/// module docs.
pub fn dry_run(
    repo: &Repository,
    opts: &BackupOptions,
    stdin: Option<&mut (dyn Read + Send)>,
    progress: &dyn Progress,
) -> Result<DryRun> {
    let done = run(repo, opts, stdin, progress, true)?;
    Ok(DryRun {
        summary: done.summary,
        warnings: done.warnings,
    })
}

/// What a run read and stored, before its snapshot record is written.
struct Done {
    time: chrono::DateTime<Utc>,
    host: String,
    sources: Vec<Source>,
    /// The snapshot's tree (`None` in a dry run, which leaves the sources unjoined).
    tree: Option<TreeId>,
    parent: Option<SnapshotId>,
    summary: Summary,
    warnings: Vec<String>,
    lock: crate::repo::Lock,
    /// The NGW instance's database, whose `last_backup` a saved snapshot updates.
    ngw_db: Option<crate::source::ngw::DbConfig>,
    /// The index cache's count of removals before the run's first lookup: every blob
    /// the snapshot references was in the cache then (see [`Repository::mark_verified`]).
    removals: i64,
}

/// A backup up to its snapshot record; with `dry`, storing nothing.
fn run(
    repo: &Repository,
    opts: &BackupOptions,
    stdin: Option<&mut (dyn Read + Send)>,
    progress: &dyn Progress,
    dry: bool,
) -> Result<Done> {
    let started = Instant::now();
    let time = opts.time.unwrap_or_else(Utc::now);
    if !opts.has_source() {
        return Err(Usage::NothingToBackUp.into());
    }
    if opts.archive.is_some() && opts.ngw.is_some() {
        return Err(Usage::NgwWithArchive.into());
    }
    // Parsed and read before anything runs: a bad DSN, a mistyped path or a missing
    // list fails the backup at once.
    let dbs = Databases::parse(opts)?;
    let select = selection(opts)?;
    let (mut sources, placed, ngw_config) = place_sources(opts)?;
    if placed.is_empty() && !opts.has_stream() {
        return Err(Usage::NothingToBackUp.into());
    }
    let host = opts.host.clone().unwrap_or_else(hostname);
    let (lock, earlier) = repo.lock_for_backup(&host)?;
    if !dry {
        // The half-filled packs of a backup killed on this host: garbage nobody holds.
        let gone = repo.clean_dead_writers_temps()?;
        if gone > 0 {
            log::info!("removed {gone} temp files of killed runs on this host");
        }
        let resumed = repo.resume_interrupted()?;
        if resumed.packs > 0 {
            log::info!(
                "reusing {} packs ({} bytes) that an interrupted run on this client made durable",
                resumed.packs,
                resumed.bytes
            );
        }
    }
    let removals = repo.removals()?;
    let parent = if opts.no_parent {
        None
    } else {
        find_parent(&earlier, &host, &sources)
    };
    let parent_verified = match &parent {
        Some((id, _)) => repo.is_verified(id)?,
        None => false,
    };
    // Hints trust a previous chunk's length to tell the profile that cut it (not
    // recorded for every source): only while the profiles' length ranges are disjoint
    // (the defaults' are). Rewritten copies keep another repository's cut points.
    let (files, dump) = (repo.params(Profile::Files), repo.params(Profile::Dump));
    let hintable = files.max < dump.min || dump.max < files.min;
    let native = |s: &Snapshot| hintable && s.host == host && s.original.is_none();
    let mut bases = HashMap::new();
    for (_, s) in earlier.iter().rev().filter(|(_, s)| native(s)) {
        for name in s.sources.iter().filter_map(Source::stream_name) {
            bases.entry(name.to_string()).or_insert(s.tree);
        }
    }
    let saver = repo.saver(opts.compression.unwrap_or(repo.config().compression_level))?;
    let run = Run {
        repo,
        stream_params: repo.params(opts.stream_profile),
        saver: if dry { saver.dry_run() } else { saver },
        select,
        files_params: repo.params(Profile::Files),
        progress,
        counts: Counts::default(),
        warnings: Mutex::new(Vec::new()),
        parent_time: parent.as_ref().map(|(_, s)| s.time.timestamp()),
        parent_verified,
        stop: AtomicBool::new(false),
        bases,
        parent_native: parent
            .as_ref()
            .filter(|(_, s)| native(s))
            .map(|(_, s)| s.tree),
    };
    let now = Timestamp {
        sec: time.timestamp(),
        nsec: time.timestamp_subsec_nanos(),
    };
    if let Some((_, p)) = &parent {
        // The parent's size: this run's estimate, known without a walk.
        progress.total(Some(p.summary.bytes_total), Some(p.summary.files), "file");
    }
    let parent_tree = parent.as_ref().map(|(_, s)| s.tree);
    // Streams (stdin, commands, dumps, archives) and the walk of the paths overlap:
    // a dump leaves a core idle while its command produces, a walk while it stats.
    let (streamed, walked) = rayon::join(
        || {
            let r = run.streams(opts, stdin, &dbs, ngw_config.as_ref(), parent_tree, now);
            if r.is_err() {
                run.stop.store(true, Ordering::Relaxed);
            }
            r
        },
        || run.walk(&placed, parent_tree),
    );
    let (mut root, stream_sources, skipped) = streamed?;
    for s in &mut sources {
        if let Source::Ngw {
            skipped_external, ..
        } = s
        {
            skipped_external.clone_from(&skipped);
        }
    }
    sources.extend(stream_sources);
    let walked = walked?;
    // Joining reads trees back (a backup of `/`): a dry run, having stored none, stops
    // before, and misses only the few bytes of the directories above the sources.
    let tree = if dry {
        None
    } else {
        run.graft(&mut root, &placed, walked)?;
        run.progress.phase(Phase::Uploading);
        let tree = run.save_vdir(root, now)?;
        run.saver.flush()?;
        Some(tree)
    };
    let added = run.saver.added();
    let c = &run.counts;
    let warnings = run
        .warnings
        .into_inner()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
    let summary = Summary {
        files: load(&c.files),
        dirs: load(&c.dirs),
        others: load(&c.others),
        files_read: load(&c.files_read),
        bytes_total: load(&c.bytes_total),
        bytes_read: load(&c.bytes_read),
        blobs_added: added.blobs,
        bytes_added_raw: added.raw,
        bytes_added: added.stored,
        warnings: warnings.len() as u64,
        duration: started.elapsed().as_secs_f64(),
    };
    Ok(Done {
        time,
        host,
        sources,
        tree,
        parent: parent.map(|(id, _)| id),
        summary,
        warnings,
        lock,
        ngw_db: ngw_config.map(|c| c.db),
        removals,
    })
}

/// What a backup leaves out, its lists read.
fn selection(opts: &BackupOptions) -> Result<sfs::Selection> {
    let mut patterns = opts.excludes.clone();
    for f in &opts.exclude_files {
        patterns.extend(sfs::read_patterns(f)?);
    }
    Ok(sfs::Selection {
        excludes: sfs::Excludes::new(
            &patterns,
            Some(&std::env::current_dir().at(std::path::Path::new("."))?),
        )?,
        one_file_system: opts.one_file_system,
        exclude_caches: opts.exclude_caches,
        if_present: opts.exclude_if_present.iter().map(Into::into).collect(),
        larger_than: opts.exclude_larger_than,
    })
}

/// A path source: its components below `/` (empty for `/` itself) and its absolute
/// path.
type Placed = (Vec<Vec<u8>>, PathBuf);

/// The sources a backup names that are known before anything runs: its paths (each
/// checked to exist and placed in the snapshot's tree) and its NGW instance (the
/// configuration loaded).
fn place_sources(
    opts: &BackupOptions,
) -> Result<(
    Vec<Source>,
    Vec<Placed>,
    Option<crate::source::ngw::NgwConfig>,
)> {
    let mut sources = Vec::new();
    let mut placed: Vec<Placed> = Vec::new();
    let mut paths = opts.paths.clone();
    for f in &opts.files_from {
        paths.extend(
            sfs::read_list("--files-from", f)?
                .into_iter()
                .map(PathBuf::from),
        );
    }
    for p in &paths {
        let abs = sfs::normalize(&std::path::absolute(p).at(p)?);
        // Before any dump runs: a mistyped path fails at once.
        if let Err(source) = std::fs::symlink_metadata(&abs) {
            return Err(SourceError::Missing { path: abs, source }.into());
        }
        let text = abs
            .to_str()
            .ok_or_else(|| Usage::SourcePathNotUtf8 { path: abs.clone() })?
            .to_string();
        let comps = abs
            .components()
            .filter_map(|c| match c {
                std::path::Component::Normal(n) => Some(n.as_bytes().to_vec()),
                _ => None,
            })
            .collect();
        sources.push(Source::Path { path: text });
        placed.push((comps, abs));
    }
    let ngw_config = match &opts.ngw {
        Some(p) => {
            let abs = std::path::absolute(p).at(p)?;
            let cfg = crate::source::ngw::NgwConfig::load(&abs)?;
            sources.push(Source::Ngw {
                config: abs.to_string_lossy().into_owned(),
                skipped_external: Vec::new(),
            });
            Some(cfg)
        }
        None => None,
    };
    Ok((sources, placed, ngw_config))
}

/// The database sources of a backup, parsed.
struct Databases {
    pg: Vec<crate::source::pg::Dsn>,
    pg_all: Vec<crate::source::pg::Dsn>,
    mongo: Vec<crate::source::mongo::MongoUri>,
    pg_base: Vec<crate::source::pg::Dsn>,
}

impl Databases {
    fn parse(opts: &BackupOptions) -> Result<Databases> {
        let dsns = |v: &[String]| {
            v.iter()
                .map(|d| crate::source::pg::Dsn::parse(d))
                .collect::<Result<Vec<_>>>()
        };
        Ok(Databases {
            pg: dsns(&opts.pg)?,
            pg_all: dsns(&opts.pg_all)?,
            pg_base: dsns(&opts.pg_base)?,
            mongo: opts
                .mongo
                .iter()
                .map(|u| crate::source::mongo::MongoUri::parse(u))
                .collect::<Result<_>>()?,
        })
    }
}

/// The BLAKE3 of a whole file (an archive's identity for import).
pub fn archive_id(path: &Path) -> Result<Id> {
    archive::not_a_directory(path)?;
    let mut h = blake3::Hasher::new();
    h.update_reader(std::fs::File::open(path).at(path)?)
        .at(path)?;
    Ok(Id::from(h.finalize()))
}

/// The latest of `earlier` (oldest first) made on `host` with exactly the same path
/// sources.
fn find_parent(
    earlier: &[(SnapshotId, Snapshot)],
    host: &str,
    sources: &[Source],
) -> Option<(SnapshotId, Snapshot)> {
    let want = Snapshot::parent_key(sources);
    if want.is_empty() {
        return None;
    }
    earlier
        .iter()
        .rev()
        .find(|(_, s)| s.host == host && Snapshot::parent_key(&s.sources) == want)
        .cloned()
}

/// Mode of a file made from a stream: data such as dumps is private to its owner.
const STREAM_MODE: u32 = 0o100600;

#[derive(Default)]
struct Counts {
    files: AtomicU64,
    dirs: AtomicU64,
    others: AtomicU64,
    files_read: AtomicU64,
    bytes_total: AtomicU64,
    bytes_read: AtomicU64,
}

fn add(a: &AtomicU64, n: u64) {
    a.fetch_add(n, Ordering::Relaxed);
}

struct Run<'r> {
    repo: &'r Repository,
    /// Chunking of standard input and command output.
    stream_params: ChunkParams,
    saver: Saver<'r>,
    select: sfs::Selection,
    files_params: ChunkParams,
    progress: &'r dyn Progress,
    counts: Counts,
    warnings: Mutex<Vec<String>>,
    /// Start of the parent snapshot (seconds); see [`Run::racy`].
    parent_time: Option<i64>,
    /// Whether the parent has every blob it references by the index cache
    /// ([`Repository::is_verified`]): then an unchanged file's chunks are not looked up.
    parent_verified: bool,
    /// Set when the streams failed: the walk beside them gives up (its result would
    /// be thrown away).
    stop: AtomicBool,
    /// For each stream name, the tree of this host's latest snapshot that has it: where
    /// a stream's previous version is looked for. Rewritten copies (`sync` into other
    /// blob ids) are left out: they keep their source's cut points.
    bases: HashMap<String, TreeId>,
    /// The parent's tree, unless it is a rewritten copy: previous versions of changed
    /// files, and of streams under no stream name (an NGW instance's dump).
    parent_native: Option<TreeId>,
}

impl Run<'_> {
    fn warn(&self, w: String) {
        log::debug!("{w}");
        locked(&self.warnings).push(w);
    }

    fn last_warning(&self) -> String {
        locked(&self.warnings).last().cloned().unwrap_or_default()
    }

    /// Whether a new snapshot may reference `content`, a file of the parent, without
    /// storing it again: every blob of it is in the repository.
    fn reusable(&self, content: &Content) -> Result<bool> {
        Ok(self.parent_verified || self.repo.content_complete(content)?)
    }

    /// Hashes, deduplicates and stores the chunks of one window, in parallel.
    fn save_chunks(&self, batch: &Batch) -> Result<Vec<DataId>> {
        let save = |(c, known): (&std::ops::Range<usize>, &Known)| -> Result<DataId> {
            let d = &batch.data[c.clone()];
            let id = match *known {
                Known::Stored(id) => return Ok(id),
                Known::Id(id) => id,
                Known::Nothing => DataId(self.repo.blob_id(d)),
            };
            self.saver.save_hashed(BlobKind::Data, id.0, d)?;
            Ok(id)
        };
        if batch.cuts.len() > 1 {
            batch.cuts.par_iter().zip(&batch.known).map(save).collect()
        } else {
            batch.cuts.iter().zip(&batch.known).map(save).collect()
        }
    }

    /// Hints from a previous version: its chunk ids in order, read as the new version
    /// advances, and their lengths from the index. A chunk the index lacks ends them.
    fn hints(&self, prev: Option<Content>) -> Option<Hints<'_>> {
        let content = prev?;
        let repo = self.repo;
        let mut ids = repo.chunk_ids(&content);
        let source: HintSource = Box::new(move || ids.next()?.ok());
        let len: LenFn = Box::new(|id| {
            let loc = repo.locate(&id.0).ok()?;
            (loc.kind == BlobKind::Data).then_some(loc.raw_len)
        });
        Some(Hints::new(
            source,
            len,
            Box::new(|d| DataId(repo.blob_id(d))),
        ))
    }

    /// Chunks, stores and lists a stream; the next window is read and chunked while
    /// the current one is hashed and stored. The outer error is the repository's
    /// (fatal), the inner one the reader's (the caller decides).
    fn ingest(
        &self,
        r: &mut (dyn Read + Send),
        params: ChunkParams,
        size_hint: Option<u64>,
        prev: Option<Hints<'_>>,
    ) -> Result<io::Result<(Content, u64)>> {
        let saver = &self.saver;
        let mut store_list = |n: &ListNode| saver.save(BlobKind::List, &n.encode());
        let mut chunker = StreamChunker::new(params, self.repo.gear(), size_hint);
        if let Some(h) = prev {
            chunker = chunker.with_hints(h);
        }
        let mut list = ListBuilder::default();
        let mut total = 0u64;
        let mut next = chunker.next_batch(r);
        loop {
            if self.stop.load(Ordering::Relaxed) {
                return Ok(Err(io::Error::other("the backup stopped")));
            }
            let batch = match next {
                Ok(Some(b)) => b,
                Ok(None) => break,
                Err(e) => return Ok(Err(e)),
            };
            let (following, ids) =
                rayon::join(|| chunker.next_batch(r), || self.save_chunks(&batch));
            let n = batch.bytes() as u64;
            total += n;
            self.progress.bytes(n);
            for id in ids? {
                list.push(id, &mut store_list)?;
            }
            chunker.recycle(batch.data);
            next = following;
        }
        add(&self.counts.bytes_read, total);
        Ok(Ok((list.finish(&mut store_list)?, total)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::tree::{Node, NodeKind};
    use crate::progress::NoProgress;

    fn bytes(len: usize, seed: u8) -> Vec<u8> {
        let mut out = vec![0u8; len];
        blake3::Hasher::new()
            .update(&[seed])
            .finalize_xof()
            .fill(&mut out);
        out
    }

    /// The chunk ids and bytes stored at `at` in `repo`'s latest snapshot.
    fn stored(repo: &Repository, at: &[&str]) -> (Vec<DataId>, Vec<u8>) {
        let (_, snap) = repo.snapshots().unwrap().pop().unwrap();
        let at: Vec<Vec<u8>> = at.iter().map(|c| c.as_bytes().to_vec()).collect();
        let Some(Node {
            kind: NodeKind::File(content),
            ..
        }) = repo.find_node(&snap.tree, &at).unwrap()
        else {
            panic!("no file at {at:?}");
        };
        let ids = repo.chunk_ids(&content).map(|i| i.unwrap()).collect();
        let mut data = Vec::new();
        repo.write_content(&content, &mut data).unwrap();
        (ids, data)
    }

    /// A stream (no parent: found by its name) and a changed file (through the parent)
    /// are cut against their previous versions, to exactly the chunks a repository
    /// that never saw those versions makes of them.
    #[test]
    fn cutting_against_the_previous_version_changes_no_chunk() {
        let dir = tempfile::tempdir().unwrap();
        let repo = Repository::init(
            &dir.path().join("seen"),
            &crate::repo::InitOptions::default(),
        )
        .unwrap();
        let files = dir.path().join("files");
        std::fs::create_dir(&files).unwrap();
        let big = files.join("big.bin");
        let run = |repo: &Repository, stream: &[u8], paths: Vec<PathBuf>| {
            let opts = BackupOptions {
                stdin_name: Some("db/dump.sql".into()),
                paths,
                ..Default::default()
            };
            backup(repo, &opts, Some(&mut io::Cursor::new(stream)), &NoProgress).unwrap();
        };
        let day1 = bytes(3 << 20, 1);
        std::fs::write(&big, bytes(14 << 20, 2)).unwrap();
        run(&repo, &day1, Vec::new());
        run(&repo, b"another stream, same name, other job", Vec::new());
        run(&repo, &day1, vec![files.clone()]);

        let mut day2 = day1.clone();
        day2[1 << 20] ^= 1;
        day2.splice(2 << 20..2 << 20, *b"inserted row\n");
        let mut file2 = bytes(14 << 20, 2);
        file2[7 << 20] ^= 1;
        std::fs::write(&big, &file2).unwrap();
        let fresh = Repository::init(
            &dir.path().join("fresh"),
            &crate::repo::InitOptions::default(),
        )
        .unwrap();
        for r in [&repo, &fresh] {
            run(r, &day2, vec![files.clone()]);
        }
        let big_at: Vec<String> = big
            .components()
            .filter_map(|c| match c {
                std::path::Component::Normal(n) => Some(n.to_string_lossy().into_owned()),
                _ => None,
            })
            .collect();
        let big_at: Vec<&str> = big_at.iter().map(String::as_str).collect();
        for (at, want) in [(&["db", "dump.sql"][..], &day2), (&big_at[..], &file2)] {
            let (ids, data) = stored(&repo, at);
            assert!(data == *want, "{at:?} restores as backed up");
            assert_eq!(ids, stored(&fresh, at).0, "{at:?}: same chunks");
        }
        // Only the chunks around the two edits are new (the stream's neighbours of
        // each edit, and the file's one chunk), plus metadata.
        let (_, last) = repo.snapshots().unwrap().pop().unwrap();
        assert!(
            last.summary.bytes_added_raw < 300_000 + (4 << 20),
            "{} bytes added",
            last.summary.bytes_added_raw
        );
    }
}
