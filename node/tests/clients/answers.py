#!/usr/bin/env python3
"""Kafka's answers as confluent-kafka (librdkafka) at its default settings sees them.

    answers.py create   --bootstrap B --topic T --partitions 1 --replication-factor 4
        CreateTopics; prints {"event": "create", "code": C, "name": N, "message": M} (code 0: created).
    answers.py metadata --bootstrap B --topic T
        Metadata of T (the AdminClient's, which does not auto-create); prints {"event": "metadata",
        "code": C, "name": N, "partitions": {id: {"leader", "replicas", "isr", "code"}}}.
    answers.py produce  --bootstrap B --topic T
        One message with a default Producer, flushed; prints {"event": "delivery", "code": C,
        "name": N} (code 0: acknowledged).

Codes are Kafka's (librdkafka's names: INVALID_TOPIC_EXCEPTION is TOPIC_EXCEPTION). The caller
bounds the run time: a client retrying a refusal until its own timeout shows as a run killed.
"""

import argparse

from common import emit, require

ck = require("confluent_kafka")
from confluent_kafka.admin import AdminClient, NewTopic  # noqa: E402


def err(e):
    if e is None:
        return {"code": 0, "name": None}
    return {"code": e.code(), "name": e.name(), "message": e.str()}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("command", choices=["create", "metadata", "produce"])
    ap.add_argument("--bootstrap", required=True)
    ap.add_argument("--topic", required=True)
    ap.add_argument("--partitions", type=int, default=1)
    ap.add_argument("--replication-factor", type=int, default=-1)
    a = ap.parse_args()
    if a.command == "create":
        admin = AdminClient({"bootstrap.servers": a.bootstrap})
        fs = admin.create_topics([NewTopic(a.topic, num_partitions=a.partitions,
                                           replication_factor=a.replication_factor)], request_timeout=30)
        try:
            fs[a.topic].result(timeout=60)
            emit({"event": "create", **err(None)})
        except ck.KafkaException as e:
            emit({"event": "create", **err(e.args[0])})
    elif a.command == "metadata":
        admin = AdminClient({"bootstrap.servers": a.bootstrap})
        md = admin.list_topics(topic=a.topic, timeout=20)
        t = md.topics[a.topic]
        parts = {p.id: {"leader": p.leader, "replicas": p.replicas, "isr": p.isrs, "code": err(p.error)["code"]}
                 for p in t.partitions.values()}
        emit({"event": "metadata", **err(t.error), "partitions": parts})
    else:
        p = ck.Producer({"bootstrap.servers": a.bootstrap})
        result = {}

        def delivered(e, _msg):
            result.update(err(e))

        p.produce(a.topic, b"v", callback=delivered)
        p.flush(120)
        emit({"event": "delivery", **(result or {"code": None, "name": "not delivered within the flush"})})


if __name__ == "__main__":
    main()
