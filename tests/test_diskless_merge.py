"""Diskless merging, retention, DeleteRecords, deletion and scrubbing, on one broker with
etcd and moto: runs become segments of the tiered format in the bucket and leave etcd,
every record reads back from offset 0 with dense offsets, DeleteRecords and retention.bytes
move the log start (and delete merged segments), deleting the topic deletes its objects
and metadata, and shared objects no run references are scrubbed after the grace period
while referenced ones never are.

The bucket is inspected with boto3 and etcd through its JSON gateway, not through the
broker. Every wait polls until a condition holds (no timed assertion).
"""

from __future__ import annotations

import json
import uuid

from confluent_kafka import KafkaError, TopicPartition
from confluent_kafka.admin import AlterConfigOpType, ConfigEntry, ConfigResource, NewPartitions, ResourceType

from clients import (Rec, check_against_offsets, confluent_admin, confluent_consume, confluent_produce, create_topic,
                     make_records, watermarks)
from servers import s3_env, wait_until

TOPIC = "dl-merge"
PARTITIONS = 2
WAIT_S = 120


def diskless_env(bucket) -> dict[str, str]:
    """Fast merging (1 KiB segments, 300 ms age) and scrubbing; the grace periods stay
    well above any PUT-to-commit time on a loaded machine, or the scrubbers could take an
    object about to be committed."""
    return s3_env(
        bucket.endpoint, bucket.name,
        diskless_append_interval_ms=50,
        diskless_merge_interval_ms=200,
        diskless_merge_bytes=1024,
        diskless_merge_max_age_ms=300,
        remote_scrub_interval_ms=300,
        remote_scrub_grace_ms=8_000,
        diskless_scrub_grace_ms=5_000,
        # Below the floors (1 min, 5 min): allowed for tests only.
        testing_short_scrub_grace="true",
    )


def diskless_keys(etcd, prefix: str) -> dict[str, str]:
    """Every diskless record in etcd under the cluster's prefix: key -> JSON text."""
    return etcd.get_prefix(f"{prefix}/diskless/")


def manifest_keys(etcd, prefix: str) -> list[str]:
    """The keys under `prefix` in etcd (manifest roots are binary: keys only)."""
    import base64

    from servers import http_post
    key = prefix.encode()
    range_end = key[:-1] + bytes([key[-1] + 1])
    body = json.dumps({"key": base64.b64encode(key).decode(), "range_end": base64.b64encode(range_end).decode(),
                       "keys_only": True}).encode()
    status, text = http_post(f"http://{etcd.endpoint}/v3/kv/range", body)
    assert status == 200, f"etcd range answered {status}: {text}"
    return [base64.b64decode(kv["key"]).decode() for kv in json.loads(text).get("kvs", [])]


def shared_objects(bucket) -> dict[str, int]:
    return {k: v for k, v in bucket.objects().items() if "/diskless/" in f"/{k}"}


def alter(admin, topic: str, configs: dict[str, str]) -> None:
    resource = ConfigResource(ResourceType.TOPIC, topic, incremental_configs=[
        ConfigEntry(name, value, incremental_operation=AlterConfigOpType.SET) for name, value in configs.items()])
    admin.incremental_alter_configs([resource])[resource].result(timeout=60)


def test_diskless_merge_retention_delete_and_scrub(broker, etcd, bucket):
    prefix = f"dl-merge-{uuid.uuid4().hex[:8]}"
    b = broker(env=diskless_env(bucket), metadata=etcd.url(prefix))
    create_topic(b.bootstrap, TOPIC, PARTITIONS,
                 {"diskless.enable": "true", "retention.ms": "-1", "retention.bytes": "-1"})
    records = make_records(7, 600, PARTITIONS)
    # In four rounds, each acknowledged before the next: at least four flushes, so several
    # runs per partition to merge (one produce may fit one flush: a connection's requests
    # all wait for the same flush).
    for start in range(0, len(records), 150):
        confluent_produce(b.bootstrap, TOPIC, records[start:start + 150], "none",
                          **{"batch.num.messages": 20, "linger.ms": 5})
    ends = {p: sum(1 for r in records if r.partition == p) for p in range(PARTITIONS)}
    assert all(ends.values())

    # Merged: segments in the bucket, no run left in etcd, merged == next == the end.
    def merged():
        keys = diskless_keys(etcd, prefix)
        heads = [json.loads(v) for k, v in keys.items() if k.endswith("/head")]
        runs = [k for k in keys if "/runs/" in k]
        done = len(heads) == PARTITIONS and not runs and all(h["merged"] == h["next"] for h in heads)
        return heads if done else None
    heads = wait_until("every run merged and trimmed", merged, timeout=WAIT_S)
    assert sorted(h["next"] for h in heads) == sorted(ends.values())
    # A 1 KiB merge target: several segments per partition, following each other, each
    # starting with a batch whose base offset is the one in its name.
    segments = bucket.segment_objects(TOPIC)
    for p in range(PARTITIONS):
        mine = {k: o for k, o in segments.items() if o["partition"] == p}
        assert len(mine) > 1, f"partition {p}: {mine}"
        assert min(o["base"] for o in mine.values()) == 0
        for key, o in mine.items():
            assert int.from_bytes(bucket.head_bytes(key, 8), "big", signed=True) == o["base"], key

    # Everything reads back from offset 0: dense, in order, byte for byte.
    got = confluent_consume(b.bootstrap, TOPIC, PARTITIONS)
    check_against_offsets(records, got, "diskless after merging")
    assert (b.metric("strata_diskless_merges_total", topic=TOPIC) or 0) >= 2 * PARTITIONS

    # Merged shared objects are scrubbed after the grace period; so is an orphan (the
    # unit tests check that a referenced object never is).
    wait_until("merged shared objects scrubbed", lambda: not shared_objects(bucket), timeout=WAIT_S)
    cluster_prefix = next(iter(segments)).split("/topics/")[0]
    orphan = f"{cluster_prefix}/diskless/2026010100/9-{uuid.uuid4()}.batches"
    bucket.client.put_object(Bucket=bucket.name, Key=orphan, Body=b"no run references this")
    wait_until("the orphan shared object scrubbed", lambda: orphan not in bucket.objects(), timeout=WAIT_S)
    # A merged segment no manifest references (a merge that crashed before its commit, or
    # lost the race) goes too; the committed ones stay.
    some_segment = next(k for k, o in segments.items() if o["partition"] == 0)
    stray = f"{some_segment.rsplit('/', 1)[0]}/{10**15:020}-{uuid.uuid4()}.segment"
    bucket.client.put_object(Bucket=bucket.name, Key=stray, Body=b"never committed")
    wait_until("the orphan merged segment scrubbed", lambda: stray not in bucket.objects(), timeout=WAIT_S)
    assert set(bucket.segment_objects(TOPIC)) == set(segments), "a committed segment was scrubbed"
    assert (b.metric("strata_diskless_scrubbed_objects_total") or 0) >= 2

    # DeleteRecords: the low watermark moves and merged segments wholly below it go; past
    # the high watermark is refused.
    admin = confluent_admin(b.bootstrap)
    cut = ends[0] // 2
    tp = TopicPartition(TOPIC, 0, cut)
    assert admin.delete_records([tp])[tp].result(timeout=60).low_watermark == cut
    assert watermarks(b.bootstrap, TOPIC, 0) == (cut, ends[0])
    beyond = TopicPartition(TOPIC, 0, ends[0] + 10)
    error = admin.delete_records([beyond])[beyond].exception(timeout=60)
    assert error is not None and error.args[0].code() == KafkaError.OFFSET_OUT_OF_RANGE, error
    assert watermarks(b.bootstrap, TOPIC, 0) == (cut, ends[0])
    # The answer comes before the deletion of the segments below the cut (in the
    # background, after the manifest's start moved).
    def trimmed_below_cut():
        left = bucket.segment_objects(TOPIC, 0)
        return left and min(o["base"] for o in left.values()) > 0
    wait_until("segments wholly below the cut deleted", trimmed_below_cut, timeout=WAIT_S)

    got = confluent_consume(b.bootstrap, TOPIC, PARTITIONS, start={0: cut})
    check_against_offsets([r for r in records if r.partition != 0 or r.offset >= cut], got, "after DeleteRecords")

    # retention.bytes: the merge owner deletes partition 1's oldest merged segments and
    # its low watermark follows (1 byte keeps only the newest segment).
    assert watermarks(b.bootstrap, TOPIC, 1)[0] == 0
    alter(admin, TOPIC, {"retention.bytes": "1"})
    wait_until("retention moved partition 1's log start",
               lambda: len(bucket.segment_objects(TOPIC, 1)) == 1 and watermarks(b.bootstrap, TOPIC, 1)[0] > 0,
               timeout=WAIT_S)
    (newest,) = bucket.segment_objects(TOPIC, 1).values()
    assert watermarks(b.bootstrap, TOPIC, 1) == (newest["base"], ends[1])

    # CreatePartitions: the new partition takes produce and reads back; shrinking is
    # refused as Kafka refuses it.
    alter(admin, TOPIC, {"retention.bytes": "-1"})
    admin.create_partitions([NewPartitions(TOPIC, PARTITIONS + 1)])[TOPIC].result(timeout=60)
    added = make_records(9, 50, 1)
    for r in added:
        r.partition = PARTITIONS
    confluent_produce(b.bootstrap, TOPIC, added, "none")
    assert watermarks(b.bootstrap, TOPIC, PARTITIONS) == (0, len(added))
    # Retention (1 byte above) moved the old partitions' starts: read the new one only.
    got = confluent_consume(b.bootstrap, TOPIC, PARTITIONS + 1, start=ends)
    check_against_offsets(added, got, "the partition CreatePartitions added")
    error = admin.create_partitions([NewPartitions(TOPIC, PARTITIONS)])[TOPIC].exception(timeout=60)
    assert error is not None and error.args[0].code() == KafkaError.INVALID_PARTITIONS, error

    # Topic deletion: its merged objects and its etcd records go.
    admin.delete_topics([TOPIC])[TOPIC].result(timeout=60)
    wait_until("the topic's merged objects deleted", lambda: not bucket.segment_objects(TOPIC), timeout=WAIT_S)
    wait_until("the topic's diskless records deleted", lambda: not diskless_keys(etcd, prefix), timeout=WAIT_S)


def test_diskless_topic_deletion_without_the_scrubbers(broker, etcd, bucket):
    """DeleteTopics alone deletes a merged diskless topic's segments, etcd records and
    manifest roots: the scrubbers run once an hour here, so they cannot be what did it."""
    prefix = f"dl-delete-{uuid.uuid4().hex[:8]}"
    env = {**diskless_env(bucket), "STRATA_REMOTE_SCRUB_INTERVAL_MS": "3600000"}
    b = broker(env=env, metadata=etcd.url(prefix))
    create_topic(b.bootstrap, TOPIC, PARTITIONS,
                 {"diskless.enable": "true", "retention.ms": "-1", "retention.bytes": "-1"})
    confluent_produce(b.bootstrap, TOPIC, make_records(3, 200, PARTITIONS), "none",
                      **{"batch.num.messages": 20, "linger.ms": 5})
    manifests = lambda: manifest_keys(etcd, f"{prefix}/manifests/")  # noqa: E731
    wait_until("segments merged and their manifests written",
               lambda: bucket.segment_objects(TOPIC) and len(manifests()) >= PARTITIONS, timeout=WAIT_S)
    admin = confluent_admin(b.bootstrap)
    admin.delete_topics([TOPIC])[TOPIC].result(timeout=60)
    wait_until("the topic's merged objects deleted", lambda: not bucket.segment_objects(TOPIC), timeout=WAIT_S)
    wait_until("the topic's diskless records deleted", lambda: not diskless_keys(etcd, prefix), timeout=WAIT_S)
    wait_until("the topic's manifest roots deleted", lambda: not manifests(), timeout=WAIT_S)


def test_diskless_compaction_keeps_the_latest_value_of_each_key(broker, etcd, bucket):
    """A compacted diskless topic: once its runs are merged, the merge owner's cleaner
    passes leave only the last record of each key in the merged history, at the offset
    it was acknowledged with, and the cleaner metrics count the passes."""
    prefix = f"dl-compact-{uuid.uuid4().hex[:8]}"
    env = {**diskless_env(bucket), "STRATA_LOG_CLEANER_INTERVAL_MS": "500"}
    b = broker(env=env, metadata=etcd.url(prefix))
    topic, keys, updates = "dl-compacted", 10, 600
    create_topic(b.bootstrap, topic, 1, {"diskless.enable": "true", "cleanup.policy": "compact"})
    records = [Rec(partition=0, key=b"key-%d" % (i % keys), value=b"value-%d-" % i + b"x" * 40)
               for i in range(updates)]
    confluent_produce(b.bootstrap, topic, records, "none", **{"batch.num.messages": 20, "linger.ms": 5})
    latest = list({r.key: r for r in records}.values())
    wait_until("only the latest record of each key left",
               lambda: len(confluent_consume(b.bootstrap, topic, 1)) == keys, timeout=WAIT_S)
    check_against_offsets(latest, confluent_consume(b.bootstrap, topic, 1), "after compaction", timestamps=False)
    assert watermarks(b.bootstrap, topic, 0) == (0, updates)
    assert (b.metric("strata_log_cleaner_runs_total", topic=topic) or 0) >= 1
    assert (b.metric("strata_log_cleaner_bytes_removed_total", topic=topic) or 0) > 0
