//! Distributed traces: a span for each request a proxy carries whose trace is sampled,
//! exported to an OpenTelemetry collector over OTLP/HTTP (protobuf).
//!
//! Sampling is decided where the request's `traceparent` is stamped
//! ([`crate::headers::stamp`]): parent-based, a caller's sampled flag is followed either way,
//! and a trace the proxy starts is sampled in the `--trace-sampling` ratio (by its trace id,
//! so every proxy agrees). A request that is not sampled costs nothing here. A sampled one
//! gets a span when its response ends, handed to the OpenTelemetry SDK's batch processor: a
//! bounded queue (2,048 spans; full, a span is dropped and the SDK logs how many), exported
//! in batches of up to 512 from a thread of its own, so a slow or absent collector never
//! holds a request up.
//!
//! ```text
//!  stamp (sampled? TraceIds) ─▶ … ─▶ response body ends ─▶ Tracer::record ─▶ batch queue
//!                                                          (bounded)  ─▶ OTLP/HTTP POST
//! ```

use std::{borrow::Cow, sync::Arc, time::SystemTime};

use http::Response;
use opentelemetry::{
    trace::{
        Span as _, SpanBuilder, SpanContext, SpanId, SpanKind, Status, TraceContextExt as _,
        TraceFlags, TraceId, TraceState, Tracer as _, TracerProvider as _,
    },
    Context, KeyValue,
};
use opentelemetry_sdk::trace::{SdkTracer, SdkTracerProvider};
use weir_http::body::{boxed, Body, Observed};

use crate::headers::{FieldPolicy, ForwardedMode, RequestIdMode, Sampling, TraceContext, TraceIds};

mod export;

/// How a proxy traces (`--otlp-endpoint`, `--trace-sampling`), shared by the roles' flags.
#[derive(clap::Args, Clone, Debug)]
pub struct TraceArgs {
    /// Export a span for each sampled request to this OpenTelemetry collector (OTLP/HTTP,
    /// protobuf): `http://collector:4318` (`/v1/traces` is added) or a full URL with a path.
    /// Without it no span is exported (trace context is still passed on).
    #[arg(long, env = "WEIR_OTLP_ENDPOINT")]
    pub otlp_endpoint: Option<String>,
    /// The share of the traces this proxy starts that are sampled (0 to 1). A request whose
    /// `traceparent` is sampled is always exported, one whose caller did not sample it never.
    #[arg(long, env = "WEIR_TRACE_SAMPLING", default_value = "0.01")]
    pub trace_sampling: Sampling,
}

/// What a span's process is (OpenTelemetry resource attributes).
#[derive(Clone, Debug)]
pub struct Service {
    /// `service.name`: `weir-ingress`, `weir-sidecar`.
    pub name: &'static str,
    /// `k8s.namespace.name`, when known.
    pub namespace: Option<String>,
    /// `k8s.pod.name`, when known.
    pub pod: Option<String>,
}

/// Records spans and hands them to the exporter.
pub struct Tracer {
    provider: SdkTracerProvider,
    tracer: SdkTracer,
    sampling: Sampling,
}

/// How a span's request came to this proxy.
#[derive(Clone, Copy, Debug)]
pub enum Hop {
    /// It came in (the gateway, a sidecar's inbound side): a SERVER span.
    Server,
    /// It goes out (a sidecar's outbound side): a CLIENT span.
    Client,
}

/// What a span says of its request, known as it arrives.
pub struct SpanStart {
    ids: TraceIds,
    start: SystemTime,
    hop: Hop,
    name: String,
    attributes: Vec<KeyValue>,
}

impl SpanStart {
    /// A span for a request of `method` to `host` + `path`, from `client`.
    pub fn new(ids: TraceIds, hop: Hop, method: &http::Method, host: &str, path: &str) -> Self {
        Self {
            ids,
            start: SystemTime::now(),
            hop,
            name: clip(method.as_str()),
            attributes: vec![
                KeyValue::new("http.request.method", clip(method.as_str())),
                KeyValue::new("server.address", clip(host)),
                KeyValue::new("url.path", clip(path)),
            ],
        }
    }

    /// Adds an attribute (the client's address, the route, the backend).
    pub fn attribute(&mut self, key: &'static str, value: impl Into<Cow<'static, str>>) {
        self.attributes.push(KeyValue::new(
            key,
            opentelemetry::Value::String(value.into().into()),
        ));
    }
}

/// The most of a client's text a span keeps (a host, a path, a method): a queue full of
/// spans of 64 KiB paths would otherwise hold a client's choice of 128 MiB.
const CLIP: usize = 1024;

fn clip(text: &str) -> String {
    let mut end = text.len().min(CLIP);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text[..end].to_string()
}

impl Tracer {
    /// A tracer exporting to `endpoint` as `service`, starting traces as `sampling` says; its
    /// exports run on the current Tokio runtime, the batching on a thread of its own.
    pub fn new(endpoint: &str, service: &Service, sampling: Sampling) -> anyhow::Result<Arc<Self>> {
        let provider = export::provider(endpoint, service)?;
        let tracer = provider.tracer("weir");
        Ok(Arc::new(Self {
            provider,
            tracer,
            sampling,
        }))
    }

    /// A sidecar's hop: the request's `traceparent` continued with this hop's span (the
    /// caller's sampled flag kept), or a trace started as the sampling says; the span to
    /// finish when it is sampled. (A sidecar that exports no spans leaves `traceparent` as
    /// it came, so the spans of a trace chain up without a hop nobody recorded.)
    pub fn continue_trace(
        &self,
        headers: &mut http::HeaderMap,
        hop: Hop,
        method: &http::Method,
        host: &str,
        path: &str,
    ) -> Option<SpanStart> {
        let trace_only = FieldPolicy {
            request_id: RequestIdMode::Preserve,
            trace_context: TraceContext::Continue,
            forwarded: ForwardedMode::Off,
            sampling: self.sampling,
        };
        // A caller's trace it does not sample passes as it came: no span of this hop is
        // recorded, so the next hop's parent stays the caller's span.
        let unsampled = headers
            .get(crate::headers::TRACEPARENT)
            .map(|v| v.as_bytes())
            .filter(|v| v.len() == 55)
            .is_some_and(|v| {
                matches!(v[54], b'0' | b'2' | b'4' | b'6' | b'8' | b'a' | b'c' | b'e')
            });
        if unsampled {
            return None;
        }
        let client = std::net::IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED);
        let ids = crate::headers::stamp(headers, client, trace_only).sampled?;
        Some(SpanStart::new(ids, hop, method, host, path))
    }

    /// Ends `start`'s span when `response`'s body ends, named after `route` when it has one.
    pub fn finish(
        self: &Arc<Self>,
        mut start: SpanStart,
        route: Option<&str>,
        response: Response<Body>,
    ) -> Response<Body> {
        let status = response.status();
        if let Some(route) = route {
            start.name = format!("{} {route}", start.name);
            start.attribute("weir.route", route.to_string());
        }
        start.attributes.push(KeyValue::new(
            "http.response.status_code",
            i64::from(status.as_u16()),
        ));
        let error = status
            .is_server_error()
            .then(|| status.as_u16().to_string());
        let tracer = self.clone();
        let (parts, body) = response.into_parts();
        let observed = Observed::new(body, move |_| tracer.record(start, error));
        Response::from_parts(parts, boxed(observed))
    }

    /// Exports `start`'s span as ending now; an `error` (the 5xx status) marks it failed.
    fn record(&self, start: SpanStart, error: Option<String>) {
        let SpanStart {
            ids,
            start,
            hop,
            name,
            mut attributes,
        } = start;
        let trace = TraceId::from(ids.trace);
        let parent = match ids.parent {
            Some(parent) => Context::new().with_remote_span_context(SpanContext::new(
                trace,
                SpanId::from(parent),
                TraceFlags::SAMPLED,
                true,
                TraceState::default(),
            )),
            None => Context::new(),
        };
        if let Some(code) = &error {
            attributes.push(KeyValue::new("error.type", code.clone()));
        }
        let kind = match hop {
            Hop::Server => SpanKind::Server,
            Hop::Client => SpanKind::Client,
        };
        let builder = SpanBuilder::from_name(name)
            .with_kind(kind)
            .with_trace_id(trace)
            .with_span_id(SpanId::from(ids.span))
            .with_start_time(start)
            .with_attributes(attributes);
        let mut span = self.tracer.build_with_context(builder, &parent);
        if let Some(code) = error {
            span.set_status(Status::error(code));
        }
        span.end_with_timestamp(SystemTime::now());
    }

    /// Exports what is queued and stops, waiting at most a few seconds (on a thread of its
    /// own: the exports need this runtime to run).
    pub async fn shutdown(self: Arc<Self>) {
        let provider = self.provider.clone();
        let done = tokio::task::spawn_blocking(move || provider.shutdown());
        let _ = tokio::time::timeout(std::time::Duration::from_secs(5), done).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_a_client_chose_is_clipped() {
        let ids = TraceIds {
            trace: 1,
            span: 2,
            parent: None,
        };
        let long = format!("/{}é", "a".repeat(5000));
        let span = SpanStart::new(ids, Hop::Server, &http::Method::GET, &long, &long);
        for kv in &span.attributes {
            assert!(kv.value.as_str().len() <= CLIP, "{}", kv.key);
        }
        assert_eq!(clip("é"), "é");
        assert_eq!(clip(&"é".repeat(600)).len(), 1024);
    }
}
