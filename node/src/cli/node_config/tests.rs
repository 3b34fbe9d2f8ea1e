//! What the settings' validation must refuse and what it must keep.

use super::*;

fn node(id: u64) -> RawSettings {
    RawSettings { id: Some(id), data_dir: Some("/var/lib/keel".into()), ..RawSettings::default() }
}

fn err(raw: RawSettings) -> String {
    validate_node(raw).expect_err("refused").to_string()
}

/// Every setting set, so that a new field must be added here (the struct literals have no
/// `..Default`) and so reach the documentation test.
pub fn every_setting() -> RawSettings {
    RawSettings {
        id: Some(1),
        data_dir: Some("/var/lib/keel".into()),
        addr: Some("10.0.0.1:19201".into()),
        listen: Some("0.0.0.0:19201".into()),
        rack: Some("a".into()),
        nodes: Some("1=10.0.0.1:19201,2=10.0.0.2:19201,3=10.0.0.3:19201".parse().unwrap()),
        cluster_id: Some("prod".into()),
        kafka: KafkaSettings { listen: Some("0.0.0.0:9092".into()), advertised: Some("kafka-1:9092".into()) },
        http: HttpSettings { listen: Some("0.0.0.0:9644".into()) },
        broker: BrokerSettings {
            auto_create_topics_enable: Some(false),
            num_partitions: Some(6),
            default_replication_factor: Some(3),
            message_max_bytes: Some(1 << 20),
            offsets_topic_num_partitions: Some(8),
            offsets_topic_replication_factor: Some(3),
            offsets_retention_minutes: Some(60),
            group_initial_rebalance_delay_ms: Some(0),
            group_min_session_timeout_ms: Some(6000),
            group_max_session_timeout_ms: Some(60_000),
            replica_lag_time_max_ms: Some(10_000),
        },
        raft: RaftSettings {
            heartbeat_ms: Some(500),
            election_timeout_min_ms: Some(2000),
            election_timeout_max_ms: Some(4000),
        },
    }
}

#[test]
fn defaults_fill_what_no_source_set() {
    let s = validate_node(node(2)).unwrap();
    assert_eq!(s.addr, "127.0.0.1:19202", "a voter's address comes from `nodes`");
    assert_eq!(s.listen, s.addr);
    assert_eq!(s.kafka_listen, "0.0.0.0:9092");
    assert_eq!(s.kafka_advertised, "127.0.0.1:9092", "the unspecified host becomes the node's host");
    assert_eq!(s.cluster_id, DEV_CLUSTER_ID);
    assert_eq!(s.raft, RAFT_TIMING_DEFAULT);
    assert_eq!(s.kafka.broker, BrokerConfig::default());
    let c = s.node_config();
    assert_eq!((c.id, c.voters.len(), c.default_replication_factor), (2, 3, 3));
}

#[test]
fn every_setting_reaches_the_validated_struct() {
    let s = validate_node(every_setting()).unwrap();
    assert_eq!(
        (s.id, s.addr.as_str(), s.listen.as_str(), s.rack.as_deref()),
        (1, "10.0.0.1:19201", "0.0.0.0:19201", Some("a"))
    );
    assert_eq!((s.kafka_listen.as_str(), s.kafka_advertised.as_str()), ("0.0.0.0:9092", "kafka-1:9092"));
    assert_eq!(s.cluster_id, "prod");
    let b = &s.kafka.broker;
    assert!(!b.auto_create_topics_enable);
    assert_eq!((b.num_partitions, b.message_max_bytes, b.offsets_retention_minutes), (6, 1 << 20, 60));
    assert_eq!((b.group_initial_rebalance_delay_ms, b.group_max_session_timeout_ms), (0, 60_000));
    assert_eq!(s.raft, RaftTiming { heartbeat_ms: 500, election_timeout_min_ms: 2000, election_timeout_max_ms: 4000 });
    assert_eq!(s.node_config().metadata_raft.heartbeat_interval, 500);
}

#[test]
fn flags_and_environment_win_over_the_file() {
    let file = every_setting();
    let flags = RawSettings {
        id: Some(3),
        raft: RaftSettings { heartbeat_ms: Some(700), ..RaftSettings::default() },
        broker: BrokerSettings { num_partitions: Some(12), ..BrokerSettings::default() },
        ..RawSettings::default()
    };
    let merged = flags.over(file.clone());
    assert_eq!(merged.id, Some(3));
    assert_eq!(merged.raft.heartbeat_ms, Some(700));
    assert_eq!(merged.raft.election_timeout_min_ms, file.raft.election_timeout_min_ms, "unset flags keep the file's");
    assert_eq!(merged.broker.num_partitions, Some(12));
    assert_eq!(merged.broker.message_max_bytes, file.broker.message_max_bytes);
    assert_eq!((merged.nodes, merged.cluster_id), (file.nodes.clone(), file.cluster_id.clone()));
    assert_eq!(RawSettings::default().over(file.clone()), file);
}

#[test]
fn required_settings_name_every_way_to_give_them() {
    let e = err(RawSettings { id: None, ..node(1) });
    assert_eq!(e, "id is not set: give --id, KEEL_NODE_ID or `id` in the config file");
    let e = err(RawSettings { data_dir: None, ..node(1) });
    assert!(e.contains("--data-dir") && e.contains("KEEL_DATA_DIR") && e.contains("`data_dir`"), "{e}");
}

#[test]
fn raft_timings_must_be_in_order() {
    let raft = |h, min, max| RawSettings {
        raft: RaftSettings {
            heartbeat_ms: Some(h),
            election_timeout_min_ms: Some(min),
            election_timeout_max_ms: Some(max),
        },
        ..node(1)
    };
    let e = err(raft(100, 3000, 3000));
    assert!(e.starts_with("raft.election_timeout_min_ms (--raft-election-timeout-min-ms) is 3000 ms"), "{e}");
    assert!(e.contains("below raft.election_timeout_max_ms, 3000 ms"), "{e}");
    let e = err(raft(3000, 3000, 6000));
    assert!(e.starts_with("raft.heartbeat_ms (--raft-heartbeat-ms) is 3000 ms: it must be below"), "{e}");
    assert!(err(raft(0, 3000, 6000)).contains("at least 1 ms"));
    assert!(validate_node(raft(100, 300, 600)).is_ok());
}

#[test]
fn broker_limits_are_checked() {
    let broker = |b: BrokerSettings| RawSettings { broker: b, ..node(1) };
    let e = err(broker(BrokerSettings { default_replication_factor: Some(0), ..BrokerSettings::default() }));
    assert_eq!(e, "broker.default_replication_factor (--default-replication-factor) must be at least 1");
    let e = err(broker(BrokerSettings { num_partitions: Some(0), ..BrokerSettings::default() }));
    assert!(e.starts_with("broker.num_partitions (--num-partitions) must be at least 1"), "{e}");
    for bytes in [10, 64 << 20] {
        let e = err(broker(BrokerSettings { message_max_bytes: Some(bytes), ..BrokerSettings::default() }));
        assert!(
            e.starts_with(&format!(
                "broker.message_max_bytes (--message-max-bytes) is {bytes}: it must be between 1024 and"
            )),
            "{e}"
        );
    }
    let e = err(broker(BrokerSettings {
        group_min_session_timeout_ms: Some(10_000),
        group_max_session_timeout_ms: Some(5_000),
        ..BrokerSettings::default()
    }));
    assert!(e.contains("must not be above broker.group_max_session_timeout_ms, 5000 ms"), "{e}");
    let e = err(broker(BrokerSettings { offsets_topic_replication_factor: Some(40_000), ..BrokerSettings::default() }));
    assert!(e.contains("40000 is above 32767"), "{e}");
    let e = err(broker(BrokerSettings { replica_lag_time_max_ms: Some(0), ..BrokerSettings::default() }));
    assert_eq!(e, "broker.replica_lag_time_max_ms (--replica-lag-time-max-ms) must be at least 1 ms");
    let ok =
        validate_node(broker(BrokerSettings { replica_lag_time_max_ms: Some(2_500), ..BrokerSettings::default() }))
            .expect("valid");
    assert_eq!(ok.node_config().timing.replica_lag_time_max_ms, 2_500, "reaches the node's ISR rule");
}

#[test]
fn addresses_and_node_ids_are_checked() {
    let e = err(RawSettings { nodes: Some("1=a:1,2=b:2".parse().unwrap()), ..node(4) });
    assert!(e.starts_with("addr (--addr) is not set, and node 4 is not a voter in `nodes` (voters: 1, 2)"), "{e}");
    let learner = RawSettings { addr: Some("d:19201".into()), nodes: Some("1=a:1,2=b:2".parse().unwrap()), ..node(4) };
    assert_eq!(validate_node(learner).unwrap().addr, "d:19201", "a learner names its own address");
    let e = err(RawSettings { addr: Some("elsewhere:1".into()), ..node(1) });
    assert!(e.contains("node 1 is a voter in `nodes` at 127.0.0.1:19201"), "{e}");
    let e = err(RawSettings {
        kafka: KafkaSettings { listen: Some("0.0.0.0:99999".into()), ..Default::default() },
        ..node(1)
    });
    assert_eq!(e, "kafka.listen (--kafka-listen) \"0.0.0.0:99999\": port \"99999\" is not a number from 0 to 65535");
    let e = err(RawSettings { listen: Some("nowhere".into()), ..node(1) });
    assert!(e.contains("\"nowhere\" is not HOST:PORT"), "{e}");
    let e = err(RawSettings { nodes: Some("1=a:0".parse().unwrap()), ..node(1) });
    assert_eq!(e, "nodes (--nodes) node 1: \"a:0\": port 0 cannot be reached");
    assert!(err(node(0)).contains("node id 0 is out of range"));
    assert!(err(node(1 << 31)).contains("node ids are 1 to 2147483647"));
    let e = err(RawSettings { cluster_id: Some(String::new()), ..node(1) });
    assert!(e.starts_with("cluster_id (--cluster-id)"), "{e}");
    assert_eq!("1=a:1,1=b:2".parse::<Voters>(), Err("node 1 appears twice".to_string()));
    assert_eq!("x=a:1".parse::<Voters>(), Err("node id \"x\" is not a number".to_string()));
    let e = err(RawSettings { nodes: Some(Voters::default()), ..node(1) });
    assert_eq!(e, "nodes (--nodes) names no node");
}

#[test]
fn dev_runs_a_node_per_voter_on_consecutive_kafka_ports() {
    let nodes = validate_dev(RawSettings::default(), "d".into(), (9092, 9644)).unwrap();
    let got: Vec<_> = nodes.iter().map(|n| (n.id, n.kafka_listen.as_str(), n.data_dir.clone())).collect();
    assert_eq!(
        got,
        vec![
            (1, "127.0.0.1:9092", PathBuf::from("d/node-1")),
            (2, "127.0.0.1:9093", PathBuf::from("d/node-2")),
            (3, "127.0.0.1:9094", PathBuf::from("d/node-3")),
        ]
    );
    assert!(
        validate_dev(RawSettings::default(), "d".into(), (65535, 9644))
            .unwrap_err()
            .to_string()
            .contains("leaves no port for node 2")
    );
    let e = validate_dev(RawSettings { id: Some(1), ..RawSettings::default() }, "d".into(), (9092, 9644)).unwrap_err();
    assert!(e.to_string().starts_with("id (--id) applies to one node"), "{e}");
    let shared =
        RawSettings { broker: BrokerSettings { num_partitions: Some(4), ..Default::default() }, ..Default::default() };
    assert!(validate_dev(shared, "d".into(), (9092, 9644)).unwrap().iter().all(|n| n.kafka.broker.num_partitions == 4));
}

#[test]
fn flags_and_variables_follow_from_file_keys() {
    assert_eq!(flag_of("raft.election_timeout_min_ms"), "--raft-election-timeout-min-ms");
    assert_eq!(flag_of("broker.message_max_bytes"), "--message-max-bytes");
    assert_eq!(flag_of("kafka.advertised"), "--kafka-advertised");
    assert_eq!(env_of("kafka.listen"), "KEEL_KAFKA_LISTEN");
    assert_eq!(env_of("id"), "KEEL_NODE_ID");
    assert_eq!(env_of("data_dir"), "KEEL_DATA_DIR");
}

/// The dotted keys of a TOML table (`raft.heartbeat_ms`); the entries of `nodes` are values.
fn keys(table: &toml::Table, prefix: &str, out: &mut Vec<String>) {
    for (k, v) in table {
        let key = if prefix.is_empty() { k.clone() } else { format!("{prefix}.{k}") };
        match v {
            toml::Value::Table(t) if key != "nodes" => keys(t, &key, out),
            _ => out.push(key),
        }
    }
}

/// docs/config.md documents every setting: each file key with its flag and variable, and every
/// flag and variable of `keel node` and `keel dev` (a flag added without its documentation
/// fails here).
#[test]
fn every_setting_is_documented_in_docs_config_md() {
    let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/config.md")).unwrap();
    let table: toml::Table = toml::from_str(&toml::to_string(&every_setting()).unwrap()).unwrap();
    let mut all = Vec::new();
    keys(&table, "", &mut all);
    assert_eq!(all.len(), 24, "{all:?}");
    for key in &all {
        let row = format!("| `{key}` | `{}` | `{}` |", flag_of(key), env_of(key));
        assert!(doc.contains(&row), "docs/config.md has no row starting {row}");
    }
    let cli = <crate::cli::Cli as clap::CommandFactory>::command();
    for command in ["node", "dev"] {
        let sub = cli.find_subcommand(command).unwrap();
        for arg in sub.get_arguments() {
            if let Some(long) = arg.get_long() {
                assert!(doc.contains(&format!("`--{long}`")), "`keel {command} --{long}` is not in docs/config.md");
            }
            if let Some(env) = arg.get_env() {
                let env = env.to_string_lossy();
                assert!(doc.contains(&format!("`{env}`")), "`keel {command}`'s {env} is not in docs/config.md");
            }
        }
    }
}
