//! In-process tests of the sidecar's two HTTP pipelines: a view compiled from Kubernetes
//! objects as the controller compiles it for pod `default/app-0`, split and installed as
//! `weir-sidecar` installs what the controller streams, and requests handed to
//! [`Outbound::request`] and [`Inbound::request`] as the server would hand them over (no
//! listener, no socket, no mTLS handshake: the caller's identity is given as a handshake would
//! have proved it). Upstreams are the stubs the ingress's tests use too (`weir_e2e::stub`), plaintext endpoints of the mesh.
//!
//! ```text
//!  Sidecar::serving(yaml) ─ compile ─ Mesh::inbound + services + clusters ─ view::split ─▶ store
//!  sidecar.outbound("app/path") ─▶ Outbound::request ─▶ Stub
//!  sidecar.inbound(app, "/path").from(spiffe) ─▶ Inbound::request ─▶ Stub (the app)
//! ```

use weir_e2e::stub;

mod inbound;
mod outbound;

use std::{net::SocketAddr, sync::Arc, time::Duration};

use http::{header, Method, Request};
use weir_api::{load::load_str, model::SidecarView, Objects};
use weir_http::{
    body,
    server::{Http, Peer, ServerSettings},
    upstream::{Upstream, UpstreamSettings},
};
use weir_mesh::{
    identity::WorkloadIdentity,
    mtls::{self, Dialer},
};
use weir_proxy::{
    access_log::AccessLog,
    config::{ConfigStore, Installer},
    metrics::Metrics,
    normalize::PathPolicy,
};

use crate::{inbound::Inbound, metrics::MeshMetrics, outbound::Outbound, view};
use stub::Reply;

/// The pod whose sidecar this is.
const POD: (&str, &str) = ("default", "app-0");

/// The address the app's calls come from (its own pod, on loopback).
const APP: &str = "127.0.0.1:40000";

/// One sidecar's two directions over one store.
pub(crate) struct Sidecar {
    outbound: Arc<Outbound>,
    inbound: Arc<Inbound>,
}

impl Sidecar {
    /// The sidecar of [`POD`] serving the view the controller compiles from `objects`.
    pub fn serving(objects: &[&str]) -> Self {
        let snapshot = weir_api::compile(&load(objects)).unwrap_or_else(|e| panic!("{e}"));
        let mesh = snapshot.mesh;
        let inbound = mesh.inbound(POD.0, POD.1);
        let view = SidecarView {
            requires: inbound.requires().into_iter().map(String::from).collect(),
            inbound,
            services: mesh.services.clone(),
            clusters: mesh.clusters.clone(),
        };
        let (snapshot, state) = view::split(view);

        let metrics = Metrics::new();
        let identity = Arc::new(WorkloadIdentity::default());
        let dialer = Arc::new(Dialer::new(
            identity.clone(),
            "cluster.local",
            &metrics.identity,
        ));
        let store = Arc::new(ConfigStore::new(metrics.clone()));
        let installer = Installer::new(store.clone()).mesh(dialer.clone());
        installer.install(snapshot, Some(state));

        let settings = UpstreamSettings::default();
        let server = ServerSettings::default();
        let access_log = AccessLog::off();
        let mesh = MeshMetrics::new(&metrics);
        let outbound = Outbound {
            store: store.clone(),
            http: Http::new(&server, &metrics.http),
            upstream: Upstream::with_mesh(&settings, &metrics.http, dialer.clone()),
            dialer,
            namespace: POD.0.to_string(),
            detect_timeout: Duration::from_secs(1),
            connect_timeout: settings.connect_timeout,
            metrics: metrics.clone(),
            access_log: access_log.clone(),
            tracer: None,
            mesh: mesh.clone(),
        };
        let config = mtls::server_config(identity).expect("the inbound mTLS configuration");
        let handshakes = |result: &str| {
            let labels = ["inbound", result];
            metrics.identity.handshakes.with_label_values(&labels)
        };
        let inbound = Inbound {
            store,
            acceptor: tokio_rustls::TlsAcceptor::from(Arc::new(config)),
            http: Http::new(&server, &metrics.http),
            app: Upstream::new(&settings, &metrics.http),
            app_port: None,
            own_ports: Vec::new(),
            detect_timeout: Duration::from_secs(1),
            handshake_timeout: Duration::from_secs(1),
            trust_domain: "cluster.local".into(),
            own: format!("{}/app", POD.0),
            handshakes: (handshakes("ok"), handshakes("error")),
            metrics,
            access_log,
            tracer: None,
            mesh,
            paths: PathPolicy::default(),
        };
        Self {
            outbound: Arc::new(outbound),
            inbound: Arc::new(inbound),
        }
    }

    /// A GET the app sends to `url` (`host/path`: the host names a Service) through the
    /// outbound port.
    pub fn outbound(&self, url: &str) -> Call<'_> {
        let (host, path) = url.split_at(url.find('/').unwrap_or(url.len()));
        let call = self.call(Way::Out, if path.is_empty() { "/" } else { path });
        call.header(header::HOST.as_str(), host)
    }

    /// A GET of `path` for the app at `app`, arriving on the inbound port in plaintext.
    pub fn inbound(&self, app: SocketAddr, path: &str) -> Call<'_> {
        let call = self.call(Way::In { app, caller: None }, path);
        call.header(header::HOST.as_str(), "app.default")
    }

    fn call(&self, way: Way, path: &str) -> Call<'_> {
        Call {
            sidecar: self,
            way,
            request: Request::builder().uri(path),
        }
    }
}

/// Every object in `documents`, as the directory loader reads them.
fn load(documents: &[&str]) -> Objects {
    let (mut objects, mut errors) = (Objects::new(), Vec::new());
    for (i, yaml) in documents.iter().enumerate() {
        load_str(yaml, &format!("test-{i}.yaml"), &mut objects, &mut errors);
    }
    assert!(errors.is_empty(), "{errors:#?}");
    objects
}

/// Which pipeline a request goes through.
enum Way {
    Out,
    /// To the app at `app`, from `caller` (a SPIFFE ID mTLS proved) or in plaintext.
    In {
        app: SocketAddr,
        caller: Option<Arc<str>>,
    },
}

/// One request on its way into a pipeline.
pub(crate) struct Call<'a> {
    sidecar: &'a Sidecar,
    way: Way,
    request: http::request::Builder,
}

impl Call<'_> {
    /// Adds a header field.
    pub fn header(mut self, name: &str, value: &str) -> Self {
        self.request = self.request.header(name, value);
        self
    }

    /// Uses `method` instead of GET.
    pub fn method(mut self, method: Method) -> Self {
        self.request = self.request.method(method);
        self
    }

    /// Arrives over mTLS from a peer whose certificate proved `spiffe_id`.
    pub fn from(mut self, spiffe_id: &str) -> Self {
        if let Way::In { caller, .. } = &mut self.way {
            *caller = Some(Arc::from(spiffe_id));
        }
        self
    }

    /// Runs the request through its pipeline and reads the whole response.
    pub async fn send(self) -> Reply {
        let request = self.request.body(body::empty()).expect("a valid request");
        let s = self.sidecar;
        let response = match self.way {
            Way::Out => {
                let app = Peer {
                    addr: APP.parse().expect("an address"),
                    tls: false,
                };
                s.outbound.clone().request(app, None, request).await
            }
            Way::In { app, caller } => {
                let peer = Peer {
                    addr: "10.0.0.9:43000".parse().expect("an address"),
                    tls: caller.is_some(),
                };
                s.inbound.clone().request(peer, caller, app, request).await
            }
        };
        Reply::read(response).await
    }
}
