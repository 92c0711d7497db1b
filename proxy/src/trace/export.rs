//! The exporter: OpenTelemetry's OTLP/HTTP span exporter (protobuf), batched by the SDK, on
//! Weir's own HTTP client: hyper with rustls (HTTPS to the collector with the system roots, or
//! plain HTTP), its requests run on the proxy's Tokio runtime. The SDK's batch thread only
//! waits for them, so no second runtime, HTTP client or TLS stack comes with it.

use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt as _, Full, Limited};
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use opentelemetry::KeyValue;
use opentelemetry_http::{HttpClient, HttpError};
use opentelemetry_otlp::{Protocol, WithExportConfig as _, WithHttpConfig as _};
use opentelemetry_sdk::{
    trace::{BatchConfigBuilder, BatchSpanProcessor, Sampler, SdkTracerProvider},
    Resource,
};

use super::Service;

/// One export waits at most this long for the collector.
const EXPORT_TIMEOUT: Duration = Duration::from_secs(10);
/// Spans waiting to be exported, at most; past it they are dropped.
const QUEUE: usize = 2048;
/// Spans per export request.
const BATCH: usize = 512;
/// How often a batch goes when it is not full.
const EVERY: Duration = Duration::from_secs(1);
/// The most of a collector's reply that is read.
const REPLY_LIMIT: usize = 64 << 10;

/// The tracer provider exporting to `endpoint`.
pub(super) fn provider(endpoint: &str, service: &Service) -> anyhow::Result<SdkTracerProvider> {
    let url = traces_url(endpoint)?;
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_http_client(Collector::new(tokio::runtime::Handle::current()))
        .with_protocol(Protocol::HttpBinary)
        .with_endpoint(url)
        .with_timeout(EXPORT_TIMEOUT)
        .build()?;
    let batches = BatchSpanProcessor::builder(exporter)
        .with_batch_config(
            BatchConfigBuilder::default()
                .with_max_queue_size(QUEUE)
                .with_max_export_batch_size(BATCH)
                .with_scheduled_delay(EVERY)
                .build(),
        )
        .build();
    let mut attributes = vec![KeyValue::new("service.version", env!("CARGO_PKG_VERSION"))];
    if let Some(ns) = &service.namespace {
        attributes.push(KeyValue::new("k8s.namespace.name", ns.clone()));
    }
    if let Some(pod) = &service.pod {
        attributes.push(KeyValue::new("k8s.pod.name", pod.clone()));
    }
    let resource = Resource::builder_empty()
        .with_service_name(service.name)
        .with_attributes(attributes)
        .build();
    Ok(SdkTracerProvider::builder()
        // The proxy decided already: only sampled requests get here.
        .with_sampler(Sampler::AlwaysOn)
        .with_span_processor(batches)
        .with_resource(resource)
        .build())
}

/// The URL spans are posted to: `endpoint` as given when it names a path, else its
/// `/v1/traces` (as OTLP/HTTP's base endpoints are used).
fn traces_url(endpoint: &str) -> anyhow::Result<String> {
    let uri: http::Uri = endpoint
        .parse()
        .map_err(|e| anyhow::anyhow!("--otlp-endpoint {endpoint:?}: {e}"))?;
    match (uri.scheme_str(), uri.host()) {
        (Some("http" | "https"), Some(_)) => {}
        _ => anyhow::bail!(
            "--otlp-endpoint {endpoint:?}: give an http:// or https:// URL, e.g. http://otel-collector:4318"
        ),
    }
    Ok(match uri.path() {
        "" | "/" => format!("{}/v1/traces", endpoint.trim_end_matches('/')),
        _ => endpoint.to_string(),
    })
}

/// The HTTP client the exporter posts with.
struct Collector {
    client: Client<hyper_rustls::HttpsConnector<HttpConnector>, Full<Bytes>>,
    runtime: tokio::runtime::Handle,
}

impl std::fmt::Debug for Collector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Collector")
    }
}

impl Collector {
    fn new(runtime: tokio::runtime::Handle) -> Self {
        let builder = crate::tls::system_roots("an https:// --otlp-endpoint will fail");
        let connector = builder.https_or_http().enable_http1().build();
        let client = Client::builder(hyper_util::rt::TokioExecutor::new()).build(connector);
        Self { client, runtime }
    }
}

#[async_trait::async_trait]
impl HttpClient for Collector {
    async fn send_bytes(&self, request: Request<Bytes>) -> Result<Response<Bytes>, HttpError> {
        let client = self.client.clone();
        // On the proxy's runtime: the SDK's batch thread has none.
        let exchange = self.runtime.spawn(async move {
            let send = client.request(request.map(Full::new));
            let response = tokio::time::timeout(EXPORT_TIMEOUT, send)
                .await
                .map_err(|_| "the collector did not answer in time".to_string())?
                .map_err(|e| e.to_string())?;
            let (parts, body) = response.into_parts();
            let read = Limited::new(body, REPLY_LIMIT).collect();
            let body = tokio::time::timeout(EXPORT_TIMEOUT, read)
                .await
                .map_err(|_| "the collector's reply did not end in time".to_string())?
                .map_err(|e| e.to_string())?
                .to_bytes();
            Ok::<_, String>(Response::from_parts(parts, body))
        });
        let response = exchange.await.map_err(|e| e.to_string())??;
        Ok(response)
    }
}

#[cfg(test)]
mod tests {
    use super::traces_url;

    #[test]
    fn the_traces_path_is_added_to_a_base_endpoint() {
        let url = |e: &str| traces_url(e).unwrap();
        assert_eq!(
            url("http://collector:4318"),
            "http://collector:4318/v1/traces"
        );
        assert_eq!(
            url("http://collector:4318/"),
            "http://collector:4318/v1/traces"
        );
        assert_eq!(
            url("https://otel.example.com/api/traces"),
            "https://otel.example.com/api/traces"
        );
        for bad in ["collector:4318", "ftp://collector", "http://", "not a url"] {
            let e = traces_url(bad).unwrap_err().to_string();
            assert!(e.contains("--otlp-endpoint"), "{e}");
        }
    }
}
