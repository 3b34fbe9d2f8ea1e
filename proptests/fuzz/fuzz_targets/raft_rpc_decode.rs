//! Fuzz target: bincode bodies of Raft RPCs and internal client messages, as a peer sends them.
//!
//! `keel_node::raft::network::decode` (bincode, fixed-width integers, a 64 MiB limit) must answer
//! `Ok` or `Err` for any bytes: no panic, and no allocation beyond what the input can justify
//! (libFuzzer's `-malloc_limit_mb`, by default the 2 GiB RSS limit, turns one into a crash). A
//! value that decodes must encode to bytes that decode to a value encoding to the same bytes.
//!
//! Also: the Raft hard state file (`raft-state`: bincode ++ CRC32C) as `HardState::load` reads it
//! from disk, with its CRC repaired so that the fuzzer reaches the bincode decoding.
//!
//! Also: metadata commands as a node receives them (a proposal body, or a metadata log entry),
//! applied to a small cluster's metadata — `MetadataState::apply` checks its invariants after
//! every command, so a command that breaks them is a crash.
//!
//! Input: byte 0 picks the message type, the rest is the body.

#![no_main]

use std::path::Path;

use keel_core::metadata::{Command, MetadataState};
use keel_core::storage::Storage;
use keel_core::storage::sim::SimStorage;
use keel_node::client::{AppendResponse, ClusterView, ReadRequest, ReadResponse, Status};
use keel_node::leaders::LeaderReport;
use keel_node::meta::state_machine::decode_command;
use keel_node::meta::{ProposeResponse, ReadIndexResponse};
use keel_node::raft::hard_state::{self, HardState};
use keel_node::raft::network::{decode, encode};
use keel_node::raft::{Membership, TypeConfig, Vote};
use libfuzzer_sys::fuzz_target;
use openraft::alias::SnapshotMetaOf;
use openraft::raft::{AppendEntriesRequest, AppendEntriesResponse, SnapshotResponse, VoteRequest, VoteResponse};
use serde::Serialize;
use serde::de::DeserializeOwned;

/// The wire shape of `network::SnapshotReq` (private there): bincode encodes a struct as the
/// tuple of its fields.
type SnapshotReq = (Vote, SnapshotMetaOf<TypeConfig>, Vec<u8>);

fuzz_target!(|data: &[u8]| {
    let Some((&kind, body)) = data.split_first() else {
        return;
    };
    match kind % 21 {
        // Requests a node serves.
        0 => round_trip::<AppendEntriesRequest<TypeConfig>>(body),
        1 => round_trip::<VoteRequest<TypeConfig>>(body),
        2 => round_trip::<SnapshotReq>(body),
        3 => round_trip::<ReadRequest>(body),
        // Responses a node (or the keel CLI, or a simulated client) receives.
        4 => round_trip::<AppendEntriesResponse<TypeConfig>>(body),
        5 => round_trip::<VoteResponse<TypeConfig>>(body),
        6 => round_trip::<SnapshotResponse<TypeConfig>>(body),
        7 => round_trip::<AppendResponse>(body),
        8 => round_trip::<ReadResponse>(body),
        9 => round_trip::<Status>(body),
        // A membership, as stored in a control batch (entry_codec uses a 1 MiB limit).
        10 => round_trip::<Membership>(body),
        11 => hard_state_from_disk(body),
        // Metadata traffic.
        12 => metadata_command(body),
        13 => round_trip::<ProposeResponse>(body),
        14 => round_trip::<ReadIndexResponse>(body),
        15 => round_trip::<LeaderReport>(body),
        16 => round_trip::<ClusterView>(body),
        // A heartbeat batch and its answer; a Raft request addressed to a member.
        17 => round_trip::<Vec<(u64, u64, AppendEntriesRequest<TypeConfig>)>>(body),
        18 => round_trip::<Vec<(u64, Result<AppendEntriesResponse<TypeConfig>, String>)>>(body),
        19 => round_trip::<(u64, VoteRequest<TypeConfig>)>(body),
        // A metadata log entry: a RecordBatch holding one command.
        _ => {
            if let Ok(cmd) = decode_command(body) {
                apply_to_small_cluster(&cmd);
            }
        }
    }
});

fn metadata_command(body: &[u8]) {
    round_trip::<Command>(body);
    if let Ok(cmd) = decode::<Command>(body) {
        apply_to_small_cluster(&cmd);
    }
}

/// Applies `cmd` to a cluster of three nodes holding one topic of two partitions, then applies
/// it again (a retried proposal): refusals are fine, panics (broken invariants) are not.
fn apply_to_small_cluster(cmd: &Command) {
    let mut state = MetadataState::new(3);
    let mut index = 0;
    let mut apply = |state: &mut MetadataState, cmd: &Command| {
        index += 1;
        let _ = state.apply(index, cmd);
    };
    for id in 1..=3u64 {
        let register =
            Command::RegisterNode { id, addr: format!("n{id}:7000"), kafka_addr: format!("n{id}:9092"), rack: None };
        apply(&mut state, &register);
    }
    let create =
        Command::CreateTopic { name: "t".into(), partitions: 2, replication_factor: None, configs: Default::default() };
    apply(&mut state, &create);
    apply(&mut state, cmd);
    apply(&mut state, cmd);
    state.check_invariants();
}

fn round_trip<T: Serialize + DeserializeOwned>(body: &[u8]) {
    let Ok(value) = decode::<T>(body) else {
        return;
    };
    let encoded = encode(&value).expect("a decoded value encodes");
    let again: T = decode(&encoded).expect("an encoded value decodes");
    assert_eq!(encode(&again).expect("encodes"), encoded, "encoding is not stable");
}

fn hard_state_from_disk(body: &[u8]) {
    let storage = SimStorage::new(0);
    let dir = Path::new("/data/p0");
    storage.create_dir_all(dir).expect("mkdir");
    let file = storage.open(&dir.join(hard_state::FILE_NAME), true).expect("create");
    let mut bytes = body.to_vec();
    bytes.extend_from_slice(&crc32c::crc32c(body).to_be_bytes());
    file.write_all_at(0, &bytes).expect("write");
    drop(file);
    if let Ok(state) = HardState::load(storage.as_ref(), dir) {
        state.store(storage.as_ref(), dir).expect("store");
        assert_eq!(HardState::load(storage.as_ref(), dir).expect("reload"), state);
    }
}
