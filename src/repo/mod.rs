//! A repository: layout, config, index cache, and the commit protocol for new packs,
//! index files and snapshots. Its files live in a [`Store`] (a local directory, SFTP
//! or S3); the SQLite index is a local cache of the index files. [`Repository`] is
//! one handle whose methods live by job: opening, refreshing and the store's files
//! here; reading blobs in `blobs`, trees and contents in `content`, snapshot records
//! in `snapshots`, drill records in `drills`; writing in `saver`, `persist`, `repack`
//! and `journal`. The SQLite
//! [`index`] caches the index files; [`reach`] marks what the snapshots reference.
//!
//! ```text
//! config                 JSON, written once by init
//! keys/<16 hex>.json     encrypted repositories: the master key per passphrase
//! packs/<2 hex>/<id>     immutable pack files, named by the BLAKE3 of their bytes
//! index/<id>             immutable index files: the packs and their blobs
//! snapshots/<id>         immutable snapshot records, named by their BLAKE3
//! drills/<id>            immutable drill records (proofs of restore), by their BLAKE3
//! locks/<random>.json    one per running process
//! tmp/                   files being written (local and SFTP repositories)
//! ```
//! Write order (a crash at any point leaves only complete snapshots visible): packs,
//! durable; then the index file listing them; the snapshot record last. Anything
//! unreferenced is garbage for prune, never damage.

mod blobs;
mod config;
mod content;
mod drills;
mod id_filter;
pub mod index;
mod index_files;
mod journal;
pub mod keys;
mod lock;
mod lookup;
mod meta_cache;
mod persist;
pub mod reach;
pub mod remembered;
mod repack;
mod saver;
mod snapshots;
pub mod wal;

use std::collections::HashSet;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use chrono::Utc;
use rayon::prelude::*;

pub(crate) use self::blobs::reads;
pub use self::config::{Config, ConfigFile, VERSION, VERSION_ENCRYPTED, VERSION_KEYED_CHUNKER};
pub use self::index_files::BLOBS_PER_FILE as INDEX_FILE_BLOBS;
pub use self::journal::Resumed;
pub use self::lock::{release_shared, Lock};
pub use crate::format::pack::PackRecord;
// Decoders of files from the store, for the fuzz targets only.
#[doc(hidden)]
pub use self::index_files::{decode as decode_index_file, encode as encode_index_file};
#[doc(hidden)]
pub use self::lock::LockInfo;
pub use self::lookup::PathLookup;
pub use self::repack::Repacker;
pub use self::saver::{Added, Saver};
use crate::error::{Error, IoContext, Refusal, Result, Usage};
use crate::format::chunker::{ChunkParams, Gear, Profiles};
use crate::format::compress;
use crate::format::crypto::{Kdf, MasterKey};
use crate::format::id::{Id, IndexFileId, PackId, SnapshotId};
use crate::format::pack;
use crate::format::snapshot::Snapshot;
use crate::host::hostname;
use crate::locked;
use crate::repo::index::{Index, Upkeep};
use crate::store::{Entry, Local, Store};

const INDEX_FILE: &str = "index.sqlite";

/// Threads reading a remote repository at once ([`Repository::reading`]).
pub const REMOTE_READS: usize = 8;

/// Options of a new repository.
#[derive(Clone, Debug)]
pub struct InitOptions {
    /// Chunk sizes per profile.
    pub chunking: Profiles,
    /// Default zstd level.
    pub compression_level: i32,
    /// Pack size target.
    pub pack_size: u64,
}

impl Default for InitOptions {
    fn default() -> Self {
        InitOptions {
            chunking: Profiles::default(),
            compression_level: compress::DEFAULT_LEVEL,
            pack_size: pack::DEFAULT_TARGET_SIZE,
        }
    }
}

/// An open repository.
pub struct Repository {
    store: Arc<dyn Store>,
    /// This client's directory for the repository (see [`cache_dir`]): the index
    /// cache, journals, and `tmp/` for packs being written to a remote store.
    cache: PathBuf,
    config: Config,
    index: Index,
    /// The master key of an encrypted repository.
    key: Option<MasterKey>,
    /// The chunker's gear table: keyed in version 3, else the public one.
    gear: Gear,
    /// Locks this handle holds now.
    held: Arc<AtomicUsize>,
    /// How long taking a lock waits for a conflicting holder (zero: not at all).
    lock_wait: std::time::Duration,
    /// `--no-lock`: read without a lock, refuse to write.
    no_lock: bool,
    /// Whether the cache's last refresh listed `snapshots/` too (one by
    /// [`Repository::lock_for_backup`] may not).
    fresh: AtomicBool,
    /// Snapshot records the last listing of `snapshots/` could not read.
    unreadable: AtomicUsize,
    /// Copies of a remote repository's trees and chunk lists.
    meta_cache: meta_cache::MetaCache,
    /// The key file this handle was opened with from what the host remembered
    /// ([`remembered`]), until a listing of `keys/` shows it still there.
    unproven_key: Mutex<Option<remembered::Remembered>>,
}

/// What [`Repository::refresh_as`] lists, and how.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Refresh {
    /// Each directory by its own prefix, complete whatever order the store lists
    /// names in, as a holder of an exclusive lock must: it deletes packs no listed
    /// index file names.
    Whole,
    /// `index/` and `keys/` from one listing where the store can
    /// ([`Store::list_dirs`]), whose first page holds the index files the cache holds
    /// and a margin (a whole page when it holds none: a new cache, which reads every
    /// index file anyway).
    Shared,
    /// As `Shared`, but `snapshots/` only when a backup needs it (see
    /// [`Repository::lock_for_backup`]).
    Backup,
}

/// Reads the config file of the repository in `store`, not yet opened.
fn read_config(store: &dyn Store) -> Result<Vec<u8>> {
    match store.read("config", config::MAX_LEN) {
        // Snapshots without a config: a repository that lost its config file, which
        // `init` would not make again (it refuses a directory that is not empty).
        Err(Error::NotFound { .. })
            if listed_names(store, "snapshots").is_ok_and(|s| !s.is_empty()) =>
        {
            Err(Error::corrupt(
                "repository",
                "config",
                format!("{} holds snapshots but no config file", store.location()),
            ))
        }
        Err(Error::NotFound { .. }) => Err(Error::NoRepository {
            location: store.location(),
        }),
        Err(Error::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotADirectory => {
            Err(Error::NotADirectory {
                location: store.location(),
            })
        }
        r => r,
    }
}

/// A repository's config as read before its key is at hand ([`Repository::probe`]).
pub struct Probe {
    file: ConfigFile,
    bytes: Vec<u8>,
}

impl Probe {
    /// The config file `bytes`, parsed.
    pub fn decode(bytes: &[u8]) -> Result<Probe> {
        Ok(Probe {
            file: ConfigFile::decode(bytes)?,
            bytes: bytes.to_vec(),
        })
    }

    /// Whether the repository is encrypted (then it opens only with its key).
    pub fn encrypted(&self) -> bool {
        matches!(self.file, ConfigFile::Sealed { .. })
    }

    /// The repository's id.
    pub fn id(&self) -> &str {
        match &self.file {
            ConfigFile::Plain(c) => &c.id,
            ConfigFile::Sealed { id, .. } => id,
        }
    }

    /// The config file as read.
    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// The config, opened with the master key of an encrypted repository (checked).
    pub fn config(self, key: Option<&MasterKey>) -> Result<Config> {
        self.file.open(key)
    }
}

/// The cache root a caller chose (`--cache-dir`), over the environment's.
static CACHE_ROOT: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();

/// Sets where index caches live for the rest of the process; the first call wins.
/// The library reads no environment: the CLI sets this from `--cache-dir`,
/// `SNAP_CACHE_DIR`, `XDG_CACHE_HOME` or `HOME`.
pub fn set_cache_root(dir: PathBuf) {
    let _ = CACHE_ROOT.set(dir);
}

/// The root of this host's caches ([`set_cache_root`]).
fn cache_root() -> Result<PathBuf> {
    Ok(CACHE_ROOT
        .get()
        .cloned()
        .or_else(|| cfg!(test).then(|| std::env::temp_dir().join("snap-unit-test-cache")))
        .ok_or(Usage::NoCacheDir)?)
}

/// Where the index cache of a repository lives, for every kind of store: the root set
/// by [`set_cache_root`], then the repository id and a hash of the repository's
/// location (a synced copy has the same id and its own cache). It belongs to the
/// client: SQLite's WAL works only on a local file system, so several hosts sharing one
/// repository (on NFS, SFTP or S3) each keep their own.
fn cache_dir(store: &dyn Store, repo_id: &str) -> Result<PathBuf> {
    let base = cache_root()?;
    let location = match store.local_root() {
        Some(root) => fs::canonicalize(root).at(root)?.display().to_string(),
        None => store.location(),
    };
    let dir = base
        .join(repo_id)
        .join(&Id::hash(location.as_bytes()).to_hex()[..16]);
    fs::create_dir_all(dir.join("tmp")).at(&dir)?;
    Ok(dir)
}

/// Where this host remembers the key file that last opened the repository `repo_id`
/// in `store` (its id, no secret): `key-hint` in its cache directory.
pub fn key_hint(store: &dyn Store, repo_id: &str) -> Result<PathBuf> {
    Ok(cache_dir(store, repo_id)?.join("key-hint"))
}

impl Repository {
    /// The repository's WAL archive.
    pub fn wal(&self) -> wal::WalArchive<'_> {
        wal::WalArchive::new(
            self.store.as_ref(),
            self.key.as_ref(),
            self.config.compression_level,
        )
    }
}

/// Opens the index cache in `cache`, replacing one of another schema or repository,
/// or one SQLite finds damaged (it is this host's copy of the index files, made again
/// from them).
fn open_index(cache: &Path, repo_id: &str) -> Result<Index> {
    let path = cache.join(INDEX_FILE);
    match Index::open(&path, repo_id) {
        Ok(Some(i)) => return Ok(i),
        Ok(None) => log::warn!(
            "index {} belongs to another repository or version; rebuilding it",
            path.display()
        ),
        // SQLite's words for a file it cannot read as a database (SQLITE_CORRUPT,
        // SQLITE_NOTADB), unchanged for decades.
        Err(Error::Index { detail, .. })
            if detail.contains("malformed") || detail.contains("not a database") =>
        {
            log::warn!(
                "this host's index cache {} is damaged ({detail}); rebuilding it from the repository's index files",
                path.display()
            );
        }
        Err(e) => return Err(e),
    }
    for suffix in ["", "-wal", "-shm"] {
        let p = cache.join(format!("{INDEX_FILE}{suffix}"));
        match fs::remove_file(&p) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e).at(&p),
            _ => {}
        }
    }
    Index::open(&path, repo_id)?
        .ok_or_else(|| Error::internal(format!("cannot create index {}", path.display()), None))
}

/// Checks, changing nothing, that a repository could be made in `store`: it holds no
/// repository yet, and a local directory is absent or empty (or holds only what an
/// interrupted `init` or sync left, see [`only_skeleton`]).
pub(crate) fn check_empty(store: &dyn Store) -> Result<()> {
    if let Some(root) = store.local_root() {
        if root.exists() && !root.is_dir() {
            return Err(Refusal::InitOnFile {
                path: root.to_path_buf(),
            }
            .into());
        }
    }
    if store.size("config")?.is_some() {
        return Err(Refusal::AlreadyRepository {
            location: store.location(),
        }
        .into());
    }
    if let Some(root) = store.local_root() {
        if root.exists() && !only_skeleton(root, root)? {
            return Err(Refusal::NotEmpty {
                path: root.to_path_buf(),
            }
            .into());
        }
    }
    Ok(())
}

/// Checks that `store` holds no repository yet; a local directory must be absent or
/// empty, and gets the repository's directories.
fn prepare_empty(store: &dyn Store) -> Result<()> {
    check_empty(store)?;
    if let Some(root) = store.local_root() {
        for d in ["packs", "index", "snapshots", "locks", "tmp"] {
            fs::create_dir_all(root.join(d)).at(root.join(d))?;
        }
        // Every pack directory, durable before any pack goes in.
        let packs = root.join("packs");
        for b in 0..=u8::MAX {
            let d = packs.join(format!("{b:02x}"));
            fs::create_dir_all(&d).at(&d)?;
        }
        fs::File::open(&packs)
            .and_then(|d| d.sync_all())
            .at(&packs)?;
    }
    Ok(())
}

/// Whether directory `dir` (below `root`) holds nothing but what an `init` or a sync
/// into a new directory makes before its config: directories, and temp files in
/// `tmp/`. Such a directory, left by one that was interrupted, may be taken again.
fn only_skeleton(root: &Path, dir: &Path) -> Result<bool> {
    for e in fs::read_dir(dir).at(dir)? {
        let e = e.at(dir)?;
        let path = e.path();
        let in_tmp = path.parent() == Some(&root.join("tmp"));
        let ok = if e.file_type().at(&path)?.is_dir() {
            only_skeleton(root, &path)?
        } else {
            in_tmp
        };
        if !ok {
            return Ok(false);
        }
    }
    Ok(true)
}

/// The path of pack `id` in the store.
pub fn pack_path(id: &PackId) -> String {
    let hex = id.to_hex();
    format!("packs/{}/{hex}", &hex[..2])
}

fn index_path(id: &IndexFileId) -> String {
    format!("index/{}", id.to_hex())
}

/// The ids of the files listed under `dir` whose names are ids, without sizes.
fn listed_names(store: &dyn Store, dir: &str) -> Result<HashSet<Id>> {
    Ok(listed_ids(store, dir)?
        .into_iter()
        .map(|(id, _)| id)
        .collect())
}

/// The ids of the files listed under `dir` whose names are ids.
fn listed_ids(store: &dyn Store, dir: &str) -> Result<Vec<(Id, u64)>> {
    Ok(ids_of(&store.list(dir)?).collect())
}

/// The ids, and sizes, of the files of a listing whose names are ids.
fn ids_of(listed: &[Entry]) -> impl Iterator<Item = (Id, u64)> + '_ {
    listed.iter().filter_map(|e| {
        let name = e.path.rsplit('/').next()?;
        Some((Id::from_hex(name)?, e.size))
    })
}

impl Repository {
    /// Creates an unencrypted repository in directory `root` (which must not exist or
    /// be empty).
    pub fn init(root: &Path, opts: &InitOptions) -> Result<Repository> {
        Repository::create(Arc::new(Local::new(root.to_path_buf())), opts, None)
    }

    /// Creates an encrypted repository in `store` with a new random master key,
    /// wrapped by `passphrase` in its first key file.
    pub fn init_encrypted(
        store: Arc<dyn Store>,
        opts: &InitOptions,
        passphrase: &[u8],
        kdf: Kdf,
    ) -> Result<Repository> {
        let key = MasterKey::generate()?;
        Repository::create(store, opts, Some((key, passphrase, kdf)))
    }

    /// Creates a repository in `store`: unencrypted, or encrypted with a master key
    /// wrapped by a passphrase.
    pub fn create(
        store: Arc<dyn Store>,
        opts: &InitOptions,
        encrypt: Option<(MasterKey, &[u8], Kdf)>,
    ) -> Result<Repository> {
        for p in [opts.chunking.files, opts.chunking.dump] {
            p.validate().map_err(|why| Usage::ChunkParams { why })?;
        }
        let mut id = [0u8; 32];
        getrandom::getrandom(&mut id).map_err(Error::NoRandomness)?;
        let config = Config {
            version: if encrypt.is_some() {
                VERSION_KEYED_CHUNKER
            } else {
                VERSION
            },
            id: hex::encode(id),
            created: Utc::now(),
            chunking: opts.chunking,
            compression_level: opts.compression_level,
            pack_size: opts.pack_size,
        };
        prepare_empty(store.as_ref())?;
        let (key, key_file) = match encrypt {
            Some((key, passphrase, kdf)) => {
                let file = keys::add_file(store.as_ref(), &key, passphrase, kdf)?;
                (Some(key), Some(file))
            }
            None => (None, None),
        };
        let bytes = config.encode(key.as_ref())?;
        store.put("config", &bytes)?;
        if let Some((id, file)) = key_file {
            remembered::remember(store.as_ref(), &bytes, &id, &file);
        }
        let repo = Repository::open_probed(store, Probe::decode(&bytes)?, key)?;
        // A new repository has no snapshot record, and its id a new cache.
        repo.index.set_snapshots_listed(repo.index.removals()?)?;
        Ok(repo)
    }

    /// Creates a copy of the repository `from`: the same config file and key files,
    /// so the same id and master key (packs copy between the two as they are).
    pub fn create_copy(store: Arc<dyn Store>, from: &Repository) -> Result<Repository> {
        prepare_empty(store.as_ref())?;
        for e in from.store.list("keys")? {
            store.put(&e.path, &from.store.read(&e.path, keys::MAX_LEN)?)?;
        }
        store.put("config", &from.store.read("config", config::MAX_LEN)?)?;
        Repository::open_store(store, from.key.clone())
    }

    /// Reads the config of the repository in `store` before its key is at hand: whether
    /// it is encrypted, and its id.
    pub fn probe(store: &dyn Store) -> Result<Probe> {
        Probe::decode(&read_config(store)?)
    }

    /// Opens the repository in `store` with what this host remembered of it (`memory`)
    /// and the master key its key file yielded; the key file is proven still there by
    /// the first refresh (see [`remembered`]).
    pub fn open_remembered(
        store: Arc<dyn Store>,
        memory: remembered::Remembered,
        key: MasterKey,
    ) -> Result<Repository> {
        let repo = Repository::open_probed(store, memory.probe()?, Some(key))?;
        *locked(&repo.unproven_key) = Some(memory);
        Ok(repo)
    }

    /// Opens the repository in `store` with its master key (`None`: unencrypted),
    /// bringing the index cache up to date with the index files and snapshot records.
    pub fn open_store(store: Arc<dyn Store>, key: Option<MasterKey>) -> Result<Repository> {
        let probe = Repository::probe(store.as_ref())?;
        Repository::open_probed(store, probe, key)
    }

    /// [`Repository::open_store`] with its config as `probe` read it (not read again).
    pub fn open_probed(
        store: Arc<dyn Store>,
        probe: Probe,
        key: Option<MasterKey>,
    ) -> Result<Repository> {
        let config = probe.config(key.as_ref())?;
        let cache = cache_dir(store.as_ref(), &config.id)?;
        let index = open_index(&cache, &config.id)?;
        let gear = match &key {
            Some(k) if config.version == VERSION_KEYED_CHUNKER => Gear::keyed(&k.chunker_key()),
            _ => Gear::public(),
        };
        let meta_cache =
            meta_cache::MetaCache::new(store.local_root().is_none().then(|| cache.join("blobs")));
        Ok(Repository {
            store,
            cache,
            config,
            index,
            key,
            gear,
            held: Arc::new(AtomicUsize::new(0)),
            lock_wait: std::time::Duration::ZERO,
            no_lock: false,
            fresh: AtomicBool::new(false),
            unreadable: AtomicUsize::new(0),
            meta_cache,
            unproven_key: Mutex::new(None),
        })
    }

    /// Brings the cache up to date with what other processes and hosts wrote: done
    /// after taking a lock, and before the first lock-free read. Returns the snapshot
    /// records that cannot be read (see [`Repository::sync_snapshots`]).
    pub fn refresh(&self) -> Result<Vec<(String, String)>> {
        self.refresh_as(Refresh::Whole)
    }

    /// [`Repository::refresh`], listing as `how` says. It lists `snapshots/` (unless a
    /// backup may go without), then `index/`, and `keys/` while the key file this
    /// handle opened with is unproven. Snapshots come first: a backup writes its index
    /// files before its snapshot record, so every record listed has its index files in
    /// the listing after it. The other way round, a backup finishing between the two
    /// listings left a record whose blobs this cache did not know: a reader beside it
    /// failed with "blob not found", and `check` called the repository damaged.
    fn refresh_as(&self, how: Refresh) -> Result<Vec<(String, String)>> {
        let snapshots = if how == Refresh::Backup && self.index.snapshots_listed()? {
            None
        } else {
            Some(self.store.list("snapshots")?)
        };
        let unproven = locked(&self.unproven_key).is_some();
        let (index, keys) = if how == Refresh::Whole || !unproven {
            let keys = unproven.then(|| self.store.list("keys")).transpose()?;
            (self.store.list("index")?, keys)
        } else {
            let cached = self.index.index_files()?.len();
            let expect = if cached == 0 { 1000 } else { cached };
            let listed = self.store.list_dirs(&["index", "keys"], expect)?;
            let [index, keys]: [Vec<Entry>; 2] = listed.try_into().map_err(|_| {
                Error::internal("a listing of index/ and keys/ came back without both", None)
            })?;
            (index, Some(keys))
        };
        if let Some(keys) = keys {
            self.prove_key(&keys)?;
        }
        self.index.renew();
        self.refresh_index(&index)?;
        let snapshots = match snapshots {
            Some(listed) => listed,
            None if self.index.snapshots_listed()? && self.index.is_complete()? => {
                // Not listed now: what an earlier refresh of this handle listed may be
                // stale.
                self.fresh.store(false, Ordering::Release);
                return Ok(Vec::new());
            }
            // The index files read just now left the cache incomplete, or replaced
            // it: the backup lists them after the index (it only takes a parent from
            // them, whose blobs it looks up).
            None => self.store.list("snapshots")?,
        };
        let unreadable = self.list_snapshots(&snapshots)?;
        self.fresh.store(true, Ordering::Release);
        Ok(unreadable)
    }

    /// Brings the cache's snapshots in line with `listed`, a listing of `snapshots/`
    /// ([`Repository::sync_listed_snapshots`]) and, when every record could be read,
    /// marks them listed ([`Index::set_snapshots_listed`]).
    fn list_snapshots(&self, listed: &[Entry]) -> Result<Vec<(String, String)>> {
        // Read first: a rebuild by another process meanwhile leaves the mark stale.
        let removals = self.index.removals()?;
        let unreadable = self.sync_listed_snapshots(listed)?;
        if unreadable.is_empty() {
            self.index.set_snapshots_listed(removals)?;
        }
        self.unreadable.store(unreadable.len(), Ordering::Relaxed);
        Ok(unreadable)
    }

    /// Proves the remembered key file this handle opened with current: still among
    /// `keys` (the listing of `keys/`). One that is gone is forgotten, and the run
    /// fails before it reads an index file or a snapshot record.
    fn prove_key(&self, keys: &[Entry]) -> Result<()> {
        let mut unproven = locked(&self.unproven_key);
        let Some(r) = unproven.as_ref() else {
            return Ok(());
        };
        if r.listed_in(keys) {
            *unproven = None;
            return Ok(());
        }
        let e = r.gone(self.store.as_ref());
        remembered::forget(self.store.as_ref());
        Err(e)
    }

    /// Refreshes the cache once for a reader that takes no lock (`list`, `stats`).
    fn ensure_fresh(&self) -> Result<()> {
        if !self.fresh.load(Ordering::Acquire) {
            self.refresh_as(Refresh::Shared)?;
        }
        Ok(())
    }

    /// Reads the index files the cache lacks. When one it holds is gone (prune or
    /// repair replaced it), the cache is rebuilt from all of them. An unreadable index
    /// file is skipped with a warning and leaves the cache incomplete.
    fn refresh_index(&self, listed: &[Entry]) -> Result<()> {
        let listed: HashSet<IndexFileId> = ids_of(listed).map(|(id, _)| IndexFileId(id)).collect();
        let mut cached = self.index.index_files()?;
        if !cached.is_subset(&listed) {
            log::debug!("index files were replaced; rebuilding the cache");
            self.index.clear()?;
            cached.clear();
        }
        let new: Vec<IndexFileId> = listed.difference(&cached).copied().collect();
        let complete = Mutex::new(true);
        let upkeep = Upkeep::for_files(new.len());
        new.par_iter().try_for_each(|name| -> Result<()> {
            match self.read_index_file(name) {
                Ok(packs) => self.index.ingest(name, &packs, upkeep),
                Err(e) => {
                    log::warn!("skipping index file {}: {e}", index_path(name));
                    *locked(&complete) = false;
                    Ok(())
                }
            }
        })?;
        if upkeep == Upkeep::Drop {
            self.index.ensure_filter()?;
        }
        let complete = complete
            .into_inner()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if complete != self.index.is_complete()? {
            self.index.set_complete(complete)?;
        }
        Ok(())
    }

    /// Reads and verifies index file `name`.
    pub fn read_index_file(&self, name: &IndexFileId) -> Result<Vec<PackRecord>> {
        self.decode_index_file(name, &self.index_file_bytes(name)?)
    }

    /// Verifies and decodes the bytes of index file `name`.
    pub fn decode_index_file(&self, name: &IndexFileId, bytes: &[u8]) -> Result<Vec<PackRecord>> {
        index_files::decode(name, bytes, self.key.as_ref())
    }

    /// Index file `name` as stored.
    pub fn index_file_bytes(&self, name: &IndexFileId) -> Result<Vec<u8>> {
        self.store.read(&index_path(name), index_files::MAX_LEN)
    }

    /// The index files in the store.
    pub fn index_files(&self) -> Result<HashSet<IndexFileId>> {
        Ok(listed_names(self.store.as_ref(), "index")?
            .into_iter()
            .map(IndexFileId)
            .collect())
    }

    /// Writes the index file of `packs` (durable packs, just written), then adds it to
    /// the cache; returns its name. Damage recorded under one of their names was in an
    /// earlier file of that name: packs are named by their bytes, so the pack written
    /// now is whole, and its blobs are placed there again.
    pub fn write_index_file(&self, packs: &[PackRecord]) -> Result<IndexFileId> {
        let name = self.put_index_file(packs)?;
        self.index.written_anew(packs)?;
        self.index.ingest(&name, packs, Upkeep::Add)?;
        Ok(name)
    }

    /// Writes the index file of `packs` without adding it to the cache (for a caller
    /// that updates the cache itself); returns its name.
    pub fn put_index_file(&self, packs: &[PackRecord]) -> Result<IndexFileId> {
        let (name, bytes) = index_files::encode(packs, self.key.as_ref())?;
        self.store.put(&index_path(&name), &bytes)?;
        Ok(name)
    }

    /// Where the repository is (`/srv/repo`, `s3://bucket/prefix`).
    pub fn location(&self) -> String {
        self.store.location()
    }

    /// This client's cache directory for the repository: its index cache and the
    /// journals of its runs.
    pub fn cache_dir(&self) -> &Path {
        &self.cache
    }

    /// The repository's file storage.
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    /// Whether the repository is reached over a network (SFTP, S3), where each read
    /// waits a round trip.
    pub fn is_remote(&self) -> bool {
        self.store.local_root().is_none()
    }

    /// Runs `f`, whose parallel work (rayon) mostly reads this repository, on threads
    /// suited to it: rayon's own, one per core, for a local store; for a remote one, a
    /// pool of [`REMOTE_READS`], since each read there waits a round trip more than it
    /// uses a core, and reads in flight, not cores, then set the pace.
    pub fn reading<T: Send>(&self, f: impl FnOnce() -> T + Send) -> Result<T> {
        if !self.is_remote() {
            return Ok(f());
        }
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(REMOTE_READS.max(rayon::current_num_threads()))
            .stack_size(64 << 20)
            .build()
            .map_err(|e| Error::internal("cannot start reading threads", Some(Box::new(e))))?;
        Ok(pool.install(f))
    }

    /// The master key of an encrypted repository.
    pub fn key(&self) -> Option<&MasterKey> {
        self.key.as_ref()
    }

    /// The config.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The id of a blob with these raw bytes: BLAKE3, keyed in encrypted repositories.
    pub fn blob_id(&self, raw: &[u8]) -> Id {
        match &self.key {
            Some(k) => k.blob_id(raw),
            None => Id::hash(raw),
        }
    }

    /// Chunk parameters of a profile.
    pub fn params(&self, p: crate::format::chunker::Profile) -> ChunkParams {
        self.config.chunking.get(p)
    }

    /// The gear table every chunk of this repository is cut with (rewritten copies
    /// excepted: they keep their source's cut points).
    pub fn gear(&self) -> &Gear {
        &self.gear
    }

    /// Makes [`Repository::lock`] take no lock for reading (`--no-lock`, for a repository
    /// this process cannot write), and refuse to lock for writing.
    pub fn set_no_lock(&mut self) {
        self.no_lock = true;
    }

    /// Refuses, under `--no-lock`, an operation (`purpose`) that writes to the
    /// repository under a shared lock (a drill adds its record).
    pub fn refuse_without_lock(&self, purpose: &str) -> Result<()> {
        if self.no_lock {
            return Err(Usage::NoLockWrites {
                purpose: purpose.to_string(),
            }
            .into());
        }
        Ok(())
    }

    /// Makes [`Repository::lock`] wait up to `wait` for a conflicting lock to go,
    /// retrying with backoff (`--retry-lock`), instead of failing at once.
    pub fn set_lock_wait(&mut self, wait: std::time::Duration) {
        self.lock_wait = wait;
    }

    /// Takes a shared (`exclusive = false`) or exclusive lock, then brings the cache up
    /// to date: what the cache says is trusted only from here on, as no prune can
    /// delete what it lists until the lock is released. Snapshot records that cannot
    /// be read are in [`Lock::unreadable`].
    pub fn lock(&self, exclusive: bool, purpose: &str) -> Result<Lock> {
        self.lock_within(exclusive, purpose, self.lock_wait)
    }

    /// Closes the pack files kept open for reading (see [`Store::close_files`]).
    pub fn close_files(&self) {
        self.store.close_files();
    }

    /// [`Repository::lock`], waiting up to `wait` for a conflicting lock whatever
    /// [`Repository::set_lock_wait`] said.
    pub fn lock_within(
        &self,
        exclusive: bool,
        purpose: &str,
        wait: std::time::Duration,
    ) -> Result<Lock> {
        let how = if exclusive {
            Refresh::Whole
        } else {
            Refresh::Shared
        };
        self.lock_as(exclusive, purpose, wait, how)
    }

    /// A backup's shared lock ([`Repository::lock`]), and the snapshots it may take a
    /// parent from, oldest first: a parent, or a previous version of a stream, is a
    /// snapshot of its `host`. These are the cache's, without listing `snapshots/`,
    /// while the cache matched it once, no blob row has left the cache since
    /// ([`Index::snapshots_listed`]), every index file could be read, and the root
    /// tree of every snapshot of `host` it holds is in it. A snapshot whose tree is in the cache
    /// came with an index file the cache holds: a prune elsewhere that deleted its data
    /// replaced that file, which empties the cache (snapshots too) and moves the count
    /// of removals, so the next backup lists `snapshots/`. A snapshot forgotten
    /// elsewhere and not pruned is whole. Whatever the parent, a file it reuses from
    /// one is looked up in the index unless this cache saved the parent itself with no
    /// removal since ([`Repository::is_verified`]): a chunk gone means the file is read.
    pub fn lock_for_backup(&self, host: &str) -> Result<(Lock, Vec<(SnapshotId, Snapshot)>)> {
        let lock = self.lock_as(false, "backup", self.lock_wait, Refresh::Backup)?;
        let cached = self.cached_snapshots()?;
        if self.fresh.load(Ordering::Acquire) || self.trees_in_cache(&cached, host)? {
            return Ok((lock, cached));
        }
        // After the index, unlike a refresh: a parent's blobs are looked up anyway.
        self.list_snapshots(&self.store.list("snapshots")?)?;
        self.fresh.store(true, Ordering::Release);
        Ok((lock, self.cached_snapshots()?))
    }

    /// Whether the root tree of each of `snapshots` of `host` is in the index cache.
    fn trees_in_cache(&self, snapshots: &[(SnapshotId, Snapshot)], host: &str) -> Result<bool> {
        for (_, s) in snapshots.iter().filter(|(_, s)| s.host == host) {
            if !self.index.contains(&s.tree.0)? {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// Takes a lock as [`Repository::lock_within`] does, then refreshes as `how` says.
    fn lock_as(
        &self,
        exclusive: bool,
        purpose: &str,
        wait: std::time::Duration,
        how: Refresh,
    ) -> Result<Lock> {
        let mut lock = if self.no_lock {
            if exclusive || how == Refresh::Backup {
                self.refuse_without_lock(purpose)?;
            }
            Lock::none(self.store.clone())
        } else {
            Lock::acquire_waiting(self.store.clone(), exclusive, purpose, wait)?
        };
        lock.unreadable = self.refresh_as(how)?;
        lock.count_in(self.held.clone());
        Ok(lock)
    }

    /// A shared lock for a library operation that reads snapshots, unless this handle
    /// already holds a lock (`None` then: the caller's lock covers it).
    pub fn read_lock(&self, purpose: &str) -> Result<Option<Lock>> {
        if self.held.load(Ordering::Acquire) > 0 {
            return Ok(None);
        }
        self.lock(false, purpose).map(Some)
    }

    /// A writer of new blobs at zstd `level`.
    pub fn saver(&self, level: i32) -> Result<Saver<'_>> {
        Saver::new(self, level)
    }

    /// Where new packs are assembled: the repository's own `tmp/` when it is local (a
    /// finished pack is renamed into place, within one file system), else the cache's.
    fn tmp_dir(&self) -> PathBuf {
        match self.store.local_root() {
            Some(root) => root.join("tmp"),
            None => self.cache.join("tmp"),
        }
    }

    /// The size at which this run closes new packs: the config's `pack_size`, grown
    /// with what the repository holds ([`pack::target_size`]).
    pub(crate) fn pack_target(&self) -> Result<u64> {
        Ok(pack::target_size(
            self.config.pack_size,
            self.index.pack_bytes()?,
        ))
    }

    // ---- index maintenance ----

    /// What the repository holds (packs, blobs, raw and stored bytes).
    pub fn totals(&self) -> Result<crate::repo::index::Totals> {
        self.ensure_fresh()?;
        self.index.totals()
    }

    /// The index, for maintenance (marks, pack usage).
    pub(crate) fn index(&self) -> &Index {
        &self.index
    }

    /// Every pack file in the store, by name, with its size.
    pub fn pack_files(&self) -> Result<Vec<(PackId, u64)>> {
        Ok(listed_ids(self.store.as_ref(), "packs")?
            .into_iter()
            .map(|(id, size)| (PackId(id), size))
            .collect())
    }

    /// The entries of pack `id`, `len` bytes long as the store lists it, from its
    /// validated trailer.
    pub fn pack_trailer(&self, id: &PackId, len: u64) -> Result<Vec<pack::PackEntry>> {
        let path = pack_path(id);
        let name = id.to_hex();
        if len < pack::HEADER_LEN + pack::FOOTER_LEN as u64 {
            return Err(Error::corrupt("pack", &name, format!("only {len} bytes")));
        }
        let header = self.store.read_at(&path, 0, pack::HEADER_USIZE)?;
        pack::check_header(&name, &header)?;
        let footer = self
            .store
            .read_at(&path, len - pack::FOOTER_LEN as u64, pack::FOOTER_LEN)?;
        let (start, n) = pack::decode_footer(&name, &footer, len, self.key.is_some())?;
        let entries = self.store.read_at(&path, start, n)?;
        pack::decode_entries(&name, &footer, &entries, len, self.key.as_ref())
    }

    /// Packs in the store that no index file lists: left by a backup or prune that
    /// was interrupted before writing its index file, garbage for prune (under the
    /// exclusive lock, after [`Repository::refresh`]).
    pub fn unindexed_packs(&self) -> Result<Vec<PackId>> {
        let known = self.index.pack_names()?;
        let mut out: Vec<PackId> = self
            .pack_files()?
            .into_iter()
            .map(|(id, _)| id)
            .filter(|id| !known.contains(id))
            .collect();
        out.sort();
        Ok(out)
    }

    /// Deletes pack files (under the exclusive lock, after no index file lists them).
    pub fn delete_packs(&self, packs: &[PackId]) -> Result<()> {
        self.store
            .delete_all(&packs.iter().map(pack_path).collect::<Vec<_>>())
    }

    /// Deletes index files (under the exclusive lock, once others list what they did).
    pub fn delete_index_files(&self, files: &[IndexFileId]) -> Result<()> {
        self.store
            .delete_all(&files.iter().map(index_path).collect::<Vec<_>>())
    }

    /// Removes leftover temp files of writers that are gone (see
    /// [`crate::store::temp_is_orphan`]), under the exclusive lock: in the store's
    /// `tmp/` and in the local `tmp/` of packs being written; returns how many.
    pub fn clean_tmp(&self) -> Result<u64> {
        // Only those of writers that are gone: a process taking a lock writes its lock
        // file through `tmp/` even while another holds the exclusive lock.
        let mut n = self.remove_temps(&self.store.list("tmp")?, crate::store::temp_is_orphan);
        match self.store.local_root() {
            None => n += self.remove_local_temps(crate::store::temp_is_orphan)?,
            // The index cache earlier versions kept inside a local repository.
            Some(root) => {
                for suffix in ["", "-wal", "-shm"] {
                    let p = root.join(format!("{INDEX_FILE}{suffix}"));
                    if fs::remove_file(&p).is_ok() {
                        log::info!("removed the old index cache {}", p.display());
                        n += 1;
                    }
                }
            }
        }
        Ok(n)
    }

    /// Removes the temp files of this host's writers that no longer run (a backup
    /// killed while filling a pack), under any lock: no live writer can hold them.
    /// Costs no request on a remote store, whose packs are filled locally.
    pub fn clean_dead_writers_temps(&self) -> Result<u64> {
        let dead = crate::store::temp_of_dead_writer_here;
        if self.store.local_root().is_some() {
            Ok(self.remove_temps(&self.store.list("tmp")?, dead))
        } else {
            self.remove_local_temps(dead)
        }
    }

    /// Deletes the entries of the store's `tmp/` that `doomed` picks; how many went.
    fn remove_temps(
        &self,
        entries: &[crate::store::Entry],
        doomed: fn(&crate::store::Entry) -> bool,
    ) -> u64 {
        let mut n = 0;
        for e in entries.iter().filter(|e| doomed(e)) {
            log::debug!("removing leftover temp file {}", e.path);
            if self.store.delete(&e.path).is_ok() {
                n += 1;
            }
        }
        n
    }

    /// Deletes the files of the local `tmp/` of packs being written (that of a remote
    /// store) that `doomed` picks; how many went.
    fn remove_local_temps(&self, doomed: fn(&crate::store::Entry) -> bool) -> Result<u64> {
        let tmp = self.tmp_dir();
        let mut n = 0;
        for e in fs::read_dir(&tmp).at(&tmp)?.flatten() {
            let entry = crate::store::Entry {
                path: e.file_name().to_string_lossy().into_owned(),
                size: 0,
                modified: e.metadata().ok().and_then(|m| m.modified().ok()),
            };
            if doomed(&entry) && fs::remove_file(e.path()).is_ok() {
                n += 1;
            }
        }
        Ok(n)
    }

    /// Creates a temp file for a new pack.
    fn new_pack_file(&self) -> Result<tempfile::NamedTempFile> {
        let tmp = self.tmp_dir();
        tempfile::Builder::new()
            .prefix(&format!("{}pack-", crate::store::temp_prefix()))
            .tempfile_in(&tmp)
            .at(&tmp)
    }
}

/// Splits pack records into index-file-sized batches (about
/// [`index_files::BLOBS_PER_FILE`] blobs each).
pub fn batches(records: impl IntoIterator<Item = PackRecord>) -> Vec<Vec<PackRecord>> {
    let mut out = vec![Vec::new()];
    let mut blobs = 0;
    for r in records {
        if blobs >= index_files::BLOBS_PER_FILE {
            out.push(Vec::new());
            blobs = 0;
        }
        blobs += r.entries.len();
        out.last_mut().expect("one batch at least").push(r);
    }
    out.retain(|b| !b.is_empty());
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::test_store::TestStore;

    #[test]
    fn no_snapshot_an_unknown_one_and_a_second_init_are_told_apart() {
        let d = tempfile::tempdir().unwrap();
        let root = d.path().join("repo");
        let repo = Repository::init(&root, &InitOptions::default()).unwrap();
        let e = repo.find_snapshot("latest").err().unwrap();
        assert!(
            matches!(&e, Error::NoSnapshots { location, .. } if location.ends_with("repo")),
            "{e}"
        );
        let e = repo.find_snapshot("beef").err().unwrap();
        assert!(
            matches!(&e, Error::SnapshotNotFound { spec, .. } if spec == "beef"),
            "{e}"
        );
        let e = Repository::init(&root, &InitOptions::default())
            .err()
            .unwrap();
        assert!(
            matches!(&e, Error::Refused(Refusal::AlreadyRepository { location }) if location.ends_with("repo")),
            "{e}"
        );
    }

    /// Packs are named by their bytes: one written anew under the name of a pack
    /// whose copy was found damaged (or gone) is whole, and its blobs are placed
    /// there again (a backup that stored the same chunks again could not be restored).
    #[test]
    fn a_pack_written_anew_under_a_damaged_ones_name_is_indexed() {
        let d = tempfile::tempdir().unwrap();
        let repo = Repository::init(&d.path().join("repo"), &InitOptions::default()).unwrap();
        let saver = repo.saver(3).unwrap();
        let id = saver
            .save(crate::format::pack::BlobKind::Data, b"some chunk")
            .unwrap();
        saver.flush().unwrap();
        let loc = repo.index().lookup(&id).unwrap().unwrap();
        let file = *repo.index_files().unwrap().iter().next().unwrap();
        let records = repo.read_index_file(&file).unwrap();
        repo.index().record_damaged(&[(id, loc)]).unwrap();
        assert_eq!(repo.index().lookup(&id).unwrap(), None);
        repo.write_index_file(&records).unwrap();
        assert_eq!(repo.index().lookup(&id).unwrap(), Some(loc));
    }

    #[test]
    fn opening_where_there_is_none_or_with_a_wrong_passphrase_says_which() {
        let d = tempfile::tempdir().unwrap();
        let none: Arc<dyn Store> = Arc::new(Local::new(d.path().join("none")));
        let e = Repository::open_store(none, None).err().unwrap();
        assert!(
            matches!(&e, Error::NoRepository { location } if location.ends_with("none")),
            "{e}"
        );
        let (root, store) = encrypted(d.path(), b"right");
        let e = keys::unlock(store.as_ref(), b"wrong").err().unwrap();
        assert!(
            matches!(&e, Error::WrongPassphrase { files, .. } if files.len() == 1),
            "{e}"
        );
        std::fs::remove_file(root.join("keys").join(&files_in(&root.join("keys"))[0])).unwrap();
        let e = keys::unlock(store.as_ref(), b"right").err().unwrap();
        assert!(matches!(e, Error::NoKeyFiles { .. }), "{e}");
    }

    #[test]
    fn the_key_file_that_opened_last_is_tried_alone_first() {
        let d = tempfile::tempdir().unwrap();
        let (root, store) = encrypted(d.path(), b"one");
        let (one, master) = keys::unlock(store.as_ref(), b"one").unwrap();
        let two = keys::add(store.as_ref(), &master, b"two", CHEAP).unwrap();
        // The remembered key file opens by itself; a damaged other one is passed over
        // (ids sorting before and after it) when every key file is read.
        for name in ["0000000000000000", "ffffffffffffffff"] {
            let damaged = root.join(format!("keys/{name}.json"));
            std::fs::write(&damaged, b"not a key file").unwrap();
            let id = keys::unlock_first(store.as_ref(), b"one", Some(&one))
                .unwrap()
                .id;
            assert_eq!(id, one);
            assert_eq!(keys::unlock(store.as_ref(), b"one").unwrap().0, one);
            let e = keys::unlock(store.as_ref(), b"three").err().unwrap();
            assert!(matches!(e, Error::Corrupt { .. }), "{e}");
            std::fs::remove_file(&damaged).unwrap();
        }
        // Remembered but opening nothing for this passphrase, or gone: the others.
        let id = keys::unlock_first(store.as_ref(), b"two", Some(&one))
            .unwrap()
            .id;
        assert_eq!(id, two);
        let id = keys::unlock_first(store.as_ref(), b"one", Some("0123456789abcdef"))
            .unwrap()
            .id;
        assert_eq!(id, one);
        let e = keys::unlock_first(store.as_ref(), b"three", Some(&one))
            .err()
            .unwrap();
        assert!(
            matches!(&e, Error::WrongPassphrase { files, .. } if files.len() == 2),
            "{e}"
        );
    }

    /// Argon2 at its cheapest, for tests.
    const CHEAP: Kdf = Kdf {
        m_cost: 8,
        t_cost: 1,
        p_cost: 1,
    };

    /// A new encrypted repository in `dir/enc` with one key file for `pass`.
    fn encrypted(dir: &Path, pass: &[u8]) -> (PathBuf, Arc<dyn Store>) {
        let root = dir.join("enc");
        let store: Arc<dyn Store> = Arc::new(Local::new(root.clone()));
        Repository::init_encrypted(store.clone(), &InitOptions::default(), pass, CHEAP).unwrap();
        (root, store)
    }

    fn files_in(dir: &Path) -> Vec<String> {
        std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect()
    }

    /// Backs up `bytes` into `repo` as the stream `db.sql`.
    fn back_up(repo: &Repository, bytes: &[u8]) {
        let opts = crate::ops::backup::BackupOptions {
            stdin_name: Some("db.sql".into()),
            ..Default::default()
        };
        let mut input = std::io::Cursor::new(bytes);
        crate::ops::backup::backup(repo, &opts, Some(&mut input), &crate::progress::NoProgress)
            .unwrap();
    }

    #[test]
    fn a_snapshot_saved_while_a_reader_refreshes_comes_with_its_blobs() {
        let d = tempfile::tempdir().unwrap();
        let root = d.path().join("repo");
        let writer = Repository::init(&root, &InitOptions::default()).unwrap();
        back_up(&writer, b"first");
        let hooked = Arc::new(TestStore::new(&root).elsewhere());
        let store: Arc<dyn Store> = hooked.clone();
        let reader = Repository::open_store(store, None).unwrap();
        // A backup elsewhere finishes while the reader takes its lock and refreshes.
        hooked.before_snapshots(move || back_up(&writer, b"second"));
        let _lock = reader.lock(false, "restore").unwrap();
        let (_, latest) = reader.find_snapshot("latest").unwrap();
        assert!(
            reader.index.contains(&latest.tree.0).unwrap(),
            "the newest snapshot's tree is not in the reader's index"
        );
        let node = reader
            .find_node(&latest.tree, &[b"db.sql".to_vec()])
            .unwrap()
            .unwrap();
        let crate::format::tree::NodeKind::File(content) = node.kind else {
            panic!("db.sql is not a file: {node:?}");
        };
        let mut read = Vec::new();
        reader.write_content(&content, &mut read).unwrap();
        assert_eq!(read, b"second");
    }

    #[test]
    fn a_repository_it_cannot_write_is_read_with_no_lock_and_said_so_without() {
        let d = tempfile::tempdir().unwrap();
        let root = d.path().join("repo");
        let writer = Repository::init(&root, &InitOptions::default()).unwrap();
        back_up(&writer, b"kept");
        let store: Arc<dyn Store> = Arc::new(TestStore::new(&root).read_only());
        let mut repo = Repository::open_store(store, None).unwrap();
        let e = repo.lock(false, "restore").err().unwrap();
        assert!(e.to_string().contains("pass --no-lock"), "{e}");
        repo.set_no_lock();
        let lock = repo.lock(false, "restore").unwrap();
        let (_, latest) = repo.find_snapshot("latest").unwrap();
        assert!(repo
            .find_node(&latest.tree, &[b"db.sql".to_vec()])
            .unwrap()
            .is_some());
        drop(lock);
        assert!(files_in(&root.join("locks")).is_empty());
        let e = repo.lock(true, "prune").err().unwrap();
        assert!(matches!(e, Error::Usage(Usage::NoLockWrites { .. })), "{e}");
        let e = repo.lock_for_backup("h").err().unwrap();
        assert!(matches!(e, Error::Usage(Usage::NoLockWrites { .. })), "{e}");
    }

    #[test]
    fn init_takes_the_skeleton_an_interrupted_init_left_but_no_other_file() {
        let d = tempfile::tempdir().unwrap();
        let root = d.path().join("repo");
        std::fs::create_dir_all(root.join("packs/0a")).unwrap();
        std::fs::create_dir_all(root.join("tmp")).unwrap();
        std::fs::write(root.join("tmp/host.1.config"), b"{").unwrap();
        Repository::init(&root, &InitOptions::default()).unwrap();
        let other = d.path().join("other");
        std::fs::create_dir_all(other.join("tmp")).unwrap();
        std::fs::write(other.join("notes.txt"), b"mine").unwrap();
        let e = Repository::init(&other, &InitOptions::default())
            .err()
            .unwrap();
        assert!(e.to_string().contains("not empty"), "{e}");
    }
}
