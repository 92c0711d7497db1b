//! The admin listener's sidecar pages: readiness waits for the workload certificate, and
//! `/app-health/CONTAINER/{livez,readyz,startupz}` forwards a kubelet probe to the app's
//! original probe (the injector rewrote the pod's HTTP probes to these, so they keep working
//! when STRICT mTLS would refuse the kubelet's plaintext). HTTPS probes are forwarded as the
//! kubelet makes them: TLS without checking the app's certificate.

use std::{collections::HashMap, sync::Arc, time::Duration};

use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper_rustls::HttpsConnector;
use hyper_util::{
    client::legacy::{connect::HttpConnector, Client},
    rt::TokioExecutor,
};
use rustls::{
    client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier},
    crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider},
    pki_types::{CertificateDer, ServerName, UnixTime},
    DigitallySignedStruct, SignatureScheme,
};
use serde::Deserialize;
use weir_api::model::Protocol;
use weir_http::{
    body::{boxed, empty, Body},
    upstream::Upstream,
};
use weir_mesh::identity::WorkloadIdentity;
use weir_proxy::admin::{text, Pages, Responding};

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
    /// HTTPS connections to the app, for HTTPS probes.
    pub https: HttpsProbes,
}

/// The client for HTTPS probes.
pub type HttpsProbes = Client<HttpsConnector<HttpConnector>, Body>;

/// A client that speaks TLS to the app the way the kubelet does for an HTTPS probe: the app's
/// certificate (its own, often self-signed, for a name that is not `127.0.0.1`) is not
/// checked; the handshake's signatures are.
pub fn https_probes() -> HttpsProbes {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .expect("the provider supports the default TLS versions")
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AnyCertificate(provider)))
        .with_no_client_auth();
    let connector = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(config)
        .https_only()
        .enable_http1()
        .build();
    Client::builder(TokioExecutor::new()).build(connector)
}

#[derive(Debug)]
struct AnyCertificate(Arc<CryptoProvider>);

impl ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

impl Pages for SidecarPages {
    fn not_ready(&self) -> Option<&'static str> {
        (!self.identity.ready()).then_some("no workload certificate yet")
    }

    fn public(&self, path: &str) -> bool {
        // The kubelet's rewritten probes come from the node's address.
        path.starts_with("/app-health/")
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
        let (app, https) = (self.app.clone(), self.https.clone());
        Some(Box::pin(async move { forward(&app, &https, probe).await }))
    }
}

/// Asks the app; its status (the kubelet's verdict) comes back, its body does not.
async fn forward(app: &Upstream, https: &HttpsProbes, probe: AppProbe) -> Response<Body> {
    let scheme = probe.scheme.to_ascii_lowercase();
    if scheme != "http" && scheme != "https" {
        let message = format!(
            "{} probes are not forwarded; only HTTP and HTTPS\n",
            probe.scheme
        );
        return text(StatusCode::NOT_IMPLEMENTED, message, "text/plain");
    }
    let uri = format!("{scheme}://127.0.0.1:{}{}", probe.port, probe.path);
    let mut request = Request::get(uri);
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
    let sent = async {
        if scheme == "https" {
            let response = https.request(request).await;
            response
                .map(|r| r.status())
                .map_err(|e| weir_http::error::chain(&e))
        } else {
            let response = app.send(Protocol::Http1, request).await;
            response
                .map(|r| r.status())
                .map_err(|e| weir_http::error::chain(&e))
        }
    };
    match tokio::time::timeout(PROBE_TIMEOUT, sent).await {
        Ok(Ok(status)) => {
            let mut answer = Response::new(boxed(empty()));
            *answer.status_mut() = status;
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
