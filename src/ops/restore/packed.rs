//! Restore in pack order, for new files from a remote store. Reading each file's
//! chunks in file order costs a request per run of chunks stored side by side, and
//! files backed up together share packs. Instead the new files are gathered into a
//! window of up to [`WINDOW`] bytes, written to temporary names; then their chunks are
//! grouped by pack, the wanted part of each pack is read with one streamed request
//! (bytes between wanted chunks up to [`GAP`] are read and dropped rather than cost
//! another request), and every chunk is written to each place that holds it as it
//! arrives. The reading pool runs several packs at once, so the link stays busy while
//! chunks decode. When the window is done each file gets its length and metadata and
//! is renamed into place; a file with a chunk that cannot be read is removed and
//! reported, the others stand.

use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Mutex;

use rayon::prelude::*;

use super::{write_sparse, Check, Restorer};
use crate::error::{Error, IoContext, Result};
use crate::format::id::Id;
use crate::format::tree::{Content, Meta};
use crate::locked;
use crate::repo::index::BlobLoc;
use crate::repo::reads;

/// The most bytes of new files planned and read together.
pub(super) const WINDOW: u64 = 1 << 30;
/// The most bytes between two wanted chunks of a pack read (and dropped) to keep one
/// request: about what a round trip costs at 400 Mbit/s.
const GAP: u64 = 1 << 20;
/// The most files one read keeps open: a pack of thousands of small files must not
/// run the process out of descriptors (reads in flight times this stays far below the
/// usual limit of 1,024). A pack holds files mostly one after another, so a file
/// closed early is seldom opened again.
const OPEN_FILES: usize = 16;

/// A new file to write, its temporary file already created.
pub(super) struct Job {
    pub dest: PathBuf,
    pub tmp: PathBuf,
    pub spath: String,
    pub meta: Meta,
    pub content: Content,
}

/// The files gathered for the next read.
#[derive(Default)]
pub(super) struct Window {
    jobs: Vec<Job>,
    bytes: u64,
}

impl Window {
    /// Adds `job`; the window's files, when it is full.
    pub(super) fn push(&mut self, job: Job) -> Option<Vec<Job>> {
        self.bytes += job.meta.size;
        self.jobs.push(job);
        (self.bytes >= WINDOW).then(|| self.take())
    }

    /// The files gathered so far.
    pub(super) fn take(&mut self) -> Vec<Job> {
        self.bytes = 0;
        std::mem::take(&mut self.jobs)
    }
}

/// Where a window's chunks go: for each, its place in the pack and the places in
/// files (job, offset) that hold it.
type Wanted = HashMap<Id, (BlobLoc, Vec<(usize, u64)>)>;

impl Restorer<'_> {
    /// Writes the files of a window (see the module docs).
    pub(super) fn write_window(&self, jobs: Vec<Job>) {
        let repo = self.plan.repo;
        let failed: Vec<Mutex<Option<Error>>> = jobs.iter().map(|_| Mutex::new(None)).collect();
        let mut lens = vec![0u64; jobs.len()];
        let mut wanted: Wanted = HashMap::new();
        for (j, job) in jobs.iter().enumerate() {
            let mut at = 0u64;
            let listed = repo.for_each_chunk(&job.content, &mut |id| {
                let loc = repo.locate(&id.0)?;
                wanted
                    .entry(id.0)
                    .or_insert_with(|| (loc, Vec::new()))
                    .1
                    .push((j, at));
                at += u64::from(loc.raw_len);
                Ok(())
            });
            lens[j] = at;
            if let Err(e) = listed {
                *locked(&failed[j]) = Some(e);
            }
        }
        let mut blobs: Vec<(Id, BlobLoc)> = wanted.iter().map(|(id, (l, _))| (*id, *l)).collect();
        blobs.sort_by_key(|(_, l)| (l.pack, l.offset));
        let mut groups: Vec<&[(Id, BlobLoc)]> = reads(&blobs, GAP, u64::MAX)
            .into_iter()
            .map(|r| &blobs[r])
            .collect();
        // The largest reads first: the last ones to finish are then short.
        groups.sort_by_key(|g| std::cmp::Reverse(g.len()));
        groups.par_iter().for_each(|group| {
            if crate::interrupt::requested() {
                return;
            }
            let mut files = HashMap::new();
            let mut done = 0;
            let streamed = repo.read_pack_stream(group, &mut |id, raw| {
                done += 1;
                self.deliver(id, raw, &wanted[id].1, &jobs, &failed, &mut files);
            });
            if streamed.is_err() {
                // Whatever the stream did not bring, one blob at a time: only a blob that
                // cannot be read fails its files.
                for (id, loc) in &group[done..] {
                    let raw = repo.read_blob_at(id, loc);
                    self.deliver(id, raw, &wanted[id].1, &jobs, &failed, &mut files);
                }
            }
        });
        jobs.into_par_iter()
            .zip(failed)
            .zip(lens)
            .for_each(|((job, failed), len)| {
                let failed = failed
                    .into_inner()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                self.finish(job, len, failed);
            });
    }

    /// Writes chunk `id` (or its error) to each place of `places`, opening the files
    /// this read has not opened yet.
    fn deliver(
        &self,
        id: &Id,
        raw: Result<Vec<u8>>,
        places: &[(usize, u64)],
        jobs: &[Job],
        failed: &[Mutex<Option<Error>>],
        files: &mut HashMap<usize, File>,
    ) {
        let raw = match raw {
            Ok(raw) => raw,
            Err(e) => {
                let mut first = Some(e);
                for (j, _) in places {
                    let e = first.take().unwrap_or_else(|| {
                        Error::corrupt("blob", id, "unreadable (see the first file that has it)")
                    });
                    locked(&failed[*j]).get_or_insert(e);
                }
                return;
            }
        };
        for &(j, at) in places {
            if locked(&failed[j]).is_some() {
                continue;
            }
            let job = &jobs[j];
            if !files.contains_key(&j) && files.len() >= OPEN_FILES {
                files.clear();
            }
            let written = match files.entry(j) {
                std::collections::hash_map::Entry::Occupied(f) => {
                    write_sparse(f.get(), at, &raw).at(&job.dest)
                }
                std::collections::hash_map::Entry::Vacant(v) => OpenOptions::new()
                    .write(true)
                    .open(&job.tmp)
                    .at(&job.tmp)
                    .and_then(|f| write_sparse(v.insert(f), at, &raw).at(&job.dest)),
            };
            match written {
                Ok(()) => self.written(raw.len() as u64),
                Err(e) => {
                    locked(&failed[j]).get_or_insert(e);
                }
            }
        }
    }

    /// Gives the temporary file of `job` its length `len` and metadata and renames it
    /// into place; or, when `failed` or interrupted, removes it and reports why.
    fn finish(&self, job: Job, len: u64, failed: Option<Error>) {
        // Interrupted, a file may miss the chunks of reads that never started.
        let failed = failed.or_else(|| crate::interrupt::requested().then_some(Error::Interrupted));
        let placed = match failed {
            Some(e) => Err(e),
            None => (|| -> Result<()> {
                let f = OpenOptions::new().write(true).open(&job.tmp).at(&job.tmp)?;
                f.set_len(len).at(&job.dest)?;
                self.apply_meta_fd(&f, &job.dest, &job.meta)?;
                // rename(2): the new directory has nothing at `dest` but what this
                // restore puts there.
                fs::rename(&job.tmp, &job.dest).at(&job.dest)
            })(),
        };
        if let Err(e) = placed {
            let _ = fs::remove_file(&job.tmp);
            return self.fail(
                &job.spath,
                Error::NotRestored {
                    source: Box::new(e),
                },
            );
        }
        self.files.fetch_add(1, Ordering::Relaxed);
        self.bytes.fetch_add(len, Ordering::Relaxed);
        self.progress.items(1);
        if self.plan.verify {
            locked(&self.to_verify).push(Check {
                dest: job.dest,
                spath: job.spath,
                content: job.content,
                size: len,
            });
        }
    }
}
