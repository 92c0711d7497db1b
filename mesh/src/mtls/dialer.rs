//! The outbound side of mesh mTLS: which endpoints are meshed, and the handshake to them.

use std::{
    collections::HashMap,
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::Duration,
};

use arc_swap::ArcSwap;
use prometheus::IntCounter;
use rustls_pki_types::ServerName;
use tokio::net::TcpStream;
use weir_api::model::Cluster;

use super::{client_config, spiffe_uri};
use weir_http::upstream::{Handshake, PeerDialer};

use crate::{identity::WorkloadIdentity, metrics::IdentityMetrics};

/// Dials meshed endpoints: which endpoints are meshed and which SPIFFE ID each must prove
/// come from the active configuration ([`Dialer::update`]), per cluster: an address another
/// namespace's EndpointSlice also claims is still verified against the identity *this*
/// cluster's objects give it. The handshake presents the current workload certificate. Client configurations are made once per expected identity and ALPN,
/// so TLS session tickets are reused across connections.
pub struct Dialer {
    identity: Arc<WorkloadIdentity>,
    trust_domain: String,
    peers: ArcSwap<Peers>,
    configs: Mutex<ClientConfigs>,
    ok: IntCounter,
    failed: IntCounter,
}

/// Expected SPIFFE IDs by cluster, then endpoint address.
type Peers = HashMap<Arc<str>, HashMap<SocketAddr, Arc<str>>>;

/// Client configurations by expected identity and ALPN.
type ClientConfigs = HashMap<(Arc<str>, &'static [u8]), Arc<rustls::ClientConfig>>;

/// A handshake that takes longer than this has failed.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);

impl Dialer {
    /// A dialer presenting `identity`, for SPIFFE IDs in `trust_domain`.
    pub fn new(
        identity: Arc<WorkloadIdentity>,
        trust_domain: &str,
        metrics: &IdentityMetrics,
    ) -> Self {
        let counter = |result: &str| metrics.handshakes.with_label_values(&["outbound", result]);
        Self {
            identity,
            trust_domain: trust_domain.to_string(),
            peers: ArcSwap::default(),
            configs: Mutex::default(),
            ok: counter("ok"),
            failed: counter("error"),
        }
    }

    /// The workload identity it presents.
    pub fn identity(&self) -> &Arc<WorkloadIdentity> {
        &self.identity
    }

    /// Learns the meshed endpoints of `clusters` and whom each must prove.
    pub fn update<'a>(&self, clusters: impl IntoIterator<Item = &'a Cluster>) {
        let mut peers = Peers::new();
        for cluster in clusters {
            if cluster.identities.is_empty() {
                continue;
            }
            let endpoints = cluster
                .identities
                .iter()
                .map(|(addr, identity)| {
                    (*addr, Arc::from(spiffe_uri(&self.trust_domain, identity)))
                })
                .collect();
            peers.insert(Arc::from(cluster.name.as_str()), endpoints);
        }
        self.peers.store(Arc::new(peers));
    }

    /// The SPIFFE ID the endpoint at `addr` of `cluster` must prove, when it is meshed.
    pub fn expected(&self, cluster: &str, addr: SocketAddr) -> Option<Arc<str>> {
        self.peers.load().get(cluster)?.get(&addr).cloned()
    }

    /// The mTLS handshake over `tcp` with a peer that must prove `expected`, offering `alpn`.
    pub async fn handshake(
        &self,
        tcp: TcpStream,
        expected: &Arc<str>,
        alpn: &'static [u8],
    ) -> std::io::Result<tokio_rustls::client::TlsStream<TcpStream>> {
        let config = self.config(expected, alpn)?;
        // The name is never checked (the SPIFFE ID is), so it is the same for every peer.
        let name = ServerName::try_from("mesh.weir.internal")
            .map_err(|e| std::io::Error::other(e.to_string()))?;
        let connecting = tokio_rustls::TlsConnector::from(config).connect(name, tcp);
        let result = match tokio::time::timeout(HANDSHAKE_TIMEOUT, connecting).await {
            Ok(result) => result,
            Err(_) => Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "mTLS handshake timed out",
            )),
        };
        match &result {
            Ok(_) => self.ok.inc(),
            Err(error) => {
                self.failed.inc();
                tracing::debug!(%expected, %error, "mTLS handshake failed");
            }
        }
        result
    }

    fn config(
        &self,
        expected: &Arc<str>,
        alpn: &'static [u8],
    ) -> std::io::Result<Arc<rustls::ClientConfig>> {
        let mut configs = crate::lock(&self.configs);
        if let Some(config) = configs.get(&(expected.clone(), alpn)) {
            return Ok(config.clone());
        }
        let mut config = client_config(self.identity.clone(), vec![expected.to_string()])
            .map_err(std::io::Error::other)?;
        config.alpn_protocols = vec![alpn.to_vec()];
        let config = Arc::new(config);
        configs.insert((expected.clone(), alpn), config.clone());
        Ok(config)
    }
}

impl PeerDialer for Dialer {
    fn expected(&self, cluster: &str, addr: SocketAddr) -> Option<Arc<str>> {
        Dialer::expected(self, cluster, addr)
    }

    fn handshake<'a>(
        &'a self,
        tcp: TcpStream,
        expected: &'a Arc<str>,
        alpn: &'static [u8],
    ) -> Handshake<'a> {
        Box::pin(Dialer::handshake(self, tcp, expected, alpn))
    }
}

impl std::fmt::Debug for Dialer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Dialer")
            .field("trust_domain", &self.trust_domain)
            .finish_non_exhaustive()
    }
}
