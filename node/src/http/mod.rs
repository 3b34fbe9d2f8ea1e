//! A node's HTTP port: `GET /metrics` (Prometheus text format 0.0.4), `GET /` (the status page,
//! one self-contained HTML page whose script polls `/status.json` and re-renders) and
//! `GET /status.json` (a [`crate::status::Snapshot`]). Other paths answer 404, other methods 405.
//!
//! Why a small hand-written responder and not hyper: the node runs on madsim-tokio, whose
//! `TcpStream` under `--cfg madsim` is madsim's simulated socket, not a tokio one, so hyper (and
//! hyper-util's tokio glue) cannot serve on it there; and these three read-only GET endpoints need
//! no keep-alive, chunking, bodies or upgrades. This module reads one request head (bounded by
//! [`HttpConfig::request_head_bytes_max`] and [`HttpConfig::read_timeout_ms`]), answers it with a
//! `Content-Length` body and `Connection: close`, and closes. Parsing and routing are pure
//! functions over bytes ([`request`]); nothing a client sends can panic the node. At most
//! [`HttpConfig::connections_max`] connections are served at once; further ones wait to be
//! accepted.
//!
//! Like [`crate::kafka::serve`], [`serve`] takes its listener from the caller, so tests and the
//! simulator decide where it listens (the simulator leaves it unstarted).

pub mod request;

use std::sync::Arc;
use std::time::Duration;

use tokio::io::AsyncReadExt;
use tokio::io::AsyncWriteExt;

use crate::node::Node;
use request::HeadError;
use request::Route;

/// The status page (HTML, CSS and script in one file).
const PAGE_HTML: &str = include_str!("page.html");

/// Settings of a node's HTTP listener.
#[derive(Debug, Clone)]
pub struct HttpConfig {
    /// Largest request head read; a longer one is answered 431 and the connection closed.
    pub request_head_bytes_max: usize,
    /// A request head not complete within this long closes the connection unanswered; an
    /// answer not written within it is abandoned.
    pub read_timeout_ms: u64,
    /// Connections served at once.
    pub connections_max: usize,
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig { request_head_bytes_max: 8 * 1024, read_timeout_ms: 5_000, connections_max: 64 }
    }
}

/// One answer, always closing the connection after it.
struct Response {
    status: u16,
    reason: &'static str,
    content_type: &'static str,
    body: Vec<u8>,
}

impl Response {
    fn ok(content_type: &'static str, body: Vec<u8>) -> Response {
        Response { status: 200, reason: "OK", content_type, body }
    }

    fn error(status: u16, reason: &'static str) -> Response {
        Response { status, reason, content_type: "text/plain; charset=utf-8", body: format!("{reason}\n").into_bytes() }
    }

    fn encode(&self) -> Vec<u8> {
        let allow = if self.status == 405 { "Allow: GET\r\n" } else { "" };
        let mut out = format!(
            "HTTP/1.1 {} {}\r\nContent-Type: {}\r\nContent-Length: {}\r\nCache-Control: no-store\r\n{allow}Connection: close\r\n\r\n",
            self.status,
            self.reason,
            self.content_type,
            self.body.len()
        )
        .into_bytes();
        out.extend_from_slice(&self.body);
        out
    }
}

/// Serves HTTP on `listener` until the node stops.
pub async fn serve(node: Arc<Node>, listener: tokio::net::TcpListener, config: HttpConfig) {
    let config = Arc::new(config);
    let slots = Arc::new(tokio::sync::Semaphore::new(config.connections_max.max(1)));
    loop {
        let Ok(slot) = slots.clone().acquire_owned().await else { return };
        let (stream, peer) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(error = %e, "http listener: accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        if node.is_stopped() {
            return;
        }
        let node = node.clone();
        let config = config.clone();
        crate::rt::spawn(async move {
            let _slot = slot;
            if let Err(e) = serve_connection(&node, stream, &config).await {
                tracing::debug!(%peer, error = %e, "http connection ended");
            }
        });
    }
}

/// Reads one request head, answers it, closes.
async fn serve_connection<S>(node: &Arc<Node>, mut stream: S, config: &HttpConfig) -> std::io::Result<()>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let timeout = Duration::from_millis(config.read_timeout_ms);
    let head = match tokio::time::timeout(timeout, read_head(&mut stream, config.request_head_bytes_max)).await {
        Err(_) => return Ok(()),
        Ok(head) => head?,
    };
    let response = match head {
        None => Response::error(431, "Request Header Fields Too Large"),
        Some(head) => match request::route(&head) {
            Ok(route) => answer(node, route).await,
            Err(HeadError::Malformed(_)) => Response::error(400, "Bad Request"),
            Err(HeadError::Version) => Response::error(505, "HTTP Version Not Supported"),
        },
    };
    let write = async {
        stream.write_all(&response.encode()).await?;
        stream.flush().await?;
        stream.shutdown().await?;
        // Read what the client still sends (a body, the rest of a long head) before closing:
        // closing with unread bytes resets the connection, and the client may lose the answer.
        let mut drained = 0usize;
        let mut chunk = [0u8; 1024];
        while drained < DRAIN_BYTES_MAX {
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => break,
                Ok(n) => drained += n,
            }
        }
        Ok(())
    };
    tokio::time::timeout(timeout, write).await.unwrap_or(Ok(()))
}

/// At most this much of what a client sends after its head is read (and dropped) before the
/// connection closes.
const DRAIN_BYTES_MAX: usize = 64 * 1024;

/// Reads until the end of the request head; `None` if it is longer than `max` bytes. A
/// connection that ends first is an error.
async fn read_head<R: tokio::io::AsyncRead + Unpin>(reader: &mut R, max: usize) -> std::io::Result<Option<Vec<u8>>> {
    let mut buf = Vec::with_capacity(1024.min(max));
    let mut chunk = [0u8; 1024];
    loop {
        let n = reader.read(&mut chunk).await?;
        if n == 0 {
            return Err(std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "connection ended inside the head"));
        }
        // Only the bytes that may complete the blank line need rescanning.
        let scan_from = buf.len().saturating_sub(3);
        buf.extend_from_slice(&chunk[..n]);
        if let Some(end) = request::head_end(&buf[scan_from..]) {
            buf.truncate(scan_from + end);
            return Ok(Some(buf));
        }
        if buf.len() > max {
            return Ok(None);
        }
    }
}

async fn answer(node: &Arc<Node>, route: Route) -> Response {
    match route {
        Route::Page => Response::ok("text/html; charset=utf-8", PAGE_HTML.as_bytes().to_vec()),
        Route::StatusJson => {
            let snapshot = crate::status::snapshot(node).await;
            match serde_json::to_vec(&snapshot) {
                Ok(body) => Response::ok("application/json", body),
                Err(e) => {
                    tracing::warn!(error = %e, "encoding /status.json failed");
                    Response::error(500, "Internal Server Error")
                }
            }
        }
        Route::Metrics => {
            let snapshot = crate::status::snapshot(node).await;
            match crate::metrics::render(node.metrics(), &snapshot, &node.transport().stats()) {
                Ok(text) => Response::ok(crate::metrics::CONTENT_TYPE, text.into_bytes()),
                Err(e) => {
                    tracing::warn!(error = %e, "rendering /metrics failed");
                    Response::error(500, "Internal Server Error")
                }
            }
        }
        Route::NotFound => Response::error(404, "Not Found"),
        Route::MethodNotAllowed => Response::error(405, "Method Not Allowed"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A head split across reads is found whole; bytes after it are not part of it.
    #[cfg(not(madsim))]
    #[tokio::test]
    async fn head_is_read_across_chunks_and_bounded() {
        let (mut client, mut server) = tokio::io::duplex(64);
        let writer = tokio::spawn(async move {
            for part in [&b"GET /metr"[..], b"ics HTTP/1.1\r\nHost: a\r", b"\n\r\nleftover"] {
                client.write_all(part).await.expect("write");
                tokio::task::yield_now().await;
            }
            client
        });
        let head = read_head(&mut server, 1024).await.expect("read").expect("within bound");
        assert_eq!(head, b"GET /metrics HTTP/1.1\r\nHost: a\r\n\r\n");
        drop(writer.await);

        let (mut client, mut server) = tokio::io::duplex(4096);
        client.write_all(&[b'a'; 3000]).await.expect("write");
        assert_eq!(read_head(&mut server, 2048).await.expect("read"), None, "an endless head is cut off");
    }

    /// Every answer names its length and closes; 405 says which method is allowed.
    #[test]
    fn responses_carry_length_and_allow() {
        let r = String::from_utf8(Response::error(405, "Method Not Allowed").encode()).expect("utf8");
        assert!(r.starts_with("HTTP/1.1 405 Method Not Allowed\r\n"), "{r}");
        assert!(r.contains("\r\nAllow: GET\r\n") && r.contains("\r\nConnection: close\r\n"), "{r}");
        assert!(r.contains("\r\nContent-Length: 19\r\n") && r.ends_with("\r\n\r\nMethod Not Allowed\n"), "{r}");
    }
}
