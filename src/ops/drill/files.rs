//! The drill of a source restored as files (a path, a stream, a command's output, a
//! MongoDB archive): `restore --verify` of its place in the snapshot into the source's
//! scratch directory, so every restored file is read back and compared chunk by chunk
//! with the snapshot, then the source's `verify` command, if it has one.

use std::path::Path;

use super::{listed, Proof, SourceCtx};
use crate::error::Result;
use crate::ops::restore::{plan_restore, RestoreOptions};
use crate::source::command::{shell_quote, Running};

/// Restores `place` (a path as backed up, or a stream's name) with verification, and
/// runs the source's `verify` command on it.
pub(super) fn drill(ctx: &SourceCtx<'_>, place: &str) -> Result<Proof> {
    let opts = RestoreOptions {
        target: ctx.work.to_path_buf(),
        include: vec![place.to_string()],
        verify: true,
        no_sync: true,
        ..Default::default()
    };
    let out = plan_restore(ctx.repo, ctx.snap, &opts)?.execute(ctx.progress)?;
    let mut proof = Proof {
        bytes: out.bytes,
        checks: vec!["restore".into(), "content".into()],
        ..Default::default()
    };
    let bad: Vec<String> = out
        .errors
        .iter()
        .chain(&out.mismatches)
        .map(ToString::to_string)
        .collect();
    if !bad.is_empty() {
        proof.problem = Some(format!(
            "{} of {place} failed: {}",
            if bad.len() == 1 {
                "1 entry".to_string()
            } else {
                format!("{} entries", bad.len())
            },
            listed(&bad)
        ));
        return Ok(proof);
    }
    let restored = ctx.work.join(place.trim_start_matches('/'));
    match ctx.verify {
        Some(cmd) => match run_verify(cmd, &restored) {
            Ok(()) => proof.checks.push("verify_command".into()),
            // The restore and its checks stand: the record keeps their figures.
            Err(e) => proof.problem = Some(format!("the verify command failed: {e}")),
        },
        None => proof.note = Some("application-level check not run (no verify command)".into()),
    }
    Ok(proof)
}

/// Runs `verify` command `cmd` with `{path}` replaced by the restored copy's path;
/// an error (naming the command as run, with its stderr) unless it exits 0.
fn run_verify(cmd: &str, restored: &Path) -> Result<()> {
    let path = restored.display().to_string();
    let line = cmd.replace("{path}", &shell_quote(&path));
    let mut sh = std::process::Command::new("sh");
    sh.arg("-c").arg(&line);
    Running::capture(sh, &line).map(drop)
}
