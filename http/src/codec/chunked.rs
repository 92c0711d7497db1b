//! The chunked transfer coding (RFC 9112 §7.1): chunk-size lines and the last chunk with its
//! trailers out, a body decoded as its bytes arrive.
//!
//! Decoding is strict where leniency is how two parsers come to disagree about where a body
//! ends: every line ends in CRLF (a bare LF is refused, never read as a line end, so `0\n\r\n`
//! is an error at once rather than a last chunk whose end never comes), a chunk size is hex
//! digits only, and whitespace may stand only before an extension's `;`.

use bytes::{Buf, Bytes, BytesMut};
use http::{HeaderMap, HeaderName, HeaderValue};

use super::{digits, field, ProtocolError, MAX_HEADERS};

/// Longest chunk-size line (with extensions) and trailer section accepted.
const MAX_CHUNK_LINE: usize = 4096;
const MAX_TRAILERS: usize = 16 * 1024;

/// Writes the trailer section that ends a chunked body: the last chunk, the fields, CRLF.
pub fn encode_last_chunk(out: &mut Vec<u8>, trailers: Option<&HeaderMap>) {
    out.extend_from_slice(b"0\r\n");
    for (name, value) in trailers.into_iter().flatten() {
        field(out, name.as_str().as_bytes(), value.as_bytes());
    }
    out.extend_from_slice(b"\r\n");
}

/// Writes a chunk-size line for `len` bytes of data.
pub fn encode_chunk_size(out: &mut Vec<u8>, len: usize) {
    out.extend_from_slice(digits(len as u64, 16, &mut [0; 20]));
    out.extend_from_slice(b"\r\n");
}

/// Decodes a chunked body as its bytes arrive.
#[derive(Debug, Default)]
pub struct Chunked {
    state: ChunkState,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
enum ChunkState {
    /// Expecting a chunk-size line.
    #[default]
    Size,
    /// Inside a chunk, this many bytes left.
    Data(u64),
    /// Expecting the CRLF that ends a chunk's data.
    DataEnd,
    /// After the last chunk: trailer fields, then CRLF.
    Trailers,
    /// The body has ended.
    Done,
}

/// What [`Chunked::decode`] found in the buffer.
#[derive(Debug, PartialEq)]
pub enum Decoded {
    /// Body bytes.
    Data(Bytes),
    /// The trailer fields; the body has ended.
    Trailers(HeaderMap),
    /// The body has ended (no trailers).
    Done,
    /// More bytes are needed.
    More,
}

impl Chunked {
    /// Takes the next piece of the body from the front of `buf`.
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Decoded, ProtocolError> {
        loop {
            match self.state {
                ChunkState::Done => return Ok(Decoded::Done),
                ChunkState::Size => {
                    let Some(end) = find_crlf(buf, MAX_CHUNK_LINE)? else {
                        return Ok(Decoded::More);
                    };
                    let size = chunk_size(&buf[..end])?;
                    buf.advance(end + 2);
                    self.state = if size == 0 {
                        ChunkState::Trailers
                    } else {
                        ChunkState::Data(size)
                    };
                }
                ChunkState::Data(left) => {
                    if buf.is_empty() {
                        return Ok(Decoded::More);
                    }
                    let n = usize::try_from(left).unwrap_or(usize::MAX).min(buf.len());
                    let left = left - n as u64;
                    self.state = if left == 0 {
                        ChunkState::DataEnd
                    } else {
                        ChunkState::Data(left)
                    };
                    return Ok(Decoded::Data(buf.split_to(n).freeze()));
                }
                ChunkState::DataEnd => {
                    if buf.len() < 2 {
                        return Ok(Decoded::More);
                    }
                    if &buf[..2] != b"\r\n" {
                        return Err(ProtocolError::Chunk);
                    }
                    buf.advance(2);
                    self.state = ChunkState::Size;
                }
                ChunkState::Trailers => return self.trailers(buf),
            }
        }
    }

    /// Whether the body has ended.
    pub fn done(&self) -> bool {
        self.state == ChunkState::Done
    }

    fn trailers(&mut self, buf: &mut BytesMut) -> Result<Decoded, ProtocolError> {
        if buf.len() >= 2 && &buf[..2] == b"\r\n" {
            buf.advance(2);
            self.state = ChunkState::Done;
            return Ok(Decoded::Done);
        }
        // httparse takes a bare LF as a line end; here it is refused, as in chunk-size lines.
        if bare_lf(buf) {
            return Err(ProtocolError::Chunk);
        }
        let mut fields = [httparse::EMPTY_HEADER; MAX_HEADERS];
        match httparse::parse_headers(buf, &mut fields) {
            // Too long, however it arrived (whole, it would not have been seen partial).
            Ok(httparse::Status::Complete((len, _))) if len > MAX_TRAILERS => {
                Err(ProtocolError::HeadTooLarge)
            }
            Ok(httparse::Status::Complete((len, fields))) => {
                let mut trailers = HeaderMap::with_capacity(fields.len());
                for f in fields.iter() {
                    let name = HeaderName::from_bytes(f.name.as_bytes())
                        .map_err(|_| ProtocolError::Malformed(httparse::Error::HeaderName))?;
                    let value =
                        HeaderValue::from_bytes(f.value).map_err(|_| ProtocolError::HeaderValue)?;
                    trailers.append(name, value);
                }
                buf.advance(len);
                self.state = ChunkState::Done;
                Ok(Decoded::Trailers(trailers))
            }
            Ok(httparse::Status::Partial) if buf.len() > MAX_TRAILERS => {
                Err(ProtocolError::HeadTooLarge)
            }
            Ok(httparse::Status::Partial) => Ok(Decoded::More),
            Err(httparse::Error::TooManyHeaders) => Err(ProtocolError::HeadTooLarge),
            Err(e) => Err(ProtocolError::Malformed(e)),
        }
    }
}

/// Where the first line ends (the index of its CR), looking at most `limit` bytes in. A line
/// ending in a bare LF is an error, and so is one longer than `limit` whether or not its end
/// has arrived: a body must not be refused or accepted depending on how it was split.
fn find_crlf(buf: &[u8], limit: usize) -> Result<Option<usize>, ProtocolError> {
    match buf.iter().position(|b| *b == b'\n') {
        Some(i) if i > limit => Err(ProtocolError::Chunk),
        Some(i) if i > 0 && buf[i - 1] == b'\r' => Ok(Some(i - 1)),
        Some(_) => Err(ProtocolError::Chunk),
        None if buf.len() > limit => Err(ProtocolError::Chunk),
        None => Ok(None),
    }
}

/// Whether the bytes up to the end of a trailer section (or all of them, while it is still
/// arriving) hold an LF without its CR.
fn bare_lf(buf: &[u8]) -> bool {
    let end = buf
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map_or(buf.len(), |i| i + 4);
    let section = &buf[..end.min(MAX_TRAILERS + 4)];
    section
        .iter()
        .enumerate()
        .any(|(i, b)| *b == b'\n' && (i == 0 || section[i - 1] != b'\r'))
}

/// The size from a chunk-size line (hex digits, then optional `;extensions`, which may be
/// preceded by spaces or tabs and hold no control characters besides tab).
fn chunk_size(line: &[u8]) -> Result<u64, ProtocolError> {
    let (mut digits, extensions) = match line.iter().position(|b| *b == b';') {
        Some(i) => (&line[..i], &line[i..]),
        None => (line, &b""[..]),
    };
    if !extensions.is_empty() {
        while let [rest @ .., b' ' | b'\t'] = digits {
            digits = rest;
        }
    }
    if digits.is_empty()
        || digits.len() > 15
        || extensions
            .iter()
            .any(|b| b.is_ascii_control() && *b != b'\t')
    {
        return Err(ProtocolError::Chunk);
    }
    digits.iter().try_fold(0u64, |n, d| {
        let v = char::from(*d).to_digit(16).ok_or(ProtocolError::Chunk)?;
        Ok(n * 16 + u64::from(v))
    })
}
