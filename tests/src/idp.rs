//! A stand-in identity provider for the auth tests: signing keys, tokens, and a real HTTPS
//! JWKS endpoint whose key set can be changed (key rotation) and which counts its fetches.

use std::{
    net::SocketAddr,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc, Mutex,
    },
};

use base64::{engine::general_purpose::URL_SAFE_NO_PAD as B64, Engine};
use bytes::Bytes;
use http_body_util::Full;
use hyper::{server::conn::http1, service::service_fn, Response};
use hyper_util::rt::TokioIo;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use rcgen::{KeyPair, PKCS_ECDSA_P256_SHA256};
use serde_json::{json, Value};
use tokio::net::TcpListener;

use crate::tls::{KeyType, Pki};

/// An ES256 signing key with its public JWK.
pub struct Signer {
    /// `kid`.
    pub kid: String,
    encoding: EncodingKey,
    /// The public key as a JWK.
    pub jwk: Value,
}

impl Signer {
    /// A fresh P-256 key.
    pub fn new(kid: &str) -> Self {
        Self::with_key(
            kid,
            KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).expect("key"),
        )
    }

    /// The P-256 key in `pem` (PKCS#8).
    pub fn from_pem(kid: &str, pem: &str) -> Result<Self, rcgen::Error> {
        Ok(Self::with_key(kid, KeyPair::from_pem(pem)?))
    }

    fn with_key(kid: &str, key: KeyPair) -> Self {
        let raw = key.public_key_raw();
        let (x, y) = (&raw[1..33], &raw[33..65]);
        Self {
            kid: kid.to_string(),
            encoding: EncodingKey::from_ec_der(&key.serialize_der()),
            jwk: json!({"kty": "EC", "crv": "P-256", "x": B64.encode(x), "y": B64.encode(y), "kid": kid, "alg": "ES256", "use": "sig"}),
        }
    }

    /// A signed token with `claims`.
    pub fn sign(&self, claims: &Value) -> String {
        self.sign_with_header(Header::new(Algorithm::ES256), claims)
    }

    /// A signed token with `claims` and `header` (its `kid` set to this key's), e.g. one
    /// carrying `crit`.
    pub fn sign_with_header(&self, mut header: Header, claims: &Value) -> String {
        header.kid = Some(self.kid.clone());
        jsonwebtoken::encode(&header, claims, &self.encoding).expect("sign")
    }
}

/// Claims for `sub` from `iss` to `aud`, expiring in `ttl` seconds (negative: expired).
pub fn claims(iss: &str, aud: &str, sub: &str, ttl: i64) -> Value {
    let now = weir_api::process::unix_now() as i64;
    json!({"iss": iss, "aud": aud, "sub": sub, "exp": now + ttl, "iat": now, "scope": "orders.read profile"})
}

/// An unsigned token (`alg: none`).
pub fn unsigned(claims: &Value) -> String {
    let header = B64.encode(br#"{"alg":"none","typ":"JWT"}"#);
    format!("{header}.{}.", B64.encode(claims.to_string()))
}

/// A token signed with HMAC using `secret` (e.g. the provider's public key) as the key.
pub fn hmac_signed(claims: &Value, kid: &str, secret: &[u8]) -> String {
    let mut header = Header::new(Algorithm::HS256);
    header.kid = Some(kid.to_string());
    jsonwebtoken::encode(&header, claims, &EncodingKey::from_secret(secret)).expect("sign")
}

/// A JWKS over HTTPS on loopback.
pub struct JwksServer {
    /// Where it listens.
    pub addr: SocketAddr,
    keys: Arc<Mutex<Vec<Value>>>,
    fetches: Arc<AtomicU64>,
}

impl JwksServer {
    /// Serves `keys` with a certificate from `pki` for 127.0.0.1.
    pub async fn start(pki: &Pki, keys: Vec<Value>) -> Self {
        let cert = pki.issue(&["127.0.0.1"], KeyType::Ecdsa);
        let chain = vec![rustls_pki_types::CertificateDer::from(cert.leaf_der())];
        let key = {
            use rustls_pki_types::pem::PemObject;
            rustls_pki_types::PrivateKeyDer::from_pem_slice(cert.key.as_bytes()).expect("key")
        };
        let config = rustls::ServerConfig::builder()
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .expect("server config");
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let keys = Arc::new(Mutex::new(keys));
        let fetches = Arc::new(AtomicU64::new(0));
        let (k, f) = (keys.clone(), fetches.clone());
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let (acceptor, keys, fetches) = (acceptor.clone(), k.clone(), f.clone());
                tokio::spawn(async move {
                    let Ok(tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let service = service_fn(move |_req| {
                        fetches.fetch_add(1, Ordering::SeqCst);
                        let body = json!({"keys": *keys.lock().unwrap()}).to_string();
                        async move {
                            Ok::<_, std::convert::Infallible>(
                                Response::builder()
                                    .header("content-type", "application/json")
                                    .header("cache-control", "max-age=300")
                                    .body(Full::new(Bytes::from(body)))
                                    .unwrap(),
                            )
                        }
                    });
                    let _ = http1::Builder::new()
                        .serve_connection(TokioIo::new(tls), service)
                        .await;
                });
            }
        });
        Self {
            addr,
            keys,
            fetches,
        }
    }

    /// The JWKS URL.
    pub fn uri(&self) -> String {
        format!("https://{}/jwks.json", self.addr)
    }

    /// Replaces the published keys.
    pub fn publish(&self, keys: Vec<Value>) {
        *self.keys.lock().unwrap() = keys;
    }

    /// Fetches served so far.
    pub fn fetches(&self) -> u64 {
        self.fetches.load(Ordering::SeqCst)
    }
}
