"""Compaction and CreatePartitions on diskless topics, black-box: two brokers sharing
etcd and one moto bucket (tests/diskless_cluster.py), fast merges and an eager log
cleaner, real clients.

- Compaction: a diskless topic created with cleanup.policy=compact, and one switched to
  compact with IncrementalAlterConfigs afterwards, take many updates of a few keys; once
  every run is merged and a cleaner round has passed, a consumer reading from the
  beginning finds, for each key, only its last value, at the offset it was acknowledged
  at; the unique-key records written last are all there; the log's start and end do not
  move, and both brokers serve the same compacted log.
- CreatePartitions: a diskless topic grows from 2 to 5 partitions; both brokers list 5
  partitions, take produce for the new ones (partition 4 through broker A, by hand and
  with a client) and serve them (read through broker B); shrinking is refused.

The cleaner is made eager (log_cleaner_interval_ms=200, min.cleanable.dirty.ratio=0.01);
what is checked is the consumer's view, polled until it holds (a wait with a deadline).
"""

from __future__ import annotations

import time

import pytest
from confluent_kafka import KafkaError, Producer, TopicPartition
from confluent_kafka.admin import AlterConfigOpType, ConfigEntry, ConfigResource, NewPartitions, ResourceType

from clients import QUIET, Rec, confluent_admin, confluent_consume
from diskless_cluster import DISKLESS, World, attach_logs, start_world, zone
from test_diskless import batch_of, high_watermark, metadata_leaders, produce, read_through

A, B = 1, 2
NONE = 0
COMPACT_WAIT_S = 60


@pytest.fixture(scope="module")
def world(tmp_path_factory, etcd, moto, strata_bin):
    yield from start_world(tmp_path_factory, etcd, moto, {
        "STRATA_LOG_CLEANER_INTERVAL_MS": "200",
        "STRATA_LOG_HOUSEKEEPING_INTERVAL_MS": "200",
    }, name="dlops")


@pytest.fixture
def w(world, request, etcd, moto) -> World:
    return attach_logs(world, request, etcd, moto)


# ---------------------------------------------------------------------------------------
# Compaction
# ---------------------------------------------------------------------------------------

KEYS = 6
ROUNDS = 40
COMPACT = {"cleanup.policy": "compact", "min.cleanable.dirty.ratio": "0.01", "min.compaction.lag.ms": "0",
           "retention.ms": "-1", "retention.bytes": "-1"}


def updates(partition: int) -> list[Rec]:
    """ROUNDS versions of KEYS keys, interleaved, then unique-key filler (never
    superseded) of a few merge targets (1 KiB), so whatever the newest merged segment
    is, the keys' older versions are in segments before it."""
    out = [Rec(partition=partition, key=b"key-%d" % k, value=b"key-%d|v%03d|" % (k, v) + b"~" * 40)
           for v in range(ROUNDS) for k in range(KEYS)]
    out += [Rec(partition=partition, key=b"filler-%03d" % i, value=b"filler-%03d|" % i + b"#" * 200)
            for i in range(20)]
    return out


def produce_in_runs(w: World, topic: str, records: list[Rec]) -> None:
    """Produces through broker A in small acks=all batches, a flush each (several runs,
    several merged segments); each record's offset is set from its delivery report."""
    producer = Producer({**QUIET, "bootstrap.servers": w.a.bootstrap, **zone(A, "dl-compact"), "acks": "all",
                         "enable.idempotence": True, "linger.ms": 5, "message.timeout.ms": 60000})
    errors: list = []

    def placed(rec: Rec):
        def on_delivery(err, msg):
            if err is not None:
                errors.append(err)
            else:
                rec.offset = msg.offset()
        return on_delivery

    for i in range(0, len(records), 24):
        for rec in records[i:i + 24]:
            producer.produce(topic, key=rec.key, value=rec.value, partition=rec.partition, on_delivery=placed(rec))
        assert producer.flush(30) == 0, f"{topic}: records not acknowledged within 30s"
    assert not errors, f"{topic}: delivery errors {errors[:3]}"


def expected_after_compaction(records: list[Rec]) -> list[tuple[int, bytes, bytes]]:
    last: dict[tuple[int, bytes], Rec] = {}
    for r in records:
        last[(r.partition, r.key)] = r
    return sorted((r.partition, r.offset, r.value) for r in last.values())


def alter(w: World, topic: str, configs: dict[str, str]) -> None:
    admin = confluent_admin(w.a.bootstrap)
    resource = ConfigResource(ResourceType.TOPIC, topic, incremental_configs=[
        ConfigEntry(k, v, incremental_operation=AlterConfigOpType.SET) for k, v in configs.items()])
    try:
        admin.incremental_alter_configs([resource])[resource].result(timeout=60)
    except Exception as e:  # noqa: BLE001 - the refusal is the failure
        pytest.fail(f"IncrementalAlterConfigs {configs} on diskless topic {topic} was refused: {e}", pytrace=False)


def test_compaction_keeps_the_last_value_of_each_key(w):
    created, altered, n = "dl-compact", "dl-compact-later", 2
    w.create(created, n, {**DISKLESS, **COMPACT})
    w.create(altered, n, {**DISKLESS, "retention.ms": "-1", "retention.bytes": "-1"})
    admin = confluent_admin(w.a.bootstrap)  # kept alive until the answer is in
    (configs,) = [f.result(timeout=30) for f in
                  admin.describe_configs([ConfigResource(ResourceType.TOPIC, created)]).values()]
    assert configs["cleanup.policy"].value == "compact" and configs["diskless.enable"].value == "true"

    produced = {t: [r for p in range(n) for r in updates(p)] for t in (created, altered)}
    for topic, records in produced.items():
        # Partition by partition, so each partition's versions follow each other.
        for p in range(n):
            produce_in_runs(w, topic, [r for r in records if r.partition == p])
    for records in produced.values():
        for p in range(n):
            offsets = [r.offset for r in records if r.partition == p]
            assert offsets == list(range(len(offsets))), f"partition {p}: offsets {offsets[:10]}..."
    # The altered topic switches to compact only now, with its history already written.
    alter(w, altered, COMPACT)

    for topic in produced:
        w.wait_merged(topic, n)
    ends = {p: ROUNDS * KEYS + 20 for p in range(n)}

    for topic, records in produced.items():
        want = expected_after_compaction(records)
        everything = sorted((r.partition, r.offset, r.value) for r in records)
        last_seen: list = [None]

        def compacted():
            got = confluent_consume(w.b.bootstrap, topic, n, **zone(B, "dl-compact-read"))
            seen = sorted((g.partition, g.offset, g.value) for g in got)
            last_seen[0] = seen
            # Whatever the cleaner did so far, every record read is the one produced at
            # that offset, and every key's last value is there.
            stray = set(seen) - set(everything)
            assert not stray, f"{topic}: records never produced at those offsets: {sorted(stray)[:5]}"
            missing = set(want) - set(seen)
            assert not missing, f"{topic}: the last value of a key is gone: {sorted(missing)[:5]}"
            return seen == want

        deadline = time.monotonic() + COMPACT_WAIT_S
        while not compacted():
            if time.monotonic() > deadline:
                seen = last_seen[0]
                per_key: dict = {}
                for p, o, v in seen:
                    per_key.setdefault((p, v.split(b"|")[0]), []).append(o)
                dupes = {k: len(v) for k, v in per_key.items() if len(v) > 1}
                pytest.fail(f"{topic}: not compacted {COMPACT_WAIT_S}s after merging: {len(seen)} records "
                            f"(want {len(want)}); versions per key: {dupes}", pytrace=False)
            time.sleep(0.5)
        for p in range(n):
            for node in (A, B):
                assert high_watermark(w.broker(node), topic, p) == ends[p], f"{topic}/{p}: end moved on node {node}"
            # Broker A serves the same compacted log (read by hand, through A itself).
            by_hand = read_through_bytes(w, A, topic, p)
            assert by_hand == [(o, v) for q, o, v in want if q == p], f"{topic}/{p} through broker A by hand"


def read_through_bytes(w: World, node: int, topic: str, partition: int) -> list[tuple[int, bytes]]:
    """(offset, value) of every record of the partition, fetched from broker `node`
    itself (Fetch v4 by hand)."""
    from test_diskless import decode_batches, fetch

    out: list[tuple[int, bytes]] = []
    b = w.broker(node)
    position, end = 0, None
    deadline = time.monotonic() + 60
    while end is None or position < end:
        error, hw, data = fetch(b.bootstrap, topic, partition, position)
        assert error == NONE, f"{topic}/{partition} at {position} through node {node}: error {error}"
        end = hw if end is None else end
        for offset, value in decode_batches(data):
            if offset >= position:
                out.append((offset, value))
                position = offset + 1
        assert time.monotonic() < deadline, f"{topic}/{partition} through node {node}: stuck at {position} of {end}"
    return out


# ---------------------------------------------------------------------------------------
# CreatePartitions
# ---------------------------------------------------------------------------------------


def test_create_partitions_grows_a_diskless_topic_on_both_brokers(w):
    topic = "dl-grow"
    # Batches made by hand carry 2023 timestamps: no time retention, or the merged
    # history would be deleted under the test.
    w.create(topic, 2, {**DISKLESS, "retention.ms": "-1"})
    for p in range(2):
        assert produce(w.a.bootstrap, topic, p, batch_of([f"{p}:old:0"]))[0] == NONE

    admin = confluent_admin(w.a.bootstrap)
    try:
        admin.create_partitions([NewPartitions(topic, 5)])[topic].result(timeout=60)
    except Exception as e:  # noqa: BLE001 - the refusal is the failure
        pytest.fail(f"CreatePartitions {topic} 2 -> 5 was refused: {e}", pytrace=False)
    w.wait_listed(topic, 5)
    for node in (A, B):
        leaders = metadata_leaders(w.broker(node).bootstrap, topic)
        assert sorted(leaders) == list(range(5)), f"broker {node} lists {leaders}"
        md = confluent_admin(w.broker(node).bootstrap).list_topics(topic=topic, timeout=15)
        assert sorted(md.topics[topic].partitions) == list(range(5)), f"broker {node}: {md.topics[topic].partitions}"
        # The new partitions are empty and answer ListOffsets on every broker.
        for p in range(2, 5):
            assert high_watermark(w.broker(node), topic, p) == 0, f"broker {node}: {topic}/{p} not empty"

    # Produce by hand to each new partition through each broker.
    for p in range(2, 5):
        for node in (A, B):
            values = [f"{p}:hand{node}:0", f"{p}:hand{node}:1"]
            error, _ = produce(w.broker(node).bootstrap, topic, p, batch_of(values))
            assert error == NONE, f"produce to new partition {p} through broker {node}: error {error}"
    # A client producing to partition 4 through broker A (the producer's zone).
    producer = Producer({**QUIET, "bootstrap.servers": w.a.bootstrap, **zone(A, "dl-grow"), "acks": "all",
                         "linger.ms": 5})
    placed: list = []
    for i in range(30):
        producer.produce(topic, value=b"4:client:%d" % i, partition=4,
                         on_delivery=lambda err, msg: placed.append((err, msg.offset())))
    assert producer.flush(30) == 0
    assert all(err is None for err, _ in placed), placed[:3]
    assert sorted(o for _, o in placed) == list(range(4, 34)), placed

    # Read through broker B, by hand and with a client steered to B.
    want = {p: [f"{p}:hand1:0", f"{p}:hand1:1", f"{p}:hand2:0", f"{p}:hand2:1"] for p in range(2, 5)}
    want[4] += [f"4:client:{i}" for i in range(30)]
    for p in range(2, 5):
        got = read_through(w.b, topic, p)
        assert got == list(enumerate(want[p])), f"{topic}/{p} through broker B: {got}"
        assert read_through(w.a, topic, p) == got, f"{topic}/{p}: brokers A and B disagree"
    got = confluent_consume(w.b.bootstrap, topic, 5, **zone(B, "dl-grow-read"))
    by_partition = {p: [g.value.decode() for g in sorted(got, key=lambda g: g.offset) if g.partition == p]
                    for p in range(5)}
    assert by_partition == {0: ["0:old:0"], 1: ["1:old:0"], **want}, by_partition

    # Fewer partitions is refused, as Kafka does; the topic keeps its 5.
    error = admin.create_partitions([NewPartitions(topic, 3)])[topic].exception(timeout=60)
    assert error is not None and error.args[0].code() == KafkaError.INVALID_PARTITIONS, error
    assert sorted(metadata_leaders(w.b.bootstrap, topic)) == list(range(5))
