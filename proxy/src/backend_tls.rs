//! TLS to backends (a Gateway API `BackendTLSPolicy`, compiled into [`Cluster::tls`]): the
//! gateway's dialer. Connections to a cluster with a policy are TLS, their SNI the policy's
//! hostname, the certificate checked against the policy's CA certificates (or the system's
//! roots) and its hostname or subject alternative names; connections to meshed endpoints are
//! the mesh's mTLS; the rest are plaintext.
//!
//! The policy reaches the HTTP client the way a mesh identity does: as what a connection must
//! prove ([`PeerDialer::expected`]), `tls:` and the cluster's name, so pooled connections are
//! kept apart by it and a plaintext connection is never reused for a TLS cluster. A policy
//! whose CA certificates could not be had trusts nothing: every connection fails, none goes
//! out in plaintext.

use std::{collections::HashMap, net::SocketAddr, sync::Arc};

use arc_swap::ArcSwap;
use rustls::{
    client::{
        danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier},
        verify_server_cert_signed_by_trust_anchor, verify_server_name,
    },
    crypto::WebPkiSupportedAlgorithms,
    pki_types::{pem::PemObject, CertificateDer, ServerName, UnixTime},
    server::ParsedCertificate,
    CertificateError, DigitallySignedStruct, Error, RootCertStore, SignatureScheme,
};
use tokio::net::TcpStream;
use weir_api::model::{BackendTls, Cluster, SubjectAltName};
use weir_http::upstream::{Handshake, PeerDialer};
use weir_mesh::mtls::Dialer;

/// What a connection to a cluster with a policy must prove: this, the cluster's name, `#` and
/// a digest of the policy. Pooled connections are kept by it: a changed policy (another CA, a
/// tighter name) never reuses a connection checked under the old one.
const TLS_PREFIX: &str = "tls:";

/// The gateway's dialer: the mesh's mTLS (when the gateway is in a mesh) and the clusters'
/// BackendTLSPolicies.
pub struct BackendDialer {
    mesh: Option<Arc<Dialer>>,
    /// By cluster name.
    clusters: ArcSwap<HashMap<String, Arc<Prepared>>>,
}

/// One cluster's policy, ready to dial with.
struct Prepared {
    /// `tls:`, the cluster's name, `#` and the policy's digest.
    key: Arc<str>,
    policy: Arc<BackendTls>,
    config: Arc<rustls::ClientConfig>,
    sni: ServerName<'static>,
}

impl BackendDialer {
    /// A dialer for TLS to backends, and for the mesh's mTLS when `mesh` is given.
    pub fn new(mesh: Option<Arc<Dialer>>) -> Self {
        Self {
            mesh,
            clusters: ArcSwap::default(),
        }
    }

    /// Learns the clusters of a new version (before it serves): their policies, and for the
    /// mesh, their meshed endpoints. A policy that did not change keeps its prepared client
    /// configuration.
    pub fn update<'a>(&self, clusters: impl IntoIterator<Item = &'a Cluster> + Clone) {
        if let Some(mesh) = &self.mesh {
            mesh.update(clusters.clone());
        }
        let previous = self.clusters.load();
        let mut next = HashMap::new();
        for cluster in clusters {
            let Some(policy) = &cluster.tls else { continue };
            let prepared = match previous.get(&cluster.name) {
                Some(p) if p.policy == *policy => p.clone(),
                _ => Arc::new(prepare(&cluster.name, policy.clone())),
            };
            next.insert(cluster.name.clone(), prepared);
        }
        self.clusters.store(Arc::new(next));
    }
}

impl PeerDialer for BackendDialer {
    fn expected(&self, cluster: &str, addr: SocketAddr) -> Option<Arc<str>> {
        if let Some(id) = self
            .mesh
            .as_ref()
            .and_then(|m| PeerDialer::expected(&**m, cluster, addr))
        {
            return Some(id);
        }
        let clusters = self.clusters.load();
        if clusters.is_empty() {
            return None;
        }
        clusters.get(cluster).map(|p| p.key.clone())
    }

    fn handshake<'a>(
        &'a self,
        tcp: TcpStream,
        expected: &'a Arc<str>,
        alpn: &'static [u8],
    ) -> Handshake<'a> {
        let Some((cluster, _)) = expected
            .strip_prefix(TLS_PREFIX)
            .and_then(|k| k.rsplit_once('#'))
        else {
            return match &self.mesh {
                Some(mesh) => PeerDialer::handshake(&**mesh, tcp, expected, alpn),
                None => Box::pin(async move {
                    Err(std::io::Error::other(format!(
                        "no mesh to prove {expected}"
                    )))
                }),
            };
        };
        let prepared = self.clusters.load().get(cluster).cloned();
        Box::pin(async move {
            let prepared = prepared.filter(|p| p.key == *expected).ok_or_else(|| {
                std::io::Error::other(format!("the BackendTLSPolicy for {cluster} changed"))
            })?;
            let mut config = (*prepared.config).clone();
            // No ALPN for bytes carried as they are (a TLSRoute).
            config.alpn_protocols = match alpn {
                [] => Vec::new(),
                alpn => vec![alpn.to_vec()],
            };
            let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
            connector.connect(prepared.sni.clone(), tcp).await
        })
    }
}

/// The client configuration for `policy`: its trust, its names.
fn prepare(cluster: &str, policy: Arc<BackendTls>) -> Prepared {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut roots = RootCertStore::empty();
    for pem in &policy.ca_pem {
        for cert in CertificateDer::pem_slice_iter(pem.as_bytes()).flatten() {
            if let Err(e) = roots.add(cert) {
                tracing::warn!(policy = %policy.policy, error = %e, "a CA certificate of a BackendTLSPolicy is not usable");
            }
        }
    }
    if policy.system_roots {
        let native = rustls_native_certs::load_native_certs();
        for e in &native.errors {
            tracing::warn!(error = %e, "reading the system's CA certificates");
        }
        roots.add_parsable_certificates(native.certs);
    }
    if roots.is_empty() {
        tracing::warn!(policy = %policy.policy, cluster, "a BackendTLSPolicy trusts no CA certificate: connections to its Service fail");
    }
    let verifier = Arc::new(Verifier {
        roots: Arc::new(roots),
        hostname: policy.hostname.clone(),
        sans: policy.subject_alt_names.clone(),
        algorithms: provider.signature_verification_algorithms,
    });
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("the default provider supports the default versions")
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth();
    // The hostname is checked as a DNS name by the compile; an IP address could not be.
    let sni = ServerName::try_from(policy.hostname.clone())
        .unwrap_or_else(|_| ServerName::try_from("invalid.invalid").expect("a DNS name"));
    let digest = {
        use std::hash::{Hash, Hasher};
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        policy.hash(&mut hasher);
        hasher.finish()
    };
    Prepared {
        key: Arc::from(format!("{TLS_PREFIX}{cluster}#{digest:016x}")),
        policy,
        config: Arc::new(config),
        sni,
    }
}

/// Checks a backend's chain against the policy's roots, then its name: the hostname, or one
/// of the subject alternative names given instead.
#[derive(Debug)]
struct Verifier {
    roots: Arc<RootCertStore>,
    hostname: String,
    sans: Vec<SubjectAltName>,
    algorithms: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for Verifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _name: &ServerName<'_>,
        _ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, Error> {
        let parsed = ParsedCertificate::try_from(end_entity)?;
        verify_server_cert_signed_by_trust_anchor(
            &parsed,
            &self.roots,
            intermediates,
            now,
            self.algorithms.all,
        )?;
        let dns = |name: &str| {
            ServerName::try_from(name.to_string())
                .ok()
                .is_some_and(|n| verify_server_name(&parsed, &n).is_ok())
        };
        let named = if self.sans.is_empty() {
            dns(&self.hostname)
        } else {
            let (dns_sans, uris) = sans(end_entity);
            self.sans.iter().any(|san| match san {
                // `*.example.com`: a name the certificate carries one label under it (or the
                // same wildcard).
                SubjectAltName::Hostname(h) if h.starts_with("*.") => {
                    let suffix = &h[1..];
                    dns_sans.iter().any(|have| {
                        have == h
                            || have.strip_suffix(suffix).is_some_and(|label| {
                                !label.is_empty() && !label.contains('.') && label != "*"
                            })
                    })
                }
                SubjectAltName::Hostname(h) => dns(h),
                SubjectAltName::Uri(u) => uris.iter().any(|have| have == u),
            })
        };
        if named {
            Ok(ServerCertVerified::assertion())
        } else {
            Err(Error::InvalidCertificate(CertificateError::NotValidForName))
        }
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

/// The DNS (lowercase) and URI subject alternative names of a certificate.
fn sans(cert: &CertificateDer<'_>) -> (Vec<String>, Vec<String>) {
    use x509_parser::prelude::{FromDer, GeneralName, X509Certificate};
    let (mut dns, mut uris) = (Vec::new(), Vec::new());
    let Ok((_, parsed)) = X509Certificate::from_der(cert) else {
        return (dns, uris);
    };
    let Ok(Some(sans)) = parsed.subject_alternative_name() else {
        return (dns, uris);
    };
    for name in &sans.value.general_names {
        match name {
            GeneralName::DNSName(d) => dns.push(d.to_ascii_lowercase()),
            GeneralName::URI(u) => uris.push(u.to_string()),
            _ => {}
        }
    }
    (dns, uris)
}
