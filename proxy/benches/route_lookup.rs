//! Route lookup with 10,000 routes: 100 hosts × 100 path prefixes (plus header-matched
//! variants), the shape of a large multi-tenant gateway. Target: well under 1 µs per lookup.

use std::{hint::black_box, sync::Arc};

use criterion::{criterion_group, criterion_main, Criterion};
use http::{HeaderMap, Method};
use weir_api::model::{
    Forward, HostMatch, PathMatch, Route, RouteAction, RouteMatch, RouteOrder, Snapshot,
    StringMatch, ValueMatch,
};
use weir_proxy::router::{RequestView, Router};

fn snapshot(hosts: usize, paths: usize) -> Snapshot {
    let mut routes = Vec::with_capacity(hosts * paths);
    for h in 0..hosts {
        for p in 0..paths {
            let headers = if p % 10 == 0 {
                vec![ValueMatch {
                    name: "x-tenant".into(),
                    value: StringMatch::Exact(format!("t{p}")),
                }]
            } else {
                Vec::new()
            };
            routes.push(Arc::new(Route {
                name: Arc::from(format!("httproute:ns/r{h}:{p}")),
                hosts: vec![HostMatch::Exact(format!("host{h}.example.com"))],
                listeners: Vec::new(),
                excluded_hosts: Vec::new(),
                matcher: RouteMatch {
                    path: PathMatch::Prefix(format!("/svc{p}/api")),
                    headers,
                    ..RouteMatch::default()
                },
                order: RouteOrder {
                    created: String::new(),
                    object: format!("ns/r{h}"),
                    rule: p,
                    matcher: 0,
                },
                action: RouteAction::Forward(Forward::default()),
                max_request_body: None,
                upgrades: weir_api::model::websocket_only(),
                auth: None,
                limits: Vec::new(),
            }));
        }
    }
    Snapshot {
        routes,
        ..Snapshot::default()
    }
}

fn bench(c: &mut Criterion) {
    let router = Router::new(&snapshot(100, 100));
    let headers = HeaderMap::new();
    let method = Method::GET;
    let mut group = c.benchmark_group("route_lookup_10k");
    group.bench_function("hit_deep_path", |b| {
        b.iter(|| {
            let view = RequestView {
                host: black_box("host57.example.com"),
                path: black_box("/svc42/api/orders/12345/items"),
                query: None,
                method: &method,
                headers: &headers,
            };
            black_box(router.route(&view).is_some())
        })
    });
    group.bench_function("miss", |b| {
        b.iter(|| {
            let view = RequestView {
                host: black_box("host57.example.com"),
                path: black_box("/nothing/here/at/all"),
                query: None,
                method: &method,
                headers: &headers,
            };
            black_box(router.route(&view).is_none())
        })
    });
    group.finish();
    c.bench_function("router_build_10k", |b| {
        let snap = snapshot(100, 100);
        b.iter(|| black_box(Router::new(&snap)))
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
