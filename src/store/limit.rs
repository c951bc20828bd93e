//! Bandwidth limits for a remote store (`--limit-upload`, `--limit-download`, as
//! restic's): [`Limited`] wraps a [`Store`] (SFTP and S3; [`open`](super::open) does not
//! limit local directories) and makes the bytes it writes or reads wait on a
//! token bucket each way ([`Bucket`]).
//!
//! A transfer takes its bytes from the bucket whole, which may leave it in debt; the
//! transfer then waits until the debt is paid at the limit's rate. Concurrent
//! transfers share one bucket per direction, so the limit holds for their sum. The
//! bucket holds at most one second of tokens: an idle store may burst that much.
//! Listings, sizes and deletions are not counted (their bytes are small).

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::{Create, Entry, Store};
use crate::error::Result;

/// Bytes per second each way; `None` is no limit.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Limits {
    /// What the store writes.
    pub upload: Option<u64>,
    /// What the store reads.
    pub download: Option<u64>,
}

impl Limits {
    /// Whether neither way is limited.
    pub fn is_none(&self) -> bool {
        self.upload.is_none() && self.download.is_none()
    }
}

/// A token bucket of `rate` bytes per second holding at most `rate` tokens, fed by the
/// times it is given (so tests can run its clock).
#[derive(Debug)]
pub struct Bucket {
    rate: f64,
    /// Tokens at `at`; negative while transfers are in debt.
    tokens: f64,
    at: Instant,
}

impl Bucket {
    /// A full bucket of `rate` bytes per second (at least 1), at time `now`.
    pub fn new(rate: u64, now: Instant) -> Bucket {
        let rate = rate.max(1) as f64;
        Bucket {
            rate,
            tokens: rate,
            at: now,
        }
    }

    /// Takes `n` bytes at time `now`; returns how long the caller must wait before
    /// its transfer counts as done at the bucket's rate.
    pub fn take(&mut self, n: u64, now: Instant) -> Duration {
        let elapsed = now.saturating_duration_since(self.at).as_secs_f64();
        self.at = self.at.max(now);
        self.tokens = (self.tokens + elapsed * self.rate).min(self.rate) - n as f64;
        if self.tokens >= 0.0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64(-self.tokens / self.rate)
        }
    }
}

/// A store whose transfers wait on [`Limits`].
pub struct Limited {
    inner: Arc<dyn Store>,
    upload: Option<Mutex<Bucket>>,
    download: Option<Mutex<Bucket>>,
}

impl Limited {
    /// `inner`, limited; `inner` itself when `limits` limit nothing.
    pub fn wrap(inner: Arc<dyn Store>, limits: Limits) -> Arc<dyn Store> {
        if limits.is_none() {
            return inner;
        }
        let now = Instant::now();
        let bucket = |rate: Option<u64>| rate.map(|r| Mutex::new(Bucket::new(r, now)));
        Arc::new(Limited {
            inner,
            upload: bucket(limits.upload),
            download: bucket(limits.download),
        })
    }
}

/// Waits for `n` bytes of `bucket`, if there is one.
fn pace(bucket: Option<&Mutex<Bucket>>, n: u64) {
    if let Some(b) = bucket {
        let wait = crate::locked(b).take(n, Instant::now());
        std::thread::sleep(wait);
    }
}

/// A stream read at the pace of a bandwidth limit.
struct Paced<'a> {
    inner: Box<dyn std::io::Read + Send + 'a>,
    bucket: Option<&'a Mutex<Bucket>>,
}

impl std::io::Read for Paced<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        pace(self.bucket, n as u64);
        Ok(n)
    }
}

impl Store for Limited {
    fn location(&self) -> String {
        self.inner.location()
    }
    fn local_root(&self) -> Option<&Path> {
        self.inner.local_root()
    }
    fn read(&self, path: &str, cap: u64) -> Result<Vec<u8>> {
        let b = self.inner.read(path, cap)?;
        pace(self.download.as_ref(), b.len() as u64);
        Ok(b)
    }
    fn read_at(&self, path: &str, offset: u64, len: usize) -> Result<Vec<u8>> {
        let b = self.inner.read_at(path, offset, len)?;
        pace(self.download.as_ref(), b.len() as u64);
        Ok(b)
    }
    fn read_stream(
        &self,
        path: &str,
        offset: u64,
        len: u64,
    ) -> Result<Box<dyn std::io::Read + Send + '_>> {
        let inner = self.inner.read_stream(path, offset, len)?;
        Ok(Box::new(Paced {
            inner,
            bucket: self.download.as_ref(),
        }))
    }
    fn size(&self, path: &str) -> Result<Option<u64>> {
        self.inner.size(path)
    }
    fn endpoint(&self) -> Option<&str> {
        self.inner.endpoint()
    }
    fn list(&self, dir: &str) -> Result<Vec<Entry>> {
        self.inner.list(dir)
    }
    fn list_dirs(&self, dirs: &[&str], expect: usize) -> Result<Vec<Vec<Entry>>> {
        self.inner.list_dirs(dirs, expect)
    }
    fn close_files(&self) {
        self.inner.close_files();
    }
    fn put(&self, path: &str, bytes: &[u8]) -> Result<()> {
        pace(self.upload.as_ref(), bytes.len() as u64);
        self.inner.put(path, bytes)
    }
    fn put_file(&self, path: &str, file: tempfile::NamedTempFile) -> Result<()> {
        let len = file.as_file().metadata().map_or(0, |m| m.len());
        pace(self.upload.as_ref(), len);
        self.inner.put_file(path, file)
    }
    fn put_volatile(&self, path: &str, bytes: &[u8]) -> Result<()> {
        self.inner.put_volatile(path, bytes)
    }
    fn create_volatile(&self, path: &str, bytes: &[u8]) -> Result<Create> {
        self.inner.create_volatile(path, bytes)
    }
    fn make_durable(&self, path: &str) -> Result<()> {
        self.inner.make_durable(path)
    }
    fn delete(&self, path: &str) -> Result<()> {
        self.inner.delete(path)
    }
    fn delete_volatile(&self, path: &str) -> Result<()> {
        self.inner.delete_volatile(path)
    }
    fn delete_all(&self, paths: &[String]) -> Result<()> {
        self.inner.delete_all(paths)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bucket_lets_a_second_burst_through_then_paces_at_its_rate() {
        let t0 = Instant::now();
        let s = |secs: f64| t0 + Duration::from_secs_f64(secs);
        let mut b = Bucket::new(1000, t0);
        // A full bucket: one second's worth passes at once.
        assert_eq!(b.take(600, t0), Duration::ZERO);
        assert_eq!(b.take(400, t0), Duration::ZERO);
        // Empty: 500 more bytes wait half a second.
        assert_eq!(b.take(500, t0), Duration::from_millis(500));
        // The debt is paid by then: at 0.5 s the bucket is empty again.
        assert_eq!(b.take(250, s(0.5)), Duration::from_millis(250));
        // An idle store refills to one second, no more.
        assert_eq!(b.take(1000, s(100.0)), Duration::ZERO);
        assert_eq!(b.take(2000, s(100.0)), Duration::from_secs(2));
    }

    #[test]
    fn many_small_transfers_average_the_rate() {
        let t0 = Instant::now();
        let mut b = Bucket::new(1 << 20, t0);
        let mut now = t0;
        // 64 MiB in 64 KiB transfers, each waiting as told: 63 s after the first MiB.
        for _ in 0..1024 {
            now += b.take(64 << 10, now);
        }
        let took = now.duration_since(t0).as_secs_f64();
        assert!((took - 63.0).abs() < 0.01, "{took}");
    }

    #[test]
    fn limited_store_paces_and_passes_everything_through() {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir(d.path().join("tmp")).unwrap();
        let local: Arc<dyn Store> = Arc::new(super::super::Local::new(d.path().to_path_buf()));
        let unlimited = Limited::wrap(local.clone(), Limits::default());
        assert!(
            Arc::ptr_eq(&unlimited, &local),
            "no limit: the store itself"
        );
        let s = Limited::wrap(
            local,
            Limits {
                upload: Some(1 << 30),
                download: Some(1 << 30),
            },
        );
        s.put("snapshots/a", b"hello").unwrap();
        assert_eq!(s.read("snapshots/a", 5).unwrap(), b"hello");
        assert_eq!(s.read_at("snapshots/a", 1, 3).unwrap(), b"ell");
        assert_eq!(s.list("snapshots").unwrap().len(), 1);
        s.delete("snapshots/a").unwrap();
        assert_eq!(s.size("snapshots/a").unwrap(), None);
    }
}
