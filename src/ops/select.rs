//! Choosing snapshots by host, tag and source path, as restic's `--host`, `--tag` and
//! `--path` do, for `list`, `find` and the commands that take the same filters.

use crate::format::snapshot::{Snapshot, Source};

/// Which snapshots a command considers. Each list that is not empty must match: a
/// snapshot's host is one of `hosts`; one of `tags` is satisfied, where a tag written
/// `a,b` needs every one of its comma-separated tags; every one of `paths` is a path
/// the snapshot backed up (or the name a stream, dump or command was stored under).
#[derive(Clone, Debug, Default)]
pub struct SnapshotFilter {
    /// Hosts, any of them.
    pub hosts: Vec<String>,
    /// Tags, any of them; `a,b` needs both.
    pub tags: Vec<String>,
    /// Source paths or stream names, all of them.
    pub paths: Vec<String>,
}

impl SnapshotFilter {
    /// Whether `s` passes.
    pub fn matches(&self, s: &Snapshot) -> bool {
        let host = self.hosts.is_empty() || self.hosts.contains(&s.host);
        let tag = self.tags.is_empty()
            || self.tags.iter().any(|t| {
                t.split(',')
                    .all(|one| s.tags.iter().any(|have| have == one))
            });
        let path = self.paths.iter().all(|p| {
            let p = p.trim_end_matches('/');
            s.sources.iter().any(|src| match src {
                Source::Path { path } => path.trim_end_matches('/') == p,
                other => other.stream_name() == Some(p.trim_start_matches('/')),
            })
        });
        host && tag && path
    }

    /// Whether it lets every snapshot through.
    pub fn is_empty(&self) -> bool {
        self.hosts.is_empty() && self.tags.is_empty() && self.paths.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snap(host: &str, tags: &[&str], paths: &[&str]) -> Snapshot {
        Snapshot {
            host: host.into(),
            tags: tags.iter().map(ToString::to_string).collect(),
            sources: paths
                .iter()
                .map(|p| Source::Path {
                    path: p.to_string(),
                })
                .collect(),
            ..crate::format::snapshot::tests::sample()
        }
    }

    #[test]
    fn hosts_any_tags_any_of_all_paths_all() {
        let s = snap("db1", &["daily", "ngw"], &["/srv/ngw", "/etc"]);
        let f = |hosts: &[&str], tags: &[&str], paths: &[&str]| SnapshotFilter {
            hosts: hosts.iter().map(std::string::ToString::to_string).collect(),
            tags: tags.iter().map(std::string::ToString::to_string).collect(),
            paths: paths.iter().map(std::string::ToString::to_string).collect(),
        };
        assert!(f(&[], &[], &[]).matches(&s));
        assert!(f(&["db2", "db1"], &[], &[]).matches(&s));
        assert!(!f(&["db2"], &[], &[]).matches(&s));
        assert!(f(&[], &["weekly", "daily"], &[]).matches(&s));
        assert!(f(&[], &["daily,ngw"], &[]).matches(&s));
        assert!(!f(&[], &["daily,weekly"], &[]).matches(&s));
        assert!(f(&[], &[], &["/srv/ngw/", "/etc"]).matches(&s));
        assert!(!f(&[], &[], &["/srv/ngw", "/home"]).matches(&s));
        assert!(!f(&[], &[], &["/srv"]).matches(&s));
    }
}
