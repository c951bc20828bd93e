//! Progress reporting from the library to whoever displays it.
//!
//! Operations call these hooks from many threads; implementations must be cheap (a
//! counter's add), and an operation gives a total only when it knows it without
//! extra work (a plan it made anyway, the parent snapshot's summary).

use std::path::Path;

/// What an operation is doing now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    /// Running a database's dump tool and storing what it writes.
    Dumping,
    /// Walking and reading the files of the sources.
    ReadingFiles,
    /// Reading a stream (standard input, a command, an archive).
    Reading,
    /// Writing the last packs and the index to the repository.
    Uploading,
    /// Writing a snapshot's files or dump.
    Restoring,
    /// Reading packs back to verify them.
    Verifying,
    /// Copying packs to another repository.
    Sending,
    /// Rewriting packs that hold unused data.
    Repacking,
}

impl Phase {
    /// How a person reads it: `dumping`, `reading files`, ...
    pub fn label(self) -> &'static str {
        match self {
            Phase::Dumping => "dumping",
            Phase::ReadingFiles => "reading files",
            Phase::Reading => "reading",
            Phase::Uploading => "uploading",
            Phase::Restoring => "restoring",
            Phase::Verifying => "verifying",
            Phase::Sending => "sending",
            Phase::Repacking => "repacking",
        }
    }
}

/// Receives progress events. Every method has a no-op default.
pub trait Progress: Sync {
    /// The operation entered `phase`.
    fn phase(&self, _phase: Phase) {}
    /// The work ahead, where known: `bytes`, and `items` things named `noun` (files,
    /// packs); an estimate for a backup (its parent's size). `None` when a part of the
    /// work whose size is unknown follows.
    fn total(&self, _bytes: Option<u64>, _items: Option<u64>, _noun: &'static str) {}
    /// Started on a file or stream.
    fn entry(&self, _path: &Path) {}
    /// `n` more bytes were processed (read, or skipped as unchanged).
    fn bytes(&self, _n: u64) {}
    /// `n` more items (files, packs) are done.
    fn items(&self, _n: u64) {}
}

/// Ignores all events.
pub struct NoProgress;

impl Progress for NoProgress {}
