//! The server under test, its handler, and a raw HTTP/1.1 client.

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
use weir_http::{
    body::{self, Body},
    metrics::HttpMetrics,
    server::{self, Peer, ServerSettings},
    upgrade::OnUpgrade,
};

/// Answers `METHOD PATH BODY-LENGTH`; a request with `upgrade: echo` is switched to a
/// protocol that echoes every byte back.
pub async fn handler(_: Peer, mut req: Request<Body>) -> Response<Body> {
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

pub struct Server {
    pub addr: SocketAddr,
    pub metrics: HttpMetrics,
    pub stop: watch::Sender<bool>,
    pub serving: JoinHandle<()>,
}

pub async fn start(header_read_timeout: Duration) -> Server {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let metrics = HttpMetrics::register(&prometheus::Registry::new());
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
    pub async fn idle(&self, n: i64) {
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
pub struct Client {
    pub stream: TcpStream,
    pub buf: Vec<u8>,
}

impl Client {
    pub async fn connect(addr: SocketAddr) -> Self {
        let stream = TcpStream::connect(addr).await.unwrap();
        stream.set_nodelay(true).unwrap();
        Self {
            stream,
            buf: Vec::new(),
        }
    }

    pub async fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).await.unwrap();
    }

    /// A plain GET on this connection, answered.
    pub async fn get(&mut self) {
        self.send(GET).await;
        assert_eq!(self.response().await, (200, "GET /a 0".into()));
    }

    /// Sends `parts` as separate packets, 20 ms apart.
    pub async fn send_split(&mut self, parts: &[&[u8]]) {
        for (i, part) in parts.iter().enumerate() {
            if i > 0 {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            self.send(part).await;
        }
    }

    /// The next response's status and body (by `content-length`).
    pub async fn response(&mut self) -> (u16, String) {
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

    pub async fn read_more(&mut self) {
        let mut chunk = [0u8; 4096];
        let n = tokio::time::timeout(Duration::from_secs(5), self.stream.read(&mut chunk))
            .await
            .expect("the server answers within 5 s")
            .unwrap();
        assert!(n > 0, "the server closed the connection");
        self.buf.extend_from_slice(&chunk[..n]);
    }

    /// Everything the server sends until it closes the connection (within 5 s).
    pub async fn until_closed(&mut self) -> String {
        let mut rest = Vec::new();
        tokio::time::timeout(Duration::from_secs(5), self.stream.read_to_end(&mut rest))
            .await
            .expect("the server closes within 5 s")
            .unwrap();
        self.buf.extend_from_slice(&rest);
        String::from_utf8(std::mem::take(&mut self.buf)).unwrap()
    }

    /// Whether the server closed the connection (within 5 s).
    pub async fn closed(&mut self) -> bool {
        let mut chunk = [0u8; 64];
        matches!(
            tokio::time::timeout(Duration::from_secs(5), self.stream.read(&mut chunk)).await,
            Ok(Ok(0)) | Ok(Err(_))
        )
    }
}

pub const GET: &[u8] = b"GET /a HTTP/1.1\r\nhost: x\r\n\r\n";

/// The head of a raw response, lowercased, and what follows it.
pub fn split_head(raw: &str) -> (String, &str) {
    let (head, rest) = raw.split_once("\r\n\r\n").expect("a whole head");
    (head.to_ascii_lowercase(), rest)
}
