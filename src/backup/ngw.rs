//! Backup of a NextGIS Web instance, stored under `ngw/` in the snapshot:
//!
//! ```text
//! ngw/postgres/<pg_dump -Fd -Z0 files>   toc.dat, <dumpId>.dat, ...
//! ngw/postgres/restore                   NGW's pg_restore --use-list file
//! ngw/file_storage/<comp>/<u0u1>/<u2u3>/<uuid>   every blob fileobj lists
//! ngw/component/file_storage/$index      JSON Lines, exactly as NGW writes it
//! ngw/fonts/<name>, ngw/component/core/$index    custom fonts
//! ```
//! Blobs keep their file-storage paths (not the `{id:08d}` names of an `.ngwbackup`,
//! which shift whenever a row is added), so unchanged blobs are matched against the
//! parent by path and never re-read, and unchanged directories dedup whole. Dump files
//! are chunked with the stream profile, so an unchanged table costs nothing even when
//! pg_dump renumbers its file.

use std::collections::HashMap;
use std::io::{self, Cursor};
use std::sync::{Arc, Mutex};

use rayon::prelude::*;

use super::{stream_node, Run, VDir};
use crate::error::{Error, IoContext, Result};
use crate::id::Id;
use crate::source::command::Running;
use crate::source::fs as sfs;
use crate::source::ngw::{FileObj, NgwConfig, Session};
use crate::tree::{Node, NodeKind, Timestamp, Tree};

/// Name of the NGW part of a snapshot.
pub const ROOT: &str = "ngw";

fn comps(parts: &[&str]) -> Vec<Vec<u8>> {
    std::iter::once(ROOT)
        .chain(parts.iter().copied())
        .map(|p| p.as_bytes().to_vec())
        .collect()
}

/// One `$index` line, as Python's `json.dumps(obj, ensure_ascii=False)` writes it.
fn index_line(id: usize, identity: &str, payload: &[(&str, &str)]) -> String {
    let q = |s: &str| serde_json::to_string(s).expect("strings serialize");
    let fields: Vec<String> = payload
        .iter()
        .map(|(k, v)| format!("{}: {}", q(k), q(v)))
        .collect();
    format!(
        "{{\"id\": {id}, \"identity\": {}, \"payload\": {{{}}}}}\n",
        q(identity),
        fields.join(", ")
    )
}

/// The `$index` of component `file_storage`.
pub fn fileobj_index(objs: &[FileObj]) -> String {
    objs.iter()
        .enumerate()
        .map(|(i, o)| {
            index_line(
                i + 1,
                "fileobj",
                &[("component", &o.component), ("uuid", &o.uuid)],
            )
        })
        .collect()
}

/// The `$index` of component `core` (custom fonts).
pub fn font_index(fonts: &[String]) -> String {
    fonts
        .iter()
        .enumerate()
        .map(|(i, f)| index_line(i + 1, "font", &[("component", "core"), ("filename", f)]))
        .collect()
}

/// Directory trees by their path in the snapshot (`None`: no such directory).
type TreeCache = HashMap<Vec<Vec<u8>>, Option<Arc<Tree>>>;

/// Trees of the parent snapshot's `ngw/` part, each loaded once.
struct ParentTrees<'a> {
    run: &'a Run<'a>,
    root: Option<Id>,
    cache: Mutex<TreeCache>,
}

impl ParentTrees<'_> {
    fn tree(&self, path: &[Vec<u8>]) -> Option<Arc<Tree>> {
        if let Some(t) = self
            .cache
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(path)
        {
            return t.clone();
        }
        let id = match path.split_last() {
            None => self.root,
            Some((last, above)) => match self.tree(above)?.get(last).map(|n| &n.kind) {
                Some(NodeKind::Dir(id)) => Some(*id),
                _ => None,
            },
        };
        let tree = id.and_then(|id| match self.run.repo.load_tree(&id) {
            Ok(t) => Some(Arc::new(t)),
            Err(e) => {
                log::warn!("parent snapshot unreadable ({e}); reading those blobs again");
                None
            }
        });
        self.cache
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(path.to_vec(), tree.clone());
        tree
    }

    fn node(&self, path: &[Vec<u8>]) -> Option<Node> {
        let (last, dir) = path.split_last()?;
        self.tree(dir)?.get(last).cloned()
    }
}

/// Backs up the instance described by `cfg` into `root`. Any failure (database
/// unreachable, pg_dump failing, a listed blob missing) is an error: no snapshot.
pub(super) fn backup(
    run: &Run<'_>,
    cfg: &NgwConfig,
    parent_root: Option<Id>,
    root: &mut VDir,
    now: Timestamp,
) -> Result<()> {
    let mut session = Session::begin(&cfg.db)?;
    let objs = session.fileobjs()?;
    let fonts = cfg.fonts()?;

    let tmp_base = cfg.backup_tmpdir.clone().unwrap_or_else(std::env::temp_dir);
    let tmp = tempfile::Builder::new()
        .prefix("snap-ngw-")
        .tempdir_in(&tmp_base)
        .at(&tmp_base)?;
    let dump_dir = tmp.path().join("postgres");
    let mut dump = Running::start(
        session.pg_dump(&dump_dir),
        "pg_dump of the NextGIS Web database",
    )?;
    io::copy(dump.stdout(), &mut io::sink()).at("<pg_dump output>")?;
    dump.finish()?;
    let mut list = std::process::Command::new("pg_restore");
    list.arg("--list").arg(&dump_dir);
    let mut lister = Running::start(list, "pg_restore --list")?;
    let mut listing = String::new();
    io::Read::read_to_string(lister.stdout(), &mut listing).at("<pg_restore --list output>")?;
    lister.finish()?;
    let restore_list = session.restore_list(&listing)?;
    session.finish()?;

    let params = run.repo.params(crate::chunker::Profile::Dump);
    let entries = sfs::read_dir_sorted(&dump_dir).at(&dump_dir)?;
    for (name, path) in entries {
        let name = name.to_str().ok_or_else(|| {
            Error::Invalid(format!("{}: unexpected pg_dump file name", path.display()))
        })?;
        let mut f = std::fs::File::open(&path).at(&path)?;
        let len = f.metadata().at(&path)?.len();
        let (content, size) = run.ingest(&mut f, params, Some(len))?.at(&path)?;
        // Free the temporary space as soon as the file is in the repository.
        std::fs::remove_file(&path).at(&path)?;
        root.insert(&comps(&["postgres", name]), stream_node(content, size, now))?;
    }
    let (content, size) = run
        .ingest(&mut Cursor::new(restore_list.into_bytes()), params, None)?
        .at("postgres/restore")?;
    root.insert(
        &comps(&["postgres", "restore"]),
        stream_node(content, size, now),
    )?;

    let parent = ParentTrees {
        run,
        root: parent_root,
        cache: Mutex::new(HashMap::new()),
    };
    let blobs: Vec<(Vec<Vec<u8>>, std::path::PathBuf)> = objs
        .iter()
        .map(|o| {
            let u = &o.uuid;
            (
                comps(&["file_storage", &o.component, &u[..2], &u[2..4], u]),
                cfg.blob_path(&o.component, u),
            )
        })
        .chain(fonts.iter().map(|f| {
            let dir = cfg
                .sdir
                .as_ref()
                .expect("fonts come from sdir")
                .join("core/fontconfig");
            (comps(&["fonts", f]), dir.join(f))
        }))
        .collect();
    let nodes: Vec<Node> = blobs
        .par_iter()
        .map(|(at, path)| {
            let missing = |e: &dyn std::fmt::Display| {
                Error::Invalid(format!(
                    "{}: listed by the instance but not readable ({e}); the file storage is incomplete, no snapshot recorded",
                    path.display()
                ))
            };
            let md = std::fs::symlink_metadata(path).map_err(|e| missing(&e))?;
            if !md.is_file() {
                return Err(missing(&"not a regular file"));
            }
            let prev = parent.node(at);
            let name = at.last().expect("non-empty").clone();
            run.file(path, name, md.clone(), sfs::meta_of(&md), prev.as_ref())?
                .ok_or_else(|| missing(&run.last_warning()))
        })
        .collect::<Result<_>>()?;
    for ((at, _), node) in blobs.iter().zip(nodes) {
        root.insert(at, node)?;
    }
    for (component, text) in [
        ("file_storage", fileobj_index(&objs)),
        ("core", font_index(&fonts)),
    ] {
        if text.is_empty() {
            continue;
        }
        let (content, size) = run
            .ingest(&mut Cursor::new(text.into_bytes()), params, None)?
            .at("$index")?;
        root.insert(
            &comps(&["component", component, "$index"]),
            stream_node(content, size, now),
        )?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn index_lines_are_byte_identical_to_python_json_dumps() {
        let objs = vec![FileObj {
            component: "raster_layer".into(),
            uuid: "bd19836ddb62c11c55ab251ccaca5645".into(),
        }];
        assert_eq!(
            fileobj_index(&objs),
            "{\"id\": 1, \"identity\": \"fileobj\", \"payload\": {\"component\": \"raster_layer\", \"uuid\": \"bd19836ddb62c11c55ab251ccaca5645\"}}\n"
        );
        assert_eq!(
            font_index(&["Ünïcode-1.ttf".into()]),
            "{\"id\": 1, \"identity\": \"font\", \"payload\": {\"component\": \"core\", \"filename\": \"Ünïcode-1.ttf\"}}\n"
        );
    }
}
