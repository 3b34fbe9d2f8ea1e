#!/usr/bin/env python3
"""A librdkafka consumer (confluent-kafka, default settings) that keeps consuming across a leader
change. After a leader change librdkafka validates its position with OffsetForLeaderEpoch
(KIP-320) before it fetches again; this checks that it is answered and that consumption goes on.

    consume_failover.py --bootstrap B --topic T --count N --go FILE [--timeout 120]

Produces N messages ("value-<i>") to partition 0 of T (acks=all), assigns T-0 from the
beginning and consumes N/2 of them, prints {"event": "half"}, waits until FILE exists (the test
kills the leader and waits for a new one meanwhile), then consumes the rest and stays until its position has been validated. Checks: the values
are exactly value-0 .. value-(N-1), in order, each once; offsets strictly increase; the consumer
validated its position with OffsetForLeaderEpoch after the leader change (librdkafka's debug
log names each request it sends and each validation that succeeds). Prints {"event": "consumed", ...}; exits 1 on a violation.
"""

import argparse
import logging
import os
import sys
import time

from common import emit, require

ck = require("confluent_kafka")
from confluent_kafka import Consumer, Producer, TopicPartition, OFFSET_BEGINNING  # noqa: E402


class Counter(logging.Handler):
    """Counts librdkafka log lines about OffsetForLeaderEpoch."""

    def __init__(self):
        super().__init__()
        self.sent = 0
        self.validated = 0
        self.lines = []

    def emit(self, record):
        line = record.getMessage()
        low = line.lower()
        if "offsetforleaderepoch" in low or "truncat" in low or "reset" in low or "validat" in low:
            self.lines.append(line)
            if "Sent OffsetForLeaderEpochRequest" in line:
                self.sent += 1
            if "validation succeeded" in line:
                self.validated += 1


def fail(what, **details):
    emit(dict(event="error", error=what, **details))
    sys.exit(1)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bootstrap", required=True)
    ap.add_argument("--topic", required=True)
    ap.add_argument("--count", type=int, required=True)
    ap.add_argument("--go", required=True)
    ap.add_argument("--timeout", type=float, default=120)
    args = ap.parse_args()

    producer = Producer({"bootstrap.servers": args.bootstrap})
    failures = []
    for i in range(args.count):
        producer.produce(args.topic, value=("value-%d" % i).encode(), partition=0,
                         on_delivery=lambda err, msg: failures.append(str(err)) if err else None)
        producer.poll(0)
    if producer.flush(args.timeout) != 0 or failures:
        fail("produce", failures=failures[:5])

    counter = Counter()
    logger = logging.getLogger("librdkafka")
    logger.setLevel(logging.DEBUG)
    logger.addHandler(counter)
    errors = []
    consumer = Consumer({
        "bootstrap.servers": args.bootstrap,
        "group.id": "consume-failover",
        "enable.auto.commit": False,
        "debug": "protocol,consumer,fetch",
        "error_cb": lambda e: errors.append(str(e)),
    }, logger=logger)
    consumer.assign([TopicPartition(args.topic, 0, OFFSET_BEGINNING)])
    values, offsets = [], []
    deadline = time.monotonic() + args.timeout
    half = args.count // 2
    waited = False
    while len(values) < args.count:
        if time.monotonic() > deadline:
            fail("timeout", consumed=len(values), errors=errors[:5], epoch_log=counter.lines[-12:])
        if len(values) >= half and not waited:
            emit(dict(event="half", consumed=len(values), offset=offsets[-1]))
            while not os.path.exists(args.go):
                # Not polled meanwhile: a poll would hand over (and this loop drop) a message.
                time.sleep(0.1)
                if time.monotonic() > deadline:
                    fail("no go file")
            waited = True
        msgs = consumer.consume(num_messages=50 if not waited else 500, timeout=0.5)
        for m in msgs:
            if m.error():
                if m.error().code() == ck.KafkaError._PARTITION_EOF:
                    continue
                fail("consume error", error=str(m.error()))
            values.append(m.value().decode())
            offsets.append(m.offset())
            if not waited and len(values) >= half:
                break
        if not waited and len(values) > half:
            # Consumed past the half mark within one batch: fine, the rest still comes after.
            pass
    # The leader change reaches the consumer through a metadata refresh, which may come after it
    # has handed over every message it had fetched: it stays until it has validated its position.
    while counter.validated == 0 and time.monotonic() < deadline:
        m = consumer.poll(0.2)
        if m is not None and not m.error():
            fail("a message beyond the count", offset=m.offset())
    consumer.close()
    want = ["value-%d" % i for i in range(args.count)]
    if values != want:
        bad = next(i for i, (a, b) in enumerate(zip(values, want)) if a != b) if values[:len(want)] != want else len(want)
        fail("values out of order, missing or repeated", first_bad=bad, got=values[bad:bad + 3], want=want[bad:bad + 3])
    if any(b <= a for a, b in zip(offsets, offsets[1:])):
        fail("offsets do not increase")
    failed = [l for l in counter.lines if "rror" in l or "truncat" in l.lower()]
    emit(dict(event="consumed", count=len(values), first_offset=offsets[0], last_offset=offsets[-1],
              epoch_requests=counter.sent, epoch_validations=counter.validated, epoch_log=failed[:5],
              client_errors=errors[:5]))
    if counter.sent == 0 or counter.validated == 0:
        fail("the consumer never validated its position with OffsetForLeaderEpoch", epoch_log=counter.lines[-12:])


if __name__ == "__main__":
    main()
