"""Many partitions on one broker: what creating and restarting them skips must not change
what they serve.

- A created partition is a directory: its first segment's files are created by its first
  append. Empty partitions serve (offsets 0, metadata with leaders) before and after a
  restart, and take writes afterwards that read back after another restart.
- Start-up reads manifest roots only for topics the metadata store lists as having one;
  a tiered topic among topics without roots still opens with its remote history (its
  low watermark stays 0 after local retention removed the first segments).

Both run against the embedded store and etcd.
"""

from __future__ import annotations

from confluent_kafka.admin import NewTopic

from clients import check_against_offsets, confluent_admin, confluent_consume, confluent_produce, make_records, watermarks
from servers import wait_until
from test_tiering import KiB, MiB, blob_records, delivered, tier_env, tiered_topic, wait_sealed_uploaded


def create_topics(bootstrap: str, names: list[str], partitions: int) -> None:
    admin = confluent_admin(bootstrap)
    # make_records' timestamps are old: time-based retention must not take them.
    topics = [NewTopic(n, partitions, 1, config={"retention.ms": "-1"}) for n in names]
    futures = admin.create_topics(topics, operation_timeout=60)
    for future in futures.values():
        future.result(timeout=120)


def leaders(bootstrap: str, topics: list[str]) -> dict[str, list[int]]:
    md = confluent_admin(bootstrap).list_topics(timeout=30).topics
    return {t: sorted(p.leader for p in md[t].partitions.values()) for t in topics if t in md}


def test_created_partitions_restart_empty_then_take_writes(broker, metadata):
    b = broker(metadata=metadata)
    names = [f"many-{i}" for i in range(20)]
    create_topics(b.bootstrap, names, 10)
    log_dirs = [p for p in (b.data_dir / "logs").iterdir() if p.name.startswith("many-")]
    assert len(log_dirs) == 20
    for topic_dir in log_dirs:
        for partition_dir in topic_dir.iterdir():
            assert list(partition_dir.iterdir()) == [], f"{partition_dir} holds files before any append"

    b.restart()
    node = leaders(b.bootstrap, names)["many-0"][0]
    assert leaders(b.bootstrap, names) == {n: [node] * 10 for n in names}
    assert watermarks(b.bootstrap, "many-7", 3) == (0, 0)

    produced = make_records(11, 400, 10)
    confluent_produce(b.bootstrap, "many-7", produced, "none")
    ends = delivered(produced)
    got = confluent_consume(b.bootstrap, "many-7", 10)
    check_against_offsets(produced, got, "written after a restart of empty partitions")

    b.restart()
    for p, end in ends.items():
        assert watermarks(b.bootstrap, "many-7", p) == (0, end)
    got = confluent_consume(b.bootstrap, "many-7", 10)
    check_against_offsets(produced, got, "after a second restart")
    assert watermarks(b.bootstrap, "many-8", 9) == (0, 0)


def test_a_tiered_topic_among_many_keeps_its_remote_history_across_a_restart(bucket, broker, metadata):
    b = broker(metadata=metadata, env=tier_env(bucket.endpoint, bucket.name))
    topic = "tiered"
    tiered_topic(b.bootstrap, topic, 2, segment_bytes=64 * KiB, local_retention_bytes=128 * KiB)
    create_topics(b.bootstrap, [f"plain-{i}" for i in range(10)], 5)
    produced = blob_records(12, 2, MiB, 1000, 4000)
    confluent_produce(b.bootstrap, topic, produced, "none", **{"batch.size": 16 * KiB})
    ends = delivered(produced)
    for p in ends:
        wait_sealed_uploaded(b, topic, p)
        wait_until(f"partition {p}: local retention to remove the first segment",
                   lambda: b.local_segments(topic, p)[0] > 0, timeout=60, interval=0.2)

    b.restart()
    for p, end in ends.items():
        # A partition opened without its manifest would start at its first local segment.
        assert watermarks(b.bootstrap, topic, p) == (0, end)
    got = confluent_consume(b.bootstrap, topic, 2)
    check_against_offsets(produced, got, "from offset 0 after a restart, the first segments from the bucket")
    assert watermarks(b.bootstrap, "plain-3", 4) == (0, 0)
