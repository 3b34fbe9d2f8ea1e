"""Shared pieces of the real-client programs that node/tests/kafka_clients.rs runs against a Keel
cluster (see that file for the tests). Each program in this folder is also usable by hand:

    python3 node/tests/clients/admin.py create --bootstrap 127.0.0.1:9092 --topic t --partitions 6
    python3 node/tests/clients/produce_confluent.py --bootstrap 127.0.0.1:9092 --topic t \
        --count 1000 --out /tmp/confluent.jsonl
    python3 node/tests/clients/produce_kafkapython.py ... --out /tmp/kafkapython.jsonl
    python3 node/tests/clients/consume_check.py --bootstrap 127.0.0.1:9092 --topic t \
        --acked /tmp/confluent.jsonl --acked /tmp/kafkapython.jsonl
    python3 node/tests/clients/malformed.py --bootstrap 127.0.0.1:9092 --topic t --out /tmp/raw.jsonl

Message shape, shared by every producer (kcat's input is generated the same way in Rust): message
i of a producer named CLIENT has key "k<i % keys>" and value "CLIENT:k<i % keys>:<i // keys>", so
the value names its producer and its position among that producer's sends of that key (seq).

Output: progress and results are JSON objects, one per line, on stdout; the last line has
"event": "summary" (producers), "check" (consume_check) or "malformed". A program exits 0 only if
it saw no violation; otherwise it exits 1 and its summary lists the first offending records.
Acknowledged records go to an --out file as JSON lines {"c", "k", "s", "p", "o"}: client, key,
seq, and the partition and offset the broker acknowledged (produce_confluent.py adds "t", when).
"""

import importlib
import json
import sys
import time

# Printed when a client library is missing; the Rust test looks for the same advice.
INSTALL_HINT = "run .ci/run (it installs kcat, confluent-kafka and kafka-python)"


def require(module):
    """Imports a client library or exits 3 telling how to install it (never skips silently)."""
    try:
        return importlib.import_module(module)
    except ImportError as e:
        emit({"event": "error", "error": "python module %s is missing (%s); %s" % (module, e, INSTALL_HINT)})
        sys.exit(3)


def emit(obj):
    print(json.dumps(obj, sort_keys=True), flush=True)


def key_of(i, keys):
    return "k%d" % (i % keys)


def message(client, i, keys):
    """(key, value, seq) of message i of producer `client`."""
    key = key_of(i, keys)
    seq = i // keys
    return key, "%s:%s:%d" % (client, key, seq), seq


def parse_value(value):
    """(client, key, seq) of a value made by message(), or None."""
    if value is None:
        return None
    try:
        # A fourth field is padding (produce_confluent.py --value-bytes).
        parts = value.decode().split(":")
        if len(parts) not in (3, 4):
            return None
        client, key, seq = parts[:3]
        return client, key, int(seq)
    except (UnicodeDecodeError, ValueError):
        return None


def acked_line(client, key, seq, partition, offset, t=None):
    """One acknowledged record; `t`: when the acknowledgement arrived (seconds since the producer
    started), which the failover test uses to measure how long a partition went unacknowledged."""
    r = {"c": client, "k": key, "s": seq, "p": partition, "o": offset}
    if t is not None:
        r["t"] = round(t, 3)
    return json.dumps(r) + "\n"


class Progress:
    """Prints {"event": "progress", ...} at most every `every_s` seconds (the Rust failover test
    waits for these to know when to kill a leader)."""

    def __init__(self, every_s=0.5):
        self.every_s = every_s
        self.t0 = time.monotonic()
        self.last = 0.0

    def maybe(self, **fields):
        now = time.monotonic()
        if now - self.last >= self.every_s:
            self.last = now
            emit(dict(event="progress", t=round(now - self.t0, 3), **fields))


class Pacer:
    """Holds a loop to `rate_per_s` iterations per second (0 = as fast as possible)."""

    def __init__(self, rate_per_s):
        self.rate_per_s = rate_per_s
        self.t0 = time.monotonic()

    def wait(self, i):
        if self.rate_per_s > 0:
            ahead_s = i / self.rate_per_s - (time.monotonic() - self.t0)
            if ahead_s > 0:
                time.sleep(ahead_s)
