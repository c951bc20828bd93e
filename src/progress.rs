//! Progress reporting from the library to whoever displays it.
//!
//! Operations call these hooks from many threads; implementations must be cheap.

use std::path::Path;

/// Receives progress events. Every method has a no-op default.
pub trait Progress: Sync {
    /// Started on a file or stream.
    fn entry(&self, _path: &Path) {}
    /// `n` more bytes were processed (read, or skipped as unchanged).
    fn bytes(&self, _n: u64) {}
}

/// Ignores all events.
pub struct NoProgress;

impl Progress for NoProgress {}
