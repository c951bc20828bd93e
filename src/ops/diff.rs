//! `diff`: what changed between two snapshots, entry by entry.
//!
//! Both root trees are walked together in name order; a subtree with the same id in
//! both is skipped unread, so the cost follows the change, not the snapshot. A file
//! whose chunk list differs changed its content; one whose list is the same but whose
//! mode, owner or mtime differ changed only its metadata. Table files of pg_dump's
//! directory format (`<dumpId>.dat` next to a `toc.dat`) are named by their table,
//! from `pg_restore --list` of the newer `toc.dat`, when pg_restore is installed.

use std::collections::HashMap;
use std::process::Command;

use crate::error::{IoContext, Result};
use crate::format::id::TreeId;
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

    /// Compares two directories (either may be absent) at `prefix`.
    fn trees(&mut self, old: Option<&TreeId>, new: Option<&TreeId>, prefix: &str) -> Result<()> {
        if old.is_some() && old == new {
            return Ok(());
        }
        let a = self.nodes(old)?;
        let b = self.nodes(new)?;
        // Each side's files are named by its own toc.dat: pg_dump may renumber them.
        let toc = |nodes: &[Node]| -> HashMap<Vec<u8>, String> {
            if nodes.iter().any(|n| n.name == b"toc.dat") {
                self.tables(nodes).unwrap_or_default()
            } else {
                HashMap::new()
            }
        };
        let (tables_a, tables_b) = (toc(&a), toc(&b));
        let (mut i, mut j) = (0, 0);
        while i < a.len() || j < b.len() {
            let order = match (a.get(i), b.get(j)) {
                (Some(x), Some(y)) => x.name.cmp(&y.name),
                (Some(_), None) => std::cmp::Ordering::Less,
                _ => std::cmp::Ordering::Greater,
            };
            let (x, y) = match order {
                std::cmp::Ordering::Less => {
                    i += 1;
                    (Some(&a[i - 1]), None)
                }
                std::cmp::Ordering::Greater => {
                    j += 1;
                    (None, Some(&b[j - 1]))
                }
                std::cmp::Ordering::Equal => {
                    i += 1;
                    j += 1;
                    (Some(&a[i - 1]), Some(&b[j - 1]))
                }
            };
            let name = x.or(y).expect("one side").name.clone();
            let path = format!("{prefix}/{}", String::from_utf8_lossy(&name));
            let tables = if y.is_some() { &tables_b } else { &tables_a };
            let table = tables.get(&name).cloned();
            self.entry(x, y, &path, table)?;
        }
        Ok(())
    }

    fn entry(
        &mut self,
        x: Option<&Node>,
        y: Option<&Node>,
        path: &str,
        table: Option<String>,
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
                self.entry(Some(a), None, path, table.clone())?;
                return self.entry(None, Some(b), path, table);
            }
            // A directory's mtime follows its entries: only mode and owner count.
            (Some(a), Some(b)) if dir(x).is_some() => {
                if !same_access(a, b) {
                    self.emit(Change::Metadata, x, y, path, None)?;
                }
                return self.trees(dir(x).as_ref(), dir(y).as_ref(), path);
            }
            (Some(a), Some(b)) if a.kind != b.kind => Change::Modified,
            (Some(a), Some(b)) if !same_access(a, b) || a.meta.mtime != b.meta.mtime => {
                Change::Metadata
            }
            _ => return Ok(()),
        };
        self.emit(change, x, y, path, table)?;
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
        table: Option<String>,
    ) -> Result<()> {
        (self.out)(Entry {
            change,
            path: path.to_string(),
            kind: kind(y.or(x).expect("one side")),
            old_size: x.map_or(0, |n| n.meta.size),
            new_size: y.map_or(0, |n| n.meta.size),
            table,
        })
    }

    /// `<dumpId>.dat` -> `schema.table` from the `toc.dat` among `nodes`, through
    /// `pg_restore --list`.
    fn tables(&self, nodes: &[Node]) -> Result<HashMap<Vec<u8>, String>> {
        let Some(NodeKind::File(content)) =
            nodes.iter().find(|n| n.name == b"toc.dat").map(|n| &n.kind)
        else {
            return Ok(HashMap::new());
        };
        let dir = tempfile::tempdir().at(std::env::temp_dir())?;
        let path = dir.path().join("toc.dat");
        let mut f = std::fs::File::create(&path).at(&path)?;
        self.repo.write_content(content, &mut f)?;
        drop(f);
        let out = Command::new("pg_restore")
            .arg("--list")
            .arg(dir.path())
            .output()
            .at("pg_restore")?;
        Ok(parse_list(&String::from_utf8_lossy(&out.stdout)))
    }
}

/// Table data entries of a `pg_restore --list`: `3345; 0 16390 TABLE DATA public
/// accounts owner` gives `3345.dat` -> `public.accounts` (a name with spaces keeps its
/// first word).
fn parse_list(listing: &str) -> HashMap<Vec<u8>, String> {
    let mut out = HashMap::new();
    for line in listing.lines() {
        let Some((id, rest)) = line.split_once(';') else {
            continue;
        };
        let words: Vec<&str> = rest.split_whitespace().collect();
        if words.len() >= 6 && words[2] == "TABLE" && words[3] == "DATA" {
            out.insert(
                format!("{}.dat", id.trim()).into_bytes(),
                format!("{}.{}", words[4], words[5]),
            );
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn table_data_lines_name_their_files() {
        let listing = ";\n; Archive created at ...\n215; 1259 16389 TABLE public pgbench_accounts postgres\n3345; 0 16389 TABLE DATA public pgbench_accounts postgres\n3346; 0 16395 TABLE DATA app orders postgres\n";
        let t = super::parse_list(listing);
        assert_eq!(t[&b"3345.dat".to_vec()], "public.pgbench_accounts");
        assert_eq!(t[&b"3346.dat".to_vec()], "app.orders");
        assert_eq!(t.len(), 2);
    }
}
