//! Walking the file tree: directories in parallel (rayon), files in name order; a
//! file unchanged since the parent snapshot reuses its chunk list unread.

use std::fs::Metadata;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;

use rayon::prelude::*;

use super::{add, Run};
use crate::error::{Error, IoContext, Result, SourceError};
use crate::format::id::TreeId;
use crate::format::pack::BlobKind;
use crate::format::tree::{Content, Meta, Node, NodeKind, Tree};
use crate::progress::Phase;
use crate::source::fs::{self as sfs, Special};

impl Run<'_> {
    /// Backs up the path sources, each against its place in the parent snapshot.
    pub(super) fn walk(
        &self,
        placed: &[(Vec<Vec<u8>>, PathBuf)],
        parent_tree: Option<TreeId>,
    ) -> Result<Vec<Node>> {
        if !placed.is_empty() {
            self.progress.phase(Phase::ReadingFiles);
        }
        placed
            .iter()
            .map(|(comps, abs)| {
                let md = std::fs::symlink_metadata(abs).at(abs)?;
                if md.is_symlink() && std::fs::metadata(abs).is_ok_and(|m| m.is_dir()) {
                    let to = std::fs::read_link(abs).unwrap_or_default();
                    log::warn!(
                        "{} is a symlink to the directory {}: only the link is stored; name the directory to back up what it holds",
                        abs.display(),
                        to.display()
                    );
                }
                // A named directory that cannot be listed fails the run: below one, such
                // a directory is stored empty.
                if md.is_dir() {
                    if let Err(e) = std::fs::read_dir(abs) {
                        return Err(SourceError::Unreadable {
                            path: abs.clone(),
                            why: e.to_string(),
                        }
                        .into());
                    }
                }
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
                    Error::from(SourceError::Unreadable {
                        path: abs.clone(),
                        why: self.last_warning(),
                    })
                })
            })
            .collect()
    }

    /// Whether a parent entry's mtime is too close to the parent's backup to trust: a
    /// file rewritten within the same timestamp tick right after it was read would
    /// look unchanged forever ("racy clean", as git calls it).
    pub(super) fn racy(&self, old: &Meta) -> bool {
        self.parent_time.is_none_or(|t| old.mtime.sec >= t - 1)
    }

    /// The previous version of what a stream source stores at `at`: the node there in
    /// the latest snapshot with the stream name above it, else in the parent.
    pub(super) fn previous_node(&self, at: &[Vec<u8>]) -> Option<Node> {
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
    pub(super) fn previous(&self, at: &[Vec<u8>]) -> Option<Content> {
        file_content(&self.previous_node(at)?)
    }

    /// The previous version of the directory a source fills at `at` (a dump's
    /// directory), read once for all its files.
    pub(super) fn previous_dir(&self, at: &[Vec<u8>]) -> Option<Tree> {
        match self.previous_node(at)?.kind {
            NodeKind::Dir(id) => self.repo.load_tree(&id).ok(),
            _ => None,
        }
    }

    /// Backs up one entry; `None` when it was left out with a warning.
    pub(super) fn node(
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

    pub(super) fn file(
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
            if sfs::unchanged(old, &meta) && !self.racy(old) && self.reusable(content)? {
                add(&self.counts.files, 1);
                add(&self.counts.bytes_total, meta.size);
                self.progress.bytes(meta.size);
                self.progress.items(1);
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
        // Written to while read: what is stored may be part old, part new bytes. Its
        // recorded times stay those before, so the next backup reads it again.
        let times = |m: &Metadata| (m.mtime(), m.mtime_nsec(), m.ctime(), m.ctime_nsec());
        let rewritten = f.metadata().is_ok_and(|after| times(&after) != times(&md));
        if size != meta.size {
            self.warn(format!(
                "{}: changed size while being read ({} bytes, then {size}); stored as read",
                path.display(),
                meta.size
            ));
            meta.size = size;
        } else if rewritten {
            self.warn(format!(
                "{}: written to while being read; stored as read, which may mix old and new bytes (the next backup reads it again)",
                path.display()
            ));
        }
        add(&self.counts.files, 1);
        add(&self.counts.files_read, 1);
        add(&self.counts.bytes_total, size);
        self.progress.items(1);
        Ok(Some(Node {
            name,
            kind: NodeKind::File(content),
            meta,
        }))
    }

    /// A directory stored empty: of another file system, not entered
    /// (`--one-file-system`), so that a restore recreates the mount point, or one that
    /// cannot be listed.
    fn empty_dir(&self, name: Vec<u8>, meta: Meta) -> Result<Option<Node>> {
        let id = self.saver.save_tree(&Tree { nodes: Vec::new() })?;
        add(&self.counts.dirs, 1);
        Ok(Some(Node {
            name,
            kind: NodeKind::Dir(id),
            meta,
        }))
    }

    pub(super) fn dir(
        &self,
        path: &Path,
        name: Vec<u8>,
        meta: Meta,
        prev: Option<&Node>,
    ) -> Result<Option<Node>> {
        let entries = match self.select.list(path, meta.dev) {
            Ok(e) => e,
            Err(e) => {
                // Kept, empty, with its mode, owner and times (as restic does), so a
                // restore makes it again; the warning says its entries are missing.
                self.warn(format!(
                    "{}: {e}; stored as an empty directory",
                    path.display()
                ));
                return self.empty_dir(name, meta);
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
                if self.select.mount_point(&md, meta.dev) {
                    return self.empty_dir(e.name.into_vec(), sfs::meta_of(&md));
                }
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
        let id = TreeId(self.repo.blob_id(&bytes));
        // An unchanged directory encodes to the parent's tree, just read back: stored,
        // unless blobs have left the index since the parent was saved (then looked up).
        if prev_tree.map(|(prev_id, _)| prev_id) != Some(id) || !self.parent_verified {
            self.saver.save_hashed(BlobKind::Tree, id.0, &bytes)?;
        }
        add(&self.counts.dirs, 1);
        Ok(Some(Node {
            name,
            kind: NodeKind::Dir(id),
            meta,
        }))
    }
}

/// A file node's content.
pub(super) fn file_content(node: &Node) -> Option<Content> {
    match &node.kind {
        NodeKind::File(content) => Some(content.clone()),
        _ => None,
    }
}
