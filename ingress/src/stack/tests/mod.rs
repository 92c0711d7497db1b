//! In-process tests of the ingress pipeline: Kubernetes objects compiled from YAML and
//! installed into a [`Gateway`] as `weir-ingress --config-dir` installs them, requests driven
//! through [`handle`] as the server hands them over (no listener, no client socket), and stub
//! upstreams that record what they received. Each test asserts what the client gets back and
//! what the backend saw.
//!
//! ```text
//!  Pipeline::serving(yaml) ─ compile ─▶ Installer (Registry::prepare) ─▶ Gateway
//!  pipe.get("host/path").header(..).send() ─▶ handle ─▶ Stub (127.0.0.1:0) ─▶ Reply
//! ```
//!
//! The topics: [`routing`], [`filters`], [`guards`] (auth and rate limits), [`upstreams`]
//! (retries, balancing, error mapping), [`fields`] (what the gateway stamps on a request).

mod fields;
mod filters;
mod guards;
mod routing;
use weir_e2e::stub;
mod upstreams;

pub(super) use stub::{service, Reply};

use std::sync::Arc;

use bytes::Bytes;
use http::{header, Method, Request};
use weir_api::{load::load_str, Objects};
use weir_http::{
    body,
    server::Peer,
    upstream::{Upstream, UpstreamSettings},
};
use weir_proxy::{
    access_log::AccessLog,
    config::{ConfigStore, Installer},
    headers::{FieldPolicy, UnderscoreHeaders},
    metrics::Metrics,
    normalize::PathPolicy,
};

use super::{handle, Gateway};
use crate::{auth::jwks::HttpsClient, metrics::GuardMetrics, security::Registry};

/// The address every test request comes from (TEST-NET-3).
pub(super) const CLIENT: &str = "203.0.113.7:50000";

/// The Gateway `gw` in `default` every route attaches to: HTTP on port 80, any host.
const GATEWAY: &str = "apiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata: {name: gw, namespace: default}\nspec:\n  gatewayClassName: weir\n  listeners: [{name: http, protocol: HTTP, port: 80}]\n";

/// An HTTPRoute `name` in `default` on `gw` for `hosts`, with the `rules:` body `rules`
/// (indented by 2).
pub(super) fn route(name: &str, hosts: &[&str], rules: &str) -> String {
    let hosts = hosts.join(", ");
    format!(
        "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {{name: {name}, namespace: default}}\nspec:\n  parentRefs: [{{name: gw}}]\n  hostnames: [{hosts}]\n  rules:\n{rules}"
    )
}

/// A Weir policy `kind` named `name` in `default` targeting `target` (`HTTPRoute/shop`,
/// `Service/app`), with `spec` lines (indented by 2) after the targetRefs.
pub(super) fn policy(kind: &str, name: &str, target: &str, spec: &str) -> String {
    let (target_kind, target) = target.split_once('/').expect("Kind/name");
    let group = match target_kind {
        "Service" => "\"\"",
        _ => "gateway.networking.k8s.io",
    };
    format!(
        "apiVersion: weir.dev/v1alpha1\nkind: {kind}\nmetadata: {{name: {name}, namespace: default}}\nspec:\n  targetRefs: [{{group: {group}, kind: {target_kind}, name: {target}}}]\n{spec}"
    )
}

/// A gateway serving some objects, driven in-process.
pub(super) struct Pipeline {
    gw: Arc<Gateway>,
}

impl Pipeline {
    /// The gateway as `weir-ingress --config-dir` serves a directory holding `objects` (YAML
    /// documents) and the Gateway `gw`, with its default flags and the access log off.
    pub fn serving(objects: &[&str]) -> Self {
        let metrics = Metrics::new();
        let guard_metrics = GuardMetrics::register(metrics.registry());
        let registry = Registry::new(guard_metrics.clone(), jwks_client(), None);
        let store = Arc::new(ConfigStore::new(metrics.clone()));
        let installer = Installer::new(store.clone())
            .prepare(Box::new(move |snapshot| registry.prepare(snapshot)));
        let snapshot = weir_api::compile(&load(objects)).unwrap_or_else(|e| panic!("{e}"));
        installer.install(snapshot, None);
        let gw = Gateway {
            store,
            upstream: Upstream::new(&UpstreamSettings::default(), &metrics.http),
            access_log: AccessLog::off(),
            metrics,
            guard_metrics,
            max_header_bytes: 64 * 1024,
            fields: FieldPolicy::default(),
            paths: PathPolicy::default(),
            underscores: UnderscoreHeaders::default(),
            tracer: None,
        };
        Self { gw: Arc::new(gw) }
    }

    /// As `--underscore-headers keep` would have it.
    pub fn keeping_underscores(mut self) -> Self {
        let gw = Arc::get_mut(&mut self.gw).expect("not shared before the first request");
        gw.underscores = UnderscoreHeaders::Keep;
        self
    }

    /// A GET of `url` (`host/path?query`).
    pub fn get(&self, url: &str) -> Call<'_> {
        self.call(Method::GET, url)
    }

    /// A request of `url` (`host/path?query`) with `method`.
    pub fn call(&self, method: Method, url: &str) -> Call<'_> {
        let (host, target) = match url.find('/') {
            Some(i) => url.split_at(i),
            None => (url, "/"),
        };
        let request = Request::builder()
            .method(method)
            .uri(target)
            .header(header::HOST, host);
        Call {
            gw: &self.gw,
            request,
            body: Bytes::new(),
        }
    }
}

/// Every object in `documents`, as the directory loader reads them.
fn load(documents: &[&str]) -> Objects {
    let (mut objects, mut errors) = (Objects::new(), Vec::new());
    for (i, yaml) in std::iter::once(&GATEWAY).chain(documents).enumerate() {
        load_str(yaml, &format!("test-{i}.yaml"), &mut objects, &mut errors);
    }
    assert!(errors.is_empty(), "{errors:#?}");
    objects
}

/// A JWKS client that trusts nothing: no test fetches keys over the network.
fn jwks_client() -> HttpsClient {
    let tls = rustls::ClientConfig::builder()
        .with_root_certificates(rustls::RootCertStore::empty())
        .with_no_client_auth();
    let connector = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_only()
        .enable_http1()
        .build();
    hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build(connector)
}

/// One request on its way into the pipeline.
pub(super) struct Call<'a> {
    gw: &'a Arc<Gateway>,
    request: http::request::Builder,
    body: Bytes,
}

impl Call<'_> {
    /// Adds a header field.
    pub fn header(mut self, name: &str, value: &str) -> Self {
        self.request = self.request.header(name, value);
        self
    }

    /// Sends `body` (with its Content-Length).
    pub fn body(mut self, body: &str) -> Self {
        self.body = Bytes::copy_from_slice(body.as_bytes());
        self.header(header::CONTENT_LENGTH.as_str(), &body.len().to_string())
    }

    /// Sends `body` in chunks, with no length said up front.
    pub fn chunked(mut self, body: &str) -> Self {
        self.body = Bytes::copy_from_slice(body.as_bytes());
        self.header(header::TRANSFER_ENCODING.as_str(), "chunked")
    }

    /// Runs the request through the pipeline and reads the whole response.
    pub async fn send(self) -> Reply {
        let body = match self.body.is_empty() {
            true => body::empty(),
            false => body::full(self.body),
        };
        let request = self.request.body(body).expect("a valid request");
        let client = Peer {
            addr: CLIENT.parse().expect("an address"),
            tls: false,
        };
        Reply::read(handle(self.gw.clone(), 80, client, request).await).await
    }
}
