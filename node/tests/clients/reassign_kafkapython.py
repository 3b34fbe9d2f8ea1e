#!/usr/bin/env python3
"""Partition reassignment through the Kafka protocol, with kafka-python's KafkaAdminClient
(alter_partition_reassignments: AlterPartitionReassignments; list_partition_reassignments:
ListPartitionReassignments; both sent to the controller).

    reassign_kafkapython.py --bootstrap B --topic T [--timeout 60]

Creates T (one partition, replication factor 2), moves partition 0 to the broker that holds no
replica followed by the first current replica, lists reassignments until partition 0 is no
longer listed (checking what is listed meanwhile: the target then the leaving replica, adding,
removing), and waits until Metadata shows the new replica set. Then the refusals, each with its
Kafka error: an unknown broker id, an unknown partition, an unknown topic, and a cancellation
when nothing moves; nothing may be listed after them.

Prints {"event": "reassigned", ...} and exits 0, or prints {"event": "error", ...} and exits 1.
"""

import argparse
import sys
import time

from common import emit, require

kafka = require("kafka")
from kafka import KafkaAdminClient  # noqa: E402
from kafka.structs import TopicPartition  # noqa: E402

Errors = kafka.errors


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
    """Calls check() until it answers something truthy; fails after timeout_s."""
    deadline = time.monotonic() + timeout_s
    last = None
    while time.monotonic() < deadline:
        last = check()
        if last and last[0]:
            return last
        time.sleep(0.05)
    fail("%s: not within %ss" % (what, timeout_s), last=repr(last))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bootstrap", required=True)
    ap.add_argument("--topic", required=True)
    ap.add_argument("--timeout", type=float, default=60)
    a = ap.parse_args()
    admin = KafkaAdminClient(bootstrap_servers=a.bootstrap.split(","), client_id="reassign-kafkapython")
    t0 = time.monotonic()

    admin.create_topics({a.topic: {"num_partitions": 1, "replication_factor": 2}})
    before, _ = wait_until("a leader for %s-0" % a.topic, a.timeout,
                           lambda: (lambda r, l: (r if l >= 0 else None, l))(*partition0(admin, a.topic)))
    brokers = sorted(b["broker_id"] for b in admin.describe_cluster()["brokers"])
    outsiders = [b for b in brokers if b not in before]
    if len(before) != 2 or not outsiders:
        fail("expected 2 replicas and a broker without one", replicas=before, brokers=brokers)
    target = [outsiders[0], before[0]]
    leaving = [b for b in before if b not in target]
    tp = TopicPartition(a.topic, 0)

    result = admin.alter_partition_reassignments({tp: target})
    if result != {tp: None}:
        fail("AlterPartitionReassignments refused the move", result=repr(result))
    seen = []
    deadline = time.monotonic() + a.timeout
    while True:
        listed = admin.list_partition_reassignments()
        if tp not in listed:
            break
        moving = listed[tp]
        expected = {"replicas": target + leaving, "adding_replicas": [outsiders[0]], "removing_replicas": leaving}
        if moving != expected:
            fail("ListPartitionReassignments lists something else", listed=moving, expected=expected)
        seen.append(round(time.monotonic() - t0, 3))
        if time.monotonic() > deadline:
            fail("still moving after %ss" % a.timeout, listed=moving)
        time.sleep(0.05)
    wait_until("Metadata showing %s" % target, a.timeout,
               lambda: (lambda r, l: (r == target and l in target, r))(*partition0(admin, a.topic)))

    refusals = {
        TopicPartition(a.topic, 0): ([99, target[0]], Errors.InvalidReplicationAssignmentError),
        TopicPartition(a.topic, 7): ([target[0]], Errors.UnknownTopicOrPartitionError),
        TopicPartition("no-such-topic", 0): ([target[0]], Errors.UnknownTopicOrPartitionError),
    }
    result = admin.alter_partition_reassignments({tp: replicas for tp, (replicas, _) in refusals.items()})
    got = {str(tp): getattr(result.get(tp), "__name__", repr(result.get(tp))) for tp in refusals}
    want = {str(tp): error.__name__ for tp, (_, error) in refusals.items()}
    if got != want:
        fail("refusals", got=got, want=want)
    cancel = admin.alter_partition_reassignments({tp: None})
    if cancel != {tp: Errors.NoReassignmentInProgressError}:
        fail("cancelling when nothing moves", result=repr(cancel))
    if admin.list_partition_reassignments():
        fail("the refusals started a move", listed=repr(admin.list_partition_reassignments()))
    emit({"event": "reassigned", "topic": a.topic, "before": before, "after": target,
          "listed_in_flight": len(seen), "refusals": got, "seconds": round(time.monotonic() - t0, 3)})


if __name__ == "__main__":
    main()
