//! NextGIS Web instances: backup, restore into an instance, export and import, against
//! an NGW-shaped database on a real PostgreSQL.

use super::*;
use std::os::unix::fs::MetadataExt;
use util::pg::Pg;

const UUIDS: [&str; 5] = [
    "0a1b2c3d4e5f60718293a4b5c6d7e8f9",
    "1b2c3d4e5f60718293a4b5c6d7e8f90a",
    "2c3d4e5f60718293a4b5c6d7e8f90a1b",
    "3d4e5f60718293a4b5c6d7e8f90a1b2c",
    "4e5f60718293a4b5c6d7e8f90a1b2c3d",
];

/// An NGW-shaped instance: database, file storage, a custom font, config.ini.
struct Instance {
    pg: Pg,
    env: Env,
}

impl Instance {
    fn new() -> Option<Instance> {
        let pg = Pg::start()?;
        let env = Env::new();
        pg.createdb("ngw");
        pg.sql(
                "ngw",
                "CREATE EXTENSION pg_trgm;
                 CREATE TABLE fileobj (id serial PRIMARY KEY, component varchar(50) NOT NULL, uuid varchar(32) NOT NULL);
                 CREATE TABLE setting (component varchar, name varchar, value jsonb, PRIMARY KEY (component, name));
                 CREATE TABLE core_migration (component varchar, revision varchar);
                 CREATE TABLE pyramid_session (id text PRIMARY KEY, data text);
                 CREATE TABLE auth_oauth_atoken (id text PRIMARY KEY, data text);
                 CREATE SCHEMA tile_cache; CREATE TABLE tile_cache.tiles (z int, x int, y int, tile bytea);
                 CREATE SCHEMA vector_layer;
                 CREATE TABLE vector_layer.layer_roads (id serial PRIMARY KEY, geom bytea, name text);
                 INSERT INTO vector_layer.layer_roads (geom, name)
                   SELECT decode(md5(i::text), 'hex'), 'road ' || i FROM generate_series(1, 20000) i;
                 INSERT INTO setting VALUES ('core', 'system.name', '\"Test NGW\"');
                 INSERT INTO core_migration VALUES ('core', '2026-01-01');
                 INSERT INTO pyramid_session VALUES ('s1', 'secret session');
                 INSERT INTO auth_oauth_atoken VALUES ('t1', 'secret token');
                 INSERT INTO tile_cache.tiles VALUES (1, 2, 3, 'tile');",
            );
        let inst = Instance { pg, env };
        for (i, u) in UUIDS.iter().enumerate() {
            inst.add_blob(
                if i % 2 == 0 {
                    "raster_layer"
                } else {
                    "feature_attachment"
                },
                u,
            );
        }
        fs::create_dir_all(inst.env.path("sdir/core/fontconfig")).unwrap();
        fs::write(
            inst.env.path("sdir/core/fontconfig/Custom_Font-1.ttf"),
            b"font bytes",
        )
        .unwrap();
        set_mtime(
            &inst.env.path("sdir/core/fontconfig/Custom_Font-1.ttf"),
            1_600_000_000,
            0,
        );
        fs::write(
            inst.env.path("sdir/core/fontconfig/ignored.woff"),
            b"not a font NGW takes",
        )
        .unwrap();
        let cfg = format!(
                "[core]\ndatabase.host = {}\ndatabase.port = 5432\ndatabase.name = ngw\ndatabase.user = postgres\nsdir = {}\n\n[file_storage]\npath = {}\n",
                inst.pg.sock(),
                inst.env.path("sdir").display(),
                inst.env.path("fs").display()
            );
        fs::write(inst.env.path("config.ini"), cfg).unwrap();
        inst.env.init();
        Some(inst)
    }

    fn add_blob(&self, component: &str, uuid: &str) {
        let p = self.blob(component, uuid);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(&p, random_bytes(1 << 20, uuid)).unwrap();
        // Blobs are written once and then old (see the "racy clean" rule).
        set_mtime(&p, 1_600_000_000, 0);
        self.pg.sql(
            "ngw",
            &format!("INSERT INTO fileobj (component, uuid) VALUES ('{component}', '{uuid}')"),
        );
    }

    fn blob(&self, component: &str, uuid: &str) -> std::path::PathBuf {
        self.env.path(&format!(
            "fs/{component}/{}/{}/{uuid}",
            &uuid[..2],
            &uuid[2..4]
        ))
    }

    /// Sets `backup.path` (a new folder `backups`, returned) and a `backup.filename`
    /// in config.ini, as the default destination of exports.
    fn set_backup_path(&self) -> std::path::PathBuf {
        let backups = self.env.path("backups");
        fs::create_dir_all(&backups).unwrap();
        let cfg = fs::read_to_string(self.config()).unwrap().replace(
            "[core]\n",
            &format!(
                "[core]\nbackup.path = {}\nbackup.filename = nextgisweb-%Y%m%d-%H%M%S.ngwbackup\n",
                backups.display()
            ),
        );
        fs::write(self.config(), cfg).unwrap();
        backups
    }

    fn config(&self) -> String {
        self.env.path("config.ini").display().to_string()
    }

    fn cat(&self, path: &str) -> Vec<u8> {
        let out = self.env.snap(&["cat", "latest", path]).output().unwrap();
        assert!(
            out.status.success(),
            "cat {path}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        out.stdout
    }

    /// Restores the snapshot's dump and loads it with NGW's pg_restore command into a
    /// fresh database `db`.
    fn pg_restore_into(&self, db: &str) {
        let target = self.env.path(&format!("restore-{db}"));
        self.restore_part("ngw/postgres", &target);
        self.load_dump(&target.join("ngw"), db);
    }

    /// Restores path `include` of the latest snapshot into the new directory `target`.
    fn restore_part(&self, include: &str, target: &Path) {
        self.env
            .snap(&[
                "restore",
                "latest",
                "--target",
                target.to_str().unwrap(),
                "--include",
                include,
            ])
            .assert()
            .success();
    }

    /// What `nextgisweb restore` does with an unpacked backup `dir`: pg_restore of
    /// `postgres/` with its `restore` list into the fresh database `db`.
    fn load_dump(&self, dir: &Path, db: &str) {
        self.pg.createdb(db);
        // Like NGW, the target database must already have the extensions.
        self.pg.sql(db, "CREATE EXTENSION pg_trgm");
        let pg = dir.join("postgres");
        let out = self
            .pg
            .client("pg_restore", db)
            .args([
                "--clean",
                "--if-exists",
                "--no-owner",
                "--no-privileges",
                "--exit-on-error",
                "--use-list",
            ])
            .arg(pg.join("restore"))
            .arg("--dbname")
            .arg(db)
            .arg(&pg)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "pg_restore: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Checks an unpacked `.ngwbackup` as `nextgisweb restore` would use it: the dump
    /// loads and equals the source, and every `$index` line has its blob, byte-identical.
    fn verify_unpacked(&self, dir: &Path, db: &str) {
        self.load_dump(dir, db);
        assert_eq!(self.tables_dump(db), self.tables_dump("ngw"));
        let index = fs::read_to_string(dir.join("component/file_storage/$index")).unwrap();
        let mut n = 0;
        for line in index.lines() {
            let v: serde_json::Value = serde_json::from_str(line).unwrap();
            let id = v["id"].as_u64().unwrap();
            let (c, u) = (
                v["payload"]["component"].as_str().unwrap(),
                v["payload"]["uuid"].as_str().unwrap(),
            );
            let member = dir.join(format!("component/file_storage/{id:08}"));
            assert!(
                fs::read(&member).unwrap() == fs::read(self.blob(c, u)).unwrap(),
                "{}",
                member.display()
            );
            n += 1;
        }
        assert_eq!(
            n as usize,
            self.pg
                .sql("ngw", "SELECT count(*) FROM fileobj")
                .trim()
                .parse::<usize>()
                .unwrap()
        );
        assert_eq!(
            fs::read(dir.join("component/core/00000001")).unwrap(),
            b"font bytes"
        );
    }

    /// Tests a ZIP with Python's zipfile and unzip, extracts it as NGW does, verifies.
    fn verify_zip(&self, zip: &Path, db: &str) {
        let t = std::process::Command::new("python3")
            .args(["-m", "zipfile", "-t"])
            .arg(zip)
            .output()
            .unwrap();
        assert!(
            t.status.success(),
            "zipfile -t: {}",
            String::from_utf8_lossy(&t.stderr)
        );
        let t = std::process::Command::new("unzip")
            .arg("-tq")
            .arg(zip)
            .output()
            .unwrap();
        assert!(
            t.status.success(),
            "unzip -t: {}{}",
            String::from_utf8_lossy(&t.stdout),
            String::from_utf8_lossy(&t.stderr)
        );
        let dir = self.env.path(&format!("unzipped-{db}"));
        let script = "import sys, zipfile\nassert zipfile.is_zipfile(sys.argv[1])\nz = zipfile.ZipFile(sys.argv[1])\n\
                          assert all(i.compress_type == zipfile.ZIP_STORED for i in z.infolist())\n\
                          names = z.namelist()\nassert {'./', 'postgres/', 'component/', 'postgres/toc.dat', 'postgres/restore'} <= set(names), names\n\
                          z.extractall(sys.argv[2])";
        let x = std::process::Command::new("python3")
            .args(["-c", script])
            .arg(zip)
            .arg(&dir)
            .output()
            .unwrap();
        assert!(
            x.status.success(),
            "python extract: {}",
            String::from_utf8_lossy(&x.stderr)
        );
        self.verify_unpacked(&dir, db);
    }

    /// The whole database as a plain dump, schema and data, with the table data
    /// NGW leaves out of its backups excluded (those tables must be empty in a
    /// restored copy, which the tests check separately), and without the
    /// `last_backup` setting: a backup writes it after its dump, as NGW's does
    /// (`last_backup_is_recorded_as_nextgisweb_backup_does` checks it).
    fn tables_dump(&self, db: &str) -> String {
        let excluded: Vec<String> = [
            "public.auth_oauth_atoken",
            "public.auth_oauth_ptoken",
            "public.pyramid_session",
            "public.pyramid_session_store",
            "tile_cache.*",
        ]
        .iter()
        .map(|t| format!("--exclude-table-data={t}"))
        .collect();
        self.pg
            .dump(db, &excluded)
            .lines()
            .filter(|l| !l.starts_with("core\tlast_backup\t"))
            .collect::<Vec<_>>()
            .join("\n")
    }
}

/// A database or port NGW's config.ini gets wrong: PostgreSQL's own words reach the
/// user, as pg_dump's do for --pg, in backup and in restore.
#[test]
fn ngw_database_errors_quote_the_server() {
    let Some(inst) = Instance::new() else { return };
    inst.env.backup_json(&["--ngw", &inst.config()]);
    let good = fs::read_to_string(inst.config()).unwrap();
    fs::write(
        inst.config(),
        good.replace("database.name = ngw", "database.name = nosuchdb"),
    )
    .unwrap();
    inst.env
        .snap(&["backup", "--ngw", &inst.config()])
        .assert()
        .code(1)
        .stderr(predicate::str::contains(
            r#"FATAL:  database "nosuchdb" does not exist"#,
        ));
    let target = inst.config();
    inst.env
        .snap(&["restore", "latest", "--ngw", &target])
        .assert()
        .code(1)
        .stderr(predicate::str::contains(
            r#"database "nosuchdb" does not exist"#,
        ));
    fs::write(
        inst.config(),
        good.replace("database.port = 5432", "database.port = 5499"),
    )
    .unwrap();
    inst.env
        .snap(&["backup", "--ngw", &inst.config()])
        .assert()
        .code(1)
        .stderr(
            predicate::str::contains("error connecting to server: ").and(
                predicate::str::contains(".s.PGSQL.5499")
                    .or(predicate::str::contains("No such file")),
            ),
        );
}

#[test]
fn instance_backup_is_consistent_restorable_and_incremental() {
    let Some(inst) = Instance::new() else { return };
    let first = inst.env.backup_json(&["--ngw", &inst.config()]);

    // $index exactly as NGW writes it, in (component, uuid) order.
    let index = String::from_utf8(inst.cat("ngw/component/file_storage/$index")).unwrap();
    let lines: Vec<&str> = index.lines().collect();
    assert_eq!(lines.len(), 5);
    assert_eq!(
            lines[0],
            format!("{{\"id\": 1, \"identity\": \"fileobj\", \"payload\": {{\"component\": \"feature_attachment\", \"uuid\": \"{}\"}}}}", UUIDS[1])
        );
    assert!(index.ends_with('\n'));
    let fonts = String::from_utf8(inst.cat("ngw/component/core/$index")).unwrap();
    assert_eq!(fonts, "{\"id\": 1, \"identity\": \"font\", \"payload\": {\"component\": \"core\", \"filename\": \"Custom_Font-1.ttf\"}}\n");
    assert_eq!(inst.cat("ngw/fonts/Custom_Font-1.ttf"), b"font bytes");
    let u = UUIDS[0];
    let blob = inst.cat(&format!(
        "ngw/file_storage/raster_layer/{}/{}/{u}",
        &u[..2],
        &u[2..4]
    ));
    assert!(blob == fs::read(inst.blob("raster_layer", u)).unwrap());

    // NGW's restore list: extension entries and their comments commented out.
    let restore = String::from_utf8(inst.cat("ngw/postgres/restore")).unwrap();
    assert!(
        restore
            .lines()
            .any(|l| l.starts_with(';') && l.contains("EXTENSION - pg_trgm")),
        "{restore}"
    );
    assert!(
        restore
            .lines()
            .any(|l| l.starts_with(';') && l.contains("COMMENT - EXTENSION pg_trgm")),
        "{restore}"
    );
    assert!(restore
        .lines()
        .any(|l| !l.starts_with(';') && l.contains("TABLE DATA vector_layer layer_roads")));

    // The dump restores with NGW's pg_restore command; excluded data stays out.
    inst.pg_restore_into("copy1");
    assert_eq!(inst.tables_dump("copy1"), inst.tables_dump("ngw"));
    assert_eq!(
        inst.pg
            .sql("copy1", "SELECT count(*) FROM pyramid_session")
            .trim(),
        "0"
    );
    assert_eq!(
        inst.pg
            .sql("copy1", "SELECT count(*) FROM auth_oauth_atoken")
            .trim(),
        "0"
    );
    assert_eq!(
        inst.pg
            .sql("copy1", "SELECT count(*) FROM tile_cache.tiles")
            .trim(),
        "0"
    );

    // Day two: rows change, a layer table and a blob are added.
    inst.pg.sql(
            "ngw",
            "UPDATE vector_layer.layer_roads SET name = name || ' (renamed)' WHERE id % 1000 = 0;
             CREATE TABLE vector_layer.layer_rivers (id serial PRIMARY KEY, name text);
             INSERT INTO vector_layer.layer_rivers (name) SELECT 'river ' || i FROM generate_series(1, 100) i;",
        );
    inst.add_blob("raster_layer", "5f60718293a4b5c6d7e8f90a1b2c3d4e");
    let second = inst.env.backup_json(&["--ngw", &inst.config()]);
    let s = &second["summary"];
    assert_eq!(second["parent"], first["id"]);
    let unread = s["files"].as_u64().unwrap() - s["files_read"].as_u64().unwrap();
    assert_eq!(unread, 6, "the 5 old blobs and the font are not read again");
    let added = s["bytes_added"].as_u64().unwrap();
    let first_added = first["summary"]["bytes_added"].as_u64().unwrap();
    assert!(
        added < (1 << 20) + first_added / 10,
        "day two added {added} bytes (day one {first_added})"
    );
    inst.pg_restore_into("copy2");
    assert_eq!(inst.tables_dump("copy2"), inst.tables_dump("ngw"));
}

/// A second, empty instance on the same cluster: database `db` (with the extension
/// NGW needs only when `extension`), its own sdir and file storage; returns its
/// config.ini.
fn instance_b(inst: &Instance, db: &str, extension: bool) -> String {
    inst.pg.createdb(db);
    if extension {
        inst.pg.sql(db, "CREATE EXTENSION pg_trgm");
    }
    let cfg = inst.env.path(&format!("{db}.ini"));
    fs::write(
            &cfg,
            format!(
                "[core]\ndatabase.host = {}\ndatabase.name = {db}\ndatabase.user = postgres\nsdir = {}\n\n[file_storage]\npath = {}\n",
                inst.pg.sock(),
                inst.env.path(&format!("{db}-sdir")).display(),
                inst.env.path(&format!("{db}-fs")).display()
            ),
        )
        .unwrap();
    cfg.display().to_string()
}

/// Regular files below `root`: relative path -> (mode, mtime, content).
fn files_below(root: &Path) -> std::collections::BTreeMap<String, (u32, i64, Vec<u8>)> {
    let mut out = std::collections::BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            let md = fs::symlink_metadata(&p).unwrap();
            if md.is_dir() {
                stack.push(p);
            } else {
                let rel = p.strip_prefix(root).unwrap().display().to_string();
                out.insert(rel, (md.mode(), md.mtime(), fs::read(&p).unwrap()));
            }
        }
    }
    out
}

/// The repository's data (config, packs, snapshot records) with contents.
fn repo_data(repo: &Path) -> std::collections::BTreeMap<String, (u32, i64, Vec<u8>)> {
    files_below(repo)
        .into_iter()
        .filter(|(p, _)| p == "config" || p.starts_with("packs/") || p.starts_with("snapshots/"))
        .collect()
}

fn restore_ngw(inst: &Instance, cfg: &str, extra: &[&str]) -> std::process::Output {
    let mut args = vec!["restore", "latest", "--ngw", cfg, "--json"];
    args.extend_from_slice(extra);
    inst.env.snap(&args).output().unwrap()
}

#[test]
fn restore_into_an_instance_reproduces_its_database_and_file_storage() {
    let Some(inst) = Instance::new() else { return };
    inst.env.backup_json(&["--ngw", &inst.config()]);
    let repo_before = repo_data(&inst.env.repo());
    let count = |db: &str| {
        inst.pg
                .sql(db, "SELECT count(*) FROM pg_tables WHERE schemaname NOT IN ('pg_catalog', 'information_schema')")
                .trim()
                .to_string()
    };

    // The database lacks the extension the dump needs: refused, nothing changed.
    let cfg_b = instance_b(&inst, "ngw_b", false);
    let out = restore_ngw(&inst, &cfg_b, &[]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("lacks the extension(s) pg_trgm") && err.contains("nothing was changed"),
        "{err}"
    );
    assert_eq!(count("ngw_b"), "0");
    assert!(!inst.env.path("ngw_b-fs").exists());

    // Into the empty instance: its database and file storage become A's.
    inst.pg.sql("ngw_b", "CREATE EXTENSION pg_trgm");
    let out = restore_ngw(&inst, &cfg_b, &[]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["files_written"], 6, "5 blobs and a font: {v}");
    assert_eq!(v["tables_dropped"], 0);
    assert!(
        v["next"]
            .as_str()
            .unwrap()
            .contains("nextgisweb migration upgrade"),
        "{v}"
    );
    assert_eq!(inst.tables_dump("ngw_b"), inst.tables_dump("ngw"));
    let fs_a = files_below(&inst.env.path("fs"));
    assert_eq!(fs_a.len(), 5);
    assert!(files_below(&inst.env.path("ngw_b-fs")) == fs_a);
    let font = inst
        .env
        .path("ngw_b-sdir/core/fontconfig/Custom_Font-1.ttf");
    assert_eq!(fs::read(&font).unwrap(), b"font bytes");

    // Now B holds NGW tables: refused without --yes, naming them.
    let out = restore_ngw(&inst, &cfg_b, &[]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("already holds")
            && err.contains("public.core_migration")
            && err.contains("--yes"),
        "{err}"
    );

    // B moves on: a newer NGW migration, a table and a font of its own, a damaged
    // blob. Restoring with --yes puts A back and says the dump is older.
    inst.pg.sql(
        "ngw_b",
        "INSERT INTO core_migration VALUES ('core', '2026-06-01');
             CREATE TABLE vector_layer.layer_new (id int); CREATE TABLE b_only (id int);",
    );
    fs::write(
        inst.env.path("ngw_b-sdir/core/fontconfig/Stray.ttf"),
        b"stray",
    )
    .unwrap();
    let u = UUIDS[2];
    let damaged = inst.env.path(&format!(
        "ngw_b-fs/raster_layer/{}/{}/{u}",
        &u[..2],
        &u[2..4]
    ));
    let mut bytes = fs::read(&damaged).unwrap();
    bytes[1000] ^= 1;
    fs::write(&damaged, &bytes).unwrap();
    let out = restore_ngw(&inst, &cfg_b, &["--yes"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        (
            &v["files_written"],
            &v["files_unchanged"],
            &v["fonts_removed"]
        ),
        (&1.into(), &5.into(), &1.into()),
        "{v}"
    );
    assert_eq!(v["tables_dropped"], 9, "{v}");
    assert!(
        v["next"].as_str().unwrap().contains("older NextGIS Web"),
        "{v}"
    );
    assert_eq!(inst.tables_dump("ngw_b"), inst.tables_dump("ngw"));
    assert!(files_below(&inst.env.path("ngw_b-fs")) == fs_a);
    assert!(!inst
        .env
        .path("ngw_b-sdir/core/fontconfig/Stray.ttf")
        .exists());

    // pg_restore failing half-way: its error, a non-zero exit.
    let cfg_c = instance_b(&inst, "ngw_c", true);
    inst.pg.sql("ngw_c", "CREATE VIEW setting AS SELECT 1 AS x");
    let out = restore_ngw(&inst, &cfg_c, &[]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("pg_restore into database ngw_c") && err.contains("setting"),
        "{err}"
    );

    // The repository was only read.
    assert!(repo_data(&inst.env.repo()) == repo_before);

    // A dump pg_restore cannot read (here a TOC of a version it does not know, as a
    // newer pg_dump writes) is refused before B's tables go.
    let good = inst.env.path("good.ngwbackup");
    let newer = inst.env.path("newer.ngwbackup");
    inst.env
        .snap(&["export", "latest", good.to_str().unwrap()])
        .assert()
        .success();
    let script = "import sys, zipfile\n\
                  src, dst = zipfile.ZipFile(sys.argv[1]), zipfile.ZipFile(sys.argv[2], 'w')\n\
                  for i in src.infolist():\n\
                  \x20   b = src.read(i)\n\
                  \x20   if i.filename == 'postgres/toc.dat': b = b[:6] + bytes([99]) + b[7:]\n\
                  \x20   dst.writestr(i, b)\n\
                  dst.close()\n";
    let py = std::process::Command::new("python3")
        .args([
            "-c",
            script,
            good.to_str().unwrap(),
            newer.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert!(py.status.success(), "{py:?}");
    inst.env
        .snap(&["import", newer.to_str().unwrap()])
        .assert()
        .success();
    let before = inst.tables_dump("ngw_b");
    let out = restore_ngw(&inst, &cfg_b, &["--yes"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("cannot be restored")
            && err.contains("unsupported version")
            && err.contains("nothing was changed"),
        "{err}"
    );
    assert_eq!(
        inst.tables_dump("ngw_b"),
        before,
        "B's tables are still there"
    );
}

#[test]
fn export_is_an_ngwbackup_that_nextgisweb_restore_accepts() {
    let Some(inst) = Instance::new() else { return };
    inst.env.backup_json(&["--ngw", &inst.config()]);

    let file = inst.env.path("x.ngwbackup");
    inst.env
        .snap(&["export", "latest", file.to_str().unwrap()])
        .assert()
        .success();
    inst.verify_zip(&file, "fromfile");
    // A new file's mode (not the temporary file's 0600), so NGW's web process, if it
    // serves backups from the directory, can read it.
    let umask = fs::read_to_string("/proc/self/status")
        .unwrap()
        .lines()
        .find_map(|l| {
            l.strip_prefix("Umask:")
                .map(|v| u32::from_str_radix(v.trim(), 8).unwrap())
        })
        .unwrap();
    assert_eq!(fs::metadata(&file).unwrap().mode() & 0o777, 0o666 & !umask);
    inst.env
        .snap(&["export", "latest", file.to_str().unwrap()])
        .assert()
        .code(1)
        .stderr(predicate::str::contains("never overwrites"));

    let out = inst.env.snap(&["export", "latest", "-"]).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let piped = inst.env.path("piped.ngwbackup");
    fs::write(&piped, &out.stdout).unwrap();
    inst.verify_zip(&piped, "frompipe");
    // As nextgisweb writes them: into a file, each local header holds its member's
    // CRC and sizes (no data descriptors, which streaming readers refuse for stored
    // members); only on a pipe do they follow the data.
    let headers = "import sys, zipfile, struct\n\
                   p = sys.argv[1]\n\
                   z = zipfile.ZipFile(p)\n\
                   f = open(p, 'rb')\n\
                   for i in z.infolist():\n\
                   \x20   f.seek(i.header_offset)\n\
                   \x20   h = struct.unpack('<IHHHHHIIIHH', f.read(30))\n\
                   \x20   described = h[2] & 8 != 0\n\
                   \x20   whole = h[6] == i.CRC and h[8] in (i.file_size, 0xFFFFFFFF)\n\
                   \x20   print(i.filename, described, whole)\n";
    for (zip, descriptors) in [(&file, false), (&piped, true)] {
        let out = std::process::Command::new("python3")
            .args(["-c", headers])
            .arg(zip)
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success() && text.lines().count() > 3, "{out:?}");
        for line in text.lines() {
            // A directory has nothing to describe.
            let described = descriptors && !line.split(' ').next().unwrap().ends_with('/');
            let want = if described {
                " True False"
            } else {
                " False True"
            };
            assert!(line.ends_with(want), "{}: {line}", zip.display());
        }
    }

    let dir = inst.env.path("unpacked");
    inst.env
        .snap(&["export", "latest", dir.to_str().unwrap(), "--no-zip"])
        .assert()
        .success();
    inst.verify_unpacked(&dir, "fromdir");

    // Default destination: backup.path and backup.filename from config.ini, UTC.
    let backups = inst.set_backup_path();
    let out = inst
        .env
        .snap(&["export", "latest", "--quiet"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let written = std::path::PathBuf::from(String::from_utf8(out.stdout).unwrap().trim());
    assert_eq!(written.parent().unwrap(), backups);
    let name = written.file_name().unwrap().to_str().unwrap();
    assert!(
        name.starts_with("nextgisweb-20")
            && name.ends_with(".ngwbackup")
            && name.len() == "nextgisweb-20261121-020000.ngwbackup".len(),
        "{name}"
    );
    assert_eq!(
        fs::read_dir(&backups).unwrap().count(),
        1,
        "no temporary file left behind"
    );
    inst.verify_zip(&written, "fromdefault");
}

/// More than 65,535 members: the ZIP needs ZIP64 end records, as NGW's large file
/// storages do.
#[test]
fn export_with_more_than_65535_members_is_zip64() {
    const N: u32 = 65_600;
    let Some(inst) = Instance::new() else { return };
    let dir = inst.env.path("fs/attachment/00/00");
    fs::create_dir_all(&dir).unwrap();
    for i in 1..=N {
        let uuid = format!("{i:032x}");
        fs::write(dir.join(&uuid), uuid.as_bytes()).unwrap();
    }
    inst.pg.sql(
            "ngw",
            &format!("INSERT INTO fileobj (component, uuid) SELECT 'attachment', lpad(to_hex(i), 32, '0') FROM generate_series(1, {N}) i"),
        );
    inst.env.backup_json(&["--ngw", &inst.config()]);
    let out = inst.env.snap(&["export", "latest", "-"]).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let zip = inst.env.path("big.ngwbackup");
    fs::write(&zip, &out.stdout).unwrap();
    let script =
        "import sys, zipfile\nz = zipfile.ZipFile(sys.argv[1])\nassert z.testzip() is None\n\
                      names = z.namelist()\nassert len(names) > 65535, len(names)\n\
                      i = names.index('component/file_storage/00065600')\n\
                      print(z.read(names[i]).decode())";
    let x = std::process::Command::new("python3")
        .args(["-c", script])
        .arg(&zip)
        .output()
        .unwrap();
    assert!(
        x.status.success(),
        "python: {}",
        String::from_utf8_lossy(&x.stderr)
    );
    // Lines of $index are in (component, uuid) order: attachment blobs come first.
    assert_eq!(
        String::from_utf8_lossy(&x.stdout).trim(),
        format!("{:032x}", 65_600)
    );
    let t = std::process::Command::new("unzip")
        .arg("-tq")
        .arg(&zip)
        .output()
        .unwrap();
    assert!(
        t.status.success(),
        "unzip -t: {}",
        String::from_utf8_lossy(&t.stdout)
    );
}

/// Members of two ZIPs, compared by Python: same names (ignoring a `./` entry's
/// presence) and byte-identical payloads.
fn assert_same_members(a: &Path, b: &Path) {
    let script = "import sys, zipfile\n\
                      za, zb = zipfile.ZipFile(sys.argv[1]), zipfile.ZipFile(sys.argv[2])\n\
                      na = sorted(n for n in za.namelist() if not n.endswith('/'))\n\
                      nb = sorted(n for n in zb.namelist() if not n.endswith('/'))\n\
                      assert na == nb, (na, nb)\n\
                      for n in na:\n    assert za.read(n) == zb.read(n), n\n\
                      print(len(na))";
    let x = std::process::Command::new("python3")
        .args(["-c", script])
        .arg(a)
        .arg(b)
        .output()
        .unwrap();
    assert!(
        x.status.success(),
        "members differ: {}",
        String::from_utf8_lossy(&x.stderr)
    );
}

#[test]
fn import_dedups_archives_and_exports_them_back_byte_identical() {
    let Some(inst) = Instance::new() else { return };
    inst.env.backup_json(&["--ngw", &inst.config()]);
    let day1 = inst.env.path("nextgisweb-20261101-020000.ngwbackup");
    inst.env
        .snap(&["export", "latest", day1.to_str().unwrap()])
        .assert()
        .success();
    inst.pg.sql(
        "ngw",
        "UPDATE vector_layer.layer_roads SET name = 'x' WHERE id = 7",
    );
    inst.add_blob("raster_layer", "6f60718293a4b5c6d7e8f90a1b2c3d4e");
    inst.env.backup_json(&["--ngw", &inst.config()]);
    let day2 = inst.env.path("nextgisweb-20261102-020000.ngwbackup");
    inst.env
        .snap(&["export", "latest", day2.to_str().unwrap()])
        .assert()
        .success();

    // A fresh repository imports both, oldest first whatever the argument order.
    let other = Env::new();
    other.init();
    other
        .snap(&["import", day2.to_str().unwrap(), day1.to_str().unwrap()])
        .assert()
        .success();
    let snaps = other.snapshots();
    assert_eq!(snaps.len(), 2);
    assert_eq!(snaps[0]["time"], "2026-11-01T02:00:00Z");
    assert_eq!(snaps[0]["tags"][0], "nextgisweb-20261101-020000.ngwbackup");
    let first = snaps[0]["summary"]["bytes_added"].as_u64().unwrap();
    let second = snaps[1]["summary"]["bytes_added"].as_u64().unwrap();
    assert!(
        second < (1 << 20) + first / 5,
        "day two added {second} bytes, day one {first}"
    );

    other
        .snap(&["import", day1.to_str().unwrap()])
        .assert()
        .success()
        .stdout(predicate::str::contains("already imported"));
    assert_eq!(other.snapshots().len(), 2);

    for (snap, original) in [(&snaps[0], &day1), (&snaps[1], &day2)] {
        let again = other.path(&format!(
            "again-{}.ngwbackup",
            snap["short_id"].as_str().unwrap()
        ));
        other
            .snap(&[
                "export",
                snap["id"].as_str().unwrap(),
                again.to_str().unwrap(),
            ])
            .assert()
            .success();
        assert_same_members(original, &again);
    }
}

#[test]
fn damaged_archives_are_refused_by_name_and_the_rest_import() {
    let Some(inst) = Instance::new() else { return };
    inst.env.backup_json(&["--ngw", &inst.config()]);
    let good = inst.env.path("20261101-020000.ngwbackup");
    inst.env
        .snap(&["export", "latest", good.to_str().unwrap()])
        .assert()
        .success();
    let dir = inst.env.path("bad");
    fs::create_dir_all(&dir).unwrap();
    let script = r#"
import sys, zipfile, os
d = sys.argv[1]
def z(name, members, method=zipfile.ZIP_STORED):
    with zipfile.ZipFile(os.path.join(d, name), 'w', method) as f:
        for n, data in members:
            f.writestr(n, data)
toc = ('postgres/toc.dat', b'PGDMP')
z('escape.ngwbackup', [toc, ('../evil', b'x')])
z('legacy.ngwbackup', [('db.sqlite', b'SQLite format 3')])
z('dup.ngwbackup', [toc, ('postgres/1.dat', b'a'), ('postgres/1.dat', b'b')])
z('bomb.ngwbackup', [toc, ('postgres/2.dat', bytes(256 << 20))], zipfile.ZIP_DEFLATED)
z('crc.ngwbackup', [toc, ('postgres/3.dat', b'A' * 100000)])
b = bytearray(open(os.path.join(d, 'crc.ngwbackup'), 'rb').read())
b[len(b) // 2] ^= 1
open(os.path.join(d, 'crc.ngwbackup'), 'wb').write(b)
g = open(sys.argv[2], 'rb').read()
open(os.path.join(d, 'truncated.ngwbackup'), 'wb').write(g[: len(g) // 2])
open(os.path.join(d, 'notzip.ngwbackup'), 'wb').write(b'just text')
z('nottoc.ngwbackup', [('postgres/toc.dat', b'NOTPGDMP')])
line = lambda i: ('{"id": %d, "identity": "fileobj", "payload": {"component": "raster_layer", '
                  '"uuid": "bd19836ddb62c11c55ab251ccaca5645"}}\n' % i).encode()
idx = 'component/file_storage/$index'
z('unlisted.ngwbackup', [toc, (idx, line(1))])
z('straydir.ngwbackup', [toc, ('postgres/extra/', b'')])
os.mkdir(os.path.join(d, 'unpacked.ngwbackup'))
z('twice.ngwbackup', [toc, (idx, line(1) + line(2)),
    ('component/file_storage/00000001', b'a'), ('component/file_storage/00000002', b'b')])
"#;
    let x = std::process::Command::new("python3")
        .args(["-c", script])
        .arg(&dir)
        .arg(&good)
        .output()
        .unwrap();
    assert!(x.status.success(), "{}", String::from_utf8_lossy(&x.stderr));
    let other = Env::new();
    other.init();
    let mut args = vec!["import".to_string()];
    for f in [
        "escape",
        "legacy",
        "dup",
        "bomb",
        "crc",
        "truncated",
        "notzip",
        "nottoc",
        "unlisted",
        "twice",
        "straydir",
        "unpacked",
    ] {
        args.push(dir.join(format!("{f}.ngwbackup")).display().to_string());
    }
    args.push(good.display().to_string());
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = other.snap(&args).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    for (file, why) in [
        ("escape", "outside the backup tree"),
        ("legacy", "legacy format"),
        ("dup", "appears twice"),
        ("bomb", "ZIP bomb"),
        ("crc", "postgres/3.dat"),
        ("truncated", "not a readable ZIP"),
        ("notzip", "not a readable ZIP"),
        ("nottoc", "not a pg_dump TOC"),
        (
            "unlisted",
            "has no member \"component/file_storage/00000001\"",
        ),
        ("twice", "lists one item twice"),
        ("straydir", "unexpected member \"postgres/extra/\""),
        ("unpacked", "it is a directory"),
    ] {
        assert!(
            err.lines()
                .any(|l| l.contains(&format!("{file}.ngwbackup")) && l.contains(why)),
            "{file}: {why} not in:\n{err}"
        );
    }
    let snaps = other.snapshots();
    assert_eq!(snaps.len(), 1, "only the good archive is imported");
    assert_eq!(snaps[0]["tags"][0], "20261101-020000.ngwbackup");
}

/// Member names whose components a tree cannot hold (`postgres/.`, `a//b`) are
/// refused by name, and no unreadable snapshot is written.
#[test]
fn members_with_empty_or_dot_components_are_refused_by_name() {
    let env = Env::new();
    env.init();
    let dir = env.path("odd");
    fs::create_dir_all(&dir).unwrap();
    let script = r#"
import sys, zipfile, os
for name, member in [('dot', 'postgres/.'), ('empty', 'postgres//1.dat')]:
    with zipfile.ZipFile(os.path.join(sys.argv[1], name + '.ngwbackup'), 'w') as f:
        f.writestr('postgres/toc.dat', b'PGDMP')
        f.writestr(zipfile.ZipInfo(member), b'x')
"#;
    let x = std::process::Command::new("python3")
        .args(["-c", script])
        .arg(&dir)
        .output()
        .unwrap();
    assert!(x.status.success(), "{}", String::from_utf8_lossy(&x.stderr));
    for (file, member) in [("dot", "postgres/."), ("empty", "postgres//1.dat")] {
        let archive = dir.join(format!("{file}.ngwbackup"));
        let out = env
            .snap(&["import", archive.to_str().unwrap()])
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(1), "{file}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains(&format!("{file}.ngwbackup"))
                && err.contains(&format!("{member:?}"))
                && err.contains("path component"),
            "{file}: {err}"
        );
    }
    assert!(env.snapshots().is_empty(), "no snapshot was recorded");
    env.snap(&["check"]).assert().success();
}

#[test]
fn failures_record_no_snapshot() {
    let Some(inst) = Instance::new() else { return };
    let u = UUIDS[3];
    fs::remove_file(inst.blob("feature_attachment", u)).unwrap();
    inst.env
        .snap(&["backup", "--ngw", &inst.config()])
        .assert()
        .code(1)
        .stderr(predicate::str::contains(u).and(predicate::str::contains("no snapshot recorded")));
    fs::write(inst.blob("feature_attachment", u), b"restored").unwrap();
    // pg_dump killed half-way (as by the OOM killer): the run fails, quoting it.
    let bin = inst.env.path("failing-bin");
    fs::create_dir_all(&bin).unwrap();
    let fake = bin.join("pg_dump");
    fs::write(
        &fake,
        "#!/bin/sh\necho 'pg_dump: dumping contents of table x' >&2\nkill -9 $$\n",
    )
    .unwrap();
    fs::set_permissions(&fake, fs::Permissions::from_mode(0o755)).unwrap();
    let path = format!("{}:{}", bin.display(), std::env::var("PATH").unwrap());
    inst.env
        .snap(&["backup", "--ngw", &inst.config()])
        .env("PATH", path)
        .assert()
        .code(1)
        .stderr(
            predicate::str::contains("pg_dump").and(predicate::str::contains("killed by signal 9")),
        );
    let bad = inst.env.path("bad.ini");
    fs::write(
        &bad,
        fs::read_to_string(inst.config())
            .unwrap()
            .replace("database.name = ngw", "database.name = nosuchdb"),
    )
    .unwrap();
    inst.env
        .snap(&["backup", "--ngw", bad.to_str().unwrap()])
        .assert()
        .code(1)
        .stderr(predicate::str::contains("nosuchdb"));
    let incomplete = inst.env.path("incomplete.ini");
    fs::write(&incomplete, "[core]\ndatabase.user = x\nsdir = /tmp\n").unwrap();
    inst.env
        .snap(&["backup", "--ngw", incomplete.to_str().unwrap()])
        .assert()
        .code(1)
        .stderr(predicate::str::contains("database.name is missing"));
    assert!(inst.env.snapshots().is_empty());
}

mod v5;
