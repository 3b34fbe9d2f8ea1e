//! openraft's network over Keel's node-to-node transport.
//!
//! Every partition's RPCs to a peer travel on the one multiplexed connection to that peer; the
//! frame's `group` field names the partition and `kind` the RPC. Bodies are bincode-encoded
//! openraft messages. The server side ([`serve`]) decodes, hands the request to the partition's
//! `Raft`, and encodes the answer. Decoding never panics: a bad body is an error answer.
//!
//! Heartbeats (AppendEntries without entries) go through the transport's heartbeat batcher when
//! one is enabled (see [`super::heartbeat`]): one frame per peer carries many groups' heartbeats.
//!
//! No AppendEntries over the transport's frame limit is sent: the log reader already bounds what
//! openraft reads for one message, and a message that still would not fit is cut to the prefix
//! that does, answered `PartialSuccess` (openraft sends the rest next). See
//! [`super::replicate_bytes`].

use std::io::Cursor;
use std::time::Duration;

use bincode::Options;
use bytes::Bytes;
use openraft::BasicNode;
use openraft::OptionalSend;
use openraft::RaftNetworkFactory;
use openraft::RaftNetworkV2;
use openraft::alias::SnapshotMetaOf;
use openraft::alias::SnapshotOf;
use openraft::errors::NetworkError;
use openraft::errors::RPCError;
use openraft::errors::ReplicationClosed;
use openraft::errors::StreamingError;
use openraft::errors::Unreachable;
use openraft::network::RPCOption;
use openraft::raft::AppendEntriesRequest;
use openraft::raft::AppendEntriesResponse;
use openraft::raft::SnapshotResponse;
use openraft::raft::TransferLeaderRequest;
use openraft::raft::TransferLeaderResponse;
use openraft::raft::VoteRequest;
use openraft::raft::VoteResponse;
use openraft::storage::RaftStateMachine;
use serde::Deserialize;
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::NodeId;
use super::TypeConfig;
use super::Vote;
use super::heartbeat;
use super::replicate_bytes;
use crate::transport::Transport;
use crate::transport::TransportError;

pub const KIND_APPEND: u8 = 1;
pub const KIND_VOTE: u8 = 2;
pub const KIND_PRE_VOTE: u8 = 3;
pub const KIND_SNAPSHOT: u8 = 4;
// 5 is `heartbeat::KIND_HEARTBEAT_BATCH` (on `NODE_GROUP`).
pub const KIND_TRANSFER_LEADER: u8 = 6;

/// Largest Raft message body accepted when decoding.
const RPC_BYTES_MAX: u64 = 64 * 1024 * 1024;

fn opts() -> impl Options {
    bincode::DefaultOptions::new().with_limit(RPC_BYTES_MAX).with_fixint_encoding()
}

pub fn encode<T: Serialize>(v: &T) -> Result<Bytes, String> {
    opts().serialize(v).map(Bytes::from).map_err(|e| format!("encode: {e}"))
}

pub fn decode<T: DeserializeOwned>(b: &[u8]) -> Result<T, String> {
    opts().deserialize(b).map_err(|e| format!("decode: {e}"))
}

#[derive(Serialize, Deserialize)]
struct SnapshotReq {
    vote: Vote,
    meta: SnapshotMetaOf<TypeConfig>,
    data: Vec<u8>,
}

/// Creates one network client per (group, peer replica).
#[derive(Clone)]
pub struct NetFactory {
    pub transport: Transport,
    pub group: u64,
}

impl RaftNetworkFactory<TypeConfig> for NetFactory {
    type Network = NetClient;

    async fn new_client(&mut self, target: NodeId, _node: &BasicNode) -> NetClient {
        NetClient { transport: self.transport.clone(), group: self.group, target, last_commit: None }
    }
}

/// A client for one peer replica. `target` is the replica's Raft id: the transport carries the
/// call to its node (`node_of(target)`), and the body names `target`, so a replica of a newer
/// incarnation on that node refuses what was meant for the one it replaced.
pub struct NetClient {
    transport: Transport,
    group: u64,
    target: u64,
    /// The commit index the last AppendEntries to this peer carried.
    last_commit: Option<super::LogId>,
}

fn rpc_error(e: TransportError) -> RPCError<TypeConfig> {
    match e {
        // Counted by the transport (`frames_too_large`); openraft backs off on `Unreachable`.
        TransportError::TooLarge(bytes) => {
            tracing::error!(bytes, "a Raft message over the transport's frame limit was refused before sending");
            RPCError::Unreachable(Unreachable::new(&e))
        }
        TransportError::Remote(s) => RPCError::Network(NetworkError::from_string(s)),
        other => RPCError::Unreachable(Unreachable::new(&other)),
    }
}

impl NetClient {
    async fn call<Req: Serialize, Resp: DeserializeOwned>(
        &self,
        kind: u8,
        req: &Req,
        timeout: Duration,
    ) -> Result<Resp, RPCError<TypeConfig>> {
        let body = encode(&(self.target, req)).map_err(|s| RPCError::Network(NetworkError::from_string(s)))?;
        let node = keel_core::metadata::node_of(self.target);
        let resp = self.transport.call(node, self.group, kind, body, timeout).await.map_err(rpc_error)?;
        decode(&resp).map_err(|s| RPCError::Network(NetworkError::from_string(s)))
    }
}

impl RaftNetworkV2<TypeConfig> for NetClient {
    type SnapshotData = Cursor<Vec<u8>>;

    async fn append_entries(
        &mut self,
        mut rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<TypeConfig>, RPCError<TypeConfig>> {
        let sent = cut_to_frame(&mut rpc.entries, self.transport.frame_bytes_max());
        if let Some(last) = sent {
            tracing::warn!(
                group = self.group,
                target = self.target,
                entries = rpc.entries.len(),
                "AppendEntries cut to fit one frame"
            );
            return match self.call(KIND_APPEND, &rpc, option.hard_ttl()).await? {
                AppendEntriesResponse::Success => Ok(AppendEntriesResponse::PartialSuccess(Some(last))),
                other => Ok(other),
            };
        }
        // Only pure heartbeats wait for a batch: an empty AppendEntries that moves the commit
        // index forward goes at once, since the peer's progress — and the next entries the
        // leader sends on this stream — wait for its answer. The metadata group's heartbeats go
        // alone: the batch serves partition groups.
        let moves_commit = rpc.leader_commit != self.last_commit;
        self.last_commit = rpc.leader_commit;
        if rpc.entries.is_empty()
            && !moves_commit
            && self.group != keel_core::metadata::METADATA_GROUP
            && let Some(batcher) = heartbeat::batcher(&self.transport)
        {
            return batcher
                .send(&self.transport, self.target, self.group, rpc, option.hard_ttl())
                .await
                .map_err(rpc_error);
        }
        self.call(KIND_APPEND, &rpc, option.hard_ttl()).await
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<VoteResponse<TypeConfig>, RPCError<TypeConfig>> {
        self.call(KIND_VOTE, &rpc, option.hard_ttl()).await
    }

    async fn pre_vote(
        &mut self,
        rpc: VoteRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<VoteResponse<TypeConfig>, RPCError<TypeConfig>> {
        self.call(KIND_PRE_VOTE, &rpc, option.hard_ttl()).await
    }

    async fn full_snapshot(
        &mut self,
        vote: Vote,
        snapshot: SnapshotOf<TypeConfig, Cursor<Vec<u8>>>,
        _cancel: impl Future<Output = ReplicationClosed> + OptionalSend + 'static,
        option: RPCOption,
    ) -> Result<SnapshotResponse<TypeConfig>, StreamingError<TypeConfig>> {
        let req = SnapshotReq { vote, meta: snapshot.meta, data: snapshot.snapshot.into_inner() };
        match self.call(KIND_SNAPSHOT, &req, option.hard_ttl()).await {
            Ok(r) => Ok(r),
            Err(RPCError::Unreachable(u)) => Err(StreamingError::Unreachable(u)),
            Err(e) => Err(StreamingError::Network(NetworkError::new(&e))),
        }
    }

    async fn transfer_leader(
        &mut self,
        req: TransferLeaderRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<TransferLeaderResponse<TypeConfig>, RPCError<TypeConfig>> {
        self.call(KIND_TRANSFER_LEADER, &req, option.hard_ttl()).await
    }
}

/// Cuts `entries` to the longest prefix that fits one frame of `frame_bytes_max` bytes (at least
/// one entry); returns the last log id kept when something was cut. The
/// `canary-replication-unbounded` build never cuts.
pub fn cut_to_frame(entries: &mut Vec<super::Entry>, frame_bytes_max: usize) -> Option<super::LogId> {
    if cfg!(feature = "canary-replication-unbounded") {
        return None;
    }
    let room = replicate_bytes::entries_bytes_max(frame_bytes_max);
    let keep = replicate_bytes::fitting_prefix(entries.iter().map(replicate_bytes::entry_wire_bytes), room);
    if keep >= entries.len() {
        return None;
    }
    entries.truncate(keep);
    entries.last().map(|e| e.log_id)
}

/// Rewrites a vote request so the receiver believes the candidate's log is the most up to date
/// possible. Only the `canary-vote-without-log-check` build calls this.
#[cfg(feature = "canary-vote-without-log-check")]
fn canary_blind_vote(mut req: VoteRequest<TypeConfig>) -> VoteRequest<TypeConfig> {
    req.last_log_id = Some(super::log_id(req.vote.leader_id.term, u64::MAX >> 1));
    req
}

#[cfg(not(feature = "canary-vote-without-log-check"))]
fn canary_blind_vote(req: VoteRequest<TypeConfig>) -> VoteRequest<TypeConfig> {
    req
}

/// The member a TransferLeader request (a `KIND_TRANSFER_LEADER` body) asks to become leader.
pub fn transfer_leader_target(body: &[u8]) -> Result<u64, String> {
    let (_, req): (u64, TransferLeaderRequest<TypeConfig>) = decode(body)?;
    Ok(*req.to_node_id())
}

/// Serves one Raft RPC for the group `raft`, whose member id here is `local_id` (a partition
/// replica's Raft id, or the node id for the metadata group). A request addressed to another
/// member id — an earlier incarnation of this node's replica — is refused. `Err` is sent back as
/// a remote error.
pub async fn serve<SM: RaftStateMachine<TypeConfig, SnapshotData = Cursor<Vec<u8>>>>(
    raft: &openraft::Raft<TypeConfig, SM>,
    local_id: u64,
    kind: u8,
    body: &[u8],
) -> Result<Bytes, String> {
    fn addressed<T: DeserializeOwned>(body: &[u8], local_id: u64) -> Result<T, String> {
        let (to, req): (u64, T) = decode(body)?;
        if to != local_id {
            return Err(format!("request for member {to}, but this replica is member {local_id}"));
        }
        Ok(req)
    }
    match kind {
        KIND_APPEND => {
            let req: AppendEntriesRequest<TypeConfig> = addressed(body, local_id)?;
            let resp = raft.append_entries(req).await.map_err(|e| e.to_string())?;
            encode(&resp)
        }
        KIND_VOTE => {
            let req: VoteRequest<TypeConfig> = addressed(body, local_id)?;
            let resp = raft.vote(canary_blind_vote(req)).await.map_err(|e| e.to_string())?;
            encode(&resp)
        }
        KIND_PRE_VOTE => {
            let req: VoteRequest<TypeConfig> = addressed(body, local_id)?;
            let resp = raft.pre_vote(canary_blind_vote(req)).await.map_err(|e| e.to_string())?;
            encode(&resp)
        }
        KIND_SNAPSHOT => {
            let req: SnapshotReq = addressed(body, local_id)?;
            let snap = SnapshotOf::<TypeConfig, Cursor<Vec<u8>>> { meta: req.meta, snapshot: Cursor::new(req.data) };
            let resp = raft.install_full_snapshot(req.vote, snap).await.map_err(|e| e.to_string())?;
            encode(&resp)
        }
        KIND_TRANSFER_LEADER => {
            let req: TransferLeaderRequest<TypeConfig> = addressed(body, local_id)?;
            let resp = raft.handle_transfer_leader(req).await.map_err(|e| e.to_string())?;
            encode(&resp)
        }
        other => Err(format!("unknown raft rpc kind {other}")),
    }
}
