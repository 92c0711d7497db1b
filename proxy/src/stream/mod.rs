//! TLSRoutes on the TLS listener: a connection whose SNI names a route is carried to one of the
//! route's backends byte for byte, passed through unopened (`Passthrough`) or after the
//! gateway's own TLS ends (`Terminate`). TCPRoutes alike: on a TCP listener every connection
//! is its route's (a route for any name), on a TLS one as a TLSRoute's.
//!
//! Names are looked up as the HTTP router looks up hosts: the exact name, then the most
//! specific wildcard, then a route for any name (which alone takes a ClientHello without SNI).
//! Two routes for one name: the older object serves, then `namespace/name`. A name the gateway
//! also serves as HTTP stays HTTP's unless the TLSRoute names it more specifically (an exact
//! name over an HTTP route's wildcard): a TLSRoute cannot take a name from the HTTPS routes
//! and Ingresses already serving it ([`crate::router::Router::stream`]).
//!
//! A route whose backend cannot be had (none with weight, unresolved, no endpoint, every
//! endpoint refusing) resets the connection, as the Gateway API asks: the client sees it
//! refused, never another backend. A terminated connection to a Service with a
//! BackendTLSPolicy is re-encrypted with the policy's TLS; a passed-through one to such a
//! Service is refused (the gateway never opened it).

use std::{
    net::SocketAddr,
    sync::Arc,
    time::{Duration, Instant, SystemTime},
};

use weir_http::{
    server::{Carry, Streams},
    upstream::PeerDialer,
};

use crate::{access_log::AccessLog, balance::weighted, config::ConfigStore, metrics::Metrics};

mod carry;
mod index;

use carry::{carry, Trip};
pub use index::{Index, Rank};

/// The TLS listener's TLSRoutes, from the configuration being served.
pub struct StreamRouting<R> {
    store: Arc<ConfigStore<R>>,
    settings: StreamSettings,
    metrics: Metrics,
    log: AccessLog,
    /// The gateway port whose TLSRoutes these are (`None`: every TLSRoute).
    port: Option<u16>,
    /// Speaks a BackendTLSPolicy's TLS to backends of terminated connections.
    dialer: Option<Arc<dyn PeerDialer>>,
    /// The connections this port may carry at once (`max_connections`).
    open: Arc<tokio::sync::Semaphore>,
}

/// How carried connections are dialed and kept.
#[derive(Clone, Copy, Debug)]
pub struct StreamSettings {
    /// A backend must accept within this time.
    pub connect_timeout: Duration,
    /// A connection that carries no byte either way for this long is closed (Envoy's TCP
    /// proxy default: an hour).
    pub idle_timeout: Duration,
    /// At most this many connections carried at once per port; more are closed as they come
    /// (counted `over_limit`), so a flood on one port leaves the others their share.
    pub max_connections: usize,
}

impl<R> StreamRouting<R> {
    /// Routes by `store`'s configuration, logging each carried connection to `log`.
    pub fn new(
        store: Arc<ConfigStore<R>>,
        settings: StreamSettings,
        metrics: Metrics,
        log: AccessLog,
    ) -> Self {
        Self {
            store,
            settings,
            metrics,
            log,
            port: None,
            dialer: None,
            open: Arc::new(tokio::sync::Semaphore::new(settings.max_connections)),
        }
    }

    /// The same routing, re-encrypting terminated connections to Services with a
    /// BackendTLSPolicy through `dialer`.
    pub fn dialing(mut self, dialer: Arc<dyn PeerDialer>) -> Self {
        self.dialer = Some(dialer);
        self
    }

    /// The same routing for the gateway's port `port` alone: the TLSRoutes of its listeners.
    pub fn at(&self, port: u16) -> Self {
        Self {
            store: self.store.clone(),
            settings: self.settings,
            metrics: self.metrics.clone(),
            log: self.log.clone(),
            port: Some(port),
            dialer: self.dialer.clone(),
            open: Arc::new(tokio::sync::Semaphore::new(self.settings.max_connections)),
        }
    }
}

impl<R: Send + Sync + 'static> StreamRouting<R> {
    fn carry(
        &self,
        sni: Option<&str>,
        (terminate, tcp): (bool, bool),
        peer: SocketAddr,
    ) -> Option<Carry> {
        let active = self.store.load();
        let router = match self.port {
            Some(port) => active.router_at(port),
            None => &active.router,
        };
        let route = router.stream(sni, terminate)?.clone();
        let Ok(permit) = self.open.clone().try_acquire_owned() else {
            self.metrics
                .stream_connections
                .with_label_values(&[&route.name, "over_limit"])
                .inc();
            return Some(Box::new(|client| {
                client.reset();
                Box::pin(async {})
            }));
        };
        let cluster = weighted(&route.backends).map(|b| b.cluster.as_str());
        let trip = Trip {
            started: (SystemTime::now(), Instant::now()),
            peer,
            sni: sni.map(str::to_string).unwrap_or_default(),
            pool: cluster.and_then(|c| active.pools.get(c).cloned()),
            cluster: cluster.map(Arc::from),
            route,
            terminate,
            tcp,
            dialer: self.dialer.clone(),
        };
        let (settings, metrics, log) = (self.settings, self.metrics.clone(), self.log.clone());
        let still = self.still(sni, terminate, &trip);
        Some(Box::new(move |client| {
            Box::pin(async move {
                carry(trip, client, settings, metrics, log, still).await;
                drop(permit);
            })
        }))
    }

    /// Ends when a new configuration no longer carries this connection as it was chosen: its
    /// route gone (deleted, detached, its backend's ReferenceGrant revoked) or changed, or its
    /// backend no longer one of the route's. A connection carries on only while it would be
    /// carried so if it came now.
    fn still(&self, sni: Option<&str>, terminate: bool, trip: &Trip) -> Revoked {
        let (store, port) = (self.store.clone(), self.port);
        let sni = sni.map(str::to_string);
        let (name, cluster) = (trip.route.name.clone(), trip.cluster.clone());
        let mut changes = store.changes();
        Box::pin(async move {
            loop {
                if changes.changed().await.is_err() {
                    return std::future::pending().await;
                }
                let active = store.load();
                let router = match port {
                    Some(port) => active.router_at(port),
                    None => &active.router,
                };
                let kept = router.stream(sni.as_deref(), terminate).is_some_and(|r| {
                    r.name == name
                        && r.backends
                            .iter()
                            .any(|b| b.weight > 0 && cluster.as_deref() == Some(b.cluster.as_str()))
                });
                if !kept {
                    return;
                }
            }
        })
    }
}

/// A future that ends when a carried connection's route no longer carries it.
pub(crate) type Revoked = std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>;

impl<R> std::fmt::Debug for StreamRouting<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("StreamRouting")
    }
}

impl<R: Send + Sync + 'static> Streams for StreamRouting<R> {
    fn passes_through(&self) -> bool {
        let active = self.store.load();
        match self.port {
            Some(port) => active.router_at(port).passes_through(),
            None => active.router.passes_through(),
        }
    }

    fn passthrough(&self, sni: Option<&str>, peer: SocketAddr) -> Option<Carry> {
        self.carry(sni, (false, false), peer)
    }

    fn terminated(&self, sni: Option<&str>, peer: SocketAddr) -> Option<Carry> {
        self.carry(sni, (true, false), peer)
    }

    fn tcp(&self, peer: SocketAddr) -> Option<Carry> {
        self.carry(None, (false, true), peer)
    }
}
