//! The Kafka listener: every node speaks the Kafka wire protocol to clients.
//!
//! Request headers and bodies are decoded, and responses encoded, by the `kafka-protocol`
//! crate; record batches pass through as the raw bytes the log stores. This module owns what
//! the crate does not: framing, per-connection pipelining, the supported-versions table and
//! the mapping from Keel's state and errors to Kafka's.
//!
//! One connection: a reader reads size-prefixed frames (refusing any above
//! [`KafkaConfig::request_bytes_max`]), decodes the header, and spawns the request's handler;
//! the handlers' answers are written back in request order (Kafka clients pipeline and match
//! by order as well as correlation id). At most [`KafkaConfig::in_flight_max`] requests of a
//! connection are being served at once; the reader waits for room. A malformed frame closes
//! that connection with a log line; answers already owed are written first. Every handled
//! request is counted in the node's metrics by API: frame bytes in and out, time to answer.

mod admin;
mod codes;
mod configs;
mod elect;
mod fetch;
mod group;
mod group_offsets;
mod leader_epoch;
mod log_dirs;
mod metadata;
mod produce;
mod producer_id;
mod reassign;
mod versions;

use std::sync::Arc;
use std::time::Duration;

use bytes::BufMut;
use bytes::Bytes;
use bytes::BytesMut;
use kafka_protocol::messages::ApiKey;
use kafka_protocol::messages::RequestHeader;
use kafka_protocol::messages::ResponseHeader;
use kafka_protocol::protocol::Decodable;
use kafka_protocol::protocol::Encodable;
use kafka_protocol::protocol::decode_request_header_from_buffer;
use thiserror::Error;
use tokio::io::AsyncReadExt;
use tokio::io::AsyncWriteExt;

use crate::node::Node;

pub use configs::BrokerConfig;
pub use producer_id::ProducerIdBlock;

/// Settings of a node's Kafka listener.
#[derive(Debug, Clone)]
pub struct KafkaConfig {
    /// Largest request frame accepted (`socket.request.max.bytes`, default 100 MiB); a larger
    /// length prefix closes the connection before anything is read.
    pub request_bytes_max: usize,
    /// Requests of one connection served at once (the rest wait in the socket).
    pub in_flight_max: usize,
    /// The broker settings clients see (Kafka names) and that govern topic creation and
    /// produce limits.
    pub broker: BrokerConfig,
}

impl Default for KafkaConfig {
    fn default() -> Self {
        KafkaConfig { request_bytes_max: 100 * 1024 * 1024, in_flight_max: 32, broker: BrokerConfig::default() }
    }
}

/// A request that cannot be answered: the connection it came on is closed.
#[derive(Debug, Error)]
pub enum FrameError {
    #[error("frame length {0} is negative or above the limit of {1} bytes")]
    BadLength(i64, usize),
    #[error("frame of {0} bytes is too short for a request header")]
    Short(usize),
    #[error("unknown API key {0}")]
    UnknownApi(i16),
    #[error("{api:?} v{version} is not supported (supported: {min}..={max})")]
    UnsupportedVersion { api: ApiKey, version: i16, min: i16, max: i16 },
    #[error("{api:?} v{version} is not served by Keel")]
    NotServed { api: ApiKey, version: i16 },
    #[error("malformed {what}: {reason}")]
    Malformed { what: String, reason: String },
    #[error("encoding the {api:?} v{version} response failed: {reason}")]
    Encode { api: ApiKey, version: i16, reason: String },
}

/// One decoded request, ready for its handler.
pub(crate) struct Request {
    pub api: ApiKey,
    pub version: i16,
    pub header: RequestHeader,
    /// The body, still encoded.
    pub body: Bytes,
}

impl Request {
    pub(crate) fn decode<T: Decodable>(&mut self) -> Result<T, FrameError> {
        T::decode(&mut self.body, self.version).map_err(|e| FrameError::Malformed {
            what: format!("{:?} v{} request body", self.api, self.version),
            reason: format!("{e:#}"),
        })
    }
}

/// A request's place in its connection's order. Produce waits for its turn before proposing
/// its batches and passes the turn on once they are proposed; every other request passes it on
/// as soon as the requests before it have (dropping a `Turn` does that), so batches of
/// pipelined Produce requests enter each partition's log in the order they were sent.
pub(crate) struct Turn {
    after: Option<tokio::sync::oneshot::Receiver<()>>,
    next: Option<tokio::sync::oneshot::Sender<()>>,
}

impl Turn {
    /// Waits until every earlier request of the connection has passed its turn on.
    pub(crate) async fn wait(&mut self) {
        if let Some(after) = self.after.take() {
            let _ = after.await;
        }
    }
}

impl Drop for Turn {
    fn drop(&mut self) {
        let next = self.next.take();
        match self.after.take() {
            None => {
                if let Some(next) = next {
                    let _ = next.send(());
                }
            }
            Some(after) => {
                crate::rt::spawn(async move {
                    let _ = after.await;
                    if let Some(next) = next {
                        let _ = next.send(());
                    }
                });
            }
        }
    }
}

/// What a handler gives back: the encoded response frame (size prefix included), or nothing
/// (acks=0 produce).
pub(crate) type Answer = Result<Option<Bytes>, FrameError>;

/// Encodes `[size][response header][body]`.
pub(crate) fn respond<T: Encodable>(req: &Request, body: &T) -> Answer {
    respond_with(req.api, req.version, req.api.response_header_version(req.version), req.header.correlation_id, body)
}

fn respond_with<T: Encodable>(api: ApiKey, version: i16, header_version: i16, correlation_id: i32, body: &T) -> Answer {
    let encode_err = |e: anyhow::Error| FrameError::Encode { api, version, reason: format!("{e:#}") };
    let mut buf = BytesMut::with_capacity(128);
    buf.put_i32(0);
    ResponseHeader::default()
        .with_correlation_id(correlation_id)
        .encode(&mut buf, header_version)
        .map_err(encode_err)?;
    body.encode(&mut buf, version).map_err(encode_err)?;
    let n = (buf.len() - 4) as i32;
    buf[0..4].copy_from_slice(&n.to_be_bytes());
    Ok(Some(buf.freeze()))
}

/// Serves Kafka clients on `listener` until the node stops.
pub async fn serve(node: Arc<Node>, listener: tokio::net::TcpListener, config: KafkaConfig) {
    let config = Arc::new(config);
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(error = %e, "kafka listener: accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        if node.is_stopped() {
            return;
        }
        let _ = stream.set_nodelay(true);
        let node = node.clone();
        let config = config.clone();
        crate::rt::spawn(async move {
            if let Err(e) = serve_connection(node, stream, config).await {
                tracing::info!(%peer, error = %e, "kafka connection closed");
            }
        });
    }
}

/// Serves one client connection: reads requests, answers them in order.
async fn serve_connection<S>(node: Arc<Node>, stream: S, config: Arc<KafkaConfig>) -> Result<(), FrameError>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + 'static,
{
    let (reader, mut writer) = tokio::io::split(stream);
    let (tx, mut rx) = tokio::sync::mpsc::channel::<tokio::task::JoinHandle<Answer>>(config.in_flight_max.max(1));
    let mut write_side = crate::rt::spawn(async move {
        while let Some(handle) = rx.recv().await {
            let answer = match handle.await {
                Ok(a) => a,
                Err(e) => Err(FrameError::Malformed { what: "request".into(), reason: format!("handler failed: {e}") }),
            };
            match answer {
                Ok(Some(frame)) => {
                    // Flushed per answer: a socket that buffers writes (madsim's does, until
                    // flush) must not hold an answer back.
                    if writer.write_all(&frame).await.is_err() || writer.flush().await.is_err() {
                        return Ok(());
                    }
                }
                Ok(None) => {}
                Err(e) => return Err(e),
            }
        }
        let _ = writer.shutdown().await;
        Ok(())
    });
    let reading = read_requests(reader, tx, node, config);
    tokio::pin!(reading);
    tokio::select! {
        read_result = &mut reading => {
            // The reader stopped (end of stream or a bad frame): write what is owed, then close.
            let write_result = (&mut write_side).await.unwrap_or(Ok(()));
            read_result.and(write_result)
        }
        // The writer stopped first (a request that cannot be answered, or the peer went away):
        // stop reading and close the connection.
        write_result = &mut write_side => write_result.unwrap_or(Ok(())),
    }
}

/// Reads requests and hands each, as a spawned handler, to the writer in order.
async fn read_requests<R: tokio::io::AsyncRead + Unpin>(
    mut reader: R,
    tx: tokio::sync::mpsc::Sender<tokio::task::JoinHandle<Answer>>,
    node: Arc<Node>,
    config: Arc<KafkaConfig>,
) -> Result<(), FrameError> {
    let mut previous: Option<tokio::sync::oneshot::Receiver<()>> = None;
    loop {
        let Some(frame) = read_frame(&mut reader, config.request_bytes_max).await? else {
            return Ok(());
        };
        let request_bytes = frame.len() + 4;
        let request = decode_header(frame)?;
        let node = node.clone();
        let config = config.clone();
        let (next, after_this) = tokio::sync::oneshot::channel();
        let turn = Turn { after: previous.replace(after_this), next: Some(next) };
        let handle = crate::rt::spawn(async move {
            let (api, started) = (request.api, tokio::time::Instant::now());
            let answer = handle(&node, &config, request, turn).await;
            let response_bytes = answer.as_ref().map_or(0, |a| a.as_ref().map_or(0, |f| f.len()));
            node.metrics().kafka_request(api_name(api), request_bytes, response_bytes, started.elapsed().as_secs_f64());
            answer
        });
        if tx.send(handle).await.is_err() {
            return Ok(());
        }
    }
}

/// The `api` label of a Kafka API in the metrics: its name in Kafka's protocol docs.
fn api_name(api: ApiKey) -> &'static str {
    use ApiKey as K;
    match api {
        K::Produce => "Produce",
        K::Fetch => "Fetch",
        K::ListOffsets => "ListOffsets",
        K::Metadata => "Metadata",
        K::OffsetCommit => "OffsetCommit",
        K::OffsetFetch => "OffsetFetch",
        K::FindCoordinator => "FindCoordinator",
        K::JoinGroup => "JoinGroup",
        K::Heartbeat => "Heartbeat",
        K::LeaveGroup => "LeaveGroup",
        K::SyncGroup => "SyncGroup",
        K::DescribeGroups => "DescribeGroups",
        K::ListGroups => "ListGroups",
        K::ApiVersions => "ApiVersions",
        K::CreateTopics => "CreateTopics",
        K::DeleteTopics => "DeleteTopics",
        K::InitProducerId => "InitProducerId",
        K::DescribeConfigs => "DescribeConfigs",
        K::AlterConfigs => "AlterConfigs",
        K::CreatePartitions => "CreatePartitions",
        K::DeleteGroups => "DeleteGroups",
        K::IncrementalAlterConfigs => "IncrementalAlterConfigs",
        K::OffsetDelete => "OffsetDelete",
        K::DescribeCluster => "DescribeCluster",
        K::AlterPartitionReassignments => "AlterPartitionReassignments",
        K::ListPartitionReassignments => "ListPartitionReassignments",
        K::OffsetForLeaderEpoch => "OffsetForLeaderEpoch",
        K::ElectLeaders => "ElectLeaders",
        K::DescribeLogDirs => "DescribeLogDirs",
        // Not served: answered by closing the connection (see `handle`).
        _ => "other",
    }
}

/// Reads one size-prefixed frame; `None` at a clean end of stream.
async fn read_frame<R: tokio::io::AsyncRead + Unpin>(reader: &mut R, max: usize) -> Result<Option<Bytes>, FrameError> {
    let mut len = [0u8; 4];
    match reader.read_exact(&mut len).await {
        Ok(_) => {}
        Err(_) => return Ok(None),
    }
    let len = i32::from_be_bytes(len);
    if len < 0 || len as usize > max {
        return Err(FrameError::BadLength(len as i64, max));
    }
    let mut frame = BytesMut::zeroed(len as usize);
    reader.read_exact(&mut frame).await.map_err(|e| FrameError::Malformed {
        what: format!("frame of {len} bytes"),
        reason: format!("connection ended inside it: {e}"),
    })?;
    Ok(Some(frame.freeze()))
}

/// Decodes the request header; what remains of the frame is the body.
fn decode_header(mut frame: Bytes) -> Result<Request, FrameError> {
    if frame.len() < 8 {
        return Err(FrameError::Short(frame.len()));
    }
    let raw_api = i16::from_be_bytes([frame[0], frame[1]]);
    let version = i16::from_be_bytes([frame[2], frame[3]]);
    let api = ApiKey::try_from(raw_api).map_err(|_| FrameError::UnknownApi(raw_api))?;
    if api == ApiKey::ApiVersions && !versions::supports(api, version) {
        // Answered with a v0 body whatever the version: do not decode a header of a version we
        // may not know (the correlation id is always at bytes 4..8).
        let correlation_id = i32::from_be_bytes([frame[4], frame[5], frame[6], frame[7]]);
        let header = RequestHeader::default().with_correlation_id(correlation_id).with_request_api_key(raw_api);
        return Ok(Request { api, version, header, body: Bytes::new() });
    }
    if !versions::supports(api, version) {
        // Not decoded further: the header's own version follows from the API's version.
        return Err(match versions::range(api) {
            Some((min, max)) => FrameError::UnsupportedVersion { api, version, min, max },
            None => FrameError::NotServed { api, version },
        });
    }
    let header: RequestHeader = decode_request_header_from_buffer(&mut frame).map_err(|e| FrameError::Malformed {
        what: format!("{api:?} v{version} request header"),
        reason: format!("{e:#}"),
    })?;
    Ok(Request { api, version, header, body: frame })
}

/// Decodes one request frame (without its size prefix) completely, header and body, as the
/// server does before handling it; answers (API, version). For fuzzing and codec tests: no
/// input may panic.
pub fn decode_request(frame: Bytes) -> Result<(ApiKey, i16), FrameError> {
    use kafka_protocol::messages as m;
    let mut req = decode_header(frame)?;
    let (api, version) = (req.api, req.version);
    if !versions::supports(api, version) {
        // Only ApiVersions gets this far with a version Keel does not serve: answered with v0.
        return Ok((api, version));
    }
    match api {
        ApiKey::ApiVersions => drop(req.decode::<m::ApiVersionsRequest>()?),
        ApiKey::Metadata => drop(req.decode::<m::MetadataRequest>()?),
        ApiKey::DescribeCluster => drop(req.decode::<m::DescribeClusterRequest>()?),
        ApiKey::Produce => drop(req.decode::<m::ProduceRequest>()?),
        ApiKey::Fetch => drop(req.decode::<m::FetchRequest>()?),
        ApiKey::ListOffsets => drop(req.decode::<m::ListOffsetsRequest>()?),
        ApiKey::OffsetForLeaderEpoch => drop(req.decode::<m::OffsetForLeaderEpochRequest>()?),
        ApiKey::ElectLeaders => drop(req.decode::<m::ElectLeadersRequest>()?),
        ApiKey::DescribeLogDirs => drop(req.decode::<m::DescribeLogDirsRequest>()?),
        ApiKey::CreateTopics => drop(req.decode::<m::CreateTopicsRequest>()?),
        ApiKey::DeleteTopics => drop(req.decode::<m::DeleteTopicsRequest>()?),
        ApiKey::CreatePartitions => drop(req.decode::<m::CreatePartitionsRequest>()?),
        ApiKey::AlterPartitionReassignments => drop(req.decode::<m::AlterPartitionReassignmentsRequest>()?),
        ApiKey::ListPartitionReassignments => drop(req.decode::<m::ListPartitionReassignmentsRequest>()?),
        ApiKey::DescribeConfigs => drop(req.decode::<m::DescribeConfigsRequest>()?),
        ApiKey::AlterConfigs => drop(req.decode::<m::AlterConfigsRequest>()?),
        ApiKey::IncrementalAlterConfigs => drop(req.decode::<m::IncrementalAlterConfigsRequest>()?),
        ApiKey::InitProducerId => drop(req.decode::<m::InitProducerIdRequest>()?),
        ApiKey::FindCoordinator => drop(req.decode::<m::FindCoordinatorRequest>()?),
        ApiKey::JoinGroup => drop(req.decode::<m::JoinGroupRequest>()?),
        ApiKey::SyncGroup => drop(req.decode::<m::SyncGroupRequest>()?),
        ApiKey::Heartbeat => drop(req.decode::<m::HeartbeatRequest>()?),
        ApiKey::LeaveGroup => drop(req.decode::<m::LeaveGroupRequest>()?),
        ApiKey::OffsetCommit => drop(req.decode::<m::OffsetCommitRequest>()?),
        ApiKey::OffsetFetch => drop(req.decode::<m::OffsetFetchRequest>()?),
        ApiKey::DescribeGroups => drop(req.decode::<m::DescribeGroupsRequest>()?),
        ApiKey::ListGroups => drop(req.decode::<m::ListGroupsRequest>()?),
        ApiKey::DeleteGroups => drop(req.decode::<m::DeleteGroupsRequest>()?),
        ApiKey::OffsetDelete => drop(req.decode::<m::OffsetDeleteRequest>()?),
        other => return Err(FrameError::NotServed { api: other, version }),
    }
    Ok((api, version))
}

/// Every API Keel serves with its version range (the ApiVersions table).
pub fn served_versions() -> Vec<(ApiKey, i16, i16)> {
    versions::all()
}

/// Routes one request to its handler.
async fn handle(node: &Arc<Node>, config: &KafkaConfig, mut req: Request, turn: Turn) -> Answer {
    if req.api == ApiKey::Produce && versions::supports(req.api, req.version) {
        return produce::produce(node, config, &mut req, turn).await;
    }
    drop(turn);
    if req.api == ApiKey::ApiVersions {
        return versions::api_versions(&mut req);
    }
    let Some((min, max)) = versions::range(req.api) else {
        return Err(FrameError::NotServed { api: req.api, version: req.version });
    };
    if req.version < min || req.version > max {
        return Err(FrameError::UnsupportedVersion { api: req.api, version: req.version, min, max });
    }
    match req.api {
        ApiKey::Metadata => metadata::metadata(node, config, &mut req).await,
        ApiKey::DescribeCluster => metadata::describe_cluster(node, &mut req),
        ApiKey::Fetch => fetch::fetch(node, &mut req).await,
        ApiKey::ListOffsets => fetch::list_offsets(node, &mut req),
        ApiKey::OffsetForLeaderEpoch => leader_epoch::offset_for_leader_epoch(node, &mut req),
        ApiKey::ElectLeaders => elect::elect_leaders(node, &mut req).await,
        ApiKey::DescribeLogDirs => log_dirs::describe_log_dirs(node, &mut req),
        ApiKey::CreateTopics => admin::create_topics(node, config, &mut req).await,
        ApiKey::DeleteTopics => admin::delete_topics(node, &mut req).await,
        ApiKey::CreatePartitions => admin::create_partitions(node, &mut req).await,
        ApiKey::AlterPartitionReassignments => reassign::alter_partition_reassignments(node, &mut req).await,
        ApiKey::ListPartitionReassignments => reassign::list_partition_reassignments(node, &mut req).await,
        ApiKey::DescribeConfigs => configs::describe_configs(node, config, &mut req),
        ApiKey::AlterConfigs => configs::alter_configs(node, &mut req).await,
        ApiKey::IncrementalAlterConfigs => configs::incremental_alter_configs(node, &mut req).await,
        ApiKey::InitProducerId => producer_id::init_producer_id(node, &mut req).await,
        ApiKey::FindCoordinator => group::find_coordinator(node, config, &mut req).await,
        ApiKey::JoinGroup => group::join_group(node, config, &mut req).await,
        ApiKey::SyncGroup => group::sync_group(node, config, &mut req).await,
        ApiKey::Heartbeat => group::heartbeat(node, config, &mut req).await,
        ApiKey::LeaveGroup => group::leave_group(node, config, &mut req).await,
        ApiKey::OffsetCommit => group_offsets::offset_commit(node, config, &mut req).await,
        ApiKey::OffsetFetch => group_offsets::offset_fetch(node, config, &mut req).await,
        ApiKey::DescribeGroups => group_offsets::describe_groups(node, config, &mut req).await,
        ApiKey::ListGroups => group_offsets::list_groups(node, config, &mut req).await,
        ApiKey::DeleteGroups => group_offsets::delete_groups(node, config, &mut req).await,
        ApiKey::OffsetDelete => group_offsets::offset_delete(node, config, &mut req).await,
        other => Err(FrameError::NotServed { api: other, version: req.version }),
    }
}
