//! HTTP/1.1 on the wire (RFC 9112), pure functions over buffers. This module is the client's
//! side (the request head out, the response head in, how long the response body is) and what
//! both sides share (framing headers); [`chunked`] is the chunked coding, [`server`] the
//! server's side. The connections that drive them are `upstream::h1` and `server::h1`.

use std::{cell::RefCell, mem::MaybeUninit};

use bytes::{Bytes, BytesMut};
use http::{
    header::{CONNECTION, CONTENT_LENGTH, EXPECT, HOST, TRANSFER_ENCODING, UPGRADE},
    request, HeaderMap, HeaderName, HeaderValue, Method, StatusCode, Version,
};

/// Most header fields a response head (or a chunked trailer section) may carry.
const MAX_HEADERS: usize = 128;
/// Largest response head accepted, as hyper's client allows by default.
pub const MAX_HEAD: usize = 64 * 1024;
mod chunked;
mod server;
pub use chunked::{encode_chunk_size, encode_last_chunk, Chunked, Decoded};
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
    /// `Content-Length` is not one number (or several equal ones).
    #[error("invalid content-length")]
    ContentLength,
    /// A chunk-size line or the CRLF after a chunk is wrong.
    #[error("malformed chunked body")]
    Chunk,
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

/// Which of the fields that frame a message or steer its connection a head carries, noted
/// while its fields are located. Most heads carry few of them, and looking up an absent one
/// still costs a hash and a probe.
#[derive(Clone, Copy, Debug)]
struct Present {
    content_length: bool,
    /// What the `Content-Length` fields say, read as they are located (kept as an error until a
    /// length is needed: a response to HEAD may carry any).
    length: Result<Option<u64>, ProtocolError>,
    transfer_encoding: bool,
    /// Whether the last transfer coding is `chunked` (RFC 9112 §6.3).
    chunked: bool,
    /// What the `Connection` fields say, read as they are located.
    connection: Tokens,
    /// `Expect: 100-continue`.
    expect: bool,
    upgrade: bool,
}

/// The tokens of a head's `Connection` fields (RFC 9112 §9.6).
#[derive(Clone, Copy, Debug, Default)]
struct Tokens {
    close: bool,
    keep_alive: bool,
    upgrade: bool,
    /// Any other token: a field that must not go past this hop.
    other: bool,
}

impl Tokens {
    fn note(&mut self, value: &[u8]) {
        // What nearly every peer sends, as it sends it, needs no splitting.
        match value {
            b"keep-alive" | b"Keep-Alive" => self.keep_alive = true,
            b"close" | b"Close" => self.close = true,
            _ => self.note_list(value),
        }
    }

    fn note_list(&mut self, value: &[u8]) {
        for token in value.split(|b| *b == b',').map(<[u8]>::trim_ascii) {
            if token.eq_ignore_ascii_case(b"close") {
                self.close = true;
            } else if token.eq_ignore_ascii_case(b"keep-alive") {
                self.keep_alive = true;
            } else if token.eq_ignore_ascii_case(b"upgrade") {
                self.upgrade = true;
            } else if !token.is_empty() {
                self.other = true;
            }
        }
    }

    /// Whether `Connection` (and `Keep-Alive`) only steer this connection, which the codec has
    /// read them for: a proxy drops them, so they are left out of the head's map.
    fn only_steer(&self) -> bool {
        !self.upgrade && !self.other
    }
}

const KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");

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

/// The fields of the last head parsed on a connection: each name, where its value lies in the
/// buffer, and the name as the peer wrote it. A peer sends the same names in the same order
/// head after head, so a name written as in the same place last time is taken as it is
/// instead of parsed again. Kept by the connection between heads.
#[derive(Default)]
pub struct Fields(Vec<Field>);

struct Field {
    name: HeaderName,
    value: (usize, usize),
    /// The name as written (when it fits).
    written: [u8; WRITTEN],
    written_len: usize,
}

/// Longest name kept as written; longer ones are parsed each time.
const WRITTEN: usize = 32;

impl Field {
    fn written(&self) -> &[u8] {
        &self.written[..self.written_len]
    }
}

/// Records each field's name and where its value lies in `buf`, so that once the head is split
/// off the buffer, [`header_map`] can share its bytes; and which framing fields are there.
fn locate_fields(
    buf: &[u8],
    fields: &[httparse::Header<'_>],
    located: &mut Fields,
) -> Result<Present, ProtocolError> {
    let located = &mut located.0;
    let mut present = Present {
        content_length: false,
        length: Ok(None),
        transfer_encoding: false,
        chunked: false,
        connection: Tokens::default(),
        expect: false,
        upgrade: false,
    };
    for (i, f) in fields.iter().enumerate() {
        let start = offset(buf, f.value);
        let value = (start, start + f.value.len());
        let written = f.name.as_bytes();
        match located.get_mut(i) {
            Some(known) if known.written() == written => known.value = value,
            slot => {
                let name = HeaderName::from_bytes(written)
                    .map_err(|_| ProtocolError::Malformed(httparse::Error::HeaderName))?;
                let mut field = Field {
                    name,
                    value,
                    written: [0; WRITTEN],
                    written_len: 0,
                };
                if written.len() <= WRITTEN {
                    field.written[..written.len()].copy_from_slice(written);
                    field.written_len = written.len();
                }
                match slot {
                    Some(slot) => *slot = field,
                    None => located.push(field),
                }
            }
        }
        let name = &located[i].name;
        if name == CONTENT_LENGTH {
            present.content_length = true;
            present.length = present.length.and_then(|known| add_length(known, f.value));
        } else if name == TRANSFER_ENCODING {
            present.transfer_encoding = true;
            present.chunked = ends_chunked(f.value);
        } else if name == CONNECTION {
            present.connection.note(f.value);
        } else if name == EXPECT {
            present.expect |= f.value.eq_ignore_ascii_case(b"100-continue");
        } else if name == UPGRADE {
            present.upgrade = true;
        }
    }
    located.truncate(fields.len());
    Ok(present)
}

/// Where `part` starts in `buf`, which holds it.
fn offset(buf: &[u8], part: &[u8]) -> usize {
    part.as_ptr() as usize - buf.as_ptr() as usize
}

/// The fields [`locate_fields`] found, with values sharing `head`'s bytes, in a map with room
/// for `headroom` more; `Connection` and `Keep-Alive` are left out when they only steer this
/// connection.
fn header_map(
    head: &Bytes,
    located: &Fields,
    headroom: usize,
    present: Present,
) -> Result<HeaderMap, ProtocolError> {
    let mut headers = empty_map(located.0.len() + headroom);
    let steering = present.connection.only_steer();
    for field in &located.0 {
        if steering && (field.name == CONNECTION || field.name == KEEP_ALIVE) {
            continue;
        }
        let (start, end) = field.value;
        let value = HeaderValue::from_maybe_shared(head.slice(start..end))
            .map_err(|_| ProtocolError::HeaderValue)?;
        headers.append(field.name.clone(), value);
    }
    Ok(headers)
}

thread_local! {
    /// Emptied header maps, for the next heads parsed on this thread: a map costs two
    /// allocations, and every proxied request makes two and drops them again.
    static SPARE_MAPS: RefCell<Vec<HeaderMap>> = const { RefCell::new(Vec::new()) };
}

/// Most maps kept per thread; as many as are in flight at once are enough.
const SPARE_MAPS_MAX: usize = 32;
/// Larger maps than this are freed, not kept.
const SPARE_MAP_CAPACITY: usize = 48;

/// Gives a map that is done with (its head written) back for a later head on this thread.
pub fn recycle(mut map: HeaderMap) {
    if map.capacity() > SPARE_MAP_CAPACITY {
        return;
    }
    map.clear();
    SPARE_MAPS.with_borrow_mut(|spare| {
        if spare.len() < SPARE_MAPS_MAX {
            spare.push(map);
        }
    });
}

/// An empty map with room for `capacity` fields: a recycled one when there is.
fn empty_map(capacity: usize) -> HeaderMap {
    let mut map = SPARE_MAPS.with_borrow_mut(Vec::pop).unwrap_or_default();
    map.reserve(capacity);
    map
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
        return Ok(if head.present.chunked {
            BodyLength::Chunked
        } else {
            BodyLength::UntilClose
        });
    }
    Ok(match head.present.length? {
        Some(0) => BodyLength::Empty,
        Some(n) => BodyLength::Length(n),
        None => BodyLength::UntilClose,
    })
}

/// The `Content-Length` of a message: one number, or a list of equal ones (RFC 9110 §8.6);
/// `None` when there is none.
fn content_length(headers: &HeaderMap) -> Result<Option<u64>, ProtocolError> {
    headers
        .get_all(CONTENT_LENGTH)
        .iter()
        .try_fold(None, |known, value| add_length(known, value.as_bytes()))
}

/// The length `known` from earlier `Content-Length` values, with `value` too.
fn add_length(mut known: Option<u64>, value: &[u8]) -> Result<Option<u64>, ProtocolError> {
    for part in value.split(|b| *b == b',') {
        let digits = part.trim_ascii();
        let n = digits
            .iter()
            .try_fold(0u64, |n, d| {
                let digit = d.is_ascii_digit().then(|| u64::from(d - b'0'))?;
                n.checked_mul(10)?.checked_add(digit)
            })
            .filter(|_| !digits.is_empty())
            .ok_or(ProtocolError::ContentLength)?;
        if known.is_some_and(|l| l != n) {
            return Err(ProtocolError::ContentLength);
        }
        known = Some(n);
    }
    Ok(known)
}

/// Whether the last coding in a `Transfer-Encoding` value is `chunked`.
fn ends_chunked(value: &[u8]) -> bool {
    value
        .rsplit(|b| *b == b',')
        .next()
        .is_some_and(|coding| coding.trim_ascii().eq_ignore_ascii_case(b"chunked"))
}

/// Whether the connection may carry another message after this one, by its version and
/// `Connection` tokens (RFC 9112 §9.3). A message framed both ways may have been misread:
/// never reuse the connection after it.
fn keep_alive(version: Version, present: Present) -> bool {
    let ambiguous = present.transfer_encoding && present.content_length;
    let persistent = match version {
        Version::HTTP_10 => present.connection.keep_alive,
        _ => !present.connection.close,
    };
    persistent && !ambiguous
}

#[cfg(test)]
mod tests;
