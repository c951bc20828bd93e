//! `snap dump`: a snapshot's directory as tar or ZIP, read back by GNU tar, Info-ZIP's
//! unzip and Python's readers, and compared with the source.

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::Command;

use predicates::prelude::*;

use super::make_tree;
use crate::util::{assert_same_tree, largest_pack, random_bytes, restored, Env};

/// Backs up `make_tree` and returns the env and the source path.
fn backed_up_tree() -> (Env, std::path::PathBuf) {
    let env = Env::new();
    env.init();
    let src = env.path("src");
    make_tree(&src);
    env.backup_json(&[src.to_str().unwrap()]);
    (env, src)
}

fn run(cmd: &mut Command) {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn tar_of_a_directory_unpacks_with_gnu_tar_to_the_source_tree() {
    let (env, src) = backed_up_tree();
    let tar = env.path("tree.tar");
    env.snap(&[
        "dump",
        "latest",
        src.to_str().unwrap(),
        "--output",
        tar.to_str().unwrap(),
    ])
    .assert()
    .success()
    .stdout(predicate::str::contains("tree.tar"));
    let out = env.path("out");
    fs::create_dir_all(&out).unwrap();
    // As root GNU tar restores owners and modes; PAX records carry nanosecond mtimes.
    run(Command::new("tar")
        .args(["-x", "-p", "--numeric-owner", "-f"])
        .arg(&tar)
        .arg("-C")
        .arg(&out));
    assert_same_tree(&src, &restored(&out, &src));
}

/// What Python `script` prints, given `args`; it must succeed.
fn python(script: &str, args: &[&Path]) -> String {
    let py = Command::new("python3")
        .args(["-c", script])
        .args(args)
        .output()
        .unwrap();
    assert!(
        py.status.success(),
        "{}",
        String::from_utf8_lossy(&py.stderr)
    );
    String::from_utf8(py.stdout).unwrap()
}

#[test]
fn tar_on_standard_output_pipes_into_tar_and_python_reads_it() {
    let (env, src) = backed_up_tree();
    let a = src.join("a");
    let dumped = env
        .snap(&["dump", "latest", a.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(dumped.status.success());
    let tar = env.path("a.tar");
    fs::write(&tar, &dumped.stdout).unwrap();
    // Python's reader: every member, its kind, and the bytes of the regular files.
    let script = r#"
import sys, tarfile
with tarfile.open(sys.argv[1]) as t:
    for m in t.getmembers():
        kind = 'f' if m.isreg() else 'd' if m.isdir() else 'l' if m.issym() else 'h' if m.islnk() else 'p' if m.isfifo() else '?'
        data = t.extractfile(m).read() if m.isreg() else b''
        print(kind, oct(m.mode), m.name, m.linkname, len(data), data[:20])
"#;
    let listing = python(script, &[&tar]);
    let base = a.strip_prefix("/").unwrap().display().to_string();
    // In name order, a/b/hard comes before a/small.txt: it carries the content, and
    // the later name is a hard link to it.
    for line in [
        format!("d 0o755 {base}  0 b''"),
        format!("f 0o644 {base}/b/hard  11 b'hello snap\\n'"),
        format!("h 0o644 {base}/small.txt {base}/b/hard 0 b''"),
        format!("f 0o750 {base}/run.sh  18 b'#!/bin/sh\\necho hi\\n'"),
        format!("l 0o777 {base}/rel-link small.txt 0 b''"),
        format!("p 0o640 {base}/fifo  0 b''"),
    ] {
        assert!(
            listing.lines().any(|l| l == line),
            "{line:?} not in\n{listing}"
        );
    }
    let out = env.path("out");
    fs::create_dir_all(&out).unwrap();
    run(Command::new("tar")
        .arg("-xpf")
        .arg(&tar)
        .arg("-C")
        .arg(&out));
    assert_same_tree(&a, &out.join(&base));
}

#[test]
fn zip_unpacks_with_unzip_and_python_to_the_same_bytes() {
    let (env, src) = backed_up_tree();
    let zip = env.path("tree.zip");
    env.snap(&[
        "dump",
        "latest",
        "/",
        "--archive",
        "zip",
        "-o",
        zip.to_str().unwrap(),
    ])
    .assert()
    .success()
    // A ZIP holds no FIFOs: the one in the tree is named as left out.
    .stderr(predicate::str::contains("a/fifo: left out"));
    let out = env.path("out");
    run(Command::new("unzip")
        .arg("-q")
        .arg(&zip)
        .arg("-d")
        .arg(&out));
    let got = restored(&out, &src);
    for f in ["a/small.txt", "a/b/hard", "a/run.sh", "big.bin", "sparse"] {
        assert!(
            fs::read(src.join(f)).unwrap() == fs::read(got.join(f)).unwrap(),
            "content of {f}"
        );
    }
    assert_eq!(
        fs::read_link(got.join("a/rel-link")).unwrap(),
        Path::new("small.txt")
    );
    assert_eq!(
        fs::metadata(got.join("a/run.sh"))
            .unwrap()
            .permissions()
            .mode()
            & 0o7777,
        0o750
    );
    let script = r#"
import sys, zipfile, hashlib
with zipfile.ZipFile(sys.argv[1]) as z:
    bad = z.testzip()
    assert bad is None, bad
    print(hashlib.sha256(z.read(sys.argv[2])).hexdigest())
"#;
    let big = restored(Path::new(""), &src).join("big.bin");
    let digest = python(script, &[&zip, &big]);
    let want = Command::new("sha256sum")
        .arg(src.join("big.bin"))
        .output()
        .unwrap();
    assert_eq!(
        digest.trim(),
        String::from_utf8_lossy(&want.stdout)
            .split(' ')
            .next()
            .unwrap()
    );
}

/// Names that are not UTF-8 stay apart wherever snap shows them as text (a ZIP, `ls
/// --json`), and come back as their bytes from the command line, raw or as shown.
#[test]
fn names_that_are_not_utf8_stay_apart_in_zip_ls_and_cat() {
    use std::os::unix::ffi::OsStrExt;
    let env = Env::new();
    env.init();
    let src = env.path("src");
    fs::create_dir_all(&src).unwrap();
    for (b, text) in [(0xfe_u8, "one"), (0xff, "two")] {
        let name = [b'n', b];
        fs::write(src.join(std::ffi::OsStr::from_bytes(&name)), text).unwrap();
    }
    env.backup_json(&[src.to_str().unwrap()]);
    let zip = env.path("names.zip");
    env.snap(&[
        "dump",
        "latest",
        src.to_str().unwrap(),
        "--archive",
        "zip",
        "-o",
        zip.to_str().unwrap(),
    ])
    .assert()
    .success();
    let script = r#"
import sys, zipfile
with zipfile.ZipFile(sys.argv[1]) as z:
    for i in z.infolist():
        print(i.filename.rsplit('/', 1)[-1], z.read(i).decode())
"#;
    let listing = python(script, &[&zip]);
    for line in ["n\\xFE one", "n\\xFF two"] {
        assert!(
            listing.lines().any(|l| l == line),
            "{line:?} not in\n{listing}"
        );
    }
    // ls --json: one path each, as shown.
    let out = env
        .snap(&["ls", "latest", src.to_str().unwrap(), "--json"])
        .output()
        .unwrap();
    let paths: Vec<String> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["path"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    for name in ["n\\xFE", "n\\xFF"] {
        let want = format!("{}/{name}", src.display());
        assert!(paths.contains(&want), "{want} not in {paths:?}");
    }
    // cat: the raw bytes of a name, or its shown form.
    let raw = src.join(std::ffi::OsStr::from_bytes(b"n\xfe"));
    env.snap(&[])
        .args(["cat", "latest"])
        .arg(&raw)
        .assert()
        .success()
        .stdout("one");
    let shown = format!("{}/n\\xFF", src.display());
    env.snap(&["cat", "latest", &shown])
        .assert()
        .success()
        .stdout("two");
    // find: a name as ls shows it, or raw; and a newline in a name stays on its line.
    fs::write(src.join("new\nline"), "three").unwrap();
    env.backup_json(&[src.to_str().unwrap()]);
    let found = |pattern: &std::ffi::OsStr| {
        let out = env.snap(&["find"]).arg(pattern).output().unwrap();
        assert!(out.status.success(), "{out:?}");
        String::from_utf8(out.stdout).unwrap()
    };
    for pattern in [&b"n\\xFF"[..], b"n\xff", b"n\\xF?"] {
        let text = found(std::ffi::OsStr::from_bytes(pattern));
        assert!(text.contains("/n\\xFF"), "{pattern:?}: {text}");
    }
    let text = found(std::ffi::OsStr::new("new*"));
    assert!(
        text.contains("/new\\x0Aline") && text.lines().count() == 1,
        "{text}"
    );
    let ls = env
        .snap(&["ls", "latest", src.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&ls.stdout).contains("new\\x0Aline"));
}

#[test]
fn a_file_is_written_as_it_is_and_a_terminal_or_missing_path_is_refused() {
    let env = Env::new();
    env.init();
    let src = env.path("src");
    fs::create_dir_all(&src).unwrap();
    let data = random_bytes(3 << 20, "file");
    fs::write(src.join("f.bin"), &data).unwrap();
    env.backup_json(&[src.to_str().unwrap()]);
    let f = format!("{}/f.bin", src.display());
    let out = env.snap(&["dump", "latest", &f]).output().unwrap();
    assert!(out.status.success());
    assert!(out.stdout == data);
    // Asked for an archive, a file (and a symlink) goes into one.
    std::os::unix::fs::symlink("f.bin", src.join("link")).unwrap();
    env.backup_json(&[src.to_str().unwrap()]);
    for (path, archive) in [(&f, "zip"), (&format!("{}/link", src.display()), "tar")] {
        let file = env.path(&format!("one.{archive}"));
        env.snap(&[
            "dump",
            "latest",
            path,
            "--archive",
            archive,
            "-o",
            file.to_str().unwrap(),
        ])
        .assert()
        .success();
        let listed = python(
            "import sys, zipfile, tarfile\n\
             p = sys.argv[1]\n\
             names = zipfile.ZipFile(p).namelist() if p.endswith('zip') else tarfile.open(p).getnames()\n\
             print(names)",
            &[&file],
        );
        assert!(
            listed.contains(path.trim_start_matches('/')),
            "{archive}: {listed}"
        );
    }
    let missing = format!("{}/nope", src.display());
    env.snap(&["dump", "latest", &missing])
        .assert()
        .code(1)
        .stderr(predicate::str::contains("nope").and(predicate::str::contains("snap ls")));
    // An existing output file is never overwritten.
    let existing = env.path("existing");
    fs::write(&existing, b"keep").unwrap();
    env.snap(&["dump", "latest", &f, "-o", existing.to_str().unwrap()])
        .assert()
        .code(1)
        .stderr(predicate::str::contains("never overwrites"));
    assert_eq!(fs::read(&existing).unwrap(), b"keep");
}

#[test]
fn a_damaged_chunk_fails_the_dump_by_name_and_leaves_no_output_file() {
    let env = Env::new();
    env.init();
    let src = env.path("src");
    fs::create_dir_all(&src).unwrap();
    fs::write(src.join("victim.bin"), random_bytes(3 << 20, "victim")).unwrap();
    env.backup_json(&[src.to_str().unwrap()]);
    let pack = largest_pack(&env.repo());
    let mut bytes = fs::read(&pack).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 1;
    fs::write(&pack, bytes).unwrap();
    let tar = env.path("out.tar");
    env.snap(&[
        "dump",
        "latest",
        src.to_str().unwrap(),
        "-o",
        tar.to_str().unwrap(),
    ])
    .assert()
    .code(1)
    .stderr(predicate::str::contains("victim.bin").and(predicate::str::contains("checksum")));
    assert!(!tar.exists(), "no partial archive is left under the name");
    assert!(
        fs::read_dir(env.path("")).unwrap().all(|e| !e
            .unwrap()
            .file_name()
            .to_string_lossy()
            .starts_with(".snap-output-")),
        "no temporary file is left"
    );
}

/// Times a tar header or a DOS time cannot hold: before 1970 (with and without a
/// fraction, which counts down from the next second) in tar's PAX records; in ZIP the
/// local time Info-ZIP's unzip and Python read, and the exact second in the extended
/// timestamp, which unzip restores in any time zone.
#[test]
fn times_before_1970_and_in_any_zone_come_back_from_tar_and_zip() {
    let env = Env::new();
    env.init();
    let src = env.path("src");
    fs::create_dir_all(&src).unwrap();
    let times: [(&str, i64, u32); 3] = [
        ("old", -315_619_200, 123_456_789),
        ("whole", -157_766_400, 0),
        ("new", 1_700_000_000, 5),
    ];
    for (name, sec, nsec) in times {
        let p = src.join(name);
        fs::write(&p, name).unwrap();
        let t = rustix::fs::Timestamps {
            last_access: rustix::fs::Timespec {
                tv_sec: sec,
                tv_nsec: nsec.into(),
            },
            last_modification: rustix::fs::Timespec {
                tv_sec: sec,
                tv_nsec: nsec.into(),
            },
        };
        rustix::fs::utimensat(rustix::fs::CWD, &p, &t, rustix::fs::AtFlags::empty()).unwrap();
    }
    env.backup_json(&[src.to_str().unwrap()]);
    let tar = env.path("t.tar");
    env.snap(&[
        "dump",
        "latest",
        src.to_str().unwrap(),
        "-o",
        tar.to_str().unwrap(),
    ])
    .assert()
    .success();
    let out = env.path("untar");
    fs::create_dir_all(&out).unwrap();
    run(Command::new("tar").arg("-xf").arg(&tar).arg("-C").arg(&out));
    let r = restored(&out, &src);
    for (name, sec, nsec) in times {
        let md = fs::metadata(r.join(name)).unwrap();
        assert_eq!(
            (md.mtime(), md.mtime_nsec()),
            (sec, i64::from(nsec)),
            "tar: {name}"
        );
    }
    // ZIP, written in one zone and unpacked in another.
    let zip = env.path("t.zip");
    env.snap(&[
        "dump",
        "latest",
        src.to_str().unwrap(),
        "--archive",
        "zip",
        "-o",
        zip.to_str().unwrap(),
    ])
    .env("TZ", "Europe/Moscow")
    .assert()
    .success();
    let listed = python(
        "import sys, zipfile\nfor i in zipfile.ZipFile(sys.argv[1]).infolist():\n    print(i.filename, i.date_time)",
        &[&zip],
    );
    assert!(
        listed.contains("/new (2023, 11, 15, 1, 13, 20)"),
        "local DOS time:\n{listed}"
    );
    let out = env.path("unzip");
    run(Command::new("unzip")
        .arg("-q")
        .arg(&zip)
        .arg("-d")
        .arg(&out)
        .env("TZ", "America/New_York"));
    // (unzip takes no time before 1980 from a ZIP, whatever its fields say.)
    let new = fs::metadata(restored(&out, &src).join("new")).unwrap();
    assert_eq!(new.mtime(), 1_700_000_000, "unzip in another zone");
}

/// Names that are not UTF-8 can be excluded as `ls` shows them (`\xFF`), raw on the
/// command line, or raw in an `--exclude-file`, at backup and at restore.
#[test]
fn names_that_are_not_utf8_can_be_excluded() {
    use std::os::unix::ffi::OsStrExt;
    let env = Env::new();
    env.init();
    let src = env.path("src");
    fs::create_dir_all(&src).unwrap();
    for name in [&b"a\xfe"[..], b"b\xff", b"c\xfd", b"keep"] {
        fs::write(src.join(std::ffi::OsStr::from_bytes(name)), "x").unwrap();
    }
    let list = env.path("excludes");
    fs::write(&list, b"# raw bytes\nc\xfd\r\n").unwrap();
    env.snap(&[])
        .args([
            "backup",
            src.to_str().unwrap(),
            "--exclude",
            "a\\xFE",
            "--exclude",
        ])
        .arg(std::ffi::OsStr::from_bytes(b"b\xff"))
        .args(["--exclude-file", list.to_str().unwrap()])
        .assert()
        .success();
    let listed = |args: &[&str]| {
        let out = env.snap(args).output().unwrap();
        assert!(out.status.success(), "{out:?}");
        String::from_utf8(out.stdout).unwrap()
    };
    let ls = listed(&["ls", "latest", src.to_str().unwrap()]);
    assert!(ls.contains("/keep") && !ls.contains("\\x"), "{ls}");
    // At restore too.
    env.backup_json(&[src.to_str().unwrap()]);
    let out = env.path("out");
    env.snap(&[
        "restore",
        "latest",
        "--target",
        out.to_str().unwrap(),
        "--exclude",
        "?\\xF*",
    ])
    .assert()
    .success();
    let names: Vec<String> = fs::read_dir(restored(&out, &src))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names, ["keep"], "{names:?}");
}
