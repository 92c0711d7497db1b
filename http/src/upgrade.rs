//! HTTP/1.1 protocol switches (WebSocket and other `Upgrade`s) through a proxy: the client's
//! pending upgrade is taken from its request, and when the backend answers 101 the client's
//! connection (from Weir's HTTP/1.1 server) and the backend's (from its HTTP/1.1 client) are
//! spliced byte for byte.
//!
//! After a switch, nothing more on the connection is routed, authenticated, limited or
//! checked against AccessPolicy, so only protocols a route allows are offered to a backend:
//! WebSocket unless the route says otherwise (`weir.dev/upgrades`), and never `h2c`, whose
//! requests would follow in HTTP/2 past every check. Any other offer is removed and the
//! request served as plain HTTP/1.1, as RFC 9110 §7.8 lets a server do; a backend that
//! switches to a protocol it was not offered gets its answer refused (502).

use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http::{header, request, response, HeaderMap, HeaderValue, Method, StatusCode};
use tokio::{io::AsyncWriteExt, sync::oneshot};

use crate::{error::ProxyError, transport::Transport, upstream::h1::Switched};

/// The protocol every route may switch to unless it names its own list.
pub const WEBSOCKET: &str = "websocket";

/// HTTP/2 over cleartext by upgrade: never offered to a backend, whatever a route allows.
const H2C: &str = "h2c";

/// A client's protocol switch that goes to the backend: the pending connection and what was
/// offered for it.
pub struct Requested {
    client: OnUpgrade,
    offered: HeaderValue,
}

/// A client connection that asked to switch protocols, once its `101` (or its CONNECT's 2xx)
/// has been written: the connection, and what the client sent after its request head.
pub struct Upgraded {
    /// The client's connection.
    pub io: Box<dyn Transport>,
    /// Bytes the client sent behind its request, already read.
    pub read_ahead: Bytes,
}

/// The server's promise of an [`Upgraded`] connection, in the extensions of a request that
/// asks to switch protocols (cloneable, as extensions must be; one clone gets it).
#[derive(Clone)]
pub struct OnUpgrade(Arc<Mutex<Option<oneshot::Receiver<Upgraded>>>>);

impl OnUpgrade {
    pub(crate) fn new(receiver: oneshot::Receiver<Upgraded>) -> Self {
        Self(Arc::new(Mutex::new(Some(receiver))))
    }

    /// The connection, once the response switching protocols has been written; `None` when
    /// the response did not switch, the connection ended first, or another clone took it.
    pub async fn upgraded(self) -> Option<Upgraded> {
        let receiver = crate::lock(&self.0).take()?;
        receiver.await.ok()
    }
}

/// The client's pending upgrade when `parts` asks for a protocol switch (HTTP/1.1 with
/// `Connection: upgrade` and `Upgrade`) to protocols among `allowed` (names, any case; `h2c`
/// never): `Upgrade` then lists only those, with `Connection: upgrade`. `None` for every other
/// request, whose `Upgrade` and `Connection` are removed so it is served as plain HTTP/1.1.
/// The HTTP/1.1 server offers a pending upgrade to exactly those requests (and to CONNECT,
/// which is not a switch here), having read their framing fields already.
pub fn requested<S: AsRef<str>>(parts: &mut request::Parts, allowed: &[S]) -> Option<Requested> {
    let client = match parts.method {
        Method::CONNECT => None,
        _ => parts.extensions.remove::<OnUpgrade>(),
    };
    let offered = client
        .as_ref()
        .and_then(|_| allowed_offer(&parts.headers, allowed));
    match (client, offered) {
        (Some(client), Some(offered)) => {
            let headers = &mut parts.headers;
            headers.insert(header::UPGRADE, offered.clone());
            headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
            Some(Requested { client, offered })
        }
        _ => {
            parts.headers.remove(header::UPGRADE);
            let upgrade_only = parts.headers.get_all(header::CONNECTION).iter().all(|v| {
                v.to_str().is_ok_and(|v| {
                    v.split(',')
                        .all(|t| t.trim().eq_ignore_ascii_case("upgrade"))
                })
            });
            if upgrade_only {
                parts.headers.remove(header::CONNECTION);
            }
            None
        }
    }
}

/// The protocols of the request's `Upgrade` that `allowed` names, as one value; `None` when
/// there are none.
fn allowed_offer<S: AsRef<str>>(headers: &HeaderMap, allowed: &[S]) -> Option<HeaderValue> {
    let kept: Vec<&str> = headers
        .get_all(header::UPGRADE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|token| {
            let name = protocol_name(token);
            !name.eq_ignore_ascii_case(H2C)
                && allowed
                    .iter()
                    .any(|a| a.as_ref().eq_ignore_ascii_case(name))
        })
        .collect();
    if kept.is_empty() {
        return None;
    }
    HeaderValue::from_str(&kept.join(", ")).ok()
}

/// `websocket` of `websocket/13`: a protocol without its version.
fn protocol_name(token: &str) -> &str {
    token.split_once('/').map_or(token, |(name, _)| name).trim()
}

/// Whether the backend's answer switches protocols. If it does, to a protocol the client
/// offered (`downstream`), the two upgraded connections are spliced on a task of their own;
/// a switch nobody asked for, or to a protocol not offered, is refused (502).
pub fn switch(
    downstream: Option<Requested>,
    response: &mut response::Parts,
) -> Result<bool, ProxyError> {
    if response.status != StatusCode::SWITCHING_PROTOCOLS {
        return Ok(false);
    }
    let Some(Requested { client, offered }) = downstream else {
        tracing::info!("a backend switched protocols unasked: refused");
        return Err(ProxyError::BackendReset);
    };
    if !switches_to_offered(&response.headers, &offered) {
        tracing::info!(
            ?offered,
            "a backend switched to a protocol it was not offered: refused"
        );
        return Err(ProxyError::BackendReset);
    }
    if let Some(upstream) = response.extensions.remove() {
        tokio::spawn(splice(client, upstream));
    }
    Ok(true)
}

/// Whether every protocol the response's `Upgrade` names was in `offered`.
fn switches_to_offered(headers: &HeaderMap, offered: &HeaderValue) -> bool {
    let offered: Vec<&str> = offered
        .to_str()
        .map(|o| o.split(',').map(protocol_name).collect())
        .unwrap_or_default();
    let mut named = headers
        .get_all(header::UPGRADE)
        .iter()
        .flat_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(protocol_name)
        .peekable();
    named.peek().is_some() && named.all(|n| offered.iter().any(|o| o.eq_ignore_ascii_case(n)))
}

async fn splice(downstream: OnUpgrade, upstream: Switched) {
    let (Some(down), Some((mut up, early))) = (downstream.upgraded().await, upstream.take()) else {
        return;
    };
    let Upgraded {
        io: mut down,
        read_ahead,
    } = down;
    // What either side sent right behind its head goes first.
    let spliced = async {
        up.write_all(&read_ahead).await?;
        down.write_all(&early).await?;
        tokio::io::copy_bidirectional(&mut down, &mut up).await
    };
    if let Err(e) = spliced.await {
        tracing::debug!(error = %e, "upgraded connection ended with an error");
    }
}

#[cfg(test)]
mod tests {
    use http::Request;

    use super::*;

    /// A request the HTTP/1.1 server offered an upgrade, with `headers`.
    fn offered(headers: &[(&str, &str)]) -> request::Parts {
        let mut req = Request::get("/chat");
        for (n, v) in headers {
            req = req.header(*n, *v);
        }
        let (mut parts, ()) = req.body(()).unwrap().into_parts();
        let (_tx, rx) = oneshot::channel();
        parts.extensions.insert(OnUpgrade::new(rx));
        parts
    }

    fn upgrade(parts: &request::Parts) -> Option<&str> {
        parts
            .headers
            .get(header::UPGRADE)
            .map(|v| v.to_str().unwrap())
    }

    #[test]
    fn websocket_passes_by_default_and_nothing_else() {
        let mut ws = offered(&[("upgrade", "WebSocket"), ("connection", "upgrade")]);
        assert!(requested(&mut ws, &[WEBSOCKET]).is_some());
        assert_eq!(upgrade(&ws), Some("WebSocket"));
        assert_eq!(ws.headers["connection"], "upgrade");

        for other in ["my-proto", "h2c", "TLS/1.2"] {
            let mut parts = offered(&[("upgrade", other), ("connection", "upgrade")]);
            assert!(requested(&mut parts, &[WEBSOCKET]).is_none(), "{other}");
            assert!(upgrade(&parts).is_none() && parts.headers.get("connection").is_none());
        }
    }

    #[test]
    fn a_route_may_allow_more_but_never_h2c() {
        let allowed = ["websocket", "my-proto", "h2c"];
        let mut parts = offered(&[
            ("upgrade", "h2c, my-proto/2, foo"),
            ("connection", "upgrade"),
        ]);
        assert!(requested(&mut parts, &allowed).is_some());
        assert_eq!(upgrade(&parts), Some("my-proto/2"));
        let mut h2c = offered(&[("upgrade", "h2c"), ("connection", "upgrade")]);
        assert!(requested(&mut h2c, &allowed).is_none());
        assert!(requested(&mut offered(&[("upgrade", "websocket")]), &[] as &[&str]).is_none());
    }

    #[test]
    fn a_request_the_server_offered_nothing_is_not_a_switch() {
        let mut req = offered(&[("upgrade", "websocket")]);
        req.extensions.clear();
        assert!(requested(&mut req, &[WEBSOCKET]).is_none());
        assert!(upgrade(&req).is_none());
    }

    #[test]
    fn a_switch_must_be_to_what_was_offered() {
        let answer = |protocol: Option<&str>| {
            let mut res = http::Response::builder().status(StatusCode::SWITCHING_PROTOCOLS);
            if let Some(p) = protocol {
                res = res.header("upgrade", p);
            }
            res.body(()).unwrap().into_parts().0
        };
        let pending = || {
            let mut parts = offered(&[("upgrade", "websocket"), ("connection", "upgrade")]);
            requested(&mut parts, &[WEBSOCKET])
        };
        let mut unasked = answer(Some("websocket"));
        assert_eq!(switch(None, &mut unasked), Err(ProxyError::BackendReset));
        let mut other = answer(Some("h2c"));
        assert_eq!(switch(pending(), &mut other), Err(ProxyError::BackendReset));
        let mut unnamed = answer(None);
        assert_eq!(
            switch(pending(), &mut unnamed),
            Err(ProxyError::BackendReset)
        );
        let mut switched = answer(Some("WebSocket"));
        assert_eq!(switch(pending(), &mut switched), Ok(true));
        let mut ok = http::Response::new(()).into_parts().0;
        assert_eq!(switch(pending(), &mut ok), Ok(false));
    }
}
