//! What the access log costs one request on the worker's side (target: at most 3 µs over the
//! log off): taking the request's half of the line as it arrives, wrapping the response body,
//! and writing the line into the worker's buffer when the body ends — against the same
//! exchange with the log off. The writer thread (here writing to a sink) runs as it does in
//! production, so its sweeps and hand-offs are in the measurement; its own CPU is not on the
//! worker's path and is measured by `bench/run.sh` as the process's CPU per request.

use std::{hint::black_box, time::Instant};

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, Criterion};
use http::{Request, Response};
use http_body::Body as _;
use weir_http::body::full;
use weir_proxy::access_log::{AccessLog, Arrival, LogArgs, Outcome};

fn exchange(log: &AccessLog, parts: &http::request::Parts, user: Option<&str>) {
    // As the roles do: the arrival is taken whenever the log is on; `on_end` leaves a request
    // outside the sample (and neither refused nor failed) unwrapped.
    if !log.enabled() {
        black_box(Response::new(full(Bytes::from_static(b"ok"))));
        return;
    }
    let arrival = Arrival::of(
        parts,
        "10.1.2.3:40000".parse().unwrap(),
        "shop.example.com",
        Instant::now(),
    );
    let outcome = Outcome {
        route: Some("httproute:shop/cart:0".into()),
        backend: Some("shop/cart:80".into()),
        user: user.map(Into::into),
        ..Outcome::default()
    };
    let response = log.on_end(
        arrival,
        outcome,
        Response::new(full(Bytes::from_static(b"ok"))),
    );
    // The body read to its end, as the server does: the line is written then.
    let mut body = std::pin::pin!(response.into_body());
    let waker = std::task::Waker::noop();
    let mut cx = std::task::Context::from_waker(waker);
    while let std::task::Poll::Ready(Some(_)) = body.as_mut().poll_frame(&mut cx) {}
}

fn bench(c: &mut Criterion) {
    let parts = Request::get("/cart/items?page=2")
        .header("host", "shop.example.com")
        .header("user-agent", "Mozilla/5.0 (X11; Linux x86_64) bench")
        .header("x-request-id", "0af7651916cd43dd8448eb211c80319c")
        .header(
            "traceparent",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        )
        .body(())
        .unwrap()
        .into_parts()
        .0;
    let dropped = || prometheus::IntCounter::new("dropped", "dropped").unwrap();
    let on = AccessLog::to(&LogArgs::default(), Box::new(std::io::sink()), dropped()).unwrap();
    let sampled = LogArgs {
        access_log_sample: 0.01,
        ..LogArgs::default()
    };
    let sampled = AccessLog::to(&sampled, Box::new(std::io::sink()), dropped()).unwrap();
    assert!(
        !sampled.wants(&parts),
        "this request id is in the 1 % sample: pick another"
    );
    let off = AccessLog::off();
    let mut group = c.benchmark_group("access_log");
    group.bench_function("off", |b| b.iter(|| exchange(&off, &parts, None)));
    group.bench_function("on", |b| b.iter(|| exchange(&on, &parts, None)));
    group.bench_function("on, user hashed", |b| {
        b.iter(|| exchange(&on, &parts, Some("alice@example.com")))
    });
    group.bench_function("outside a 1% sample", |b| {
        b.iter(|| exchange(&sampled, &parts, None))
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
