//! Where a command's words go, the same for every command: results on standard
//! output; progress, warnings and errors on standard error, and only errors (and
//! warnings) start with `snap:`. Under `--json` standard output carries exactly one
//! JSON document (or one object a line, for `ls`, `find` and `diff`), also when the
//! command fails: then `{"error": {"message": ..., "kind": ...}}`, with the words of
//! the error line on standard error and the same exit status.

use snap::error::Error;

/// Whether the command line asked for JSON: `--json` given to the subcommand, or to
/// its own subcommand (`key list --json`).
pub fn wants_json(matches: &clap::ArgMatches) -> bool {
    let mut m = matches;
    while let Some((_, sub)) = m.subcommand() {
        if sub.try_get_one::<bool>("json").ok().flatten() == Some(&true) {
            return true;
        }
        m = sub;
    }
    false
}

/// A failure the front end finds itself, with its [`kind`].
#[derive(Debug)]
pub struct Failure {
    kind: &'static str,
    message: String,
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Failure {}

/// An argument, option or configuration to fix.
pub fn usage(message: impl Into<String>) -> anyhow::Error {
    failure("usage", message)
}

/// A monitoring probe (`check --max-age`, `--max-drill-age`) that found the backups
/// or drills too old, or none.
pub fn stale(message: impl Into<String>) -> anyhow::Error {
    failure("stale", message)
}

/// Something asked for that is not there.
pub fn not_found(message: impl Into<String>) -> anyhow::Error {
    failure("not_found", message)
}

/// A passphrase or key file missing or wrong.
pub fn key(message: impl Into<String>) -> anyhow::Error {
    failure("key", message)
}

/// A safety check that refused; nothing changed.
pub fn refused(message: impl Into<String>) -> anyhow::Error {
    failure("refused", message)
}

fn failure(kind: &'static str, message: impl Into<String>) -> anyhow::Error {
    anyhow::Error::new(Failure {
        kind,
        message: message.into(),
    })
}

/// What kind of failure `e` is, for scripts that act on it: `usage` (an argument,
/// option or configuration to fix), `refused` (a safety check; nothing
/// changed), `not_found`, `locked`, `key` (passphrase or key file), `damaged`,
/// `not_verified`, `unsupported_version`, `source` (the data or settings backed up),
/// `command` (a source command failed), `io`, `storage` (a remote store), `index`,
/// `internal`, `interrupted`, `drill` (a drill's scratch cluster or verify command),
/// `stale` (a monitoring probe found backups or drills too old), `mount`, or `error`
/// for the rest (such as a restore some of whose entries failed, each listed).
pub fn kind(e: &anyhow::Error, interrupted: bool) -> &'static str {
    if interrupted {
        return "interrupted";
    }
    for cause in e.chain() {
        if let Some(f) = cause.downcast_ref::<Failure>() {
            return f.kind;
        }
        let Some(err) = cause.downcast_ref::<Error>() else {
            if cause.downcast_ref::<std::io::Error>().is_some() {
                return "io";
            }
            continue;
        };
        return match err {
            // Their cause, next in the chain, says what kind of failure it was.
            Error::Entry { .. } | Error::NotRestored { .. } => continue,
            Error::Usage(_) => "usage",
            Error::Refused(_) => "refused",
            Error::NotFound { .. }
            | Error::SnapshotNotFound { .. }
            | Error::NoSnapshots { unreadable: 0, .. }
            | Error::NoRepository { .. }
            | Error::NotADirectory { .. } => "not_found",
            Error::Locked { .. } => "locked",
            Error::NoKeyFiles { .. }
            | Error::WrongPassphrase { .. }
            | Error::KeyMismatch(_)
            | Error::KeyFileGone { .. } => "key",
            Error::Corrupt { .. } | Error::ChecksumMismatch { .. } | Error::NoSnapshots { .. } => {
                "damaged"
            }
            Error::NotVerified { .. } => "not_verified",
            Error::Mount { .. } => "mount",
            Error::UnsupportedVersion { .. } => "unsupported_version",
            Error::Source(_) => "source",
            Error::Command { .. } => "command",
            Error::Io { .. } => "io",
            Error::Storage { .. } => "storage",
            Error::Index { .. } => "index",
            Error::Interrupted => "interrupted",
            Error::Drill { .. } => "drill",
            Error::NoRandomness(_) | Error::Internal { .. } => "internal",
        };
    }
    "error"
}

/// The JSON document a failed `--json` command prints: the message of its error line
/// (without the `snap: ` prefix) and its [`kind`].
pub fn error_json(message: &str, kind: &str) -> serde_json::Value {
    serde_json::json!({ "error": { "message": message, "kind": kind } })
}
