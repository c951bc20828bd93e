//! A repository: layout, config, index cache, reading blobs, and the commit protocol
//! for new packs, index files and snapshots. Its files live in a [`Store`] (a local
//! directory, SFTP or S3); the SQLite index is a local cache of the index files.
//!
//! ```text
//! config                 JSON, written once by init
//! keys/<16 hex>.json     encrypted repositories: the master key per passphrase
//! packs/<2 hex>/<id>     immutable pack files, named by the BLAKE3 of their bytes
//! index/<id>             immutable index files: the packs and their blobs
//! snapshots/<id>         immutable snapshot records, named by their BLAKE3
//! locks/<random>.json    one per running process
//! tmp/                   files being written (local and SFTP repositories)
//! ```
//! Write order (a crash at any point leaves only complete snapshots visible): packs,
//! durable; then the index file listing them; the snapshot record last. Anything
//! unreferenced is garbage for prune, never damage.

mod config;
mod index_files;
mod journal;
pub mod keys;
mod lock;
mod lookup;
mod persist;
mod repack;
mod saver;

use std::borrow::Cow;
use std::collections::HashSet;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use chrono::Utc;
use rayon::prelude::*;

pub use self::config::{Config, ConfigFile, VERSION, VERSION_ENCRYPTED, VERSION_KEYED_CHUNKER};
pub use self::index_files::BLOBS_PER_FILE as INDEX_FILE_BLOBS;
pub use self::journal::Resumed;
pub use self::lock::{stale_by_age, Lock};
pub use crate::pack::PackRecord;
// Decoders of files from the store, for the fuzz targets only.
#[doc(hidden)]
pub use self::index_files::{decode as decode_index_file, encode as encode_index_file};
#[doc(hidden)]
pub use self::lock::LockInfo;
pub use self::lookup::PathLookup;
pub use self::repack::Repacker;
pub use self::saver::{Added, Saver};
use crate::chunker::{ChunkParams, Gear, Profiles};
use crate::compress::{self, Compression};
use crate::crypto::{Kdf, MasterKey, OVERHEAD};
use crate::error::{Error, IoContext, Result};
pub use crate::host::{hostname, pid_alive};
use crate::id::Id;
use crate::index::{BlobLoc, Index};
use crate::locked;
use crate::pack;
use crate::snapshot::Snapshot;
use crate::store::{Local, Store};
use crate::tree::{Content, ListNode, Node, NodeKind, Tree, MAX_META_BLOB};

const INDEX_FILE: &str = "index.sqlite";

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
    /// Whether the cache was brought up to date since the handle was opened.
    fresh: AtomicBool,
}

/// Associated data of a sealed snapshot record.
const SNAPSHOT_AAD: &[u8] = b"snap snapshot";

/// Associated data of a sealed blob: its id and kind.
fn blob_aad(id: &Id, kind: pack::BlobKind) -> [u8; 33] {
    let mut a = [0u8; 33];
    a[..32].copy_from_slice(&id.0);
    a[32] = kind as u8;
    a
}

/// Reads the config file of the repository in `store`, not yet opened.
fn read_config(store: &dyn Store) -> Result<ConfigFile> {
    match store.read("config", config::MAX_LEN) {
        Err(Error::NotFound { .. }) => Err(Error::Invalid(format!(
            "no repository at {0} (no config file): point --repo or SNAP_REPO at your repository, or create one with `snap init --repo {0}`",
            store.location()
        ))),
        r => ConfigFile::decode(&r?),
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

/// Where the index cache of a repository lives, for every kind of store: the root set
/// by [`set_cache_root`], then the repository id and a hash of the repository's
/// location (a synced copy has the same id and its own cache). It belongs to the
/// client: SQLite's WAL works only on a local file system, so several hosts sharing one
/// repository (on NFS, SFTP or S3) each keep their own.
fn cache_dir(store: &dyn Store, repo_id: &str) -> Result<PathBuf> {
    let base = CACHE_ROOT
        .get()
        .cloned()
        .or_else(|| cfg!(test).then(|| std::env::temp_dir().join("snap-unit-test-cache")))
        .ok_or_else(|| {
            Error::Invalid(
                "no directory for the index cache: set SNAP_CACHE_DIR, XDG_CACHE_HOME or HOME, or give --cache-dir".into(),
            )
        })?;
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

/// Opens the index cache in `cache`, replacing one of another schema or repository.
fn open_index(cache: &Path, repo_id: &str) -> Result<Index> {
    let path = cache.join(INDEX_FILE);
    if let Some(i) = Index::open(&path, repo_id)? {
        return Ok(i);
    }
    log::warn!(
        "index {} belongs to another repository or version; rebuilding it",
        path.display()
    );
    for suffix in ["", "-wal", "-shm"] {
        let p = cache.join(format!("{INDEX_FILE}{suffix}"));
        match fs::remove_file(&p) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e).at(&p),
            _ => {}
        }
    }
    Index::open(&path, repo_id)?
        .ok_or_else(|| Error::Invalid(format!("cannot create index {}", path.display())))
}

/// Checks that `store` holds no repository yet; a local directory must be absent or
/// empty, and gets the repository's directories.
fn prepare_empty(store: &dyn Store) -> Result<()> {
    if store.size("config")?.is_some() {
        return Err(Error::Invalid(format!(
            "{} is already a snap repository",
            store.location()
        )));
    }
    if let Some(root) = store.local_root() {
        if root.exists() && !only_skeleton(root, root)? {
            return Err(Error::Invalid(format!(
                "{} exists and is not empty; choose an empty or new directory",
                root.display()
            )));
        }
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
pub fn pack_path(id: &Id) -> String {
    let hex = id.to_hex();
    format!("packs/{}/{hex}", &hex[..2])
}

fn snapshot_path(id: &Id) -> String {
    format!("snapshots/{}", id.to_hex())
}

fn index_path(id: &Id) -> String {
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
    Ok(store
        .list(dir)?
        .into_iter()
        .filter_map(|e| {
            let name = e.path.rsplit('/').next()?;
            Some((Id::from_hex(name)?, e.size))
        })
        .collect())
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
            p.validate().map_err(Error::Invalid)?;
        }
        let mut id = [0u8; 32];
        getrandom::getrandom(&mut id).map_err(|e| Error::Invalid(format!("no randomness: {e}")))?;
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
        let key = match encrypt {
            Some((key, passphrase, kdf)) => {
                keys::add(store.as_ref(), &key, passphrase, kdf)?;
                Some(key)
            }
            None => None,
        };
        store.put("config", &config.encode(key.as_ref())?)?;
        Repository::open_store(store, key)
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

    /// Whether the repository in `store` is encrypted (then it opens only with its
    /// key); also the repository's id.
    pub fn probe(store: &dyn Store) -> Result<(bool, String)> {
        Ok(match read_config(store)? {
            ConfigFile::Plain(c) => (false, c.id),
            ConfigFile::Sealed { id, .. } => (true, id),
        })
    }

    /// Opens the repository in `store` with its master key (`None`: unencrypted),
    /// bringing the index cache up to date with the index files and snapshot records.
    pub fn open_store(store: Arc<dyn Store>, key: Option<MasterKey>) -> Result<Repository> {
        let config = read_config(store.as_ref())?.open(key.as_ref())?;
        let cache = cache_dir(store.as_ref(), &config.id)?;
        let index = open_index(&cache, &config.id)?;
        let gear = match &key {
            Some(k) if config.version == VERSION_KEYED_CHUNKER => Gear::keyed(&k.chunker_key()),
            _ => Gear::public(),
        };
        Ok(Repository {
            store,
            cache,
            config,
            index,
            key,
            gear,
            held: Arc::new(AtomicUsize::new(0)),
            fresh: AtomicBool::new(false),
        })
    }

    /// Brings the cache up to date with what other processes and hosts wrote: done
    /// after taking a lock, and before the first lock-free read. Returns the snapshot
    /// records that cannot be read (see [`Repository::sync_snapshots`]).
    pub fn refresh(&self) -> Result<Vec<(String, String)>> {
        self.index.renew();
        self.refresh_index()?;
        let unreadable = self.sync_snapshots()?;
        self.fresh.store(true, Ordering::Release);
        Ok(unreadable)
    }

    /// Refreshes the cache once for a reader that takes no lock (`list`, `stats`).
    fn ensure_fresh(&self) -> Result<()> {
        if !self.fresh.load(Ordering::Acquire) {
            self.refresh()?;
        }
        Ok(())
    }

    /// Reads the index files the cache lacks. When one it holds is gone (prune or
    /// repair replaced it), the cache is rebuilt from all of them. An unreadable index
    /// file is skipped with a warning and leaves the cache incomplete.
    fn refresh_index(&self) -> Result<()> {
        let listed = self.index_files()?;
        let mut cached = self.index.index_files()?;
        if !cached.is_subset(&listed) {
            log::debug!("index files were replaced; rebuilding the cache");
            self.index.clear()?;
            cached.clear();
        }
        let new: Vec<Id> = listed.difference(&cached).copied().collect();
        let complete = Mutex::new(true);
        new.par_iter().try_for_each(|name| -> Result<()> {
            match self.read_index_file(name) {
                Ok(packs) => self.index.ingest(name, &packs),
                Err(e) => {
                    log::warn!("skipping index file {}: {e}", index_path(name));
                    *locked(&complete) = false;
                    Ok(())
                }
            }
        })?;
        let complete = complete.into_inner().unwrap_or_else(|p| p.into_inner());
        if complete != self.index.is_complete()? {
            self.index.set_complete(complete)?;
        }
        Ok(())
    }

    /// Reads and verifies index file `name`.
    pub fn read_index_file(&self, name: &Id) -> Result<Vec<PackRecord>> {
        self.decode_index_file(name, &self.index_file_bytes(name)?)
    }

    /// Verifies and decodes the bytes of index file `name`.
    pub fn decode_index_file(&self, name: &Id, bytes: &[u8]) -> Result<Vec<PackRecord>> {
        index_files::decode(name, bytes, self.key.as_ref())
    }

    /// Index file `name` as stored.
    pub fn index_file_bytes(&self, name: &Id) -> Result<Vec<u8>> {
        self.store.read(&index_path(name), index_files::MAX_LEN)
    }

    /// The index files in the store.
    pub fn index_files(&self) -> Result<HashSet<Id>> {
        listed_names(self.store.as_ref(), "index")
    }

    /// Writes the index file of `packs` (durable packs), then adds it to the cache;
    /// returns its name.
    pub fn write_index_file(&self, packs: &[PackRecord]) -> Result<Id> {
        let name = self.put_index_file(packs)?;
        self.index.ingest(&name, packs)?;
        Ok(name)
    }

    /// Writes the index file of `packs` without adding it to the cache (for a caller
    /// that updates the cache itself); returns its name.
    pub fn put_index_file(&self, packs: &[PackRecord]) -> Result<Id> {
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
    pub fn params(&self, p: crate::chunker::Profile) -> ChunkParams {
        self.config.chunking.get(p)
    }

    /// The gear table every chunk of this repository is cut with (rewritten copies
    /// excepted: they keep their source's cut points).
    pub fn gear(&self) -> &Gear {
        &self.gear
    }

    /// Takes a shared (`exclusive = false`) or exclusive lock, then brings the cache up
    /// to date: what the cache says is trusted only from here on, as no prune can
    /// delete what it lists until the lock is released. Snapshot records that cannot
    /// be read are in [`Lock::unreadable`].
    pub fn lock(&self, exclusive: bool, purpose: &str) -> Result<Lock> {
        let mut lock = Lock::acquire(self.store.clone(), exclusive, purpose)?;
        lock.unreadable = self.refresh()?;
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

    /// Where blob `id` is stored.
    pub fn locate(&self, id: &Id) -> Result<BlobLoc> {
        self.index.lookup(id)?.ok_or_else(|| Error::NotFound {
            what: "blob",
            id: id.to_hex(),
        })
    }

    /// Whether blob `id` is stored.
    pub fn has_blob(&self, id: &Id) -> Result<bool> {
        self.index.contains(id)
    }

    /// Reads, decompresses and verifies blob `id`.
    pub fn read_blob(&self, id: &Id) -> Result<Vec<u8>> {
        self.read_blob_at(id, &self.locate(id)?)
    }

    /// Reads blob `id` from a known location, verifying its hash.
    pub fn read_blob_at(&self, id: &Id, loc: &BlobLoc) -> Result<Vec<u8>> {
        let stored = self.fetch(id, loc)?;
        self.decode(id, loc, Cow::Owned(stored))
    }

    /// Reads blob `id` as stored (compressed or not) after verifying it decodes to its
    /// id, for copying into a new pack unchanged.
    pub fn read_stored(&self, id: &Id, loc: &BlobLoc) -> Result<Vec<u8>> {
        let stored = self.fetch(id, loc)?;
        self.decode(id, loc, Cow::Borrowed(&stored))?;
        Ok(stored)
    }

    /// The stored bytes of blob `id`, after checking that the lengths are plausible.
    fn fetch(&self, id: &Id, loc: &BlobLoc) -> Result<Vec<u8>> {
        self.check_lengths(id, loc)?;
        self.read_span(id, loc, loc.stored_len as usize)
    }

    /// Reads, decodes and verifies a run of blobs stored back to back in one pack with
    /// one read (fewer requests to a remote store, fewer calls to a local one); returns
    /// their raw bytes back to back in one buffer, so that the run is written with one
    /// call (and a file system zeroes no partly written block between two chunks).
    fn read_run(&self, run: &[(Id, BlobLoc)]) -> Result<Vec<u8>> {
        let Some((first, start)) = run.first() else {
            return Ok(Vec::new());
        };
        for (id, loc) in run {
            self.check_lengths(id, loc)?;
        }
        let span: usize = run.iter().map(|(_, l)| l.stored_len as usize).sum();
        let bytes = self.read_span(first, start, span)?;
        let mut out = Vec::with_capacity(run.iter().map(|(_, l)| l.raw_len as usize).sum());
        let mut at = 0;
        for (id, loc) in run {
            let stored = &bytes[at..at + loc.stored_len as usize];
            at += loc.stored_len as usize;
            self.decode_into(id, loc, Cow::Borrowed(stored), &mut out)?;
        }
        Ok(out)
    }

    /// Checks that a blob's lengths are plausible before anything is read or allocated.
    fn check_lengths(&self, id: &Id, loc: &BlobLoc) -> Result<()> {
        let cap = if loc.kind.is_metadata() {
            MAX_META_BLOB
        } else {
            ChunkParams::MAX_CHUNK
        };
        // Named only in errors: this runs for every blob read.
        let pack_name = || format!("packs/{}", loc.pack);
        let seal = if self.key.is_some() {
            OVERHEAD as u32
        } else {
            0
        };
        let sane = loc.raw_len <= cap
            && match loc.compression {
                Compression::Raw => Some(loc.stored_len) == loc.raw_len.checked_add(seal),
                Compression::Zstd => loc.stored_len <= loc.raw_len.saturating_add(seal),
            };
        if !sane {
            return Err(Error::corrupt(
                "blob",
                id,
                format!("implausible lengths in {}", pack_name()),
            ));
        }
        Ok(())
    }

    /// `len` stored bytes of pack `loc.pack` from `loc.offset` (blob `id` first).
    fn read_span(&self, id: &Id, loc: &BlobLoc, len: usize) -> Result<Vec<u8>> {
        let pack_name = || format!("packs/{}", loc.pack);
        self.store
            .read_at(&pack_path(&loc.pack), loc.offset, len)
            .map_err(|e| match e {
                // A network failure is not damage.
                Error::Storage { .. } => e,
                e => Error::corrupt(
                    "blob",
                    id,
                    format!("cannot read {} at {}: {e}", pack_name(), loc.offset),
                ),
            })
    }

    /// Opens (encrypted repositories) and decompresses stored bytes, and checks that
    /// they hash to `id`. Borrowed bytes are copied only when stored raw and plain.
    fn decode(&self, id: &Id, loc: &BlobLoc, stored: Cow<'_, [u8]>) -> Result<Vec<u8>> {
        let mut raw = Vec::new();
        self.decode_into(id, loc, stored, &mut raw)?;
        Ok(raw)
    }

    /// Like [`Repository::decode`], appending the raw bytes to `out`; on error `out` is
    /// as it was.
    fn decode_into(
        &self,
        id: &Id,
        loc: &BlobLoc,
        stored: Cow<'_, [u8]>,
        out: &mut Vec<u8>,
    ) -> Result<()> {
        let pack_name = || format!("packs/{}", loc.pack);
        let stored = match &self.key {
            Some(k) => Cow::Owned(k.open(&blob_aad(id, loc.kind), &stored).ok_or_else(|| {
                Error::corrupt(
                    "blob",
                    id,
                    format!(
                        "in {} fails authentication (altered or damaged)",
                        pack_name()
                    ),
                )
            })?),
            None => stored,
        };
        let start = out.len();
        match loc.compression {
            Compression::Raw if out.capacity() == 0 => *out = stored.into_owned(),
            Compression::Raw => out.extend_from_slice(&stored),
            Compression::Zstd => compress::decompress_into(&stored, loc.raw_len as usize, out)
                .map_err(|e| Error::corrupt("blob", id, format!("in {}: {e}", pack_name())))?,
        }
        let actual = self.blob_id(&out[start..]);
        if actual != *id {
            out.truncate(start);
            return Err(Error::ChecksumMismatch {
                what: format!("blob in {}", pack_name()),
                expected: id.to_hex(),
                actual: actual.to_hex(),
            });
        }
        Ok(())
    }

    /// Loads a directory tree.
    pub fn load_tree(&self, id: &Id) -> Result<Tree> {
        Tree::decode(id, &self.read_blob(id)?)
    }

    /// Calls `f` with every data chunk id of `content`, in file order (see
    /// [`Repository::chunk_ids`]).
    pub fn for_each_chunk(
        &self,
        content: &Content,
        f: &mut dyn FnMut(Id) -> Result<()>,
    ) -> Result<()> {
        self.chunk_ids(content).try_for_each(|id| f(id?))
    }

    /// The data chunk ids of `content` in file order, expanding list nodes as they are
    /// reached (memory: one list node per level).
    pub fn chunk_ids<'r>(&'r self, content: &Content) -> impl Iterator<Item = Result<Id>> + 'r {
        // Each level: ids, the next one to visit, and their depth (0: data chunks).
        let mut stack = vec![(content.ids.clone(), 0usize, content.depth)];
        std::iter::from_fn(move || loop {
            let (ids, next, depth) = stack.last_mut()?;
            let Some(&id) = ids.get(*next) else {
                stack.pop();
                continue;
            };
            *next += 1;
            if *depth == 0 {
                return Some(Ok(id));
            }
            match self.list_node(&id, *depth - 1) {
                Ok(node) => stack.push((node.ids, 0, node.level)),
                Err(e) => {
                    stack.clear();
                    return Some(Err(e));
                }
            }
        })
    }

    /// Reads list node `id`, which must be of `level`.
    pub(crate) fn list_node(&self, id: &Id, level: u8) -> Result<ListNode> {
        let node = ListNode::decode(id, &self.read_blob(id)?)?;
        if node.level != level {
            return Err(Error::corrupt(
                "chunk list",
                id,
                format!("level {} where {level} was expected", node.level),
            ));
        }
        Ok(node)
    }

    /// Feeds a file's bytes, verified chunk by chunk, in order to `sink`, a run of
    /// chunks at a time; chunks are read and decompressed in parallel batches of
    /// bounded size (32 MiB).
    pub fn read_content(
        &self,
        content: &Content,
        sink: &mut dyn FnMut(&[u8]) -> Result<()>,
    ) -> Result<()> {
        self.located_batches(content, 32 << 20, |batch| {
            let read = |r: std::ops::Range<usize>| self.read_run(&batch[r]);
            let runs = runs(batch);
            // One run stays on this thread: handing it to the pool from outside costs a
            // wake-up per small file (export, cat).
            let decoded: Vec<Vec<u8>> = if runs.len() > 1 {
                runs.into_par_iter().map(&read).collect::<Result<_>>()?
            } else {
                runs.into_iter().map(&read).collect::<Result<_>>()?
            };
            for run in &decoded {
                sink(run)?;
            }
            Ok(())
        })
    }

    /// Like [`Repository::read_content`] for a sink that takes bytes at their offset
    /// in any order (a file written with `pwrite`): each run of chunks is written, with
    /// one call, by the thread that decoded it, so memory is the runs in flight, not a
    /// batch. Returns the content's length.
    pub fn read_content_at(
        &self,
        content: &Content,
        write: &(dyn Fn(u64, &[u8]) -> Result<()> + Sync),
    ) -> Result<u64> {
        let mut pos = 0u64;
        self.located_batches(content, 256 << 20, |batch| {
            let runs: Vec<_> = runs(batch)
                .into_iter()
                .map(|r| {
                    let at = pos;
                    pos += batch[r.clone()]
                        .iter()
                        .map(|(_, l)| u64::from(l.raw_len))
                        .sum::<u64>();
                    (at, r)
                })
                .collect();
            runs.into_par_iter()
                .try_for_each(|(at, r)| write(at, &self.read_run(&batch[r])?))
        })?;
        Ok(pos)
    }

    /// Locates a file's chunks in order and hands them to `f` in batches of about
    /// `batch_bytes` raw bytes.
    fn located_batches(
        &self,
        content: &Content,
        batch_bytes: u64,
        mut f: impl FnMut(&[(Id, BlobLoc)]) -> Result<()>,
    ) -> Result<()> {
        let mut batch: Vec<(Id, BlobLoc)> = Vec::new();
        let mut bytes = 0u64;
        self.for_each_chunk(content, &mut |id| {
            let loc = self.locate(&id)?;
            bytes += u64::from(loc.raw_len);
            batch.push((id, loc));
            if bytes >= batch_bytes {
                f(&batch)?;
                batch.clear();
                bytes = 0;
            }
            Ok(())
        })?;
        if batch.is_empty() {
            return Ok(());
        }
        f(&batch)
    }

    /// Whether every blob of `content` (data chunks and list nodes) is in the index, so
    /// that a new snapshot may reference it without storing it again.
    pub fn content_complete(&self, content: &Content) -> Result<bool> {
        self.ids_complete(content.depth, &content.ids)
    }

    fn ids_complete(&self, depth: u8, ids: &[Id]) -> Result<bool> {
        for id in ids {
            if !self.has_blob(id)? {
                return Ok(false);
            }
            if depth > 0 {
                let Ok(node) = self.list_node(id, depth - 1) else {
                    return Ok(false);
                };
                if !self.ids_complete(node.level, &node.ids)? {
                    return Ok(false);
                }
            }
        }
        Ok(true)
    }

    /// Writes a file's content to `out` (see [`Repository::read_content`]); returns the
    /// bytes written.
    pub fn write_content(&self, content: &Content, out: &mut dyn Write) -> Result<u64> {
        let mut written = 0u64;
        self.read_content(content, &mut |c| {
            written += c.len() as u64;
            out.write_all(c).map_err(|e| Error::Io {
                path: PathBuf::from("<output>"),
                source: e,
            })
        })?;
        Ok(written)
    }

    /// Finds the node at `path` (components) below tree `root`; the empty path is the
    /// root itself, returned as a directory node.
    pub fn find_node(&self, root: &Id, path: &[Vec<u8>]) -> Result<Option<Node>> {
        if path.is_empty() {
            return Ok(Some(Node {
                name: b"/".to_vec(),
                kind: NodeKind::Dir(*root),
                meta: Default::default(),
            }));
        }
        PathLookup::new(self, *root).node(path)
    }

    /// Calls `f` for every entry below tree `tree`, depth first in name order, with its
    /// path (`prefix/name`, names shown lossily as UTF-8).
    pub fn walk(
        &self,
        tree: &Id,
        prefix: &str,
        f: &mut dyn FnMut(&str, &Node) -> Result<()>,
    ) -> Result<()> {
        for n in self.load_tree(tree)?.nodes {
            let path = format!("{prefix}/{}", String::from_utf8_lossy(&n.name));
            f(&path, &n)?;
            if let NodeKind::Dir(sub) = &n.kind {
                self.walk(sub, &path, f)?;
            }
        }
        Ok(())
    }

    // ---- snapshots ----

    /// Records a snapshot: the file last, after everything it references is durable.
    pub fn save_snapshot(&self, snap: &Snapshot) -> Result<Id> {
        let mut bytes = snap.encode();
        if let Some(k) = &self.key {
            bytes = k.seal(SNAPSHOT_AAD, &bytes)?;
        }
        let id = Id::hash(&bytes);
        self.store.put(&snapshot_path(&id), &bytes)?;
        self.index.add_snapshot(&id, snap, &bytes)?;
        Ok(id)
    }

    /// Reads and verifies snapshot `id`'s record file (not the index's copy of it).
    pub fn read_snapshot_file(&self, id: &Id) -> Result<Snapshot> {
        let b = self
            .store
            .read(&snapshot_path(id), crate::snapshot::MAX_LEN)?;
        self.decode_snapshot(id, &b)
    }

    /// Verifies a snapshot record file's bytes against its name, opens them
    /// (encrypted repositories) and parses them.
    fn decode_snapshot(&self, id: &Id, b: &[u8]) -> Result<Snapshot> {
        let Some(k) = &self.key else {
            return Snapshot::decode(id, b);
        };
        crate::snapshot::check_id(id, b)?;
        let plain = k.open(SNAPSHOT_AAD, b).ok_or_else(|| {
            Error::corrupt("snapshot", id, "fails authentication (altered or damaged)")
        })?;
        Snapshot::parse(id, &plain)
    }

    /// All snapshots, oldest first.
    pub fn snapshots(&self) -> Result<Vec<(Id, Snapshot)>> {
        self.ensure_fresh()?;
        self.index
            .snapshots()?
            .into_iter()
            .map(|(id, rec)| Ok((id, self.decode_snapshot(&id, &rec)?)))
            .collect()
    }

    /// Resolves `latest` or a unique prefix of a snapshot id.
    pub fn find_snapshot(&self, spec: &str) -> Result<(Id, Snapshot)> {
        let all = self.snapshots()?;
        if spec == "latest" {
            return all.into_iter().last().ok_or_else(|| {
                Error::Invalid(format!(
                    "{} has no snapshots yet, so there is no `latest`; run `snap backup` first",
                    self.location()
                ))
            });
        }
        let spec_lc = spec.to_ascii_lowercase();
        let mut hits = all
            .into_iter()
            .filter(|(id, _)| id.to_hex().starts_with(&spec_lc));
        match (hits.next(), hits.next()) {
            (Some(one), None) if !spec.is_empty() => Ok(one),
            (Some(_), Some(_)) => Err(Error::Invalid(format!(
                "snapshot id prefix {spec:?} is ambiguous; give more digits"
            ))),
            _ => Err(Error::Invalid(format!(
                "snapshot {spec} not found in {}; `snap list` shows the snapshots",
                self.location()
            ))),
        }
    }

    /// Deletes snapshot records, files first (under the caller's exclusive lock). The
    /// data they referenced stays until `prune`.
    pub fn remove_snapshots(&self, ids: &[Id]) -> Result<()> {
        self.store
            .delete_all(&ids.iter().map(snapshot_path).collect::<Vec<_>>())?;
        for id in ids {
            self.index.remove_snapshot(id)?;
        }
        Ok(())
    }

    /// Makes the index's snapshot list match the files in `snapshots/`. Returns the
    /// records that cannot be read (path, reason): they are left out of the index (one
    /// damaged record must not make the repository unusable), but prune must not run
    /// while they exist, as it cannot know what they reference.
    pub fn sync_snapshots(&self) -> Result<Vec<(String, String)>> {
        let stored = listed_names(self.store.as_ref(), "snapshots")?;
        let indexed: HashSet<Id> = self
            .index
            .snapshots()?
            .into_iter()
            .map(|(id, _)| id)
            .collect();
        for id in indexed.difference(&stored) {
            self.index.remove_snapshot(id)?;
        }
        let new: Vec<Id> = stored.difference(&indexed).copied().collect();
        type Read = (Id, Result<(Snapshot, Vec<u8>)>);
        let read: Vec<Read> = new
            .par_iter()
            .map(|id| {
                let r = self
                    .store
                    .read(&snapshot_path(id), crate::snapshot::MAX_LEN)
                    .and_then(|b| Ok((self.decode_snapshot(id, &b)?, b)));
                (*id, r)
            })
            .collect();
        let mut unreadable = Vec::new();
        for (id, r) in read {
            match r {
                Ok((snap, bytes)) => self.index.add_snapshot(&id, &snap, &bytes)?,
                Err(e) => {
                    let path = format!("{}/{}", self.store.location(), snapshot_path(&id));
                    log::warn!("skipping snapshot {path}: {e}");
                    unreadable.push((path, e.to_string()));
                }
            }
        }
        unreadable.sort();
        Ok(unreadable)
    }

    // ---- index maintenance ----

    /// What the repository holds (packs, blobs, raw and stored bytes).
    pub fn totals(&self) -> Result<crate::index::Totals> {
        self.ensure_fresh()?;
        self.index.totals()
    }

    /// The index, for maintenance (marks, pack usage).
    pub(crate) fn index(&self) -> &Index {
        &self.index
    }

    /// Every pack file in the store, by name, with its size.
    pub fn pack_files(&self) -> Result<Vec<(Id, u64)>> {
        listed_ids(self.store.as_ref(), "packs")
    }

    /// The entries of pack `id`, `len` bytes long as the store lists it, from its
    /// validated trailer.
    pub fn pack_trailer(&self, id: &Id, len: u64) -> Result<Vec<pack::PackEntry>> {
        let path = pack_path(id);
        let name = id.to_hex();
        if len < pack::HEADER_LEN + pack::FOOTER_LEN as u64 {
            return Err(Error::corrupt("pack", &name, format!("only {len} bytes")));
        }
        let header = self.store.read_at(&path, 0, pack::HEADER_LEN as usize)?;
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
    pub fn unindexed_packs(&self) -> Result<Vec<Id>> {
        let known = self.index.pack_names()?;
        let mut out: Vec<Id> = self
            .pack_files()?
            .into_iter()
            .map(|(id, _)| id)
            .filter(|id| !known.contains(id))
            .collect();
        out.sort();
        Ok(out)
    }

    /// Deletes pack files (under the exclusive lock, after no index file lists them).
    pub fn delete_packs(&self, packs: &[Id]) -> Result<()> {
        self.store
            .delete_all(&packs.iter().map(pack_path).collect::<Vec<_>>())
    }

    /// Deletes index files (under the exclusive lock, once others list what they did).
    pub fn delete_index_files(&self, files: &[Id]) -> Result<()> {
        self.store
            .delete_all(&files.iter().map(index_path).collect::<Vec<_>>())
    }

    /// Removes leftover temp files of writers that are gone (see
    /// [`crate::store::temp_is_orphan`]), under the exclusive lock: in the store's
    /// `tmp/` and in the local `tmp/` of packs being written; returns how many.
    pub fn clean_tmp(&self) -> Result<u64> {
        let mut n = 0;
        // Only those of writers that are gone: a process taking a lock writes its lock
        // file through `tmp/` even while another holds the exclusive lock.
        for e in self.store.list("tmp")? {
            if crate::store::temp_is_orphan(&e) {
                log::debug!("removing leftover temp file {}", e.path);
                if self.store.delete(&e.path).is_ok() {
                    n += 1;
                }
            }
        }
        match self.store.local_root() {
            None => {
                let tmp = self.tmp_dir();
                for e in fs::read_dir(&tmp).at(&tmp)?.flatten() {
                    let entry = crate::store::Entry {
                        path: e.file_name().to_string_lossy().into_owned(),
                        size: 0,
                        modified: e.metadata().ok().and_then(|m| m.modified().ok()),
                    };
                    if crate::store::temp_is_orphan(&entry) && fs::remove_file(e.path()).is_ok() {
                        n += 1;
                    }
                }
            }
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

    /// Creates a temp file for a new pack.
    fn new_pack_file(&self) -> Result<tempfile::NamedTempFile> {
        let tmp = self.tmp_dir();
        tempfile::Builder::new()
            .prefix(&format!("{}pack-", crate::store::temp_prefix()))
            .tempfile_in(&tmp)
            .at(&tmp)
    }
}

/// Splits blobs (in file order) into runs stored back to back in one pack, each at
/// most 4 MiB so that a batch still decodes on several cores; returns index ranges.
fn runs(blobs: &[(Id, BlobLoc)]) -> Vec<std::ops::Range<usize>> {
    const MAX_RUN: u64 = 4 << 20;
    let mut out = Vec::new();
    let mut start = 0;
    let mut span = 0u64;
    for i in 0..blobs.len() {
        let loc = &blobs[i].1;
        let joins = i > start && {
            let prev = &blobs[i - 1].1;
            prev.pack == loc.pack
                && prev.offset + u64::from(prev.stored_len) == loc.offset
                && span + u64::from(loc.stored_len) <= MAX_RUN
        };
        if !joins && i > start {
            out.push(start..i);
            start = i;
            span = 0;
        }
        span += u64::from(loc.stored_len);
    }
    if start < blobs.len() {
        out.push(start..blobs.len());
    }
    out
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

    fn at(pack: u8, offset: u64, len: u32) -> (Id, BlobLoc) {
        (
            Id::hash(&offset.to_le_bytes()),
            BlobLoc {
                pack: Id::hash(&[pack]),
                offset,
                stored_len: len,
                raw_len: len,
                kind: pack::BlobKind::Data,
                compression: Compression::Raw,
            },
        )
    }

    #[test]
    fn init_takes_the_skeleton_an_interrupted_init_left_but_no_other_file() {
        let d = tempfile::tempdir().unwrap();
        let root = d.path().join("repo");
        std::fs::create_dir_all(root.join("packs/0a")).unwrap();
        std::fs::create_dir_all(root.join("tmp")).unwrap();
        std::fs::write(root.join("tmp/host.1.config"), b"{").unwrap();
        Repository::init(&root, &Default::default()).unwrap();
        let other = d.path().join("other");
        std::fs::create_dir_all(other.join("tmp")).unwrap();
        std::fs::write(other.join("notes.txt"), b"mine").unwrap();
        let e = Repository::init(&other, &Default::default()).err().unwrap();
        assert!(e.to_string().contains("not empty"), "{e}");
    }

    #[test]
    fn runs_join_adjacent_blobs_of_one_pack_up_to_the_cap() {
        let big = 3 << 20;
        let blobs = vec![
            at(1, 16, 100),
            at(1, 116, 50),
            at(1, 200, 10), // a gap
            at(2, 210, 10), // another pack
            at(2, 220, big),
            at(2, 220 + big as u64, big), // would pass 4 MiB
        ];
        let lens: Vec<usize> = runs(&blobs).iter().map(|r| r.len()).collect();
        assert_eq!(lens, vec![2, 1, 2, 1]);
        assert!(runs(&[]).is_empty());
    }
}
