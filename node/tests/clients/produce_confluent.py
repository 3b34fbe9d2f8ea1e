#!/usr/bin/env python3
"""Produces --count keyed messages with confluent-kafka (librdkafka), acks=all, and records every
delivery report.

    produce_confluent.py --bootstrap B --topic T --count N --out ACKED.jsonl
        [--keys 100] [--client confluent] [--rate MSGS_PER_S] [--max-in-flight 5]
        [--message-timeout-ms 120000] [--idempotent] [--value-bytes N] [--librdkafka-defaults]

Message i has key k<i % keys> and value "<client>:k<i % keys>:<i // keys>" (common.message).
--value-bytes N pads each value to N bytes with a fourth field ":xxx…" (common.parse_value
ignores it). --librdkafka-defaults leaves every producer setting at librdkafka's default but
acks=all (linger.ms 5, batch.size 1 MB, no idempotence, a million requests in flight: what a
user gets), ignoring --max-in-flight and --message-timeout-ms.

Acknowledged records go to --out with the partition and offset of their delivery report; failed
ones are counted and the first few printed. Idempotence is off unless --idempotent, so a retried
batch may be stored twice; --max-in-flight 1 keeps retries from reordering batches. With
--idempotent (enable.idempotence=true: InitProducerId, sequence numbers, up to 5 requests in
flight) every message must be stored exactly once and in order, retries or not.

Prints progress lines while producing and one summary line; exits 1 unless every message was
acknowledged before --timeout.
"""

import argparse
import json
import os
import sys
import time

from common import Pacer, Progress, acked_line, emit, message, parse_value, require

ck = require("confluent_kafka")


def request_stats(text):
    """Retries and failed requests, from librdkafka's statistics: without idempotence a retry may
    store a batch twice or behind a later one, so a test that asserts exactly-once order needs
    these at 0 (and a failure report needs them)."""
    if not text:
        return {}
    brokers = json.loads(text).get("brokers", {}).values()
    return {"retries": sum(b.get("txretries", 0) for b in brokers),
            "request_errors": sum(b.get("txerrs", 0) for b in brokers),
            "request_timeouts": sum(b.get("req_timeouts", 0) for b in brokers)}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bootstrap", required=True)
    ap.add_argument("--topic", required=True)
    ap.add_argument("--count", type=int, required=True)
    ap.add_argument("--keys", type=int, default=100)
    ap.add_argument("--client", default="confluent")
    ap.add_argument("--out", required=True)
    ap.add_argument("--rate", type=float, default=0, help="messages per second, 0 = unpaced")
    ap.add_argument("--max-in-flight", type=int, default=5)
    ap.add_argument("--message-timeout-ms", type=int, default=120_000)
    ap.add_argument("--idempotent", action="store_true", help="enable.idempotence=true")
    ap.add_argument("--value-bytes", type=int, default=0, help="pad each value to this many bytes")
    ap.add_argument("--librdkafka-defaults", action="store_true", help="librdkafka's defaults but acks=all")
    ap.add_argument("--timeout", type=float, default=300, help="seconds for everything")
    a = ap.parse_args()

    errors = []
    error_codes = {}
    failed = 0
    acked = 0
    out = open(a.out, "w")
    t0 = time.monotonic()

    def on_delivery(err, msg):
        nonlocal failed, acked
        if err is not None:
            failed += 1
            error_codes[err.name()] = error_codes.get(err.name(), 0) + 1
            if len(errors) < 5:
                errors.append({"key": msg.key().decode(), "value": msg.value().decode(), "error": str(err)})
            return
        client, key, seq = parse_value(msg.value())
        out.write(acked_line(client, key, int(seq), msg.partition(), msg.offset(), time.monotonic() - t0))
        acked += 1

    stats = {}

    def on_stats(text):
        stats["last"] = text

    client_errors = []
    client_error_codes = {}

    def on_error(err):  # client-level trouble (broker down, all brokers down, fatal), not per message
        # The first few, every fatal one (the producer stops for good), and a count per code.
        name = err.name() if hasattr(err, "name") else str(err.code())
        client_error_codes[name] = client_error_codes.get(name, 0) + 1
        if len(client_errors) < 5 or err.fatal():
            client_errors.append(str(err))

    tuned = {
        "linger.ms": 5,
        "retries": 1_000_000,
        "retry.backoff.ms": 100,
        "max.in.flight.requests.per.connection": a.max_in_flight,
        "message.timeout.ms": a.message_timeout_ms,
        "request.timeout.ms": 10_000,
        "topic.metadata.refresh.interval.ms": 5_000,
    }
    p = ck.Producer({
        "bootstrap.servers": a.bootstrap,
        "client.id": "keel-test-" + a.client,
        "acks": "all",
        "enable.idempotence": a.idempotent,
        **({} if a.librdkafka_defaults else tuned),
        "statistics.interval.ms": 500,
        "stats_cb": on_stats,
        "error_cb": on_error,
        # KEEL_TEST_RDKAFKA_DEBUG=eos,msg,protocol,... turns on librdkafka's debug log (stderr).
        **({"debug": os.environ["KEEL_TEST_RDKAFKA_DEBUG"]} if os.environ.get("KEEL_TEST_RDKAFKA_DEBUG") else {}),
    })
    deadline = time.monotonic() + a.timeout
    progress = Progress()
    pacer = Pacer(a.rate)
    for i in range(a.count):
        pacer.wait(i)
        key, value, _ = message(a.client, i, a.keys)
        if a.value_bytes > len(value) + 1:
            value += ":" + "x" * (a.value_bytes - len(value) - 1)
        while True:
            try:
                p.produce(a.topic, key=key.encode(), value=value.encode(), on_delivery=on_delivery)
                break
            except BufferError:  # local queue full: serve delivery reports and try again
                p.poll(0.05)
            if time.monotonic() > deadline:
                break
        p.poll(0)
        progress.maybe(sent=i + 1, acked=acked, failed=failed)
        if time.monotonic() > deadline:
            break
    while len(p) > 0 and time.monotonic() < deadline:
        p.flush(0.5)
        progress.maybe(sent=a.count, acked=acked, failed=failed)
    left = len(p)
    seconds = time.monotonic() - t0
    p.poll(0.6)  # one more statistics report, covering the end
    out.close()
    summary = {"event": "summary", "client": a.client, "count": a.count, "acked": acked, "failed": failed,
               "unanswered": left, "errors": errors, "error_codes": error_codes, "client_errors": client_errors,
               "client_error_codes": client_error_codes,
               "seconds": round(seconds, 3), "idempotent": a.idempotent}
    summary.update(request_stats(stats.get("last")))
    emit(summary)
    sys.exit(0 if acked == a.count else 1)


if __name__ == "__main__":
    main()
