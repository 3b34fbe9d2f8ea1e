//! Frames over a byte stream: a buffered, cancel-safe frame reader and the connection writer.

use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufWriter};
use tokio::sync::mpsc;

use super::frame::{self, Frame, FrameError};
use super::stats::Counters;

/// Bytes asked of the socket per read.
const READ_CHUNK_BYTES: usize = 64 * 1024;
/// The writer coalesces queued frames into one flush up to this many bytes.
const WRITE_BATCH_BYTES_MAX: usize = 256 * 1024;

#[derive(Debug, thiserror::Error)]
pub(crate) enum ReadError {
    #[error("read failed: {0}")]
    Io(#[from] std::io::Error),
    #[error("undecodable frame: {0}")]
    Frame(#[from] FrameError),
    #[error("connection closed in the middle of a frame ({0} bytes buffered)")]
    TruncatedAtEof(usize),
}

/// Reads whole frames from `R`, buffering at most one partial frame (bounded by
/// `frame_bytes_max`) plus one read chunk.
pub(crate) struct FrameReader<R> {
    rd: R,
    buf: BytesMut,
    frame_bytes_max: usize,
}

impl<R: AsyncRead + Unpin> FrameReader<R> {
    pub(crate) fn new(rd: R, frame_bytes_max: usize) -> Self {
        FrameReader { rd, buf: BytesMut::with_capacity(READ_CHUNK_BYTES), frame_bytes_max }
    }

    /// The next frame; `Ok(None)` on a clean end of stream.
    ///
    /// Cancel-safe: the only await is `read_buf`, which either appends to the buffer or does
    /// nothing, so a caller may wrap this in a timeout and call it again.
    pub(crate) async fn next(&mut self) -> Result<Option<Frame>, ReadError> {
        loop {
            if let Some(frame) = frame::decode(&mut self.buf, self.frame_bytes_max)? {
                return Ok(Some(frame));
            }
            self.buf.reserve(READ_CHUNK_BYTES);
            if self.rd.read_buf(&mut self.buf).await? == 0 {
                return match self.buf.len() {
                    0 => Ok(None),
                    n => Err(ReadError::TruncatedAtEof(n)),
                };
            }
        }
    }
}

/// Writes one already-encoded frame and flushes (used by the handshake).
pub(crate) async fn write_one<W: AsyncWrite + Unpin>(wr: &mut W, bytes: &[u8]) -> std::io::Result<()> {
    wr.write_all(bytes).await?;
    wr.flush().await
}

/// Drains the connection's writer queue onto the socket until the queue closes or a write
/// fails. Frames already queued are coalesced into one flush (one simulated packet, one
/// syscall batch).
pub(crate) async fn write_loop<W: AsyncWrite + Unpin>(
    wr: W,
    mut queue: mpsc::Receiver<Bytes>,
    stats: &Counters,
) -> std::io::Result<()> {
    let mut wr = BufWriter::with_capacity(WRITE_BATCH_BYTES_MAX, wr);
    while let Some(first) = queue.recv().await {
        let mut batch_bytes = first.len();
        wr.write_all(&first).await?;
        stats.frame_out(first.len());
        while batch_bytes < WRITE_BATCH_BYTES_MAX {
            let Ok(next) = queue.try_recv() else { break };
            batch_bytes += next.len();
            wr.write_all(&next).await?;
            stats.frame_out(next.len());
        }
        wr.flush().await?;
    }
    Ok(())
}

/// `Duration` from a config value in milliseconds.
pub(crate) fn ms(value_ms: u64) -> Duration {
    Duration::from_millis(value_ms)
}
