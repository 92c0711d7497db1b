//! The gateway's sockets. Its own (`--listen`, `--listen-tls`) serve Ingresses and the Gateway
//! listeners on its home ports (80 and 443 unless told otherwise); a Gateway listener on any
//! other port gets a socket of its own on that port, at `--listen`'s address, bound when the
//! listener appears and closed (after its requests drain) when it goes. A `TCP` listener's
//! socket carries every connection to its TCPRoute.
//!
//! ```text
//!  config versions ──▶ follow ──▶ bind / close ──watch──▶ every worker: serve / stop
//! ```
//!
//! A request is routed among the routes of the port it came to ([`Active::router_at`]).
//! A port that cannot be bound (in use, privileged) is logged, counted in
//! `weir_listener_bind_failures_total`, and tried again every second. A listener naming one
//! of the gateway's own ports, or beyond `--max-listener-ports`, is not served (and logged).
//!
//! [`Active::router_at`]: weir_proxy::config::Active::router_at

use std::{
    collections::{BTreeMap, BTreeSet, HashSet},
    net::{IpAddr, SocketAddr},
    sync::Arc,
};

use anyhow::Context as _;
use tokio::{net::TcpListener, sync::watch};
use weir_http::{
    body::Body,
    metrics::HttpMetrics,
    server::{serve, Peer, ServerSettings, Shutdown},
};
use weir_proxy::{
    config::{ConfigStore, Ports, Speaks},
    metrics::Metrics,
    stream::StreamRouting,
    tls::CertStore,
};

/// A socket for the Gateway listeners on one port of their own.
pub struct Bound {
    id: u64,
    /// The Gateway listener port (and the socket's).
    pub port: u16,
    listener: std::net::TcpListener,
    speaks: Speaks,
    settings: ServerSettings,
    /// Turns true when the socket is closed (its listeners went, or the gateway stops).
    stop: Shutdown,
}

/// The sockets bound for listeners on ports of their own, as the workers see them.
pub type BoundSet = watch::Receiver<Arc<Vec<Arc<Bound>>>>;

/// One of the gateway's own sockets: how it is served, and the Gateway port it serves.
pub type HomeSocket = (std::net::TcpListener, ServerSettings, u16);

/// The gateway's own sockets, each with the Gateway listener port it serves, and its limits.
pub struct Own {
    /// `--listen`, and the Gateway port it serves (`--gateway-http-port`).
    pub plain: (std::net::TcpListener, u16),
    /// `--listen-tls`, and the Gateway port it serves (`--gateway-tls-port`).
    pub tls: Option<(std::net::TcpListener, u16)>,
    /// `--admin`'s port (never a listener's).
    pub admin_port: u16,
    /// `--max-listener-ports`.
    pub max: usize,
}

/// The gateway's own sockets, each with how it is served and its Gateway port, and the
/// [`Binder`] that makes the others: plaintext ones served with `plain`, TLS ones with the
/// certificates of their listeners and their TLSRoutes, TCP ones carrying every connection to
/// their TCPRoute.
pub fn sockets<R: Send + Sync + 'static>(
    own: Own,
    plain: ServerSettings,
    certs: Arc<CertStore>,
    streams: StreamRouting<R>,
    ports: Ports,
    metrics: &Metrics,
) -> anyhow::Result<(Vec<HomeSocket>, Binder)> {
    let streams = Arc::new(streams);
    let base = plain.clone();
    let tcp_streams = streams.clone();
    let tcp = move |port| ServerSettings {
        tcp: true,
        streams: Some(Arc::new(tcp_streams.at(port))),
        ..base.clone()
    };
    let base = plain.clone();
    let tls_settings = move |port| -> anyhow::Result<ServerSettings> {
        let config = certs
            .server_config_at(port)
            .context("building the TLS configuration")?;
        Ok(ServerSettings {
            tls: Some(config),
            streams: Some(Arc::new(streams.at(port))),
            ..base.clone()
        })
    };
    let ip = own.plain.0.local_addr()?.ip();
    let mut reserved = vec![own.plain.0.local_addr()?.port(), own.admin_port];
    let mut home = vec![(own.plain.0, plain.clone(), own.plain.1)];
    if let Some((tls, port)) = own.tls {
        reserved.push(tls.local_addr()?.port());
        home.push((tls, tls_settings(port)?, port));
    }
    let failures = prometheus::IntCounter::new(
        "weir_listener_bind_failures_total",
        "Failed attempts to bind a Gateway listener port (tried again every second)",
    )?;
    metrics.registry().register(Box::new(failures.clone()))?;
    let binder = Binder {
        ip,
        ports,
        plain,
        tls: Box::new(tls_settings),
        tcp: Box::new(tcp),
        failures,
        reserved,
        max: own.max,
    };
    Ok((home, binder))
}

/// How [`follow`] makes sockets: at which address, and how each kind is served.
pub struct Binder {
    /// The address of `--listen`, whose IP the sockets take.
    pub ip: IpAddr,
    /// Which ports are the gateway's own, which Gateways it serves.
    pub ports: Ports,
    /// How a plaintext listener's socket is served.
    pub plain: ServerSettings,
    /// How a TLS one is served, given its port (its certificates and TLSRoutes).
    pub tls: Box<dyn Fn(u16) -> anyhow::Result<ServerSettings> + Send + Sync>,
    /// How a TCP one is served, given its port (its TCPRoute).
    pub tcp: Box<dyn Fn(u16) -> ServerSettings + Send + Sync>,
    /// Counts failed attempts to bind a port.
    pub failures: prometheus::IntCounter,
    /// The gateway's own ports (`--listen`, `--listen-tls`, `--admin`): never a listener's.
    pub reserved: Vec<u16>,
    /// At most this many ports of their own (each costs a socket per worker).
    pub max: usize,
}

/// Binds and closes sockets as `store`'s versions' listeners come and go, until `shutdown`;
/// then closes them all. The workers follow the returned set.
pub fn follow<R: Send + Sync + 'static>(
    store: Arc<ConfigStore<R>>,
    binder: Binder,
    mut shutdown: Shutdown,
) -> (BoundSet, tokio::task::JoinHandle<()>) {
    let (set_tx, set) = watch::channel(Arc::new(Vec::new()));
    let task = tokio::spawn(async move {
        let mut changes = store.changes();
        // Open sockets by port: `(bound, its stop switch)`.
        let mut open: BTreeMap<u16, (Arc<Bound>, watch::Sender<bool>)> = BTreeMap::new();
        let mut next_id = 0;
        // Ports that could not be had, each said once until it can: retried every second.
        let mut failing: BTreeSet<u16> = BTreeSet::new();
        loop {
            // The ports to open: in precedence order, as many as --max-listener-ports allows
            // (a ListenerSet's listeners cannot crowd out their Gateway's own ports).
            let mut wanted: BTreeMap<u16, Speaks> = BTreeMap::new();
            for (port, speaks) in binder.ports.others(&store.load().snapshot) {
                let addr = SocketAddr::new(binder.ip, port);
                if binder.reserved.contains(&port) {
                    if failing.insert(port) {
                        tracing::error!(%addr, "a Gateway listener names one of the gateway's own ports (--listen, --listen-tls, --admin): not served");
                    }
                } else if wanted.len() >= binder.max {
                    if failing.insert(port) {
                        tracing::error!(%addr, max = binder.max, "more Gateway listener ports than --max-listener-ports: not served");
                    }
                } else {
                    wanted.insert(port, speaks);
                }
            }
            let before: Vec<u64> = open.values().map(|(b, _)| b.id).collect();
            open.retain(|port, (bound, stop)| {
                let keep = wanted.get(port) == Some(&bound.speaks);
                if !keep {
                    tracing::info!(port, "closing the socket of a Gateway listener port");
                    let _ = stop.send(true);
                }
                keep
            });
            let mut retry = false;
            for (&port, &speaks) in &wanted {
                if open.contains_key(&port) {
                    continue;
                }
                let addr = SocketAddr::new(binder.ip, port);
                let settings = match speaks {
                    Speaks::Tls => (binder.tls)(port),
                    Speaks::Tcp => Ok((binder.tcp)(port)),
                    Speaks::Http => Ok(binder.plain.clone()),
                };
                let settings = match settings {
                    Ok(settings) => settings,
                    Err(error) => {
                        tracing::error!(%addr, error = %format!("{error:#}"), "cannot serve a Gateway listener port");
                        continue;
                    }
                };
                match bind(addr) {
                    Ok(listener) => {
                        failing.remove(&port);
                        tracing::info!(%addr, ?speaks, "serving a Gateway listener port");
                        let (stop_tx, stop) = watch::channel(false);
                        next_id += 1;
                        let bound = Bound {
                            id: next_id,
                            port,
                            listener,
                            speaks,
                            settings,
                            stop,
                        };
                        open.insert(port, (Arc::new(bound), stop_tx));
                    }
                    Err(error) => {
                        binder.failures.inc();
                        retry = true;
                        if failing.insert(port) {
                            tracing::error!(%addr, %error, "cannot serve a Gateway listener port: its routes get no traffic until it can be bound (tried again every second)");
                        }
                    }
                }
            }
            if open.values().map(|(b, _)| b.id).ne(before) {
                let set: Vec<Arc<Bound>> = open.values().map(|(b, _)| b.clone()).collect();
                set_tx.send_replace(Arc::new(set));
            }
            failing.retain(|port| wanted.contains_key(port) && !open.contains_key(port));
            tokio::select! {
                changed = changes.changed() => if changed.is_err() { break },
                _ = shutdown.wait_for(|stop| *stop) => break,
                _ = tokio::time::sleep(RETRY), if retry => {}
            }
        }
        for (_, (_, stop)) in open {
            let _ = stop.send(true);
        }
    });
    (set, task)
}

/// How soon a port that could not be bound is tried again.
const RETRY: std::time::Duration = std::time::Duration::from_secs(1);

/// A non-blocking socket listening on `addr`, for a runtime to take.
pub fn bind(addr: SocketAddr) -> std::io::Result<std::net::TcpListener> {
    let listener = std::net::TcpListener::bind(addr)?;
    listener.set_nonblocking(true)?;
    Ok(listener)
}

/// Serves the gateway's own sockets (`home`: each with the port its Gateway listeners name)
/// and every socket in `bound` as it comes, on this worker's runtime, until shutdown has
/// drained them all.
pub async fn serve_all<H, F>(
    home: Vec<HomeSocket>,
    mut bound: BoundSet,
    handler: H,
    metrics: HttpMetrics,
    mut shutdown: Shutdown,
) where
    H: Fn(u16, Peer, http::Request<Body>) -> F + Clone + Send + Sync + 'static,
    F: std::future::Future<Output = http::Response<Body>> + Send + 'static,
{
    let mut servers = tokio::task::JoinSet::new();
    let mut spawn =
        |listener: std::net::TcpListener, settings, port: u16, stop| match TcpListener::from_std(
            listener,
        ) {
            Ok(l) => {
                let handler = handler.clone();
                let handler = move |peer, req| handler(port, peer, req);
                servers.spawn(serve(l, handler, settings, metrics.clone(), stop));
            }
            Err(e) => tracing::error!(error = %e, port, "a worker could not listen"),
        };
    for (listener, settings, port) in home {
        spawn(listener, settings, port, shutdown.clone());
    }
    let mut serving: HashSet<u64> = HashSet::new();
    loop {
        let set = bound.borrow_and_update().clone();
        serving.retain(|id| set.iter().any(|b| b.id == *id));
        for b in set.iter() {
            if serving.contains(&b.id) {
                continue;
            }
            match b.listener.try_clone() {
                Ok(listener) => {
                    spawn(listener, b.settings.clone(), b.port, b.stop.clone());
                    serving.insert(b.id);
                }
                // Tried again at the next change of the set.
                Err(e) => tracing::error!(error = %e, port = b.port, "a worker could not listen"),
            }
        }
        tokio::select! {
            changed = bound.changed() => if changed.is_err() { break },
            _ = shutdown.wait_for(|stop| *stop) => break,
        }
    }
    while servers.join_next().await.is_some() {}
}
