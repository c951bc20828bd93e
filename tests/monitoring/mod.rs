//! Monitoring through the real binary: `snap metrics` read by a real Prometheus text
//! parser (`prometheus_client`'s, from PyPI), a profile's `metrics_file` after runs that
//! succeed and fail, and a profile's `ping` received by a real HTTP server on loopback
//! (Python's `http.server`).

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use predicates::prelude::*;

use crate::util::{du, largest_pack, missing, random_bytes, snap_bin, Env};

/// One sample as the parser read it.
#[derive(Debug, serde::Deserialize)]
struct Sample {
    labels: BTreeMap<String, String>,
    value: f64,
}

/// One metric family as the parser read it.
#[derive(Debug, serde::Deserialize)]
struct Family {
    #[serde(rename = "type")]
    kind: String,
    help: String,
    samples: Vec<Sample>,
}

/// Whether Python's `prometheus_client` is there (said, or a failure in CI, if not).
fn have_parser() -> bool {
    let ok = Command::new("python3")
        .args(["-c", "import prometheus_client.parser"])
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        missing(
            "Prometheus's text parser (prometheus_client)",
            "python3 -m pip install prometheus_client",
        );
    }
    ok
}

/// `text` parsed by `prometheus_client.parser`, by family name; a text it rejects
/// fails the test.
fn parse(text: &str) -> BTreeMap<String, Family> {
    let script = r#"
import json, sys
from prometheus_client.parser import text_string_to_metric_families
out = {}
for f in text_string_to_metric_families(sys.stdin.read()):
    out[f.name] = {"type": f.type, "help": f.documentation,
                   "samples": [{"labels": s.labels, "value": s.value} for s in f.samples]}
print(json.dumps(out))
"#;
    let mut child = Command::new("python3")
        .args(["-c", script])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    {
        use std::io::Write;
        child
            .stdin
            .take()
            .unwrap()
            .write_all(text.as_bytes())
            .unwrap();
    }
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "the parser rejected:\n{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// The one sample of `name` whose labels include `labels`.
fn value(m: &BTreeMap<String, Family>, name: &str, labels: &[(&str, &str)]) -> f64 {
    let f = m
        .get(name)
        .unwrap_or_else(|| panic!("no {name} in {:?}", m.keys()));
    let found: Vec<&Sample> = f
        .samples
        .iter()
        .filter(|s| {
            labels
                .iter()
                .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
        })
        .collect();
    assert_eq!(found.len(), 1, "{name} {labels:?}: {:?}", f.samples);
    found[0].value
}

/// The series `snap metrics --help` documents.
fn documented() -> Vec<String> {
    let out = snap_bin().args(["metrics", "--help"]).output().unwrap();
    assert!(out.status.success());
    let names: Vec<String> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .filter_map(|l| l.strip_prefix("  snap_"))
        .map(|n| format!("snap_{}", n.trim()))
        .collect();
    assert!(names.len() > 10, "{names:?}");
    names
}

/// Seconds since the epoch.
fn now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

fn metrics(env: &Env) -> BTreeMap<String, Family> {
    let out = env.snap(&["metrics"]).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    parse(&String::from_utf8(out.stdout).unwrap())
}

#[test]
fn metrics_parse_and_match_the_repository() {
    if !have_parser() {
        return;
    }
    let env = Env::new();
    env.init();
    let a = env.path("a");
    fs::create_dir_all(&a).unwrap();
    fs::write(a.join("one"), random_bytes(300_000, "one")).unwrap();
    // A source whose name needs every escape of a label value.
    let weird = env.path("we\"ird\\dir\nline2");
    fs::create_dir_all(&weird).unwrap();
    fs::write(weird.join("f"), b"weird").unwrap();
    let t0 = now();
    env.backup_json(&[a.to_str().unwrap()]);
    fs::write(a.join("two"), random_bytes(200_000, "two")).unwrap();
    env.backup_json(&[a.to_str().unwrap()]);
    env.backup_json(&[weird.to_str().unwrap()]);
    env.snap(&["drill"]).assert().success();
    env.snap(&["check", "--read-data"]).assert().success();
    let t1 = now();

    let m = metrics(&env);
    // Every documented series is there, as a gauge with its help; the run series only
    // in a profile's metrics_file.
    for name in documented() {
        // Run series live in a profile's metrics_file; WAL ones need an archive.
        if name.starts_with("snap_run_") || name.starts_with("snap_wal_") {
            assert!(!m.contains_key(&name), "{name}");
            continue;
        }
        let f = m.get(&name).unwrap_or_else(|| panic!("{name} missing"));
        assert_eq!(f.kind, "gauge", "{name}");
        assert!(!f.help.is_empty(), "{name}");
    }
    let snaps = env.snapshots();
    let host = snaps[0]["host"].as_str().unwrap().to_string();
    let ga = format!("path:{}", a.display());
    let gw = format!("path:{}", weird.display());
    let a_labels = [("host", host.as_str()), ("sources", ga.as_str())];
    assert_eq!(value(&m, "snap_snapshots", &a_labels), 2.0);
    // The label value comes back exactly, quote, backslash and newline included.
    assert_eq!(
        value(&m, "snap_snapshots", &[("sources", gw.as_str())]),
        1.0
    );
    let newest_a = &snaps[1];
    let t = chrono::DateTime::parse_from_rfc3339(newest_a["time"].as_str().unwrap()).unwrap();
    let last = value(&m, "snap_backup_last_timestamp_seconds", &a_labels);
    assert!(t0 - 1.0 <= last && last <= t1, "{t0} {last} {t1}");
    assert!((last - t.timestamp_micros() as f64 / 1e6).abs() < 1e-3);
    let summary = &newest_a["summary"];
    for (series, field) in [
        ("snap_backup_last_added_bytes", "bytes_added"),
        ("snap_backup_last_read_bytes", "bytes_read"),
        ("snap_backup_last_size_bytes", "bytes_total"),
        ("snap_backup_last_files", "files"),
        ("snap_backup_last_warnings", "warnings"),
        ("snap_backup_last_duration_seconds", "duration"),
    ] {
        assert_eq!(
            value(&m, series, &a_labels),
            summary[field].as_f64().unwrap(),
            "{series}"
        );
    }
    assert_eq!(
        value(&m, "snap_backup_last_size_bytes", &a_labels),
        500_000.0
    );
    assert_eq!(
        value(&m, "snap_repository_size_bytes", &[]),
        du(&env.repo().join("packs")) as f64
    );
    assert_eq!(value(&m, "snap_repository_snapshots", &[]), 3.0);
    // The drill of the group's newest snapshot, passed.
    let drilled = value(&m, "snap_drill_last_timestamp_seconds", &a_labels);
    assert!(last < drilled && drilled <= t1, "{last} {drilled} {t1}");
    assert_eq!(
        value(&m, "snap_drill_last_passed_timestamp_seconds", &a_labels),
        drilled
    );
    assert_eq!(value(&m, "snap_drill_last_success", &a_labels), 1.0);
    let rto = value(&m, "snap_drill_last_rto_seconds", &a_labels);
    assert!(rto > 0.0 && rto < t1 - t0, "{rto}");
    assert_eq!(value(&m, "snap_check_last_success", &[]), 1.0);
    assert_eq!(value(&m, "snap_check_last_errors", &[]), 0.0);
    assert_eq!(value(&m, "snap_check_last_read_data_ratio", &[]), 1.0);
    let checked = value(&m, "snap_check_last_timestamp_seconds", &[]);
    assert!(t0 <= checked && checked <= t1, "{t0} {checked} {t1}");
    let json = crate::util::json(env.snap(&["metrics", "--json"]));
    assert_eq!(json["groups"].as_array().unwrap().len(), 2, "{json}");

    // A structure-only check is recorded as such, and damage as a failed check.
    env.snap(&["check"]).assert().success();
    let m = metrics(&env);
    assert_eq!(value(&m, "snap_check_last_read_data_ratio", &[]), 0.0);
    let pack = largest_pack(&env.repo());
    let mut bytes = fs::read(&pack).unwrap();
    bytes[100] ^= 0xff;
    fs::set_permissions(&pack, fs::Permissions::from_mode(0o644)).unwrap();
    fs::write(&pack, bytes).unwrap();
    env.snap(&["check", "--read-data"]).assert().code(1);
    let m = metrics(&env);
    assert_eq!(value(&m, "snap_check_last_success", &[]), 0.0);
    assert!(value(&m, "snap_check_last_errors", &[]) >= 1.0);
    assert!(value(&m, "snap_check_last_timestamp_seconds", &[]) >= checked);

    // A damaged record is an error naming its file, not a panic.
    let record = env
        .index_cache_of(&env.repo())
        .with_file_name("last-check.json");
    fs::write(&record, b"{not json").unwrap();
    env.snap(&["metrics"])
        .assert()
        .code(1)
        .stderr(predicate::str::contains(record.display().to_string()));
}

#[test]
fn every_series_is_in_the_readme() {
    let readme =
        fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md")).unwrap();
    for name in documented() {
        assert!(readme.contains(&format!("`{name}`")), "README lacks {name}");
    }
}

/// A repository, and a directory `src` of one small file to back up.
fn with_source() -> (Env, PathBuf) {
    let env = Env::new();
    env.init();
    let src = env.path("src");
    fs::create_dir_all(&src).unwrap();
    fs::write(src.join("f"), b"data").unwrap();
    (env, src)
}

/// `snap` reading configuration `config`, with `env`'s caches.
fn with_config(env: &Env, config: &Path, args: &[&str]) -> assert_cmd::Command {
    let mut c = snap_bin();
    c.env_remove("SNAP_REPO")
        .env("SNAP_CACHE_DIR", env.cache())
        .env("SNAP_CONFIG", config)
        .args(args);
    c
}

/// The entries of `dir`, sorted.
fn names(dir: &Path) -> Vec<String> {
    let mut n: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    n.sort();
    n
}

#[test]
fn runs_write_the_metrics_file_atomically_on_success_and_failure() {
    if !have_parser() {
        return;
    }
    let (env, src) = with_source();
    let textfile = env.path("textfile");
    fs::create_dir_all(&textfile).unwrap();
    let config = env.path("snap.toml");
    let repo = env.repo();
    fs::write(
        &config,
        format!(
            r#"
[profile.ok]
repository = "{repo}"
paths = ["{src}"]
metrics_file = "{tf}/snap.prom"

[profile.broken]
repository = "{repo}"
commands = [{{ command = "echo oops >&2; exit 1", as = "x" }}]
metrics_file = "{tf}/broken.prom"

[profile.norepo]
repository = "{nowhere}"
paths = ["{src}"]
metrics_file = "{tf}/norepo.prom"
"#,
            repo = repo.display(),
            src = src.display(),
            tf = textfile.display(),
            nowhere = env.path("nowhere").display(),
        ),
    )
    .unwrap();
    let file = textfile.join("snap.prom");
    // Under a umask that would make it private: the collector must still read it.
    let run_ok = || {
        let t0 = now();
        let bin = assert_cmd::cargo::cargo_bin("snap");
        let status = Command::new("sh")
            .args(["-c", "umask 077; exec \"$0\" \"$@\"", bin.to_str().unwrap()])
            .args(["run", "ok", "-q"])
            .env_remove("SNAP_REPO")
            .env("SNAP_CACHE_DIR", env.cache())
            .env("SNAP_CONFIG", &config)
            .status()
            .unwrap();
        assert!(status.success());
        (t0, now())
    };
    let (t0, t1) = run_ok();
    assert_eq!(names(&textfile), ["snap.prom"], "no temp file is left");
    let md = fs::metadata(&file).unwrap();
    assert_eq!(md.mode() & 0o777, 0o644);
    let m = parse(&fs::read_to_string(&file).unwrap());
    let ok = [("profile", "ok")];
    assert_eq!(value(&m, "snap_run_success", &ok), 1.0);
    assert_eq!(value(&m, "snap_run_exit_status", &ok), 0.0);
    let ended = value(&m, "snap_run_last_timestamp_seconds", &ok);
    assert!(t0 <= ended && ended <= t1, "{t0} {ended} {t1}");
    assert!(value(&m, "snap_run_duration_seconds", &ok) <= t1 - t0);
    // Labelled with the profile too: another profile's file of the same repository
    // repeats no series.
    assert_eq!(value(&m, "snap_repository_snapshots", &ok), 1.0);
    // A second run replaces the file by a rename: a new inode, never the old one
    // rewritten in place (which a scrape could read half-written).
    run_ok();
    let md2 = fs::metadata(&file).unwrap();
    assert_ne!(md.ino(), md2.ino());
    assert_eq!(md2.mode() & 0o777, 0o644);
    let m = parse(&fs::read_to_string(&file).unwrap());
    assert_eq!(value(&m, "snap_repository_snapshots", &ok), 2.0);

    // A failed run shows as failed, with the repository's series.
    with_config(&env, &config, &["run", "broken"])
        .assert()
        .code(1);
    let m = parse(&fs::read_to_string(textfile.join("broken.prom")).unwrap());
    let broken = [("profile", "broken")];
    assert_eq!(value(&m, "snap_run_success", &broken), 0.0);
    assert_eq!(value(&m, "snap_run_exit_status", &broken), 1.0);
    assert_eq!(value(&m, "snap_repository_snapshots", &broken), 2.0);
    // A repository that cannot be read: the run's series alone, and a warning.
    with_config(&env, &config, &["run", "norepo"])
        .assert()
        .code(1)
        .stderr(predicate::str::contains(
            "the repository's series are left out",
        ));
    let m = parse(&fs::read_to_string(textfile.join("norepo.prom")).unwrap());
    assert_eq!(value(&m, "snap_run_success", &[("profile", "norepo")]), 0.0);
    assert!(!m.contains_key("snap_repository_size_bytes"));
    assert_eq!(
        names(&textfile),
        ["broken.prom", "norepo.prom", "snap.prom"]
    );
}

/// A real HTTP server on loopback (Python's `http.server`) that answers every request
/// with 200 (500 when the path holds `err500`) and logs each as a JSON line: method,
/// path, body.
struct PingServer {
    child: Child,
    port: u16,
    log: PathBuf,
}

impl PingServer {
    /// Serves plain HTTP, or HTTPS with `tls`'s certificate and key files.
    fn start(dir: &Path, tls: Option<(&Path, &Path)>) -> PingServer {
        let script = r#"
import http.server, json, sys
log, portfile = sys.argv[1], sys.argv[2]
class H(http.server.BaseHTTPRequestHandler):
    def handle_one(self):
        n = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(n).decode("utf-8", "replace")
        with open(log, "a") as f:
            f.write(json.dumps({"method": self.command, "path": self.path, "body": body}) + "\n")
        self.send_response(500 if "err500" in self.path else 200)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"OK")
    do_GET = do_POST = do_HEAD = handle_one
    def log_message(self, *a):
        pass
s = http.server.HTTPServer(("127.0.0.1", 0), H)
if len(sys.argv) > 3:
    import ssl
    tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    tls.load_cert_chain(sys.argv[3], sys.argv[4])
    s.socket = tls.wrap_socket(s.socket, server_side=True)
with open(portfile + ".tmp", "w") as f:
    f.write(str(s.server_address[1]))
import os; os.rename(portfile + ".tmp", portfile)
s.serve_forever()
"#;
        let log = dir.join("pings.jsonl");
        let portfile = dir.join("port");
        let mut child = Command::new("python3")
            .args(["-c", script])
            .arg(&log)
            .arg(&portfile)
            .args(tls.iter().flat_map(|(cert, key)| [cert, key]))
            .spawn()
            .unwrap();
        let start = Instant::now();
        let port = loop {
            if let Ok(p) = fs::read_to_string(&portfile) {
                break p.trim().parse().unwrap();
            }
            if let Ok(Some(status)) = child.try_wait() {
                panic!("the ping server exited with {status}");
            }
            assert!(start.elapsed() < Duration::from_secs(30));
            std::thread::sleep(Duration::from_millis(50));
        };
        PingServer { child, port, log }
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}/{path}", self.port)
    }

    /// The requests so far, and forgets them.
    fn take(&self) -> Vec<serde_json::Value> {
        let text = fs::read_to_string(&self.log).unwrap_or_default();
        let _ = fs::remove_file(&self.log);
        text.lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }
}

impl Drop for PingServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn pings_arrive_in_order_and_never_change_the_outcome() {
    let (env, src) = with_source();
    let server = PingServer::start(env.dir.path(), None);
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    // An error longer than a ping carries: its command line alone is 20 000 bytes.
    let long = format!("echo the-end-marker >&2; exit 1 # {}", "x".repeat(20_000));
    let config = env.path("snap.toml");
    fs::write(
        &config,
        format!(
            r#"
[profile.good]
repository = "{repo}"
paths = ["{src}"]
ping = "{good}"

[profile.bad]
repository = "{repo}"
commands = [{{ command = "{long}", as = "x" }}]
ping = "{bad}"

[profile.refused]
repository = "{repo}"
paths = ["{src}"]
ping = "http://user:hunter2@127.0.0.1:{closed}/secret-uuid"

[profile.err]
repository = "{repo}"
paths = ["{src}"]
ping = "{err}"
"#,
            repo = env.repo().display(),
            src = src.display(),
            good = server.url("good-uuid"),
            bad = server.url("bad-uuid/"),
            err = server.url("err500-uuid"),
        ),
    )
    .unwrap();
    let paths = |reqs: &[serde_json::Value]| -> Vec<String> {
        reqs.iter()
            .map(|r| {
                format!(
                    "{} {}",
                    r["method"].as_str().unwrap(),
                    r["path"].as_str().unwrap()
                )
            })
            .collect()
    };

    with_config(&env, &config, &["run", "good"])
        .assert()
        .success();
    let reqs = server.take();
    assert_eq!(paths(&reqs), ["POST /good-uuid/start", "POST /good-uuid"]);
    assert!(
        reqs[1]["body"].as_str().unwrap().contains("exit 0"),
        "{reqs:?}"
    );

    with_config(&env, &config, &["run", "bad"])
        .assert()
        .code(1)
        .stderr(predicate::str::contains("the-end-marker"));
    let reqs = server.take();
    assert_eq!(
        paths(&reqs),
        ["POST /bad-uuid/start", "POST /bad-uuid/fail"]
    );
    let body = reqs[1]["body"].as_str().unwrap();
    assert!(body.len() <= 10_000 && body.len() > 9_000, "{}", body.len());
    assert!(
        body.trim_end().ends_with("the-end-marker"),
        "the end of the error: {body}"
    );

    // Undeliverable pings are warnings naming the host only; the run succeeds.
    with_config(&env, &config, &["run", "refused"])
        .assert()
        .success()
        .stderr(
            predicate::str::contains(format!(
                "snap: warning: ping (start) to http://127.0.0.1:{closed} not delivered"
            ))
            .and(predicate::str::contains(format!(
                "snap: warning: ping (success) to http://127.0.0.1:{closed} not delivered"
            )))
            .and(predicate::str::contains("secret-uuid").not())
            .and(predicate::str::contains("hunter2").not()),
        );
    with_config(&env, &config, &["run", "err"])
        .assert()
        .success()
        .stderr(predicate::str::contains("500").and(predicate::str::contains("err500-uuid").not()));
    assert_eq!(
        paths(&server.take()),
        ["POST /err500-uuid/start", "POST /err500-uuid"]
    );
    assert_eq!(env.snapshots().len(), 3);

    // A ping that is no URL is refused with its line.
    fs::write(
        &config,
        format!(
            "[profile.p]\nrepository = \"{}\"\nping = \"hc-ping.com/x\"\n",
            env.repo().display()
        ),
    )
    .unwrap();
    with_config(&env, &config, &["run", "p"])
        .assert()
        .code(1)
        .stderr(
            predicate::str::contains("line 3")
                .and(predicate::str::contains("http:// or https:// URL")),
        );
}

#[test]
fn a_ping_without_an_answer_gives_up_after_ten_seconds() {
    let (env, src) = with_source();
    // Connections complete (the kernel queues them) but nothing ever answers.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = silent.local_addr().unwrap().port();
    let config = env.path("snap.toml");
    fs::write(
        &config,
        format!(
            "[profile.p]\nrepository = \"{}\"\npaths = [\"{}\"]\nping = \"http://127.0.0.1:{port}/k\"\n",
            env.repo().display(),
            src.display()
        ),
    )
    .unwrap();
    let clock = Instant::now();
    with_config(&env, &config, &["run", "p"])
        .assert()
        .success()
        .stderr(
            predicate::str::contains("ping (start)")
                .and(predicate::str::contains("ping (success)")),
        );
    // Two pings of 10 s each, and the backup; reqwest's own default would wait 30 s each.
    let took = clock.elapsed();
    assert!(
        took >= Duration::from_secs(19) && took < Duration::from_secs(45),
        "{took:?}"
    );
    assert_eq!(env.snapshots().len(), 1);
    drop(silent);
}

#[test]
fn https_pings_check_the_server_certificate() {
    let (env, src) = with_source();
    let (cert, key) = (env.path("cert.pem"), env.path("key.pem"));
    let made = Command::new("openssl")
        .args([
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
        ])
        .args([
            "-subj",
            "/CN=127.0.0.1",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
        ])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !made {
        missing("openssl (to make a certificate)", "apt-get install openssl");
        return;
    }
    let server = PingServer::start(env.dir.path(), Some((&cert, &key)));
    let config = env.path("snap.toml");
    fs::write(
        &config,
        format!(
            "[profile.p]\nrepository = \"{}\"\npaths = [\"{}\"]\nping = \"https://127.0.0.1:{}/k\"\n",
            env.repo().display(),
            src.display(),
            server.port
        ),
    )
    .unwrap();
    // The TLS handshake happens, and a certificate no trusted root signed is refused:
    // the ping is not sent, the run succeeds.
    with_config(&env, &config, &["run", "p"])
        .assert()
        .success()
        .stderr(
            predicate::str::contains(format!("ping (start) to https://127.0.0.1:{}", server.port))
                .and(predicate::str::contains("certificate")),
        );
    assert!(server.take().is_empty());
}
