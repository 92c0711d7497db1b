//! RateLimitPolicy fixtures: a `shop` route behind a policy, and gateways that share Redis.

use std::time::Duration;

use crate::{eventually, gateway, http_route, redis::Redis, route_policy, service};
use crate::{ConfigDir, Echo, Weir};

/// HTTPRoute `name` for `host` to Service `app`.
pub fn app_route(name: &str, host: &str) -> String {
    http_route(name, &[host], "  - backendRefs: [{name: app, port: 80}]\n")
}

/// Service `app`, a Gateway, HTTPRoute `shop` for shop.example.com, and RateLimitPolicy
/// `name` on it with `spec`.
pub fn shop_limited_by(app: &Echo, name: &str, spec: &str) -> ConfigDir {
    ConfigDir::new()
        .with("svc.yaml", &service("app", &[app]))
        .with("gw.yaml", &gateway())
        .with("route.yaml", &app_route("shop", "shop.example.com"))
        .with(
            "limit.yaml",
            &route_policy("RateLimitPolicy", name, "shop", spec),
        )
}

/// Service `app`, a Gateway, and two routes to it, open.example.com and closed.example.com,
/// each limited by `limit` with `failureMode` as its name says.
pub fn open_and_closed(app: &Echo, limit: &str) -> ConfigDir {
    let policy = |mode: &str| {
        let spec = format!("  failureMode: {mode}\n  limits:\n  - {limit}\n");
        route_policy("RateLimitPolicy", mode, mode, &spec)
    };
    let routes = [
        app_route("open", "open.example.com"),
        app_route("closed", "closed.example.com"),
    ];
    ConfigDir::new()
        .with("svc.yaml", &service("app", &[app]))
        .with("gw.yaml", &gateway())
        .with("routes.yaml", &routes.join("---\n"))
        .with(
            "limits.yaml",
            &[policy("open"), policy("closed")].join("---\n"),
        )
}

/// `n` gateways on `dir` counting global limits in `redis` (with `extra` flags; a Redis timeout
/// of 1 s unless they name one), each connected. A probe request would spend the budget, so
/// this reads their logs instead.
pub async fn connected(redis: &Redis, dir: &ConfigDir, n: usize, extra: &[&str]) -> Vec<Weir> {
    let url = redis.url();
    let mut flags = vec!["--redis", url.as_str()];
    flags.extend(extra);
    connected_with(dir, n, &flags).await
}

/// `n` gateways on `dir` started with `flags` (which name Redis; a Redis timeout of 1 s unless
/// they name one), each connected to Redis.
pub async fn connected_with(dir: &ConfigDir, n: usize, flags: &[&str]) -> Vec<Weir> {
    let mut flags = flags.to_vec();
    if !flags.contains(&"--redis-timeout") {
        flags.extend(["--redis-timeout", "1s"]);
    }
    let gateways: Vec<Weir> = (0..n).map(|_| Weir::start_with(dir, &flags)).collect();
    for weir in &gateways {
        eventually(Duration::from_secs(10), "connected to Redis", || async {
            let s = weir.stderr().join("\n");
            s.contains("connected to Redis").then_some(())
        })
        .await;
    }
    gateways
}
