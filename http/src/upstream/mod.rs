//! Connections to backends: Weir's own pooled keep-alive HTTP/1.1 client ([`h1`]) and hyper's
//! HTTP/2 (h2c, prior knowledge) client, both dialing through [`connect`], which counts every
//! open connection in `weir_upstream_connections`. With a mesh [`PeerDialer`], a connection to a
//! meshed endpoint is mTLS (HTTP/2 or HTTP/1.1 by ALPN, as the cluster speaks), checked
//! against the identity the endpoint's cluster expects there ([`Upstream::expect`] tags the
//! request); other endpoints stay plaintext. Pooled connections are reused only for requests
//! expecting the identity they proved.

use std::{
    collections::HashMap,
    future::Future,
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::Duration,
};

use futures_util::{future::Either, TryFutureExt};

use http::{Request, Response};
use hyper_util::{
    client::legacy::Client,
    rt::{TokioExecutor, TokioTimer},
};
use weir_api::model::Protocol;

use crate::{
    body::{self, Body, TooLarge},
    error::ProxyError,
    metrics::HttpMetrics,
    H2_ALPN, HTTP1_ALPN,
};

mod connect;
mod failure;
pub mod h1;

pub use connect::{
    Counted, CountingConnector, Expect, Expected, Handshake, Io, MeshConnector, PeerDialer,
};
pub use failure::classify_and_log;

/// The two clients a proxy keeps.
#[derive(Clone)]
pub struct Upstream {
    http1: h1::Client,
    h2c: H2Client,
    mesh: Option<Arc<MeshH2>>,
}

type H2Client = Client<CountingConnector, Body>;

/// HTTP/2 to meshed endpoints: hyper pools by authority alone, so each expected identity gets
/// a client of its own, made when first needed.
struct MeshH2 {
    dialer: Arc<dyn PeerDialer>,
    connector: CountingConnector,
    idle_timeout: Duration,
    clients: Mutex<HashMap<Arc<str>, H2Client>>,
}

/// How backend connections behave.
#[derive(Clone, Debug)]
pub struct UpstreamSettings {
    /// Give up connecting after this long (then 502).
    pub connect_timeout: Duration,
    /// Close pooled connections idle this long.
    pub idle_timeout: Duration,
}

impl Default for UpstreamSettings {
    fn default() -> Self {
        Self {
            connect_timeout: Duration::from_secs(3),
            idle_timeout: Duration::from_secs(60),
        }
    }
}

/// Why a request to a backend failed.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    /// Over HTTP/1.1.
    #[error(transparent)]
    Http1(#[from] h1::Error),
    /// Over HTTP/2.
    #[error(transparent)]
    Http2(#[from] hyper_util::client::legacy::Error),
}

impl Upstream {
    /// Builds both clients, plaintext only.
    pub fn new(settings: &UpstreamSettings, metrics: &HttpMetrics) -> Self {
        Self::build(settings, metrics, None)
    }

    /// Builds both clients; connections to meshed endpoints go through `dialer`.
    pub fn with_mesh(
        settings: &UpstreamSettings,
        metrics: &HttpMetrics,
        dialer: Arc<dyn PeerDialer>,
    ) -> Self {
        Self::build(settings, metrics, Some(dialer))
    }

    fn build(
        settings: &UpstreamSettings,
        metrics: &HttpMetrics,
        dialer: Option<Arc<dyn PeerDialer>>,
    ) -> Self {
        let counting = |alpn| {
            let mesh = MeshConnector::new(settings.connect_timeout, dialer.clone(), alpn);
            CountingConnector::new(mesh, metrics)
        };
        let http1 = h1::Client::new(counting(HTTP1_ALPN), settings.idle_timeout);
        let h2c = h2_client(counting(H2_ALPN), settings.idle_timeout);
        let mesh = dialer.clone().map(|dialer| {
            Arc::new(MeshH2 {
                dialer,
                connector: counting(H2_ALPN),
                idle_timeout: settings.idle_timeout,
                clients: Mutex::default(),
            })
        });
        Self { http1, h2c, mesh }
    }

    /// The identity `endpoint` of `cluster` must prove (nothing when it is not meshed in that
    /// cluster, or there is no mesh), to tag a request bound for it with.
    pub fn expected(&self, cluster: &str, endpoint: SocketAddr) -> Option<Expected> {
        let id = self.mesh.as_ref()?.dialer.expected(cluster, endpoint)?;
        Some(Expected(id))
    }

    /// The HTTP/2 client for a request expecting `expected`.
    fn h2(&self, expected: Option<&Expected>) -> H2Client {
        let (Some(mesh), Some(Expected(id))) = (&self.mesh, expected) else {
            return self.h2c.clone();
        };
        let mut clients = crate::lock(&mesh.clients);
        clients
            .entry(id.clone())
            .or_insert_with(|| {
                let connector = mesh.connector.expecting(Expect::Peer(id.clone()));
                h2_client(connector, mesh.idle_timeout)
            })
            .clone()
    }

    /// Sends `request` (its URI names the endpoint) in `protocol`. The client's own future,
    /// not one around it: that would hold the request a second time, and every request's
    /// future is moved whole once.
    pub fn send(
        &self,
        protocol: Protocol,
        request: Request<Body>,
    ) -> impl Future<Output = Result<Response<Body>, UpstreamError>> + '_ {
        match protocol {
            Protocol::Http1 => Either::Left(self.http1.request(request).err_into()),
            // hyper's response future owns what it needs (the client may go), and is boxed:
            // the per-try future stays the size of the HTTP/1.1 one.
            Protocol::H2c => Either::Right(
                self.h2(request.extensions().get::<Expected>())
                    .request(request)
                    .map_ok(|response| response.map(body::boxed))
                    .err_into(),
            ),
        }
    }
}

fn h2_client(connector: CountingConnector, idle_timeout: Duration) -> H2Client {
    Client::builder(TokioExecutor::new())
        .http2_only(true)
        .pool_idle_timeout(idle_timeout)
        .pool_timer(TokioTimer::new())
        .timer(TokioTimer::new())
        .http2_keep_alive_interval(Duration::from_secs(30))
        .build(connector)
}

/// Maps a client error to what the user sees (and [`classify_and_log`] logs its cause).
pub fn classify(e: &UpstreamError) -> ProxyError {
    let too_large = |mut source: Option<&(dyn std::error::Error + 'static)>| {
        while let Some(err) = source {
            if err.is::<TooLarge>() {
                return true;
            }
            source = err.source();
        }
        false
    };
    // The request body failing on the client's side is the client's error (400, 408), not
    // the backend's: it is answered and counted as such, and never held against the endpoint.
    let client = || ProxyError::from_client_body(e);
    match e {
        UpstreamError::Http1(h1::Error::Connect(_)) => ProxyError::ConnectFailed,
        UpstreamError::Http1(h1::Error::NoAuthority) => ProxyError::BadRequest,
        UpstreamError::Http2(e) if e.is_connect() => ProxyError::ConnectFailed,
        e if too_large(std::error::Error::source(e)) => ProxyError::BodyTooLarge,
        _ => client().unwrap_or(ProxyError::BackendReset),
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::{body::ClientBodyError, error::Side};

    fn body_failed(cause: body::BoxError) -> UpstreamError {
        UpstreamError::Http1(h1::Error::RequestBody(cause))
    }

    #[test]
    fn a_request_body_failing_on_the_clients_side_is_the_clients_error() {
        let malformed = body_failed(Box::new(ClientBodyError::Failed("bad chunk".into())));
        assert_eq!(classify(&malformed), ProxyError::BadRequest);
        let stalled = body_failed(Box::new(ClientBodyError::TimedOut(Duration::from_secs(60))));
        assert_eq!(classify(&stalled), ProxyError::ClientTimeout);
        assert_eq!(classify(&stalled).side(), Side::Downstream);
        assert_eq!(classify(&stalled).status(), 408);
        // A body failing for any other reason is still the exchange breaking.
        assert_eq!(classify(&body_failed("?".into())), ProxyError::BackendReset);
        assert_eq!(
            classify(&UpstreamError::Http1(h1::Error::Closed)),
            ProxyError::BackendReset
        );
    }
}
