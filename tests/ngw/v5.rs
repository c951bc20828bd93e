//! What NextGIS Web 5.x does around its backups: the `last_backup` setting its
//! healthcheck reads, rasters kept in external S3 storages (5.4+), and the folder of
//! exports its backups page lists.

use super::*;
use crate::util::garage::Garage;
use crate::util::servers::free_port;

/// `core.last_backup` as NGW reads it (`settings_get`: the JSON string's text), and
/// whether the value is a JSON string at all.
fn last_backup(inst: &Instance) -> Option<String> {
    let out = inst.pg.sql(
        "ngw",
        "SELECT jsonb_typeof(value) || ' ' || (value #>> '{}') FROM setting WHERE component = 'core' AND name = 'last_backup'",
    );
    let out = out.trim();
    if out.is_empty() {
        return None;
    }
    let (kind, value) = out.split_once(' ').unwrap();
    assert_eq!(kind, "string", "NGW stores last_backup as a JSON string");
    Some(value.to_string())
}

/// NGW's healthcheck condition on the backup (`nextgisweb/core/component.py`):
/// `utcnow_naive() - datetime.fromisoformat(last) > backup.interval` fails it.
fn healthcheck_passes(last: &str, interval_seconds: u64) -> bool {
    let script = "import sys, datetime\n\
                  last = sys.argv[1]\n\
                  delta = datetime.timedelta(seconds=int(sys.argv[2]))\n\
                  now = datetime.datetime.now(datetime.timezone.utc).replace(tzinfo=None)\n\
                  print('fail' if now - datetime.datetime.fromisoformat(last) > delta else 'ok')";
    let out = std::process::Command::new("python3")
        .args(["-c", script, last, &interval_seconds.to_string()])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    match String::from_utf8_lossy(&out.stdout).trim() {
        "ok" => true,
        "fail" => false,
        other => panic!("healthcheck printed {other:?}"),
    }
}

/// Python's `isoformat()` of a snapshot's time as naive UTC.
fn isoformat(rfc3339: &str) -> String {
    let t: chrono::DateTime<chrono::Utc> = rfc3339.parse().unwrap();
    let micros = t.timestamp_subsec_micros();
    let base = t.naive_utc().format("%Y-%m-%dT%H:%M:%S").to_string();
    if micros == 0 {
        base
    } else {
        format!("{base}.{micros:06}")
    }
}

#[test]
fn last_backup_is_recorded_as_nextgisweb_backup_does() {
    let Some(inst) = Instance::new() else { return };
    let day = 24 * 3600;
    inst.pg.sql(
        "ngw",
        "INSERT INTO setting VALUES ('core', 'last_backup', to_jsonb('2026-01-01T02:00:00'::text))",
    );
    let stale = last_backup(&inst).unwrap();
    assert!(
        !healthcheck_passes(&stale, day),
        "a stale backup fails NGW's healthcheck"
    );

    // A dry run and a --one-shot backup leave it alone.
    inst.env
        .snap(&["backup", "--dry-run", "--ngw", &inst.config()])
        .assert()
        .success();
    inst.env
        .backup_json(&["--ngw", &inst.config(), "--one-shot"]);
    assert_eq!(last_backup(&inst).as_deref(), Some(stale.as_str()));

    // A saved snapshot records its start time, in NGW's format.
    let done = inst.env.backup_json(&["--ngw", &inst.config()]);
    let recorded = last_backup(&inst).unwrap();
    assert_eq!(recorded, isoformat(done["time"].as_str().unwrap()));
    assert!(healthcheck_passes(&recorded, day));

    // A failed backup (a blob gone) records nothing.
    fs::remove_file(inst.blob("raster_layer", UUIDS[0])).unwrap();
    inst.env
        .snap(&["backup", "--ngw", &inst.config()])
        .assert()
        .code(1);
    assert_eq!(last_backup(&inst), Some(recorded));
}

/// NGW 5.4's tables of external raster storages, with storage 1 at `endpoint`,
/// `bucket` and `prefix` and its keys (none: a public bucket), and layers from 10 on
/// pointing at `files`.
fn add_raster_storage(
    inst: &Instance,
    endpoint: &str,
    bucket: &str,
    prefix: &str,
    keys: Option<(&str, &str)>,
    files: &[&str],
) {
    let keys = keys.map_or("NULL, NULL".to_string(), |(id, secret)| {
        format!("'{id}', '{secret}'")
    });
    inst.pg.sql(
        "ngw",
        &format!(
            "CREATE TABLE resource (id integer PRIMARY KEY, cls varchar NOT NULL, display_name varchar NOT NULL);
             CREATE TABLE raster_layer_storage (
                 id integer PRIMARY KEY REFERENCES resource (id), endpoint varchar NOT NULL,
                 bucket varchar NOT NULL, access_key varchar, secret_key varchar, prefix varchar NOT NULL);
             CREATE TABLE raster_layer (
                 id integer PRIMARY KEY REFERENCES resource (id), fileobj_id integer,
                 storage_id integer REFERENCES raster_layer_storage (id), storage_filename varchar);
             INSERT INTO resource VALUES (1, 'raster_layer_storage', 'Orthophoto bucket');
             INSERT INTO raster_layer_storage VALUES (1, '{endpoint}', '{bucket}', {keys}, '{prefix}');"
        ),
    );
    for (i, f) in files.iter().enumerate() {
        let id = 10 + i;
        inst.pg.sql(
            "ngw",
            &format!(
                "INSERT INTO resource VALUES ({id}, 'raster_layer', 'Layer {id}');
                 INSERT INTO raster_layer VALUES ({id}, NULL, 1, '{f}');"
            ),
        );
    }
}

/// Runs snap with `args`, which must succeed without `secret` in its log, and parses
/// its JSON output.
fn json_keeping(env: &Env, args: &[&str], secret: &str) -> serde_json::Value {
    let out = env.snap(args).output().unwrap();
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(out.status.success(), "{stderr}");
    for key in [secret, Garage::keys().0] {
        assert!(
            !stderr.contains(key) && !stdout.contains(key),
            "a key reached the output"
        );
    }
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn rasters_in_external_storage_are_backed_up_put_back_and_never_leak_keys() {
    let Some(inst) = Instance::new() else { return };
    let Some(g) = Garage::single() else { return };
    g.create_bucket("rasters");
    // a.tif is above the 8 MiB part size: snap puts it back in parts, under another
    // ETag than its first upload's, so finding it in place takes a comparison of bytes.
    let (a, b) = (
        random_bytes(9 << 20, "a.tif"),
        random_bytes(1 << 20, "b.tif"),
    );
    g.put("rasters", "ngw/a.tif", &a);
    g.put("rasters", "ngw/b.tif", &b);
    // Three layers share a.tif, one naming it with a leading slash (as NGW allows, and
    // as b.tif is named): it is one object, stored once.
    add_raster_storage(
        &inst,
        &g.endpoint_of(0),
        "rasters",
        "ngw/",
        Some(Garage::keys()),
        &["a.tif", "/b.tif", "a.tif", "/a.tif"],
    );
    let secret = Garage::keys().1;
    let backup = |extra: &[&str]| {
        let args = [
            "-v",
            "backup",
            "--json",
            "--ngw-s3-region",
            "garage",
            "--ngw",
        ];
        json_keeping(
            &inst.env,
            &[&args[..], &[&inst.config()], extra].concat(),
            secret,
        )
    };
    backup(&[]);
    assert!(inst.cat("ngw/raster_layer_storage/1/ngw/a.tif") == a);
    assert!(inst.cat("ngw/raster_layer_storage/1/ngw/b.tif") == b);
    let index = String::from_utf8(inst.cat("ngw/raster_layer_storage/$index")).unwrap();
    assert_eq!(index.lines().count(), 2, "{index}");
    assert!(index.contains("\"bucket\":\"rasters\"") && !index.contains(secret));
    for f in crate::util::walk(&inst.env.repo().join("snapshots")) {
        let text = fs::read(&f).unwrap();
        assert!(!String::from_utf8_lossy(&text).contains(secret));
    }

    // Unchanged objects are not downloaded again; a changed one is, alone.
    let gets = || g.requests(0, "GetObject");
    let before = gets();
    let second = backup(&[]);
    assert_eq!(gets(), before, "unchanged objects were downloaded again");
    assert!(second["parent"].as_str().is_some());
    assert!(inst.cat("ngw/raster_layer_storage/1/ngw/a.tif") == a);
    let b2 = random_bytes(1 << 20, "b.tif, version 2");
    g.put("rasters", "ngw/b.tif", &b2);
    let before = gets();
    backup(&[]);
    assert_eq!(gets(), before + 1, "only the changed object is downloaded");
    assert!(inst.cat("ngw/raster_layer_storage/1/ngw/b.tif") == b2);

    // `restore --target` writes them under a path that says what they are.
    let dir = inst.env.path("files-out");
    inst.restore_part("ngw/raster_layer_storage", &dir);
    assert!(fs::read(dir.join("ngw/raster_layer_storage/1/ngw/a.tif")).unwrap() == a);

    // Into another instance, moving the storage to another bucket and prefix: the
    // objects go there and the restored row points there.
    g.create_bucket("moved");
    let cfg_b = instance_b(&inst, "ngw_b", true);
    let restore = |extra: &[&str]| {
        let args = [
            "restore",
            "latest",
            "--json",
            "--ngw-s3-region",
            "garage",
            "--ngw",
        ];
        json_keeping(&inst.env, &[&args[..], &[&cfg_b], extra].concat(), secret)
    };
    // A storage the snapshot has no object of: refused before anything changes.
    inst.env
        .snap(&[
            "restore",
            "latest",
            "--ngw",
            &cfg_b,
            "--ngw-storage",
            "9=http://127.0.0.1:1/x",
        ])
        .assert()
        .code(1)
        .stderr(
            predicate::str::contains("--ngw-storage 9")
                .and(predicate::str::contains("nothing was changed")),
        );
    assert_eq!(
        inst.pg
            .sql(
                "ngw_b",
                "SELECT count(*) FROM pg_tables WHERE schemaname = 'public'"
            )
            .trim(),
        "0"
    );
    let to = format!("1={}/moved/copy/", g.endpoint_of(0));
    let out = restore(&["--ngw-storage", &to]);
    assert_eq!(
        (
            out["objects_written"].as_u64(),
            out["objects_unchanged"].as_u64()
        ),
        (Some(2), Some(0))
    );
    assert!(g.get("moved", "copy/a.tif").unwrap() == a);
    assert!(g.get("moved", "copy/b.tif").unwrap() == b2);
    assert_eq!(
        inst.pg
            .sql(
                "ngw_b",
                "SELECT endpoint || ' ' || bucket || ' ' || prefix FROM raster_layer_storage"
            )
            .trim(),
        format!("{} moved copy", g.endpoint_of(0))
    );
    // Again: everything is already there (uploaded by snap, so another ETag: compared
    // by content).
    let out = restore(&["--yes", "--ngw-storage", &to]);
    assert_eq!(
        (
            out["objects_written"].as_u64(),
            out["objects_unchanged"].as_u64()
        ),
        (Some(0), Some(2))
    );

    // Into its own buckets after one object was lost there: only that one is uploaded.
    g.delete("rasters", "ngw/a.tif");
    let out = restore(&["--yes"]);
    assert_eq!(
        (
            out["objects_written"].as_u64(),
            out["objects_unchanged"].as_u64()
        ),
        (Some(1), Some(1))
    );
    assert!(g.get("rasters", "ngw/a.tif").unwrap() == a);
    // --ngw-skip-external leaves the buckets alone.
    g.delete("rasters", "ngw/a.tif");
    let out = restore(&["--yes", "--ngw-skip-external"]);
    assert_eq!(out["objects_written"].as_u64(), Some(0));
    assert!(g.get("rasters", "ngw/a.tif").is_none());

    // An .ngwbackup cannot carry them: export says so and where they are.
    let file = inst.env.path("x.ngwbackup");
    inst.env
        .snap(&["export", "latest", file.to_str().unwrap()])
        .assert()
        .code(3)
        .stderr(
            predicate::str::contains("does not carry the 2 raster object(s)")
                .and(predicate::str::contains("bucket rasters"))
                .and(predicate::str::contains("ngw/raster_layer_storage/")),
        );
    inst.verify_zip(&file, "exported");
}

/// A public storage (a row without keys, as NGW allows for reading) is read without
/// signing: moto, unlike Garage, serves anonymous requests.
#[test]
fn a_public_storage_is_read_without_keys() {
    let Some(inst) = Instance::new() else { return };
    let Some(m) = crate::util::servers::Moto::start() else {
        return;
    };
    let body = random_bytes(200_000, "public raster");
    m.put_public("open/p.tif", &body);
    add_raster_storage(&inst, &m.endpoint, &m.bucket, "open", None, &["p.tif"]);
    inst.env.backup_json(&["--ngw", &inst.config()]);
    assert!(inst.cat("ngw/raster_layer_storage/1/open/p.tif") == body);
}

#[test]
fn an_unreachable_storage_fails_the_backup_unless_skipped_and_then_says_so() {
    let Some(inst) = Instance::new() else { return };
    let endpoint = format!("http://127.0.0.1:{}", free_port());
    add_raster_storage(
        &inst,
        &endpoint,
        "rasters",
        "",
        Some(("GKid", "supersecret")),
        &["a.tif"],
    );
    let out = inst
        .env
        .snap(&["backup", "--ngw", &inst.config()])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("Orthophoto bucket")
            && stderr.contains(&endpoint)
            && stderr.contains("no snapshot recorded")
            && stderr.contains("--ngw-skip-external"),
        "{stderr}"
    );
    assert!(!stderr.contains("supersecret"));
    assert!(inst.env.snapshots().is_empty());
    assert_eq!(last_backup(&inst), None);

    let out = inst
        .env
        .snap(&["backup", "--ngw", &inst.config(), "--ngw-skip-external"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{stderr}");
    assert!(
        stderr.contains("Orthophoto bucket") && stderr.contains("left out"),
        "{stderr}"
    );
    let snaps = inst.env.snapshots();
    assert_eq!(snaps.len(), 1);
    let skipped = &snaps[0]["sources"][0]["skipped_external"];
    assert!(
        skipped[0].as_str().unwrap().contains("Orthophoto bucket"),
        "{skipped}"
    );
    inst.env
        .snap(&["list"])
        .assert()
        .success()
        .stdout(predicate::str::contains(
            "INCOMPLETE: rasters of raster layer storage \"Orthophoto bucket\"",
        ));
    // The database and file storage are complete: the instance records the backup.
    assert!(last_backup(&inst).is_some());
    // Restoring it says what it lacks.
    let cfg_b = instance_b(&inst, "ngw_b", true);
    inst.env
        .snap(&["restore", "latest", "--ngw", &cfg_b])
        .assert()
        .success()
        .stderr(predicate::str::contains(
            "was made without the rasters of raster layer storage \"Orthophoto bucket\"",
        ));
}

#[test]
fn export_keep_leaves_the_n_newest_exports_and_nothing_else_is_touched() {
    let Some(inst) = Instance::new() else { return };
    inst.env.backup_json(&["--ngw", &inst.config()]);
    let backups = inst.set_backup_path();
    for n in [
        "nextgisweb-20250101-020000.ngwbackup",
        "nextgisweb-20250102-020000.ngwbackup",
        "nextgisweb-20250103-020000.ngwbackup",
        "notes.txt",
        "manual-copy.ngwbackup",
    ] {
        fs::write(backups.join(n), n).unwrap();
    }
    let out = inst
        .env
        .snap(&["export", "latest", "--keep", "2", "--quiet"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let written = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .next()
        .unwrap()
        .to_string();
    let mut left: Vec<String> = fs::read_dir(&backups)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    left.sort();
    let written_name = Path::new(&written)
        .file_name()
        .unwrap()
        .to_str()
        .unwrap()
        .to_string();
    let mut want = vec![
        "manual-copy.ngwbackup".to_string(),
        "nextgisweb-20250103-020000.ngwbackup".to_string(),
        "notes.txt".to_string(),
        written_name,
    ];
    want.sort();
    assert_eq!(left, want);
    inst.verify_zip(Path::new(&written), "kept");
    // A bare file name as destination: the file written is kept all the same.
    inst.env
        .snap(&[
            "export",
            "latest",
            "nextgisweb-20990101-000000.ngwbackup",
            "--keep",
            "1",
        ])
        .current_dir(&backups)
        .assert()
        .success();
    let names: Vec<String> = fs::read_dir(&backups)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.starts_with("nextgisweb-"))
        .collect();
    assert_eq!(names, ["nextgisweb-20990101-000000.ngwbackup"]);
    inst.env
        .snap(&["export", "latest", "-", "--keep", "1"])
        .assert()
        .code(1)
        .stderr(predicate::str::contains("--keep"));
}
