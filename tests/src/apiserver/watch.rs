//! Watches: the changes since a version (or the current objects), then live ones, with
//! bookmarks, until the timeout, an expiry, or the client going away.

use std::{
    convert::Infallible,
    sync::{atomic::Ordering, Arc},
    time::Duration,
};

use bytes::Bytes;
use http::{Response, StatusCode};
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;
use serde_json::{json, Value};
use tokio::sync::mpsc;

use super::{ApiError, Body, Query, Resource, Shared};

pub(super) fn watch(
    shared: &Arc<Shared>,
    resource: &'static Resource,
    namespace: Option<String>,
    query: Query,
) -> Result<Response<Body>, ApiError> {
    let (tx, rx) = mpsc::channel::<Bytes>(256);
    let mut expire = shared.expire.subscribe();
    let (mut changes, backlog, mut seen) = {
        let store = shared.store.lock().expect("store");
        // Subscribing under the lock: nothing can happen between the backlog and the stream.
        let changes = shared.changes.subscribe();
        let from = query.resource_version.filter(|v| *v != 0);
        match store.since(resource, namespace.as_deref(), &query, from) {
            Ok(backlog) => (changes, backlog, store.revision()),
            Err(gone) => {
                let line = watch_line("ERROR", &gone.status());
                return Ok(stream_response(Box::pin(tokio_stream::iter([line]))));
            }
        }
    };
    let timeout = query.timeout.unwrap_or(Duration::from_secs(1800));
    let bookmarks = query.bookmarks;
    let bookmark_every = Duration::from_millis(shared.bookmark_every.load(Ordering::Relaxed));
    tokio::spawn(async move {
        for (kind, object) in backlog {
            if tx.send(watch_line(kind, &object)).await.is_err() {
                return;
            }
        }
        let deadline = tokio::time::sleep(timeout);
        tokio::pin!(deadline);
        let mut tick = tokio::time::interval(bookmark_every);
        let mut bookmarked = seen;
        loop {
            // Biased: a watch that was expired before a change happened never delivers it,
            // as an API server that restarted would not.
            tokio::select! {
                biased;
                _ = expire.changed() => return,
                _ = &mut deadline => return,
                _ = tick.tick(), if bookmarks => {
                    if seen > bookmarked {
                        bookmarked = seen;
                        let mark = json!({
                            "kind": resource.kind,
                            "apiVersion": resource.api_version(),
                            "metadata": {"resourceVersion": seen.to_string()},
                        });
                        if tx.send(watch_line("BOOKMARK", &mark)).await.is_err() {
                            return;
                        }
                    }
                }
                change = changes.recv() => {
                    // A watcher that fell this far behind is ended; it resumes from its
                    // last version like any client whose watch closed.
                    let Ok(change) = change else { return };
                    seen = change.revision;
                    if let Some((kind, object)) = change.seen_by(resource, namespace.as_deref(), &query) {
                        if tx.send(watch_line(kind, &object)).await.is_err() {
                            return;
                        }
                    }
                }
            }
        }
    });
    Ok(stream_response(Box::pin(
        tokio_stream::wrappers::ReceiverStream::new(rx),
    )))
}

fn watch_line(kind: &str, object: &Value) -> Bytes {
    let mut line = serde_json::to_vec(&json!({"type": kind, "object": object})).expect("json");
    line.push(b'\n');
    Bytes::from(line)
}

fn stream_response(
    lines: std::pin::Pin<Box<dyn tokio_stream::Stream<Item = Bytes> + Send>>,
) -> Response<Body> {
    use tokio_stream::StreamExt;
    let body = StreamBody::new(lines.map(|line| Ok::<_, Infallible>(Frame::data(line))));
    Response::builder()
        .status(StatusCode::OK)
        .header(http::header::CONTENT_TYPE, "application/json")
        .body(BodyExt::boxed_unsync(body))
        .expect("response")
}
