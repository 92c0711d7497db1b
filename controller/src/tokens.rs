//! Proof of identity in directory mode: ES256 tokens the controller signs itself, shaped like
//! the projected ServiceAccount tokens of a cluster (`sub: system:serviceaccount:NS:SA`,
//! `aud: weir`), so nodes read and send them the same way in both modes.

use std::{net::IpAddr, time::Duration};

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

use weir_api::process::unix_now;

use crate::identity::ServiceAccount;

/// The audience every token a node presents must name.
pub const AUDIENCE: &str = "weir";
/// The issuer of the tokens the controller signs.
pub const ISSUER: &str = "weir-controller";

#[derive(Serialize, Deserialize)]
struct Claims {
    iss: String,
    sub: String,
    aud: String,
    iat: u64,
    exp: u64,
}

/// The controller's token-signing key.
pub struct TokenKey {
    encoding: EncodingKey,
    decoding: DecodingKey,
}

impl TokenKey {
    /// A key from its PKCS#8 PEM (P-256).
    pub fn from_pem(private_pem: &str) -> anyhow::Result<Self> {
        let pair = rcgen::KeyPair::from_pem(private_pem)?;
        Ok(Self {
            encoding: EncodingKey::from_ec_der(&pair.serialize_der()),
            decoding: DecodingKey::from_ec_der(pair.public_key_raw()),
        })
    }

    /// Signs a token for `account`, valid for `ttl`.
    pub fn sign(&self, account: &ServiceAccount, ttl: Duration) -> anyhow::Result<String> {
        let now = unix_now();
        let claims = Claims {
            iss: ISSUER.to_string(),
            sub: account.username(),
            aud: AUDIENCE.to_string(),
            iat: now,
            exp: now + ttl.as_secs(),
        };
        Ok(jsonwebtoken::encode(
            &Header::new(Algorithm::ES256),
            &claims,
            &self.encoding,
        )?)
    }

    /// The ServiceAccount a token proves, or why it proves nothing.
    pub fn verify(&self, token: &str) -> Result<ServiceAccount, String> {
        let mut validation = Validation::new(Algorithm::ES256);
        validation.set_audience(&[AUDIENCE]);
        validation.set_issuer(&[ISSUER]);
        validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        validation.leeway = 30;
        let data = jsonwebtoken::decode::<Claims>(token, &self.decoding, &validation)
            .map_err(|e| format!("token refused: {e}"))?;
        ServiceAccount::from_username(&data.claims.sub).ok_or_else(|| {
            format!(
                "token refused: sub {:?} is not a ServiceAccount",
                data.claims.sub
            )
        })
    }
}

/// What a node's token proves.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Proven {
    /// The ServiceAccount.
    pub account: ServiceAccount,
    /// The pod the token was issued for, when it is bound to one (a projected token's
    /// TokenReview names it); a node may then speak only for that pod.
    pub pod: Option<String>,
}

/// Why a token was not accepted.
#[derive(Debug, thiserror::Error)]
pub enum Rejected {
    /// It proves nothing.
    #[error("{0}")]
    Unauthenticated(String),
    /// This peer has had its ration of token reviews; nothing was asked of the API server.
    #[error("too many unknown tokens from this address; retry later")]
    Throttled,
}

/// How the controller checks the token a node presents.
pub enum Authenticator {
    /// Directory mode: tokens this controller signed.
    Signed(TokenKey),
    /// Kubernetes: projected ServiceAccount tokens, checked with TokenReview.
    Reviewed(crate::kubernetes::TokenReviewer),
}

impl Authenticator {
    /// What a token presented by `peer` proves, or why it proves nothing.
    pub async fn authenticate(
        &self,
        token: &str,
        peer: Option<IpAddr>,
    ) -> Result<Proven, Rejected> {
        match self {
            // Checked here, at the cost of one signature check: nothing to ration.
            Self::Signed(key) => key
                .verify(token)
                .map(|account| Proven { account, pod: None })
                .map_err(Rejected::Unauthenticated),
            Self::Reviewed(reviewer) => reviewer.review(token, peer).await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> TokenKey {
        let pair = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        TokenKey::from_pem(&pair.serialize_pem()).unwrap()
    }

    #[test]
    fn a_signed_token_proves_its_account_and_only_to_its_key() {
        let (key, other) = (key(), key());
        let web: ServiceAccount = "shop/web".parse().unwrap();
        let token = key.sign(&web, Duration::from_secs(60)).unwrap();
        assert_eq!(key.verify(&token).unwrap(), web);
        let err = other.verify(&token).unwrap_err();
        assert!(err.contains("InvalidSignature"), "{err}");
        let err = key.verify("not.a.token").unwrap_err();
        assert!(err.starts_with("token refused"), "{err}");
    }
}
