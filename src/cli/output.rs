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

/// What kind of failure `e` is, for scripts that act on it: `usage` (an argument or
/// input to fix), `refused` (a safety check; nothing changed), `not_found`, `locked`,
/// `key` (passphrase or key file), `damaged`, `unsupported_version`, `source` (the
/// data or settings backed up), `command` (a source command failed), `io`, `storage`
/// (a remote store), `index`, `internal`, `interrupted`, `drill` (a drill's scratch
/// cluster or verify command), or `error` for the rest.
pub fn kind(e: &anyhow::Error, interrupted: bool) -> &'static str {
    if interrupted {
        return "interrupted";
    }
    for cause in e.chain() {
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
            | Error::NoSnapshots { .. }
            | Error::NoRepository { .. }
            | Error::NotADirectory { .. } => "not_found",
            Error::Locked { .. } => "locked",
            Error::NoKeyFiles { .. }
            | Error::WrongPassphrase { .. }
            | Error::KeyMismatch(_)
            | Error::KeyFileGone { .. } => "key",
            Error::Corrupt { .. } | Error::ChecksumMismatch { .. } => "damaged",
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
