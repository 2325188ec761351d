"""Damaged stored data (issue 14): a flipped byte in a local segment, a damaged index, a
damaged object in the bucket. Each is found by CRC-32C or framing checks, counted in
`strata_storage_damage_total`, logged, and answered with KAFKA_STORAGE_ERROR for the
damaged range only, while the rest of the partition and the other partitions keep
serving. No consumer skips a record. Where the bucket holds a good copy of a damaged
local segment, the partition repairs itself and serves the range from there.

The damage is done to the files and objects behind the running broker's back, as a bad
disk or a bad bucket would. Fetches are hand-built (Fetch v4) so the test sees the error
code of each partition, which librdkafka would retry in silence.
"""

from __future__ import annotations

import struct
import time

from clients import Rec, check_against_offsets, confluent_consume, confluent_produce, create_topic
from servers import wait_until
from test_tiering import check_segment_objects, tier_env, tiered_topic, wait_sealed_uploaded
from wire import connect, frame, kstring, recv_frame, request_header

KiB = 1 << 10
KAFKA_STORAGE_ERROR = 56


def records(partitions: int, per_partition: int, size: int = 900) -> list[Rec]:
    ts = int(time.time() * 1000) - 100_000
    return [Rec(partition=p, key=b"k%d" % i, value=(b"%d-%d:" % (p, i)) + bytes([i % 251]) * size,
                timestamp=ts + i)
            for i in range(per_partition) for p in range(partitions)]


def fetch(bootstrap: str, topic: str, offsets: dict[int, int], max_bytes: int = 1 << 20) -> dict[int, tuple[int, int, bytes]]:
    """One Fetch v4: partition -> (error code, high watermark, records bytes)."""
    parts = b"".join(struct.pack(">iqi", p, o, max_bytes) for p, o in offsets.items())
    body = struct.pack(">iiiib", -1, 100, 1, max_bytes, 0) + struct.pack(">i", 1) + kstring(topic) \
        + struct.pack(">i", len(offsets)) + parts
    with connect(bootstrap, timeout=30) as sock:
        sock.sendall(frame(request_header(1, 4, 9, "corruption-test") + body))
        data = recv_frame(sock)
    pos = 4 + 4  # correlation id, throttle time
    (topics,) = struct.unpack_from(">i", data, pos)
    pos += 4
    out = {}
    for _ in range(topics):
        (n,) = struct.unpack_from(">h", data, pos)
        pos += 2 + n
        (count,) = struct.unpack_from(">i", data, pos)
        pos += 4
        for _ in range(count):
            partition, error, high, _lso = struct.unpack_from(">ihqq", data, pos)
            pos += 22
            (aborted,) = struct.unpack_from(">i", data, pos)
            pos += 4 + max(aborted, 0) * 16
            (size,) = struct.unpack_from(">i", data, pos)
            pos += 4
            out[partition] = (error, high, data[pos:pos + max(size, 0)])
            pos += max(size, 0)
    return out


def batches(data: bytes) -> list[tuple[int, int, int]]:
    """(position, base offset, last offset) of each whole batch in `data`."""
    out, pos = [], 0
    while pos + 61 <= len(data):
        base, length = struct.unpack_from(">qi", data, pos)
        (last_delta,) = struct.unpack_from(">i", data, pos + 23)
        if pos + 12 + length > len(data):
            break
        out.append((pos, base, base + last_delta))
        pos += 12 + length
    return out


def flip(path, position: int) -> None:
    with open(path, "r+b") as f:
        f.seek(position)
        byte = f.read(1)
        f.seek(position)
        f.write(bytes([byte[0] ^ 0x40]))


def damage(b, kind: str, tier: str = "local") -> float:
    return b.metric("strata_storage_damage_total", tier=tier, kind=kind) or 0


def test_a_flipped_byte_in_a_local_segment_fails_only_its_batch(broker):
    """Without a remote copy: the damaged batch answers KAFKA_STORAGE_ERROR on every
    fetch that reaches it (never skipped), the batches before and after it and the other
    partition are served, the damage is counted and logged once, and the broker lives."""
    b = broker()
    topic = "damaged"
    create_topic(b.bootstrap, topic, 2, {"segment.bytes": str(64 * KiB)})
    produced = records(2, 400)
    confluent_produce(b.bootstrap, topic, produced, "none", **{"batch.size": 8 * KiB, "linger.ms": 5})
    segments = b.local_segments(topic, 0)
    assert len(segments) >= 3, segments
    second = segments[1]
    path = b.partition_dir(topic, 0) / f"{second:020d}.log"
    stored = batches(path.read_bytes())
    assert len(stored) >= 3, stored
    position, damaged_base, damaged_last = stored[len(stored) // 2]
    flip(path, position + 80)  # inside the records, covered by the CRC

    # Reads that reach the damaged batch fail, from its first offset and from inside it.
    for offset in (damaged_base, damaged_last):
        error, high, data = fetch(b.bootstrap, topic, {0: offset})[0]
        assert error == KAFKA_STORAGE_ERROR and data == b"", (offset, error, len(data))
    # A read from the segment's start stops before it.
    error, _, data = fetch(b.bootstrap, topic, {0: second})[0]
    assert error == 0 and batches(data), error
    assert batches(data)[-1][2] < damaged_base, f"served up to {batches(data)[-1][2]}, past {damaged_base}"
    # Past it, and in the other partition, everything reads.
    got = fetch(b.bootstrap, topic, {0: damaged_last + 1, 1: 0})
    assert got[0][0] == 0 and batches(got[0][2])[0][1] == damaged_last + 1, got[0][:2]
    assert got[1][0] == 0 and batches(got[1][2]), got[1][:2]
    assert damage(b, "batch") == 2, "each of the two failed reads counts"
    wait_until("the damage to be logged", lambda: "damaged local segment" in b.log_text(), timeout=10)
    assert b.log_text().count("damaged local segment") == 1, "logged once a minute at most"
    assert b.is_running()


def test_a_damaged_index_is_not_followed_and_is_rebuilt(broker):
    """An offset-index entry pointing into the middle of a batch: reads still return the
    right batches (scan from the segment start), the index is rebuilt, and it is counted."""
    b = broker()
    topic = "badindex"
    create_topic(b.bootstrap, topic, 1, {"segment.bytes": str(64 * KiB), "index.interval.bytes": "1"})
    produced = records(1, 300)
    confluent_produce(b.bootstrap, topic, produced, "none", **{"batch.size": 4 * KiB, "linger.ms": 5})
    segments = b.local_segments(topic, 0)
    assert len(segments) >= 2, segments
    first = segments[0]
    log = (b.partition_dir(topic, 0) / f"{first:020d}.log").read_bytes()
    stored = batches(log)
    index = b.partition_dir(topic, 0) / f"{first:020d}.index"
    raw = bytearray(index.read_bytes())
    entries = (len(raw) - 8) // 8
    assert entries >= 3, entries
    # Every entry now points 13 bytes into its batch (a wrong position, a right offset).
    for n in range(1, entries):
        at = 8 + n * 8 + 4
        struct.pack_into(">I", raw, at, struct.unpack_from(">I", raw, at)[0] + 13)
    index.write_bytes(bytes(raw))
    _, base, last = stored[len(stored) // 2]
    error, _, data = fetch(b.bootstrap, topic, {0: last})[0]
    assert error == 0 and batches(data)[0][1:] == (base, last), (error, batches(data)[:1])
    assert damage(b, "index") >= 1
    assert (b.metric("strata_storage_repairs_total", action="local_index_rebuilt") or 0) >= 1
    rebuilt = index.read_bytes()
    for n in range(1, (len(rebuilt) - 8) // 8):
        (relative, position) = struct.unpack_from(">II", rebuilt, 8 + n * 8)
        assert any(p == position and bb == first + relative for p, bb, _ in stored), (relative, position)
    got = confluent_consume(b.bootstrap, topic, 1)
    check_against_offsets(produced, got, "after the index was rebuilt")


def test_a_damaged_local_segment_is_served_from_the_bucket(bucket, broker):
    """With the segment in the bucket: the read that finds the damage drops the local
    copy (and the older local segments) and the consumer reads every record, the damaged
    range from the bucket."""
    b = broker(env=tier_env(bucket.endpoint, bucket.name))
    topic = "healed"
    tiered_topic(b.bootstrap, topic, 1, segment_bytes=64 * KiB)
    produced = records(1, 600)
    confluent_produce(b.bootstrap, topic, produced, "none", **{"batch.size": 8 * KiB, "linger.ms": 5})
    active = wait_sealed_uploaded(b, topic, 0)
    segments = b.local_segments(topic, 0)
    assert len(segments) >= 4 and segments[0] == 0, segments
    target = segments[2]
    path = b.partition_dir(topic, 0) / f"{target:020d}.log"
    position, _, _ = batches(path.read_bytes())[1]
    flip(path, position + 90)
    got = confluent_consume(b.bootstrap, topic, 1)
    check_against_offsets(produced, got, "consumed across a damaged local segment")
    assert damage(b, "batch") >= 1
    assert b.metric("strata_storage_repairs_total", action="local_dropped_for_remote") == 1
    remaining = b.local_segments(topic, 0)
    assert remaining[0] > target and active in remaining, remaining


def test_a_damaged_object_in_the_bucket_fails_only_its_range(bucket, broker):
    """An object whose bytes were damaged in the bucket, with no local copy left: fetches
    of its range answer KAFKA_STORAGE_ERROR (after one fresh GET past the segment cache),
    the ranges before and after it are served, and the damage is counted."""
    b = broker(env=tier_env(bucket.endpoint, bucket.name))
    topic = "rotten"
    tiered_topic(b.bootstrap, topic, 1, segment_bytes=64 * KiB, local_retention_bytes=1)
    produced = records(1, 600)
    confluent_produce(b.bootstrap, topic, produced, "none", **{"batch.size": 8 * KiB, "linger.ms": 5})
    active = wait_sealed_uploaded(b, topic, 0)
    wait_until("local retention to drop the uploaded segments",
               lambda: b.local_segments(topic, 0) == [active], timeout=60, interval=0.2)
    objects = check_segment_objects(bucket, b, topic, 0)
    by_base = {o["base"]: k for k, o in objects.items()}
    bases = sorted(by_base)
    assert len(bases) >= 3, bases
    target = bases[1]
    key = by_base[target]
    body = bytearray(bucket.get(key))
    first = batches(bytes(body))[0]
    body[first[0] + 90] ^= 0x40
    from servers import s3_client
    s3_client(bucket.endpoint).put_object(Bucket=bucket.name, Key=key, Body=bytes(body))

    error, _, data = fetch(b.bootstrap, topic, {0: target})[0]
    assert error == KAFKA_STORAGE_ERROR and data == b"", (error, len(data))
    assert damage(b, "object", tier="remote") >= 1
    # Before and after it, the bucket serves.
    for offset in (0, bases[2]):
        error, _, data = fetch(b.bootstrap, topic, {0: offset})[0]
        assert error == 0 and batches(data)[0][1] <= offset, (offset, error)
    got = confluent_consume(b.bootstrap, topic, 1, start={0: bases[2]})
    check_against_offsets([r for r in produced if r.offset >= bases[2]], got, "after the damaged object")
    assert b.is_running()
