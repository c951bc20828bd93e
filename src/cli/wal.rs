//! `snap wal push|fetch|check`: the WAL archive of a PostgreSQL cluster, for
//! `archive_command` and `restore_command`, and its continuity check.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, Result};
use snap::format::crypto::MasterKey;
use snap::ops::wal;
use snap::repo::wal::{Pushed, WalArchive};
use snap::repo::Repository;
use snap::store::Store;

use super::{key, Ctx};

#[derive(clap::Args)]
pub struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(clap::Subcommand)]
enum Command {
    /// Archive one WAL file, durably before exiting 0:
    /// archive_command = 'snap --repo REPO wal push %p'
    Push {
        /// The file (PostgreSQL's %p)
        path: PathBuf,
    },
    /// Write an archived WAL file to a path: exit 1 when the archive lacks it, 255 on
    /// any other failure (so that PostgreSQL stops recovery rather than ending it
    /// early): restore_command = 'snap --repo REPO wal fetch %f %p'
    Fetch {
        /// The file's name (PostgreSQL's %f)
        name: String,
        /// Where to write it (PostgreSQL's %p)
        path: PathBuf,
    },
    /// Check that the archive holds every segment from each base backup's start to
    /// the newest one, across timeline switches; exit 1 on a gap
    Check {
        /// Print the report as JSON
        #[arg(long)]
        json: bool,
    },
}

pub fn run(ctx: &Ctx, a: Args) -> Result<i32> {
    match a.command {
        Command::Push { path } => {
            let (store, key, level) = archive_of(ctx)?;
            let archive = WalArchive::new(store.as_ref(), key.as_ref(), level);
            let (file, pushed) = wal::push(&archive, &path)
                .with_context(|| format!("wal push {}", path.display()))?;
            if pushed == Pushed::AlreadyThere {
                log::info!("{file} was archived already, with the same content");
            }
            Ok(0)
        }
        Command::Fetch { name, path } => {
            let fetched = archive_of(ctx).and_then(|(store, key, level)| {
                let archive = WalArchive::new(store.as_ref(), key.as_ref(), level);
                Ok((wal::fetch(&archive, &name, &path)?, store.location()))
            });
            match fetched {
                Ok((true, _)) => Ok(0),
                Ok((false, location)) => {
                    eprintln!("snap: wal fetch: {name} is not in {location}");
                    Ok(1)
                }
                // PostgreSQL takes any status up to 125 for "not archived" and ends
                // recovery there, promoting: a damaged segment or an unreachable
                // repository would silently lose what comes after.
                Err(e) => {
                    eprintln!(
                        "snap: error: wal fetch {name}: {}; exiting {FETCH_FAILED} so that PostgreSQL stops recovery here instead of ending it early",
                        super::message(&e)
                    );
                    Ok(FETCH_FAILED)
                }
            }
        }
        Command::Check { json } => {
            let repo = ctx.open(false)?;
            let snaps = repo.snapshots()?;
            let report = wal::check(&repo.wal(), &snaps)?;
            if json {
                outln!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                print(&report)?;
            }
            Ok(if report.ok() { 0 } else { 1 })
        }
    }
}

/// The exit status of a `wal fetch` that failed for another reason than the archive
/// lacking the file: above 125, which PostgreSQL's recovery takes as fatal.
const FETCH_FAILED: i32 = 255;

/// What the WAL archive of the selected repository needs, without its index cache: the
/// store, the key (encrypted repositories) and the compression level.
fn archive_of(ctx: &Ctx) -> Result<(Arc<dyn Store>, Option<MasterKey>, i32)> {
    let (store, _) = ctx.store()?;
    let probe = Repository::probe(store.as_ref())?;
    let key = ctx
        .master_key(store.as_ref(), &probe, None)?
        .map(key::Unlocked::key);
    let config = probe.config(key.as_ref())?;
    Ok((store, key, config.compression_level))
}

fn print(r: &wal::WalReport) -> Result<()> {
    let timelines: Vec<String> = r.timelines.iter().map(u32::to_string).collect();
    outln!(
        "{} segments archived on timeline(s) {}; newest {}",
        r.segments,
        if timelines.is_empty() {
            "-".into()
        } else {
            timelines.join(", ")
        },
        r.newest.as_deref().unwrap_or("none")
    );
    if r.without_base() {
        outln!(
            "NOT recoverable: no base backup in this repository, and WAL alone restores nothing; take one with `snap backup --pg-base DSN`"
        );
    }
    for b in &r.bases {
        let state = match (b.consistent, b.gaps.is_empty()) {
            (true, true) => "ok: recoverable to the newest segment".to_string(),
            (true, false) => format!(
                "recoverable up to {} only",
                b.reaches.as_deref().unwrap_or("its start")
            ),
            (false, _) => format!(
                "NOT recoverable: it needs every segment up to {}",
                b.consistent_at
            ),
        };
        let path: Vec<String> = b.timelines.iter().map(u32::to_string).collect();
        outln!(
            "base backup {} ({}), from {} on timeline(s) {}: {state}",
            b.snapshot.short(),
            snap::host::local_time(&b.time),
            b.start,
            path.join(" -> ")
        );
        for g in &b.gaps {
            outln!(
                "  missing {} segment(s): {} .. {}",
                g.segments,
                g.first,
                g.last
            );
        }
    }
    for g in &r.gaps {
        outln!(
            "missing {} segment(s): {} .. {}",
            g.segments,
            g.first,
            g.last
        );
    }
    for h in &r.unreadable_history {
        outln!("unreadable history file {h}: recovery stops with an error at it");
    }
    for h in &r.missing_history {
        outln!(
            "missing {h}: its timeline has archived segments, but recovery cannot follow it without the history file, and stops at the end of the timeline before"
        );
    }
    Ok(())
}
