//! A NextGIS Web instance as a backup source: its `config.ini`, a consistent database
//! session, and where its blobs and fonts live.
//!
//! Consistency is NGW's own: one `SERIALIZABLE READ ONLY DEFERRABLE` transaction
//! exports a snapshot that `pg_dump --snapshot` uses, and the `fileobj` listing is read
//! in that same transaction, so rows and blobs agree. The password goes to pg_dump
//! through its environment, never its arguments.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::error::{Error, Result, SourceError};
use crate::source::pg::ident;
use crate::source::raster_storage::{RasterObject, RasterStorage, StorageMap};

/// Tables whose data NGW leaves out of its backups (schemas are kept).
pub const EXCLUDE_TABLE_DATA: [&str; 5] = [
    "public.auth_oauth_atoken",
    "public.auth_oauth_ptoken",
    "public.pyramid_session",
    "public.pyramid_session_store",
    "tile_cache.*",
];

/// Catalog OIDs of `pg_database`, `pg_extension` and `pg_namespace` (fixed in every
/// PostgreSQL release).
const PG_DATABASE: u32 = 1262;
const PG_EXTENSION: u32 = 3079;
const PG_NAMESPACE: u32 = 2615;

/// Name of the NGW part of a snapshot (see `backup::ngw` for its layout).
pub const SNAPSHOT_ROOT: &str = "ngw";

/// The path `ngw/<parts...>` inside a snapshot.
pub fn snapshot_path(parts: &[&str]) -> Vec<Vec<u8>> {
    std::iter::once(SNAPSHOT_ROOT)
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

/// Where a file-storage blob is kept inside a snapshot.
pub fn blob_snapshot_path(component: &str, uuid: &str) -> Vec<Vec<u8>> {
    snapshot_path(&["file_storage", component, &uuid[..2], &uuid[2..4], uuid])
}

/// Where a custom font is kept inside a snapshot.
pub fn font_snapshot_path(name: &str) -> Vec<Vec<u8>> {
    snapshot_path(&["fonts", name])
}

/// One record of a `$index` file that snap understands.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum IndexItem {
    /// A `fileobj` blob.
    FileObj(FileObj),
    /// A custom font.
    Font(String),
}

/// Parses one `$index` line into its id and item; anything unknown or unsafe is an
/// error naming the line.
pub fn parse_index_line(line: &str) -> Result<(u64, IndexItem)> {
    let bad = |why: &str| {
        Error::from(SourceError::NgwIndexLine {
            line: line.to_string(),
            why: why.to_string(),
        })
    };
    let v: serde_json::Value = serde_json::from_str(line).map_err(|e| bad(&e.to_string()))?;
    let id = v["id"].as_u64().ok_or_else(|| bad("no numeric id"))?;
    let text = |k: &str| {
        v["payload"][k]
            .as_str()
            .ok_or_else(|| bad(&format!("payload has no {k}")))
    };
    let item = match v["identity"].as_str() {
        Some("fileobj") => {
            let (component, uuid) = (text("component")?.to_string(), text("uuid")?.to_string());
            let ok = crate::format::tree::is_safe_name(component.as_bytes())
                && uuid.len() == 32
                && uuid.bytes().all(|b| b.is_ascii_hexdigit());
            if !ok {
                return Err(bad("component or uuid is not valid"));
            }
            IndexItem::FileObj(FileObj { component, uuid })
        }
        Some("font") => {
            let f = text("filename")?;
            if !is_font_name(f) {
                return Err(bad("font file name is not valid"));
            }
            IndexItem::Font(f.to_string())
        }
        other => return Err(bad(&format!("unknown identity {other:?}"))),
    };
    Ok((id, item))
}

/// Database connection settings from `[core] database.*`.
#[derive(Clone, Debug)]
pub struct DbConfig {
    /// Host name or socket directory.
    pub host: String,
    /// Port.
    pub port: u16,
    /// Database name.
    pub name: String,
    /// User.
    pub user: String,
    /// Password (None: rely on `.pgpass` or trust).
    pub password: Option<String>,
}

/// What snap needs of an NGW `config.ini`.
#[derive(Clone, Debug)]
pub struct NgwConfig {
    /// The file it was read from.
    pub path: PathBuf,
    /// Database connection.
    pub db: DbConfig,
    /// `[core] sdir`.
    pub sdir: Option<PathBuf>,
    /// `[file_storage] path`, else `<sdir>/file_storage`.
    pub file_storage: PathBuf,
    /// `[core] backup.path`.
    pub backup_path: Option<PathBuf>,
    /// `[core] backup.filename` (strftime pattern, UTC).
    pub backup_filename: String,
    /// `[core] backup.tmpdir`.
    pub backup_tmpdir: Option<PathBuf>,
}

impl NgwConfig {
    /// Reads `config.ini`; a missing required key is an error naming it.
    pub fn load(path: &Path) -> Result<NgwConfig> {
        let ini = ini::Ini::load_from_file(path).map_err(|source| SourceError::NgwConfig {
            path: path.to_path_buf(),
            source,
        })?;
        let get = |section: &str, key: &str| {
            ini.section(Some(section))
                .and_then(|s| s.get(key))
                .map(str::trim)
                .filter(|v| !v.is_empty())
        };
        let need = |section: &str, key: &str| {
            get(section, key).ok_or_else(|| {
                Error::from(SourceError::NgwConfigMissing {
                    path: path.to_path_buf(),
                    section: section.to_string(),
                    key: key.to_string(),
                })
            })
        };
        let port = match get("core", "database.port") {
            Some(p) => p.parse().map_err(|_| SourceError::NgwConfigPort {
                path: path.to_path_buf(),
                value: p.to_string(),
            })?,
            None => 5432,
        };
        let sdir = get("core", "sdir").map(PathBuf::from);
        let file_storage = match (get("file_storage", "path"), &sdir) {
            (Some(p), _) => PathBuf::from(p),
            (None, Some(s)) => s.join("file_storage"),
            (None, None) => return Err(need("core", "sdir").unwrap_err()),
        };
        Ok(NgwConfig {
            path: path.to_path_buf(),
            db: DbConfig {
                host: get("core", "database.host")
                    .unwrap_or("localhost")
                    .to_string(),
                port,
                name: need("core", "database.name")?.to_string(),
                user: need("core", "database.user")?.to_string(),
                password: get("core", "database.password").map(str::to_string),
            },
            sdir,
            file_storage,
            backup_path: get("core", "backup.path").map(PathBuf::from),
            backup_filename: get("core", "backup.filename")
                .unwrap_or("%Y%m%d-%H%M%S.ngwbackup")
                .to_string(),
            backup_tmpdir: get("core", "backup.tmpdir").map(PathBuf::from),
        })
    }

    /// Where the blob of a `fileobj` row lives.
    pub fn blob_path(&self, component: &str, uuid: &str) -> PathBuf {
        self.file_storage
            .join(component)
            .join(&uuid[..2])
            .join(&uuid[2..4])
            .join(uuid)
    }

    /// Custom fonts (`<sdir>/core/fontconfig/*.ttf|otf`, names NGW accepts), sorted.
    pub fn fonts(&self) -> Result<Vec<String>> {
        let Some(sdir) = &self.sdir else {
            return Ok(Vec::new());
        };
        let dir = sdir.join("core/fontconfig");
        let rd = match std::fs::read_dir(&dir) {
            Ok(rd) => rd,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => {
                return Err(Error::Io {
                    path: dir,
                    source: e,
                })
            }
        };
        let mut out: Vec<String> = rd
            .flatten()
            .filter_map(|e| e.file_name().to_str().map(str::to_string))
            .filter(|n| is_font_name(n))
            .collect();
        out.sort();
        Ok(out)
    }
}

/// `^[A-Za-z0-9_\-]+\.(ttf|otf)$`
pub fn is_font_name(n: &str) -> bool {
    let Some((stem, ext)) = n.rsplit_once('.') else {
        return false;
    };
    (ext == "ttf" || ext == "otf")
        && !stem.is_empty()
        && stem
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// A `fileobj` row: owner component and 32-hex uuid.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FileObj {
    /// Owning component (`raster_layer`, ...).
    pub component: String,
    /// Uuid, 32 lowercase hex digits.
    pub uuid: String,
}

/// An open `SERIALIZABLE READ ONLY DEFERRABLE` transaction with an exported snapshot.
pub struct Session {
    client: postgres::Client,
    snapshot: String,
    db: DbConfig,
}

fn pg_err(db: &DbConfig, what: &'static str, error: postgres::Error) -> Error {
    SourceError::NgwDatabase {
        db: db.name.clone(),
        host: db.host.clone(),
        port: db.port,
        user: db.user.clone(),
        what,
        error,
    }
    .into()
}

impl DbConfig {
    /// Connects to the database.
    pub fn connect(&self) -> Result<postgres::Client> {
        let mut cfg = postgres::Config::new();
        cfg.host(&self.host)
            .port(self.port)
            .dbname(&self.name)
            .user(&self.user)
            .application_name("snap");
        if let Some(p) = &self.password {
            cfg.password(p);
        }
        cfg.connect(postgres::NoTls)
            .map_err(|e| pg_err(self, "cannot connect", e))
    }

    /// Connection settings for a client tool (pg_dump, pg_restore), through its
    /// environment: the password never appears in process arguments.
    pub fn client_env(&self, c: &mut Command) {
        c.env("PGHOST", &self.host)
            .env("PGPORT", self.port.to_string())
            .env("PGUSER", &self.user)
            .env("PGDATABASE", &self.name);
        if let Some(p) = &self.password {
            c.env("PGPASSWORD", p);
        }
    }
}

/// NGW's `core.last_backup` setting for a backup started at `started`: Python's
/// `isoformat()` of the naive UTC time (microseconds, left out when zero).
pub fn last_backup_value(started: chrono::DateTime<chrono::Utc>) -> String {
    let t = started.naive_utc();
    let micros = t.and_utc().timestamp_subsec_micros();
    if micros == 0 {
        t.format("%Y-%m-%dT%H:%M:%S").to_string()
    } else {
        format!("{}.{micros:06}", t.format("%Y-%m-%dT%H:%M:%S"))
    }
}

impl DbConfig {
    /// Records a backup started at `started` as the instance's last one, as
    /// `nextgisweb backup` does after it succeeds: the `core` setting `last_backup`
    /// (a JSON string in NGW 5.x's `jsonb` column, JSON text in older ones' `varchar`),
    /// in a short transaction of its own.
    pub fn record_last_backup(&self, started: chrono::DateTime<chrono::Utc>) -> Result<()> {
        let mut client = self.connect()?;
        let what = "recording last_backup in table setting";
        let jsonb: Option<bool> = client
            .query_opt(
                "SELECT data_type = 'jsonb' FROM information_schema.columns
                  WHERE table_schema = 'public' AND table_name = 'setting'
                    AND column_name = 'value'",
                &[],
            )
            .map_err(|e| pg_err(self, what, e))?
            .map(|r| r.get(0));
        // No such table: the INSERT fails with PostgreSQL's own words.
        let value = if jsonb == Some(false) {
            "to_json($1::text)::text"
        } else {
            "to_jsonb($1::text)"
        };
        client
            .execute(
                &format!(
                    "INSERT INTO setting (component, name, value) VALUES ('core', 'last_backup', {value})
                     ON CONFLICT (component, name) DO UPDATE SET value = EXCLUDED.value"
                ),
                &[&last_backup_value(started)],
            )
            .map_err(|e| pg_err(self, what, e))?;
        Ok(())
    }
}

impl Session {
    /// Connects and starts the transaction.
    pub fn begin(db: &DbConfig) -> Result<Session> {
        let mut client = db.connect()?;
        client
            .batch_execute("BEGIN ISOLATION LEVEL SERIALIZABLE READ ONLY DEFERRABLE")
            .map_err(|e| pg_err(db, "cannot start the backup transaction", e))?;
        let snapshot: String = client
            .query_one("SELECT pg_export_snapshot()", &[])
            .map_err(|e| pg_err(db, "pg_export_snapshot", e))?
            .get(0);
        Ok(Session {
            client,
            snapshot,
            db: db.clone(),
        })
    }

    /// The `fileobj` rows, ordered by (component, uuid), as NGW lists them.
    pub fn fileobjs(&mut self) -> Result<Vec<FileObj>> {
        let rows = self
            .client
            .query(
                "SELECT component, uuid::text FROM fileobj ORDER BY component, uuid",
                &[],
            )
            .map_err(|e| {
                pg_err(
                    &self.db,
                    "reading table fileobj (is this a NextGIS Web database?)",
                    e,
                )
            })?;
        rows.iter()
            .map(|r| {
                let component: String = r.get(0);
                let uuid: String = r.get::<_, String>(1).replace('-', "").to_ascii_lowercase();
                let ok = uuid.len() == 32
                    && uuid.bytes().all(|b| b.is_ascii_hexdigit())
                    && crate::format::tree::is_safe_name(component.as_bytes());
                if ok {
                    Ok(FileObj { component, uuid })
                } else {
                    Err(SourceError::NgwFileObj { component, uuid }.into())
                }
            })
            .collect()
    }

    /// The instance's external raster storages and the objects its raster layers keep
    /// in them, ordered (NGW 5.4 and later; none on an older instance).
    pub fn raster_objects(&mut self) -> Result<(Vec<RasterStorage>, Vec<RasterObject>)> {
        raster_objects(&mut self.client, &self.db)
    }

    /// A `pg_dump` of the session's snapshot in NGW's format into directory `out`
    /// (which must not exist), with NGW's exclusions.
    pub fn pg_dump(&self, out: &Path) -> Command {
        let mut c = Command::new("pg_dump");
        c.arg("--format=directory")
            .arg("--compress=0")
            // A scratch directory, read and deleted while pg_dump runs: fsync is wasted.
            .arg("--no-sync")
            .arg(format!("--snapshot={}", self.snapshot))
            .arg(format!("--file={}", out.display()));
        for t in EXCLUDE_TABLE_DATA {
            c.arg(format!("--exclude-table-data={t}"));
        }
        self.db.client_env(&mut c);
        c
    }

    /// The `postgres/restore` list NGW writes for `pg_restore --list` output: database,
    /// extension and `public` schema entries, and comments that follow them, commented out.
    pub fn restore_list(&mut self, listing: &str) -> Result<String> {
        let mut out = Vec::new();
        let mut skip_prev = false;
        for line in listing.split('\n') {
            if line.is_empty() || line.starts_with(';') {
                out.push(line.to_string());
                continue;
            }
            let skip = match parse_toc_line(line) {
                Some((catalog, object, rest)) => {
                    catalog == PG_DATABASE
                        || catalog == PG_EXTENSION
                        || (catalog == PG_NAMESPACE
                            && self.namespace(object)?.as_deref() == Some("public"))
                        || (skip_prev && rest.starts_with("COMMENT "))
                }
                None => false,
            };
            out.push(if skip {
                format!(";{line}")
            } else {
                line.to_string()
            });
            skip_prev = skip;
        }
        Ok(out.join("\n"))
    }

    fn namespace(&mut self, oid: u32) -> Result<Option<String>> {
        let row = self
            .client
            .query_opt(
                "SELECT nspname::text FROM pg_catalog.pg_namespace WHERE oid = $1",
                &[&oid],
            )
            .map_err(|e| pg_err(&self.db, "reading pg_namespace", e))?;
        Ok(row.map(|r| r.get(0)))
    }

    /// Ends the transaction.
    pub fn finish(mut self) -> Result<()> {
        self.client
            .batch_execute("COMMIT")
            .map_err(|e| pg_err(&self.db, "COMMIT", e))
    }
}

/// The `raster_layer_storage` rows (NGW 5.4 and later; none on an older instance),
/// ordered by id, with their resources' display names.
fn raster_storages(client: &mut postgres::Client, db: &DbConfig) -> Result<Vec<RasterStorage>> {
    let what = "reading the raster layer storages";
    let has = client
        .query_one(
            "SELECT to_regclass('public.raster_layer_storage') IS NOT NULL,
                    to_regclass('public.resource') IS NOT NULL",
            &[],
        )
        .map_err(|e| pg_err(db, what, e))?;
    let (storages, resources): (bool, bool) = (has.get(0), has.get(1));
    if !storages {
        return Ok(Vec::new());
    }
    let name = if resources {
        "COALESCE((SELECT display_name::text FROM resource r WHERE r.id = s.id), '')"
    } else {
        "''"
    };
    let rows = client
        .query(
            &format!(
                "SELECT s.id, {name}, s.endpoint::text, s.bucket::text, s.prefix::text,
                        s.access_key::text, s.secret_key::text
                   FROM raster_layer_storage s ORDER BY s.id"
            ),
            &[],
        )
        .map_err(|e| pg_err(db, what, e))?;
    Ok(rows
        .iter()
        .map(|r| {
            // NGW takes a storage without both keys as public; an empty key is none.
            let key = |i| r.get::<_, Option<String>>(i).filter(|k| !k.is_empty());
            let keys = key(5).zip(key(6));
            RasterStorage::new(r.get(0), r.get(1), r.get(2), r.get(3), r.get(4), keys)
        })
        .collect())
}

/// The external raster storages and the objects raster layers keep in them, as
/// (storage id, `storage_filename`), ordered; none on an instance older than 5.4.
fn raster_objects(
    client: &mut postgres::Client,
    db: &DbConfig,
) -> Result<(Vec<RasterStorage>, Vec<RasterObject>)> {
    let storages = raster_storages(client, db)?;
    if storages.is_empty() {
        return Ok((storages, Vec::new()));
    }
    let rows = client
        .query(
            "SELECT DISTINCT storage_id, storage_filename::text FROM raster_layer
              WHERE storage_id IS NOT NULL AND storage_filename IS NOT NULL ORDER BY 1, 2",
            &[],
        )
        .map_err(|e| pg_err(db, "reading the raster layers in external storages", e))?;
    let objects = rows
        .iter()
        .map(|r| RasterObject {
            storage: r.get(0),
            filename: r.get(1),
        })
        .collect();
    Ok((storages, objects))
}

/// Parses `dumpId; catalogOid objectOid rest` (NGW's `(\d+)\;\s+(\d+)\s+(\d+)\s+(.*)`).
fn parse_toc_line(line: &str) -> Option<(u32, u32, &str)> {
    let (id, rest) = line.split_once(';')?;
    if id.is_empty() || !id.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let rest = rest.strip_prefix(|c: char| c.is_whitespace())?.trim_start();
    let (catalog, rest) = rest.split_once(char::is_whitespace)?;
    let rest = rest.trim_start();
    let (object, rest) = rest.split_once(char::is_whitespace)?;
    Some((
        catalog.parse().ok()?,
        object.parse().ok()?,
        rest.trim_start(),
    ))
}

/// What a snapshot's `postgres/restore` list says about the database it restores into.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct ListFacts {
    /// Extensions the dump had, which the list leaves out: the target must have them.
    pub extensions: Vec<String>,
    /// Schemas whose objects the dump holds (`public` included).
    pub schemas: Vec<String>,
}

/// Reads the extension and schema entries of a `pg_restore --list` (commented or not).
pub fn list_facts(list: &str) -> ListFacts {
    let mut f = ListFacts {
        schemas: vec!["public".to_string()],
        ..Default::default()
    };
    for line in list.split('\n') {
        let Some((catalog, _, rest)) = parse_toc_line(line.trim_start_matches(';')) else {
            continue;
        };
        // `<TYPE> <namespace or -> <name> <owner>`
        let words: Vec<&str> = rest.split_whitespace().collect();
        let name = match words.as_slice() {
            [_, "-", name, ..] => name.to_string(),
            _ => continue,
        };
        let into = match (catalog, words[0]) {
            (PG_EXTENSION, "EXTENSION") => &mut f.extensions,
            (PG_NAMESPACE, "SCHEMA") => &mut f.schemas,
            _ => continue,
        };
        if !into.contains(&name) {
            into.push(name);
        }
    }
    f
}

/// A read-write connection to the database an instance is restored into.
pub struct Target {
    client: postgres::Client,
    db: DbConfig,
}

impl Target {
    /// Connects.
    pub fn connect(db: &DbConfig) -> Result<Target> {
        Ok(Target {
            client: db.connect()?,
            db: db.clone(),
        })
    }

    /// Which of `wanted` extensions the database lacks.
    pub fn missing_extensions(&mut self, wanted: &[String]) -> Result<Vec<String>> {
        let rows = self
            .client
            .query("SELECT extname::text FROM pg_catalog.pg_extension", &[])
            .map_err(|e| pg_err(&self.db, "reading pg_extension", e))?;
        let have: Vec<String> = rows.iter().map(|r| r.get(0)).collect();
        Ok(wanted
            .iter()
            .filter(|w| !have.contains(w))
            .cloned()
            .collect())
    }

    /// Tables in `schemas` that no extension owns (PostGIS's `spatial_ref_sys` stays),
    /// as `schema.table`; partitions come with their parent.
    pub fn tables(&mut self, schemas: &[String]) -> Result<Vec<(String, String)>> {
        let rows = self
            .client
            .query(
                "SELECT n.nspname::text, c.relname::text
                   FROM pg_catalog.pg_class c
                   JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
                  WHERE c.relkind IN ('r', 'p') AND NOT c.relispartition
                    AND n.nspname = ANY($1)
                    AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_depend d
                                     WHERE d.classid = 'pg_catalog.pg_class'::regclass
                                       AND d.objid = c.oid AND d.deptype = 'e')
                  ORDER BY 1, 2",
                &[&schemas],
            )
            .map_err(|e| pg_err(&self.db, "listing tables", e))?;
        Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
    }

    /// Drops `tables` with whatever depends on them, a transaction per batch (one
    /// transaction for thousands of tables would run out of lock slots).
    pub fn drop_tables(&mut self, tables: &[(String, String)]) -> Result<()> {
        for batch in tables.chunks(500) {
            let names: Vec<String> = batch
                .iter()
                .map(|(s, t)| format!("{}.{}", ident(s), ident(t)))
                .collect();
            let sql = format!(
                "BEGIN; DROP TABLE IF EXISTS {} CASCADE; COMMIT",
                names.join(", ")
            );
            self.client
                .batch_execute(&sql)
                .map_err(|e| pg_err(&self.db, "dropping the instance's tables", e))?;
        }
        Ok(())
    }

    /// The rows of `core_migration` (component, revision), sorted; `None` when the
    /// database has no such table.
    pub fn migrations(&mut self) -> Result<Option<Vec<(String, String)>>> {
        let exists: bool = self
            .client
            .query_one(
                "SELECT to_regclass('public.core_migration') IS NOT NULL",
                &[],
            )
            .map_err(|e| pg_err(&self.db, "looking for core_migration", e))?
            .get(0);
        if !exists {
            return Ok(None);
        }
        let rows = self
            .client
            .query(
                "SELECT component::text, revision::text FROM public.core_migration ORDER BY 1, 2",
                &[],
            )
            .map_err(|e| pg_err(&self.db, "reading core_migration", e))?;
        Ok(Some(rows.iter().map(|r| (r.get(0), r.get(1))).collect()))
    }

    /// The restored instance's external raster storages and the objects its raster
    /// layers keep in them.
    pub fn raster_objects(&mut self) -> Result<(Vec<RasterStorage>, Vec<RasterObject>)> {
        raster_objects(&mut self.client, &self.db)
    }

    /// Points storage `id` at another endpoint, bucket and prefix (its keys stay).
    pub fn move_raster_storage(&mut self, m: &StorageMap) -> Result<()> {
        let n = self
            .client
            .execute(
                "UPDATE raster_layer_storage SET endpoint = $2, bucket = $3, prefix = $4 WHERE id = $1",
                &[&m.id, &m.endpoint, &m.bucket, &m.prefix],
            )
            .map_err(|e| pg_err(&self.db, "updating raster_layer_storage", e))?;
        if n == 0 {
            return Err(Error::corrupt(
                "snapshot",
                "ngw/raster_layer_storage/$index",
                format!(
                    "raster layer storage {} is not in the restored database",
                    m.id
                ),
            ));
        }
        Ok(())
    }

    /// `pg_restore` as `nextgisweb restore` runs it, of dump directory `dir` with list
    /// file `list`, into this database.
    pub fn pg_restore(&self, list: &Path, dir: &Path) -> Command {
        let mut c = Command::new("pg_restore");
        c.args([
            "--clean",
            "--if-exists",
            "--no-owner",
            "--no-privileges",
            "--exit-on-error",
        ])
        .arg("--use-list")
        .arg(list)
        .arg("--dbname")
        .arg(&self.db.name)
        .arg(dir);
        self.db.client_env(&mut c);
        c
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn index_lines_are_byte_identical_to_python_json_dumps_and_parse_back() {
        let objs = vec![FileObj {
            component: "raster_layer".into(),
            uuid: "bd19836ddb62c11c55ab251ccaca5645".into(),
        }];
        assert_eq!(
            fileobj_index(&objs),
            "{\"id\": 1, \"identity\": \"fileobj\", \"payload\": {\"component\": \"raster_layer\", \"uuid\": \"bd19836ddb62c11c55ab251ccaca5645\"}}\n"
        );
        assert_eq!(
            font_index(&["Font-1.ttf".into()]),
            "{\"id\": 1, \"identity\": \"font\", \"payload\": {\"component\": \"core\", \"filename\": \"Font-1.ttf\"}}\n"
        );
        let line = fileobj_index(&objs);
        assert_eq!(
            parse_index_line(line.trim_end()).unwrap(),
            (1, IndexItem::FileObj(objs[0].clone()))
        );
        assert!(parse_index_line("{\"id\": 2, \"identity\": \"fileobj\", \"payload\": {\"component\": \"..\", \"uuid\": \"x\"}}").is_err());
        assert!(
            parse_index_line("{\"id\": 3, \"identity\": \"resource\", \"payload\": {}}").is_err()
        );
    }

    #[test]
    fn config_keys_and_defaults() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("config.ini");
        std::fs::write(&p, "[core]\ndatabase.name = ngw\ndatabase.user = ngw\ndatabase.password = s3cret\nsdir = /var/ngw\n").unwrap();
        let c = NgwConfig::load(&p).unwrap();
        assert_eq!((c.db.host.as_str(), c.db.port), ("localhost", 5432));
        assert_eq!(c.file_storage, PathBuf::from("/var/ngw/file_storage"));
        assert_eq!(c.backup_filename, "%Y%m%d-%H%M%S.ngwbackup");
        assert_eq!(
            c.blob_path("raster_layer", "bd19836ddb62c11c55ab251ccaca5645"),
            PathBuf::from(
                "/var/ngw/file_storage/raster_layer/bd/19/bd19836ddb62c11c55ab251ccaca5645"
            )
        );
        std::fs::write(&p, "[core]\ndatabase.user = ngw\nsdir = /x\n").unwrap();
        let e = NgwConfig::load(&p).unwrap_err().to_string();
        assert!(e.contains("[core] database.name is missing"), "{e}");
    }

    #[test]
    fn toc_lines() {
        assert_eq!(
            parse_toc_line("3; 2615 2200 SCHEMA - public postgres"),
            Some((2615, 2200, "SCHEMA - public postgres"))
        );
        assert_eq!(
            parse_toc_line("4; 0 0 COMMENT - SCHEMA public postgres"),
            Some((0, 0, "COMMENT - SCHEMA public postgres"))
        );
        assert_eq!(parse_toc_line(";  Archive created at"), None);
        assert_eq!(parse_toc_line("garbage"), None);
    }

    #[test]
    fn list_facts_name_extensions_and_schemas() {
        let list = ";\n; Archive created at 2026-01-01\n;3; 2615 2200 SCHEMA - public postgres\n\
                    ;4; 0 0 COMMENT - SCHEMA public postgres\n5; 2615 16390 SCHEMA - vector_layer ngw\n\
                    ;2; 3079 16385 EXTENSION - postgis \n;6; 0 0 COMMENT - EXTENSION postgis \n\
                    200; 1259 16400 TABLE public fileobj ngw\n300; 0 16400 TABLE DATA public fileobj ngw";
        assert_eq!(
            list_facts(list),
            ListFacts {
                extensions: vec!["postgis".into()],
                schemas: vec!["public".into(), "vector_layer".into()],
            }
        );
    }

    #[test]
    fn font_names() {
        assert!(is_font_name("Open_Sans-Bold.ttf"));
        assert!(!is_font_name("../x.ttf") && !is_font_name("a.woff") && !is_font_name(".ttf"));
    }
}
