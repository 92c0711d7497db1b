//! What a new connection speaks, from its first bytes, without consuming them: TLS (a
//! handshake record), HTTP (an HTTP/1 method or the HTTP/2 preface), or anything else, which
//! is proxied as opaque TCP. A client that sends nothing within the detection timeout is
//! talking to a server-speaks-first protocol (MySQL, SMTP): it is opaque at once, so the
//! server's greeting is never held back.

use std::time::Duration;

use tokio::net::TcpStream;

/// Which HTTP a connection speaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HttpVersion {
    /// HTTP/1.x.
    Http1,
    /// HTTP/2 (prior knowledge in cleartext, ALPN `h2` over TLS).
    Http2,
}

/// What a connection speaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Protocol {
    /// A TLS ClientHello.
    Tls,
    /// HTTP/1.x, or HTTP/2 with prior knowledge (its preface).
    Http(HttpVersion),
    /// Something else, or nothing yet: proxied byte for byte.
    Opaque,
    /// Closed before sending anything.
    Closed,
}

/// How HTTP/1 request lines start.
const METHODS: [&[u8]; 9] = [
    b"GET ",
    b"POST ",
    b"PUT ",
    b"DELETE ",
    b"HEAD ",
    b"OPTIONS ",
    b"PATCH ",
    b"CONNECT ",
    b"TRACE ",
];
/// The HTTP/2 connection preface a prior-knowledge (h2c) client starts with.
pub(crate) const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Classifies the bytes a client sent first (as many as have arrived); `None` while they are
/// still a prefix of something known. Decides once [`H2_PREFACE`]`.len()` bytes are there.
pub fn classify(first: &[u8]) -> Option<Protocol> {
    if first.is_empty() {
        return None;
    }
    // A TLS record: handshake (22), version 3.x.
    if first[0] == 0x16 {
        return match first.get(1) {
            None => None,
            Some(3) => Some(Protocol::Tls),
            Some(_) => Some(Protocol::Opaque),
        };
    }
    let mut undecided = false;
    let h2 = std::iter::once((H2_PREFACE, HttpVersion::Http2));
    for (prefix, version) in METHODS.iter().map(|m| (*m, HttpVersion::Http1)).chain(h2) {
        let n = first.len().min(prefix.len());
        if first[..n] == prefix[..n] {
            if n == prefix.len() {
                return Some(Protocol::Http(version));
            }
            undecided = true;
        }
    }
    (!undecided).then_some(Protocol::Opaque)
}

/// Peeks at a connection's first bytes into `buf`, consuming nothing, until `decide` can tell
/// what they are; `decide` must decide once `buf` is full. `None`: the peer closed before
/// sending anything. Callers bound the wait with a timeout.
pub(crate) async fn peek_until<T>(
    stream: &TcpStream,
    buf: &mut [u8],
    decide: impl Fn(&[u8]) -> Option<T>,
) -> std::io::Result<Option<T>> {
    let mut wait = Duration::from_millis(2);
    loop {
        let peeked = stream.peek(buf).await?;
        if peeked == 0 {
            return Ok(None);
        }
        if let Some(decided) = decide(&buf[..peeked]) {
            return Ok(Some(decided));
        }
        // A prefix of something known (it rarely arrives split): peeking again would return
        // the same bytes at once, so wait a little for the rest, longer each time (2 ms, 4,
        // ... at most 64), so a client that stalls mid-way costs few wake-ups.
        tokio::time::sleep(wait).await;
        wait = (wait * 2).min(Duration::from_millis(64));
    }
}

/// Peeks at a new connection for up to `timeout` and says what it speaks; the bytes stay in
/// the socket for whoever handles it next.
pub async fn detect(stream: &TcpStream, timeout: Duration) -> std::io::Result<Protocol> {
    let mut buf = [0u8; H2_PREFACE.len()];
    match tokio::time::timeout(timeout, peek_until(stream, &mut buf, classify)).await {
        Ok(peeked) => Ok(peeked?.unwrap_or(Protocol::Closed)),
        // Silent (the server speaks first), or stuck on a prefix: opaque.
        Err(_) => Ok(Protocol::Opaque),
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;
    use crate::tcp_pair as pair;

    #[test]
    fn first_bytes_are_classified() {
        assert_eq!(classify(&[0x16, 3, 1, 2, 0]), Some(Protocol::Tls));
        let http = |v| Some(Protocol::Http(v));
        assert_eq!(classify(b"GET / HTTP/1.1\r\n"), http(HttpVersion::Http1));
        assert_eq!(classify(H2_PREFACE), http(HttpVersion::Http2));
        assert_eq!(
            classify(&H2_PREFACE[..18]),
            None,
            "could still be the preface"
        );
        assert_eq!(classify(b"GE"), None, "could still be GET");
        assert_eq!(classify(b"EHLO example.com"), Some(Protocol::Opaque));
        assert_eq!(classify(&[0x16]), None);
        assert_eq!(classify(&[0x16, 9]), Some(Protocol::Opaque));
    }

    #[tokio::test]
    async fn detection_leaves_the_bytes_and_never_waits_on_a_silent_client() {
        let (mut client, mut server) = pair().await;
        client.write_all(b"POST /x HTTP/1.1\r\n").await.unwrap();
        let protocol = detect(&server, Duration::from_secs(1)).await.unwrap();
        assert_eq!(protocol, Protocol::Http(HttpVersion::Http1));
        let mut read = [0u8; 5];
        server.read_exact(&mut read).await.unwrap();
        assert_eq!(&read, b"POST ", "peeked, not consumed");

        // A MySQL client waits for the server's greeting: detection gives up quickly.
        let (_client, server) = pair().await;
        let protocol = detect(&server, Duration::from_millis(50)).await.unwrap();
        assert_eq!(protocol, Protocol::Opaque);

        let (client, server) = pair().await;
        drop(client);
        assert_eq!(
            detect(&server, Duration::from_secs(1)).await.unwrap(),
            Protocol::Closed
        );
    }
}
