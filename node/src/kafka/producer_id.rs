//! InitProducerId for idempotent producers: a cluster-unique producer id with epoch 0.
//!
//! Ids come in blocks from the metadata group (`Command::AllocateProducerIds`): each node takes
//! [`PRODUCER_ID_BLOCK`] ids at a time and hands them out one per request, so the metadata
//! group sees one proposal per block, and no id is ever given twice — a node that restarts
//! takes a fresh block (the rest of its old one is never used). Without a transactional id,
//! Kafka gives every request a new producer id (also a request that names its current id and
//! epoch to bump the epoch, KIP-360), and so does Keel. Transactions are not supported: a
//! transactional id is refused.

use std::sync::Arc;
use std::time::Duration;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::InitProducerIdRequest;
use kafka_protocol::messages::InitProducerIdResponse;
use kafka_protocol::messages::ProducerId;
use keel_core::metadata::Command;
use keel_core::metadata::Reply;

use super::Answer;
use super::Request;
use super::respond;
use crate::node::Node;

/// Producer ids a node takes from the metadata group at a time.
pub const PRODUCER_ID_BLOCK: u32 = 1000;
/// The longest an InitProducerId waits for a new block.
const ALLOCATE_TIMEOUT: Duration = Duration::from_secs(5);

/// The block of producer ids a node is handing out: `next .. end`.
#[derive(Debug, Default)]
pub struct ProducerIdBlock {
    next: i64,
    end: i64,
}

pub(crate) async fn init_producer_id(node: &Arc<Node>, req: &mut Request) -> Answer {
    let request: InitProducerIdRequest = req.decode()?;
    let refuse = |code: ResponseError| {
        InitProducerIdResponse::default()
            .with_error_code(code.code())
            .with_producer_id(ProducerId(-1))
            .with_producer_epoch(-1)
    };
    if request.transactional_id.as_ref().is_some_and(|t| !t.0.is_empty()) {
        // Keel has no transaction coordinator.
        return respond(req, &refuse(ResponseError::InvalidRequest));
    }
    let body = match next_producer_id(node).await {
        Ok(id) => InitProducerIdResponse::default().with_producer_id(ProducerId(id)).with_producer_epoch(0),
        Err(code) => refuse(code),
    };
    respond(req, &body)
}

/// The next producer id of this node's block, taking a new block when it is used up.
async fn next_producer_id(node: &Arc<Node>) -> Result<i64, ResponseError> {
    let mut block = node.producer_ids.lock().await;
    if block.next >= block.end {
        let cmd = Command::AllocateProducerIds { node: node.id, count: PRODUCER_ID_BLOCK };
        match node.propose(&cmd, ALLOCATE_TIMEOUT).await {
            Ok(Ok(Reply::ProducerIds { first, count })) => {
                *block = ProducerIdBlock { next: first, end: first + i64::from(count) };
            }
            Ok(Ok(other)) => {
                tracing::warn!(?other, "producer id block: unexpected metadata reply");
                return Err(ResponseError::CoordinatorNotAvailable);
            }
            Ok(Err(e)) => {
                // Typically: this node has not registered yet. Retriable for the client.
                tracing::info!(error = %e, "producer id block refused");
                return Err(ResponseError::CoordinatorNotAvailable);
            }
            Err(e) => {
                tracing::info!(error = %e, "producer id block: no metadata answer");
                return Err(ResponseError::CoordinatorNotAvailable);
            }
        }
    }
    let id = block.next;
    block.next += 1;
    Ok(id)
}
