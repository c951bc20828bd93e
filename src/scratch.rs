//! Scratch directories for dumps and restores (`snap-<kind>.<pid>.<random>` under a
//! base such as `/tmp` or NGW's `backup.tmpdir`). A run removes its own when it ends,
//! by any error or an interruption; one killed outright leaves it behind, and the
//! next run that makes a scratch directory under the same base removes those of
//! processes that are gone.

use std::path::Path;

use crate::error::{IoContext, Result};
use crate::host::pid_alive;

const PREFIX: &str = "snap-";

/// A new scratch directory for `kind` under `base`, after removing those that killed
/// runs left there.
pub fn dir(base: &Path, kind: &str) -> Result<tempfile::TempDir> {
    sweep(base);
    tempfile::Builder::new()
        .prefix(&format!("{PREFIX}{kind}.{}.", std::process::id()))
        .tempdir_in(base)
        .at(base)
}

/// The process that made scratch directory `name`, if it is one.
fn owner(name: &str) -> Option<u32> {
    let mut parts = name.strip_prefix(PREFIX)?.split('.');
    let (_kind, pid, _random) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() {
        return None;
    }
    pid.parse().ok()
}

/// Removes the scratch directories under `base` whose process is gone; returns how
/// many. A failure to remove one is logged, never fatal.
pub fn sweep(base: &Path) -> usize {
    let Ok(entries) = std::fs::read_dir(base) else {
        return 0;
    };
    let mut n = 0;
    for e in entries.flatten() {
        let name = e.file_name();
        let Some(pid) = name.to_str().and_then(owner) else {
            continue;
        };
        if pid_alive(pid) || !e.file_type().is_ok_and(|t| t.is_dir()) {
            continue;
        }
        match std::fs::remove_dir_all(e.path()) {
            Ok(()) => {
                log::info!("removed {}, left by a killed run", e.path().display());
                n += 1;
            }
            Err(err) => log::warn!("cannot remove {}: {err}", e.path().display()),
        }
    }
    n
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dead_runs_scratch_goes_live_ones_stays() {
        let base = tempfile::tempdir().unwrap();
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let dead = child.id();
        child.wait().unwrap();
        let left = base.path().join(format!("snap-dump.{dead}.abc"));
        std::fs::create_dir(&left).unwrap();
        std::fs::write(left.join("toc.dat"), b"x").unwrap();
        let other = base.path().join("snap-notours");
        std::fs::create_dir(&other).unwrap();
        let mine = dir(base.path(), "dump").unwrap();
        assert!(!left.exists(), "a dead run's scratch directory stays");
        assert!(other.exists() && mine.path().exists());
        let live = base
            .path()
            .join(format!("snap-dump.{}.xyz", std::process::id()));
        std::fs::create_dir(&live).unwrap();
        assert_eq!(sweep(base.path()), 0);
        assert!(live.exists());
    }
}
