//! What snapshots reference: every tree, chunk-list node and data chunk reachable from
//! their root trees, marked in the index's mark table (on disk, so memory stays flat
//! however large the repository). A subtree or list already marked is not walked
//! again, so unchanged directories shared by many snapshots cost one visit.

use crate::error::Result;
use crate::format::id::{Id, TreeId};
use crate::format::tree::NodeKind;
use crate::repo::Repository;

/// A referenced blob that is missing from the index or cannot be read.
#[derive(Clone, Debug)]
pub struct Problem {
    /// The blob.
    pub id: Id,
    /// What is wrong.
    pub why: String,
    /// Whether it proves the blob lost or damaged (not just unreadable for now: a
    /// refused permission, a store that does not answer); see [`Error::is_damage`].
    ///
    /// [`Error::is_damage`]: crate::error::Error::is_damage
    pub damage: bool,
}

/// What [`mark_reachable`] found.
#[derive(Debug, Default)]
pub struct Reach {
    /// Trees read.
    pub trees: u64,
    /// List nodes read.
    pub lists: u64,
    /// Referenced blobs that are missing or unreadable.
    pub problems: Vec<Problem>,
}

enum Todo {
    Tree(TreeId),
    List(Id, u8),
}

/// Clears the marks, then marks every blob reachable from `roots`. Reads every tree
/// and list node (verifying their hashes) but no data chunk; a data chunk counts as
/// present when the index has it.
pub fn mark_reachable(repo: &Repository, roots: &[TreeId]) -> Result<Reach> {
    let index = repo.index();
    index.clear_marks()?;
    let mut reach = Reach::default();
    let mut todo: Vec<Todo> = roots.iter().map(|r| Todo::Tree(*r)).collect();
    while let Some(t) = todo.pop() {
        let id = match t {
            Todo::Tree(TreeId(id)) | Todo::List(id, _) => id,
        };
        if !index.mark(&[id])?[0] {
            continue;
        }
        // (depth, ids) of the file contents and list entries found.
        let mut contents = Vec::new();
        let read = match t {
            Todo::Tree(tree) => repo.load_tree(&tree).map(|tree| {
                reach.trees += 1;
                for n in tree.nodes {
                    match n.kind {
                        NodeKind::Dir(sub) => todo.push(Todo::Tree(sub)),
                        NodeKind::File(c) => contents.push((c.depth, c.ids)),
                        _ => {}
                    }
                }
            }),
            Todo::List(_, level) => repo.list_node(&id, level).map(|node| {
                reach.lists += 1;
                contents.push((level, node.ids));
            }),
        };
        if let Err(e) = read {
            reach.problems.push(Problem {
                id,
                why: e.to_string(),
                // Not in the index is lost, as far as this repository's index knows.
                damage: e.is_damage() || matches!(e, crate::error::Error::NotFound { .. }),
            });
        }
        for (depth, ids) in contents {
            if depth == 0 {
                index.mark(&ids)?;
            } else {
                todo.extend(ids.into_iter().map(|i| Todo::List(i, depth - 1)));
            }
        }
    }
    let unreadable: std::collections::HashSet<Id> = reach.problems.iter().map(|p| p.id).collect();
    for id in index.marked_but_absent()? {
        if unreadable.contains(&id) {
            continue;
        }
        reach.problems.push(Problem {
            id,
            why: "referenced but in no pack of the index".into(),
            damage: true,
        });
    }
    Ok(reach)
}
