//! The one public error type of the library.
//!
//! Every variant carries the data a user needs to act on it: the path of a failed
//! I/O call, the object that is damaged, the version that was found. rusqlite's
//! error type never leaves `index`; it arrives here as [`Error::Index`] text.

use std::path::{Path, PathBuf};

/// Errors of the snap library.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An I/O call failed on a named path.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file or directory the call was about.
        path: PathBuf,
        /// What the operating system said.
        source: std::io::Error,
    },
    /// A repository object failed to decode or verify.
    #[error("corrupt {what} {id}: {detail}")]
    Corrupt {
        /// Kind of object (pack, tree, snapshot, chunk, ...).
        what: &'static str,
        /// Its id or file name.
        id: String,
        /// What is wrong with it.
        detail: String,
    },
    /// A format version this build does not read.
    #[error(
        "unsupported {what} version {found} (this snap reads version {expected}); upgrade snap"
    )]
    UnsupportedVersion {
        /// What carries the version.
        what: &'static str,
        /// The version this build reads.
        expected: u32,
        /// The version on disk.
        found: u32,
    },
    /// Content does not hash to its id.
    #[error("checksum mismatch in {what}: expected {expected}, got {actual}")]
    ChecksumMismatch {
        /// What was checked.
        what: String,
        /// The id it should have.
        expected: String,
        /// The hash it has.
        actual: String,
    },
    /// Another process holds a conflicting lock.
    #[error("repository is locked by {holder}")]
    Locked {
        /// Who holds it (host, pid, time, kind).
        holder: String,
    },
    /// A named object does not exist.
    #[error("{what} {id} not found")]
    NotFound {
        /// Kind of object.
        what: &'static str,
        /// The name or id asked for.
        id: String,
    },
    /// The SQLite index failed; the index can be rebuilt with `snap repair index`.
    #[error("index {path}: {detail}")]
    Index {
        /// The index file.
        path: PathBuf,
        /// SQLite's message.
        detail: String,
    },
    /// A source command failed: no snapshot is recorded.
    #[error("command `{command}` {status}{}", stderr_tail(stderr))]
    Command {
        /// The command line as given.
        command: String,
        /// How it ended ("exited with status 2", "was killed by signal 9").
        status: String,
        /// The last lines it wrote to stderr.
        stderr: String,
    },
    /// An error while handling one entry of a snapshot.
    #[error("{path}: {source}")]
    Entry {
        /// The entry's path inside the snapshot.
        path: String,
        /// What went wrong.
        source: Box<Error>,
    },
    /// A remote store failed (after retries, for transient errors).
    #[error("{location}: {detail}")]
    Storage {
        /// The file and where it is (`s3://bucket/prefix/packs/…`).
        location: String,
        /// What the store or the connection said.
        detail: String,
    },
    /// Input or arguments that cannot be used as given.
    /// There is no repository where one was looked for (no config file).
    #[error("no repository at {location} (no config file)")]
    NoRepository {
        /// Where it was looked for.
        location: String,
    },
    /// An encrypted repository has no key file, so no passphrase can open it.
    #[error("{keys} has no key files: the repository cannot be opened with a passphrase")]
    NoKeyFiles {
        /// The key directory (`<repository>/keys`).
        keys: String,
    },
    /// No key file of the repository opens with the passphrase given.
    #[error("wrong passphrase: no key file in {keys} opens with it, or they were altered ({})", files.join(", "))]
    WrongPassphrase {
        /// The key directory (`<repository>/keys`).
        keys: String,
        /// The key files tried.
        files: Vec<String>,
    },
    /// The run was interrupted (SIGINT or SIGTERM) and stopped before recording
    /// anything.
    #[error("interrupted")]
    Interrupted,
    #[error("{0}")]
    Invalid(String),
}

fn stderr_tail(stderr: &str) -> String {
    let trimmed = stderr.trim_end();
    if trimmed.is_empty() {
        String::new()
    } else {
        format!("; its stderr ends with:\n{trimmed}")
    }
}

/// Result with [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Attaches a path to an `io::Result`.
pub trait IoContext<T> {
    /// Turns an I/O error into [`Error::Io`] naming `path`.
    fn at(self, path: impl AsRef<Path>) -> Result<T>;
}

impl<T> IoContext<T> for std::io::Result<T> {
    fn at(self, path: impl AsRef<Path>) -> Result<T> {
        self.map_err(|source| Error::Io {
            path: path.as_ref().to_path_buf(),
            source,
        })
    }
}

impl Error {
    /// Shorthand for [`Error::Corrupt`].
    pub fn corrupt(what: &'static str, id: impl ToString, detail: impl ToString) -> Self {
        Error::Corrupt {
            what,
            id: id.to_string(),
            detail: detail.to_string(),
        }
    }
}
