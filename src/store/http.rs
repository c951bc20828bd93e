//! The HTTP client of S3 stores: it times silence, not requests. A request is
//! abandoned (and retried by the store's retry layer) once nothing has moved for the
//! time allowed: no bytes of its body taken by the connection, or, once the body is
//! sent, no response; then no bytes of the response body. A pack going up a slow link
//! for minutes is never cut, and a server that stopped answering is given up on in
//! about that time instead of never.

use std::future::Future;
use std::pin::Pin;
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_core::Stream;
use http_body::{Body, Frame, SizeHint};
use opendal::raw::{HttpBody, HttpFetch};
use opendal::{Buffer, Error, ErrorKind, Result};

/// Bytes of a request body handed to the connection at a time: each piece taken is
/// progress, so a piece must go out well within the silence allowed on a slow link.
const PIECE: usize = 64 << 10;

/// A [`reqwest::Client`] whose requests fail after `silence` with nothing moving.
pub(crate) struct SilenceTimed {
    client: reqwest::Client,
    silence: Duration,
}

impl SilenceTimed {
    /// Connections give up connecting after `silence` too.
    pub(crate) fn new(silence: Duration) -> Result<SilenceTimed> {
        let client = reqwest::Client::builder()
            .connect_timeout(silence)
            .build()
            .map_err(|e| {
                Error::new(ErrorKind::Unexpected, "building the HTTP client").set_source(e)
            })?;
        Ok(SilenceTimed { client, silence })
    }
}

/// When a request last moved, in milliseconds since `start`.
struct Moved {
    start: Instant,
    at: AtomicU64,
}

impl Moved {
    fn new() -> Arc<Moved> {
        Arc::new(Moved {
            start: Instant::now(),
            at: AtomicU64::new(0),
        })
    }

    fn now(&self) {
        let ms = u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.at.store(ms, Ordering::Relaxed);
    }

    fn still_for(&self) -> Duration {
        let at = Duration::from_millis(self.at.load(Ordering::Relaxed));
        self.start.elapsed().saturating_sub(at)
    }
}

/// A request body in pieces of at most [`PIECE`] bytes, noting each piece taken.
struct Up {
    buffer: Buffer,
    piece: Bytes,
    moved: Arc<Moved>,
}

impl Body for Up {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<std::result::Result<Frame<Bytes>, Self::Error>>> {
        if self.piece.is_empty() {
            match self.buffer.next() {
                Some(bs) => self.piece = bs,
                None => return Poll::Ready(None),
            }
        }
        let n = self.piece.len().min(PIECE);
        let out = self.piece.split_to(n);
        self.moved.now();
        Poll::Ready(Some(Ok(Frame::data(out))))
    }

    fn is_end_stream(&self) -> bool {
        self.piece.is_empty() && self.buffer.is_empty()
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact((self.piece.len() + self.buffer.len()) as u64)
    }
}

/// A response body that fails once its reader has waited `silence` for bytes (time
/// the reader spends elsewhere does not count).
struct Down {
    inner: Pin<Box<dyn Stream<Item = reqwest::Result<Bytes>> + Send + Sync>>,
    silence: Duration,
    timer: Pin<Box<tokio::time::Sleep>>,
    /// Whether the reader is waiting: the timer runs from when it began to.
    waiting: bool,
    url: String,
}

impl Stream for Down {
    type Item = Result<Buffer>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        loop {
            match self.inner.as_mut().poll_next(cx) {
                Poll::Ready(Some(Ok(bs))) if bs.is_empty() => {}
                Poll::Ready(Some(Ok(bs))) => {
                    self.waiting = false;
                    return Poll::Ready(Some(Ok(Buffer::from(bs))));
                }
                Poll::Ready(Some(Err(e))) => {
                    let e = failed("read data from http response", &self.url, e);
                    return Poll::Ready(Some(Err(e)));
                }
                Poll::Ready(None) => return Poll::Ready(None),
                Poll::Pending => {
                    if !self.waiting {
                        self.waiting = true;
                        let deadline = tokio::time::Instant::now() + self.silence;
                        self.timer.as_mut().reset(deadline);
                    }
                    return match self.timer.as_mut().poll(cx) {
                        Poll::Ready(()) => Poll::Ready(Some(Err(silent(self.silence, &self.url)))),
                        Poll::Pending => Poll::Pending,
                    };
                }
            }
        }
    }
}

/// The error of a request that reqwest failed; temporary (worth a retry) as OpenDAL's
/// own client judges it.
fn failed(what: &'static str, url: &str, e: reqwest::Error) -> Error {
    let temporary = e.is_request() || e.is_body() || e.is_decode() || e.is_timeout();
    Error::new(ErrorKind::Unexpected, what)
        .with_context("url", url)
        .with_temporary(temporary)
        .set_source(e)
}

/// The error of a request silent for `silence`: temporary.
fn silent(silence: Duration, url: &str) -> Error {
    Error::new(
        ErrorKind::Unexpected,
        format!("no answer for {} s", silence.as_secs_f64()),
    )
    .with_context("url", url)
    .set_temporary()
}

impl HttpFetch for SilenceTimed {
    async fn fetch(&self, req: http::Request<Buffer>) -> Result<http::Response<HttpBody>> {
        let target = req.uri().clone();
        let uri = target.to_string();
        let head = req.method() == http::Method::HEAD;
        let (parts, body) = req.into_parts();
        let url = reqwest::Url::from_str(&uri).map_err(|e| {
            Error::new(ErrorKind::Unexpected, "request url is invalid")
                .with_context("url", &uri)
                .set_source(e)
        })?;
        let moved = Moved::new();
        let mut builder = self
            .client
            .request(parts.method, url)
            .headers(parts.headers)
            .version(parts.version);
        if !body.is_empty() {
            builder = builder.body(reqwest::Body::wrap(Up {
                buffer: body,
                piece: Bytes::new(),
                moved: moved.clone(),
            }));
        }
        let send = builder.send();
        tokio::pin!(send);
        let check = (self.silence / 4).max(Duration::from_millis(50));
        let mut resp = loop {
            tokio::select! {
                r = &mut send => break r.map_err(|e| failed("send http request", &uri, e))?,
                () = tokio::time::sleep(check) => {
                    if moved.still_for() >= self.silence {
                        return Err(silent(self.silence, &uri));
                    }
                }
            }
        };
        let length = if head || resp.headers().contains_key(http::header::CONTENT_ENCODING) {
            None
        } else {
            resp.content_length()
        };
        let mut out = http::Response::builder()
            .status(resp.status())
            .version(resp.version())
            // OpenDAL reads the request's URI there.
            .extension(target);
        std::mem::swap(
            out.headers_mut().expect("a new builder has headers"),
            resp.headers_mut(),
        );
        let down = Down {
            inner: Box::pin(resp.bytes_stream()),
            silence: self.silence,
            timer: Box::pin(tokio::time::sleep(self.silence)),
            waiting: false,
            url: uri,
        };
        out.body(HttpBody::new(down, length))
            .map_err(|e| Error::new(ErrorKind::Unexpected, "building the response").set_source(e))
    }
}
