#!/usr/bin/env python3
"""Produces --count keyed messages with kafka-python, acks='all', and records every acknowledgement.

    produce_kafkapython.py --bootstrap B --topic T --count N --out ACKED.jsonl
        [--keys 100] [--client kafkapython] [--max-in-flight 5] [--delivery-timeout-ms 120000]

Same messages, output file and summary as produce_confluent.py. kafka-python 3 turns idempotence
on by default, which needs InitProducerId; Keel has no idempotent producer yet, so it is off here
(enable_idempotence=False) and retries are on.
"""

import argparse
import logging
import sys
import threading
import time

from common import Progress, acked_line, emit, message, require

kafka = require("kafka")


class RetryLog(logging.Handler):
    """Counts kafka-python's "retrying" warnings (its sender logs one per retried batch): without
    idempotence a retry may store a batch twice or behind a later one."""

    def __init__(self):
        super().__init__(logging.WARNING)
        self.retries = 0
        self.first = []

    def emit(self, record):
        text = record.getMessage()
        if "retrying" in text.lower():
            self.retries += 1
            if len(self.first) < 3:
                self.first.append(text)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bootstrap", required=True)
    ap.add_argument("--topic", required=True)
    ap.add_argument("--count", type=int, required=True)
    ap.add_argument("--keys", type=int, default=100)
    ap.add_argument("--client", default="kafkapython")
    ap.add_argument("--out", required=True)
    ap.add_argument("--max-in-flight", type=int, default=5)
    ap.add_argument("--delivery-timeout-ms", type=int, default=120_000)
    ap.add_argument("--timeout", type=float, default=300, help="seconds for everything")
    a = ap.parse_args()
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    retry_log = RetryLog()
    logging.getLogger("kafka").addHandler(retry_log)

    lock = threading.Lock()  # callbacks run on the sender thread
    acked_lines = []
    errors = []
    failed = 0

    def on_ack(client, key, seq, meta):  # kafka-python passes the result last
        with lock:
            acked_lines.append(acked_line(client, key, seq, meta.partition, meta.offset))

    def on_error(key, value, exc):
        nonlocal failed
        with lock:
            failed += 1
            if len(errors) < 5:
                errors.append({"key": key, "value": value, "error": repr(exc)})

    p = kafka.KafkaProducer(
        bootstrap_servers=a.bootstrap.split(","),
        client_id="keel-test-" + a.client,
        acks="all",
        enable_idempotence=False,
        linger_ms=5,
        retries=1_000_000,
        retry_backoff_ms=100,
        max_in_flight_requests_per_connection=a.max_in_flight,
        request_timeout_ms=10_000,
        delivery_timeout_ms=a.delivery_timeout_ms,
        metadata_max_age_ms=5_000,
    )
    progress = Progress()
    t0 = time.monotonic()
    for i in range(a.count):
        key, value, seq = message(a.client, i, a.keys)
        f = p.send(a.topic, key=key.encode(), value=value.encode())
        f.add_callback(on_ack, a.client, key, seq)
        f.add_errback(on_error, key, value)
        with lock:
            acked, fails = len(acked_lines), failed
        progress.maybe(sent=i + 1, acked=acked, failed=fails)
    p.flush(timeout=max(1.0, a.timeout - (time.monotonic() - t0)))
    p.close(timeout=5)
    with lock:
        acked, fails = len(acked_lines), failed
        with open(a.out, "w") as out:
            out.writelines(acked_lines)
    emit({"event": "summary", "client": a.client, "count": a.count, "acked": acked, "failed": fails,
          "unanswered": a.count - acked - fails, "errors": errors,
          "retries": retry_log.retries, "first_retries": retry_log.first,
          "seconds": round(time.monotonic() - t0, 3)})
    sys.exit(0 if acked == a.count else 1)


if __name__ == "__main__":
    main()
