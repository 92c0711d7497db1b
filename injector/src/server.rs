//! The webhook's HTTPS server. The serving certificate is read again whenever its files
//! change, so a renewed certificate is used without a restart.

use std::{
    convert::Infallible,
    path::{Path, PathBuf},
    sync::Arc,
    time::{Duration, SystemTime},
};

use anyhow::Context as _;
use arc_swap::ArcSwap;
use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use rustls::{
    server::{ClientHello, ResolvesServerCert},
    sign::CertifiedKey,
};
use rustls_pki_types::{pem::PemObject, CertificateDer, PrivateKeyDer};
use tokio::net::TcpListener;

use crate::{config::Config, inject::NamespaceDefault, metrics::Metrics, review};

/// The largest review accepted (the API server's own request limit is 3 MiB).
const MAX_BODY: usize = 4 << 20;

/// The certificate in use, swapped when the files change.
#[derive(Debug)]
struct Reloading(ArcSwap<CertifiedKey>);

impl ResolvesServerCert for Reloading {
    fn resolve(&self, _: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.load_full())
    }
}

fn load(cert: &Path, key: &Path) -> anyhow::Result<CertifiedKey> {
    let chain = CertificateDer::pem_file_iter(cert)
        .with_context(|| format!("cannot read --tls-cert {}", cert.display()))?
        .collect::<Result<Vec<_>, _>>()
        .with_context(|| format!("--tls-cert {} is not PEM certificates", cert.display()))?;
    anyhow::ensure!(
        !chain.is_empty(),
        "--tls-cert {} holds no certificate",
        cert.display()
    );
    let key = PrivateKeyDer::from_pem_file(key)
        .with_context(|| format!("cannot read a private key from --tls-key {}", key.display()))?;
    let provider = rustls::crypto::aws_lc_rs::default_provider();
    CertifiedKey::from_der(chain, key, &provider).context("the certificate and key do not match")
}

fn modified(paths: &[&Path]) -> Vec<Option<SystemTime>> {
    paths
        .iter()
        .map(|p| std::fs::metadata(p).and_then(|m| m.modified()).ok())
        .collect()
}

/// Serves the webhook on `listener` until the task is dropped.
pub async fn serve(
    listener: TcpListener,
    config: Arc<Config>,
    metrics: Arc<Metrics>,
    cert: PathBuf,
    key: PathBuf,
) -> anyhow::Result<()> {
    let resolver = Arc::new(Reloading(ArcSwap::from_pointee(load(&cert, &key)?)));
    let reloader = resolver.clone();
    tokio::spawn(async move {
        let mut seen = modified(&[&cert, &key]);
        loop {
            tokio::time::sleep(Duration::from_secs(2)).await;
            let now = modified(&[&cert, &key]);
            if now == seen {
                continue;
            }
            seen = now;
            match load(&cert, &key) {
                Ok(loaded) => {
                    reloader.0.store(Arc::new(loaded));
                    tracing::info!(cert = %cert.display(), "serving certificate reloaded");
                }
                // A half-written pair: the next change (or the next look) picks it up.
                Err(error) => {
                    tracing::warn!(%error, "serving certificate not reloaded; the previous one stays")
                }
            }
        }
    });
    let mut tls = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()?
    .with_no_client_auth()
    .with_cert_resolver(resolver);
    tls.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(tls));
    loop {
        let (tcp, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(error) => {
                tracing::warn!(%error, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = tcp.set_nodelay(true);
        let (acceptor, config, metrics) = (acceptor.clone(), config.clone(), metrics.clone());
        tokio::spawn(async move {
            let stream =
                match tokio::time::timeout(Duration::from_secs(10), acceptor.accept(tcp)).await {
                    Ok(Ok(stream)) => stream,
                    Ok(Err(error)) => {
                        tracing::debug!(%peer, %error, "TLS handshake failed");
                        return;
                    }
                    Err(_) => return,
                };
            let service = hyper::service::service_fn(move |request| {
                let (config, metrics) = (config.clone(), metrics.clone());
                async move { Ok::<_, Infallible>(handle(&config, &metrics, request).await) }
            });
            let _ =
                hyper_util::server::conn::auto::Builder::new(hyper_util::rt::TokioExecutor::new())
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                    .await;
        });
    }
}

async fn handle(
    config: &Config,
    metrics: &Metrics,
    request: Request<Incoming>,
) -> Response<Full<Bytes>> {
    let path = request.uri().path().to_string();
    let opt_in_query = request
        .uri()
        .query()
        .is_some_and(|q| q.split('&').any(|p| p == "default=disabled"));
    let default = match path.as_str() {
        "/inject/opt-in" => NamespaceDefault::Disabled,
        _ if opt_in_query => NamespaceDefault::Disabled,
        _ => NamespaceDefault::Enabled,
    };
    match (request.method(), path.as_str()) {
        (&Method::GET, "/healthz") => reply(StatusCode::OK, "text/plain", "ok\n".into()),
        (&Method::POST, "/inject" | "/inject/opt-in") => {
            let body = match Limited::new(request.into_body(), MAX_BODY).collect().await {
                Ok(body) => body.to_bytes(),
                Err(_) => {
                    return reply(
                        StatusCode::PAYLOAD_TOO_LARGE,
                        "text/plain",
                        format!("an AdmissionReview is at most {MAX_BODY} bytes\n").into(),
                    )
                }
            };
            let timer = metrics.review_seconds.start_timer();
            let answer = review::answer(config, &body, default);
            let json = serde_json::to_vec(&answer).unwrap_or_default();
            timer.observe_duration();
            metrics.count(&answer);
            reply(StatusCode::OK, "application/json", json.into())
        }
        _ => reply(
            StatusCode::NOT_FOUND,
            "text/plain",
            "POST /inject or /inject/opt-in (AdmissionReview), or GET /healthz\n".into(),
        ),
    }
}

fn reply(status: StatusCode, content_type: &str, body: Bytes) -> Response<Full<Bytes>> {
    Response::builder()
        .status(status)
        .header(http::header::CONTENT_TYPE, content_type)
        .body(Full::new(body))
        .expect("a valid response")
}
