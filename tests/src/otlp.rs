//! The collector end of OTLP/HTTP for the tracing tests: a real HTTP server on loopback that
//! takes `POST /v1/traces` (protobuf) as an OpenTelemetry collector does, decodes each export
//! with OpenTelemetry's own message types, and keeps the spans; or, stalled, takes the
//! connection and never answers.

use std::{
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::Duration,
};

use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use hyper::{server::conn::http1, service::service_fn, Response};
use hyper_util::rt::TokioIo;
use opentelemetry_proto::tonic::{
    collector::trace::v1::ExportTraceServiceRequest, common::v1::any_value, trace::v1::Span,
};
use prost::Message as _;
use tokio::net::TcpListener;

/// One exported span with the `service.name` of the process that exported it.
#[derive(Clone, Debug)]
pub struct Exported {
    /// `service.name` of its resource.
    pub service: String,
    /// The span.
    pub span: Span,
}

impl Exported {
    /// The span's trace id, as hex.
    pub fn trace_id(&self) -> String {
        hex(&self.span.trace_id)
    }

    /// The span's id, as hex.
    pub fn span_id(&self) -> String {
        hex(&self.span.span_id)
    }

    /// Its parent's id, as hex ("" for a root).
    pub fn parent_id(&self) -> String {
        hex(&self.span.parent_span_id)
    }

    /// A string or integer attribute, as text.
    pub fn attribute(&self, key: &str) -> Option<String> {
        let value = self.span.attributes.iter().find(|a| a.key == key)?;
        match value.value.as_ref()?.value.as_ref()? {
            any_value::Value::StringValue(s) => Some(s.clone()),
            any_value::Value::IntValue(i) => Some(i.to_string()),
            other => Some(format!("{other:?}")),
        }
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A collector on loopback.
pub struct Collector {
    /// Where it listens.
    pub addr: SocketAddr,
    spans: Arc<Mutex<Vec<Exported>>>,
    requests: Arc<Mutex<usize>>,
}

impl Collector {
    /// A collector that answers every export.
    pub async fn start() -> Self {
        Self::serve(false).await
    }

    /// One that takes connections and requests and never answers.
    pub async fn stalled() -> Self {
        Self::serve(true).await
    }

    async fn serve(stalled: bool) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let spans: Arc<Mutex<Vec<Exported>>> = Arc::default();
        let requests: Arc<Mutex<usize>> = Arc::default();
        let (kept, counted) = (spans.clone(), requests.clone());
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let (kept, counted) = (kept.clone(), counted.clone());
                tokio::spawn(async move {
                    let service = service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                        let (kept, counted) = (kept.clone(), counted.clone());
                        async move {
                            *counted.lock().unwrap() += 1;
                            if stalled {
                                std::future::pending::<()>().await;
                            }
                            let path = req.uri().path().to_string();
                            let body = req.into_body().collect().await?.to_bytes();
                            let status =
                                match (path.as_str(), ExportTraceServiceRequest::decode(body)) {
                                    ("/v1/traces", Ok(export)) => {
                                        kept.lock().unwrap().extend(spans_of(export));
                                        200
                                    }
                                    _ => 400,
                                };
                            let mut response = Response::new(Full::new(Bytes::new()));
                            *response.status_mut() = hyper::StatusCode::from_u16(status).unwrap();
                            response.headers_mut().insert(
                                "content-type",
                                http::HeaderValue::from_static("application/x-protobuf"),
                            );
                            Ok::<_, hyper::Error>(response)
                        }
                    });
                    let _ = http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Self {
            addr,
            spans,
            requests,
        }
    }

    /// `--otlp-endpoint` for it.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The spans exported so far.
    pub fn spans(&self) -> Vec<Exported> {
        self.spans.lock().unwrap().clone()
    }

    /// Export requests received so far (answered or not).
    pub fn requests(&self) -> usize {
        *self.requests.lock().unwrap()
    }

    /// The spans exported so far, once there are at least `n` (up to 20 s).
    pub async fn wait_spans(&self, n: usize) -> Vec<Exported> {
        let what = format!("{n} exported spans");
        crate::eventually(Duration::from_secs(20), &what, || async {
            let spans = self.spans();
            (spans.len() >= n).then_some(spans)
        })
        .await
    }
}

fn spans_of(export: ExportTraceServiceRequest) -> Vec<Exported> {
    let mut out = Vec::new();
    for resource in export.resource_spans {
        let service = resource
            .resource
            .iter()
            .flat_map(|r| &r.attributes)
            .find(|a| a.key == "service.name")
            .and_then(|a| a.value.as_ref()?.value.as_ref().cloned())
            .map(|v| match v {
                any_value::Value::StringValue(s) => s,
                other => format!("{other:?}"),
            })
            .unwrap_or_default();
        for scope in resource.scope_spans {
            for span in scope.spans {
                out.push(Exported {
                    service: service.clone(),
                    span,
                });
            }
        }
    }
    out
}
