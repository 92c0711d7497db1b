//! Mesh mTLS from a [`WorkloadIdentity`]: both sides present the current workload certificate
//! and check the other's chain against the current trust bundle. Identities are SPIFFE IDs
//! (the only URI SAN of a workload certificate), never DNS names:
//! - inbound ([`server_config`]) requires a client certificate and lets the caller read its
//!   SPIFFE ID ([`peer_identity`]) for access policy;
//! - outbound ([`client_config`]) accepts a server only if its SPIFFE ID is one the
//!   configuration expects for that service.
//!
//! The certificate and the bundle are read at each handshake, so a renewal or a new root
//! applies to the next connection without touching open ones.

use std::{
    collections::HashMap,
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::Duration,
};

use arc_swap::ArcSwap;
use prometheus::IntCounter;
use tokio::net::TcpStream;
use weir_api::model::Cluster;

use rustls::{
    client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier},
    client::ResolvesClientCert,
    crypto::{CryptoProvider, WebPkiSupportedAlgorithms},
    server::{
        danger::{ClientCertVerified, ClientCertVerifier},
        ClientHello, ParsedCertificate, ResolvesServerCert, WebPkiClientVerifier,
    },
    sign::CertifiedKey,
    CertificateError, DigitallySignedStruct, DistinguishedName, Error, RootCertStore,
    SignatureScheme,
};
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};

use crate::{
    identity::{Issued, WorkloadIdentity},
    metrics::Metrics,
};

/// ALPN of an mTLS connection that carries opaque TCP (not HTTP) to the peer's workload.
pub const OPAQUE_ALPN: &[u8] = b"weir-opaque";
/// ALPN of HTTP/2 and HTTP/1.1 over mesh mTLS.
pub const H2_ALPN: &[u8] = b"h2";
/// See [`H2_ALPN`].
pub const HTTP1_ALPN: &[u8] = b"http/1.1";

/// `spiffe://TRUST_DOMAIN/ns/NS/sa/SA` for a `NS/SA` identity.
pub fn spiffe_uri(trust_domain: &str, namespace_account: &str) -> String {
    let (namespace, account) = namespace_account
        .split_once('/')
        .unwrap_or(("default", namespace_account));
    format!("spiffe://{trust_domain}/ns/{namespace}/sa/{account}")
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// The SPIFFE ID of a workload certificate: its URI SAN starting with `spiffe://`.
pub fn spiffe_id(cert: &CertificateDer<'_>) -> Option<String> {
    let (_, cert) = x509_parser::parse_x509_certificate(cert).ok()?;
    let san = cert.subject_alternative_name().ok()??;
    san.value.general_names.iter().find_map(|name| match name {
        x509_parser::extensions::GeneralName::URI(uri) if uri.starts_with("spiffe://") => {
            Some(uri.to_string())
        }
        _ => None,
    })
}

/// The SPIFFE ID the peer of an mTLS connection proved.
pub fn peer_identity(peer_certificates: Option<&[CertificateDer<'_>]>) -> Option<String> {
    spiffe_id(peer_certificates?.first()?)
}

/// Serves (and presents) the current workload certificate.
#[derive(Debug)]
struct Current(Arc<WorkloadIdentity>);

impl ResolvesServerCert for Current {
    fn resolve(&self, _: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.0.current().map(|i| i.certified.clone())
    }
}

impl ResolvesClientCert for Current {
    fn resolve(&self, _: &[&[u8]], _: &[SignatureScheme]) -> Option<Arc<CertifiedKey>> {
        self.0.current().map(|i| i.certified.clone())
    }

    fn has_certs(&self) -> bool {
        self.0.ready()
    }
}

fn roots(issued: &Issued) -> RootCertStore {
    let mut roots = RootCertStore::empty();
    for root in &issued.bundle {
        // A root that does not parse is simply not trusted.
        let _ = roots.add(root.clone());
    }
    roots
}

/// Checks client certificates against the current bundle; the WebPKI verifier is rebuilt only
/// when the certificate (and with it the bundle) changes.
#[derive(Debug)]
struct ClientVerifier {
    identity: Arc<WorkloadIdentity>,
    algorithms: WebPkiSupportedAlgorithms,
    cached: Mutex<Option<Cached>>,
}

/// A verifier for the bundle of one issued certificate.
type Cached = (Arc<Issued>, Arc<dyn ClientCertVerifier>);

impl ClientVerifier {
    fn current(&self) -> Result<Arc<dyn ClientCertVerifier>, Error> {
        let issued = self
            .identity
            .current()
            .ok_or_else(|| Error::General("no workload certificate yet".into()))?;
        let mut cached = self.cached.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((for_issued, verifier)) = cached.as_ref() {
            if Arc::ptr_eq(for_issued, &issued) {
                return Ok(verifier.clone());
            }
        }
        let verifier =
            WebPkiClientVerifier::builder_with_provider(roots(&issued).into(), provider())
                .build()
                .map_err(|e| Error::General(format!("trust bundle: {e}")))?;
        *cached = Some((issued, verifier.clone()));
        Ok(verifier)
    }
}

impl ClientCertVerifier for ClientVerifier {
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, Error> {
        self.current()?
            .verify_client_cert(end_entity, intermediates, now)?;
        if spiffe_id(end_entity).is_none() {
            return Err(refused("the certificate carries no SPIFFE ID"));
        }
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        self.current()?.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        self.current()?.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

/// Why a certificate that verified is still not accepted.
#[derive(Debug)]
struct Refused(String);

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Refused {}

fn refused(message: impl Into<String>) -> Error {
    Error::InvalidCertificate(CertificateError::Other(rustls::OtherError(Arc::new(
        Refused(message.into()),
    ))))
}

/// Checks a server's chain against the current bundle and its SPIFFE ID against `expected`.
#[derive(Debug)]
struct ServerVerifier {
    identity: Arc<WorkloadIdentity>,
    expected: Vec<String>,
    algorithms: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for ServerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _name: &ServerName<'_>,
        _ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, Error> {
        let issued = self
            .identity
            .current()
            .ok_or_else(|| Error::General("no workload certificate yet".into()))?;
        let parsed = ParsedCertificate::try_from(end_entity)?;
        rustls::client::verify_server_cert_signed_by_trust_anchor(
            &parsed,
            &roots(&issued),
            intermediates,
            now,
            self.algorithms.all,
        )?;
        let id =
            spiffe_id(end_entity).ok_or_else(|| refused("the certificate carries no SPIFFE ID"))?;
        if !self.expected.contains(&id) {
            let message = format!(
                "the server is {id}, not one of {}",
                self.expected.join(", ")
            );
            return Err(refused(message));
        }
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

/// Inbound mTLS: presents the workload certificate and requires a client certificate from
/// the same trust bundle, with a SPIFFE ID.
pub fn server_config(identity: Arc<WorkloadIdentity>) -> Result<rustls::ServerConfig, Error> {
    let provider = provider();
    let verifier = Arc::new(ClientVerifier {
        identity: identity.clone(),
        algorithms: provider.signature_verification_algorithms,
        cached: Mutex::default(),
    });
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_client_cert_verifier(verifier)
        .with_cert_resolver(Arc::new(Current(identity)));
    config.alpn_protocols = vec![H2_ALPN.to_vec(), HTTP1_ALPN.to_vec(), OPAQUE_ALPN.to_vec()];
    Ok(config)
}

/// Outbound mTLS to a service whose endpoints must prove one of the `expected` SPIFFE IDs.
pub fn client_config(
    identity: Arc<WorkloadIdentity>,
    expected: Vec<String>,
) -> Result<rustls::ClientConfig, Error> {
    let provider = provider();
    let verifier = Arc::new(ServerVerifier {
        identity: identity.clone(),
        expected,
        algorithms: provider.signature_verification_algorithms,
    });
    Ok(rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_client_cert_resolver(Arc::new(Current(identity))))
}

/// Dials meshed endpoints: which addresses are meshed and which SPIFFE ID each must prove
/// come from the active configuration ([`Dialer::update`]); the handshake presents the current
/// workload certificate. Client configurations are made once per expected identity and ALPN,
/// so TLS session tickets are reused across connections.
pub struct Dialer {
    identity: Arc<WorkloadIdentity>,
    trust_domain: String,
    peers: ArcSwap<HashMap<SocketAddr, Arc<str>>>,
    configs: Mutex<ClientConfigs>,
    ok: IntCounter,
    failed: IntCounter,
}

/// Client configurations by expected identity and ALPN.
type ClientConfigs = HashMap<(Arc<str>, &'static [u8]), Arc<rustls::ClientConfig>>;

/// A handshake that takes longer than this has failed.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);

impl Dialer {
    /// A dialer presenting `identity`, for SPIFFE IDs in `trust_domain`.
    pub fn new(identity: Arc<WorkloadIdentity>, trust_domain: &str, metrics: &Metrics) -> Self {
        let counter = |result: &str| {
            metrics
                .mesh_handshakes
                .with_label_values(&["outbound", result])
        };
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
        let mut peers = HashMap::new();
        for cluster in clusters {
            for (addr, identity) in &cluster.identities {
                peers.insert(*addr, Arc::from(spiffe_uri(&self.trust_domain, identity)));
            }
        }
        self.peers.store(Arc::new(peers));
    }

    /// The SPIFFE ID the endpoint at `addr` must prove, when it is meshed.
    pub fn expected(&self, addr: SocketAddr) -> Option<Arc<str>> {
        self.peers.load().get(&addr).cloned()
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

impl std::fmt::Debug for Dialer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Dialer")
            .field("trust_domain", &self.trust_domain)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, SystemTime};

    use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair, SanType};
    use rustls_pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    struct Ca {
        issuer: Issuer<'static, KeyPair>,
        root: CertificateDer<'static>,
    }

    impl Ca {
        fn new() -> Self {
            let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
            let mut params = CertificateParams::default();
            params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
            let root = params.self_signed(&key).unwrap().der().clone();
            Self {
                issuer: Issuer::new(params, key),
                root,
            }
        }

        /// A workload identity holding a certificate for `spiffe_id`, trusting `bundle`.
        fn identity(&self, spiffe_id: &str, bundle: &[&Ca]) -> Arc<WorkloadIdentity> {
            let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
            let mut params = CertificateParams::default();
            params.subject_alt_names = vec![SanType::URI(spiffe_id.try_into().unwrap())];
            let cert = params.signed_by(&key, &self.issuer).unwrap();
            let private = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
            let certified =
                CertifiedKey::from_der(vec![cert.der().clone()], private, &provider()).unwrap();
            let identity = Arc::new(WorkloadIdentity::default());
            identity.install(Arc::new(Issued {
                certified: Arc::new(certified),
                spiffe_id: spiffe_id.into(),
                issued: SystemTime::now(),
                not_after: SystemTime::now() + Duration::from_secs(3600),
                bundle: bundle.iter().map(|ca| ca.root.clone()).collect(),
            }));
            identity
        }
    }

    const FRONTEND: &str = "spiffe://cluster.local/ns/shop/sa/frontend";
    const BACKEND: &str = "spiffe://cluster.local/ns/shop/sa/backend";

    /// One handshake and one byte each way; the identity the server saw, or the error.
    async fn handshake(
        server: Arc<WorkloadIdentity>,
        client: Arc<WorkloadIdentity>,
        expected: &[&str],
    ) -> Result<Option<String>, String> {
        let (a, b) = tokio::io::duplex(64 << 10);
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(server_config(server).unwrap()));
        let expected = expected.iter().map(|e| e.to_string()).collect();
        let connector =
            tokio_rustls::TlsConnector::from(Arc::new(client_config(client, expected).unwrap()));
        let serving = tokio::spawn(async move {
            let mut tls = acceptor.accept(a).await.map_err(|e| e.to_string())?;
            let peer = peer_identity(tls.get_ref().1.peer_certificates());
            let mut byte = [0u8; 1];
            tls.read_exact(&mut byte).await.map_err(|e| e.to_string())?;
            tls.write_all(&byte).await.map_err(|e| e.to_string())?;
            tls.flush().await.map_err(|e| e.to_string())?;
            Ok::<_, String>(peer)
        });
        let name = ServerName::try_from("backend.shop.svc").unwrap();
        let dialed = async {
            let mut tls = connector
                .connect(name, b)
                .await
                .map_err(|e| e.to_string())?;
            tls.write_all(b"x").await.map_err(|e| e.to_string())?;
            let mut byte = [0u8; 1];
            tls.read_exact(&mut byte).await.map_err(|e| e.to_string())?;
            Ok::<_, String>(())
        }
        .await;
        let served = serving.await.unwrap();
        dialed?;
        served
    }

    #[tokio::test]
    async fn both_sides_prove_their_spiffe_ids_and_a_wrong_one_is_refused() {
        let ca = Ca::new();
        let backend = ca.identity(BACKEND, &[&ca]);
        let frontend = ca.identity(FRONTEND, &[&ca]);
        let seen = handshake(backend.clone(), frontend.clone(), &[BACKEND]).await;
        assert_eq!(seen.unwrap().as_deref(), Some(FRONTEND));

        // The client expects someone else behind this service: refused.
        let refused = handshake(backend.clone(), frontend.clone(), &[FRONTEND])
            .await
            .unwrap_err();
        assert!(
            refused.contains(&format!("the server is {BACKEND}")),
            "{refused}"
        );

        // A client from another trust domain's CA: the server refuses it.
        let other = Ca::new();
        let stranger = other.identity(FRONTEND, &[&ca]);
        assert!(handshake(backend.clone(), stranger, &[BACKEND])
            .await
            .is_err());

        // A renewal under a new root, trusted through a two-root bundle: the next handshake
        // uses it.
        let new_root = Ca::new();
        let renewed = new_root.identity(BACKEND, &[&ca, &new_root]);
        backend.install(renewed.current().unwrap());
        let old_client = ca.identity(FRONTEND, &[&ca, &new_root]);
        let seen = handshake(backend, old_client, &[BACKEND]).await;
        assert_eq!(seen.unwrap().as_deref(), Some(FRONTEND));
    }
}
