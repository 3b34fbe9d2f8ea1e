//! A small Kafka client for the CLI and the simulated clients: the same wire protocol and
//! codecs (the `kafka-protocol` crate) a real client uses, over the runtime's `TcpStream`
//! (madsim's under `--cfg madsim`, so it is deterministic there).
//!
//! One request at a time per connection: `[size i32][request header][body]` out,
//! `[size i32][response header][body]` back, matched by correlation id. Request headers are
//! v1 or v2 and response headers v0 or v1, as [`ApiKey::request_header_version`] and
//! [`ApiKey::response_header_version`] say for the API and version (ApiVersions answers always
//! use header v0). Every new connection starts with ApiVersions and is refused unless the
//! broker serves the versions this client speaks ([`METADATA_VERSION`], [`PRODUCE_VERSION`],
//! [`FETCH_VERSION`]). Every call is bounded by a timeout; a connection on which anything went
//! wrong (timeout, broken stream, an answer that does not decode) is closed, so a late answer
//! can never be taken for the next request's. Nothing here panics on what a broker sends.
//!
//! The codecs ([`encode_request`], [`decode_response`], [`split_batches`]) work on bytes, so
//! they are tested without sockets.

use std::collections::BTreeMap;
use std::time::Duration;

use bytes::Buf;
use bytes::BufMut;
use bytes::Bytes;
use bytes::BytesMut;
use kafka_protocol::messages::ApiKey;
use kafka_protocol::messages::ApiVersionsRequest;
use kafka_protocol::messages::BrokerId;
use kafka_protocol::messages::FetchRequest;
use kafka_protocol::messages::ListOffsetsRequest;
use kafka_protocol::messages::MetadataRequest;
use kafka_protocol::messages::MetadataResponse;
use kafka_protocol::messages::ProduceRequest;
use kafka_protocol::messages::RequestHeader;
use kafka_protocol::messages::ResponseHeader;
use kafka_protocol::messages::TopicName;
use kafka_protocol::messages::fetch_request::FetchPartition;
use kafka_protocol::messages::fetch_request::FetchTopic;
use kafka_protocol::messages::fetch_response::PartitionData;
use kafka_protocol::messages::list_offsets_request::ListOffsetsPartition;
use kafka_protocol::messages::list_offsets_request::ListOffsetsTopic;
use kafka_protocol::messages::list_offsets_response::ListOffsetsPartitionResponse;
use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::messages::produce_request::PartitionProduceData;
use kafka_protocol::messages::produce_request::TopicProduceData;
use kafka_protocol::messages::produce_response::PartitionProduceResponse;
use kafka_protocol::protocol::Decodable;
use kafka_protocol::protocol::Encodable;
use kafka_protocol::protocol::Request;
use kafka_protocol::protocol::StrBytes;
use keel_core::batch;
use tokio::io::AsyncReadExt;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

/// Metadata v12: flexible, topics by name (Kafka 2.8+; librdkafka 2.x asks with v12).
pub const METADATA_VERSION: i16 = 12;
/// Produce v9: flexible, topics by name, no KIP-951 leader hints (v10+).
pub const PRODUCE_VERSION: i16 = 9;
/// Fetch v12: flexible, topics by name (v13+ names topics by id), with the leader epoch check.
pub const FETCH_VERSION: i16 = 12;
/// ListOffsets v7: flexible, with the max-timestamp spec (Kafka 3.0+).
pub const LIST_OFFSETS_VERSION: i16 = 7;
/// ListOffsets timestamp for the offset the next record will get (the high watermark).
pub const LATEST_TIMESTAMP: i64 = -1;
/// ListOffsets timestamp for the first offset still stored (the log start).
pub const EARLIEST_TIMESTAMP: i64 = -2;
/// ApiVersions v3: flexible request, always answered with response header v0.
pub const API_VERSIONS_VERSION: i16 = 3;

/// How long opening a connection (and its ApiVersions exchange) may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// Largest response frame accepted; a larger size prefix closes the connection.
pub const RESPONSE_BYTES_MAX: usize = 16 << 20;

/// Why a call has no answer. Whether the request may have taken effect is the caller's call:
/// only [`ClientError::Connect`] and [`ClientError::Encode`] are certain that nothing was sent.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClientError {
    /// No connection could be opened (refused, unreachable, timed out, or the broker does not
    /// serve the versions this client speaks); nothing was sent.
    #[error("cannot connect to {addr}: {reason}")]
    Connect { addr: String, reason: String },
    /// The request could not be encoded; nothing was sent.
    #[error("cannot encode {api:?} v{version}: {reason}")]
    Encode { api: ApiKey, version: i16, reason: String },
    /// The connection broke while the request or its answer was on the way.
    #[error("connection to {addr} broke: {reason}")]
    Io { addr: String, reason: String },
    /// No answer within the call's timeout.
    #[error("no answer from {addr} to {api:?} within {timeout_ms} ms")]
    Timeout { addr: String, api: ApiKey, timeout_ms: u64 },
    /// An answer came but is not a well-formed answer to the request.
    #[error("bad answer to {api:?} v{version}: {reason}")]
    Decode { api: ApiKey, version: i16, reason: String },
}

/// Encodes one request frame: `[size][header][body]`, the header version chosen by the API
/// and version.
pub fn encode_request<R: Encodable>(
    api: ApiKey,
    version: i16,
    correlation_id: i32,
    client_id: &str,
    body: &R,
) -> Result<Bytes, ClientError> {
    let err = |e: anyhow::Error| ClientError::Encode { api, version, reason: format!("{e:#}") };
    let header = RequestHeader::default()
        .with_request_api_key(api as i16)
        .with_request_api_version(version)
        .with_correlation_id(correlation_id)
        .with_client_id(Some(StrBytes::from_string(client_id.to_string())));
    let mut buf = BytesMut::with_capacity(256);
    buf.put_i32(0);
    header.encode(&mut buf, api.request_header_version(version)).map_err(err)?;
    body.encode(&mut buf, version).map_err(err)?;
    let size = i32::try_from(buf.len() - 4).map_err(|_| ClientError::Encode {
        api,
        version,
        reason: format!("frame of {} bytes", buf.len()),
    })?;
    buf[0..4].copy_from_slice(&size.to_be_bytes());
    Ok(buf.freeze())
}

/// Decodes one response frame (without its size prefix): the header of the version the API
/// and version call for, a correlation id that must be `correlation_id`, then the body, which
/// must use up the frame.
pub fn decode_response<R: Decodable>(
    api: ApiKey,
    version: i16,
    correlation_id: i32,
    mut frame: Bytes,
) -> Result<R, ClientError> {
    let bad = |reason: String| ClientError::Decode { api, version, reason };
    let header = ResponseHeader::decode(&mut frame, api.response_header_version(version))
        .map_err(|e| bad(format!("response header: {e:#}")))?;
    if header.correlation_id != correlation_id {
        return Err(bad(format!(
            "correlation id {} answers a request other than {correlation_id}",
            header.correlation_id
        )));
    }
    let body = R::decode(&mut frame, version).map_err(|e| bad(format!("body: {e:#}")))?;
    if frame.has_remaining() {
        return Err(bad(format!("{} bytes left after the body", frame.remaining())));
    }
    Ok(body)
}

/// Splits a Fetch answer's `records` into its record batches by each batch's length field.
/// A partial batch at the end (a broker may cut the last one at the size limit) is dropped, as
/// Kafka clients do; a length that cannot be a batch's is an error.
pub fn split_batches(records: &Bytes) -> Result<Vec<Bytes>, String> {
    let mut out = Vec::new();
    let mut at = 0usize;
    while records.len() - at >= batch::LENGTH_PREFIX_BYTES {
        let length = i32::from_be_bytes([records[at + 8], records[at + 9], records[at + 10], records[at + 11]]);
        let total = usize::try_from(length)
            .ok()
            .map(|l| l + batch::LENGTH_PREFIX_BYTES)
            .filter(|t| *t >= batch::HEADER_BYTES)
            .ok_or_else(|| format!("record batch at byte {at} has length {length}"))?;
        if records.len() - at < total {
            break;
        }
        out.push(records.slice(at..at + total));
        at += total;
    }
    Ok(out)
}

/// Who leads a partition, from a Metadata answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Leader {
    /// The leader's broker (node) id.
    pub id: i32,
    /// Its leader epoch (the partition's Raft term), which Fetch sends back for fencing.
    pub epoch: i32,
    /// Its Kafka address, `host:port`, as the brokers list advertises it.
    pub addr: String,
}

/// A client: its connections (one per broker address) and correlation ids.
pub struct KafkaClient {
    client_id: String,
    /// Where Metadata requests go, in turn.
    bootstrap: Vec<String>,
    /// The next bootstrap address a metadata refresh asks first: every refresh starts one
    /// further, so a broker with stale metadata is not asked again and again.
    next_bootstrap: usize,
    connections: BTreeMap<String, TcpStream>,
    correlation_id: i32,
}

impl KafkaClient {
    /// A client named `client_id` that asks `bootstrap` (Kafka addresses) for metadata,
    /// starting at `bootstrap[first % len]`.
    pub fn new(client_id: impl Into<String>, bootstrap: Vec<String>, first: usize) -> KafkaClient {
        let next_bootstrap = if bootstrap.is_empty() { 0 } else { first % bootstrap.len() };
        KafkaClient {
            client_id: client_id.into(),
            bootstrap,
            next_bootstrap,
            connections: BTreeMap::new(),
            correlation_id: 0,
        }
    }

    /// Opens a connection to `addr` (and checks its versions) unless one is open.
    pub async fn connect(&mut self, addr: &str) -> Result<(), ClientError> {
        if self.connections.contains_key(addr) {
            return Ok(());
        }
        let connect_err = |reason: String| ClientError::Connect { addr: addr.to_string(), reason };
        let stream = match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(addr)).await {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => return Err(connect_err(e.to_string())),
            Err(_) => return Err(connect_err(format!("no connection within {} ms", CONNECT_TIMEOUT.as_millis()))),
        };
        let _ = stream.set_nodelay(true);
        self.connections.insert(addr.to_string(), stream);
        let versions = self
            .call(addr, ApiKey::ApiVersions, API_VERSIONS_VERSION, &api_versions_request(), CONNECT_TIMEOUT)
            .await
            .and_then(|r: kafka_protocol::messages::ApiVersionsResponse| check_versions(&r));
        if let Err(e) = versions {
            self.connections.remove(addr);
            return Err(connect_err(e.to_string()));
        }
        Ok(())
    }

    /// Takes the open connection to `addr` (opened and checked by [`KafkaClient::connect`]) out of
    /// the client, for a caller that keeps several requests in flight on it itself (`keel bench`):
    /// answers come back in request order on one connection. `None` if none is open.
    pub fn take_connection(&mut self, addr: &str) -> Option<TcpStream> {
        self.connections.remove(addr)
    }

    /// The client id its requests carry.
    pub fn client_id(&self) -> &str {
        &self.client_id
    }

    /// Sends `body` to `addr` (connected before) and waits at most `timeout` for the answer.
    /// Any failure closes the connection.
    pub async fn call<Q, A>(
        &mut self,
        addr: &str,
        api: ApiKey,
        version: i16,
        body: &Q,
        timeout: Duration,
    ) -> Result<A, ClientError>
    where
        Q: Encodable,
        A: Decodable,
    {
        self.correlation_id = self.correlation_id.wrapping_add(1);
        let correlation_id = self.correlation_id;
        let frame = encode_request(api, version, correlation_id, &self.client_id, body)?;
        let Some(stream) = self.connections.get_mut(addr) else {
            return Err(ClientError::Connect { addr: addr.to_string(), reason: "not connected".into() });
        };
        let exchange = async {
            let io = |e: std::io::Error| ClientError::Io { addr: addr.to_string(), reason: e.to_string() };
            stream.write_all(&frame).await.map_err(io)?;
            stream.flush().await.map_err(io)?;
            let size = stream.read_i32().await.map_err(io)?;
            let size =
                usize::try_from(size).ok().filter(|s| *s <= RESPONSE_BYTES_MAX).ok_or_else(|| ClientError::Decode {
                    api,
                    version,
                    reason: format!("response size {size} (limit {RESPONSE_BYTES_MAX})"),
                })?;
            let mut answer = BytesMut::zeroed(size);
            stream.read_exact(&mut answer).await.map_err(io)?;
            decode_response::<A>(api, version, correlation_id, answer.freeze())
        };
        let result = match tokio::time::timeout(timeout, exchange).await {
            Ok(r) => r,
            Err(_) => Err(ClientError::Timeout { addr: addr.to_string(), api, timeout_ms: timeout.as_millis() as u64 }),
        };
        if result.is_err() {
            self.connections.remove(addr);
        }
        result
    }

    /// Typed [`KafkaClient::call`] for a request type the crate knows the API key of.
    pub async fn request<Q: Request>(
        &mut self,
        addr: &str,
        version: i16,
        body: &Q,
        timeout: Duration,
    ) -> Result<Q::Response, ClientError> {
        let api = ApiKey::try_from(Q::KEY).map_err(|_| ClientError::Encode {
            api: ApiKey::ApiVersions,
            version,
            reason: format!("API key {}", Q::KEY),
        })?;
        self.call(addr, api, version, body, timeout).await
    }

    /// Sends `body` to the bootstrap brokers in turn (each refresh starting one further) until
    /// one answers; answers its address and its answer, or the last failure if none did. For
    /// requests any broker answers (Metadata, admin requests, FindCoordinator).
    pub async fn request_any<Q: Request>(
        &mut self,
        version: i16,
        body: &Q,
        timeout: Duration,
    ) -> Result<(String, Q::Response), ClientError> {
        let mut last = ClientError::Connect { addr: String::new(), reason: "no bootstrap brokers".into() };
        let n = self.bootstrap.len();
        let first = self.next_bootstrap;
        self.next_bootstrap = if n == 0 { 0 } else { (first + 1) % n };
        for i in 0..n {
            let addr = self.bootstrap[(first + i) % n].clone();
            if let Err(e) = self.connect(&addr).await {
                last = e;
                continue;
            }
            match self.request(&addr, version, body, timeout).await {
                Ok(answer) => return Ok((addr, answer)),
                Err(e) => last = e,
            }
        }
        Err(last)
    }

    /// Connects to `addr` if needed and sends it `body`: [`KafkaClient::request`] for a broker
    /// learnt from metadata.
    pub async fn request_to<Q: Request>(
        &mut self,
        addr: &str,
        version: i16,
        body: &Q,
        timeout: Duration,
    ) -> Result<Q::Response, ClientError> {
        self.connect(addr).await?;
        self.request(addr, version, body, timeout).await
    }

    /// The cluster's metadata from the first bootstrap broker that answers: every topic when
    /// `topics` is `None`, else those named (never auto-created).
    pub async fn metadata(
        &mut self,
        topics: Option<&[String]>,
        timeout: Duration,
    ) -> Result<MetadataResponse, ClientError> {
        let request = MetadataRequest::default()
            .with_topics(topics.map(|names| {
                names.iter().map(|n| MetadataRequestTopic::default().with_name(Some(topic_name(n)))).collect()
            }))
            .with_allow_auto_topic_creation(false);
        Ok(self.request_any(METADATA_VERSION, &request, timeout).await?.1)
    }

    /// Sends `body` to `addr` (connected before) without waiting for an answer: Produce with
    /// acks=0, which the broker never answers.
    pub async fn send_only<Q: Request>(
        &mut self,
        addr: &str,
        version: i16,
        body: &Q,
        timeout: Duration,
    ) -> Result<(), ClientError> {
        let api = ApiKey::try_from(Q::KEY).map_err(|_| ClientError::Encode {
            api: ApiKey::ApiVersions,
            version,
            reason: format!("API key {}", Q::KEY),
        })?;
        self.correlation_id = self.correlation_id.wrapping_add(1);
        let frame = encode_request(api, version, self.correlation_id, &self.client_id, body)?;
        let Some(stream) = self.connections.get_mut(addr) else {
            return Err(ClientError::Connect { addr: addr.to_string(), reason: "not connected".into() });
        };
        let io = |e: std::io::Error| ClientError::Io { addr: addr.to_string(), reason: e.to_string() };
        let write = async {
            stream.write_all(&frame).await.map_err(io)?;
            stream.flush().await.map_err(io)
        };
        let result = match tokio::time::timeout(timeout, write).await {
            Ok(r) => r,
            Err(_) => Err(ClientError::Timeout { addr: addr.to_string(), api, timeout_ms: timeout.as_millis() as u64 }),
        };
        if result.is_err() {
            self.connections.remove(addr);
        }
        result
    }

    /// Asks the bootstrap brokers in turn, each for at most `timeout`, who leads `partition`
    /// of `topic`. `Ok(None)`: a broker answered but knows no leader (or not the partition).
    /// `Err`: no broker answered.
    pub async fn leader(
        &mut self,
        topic: &str,
        partition: i32,
        timeout: Duration,
    ) -> Result<Option<Leader>, ClientError> {
        let request = MetadataRequest::default()
            .with_topics(Some(vec![MetadataRequestTopic::default().with_name(Some(topic_name(topic)))]))
            .with_allow_auto_topic_creation(false);
        let mut last = ClientError::Connect { addr: String::new(), reason: "no bootstrap brokers".into() };
        let n = self.bootstrap.len();
        let first = self.next_bootstrap;
        self.next_bootstrap = if n == 0 { 0 } else { (first + 1) % n };
        for i in 0..n {
            let addr = self.bootstrap[(first + i) % n].clone();
            if let Err(e) = self.connect(&addr).await {
                last = e;
                continue;
            }
            let answer = match self.request(&addr, METADATA_VERSION, &request, timeout).await {
                Ok(a) => a,
                Err(e) => {
                    last = e;
                    continue;
                }
            };
            let answer: kafka_protocol::messages::MetadataResponse = answer;
            let found = answer
                .topics
                .iter()
                .filter(|t| t.error_code == 0 && t.name.as_ref().is_some_and(|n| n.0.as_str() == topic))
                .flat_map(|t| &t.partitions)
                .find(|p| p.partition_index == partition && p.error_code == 0 && p.leader_id.0 >= 0);
            let leader = found.and_then(|p| {
                let broker = answer.brokers.iter().find(|b| b.node_id == p.leader_id)?;
                Some(Leader {
                    id: p.leader_id.0,
                    epoch: p.leader_epoch,
                    addr: format!("{}:{}", broker.host.as_str(), broker.port),
                })
            });
            return Ok(leader);
        }
        Err(last)
    }

    /// Produces one record batch to `partition` of `topic` on `addr` with acks=-1, the broker
    /// waiting at most `timeout_ms` for the commit; answers that partition's part of the
    /// response (`Decode` if the answer lacks it).
    pub async fn produce(
        &mut self,
        addr: &str,
        topic: &str,
        partition: i32,
        records: Bytes,
        timeout_ms: i32,
        timeout: Duration,
    ) -> Result<PartitionProduceResponse, ClientError> {
        self.produce_acks(addr, topic, partition, records, -1, timeout_ms, timeout).await
    }

    /// [`KafkaClient::produce`] with `acks` -1 (all replicas) or 1 (the leader). For acks=0 see
    /// [`produce_request`] and [`KafkaClient::send_only`].
    #[allow(clippy::too_many_arguments)]
    pub async fn produce_acks(
        &mut self,
        addr: &str,
        topic: &str,
        partition: i32,
        records: Bytes,
        acks: i16,
        timeout_ms: i32,
        timeout: Duration,
    ) -> Result<PartitionProduceResponse, ClientError> {
        let request = produce_request(topic, partition, records, acks, timeout_ms);
        let answer = self.request(addr, PRODUCE_VERSION, &request, timeout).await?;
        answer
            .responses
            .into_iter()
            .filter(|t| t.name.0.as_str() == topic)
            .flat_map(|t| t.partition_responses)
            .find(|p| p.index == partition)
            .ok_or_else(|| ClientError::Decode {
                api: ApiKey::Produce,
                version: PRODUCE_VERSION,
                reason: format!("no answer for {topic}-{partition}"),
            })
    }

    /// ListOffsets of `partition` of `topic` on `addr` (its leader) at `timestamp`
    /// ([`LATEST_TIMESTAMP`], [`EARLIEST_TIMESTAMP`] or a time in ms): that partition's answer.
    pub async fn list_offset(
        &mut self,
        addr: &str,
        topic: &str,
        partition: i32,
        timestamp: i64,
        timeout: Duration,
    ) -> Result<ListOffsetsPartitionResponse, ClientError> {
        let request = ListOffsetsRequest::default().with_replica_id(BrokerId(-1)).with_topics(vec![
            ListOffsetsTopic::default().with_name(topic_name(topic)).with_partitions(vec![
                ListOffsetsPartition::default().with_partition_index(partition).with_timestamp(timestamp),
            ]),
        ]);
        let answer = self.request_to(addr, LIST_OFFSETS_VERSION, &request, timeout).await?;
        answer
            .topics
            .into_iter()
            .filter(|t| t.name.0.as_str() == topic)
            .flat_map(|t| t.partitions)
            .find(|p| p.partition_index == partition)
            .ok_or_else(|| ClientError::Decode {
                api: ApiKey::ListOffsets,
                version: LIST_OFFSETS_VERSION,
                reason: format!("no answer for {topic}-{partition}"),
            })
    }

    /// Fetches `partition` of `topic` from `offset` on `addr`: at most `bytes_max`, waiting up
    /// to `wait_ms` on the broker for a first byte, `leader_epoch` sent for fencing (-1: none).
    /// Answers that partition's part of the response; a top-level error is `Ok` with the error
    /// code in the partition data.
    #[allow(clippy::too_many_arguments)]
    pub async fn fetch(
        &mut self,
        addr: &str,
        topic: &str,
        partition: i32,
        offset: i64,
        leader_epoch: i32,
        bytes_max: i32,
        wait_ms: i32,
        timeout: Duration,
    ) -> Result<PartitionData, ClientError> {
        let request = FetchRequest::default()
            .with_max_wait_ms(wait_ms)
            .with_min_bytes(1)
            .with_max_bytes(bytes_max)
            .with_isolation_level(0)
            .with_topics(vec![FetchTopic::default().with_topic(topic_name(topic)).with_partitions(vec![
                FetchPartition::default()
                    .with_partition(partition)
                    .with_current_leader_epoch(leader_epoch)
                    .with_fetch_offset(offset)
                    .with_partition_max_bytes(bytes_max),
            ])]);
        let answer = self.request(addr, FETCH_VERSION, &request, timeout).await?;
        if answer.error_code != 0 {
            return Ok(PartitionData::default().with_partition_index(partition).with_error_code(answer.error_code));
        }
        answer
            .responses
            .into_iter()
            .filter(|t| t.topic.0.as_str() == topic)
            .flat_map(|t| t.partitions)
            .find(|p| p.partition_index == partition)
            .ok_or_else(|| ClientError::Decode {
                api: ApiKey::Fetch,
                version: FETCH_VERSION,
                reason: format!("no answer for {topic}-{partition}"),
            })
    }
}

/// A Produce request of one batch to one partition (acks -1, 1 or 0).
pub fn produce_request(topic: &str, partition: i32, records: Bytes, acks: i16, timeout_ms: i32) -> ProduceRequest {
    ProduceRequest::default().with_acks(acks).with_timeout_ms(timeout_ms).with_topic_data(vec![
        TopicProduceData::default().with_name(topic_name(topic)).with_partition_data(vec![
            PartitionProduceData::default().with_index(partition).with_records(Some(records)),
        ]),
    ])
}

/// A topic name as the codecs carry it.
pub fn topic_name(name: &str) -> TopicName {
    TopicName(StrBytes::from_string(name.to_string()))
}

fn api_versions_request() -> ApiVersionsRequest {
    ApiVersionsRequest::default()
        .with_client_software_name(StrBytes::from_static_str("keel-sim"))
        .with_client_software_version(StrBytes::from_static_str(env!("CARGO_PKG_VERSION")))
}

/// The broker must serve every API at the version this client speaks.
fn check_versions(answer: &kafka_protocol::messages::ApiVersionsResponse) -> Result<(), ClientError> {
    let bad = |reason: String| ClientError::Decode { api: ApiKey::ApiVersions, version: API_VERSIONS_VERSION, reason };
    if answer.error_code != 0 {
        return Err(bad(format!("error code {}", answer.error_code)));
    }
    for (api, version) in
        [(ApiKey::Metadata, METADATA_VERSION), (ApiKey::Produce, PRODUCE_VERSION), (ApiKey::Fetch, FETCH_VERSION)]
    {
        let served = answer.api_keys.iter().find(|k| k.api_key == api as i16);
        if !served.is_some_and(|k| (k.min_version..=k.max_version).contains(&version)) {
            return Err(bad(format!(
                "the broker does not serve {api:?} v{version} (it serves {:?})",
                served.map(|k| (k.min_version, k.max_version))
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use kafka_protocol::messages::ApiVersionsResponse;
    use kafka_protocol::messages::FetchResponse;
    use kafka_protocol::messages::api_versions_response::ApiVersion;
    use kafka_protocol::messages::fetch_response::FetchableTopicResponse;
    use kafka_protocol::protocol::decode_request_header_from_buffer;

    use super::*;

    fn one_batch(base_offset: i64, value: &str) -> Vec<u8> {
        let mut b = batch::BatchBuilder::new(0);
        b.push(0, Some(b"k"), Some(value.as_bytes()));
        let mut bytes = b.build();
        batch::stamp(&mut bytes, base_offset, 1);
        bytes
    }

    /// A response frame as a broker writes it (without the size prefix).
    fn response_frame<R: Encodable>(api: ApiKey, version: i16, correlation_id: i32, body: &R) -> Bytes {
        let mut buf = BytesMut::new();
        ResponseHeader::default()
            .with_correlation_id(correlation_id)
            .encode(&mut buf, api.response_header_version(version))
            .unwrap();
        body.encode(&mut buf, version).unwrap();
        buf.freeze()
    }

    #[test]
    fn requests_decode_as_a_broker_decodes_them() {
        let request = ProduceRequest::default().with_acks(-1).with_timeout_ms(2500);
        let mut frame = encode_request(ApiKey::Produce, PRODUCE_VERSION, 7, "producer-10", &request).unwrap();
        let size = frame.get_i32();
        assert_eq!(size as usize, frame.len());
        let header = decode_request_header_from_buffer(&mut frame).unwrap();
        assert_eq!(header.request_api_key, ApiKey::Produce as i16);
        assert_eq!(header.request_api_version, PRODUCE_VERSION);
        assert_eq!(header.correlation_id, 7);
        assert_eq!(header.client_id.as_ref().map(|c| c.as_str()), Some("producer-10"));
        let decoded = ProduceRequest::decode(&mut frame, PRODUCE_VERSION).unwrap();
        assert_eq!(decoded, request);
        assert!(!frame.has_remaining());
    }

    #[test]
    fn responses_need_their_correlation_id_and_no_trailing_bytes() {
        let body = FetchResponse::default().with_responses(vec![FetchableTopicResponse::default()]);
        let frame = response_frame(ApiKey::Fetch, FETCH_VERSION, 3, &body);
        let decoded: FetchResponse = decode_response(ApiKey::Fetch, FETCH_VERSION, 3, frame.clone()).unwrap();
        assert_eq!(decoded, body);
        let wrong = decode_response::<FetchResponse>(ApiKey::Fetch, FETCH_VERSION, 4, frame.clone());
        assert!(matches!(wrong, Err(ClientError::Decode { .. })), "{wrong:?}");
        let mut longer = BytesMut::from(&frame[..]);
        longer.put_u8(0);
        let trailing = decode_response::<FetchResponse>(ApiKey::Fetch, FETCH_VERSION, 3, longer.freeze());
        assert!(matches!(trailing, Err(ClientError::Decode { .. })), "{trailing:?}");
    }

    #[test]
    fn api_versions_answers_use_header_v0_whatever_the_request_version() {
        assert_eq!(ApiKey::ApiVersions.response_header_version(API_VERSIONS_VERSION), 0);
        assert_eq!(ApiKey::ApiVersions.request_header_version(API_VERSIONS_VERSION), 2);
        let body = ApiVersionsResponse::default().with_api_keys(vec![
            ApiVersion::default().with_api_key(ApiKey::Metadata as i16).with_min_version(0).with_max_version(13),
            ApiVersion::default().with_api_key(ApiKey::Produce as i16).with_min_version(3).with_max_version(12),
            ApiVersion::default().with_api_key(ApiKey::Fetch as i16).with_min_version(4).with_max_version(17),
        ]);
        let frame = response_frame(ApiKey::ApiVersions, API_VERSIONS_VERSION, 1, &body);
        let decoded: ApiVersionsResponse =
            decode_response(ApiKey::ApiVersions, API_VERSIONS_VERSION, 1, frame).unwrap();
        assert_eq!(check_versions(&decoded), Ok(()));
        let old = body.clone().with_api_keys(body.api_keys[..2].to_vec());
        assert!(check_versions(&old).is_err(), "no Fetch served");
    }

    #[test]
    fn short_or_garbage_frames_are_errors_not_panics() {
        for frame in [Bytes::new(), Bytes::from_static(&[0, 0]), Bytes::from_static(&[0, 0, 0, 1, 0xff, 0xff, 0xff])] {
            assert!(decode_response::<FetchResponse>(ApiKey::Fetch, FETCH_VERSION, 1, frame).is_err());
        }
    }

    #[test]
    fn fetched_records_split_into_batches_and_a_cut_last_batch_is_dropped() {
        let (a, b) = (one_batch(0, "a"), one_batch(1, "bb"));
        let mut joined = a.clone();
        joined.extend_from_slice(&b);
        let batches = split_batches(&Bytes::from(joined.clone())).unwrap();
        assert_eq!(batches, vec![Bytes::from(a.clone()), Bytes::from(b.clone())]);
        let cut = Bytes::from(joined[..joined.len() - 3].to_vec());
        assert_eq!(split_batches(&cut).unwrap(), vec![Bytes::from(a.clone())]);
        let few = Bytes::from(joined[..a.len() + 5].to_vec());
        assert_eq!(split_batches(&few).unwrap(), vec![Bytes::from(a.clone())]);
        assert!(split_batches(&Bytes::new()).unwrap().is_empty());
        let mut bad = a.clone();
        bad[8..12].copy_from_slice(&(-1i32).to_be_bytes());
        assert!(split_batches(&Bytes::from(bad)).is_err());
    }
}
