//! The CLI's side of the Kafka protocol: a [`KafkaClient`] on the `--bootstrap` brokers, with
//! metadata lookups (topics, partition leaders) and Kafka error codes turned into messages.

use std::time::Duration;

use anyhow::Context;
use anyhow::bail;
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::MetadataResponse;
use kafka_protocol::messages::metadata_response::MetadataResponseTopic;
use kafka_protocol::protocol::Request;
use kafka_protocol::protocol::StrBytes;
use keel_node::kafka_client::ClientError;
use keel_node::kafka_client::KafkaClient;

/// How long one request may take (admin requests wait for the metadata group's commit).
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(15);
/// The `timeout_ms` admin requests carry for the broker.
pub const ADMIN_TIMEOUT_MS: i32 = 10_000;

/// `--bootstrap`: where the commands find the cluster.
#[derive(clap::Args, Clone, Debug)]
pub struct BootstrapArgs {
    /// Kafka addresses of one or more brokers, `HOST:PORT,...` (Keel or Kafka).
    #[arg(long, short = 'b', global = true, env = "KEEL_BOOTSTRAP", default_value = "127.0.0.1:9092")]
    pub bootstrap: String,
    /// Print JSON instead of tables.
    #[arg(long, global = true)]
    pub json: bool,
}

/// A Kafka client on the bootstrap brokers.
pub struct Kafka {
    pub client: KafkaClient,
    bootstrap: String,
    /// The `--bootstrap` addresses, parsed.
    addrs: Vec<String>,
}

impl Kafka {
    pub fn new(args: &BootstrapArgs) -> anyhow::Result<Kafka> {
        let addrs: Vec<String> =
            args.bootstrap.split(',').map(str::trim).filter(|a| !a.is_empty()).map(String::from).collect();
        if addrs.is_empty() {
            bail!("--bootstrap names no broker");
        }
        for a in &addrs {
            if a.rsplit_once(':').is_none_or(|(_, port)| port.parse::<u16>().is_err()) {
                bail!("--bootstrap address {a:?} is not HOST:PORT");
            }
        }
        // The process id tells concurrent CLIs apart in the brokers' logs.
        let client = KafkaClient::new(format!("keel-cli-{}", std::process::id()), addrs.clone(), 0);
        Ok(Kafka { client, bootstrap: args.bootstrap.clone(), addrs })
    }

    /// The `--bootstrap` addresses (for another client on the same brokers).
    pub fn addrs(&self) -> &[String] {
        &self.addrs
    }

    /// Metadata of every topic (`None`) or of those named.
    pub async fn metadata(&mut self, topics: Option<&[String]>) -> anyhow::Result<MetadataResponse> {
        match self.client.metadata(topics, REQUEST_TIMEOUT).await {
            Ok(md) => Ok(md),
            Err(e @ ClientError::Connect { .. }) => Err(anyhow::Error::from(e).context(self.unreachable())),
            Err(e) => Err(e.into()),
        }
    }

    /// Sends `body` to the first bootstrap broker that answers.
    pub async fn any<Q: Request>(&mut self, version: i16, body: &Q) -> anyhow::Result<Q::Response> {
        match self.client.request_any(version, body, REQUEST_TIMEOUT).await {
            Ok((_, answer)) => Ok(answer),
            Err(e @ ClientError::Connect { .. }) => Err(anyhow::Error::from(e).context(self.unreachable())),
            Err(e) => Err(e.into()),
        }
    }

    /// The message for "no bootstrap broker answered".
    pub fn unreachable(&self) -> String {
        format!("no broker of --bootstrap {} answered (is the cluster running? try `keel dev`)", self.bootstrap)
    }

    /// One topic's metadata; an error if the cluster does not have it.
    pub async fn topic(&mut self, name: &str) -> anyhow::Result<(MetadataResponse, MetadataResponseTopic)> {
        let md = self.metadata(Some(&[name.to_string()])).await?;
        let topic = md
            .topics
            .iter()
            .find(|t| t.name.as_ref().is_some_and(|n| n.0.as_str() == name))
            .cloned()
            .with_context(|| format!("the broker's answer does not mention topic '{name}'"))?;
        if topic.error_code != 0 {
            check(topic.error_code, &format!("topic '{name}'"), None)?;
        }
        Ok((md, topic))
    }
}

/// The Kafka address of broker `id` in a Metadata answer.
pub fn broker_addr(md: &MetadataResponse, id: i32) -> Option<String> {
    md.brokers.iter().find(|b| b.node_id.0 == id).map(|b| format!("{}:{}", b.host.as_str(), b.port))
}

/// The leader (broker id, epoch, address) of `partition` of a topic, if one is known.
pub fn leader_of(md: &MetadataResponse, topic: &MetadataResponseTopic, partition: i32) -> Option<(i32, i32, String)> {
    let p = topic.partitions.iter().find(|p| p.partition_index == partition)?;
    if p.leader_id.0 < 0 {
        return None;
    }
    Some((p.leader_id.0, p.leader_epoch, broker_addr(md, p.leader_id.0)?))
}

/// A topic's partition ids, sorted.
pub fn partition_ids(topic: &MetadataResponseTopic) -> Vec<i32> {
    let mut ids: Vec<i32> = topic.partitions.iter().map(|p| p.partition_index).collect();
    ids.sort_unstable();
    ids
}

/// A Kafka error code as Kafka names it (`UNKNOWN_TOPIC_OR_PARTITION`), after the broker's
/// message if it sent one.
pub fn error_text(code: i16, message: Option<&StrBytes>) -> String {
    let name = match ResponseError::try_from_code(code) {
        Some(ResponseError::Unknown(c)) => format!("error code {c}"),
        Some(e) => screaming_snake(&format!("{e:?}")),
        None => "NONE".to_string(),
    };
    match message.map(|m| m.as_str()).filter(|m| !m.is_empty()) {
        Some(m) => format!("{m} ({name})"),
        None => name,
    }
}

/// `UnknownTopicOrPartition` as Kafka spells it: `UNKNOWN_TOPIC_OR_PARTITION`.
fn screaming_snake(camel: &str) -> String {
    let mut out = String::new();
    for (i, c) in camel.chars().enumerate() {
        if c.is_uppercase() && i > 0 {
            out.push('_');
        }
        out.push(c.to_ascii_uppercase());
    }
    out
}

/// `Ok` for error code 0, else an error naming `what` and the code.
pub fn check(code: i16, what: &str, message: Option<&StrBytes>) -> anyhow::Result<()> {
    if code == 0 {
        return Ok(());
    }
    if code == ResponseError::UnknownTopicOrPartition.code() {
        bail!("{what}: no such topic or partition ({})", error_text(code, message));
    }
    if code == ResponseError::CoordinatorNotAvailable.code() || code == ResponseError::NotCoordinator.code() {
        bail!("{what}: the group coordinator is not available yet, try again ({})", error_text(code, message));
    }
    bail!("{what}: {}", error_text(code, message))
}

/// Whether a produce or fetch error means the leader moved (refresh metadata and retry).
pub fn is_leader_change(code: i16) -> bool {
    [
        ResponseError::NotLeaderOrFollower,
        ResponseError::LeaderNotAvailable,
        ResponseError::FencedLeaderEpoch,
        ResponseError::UnknownLeaderEpoch,
        ResponseError::NotEnoughReplicas,
        ResponseError::RequestTimedOut,
    ]
    .iter()
    .any(|e| e.code() == code)
}

/// Parses `KEY=VALUE` settings.
pub fn parse_settings(settings: &[String], flag: &str) -> anyhow::Result<Vec<(String, String)>> {
    settings
        .iter()
        .map(|c| {
            c.split_once('=')
                .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
                .filter(|(k, _)| !k.is_empty())
                .with_context(|| format!("{flag} {c:?} is not KEY=VALUE"))
        })
        .collect()
}

/// A `StrBytes` from a `&str`.
pub fn sb(s: &str) -> StrBytes {
    StrBytes::from_string(s.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_codes_read_as_kafka_names_them() {
        assert_eq!(error_text(3, None), "UNKNOWN_TOPIC_OR_PARTITION");
        assert_eq!(
            error_text(36, Some(&sb("topic 'a' already exists"))),
            "topic 'a' already exists (TOPIC_ALREADY_EXISTS)"
        );
        assert_eq!(error_text(9999, None), "error code 9999");
        let e = check(3, "topic 'x'", None).unwrap_err().to_string();
        assert!(e.contains("topic 'x'") && e.contains("UNKNOWN_TOPIC_OR_PARTITION"), "{e}");
        assert!(check(0, "fine", None).is_ok());
    }
}
