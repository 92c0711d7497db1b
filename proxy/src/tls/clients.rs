//! What a gateway's TLS port asks of clients (`spec.tls.frontend`): a certificate chaining to
//! its CA certificates, required (`AllowValidOnly`) or only asked for
//! (`AllowInsecureFallback`), read at every handshake; and its session tickets and cache bound
//! to those rules, since rustls does not check client certificates again on resumption.

use std::sync::Arc;

use rustls::{
    client::danger::HandshakeSignatureValid,
    crypto::CryptoProvider,
    server::{
        danger::{ClientCertVerified, ClientCertVerifier},
        WebPkiClientVerifier,
    },
    DigitallySignedStruct, DistinguishedName, SignatureScheme,
};
use rustls_pki_types::{pem::PemObject, CertificateDer, UnixTime};

use super::AtPort;

/// What one port asks of clients.
pub(super) struct ClientAuth {
    /// Distinct for each set of rules a port has had: a session from under other rules is
    /// not resumed (rustls does not check client certificates again on resumption).
    generation: u64,
    pub(super) ca_pem: Vec<String>,
    /// `AllowInsecureFallback`.
    pub(super) insecure: bool,
    /// Checks a chain against the CA certificates; none when there is none to check against.
    verifier: Option<Arc<dyn ClientCertVerifier>>,
}

impl ClientAuth {
    pub(super) fn new(ca_pem: Vec<String>, insecure: bool, provider: &Arc<CryptoProvider>) -> Self {
        let mut roots = rustls::RootCertStore::empty();
        for pem in &ca_pem {
            for cert in CertificateDer::pem_slice_iter(pem.as_bytes()).flatten() {
                let _ = roots.add(cert);
            }
        }
        let verifier = (!roots.is_empty())
            .then(|| {
                WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
                    .build()
                    .map_err(|e| tracing::error!(error = %e, "a client CA bundle is not usable"))
                    .ok()
            })
            .flatten();
        static GENERATIONS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
        Self {
            generation: GENERATIONS.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
            ca_pem,
            insecure,
            verifier,
        }
    }
}

impl AtPort {
    fn clients(&self) -> Option<Arc<ClientAuth>> {
        self.store.clients.load().get(&self.port).cloned()
    }

    /// The generation of the port's client rules (0: none).
    fn generation(&self) -> [u8; 8] {
        let generation = self
            .store
            .clients
            .load()
            .get(&self.port)
            .map_or(0, |c| c.generation);
        generation.to_be_bytes()
    }

    /// `value` as it was stored under the current rules, or `None` (a full handshake).
    fn current(&self, stored: Vec<u8>) -> Option<Vec<u8>> {
        let (generation, value) = stored.split_at_checked(8)?;
        (generation == self.generation()).then(|| value.to_vec())
    }

    fn stamped(&self, value: &[u8]) -> Vec<u8> {
        let mut stamped = self.generation().to_vec();
        stamped.extend_from_slice(value);
        stamped
    }
}

/// Session tickets of one port, each bound to the client rules it was issued under: a
/// client that got in under no rules (or AllowInsecureFallback, or another CA) cannot resume
/// its way past the rules of now.
#[derive(Debug)]
pub(super) struct PortTickets {
    pub(super) inner: Arc<dyn rustls::server::ProducesTickets>,
    pub(super) at: Arc<AtPort>,
}

impl rustls::server::ProducesTickets for PortTickets {
    fn enabled(&self) -> bool {
        self.inner.enabled()
    }

    fn lifetime(&self) -> u32 {
        self.inner.lifetime()
    }

    fn encrypt(&self, plain: &[u8]) -> Option<Vec<u8>> {
        self.inner.encrypt(&self.at.stamped(plain))
    }

    fn decrypt(&self, cipher: &[u8]) -> Option<Vec<u8>> {
        self.at.current(self.inner.decrypt(cipher)?)
    }
}

/// The session cache of one port, bound to its client rules as [`PortTickets`] is.
#[derive(Debug)]
pub(super) struct PortSessions {
    pub(super) inner: Arc<dyn rustls::server::StoresServerSessions>,
    pub(super) at: Arc<AtPort>,
}

impl rustls::server::StoresServerSessions for PortSessions {
    fn put(&self, key: Vec<u8>, value: Vec<u8>) -> bool {
        self.inner.put(key, self.at.stamped(&value))
    }

    fn get(&self, key: &[u8]) -> Option<Vec<u8>> {
        self.at.current(self.inner.get(key)?)
    }

    fn take(&self, key: &[u8]) -> Option<Vec<u8>> {
        self.at.current(self.inner.take(key)?)
    }

    fn can_cache(&self) -> bool {
        self.inner.can_cache()
    }
}

/// A port with `AllowValidOnly` lets in only clients whose certificate chains to its CA
/// certificates (none usable: nobody); with `AllowInsecureFallback` it asks for one and lets
/// every client in; without validation it asks for none. Read at every handshake, so a
/// change applies to the next connection.
impl ClientCertVerifier for AtPort {
    fn offer_client_auth(&self) -> bool {
        self.clients().is_some()
    }

    fn client_auth_mandatory(&self) -> bool {
        self.clients().is_some_and(|c| !c.insecure)
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        let Some(clients) = self.clients() else {
            return Ok(ClientCertVerified::assertion());
        };
        if clients.insecure {
            return Ok(ClientCertVerified::assertion());
        }
        match &clients.verifier {
            Some(v) => v.verify_client_cert(end_entity, intermediates, now),
            None => Err(rustls::Error::InvalidCertificate(
                rustls::CertificateError::UnknownIssuer,
            )),
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}
