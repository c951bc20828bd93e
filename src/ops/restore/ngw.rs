//! Restore of a snapshot's NextGIS Web part straight into an instance, as
//! `nextgisweb restore` does with an unpacked backup, but with no ZIP and no copy of the
//! dump on disk:
//!
//! 1. Checks, before anything changes: the snapshot has an NGW part, pg_restore reads
//!    its dump's TOC (one from a newer pg_dump it refuses), the database has the
//!    extensions the dump needs (the restore list leaves them out, as NGW's does), the
//!    file storage can be written, and without `replace` the database holds no tables
//!    of its own in the schemas the dump restores.
//! 2. Drops those tables (NGW drops its model's tables), so nothing of the old instance
//!    is left beside the restored one.
//! 3. Runs `pg_restore --clean --if-exists --no-owner --no-privileges --exit-on-error
//!    --use-list` on a staging directory holding `toc.dat` and one named pipe per data
//!    file; snap fills each pipe from the repository when pg_restore opens it, so only
//!    the TOC ever touches the disk.
//! 4. Writes the custom fonts (removing custom fonts the snapshot does not have, as
//!    NGW's `restore_prepare` does) and every blob `$index` lists; files already there
//!    and identical are left alone, others are replaced through a temporary file.
//! 5. Puts the objects of external raster storages back into their buckets (see
//!    [`super::rasters`]), unless the caller leaves them (a drill does: its scratch instance
//!    must not write into production buckets).
//! 6. Compares `core_migration` before and after, so the caller can say when the dump
//!    comes from an older NGW and `nextgisweb migration upgrade` is due.
//!
//! The repository is only read. If snap is killed while pg_restore runs, the database
//! is half restored: run the restore again.

use std::fs::{self, File};
use std::io::Write;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use rayon::prelude::*;

use super::db::feed_pg_restore;
use super::rasters::Placement;
use super::timestamps;
use crate::error::{Error, IoContext, Refusal, Result};
use crate::format::snapshot::Snapshot;
use crate::format::tree::{Content, Node};
use crate::ops::dump_tables::DumpTables;
use crate::ops::ngw_part::{file_content, NgwPart, COMPONENTS};
use crate::progress::Progress;
use crate::repo::Repository;
use crate::source::ngw::{is_font_name, list_facts, IndexItem, NgwConfig, Target};

/// How the `core_migration` table of the restored database compares with the one the
/// database had before.
#[derive(Debug, PartialEq, Eq)]
pub enum Migrations {
    /// The instance's NGW had no migration the snapshot lacks.
    Current,
    /// The snapshot lacks these migrations the instance had: it comes from an older NGW.
    Older(Vec<(String, String)>),
    /// The database had no NGW before: which version runs on it is unknown.
    Unknown,
}

/// What a restore into an instance did.
#[derive(Debug)]
pub struct NgwRestoreOutcome {
    /// Tables of the old instance dropped.
    pub tables_dropped: usize,
    /// Dump bytes streamed into pg_restore.
    pub dump_bytes: u64,
    /// Blobs and fonts written.
    pub files_written: u64,
    /// Their bytes.
    pub bytes_written: u64,
    /// Blobs and fonts already in place, identical.
    pub files_unchanged: u64,
    /// Objects of external raster storages uploaded (their bytes are in
    /// `bytes_written`).
    pub objects_written: u64,
    /// Objects of external raster storages already in place with the same content.
    pub objects_unchanged: u64,
    /// Custom fonts removed because the snapshot does not have them.
    pub fonts_removed: u64,
    /// See [`Migrations`].
    pub migrations: Migrations,
    /// Blobs or fonts that could not be written, each an [`Error::Entry`].
    pub errors: Vec<Error>,
}

/// A blob or font to put in place.
struct Put {
    dest: PathBuf,
    node: Node,
}

/// Restores `snap`'s NGW part into the instance `cfg` describes; `replace` allows
/// dropping the tables it already has; `rasters` says where the objects of external
/// raster storages go (`None`: they are left alone).
pub fn restore_instance(
    repo: &Repository,
    snap: &Snapshot,
    cfg: &NgwConfig,
    replace: bool,
    rasters: Option<&Placement>,
    progress: &dyn Progress,
) -> Result<NgwRestoreOutcome> {
    let _lock = repo.read_lock("restore")?;
    let part = NgwPart::open(repo, snap)?;
    let list = String::from_utf8(part.postgres_file("restore")?)
        .map_err(|_| Error::corrupt("snapshot", "ngw/postgres/restore", "not UTF-8"))?;
    let facts = list_facts(&list);
    let indexes = COMPONENTS
        .iter()
        .map(|c| Ok((*c, part.index(c)?.map(|(_, text)| text))))
        .collect::<Result<Vec<_>>>()?;
    // Read and checked before anything changes.
    let objects = match rasters {
        Some(how) => {
            let objects = part.rasters()?;
            super::rasters::check_map(&objects, how)?;
            objects
        }
        None => Vec::new(),
    };
    let has_fonts = indexes.iter().any(|(c, t)| *c == "core" && t.is_some());
    let font_dir = cfg.sdir.as_ref().map(|s| s.join("core/fontconfig"));
    if has_fonts && font_dir.is_none() {
        return Err(Refusal::NoFontDir {
            config: cfg.path.clone(),
        }
        .into());
    }

    let mut target = Target::connect(&cfg.db)?;
    let name = &cfg.db.name;
    let missing = target.missing_extensions(&facts.extensions)?;
    if !missing.is_empty() {
        return Err(Refusal::MissingExtensions {
            db: name.clone(),
            missing,
        }
        .into());
    }
    let tables = target.tables(&facts.schemas)?;
    if !tables.is_empty() && !replace {
        return Err(Refusal::TablesExist {
            db: name.clone(),
            count: tables.len(),
            tables: tables
                .iter()
                .take(5)
                .map(|(s, t)| format!("{s}.{t}"))
                .collect(),
        }
        .into());
    }
    let owner = storage_owner(&cfg.file_storage)?;
    let before = target.migrations()?;
    // pg_restore reads the TOC before the old tables go: one it refuses (from a newer
    // pg_dump, or damaged) would leave the instance with none.
    if let Err(e) = DumpTables::of_nodes(repo, &part.postgres().nodes) {
        return Err(Refusal::DumpNotRestorable {
            dump: "the NGW part's postgres/toc.dat".into(),
            why: e.to_string(),
        }
        .into());
    }

    target.drop_tables(&tables)?;
    let tmp_base = cfg.backup_tmpdir.clone().unwrap_or_else(std::env::temp_dir);
    let mut list_file = tempfile::Builder::new()
        .prefix("snap-ngw-restore-list-")
        .tempfile_in(&tmp_base)
        .at(&tmp_base)?;
    list_file.write_all(list.as_bytes()).at(list_file.path())?;
    let dump_bytes = feed_pg_restore(
        repo,
        part.postgres(),
        &tmp_base,
        |dir| target.pg_restore(list_file.path(), dir),
        &format!("pg_restore into database {name}"),
        progress,
    )?;
    drop(list_file);
    // The blobs' total is not known before they are listed.
    progress.total(None, None, "file");

    let mut out = NgwRestoreOutcome {
        tables_dropped: tables.len(),
        dump_bytes,
        files_written: 0,
        bytes_written: 0,
        files_unchanged: 0,
        objects_written: 0,
        objects_unchanged: 0,
        fonts_removed: 0,
        migrations: Migrations::Unknown,
        errors: Vec::new(),
    };
    let mut fonts = Vec::new();
    for (component, text) in &indexes {
        let Some(text) = text else { continue };
        let mut puts = Vec::new();
        part.for_each_item(component, text, &mut |_, item, node| {
            let dest = match item {
                IndexItem::FileObj(o) => cfg.blob_path(&o.component, &o.uuid),
                IndexItem::Font(f) => {
                    let dest = font_dir.as_ref().expect("checked above").join(&f);
                    fonts.push(f);
                    dest
                }
            };
            puts.push(Put { dest, node });
            if puts.len() >= 256 {
                put_all(repo, &mut puts, owner, progress, &mut out);
            }
            Ok(())
        })?;
        put_all(repo, &mut puts, owner, progress, &mut out);
    }
    if let Some(dir) = &font_dir {
        out.fonts_removed = remove_other_fonts(dir, &fonts)?;
    }
    if let Some(how) = rasters {
        // The database is restored by now: what fails here is reported with the files.
        if let Err(e) = super::rasters::restore(repo, objects, &mut target, how, progress, &mut out)
        {
            out.errors.push(e);
        }
    }
    if let Ok(root) = File::open(&cfg.file_storage) {
        rustix::fs::syncfs(&root)
            .map_err(std::io::Error::from)
            .at(&cfg.file_storage)?;
    }
    out.migrations = match (before, target.migrations()?) {
        (None, _) => Migrations::Unknown,
        (Some(before), after) => {
            let after = after.unwrap_or_default();
            let lacking: Vec<_> = before.into_iter().filter(|m| !after.contains(m)).collect();
            if lacking.is_empty() {
                Migrations::Current
            } else {
                Migrations::Older(lacking)
            }
        }
    };
    Ok(out)
}

/// Owner for new files and directories of the file storage when snap runs as root: the
/// storage directory's (created if absent, which also proves it can be written).
fn storage_owner(root: &Path) -> Result<Option<(u32, u32)>> {
    fs::create_dir_all(root).at(root)?;
    let probe = tempfile::Builder::new()
        .prefix(".snap-probe-")
        .tempfile_in(root)
        .map_err(|source| Refusal::StorageNotWritable {
            path: root.to_path_buf(),
            source,
        })?;
    drop(probe);
    let md = fs::metadata(root).at(root)?;
    Ok(rustix::process::geteuid()
        .is_root()
        .then(|| (md.uid(), md.gid())))
}

/// Puts a batch of files in place in parallel and counts the results into `out`.
fn put_all(
    repo: &Repository,
    puts: &mut Vec<Put>,
    owner: Option<(u32, u32)>,
    progress: &dyn Progress,
    out: &mut NgwRestoreOutcome,
) {
    let results: Vec<Result<Option<u64>>> = puts
        .par_iter()
        .map(|p| {
            progress.entry(&p.dest);
            let r = put_file(repo, p, owner).map_err(|e| Error::Entry {
                path: p.dest.display().to_string(),
                source: Box::new(e),
            });
            progress.bytes(p.node.meta.size);
            r
        })
        .collect();
    for r in results {
        match r {
            Ok(None) => out.files_unchanged += 1,
            Ok(Some(n)) => {
                out.files_written += 1;
                out.bytes_written += n;
            }
            Err(e) => out.errors.push(e),
        }
    }
    puts.clear();
}

/// Puts one blob or font at its place unless an identical file is there; returns the
/// bytes written, `None` when it was left alone.
fn put_file(repo: &Repository, p: &Put, owner: Option<(u32, u32)>) -> Result<Option<u64>> {
    let content = file_content(&p.dest.display().to_string(), &p.node)?;
    if same_file(repo, content, p.node.meta.size, &p.dest)? {
        return Ok(None);
    }
    let dir = p.dest.parent().expect("blob paths have a parent");
    make_dirs(dir, owner)?;
    let tmp = tempfile::Builder::new()
        .prefix(".snap-")
        .tempfile_in(dir)
        .at(dir)?;
    let mut w = std::io::BufWriter::with_capacity(1 << 20, tmp.as_file());
    let n = repo.write_content(content, &mut w)?;
    w.into_inner()
        .map_err(std::io::IntoInnerError::into_error)
        .at(tmp.path())?;
    let f = tmp.as_file();
    if let Some((uid, gid)) = owner {
        std::os::unix::fs::fchown(f, Some(uid), Some(gid)).at(tmp.path())?;
    }
    f.set_permissions(fs::Permissions::from_mode(p.node.meta.mode & 0o7777))
        .at(tmp.path())?;
    rustix::fs::futimens(f, &timestamps(&p.node.meta))
        .map_err(std::io::Error::from)
        .at(tmp.path())?;
    tmp.persist(&p.dest).map_err(|e| e.error).at(&p.dest)?;
    Ok(Some(n))
}

/// Whether `path` is a regular file holding exactly `content` (`size` bytes).
fn same_file(repo: &Repository, content: &Content, size: u64, path: &Path) -> Result<bool> {
    let mut f = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(e).at(path),
    };
    let md = f.metadata().at(path)?;
    if !md.is_file() || md.len() != size {
        return Ok(false);
    }
    same_content(repo, content, &mut f, path)
}

/// Whether `r` (`what`, in errors) holds exactly `content`'s bytes, which it is known
/// to match in length.
pub(super) fn same_content(
    repo: &Repository,
    content: &Content,
    r: &mut dyn std::io::Read,
    what: &Path,
) -> Result<bool> {
    let mut differs = false;
    let mut buf = Vec::new();
    let compared = repo.read_content(content, &mut |chunk| {
        buf.resize(chunk.len(), 0);
        r.read_exact(&mut buf).at(what)?;
        if buf != chunk {
            differs = true;
            // Only stops the read: `differs` says why.
            return Err(std::io::Error::other("the file differs")).at(what);
        }
        Ok(())
    });
    if differs {
        return Ok(false);
    }
    compared.map(|_| true)
}

/// Creates `dir` and its missing parents, owned by `owner`.
fn make_dirs(dir: &Path, owner: Option<(u32, u32)>) -> Result<()> {
    if dir.is_dir() {
        return Ok(());
    }
    if let Some(parent) = dir.parent() {
        make_dirs(parent, owner)?;
    }
    match fs::create_dir(dir) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && dir.is_dir() => return Ok(()),
        Err(e) => return Err(e).at(dir),
    }
    if let Some((uid, gid)) = owner {
        std::os::unix::fs::chown(dir, Some(uid), Some(gid)).at(dir)?;
    }
    Ok(())
}

/// Removes the custom fonts in `dir` other than `keep` (the snapshot's); returns how
/// many.
fn remove_other_fonts(dir: &Path, keep: &[String]) -> Result<u64> {
    let rd = match fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(e).at(dir),
    };
    let mut removed = 0;
    for e in rd.flatten() {
        let Some(name) = e.file_name().to_str().map(str::to_string) else {
            continue;
        };
        if is_font_name(&name) && !keep.contains(&name) {
            fs::remove_file(e.path()).at(e.path())?;
            removed += 1;
        }
    }
    Ok(removed)
}
