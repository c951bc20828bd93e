//! End-to-end tests through the real `snap` binary, by feature.

mod backup_select;
mod concurrency;
mod config_cli;
mod diff_progress;
mod drill;
mod dump;
mod encryption;
mod golden;
mod interrupt;
mod maintenance;
mod monitoring;
mod mount;
mod ngw;
mod object_store;
mod offsite;
mod output;
mod pitr;
mod restore_modes;
mod util;

use std::ffi::OsStr;
use std::fs;
use std::io::{Seek, SeekFrom, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{symlink, MetadataExt, PermissionsExt};
use std::path::Path;
use std::time::Duration;

use predicates::prelude::*;
use serde_json::json;
use util::{assert_same_tree, largest_pack, random_bytes, restored, Env};

fn set_mtime(p: &Path, sec: i64, nsec: u32) {
    let t = std::time::UNIX_EPOCH + Duration::new(sec as u64, nsec);
    fs::File::options()
        .write(true)
        .open(p)
        .unwrap()
        .set_modified(t)
        .unwrap();
}

/// A tree with every kind of entry the engine must carry.
fn make_tree(root: &Path) {
    fs::create_dir_all(root.join("a/b/c")).unwrap();
    fs::write(root.join("a/empty"), b"").unwrap();
    fs::write(root.join("a/small.txt"), b"hello snap\n").unwrap();
    fs::write(root.join("a/b/c/deep.txt"), b"deep").unwrap();
    fs::write(root.join("big.bin"), random_bytes(101 << 20, "big")).unwrap();
    symlink("small.txt", root.join("a/rel-link")).unwrap();
    symlink("/nonexistent/target", root.join("a/dangling")).unwrap();
    fs::hard_link(root.join("a/small.txt"), root.join("a/b/hard")).unwrap();
    let weird = root.join(OsStr::from_bytes(b"latin1-\xe9t\xe9"));
    fs::write(&weird, b"non-utf8 name").unwrap();
    let script = root.join("a/run.sh");
    fs::write(&script, b"#!/bin/sh\necho hi\n").unwrap();
    fs::set_permissions(&script, fs::Permissions::from_mode(0o750)).unwrap();
    let secret = root.join("a/secret");
    fs::write(&secret, b"s").unwrap();
    fs::set_permissions(&secret, fs::Permissions::from_mode(0o600)).unwrap();
    let mut sparse = fs::File::create(root.join("sparse")).unwrap();
    sparse.seek(SeekFrom::Start(50 << 20)).unwrap();
    sparse.write_all(b"end").unwrap();
    drop(sparse);
    rustix::fs::mknodat(
        rustix::fs::CWD,
        root.join("a/fifo"),
        rustix::fs::FileType::Fifo,
        rustix::fs::Mode::from_raw_mode(0o640),
        0,
    )
    .unwrap();
    set_mtime(&root.join("a/small.txt"), 1_500_000_000, 123_456_789);
    set_mtime(&root.join("big.bin"), 1_600_000_000, 1);
    // Directory mtimes last, after their contents changed.
    for d in ["a/b/c", "a/b", "a"] {
        let t = std::time::UNIX_EPOCH + Duration::new(1_400_000_000, 42);
        fs::File::open(root.join(d))
            .unwrap()
            .set_modified(t)
            .unwrap();
    }
}

mod round_trip {
    use super::*;

    #[test]
    fn tree_is_restored_byte_identical_with_metadata() {
        let env = Env::new();
        env.init();
        let src = env.path("src");
        make_tree(&src);
        env.backup_json(&[src.to_str().unwrap()]);
        let target = env.path("out");
        env.restore("latest", &target);
        assert_same_tree(&src, &restored(&target, &src));
        let sparse = fs::metadata(restored(&target, &src).join("sparse")).unwrap();
        assert!(
            sparse.blocks() * 512 < 1 << 20,
            "sparse file restored with {} blocks",
            sparse.blocks()
        );
    }

    #[test]
    fn include_restores_only_the_named_path() {
        let env = Env::new();
        env.init();
        let src = env.path("src");
        fs::create_dir_all(src.join("keep")).unwrap();
        fs::create_dir_all(src.join("skip")).unwrap();
        fs::write(src.join("keep/f"), b"1").unwrap();
        fs::write(src.join("skip/f"), b"2").unwrap();
        env.backup_json(&[src.to_str().unwrap()]);
        let target = env.path("out");
        let inc = format!("{}/keep", src.display());
        env.snap(&[
            "restore",
            "latest",
            "--target",
            target.to_str().unwrap(),
            "--include",
            &inc,
        ])
        .assert()
        .success();
        assert_eq!(
            fs::read(restored(&target, &src).join("keep/f")).unwrap(),
            b"1"
        );
        assert!(!restored(&target, &src).join("skip").exists());
    }

    #[test]
    fn restore_dry_run_writes_nothing_and_counts_what_restore_writes() {
        let env = Env::new();
        env.init();
        let src = env.path("src");
        fs::create_dir_all(src.join("keep")).unwrap();
        fs::create_dir_all(src.join("skip")).unwrap();
        fs::write(src.join("keep/f"), b"1").unwrap();
        fs::write(src.join("skip/f"), b"22").unwrap();
        fs::hard_link(src.join("skip/f"), src.join("skip/h")).unwrap();
        std::os::unix::fs::symlink("keep/f", src.join("link")).unwrap();
        env.backup_json(&[src.to_str().unwrap()]);
        let target = env.path("out");
        let t = target.to_str().unwrap();
        let dry =
            util::json(env.snap(&["restore", "latest", "--target", t, "--dry-run", "--json"]));
        assert!(!target.exists(), "a dry run creates nothing");
        assert_eq!(
            (
                &dry["files"],
                &dry["others"],
                &dry["bytes"],
                &dry["dry_run"]
            ),
            (&json!(3), &json!(1), &json!(3), &json!(true)),
            "{dry}"
        );
        env.snap(&["restore", "latest", "--target", t, "--dry-run"])
            .assert()
            .success()
            .stdout(
                predicate::str::contains("3 files")
                    .and(predicate::str::contains("dry run, nothing written")),
            );
        assert!(!target.exists());
        let done = util::json(env.snap(&["restore", "latest", "--target", t, "--json"]));
        for k in ["files", "dirs", "others", "bytes"] {
            assert_eq!(dry[k], done[k], "{k}: {dry} {done}");
        }
        // With --include, only what it names.
        let inc = format!("{}/keep", src.display());
        let t2 = env.path("out2");
        let dry = util::json(env.snap(&[
            "restore",
            "latest",
            "--target",
            t2.to_str().unwrap(),
            "--include",
            &inc,
            "--dry-run",
            "--json",
        ]));
        assert_eq!(
            (&dry["files"], &dry["dirs"], &dry["bytes"]),
            (&json!(1), &json!(1), &json!(1)),
            "{dry}"
        );
        assert!(!t2.exists());
    }

    #[test]
    fn ls_and_cat_show_the_snapshot() {
        let env = Env::new();
        env.init();
        let src = env.path("src");
        fs::create_dir_all(&src).unwrap();
        fs::write(src.join("f.txt"), b"content").unwrap();
        env.backup_json(&[
            src.to_str().unwrap(),
            "--command",
            "printf dump",
            "--as",
            "db/x.sql",
        ]);
        env.snap(&["ls", "latest"])
            .assert()
            .success()
            .stdout(predicate::str::contains("/db/x.sql").and(predicate::str::contains("f.txt")));
        env.snap(&["cat", "latest", "db/x.sql"])
            .assert()
            .success()
            .stdout("dump");
        let f = format!("{}/f.txt", src.display());
        env.snap(&["cat", "latest", &f])
            .assert()
            .success()
            .stdout("content");
        env.snap(&["cat", "latest", "db"])
            .assert()
            .failure()
            .stderr(predicate::str::contains("not a file"));
        env.snap(&["cat", "nosuch", "db/x.sql"])
            .assert()
            .failure()
            .stderr(predicate::str::contains("not found"));
    }
}

mod dedup {
    use super::*;

    #[test]
    fn unchanged_second_backup_adds_almost_nothing_and_reads_nothing() {
        let env = Env::new();
        env.init();
        let src = env.path("src");
        fs::create_dir_all(&src).unwrap();
        for i in 0..50 {
            let f = src.join(format!("f{i}"));
            fs::write(&f, random_bytes(200_000, &i.to_string())).unwrap();
            // Files that have existed for a while (see the "racy clean" rule).
            set_mtime(&f, 1_600_000_000, 0);
        }
        let first = env.backup_json(&[src.to_str().unwrap()]);
        let second = env.backup_json(&[src.to_str().unwrap()]);
        let added1 = first["summary"]["bytes_added"].as_u64().unwrap();
        let added2 = second["summary"]["bytes_added"].as_u64().unwrap();
        assert!(added1 >= 10_000_000);
        assert!(added2 < 2_000, "second backup added {added2} bytes");
        assert_eq!(second["summary"]["files_read"], 0);
        assert_eq!(second["parent"], first["id"]);
    }

    #[test]
    fn one_byte_insertion_in_100_mib_adds_few_chunks() {
        let env = Env::new();
        env.init();
        let src = env.path("src");
        fs::create_dir_all(&src).unwrap();
        let mut data = random_bytes(100 << 20, "insert");
        fs::write(src.join("big"), &data).unwrap();
        env.backup_json(&[src.to_str().unwrap()]);
        data.insert(37 << 20, b'!');
        fs::write(src.join("big"), &data).unwrap();
        let second = env.backup_json(&[src.to_str().unwrap()]);
        let s = &second["summary"];
        assert_eq!(s["files_read"], 1);
        let raw = s["bytes_added_raw"].as_u64().unwrap();
        let blobs = s["blobs_added"].as_u64().unwrap();
        assert!(raw < 10 << 20, "insertion added {raw} raw bytes");
        assert!(blobs <= 12, "insertion added {blobs} blobs");
        let target = env.path("out");
        env.restore("latest", &target);
        assert!(fs::read(restored(&target, &src).join("big")).unwrap() == data);
    }

    #[test]
    fn stdin_is_always_read_never_taken_from_the_parent() {
        let env = Env::new();
        env.init();
        let src = env.path("src");
        fs::create_dir_all(&src).unwrap();
        fs::write(src.join("f"), b"x").unwrap();
        for content in ["day one dump", "day two dump"] {
            env.snap(&[
                "backup",
                "--stdin-name",
                "db/dump.sql",
                src.to_str().unwrap(),
            ])
            .write_stdin(content)
            .assert()
            .success();
            env.snap(&["cat", "latest", "db/dump.sql"])
                .assert()
                .success()
                .stdout(content);
        }
        for content in ["same length A", "same length B"] {
            let cmd = format!("printf '{content}'");
            env.snap(&[
                "backup",
                "--command",
                &cmd,
                "--as",
                "out.txt",
                src.to_str().unwrap(),
            ])
            .assert()
            .success();
            env.snap(&["cat", "latest", "out.txt"])
                .assert()
                .success()
                .stdout(content);
        }
    }
}

mod commands {
    use super::*;

    /// Completion scripts and man pages come from the clap definitions: every
    /// subcommand is in them, and bash accepts its script.
    #[test]
    fn completions_and_man_pages_cover_every_subcommand() {
        let env = Env::new();
        let subcommands = [
            "backup", "restore", "forget", "prune", "check", "key", "export",
        ];
        for shell in ["bash", "zsh", "fish"] {
            let out = env.snap(&["completions", shell]).output().unwrap();
            assert!(out.status.success());
            let text = String::from_utf8(out.stdout).unwrap();
            for c in subcommands {
                assert!(text.contains(c), "{shell} completions lack {c}");
            }
            if shell == "bash" {
                let script = env.path("snap.bash");
                fs::write(&script, &text).unwrap();
                let ok = std::process::Command::new("bash")
                    .arg("-n")
                    .arg(&script)
                    .status()
                    .unwrap();
                assert!(ok.success(), "bash rejects the completion script");
                assert!(text.contains("complete -F _snap"));
            }
        }
        env.snap(&["man"])
            .assert()
            .success()
            .stdout(predicate::str::starts_with(".ie").and(predicate::str::contains(".TH snap 1")));
        let dir = env.path("man");
        env.snap(&["man", "--dir", dir.to_str().unwrap()])
            .assert()
            .success();
        for c in subcommands {
            assert!(dir.join(format!("snap-{c}.1")).exists(), "no page for {c}");
        }
        env.snap(&["completions", "tcsh"]).assert().code(2);
    }

    #[test]
    fn diff_lists_added_removed_changed_and_metadata_only_entries() {
        let env = Env::new();
        env.init();
        let src = env.path("src");
        fs::create_dir_all(src.join("same/deep")).unwrap();
        fs::create_dir_all(src.join("gone")).unwrap();
        fs::write(src.join("same/deep/f"), b"unchanged").unwrap();
        fs::write(src.join("gone/x"), b"x").unwrap();
        fs::write(src.join("edit.txt"), b"before").unwrap();
        fs::write(src.join("mode.sh"), b"#!/bin/sh\n").unwrap();
        let a = env.backup_json(&[src.to_str().unwrap()]);
        fs::remove_dir_all(src.join("gone")).unwrap();
        fs::write(src.join("new.txt"), b"brand new file").unwrap();
        fs::write(src.join("edit.txt"), b"after, longer").unwrap();
        fs::set_permissions(src.join("mode.sh"), fs::Permissions::from_mode(0o755)).unwrap();
        let b = env.backup_json(&[src.to_str().unwrap()]);
        let (a, b) = (a["id"].as_str().unwrap(), b["id"].as_str().unwrap());
        let out = env.snap(&["diff", a, b, "--json"]).output().unwrap();
        assert!(out.status.success());
        let got: Vec<(String, String)> = String::from_utf8(out.stdout)
            .unwrap()
            .lines()
            .map(|l| {
                let v: serde_json::Value = serde_json::from_str(l).unwrap();
                let path = v["path"].as_str().unwrap();
                let rel = path.rsplit_once("/src/").map_or(path, |(_, r)| r);
                (v["change"].as_str().unwrap().to_string(), rel.to_string())
            })
            .collect();
        let want: Vec<(String, String)> = [
            ("modified", "edit.txt"),
            ("removed", "gone"),
            ("removed", "gone/x"),
            ("metadata", "mode.sh"),
            ("added", "new.txt"),
        ]
        .iter()
        .map(|(c, p)| (c.to_string(), p.to_string()))
        .collect();
        assert_eq!(got, want);
        env.snap(&["diff", a, b]).assert().success().stdout(
            predicate::str::contains("M ")
                .and(predicate::str::contains("6 B -> 13 B"))
                .and(predicate::str::contains(
                    "1 added, 2 removed, 1 changed, 1 metadata only",
                )),
        );
        env.snap(&["diff", a, a])
            .assert()
            .success()
            .stdout(predicate::str::contains("0 added, 0 removed"));
    }

    #[test]
    fn stats_report_dedup_and_growth() {
        let env = Env::new();
        env.init();
        let src = env.path("src");
        fs::create_dir_all(&src).unwrap();
        fs::write(src.join("a"), random_bytes(2 << 20, "a")).unwrap();
        env.backup_json(&[src.to_str().unwrap()]);
        env.backup_json(&[src.to_str().unwrap()]);
        fs::write(src.join("b"), random_bytes(1 << 20, "b")).unwrap();
        env.backup_json(&[src.to_str().unwrap()]);
        let out = env.snap(&["stats", "--json"]).output().unwrap();
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(v["snapshots"], 3);
        // 2 + 2 + 3 MiB in the snapshots, 3 MiB stored once.
        assert_eq!(v["logical_bytes"], 7 << 20);
        let raw = v["repository"]["raw_bytes"].as_u64().unwrap();
        assert!((3 << 20..(3 << 20) + 4096).contains(&raw), "{v}");
        let added: Vec<u64> = v["per_snapshot"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["bytes_added"].as_u64().unwrap())
            .collect();
        assert!(
            added[0] > 2 << 20 && added[1] < 4096 && added[2] > 1 << 20,
            "{added:?}"
        );
        env.snap(&["stats"]).assert().success().stdout(
            predicate::str::contains("deduplication 2.3x").and(predicate::str::contains("█")),
        );
    }

    /// Forgotten snapshots' data still stored is in the growth chart, so that its last
    /// row is what the repository stores.
    #[test]
    fn stats_growth_accounts_for_every_stored_byte() {
        let env = Env::new();
        env.init();
        let src = env.path("src");
        fs::create_dir_all(&src).unwrap();
        fs::write(src.join("a"), random_bytes(2 << 20, "a")).unwrap();
        let first = env.backup_json(&[src.to_str().unwrap()]);
        fs::remove_file(src.join("a")).unwrap();
        fs::write(src.join("b"), random_bytes(1 << 20, "b")).unwrap();
        env.backup_json(&[src.to_str().unwrap()]);
        let id = first["id"].as_str().unwrap();
        env.snap(&["forget", id]).assert().success();
        let out = env.snap(&["stats", "--json"]).output().unwrap();
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        let packs = v["repository"]["pack_bytes"].as_u64().unwrap();
        let earlier = v["stored_before_snapshots"].as_u64().unwrap();
        // The forgotten snapshot's 2 MiB are still stored (no prune yet).
        assert!(earlier > 2 << 20, "{v}");
        let added: u64 = v["per_snapshot"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["bytes_added"].as_u64().unwrap())
            .sum();
        assert_eq!(earlier + added, packs, "{v}");
        let out = env.snap(&["stats"]).output().unwrap();
        let text = String::from_utf8(out.stdout).unwrap();
        let last = text.lines().rfind(|l| l.contains('█')).unwrap();
        let size = format!("{:.1} MiB", packs as f64 / f64::from(1 << 20));
        assert!(
            last.contains(&size),
            "last row {last:?}, stored {size}\n{text}"
        );
        assert!(text.contains("before these snapshots"), "{text}");
    }

    /// `find` across snapshots, by name and by path, and `list`'s filters.
    #[test]
    fn find_entries_across_snapshots_and_filter_listings() {
        let env = Env::new();
        env.init();
        let src = env.path("src");
        fs::create_dir_all(src.join("rasters/old")).unwrap();
        fs::write(src.join("rasters/a.tif"), b"a").unwrap();
        fs::write(src.join("rasters/old/c.tif"), b"c").unwrap();
        fs::write(src.join("notes.txt"), b"n").unwrap();
        let first = env.backup_json(&[src.to_str().unwrap(), "--tag", "daily"]);
        fs::write(src.join("rasters/b.tif"), b"bb").unwrap();
        let second = env.backup_json(&[src.to_str().unwrap(), "--tag", "weekly"]);
        let (first, second) = (
            first["id"].as_str().unwrap(),
            second["id"].as_str().unwrap(),
        );
        let text = |args: &[&str]| {
            let out = env.snap(args).output().unwrap();
            assert!(out.status.success(), "{args:?}: {out:?}");
            String::from_utf8(out.stdout).unwrap()
        };
        let found = text(&["find", "*.tif"]);
        let lines: Vec<&str> = found.lines().collect();
        assert_eq!(lines.len(), 5, "{found}");
        let in_first = lines.iter().filter(|l| l.starts_with(&first[..8])).count();
        assert_eq!(in_first, 2, "{found}");
        assert!(lines
            .iter()
            .any(|l| l.starts_with(&second[..8]) && l.ends_with("/rasters/b.tif")));
        assert!(!found.contains("notes.txt"));
        // A path pattern: `*` stays within a name, `**` crosses directories.
        let root = src.to_str().unwrap();
        assert_eq!(
            text(&["find", &format!("{root}/rasters/*.tif")])
                .lines()
                .count(),
            3
        );
        assert_eq!(
            text(&["find", &format!("{root}/**/c.tif")]).lines().count(),
            2
        );
        assert_eq!(
            text(&["find", "*.tif", "--tag", "weekly"]).lines().count(),
            3
        );
        assert_eq!(text(&["find", "*.png"]), "");
        let json = text(&["find", "b.tif", "--json"]);
        let v: serde_json::Value = serde_json::from_str(json.trim()).unwrap();
        assert_eq!(v["snapshot"], second);
        assert_eq!(v["size"], 2);
        assert!(v["path"].as_str().unwrap().ends_with("/rasters/b.tif"));
        env.snap(&["find", "["])
            .assert()
            .failure()
            .stderr(predicate::str::contains("pattern"));
        // list: by tag, by host, by path.
        let listed = |args: &[&str]| -> Vec<String> {
            let v: serde_json::Value =
                serde_json::from_str(&text(&[&["list", "--json"], args].concat())).unwrap();
            v.as_array()
                .unwrap()
                .iter()
                .map(|s| s["id"].as_str().unwrap().to_string())
                .collect()
        };
        assert_eq!(listed(&["--tag", "daily"]), vec![first.to_string()]);
        assert_eq!(listed(&["--tag", "daily", "--tag", "weekly"]).len(), 2);
        assert!(listed(&["--host", "no-such-host"]).is_empty());
        assert_eq!(listed(&["--path", root]).len(), 2);
        assert!(listed(&["--path", "/elsewhere"]).is_empty());
    }

    /// `tag` replaces a snapshot's record by one with the new tags, data untouched.
    #[test]
    fn tag_adds_removes_and_sets_tags() {
        let env = Env::new();
        env.init();
        let src = env.path("src");
        fs::create_dir_all(&src).unwrap();
        fs::write(src.join("a"), random_bytes(100_000, "a")).unwrap();
        let first = env.backup_json(&[src.to_str().unwrap(), "--tag", "nightly"]);
        let second = env.backup_json(&[src.to_str().unwrap()]);
        let first = first["id"].as_str().unwrap().to_string();
        let tags_of = |env: &Env| -> Vec<(String, Vec<String>)> {
            env.snapshots()
                .iter()
                .map(|s| {
                    let tags = s["tags"].as_array().unwrap().iter();
                    (
                        s["id"].as_str().unwrap().to_string(),
                        tags.map(|t| t.as_str().unwrap().to_string()).collect(),
                    )
                })
                .collect()
        };
        env.snap(&["tag", &first[..8], "--add", "keep", "--add", "audit"])
            .assert()
            .success()
            .stdout(predicate::str::contains(&first[..8]));
        let now = tags_of(&env);
        assert_eq!(now.len(), 2);
        assert!(
            !now.iter().any(|(id, _)| *id == first),
            "old record removed"
        );
        let retagged = now
            .iter()
            .find(|(_, t)| t.contains(&"keep".to_string()))
            .unwrap();
        assert_eq!(retagged.1, ["audit", "keep", "nightly"]);
        // Nothing but the tags changed: the same files come back.
        let target = env.path("restored");
        env.restore(&retagged.0[..8], &target);
        assert_same_tree(&src, &restored(&target, &src));
        env.snap(&["tag", &retagged.0[..8], "--remove", "nightly"])
            .assert()
            .success();
        // By filter: every snapshot tagged audit gets exactly `monthly`.
        env.snap(&["tag", "--tag", "audit", "--set", "monthly"])
            .assert()
            .success();
        let now = tags_of(&env);
        assert_eq!(
            now.iter().filter(|(_, t)| t == &["monthly"]).count(),
            1,
            "{now:?}"
        );
        assert!(now
            .iter()
            .any(|(id, t)| id == second["id"].as_str().unwrap() && t.is_empty()));
        // Asking for no change is an error, and a change already made is not redone.
        env.snap(&["tag", "latest"]).assert().failure().code(1);
        env.snap(&["tag", "--tag", "monthly", "--add", "monthly"])
            .assert()
            .success()
            .stderr(predicate::str::contains(
                "0 snapshots changed, 1 already as asked",
            ));
    }

    /// `--tag a,b` gives two tags, as in restic, so the filter `--tag a,b` (both) finds
    /// the snapshot; a tag or host that could not be selected, listed or shown as a
    /// mount's directory is refused before anything is read.
    #[test]
    fn tags_are_split_at_commas_and_unusable_labels_refused() {
        let env = Env::new();
        env.init();
        let src = env.path("src");
        fs::create_dir_all(&src).unwrap();
        fs::write(src.join("f"), b"f").unwrap();
        let src = src.to_str().unwrap();
        let made = env.backup_json(&[src, "--tag", "db,nightly", "--tag", "eu"]);
        let id = made["id"].as_str().unwrap();
        let listed = |args: &[&str]| -> serde_json::Value {
            let mut all = vec!["list", "--json"];
            all.extend_from_slice(args);
            let o = env.snap(&all).output().unwrap();
            assert!(o.status.success(), "{o:?}");
            serde_json::from_slice(&o.stdout).unwrap()
        };
        let all = listed(&[]);
        assert_eq!(all[0]["tags"], serde_json::json!(["db", "eu", "nightly"]));
        assert_eq!(listed(&["--tag", "nightly,db"])[0]["id"], id);
        for (args, said) in [
            (
                &["--tag", "a/b"][..],
                "\"a/b\" cannot be a tag: it contains /",
            ),
            (&["--tag", ".."], "cannot be a tag: it is . or .."),
            (&["--tag", "a,,b"], "\"\" cannot be a tag: it is empty"),
            (&["--tag", "new\nline"], "control character"),
            (&["--host", "web/1"], "cannot be a host name: it contains /"),
            (&["--host", ""], "cannot be a host name: it is empty"),
        ] {
            let mut all = vec!["backup", src];
            all.extend_from_slice(args);
            let o = env.snap(&all).output().unwrap();
            assert_eq!(o.status.code(), Some(2), "{args:?}: {o:?}");
            let err = String::from_utf8_lossy(&o.stderr);
            assert!(err.contains(said), "{args:?}: {err}");
        }
        env.snap(&["tag", "latest", "--add", "x/y"])
            .assert()
            .code(2)
            .stderr(predicate::str::contains("cannot be a tag"));
        env.snap(&[
            "tag",
            "latest",
            "--remove",
            "eu,nightly",
            "--add",
            "kept,audit",
        ])
        .assert()
        .success();
        assert_eq!(
            listed(&[])[0]["tags"],
            serde_json::json!(["audit", "db", "kept"])
        );
        env.snap(&["tag", "latest", "--set", "one,two"])
            .assert()
            .success();
        assert_eq!(listed(&[])[0]["tags"], serde_json::json!(["one", "two"]));
        env.snap(&["tag", "latest", "--set", ""]).assert().success();
        assert_eq!(listed(&[])[0]["tags"], serde_json::json!([]));
        assert_eq!(listed(&[]).as_array().unwrap().len(), 1);
    }

    /// `snap` with no `--repo`, reading the configuration file `config`.
    fn with_config(config: &Path, args: &[&str]) -> assert_cmd::Command {
        let mut c = util::snap_bin();
        c.env_remove("SNAP_REPO")
            .env("SNAP_CONFIG", config)
            .args(args);
        c
    }

    /// Two profiles of one repository (as in `contrib/snap.toml.example`) and a
    /// third with other sources: each run's retention judges only its own profile's
    /// snapshots (its tags, host and sources), never another's.
    #[test]
    fn a_profiles_retention_leaves_other_profiles_snapshots_alone() {
        let env = Env::new();
        env.init();
        let (src, other) = (env.path("src"), env.path("other"));
        for d in [&src, &other] {
            fs::create_dir_all(d).unwrap();
            fs::write(d.join("a"), b"a").unwrap();
        }
        let config = env.path("snap.toml");
        fs::write(
            &config,
            format!(
                r#"[profile.nightly]
repository = "{repo}"
paths = ["{src}"]
tags = ["nightly"]
retention = {{ keep_last = 3 }}

[profile.hourly]
repository = "{repo}"
paths = ["{src}"]
tags = ["hourly"]
retention = {{ keep_last = 1 }}

[profile.other]
repository = "{repo}"
paths = ["{other}"]
retention = {{ keep_last = 1 }}
"#,
                repo = env.repo().display(),
                src = src.display(),
                other = other.display(),
            ),
        )
        .unwrap();
        let count = |tag: Option<&str>| {
            let mut args = vec!["list", "--json"];
            args.extend(tag.map(|t| ["--tag", t]).into_iter().flatten());
            let o = env.snap(&args).output().unwrap();
            let all: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
            all.as_array().unwrap().len()
        };
        for _ in 0..3 {
            with_config(&config, &["run", "nightly"]).assert().success();
        }
        for _ in 0..2 {
            with_config(&config, &["run", "hourly"]).assert().success();
            with_config(&config, &["run", "other"]).assert().success();
        }
        assert_eq!(
            count(Some("nightly")),
            3,
            "hourly's retention took nightly's"
        );
        assert_eq!(count(Some("hourly")), 1);
        assert_eq!(count(None), 5, "other's retention took the others'");
    }

    /// Two offsites, the first unusable: the second still gets its copy, and the run
    /// fails naming the first; JSON says the same exit as the process.
    #[test]
    fn one_failing_offsite_does_not_keep_the_next_from_its_copy() {
        let env = Env::new();
        env.init();
        let src = env.path("src");
        fs::create_dir_all(&src).unwrap();
        fs::write(src.join("a"), b"a").unwrap();
        let (bad, good) = (env.path("not-a-repo"), env.path("offsite"));
        fs::create_dir_all(&bad).unwrap();
        fs::write(bad.join("other"), b"someone else's file").unwrap();
        let config = env.path("snap.toml");
        fs::write(
            &config,
            format!(
                "[profile.p]\nrepository = \"{}\"\npaths = [\"{}\"]\nsync = [\"{}\", \"{}\"]\n",
                env.repo().display(),
                src.display(),
                bad.display(),
                good.display()
            ),
        )
        .unwrap();
        let out = with_config(&config, &["run", "p", "--json"])
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(1));
        let run: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(run["exit"], 1, "{run}");
        let err = run["error"].as_str().unwrap();
        assert!(
            err.contains(&format!("sync to {} failed", bad.display())),
            "{err}"
        );
        let steps: Vec<(&str, i64)> = run["steps"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| (s["step"].as_str().unwrap(), s["exit"].as_i64().unwrap()))
            .collect();
        assert_eq!(steps, [("backup", 0), ("sync", 1), ("sync", 0)], "{run}");
        let copied = util::json(util::snap_at(
            good.to_str().unwrap(),
            &env.path("c"),
            &[],
            &["list", "--json"],
        ));
        assert_eq!(copied.as_array().unwrap().len(), 1);
    }

    #[test]
    fn profiles_run_backup_then_retention_and_stop_at_the_first_failure() {
        let env = Env::new();
        env.init();
        let src = env.path("src");
        fs::create_dir_all(&src).unwrap();
        fs::write(src.join("a"), b"a").unwrap();
        let config = env.path("snap.toml");
        fs::write(
            &config,
            format!(
                r#"default = "app"

[profile.app]
repository = "{repo}"
paths = ["{src}"]
tags = ["nightly"]
commands = [{{ command = "echo dump", as = "db/app.sql" }}]

sync = ["{offsite}"]

[profile.app.retention]
keep_last = 2

[profile.broken]
repository = "{repo}"
commands = [{{ command = "echo oops >&2; exit 3", as = "db/x.sql" }}]
retention = {{ keep_last = 1 }}
"#,
                repo = env.repo().display(),
                src = src.display(),
                offsite = env.path("offsite").display()
            ),
        )
        .unwrap();
        for _ in 0..2 {
            with_config(&config, &["run"]).assert().success();
        }
        // For monitoring: one JSON summary of every step.
        let out = with_config(&config, &["run", "--json"]).output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let run: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(
            (&run["profile"], &run["exit"]),
            (&json!("app"), &json!(0)),
            "{run}"
        );
        let steps: Vec<&str> = run["steps"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["step"].as_str().unwrap())
            .collect();
        assert_eq!(steps, ["backup", "forget", "sync"], "{run}");
        let [backup, forget, sync] = [0, 1, 2].map(|i| &run["steps"][i]["report"]);
        assert_eq!(backup["summary"]["files"], 2, "{run}");
        assert_eq!(forget["removed"].as_array().unwrap().len(), 1, "{run}");
        assert_eq!(forget["prune"]["snapshots"], 2, "{run}");
        assert_eq!(sync["deleted"][0], 1, "{run}");
        assert_eq!(run["steps"][2]["to"], json!(env.path("offsite")), "{run}");
        let snaps = env.snapshots();
        assert_eq!(snaps[1]["id"], backup["id"]);
        assert_eq!(snaps.len(), 2, "keep_last = 2 after three runs");
        assert_eq!(snaps[1]["tags"][0], "nightly");
        let ls = env.snap(&["cat", "latest", "db/app.sql"]).output().unwrap();
        assert_eq!(ls.stdout, b"dump\n");
        // The sync step mirrored the same two snapshots offsite.
        let offsite = util::snap_bin()
            .env_remove("SNAP_REPO")
            .args([
                "--repo",
                env.path("offsite").to_str().unwrap(),
                "list",
                "--json",
            ])
            .output()
            .unwrap();
        let there: serde_json::Value = serde_json::from_slice(&offsite.stdout).unwrap();
        assert_eq!(there.as_array().unwrap().len(), 2, "{there}");
        // `snap backup` with no source runs the default profile's backup only.
        with_config(&config, &["backup"]).assert().success();
        assert_eq!(env.snapshots().len(), 3);
        // A failing step stops the run: no forget after a failed backup.
        with_config(&config, &["run", "broken"])
            .assert()
            .code(1)
            .stderr(
                predicate::str::contains("later steps were not run")
                    .and(predicate::str::contains("oops")),
            );
        assert_eq!(env.snapshots().len(), 3);
        let out = with_config(&config, &["run", "broken", "--json"])
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(1));
        let run: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(run["exit"], 1, "{run}");
        assert!(run["error"].as_str().unwrap().contains("oops"), "{run}");
        assert_eq!(run["steps"].as_array().unwrap().len(), 1, "{run}");
        assert_eq!(run["steps"][0]["exit"], 1, "{run}");
        with_config(&config, &["run", "nosuch"])
            .assert()
            .code(1)
            .stderr(predicate::str::contains(
                "no profile \"nosuch\" (defined: app, broken)",
            ));
        // The shipped example is a valid configuration.
        let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("contrib/snap.toml.example");
        with_config(&example, &["run", "nosuch"])
            .assert()
            .code(1)
            .stderr(predicate::str::contains("(defined: hourly, nightly)"));
        // A wrong key is named with its line.
        fs::write(
            &config,
            "[profile.app]\nrepository = \"/x\"\nkeep_daily = 7\n",
        )
        .unwrap();
        with_config(&config, &["run", "app"])
            .assert()
            .code(1)
            .stderr(
                predicate::str::contains("line 3")
                    .and(predicate::str::contains("unknown field `keep_daily`")),
            );
        // A tag is checked as `--tag` checks it, and `max_unused` takes what
        // `--max-unused` takes.
        fs::write(
            &config,
            "[profile.app]\nrepository = \"/x\"\ntags = [\"ok\", \"a/b\"]\n",
        )
        .unwrap();
        with_config(&config, &["run", "app"])
            .assert()
            .code(1)
            .stderr(
                predicate::str::contains("line 3")
                    .and(predicate::str::contains("\"a/b\" cannot be a tag")),
            );
        // A retention that keeps nothing, or a span read differently by restic, is
        // refused with its line before anything runs; so is a profile with no source.
        for (table, said) in [
            ("prune = true", "keeps no snapshot"),
            (
                "keep_within = \"6m\"",
                "write mo for months or min for minutes",
            ),
        ] {
            fs::write(
                &config,
                format!("[profile.app]\nrepository = \"/x\"\npaths = [\"/\"]\n[profile.app.retention]\n{table}\n"),
            )
            .unwrap();
            with_config(&config, &["run", "app"])
                .assert()
                .code(1)
                .stderr(predicate::str::contains(said).and(predicate::str::contains("line")));
        }
        fs::write(&config, "[profile.app]\nrepository = \"/x\"\n").unwrap();
        with_config(&config, &["run", "app"])
            .assert()
            .code(1)
            .stderr(predicate::str::contains(
                "profile app has nothing to back up",
            ));
        // Counts as restic takes them: a number, "unlimited" or -1.
        for (count, ok) in [("-1", true), ("\"unlimited\"", true), ("-2", false)] {
            fs::write(
                &config,
                format!("[profile.app]\nrepository = \"/x\"\npaths = [\"/\"]\n[profile.app.retention]\nkeep_daily = {count}\n"),
            )
            .unwrap();
            let said = if ok {
                "no profile \"nosuch\""
            } else {
                "is not a count"
            };
            with_config(&config, &["run", "nosuch"])
                .assert()
                .code(1)
                .stderr(predicate::str::contains(said));
        }
        for (share, ok) in [("150%", true), ("unlimited", true), ("-5%", false)] {
            fs::write(
                &config,
                format!(
                    "[profile.app]\nrepository = \"/x\"\n[profile.app.retention]\n\
                     keep_last = 1\nmax_unused = \"{share}\"\n"
                ),
            )
            .unwrap();
            let said = if ok {
                "no profile \"nosuch\""
            } else {
                "line 5"
            };
            with_config(&config, &["run", "nosuch"])
                .assert()
                .code(1)
                .stderr(predicate::str::contains(said));
        }
    }

    /// `restore --pipe CMD` whose command stops reading early (and exits 0) did not
    /// get the whole file: exit 1, saying so (it ended 0 and silent); a directory is
    /// named as what it is, not as a corrupt snapshot.
    #[test]
    fn a_pipe_command_that_stops_reading_early_fails_the_restore() {
        let env = Env::new();
        env.init();
        env.snap(&["backup", "--stdin-name", "db/x.sql"])
            .write_stdin(random_bytes(4 << 20, "dump"))
            .assert()
            .success();
        env.snap(&[
            "restore",
            "latest",
            "--pipe",
            "head -c 100 >/dev/null",
            "db/x.sql",
        ])
        .assert()
        .code(1)
        .stderr(predicate::str::contains(
            "stopped reading its input before the end",
        ));
        env.snap(&[
            "restore",
            "latest",
            "--pipe",
            "wc -c >/dev/null",
            "db/x.sql",
        ])
        .assert()
        .success();
        env.snap(&["restore", "latest", "--pipe", "wc -c", "db"])
            .assert()
            .code(1)
            .stderr(
                predicate::str::contains("db is not a file in the snapshot")
                    .and(predicate::str::contains("corrupt").not()),
            );
    }

    /// Two sources stored at one place: refused by the whole path, before anything
    /// runs.
    #[test]
    fn two_sources_at_one_place_are_refused_by_their_path() {
        let env = Env::new();
        env.init();
        env.snap(&[
            "backup",
            "--command",
            "echo a",
            "--as",
            "cmd/ok",
            "--command",
            "echo b",
            "--as",
            "cmd/ok",
        ])
        .assert()
        .code(1)
        .stderr(predicate::str::contains("sources overlap at /cmd/ok:"));
        assert!(env.snapshots().is_empty());
    }

    #[test]
    fn failing_command_records_no_snapshot() {
        let env = Env::new();
        env.init();
        env.snap(&[
            "backup",
            "--command",
            "echo partial; echo 'pg_dump: error: connection to server failed' >&2; exit 2",
            "--as",
            "db.sql",
        ])
        .assert()
        .code(1)
        .stderr(
            predicate::str::contains("exited with status 2")
                .and(predicate::str::contains("connection to server failed")),
        );
        env.snap(&[
            "backup",
            "--command",
            "head -c 5000000 /dev/zero; kill -9 $$",
            "--as",
            "db.sql",
        ])
        .assert()
        .code(1)
        .stderr(predicate::str::contains("killed by signal 9"));
        // Beside a walk of files, which runs at the same time: the command's failure
        // still fails the backup, is what is reported, and records nothing.
        let src = env.path("src");
        for d in 0..20 {
            let dir = src.join(format!("d{d}"));
            fs::create_dir_all(&dir).unwrap();
            for f in 0..50 {
                fs::write(dir.join(format!("f{f}")), format!("{d} {f}")).unwrap();
            }
        }
        env.snap(&[
            "backup",
            "--command",
            "exit 2",
            "--as",
            "db.sql",
            src.to_str().unwrap(),
        ])
        .assert()
        .code(1)
        .stderr(
            predicate::str::contains("exited with status 2")
                .and(predicate::str::contains("could not be read").not()),
        );
        assert!(env.snapshots().is_empty());
    }

    #[test]
    fn command_line_and_status_are_recorded() {
        let env = Env::new();
        env.init();
        env.backup_json(&[
            "--command",
            "seq 1 1000",
            "--as",
            "n.txt",
            "--tag",
            "nightly",
        ]);
        let s = &env.snapshots()[0];
        assert_eq!(s["sources"][0]["command"], "seq 1 1000");
        assert_eq!(s["sources"][0]["exit_status"], 0);
        assert_eq!(s["tags"][0], "nightly");
    }

    #[test]
    fn mismatched_as_is_refused() {
        let env = Env::new();
        env.init();
        env.snap(&["backup", "--command", "true"])
            .assert()
            .code(1)
            .stderr(predicate::str::contains("--as"));
        env.snap(&["backup", "--command", "true", "--as", "../x"])
            .assert()
            .code(1)
            .stderr(predicate::str::contains("not a usable name"));
    }
}

mod safety {
    use super::*;

    #[test]
    fn flipped_byte_in_a_pack_is_detected_and_named() {
        let env = Env::new();
        env.init();
        let src = env.path("src");
        fs::create_dir_all(&src).unwrap();
        fs::write(src.join("victim.bin"), random_bytes(3 << 20, "victim")).unwrap();
        fs::write(src.join("other.txt"), b"unaffected").unwrap();
        env.backup_json(&[src.to_str().unwrap()]);
        let pack = largest_pack(&env.repo());
        let mut bytes = fs::read(&pack).unwrap();
        let mid = bytes.len() / 2;
        bytes[mid] ^= 0x01;
        fs::write(&pack, bytes).unwrap();
        let target = env.path("out");
        env.snap(&["restore", "latest", "--target", target.to_str().unwrap()])
            .assert()
            .code(1)
            .stderr(
                predicate::str::contains("victim.bin")
                    .and(predicate::str::contains("checksum mismatch")),
            );
        assert!(
            !restored(&target, &src).join("victim.bin").exists(),
            "no damaged file is left behind"
        );
        assert_eq!(
            fs::read(restored(&target, &src).join("other.txt")).unwrap(),
            b"unaffected"
        );
        let f = format!("{}/victim.bin", src.display());
        env.snap(&["cat", "latest", &f]).assert().code(1);
    }

    /// A repository holding one backup of `src/f`, 3 MiB, old enough that the parent's
    /// metadata is trusted ("racy clean" rule).
    fn one_old_file_backed_up() -> (Env, std::path::PathBuf) {
        let env = Env::new();
        env.init();
        let src = env.path("src");
        fs::create_dir_all(&src).unwrap();
        fs::write(src.join("f"), random_bytes(3 << 20, "f")).unwrap();
        set_mtime(&src.join("f"), 1_600_000_000, 0);
        env.backup_json(&[src.to_str().unwrap()]);
        (env, src)
    }

    /// The latest snapshot restores `src/f` byte for byte.
    fn assert_latest_restores_f(env: &Env, src: &Path) {
        let target = env.path("out");
        env.restore("latest", &target);
        assert!(
            fs::read(restored(&target, src).join("f")).unwrap() == fs::read(src.join("f")).unwrap()
        );
    }

    /// A pack whose trailer is damaged still holds its blobs where the index places
    /// them: `check` names the pack, restores go on, and `repair index` salvages every
    /// blob that reads (it dropped the whole pack, and with it data restores still
    /// read); afterwards `check --read-data` is clean.
    #[test]
    fn a_pack_with_a_damaged_trailer_is_salvaged_from_the_index() {
        let (env, src) = one_old_file_backed_up();
        let pack = largest_pack(&env.repo());
        let mut bytes = fs::read(&pack).unwrap();
        let n = bytes.len();
        bytes[n - 10] ^= 0xff;
        fs::write(&pack, bytes).unwrap();
        env.snap(&["check"])
            .assert()
            .code(1)
            .stderr(predicate::str::contains(
                pack.file_name().unwrap().to_str().unwrap(),
            ));
        assert_latest_restores_f(&env, &src);
        env.snap(&["repair", "index"])
            .assert()
            .success()
            .stderr(predicate::str::contains("intact blobs copied"));
        env.snap(&["check", "--read-data"]).assert().success();
        fs::remove_dir_all(env.path("out")).unwrap();
        assert_latest_restores_f(&env, &src);
    }

    /// A pack `check` finds gone must not be referenced again by the unchanged files
    /// of the next backup: its blobs leave the index, so they are read and stored
    /// anew (the backup said "saved" and could not be restored).
    #[test]
    fn a_missing_pack_is_not_reused_by_the_next_backup() {
        let (env, src) = one_old_file_backed_up();
        let pack = largest_pack(&env.repo());
        fs::remove_file(&pack).unwrap();
        env.snap(&["check"])
            .assert()
            .code(1)
            .stderr(predicate::str::contains("is missing"));
        let second = env.backup_json(&[src.to_str().unwrap()]);
        assert_eq!(
            second["summary"]["files_read"], 1,
            "the file whose blobs are gone is read again"
        );
        assert_latest_restores_f(&env, &src);
    }

    /// This host's index cache made unreadable (a disk error, a bad copy): it is made
    /// again from the repository, with a warning, instead of stopping every command
    /// (restore included) with SQLite's words.
    #[test]
    fn a_damaged_index_cache_is_made_again() {
        let (env, src) = one_old_file_backed_up();
        let cache = crate::util::walk(&env.cache())
            .into_iter()
            .find(|p| p.file_name().is_some_and(|n| n == "index.sqlite"))
            .unwrap();
        fs::write(&cache, random_bytes(8192, "junk")).unwrap();
        for suffix in ["-wal", "-shm"] {
            let _ = fs::remove_file(format!("{}{suffix}", cache.display()));
        }
        env.snap(&["list"]).assert().success().stderr(
            predicate::str::contains("index cache").and(predicate::str::contains("rebuilding")),
        );
        assert_latest_restores_f(&env, &src);
    }

    /// A snapshot record damaged in the store that this host's cache holds whole is
    /// written back by `repair index` (it dropped the snapshot, whose data was intact).
    #[test]
    fn repair_writes_back_a_damaged_snapshot_record_from_the_cache() {
        let (env, src) = one_old_file_backed_up();
        let record = fs::read_dir(env.repo().join("snapshots"))
            .unwrap()
            .next()
            .unwrap()
            .unwrap()
            .path();
        let good = fs::read(&record).unwrap();
        let mut bytes = good.clone();
        bytes[10] ^= 1;
        fs::write(&record, &bytes).unwrap();
        env.snap(&["check"]).assert().code(1);
        env.snap(&["repair", "index"])
            .assert()
            .success()
            .stderr(predicate::str::contains(
                "written back from this host's cache",
            ));
        assert_eq!(fs::read(&record).unwrap(), good);
        env.snap(&["check"]).assert().success();
        assert_latest_restores_f(&env, &src);
    }

    /// A repository that lost its config file is not taken for no repository (whose
    /// advice, `snap init`, would refuse the directory): the message says where a
    /// config comes back from.
    #[test]
    fn a_repository_without_its_config_says_so() {
        let (env, _src) = one_old_file_backed_up();
        fs::remove_file(env.repo().join("config")).unwrap();
        env.snap(&["list"]).assert().code(1).stderr(
            predicate::str::contains("holds snapshots but no config file")
                .and(predicate::str::contains("put the config file back"))
                .and(predicate::str::contains("snap init").not()),
        );
    }

    /// `check` reads the index files the repository holds, not the copy this host's
    /// cache made of them: damage there is named before a host without the copy
    /// needs them.
    #[test]
    fn check_reads_the_index_files_past_this_hosts_cache() {
        let (env, _src) = one_old_file_backed_up();
        env.snap(&["check"]).assert().success();
        let index = fs::read_dir(env.repo().join("index"))
            .unwrap()
            .next()
            .unwrap()
            .unwrap()
            .path();
        let mut bytes = fs::read(&index).unwrap();
        let mid = bytes.len() / 2;
        bytes[mid] ^= 1;
        fs::write(&index, bytes).unwrap();
        let name = index.file_name().unwrap().to_str().unwrap().to_string();
        env.snap(&["check"]).assert().code(1).stderr(
            predicate::str::contains(format!("index file {}", &name[..16]))
                .or(predicate::str::contains(format!("index file {name}"))),
        );
    }

    /// A parent saved with every blob in the index is trusted without a lookup per
    /// chunk, until a blob leaves the index: here `check --read-data` finds one of the
    /// unchanged file's chunks damaged, and the next backup reads that file again.
    #[test]
    fn damage_found_after_the_parent_makes_its_unchanged_file_read_again() {
        let (env, src) = one_old_file_backed_up();
        let second = env.backup_json(&[src.to_str().unwrap()]);
        assert_eq!(second["summary"]["files_read"], 0);
        let pack = largest_pack(&env.repo());
        let mut bytes = fs::read(&pack).unwrap();
        let mid = bytes.len() / 2;
        bytes[mid] ^= 0x10;
        fs::write(&pack, bytes).unwrap();
        env.snap(&["check", "--read-data"]).assert().code(1);
        let third = env.backup_json(&[src.to_str().unwrap()]);
        assert_eq!(
            third["summary"]["files_read"], 1,
            "the file with a damaged chunk was taken from its parent unread"
        );
        assert_latest_restores_f(&env, &src);
    }

    #[test]
    fn unchanged_old_files_are_not_read_but_fresh_ones_are() {
        let env = Env::new();
        env.init();
        let src = env.path("src");
        fs::create_dir_all(&src).unwrap();
        fs::write(src.join("old"), b"old").unwrap();
        set_mtime(&src.join("old"), 1_600_000_000, 0);
        fs::write(src.join("fresh"), b"fresh").unwrap();
        env.backup_json(&[src.to_str().unwrap()]);
        let second = env.backup_json(&[src.to_str().unwrap()]);
        // "fresh" was modified within a second of the parent's start: read again.
        assert_eq!(second["summary"]["files_read"], 1);
    }

    #[test]
    fn damaged_snapshot_record_is_skipped_not_fatal() {
        let env = Env::new();
        env.init();
        let src = env.path("src");
        fs::create_dir_all(&src).unwrap();
        fs::write(src.join("f"), b"x").unwrap();
        env.backup_json(&[src.to_str().unwrap()]);
        fs::write(
            env.repo().join("snapshots").join("ab".repeat(32)),
            b"garbage",
        )
        .unwrap();
        env.snap(&["list"])
            .assert()
            .success()
            .stderr(predicate::str::contains("skipping snapshot"));
        env.snap(&["repair", "index"]).assert().success();
        assert_eq!(env.snapshots().len(), 1);
    }

    #[test]
    fn restore_never_writes_through_a_symlink_in_the_target() {
        let env = Env::new();
        env.init();
        let src = env.path("src");
        fs::create_dir_all(src.join("d")).unwrap();
        fs::write(src.join("d/file"), b"payload").unwrap();
        env.backup_json(&[src.to_str().unwrap()]);
        let target = env.path("out");
        let outside = env.path("outside");
        fs::create_dir_all(&outside).unwrap();
        let dpath = restored(&target, &src).join("d");
        fs::create_dir_all(dpath.parent().unwrap()).unwrap();
        symlink(&outside, &dpath).unwrap();
        env.snap(&["restore", "latest", "--target", target.to_str().unwrap()])
            .assert()
            .code(1);
        assert_eq!(
            fs::read_dir(&outside).unwrap().count(),
            0,
            "nothing written outside the target"
        );
    }

    #[test]
    fn deleted_index_is_rebuilt_with_identical_restores() {
        let env = Env::new();
        env.init();
        let src = env.path("src");
        make_small_tree(&src);
        env.backup_json(&[
            src.to_str().unwrap(),
            "--command",
            "seq 1 50000",
            "--as",
            "db/n",
        ]);
        fs::write(src.join("new"), b"day two").unwrap();
        env.backup_json(&[
            src.to_str().unwrap(),
            "--command",
            "seq 1 60000",
            "--as",
            "db/n",
        ]);
        let before = env.snapshots();
        let a = env.path("a");
        env.restore("latest", &a);
        env.delete_index_cache_of(&env.repo());
        assert_eq!(env.snapshots(), before, "list after the index was deleted");
        let b = env.path("b");
        env.restore("latest", &b);
        assert_same_tree(&a, &b);
        env.snap(&["repair", "index"])
            .assert()
            .success()
            .stdout(predicate::str::contains("2 snapshots"));
        let c = env.path("c");
        env.restore(before[0]["id"].as_str().unwrap(), &c);
        env.snap(&["cat", before[0]["short_id"].as_str().unwrap(), "db/n"])
            .assert()
            .success()
            .stdout(predicate::function(|s: &[u8]| s.ends_with(b"\n50000\n")));
    }

    fn make_small_tree(root: &Path) {
        fs::create_dir_all(root.join("x/y")).unwrap();
        fs::write(root.join("x/y/z"), random_bytes(2 << 20, "z")).unwrap();
        fs::write(root.join("x/t"), b"text").unwrap();
    }

    #[test]
    fn kill_9_during_backup_leaves_a_working_repository() {
        let env = Env::new();
        env.init();
        let src = env.path("src");
        make_small_tree(&src);
        env.backup_json(&[src.to_str().unwrap()]);
        let big = env.path("stream.bin");
        fs::write(&big, random_bytes(150 << 20, "stream")).unwrap();
        let cmd = format!("cat {}", big.display());
        for delay_ms in [50u64, 150, 300, 600, 1000] {
            let mut child = std::process::Command::new(assert_cmd::cargo::cargo_bin("snap"))
                .env_remove("SNAP_REPO")
                .env("SNAP_CACHE_DIR", env.cache())
                .args([
                    "--repo",
                    env.repo().to_str().unwrap(),
                    "--quiet",
                    "backup",
                    "--command",
                    &cmd,
                    "--as",
                    "s.bin",
                ])
                .arg(&src)
                .spawn()
                .unwrap();
            std::thread::sleep(Duration::from_millis(delay_ms));
            let _ = child.kill();
            let _ = child.wait();
            let snaps = env.snapshots();
            assert!(!snaps.is_empty());
            for s in &snaps {
                let id = s["id"].as_str().unwrap();
                let out = env.path(&format!("r-{}", &id[..8]));
                env.restore(id, &out);
                let _ = fs::remove_dir_all(&out);
            }
        }
        let done = env.backup_json(&["--command", &cmd, "--as", "s.bin", src.to_str().unwrap()]);
        let id = done["id"].as_str().unwrap();
        let out = env.snap(&["cat", id, "s.bin"]).output().unwrap();
        assert!(out.status.success());
        assert!(
            out.stdout == fs::read(&big).unwrap(),
            "stream restored byte-identical after the kills"
        );
    }

    #[test]
    fn concurrent_backups_both_succeed() {
        let env = Env::new();
        env.init();
        let (a, b) = (env.path("a"), env.path("b"));
        fs::create_dir_all(&a).unwrap();
        fs::create_dir_all(&b).unwrap();
        fs::write(a.join("f"), random_bytes(20 << 20, "shared")).unwrap();
        fs::write(b.join("f"), random_bytes(20 << 20, "shared")).unwrap();
        fs::write(b.join("g"), random_bytes(5 << 20, "own")).unwrap();
        let spawn = |p: &Path| {
            std::process::Command::new(assert_cmd::cargo::cargo_bin("snap"))
                .env_remove("SNAP_REPO")
                .env("SNAP_CACHE_DIR", env.cache())
                .args(["--repo", env.repo().to_str().unwrap(), "--quiet", "backup"])
                .arg(p)
                .output()
                .unwrap()
        };
        let (ra, rb) = std::thread::scope(|s| {
            let ha = s.spawn(|| spawn(&a));
            let hb = s.spawn(|| spawn(&b));
            (ha.join().unwrap(), hb.join().unwrap())
        });
        assert!(
            ra.status.success(),
            "{}",
            String::from_utf8_lossy(&ra.stderr)
        );
        assert!(
            rb.status.success(),
            "{}",
            String::from_utf8_lossy(&rb.stderr)
        );
        let snaps = env.snapshots();
        assert_eq!(snaps.len(), 2);
        for s in &snaps {
            let out = env.path(&format!("out-{}", s["short_id"].as_str().unwrap()));
            env.restore(s["id"].as_str().unwrap(), &out);
        }
    }
}

mod ux {
    use super::*;

    /// A --repo that is a file is said to be one, not reported as a raw errno.
    #[test]
    fn a_repository_path_that_is_a_file_is_named_as_such() {
        let env = Env::new();
        let file = env.path("notes.txt");
        fs::write(&file, b"x").unwrap();
        util::snap_bin()
            .args(["--repo", file.to_str().unwrap(), "list"])
            .assert()
            .code(1)
            .stderr(
                predicate::str::contains("it is not a directory; point --repo or SNAP_REPO")
                    .and(predicate::str::contains("os error").not()),
            );
    }

    /// `init` of an unencrypted repository says so to a person at a terminal (run
    /// under `script`, which gives it one), and says nothing more to a script.
    #[test]
    fn init_says_unencrypted_on_a_terminal_only() {
        let env = Env::new();
        let (a, b) = (env.path("a"), env.path("b"));
        let bin = env!("CARGO_BIN_EXE_snap");
        let line = format!("{bin} --repo {} init", a.display());
        let Ok(out) = std::process::Command::new("script")
            .args(["-qec", &line, "/dev/null"])
            .env("SNAP_CACHE_DIR", env.path("cache"))
            .output()
        else {
            util::missing("script, to give snap a terminal", "Debian's bsdutils");
            return;
        };
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{text}");
        assert!(
            text.contains("not encrypted") && text.contains("snap init --encrypt"),
            "{text}"
        );
        let piped = util::snap_bin()
            .env("SNAP_CACHE_DIR", env.path("cache"))
            .args(["--repo", b.to_str().unwrap(), "init"])
            .output()
            .unwrap();
        assert!(piped.status.success(), "{piped:?}");
        assert!(
            piped.stderr.is_empty(),
            "{}",
            String::from_utf8_lossy(&piped.stderr)
        );
    }

    #[test]
    fn default_repository_is_created_on_first_backup() {
        let env = Env::new();
        let data = env.path("data");
        fs::create_dir_all(&data).unwrap();
        fs::write(data.join("f"), b"x").unwrap();
        let home = env.path("home");
        let mut c = util::snap_bin();
        c.env_remove("SNAP_REPO")
            .env_remove("XDG_DATA_HOME")
            .env("HOME", &home)
            .args(["backup"])
            .arg(&data)
            .assert()
            .success()
            .stderr(predicate::str::contains("created a new repository at"))
            .stdout(predicate::str::contains("snapshot"));
        assert!(home.join(".local/share/snap/repo/config").exists());
    }

    /// One error path: what to run, and what its message must name.
    struct Case {
        what: &'static str,
        args: Vec<String>,
        env: Vec<(&'static str, String)>,
        code: i32,
        says: Vec<String>,
    }

    /// Every error path the README documents, through the binary: the exit code, a
    /// message naming the file or source and what to do, no panic or debug output,
    /// and nothing recorded.
    #[test]
    fn every_documented_error_path_is_one_clear_message_and_records_nothing() {
        let env = Env::new();
        env.init();
        let repo = env.repo().display().to_string();
        let src = env.path("src");
        fs::create_dir_all(&src).unwrap();
        fs::write(src.join("a.txt"), b"a").unwrap();
        env.backup_json(&[src.to_str().unwrap()]);
        let enc = env.path("enc");
        util::snap_bin()
            .env("SNAP_PASSWORD", "right")
            .args(["--repo", enc.to_str().unwrap(), "init", "--encrypt"])
            .assert()
            .success();
        let empty = env.path("empty");
        let locked = env.path("locked");
        for r in [&empty, &locked] {
            crate::util::snap_bin()
                .args(["--repo", r.to_str().unwrap(), "init"])
                .assert()
                .success();
        }
        let lock_file = locked.join("locks/0123456789abcdef.json");
        fs::write(
            &lock_file,
            serde_json::to_vec(&json!({
                "host": "db-host-7", "pid": 4242, "time": chrono_now(), "exclusive": true,
                "purpose": "prune",
            }))
            .unwrap(),
        )
        .unwrap();
        let future = env.path("future");
        fs::create_dir_all(&future).unwrap();
        let mut config: serde_json::Value =
            serde_json::from_slice(&fs::read(env.repo().join("config")).unwrap()).unwrap();
        config["version"] = json!(99);
        fs::write(future.join("config"), config.to_string()).unwrap();
        let not_zip = env.path("20261121-020000.ngwbackup");
        fs::write(&not_zip, b"not a zip at all").unwrap();
        let a_file = env.path("a-file");
        fs::write(&a_file, b"x").unwrap();
        let toml = env.path("snap.toml");
        fs::write(
            &toml,
            "[profile.app]\nrepository = \"/x\"\nkeep_daily = 7\n",
        )
        .unwrap();
        let good_toml = env.path("good.toml");
        fs::write(&good_toml, "[profile.app]\nrepository = \"/x\"\n").unwrap();
        let p = |x: &Path| x.display().to_string();
        let case = |what, args: &[&str], code, says: &[&str]| Case {
            what,
            args: args.iter().map(std::string::ToString::to_string).collect(),
            env: vec![],
            code,
            says: says.iter().map(std::string::ToString::to_string).collect(),
        };
        let on = |r: &Path, rest: &[&str]| -> Vec<String> {
            ["--repo".to_string(), p(r)]
                .into_iter()
                .chain(rest.iter().map(std::string::ToString::to_string))
                .collect()
        };
        let mut cases = vec![
            case("usage", &["restore", "latest"], 2, &["--target"]),
            case("init twice", &["init"], 1, &["already a snap repository"]),
            case(
                "missing source",
                &["backup", "/nonexistent/path"],
                1,
                &[
                    "/nonexistent/path",
                    "check the path",
                    "nothing was recorded",
                ],
            ),
            case(
                "failing command",
                &[
                    "backup",
                    "--command",
                    "echo part; echo boom >&2; exit 4",
                    "--as",
                    "x.sql",
                ],
                1,
                &["exited with status 4", "boom"],
            ),
            case(
                "missing program",
                &["backup", "--command", "no-such-dumper", "--as", "x.sql"],
                1,
                &["127", "not found"],
            ),
            case(
                "--command without --as",
                &["backup", "--command", "echo"],
                1,
                &["--as"],
            ),
            case(
                "unknown snapshot",
                &["restore", "0000dead", "--target", "/tmp/x"],
                1,
                &["0000dead", "snap list"],
            ),
            case(
                "missing path in a snapshot",
                &["cat", "latest", "no/such/file"],
                1,
                &["no/such/file", "snap ls"],
            ),
            case(
                "restore target is a file",
                &["restore", "latest", "--target", &p(&a_file)],
                1,
                &[&p(&a_file), "not a directory"],
            ),
            case("forget without a policy", &["forget"], 1, &["refusing"]),
            case(
                "export without NGW",
                &["export", "latest"],
                1,
                &["no NextGIS Web instance"],
            ),
            case(
                "import of a damaged archive",
                &["import", &p(&not_zip)],
                1,
                &[&p(&not_zip), "not a readable ZIP"],
            ),
            case(
                "key on a plain repository",
                &["key", "list"],
                1,
                &["not encrypted"],
            ),
            case(
                "sync to an SSH host that is down",
                &["sync", "--to", "sftp://nobody@127.0.0.1:1/x"],
                1,
                &["sftp://nobody@127.0.0.1:1/x", "Connection refused"],
            ),
        ];
        cases.extend([
            Case {
                what: "no repository",
                args: on(&env.path("nothing"), &["list"]),
                env: vec![],
                code: 1,
                says: vec![p(&env.path("nothing")), "snap init".into()],
            },
            Case {
                what: "encrypted, no passphrase",
                args: on(&enc, &["list"]),
                env: vec![],
                code: 1,
                says: vec![p(&enc), "SNAP_PASSWORD".into()],
            },
            Case {
                what: "wrong passphrase",
                args: on(&enc, &["list"]),
                env: vec![("SNAP_PASSWORD", "wrong".into())],
                code: 1,
                says: vec!["wrong passphrase".into(), p(&enc.join("keys"))],
            },
            Case {
                what: "max-age on an empty repository",
                args: on(&empty, &["check", "--max-age", "26h"]),
                env: vec![],
                code: 1,
                says: vec![p(&empty), "snap backup".into()],
            },
            Case {
                what: "locked",
                args: on(&locked, &["backup", src.to_str().unwrap()]),
                env: vec![],
                code: 1,
                says: vec!["db-host-7".into(), p(&lock_file), "rerun".into()],
            },
            Case {
                what: "newer repository version",
                args: on(&future, &["list"]),
                env: vec![],
                code: 1,
                says: vec!["version 99".into(), "upgrade snap".into()],
            },
            Case {
                what: "S3 without credentials",
                args: on(
                    &env.repo(),
                    &[
                        "sync",
                        "--to",
                        "s3://bucket/x",
                        "--endpoint",
                        "http://127.0.0.1:1",
                    ],
                ),
                env: vec![],
                code: 1,
                says: vec!["s3://bucket/x".into(), "AWS_ACCESS_KEY_ID".into()],
            },
            Case {
                what: "S3 prefix with a dot part",
                args: vec!["--repo".into(), "s3://bucket/./x".into(), "list".into()],
                env: vec![],
                code: 1,
                says: vec!["s3://bucket/./x".into(), "`.` or `..`".into()],
            },
            Case {
                what: "configuration with a wrong key",
                args: vec!["--config".into(), p(&toml), "run".into(), "app".into()],
                env: vec![],
                code: 1,
                says: vec![p(&toml), "line 3".into(), "keep_daily".into()],
            },
            Case {
                what: "unknown profile",
                args: vec![
                    "--config".into(),
                    p(&good_toml),
                    "run".into(),
                    "nosuch".into(),
                ],
                env: vec![],
                code: 1,
                says: vec!["nosuch".into(), "defined: app".into()],
            },
            Case {
                what: "pg_dump not installed",
                args: on(
                    &env.repo(),
                    &["backup", "--pg", "host=/nonexistent dbname=x"],
                ),
                env: vec![("PATH", "/nonexistent".into())],
                code: 1,
                says: vec!["pg_dump was not found".into(), "postgresql-client".into()],
            },
        ]);
        let snapshots = env.snapshots();
        for c in &cases {
            let mut cmd = util::snap_bin();
            cmd.env_remove("SNAP_REPO")
                .env_remove("SNAP_PASSWORD")
                .env_remove("SNAP_PASSWORD_FILE")
                .env_remove("SNAP_CONFIG")
                .env_remove("AWS_ACCESS_KEY_ID")
                .env_remove("AWS_SECRET_ACCESS_KEY")
                .env_remove("AWS_PROFILE")
                .env("AWS_CONFIG_FILE", "/nonexistent")
                .env("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent")
                .env("AWS_EC2_METADATA_DISABLED", "true")
                .env("SNAP_CACHE_DIR", env.path("cache"));
            if !c.args.iter().any(|a| a == "--repo" || a == "--config") {
                cmd.args(["--repo", &repo]);
            }
            let out = cmd
                .args(&c.args)
                .envs(c.env.iter().map(|(k, v)| (*k, v.as_str())))
                .write_stdin("")
                .timeout(Duration::from_secs(60))
                .output()
                .unwrap();
            let err = String::from_utf8_lossy(&out.stderr);
            assert_eq!(out.status.code(), Some(c.code), "{}: {err}", c.what);
            let first = if c.code == 2 {
                "snap: error: "
            } else {
                "snap: "
            };
            assert!(err.starts_with(first), "{}: {err}", c.what);
            for s in &c.says {
                assert!(err.contains(s.as_str()), "{}: {err:?} lacks {s:?}", c.what);
            }
            for bad in [
                "panicked",
                "RUST_BACKTRACE",
                "Os {",
                "Custom {",
                "kind: ",
                "context: {",
            ] {
                assert!(
                    !err.contains(bad),
                    "{}: debug output {bad:?}: {err}",
                    c.what
                );
            }
            assert!(
                out.stdout.is_empty(),
                "{}: printed {:?}",
                c.what,
                out.stdout
            );
        }
        assert_eq!(
            env.snapshots(),
            snapshots,
            "a failed command recorded a snapshot"
        );
    }

    /// `snap list | head`: a reader that goes away is no error and no panic.
    #[test]
    fn a_closed_output_pipe_ends_quietly() {
        let env = Env::new();
        env.init();
        fs::create_dir_all(env.path("src")).unwrap();
        env.backup_json(&[env.path("src").to_str().unwrap()]);
        for args in [&["list"][..], &["list", "--json"], &["stats"]] {
            let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_snap"))
                .arg("--repo")
                .arg(env.repo())
                .args(args)
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap();
            drop(child.stdout.take());
            let out = child.wait_with_output().unwrap();
            let err = String::from_utf8_lossy(&out.stderr);
            assert_eq!(out.status.code(), Some(0), "{args:?}: {err}");
            assert!(!err.contains("panicked"), "{args:?}: {err}");
        }
    }

    /// A file written to in place while it is read (same size: a database file, a VM
    /// image) may be stored part old, part new: named, exit 3, and read again by the
    /// next backup.
    #[test]
    fn a_file_written_to_while_read_is_named_and_read_again() {
        use std::os::unix::fs::FileExt;
        use std::sync::atomic::{AtomicBool, Ordering};
        let env = Env::new();
        env.init();
        let src = env.path("src");
        fs::create_dir_all(&src).unwrap();
        let file = src.join("db");
        fs::write(&file, util::random_bytes(64 << 20, "db")).unwrap();
        let stop = std::sync::Arc::new(AtomicBool::new(false));
        let writer = {
            let (stop, file) = (stop.clone(), file.clone());
            std::thread::spawn(move || {
                let f = fs::OpenOptions::new().write(true).open(&file).unwrap();
                let mut at = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    f.write_at(b"new", at % (64 << 20)).unwrap();
                    at += 1 << 20;
                    std::thread::sleep(std::time::Duration::from_millis(1));
                }
            })
        };
        let out = env
            .snap(&["backup", src.to_str().unwrap()])
            .output()
            .unwrap();
        stop.store(true, Ordering::Relaxed);
        writer.join().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(3), "{err}");
        assert!(err.contains("db: written to while being read"), "{err}");
        let again = env.backup_json(&[src.to_str().unwrap()]);
        assert_eq!(again["summary"]["files_read"], 1, "{again}");
    }

    /// `snap backup 2>&1 | head -1`: a closed stderr neither panics nor stops the
    /// backup (its warnings go nowhere).
    #[test]
    fn a_closed_error_pipe_does_not_stop_a_backup() {
        let env = Env::new();
        env.init();
        fs::create_dir_all(env.path("real")).unwrap();
        symlink("real", env.path("link")).unwrap();
        let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_snap"))
            .arg("--repo")
            .arg(env.repo())
            .args(["backup", env.path("link").to_str().unwrap()])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        drop(child.stderr.take());
        assert_eq!(child.wait().unwrap().code(), Some(0));
        assert_eq!(env.snapshots().len(), 1);
    }

    /// `snap cat ... | ssh host 'cat > copy'` with the link gone: the data did not
    /// arrive whole, and snap says so with exit 1.
    #[test]
    fn a_closed_pipe_cutting_a_file_or_archive_is_an_error() {
        let env = Env::new();
        env.init();
        let src = env.path("src");
        fs::create_dir_all(&src).unwrap();
        fs::write(src.join("big"), util::random_bytes(4 << 20, "big")).unwrap();
        env.backup_json(&[src.to_str().unwrap()]);
        let file = format!("{}/big", src.display());
        let dir = src.display().to_string();
        for args in [&["cat", "latest", &file][..], &["dump", "latest", &dir]] {
            let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_snap"))
                .arg("--repo")
                .arg(env.repo())
                .args(args)
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap();
            drop(child.stdout.take());
            let out = child.wait_with_output().unwrap();
            let err = String::from_utf8_lossy(&out.stderr);
            assert_eq!(out.status.code(), Some(1), "{args:?}: {err}");
            assert!(err.contains("incomplete"), "{args:?}: {err}");
        }
    }

    /// Now as a lock file writes it.
    fn chrono_now() -> String {
        let out = std::process::Command::new("date")
            .args(["-u", "+%Y-%m-%dT%H:%M:%S.%NZ"])
            .output()
            .unwrap();
        String::from_utf8(out.stdout).unwrap().trim().to_string()
    }

    #[test]
    fn unreadable_file_is_a_warning_with_exit_3() {
        if rustix::process::geteuid().is_root() {
            // root reads everything; make the file vanish-proof unreadable another way
            return unreadable_as_root();
        }
        let env = Env::new();
        env.init();
        let src = env.path("src");
        fs::create_dir_all(&src).unwrap();
        fs::write(src.join("ok"), b"fine").unwrap();
        fs::write(src.join("locked"), b"secret").unwrap();
        fs::set_permissions(src.join("locked"), fs::Permissions::from_mode(0o000)).unwrap();
        env.snap(&["backup", src.to_str().unwrap()])
            .assert()
            .code(3)
            .stderr(predicate::str::contains("locked"));
        assert_eq!(env.snapshots().len(), 1);
    }

    /// As root, a directory that vanishes is not available, but a FIFO replacing a file
    /// must not hang: a source FIFO is recorded, never opened.
    fn unreadable_as_root() {
        let env = Env::new();
        env.init();
        let src = env.path("src");
        fs::create_dir_all(&src).unwrap();
        rustix::fs::mknodat(
            rustix::fs::CWD,
            src.join("pipe"),
            rustix::fs::FileType::Fifo,
            rustix::fs::Mode::from_raw_mode(0o600),
            0,
        )
        .unwrap();
        env.snap(&["backup", src.to_str().unwrap()])
            .timeout(Duration::from_secs(60))
            .assert()
            .success();
        let p = format!("{}/pipe", src.display());
        env.snap(&["ls", "latest", &p])
            .assert()
            .success()
            .stdout(predicate::str::starts_with("p"));
    }

    /// A directory the backup cannot list is kept, empty, with its mode (as restic
    /// keeps it), named with exit 3, and made again by a restore; a named source
    /// that cannot be listed fails the run and says what to do. Run as `nobody`
    /// (root lists everything), so only as root.
    #[test]
    fn an_unlistable_directory_is_kept_empty_and_named() {
        if !rustix::process::geteuid().is_root() {
            return;
        }
        let base = tempfile::Builder::new().tempdir_in("/tmp").unwrap();
        let dir = base.path();
        let src = dir.join("src");
        fs::create_dir_all(src.join("locked")).unwrap();
        fs::write(src.join("locked/inner"), b"secret").unwrap();
        fs::write(src.join("ok"), b"fine").unwrap();
        let chown = |p: &Path| {
            std::process::Command::new("chown")
                .args(["-R", "65534:65534"])
                .arg(p)
                .status()
                .unwrap()
        };
        fs::set_permissions(dir, fs::Permissions::from_mode(0o755)).unwrap();
        assert!(chown(dir).success());
        fs::set_permissions(src.join("locked"), fs::Permissions::from_mode(0o000)).unwrap();
        let as_nobody = |args: &[&str]| {
            let mut c = assert_cmd::Command::new("setpriv");
            c.args(["--reuid=65534", "--regid=65534", "--clear-groups"])
                .arg(util::snap_bin().get_program())
                .arg("--repo")
                .arg(dir.join("repo"))
                .args(args)
                .env("SNAP_CACHE_DIR", dir.join("cache"))
                .env_remove("SNAP_REPO");
            c
        };
        as_nobody(&["init"]).assert().success();
        as_nobody(&["backup", src.to_str().unwrap()])
            .assert()
            .code(3)
            .stderr(
                predicate::str::contains("locked: Permission denied")
                    .and(predicate::str::contains("stored as an empty directory")),
            );
        let locked = format!("{}/locked", src.display());
        as_nobody(&["ls", "latest", &locked])
            .assert()
            .success()
            .stdout(predicate::str::starts_with("d---------"));
        as_nobody(&["backup", &locked])
            .assert()
            .code(1)
            .stderr(predicate::str::contains(
                "run snap as a user who can read it",
            ));
    }

    /// `/srv/data -> /mnt/disk1/data` named as the source: only the link goes in (as
    /// in restic and borg), and snap says so instead of saving an empty backup quietly.
    #[test]
    fn a_source_that_is_a_symlink_to_a_directory_is_named() {
        let env = Env::new();
        env.init();
        fs::create_dir_all(env.path("real")).unwrap();
        fs::write(env.path("real/f"), b"f").unwrap();
        symlink("real", env.path("link")).unwrap();
        env.snap(&["backup", env.path("link").to_str().unwrap()])
            .assert()
            .success()
            .stderr(predicate::str::contains(
                "is a symlink to the directory real",
            ));
    }

    #[test]
    fn dot_dot_in_a_source_path_is_resolved() {
        let env = Env::new();
        env.init();
        fs::create_dir_all(env.path("a/b")).unwrap();
        fs::create_dir_all(env.path("x")).unwrap();
        fs::write(env.path("x/f"), b"f").unwrap();
        env.snap(&["backup", "../../x"])
            .current_dir(env.path("a/b"))
            .assert()
            .success();
        let want = format!("{}/f", env.path("x").display());
        env.snap(&["cat", "latest", &want])
            .assert()
            .success()
            .stdout("f");
        assert_eq!(
            env.snapshots()[0]["sources"][0]["path"],
            env.path("x").display().to_string()
        );
    }

    #[test]
    fn excludes_leave_entries_out() {
        let env = Env::new();
        env.init();
        let src = env.path("src");
        fs::create_dir_all(src.join("cache")).unwrap();
        fs::write(src.join("keep.txt"), b"k").unwrap();
        fs::write(src.join("drop.tmp"), b"d").unwrap();
        fs::write(src.join("cache/x"), b"c").unwrap();
        let cache_glob = format!("{}/cache", src.display());
        env.backup_json(&[
            src.to_str().unwrap(),
            "--exclude",
            "*.tmp",
            "--exclude",
            &cache_glob,
        ]);
        let out = env.snap(&["ls", "latest"]).output().unwrap();
        let listing = String::from_utf8_lossy(&out.stdout);
        assert!(listing.contains("keep.txt"));
        assert!(
            !listing.contains("drop.tmp") && !listing.contains("cache"),
            "{listing}"
        );
    }
}

mod db {
    use super::*;
    use util::missing;
    use util::pg::Pg;

    fn fill(pg: &Pg, db: &str) {
        pg.sql(
            db,
            "CREATE TABLE orders (id serial PRIMARY KEY, customer text, total numeric, note text);
             INSERT INTO orders (customer, total, note)
               SELECT 'customer ' || i, i * 1.5, md5(i::text) FROM generate_series(1, 50000) i;
             CREATE TABLE items (id int PRIMARY KEY, name text);
             INSERT INTO items SELECT i, 'item ' || i FROM generate_series(1, 2000) i;
             CREATE VIEW big_orders AS SELECT * FROM orders WHERE total > 1000;",
        );
    }

    fn failing(env: &Env, args: &[&str]) -> String {
        let out = env.snap(args).output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        assert_eq!(out.status.code(), Some(1), "{args:?}: {err}");
        err
    }

    #[test]
    fn pg_dumps_dedup_and_restore_each_day_into_fresh_databases() {
        let Some(pg) = Pg::start() else { return };
        let env = Env::new();
        env.init();
        pg.createdb("shop");
        fill(&pg, "shop");
        // A password in the DSN goes to pg_dump through its environment and is never
        // recorded (the test cluster trusts, so any password works).
        let dsn = format!("{} password=hunter2", pg.dsn("shop"));
        let day1 = env.backup_json(&["--pg", &dsn]);
        let dump1 = pg.dump("shop", &[]);
        let ls = env.snap(&["ls", "latest", "db/shop"]).output().unwrap();
        assert!(String::from_utf8_lossy(&ls.stdout).contains("toc.dat"));
        let record = fs::read_dir(env.repo().join("snapshots"))
            .unwrap()
            .next()
            .unwrap()
            .unwrap();
        let text = fs::read_to_string(record.path()).unwrap();
        assert!(
            text.contains("\"kind\": \"pg\"") && !text.contains("hunter2"),
            "{text}"
        );

        // Day two: updates, inserts, deletes, a new table.
        pg.sql(
            "shop",
            "UPDATE orders SET note = 'changed' WHERE id % 5000 = 0;
             INSERT INTO orders (customer, total, note)
               SELECT 'customer ' || i, i * 1.5, md5(i::text) FROM generate_series(50001, 50500) i;
             DELETE FROM orders WHERE id BETWEEN 100 AND 120;
             CREATE TABLE refunds (id int, reason text); INSERT INTO refunds VALUES (1, 'late');",
        );
        let day2 = env.backup_json(&["--pg", &dsn]);
        // diff names the tables whose data changed, and the new one; the toc changed.
        let diff = env
            .snap(&["diff", day1["id"].as_str().unwrap(), "latest"])
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&diff.stdout);
        assert!(
            diff.status.success()
                && text.contains("(table public.orders)")
                && text.contains("(table public.refunds)")
                && text.contains("M /db/shop/toc.dat"),
            "{text}"
        );
        let (a1, a2) = (
            day1["summary"]["bytes_added"].as_u64().unwrap(),
            day2["summary"]["bytes_added"].as_u64().unwrap(),
        );
        assert!(a2 * 3 < a1, "day two added {a2} bytes, day one {a1}");
        let dump2 = pg.dump("shop", &[]);

        // Each snapshot restores into a database of its own, created by snap.
        let first = day1["id"].as_str().unwrap();
        env.snap(&["restore", first, "--pg", &pg.dsn("copy1")])
            .assert()
            .success();
        assert_eq!(pg.dump("copy1", &[]), dump1);
        env.snap(&["restore", "latest", "--pg", &pg.dsn("copy2")])
            .assert()
            .success();
        assert_eq!(pg.dump("copy2", &[]), dump2);

        // A database with tables is not overwritten without --yes.
        let err = failing(&env, &["restore", first, "--pg", &pg.dsn("copy2")]);
        assert!(
            err.contains("is not empty") && err.contains("--yes"),
            "{err}"
        );
        assert_eq!(pg.dump("copy2", &[]), dump2);
        env.snap(&["restore", first, "--pg", &pg.dsn("copy2"), "--yes"])
            .assert()
            .success();
        assert!(pg.dump("copy2", &[]).contains("customer 1\t"));

        // Failures record nothing and quote the tool.
        let err = failing(&env, &["backup", "--pg", &pg.dsn("nosuchdb")]);
        assert!(err.contains("pg_dump") && err.contains("nosuchdb"), "{err}");
        let err = env
            .snap(&["backup", "--pg", &dsn])
            .env("PATH", "/nonexistent")
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&err.stderr);
        assert!(
            text.contains("pg_dump was not found") && text.contains("postgresql-client"),
            "{text}"
        );
        assert_eq!(env.snapshots().len(), 2);
    }

    #[test]
    fn pg_dumpall_moves_a_cluster_with_its_roles() {
        let Some(src) = Pg::start() else { return };
        let Some(dst) = Pg::start() else { return };
        let env = Env::new();
        env.init();
        src.sql("postgres", "CREATE ROLE shopkeeper LOGIN");
        for db in ["shop", "Other DB"] {
            src.sql(
                "postgres",
                &format!("CREATE DATABASE \"{db}\" OWNER shopkeeper"),
            );
            fill(&src, db);
        }
        env.backup_json(&["--pg-all", &format!("host={} user=postgres", src.sock())]);
        let cluster = format!("host={} user=postgres", dst.sock());
        env.snap(&["restore", "latest", "--pg-all", &cluster])
            .assert()
            .success();
        for db in ["shop", "Other DB"] {
            assert_eq!(dst.dump(db, &[]), src.dump(db, &[]), "{db}");
        }
        assert_eq!(
            dst.sql(
                "postgres",
                "SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = 'shop'"
            )
            .trim(),
            "shopkeeper"
        );
        // Again: the databases exist now.
        let err = failing(&env, &["restore", "latest", "--pg-all", &cluster]);
        assert!(
            err.contains("Other DB") && err.contains("shop") && err.contains("--yes"),
            "{err}"
        );
        dst.sql("shop", "DELETE FROM items");
        env.snap(&["restore", "latest", "--pg-all", &cluster, "--yes"])
            .assert()
            .success();
        assert_eq!(dst.dump("shop", &[]), src.dump("shop", &[]));
        // A dump cut short is refused before the databases it would replace go.
        let cut = format!("pg_dumpall -h {} -U postgres | head -c 4000", src.sock());
        env.snap(&["backup", "--command", &cut, "--as", "db/cut.sql"])
            .assert()
            .success();
        let err = failing(
            &env,
            &[
                "restore",
                "latest",
                "db/cut.sql",
                "--pg-all",
                &cluster,
                "--yes",
            ],
        );
        assert!(
            err.contains("db/cut.sql")
                && err.contains("cut short")
                && err.contains("nothing was changed"),
            "{err}"
        );
        assert_eq!(dst.dump("shop", &[]), src.dump("shop", &[]));
    }

    /// A Python with Django, or None (said, or a failure in CI).
    fn django_python() -> Option<&'static str> {
        let found = ["python3", "/usr/bin/python3"].into_iter().find(|p| {
            std::process::Command::new(p)
                .args(["-c", "import django"])
                .output()
                .is_ok_and(|o| o.status.success())
        });
        if found.is_none() {
            missing("Django", "Debian: apt-get install python3-django");
        }
        found
    }

    #[test]
    fn django_dumpdata_goes_in_and_loaddata_gets_it_back() {
        let Some(py) = django_python() else { return };
        let env = Env::new();
        env.init();
        let run = |args: &[&str], dir: &Path| {
            let out = std::process::Command::new(py)
                .args(args)
                .current_dir(dir)
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "{args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            String::from_utf8(out.stdout).unwrap()
        };
        run(&["-m", "django", "startproject", "site1"], env.dir.path());
        let site = env.path("site1");
        run(&["manage.py", "migrate", "-v", "0"], &site);
        run(
            &[
                "manage.py",
                "shell",
                "-c",
                "from django.contrib.auth.models import User, Group\n\
               g = Group.objects.create(name='editors')\n\
               for i in range(50): User.objects.create(username=f'user{i}').groups.add(g)",
            ],
            &site,
        );
        let count = "from django.contrib.auth.models import User; print(User.objects.filter(groups__name='editors').count())";
        assert_eq!(
            run(&["manage.py", "shell", "-c", count], &site).trim(),
            "50"
        );
        let cmd = format!(
            "cd '{}' && {py} manage.py dumpdata --natural-foreign --natural-primary --indent 1 auth",
            site.display()
        );
        env.backup_json(&["--command", &cmd, "--as", "django/data.json"]);

        run(&["manage.py", "flush", "--noinput"], &site);
        assert_eq!(run(&["manage.py", "shell", "-c", count], &site).trim(), "0");
        let load = format!(
            "cd '{}' && {py} manage.py loaddata --format=json -",
            site.display()
        );
        env.snap(&["restore", "latest", "--pipe", &load, "django/data.json"])
            .assert()
            .success();
        assert_eq!(
            run(&["manage.py", "shell", "-c", count], &site).trim(),
            "50"
        );
    }

    #[test]
    fn directory_writing_commands_mongodump_and_compressed_output() {
        let env = Env::new();
        env.init();
        // The command-dir path, as mongodump --out {dir} uses it.
        let v = env.backup_json(&[
            "--command-dir",
            "mkdir {dir}/shop && printf 'bson' > {dir}/shop/orders.bson && echo '{}' > {dir}/shop/orders.metadata.json",
            "--as",
            "mongo",
            "--command",
            "echo plain",
            "--as",
            "plain.txt",
        ]);
        let s = &v["summary"];
        assert_eq!(
            (&s["files"], &s["dirs"], &s["bytes_total"]),
            (&3.into(), &2.into(), &13.into()),
            "{s}"
        );
        let out = env.path("out.bson");
        env.snap(&[
            "restore",
            "latest",
            "--pipe",
            &format!("cat > '{}'", out.display()),
            "mongo/shop/orders.bson",
        ])
        .assert()
        .success();
        assert_eq!(fs::read(&out).unwrap(), b"bson");
        let err = failing(&env, &["backup", "--command-dir", "true", "--as", "x"]);
        assert!(err.contains("{dir}"), "{err}");
        let err = failing(&env, &["backup", "--command", "true"]);
        assert!(err.contains("--as"), "{err}");

        // mongodump is not faked: without it, the message says where it comes from and
        // the password stays out of the error.
        let err = env
            .snap(&["backup", "--mongo", "mongodb://app:s3cret@127.0.0.1:1/shop"])
            .env("PATH", "/nonexistent")
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&err.stderr);
        assert_eq!(err.status.code(), Some(1));
        assert!(
            text.contains("mongodump was not found")
                && text.contains("mongodb-database-tools")
                && !text.contains("s3cret"),
            "{text}"
        );

        // Compressed output is stored but warned about.
        env.snap(&["backup", "--command", "echo data | gzip", "--as", "x.gz"])
            .assert()
            .success()
            .stderr(predicate::str::contains("gzip-compressed"));
        assert_eq!(env.snapshots().len(), 2);
    }
}
