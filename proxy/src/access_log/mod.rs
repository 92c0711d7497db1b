//! The access log: one JSON line per request on stdout. Each worker thread writes its lines into
//! a buffer of its own and a writer thread puts them out in chunks (`writer`), so a slow
//! terminal or pipe never stalls a request: when the writer falls behind, lines are dropped and
//! counted (`weir_access_log_dropped_total`) rather than blocking traffic.
//!
//! `--access-log-sample` keeps a fraction of the lines, chosen by the request id so that every
//! hop of one request (gateway, both sidecars) keeps or skips it alike. The authenticated user
//! is logged as a keyed hash unless `--access-log-user plain` is asked for.
//!
//! Only the fields below are logged. Headers are not, so `Authorization`, `Cookie` and API keys
//! never reach the log; nor does the query string, which often carries tokens.

use std::{
    collections::HashMap,
    io::Write,
    net::SocketAddr,
    path::PathBuf,
    sync::{Arc, Mutex},
    time::{Instant, SystemTime},
};

use anyhow::Context as _;
use aws_lc_rs::hmac;
use http::{header, request, HeaderValue, Method, Response, Version};

use crate::{headers, resilience::retry::Report};
use weir_http::{
    body::{boxed, Body, Observed},
    error::ERROR_HEADER,
};

mod json;
mod text;
mod writer;

pub use text::{Addr, Millis, Stamp};
pub use writer::FLUSH;

/// One request, as logged (written by `json`; serde's derive is the tests' reference).
#[derive(Debug)]
#[cfg_attr(test, derive(serde::Serialize))]
pub struct Entry<'a> {
    /// RFC 3339 time the request arrived, in UTC with milliseconds.
    pub time: Stamp,
    /// Client address.
    pub client: Addr,
    /// `HTTP/1.1`, `HTTP/2.0`.
    pub protocol: &'a str,
    /// Request method.
    pub method: &'a str,
    /// `Host` (or `:authority`).
    pub host: &'a str,
    /// Normalised path, without the query.
    pub path: &'a str,
    /// Status sent to the client.
    pub status: u16,
    /// Route name, when one matched.
    pub route: Option<&'a str>,
    /// Backend cluster.
    pub backend: Option<&'a str>,
    /// Endpoint address.
    pub endpoint: Option<Addr>,
    /// `x-weir-error` reason, when Weir produced the response.
    pub error: Option<&'a str>,
    /// Tries made to the backend.
    pub attempts: u32,
    /// Until the last response byte, in milliseconds (to the microsecond).
    pub duration_ms: Millis,
    /// Waiting on the backend for response headers, in milliseconds.
    pub upstream_ms: Option<Millis>,
    /// Request body bytes (as declared by `content-length`).
    pub bytes_in: u64,
    /// Response body bytes sent.
    pub bytes_out: u64,
    /// `x-request-id`.
    pub request_id: &'a str,
    /// W3C trace id.
    pub trace_id: &'a str,
    /// `User-Agent`.
    pub user_agent: Option<&'a str>,
    /// The authenticated user (a JWT's `sub`, an API key's client): a keyed hash of it unless
    /// `--access-log-user plain`.
    pub user: Option<&'a str>,
}

/// The access-log flags, shared by weir-ingress and weir-sidecar.
#[derive(clap::Args, Debug, Clone)]
pub struct LogArgs {
    /// Write one JSON access-log line per request to stdout.
    #[arg(long, env = "WEIR_ACCESS_LOG", default_value = "on", value_parser = ["on", "off"])]
    pub access_log: String,
    /// Log this fraction of requests (0 < RATIO <= 1), chosen by `x-request-id` so that every
    /// hop of a request is logged or none is.
    #[arg(long, env = "WEIR_ACCESS_LOG_SAMPLE", default_value_t = 1.0, value_parser = ratio)]
    pub access_log_sample: f64,
    /// How the log names an authenticated user: `hash` (HMAC-SHA256 under the key in
    /// --access-log-user-key-file, 32 hex digits), `plain`, or `off`.
    #[arg(long, env = "WEIR_ACCESS_LOG_USER", default_value = "hash", value_parser = ["hash", "plain", "off"])]
    pub access_log_user: String,
    /// The key for `--access-log-user hash` (a file, say from a Secret; at least 16 bytes).
    /// Without it each process makes a random key: hashes then match only within a process.
    #[arg(long, env = "WEIR_ACCESS_LOG_USER_KEY_FILE")]
    pub access_log_user_key_file: Option<PathBuf>,
}

impl Default for LogArgs {
    fn default() -> Self {
        Self {
            access_log: "on".into(),
            access_log_sample: 1.0,
            access_log_user: "hash".into(),
            access_log_user_key_file: None,
        }
    }
}

fn ratio(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(r) if r > 0.0 && r <= 1.0 => Ok(r),
        _ => Err(format!(
            "{text:?} is not a ratio in (0, 1]: 0.01 logs one request in a hundred (use --access-log off for none)"
        )),
    }
}

/// How users are named in the log.
#[derive(Clone)]
enum User {
    Off,
    Plain,
    Hash(Arc<Hasher>),
}

/// The keyed hash of users, remembering the last few thousand: the same users come back, and
/// an HMAC costs about a microsecond.
struct Hasher {
    key: hmac::Key,
    seen: Mutex<HashMap<Box<str>, [u8; 32]>>,
}

/// Users remembered before the memory starts again.
const SEEN: usize = 4096;
/// The longest user name remembered.
const REMEMBERED: usize = 256;

/// The first 16 bytes of `tag` in hex.
fn hex_of(tag: &[u8]) -> [u8; 32] {
    let mut hex = [0; 32];
    for (i, b) in tag[..16].iter().enumerate() {
        hex[2 * i] = HEX[usize::from(b >> 4)];
        hex[2 * i + 1] = HEX[usize::from(b & 15)];
    }
    hex
}

impl Hasher {
    fn hash(&self, user: &str) -> [u8; 32] {
        let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(hex) = seen.get(user) {
            return *hex;
        }
        let tag = hmac::sign(&self.key, user.as_bytes());
        // Only names of a usual size are remembered: a few thousand huge ones (a claim is as
        // long as the token allows) would hold megabytes.
        let hex = hex_of(tag.as_ref());
        if user.len() > REMEMBERED {
            return hex;
        }
        if seen.len() >= SEEN {
            seen.clear();
        }
        seen.insert(user.into(), hex);
        hex
    }
}

/// Where access-log lines go.
#[derive(Clone)]
pub struct AccessLog {
    lines: Option<Arc<writer::Lines>>,
    /// Requests whose id hashes at or under this are logged.
    sample: u64,
    user: User,
}

impl AccessLog {
    /// A log that discards.
    pub fn off() -> Self {
        Self {
            lines: None,
            sample: u64::MAX,
            user: User::Off,
        }
    }

    /// The log the flags ask for, on stdout.
    pub fn stdout(args: &LogArgs, dropped: prometheus::IntCounter) -> anyhow::Result<Self> {
        Self::to(args, Box::new(std::io::stdout()), dropped)
    }

    /// The log the flags ask for, written to `out`.
    pub fn to(
        args: &LogArgs,
        out: Box<dyn Write + Send>,
        dropped: prometheus::IntCounter,
    ) -> anyhow::Result<Self> {
        if args.access_log == "off" {
            return Ok(Self::off());
        }
        let user = match args.access_log_user.as_str() {
            "off" => User::Off,
            "plain" => User::Plain,
            _ => User::Hash(Arc::new(Hasher {
                key: user_key(args.access_log_user_key_file.as_ref())?,
                seen: Mutex::default(),
            })),
        };
        let lines = writer::Lines::start(out, dropped).context("starting the access-log writer")?;
        Ok(Self {
            lines: Some(lines),
            // Saturates at u64::MAX for 1.0: every request.
            sample: (args.access_log_sample * u64::MAX as f64) as u64,
            user,
        })
    }

    /// Waits until the lines logged so far have reached the output: at shutdown, after the
    /// last request, so that the process does not exit with lines still gathering.
    pub fn settle(&self) {
        if let Some(lines) = &self.lines {
            lines.settle();
        }
    }

    /// True when lines are written somewhere.
    pub fn enabled(&self) -> bool {
        self.lines.is_some()
    }

    /// True when this request is in the sample (the log on): the same `x-request-id` gives
    /// the same answer in every Weir process. A request outside it is still logged when it is
    /// refused or fails (see `on_end`).
    pub fn wants(&self, parts: &request::Parts) -> bool {
        self.enabled() && self.samples(parts.headers.get(headers::REQUEST_ID))
    }

    fn samples(&self, request_id: Option<&HeaderValue>) -> bool {
        if self.sample == u64::MAX {
            return true;
        }
        let draw = match request_id {
            Some(id) => spread(id.as_bytes()),
            None => fastrand::u64(..),
        };
        draw <= self.sample
    }

    /// Logs one request.
    pub fn log(&self, entry: &Entry<'_>) {
        let Some(lines) = &self.lines else { return };
        lines.append(|buf| {
            entry.write_json(buf);
            buf.push(b'\n');
        });
    }

    /// The user as this log names it; `hex` is room for the hash.
    fn user<'a>(&self, user: Option<&'a str>, hex: &'a mut [u8; 32]) -> Option<&'a str> {
        let user = user?;
        match &self.user {
            User::Off => None,
            User::Plain => Some(clip(user)),
            User::Hash(hasher) => {
                *hex = hasher.hash(user);
                std::str::from_utf8(hex).ok()
            }
        }
    }
}

const HEX: &[u8; 16] = b"0123456789abcdef";

/// The key for hashing users: from the file, or random for this process.
fn user_key(file: Option<&PathBuf>) -> anyhow::Result<hmac::Key> {
    let Some(file) = file else {
        tracing::info!(
            "access log: users are hashed under a random key of this process's (set --access-log-user-key-file for hashes that match across replicas and restarts)"
        );
        let key: [u8; 32] = std::array::from_fn(|_| fastrand::u8(..));
        return Ok(hmac::Key::new(hmac::HMAC_SHA256, &key));
    };
    let key = std::fs::read(file)
        .with_context(|| format!("reading --access-log-user-key-file {}", file.display()))?;
    let key = key.trim_ascii();
    anyhow::ensure!(
        key.len() >= 16,
        "--access-log-user-key-file {}: the key is {} bytes; at least 16 are needed",
        file.display(),
        key.len()
    );
    Ok(hmac::Key::new(hmac::HMAC_SHA256, key))
}

/// An even 64-bit draw from a request id: FNV-1a, then a finaliser so that ids differing only
/// in their last characters land far apart.
fn spread(id: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in id {
        h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
    }
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    h ^ (h >> 33)
}

/// What a log line says of the request, taken from its head as it arrives (only when the log
/// is on: nothing of it is copied otherwise).
pub struct Arrival {
    time: SystemTime,
    started: Instant,
    client: SocketAddr,
    protocol: &'static str,
    method: Method,
    /// The host, then the path (as received until the role normalises it): one allocation.
    head: String,
    host_len: usize,
    bytes_in: u64,
    request_id: Option<HeaderValue>,
    traceparent: Option<HeaderValue>,
    user_agent: Option<HeaderValue>,
}

impl Arrival {
    /// The request's half of its line: `host` is the host it was routed by.
    pub fn of(parts: &request::Parts, client: SocketAddr, host: &str, started: Instant) -> Self {
        Self {
            time: SystemTime::now(),
            started,
            client,
            protocol: version_name(parts.version),
            method: parts.method.clone(),
            head: {
                let path = parts.uri.path();
                let mut head = String::with_capacity(host.len() + path.len());
                head.push_str(host);
                head.push_str(path);
                head
            },
            host_len: host.len(),
            bytes_in: parts
                .headers
                .get(header::CONTENT_LENGTH)
                .and_then(|v| v.to_str().ok())
                .and_then(|n| n.parse().ok())
                .unwrap_or(0),
            request_id: parts.headers.get(headers::REQUEST_ID).cloned(),
            traceparent: parts.headers.get(headers::TRACEPARENT).cloned(),
            // Shares the head's bytes: no copy.
            user_agent: parts.headers.get(header::USER_AGENT).cloned(),
        }
    }
}

impl Arrival {
    /// Logs `path` in place of the path as received (the role normalised it).
    pub fn set_path(&mut self, path: &str) {
        self.head.truncate(self.host_len);
        self.head.push_str(path);
    }

    fn host(&self) -> &str {
        &self.head[..self.host_len]
    }

    fn path(&self) -> &str {
        &self.head[self.host_len..]
    }
}

/// What happened to a request, known when its response headers go.
#[derive(Default)]
pub struct Outcome {
    /// The route (or, in the mesh, the Service) it went to.
    pub route: Option<Arc<str>>,
    /// The cluster.
    pub backend: Option<Arc<str>>,
    /// Tries, the last endpoint, time waiting on it.
    pub sent: Report,
    /// Why Weir answered itself, when it did.
    pub error: Option<&'static str>,
    /// Who the request was authenticated as.
    pub user: Option<Box<str>>,
}

impl AccessLog {
    /// Logs the exchange once `response`'s body ends (or the client goes away): every
    /// exchange in the sample, and every one that is refused or fails (status 400 and up, or a
    /// reason of Weir's) whatever its id. A client may choose its `x-request-id`, and so which
    /// of its requests fall outside the sample; it cannot hide its refusals and failures.
    pub fn on_end(
        &self,
        arrival: Arrival,
        outcome: Outcome,
        response: Response<Body>,
    ) -> Response<Body> {
        let log = self.clone();
        let (parts, body) = response.into_parts();
        let status = parts.status.as_u16();
        let error = outcome.error.map(str::to_string).or_else(|| {
            parts
                .headers
                .get(&ERROR_HEADER)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
        });
        if status < 400 && error.is_none() && !self.samples(arrival.request_id.as_ref()) {
            return Response::from_parts(parts, body);
        }
        let observed = Observed::new(body, move |bytes_out| {
            let sent = outcome.sent;
            let mut hex = [0; 32];
            log.log(&Entry {
                time: Stamp::of(arrival.time),
                client: Addr(arrival.client),
                protocol: arrival.protocol,
                method: arrival.method.as_str(),
                host: clip(arrival.host()),
                path: clip(arrival.path()),
                status,
                route: outcome.route.as_deref(),
                backend: outcome.backend.as_deref(),
                endpoint: sent.endpoint.map(Addr),
                error: error.as_deref(),
                attempts: sent.attempts,
                duration_ms: Millis(arrival.started.elapsed()),
                upstream_ms: (sent.attempts > 0).then_some(Millis(sent.upstream_wait)),
                bytes_in: arrival.bytes_in,
                bytes_out,
                request_id: text(&arrival.request_id).unwrap_or_default(),
                trace_id: arrival.traceparent.as_ref().map_or("", headers::trace_id),
                user_agent: text(&arrival.user_agent).map(clip),
                user: log.user(outcome.user.as_deref(), &mut hex),
            });
        });
        Response::from_parts(parts, boxed(observed))
    }
}

/// The most of a client's text a line holds (host, path, user agent): a line stays a few KiB
/// however large the head the server took, so what the log may hold stays bounded.
const CLIP: usize = 2048;

fn clip(text: &str) -> &str {
    if text.len() <= CLIP {
        return text;
    }
    let mut end = CLIP;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

fn text(value: &Option<HeaderValue>) -> Option<&str> {
    value.as_ref().and_then(|v| v.to_str().ok())
}

/// `HTTP/1.1`, `HTTP/2`, ... for the access log.
pub fn version_name(version: Version) -> &'static str {
    match version {
        Version::HTTP_09 => "HTTP/0.9",
        Version::HTTP_10 => "HTTP/1.0",
        Version::HTTP_11 => "HTTP/1.1",
        Version::HTTP_2 => "HTTP/2",
        Version::HTTP_3 => "HTTP/3",
        _ => "HTTP",
    }
}

#[cfg(test)]
mod tests;
