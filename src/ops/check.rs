//! `check`: can every snapshot be restored?
//!
//! 0. Key files: each decodes (the one the passphrase opened was proven by opening).
//! 1. Index files and packs: every index file is readable; every pack they list exists
//!    with the size and the trailer they give (truncated, deleted or damaged packs show
//!    here); packs no index file lists are reported (an interrupted backup left them,
//!    or one is running).
//! 2. Structure: every tree and chunk list reachable from a snapshot is read and
//!    verified, and every data chunk they name is in the index.
//! 3. Data (`--read-data`, or a share of the packs with `--read-data-subset`): every
//!    blob of the chosen packs is read, decompressed and hashed. The time each pack
//!    was last verified is kept in the index, and a subset run takes the packs verified
//!    longest ago (never first), so repeated runs cover the whole repository.
//! 4. Damage, if any, is reported as the snapshots and files it affects.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;

use rayon::prelude::*;

use crate::error::{Error, Result};
use crate::format::id::{Id, IndexFileId, PackId, SnapshotId, TreeId};
use crate::format::tree::{Content, NodeKind};
use crate::locked;
use crate::progress::{Phase, Progress};
use crate::repo::index::BlobLoc;
use crate::repo::reach::mark_reachable;
use crate::repo::{keys, Repository};

/// Which pack data `check` reads.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum ReadData {
    /// None: structure only.
    None,
    /// Every pack.
    All,
    /// This share (0..=1) of the packs, least recently verified first.
    Subset(f64),
}

/// A snapshot that cannot be fully restored.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Damaged {
    /// The snapshot.
    pub id: SnapshotId,
    /// Its time, host and sources, for the report.
    pub describe: String,
    /// Paths inside it that are affected (a directory when its listing is unreadable).
    pub paths: Vec<String>,
}

/// What `check` found.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct CheckReport {
    /// Snapshots checked.
    pub snapshots: u64,
    /// Packs in the index.
    pub packs: u64,
    /// Trees and chunk lists read.
    pub metadata_blobs: u64,
    /// Packs read whole.
    pub packs_read: u64,
    /// Blobs whose hash was verified while reading packs.
    pub blobs_verified: u64,
    /// Files of the WAL archive read and verified (with `--read-data`).
    pub wal_files_verified: u64,
    /// Damaged blob copies found by reading packs: recorded, so that no backup
    /// deduplicates against them, until `repair index` drops them.
    pub damaged_copies: u64,
    /// Problems found (each names the pack or blob).
    pub errors: Vec<String>,
    /// Files that could not be read for a reason that proves nothing about their
    /// bytes (a refused permission, a lost connection): not damage, and not recorded
    /// as such; also among `errors`.
    pub unreadable: Vec<String>,
    /// Damaged drill records and key files: errors that touch no backed up data, each
    /// saying what to do; also among `errors`.
    pub damaged_records: Vec<String>,
    /// Things that are not damage (unindexed packs, leftover temp files).
    pub warnings: Vec<String>,
    /// Snapshots the errors affect.
    pub damaged: Vec<Damaged>,
}

/// Runs check; see the module docs.
pub fn check(repo: &Repository, read: ReadData, progress: &dyn Progress) -> Result<CheckReport> {
    // What the repository holds, not what this client copied of it.
    repo.read_past_cache();
    let lock = repo.lock(false, "check")?;
    let on_disk: HashMap<PackId, u64> = repo.pack_files()?.into_iter().collect();
    recheck_damaged(repo, &on_disk)?;
    let mut report = CheckReport::default();
    for (path, why) in &lock.unreadable {
        report.errors.push(format!("snapshot record {path}: {why}"));
    }
    for (path, why) in repo.damaged_drills()? {
        report.damaged_records.push(format!(
            "drill record {}/{path}: {why}: it is left out (its snapshot counts as not drilled); delete the file and run `snap drill` again",
            repo.location()
        ));
    }
    // The passphrase in use proved its own key file; the others can only be decoded
    // (their seal needs their passphrase).
    for (id, damaged) in keys::list(repo.store().as_ref())? {
        if let Err(e) = damaged {
            report.damaged_records.push(format!(
                "{e}: its passphrase no longer opens the repository; `snap key remove {id}`, then `snap key add` that passphrase again"
            ));
        }
    }
    report.errors.extend(report.damaged_records.iter().cloned());
    if !repo.index().is_complete()? {
        report.errors.push(
            "some index files cannot be read (see the warnings above); run `snap repair index` to rewrite them from the packs".into(),
        );
    }
    // The index files as the repository holds them, not as this host's cache copied
    // them: damage there shows only to a host without the copy, in a disaster.
    let mut files: Vec<IndexFileId> = repo.index_files()?.into_iter().collect();
    files.sort();
    let failed: Vec<(IndexFileId, Error)> = files
        .par_iter()
        .filter_map(|f| repo.read_index_file(f).err().map(|e| (*f, e)))
        .collect();
    for (f, e) in failed {
        if e.is_damage() {
            report.errors.push(format!(
                "index file {f}: {e}; run `snap repair index` to rewrite the index from the packs"
            ));
        } else {
            report
                .unreadable
                .push(unreadable(format!("index file {f}"), &e));
        }
    }
    let mut bad: HashSet<Id> = HashSet::new();

    // 1. Packs against the index.
    let indexed = repo.index().packs_by_verification()?;
    report.packs = indexed.len() as u64;
    let mut present = Vec::new();
    // Copies of blobs that whole-pack problems took.
    let mut lost = Vec::new();
    for (pack, size) in &indexed {
        let rows = repo.index().blobs_in(pack, false)?;
        let problem = match on_disk.get(pack) {
            None => Some(format!("pack {pack} is missing ({} blobs)", rows.len())),
            Some(&len) => match repo.pack_trailer(pack, len) {
                Err(e) if !e.is_damage() => {
                    report
                        .unreadable
                        .push(unreadable(format!("pack {pack}"), &e));
                    continue;
                }
                Err(e) => Some(format!("pack {pack}: {e}")),
                Ok(_) if len != *size => {
                    Some(format!("pack {pack} is {len} bytes, the index says {size}"))
                }
                Ok(entries) => {
                    let trailer: HashSet<(Id, u64, u32, u32)> = entries
                        .iter()
                        .map(|e| (e.id, e.offset, e.stored_len, e.raw_len))
                        .collect();
                    let disagree: Vec<Id> = rows
                        .iter()
                        .filter(|(id, l)| {
                            !trailer.contains(&(*id, l.offset, l.stored_len, l.raw_len))
                        })
                        .map(|(id, _)| *id)
                        .collect();
                    bad.extend(&disagree);
                    if disagree.is_empty() {
                        present.push(*pack);
                        None
                    } else {
                        Some(format!(
                            "the index places {} blobs in pack {pack} where its trailer does not; run `snap repair index`",
                            disagree.len()
                        ))
                    }
                }
            },
        };
        if let Some(p) = problem {
            report.errors.push(p);
            // What the pack no longer holds: the blobs that do not read where the
            // index places them (every one, when it is gone). They leave the index as
            // a damaged blob found by --read-data does, so that no backup reuses them;
            // those that read stay restorable and are no damage.
            let file = on_disk.contains_key(pack);
            for (id, loc) in rows {
                let gone = match file.then(|| repo.read_blob_at(&id, &loc)) {
                    None => true,
                    Some(Ok(_)) => false,
                    Some(Err(e)) if e.is_damage() => true,
                    Some(Err(e)) => {
                        report
                            .unreadable
                            .push(unreadable(format!("pack {pack}"), &e));
                        break;
                    }
                };
                if gone {
                    bad.insert(id);
                    lost.push((id, loc));
                }
            }
        }
    }
    let known: HashSet<PackId> = indexed.iter().map(|(id, _)| *id).collect();
    let mut unknown: Vec<&PackId> = on_disk.keys().filter(|id| !known.contains(id)).collect();
    unknown.sort();
    for id in unknown {
        report.warnings.push(format!(
            "pack {id} is not in the index (an interrupted backup left it, or a running one is writing it): `snap prune` removes it if unused, `snap repair index` indexes it"
        ));
    }

    // 2. Structure: the record files themselves (the index keeps copies), then trees.
    let snaps = repo.snapshots()?;
    report.snapshots = snaps.len() as u64;
    for (id, _) in &snaps {
        if let Err(e) = repo.read_snapshot_file(id) {
            report.errors.push(format!("snapshot record {id}: {e}"));
        }
    }
    let roots: Vec<TreeId> = snaps.iter().map(|(_, s)| s.tree).collect();
    let reach = mark_reachable(repo, &roots)?;
    report.metadata_blobs = reach.trees + reach.lists;
    for p in &reach.problems {
        if !p.damage {
            report
                .unreadable
                .push(unreadable(format!("blob {}", p.id), &p.why));
        } else if bad.insert(p.id) {
            report.errors.push(format!("blob {}: {}", p.id, p.why));
        }
    }

    // 3. Data.
    let chosen: Vec<PackId> = match read {
        ReadData::None => Vec::new(),
        ReadData::All => present.clone(),
        ReadData::Subset(share) => {
            // `present` is in verification order, oldest first.
            #[allow(clippy::cast_possible_truncation, reason = "at most present.len()")]
            let n = ((present.len() as f64) * share.clamp(0.0, 1.0)).ceil() as usize;
            present.iter().take(n).copied().collect()
        }
    };
    progress.phase(Phase::Verifying);
    progress.total(
        Some(chosen.iter().map(|p| on_disk[p]).sum()),
        Some(chosen.len() as u64),
        "pack",
    );
    // Problems (with the damaged copy, if a blob), the packs found intact, and the
    // packs that could not be read.
    let found = Mutex::new((Vec::new(), Vec::new(), Vec::new()));
    let verified = std::sync::atomic::AtomicU64::new(0);
    chosen.par_iter().try_for_each(|pack| -> Result<()> {
        // `present` packs are listed at the size the index gives.
        let entries = match repo.pack_trailer(pack, on_disk[pack]) {
            Ok(t) => t,
            Err(e) if !e.is_damage() => {
                locked(&found)
                    .2
                    .push(unreadable(format!("pack {pack}"), &e));
                return Ok(());
            }
            Err(e) => {
                locked(&found).0.push((format!("pack {pack}: {e}"), None));
                return Ok(());
            }
        };
        let mut broken = Vec::new();
        for e in &entries {
            let loc = BlobLoc::in_pack(*pack, e);
            match repo.read_blob_at(&e.id, &loc) {
                Ok(_) => {}
                Err(err) if !err.is_damage() => {
                    locked(&found)
                        .2
                        .push(unreadable(format!("pack {pack}"), &err));
                    return Ok(());
                }
                Err(err) => broken.push((e.id, loc, err.to_string())),
            }
            progress.bytes(u64::from(e.stored_len));
        }
        verified.fetch_add(entries.len() as u64, std::sync::atomic::Ordering::Relaxed);
        progress.items(1);
        let mut f = locked(&found);
        if broken.is_empty() {
            f.1.push(*pack);
        }
        for (id, loc, why) in broken {
            f.0.push((
                format!("blob {id} in pack {pack} at offset {}: {why}", loc.offset),
                Some((id, loc)),
            ));
        }
        Ok(())
    })?;
    let (problems, intact, unread) = found
        .into_inner()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    report.unreadable.extend(unread);
    report.packs_read = chosen.len() as u64;
    report.blobs_verified = verified.into_inner();
    let now = chrono::Utc::now().timestamp();
    for pack in intact {
        repo.index().set_verified(&pack, now)?;
    }
    let mut copies = lost;
    for (msg, copy) in problems {
        report.errors.push(msg);
        if let Some((id, loc)) = copy {
            // Only the copy the index uses matters to restores.
            if repo.index().lookup(&id)? == Some(loc) {
                bad.insert(id);
            }
            copies.push((id, loc));
        }
    }
    // No backup may deduplicate against a damaged copy: it leaves the index now, and
    // `repair index` drops it from the index files.
    repo.index().record_damaged(&copies)?;
    report.damaged_copies = copies.len() as u64;
    if read == ReadData::All {
        verify_wal(repo, &mut report)?;
    }

    report.errors.extend(report.unreadable.iter().cloned());

    // 4. Damage.
    if !bad.is_empty() {
        let mut memo = HashMap::new();
        for (id, s) in &snaps {
            let mut paths = Vec::new();
            damaged_paths(repo, &bad, &mut memo, &s.tree, "", &mut paths)?;
            if !paths.is_empty() {
                report.damaged.push(Damaged {
                    id: *id,
                    describe: format!(
                        "{} {} {}",
                        crate::host::local_time(&s.time),
                        s.host,
                        s.sources
                            .iter()
                            .map(super::super::format::snapshot::Source::describe)
                            .collect::<Vec<_>>()
                            .join(" ")
                    ),
                    paths,
                });
            }
        }
    }
    Ok(report)
}

/// What `check` says of `what` (a pack, a blob), which could not be read for a reason
/// (`why`) that proves nothing about its bytes.
fn unreadable(what: String, why: &dyn std::fmt::Display) -> String {
    format!(
        "{what} could not be read: {why}; that is no proof of damage (nothing was recorded): give snap access to it, or wait for the store to answer, and check again"
    )
}

/// Reads every file of the WAL archive as `wal fetch` would (authenticated,
/// decompressed, its BLAKE3 checked): a damaged segment stops a recovery there.
fn verify_wal(repo: &Repository, report: &mut CheckReport) -> Result<()> {
    let wal = repo.wal();
    for file in wal.list()? {
        crate::interrupt::check()?;
        match wal.fetch(&file) {
            Ok(Some(raw)) => {
                if let crate::repo::wal::WalFile::History { tli } = file {
                    if let Err(why) = super::wal::parse_history(tli, &raw) {
                        report.errors.push(format!(
                            "WAL file {}/{}: {why}: recovery stops with an error at this timeline history file; delete it, and let the cluster that made the timeline push it again",
                            repo.location(),
                            file.path()
                        ));
                        continue;
                    }
                }
                report.wal_files_verified += 1;
            }
            Ok(None) => {}
            Err(e) => report.errors.push(format!(
                "WAL file {}/{}: {e}: recovery stops before it; if the cluster still has it in pg_wal, delete the damaged copy and push it again (`snap wal push`), else take a new base backup",
                repo.location(),
                file.path()
            )),
        }
    }
    Ok(())
}

/// Reads again the blob copies recorded as damaged whose pack is still here; one that
/// reads intact now is damaged no longer (its pack was put back from another copy, or
/// the damage was in the reading), and the index places the blob there again.
fn recheck_damaged(repo: &Repository, on_disk: &HashMap<PackId, u64>) -> Result<()> {
    let damaged = repo.index().damaged()?;
    for (pack, copies) in damaged {
        let Some(&len) = on_disk.get(&pack) else {
            continue;
        };
        let Ok(entries) = repo.pack_trailer(&pack, len) else {
            continue;
        };
        for e in entries
            .iter()
            .filter(|e| copies.iter().any(|(id, at)| *id == e.id && *at == e.offset))
        {
            if repo.read_blob_at(&e.id, &BlobLoc::in_pack(pack, e)).is_ok() {
                log::info!("blob {} in pack {pack} reads intact again", e.id);
                repo.index().undamage(&pack, e)?;
            }
        }
    }
    Ok(())
}

/// Whether each tree or list node reaches damage, remembered across snapshots.
type Memo = HashMap<Id, bool>;

/// Appends to `out` the paths below tree `tree` (at `prefix`) that reach a blob in `bad`.
fn damaged_paths(
    repo: &Repository,
    bad: &HashSet<Id>,
    memo: &mut Memo,
    tree: &TreeId,
    prefix: &str,
    out: &mut Vec<String>,
) -> Result<bool> {
    if memo.get(&tree.0) == Some(&false) {
        return Ok(false);
    }
    let readable = if bad.contains(&tree.0) {
        None
    } else {
        repo.load_tree(tree).ok()
    };
    let nodes = if let Some(t) = readable {
        t.nodes
    } else {
        out.push(format!("{prefix}/ (directory listing unreadable)"));
        memo.insert(tree.0, true);
        return Ok(true);
    };
    let mut any = false;
    for n in nodes {
        let path = format!("{prefix}/{}", crate::format::tree::shown_name(&n.name));
        let hit = match &n.kind {
            NodeKind::Dir(sub) => damaged_paths(repo, bad, memo, sub, &path, out)?,
            NodeKind::File(c) => {
                let hit = content_damaged(repo, bad, memo, c);
                if hit {
                    out.push(path);
                }
                hit
            }
            _ => false,
        };
        any |= hit;
    }
    memo.insert(tree.0, any);
    Ok(any)
}

fn content_damaged(repo: &Repository, bad: &HashSet<Id>, memo: &mut Memo, c: &Content) -> bool {
    c.ids.iter().any(|id| {
        if bad.contains(id) {
            return true;
        }
        if c.depth == 0 {
            return false;
        }
        if let Some(d) = memo.get(id) {
            return *d;
        }
        let d = match repo.list_node(id, c.depth - 1) {
            Ok(node) => content_damaged(
                repo,
                bad,
                memo,
                &Content {
                    depth: node.level,
                    ids: node.ids,
                },
            ),
            Err(_) => true,
        };
        memo.insert(*id, d);
        d
    })
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::repo::InitOptions;
    use crate::store::test_store::TestStore;
    use crate::store::Store;

    #[test]
    fn a_pack_that_cannot_be_read_is_reported_not_recorded_as_damage() {
        let d = tempfile::tempdir().unwrap();
        let root = d.path().join("repo");
        let repo = Repository::init(&root, &InitOptions::default()).unwrap();
        let saver = repo.saver(3).unwrap();
        saver
            .save(crate::format::pack::BlobKind::Data, &[7u8; 4096])
            .unwrap();
        saver.flush().unwrap();
        let (pack, _) = repo.pack_files().unwrap().into_iter().next().unwrap();
        let refused = crate::repo::pack_path(&pack);
        let store: Arc<dyn Store> = Arc::new(TestStore::new(&root).refusing(&refused));
        let repo = Repository::open_store(store, None).unwrap();
        let r = check(&repo, ReadData::All, &crate::progress::NoProgress).unwrap();
        assert_eq!(r.unreadable.len(), 1, "{r:?}");
        assert!(r.unreadable[0].contains("no proof of damage"), "{r:?}");
        assert_eq!(r.errors, r.unreadable, "{r:?}");
        assert_eq!(r.damaged_copies, 0);
        assert!(r.damaged.is_empty(), "{r:?}");
        assert!(repo.index().damaged().unwrap().is_empty());
    }

    #[test]
    fn trees_that_cannot_be_read_are_no_damaged_snapshot() {
        let d = tempfile::tempdir().unwrap();
        let root = d.path().join("repo");
        let repo = Repository::init(&root, &InitOptions::default()).unwrap();
        let opts = crate::ops::backup::BackupOptions {
            stdin_name: Some("db.sql".into()),
            ..Default::default()
        };
        let mut input = std::io::Cursor::new(b"rows".to_vec());
        crate::ops::backup::backup(&repo, &opts, Some(&mut input), &crate::progress::NoProgress)
            .unwrap();
        let store: Arc<dyn Store> = Arc::new(TestStore::new(&root).refusing("packs/"));
        let repo = Repository::open_store(store, None).unwrap();
        let r = check(&repo, ReadData::None, &crate::progress::NoProgress).unwrap();
        assert!(r.damaged.is_empty(), "{r:?}");
        assert!(!r.unreadable.is_empty(), "{r:?}");
        assert_eq!(r.errors, r.unreadable, "{r:?}");
    }
}
