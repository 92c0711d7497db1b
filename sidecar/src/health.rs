//! The admin listener's sidecar pages: readiness waits for the workload certificate, and
//! `/app-health/CONTAINER/{livez,readyz,startupz}` forwards a kubelet probe to the app's
//! original probe (the injector rewrote the pod's HTTP probes to these, so they keep working
//! when STRICT mTLS would refuse the kubelet's plaintext).

use std::{collections::HashMap, sync::Arc, time::Duration};

use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use serde::Deserialize;
use weir_api::model::Protocol;
use weir_proxy::{
    admin::{text, Pages, Responding},
    body::{boxed, empty, Body},
    identity::WorkloadIdentity,
    upstream::Upstream,
};

/// A kubelet gives up on a probe long before this.
const PROBE_TIMEOUT: Duration = Duration::from_secs(10);

/// An HTTP probe as the pod declared it (`WEIR_APP_PROBES` values).
#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AppProbe {
    /// The app's port.
    pub port: u16,
    /// Its path.
    #[serde(default = "root")]
    pub path: String,
    /// `HTTP` or `HTTPS`.
    #[serde(default = "http")]
    pub scheme: String,
    /// Headers to send.
    #[serde(default)]
    pub http_headers: Vec<ProbeHeader>,
}

/// One probe header.
#[derive(Clone, Debug, Deserialize)]
pub struct ProbeHeader {
    /// Its name.
    pub name: String,
    /// Its value.
    pub value: String,
}

fn root() -> String {
    "/".into()
}

fn http() -> String {
    "HTTP".into()
}

/// Parses `WEIR_APP_PROBES`: a JSON object from `/app-health/...` path to [`AppProbe`].
pub fn parse_probes(json: &str) -> Result<HashMap<String, AppProbe>, String> {
    serde_json::from_str(json).map_err(|e| format!("WEIR_APP_PROBES is not valid: {e}"))
}

/// The sidecar's admin pages.
pub struct SidecarPages {
    /// Ready once it holds a certificate.
    pub identity: Arc<WorkloadIdentity>,
    /// Probes by path.
    pub probes: HashMap<String, AppProbe>,
    /// Connections to the app.
    pub app: Upstream,
}

impl Pages for SidecarPages {
    fn not_ready(&self) -> Option<&'static str> {
        (!self.identity.ready()).then_some("no workload certificate yet")
    }

    fn serve(&self, req: Request<Incoming>) -> Option<Responding> {
        let path = req.uri().path();
        if !path.starts_with("/app-health/") {
            return None;
        }
        let Some(probe) = self.probes.get(path).cloned() else {
            let unknown = text(
                StatusCode::NOT_FOUND,
                format!("no probe {path}\n"),
                "text/plain",
            );
            return Some(Box::pin(std::future::ready(unknown)));
        };
        let app = self.app.clone();
        Some(Box::pin(async move { forward(app, probe).await }))
    }
}

/// Asks the app; its status (the kubelet's verdict) comes back, its body does not.
async fn forward(app: Upstream, probe: AppProbe) -> Response<Body> {
    if !probe.scheme.eq_ignore_ascii_case("http") {
        let message = format!("{} probes are not forwarded; only HTTP\n", probe.scheme);
        return text(StatusCode::NOT_IMPLEMENTED, message, "text/plain");
    }
    let mut request = Request::get(format!("http://127.0.0.1:{}{}", probe.port, probe.path));
    for h in &probe.http_headers {
        request = request.header(&h.name, &h.value);
    }
    let Ok(request) = request.body(empty()) else {
        return text(
            StatusCode::BAD_REQUEST,
            "the probe is not a valid request\n",
            "text/plain",
        );
    };
    match tokio::time::timeout(PROBE_TIMEOUT, app.client(Protocol::Http1).request(request)).await {
        Ok(Ok(response)) => {
            let mut answer = Response::new(boxed(empty()));
            *answer.status_mut() = response.status();
            answer
        }
        Ok(Err(error)) => text(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("the app did not answer: {error}\n"),
            "text/plain",
        ),
        Err(_) => text(
            StatusCode::SERVICE_UNAVAILABLE,
            "the app did not answer in time\n",
            "text/plain",
        ),
    }
}
