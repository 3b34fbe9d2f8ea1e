//! The APIs and versions Keel serves, and the ApiVersions answer.
//!
//! The ranges cover what librdkafka 2.x, kafka-python 2.x/3.x and the Java client 3.x
//! negotiate, clamped to what the `kafka-protocol` crate can decode (it follows Kafka 4.0's
//! floor: no Produce below v3, no Fetch below v4, no v0/v1 message format).

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::ApiKey;
use kafka_protocol::messages::ApiVersionsRequest;
use kafka_protocol::messages::ApiVersionsResponse;
use kafka_protocol::messages::api_versions_response::ApiVersion;

use super::Answer;
use super::Request;
use super::respond_with;

/// (API, lowest, highest version) Keel serves, before clamping to the crate's ranges.
const SERVED: &[(ApiKey, i16, i16)] = &[
    (ApiKey::Produce, 3, 12),
    (ApiKey::Fetch, 4, 17),
    (ApiKey::ListOffsets, 1, 10),
    // Kafka 3.x advertises 0-4; the crate (like Kafka 4.0) has no v0/v1. librdkafka 2.x sends
    // v2, the Java client v4 (replica id -1: bounded by the high watermark).
    (ApiKey::OffsetForLeaderEpoch, 2, 4),
    (ApiKey::Metadata, 0, 13),
    (ApiKey::ApiVersions, 0, 4),
    (ApiKey::CreateTopics, 2, 7),
    (ApiKey::DeleteTopics, 1, 6),
    (ApiKey::CreatePartitions, 0, 3),
    // v1 adds `allow_replication_factor_change` (KIP-860).
    (ApiKey::AlterPartitionReassignments, 0, 1),
    (ApiKey::ListPartitionReassignments, 0, 0),
    // v1 adds the election type (Keel runs preferred elections only), v2 is flexible.
    (ApiKey::ElectLeaders, 0, 2),
    // v4 adds the volume's total and usable bytes. Kafka 3.x serves 0-4; the crate starts at v1.
    (ApiKey::DescribeLogDirs, 1, 4),
    (ApiKey::DescribeConfigs, 1, 4),
    (ApiKey::AlterConfigs, 0, 2),
    (ApiKey::IncrementalAlterConfigs, 0, 1),
    (ApiKey::DescribeCluster, 0, 2),
    // v6 adds two-phase commit for transactions (KIP-939), which Keel does not have.
    (ApiKey::InitProducerId, 0, 5),
    // Consumer groups (v10 of OffsetCommit/OffsetFetch names topics by id: not served yet).
    (ApiKey::FindCoordinator, 0, 5),
    (ApiKey::JoinGroup, 0, 9),
    (ApiKey::SyncGroup, 0, 5),
    (ApiKey::Heartbeat, 0, 4),
    (ApiKey::LeaveGroup, 0, 5),
    (ApiKey::OffsetCommit, 2, 9),
    (ApiKey::OffsetFetch, 1, 9),
    (ApiKey::DescribeGroups, 0, 5),
    (ApiKey::ListGroups, 0, 5),
    (ApiKey::DeleteGroups, 0, 2),
    (ApiKey::OffsetDelete, 0, 0),
];

/// The served range of `api`, if Keel serves it.
pub(crate) fn range(api: ApiKey) -> Option<(i16, i16)> {
    let (_, lo, hi) = SERVED.iter().find(|(k, _, _)| *k == api)?;
    let crate_range = api.valid_versions();
    let (lo, hi) = ((*lo).max(crate_range.min), (*hi).min(crate_range.max));
    (lo <= hi).then_some((lo, hi))
}

pub(crate) fn all() -> Vec<(ApiKey, i16, i16)> {
    SERVED.iter().filter_map(|(api, _, _)| range(*api).map(|(lo, hi)| (*api, lo, hi))).collect()
}

pub(crate) fn supports(api: ApiKey, version: i16) -> bool {
    range(api).is_some_and(|(lo, hi)| (lo..=hi).contains(&version))
}

/// Every served API with its range, as ApiVersions lists them.
fn table() -> Vec<ApiVersion> {
    SERVED
        .iter()
        .filter_map(|(api, _, _)| {
            let (lo, hi) = range(*api)?;
            Some(ApiVersion::default().with_api_key(*api as i16).with_min_version(lo).with_max_version(hi))
        })
        .collect()
}

/// ApiVersions. An unsupported version gets a v0 answer with UNSUPPORTED_VERSION and the
/// table, so the client retries with a version both sides speak (Kafka's rule: the request
/// body of an unknown version is never decoded).
pub(crate) fn api_versions(req: &mut Request) -> Answer {
    let correlation_id = req.header.correlation_id;
    if !supports(ApiKey::ApiVersions, req.version) {
        let body = ApiVersionsResponse::default()
            .with_error_code(ResponseError::UnsupportedVersion.code())
            .with_api_keys(table());
        return respond_with(ApiKey::ApiVersions, 0, 0, correlation_id, &body);
    }
    let request: ApiVersionsRequest = req.decode()?;
    if req.version >= 3 {
        tracing::debug!(
            client = %request.client_software_name.as_str(),
            version = %request.client_software_version.as_str(),
            "kafka client connected"
        );
    }
    let body = ApiVersionsResponse::default().with_api_keys(table());
    // ApiVersions responses always use header v0, so that a client can read them whatever it
    // sent.
    respond_with(ApiKey::ApiVersions, req.version, 0, correlation_id, &body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_served_api_has_a_non_empty_range_the_crate_decodes() {
        for (api, _, _) in SERVED {
            let (lo, hi) = range(*api).expect("non-empty range");
            assert!(lo <= hi);
            let r = api.valid_versions();
            assert!(r.min <= lo && hi <= r.max, "{api:?}");
        }
        assert!(!supports(ApiKey::Produce, 2), "no Produce below v3");
        assert!(supports(ApiKey::Fetch, 16), "librdkafka 2.16 fetches with v16");
        assert!(range(ApiKey::JoinGroup).is_some_and(|(lo, hi)| lo == 0 && hi == 9));
        assert!(range(ApiKey::ConsumerGroupHeartbeat).is_none(), "the KIP-848 protocol is not served");
        assert_eq!(range(ApiKey::AlterPartitionReassignments), Some((0, 1)));
        assert_eq!(range(ApiKey::ListPartitionReassignments), Some((0, 0)));
        assert_eq!(range(ApiKey::OffsetForLeaderEpoch), Some((2, 4)), "librdkafka validates positions with v2");
        assert_eq!(range(ApiKey::ElectLeaders), Some((0, 2)));
        assert_eq!(range(ApiKey::DescribeLogDirs), Some((1, 4)));
    }
}
