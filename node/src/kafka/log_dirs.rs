//! DescribeLogDirs: the log directory of this node and the size of each partition in it.
//!
//! A Keel node has one log directory, its data directory (`<data_dir>/partitions/<group>/`
//! holds a partition). Each partition replica open on this node is listed with the bytes of its
//! segment files; offset lag is 0 (Keel has no future replicas and no intra-broker moves, so
//! `is_future_key` is always false). v4 adds the volume's total and usable bytes (statvfs; -1,
//! Kafka's "unknown", when they cannot be read). A null topic list asks for every partition;
//! named topics or partitions not hosted here are left out, as Kafka does.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use kafka_protocol::messages::DescribeLogDirsRequest;
use kafka_protocol::messages::DescribeLogDirsResponse;
use kafka_protocol::messages::describe_log_dirs_response::DescribeLogDirsPartition;
use kafka_protocol::messages::describe_log_dirs_response::DescribeLogDirsResult;
use kafka_protocol::messages::describe_log_dirs_response::DescribeLogDirsTopic;

use super::Answer;
use super::Request;
use super::codes::str_bytes;
use super::codes::topic_name;
use super::respond;
use crate::node::Node;

/// Kafka's value for volume sizes it cannot tell.
const UNKNOWN_VOLUME_BYTES: i64 = -1;

/// Which partitions a request asks for: `None` = all; else topic → partitions.
pub(crate) type Wanted = Option<BTreeMap<String, Vec<i32>>>;

/// The (topic, partition, group) of every partition hosted here that `wanted` names, sorted.
pub(crate) fn select(hosted: &[(String, i32, u64)], wanted: &Wanted) -> Vec<(String, i32, u64)> {
    hosted
        .iter()
        .filter(|(topic, partition, _)| match wanted {
            None => true,
            Some(w) => w.get(topic).is_some_and(|ps| ps.contains(partition)),
        })
        .cloned()
        .collect()
}

pub(crate) fn describe_log_dirs(node: &Arc<Node>, req: &mut Request) -> Answer {
    let request: DescribeLogDirsRequest = req.decode()?;
    let wanted: Wanted = request.topics.map(|topics| {
        let mut w: BTreeMap<String, Vec<i32>> = BTreeMap::new();
        for t in topics {
            w.entry(t.topic.0.to_string()).or_default().extend(t.partitions);
        }
        w
    });
    let hosted: Vec<(String, i32, u64)> = node.meta().sm().with_state(|s| {
        s.topics
            .values()
            .flat_map(|t| {
                t.partitions
                    .iter()
                    .enumerate()
                    .map(|(i, a)| (t.name.clone(), i32::try_from(i).unwrap_or(i32::MAX), a.group))
            })
            .collect()
    });
    let mut topics: BTreeMap<String, Vec<DescribeLogDirsPartition>> = BTreeMap::new();
    for (topic, partition, group) in select(&hosted, &wanted) {
        let Some(replica) = node.replica(group) else { continue };
        topics.entry(topic).or_default().push(
            DescribeLogDirsPartition::default()
                .with_partition_index(partition)
                .with_partition_size(i64::try_from(replica.size_bytes()).unwrap_or(i64::MAX))
                .with_offset_lag(0)
                .with_is_future_key(false),
        );
    }
    let dir = node.data_dir();
    let (total_bytes, usable_bytes) = volume_bytes(&dir).unwrap_or((UNKNOWN_VOLUME_BYTES, UNKNOWN_VOLUME_BYTES));
    let result = DescribeLogDirsResult::default()
        .with_log_dir(str_bytes(dir.display().to_string()))
        .with_topics(
            topics
                .into_iter()
                .map(|(name, partitions)| {
                    DescribeLogDirsTopic::default().with_name(topic_name(&name)).with_partitions(partitions)
                })
                .collect(),
        )
        .with_total_bytes(total_bytes)
        .with_usable_bytes(usable_bytes);
    respond(req, &DescribeLogDirsResponse::default().with_results(vec![result]))
}

/// (total, usable) bytes of the file system holding `dir`.
#[cfg(unix)]
fn volume_bytes(dir: &Path) -> Option<(i64, i64)> {
    use std::os::unix::ffi::OsStrExt;
    let path = std::ffi::CString::new(dir.as_os_str().as_bytes()).ok()?;
    let mut st = std::mem::MaybeUninit::<libc::statvfs>::zeroed();
    // SAFETY: `path` is a NUL-terminated string and `st` points to writable memory of the
    // struct's size; statvfs writes only there and reports failure by its return value.
    let rc = unsafe { libc::statvfs(path.as_ptr(), st.as_mut_ptr()) };
    if rc != 0 {
        return None;
    }
    // SAFETY: statvfs returned 0, so it filled the struct.
    let st = unsafe { st.assume_init() };
    let block = st.f_frsize as u128;
    let total = i64::try_from(st.f_blocks as u128 * block).ok()?;
    let usable = i64::try_from(st.f_bavail as u128 * block).ok()?;
    Some((total, usable))
}

#[cfg(not(unix))]
fn volume_bytes(_dir: &Path) -> Option<(i64, i64)> {
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_null_topic_list_selects_every_hosted_partition_and_names_select_theirs() {
        let hosted = vec![("a".to_string(), 0, 10), ("a".to_string(), 1, 11), ("b".to_string(), 0, 12)];
        assert_eq!(select(&hosted, &None), hosted);
        let w: Wanted = Some(BTreeMap::from([("a".to_string(), vec![1, 5]), ("zz".to_string(), vec![0])]));
        assert_eq!(select(&hosted, &w), vec![("a".to_string(), 1, 11)], "unknown names are left out");
        assert!(select(&hosted, &Some(BTreeMap::new())).is_empty());
    }

    #[test]
    fn the_volume_of_an_existing_directory_has_a_size() {
        let (total, usable) = volume_bytes(Path::new(".")).expect("statvfs of the working directory");
        assert!(total > 0 && usable >= 0 && usable <= total, "{total} {usable}");
        assert_eq!(volume_bytes(Path::new("/no/such/dir/anywhere")), None);
    }
}
