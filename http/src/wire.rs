//! An HTTP/1.1 connection's bytes, for Weir's client (`upstream::h1`) and server
//! (`server::h1`) alike: reads into one growing buffer that heads and bodies are split from
//! without copying, bodies read by their framing, and writes gathered so that a head and a
//! small body leave in one system call.

use std::{
    io,
    pin::Pin,
    task::{ready, Context, Poll},
};

use bytes::{Buf, Bytes, BytesMut};
use futures_util::FutureExt;
use http_body::{Frame, SizeHint};
use http_body_util::BodyExt;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};

use crate::{
    body::{Body, BoxError},
    codec::{self, Chunked, Decoded},
};

/// Read buffers grow by this much.
const READ_CHUNK: usize = 8 * 1024;
/// Heads and small bodies are gathered up to this size into one write.
const COALESCE: usize = 16 * 1024;

/// A connection with its buffers.
pub(crate) struct Wire<T> {
    pub(crate) io: T,
    /// Bytes read and not yet parsed or handed out.
    pub(crate) read: BytesMut,
    /// The head (and small bodies) being written.
    pub(crate) write: Vec<u8>,
    /// The fields of the last head read.
    pub(crate) fields: codec::Fields,
}

/// Why sending a body failed.
pub(crate) enum Sending {
    /// The body itself failed, or did not match its declared length.
    Body(BoxError),
    /// Writing to the connection failed.
    Io(io::Error),
}

impl<T: AsyncRead + AsyncWrite + Unpin> Wire<T> {
    pub(crate) fn new(io: T) -> Self {
        Self {
            io,
            read: BytesMut::new(),
            write: Vec::new(),
            fields: codec::Fields::default(),
        }
    }

    /// Reads more into the read buffer; `Ok(0)` when the peer closed.
    pub(crate) fn poll_fill(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        if self.read.capacity() - self.read.len() < READ_CHUNK / 4 {
            self.read.reserve(READ_CHUNK);
        }
        tokio_util::io::poll_read_buf(Pin::new(&mut self.io), cx, &mut self.read)
    }

    /// Writes what is gathered and flushes it (TLS keeps records until flushed).
    pub(crate) async fn flush_write(&mut self) -> io::Result<()> {
        self.io.write_all(&self.write).await?;
        self.write.clear();
        self.io.flush().await
    }

    /// Writes the gathered head and then `body`: exactly `length` bytes when given, chunked
    /// (with its trailers) when `chunked`, else as it comes. Bytes ready at once go out in one
    /// write; when the body is not ready, what is gathered is written before waiting.
    pub(crate) async fn send_body(
        &mut self,
        mut body: Body,
        length: Option<u64>,
        chunked: bool,
    ) -> Result<(), Sending> {
        let mut sent = 0u64;
        let mut trailers = None;
        loop {
            let frame = match body.frame().now_or_never() {
                Some(frame) => frame,
                None => {
                    self.flush_write().await.map_err(Sending::Io)?;
                    body.frame().await
                }
            };
            let Some(frame) = frame else { break };
            let data = match frame.map_err(Sending::Body)?.into_data() {
                Ok(data) => data,
                Err(frame) => {
                    trailers = frame.into_trailers().ok();
                    continue;
                }
            };
            if data.is_empty() {
                continue;
            }
            sent += data.len() as u64;
            if length.is_some_and(|n| sent > n) {
                return Err(Sending::Body("the body is longer than its length".into()));
            }
            if chunked {
                codec::encode_chunk_size(&mut self.write, data.len());
            }
            if self.write.len() + data.len() <= COALESCE {
                self.write.extend_from_slice(&data);
            } else {
                self.flush_write().await.map_err(Sending::Io)?;
                self.io.write_all(&data).await.map_err(Sending::Io)?;
            }
            if chunked {
                self.write.extend_from_slice(b"\r\n");
            }
        }
        if chunked {
            codec::encode_last_chunk(&mut self.write, trailers.as_ref());
        } else if length.is_some_and(|n| sent != n) {
            return Err(Sending::Body("the body is shorter than its length".into()));
        }
        self.flush_write().await.map_err(Sending::Io)
    }

    /// Gives the buffers back (an idle connection).
    pub(crate) fn release(&mut self) {
        self.read = BytesMut::new();
        self.write = Vec::new();
        self.fields = codec::Fields::default();
    }
}

/// How an incoming body is delimited, and how much of it is left.
pub(crate) enum Framing {
    /// This many bytes.
    Length(u64),
    /// Chunked transfer coding.
    Chunked(Chunked),
    /// Until the peer closes the connection.
    UntilClose,
}

/// One step of reading a body.
pub(crate) enum Step {
    /// A frame, with more to come.
    Frame(Frame<Bytes>),
    /// The body ended, read whole; with its last frame, if that came with the end.
    Ended(Option<Frame<Bytes>>),
    /// The body is broken (cut short, malformed, a read failed): the connection is unusable.
    Failed(BoxError),
}

impl Step {
    /// What a body reading this step yields. `end` is told when the body is over, and whether
    /// it was read whole: the server's request body and the client's response body each give
    /// their connection back (or close it) their own way, and only that differs between them.
    pub(crate) fn into_frame(
        self,
        end: impl FnOnce(bool),
    ) -> Option<Result<Frame<Bytes>, BoxError>> {
        match self {
            Step::Frame(frame) => Some(Ok(frame)),
            Step::Ended(last) => {
                end(true);
                last.map(Ok)
            }
            Step::Failed(e) => {
                end(false);
                Some(Err(e))
            }
        }
    }
}

impl Framing {
    /// Reads the body's next piece from `wire`.
    pub(crate) fn poll_step<T: AsyncRead + AsyncWrite + Unpin>(
        &mut self,
        wire: &mut Wire<T>,
        cx: &mut Context<'_>,
    ) -> Poll<Step> {
        loop {
            match self {
                Framing::Length(0) => return Poll::Ready(Step::Ended(None)),
                Framing::Length(left) if !wire.read.is_empty() => {
                    let n = usize::try_from(*left)
                        .unwrap_or(usize::MAX)
                        .min(wire.read.len());
                    let data = Frame::data(wire.read.split_to(n).freeze());
                    *left -= n as u64;
                    return Poll::Ready(if *left == 0 {
                        Step::Ended(Some(data))
                    } else {
                        Step::Frame(data)
                    });
                }
                Framing::UntilClose if !wire.read.is_empty() => {
                    return Poll::Ready(Step::Frame(Frame::data(wire.read.split().freeze())));
                }
                Framing::Chunked(chunked) if !wire.read.is_empty() => {
                    match chunked.decode(&mut wire.read) {
                        Ok(Decoded::Data(data)) => {
                            return Poll::Ready(Step::Frame(Frame::data(data)))
                        }
                        Ok(Decoded::Trailers(trailers)) => {
                            return Poll::Ready(Step::Ended(Some(Frame::trailers(trailers))))
                        }
                        Ok(Decoded::Done) => return Poll::Ready(Step::Ended(None)),
                        Ok(Decoded::More) => {}
                        Err(e) => return Poll::Ready(Step::Failed(e.into())),
                    }
                }
                _ => {}
            }
            match ready!(wire.poll_fill(cx)) {
                Ok(0) if matches!(self, Framing::UntilClose) => {
                    return Poll::Ready(Step::Ended(None))
                }
                Ok(0) => {
                    return Poll::Ready(Step::Failed(
                        "the connection closed before the body ended".into(),
                    ))
                }
                Ok(_) => {}
                Err(e) => return Poll::Ready(Step::Failed(e.into())),
            }
        }
    }

    /// Skips the rest of the body if all of it is already in `read`; whether it was.
    pub(crate) fn skip_buffered(&mut self, read: &mut BytesMut) -> bool {
        match self {
            Framing::Length(left) => {
                let here = usize::try_from(*left).is_ok_and(|n| n <= read.len());
                if here {
                    read.advance(*left as usize);
                    *left = 0;
                }
                here
            }
            Framing::Chunked(chunked) => loop {
                match chunked.decode(read) {
                    Ok(Decoded::Data(_)) => {}
                    Ok(Decoded::Trailers(_) | Decoded::Done) => break true,
                    Ok(Decoded::More) | Err(_) => break false,
                }
            },
            Framing::UntilClose => false,
        }
    }

    /// What is known of the body's remaining length.
    pub(crate) fn size_hint(&self) -> SizeHint {
        match self {
            Framing::Length(n) => SizeHint::with_exact(*n),
            _ => SizeHint::default(),
        }
    }
}
