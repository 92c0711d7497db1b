//! `TokenReview`: the tokens tests registered, checked for the audiences asked about, answered
//! as the real server answers (groups, and for a pod-bound token the pod in `user.extra`).

use serde_json::{json, Value};

use super::{ApiError, Shared};

pub(super) fn review(shared: &Shared, mut body: Value) -> Result<Value, ApiError> {
    let token = body
        .pointer("/spec/token")
        .and_then(Value::as_str)
        .ok_or_else(|| ApiError::invalid("TokenReview", "", "spec.token: Required value"))?;
    let wanted: Vec<String> = body
        .pointer("/spec/audiences")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    let known = shared.tokens.lock().expect("tokens").get(token).cloned();
    let status = match known {
        None => json!({"authenticated": false, "error": "invalid bearer token"}),
        Some(reviewed) => {
            let audiences: Vec<&String> = if wanted.is_empty() {
                reviewed.audiences.iter().collect()
            } else {
                wanted
                    .iter()
                    .filter(|a| reviewed.audiences.contains(a))
                    .collect()
            };
            if audiences.is_empty() {
                json!({"authenticated": false, "error": "invalid bearer token, token audiences are invalid"})
            } else {
                let parts: Vec<&str> = reviewed.username.split(':').collect();
                let mut user = json!({
                    "username": reviewed.username,
                    "groups": ["system:serviceaccounts", format!("system:serviceaccounts:{}", parts[2]), "system:authenticated"],
                });
                if let Some(pod) = &reviewed.pod {
                    // What the real server adds for a token bound to a pod.
                    user["extra"] = json!({
                        "authentication.kubernetes.io/pod-name": [pod],
                        "authentication.kubernetes.io/pod-uid": [format!("uid-of-{pod}")],
                    });
                }
                json!({"authenticated": true, "audiences": audiences, "user": user})
            }
        }
    };
    body["status"] = status;
    Ok(body)
}
