//! Interruption: a flag the front end sets on SIGINT or SIGTERM (for the commands that
//! write snapshots), which writers check between blobs. An interrupted run stops at
//! the next check, records nothing, and unwinds, removing its scratch files; the packs
//! it made durable are reused by the next backup (see `repo::journal`).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, LazyLock};

use crate::error::{Error, Result};

static FLAG: LazyLock<Arc<AtomicBool>> = LazyLock::new(|| Arc::new(AtomicBool::new(false)));

/// The flag, for a signal handler to set.
pub fn flag() -> Arc<AtomicBool> {
    FLAG.clone()
}

/// Whether an interruption was asked for.
pub fn requested() -> bool {
    FLAG.load(Ordering::Relaxed)
}

/// Fails with [`Error::Interrupted`] once an interruption was asked for.
pub fn check() -> Result<()> {
    if requested() {
        Err(Error::Interrupted)
    } else {
        Ok(())
    }
}
