//! Resuming interrupted runs: a writer notes each pack in a journal file of its own in
//! the client's cache (`journal/<pid>-<random>`, one pack id per line) just before it
//! places the pack, until an index file lists them. A run killed before it wrote that
//! index file leaves packs nobody lists, some of them visible but not yet durable (the
//! rename done, the directory not synced); the next backup on this client (under its
//! lock, so no prune runs meanwhile) reads the journals of processes that are gone,
//! checks the trailer of each noted pack that is there, makes it durable, and lists
//! the packs in a new index file: their blobs are deduplicated against instead of
//! stored again. A journal lost or partly written only loses that reuse: the packs
//! stay garbage for prune, as without it.

use std::collections::HashSet;
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use super::{batches, pack_path, PackRecord, Repository};
use crate::error::{Error, IoContext, Result};
use crate::format::id::PackId;
use crate::host::pid_alive;
use crate::locked;

/// The journal of one writer; see the module docs. The file is made on the first
/// pack and removed once every pack it lists is in an index file.
pub(super) struct Journal {
    path: PathBuf,
    file: Mutex<Option<File>>,
}

fn dir(cache: &Path) -> PathBuf {
    cache.join("journal")
}

impl Journal {
    pub(super) fn new(cache: &Path) -> Result<Journal> {
        let mut rnd = [0u8; 4];
        getrandom::getrandom(&mut rnd).map_err(Error::NoRandomness)?;
        let name = format!("{}-{}", std::process::id(), hex::encode(rnd));
        Ok(Journal {
            path: dir(cache).join(name),
            file: Mutex::new(None),
        })
    }

    /// Notes that pack `id` is about to be placed.
    pub(super) fn add(&self, id: &PackId) -> Result<()> {
        let mut file = locked(&self.file);
        if file.is_none() {
            let d = self.path.parent().expect("in the journal directory");
            fs::create_dir_all(d).at(d)?;
            *file = Some(
                OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(&self.path)
                    .at(&self.path)?,
            );
        }
        let f = file.as_mut().expect("just opened");
        writeln!(f, "{}", id.to_hex()).at(&self.path)
    }

    /// Every pack noted is listed in an index file now.
    pub(super) fn clear(&self) -> Result<()> {
        if locked(&self.file).take().is_some() {
            fs::remove_file(&self.path).at(&self.path)?;
        }
        Ok(())
    }
}

/// What [`Repository::resume_interrupted`] found.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Resumed {
    /// Packs of interrupted runs listed again.
    pub packs: u64,
    /// Their size.
    pub bytes: u64,
}

impl Repository {
    /// Lists in a new index file the packs of runs on this client that were
    /// interrupted before they listed them (see the module docs). Call under a lock.
    pub fn resume_interrupted(&self) -> Result<Resumed> {
        let d = dir(&self.cache);
        let entries = match fs::read_dir(&d) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Resumed::default()),
            Err(e) => return Err(e).at(&d),
        };
        let mut journals = Vec::new();
        let mut noted = HashSet::new();
        for e in entries {
            let path = e.at(&d)?.path();
            let pid = path
                .file_name()
                .and_then(|n| n.to_str())
                .and_then(|n| n.split('-').next())
                .and_then(|p| p.parse::<u32>().ok());
            // A live writer's packs are its own to list.
            if pid.is_some_and(|p| p == std::process::id() || pid_alive(p)) {
                continue;
            }
            let text = fs::read_to_string(&path).unwrap_or_default();
            noted.extend(text.lines().filter_map(PackId::from_hex));
            journals.push(path);
        }
        if journals.is_empty() {
            return Ok(Resumed::default());
        }
        let listed = self.index.pack_names()?;
        let mut records: Vec<PackRecord> = Vec::new();
        for id in noted.into_iter().filter(|id| !listed.contains(id)) {
            // Deleted meanwhile (a prune took it for garbage), or damaged: not reused.
            let Some(size) = self.store.size(&pack_path(&id))? else {
                continue;
            };
            match self.pack_trailer(&id, size) {
                Ok(entries) => {
                    // Its writer may have died before the pack was durable: an index
                    // file must never list a pack a power cut can still take away.
                    self.store.make_durable(&pack_path(&id))?;
                    records.push(PackRecord { id, size, entries });
                }
                Err(e) => log::warn!(
                    "not reusing pack {} of an interrupted run: {e}",
                    pack_path(&id)
                ),
            }
        }
        records.sort_by_key(|r| r.id);
        let resumed = Resumed {
            packs: records.len() as u64,
            bytes: records.iter().map(|r| r.size).sum(),
        };
        for batch in batches(records) {
            self.write_index_file(&batch)?;
        }
        for j in journals {
            fs::remove_file(&j).at(&j)?;
        }
        Ok(resumed)
    }
}
