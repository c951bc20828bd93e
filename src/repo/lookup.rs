//! Looking up many paths in one snapshot tree, loading each directory tree once.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use super::Repository;
use crate::error::Result;
use crate::format::id::TreeId;
use crate::format::tree::{Node, NodeKind, Tree};
use crate::locked;

/// Directory trees by their path below the root (`None`: no such directory).
type TreeCache = HashMap<Vec<Vec<u8>>, Option<Arc<Tree>>>;

/// Cached path lookups below one root tree; safe to share between threads. Memory:
/// the directory trees visited.
pub struct PathLookup<'r> {
    repo: &'r Repository,
    root: TreeId,
    cache: Mutex<TreeCache>,
}

impl<'r> PathLookup<'r> {
    /// Lookups below tree `root`.
    pub fn new(repo: &'r Repository, root: TreeId) -> Self {
        PathLookup {
            repo,
            root,
            cache: Mutex::new(HashMap::new()),
        }
    }

    /// The directory tree at `path` (components), if there is one.
    pub fn tree(&self, path: &[Vec<u8>]) -> Result<Option<Arc<Tree>>> {
        if let Some(t) = locked(&self.cache).get(path) {
            return Ok(t.clone());
        }
        let id = match path.split_last() {
            None => Some(self.root),
            Some((last, above)) => match self.tree(above)? {
                Some(t) => match t.get(last).map(|n| &n.kind) {
                    Some(NodeKind::Dir(id)) => Some(*id),
                    _ => None,
                },
                None => None,
            },
        };
        let tree = match id {
            Some(id) => Some(Arc::new(self.repo.load_tree(&id)?)),
            None => None,
        };
        locked(&self.cache).insert(path.to_vec(), tree.clone());
        Ok(tree)
    }

    /// The entry at `path`, if there is one.
    pub fn node(&self, path: &[Vec<u8>]) -> Result<Option<Node>> {
        let Some((last, dir)) = path.split_last() else {
            return Ok(None);
        };
        Ok(self.tree(dir)?.and_then(|t| t.get(last).cloned()))
    }
}
