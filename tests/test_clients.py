"""Real clients against a real broker: kcat, confluent-kafka (librdkafka) and kafka-python
each produce 100k records over 4 partitions, 20k per compression codec, and every record is
read back byte for byte (key, value, headers, timestamp) by several consumers.

Consumers use assign() with explicit offsets: Strata has no group coordinator yet.
"""

import time

import pytest
from kafka.partitioner.default import murmur2

from clients import (
    CODECS,
    PRINTABLE,
    check_against_offsets,
    check_in_partition_order,
    confluent_consume,
    confluent_produce,
    create_topic,
    Got,
    kafka_python_consume,
    kafka_python_produce,
    kcat_consume,
    kcat_produce,
    make_records,
    Rec,
)

PARTITIONS = 4
PER_CODEC = 20_000
# Records carry timestamps from 2023: keep them whatever their age.
ENV = {"STRATA_NUM_PARTITIONS": str(PARTITIONS), "STRATA_LOG_RETENTION_MS": "-1"}


def kcat_records(seed: int, count: int) -> list[Rec]:
    """Printable keys and values kcat can take on stdin; the partition is murmur2(key)."""
    import random

    rng = random.Random(seed)
    out = []
    for i in range(count):
        key = b"key-%d-" % i + bytes(rng.choice(PRINTABLE) for _ in range(rng.randint(0, 12)))
        size = rng.choice([1, 10, 60, 200]) if rng.random() < 0.999 else rng.randint(10_000, 60_000)
        value = b"%d:" % i + bytes(rng.choice(PRINTABLE) for _ in range(size))
        partition = (murmur2(key) & 0x7FFFFFFF) % PARTITIONS
        out.append(Rec(partition=partition, key=key, value=value))
    return out


def check_timestamps_agree(*consumed: list[Got]) -> None:
    first = {(g.partition, g.offset): g.timestamp for g in consumed[0]}
    for other in consumed[1:]:
        for g in other:
            assert first[(g.partition, g.offset)] == g.timestamp, (g.partition, g.offset)


@pytest.mark.parametrize("client", ["kcat", "confluent-kafka", "kafka-python"])
def test_produce_and_consume_every_codec(broker, metadata, client):
    b = broker(metadata=metadata, env=ENV)
    topic = f"roundtrip-{client}"
    produced: list[Rec] = []
    started = time.time()
    for n, codec in enumerate(CODECS):
        if client == "kcat":
            records = kcat_records(seed=n, count=PER_CODEC)
            headers = [("codec", codec), ("client", "kcat")]
            # kcat auto-creates the topic (num_partitions=4) on the first run.
            kcat_produce(b.bootstrap, topic, records, codec, headers)
            for r in records:
                r.headers = [(k, v.encode()) for k, v in headers]
        elif client == "confluent-kafka":
            if n == 0:
                create_topic(b.bootstrap, topic, PARTITIONS)
            records = make_records(seed=100 + n, count=PER_CODEC, partitions=PARTITIONS)
            confluent_produce(b.bootstrap, topic, records, codec)
        else:
            if n == 0:
                create_topic(b.bootstrap, topic, PARTITIONS)
            records = make_records(seed=200 + n, count=PER_CODEC, partitions=PARTITIONS, null_headers=False)
            kafka_python_produce(b.bootstrap, topic, records, codec)
        produced += records
    finished = time.time()
    assert len(produced) == len(CODECS) * PER_CODEC >= 100_000

    by_confluent = confluent_consume(b.bootstrap, topic, PARTITIONS)
    by_kafka_python = kafka_python_consume(b.bootstrap, topic, PARTITIONS)
    if client == "kcat":
        by_kcat = kcat_consume(b.bootstrap, topic)
        for what, got in [("confluent-kafka", by_confluent), ("kafka-python", by_kafka_python), ("kcat", by_kcat)]:
            check_in_partition_order(produced, got, f"{what} reading kcat's records")
        # kcat stamps records itself: CreateTime within the produce window, and every
        # consumer must see the same timestamp for the same offset.
        for g in by_confluent:
            assert started * 1000 - 5000 <= g.timestamp <= finished * 1000 + 5000, g
        check_timestamps_agree(by_confluent, by_kafka_python, by_kcat)
    else:
        check_against_offsets(produced, by_confluent, f"confluent-kafka reading {client}'s records")
        check_against_offsets(produced, by_kafka_python, f"kafka-python reading {client}'s records")
    assert {g.partition for g in by_confluent} == set(range(PARTITIONS))


def test_restart_between_produce_and_consume(broker, metadata):
    """A clean restart (SIGTERM, exit 0) between produce and consume loses nothing, and
    the offsets of later appends continue where the log ended."""
    b = broker(metadata=metadata, env=ENV)
    create_topic(b.bootstrap, "restart-confluent", PARTITIONS)
    create_topic(b.bootstrap, "restart-kafka-python", PARTITIONS)
    confluent_records: list[Rec] = []
    for n, codec in enumerate(CODECS):
        records = make_records(seed=300 + n, count=4000, partitions=PARTITIONS)
        confluent_produce(b.bootstrap, "restart-confluent", records, codec)
        confluent_records += records
    kp_records = make_records(seed=400, count=5000, partitions=PARTITIONS, null_headers=False)
    kafka_python_produce(b.bootstrap, "restart-kafka-python", kp_records, "zstd")
    kcat_recs = kcat_records(seed=500, count=3000)
    kcat_produce(b.bootstrap, "restart-kcat", kcat_recs, "lz4", [("via", "kcat")])
    for r in kcat_recs:
        r.headers = [("via", b"kcat")]

    b.restart()

    check_against_offsets(confluent_records, confluent_consume(b.bootstrap, "restart-confluent", PARTITIONS),
                          "confluent-kafka after restart")
    check_against_offsets(confluent_records, kafka_python_consume(b.bootstrap, "restart-confluent", PARTITIONS),
                          "kafka-python after restart")
    check_against_offsets(kp_records, confluent_consume(b.bootstrap, "restart-kafka-python", PARTITIONS),
                          "confluent-kafka reading kafka-python's records after restart")
    check_in_partition_order(kcat_recs, kcat_consume(b.bootstrap, "restart-kcat"), "kcat after restart")

    # Appends after the restart continue the offsets.
    ends = {}
    for r in confluent_records:
        ends[r.partition] = max(ends.get(r.partition, -1), r.offset)
    more = make_records(seed=301, count=2000, partitions=PARTITIONS)
    confluent_produce(b.bootstrap, "restart-confluent", more, "snappy")
    for p in range(PARTITIONS):
        first_new = min(r.offset for r in more if r.partition == p)
        assert first_new == ends[p] + 1, f"partition {p}: first offset after restart {first_new}, log ended at {ends[p]}"

    # A second restart with nothing in between, then everything once more.
    b.restart()
    check_against_offsets(confluent_records + more,
                          confluent_consume(b.bootstrap, "restart-confluent", PARTITIONS),
                          "confluent-kafka after the second restart")
