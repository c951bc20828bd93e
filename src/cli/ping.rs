//! A profile's `ping`: push notifications of a `snap run` in the convention of
//! healthchecks.io (and services that copy it): a POST to `URL/start` when the run
//! starts, to `URL` when it succeeds, to `URL/fail` with the end of the error when it
//! fails. A ping never changes the run's outcome: one that cannot be delivered
//! (refused, no answer within 10 s, not a 2xx answer) is a warning, which names
//! the URL by its scheme and host only (the path of a ping URL is its secret).

/// The most of an error's text a failure ping carries (its end), in bytes.
pub const TAIL: usize = 10_000;

/// Where a profile's pings go.
pub struct Ping {
    url: String,
}

impl Ping {
    pub fn new(url: &str) -> Ping {
        Ping { url: url.into() }
    }

    /// The run has started.
    pub fn start(&self) {
        self.send("/start", String::new());
    }

    /// The run succeeded; `body` says how.
    pub fn success(&self, body: String) {
        self.send("", body);
    }

    /// The run failed with `error`: its last [`TAIL`] bytes go along.
    pub fn fail(&self, error: &str) {
        self.send("/fail", tail(error, TAIL).to_string());
    }

    fn send(&self, suffix: &str, body: String) {
        let url = endpoint(&self.url, suffix);
        if let Err(why) = post(&url, body) {
            let what = suffix.strip_prefix('/').unwrap_or("success");
            eprintln!(
                "snap: warning: ping ({what}) to {} not delivered: {why}; the run's outcome is unchanged",
                redacted(&url)
            );
        }
    }
}

/// POSTs `body` to `url`.
#[cfg(feature = "remote")]
fn post(url: &str, body: String) -> Result<(), String> {
    /// How long one ping may take, connection included.
    const TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);
    // reqwest names the URL in its errors: they are shown without it.
    let words = |e: reqwest::Error| {
        let e = e.without_url();
        let mut text = e.to_string();
        let mut cause = std::error::Error::source(&e);
        while let Some(c) = cause {
            let more = c.to_string();
            if !text.contains(&more) {
                text = format!("{text}: {more}");
            }
            cause = c.source();
        }
        text
    };
    let client = reqwest::blocking::Client::builder()
        .timeout(TIMEOUT)
        .connect_timeout(TIMEOUT)
        .user_agent(concat!("snap/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(words)?;
    let answer = client.post(url).body(body).send().map_err(words)?;
    let status = answer.status();
    if status.is_success() {
        Ok(())
    } else {
        Err(format!("the server answered {status}"))
    }
}

/// Without the `remote` feature this build has no HTTP client.
#[cfg(not(feature = "remote"))]
fn post(_url: &str, _body: String) -> Result<(), String> {
    Err("this snap was built without HTTP support (the `remote` feature)".into())
}

/// `url` with `suffix` added to its path, before any query: `https://h/id?rid=1` and
/// `/fail` give `https://h/id/fail?rid=1`.
fn endpoint(url: &str, suffix: &str) -> String {
    let (base, query) = match url.find(['?', '#']) {
        Some(i) => url.split_at(i),
        None => (url, ""),
    };
    let base = if suffix.is_empty() {
        base
    } else {
        base.trim_end_matches('/')
    };
    format!("{base}{suffix}{query}")
}

/// `url` as a message may show it: its scheme and host (and port), without user,
/// password, path or query.
fn redacted(url: &str) -> String {
    let (scheme, rest) = url.split_once("://").unwrap_or(("", url));
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    let host = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    format!("{scheme}://{host}")
}

/// The last `max` bytes of `text` at most, starting on a character boundary.
fn tail(text: &str, max: usize) -> &str {
    let mut start = text.len().saturating_sub(max);
    while !text.is_char_boundary(start) {
        start += 1;
    }
    &text[start..]
}

#[cfg(test)]
mod tests {
    use super::{endpoint, redacted, tail};

    #[test]
    fn suffixes_go_before_the_query() {
        assert_eq!(
            endpoint("https://hc-ping.com/abc", "/start"),
            "https://hc-ping.com/abc/start"
        );
        assert_eq!(
            endpoint("https://hc-ping.com/abc/", "/fail"),
            "https://hc-ping.com/abc/fail"
        );
        assert_eq!(endpoint("https://h/abc/", ""), "https://h/abc/");
        assert_eq!(
            endpoint("https://h/abc?rid=1#x", "/fail"),
            "https://h/abc/fail?rid=1#x"
        );
    }

    #[test]
    fn messages_show_scheme_and_host_only() {
        assert_eq!(
            redacted("https://user:pw@hc.example:8000/secret-uuid/fail?x=1"),
            "https://hc.example:8000"
        );
        assert_eq!(redacted("http://127.0.0.1:9/k"), "http://127.0.0.1:9");
        assert_eq!(redacted("https://hc.example?k=1"), "https://hc.example");
    }

    #[test]
    fn the_tail_is_cut_on_a_character() {
        assert_eq!(tail("short", 10), "short");
        assert_eq!(tail("abcdef", 3), "def");
        // 'é' is two bytes: a cut in its middle moves past it.
        assert_eq!(tail("aébc", 4), "ébc");
        assert_eq!(tail("aébc", 3), "bc");
    }
}
