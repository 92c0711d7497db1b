//! The outbound port: the workload's calls. In explicit mode the app sends HTTP here and the
//! `Host` names the Service (`svc`, `svc.ns`, `svc.ns.svc.cluster.local`); in transparent mode
//! iptables redirected the connection and its original destination, a Service's cluster IP and
//! port, names it. Requests go through the engine's pools (balancing, retries, budgets,
//! breakers, timeouts from the TrafficPolicy); a meshed endpoint is dialed with mTLS and must
//! prove the identity the view expects there. Anything that is not HTTP is opaque TCP to an
//! endpoint, over mTLS when it is meshed; a destination that is not a Service passes through
//! untouched.

use std::{
    net::SocketAddr,
    sync::{Arc, LazyLock},
    time::{Duration, Instant},
};

use http::{header, request::Parts, Request, Response};
use tokio::net::TcpStream;
use weir_api::model::websocket_only;
use weir_http::{
    body::Body,
    detect::{self, Protocol as Detected},
    error::ProxyError,
    server::{Http, Peer, Shutdown},
    upstream::Upstream,
};
use weir_mesh::mtls::{Dialer, OPAQUE_ALPN};
use weir_proxy::{
    access_log::{AccessLog, Arrival, Outcome},
    config::{Active, ConfigStore},
    forward::{self, Destination, Forward},
    metrics::Metrics,
    resilience::retry::{Report, Tries},
    trace::{Hop, Tracer},
};

use crate::{
    metrics::MeshMetrics,
    opaque,
    view::{MeshState, Target},
};

/// The protocols a mesh request may switch to: WebSocket alone, since the peer's inbound would
/// splice any other past its AccessPolicy.
pub(crate) static MESH_UPGRADES: LazyLock<Vec<String>> = LazyLock::new(websocket_only);

/// Everything outbound connections share.
pub struct Outbound {
    /// The served configuration.
    pub store: Arc<ConfigStore<MeshState>>,
    /// HTTP connection settings.
    pub http: Http,
    /// Pools to endpoints (mTLS to meshed ones).
    pub upstream: Upstream,
    /// Dials meshed endpoints.
    pub dialer: Arc<Dialer>,
    /// This pod's namespace: short `Host` names are in it.
    pub namespace: String,
    /// How long a silent app is waited for before its connection is treated as opaque TCP.
    pub detect_timeout: Duration,
    /// Giving up connecting to an endpoint.
    pub connect_timeout: Duration,
    /// Engine metrics.
    pub metrics: Metrics,
    /// One JSON line per request.
    pub access_log: AccessLog,
    /// Exports sampled requests' spans (`--otlp-endpoint`); none: `traceparent` passes as
    /// it came.
    pub tracer: Option<Arc<Tracer>>,
    /// Mesh metrics.
    pub mesh: MeshMetrics,
}

impl Outbound {
    /// Serves one connection from the app.
    pub async fn connection(
        self: Arc<Self>,
        stream: TcpStream,
        addr: SocketAddr,
        shutdown: Shutdown,
    ) {
        let original = opaque::original_dst(&stream);
        let target = original.and_then(|dst| self.store.load().role.by_addr(dst).cloned());
        if let (Some(dst), None) = (original, &target) {
            // Not a Service of the mesh: passed through as it was sent.
            self.mesh
                .connections
                .with_label_values(&["outbound", "passthrough"])
                .inc();
            match self.connect(dst).await {
                Ok(upstream) => opaque::splice(stream, upstream).await,
                Err(error) => tracing::debug!(%dst, %error, "passthrough connection failed"),
            }
            return;
        }
        let started = Instant::now();
        let detected = match detect::detect(&stream, self.detect_timeout).await {
            Ok(p) => p,
            Err(_) => return,
        };
        match detected {
            Detected::Closed => {}
            Detected::Http(version) => {
                self.mesh
                    .connections
                    .with_label_values(&["outbound", "http"])
                    .inc();
                let outbound = self.clone();
                let handler = Arc::new(move |peer: Peer, req: Request<Body>| {
                    outbound.clone().request(peer, target.clone(), req)
                });
                let peer = Peer { addr, tls: false };
                if let Err(error) = self
                    .http
                    .serve(stream, version, handler, peer, shutdown)
                    .await
                {
                    tracing::debug!(%addr, %error, "outbound connection ended with an error");
                }
            }
            Detected::Tls | Detected::Opaque => {
                if started.elapsed() >= self.detect_timeout {
                    self.mesh
                        .detect_timeouts
                        .with_label_values(&["outbound"])
                        .inc();
                }
                self.mesh
                    .connections
                    .with_label_values(&["outbound", "opaque"])
                    .inc();
                match target {
                    Some(target) => self.opaque(stream, &target).await,
                    None => tracing::info!(
                        %addr,
                        "a connection that is not HTTP came to the explicit outbound port: no destination to send it to"
                    ),
                }
            }
        }
    }

    async fn connect(&self, addr: SocketAddr) -> std::io::Result<TcpStream> {
        let stream = tokio::time::timeout(self.connect_timeout, TcpStream::connect(addr))
            .await
            .map_err(|_| {
                std::io::Error::new(std::io::ErrorKind::TimedOut, "connect timed out")
            })??;
        let _ = stream.set_nodelay(true);
        Ok(stream)
    }

    /// Opaque TCP to one endpoint of the target (mTLS when it is meshed).
    async fn opaque(&self, stream: TcpStream, target: &Target) {
        let active = self.store.load();
        let Some(endpoint) = active
            .pools
            .get(&*target.cluster)
            .and_then(|pool| pool.pick(&[], None).ok())
            .map(|e| e.addr)
        else {
            tracing::info!(service = %target.service, "no endpoint for an opaque connection");
            return;
        };
        drop(active);
        let tcp = match self.connect(endpoint).await {
            Ok(tcp) => tcp,
            Err(error) => {
                tracing::info!(%endpoint, %error, "opaque connection to an endpoint failed");
                return;
            }
        };
        match self.dialer.expected(&target.cluster, endpoint) {
            // Boxed: the handshake's state is large and only needed until it is done.
            Some(expected) => {
                match Box::pin(self.dialer.handshake(tcp, &expected, OPAQUE_ALPN)).await {
                    Ok(tls) => opaque::splice(stream, tls).await,
                    Err(error) => tracing::info!(%endpoint, %error, "mTLS to an endpoint failed"),
                }
            }
            None => opaque::splice(stream, tcp).await,
        }
    }

    /// One request of the app's: to the Service its original destination or its `Host` names.
    pub(crate) async fn request(
        self: Arc<Self>,
        client: Peer,
        target: Option<Target>,
        req: Request<Body>,
    ) -> Response<Body> {
        let started = Instant::now();
        let (mut parts, body) = req.into_parts();
        // 0. hop-by-hop, before anything is read
        forward::strip_request(&mut parts);
        // 1. destination: the original destination's Service, else the one `Host` names
        let active = self.store.load();
        let host = parts
            .headers
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .or_else(|| parts.uri.authority().map(|a| a.as_str()))
            .unwrap_or_default();
        let target = target.or_else(|| active.role.by_host(host, &self.namespace).cloned());
        let arrival = self
            .access_log
            .enabled()
            .then(|| Arrival::of(&parts, client.addr, host, started));
        // Only when spans are exported: the trace continued, and the span if it is sampled.
        let span = match &self.tracer {
            Some(t) => {
                let (host, path) = (host.to_string(), parts.uri.path().to_string());
                t.continue_trace(&mut parts.headers, Hop::Client, &parts.method, &host, &path)
            }
            None => None,
        };
        let mut outcome = Outcome {
            route: target.as_ref().map(|t| t.service.clone()),
            backend: target.as_ref().map(|t| t.cluster.clone()),
            ..Outcome::default()
        };
        // 2. the forward path
        let result = match &target {
            Some(target) => {
                self.forward(&active, target, client, &mut parts, body, &mut outcome.sent)
                    .await
            }
            None => Err(ProxyError::NoRoute),
        };
        drop(active);
        let response = match result {
            Ok(response) => response,
            Err(e) => {
                self.metrics.proxy_error(e);
                outcome.error = Some(e.reason());
                e.response()
            }
        };
        // 3. observe
        let destination = target.as_ref().map_or("unknown", |t| &*t.service);
        let identity = target
            .as_ref()
            .zip(outcome.sent.endpoint)
            .and_then(|(t, e)| self.dialer.expected(&t.cluster, e));
        let peer = identity.as_deref().unwrap_or("plaintext");
        self.mesh
            .request("outbound", peer, destination, response.status(), started);
        let response = match (&self.tracer, span) {
            (Some(tracer), Some(mut span)) => {
                span.attribute("weir.peer", peer.to_string());
                tracer.finish(span, Some(destination), response)
            }
            _ => response,
        };
        match arrival {
            Some(arrival) => self.access_log.on_end(arrival, outcome, response),
            None => response,
        }
    }

    async fn forward(
        &self,
        active: &Active<MeshState>,
        target: &Target,
        client: Peer,
        parts: &mut Parts,
        body: Body,
        report: &mut Report,
    ) -> Result<Response<Body>, ProxyError> {
        let pool = active
            .pools
            .get(&*target.cluster)
            .filter(|p| p.cluster.resolved)
            .ok_or(ProxyError::BackendNotFound)?;
        let out = Forward {
            upstream: &self.upstream,
            destination: Destination::Cluster {
                pool,
                tries: Tries::default(),
            },
            upgrades: &MESH_UPGRADES,
            filters: &[],
            backend_filters: &[],
            mirrors: Vec::new(),
            client: client.addr.ip(),
        };
        forward::forward(out, parts, body, report).await
    }
}
