//! The restore operation: a snapshot (or parts of it) into a target directory.
//!
//! Every chunk is verified against its id before a byte is written. Nothing is written
//! outside the target: tree names are single safe components (checked when trees are
//! decoded), existing directories are entered only when they are real directories, and
//! files are opened without following symlinks. A file's content is written into a
//! temporary file beside it (`.snap-restore-*`, created exclusively) and renamed into
//! place once complete, with its metadata: a restore that fails or is killed leaves no
//! half-written file under a final name, and an existing file stays as it was until its
//! replacement is whole. A file whose data is damaged is reported; the rest of the
//! snapshot is still restored. An interrupted restore (SIGINT or SIGTERM, where the
//! front end lets them stop it) removes the files it had not finished and fails with
//! [`Error::Interrupted`]: what it placed under final names is whole.
//!
//! What is already in the target is replaced, kept or compared as [`Overwrite`] says.
//! With [`RestoreOptions::delete`], entries of the restored directories that the
//! snapshot does not have (and no `--exclude` pattern keeps) are removed: symlinks as
//! links, directories with `remove_dir_all`, which never follows a symlink; only
//! directories the restore itself entered (real directories inside the target) are
//! cleaned, and the file system root is refused as target. With
//! [`RestoreOptions::verify`], every file written (or kept as matching) is read back at
//! the end and each chunk's bytes hashed as the repository names them.

pub mod db;
mod flush;
pub mod ngw;
mod packed;
pub mod pg_base;
pub mod pg_start;
pub mod rasters;

use std::collections::{HashMap, HashSet};
use std::ffi::OsStr;
use std::fs::{self, File};
use std::io::Read;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileExt, FileTypeExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use rayon::prelude::*;

use crate::error::{Error, IoContext, Refusal, Result, Usage};
use crate::format::id::TreeId;
use crate::format::snapshot::Snapshot;
use crate::format::tree::{shown_name, split_path, unshown_name, Content, Meta, Node, NodeKind};
use crate::locked;
use crate::progress::Progress;
use crate::repo::{Lock, Repository};
use crate::source::fs::Excludes;

/// What a restore does with an entry that is already at a restored entry's place (as
/// restic's `--overwrite`). Directories are always merged into.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Overwrite {
    /// Replace it.
    #[default]
    Always,
    /// Replace it unless it already holds the snapshot's content: a file of the same
    /// size and mtime is taken as unchanged, one of the same size and another mtime is
    /// compared chunk by chunk; a kept entry gets the snapshot's metadata.
    IfChanged,
    /// Replace it only when its mtime is older than the snapshot entry's.
    IfNewer,
    /// Keep it.
    Never,
}

/// What to restore and where.
#[derive(Clone, Debug, Default)]
pub struct RestoreOptions {
    /// Directory to restore into (created if absent).
    pub target: PathBuf,
    /// Only these paths of the snapshot (all when empty).
    pub include: Vec<String>,
    /// Leave out entries matching these globs (as backup's `--exclude`: with a `/` the
    /// pattern matches the path inside the snapshot, else the name).
    pub exclude: Vec<String>,
    /// What to do with entries already in the target.
    pub overwrite: Overwrite,
    /// Remove what the restored directories hold and the snapshot does not.
    pub delete: bool,
    /// Read every restored file back and compare it with the snapshot.
    pub verify: bool,
    /// Return without waiting for the restored files to reach the disk (a scratch
    /// restore); by default a restore ends once they are there.
    pub no_sync: bool,
}

/// What a restore did.
#[derive(Debug, Default)]
pub struct RestoreOutcome {
    /// Regular files written.
    pub files: u64,
    /// Directories created or updated.
    pub dirs: u64,
    /// Symlinks, FIFOs and devices created.
    pub others: u64,
    /// Bytes of file content.
    pub bytes: u64,
    /// Entries that replaced one already in the target.
    pub replaced: u64,
    /// Entries already in the target that were left in place (`--overwrite`).
    pub skipped: u64,
    /// Entries removed from the target (`--delete`; a directory counts once).
    pub deleted: u64,
    /// Files read back and found to match (`--verify`).
    pub verified: u64,
    /// Entries not restored for a harmless reason (sockets, devices without root).
    pub warnings: Vec<String>,
    /// Entries that failed, each an [`Error::Entry`] naming it.
    pub errors: Vec<Error>,
    /// Restored files that do not match the snapshot when read back (`--verify`), each
    /// an [`Error::Entry`] naming it.
    pub mismatches: Vec<Error>,
}

/// Splits a path inside a snapshot (`/srv/ngw`, `db/x.sql`) into safe components; a
/// byte that is not UTF-8 may be written `\xHH`, as snap shows it
/// ([`shown_name`]).
pub fn snapshot_path(p: &str) -> Result<Vec<Vec<u8>>> {
    split_path(p)
        .map(|comps| comps.iter().map(|c| unshown_name(c)).collect())
        .ok_or_else(|| {
            Error::from(Usage::SnapshotPath {
                path: p.to_string(),
            })
        })
}

/// The entry at `path` of `snap`, or an error naming it.
pub fn node_at(repo: &Repository, snap: &Snapshot, path: &str) -> Result<Node> {
    repo.find_node(&snap.tree, &snapshot_path(path)?)?
        .ok_or_else(|| Error::NotFound {
            what: "path in snapshot",
            id: path.to_string(),
        })
}

/// Access and modification times both set to `m`'s mtime.
pub(crate) fn timestamps(m: &Meta) -> rustix::fs::Timestamps {
    let t = rustix::fs::Timespec {
        tv_sec: m.mtime.sec,
        tv_nsec: m.mtime.nsec.into(),
    };
    rustix::fs::Timestamps {
        last_access: t,
        last_modification: t,
    }
}

/// Where a restore starts: a snapshot tree whose entries go into the target, or one
/// entry (an `--include`) at its path under the target.
#[derive(Debug)]
enum Root {
    Tree(TreeId),
    Entry {
        comps: Vec<Vec<u8>>,
        node: Node,
        spath: String,
    },
}

/// What a restore will write: the target and the snapshot entries that go into it,
/// under the shared lock it holds until [`RestorePlan::execute`] has run or it is
/// dropped, so that prune cannot delete what it reads meanwhile.
pub struct RestorePlan<'r> {
    repo: &'r Repository,
    _lock: Option<Lock>,
    roots: Vec<Root>,
    excludes: Excludes,
    overwrite: Overwrite,
    delete: bool,
    verify: bool,
    sync: bool,
    /// Directory restored into (created if absent).
    pub target: PathBuf,
}

/// How much a [`RestorePlan`] writes ([`RestorePlan::tally`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RestoreTally {
    /// Regular files to write (each hard link counted).
    pub files: u64,
    /// Directories to create or update.
    pub dirs: u64,
    /// Symlinks, FIFOs and devices to create.
    pub others: u64,
    /// Bytes of file content to write (a hard-linked file's once).
    pub bytes: u64,
    /// Sockets, recorded but never restored.
    pub skipped: u64,
    /// Entries of the target that `--delete` removes (a directory counts once): those
    /// the snapshot lacks, and directories where it has a file.
    pub deletes: u64,
    /// Entries that cannot be placed without `--delete`: a directory of the target
    /// where the snapshot has a file that would replace it, or the reverse.
    pub blocked: u64,
}

/// Plans restoring `snap` as `opts` say: resolves the included paths. Fails, with
/// nothing written, when the target is not a directory, an included path is not in the
/// snapshot, an exclude pattern is not a glob, or `delete` is asked for with the file
/// system root as target.
pub fn plan_restore<'r>(
    repo: &'r Repository,
    snap: &Snapshot,
    opts: &RestoreOptions,
) -> Result<RestorePlan<'r>> {
    let lock = repo.read_lock("restore")?;
    let target = &opts.target;
    if fs::symlink_metadata(target).is_ok_and(|m| !m.is_dir()) {
        return Err(Refusal::TargetNotDir {
            target: target.clone(),
        }
        .into());
    }
    if opts.delete && fs::canonicalize(target).is_ok_and(|t| t == Path::new("/")) {
        return Err(Refusal::DeleteTarget {
            target: target.clone(),
            why: "it is the file system root".into(),
        }
        .into());
    }
    let excludes = Excludes::new(&opts.exclude, None)?;
    let mut roots = Vec::new();
    if opts.include.is_empty() {
        roots.push(Root::Tree(snap.tree));
    }
    for inc in &opts.include {
        let comps = snapshot_path(inc)?;
        let node = repo
            .find_node(&snap.tree, &comps)?
            .ok_or_else(|| Usage::IncludeNotFound { path: inc.clone() })?;
        roots.push(match (comps.is_empty(), &node.kind) {
            (true, NodeKind::Dir(tree)) => Root::Tree(*tree),
            (true, _) => unreachable!("the root is a directory"),
            (false, _) => Root::Entry {
                comps,
                node,
                spath: format!("/{}", inc.trim_matches('/')),
            },
        });
    }
    Ok(RestorePlan {
        repo,
        _lock: lock,
        roots,
        excludes,
        overwrite: opts.overwrite,
        delete: opts.delete,
        verify: opts.verify,
        sync: !opts.no_sync,
        target: target.clone(),
    })
}

/// Plans restoring the snapshot directory `tree` as `target` itself (a base backup's
/// data directory), under the shared lock.
pub fn plan_tree<'r>(repo: &'r Repository, tree: TreeId, target: &Path) -> Result<RestorePlan<'r>> {
    Ok(RestorePlan {
        repo,
        _lock: repo.read_lock("restore")?,
        roots: vec![Root::Tree(tree)],
        excludes: Excludes::new(&[], None)?,
        overwrite: Overwrite::Always,
        delete: false,
        verify: false,
        sync: true,
        target: target.to_path_buf(),
    })
}

/// `spath/name`: the path inside the snapshot of entry `name` of directory `spath`.
fn child_spath(spath: &str, name: &[u8]) -> String {
    format!("{spath}/{}", shown_name(name))
}

/// Removes `path` without following it: a directory with everything in it (std's
/// `remove_dir_all` does not follow symlinks inside), anything else as itself.
fn remove_entry(path: &Path) -> Result<()> {
    let md = fs::symlink_metadata(path).at(path)?;
    if md.is_dir() {
        fs::remove_dir_all(path).at(path)
    } else {
        fs::remove_file(path).at(path)
    }
}

impl RestorePlan<'_> {
    /// Whether the snapshot entry `name` at `spath` is left out by `--exclude`.
    fn excluded(&self, spath: &str, name: &[u8]) -> bool {
        self.excludes
            .excluded(Path::new(spath), OsStr::from_bytes(name))
    }

    /// The entries of the real directory `dest` (the place of snapshot directory
    /// `spath`, whose entries are `nodes`) that `--delete` removes: those the snapshot
    /// does not have and no exclude pattern keeps. Nothing when `dest` is absent.
    fn doomed(&self, nodes: &[Node], dest: &Path, spath: &str) -> Result<Vec<PathBuf>> {
        let rd = match fs::read_dir(dest) {
            Ok(rd) => rd,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(e).at(dest),
        };
        let names: HashSet<&[u8]> = nodes.iter().map(|n| n.name.as_slice()).collect();
        let mut out = Vec::new();
        for e in rd {
            let e = e.at(dest)?;
            let name = e.file_name();
            if !names.contains(name.as_bytes())
                && !self.excluded(&child_spath(spath, name.as_bytes()), name.as_bytes())
            {
                out.push(e.path());
            }
        }
        out.sort();
        Ok(out)
    }

    /// Counts what the plan writes, walking its trees (no file content is read), and
    /// with `--delete` what it removes: what `--dry-run` prints. A restore itself does
    /// not need it, and does not pay for it.
    pub fn tally(&self) -> Result<RestoreTally> {
        let mut t = RestoreTally::default();
        let mut links = HashSet::new();
        for root in &self.roots {
            match root {
                Root::Tree(tree) => {
                    self.count_tree(tree, &self.target, "", &mut t, &mut links)?;
                }
                Root::Entry { comps, node, spath } => {
                    if self.excluded(spath, &comps[comps.len() - 1]) {
                        continue;
                    }
                    let dest = comps
                        .iter()
                        .fold(self.target.clone(), |d, c| d.join(OsStr::from_bytes(c)));
                    self.count(node, &dest, spath, &mut t, &mut links)?;
                }
            }
        }
        Ok(t)
    }

    /// Counts the entries of `tree` (restored at `dest`, snapshot path `spath`),
    /// recursively; `links`: the hard-linked files seen.
    fn count_tree(
        &self,
        tree: &TreeId,
        dest: &Path,
        spath: &str,
        t: &mut RestoreTally,
        links: &mut HashSet<(u64, u64)>,
    ) -> Result<()> {
        let nodes = self.repo.load_tree(tree)?.nodes;
        if self.delete && fs::symlink_metadata(dest).is_ok_and(|m| m.is_dir()) {
            t.deletes += self.doomed(&nodes, dest, spath)?.len() as u64;
        }
        for n in &nodes {
            let sp = child_spath(spath, &n.name);
            if !self.excluded(&sp, &n.name) {
                self.count(n, &dest.join(OsStr::from_bytes(&n.name)), &sp, t, links)?;
            }
        }
        Ok(())
    }

    /// Whether `--overwrite` replaces what is at a path (`md`) by entry `m`; `None`:
    /// only if its content differs (`if-changed`).
    fn replaces(&self, m: &Meta, md: &fs::Metadata) -> Option<bool> {
        match self.overwrite {
            Overwrite::Always => Some(true),
            Overwrite::Never => Some(false),
            Overwrite::IfNewer => {
                Some((md.mtime(), md.mtime_nsec()) < (m.mtime.sec, m.mtime.nsec.into()))
            }
            Overwrite::IfChanged => None,
        }
    }

    /// Counts `node` and what it holds.
    fn count(
        &self,
        node: &Node,
        dest: &Path,
        spath: &str,
        t: &mut RestoreTally,
        links: &mut HashSet<(u64, u64)>,
    ) -> Result<()> {
        // An entry of the other kind in the way: `--delete` removes it (a directory
        // with all it holds), else the restore fails there.
        let there = fs::symlink_metadata(dest).ok();
        let in_way = match (&node.kind, &there) {
            (NodeKind::Dir(_), Some(md)) => !md.is_dir(),
            (_, Some(md)) => md.is_dir() && self.replaces(&node.meta, md).unwrap_or(true),
            (_, None) => false,
        };
        if in_way && !self.delete {
            t.blocked += 1;
            return Ok(());
        }
        if in_way && there.is_some_and(|md| md.is_dir()) {
            t.deletes += 1;
        }
        match &node.kind {
            NodeKind::Dir(tree) => {
                t.dirs += 1;
                return self.count_tree(tree, dest, spath, t, links);
            }
            NodeKind::File(_) => {
                let m = &node.meta;
                t.files += 1;
                if m.nlink <= 1 || links.insert((m.dev, m.ino)) {
                    t.bytes += m.size;
                }
            }
            NodeKind::Socket => t.skipped += 1,
            _ => t.others += 1,
        }
        Ok(())
    }

    /// Restores as planned. Entries that fail are reported in the outcome, the rest
    /// still restored.
    pub fn execute(self, progress: &dyn Progress) -> Result<RestoreOutcome> {
        let repo = self.repo;
        repo.reading(|| self.run(progress))?
    }

    fn run(&self, progress: &dyn Progress) -> Result<RestoreOutcome> {
        let repo = self.repo;
        let target = &self.target;
        fs::create_dir_all(target).at(target)?;
        let r = Restorer {
            plan: self,
            progress,
            is_root: rustix::process::geteuid().is_root(),
            links: Mutex::new(HashMap::new()),
            kept_links: Mutex::new(HashSet::new()),
            deferred: Mutex::new(Vec::new()),
            dirs_meta: Mutex::new(Vec::new()),
            to_verify: Mutex::new(Vec::new()),
            warnings: Mutex::new(Vec::new()),
            errors: Mutex::new(Vec::new()),
            files: AtomicU64::new(0),
            dirs: AtomicU64::new(0),
            others: AtomicU64::new(0),
            bytes: AtomicU64::new(0),
            replaced: AtomicU64::new(0),
            skipped: AtomicU64::new(0),
            deleted: AtomicU64::new(0),
            window: Mutex::new(packed::Window::default()),
            flusher: if self.sync {
                Some(flush::Flusher::start(target)?)
            } else {
                None
            },
        };
        for root in &self.roots {
            match root {
                Root::Tree(tree) => r.dir_contents(tree, target, "", false),
                Root::Entry { comps, node, spath } => {
                    let name = &comps[comps.len() - 1];
                    if self.excluded(spath, name) {
                        continue;
                    }
                    let mut dest = target.clone();
                    for c in &comps[..comps.len() - 1] {
                        dest.push(OsStr::from_bytes(c));
                        ensure_dir(&dest)?;
                    }
                    dest.push(OsStr::from_bytes(name));
                    r.entry(node, &dest, spath, false);
                }
            }
        }
        let last = locked(&r.window).take();
        r.write_window(last);
        if crate::interrupt::requested() {
            // Every file placed so far is whole; those cut short were removed.
            return Err(Error::Interrupted);
        }
        r.link_deferred();
        let mut dirs = locked(&r.dirs_meta).split_off(0);
        dirs.sort_by_key(|d| std::cmp::Reverse(d.0.as_os_str().len()));
        for (path, meta) in dirs {
            if let Err(e) = r.apply_meta(&path, &meta, false) {
                r.warn(format!("{}: {e}", path.display()));
            }
        }
        if let Some(flusher) = r.flusher {
            flusher.finish()?;
        }
        let checks = locked(&r.to_verify).split_off(0);
        let mismatches: Vec<Error> = checks
            .par_iter()
            .filter_map(|c| {
                let res = verify_file(repo, &c.content, c.size, &c.dest);
                let e = match res {
                    Ok(None) => return None,
                    Ok(Some(detail)) => Error::NotVerified { detail },
                    Err(e) => e,
                };
                Some(Error::Entry {
                    path: c.spath.clone(),
                    source: Box::new(e),
                })
            })
            .collect();
        Ok(RestoreOutcome {
            files: r.files.into_inner(),
            dirs: r.dirs.into_inner(),
            others: r.others.into_inner(),
            bytes: r.bytes.into_inner(),
            replaced: r.replaced.into_inner(),
            skipped: r.skipped.into_inner(),
            deleted: r.deleted.into_inner(),
            verified: (checks.len() - mismatches.len()) as u64,
            warnings: r
                .warnings
                .into_inner()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
            errors: r
                .errors
                .into_inner()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
            mismatches,
        })
    }
}

/// Whether the file at `path` holds exactly `content` (`size` bytes): `None` when it
/// does, else where it differs. Each chunk's bytes are read from the file at the
/// chunk's offset and hashed as the repository names chunks (BLAKE3, keyed when
/// encrypted), so nothing is read from the repository but the chunk list and the index.
/// The file is opened without following a symlink.
pub fn verify_file(
    repo: &Repository,
    content: &Content,
    size: u64,
    path: &Path,
) -> Result<Option<String>> {
    let f = File::options()
        .read(true)
        .custom_flags(rustix::fs::OFlags::NOFOLLOW.bits() as i32)
        .open(path)
        .at(path)?;
    let md = f.metadata().at(path)?;
    if !md.is_file() {
        return Ok(Some("it is not a regular file".into()));
    }
    if md.len() != size {
        return Ok(Some(format!(
            "it has {} bytes, the snapshot's {size}",
            md.len()
        )));
    }
    let mut r = std::io::BufReader::with_capacity(1 << 20, f);
    let mut buf = Vec::new();
    let mut pos = 0u64;
    for id in repo.chunk_ids(content) {
        let id = id?.0;
        let len = repo.locate(&id)?.raw_len;
        buf.resize(len as usize, 0);
        r.read_exact(&mut buf).at(path)?;
        if repo.blob_id(&buf) != id {
            return Ok(Some(format!(
                "bytes {pos}..{} differ from chunk {}",
                pos + u64::from(len),
                id.to_hex()
            )));
        }
        pos += u64::from(len);
    }
    if pos != size {
        return Err(Error::corrupt(
            "tree",
            path.display().to_string(),
            format!("file of {size} bytes whose chunks hold {pos}"),
        ));
    }
    Ok(None)
}

/// Makes sure `path` is a real directory (not a symlink to one), creating it if absent;
/// returns whether it created it.
fn ensure_dir(path: &Path) -> Result<bool> {
    match fs::symlink_metadata(path) {
        Ok(md) if md.is_dir() => Ok(false),
        Ok(_) => Err(Refusal::WouldReplaceNonDir {
            path: path.to_path_buf(),
        }
        .into()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            fs::create_dir(path).at(path).map(|()| true)
        }
        Err(e) => Err(e).at(path),
    }
}

/// Block size at which runs of zeros become holes.
const HOLE_BLOCK: u64 = 4096;

/// Writes `chunk` at `pos`, leaving every block-aligned run of zeros as a hole, so that
/// sparse files stay sparse (the file is extended with `set_len` at the end).
fn write_sparse(f: &File, pos: u64, chunk: &[u8]) -> std::io::Result<()> {
    let mut run: Option<usize> = None;
    let mut start = 0usize;
    while start < chunk.len() {
        let to_boundary = usize::try_from(HOLE_BLOCK - (pos + start as u64) % HOLE_BLOCK)
            .expect("at most HOLE_BLOCK");
        let end = chunk.len().min(start + to_boundary);
        let zero = chunk[start..end].iter().all(|&b| b == 0);
        match (zero, run) {
            (false, None) => run = Some(start),
            (true, Some(r)) => {
                f.write_all_at(&chunk[r..start], pos + r as u64)?;
                run = None;
            }
            _ => {}
        }
        start = end;
    }
    if let Some(r) = run {
        f.write_all_at(&chunk[r..], pos + r as u64)?;
    }
    Ok(())
}

/// Removes a file or symlink at `path` (so that it is replaced, never followed).
fn remove_non_dir(path: &Path) -> Result<()> {
    match fs::symlink_metadata(path) {
        Ok(md) if md.is_dir() => Err(Refusal::WouldReplaceDir {
            path: path.to_path_buf(),
        }
        .into()),
        Ok(_) => fs::remove_file(path).at(path),
        Err(_) => Ok(()),
    }
}

/// A hard link of the snapshot made once its first path is written.
struct Deferred {
    first: PathBuf,
    dest: PathBuf,
    spath: String,
    meta: Meta,
    /// To write it anew if the first path was left as it was.
    content: Content,
}

/// A file to read back once the restore is done (`--verify`).
struct Check {
    dest: PathBuf,
    spath: String,
    content: Content,
    size: u64,
}

/// What to do at a restored entry's place.
enum Place {
    /// Nothing is there.
    Free,
    /// Something is there and is replaced.
    Replace,
    /// Something is there and stays as it is.
    Keep,
    /// What is there already holds the entry's content: it gets the entry's metadata.
    Matches,
}

struct Restorer<'p> {
    plan: &'p RestorePlan<'p>,
    progress: &'p dyn Progress,
    is_root: bool,
    links: Mutex<HashMap<(u64, u64), PathBuf>>,
    /// Hard-linked files whose first path holds what was there before, not this
    /// restore's file (kept by `--overwrite`, or failed): their other paths are not
    /// linked to it.
    kept_links: Mutex<HashSet<(u64, u64)>>,
    deferred: Mutex<Vec<Deferred>>,
    dirs_meta: Mutex<Vec<(PathBuf, Meta)>>,
    to_verify: Mutex<Vec<Check>>,
    warnings: Mutex<Vec<String>>,
    errors: Mutex<Vec<Error>>,
    files: AtomicU64,
    dirs: AtomicU64,
    others: AtomicU64,
    bytes: AtomicU64,
    replaced: AtomicU64,
    skipped: AtomicU64,
    deleted: AtomicU64,
    /// New files from a remote store waiting to be read in pack order.
    window: Mutex<packed::Window>,
    /// Syncs the target's file system as the restore goes and at its end.
    flusher: Option<flush::Flusher>,
}

impl Restorer<'_> {
    fn fail(&self, spath: &str, e: Error) {
        locked(&self.errors).push(Error::Entry {
            path: spath.to_string(),
            source: Box::new(e),
        });
    }

    fn warn(&self, w: String) {
        locked(&self.warnings).push(w);
    }

    /// Counts `n` bytes of file content written.
    fn written(&self, n: u64) {
        self.progress.bytes(n);
        if let Some(flusher) = &self.flusher {
            flusher.wrote(n);
        }
    }

    /// Restores the entries of `tree` into `dest`; `fresh`: this restore created `dest`,
    /// so nothing is in the way of its entries (and nothing is there to delete).
    fn dir_contents(&self, tree: &TreeId, dest: &Path, spath: &str, fresh: bool) {
        let shown = if spath.is_empty() { "/" } else { spath };
        let tree = match self.plan.repo.load_tree(tree) {
            Ok(t) => t,
            Err(e) => return self.fail(shown, e),
        };
        if self.plan.delete && !fresh {
            // Before any entry is written here, so that no temporary file of this
            // restore is among what is removed.
            match self.plan.doomed(&tree.nodes, dest, spath) {
                Ok(doomed) => {
                    for p in doomed {
                        match remove_entry(&p) {
                            Ok(()) => {
                                self.deleted.fetch_add(1, Ordering::Relaxed);
                            }
                            Err(e) => self.fail(shown, e),
                        }
                    }
                }
                Err(e) => self.fail(shown, e),
            }
        }
        tree.nodes.par_iter().for_each(|n| {
            let sp = child_spath(spath, &n.name);
            if !self.plan.excluded(&sp, &n.name) {
                self.entry(n, &dest.join(OsStr::from_bytes(&n.name)), &sp, fresh);
            }
        });
    }

    fn entry(&self, node: &Node, dest: &Path, spath: &str, fresh: bool) {
        if crate::interrupt::requested() {
            return;
        }
        if let Err(e) = self.entry_inner(node, dest, spath, fresh) {
            self.fail(spath, e);
        }
    }

    /// What to do at `dest`, where an entry with metadata `m` goes, under
    /// `--overwrite`; `same` tells whether what is there (`md`) already holds the entry
    /// (for `if-changed`). An entry kept or found matching is counted as skipped.
    fn place(
        &self,
        m: &Meta,
        dest: &Path,
        same: impl FnOnce(&fs::Metadata) -> Result<bool>,
    ) -> Result<Place> {
        let md = match fs::symlink_metadata(dest) {
            Ok(md) => md,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Place::Free),
            Err(e) => return Err(e).at(dest),
        };
        let replace = if let Some(replace) = self.plan.replaces(m, &md) {
            replace
        } else {
            if same(&md)? {
                self.skipped.fetch_add(1, Ordering::Relaxed);
                return Ok(Place::Matches);
            }
            true
        };
        if replace {
            return Ok(Place::Replace);
        }
        self.skipped.fetch_add(1, Ordering::Relaxed);
        Ok(Place::Keep)
    }

    /// A directory at `dest`, where an entry that is not one goes: removed with
    /// `--delete`, else a refusal.
    fn dir_in_way(&self, dest: &Path) -> Result<()> {
        if !fs::symlink_metadata(dest).is_ok_and(|m| m.is_dir()) {
            return Ok(());
        }
        if self.plan.delete {
            remove_entry(dest)?;
            self.deleted.fetch_add(1, Ordering::Relaxed);
            return Ok(());
        }
        Err(Refusal::WouldReplaceDir {
            path: dest.to_path_buf(),
        }
        .into())
    }

    /// Clears `dest` for a new entry that is not a directory: removes a file or
    /// symlink, a directory as [`Restorer::dir_in_way`] says.
    fn clear(&self, dest: &Path) -> Result<()> {
        self.dir_in_way(dest)?;
        remove_non_dir(dest)
    }

    fn entry_inner(&self, node: &Node, dest: &Path, spath: &str, fresh: bool) -> Result<()> {
        if let NodeKind::Dir(tree) = &node.kind {
            if self.plan.delete && fs::symlink_metadata(dest).is_ok_and(|m| !m.is_dir()) {
                remove_non_dir(dest)?;
                self.replaced.fetch_add(1, Ordering::Relaxed);
            }
            let created = ensure_dir(dest)?;
            self.dirs.fetch_add(1, Ordering::Relaxed);
            locked(&self.dirs_meta).push((dest.to_path_buf(), node.meta));
            self.dir_contents(tree, dest, spath, created);
            return Ok(());
        }
        if let NodeKind::Socket = node.kind {
            self.warn(format!("{spath}: sockets are recorded but not restored"));
            return Ok(());
        }
        if let NodeKind::File(content) = &node.kind {
            return self.file(node, content, dest, spath, fresh);
        }
        if !fresh {
            match self.place(&node.meta, dest, |md| Ok(same_special(node, dest, md)))? {
                Place::Free => {}
                Place::Keep => return Ok(()),
                Place::Matches => {
                    let symlink = matches!(node.kind, NodeKind::Symlink(_));
                    return self.apply_meta(dest, &node.meta, symlink);
                }
                Place::Replace => {
                    self.clear(dest)?;
                    self.replaced.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
        match &node.kind {
            NodeKind::Symlink(target) => {
                std::os::unix::fs::symlink(OsStr::from_bytes(target), dest).at(dest)?;
                self.apply_meta(dest, &node.meta, true)?;
            }
            NodeKind::Fifo => {
                let mode = rustix::fs::Mode::from_raw_mode(node.meta.mode & 0o7777);
                rustix::fs::mknodat(rustix::fs::CWD, dest, rustix::fs::FileType::Fifo, mode, 0)
                    .map_err(std::io::Error::from)
                    .at(dest)?;
                self.apply_meta(dest, &node.meta, false)?;
            }
            NodeKind::CharDev(rdev) | NodeKind::BlockDev(rdev) => {
                let ft = if matches!(node.kind, NodeKind::CharDev(_)) {
                    rustix::fs::FileType::CharacterDevice
                } else {
                    rustix::fs::FileType::BlockDevice
                };
                let mode = rustix::fs::Mode::from_raw_mode(node.meta.mode & 0o7777);
                if let Err(e) = rustix::fs::mknodat(rustix::fs::CWD, dest, ft, mode, *rdev) {
                    self.warn(format!("{spath}: device not restored: {e}"));
                    return Ok(());
                }
                self.apply_meta(dest, &node.meta, false)?;
            }
            NodeKind::Dir(_) | NodeKind::File(_) | NodeKind::Socket => {
                unreachable!("handled above")
            }
        }
        self.others.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// Makes the other paths of hard-linked files, once every first path is written:
    /// links of the first, or where the first path was left as it was (it may be
    /// another file, or a link out of the target), a file of its own for the next path
    /// and links of that.
    fn link_deferred(&self) {
        let kept = locked(&self.kept_links).clone();
        // The path each kept group's other paths link to, once one is written.
        let mut firsts: HashMap<(u64, u64), PathBuf> = HashMap::new();
        for link in locked(&self.deferred).split_off(0) {
            let key = (link.meta.dev, link.meta.ino);
            let first = if kept.contains(&key) {
                firsts.get(&key).cloned()
            } else {
                Some(link.first.clone())
            };
            if first.as_ref() == Some(&link.dest) {
                continue;
            }
            let res = match first {
                Some(first) => self.hard_link(&first, &link).map(|linked| {
                    if linked {
                        self.files.fetch_add(1, Ordering::Relaxed);
                        self.progress.items(1);
                    }
                }),
                None => self
                    .write_file(&link.meta, &link.content, &link.dest, &link.spath, false)
                    .map(|written| {
                        if written {
                            firsts.insert(key, link.dest.clone());
                        }
                    }),
            };
            if let Err(e) = res {
                self.fail(&link.spath, e);
            }
        }
    }

    /// Makes `link.dest` a hard link of `first` as `--overwrite` allows; returns
    /// whether it did.
    fn hard_link(&self, first: &Path, link: &Deferred) -> Result<bool> {
        let same = |md: &fs::Metadata| {
            let first = fs::symlink_metadata(first).at(first)?;
            Ok((md.dev(), md.ino()) == (first.dev(), first.ino()))
        };
        match self.place(&link.meta, &link.dest, same)? {
            Place::Keep | Place::Matches => return Ok(false),
            Place::Replace => {
                self.clear(&link.dest)?;
                self.replaced.fetch_add(1, Ordering::Relaxed);
            }
            Place::Free => {}
        }
        fs::hard_link(first, &link.dest).at(&link.dest)?;
        Ok(true)
    }

    fn file(
        &self,
        node: &Node,
        content: &Content,
        dest: &Path,
        spath: &str,
        fresh: bool,
    ) -> Result<()> {
        let m = &node.meta;
        if m.nlink <= 1 {
            return self.write_file(m, content, dest, spath, fresh).map(|_| ());
        }
        {
            let mut links = locked(&self.links);
            if let Some(first) = links.get(&(m.dev, m.ino)) {
                locked(&self.deferred).push(Deferred {
                    first: first.clone(),
                    dest: dest.to_path_buf(),
                    spath: spath.to_string(),
                    meta: *m,
                    content: content.clone(),
                });
                return Ok(());
            }
            links.insert((m.dev, m.ino), dest.to_path_buf());
        }
        let written = self.write_file(m, content, dest, spath, fresh);
        if !matches!(written, Ok(true)) {
            locked(&self.kept_links).insert((m.dev, m.ino));
        }
        written.map(|_| ())
    }

    /// Writes the file `m` with `content` at `dest` as `--overwrite` allows; returns
    /// whether `dest` is now this restore's file (written, queued to be, or found
    /// holding its content), not what was there before.
    fn write_file(
        &self,
        m: &Meta,
        content: &Content,
        dest: &Path,
        spath: &str,
        fresh: bool,
    ) -> Result<bool> {
        let check = || Check {
            dest: dest.to_path_buf(),
            spath: spath.to_string(),
            content: content.clone(),
            size: m.size,
        };
        if !fresh {
            let same = |md: &fs::Metadata| {
                if !md.is_file() || md.len() != m.size {
                    return Ok(false);
                }
                if (md.mtime(), md.mtime_nsec()) == (m.mtime.sec, m.mtime.nsec.into()) {
                    return Ok(true);
                }
                // Unreadable or damaged either way: written anew (or failing there).
                Ok(matches!(
                    verify_file(self.plan.repo, content, m.size, dest),
                    Ok(None)
                ))
            };
            match self.place(m, dest, same)? {
                Place::Free => {}
                Place::Keep => return Ok(false),
                Place::Matches => {
                    self.apply_meta(dest, m, false)?;
                    if self.plan.verify {
                        locked(&self.to_verify).push(check());
                    }
                    return Ok(true);
                }
                Place::Replace => {
                    self.dir_in_way(dest)?;
                    self.replaced.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
        let dir = dest.parent().expect("a restored file has a parent");
        let tmp = tempfile::Builder::new()
            .prefix(".snap-restore-")
            .tempfile_in(dir)
            .at(dir)?;
        if fresh && self.plan.repo.is_remote() {
            let (_, tmp) = tmp.keep().map_err(|e| e.error).at(dir)?;
            let job = packed::Job {
                dest: dest.to_path_buf(),
                tmp,
                spath: spath.to_string(),
                meta: *m,
                content: content.clone(),
            };
            let full = locked(&self.window).push(job);
            if let Some(jobs) = full {
                self.write_window(jobs);
            }
            return Ok(true);
        }
        let f = tmp.as_file();
        let write = |at, chunk: &[u8]| {
            crate::interrupt::check()?;
            write_sparse(f, at, chunk).at(dest)?;
            self.written(chunk.len() as u64);
            Ok(())
        };
        let written = self
            .plan
            .repo
            .read_content_at(content, &write)
            .and_then(|len| {
                f.set_len(len).at(dest)?;
                Ok(len)
            });
        let len = match written {
            Ok(len) => len,
            // Dropping `tmp` removes the partly written file.
            Err(e) => {
                return Err(Error::NotRestored {
                    source: Box::new(e),
                })
            }
        };
        self.apply_meta_fd(f, dest, m)?;
        // rename(2): replaces a file or symlink at `dest` as a whole, never follows it,
        // and fails on a directory.
        tmp.persist(dest).map_err(|e| e.error).at(dest)?;
        self.files.fetch_add(1, Ordering::Relaxed);
        self.bytes.fetch_add(len, Ordering::Relaxed);
        self.progress.items(1);
        if self.plan.verify {
            locked(&self.to_verify).push(check());
        }
        Ok(true)
    }

    /// [`Restorer::apply_meta`] through the open file `f` (at `path`): no path lookups.
    fn apply_meta_fd(&self, f: &File, path: &Path, m: &Meta) -> Result<()> {
        let io = |e: rustix::io::Errno| std::io::Error::from(e);
        if self.is_root {
            std::os::unix::fs::fchown(f, Some(m.uid), Some(m.gid)).at(path)?;
        }
        rustix::fs::fchmod(f, rustix::fs::Mode::from_raw_mode(m.mode & 0o7777))
            .map_err(io)
            .at(path)?;
        rustix::fs::futimens(f, &timestamps(m)).map_err(io).at(path)
    }

    /// Owner (when root), permissions, then mtime (which the others would disturb).
    fn apply_meta(&self, path: &Path, m: &Meta, symlink: bool) -> Result<()> {
        if self.is_root {
            std::os::unix::fs::lchown(path, Some(m.uid), Some(m.gid)).at(path)?;
        }
        if !symlink {
            fs::set_permissions(path, fs::Permissions::from_mode(m.mode & 0o7777)).at(path)?;
        }
        rustix::fs::utimensat(
            rustix::fs::CWD,
            path,
            &timestamps(m),
            rustix::fs::AtFlags::SYMLINK_NOFOLLOW,
        )
        .map_err(std::io::Error::from)
        .at(path)
    }
}

/// Whether `md` (of the entry at `dest`) is already the symlink, FIFO or device `node`.
fn same_special(node: &Node, dest: &Path, md: &fs::Metadata) -> bool {
    let ft = md.file_type();
    match &node.kind {
        NodeKind::Symlink(target) => {
            ft.is_symlink()
                && fs::read_link(dest).is_ok_and(|t| t.as_os_str().as_bytes() == target.as_slice())
        }
        NodeKind::Fifo => ft.is_fifo(),
        NodeKind::CharDev(rdev) => ft.is_char_device() && md.rdev() == *rdev,
        NodeKind::BlockDev(rdev) => ft.is_block_device() && md.rdev() == *rdev,
        NodeKind::File(_) | NodeKind::Dir(_) | NodeKind::Socket => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::backup::{backup, BackupOptions};
    use crate::progress::NoProgress;
    use crate::repo::pack_path;

    /// A repository in `dir/repo` with one snapshot: `data` as the stream `db/dump.sql`.
    fn one_stream(dir: &Path, data: &[u8]) -> (Repository, Snapshot) {
        let repo =
            Repository::init(&dir.join("repo"), &crate::repo::InitOptions::default()).unwrap();
        let opts = BackupOptions {
            stdin_name: Some("db/dump.sql".into()),
            ..Default::default()
        };
        backup(
            &repo,
            &opts,
            Some(&mut std::io::Cursor::new(data)),
            &NoProgress,
        )
        .unwrap();
        let (_, snap) = repo.find_snapshot("latest").unwrap();
        (repo, snap)
    }

    #[test]
    fn a_target_that_is_a_file_is_refused_and_left_alone() {
        let dir = tempfile::tempdir().unwrap();
        let (repo, snap) = one_stream(dir.path(), b"rows");
        let target = dir.path().join("file");
        fs::write(&target, b"mine").unwrap();
        let opts = RestoreOptions {
            target: target.clone(),
            ..Default::default()
        };
        match plan_restore(&repo, &snap, &opts).and_then(|p| p.execute(&NoProgress)) {
            Err(Error::Refused(Refusal::TargetNotDir { target: t })) => assert_eq!(t, target),
            other => panic!("expected the refusal of a file as target, got {other:?}"),
        }
        assert_eq!(fs::read(&target).unwrap(), b"mine");
    }

    #[test]
    fn content_that_cannot_be_read_is_an_entry_error_keeping_its_cause() {
        let dir = tempfile::tempdir().unwrap();
        let (repo, snap) = one_stream(dir.path(), b"rows of a table");
        let at = [b"db".to_vec(), b"dump.sql".to_vec()];
        let Some(Node {
            kind: NodeKind::File(content),
            ..
        }) = repo.find_node(&snap.tree, &at).unwrap()
        else {
            panic!("no stream in the snapshot");
        };
        for id in repo.chunk_ids(&content) {
            let pack = repo.locate(&id.unwrap().0).unwrap().pack;
            fs::remove_file(dir.path().join("repo").join(pack_path(&pack))).unwrap();
        }
        let target = dir.path().join("out");
        let opts = RestoreOptions {
            target: target.clone(),
            ..Default::default()
        };
        let out = plan_restore(&repo, &snap, &opts)
            .and_then(|p| p.execute(&NoProgress))
            .unwrap();
        let [Error::Entry { path, source }] = &out.errors[..] else {
            panic!("expected one entry error, got {:?}", out.errors);
        };
        assert_eq!(path, "/db/dump.sql");
        let Error::NotRestored { source } = &**source else {
            panic!("expected a file not restored, got {source:?}");
        };
        assert!(
            matches!(**source, Error::Corrupt { what: "blob", .. }),
            "the blob in the missing pack is reported as damaged: {source:?}"
        );
        assert!(!target.join("db/dump.sql").exists());
    }

    /// The content of `db/dump.sql` in `snap`.
    fn stream_content(repo: &Repository, snap: &Snapshot) -> Content {
        let at = [b"db".to_vec(), b"dump.sql".to_vec()];
        match repo.find_node(&snap.tree, &at).unwrap() {
            Some(Node {
                kind: NodeKind::File(content),
                ..
            }) => content,
            other => panic!("no stream in the snapshot: {other:?}"),
        }
    }

    #[test]
    fn the_verifier_finds_an_altered_byte_a_short_file_and_a_symlink() {
        let dir = tempfile::tempdir().unwrap();
        // Several chunks, so that the change is found in a later one.
        let data: Vec<u8> = (0..8u32 << 20)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 13).to_le_bytes()[0])
            .collect();
        let (repo, snap) = one_stream(dir.path(), &data);
        let content = stream_content(&repo, &snap);
        assert!(
            repo.chunk_ids(&content).count() > 1,
            "a file of several chunks"
        );
        let size = data.len() as u64;
        let f = dir.path().join("f");
        fs::write(&f, &data).unwrap();
        assert_eq!(verify_file(&repo, &content, size, &f).unwrap(), None);

        let mut altered = data.clone();
        altered[6 << 20] ^= 1;
        fs::write(&f, &altered).unwrap();
        let Some(detail) = verify_file(&repo, &content, size, &f).unwrap() else {
            panic!("an altered byte went unnoticed");
        };
        assert!(detail.contains("differ from chunk"), "{detail}");
        assert!(
            !detail.starts_with("bytes 0.."),
            "found in its own chunk: {detail}"
        );

        fs::write(&f, &data[..data.len() - 1]).unwrap();
        let detail = verify_file(&repo, &content, size, &f).unwrap().unwrap();
        assert!(
            detail.contains(&format!("the snapshot's {size}")),
            "{detail}"
        );

        let link = dir.path().join("link");
        fs::write(&f, &data).unwrap();
        std::os::unix::fs::symlink(&f, &link).unwrap();
        assert!(
            verify_file(&repo, &content, size, &link).is_err(),
            "a symlink is not followed"
        );
    }

    #[test]
    fn an_include_not_in_the_snapshot_is_a_usage_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let (repo, snap) = one_stream(dir.path(), b"rows");
        let opts = RestoreOptions {
            target: dir.path().join("out"),
            include: vec!["db/nothing".into()],
            ..Default::default()
        };
        match plan_restore(&repo, &snap, &opts) {
            Err(Error::Usage(Usage::IncludeNotFound { path })) => assert_eq!(path, "db/nothing"),
            Err(e) => panic!("expected IncludeNotFound, got {e:?}"),
            Ok(_) => panic!("expected IncludeNotFound, got a plan"),
        }
    }

    #[test]
    fn a_path_climbing_out_of_the_snapshot_is_a_usage_error() {
        match snapshot_path("db/../../etc") {
            Err(Error::Usage(Usage::SnapshotPath { path })) => assert_eq!(path, "db/../../etc"),
            other => panic!("expected a usage error, got {other:?}"),
        }
        assert_eq!(
            snapshot_path("/db/x").unwrap(),
            [b"db".to_vec(), b"x".to_vec()]
        );
    }
}
