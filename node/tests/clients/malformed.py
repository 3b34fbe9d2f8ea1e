#!/usr/bin/env python3
"""Malformed input on raw sockets: the broker must drop the bad connection (or reject the bad
batch) and keep serving everyone else, with acknowledged data intact.

    malformed.py --bootstrap B --topic T --out ACKED.jsonl

The topic must exist. Every case is sent to the leader of partition 0 (found through
confluent-kafka's metadata), on a connection of its own:

  truncated-frame   length prefix 100, 10 bytes sent; the connection stays open while other
                    clients are checked, then closes. The broker keeps serving.
  oversized-length  length prefix 0x7fffffff: the connection is closed (the broker must not wait
                    for, or allocate, 2 GiB).
  negative-length   length prefix -1: the connection is closed.
  short-frame       a 2-byte frame (no room for a request header): the connection is closed.
  unknown-api-key   a well-formed header with api key 9999: the connection is closed (as Kafka does).
  apiversions-v99   ApiVersions v99: a v0 response with error 35 (UNSUPPORTED_VERSION) listing
                    ApiVersions' range, as Kafka answers (clients retry with a lower version).
  produce-good-crc  Produce v3 and v7 built by hand with a correct CRC32C: error 0, and the
                    record is then consumed at the acknowledged offset (proves the encoder).
  produce-bad-crc   the same with a wrong CRC field: the partition's error is 2
                    (CORRUPT_MESSAGE), the high watermark does not move and nothing is consumable.
  garbage-frame     64 seeded random bytes (api key forced outside Kafka's range): closed.
  garbage-body      a valid Produce v3 header followed by 64 seeded random bytes (its
                    transactional_id length, 14516, runs past the frame): closed (as Kafka does)
                    or answered with an error, within 10 s; the broker keeps serving.

After each case: a fresh raw connection gets an ApiVersions answer, and confluent-kafka produces
3 records with acks=all and consumes them back at their acknowledged offsets. Every record this
script got acknowledged (client "raw" for hand-built batches, "rt" for the round trips) goes to
--out, so consume_check.py can account for them; the bad-CRC record ("raw:rawkey:1000") must never
be consumed.

Prints one {"event": "malformed", "cases": {...}, "violations": [...]} line; exits 1 on any
violation.
"""

import argparse
import random
import socket
import struct
import sys
import time

from common import acked_line, emit, require

ck = require("confluent_kafka")

CLOSE_WAIT_S = 10
CLIENT_ID = b"keel-malformed"
API_PRODUCE = 0
API_APIVERSIONS = 18
CORRUPT_MESSAGE = 2
UNSUPPORTED_VERSION = 35
RETRIABLE_LEADER_ERRORS = (5, 6)  # LEADER_NOT_AVAILABLE, NOT_LEADER_OR_FOLLOWER


# ---- CRC32C (Castagnoli), as RecordBatch v2 uses it

def _crc_table():
    table = []
    for n in range(256):
        c = n
        for _ in range(8):
            c = (c >> 1) ^ 0x82F63B78 if c & 1 else c >> 1
        table.append(c)
    return table


CRC_TABLE = _crc_table()


def crc32c(data):
    c = 0xFFFFFFFF
    for b in data:
        c = CRC_TABLE[(c ^ b) & 0xFF] ^ (c >> 8)
    return c ^ 0xFFFFFFFF


assert crc32c(b"123456789") == 0xE3069283


# ---- encoding

def varint(n):
    """Zigzag varint, as records use."""
    z = (n << 1) ^ (n >> 63)
    out = bytearray()
    while True:
        b = z & 0x7F
        z >>= 7
        if z:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def record_batch(records, corrupt_crc=False):
    """RecordBatch v2 (magic 2), no compression, no producer id, of [(key, value)]."""
    now_ms = int(time.time() * 1000)
    body = b""
    for i, (key, value) in enumerate(records):
        r = (b"\x00" + varint(0) + varint(i) + varint(len(key)) + key + varint(len(value)) + value
             + varint(0))
        body += varint(len(r)) + r
    after_crc = struct.pack(">hiqqqhii", 0, len(records) - 1, now_ms, now_ms, -1, -1, -1, len(records)) + body
    crc = crc32c(after_crc)
    if corrupt_crc:
        crc ^= 0x5A5A5A5A
    rest = struct.pack(">ibI", -1, 2, crc) + after_crc  # partitionLeaderEpoch, magic, crc
    return struct.pack(">qi", 0, len(rest)) + rest


def string(s):
    return struct.pack(">h", len(s)) + s


def request(api_key, version, corr, body):
    """A frame with request header v1 (every non-flexible version)."""
    msg = struct.pack(">hhi", api_key, version, corr) + string(CLIENT_ID) + body
    return struct.pack(">i", len(msg)) + msg


def produce_request(version, corr, topic, partition, records):
    body = struct.pack(">hhi", -1, -1, 10_000)  # transactional_id null, acks=all, timeout_ms
    body += struct.pack(">i", 1) + string(topic.encode())
    body += struct.pack(">i", 1) + struct.pack(">i", partition) + struct.pack(">i", len(records)) + records
    return request(API_PRODUCE, version, corr, body)


# ---- decoding

class Reader:
    def __init__(self, b):
        self.b, self.pos = b, 0

    def take(self, fmt):
        v = struct.unpack_from(fmt, self.b, self.pos)
        self.pos += struct.calcsize(fmt)
        return v if len(v) > 1 else v[0]

    def string(self):
        n = self.take(">h")
        s = self.b[self.pos:self.pos + max(n, 0)]
        self.pos += max(n, 0)
        return s.decode()


def parse_produce_response(version, payload):
    """(correlation id, [(topic, partition, error, base_offset)]) of a Produce v3..v8 response."""
    r = Reader(payload)
    corr = r.take(">i")
    out = []
    for _ in range(r.take(">i")):
        topic = r.string()
        for _ in range(r.take(">i")):
            partition, error, base_offset, _log_append_time = r.take(">ihqq")
            if version >= 5:
                r.take(">q")  # log_start_offset
            if version >= 8:
                for _ in range(r.take(">i")):  # record_errors
                    r.take(">i")
                    r.string()
                r.string()  # error_message
            out.append((topic, partition, error, base_offset))
    return corr, out


def parse_apiversions_v0(payload):
    r = Reader(payload)
    corr, error = r.take(">ih")
    n = r.take(">i")
    return corr, error, {k: (lo, hi) for k, lo, hi in (r.take(">hhh") for _ in range(max(n, 0)))}


# ---- sockets

def connect(addr):
    host, port = addr.rsplit(":", 1)
    s = socket.create_connection((host, int(port)), timeout=CLOSE_WAIT_S)
    s.settimeout(CLOSE_WAIT_S)
    return s


def recv_exact(s, n):
    buf = b""
    while len(buf) < n:
        chunk = s.recv(n - len(buf))
        if not chunk:
            raise ConnectionError("closed after %d of %d bytes" % (len(buf), n))
        buf += chunk
    return buf


def recv_frame(s):
    n = struct.unpack(">i", recv_exact(s, 4))[0]
    return recv_exact(s, n)


def outcome_after(s):
    """What the broker did with a connection after a bad frame: closed, reset, no answer, or data."""
    try:
        data = s.recv(4096)
        return "closed" if data == b"" else "answered:" + data[:64].hex()
    except ConnectionResetError:
        return "reset"
    except socket.timeout:
        return "still open after %ds" % CLOSE_WAIT_S
    finally:
        s.close()


def apiversions(addr):
    """ApiVersions v0 on a fresh connection: {api_key: (min, max)}; raises if not served."""
    s = connect(addr)
    try:
        s.sendall(request(API_APIVERSIONS, 0, 1, b""))
        corr, error, ranges = parse_apiversions_v0(recv_frame(s))
        if corr != 1 or error != 0:
            raise RuntimeError("ApiVersions v0 answered correlation %d error %d" % (corr, error))
        return ranges
    finally:
        s.close()


class Run:
    def __init__(self, bootstrap, topic, out):
        self.bootstrap, self.topic, self.out = bootstrap, topic, out
        self.cases = {}
        self.violations = []
        self.rt_seq = 0
        self.producer = ck.Producer({"bootstrap.servers": bootstrap, "client.id": "keel-malformed-rt",
                                     "acks": "all", "enable.idempotence": False, "linger.ms": 0})
        self.consumer = ck.Consumer({"bootstrap.servers": bootstrap, "group.id": "keel-test-unused",
                                     "client.id": "keel-malformed-rt", "enable.auto.commit": False,
                                     "enable.partition.eof": False})

    def violation(self, case, what):
        self.violations.append({"case": case, "violation": what})

    def leader(self, partition=0):
        deadline = time.monotonic() + 30
        while True:
            md = self.consumer.list_topics(topic=self.topic, timeout=5)
            t = md.topics.get(self.topic)
            if t is not None and t.error is None and partition in t.partitions:
                lid = t.partitions[partition].leader
                if lid >= 0 and lid in md.brokers:
                    b = md.brokers[lid]
                    return "%s:%d" % (b.host, b.port)
            if time.monotonic() > deadline:
                raise RuntimeError("no leader for %s/%d" % (self.topic, partition))
            time.sleep(0.2)

    def watermarks(self, partition):
        return self.consumer.get_watermark_offsets(ck.TopicPartition(self.topic, partition), timeout=10)

    def still_serving(self, case):
        """A fresh raw connection is answered, and a normal client produces and consumes."""
        try:
            apiversions(self.leader())
        except Exception as e:
            self.violation(case, "ApiVersions on a fresh connection failed: %r" % (e,))
        acks = []
        sent = []
        for _ in range(3):
            value = "rt:rtkey:%d" % self.rt_seq
            self.rt_seq += 1
            sent.append(value)
            self.producer.produce(self.topic, key=b"rtkey", value=value.encode(),
                                  on_delivery=lambda err, m: acks.append((err, m)))
        left = self.producer.flush(30)
        errors = [str(err) for err, _ in acks if err is not None]
        if left or errors or len(acks) != 3:
            self.violation(case, "round-trip produce: %d unanswered, errors %s" % (left, errors))
            return
        for _, m in acks:
            client, key, seq = m.value().decode().split(":")
            self.out.write(acked_line(client, key, int(seq), m.partition(), m.offset()))
        self.out.flush()
        p, first = acks[0][1].partition(), min(m.offset() for _, m in acks)
        self.consumer.assign([ck.TopicPartition(self.topic, p, first)])
        got = []
        deadline = time.monotonic() + 30
        while len(got) < 3 and time.monotonic() < deadline:
            for m in self.consumer.consume(num_messages=3 - len(got), timeout=1):
                if m.error() is None:
                    got.append(m.value().decode())
        self.consumer.unassign()  # an idle fetch long poll would delay the metadata requests
        if got[:3] != sent:
            self.violation(case, "round-trip consume from %d/%d: got %s, expected %s" % (p, first, got[:3], sent))

    def case(self, name, fn):
        try:
            self.cases[name] = fn()
        except Exception as e:
            self.cases[name] = "exception: %r" % (e,)
            self.violation(name, "the case itself failed: %r" % (e,))
        self.still_serving(name)

    def expect_closed(self, name, frame):
        s = connect(self.leader())
        s.sendall(frame)
        outcome = outcome_after(s)
        if outcome not in ("closed", "reset"):
            self.violation(name, "connection not closed: " + outcome)
        return outcome

    # ---- the cases

    def truncated_frame(self):
        s = connect(self.leader())
        s.sendall(struct.pack(">i", 100) + b"\x00\x12\x00\x00" + b"\x00" * 6)
        self.still_serving("truncated-frame (while the truncated connection is open)")
        s.close()
        return "sent 10 of 100 bytes, others served while open, then closed by the client"

    def apiversions_v99(self):
        s = connect(self.leader())
        # Header v2 (ApiVersions v3+ is flexible): key, version, correlation, client id, no tags.
        hdr = struct.pack(">hhi", API_APIVERSIONS, 99, 7) + string(CLIENT_ID) + b"\x00"
        s.sendall(struct.pack(">i", len(hdr) + 3) + hdr + b"\x00\x00\x00")
        try:
            corr, error, ranges = parse_apiversions_v0(recv_frame(s))
        except Exception as e:
            self.violation("apiversions-v99", "no v0 answer: %r" % (e,))
            return "no answer"
        finally:
            s.close()
        if corr != 7 or error != UNSUPPORTED_VERSION or API_APIVERSIONS not in ranges:
            self.violation("apiversions-v99", "answer: correlation %d error %d ranges %s" % (corr, error, ranges))
        return "error %d, ApiVersions range %s" % (error, ranges.get(API_APIVERSIONS))

    def produce(self, version, records, corrupt_crc=False):
        """Sends one hand-built Produce to the leader of partition 0, retrying leader moves;
        (error, base_offset)."""
        batch = record_batch(records, corrupt_crc)
        for attempt in range(20):
            s = connect(self.leader())
            try:
                s.sendall(produce_request(version, 100 + attempt, self.topic, 0, batch))
                corr, parts = parse_produce_response(version, recv_frame(s))
            finally:
                s.close()
            if corr != 100 + attempt or len(parts) != 1 or parts[0][:2] != (self.topic, 0):
                raise RuntimeError("Produce v%d answer does not match the request: %d %s" % (version, corr, parts))
            error, base_offset = parts[0][2], parts[0][3]
            if error not in RETRIABLE_LEADER_ERRORS:
                return error, base_offset
            time.sleep(0.5)
        return error, base_offset

    def produce_versions(self):
        lo, hi = apiversions(self.leader()).get(API_PRODUCE, (None, None))
        if lo is None:
            raise RuntimeError("the broker does not list Produce in ApiVersions")
        return [v for v in (3, 7) if lo <= v <= hi] or [lo]

    def produce_good_crc(self):
        results = {}
        for version in self.produce_versions():
            seq = len(results)
            value = b"raw:rawkey:%d" % seq
            error, base_offset = self.produce(version, [(b"rawkey", value)])
            results["v%d" % version] = {"error": error, "base_offset": base_offset}
            if error != 0:
                self.violation("produce-good-crc", "Produce v%d with a correct CRC: error %d" % (version, error))
                continue
            self.out.write(acked_line("raw", "rawkey", seq, 0, base_offset))
            self.out.flush()
            self.consumer.assign([ck.TopicPartition(self.topic, 0, base_offset)])
            m = None
            deadline = time.monotonic() + 20
            while m is None and time.monotonic() < deadline:
                m = self.consumer.poll(1)
                if m is not None and m.error() is not None:
                    m = None
            self.consumer.unassign()
            if m is None or m.offset() != base_offset or m.value() != value:
                self.violation("produce-good-crc", "record acknowledged at 0/%d not consumed there: %s" % (
                    base_offset, None if m is None else (m.offset(), m.value())))
        return results

    def produce_bad_crc(self):
        results = {}
        for version in self.produce_versions():
            before = self.watermarks(0)
            error, base_offset = self.produce(version, [(b"rawkey", b"raw:rawkey:1000")], corrupt_crc=True)
            after = self.watermarks(0)
            results["v%d" % version] = {"error": error, "base_offset": base_offset,
                                        "watermarks_before": before, "watermarks_after": after}
            if error != CORRUPT_MESSAGE:
                self.violation("produce-bad-crc", "Produce v%d with a bad CRC: error %d (expected %d), base_offset %d"
                               % (version, error, CORRUPT_MESSAGE, base_offset))
            if after[1] != before[1]:
                self.violation("produce-bad-crc", "high watermark of partition 0 moved %d -> %d" % (before[1], after[1]))
        return results

    def garbage_frame(self):
        rng = random.Random(20240613)
        garbage = bytearray(rng.randbytes(64))
        garbage[0] |= 0x40  # api key >= 16384 (or negative): no such API
        return self.expect_closed("garbage-frame", struct.pack(">i", len(garbage)) + bytes(garbage))

    def garbage_body(self):
        rng = random.Random(7)
        msg = struct.pack(">hhi", API_PRODUCE, 3, 5) + string(CLIENT_ID) + rng.randbytes(64)
        s = connect(self.leader())
        s.sendall(struct.pack(">i", len(msg)) + msg)
        outcome = outcome_after(s)
        if outcome.startswith("still open"):  # an undecodable request must not hang its connection
            self.violation("garbage-body", "Produce v3 with an undecodable body: neither answered nor closed "
                           "within %ds" % CLOSE_WAIT_S)
        return outcome


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bootstrap", required=True)
    ap.add_argument("--topic", required=True)
    ap.add_argument("--out", required=True)
    a = ap.parse_args()
    t0 = time.monotonic()
    with open(a.out, "w") as out:
        run = Run(a.bootstrap, a.topic, out)
        run.still_serving("before any case")
        run.case("truncated-frame", run.truncated_frame)
        run.case("oversized-length", lambda: run.expect_closed("oversized-length", struct.pack(">I", 0x7FFFFFFF)))
        run.case("negative-length", lambda: run.expect_closed("negative-length", struct.pack(">i", -1)))
        run.case("short-frame", lambda: run.expect_closed("short-frame", struct.pack(">i", 2) + b"\x00\x12"))
        run.case("unknown-api-key", lambda: run.expect_closed(
            "unknown-api-key", request(9999, 0, 3, b"")))
        run.case("apiversions-v99", run.apiversions_v99)
        run.case("produce-good-crc", run.produce_good_crc)
        run.case("produce-bad-crc", run.produce_bad_crc)
        run.case("garbage-frame", run.garbage_frame)
        run.case("garbage-body", run.garbage_body)
        run.consumer.close()
    emit({"event": "malformed", "cases": run.cases, "round_trips": run.rt_seq // 3,
          "violations": run.violations, "seconds": round(time.monotonic() - t0, 3)})
    sys.exit(1 if run.violations else 0)


if __name__ == "__main__":
    main()
