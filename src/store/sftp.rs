//! The SFTP store: the user's own `ssh` (its config, agent and keys), started once per
//! store as `ssh -s ssh://[user@]host[:port] sftp`, its pipes driven by
//! openssh-sftp-client.
//!
//! Processes: that one `ssh` child and nothing else; no ControlMaster is started (a
//! master of the user's own, if configured, is used as any ssh would), so nothing
//! outlives the run. Dropping the store closes the SFTP channel and waits for `ssh` to
//! exit; a process killed outright closes `ssh`'s standard input, and `ssh` ends too.
//!
//! Writes: a file goes to `tmp/<writer>.<random>` (see [`super::temp_prefix`]), is
//! fsynced with the `fsync@openssh.com` extension, closed, renamed into place with
//! `posix-rename@openssh.com` (atomic, replacing), then opened again under its final
//! name and fsynced once more. SFTP has no directory fsync: that last fsync makes the
//! rename durable on file systems whose journal commits in order (ext4, XFS), which
//! POSIX alone does not promise. Durable deletions end with the same kind of barrier:
//! a temp file written and fsynced, then removed. A server without the fsync extension
//! gets a warning once and writes that are atomic but not durable. Failed calls are not
//! retried: the command fails naming the file, and a rerun resumes.

use std::borrow::Cow;
use std::collections::VecDeque;
use std::pin::pin;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_core::Stream;
use openssh_sftp_client::error::SftpErrorKind;
use openssh_sftp_client::file::{File, TokioCompatFile};
use openssh_sftp_client::{Error as SftpError, Sftp as Client, SftpOptions};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncSeekExt, AsyncWriteExt};
use tokio::process::Child;
use tokio::task::JoinSet;

use super::remote::RUNTIME;
use super::{temp_name, too_large, Entry, HostKeys, RemoteOptions, Store};
use crate::error::{Error, IoContext, Result};
use crate::locked;

/// Lines of ssh's standard error kept for messages: enough for the whole of its
/// warning about a changed host key (13 lines), whose first line says what happened.
const SAID_LINES: usize = 32;
/// Part size of uploads from a local file.
const PART: usize = 8 << 20;
/// How long `ssh` may take to exit once its channel is closed.
const EXIT_WAIT: Duration = Duration::from_secs(10);

/// A repository on an SFTP server; see the module docs.
pub struct Sftp {
    url: String,
    /// The repository's absolute path on the server, without a trailing `/`.
    root: String,
    client: Option<Arc<Client>>,
    ssh: Mutex<Option<Child>>,
    /// The last lines ssh wrote to its standard error.
    said: Arc<Mutex<VecDeque<String>>>,
    /// Whether the server offers `fsync@openssh.com`.
    fsync: bool,
}

/// Why ssh could not open the SFTP session, from what it said (`said`, its last lines)
/// or else `e`, and what to do.
fn login_failure(said: &VecDeque<String>, authority: &str, e: &SftpError) -> String {
    // As known_hosts names it: `host`, or `[host]:port` off port 22.
    let address = authority.rsplit('@').next().unwrap_or(authority);
    let host = match address.split_once(':') {
        Some((h, port)) if port != "22" => format!("'[{h}]:{port}'"),
        Some((h, _)) => h.to_string(),
        None => address.to_string(),
    };
    if said
        .iter()
        .any(|l| l.contains("IDENTIFICATION HAS CHANGED"))
    {
        let offending = said
            .iter()
            .find(|l| l.starts_with("Offending"))
            .map(|l| format!(" ({})", l.trim_end_matches(':')))
            .unwrap_or_default();
        return format!(
            "the server's host key is not the one known_hosts records for it{offending}: someone may be intercepting the connection, or the server was reinstalled; if you know why the key changed, remove the old one with `ssh-keygen -R {host}` and connect with `ssh ssh://{authority}` once to check and record the new one"
        );
    }
    format!(
        "ssh cannot log in: {}; check the host and port, that `ssh ssh://{authority}` logs in without a prompt (agent or key), and for a new host SNAP_SSH_KNOWN_HOSTS=add",
        said.back().cloned().unwrap_or_else(|| e.to_string())
    )
}

/// An SFTP call that failed, with the path it was about.
struct Failed(String, SftpError);

type Sr<T> = std::result::Result<T, Failed>;

fn at<T>(path: &str, r: std::result::Result<T, SftpError>) -> Sr<T> {
    r.map_err(|e| Failed(path.to_string(), e))
}

fn no_such_file(e: &SftpError) -> bool {
    matches!(e, SftpError::SftpError(SftpErrorKind::NoSuchFile, _))
}

impl Sftp {
    /// Logs in to `authority` (`[user@]host[:port]`) and opens the repository at
    /// `path` there; `url` names it in messages. Host keys are checked as
    /// `opts.host_keys` says; a server silent for `opts.silence` ends the connection
    /// (four keepalives unanswered).
    pub fn open(url: &str, authority: &str, path: &str, opts: &RemoteOptions) -> Result<Sftp> {
        let checking = match opts.host_keys {
            HostKeys::Strict => "yes",
            HostKeys::Add => "accept-new",
            HostKeys::Accept => "no",
        };
        let _guard = RUNTIME.enter();
        let mut child = tokio::process::Command::new("ssh")
            .args(["-o", "BatchMode=yes", "-o", "ConnectTimeout=20"])
            .arg("-o")
            .arg(format!(
                "ServerAliveInterval={}",
                (opts.silence.as_secs() / 4).max(1)
            ))
            .args(["-o", "ServerAliveCountMax=4"])
            .args(["-o", "ControlMaster=no", "-o"])
            .arg(format!("StrictHostKeyChecking={checking}"))
            .args(["-s", &format!("ssh://{authority}"), "sftp"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| Error::Storage {
                location: url.to_string(),
                detail: format!("cannot run ssh ({e}); install the OpenSSH client"),
            })?;
        let (Some(stdin), Some(stdout), Some(stderr)) =
            (child.stdin.take(), child.stdout.take(), child.stderr.take())
        else {
            unreachable!("all three pipes were asked for")
        };
        let said = Arc::new(Mutex::new(VecDeque::new()));
        let listener = RUNTIME.spawn({
            let said = said.clone();
            async move {
                let mut lines = tokio::io::BufReader::new(stderr).lines();
                while let Ok(Some(line)) = lines.next_line().await {
                    log::debug!("ssh: {line}");
                    let mut said = locked(&said);
                    if said.len() == SAID_LINES {
                        said.pop_front();
                    }
                    said.push_back(line);
                }
            }
        });
        let client = match RUNTIME.block_on(Client::new(stdin, stdout, SftpOptions::new())) {
            Ok(c) => c,
            Err(e) => {
                // ssh has said why by the time it exits.
                RUNTIME.block_on(async {
                    let _ = tokio::time::timeout(EXIT_WAIT, child.wait()).await;
                    let _ = tokio::time::timeout(EXIT_WAIT, listener).await;
                });
                return Err(Error::Storage {
                    location: url.to_string(),
                    detail: login_failure(&locked(&said), authority, &e),
                });
            }
        };
        let fsync = client.support_fsync();
        if !fsync {
            log::warn!(
                "the SFTP server of {url} does not offer fsync@openssh.com: files written there are atomic but not durable against a crash of the server"
            );
        }
        Ok(Sftp {
            url: url.trim_end_matches('/').to_string(),
            root: format!("/{}", path.trim_matches('/'))
                .trim_end_matches('/')
                .to_string(),
            client: Some(Arc::new(client)),
            ssh: Mutex::new(Some(child)),
            said,
            fsync,
        })
    }

    fn client(&self) -> Arc<Client> {
        self.client.clone().expect("the client lives until drop")
    }

    /// The absolute path on the server of repository path `p`.
    fn full(&self, p: &str) -> String {
        format!("{}/{}", self.root, p.trim_start_matches('/'))
    }

    fn err(&self, path: &str, e: SftpError) -> Error {
        if no_such_file(&e) {
            return super::missing(self, path);
        }
        let said = || {
            locked(&self.said)
                .back()
                .map(|l| format!(", ssh said: {l}"))
                .unwrap_or_default()
        };
        let ended = locked(&self.ssh)
            .as_mut()
            .and_then(|c| c.try_wait().ok().flatten());
        let detail = match (ended, &e) {
            (Some(status), _) => format!(
                "the SSH connection ended ({status}{}); check the server and the network, then rerun",
                said()
            ),
            (None, SftpError::SftpError(..)) => format!("the SFTP server says: {e}"),
            // Not the server's answer: the channel to it failed (a server killed or
            // unreachable, seen before ssh itself gives up).
            (None, _) => format!(
                "the SSH connection was lost ({e}{}); check the server and the network, then rerun",
                said()
            ),
        };
        Error::Storage {
            location: format!("{}/{path}", self.url),
            detail,
        }
    }

    fn failed(&self, Failed(path, e): Failed) -> Error {
        self.err(&path, e)
    }

    /// Creates directory `dir` (a repository path) and any missing parent.
    async fn make_dirs(&self, dir: &str) -> Result<()> {
        let client = self.client();
        let mut fs = client.fs();
        let full = self.full(dir);
        let mut at_dir = String::new();
        for part in full.split('/').filter(|s| !s.is_empty()) {
            at_dir = format!("{at_dir}/{part}");
            // Fails for directories that exist, and those above the root may not be
            // ours: whether the whole path now exists is checked below.
            let _ = fs.create_dir(&at_dir).await;
        }
        match fs.metadata(&full).await {
            Ok(m) if m.file_type().is_some_and(|t| t.is_dir()) => Ok(()),
            Ok(_) => Err(Error::Storage {
                location: format!("{}/{dir}", self.url),
                detail: "not a directory".into(),
            }),
            Err(e) => Err(self.err(dir, e)),
        }
    }

    /// Creates `p` for writing (truncated), making its directory when it is missing.
    async fn create(&self, p: &str) -> Result<File> {
        let mut options = self.client().options();
        options.write(true).create(true).truncate(true);
        let r = match options.open(self.full(p)).await {
            Err(e) if no_such_file(&e) => {
                self.make_dirs(p.rsplit_once('/').map_or("", |(d, _)| d))
                    .await?;
                options.open(self.full(p)).await
            }
            r => r,
        };
        r.map_err(|e| self.err(p, e))
    }

    /// Fsyncs file `p` (under the name it has now) on the server.
    async fn fsync_at(&self, p: &str) -> Result<()> {
        let opened = self.client().options().write(true).open(self.full(p)).await;
        let mut f = opened.map_err(|e| self.err(p, e))?;
        f.sync_all().await.map_err(|e| self.err(p, e))?;
        f.close().await.map_err(|e| self.err(p, e))
    }

    /// Writes the chunks of `data` as file `p` through a temp file; see the module docs.
    async fn upload<'a>(
        &self,
        p: &str,
        durable: bool,
        data: impl Iterator<Item = Result<Cow<'a, [u8]>>>,
    ) -> Result<()> {
        let durable = durable && self.fsync;
        let tmp = temp_name()?;
        let mut placed = self.write_temp(&tmp, durable, data).await;
        if placed.is_ok() {
            placed = self.place(&tmp, p).await;
        }
        if placed.is_err() {
            let _ = remove(self.client(), self.full(&tmp), tmp).await;
            return placed;
        }
        if durable {
            self.fsync_at(p).await?;
        }
        Ok(())
    }

    /// Writes temp file `tmp`, fsynced when `durable`.
    async fn write_temp<'a>(
        &self,
        tmp: &str,
        durable: bool,
        data: impl Iterator<Item = Result<Cow<'a, [u8]>>>,
    ) -> Result<()> {
        let io = |e: std::io::Error| self.err(tmp, SftpError::IOError(e));
        // Writes go out several at once; dropping the file closes it.
        let mut w = pin!(TokioCompatFile::new(self.create(tmp).await?));
        for chunk in data {
            w.write_all(&chunk?).await.map_err(io)?;
        }
        w.flush().await.map_err(io)?;
        if durable {
            let synced = w.as_mut().as_mut_file().sync_all().await;
            synced.map_err(|e| self.err(tmp, e))?;
        }
        Ok(())
    }

    /// Renames temp file `tmp` to `p`, making `p`'s directory when it is missing.
    async fn place(&self, tmp: &str, p: &str) -> Result<()> {
        let client = self.client();
        let mut fs = client.fs();
        let (from, to) = (self.full(tmp), self.full(p));
        let mut r = fs.rename(&from, &to).await;
        if matches!(&r, Err(e) if no_such_file(e)) {
            if let Some((dir, _)) = p.rsplit_once('/') {
                self.make_dirs(dir).await?;
                r = fs.rename(&from, &to).await;
            }
        }
        if r.is_err() && !client.support_posix_rename() {
            // A plain SFTP rename does not replace: not atomic, but only lock files
            // are ever replaced.
            let _ = fs.remove_file(&to).await;
            r = fs.rename(&from, &to).await;
        }
        r.map_err(|e| self.err(p, e))
    }

    /// Makes the deletions before it durable; see the module docs.
    async fn barrier(&self) -> Result<()> {
        let tmp = temp_name()?;
        self.write_temp(&tmp, true, std::iter::empty()).await?;
        remove(self.client(), self.full(&tmp), tmp)
            .await
            .map_err(|f| self.failed(f))
    }
}

/// Removes file `full` (repository path `p`) from the server; an absent file is no error.
async fn remove(client: Arc<Client>, full: String, p: String) -> Sr<()> {
    match client.fs().remove_file(full).await {
        Err(e) if !no_such_file(&e) => Err(Failed(p, e)),
        _ => Ok(()),
    }
}

/// Lists directory `dir` (absolute) on the server: its files as entries named
/// relative to `root`, and its subdirectories. An absent directory is empty.
async fn list_one(client: Arc<Client>, root: String, dir: String) -> Sr<(Vec<Entry>, Vec<String>)> {
    let mut fs = client.fs();
    let d = match fs.open_dir(&dir).await {
        Err(e) if no_such_file(&e) => return Ok((Vec::new(), Vec::new())),
        r => at(&dir, r)?,
    };
    let mut entries = pin!(d.read_dir());
    let (mut files, mut dirs) = (Vec::new(), Vec::new());
    while let Some(e) = std::future::poll_fn(|cx| entries.as_mut().poll_next(cx)).await {
        let e = at(&dir, e)?;
        let name = e.filename().to_string_lossy().into_owned();
        if name == "." || name == ".." {
            continue;
        }
        let path = format!("{dir}/{name}");
        match e.file_type() {
            Some(t) if t.is_dir() => dirs.push(path),
            Some(t) if t.is_file() => {
                let m = e.metadata();
                files.push(Entry {
                    path: path[root.len() + 1..].to_string(),
                    size: m.len().unwrap_or(0),
                    modified: m
                        .modified()
                        .map(openssh_sftp_client::UnixTimeStamp::as_system_time),
                });
            }
            _ => {}
        }
    }
    Ok((files, dirs))
}

impl Store for Sftp {
    fn location(&self) -> String {
        self.url.clone()
    }

    fn local_root(&self) -> Option<&std::path::Path> {
        None
    }

    fn read(&self, p: &str, cap: u64) -> Result<Vec<u8>> {
        RUNTIME.block_on(async {
            let sftp = |e| self.err(p, e);
            let mut f = self.client().open(self.full(p)).await.map_err(sftp)?;
            let len = f.metadata().await.map_err(sftp)?.len().unwrap_or(0);
            if len > cap {
                return Err(too_large(&self.url, p, len, cap));
            }
            let mut r = pin!(TokioCompatFile::new(f));
            let mut buf = Vec::with_capacity(usize::try_from(len).unwrap_or(0));
            // One byte past the cap: a file that grew since is refused, not cut.
            let read = (&mut r).take(cap + 1).read_to_end(&mut buf).await;
            read.map_err(|e| sftp(SftpError::IOError(e)))?;
            if buf.len() as u64 > cap {
                return Err(too_large(&self.url, p, buf.len() as u64, cap));
            }
            Ok(buf)
        })
    }

    fn read_at(&self, p: &str, offset: u64, len: usize) -> Result<Vec<u8>> {
        RUNTIME.block_on(async {
            let f = self.client().open(self.full(p)).await;
            let mut r = pin!(TokioCompatFile::new(f.map_err(|e| self.err(p, e))?));
            let io = |e: std::io::Error| match e.kind() {
                std::io::ErrorKind::UnexpectedEof => Error::Storage {
                    location: format!("{}/{p}", self.url),
                    detail: format!("the file ends before {len} bytes at {offset}"),
                },
                _ => self.err(p, SftpError::IOError(e)),
            };
            let mut buf = vec![0u8; len];
            r.seek(std::io::SeekFrom::Start(offset)).await.map_err(io)?;
            r.read_exact(&mut buf).await.map_err(io)?;
            Ok(buf)
        })
    }

    fn size(&self, p: &str) -> Result<Option<u64>> {
        match RUNTIME.block_on(async { self.client().fs().metadata(self.full(p)).await }) {
            Ok(m) => Ok(Some(m.len().unwrap_or(0))),
            Err(e) if no_such_file(&e) => Ok(None),
            Err(e) => Err(self.err(p, e)),
        }
    }

    fn list(&self, dir: &str) -> Result<Vec<Entry>> {
        let (client, root) = (self.client(), self.root.clone());
        let top = self.full(dir.trim_matches('/'));
        let listed = RUNTIME.block_on(async move {
            let mut out = Vec::new();
            let mut tasks = JoinSet::new();
            tasks.spawn(list_one(client.clone(), root.clone(), top));
            // A directory's listing starts as soon as its parent's has named it.
            while let Some(done) = tasks.join_next().await {
                let (files, dirs) = done.map_err(|e| Failed(dir.to_string(), e.into()))??;
                out.extend(files);
                for d in dirs {
                    tasks.spawn(list_one(client.clone(), root.clone(), d));
                }
            }
            Ok(out)
        });
        listed.map_err(|f| self.failed(f))
    }

    fn put(&self, p: &str, bytes: &[u8]) -> Result<()> {
        let data = std::iter::once(Ok(Cow::Borrowed(bytes)));
        RUNTIME.block_on(self.upload(p, true, data))
    }

    /// The fsync after the rename, which the writer may not have reached (see the
    /// module docs); nothing where the server has no fsync.
    fn make_durable(&self, p: &str) -> Result<()> {
        if self.fsync {
            RUNTIME.block_on(self.fsync_at(p))?;
        }
        Ok(())
    }

    fn put_file(&self, p: &str, file: tempfile::NamedTempFile) -> Result<()> {
        use std::io::Read;
        let mut f = file.reopen().at(file.path())?;
        let chunks = std::iter::from_fn(|| {
            let mut buf = vec![0u8; PART];
            match f.read(&mut buf).at(file.path()) {
                Ok(0) => None,
                Ok(n) => {
                    buf.truncate(n);
                    Some(Ok(Cow::Owned(buf)))
                }
                Err(e) => Some(Err(e)),
            }
        });
        RUNTIME.block_on(self.upload(p, true, chunks))
    }

    fn put_volatile(&self, p: &str, bytes: &[u8]) -> Result<()> {
        let data = std::iter::once(Ok(Cow::Borrowed(bytes)));
        RUNTIME.block_on(self.upload(p, false, data))
    }

    fn delete(&self, p: &str) -> Result<()> {
        self.delete_all(&[p.to_string()])
    }

    fn delete_all(&self, paths: &[String]) -> Result<()> {
        RUNTIME.block_on(async {
            let mut tasks = JoinSet::new();
            for p in paths {
                tasks.spawn(remove(self.client(), self.full(p), p.clone()));
            }
            while let Some(done) = tasks.join_next().await {
                done.map_err(|e| self.err("", e.into()))?
                    .map_err(|f| self.failed(f))?;
            }
            if self.fsync && !paths.is_empty() {
                self.barrier().await?;
            }
            Ok(())
        })
    }

    fn delete_volatile(&self, p: &str) -> Result<()> {
        RUNTIME
            .block_on(remove(self.client(), self.full(p), p.to_string()))
            .map_err(|f| self.failed(f))
    }
}

impl Drop for Sftp {
    fn drop(&mut self) {
        let client = self.client.take().and_then(Arc::into_inner);
        let child = locked(&self.ssh).take();
        RUNTIME.block_on(async {
            if let Some(c) = client {
                // Closing the channel ends ssh's standard input: ssh and the server's
                // sftp process exit.
                let _ = c.close().await;
            }
            if let Some(mut child) = child {
                if tokio::time::timeout(EXIT_WAIT, child.wait()).await.is_err() {
                    let _ = child.kill().await;
                }
            }
        });
    }
}
