//! Weir's HTTP/1.1 backend client against a scripted backend on a real socket: what comes
//! back is the backend's response however it frames it, connections are reused only when that
//! is safe, and every failure is an error that says what happened.

use std::{
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc, Mutex,
    },
    time::Duration,
};

use bytes::Bytes;
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt, StreamBody};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
};
use weir_api::model::Protocol;
use weir_http::{
    body::{self, Body},
    error::ProxyError,
    metrics::HttpMetrics,
    upstream::{classify, Upstream, UpstreamSettings},
};

/// What the backend does with the `n`th request (counted over all connections).
#[derive(Clone)]
enum Answer {
    /// Write these bytes (in pieces split at `|`, 20 ms apart), keep the connection.
    Send(&'static str),
    /// Write these bytes, then close.
    SendAndClose(&'static str),
    /// Close without answering.
    Close,
}

struct Backend {
    addr: std::net::SocketAddr,
    accepted: Arc<AtomicUsize>,
    requests: Arc<Mutex<Vec<String>>>,
}

/// A backend answering request `n` with `script(n)`.
async fn backend(script: impl Fn(usize) -> Answer + Send + Sync + 'static) -> Backend {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let accepted = Arc::new(AtomicUsize::new(0));
    let requests = Arc::new(Mutex::new(Vec::new()));
    let script = Arc::new(script);
    let (a, r) = (accepted.clone(), requests.clone());
    tokio::spawn(async move {
        loop {
            let (mut socket, _) = listener.accept().await.unwrap();
            a.fetch_add(1, Ordering::SeqCst);
            let (script, requests) = (script.clone(), r.clone());
            tokio::spawn(async move {
                while let Some(request) = read_request(&mut socket).await {
                    let n = {
                        let mut all = requests.lock().unwrap();
                        all.push(request);
                        all.len() - 1
                    };
                    match script(n) {
                        Answer::Send(bytes) => {
                            for piece in bytes.split('|') {
                                socket.write_all(piece.as_bytes()).await.unwrap();
                                tokio::time::sleep(Duration::from_millis(20)).await;
                            }
                        }
                        Answer::SendAndClose(bytes) => {
                            socket.write_all(bytes.as_bytes()).await.unwrap();
                            return;
                        }
                        Answer::Close => return,
                    }
                }
            });
        }
    });
    Backend {
        addr,
        accepted,
        requests,
    }
}

/// Reads one request: the head, then a body by `content-length` or up to the last chunk.
async fn read_request(socket: &mut TcpStream) -> Option<String> {
    let mut buf = Vec::new();
    let mut byte = [0u8; 1];
    loop {
        if socket.read(&mut byte).await.ok()? == 0 {
            return None;
        }
        buf.push(byte[0]);
        let text = String::from_utf8_lossy(&buf).to_lowercase();
        let Some(end) = text.find("\r\n\r\n") else {
            continue;
        };
        let head = &text[..end];
        let body = &text[end + 4..];
        let done = if let Some(cl) = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length: "))
        {
            body.len() >= cl.trim().parse::<usize>().unwrap()
        } else if head.contains("transfer-encoding: chunked") {
            body.ends_with("0\r\n\r\n")
        } else {
            true
        };
        if done {
            return Some(String::from_utf8_lossy(&buf).into_owned());
        }
    }
}

fn upstream(metrics: &HttpMetrics, idle_timeout: Duration) -> Upstream {
    let settings = UpstreamSettings {
        connect_timeout: Duration::from_secs(1),
        idle_timeout,
    };
    Upstream::new(&settings, metrics)
}

fn request(method: Method, b: &Backend, path: &str, body: Body) -> Request<Body> {
    let mut request = Request::new(body);
    *request.method_mut() = method;
    *request.uri_mut() = format!("http://{}{path}", b.addr).parse().unwrap();
    request
}

/// Sends a request and reads the whole response: status, body, trailers.
async fn exchange(
    up: &Upstream,
    request: Request<Body>,
) -> Result<(StatusCode, Bytes, Option<http::HeaderMap>), ProxyError> {
    let response = up
        .send(Protocol::Http1, request)
        .await
        .map_err(|e| classify(&e))?;
    let status = response.status();
    let collected = response
        .into_body()
        .collect()
        .await
        .map_err(|_| ProxyError::BackendReset)?;
    let trailers = collected.trailers().cloned();
    Ok((status, collected.to_bytes(), trailers))
}

async fn get(up: &Upstream, b: &Backend, path: &str) -> Result<(StatusCode, Bytes), ProxyError> {
    let request = request(Method::GET, b, path, body::empty());
    exchange(up, request).await.map(|(s, body, _)| (s, body))
}

#[tokio::test]
async fn one_connection_carries_every_request_however_the_body_is_framed() {
    let b = backend(|n| {
        if n % 2 == 0 {
            Answer::Send("HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nhello")
        } else {
            Answer::Send(
                "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n3\r\nab|c\r\n2\r\nde\r\n0\r\n\r\n",
            )
        }
    })
    .await;
    let metrics = HttpMetrics::register(&prometheus::Registry::new());
    let up = upstream(&metrics, Duration::from_secs(60));
    for n in 0..10 {
        let (status, body) = get(&up, &b, "/x").await.unwrap();
        assert_eq!(status, StatusCode::OK);
        let want = if n % 2 == 0 { "hello" } else { "abcde" };
        assert_eq!(body, want, "request {n}");
    }
    assert_eq!(
        b.accepted.load(Ordering::SeqCst),
        1,
        "one connection for all"
    );
    assert_eq!(metrics.upstream_connections.get(), 1);
    let first = b.requests.lock().unwrap()[0].clone();
    assert!(
        first.starts_with(&format!("GET /x HTTP/1.1\r\nhost: {}\r\n", b.addr)),
        "{first}"
    );
}

#[tokio::test]
async fn responses_without_a_body_or_after_interim_ones_are_read_right() {
    let b = backend(|n| match n {
        // HEAD: a length, but no body follows.
        0 => Answer::Send("HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\n"),
        1 => Answer::Send("HTTP/1.1 204 No Content\r\n\r\n"),
        // Interim responses come before the final one and are not passed on.
        2 => Answer::Send(
            "HTTP/1.1 100 Continue\r\n\r\n|HTTP/1.1 103 Early Hints\r\nlink: </a>\r\n\r\n|\
             HTTP/1.1 201 Created\r\ncontent-length: 2\r\n\r\nok",
        ),
        // No length: the body runs until the backend closes.
        _ => Answer::SendAndClose("HTTP/1.1 200 OK\r\n\r\nuntil the end"),
    })
    .await;
    let metrics = HttpMetrics::register(&prometheus::Registry::new());
    let up = upstream(&metrics, Duration::from_secs(60));
    let head = request(Method::HEAD, &b, "/", body::empty());
    assert_eq!(exchange(&up, head).await.unwrap().1, "", "HEAD has no body");
    assert_eq!(
        get(&up, &b, "/").await.unwrap(),
        (StatusCode::NO_CONTENT, Bytes::new())
    );
    assert_eq!(
        get(&up, &b, "/").await.unwrap(),
        (StatusCode::CREATED, Bytes::from("ok"))
    );
    assert_eq!(b.accepted.load(Ordering::SeqCst), 1);
    assert_eq!(
        get(&up, &b, "/").await.unwrap(),
        (StatusCode::OK, Bytes::from("until the end"))
    );
    // That connection ended with its body and is not pooled.
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(metrics.upstream_connections.get(), 0);
}

#[tokio::test]
async fn chunked_trailers_reach_the_caller() {
    let b = backend(|_| {
        Answer::Send(
            "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n4\r\ndata\r\n0\r\n|grpc-status: 0\r\n\r\n",
        )
    })
    .await;
    let up = upstream(
        &HttpMetrics::register(&prometheus::Registry::new()),
        Duration::from_secs(60),
    );
    let request = request(Method::GET, &b, "/", body::empty());
    let (_, data, trailers) = exchange(&up, request).await.unwrap();
    assert_eq!(data, "data");
    assert_eq!(trailers.unwrap()["grpc-status"], "0");
}

#[tokio::test]
async fn request_bodies_are_framed_by_length_or_chunked() {
    let b = backend(|_| Answer::Send("HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n")).await;
    let up = upstream(
        &HttpMetrics::register(&prometheus::Registry::new()),
        Duration::from_secs(60),
    );
    let full = request(Method::POST, &b, "/full", body::full("twelve bytes"));
    exchange(&up, full).await.unwrap();
    // A body of unknown length, arriving in pieces.
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<http_body::Frame<Bytes>, body::BoxError>>(4);
    let stream = tokio_stream::wrappers::ReceiverStream::new(rx);
    let streamed = request(
        Method::POST,
        &b,
        "/stream",
        body::boxed(StreamBody::new(stream)),
    );
    tokio::spawn(async move {
        for piece in ["one ", "two ", "three"] {
            tx.send(Ok(http_body::Frame::data(Bytes::from(piece))))
                .await
                .unwrap();
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    });
    exchange(&up, streamed).await.unwrap();
    let empty = request(Method::POST, &b, "/empty", body::empty());
    exchange(&up, empty).await.unwrap();

    let seen = b.requests.lock().unwrap().clone();
    assert!(
        seen[0].ends_with("content-length: 12\r\n\r\ntwelve bytes"),
        "{}",
        seen[0]
    );
    assert!(
        seen[1].ends_with(
            "transfer-encoding: chunked\r\n\r\n4\r\none \r\n4\r\ntwo \r\n5\r\nthree\r\n0\r\n\r\n"
        ),
        "{}",
        seen[1]
    );
    assert!(
        seen[2].ends_with("content-length: 0\r\n\r\n"),
        "{}",
        seen[2]
    );
}

#[tokio::test]
async fn a_pooled_connection_the_backend_closed_is_never_used() {
    // Each connection answers once (and says it will stay open), then the backend closes it.
    let b =
        backend(|_| Answer::SendAndClose("HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")).await;
    let metrics = HttpMetrics::register(&prometheus::Registry::new());
    let up = upstream(&metrics, Duration::from_secs(60));
    // POSTs with a body, which are never sent twice: each must get a fresh connection.
    for _ in 0..3 {
        let post = request(Method::POST, &b, "/", body::full("payload"));
        assert_eq!(exchange(&up, post).await.unwrap().1, "ok");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(b.accepted.load(Ordering::SeqCst), 3);
}

#[tokio::test]
async fn the_keep_alive_race_resends_requests_without_a_body_only() {
    // The backend closes every reused connection without answering, as a backend does when
    // its idle timeout fires just as the request arrives.
    let b = backend(|n| {
        if n % 2 == 0 {
            Answer::Send("HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
        } else {
            Answer::Close
        }
    })
    .await;
    let up = upstream(
        &HttpMetrics::register(&prometheus::Registry::new()),
        Duration::from_secs(60),
    );
    assert_eq!(get(&up, &b, "/1").await.unwrap().1, "ok");
    // Request 1 goes on the pooled connection, which closes: it is sent again, as request 2,
    // on a new connection.
    assert_eq!(get(&up, &b, "/2").await.unwrap().1, "ok");
    assert_eq!(b.accepted.load(Ordering::SeqCst), 2);
    // A POST with a body is not sent twice: the caller hears of the reset.
    let post = request(Method::POST, &b, "/3", body::full("once"));
    assert_eq!(
        exchange(&up, post).await.unwrap_err(),
        ProxyError::BackendReset
    );
    assert_eq!(b.requests.lock().unwrap().len(), 4);
}

#[tokio::test]
async fn broken_responses_are_errors() {
    let b = backend(|n| match n {
        0 => Answer::SendAndClose("HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\nonly ten b"),
        1 => Answer::Send("HTTP/1.1 200 OK\r\ncontent-length: 1, 2\r\n\r\n"),
        2 => Answer::Send("HTTP/1.1 2x0 OK\r\n\r\n"),
        3 => Answer::SendAndClose("HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\nzz\r\n"),
        // A gzip-coded body would reach the client still coded, with nothing naming the coding.
        4 => Answer::Send(
            "HTTP/1.1 200 OK\r\ntransfer-encoding: gzip, chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
        ),
        _ => Answer::SendAndClose("HTTP/1.1 200 OK\r\ntransfer-encoding: gzip\r\n\r\nabc"),
    })
    .await;
    let metrics = HttpMetrics::register(&prometheus::Registry::new());
    let up = upstream(&metrics, Duration::from_secs(60));
    for n in 0..6 {
        assert_eq!(
            get(&up, &b, "/").await.unwrap_err(),
            ProxyError::BackendReset,
            "response {n}"
        );
    }
    // None of those connections was kept.
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(metrics.upstream_connections.get(), 0);
}

#[tokio::test]
async fn refused_connections_are_connect_failures() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    let up = upstream(
        &HttpMetrics::register(&prometheus::Registry::new()),
        Duration::from_secs(60),
    );
    let mut request = Request::new(body::empty());
    *request.uri_mut() = format!("http://{addr}/").parse().unwrap();
    let error = up.send(Protocol::Http1, request).await.unwrap_err();
    assert_eq!(classify(&error), ProxyError::ConnectFailed);
}

#[tokio::test]
async fn idle_connections_are_kept_until_the_idle_timeout_then_closed() {
    let b = backend(|_| Answer::Send("HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")).await;
    let metrics = HttpMetrics::register(&prometheus::Registry::new());
    // Swept every 250 ms: two sweeps pass while it is idle, short of the timeout.
    let up = upstream(&metrics, Duration::from_secs(1));
    get(&up, &b, "/").await.unwrap();
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(metrics.upstream_connections.get(), 1, "kept while idle");
    get(&up, &b, "/").await.unwrap();
    assert_eq!(
        b.accepted.load(Ordering::SeqCst),
        1,
        "the pooled connection was reused"
    );
    tokio::time::sleep(Duration::from_millis(1800)).await;
    assert_eq!(
        metrics.upstream_connections.get(),
        0,
        "swept once idle too long"
    );
    get(&up, &b, "/").await.unwrap();
    assert_eq!(b.accepted.load(Ordering::SeqCst), 2);
}
