//! A model of what survives a power cut, for crash-consistency tests (redb's
//! `CrashBackend`, extended to directory entries). Not used outside tests.
//!
//! [`CrashFs`] performs every call on a real directory and keeps a model beside it:
//! per file, its data as of its last `fsync` and its data now; per directory, its
//! entries as of its last `fsync` and its entries now. Every call that changes
//! something is one numbered step; at the step chosen to "cut the power", that call
//! and every later one (reads too) fail with an I/O error, as if the process had died
//! with the machine. [`CrashFs::materialize`] then writes the directory a reboot would
//! find: only durable entries, each with its durable data; with a seed, it also lets
//! a random share of what was not yet durable reach the disk, in any order and torn
//! (a file's unsynced data cut at a random length), as real file systems may.

use std::collections::{BTreeMap, HashMap};
use std::ffi::OsString;
use std::fs::{self, File, Metadata, ReadDir};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{mpsc, Mutex};

use tempfile::NamedTempFile;

use super::fs::{Fs, RealFs};
use crate::locked;

/// What a directory entry names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Node {
    /// A file: its index in [`Model::files`] (an inode: a rename keeps it).
    File(usize),
    /// A subdirectory, modelled under its own path.
    Dir,
}

/// A file's data.
#[derive(Default)]
struct Inode {
    durable: Vec<u8>,
    current: Vec<u8>,
}

/// A directory's entries.
#[derive(Clone, Default)]
struct Dir {
    durable: BTreeMap<OsString, Node>,
    current: BTreeMap<OsString, Node>,
}

#[derive(Default)]
struct Model {
    /// Steps taken so far.
    steps: u64,
    /// The step at which the power goes.
    cut_at: Option<u64>,
    cut: bool,
    files: Vec<Inode>,
    dirs: HashMap<PathBuf, Dir>,
}

/// A file system that can lose power; see the module docs.
pub struct CrashFs {
    root: PathBuf,
    model: Mutex<Model>,
    /// Holds the next thread that creates a directory until a message arrives (or
    /// the sender is dropped): a scheduler for race tests.
    gate: Mutex<Option<mpsc::Receiver<()>>>,
}

fn power_off() -> io::Error {
    io::Error::other("the power is off (crash model)")
}

fn unmodelled(path: &Path) -> io::Error {
    io::Error::other(format!("{} is not in the crash model", path.display()))
}

/// A path's directory and name.
fn split(path: &Path) -> io::Result<(&Path, OsString)> {
    match (path.parent(), path.file_name()) {
        (Some(dir), Some(name)) => Ok((dir, name.to_owned())),
        _ => Err(unmodelled(path)),
    }
}

impl Model {
    /// Counts one step; fails from the cut on.
    fn step(&mut self) -> io::Result<()> {
        self.alive()?;
        self.steps += 1;
        if self.cut_at == Some(self.steps) {
            self.cut = true;
            return Err(power_off());
        }
        Ok(())
    }

    fn alive(&self) -> io::Result<()> {
        if self.cut {
            Err(power_off())
        } else {
            Ok(())
        }
    }

    fn dir(&mut self, dir: &Path) -> io::Result<&mut Dir> {
        self.dirs.get_mut(dir).ok_or_else(|| unmodelled(dir))
    }

    /// Adds a new file with unsynced data `bytes` as `path`.
    fn add_file(&mut self, path: &Path, bytes: Vec<u8>) -> io::Result<()> {
        let (dir, name) = split(path)?;
        let i = self.files.len();
        self.dir(dir)?.current.insert(name, Node::File(i));
        self.files.push(Inode {
            durable: Vec::new(),
            current: bytes,
        });
        Ok(())
    }

    /// The entry `path` names now.
    fn node(&mut self, path: &Path) -> io::Result<Node> {
        let (dir, name) = split(path)?;
        self.dir(dir)?
            .current
            .get(&name)
            .copied()
            .ok_or_else(|| unmodelled(path))
    }

    /// Reads the tree at `path` as it is: all durable.
    fn scan(&mut self, path: &Path) -> io::Result<()> {
        let mut d = Dir::default();
        for e in fs::read_dir(path)? {
            let e = e?;
            let node = if e.file_type()?.is_dir() {
                self.scan(&e.path())?;
                Node::Dir
            } else {
                let data = fs::read(e.path())?;
                self.files.push(Inode {
                    durable: data.clone(),
                    current: data,
                });
                Node::File(self.files.len() - 1)
            };
            d.current.insert(e.file_name(), node);
        }
        d.durable = d.current.clone();
        self.dirs.insert(path.to_owned(), d);
        Ok(())
    }
}

/// SplitMix64's step from `z`: well-spread bits for seeded choices (what survives
/// here; which steps a test cuts).
pub fn mix(z: u64) -> u64 {
    let mut z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// SplitMix64: a small seeded generator, enough to pick what survives.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(1);
        mix(self.0)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

impl CrashFs {
    /// Models the directory tree at `root` (all of it durable, as after a sync) and
    /// cuts the power at step `cut_at` (never with `None`: for counting steps).
    pub fn new(root: &Path, cut_at: Option<u64>) -> io::Result<CrashFs> {
        let mut model = Model {
            cut_at,
            ..Model::default()
        };
        model.scan(root)?;
        Ok(CrashFs {
            root: root.to_owned(),
            model: Mutex::new(model),
            gate: Mutex::new(None),
        })
    }

    /// Steps taken so far (the one the power went at included).
    pub fn steps(&self) -> u64 {
        locked(&self.model).steps
    }

    /// Whether the power is off.
    pub fn is_cut(&self) -> bool {
        locked(&self.model).cut
    }

    /// Cuts the power now.
    pub fn cut_now(&self) {
        locked(&self.model).cut = true;
    }

    /// Makes the next thread that creates a directory wait, once it has, until the
    /// returned sender sends or is dropped.
    pub fn hold_after_create_dir(&self) -> mpsc::Sender<()> {
        let (tx, rx) = mpsc::channel();
        *locked(&self.gate) = Some(rx);
        tx
    }

    /// Writes the tree a reboot would find into the new directory `out`. Without a
    /// seed, exactly the durable state; with one, each entry or file data not yet
    /// durable may have reached the disk too, whole or torn.
    pub fn materialize(&self, out: &Path, chaos: Option<u64>) -> io::Result<()> {
        let model = locked(&self.model);
        let mut rng = chaos.map(Rng);
        build(&model, &mut rng, &self.root, out)
    }

    /// A rename by `real`, modelled: the name leaves its directory and the file is
    /// under `to` in the current (not yet durable) state; a refused rename deletes it.
    fn moved(
        &self,
        file: NamedTempFile,
        to: &Path,
        real: impl FnOnce(NamedTempFile, &Path) -> io::Result<()>,
    ) -> io::Result<()> {
        let mut m = locked(&self.model);
        m.step()?;
        let from = file.path().to_owned();
        let node = m.node(&from)?;
        let done = real(file, to);
        // Renamed, or (refused) deleted with its handle: gone from the temp directory.
        let (fdir, fname) = split(&from)?;
        m.dir(fdir)?.current.remove(&fname);
        done?;
        let (tdir, tname) = split(to)?;
        m.dir(tdir)?.current.insert(tname, node);
        Ok(())
    }
}

fn build(m: &Model, rng: &mut Option<Rng>, dir: &Path, out: &Path) -> io::Result<()> {
    fs::create_dir(out)?;
    let d = m.dirs.get(dir).ok_or_else(|| unmodelled(dir))?;
    let mut names: Vec<&OsString> = d.durable.keys().chain(d.current.keys()).collect();
    names.sort();
    names.dedup();
    for name in names {
        let (durable, current) = (d.durable.get(name), d.current.get(name));
        let reached = durable != current && rng.as_mut().is_some_and(|r| r.below(2) == 1);
        let node = if reached { current } else { durable };
        match node {
            None => {}
            Some(Node::Dir) => build(m, rng, &dir.join(name), &out.join(name))?,
            Some(Node::File(i)) => {
                let f = &m.files[*i];
                let data: &[u8] = match rng.as_mut().filter(|_| f.durable != f.current) {
                    None => &f.durable,
                    Some(r) => match r.below(3) {
                        0 => &f.durable,
                        1 => &f.current,
                        _ => {
                            let cut = r.below(f.current.len() as u64 + 1);
                            &f.current[..usize::try_from(cut).expect("at most its length")]
                        }
                    },
                };
                fs::write(out.join(name), data)?;
            }
        }
    }
    Ok(())
}

impl Fs for CrashFs {
    fn write_temp(&self, dir: &Path, prefix: &str, bytes: &[u8]) -> io::Result<NamedTempFile> {
        let mut m = locked(&self.model);
        m.step()?;
        let f = RealFs.write_temp(dir, prefix, bytes)?;
        m.add_file(f.path(), bytes.to_vec())?;
        Ok(f)
    }

    fn adopt(&self, file: &NamedTempFile) -> io::Result<()> {
        let mut m = locked(&self.model);
        m.alive()?;
        m.add_file(file.path(), fs::read(file.path())?)
    }

    fn sync_file(&self, file: &NamedTempFile) -> io::Result<()> {
        self.sync_path(file.path())
    }

    fn sync_path(&self, path: &Path) -> io::Result<()> {
        let mut m = locked(&self.model);
        m.step()?;
        let Node::File(i) = m.node(path)? else {
            return Err(unmodelled(path));
        };
        let f = &mut m.files[i];
        f.durable = f.current.clone();
        Ok(())
    }

    fn rename(&self, file: NamedTempFile, to: &Path) -> io::Result<()> {
        self.moved(file, to, |f, to| RealFs.rename(f, to))
    }

    fn rename_new(&self, file: NamedTempFile, to: &Path) -> io::Result<()> {
        self.moved(file, to, |f, to| RealFs.rename_new(f, to))
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        let mut m = locked(&self.model);
        m.step()?;
        let d = m.dir(dir)?;
        d.durable = d.current.clone();
        Ok(())
    }

    fn create_dir(&self, dir: &Path) -> io::Result<()> {
        {
            let mut m = locked(&self.model);
            m.step()?;
            RealFs.create_dir(dir)?;
            let (parent, name) = split(dir)?;
            m.dir(parent)?.current.insert(name, Node::Dir);
            m.dirs.insert(dir.to_owned(), Dir::default());
        }
        let gate = locked(&self.gate).take();
        if let Some(rx) = gate {
            let _ = rx.recv();
        }
        Ok(())
    }

    fn remove_file(&self, path: &Path) -> io::Result<()> {
        let mut m = locked(&self.model);
        m.step()?;
        RealFs.remove_file(path)?;
        let (dir, name) = split(path)?;
        m.dir(dir)?.current.remove(&name);
        Ok(())
    }

    fn read(&self, path: &Path) -> io::Result<Vec<u8>> {
        locked(&self.model).alive()?;
        RealFs.read(path)
    }

    fn open(&self, path: &Path) -> io::Result<File> {
        locked(&self.model).alive()?;
        RealFs.open(path)
    }

    fn metadata(&self, path: &Path) -> io::Result<Metadata> {
        locked(&self.model).alive()?;
        RealFs.metadata(path)
    }

    fn read_dir(&self, dir: &Path) -> io::Result<ReadDir> {
        locked(&self.model).alive()?;
        RealFs.read_dir(dir)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn durable_after(ops: impl FnOnce(&CrashFs, &Path)) -> Vec<(String, Vec<u8>)> {
        let d = tempfile::tempdir().unwrap();
        let root = d.path().join("r");
        fs::create_dir_all(root.join("tmp")).unwrap();
        fs::create_dir_all(root.join("a")).unwrap();
        let c = CrashFs::new(&root, None).unwrap();
        ops(&c, &root);
        let out = d.path().join("out");
        c.materialize(&out, None).unwrap();
        let mut found = Vec::new();
        for sub in ["tmp", "a", "a/b"] {
            if let Ok(rd) = fs::read_dir(out.join(sub)) {
                for e in rd {
                    let e = e.unwrap();
                    if e.file_type().unwrap().is_file() {
                        let name = format!("{sub}/{}", e.file_name().to_string_lossy());
                        found.push((name, fs::read(e.path()).unwrap()));
                    }
                }
            }
        }
        found.sort();
        found
    }

    #[test]
    fn only_synced_data_under_synced_entries_survives() {
        // Renamed and the directory synced, but the data never: an empty file.
        let got = durable_after(|c, root| {
            let f = c.write_temp(&root.join("tmp"), "t", b"data").unwrap();
            c.rename(f, &root.join("a/x")).unwrap();
            c.sync_dir(&root.join("a")).unwrap();
        });
        assert_eq!(got, vec![("a/x".into(), vec![])]);
        // Data synced, the rename's directory never: nothing.
        let got = durable_after(|c, root| {
            let f = c.write_temp(&root.join("tmp"), "t", b"data").unwrap();
            c.sync_file(&f).unwrap();
            c.rename(f, &root.join("a/x")).unwrap();
        });
        assert!(got.is_empty());
        // A file in a new directory whose own entry was never synced: lost.
        let got = durable_after(|c, root| {
            c.create_dir(&root.join("a/b")).unwrap();
            let f = c.write_temp(&root.join("tmp"), "t", b"data").unwrap();
            c.sync_file(&f).unwrap();
            c.rename(f, &root.join("a/b/x")).unwrap();
            c.sync_dir(&root.join("a/b")).unwrap();
        });
        assert!(got.is_empty());
        let got = durable_after(|c, root| {
            c.create_dir(&root.join("a/b")).unwrap();
            c.sync_dir(&root.join("a")).unwrap();
            let f = c.write_temp(&root.join("tmp"), "t", b"data").unwrap();
            c.sync_file(&f).unwrap();
            c.rename(f, &root.join("a/b/x")).unwrap();
            c.sync_dir(&root.join("a/b")).unwrap();
            // A removal not synced is undone.
            c.remove_file(&root.join("a/b/x")).unwrap();
        });
        assert_eq!(got, vec![("a/b/x".into(), b"data".to_vec())]);
    }

    #[test]
    fn the_power_goes_at_the_chosen_step_for_good() {
        let d = tempfile::tempdir().unwrap();
        let c = CrashFs::new(d.path(), Some(2)).unwrap();
        let f = c.write_temp(d.path(), "t", b"x").unwrap();
        assert!(c.sync_file(&f).is_err());
        assert!(c.is_cut());
        assert!(c.read(f.path()).is_err());
        assert!(c.sync_dir(d.path()).is_err());
        assert_eq!(c.steps(), 2);
    }

    #[test]
    fn chaos_keeps_durable_state_and_may_add_torn_unsynced_data() {
        let d = tempfile::tempdir().unwrap();
        let root = d.path().join("r");
        fs::create_dir(&root).unwrap();
        fs::write(root.join("old"), b"kept").unwrap();
        let c = CrashFs::new(&root, None).unwrap();
        let f = c.write_temp(&root, "t", &[7u8; 64]).unwrap();
        c.rename(f, &root.join("new")).unwrap();
        let mut seen = std::collections::HashSet::new();
        for seed in 0..64 {
            let out = d.path().join(format!("o{seed}"));
            c.materialize(&out, Some(seed)).unwrap();
            assert_eq!(fs::read(out.join("old")).unwrap(), b"kept");
            seen.insert(fs::read(out.join("new")).ok().map(|b| b.len()));
        }
        assert!(seen.contains(&None) && seen.contains(&Some(64)) && seen.len() > 3);
    }
}
