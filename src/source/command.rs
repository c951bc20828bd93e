//! A source command: `sh -c CMD` whose stdout is the data.
//!
//! stderr is drained by a thread that keeps its tail, so a chatty command never blocks
//! and a failure message can quote it. A command that exits non-zero or is killed is an
//! error: the caller records no snapshot.

use std::io::{IsTerminal, Read};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::Mutex;
use std::thread::JoinHandle;

use crate::error::{Error, Result};
use crate::locked;

/// Bytes of stderr kept for error messages.
pub const STDERR_TAIL: usize = 4096;

/// Where a missing program comes from.
fn install_hint(program: &str) -> &'static str {
    match program {
        "pg_dump" | "pg_dumpall" | "pg_restore" | "psql" => {
            "install the PostgreSQL client tools of your server's major version or newer: Debian/Ubuntu apt-get install postgresql-client, RHEL dnf install postgresql"
        }
        "mongodump" | "mongorestore" => {
            "install MongoDB Database Tools: package mongodb-database-tools from MongoDB's repository"
        }
        "sh" => "snap runs commands with sh -c",
        _ => "is it installed and on PATH?",
    }
}

/// A running source command.
pub struct Running {
    command: String,
    child: Child,
    /// Whether it leads a process group of its own.
    grouped: bool,
    stdout: Option<ChildStdout>,
    stderr: Option<JoinHandle<Vec<u8>>>,
}

impl Running {
    /// Starts `command` with `sh -c`, stdin closed.
    pub fn spawn(command: &str) -> Result<Running> {
        let mut sh = Command::new("sh");
        sh.arg("-c").arg(command);
        Running::start(sh, command)
    }

    /// Starts `cmd`, stdin closed, stdout and stderr piped; `display` names it in errors.
    /// A missing program is an error that says so (and which package provides it).
    pub fn start(cmd: Command, display: &str) -> Result<Running> {
        Ok(Running::launch(cmd, display, false)?.0)
    }

    /// Runs `cmd` to its end and returns its standard output as text; an error if it
    /// fails.
    pub fn capture(cmd: Command, display: &str) -> Result<String> {
        let mut run = Running::start(cmd, display)?;
        let mut out = String::new();
        let read = run.stdout().read_to_string(&mut out);
        run.finish()?;
        read.map_err(|e| Error::Io {
            path: format!("<output of {display}>").into(),
            source: e,
        })?;
        Ok(out)
    }

    /// Like [`Running::start`], with a pipe to the command's standard input and its
    /// standard output going to snap's.
    pub fn start_piped(cmd: Command, display: &str) -> Result<(Running, ChildStdin)> {
        let (r, stdin) = Running::launch(cmd, display, true)?;
        Ok((r, stdin.expect("stdin is piped")))
    }

    fn launch(
        mut cmd: Command,
        display: &str,
        piped: bool,
    ) -> Result<(Running, Option<ChildStdin>)> {
        let command = display;
        let program = cmd.get_program().to_string_lossy().into_owned();
        // Without a terminal (cron, systemd), a process group of its own, so that
        // everything it starts (a shell's children) ends with it: see
        // [`Running::kill`] and [`terminate_all`]. On a terminal it stays in the
        // foreground group, where Ctrl-C reaches it and it may ask for a password.
        let grouped = !std::io::stdin().is_terminal();
        if grouped {
            cmd.process_group(0);
        }
        let mut child = cmd
            .stdin(if piped { Stdio::piped() } else { Stdio::null() })
            .stdout(if piped {
                Stdio::inherit()
            } else {
                Stdio::piped()
            })
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| Error::Command {
                command: command.to_string(),
                status: if e.kind() == std::io::ErrorKind::NotFound {
                    format!(
                        "could not be started: {program} was not found ({})",
                        install_hint(&program)
                    )
                } else {
                    format!("could not be started: {e}")
                },
                stderr: String::new(),
            })?;
        if grouped {
            locked(&GROUPS).push(child.id());
        }
        let stdin = child.stdin.take();
        let stdout = child.stdout.take();
        if let Some(out) = &stdout {
            widen_pipe(out);
        }
        let mut err = child.stderr.take().expect("stderr is piped");
        let stderr = std::thread::spawn(move || {
            let mut tail = Vec::new();
            let mut buf = [0u8; 8192];
            while let Ok(n) = err.read(&mut buf) {
                if n == 0 {
                    break;
                }
                tail.extend_from_slice(&buf[..n]);
                if tail.len() > 2 * STDERR_TAIL {
                    tail.drain(..tail.len() - STDERR_TAIL);
                }
            }
            let start = tail.len().saturating_sub(STDERR_TAIL);
            tail.split_off(start)
        });
        Ok((
            Running {
                command: command.to_string(),
                child,
                grouped,
                stdout,
                stderr: Some(stderr),
            },
            stdin,
        ))
    }

    /// The command's standard output.
    pub fn stdout(&mut self) -> &mut ChildStdout {
        self.stdout
            .as_mut()
            .expect("only commands started without a stdin pipe have their stdout read")
    }

    /// The process id.
    pub fn id(&self) -> u32 {
        self.child.id()
    }

    /// Whether the command has ended (its status is then read by [`Running::finish`]).
    pub fn has_exited(&mut self) -> Result<bool> {
        self.child
            .try_wait()
            .map(|s| s.is_some())
            .map_err(|e| Error::Command {
                command: self.command.clone(),
                status: format!("could not be waited for: {e}"),
                stderr: String::new(),
            })
    }

    /// Waits for the command; an error unless it exited with status 0. Returns its stderr
    /// tail (a successful command may still have warned).
    pub fn finish(mut self) -> Result<String> {
        let status = self.child.wait();
        let tail = self
            .stderr
            .take()
            .and_then(|t| t.join().ok())
            .unwrap_or_default();
        let tail = String::from_utf8_lossy(&tail).into_owned();
        let status = status.map_err(|e| Error::Command {
            command: self.command.clone(),
            status: format!("could not be waited for: {e}"),
            stderr: tail.clone(),
        })?;
        let how = match (status.code(), status.signal()) {
            (Some(0), _) => return Ok(tail),
            (Some(127), _) => {
                "exited with status 127 (a program it runs was not found)".to_string()
            }
            (Some(c), _) => format!("exited with status {c}"),
            (None, Some(s)) => format!("was killed by signal {s}"),
            (None, None) => "ended abnormally".to_string(),
        };
        Err(Error::Command {
            command: self.command.clone(),
            status: how,
            stderr: tail,
        })
    }

    /// Stops the command after an error on our side, with what it started.
    pub fn kill(mut self) {
        self.end();
    }

    /// Kills the command (not yet waited for), with its process group when it has one,
    /// and waits for it.
    fn end(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            if self.grouped {
                signal_group(self.child.id(), rustix::process::Signal::KILL);
            } else {
                let _ = self.child.kill();
            }
            let _ = self.child.wait();
        }
    }
}

/// A command dropped before its end (an error on our side) does not outlive snap.
impl Drop for Running {
    fn drop(&mut self) {
        self.end();
        let id = self.child.id();
        locked(&GROUPS).retain(|g| *g != id);
    }
}

/// The process groups of the commands running now.
static GROUPS: Mutex<Vec<u32>> = Mutex::new(Vec::new());

/// Asks every command snap runs to stop (SIGTERM to its process group, a shell's
/// children included): on Ctrl-C or SIGTERM, as the terminal no longer reaches them
/// in their own groups, and so that a command that writes nothing does not keep snap
/// waiting.
pub fn terminate_all() {
    for g in locked(&GROUPS).iter() {
        signal_group(*g, rustix::process::Signal::TERM);
    }
}

fn signal_group(group: u32, sig: rustix::process::Signal) {
    if let Some(pid) = i32::try_from(group)
        .ok()
        .and_then(rustix::process::Pid::from_raw)
    {
        let _ = rustix::process::kill_process_group(pid, sig);
    }
}

/// Passes a stream through, keeping its first bytes to tell whether it is compressed.
pub struct Sniff<R> {
    inner: R,
    head: Vec<u8>,
}

/// Magic numbers of whole-stream compressors.
const MAGIC: [(&[u8], &str); 5] = [
    (b"\x1f\x8b", "gzip"),
    (b"\x28\xb5\x2f\xfd", "zstd"),
    (b"\xfd7zXZ\x00", "xz"),
    (b"BZh", "bzip2"),
    (b"\x04\x22\x4d\x18", "lz4"),
];

impl<R: Read> Sniff<R> {
    /// Wraps `inner`.
    pub fn new(inner: R) -> Sniff<R> {
        Sniff {
            inner,
            head: Vec::new(),
        }
    }

    /// The compressor whose magic number the stream starts with, if any.
    pub fn compressed(&self) -> Option<&'static str> {
        MAGIC
            .iter()
            .find(|(m, _)| self.head.starts_with(m))
            .map(|(_, name)| *name)
    }
}

impl<R: Read> Read for Sniff<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        let want = 8usize.saturating_sub(self.head.len()).min(n);
        self.head.extend_from_slice(&buf[..want]);
        Ok(n)
    }
}

/// A warning for a command line that asks for compressed output (its data would not
/// deduplicate), naming what to use instead.
pub fn compression_warning(command: &str) -> Option<String> {
    let words: Vec<&str> = command.split_whitespace().collect();
    let has = |w: &str| words.contains(&w);
    let pg_dump = words.iter().any(|w| w.ends_with("pg_dump"));
    let z0 = words
        .iter()
        .any(|w| matches!(*w, "-Z0" | "--compress=0" | "--compress=none") || w.starts_with("-Z0"));
    let compressed_format = words.iter().any(|w| {
        matches!(
            *w,
            "-Fc" | "-Fd" | "--format=custom" | "--format=directory" | "--format=c" | "--format=d"
        )
    });
    if pg_dump && compressed_format && !z0 {
        return Some(format!(
            "`{command}`: pg_dump compresses the custom and directory formats unless told not to, which defeats deduplication; add -Z0 and let snap compress"
        ));
    }
    if has("--gzip") {
        return Some(format!(
            "`{command}`: --gzip output does not deduplicate; drop it and let snap compress"
        ));
    }
    None
}

/// Asks for a 1 MiB pipe buffer (the unprivileged maximum) instead of 64 KiB: a
/// dump then arrives in 16 times fewer reads and wake-ups. A refusal changes nothing
/// but speed.
pub fn widen_pipe(fd: impl std::os::fd::AsFd) {
    let _ = rustix::pipe::fcntl_setpipe_size(fd, 1 << 20);
}

/// `s` as one word for `sh`.
pub fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting_survives_quotes_and_spaces() {
        let q = shell_quote("/tmp/it's here");
        let out = std::process::Command::new("sh")
            .arg("-c")
            .arg(format!("printf %s {q}"))
            .output()
            .unwrap();
        assert_eq!(out.stdout, b"/tmp/it's here");
    }

    #[test]
    fn compressed_output_is_recognised() {
        let mut s = Sniff::new(&[0x1f, 0x8b, 8, 0, 1, 2][..]);
        std::io::copy(&mut s, &mut std::io::sink()).unwrap();
        assert_eq!(s.compressed(), Some("gzip"));
        let mut s = Sniff::new(&b"--\n-- PostgreSQL database dump"[..]);
        std::io::copy(&mut s, &mut std::io::sink()).unwrap();
        assert_eq!(s.compressed(), None);
        assert!(compression_warning("pg_dump -Fc shop").is_some());
        assert!(compression_warning("pg_dump -Fc -Z0 shop").is_none());
        assert!(compression_warning("mongodump --archive --gzip").is_some());
        assert!(compression_warning("pg_dump shop").is_none());
    }

    #[test]
    fn output_status_and_stderr_tail() {
        let mut r = Running::spawn("echo hello; echo warn >&2").unwrap();
        let mut out = String::new();
        r.stdout().read_to_string(&mut out).unwrap();
        assert_eq!(out, "hello\n");
        assert_eq!(r.finish().unwrap(), "warn\n");

        let mut r =
            Running::spawn("echo partial; echo 'pg_dump: error: connection refused' >&2; exit 3")
                .unwrap();
        r.stdout().read_to_end(&mut Vec::new()).unwrap();
        let e = r.finish().unwrap_err().to_string();
        assert!(
            e.contains("exited with status 3") && e.contains("connection refused"),
            "{e}"
        );

        let mut r = Running::spawn("kill -9 $$").unwrap();
        r.stdout().read_to_end(&mut Vec::new()).unwrap();
        assert!(r
            .finish()
            .unwrap_err()
            .to_string()
            .contains("killed by signal 9"));
    }

    #[test]
    fn large_stderr_does_not_block() {
        let mut r = Running::spawn("head -c 1000000 /dev/zero >&2; echo done").unwrap();
        let mut out = String::new();
        r.stdout().read_to_string(&mut out).unwrap();
        assert_eq!(out, "done\n");
        assert_eq!(r.finish().unwrap().len(), STDERR_TAIL);
    }
}
