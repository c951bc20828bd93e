//! `snap import`

use std::collections::HashMap;
use std::path::PathBuf;

use anyhow::{bail, Result};
use chrono::{DateTime, Utc};
use snap::format::snapshot::Source;
use snap::ops::backup::{archive_id, backup, time_from_name, BackupOptions};

use super::{human, progress_for, Bar, Ctx};

#[derive(clap::Args)]
pub struct Args {
    /// .ngwbackup archives (each becomes one snapshot, oldest first)
    #[arg(required = true, value_name = "FILE")]
    files: Vec<PathBuf>,
    /// Host name to record [default: this machine's]
    #[arg(long, value_parser = super::parse_host)]
    host: Option<String>,
    /// Print one JSON array of the archives: `snapshot` and `skipped` (already
    /// imported), or `error` (a failure of the whole run: {"error": {"message", "kind"}})
    #[arg(long)]
    json: bool,
}

/// The archive's time: from its name (`YYYYmmdd-HHMMSS`, UTC), else its mtime.
fn archive_time(f: &PathBuf) -> DateTime<Utc> {
    let name = f.file_name().unwrap_or_default().to_string_lossy();
    time_from_name(&name).unwrap_or_else(|| {
        std::fs::metadata(f)
            .and_then(|m| m.modified())
            .map(DateTime::<Utc>::from)
            .unwrap_or_else(|_| Utc::now())
    })
}

pub fn run(ctx: &Ctx, a: Args) -> Result<i32> {
    let repo = ctx.open(true)?;
    let mut items: Vec<(DateTime<Utc>, PathBuf)> = a
        .files
        .iter()
        .map(|f| (archive_time(f), f.clone()))
        .collect();
    items.sort();
    let mut imported: HashMap<_, _> = repo
        .snapshots()?
        .into_iter()
        .filter_map(|(id, s)| {
            s.sources.iter().find_map(|src| match src {
                Source::Archive { blake3, .. } => Some((*blake3, id)),
                _ => None,
            })
        })
        .collect();
    let mut failed = 0;
    let mut report = Vec::new();
    for (time, file) in &items {
        let result = archive_id(file).and_then(|aid| {
            if let Some(snap) = imported.get(&aid) {
                if a.json {
                    report
                        .push(serde_json::json!({"file": file, "snapshot": snap, "skipped": true}));
                } else {
                    outln!(
                        "{}: already imported as snapshot {}; skipped",
                        file.display(),
                        snap.short()
                    );
                }
                return Ok(());
            }
            let opts = BackupOptions {
                archive: Some((file.clone(), aid)),
                time: Some(*time),
                // The archive's name, as a tag can hold it.
                tags: vec![file
                    .file_name()
                    .unwrap_or_default()
                    .to_string_lossy()
                    .replace(|c: char| c == ',' || c.is_control(), "_")],
                host: a.host.clone(),
                ..Default::default()
            };
            let bar = Bar::new(ctx, "import", false);
            let done = backup(&repo, &opts, None, progress_for(bar.as_ref()))?;
            drop(bar);
            let s = &done.snapshot.summary;
            if a.json {
                report.push(serde_json::json!({
                    "file": file, "snapshot": done.id, "time": time, "skipped": false,
                    "bytes_read": s.bytes_read, "bytes_added": s.bytes_added,
                }));
            } else {
                outln!(
                    "{}: snapshot {} ({}), {} read, {} added",
                    file.display(),
                    done.id.short(),
                    snap::host::local_time(time),
                    human(s.bytes_read),
                    human(s.bytes_added)
                );
            }
            imported.insert(aid, done.id);
            Ok(())
        });
        if let Err(e) = result {
            eprintln!("snap: {e}");
            if a.json {
                report.push(serde_json::json!({"file": file, "error": e.to_string()}));
            }
            failed += 1;
        }
    }
    if a.json {
        ctx.print_json(&report)?;
    }
    let total = items.len();
    if failed == 1 && total == 1 {
        bail!("the archive could not be imported (see above)");
    }
    if failed == total && total > 0 {
        bail!("none of the {total} archives could be imported (see above)");
    }
    if failed > 0 {
        bail!(
            "{failed} of {total} archives could not be imported (see above); the other {} {}",
            total - failed,
            if total - failed == 1 { "was" } else { "were" }
        );
    }
    Ok(0)
}
