//! A TCP forwarder on loopback between a client and a server, for network faults the
//! kernel here cannot make (no `tc netem`): the way up (client to server) capped at a
//! rate, and a pause that stops both ways, as a server that stopped answering (its
//! connections stay open, nothing moves).

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A forwarder from a port of its own to `127.0.0.1:upstream`; it ends with the test
/// process (its threads are left to the process's end).
pub struct Link {
    port: u16,
    paused: Arc<AtomicBool>,
}

impl Link {
    /// Forwards to `upstream`, client to server at most `up_rate` bytes a second.
    pub fn start(upstream: u16, up_rate: u64) -> Link {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let paused = Arc::new(AtomicBool::new(false));
        let p = paused.clone();
        std::thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { continue };
                let Ok(server) = TcpStream::connect(("127.0.0.1", upstream)) else {
                    continue;
                };
                let (c2, s2) = (client.try_clone().unwrap(), server.try_clone().unwrap());
                let (p1, p2) = (p.clone(), p.clone());
                std::thread::spawn(move || pump(client, server, Some(up_rate), &p1));
                std::thread::spawn(move || pump(s2, c2, None, &p2));
            }
        });
        Link { port, paused }
    }

    /// `http://127.0.0.1:port`, the endpoint through this link.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Stops moving bytes either way (connections stay open) until [`Link::resume`].
    pub fn pause(&self) {
        self.paused.store(true, Ordering::SeqCst);
    }

    /// Moves bytes again.
    pub fn resume(&self) {
        self.paused.store(false, Ordering::SeqCst);
    }
}

/// Copies `from` to `to`, at most `rate` bytes a second, holding while `paused`.
fn pump(mut from: TcpStream, mut to: TcpStream, rate: Option<u64>, paused: &AtomicBool) {
    let mut buf = vec![0u8; 16 << 10];
    let start = Instant::now();
    let mut moved = 0u64;
    loop {
        while paused.load(Ordering::SeqCst) {
            std::thread::sleep(Duration::from_millis(20));
        }
        let n = match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        while paused.load(Ordering::SeqCst) {
            std::thread::sleep(Duration::from_millis(20));
        }
        if to.write_all(&buf[..n]).is_err() {
            break;
        }
        moved += n as u64;
        if let Some(rate) = rate {
            // Due: when `moved` bytes may have gone at `rate`.
            let due = Duration::from_secs_f64(moved as f64 / rate as f64);
            if let Some(wait) = due.checked_sub(start.elapsed()) {
                std::thread::sleep(wait);
            }
        }
    }
    let _ = to.shutdown(Shutdown::Write);
}
