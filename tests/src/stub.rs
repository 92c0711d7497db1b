//! A stub upstream for in-process tests: an HTTP/1.1 server on `127.0.0.1:0`, on the test's
//! own runtime, that records every request it receives (method, target, headers, body) and
//! answers as it is told — 200 naming itself, another status, a connection closed unanswered,
//! or an answer after a delay. With it: the YAML that makes stubs a Service's endpoints, and
//! the [`Reply`] a test reads of the proxy's response.
//!
//! The ingress's and the sidecar's in-process tests both use it, so both roles' pipelines are
//! checked against the same backend.

use std::{
    collections::HashSet,
    net::SocketAddr,
    sync::{Arc, Mutex, PoisonError},
    time::Duration,
};

use bytes::Bytes;
use http::{HeaderMap, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::{body::Incoming, server::conn::http1, service::service_fn};
use hyper_util::rt::TokioIo;
use tokio::{net::TcpListener, task::JoinHandle};

/// How a stub answers every request.
#[derive(Clone, Copy, Debug)]
pub enum Answer {
    /// 200, its name as the body and in `x-stub`.
    Ok,
    /// This status (with `x-stub`).
    Status(u16),
    /// The connection closed with no response.
    Reset,
    /// 200 after this long, on the tokio clock (a paused clock gets there at once).
    After(Duration),
}

/// One request as the stub received it.
#[derive(Clone, Debug)]
pub struct Seen {
    /// The method.
    pub method: Method,
    /// The request target: path and query.
    pub target: String,
    /// Every header field.
    pub headers: HeaderMap,
    /// The whole body.
    pub body: Bytes,
}

impl Seen {
    /// The first value of header `name`, if it is text.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// Every value of header `name`, in order.
    pub fn all(&self, name: &str) -> Vec<&str> {
        let values = self.headers.get_all(name).iter();
        values.filter_map(|v| v.to_str().ok()).collect()
    }
}

/// A running stub; it stops accepting when dropped.
pub struct Stub {
    /// Where it listens.
    pub addr: SocketAddr,
    state: Arc<State>,
    accept: JoinHandle<()>,
}

struct State {
    name: String,
    answer: Answer,
    seen: Mutex<Vec<Seen>>,
}

impl Stub {
    /// A stub called `name` that answers 200.
    pub async fn start(name: &str) -> Self {
        Self::answering(name, Answer::Ok).await
    }

    /// A stub called `name` that answers every request with `answer`.
    pub async fn answering(name: &str, answer: Answer) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind a stub");
        let addr = listener.local_addr().expect("the stub's address");
        let state = Arc::new(State {
            name: name.to_string(),
            answer,
            seen: Mutex::default(),
        });
        let accept = tokio::spawn(accept(listener, state.clone()));
        Self {
            addr,
            state,
            accept,
        }
    }

    /// An address where nothing listens (connecting to it is refused).
    pub async fn refusing() -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind a port");
        listener.local_addr().expect("its address")
    }

    /// Every request received so far, in order.
    pub fn seen(&self) -> Vec<Seen> {
        lock(&self.state.seen).clone()
    }

    /// The only request received so far.
    pub fn one(&self) -> Seen {
        let seen = self.seen();
        assert_eq!(
            seen.len(),
            1,
            "{} should have seen one request",
            self.state.name
        );
        seen.into_iter().next().expect("one request")
    }

    /// How many requests it received.
    pub fn count(&self) -> usize {
        lock(&self.state.seen).len()
    }

    /// Waits until it has received `n` requests, for what is sent without the client waiting
    /// on it (a mirror); fails after five seconds.
    pub async fn wait_for(&self, n: usize) {
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while self.count() < n {
            assert!(
                std::time::Instant::now() < deadline,
                "{} saw {} requests, not {n}",
                self.state.name,
                self.count()
            );
            tokio::task::yield_now().await;
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }
}

impl Drop for Stub {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

/// A Service `name` in `default` (port 80, named `http`) with one EndpointSlice per address,
/// each a ready endpoint on its own port (stubs each listen on a port of their own).
pub fn service(name: &str, endpoints: &[SocketAddr]) -> String {
    let mut yaml = format!(
        "apiVersion: v1\nkind: Service\nmetadata: {{name: {name}, namespace: default}}\nspec:\n  ports: [{{name: http, port: 80}}]\n"
    );
    for (i, addr) in endpoints.iter().enumerate() {
        yaml += &format!(
            "---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {{name: {name}-{i}, namespace: default, labels: {{kubernetes.io/service-name: {name}}}}}\naddressType: IPv4\nports: [{{name: http, port: {}}}]\nendpoints: [{{addresses: [\"{}\"]}}]\n",
            addr.port(),
            addr.ip()
        );
    }
    yaml
}

/// The response as the client reads it.
#[derive(Debug)]
pub struct Reply {
    /// Its status.
    pub status: StatusCode,
    /// Its header fields.
    pub headers: HeaderMap,
    /// Its body, as text.
    pub body: String,
}

impl Reply {
    /// Reads the whole of `response`.
    pub async fn read(response: Response<weir_http::body::Body>) -> Self {
        let (parts, body) = response.into_parts();
        let body = body.collect().await.expect("the response body").to_bytes();
        Reply {
            status: parts.status,
            headers: parts.headers,
            body: String::from_utf8_lossy(&body).into_owned(),
        }
    }

    /// The first value of header `name`, if it is text.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// The `x-weir-error` reason, if the gateway answered with an error.
    pub fn error(&self) -> Option<&str> {
        self.header(weir_http::error::ERROR_HEADER.as_str())
    }

    /// The status and the `x-weir-error` reason together, as a failure is checked.
    pub fn failure(&self) -> (u16, Option<&str>) {
        (self.status.as_u16(), self.error())
    }

    /// The stub that answered (its `x-stub`).
    pub fn stub(&self) -> Option<&str> {
        self.header("x-stub")
    }
}

/// Three stubs `a`, `b` and `c`, the endpoints of one Service.
pub async fn three() -> [Stub; 3] {
    [
        Stub::start("a").await,
        Stub::start("b").await,
        Stub::start("c").await,
    ]
}

/// Checks what consistent hashing promises: `send(key)` four times for each of twenty keys,
/// each key answered by one stub every time, and not every key by the same one.
pub async fn assert_keys_stick<F, R>(send: F)
where
    F: Fn(String) -> R,
    R: std::future::Future<Output = Reply>,
{
    let mut used = HashSet::new();
    for user in 0..20 {
        let mut answered = HashSet::new();
        for _ in 0..4 {
            answered.insert(send(format!("u{user}")).await.stub().map(str::to_string));
        }
        assert_eq!(answered.len(), 1, "key u{user} went to {answered:?}");
        used.extend(answered);
    }
    assert!(used.len() > 1, "twenty keys all on one endpoint: {used:?}");
}

/// A test's lock: a panic elsewhere should not hide what was recorded.
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

async fn accept(listener: TcpListener, state: Arc<State>) {
    while let Ok((stream, _)) = listener.accept().await {
        let state = state.clone();
        let service = service_fn(move |req| answer(state.clone(), req));
        tokio::spawn(async move {
            // A `Reset` answer ends the connection with an error: nothing to report.
            let _ = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

/// Why a `Reset` stub closed the connection.
#[derive(Debug)]
struct Closed;

impl std::fmt::Display for Closed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("closed without answering")
    }
}

impl std::error::Error for Closed {}

async fn answer(
    state: Arc<State>,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Closed> {
    let (parts, body) = req.into_parts();
    let body = body
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let target = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    lock(&state.seen).push(Seen {
        method: parts.method.clone(),
        target: target.to_string(),
        headers: parts.headers,
        body,
    });
    let status = match state.answer {
        Answer::Ok => StatusCode::OK,
        Answer::Status(code) => StatusCode::from_u16(code).expect("a status code"),
        Answer::Reset => return Err(Closed),
        Answer::After(delay) => {
            tokio::time::sleep(delay).await;
            StatusCode::OK
        }
    };
    let response = Response::builder()
        .status(status)
        .header("x-stub", &state.name)
        .body(Full::new(Bytes::from(state.name.clone())))
        .expect("a valid response");
    Ok(response)
}
