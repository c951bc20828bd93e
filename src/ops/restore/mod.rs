//! The restore operation: a snapshot (or parts of it) into a target directory.
//!
//! Every chunk is verified against its id before a byte is written. Nothing is written
//! outside the target: tree names are single safe components (checked when trees are
//! decoded), existing directories are entered only when they are real directories, and
//! files are opened without following symlinks. A file whose data is damaged is removed
//! and reported; the rest of the snapshot is still restored.

pub mod db;
pub mod ngw;

use std::collections::{HashMap, HashSet};
use std::ffi::OsStr;
use std::fs::{self, File};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use rayon::prelude::*;

use crate::error::{Error, IoContext, Refusal, Result, Usage};
use crate::format::id::TreeId;
use crate::format::snapshot::Snapshot;
use crate::format::tree::{split_path, Content, Meta, Node, NodeKind};
use crate::locked;
use crate::progress::Progress;
use crate::repo::{Lock, Repository};

/// What to restore and where.
#[derive(Clone, Debug, Default)]
pub struct RestoreOptions {
    /// Directory to restore into (created if absent).
    pub target: PathBuf,
    /// Only these paths of the snapshot (all when empty).
    pub include: Vec<String>,
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
    /// Entries not restored for a harmless reason (sockets, devices without root).
    pub warnings: Vec<String>,
    /// Entries that failed, each an [`Error::Entry`] naming it.
    pub errors: Vec<Error>,
}

/// Splits a path inside a snapshot (`/srv/ngw`, `db/x.sql`) into safe components.
pub fn snapshot_path(p: &str) -> Result<Vec<Vec<u8>>> {
    split_path(p).ok_or_else(|| {
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
}

/// Plans restoring `snap` as `opts` say: resolves the included paths. Fails, with
/// nothing written, when the target is not a directory or an included path is not in
/// the snapshot.
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
    let mut roots = Vec::new();
    if opts.include.is_empty() {
        roots.push(Root::Tree(snap.tree));
    }
    for inc in &opts.include {
        let comps = snapshot_path(inc)?;
        let node = node_at(repo, snap, inc)?;
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
        target: target.clone(),
    })
}

impl RestorePlan<'_> {
    /// Counts what the plan writes, walking its trees (no file content is read): what
    /// `--dry-run` prints. A restore itself does not need it, and does not pay for it.
    pub fn tally(&self) -> Result<RestoreTally> {
        let mut t = RestoreTally::default();
        let mut links = HashSet::new();
        for root in &self.roots {
            match root {
                Root::Tree(tree) => self.count_tree(tree, &mut t, &mut links)?,
                Root::Entry { node, .. } => self.count(node, &mut t, &mut links)?,
            }
        }
        Ok(t)
    }

    /// Counts the entries of `tree`, recursively; `links`: the hard-linked files seen.
    fn count_tree(
        &self,
        tree: &TreeId,
        t: &mut RestoreTally,
        links: &mut HashSet<(u64, u64)>,
    ) -> Result<()> {
        for n in &self.repo.load_tree(tree)?.nodes {
            self.count(n, t, links)?;
        }
        Ok(())
    }

    /// Counts `node` and what it holds.
    fn count(
        &self,
        node: &Node,
        t: &mut RestoreTally,
        links: &mut HashSet<(u64, u64)>,
    ) -> Result<()> {
        match &node.kind {
            NodeKind::Dir(tree) => {
                t.dirs += 1;
                return self.count_tree(tree, t, links);
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
        let r = Restorer {
            repo,
            progress,
            is_root: rustix::process::geteuid().is_root(),
            links: Mutex::new(HashMap::new()),
            deferred: Mutex::new(Vec::new()),
            dirs_meta: Mutex::new(Vec::new()),
            warnings: Mutex::new(Vec::new()),
            errors: Mutex::new(Vec::new()),
            files: AtomicU64::new(0),
            dirs: AtomicU64::new(0),
            others: AtomicU64::new(0),
            bytes: AtomicU64::new(0),
        };
        let target = &self.target;
        fs::create_dir_all(target).at(target)?;
        for root in &self.roots {
            match root {
                Root::Tree(tree) => r.dir_contents(tree, target, "", false),
                Root::Entry { comps, node, spath } => {
                    let mut dest = target.clone();
                    for c in &comps[..comps.len() - 1] {
                        dest.push(OsStr::from_bytes(c));
                        ensure_dir(&dest)?;
                    }
                    dest.push(OsStr::from_bytes(&comps[comps.len() - 1]));
                    r.entry(node, &dest, spath, false);
                }
            }
        }
        for (first, dest, spath) in locked(&r.deferred).drain(..) {
            if first == dest {
                continue;
            }
            let res = remove_non_dir(&dest).and_then(|_| fs::hard_link(&first, &dest).at(&dest));
            match res {
                Ok(()) => {
                    r.files.fetch_add(1, Ordering::Relaxed);
                    progress.items(1);
                }
                Err(e) => r.fail(&spath, e),
            }
        }
        let mut dirs = locked(&r.dirs_meta).split_off(0);
        dirs.sort_by_key(|d| std::cmp::Reverse(d.0.as_os_str().len()));
        for (path, meta) in dirs {
            if let Err(e) = r.apply_meta(&path, &meta, false) {
                r.warn(format!("{}: {e}", path.display()));
            }
        }
        Ok(RestoreOutcome {
            files: r.files.into_inner(),
            dirs: r.dirs.into_inner(),
            others: r.others.into_inner(),
            bytes: r.bytes.into_inner(),
            warnings: r
                .warnings
                .into_inner()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
            errors: r
                .errors
                .into_inner()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        })
    }
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

struct Restorer<'r> {
    repo: &'r Repository,
    progress: &'r dyn Progress,
    is_root: bool,
    links: Mutex<HashMap<(u64, u64), PathBuf>>,
    deferred: Mutex<Vec<(PathBuf, PathBuf, String)>>,
    dirs_meta: Mutex<Vec<(PathBuf, Meta)>>,
    warnings: Mutex<Vec<String>>,
    errors: Mutex<Vec<Error>>,
    files: AtomicU64,
    dirs: AtomicU64,
    others: AtomicU64,
    bytes: AtomicU64,
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

    /// Restores the entries of `tree` into `dest`; `fresh`: this restore created `dest`,
    /// so nothing is in the way of its entries.
    fn dir_contents(&self, tree: &TreeId, dest: &Path, spath: &str, fresh: bool) {
        let tree = match self.repo.load_tree(tree) {
            Ok(t) => t,
            Err(e) => return self.fail(if spath.is_empty() { "/" } else { spath }, e),
        };
        tree.nodes.par_iter().for_each(|n| {
            let name = OsStr::from_bytes(&n.name);
            let sp = format!("{spath}/{}", name.to_string_lossy());
            self.entry(n, &dest.join(name), &sp, fresh);
        });
    }

    fn entry(&self, node: &Node, dest: &Path, spath: &str, fresh: bool) {
        if let Err(e) = self.entry_inner(node, dest, spath, fresh) {
            self.fail(spath, e);
        }
    }

    fn entry_inner(&self, node: &Node, dest: &Path, spath: &str, fresh: bool) -> Result<()> {
        if !fresh && !matches!(node.kind, NodeKind::Dir(_) | NodeKind::Socket) {
            remove_non_dir(dest)?;
        }
        match &node.kind {
            NodeKind::Dir(tree) => {
                let created = ensure_dir(dest)?;
                self.dirs.fetch_add(1, Ordering::Relaxed);
                locked(&self.dirs_meta).push((dest.to_path_buf(), node.meta));
                self.dir_contents(tree, dest, spath, created);
                return Ok(());
            }
            NodeKind::File(content) => return self.file(node, content, dest, spath),
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
            NodeKind::Socket => {
                self.warn(format!("{spath}: sockets are recorded but not restored"));
                return Ok(());
            }
        }
        self.others.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    fn file(&self, node: &Node, content: &Content, dest: &Path, spath: &str) -> Result<()> {
        let m = &node.meta;
        if m.nlink > 1 {
            let mut links = locked(&self.links);
            if let Some(first) = links.get(&(m.dev, m.ino)) {
                locked(&self.deferred).push((first.clone(), dest.to_path_buf(), spath.to_string()));
                return Ok(());
            }
            links.insert((m.dev, m.ino), dest.to_path_buf());
        }
        let f = File::options()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(rustix::fs::OFlags::NOFOLLOW.bits() as i32)
            .open(dest)
            .at(dest)?;
        let written = self
            .repo
            .read_content_at(content, &|at, chunk| {
                write_sparse(&f, at, chunk).at(dest)?;
                self.progress.bytes(chunk.len() as u64);
                Ok(())
            })
            .and_then(|len| {
                f.set_len(len).at(dest)?;
                Ok(len)
            });
        let len = match written {
            Ok(len) => len,
            Err(e) => {
                drop(f);
                let _ = fs::remove_file(dest);
                return Err(Error::NotRestored {
                    source: Box::new(e),
                });
            }
        };
        self.apply_meta_fd(&f, dest, m)?;
        drop(f);
        self.files.fetch_add(1, Ordering::Relaxed);
        self.bytes.fetch_add(len, Ordering::Relaxed);
        self.progress.items(1);
        Ok(())
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
