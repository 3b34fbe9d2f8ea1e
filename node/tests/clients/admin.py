#!/usr/bin/env python3
"""Topic administration through the Kafka protocol, with confluent-kafka's AdminClient.

    admin.py create  --bootstrap B --topic T --partitions 6 --replication-factor 3
        CreateTopics, then waits (Metadata) until every partition has a leader.
    admin.py leaders --bootstrap B --topic T
        Prints the brokers and the leader of each partition.

Both print {"event": "metadata", "brokers": {id: "host:port"}, "leaders": {partition: id}} and
exit 1 if the topic did not get a leader for every partition within --timeout seconds.
"""

import argparse
import sys
import time

from common import emit, require

ck = require("confluent_kafka")
from confluent_kafka.admin import AdminClient, NewTopic  # noqa: E402


def metadata(admin, topic):
    md = admin.list_topics(topic=topic, timeout=5)
    brokers = {b.id: "%s:%d" % (b.host, b.port) for b in md.brokers.values()}
    t = md.topics.get(topic)
    if t is None or t.error is not None:
        return brokers, None, str(t.error) if t is not None else "absent"
    leaders = {p.id: p.leader for p in t.partitions.values()}
    errors = {p.id: str(p.error) for p in t.partitions.values() if p.error is not None}
    return brokers, leaders, errors or None


def wait_leaders(admin, topic, partitions, timeout_s):
    deadline = time.monotonic() + timeout_s
    last = None
    while True:
        try:
            brokers, leaders, errors = metadata(admin, topic)
            last = {"brokers": brokers, "leaders": leaders, "errors": errors}
            if (leaders is not None and (partitions is None or len(leaders) == partitions)
                    and all(l >= 0 for l in leaders.values())):
                return brokers, leaders
        except ck.KafkaException as e:
            last = {"exception": str(e)}
        if time.monotonic() > deadline:
            emit({"event": "error", "error": "no leader for every partition of %s within %ss" % (topic, timeout_s),
                  "last": last})
            sys.exit(1)
        time.sleep(0.2)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("command", choices=["create", "leaders"])
    ap.add_argument("--bootstrap", required=True)
    ap.add_argument("--topic", required=True)
    ap.add_argument("--partitions", type=int)
    ap.add_argument("--replication-factor", type=int, default=3)
    ap.add_argument("--timeout", type=float, default=60)
    a = ap.parse_args()
    admin = AdminClient({"bootstrap.servers": a.bootstrap})
    t0 = time.monotonic()
    if a.command == "create":
        if a.partitions is None:
            ap.error("create needs --partitions")
        futures = admin.create_topics([NewTopic(a.topic, num_partitions=a.partitions,
                                                replication_factor=a.replication_factor)],
                                      operation_timeout=30, request_timeout=30)
        try:
            futures[a.topic].result(timeout=a.timeout)
        except Exception as e:  # the KafkaError is in e.args[0]
            emit({"event": "error", "error": "CreateTopics %s failed: %s" % (a.topic, e)})
            sys.exit(1)
    brokers, leaders = wait_leaders(admin, a.topic, a.partitions, a.timeout)
    emit({"event": "metadata", "topic": a.topic, "brokers": brokers, "leaders": leaders,
          "seconds": round(time.monotonic() - t0, 3)})


if __name__ == "__main__":
    main()
