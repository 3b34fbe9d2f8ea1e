#!/usr/bin/env python3
"""Consumes a whole topic and checks it against what the producers were told was acknowledged.

    consume_check.py --bootstrap B --topic T [--partitions 6] [--client confluent|kafkapython]
        [--mode exact|at-least-once] [--acked FILE ...] [--all-acked CLIENT:COUNT:KEYS ...]

--acked FILE: JSON lines {"c", "k", "s", "p", "o"} written by the producers (acknowledged records).
--all-acked kcat:100000:100: every message common.message("kcat", i, 100), i < 100000, was
  acknowledged (kcat reports no per-message offsets; it exits 0 only if every delivery succeeded).

The consumer assigns every partition from the beginning (no consumer group: Keel has none yet),
notes the high watermarks at the start and reads until each partition reaches its own. Offsets
of data records may have gaps and need not start at 0: the log also holds control batches (Raft
leader changes and membership), which clients skip.

Checks, in both modes:
  - offsets strictly increase within each partition;
  - every value parses as client:key:seq and matches the record's key;
  - every acknowledged record is present, and the record at its acknowledged (partition, offset)
    is that record;
  - a producer's records of one key sit in one partition.
mode exact (no faults; test A and C): every acknowledged record appears exactly once, nothing else
  appears, and per producer and key the seqs appear in send order.
mode at-least-once (a leader was killed mid-produce; test B): idempotence is off, so a batch whose
  acknowledgement was lost is retried and may be stored twice, and a batch that was never
  acknowledged may or may not be stored. Rule: every acknowledged record appears at least once;
  records of a known producer that were not acknowledged may appear; per producer and key, the
  first occurrences of acknowledged records are in send order (the producer runs with one request
  in flight per connection, so retries cannot reorder its batches). Nothing else may appear.

Prints one {"event": "check", ...} line with counts and the first violations; exits 1 on any
violation (including not reaching the high watermarks within --timeout).
"""

import argparse
import json
import sys
import time
from collections import defaultdict

from common import emit, parse_value, require

VIOLATIONS_SHOWN_PER_KIND = 5


def consume_confluent(bootstrap, topic, partitions, timeout_s):
    ck = require("confluent_kafka")
    c = ck.Consumer({
        "bootstrap.servers": bootstrap,
        "client.id": "keel-test-consume-check",
        "group.id": "keel-test-unused",  # required by the client; never used: assign() only
        "enable.auto.commit": False,
        "enable.auto.offset.store": False,
        "enable.partition.eof": True,
        "auto.offset.reset": "earliest",
    })
    deadline = time.monotonic() + timeout_s
    low, high = {}, {}
    for p in range(partitions):
        while True:
            try:
                low[p], high[p] = c.get_watermark_offsets(ck.TopicPartition(topic, p), timeout=5)
                break
            except ck.KafkaException as e:
                if time.monotonic() > deadline:
                    return None, low, high, "ListOffsets for partition %d: %s" % (p, e)
                time.sleep(0.2)
    c.assign([ck.TopicPartition(topic, p, ck.OFFSET_BEGINNING) for p in range(partitions)])
    records = []
    done = {p for p in range(partitions) if high[p] <= low[p]}
    error = None
    while len(done) < partitions:
        if time.monotonic() > deadline:
            error = "timeout: partitions %s did not reach their high watermarks %s" % (
                sorted(set(range(partitions)) - done), high)
            break
        for m in c.consume(num_messages=10_000, timeout=0.5):
            err = m.error()
            if err is not None:
                if err.code() == ck.KafkaError._PARTITION_EOF:
                    if m.offset() >= high[m.partition()]:
                        done.add(m.partition())
                    continue
                if err.retriable() or err.code() in (ck.KafkaError._TRANSPORT, ck.KafkaError._ALL_BROKERS_DOWN):
                    continue
                error = "consume error on partition %s: %s" % (m.partition(), err)
                break
            records.append((m.partition(), m.offset(), m.key(), m.value()))
            if m.offset() >= high[m.partition()] - 1:
                done.add(m.partition())
        if error:
            break
    c.close()
    return records, low, high, error


def consume_kafkapython(bootstrap, topic, partitions, timeout_s):
    kafka = require("kafka")
    c = kafka.KafkaConsumer(bootstrap_servers=bootstrap.split(","), client_id="keel-test-consume-check",
                            group_id=None, enable_auto_commit=False, auto_offset_reset="earliest")
    tps = [kafka.TopicPartition(topic, p) for p in range(partitions)]
    c.assign(tps)
    low = {tp.partition: o for tp, o in c.beginning_offsets(tps).items()}
    high = {tp.partition: o for tp, o in c.end_offsets(tps).items()}
    c.seek_to_beginning()
    deadline = time.monotonic() + timeout_s
    records = []
    error = None
    while True:
        behind = [tp.partition for tp in tps if c.position(tp) < high[tp.partition]]
        if not behind:
            break
        if time.monotonic() > deadline:
            error = "timeout: partitions %s at positions %s did not reach their high watermarks %s" % (
                behind, {p: c.position(tps[p]) for p in behind}, high)
            break
        for tp, msgs in c.poll(timeout_ms=500, max_records=10_000).items():
            records.extend((tp.partition, m.offset, m.key, m.value) for m in msgs)
    c.close()
    return records, low, high, error


def load_acked(files, all_acked):
    """(client, key, seq) -> (partition, offset) or None, and the count acknowledged per client."""
    acked = {}
    per_client = defaultdict(int)
    for path in files:
        with open(path) as f:
            for line in f:
                r = json.loads(line)
                acked[(r["c"], r["k"], r["s"])] = (r["p"], r["o"])
                per_client[r["c"]] += 1
    for spec in all_acked:
        client, count, keys = spec.split(":")
        for i in range(int(count)):
            acked[(client, "k%d" % (i % int(keys)), i // int(keys))] = None
        per_client[client] += int(count)
    return acked, dict(per_client)


def check(records, acked, mode):
    violations = []
    counts = defaultdict(int)

    by_client = defaultdict(lambda: defaultdict(int))

    def violation(kind, **detail):
        counts[kind] += 1
        client = detail.get("client") or str(detail.get("record", detail.get("value", "?"))).split(":")[0]
        by_client[client][kind] += 1
        if counts[kind] <= VIOLATIONS_SHOWN_PER_KIND:
            violations.append(dict(kind=kind, **detail))

    known_clients = {c for c, _, _ in acked}
    at = {}  # (partition, offset) -> identity
    occurrences = defaultdict(list)  # identity -> [(partition, offset)]
    last_offset = {}
    unacked_present = 0
    for p, o, key, value in records:
        if p in last_offset and o <= last_offset[p]:
            violation("offset-not-increasing", partition=p, offset=o, previous=last_offset[p])
        last_offset[p] = o
        ident = parse_value(value)
        if ident is None:
            violation("unparseable", partition=p, offset=o, key=repr(key), value=repr(value))
            continue
        if key is None or key.decode(errors="replace") != ident[1]:
            violation("key-mismatch", partition=p, offset=o, key=repr(key), value=value.decode())
        at[(p, o)] = ident
        occurrences[ident].append((p, o))
        if ident not in acked:
            if mode == "at-least-once" and ident[0] in known_clients:
                unacked_present += 1
            else:
                violation("unexpected", partition=p, offset=o, value=value.decode())

    duplicates = 0
    for ident, where in acked.items():
        seen = occurrences.get(ident)
        if not seen:
            violation("lost", record=":".join(map(str, ident)), acked_at=where)
            continue
        if len(seen) > 1:
            duplicates += len(seen) - 1
            if mode == "exact":
                violation("duplicate", record=":".join(map(str, ident)), at=seen)
        if where is not None and at.get(tuple(where)) != ident:
            found = at.get(tuple(where))
            violation("ack-offset-mismatch", record=":".join(map(str, ident)), acked_at=where,
                      found=":".join(map(str, found)) if found else None)

    # Per producer and key: one partition, and seqs (first occurrences) in send order.
    by_key = defaultdict(list)  # (client, key) -> [(partition, offset, seq)]
    for ident, where in occurrences.items():
        if ident not in acked:  # exact: already a violation; at-least-once: allowed, unordered
            continue
        for p, o in where[:1]:
            by_key[ident[:2]].append((p, o, ident[2]))
        partitions = {p for p, _ in where}
        if len(partitions) > 1:
            violation("record-in-several-partitions", record=":".join(map(str, ident)), at=where)
    for (client, key), rows in sorted(by_key.items()):
        if len({p for p, _, _ in rows}) > 1:
            violation("key-in-several-partitions", client=client, key=key,
                      partitions=sorted({p for p, _, _ in rows}))
            continue
        rows.sort()
        for (p0, o0, s0), (p1, o1, s1) in zip(rows, rows[1:]):
            if s1 <= s0:
                violation("per-key-order", client=client, key=key, earlier={"offset": o0, "seq": s0},
                          later={"offset": o1, "seq": s1}, partition=p1)
                break
    return violations, dict(counts), {c: dict(k) for c, k in by_client.items()}, duplicates, unacked_present


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bootstrap", required=True)
    ap.add_argument("--topic", required=True)
    ap.add_argument("--partitions", type=int, required=True)
    ap.add_argument("--client", choices=["confluent", "kafkapython"], default="confluent")
    ap.add_argument("--mode", choices=["exact", "at-least-once"], default="exact")
    ap.add_argument("--acked", action="append", default=[])
    ap.add_argument("--all-acked", action="append", default=[])
    ap.add_argument("--timeout", type=float, default=180)
    a = ap.parse_args()

    acked, per_client = load_acked(a.acked, a.all_acked)
    t0 = time.monotonic()
    consume = consume_confluent if a.client == "confluent" else consume_kafkapython
    records, low, high, error = consume(a.bootstrap, a.topic, a.partitions, a.timeout)
    consumed_s = time.monotonic() - t0
    violations, counts, counts_by_client, duplicates, unacked_present = check(records or [], acked, a.mode)
    if error:
        counts["consume"] = 1
        violations.insert(0, {"kind": "consume", "error": error})
    per_partition = defaultdict(lambda: {"records": 0})
    for p, o, _, _ in records or []:
        s = per_partition[p]
        s["records"] += 1
        s.setdefault("first", o)
        s["last"] = o
    for p in range(a.partitions):
        per_partition[p].update(low=low.get(p), high=high.get(p))
    emit({"event": "check", "client": a.client, "mode": a.mode, "topic": a.topic,
          "consumed": len(records or []), "acked": len(acked), "acked_per_client": per_client,
          "duplicates": duplicates, "unacked_present": unacked_present,
          "partitions": {str(p): per_partition[p] for p in sorted(per_partition)},
          "consume_seconds": round(consumed_s, 3), "violation_counts": counts, "violation_counts_by_client": counts_by_client,
          "violations": violations})
    sys.exit(1 if counts else 0)


if __name__ == "__main__":
    main()
