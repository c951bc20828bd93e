//! `diff`: what changed between two snapshots, entry by entry.
//!
//! Both root trees are walked together in name order; a subtree with the same id in
//! both is skipped unread, so the cost follows the change, not the snapshot. A file
//! whose chunk list differs changed its content; one whose list is the same but whose
//! mode, owner or mtime differ changed only its metadata.
//!
//! In a pg_dump directory (`<dumpId>.dat` files next to a `toc.dat`) in both
//! snapshots, data files are paired by their table, not their name (pg_dump renumbers
//! them when a table is added; see [`crate::ops::dump_tables`]), named by it, and
//! compared by content alone: their mode and mtime are the backup's, not the table's.

use std::collections::HashMap;

use super::dump_tables::{DumpTables, Pairing};
use crate::error::Result;
use crate::format::id::{SnapshotId, TreeId};
use crate::format::snapshot::Snapshot;
use crate::format::tree::{Node, NodeKind};
use crate::repo::Repository;

/// How an entry changed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Change {
    /// Only in the newer snapshot.
    Added,
    /// Only in the older one.
    Removed,
    /// Content (or link target, or kind) differs.
    Modified,
    /// Only mode, owner or mtime differ.
    Metadata,
}

/// One changed entry.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Entry {
    /// How.
    pub change: Change,
    /// `/`-separated path in the snapshot.
    pub path: String,
    /// `file`, `dir`, `symlink` or `other`.
    pub kind: &'static str,
    /// Size in the older snapshot (0 if absent).
    pub old_size: u64,
    /// Size in the newer snapshot (0 if absent).
    pub new_size: u64,
    /// For a pg_dump table file, its table (`schema.name`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub table: Option<String>,
    /// The path in the older snapshot, when it differs (a renumbered table file).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub old_path: Option<String>,
}

/// What an entry's pairing tells beyond its two nodes.
#[derive(Clone, Default)]
struct Label {
    table: Option<String>,
    old_path: Option<String>,
    /// Compare content only (a dump file's metadata is the backup's).
    content_only: bool,
}

fn kind(n: &Node) -> &'static str {
    match n.kind {
        NodeKind::File(_) => "file",
        NodeKind::Dir(_) => "dir",
        NodeKind::Symlink(_) => "symlink",
        _ => "other",
    }
}

/// Walks two snapshots' trees and reports every changed entry to `out`, in path order.
pub fn diff(
    repo: &Repository,
    old: &TreeId,
    new: &TreeId,
    out: &mut dyn FnMut(Entry) -> Result<()>,
) -> Result<()> {
    let _lock = repo.read_lock("diff")?;
    Walk { repo, out }.trees(Some(old), Some(new), "")
}

struct Walk<'a, 'o> {
    repo: &'a Repository,
    out: &'o mut dyn FnMut(Entry) -> Result<()>,
}

impl Walk<'_, '_> {
    fn nodes(&self, tree: Option<&TreeId>) -> Result<Vec<Node>> {
        Ok(match tree {
            Some(t) => self.repo.load_tree(t)?.nodes,
            None => Vec::new(),
        })
    }

    /// The tables of the dump among `nodes`, if they are one and pg_restore can list
    /// it.
    fn tables(&self, nodes: &[Node]) -> Option<DumpTables> {
        match DumpTables::of_nodes(self.repo, nodes) {
            Ok(t) => t,
            Err(e) => {
                log::warn!("pg_dump files paired by name: {e}");
                None
            }
        }
    }

    /// Compares two directories (either may be absent) at `prefix`.
    fn trees(&mut self, old: Option<&TreeId>, new: Option<&TreeId>, prefix: &str) -> Result<()> {
        if old.is_some() && old == new {
            return Ok(());
        }
        let a = self.nodes(old)?;
        let b = self.nodes(new)?;
        let pairing = Pairing {
            old: self.tables(&a),
            new: self.tables(&b),
        };
        let index: HashMap<&[u8], usize> = a
            .iter()
            .enumerate()
            .map(|(i, n)| (n.name.as_slice(), i))
            .collect();
        let mut paired = vec![false; a.len()];
        let mut pairs: Vec<(Option<&Node>, Option<&Node>)> = Vec::with_capacity(b.len());
        for y in &b {
            let x = pairing
                .old_name(&y.name)
                .and_then(|n| index.get(n))
                .map(|&i| {
                    paired[i] = true;
                    &a[i]
                });
            pairs.push((x, Some(y)));
        }
        pairs.extend(
            a.iter()
                .zip(paired)
                .filter(|p| !p.1)
                .map(|p| (Some(p.0), None)),
        );
        // Path order (the newer name where there is one); a removed entry before an
        // added one of the same name.
        pairs.sort_by(|p, q| {
            let key = |e: &(Option<&Node>, Option<&Node>)| {
                (e.1.or(e.0).expect("one side").name.clone(), e.1.is_some())
            };
            key(p).cmp(&key(q))
        });
        let name = |n: &Node| crate::format::tree::shown_name(&n.name);
        for (x, y) in pairs {
            let table = match (x, y, &pairing.old, &pairing.new) {
                (_, Some(y), _, Some(t)) => t.table(&y.name),
                (Some(x), None, Some(t), _) => t.table(&x.name),
                _ => None,
            };
            let label = Label {
                table: table.map(str::to_string),
                old_path: match (x, y) {
                    (Some(x), Some(y)) if x.name != y.name => Some(format!("{prefix}/{}", name(x))),
                    _ => None,
                },
                content_only: pairing.by_table(),
            };
            let path = format!("{prefix}/{}", name(y.or(x).expect("one side")));
            self.entry(x, y, &path, &label)?;
        }
        Ok(())
    }

    fn entry(
        &mut self,
        x: Option<&Node>,
        y: Option<&Node>,
        path: &str,
        label: &Label,
    ) -> Result<()> {
        let dir = |n: Option<&Node>| match n.map(|n| &n.kind) {
            Some(NodeKind::Dir(id)) => Some(*id),
            _ => None,
        };
        let same_access = |a: &Node, b: &Node| {
            (a.meta.mode, a.meta.uid, a.meta.gid) == (b.meta.mode, b.meta.uid, b.meta.gid)
        };
        let change = match (x, y) {
            (Some(_), None) => Change::Removed,
            (None, Some(_)) => Change::Added,
            (Some(a), Some(b)) if kind(a) != kind(b) => {
                // Another kind of entry under the same name: one went, one came.
                self.entry(Some(a), None, path, label)?;
                return self.entry(None, Some(b), path, label);
            }
            // A directory's mtime follows its entries: only mode and owner count.
            (Some(a), Some(b)) if dir(x).is_some() => {
                if !same_access(a, b) && !label.content_only {
                    self.emit(Change::Metadata, x, y, path, &Label::default())?;
                }
                return self.trees(dir(x).as_ref(), dir(y).as_ref(), path);
            }
            (Some(a), Some(b)) if a.kind != b.kind => Change::Modified,
            (Some(a), Some(b))
                if !label.content_only && (!same_access(a, b) || a.meta.mtime != b.meta.mtime) =>
            {
                Change::Metadata
            }
            _ => return Ok(()),
        };
        self.emit(change, x, y, path, label)?;
        // A whole directory added or removed: every entry below it too.
        match change {
            Change::Added => self.trees(None, dir(y).as_ref(), path),
            Change::Removed => self.trees(dir(x).as_ref(), None, path),
            _ => Ok(()),
        }
    }

    /// Reports entry `path`, `x` in the older snapshot and `y` in the newer one.
    fn emit(
        &mut self,
        change: Change,
        x: Option<&Node>,
        y: Option<&Node>,
        path: &str,
        label: &Label,
    ) -> Result<()> {
        (self.out)(Entry {
            change,
            path: path.to_string(),
            kind: kind(y.or(x).expect("one side")),
            old_size: x.map_or(0, |n| n.meta.size),
            new_size: y.map_or(0, |n| n.meta.size),
            table: label.table.clone(),
            old_path: label.old_path.clone(),
        })
    }
}

/// The snapshot `snap diff SNAPSHOT` compares `id` with: its recorded parent if the
/// repository still holds it, else the latest earlier snapshot of the same host with
/// the same sources (a database-only backup records no parent). `None` if neither.
pub fn parent_of(
    all: &[(SnapshotId, Snapshot)],
    id: &SnapshotId,
    snap: &Snapshot,
) -> Option<(SnapshotId, Snapshot)> {
    if let Some(p) = &snap.parent {
        if let Some(found) = all.iter().find(|(i, _)| i == p) {
            return Some(found.clone());
        }
    }
    all.iter()
        .filter(|(i, s)| {
            i != id && s.time < snap.time && s.host == snap.host && s.sources == snap.sources
        })
        .max_by_key(|(_, s)| s.time)
        .cloned()
}
