//! Proof of identity in a cluster: the node's projected ServiceAccount token, checked by the
//! API server with a TokenReview for the audience `weir`. A token that passed is remembered
//! for a short while, so certificate renewals and reconnects do not each cost an API call.

use std::{
    collections::HashMap,
    sync::Mutex,
    time::{Duration, Instant},
};

use k8s_openapi::api::authentication::v1::{TokenReview, TokenReviewSpec};
use kube::{api::PostParams, Api, Client};

use crate::{identity::ServiceAccount, tokens::AUDIENCE};

/// How long a reviewed token is trusted without asking again. Short: a deleted pod's token
/// stops working within this long.
const TRUST_FOR: Duration = Duration::from_secs(30);
/// At most this many remembered tokens (one per node, so far more than a cluster has).
const MAX_REMEMBERED: usize = 100_000;

/// Checks tokens with TokenReview.
pub struct TokenReviewer {
    api: Api<TokenReview>,
    remembered: Mutex<HashMap<[u8; 32], (ServiceAccount, Instant)>>,
}

impl TokenReviewer {
    /// A reviewer using `client`'s credentials (which need `create` on `tokenreviews`).
    pub fn new(client: Client) -> Self {
        Self {
            api: Api::all(client),
            remembered: Mutex::default(),
        }
    }

    /// The ServiceAccount the token proves, or why it proves nothing.
    pub async fn review(&self, token: &str) -> Result<ServiceAccount, String> {
        let digest: [u8; 32] =
            aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, token.as_bytes())
                .as_ref()
                .try_into()
                .expect("SHA-256 is 32 bytes");
        if let Some((account, at)) = self.lock().get(&digest) {
            if at.elapsed() < TRUST_FOR {
                return Ok(account.clone());
            }
        }
        let review = TokenReview {
            spec: TokenReviewSpec {
                token: Some(token.to_string()),
                audiences: Some(vec![AUDIENCE.to_string()]),
            },
            ..Default::default()
        };
        let reviewed = self
            .api
            .create(&PostParams::default(), &review)
            .await
            .map_err(|e| format!("the token could not be reviewed (TokenReview failed: {e})"))?;
        let status = reviewed.status.unwrap_or_default();
        if status.authenticated != Some(true) {
            return Err(format!(
                "token refused by the API server: {}",
                status.error.as_deref().unwrap_or("not authenticated")
            ));
        }
        if !status.audiences.iter().flatten().any(|a| a == AUDIENCE) {
            return Err(format!(
                "token refused: it is not for the audience {AUDIENCE:?}"
            ));
        }
        let username = status.user.and_then(|u| u.username).unwrap_or_default();
        let account = ServiceAccount::from_username(&username)
            .ok_or_else(|| format!("token refused: {username:?} is not a ServiceAccount"))?;
        let mut remembered = self.lock();
        if remembered.len() >= MAX_REMEMBERED {
            remembered.retain(|_, (_, at)| at.elapsed() < TRUST_FOR);
            if remembered.len() >= MAX_REMEMBERED {
                remembered.clear();
            }
        }
        remembered.insert(digest, (account.clone(), Instant::now()));
        Ok(account)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<[u8; 32], (ServiceAccount, Instant)>> {
        self.remembered.lock().unwrap_or_else(|e| e.into_inner())
    }
}
