//! What traces cost a request on the worker (target: a request that is not sampled costs
//! under 0.5 µs more than one with trace context off). Measured on the functions the roles
//! call: the gateway's `headers::stamp` (request id, `traceparent`, X-Forwarded-For) with
//! trace context off, and on with the request not sampled (a new trace at the default 1 %
//! that falls outside it, and a caller's unsampled trace); a sidecar's `continue_trace`; and,
//! for scale, a sampled request's span built and handed to the OpenTelemetry batch queue
//! (exported by the SDK's own thread to a collector on loopback that answers every export).

use std::{hint::black_box, net::IpAddr};

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, Criterion};
use http::{HeaderMap, HeaderValue, Method, Response};
use http_body::Body as _;
use weir_http::body::full;
use weir_proxy::{
    headers::{stamp, FieldPolicy, Sampling, TraceContext},
    trace::{Hop, Service, SpanStart, Tracer},
};

const CLIENT: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(10, 1, 2, 3));

fn head() -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert("host", HeaderValue::from_static("shop.example.com"));
    h.insert("user-agent", HeaderValue::from_static("bench"));
    h
}

/// A collector on loopback that answers every export (the exports are not on the measured
/// path, but a realistic one keeps the SDK's thread doing what it does in production).
fn collector(rt: &tokio::runtime::Runtime) -> String {
    let listener = rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let addr = listener.local_addr().unwrap();
    rt.spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let service = hyper::service::service_fn(|_req| async {
                    Ok::<_, std::convert::Infallible>(Response::new(full(Bytes::new())))
                });
                let io = hyper_util::rt::TokioIo::new(stream);
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(io, service)
                    .await;
            });
        }
    });
    format!("http://{addr}")
}

fn bench(c: &mut Criterion) {
    let off = FieldPolicy {
        trace_context: TraceContext::Off,
        ..FieldPolicy::default()
    };
    let unsampled_new = FieldPolicy {
        sampling: Sampling::ratio(0.0).unwrap(),
        ..FieldPolicy::default()
    };
    let default = FieldPolicy::default();
    let mut group = c.benchmark_group("trace");
    let unsampled =
        HeaderValue::from_static("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00");
    // Each pair: the same request with trace context off, and on with it not sampled.
    let fresh = head;
    let callers = || {
        let mut h = head();
        h.insert("traceparent", unsampled.clone());
        h
    };
    group.bench_function("gateway, no traceparent: trace context off", |b| {
        b.iter(|| black_box(stamp(&mut fresh(), CLIENT, off)))
    });
    group.bench_function("gateway, no traceparent: new trace not sampled", |b| {
        b.iter(|| black_box(stamp(&mut fresh(), CLIENT, unsampled_new)))
    });
    group.bench_function(
        "gateway, caller's unsampled trace: trace context off",
        |b| b.iter(|| black_box(stamp(&mut callers(), CLIENT, off))),
    );
    group.bench_function(
        "gateway, caller's unsampled trace: continued, not sampled",
        |b| b.iter(|| black_box(stamp(&mut callers(), CLIENT, default))),
    );

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let endpoint = collector(&rt);
    let service = Service {
        name: "weir-bench",
        namespace: None,
        pod: None,
    };
    let tracer = rt
        .block_on(async { Tracer::new(&endpoint, &service, Sampling::ratio(0.0).unwrap()) })
        .unwrap();
    group.bench_function("sidecar, caller's unsampled trace: no tracer", |b| {
        b.iter(|| black_box(callers()))
    });
    group.bench_function("sidecar, caller's unsampled trace: continue_trace", |b| {
        b.iter(|| {
            let mut h = callers();
            black_box(tracer.continue_trace(&mut h, Hop::Client, &Method::GET, "shop", "/"));
            h
        })
    });
    group.bench_function("sidecar, no traceparent: no tracer", |b| {
        b.iter(|| black_box(fresh()))
    });
    group.bench_function(
        "sidecar, no traceparent: continue_trace, not sampled",
        |b| {
            b.iter(|| {
                let mut h = fresh();
                black_box(tracer.continue_trace(&mut h, Hop::Client, &Method::GET, "shop", "/"));
                h
            })
        },
    );
    let sampled =
        HeaderValue::from_static("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01");
    group.bench_function("sampled: stamp, span built and queued", |b| {
        b.iter(|| {
            let mut h = head();
            h.insert("traceparent", sampled.clone());
            let ids = stamp(&mut h, CLIENT, default).sampled.unwrap();
            let span = SpanStart::new(ids, Hop::Server, &Method::GET, "shop.example.com", "/cart");
            let response =
                tracer.finish(span, Some("shop/cart"), Response::new(full(Bytes::new())));
            // The body read to its end, as the server does: the span ends then.
            let mut body = std::pin::pin!(response.into_body());
            let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
            while let std::task::Poll::Ready(Some(_)) = body.as_mut().poll_frame(&mut cx) {}
        })
    });
    group.finish();
    rt.block_on(tracer.shutdown());
}

criterion_group!(benches, bench);
criterion_main!(benches);
