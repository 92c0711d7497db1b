//! What recording one request's mesh metrics costs a sidecar:
//!
//! - `by-label`: the request counter and the latency histogram looked up by their labels (four
//!   and two), as every request did before they were kept per thread;
//! - `kept`: [`MeshMetrics::request`], which keeps them per thread.
//!
//! `cargo bench -p weir-sidecar --bench metrics`

use std::{hint::black_box, time::Instant};

use criterion::{criterion_group, criterion_main, Criterion};
use weir_proxy::metrics::Metrics;
use weir_sidecar::metrics::MeshMetrics;

const PEER: &str = "spiffe://cluster.local/ns/bench/sa/client";

fn record(c: &mut Criterion) {
    let mesh = MeshMetrics::new(&Metrics::new());
    let started = Instant::now();
    let mut group = c.benchmark_group("mesh-request");
    group.bench_function("by-label", |b| {
        b.iter(|| {
            let labels = black_box(["outbound", PEER, "backend", "2xx"]);
            mesh.requests.with_label_values(&labels).inc();
            mesh.duration
                .with_label_values(&[labels[0], labels[2]])
                .observe(started.elapsed().as_secs_f64());
        })
    });
    group.bench_function("kept", |b| {
        b.iter(|| {
            let peer = black_box(PEER);
            mesh.request("outbound", peer, "backend", http::StatusCode::OK, started);
        })
    });
    group.finish();
}

criterion_group!(benches, record);
criterion_main!(benches);
