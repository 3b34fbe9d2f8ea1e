#!/usr/bin/env python3
"""A consumer-group member (confluent-kafka) that reads COUNT messages, commits and leaves.

    group_commit.py --bootstrap B --topic T --group G --count N [--timeout 60]

Joins G (auto commit off, auto.offset.reset=earliest), reads N messages, commits its positions
synchronously, prints {"event": "committed", "p", "o"} for every partition the coordinator
acknowledged and {"event": "summary", "read": N}, then closes the consumer (LeaveGroup), so the
group is left Empty with committed offsets. Exits 1 if N messages did not arrive in --timeout
seconds or the commit failed. node/tests/cli.rs uses it for `keel group`.
"""

import argparse
import sys
import time

from common import emit, require

ck = require("confluent_kafka")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bootstrap", required=True)
    ap.add_argument("--topic", required=True)
    ap.add_argument("--group", required=True)
    ap.add_argument("--count", type=int, required=True)
    ap.add_argument("--timeout", type=float, default=60)
    a = ap.parse_args()
    c = ck.Consumer({
        "bootstrap.servers": a.bootstrap,
        "group.id": a.group,
        "enable.auto.commit": False,
        "auto.offset.reset": "earliest",
        "session.timeout.ms": 6000,
        "heartbeat.interval.ms": 500,
    })
    c.subscribe([a.topic])
    read = 0
    deadline = time.monotonic() + a.timeout
    while read < a.count and time.monotonic() < deadline:
        for m in c.consume(num_messages=a.count - read, timeout=0.5):
            if m.error():
                emit({"event": "error", "error": str(m.error())})
                continue
            read += 1
    ok = read >= a.count
    if ok:
        try:
            for tp in c.commit(asynchronous=False) or []:
                if tp.error is None:
                    emit({"event": "committed", "p": tp.partition, "o": tp.offset})
                else:
                    emit({"event": "commit_failed", "p": tp.partition, "error": str(tp.error)})
                    ok = False
        except ck.KafkaException as e:
            emit({"event": "commit_failed", "error": str(e)})
            ok = False
    c.close()
    emit({"event": "summary", "read": read})
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
