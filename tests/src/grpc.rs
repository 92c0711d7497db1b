//! gRPC calls as the upstream conformance suite's echo client makes them: one unary call
//! over h2c to the gateway, each answer's backend told by the `grpc-message` trailer
//! weir-echo sends.

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};

/// The upstream echo service the calls name.
pub const SERVICE: &str = "gateway_api_conformance.grpc_echo.grpcecho.GrpcEcho";

/// What a call got: its `grpc-status`, the backend that answered (its `grpc-message`), and
/// the metadata that backend saw.
pub struct Called {
    pub status: String,
    pub backend: String,
    pub seen: serde_json::Value,
}

/// One unary call to `addr` over h2c, for `:authority` `authority`.
pub async fn call_at(
    addr: std::net::SocketAddr,
    authority: &str,
    method: &str,
    headers: &[(&str, &str)],
) -> Called {
    let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (mut sender, connection) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .unwrap();
    tokio::spawn(connection);
    let mut req = http::Request::post(format!("http://{authority}/{SERVICE}/{method}"))
        .header("content-type", "application/grpc")
        .header("te", "trailers");
    for (name, value) in headers {
        req = req.header(*name, *value);
    }
    let req = req
        .body(Full::new(Bytes::from_static(b"\0\0\0\0\0")))
        .unwrap();
    let res = sender.send_request(req).await.unwrap();
    assert_eq!(
        res.status(),
        200,
        "gRPC answers HTTP 200, its status in grpc-status"
    );
    let head = res.headers().clone();
    let collected = res.into_body().collect().await.unwrap();
    let trailers = collected.trailers().cloned().unwrap_or_default();
    let field = |name: &str| {
        trailers
            .get(name)
            .or_else(|| head.get(name))
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string()
    };
    let seen = head
        .get("echo-headers")
        .and_then(|v| serde_json::from_slice(v.as_bytes()).ok())
        .unwrap_or_default();
    Called {
        status: field("grpc-status"),
        backend: field("grpc-message"),
        seen,
    }
}
