//! Reading what snapshots are made of: directory trees, the chunk lists of file
//! contents, streaming contents out, and walking and searching trees.

use std::io::{Read, Write};
use std::path::PathBuf;

use rayon::prelude::*;

use super::blobs::runs;
use super::{PathLookup, Repository};
use crate::error::{Error, Result};
use crate::format::id::{DataId, Id, TreeId};
use crate::format::tree::{Content, ListNode, Meta, Node, NodeKind, Tree};
use crate::repo::index::BlobLoc;

impl Repository {
    /// Loads a directory tree.
    pub fn load_tree(&self, id: &TreeId) -> Result<Tree> {
        Tree::decode(id, &self.read_blob(&id.0)?)
    }

    /// Calls `f` with every data chunk id of `content`, in file order (see
    /// [`Repository::chunk_ids`]).
    pub fn for_each_chunk(
        &self,
        content: &Content,
        f: &mut dyn FnMut(DataId) -> Result<()>,
    ) -> Result<()> {
        self.chunk_ids(content).try_for_each(|id| f(id?))
    }

    /// The data chunk ids of `content` in file order, expanding list nodes as they are
    /// reached (memory: one list node per level).
    pub fn chunk_ids<'r>(&'r self, content: &Content) -> impl Iterator<Item = Result<DataId>> + 'r {
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
                return Some(Ok(DataId(id)));
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
            let loc = self.locate(&id.0)?;
            bytes += u64::from(loc.raw_len);
            batch.push((id.0, loc));
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

    /// A reader of a file's bytes in order, one verified chunk in memory at a time: for
    /// consumers that pull (`std::io::copy`, archive writers). Errors reach the reader
    /// as `io::Error`s wrapping the repository's [`Error`].
    pub fn content_reader<'r>(&'r self, content: &Content) -> impl Read + 'r {
        ContentReader {
            repo: self,
            ids: Box::new(self.chunk_ids(content)),
            chunk: Vec::new(),
            pos: 0,
        }
    }

    /// Finds the node at `path` (components) below tree `root`; the empty path is the
    /// root itself, returned as a directory node.
    pub fn find_node(&self, root: &TreeId, path: &[Vec<u8>]) -> Result<Option<Node>> {
        if path.is_empty() {
            return Ok(Some(Node {
                name: b"/".to_vec(),
                kind: NodeKind::Dir(*root),
                meta: Meta::default(),
            }));
        }
        PathLookup::new(self, *root).node(path)
    }

    /// Calls `f` for every entry below tree `tree`, depth first in name order, with its
    /// path (`prefix/name`, names shown lossily as UTF-8).
    pub fn walk(
        &self,
        tree: &TreeId,
        prefix: &str,
        f: &mut dyn FnMut(&str, &Node) -> Result<()>,
    ) -> Result<()> {
        for n in self.load_tree(tree)?.nodes {
            let path = format!("{prefix}/{}", crate::format::tree::shown_name(&n.name));
            f(&path, &n)?;
            if let NodeKind::Dir(sub) = &n.kind {
                self.walk(sub, &path, f)?;
            }
        }
        Ok(())
    }
}

/// See [`Repository::content_reader`].
struct ContentReader<'r> {
    repo: &'r Repository,
    ids: Box<dyn Iterator<Item = Result<DataId>> + 'r>,
    /// The chunk being read, and how much of it was read.
    chunk: Vec<u8>,
    pos: usize,
}

impl Read for ContentReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.pos == self.chunk.len() {
            let Some(id) = self.ids.next() else {
                return Ok(0);
            };
            self.chunk = id
                .and_then(|id| self.repo.read_blob(&id.0))
                .map_err(std::io::Error::other)?;
            self.pos = 0;
        }
        let n = buf.len().min(self.chunk.len() - self.pos);
        buf[..n].copy_from_slice(&self.chunk[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}
