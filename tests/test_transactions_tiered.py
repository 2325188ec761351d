"""Transactions in the remote tier (moto): sealed segments of a transactional topic are
uploaded with the aborted transactions that overlap them (manifest format v3), so a
read_committed replay from the bucket drops exactly the aborted records, and so does a
broker restarted on an empty disk.

1,000 transactions over two partitions, every third aborted, in 64 KiB segments that
local retention deletes once they are uploaded: read_committed from offset 0 (served by
the bucket) returns exactly the committed records in order, read_uncommitted all of
them; the same after the broker's disk is wiped.
"""

from __future__ import annotations

import time
import uuid

from confluent_kafka import Consumer, Producer, TopicPartition

from clients import QUIET
from test_tiering import KiB, pmetric, tier_env, tiered_topic, wait_uploaded

PARTITIONS = 2
TRANSACTIONS = 1000


def consume(bootstrap: str, topic: str, isolation: str, expected: int, timeout: float = 120) -> dict[int, list[bytes]]:
    consumer = Consumer({
        **QUIET,
        "bootstrap.servers": bootstrap,
        "group.id": f"check-{uuid.uuid4().hex[:8]}",
        "enable.auto.commit": False,
        "isolation.level": isolation,
        "fetch.wait.max.ms": 100,
        # Small fetches: many reads, each from one remote segment.
        "fetch.max.bytes": 32 * KiB,
        "message.max.bytes": 32 * KiB,
        "max.partition.fetch.bytes": 16 * KiB,
    })
    consumer.assign([TopicPartition(topic, p, 0) for p in range(PARTITIONS)])
    got: dict[int, list[bytes]] = {p: [] for p in range(PARTITIONS)}
    deadline = time.monotonic() + timeout
    quiet_since = time.monotonic()
    while time.monotonic() < deadline:
        batch = consumer.consume(1000, timeout=0.5)
        for m in batch:
            assert not m.error() or m.error().code() == -191, f"consumer error: {m.error()}"
            if not m.error():
                got[m.partition()].append(m.value())
        if batch:
            quiet_since = time.monotonic()
        if sum(len(v) for v in got.values()) >= expected and time.monotonic() - quiet_since > 2:
            break
    consumer.close()
    return got


def test_read_committed_replay_from_the_bucket_and_an_empty_disk(bucket, broker, tmp_path):
    meta_dir = tmp_path / "metadata-outside-data-dir"
    meta_dir.mkdir()
    env = tier_env(bucket.endpoint, bucket.name, transaction_state_partitions=3, offsets_topic_partitions=3)
    b = broker(metadata=f"file://{meta_dir}", env=env)
    topic = "txtier"
    tiered_topic(b.bootstrap, topic, PARTITIONS, segment_bytes=64 * KiB, segment_ms=1000,
                 local_retention_bytes=1)
    producer = Producer({**QUIET, "bootstrap.servers": b.bootstrap, "transactional.id": "tiered",
                         "linger.ms": 0})
    producer.init_transactions(30)
    committed: dict[int, list[bytes]] = {p: [] for p in range(PARTITIONS)}
    everything: dict[int, list[bytes]] = {p: [] for p in range(PARTITIONS)}
    filler = b"x" * 700
    for txn in range(TRANSACTIONS):
        producer.begin_transaction()
        for i in range(2 * PARTITIONS):
            partition = i % PARTITIONS
            value = b"t%04d-r%d-" % (txn, i) + filler
            producer.produce(topic, value=value, partition=partition)
            everything[partition].append(value)
            if txn % 3 != 2:
                committed[partition].append(value)
        if txn % 3 == 2:
            producer.flush(30)
            producer.abort_transaction(30)
        else:
            producer.commit_transaction(30)
    # segment.ms seals the last segments; everything is uploaded and the local copies of
    # all but the active segment go (local.retention.bytes=1).
    ends = {}
    for p in range(PARTITIONS):
        end = len(everything[p]) + TRANSACTIONS  # records and one marker per transaction
        ends[p] = end
        wait_uploaded(b, topic, p, end)
    deadline = time.monotonic() + 60
    while any((pmetric(b, "strata_local_log_start_offset", topic, p) or 0) < ends[p] // 2 for p in range(PARTITIONS)):
        assert time.monotonic() < deadline, "local retention did not remove the uploaded segments"
        time.sleep(0.3)

    total_committed = sum(len(v) for v in committed.values())
    got = consume(b.bootstrap, topic, "read_committed", total_committed)
    assert got == committed, "read_committed from the bucket must return exactly the committed records, in order"
    got = consume(b.bootstrap, topic, "read_uncommitted", sum(len(v) for v in everything.values()))
    assert got == everything

    assert b.stop() == 0, f"strata exited uncleanly on SIGTERM:\n{b.log_tail()}"
    b.wipe_data_dir()
    b.start()
    got = consume(b.bootstrap, topic, "read_committed", total_committed)
    assert got == committed, "an empty-disk broker must serve read_committed history from the bucket"
