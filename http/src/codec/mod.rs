//! HTTP/1.1 on the wire (RFC 9112), pure functions over buffers. This module is the client's
//! side (the request head out, the response head in, how long the response body is) and what
//! both sides share; [`fields`] is how a head's fields are located and mapped, [`chunked`] the
//! chunked coding, [`server`] the server's side. The connections that drive them are
//! `upstream::h1` and `server::h1`.

use std::mem::MaybeUninit;

use bytes::BytesMut;
use http::{
    header::{CONTENT_LENGTH, HOST, TRANSFER_ENCODING},
    request, HeaderMap, HeaderValue, Method, StatusCode, Version,
};

/// Most header fields a response head (or a chunked trailer section) may carry.
const MAX_HEADERS: usize = 128;
/// Largest response head accepted, as hyper's client allows by default.
pub const MAX_HEAD: usize = 64 * 1024;
mod chunked;
mod fields;
mod server;
pub use chunked::{encode_chunk_size, encode_last_chunk, Chunked, Decoded};
use fields::{content_length, header_map, keep_alive, locate_fields, offset, Present, Tokens};
pub use fields::{recycle, Fields};
pub use server::{
    encode_response_head, parse_request, response_framing, RequestBodyLength, RequestHead,
    ResponseFraming,
};

/// What a peer sent that is not HTTP/1.1 as RFC 9112 allows.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ProtocolError {
    /// The start line or a header field does not parse.
    #[error("malformed head: {0}")]
    Malformed(httparse::Error),
    /// The head is over its size limit or has too many fields.
    #[error("head too large")]
    HeadTooLarge,
    /// The request target is not a valid URI.
    #[error("invalid request target")]
    Target,
    /// A request's `Transfer-Encoding` does not end in `chunked`, comes with a
    /// `Content-Length`, or is in an HTTP/1.0 request: its body cannot be delimited safely.
    #[error("invalid transfer-encoding")]
    TransferEncoding,
    /// A body has a transfer coding besides `chunked` (`gzip, chunked`), which Weir does not
    /// decode and so cannot pass on: a request gets 501 (RFC 9112 §6.1), a response 502.
    #[error("unsupported transfer coding")]
    UnsupportedCoding,
    /// `Content-Length` is not one number (or several equal ones).
    #[error("invalid content-length")]
    ContentLength,
    /// A chunk-size line or the CRLF after a chunk is wrong.
    #[error("malformed chunked body")]
    Chunk,
    /// A request with more than one `Host` field: which one names the target is ambiguous, and
    /// RFC 9112 §3.2 has the server answer 400 (as nginx and HAProxy do).
    #[error("more than one host field")]
    DuplicateHost,
    /// A header value that `http` does not accept.
    #[error("invalid header value")]
    HeaderValue,
    /// Bytes after the end of a response on a connection that would be reused.
    #[error("unexpected bytes after the response")]
    TrailingBytes,
}

/// How the request body is framed on the wire.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RequestFraming {
    /// No body, and no framing header (GET, HEAD, ... without a body).
    None,
    /// `Content-Length: n`.
    Length(u64),
    /// `Transfer-Encoding: chunked` (a streamed body of unknown length).
    Chunked,
}

impl RequestFraming {
    /// The framing for a body that is `empty`, or `exact` bytes long when known.
    pub fn of(method: &Method, empty: bool, exact: Option<u64>) -> Self {
        match (empty, exact) {
            // Methods whose requests carry content say so even when it is empty.
            (true, _) if matches!(*method, Method::POST | Method::PUT | Method::PATCH) => {
                RequestFraming::Length(0)
            }
            (true, _) => RequestFraming::None,
            (false, Some(n)) => RequestFraming::Length(n),
            (false, None) => RequestFraming::Chunked,
        }
    }
}

/// Writes the request head: request line, `Host` first (from `authority` when the request has
/// none), every other field as given except the framing ones, which `framing` decides.
pub fn encode_head(
    out: &mut Vec<u8>,
    parts: &request::Parts,
    authority: &str,
    framing: RequestFraming,
) {
    out.extend_from_slice(parts.method.as_str().as_bytes());
    out.push(b' ');
    let target = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    out.extend_from_slice(target.as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\nhost: ");
    // `Host` usually comes first (clients send it first): then it needs no lookup.
    let mut fields = parts.headers.iter().peekable();
    let host = match fields.peek() {
        Some((name, value)) if *name == HOST => Some(*value),
        _ => parts.headers.get(HOST),
    };
    out.extend_from_slice(host.map_or(authority.as_bytes(), HeaderValue::as_bytes));
    out.extend_from_slice(b"\r\n");
    for (name, value) in fields {
        if name == HOST || name == CONTENT_LENGTH || name == TRANSFER_ENCODING {
            continue;
        }
        field(out, name.as_str().as_bytes(), value.as_bytes());
    }
    match framing {
        RequestFraming::None => {}
        RequestFraming::Length(n) => {
            out.extend_from_slice(b"content-length: ");
            out.extend_from_slice(digits(n, 10, &mut [0; 20]));
            out.extend_from_slice(b"\r\n");
        }
        RequestFraming::Chunked => out.extend_from_slice(b"transfer-encoding: chunked\r\n"),
    }
    out.extend_from_slice(b"\r\n");
}

fn field(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    out.extend_from_slice(name);
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

/// `n` written in base `radix` (10 or 16, lowercase), without allocating.
fn digits(mut n: u64, radix: u64, buf: &mut [u8; 20]) -> &[u8] {
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b"0123456789abcdef"[(n % radix) as usize];
        n /= radix;
        if n == 0 {
            break;
        }
    }
    &buf[i..]
}

/// A parsed response head.
#[derive(Debug)]
pub struct Head {
    pub status: StatusCode,
    pub version: Version,
    pub headers: HeaderMap,
    /// The backend allows another exchange on this connection after this one.
    pub keep_alive: bool,
    present: Present,
}

/// Room left in a parsed head's map for the fields the gateway adds on the way, so that adding
/// them does not grow it: `x-request-id`, `traceparent` and `X-Forwarded-For/-Proto/-Host` on
/// requests, `x-request-id` on responses. No more: a map of up to 6 fields stays small enough
/// for the allocator's per-thread cache.
const REQUEST_HEADROOM: usize = 5;
const RESPONSE_HEADROOM: usize = 1;

/// Parses a response head from the front of `buf`, taking its bytes out (header values share
/// them, without copying). `None` when the head is not complete yet. `fields` is kept by the
/// connection.
pub fn parse_head(buf: &mut BytesMut, fields: &mut Fields) -> Result<Option<Head>, ProtocolError> {
    let mut slots = [const { MaybeUninit::uninit() }; MAX_HEADERS];
    let mut response = httparse::Response::new(&mut []);
    let parsed = httparse::ParserConfig::default().parse_response_with_uninit_headers(
        &mut response,
        buf,
        &mut slots,
    );
    let Some(len) = head_len(parsed, buf.len(), MAX_HEAD)? else {
        return Ok(None);
    };
    let status = response
        .code
        .and_then(|c| StatusCode::from_u16(c).ok())
        .ok_or(ProtocolError::Malformed(httparse::Error::Status))?;
    let version = version(response.version);
    let present = locate_fields(buf, response.headers, fields)?;
    let head = buf.split_to(len).freeze();
    let headers = header_map(&head, fields, RESPONSE_HEADROOM, present)?;
    let keep_alive = keep_alive(version, present);
    Ok(Some(Head {
        status,
        version,
        headers,
        keep_alive,
        present,
    }))
}

/// The head's length once httparse has found all of it; `None` while it is incomplete, an
/// error past `max` bytes (whole or still arriving) or when it does not parse.
fn head_len(
    parsed: httparse::Result<usize>,
    buffered: usize,
    max: usize,
) -> Result<Option<usize>, ProtocolError> {
    match parsed {
        Ok(httparse::Status::Complete(len)) if len <= max => Ok(Some(len)),
        Ok(httparse::Status::Partial) if buffered <= max => Ok(None),
        Ok(_) | Err(httparse::Error::TooManyHeaders) => Err(ProtocolError::HeadTooLarge),
        Err(e) => Err(ProtocolError::Malformed(e)),
    }
}

/// The version httparse read (its minor version: HTTP/1.0 or HTTP/1.1).
fn version(minor: Option<u8>) -> Version {
    if minor == Some(0) {
        Version::HTTP_10
    } else {
        Version::HTTP_11
    }
}

/// How the response body is delimited (RFC 9112 §6.3).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BodyLength {
    /// No body at all.
    Empty,
    /// Exactly this many bytes.
    Length(u64),
    /// Chunked transfer coding.
    Chunked,
    /// Until the backend closes the connection.
    UntilClose,
}

/// The response body's length, from the request `method` and the response head.
pub fn body_length(method: &Method, head: &Head) -> Result<BodyLength, ProtocolError> {
    let status = head.status;
    if *method == Method::HEAD
        || status.is_informational()
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED
    {
        return Ok(BodyLength::Empty);
    }
    if head.present.transfer_encoding {
        // `Transfer-Encoding` is this hop's alone and Weir decodes only `chunked`: a body with
        // another coding (`gzip, chunked`, or `gzip` read until close) would reach the client
        // still coded with nothing naming the coding. Refused, as nginx and Go's client do.
        return if head.present.chunked && head.present.codings == 1 {
            Ok(BodyLength::Chunked)
        } else {
            Err(ProtocolError::UnsupportedCoding)
        };
    }
    Ok(match head.present.length? {
        Some(0) => BodyLength::Empty,
        Some(n) => BodyLength::Length(n),
        None => BodyLength::UntilClose,
    })
}

#[cfg(test)]
mod tests;
