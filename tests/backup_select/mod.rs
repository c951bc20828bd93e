//! `snap backup`'s selection options through the real binary: `--dry-run` writes
//! nothing, `--one-file-system` stops at a real mount point, exclude lists, path lists,
//! cache tags, marker files and sizes leave out what they say (and nothing is a
//! warning), and a list that cannot be read fails the run before it records anything.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

use predicates::prelude::*;

use crate::util::{json, random_bytes, Env};

/// The paths the latest snapshot holds below `under`, relative to it.
fn listed(env: &Env, under: &Path) -> BTreeSet<String> {
    let out = env
        .snap(&["ls", "--json", "latest", under.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .filter_map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            let p = PathBuf::from(v["path"].as_str().unwrap());
            let rel = p.strip_prefix(under).ok()?.to_str()?.to_string();
            (!rel.is_empty()).then_some(rel)
        })
        .collect()
}

fn set(paths: &[&str]) -> BTreeSet<String> {
    paths.iter().map(ToString::to_string).collect()
}

/// Every file below `dir` with its bytes.
fn files_of(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut out = BTreeMap::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                todo.push(p);
            } else {
                out.insert(p.clone(), fs::read(&p).unwrap());
            }
        }
    }
    out
}

/// A backup with `--json` and `args`, which must succeed without warnings.
fn backup_clean(env: &Env, args: &[&str]) -> serde_json::Value {
    let out = env.backup_json(args);
    assert_eq!(out["warnings"], serde_json::json!([]), "{out}");
    out
}

#[test]
fn dry_run_reads_and_reports_what_it_would_add_and_writes_nothing() {
    let env = Env::new();
    env.init();
    let src = env.path("src");
    fs::create_dir_all(src.join("d")).unwrap();
    fs::write(src.join("old.bin"), random_bytes(1 << 20, "old")).unwrap();
    let s = src.to_str().unwrap();
    backup_clean(&env, &[s]);
    // More than a pack (32 MiB): a saver that stored would commit one.
    let new = random_bytes(34 << 20, "new");
    fs::write(src.join("d/new.bin"), &new).unwrap();
    fs::write(src.join("d/copy.bin"), &new).unwrap();
    let before = files_of(&env.repo());

    let dry = json(env.snap(&["backup", "--dry-run", "--json", s]));
    assert_eq!(dry["dry_run"], true, "{dry}");
    let sum = &dry["summary"];
    assert_eq!(sum["files"], 3, "{dry}");
    let read = sum["bytes_read"].as_u64().unwrap();
    assert!(read >= 68 << 20, "both new files are read: {dry}");
    let new_raw = sum["bytes_added_raw"].as_u64().unwrap();
    assert!(
        (34 << 20..(34 << 20) + (64 << 10)).contains(&new_raw),
        "the copy and the old file are known: {dry}"
    );
    assert!(
        files_of(&env.repo()) == before,
        "the repository is unchanged"
    );
    assert_eq!(env.snapshots().len(), 1);
    env.snap(&["backup", "-n", s])
        .assert()
        .success()
        .stdout(predicate::str::starts_with(
            "dry run, nothing written: 3 files",
        ));
    assert!(
        files_of(&env.repo()) == before,
        "the repository is unchanged"
    );

    // The real run adds what the dry run said, but the directories above the source.
    let real = backup_clean(&env, &[s]);
    let added = real["summary"]["bytes_added_raw"].as_u64().unwrap();
    assert!(
        added >= new_raw && added - new_raw < 4 << 10,
        "dry {new_raw}, real {added}"
    );
    assert_eq!(env.snapshots().len(), 2);
}

/// A tmpfs mounted inside the test's directory, unmounted when dropped.
struct Mount(PathBuf);

impl Mount {
    fn tmpfs(at: &Path) -> Option<Mount> {
        fs::create_dir_all(at).unwrap();
        let ok = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "snap-test", at.to_str().unwrap()])
            .status()
            .is_ok_and(|s| s.success());
        ok.then(|| Mount(at.to_path_buf()))
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg(&self.0).status();
    }
}

#[test]
fn one_file_system_stores_a_mount_point_empty() {
    let env = Env::new();
    env.init();
    let src = env.path("src");
    fs::create_dir_all(src.join("d")).unwrap();
    fs::write(src.join("d/here.txt"), b"here").unwrap();
    let Some(_mount) = Mount::tmpfs(&src.join("mnt")) else {
        eprintln!("SKIPPED: mounting a tmpfs needs root (CAP_SYS_ADMIN)");
        return;
    };
    fs::create_dir(src.join("mnt/sub")).unwrap();
    fs::write(src.join("mnt/sub/there.txt"), b"there").unwrap();
    let s = src.to_str().unwrap();

    backup_clean(&env, &[s]);
    let all = set(&["d", "d/here.txt", "mnt", "mnt/sub", "mnt/sub/there.txt"]);
    assert_eq!(listed(&env, &src), all);
    for flag in ["--one-file-system", "-x"] {
        let out = backup_clean(&env, &[flag, s]);
        assert_eq!(out["summary"]["files"], 1, "{out}");
        assert_eq!(listed(&env, &src), set(&["d", "d/here.txt", "mnt"]));
    }
    // The mount point comes back as an empty directory.
    let target = env.path("target");
    env.restore("latest", &target);
    let mnt = crate::util::restored(&target, &src.join("mnt"));
    assert!(mnt.is_dir());
    assert_eq!(fs::read_dir(&mnt).unwrap().count(), 0);
}

#[test]
fn exclude_files_and_excludes_relative_to_the_working_directory() {
    let env = Env::new();
    env.init();
    let src = env.path("src");
    for d in ["build/obj", "logs", "tmp", "keep/build"] {
        fs::create_dir_all(src.join(d)).unwrap();
    }
    for f in [
        "a.txt",
        "build/obj/x.o",
        "logs/today.log",
        "tmp/t",
        "keep/build/b.txt",
        "keep/note.log",
    ] {
        fs::write(src.join(f), f).unwrap();
    }
    let list = env.path("excludes.txt");
    fs::write(&list, "# logs are rotated elsewhere\n\n  *.log  \n").unwrap();
    let abs_tmp = format!("{}/tmp", src.display());
    // Relative to the working directory, as the path `src` is: only src/build.
    let out = env
        .snap(&[
            "backup",
            "--json",
            "src",
            "--exclude-file",
            "excludes.txt",
            "--exclude",
            "src/build",
            "--exclude",
            &abs_tmp,
        ])
        .current_dir(env.dir.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["warnings"], serde_json::json!([]), "{report}");
    assert_eq!(
        listed(&env, &src),
        set(&["a.txt", "keep", "keep/build", "keep/build/b.txt", "logs"])
    );
    // `./` and `../` resolve as in a path.
    env.snap(&["backup", "..", "--exclude", "./../keep/*"])
        .current_dir(src.join("logs"))
        .assert()
        .success();
    assert!(!listed(&env, &src).contains("keep/note.log"));
    assert!(listed(&env, &src).contains("keep"));
}

#[test]
fn files_from_a_file_and_from_standard_input() {
    let env = Env::new();
    env.init();
    for d in ["one", "two", "three"] {
        fs::create_dir_all(env.path(d)).unwrap();
        fs::write(env.path(d).join("f"), d).unwrap();
    }
    let list = env.path("paths.txt");
    fs::write(
        &list,
        format!("# what to keep\n{}\n\ntwo\n", env.path("one").display()),
    )
    .unwrap();
    let sources = |env: &Env| -> BTreeSet<String> {
        env.snapshots().last().unwrap()["sources"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["path"].as_str().unwrap().to_string())
            .collect()
    };
    env.snap(&["backup", "--files-from", "paths.txt"])
        .current_dir(env.dir.path())
        .assert()
        .success();
    let got = sources(&env);
    assert_eq!(got.len(), 2, "{got:?}");
    for d in ["/one", "/two"] {
        assert!(got.iter().any(|s| s.ends_with(d)), "{got:?}");
    }
    env.snap(&["backup", "--files-from", "-", "three"])
        .current_dir(env.dir.path())
        .write_stdin(format!("{}\n", env.path("one").display()))
        .assert()
        .success();
    let got = sources(&env);
    assert_eq!(got.len(), 2, "{got:?}");
    for d in ["/one", "/three"] {
        assert!(got.iter().any(|s| s.ends_with(d)), "{got:?}");
    }
}

#[test]
fn a_list_that_cannot_be_read_fails_before_anything_is_recorded() {
    let env = Env::new();
    env.init();
    let src = env.path("src");
    fs::create_dir_all(&src).unwrap();
    let s = src.to_str().unwrap();
    let dir = env.path("a-directory");
    fs::create_dir_all(&dir).unwrap();
    for (option, file) in [
        ("--exclude-file", env.path("no-such-excludes")),
        ("--files-from", env.path("no-such-paths")),
        ("--exclude-file", dir.clone()),
    ] {
        let f = file.to_str().unwrap();
        env.snap(&["backup", s, option, f])
            .assert()
            .failure()
            .stderr(predicate::str::contains(format!("{option} {f}: ")));
    }
    assert!(env.snapshots().is_empty());
    env.snap(&["backup", s, "--exclude-larger-than", "12X"])
        .assert()
        .failure()
        .stderr(predicate::str::contains("\"12X\" is not a size"));
}

#[test]
fn cache_tags_marker_files_and_sizes_leave_out_contents_not_warnings() {
    let env = Env::new();
    env.init();
    let src = env.path("src");
    for d in ["cache/sub", "fake-cache", "scratch", "data"] {
        fs::create_dir_all(src.join(d)).unwrap();
    }
    let tag = b"Signature: 8a477f597d28d172789f06886806bc55\n# made by a test\n";
    fs::write(src.join("cache/CACHEDIR.TAG"), tag).unwrap();
    fs::write(src.join("cache/sub/blob"), b"cached").unwrap();
    fs::write(
        src.join("fake-cache/CACHEDIR.TAG"),
        b"Signature: not a cache",
    )
    .unwrap();
    fs::write(src.join("fake-cache/kept"), b"kept").unwrap();
    fs::write(src.join("scratch/.nobackup"), b"").unwrap();
    fs::write(src.join("scratch/work"), b"work").unwrap();
    fs::write(src.join("data/small"), random_bytes(10 << 10, "small")).unwrap();
    fs::write(src.join("data/big"), random_bytes((1 << 20) + 1, "big")).unwrap();
    let s = src.to_str().unwrap();
    backup_clean(
        &env,
        &[
            s,
            "--exclude-caches",
            "--exclude-if-present",
            ".nobackup",
            "--exclude-larger-than",
            "1M",
        ],
    );
    let want = set(&[
        "cache",
        "cache/CACHEDIR.TAG",
        "data",
        "data/small",
        "fake-cache",
        "fake-cache/CACHEDIR.TAG",
        "fake-cache/kept",
        "scratch",
        "scratch/.nobackup",
    ]);
    assert_eq!(listed(&env, &src), want);
    // The same from a profile of the configuration file.
    let config = env.path("snap.toml");
    fs::write(
        &config,
        format!(
            "[profile.p]\nrepository = \"{}\"\npaths = [\"{s}\"]\nexclude_caches = true\n\
             exclude_if_present = [\".nobackup\"]\nexclude_larger_than = \"1M\"\n",
            env.repo().display()
        ),
    )
    .unwrap();
    crate::util::snap_bin()
        .env("SNAP_CACHE_DIR", env.cache())
        .env_remove("SNAP_REPO")
        .args(["--config", config.to_str().unwrap(), "run", "p"])
        .assert()
        .success();
    assert_eq!(env.snapshots().len(), 2);
    assert_eq!(listed(&env, &src), want);
}
