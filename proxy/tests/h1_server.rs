//! Weir's HTTP/1.1 server: idle keep-alive connections give their buffers back between
//! requests and are served again when the next request comes. What a client sees must not
//! change, whatever it sends (bodies split across packets, chunked bodies, pipelined requests,
//! upgrades).

use std::{convert::Infallible, net::SocketAddr, time::Duration};

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body::Frame;
use http_body_util::{BodyExt, StreamBody};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
    sync::watch,
    task::JoinHandle,
};
use weir_proxy::{
    body::{self, Body},
    metrics::Metrics,
    server::{self, Peer, ServerSettings},
    upgrade::OnUpgrade,
};

/// Answers `METHOD PATH BODY-LENGTH`; a request with `upgrade: echo` is switched to a
/// protocol that echoes every byte back.
async fn handler(_: Peer, mut req: Request<Body>) -> Response<Body> {
    if req.headers().get("upgrade").is_some_and(|v| v == "echo") {
        let upgrading = req.extensions_mut().remove::<OnUpgrade>().unwrap();
        tokio::spawn(async move {
            if let Some(upgraded) = upgrading.upgraded().await {
                let mut io = upgraded.io;
                io.write_all(&upgraded.read_ahead).await.unwrap();
                let mut buf = [0u8; 64];
                while let Ok(n) = io.read(&mut buf).await {
                    if n == 0 || io.write_all(&buf[..n]).await.is_err() {
                        break;
                    }
                }
            }
        });
        return Response::builder()
            .status(StatusCode::SWITCHING_PROTOCOLS)
            .header("connection", "upgrade")
            .header("upgrade", "echo")
            .body(body::empty())
            .unwrap();
    }
    match req.uri().path() {
        // Answers without reading the body.
        "/ignore" => return Response::new(body::full("ignored")),
        // A body of unknown length, in pieces, with a trailer.
        "/stream" => {
            let frames = ["one ", "two ", "three"]
                .map(|piece| Ok::<_, Infallible>(Frame::data(Bytes::from(piece))))
                .into_iter()
                .chain([Ok(Frame::trailers(
                    [("x-done".parse().unwrap(), "yes".parse().unwrap())]
                        .into_iter()
                        .collect(),
                ))]);
            return Response::new(body::boxed(StreamBody::new(futures_util::stream::iter(
                frames,
            ))));
        }
        _ => {}
    }
    let line = format!("{} {}", req.method(), req.uri().path());
    let len = req.into_body().collect().await.unwrap().to_bytes().len();
    Response::new(body::full(format!("{line} {len}")))
}

struct Server {
    addr: SocketAddr,
    metrics: Metrics,
    stop: watch::Sender<bool>,
    serving: JoinHandle<()>,
}

async fn start(header_read_timeout: Duration) -> Server {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let metrics = Metrics::new();
    let (stop, shutdown) = watch::channel(false);
    let settings = ServerSettings {
        header_read_timeout,
        drain_timeout: Duration::from_secs(5),
        ..ServerSettings::default()
    };
    let serving = tokio::spawn(server::serve(
        listener,
        handler,
        settings,
        metrics.clone(),
        shutdown,
    ));
    Server {
        addr,
        metrics,
        stop,
        serving,
    }
}

impl Server {
    /// Waits until `n` connections are parked idle.
    async fn idle(&self, n: i64) {
        for _ in 0..200 {
            if self.metrics.downstream_idle.get() == n {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!(
            "expected {n} idle connections, have {}",
            self.metrics.downstream_idle.get()
        );
    }
}

/// A raw HTTP/1.1 client, so the test decides how the bytes go out.
struct Client {
    stream: TcpStream,
    buf: Vec<u8>,
}

impl Client {
    async fn connect(addr: SocketAddr) -> Self {
        let stream = TcpStream::connect(addr).await.unwrap();
        stream.set_nodelay(true).unwrap();
        Self {
            stream,
            buf: Vec::new(),
        }
    }

    async fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).await.unwrap();
    }

    /// A plain GET on this connection, answered.
    async fn get(&mut self) {
        self.send(GET).await;
        assert_eq!(self.response().await, (200, "GET /a 0".into()));
    }

    /// Sends `parts` as separate packets, 20 ms apart.
    async fn send_split(&mut self, parts: &[&[u8]]) {
        for (i, part) in parts.iter().enumerate() {
            if i > 0 {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            self.send(part).await;
        }
    }

    /// The next response's status and body (by `content-length`).
    async fn response(&mut self) -> (u16, String) {
        loop {
            let mut headers = [httparse::EMPTY_HEADER; 32];
            let mut parsed = httparse::Response::new(&mut headers);
            if let httparse::Status::Complete(head) = parsed.parse(&self.buf).unwrap() {
                let status = parsed.code.unwrap();
                let len: usize = parsed
                    .headers
                    .iter()
                    .find(|h| h.name.eq_ignore_ascii_case("content-length"))
                    .map(|h| std::str::from_utf8(h.value).unwrap().parse().unwrap())
                    .unwrap_or(0);
                if self.buf.len() >= head + len {
                    let body = String::from_utf8(self.buf[head..head + len].to_vec()).unwrap();
                    self.buf.drain(..head + len);
                    return (status, body);
                }
            }
            self.read_more().await;
        }
    }

    async fn read_more(&mut self) {
        let mut chunk = [0u8; 4096];
        let n = tokio::time::timeout(Duration::from_secs(5), self.stream.read(&mut chunk))
            .await
            .expect("the server answers within 5 s")
            .unwrap();
        assert!(n > 0, "the server closed the connection");
        self.buf.extend_from_slice(&chunk[..n]);
    }

    /// Everything the server sends until it closes the connection (within 5 s).
    async fn until_closed(&mut self) -> String {
        let mut rest = Vec::new();
        tokio::time::timeout(Duration::from_secs(5), self.stream.read_to_end(&mut rest))
            .await
            .expect("the server closes within 5 s")
            .unwrap();
        self.buf.extend_from_slice(&rest);
        String::from_utf8(std::mem::take(&mut self.buf)).unwrap()
    }

    /// Whether the server closed the connection (within 5 s).
    async fn closed(&mut self) -> bool {
        let mut chunk = [0u8; 64];
        matches!(
            tokio::time::timeout(Duration::from_secs(5), self.stream.read(&mut chunk)).await,
            Ok(Ok(0)) | Ok(Err(_))
        )
    }
}

const GET: &[u8] = b"GET /a HTTP/1.1\r\nhost: x\r\n\r\n";

#[tokio::test]
async fn an_idle_connection_is_parked_and_serves_its_next_requests() {
    let server = start(Duration::from_secs(10)).await;
    let mut client = Client::connect(server.addr).await;
    for i in 0..3 {
        client.send(GET).await;
        assert_eq!(
            client.response().await,
            (200, "GET /a 0".into()),
            "request {i}"
        );
        server.idle(1).await;
    }
    // A body split across packets, with the head in its own packet.
    client
        .send_split(&[
            b"POST /b HTTP/1.1\r\nhost: x\r\ncontent-length: 11\r\n\r\n",
            b"hello",
            b" world",
        ])
        .await;
    assert_eq!(client.response().await, (200, "POST /b 11".into()));
    server.idle(1).await;
    client.get().await;
    assert_eq!(server.metrics.downstream_connections.get(), 1);
}

#[tokio::test]
async fn pipelined_requests_and_chunked_bodies_are_served_and_their_connections_park() {
    let server = start(Duration::from_secs(10)).await;

    // Pipelined: three requests in one packet, the third split.
    let mut client = Client::connect(server.addr).await;
    client
        .send_split(&[
            b"GET /1 HTTP/1.1\r\nhost: x\r\n\r\nGET /2 HTTP/1.1\r\nhost: x\r\n\r\nGET /3 HT",
            b"TP/1.1\r\nhost: x\r\n\r\n",
        ])
        .await;
    for i in 1..=3 {
        assert_eq!(client.response().await, (200, format!("GET /{i} 0")));
    }
    client.get().await;

    // A chunked body, then a plain request on the same connection.
    let mut client = Client::connect(server.addr).await;
    client
        .send_split(&[
            b"POST /c HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\n",
            b"0\r\n\r\n",
        ])
        .await;
    assert_eq!(client.response().await, (200, "POST /c 5".into()));
    client.get().await;

    // Both connections park once idle.
    server.idle(2).await;
}

#[tokio::test]
async fn a_parked_connection_can_still_be_upgraded() {
    let server = start(Duration::from_secs(10)).await;
    let mut client = Client::connect(server.addr).await;
    client.get().await;
    server.idle(1).await;
    client
        .send(b"GET /ws HTTP/1.1\r\nhost: x\r\nconnection: upgrade\r\nupgrade: echo\r\n\r\n")
        .await;
    assert_eq!(client.response().await.0, 101);
    client.send(b"ping").await;
    while client.buf.len() < 4 {
        client.read_more().await;
    }
    assert_eq!(client.buf, b"ping");
    // Upgraded, the connection is never parked again, however long it is quiet.
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(server.metrics.downstream_idle.get(), 0);
    client.buf.clear();
    client.send(b"pong").await;
    while client.buf.len() < 4 {
        client.read_more().await;
    }
    assert_eq!(client.buf, b"pong");
}

#[tokio::test]
async fn a_parked_connection_closes_after_the_idle_timeout_and_on_shutdown() {
    let server = start(Duration::from_millis(300)).await;
    let mut client = Client::connect(server.addr).await;
    client.get().await;
    server.idle(1).await;
    assert!(client.closed().await, "closed after the idle timeout");
    server.idle(0).await;

    let server = start(Duration::from_secs(10)).await;
    let mut client = Client::connect(server.addr).await;
    client.get().await;
    server.idle(1).await;
    server.stop.send(true).unwrap();
    assert!(client.closed().await, "closed on shutdown");
    tokio::time::timeout(Duration::from_secs(2), server.serving)
        .await
        .expect("the drain ends at once: nothing was in flight")
        .unwrap();
}

#[tokio::test]
async fn a_client_closing_while_parked_is_let_go() {
    let server = start(Duration::from_secs(10)).await;
    let mut client = Client::connect(server.addr).await;
    client.get().await;
    server.idle(1).await;
    drop(client);
    server.idle(0).await;
    for _ in 0..200 {
        if server.metrics.downstream_connections.get() == 0 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("the closed connection is still counted open");
}

#[tokio::test]
async fn many_clients_pausing_around_the_park_delay_lose_nothing() {
    let server = start(Duration::from_secs(10)).await;
    let clients = (0..16u64).map(|c| {
        let addr = server.addr;
        tokio::spawn(async move {
            let mut client = Client::connect(addr).await;
            let mut parked_between = 0;
            for i in 0..30u64 {
                // Pauses on both sides of the 100 ms park delay, and bodies split across
                // packets, so requests arrive while connections park and wake.
                let pause = fastrand::u64(0..160);
                tokio::time::sleep(Duration::from_millis(pause)).await;
                parked_between += u32::from(pause > 120);
                if (c + i) % 3 == 0 {
                    let body = "x".repeat(fastrand::usize(1..3000));
                    let head = format!(
                        "POST /{c}/{i} HTTP/1.1\r\nhost: x\r\ncontent-length: {}\r\n\r\n",
                        body.len()
                    );
                    let (first, rest) = body.split_at(body.len() / 2);
                    client
                        .send_split(&[format!("{head}{first}").as_bytes(), rest.as_bytes()])
                        .await;
                    let expected = format!("POST /{c}/{i} {}", body.len());
                    assert_eq!(client.response().await, (200, expected));
                } else {
                    client
                        .send(format!("GET /{c}/{i} HTTP/1.1\r\nhost: x\r\n\r\n").as_bytes())
                        .await;
                    assert_eq!(client.response().await, (200, format!("GET /{c}/{i} 0")));
                }
            }
            parked_between
        })
    });
    let mut parked_between = 0;
    for client in clients.collect::<Vec<_>>() {
        parked_between += client.await.unwrap();
    }
    assert!(
        parked_between > 0,
        "some requests came after a connection was parked"
    );
    // Each client kept its one connection throughout (a closed one fails its next response).
    assert_eq!(server.metrics.downstream_accepted.get(), 16);
}

/// The head of a raw response, lowercased, and what follows it.
fn split_head(raw: &str) -> (String, &str) {
    let (head, rest) = raw.split_once("\r\n\r\n").expect("a whole head");
    (head.to_ascii_lowercase(), rest)
}

#[tokio::test]
async fn responses_are_framed_for_the_request_and_the_client_version() {
    let server = start(Duration::from_secs(10)).await;

    // Unknown length to HTTP/1.1: chunked, with the trailer; the connection stays open.
    let mut client = Client::connect(server.addr).await;
    client
        .send(b"GET /stream HTTP/1.1\r\nhost: x\r\n\r\n")
        .await;
    while !client.buf.ends_with(b"\r\n\r\n") || !client.buf.windows(7).any(|w| w == b"x-done:") {
        client.read_more().await;
    }
    let raw = String::from_utf8(std::mem::take(&mut client.buf)).unwrap();
    let (head, body) = split_head(&raw);
    assert!(head.starts_with("http/1.1 200 ok"), "{head}");
    assert!(head.contains("transfer-encoding: chunked"), "{head}");
    assert!(
        head.contains("\r\ndate: "),
        "every response has a date: {head}"
    );
    assert_eq!(
        body,
        "4\r\none \r\n4\r\ntwo \r\n5\r\nthree\r\n0\r\nx-done: yes\r\n\r\n"
    );
    client.get().await;

    // Unknown length to HTTP/1.0: until close, which ends the connection.
    let mut client = Client::connect(server.addr).await;
    client
        .send(b"GET /stream HTTP/1.0\r\nconnection: keep-alive\r\n\r\n")
        .await;
    let raw = client.until_closed().await;
    let (head, body) = split_head(&raw);
    assert!(head.contains("connection: close"), "{head}");
    assert!(!head.contains("transfer-encoding"), "{head}");
    assert_eq!(body, "one two three");

    // HTTP/1.0 keeps the connection only when asked to, and says so.
    let mut client = Client::connect(server.addr).await;
    client
        .send(b"GET /a HTTP/1.0\r\nconnection: keep-alive\r\n\r\n")
        .await;
    assert_eq!(client.response().await, (200, "GET /a 0".into()));
    client.send(b"GET /b HTTP/1.0\r\n\r\n").await;
    let raw = client.until_closed().await;
    let (head, body) = split_head(&raw);
    assert!(head.contains("connection: close"), "{head}");
    assert_eq!(body, "GET /b 0");

    // HEAD: the length a GET would get, no body, and the connection carries on.
    let mut client = Client::connect(server.addr).await;
    client.send(b"HEAD /h HTTP/1.1\r\nhost: x\r\n\r\n").await;
    while !client.buf.ends_with(b"\r\n\r\n") {
        client.read_more().await;
    }
    let raw = String::from_utf8(std::mem::take(&mut client.buf)).unwrap();
    assert!(split_head(&raw).1.is_empty());
    client.get().await;
}

#[tokio::test]
async fn a_client_expecting_100_continue_is_invited_to_send_its_body() {
    let server = start(Duration::from_secs(10)).await;
    let mut client = Client::connect(server.addr).await;
    client
        .send(b"POST /up HTTP/1.1\r\nhost: x\r\ncontent-length: 5\r\nexpect: 100-continue\r\n\r\n")
        .await;
    while !client.buf.ends_with(b"\r\n\r\n") {
        client.read_more().await;
    }
    assert_eq!(client.buf, b"HTTP/1.1 100 Continue\r\n\r\n");
    client.buf.clear();
    client.send(b"hello").await;
    assert_eq!(client.response().await, (200, "POST /up 5".into()));

    // Refused without reading the body: no invitation, and the connection ends after the
    // answer, since the body may still come.
    client
        .send(b"POST /ignore HTTP/1.1\r\nhost: x\r\ncontent-length: 5\r\nexpect: 100-continue\r\n\r\n")
        .await;
    let raw = client.until_closed().await;
    let (head, body) = split_head(&raw);
    assert!(head.starts_with("http/1.1 200"), "{head}");
    assert!(head.contains("connection: close"), "{head}");
    assert_eq!(body, "ignored");
}

#[tokio::test]
async fn a_body_the_handler_leaves_unread_is_skipped_when_it_is_here_else_the_connection_ends() {
    let server = start(Duration::from_secs(10)).await;
    // The whole body came with the head: skipped, and the next request is read right.
    let mut client = Client::connect(server.addr).await;
    client
        .send(b"POST /ignore HTTP/1.1\r\nhost: x\r\ncontent-length: 5\r\n\r\nhello")
        .await;
    assert_eq!(client.response().await, (200, "ignored".into()));
    client.get().await;
    client
        .send(b"POST /ignore HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n")
        .await;
    assert_eq!(client.response().await, (200, "ignored".into()));
    client.get().await;

    // Most of a large body is still to come: the client gets the answer, then the end.
    let mut client = Client::connect(server.addr).await;
    client
        .send(b"POST /ignore HTTP/1.1\r\nhost: x\r\ncontent-length: 1000000\r\n\r\nxxxx")
        .await;
    let raw = client.until_closed().await;
    let (head, body) = split_head(&raw);
    assert!(head.contains("connection: close"), "{head}");
    assert_eq!(body, "ignored");
}

#[tokio::test]
async fn malformed_or_ambiguous_requests_get_400_and_oversized_heads_431() {
    let server = start(Duration::from_secs(10)).await;
    let cases: [(&[u8], &str); 6] = [
        (b"GET / HTTP/1.1\r\nbad header\r\n\r\n", "400"),
        (b"GET /\x01 HTTP/1.1\r\n\r\n", "400"),
        // Both framings: how requests are smuggled past proxies that read them differently.
        (
            b"POST / HTTP/1.1\r\ncontent-length: 3\r\ntransfer-encoding: chunked\r\n\r\n0\r\n\r\n",
            "400",
        ),
        (b"POST / HTTP/1.1\r\ntransfer-encoding: gzip\r\n\r\n", "400"),
        (
            b"POST / HTTP/1.0\r\ntransfer-encoding: chunked\r\n\r\n0\r\n\r\n",
            "400",
        ),
        (b"POST / HTTP/1.1\r\ncontent-length: 1, 2\r\n\r\nab", "400"),
    ];
    for (request, status) in cases {
        let mut client = Client::connect(server.addr).await;
        client.send(request).await;
        let raw = client.until_closed().await;
        let (head, _) = split_head(&raw);
        assert!(
            head.starts_with(&format!("http/1.1 {status}")),
            "{}: {head}",
            String::from_utf8_lossy(request)
        );
        assert!(head.contains("x-weir-error: bad-request"), "{head}");
    }
    let mut client = Client::connect(server.addr).await;
    let huge = format!(
        "GET / HTTP/1.1\r\nx-big: {}\r\n\r\n",
        "a".repeat(300 * 1024)
    );
    client.send(huge.as_bytes()).await;
    let raw = client.until_closed().await;
    let (head, _) = split_head(&raw);
    assert!(head.starts_with("http/1.1 431"), "{head}");
}

#[tokio::test]
async fn a_head_trickling_in_is_cut_off_at_the_header_read_timeout() {
    let server = start(Duration::from_millis(400)).await;
    let mut client = Client::connect(server.addr).await;
    let started = std::time::Instant::now();
    for byte in b"GET / HTTP/1.1\r\nx-slow: ".iter().cycle().take(40) {
        if client.stream.write_all(&[*byte]).await.is_err() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(client.closed().await, "a slow head is cut off");
    assert!(started.elapsed() < Duration::from_secs(5));
}
