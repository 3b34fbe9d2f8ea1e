//! The status page in a real browser: a `keel dev` process (three nodes) is loaded in headless
//! Chromium (Debian's `chromium`, which `.ci/run` installs), and the DOM after the page's script
//! ran must name the three nodes, the topic's partitions and their leaders (as Kafka's Metadata
//! names them) and their high watermarks; after more records are produced, a new load shows the
//! new high watermark — the page renders what `/status.json` says now, not what was served with
//! the HTML (docs/observability.md). Without Chromium the test fails: it is not skipped.
#![cfg(not(madsim))]

use std::collections::BTreeMap;
use std::process::Child;
use std::process::Command;
use std::process::Stdio;
use std::time::Duration;
use std::time::Instant;

use bytes::Bytes;
use kafka_protocol::messages::CreateTopicsRequest;
use kafka_protocol::messages::create_topics_request::CreatableTopic;
use keel_core::batch;
use keel_node::kafka_client::KafkaClient;
use keel_node::kafka_client::topic_name;

const TOPIC: &str = "orders";
const PARTITIONS: i32 = 3;
const RECORDS_PER_BATCH: u64 = 4;
const TIMEOUT: Duration = Duration::from_secs(10);
/// How long one Chromium run may take before it is killed.
const CHROMIUM_RUN_MAX: Duration = Duration::from_secs(90);

/// The browser: `$KEEL_CHROMIUM`, else Debian's `chromium`.
fn chromium() -> String {
    std::env::var("KEEL_CHROMIUM").unwrap_or_else(|_| "chromium".to_string())
}

/// Fails the test, clearly, when the browser is missing.
fn require_chromium() {
    let found = Command::new(chromium()).arg("--version").stdout(Stdio::null()).stderr(Stdio::null()).status();
    assert!(
        found.is_ok_and(|s| s.success()),
        "headless Chromium is required for the status page test but `{} --version` failed: install it \
         (`apt-get install -y chromium`, as .ci/run does) or point KEEL_CHROMIUM at a Chromium binary",
        chromium()
    );
}

/// A first port `p` such that `p..p+n` are all free on loopback.
fn free_ports(n: u16) -> u16 {
    for _ in 0..200 {
        let probe = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let base = probe.local_addr().expect("addr").port();
        drop(probe);
        if base.checked_add(n).is_none() {
            continue;
        }
        let all: Vec<_> = (0..n).map(|i| std::net::TcpListener::bind(("127.0.0.1", base + i))).collect();
        if all.iter().all(|l| l.is_ok()) {
            return base;
        }
    }
    panic!("no {n} consecutive free ports");
}

/// A `keel dev` process, killed on drop.
struct Dev {
    child: Child,
    data: tempfile::TempDir,
    kafka: Vec<String>,
    http: String,
}

impl Dev {
    fn start() -> Dev {
        let data = tempfile::tempdir().expect("tempdir");
        let kafka_port = free_ports(3);
        let http_port = free_ports(3);
        let nodes = (1..=3)
            .map(|id| {
                let port = free_ports(1);
                format!("{id}=127.0.0.1:{port}")
            })
            .collect::<Vec<_>>()
            .join(",");
        let log = std::fs::File::create(data.path().join("dev.log")).expect("log file");
        let child = Command::new(env!("CARGO_BIN_EXE_keel"))
            .args(["dev", "--data-dir"])
            .arg(data.path().join("data"))
            .args(["--kafka-port", &kafka_port.to_string(), "--http-port", &http_port.to_string()])
            .args(["--nodes", &nodes, "--cluster-id", "keel-status-page"])
            .args(["--raft-heartbeat-ms", "200", "--raft-election-timeout-min-ms", "1000"])
            .args(["--raft-election-timeout-max-ms", "2000"])
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("keel dev starts");
        Dev {
            child,
            data,
            kafka: (0..3).map(|i| format!("127.0.0.1:{}", kafka_port + i)).collect(),
            http: format!("127.0.0.1:{http_port}"),
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.data.path().join("dev.log")).unwrap_or_default()
    }
}

impl Drop for Dev {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Loads `url` in headless Chromium and answers the DOM after its scripts ran (5 s of virtual
/// time: the page polls `/status.json` more than once).
fn dump_dom(url: &str, profile: &std::path::Path) -> String {
    let out_path = profile.with_extension("dom.html");
    let out = std::fs::File::create(&out_path).expect("dom file");
    let mut child = Command::new(chromium())
        .args(["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run"])
        .args(["--disable-background-networking", "--disable-component-update", "--disable-sync"])
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(["--virtual-time-budget=5000", "--dump-dom", url])
        .stdout(out)
        .stderr(Stdio::null())
        .spawn()
        .expect("chromium starts");
    let started = Instant::now();
    loop {
        if child.try_wait().expect("chromium status").is_some() {
            break;
        }
        if started.elapsed() > CHROMIUM_RUN_MAX {
            let _ = child.kill();
            let _ = child.wait();
            panic!("chromium did not finish loading {url} within {CHROMIUM_RUN_MAX:?}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    std::fs::read_to_string(&out_path).expect("dom")
}

/// The text of the cell of class `class` in the table row with id `row`, if both are in `dom`.
fn cell(dom: &str, row: &str, class: &str) -> Option<String> {
    let start = dom.find(&format!("<tr id=\"{row}\""))?;
    let row_html = &dom[start..start + dom[start..].find("</tr>")?];
    let at = row_html.find(&format!("class=\"{class}\">"))? + class.len() + 9;
    Some(row_html[at..at + row_html[at..].find("</td>")?].to_string())
}

async fn create_topic(client: &mut KafkaClient, dev: &Dev) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        let request = CreateTopicsRequest::default().with_timeout_ms(5000).with_topics(vec![
            CreatableTopic::default()
                .with_name(topic_name(TOPIC))
                .with_num_partitions(PARTITIONS)
                .with_replication_factor(3),
        ]);
        if let Ok((_, answer)) = client.request_any(5, &request, TIMEOUT).await
            && answer.topics.iter().all(|t| t.error_code == 0 || t.error_code == 36)
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    panic!("topic {TOPIC} never created; keel dev log:\n{}", dev.log());
}

/// Produces `batches` batches to `partition`, each to the leader Metadata names; answers that
/// partition's high watermark (the end of the last acknowledged batch).
async fn produce(client: &mut KafkaClient, partition: i32, batches: u64) -> u64 {
    let mut acknowledged = 0;
    let mut high_watermark = 0;
    let deadline = Instant::now() + Duration::from_secs(60);
    while acknowledged < batches {
        assert!(Instant::now() < deadline, "partition {partition}: {acknowledged} of {batches} batches acknowledged");
        let Ok(Some(leader)) = client.leader(TOPIC, partition, TIMEOUT).await else {
            tokio::time::sleep(Duration::from_millis(200)).await;
            continue;
        };
        let mut b = batch::BatchBuilder::new(1_700_000_000_000);
        for r in 0..RECORDS_PER_BATCH {
            b.push(1_700_000_000_000 + r as i64, None, Some(format!("{partition}-{acknowledged}-{r}").as_bytes()));
        }
        match client.produce(&leader.addr, TOPIC, partition, Bytes::from(b.build()), 5000, TIMEOUT).await {
            Ok(a) if a.error_code == 0 => {
                acknowledged += 1;
                high_watermark = a.base_offset as u64 + RECORDS_PER_BATCH;
            }
            _ => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
    high_watermark
}

/// Leaders of the topic's partitions as Kafka's Metadata names them.
async fn leaders(client: &mut KafkaClient) -> BTreeMap<i32, i32> {
    let mut out = BTreeMap::new();
    for p in 0..PARTITIONS {
        if let Ok(Some(l)) = client.leader(TOPIC, p, TIMEOUT).await {
            out.insert(p, l.id);
        }
    }
    out
}

/// Loads the page until `check` accepts its DOM (leadership and high watermarks settle within
/// a Raft heartbeat or a leader handoff); fails with the last DOM and problem.
async fn until_page_shows(
    dev: &Dev,
    client: &mut KafkaClient,
    what: &str,
    check: impl Fn(&str, &BTreeMap<i32, i32>) -> Result<(), String>,
) {
    let profiles = tempfile::tempdir().expect("profile dir");
    let url = format!("http://{}/", dev.http);
    let mut last = (String::new(), String::new());
    for attempt in 0..15 {
        let known = leaders(client).await;
        let profile = profiles.path().join(format!("profile-{attempt}"));
        let url = url.clone();
        let dom = tokio::task::spawn_blocking(move || dump_dom(&url, &profile)).await.expect("chromium run");
        match check(&dom, &known) {
            Ok(()) => return,
            Err(problem) => last = (problem, dom),
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    panic!("the status page never showed {what}: {}\nlast DOM:\n{}", last.0, last.1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_page_in_chromium_shows_nodes_leaders_and_live_high_watermarks() {
    require_chromium();
    let dev = Dev::start();
    let mut client = KafkaClient::new("status-page-test", dev.kafka.clone(), 0);
    create_topic(&mut client, &dev).await;
    let mut high_watermarks = BTreeMap::new();
    for p in 0..PARTITIONS {
        high_watermarks.insert(p, produce(&mut client, p, 2).await);
    }

    let first = high_watermarks.clone();
    until_page_shows(&dev, &mut client, "the nodes, partitions, leaders and high watermarks", |dom, leaders| {
        // The script re-polls by itself: within the 5 s of virtual time it rendered more than once.
        let polls = dom.find("<span id=\"polls\">").and_then(|i| {
            let rest = &dom[i + 17..];
            rest[..rest.find('<')?].parse::<u32>().ok()
        });
        if polls.is_none_or(|n| n < 2) {
            return Err(format!("the page rendered {polls:?} times, not refreshing itself"));
        }
        for id in 1..=3 {
            if cell(dom, &format!("node-{id}"), "live").as_deref() != Some("yes") {
                return Err(format!("node {id} is not listed live"));
            }
        }
        for p in 0..PARTITIONS {
            let row = format!("partition-{TOPIC}-{p}");
            let shown = cell(dom, &row, "num leader");
            let leader = leaders.get(&p).map(|l| l.to_string());
            if shown.is_none() || shown != leader {
                return Err(format!("partition {p}: page shows leader {shown:?}, Metadata names {leader:?}"));
            }
            // At least what was acknowledged (a new leader's first entry may add to it).
            let hw = cell(dom, &row, "num hw").and_then(|h| h.parse::<u64>().ok());
            if hw.is_none_or(|hw| hw < first[&p]) {
                return Err(format!("partition {p}: page shows high watermark {hw:?}, wanted {}", first[&p]));
            }
        }
        Ok(())
    })
    .await;

    // Produce more to partition 0: a fresh load renders the new high watermark from
    // /status.json (the HTML itself is the same static page every time).
    let grown = produce(&mut client, 0, 3).await;
    assert!(grown > first[&0], "the high watermark grew: {grown} > {}", first[&0]);
    until_page_shows(&dev, &mut client, "the new high watermark", |dom, _| {
        let hw = cell(dom, &format!("partition-{TOPIC}-0"), "num hw").and_then(|h| h.parse::<u64>().ok());
        if hw.is_some_and(|hw| hw >= grown) {
            Ok(())
        } else {
            Err(format!("high watermark {hw:?}, wanted at least {grown}"))
        }
    })
    .await;
}

#[test]
fn cell_reads_a_rendered_row() {
    let dom = "<tbody><tr id=\"partition-orders-0\"><td class=\"topic\">orders</td>\
               <td class=\"num leader\">2</td><td class=\"num hw\">8</td></tr>\
               <tr id=\"partition-orders-1\"><td class=\"num leader\">3</td></tr></tbody>";
    assert_eq!(cell(dom, "partition-orders-0", "num leader").as_deref(), Some("2"));
    assert_eq!(cell(dom, "partition-orders-0", "num hw").as_deref(), Some("8"));
    assert_eq!(cell(dom, "partition-orders-1", "num hw"), None, "a cell of another row is not taken");
    assert_eq!(cell(dom, "partition-orders-2", "num leader"), None);
}
