//! A repository directory: layout, config, index, reading blobs, and the commit
//! protocol for new packs and snapshots.
//!
//! ```text
//! <repo>/config                 JSON, written once by init
//! <repo>/packs/<2 hex>/<id>     immutable pack files, named by the BLAKE3 of their bytes
//! <repo>/snapshots/<id>         immutable snapshot records, named by their BLAKE3
//! <repo>/locks/<random>.json    one per running process
//! <repo>/tmp/                   files being written (renamed into place when durable)
//! <repo>/index.sqlite           the rebuildable index
//! ```
//! Write order (a crash at any point leaves only complete snapshots visible): pack to
//! `tmp/`, fsync, rename, fsync directory; then its index rows; the snapshot record
//! last. Anything unreferenced is garbage for prune, never damage.

mod config;
pub mod keys;
mod lock;
mod lookup;
mod repack;
mod saver;

use std::collections::{HashMap, HashSet};
use std::fs::{self, File};
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use chrono::Utc;
use rayon::prelude::*;

pub use self::config::{Config, ConfigFile, VERSION, VERSION_ENCRYPTED};
pub use self::lock::{hostname, Lock};
pub use self::lookup::PathLookup;
pub use self::repack::Repacker;
pub use self::saver::{Added, Saver};
use crate::chunker::{ChunkParams, Profiles};
use crate::compress::{self, Compression};
use crate::crypto::{Kdf, MasterKey, OVERHEAD};
use crate::error::{Error, IoContext, Result};
use crate::id::Id;
use crate::index::{BlobLoc, Index};
use crate::pack;
use crate::snapshot::Snapshot;
use crate::tree::{Content, ListNode, Node, NodeKind, Tree, MAX_META_BLOB};

const INDEX_FILE: &str = "index.sqlite";
const OPEN_PACKS: usize = 64;

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

/// What `rebuild_index` found.
#[derive(Clone, Debug, Default)]
pub struct RebuildStats {
    /// Packs indexed.
    pub packs: u64,
    /// Blobs indexed.
    pub blobs: u64,
    /// Snapshots indexed.
    pub snapshots: u64,
    /// Packs that could not be read, with the reason; the index stays incomplete.
    pub skipped: Vec<String>,
}

/// An open repository.
pub struct Repository {
    root: PathBuf,
    config: Config,
    index: Index,
    open_packs: Mutex<HashMap<Id, Arc<File>>>,
    /// The master key of an encrypted repository.
    key: Option<MasterKey>,
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

fn fsync_dir(dir: &Path) -> Result<()> {
    File::open(dir).and_then(|d| d.sync_all()).at(dir)
}

fn read_capped(path: &Path, cap: u64) -> Result<Vec<u8>> {
    let len = fs::metadata(path).at(path)?.len();
    if len > cap {
        return Err(Error::corrupt(
            "file",
            path.display(),
            format!("{len} bytes, more than the {cap} allowed"),
        ));
    }
    fs::read(path).at(path)
}

/// Reads `<root>/config`, not yet opened.
fn read_config(root: &Path) -> Result<ConfigFile> {
    let path = root.join("config");
    if !path.exists() {
        return Err(Error::NotFound {
            what: "repository",
            id: format!(
                "{} (no config file; run `snap init --repo {}`)",
                root.display(),
                root.display()
            ),
        });
    }
    ConfigFile::decode(&read_capped(&path, config::MAX_LEN)?)
}

/// Writes `bytes` to `dest` durably and atomically: temp file in `tmp`, fsync, rename,
/// fsync of the destination directory.
fn write_atomic(tmp: &Path, dest: &Path, bytes: &[u8]) -> Result<()> {
    let mut f = tempfile::NamedTempFile::new_in(tmp).at(tmp)?;
    f.write_all(bytes).at(f.path())?;
    f.as_file().sync_all().at(f.path())?;
    f.persist(dest).map_err(|e| e.error).at(dest)?;
    fsync_dir(dest.parent().expect("repository files have a parent"))
}

impl Repository {
    /// Creates an unencrypted repository at `root` (which must not exist or be empty).
    pub fn init(root: &Path, opts: &InitOptions) -> Result<Repository> {
        Repository::create(root, opts, None)
    }

    /// Creates an encrypted repository at `root` with a new random master key, wrapped
    /// by `passphrase` in its first key file.
    pub fn init_encrypted(
        root: &Path,
        opts: &InitOptions,
        passphrase: &[u8],
        kdf: Kdf,
    ) -> Result<Repository> {
        let key = MasterKey::generate()?;
        Repository::create(root, opts, Some((key, passphrase, kdf)))
    }

    fn create(
        root: &Path,
        opts: &InitOptions,
        encrypt: Option<(MasterKey, &[u8], Kdf)>,
    ) -> Result<Repository> {
        for p in [opts.chunking.files, opts.chunking.dump] {
            p.validate().map_err(Error::Invalid)?;
        }
        if root.join("config").exists() {
            return Err(Error::Invalid(format!(
                "{} is already a snap repository",
                root.display()
            )));
        }
        if root.exists() && fs::read_dir(root).at(root)?.next().is_some() {
            return Err(Error::Invalid(format!(
                "{} exists and is not empty; choose an empty or new directory",
                root.display()
            )));
        }
        for d in ["packs", "snapshots", "locks", "tmp"] {
            fs::create_dir_all(root.join(d)).at(root.join(d))?;
        }
        let mut id = [0u8; 32];
        getrandom::getrandom(&mut id).map_err(|e| Error::Invalid(format!("no randomness: {e}")))?;
        let config = Config {
            version: if encrypt.is_some() {
                VERSION_ENCRYPTED
            } else {
                VERSION
            },
            id: hex::encode(id),
            created: Utc::now(),
            chunking: opts.chunking,
            compression_level: opts.compression_level,
            pack_size: opts.pack_size,
        };
        let key = match encrypt {
            Some((key, passphrase, kdf)) => {
                keys::add(root, &key, passphrase, kdf)?;
                Some(key)
            }
            None => None,
        };
        let bytes = config.encode(key.as_ref())?;
        write_atomic(&root.join("tmp"), &root.join("config"), &bytes)?;
        Repository::open_with(root, key)
    }

    /// Whether the repository at `root` is encrypted (then it opens only with
    /// [`Repository::open_with`] and its key); also the repository's id.
    pub fn probe(root: &Path) -> Result<(bool, String)> {
        Ok(match read_config(root)? {
            ConfigFile::Plain(c) => (false, c.id),
            ConfigFile::Sealed { id, .. } => (true, id),
        })
    }

    /// Opens the unencrypted repository at `root`, bringing the index up to date with
    /// the snapshot files (and rebuilding it from the packs when it is missing or
    /// unusable).
    pub fn open(root: &Path) -> Result<Repository> {
        Repository::open_with(root, None)
    }

    /// Opens the repository at `root` with its master key (`None`: unencrypted).
    pub fn open_with(root: &Path, key: Option<MasterKey>) -> Result<Repository> {
        let config = read_config(root)?.open(key.as_ref())?;
        let index_path = root.join(INDEX_FILE);
        let index = match Index::open(&index_path, &config.id)? {
            Some(i) => i,
            None => {
                log::warn!(
                    "index {} belongs to another repository or version; rebuilding it",
                    index_path.display()
                );
                remove_index_files(root)?;
                Index::open(&index_path, &config.id)?.ok_or_else(|| {
                    Error::Invalid(format!("cannot create index {}", index_path.display()))
                })?
            }
        };
        let repo = Repository {
            root: root.to_path_buf(),
            config,
            index,
            open_packs: Mutex::new(HashMap::new()),
            key,
        };
        if !repo.index.is_complete()? {
            let stats = repo.fill_index()?;
            if stats.packs > 0 && stats.skipped.is_empty() {
                log::warn!(
                    "index {} was missing or incomplete; rebuilt it from {} packs",
                    index_path.display(),
                    stats.packs
                );
            }
        }
        repo.sync_snapshots()?;
        Ok(repo)
    }

    /// The repository directory.
    pub fn root(&self) -> &Path {
        &self.root
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

    /// Takes a shared (`exclusive = false`) or exclusive lock.
    pub fn lock(&self, exclusive: bool, purpose: &str) -> Result<Lock> {
        Lock::acquire(&self.root.join("locks"), exclusive, purpose)
    }

    /// A writer of new blobs at zstd `level`.
    pub fn saver(&self, level: i32) -> Saver<'_> {
        Saver::new(self, level)
    }

    fn pack_path(&self, id: &Id) -> PathBuf {
        let hex = id.to_hex();
        self.root.join("packs").join(&hex[..2]).join(hex)
    }

    fn tmp_dir(&self) -> PathBuf {
        self.root.join("tmp")
    }

    fn pack_file(&self, id: &Id) -> Result<Arc<File>> {
        let mut open = self.open_packs.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(f) = open.get(id) {
            return Ok(f.clone());
        }
        let path = self.pack_path(id);
        let f = Arc::new(File::open(&path).at(&path)?);
        if open.len() >= OPEN_PACKS {
            open.clear();
        }
        open.insert(*id, f.clone());
        Ok(f)
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
        self.decode(id, loc, stored)
    }

    /// Reads blob `id` as stored (compressed or not) after verifying it decodes to its
    /// id, for copying into a new pack unchanged.
    pub fn read_stored(&self, id: &Id, loc: &BlobLoc) -> Result<Vec<u8>> {
        let stored = self.fetch(id, loc)?;
        self.decode(id, loc, stored.clone())?;
        Ok(stored)
    }

    /// The stored bytes of blob `id`, after checking that the lengths are plausible.
    fn fetch(&self, id: &Id, loc: &BlobLoc) -> Result<Vec<u8>> {
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
        let f = self.pack_file(&loc.pack)?;
        let mut stored = vec![0u8; loc.stored_len as usize];
        f.read_exact_at(&mut stored, loc.offset).map_err(|e| {
            Error::corrupt(
                "blob",
                id,
                format!("cannot read {} at {}: {e}", pack_name(), loc.offset),
            )
        })?;
        Ok(stored)
    }

    /// Opens (encrypted repositories) and decompresses stored bytes, and checks that
    /// they hash to `id`.
    fn decode(&self, id: &Id, loc: &BlobLoc, stored: Vec<u8>) -> Result<Vec<u8>> {
        let pack_name = || format!("packs/{}", loc.pack);
        let stored = match &self.key {
            Some(k) => k.open(&blob_aad(id, loc.kind), &stored).ok_or_else(|| {
                Error::corrupt(
                    "blob",
                    id,
                    format!(
                        "in {} fails authentication (altered or damaged)",
                        pack_name()
                    ),
                )
            })?,
            None => stored,
        };
        let raw = match loc.compression {
            Compression::Raw => stored,
            Compression::Zstd => compress::decompress(&stored, loc.raw_len as usize)
                .map_err(|e| Error::corrupt("blob", id, format!("in {}: {e}", pack_name())))?,
        };
        let actual = self.blob_id(&raw);
        if actual != *id {
            return Err(Error::ChecksumMismatch {
                what: format!("blob in {}", pack_name()),
                expected: id.to_hex(),
                actual: actual.to_hex(),
            });
        }
        Ok(raw)
    }

    /// Loads a directory tree.
    pub fn load_tree(&self, id: &Id) -> Result<Tree> {
        Tree::decode(id, &self.read_blob(id)?)
    }

    /// Calls `f` with every data chunk id of `content`, in file order, expanding list
    /// nodes as it goes (memory: one list node per level).
    pub fn for_each_chunk(
        &self,
        content: &Content,
        f: &mut dyn FnMut(Id) -> Result<()>,
    ) -> Result<()> {
        self.visit_ids(content.depth, &content.ids, f)
    }

    fn visit_ids(&self, depth: u8, ids: &[Id], f: &mut dyn FnMut(Id) -> Result<()>) -> Result<()> {
        for id in ids {
            if depth == 0 {
                f(*id)?;
            } else {
                let node = self.list_node(id, depth - 1)?;
                self.visit_ids(node.level, &node.ids, f)?;
            }
        }
        Ok(())
    }

    /// Reads list node `id`, which must be of `level`.
    fn list_node(&self, id: &Id, level: u8) -> Result<ListNode> {
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

    /// Feeds a file's chunks, verified, in order to `sink`; chunks are read and
    /// decompressed in parallel batches of bounded size (32 MiB).
    pub fn read_content(
        &self,
        content: &Content,
        sink: &mut dyn FnMut(&[u8]) -> Result<()>,
    ) -> Result<()> {
        const BATCH_BYTES: u64 = 32 << 20;
        let mut batch: Vec<(Id, BlobLoc)> = Vec::new();
        let mut batch_bytes = 0u64;
        let mut flush = |batch: &mut Vec<(Id, BlobLoc)>| -> Result<()> {
            let chunks: Vec<Vec<u8>> = if batch.len() > 1 {
                batch
                    .par_iter()
                    .map(|(id, loc)| self.read_blob_at(id, loc))
                    .collect::<Result<_>>()?
            } else {
                batch
                    .iter()
                    .map(|(id, loc)| self.read_blob_at(id, loc))
                    .collect::<Result<_>>()?
            };
            for c in chunks {
                sink(&c)?;
            }
            batch.clear();
            Ok(())
        };
        self.for_each_chunk(content, &mut |id| {
            let loc = self.locate(&id)?;
            batch_bytes += loc.raw_len as u64;
            batch.push((id, loc));
            if batch_bytes >= BATCH_BYTES {
                flush(&mut batch)?;
                batch_bytes = 0;
            }
            Ok(())
        })?;
        flush(&mut batch)
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

    fn snapshot_path(&self, id: &Id) -> PathBuf {
        self.root.join("snapshots").join(id.to_hex())
    }

    /// Records a snapshot: the file last, after everything it references is durable.
    pub fn save_snapshot(&self, snap: &Snapshot) -> Result<Id> {
        let mut bytes = snap.encode();
        if let Some(k) = &self.key {
            bytes = k.seal(SNAPSHOT_AAD, &bytes)?;
        }
        let id = Id::hash(&bytes);
        write_atomic(&self.tmp_dir(), &self.snapshot_path(&id), &bytes)?;
        self.index.add_snapshot(&id, snap, &bytes)?;
        Ok(id)
    }

    /// Reads and verifies snapshot `id`'s record file (not the index's copy of it).
    pub fn read_snapshot_file(&self, id: &Id) -> Result<Snapshot> {
        let path = self.snapshot_path(id);
        self.decode_snapshot(id, &read_capped(&path, crate::snapshot::MAX_LEN)?)
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
            return all.into_iter().last().ok_or_else(|| Error::NotFound {
                what: "snapshot",
                id: "latest (the repository has no snapshots)".into(),
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
            _ => Err(Error::NotFound {
                what: "snapshot",
                id: spec.to_string(),
            }),
        }
    }

    /// Deletes snapshot records, files first (under the caller's exclusive lock). The
    /// data they referenced stays until `prune`.
    pub fn remove_snapshots(&self, ids: &[Id]) -> Result<()> {
        for id in ids {
            let path = self.snapshot_path(id);
            match fs::remove_file(&path) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e).at(&path),
                _ => {}
            }
        }
        fsync_dir(&self.root.join("snapshots"))?;
        for id in ids {
            self.index.remove_snapshot(id)?;
        }
        Ok(())
    }

    /// Makes the index's snapshot list match the files in `snapshots/` (done on open;
    /// again after taking a lock, for snapshots other processes made since). Returns
    /// the records that cannot be read, with the reason: they are left out of the
    /// index (one damaged record must not make the repository unusable), but prune
    /// must not run while they exist, as it cannot know what they reference.
    pub fn sync_snapshots(&self) -> Result<Vec<(PathBuf, String)>> {
        let dir = self.root.join("snapshots");
        let mut on_disk = HashSet::new();
        for e in fs::read_dir(&dir).at(&dir)? {
            let e = e.at(&dir)?;
            if let Some(id) = e.file_name().to_str().and_then(Id::from_hex) {
                on_disk.insert(id);
            }
        }
        let indexed: HashSet<Id> = self
            .index
            .snapshots()?
            .into_iter()
            .map(|(id, _)| id)
            .collect();
        for id in indexed.difference(&on_disk) {
            self.index.remove_snapshot(id)?;
        }
        let mut unreadable = Vec::new();
        for id in on_disk.difference(&indexed) {
            let path = self.snapshot_path(id);
            let snap = read_capped(&path, crate::snapshot::MAX_LEN)
                .and_then(|b| Ok((self.decode_snapshot(id, &b)?, b)));
            match snap {
                Ok((snap, bytes)) => self.index.add_snapshot(id, &snap, &bytes)?,
                Err(e) => {
                    log::warn!("skipping snapshot {}: {e}", path.display());
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
        self.index.totals()
    }

    /// The index, for maintenance (marks, pack usage).
    pub(crate) fn index(&self) -> &Index {
        &self.index
    }

    /// Every pack file in `packs/`, by name.
    pub fn pack_files(&self) -> Result<Vec<(Id, PathBuf)>> {
        let packs_dir = self.root.join("packs");
        let mut paths = Vec::new();
        for sub in fs::read_dir(&packs_dir).at(&packs_dir)? {
            let sub = sub.at(&packs_dir)?.path();
            if !sub.is_dir() {
                continue;
            }
            for e in fs::read_dir(&sub).at(&sub)? {
                let p = e.at(&sub)?.path();
                if let Some(id) = p
                    .file_name()
                    .and_then(|n| n.to_str())
                    .and_then(Id::from_hex)
                {
                    paths.push((id, p));
                }
            }
        }
        Ok(paths)
    }

    /// The entries and file size of pack `id`, from its validated trailer.
    pub fn pack_trailer(&self, id: &Id) -> Result<(Vec<pack::PackEntry>, u64)> {
        read_pack_trailer(&self.pack_path(id), self.key.as_ref())
    }

    /// Indexes pack files the index does not know (left by a backup or prune that was
    /// interrupted between writing a pack and indexing it); returns how many. Their
    /// blobs are mostly copies of indexed ones, garbage for prune.
    pub fn index_unknown_packs(&self) -> Result<u64> {
        let known: HashSet<Id> = self
            .index
            .packs_by_verification()?
            .into_iter()
            .map(|(id, _)| id)
            .collect();
        let mut found = 0;
        for (id, path) in self.pack_files()? {
            if known.contains(&id) {
                continue;
            }
            let (entries, size) = read_pack_trailer(&path, self.key.as_ref())?;
            self.index.add_pack(&id, size, &entries)?;
            found += 1;
        }
        Ok(found)
    }

    /// Deletes pack files the index no longer names (under the exclusive lock).
    pub fn delete_packs(&self, packs: &[Id]) -> Result<()> {
        let mut dirs = HashSet::new();
        self.open_packs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clear();
        for id in packs {
            let path = self.pack_path(id);
            match fs::remove_file(&path) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e).at(&path),
                _ => {}
            }
            dirs.insert(
                path.parent()
                    .expect("pack paths have a parent")
                    .to_path_buf(),
            );
        }
        for d in dirs {
            fsync_dir(&d)?;
        }
        Ok(())
    }

    /// Removes leftover temp files of interrupted writers (under the exclusive lock);
    /// returns how many.
    pub fn clean_tmp(&self) -> Result<u64> {
        let tmp = self.tmp_dir();
        let mut n = 0;
        for e in fs::read_dir(&tmp).at(&tmp)?.flatten() {
            log::debug!("removing leftover temp file {}", e.path().display());
            if fs::remove_file(e.path()).is_ok() {
                n += 1;
            }
        }
        Ok(n)
    }

    /// Builds the index anew from pack trailers and snapshot files, under the exclusive
    /// lock. A usable index file is emptied in place (processes that opened it before
    /// the lock keep writing to the file everyone reads); an unusable one is replaced.
    /// Leftover temp files are removed too: no writer runs under the exclusive lock.
    pub fn rebuild_index(root: &Path, key: Option<MasterKey>) -> Result<RebuildStats> {
        let config = read_config(root)?.open(key.as_ref())?;
        let _lock = Lock::acquire(&root.join("locks"), true, "repair index")?;
        let index_path = root.join(INDEX_FILE);
        let reused = match Index::open(&index_path, &config.id) {
            Ok(Some(i)) => i.clear().ok().map(|()| i),
            _ => None,
        };
        let index = match reused {
            Some(i) => i,
            None => {
                remove_index_files(root)?;
                Index::open(&index_path, &config.id)?
                    .ok_or_else(|| Error::Invalid("cannot create a fresh index".into()))?
            }
        };
        let repo = Repository {
            root: root.to_path_buf(),
            index,
            config,
            open_packs: Mutex::new(HashMap::new()),
            key,
        };
        repo.clean_tmp()?;
        let mut stats = repo.fill_index()?;
        repo.sync_snapshots()?;
        stats.snapshots = repo.index.snapshots()?.len() as u64;
        Ok(stats)
    }

    /// Indexes every pack file; marks the index complete only when every pack could be
    /// read (an index missing a pack's blobs would let backups reference them).
    fn fill_index(&self) -> Result<RebuildStats> {
        let paths = self.pack_files()?;
        let blobs = std::sync::atomic::AtomicU64::new(0);
        let skipped = Mutex::new(Vec::new());
        paths.par_iter().try_for_each(|(id, path)| -> Result<()> {
            match read_pack_trailer(path, self.key.as_ref()) {
                Ok((entries, size)) => {
                    blobs.fetch_add(entries.len() as u64, std::sync::atomic::Ordering::Relaxed);
                    self.index.add_pack(id, size, &entries)
                }
                Err(e) => {
                    log::warn!("unreadable pack {}: {e}", path.display());
                    skipped
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .push(format!("{}: {e}", path.display()));
                    Ok(())
                }
            }
        })?;
        let skipped = skipped.into_inner().unwrap_or_else(|p| p.into_inner());
        if skipped.is_empty() {
            self.index.mark_complete()?;
        }
        Ok(RebuildStats {
            packs: (paths.len() - skipped.len()) as u64,
            blobs: blobs.into_inner(),
            snapshots: 0,
            skipped,
        })
    }

    /// Creates a temp file for a new pack.
    fn new_pack_file(&self) -> Result<tempfile::NamedTempFile> {
        let tmp = self.tmp_dir();
        tempfile::Builder::new()
            .prefix("pack-")
            .tempfile_in(&tmp)
            .at(&tmp)
    }

    /// Makes a finished pack durable under its final name, then indexes it.
    fn commit_pack(
        &self,
        file: tempfile::NamedTempFile,
        id: &Id,
        size: u64,
        entries: &[pack::PackEntry],
    ) -> Result<()> {
        self.persist_pack(file, id)?;
        self.index.add_pack(id, size, entries)
    }

    /// Makes a finished pack durable under its final name (not yet indexed).
    fn persist_pack(&self, file: tempfile::NamedTempFile, id: &Id) -> Result<()> {
        file.as_file().sync_all().at(file.path())?;
        let dest = self.pack_path(id);
        let dir = dest
            .parent()
            .expect("pack paths have a parent")
            .to_path_buf();
        if !dir.exists() {
            fs::create_dir_all(&dir).at(&dir)?;
            fsync_dir(&self.root.join("packs"))?;
        }
        file.persist(&dest).map_err(|e| e.error).at(&dest)?;
        fsync_dir(&dir)
    }
}

fn remove_index_files(root: &Path) -> Result<()> {
    for suffix in ["", "-wal", "-shm"] {
        let p = root.join(format!("{INDEX_FILE}{suffix}"));
        match fs::remove_file(&p) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e).at(&p),
            _ => {}
        }
    }
    Ok(())
}

/// Reads and validates a pack's header and trailer; returns its entries and size.
fn read_pack_trailer(path: &Path, key: Option<&MasterKey>) -> Result<(Vec<pack::PackEntry>, u64)> {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let f = File::open(path).at(path)?;
    let len = f.metadata().at(path)?.len();
    if len < pack::HEADER_LEN + pack::FOOTER_LEN as u64 {
        return Err(Error::corrupt("pack", &name, format!("only {len} bytes")));
    }
    let mut header = [0u8; pack::HEADER_LEN as usize];
    f.read_exact_at(&mut header, 0).at(path)?;
    pack::check_header(&name, &header)?;
    let mut footer = [0u8; pack::FOOTER_LEN];
    f.read_exact_at(&mut footer, len - pack::FOOTER_LEN as u64)
        .at(path)?;
    let (start, n) = pack::decode_footer(&name, &footer, len, key.is_some())?;
    let mut entries = vec![0u8; n];
    f.read_exact_at(&mut entries, start).at(path)?;
    Ok((
        pack::decode_entries(&name, &footer, &entries, len, key)?,
        len,
    ))
}
