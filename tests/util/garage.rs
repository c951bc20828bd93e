//! Garage, a self-hosted distributed S3-compatible store (crates.io `garage`), on
//! loopback: one node for the everyday S3 tests, or a cluster of three nodes in three
//! zones with replication 3 for the fault tests. Each node has its own scratch
//! directories, ports and process, so a test can kill a node and start it again.
//!
//! The binary is `$SNAP_TEST_GARAGE`, else `garage` on the PATH, else the one
//! `.ci/run` builds into its cache (`/var/cache/snap-ci/garage/bin/garage`).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::missing;
use super::servers::{boto3, free_port, wait_for_port};

/// The access key the tests use (Garage's key ids are `GK` and 24 hex digits).
const KEY_ID: &str = "GK5eb1a7e5a1f0c0ffee5eb1a7";
const SECRET: &str = "5eb1a7e5a1f0c0ffee5eb1a7e5a1f0c0ffee5eb1a7e5a1f0c0ffee5eb1a7e5a1";
const RPC_SECRET: &str = "a57fd3a7d05b3c9c8f0e1d2c3b4a59687766554433221100ffeeddccbbaa9988";
const REGION: &str = "garage";

fn garage_bin() -> Option<PathBuf> {
    let runs = |p: &Path| {
        Command::new(p)
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    let candidates = [
        std::env::var_os("SNAP_TEST_GARAGE").map(PathBuf::from),
        Some(PathBuf::from("garage")),
        Some(PathBuf::from("/var/cache/snap-ci/garage/bin/garage")),
    ];
    candidates.into_iter().flatten().find(|p| runs(p))
}

/// One Garage process and its directories.
struct Node {
    config: PathBuf,
    s3_port: u16,
    rpc_port: u16,
    admin_port: u16,
    child: Option<Child>,
    log: PathBuf,
}

/// A running Garage cluster (one node or three) with bucket `snap` and a key that may
/// read and write it.
pub struct Garage {
    bin: PathBuf,
    _dir: tempfile::TempDir,
    nodes: Vec<Node>,
    pub bucket: String,
}

impl Garage {
    /// One node, replication 1.
    pub fn single() -> Option<Garage> {
        Garage::start(1)
    }

    /// Three nodes in three zones, replication 3 (writes and reads need two of them).
    pub fn cluster() -> Option<Garage> {
        Garage::start(3)
    }

    fn start(n: usize) -> Option<Garage> {
        let Some(bin) = garage_bin() else {
            missing(
                "Garage, an S3-compatible object store",
                "cargo install garage --locked, or .ci/run",
            );
            return None;
        };
        let dir = tempfile::tempdir().unwrap();
        let mut nodes = Vec::new();
        for i in 0..n {
            let root = dir.path().join(format!("node{i}"));
            std::fs::create_dir_all(&root).unwrap();
            let (s3_port, rpc_port, admin_port) = (free_port(), free_port(), free_port());
            let config = root.join("garage.toml");
            std::fs::write(
                &config,
                format!(
                    r#"metadata_dir = "{root}/meta"
data_dir = "{root}/data"
db_engine = "sqlite"
replication_factor = {n}
consistency_mode = "consistent"
metadata_fsync = false
data_fsync = false
rpc_bind_addr = "127.0.0.1:{rpc_port}"
rpc_public_addr = "127.0.0.1:{rpc_port}"
rpc_secret = "{RPC_SECRET}"

[s3_api]
s3_region = "{REGION}"
api_bind_addr = "127.0.0.1:{s3_port}"
root_domain = ".s3.garage.localhost"

[admin]
api_bind_addr = "127.0.0.1:{admin_port}"
"#,
                    root = root.display(),
                ),
            )
            .unwrap();
            nodes.push(Node {
                config,
                s3_port,
                rpc_port,
                admin_port,
                child: None,
                log: root.join("garage.log"),
            });
        }
        let mut g = Garage {
            bin,
            _dir: dir,
            nodes,
            bucket: "snap".into(),
        };
        for i in 0..n {
            g.start_node(i);
        }
        let ids: Vec<String> = (0..n)
            .map(|i| {
                let out = g.cli_on(i, &["node", "id", "-q"]);
                out.trim().split('@').next().unwrap().to_string()
            })
            .collect();
        for (id, node) in ids.iter().zip(&g.nodes).skip(1) {
            g.cli(&[
                "node",
                "connect",
                &format!("{id}@127.0.0.1:{}", node.rpc_port),
            ]);
        }
        for (i, id) in ids.iter().enumerate() {
            g.cli(&["layout", "assign", "-z", &format!("dc{i}"), "-c", "1G", id]);
        }
        g.cli(&["layout", "apply", "--version", "1"]);
        g.cli(&["key", "import", "--yes", KEY_ID, SECRET, "-n", "snap-tests"]);
        // The layout reaches every node before a bucket can be made.
        g.retry(&["bucket", "create", "snap"]);
        g.cli(&[
            "bucket", "allow", "--read", "--write", "--owner", "snap", "--key", KEY_ID,
        ]);
        Some(g)
    }

    fn start_node(&mut self, i: usize) {
        let node = &mut self.nodes[i];
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&node.log)
            .unwrap();
        let mut child = Command::new(&self.bin)
            .arg("-c")
            .arg(&node.config)
            .arg("server")
            .env("RUST_LOG", "garage=warn")
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        wait_for_port(node.rpc_port, &mut child, "garage");
        wait_for_port(node.s3_port, &mut child, "garage");
        node.child = Some(child);
    }

    /// `garage` CLI on node `i`: its standard output, or what it said on failure.
    fn try_cli(&self, i: usize, args: &[&str]) -> Result<String, String> {
        let out = Command::new(&self.bin)
            .arg("-c")
            .arg(&self.nodes[i].config)
            .args(args)
            .env("RUST_LOG", "warn")
            .output()
            .unwrap();
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).into_owned())
        }
    }

    /// `garage` CLI on node `i`, which must succeed; its standard output.
    fn cli_on(&self, i: usize, args: &[&str]) -> String {
        self.try_cli(i, args)
            .unwrap_or_else(|e| panic!("garage {args:?} failed: {e}"))
    }

    fn cli(&self, args: &[&str]) -> String {
        self.cli_on(0, args)
    }

    /// Like `cli`, tried again for up to 30 s while the cluster settles.
    fn retry(&self, args: &[&str]) {
        let start = Instant::now();
        while self.try_cli(0, args).is_err() {
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "garage {args:?} kept failing for 30 s"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// The S3 endpoint of node `i`.
    pub fn endpoint_of(&self, i: usize) -> String {
        format!("http://127.0.0.1:{}", self.s3_port(i))
    }

    /// The S3 port of node `i`.
    pub fn s3_port(&self, i: usize) -> u16 {
        self.nodes[i].s3_port
    }

    /// How many S3 requests of `kind` (`GetObject`, `PutObject`, ...) node `i` has
    /// served, from its Prometheus metrics.
    pub fn requests(&self, i: usize, kind: &str) -> u64 {
        use std::io::{Read, Write};
        let mut c = std::net::TcpStream::connect(("127.0.0.1", self.nodes[i].admin_port)).unwrap();
        c.write_all(b"GET /metrics HTTP/1.0\r\nHost: localhost\r\n\r\n")
            .unwrap();
        let mut text = String::new();
        c.read_to_string(&mut text).unwrap();
        let label = format!("api_endpoint=\"{kind}\"");
        text.lines()
            .filter(|l| l.starts_with("api_s3_request_counter{") && l.contains(&label))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
            .sum()
    }

    /// Runs Python `code` with `s3`, a boto3 client of node 0 (boto3 comes with moto),
    /// `bucket` and `arg` defined; its standard output.
    fn boto3(&self, code: &str, arg: &str) -> String {
        self.boto3_in(&self.bucket, code, arg)
    }

    /// [`Garage::boto3`] on another bucket.
    fn boto3_in(&self, bucket: &str, code: &str, arg: &str) -> String {
        boto3(
            &self.endpoint_of(0),
            (KEY_ID, SECRET),
            REGION,
            bucket,
            code,
            arg,
        )
    }

    /// Flips one byte in the middle of object `key` of the bucket.
    pub fn damage(&self, key: &str) {
        self.boto3(
            r#"
body = bytearray(s3.get_object(Bucket=bucket, Key=arg)["Body"].read())
body[len(body) // 2] ^= 0xFF
s3.put_object(Bucket=bucket, Key=arg, Body=bytes(body))
"#,
            key,
        );
    }

    /// The keys below `prefix` and their sizes.
    pub fn objects(&self, prefix: &str) -> Vec<(String, u64)> {
        self.boto3(
            r#"
for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=arg):
    for o in page.get("Contents", []):
        print(o["Key"], o["Size"])
"#,
            prefix,
        )
        .lines()
        .map(|l| {
            let (k, n) = l.rsplit_once(' ').unwrap();
            (k.to_string(), n.parse().unwrap())
        })
        .collect()
    }

    /// Creates bucket `name`, which the tests' key may read and write.
    pub fn create_bucket(&self, name: &str) {
        self.cli(&["bucket", "create", name]);
        self.cli(&[
            "bucket", "allow", "--read", "--write", "--owner", name, "--key", KEY_ID,
        ]);
    }

    /// The tests' access key id and secret.
    pub fn keys() -> (&'static str, &'static str) {
        (KEY_ID, SECRET)
    }

    /// Writes object `key` of `bucket`.
    pub fn put(&self, bucket: &str, key: &str, bytes: &[u8]) {
        let f = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(f.path(), bytes).unwrap();
        let arg = format!("{key}\n{}", f.path().display());
        self.boto3_in(
            bucket,
            "key, path = arg.split('\\n')\ns3.put_object(Bucket=bucket, Key=key, Body=open(path, 'rb').read())",
            &arg,
        );
    }

    /// Writes `n` objects `{prefix}{i:03}` of the bucket, of one byte each.
    pub fn put_many(&self, prefix: &str, n: usize) {
        self.boto3(
            &format!("for i in range({n}):\n    s3.put_object(Bucket=bucket, Key=f'{{arg}}{{i:03}}', Body=b'x')"),
            prefix,
        );
    }

    /// Object `key` of `bucket`, `None` when there is none.
    pub fn get(&self, bucket: &str, key: &str) -> Option<Vec<u8>> {
        let f = tempfile::NamedTempFile::new().unwrap();
        let arg = format!("{key}\n{}", f.path().display());
        let found = self.boto3_in(
            bucket,
            r#"
key, path = arg.split('\n')
try:
    body = s3.get_object(Bucket=bucket, Key=key)["Body"].read()
except s3.exceptions.NoSuchKey:
    print("missing")
else:
    open(path, "wb").write(body)
"#,
            &arg,
        );
        (found.trim() != "missing").then(|| std::fs::read(f.path()).unwrap())
    }

    /// Deletes object `key` of `bucket`.
    pub fn delete(&self, bucket: &str, key: &str) {
        self.boto3_in(bucket, "s3.delete_object(Bucket=bucket, Key=arg)", key);
    }

    /// `s3://bucket/prefix`.
    pub fn url(&self, prefix: &str) -> String {
        format!("s3://{}/{prefix}", self.bucket)
    }

    /// The environment a client of node `i` needs.
    pub fn env_of(&self, i: usize) -> Vec<(&'static str, String)> {
        vec![
            ("AWS_ENDPOINT_URL", self.endpoint_of(i)),
            ("AWS_ACCESS_KEY_ID", KEY_ID.into()),
            ("AWS_SECRET_ACCESS_KEY", SECRET.into()),
            ("AWS_REGION", REGION.into()),
        ]
    }

    /// The environment a client of the first node needs.
    pub fn env(&self) -> Vec<(&'static str, String)> {
        self.env_of(0)
    }

    /// Kills node `i` at once (SIGKILL: no goodbye to its peers).
    pub fn kill_node(&mut self, i: usize) {
        if let Some(mut c) = self.nodes[i].child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts node `i` again, with the data it had, and waits until it sees every
    /// node up and serves the bucket (a node just started answers S3 with 503 until
    /// it has found its peers).
    pub fn restart_node(&mut self, i: usize) {
        self.start_node(i);
        let start = Instant::now();
        loop {
            let status = self.try_cli(i, &["status"]);
            let ready = status
                .is_ok_and(|s| !s.contains("FAILED NODES") && !s.contains("draining"))
                && self.try_cli(i, &["bucket", "info", "snap"]).is_ok();
            if ready {
                return;
            }
            assert!(
                start.elapsed() < Duration::from_secs(60),
                "garage node {i} did not rejoin within a minute"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Stops every node (their data is gone with the scratch directory).
    pub fn kill(&mut self) {
        for i in 0..self.nodes.len() {
            self.kill_node(i);
        }
    }
}

impl Drop for Garage {
    fn drop(&mut self) {
        self.kill();
    }
}
