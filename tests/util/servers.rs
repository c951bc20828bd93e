//! Real storage servers on loopback for the offsite tests: moto (an AWS S3 emulator,
//! from PyPI) where a test needs what AWS does, and OpenSSH's sshd with its SFTP
//! subsystem (the everyday S3 server is Garage, in `garage.rs`). Each is started in a
//! scratch directory and killed on drop. sshd runs OpenSSH's
//! `sftp-server` with its log on, so tests can see which SFTP requests arrived, and can
//! list the processes that talk to it.

use std::net::TcpListener;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::missing;

/// Runs Python `code` with `s3`, a boto3 client of `endpoint` signing with `keys` in
/// `region` (boto3 comes with moto), and `bucket` and `arg` defined; its standard
/// output.
pub fn boto3(
    endpoint: &str,
    (key_id, secret): (&str, &str),
    region: &str,
    bucket: &str,
    code: &str,
    arg: &str,
) -> String {
    let script = format!(
        r#"
import sys, boto3
ep, key_id, secret, bucket, arg = sys.argv[1:6]
s3 = boto3.client("s3", endpoint_url=ep, aws_access_key_id=key_id,
                  aws_secret_access_key=secret, region_name="{region}")
{code}"#
    );
    let out = Command::new("python3")
        .args(["-c", &script, endpoint, key_id, secret, bucket, arg])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// A loopback port nothing listens on (at the time of asking).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub(super) fn wait_for_port(port: u16, child: &mut Child, what: &str) {
    let start = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        if let Ok(Some(status)) = child.try_wait() {
            panic!("{what} exited with {status} before listening on {port}");
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "{what} did not listen on {port} within a minute"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn found(cmd: &str, args: &[&str]) -> bool {
    Command::new(cmd)
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok()
}

/// moto, an emulator of AWS S3 in server mode (PyPI), with one bucket: where a test
/// needs what AWS does and Garage does not (conditional writes).
pub struct Moto {
    child: Child,
    pub endpoint: String,
    pub bucket: String,
}

impl Moto {
    /// Starts moto on a free port and creates bucket `snap`; `None` (said, or a
    /// failure in CI) when moto is not installed.
    pub fn start() -> Option<Moto> {
        let has_moto = Command::new("python3")
            .args(["-c", "import moto.server"])
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !has_moto {
            missing(
                "an S3-compatible server (moto in server mode)",
                "python3 -m pip install 'moto[server]'",
            );
            return None;
        }
        let port = free_port();
        let mut child = Command::new("python3")
            .args([
                "-m",
                "moto.server",
                "-H",
                "127.0.0.1",
                "-p",
                &port.to_string(),
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        wait_for_port(port, &mut child, "moto.server");
        let s3 = Moto {
            child,
            endpoint: format!("http://127.0.0.1:{port}"),
            bucket: "snap".into(),
        };
        let ok = Command::new("python3")
            .args([
                "-c",
                "import sys, urllib.request; urllib.request.urlopen(urllib.request.Request(sys.argv[1], method='PUT'))",
                &format!("{}/{}", s3.endpoint, s3.bucket),
            ])
            .status()
            .unwrap();
        assert!(ok.success(), "creating the bucket failed");
        Some(s3)
    }

    /// `s3://bucket/prefix`.
    pub fn url(&self, prefix: &str) -> String {
        format!("s3://{}/{prefix}", self.bucket)
    }

    /// The environment a client needs.
    pub fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("AWS_ENDPOINT_URL", self.endpoint.clone()),
            ("AWS_ACCESS_KEY_ID", MOTO_KEY.into()),
            ("AWS_SECRET_ACCESS_KEY", MOTO_KEY.into()),
            ("AWS_REGION", MOTO_REGION.into()),
        ]
    }

    /// Writes object `key` of the bucket, readable by anyone (ACL `public-read`); the
    /// upload itself is signed.
    pub fn put_public(&self, key: &str, bytes: &[u8]) {
        let f = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(f.path(), bytes).unwrap();
        boto3(
            &self.endpoint,
            (MOTO_KEY, MOTO_KEY),
            MOTO_REGION,
            &self.bucket,
            "key, path = arg.split('\\n')\n\
             s3.put_object(Bucket=bucket, Key=key, ACL='public-read', Body=open(path, 'rb').read())",
            &format!("{key}\n{}", f.path().display()),
        );
    }
}

/// The access key id and secret moto accepts (any would do), and its region.
const MOTO_KEY: &str = "testing";
const MOTO_REGION: &str = "us-east-1";

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// OpenSSH's sshd on a free port, accepting one generated key, which an ssh-agent of
/// its own holds (so clients authenticate the usual way, through SSH_AUTH_SOCK).
pub struct Sshd {
    dir: tempfile::TempDir,
    sshd: Option<Child>,
    agent: Child,
    pub port: u16,
}

fn sshd_bin() -> Option<PathBuf> {
    ["/usr/sbin/sshd", "/usr/bin/sshd"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
}

fn sftp_server_bin() -> Option<PathBuf> {
    [
        "/usr/lib/openssh/sftp-server",
        "/usr/libexec/openssh/sftp-server",
        "/usr/libexec/sftp-server",
    ]
    .iter()
    .map(PathBuf::from)
    .find(|p| p.exists())
}

/// The processes of this machine: (pid, parent pid, command line).
fn processes() -> Vec<(u32, u32, String)> {
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let (Ok(stat), Ok(cmdline)) = (
            std::fs::read_to_string(e.path().join("stat")),
            std::fs::read(e.path().join("cmdline")),
        ) else {
            continue;
        };
        // `pid (comm) state ppid ...`; comm may hold spaces.
        let Some(after) = stat.rsplit_once(')').map(|(_, a)| a) else {
            continue;
        };
        let ppid = after.split_whitespace().nth(1).and_then(|g| g.parse().ok());
        let cmd = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        if let (Some(ppid), false) = (ppid, cmd.is_empty()) {
            out.push((pid, ppid, cmd.trim_end().to_string()));
        }
    }
    out
}

impl Sshd {
    /// Starts sshd and an agent; `None` (said, or a failure in CI) without OpenSSH.
    pub fn start() -> Option<Sshd> {
        let (Some(_), Some(sftp_server), true) =
            (sshd_bin(), sftp_server_bin(), found("ssh-keygen", &["-?"]))
        else {
            missing(
                "OpenSSH's sshd and sftp-server",
                "Debian: apt-get install openssh-server",
            );
            return None;
        };
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        // sftp-server logs every request (VERBOSE: open, fsync, rename, remove, ...).
        let wrapper = d.join("sftp-logged");
        std::fs::write(
            &wrapper,
            format!(
                "#!/bin/sh\nexec {} -e -l VERBOSE 2>>{}\n",
                sftp_server.display(),
                d.join("sftp.log").display()
            ),
        )
        .unwrap();
        std::fs::set_permissions(&wrapper, std::fs::Permissions::from_mode(0o755)).unwrap();
        for (name, file) in [("host", "host_key"), ("user", "id_ed25519")] {
            let ok = Command::new("ssh-keygen")
                .args(["-q", "-t", "ed25519", "-N", "", "-C", name, "-f"])
                .arg(d.join(file))
                .status()
                .unwrap();
            assert!(ok.success());
        }
        std::fs::copy(d.join("id_ed25519.pub"), d.join("authorized_keys")).unwrap();
        let agent_sock = d.join("agent.sock");
        let mut agent = Command::new("ssh-agent")
            .arg("-D")
            .arg("-a")
            .arg(&agent_sock)
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        let start = Instant::now();
        while !agent_sock.exists() {
            assert!(agent.try_wait().unwrap().is_none(), "ssh-agent exited");
            assert!(start.elapsed() < Duration::from_secs(30));
            std::thread::sleep(Duration::from_millis(50));
        }
        let ok = Command::new("ssh-add")
            .arg(d.join("id_ed25519"))
            .env("SSH_AUTH_SOCK", &agent_sock)
            .stderr(Stdio::null())
            .status()
            .unwrap();
        assert!(ok.success(), "ssh-add failed");
        let mut s = Sshd {
            port: free_port(),
            dir,
            sshd: None,
            agent,
        };
        s.run_sshd();
        Some(s)
    }

    fn run_sshd(&mut self) {
        let d = self.dir.path();
        let config = format!(
            "Port {}\nListenAddress 127.0.0.1\nHostKey {}\nAuthorizedKeysFile {}\nPidFile {}\nStrictModes no\nUsePAM no\nPermitRootLogin prohibit-password\nSubsystem sftp {}\n",
            self.port,
            d.join("host_key").display(),
            d.join("authorized_keys").display(),
            d.join("sshd.pid").display(),
            d.join("sftp-logged").display(),
        );
        std::fs::write(d.join("sshd_config"), config).unwrap();
        // sshd wants its privilege separation directory.
        let _ = std::fs::create_dir_all("/run/sshd");
        // Its own process group, so stop() ends the per-connection processes too.
        let mut child = Command::new(sshd_bin().unwrap())
            .process_group(0)
            .arg("-D")
            .arg("-e")
            .arg("-f")
            .arg(d.join("sshd_config"))
            .stderr(std::fs::File::create(d.join("sshd.log")).unwrap())
            .spawn()
            .unwrap();
        wait_for_port(self.port, &mut child, "sshd");
        self.sshd = Some(child);
    }

    /// `sftp://user@127.0.0.1:port/<path>` for this process's user.
    pub fn url(&self, path: &Path) -> String {
        let user = std::env::var("USER").unwrap_or_else(|_| "root".into());
        format!("sftp://{user}@127.0.0.1:{}{}", self.port, path.display())
    }

    /// The environment a client needs: the agent, and trust in this host's key.
    pub fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            (
                "SSH_AUTH_SOCK",
                self.dir.path().join("agent.sock").display().to_string(),
            ),
            ("SNAP_SSH_KNOWN_HOSTS", "accept".into()),
        ]
    }

    /// What sftp-server logged so far, one request a line (`open "/path" flags ...`,
    /// `fsync "/path"`, `posix-rename old "/a" new "/b"`, `remove name "/path"`).
    pub fn sftp_log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("sftp.log")).unwrap_or_default()
    }

    /// The processes still talking to this server: `ssh` clients whose command line
    /// names its port (`client PID: CMD`), and the descendants of the sshd listener,
    /// its per-connection processes and their sftp-server (`server PID: CMD`).
    pub fn connected(&self) -> Vec<String> {
        let listener = self.sshd.as_ref().map(std::process::Child::id);
        let port = self.port.to_string();
        let all = processes();
        let parent: std::collections::HashMap<u32, u32> =
            all.iter().map(|(pid, ppid, _)| (*pid, *ppid)).collect();
        let below_listener = |mut pid: u32| {
            while let Some(&up) = parent.get(&pid) {
                if Some(up) == listener {
                    return true;
                }
                pid = up;
            }
            false
        };
        all.iter()
            .filter_map(|(pid, _, cmd)| {
                let client = cmd.starts_with("ssh ") && cmd.split([' ', ':']).any(|w| w == port);
                let side = match (client, below_listener(*pid)) {
                    (true, _) => "client",
                    (_, true) => "server",
                    _ => return None,
                };
                Some(format!("{side} {pid}: {cmd}"))
            })
            .collect()
    }

    /// Stops sshd, dropping open connections.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.sshd.take() {
            let _ = Command::new("kill")
                .args(["-KILL", "--", &format!("-{}", c.id())])
                .status();
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts sshd again on the same port.
    pub fn restart(&mut self) {
        self.stop();
        self.run_sshd();
    }

    /// Starts sshd again on the same port with a new host key, as a reinstalled
    /// server (or one intercepting the connection) would present.
    pub fn restart_with_new_host_key(&mut self) {
        self.stop();
        let key = self.dir.path().join("host_key");
        std::fs::remove_file(&key).unwrap();
        std::fs::remove_file(key.with_extension("pub")).unwrap();
        let ok = Command::new("ssh-keygen")
            .args(["-q", "-t", "ed25519", "-N", "", "-C", "host", "-f"])
            .arg(&key)
            .status()
            .unwrap();
        assert!(ok.success());
        self.run_sshd();
    }

    /// The port sshd listens on.
    pub fn port(&self) -> u16 {
        self.port
    }
}

impl Drop for Sshd {
    fn drop(&mut self) {
        self.stop();
        let _ = self.agent.kill();
        let _ = self.agent.wait();
    }
}
