//! One live connection to a peer: its pending calls, its writer queue, and the task that reads
//! frames off it (dispatching responses to callers and requests to the handler) while draining
//! the writer queue onto it.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use tokio::io::{ReadHalf, WriteHalf};
use tokio::net::TcpStream;
use tokio::sync::{Semaphore, mpsc, oneshot};

use super::frame::{self, Flags, Frame};
use super::io::{FrameReader, ReadError, ms, write_loop};
use super::stats::Counters;
use super::{Inner, NodeId, TransportError, lock};

/// Frames a connection's writer queue holds; senders wait (within their timeout) beyond that.
pub(crate) const WRITER_QUEUE_FRAMES_MAX: usize = 1024;
/// Longest handler error message sent back; longer ones are cut.
const REMOTE_ERROR_BYTES_MAX: usize = 4096;

type Reply = oneshot::Sender<Result<Bytes, TransportError>>;

/// A one-shot "closed" signal that never misses a wake-up: a semaphore with no permits is
/// waited on, and closing it wakes every waiter (in FIFO order, so the simulation replays).
#[derive(Debug)]
pub(crate) struct CloseSignal(Semaphore);

impl CloseSignal {
    pub(crate) fn new() -> Self {
        CloseSignal(Semaphore::new(0))
    }
    pub(crate) fn close(&self) {
        self.0.close();
    }
    pub(crate) fn is_closed(&self) -> bool {
        self.0.is_closed()
    }
    pub(crate) async fn closed(&self) {
        // No permit is ever added, so this returns only once the semaphore is closed.
        let _ = self.0.acquire().await;
    }
}

struct Pending {
    /// Set once, when the connection closes; no call registers after that.
    closed: bool,
    /// Calls waiting for a response, by request id.
    calls: BTreeMap<u64, Reply>,
}

pub(crate) struct Conn {
    /// Unique within this transport; tells a replaced connection from its successor.
    pub(crate) id: u64,
    pub(crate) peer: NodeId,
    /// The node that dialed this connection; decides which of two duplicates survives.
    pub(crate) dialer: NodeId,
    next_request_id: AtomicU64,
    pending: Mutex<Pending>,
    /// Encoded frames for the writer; bounded by `WRITER_QUEUE_FRAMES_MAX`.
    writer_tx: mpsc::Sender<Bytes>,
    close: CloseSignal,
    /// A call timed out on this connection since the last frame arrived. The reader closes a
    /// suspect connection after `idle_dead_ms` of silence: under a partition madsim (and TCP)
    /// stalls rather than fails, and bytes queued before it would arrive seconds later.
    suspect: AtomicBool,
}

/// The halves a connection's task runs on, handed over after the handshake.
pub(crate) struct ConnIo {
    pub(crate) reader: FrameReader<ReadHalf<TcpStream>>,
    pub(crate) writer: WriteHalf<TcpStream>,
    writer_rx: mpsc::Receiver<Bytes>,
}

/// Removes a call's pending entry if the call is dropped or times out before its response.
pub(crate) struct PendingCall<'a> {
    conn: &'a Conn,
    pub(crate) request_id: u64,
    pub(crate) reply: oneshot::Receiver<Result<Bytes, TransportError>>,
}

impl Drop for PendingCall<'_> {
    fn drop(&mut self) {
        lock(&self.conn.pending).calls.remove(&self.request_id);
    }
}

impl Conn {
    pub(crate) fn new(
        id: u64,
        peer: NodeId,
        dialer: NodeId,
        reader: FrameReader<ReadHalf<TcpStream>>,
        writer: WriteHalf<TcpStream>,
    ) -> (Arc<Conn>, ConnIo) {
        let (writer_tx, writer_rx) = mpsc::channel(WRITER_QUEUE_FRAMES_MAX);
        let conn = Arc::new(Conn {
            id,
            peer,
            dialer,
            next_request_id: AtomicU64::new(1),
            pending: Mutex::new(Pending { closed: false, calls: BTreeMap::new() }),
            writer_tx,
            close: CloseSignal::new(),
            suspect: AtomicBool::new(false),
        });
        let io = ConnIo { reader, writer, writer_rx };
        (conn, io)
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.close.is_closed()
    }

    /// Reserves a request id and a reply slot; fails if the connection already closed.
    pub(crate) fn register_call(&self) -> Result<PendingCall<'_>, TransportError> {
        let mut pending = lock(&self.pending);
        if pending.closed {
            return Err(TransportError::Unreachable { peer: self.peer, reason: "connection closed".into() });
        }
        let request_id = self.next_request_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        pending.calls.insert(request_id, tx);
        Ok(PendingCall { conn: self, request_id, reply: rx })
    }

    /// Queues an encoded frame for the writer, waiting for room.
    pub(crate) async fn send(&self, bytes: Bytes) -> Result<(), TransportError> {
        self.writer_tx
            .send(bytes)
            .await
            .map_err(|_| TransportError::Unreachable { peer: self.peer, reason: "connection closed".into() })
    }

    /// Queues a ping if there is room; used to make a half-dead connection fail on write.
    pub(crate) fn try_ping(&self) {
        let ping = Frame { kind: 0, flags: Flags::PING, group: 0, request_id: 0, payload: Bytes::new() };
        if let Ok(bytes) = frame::encode_to_bytes(&ping) {
            let _ = self.writer_tx.try_send(bytes);
        }
    }

    pub(crate) fn mark_suspect(&self) {
        self.suspect.store(true, Ordering::Relaxed);
    }

    /// Closes the connection: wakes its task and fails every pending call with `error()`.
    /// Returns false if it was already closed.
    pub(crate) fn close(&self, error: impl Fn() -> TransportError) -> bool {
        let calls = {
            let mut pending = lock(&self.pending);
            if pending.closed {
                return false;
            }
            pending.closed = true;
            std::mem::take(&mut pending.calls)
        };
        self.close.close();
        for (_, reply) in calls {
            let _ = reply.send(Err(error()));
        }
        true
    }

    fn complete(&self, request_id: u64, result: Result<Bytes, TransportError>) {
        let reply = lock(&self.pending).calls.remove(&request_id);
        match reply {
            Some(reply) => {
                let _ = reply.send(result);
            }
            // The call timed out or was dropped: its late response is dropped silently.
            None => tracing::trace!(peer = self.peer, request_id, "late response dropped"),
        }
    }
}

/// The connection's task: reads and writes until either side fails, the peer goes silent
/// while suspect, or the connection is closed; then closes it (failing pending calls).
pub(crate) async fn run(inner: Arc<Inner>, conn: Arc<Conn>, io: ConnIo) {
    let ConnIo { reader, writer, writer_rx } = io;
    let reason = tokio::select! {
        biased;
        _ = conn.close.closed() => None,
        reason = read_loop(&inner, &conn, reader) => Some(reason),
        result = write_loop(writer, writer_rx, &inner.stats) => Some(match result {
            Ok(()) => "writer queue closed".to_string(),
            Err(e) => format!("write failed: {e}"),
        }),
    };
    if let Some(reason) = reason {
        inner.close_conn(&conn, &reason);
    }
}

/// Reads frames until the connection must close; returns why.
async fn read_loop(inner: &Arc<Inner>, conn: &Arc<Conn>, mut reader: FrameReader<ReadHalf<TcpStream>>) -> String {
    let idle_dead = ms(inner.config.idle_dead_ms);
    // Bounds the request bytes this connection's handlers hold at once; when full, reading
    // stops and TCP pushes back on the peer.
    let serving = Arc::new(Semaphore::new(inner.config.in_flight_bytes_max));
    loop {
        let frame = match tokio::time::timeout(idle_dead, reader.next()).await {
            Err(_elapsed) => {
                if conn.suspect.load(Ordering::Relaxed) {
                    return format!("a call timed out and nothing was received for {} ms", inner.config.idle_dead_ms);
                }
                continue;
            }
            Ok(Ok(Some(frame))) => frame,
            Ok(Ok(None)) => return "closed by peer".into(),
            Ok(Err(ReadError::Frame(e))) => {
                Counters::bump(&inner.stats.decode_errors);
                tracing::warn!(self_id = inner.self_id, peer = conn.peer, error = %e, "closing connection: undecodable frame");
                return format!("undecodable frame: {e}");
            }
            Ok(Err(e)) => return e.to_string(),
        };
        conn.suspect.store(false, Ordering::Relaxed);
        let frame_bytes = frame.wire_bytes();
        inner.stats.frame_in(frame_bytes);
        match frame.flags {
            Flags::REQUEST => {
                // frame_bytes <= frame_bytes_max <= in_flight_bytes_max (validated config),
                // and frame_bytes_max fits in u32, so this always fits and can be granted.
                let permits = frame_bytes as u32;
                let Ok(permit) = serving.clone().acquire_many_owned(permits).await else {
                    return "serving semaphore closed".into();
                };
                #[cfg(madsim)]
                if let Some(plan) = super::chaos::plan(inner.self_id, frame.kind) {
                    if let Some(after) = plan.copy_after {
                        let (inner, conn, copy) = (inner.clone(), conn.clone(), frame.clone());
                        tokio::spawn(async move {
                            tokio::time::sleep(after).await;
                            serve_request(&inner, &conn, copy).await;
                        });
                    }
                    let (inner, conn) = (inner.clone(), conn.clone());
                    tokio::spawn(async move {
                        tokio::time::sleep(plan.delay).await;
                        serve_request(&inner, &conn, frame).await;
                        drop(permit);
                    });
                    continue;
                }
                let (inner, conn) = (inner.clone(), conn.clone());
                crate::rt::spawn(async move {
                    serve_request(&inner, &conn, frame).await;
                    drop(permit);
                });
            }
            Flags::RESPONSE => conn.complete(frame.request_id, Ok(frame.payload)),
            Flags::RESPONSE_ERROR => {
                let message = String::from_utf8_lossy(&frame.payload).into_owned();
                conn.complete(frame.request_id, Err(TransportError::Remote(message)));
            }
            Flags::PING => {}
            other => {
                tracing::warn!(
                    self_id = inner.self_id,
                    peer = conn.peer,
                    flags = other.bits(),
                    "closing connection: unexpected frame"
                );
                return format!("unexpected frame with flags {:#04x}", other.bits());
            }
        }
    }
}

/// Runs the handler for one request and queues its response.
async fn serve_request(inner: &Inner, conn: &Conn, request: Frame) {
    let result = inner.handler.handle(conn.peer, request.group, request.kind, request.payload).await;
    let (flags, payload) = match result {
        Ok(payload) if frame::wire_bytes(payload.len()) <= inner.config.frame_bytes_max => (Flags::RESPONSE, payload),
        Ok(payload) => (
            Flags::RESPONSE_ERROR,
            Bytes::from(format!(
                "response of {} bytes exceeds frame_bytes_max {}",
                frame::wire_bytes(payload.len()),
                inner.config.frame_bytes_max
            )),
        ),
        Err(mut message) => {
            if message.len() > REMOTE_ERROR_BYTES_MAX {
                let mut cut = REMOTE_ERROR_BYTES_MAX;
                while !message.is_char_boundary(cut) {
                    cut -= 1;
                }
                message.truncate(cut);
            }
            (Flags::RESPONSE_ERROR, Bytes::from(message))
        }
    };
    let response = Frame { kind: request.kind, flags, group: request.group, request_id: request.request_id, payload };
    match frame::encode_to_bytes(&response) {
        // A closed connection drops the response; the caller sees Unreachable.
        Ok(bytes) => {
            let _ = conn.send(bytes).await;
        }
        Err(e) => tracing::warn!(peer = conn.peer, error = %e, "response not encodable"),
    }
}
