//! The directories above the sources (`/srv` for `/srv/ngw`, the places of streams),
//! built in memory and encoded last.

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use super::{add, Placed, Run};
use crate::error::{Error, Result, Usage};
use crate::format::id::TreeId;
use crate::format::tree::{shown_name, Meta, Node, NodeKind, Timestamp, Tree};
use crate::source::fs as sfs;

impl Run<'_> {
    /// Places the walked path sources in `root`: `/` itself as the root's entries, any
    /// other path with the metadata of the real directories above it (`/srv` for
    /// `/srv/ngw`).
    pub(super) fn graft(
        &self,
        root: &mut VDir,
        placed: &[Placed],
        walked: Vec<Node>,
    ) -> Result<()> {
        for ((comps, _), node) in placed.iter().zip(walked) {
            if comps.is_empty() {
                let NodeKind::Dir(tree) = &node.kind else {
                    return Err(Error::internal("/ is not a directory", None));
                };
                root.meta = Some(node.meta);
                // The tree was just saved: commit it before reading it back.
                self.saver.flush()?;
                for n in self.repo.load_tree(tree)?.nodes {
                    root.insert(std::slice::from_ref(&n.name.clone()), n)?;
                }
                continue;
            }
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
        Ok(())
    }

    pub(super) fn save_vdir(&self, d: VDir, now: Timestamp) -> Result<TreeId> {
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
        self.saver.save_tree(&tree)
    }
}

/// Metadata of an entry that exists only in the snapshot (a stream, or a directory
/// that only names one): owned by the current user, timestamped `now`.
pub(super) fn synthetic_meta(mode: u32, size: u64, now: Timestamp) -> Meta {
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
pub(super) struct VDir {
    pub(super) meta: Option<Meta>,
    children: BTreeMap<Vec<u8>, VEntry>,
}

enum VEntry {
    Dir(VDir),
    Leaf(Node),
}

impl VDir {
    /// Puts `node` at `comps`; a place another source holds is refused, naming the
    /// whole path.
    pub(super) fn insert(&mut self, comps: &[Vec<u8>], node: Node) -> Result<()> {
        if self.put(comps, node) {
            return Ok(());
        }
        Err(Usage::SourcesOverlap {
            at: format!("/{}", shown_name(&comps.join(&b'/'))),
        }
        .into())
    }

    /// [`VDir::insert`]; false when the place is taken.
    fn put(&mut self, comps: &[Vec<u8>], node: Node) -> bool {
        let Some((first, rest)) = comps.split_first() else {
            return false;
        };
        if rest.is_empty() {
            if self.children.contains_key(first) {
                return false;
            }
            self.children.insert(first.clone(), VEntry::Leaf(node));
            return true;
        }
        match self
            .children
            .entry(first.clone())
            .or_insert_with(|| VEntry::Dir(VDir::default()))
        {
            VEntry::Dir(d) => d.put(rest, node),
            VEntry::Leaf(_) => false,
        }
    }

    pub(super) fn set_dir_meta(&mut self, comps: &[Vec<u8>], meta: Meta) {
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
