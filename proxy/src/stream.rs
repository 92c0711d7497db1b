//! TLSRoutes on the TLS listener: a connection whose SNI names a route is carried to one of the
//! route's backends byte for byte, passed through unopened (`Passthrough`) or after the
//! gateway's own TLS ends (`Terminate`).
//!
//! Names are looked up as the HTTP router looks up hosts: the exact name, then the most
//! specific wildcard, then a route for any name (which alone takes a ClientHello without SNI).
//! Two routes for one name: the older object serves, then `namespace/name`.
//!
//! A route whose backend cannot be had (none with weight, unresolved, no endpoint, every
//! endpoint refusing) resets the connection, as the Gateway API asks: the client sees it
//! refused, never another backend.

use std::{collections::HashMap, sync::Arc, time::Duration};

use tokio::net::TcpStream;
use weir_api::model::{HostMatch, StreamRoute};
use weir_http::server::{Carry, Streams, Transport};

use crate::{
    balance::{weighted, Pool},
    config::ConfigStore,
    metrics::Metrics,
};

/// The index over a snapshot's TLSRoutes, one for each way a listener takes them.
#[derive(Default)]
pub struct Index {
    passthrough: Names,
    terminate: Names,
}

#[derive(Default)]
struct Names {
    exact: HashMap<String, Arc<StreamRoute>>,
    /// `(suffix, route)`, longest suffix first.
    wildcard: Vec<(String, Arc<StreamRoute>)>,
    any: Option<Arc<StreamRoute>>,
}

impl Index {
    /// Indexes `routes`.
    pub fn new(routes: &[Arc<StreamRoute>]) -> Self {
        let mut sorted: Vec<&Arc<StreamRoute>> = routes.iter().collect();
        // Oldest first, so that the first to claim a name keeps it.
        sorted.sort_by(|a, b| a.order.cmp(&b.order));
        let mut index = Index::default();
        for route in sorted {
            let names = if route.terminate {
                &mut index.terminate
            } else {
                &mut index.passthrough
            };
            for host in &route.hosts {
                match host {
                    HostMatch::Exact(h) => {
                        names.exact.entry(h.clone()).or_insert(route.clone());
                    }
                    HostMatch::Wildcard(suffix) => {
                        if !names.wildcard.iter().any(|(s, _)| s == suffix) {
                            names.wildcard.push((suffix.clone(), route.clone()));
                        }
                    }
                    HostMatch::Any => {
                        names.any.get_or_insert(route.clone());
                    }
                }
            }
        }
        for names in [&mut index.passthrough, &mut index.terminate] {
            names
                .wildcard
                .sort_by(|a, b| b.0.len().cmp(&a.0.len()).then(a.0.cmp(&b.0)));
        }
        index
    }

    /// Whether some route passes connections through.
    pub fn passes_through(&self) -> bool {
        let p = &self.passthrough;
        !p.exact.is_empty() || !p.wildcard.is_empty() || p.any.is_some()
    }

    /// Whether some route carries terminated connections.
    pub fn terminates(&self) -> bool {
        let t = &self.terminate;
        !t.exact.is_empty() || !t.wildcard.is_empty() || t.any.is_some()
    }

    /// The route for an SNI name (lowercase; `None`: the ClientHello had none).
    pub fn route(&self, sni: Option<&str>, terminate: bool) -> Option<&Arc<StreamRoute>> {
        let names = if terminate {
            &self.terminate
        } else {
            &self.passthrough
        };
        let Some(sni) = sni else {
            return names.any.as_ref();
        };
        if let Some(route) = names.exact.get(sni) {
            return Some(route);
        }
        names
            .wildcard
            .iter()
            .find(|(suffix, _)| sni.len() > suffix.len() && sni.ends_with(suffix.as_str()))
            .map(|(_, route)| route)
            .or(names.any.as_ref())
    }
}

/// The TLS listener's TLSRoutes, from the configuration being served.
pub struct StreamRouting<R> {
    store: Arc<ConfigStore<R>>,
    connect_timeout: Duration,
    metrics: Metrics,
}

impl<R> StreamRouting<R> {
    /// Routes by `store`'s configuration; a backend must accept within `connect_timeout`.
    pub fn new(store: Arc<ConfigStore<R>>, connect_timeout: Duration, metrics: Metrics) -> Self {
        Self {
            store,
            connect_timeout,
            metrics,
        }
    }
}

impl<R: Send + Sync + 'static> StreamRouting<R> {
    fn carry(&self, sni: Option<&str>, terminate: bool) -> Option<Carry> {
        let active = self.store.load();
        let route = active.router.streams().route(sni, terminate)?.clone();
        let pool = weighted(&route.backends).and_then(|c| active.pools.get(c).cloned());
        let (timeout, metrics) = (self.connect_timeout, self.metrics.clone());
        Some(Box::new(move |client| {
            Box::pin(carry(route, pool, client, timeout, metrics))
        }))
    }
}

impl<R> std::fmt::Debug for StreamRouting<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("StreamRouting")
    }
}

impl<R: Send + Sync + 'static> Streams for StreamRouting<R> {
    fn passes_through(&self) -> bool {
        self.store.load().router.streams().passes_through()
    }

    fn passthrough(&self, sni: Option<&str>) -> Option<Carry> {
        self.carry(sni, false)
    }

    fn terminated(&self, sni: Option<&str>) -> Option<Carry> {
        if !self.store.load().router.streams().terminates() {
            return None;
        }
        self.carry(sni, true)
    }
}

/// Dials an endpoint of `pool` (a second one when the first refuses) and copies bytes both
/// ways until both sides are done; closes the client's connection when there is none.
async fn carry(
    route: Arc<StreamRoute>,
    pool: Option<Arc<Pool>>,
    mut client: Box<dyn Transport>,
    timeout: Duration,
    metrics: Metrics,
) {
    let count = |result: &str| {
        metrics
            .stream_connections
            .with_label_values(&[&route.name, result])
            .inc();
    };
    let Some(pool) = pool.filter(|p| p.cluster.resolved) else {
        count("no_backend");
        client.reset();
        return;
    };
    let mut tried = Vec::new();
    let mut upstream = None;
    while tried.len() < 2 {
        let Ok(endpoint) = pool.pick(&tried, None) else {
            break;
        };
        if tried.contains(&endpoint.addr) {
            break;
        }
        tried.push(endpoint.addr);
        match tokio::time::timeout(timeout, TcpStream::connect(endpoint.addr)).await {
            Ok(Ok(stream)) => {
                pool.record(endpoint, true);
                upstream = Some(stream);
                break;
            }
            Ok(Err(error)) => {
                pool.record(endpoint, false);
                tracing::debug!(route = %route.name, endpoint = %endpoint.addr, %error, "TLSRoute backend refused");
            }
            Err(_) => {
                pool.record(endpoint, false);
                tracing::debug!(route = %route.name, endpoint = %endpoint.addr, "TLSRoute backend did not answer in time");
            }
        }
    }
    let Some(mut upstream) = upstream else {
        count(if tried.is_empty() {
            "no_backend"
        } else {
            "connect_error"
        });
        client.reset();
        return;
    };
    let _ = upstream.set_nodelay(true);
    count("carried");
    let bytes = |direction: &str, n: u64| {
        metrics
            .stream_bytes
            .with_label_values(&[&route.name, direction])
            .inc_by(n);
    };
    match tokio::io::copy_bidirectional(&mut client, &mut upstream).await {
        Ok((received, sent)) => {
            bytes("received", received);
            bytes("sent", sent);
        }
        Err(error) => {
            tracing::debug!(route = %route.name, %error, "TLSRoute connection ended with an error")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use weir_api::model::RouteOrder;

    fn route(name: &str, created: &str, hosts: &[HostMatch], terminate: bool) -> Arc<StreamRoute> {
        Arc::new(StreamRoute {
            name: name.into(),
            hosts: hosts.to_vec(),
            terminate,
            order: RouteOrder {
                created: created.into(),
                object: name.into(),
                rule: 0,
                matcher: 0,
            },
            backends: Vec::new(),
        })
    }

    #[test]
    fn names_are_looked_up_exact_then_wildcard_then_any_and_the_older_route_keeps_a_name() {
        let exact = |h: &str| HostMatch::Exact(h.into());
        let routes = [
            route(
                "newer",
                "2026-02-01T00:00:00Z",
                &[exact("abc.example.com")],
                false,
            ),
            route(
                "older",
                "2026-01-01T00:00:00Z",
                &[exact("abc.example.com")],
                false,
            ),
            route(
                "wild",
                "",
                &[HostMatch::Wildcard(".example.com".into())],
                false,
            ),
            route(
                "deep",
                "",
                &[HostMatch::Wildcard(".b.example.com".into())],
                false,
            ),
            route("ended", "", &[exact("abc.example.com")], true),
        ];
        let index = Index::new(&routes);
        let name =
            |sni: Option<&str>, terminate| index.route(sni, terminate).map(|r| r.name.to_string());
        assert_eq!(
            name(Some("abc.example.com"), false).as_deref(),
            Some("older")
        );
        assert_eq!(name(Some("x.example.com"), false).as_deref(), Some("wild"));
        assert_eq!(
            name(Some("a.b.example.com"), false).as_deref(),
            Some("deep")
        );
        assert_eq!(
            name(Some("example.com"), false),
            None,
            "a wildcard needs a label"
        );
        assert_eq!(name(None, false), None, "no SNI, no route for any name");
        assert_eq!(
            name(Some("abc.example.com"), true).as_deref(),
            Some("ended")
        );
        assert!(index.passes_through() && index.terminates());
        assert!(!Index::new(&[]).passes_through());
    }
}
