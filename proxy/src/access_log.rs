//! The access log: one JSON line per request on stdout, written by a dedicated thread so a slow
//! terminal or pipe never stalls a request. When the writer falls behind, lines are dropped and
//! counted (`weir_access_log_dropped_total`) rather than blocking traffic.
//!
//! Only the fields below are logged. Headers are not, so `Authorization`, `Cookie` and API keys
//! never reach the log; nor does the query string, which often carries tokens.

use std::{
    io::Write,
    net::SocketAddr,
    sync::{
        mpsc::{sync_channel, Receiver, SyncSender, TrySendError},
        Arc,
    },
    time::{Duration, Instant},
};

use http::{header, request, HeaderValue, Method, Response, Version};
use serde::Serialize;

use crate::{headers, resilience::retry::Report};
use weir_http::{
    body::{boxed, Body, Observed},
    error::ERROR_HEADER,
};

/// One request, as logged.
#[derive(Debug, Serialize)]
pub struct Entry<'a> {
    /// RFC 3339 time the request arrived.
    pub time: String,
    /// Client address.
    pub client: SocketAddr,
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
    pub endpoint: Option<SocketAddr>,
    /// `x-weir-error` reason, when Weir produced the response.
    pub error: Option<&'a str>,
    /// Tries made to the backend.
    pub attempts: u32,
    /// Until the last response byte, in milliseconds.
    pub duration_ms: f64,
    /// Waiting on the backend for response headers, in milliseconds.
    pub upstream_ms: Option<f64>,
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
}

/// Where access-log lines go.
#[derive(Clone)]
pub struct AccessLog {
    tx: Option<SyncSender<String>>,
    dropped: prometheus::IntCounter,
}

impl AccessLog {
    /// Starts the writer thread on stdout. `enabled: false` gives a log that discards.
    pub fn stdout(enabled: bool, dropped: prometheus::IntCounter) -> std::io::Result<Self> {
        if !enabled {
            return Ok(Self { tx: None, dropped });
        }
        let (tx, rx) = sync_channel(16 * 1024);
        std::thread::Builder::new()
            .name("access-log".into())
            .spawn(move || write_lines(rx))?;
        Ok(Self {
            tx: Some(tx),
            dropped,
        })
    }

    /// Logs one request.
    pub fn log(&self, entry: &Entry<'_>) {
        let Some(tx) = &self.tx else { return };
        let Ok(line) = serde_json::to_string(entry) else {
            return;
        };
        match tx.try_send(line) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => self.dropped.inc(),
            Err(TrySendError::Disconnected(_)) => {}
        }
    }

    /// Waits until the lines logged so far have reached stdout: at shutdown, after the last
    /// request, so that the process does not exit with lines still gathering.
    pub fn settle(&self) {
        if self.enabled() {
            std::thread::sleep(GATHER * 2);
        }
    }

    /// True when lines are written somewhere.
    pub fn enabled(&self) -> bool {
        self.tx.is_some()
    }
}

/// What a log line says of the request, taken from its head as it arrives (only when the log
/// is on: nothing of it is copied otherwise).
pub struct Arrival {
    started: Instant,
    client: SocketAddr,
    protocol: &'static str,
    method: Method,
    host: String,
    /// The path, as received until the role normalises it.
    pub path: String,
    bytes_in: u64,
    request_id: Option<HeaderValue>,
    traceparent: Option<HeaderValue>,
    user_agent: Option<String>,
}

impl Arrival {
    /// The request's half of its line: `host` is the host it was routed by.
    pub fn of(parts: &request::Parts, client: SocketAddr, host: &str, started: Instant) -> Self {
        let text = |name| {
            parts
                .headers
                .get(name)
                .and_then(|v: &HeaderValue| v.to_str().ok())
        };
        Self {
            started,
            client,
            protocol: version_name(parts.version),
            method: parts.method.clone(),
            host: host.to_string(),
            path: parts.uri.path().to_string(),
            bytes_in: text(header::CONTENT_LENGTH)
                .and_then(|n| n.parse().ok())
                .unwrap_or(0),
            request_id: parts.headers.get(headers::REQUEST_ID).cloned(),
            traceparent: parts.headers.get(headers::TRACEPARENT).cloned(),
            user_agent: text(header::USER_AGENT).map(str::to_string),
        }
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
}

impl AccessLog {
    /// Logs the exchange once `response`'s body ends (or the client goes away).
    pub fn on_end(
        &self,
        arrival: Arrival,
        outcome: Outcome,
        response: Response<Body>,
    ) -> Response<Body> {
        let log = self.clone();
        let time = now_rfc3339();
        let (parts, body) = response.into_parts();
        let status = parts.status.as_u16();
        let error = outcome.error.map(str::to_string).or_else(|| {
            parts
                .headers
                .get(ERROR_HEADER)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
        });
        let observed = Observed::new(body, move |bytes_out| {
            let sent = outcome.sent;
            log.log(&Entry {
                time,
                client: arrival.client,
                protocol: arrival.protocol,
                method: arrival.method.as_str(),
                host: &arrival.host,
                path: &arrival.path,
                status,
                route: outcome.route.as_deref(),
                backend: outcome.backend.as_deref(),
                endpoint: sent.endpoint,
                error: error.as_deref(),
                attempts: sent.attempts,
                duration_ms: arrival.started.elapsed().as_secs_f64() * 1e3,
                upstream_ms: (sent.attempts > 0).then_some(sent.upstream_wait.as_secs_f64() * 1e3),
                bytes_in: arrival.bytes_in,
                bytes_out,
                request_id: arrival
                    .request_id
                    .as_ref()
                    .map_or("", |v| v.to_str().unwrap_or_default()),
                trace_id: arrival.traceparent.as_ref().map_or("", headers::trace_id),
                user_agent: arrival.user_agent.as_deref(),
            });
        });
        Response::from_parts(parts, boxed(observed))
    }
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

/// How long the writer lets lines gather while requests keep coming. Woken for every line, it
/// would cost each request a wake-up and a switch of threads on its core (the sidecar's CPU
/// per request doubled with the log on); asleep, it costs a sender nothing but the queue.
const GATHER: Duration = Duration::from_millis(5);

fn write_lines(rx: Receiver<String>) {
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::with_capacity(64 * 1024, stdout.lock());
    // Parked while no request comes; the first line after a quiet spell wakes it. From then
    // on it drains what gathered every GATHER, until a pass finds nothing.
    while let Ok(line) = rx.recv() {
        let _ = writeln!(out, "{line}");
        loop {
            std::thread::sleep(GATHER);
            let mut gathered = 0;
            while let Ok(line) = rx.try_recv() {
                let _ = writeln!(out, "{line}");
                gathered += 1;
            }
            let _ = out.flush();
            if gathered == 0 {
                break;
            }
        }
    }
}

/// Current time as RFC 3339 UTC with milliseconds (no date crate needed for this one format).
pub fn now_rfc3339() -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let secs = now.as_secs() as i64;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let (h, m, s) = (rem / 3600, (rem % 3600) / 60, rem % 60);
    // Civil-from-days (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{d:02}T{h:02}:{m:02}:{s:02}.{:03}Z",
        now.subsec_millis()
    )
}
