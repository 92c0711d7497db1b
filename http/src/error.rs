//! Every way a proxied request can fail, what the client sees for it, and which side was at
//! fault. One function, [`ProxyError::response`], turns an error into a response: a status, a
//! short body, and an `x-weir-error` reason. Internal detail never reaches the client; it goes
//! to the log.

use bytes::Bytes;
use http::{header, HeaderName, HeaderValue, Response, StatusCode};

use crate::body::{full, Body, ClientBodyError};

/// The header that names why Weir (not the backend) produced a response.
pub const ERROR_HEADER: HeaderName = HeaderName::from_static("x-weir-error");

/// Who caused a failure, for logs and metrics.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Side {
    /// The client sent something wrong.
    Downstream,
    /// The backend failed.
    Upstream,
    /// Configuration or Weir itself.
    Internal,
}

impl Side {
    /// Its metric label.
    pub fn label(self) -> &'static str {
        match self {
            Side::Downstream => "downstream",
            Side::Upstream => "upstream",
            Side::Internal => "internal",
        }
    }
}

/// Why a request did not reach a backend, or did not come back.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ProxyError {
    /// 400: the request could not be understood (malformed path, bad host).
    BadRequest,
    /// 404: no route matches.
    NoRoute,
    /// 421: a TLS request for a name that connections are carried for as bytes (a TLSRoute),
    /// arriving on a connection whose SNI named another: the name is not served as HTTP here.
    Misdirected,
    /// 408: the client stopped sending its request body (nothing arrived for the client body
    /// timeout).
    ClientTimeout,
    /// 413: the body is larger than the route allows.
    BodyTooLarge,
    /// 431: the headers are larger than allowed.
    HeadersTooLarge,
    /// 501: the request's body has a transfer coding Weir does not decode (`gzip, chunked`).
    UnsupportedTransferCoding,
    /// 500: the route points at a backend that does not exist (or has no weight).
    BackendNotFound,
    /// 503: the backend has no ready endpoint.
    NoHealthyEndpoint,
    /// 502: connecting to the backend failed.
    ConnectFailed,
    /// 502: the backend closed or reset the connection, or answered with garbage.
    BackendReset,
    /// 504: the backend did not answer in time.
    Timeout,
    /// 503: every endpoint is ejected by the circuit breaker, or the cluster's pending-request
    /// cap is reached; the request failed fast without touching the backend.
    CircuitOpen,
    /// 401: credentials are missing or invalid.
    Unauthenticated,
    /// 403: the credentials are valid but lack a required scope.
    Forbidden,
    /// 403: the mesh AccessPolicy does not allow this caller to do this.
    AccessDenied,
    /// 429: a rate limit is spent.
    RateLimited,
    /// 503: a global rate limit could not be checked (Redis down) and fails closed.
    RateLimitUnavailable,
}

impl ProxyError {
    /// The status the client gets.
    pub fn status(self) -> StatusCode {
        match self {
            ProxyError::BadRequest => StatusCode::BAD_REQUEST,
            ProxyError::NoRoute => StatusCode::NOT_FOUND,
            ProxyError::Misdirected => StatusCode::MISDIRECTED_REQUEST,
            ProxyError::ClientTimeout => StatusCode::REQUEST_TIMEOUT,
            ProxyError::BodyTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ProxyError::HeadersTooLarge => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            ProxyError::UnsupportedTransferCoding => StatusCode::NOT_IMPLEMENTED,
            ProxyError::BackendNotFound => StatusCode::INTERNAL_SERVER_ERROR,
            ProxyError::NoHealthyEndpoint
            | ProxyError::CircuitOpen
            | ProxyError::RateLimitUnavailable => StatusCode::SERVICE_UNAVAILABLE,
            ProxyError::Unauthenticated => StatusCode::UNAUTHORIZED,
            ProxyError::Forbidden | ProxyError::AccessDenied => StatusCode::FORBIDDEN,
            ProxyError::RateLimited => StatusCode::TOO_MANY_REQUESTS,
            ProxyError::ConnectFailed | ProxyError::BackendReset => StatusCode::BAD_GATEWAY,
            ProxyError::Timeout => StatusCode::GATEWAY_TIMEOUT,
        }
    }

    /// The `x-weir-error` value: short, stable, machine-readable.
    pub fn reason(self) -> &'static str {
        match self {
            ProxyError::BadRequest => "bad-request",
            ProxyError::NoRoute => "no-route",
            ProxyError::Misdirected => "misdirected",
            ProxyError::ClientTimeout => "client-timeout",
            ProxyError::BodyTooLarge => "body-too-large",
            ProxyError::HeadersTooLarge => "headers-too-large",
            ProxyError::UnsupportedTransferCoding => "unsupported-transfer-coding",
            ProxyError::BackendNotFound => "backend-not-found",
            ProxyError::NoHealthyEndpoint => "no-healthy-endpoint",
            ProxyError::ConnectFailed => "connect-failed",
            ProxyError::BackendReset => "backend-reset",
            ProxyError::Timeout => "timeout",
            ProxyError::CircuitOpen => "circuit-open",
            ProxyError::Unauthenticated => "unauthenticated",
            ProxyError::Forbidden => "forbidden",
            ProxyError::AccessDenied => "access-denied",
            ProxyError::RateLimited => "rate-limited",
            ProxyError::RateLimitUnavailable => "rate-limit-unavailable",
        }
    }

    /// Who was at fault.
    pub fn side(self) -> Side {
        match self {
            ProxyError::BadRequest
            | ProxyError::Misdirected
            | ProxyError::ClientTimeout
            | ProxyError::BodyTooLarge
            | ProxyError::HeadersTooLarge
            | ProxyError::UnsupportedTransferCoding
            | ProxyError::Unauthenticated
            | ProxyError::Forbidden
            | ProxyError::AccessDenied
            | ProxyError::RateLimited => Side::Downstream,
            ProxyError::NoRoute
            | ProxyError::BackendNotFound
            | ProxyError::RateLimitUnavailable => Side::Internal,
            ProxyError::NoHealthyEndpoint
            | ProxyError::ConnectFailed
            | ProxyError::BackendReset
            | ProxyError::Timeout
            | ProxyError::CircuitOpen => Side::Upstream,
        }
    }

    /// The response the client gets.
    pub fn response(self) -> Response<Body> {
        let text = match self {
            ProxyError::BadRequest => "bad request\n",
            ProxyError::NoRoute => "no route for this request\n",
            ProxyError::Misdirected => "this name is not served as HTTP on this connection\n",
            ProxyError::ClientTimeout => "request body timed out\n",
            ProxyError::BodyTooLarge => "request body too large\n",
            ProxyError::HeadersTooLarge => "request headers too large\n",
            ProxyError::UnsupportedTransferCoding => "transfer coding not supported\n",
            ProxyError::BackendNotFound => "backend not found\n",
            ProxyError::NoHealthyEndpoint => "no healthy endpoint\n",
            ProxyError::ConnectFailed => "backend connection failed\n",
            ProxyError::BackendReset => "backend connection reset\n",
            ProxyError::Timeout => "backend timed out\n",
            ProxyError::CircuitOpen => "backend unavailable (circuit open)\n",
            ProxyError::Unauthenticated => "authentication required\n",
            ProxyError::Forbidden => "forbidden\n",
            ProxyError::AccessDenied => "access denied by policy\n",
            ProxyError::RateLimited => "rate limit exceeded\n",
            ProxyError::RateLimitUnavailable => "rate limit unavailable\n",
        };
        let mut response = Response::new(full(Bytes::from_static(text.as_bytes())));
        *response.status_mut() = self.status();
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=utf-8"),
        );
        headers.insert(ERROR_HEADER, HeaderValue::from_static(self.reason()));
        if self == ProxyError::BodyTooLarge
            || self == ProxyError::HeadersTooLarge
            || self == ProxyError::UnsupportedTransferCoding
            || self == ProxyError::BadRequest
            || self == ProxyError::ClientTimeout
        {
            // The rest of the request may still be on the wire; don't try to read past it.
            headers.insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        response
    }

    /// The client's error that `error` (or one of its sources) is, when it comes from a
    /// request body failing on the client's side ([`ClientBodyError`]): 408 for a body that
    /// stopped coming, 400 for one that is malformed or cut short. `None` for any other error.
    pub fn from_client_body(error: &(dyn std::error::Error + 'static)) -> Option<Self> {
        let mut source = Some(error);
        while let Some(e) = source {
            match e.downcast_ref::<ClientBodyError>() {
                Some(ClientBodyError::TimedOut(_)) => return Some(ProxyError::ClientTimeout),
                Some(ClientBodyError::Failed(_)) => return Some(ProxyError::BadRequest),
                None => source = e.source(),
            }
        }
        None
    }

    /// The gRPC status code a gRPC client gets for this error.
    pub fn grpc_status(self) -> u8 {
        match self {
            ProxyError::BadRequest => 3, // INVALID_ARGUMENT
            ProxyError::NoRoute
            | ProxyError::Misdirected
            | ProxyError::UnsupportedTransferCoding => 12, // UNIMPLEMENTED
            ProxyError::BodyTooLarge | ProxyError::HeadersTooLarge | ProxyError::RateLimited => 8, // RESOURCE_EXHAUSTED
            ProxyError::Unauthenticated => 16, // UNAUTHENTICATED
            ProxyError::Forbidden | ProxyError::AccessDenied => 7, // PERMISSION_DENIED
            ProxyError::Timeout | ProxyError::ClientTimeout => 4, // DEADLINE_EXCEEDED
            // A rule with no backend to send to (none resolved, every weight 0): GRPCRoute
            // asks for UNAVAILABLE.
            ProxyError::BackendNotFound
            | ProxyError::NoHealthyEndpoint
            | ProxyError::ConnectFailed
            | ProxyError::BackendReset
            | ProxyError::CircuitOpen
            | ProxyError::RateLimitUnavailable => 14, // UNAVAILABLE
        }
    }

    /// The response for a gRPC request: HTTP 200 with `grpc-status` and `grpc-message` in the
    /// headers (a trailers-only response), as gRPC clients expect, plus `x-weir-error`.
    pub fn grpc_response(self) -> Response<Body> {
        let mut response = Response::new(crate::body::empty());
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/grpc"),
        );
        headers.insert(
            "grpc-status",
            HeaderValue::from(u16::from(self.grpc_status())),
        );
        headers.insert("grpc-message", HeaderValue::from_static(self.reason()));
        headers.insert(ERROR_HEADER, HeaderValue::from_static(self.reason()));
        response
    }
}

/// Whether a request is gRPC (its errors are reported as gRPC statuses).
pub fn is_grpc(headers: &http::HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/grpc"))
}

impl std::fmt::Display for ProxyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.reason())
    }
}

impl std::error::Error for ProxyError {}

/// An error and its sources on one line, for logs and operators (tonic's transport errors and
/// the backend client's hide the cause behind a general message).
pub fn chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
