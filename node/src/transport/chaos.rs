//! Message chaos for the simulation (madsim only): requests arriving at a node are served after
//! a random delay, so that later requests overtake earlier ones, and some of them — the kinds
//! the caller names, Raft's messages, which the protocol must tolerate seeing twice — are served
//! a second time after another such delay, as a network that duplicates and reorders packets
//! would deliver them to a datagram-based Raft.
//!
//! Over TCP the transport itself delivers each request at most once and in order per
//! connection; this is the fault a stream transport cannot produce on its own, injected where
//! the frames reach the handler. The copy's answer reaches the caller as a late response,
//! which the connection drops. Settings are per node, set by the simulation's nemesis and
//! cleared at the start of every seed, in a table of the simulation thread's own; randomness comes from madsim's seeded RNG and is drawn
//! only while a node has chaos set, so runs without it replay as before.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::time::Duration;

use super::NodeId;

/// What arrives at one node while its chaos is on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Chaos {
    /// Each request waits a random 0..=`delay_max_ms` before it is served.
    pub delay_max_ms: u64,
    /// Of the requests of `duplicate_kinds`, this percentage is served twice.
    pub duplicate_pct: u8,
    /// The request kinds that may be duplicated (those whose handlers are idempotent).
    pub duplicate_kinds: Vec<u8>,
}

/// How to serve one request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Plan {
    pub delay: Duration,
    /// Serve a copy this long after the request arrived.
    pub copy_after: Option<Duration>,
}

thread_local! {
    /// madsim runs a whole simulation on one thread, so each simulation (and each test running
    /// one) has a table of its own.
    static CHAOS: RefCell<BTreeMap<NodeId, Chaos>> = const { RefCell::new(BTreeMap::new()) };
}

/// Turns chaos on for requests arriving at `node`.
pub fn set(node: NodeId, chaos: Chaos) {
    CHAOS.with(|c| c.borrow_mut().insert(node, chaos));
}

/// Turns chaos off for `node`.
pub fn clear(node: NodeId) {
    CHAOS.with(|c| c.borrow_mut().remove(&node));
}

/// Turns chaos off everywhere (a new seed).
pub fn reset() {
    CHAOS.with(|c| c.borrow_mut().clear());
}

/// How a request of `kind` arriving at `node` is served, if `node` has chaos on.
pub(crate) fn plan(node: NodeId, kind: u8) -> Option<Plan> {
    let chaos = CHAOS.with(|c| c.borrow().get(&node).cloned())?;
    let delay_of = || Duration::from_millis(madsim::rand::random::<u64>() % (chaos.delay_max_ms + 1));
    let delay = delay_of();
    let duplicate = chaos.duplicate_kinds.contains(&kind)
        && madsim::rand::random::<u64>() % 100 < u64::from(chaos.duplicate_pct.min(100));
    Some(Plan { delay, copy_after: duplicate.then(delay_of) })
}
