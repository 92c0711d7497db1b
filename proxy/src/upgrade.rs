//! HTTP/1.1 protocol switches (WebSocket and other `Upgrade`s) through a proxy: the client's
//! pending upgrade is taken from its request, and when the backend answers 101 the client's
//! connection (from hyper) and the backend's (from Weir's HTTP/1.1 client) are spliced byte
//! for byte.

use http::{request, response, StatusCode, Version};
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use tokio::io::AsyncWriteExt;

use crate::{headers, upstream::h1::Switched};

/// The client's pending upgrade when `parts` asks for a protocol switch (HTTP/1.1 with
/// `Connection: upgrade` and `Upgrade`); `None` for every other request.
pub fn requested(parts: &mut request::Parts) -> Option<OnUpgrade> {
    if parts.version == Version::HTTP_11 && headers::is_upgrade(&parts.headers) {
        parts.extensions.remove::<OnUpgrade>()
    } else {
        None
    }
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
    let (Ok(down), Some((mut up, early))) = (downstream.await, upstream.take()) else {
        return;
    };
    let mut down = TokioIo::new(down);
    // What the backend sent right behind its 101 goes first.
    let spliced = async {
        down.write_all(&early).await?;
        tokio::io::copy_bidirectional(&mut down, &mut up).await
    };
    if let Err(e) = spliced.await {
        tracing::debug!(error = %e, "upgraded connection ended with an error");
    }
}
