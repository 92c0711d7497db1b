//! A small Kubernetes API server for tests, faithful for exactly the calls Weir makes.
//!
//! These machines cannot run a real API server, so the controller's Kubernetes mode is tested
//! against this one, through a kubeconfig, as the real binary. It follows the API conventions
//! rather than what is convenient:
//!
//! - one cluster-wide `resourceVersion` counter, like etcd's revision; every write bumps it,
//!   a no-op update does not;
//! - list: label and field selectors, `limit` + `continue` pages consistent at the first page's
//!   version, `resourceVersion` + `resourceVersionMatch`, `410 Gone` for a compacted version;
//! - watch: from a `resourceVersion` (replaying what happened since), from "now" (synthetic
//!   ADDED events first), `BOOKMARK`s when asked, `timeoutSeconds`, an `ERROR` event with a 410
//!   `Status` for a compacted version, and ADDED/DELETED when an object starts or stops
//!   matching a selector;
//! - get, create (with `generateName`), update with optimistic concurrency (409 on a stale
//!   `resourceVersion`), merge patch (RFC 7386) and JSON patch (RFC 6902), delete;
//! - the status subresource: a write to the object ignores `status`, a write to `/status`
//!   changes only `status`; `generation` moves when anything but metadata and status changes;
//! - `TokenReview` with audiences; a pod's `portforward` (WebSocket) to its `status.podIP`;
//! - errors as `Status` objects with reason and code; every request needs the bearer token.
//!
//! Tests drive it directly (`apply`, `get`, `delete`, `compact`, `expire_watches`) and read
//! what the controller did (`requests`).

mod error;
mod meta;
mod portforward;
mod query;
mod resources;
mod review;
mod selector;
mod store;
mod target;
mod watch;

use std::{
    collections::HashMap,
    convert::Infallible,
    net::SocketAddr,
    path::{Path, PathBuf},
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc, Mutex,
    },
    time::Duration,
};

use bytes::Bytes;
use http::{Method, Request, Response};
use http_body_util::{combinators::UnsyncBoxBody, BodyExt, Full};
use hyper::body::Incoming;
use serde_json::Value;
use tokio::sync::broadcast;

pub use error::ApiError;
use query::Query;
use resources::{Resource, RESOURCES};
use store::{Change, Store};
use target::Target;

/// The bearer token the kubeconfig carries (and clients of the server must send).
pub const ADMIN_TOKEN: &str = "weir-test-admin";

/// A running test API server on loopback.
pub struct ApiServer {
    addr: SocketAddr,
    shared: Arc<Shared>,
    /// Dropped with the server, which stops its thread.
    _stop: tokio::sync::oneshot::Sender<()>,
}

struct Shared {
    store: Mutex<Store>,
    changes: broadcast::Sender<Arc<Change>>,
    /// Bumped to end every open watch.
    expire: tokio::sync::watch::Sender<u64>,
    tokens: Mutex<HashMap<String, Reviewed>>,
    requests: Mutex<Vec<String>>,
    /// How often open watches get a BOOKMARK, in milliseconds.
    bookmark_every: AtomicU64,
    /// Resources (plurals) served as a cluster without their CRD serves them: 404.
    uninstalled: Mutex<std::collections::HashSet<&'static str>>,
}

#[derive(Clone)]
struct Reviewed {
    username: String,
    audiences: Vec<String>,
    /// The pod a pod-bound projected token was issued for.
    pod: Option<String>,
}

impl ApiServer {
    /// Starts a server with an empty store on its own thread, so it keeps answering whatever
    /// the test's runtime is doing.
    pub fn start() -> Self {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        listener.set_nonblocking(true).expect("nonblocking");
        let addr = listener.local_addr().expect("addr");
        let shared = Arc::new(Shared {
            store: Mutex::new(Store::default()),
            changes: broadcast::channel(65_536).0,
            expire: tokio::sync::watch::Sender::new(0),
            tokens: Mutex::default(),
            requests: Mutex::default(),
            bookmark_every: AtomicU64::new(500),
            uninstalled: Mutex::default(),
        });
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let serving = shared.clone();
        std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            runtime.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).expect("listener");
                let accept = async {
                    loop {
                        let Ok((stream, _)) = listener.accept().await else {
                            continue;
                        };
                        let shared = serving.clone();
                        tokio::spawn(async move {
                            let service = hyper::service::service_fn(move |request| {
                                let shared = shared.clone();
                                async move { Ok::<_, Infallible>(handle(shared, request).await) }
                            });
                            let _ = hyper::server::conn::http1::Builder::new()
                                .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                                .with_upgrades()
                                .await;
                        });
                    }
                };
                tokio::select! {
                    _ = accept => {}
                    _ = stopped => {}
                }
            });
        });
        Self {
            addr,
            shared,
            _stop: stop,
        }
    }

    /// Serves `plural` (one of the known resources) as a cluster without its CRD does: every
    /// request for it gets 404, until [`ApiServer::install`].
    pub fn uninstall(&self, plural: &'static str) {
        self.shared
            .uninstalled
            .lock()
            .expect("uninstalled")
            .insert(plural);
    }

    /// Serves `plural` again, as installing its CRD does.
    pub fn install(&self, plural: &'static str) {
        self.shared
            .uninstalled
            .lock()
            .expect("uninstalled")
            .remove(plural);
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Writes a kubeconfig for this server (with the admin token) into `dir`.
    pub fn kubeconfig(&self, dir: &Path) -> PathBuf {
        let path = dir.join("kubeconfig");
        let text = format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: test\n  cluster: {{server: \"{}\"}}\n\
             users:\n- name: admin\n  user: {{token: {ADMIN_TOKEN}}}\ncontexts:\n\
             - name: test\n  context: {{cluster: test, user: admin, namespace: default}}\n\
             current-context: test\n",
            self.url()
        );
        std::fs::write(&path, text).expect("write kubeconfig");
        path
    }

    /// Creates or updates every object in a multi-document YAML text, as `kubectl apply`
    /// would (status included, so tests can also play the part of other controllers).
    pub fn apply(&self, yaml: &str) {
        let documents: Vec<Value> = serde_saphyr::from_multiple(yaml).expect("test YAML parses");
        for value in documents.into_iter().filter(|v| !v.is_null()) {
            let resource =
                Resource::of(&value).unwrap_or_else(|| panic!("unknown kind in {value}"));
            let namespace = value
                .pointer("/metadata/namespace")
                .and_then(Value::as_str)
                .map(str::to_string)
                .or_else(|| resource.namespaced.then(|| "default".to_string()));
            let changes = self
                .lock()
                .apply(resource, namespace.as_deref(), value)
                .unwrap_or_else(|e| panic!("apply refused: {}", e.message));
            self.publish(changes);
        }
    }

    /// The stored object, if there is one.
    pub fn get(&self, api_version: &str, kind: &str, namespace: &str, name: &str) -> Option<Value> {
        let resource = Resource::by_kind(api_version, kind)?;
        self.lock()
            .get(resource, Some(namespace).filter(|n| !n.is_empty()), name)
            .ok()
    }

    /// Every stored object of a kind, in every namespace.
    pub fn list(&self, api_version: &str, kind: &str) -> Vec<Value> {
        let Some(resource) = Resource::by_kind(api_version, kind) else {
            return Vec::new();
        };
        self.lock()
            .list(resource, None, &Query::default())
            .ok()
            .and_then(|l| l["items"].as_array().cloned())
            .unwrap_or_default()
    }

    /// Deletes an object; false when it was not there.
    pub fn delete(&self, api_version: &str, kind: &str, namespace: &str, name: &str) -> bool {
        let Some(resource) = Resource::by_kind(api_version, kind) else {
            return false;
        };
        let result = self
            .lock()
            .delete(resource, Some(namespace).filter(|n| !n.is_empty()), name);
        match result {
            Ok((_, changes)) => {
                self.publish(changes);
                true
            }
            Err(_) => false,
        }
    }

    /// Forgets the history before now, as etcd compaction does: watches and list pages from an
    /// older version get `410 Gone`.
    pub fn compact(&self) {
        self.lock().compact();
    }

    /// Sets how often watches that asked for bookmarks get one (500 ms by default; the real
    /// server sends one about every minute). Applies to watches opened after the call.
    pub fn bookmark_every(&self, every: Duration) {
        self.shared
            .bookmark_every
            .store(every.as_millis() as u64, Ordering::Relaxed);
    }

    /// Ends every open watch, as an API server restart or a load balancer would.
    pub fn expire_watches(&self) {
        self.shared.expire.send_modify(|n| *n += 1);
    }

    /// Lets `token` authenticate as `namespace/service_account` for these audiences.
    pub fn add_token(
        &self,
        token: &str,
        namespace: &str,
        service_account: &str,
        audiences: &[&str],
    ) {
        self.shared.tokens.lock().expect("tokens").insert(
            token.to_string(),
            Reviewed {
                username: format!("system:serviceaccount:{namespace}:{service_account}"),
                audiences: audiences.iter().map(|a| a.to_string()).collect(),
                pod: None,
            },
        );
    }

    /// Like [`ApiServer::add_token`], for a projected token bound to `pod`: its review names
    /// the pod in `status.user.extra`, as the real server's does.
    pub fn add_pod_token(&self, token: &str, namespace: &str, service_account: &str, pod: &str) {
        self.shared.tokens.lock().expect("tokens").insert(
            token.to_string(),
            Reviewed {
                username: format!("system:serviceaccount:{namespace}:{service_account}"),
                audiences: vec!["weir".to_string()],
                pod: Some(pod.to_string()),
            },
        );
    }

    /// How many TokenReviews were asked for so far.
    pub fn token_reviews(&self) -> usize {
        self.requests()
            .iter()
            .filter(|r| r.contains("/tokenreviews"))
            .count()
    }

    /// Every request so far, as `METHOD /path?query`.
    pub fn requests(&self) -> Vec<String> {
        self.shared.requests.lock().expect("requests").clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Store> {
        self.shared.store.lock().expect("store")
    }

    fn publish(&self, changes: Vec<Arc<Change>>) {
        for change in changes {
            let _ = self.shared.changes.send(change);
        }
    }
}

type Body = UnsyncBoxBody<Bytes, Infallible>;

async fn handle(shared: Arc<Shared>, request: Request<Incoming>) -> Response<Body> {
    let line = format!(
        "{} {}",
        request.method(),
        request
            .uri()
            .path_and_query()
            .map(|p| p.as_str())
            .unwrap_or("/")
    );
    shared.requests.lock().expect("requests").push(line);
    match serve(&shared, request).await {
        Ok(response) => response,
        Err(error) => json_response(error.code, &error.status()),
    }
}

async fn serve(
    shared: &Arc<Shared>,
    request: Request<Incoming>,
) -> Result<Response<Body>, ApiError> {
    let authorized = request
        .headers()
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        == Some(&format!("Bearer {ADMIN_TOKEN}"));
    if !authorized {
        return Err(ApiError::new(401, "Unauthorized", "Unauthorized"));
    }
    let target = Target::parse(request.uri().path())?;
    let plural = target.resource.plural;
    if shared
        .uninstalled
        .lock()
        .expect("uninstalled")
        .contains(plural)
    {
        return Err(ApiError::not_found(format!(
            "the server could not find the requested resource ({plural})"
        )));
    }
    if let (Some(namespace), Some(name), Some("portforward")) = (
        &target.namespace,
        &target.name,
        target.subresource.as_deref().filter(|_| plural == "pods"),
    ) {
        return portforward::serve(shared, namespace, name, request);
    }
    let query = Query::parse(request.uri().query().unwrap_or_default())?;
    let method = request.method().clone();
    let content_type = request
        .headers()
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    let body = request
        .into_body()
        .collect()
        .await
        .map_err(|e| ApiError::bad_request(format!("cannot read the body: {e}")))?
        .to_bytes();
    let parse_body = || {
        serde_json::from_slice::<Value>(&body)
            .map_err(|e| ApiError::bad_request(format!("the body is not JSON: {e}")))
    };

    if target.resource.plural == "tokenreviews" {
        return match method {
            Method::POST => Ok(json_response(201, &review::review(shared, parse_body()?)?)),
            _ => Err(ApiError::method_not_allowed()),
        };
    }
    let namespace = target.namespace.as_deref();
    let resource = target.resource;
    let (status, value, changes) = {
        let mut store = shared.store.lock().expect("store");
        match (
            &method,
            target.name.as_deref(),
            target.subresource.as_deref(),
        ) {
            (&Method::GET, None, None) if query.watch => {
                drop(store);
                return watch::watch(shared, resource, target.namespace, query);
            }
            (&Method::GET, None, None) => (200, store.list(resource, namespace, &query)?, vec![]),
            (&Method::GET, Some(name), None | Some("status")) => {
                (200, store.get(resource, namespace, name)?, vec![])
            }
            (&Method::POST, None, None) => {
                let (object, changes) = store.create(resource, namespace, parse_body()?)?;
                (201, object, changes)
            }
            (&Method::PUT, Some(name), sub) => {
                let (object, changes) =
                    store.update(resource, namespace, name, sub, parse_body()?)?;
                (200, object, changes)
            }
            (&Method::PATCH, Some(name), sub) => {
                let patched = store.patch(resource, namespace, name, &content_type, &body)?;
                let (object, changes) = store.update(resource, namespace, name, sub, patched)?;
                (200, object, changes)
            }
            (&Method::DELETE, Some(name), None) => {
                let (object, changes) = store.delete(resource, namespace, name)?;
                (200, object, changes)
            }
            (_, _, Some(sub)) if sub != "status" => {
                return Err(ApiError::not_found(format!(
                    "the server could not find the requested resource ({sub})"
                )))
            }
            _ => return Err(ApiError::method_not_allowed()),
        }
    };
    for change in changes {
        let _ = shared.changes.send(change);
    }
    Ok(json_response(status, &value))
}

fn json_response(code: u16, value: &Value) -> Response<Body> {
    Response::builder()
        .status(code)
        .header(http::header::CONTENT_TYPE, "application/json")
        .body(Full::new(Bytes::from(serde_json::to_vec(value).expect("json"))).boxed_unsync())
        .expect("response")
}
