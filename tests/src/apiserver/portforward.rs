//! `pods/NAME/portforward`: the WebSocket port-forward that `kubectl port-forward` and kube's
//! `Api::portforward` speak (subprotocol `v4.channel.k8s.io`), to the pod's `status.podIP`,
//! where tests run a pod's process on loopback as the kubelet would reach it in the pod.
//!
//! As the kubelet does: every frame carries its channel first (port `i` has data channel `2i`
//! and error channel `2i + 1`); each channel's first frame from the server is its port,
//! two bytes little-endian; a port that cannot be reached is said on its error channel.

use std::sync::Arc;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http::{header, Request, Response};
use http_body_util::{BodyExt, Empty};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use serde_json::Value;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
    sync::mpsc,
};
use tokio_tungstenite::{
    tungstenite::{handshake::derive_accept_key, protocol::Role, Message},
    WebSocketStream,
};

use super::{query::decode, resources::RESOURCES, ApiError, Body, Shared};

const PROTOCOL: &str = "v4.channel.k8s.io";

/// Answers the upgrade and forwards the pod's ports until either side closes.
pub fn serve(
    shared: &Arc<Shared>,
    namespace: &str,
    name: &str,
    request: Request<Incoming>,
) -> Result<Response<Body>, ApiError> {
    let pods = RESOURCES
        .iter()
        .find(|r| r.plural == "pods")
        .expect("pods are served");
    let pod = shared
        .store
        .lock()
        .expect("store")
        .get(pods, Some(namespace), name)?;
    if pod.pointer("/status/phase").and_then(Value::as_str) != Some("Running") {
        return Err(ApiError::bad_request(format!(
            "pod {namespace}/{name} is not running"
        )));
    }
    let ip = pod
        .pointer("/status/podIP")
        .and_then(Value::as_str)
        .ok_or_else(|| ApiError::bad_request(format!("pod {namespace}/{name} has no IP")))?
        .to_string();
    let ports = ports(request.uri().query().unwrap_or_default())?;
    let offered = request
        .headers()
        .get(header::SEC_WEBSOCKET_PROTOCOL)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    if !offered.split(',').any(|p| p.trim() == PROTOCOL) {
        return Err(ApiError::bad_request(format!(
            "port-forward needs a WebSocket with the subprotocol {PROTOCOL}"
        )));
    }
    let key = request
        .headers()
        .get(header::SEC_WEBSOCKET_KEY)
        .ok_or_else(|| ApiError::bad_request("port-forward needs a WebSocket upgrade"))?;
    let accept = derive_accept_key(key.as_bytes());
    tokio::spawn(async move {
        let Ok(upgraded) = hyper::upgrade::on(request).await else {
            return;
        };
        let socket =
            WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Server, None).await;
        forward(socket, &ip, &ports).await;
    });
    Ok(Response::builder()
        .status(101)
        .header(header::CONNECTION, "Upgrade")
        .header(header::UPGRADE, "websocket")
        .header(header::SEC_WEBSOCKET_ACCEPT, accept)
        .header(header::SEC_WEBSOCKET_PROTOCOL, PROTOCOL)
        .body(Empty::new().map_err(|e| match e {}).boxed_unsync())
        .expect("response"))
}

/// `ports=P[,P...]`, each a port number.
fn ports(query: &str) -> Result<Vec<u16>, ApiError> {
    let mut ports = Vec::new();
    for pair in query.split('&') {
        if let Some(list) = pair.strip_prefix("ports=") {
            for port in decode(list).split(',') {
                ports.push(port.trim().parse().map_err(|_| {
                    ApiError::bad_request(format!("invalid port {port:?} in ports"))
                })?);
            }
        }
    }
    if ports.is_empty() {
        return Err(ApiError::bad_request("port-forward needs ports=PORT"));
    }
    Ok(ports)
}

async fn forward(
    socket: WebSocketStream<TokioIo<hyper::upgrade::Upgraded>>,
    ip: &str,
    ports: &[u16],
) {
    let (mut sink, mut frames) = socket.split();
    let (to_client, mut outgoing) = mpsc::channel::<Vec<u8>>(16);
    let mut writers = Vec::new();
    for (i, port) in ports.iter().enumerate() {
        let (data, error) = (2 * i as u8, 2 * i as u8 + 1);
        let [low, high] = port.to_le_bytes();
        for channel in [data, error] {
            if sink
                .send(Message::Binary(Bytes::from(vec![channel, low, high])))
                .await
                .is_err()
            {
                return;
            }
        }
        match TcpStream::connect((ip, *port)).await {
            Ok(stream) => {
                let (mut reader, writer) = stream.into_split();
                writers.push(Some(writer));
                let to_client = to_client.clone();
                tokio::spawn(async move {
                    let mut buffer = vec![0; 16 * 1024];
                    while let Ok(n @ 1..) = reader.read(&mut buffer).await {
                        let mut frame = Vec::with_capacity(n + 1);
                        frame.push(data);
                        frame.extend_from_slice(&buffer[..n]);
                        if to_client.send(frame).await.is_err() {
                            return;
                        }
                    }
                });
            }
            Err(e) => {
                writers.push(None);
                let message = format!("error forwarding port {port} to pod at {ip}: {e}");
                let frame = [&[error][..], message.as_bytes()].concat();
                let _ = sink.send(Message::Binary(Bytes::from(frame))).await;
            }
        }
    }
    // The pod's side ends when every connection to it has (each reader drops its sender).
    drop(to_client);
    loop {
        tokio::select! {
            frame = outgoing.recv() => match frame {
                Some(frame) => {
                    if sink.send(Message::Binary(Bytes::from(frame))).await.is_err() {
                        return;
                    }
                }
                None => break,
            },
            message = frames.next() => match message {
                Some(Ok(Message::Binary(bytes))) if !bytes.is_empty() => {
                    let channel = usize::from(bytes[0]);
                    let writer = (channel % 2 == 0)
                        .then(|| writers.get_mut(channel / 2))
                        .flatten()
                        .and_then(Option::as_mut);
                    if let Some(writer) = writer {
                        if writer.write_all(&bytes[1..]).await.is_err() {
                            writers[channel / 2] = None;
                        }
                    }
                }
                Some(Ok(Message::Close(_))) | Some(Err(_)) | None => break,
                Some(Ok(_)) => {}
            },
        }
    }
    let _ = sink.close().await;
}
