//! The inbound port: connections to the workload. The pod's mTLS mode decides what is
//! accepted — `STRICT` mTLS only, `PERMISSIVE` mTLS or plaintext (told apart by the first
//! bytes), `DISABLED` plaintext only (TLS then belongs to the app and passes through) — and
//! its AccessPolicies decide who may do what. HTTP goes to the app with the caller's SPIFFE ID
//! in `x-weir-peer-identity` (a copy the caller sent is removed); anything else is opaque TCP
//! to the app.
//!
//! A redirected connection goes to the address it was sent to — the pod's own address and the
//! port the caller dialed — never to `127.0.0.1`: an app socket bound to loopback only (a debug
//! server, the sidecar's own outbound listener) is not reachable from outside the pod, exactly
//! as without the mesh. The sidecar's own ports are refused outright, whatever the rules say.

use std::{borrow::Cow, net::SocketAddr, sync::Arc, time::Duration, time::Instant};

use http::{header, request::Parts, HeaderMap, HeaderValue, Request, Response, Uri};
use prometheus::IntCounter;
use tokio::net::TcpStream;
use tokio_rustls::TlsAcceptor;
use weir_api::model::TlsMode;
use weir_http::{
    body::Body,
    detect::{self, Protocol as Detected},
    error::ProxyError,
    server::{Http, HttpVersion, Peer, Shutdown},
    upstream::Upstream,
};
use weir_mesh::mtls::{self, OPAQUE_ALPN};
use weir_proxy::{
    access_log::{AccessLog, Arrival, Outcome},
    config::ConfigStore,
    forward::{self, Destination, Forward},
    headers::{self, UnderscoreHeaders},
    metrics::Metrics,
    normalize::{normalize_path, PathPolicy},
    resilience::retry::Report,
    trace::{Hop, Tracer},
};

use crate::{
    access::{self, decide},
    metrics::MeshMetrics,
    opaque,
    outbound::MESH_UPGRADES,
    view::MeshState,
    PEER_IDENTITY,
};

/// Everything inbound connections share.
pub struct Inbound {
    /// The served configuration (the mesh state is its role).
    pub store: Arc<ConfigStore<MeshState>>,
    /// mTLS with the workload certificate.
    pub acceptor: TlsAcceptor,
    /// HTTP connection settings.
    pub http: Http,
    /// Connections to the app.
    pub app: Upstream,
    /// Where the app listens when the connection was not redirected (explicit mode).
    pub app_port: Option<u16>,
    /// The sidecar's own ports (inbound, outbound, admin): a connection redirected from one of
    /// them is refused, so no caller reaches the sidecar's listeners through its inbound.
    pub own_ports: Vec<u16>,
    /// How long a silent client is waited for before it is treated as opaque TCP.
    pub detect_timeout: Duration,
    /// How long a TLS handshake may take.
    pub handshake_timeout: Duration,
    /// The mesh's trust domain: AccessPolicy callers named by namespace or ServiceAccount
    /// must be of it unless the policy names another.
    pub trust_domain: String,
    /// This workload, `namespace/serviceaccount`, as the metrics' destination.
    pub own: String,
    /// Engine metrics.
    pub metrics: Metrics,
    /// One JSON line per request.
    pub access_log: AccessLog,
    /// Exports sampled requests' spans (`--otlp-endpoint`); none: `traceparent` passes as
    /// it came.
    pub tracer: Option<Arc<Tracer>>,
    /// Mesh metrics.
    pub mesh: MeshMetrics,
    /// Inbound handshakes that passed and failed.
    pub handshakes: (IntCounter, IntCounter),
    /// What paths the app may read differently become before AccessPolicy paths are matched.
    pub paths: PathPolicy,
}

impl Inbound {
    /// Serves one connection.
    pub async fn connection(
        self: Arc<Self>,
        stream: TcpStream,
        addr: SocketAddr,
        shutdown: Shutdown,
    ) {
        let Some(app) = self.destination(&stream, addr) else {
            return;
        };
        let mode = self.store.load().role.inbound.mode;
        // Under STRICT nothing but a ClientHello is accepted, so a slow one is waited for as
        // long as a handshake may take; the short detection timeout is for the other modes,
        // where a silent client may speak a server-speaks-first protocol.
        let wait = match mode {
            TlsMode::Strict => self.handshake_timeout,
            _ => self.detect_timeout,
        };
        let started = Instant::now();
        let detected = match detect::detect(&stream, wait).await {
            Ok(p) => p,
            Err(_) => return,
        };
        let silent = detected == Detected::Opaque && started.elapsed() >= wait;
        if silent && mode != TlsMode::Strict {
            self.mesh
                .detect_timeouts
                .with_label_values(&["inbound"])
                .inc();
        }
        let peer = Peer { addr, tls: false };
        match (detected, mode) {
            (Detected::Closed, _) => {}
            (Detected::Tls, TlsMode::Strict | TlsMode::Permissive) => {
                self.mtls(stream, peer, app, shutdown).await
            }
            (_, TlsMode::Strict) if silent => {
                self.mesh.refused.with_label_values(&["silent"]).inc();
                tracing::info!(%addr, "connection sent nothing within the handshake timeout: closed");
            }
            (_, TlsMode::Strict) => {
                self.mesh.refused.with_label_values(&["plaintext"]).inc();
                tracing::info!(%addr, "plaintext connection refused: the mTLS mode is STRICT");
            }
            (Detected::Http(version), _) => {
                self.mesh
                    .connections
                    .with_label_values(&["inbound", "http"])
                    .inc();
                self.serve_http(stream, version, peer, None, app, shutdown)
                    .await
            }
            // Opaque plaintext, or TLS the app terminates itself (DISABLED).
            (_, _) => {
                self.mesh
                    .connections
                    .with_label_values(&["inbound", "opaque"])
                    .inc();
                self.opaque(stream, None, app).await
            }
        }
    }

    /// Where the connection goes: the original destination of a redirected connection (the
    /// pod's address and the dialed port), or the app's port on loopback in explicit mode.
    /// `None` (and the connection is closed) for one of the sidecar's own ports, a loopback
    /// destination, or no destination at all.
    fn destination(&self, stream: &TcpStream, addr: SocketAddr) -> Option<SocketAddr> {
        let Some(original) = opaque::original_dst(stream) else {
            let Some(port) = self.app_port else {
                tracing::warn!(%addr, "inbound connection with no original destination and no --app-port: closed");
                return None;
            };
            return Some(SocketAddr::from(([127, 0, 0, 1], port)));
        };
        if self.own_ports.contains(&original.port()) || original.ip().is_loopback() {
            self.mesh.refused.with_label_values(&["own-port"]).inc();
            tracing::info!(%addr, destination = %original, "inbound connection to the sidecar's own port or to loopback refused");
            return None;
        }
        Some(original)
    }

    async fn mtls(
        self: Arc<Self>,
        stream: TcpStream,
        peer: Peer,
        app: SocketAddr,
        shutdown: Shutdown,
    ) {
        // Boxed: the handshake's state is large and short-lived; inline, it would size the
        // future every idle connection keeps.
        let accepting = Box::pin(tokio::time::timeout(
            self.handshake_timeout,
            self.acceptor.accept(stream),
        ));
        let tls = match accepting.await {
            Ok(Ok(tls)) => {
                self.handshakes.0.inc();
                tls
            }
            Ok(Err(error)) => {
                self.handshakes.1.inc();
                tracing::info!(addr = %peer.addr, %error, "inbound mTLS handshake failed");
                return;
            }
            Err(_) => {
                self.handshakes.1.inc();
                return;
            }
        };
        self.mesh
            .connections
            .with_label_values(&["inbound", "mtls"])
            .inc();
        let (_, session) = tls.get_ref();
        let caller: Option<Arc<str>> =
            mtls::peer_identity(session.peer_certificates()).map(Arc::from);
        let peer = Peer { tls: true, ..peer };
        match session.alpn_protocol() {
            Some(OPAQUE_ALPN) => self.opaque(tls, caller, app).await,
            Some(b"h2") => {
                self.serve_http(tls, HttpVersion::Http2, peer, caller, app, shutdown)
                    .await
            }
            _ => {
                self.serve_http(tls, HttpVersion::Http1, peer, caller, app, shutdown)
                    .await
            }
        }
    }

    async fn serve_http<I>(
        self: Arc<Self>,
        io: I,
        version: HttpVersion,
        peer: Peer,
        caller: Option<Arc<str>>,
        app: SocketAddr,
        shutdown: Shutdown,
    ) where
        I: weir_http::server::Transport,
    {
        let inbound = self.clone();
        let handler = Arc::new(move |peer: Peer, req: Request<Body>| {
            inbound.clone().request(peer, caller.clone(), app, req)
        });
        if let Err(error) = self.http.serve(io, version, handler, peer, shutdown).await {
            tracing::debug!(addr = %peer.addr, %error, "inbound connection ended with an error");
        }
    }

    async fn opaque<I>(&self, io: I, caller: Option<Arc<str>>, app: SocketAddr)
    where
        I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
    {
        let active = self.store.load();
        let request = access::Request {
            peer: caller.as_deref(),
            http: None,
            port: app.port(),
            trust_domain: &self.trust_domain,
        };
        if let Err(policy) = decide(&active.role.inbound, &request) {
            self.denied(caller.as_deref(), policy, "TCP", "-");
            return;
        }
        match TcpStream::connect(app).await {
            Ok(conn) => opaque::splice(io, conn).await,
            Err(error) => tracing::info!(%app, %error, "the app refused an opaque connection"),
        }
    }

    fn denied(&self, caller: Option<&str>, policy: &str, method: &str, path: &str) {
        let peer = caller.unwrap_or("plaintext");
        self.mesh.denied.with_label_values(&[peer, policy]).inc();
        tracing::info!(peer, policy, method, path, "access denied");
    }

    /// One request to the workload: hop-by-hop out, the caller's identity vouched for, the
    /// path normalised, AccessPolicy, then the forward path to the app.
    pub(crate) async fn request(
        self: Arc<Self>,
        client: Peer,
        caller: Option<Arc<str>>,
        app: SocketAddr,
        req: Request<Body>,
    ) -> Response<Body> {
        let started = Instant::now();
        let (mut parts, body) = req.into_parts();
        // 0. hop-by-hop, before anything is read
        forward::strip_request(&mut parts);
        let mut arrival = self
            .access_log
            .enabled()
            .then(|| Arrival::of(&parts, client.addr, host_of(&parts), started));
        // Only when spans are exported: the trace continued, and the span if it is sampled.
        let span = self.tracer.as_ref().and_then(|t| {
            let (host, path) = (host_of(&parts).to_string(), parts.uri.path().to_string());
            t.continue_trace(&mut parts.headers, Hop::Server, &parts.method, &host, &path)
        });
        let mut outcome = Outcome::default();
        // The path as the app will read it: what AccessPolicy matches and the log shows.
        // A copy only when normalising changed it.
        let normalized = normalize_path(parts.uri.path(), self.paths).map(|path| match path {
            Cow::Owned(changed) => Some(changed),
            Cow::Borrowed(_) => None,
        });
        if let (Some(arrival), Ok(Some(changed))) = (arrival.as_mut(), &normalized) {
            arrival.set_path(changed);
        }
        let admitted = normalized
            .map_err(|_| ProxyError::BadRequest)
            .and_then(|changed| self.admit(caller.as_deref(), app, changed, &mut parts));
        let result = match admitted {
            Ok(()) => {
                self.forward(client, app, &mut parts, body, &mut outcome.sent)
                    .await
            }
            Err(e) => Err(e),
        };
        let response = match result {
            Ok(response) => response,
            Err(e) => {
                self.metrics.proxy_error(e);
                outcome.error = Some(e.reason());
                e.response()
            }
        };
        let peer = caller.as_deref().unwrap_or("plaintext");
        self.mesh
            .request("inbound", peer, &self.own, response.status(), started);
        let response = match (&self.tracer, span) {
            (Some(tracer), Some(mut span)) => {
                span.attribute("weir.peer", peer.to_string());
                tracer.finish(span, None, response)
            }
            _ => response,
        };
        match arrival {
            Some(arrival) => self.access_log.on_end(arrival, outcome, response),
            None => response,
        }
    }

    /// Vouches for the caller and applies AccessPolicy to the request's path as normalised
    /// (`changed`, when normalising changed it), which the request then carries on in origin
    /// form.
    fn admit(
        &self,
        caller: Option<&str>,
        app: SocketAddr,
        changed: Option<String>,
        parts: &mut Parts,
    ) -> Result<(), ProxyError> {
        // 1. the caller's identity, as its certificate proved it
        vouch(&mut parts.headers, caller);
        // 2. AccessPolicy on the path as the app will read it
        let path = changed.as_deref().unwrap_or(parts.uri.path());
        let active = self.store.load();
        let request = access::Request {
            peer: caller,
            http: Some((parts.method.as_str(), path)),
            port: app.port(),
            trust_domain: &self.trust_domain,
        };
        if let Err(policy) = decide(&active.role.inbound, &request) {
            self.denied(caller, policy, parts.method.as_str(), path);
            return Err(ProxyError::AccessDenied);
        }
        drop(active);
        // The request as it was when it already was a path (and query) alone, as it left
        // the caller's sidecar: no copy.
        if changed.is_none() && parts.uri.scheme().is_none() && parts.uri.authority().is_none() {
            return Ok(());
        }
        let path = changed.unwrap_or_else(|| parts.uri.path().to_string());
        let path_and_query = match parts.uri.query() {
            Some(q) => format!("{path}?{q}"),
            None => path,
        };
        parts.uri = Uri::try_from(path_and_query).map_err(|_| ProxyError::BadRequest)?;
        Ok(())
    }

    async fn forward(
        &self,
        client: Peer,
        app: SocketAddr,
        parts: &mut Parts,
        body: Body,
        report: &mut Report,
    ) -> Result<Response<Body>, ProxyError> {
        // 3. the forward path, to the app (WebSocket only: after a switch, nothing on the
        // connection meets AccessPolicy again)
        let out = Forward {
            upstream: &self.app,
            destination: Destination::Local(app),
            upgrades: &MESH_UPGRADES,
            filters: &[],
            backend_filters: &[],
            mirrors: Vec::new(),
            client: client.addr.ip(),
        };
        forward::forward(out, parts, body, report).await
    }
}

/// Puts the caller's identity on a request for the app, after hop-by-hop fields went (stage 0,
/// so `Connection` cannot name the identity away): every copy the caller sent goes, in any
/// spelling the app may read as it (`x_weir_peer_identity`), then the one its certificate
/// proved is set.
fn vouch(headers: &mut HeaderMap, caller: Option<&str>) {
    headers::drop_lookalikes(headers, UnderscoreHeaders::Keep, |n| n == PEER_IDENTITY);
    headers.remove(PEER_IDENTITY);
    if let Some(id) = caller.and_then(|c| HeaderValue::from_str(c).ok()) {
        headers.insert(PEER_IDENTITY, id);
    }
}

/// The host a request names (`Host`, else its authority).
fn host_of(parts: &Parts) -> &str {
    let host = parts
        .headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok());
    host.or_else(|| parts.uri.authority().map(|a| a.as_str()))
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    const CALLER: &str = "spiffe://cluster.local/ns/shop/sa/frontend";

    #[test]
    fn the_identity_cannot_be_forged_shadowed_or_named_away() {
        let mut h = HeaderMap::new();
        h.insert(
            "connection",
            HeaderValue::from_static("x-weir-peer-identity"),
        );
        h.insert(PEER_IDENTITY, HeaderValue::from_static("spiffe://forged"));
        h.insert(
            "x_weir_peer_identity",
            HeaderValue::from_static("spiffe://forged"),
        );
        h.insert("x_app_flag", HeaderValue::from_static("1"));
        headers::strip_hop_by_hop(&mut h, false);
        vouch(&mut h, Some(CALLER));
        assert_eq!(
            h.get_all(PEER_IDENTITY).iter().collect::<Vec<_>>(),
            [CALLER]
        );
        assert!(h.get("x_weir_peer_identity").is_none() && h.get("connection").is_none());
        assert_eq!(h.get("x_app_flag").unwrap(), "1", "other underscores pass");

        let mut plaintext = HeaderMap::new();
        plaintext.insert(PEER_IDENTITY, HeaderValue::from_static("spiffe://forged"));
        vouch(&mut plaintext, None);
        assert!(plaintext.is_empty());
    }
}
