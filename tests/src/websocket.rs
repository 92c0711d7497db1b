//! WebSocket at the byte level: the upgrade handshake, and masked frames that `weir-echo`
//! sends back untouched.

use std::{net::SocketAddr, time::Duration};

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};

/// Opens a WebSocket to `addr` for `host` (path `/chat`) and returns the connection and the
/// response head, lowercased.
pub async fn open_websocket(addr: SocketAddr, host: &str) -> (TcpStream, String) {
    let mut ws = TcpStream::connect(addr).await.unwrap();
    let request = format!("GET /chat HTTP/1.1\r\nHost: {host}\r\nConnection: keep-alive, Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n");
    ws.write_all(request.as_bytes()).await.unwrap();
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let mut byte = [0u8; 1];
        tokio::time::timeout(Duration::from_secs(5), ws.read_exact(&mut byte))
            .await
            .expect("the response head within 5 s")
            .expect("the response head");
        head.push(byte[0]);
    }
    (ws, String::from_utf8_lossy(&head).to_lowercase())
}

/// Sends a masked WebSocket text frame three times over `ws` and checks that each comes back
/// untouched (weir-echo echoes an upgraded connection's bytes).
pub async fn assert_frames_echo(ws: &mut TcpStream) {
    let frame = [0x81u8, 0x82, 1, 2, 3, 4, b'h' ^ 1, b'i' ^ 2];
    for _ in 0..3 {
        ws.write_all(&frame).await.unwrap();
        let mut back = [0u8; 8];
        tokio::time::timeout(Duration::from_secs(5), ws.read_exact(&mut back))
            .await
            .expect("the frame back within 5 s")
            .expect("the frame back");
        assert_eq!(back, frame);
    }
}
