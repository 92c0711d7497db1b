//! weir-echo: a small backend for the quickstart and the end-to-end tests.
//!
//! Serves HTTP/1.1 and h2c on `--listen` (or, with `--tls-cert` and `--tls-key`, both over TLS
//! by ALPN) and answers:
//! - any path: 200 with a JSON echo of the request (`backend`, `method`, `path`, `query`,
//!   `headers`, `body_bytes`);
//! - `/status/NNN`: that status; `/sleep/MS`: answers after MS milliseconds;
//! - `/retry...?uuid=U&succeedAfter=N&responseCode=C&delayRetry=MS` (upstream's retry
//!   simulation): the first N requests for U fail (status C, else no answer), later ones pass;
//! - `?respond=NAME:VALUE` (repeatable): that field added to the answer;
//! - an `Upgrade` request: 101, then echoes every byte back (a WebSocket peer at byte level);
//! - `content-type: application/grpc`: echoes the body with `grpc-status: 0` trailers and
//!   `grpc-message` its name, the call's metadata as JSON in the `echo-headers` header;
//! - `/__requests`: how many other requests it has served (tests use it to see mirrors);
//! - `/healthz`: 200, or 503 in the `unhealthy` and `fail` modes (not counted as served);
//! - `PUT /__mode/MODE`: from now on every request is answered by MODE: `ok` (the above),
//!   `fail` (503), `reset` (the connection is closed without an answer), `hang` (no answer
//!   for an hour), `unhealthy` (only `/healthz` fails) or `flap` (`fail` and `ok` by turns,
//!   200 ms each). Tests make backends fail on command.
//! - `/call/REST` with `--call HOST --via ADDR`: a frontend calling its backend: it sends
//!   `GET /REST` with `Host: HOST` to ADDR (its sidecar's outbound port) and answers with the
//!   callee's status and JSON under `called` (and the caller's `x-weir-peer-identity` as
//!   `peer`).

use std::{
    convert::Infallible,
    net::SocketAddr,
    sync::atomic::{AtomicU64, AtomicU8, Ordering},
    time::Duration,
};

static SERVED: AtomicU64 = AtomicU64::new(0);
static MODE: AtomicU8 = AtomicU8::new(MODE_OK);
const MODES: [&str; 6] = ["ok", "fail", "reset", "hang", "unhealthy", "flap"];
const MODE_OK: u8 = 0;
const MODE_FAIL: u8 = 1;
const MODE_RESET: u8 = 2;
const MODE_HANG: u8 = 3;
const MODE_UNHEALTHY: u8 = 4;
const MODE_FLAP: u8 = 5;
/// In `flap` mode, the backend alternates between failing and working this often.
const FLAP_PERIOD_MS: u128 = 200;

use bytes::Bytes;
use clap::Parser;
use http::{HeaderMap, HeaderValue, Request, Response, StatusCode};
use http_body_util::{combinators::UnsyncBoxBody, BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper_util::{
    rt::{TokioExecutor, TokioIo},
    server::conn::auto,
};
use tokio::net::TcpListener;

#[derive(Parser)]
struct Args {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:18001")]
    listen: SocketAddr,
    /// Name reported in every answer, to tell backends apart.
    #[arg(long, default_value = "echo")]
    name: String,
    /// The `Host` that `/call/...` requests are sent with.
    #[arg(long, requires = "via")]
    call: Option<String>,
    /// Where `/call/...` requests are sent (the sidecar's outbound port).
    #[arg(long)]
    via: Option<SocketAddr>,
    /// Serve TLS (ALPN h2 and http/1.1) with this certificate chain (PEM), and `--tls-key`.
    #[arg(long, requires = "tls_key")]
    tls_cert: Option<std::path::PathBuf>,
    /// The key of `--tls-cert` (PEM).
    #[arg(long)]
    tls_key: Option<std::path::PathBuf>,
}

/// `--call` and `--via`.
type Calls = Option<(&'static str, SocketAddr)>;

type Body = UnsyncBoxBody<Bytes, Infallible>;

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let listener = TcpListener::bind(args.listen).await?;
    println!(
        "weir-echo {} listening on {}",
        args.name,
        listener.local_addr()?
    );
    let name: &'static str = Box::leak(args.name.into_boxed_str());
    let calls: Calls = args
        .call
        .zip(args.via)
        .map(|(host, via)| (&*Box::leak(host.into_boxed_str()), via));
    let tls = match (&args.tls_cert, &args.tls_key) {
        (Some(cert), Some(key)) => Some(tls_acceptor(cert, key)?),
        _ => None,
    };
    loop {
        let (stream, _) = listener.accept().await?;
        let tls = tls.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req| async move {
                match (calls, req.uri().path().strip_prefix("/call")) {
                    (Some((host, via)), Some(rest)) => {
                        let peer = req.headers().get("x-weir-peer-identity").cloned();
                        let peer = peer.map(|p| String::from_utf8_lossy(p.as_bytes()).into_owned());
                        Ok(call(name, host, via, rest, peer).await)
                    }
                    _ => answer(name, req).await,
                }
            });
            let builder = auto::Builder::new(TokioExecutor::new());
            let _ = match tls {
                Some(tls) => {
                    let Ok(stream) = tls.accept(stream).await else {
                        return;
                    };
                    builder
                        .serve_connection_with_upgrades(TokioIo::new(stream), service)
                        .await
                }
                None => {
                    builder
                        .serve_connection_with_upgrades(TokioIo::new(stream), service)
                        .await
                }
            };
        });
    }
}

/// The TLS side of `--tls-cert` and `--tls-key`: HTTP/2 or HTTP/1.1 by ALPN.
fn tls_acceptor(
    cert: &std::path::Path,
    key: &std::path::Path,
) -> anyhow::Result<tokio_rustls::TlsAcceptor> {
    use rustls::pki_types::{pem::PemObject, CertificateDer, PrivateKeyDer};
    let chain = CertificateDer::pem_file_iter(cert)?.collect::<Result<Vec<_>, _>>()?;
    let key = PrivateKeyDer::from_pem_file(key)?;
    let mut config = rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(chain, key)?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(tokio_rustls::TlsAcceptor::from(std::sync::Arc::new(config)))
}

async fn answer(
    name: &'static str,
    mut req: Request<Incoming>,
) -> Result<Response<Body>, std::io::Error> {
    let path = req.uri().path().to_string();
    if path == "/__requests" {
        return Ok(Response::new(full(Bytes::from(
            SERVED.load(Ordering::SeqCst).to_string(),
        ))));
    }
    if let Some(mode) = path.strip_prefix("/__mode/") {
        let Some(i) = MODES.iter().position(|m| *m == mode) else {
            return Ok(status(StatusCode::BAD_REQUEST));
        };
        MODE.store(i as u8, Ordering::SeqCst);
        return Ok(Response::new(full(Bytes::from(format!(
            "{name} mode {mode}\n"
        )))));
    }
    let mut mode = MODE.load(Ordering::SeqCst);
    if mode == MODE_FLAP {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_millis();
        mode = if (now / FLAP_PERIOD_MS).is_multiple_of(2) {
            MODE_FAIL
        } else {
            MODE_OK
        };
    }
    if path == "/healthz" {
        let failing = mode == MODE_UNHEALTHY || mode == MODE_FAIL;
        return Ok(status(if failing {
            StatusCode::SERVICE_UNAVAILABLE
        } else {
            StatusCode::OK
        }));
    }
    SERVED.fetch_add(1, Ordering::SeqCst);
    match mode {
        MODE_FAIL => return Ok(status(StatusCode::SERVICE_UNAVAILABLE)),
        MODE_RESET => return Err(std::io::Error::other("reset mode: closing without answer")),
        MODE_HANG => {
            tokio::time::sleep(Duration::from_secs(3600)).await;
            return Ok(status(StatusCode::GATEWAY_TIMEOUT));
        }
        _ => {}
    }
    if req.headers().contains_key(http::header::UPGRADE) {
        let upgrade = hyper::upgrade::on(&mut req);
        tokio::spawn(async move {
            if let Ok(upgraded) = upgrade.await {
                let (mut r, mut w) = tokio::io::split(TokioIo::new(upgraded));
                let _ = tokio::io::copy(&mut r, &mut w).await;
            }
        });
        let mut response = Response::new(full(Bytes::new()));
        *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
        response.headers_mut().insert(
            http::header::CONNECTION,
            HeaderValue::from_static("upgrade"),
        );
        let protocol = req
            .headers()
            .get(http::header::UPGRADE)
            .cloned()
            .unwrap_or(HeaderValue::from_static("websocket"));
        response
            .headers_mut()
            .insert(http::header::UPGRADE, protocol);
        return Ok(response);
    }
    if path.starts_with("/retry") {
        if let Some(failure) = retry_failure(req.uri().query().unwrap_or_default()).await {
            return failure;
        }
    }
    if let Some(ms) = path
        .strip_prefix("/sleep/")
        .and_then(|m| m.parse::<u64>().ok())
    {
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }
    let grpc = req
        .headers()
        .get(http::header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"));
    let (parts, body) = req.into_parts();
    let bytes = body
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    // A field sent more than once is shown once, its values joined by commas in order.
    let headers: serde_json::Map<String, serde_json::Value> = parts
        .headers
        .keys()
        .map(|k| {
            let values: Vec<String> = parts
                .headers
                .get_all(k)
                .iter()
                .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
                .collect();
            (k.as_str().to_string(), values.join(",").into())
        })
        .collect();
    if grpc {
        let mut trailers = HeaderMap::new();
        trailers.insert("grpc-status", HeaderValue::from_static("0"));
        trailers.insert("grpc-message", HeaderValue::from_static(name));
        let frames = vec![
            Ok::<_, Infallible>(Frame::data(bytes)),
            Ok(Frame::trailers(trailers)),
        ];
        let body = StreamBody::new(futures_stream(frames)).boxed_unsync();
        let mut response = Response::new(body);
        response.headers_mut().insert(
            http::header::CONTENT_TYPE,
            HeaderValue::from_static("application/grpc"),
        );
        // The call's metadata, as the JSON the HTTP echo gives (gRPC tests read it).
        if let Ok(echo) = HeaderValue::from_str(&serde_json::Value::from(headers).to_string()) {
            response.headers_mut().insert("echo-headers", echo);
        }
        return Ok(response);
    }
    let status = path
        .strip_prefix("/status/")
        .and_then(|s| s.parse::<u16>().ok())
        .and_then(|s| StatusCode::from_u16(s).ok())
        .unwrap_or(StatusCode::OK);
    let echo = serde_json::json!({
        "backend": name,
        "method": parts.method.as_str(),
        "version": format!("{:?}", parts.version),
        "path": path,
        "query": parts.uri.query(),
        "headers": headers,
        "body_bytes": bytes.len(),
    });
    let mut response = Response::new(full(Bytes::from(format!("{echo}\n"))));
    *response.status_mut() = status;
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
        .headers_mut()
        .insert("x-backend", HeaderValue::from_static(name));
    let asked = parts.uri.query().unwrap_or_default().split('&');
    for (field, value) in asked.filter_map(|p| p.strip_prefix("respond=")?.split_once(':')) {
        if let (Ok(field), Ok(value)) = (
            http::HeaderName::from_bytes(field.as_bytes()),
            HeaderValue::from_str(value),
        ) {
            response.headers_mut().append(field, value);
        }
    }
    Ok(response)
}

/// Upstream's retry simulation (`/retry...?uuid=U&succeedAfter=N[&responseCode=C]
/// [&delayRetry=MS]`): the first N requests with uuid U fail, after MS milliseconds, with
/// status C, or without an answer (the connection closed) when no C is given; later ones are
/// echoed as usual. `None`: this one succeeds.
async fn retry_failure(query: &str) -> Option<Result<Response<Body>, std::io::Error>> {
    static SEEN: std::sync::Mutex<Vec<(String, u32)>> = std::sync::Mutex::new(Vec::new());
    let param = |name: &str| {
        query
            .split('&')
            .find_map(|p| p.strip_prefix(name)?.strip_prefix('='))
    };
    let uuid = param("uuid")?.to_string();
    let succeed_after: u32 = param("succeedAfter")?.parse().ok()?;
    let attempt = {
        let mut seen = SEEN.lock().unwrap_or_else(|e| e.into_inner());
        let at = match seen.iter().position(|(u, _)| *u == uuid) {
            Some(at) => at,
            None => {
                seen.push((uuid, 0));
                seen.len() - 1
            }
        };
        seen[at].1 += 1;
        seen[at].1
    };
    if attempt > succeed_after {
        return None;
    }
    if let Some(ms) = param("delayRetry").and_then(|d| d.trim_end_matches("ms").parse().ok()) {
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }
    Some(
        match param("responseCode").and_then(|c| c.parse::<u16>().ok()) {
            Some(code) => Ok(status(
                StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
            )),
            None => Err(std::io::Error::other(
                "retry simulation: closing without answer",
            )),
        },
    )
}

/// Calls `host` through `via` and wraps its answer.
async fn call(
    name: &str,
    host: &str,
    via: SocketAddr,
    path: &str,
    peer: Option<String>,
) -> Response<Body> {
    let client = hyper_util::client::legacy::Client::builder(TokioExecutor::new())
        .build_http::<Full<Bytes>>();
    let request = Request::get(format!(
        "http://{via}{}",
        if path.is_empty() { "/" } else { path }
    ))
    .header(http::header::HOST, host)
    .body(Full::new(Bytes::new()));
    let (code, called) = match request {
        Ok(request) => match client.request(request).await {
            Ok(response) => {
                let code = response.status();
                let error = response.headers().get("x-weir-error").cloned();
                let body = response.into_body().collect().await.map(|b| b.to_bytes());
                let text = String::from_utf8_lossy(&body.unwrap_or_default()).into_owned();
                let value = serde_json::from_str(&text).unwrap_or(serde_json::Value::String(text));
                let error = error.map(|e| String::from_utf8_lossy(e.as_bytes()).into_owned());
                (
                    code.as_u16(),
                    serde_json::json!({"status": code.as_u16(), "error": error, "body": value}),
                )
            }
            Err(e) => (502, serde_json::json!({"error": e.to_string()})),
        },
        Err(e) => (400, serde_json::json!({"error": e.to_string()})),
    };
    let answer = serde_json::json!({"backend": name, "peer": peer, "called": called});
    let mut response = Response::new(full(Bytes::from(format!("{answer}\n"))));
    *response.status_mut() = StatusCode::from_u16(code).unwrap_or(StatusCode::BAD_GATEWAY);
    response
}

fn status(code: StatusCode) -> Response<Body> {
    let mut response = Response::new(full(Bytes::from(format!("{code}\n"))));
    *response.status_mut() = code;
    response
}

fn full(bytes: Bytes) -> Body {
    Full::new(bytes).boxed_unsync()
}

/// A stream over a vector of frames, without pulling in a stream crate.
fn futures_stream<T: Unpin>(items: Vec<T>) -> impl futures_core::Stream<Item = T> + Unpin {
    struct Iter<T>(std::vec::IntoIter<T>);
    impl<T: Unpin> futures_core::Stream for Iter<T> {
        type Item = T;
        fn poll_next(
            mut self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
        ) -> std::task::Poll<Option<T>> {
            std::task::Poll::Ready(self.0.next())
        }
    }
    Iter(items.into_iter())
}
