//! `snap sync`

use std::time::Instant;

use std::fmt::Write as _;

use anyhow::{Context, Result};
use snap::ops::sync::{plan_sync, Destination, SyncOptions, SyncPlan};
use snap::repo::Repository;
use snap::store;

use snap::progress::Progress as _;

use super::{count, human, key, progress_for, Bar, Ctx};

#[derive(clap::Args)]
pub struct Args {
    /// The destination: a directory, sftp://[USER@]HOST[:PORT]/PATH or
    /// s3://BUCKET/PREFIX; created as a copy of this repository when empty. Another
    /// repository (e.g. made by `snap init --encrypt` with its own passphrase, read
    /// from SNAP_TO_PASSWORD, SNAP_TO_PASSWORD_FILE, SNAP_TO_KEY_FILE or a prompt)
    /// gets rewritten copies
    #[arg(long, value_name = "REPO")]
    pub(super) to: String,
    /// S3 endpoint of the destination (e.g. http://127.0.0.1:9000 for MinIO) [default:
    /// AWS_ENDPOINT_URL, else AWS]
    #[arg(long, value_name = "URL")]
    pub(super) endpoint: Option<String>,
    /// Copy only these snapshots (ids or unique prefixes) [default: all]
    #[arg(value_name = "SNAPSHOT")]
    pub(super) snapshots: Vec<String>,
    /// Copy only the snapshots these filters pass (with SNAPSHOTs: those too)
    #[command(flatten)]
    pub(super) filter: super::FilterArgs,
    /// Also delete on the destination what forget and prune removed here (of every
    /// snapshot: not with a choice of them)
    #[arg(long, conflicts_with_all = ["snapshots", "tag", "host", "path"])]
    pub(super) delete: bool,
    /// Show what would be sent and deleted (snapshots, packs, bytes), change nothing
    /// on either side
    #[arg(long, short = 'n')]
    pub(super) dry_run: bool,
    /// Print the report as JSON
    #[arg(long)]
    pub(super) json: bool,
}

pub fn run(ctx: &Ctx, a: Args) -> Result<i32> {
    let src = ctx.open(false)?;
    let dst_store = store::open(&a.to, &super::remote_options(a.endpoint.clone()))?;
    let loc = dst_store.location();
    // An empty destination is made a copy of this repository when the plan runs.
    let dst = if dst_store
        .size("config")
        .with_context(|| format!("reading {loc}"))?
        .is_some()
    {
        let probe = Repository::probe(dst_store.as_ref())
            .with_context(|| format!("opening the destination {loc}"))?;
        let key = if probe.id() == src.config().id {
            src.key().cloned()
        } else if probe.encrypted() {
            Some(
                key::unlock(dst_store.as_ref(), probe.id(), None, "SNAP_TO", None)
                    .with_context(|| format!("unlocking the destination {loc}"))?
                    .key(),
            )
        } else {
            None
        };
        let mut dst = Repository::open_probed(dst_store.clone(), probe, key)
            .with_context(|| format!("opening the destination {loc}"))?;
        dst.set_lock_wait(ctx.retry_lock);
        Some(dst)
    } else {
        None
    };
    let filter = a.filter.filter();
    let snapshots = if a.snapshots.is_empty() && filter.is_empty() {
        None
    } else {
        let mut ids = Vec::new();
        for spec in &a.snapshots {
            ids.push(src.find_snapshot(spec)?.0);
        }
        if !filter.is_empty() {
            for (id, s) in src.snapshots()? {
                if filter.matches(&s) && !ids.contains(&id) {
                    ids.push(id);
                }
            }
        }
        if ids.is_empty() {
            return Err(super::output::not_found(
                "no snapshot passes the --host, --tag and --path filters; `snap list` with them shows what they pass",
            ));
        }
        Some(ids)
    };
    let dest = match &dst {
        Some(r) => Destination::Repository(r),
        None => Destination::Empty(dst_store),
    };
    let opts = SyncOptions {
        snapshots,
        delete: a.delete,
    };
    let plan = plan_sync(&src, dest, &opts).with_context(|| format!("syncing to {loc}"))?;
    if a.dry_run {
        print_plan(&plan, &loc, a.delete, a.json)?;
        return Ok(0);
    }
    let created = plan.create;
    let left = plan.left.clone();
    let started = Instant::now();
    let bar = Bar::new(ctx, "send", a.json);
    if let (Some(b), Some(bytes)) = (&bar, plan.bytes) {
        b.total(Some(bytes), Some(plan.packs), "pack");
    }
    let r = plan
        .execute(progress_for(bar.as_ref()))
        .with_context(|| format!("syncing to {loc}"))?;
    drop(bar);
    if created && !ctx.quiet && !a.json {
        outln!("created {loc} as a copy of {}", src.location());
    }
    let secs = started.elapsed().as_secs_f64();
    if a.json {
        ctx.print_json(&r)?;
        return Ok(0);
    }
    if ctx.quiet {
        return Ok(0);
    }
    #[allow(clippy::cast_possible_truncation, reason = "a float cast saturates")]
    let rate = human((r.bytes_sent as f64 / secs.max(0.001)) as u64);
    if r.rewritten {
        outln!(
            "rewrote {} snapshots for {loc} (other blob ids): read {} chunks, stored {} new blobs ({}) in {secs:.1} s ({rate}/s); {} snapshots were there already",
            r.snapshots_sent,
            r.chunks_read,
            r.blobs_sent,
            human(r.bytes_sent),
            r.snapshots_present
        );
    } else {
        outln!(
            "sent {} packs ({}) in {secs:.1} s ({rate}/s), {} index files, {} snapshots; {} packs and {} snapshots were there already",
            r.packs_sent,
            human(r.bytes_sent),
            r.index_files_sent + r.index_files_written,
            r.snapshots_sent,
            r.packs_present,
            r.snapshots_present
        );
    }
    if r.wal_files_sent > 0 {
        outln!(
            "sent {} archived WAL files ({} before compression)",
            r.wal_files_sent,
            human(r.wal_bytes_sent)
        );
    }
    if a.delete {
        outln!(
            "deleted on {loc}: {} snapshots, {} index files, {} packs",
            r.deleted[0],
            r.deleted[1],
            r.deleted[2]
        );
        say_left(&left, &loc)?;
    }
    Ok(0)
}

/// Names what `--delete` leaves there though this repository lacks it.
fn say_left(left: &[snap::format::id::SnapshotId], loc: &str) -> Result<()> {
    if left.is_empty() {
        return Ok(());
    }
    let ids: Vec<String> = left
        .iter()
        .map(snap::format::id::SnapshotId::short)
        .collect();
    outln!(
        "left on {loc}: {} this repository lacks but cannot tell were its own (another repository's, backed up there directly, or the last of a group forgotten here): {}; `snap --repo {loc} forget ID` removes one",
        count(ids.len(), "snapshot"),
        ids.join(", ")
    );
    Ok(())
}

/// Prints what a sync would do (`--dry-run`).
fn print_plan(plan: &SyncPlan, loc: &str, delete: bool, json: bool) -> Result<()> {
    if json {
        let v = serde_json::json!({
            "destination": loc,
            "create": plan.create,
            "rewritten": plan.rewrite,
            "snapshots": plan.snapshots,
            "snapshots_to_send": plan.snapshots.len(),
            "snapshots_present": plan.snapshots_present,
            "packs_to_send": plan.packs,
            "packs_present": plan.packs_present,
            "bytes_to_send": plan.bytes,
            "delete": plan.delete,
            "snapshots_to_delete": plan.delete.len(),
            "left": plan.left,
            "dry_run": true,
        });
        outln!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    let mut line = if plan.rewrite {
        format!(
            "would rewrite {} for {loc} (other blob ids: the bytes to store are known only once their chunks are read); {} there already",
            count(plan.snapshots.len(), "snapshot"),
            count(plan.snapshots_present, "snapshot")
        )
    } else {
        format!(
            "would send {}, {} ({}) to {loc}{}; {} and {} there already",
            count(plan.snapshots.len(), "snapshot"),
            count(plan.packs, "pack"),
            human(plan.bytes.unwrap_or(0)),
            if plan.create {
                " (would create it as a copy of this repository)"
            } else {
                ""
            },
            count(plan.packs_present, "pack"),
            count(plan.snapshots_present, "snapshot")
        )
    };
    if delete {
        let ids: Vec<String> = plan
            .delete
            .iter()
            .map(snap::format::id::SnapshotId::short)
            .collect();
        let _ = write!(
            line,
            "; would delete {} there{}{}",
            count(ids.len(), "snapshot"),
            if ids.is_empty() { "" } else { ": " },
            ids.join(", ")
        );
        if plan.rewrite {
            line.push_str(", then prune it");
        }
    }
    outln!("{line}; dry run, nothing sent");
    if delete {
        say_left(&plan.left, loc)?;
    }
    Ok(())
}
