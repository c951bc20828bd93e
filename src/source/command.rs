//! A source command: `sh -c CMD` whose stdout is the data.
//!
//! stderr is drained by a thread that keeps its tail, so a chatty command never blocks
//! and a failure message can quote it. A command that exits non-zero or is killed is an
//! error: the caller records no snapshot.

use std::io::Read;
use std::os::unix::process::ExitStatusExt;
use std::process::{Child, ChildStdout, Command, Stdio};
use std::thread::JoinHandle;

use crate::error::{Error, Result};

/// Bytes of stderr kept for error messages.
pub const STDERR_TAIL: usize = 4096;

/// A running source command.
pub struct Running {
    command: String,
    child: Child,
    stdout: ChildStdout,
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
    /// A missing program is an error that says so.
    pub fn start(mut cmd: Command, display: &str) -> Result<Running> {
        let command = display;
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| Error::Command {
                command: command.to_string(),
                status: if e.kind() == std::io::ErrorKind::NotFound {
                    "could not be started: program not found (is it installed and on PATH?)"
                        .to_string()
                } else {
                    format!("could not be started: {e}")
                },
                stderr: String::new(),
            })?;
        let stdout = child.stdout.take().expect("stdout is piped");
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
        Ok(Running {
            command: command.to_string(),
            child,
            stdout,
            stderr: Some(stderr),
        })
    }

    /// The command's standard output.
    pub fn stdout(&mut self) -> &mut ChildStdout {
        &mut self.stdout
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

    /// Stops the command after an error on our side.
    pub fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
