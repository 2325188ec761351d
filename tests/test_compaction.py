"""Log compaction (cleanup.policy=compact): the cleaner keeps the last record of each key at
its original offset, drops older versions, drops tombstones once delete.retention.ms has
passed (keeps them before), never touches the active segment, survives restarts and
kill -9, combines with time retention (compact,delete), refuses keyless records, and on a
tiered topic uploads only cleaned segments and rewrites the objects already in the bucket.

Every scenario reads the log back with real clients and compares it with what was
produced, by offset (the delivery reports give each record's offset). While the cleaner
works, a read may still hold superseded records, but never anything else: every record
read is the one produced at that offset, byte for byte, and the last record of every key
is always there. A scenario polls until nothing superseded is left.

The cleaner is made eager with `log_cleaner_interval_ms=200` and
`min.cleanable.dirty.ratio=0.01`; `strata_log_cleaner_*` metrics are only looked at loosely
(their names may change), the consumer's view decides.
"""

from __future__ import annotations

import random
import re
import time
from typing import Iterable

import pytest
from confluent_kafka import KafkaError, Producer
from confluent_kafka.admin import AlterConfigOpType, ConfigEntry, ConfigResource, ResourceType

from clients import (QUIET, Got, Rec, compare, confluent_admin, confluent_consume, confluent_produce, create_topic,
                     kafka_python_consume, kcat_consume_raw, short, watermarks)
from servers import metric_samples, s3_env, wait_until
from wire import raw_produce, record_batch

KiB = 1 << 10
MiB = 1 << 20

CLEANER_INTERVAL_MS = 200
ENV = {"STRATA_LOG_CLEANER_INTERVAL_MS": str(CLEANER_INTERVAL_MS), "STRATA_LOG_HOUSEKEEPING_INTERVAL_MS": "200"}
# How long a scenario waits for the cleaner to finish a log of a few MiB.
CONVERGE_TIMEOUT_S = 60
UPLOAD_TIMEOUT_S = 90
# A negative check ("nothing is cleaned / uploaded yet") waits this many cleaner intervals.
QUIET_PERIOD_S = 2.0
HOUR_MS = 3_600_000


# ---------------------------------------------------------------------------------------
# Records: values name their key and version, so a stray one is easy to spot
# ---------------------------------------------------------------------------------------


def key_of(k: int) -> bytes:
    return b"key-%05d" % k


def value_of(k: int, version: int, size: int) -> bytes:
    """`key-NNNNN|vV|` padded to `size` bytes; the prefix is unique to (key, version)."""
    return (b"key-%05d|v%d|" % (k, version)).ljust(size, b"~")


def marker(k: int, version: int) -> bytes:
    return b"key-%05d|v%d|" % (k, version)


def versions(keys: Iterable[int], version: int, size: int = 200, partition: int = 0) -> list[Rec]:
    return [Rec(partition=partition, key=key_of(k), value=value_of(k, version, size)) for k in keys]


def tombstones(keys: Iterable[int], partition: int = 0) -> list[Rec]:
    return [Rec(partition=partition, key=key_of(k), value=None) for k in keys]


def filler(tag: str, total_bytes: int, partition: int = 0, size: int = KiB) -> list[Rec]:
    """Records with unique keys (never superseded) of about `total_bytes` in all: produced
    last, they push what came before out of the active segment and keep a live record at
    the end of the log. Random values: they take their size on disk even when compressed."""
    rng = random.Random(f"{tag}/{partition}")
    return [Rec(partition=partition, key=b"filler-%s-%05d" % (tag.encode(), i), value=rng.randbytes(size))
            for i in range(total_bytes // size + 1)]


def latest(records: Iterable[Rec], *, tombstones_kept: bool) -> list[Rec]:
    """What a fully cleaned log holds: the last record of each (partition, key), in offset
    order; tombstones only if `tombstones_kept`."""
    last: dict[tuple[int, bytes], Rec] = {}
    for r in sorted(records, key=lambda r: (r.partition, r.offset)):
        last[(r.partition, r.key)] = r
    out = [r for r in last.values() if tombstones_kept or r.value is not None]
    return sorted(out, key=lambda r: (r.partition, r.offset))


def produce(b, topic: str, records: list[Rec], codec: str = "none", **extra) -> list[Rec]:
    """Produces with confluent-kafka in batches of at most 16 KiB, so that segments of
    tens of KiB hold several batches (a batch is never split across segments)."""
    confluent_produce(b.bootstrap, topic, records, codec, **{"batch.size": 16 * KiB, **extra})
    return records


def compacted_topic(b, topic: str, partitions: int = 1, **configs) -> None:
    """A compacted topic with an eager cleaner; keyword names with `_` for `.`
    (delete_retention_ms=0)."""
    config = {"cleanup.policy": "compact", "min.cleanable.dirty.ratio": "0.01", "retention.ms": "-1",
              "retention.bytes": "-1"}
    config.update({k.replace("_", "."): str(v) for k, v in configs.items()})
    create_topic(b.bootstrap, topic, partitions, config)


def alter_topic(b, topic: str, **configs) -> None:
    admin = confluent_admin(b.bootstrap)
    resource = ConfigResource(ResourceType.TOPIC, topic, incremental_configs=[
        ConfigEntry(k.replace("_", "."), str(v), incremental_operation=AlterConfigOpType.SET)
        for k, v in configs.items()])
    admin.incremental_alter_configs([resource])[resource].result(timeout=60)


def describe_topic(b, topic: str) -> dict[str, str]:
    admin = confluent_admin(b.bootstrap)
    resource = ConfigResource(ResourceType.TOPIC, topic)
    entries = admin.describe_configs([resource])[resource].result(timeout=60)
    return {name: entry.value for name, entry in entries.items()}


# ---------------------------------------------------------------------------------------
# The consumer's view of a compacted log
# ---------------------------------------------------------------------------------------


def check_view(produced: list[Rec], expected: list[Rec], got: list[Got], *, timestamps: bool = False
               ) -> tuple[list[str], list[str]]:
    """(broken, pending). `broken`: what no cleaner may ever do: a record that is not the
    one produced at its offset, an offset twice or out of order, or an expected record (the
    last of its key) missing. `pending`: records still there that a finished cleaner
    removes (superseded versions, expired tombstones)."""
    produced_at = {(r.partition, r.offset): r for r in produced}
    expected_at = {(r.partition, r.offset): r for r in expected}
    broken: list[str] = []
    pending: list[str] = []
    last: dict[int, int] = {}
    seen: set[tuple[int, int]] = set()
    for g in got:
        pos = (g.partition, g.offset)
        if pos in seen:
            broken.append(f"partition {g.partition} offset {g.offset} returned twice")
        elif g.offset <= last.get(g.partition, -1):
            broken.append(f"partition {g.partition}: offset {g.offset} after {last[g.partition]}")
        seen.add(pos)
        last[g.partition] = max(last.get(g.partition, -1), g.offset)
        r = produced_at.get(pos)
        if r is None:
            broken.append(f"partition {g.partition} offset {g.offset}: no record was produced there "
                          f"(key {short(g.key)}, value {short(g.value)})")
            continue
        problems = compare(r, g, timestamps=timestamps)
        if problems:
            broken.append(f"partition {g.partition} offset {g.offset}: {problems}")
        elif pos not in expected_at:
            what = "tombstone" if r.value is None else "superseded"
            pending.append(f"{what} {short(r.key)}={short(r.value)} at {g.partition}/{g.offset}")
    missing = [pos for pos in expected_at if pos not in seen]
    for pos in missing[:10]:
        r = expected_at[pos]
        broken.append(f"partition {pos[0]} offset {pos[1]}: the last record of key {short(r.key)} "
                      f"({short(r.value)}) is missing")
    if len(missing) > 10:
        broken.append(f"... {len(missing)} last-of-key records missing in all")
    return broken, pending


def summary(lines: list[str], n: int = 8) -> str:
    return f"{len(lines)}: " + "; ".join(lines[:n]) + (" ..." if len(lines) > n else "")


def cleaner_metrics(b) -> dict[str, float]:
    """Every `strata_log_cleaner_*` sample, summed by name (for messages; names may change)."""
    out: dict[str, float] = {}
    try:
        text = b.metrics()
    except Exception as e:  # the message must still be produced
        return {"error": str(e)}
    for line in text.splitlines():
        if line.startswith("strata_log_cleaner"):
            name = line.split("{")[0].split()[0]
            out[name] = sum(v for _, v in metric_samples(text, name))
    return out


def read(b, topic: str, partitions: int = 1, start: dict[int, int] | None = None) -> list[Got]:
    return confluent_consume(b.bootstrap, topic, partitions, start=start, timeout=60)


def wait_compacted(b, topic: str, produced: list[Rec], expected: list[Rec], *, partitions: int = 1,
                   start: dict[int, int] | None = None, timestamps: bool = False,
                   timeout: float = CONVERGE_TIMEOUT_S) -> list[Got]:
    """Reads the topic until it holds exactly `expected`; fails at once on a broken view,
    and at the deadline if superseded records are still there."""
    deadline = time.monotonic() + timeout
    while True:
        got = read(b, topic, partitions, start)
        broken, pending = check_view(produced, expected, got, timestamps=timestamps)
        assert not broken, f"{topic}: the log is damaged ({len(got)} records read): {summary(broken)}"
        if not pending:
            return got
        if time.monotonic() > deadline:
            pytest.fail(f"{topic}: not compacted after {timeout}s: {len(got)} records read, "
                        f"{len(expected)} expected; still there {summary(pending)}; "
                        f"cleaner metrics {cleaner_metrics(b)}")
        time.sleep(0.5)


def check_untouched(b, topic: str, produced: list[Rec], partitions: int = 1) -> None:
    """Nothing was cleaned: every produced record is still there."""
    got = read(b, topic, partitions)
    broken, _ = check_view(produced, produced, got)
    assert not broken, f"{topic}: records went although nothing was cleanable: {summary(broken)}"


def log_bytes(b, topic: str, partition: int = 0) -> int:
    """Bytes of the partition's `.log` files on disk."""
    total = 0
    for p in b.partition_dir(topic, partition).iterdir():
        if p.name.endswith(".log"):
            try:
                total += p.stat().st_size
            except FileNotFoundError:  # replaced by the cleaner meanwhile
                pass
    return total


def payload(records: Iterable[Rec]) -> int:
    return sum(len(r.key or b"") + len(r.value or b"") for r in records)


def gaps(got: list[Got]) -> int:
    offsets = [g.offset for g in got]
    return sum(1 for a, b in zip(offsets, offsets[1:]) if b > a + 1)


def check_sealed(b, topic: str, records: list[Rec], partition: int = 0) -> None:
    """Every record in `records` is below the active segment (so the cleaner may take it)."""
    last = max(r.offset for r in records if r.partition == partition)
    active = b.local_segments(topic, partition)[-1]
    assert active > last, f"{topic}/{partition}: the active segment starts at {active}, not past offset {last}"


# ---------------------------------------------------------------------------------------
# Scenarios
# ---------------------------------------------------------------------------------------


def test_compaction_keeps_last_value_per_key(broker, metadata):
    """The issue's scenario: 3 versions of each of 10k keys, tombstones for every 10th key,
    delete.retention.ms=0. Once the cleaner is done a consumer from offset 0 sees exactly
    the last value of every live key, at the offset it was produced at, no deleted key,
    offsets increasing with gaps; the files on disk shrank; and the active segment was
    left alone."""
    b = broker(metadata=metadata, env=ENV)
    topic = "kv"
    compacted_topic(b, topic, segment_bytes=256 * KiB, delete_retention_ms=0)
    keys = range(10_000)
    produced: list[Rec] = []
    for v in (1, 2, 3):
        produced += produce(b, topic, versions(keys, v))
    produced += produce(b, topic, tombstones(k for k in keys if k % 10 == 0))
    produced += produce(b, topic, filler("a", 280 * KiB))
    offsets = [r.offset for r in produced]
    assert offsets == list(range(len(produced))), "produce offsets are not dense from 0"
    check_sealed(b, topic, [r for r in produced if r.value is None])

    expected = latest(produced, tombstones_kept=False)
    assert len(expected) == 9_000 + len(filler("a", 280 * KiB))
    got = wait_compacted(b, topic, produced, expected)

    assert {g.key for g in got}.isdisjoint({key_of(k) for k in keys if k % 10 == 0}), "a deleted key is still there"
    assert all(g.value.startswith(marker(int(g.key[4:9]), 3)) for g in got if g.key.startswith(b"key-"))
    assert gaps(got) > 0 and got[-1].offset == len(produced) - 1
    assert watermarks(b.bootstrap, topic) == (0, len(produced))
    # Live payload ~2.2 MB of 6.6 MB produced; batch and record overhead cannot make up the rest.
    on_disk = log_bytes(b, topic)
    assert on_disk >= payload(expected), f"{on_disk} bytes on disk cannot hold {payload(expected)} bytes of records"
    assert on_disk < 0.6 * payload(produced), \
        f"{on_disk} bytes of .log files left for {payload(expected)} live of {payload(produced)} produced"
    # The active segment (filler only) is as written: its records were all read back above.
    active = b.local_segments(topic, 0)[-1]
    assert any(g.offset >= active for g in got)

    metrics = cleaner_metrics(b)
    runs = metrics.get("strata_log_cleaner_runs_total")
    removed = metrics.get("strata_log_cleaner_bytes_removed_total")
    assert runs is None or runs > 0, metrics
    assert removed is None or removed > 0, metrics


def test_offsets_headers_and_timestamps_survive_cleaning(broker):
    """Random updates and tombstones over 3 partitions, zstd batches with headers and
    explicit timestamps, tombstones kept (delete.retention.ms=1h): the cleaned log is the
    last record of each key, each at the offset its delivery report gave, with its
    headers and timestamp, in batches a CRC-checking consumer accepts."""
    b = broker(env=ENV)
    topic = "offsets"
    partitions = 3
    compacted_topic(b, topic, partitions, segment_bytes=32 * KiB, delete_retention_ms=HOUR_MS)
    rng = random.Random(42)
    now = int(time.time() * 1000)
    produced: list[Rec] = []
    version: dict[int, int] = {}
    for i in range(9_000):
        k = rng.randrange(900)
        version[k] = version.get(k, 0) + 1
        headers = [("i", b"%d" % i)] if rng.random() < 0.3 else []
        value = None if rng.random() < 0.05 else value_of(k, version[k], rng.randint(20, 300)) + rng.randbytes(8)
        produced.append(Rec(partition=k % partitions, key=key_of(k), value=value, headers=headers,
                            timestamp=now - 60_000 + i))
    for p in range(partitions):
        produced += filler(f"p{p}", 40 * KiB, partition=p)
    produce(b, topic, produced, "zstd", **{"batch.num.messages": 200})
    for p in range(partitions):
        mine = sorted(r.offset for r in produced if r.partition == p)
        assert mine == list(range(len(mine))), f"partition {p}: produce offsets are not dense"
        check_sealed(b, topic, [r for r in produced if r.partition == p and not r.key.startswith(b"filler")], p)

    expected = latest(produced, tombstones_kept=True)
    assert any(r.value is None for r in expected)
    got = wait_compacted(b, topic, produced, expected, partitions=partitions, timestamps=True)
    for p in range(partitions):
        assert gaps([g for g in got if g.partition == p]) > 0, f"partition {p} has no gaps: nothing was cleaned"


def test_tombstones_kept_until_delete_retention(broker):
    """With delete.retention.ms=1h the cleaner removes the older versions of deleted keys
    but keeps their tombstones (null value, at their offsets)."""
    b = broker(env=ENV)
    topic = "graves"
    compacted_topic(b, topic, segment_bytes=64 * KiB, delete_retention_ms=HOUR_MS)
    keys = range(2_000)
    produced = produce(b, topic, versions(keys, 1) + versions(keys, 2))
    produced += produce(b, topic, tombstones(k for k in keys if k % 10 == 0))
    produced += produce(b, topic, filler("a", 80 * KiB))
    check_sealed(b, topic, [r for r in produced if r.value is None])

    expected = latest(produced, tombstones_kept=True)
    got = wait_compacted(b, topic, produced, expected)
    graves = [g for g in got if g.value is None]
    assert sorted(g.key for g in graves) == sorted(key_of(k) for k in keys if k % 10 == 0)
    dead = {key_of(k) for k in keys if k % 10 == 0}
    assert not [g for g in got if g.key in dead and g.value is not None], "an older version of a deleted key is back"


def transactional_produce(b, topic: str, records: list[Rec], *, commit: bool, transactional_id: str) -> list[Rec]:
    """Produces `records` in one transaction, committed or aborted; fills in offsets."""
    producer = Producer({**QUIET, "bootstrap.servers": b.bootstrap, "transactional.id": transactional_id,
                         "batch.size": 16 * KiB})
    producer.init_transactions(30)
    producer.begin_transaction()

    def delivered(err, msg, rec):
        assert err is None, f"{short(rec.key)}: {err}"
        rec.offset = msg.offset()

    for r in records:
        producer.produce(topic, key=r.key, value=r.value, partition=r.partition,
                         on_delivery=lambda err, msg, r=r: delivered(err, msg, r))
        producer.poll(0)
    # librdkafka's abort purges what it has not sent yet: flush first, so the aborted
    # records are in the log.
    assert producer.flush(30) == 0
    if commit:
        producer.commit_transaction(30)
    else:
        producer.abort_transaction(30)
    return records


def stored_batches(b, topic: str, partition: int = 0, *, sealed_only: bool = False):
    """Yields (segment bytes, batch position, base offset, attributes, producer id, record
    count) for every batch in the partition's `.log` files (RecordBatch v2 headers)."""
    import struct

    segments = sorted(b.partition_dir(topic, partition).glob("*.log"))
    for path in segments[:-1] if sealed_only else segments:
        data = path.read_bytes()
        at = 0
        while at + 61 <= len(data):
            base, length = struct.unpack_from(">qi", data, at)
            attributes = struct.unpack_from(">h", data, at + 21)[0]
            producer_id = struct.unpack_from(">q", data, at + 43)[0]
            count = struct.unpack_from(">i", data, at + 57)[0]
            yield data, at, base, attributes, producer_id, count
            at += 12 + length


def control_batches(b, topic: str, partition: int = 0) -> dict[str, int]:
    """Transaction markers in the partition's sealed segments (the active one is never
    cleaned), by kind: attributes bit 5, then the control record's key type."""
    import struct

    def varint(data: bytes, at: int) -> tuple[int, int]:
        shift = value = 0
        while True:
            byte = data[at]
            at += 1
            value |= (byte & 0x7F) << shift
            shift += 7
            if not byte & 0x80:
                return (value >> 1) ^ -(value & 1), at

    counts = {"commit": 0, "abort": 0}
    for data, at, _, attributes, _, _ in stored_batches(b, topic, partition, sealed_only=True):
        if attributes & 0x20:
            pos = at + 61
            _, pos = varint(data, pos)  # record length
            pos += 1  # record attributes
            _, pos = varint(data, pos)  # timestamp delta
            _, pos = varint(data, pos)  # offset delta
            key_len, pos = varint(data, pos)
            kind = struct.unpack_from(">h", data, pos + 2)[0] if key_len == 4 else -1
            name = {0: "abort", 1: "commit"}.get(kind, f"other {kind}")
            counts[name] = counts.get(name, 0) + 1
    return counts


def clean_while_writing(b, topic: str, produced: list[Rec], aborted: list[Rec], tag: str,
                        markers_done=lambda markers: True) -> tuple[list[Rec], list[Got], dict[str, int]]:
    """Reads the topic read_uncommitted until nothing a finished cleaner removes is left
    (superseded and aborted records are pending; anything else fails at once) and
    `markers_done(control_batches)` holds. Markers go passes after their records, so
    each round writes a segment of new keys (added to `produced`) and passes keep
    coming. Returns (expected, read, markers)."""
    deadline = time.monotonic() + CONVERGE_TIMEOUT_S
    round_ = 0
    while True:
        expected = latest(produced, tombstones_kept=False)
        got = confluent_consume(b.bootstrap, topic, 1, timeout=60, **{"isolation.level": "read_uncommitted"})
        broken, pending = check_view(produced + aborted, expected, got)
        assert not broken, f"{topic}: the log is damaged: {summary(broken)}"
        markers = control_batches(b, topic)
        if not pending and markers_done(markers):
            return expected, got, markers
        if time.monotonic() > deadline:
            pytest.fail(f"{topic}: not cleaned after {CONVERGE_TIMEOUT_S}s: still there {summary(pending)}; "
                        f"markers {markers}; cleaner metrics {cleaner_metrics(b)}")
        round_ += 1
        produced += produce(b, topic, filler(f"{tag}{round_}", 40 * KiB))
        time.sleep(0.5)


def test_transactional_compacted_topic(broker):
    """A compacted topic written by transactions: the cleaner removes aborted records
    (read_uncommitted consumers stop seeing them), compacts committed records as any
    other (a later committed value supersedes them), and removes an abort marker once a
    pass found it without records and delete.retention.ms (0 here) passed, while a
    commit marker stays as long as records of its transaction do (and the producer's
    last marker stays). read_committed and read_uncommitted readers end with the same view:
    the last committed value of every key."""
    b = broker(env=ENV)
    topic = "txn-compact"
    compacted_topic(b, topic, segment_bytes=32 * KiB, delete_retention_ms=0)
    tid = "compactor"
    produced = transactional_produce(b, topic, versions(range(200), 1), commit=True, transactional_id=tid)
    aborted = transactional_produce(b, topic, versions(range(200), 2), commit=False, transactional_id=tid)
    produced += transactional_produce(b, topic, versions(range(100), 3), commit=True, transactional_id=tid)
    transactional = produced + aborted
    produced += produce(b, topic, filler("t", 64 * KiB))
    check_sealed(b, topic, transactional)
    # The aborted records were produced at their offsets too: a read_uncommitted reader
    # sees them until the cleaner removes them, never anything else.
    expected, got, markers = clean_while_writing(b, topic, produced, aborted, "more",
                                                 lambda markers: markers["abort"] == 0)
    assert markers == {"commit": 2, "abort": 0}, \
        f"the two commit markers whose transactions keep records stay, the abort marker goes: {markers}"
    committed = confluent_consume(b.bootstrap, topic, 1, timeout=60, **{"isolation.level": "read_committed"})
    broken, pending = check_view(produced, expected, committed)
    assert not broken and not pending, f"read_committed: {summary(broken + pending)}"
    assert [(g.offset, g.value) for g in committed] == [(g.offset, g.value) for g in got]
    # A restart rebuilds the producer state from the cleaned log: nothing is left open,
    # and the transactional id goes on.
    b.restart()
    more = transactional_produce(b, topic, versions(range(5), 4), commit=True, transactional_id=tid)
    # A plain record last: the consumer reads up to the high watermark, and a marker
    # (the last offset otherwise) is never delivered.
    last = produce(b, topic, versions([999], 1))
    got = confluent_consume(b.bootstrap, topic, 1, timeout=60, **{"isolation.level": "read_committed"})
    assert [g.value for g in got][-6:] == [r.value for r in more + last]
    produced += more + last

    # Plain records supersede every record of that last transaction. Its batch was its
    # producer's last: the cleaner leaves it as a batch without records (producer, epoch,
    # sequences), as Kafka does, and every client reads past it.
    produced += produce(b, topic, versions(range(5), 5))
    expected, _, _ = clean_while_writing(b, topic, produced, aborted, "last")
    empty = empty_batches(b, topic)
    assert [(base, count) for base, count, _ in empty] == [(more[0].offset, 0)], \
        f"one empty batch where the last transaction was: {empty}"
    assert empty[0][2] >= 0, "the empty batch keeps its producer id"
    for isolation in ("read_committed", "read_uncommitted"):
        view = confluent_consume(b.bootstrap, topic, 1, timeout=60, **{"isolation.level": isolation})
        assert [(g.offset, g.value) for g in view] == [(r.offset, r.value) for r in expected], isolation
    view = kafka_python_consume(b.bootstrap, topic, 1, timeout=60)
    assert [(g.offset, g.value) for g in view] == [(r.offset, r.value) for r in expected], "kafka-python"


def empty_batches(b, topic: str, partition: int = 0) -> list[tuple[int, int, int]]:
    """(base offset, record count, producer id) of the record-less batches."""
    return [(base, count, producer_id) for _, _, base, _, producer_id, count in stored_batches(b, topic, partition)
            if count == 0]


def test_compact_delete_applies_retention_too(broker):
    """cleanup.policy=compact,delete: segments past retention.ms go even though their keys
    are unique (compaction alone would keep them), newer segments are compacted, and
    cleaned segments still expire by the timestamps of their records."""
    b = broker(env=ENV)
    topic = "both"
    compacted_topic(b, topic, cleanup_policy="compact,delete", retention_ms=600_000, segment_bytes=16 * KiB,
                    segment_ms=1000, delete_retention_ms=0)
    assert describe_topic(b, topic)["cleanup.policy"] in ("compact,delete", "delete,compact")
    now = int(time.time() * 1000)
    old = [Rec(partition=0, key=b"old-%05d" % i, value=b"old %d" % i, timestamp=now - HOUR_MS + i)
           for i in range(2_000)]
    produce(b, topic, old)
    # The last old segment is rolled by segment.ms, then everything is past retention.ms.
    wait_until("retention.ms to delete the hour-old segments",
               lambda: watermarks(b.bootstrap, topic) == (2_000, 2_000), timeout=30, interval=0.2)

    keys = range(500)
    fresh: list[Rec] = []
    for v in (1, 2, 3):
        fresh += produce(b, topic, versions(keys, v, size=100))
    fresh += produce(b, topic, tombstones(k for k in keys if k % 10 == 0))
    fresh += produce(b, topic, filler("a", 20 * KiB))
    assert fresh[0].offset == 2_000
    expected = latest(fresh, tombstones_kept=False)
    low, high = watermarks(b.bootstrap, topic)
    assert low == 2_000 and high == fresh[-1].offset + 1, (low, high)
    got = wait_compacted(b, topic, fresh, expected, start={0: 2_000})
    assert gaps(got) > 0
    low, _ = watermarks(b.bootstrap, topic)
    assert 2_000 <= low <= got[0].offset, f"compaction moved the log start to {low}"

    # The cleaned segments hold records of the last minute: retention.ms=1s expires them all
    # (and segment.ms rolls the active one).
    alter_topic(b, topic, retention_ms=1000)
    wait_until("retention.ms to delete the cleaned segments",
               lambda: watermarks(b.bootstrap, topic) == (high, high), timeout=30, interval=0.2)


def test_cleaned_log_survives_restart(broker, metadata):
    """After cleaning, a restart (SIGTERM) brings back the same log: the same records at the
    same offsets, the same watermarks, the topic still compacted. New writes continue the
    offsets and are cleaned against what was there before."""
    b = broker(metadata=metadata, env=ENV)
    topic = "kept"
    compacted_topic(b, topic, segment_bytes=64 * KiB, delete_retention_ms=HOUR_MS)
    keys = range(3_000)
    produced: list[Rec] = []
    for v in (1, 2, 3):
        produced += produce(b, topic, versions(keys, v, size=100))
    produced += produce(b, topic, tombstones(k for k in keys if k % 10 == 0))
    produced += produce(b, topic, filler("a", 80 * KiB))
    before = wait_compacted(b, topic, produced, latest(produced, tombstones_kept=True))
    marks = watermarks(b.bootstrap, topic)

    b.restart()
    assert watermarks(b.bootstrap, topic) == marks, \
        f"(log start, high watermark) after the restart, {marks} before (compaction moves no log start)"
    assert describe_topic(b, topic)["cleanup.policy"] == "compact"
    after = read(b, topic)
    assert [(g.offset, g.key, g.value) for g in after] == [(g.offset, g.key, g.value) for g in before], \
        "the cleaned log reads differently after a restart"
    by_kcat = kcat_consume_raw(b.bootstrap, topic, 0)
    assert [(g.offset, g.key, g.value) for g in by_kcat] == [(g.offset, g.key, g.value) for g in before]

    # New versions of a third of the keys (including deleted ones, which come back).
    more = produce(b, topic, versions(range(1_000), 4, size=100))
    more += produce(b, topic, filler("b", 80 * KiB))
    assert [r.offset for r in more] == list(range(marks[1], marks[1] + len(more)))
    produced += more
    got = wait_compacted(b, topic, produced, latest(produced, tombstones_kept=True))
    assert not [g for g in got if g.key.startswith(b"key-") and int(g.key[4:9]) < 1_000
                and not g.value.startswith(marker(int(g.key[4:9]), 4))]


def test_kill9_while_cleaning(broker):
    """kill -9 at arbitrary moments while the cleaner rewrites segments: after each
    recovery every acknowledged record that is the last of its key is there, at its offset,
    everything read is what was produced at that offset, and the high watermark is intact;
    in the end the log is fully compacted."""
    b = broker(env=ENV)
    topic = "crashy"
    compacted_topic(b, topic, segment_bytes=128 * KiB, delete_retention_ms=0)
    rng = random.Random(9)
    keys = range(4_000)
    produced: list[Rec] = []
    for round_ in range(4):
        batch = versions(keys, round_ + 1, size=150)
        if round_ == 2:
            batch += tombstones(k for k in keys if k % 7 == 0)
        produced += produce(b, topic, batch + filler(f"r{round_}", 140 * KiB))
        time.sleep(rng.uniform(0.0, 0.8))  # somewhere in the cleaner's work
        b.kill9()
        b.start()
        low, high = watermarks(b.bootstrap, topic)
        assert high == len(produced), f"round {round_}: high watermark {high} after kill -9, {len(produced)} acknowledged"
        assert low == 0, f"round {round_}: after kill -9 the log start offset is {low}, not 0 (compaction moves no log start)"
        got = read(b, topic)
        broken, _ = check_view(produced, latest(produced, tombstones_kept=False), got)
        assert not broken, f"round {round_}: after kill -9 the log is damaged: {summary(broken)}"
    wait_compacted(b, topic, produced, latest(produced, tombstones_kept=False))


def delivery_errors(b, topic: str, records: list[tuple[bytes | None, bytes | None]], **extra) -> list:
    """Produces (key, value) pairs to partition 0 without retries; returns each delivery
    report's error (None for success), in order."""
    config = {**QUIET, "bootstrap.servers": b.bootstrap, "acks": "all", "enable.idempotence": False,
              "retries": 0, "message.timeout.ms": 15000}
    config.update(extra)
    producer = Producer(config)
    results: list = [None] * len(records)
    done = [False] * len(records)

    def callback(i):
        def on_delivery(err, msg):
            results[i] = err
            done[i] = True
        return on_delivery

    for i, (key, value) in enumerate(records):
        producer.produce(topic, key=key, value=value, partition=0, on_delivery=callback(i))
    assert producer.flush(30) == 0
    producer.close()
    assert all(done)
    return results


def test_keyless_records_refused_by_compacted_topics(broker):
    """A record without a key is refused with INVALID_RECORD (87) by a compacted topic
    (compact and compact,delete, also once a delete topic is altered to compact), the whole
    batch with it, and nothing is appended; a delete topic takes it. Tombstones with a key
    are fine. DescribeConfigs shows the compaction configs with Kafka's defaults."""
    b = broker(env=ENV)
    compacted_topic(b, "c")
    create_topic(b.bootstrap, "cd", 1, {"cleanup.policy": "compact,delete"})
    create_topic(b.bootstrap, "d", 1, {"cleanup.policy": "delete"})

    configs = describe_topic(b, "c")
    assert configs["cleanup.policy"] == "compact"
    assert configs["delete.retention.ms"] == "86400000"
    assert configs["min.compaction.lag.ms"] == "0"
    assert configs["max.compaction.lag.ms"] == str(2**63 - 1)
    assert float(configs["min.cleanable.dirty.ratio"]) == 0.01
    assert float(describe_topic(b, "d")["min.cleanable.dirty.ratio"]) == 0.5

    for topic in ("c", "cd"):
        (err,) = delivery_errors(b, topic, [(None, b"no key")])
        assert err is not None and err.code() == KafkaError.INVALID_RECORD, f"{topic}: {err!r}"
        assert watermarks(b.bootstrap, topic) == (0, 0)
    # One batch with a keyless record among keyed ones: all of it is refused. Built by hand:
    # librdkafka's linger does not promise one batch on a loaded machine (CI saw it split).
    batch = record_batch([b"1", b"2", b"3", b"4"], keys=[b"a", b"b", None, b"c"])
    assert raw_produce(b.bootstrap, "c", 0, batch)[0] == KafkaError.INVALID_RECORD
    assert watermarks(b.bootstrap, "c") == (0, 0), "part of a batch with a keyless record was appended"
    keyed = record_batch([b"1", b"2"], keys=[b"a", b"b"])
    assert raw_produce(b.bootstrap, "c", 0, keyed) == (0, 0)
    assert watermarks(b.bootstrap, "c") == (0, 2)

    assert delivery_errors(b, "d", [(None, b"no key")]) == [None]
    assert delivery_errors(b, "c", [(b"k", b"v"), (b"k", None)]) == [None, None]
    assert watermarks(b.bootstrap, "d") == (0, 1)
    assert watermarks(b.bootstrap, "c") == (0, 4)

    alter_topic(b, "d", cleanup_policy="compact")
    (err,) = delivery_errors(b, "d", [(None, b"no key")])
    assert err is not None and err.code() == KafkaError.INVALID_RECORD, repr(err)
    alter_topic(b, "c", cleanup_policy="delete")
    assert delivery_errors(b, "c", [(None, b"no key")]) == [None]


def test_compaction_lags_and_dirty_ratio(broker):
    """min.compaction.lag.ms holds records back from the cleaner; a dirty ratio below
    min.cleanable.dirty.ratio leaves the log alone; max.compaction.lag.ms forces cleaning
    regardless of the ratio."""
    b = broker(env=ENV)
    topic = "lagging"
    compacted_topic(b, topic, segment_bytes=32 * KiB, delete_retention_ms=0, min_compaction_lag_ms=HOUR_MS)
    keys = range(1_000)
    produced = produce(b, topic, versions(keys, 1, size=100) + versions(keys, 2, size=100) + filler("a", 40 * KiB))
    time.sleep(QUIET_PERIOD_S)
    check_untouched(b, topic, produced)

    alter_topic(b, topic, min_compaction_lag_ms=0)
    wait_compacted(b, topic, produced, latest(produced, tombstones_kept=False))

    # A small dirty tail: ratio ~0.2, below 0.99.
    alter_topic(b, topic, min_cleanable_dirty_ratio="0.99")
    more = produce(b, topic, versions(range(100), 3, size=100) + filler("b", 40 * KiB))
    produced += more
    time.sleep(QUIET_PERIOD_S)
    got = read(b, topic)
    superseded = {r.offset for r in produced if r.key.startswith(b"key-") and int(r.key[4:9]) < 100
                  and r.value.startswith(b"key-%05d|v2|" % int(r.key[4:9]))}
    assert superseded <= {g.offset for g in got}, "cleaned although the dirty ratio is below min.cleanable.dirty.ratio"

    alter_topic(b, topic, max_compaction_lag_ms=1000)
    wait_compacted(b, topic, produced, latest(produced, tombstones_kept=False))


# ---------------------------------------------------------------------------------------
# Compacted and tiered
# ---------------------------------------------------------------------------------------


VERSION_IN_BYTES = re.compile(rb"key-(\d{5})\|v(\d)\|")
KEY_IN_BYTES = re.compile(rb"key-(\d{5})")


def versions_in(data: bytes) -> set[tuple[int, int]]:
    """(key, version) of every value in a segment object (written uncompressed)."""
    return {(int(k), int(v)) for k, v in VERSION_IN_BYTES.findall(data)}


def keys_in(data: bytes) -> set[int]:
    """Every key a segment object mentions (in a key or a value)."""
    return {int(k) for k in KEY_IN_BYTES.findall(data)}


def remote_end(b, topic: str, partition: int = 0) -> float | None:
    return b.metric("strata_remote_log_end_offset", topic=topic, partition=str(partition))


def wait_sealed_uploaded(b, topic: str, partition: int = 0, timeout: float = UPLOAD_TIMEOUT_S) -> int:
    active = b.local_segments(topic, partition)[-1]
    wait_until(f"{topic}/{partition}: strata_remote_log_end_offset to reach the active segment at {active}",
               lambda: (remote_end(b, topic, partition) or 0) >= active, timeout=timeout, interval=0.2)
    return active


def test_compacted_tiered_topic(bucket, broker):
    """A compacted topic with remote storage: nothing is uploaded before it was cleaned
    (min.compaction.lag.ms holds the cleaner back), the first objects hold cleaned data
    only; later updates and deletes make the cleaner rewrite the uploaded segments (same
    base offset, a new smaller object, the old one deleted), and a consumer from offset 0,
    served from the bucket once local retention removed the local copies, sees only the
    last value of each key and no deleted key."""
    env = s3_env(bucket.endpoint, bucket.name, remote_upload_interval_ms=200, log_housekeeping_interval_ms=200,
                 log_cleaner_interval_ms=CLEANER_INTERVAL_MS)
    b = broker(env=env)
    topic = "tiered-kv"
    compacted_topic(b, topic, remote_storage_enable="true", segment_bytes=64 * KiB,
                    local_retention_bytes=64 * KiB, delete_retention_ms=0, min_compaction_lag_ms=HOUR_MS)
    keys = range(2_000)
    produced = produce(b, topic, versions(keys, 1) + versions(keys, 2) + filler("a", 80 * KiB))
    time.sleep(QUIET_PERIOD_S)
    assert not bucket.segment_objects(topic, 0), "segments were uploaded before the cleaner ever ran"

    alter_topic(b, topic, min_compaction_lag_ms=0)
    first_active = wait_sealed_uploaded(b, topic)
    first = bucket.segment_objects(topic, 0)
    assert len(first) >= 5, sorted(first)
    first_data = {key: bucket.get(key) for key in first}
    stale = {key: sorted(k for k, v in versions_in(data) if v == 1)[:5] for key, data in first_data.items()}
    stale = {key: ks for key, ks in stale.items() if ks}
    assert not stale, f"uploaded before cleaning (keys whose version 1 is superseded inside): {stale}"

    updated = [k for k in keys if k % 2 == 0]
    deleted = [k for k in keys if k % 10 == 0]
    more = versions(updated, 3) + tombstones(deleted)
    produced += produce(b, topic, more + filler("b", 80 * KiB))
    check_sealed(b, topic, more)
    expected = latest(produced, tombstones_kept=False)
    superseded = {(k, 1) for k in keys} | {(k, 2) for k in updated}
    gone = set(deleted)
    wait_sealed_uploaded(b, topic)
    deadline = time.monotonic() + UPLOAD_TIMEOUT_S
    while True:
        # Every object free of superseded versions and deleted keys, and the manifest lists
        # exactly the objects in the bucket.
        final = bucket.segment_objects(topic, 0)
        listed = b.metric("strata_remote_segments", topic=topic, partition="0")
        left = {}
        for key in final:
            try:
                data = bucket.get(key)
            except Exception as e:  # deleted between the listing and the read: not settled yet
                left[key] = [f"unreadable: {e}"]
                continue
            bad = sorted({f"key-{k:05d}|v{v}" for k, v in versions_in(data) if (k, v) in superseded}
                         | {f"key-{k:05d} (deleted)" for k in keys_in(data) & gone})
            if bad:
                left[key] = bad
        if not left and listed == len(final):
            break
        if time.monotonic() > deadline:
            pytest.fail(f"the uploaded segments were not rewritten within {UPLOAD_TIMEOUT_S}s: "
                        f"strata_remote_segments {listed}, {len(final)} objects; "
                        + "; ".join(f"{key} holds {len(bad)} such as {bad[:3]}" for key, bad in list(left.items())[:5])
                        + f"; cleaner metrics {cleaner_metrics(b)}")
        time.sleep(0.5)
    local = wait_until("local retention to remove the first segments from the disk",
                       lambda: b.local_segments(topic, 0)[0] > 0 and b.local_segments(topic, 0), timeout=60,
                       interval=0.2)

    assert watermarks(b.bootstrap, topic) == (0, len(produced))
    got = wait_compacted(b, topic, produced, expected, start={0: 0})
    from_bucket = [g for g in got if g.offset < local[0]]
    assert len(from_bucket) > 100, f"only {len(from_bucket)} records below the first local segment {local[0]}"

    # Every first object that held a superseded version was replaced: deleted, and a new
    # object for the same base offset, smaller, took its place.
    rewritten = {key: first[key] for key, data in first_data.items() if versions_in(data) & superseded}
    assert rewritten, "no uploaded segment held a record superseded later"
    final_by_base = {o["base"]: (key, o) for key, o in final.items()}
    for key, o in rewritten.items():
        assert key not in final, f"{key} still in the bucket after its segment was rewritten"
        assert o["base"] in final_by_base, f"no object for base offset {o['base']} after the rewrite"
        new_key, new = final_by_base[o["base"]]
        assert new["size"] < o["size"], f"{new_key} ({new['size']} B) is not smaller than {key} ({o['size']} B)"
    before = sum(o["size"] for o in first.values())
    after = sum(o["size"] for o in final.values() if o["base"] < first_active)
    assert after < before, f"objects below offset {first_active}: {after} bytes after the rewrite, {before} before"
