#!/usr/bin/env python3
"""DescribeLogDirs and ElectLeaders through the admin clients people use: kafka-python 3's
KafkaAdminClient (describe_log_dirs, elect_leaders) and confluent-kafka's AdminClient
(elect_leaders).

    leader_apis.py --bootstrap B --topic T [--count 2000] [--timeout 60]

Creates T (one partition, replication factor 3) with kafka-python, produces --count messages
to it with confluent-kafka (librdkafka's default producer settings, acks=all), then:
  - describe_log_dirs (every broker): each broker answers with exactly one log directory, which
    lists T's partition 0 with a size above the bytes produced and offset lag 0 (and, where the
    answer carries them, total bytes > 0 and 0 <= usable <= total);
  - waits until the preferred replica (the first of partition 0's replicas) leads;
  - kafka-python elect_leaders(PREFERRED, {T: [0]}): ELECTION_NOT_NEEDED (84), not raised; for
    {T: [7]}: UNKNOWN_TOPIC_OR_PARTITION (3);
  - confluent-kafka elect_leaders(PREFERRED, [T-0]): ELECTION_NOT_NEEDED; for T-7:
    UNKNOWN_TOPIC_OR_PARTITION; the preferred replica still leads afterwards.

Prints {"event": "leader_apis", ...} and exits 0, or {"event": "error", ...} and exits 1.
"""

import argparse
import sys
import time

from common import emit, require

kafka = require("kafka")
ck = require("confluent_kafka")
from kafka import KafkaAdminClient  # noqa: E402
from kafka.admin import NewTopic  # noqa: E402
from confluent_kafka import ElectionType, Producer, TopicPartition  # noqa: E402
from confluent_kafka.admin import AdminClient  # noqa: E402

ELECTION_NOT_NEEDED = 84
UNKNOWN_TOPIC_OR_PARTITION = 3


def fail(what, **details):
    emit(dict(event="error", error=what, **details))
    sys.exit(1)


def partition0(admin, topic):
    """(replicas, leader) of partition 0 of `topic` as Metadata lists them."""
    for t in admin.describe_topics([topic]):
        if t["name"] == topic and t["error_code"] == 0:
            for p in t["partitions"]:
                if p["partition_index"] == 0 and p["error_code"] == 0:
                    return list(p["replica_nodes"]), p["leader_id"]
    return None, -1


def wait_until(what, timeout_s, check):
    deadline = time.monotonic() + timeout_s
    last = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(0.1)
    fail("%s: not within %ss" % (what, timeout_s), last=repr(last))


def error_code(err):
    """The code of a confluent-kafka per-partition result (a KafkaError or a KafkaException)."""
    if err is None:
        return None
    return err.code() if isinstance(err, ck.KafkaError) else err.args[0].code()


def election_codes(response):
    """{(topic, partition): error code} of a kafka-python ElectLeaders response."""
    codes = {}
    for result in response.replica_election_results:
        for p in result.partition_result:
            codes[(result.topic, p.partition_id)] = p.error_code
    return codes


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bootstrap", required=True)
    ap.add_argument("--topic", required=True)
    ap.add_argument("--count", type=int, default=2000)
    ap.add_argument("--timeout", type=float, default=60)
    args = ap.parse_args()
    topic = args.topic

    admin = KafkaAdminClient(bootstrap_servers=args.bootstrap.split(","), client_id="leader-apis")
    admin.create_topics([NewTopic(topic, num_partitions=1, replication_factor=3)])
    replicas, _ = wait_until("partition 0 has a leader", args.timeout,
                             lambda: (lambda r: r if r[1] >= 0 else None)(partition0(admin, topic)))

    producer = Producer({"bootstrap.servers": args.bootstrap})
    failures = []
    for i in range(args.count):
        producer.produce(topic, key=b"k", value=("value-%06d" % i).encode(), partition=0,
                         on_delivery=lambda err, msg: failures.append(str(err)) if err else None)
        producer.poll(0)
    if producer.flush(args.timeout) != 0 or failures:
        fail("produce", failures=failures[:5])
    produced_bytes = args.count * len(b"value-000000")

    # DescribeLogDirs, every broker.
    dirs = admin.describe_log_dirs()
    if len(dirs) != 3:
        fail("describe_log_dirs: 3 brokers expected", dirs=repr(dirs))
    sizes = {}
    for broker in dirs:
        log_dirs = broker["log_dirs"]
        if len(log_dirs) != 1 or log_dirs[0]["error_code"] != 0 or not log_dirs[0]["log_dir"]:
            fail("describe_log_dirs: one log dir per broker", broker=repr(broker))
        d = log_dirs[0]
        parts = [p for t in d["topics"] if t["name"] == topic for p in t["partitions"]]
        if len(parts) != 1 or parts[0]["partition_index"] != 0 or parts[0]["offset_lag"] != 0:
            fail("describe_log_dirs: partition 0 of the topic", broker=repr(broker))
        if parts[0]["partition_size"] < produced_bytes:
            fail("describe_log_dirs: partition size below the bytes produced", broker=repr(broker))
        if "total_bytes" in d and not (d["total_bytes"] > 0 and 0 <= d["usable_bytes"] <= d["total_bytes"]):
            fail("describe_log_dirs: volume sizes", broker=repr(broker))
        sizes[broker["broker"]] = parts[0]["partition_size"]

    # The nodes hand leadership to the preferred replica by themselves once it settles.
    preferred = replicas[0]
    wait_until("the preferred replica %d leads" % preferred, args.timeout,
               lambda: partition0(admin, topic)[1] == preferred)

    r = admin.elect_leaders(0, {topic: [0]})
    if election_codes(r) != {(topic, 0): ELECTION_NOT_NEEDED}:
        fail("kafka-python elect_leaders: ELECTION_NOT_NEEDED expected", response=repr(r))
    r = admin.elect_leaders(0, {topic: [7]}, raise_errors=False)
    if election_codes(r) != {(topic, 7): UNKNOWN_TOPIC_OR_PARTITION}:
        fail("kafka-python elect_leaders: UNKNOWN_TOPIC_OR_PARTITION expected", response=repr(r))

    cadmin = AdminClient({"bootstrap.servers": args.bootstrap})
    result = cadmin.elect_leaders(ElectionType.PREFERRED, [TopicPartition(topic, 0)]).result(args.timeout)
    got = {(tp.topic, tp.partition): e for tp, e in result.items()}
    err = got.get((topic, 0))
    if error_code(err) != ck.KafkaError.ELECTION_NOT_NEEDED:
        fail("confluent elect_leaders: ELECTION_NOT_NEEDED expected", result=repr(got))
    result = cadmin.elect_leaders(ElectionType.PREFERRED, [TopicPartition(topic, 7)]).result(args.timeout)
    err = {(tp.topic, tp.partition): e for tp, e in result.items()}.get((topic, 7))
    if error_code(err) != ck.KafkaError.UNKNOWN_TOPIC_OR_PART:
        fail("confluent elect_leaders: UNKNOWN_TOPIC_OR_PARTITION expected", result=repr(err))
    if partition0(admin, topic)[1] != preferred:
        fail("the preferred replica no longer leads")

    emit(dict(event="leader_apis", sizes=sizes, preferred=preferred))


if __name__ == "__main__":
    main()
