//! The edge against clients that break HTTP on purpose: malformed chunked bodies and doubled
//! `Host` fields sent as raw bytes, request bodies that trickle, HTTP/2 connections that idle.
//! Each is the client's error, answered as such and never held against the backend, and none
//! can hold a connection (or the backend connection behind it) open indefinitely.

use std::{
    convert::Infallible,
    net::SocketAddr,
    time::{Duration, Instant},
};

use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Empty, StreamBody};
use hyper::body::Frame;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};
use weir_e2e::{routed, traffic_policy, ConfigDir, Echo, Weir};

const HOST: &str = "app.example.com";

/// The gateway in front of one echo backend whose circuit breaker ejects it after a single
/// failure, so that any failure counted against it would show.
fn setup(flags: &[&str]) -> (ConfigDir, Echo, Weir) {
    let app = Echo::start("app");
    let dir = routed(&app, "app", HOST)
        .with(
            "policy.yaml",
            &traffic_policy(
                "app",
                "app",
                "  circuitBreaker: {consecutiveFailures: 1, baseEjectionTime: 60s, maxEjectionPercent: 100}\n",
            ),
        );
    let weir = Weir::start_with(&dir, flags);
    (dir, app, weir)
}

/// Sends `bytes` on a new connection and reads what comes back until the gateway closes the
/// connection (it must, within `within`: a connection left hanging fails the test).
async fn exchange(addr: SocketAddr, bytes: &[u8], within: Duration) -> String {
    let mut conn = TcpStream::connect(addr).await.unwrap();
    conn.write_all(bytes).await.unwrap();
    let mut got = Vec::new();
    tokio::time::timeout(within, conn.read_to_end(&mut got))
        .await
        .unwrap_or_else(|_| {
            panic!(
                "no answer and no close within {within:?} for {:?}; got {:?}",
                String::from_utf8_lossy(bytes),
                String::from_utf8_lossy(&got)
            )
        })
        .unwrap();
    String::from_utf8_lossy(&got).to_lowercase()
}

fn chunked_post(body: &str) -> Vec<u8> {
    format!("POST /upload HTTP/1.1\r\nhost: {HOST}\r\ntransfer-encoding: chunked\r\n\r\n{body}")
        .into_bytes()
}

#[tokio::test]
async fn malformed_chunked_bodies_are_the_clients_400_and_never_the_backends_fault() {
    let (_dir, app, weir) = setup(&[]);
    let bodies = [
        ("a size that is not hex", "zz\r\nhello\r\n0\r\n\r\n"),
        (
            "an 18-digit size",
            "123456789012345678\r\nhello\r\n0\r\n\r\n",
        ),
        (
            "more data than the size",
            "5\r\nhello, and more\r\n0\r\n\r\n",
        ),
        ("a bare LF after the size", "5\nhello\r\n0\r\n\r\n"),
        // Read leniently, this last chunk's line ends at the LF and its trailer section never
        // does: the connection would hang until the client gave up.
        ("a last chunk ending in a bare LF", "5\r\nhello\r\n0\n\r\n"),
    ];
    for (what, body) in bodies {
        let answer = exchange(weir.addr, &chunked_post(body), Duration::from_secs(10)).await;
        assert!(answer.starts_with("http/1.1 400"), "{what}: {answer}");
        assert!(
            answer.contains("x-weir-error: bad-request"),
            "{what}: {answer}"
        );
    }

    // Nothing was held against the backend: its breaker (one failure ejects) is still closed.
    let reply = weir.get(HOST, "/").await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    let metrics = String::from_utf8_lossy(&weir.admin_get("/metrics").await.body).into_owned();
    assert!(
        metrics.contains("weir_proxy_errors_total{reason=\"bad-request\",side=\"downstream\"} 5"),
        "{metrics}"
    );
    assert!(!metrics.contains("backend-reset"), "{metrics}");
    // Lines reach the log within a writer's sweep.
    let logged = weir_e2e::eventually(Duration::from_secs(5), "five lines for /upload", || async {
        let lines: Vec<_> = weir
            .access_log()
            .into_iter()
            .filter(|e| e["path"] == "/upload")
            .collect();
        (lines.len() >= 5).then_some(lines)
    })
    .await;
    assert_eq!(logged.len(), 5);
    assert!(
        logged
            .iter()
            .all(|e| e["status"] == 400 && e["error"] == "bad-request"),
        "{logged:?}"
    );
    // A well-formed chunked body still goes through.
    let answer = exchange(
        weir.addr,
        format!(
            "POST / HTTP/1.1\r\nhost: {HOST}\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\n5\r\nhello\r\n0\r\n\r\n"
        )
        .as_bytes(),
        Duration::from_secs(10),
    )
    .await;
    assert!(answer.starts_with("http/1.1 200"), "{answer}");
    assert!(answer.contains("\"body_bytes\":5"), "{answer}");
    drop(app);
}

#[tokio::test]
async fn a_request_with_two_host_fields_is_refused_before_any_routing() {
    let (_dir, app, weir) = setup(&[]);
    for second in ["Host: other.example.com", "host: app.example.com", "HOST: "] {
        let request = format!("GET / HTTP/1.1\r\nHost: {HOST}\r\n{second}\r\n\r\n");
        let answer = exchange(weir.addr, request.as_bytes(), Duration::from_secs(10)).await;
        assert!(answer.starts_with("http/1.1 400"), "{second}: {answer}");
        assert!(answer.contains("connection: close"), "{second}: {answer}");
    }
    assert_eq!(app.served().await, 0, "no request reached the backend");
    // One Host is fine.
    let request = format!("GET / HTTP/1.1\r\nHost: {HOST}\r\nconnection: close\r\n\r\n");
    let answer = exchange(weir.addr, request.as_bytes(), Duration::from_secs(10)).await;
    assert!(answer.starts_with("http/1.1 200"), "{answer}");
}

#[tokio::test]
async fn a_body_that_stops_coming_gets_408_and_frees_the_backend_connection() {
    let (_dir, _app, weir) = setup(&["--client-body-timeout", "1s"]);
    let upstream = "weir_upstream_connections";

    // Ten bytes of a hundred, then nothing: the backend connection is open meanwhile.
    let started = Instant::now();
    let mut conn = TcpStream::connect(weir.addr).await.unwrap();
    let head = format!("POST /upload HTTP/1.1\r\nhost: {HOST}\r\ncontent-length: 100\r\n\r\n");
    conn.write_all(head.as_bytes()).await.unwrap();
    conn.write_all(&[b'x'; 10]).await.unwrap();
    let mut got = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), conn.read_to_end(&mut got))
        .await
        .expect("the gateway answers and closes a stalled upload")
        .unwrap();
    let answer = String::from_utf8_lossy(&got).to_lowercase();
    assert!(answer.starts_with("http/1.1 408"), "{answer}");
    assert!(answer.contains("x-weir-error: client-timeout"), "{answer}");
    assert!(started.elapsed() >= Duration::from_secs(1));
    assert_eq!(
        weir.metric(upstream).await,
        Some(0.0),
        "the backend connection that carried the body is closed"
    );

    // A byte every 300 ms is slow, but never silent for the timeout: it goes through, though
    // it takes longer than the timeout in all.
    let mut conn = TcpStream::connect(weir.addr).await.unwrap();
    let head = format!(
        "POST /upload HTTP/1.1\r\nhost: {HOST}\r\ncontent-length: 6\r\nconnection: close\r\n\r\n"
    );
    conn.write_all(head.as_bytes()).await.unwrap();
    for byte in b"steady" {
        tokio::time::sleep(Duration::from_millis(300)).await;
        conn.write_all(&[*byte]).await.unwrap();
    }
    let mut got = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), conn.read_to_end(&mut got))
        .await
        .unwrap()
        .unwrap();
    let answer = String::from_utf8_lossy(&got).to_lowercase();
    assert!(answer.starts_with("http/1.1 200"), "{answer}");

    // The same over HTTP/2: a stream whose body stalls gets 408.
    let io = TokioIo::new(TcpStream::connect(weir.addr).await.unwrap());
    let (mut send, conn) = hyper::client::conn::http2::handshake(TokioExecutor::new(), io)
        .await
        .unwrap();
    tokio::spawn(conn);
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Frame<Bytes>, Infallible>>(1);
    tx.send(Ok(Frame::data(Bytes::from_static(b"first"))))
        .await
        .unwrap();
    let request = Request::post(format!("http://{HOST}/upload"))
        .body(StreamBody::new(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        ))
        .unwrap();
    let response = tokio::time::timeout(Duration::from_secs(10), send.send_request(request))
        .await
        .expect("an answer to a stalled HTTP/2 body")
        .unwrap();
    assert_eq!(response.status(), 408);
    assert_eq!(response.headers()["x-weir-error"], "client-timeout");
    drop(tx);

    let metrics = String::from_utf8_lossy(&weir.admin_get("/metrics").await.body).into_owned();
    assert!(
        metrics
            .contains("weir_proxy_errors_total{reason=\"client-timeout\",side=\"downstream\"} 2"),
        "{metrics}"
    );
    // Neither stall was held against the backend (one failure would have ejected it).
    assert_eq!(weir.get(HOST, "/").await.status, 200);
}

#[tokio::test]
async fn an_idle_http2_connection_is_sent_away_but_a_busy_one_is_not() {
    let (_dir, _app, weir) = setup(&["--http2-idle-timeout", "1s"]);
    let io = TokioIo::new(TcpStream::connect(weir.addr).await.unwrap());
    let (mut send, conn) = hyper::client::conn::http2::handshake(TokioExecutor::new(), io)
        .await
        .unwrap();
    let started = Instant::now();
    let connection = tokio::spawn(conn);

    // A stream open longer than the idle timeout keeps the connection.
    let request = Request::get(format!("http://{HOST}/sleep/2500"))
        .body(Empty::<Bytes>::new())
        .unwrap();
    let response = send.send_request(request).await.unwrap();
    assert_eq!(response.status(), 200);
    let body = response.into_body().collect().await.unwrap().to_bytes();
    assert!(!body.is_empty());
    assert!(started.elapsed() >= Duration::from_millis(2500));
    assert!(!connection.is_finished(), "closed while a stream was open");

    // Then nothing: the gateway sends GOAWAY and closes, and the client's connection ends.
    let idle_from = Instant::now();
    tokio::time::timeout(Duration::from_secs(10), connection)
        .await
        .expect("the idle connection is closed by the gateway")
        .unwrap()
        .unwrap();
    assert!(idle_from.elapsed() >= Duration::from_millis(900));
    assert!(send.ready().await.is_err(), "no new stream on it");
}
