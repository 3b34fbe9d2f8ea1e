#!/usr/bin/env python3
"""A consumer-group member with confluent-kafka (librdkafka) that commits after processing.

    group_consume.py consume --bootstrap B --topic T --group G [--session-timeout-ms 6000]
    group_consume.py coordinator --bootstrap B --group G

`consume` joins group G (range assignor, auto commit off, auto.offset.reset=earliest) and runs
until killed. Every message it processes is printed as {"event": "msg", "p", "o", "v"}; after
each batch it commits its positions synchronously and prints {"event": "committed", "p", "o"}
for every partition whose commit the coordinator acknowledged (a refused commit prints
{"event": "commit_failed"}). Assignments are printed as {"event": "assigned", "partitions"}.

`coordinator` prints {"event": "coordinator", "id": N}: the broker coordinating G
(DescribeGroups through the admin client).
"""

import argparse
import sys
import time

from common import emit, require

ck = require("confluent_kafka")
admin_mod = require("confluent_kafka.admin")


def consume(a):
    def on_assign(consumer, partitions):
        emit({"event": "assigned", "partitions": sorted(p.partition for p in partitions)})

    def on_revoke(consumer, partitions):
        emit({"event": "revoked", "partitions": sorted(p.partition for p in partitions)})

    c = ck.Consumer({
        "bootstrap.servers": a.bootstrap,
        "group.id": a.group,
        "client.id": a.name,
        "enable.auto.commit": False,
        "auto.offset.reset": "earliest",
        "session.timeout.ms": a.session_timeout_ms,
        "heartbeat.interval.ms": 500,
        "partition.assignment.strategy": "range",
        "topic.metadata.refresh.interval.ms": 2000,
    })
    c.subscribe([a.topic], on_assign=on_assign, on_revoke=on_revoke)
    emit({"event": "started", "name": a.name})
    while True:
        msgs = c.consume(num_messages=100, timeout=0.5)
        processed = False
        for m in msgs:
            if m.error():
                emit({"event": "error", "error": str(m.error())})
                continue
            emit({"event": "msg", "p": m.partition(), "o": m.offset(), "v": m.value().decode()})
            processed = True
        if not processed:
            continue
        try:
            for tp in c.commit(asynchronous=False) or []:
                if tp.error is None:
                    emit({"event": "committed", "p": tp.partition, "o": tp.offset})
                else:
                    emit({"event": "commit_failed", "p": tp.partition, "error": str(tp.error)})
        except ck.KafkaException as e:
            emit({"event": "commit_failed", "error": str(e)})


def coordinator(a):
    admin = admin_mod.AdminClient({"bootstrap.servers": a.bootstrap})
    deadline = time.monotonic() + a.timeout
    last = None
    while time.monotonic() < deadline:
        try:
            d = admin.describe_consumer_groups([a.group])[a.group].result(timeout=10)
            emit({"event": "coordinator", "id": d.coordinator.id, "state": str(d.state)})
            return 0
        except Exception as e:  # retried: the coordinator may be moving
            last = str(e)
            time.sleep(0.5)
    emit({"event": "error", "error": last})
    return 1


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("command", choices=["consume", "coordinator"])
    ap.add_argument("--bootstrap", required=True)
    ap.add_argument("--topic")
    ap.add_argument("--group", required=True)
    ap.add_argument("--name", default="consumer")
    ap.add_argument("--session-timeout-ms", type=int, default=6000)
    ap.add_argument("--timeout", type=float, default=60)
    a = ap.parse_args()
    if a.command == "consume":
        consume(a)
        return 0
    return coordinator(a)


if __name__ == "__main__":
    sys.exit(main())
