//! Format compatibility: the golden repositories in `tests/fixtures/` (a plain and an
//! encrypted one, three snapshots each, made once by `tests/fixtures/make.py`) must
//! open, check clean, list and restore byte-identical to `manifest.json` with every
//! later version, and take new backups. Damaged copies of them, made here by fixed
//! rules, must give `check`'s exact report.
//!
//! Every command runs the real binary on a fresh copy with the index cache in the
//! copy's scratch directory (`SNAP_CACHE_DIR`, `XDG_CACHE_HOME`), so nothing depends
//! on a cache the fixture might or might not hold.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use serde::Deserialize;

use crate::util::Env;

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures");
const PLAIN: &str = "repo-v1-plain.tar.gz";
const ENCRYPTED: &str = "repo-v2-encrypted.tar.gz";

/// `check`'s report on either golden repository as it is, and with `--read-data`.
const CLEAN: &str =
    "3 snapshots, 6 packs, 30 trees and lists checked; 0 packs read, 0 blobs verified: no errors\n";
const CLEAN_READ: &str = "3 snapshots, 6 packs, 30 trees and lists checked; 6 packs read, 73 blobs verified: no errors\n";

/// `manifest.json`: what each snapshot of both golden repositories holds.
#[derive(Deserialize)]
struct Manifest {
    /// The backed-up directory, as recorded in the snapshots.
    source: String,
    /// The encrypted repository's passphrase file, beside the manifest.
    passphrase_file: String,
    /// Its exported master key, beside the manifest.
    key_file: String,
    snapshots: Vec<SnapshotManifest>,
}

#[derive(Deserialize)]
struct SnapshotManifest {
    time: String,
    host: String,
    tags: Vec<String>,
    sources: serde_json::Value,
    /// Every entry below `source`, its root as `.`.
    entries: Vec<Entry>,
    stream: Option<Stream>,
}

/// One entry of a tree, as the manifest writes it and as this module reads it back
/// from a restored tree.
#[derive(Deserialize, Debug, PartialEq)]
struct Entry {
    /// Relative path; bytes that are not UTF-8 as `\xNN`.
    path: String,
    /// `st_mode` in octal.
    mode: String,
    /// Seconds and nanoseconds.
    mtime: (i64, i64),
    size: Option<u64>,
    sha256: Option<String>,
    target: Option<String>,
    /// The first path (in byte order) of this file's hard-link group.
    hard_link_of: Option<String>,
}

#[derive(Deserialize)]
struct Stream {
    path: String,
    size: u64,
    sha256: String,
}

fn manifest() -> Manifest {
    let path = Path::new(FIXTURES).join("manifest.json");
    serde_json::from_slice(&fs::read(&path).unwrap()).unwrap()
}

/// A fresh copy of a golden repository in a scratch directory.
struct Golden {
    env: Env,
    encrypted: bool,
}

impl Golden {
    fn unpack(tarball: &str) -> Golden {
        let env = Env::new();
        let status = std::process::Command::new("tar")
            .arg("-xzf")
            .arg(Path::new(FIXTURES).join(tarball))
            .arg("-C")
            .arg(env.dir.path())
            .status()
            .expect("tar runs");
        assert!(status.success(), "unpacking {tarball}");
        Golden {
            env,
            encrypted: tarball == ENCRYPTED,
        }
    }

    fn repo(&self) -> PathBuf {
        self.env.repo()
    }

    /// `snap --repo <copy> ARGS` with scratch caches and, for the encrypted copy, the
    /// fixture's exported key (a passphrase costs half a second of key derivation).
    fn snap(&self, args: &[&str]) -> assert_cmd::Command {
        self.snap_unlocked_by("SNAP_KEY_FILE", manifest().key_file, args)
    }

    /// [`Golden::snap`], the encrypted copy opened with the fixture's passphrase file.
    fn snap_with_passphrase(&self, args: &[&str]) -> assert_cmd::Command {
        self.snap_unlocked_by("SNAP_PASSWORD_FILE", manifest().passphrase_file, args)
    }

    /// `var` names `file` of the fixtures for the encrypted copy.
    fn snap_unlocked_by(&self, var: &str, file: String, args: &[&str]) -> assert_cmd::Command {
        let mut c = self.env.snap(args);
        // Times print in local time: the expected texts are in UTC.
        c.env("XDG_CACHE_HOME", self.env.path("xdg"))
            .env("TZ", "UTC")
            .env_remove("SNAP_PASSWORD")
            .env_remove("SNAP_KEY_FILE")
            .env_remove("SNAP_PASSWORD_FILE");
        if self.encrypted {
            c.env(var, Path::new(FIXTURES).join(file));
        }
        c
    }

    /// Exit code, standard output and standard error of `snap ARGS`, the copy's path
    /// replaced by `<REPO>`.
    fn report(&self, args: &[&str]) -> (i32, String, String) {
        self.report_of(self.snap(args))
    }

    fn report_of(&self, mut cmd: assert_cmd::Command) -> (i32, String, String) {
        let out = cmd.output().unwrap();
        let repo = self.repo().to_str().unwrap().to_string();
        let text = |b: &[u8]| String::from_utf8_lossy(b).replace(&repo, "<REPO>");
        (
            out.status.code().expect("exited"),
            text(&out.stdout),
            text(&out.stderr),
        )
    }

    fn snapshots(&self) -> Vec<serde_json::Value> {
        serde_json::from_value(crate::util::json(self.snap(&["list", "--json"]))).unwrap()
    }
}

/// `path` relative to `root`, non-UTF-8 bytes as `\xNN` (as Python's
/// `backslashreplace` writes them in the manifest).
fn escaped(root: &Path, path: &Path) -> String {
    let rel = path.strip_prefix(root).unwrap();
    let mut bytes = rel.as_os_str().as_bytes();
    if bytes.is_empty() {
        return ".".into();
    }
    let mut out = String::new();
    loop {
        match std::str::from_utf8(bytes) {
            Ok(s) => return out + s,
            Err(e) => {
                let (ok, rest) = bytes.split_at(e.valid_up_to());
                out.push_str(std::str::from_utf8(ok).unwrap());
                let bad = e.error_len().unwrap_or(rest.len());
                for b in &rest[..bad] {
                    write!(out, "\\x{b:02x}").unwrap();
                }
                bytes = &rest[bad..];
            }
        }
    }
}

fn sha256(b: &[u8]) -> String {
    hex::encode(ring::digest::digest(&ring::digest::SHA256, b))
}

/// Every entry below `root` (itself included), by escaped path.
fn entries(root: &Path) -> BTreeMap<String, Entry> {
    let mut paths = vec![root.to_path_buf()];
    let mut i = 0;
    while i < paths.len() {
        let p = paths[i].clone();
        if fs::symlink_metadata(&p).unwrap().is_dir() {
            for e in fs::read_dir(&p).unwrap() {
                paths.push(e.unwrap().path());
            }
        }
        i += 1;
    }
    paths.sort_by(|a, b| a.as_os_str().as_bytes().cmp(b.as_os_str().as_bytes()));
    let mut first_of_inode: HashMap<u64, String> = HashMap::new();
    let mut out = BTreeMap::new();
    for p in paths {
        let m = fs::symlink_metadata(&p).unwrap();
        let path = escaped(root, &p);
        let mut e = Entry {
            path: path.clone(),
            mode: format!("{:o}", m.mode()),
            mtime: (m.mtime(), m.mtime_nsec()),
            size: None,
            sha256: None,
            target: None,
            hard_link_of: None,
        };
        if m.is_file() {
            e.size = Some(m.len());
            e.sha256 = Some(sha256(&fs::read(&p).unwrap()));
            if m.nlink() > 1 {
                e.hard_link_of = Some(
                    first_of_inode
                        .entry(m.ino())
                        .or_insert(path.clone())
                        .clone(),
                );
            }
        } else if m.file_type().is_symlink() {
            e.target = Some(fs::read_link(&p).unwrap().to_str().unwrap().to_string());
        }
        out.insert(path, e);
    }
    out
}

/// Restores every snapshot of the copy and compares it with the manifest: entries,
/// contents, modes, mtimes, link targets and hard links, and the stream through both
/// `restore` and `cat`.
fn assert_restores_as_manifest(g: &Golden) {
    let m = manifest();
    let snaps = g.snapshots();
    assert_eq!(snaps.len(), m.snapshots.len());
    for (i, (s, want)) in snaps.iter().zip(&m.snapshots).enumerate() {
        let id = s["id"].as_str().unwrap();
        assert_eq!(s["time"], want.time.as_str(), "time of snapshot {i}");
        assert_eq!(s["host"], want.host.as_str());
        assert_eq!(s["tags"], serde_json::json!(want.tags));
        assert_eq!(s["sources"], want.sources, "sources of snapshot {i}");
        let parent = if i == 0 {
            serde_json::Value::Null
        } else {
            snaps[i - 1]["id"].clone()
        };
        assert_eq!(s["parent"], parent, "parent of snapshot {i}");

        let target = g.env.path(&format!("restore-{i}"));
        g.snap(&["restore", id, "--target", target.to_str().unwrap()])
            .assert()
            .success();
        let got = entries(&target.join(m.source.trim_start_matches('/')));
        let want_entries: BTreeMap<&String, &Entry> =
            want.entries.iter().map(|e| (&e.path, e)).collect();
        assert_eq!(
            got.keys().collect::<Vec<_>>(),
            want_entries.keys().copied().collect::<Vec<_>>(),
            "entries of snapshot {i}"
        );
        for (path, e) in want_entries {
            assert_eq!(&got[path], e, "snapshot {i}");
        }
        if let Some(stream) = &want.stream {
            let restored = fs::read(target.join(&stream.path)).unwrap();
            assert_eq!(restored.len() as u64, stream.size, "snapshot {i}");
            assert_eq!(sha256(&restored), stream.sha256, "snapshot {i}");
            let out = g.snap(&["cat", id, &stream.path]).output().unwrap();
            assert!(out.status.success());
            assert_eq!(sha256(&out.stdout), stream.sha256, "cat of snapshot {i}");
        }
        fs::remove_dir_all(&target).unwrap();
    }
}

/// Reads, restores, then backs up into the copy: the restored last snapshot (its
/// unchanged chunks must be found, not stored again) and a new file; the result checks
/// clean.
fn golden_repository_is_read_and_extended(tarball: &str) {
    let g = Golden::unpack(tarball);
    // Versions before 5b16b71 kept the index cache inside a local repository: a
    // leftover one (here not even a database) is no part of the format.
    fs::write(
        g.repo().join("index.sqlite"),
        b"a cache left by an older version",
    )
    .unwrap();
    assert_eq!(
        g.report_of(g.snap_with_passphrase(&["check", "--read-data"])),
        (0, CLEAN_READ.to_string(), String::new())
    );
    assert_restores_as_manifest(&g);

    let target = g.env.path("again");
    g.snap(&["restore", "latest", "--target", target.to_str().unwrap()])
        .assert()
        .success();
    fs::write(target.join("new-file"), b"written by this version\n").unwrap();
    let out = crate::util::json(g.snap(&["backup", "--json", target.to_str().unwrap()]));
    let added = out["summary"]["bytes_added_raw"].as_u64().unwrap();
    assert!(
        added < 64 << 10,
        "{added} bytes added: the old chunks were not reused"
    );
    let (code, stdout, stderr) = g.report(&["check", "--read-data"]);
    assert_eq!((code, stderr.as_str()), (0, ""));
    assert!(stdout.starts_with("4 snapshots, ") && stdout.ends_with(": no errors\n"));
}

#[test]
fn plain_golden_repository_is_read_and_extended() {
    golden_repository_is_read_and_extended(PLAIN);
}

#[test]
fn encrypted_golden_repository_is_read_and_extended() {
    golden_repository_is_read_and_extended(ENCRYPTED);
}

// Damage, made by fixed rules on copies: in packs of the plain repository, whose
// trailers this module reads as format-spec.md describes them, and where the rule needs
// no trailer, in the encrypted one.

/// `check`'s closing advice: `repair index` drops what is gone or damaged (a damaged
/// blob's pack is salvaged), so the next backup of a source that still has the data
/// stores it again.
const ADVICE: &str = "snap: the repository is damaged; snapshots not listed above restore fine. `snap repair index` fixes index errors and drops damaged blobs from the index (no backup reuses them); lost data comes back only from another copy (see `snap sync`) or, for data still on disk, with the next backup after `snap repair index`\n";

/// `stderr` less its closing advice, which must be there, exactly.
fn without_advice(stderr: &str) -> String {
    stderr
        .strip_suffix(ADVICE)
        .unwrap_or_else(|| panic!("no closing advice in:\n{stderr}"))
        .to_string()
}

/// The repository's packs, by name.
fn packs(repo: &Path) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = fs::read_dir(repo.join("packs"))
        .unwrap()
        .flat_map(|d| fs::read_dir(d.unwrap().path()).unwrap())
        .map(|e| e.unwrap().path())
        .collect();
    out.sort_by_key(|p| p.file_name().unwrap().to_owned());
    out
}

/// A plain pack's blobs: (kind, offset, stored length), from its trailer.
fn trailer(pack: &Path) -> Vec<(u8, u64, u64)> {
    let b = fs::read(pack).unwrap();
    let footer = b.len() - 48;
    let u32_at = |at: usize| u64::from(u32::from_le_bytes(b[at..at + 4].try_into().unwrap()));
    let n = usize::try_from(u32_at(footer)).unwrap();
    let start = footer - 44 * n;
    let mut offset = 16;
    (0..n)
        .map(|i| {
            let e = start + 44 * i;
            let stored = u32_at(e + 8);
            let blob = (b[e], offset, stored);
            offset += stored;
            blob
        })
        .collect()
}

/// The first pack by name that holds only data blobs (`data`) or only trees and list
/// nodes.
fn first_pack(repo: &Path, data: bool) -> PathBuf {
    packs(repo)
        .into_iter()
        .find(|p| trailer(p).iter().all(|(kind, _, _)| (*kind == 0) == data))
        .unwrap()
}

/// The first file by name in `dir` of the repository.
fn first_file(repo: &Path, dir: &str) -> PathBuf {
    let mut files: Vec<PathBuf> = fs::read_dir(repo.join(dir))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    files.remove(0)
}

fn flip(file: &Path, offset: u64) {
    let mut b = fs::read(file).unwrap();
    b[usize::try_from(offset).unwrap()] ^= 1;
    fs::write(file, b).unwrap();
}

/// Flips a byte in the middle of the first tree blob of `pack`, or of its first blob.
fn flip_first_blob(pack: &Path, kind: u8) {
    let (_, offset, len) = trailer(pack)
        .into_iter()
        .find(|(k, _, _)| *k == kind)
        .unwrap();
    flip(pack, offset + len / 2);
}

/// Asserts a report against the expected one, printing the actual report as it
/// would be written here when they differ.
fn assert_report(got: (i32, String, String), code: i32, stdout: &str, stderr: &str) {
    if got != (code, stdout.to_string(), stderr.to_string()) {
        panic!(
            "report differs; got exit {}\n--- stdout\n{}--- stderr\n{}---",
            got.0, got.1, got.2
        );
    }
}

/// Asserts that `check` finds nothing, as it reads no data (its report says so: 0
/// packs read), and that `check --read-data` gives this report (closing advice aside).
fn assert_found_by_read_data(g: &Golden, stdout: &str, stderr: &str) {
    assert_report(g.report(&["check"]), 0, CLEAN, "");
    let (code, out, err) = g.report(&["check", "--read-data"]);
    assert_report((code, out, without_advice(&err)), 1, stdout, stderr);
}

#[test]
fn flipped_byte_in_a_data_pack_is_found_by_read_data() {
    let g = Golden::unpack(PLAIN);
    flip_first_blob(&first_pack(&g.repo(), true), 0);
    assert_found_by_read_data(
        &g,
        "\
damaged snapshot d7e14b69 (2024-01-02 00:00:00 +00:00 golden-host /tmp/snap-golden/src db/dump.sql (stdin)): 1 path
  /db/dump.sql
3 snapshots, 6 packs, 30 trees and lists checked; 6 packs read, 73 blobs verified: 1 error, 1 snapshot damaged
",
        "\
snap: error: blob 0a72d0c1719265b420124443716ffa8de2e42748a82efb0f76bf097cc00a9b0a in pack 12742bbc3efd6d91026fb0e4d8d75e2381653fbf8bfa76dec224af337599dbdd at offset 16: corrupt blob 0a72d0c1719265b420124443716ffa8de2e42748a82efb0f76bf097cc00a9b0a: in packs/12742bbc3efd6d91026fb0e4d8d75e2381653fbf8bfa76dec224af337599dbdd: zstd: Data corruption detected
",
    );
}

#[test]
fn flipped_byte_in_a_tree_pack_is_found_without_reading_data() {
    let g = Golden::unpack(PLAIN);
    // The first tree of that pack is the listing of deep/a/b (its one entry is c).
    flip_first_blob(&first_pack(&g.repo(), false), 1);
    let damaged = "\
damaged snapshot d7e14b69 (2024-01-02 00:00:00 +00:00 golden-host /tmp/snap-golden/src db/dump.sql (stdin)): 1 path
  /tmp/snap-golden/src/deep/a/b/ (directory listing unreadable)
";
    let error = "\
snap: error: blob 79b1b1af23f5c58f04fc67c03bd527c52be22f43960907e5d0ab9e9c696b88c3: checksum mismatch in blob in packs/1f74131b177850441b69a8631972476aacc198ca7f447fa339058804ed5d8e4c: expected 79b1b1af23f5c58f04fc67c03bd527c52be22f43960907e5d0ab9e9c696b88c3, got 81e403930c8c79a6bf065a93106f0d02f378f7274f494d647c5113c0717751fa
";
    let (code, stdout, stderr) = g.report(&["check"]);
    assert_report(
        (code, stdout, without_advice(&stderr)),
        1,
        &format!("{damaged}3 snapshots, 6 packs, 29 trees and lists checked; 0 packs read, 0 blobs verified: 1 error, 1 snapshot damaged\n"),
        error,
    );
    // Reading the data finds the same blob again: one damage, two errors.
    let (code, stdout, stderr) = g.report(&["check", "--read-data"]);
    assert_report(
        (code, stdout, without_advice(&stderr)),
        1,
        &format!("{damaged}3 snapshots, 6 packs, 29 trees and lists checked; 6 packs read, 73 blobs verified: 2 errors, 1 snapshot damaged\n"),
        &format!("{error}snap: error: blob 79b1b1af23f5c58f04fc67c03bd527c52be22f43960907e5d0ab9e9c696b88c3 in pack 1f74131b177850441b69a8631972476aacc198ca7f447fa339058804ed5d8e4c at offset 16: checksum mismatch in blob in packs/1f74131b177850441b69a8631972476aacc198ca7f447fa339058804ed5d8e4c: expected 79b1b1af23f5c58f04fc67c03bd527c52be22f43960907e5d0ab9e9c696b88c3, got 81e403930c8c79a6bf065a93106f0d02f378f7274f494d647c5113c0717751fa\n"),
    );
}

/// What losing the first data pack (the second snapshot's new data) breaks: the
/// files whose chunks changed in the second snapshot, in it and in the third.
const LOST_SECOND_DATA_PACK: &str = "\
damaged snapshot d7e14b69 (2024-01-02 00:00:00 +00:00 golden-host /tmp/snap-golden/src db/dump.sql (stdin)): 4 paths
  /db/dump.sql
  /tmp/snap-golden/src/big.bin
  /tmp/snap-golden/src/docs/notes.md
  /tmp/snap-golden/src/new.txt
damaged snapshot 6d564962 (2024-01-03 00:00:00 +00:00 golden-host /tmp/snap-golden/src): 2 paths
  /tmp/snap-golden/src/big.bin
  /tmp/snap-golden/src/docs/notes.md
3 snapshots, 6 packs, 30 trees and lists checked; 0 packs read, 0 blobs verified: 1 error, 2 snapshots damaged
";

#[test]
fn truncated_pack_is_named_with_what_it_breaks() {
    let g = Golden::unpack(PLAIN);
    let pack = first_pack(&g.repo(), true);
    let half = fs::metadata(&pack).unwrap().len() / 2;
    fs::File::options()
        .write(true)
        .open(&pack)
        .unwrap()
        .set_len(half)
        .unwrap();
    assert_report(
        g.report(&["check"]),
        1,
        LOST_SECOND_DATA_PACK,
        &format!("snap: error: pack 12742bbc3efd6d91026fb0e4d8d75e2381653fbf8bfa76dec224af337599dbdd: corrupt pack 12742bbc3efd6d91026fb0e4d8d75e2381653fbf8bfa76dec224af337599dbdd: bad trailer magic (truncated?)\n{ADVICE}"),
    );
}

#[test]
fn missing_pack_is_named_with_what_it_breaks() {
    let g = Golden::unpack(PLAIN);
    fs::remove_file(first_pack(&g.repo(), true)).unwrap();
    assert_report(
        g.report(&["check"]),
        1,
        LOST_SECOND_DATA_PACK,
        &format!("snap: error: pack 12742bbc3efd6d91026fb0e4d8d75e2381653fbf8bfa76dec224af337599dbdd is missing (6 blobs)\n{ADVICE}"),
    );
}

#[test]
fn missing_index_file_is_reported_and_repaired_from_the_packs() {
    let g = Golden::unpack(PLAIN);
    // The smallest index file: the third snapshot's.
    let smallest = fs::read_dir(g.repo().join("index"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .min_by_key(|p| (fs::metadata(p).unwrap().len(), p.clone()))
        .unwrap();
    fs::remove_file(smallest).unwrap();
    // Its two packs are found unlisted, and what the snapshot needs from them missing.
    assert_report(
        g.report(&["check"]),
        1,
        "\
damaged snapshot 6d564962 (2024-01-03 00:00:00 +00:00 golden-host /tmp/snap-golden/src): 1 path
  / (directory listing unreadable)
3 snapshots, 4 packs, 21 trees and lists checked; 0 packs read, 0 blobs verified: 1 error, 1 snapshot damaged
",
        &format!("\
snap: warning: pack 784fd66710b9d2691faf19b66975c8f08a201c9b9be35af2d2dd8f9814749f6a is not in the index (an interrupted backup left it, or a running one is writing it): `snap prune` removes it if unused, `snap repair index` indexes it
snap: warning: pack 882e5a64b4d53b55d1b9b5d2188739587c5aec7cc9098c72a000d1146ee00109 is not in the index (an interrupted backup left it, or a running one is writing it): `snap prune` removes it if unused, `snap repair index` indexes it
snap: error: blob aaace8442de8168eaa93716a1dea9397f723ce8fb8e6a0c88bc7d84ece696623: blob aaace8442de8168eaa93716a1dea9397f723ce8fb8e6a0c88bc7d84ece696623 not found
{ADVICE}"),
    );
    g.snap(&["repair", "index"]).assert().success();
    assert_report(g.report(&["check", "--read-data"]), 0, CLEAN_READ, "");
}

#[test]
fn flipped_byte_in_a_snapshot_record_is_named() {
    let g = Golden::unpack(PLAIN);
    let record = first_file(&g.repo(), "snapshots");
    flip(&record, fs::metadata(&record).unwrap().len() / 2);
    // The first snapshot's record: the record is named (twice, as the cache skips it
    // and as check reports it); nothing else is damaged.
    let why = "<REPO>/snapshots/5c5c0e008684d88f6f74fdd77dcfc5b5e318fe6491a45ce7920694c0dc5aec97: checksum mismatch in snapshot: expected 5c5c0e008684d88f6f74fdd77dcfc5b5e318fe6491a45ce7920694c0dc5aec97, got 739c05198a9d32b85f4054b5d4af40b2609c844f6074e940c2c0862fa8c04590";
    assert_report(
        g.report(&["check"]),
        1,
        "2 snapshots, 6 packs, 21 trees and lists checked; 0 packs read, 0 blobs verified: 1 error, 0 snapshots damaged\n",
        &format!("snap: warning: skipping snapshot {why}\nsnap: error: snapshot record {why}\n{ADVICE}"),
    );
}

#[test]
fn flipped_byte_in_an_encrypted_data_pack_fails_authentication() {
    let g = Golden::unpack(ENCRYPTED);
    // The largest pack: the first snapshot's data. Its trailer is sealed, so the byte
    // is chosen without it: well inside the first blob (a dump chunk of KBs).
    let pack = packs(&g.repo())
        .into_iter()
        .max_by_key(|p| fs::metadata(p).unwrap().len())
        .unwrap();
    flip(&pack, 16 + 100);
    // Its first blob is a chunk of the stream both stream snapshots share.
    assert_found_by_read_data(
        &g,
        "\
damaged snapshot f9b3dc57 (2024-01-01 00:00:00 +00:00 golden-host /tmp/snap-golden/src db/dump.sql (stdin)): 1 path
  /db/dump.sql
damaged snapshot ad14c21d (2024-01-02 00:00:00 +00:00 golden-host /tmp/snap-golden/src db/dump.sql (stdin)): 1 path
  /db/dump.sql
3 snapshots, 6 packs, 30 trees and lists checked; 6 packs read, 73 blobs verified: 1 error, 2 snapshots damaged
",
        "\
snap: error: blob 27cbfe93329d1e4fcfca5d78586ff9014ef77d6d854956657d2ee9a992a20c1f in pack 8c89c50ca80dd93614579a50d3b7b29db6ec07b451ddf80ae49468edf4c6b360 at offset 116: corrupt blob 27cbfe93329d1e4fcfca5d78586ff9014ef77d6d854956657d2ee9a992a20c1f: in packs/8c89c50ca80dd93614579a50d3b7b29db6ec07b451ddf80ae49468edf4c6b360 fails authentication (altered or damaged)
",
    );
}

#[test]
fn damaged_key_file_is_named() {
    let g = Golden::unpack(ENCRYPTED);
    let key = first_file(&g.repo(), "keys");
    let text = fs::read_to_string(&key).unwrap();
    // One hex digit in the middle of the wrapped master key, changed to another.
    let at = text.find("\"wrapped\": \"").unwrap() + 12 + 64;
    let digit = if &text[at..=at] == "0" { "1" } else { "0" };
    fs::write(&key, format!("{}{digit}{}", &text[..at], &text[at + 1..])).unwrap();
    // The passphrase is right; the file is named, and altering is one of the causes
    // given (the two cannot be told apart: either way the key does not unwrap).
    assert_report(
        g.report_of(g.snap_with_passphrase(&["check"])),
        1,
        "",
        "snap: opening repository <REPO>: wrong passphrase: no key file in <REPO>/keys opens with it, or they were altered (42b2efb5b05e205e.json)\n",
    );
}

/// Writes `locks/<name>.json` for `host` and `pid`, last modified `age` ago.
fn plant_lock(g: &Golden, name: &str, host: &str, pid: u32, age: Duration) {
    let path = g.repo().join("locks").join(format!("{name}.json"));
    let body = serde_json::json!({
        "host": host, "pid": pid, "time": "2024-01-01T00:00:00Z",
        "exclusive": true, "purpose": "prune",
    });
    fs::write(&path, serde_json::to_vec_pretty(&body).unwrap()).unwrap();
    fs::File::options()
        .write(true)
        .open(&path)
        .unwrap()
        .set_modified(SystemTime::now() - age)
        .unwrap();
}

#[test]
fn stale_locks_are_taken_over_and_live_ones_stop_check() {
    let g = Golden::unpack(PLAIN);
    // Another host's lock not refreshed for 31 minutes.
    plant_lock(
        &g,
        "00000000000000a1",
        "elsewhere",
        1,
        Duration::from_secs(31 * 60),
    );
    assert_report(
        g.report(&["check"]),
        0,
        CLEAN,
        "snap: warning: removing stale lock locks/00000000000000a1.json: an exclusive lock for prune by pid 1 on elsewhere since 2024-01-01 00:00:00 +00:00\n",
    );
    // This host's lock of a process that has exited.
    let mut child = std::process::Command::new("true").spawn().unwrap();
    child.wait().unwrap();
    let host = rustix::system::uname()
        .nodename()
        .to_string_lossy()
        .into_owned();
    plant_lock(&g, "00000000000000a2", &host, child.id(), Duration::ZERO);
    let (code, stdout, stderr) = g.report(&["check"]);
    assert_report(
        (code, stdout, stderr.replace(&format!("pid {} on {host} ", child.id()), "pid <PID> on <HOST> ")),
        0,
        CLEAN,
        "snap: warning: removing stale lock locks/00000000000000a2.json: an exclusive lock for prune by pid <PID> on <HOST> since 2024-01-01 00:00:00 +00:00\n",
    );
    assert_eq!(fs::read_dir(g.repo().join("locks")).unwrap().count(), 0);
    // Another host's lock refreshed 29 minutes ago is live: check stops, naming it.
    plant_lock(
        &g,
        "00000000000000a3",
        "elsewhere",
        1,
        Duration::from_secs(29 * 60),
    );
    assert_report(
        g.report(&["check"]),
        1,
        "",
        "snap: repository is locked by an exclusive lock for prune by pid 1 on elsewhere since 2024-01-01 00:00:00 +00:00 (<REPO>/locks/00000000000000a3.json); wait for it to finish and rerun. If that process is gone, the lock is removed as stale once it is 30 minutes old (at once if it was this host's and the host has restarted since), or delete the file\n",
    );
}
