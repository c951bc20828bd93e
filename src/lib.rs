//! snap: a content-addressed, deduplicating snapshot engine for application backups.
//!
//! Data flows one way:
//! `source (files, dumps, commands) -> chunker -> BLAKE3 id -> dedup (index) -> zstd -> pack -> store`,
//! then a [`Tree`](format::tree::Tree) per directory and a
//! [`Snapshot`](format::snapshot::Snapshot) record last.
//!
//! The folders are the layers, each using only its own and those above it in this
//! list (README → Code layout):
//! - base, at the top of `src/`: [`error`] (every failure, with the path or object it
//!   concerns), [`progress`], [`interrupt`], [`host`], [`scratch`], [`span`];
//! - [`format`](mod@format): the codecs whose bytes `format-spec.md` describes: ids,
//!   typed by kind ([`format::id`]), the [`chunker`](format::chunker), [`compress`](format::compress),
//!   [`crypto`](format::crypto), [`pack`](format::pack), [`tree`](format::tree),
//!   [`snapshot`](format::snapshot); no I/O;
//! - [`store`]: where a repository's files live (local, SFTP, S3), as named files;
//! - [`repo`]: a [`Repository`](repo::Repository) over a store: layout, keys, locks,
//!   the SQLite [`index`](repo::index), writing packs and reading blobs back, what
//!   the snapshots [`reach`](repo::reach) (shared by check, prune and sync), and
//!   PostgreSQL's [`wal`](repo::wal) archive beside the packs;
//! - [`source`]: where backup data comes from (files, commands, NextGIS Web,
//!   PostgreSQL, MongoDB); knows nothing of repositories;
//! - [`ops`]: what a user asks for, from [`backup`](ops::backup::backup) and
//!   [`restore`](ops::restore::plan_restore) to [`check`](ops::check),
//!   [`prune`](ops::prune), [`sync`](ops::sync), [`retention`](ops::retention),
//!   [`find`](ops::find), [`mount`](ops::mount), [`metrics`](ops::metrics) and
//!   [`wal`](ops::wal) (PostgreSQL's archive and restore commands); an
//!   operation that writes or sends much computes a plan first (`--dry-run` prints it);
//! - the `snap` binary's `cli` (`src/cli/`): parsing, printing, exit codes, and the
//!   only place that reads the environment.
//!
//! ```
//! use snap::{ops::backup, ops::restore, progress::NoProgress, repo::Repository};
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
//! let ropts = restore::RestoreOptions { target: target.clone(), ..Default::default() };
//! let plan = restore::plan_restore(&repo, &done.snapshot, &ropts)?;
//! assert_eq!(plan.tally()?.files, 1);
//! let out = plan.execute(&NoProgress)?;
//! assert!(out.errors.is_empty());
//! let restored = target.join(dir.path().strip_prefix("/").unwrap()).join("data/hello.txt");
//! assert_eq!(std::fs::read(restored).unwrap(), b"hello");
//! # Ok(())
//! # }
//! ```

pub mod error;
pub mod format;
pub mod host;
pub mod interrupt;
pub mod ops;
pub mod progress;
pub mod repo;
pub mod scratch;
pub mod source;
pub mod span;
pub mod store;

/// Locks `m`, going on with its data if a thread panicked while holding it (the panic
/// is reported where it happened).
pub(crate) fn locked<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}
