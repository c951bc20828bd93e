//! `slow_link LISTEN_PORT TARGET_PORT DELAY_MS RATE_MBIT`
//!
//! A TCP forwarder on loopback that behaves like a slower network link, for benches
//! where `tc netem` is missing from the kernel: every byte is delivered `DELAY_MS` after
//! it was sent, in each direction (so a request and its answer take 2 x `DELAY_MS`
//! more), and each direction carries at most `RATE_MBIT` megabits a second, shared by
//! all connections (one link, not one per connection). `RATE_MBIT` 0: no cap. Runs
//! until killed.
//!
//! Threads and blocking sockets, so that forwarding costs little CPU beside the tools
//! and the store it sits between on a machine of two cores.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::{mpsc, Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

/// How far ahead of the link a sender may get before it is held back, as by a full
/// socket buffer.
const AHEAD: Duration = Duration::from_millis(50);

/// One direction of the link: a fixed delay and a rate shared by every connection.
struct Direction {
    delay: Duration,
    /// Bytes a second; 0: no cap.
    rate: f64,
    /// When the link has sent what was given to it so far.
    free_at: Mutex<Instant>,
}

impl Direction {
    /// When `n` bytes given now have left the sender, after those before them.
    fn departure(&self, n: usize) -> Instant {
        let now = Instant::now();
        if self.rate == 0.0 {
            return now;
        }
        let mut free = self.free_at.lock().unwrap_or_else(|e| e.into_inner());
        *free = (*free).max(now) + Duration::from_secs_f64(n as f64 / self.rate);
        *free
    }

    /// How long a sender must wait before giving the link more.
    fn backlog(&self) -> Option<Duration> {
        let free = *self.free_at.lock().unwrap_or_else(|e| e.into_inner());
        free.checked_duration_since(Instant::now() + AHEAD)
    }
}

/// Forwards what `from` sends to `to` through `link`, until `from` ends its side; then
/// ends `to`'s.
fn pump(mut from: TcpStream, mut to: TcpStream, link: &Direction) {
    let (tx, rx) = mpsc::channel::<(Instant, Vec<u8>)>();
    let deliver = thread::spawn(move || {
        for (at, data) in rx {
            if let Some(pause) = at.checked_duration_since(Instant::now()) {
                thread::sleep(pause);
            }
            if to.write_all(&data).is_err() {
                break;
            }
        }
        let _ = to.shutdown(Shutdown::Write);
    });
    let mut buf = vec![0u8; 64 << 10];
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        let at = link.departure(n) + link.delay;
        if tx.send((at, buf[..n].to_vec())).is_err() {
            break;
        }
        if let Some(wait) = link.backlog() {
            thread::sleep(wait);
        }
    }
    drop(tx);
    let _ = deliver.join();
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [listen, target, delay_ms, rate_mbit] = &args[..] else {
        eprintln!("usage: slow_link LISTEN_PORT TARGET_PORT DELAY_MS RATE_MBIT");
        std::process::exit(2);
    };
    let number = |s: &str, what: &str| -> f64 {
        s.parse().unwrap_or_else(|_| {
            eprintln!("slow_link: {what} {s:?} is not a number");
            std::process::exit(2);
        })
    };
    let target: u16 = number(target, "TARGET_PORT") as u16;
    let delay = Duration::from_secs_f64(number(delay_ms, "DELAY_MS") / 1000.0);
    let rate = number(rate_mbit, "RATE_MBIT") * 1e6 / 8.0;
    let direction = || {
        Arc::new(Direction {
            delay,
            rate,
            free_at: Mutex::new(Instant::now()),
        })
    };
    let (up, down) = (direction(), direction());
    let listener = TcpListener::bind(("127.0.0.1", number(listen, "LISTEN_PORT") as u16))
        .unwrap_or_else(|e| {
            eprintln!("slow_link: cannot listen on {listen}: {e}");
            std::process::exit(1);
        });
    for client in listener.incoming().flatten() {
        let (up, down) = (up.clone(), down.clone());
        thread::spawn(move || {
            let Ok(server) = TcpStream::connect(("127.0.0.1", target)) else {
                return;
            };
            let _ = client.set_nodelay(true);
            let _ = server.set_nodelay(true);
            let (Ok(client2), Ok(server2)) = (client.try_clone(), server.try_clone()) else {
                return;
            };
            let sending = thread::spawn(move || pump(client, server, &up));
            pump(server2, client2, &down);
            let _ = sending.join();
        });
    }
}
