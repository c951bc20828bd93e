//! Entries found by name across snapshots (`snap find`). A pattern without `/` is a
//! glob matched against each entry's name (`*.tif`, `pg_hba.conf`); one with `/` is
//! matched against the whole path in the snapshot (`/srv/ngw/**/*.tif`, where `*`
//! stays within a name and `**` crosses directories).
//!
//! Snapshots share most of their trees. A subtree found to hold no match is
//! remembered (by its id, and for a path pattern its place too), so searching a
//! hundred nightly snapshots walks each unchanged directory once.

use std::collections::HashSet;

use globset::{GlobBuilder, GlobMatcher};

use crate::error::{Result, Usage};
use crate::format::id::TreeId;
use crate::format::tree::{Node, NodeKind};
use crate::repo::Repository;

/// What `find` looks for.
pub struct Pattern {
    glob: GlobMatcher,
    /// Matched against the whole path rather than the name.
    whole_path: bool,
}

impl Pattern {
    /// Compiles a glob; see the module docs. A `\xHH` in it of a byte names show so
    /// ([`shown_name`](crate::format::tree::shown_name)) matches that byte, as `ls`
    /// shows it (in a glob, `\x` alone would be a plain `x`).
    pub fn new(pattern: &str) -> Result<Pattern> {
        let whole_path = pattern.contains('/');
        let glob = GlobBuilder::new(&crate::format::tree::shown_glob(pattern))
            .literal_separator(true)
            .build()
            .map_err(|source| Usage::FindPattern {
                pattern: pattern.to_string(),
                source,
            })?
            .compile_matcher();
        Ok(Pattern { glob, whole_path })
    }

    fn matches(&self, path: &str, name: &str) -> bool {
        self.glob
            .is_match(if self.whole_path { path } else { name })
    }
}

/// Searches snapshot trees for a [`Pattern`], remembering the subtrees with no match.
pub struct Finder<'r> {
    repo: &'r Repository,
    pattern: Pattern,
    /// Subtrees with no match: by id, and for a path pattern at which path.
    barren: HashSet<(TreeId, String)>,
}

impl<'r> Finder<'r> {
    /// A search of `repo` for `pattern`.
    pub fn new(repo: &'r Repository, pattern: Pattern) -> Finder<'r> {
        Finder {
            repo,
            pattern,
            barren: HashSet::new(),
        }
    }

    /// Calls `f` with the path and node of every entry below root tree `tree` that
    /// matches, depth first in name order.
    pub fn find(
        &mut self,
        tree: &TreeId,
        f: &mut dyn FnMut(&str, &Node) -> Result<()>,
    ) -> Result<()> {
        self.below(tree, "", f).map(|_| ())
    }

    /// Searches below `tree` at `prefix`; whether anything matched.
    fn below(
        &mut self,
        tree: &TreeId,
        prefix: &str,
        f: &mut dyn FnMut(&str, &Node) -> Result<()>,
    ) -> Result<bool> {
        let key = (
            *tree,
            if self.pattern.whole_path {
                prefix.to_string()
            } else {
                String::new()
            },
        );
        if self.barren.contains(&key) {
            return Ok(false);
        }
        let mut any = false;
        for n in self.repo.load_tree(tree)?.nodes {
            let name = crate::format::tree::shown_name(&n.name);
            let path = format!("{prefix}/{name}");
            if self.pattern.matches(&path, &name) {
                f(&path, &n)?;
                any = true;
            }
            if let NodeKind::Dir(sub) = &n.kind {
                any |= self.below(sub, &path, f)?;
            }
        }
        if !any {
            self.barren.insert(key);
        }
        Ok(any)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_without_a_slash_paths_with_one() {
        let p = Pattern::new("*.tif").unwrap();
        assert!(p.matches("/srv/ngw/a/b.tif", "b.tif"));
        assert!(!p.matches("/srv/x.tif/b", "b"));
        let p = Pattern::new("/srv/*/b.tif").unwrap();
        assert!(p.matches("/srv/a/b.tif", "b.tif"));
        assert!(
            !p.matches("/srv/a/c/b.tif", "b.tif"),
            "* stays within a name"
        );
        let p = Pattern::new("/srv/**/b.tif").unwrap();
        assert!(p.matches("/srv/a/c/b.tif", "b.tif"));
        assert!(Pattern::new("[").is_err());
    }
}
