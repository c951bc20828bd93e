//! The file system a mount shows, as FUSE requests it: the directories made from the
//! list of snapshots (`snapshots/`, `hosts/<host>/`, `tags/<tag>/`, `latest` links),
//! and inside each snapshot its trees, loaded when a directory is looked into.
//!
//! Inode numbers are not stored anywhere: each is a hash of where the entry is (its
//! parent's number and its name; for a file with hard links, its snapshot and source
//! device and inode, so that its names share one number). The table of inodes holds
//! only what the kernel has looked up and not yet forgotten. Decoded trees are kept in
//! a cache bounded by their entry count.
//!
//! The list of snapshots is read again when a top directory is looked into and the
//! list is older than [`RELIST_AFTER`], so new snapshots appear without remounting.
//! A file that cannot be read (a damaged or missing chunk) fails with EIO, and the
//! first failure of each open file is logged with its path.
//!
//! Every request that reads the repository (lookup, readdir, open, read) is served
//! within the mount's lock (see `hold`); when the lock had been given up and is taken
//! again, the places of chunks the file maps kept and the list of snapshots are
//! dropped, since a prune may have moved or removed them meanwhile.

use std::collections::{BTreeSet, HashMap};
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use fuser::{
    Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags, Generation, INodeNo, InitFlags,
    KernelConfig, LockOwner, OpenFlags, ReplyAttr, ReplyData, ReplyDirectory, ReplyDirectoryPlus,
    ReplyEmpty, ReplyEntry, ReplyOpen, Request,
};

use super::cache::{Chunks, FileMap, Lru};
use super::hold::{Entered, Hold};
use super::MountOptions;
use crate::error::{Error, Result};
use crate::format::id::{SnapshotId, TreeId};
use crate::format::tree::{Node, NodeKind, Timestamp, Tree};
use crate::locked;
use crate::repo::Repository;

const ROOT: u64 = 1;
const SNAPSHOTS: u64 = 2;
const HOSTS: u64 = 3;
const TAGS: u64 = 4;
/// How long the kernel may trust what it was told of an entry inside a snapshot
/// (snapshots never change).
const TTL_SNAPSHOT: Duration = Duration::from_secs(60);
/// How long it may trust the directories made from the list of snapshots.
const TTL_LISTING: Duration = Duration::from_secs(1);
/// How old the list of snapshots may be before it is read again.
pub(super) const RELIST_AFTER: Duration = Duration::from_secs(3);
/// Entries of decoded trees kept in the cache.
const TREE_BUDGET: u64 = 20_000;

/// What an inode is.
#[derive(Clone)]
enum What {
    Root,
    Snapshots,
    Hosts,
    Tags,
    /// `hosts/<host>/`.
    Host(String),
    /// `tags/<tag>/`.
    Tag(String),
    /// A symlink of the mount's own (`latest`, the entries of hosts and tags).
    Link(Vec<u8>),
    /// An entry of a snapshot, its root directory included.
    Node {
        snap: SnapshotId,
        kind: NodeKind,
    },
}

/// An inode the kernel holds.
struct Inode {
    what: What,
    attr: FileAttr,
    parent: u64,
    /// Its name in its parent (the path, for messages, is made from these).
    name: Box<[u8]>,
    /// Lookups not yet forgotten.
    lookups: u64,
}

/// A directory entry, before it is an inode.
struct Child {
    name: Vec<u8>,
    what: What,
    attr: FileAttr,
}

/// One snapshot, as the top directories show it.
struct Snap {
    id: SnapshotId,
    /// `2026-12-03T20:50:39+07:00_1a2b3c4d`: its start time (local, with its offset, as
    /// `snap list` shows it) and short id.
    name: String,
    host: String,
    tags: Vec<String>,
    tree: TreeId,
    time: SystemTime,
}

struct Listing {
    read: Option<Instant>,
    snaps: Arc<Vec<Snap>>,
}

/// An open file.
struct Handle {
    map: Arc<FileMap>,
    path: PathBuf,
    /// Where a sequential reader reads next.
    next: AtomicU64,
    /// Whether a failure was logged already.
    reported: AtomicBool,
}

/// The mounted file system.
pub(super) struct SnapFs {
    repo: Arc<Repository>,
    hold: Arc<Hold>,
    /// Boxed: the table grows by doubling, and its empty slots cost a pointer each,
    /// not an inode (of 100,000 inodes after a `find`, half the memory).
    inodes: Mutex<HashMap<u64, Box<Inode>>>,
    listing: Mutex<Listing>,
    trees: Mutex<Lru<TreeId, Arc<Tree>>>,
    chunks: Arc<Chunks>,
    handles: Mutex<HashMap<u64, Arc<Handle>>>,
    next_fh: AtomicU64,
    /// Owner of the directories the mount makes: who mounted it.
    owner: (u32, u32),
    mounted: SystemTime,
}

impl SnapFs {
    pub(super) fn new(repo: Arc<Repository>, opts: &MountOptions, hold: Arc<Hold>) -> SnapFs {
        let owner = (
            rustix::process::getuid().as_raw(),
            rustix::process::getgid().as_raw(),
        );
        let fs = SnapFs {
            chunks: Arc::new(Chunks::new(repo.clone(), opts.cache_bytes)),
            repo,
            hold,
            inodes: Mutex::new(HashMap::new()),
            listing: Mutex::new(Listing {
                read: None,
                snaps: Arc::new(Vec::new()),
            }),
            trees: Mutex::new(Lru::new(TREE_BUDGET)),
            handles: Mutex::new(HashMap::new()),
            next_fh: AtomicU64::new(1),
            owner,
            mounted: SystemTime::now(),
        };
        let mut inodes = locked(&fs.inodes);
        for (ino, what, name) in [
            (ROOT, What::Root, ""),
            (SNAPSHOTS, What::Snapshots, "snapshots"),
            (HOSTS, What::Hosts, "hosts"),
            (TAGS, What::Tags, "tags"),
        ] {
            let inode = Inode {
                what,
                attr: fs.dir_attr(ino, fs.mounted),
                parent: ROOT,
                name: name.as_bytes().into(),
                // Never forgotten.
                lookups: 1,
            };
            inodes.insert(ino, Box::new(inode));
        }
        drop(inodes);
        fs
    }

    /// Enters a request that reads the repository (see `hold`), or says which error
    /// the kernel gets.
    fn enter(&self) -> std::result::Result<Entered<'_>, Errno> {
        match self.hold.enter() {
            Ok(entered) => {
                if entered.retaken {
                    self.chunks.forget_places();
                    locked(&self.listing).read = None;
                }
                Ok(entered)
            }
            Err(e) => {
                log::error!("{e}");
                Err(match e {
                    Error::Locked { .. } => Errno::EAGAIN,
                    _ => Errno::EIO,
                })
            }
        }
    }

    /// The snapshots, read again when the list is older than [`RELIST_AFTER`].
    fn snaps(&self) -> Arc<Vec<Snap>> {
        let mut l = locked(&self.listing);
        if l.read.is_none_or(|t| t.elapsed() >= RELIST_AFTER) {
            match self.relist() {
                Ok(s) => l.snaps = Arc::new(s),
                Err(e) => log::warn!("cannot read the list of snapshots again: {e}"),
            }
            l.read = Some(Instant::now());
        }
        l.snaps.clone()
    }

    fn relist(&self) -> Result<Vec<Snap>> {
        // The index files too: a new snapshot's blobs are in them.
        self.repo.refresh()?;
        Ok(self
            .repo
            .snapshots()?
            .into_iter()
            .map(|(id, s)| Snap {
                id,
                name: format!(
                    "{}_{}",
                    s.time
                        .with_timezone(&chrono::Local)
                        .format("%Y-%m-%dT%H:%M:%S%:z"),
                    id.short()
                ),
                host: s.host,
                tags: s.tags,
                tree: s.tree,
                time: s.time.into(),
            })
            .collect())
    }

    /// A decoded tree, from the cache or the repository.
    fn tree(&self, id: &TreeId) -> Result<Arc<Tree>> {
        if let Some(t) = locked(&self.trees).get(id) {
            return Ok(t);
        }
        let tree = Arc::new(self.repo.load_tree(id)?);
        let cost = tree.nodes.len() as u64 + 1;
        locked(&self.trees).insert(*id, tree.clone(), cost);
        Ok(tree)
    }

    fn dir_attr(&self, ino: u64, time: SystemTime) -> FileAttr {
        FileAttr {
            ino: INodeNo(ino),
            size: 0,
            blocks: 0,
            atime: time,
            mtime: time,
            ctime: time,
            crtime: time,
            kind: FileType::Directory,
            perm: 0o555,
            nlink: 1,
            uid: self.owner.0,
            gid: self.owner.1,
            rdev: 0,
            blksize: 4096,
            flags: 0,
        }
    }

    fn link_child(&self, parent: u64, name: &str, target: String, time: SystemTime) -> Child {
        let mut attr = self.dir_attr(
            ino_of(&[b"link", &parent.to_le_bytes(), name.as_bytes()]),
            time,
        );
        attr.kind = FileType::Symlink;
        attr.perm = 0o777;
        attr.size = target.len() as u64;
        Child {
            name: name.as_bytes().to_vec(),
            what: What::Link(target.into_bytes()),
            attr,
        }
    }

    /// The entries of a directory the mount makes from the list of snapshots.
    fn listed(&self, ino: u64, what: &What) -> Vec<Child> {
        let snaps = self.snaps();
        let dir = |ino: u64, what: What, name: &str, time| Child {
            name: name.as_bytes().to_vec(),
            what,
            attr: self.dir_attr(ino, time),
        };
        let group = |pick: &dyn Fn(&Snap) -> bool| {
            let mut out: Vec<Child> = Vec::new();
            let mut latest = None;
            for s in snaps.iter().filter(|s| pick(s)) {
                out.push(self.link_child(
                    ino,
                    &s.name,
                    format!("../../snapshots/{}", s.name),
                    s.time,
                ));
                latest = Some(s);
            }
            if let Some(s) = latest {
                out.push(self.link_child(
                    ino,
                    "latest",
                    format!("../../snapshots/{}", s.name),
                    s.time,
                ));
            }
            out
        };
        match what {
            What::Root => vec![
                dir(SNAPSHOTS, What::Snapshots, "snapshots", self.mounted),
                dir(HOSTS, What::Hosts, "hosts", self.mounted),
                dir(TAGS, What::Tags, "tags", self.mounted),
            ],
            What::Snapshots => {
                let mut out: Vec<Child> = snaps
                    .iter()
                    .map(|s| {
                        let what = What::Node {
                            snap: s.id,
                            kind: NodeKind::Dir(s.tree),
                        };
                        dir(ino_of(&[b"snapshot", s.id.bytes()]), what, &s.name, s.time)
                    })
                    .collect();
                if let Some(s) = snaps.last() {
                    out.push(self.link_child(ino, "latest", s.name.clone(), s.time));
                }
                out
            }
            What::Hosts | What::Tags => {
                let tags = matches!(what, What::Tags);
                let names: BTreeSet<&str> = snaps
                    .iter()
                    .flat_map(|s| {
                        if tags {
                            s.tags.iter().map(String::as_str).collect::<Vec<_>>()
                        } else {
                            vec![s.host.as_str()]
                        }
                    })
                    .filter(|n| crate::format::tree::is_safe_name(n.as_bytes()))
                    .collect();
                names
                    .into_iter()
                    .map(|n| {
                        let (kind, what) = if tags {
                            ("tag", What::Tag(n.to_string()))
                        } else {
                            ("host", What::Host(n.to_string()))
                        };
                        dir(
                            ino_of(&[kind.as_bytes(), n.as_bytes()]),
                            what,
                            n,
                            self.mounted,
                        )
                    })
                    .collect()
            }
            What::Host(h) => group(&|s| s.host == *h),
            What::Tag(t) => group(&|s| s.tags.contains(t)),
            What::Link(_) | What::Node { .. } => Vec::new(),
        }
    }

    /// What inode `ino` is.
    fn what(&self, ino: u64) -> Option<What> {
        locked(&self.inodes).get(&ino).map(|i| i.what.clone())
    }

    /// The path of inode `ino` in the mount, for messages.
    fn path(&self, ino: u64) -> PathBuf {
        let inodes = locked(&self.inodes);
        let mut names = Vec::new();
        let mut at = ino;
        while let Some(i) = inodes.get(&at).filter(|_| at != ROOT) {
            names.push(OsStr::from_bytes(&i.name));
            at = i.parent;
        }
        names.iter().rev().collect()
    }

    /// Entry `name` of directory `parent`.
    fn child(&self, parent: u64, what: &What, name: &[u8]) -> std::result::Result<Child, Errno> {
        match what {
            What::Node {
                snap,
                kind: NodeKind::Dir(tree),
            } => {
                let tree = self.tree(tree).map_err(|e| {
                    log::error!("{}: {e}", self.path(parent).display());
                    Errno::EIO
                })?;
                let node = tree.get(name).ok_or(Errno::ENOENT)?;
                Ok(node_child(parent, *snap, node))
            }
            What::Node { .. } | What::Link(_) => Err(Errno::ENOTDIR),
            _ => self
                .listed(parent, what)
                .into_iter()
                .find(|c| c.name == name)
                .ok_or(Errno::ENOENT),
        }
    }

    /// Gives the entries of directory `ino` from entry `offset` on (entry 0 is `.`, 1
    /// is `..`) to `add`, with the offset that follows each and the directory's path,
    /// until `add` says the reply is full.
    fn entries(
        &self,
        ino: u64,
        offset: u64,
        add: &mut dyn FnMut(u64, &Child) -> bool,
    ) -> std::result::Result<(), Errno> {
        let found = locked(&self.inodes)
            .get(&ino)
            .map(|i| (i.what.clone(), i.parent, i.attr));
        let Some((what, parent, attr)) = found else {
            return Err(Errno::ENOENT);
        };
        let _entered = self.enter()?;
        let dot = |name: &[u8], ino: u64| Child {
            name: name.to_vec(),
            what: What::Root,
            attr: FileAttr {
                ino: INodeNo(ino),
                ..attr
            },
        };
        let mut children = vec![dot(b".", ino), dot(b"..", parent)];
        let nodes = match &what {
            What::Node {
                snap,
                kind: NodeKind::Dir(tree),
            } => Some((
                *snap,
                self.tree(tree).map_err(|e| {
                    log::error!("{}: {e}", self.path(ino).display());
                    Errno::EIO
                })?,
            )),
            What::Node { .. } | What::Link(_) => return Err(Errno::ENOTDIR),
            _ => {
                children.extend(self.listed(ino, &what));
                None
            }
        };
        let skip = usize::try_from(offset).unwrap_or(usize::MAX);
        for (k, c) in children.iter().enumerate().skip(skip) {
            if add(k as u64 + 1, c) {
                return Ok(());
            }
        }
        if let Some((snap, tree)) = nodes {
            // Only the entries this call returns get their attributes made.
            for (k, n) in tree.nodes.iter().enumerate().skip(skip.saturating_sub(2)) {
                if add(k as u64 + 3, &node_child(ino, snap, n)) {
                    break;
                }
            }
        }
        Ok(())
    }

    /// Records child `c` of directory `parent` as looked up once more.
    fn remember(&self, parent: u64, c: &Child) {
        let mut inodes = locked(&self.inodes);
        let inode = inodes.entry(c.attr.ino.0).or_insert_with(|| {
            Box::new(Inode {
                what: c.what.clone(),
                attr: c.attr,
                parent,
                name: c.name.as_slice().into(),
                lookups: 0,
            })
        });
        // A link's target changes when snapshots are added.
        inode.what = c.what.clone();
        inode.attr = c.attr;
        inode.lookups += 1;
    }

    fn ttl(what: &What) -> Duration {
        match what {
            What::Node { .. } => TTL_SNAPSHOT,
            _ => TTL_LISTING,
        }
    }
}

impl Filesystem for SnapFs {
    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> std::io::Result<()> {
        // READDIRPLUS where the kernel has it; `auto` lets it fall back to READDIR
        // for readers that look at names only (`find`, `ls` without `-l`).
        let plus = InitFlags::FUSE_DO_READDIRPLUS;
        if config.add_capabilities(plus).is_err() {
            log::debug!("the kernel has no READDIRPLUS");
        }
        Ok(())
    }

    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        let _entered = match self.enter() {
            Ok(e) => e,
            Err(e) => return reply.error(e),
        };
        let Some(what) = self.what(parent.0) else {
            return reply.error(Errno::ENOENT);
        };
        match self.child(parent.0, &what, name.as_bytes()) {
            Ok(c) => {
                self.remember(parent.0, &c);
                reply.entry(&Self::ttl(&c.what), &c.attr, Generation(0));
            }
            Err(e) => reply.error(e),
        }
    }

    fn forget(&self, _req: &Request, ino: INodeNo, nlookup: u64) {
        let mut inodes = locked(&self.inodes);
        if let Some(i) = inodes.get_mut(&ino.0) {
            i.lookups = i.lookups.saturating_sub(nlookup);
            if i.lookups == 0 && ino.0 > TAGS {
                inodes.remove(&ino.0);
            }
        }
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        let found = locked(&self.inodes)
            .get(&ino.0)
            .map(|i| (Self::ttl(&i.what), i.attr));
        match found {
            Some((ttl, attr)) => reply.attr(&ttl, &attr),
            None => reply.error(Errno::ENOENT),
        }
    }

    fn readlink(&self, _req: &Request, ino: INodeNo, reply: ReplyData) {
        match self.what(ino.0) {
            Some(
                What::Link(t)
                | What::Node {
                    kind: NodeKind::Symlink(t),
                    ..
                },
            ) => reply.data(&t),
            Some(_) => reply.error(Errno::EINVAL),
            None => reply.error(Errno::ENOENT),
        }
    }

    fn open(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        let _entered = match self.enter() {
            Ok(e) => e,
            Err(e) => return reply.error(e),
        };
        let Some(what) = self.what(ino.0) else {
            return reply.error(Errno::ENOENT);
        };
        let What::Node {
            kind: NodeKind::File(content),
            ..
        } = what
        else {
            return reply.error(Errno::EINVAL);
        };
        match self.chunks.map(ino.0, &content) {
            Ok(map) => {
                let fh = self.next_fh.fetch_add(1, Ordering::Relaxed);
                let handle = Handle {
                    map,
                    path: self.path(ino.0),
                    next: AtomicU64::new(0),
                    reported: AtomicBool::new(false),
                };
                locked(&self.handles).insert(fh, Arc::new(handle));
                self.hold.opened();
                // Contents never change: the kernel may keep its cached pages.
                reply.opened(FileHandle(fh), FopenFlags::FOPEN_KEEP_CACHE);
            }
            Err(e) => {
                log::error!("{}: {e}", self.path(ino.0).display());
                reply.error(Errno::EIO);
            }
        }
    }

    fn read(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        let Some(h) = locked(&self.handles).get(&fh.0).cloned() else {
            return reply.error(Errno::EBADF);
        };
        let _entered = match self.enter() {
            Ok(e) => e,
            Err(e) => return reply.error(e),
        };
        match self.chunks.read(&h.map, offset, size as usize) {
            Ok((data, last)) => {
                let sequential =
                    h.next.swap(offset + data.len() as u64, Ordering::Relaxed) == offset;
                if let (true, Some(i)) = (sequential, last) {
                    self.chunks.read_ahead(&h.map, i + 1);
                }
                reply.data(&data);
            }
            Err(e) => {
                if !h.reported.swap(true, Ordering::Relaxed) {
                    log::error!("{}: {e}", h.path.display());
                }
                reply.error(Errno::EIO);
            }
        }
    }

    fn release(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        if locked(&self.handles).remove(&fh.0).is_some() {
            self.hold.closed();
        }
        reply.ok();
    }

    fn readdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        let listed = self.entries(ino.0, offset, &mut |next, c| {
            reply.add(c.attr.ino, next, c.attr.kind, OsStr::from_bytes(&c.name))
        });
        match listed {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    /// READDIR with each entry's attributes, which the kernel keeps as if looked up:
    /// `ls -l`, `du` and `find -size` need no LOOKUP per entry.
    fn readdirplus(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectoryPlus,
    ) {
        let listed = self.entries(ino.0, offset, &mut |next, c| {
            let name = OsStr::from_bytes(&c.name);
            let ttl = Self::ttl(&c.what);
            let full = reply.add(c.attr.ino, next, name, &ttl, &c.attr, Generation(0));
            // The kernel counts a lookup for each entry it was given, but `.` and `..`.
            if !full && c.name != b"." && c.name != b".." {
                self.remember(ino.0, c);
            }
            full
        });
        match listed {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }
}

/// Entry `node` of directory `parent` of snapshot `snap`.
fn node_child(parent: u64, snap: SnapshotId, node: &Node) -> Child {
    let m = &node.meta;
    let ino = match node.kind {
        NodeKind::File(_) if m.nlink > 1 => ino_of(&[
            b"hard link",
            snap.bytes(),
            &m.dev.to_le_bytes(),
            &m.ino.to_le_bytes(),
        ]),
        _ => ino_of(&[b"node", &parent.to_le_bytes(), &node.name]),
    };
    let (kind, size, rdev) = match &node.kind {
        NodeKind::File(_) => (FileType::RegularFile, m.size, 0),
        NodeKind::Dir(_) => (FileType::Directory, m.size, 0),
        NodeKind::Symlink(t) => (FileType::Symlink, t.len() as u64, 0),
        NodeKind::Fifo => (FileType::NamedPipe, 0, 0),
        NodeKind::Socket => (FileType::Socket, 0, 0),
        NodeKind::CharDev(r) => (FileType::CharDevice, 0, kernel_rdev(*r)),
        NodeKind::BlockDev(r) => (FileType::BlockDevice, 0, kernel_rdev(*r)),
    };
    let mtime = system_time(m.mtime);
    Child {
        name: node.name.clone(),
        what: What::Node {
            snap,
            kind: node.kind.clone(),
        },
        attr: FileAttr {
            ino: INodeNo(ino),
            size,
            blocks: size.div_ceil(512),
            atime: mtime,
            mtime,
            ctime: system_time(m.ctime),
            crtime: mtime,
            kind,
            perm: u16::try_from(m.mode & 0o7777).expect("12 bits"),
            nlink: m.nlink.max(1),
            uid: m.uid,
            gid: m.gid,
            rdev,
            blksize: 4096,
            flags: 0,
        },
    }
}

/// Hashes where an entry is into its inode number (above the fixed ones).
fn ino_of(parts: &[&[u8]]) -> u64 {
    let mut h = blake3::Hasher::new();
    for p in parts {
        h.update(&(p.len() as u64).to_le_bytes());
        h.update(p);
    }
    let n = u64::from_le_bytes(h.finalize().as_bytes()[..8].try_into().expect("8 bytes"));
    n.max(TAGS + 1)
}

fn system_time(t: Timestamp) -> SystemTime {
    let nsec = Duration::from_nanos(u64::from(t.nsec));
    let at = if t.sec >= 0 {
        UNIX_EPOCH.checked_add(Duration::from_secs(t.sec.unsigned_abs()))
    } else {
        UNIX_EPOCH.checked_sub(Duration::from_secs(t.sec.unsigned_abs()))
    };
    at.and_then(|a| a.checked_add(nsec)).unwrap_or(UNIX_EPOCH)
}

/// A device number as the kernel's FUSE attributes carry it (its `new_encode_dev`).
fn kernel_rdev(dev: u64) -> u32 {
    let (major, minor) = (rustix::fs::major(dev), rustix::fs::minor(dev));
    (minor & 0xff) | (major << 8) | ((minor & !0xff) << 12)
}
