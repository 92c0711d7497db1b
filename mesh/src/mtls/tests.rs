use std::time::{Duration, SystemTime};

use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair, SanType};
use rustls_pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
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

#[test]
fn expected_identities_belong_to_their_cluster_not_to_the_address() {
    use weir_api::model::Cluster;
    let addr: std::net::SocketAddr = "10.0.0.5:15006".parse().unwrap();
    let cluster = |name: &str, identity: &str| Cluster {
        name: name.into(),
        identities: [(addr, identity.to_string())].into(),
        ..Default::default()
    };
    let metrics = crate::metrics::IdentityMetrics::register(&prometheus::Registry::new());
    let dialer = Dialer::new(Default::default(), "cluster.local", &metrics);
    // Another namespace's slice claims the same address for its own pod, listed after.
    dialer.update(&[
        cluster("shop/backend:80", "shop/backend"),
        cluster("zzz/backend:80", "zzz/thief"),
    ]);
    assert_eq!(
        dialer.expected("shop/backend:80", addr).as_deref(),
        Some("spiffe://cluster.local/ns/shop/sa/backend")
    );
    assert_eq!(
        dialer.expected("zzz/backend:80", addr).as_deref(),
        Some("spiffe://cluster.local/ns/zzz/sa/thief")
    );
    assert_eq!(dialer.expected("other/x:80", addr), None);
}
