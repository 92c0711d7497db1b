//! HTTP/1.1 protocol switches (WebSocket and other `Upgrade`s) through a proxy: the client's
//! pending upgrade is taken from its request, and when the backend answers 101 the client's
//! connection (from Weir's HTTP/1.1 server) and the backend's (from its HTTP/1.1 client) are
//! spliced byte for byte.

use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http::{request, response, Method, StatusCode};
use tokio::{io::AsyncWriteExt, sync::oneshot};

use crate::{server::Transport, upstream::h1::Switched};

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
/// `Connection: upgrade` and `Upgrade`); `None` for every other request. The HTTP/1.1 server
/// offers one to exactly those requests (and to CONNECT, which is not a switch here), having
/// read their framing fields already.
pub fn requested(parts: &mut request::Parts) -> Option<OnUpgrade> {
    if parts.method == Method::CONNECT {
        return None;
    }
    parts.extensions.remove::<OnUpgrade>()
}

/// Whether the backend's answer switches protocols. If it does and the client asked to
/// (`downstream`), the two upgraded connections are spliced on a task of their own.
pub fn switch(downstream: Option<OnUpgrade>, response: &mut response::Parts) -> bool {
    if response.status != StatusCode::SWITCHING_PROTOCOLS {
        return false;
    }
    if let (Some(downstream), Some(upstream)) = (downstream, response.extensions.remove()) {
        tokio::spawn(splice(downstream, upstream));
    }
    true
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
