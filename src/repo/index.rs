//! The SQLite index: where each blob lives, and the snapshot list for fast listing.
//!
//! It is a cache of what the immutable repository files say: the union of the index
//! files (`index/`), which in turn can be rebuilt from pack trailers (`snap repair
//! index`), and the snapshot records. The only module that
//! touches rusqlite; its errors leave as [`Error::Index`]. WAL mode with a busy timeout
//! lets several processes back up into one repository at once.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError, RwLock};
use std::time::Duration;

use rusqlite::{params, Connection, OptionalExtension};

use crate::error::{Error, Result};
use crate::format::compress::Compression;
use crate::format::id::{Id, IndexFileId, PackId, SnapshotId};
use crate::format::pack::{BlobKind, PackEntry, PackRecord};
use crate::format::snapshot::Snapshot;
use crate::locked;
use crate::repo::id_filter::{Changed, IdFilter};

/// Schema version; an index of another version is rebuilt (versions 5 to 7 are brought
/// to 8 in place: 6 added the `fresh` table, 7 the `verified` one, 8 the `id_filter`).
pub const SCHEMA_VERSION: i64 = 8;

/// A blob table's definition: schema 6 has two, `blobs`, the settled rows, and `fresh`,
/// the rows added and not yet moved into `blobs`. Blob ids are random, so new rows land
/// on random leaves of a table: added to one table of a million rows, a day's few
/// thousand new blobs would dirty (and write to the WAL, then back at the checkpoint)
/// nearly every leaf, a cost that grows with the repository's history. Added to a table
/// a fraction of its size, they dirty only that table's leaves, and [`merge_step`] moves
/// them on in stretches of ids, so the cost per new row stays constant.
fn blob_table(name: &str) -> String {
    format!(
        "CREATE TABLE {name} (
            id BLOB PRIMARY KEY,
            pack INTEGER NOT NULL REFERENCES packs(id),
            offset INTEGER NOT NULL,
            stored_len INTEGER NOT NULL,
            raw_len INTEGER NOT NULL,
            kind INTEGER NOT NULL,
            compression INTEGER NOT NULL
        ) WITHOUT ROWID;
        CREATE INDEX {name}_by_pack ON {name}(pack);"
    )
}

/// Both blob tables: every query and deletion over blobs covers each.
const BLOB_TABLES: [&str; 2] = ["blobs", "fresh"];

/// `fresh` is kept at about 1/`MERGE_RATIO` of the rows of `blobs`, and at least
/// [`MERGE_MIN_ROWS`] (see [`merge_step`]).
const MERGE_RATIO: i64 = 8;
/// See [`MERGE_RATIO`]: below this many rows, `fresh` is small enough to stay cached.
const MERGE_MIN_ROWS: i64 = 16_384;

const SCHEMA: &str = "
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE packs (
    id INTEGER PRIMARY KEY,
    name BLOB NOT NULL UNIQUE,
    size INTEGER NOT NULL,
    blobs INTEGER NOT NULL,
    verified INTEGER
);
CREATE TABLE index_files (name BLOB PRIMARY KEY) WITHOUT ROWID;
CREATE TABLE snapshots (
    id BLOB PRIMARY KEY,
    time TEXT NOT NULL,
    record BLOB NOT NULL
) WITHOUT ROWID;
CREATE TABLE copies (src BLOB PRIMARY KEY, dst BLOB NOT NULL) WITHOUT ROWID;
CREATE TABLE damaged (
    pack BLOB NOT NULL,
    offset INTEGER NOT NULL,
    id BLOB NOT NULL,
    PRIMARY KEY (pack, offset)
) WITHOUT ROWID;
";

/// Snapshots whose every blob was in the index when they were saved, with the count of
/// removals then (see [`Index::removals`]).
const VERIFIED_TABLE: &str = "
CREATE TABLE verified (snapshot BLOB PRIMARY KEY, removals INTEGER NOT NULL) WITHOUT ROWID;
";

/// The Bloom filter of every blob id in `blobs` and `fresh` (see [`IdFilter`]), in
/// blocks; `filter_ids` in `meta` counts the ids added to it. Every transaction that adds
/// blob rows adds their ids (see [`filter_add`]) or deletes it ([`Upkeep::Drop`]).
const FILTER_TABLE: &str = "
CREATE TABLE id_filter (block INTEGER PRIMARY KEY, bits BLOB NOT NULL);
";

/// Where a blob is stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BlobLoc {
    /// The pack holding it.
    pub pack: PackId,
    /// Offset of its stored bytes in the pack.
    pub offset: u64,
    /// Stored length.
    pub stored_len: u32,
    /// Raw length.
    pub raw_len: u32,
    /// What it holds.
    pub kind: BlobKind,
    /// How it is stored.
    pub compression: Compression,
}

impl BlobLoc {
    /// Where the trailer of `pack` places entry `e`.
    pub fn in_pack(pack: PackId, e: &PackEntry) -> BlobLoc {
        BlobLoc {
            pack,
            offset: e.offset,
            stored_len: e.stored_len,
            raw_len: e.raw_len,
            kind: e.kind,
            compression: e.compression,
        }
    }
}

/// How much of a pack the marked (live) blobs use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PackUsage {
    /// The pack.
    pub name: PackId,
    /// Its file size.
    pub size: u64,
    /// Marked blobs the index places in it.
    pub live_blobs: u64,
    /// Stored bytes of the marked blobs.
    pub live_bytes: u64,
}

/// What the repository holds, by the index.
#[derive(Clone, Copy, Debug, Default, serde::Serialize)]
pub struct Totals {
    /// Pack files.
    pub packs: u64,
    /// Their total size.
    pub pack_bytes: u64,
    /// Distinct blobs.
    pub blobs: u64,
    /// Their raw (uncompressed) bytes: the deduplicated size.
    pub raw_bytes: u64,
    /// Their stored bytes.
    pub stored_bytes: u64,
}

/// An open index.
pub struct Index {
    path: PathBuf,
    /// Read-only connections for the per-chunk lookups, one per worker thread, so that
    /// parallel lookups do not queue on one lock. Declared before `conn` so that they
    /// close first: the last connection to close checkpoints the WAL into the database
    /// and deletes it, and only the read-write one can.
    readers: Box<[Mutex<Option<ReadConn>>]>,
    conn: Mutex<Connection>,
    /// Bumped by every commit of this process and by [`Index::renew`]: a reader whose
    /// read transaction began before the last bump starts a new one.
    writes: AtomicU64,
    /// The id filter as read at generation `.0` of `writes` (`u64::MAX`: not yet read);
    /// `None` when the cache has none. Every lookup of a backup reads it, so readers
    /// share it and only a reload takes it alone.
    filter: RwLock<(u64, Option<IdFilter>)>,
}

/// A read-only connection inside a read transaction that began at generation `seen`
/// of [`Index::writes`].
struct ReadConn {
    conn: Connection,
    seen: u64,
}

impl Index {
    /// Opens the index at `path`, creating it when absent. Returns `None` when the file
    /// is of another schema version or another repository (the caller rebuilds it).
    pub fn open(path: &Path, repo_id: &str) -> Result<Option<Index>> {
        let conn = Connection::open(path).map_err(|e| sql_err(path, e))?;
        let index = Index {
            path: path.to_path_buf(),
            conn: Mutex::new(conn),
            readers: (0..=rayon::current_num_threads())
                .map(|_| Mutex::new(None))
                .collect(),
            writes: AtomicU64::new(0),
            filter: RwLock::new((u64::MAX, None)),
        };
        {
            let c = index.conn();
            c.busy_timeout(Duration::from_secs(120))
                .map_err(|e| index.err(e))?;
            c.pragma_update(None, "journal_mode", "WAL")
                .map_err(|e| index.err(e))?;
            // NORMAL: a power loss may roll back the last commits but never corrupts the
            // file, and every open reconciles the cache with the index files and snapshot
            // records (an index file's rows and its name commit together), so whatever
            // was rolled back is read again. FULL would add an fsync to every commit.
            c.pragma_update(None, "synchronous", "NORMAL")
                .map_err(|e| index.err(e))?;
        }
        let ok = index.tx(|c| {
            let has_meta: bool = c
                .query_row(
                    "SELECT count(*) FROM sqlite_master WHERE name = 'meta'",
                    [],
                    |r| r.get::<_, i64>(0),
                )
                .map(|n| n > 0)?;
            // Marks of `prune` and `check`: on disk (SQLite's temp file), not in memory.
            c.execute_batch(
                "CREATE TEMP TABLE IF NOT EXISTS marks (id BLOB PRIMARY KEY) WITHOUT ROWID",
            )?;
            if !has_meta {
                c.execute_batch(SCHEMA)?;
                c.execute_batch(VERIFIED_TABLE)?;
                c.execute_batch(FILTER_TABLE)?;
                for table in BLOB_TABLES {
                    c.execute_batch(&blob_table(table))?;
                }
                c.execute(
                    "INSERT INTO meta VALUES ('schema', ?1), ('repo', ?2)",
                    params![SCHEMA_VERSION.to_string(), repo_id],
                )?;
                return Ok(true);
            }
            let get = |k: &str| -> rusqlite::Result<Option<String>> {
                c.query_row("SELECT value FROM meta WHERE key = ?1", [k], |r| r.get(0))
                    .optional()
            };
            if get("repo")?.as_deref() != Some(repo_id) {
                return Ok(false);
            }
            let schema = get("schema")?;
            match schema.as_deref() {
                Some("5" | "6") => {
                    if schema.as_deref() == Some("5") {
                        c.execute_batch(&blob_table("fresh"))?;
                    }
                    c.execute_batch(VERIFIED_TABLE)?;
                    // Counted once: `settled` is kept from here on (a version 5 cache
                    // brought to 6 had none until its first merge).
                    c.execute(
                        "INSERT OR REPLACE INTO meta VALUES ('settled', (SELECT count(*) FROM blobs))",
                        [],
                    )?;
                }
                Some("7") => {}
                _ => return Ok(schema == Some(SCHEMA_VERSION.to_string())),
            }
            c.execute_batch(FILTER_TABLE)?;
            build_filter(c)?;
            c.execute(
                "UPDATE meta SET value = ?1 WHERE key = 'schema'",
                [SCHEMA_VERSION.to_string()],
            )?;
            Ok(true)
        })?;
        Ok(ok.then_some(index))
    }

    /// The read-write connection: for writes, and for reads of the marks, which live in
    /// its temp table.
    fn conn(&self) -> MutexGuard<'_, Connection> {
        locked(&self.conn)
    }

    /// Runs `f` on the calling thread's read-only connection, inside a read transaction
    /// that has seen every write of this process. The transaction stays open until the
    /// next write: starting one per statement costs more than the lookup itself (file
    /// locks on the WAL index), and a backup makes one lookup per chunk. Rows another
    /// process commits meanwhile show after this process's next write; the repository
    /// lock keeps prune out, so what it sees can only be short of new blobs.
    fn read<T>(&self, f: impl FnOnce(&Connection) -> rusqlite::Result<T>) -> Result<T> {
        let slot = rayon::current_thread_index().map_or(0, |i| i + 1) % self.readers.len();
        let mut guard = locked(&self.readers[slot]);
        let writes = self.writes.load(Ordering::Acquire);
        let r = match &mut *guard {
            Some(r) => r,
            empty => {
                let conn = Connection::open_with_flags(
                    &self.path,
                    rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY
                        | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
                )
                .map_err(|e| self.err(e))?;
                conn.busy_timeout(Duration::from_secs(120))
                    .map_err(|e| self.err(e))?;
                empty.insert(ReadConn {
                    conn,
                    seen: u64::MAX,
                })
            }
        };
        if r.seen != writes {
            if !r.conn.is_autocommit() {
                let _ = r.conn.execute_batch("COMMIT");
            }
            r.conn.execute_batch("BEGIN").map_err(|e| self.err(e))?;
            r.seen = writes;
        }
        f(&r.conn).map_err(|e| self.err(e))
    }

    fn err(&self, e: rusqlite::Error) -> Error {
        sql_err(&self.path, e)
    }

    /// Ends every open read transaction, so that the next read sees what other
    /// processes committed: called after taking a repository lock, before the cache is
    /// brought up to date and trusted.
    pub fn renew(&self) {
        self.writes.fetch_add(1, Ordering::Release);
    }

    /// Runs `f` in an immediate transaction (writers queue on the busy timeout).
    fn tx<T>(
        &self,
        f: impl FnOnce(&rusqlite::Transaction<'_>) -> rusqlite::Result<T>,
    ) -> Result<T> {
        self.tx_on(&mut self.conn(), f)
    }

    /// [`Index::tx`] on the read-write connection `c`, already locked.
    fn tx_on<T>(
        &self,
        c: &mut Connection,
        f: impl FnOnce(&rusqlite::Transaction<'_>) -> rusqlite::Result<T>,
    ) -> Result<T> {
        let tx = c
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
            .map_err(|e| self.err(e))?;
        let v = f(&tx).map_err(|e| self.err(e))?;
        tx.commit().map_err(|e| self.err(e))?;
        self.writes.fetch_add(1, Ordering::Release);
        Ok(v)
    }

    /// Whether every index file of the repository could be read when the cache was
    /// last brought up to date (see [`Index::set_complete`]).
    pub fn is_complete(&self) -> Result<bool> {
        self.read(|c| {
            c.query_row(
                "SELECT count(*) FROM meta WHERE key = 'complete'",
                [],
                |r| r.get::<_, i64>(0),
            )
        })
        .map(|n| n > 0)
    }

    /// Empties every table (for a rebuild in place).
    pub fn clear(&self) -> Result<()> {
        self.tx(|c| {
            c.execute_batch("DELETE FROM blobs; DELETE FROM fresh; DELETE FROM packs; DELETE FROM index_files; DELETE FROM snapshots; DELETE FROM verified; DELETE FROM id_filter; DELETE FROM meta WHERE key IN ('complete', 'settled', 'merged', 'filter_ids');")?;
            count_removal(c)
        })
    }

    /// How many times blob rows have left the index (a rebuild, packs replaced, copies
    /// found damaged) since the cache was made: a snapshot saved when the count was `n`
    /// and [`Index::mark_verified`] with it still has every blob while the count is `n`.
    pub fn removals(&self) -> Result<i64> {
        self.read(|c| c.query_row(REMOVALS, [], |r| r.get(0)))
    }

    /// Records that every blob snapshot `id` references was in the index while the count
    /// of removals was `removals` (the caller looked each up, or stored it, after reading
    /// that count); records of earlier counts go.
    pub fn mark_verified(&self, id: &SnapshotId, removals: i64) -> Result<()> {
        self.tx(|c| {
            c.execute(
                &format!("DELETE FROM verified WHERE removals <> ({REMOVALS})"),
                [],
            )?;
            c.execute(
                "INSERT OR REPLACE INTO verified VALUES (?1, ?2)",
                params![id.bytes(), removals],
            )
            .map(drop)
        })
    }

    /// Whether every blob snapshot `id` references is in the index: it was when the
    /// snapshot was saved ([`Index::mark_verified`]) and no row has left since.
    pub fn is_verified(&self, id: &SnapshotId) -> Result<bool> {
        self.read(|c| {
            c.prepare_cached(&format!(
                "SELECT 1 FROM verified WHERE snapshot = ?1 AND removals = ({REMOVALS})"
            ))?
            .exists([id.bytes()])
        })
    }

    /// Records whether every index file could be read: prune refuses to run on an
    /// incomplete index, which may lack blobs that snapshots need.
    pub fn set_complete(&self, complete: bool) -> Result<()> {
        self.tx(|c| {
            c.execute("DELETE FROM meta WHERE key = 'complete'", [])?;
            if complete {
                c.execute("INSERT INTO meta VALUES ('complete', '1')", [])?;
            }
            Ok(())
        })
    }

    /// The index files the cache holds.
    pub fn index_files(&self) -> Result<HashSet<IndexFileId>> {
        self.ids("SELECT name FROM index_files")
    }

    /// Adds index file `file` and the packs it lists, in one transaction (packs the
    /// cache already holds are skipped).
    ///
    /// The transaction keeps its dirty pages in memory until it commits instead of
    /// writing them to the WAL early once the page cache is full (and again when they
    /// are dirtied anew): an index file's few thousand new rows land on random leaves
    /// of `fresh`, more than the cache holds. Its pages are bounded by one index file's
    /// rows and the stretch they move on; a 60-day repository's backup writes a tenth of
    /// the pages. Only here: prune's one transaction over every rewritten pack would
    /// hold far more.
    pub fn ingest(&self, file: &IndexFileId, packs: &[PackRecord], upkeep: Upkeep) -> Result<()> {
        let mut c = self.conn();
        let spill = |c: &Connection, on: bool| {
            c.pragma_update(None, "cache_spill", on)
                .map_err(|e| self.err(e))
        };
        spill(&c, false)?;
        let done = self.tx_on(&mut c, |c| {
            insert_packs(c, packs, upkeep)?;
            c.execute(
                "INSERT OR IGNORE INTO index_files VALUES (?1)",
                [file.bytes()],
            )
            .map(drop)
        });
        let reset = spill(&c, true);
        done.and(reset)
    }

    /// Makes the id filter anew when there is none (after [`Upkeep::Drop`]).
    pub fn ensure_filter(&self) -> Result<()> {
        self.tx(|c| {
            let blocks: i64 = c.query_row("SELECT count(*) FROM id_filter", [], |r| r.get(0))?;
            if blocks == 0 {
                build_filter(c)?;
            }
            Ok(())
        })
    }

    /// Records copies of blobs found damaged (`check --read-data`): each leaves the
    /// index at once, so that no backup deduplicates against it, and stays out when
    /// the cache is rebuilt, until `repair index` drops its pack from the index files.
    pub fn record_damaged(&self, copies: &[(Id, BlobLoc)]) -> Result<()> {
        self.tx(|c| {
            let mut add = c.prepare_cached("INSERT OR IGNORE INTO damaged VALUES (?1, ?2, ?3)")?;
            let mut unsettled = 0;
            for (id, loc) in copies {
                let row = params![loc.pack.bytes(), loc.offset as i64, &id.0[..]];
                add.execute(row)?;
                for table in BLOB_TABLES {
                    let n = c
                        .prepare_cached(&format!(
                            "DELETE FROM {table} WHERE id = ?1 AND offset = ?3
                         AND pack = (SELECT id FROM packs WHERE name = ?2)"
                        ))?
                        .execute(params![&id.0[..], loc.pack.bytes(), loc.offset as i64])?;
                    if table == "blobs" {
                        unsettled += n as i64;
                    }
                }
            }
            settle(c, -unsettled)?;
            count_removal(c)
        })
    }

    /// The damaged blob copies recorded, by pack: (blob, offset).
    pub fn damaged(&self) -> Result<HashMap<PackId, Vec<(Id, u64)>>> {
        let rows = self.rows("SELECT pack, id, offset FROM damaged", [], |r| {
            Ok((
                r.get::<_, Vec<u8>>(0)?,
                r.get::<_, Vec<u8>>(1)?,
                r.get::<_, i64>(2)?,
            ))
        })?;
        let mut out: HashMap<PackId, Vec<(Id, u64)>> = HashMap::new();
        for (pack, id, offset) in rows {
            out.entry(PackId(self.id_of(&pack)?))
                .or_default()
                .push((self.id_of(&id)?, offset as u64));
        }
        Ok(out)
    }

    /// Forgets that the copy of blob `e` in `pack` was damaged (it reads intact again:
    /// the pack was put back from another copy, or the damage was in the reading) and
    /// lets the index place the blob there again.
    pub fn undamage(&self, pack: &PackId, e: &PackEntry) -> Result<()> {
        self.tx(|c| {
            c.execute(
                "DELETE FROM damaged WHERE pack = ?1 AND offset = ?2",
                params![pack.bytes(), e.offset as i64],
            )?;
            let added = c.execute(
                "INSERT OR IGNORE INTO fresh
                 SELECT ?1, id, ?2, ?3, ?4, ?5, ?6 FROM packs WHERE name = ?7
                  AND NOT EXISTS (SELECT 1 FROM blobs WHERE id = ?1)",
                params![
                    &e.id.0[..],
                    e.offset as i64,
                    i64::from(e.stored_len),
                    i64::from(e.raw_len),
                    e.kind as u8,
                    e.compression as u8,
                    pack.bytes()
                ],
            )?;
            if added > 0 {
                filter_add(c, &[e.id])?;
            }
            Ok(())
        })
    }

    /// Of `packs`, just written, those under the name of a pack whose copies were
    /// recorded damaged (or gone): packs are named by their bytes, so these are whole,
    /// and their blobs are placed in them again.
    pub fn written_anew(&self, packs: &[crate::repo::PackRecord]) -> Result<()> {
        let damaged = self.damaged()?;
        for p in packs.iter().filter(|p| damaged.contains_key(&p.id)) {
            for e in &p.entries {
                self.undamage(&p.id, e)?;
            }
        }
        Ok(())
    }

    /// Forgets the damage recorded in `packs`, once no index file lists them.
    pub fn forget_damaged(&self, packs: &[PackId]) -> Result<()> {
        self.tx(|c| {
            let mut st = c.prepare_cached("DELETE FROM damaged WHERE pack = ?1")?;
            for p in packs {
                st.execute([p.bytes()])?;
            }
            Ok(())
        })
    }

    /// For each of `srcs` (data chunk ids of another repository), the id this
    /// repository gave its content when sync last copied it, if that blob is still here.
    pub fn copies(&self, srcs: &[Id]) -> Result<Vec<Option<Id>>> {
        let rows = self.read(|c| {
            let mut st = c.prepare_cached(
                "SELECT dst FROM copies WHERE src = ?1 AND (
                     EXISTS (SELECT 1 FROM fresh WHERE id = dst)
                     OR EXISTS (SELECT 1 FROM blobs WHERE id = dst))",
            )?;
            srcs.iter()
                .map(|s| {
                    st.query_row([&s.0[..]], |r| r.get::<_, Vec<u8>>(0))
                        .optional()
                })
                .collect::<rusqlite::Result<Vec<_>>>()
        })?;
        rows.into_iter()
            .map(|r| r.map(|b| self.id_of(&b)).transpose())
            .collect()
    }

    /// Remembers that chunks `(src, dst)` of another repository were stored here as `dst`.
    pub fn add_copies(&self, pairs: &[(Id, Id)]) -> Result<()> {
        self.tx(|c| {
            let mut st = c.prepare_cached("INSERT OR REPLACE INTO copies VALUES (?1, ?2)")?;
            for (s, d) in pairs {
                st.execute([&s.0[..], &d.0[..]])?;
            }
            Ok(())
        })
    }

    /// Where blob `id` is stored, if anywhere.
    pub fn lookup(&self, id: &Id) -> Result<Option<BlobLoc>> {
        let row = self.read(|c| {
            // `fresh` first: it is small and cached, and LIMIT ends the query at the
            // first row (an id is in at most one of the tables).
            c.prepare_cached(
                "SELECT p.name, b.offset, b.stored_len, b.raw_len, b.kind, b.compression
                   FROM fresh b JOIN packs p ON p.id = b.pack WHERE b.id = ?1
                 UNION ALL
                 SELECT p.name, b.offset, b.stored_len, b.raw_len, b.kind, b.compression
                   FROM blobs b JOIN packs p ON p.id = b.pack WHERE b.id = ?1
                 LIMIT 1",
            )?
            .query_row([&id.0[..]], loc_row)
            .optional()
        })?;
        let Some((pack, offset, stored, raw, kind, comp)) = row else {
            return Ok(None);
        };
        let pack = self.id_of(&pack)?;
        self.loc(id, PackId(pack), offset, stored, raw, kind, comp)
            .map(Some)
    }

    /// Checks a blob row's values.
    #[allow(clippy::too_many_arguments)]
    fn loc(
        &self,
        id: &Id,
        pack: PackId,
        offset: i64,
        stored: i64,
        raw: i64,
        kind: u8,
        comp: u8,
    ) -> Result<BlobLoc> {
        let bad = |d: &str| Error::Index {
            path: self.path.clone(),
            detail: format!("row for blob {id} is invalid ({d}); run `snap repair index`"),
        };
        Ok(BlobLoc {
            pack,
            offset: u64::try_from(offset).map_err(|_| bad("offset"))?,
            stored_len: u32::try_from(stored).map_err(|_| bad("stored length"))?,
            raw_len: u32::try_from(raw).map_err(|_| bad("raw length"))?,
            kind: BlobKind::from_u8(kind).ok_or_else(|| bad("kind"))?,
            compression: Compression::from_u8(comp).ok_or_else(|| bad("compression"))?,
        })
    }

    /// Whether blob `id` is stored, answered from the id filter when it is surely not
    /// (a new chunk's lookup, most of a backup's, then walks no B-tree). Rows another
    /// process added since this one last wrote or renewed may be missed, as by
    /// [`Index::contains`]: the caller stores the blob again, which is safe.
    pub fn may_contain(&self, id: &Id) -> Result<bool> {
        if self.filter_excludes(id)? {
            return Ok(false);
        }
        self.contains(id)
    }

    /// Whether the id filter, as of this process's last write or renewal, says `id` is
    /// surely absent; read again first if it is older.
    fn filter_excludes(&self, id: &Id) -> Result<bool> {
        let writes = self.writes.load(Ordering::Acquire);
        let excludes = |f: &(u64, Option<IdFilter>)| {
            (f.0 == writes).then(|| f.1.as_ref().is_some_and(|f| !f.may_contain(id)))
        };
        let read = self.filter.read().unwrap_or_else(PoisonError::into_inner);
        if let Some(answer) = excludes(&read) {
            return Ok(answer);
        }
        drop(read);
        let mut slot = self.filter.write().unwrap_or_else(PoisonError::into_inner);
        if slot.0 != writes {
            *slot = (writes, self.read(load_filter)?);
        }
        Ok(excludes(&slot).unwrap_or(false))
    }

    /// Whether blob `id` is stored.
    pub fn contains(&self, id: &Id) -> Result<bool> {
        self.read(|c| {
            c.prepare_cached(
                "SELECT 1 FROM fresh WHERE id = ?1 UNION ALL SELECT 1 FROM blobs WHERE id = ?1
                 LIMIT 1",
            )?
            .exists([&id.0[..]])
        })
    }

    /// Records a snapshot (idempotent).
    pub fn add_snapshot(&self, id: &SnapshotId, snap: &Snapshot, record: &[u8]) -> Result<()> {
        self.tx(|c| {
            c.execute(
                "INSERT OR IGNORE INTO snapshots VALUES (?1, ?2, ?3)",
                params![id.bytes(), snap.time.to_rfc3339(), record],
            )?;
            Ok(())
        })
    }

    /// Records that the cache's snapshots matched the repository's snapshot records
    /// while it had counted `removals` (see [`Index::removals`]).
    pub fn set_snapshots_listed(&self, removals: i64) -> Result<()> {
        self.tx(|c| {
            c.execute(
                "INSERT OR REPLACE INTO meta VALUES ('snapshots_listed', ?1)",
                [removals.to_string()],
            )
            .map(drop)
        })
    }

    /// Whether the cache's snapshots matched the repository's snapshot records once,
    /// and no blob row has left the cache since ([`Index::set_snapshots_listed`]).
    pub fn snapshots_listed(&self) -> Result<bool> {
        self.read(|c| {
            let listed = meta_text(c, "snapshots_listed")?;
            let removals: i64 = c.query_row(REMOVALS, [], |r| r.get(0))?;
            Ok(listed.is_some_and(|v| v == removals.to_string()))
        })
    }

    /// Forgets a snapshot whose file is gone.
    pub fn remove_snapshot(&self, id: &SnapshotId) -> Result<()> {
        self.tx(|c| {
            c.execute("DELETE FROM snapshots WHERE id = ?1", [id.bytes()])
                .map(drop)
        })
    }

    /// All snapshots, oldest first, with their records as stored.
    pub fn snapshots(&self) -> Result<Vec<(SnapshotId, Vec<u8>)>> {
        let rows = self.rows(
            "SELECT id, record FROM snapshots ORDER BY time, id",
            [],
            |r| Ok((r.get::<_, Vec<u8>>(0)?, r.get::<_, Vec<u8>>(1)?)),
        )?;
        Ok(rows
            .into_iter()
            .filter_map(|(id, rec)| Some((SnapshotId(Id::from_slice(&id)?), rec)))
            .collect())
    }

    /// Every row `sql` returns, each read by `f`.
    fn rows<T>(
        &self,
        sql: &str,
        params: impl rusqlite::Params,
        f: impl FnMut(&rusqlite::Row<'_>) -> rusqlite::Result<T>,
    ) -> Result<Vec<T>> {
        let c = self.conn();
        let mut st = c.prepare_cached(sql).map_err(|e| self.err(e))?;
        let rows = st.query_map(params, f).map_err(|e| self.err(e))?;
        rows.collect::<rusqlite::Result<Vec<T>>>()
            .map_err(|e| self.err(e))
    }
}

/// Marks, pack usage and pack replacement, for `prune` and `check`.
impl Index {
    /// Removes every mark.
    pub fn clear_marks(&self) -> Result<()> {
        self.conn()
            .execute("DELETE FROM temp.marks", [])
            .map(drop)
            .map_err(|e| self.err(e))
    }

    /// Marks `ids`; returns, for each, whether it was not marked before.
    pub fn mark(&self, ids: &[Id]) -> Result<Vec<bool>> {
        let mut c = self.conn();
        let tx = c.transaction().map_err(|e| self.err(e))?;
        let fresh = {
            let mut st = tx
                .prepare_cached("INSERT OR IGNORE INTO temp.marks VALUES (?1)")
                .map_err(|e| self.err(e))?;
            ids.iter()
                .map(|id| st.execute([&id.0[..]]).map(|n| n == 1))
                .collect::<rusqlite::Result<Vec<bool>>>()
                .map_err(|e| self.err(e))?
        };
        tx.commit().map_err(|e| self.err(e))?;
        Ok(fresh)
    }

    /// Marked ids the index has no row for.
    pub fn marked_but_absent(&self) -> Result<Vec<Id>> {
        self.ids(
            "SELECT id FROM temp.marks m WHERE NOT EXISTS (SELECT 1 FROM fresh WHERE id = m.id)
                AND NOT EXISTS (SELECT 1 FROM blobs WHERE id = m.id)",
        )
    }

    /// Every pack with the share of it that marked blobs use.
    pub fn pack_usage(&self) -> Result<Vec<PackUsage>> {
        let rows = self.rows(
            "SELECT p.name, p.size, coalesce(sum(u.live), 0), coalesce(sum(u.bytes), 0)
               FROM packs p LEFT JOIN (
                    SELECT b.pack, count(m.id) AS live, sum(b.stored_len) AS bytes
                      FROM blobs b JOIN temp.marks m ON m.id = b.id GROUP BY b.pack
                    UNION ALL
                    SELECT b.pack, count(m.id), sum(b.stored_len)
                      FROM fresh b JOIN temp.marks m ON m.id = b.id GROUP BY b.pack
               ) u ON u.pack = p.id
              GROUP BY p.id ORDER BY p.name",
            [],
            |r| {
                Ok((
                    r.get::<_, Vec<u8>>(0)?,
                    r.get::<_, i64>(1)?,
                    r.get::<_, i64>(2)?,
                    r.get::<_, i64>(3)?,
                ))
            },
        )?;
        rows.into_iter()
            .map(|(name, size, live, bytes)| {
                Ok(PackUsage {
                    name: PackId(self.id_of(&name)?),
                    size: size as u64,
                    live_blobs: live as u64,
                    live_bytes: bytes as u64,
                })
            })
            .collect()
    }

    /// The ids a one-column query returns.
    fn ids<T: From<Id>, C: FromIterator<T>>(&self, sql: &str) -> Result<C> {
        self.rows(sql, [], |r| r.get::<_, Vec<u8>>(0))?
            .iter()
            .map(|b| self.id_of(b).map(T::from))
            .collect()
    }

    /// An id read from the index (a pack name or blob id).
    fn id_of(&self, b: &[u8]) -> Result<Id> {
        Id::from_slice(b).ok_or_else(|| Error::Index {
            path: self.path.clone(),
            detail: "an id is not 32 bytes; run `snap repair index`".into(),
        })
    }

    /// The blobs the index places in `pack` (marked ones only if `marked`), in pack order.
    pub fn blobs_in(&self, pack: &PackId, marked: bool) -> Result<Vec<(Id, BlobLoc)>> {
        let marks = if marked {
            "JOIN temp.marks m ON m.id = b.id"
        } else {
            ""
        };
        let of = |table: &str| {
            format!(
                "SELECT b.id, b.offset, b.stored_len, b.raw_len, b.kind, b.compression
                   FROM {table} b {marks}
                  WHERE b.pack = (SELECT id FROM packs WHERE name = ?1)"
            )
        };
        let sql = format!("{} UNION ALL {} ORDER BY 2", of("blobs"), of("fresh"));
        let rows = self.rows(&sql, [pack.bytes()], loc_row)?;
        rows.into_iter()
            .map(|(id, offset, stored, raw, kind, comp)| {
                let id = self.id_of(&id)?;
                Ok((id, self.loc(&id, *pack, offset, stored, raw, kind, comp)?))
            })
            .collect()
    }

    /// Replaces packs and the index files listing them in one transaction: the rows
    /// of `removed` packs and `old_files` go, `added` packs (durable, listed by the
    /// durable `new_files`) come in. A crash leaves either the old rows or the new ones.
    pub fn replace_packs(
        &self,
        removed: &[PackId],
        added: &[PackRecord],
        old_files: &[IndexFileId],
        new_files: &[IndexFileId],
    ) -> Result<()> {
        self.tx(|c| {
            {
                let mut del_pack = c.prepare_cached("DELETE FROM packs WHERE name = ?1")?;
                let mut unsettled = 0;
                for p in removed {
                    for table in BLOB_TABLES {
                        let n = c
                            .prepare_cached(&format!(
                                "DELETE FROM {table} WHERE pack = (SELECT id FROM packs WHERE name = ?1)"
                            ))?
                            .execute([p.bytes()])?;
                        if table == "blobs" {
                            unsettled += n as i64;
                        }
                    }
                    del_pack.execute([p.bytes()])?;
                }
                settle(c, -unsettled)?;
                let mut del_file = c.prepare_cached("DELETE FROM index_files WHERE name = ?1")?;
                for f in old_files {
                    del_file.execute([f.bytes()])?;
                }
                let mut add_file =
                    c.prepare_cached("INSERT OR IGNORE INTO index_files VALUES (?1)")?;
                for f in new_files {
                    add_file.execute([f.bytes()])?;
                }
            }
            if !removed.is_empty() {
                count_removal(c)?;
            }
            insert_packs(c, added, Upkeep::Add)
        })
    }

    /// The bytes of every indexed pack together.
    pub fn pack_bytes(&self) -> Result<u64> {
        let bytes = self.read(|c| {
            c.query_row("SELECT coalesce(sum(size), 0) FROM packs", [], |r| {
                r.get::<_, i64>(0)
            })
        })?;
        Ok(bytes.unsigned_abs())
    }

    /// The names of every indexed pack.
    pub fn pack_names(&self) -> Result<HashSet<PackId>> {
        self.ids("SELECT name FROM packs")
    }

    /// Every indexed pack and its size, those `check` read whole longest ago (or
    /// never) first.
    pub fn packs_by_verification(&self) -> Result<Vec<(PackId, u64)>> {
        let rows = self.rows(
            "SELECT name, size FROM packs ORDER BY verified NULLS FIRST, name",
            [],
            |r| Ok((r.get::<_, Vec<u8>>(0)?, r.get::<_, i64>(1)?)),
        )?;
        rows.into_iter()
            .map(|(name, size)| Ok((PackId(self.id_of(&name)?), size as u64)))
            .collect()
    }

    /// Repository totals: packs, their bytes, blobs, the blobs' raw and stored bytes.
    pub fn totals(&self) -> Result<Totals> {
        let ((packs, pack_bytes), (blobs, raw, stored)) = self.read(|c| {
            let packs = c.query_row(
                "SELECT count(*), coalesce(sum(size), 0) FROM packs",
                [],
                |r| Ok((r.get::<_, i64>(0)?, r.get::<_, i64>(1)?)),
            )?;
            let blobs = c.query_row(
                "SELECT count(*), coalesce(sum(raw_len), 0), coalesce(sum(stored_len), 0)
                   FROM (SELECT raw_len, stored_len FROM blobs
                         UNION ALL SELECT raw_len, stored_len FROM fresh)",
                [],
                |r| {
                    Ok((
                        r.get::<_, i64>(0)?,
                        r.get::<_, i64>(1)?,
                        r.get::<_, i64>(2)?,
                    ))
                },
            )?;
            Ok((packs, blobs))
        })?;
        Ok(Totals {
            packs: packs as u64,
            pack_bytes: pack_bytes as u64,
            blobs: blobs as u64,
            raw_bytes: raw as u64,
            stored_bytes: stored as u64,
        })
    }

    /// Records that `check` read `pack` whole and found it intact.
    pub fn set_verified(&self, pack: &PackId, at: i64) -> Result<()> {
        self.tx(|c| {
            c.execute(
                "UPDATE packs SET verified = ?2 WHERE name = ?1",
                params![pack.bytes(), at],
            )
            .map(drop)
        })
    }
}

/// A blob location row as selected by `lookup` and `blobs_in`: an id (the pack's or
/// the blob's), offset, stored and raw lengths, kind, compression.
type LocRow = (Vec<u8>, i64, i64, i64, u8, u8);

fn loc_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<LocRow> {
    Ok((
        r.get(0)?,
        r.get(1)?,
        r.get(2)?,
        r.get(3)?,
        r.get(4)?,
        r.get(5)?,
    ))
}

/// Adds `packs` and their blobs (packs the cache already holds are skipped; a blob
/// indexed in another pack keeps its row; a copy recorded as damaged is left out) to
/// `fresh`, then merges `fresh` into `blobs` if it has grown enough (see
/// [`blob_table`]). Blob rows go in in id order: ids are random, so in pack order every
/// row would land on a random page of the tree, evicting the page cache once it
/// outgrows SQLite's small cache; in id order one sweep visits each page once.
fn insert_packs(
    c: &rusqlite::Transaction<'_>,
    packs: &[PackRecord],
    upkeep: Upkeep,
) -> rusqlite::Result<()> {
    let mut damaged = c.prepare_cached("SELECT offset FROM damaged WHERE pack = ?1")?;
    let mut rows: Vec<(i64, &PackEntry)> = Vec::new();
    for PackRecord {
        id: name,
        size,
        entries,
    } in packs
    {
        let bad: HashSet<i64> = damaged
            .query_map([name.bytes()], |r| r.get(0))?
            .collect::<rusqlite::Result<_>>()?;
        let inserted = c.execute(
            "INSERT OR IGNORE INTO packs (name, size, blobs) VALUES (?1, ?2, ?3)",
            params![name.bytes(), *size as i64, entries.len() as i64],
        )?;
        // Zero when another index file lists the pack too: its blobs are in already.
        if inserted == 1 {
            let pack = c.last_insert_rowid();
            rows.extend(
                entries
                    .iter()
                    .filter(|e| !bad.contains(&(e.offset as i64)))
                    .map(|e| (pack, e)),
            );
        }
    }
    rows.sort_unstable_by_key(|(_, e)| e.id);
    let mut ids = Vec::with_capacity(rows.len());
    // An id is in at most one of the tables: a lookup stops at the first row it finds.
    let mut st = c.prepare_cached(
        "INSERT OR IGNORE INTO fresh SELECT ?1, ?2, ?3, ?4, ?5, ?6, ?7
          WHERE NOT EXISTS (SELECT 1 FROM blobs WHERE id = ?1)",
    )?;
    for (pack, e) in rows {
        let added = st.execute(params![
            &e.id.0[..],
            pack,
            e.offset as i64,
            i64::from(e.stored_len),
            i64::from(e.raw_len),
            e.kind as u8,
            e.compression as u8
        ])?;
        if added > 0 {
            ids.push(e.id);
        }
    }
    if !ids.is_empty() {
        match upkeep {
            Upkeep::Add => filter_add(c, &ids)?,
            Upkeep::Drop => {
                c.execute("DELETE FROM id_filter", [])?;
            }
        }
        merge_step(c)?;
    }
    Ok(())
}

/// How a transaction that adds blob rows keeps the id filter.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Upkeep {
    /// Adds their ids to it.
    Add,
    /// Deletes it, for [`Index::ensure_filter`] to make once after many such
    /// transactions: adding a file's ids reads and writes most of the filter (about
    /// 12 ms at a million ids), making it anew reads every id once (about 0.2 s).
    Drop,
}

impl Upkeep {
    /// How to keep the filter while `files` index files are added one by one.
    pub fn for_files(files: usize) -> Upkeep {
        if files >= 16 {
            Upkeep::Drop
        } else {
            Upkeep::Add
        }
    }
}

/// The id filter as stored, if there is a whole one.
fn load_filter(c: &Connection) -> rusqlite::Result<Option<IdFilter>> {
    let mut st = c.prepare_cached("SELECT block, bits FROM id_filter ORDER BY block")?;
    let mut rows = st.query([])?;
    let mut bits = Vec::new();
    while let Some(r) = rows.next()? {
        if r.get::<_, i64>(0)? != bits.len() as i64 {
            return Ok(None);
        }
        bits.push(r.get::<_, Vec<u8>>(1)?);
    }
    let count = u64::try_from(meta_number(c, "filter_ids")?).unwrap_or(0);
    Ok(IdFilter::from_blocks(&bits, count))
}

/// Writes `blocks` of `f` and its count.
fn store_filter(
    c: &rusqlite::Transaction<'_>,
    f: &IdFilter,
    blocks: impl IntoIterator<Item = usize>,
) -> rusqlite::Result<()> {
    let mut st = c.prepare_cached("INSERT OR REPLACE INTO id_filter VALUES (?1, ?2)")?;
    for b in blocks {
        st.execute(params![b as i64, f.block(b)])?;
    }
    c.execute(
        "INSERT OR REPLACE INTO meta VALUES ('filter_ids', ?1)",
        [f.count().to_string()],
    )
    .map(drop)
}

/// Makes the id filter anew from every id in `blobs` and `fresh`, sized for them.
fn build_filter(c: &rusqlite::Transaction<'_>) -> rusqlite::Result<()> {
    // `settled` is kept equal to the rows of `blobs`: no count of the large table.
    let fresh: i64 = c.query_row("SELECT count(*) FROM fresh", [], |r| r.get(0))?;
    let n = meta_number(c, "settled")? + fresh;
    let mut f = IdFilter::sized_for(u64::try_from(n).unwrap_or(0));
    {
        // Every block is stored below; which ones changed does not matter here.
        let mut changed = Changed::default();
        let mut st = c.prepare("SELECT id FROM blobs UNION ALL SELECT id FROM fresh")?;
        let mut rows = st.query([])?;
        while let Some(r) = rows.next()? {
            if let Some(id) = Id::from_slice(&r.get::<_, Vec<u8>>(0)?) {
                f.insert(&id, &mut changed);
            }
        }
    }
    c.execute("DELETE FROM id_filter", [])?;
    store_filter(c, &f, 0..f.blocks())
}

/// Adds `ids`, just added to `blobs` or `fresh`, to the id filter, in their
/// transaction: the filter is made anew when there is none (or none whole) or it is full.
fn filter_add(c: &rusqlite::Transaction<'_>, ids: &[Id]) -> rusqlite::Result<()> {
    if ids.is_empty() {
        return Ok(());
    }
    let Some(mut f) = load_filter(c)? else {
        return build_filter(c);
    };
    let mut changed = Changed::default();
    for id in ids {
        f.insert(id, &mut changed);
    }
    if f.is_full() {
        return build_filter(c);
    }
    store_filter(c, &f, changed.blocks())
}

/// The count of removals (see [`Index::removals`]): 0 until the first.
const REMOVALS: &str =
    "SELECT coalesce((SELECT CAST(value AS INTEGER) FROM meta WHERE key = 'removals'), 0)";

/// Adds one to the count of removals, in the transaction that removes blob rows (other
/// than moving them from `fresh` into `blobs`).
fn count_removal(c: &rusqlite::Transaction<'_>) -> rusqlite::Result<()> {
    c.execute(
        &format!("INSERT OR REPLACE INTO meta VALUES ('removals', ({REMOVALS}) + 1)"),
        [],
    )
    .map(drop)
}

/// A value kept in `meta`.
fn meta_text(c: &Connection, key: &str) -> rusqlite::Result<Option<String>> {
    c.query_row("SELECT value FROM meta WHERE key = ?1", [key], |r| r.get(0))
        .optional()
}

/// A number kept in `meta` (0 when absent).
fn meta_number(c: &Connection, key: &str) -> rusqlite::Result<i64> {
    Ok(meta_text(c, key)?.and_then(|v| v.parse().ok()).unwrap_or(0))
}

/// Adds `delta` to `settled`, the count of rows in `blobs` (kept rather than counted:
/// counting reads the whole table).
fn settle(c: &rusqlite::Transaction<'_>, delta: i64) -> rusqlite::Result<()> {
    if delta == 0 {
        return Ok(());
    }
    let settled = meta_number(c, "settled")? + delta;
    c.execute(
        "INSERT OR REPLACE INTO meta VALUES ('settled', ?1)",
        [settled.max(0).to_string()],
    )
    .map(drop)
}

/// Moves rows of `fresh` into `blobs` as new ones come, so that `fresh` stays at about
/// 1/[`MERGE_RATIO`] of `blobs`: once it holds more, the excess moves, as the next
/// stretch of ids after where the last move ended (`merged` in `meta`, a hex id; the
/// stretches wrap around at the end of the id space). A stretch of k rows of a `fresh`
/// of F covers k/F of the id space, so it rewrites that share of the leaves of `blobs`:
/// about [`MERGE_RATIO`] rows of `blobs` per row moved, however large `blobs` grows, and
/// spread over every transaction that adds rows instead of one rewrite of all of `blobs`
/// now and then.
fn merge_step(c: &rusqlite::Transaction<'_>) -> rusqlite::Result<()> {
    let fresh: i64 = c.query_row("SELECT count(*) FROM fresh", [], |r| r.get(0))?;
    let excess = fresh - MERGE_MIN_ROWS.max(meta_number(c, "settled")? / MERGE_RATIO);
    if excess <= 0 {
        return Ok(());
    }
    let from: Vec<u8> = meta_text(c, "merged")?
        .and_then(|h| hex::decode(h).ok())
        .unwrap_or_default();
    let to: Option<Vec<u8>> = c
        .query_row(
            "SELECT id FROM fresh WHERE id >= ?1 ORDER BY id LIMIT 1 OFFSET ?2",
            params![from, excess],
            |r| r.get(0),
        )
        .optional()?;
    let stretch = match &to {
        Some(_) => "id >= ?1 AND id < ?2",
        None => "id >= ?1 AND ?2 IS NULL",
    };
    let moved = c.execute(
        &format!("INSERT OR IGNORE INTO blobs SELECT * FROM fresh WHERE {stretch} ORDER BY id"),
        params![from, to],
    )?;
    c.execute(
        &format!("DELETE FROM fresh WHERE {stretch}"),
        params![from, to],
    )?;
    c.execute(
        "INSERT OR REPLACE INTO meta VALUES ('merged', ?1)",
        [hex::encode(to.unwrap_or_default())],
    )?;
    settle(c, moved as i64)
}

fn sql_err(path: &Path, e: rusqlite::Error) -> Error {
    Error::Index {
        path: path.to_path_buf(),
        detail: e.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn add_lookup_and_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("index.sqlite");
        let idx = Index::open(&path, "r1").unwrap().unwrap();
        let e = PackEntry {
            kind: BlobKind::Data,
            compression: Compression::Zstd,
            id: Id::hash(b"a"),
            offset: 16,
            stored_len: 10,
            raw_len: 20,
        };
        let pack = PackId(Id::hash(b"pack"));
        let file = IndexFileId(Id::hash(b"index file"));
        idx.ingest(
            &file,
            &[PackRecord {
                id: pack,
                size: 100,
                entries: vec![e],
            }],
            Upkeep::Add,
        )
        .unwrap();
        idx.ingest(
            &IndexFileId(Id::hash(b"another")),
            &[PackRecord {
                id: pack,
                size: 100,
                entries: vec![e],
            }],
            Upkeep::Add,
        )
        .unwrap();
        assert_eq!(idx.index_files().unwrap().len(), 2);
        let loc = idx.lookup(&e.id).unwrap().unwrap();
        assert_eq!(
            (loc.pack, loc.offset, loc.stored_len, loc.raw_len),
            (pack, 16, 10, 20)
        );
        assert!(idx.contains(&e.id).unwrap());
        assert!(!idx.contains(&Id::hash(b"b")).unwrap());
        drop(idx);
        assert!(Index::open(&path, "r1").unwrap().is_some());
        assert!(
            Index::open(&path, "other").unwrap().is_none(),
            "another repository's index is not used"
        );
    }

    /// Each worker thread reads through its own connection, inside a read transaction
    /// kept open between lookups: every write of this process must still show at once.
    #[test]
    fn worker_lookups_see_each_write() {
        use rayon::prelude::*;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("index.sqlite");
        let idx = Index::open(&path, "r1").unwrap().unwrap();
        let entry = |n: u32| PackEntry {
            kind: BlobKind::Data,
            compression: Compression::Raw,
            id: Id::hash(&n.to_le_bytes()),
            offset: u64::from(n),
            stored_len: 1,
            raw_len: 1,
        };
        let all_seen = |upto: u32| {
            (0..64u32).into_par_iter().all(|n| {
                let id = entry(n).id;
                idx.contains(&id).unwrap() == (n < upto)
                    && idx.may_contain(&id).unwrap() == (n < upto)
            })
        };
        assert!(all_seen(0));
        for round in 1..=4u32 {
            let file = IndexFileId(Id::hash(&round.to_le_bytes()));
            let pack = PackId(Id::hash(&[u8::try_from(round).unwrap(), 0xff]));
            let rows = (16 * (round - 1)..16 * round).map(entry).collect();
            idx.ingest(
                &file,
                &[PackRecord {
                    id: pack,
                    size: 100,
                    entries: rows,
                }],
                Upkeep::Add,
            )
            .unwrap();
            assert!(all_seen(16 * round), "after write {round}");
        }
        idx.clear().unwrap();
        assert!(all_seen(0), "after clear");
        drop(idx);
        assert!(
            !dir.path().join("index.sqlite-wal").exists(),
            "the WAL outlived the index"
        );
    }

    /// The id filter answers "absent" without the tables, so every way a row comes in
    /// adds its id: another process's index file, a damaged copy salvaged, a filter
    /// full and made again larger, a rebuild.
    #[test]
    fn the_id_filter_never_hides_a_stored_blob() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("index.sqlite");
        let a = Index::open(&path, "r1").unwrap().unwrap();
        let id = |n: u32| Id::hash(&n.to_le_bytes());
        let all_found = |idx: &Index, ids: std::ops::Range<u32>| {
            ids.into_iter().all(|n| idx.may_contain(&id(n)).unwrap())
        };
        a.ingest(
            &IndexFileId(id(1 << 30)),
            &[pack_of(1, 0..100)],
            Upkeep::Add,
        )
        .unwrap();
        assert!(all_found(&a, 0..100));
        // Another process adds rows; this one sees them once it renews (as after its lock).
        let b = Index::open(&path, "r1").unwrap().unwrap();
        assert!(all_found(&b, 0..100), "a second connection");
        b.ingest(
            &IndexFileId(id(1 << 31)),
            &[pack_of(2, 100..200)],
            Upkeep::Add,
        )
        .unwrap();
        a.renew();
        assert!(all_found(&a, 0..200), "rows another process added");
        assert!(!(1000..1100).all(|n| a.may_contain(&id(n)).unwrap()));
        // The filter is what answers: a row put in behind its back is not found.
        a.conn()
            .execute(
                "INSERT INTO fresh SELECT ?1, pack, offset, stored_len, raw_len, kind, compression
                   FROM fresh LIMIT 1",
                [&id(5000).0[..]],
            )
            .unwrap();
        a.renew();
        assert!(a.contains(&id(5000)).unwrap() && !a.may_contain(&id(5000)).unwrap());
        // A damaged copy is left out of a rebuild, and put back once it reads intact.
        let pack = pack_of(2, 100..200);
        a.record_damaged(&[(id(150), BlobLoc::in_pack(pack.id, &pack.entries[50]))])
            .unwrap();
        a.clear().unwrap();
        a.ingest(
            &IndexFileId(id(1 << 30)),
            &[pack_of(1, 0..100)],
            Upkeep::Add,
        )
        .unwrap();
        a.ingest(
            &IndexFileId(id(1 << 31)),
            std::slice::from_ref(&pack),
            Upkeep::Add,
        )
        .unwrap();
        assert!(!a.may_contain(&id(150)).unwrap(), "the damaged copy is in");
        a.undamage(&pack.id, &pack.entries[50]).unwrap();
        assert!(all_found(&a, 0..200), "after a salvaged copy");
        // Full: made again, larger, with every id.
        let before = a.read(load_filter).unwrap().unwrap().blocks();
        a.ingest(
            &IndexFileId(id(1 << 29)),
            &[pack_of(3, 200..120_000)],
            Upkeep::Add,
        )
        .unwrap();
        let after = a.read(load_filter).unwrap().unwrap();
        assert!(
            after.blocks() > before && !after.is_full(),
            "not made larger"
        );
        assert!(all_found(&a, 0..120_000), "after it was made larger");
        a.clear().unwrap();
        assert!(a.read(load_filter).unwrap().is_none(), "a rebuild kept it");
        a.ingest(&IndexFileId(id(1 << 28)), &[pack_of(4, 7..9)], Upkeep::Add)
            .unwrap();
        assert!(all_found(&a, 7..9) && !a.may_contain(&id(0)).unwrap());
        // Many files at once: the filter goes with the first rows added (so no reader
        // trusts one without them) and is made once at the end, whole.
        let files = 20u32;
        assert_eq!(Upkeep::for_files(files as usize), Upkeep::Drop);
        for f in 0..files {
            let ids = 10_000 + f * 100..10_000 + (f + 1) * 100;
            a.ingest(
                &IndexFileId(id(1 << 27 | f)),
                &[pack_of(5 + f, ids)],
                Upkeep::Drop,
            )
            .unwrap();
            a.renew();
            assert!(all_found(&a, 10_000..10_000 + (f + 1) * 100), "file {f}");
        }
        assert!(a.read(load_filter).unwrap().is_none());
        a.ensure_filter().unwrap();
        a.renew();
        let f = a.read(load_filter).unwrap().expect("no filter made");
        assert!((7..9).chain(10_000..12_000).all(|n| f.may_contain(&id(n))));
        assert!(!a.may_contain(&id(0)).unwrap());
    }

    fn pack_of(tag: u32, ids: std::ops::Range<u32>) -> PackRecord {
        PackRecord {
            id: PackId(Id::hash(&[&b"pack"[..], &tag.to_le_bytes()].concat())),
            size: 1 << 20,
            entries: ids
                .enumerate()
                .map(|(i, n)| PackEntry {
                    kind: BlobKind::Data,
                    compression: Compression::Raw,
                    id: Id::hash(&n.to_le_bytes()),
                    offset: i as u64 * 10,
                    stored_len: 10,
                    raw_len: 10,
                })
                .collect(),
        }
    }

    fn rows_in(idx: &Index, table: &str) -> i64 {
        idx.conn()
            .query_row(&format!("SELECT count(*) FROM {table}"), [], |r| r.get(0))
            .unwrap()
    }

    /// No blob row is in both tables, and `settled` counts the rows of `blobs`.
    fn assert_tables_agree(idx: &Index) {
        let both: i64 = idx
            .conn()
            .query_row(
                "SELECT count(*) FROM blobs JOIN fresh USING (id)",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(both, 0, "ids in both tables");
        let settled = meta_number(&idx.conn(), "settled").unwrap();
        assert_eq!(settled, rows_in(idx, "blobs"));
    }

    /// Every query answers alike for a blob in either table, and removals from either
    /// keep the count of `blobs` true.
    #[test]
    fn both_tables_answer() {
        let dir = tempfile::tempdir().unwrap();
        let idx = Index::open(&dir.path().join("index.sqlite"), "r1")
            .unwrap()
            .unwrap();
        let n = u32::try_from(MERGE_MIN_ROWS).unwrap();
        // Twice what `fresh` keeps: the lower half of the ids moves on into `blobs`.
        let old = pack_of(1, 0..2 * n);
        idx.ingest(
            &IndexFileId(Id::hash(b"f1")),
            std::slice::from_ref(&old),
            Upkeep::Add,
        )
        .unwrap();
        assert_eq!(
            (rows_in(&idx, "blobs"), rows_in(&idx, "fresh")),
            (n.into(), n.into())
        );
        assert_tables_agree(&idx);
        // A second copy of blob 2n - 1, and new blobs: only the new ones are added.
        let new = pack_of(2, 2 * n - 1..2 * n + 10);
        idx.ingest(
            &IndexFileId(Id::hash(b"f2")),
            std::slice::from_ref(&new),
            Upkeep::Add,
        )
        .unwrap();
        assert_eq!(idx.totals().unwrap().blobs, u64::from(2 * n) + 10);
        assert_tables_agree(&idx);
        let id = |k: u32| Id::hash(&k.to_le_bytes());
        for k in 0..2 * n + 10 {
            let pack = if k < 2 * n { old.id } else { new.id };
            assert_eq!(idx.lookup(&id(k)).unwrap().unwrap().pack, pack, "blob {k}");
            assert!(idx.contains(&id(k)).unwrap());
        }
        assert!(!idx.contains(&id(2 * n + 10)).unwrap());
        assert_eq!(idx.blobs_in(&old.id, false).unwrap().len(), 2 * n as usize);
        assert_eq!(idx.blobs_in(&new.id, false).unwrap().len(), 10);
        // Marks of blobs in both tables, and of one the index lacks.
        let (in_blobs, in_fresh): (Vec<u32>, Vec<u32>) = (0..2 * n).partition(|&k| {
            idx.conn()
                .query_row(
                    "SELECT count(*) FROM blobs WHERE id = ?1",
                    [&id(k).0[..]],
                    |r| r.get::<_, i64>(0),
                )
                .unwrap()
                == 1
        });
        let (a, b) = (in_blobs[5], in_fresh[5]);
        idx.mark(&[id(a), id(b), id(2 * n + 3), id(2 * n + 50)])
            .unwrap();
        assert_eq!(idx.marked_but_absent().unwrap(), vec![id(2 * n + 50)]);
        let usage: HashMap<PackId, (u64, u64)> = idx
            .pack_usage()
            .unwrap()
            .into_iter()
            .map(|u| (u.name, (u.live_blobs, u.live_bytes)))
            .collect();
        assert_eq!(usage[&old.id], (2, 20));
        assert_eq!(usage[&new.id], (1, 10));
        let marked = idx.blobs_in(&new.id, true).unwrap();
        assert_eq!(
            marked.iter().map(|(i, _)| *i).collect::<Vec<_>>(),
            [id(2 * n + 3)]
        );
        // Damage found in either table takes the row out.
        let damaged: Vec<(Id, BlobLoc)> = [id(a), id(b)]
            .into_iter()
            .map(|i| (i, idx.lookup(&i).unwrap().unwrap()))
            .collect();
        idx.record_damaged(&damaged).unwrap();
        assert!(!idx.contains(&id(a)).unwrap() && !idx.contains(&id(b)).unwrap());
        assert_tables_agree(&idx);
        // A pack replaced: its rows go from whichever table holds them.
        idx.replace_packs(&[old.id], &[], &[IndexFileId(Id::hash(b"f1"))], &[])
            .unwrap();
        assert_eq!(idx.totals().unwrap().blobs, 10);
        assert!(idx.contains(&id(2 * n + 9)).unwrap());
        assert_tables_agree(&idx);
        idx.clear().unwrap();
        assert_eq!(idx.totals().unwrap().blobs, 0);
    }

    /// New rows move on from `fresh` a stretch at a time, about as many as came: `fresh`
    /// stays at its share of `blobs`, no transaction rewrites all of `blobs`, and the
    /// stretches sweep the whole id space and wrap around.
    #[test]
    fn fresh_rows_move_on_in_stretches() {
        let dir = tempfile::tempdir().unwrap();
        let idx = Index::open(&dir.path().join("index.sqlite"), "r1")
            .unwrap()
            .unwrap();
        let batch = 4096u32;
        let mut wrapped = false;
        let mut last: Option<String> = None;
        for k in 0..48u32 {
            let before = rows_in(&idx, "blobs");
            let pack = pack_of(k, k * batch..(k + 1) * batch);
            idx.ingest(
                &IndexFileId(Id::hash(&k.to_le_bytes())),
                &[pack],
                Upkeep::Add,
            )
            .unwrap();
            let (settled, fresh) = (rows_in(&idx, "blobs"), rows_in(&idx, "fresh"));
            assert_eq!(settled + fresh, i64::from((k + 1) * batch));
            // At most this batch, and what the last stretch left when it ended short at
            // the end of the id space.
            assert!(
                settled - before <= i64::from(2 * batch),
                "batch {k} moved {} rows",
                settled - before
            );
            let keep = MERGE_MIN_ROWS.max(settled / MERGE_RATIO);
            assert!(fresh <= keep + i64::from(batch), "batch {k}: fresh {fresh}");
            assert_tables_agree(&idx);
            let merged = meta_text(&idx.conn(), "merged").unwrap();
            wrapped |= matches!((&last, &merged), (Some(a), Some(b)) if b < a);
            last = merged;
        }
        assert!(wrapped, "the stretches never wrapped around");
        assert!(rows_in(&idx, "fresh") < rows_in(&idx, "blobs") / 4);
    }

    /// A snapshot marked verified stays so until a blob row leaves the index, by any of
    /// the ways one can (damage found, a pack replaced, a rebuild); new rows and the
    /// merges they bring do not end it.
    #[test]
    fn removals_end_what_was_verified() {
        let dir = tempfile::tempdir().unwrap();
        let idx = Index::open(&dir.path().join("index.sqlite"), "r1")
            .unwrap()
            .unwrap();
        let (s1, s2) = (SnapshotId(Id::hash(b"s1")), SnapshotId(Id::hash(b"s2")));
        let mark = |s: &SnapshotId| idx.mark_verified(s, idx.removals().unwrap()).unwrap();
        let n = u32::try_from(MERGE_MIN_ROWS).unwrap();
        let (old, new) = (pack_of(1, 0..n), pack_of(2, n..2 * n));
        idx.ingest(
            &IndexFileId(Id::hash(b"f1")),
            std::slice::from_ref(&old),
            Upkeep::Add,
        )
        .unwrap();
        assert!(!idx.is_verified(&s1).unwrap(), "never marked");
        mark(&s1);
        assert!(idx.is_verified(&s1).unwrap());
        idx.ingest(
            &IndexFileId(Id::hash(b"f2")),
            std::slice::from_ref(&new),
            Upkeep::Add,
        )
        .unwrap();
        assert!(rows_in(&idx, "blobs") > 0, "no row moved on into `blobs`");
        assert!(idx.is_verified(&s1).unwrap(), "new rows ended it");
        let id = Id::hash(&5u32.to_le_bytes());
        let loc = idx.lookup(&id).unwrap().unwrap();
        idx.record_damaged(&[(id, loc)]).unwrap();
        assert!(
            !idx.is_verified(&s1).unwrap(),
            "damage found did not end it"
        );
        mark(&s1);
        idx.replace_packs(&[], &[pack_of(3, 3 * n..3 * n + 5)], &[], &[])
            .unwrap();
        assert!(idx.is_verified(&s1).unwrap(), "a pack added ended it");
        idx.replace_packs(&[new.id], &[], &[IndexFileId(Id::hash(b"f2"))], &[])
            .unwrap();
        assert!(
            !idx.is_verified(&s1).unwrap(),
            "a pack removed did not end it"
        );
        mark(&s2);
        assert_eq!(rows_in(&idx, "verified"), 1, "a stale record was kept");
        idx.clear().unwrap();
        assert!(!idx.is_verified(&s2).unwrap(), "a rebuild did not end it");
    }

    /// Caches of schema 5 to 7 are brought to 8 in place, keeping their rows.
    #[test]
    fn older_schemas_are_upgraded_in_place() {
        for version in ["5", "6", "7"] {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("index.sqlite");
            {
                let c = Connection::open(&path).unwrap();
                c.execute_batch(SCHEMA).unwrap();
                c.execute_batch(&blob_table("blobs")).unwrap();
                if version != "5" {
                    c.execute_batch(&blob_table("fresh")).unwrap();
                }
                if version == "7" {
                    c.execute_batch(VERIFIED_TABLE).unwrap();
                    c.execute_batch("INSERT INTO meta VALUES ('settled', '1')")
                        .unwrap();
                }
                c.execute(
                    "INSERT INTO meta VALUES ('schema', ?1), ('repo', 'r1')",
                    [version],
                )
                .unwrap();
                c.execute_batch("INSERT INTO packs VALUES (1, x'00', 10, 1, NULL)")
                    .unwrap();
                c.execute(
                    "INSERT INTO blobs VALUES (?1, 1, 0, 10, 10, 1, 0)",
                    [&Id::hash(b"x").0[..]],
                )
                .unwrap();
            }
            let idx = Index::open(&path, "r1").unwrap().unwrap();
            assert!(idx.contains(&Id::hash(b"x")).unwrap(), "schema {version}");
            assert!(
                idx.read(load_filter).unwrap().is_some()
                    && idx.may_contain(&Id::hash(b"x")).unwrap(),
                "schema {version}: no id filter"
            );
            assert_tables_agree(&idx);
            let pack = pack_of(1, 0..3);
            idx.ingest(&IndexFileId(Id::hash(b"f")), &[pack], Upkeep::Add)
                .unwrap();
            assert_eq!(rows_in(&idx, "fresh"), 3);
            let s = SnapshotId(Id::hash(b"s"));
            idx.mark_verified(&s, idx.removals().unwrap()).unwrap();
            drop(idx);
            let idx = Index::open(&path, "r1").unwrap().unwrap();
            assert_eq!(idx.totals().unwrap().blobs, 4);
            assert!(idx.is_verified(&s).unwrap(), "schema {version}");
        }
    }
}
