//! Random access to file contents for the mount: a file's content is a list of chunks,
//! so an offset is found by a binary search over the chunks' end offsets (a
//! [`FileMap`], built when the file is opened), and the chunk is read from its pack,
//! verified, and kept in a cache of decoded chunks bounded in bytes ([`Lru`]).
//!
//! Memory: the chunk cache's budget, plus the chunks being read (one per reading
//! thread, at most [`ChunkParams::MAX_CHUNK`](crate::format::chunker::ChunkParams::MAX_CHUNK)
//! each), plus about 100 bytes per chunk of each file in use (its id, place and end) (a recent-files cache of those
//! maps is bounded too). Nothing here grows with what was read before.
//!
//! A chunk is read once even when several threads ask for it at the same time (the
//! later ones wait for the first), and a sequential reader has its next chunk read
//! ahead on the thread pool.

use std::collections::{BTreeMap, HashMap};
use std::hash::Hash;
use std::sync::{Arc, Mutex};

use crate::error::{Error, Result};
use crate::format::id::{DataId, Id};
use crate::format::tree::Content;
use crate::locked;
use crate::repo::index::BlobLoc;
use crate::repo::Repository;

/// A map bounded by the total cost of its values, dropping the least recently used
/// first (the newest entry always stays, whatever its cost).
pub(super) struct Lru<K, V> {
    entries: HashMap<K, (V, u64, u64)>,
    /// Entries by the tick of their last use.
    order: BTreeMap<u64, K>,
    tick: u64,
    used: u64,
    budget: u64,
}

impl<K: Hash + Eq + Clone, V: Clone> Lru<K, V> {
    pub(super) fn new(budget: u64) -> Self {
        Lru {
            entries: HashMap::new(),
            order: BTreeMap::new(),
            tick: 0,
            used: 0,
            budget,
        }
    }

    /// The value of `k`, now the most recently used.
    pub(super) fn get(&mut self, k: &K) -> Option<V> {
        let (v, at, _) = self.entries.get_mut(k)?;
        self.order.remove(at);
        self.tick += 1;
        *at = self.tick;
        self.order.insert(self.tick, k.clone());
        Some(v.clone())
    }

    /// Adds `v` under `k`, costing `cost`, and drops the least recently used entries
    /// until the total is within the budget again.
    pub(super) fn insert(&mut self, k: K, v: V, cost: u64) {
        self.remove(&k);
        self.tick += 1;
        self.order.insert(self.tick, k.clone());
        self.entries.insert(k, (v, self.tick, cost));
        self.used += cost;
        while self.used > self.budget && self.entries.len() > 1 {
            let Some((_, oldest)) = self.order.pop_first() else {
                break;
            };
            if let Some((_, _, c)) = self.entries.remove(&oldest) {
                self.used -= c;
            }
        }
    }

    fn remove(&mut self, k: &K) {
        if let Some((_, at, c)) = self.entries.remove(k) {
            self.order.remove(&at);
            self.used -= c;
        }
    }

    pub(super) fn clear(&mut self) {
        self.entries.clear();
        self.order.clear();
        self.used = 0;
    }

    #[cfg(test)]
    fn contains(&self, k: &K) -> bool {
        self.entries.contains_key(k)
    }
}

/// Where each chunk of one file is: chunk `i` holds bytes `ends[i-1]..ends[i]`.
pub(super) struct FileMap {
    /// The chunks in file order, with where the index says each is.
    ids: Vec<(DataId, BlobLoc)>,
    ends: Vec<u64>,
}

impl FileMap {
    /// The chunk holding byte `offset` (none at or past the end).
    fn chunk_at(&self, offset: u64) -> Option<usize> {
        let i = self.ends.partition_point(|&end| end <= offset);
        (i < self.ids.len()).then_some(i)
    }

    fn start(&self, i: usize) -> u64 {
        if i == 0 {
            0
        } else {
            self.ends[i - 1]
        }
    }
}

/// Decoded chunks, shared by every file of the mount.
pub(super) struct Chunks {
    repo: Arc<Repository>,
    cache: Mutex<Lru<Id, Arc<Vec<u8>>>>,
    /// One gate per chunk being read: a second reader waits on it, then finds the
    /// chunk in the cache.
    loading: Mutex<HashMap<Id, Arc<Mutex<()>>>>,
    /// The maps of recently opened files, by inode, bounded by their chunk count.
    maps: Mutex<Lru<u64, Arc<FileMap>>>,
}

/// Chunk entries of the recent-files map cache (id, place and end: about 100 bytes
/// each, so about 10 MiB).
const MAP_BUDGET: u64 = 100 << 10;

impl Chunks {
    /// A cache of at most about `budget` bytes of decoded chunks.
    pub(super) fn new(repo: Arc<Repository>, budget: u64) -> Self {
        Chunks {
            repo,
            cache: Mutex::new(Lru::new(budget)),
            loading: Mutex::new(HashMap::new()),
            maps: Mutex::new(Lru::new(MAP_BUDGET)),
        }
    }

    /// The chunk map of file `ino` with `content`: the chunk ids in order, located once
    /// (their lengths give the offsets; their places are where reads go).
    pub(super) fn map(&self, ino: u64, content: &Content) -> Result<Arc<FileMap>> {
        if let Some(m) = locked(&self.maps).get(&ino) {
            return Ok(m);
        }
        let (mut ids, mut ends) = (Vec::new(), Vec::new());
        let mut end = 0u64;
        self.repo.for_each_chunk(content, &mut |id| {
            let loc = self.repo.locate(&id.0)?;
            end += u64::from(loc.raw_len);
            ids.push((id, loc));
            ends.push(end);
            Ok(())
        })?;
        let map = Arc::new(FileMap { ids, ends });
        locked(&self.maps).insert(ino, map.clone(), map.ids.len() as u64);
        Ok(map)
    }

    /// Drops the file maps kept for files opened again: the places in them may be
    /// gone (a prune rewrote their packs). Open files keep theirs; the mount holds
    /// its lock while any is open.
    pub(super) fn forget_places(&self) {
        locked(&self.maps).clear();
    }

    /// Up to `size` bytes of the file of `map` from `offset` (fewer at its end), and
    /// the index of the last chunk they came from.
    pub(super) fn read(
        &self,
        map: &FileMap,
        offset: u64,
        size: usize,
    ) -> Result<(Vec<u8>, Option<usize>)> {
        let mut out = Vec::with_capacity(size.min(16 << 20));
        let mut last = None;
        let mut pos = offset;
        while out.len() < size {
            let Some(i) = map.chunk_at(pos) else { break };
            let (id, loc) = map.ids[i];
            let chunk = self.chunk(id, &loc)?;
            let at = usize::try_from(pos - map.start(i)).expect("within a chunk");
            let Some(rest) = chunk.get(at..) else {
                return Err(Error::corrupt("chunk", id.0, "shorter than the index says"));
            };
            let take = rest.len().min(size - out.len());
            out.extend_from_slice(&rest[..take]);
            pos += take as u64;
            last = Some(i);
            if take == 0 {
                break;
            }
        }
        Ok((out, last))
    }

    /// Reads chunk `i` of `map` into the cache on the thread pool, unless it is there
    /// or being read.
    pub(super) fn read_ahead(self: &Arc<Self>, map: &Arc<FileMap>, i: usize) {
        let Some(&(id, loc)) = map.ids.get(i) else {
            return;
        };
        if locked(&self.cache).get(&id.0).is_some() || locked(&self.loading).contains_key(&id.0) {
            return;
        }
        let me = self.clone();
        rayon::spawn(move || {
            // A failure is reported when the reader gets there.
            let _ = me.chunk(id, &loc);
        });
    }

    /// Chunk `id`, decoded and verified, from the cache or its place `loc` in a pack.
    fn chunk(&self, id: DataId, loc: &BlobLoc) -> Result<Arc<Vec<u8>>> {
        if let Some(c) = locked(&self.cache).get(&id.0) {
            return Ok(c);
        }
        let gate = locked(&self.loading).entry(id.0).or_default().clone();
        let _turn = locked(&gate);
        if let Some(c) = locked(&self.cache).get(&id.0) {
            return Ok(c);
        }
        let read = self.repo.read_blob_at(&id.0, loc).map(Arc::new);
        if let Ok(chunk) = &read {
            locked(&self.cache).insert(id.0, chunk.clone(), chunk.len() as u64);
        }
        // After the insert: a reader coming between the two would read it again.
        locked(&self.loading).remove(&id.0);
        read
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lru_drops_the_least_recently_used_beyond_its_budget() {
        let mut l = Lru::new(10);
        l.insert(1, "a", 4);
        l.insert(2, "b", 4);
        assert_eq!(l.get(&1), Some("a"));
        l.insert(3, "c", 4);
        assert!(l.contains(&1) && l.contains(&3) && !l.contains(&2));
        l.insert(4, "huge", 100);
        assert!(l.contains(&4) && !l.contains(&1) && !l.contains(&3));
        assert_eq!(l.used, 100);
        l.insert(4, "small", 1);
        assert_eq!(l.used, 1);
    }

    #[test]
    fn offsets_map_to_their_chunks() {
        let id = |b: u8| {
            let loc = BlobLoc {
                pack: crate::format::id::PackId(Id::hash(b"pack")),
                offset: 0,
                stored_len: 0,
                raw_len: 0,
                kind: crate::format::pack::BlobKind::Data,
                compression: crate::format::compress::Compression::Raw,
            };
            (DataId(Id::hash(&[b])), loc)
        };
        let m = FileMap {
            ids: vec![id(0), id(1), id(2)],
            ends: vec![10, 15, 30],
        };
        let at: Vec<_> = [0, 9, 10, 14, 15, 29, 30, 99]
            .iter()
            .map(|&o| m.chunk_at(o))
            .collect();
        assert_eq!(
            at,
            [
                Some(0),
                Some(0),
                Some(1),
                Some(1),
                Some(2),
                Some(2),
                None,
                None
            ]
        );
        assert_eq!(m.start(2), 15);
    }
}
