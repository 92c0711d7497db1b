//! Unit tests of token verification: the header and time checks that hold whatever the
//! policy says, against a static JWKS and tokens signed here.

use std::{sync::Arc, time::Duration};

use crate::metrics::GuardMetrics;
use base64::{engine::general_purpose::URL_SAFE_NO_PAD as B64, Engine};
use http::HeaderMap;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{json, Value};
use weir_api::model::{Auth, Jwks, JwtProvider, SecretBytes};

use super::{jwks::KeySource, Authenticator, Denied, Identity};

const ISS: &str = "https://idp.example.com";

struct Idp {
    encoding: EncodingKey,
    jwks: Vec<u8>,
}

impl Idp {
    fn new() -> Self {
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let raw = key.public_key_raw();
        let jwk = json!({"kty": "EC", "crv": "P-256", "x": B64.encode(&raw[1..33]),
            "y": B64.encode(&raw[33..65]), "kid": "k1", "alg": "ES256", "use": "sig"});
        Self {
            encoding: EncodingKey::from_ec_der(&key.serialize_der()),
            jwks: json!({ "keys": [jwk] }).to_string().into_bytes(),
        }
    }

    fn sign(&self, header: Header, claims: &Value) -> String {
        let header = Header {
            kid: Some("k1".into()),
            ..header
        };
        jsonwebtoken::encode(&header, claims, &self.encoding).unwrap()
    }

    fn authenticator(&self) -> Authenticator {
        let provider = JwtProvider {
            id: "shop/auth/idp".into(),
            name: "idp".into(),
            issuer: ISS.into(),
            audiences: vec!["shop".into()],
            jwks: Jwks::Static(SecretBytes(self.jwks.clone().into())),
            forward_claims: vec![],
            required_scopes: vec![],
            clock_skew: Duration::from_secs(5),
        };
        let (source, error) = KeySource::fixed(
            "idp",
            &self.jwks,
            GuardMetrics::register(&prometheus::Registry::new()),
        );
        assert!(error.is_none(), "{error:?}");
        let auth = Auth {
            policy: "shop/auth".into(),
            jwt: vec![Arc::new(provider)],
            api_keys: None,
            required: true,
            strip_headers: vec![],
        };
        Authenticator::new(Arc::new(auth), vec![source])
    }
}

fn claims(extra: Value) -> Value {
    let now = weir_proxy::unix_now();
    let mut claims =
        json!({"iss": ISS, "aud": "shop", "sub": "alice", "exp": now + 300, "iat": now});
    if let (Some(c), Some(e)) = (claims.as_object_mut(), extra.as_object()) {
        c.extend(e.clone());
    }
    claims
}

async fn check(auth: &Authenticator, token: &str) -> Result<Identity, Denied> {
    let mut headers = HeaderMap::new();
    headers.insert(
        http::header::AUTHORIZATION,
        format!("Bearer {token}").parse().unwrap(),
    );
    auth.check(&mut headers).await
}

fn invalid(result: Result<Identity, Denied>) -> String {
    match result {
        Err(Denied::Invalid(why)) => why,
        other => panic!("expected an invalid token, got {other:?}"),
    }
}

#[tokio::test]
async fn a_token_not_valid_yet_is_refused_beyond_the_clock_skew() {
    let idp = Idp::new();
    let auth = idp.authenticator();
    let now = weir_proxy::unix_now();
    let es256 = || Header::new(Algorithm::ES256);
    let ok = idp.sign(es256(), &claims(json!({"nbf": now - 10})));
    assert!(check(&auth, &ok).await.is_ok());
    // Inside the 5 s skew: a clock slightly ahead of ours is tolerated.
    let skewed = idp.sign(es256(), &claims(json!({"nbf": now + 3})));
    assert!(check(&auth, &skewed).await.is_ok());
    let future = idp.sign(es256(), &claims(json!({"nbf": now + 600})));
    let why = invalid(check(&auth, &future).await);
    assert!(why.contains("nbf"), "{why}");
}

#[tokio::test]
async fn a_token_with_a_critical_extension_is_refused() {
    let idp = Idp::new();
    let auth = idp.authenticator();
    let mut header = Header::new(Algorithm::ES256);
    header.crit = Some(vec!["exp-policy".into()]);
    header.extras.insert("exp-policy", "ignore-me");
    let why = invalid(check(&auth, &idp.sign(header, &claims(json!({})))).await);
    assert!(why.contains("exp-policy"), "{why}");
    // An empty list is malformed (RFC 7515 §4.1.11), not a way around the check.
    let mut header = Header::new(Algorithm::ES256);
    header.crit = Some(vec![]);
    let why = invalid(check(&auth, &idp.sign(header, &claims(json!({})))).await);
    assert!(why.contains("crit"), "{why}");
    // The same claims without `crit` pass: the refusal is the header's doing.
    let plain = idp.sign(Header::new(Algorithm::ES256), &claims(json!({})));
    assert!(check(&auth, &plain).await.is_ok());
}
