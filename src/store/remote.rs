//! S3-compatible object storage through OpenDAL (SFTP has a module of its own).
//!
//! Credentials come from where the AWS tools look: the `AWS_*` environment variables
//! and `~/.aws` profiles. None is stored in the repository or printed. Transient
//! failures are retried with exponential backoff and jitter; files above 64 MiB are
//! uploaded in parts. An object PUT is atomic, so no reader sees half a file.

use std::path::Path;
use std::sync::{LazyLock, OnceLock};
use std::time::Duration;

use opendal::layers::{HttpClientLayer, RetryLayer, TimeoutLayer};
use opendal::options::{ListOptions, ReadOptions, WriteOptions};
use opendal::{blocking, services, EntryMode, ErrorKind, Operator};

use super::{too_large, Create, Entry, RemoteOptions, Store};
use crate::error::{Error, IoContext, Result, Usage};

/// Part size of uploads (S3 multipart above it).
const PART: usize = 8 << 20;
/// Parts of one file in flight at once.
const PARTS_IN_FLIGHT: usize = 4;
/// Files up to this size (every pack of the default size: 32 MiB and a last chunk of
/// at most 16 MiB) are uploaded with one PUT.
const WHOLE: u64 = 64 << 20;

/// The files below each of `prefixes` (`index/`, `keys/`) among `names` (each a path,
/// and its entry if it is a file), as a listing in key order from just before the
/// first prefix returns them; read until a name passes the last prefix. `None` when
/// the names show they are not in key order: one not after the one before, or a
/// first one outside the range (past it, or not after the first prefix without its
/// `/`, where `start-after` was ignored), after which a missing name cannot be told
/// from an absent one.
fn scan<E>(
    prefixes: &[String],
    names: impl IntoIterator<Item = std::result::Result<(String, Option<Entry>), E>>,
) -> std::result::Result<Option<Vec<Vec<Entry>>>, E> {
    let (Some(first), Some(last)) = (prefixes.iter().min(), prefixes.iter().max()) else {
        return Ok(Some(Vec::new()));
    };
    let mut out = vec![Vec::new(); prefixes.len()];
    let mut previous: Option<String> = None;
    for name in names {
        let (path, file) = name?;
        let past = path.as_str() > last.as_str() && !path.starts_with(last.as_str());
        let disordered = match &previous {
            // S3's names are unique: one not after the one before is out of order.
            Some(p) => path <= *p,
            // At or before `start-after`, which the listing began after.
            None => past || path.as_str() <= first.trim_end_matches('/'),
        };
        if disordered {
            return Ok(None);
        }
        if past {
            break;
        }
        if let (Some(i), Some(file)) = (
            prefixes.iter().position(|p| path.starts_with(p.as_str())),
            file,
        ) {
            out[i].push(file);
        }
        previous = Some(path);
    }
    Ok(Some(out))
}

/// Names a page of [`Remote::list_dirs`] holds beyond those its caller expects.
const PAGE_MARGIN: usize = 64;

/// The runtime the remote stores' I/O runs on.
pub(crate) static RUNTIME: LazyLock<tokio::runtime::Runtime> = LazyLock::new(|| {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("snap-io")
        .enable_all()
        .build()
        .expect("the I/O runtime starts")
});

/// A remote repository; see the module docs.
pub struct Remote {
    op: blocking::Operator,
    url: String,
    /// Whether the store honours `If-None-Match: *` on a PUT, found out on first use.
    conditional: OnceLock<bool>,
    /// Whether the bucket lists its names in key order with `start-after`, as S3's
    /// general purpose buckets and the compatible stores do; AWS's directory buckets
    /// (names ending in `--x-s3`, their access points in `--xa-s3`) do neither.
    ordered: bool,
    /// The endpoint, when not AWS's.
    endpoint: Option<String>,
}

/// OpenDAL's message without its context block (it writes `Kind (status) at op,
/// context: { ... } => message, source: ...`), and S3's own error code and message in
/// it (`S3Error { code: "...", message: "...", ... }`) when there are.
fn parts(e: &opendal::Error) -> (String, Option<(String, String)>) {
    let text = e.to_string();
    // Without a message (a HEAD answered 403 has no body), the kind and the call.
    let what = text.split_once(" => ").map_or_else(
        || text.split(", context:").next().unwrap_or_default(),
        |(_, m)| m,
    );
    let field = |name: &str| {
        let start = what.find(&format!("{name}: \""))? + name.len() + 3;
        what[start..].split('"').next().map(str::to_string)
    };
    (what.to_string(), field("code").zip(field("message")))
}

/// What went wrong in the store's own words: `S3 says CODE: MESSAGE`, else OpenDAL's
/// message without its context block.
pub(crate) fn s3_words(e: &opendal::Error) -> String {
    match parts(e) {
        (_, Some((code, message))) => format!("S3 says {code}: {message}"),
        (what, None) => what,
    }
}

/// The client's own error inside an I/O error of a streamed read.
fn client_error(e: std::io::Error) -> opendal::Error {
    let text = e.to_string();
    e.into_inner()
        .and_then(|inner| inner.downcast::<opendal::Error>().ok())
        .map_or_else(|| opendal::Error::new(ErrorKind::Unexpected, text), |e| *e)
}

/// What went wrong, for a person: OpenDAL's own message without its context block,
/// and what to check.
pub(crate) fn describe(e: &opendal::Error) -> String {
    let (what, s3) = parts(e);
    if what.contains("credential") {
        return "no S3 credentials were found: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (or AWS_PROFILE), and AWS_ENDPOINT_URL for a server other than AWS".into();
    }
    if let Some((code, message)) = s3 {
        let hint = match code.as_str() {
            "NoSuchBucket" => "create the bucket first (snap does not create buckets)",
            "AccessDenied" | "InvalidAccessKeyId" | "SignatureDoesNotMatch" => {
                "check the credentials and their rights on this bucket"
            }
            "AuthorizationHeaderMalformed" | "IllegalLocationConstraintException" => {
                "set AWS_REGION to the region the server names"
            }
            _ => "check the bucket, the credentials and the endpoint",
        };
        return format!("S3 says {code}: {message}; {hint}");
    }
    let hint = match e.kind() {
        ErrorKind::PermissionDenied => {
            "permission denied: check the credentials' rights on this path"
        }
        _ => {
            "check the endpoint (AWS_ENDPOINT_URL, or sync's --endpoint), the bucket name and the network, then rerun"
        }
    };
    format!("{what}; {hint}")
}

/// The longest one call of a reader or writer may take, however steadily it moves: a
/// 32 MiB pack PUT at 150 kbit/s. Silence is caught sooner, by the HTTP client.
const IO_BACKSTOP: Duration = Duration::from_secs(3600);

/// `op` talking through an HTTP client that abandons a request silent for `silence`
/// (see [`super::http`]), with up to `times` retries of transient failures
/// (exponential backoff from 200 ms to `max_delay`, with jitter), in blocking form on
/// [`RUNTIME`]. A whole request is not timed: a pack going up a slow link for minutes
/// is not cut.
pub(crate) fn blocking_with_retries(
    op: Operator,
    max_delay: Duration,
    times: usize,
    silence: Duration,
) -> opendal::Result<blocking::Operator> {
    let client = super::http::SilenceTimed::new(silence)?;
    let op = op
        .layer(HttpClientLayer::new(opendal::raw::HttpClient::with(client)))
        .layer(
            TimeoutLayer::new()
                .with_timeout(Duration::from_secs(120).max(silence * 2))
                .with_io_timeout(IO_BACKSTOP.max(silence)),
        )
        .layer(
            RetryLayer::new()
                .with_jitter()
                .with_min_delay(Duration::from_millis(200))
                .with_max_delay(max_delay)
                .with_max_times(times),
        );
    let _guard = RUNTIME.enter();
    blocking::Operator::new(op)
}

impl Remote {
    /// Opens `s3://bucket/prefix`.
    pub fn open(url: &str, opts: &RemoteOptions) -> Result<Remote> {
        let bad = |why: &str| {
            Error::from(Usage::RemoteUrl {
                url: url.to_string(),
                why: why.to_string(),
            })
        };
        let (scheme, rest) = url.split_once("://").ok_or_else(|| bad("no scheme"))?;
        let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
        if authority.is_empty() {
            return Err(bad("no bucket"));
        }
        // HTTP clients rewrite `.` and `..` in a URL's path, so a request would be
        // signed for one key and sent for another (S3 then says the signature is bad).
        if path.split('/').any(|c| c == "." || c == "..") {
            return Err(bad("a prefix may not hold `.` or `..` parts"));
        }
        let root = format!("/{}", path.trim_matches('/'));
        let op = match scheme {
            "s3" => {
                let mut b = services::S3::default().bucket(authority).root(&root);
                if let Some(e) = &opts.endpoint {
                    b = b.endpoint(e);
                }
                let region = opts.region.as_deref().unwrap_or("us-east-1");
                Operator::new(b.region(region)).map(opendal::OperatorBuilder::finish)
            }
            _ => return Err(bad(&format!("unknown scheme {scheme:?}"))),
        };
        let op =
            op.and_then(|op| blocking_with_retries(op, Duration::from_secs(10), 5, opts.silence));
        let op = op.map_err(|e| Error::Storage {
            location: url.to_string(),
            detail: e.to_string(),
        })?;
        Ok(Remote {
            op,
            url: url.trim_end_matches('/').to_string(),
            conditional: OnceLock::new(),
            ordered: !(authority.ends_with("--x-s3") || authority.ends_with("--xa-s3")),
            endpoint: opts.endpoint.clone(),
        })
    }

    /// A PUT of `bytes` to `path` with `If-None-Match: *`: `Exists` when the store
    /// refused it for a file already there.
    fn put_if_absent(&self, path: &str, bytes: &[u8]) -> Result<Create> {
        let put = self.op.write_options(
            path,
            bytes.to_vec(),
            WriteOptions {
                if_not_exists: true,
                ..Default::default()
            },
        );
        match put {
            Ok(_) => Ok(Create::Created),
            Err(e) if e.kind() == ErrorKind::ConditionNotMatch => Ok(Create::Exists),
            Err(e) => Err(self.err(path, e)),
        }
    }

    /// Whether the store honours conditional PUTs: a probe file in `tmp/` is created
    /// with `If-None-Match: *`, then created again, which must be refused. A store that
    /// ignores the header (Garage, S3 before 2024) lets the second through; one that
    /// rejects it outright counts as not honouring it. The probe is removed either
    /// way (a leftover is an orphan temp file, which prune removes).
    fn honours_conditions(&self) -> Result<bool> {
        if let Some(&known) = self.conditional.get() {
            return Ok(known);
        }
        let probe = super::temp_name()?;
        let honoured = match self.put_if_absent(&probe, b"") {
            Ok(Create::Created) => matches!(self.put_if_absent(&probe, b""), Ok(Create::Exists)),
            _ => false,
        };
        self.delete(&probe)?;
        log::debug!(
            "{}: {}",
            self.url,
            if honoured {
                "the store honours If-None-Match, so locks are taken with one conditional write"
            } else {
                "the store ignores If-None-Match on writes, so locks rely on listing after writing"
            }
        );
        Ok(*self.conditional.get_or_init(|| honoured))
    }

    fn err(&self, path: &str, e: opendal::Error) -> Error {
        if e.kind() == ErrorKind::NotFound {
            return super::missing(self, path);
        }
        Error::Storage {
            location: format!("{}/{path}", self.url),
            detail: describe(&e),
        }
    }

    /// Writes `bytes` with one PUT: a pack costs one request rather than a multipart
    /// upload of seven, for about the memory of the parts that would be in flight.
    fn put_whole(&self, path: &str, bytes: Vec<u8>) -> Result<()> {
        self.op
            .write(path, bytes)
            .map(drop)
            .map_err(|e| self.err(path, e))
    }

    /// Writes through a writer in parts (an atomic PUT, multipart above [`PART`]).
    fn upload(
        &self,
        path: &str,
        fill: impl FnOnce(&mut blocking::Writer) -> Result<()>,
    ) -> Result<()> {
        let mut w = self
            .op
            .writer_options(
                path,
                WriteOptions {
                    chunk: Some(PART),
                    concurrent: PARTS_IN_FLIGHT,
                    ..Default::default()
                },
            )
            .map_err(|e| self.err(path, e))?;
        fill(&mut w)?;
        w.close().map_err(|e| self.err(path, e))?;
        Ok(())
    }
}

impl Store for Remote {
    fn location(&self) -> String {
        self.url.clone()
    }

    fn local_root(&self) -> Option<&Path> {
        None
    }

    fn endpoint(&self) -> Option<&str> {
        self.endpoint.as_deref()
    }

    /// One GET, streamed and dropped once it passes `cap` bytes: a longer file is
    /// refused without being read whole, and no HEAD comes first (S3 bills each
    /// request; a ranged GET would need the length first, since the client refuses a
    /// range the file does not fill).
    fn read(&self, path: &str, cap: u64) -> Result<Vec<u8>> {
        let body = self
            .op
            .reader(path)
            .and_then(|r| r.into_bytes_iterator(..))
            .map_err(|e| self.err(path, e))?;
        let mut out = Vec::new();
        for piece in body {
            let piece = piece.map_err(|e| self.err(path, client_error(e)))?;
            out.extend_from_slice(&piece);
            if out.len() as u64 > cap {
                let len = self.size(path)?.unwrap_or(out.len() as u64);
                return Err(too_large(&self.url, path, len, cap));
            }
        }
        Ok(out)
    }

    fn read_at(&self, path: &str, offset: u64, len: usize) -> Result<Vec<u8>> {
        let b = self
            .op
            .read_options(
                path,
                ReadOptions {
                    range: (offset..offset + len as u64).into(),
                    ..Default::default()
                },
            )
            .map_err(|e| self.err(path, e))?;
        if b.len() != len {
            return Err(Error::Storage {
                location: format!("{}/{path}", self.url),
                detail: format!("read {} bytes at {offset} where {len} were asked", b.len()),
            });
        }
        Ok(b.to_vec())
    }

    fn read_stream(
        &self,
        path: &str,
        offset: u64,
        len: u64,
    ) -> Result<Box<dyn std::io::Read + Send + '_>> {
        let r = self
            .op
            .reader(path)
            .and_then(|r| r.into_std_read(offset..offset + len))
            .map_err(|e| self.err(path, e))?;
        Ok(Box::new(r))
    }

    fn size(&self, path: &str) -> Result<Option<u64>> {
        match self.op.stat(path) {
            Ok(m) => Ok(Some(m.content_length())),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
            Err(e) => Err(self.err(path, e)),
        }
    }

    fn list(&self, dir: &str) -> Result<Vec<Entry>> {
        let prefix = format!("{}/", dir.trim_end_matches('/'));
        let entries = match self.op.list_options(
            &prefix,
            ListOptions {
                recursive: true,
                ..Default::default()
            },
        ) {
            Ok(e) => e,
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(self.err(dir, e)),
        };
        Ok(entries
            .into_iter()
            .filter(|e| e.metadata().mode() == EntryMode::FILE)
            .map(|e| Entry {
                path: e.path().trim_start_matches('/').to_string(),
                size: e.metadata().content_length(),
                modified: e.metadata().last_modified().map(Into::into),
            })
            .collect())
    }

    /// One listing of the whole repository from just before the first directory's
    /// names (S3's `start-after`), read page by page until it passes the last one's:
    /// for adjacent directories, one request where each alone would be one. The first
    /// page holds the names expected and 64 more (`PAGE_MARGIN`), so that the one
    /// request does not carry a thousand names of the packs that follow; any further
    /// ones a thousand. Stopping there needs names in key order: a bucket known not to
    /// keep it, a listing seen out of it, or one whose first name is outside the range
    /// (past it: nothing in any directory; before it: a store that ignored
    /// `start-after`), is listed directory by directory.
    fn list_dirs(&self, dirs: &[&str], expect: usize) -> Result<Vec<Vec<Entry>>> {
        if !self.ordered || dirs.len() < 2 {
            return super::list_each(self, dirs);
        }
        let prefixes: Vec<String> = dirs
            .iter()
            .map(|d| format!("{}/", d.trim_matches('/')))
            .collect();
        let first = prefixes.iter().min().expect("two directories");
        let err = |e| self.err(&format!("{} listed together", dirs.join(", ")), e);
        let list_after = |after: &str, limit: usize| {
            self.op
                .lister_options(
                    "/",
                    ListOptions {
                        recursive: true,
                        start_after: Some(after.to_string()),
                        limit: Some(limit),
                        ..Default::default()
                    },
                )
                .map_err(err)
        };
        // The first page holds what the caller expects; should the directories go on
        // past it (another host added many files), the rest comes in whole pages.
        let page = expect.saturating_add(PAGE_MARGIN).min(1000);
        // `first` without its `/` sorts before every name below it.
        let mut lister = list_after(first.trim_end_matches('/'), page)?;
        let (mut read, mut last) = (0, String::new());
        let names = std::iter::from_fn(|| {
            if read == page {
                lister = match list_after(&last, 1000) {
                    Ok(l) => l,
                    Err(e) => return Some(Err(e)),
                };
            }
            let e = match lister.next()?.map_err(err) {
                Ok(e) => e,
                Err(e) => return Some(Err(e)),
            };
            read += 1;
            last = e.path().trim_start_matches('/').to_string();
            let m = e.metadata();
            let file = (m.mode() == EntryMode::FILE).then(|| Entry {
                path: last.clone(),
                size: m.content_length(),
                modified: m.last_modified().map(Into::into),
            });
            Some(Ok((last.clone(), file)))
        });
        if let Some(out) = scan(&prefixes, names)? {
            return Ok(out);
        }
        log::debug!(
            "{}: names out of key order; listing each directory",
            self.url
        );
        super::list_each(self, dirs)
    }

    fn put(&self, path: &str, bytes: &[u8]) -> Result<()> {
        let bytes = bytes.to_vec();
        if bytes.len() as u64 <= WHOLE {
            return self.put_whole(path, bytes);
        }
        self.upload(path, |w| w.write(bytes).map_err(|e| self.err(path, e)))
    }

    fn put_file(&self, path: &str, file: tempfile::NamedTempFile) -> Result<()> {
        use std::io::Read;
        let len = file.as_file().metadata().at(file.path())?.len();
        if len <= WHOLE {
            return self.put_whole(path, std::fs::read(file.path()).at(file.path())?);
        }
        let mut f = file.reopen().at(file.path())?;
        self.upload(path, |w| loop {
            // Each part's buffer is handed over whole, not copied.
            let mut buf = vec![0u8; PART];
            let n = f.read(&mut buf).at(file.path())?;
            if n == 0 {
                return Ok(());
            }
            buf.truncate(n);
            w.write(buf).map_err(|e| self.err(path, e))?;
        })
    }

    fn create_volatile(&self, path: &str, bytes: &[u8]) -> Result<Create> {
        if !self.honours_conditions()? {
            return Ok(Create::Unsupported);
        }
        self.put_if_absent(path, bytes)
    }

    fn delete(&self, path: &str) -> Result<()> {
        match self.op.delete(path) {
            Err(e) if e.kind() != ErrorKind::NotFound => Err(self.err(path, e)),
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(path: &str) -> Entry {
        Entry {
            path: path.to_string(),
            size: 1,
            modified: None,
        }
    }

    /// `names` as a listing returns them, all files but those ending in `/`.
    fn listed(names: &[&str]) -> Vec<std::result::Result<(String, Option<Entry>), ()>> {
        names
            .iter()
            .map(|n| Ok((n.to_string(), (!n.ends_with('/')).then(|| entry(n)))))
            .collect()
    }

    fn paths(out: &[Vec<Entry>]) -> Vec<Vec<&str>> {
        out.iter()
            .map(|d| d.iter().map(|e| e.path.as_str()).collect())
            .collect()
    }

    #[test]
    fn a_scan_keeps_each_directory_and_stops_past_the_last() {
        let prefixes = ["index/".to_string(), "keys/".to_string()];
        let names = listed(&[
            "index.bak",
            "index/",
            "index/aa",
            "index/bb/cc",
            "index0",
            "keys-x",
            "keys/1.json",
            "keys0",
            "locks/2.json",
            // Never read: the scan stopped at the name before.
            "index/zz",
        ]);
        let out = scan(&prefixes, names).unwrap().unwrap();
        assert_eq!(
            paths(&out),
            vec![vec!["index/aa", "index/bb/cc"], vec!["keys/1.json"]]
        );
    }

    #[test]
    fn a_scan_out_of_key_order_is_refused() {
        let prefixes = ["index/".to_string(), "keys/".to_string()];
        let scan_of = |names: &[&str]| scan(&prefixes, listed(names)).unwrap();
        // A name smaller than the one before, or the same again.
        assert!(scan_of(&["index/b", "index/a", "keys/1"]).is_none());
        assert!(scan_of(&["index/a", "index/a", "keys/1"]).is_none());
        // A first name already past both directories: what follows could hold theirs.
        assert!(scan_of(&["packs/00/aa", "index/a"]).is_none());
        // A first name before them: `start-after` was ignored.
        assert!(scan_of(&["config", "index/a"]).is_none());
        assert!(scan_of(&["index", "index/a"]).is_none());
        // In order, or nothing at all: a listing.
        assert_eq!(
            paths(&scan_of(&["index/a", "keys/1", "locks/x"]).unwrap()),
            vec![vec!["index/a"], vec!["keys/1"]]
        );
        assert_eq!(
            paths(&scan_of(&[]).unwrap()),
            vec![vec![], vec![]] as Vec<Vec<&str>>
        );
    }

    #[test]
    fn a_failure_mid_scan_is_an_error() {
        let prefixes = ["index/".to_string(), "keys/".to_string()];
        let names = vec![Ok(("index/a".to_string(), Some(entry("index/a")))), Err(())];
        assert!(scan(&prefixes, names).is_err());
    }
}
