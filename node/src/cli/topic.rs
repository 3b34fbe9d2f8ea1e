//! `keel topic create|list|describe|delete|alter-config|add-partitions` over the Kafka admin
//! requests (CreateTopics, Metadata, DescribeConfigs, DeleteTopics, IncrementalAlterConfigs,
//! CreatePartitions), so they work against Kafka as well.

use kafka_protocol::messages::CreatePartitionsRequest;
use kafka_protocol::messages::CreateTopicsRequest;
use kafka_protocol::messages::DeleteTopicsRequest;
use kafka_protocol::messages::DescribeConfigsRequest;
use kafka_protocol::messages::IncrementalAlterConfigsRequest;
use kafka_protocol::messages::create_partitions_request::CreatePartitionsTopic;
use kafka_protocol::messages::create_topics_request::CreatableTopic;
use kafka_protocol::messages::create_topics_request::CreatableTopicConfig;
use kafka_protocol::messages::describe_configs_request::DescribeConfigsResource;
use kafka_protocol::messages::incremental_alter_configs_request::AlterConfigsResource;
use kafka_protocol::messages::incremental_alter_configs_request::AlterableConfig;
use keel_node::kafka_client::topic_name;
use serde_json::json;

use super::kafka::ADMIN_TIMEOUT_MS;
use super::kafka::Kafka;
use super::kafka::check;
use super::kafka::parse_settings;
use super::kafka::sb;
use super::output::Output;
use super::output::join_ids;

/// CreateTopics v5: flexible, answers the created topic's settings (Kafka 2.4+).
pub const CREATE_TOPICS_VERSION: i16 = 5;
/// DeleteTopics v4: flexible, topics by name.
const DELETE_TOPICS_VERSION: i16 = 4;
/// DescribeConfigs v4: flexible.
const DESCRIBE_CONFIGS_VERSION: i16 = 4;
/// IncrementalAlterConfigs v1: flexible.
const ALTER_CONFIGS_VERSION: i16 = 1;
/// CreatePartitions v2: flexible.
const CREATE_PARTITIONS_VERSION: i16 = 2;
/// DescribeConfigs / IncrementalAlterConfigs resource type of a topic.
const RESOURCE_TOPIC: i8 = 2;

#[derive(clap::Subcommand)]
pub enum TopicCommand {
    /// Creates a topic.
    Create {
        name: String,
        /// Default: the broker's `num.partitions`.
        #[arg(long, short = 'p')]
        partitions: Option<u32>,
        /// Default: the broker's `default.replication.factor` (Keel: 3, capped by the nodes).
        #[arg(long, short = 'r')]
        replication_factor: Option<u16>,
        /// `KEY=VALUE` topic setting (Kafka names, e.g. retention.ms=3600000), repeatable.
        #[arg(long = "config", short = 'c')]
        configs: Vec<String>,
    },
    /// Lists topics.
    List,
    /// Shows a topic's partitions, leaders, replicas and settings.
    Describe { name: String },
    /// Deletes a topic and its data.
    Delete { name: String },
    /// Changes a topic's settings.
    AlterConfig {
        name: String,
        /// `KEY=VALUE` to set, repeatable.
        #[arg(long)]
        set: Vec<String>,
        /// `KEY` to return to its default, repeatable.
        #[arg(long)]
        delete: Vec<String>,
    },
    /// Grows a topic to `--total` partitions.
    AddPartitions {
        name: String,
        #[arg(long)]
        total: u32,
    },
}

pub async fn run(kafka: &mut Kafka, out: &mut Output, command: TopicCommand) -> anyhow::Result<()> {
    match command {
        TopicCommand::Create { name, partitions, replication_factor, configs } => {
            let configs = parse_settings(&configs, "--config")?;
            let partitions = match partitions {
                Some(0) => anyhow::bail!("--partitions must be at least 1"),
                Some(p) => i32::try_from(p).map_err(|_| anyhow::anyhow!("--partitions {p} is too large"))?,
                None => -1,
            };
            let replication_factor = match replication_factor {
                Some(0) => anyhow::bail!("--replication-factor must be at least 1"),
                Some(r) => i16::try_from(r).map_err(|_| anyhow::anyhow!("--replication-factor {r} is too large"))?,
                None => -1,
            };
            let request = CreateTopicsRequest::default().with_timeout_ms(ADMIN_TIMEOUT_MS).with_topics(vec![
                CreatableTopic::default()
                    .with_name(topic_name(&name))
                    .with_num_partitions(partitions)
                    .with_replication_factor(replication_factor)
                    .with_configs(
                        configs
                            .iter()
                            .map(|(k, v)| CreatableTopicConfig::default().with_name(sb(k)).with_value(Some(sb(v))))
                            .collect(),
                    ),
            ]);
            let answer = kafka.any(CREATE_TOPICS_VERSION, &request).await?;
            let r = answer.topics.first().ok_or_else(|| anyhow::anyhow!("the broker's answer names no topic"))?;
            check(r.error_code, &format!("creating topic '{name}'"), r.error_message.as_ref())?;
            if out.json {
                out.json_value(
                    &json!({"topic": name, "partitions": r.num_partitions, "replication_factor": r.replication_factor}),
                )
            } else {
                out.line(&format!(
                    "created topic {name}: {} partitions, replication factor {}",
                    r.num_partitions, r.replication_factor
                ))
            }
        }
        TopicCommand::List => {
            let md = kafka.metadata(None).await?;
            let mut topics: Vec<_> = md
                .topics
                .iter()
                .filter(|t| t.error_code == 0)
                .filter_map(|t| {
                    let name = t.name.as_ref()?.0.to_string();
                    let rf = t.partitions.iter().map(|p| p.replica_nodes.len()).max().unwrap_or(0);
                    Some((name, t.partitions.len(), rf, t.is_internal))
                })
                .collect();
            topics.sort();
            if out.json {
                let list: Vec<_> = topics
                    .iter()
                    .map(|(n, p, rf, internal)| json!({"topic": n, "partitions": p, "replication_factor": rf, "internal": internal}))
                    .collect();
                return out.json_value(&json!(list));
            }
            let rows = topics.into_iter().map(|(n, p, rf, _)| vec![n, p.to_string(), rf.to_string()]).collect();
            out.table(&["topic", "partitions", "replicas"], rows)
        }
        TopicCommand::Describe { name } => {
            let (_, topic) = kafka.topic(&name).await?;
            let request = DescribeConfigsRequest::default().with_resources(vec![
                DescribeConfigsResource::default().with_resource_type(RESOURCE_TOPIC).with_resource_name(sb(&name)),
            ]);
            let answer = kafka.any(DESCRIBE_CONFIGS_VERSION, &request).await?;
            let result = answer.results.first().ok_or_else(|| anyhow::anyhow!("the broker's answer names no topic"))?;
            check(result.error_code, &format!("settings of topic '{name}'"), result.error_message.as_ref())?;
            let mut configs: Vec<(String, String, bool)> = result
                .configs
                .iter()
                .map(|c| {
                    // Config source 5 is DEFAULT_CONFIG; everything else was set somewhere.
                    (
                        c.name.to_string(),
                        c.value.as_ref().map_or(String::new(), |v| v.to_string()),
                        c.config_source == 5,
                    )
                })
                .collect();
            configs.sort();
            let mut partitions = topic.partitions.clone();
            partitions.sort_by_key(|p| p.partition_index);
            if out.json {
                let parts: Vec<_> = partitions
                    .iter()
                    .map(|p| {
                        json!({
                            "partition": p.partition_index,
                            "leader": (p.leader_id.0 >= 0).then_some(p.leader_id.0),
                            "leader_epoch": p.leader_epoch,
                            "replicas": p.replica_nodes.iter().map(|b| b.0).collect::<Vec<_>>(),
                            "isr": p.isr_nodes.iter().map(|b| b.0).collect::<Vec<_>>(),
                        })
                    })
                    .collect();
                let cfg: serde_json::Map<String, serde_json::Value> =
                    configs.iter().map(|(k, v, _)| (k.clone(), json!(v))).collect();
                return out.json_value(&json!({"topic": name, "partitions": parts, "configs": cfg}));
            }
            out.line(&format!("topic {name}: {} partitions", partitions.len()))?;
            let rows = partitions
                .iter()
                .map(|p| {
                    vec![
                        p.partition_index.to_string(),
                        if p.leader_id.0 >= 0 { p.leader_id.0.to_string() } else { "-".into() },
                        p.leader_epoch.to_string(),
                        join_ids(p.replica_nodes.iter().map(|b| b.0)),
                        join_ids(p.isr_nodes.iter().map(|b| b.0)),
                    ]
                })
                .collect();
            out.table(&["partition", "leader", "epoch", "replicas", "isr"], rows)?;
            out.line("")?;
            let rows = configs
                .into_iter()
                .map(|(k, v, default)| vec![k, v, if default { "default".into() } else { "set".into() }])
                .collect();
            out.table(&["setting", "value", "source"], rows)
        }
        TopicCommand::Delete { name } => {
            let request = DeleteTopicsRequest::default()
                .with_timeout_ms(ADMIN_TIMEOUT_MS)
                .with_topic_names(vec![topic_name(&name)]);
            let answer = kafka.any(DELETE_TOPICS_VERSION, &request).await?;
            let r = answer.responses.first().ok_or_else(|| anyhow::anyhow!("the broker's answer names no topic"))?;
            check(r.error_code, &format!("deleting topic '{name}'"), r.error_message.as_ref())?;
            if out.json {
                out.json_value(&json!({"deleted": name}))
            } else {
                out.line(&format!("deleted topic {name}"))
            }
        }
        TopicCommand::AlterConfig { name, set, delete } => {
            let set = parse_settings(&set, "--set")?;
            if set.is_empty() && delete.is_empty() {
                anyhow::bail!("nothing to change: give --set KEY=VALUE or --delete KEY");
            }
            // Operation 0 is SET, 1 is DELETE (back to the default).
            let mut configs: Vec<AlterableConfig> = set
                .iter()
                .map(|(k, v)| {
                    AlterableConfig::default().with_name(sb(k)).with_config_operation(0).with_value(Some(sb(v)))
                })
                .collect();
            configs.extend(delete.iter().map(|k| AlterableConfig::default().with_name(sb(k)).with_config_operation(1)));
            let request = IncrementalAlterConfigsRequest::default().with_resources(vec![
                AlterConfigsResource::default()
                    .with_resource_type(RESOURCE_TOPIC)
                    .with_resource_name(sb(&name))
                    .with_configs(configs),
            ]);
            let answer = kafka.any(ALTER_CONFIGS_VERSION, &request).await?;
            let r = answer.responses.first().ok_or_else(|| anyhow::anyhow!("the broker's answer names no topic"))?;
            check(r.error_code, &format!("changing settings of topic '{name}'"), r.error_message.as_ref())?;
            if out.json {
                out.json_value(&json!({"topic": name, "set": set.iter().map(|(k, v)| json!({k: v})).collect::<Vec<_>>(), "deleted": delete}))
            } else {
                out.line(&format!("topic {name}: {} setting(s) set, {} returned to default", set.len(), delete.len()))
            }
        }
        TopicCommand::AddPartitions { name, total } => {
            let count = i32::try_from(total).map_err(|_| anyhow::anyhow!("--total {total} is too large"))?;
            let request = CreatePartitionsRequest::default()
                .with_timeout_ms(ADMIN_TIMEOUT_MS)
                .with_topics(vec![CreatePartitionsTopic::default().with_name(topic_name(&name)).with_count(count)]);
            let answer = kafka.any(CREATE_PARTITIONS_VERSION, &request).await?;
            let r = answer.results.first().ok_or_else(|| anyhow::anyhow!("the broker's answer names no topic"))?;
            check(r.error_code, &format!("adding partitions to topic '{name}'"), r.error_message.as_ref())?;
            if out.json {
                out.json_value(&json!({"topic": name, "partitions": total}))
            } else {
                out.line(&format!("topic {name} now has {total} partitions"))
            }
        }
    }
}
