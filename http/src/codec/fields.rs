//! A head's fields: where each lies in the buffer (and its name, reused head to head), what the
//! framing ones say, and the map they become, made from emptied maps kept per thread.

use std::cell::RefCell;

use bytes::Bytes;
use http::{
    header::{CONNECTION, CONTENT_LENGTH, EXPECT, HOST, TRANSFER_ENCODING, UPGRADE},
    HeaderMap, HeaderName, HeaderValue, Version,
};

use super::ProtocolError;
use crate::hop::KEEP_ALIVE;

/// Which of the fields that frame a message or steer its connection a head carries, noted
/// while its fields are located. Most heads carry few of them, and looking up an absent one
/// still costs a hash and a probe.
#[derive(Clone, Copy, Debug)]
pub(super) struct Present {
    /// What the `Content-Length` fields say, read as they are located (kept as an error until a
    /// length is needed: a response to HEAD may carry any).
    pub(super) length: Result<Option<u64>, ProtocolError>,
    pub(super) transfer_encoding: bool,
    /// Whether the last transfer coding is `chunked` (RFC 9112 §6.3).
    pub(super) chunked: bool,
    /// How many transfer codings the `Transfer-Encoding` fields list, all of them.
    pub(super) codings: usize,
    /// What the `Connection` fields say, read as they are located.
    pub(super) connection: Tokens,
    /// `Expect: 100-continue`.
    pub(super) expect: bool,
    pub(super) upgrade: bool,
    /// How many `Host` fields there are (a request must have exactly one, RFC 9112 §3.2).
    pub(super) hosts: usize,
}

impl Present {
    /// Whether the head has a `Content-Length` (valid or not).
    pub(super) fn content_length(&self) -> bool {
        !matches!(self.length, Ok(None))
    }
}

/// The tokens of a head's `Connection` fields (RFC 9112 §9.6).
#[derive(Clone, Copy, Debug, Default)]
pub(super) struct Tokens {
    pub(super) close: bool,
    pub(super) keep_alive: bool,
    pub(super) upgrade: bool,
    /// Any other token: a field that must not go past this hop.
    other: bool,
}

impl Tokens {
    pub(super) fn note(&mut self, value: &[u8]) {
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
pub(super) fn locate_fields(
    buf: &[u8],
    fields: &[httparse::Header<'_>],
    located: &mut Fields,
) -> Result<Present, ProtocolError> {
    let located = &mut located.0;
    let mut present = Present {
        length: Ok(None),
        transfer_encoding: false,
        chunked: false,
        codings: 0,
        connection: Tokens::default(),
        expect: false,
        upgrade: false,
        hosts: 0,
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
            present.length = present.length.and_then(|known| add_length(known, f.value));
        } else if name == TRANSFER_ENCODING {
            present.transfer_encoding = true;
            present.chunked = ends_chunked(f.value);
            present.codings += codings(f.value);
        } else if name == CONNECTION {
            present.connection.note(f.value);
        } else if name == EXPECT {
            present.expect |= f.value.eq_ignore_ascii_case(b"100-continue");
        } else if name == UPGRADE {
            present.upgrade = true;
        } else if name == HOST {
            present.hosts += 1;
        }
    }
    located.truncate(fields.len());
    Ok(present)
}

/// Where `part` starts in `buf`, which holds it.
pub(super) fn offset(buf: &[u8], part: &[u8]) -> usize {
    part.as_ptr() as usize - buf.as_ptr() as usize
}

/// The fields [`locate_fields`] found, with values sharing `head`'s bytes, in a map with room
/// for `headroom` more; `Connection` and `Keep-Alive` are left out when they only steer this
/// connection.
pub(super) fn header_map(
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

/// The `Content-Length` of a message: one number, or a list of equal ones (RFC 9110 §8.6);
/// `None` when there is none.
pub(super) fn content_length(headers: &HeaderMap) -> Result<Option<u64>, ProtocolError> {
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

/// How many codings a `Transfer-Encoding` value lists (empty list elements are not codings).
fn codings(value: &[u8]) -> usize {
    value
        .split(|b| *b == b',')
        .filter(|coding| !coding.trim_ascii().is_empty())
        .count()
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
pub(super) fn keep_alive(version: Version, present: Present) -> bool {
    let ambiguous = present.transfer_encoding && present.content_length();
    let persistent = match version {
        Version::HTTP_10 => present.connection.keep_alive,
        _ => !present.connection.close,
    };
    persistent && !ambiguous
}
