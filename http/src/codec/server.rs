//! The server's side of HTTP/1.1 (RFC 9112): request heads in, response heads out.

use std::mem::MaybeUninit;

use bytes::BytesMut;
use http::{
    header::{CONNECTION, CONTENT_LENGTH, DATE, TRANSFER_ENCODING},
    request, response, Method, Request, StatusCode, Uri, Version,
};

use super::{
    content_length, digits, field, head_len, header_map, keep_alive, locate_fields, offset,
    version, Fields, Present, ProtocolError, Tokens, REQUEST_HEADROOM,
};

/// Most header fields a request head may carry (hyper's server allows 100).
const MAX_REQUEST_HEADERS: usize = 128;

/// A parsed request head and what it says about the connection.
#[derive(Debug)]
pub struct RequestHead {
    /// Method, target, version and fields, ready for a `Request`.
    pub parts: request::Parts,
    /// How the body is delimited.
    pub body: RequestBodyLength,
    /// The client allows another request on this connection after this one.
    pub keep_alive: bool,
    /// The client waits for `100 Continue` before sending the body.
    pub expect_continue: bool,
    /// The client asks to switch protocols (`Upgrade` with `Connection: upgrade`, HTTP/1.1).
    pub upgrade: bool,
}

/// How a request body is delimited (RFC 9112 §6.3).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RequestBodyLength {
    /// No body.
    Empty,
    /// Exactly this many bytes.
    Length(u64),
    /// Chunked transfer coding.
    Chunked,
}

/// Parses a request head from the front of `buf`, taking its bytes out (the target and the
/// header values share them, without copying). `None` when the head is not complete yet;
/// [`ProtocolError::HeadTooLarge`] once it is past `max_head` bytes or has too many fields.
/// `fields` is kept by the connection.
pub fn parse_request(
    buf: &mut BytesMut,
    fields: &mut Fields,
    max_head: usize,
) -> Result<Option<RequestHead>, ProtocolError> {
    let mut slots = [const { MaybeUninit::uninit() }; MAX_REQUEST_HEADERS];
    let mut parsed = httparse::Request::new(&mut []);
    let Some(len) = head_len(
        parsed.parse_with_uninit_headers(buf, &mut slots),
        buf.len(),
        max_head,
    )?
    else {
        return Ok(None);
    };
    let method = parsed
        .method
        .and_then(|m| Method::from_bytes(m.as_bytes()).ok())
        .ok_or(ProtocolError::Malformed(httparse::Error::Token))?;
    let version = version(parsed.version);
    let target = parsed.path.ok_or(ProtocolError::Target)?;
    let start = offset(buf, target.as_bytes());
    let target = start..start + target.len();
    let present = locate_fields(buf, parsed.headers, fields)?;
    if present.hosts > 1 {
        return Err(ProtocolError::DuplicateHost);
    }
    let head = buf.split_to(len).freeze();
    let uri = Uri::from_maybe_shared(head.slice(target)).map_err(|_| ProtocolError::Target)?;
    let headers = header_map(&head, fields, REQUEST_HEADROOM, present)?;
    let body = request_body_length(version, present)?;
    let keep_alive = keep_alive(version, present);
    let http11 = version == Version::HTTP_11;
    let expect_continue = http11 && present.expect;
    let upgrade = http11 && present.upgrade && present.connection.upgrade;
    let (mut parts, ()) = Request::new(()).into_parts();
    parts.method = method;
    parts.uri = uri;
    parts.version = version;
    parts.headers = headers;
    Ok(Some(RequestHead {
        parts,
        body,
        keep_alive,
        expect_continue,
        upgrade,
    }))
}

/// The request body's length (RFC 9112 §6.3). Stricter than the RFC requires where a lenient
/// reading is how requests are smuggled past proxies: `Transfer-Encoding` together with
/// `Content-Length`, or in HTTP/1.0, is refused rather than resolved.
fn request_body_length(
    version: Version,
    present: Present,
) -> Result<RequestBodyLength, ProtocolError> {
    if present.transfer_encoding {
        if version == Version::HTTP_10 || present.content_length() || !present.chunked {
            return Err(ProtocolError::TransferEncoding);
        }
        if present.codings > 1 {
            return Err(ProtocolError::UnsupportedCoding);
        }
        return Ok(RequestBodyLength::Chunked);
    }
    if !present.content_length() {
        return Ok(RequestBodyLength::Empty);
    }
    Ok(match present.length? {
        None | Some(0) => RequestBodyLength::Empty,
        Some(n) => RequestBodyLength::Length(n),
    })
}

/// How a response body is framed on the wire.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ResponseFraming {
    /// No body may follow (1xx, 204): framing fields are dropped.
    None,
    /// No body follows, but the fields describe the one a GET would get (HEAD, 304): they are
    /// written as given.
    Described,
    /// `Content-Length: n`.
    Length(u64),
    /// `Transfer-Encoding: chunked`.
    Chunked,
    /// Until the connection closes (an HTTP/1.0 client and a body of unknown length).
    UntilClose,
}

/// Writes the response head: status line, the fields as given except the framing ones (which
/// `framing` decides), `Date` (which `date` writes) when the response has none, and `Connection: close` when the
/// connection ends after this response (`keep-alive` for an HTTP/1.0 client that keeps it).
/// Returns whether it ends: when `close`, or when the response itself asks to.
pub fn encode_response_head(
    out: &mut Vec<u8>,
    parts: &response::Parts,
    framing: ResponseFraming,
    close: bool,
    client: Version,
    date: impl FnOnce(&mut Vec<u8>),
) -> bool {
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(parts.status.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(
        parts
            .status
            .canonical_reason()
            .unwrap_or_default()
            .as_bytes(),
    );
    out.extend_from_slice(b"\r\n");
    let given_framing = framing == ResponseFraming::Described;
    // Noted on the way rather than looked up: each lookup costs a hash.
    let (mut dated, mut connection) = (false, Tokens::default());
    for (name, value) in &parts.headers {
        if name == DATE {
            dated = true;
        } else if name == CONNECTION {
            connection.note(value.as_bytes());
        } else if !given_framing && (name == CONTENT_LENGTH || name == TRANSFER_ENCODING) {
            continue;
        }
        field(out, name.as_str().as_bytes(), value.as_bytes());
    }
    if !dated {
        out.extend_from_slice(b"date: ");
        date(out);
        out.extend_from_slice(b"\r\n");
    }
    match framing {
        ResponseFraming::Length(n) => {
            out.extend_from_slice(b"content-length: ");
            out.extend_from_slice(digits(n, 10, &mut [0; 20]));
            out.extend_from_slice(b"\r\n");
        }
        ResponseFraming::Chunked => out.extend_from_slice(b"transfer-encoding: chunked\r\n"),
        ResponseFraming::None | ResponseFraming::Described | ResponseFraming::UntilClose => {}
    }
    if connection.close {
        // Said already.
    } else if close {
        out.extend_from_slice(b"connection: close\r\n");
    } else if client == Version::HTTP_10 && parts.status != StatusCode::SWITCHING_PROTOCOLS {
        out.extend_from_slice(b"connection: keep-alive\r\n");
    }
    out.extend_from_slice(b"\r\n");
    close || connection.close
}

/// The framing a response gets: by the request `method`, the status and the body's length
/// when known (`exact`, or the response's own `Content-Length`), chunked otherwise, or until
/// close for an HTTP/1.0 client, which knows no chunked coding.
pub fn response_framing(
    method: &Method,
    parts: &response::Parts,
    empty: bool,
    exact: Option<u64>,
    client: Version,
) -> ResponseFraming {
    let status = parts.status;
    if status.is_informational() || status == StatusCode::NO_CONTENT {
        return ResponseFraming::None;
    }
    if *method == Method::HEAD || status == StatusCode::NOT_MODIFIED {
        return ResponseFraming::Described;
    }
    if empty {
        return ResponseFraming::Length(0);
    }
    let length = exact.or_else(|| content_length(&parts.headers).ok().flatten());
    match (length, client) {
        (Some(n), _) => ResponseFraming::Length(n),
        (None, Version::HTTP_10) => ResponseFraming::UntilClose,
        (None, _) => ResponseFraming::Chunked,
    }
}
