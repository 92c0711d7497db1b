//! `RequestMirror`: copies of the request, sent and forgotten. The copy is taken where the
//! filter stands in the chain; its body is attached once the forward path has read it (a
//! streamed body is not copied: mirrors then get the request without it).

use std::{sync::Arc, time::Duration};

use http::{header, request::Parts, Request, Uri};
use http_body_util::BodyExt;
use weir_api::model::Mirror;

use super::Context;
use crate::{balance::Pool, resilience::retry::Replay};
use weir_http::{body, upstream::Upstream};

/// How long a mirrored exchange may take before it is dropped.
const MIRROR_TIMEOUT: Duration = Duration::from_secs(30);

/// A copy waiting for its body.
pub struct Mirrored {
    pool: Arc<Pool>,
    parts: Parts,
}

/// Takes a copy of the request for `m`'s cluster, when this request is in its share.
pub(super) fn copy(m: &Mirror, cx: &mut Context<'_>, parts: &Parts) {
    if fastrand::u32(..1_000_000) >= m.per_million {
        return;
    }
    let Some(pool) = cx.pools.get(&m.cluster) else {
        return;
    };
    let (mut copy, ()) = Request::new(()).into_parts();
    copy.method = parts.method.clone();
    copy.uri = parts.uri.clone();
    copy.version = parts.version;
    copy.headers = parts.headers.clone();
    cx.mirrors.push(Mirrored {
        pool: pool.clone(),
        parts: copy,
    });
}

/// Sends each copy to an endpoint of its cluster with `body` (if it was read), in the
/// background.
pub fn send(mirrors: Vec<Mirrored>, upstream: &Upstream, body: &Replay) {
    let bytes = match body {
        Replay::Bytes(b) => Some(b),
        Replay::Once(_) => None,
    };
    for Mirrored { pool, mut parts } in mirrors {
        let Ok(endpoint) = pool.pick(&[], None) else {
            continue;
        };
        let path_and_query = parts.uri.path_and_query().map_or("/", |p| p.as_str());
        let Ok(uri) = Uri::builder()
            .scheme("http")
            .authority(endpoint.authority.clone())
            .path_and_query(path_and_query)
            .build()
        else {
            continue;
        };
        parts.uri = uri;
        parts.version = pool.version();
        if let Some(expected) = upstream.expected(&pool.cluster.name, endpoint.addr) {
            parts.extensions.insert(expected);
        }
        if bytes.is_none() {
            parts.headers.remove(header::CONTENT_LENGTH);
        }
        let copy = Request::from_parts(parts, body::full(bytes.cloned().unwrap_or_default()));
        let (upstream, protocol) = (upstream.clone(), pool.cluster.protocol);
        tokio::spawn(async move {
            let sent = tokio::time::timeout(MIRROR_TIMEOUT, async {
                if let Ok(response) = upstream.send(protocol, copy).await {
                    let _ = response.into_body().collect().await;
                }
            });
            let _ = sent.await;
        });
    }
}
