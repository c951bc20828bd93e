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
//! failing command aborts the run before the snapshot record is written.

use std::collections::{BTreeMap, HashMap};
use std::ffi::OsStr;
use std::fs::Metadata;
use std::io::{self, Read};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Instant;

use chrono::Utc;
use rayon::prelude::*;

mod archive;
mod db;
mod ngw;

#[doc(hidden)]
pub use archive::check_archive;
pub use archive::time_from_name;

use crate::chunker::{Batch, ChunkParams, HintSource, Hints, Known, LenFn, Profile, StreamChunker};
use crate::error::{Error, IoContext, Result};
use crate::id::Id;
use crate::locked;
use crate::pack::BlobKind;
use crate::progress::Progress;
use crate::repo::{hostname, Repository, Saver};
use crate::snapshot::{self, Snapshot, Source, Summary};
use crate::source::command::Running;
use crate::source::fs::{self as sfs, Special};
use crate::tree::{
    split_path, Content, ListBuilder, ListNode, Meta, Node, NodeKind, Timestamp, Tree,
};

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
    /// A NextGIS Web instance's `config.ini`, stored under `ngw/`.
    pub ngw: Option<PathBuf>,
    /// An `.ngwbackup` archive and its BLAKE3 ([`archive_id`]), imported under `ngw/`.
    pub archive: Option<(PathBuf, Id)>,
    /// The snapshot's time (default: now), e.g. an imported archive's.
    pub time: Option<chrono::DateTime<Utc>>,
    /// Exclude patterns.
    pub excludes: Vec<String>,
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
            ngw: None,
            archive: None,
            time: None,
            excludes: Vec::new(),
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
    pub id: Id,
    /// The new snapshot.
    pub snapshot: Snapshot,
    /// Entries left out, with the reason.
    pub warnings: Vec<String>,
}

/// Splits a name given for a stream (`db/ngw.dump`) into safe components.
pub fn stream_components(name: &str) -> Result<Vec<Vec<u8>>> {
    match split_path(name) {
        Some(c) if !c.is_empty() => Ok(c),
        _ => Err(Error::Invalid(format!(
            "{name:?} is not a usable name inside a snapshot (use a relative path such as db/app.sql, without . or ..)"
        ))),
    }
}

impl BackupOptions {
    /// Whether anything is to be backed up.
    pub fn has_source(&self) -> bool {
        !(self.paths.is_empty()
            && self.stdin_name.is_none()
            && self.commands.is_empty()
            && self.command_dirs.is_empty()
            && self.pg.is_empty()
            && self.pg_all.is_empty()
            && self.mongo.is_empty()
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
    let started = Instant::now();
    let time = opts.time.unwrap_or_else(Utc::now);
    if !opts.has_source() {
        return Err(Error::Invalid(
            "nothing to back up: give paths, --stdin-name, --command, --command-dir, --pg, --pg-all, --mongo or --ngw".into(),
        ));
    }
    if opts.archive.is_some() && opts.ngw.is_some() {
        return Err(Error::Invalid(
            "--ngw and an imported archive cannot share a snapshot".into(),
        ));
    }
    // Parsed before anything runs: a bad DSN fails the backup at once.
    let dbs = Databases::parse(opts)?;
    let mut sources = Vec::new();
    let mut placed: Vec<(Vec<Vec<u8>>, PathBuf)> = Vec::new();
    for p in &opts.paths {
        let abs = normalize(&std::path::absolute(p).at(p)?);
        // Before any dump runs: a mistyped path fails at once.
        if let Err(e) = std::fs::symlink_metadata(&abs) {
            return Err(Error::Invalid(format!(
                "backup source {}: {e}; check the path (nothing was recorded)",
                abs.display()
            )));
        }
        let text = abs
            .to_str()
            .ok_or_else(|| {
                Error::Invalid(format!(
                    "{}: source paths must be UTF-8 (names below them need not be)",
                    abs.display()
                ))
            })?
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
            });
            Some(cfg)
        }
        None => None,
    };
    let lock = repo.lock(false, "backup")?;
    let resumed = repo.resume_interrupted()?;
    if resumed.packs > 0 {
        log::info!(
            "reusing {} packs ({} bytes) that an interrupted run on this client made durable",
            resumed.packs,
            resumed.bytes
        );
    }
    let host = opts.host.clone().unwrap_or_else(hostname);
    let earlier = repo.snapshots()?;
    let parent = if opts.no_parent {
        None
    } else {
        find_parent(&earlier, &host, &sources)
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
    let run = Run {
        repo,
        stream_params: repo.params(opts.stream_profile),
        saver: repo.saver(opts.compression.unwrap_or(repo.config().compression_level))?,
        excludes: sfs::Excludes::new(&opts.excludes)?,
        files_params: repo.params(Profile::Files),
        progress,
        counts: Counts::default(),
        warnings: Mutex::new(Vec::new()),
        parent_time: parent.as_ref().map(|(_, s)| s.time.timestamp()),
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
    let (mut root, stream_sources) = streamed?;
    sources.extend(stream_sources);
    for ((comps, _), node) in placed.iter().zip(walked?) {
        if comps.is_empty() {
            let NodeKind::Dir(tree) = &node.kind else {
                return Err(Error::Invalid("/ is not a directory".into()));
            };
            root.meta = Some(node.meta);
            // The tree was just saved: commit it before reading it back.
            run.saver.flush()?;
            for n in repo.load_tree(tree)?.nodes {
                root.insert(std::slice::from_ref(&n.name.clone()), n)?;
            }
        } else {
            // Metadata of the real directories above a source (/srv for /srv/ngw).
            for depth in 1..comps.len() {
                let dir: PathBuf = std::iter::once(Path::new("/"))
                    .chain(
                        comps[..depth]
                            .iter()
                            .map(|c| Path::new(OsStr::from_bytes(c))),
                    )
                    .collect();
                if let Ok(md) = std::fs::metadata(&dir) {
                    root.set_dir_meta(&comps[..depth], sfs::meta_of(&md));
                }
            }
            root.insert(comps, node)?;
        }
    }

    let tree = run.save_vdir(root, now)?;
    run.saver.flush()?;
    let added = run.saver.added();
    let c = &run.counts;
    let warnings = run.warnings.into_inner().unwrap_or_else(|p| p.into_inner());
    let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
    let snapshot = Snapshot {
        version: snapshot::VERSION,
        time,
        host,
        user: crate::host::user_name(),
        tags: opts.tags.clone(),
        sources,
        tree,
        parent: parent.map(|(id, _)| id),
        original: None,
        summary: Summary {
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
        },
        program: format!("snap {}", env!("CARGO_PKG_VERSION")),
    };
    lock.check()?;
    let id = repo.save_snapshot(&snapshot)?;
    Ok(BackupOutcome {
        id,
        snapshot,
        warnings,
    })
}

/// The database sources of a backup, parsed.
struct Databases {
    pg: Vec<crate::source::pg::Dsn>,
    pg_all: Vec<crate::source::pg::Dsn>,
    mongo: Vec<crate::source::mongo::MongoUri>,
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
    let mut h = blake3::Hasher::new();
    h.update_reader(std::fs::File::open(path).at(path)?)
        .at(path)?;
    Ok(Id::from(h.finalize()))
}

/// Resolves `.` and `..` lexically (as restic does), so `../../x` is stored where it is.
fn normalize(p: &Path) -> PathBuf {
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

/// The latest of `earlier` (oldest first) made on `host` with exactly the same path
/// sources.
fn find_parent(
    earlier: &[(Id, Snapshot)],
    host: &str,
    sources: &[Source],
) -> Option<(Id, Snapshot)> {
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
    excludes: sfs::Excludes,
    files_params: ChunkParams,
    progress: &'r dyn Progress,
    counts: Counts,
    warnings: Mutex<Vec<String>>,
    /// Start of the parent snapshot (seconds); see [`Run::racy`].
    parent_time: Option<i64>,
    /// Set when the streams failed: the walk beside them gives up (its result would
    /// be thrown away).
    stop: AtomicBool,
    /// For each stream name, the tree of this host's latest snapshot that has it: where
    /// a stream's previous version is looked for. Rewritten copies (`sync` into other
    /// blob ids) are left out: they keep their source's cut points.
    bases: HashMap<String, Id>,
    /// The parent's tree, unless it is a rewritten copy: previous versions of changed
    /// files, and of streams under no stream name (an NGW instance's dump).
    parent_native: Option<Id>,
}

impl Run<'_> {
    /// Whether a parent entry's mtime is too close to the parent's backup to trust: a
    /// file rewritten within the same timestamp tick right after it was read would
    /// look unchanged forever ("racy clean", as git calls it).
    fn racy(&self, old: &Meta) -> bool {
        self.parent_time.is_none_or(|t| old.mtime.sec >= t - 1)
    }

    fn warn(&self, w: String) {
        log::debug!("{w}");
        locked(&self.warnings).push(w);
    }

    /// Stores the stream sources (stdin, commands, databases, an archive, NGW) into a
    /// new root; returns it with their [`Source`] records.
    fn streams(
        &self,
        opts: &BackupOptions,
        stdin: Option<&mut (dyn Read + Send)>,
        dbs: &Databases,
        ngw_config: Option<&crate::source::ngw::NgwConfig>,
        parent_tree: Option<Id>,
        now: Timestamp,
    ) -> Result<(VDir, Vec<Source>)> {
        let mut root = VDir::default();
        let mut sources = Vec::new();
        if let Some(name) = &opts.stdin_name {
            let comps = stream_components(name)?;
            let input = stdin
                .ok_or_else(|| Error::Invalid("--stdin-name given but no standard input".into()))?;
            let prev = self.hints(self.previous(&comps));
            let (content, size) = self
                .ingest(input, self.stream_params, None, prev)?
                .at("<stdin>")?;
            self.put_stream(&mut root, &comps, content, size, STREAM_MODE, now)?;
            sources.push(Source::Stdin {
                name: name.clone(),
                profile: opts.stream_profile,
            });
        }
        for (command, name) in &opts.commands {
            if let Some(w) = crate::source::command::compression_warning(command) {
                log::warn!("{w}");
            }
            let mut sh = std::process::Command::new("sh");
            sh.arg("-c").arg(command);
            self.stream_command(sh, command, name, &mut root, now)?;
            sources.push(Source::Command {
                command: command.clone(),
                name: name.clone(),
                profile: opts.stream_profile,
                exit_status: 0,
            });
        }
        for (command, name) in &opts.command_dirs {
            sources.push(db::command_dir(self, command, name, &mut root, now)?);
        }
        for dsn in &dbs.pg {
            sources.push(db::pg(self, dsn, &mut root, now)?);
        }
        for dsn in &dbs.pg_all {
            sources.push(db::pg_all(self, dsn, &mut root, now)?);
        }
        for uri in &dbs.mongo {
            sources.push(db::mongo(self, uri, &mut root, now)?);
        }
        if let Some((path, blake3)) = &opts.archive {
            archive::import(self, path, &mut root, now)?;
            sources.push(Source::Archive {
                file: path
                    .file_name()
                    .unwrap_or_default()
                    .to_string_lossy()
                    .into_owned(),
                blake3: *blake3,
            });
        }
        if let Some(cfg) = ngw_config {
            ngw::backup(self, cfg, parent_tree, &mut root, now)?;
        }
        Ok((root, sources))
    }

    /// Backs up the path sources, each against its place in the parent snapshot.
    fn walk(
        &self,
        placed: &[(Vec<Vec<u8>>, PathBuf)],
        parent_tree: Option<Id>,
    ) -> Result<Vec<Node>> {
        placed
            .iter()
            .map(|(comps, abs)| {
                let md = std::fs::symlink_metadata(abs).at(abs)?;
                let prev = match parent_tree {
                    Some(tree) => self.repo.find_node(&tree, comps).unwrap_or_else(|e| {
                        log::warn!(
                            "{}: parent snapshot unreadable ({e}); reading every file",
                            abs.display()
                        );
                        None
                    }),
                    None => None,
                };
                let name = comps.last().cloned().unwrap_or_else(|| b"/".to_vec());
                self.node(abs, name, md, prev.as_ref())?.ok_or_else(|| {
                    Error::Invalid(format!(
                        "{}: could not be read: {}",
                        abs.display(),
                        self.last_warning()
                    ))
                })
            })
            .collect()
    }

    /// Records a stream that went through [`Run::ingest`] (stdin, command output, a
    /// dump file, an archive member) as a file at `at`, counted as read.
    fn put_stream(
        &self,
        root: &mut VDir,
        at: &[Vec<u8>],
        content: Content,
        size: u64,
        mode: u32,
        mtime: Timestamp,
    ) -> Result<()> {
        add(&self.counts.files, 1);
        add(&self.counts.files_read, 1);
        add(&self.counts.bytes_total, size);
        let node = Node {
            name: Vec::new(),
            kind: NodeKind::File(content),
            meta: synthetic_meta(mode, size, mtime),
        };
        root.insert(at, node)
    }

    /// Runs `cmd` (`display` names it) and stores its standard output at `name`. A
    /// command that fails or is killed is an error quoting its stderr; a successful one
    /// that wrote to stderr, or whose output is compressed, is warned about (on the
    /// log: the snapshot is still complete).
    fn stream_command(
        &self,
        cmd: std::process::Command,
        display: &str,
        name: &str,
        root: &mut VDir,
        now: Timestamp,
    ) -> Result<()> {
        let comps = stream_components(name)?;
        self.progress.entry(Path::new(name));
        let mut child = Running::start(cmd, display)?;
        let mut sniff = crate::source::command::Sniff::new(child.stdout());
        let prev = self.hints(self.previous(&comps));
        let read = match self.ingest(&mut sniff, self.stream_params, None, prev) {
            Ok(r) => r,
            Err(e) => {
                child.kill();
                return Err(e);
            }
        };
        let format = sniff.compressed();
        let stderr = child.finish()?;
        let (content, size) = read.map_err(|e| Error::Command {
            command: display.to_string(),
            status: format!("output could not be read: {e}"),
            stderr: String::new(),
        })?;
        if !stderr.trim().is_empty() {
            log::warn!(
                "command `{display}` succeeded but wrote to stderr: {}",
                stderr.trim_end()
            );
        }
        if let Some(format) = format {
            log::warn!(
                "the output of `{display}` is {format}-compressed, which defeats deduplication: every run stores it whole. Store it uncompressed (drop the compressor, pg_dump -Z0) and let snap compress"
            );
        }
        self.put_stream(root, &comps, content, size, STREAM_MODE, now)
    }

    /// Stores bytes snap generated (a restore list, an `$index`) as a file at `at`.
    fn put_bytes(
        &self,
        root: &mut VDir,
        at: &[Vec<u8>],
        bytes: Vec<u8>,
        now: Timestamp,
    ) -> Result<()> {
        let params = self.repo.params(Profile::Dump);
        let (content, size) = self
            .ingest(&mut io::Cursor::new(bytes), params, None, None)?
            .at("<generated file>")?;
        self.put_stream(root, at, content, size, STREAM_MODE, now)
    }

    fn last_warning(&self) -> String {
        locked(&self.warnings).last().cloned().unwrap_or_default()
    }

    /// Hashes, deduplicates and stores the chunks of one window, in parallel.
    fn save_chunks(&self, batch: &Batch) -> Result<Vec<Id>> {
        let save = |(c, known): (&std::ops::Range<usize>, &Known)| -> Result<Id> {
            let d = &batch.data[c.clone()];
            let id = match *known {
                Known::Stored(id) => return Ok(id),
                Known::Id(id) => id,
                Known::Nothing => self.repo.blob_id(d),
            };
            self.saver.save_hashed(BlobKind::Data, id, d)?;
            Ok(id)
        };
        if batch.cuts.len() > 1 {
            batch.cuts.par_iter().zip(&batch.known).map(save).collect()
        } else {
            batch.cuts.iter().zip(&batch.known).map(save).collect()
        }
    }

    /// The previous version of what a stream source stores at `at`: the node there in
    /// the latest snapshot with the stream name above it, else in the parent.
    fn previous_node(&self, at: &[Vec<u8>]) -> Option<Node> {
        let tree = (1..=at.len())
            .rev()
            .find_map(|n| {
                let name = at[..n]
                    .iter()
                    .map(|c| String::from_utf8_lossy(c))
                    .collect::<Vec<_>>()
                    .join("/");
                self.bases.get(&name)
            })
            .or(self.parent_native.as_ref())?;
        self.repo.find_node(tree, at).ok().flatten()
    }

    /// The previous version of the stream stored at `at`.
    fn previous(&self, at: &[Vec<u8>]) -> Option<Content> {
        file_content(&self.previous_node(at)?)
    }

    /// The previous version of the directory a source fills at `at` (a dump's
    /// directory), read once for all its files.
    fn previous_dir(&self, at: &[Vec<u8>]) -> Option<Tree> {
        match self.previous_node(at)?.kind {
            NodeKind::Dir(id) => self.repo.load_tree(&id).ok(),
            _ => None,
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
            let loc = repo.locate(id).ok()?;
            (loc.kind == BlobKind::Data).then_some(loc.raw_len)
        });
        Some(Hints::new(source, len, Box::new(|d| repo.blob_id(d))))
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

    /// Backs up one entry; `None` when it was left out with a warning.
    fn node(
        &self,
        path: &Path,
        name: Vec<u8>,
        md: Metadata,
        prev: Option<&Node>,
    ) -> Result<Option<Node>> {
        if self.stop.load(Ordering::Relaxed) {
            return Ok(None);
        }
        let meta = sfs::meta_of(&md);
        let ft = md.file_type();
        let kind = if ft.is_dir() {
            return self.dir(path, name, meta, prev);
        } else if ft.is_file() {
            return self.file(path, name, md, meta, prev);
        } else if ft.is_symlink() {
            match std::fs::read_link(path) {
                Ok(t) => NodeKind::Symlink(t.into_os_string().into_vec()),
                Err(e) => {
                    self.warn(format!("{}: {e}", path.display()));
                    return Ok(None);
                }
            }
        } else {
            match sfs::special(&md) {
                Some(Special::Fifo) => NodeKind::Fifo,
                Some(Special::Socket) => NodeKind::Socket,
                Some(Special::CharDev(r)) => NodeKind::CharDev(r),
                Some(Special::BlockDev(r)) => NodeKind::BlockDev(r),
                None => {
                    self.warn(format!("{}: unknown file type, skipped", path.display()));
                    return Ok(None);
                }
            }
        };
        add(&self.counts.others, 1);
        Ok(Some(Node { name, kind, meta }))
    }

    fn file(
        &self,
        path: &Path,
        name: Vec<u8>,
        md: Metadata,
        mut meta: Meta,
        prev: Option<&Node>,
    ) -> Result<Option<Node>> {
        let old = match prev {
            Some(Node {
                kind: NodeKind::File(content),
                meta,
                ..
            }) => Some((content, meta)),
            _ => None,
        };
        if let Some((content, old)) = old {
            if sfs::unchanged(old, &meta)
                && !self.racy(old)
                && self.repo.content_complete(content)?
            {
                add(&self.counts.files, 1);
                add(&self.counts.bytes_total, meta.size);
                self.progress.bytes(meta.size);
                return Ok(Some(Node {
                    name,
                    kind: NodeKind::File(content.clone()),
                    meta,
                }));
            }
        }
        let mut f = match sfs::open_regular(path, &md) {
            Ok(f) => f,
            Err(e) => {
                self.warn(format!("{}: {e}", path.display()));
                return Ok(None);
            }
        };
        self.progress.entry(path);
        // A changed file is cut against its version in the parent, if that is native.
        let earlier = old.filter(|_| self.parent_native.is_some());
        let hints = self.hints(earlier.map(|(content, _)| content.clone()));
        let (content, size) = match self.ingest(&mut f, self.files_params, Some(md.len()), hints)? {
            Ok(r) => r,
            Err(e) => {
                self.warn(format!("{}: {e}", path.display()));
                return Ok(None);
            }
        };
        if size != meta.size {
            self.warn(format!(
                "{}: changed size while being read ({} bytes, then {size}); stored as read",
                path.display(),
                meta.size
            ));
            meta.size = size;
        }
        add(&self.counts.files, 1);
        add(&self.counts.files_read, 1);
        add(&self.counts.bytes_total, size);
        Ok(Some(Node {
            name,
            kind: NodeKind::File(content),
            meta,
        }))
    }

    fn dir(
        &self,
        path: &Path,
        name: Vec<u8>,
        meta: Meta,
        prev: Option<&Node>,
    ) -> Result<Option<Node>> {
        let entries = match sfs::read_dir_sorted(path, |p, n| self.excludes.excluded(p, n)) {
            Ok(e) => e,
            Err(e) => {
                self.warn(format!("{}: {e}", path.display()));
                return Ok(None);
            }
        };
        let prev_tree = match prev {
            Some(Node {
                kind: NodeKind::Dir(id),
                ..
            }) => match self.repo.load_tree(id) {
                Ok(t) => Some((*id, t)),
                Err(e) => {
                    log::warn!(
                        "{}: parent snapshot unreadable here ({e}); reading every file",
                        path.display()
                    );
                    None
                }
            },
            _ => None,
        };
        let nodes: Vec<Option<Node>> = entries
            .into_par_iter()
            .map(|e| {
                let md = match e.md {
                    Ok(m) => m,
                    Err(err) => {
                        self.warn(format!("{}: {err}", e.path.display()));
                        return Ok(None);
                    }
                };
                let prev = prev_tree
                    .as_ref()
                    .and_then(|(_, t)| t.get(e.name.as_bytes()));
                self.node(&e.path, e.name.into_vec(), md, prev)
            })
            .collect::<Result<_>>()?;
        let tree = Tree {
            nodes: nodes.into_iter().flatten().collect(),
        };
        let bytes = tree.encode().map_err(|e| Error::Entry {
            path: path.display().to_string(),
            source: Box::new(e),
        })?;
        let id = self.repo.blob_id(&bytes);
        // An unchanged directory encodes to the parent's tree, just read back: stored.
        if prev_tree.map(|(prev_id, _)| prev_id) != Some(id) {
            self.saver.save_hashed(BlobKind::Tree, id, &bytes)?;
        }
        add(&self.counts.dirs, 1);
        Ok(Some(Node {
            name,
            kind: NodeKind::Dir(id),
            meta,
        }))
    }

    fn save_vdir(&self, d: VDir, now: Timestamp) -> Result<Id> {
        let mut tree = Tree::default();
        for (name, entry) in d.children {
            let node = match entry {
                VEntry::Leaf(mut n) => {
                    n.name = name;
                    n
                }
                VEntry::Dir(sub) => {
                    add(&self.counts.dirs, 1);
                    let meta = sub.meta.unwrap_or_else(|| synthetic_meta(0o040755, 0, now));
                    Node {
                        name,
                        kind: NodeKind::Dir(self.save_vdir(sub, now)?),
                        meta,
                    }
                }
            };
            tree.nodes.push(node);
        }
        self.saver.save(BlobKind::Tree, &tree.encode()?)
    }
}

/// A file node's content.
fn file_content(node: &Node) -> Option<Content> {
    match &node.kind {
        NodeKind::File(content) => Some(content.clone()),
        _ => None,
    }
}

/// Metadata of an entry that exists only in the snapshot (a stream, or a directory
/// that only names one): owned by the current user, timestamped `now`.
fn synthetic_meta(mode: u32, size: u64, now: Timestamp) -> Meta {
    Meta {
        mode,
        uid: rustix::process::geteuid().as_raw(),
        gid: rustix::process::getegid().as_raw(),
        mtime: now,
        ctime: now,
        nlink: 1,
        size,
        ..Meta::default()
    }
}

/// The directories above the sources, built before they are encoded.
#[derive(Default)]
struct VDir {
    meta: Option<Meta>,
    children: BTreeMap<Vec<u8>, VEntry>,
}

enum VEntry {
    Dir(VDir),
    Leaf(Node),
}

impl VDir {
    fn insert(&mut self, comps: &[Vec<u8>], node: Node) -> Result<()> {
        let overlap = || {
            Error::Invalid(format!(
                "sources overlap at {}: give each source its own place",
                String::from_utf8_lossy(&comps.join(&b'/'))
            ))
        };
        let (first, rest) = comps.split_first().ok_or_else(overlap)?;
        if rest.is_empty() {
            if self.children.contains_key(first) {
                return Err(overlap());
            }
            self.children.insert(first.clone(), VEntry::Leaf(node));
            return Ok(());
        }
        match self
            .children
            .entry(first.clone())
            .or_insert_with(|| VEntry::Dir(VDir::default()))
        {
            VEntry::Dir(d) => d.insert(rest, node),
            VEntry::Leaf(_) => Err(overlap()),
        }
    }

    fn set_dir_meta(&mut self, comps: &[Vec<u8>], meta: Meta) {
        let mut d = self;
        for c in comps {
            match d
                .children
                .entry(c.clone())
                .or_insert_with(|| VEntry::Dir(VDir::default()))
            {
                VEntry::Dir(sub) => d = sub,
                VEntry::Leaf(_) => return,
            }
        }
        d.meta = Some(meta);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
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
    fn stored(repo: &Repository, at: &[&str]) -> (Vec<Id>, Vec<u8>) {
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
        let repo = Repository::init(&dir.path().join("seen"), &Default::default()).unwrap();
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
        let fresh = Repository::init(&dir.path().join("fresh"), &Default::default()).unwrap();
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
