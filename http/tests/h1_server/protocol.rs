//! HTTP/1.1 as clients speak it: framing, `100 Continue`, unread bodies, bad requests, slow heads.

use std::time::Duration;

use tokio::io::AsyncWriteExt;

use crate::support::{split_head, start, Client, GET};

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
async fn malformed_or_ambiguous_requests_get_400_unknown_codings_501_and_oversized_heads_431() {
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
    // A coding besides chunked (RFC 9112 §6.1): Weir cannot decode it, so it cannot pass the
    // body on; in one field or over several.
    for request in [
        &b"POST / HTTP/1.1\r\ntransfer-encoding: gzip, chunked\r\n\r\n0\r\n\r\n"[..],
        b"POST / HTTP/1.1\r\ntransfer-encoding: gzip\r\ntransfer-encoding: chunked\r\n\r\n0\r\n\r\n",
    ] {
        let mut client = Client::connect(server.addr).await;
        client.send(request).await;
        let raw = client.until_closed().await;
        let (head, _) = split_head(&raw);
        assert!(head.starts_with("http/1.1 501"), "{head}");
        assert!(
            head.contains("x-weir-error: unsupported-transfer-coding"),
            "{head}"
        );
    }
    // chunked alone, in any case and with empty list elements, is served.
    let mut client = Client::connect(server.addr).await;
    client
        .send(b"POST / HTTP/1.1\r\nhost: x\r\ntransfer-encoding: , Chunked\r\n\r\n2\r\nhi\r\n0\r\n\r\n")
        .await;
    assert_eq!(client.response().await.0, 200);
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

#[tokio::test]
async fn a_head_arriving_in_pieces_slower_than_the_park_delay_is_served() {
    let server = start(Duration::from_secs(10)).await;
    let mut client = Client::connect(server.addr).await;
    let (start_of_head, end_of_head) = GET.split_at(GET.len() - 2);
    client.send(start_of_head).await;
    // Longer than the 100 ms after which an idle connection parks, far short of the
    // header-read timeout.
    tokio::time::sleep(Duration::from_millis(300)).await;
    client.send(end_of_head).await;
    assert_eq!(client.response().await, (200, "GET /a 0".into()));
}
