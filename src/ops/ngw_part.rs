//! A snapshot's NextGIS Web part read back (layout in `backup::ngw`): the dump files,
//! each component's `$index`, and the blob each of its lines names.

use std::io::BufRead;
use std::sync::Arc;

use crate::error::{Error, Result, Usage};
use crate::format::snapshot::Snapshot;
use crate::format::tree::{Content, Node, NodeKind, Tree};
use crate::repo::{PathLookup, Repository};
use crate::source::ngw::{
    blob_snapshot_path, font_snapshot_path, parse_index_line, snapshot_path, IndexItem,
};
use crate::source::raster_storage::{snapshot_path as raster_path, StoredObject};

/// Components whose `$index` snap knows, in the order they are exported.
pub const COMPONENTS: [&str; 2] = ["core", "file_storage"];

/// The content of a snapshot entry that must be a file.
pub fn file_content<'n>(name: &str, node: &'n Node) -> Result<&'n Content> {
    match &node.kind {
        NodeKind::File(content) => Ok(content),
        _ => Err(Error::corrupt("snapshot", name, "expected a file")),
    }
}

/// The NGW part of one snapshot.
pub struct NgwPart<'r> {
    repo: &'r Repository,
    lookup: PathLookup<'r>,
    postgres: Arc<Tree>,
}

impl<'r> NgwPart<'r> {
    /// Opens the NGW part of `snap`; a snapshot without one is an error saying so.
    pub fn open(repo: &'r Repository, snap: &Snapshot) -> Result<NgwPart<'r>> {
        let lookup = PathLookup::new(repo, snap.tree);
        let postgres = lookup
            .tree(&snapshot_path(&["postgres"]))?
            .ok_or_else(|| Error::from(Usage::NoNgw))?;
        Ok(NgwPart {
            repo,
            lookup,
            postgres,
        })
    }

    /// The `postgres/` directory: pg_dump's files and the `restore` list.
    pub fn postgres(&self) -> &Tree {
        &self.postgres
    }

    /// Reads the whole of a small file of the dump directory (`toc.dat`, `restore`).
    pub fn postgres_file(&self, name: &str) -> Result<Vec<u8>> {
        let node = self
            .postgres
            .get(name.as_bytes())
            .ok_or_else(|| Error::corrupt("snapshot", format!("ngw/postgres/{name}"), "missing"))?;
        let mut out = Vec::new();
        self.repo
            .write_content(file_content(name, node)?, &mut out)?;
        Ok(out)
    }

    /// The `$index` of `component` and its text, if the snapshot has one.
    pub fn index(&self, component: &str) -> Result<Option<(Node, Vec<u8>)>> {
        read_file(
            self.repo,
            &self.lookup,
            &snapshot_path(&["component", component, "$index"]),
        )
    }

    /// Calls `f` with each line of `component`'s `$index` text: its id, its item and
    /// the snapshot entry of the item's blob.
    pub fn for_each_item(
        &self,
        component: &str,
        text: &[u8],
        f: &mut dyn FnMut(u64, IndexItem, Node) -> Result<()>,
    ) -> Result<()> {
        for line in text.lines() {
            let line = line.map_err(|e| {
                Error::corrupt("snapshot", format!("component/{component}/$index"), e)
            })?;
            let (id, item) = parse_index_line(&line)?;
            let at = match &item {
                IndexItem::FileObj(o) => blob_snapshot_path(&o.component, &o.uuid),
                IndexItem::Font(f) => font_snapshot_path(f),
            };
            let node = self.lookup.node(&at)?.ok_or_else(|| {
                Error::corrupt(
                    "snapshot",
                    String::from_utf8_lossy(&at.join(&b'/')),
                    "listed in $index but missing",
                )
            })?;
            f(id, item, node)?;
        }
        Ok(())
    }

    /// The objects of external raster storages the snapshot holds (see
    /// `backup::rasters`), each with its entry; none in a snapshot without them.
    pub fn rasters(&self) -> Result<Vec<(StoredObject, Node)>> {
        raster_index(self.repo, &self.lookup)?
            .into_iter()
            .map(|o| {
                let node = self.lookup.node(&raster_path(&o.path))?.ok_or_else(|| {
                    Error::corrupt(
                        "snapshot",
                        format!("ngw/raster_layer_storage/{}", o.path),
                        "listed in $index but missing",
                    )
                })?;
                Ok((o, node))
            })
            .collect()
    }
}

/// The entry at `path` of a snapshot, which must be a file, and its whole content;
/// `None` when there is none.
fn read_file(
    repo: &Repository,
    lookup: &PathLookup<'_>,
    path: &[Vec<u8>],
) -> Result<Option<(Node, Vec<u8>)>> {
    let Some(node) = lookup.node(path)? else {
        return Ok(None);
    };
    let mut text = Vec::new();
    let name = String::from_utf8_lossy(&path.join(&b'/')).into_owned();
    repo.write_content(file_content(&name, &node)?, &mut text)?;
    Ok(Some((node, text)))
}

/// The records of `ngw/raster_layer_storage/$index` in the snapshot `lookup` reads;
/// none when it has no such part.
pub fn raster_index(repo: &Repository, lookup: &PathLookup<'_>) -> Result<Vec<StoredObject>> {
    match read_file(repo, lookup, &raster_path("$index"))? {
        Some((_, text)) => StoredObject::parse_index(&text),
        None => Ok(Vec::new()),
    }
}
