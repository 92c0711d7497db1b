//! Idle connections give their buffers back and are served again.

use std::time::Duration;

use crate::support::{start, Client, GET};

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
