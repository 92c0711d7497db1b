//! TLS termination: certificates from Secrets, chosen per handshake by SNI (exact name, then
//! the most specific wildcard, then the default), swapped on reload without a restart.
//!
//! A gateway that tells its ports apart ([`Ports`]) offers on each port only the certificates
//! of the listeners served there (and the Ingresses' on its TLS home port): a Gateway listener
//! on a port of its own cannot present another Gateway's certificate for its name, and a
//! certificate no served listener uses is not loaded at all (its key is not held).
//!
//! Each Secret is parsed once per change. A Secret whose new content is bad (not PEM, key not
//! matching the certificate, expired) is refused with an error naming it, and the certificate
//! it had before keeps serving; the rest of the configuration is applied as usual.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
};

use arc_swap::ArcSwap;
use rustls::{
    crypto::{aws_lc_rs, CryptoProvider, WebPkiSupportedAlgorithms},
    server::{ClientHello, ResolvesServerCert, ServerSessionMemoryCache},
    sign::CertifiedKey,
    ServerConfig,
};
use rustls_pki_types::{pem::PemObject, CertificateDer, PrivateKeyDer};
use serde::Serialize;
use weir_api::model::{FrontendValidation, HostMatch, SecretBytes, TlsCertificate};

use clients::{ClientAuth, PortSessions, PortTickets};

use crate::{config::Ports, metrics::Metrics};

/// Resumable sessions kept per process (stateful resumption for TLS 1.2 clients without
/// ticket support; tickets need no server state).
const SESSION_CACHE: usize = 16 * 1024;

/// The certificates being served and the last good one of each Secret.
pub struct CertStore {
    serving: ArcSwap<Serving>,
    /// Client certificates asked for, by port (`spec.tls.frontend`).
    clients: ArcSwap<HashMap<u16, Arc<ClientAuth>>>,
    ports: Option<Ports>,
    loaded: Mutex<HashMap<String, Loaded>>,
    provider: Arc<CryptoProvider>,
    metrics: Metrics,
}

/// The SNI indexes: over every certificate, and per port.
#[derive(Default)]
struct Serving {
    all: Certs,
    by_port: HashMap<u16, Certs>,
}

/// The SNI index.
#[derive(Default)]
struct Certs {
    exact: HashMap<String, Arc<CertifiedKey>>,
    /// By suffix with its leading dot (`.example.com`).
    wildcard: HashMap<String, Arc<CertifiedKey>>,
    default: Option<Arc<CertifiedKey>>,
}

/// A Secret's certificate as last accepted.
struct Loaded {
    chain: SecretBytes,
    key: SecretBytes,
    certified: Arc<CertifiedKey>,
    not_after: i64,
}

/// What happened to one certificate at the last reload, for `/config`.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CertStatus {
    /// The Secret, `namespace/name`.
    pub secret: String,
    /// Its expiry, Unix seconds (of the certificate being served).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub not_after: Option<i64>,
    /// Why the new content was refused.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// `current`, `previous` (the new content was refused) or `none`.
    pub serving: &'static str,
}

impl CertStore {
    /// An empty store: handshakes fail until a certificate is loaded.
    pub fn new(metrics: Metrics) -> Self {
        Self {
            serving: ArcSwap::default(),
            clients: ArcSwap::default(),
            ports: None,
            loaded: Mutex::default(),
            provider: Arc::new(aws_lc_rs::default_provider()),
            metrics,
        }
    }

    /// The same store, offering on each port the certificates of the listeners served there.
    pub fn at_ports(mut self, ports: Ports) -> Self {
        self.ports = Some(ports);
        self
    }

    /// Asks clients on each port for the certificates its Gateways' `spec.tls.frontend` wants
    /// (ports where Gateways this gateway serves want different things let no client in).
    pub fn update_clients(&self, wanted: &[FrontendValidation]) {
        let mut by_port: HashMap<u16, Vec<&FrontendValidation>> = HashMap::new();
        for w in wanted {
            if self.ports.as_ref().is_none_or(|p| p.serves(&w.gateway)) {
                by_port.entry(w.port).or_default().push(w);
            }
        }
        let previous = self.clients.load();
        let mut next = HashMap::new();
        for (port, of) in by_port {
            let same = of.windows(2).all(|w| {
                w[0].ca_pem == w[1].ca_pem && w[0].insecure_fallback == w[1].insecure_fallback
            });
            let (ca_pem, insecure) = match same {
                true => (of[0].ca_pem.clone(), of[0].insecure_fallback),
                false => {
                    let gateways: Vec<&str> = of.iter().map(|w| w.gateway.as_str()).collect();
                    tracing::error!(port, gateways = %gateways.join(", "), "Gateways sharing a port want different client certificates: no client is let in on it");
                    (Vec::new(), false)
                }
            };
            let auth = match previous.get(&port) {
                Some(a) if a.ca_pem == ca_pem && a.insecure == insecure => a.clone(),
                _ => Arc::new(ClientAuth::new(ca_pem, insecure, &self.provider)),
            };
            next.insert(port, auth);
        }
        self.clients.store(Arc::new(next));
    }

    /// The ports `cert` is offered on, as this store places certificates (`None`: it does
    /// not tell ports apart).
    fn placed(&self, cert: &TlsCertificate) -> Option<Vec<u16>> {
        let ports = self.ports.as_ref()?;
        let mut at: Vec<u16> = cert
            .listeners
            .iter()
            .filter(|l| ports.serves(&l.gateway))
            .map(|l| l.port)
            .collect();
        if cert.ingress && ports.serves_ingresses() {
            at.push(ports.tls);
        }
        at.sort_unstable();
        at.dedup();
        Some(at)
    }

    /// Serves `certs` from now on; returns each one's outcome.
    pub fn update(&self, certs: &[TlsCertificate]) -> Vec<CertStatus> {
        let mut loaded = crate::lock(&self.loaded);
        let mut next: HashMap<String, Loaded> = HashMap::new();
        let mut statuses = Vec::new();
        let mut index = Serving::default();
        let mut firsts: HashMap<u16, Arc<CertifiedKey>> = HashMap::new();
        for cert in certs {
            let placed = self.placed(cert);
            if placed.as_ref().is_some_and(Vec::is_empty) {
                // Only Gateways this gateway does not serve use it.
                continue;
            }
            let previous = loaded.remove(&cert.secret);
            let unchanged = previous
                .as_ref()
                .is_some_and(|p| p.chain == cert.chain && p.key == cert.key);
            let (accepted, error) = if unchanged {
                (previous, None)
            } else {
                match self.parse(cert) {
                    Ok(new) => (Some(new), None),
                    Err(e) => {
                        tracing::error!(secret = %cert.secret, error = %e, "certificate refused; the previous one (if any) keeps serving");
                        (previous, Some(e))
                    }
                }
            };
            let serving = match (&accepted, &error) {
                (None, _) => "none",
                (Some(_), Some(_)) => "previous",
                (Some(_), None) => "current",
            };
            statuses.push(CertStatus {
                secret: cert.secret.clone(),
                not_after: accepted.as_ref().map(|l| l.not_after),
                error,
                serving,
            });
            if let Some(l) = accepted {
                self.metrics
                    .tls_certificate_expiry
                    .with_label_values(&[&cert.secret])
                    .set(l.not_after);
                index.all.add(&cert.hosts, &l.certified);
                for port in placed.into_iter().flatten() {
                    index
                        .by_port
                        .entry(port)
                        .or_default()
                        .add(&cert.hosts, &l.certified);
                    firsts.entry(port).or_insert_with(|| l.certified.clone());
                }
                next.insert(cert.secret.clone(), l);
            }
        }
        // Secrets no longer referenced are forgotten.
        for gone in loaded.keys() {
            let _ = self
                .metrics
                .tls_certificate_expiry
                .remove_label_values(&[gone]);
        }
        // Clients without SNI (or with a name nobody serves) get the first certificate.
        if index.all.default.is_none() {
            index.all.default = certs
                .iter()
                .find_map(|c| next.get(&c.secret))
                .map(|l| l.certified.clone());
        }
        for (port, certs) in &mut index.by_port {
            if certs.default.is_none() {
                certs.default = firsts.get(port).cloned();
            }
        }
        *loaded = next;
        self.serving.store(Arc::new(index));
        statuses
    }

    fn parse(&self, cert: &TlsCertificate) -> Result<Loaded, String> {
        let name = &cert.secret;
        if cert.chain.0.is_empty() {
            return Err(format!(
                "Secret {name} has no {}",
                weir_api::model::TLS_CERT_KEY
            ));
        }
        if cert.key.0.is_empty() {
            return Err(format!(
                "Secret {name} has no {}",
                weir_api::model::TLS_KEY_KEY
            ));
        }
        let chain = CertificateDer::pem_slice_iter(&cert.chain.0)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| format!("Secret {name}: tls.crt is not a PEM certificate chain: {e}"))?;
        if chain.is_empty() {
            return Err(format!("Secret {name}: tls.crt holds no certificate"));
        }
        let key = PrivateKeyDer::from_pem_slice(&cert.key.0)
            .map_err(|e| format!("Secret {name}: tls.key is not a PEM private key: {e}"))?;
        let not_after = {
            let (_, leaf) = x509_parser::parse_x509_certificate(&chain[0])
                .map_err(|e| format!("Secret {name}: tls.crt: {e}"))?;
            leaf.validity().not_after.timestamp()
        };
        let now = crate::unix_now() as i64;
        if not_after < now {
            return Err(format!(
                "Secret {name}: the certificate expired {} s ago",
                now - not_after
            ));
        }
        let certified = CertifiedKey::from_der(chain, key, &self.provider)
            .map_err(|e| format!("Secret {name}: {e}"))?;
        Ok(Loaded {
            chain: cert.chain.clone(),
            key: cert.key.clone(),
            certified: Arc::new(certified),
            not_after,
        })
    }

    /// The certificate for an SNI name (`None`: no SNI) on `port` (`None`: any).
    fn pick(&self, sni: Option<&str>, port: Option<u16>) -> Option<Arc<CertifiedKey>> {
        let serving = self.serving.load();
        let certs = match port {
            None => &serving.all,
            Some(port) => serving.by_port.get(&port)?,
        };
        if let Some(name) = sni {
            let name = name.to_ascii_lowercase();
            if let Some(c) = certs.exact.get(&name) {
                return Some(c.clone());
            }
            // `a.b.example.com` tries `.b.example.com`, then `.example.com`, then `.com`.
            let mut rest = name.as_str();
            while let Some(dot) = rest[1..].find('.').map(|i| i + 1) {
                rest = &rest[dot..];
                if let Some(c) = certs.wildcard.get(rest) {
                    return Some(c.clone());
                }
            }
        }
        certs.default.clone()
    }

    /// A server configuration that picks certificates from this store: TLS 1.2 and 1.3, ALPN
    /// h2 and http/1.1, session tickets and a session cache for resumption.
    pub fn server_config(self: &Arc<Self>) -> Result<Arc<ServerConfig>, rustls::Error> {
        self.config_with(self.clone(), None)
    }

    /// [`CertStore::server_config`] for the gateway's port `port`: the certificates of the
    /// listeners served there.
    pub fn server_config_at(
        self: &Arc<Self>,
        port: u16,
    ) -> Result<Arc<ServerConfig>, rustls::Error> {
        let at = Arc::new(AtPort {
            store: self.clone(),
            port,
            algorithms: self.provider.signature_verification_algorithms,
        });
        self.config_with(at.clone(), Some(at))
    }

    fn config_with(
        &self,
        resolver: Arc<dyn ResolvesServerCert>,
        clients: Option<Arc<AtPort>>,
    ) -> Result<Arc<ServerConfig>, rustls::Error> {
        let builder = ServerConfig::builder_with_provider(self.provider.clone())
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?;
        let builder = match &clients {
            Some(verifier) => builder.with_client_cert_verifier(verifier.clone()),
            None => builder.with_no_client_auth(),
        };
        let mut config = builder.with_cert_resolver(resolver);
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        let (ticketer, sessions) = (
            aws_lc_rs::Ticketer::new()?,
            ServerSessionMemoryCache::new(SESSION_CACHE),
        );
        match clients {
            Some(at) => {
                config.ticketer = Arc::new(PortTickets {
                    inner: ticketer,
                    at: at.clone(),
                });
                config.session_storage = Arc::new(PortSessions {
                    inner: sessions,
                    at,
                });
            }
            None => {
                config.ticketer = ticketer;
                config.session_storage = sessions;
            }
        }
        Ok(Arc::new(config))
    }
}

impl Certs {
    fn add(&mut self, hosts: &[HostMatch], cert: &Arc<CertifiedKey>) {
        for host in hosts {
            // The first Secret to claim a name keeps it.
            let _ = match host {
                HostMatch::Exact(h) => self.exact.entry(h.clone()).or_insert(cert.clone()),
                HostMatch::Wildcard(s) => self.wildcard.entry(s.clone()).or_insert(cert.clone()),
                HostMatch::Any => self.default.get_or_insert(cert.clone()),
            };
        }
    }
}

impl ResolvesServerCert for CertStore {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.pick(hello.server_name(), None)
    }
}

/// Picks from the certificates offered on one port, and checks its clients' certificates.
#[derive(Debug)]
struct AtPort {
    store: Arc<CertStore>,
    port: u16,
    algorithms: WebPkiSupportedAlgorithms,
}

impl ResolvesServerCert for AtPort {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.store.pick(hello.server_name(), Some(self.port))
    }
}

impl std::fmt::Debug for CertStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CertStore")
    }
}

mod clients;
mod system_roots;
pub use system_roots::system_roots;
#[cfg(test)]
mod tests;
