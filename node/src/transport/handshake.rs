//! The connection handshake: the dialer sends a hello (protocol version, cluster id, node id),
//! the acceptor answers with its own, and each side checks the other's.

use tokio::io::{ReadHalf, WriteHalf};
use tokio::net::TcpStream;

use super::NodeId;
use super::frame::{self, Hello};
use super::io::{FrameReader, write_one};

pub(crate) type Halves = (FrameReader<ReadHalf<TcpStream>>, WriteHalf<TcpStream>);

/// Checks the peer's hello against ours; `expected` is the node the dialer meant to reach.
pub(crate) fn check_hello(ours: &Hello, theirs: &Hello, expected: Option<NodeId>) -> Result<(), String> {
    if theirs.version != ours.version {
        return Err(format!("protocol version mismatch: ours {}, theirs {}", ours.version, theirs.version));
    }
    if theirs.cluster_id != ours.cluster_id {
        return Err(format!("cluster id mismatch: ours {:?}, theirs {:?}", ours.cluster_id, theirs.cluster_id));
    }
    if theirs.node_id == ours.node_id {
        return Err(format!("peer claims our own node id {}", ours.node_id));
    }
    match expected {
        Some(id) if id != theirs.node_id => {
            Err(format!("expected node {id} at this address, reached node {}", theirs.node_id))
        }
        _ => Ok(()),
    }
}

async fn read_hello(reader: &mut FrameReader<ReadHalf<TcpStream>>) -> Result<Hello, String> {
    match reader.next().await {
        Ok(Some(f)) => Hello::from_frame(&f).map_err(|e| e.to_string()),
        Ok(None) => Err("connection closed during the handshake".into()),
        Err(e) => Err(e.to_string()),
    }
}

async fn send_hello(writer: &mut WriteHalf<TcpStream>, hello: &Hello) -> Result<(), String> {
    let bytes = hello.to_frame().and_then(|f| frame::encode_to_bytes(&f)).map_err(|e| e.to_string())?;
    write_one(writer, &bytes).await.map_err(|e| format!("sending hello: {e}"))
}

/// Dialer side: connect, send our hello, check the answer. The caller bounds it in time.
pub(crate) async fn dial(addr: &str, ours: &Hello, to: NodeId, frame_bytes_max: usize) -> Result<Halves, String> {
    let stream = TcpStream::connect(addr).await.map_err(|e| format!("connect to {addr}: {e}"))?;
    let _ = stream.set_nodelay(true);
    let (rd, mut wr) = tokio::io::split(stream);
    send_hello(&mut wr, ours).await?;
    let mut reader = FrameReader::new(rd, frame_bytes_max);
    let theirs = read_hello(&mut reader).await?;
    check_hello(ours, &theirs, Some(to))?;
    Ok((reader, wr))
}

/// Acceptor side: read the dialer's hello, answer with ours (so a mismatched dialer learns
/// why), then check it. Returns the dialer's node id. The caller bounds it in time.
pub(crate) async fn accept(
    stream: TcpStream,
    ours: &Hello,
    frame_bytes_max: usize,
) -> Result<(NodeId, Halves), String> {
    let _ = stream.set_nodelay(true);
    let (rd, mut wr) = tokio::io::split(stream);
    let mut reader = FrameReader::new(rd, frame_bytes_max);
    let theirs = read_hello(&mut reader).await?;
    send_hello(&mut wr, ours).await?;
    check_hello(ours, &theirs, None)?;
    Ok((theirs.node_id, (reader, wr)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::transport::frame::PROTOCOL_VERSION;

    fn hello(node_id: u64, cluster_id: &str) -> Hello {
        Hello { version: PROTOCOL_VERSION, node_id, cluster_id: cluster_id.into() }
    }

    #[test]
    fn hello_checks() {
        let ours = hello(1, "c");
        assert!(check_hello(&ours, &hello(2, "c"), Some(2)).is_ok());
        assert!(check_hello(&ours, &hello(2, "c"), None).is_ok());
        assert!(check_hello(&ours, &hello(2, "other"), None).unwrap_err().contains("cluster id"));
        assert!(check_hello(&ours, &hello(1, "c"), None).unwrap_err().contains("own node id"));
        assert!(check_hello(&ours, &hello(3, "c"), Some(2)).unwrap_err().contains("expected node 2"));
        let mut v2 = hello(2, "c");
        v2.version += 1;
        assert!(check_hello(&ours, &v2, None).unwrap_err().contains("version"));
    }
}
