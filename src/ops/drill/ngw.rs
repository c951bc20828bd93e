//! The drill of a NextGIS Web part (an instance's, or an imported `.ngwbackup`'s):
//! `restore --ngw` into a throw-away instance, a new database `ngw` of the scratch
//! cluster (with the extensions the dump needs) and a file storage in the source's
//! scratch directory; then the checks `nextgisweb` itself would trip over: every
//! `$index` entry has its blob (or font) in place with the snapshot's size, every
//! `fileobj` row has its blob with that size, the `core_migration` table is there,
//! and the rows of every table are counted (and compared, as for `--pg`).

use std::collections::HashMap;

use super::cluster::ScratchCluster;
use super::db::{compare, count_tables, dotted};
use super::{listed, Proof, SourceCtx};
use crate::error::{Error, IoContext, Result};
use crate::ops::ngw_part::{NgwPart, COMPONENTS};
use crate::ops::restore::ngw::restore_instance;
use crate::source::ngw::{list_facts, DbConfig, IndexItem, NgwConfig, Session};
use crate::source::pg::ident;

pub(super) fn drill(ctx: &SourceCtx<'_>, c: &ScratchCluster) -> Result<Proof> {
    let part = NgwPart::open(ctx.repo, ctx.snap)?;
    let list = String::from_utf8(part.postgres_file("restore")?)
        .map_err(|_| Error::corrupt("snapshot", "ngw/postgres/restore", "not UTF-8"))?;
    c.dsn("postgres").query("CREATE DATABASE ngw")?;
    let db = c.dsn("ngw");
    for e in list_facts(&list).extensions {
        db.query(&format!("CREATE EXTENSION IF NOT EXISTS {}", ident(&e)))?;
    }
    let root = ctx.work.join("ngw");
    let cfg = NgwConfig {
        path: root.join("config.ini"),
        db: DbConfig {
            host: c.socket_dir().display().to_string(),
            port: c.port(),
            name: "ngw".into(),
            user: "postgres".into(),
            password: None,
        },
        sdir: Some(root.join("sdir")),
        file_storage: root.join("file_storage"),
        backup_path: None,
        backup_filename: String::new(),
        backup_tmpdir: Some(ctx.work.to_path_buf()),
    };
    for d in [&cfg.file_storage, &root.join("sdir/core/fontconfig")] {
        std::fs::create_dir_all(d).at(d)?;
    }
    let out = restore_instance(ctx.repo, ctx.snap, &cfg, false, None, ctx.progress)?;
    let mut problems: Vec<String> = out.errors.iter().map(ToString::to_string).collect();

    // Every $index entry: its file in place, of the snapshot's size.
    let mut sizes: HashMap<(String, String), u64> = HashMap::new();
    for component in COMPONENTS {
        let Some((_, text)) = part.index(component)? else {
            continue;
        };
        part.for_each_item(component, &text, &mut |_, item, node| {
            let dest = match &item {
                IndexItem::FileObj(o) => {
                    sizes.insert((o.component.clone(), o.uuid.clone()), node.meta.size);
                    cfg.blob_path(&o.component, &o.uuid)
                }
                IndexItem::Font(f) => root.join("sdir/core/fontconfig").join(f),
            };
            match std::fs::metadata(&dest) {
                Ok(m) if m.len() == node.meta.size => {}
                Ok(m) => problems.push(format!(
                    "{}: {} bytes, the snapshot's {}",
                    dest.display(),
                    m.len(),
                    node.meta.size
                )),
                Err(e) => problems.push(format!("{}: {e}", dest.display())),
            }
            Ok(())
        })?;
    }
    // Every fileobj row: its blob, of the size the snapshot has for it.
    for o in Session::begin(&cfg.db)?.fileobjs()? {
        let key = (o.component.clone(), o.uuid.clone());
        let path = cfg.blob_path(&o.component, &o.uuid);
        match (sizes.get(&key), std::fs::metadata(&path)) {
            (Some(want), Ok(m)) if m.len() == *want => {}
            (None, _) => problems.push(format!(
                "fileobj {}/{} has no blob in the snapshot's $index",
                o.component, o.uuid
            )),
            (Some(want), Ok(m)) => problems.push(format!(
                "fileobj {}/{}: blob of {} bytes, the snapshot's {want}",
                o.component,
                o.uuid,
                m.len()
            )),
            (Some(_), Err(e)) => problems.push(format!("fileobj {}/{}: {e}", o.component, o.uuid)),
        }
    }
    if db.query("SELECT count(*) FROM core_migration").is_err() {
        problems.push("table core_migration is missing after the restore".into());
    }
    let (tables, fell) = compare(dotted(count_tables(&db)?), ctx.previous);
    let problem = if problems.is_empty() {
        fell
    } else {
        Some(listed(&problems))
    };
    Ok(Proof {
        bytes: out.dump_bytes + out.bytes_written,
        checks: vec![
            "restore".into(),
            "index_entries".into(),
            "fileobj_blobs".into(),
            "migrations".into(),
            "row_counts".into(),
        ],
        tables,
        problem,
        note: None,
    })
}
