//! snap: a content-addressed, deduplicating snapshot engine for application backups.
//!
//! Data flows one way:
//! `source (files, stdin, commands) -> chunker -> BLAKE3 id -> dedup (index) -> zstd -> pack -> repository`,
//! then a [`tree::Tree`] per directory and a [`snapshot::Snapshot`] record last.
//!
//! Main types: [`repo::Repository`] (a repository directory: packs, snapshots, the
//! SQLite [`index::Index`]), [`backup::backup`] and [`restore::restore`] (the
//! operations), [`tree::Tree`] and [`snapshot::Snapshot`] (what a snapshot is made of),
//! [`error::Error`] (every failure, with the path or object it concerns).
//!
//! Layers, each using only its own and those below (README → Code layout):
//! - L0: [`error`], [`id`] (typed ids: [`id::PackId`], [`id::SnapshotId`],
//!   [`id::IndexFileId`]), [`chunker`], [`progress`], [`span`], [`interrupt`],
//!   [`host`], [`crypto`];
//! - L1 codecs: [`pack`], [`tree`], [`snapshot`], [`compress`], and [`retention`]
//!   (policies and forget's plan);
//! - L2 storage: [`store`], [`index`], [`repo`], [`scratch`], [`source`];
//! - L3 operations: [`backup`], [`restore`], [`export`], [`check`], [`prune`],
//!   [`repair`], [`reach`], [`sync`], [`diff`], [`ngw_part`];
//! - L4: the `snap` binary's `cli`, the only place that reads the environment.
//!
//! ```
//! use snap::{backup, repo::Repository, restore, progress::NoProgress};
//! # fn main() -> snap::error::Result<()> {
//! let dir = tempfile::tempdir().unwrap();
//! // Index caches live in the user's cache directory unless told otherwise.
//! snap::repo::set_cache_root(dir.path().join("cache"));
//! std::fs::create_dir(dir.path().join("data")).unwrap();
//! std::fs::write(dir.path().join("data/hello.txt"), b"hello").unwrap();
//!
//! let repo = Repository::init(&dir.path().join("repo"), &Default::default())?;
//! let opts = backup::BackupOptions { paths: vec![dir.path().join("data")], ..Default::default() };
//! let done = backup::backup(&repo, &opts, None, &NoProgress)?;
//!
//! let target = dir.path().join("restored");
//! let ropts = restore::RestoreOptions { target: target.clone(), include: vec![] };
//! let out = restore::restore(&repo, &done.snapshot, &ropts, &NoProgress)?;
//! assert!(out.errors.is_empty());
//! let restored = target.join(dir.path().strip_prefix("/").unwrap()).join("data/hello.txt");
//! assert_eq!(std::fs::read(restored).unwrap(), b"hello");
//! # Ok(())
//! # }
//! ```

pub mod backup;
pub mod check;
pub mod chunker;
pub mod compress;
pub mod crypto;
pub mod diff;
pub mod error;
pub mod export;
pub mod host;
pub mod id;
pub mod index;
pub mod interrupt;
pub mod ngw_part;
pub mod pack;
pub mod progress;
pub mod prune;
pub mod reach;
pub mod repair;
pub mod repo;
pub mod restore;
pub mod retention;
pub mod scratch;
pub mod snapshot;
pub mod source;
pub mod span;
pub mod store;
pub mod sync;
pub mod tree;

/// Locks `m`, going on with its data if a thread panicked while holding it (the panic
/// is reported where it happened).
pub(crate) fn locked<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}
