//! An HTTP/1.1 connection's bytes, for Weir's client (`upstream::h1`) and server
//! (`server::h1`) alike: reads into one growing buffer that heads and bodies are split from
//! without copying, and writes gathered so that a head and a small body leave in one system
//! call.

use std::{
    io,
    pin::Pin,
    task::{Context, Poll},
};

use bytes::BytesMut;
use futures_util::FutureExt;
use http::HeaderName;
use http_body_util::BodyExt;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};

use crate::{
    body::{Body, BoxError},
    codec,
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
    /// Scratch space for parsing heads.
    pub(crate) names: Vec<(HeaderName, usize, usize)>,
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
            names: Vec::new(),
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
        self.names = Vec::new();
    }
}
