//! Proof of identity in a cluster: the node's projected ServiceAccount token, checked by the
//! API server with a TokenReview for the audience `weir`.
//!
//! What the API server said about a token is remembered for a short while, keyed by the
//! token's SHA-256: a pass so that certificate renewals and reconnects do not each cost an API
//! call, a refusal so that a client repeating a bad token does not either. Tokens not seen yet
//! cost one review each, so they are rationed per peer address ([`Throttle`]); over the ration
//! the caller is told to retry later and the API server is not asked. A review that could not
//! be made (the API server is away) is not remembered.

use std::{
    collections::HashMap,
    net::IpAddr,
    sync::Mutex,
    time::{Duration, Instant},
};

use k8s_openapi::api::authentication::v1::{TokenReview, TokenReviewSpec, UserInfo};
use kube::{api::PostParams, Api, Client};

use crate::{
    identity::ServiceAccount,
    lock,
    throttle::Throttle,
    tokens::{Proven, Rejected, AUDIENCE},
};

/// How long a reviewed token is trusted without asking again. Short: a deleted pod's token
/// stops working within this long.
const TRUST_FOR: Duration = Duration::from_secs(30);
/// How long a refused token stays refused without asking again.
const REFUSE_FOR: Duration = Duration::from_secs(30);
/// At most this many remembered tokens (one per node, so far more than a cluster has).
const MAX_REMEMBERED: usize = 100_000;
/// The extra a pod-bound projected token's review carries: the pod it was issued for.
pub const POD_NAME_EXTRA: &str = "authentication.kubernetes.io/pod-name";

/// What the API server said about a token, and when.
#[derive(Clone)]
enum Verdict {
    Passed(Proven),
    Refused(String),
}

/// Checks tokens with TokenReview.
pub struct TokenReviewer {
    api: Api<TokenReview>,
    remembered: Mutex<HashMap<[u8; 32], (Verdict, Instant)>>,
    throttle: Throttle,
}

impl TokenReviewer {
    /// A reviewer using `client`'s credentials (which need `create` on `tokenreviews`),
    /// reviewing tokens it has not seen at `rate` per second per peer, `burst` at once.
    pub fn new(client: Client, rate: f64, burst: u32) -> Self {
        Self {
            api: Api::all(client),
            remembered: Mutex::default(),
            throttle: Throttle::new(rate, burst),
        }
    }

    /// What the token proves, or why it proves nothing.
    pub async fn review(&self, token: &str, peer: Option<IpAddr>) -> Result<Proven, Rejected> {
        let digest = crate::sha256(token.as_bytes());
        if let Some((verdict, at)) = lock(&self.remembered).get(&digest).cloned() {
            match verdict {
                Verdict::Passed(proven) if at.elapsed() < TRUST_FOR => return Ok(proven),
                Verdict::Refused(why) if at.elapsed() < REFUSE_FOR => {
                    return Err(Rejected::Unauthenticated(why))
                }
                _ => {}
            }
        }
        if !self.throttle.allow(peer) {
            return Err(Rejected::Throttled);
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
            .map_err(|e| {
                Rejected::Unauthenticated(format!(
                    "the token could not be reviewed (TokenReview failed: {e})"
                ))
            })?;
        let verdict = match judge(reviewed.status.unwrap_or_default()) {
            Ok(proven) => Verdict::Passed(proven),
            Err(why) => Verdict::Refused(why),
        };
        self.remember(digest, verdict.clone());
        match verdict {
            Verdict::Passed(proven) => Ok(proven),
            Verdict::Refused(why) => Err(Rejected::Unauthenticated(why)),
        }
    }

    fn remember(&self, digest: [u8; 32], verdict: Verdict) {
        let mut remembered = lock(&self.remembered);
        if remembered.len() >= MAX_REMEMBERED {
            remembered.retain(|_, (_, at)| at.elapsed() < TRUST_FOR.max(REFUSE_FOR));
        }
        // Still full of live verdicts: this one is not kept (the throttle bounds what that
        // costs), rather than forgetting others.
        if remembered.len() < MAX_REMEMBERED {
            remembered.insert(digest, (verdict, Instant::now()));
        }
    }
}

/// What a TokenReview's status proves.
fn judge(
    status: k8s_openapi::api::authentication::v1::TokenReviewStatus,
) -> Result<Proven, String> {
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
    let user = status.user.unwrap_or_default();
    let username = user.username.clone().unwrap_or_default();
    let account = ServiceAccount::from_username(&username)
        .ok_or_else(|| format!("token refused: {username:?} is not a ServiceAccount"))?;
    Ok(Proven {
        account,
        pod: bound_pod(&user)?,
    })
}

/// The pod a pod-bound token was issued for, if it is one. A token naming several pods is
/// refused rather than read as any of them.
fn bound_pod(user: &UserInfo) -> Result<Option<String>, String> {
    let pods = user.extra.as_ref().and_then(|e| e.get(POD_NAME_EXTRA));
    match pods.map(Vec::as_slice) {
        None | Some([]) => Ok(None),
        Some([pod]) => Ok(Some(pod.clone())),
        Some(many) => Err(format!("token refused: it names several pods {many:?}")),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use k8s_openapi::api::authentication::v1::TokenReviewStatus;

    use super::*;

    fn status(extra: Option<Vec<&str>>) -> TokenReviewStatus {
        TokenReviewStatus {
            authenticated: Some(true),
            audiences: Some(vec![AUDIENCE.into()]),
            user: Some(UserInfo {
                username: Some("system:serviceaccount:shop:web".into()),
                extra: extra.map(|pods| {
                    BTreeMap::from([(
                        POD_NAME_EXTRA.to_string(),
                        pods.into_iter().map(String::from).collect(),
                    )])
                }),
                ..Default::default()
            }),
            error: None,
        }
    }

    #[test]
    fn a_pod_bound_token_proves_its_pod() {
        let proven = judge(status(Some(vec!["web-1"]))).unwrap();
        assert_eq!(proven.account.to_string(), "shop/web");
        assert_eq!(proven.pod.as_deref(), Some("web-1"));
        assert_eq!(judge(status(None)).unwrap().pod, None);
        let err = judge(status(Some(vec!["web-1", "web-2"]))).unwrap_err();
        assert!(err.contains("several pods"), "{err}");
        let refused = TokenReviewStatus {
            authenticated: Some(false),
            ..status(None)
        };
        assert!(judge(refused).is_err());
    }
}
