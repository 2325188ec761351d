"""Tiered storage against a real S3 API (moto): sealed segments are uploaded, local copies
go past local retention, history is read back from the bucket byte for byte, total
retention deletes remote objects, an object store outage does not stop produce, a crash
between upload and manifest commit leaves nothing visible behind, a broker on an empty
disk serves its history from the bucket, and deleting a topic deletes its objects.

The bucket is inspected with boto3 (a client other than the broker's); every test has its
own bucket in the session's moto. `strata_remote_log_end_offset` is one past the last
offset the remote tier holds (like `strata_log_end_offset`), so "every sealed segment is
uploaded" means it has reached the base offset of the active segment.
"""

from __future__ import annotations

import random
import shutil
import threading
import time

import crc32c
import pytest
from confluent_kafka import Producer
from confluent_kafka.admin import AlterConfigOpType, ConfigEntry, ConfigResource, ResourceType

from clients import (QUIET, Got, Rec, check_against_offsets, confluent_admin, confluent_consume, confluent_produce,
                     create_topic, kcat_consume_raw, make_records, watermarks)
from servers import s3_client, s3_env, wait_until

KiB = 1 << 10
MiB = 1 << 20

UPLOAD_TIMEOUT_S = 120


def tier_env(endpoint: str, bucket: str, **settings) -> dict[str, str]:
    """Tiered storage on `bucket` with fast background loops."""
    base = {"remote_upload_interval_ms": 200, "log_housekeeping_interval_ms": 200}
    base.update(settings)
    return s3_env(endpoint, bucket, **base)


def tiered_topic(bootstrap: str, topic: str, partitions: int, **configs) -> None:
    """A topic with remote storage on and nothing expiring unless `configs` says so
    (keyword names with `_` for `.`: segment_bytes=MiB)."""
    config = {"remote.storage.enable": "true", "retention.ms": "-1", "retention.bytes": "-1"}
    config.update({k.replace("_", "."): str(v) for k, v in configs.items()})
    create_topic(bootstrap, topic, partitions, config)


def blob_records(seed: int, partitions: int, total_bytes: int, min_size: int, max_size: int) -> list[Rec]:
    """Records with random binary values of min_size..max_size bytes (about
    `total_bytes` of values in all), round-robin over the partitions, some null keys,
    recent timestamps."""
    rng = random.Random(seed)
    ts = int(time.time() * 1000) - 200_000
    out = []
    size = 0
    i = 0
    while size < total_bytes:
        value = b"%d:" % i + rng.randbytes(rng.randint(min_size, max_size))
        key = None if i % 97 == 13 else b"key-%d-" % i + rng.randbytes(rng.randint(0, 16))
        out.append(Rec(partition=i % partitions, key=key, value=value, timestamp=ts + i))
        size += len(value)
        i += 1
    return out


# ---------------------------------------------------------------------------------------
# What the broker reports and what the bucket holds
# ---------------------------------------------------------------------------------------


def pmetric(b, name: str, topic: str, partition: int) -> float | None:
    return b.metric(name, topic=topic, partition=str(partition))


def remote_end(b, topic: str, partition: int) -> float | None:
    return pmetric(b, "strata_remote_log_end_offset", topic, partition)


def wait_uploaded(b, topic: str, partition: int, end: int, timeout: float = UPLOAD_TIMEOUT_S) -> None:
    """Waits until the remote tier holds every offset below `end` (a segment boundary)."""
    deadline = time.monotonic() + timeout
    while (value := remote_end(b, topic, partition)) is None or value < end:
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout}s waiting for {topic}/{partition}: strata_remote_log_end_offset "
                        f"is {value} (None: not reported), not yet {end}")
        time.sleep(0.2)


def wait_sealed_uploaded(b, topic: str, partition: int, timeout: float = UPLOAD_TIMEOUT_S) -> int:
    """Waits until every sealed segment is uploaded (the remote end reaches the active
    segment's base offset); returns that base offset."""
    active = b.local_segments(topic, partition)[-1]
    wait_uploaded(b, topic, partition, active, timeout)
    return active


def topic_prefix(key: str) -> str:
    """`[PREFIX/]topics/<topic>.<id>/` of an object key."""
    head, _, _ = key.rpartition("/")  # drop the object name
    return head.rpartition("/")[0] + "/"  # and the partition


def same_id(a: str, b: str) -> bool:
    """Topic ids compared as UUIDs: the local directory and the object key may spell
    them with or without hyphens."""
    return a.replace("-", "").lower() == b.replace("-", "").lower()


def check_segment_objects(bucket, b, topic: str, partition: int) -> dict[str, dict]:
    """The partition's `.segment` objects, checked: named for the topic and its id, not
    empty, distinct base offsets, and each begins with a record batch whose base offset
    (big-endian i64) is the one in its name. Returns key -> parsed name and size."""
    objects = bucket.segment_objects(topic, partition)
    topic_id = b.topic_id(topic)
    for key, o in objects.items():
        assert same_id(o["topic_id"], topic_id), f"{key}: topic id is not {topic_id}"
        assert o["size"] > 61, f"{key}: {o['size']} bytes cannot hold a record batch"
        first = int.from_bytes(bucket.head_bytes(key, 8), "big", signed=True)
        assert first == o["base"], f"{key}: first batch's base offset is {first}, the name says {o['base']}"
    bases = sorted(o["base"] for o in objects.values())
    assert len(set(bases)) == len(bases), f"{topic}/{partition}: two objects for one base offset: {sorted(objects)}"
    return objects


def check_object_content(data: bytes, key: str, base: int, next_base: int, by_offset: dict[int, Rec]) -> None:
    """`data` (a whole segment object) starts with intact record batches (magic 2, CRC-32C
    right) covering exactly the offsets base..next_base-1, whose bytes include every
    produced value at those offsets; what follows them (the indexes) is not read."""
    pos = 0
    offset = base
    while offset < next_base:
        assert pos + 61 <= len(data), f"{key}: ends at byte {pos} inside offset {offset} (wanted up to {next_base})"
        batch_base = int.from_bytes(data[pos:pos + 8], "big", signed=True)
        length = int.from_bytes(data[pos + 8:pos + 12], "big", signed=True)
        end = pos + 12 + length
        assert batch_base == offset, f"{key}: batch at byte {pos} starts at offset {batch_base}, expected {offset}"
        assert data[pos + 16] == 2, f"{key}: batch at byte {pos} has magic {data[pos + 16]}"
        assert end <= len(data), f"{key}: batch at byte {pos} is cut off"
        crc = int.from_bytes(data[pos + 17:pos + 21], "big")
        assert crc32c.crc32c(data[pos + 21:end]) == crc, f"{key}: batch at byte {pos} fails its CRC"
        last_delta = int.from_bytes(data[pos + 23:pos + 27], "big", signed=True)
        for o in range(batch_base, batch_base + last_delta + 1):
            value = by_offset[o].value
            assert value is None or value in data[pos:end], f"{key}: value of offset {o} is not in its batch"
        offset = batch_base + last_delta + 1
        pos = end
    assert offset == next_base, f"{key}: batches run to offset {offset}, past the next segment at {next_base}"


def delivered(records: list[Rec]) -> dict[int, int]:
    """Records per partition, from their acknowledged offsets (which must be dense)."""
    ends: dict[int, int] = {}
    for p in sorted({r.partition for r in records}):
        offsets = sorted(r.offset for r in records if r.partition == p)
        assert offsets == list(range(len(offsets))), f"partition {p}: acknowledged offsets are not 0..{len(offsets) - 1}"
        ends[p] = len(offsets)
    return ends


class Sender:
    """A confluent-kafka producer (acks=all, no idempotence, no compression) that sends
    Recs, optionally paced over a duration, and records each outcome."""

    def __init__(self, bootstrap: str, topic: str, **extra):
        self.topic = topic
        self.errors: list[str] = []
        self.failed: list[Rec] = []
        config = {
            **QUIET,
            "bootstrap.servers": bootstrap,
            "acks": "all",
            "enable.idempotence": False,
            "compression.type": "none",
            "linger.ms": 5,
            "batch.size": 256 * KiB,
            "message.timeout.ms": 120000,
            "queue.buffering.max.kbytes": 1048576,
        }
        config.update(extra)
        self.producer = Producer(config)

    def _callback(self, rec: Rec):
        def on_delivery(err, msg):
            if err is not None:
                self.errors.append(str(err))
                self.failed.append(rec)
            else:
                rec.offset = msg.offset()

        return on_delivery

    def send(self, records: list[Rec], seconds: float = 0.0) -> None:
        start = time.monotonic()
        for i, rec in enumerate(records):
            if seconds:
                target = start + seconds * i / len(records)
                while (delay := target - time.monotonic()) > 0:
                    self.producer.poll(min(delay, 0.05))
            while True:
                try:
                    self.producer.produce(self.topic, key=rec.key, value=rec.value, partition=rec.partition,
                                          headers=rec.headers or None, timestamp=rec.timestamp or 0,
                                          on_delivery=self._callback(rec))
                    break
                except BufferError:
                    self.producer.poll(0.05)
            self.producer.poll(0)

    def flush(self, timeout: float = 120) -> None:
        remaining = self.producer.flush(timeout)
        assert remaining == 0, f"{remaining} records not delivered within {timeout}s"

    def close(self) -> None:
        self.producer.close()


# ---------------------------------------------------------------------------------------
# Scenarios
# ---------------------------------------------------------------------------------------


def test_s3_harness(bucket, fault_proxy):
    """The harness itself, without a broker: moto stores and lists through boto3, and the
    fault proxy forwards, cuts off (open and new connections) and forwards again."""
    body = (42).to_bytes(8, "big") + bytes(range(256)) * 4096
    key = "AAAAAAAAAAAAAAAAAAAAAA/topics/t.0123456789abcdef0123456789abcdef/0/00000000000000000042-x.segment"
    through = s3_client(fault_proxy.endpoint)
    through.put_object(Bucket=bucket.name, Key=key, Body=body)
    assert bucket.get(key) == body and bucket.head_bytes(key) == body[:8]
    assert {o["base"] for o in bucket.segment_objects("t", 0).values()} == {42}
    fault_proxy.block()
    with pytest.raises(Exception):
        through.get_object(Bucket=bucket.name, Key=key)["Body"].read()
    assert fault_proxy.refused > 0
    fault_proxy.unblock()
    assert through.get_object(Bucket=bucket.name, Key=key)["Body"].read() == body


def test_upload_and_replay(bucket, broker, metadata):
    """200 MiB into two partitions of 1 MiB segments with 2 MiB local retention: the
    bucket ends up with every sealed segment, the disk with a few, and kcat and
    confluent-kafka read everything from offset 0 byte for byte."""
    # A small manifest tail and fanout, so ~100 segments per partition spill into manifest
    # objects at several levels and every read below goes through them.
    b = broker(metadata=metadata, env=tier_env(bucket.endpoint, bucket.name,
                                               remote_manifest_tail_entries=8, remote_manifest_fanout=4))
    topic = "replay"
    tiered_topic(b.bootstrap, topic, 2, segment_bytes=MiB, local_retention_bytes=2 * MiB)
    produced = blob_records(1, 2, 200 * MiB, 10_000, 100_000)
    confluent_produce(b.bootstrap, topic, produced, "none", **{"batch.size": 256 * KiB})
    ends = delivered(produced)
    by_offset = {p: {r.offset: r for r in produced if r.partition == p} for p in ends}

    for p in ends:
        active = wait_sealed_uploaded(b, topic, p)
        assert active > ends[p] * 0.9, f"partition {p}: the active segment starts at {active} of {ends[p]}"
        # Local retention: uploaded segments past 2 MiB are gone from the disk.
        local = wait_until(f"partition {p}: local segments to be trimmed to local.retention.bytes",
                           lambda: len(b.local_segments(topic, p)) <= 4 and b.local_segments(topic, p),
                           timeout=60, interval=0.2)
        assert local[0] > 0 and local[-1] == active, local

        objects = check_segment_objects(bucket, b, topic, p)
        bases = sorted(o["base"] for o in objects.values())
        assert bases[0] == 0 and bases[-1] < active, bases
        assert len(bases) >= 80, f"partition {p}: only {len(bases)} segment objects for ~100 MiB in 1 MiB segments"
        assert set(local) - {active} <= set(bases), f"local sealed segments {local} are not all in the bucket"
        # Every key under the partition's prefix is a segment or a spilled manifest.
        prefix = next(iter(objects)).rsplit("/", 1)[0] + "/"
        manifests = set()
        for key in bucket.objects(prefix):
            name = key[len(prefix):]
            assert key in objects or name.startswith("manifest-"), f"unexpected object {key}"
            if name.startswith("manifest-"):
                manifests.add(name.split("-")[1])
        assert {"0", "1"} <= manifests, f"partition {p}: expected spilled manifests at levels 0 and 1, got {manifests}"
        # A few objects read whole: the batches are the ones produced, intact, contiguous.
        nexts = dict(zip(bases, bases[1:] + [active]))
        by_base = {o["base"]: k for k, o in objects.items()}
        for base in {bases[0], bases[1], bases[len(bases) // 2], bases[-1]}:
            check_object_content(bucket.get(by_base[base]), by_base[base], base, nexts[base], by_offset[p])

        assert pmetric(b, "strata_remote_segments", topic, p) == len(objects)
        assert pmetric(b, "strata_remote_log_start_offset", topic, p) == 0
        assert pmetric(b, "strata_log_start_offset", topic, p) == 0
        uploaded_values = sum(len(r.value or b"") for o, r in by_offset[p].items() if o < active)
        assert pmetric(b, "strata_remote_bytes", topic, p) >= uploaded_values
        lag = pmetric(b, "strata_remote_upload_lag_bytes", topic, p)
        assert lag is not None and lag <= 2 * MiB, f"partition {p}: upload lag {lag} bytes with everything sealed uploaded"
        assert watermarks(b.bootstrap, topic, p) == (0, ends[p])

    got = kcat_consume_raw(b.bootstrap, topic, 0) + kcat_consume_raw(b.bootstrap, topic, 1)
    check_against_offsets(produced, got, "kcat from offset 0")
    del got
    got = confluent_consume(b.bootstrap, topic, 2)
    check_against_offsets(produced, got, "confluent-kafka from offset 0")
    requests = b.metric("strata_object_store_requests_total", op="get", topic=topic)
    assert requests and requests > 0, "the history was read without a GET to the object store"


def test_total_retention_deletes_remote(bucket, broker, metadata):
    """retention.bytes, then retention.ms, set on a topic whose history is mostly remote:
    old objects leave the bucket, the log start offset moves forward, and what is left
    is readable from the new log start."""
    b = broker(metadata=metadata, env=tier_env(bucket.endpoint, bucket.name))
    topic = "expiring"
    tiered_topic(b.bootstrap, topic, 1, segment_bytes=256 * KiB, local_retention_bytes=512 * KiB)
    produced = blob_records(2, 1, 4 * MiB, 8_000, 24_000)
    confluent_produce(b.bootstrap, topic, produced, "none", **{"batch.size": 64 * KiB})
    high = delivered(produced)[0]
    by_offset = {r.offset: r for r in produced}
    active = wait_sealed_uploaded(b, topic, 0)
    before = check_segment_objects(bucket, b, topic, 0)
    assert len(before) >= 12 and min(o["base"] for o in before.values()) == 0, sorted(before)
    assert watermarks(b.bootstrap, topic) == (0, high)

    admin = confluent_admin(b.bootstrap)

    def alter(name: str, value: str) -> None:
        resource = ConfigResource(ResourceType.TOPIC, topic, incremental_configs=[
            ConfigEntry(name, value, incremental_operation=AlterConfigOpType.SET)])
        admin.incremental_alter_configs([resource])[resource].result(timeout=60)

    def settled() -> tuple | None:
        """(log start, objects) once the bucket, the metrics and ListOffsets agree."""
        low = watermarks(b.bootstrap, topic)[0]
        objects = bucket.segment_objects(topic, 0)
        bases = sorted(o["base"] for o in objects.values())
        if not bases or bases[0] != low:
            return None
        if pmetric(b, "strata_remote_log_start_offset", topic, 0) != low:
            return None
        if pmetric(b, "strata_remote_segments", topic, 0) != len(objects):
            return None
        return low, objects

    # By size: about 1 MiB stays, most of it only in the bucket.
    alter("retention.bytes", str(MiB))
    low, objects = wait_until("retention.bytes to delete old segments in the bucket",
                              lambda: watermarks(b.bootstrap, topic)[0] > 0 and settled(), timeout=60, interval=0.3)
    kept = sum(len(by_offset[o].value) for o in range(low, high))
    assert 512 * KiB <= kept <= MiB + 2 * 256 * KiB, f"{kept} bytes of values kept for retention.bytes=1 MiB"
    gone = [k for k, o in before.items() if o["base"] < low]
    assert gone and not set(gone) & set(objects), "objects below the log start offset are still in the bucket"
    assert set(objects) <= set(before), "retention uploaded new objects"
    assert pmetric(b, "strata_log_start_offset", topic, 0) == low
    local = b.local_segments(topic, 0)
    assert local[0] > low, f"nothing below the local segments {local} is left to read from the bucket (log start {low})"
    got = confluent_consume(b.bootstrap, topic, 1, start={0: low})
    check_against_offsets([by_offset[o] for o in range(low, high)], got, f"confluent-kafka from log start {low}")

    # By time: every sealed segment is older than a second; only the active one stays.
    alter("retention.ms", "1000")
    wait_until("retention.ms to empty the bucket",
               lambda: not bucket.segment_objects(topic, 0)
               and not pmetric(b, "strata_remote_segments", topic, 0),
               timeout=60, interval=0.3)
    wait_until("the log start offset to reach the active segment",
               lambda: watermarks(b.bootstrap, topic) == (active, high), timeout=60, interval=0.3)
    got = confluent_consume(b.bootstrap, topic, 1, start={0: active})
    check_against_offsets([by_offset[o] for o in range(active, high)], got, "confluent-kafka from the active segment")


def test_object_store_outage_under_load(bucket, fault_proxy, broker, metadata):
    """The object store disappears for 8 s while producers write: every record is still
    acknowledged, uploads resume afterwards, and nothing is lost or duplicated (local
    retention must not delete a segment that never reached the bucket)."""
    b = broker(metadata=metadata, env=tier_env(fault_proxy.endpoint, bucket.name))
    topic = "outage"
    tiered_topic(b.bootstrap, topic, 2, segment_bytes=MiB, local_retention_bytes=MiB)
    produced = blob_records(3, 2, 30 * MiB, 16_000, 48_000)
    n = len(produced)
    before, during, after = produced[:n // 5], produced[n // 5:n * 7 // 10], produced[n * 7 // 10:]
    sender = Sender(b.bootstrap, topic)

    sender.send(before, seconds=2)
    sender.flush()
    wait_until("the first uploads through the proxy",
               lambda: all((remote_end(b, topic, p) or 0) > 0 for p in (0, 1)), timeout=UPLOAD_TIMEOUT_S, interval=0.2)

    fault_proxy.block()
    try:
        sender.send(during, seconds=8)
        sender.flush(60)  # acknowledged while the store is still unreachable
        assert not sender.errors, f"produce failed during the outage: {sender.errors[:5]}"
        lag = wait_until("the upload backlog to show in strata_remote_upload_lag_bytes",
                         lambda: (b.metric("strata_remote_upload_lag_bytes", topic=topic) or 0) >= 4 * MiB
                         and b.metric("strata_remote_upload_lag_bytes", topic=topic), timeout=20, interval=0.2)
        lag_s = b.metric("strata_remote_upload_lag_seconds", topic=topic)
        assert lag_s is not None and lag_s > 0, f"upload lag {lag} bytes but {lag_s} seconds"
        assert fault_proxy.refused > 0, "the broker did not try the object store during the outage"
    finally:
        fault_proxy.unblock()

    sender.send(after, seconds=2)
    sender.flush()
    assert not sender.errors, f"produce failed: {sender.errors[:5]}"
    ends = delivered(produced)
    for p in ends:
        active = wait_sealed_uploaded(b, topic, p)
        assert active > ends[p] * 0.9, (p, active, ends[p])
        wait_until(f"partition {p}: local segments trimmed once uploaded",
                   lambda: len(b.local_segments(topic, p)) <= 4, timeout=60, interval=0.2)
        objects = check_segment_objects(bucket, b, topic, p)
        assert min(o["base"] for o in objects.values()) == 0
    sender.close()
    got = confluent_consume(b.bootstrap, topic, 2)
    check_against_offsets(produced, got, "confluent-kafka from offset 0 after the outage")


def seq_record(seq: int) -> tuple[bytes, bytes]:
    """Key and value of sequence number `seq`, recomputable from the value's prefix."""
    rng = random.Random(seq)
    return b"k%d" % seq, b"seq=%08d|" % seq + rng.randbytes(16_000 + seq % 4000)


def test_crash_between_upload_and_manifest_commit(bucket, broker, metadata):
    """The broker dies right after PUTting its second segment object, before committing
    it to the manifest. After a restart the partition reads back exactly what was written,
    once, and the scrubber removes the object no manifest references."""
    env = tier_env(bucket.endpoint, bucket.name, remote_scrub_interval_ms=500, remote_scrub_grace_ms=1000,
                   testing_short_scrub_grace="true")
    b = broker(metadata=metadata, env={**env, "STRATA_FAULT_INJECTION": "crash_after_upload=2"})
    topic = "torn"
    tiered_topic(b.bootstrap, topic, 1, segment_bytes=256 * KiB, local_retention_bytes=256 * KiB)

    def records(first: int, count: int) -> list[Rec]:
        return [Rec(partition=0, key=seq_record(s)[0], value=seq_record(s)[1]) for s in range(first, first + count)]

    # ~3.5 MiB: a dozen sealed segments; the crash may come while these are in flight.
    first_round = records(0, 200)
    sender = Sender(b.bootstrap, topic, retries=0, **{"message.timeout.ms": 15000, "batch.size": 64 * KiB})
    sender.send(first_round)
    try:
        code = b.proc.wait(timeout=60)
    except Exception:
        code = None
    assert code is not None, "the broker did not die with fault_injection=crash_after_upload=2"
    assert code != 0, f"the broker exited with {code}, expected an abort"
    sender.producer.purge(in_queue=True, in_flight=False, blocking=True)
    sender.flush(60)
    sender.close()
    acked = {int(r.value[4:12]): r.offset for r in first_round if r.offset is not None}
    crashed = bucket.segment_objects(topic, 0)
    assert len(crashed) >= 2, f"crash_after_upload=2, yet the bucket holds {sorted(crashed)}"

    b.env.pop("STRATA_FAULT_INJECTION")
    b.start()
    low, high = watermarks(b.bootstrap, topic)
    assert low == 0 and high >= len(acked), (low, high, len(acked))
    second_round = records(1000, 100)
    confluent_produce(b.bootstrap, topic, second_round, "none", **{"batch.size": 64 * KiB})
    acked.update({int(r.value[4:12]): r.offset for r in second_round})
    assert [r.offset for r in second_round] == list(range(second_round[0].offset, second_round[0].offset + 100))

    wait_sealed_uploaded(b, topic, 0)
    wait_until("local segments to be trimmed (reads from 0 must go to the bucket)",
               lambda: b.local_segments(topic, 0)[0] > 0, timeout=60, interval=0.2)
    objects = wait_until(
        "the scrubber to delete the orphan: .segment objects == strata_remote_segments",
        lambda: (len(bucket.segment_objects(topic, 0)) == pmetric(b, "strata_remote_segments", topic, 0)
                 and bucket.segment_objects(topic, 0)),
        timeout=60, interval=0.3)
    objects = check_segment_objects(bucket, b, topic, 0)
    assert min(o["base"] for o in objects.values()) == 0

    got = confluent_consume(b.bootstrap, topic, 1)
    check_seq_log(got, acked)


def check_seq_log(got: list[Got], acked: dict[int, int]) -> None:
    """Offsets dense from 0, every record intact and present once, every acknowledged
    sequence number at its acknowledged offset, in sequence order."""
    got = sorted(got, key=lambda g: g.offset)
    assert [g.offset for g in got] == list(range(len(got))), "offsets are not dense from 0"
    seen: dict[int, int] = {}
    for g in got:
        assert g.value is not None and g.value.startswith(b"seq="), f"unexpected record at {g.offset}"
        seq = int(g.value[4:12])
        assert (g.key, g.value) == seq_record(seq), f"record at offset {g.offset} (seq {seq}) is damaged"
        assert seq not in seen, f"seq {seq} appears twice, at offsets {seen[seq]} and {g.offset}"
        seen[seq] = g.offset
    missing = {s: o for s, o in acked.items() if seen.get(s) != o}
    assert not missing, f"{len(missing)} acknowledged records are not at their offsets: {sorted(missing.items())[:10]}"
    seqs = [int(g.value[4:12]) for g in got]
    assert seqs == sorted(seqs), "records are out of order"


def test_empty_disk_restart_serves_history(bucket, broker, metadata, tmp_path):
    """Everything sealed and uploaded, the broker stopped and its disk wiped: started
    again (same node, metadata store and bucket) it serves the whole history from the
    bucket, byte for byte, and new records continue the offsets."""
    if metadata == "embedded":
        meta_dir = tmp_path / "metadata-outside-data-dir"
        meta_dir.mkdir()
        metadata = f"file://{meta_dir}"
    b = broker(metadata=metadata, env=tier_env(bucket.endpoint, bucket.name))
    topic = "history"
    # Small segments; segment.ms rolls the last one so the whole log is sealed and uploaded.
    tiered_topic(b.bootstrap, topic, 2, segment_bytes=64 * KiB, segment_ms=1000)
    produced = make_records(5, 4000, 2)
    confluent_produce(b.bootstrap, topic, produced, "lz4", **{"batch.size": 16 * KiB})
    ends = delivered(produced)
    for p, end in ends.items():
        wait_uploaded(b, topic, p, end)
        objects = check_segment_objects(bucket, b, topic, p)
        assert len(objects) >= 3 and min(o["base"] for o in objects.values()) == 0, sorted(objects)
    topic_id = b.topic_id(topic)

    assert b.stop() == 0, f"strata exited uncleanly on SIGTERM:\n{b.log_tail()}"
    b.wipe_data_dir()
    b.start()
    for p, end in ends.items():
        assert watermarks(b.bootstrap, topic, p) == (0, end)
    got = confluent_consume(b.bootstrap, topic, 2)
    check_against_offsets(produced, got, "confluent-kafka from offset 0 on an empty disk")

    more = make_records(6, 300, 2)
    confluent_produce(b.bootstrap, topic, more, "none")
    for p, end in ends.items():
        mine = sorted(r.offset for r in more if r.partition == p)
        assert mine == list(range(end, end + len(mine))), f"partition {p}: new offsets do not continue from {end}"
    assert same_id(b.topic_id(topic), topic_id), "the topic came back with another id"
    got = confluent_consume(b.bootstrap, topic, 2)
    check_against_offsets(produced + more, got, "confluent-kafka from offset 0 after new writes")


@pytest.mark.parametrize("lost", ["data_dir", "partition_files"])
def test_empty_disk_restart_keeps_idempotent_producer_state(bucket, broker, tmp_path, lost):
    """Idempotent producer state travels with the uploaded segments: after a restart on an
    empty disk, a producer's retry of a batch that only the bucket holds is answered with
    its original offset and not appended again (without the state it would be taken as a
    new batch from an unknown producer). Also when the partition's directory is still
    there but empty: a log without segment files is a valid empty log (its first segment's
    files are made by its first append), and must not open at the remote end without the
    producers."""
    import wire

    meta_dir = tmp_path / "metadata-outside-data-dir"
    meta_dir.mkdir()
    b = broker(metadata=f"file://{meta_dir}", env=tier_env(bucket.endpoint, bucket.name))
    topic = "idempotent-history"
    tiered_topic(b.bootstrap, topic, 1, segment_bytes=64 * KiB, segment_ms=1000)
    producer_id, epoch = 4242, 0
    batches = 40
    for seq in range(batches):
        batch = wire.record_batch([b"seq %05d " % seq + b"x" * 8 * KiB], producer=(producer_id, epoch, seq))
        assert wire.raw_produce(b.bootstrap, topic, 0, batch) == (0, seq)
    # segment.ms seals the last segment too.
    wait_uploaded(b, topic, 0, batches)

    directory = b.partition_dir(topic, 0)
    assert b.stop() == 0, f"strata exited uncleanly on SIGTERM:\n{b.log_tail()}"
    if lost == "data_dir":
        b.wipe_data_dir()
    else:
        for f in directory.iterdir():
            if f.is_dir():
                shutil.rmtree(f)
            else:
                f.unlink()
    b.start()
    assert watermarks(b.bootstrap, topic) == (0, batches)
    # The last batch again, as a producer retrying after a lost response would send it.
    retry = wire.record_batch([b"seq %05d " % (batches - 1) + b"x" * 8 * KiB],
                              producer=(producer_id, epoch, batches - 1))
    assert wire.raw_produce(b.bootstrap, topic, 0, retry) == (0, batches - 1)
    assert watermarks(b.bootstrap, topic) == (0, batches), "the retry was appended again"
    assert "restored idempotent producer state from the bucket" in b.log_text()
    # The producer carries on where it was.
    nxt = wire.record_batch([b"next"], producer=(producer_id, epoch, batches))
    assert wire.raw_produce(b.bootstrap, topic, 0, nxt) == (0, batches)
    gap = wire.record_batch([b"gap"], producer=(producer_id, epoch, batches + 5))
    error, _ = wire.raw_produce(b.bootstrap, topic, 0, gap)
    assert error == 45, "a sequence gap after the restore is OUT_OF_ORDER_SEQUENCE_NUMBER"


def test_delete_topic_deletes_objects(bucket, broker):
    """Deleting a topic removes everything under its prefix in the bucket and nothing of
    another topic's; a topic re-created under the same name starts empty."""
    b = broker(env=tier_env(bucket.endpoint, bucket.name))
    data = {}
    for topic, seed in (("doomed", 7), ("kept", 8)):
        tiered_topic(b.bootstrap, topic, 1, segment_bytes=64 * KiB)
        data[topic] = blob_records(seed, 1, MiB, 4_000, 12_000)
        confluent_produce(b.bootstrap, topic, data[topic], "none", **{"batch.size": 16 * KiB})
    for topic in data:
        wait_sealed_uploaded(b, topic, 0)
    prefixes = {}
    for topic in data:
        objects = check_segment_objects(bucket, b, topic, 0)
        assert len(objects) >= 10, sorted(objects)
        prefixes[topic] = topic_prefix(next(iter(objects)))
    kept_before = bucket.objects(prefixes["kept"])

    admin = confluent_admin(b.bootstrap)
    admin.delete_topics(["doomed"], operation_timeout=30)["doomed"].result(timeout=60)
    wait_until(f"the objects under {prefixes['doomed']} to be deleted",
               lambda: not bucket.objects(prefixes["doomed"]), timeout=60, interval=0.3)
    assert bucket.objects(prefixes["kept"]) == kept_before

    tiered_topic(b.bootstrap, "doomed", 1, segment_bytes=64 * KiB)
    fresh = [Rec(partition=0, key=b"new%d" % i, value=b"fresh %d" % i) for i in range(10)]
    confluent_produce(b.bootstrap, "doomed", fresh, "none")
    assert watermarks(b.bootstrap, "doomed") == (0, 10)
    check_against_offsets(fresh, confluent_consume(b.bootstrap, "doomed", 1), "re-created topic",
                          timestamps=False)
    check_against_offsets(data["kept"], confluent_consume(b.bootstrap, "kept", 1), "the other topic")


def test_disk_high_watermark_refuses_produce_with_a_retriable_error(broker):
    """Past disk_high_watermark_percent (here 1%, which any real disk exceeds) produce is
    refused with the retriable KAFKA_STORAGE_ERROR, counted, and nothing is appended;
    reads keep working."""
    b = broker(env={"STRATA_DISK_HIGH_WATERMARK_PERCENT": "1"})
    create_topic(b.bootstrap, "full", 1)
    wait_until("the disk check to run", lambda: (b.metric("strata_disk_used_percent") or 0) >= 1, timeout=30)
    errors = []
    producer = Producer({**QUIET, "bootstrap.servers": b.bootstrap, "acks": "all", "enable.idempotence": False,
                         "message.timeout.ms": 3000, "retry.backoff.ms": 100})
    producer.produce("full", value=b"refused", on_delivery=lambda err, msg: errors.append(err))
    producer.flush(15)
    assert len(errors) == 1 and errors[0] is not None, errors
    # librdkafka retries KAFKA_STORAGE_ERROR until message.timeout.ms, then reports the timeout.
    assert errors[0].retriable() or "timed out" in str(errors[0]).lower(), str(errors[0])
    refused = b.metric("strata_produce_refused_disk_full_total", topic="full")
    assert refused and refused >= 1, b.metrics()
    storage_errors = b.metric("strata_request_errors_total", api="Produce", error="KafkaStorageError")
    assert storage_errors and storage_errors >= 1
    assert watermarks(b.bootstrap, "full", 0) == (0, 0)


def alter_topic(bootstrap: str, topic: str, **configs) -> None:
    admin = confluent_admin(bootstrap)
    resource = ConfigResource(ResourceType.TOPIC, topic, incremental_configs=[
        ConfigEntry(k.replace("_", "."), str(v), incremental_operation=AlterConfigOpType.SET)
        for k, v in configs.items()])
    admin.incremental_alter_configs([resource])[resource].result(timeout=60)


def delete_records(bootstrap: str, topic: str, partition: int, before: int) -> int:
    from confluent_kafka import TopicPartition
    admin = confluent_admin(bootstrap)
    result = admin.delete_records([TopicPartition(topic, partition, before)])
    return next(iter(result.values())).result(timeout=30).low_watermark


def test_records_deleted_before_the_first_upload_stay_deleted(bucket, broker):
    """DeleteRecords in the middle of a segment that is not uploaded yet: once that
    segment is uploaded, the log start stays where DeleteRecords put it and the deleted
    records are never served from the bucket."""
    b = broker(env=tier_env(bucket.endpoint, bucket.name))
    topic = "purged"
    # Large segments: nothing rolls until segment.ms is lowered below.
    tiered_topic(b.bootstrap, topic, 1, segment_bytes=64 * MiB)
    produced = blob_records(7, 1, 200 * KiB, 100, 200)
    confluent_produce(b.bootstrap, topic, produced, "none")
    end = delivered(produced)[0]
    assert delete_records(b.bootstrap, topic, 0, end // 2) == end // 2
    alter_topic(b.bootstrap, topic, segment_ms=500)
    wait_uploaded(b, topic, 0, end)
    assert watermarks(b.bootstrap, topic) == (end // 2, end)
    assert pmetric(b, "strata_remote_log_start_offset", topic, 0) == end // 2
    got = confluent_consume(b.bootstrap, topic, 1, start={0: 0}, **{"auto.offset.reset": "earliest"})
    assert got and min(g.offset for g in got) == end // 2, "records below the DeleteRecords offset came back"
    check_against_offsets([r for r in produced if r.offset >= end // 2], got, "read after DeleteRecords")


def test_remote_storage_off_then_on_again_resumes_uploads(bucket, broker):
    """Tiering on, uploads; off, local retention deletes segments that were never
    uploaded; on again: the uploader notices the gap, moves the remote log start past
    it, uploads resume, and the partition reads from its new start without a hole."""
    b = broker(env=tier_env(bucket.endpoint, bucket.name))
    topic = "toggled"
    tiered_topic(b.bootstrap, topic, 1, segment_bytes=256 * KiB)
    first = blob_records(11, 1, 2 * MiB, 1000, 2000)
    confluent_produce(b.bootstrap, topic, first, "none")
    wait_sealed_uploaded(b, topic, 0)
    alter_topic(b.bootstrap, topic, remote_storage_enable="false", retention_bytes=512 * KiB)
    second = blob_records(12, 1, 2 * MiB, 1000, 2000)
    confluent_produce(b.bootstrap, topic, second, "none")
    end = max(r.offset for r in second) + 1
    # Local retention (the total one, tiering being off) trims past the remote end.
    remote_end_before = remote_end(b, topic, 0)
    wait_until("local retention to delete segments that were never uploaded",
               lambda: b.local_segments(topic, 0)[0] > remote_end_before, timeout=60, interval=0.2)
    alter_topic(b.bootstrap, topic, remote_storage_enable="true", retention_bytes=-1)
    # More data, so that sealed segments follow the gap even when local retention left
    # only the active segment.
    third = blob_records(13, 1, MiB, 1000, 2000)
    confluent_produce(b.bootstrap, topic, third, "none")
    end = max(r.offset for r in third) + 1
    active = wait_sealed_uploaded(b, topic, 0)
    low, high = watermarks(b.bootstrap, topic)
    assert high == end and low > remote_end_before, (low, high, remote_end_before)
    assert pmetric(b, "strata_remote_log_start_offset", topic, 0) == low
    got = confluent_consume(b.bootstrap, topic, 1, start={0: low})
    assert [g.offset for g in got] == list(range(low, end)), "the log has a hole or a duplicate"
    assert active > low


def cold_history(bucket, broker, topic: str, chunk: int, **settings):
    """A broker whose topic holds 8 MiB of history in 1 MiB segments, all of it only in the
    bucket. Returns the broker, the records produced and the chunks of the objects."""
    b = broker(env=tier_env(bucket.endpoint, bucket.name, remote_chunk_bytes=chunk, **settings))
    tiered_topic(b.bootstrap, topic, 1, segment_bytes=MiB, segment_ms=1000, local_retention_bytes=0)
    produced = blob_records(7, 1, 8 * MiB, 1000, 4000)
    confluent_produce(b.bootstrap, topic, produced, "none", **{"batch.size": 64 * KiB})
    end = delivered(produced)[0]
    wait_uploaded(b, topic, 0, end)
    wait_until("the history to leave local disk",
               lambda: pmetric(b, "strata_local_log_start_offset", topic, 0) == end, timeout=60, interval=0.2)
    objects = check_segment_objects(bucket, b, topic, 0)
    chunks = sum(-(-o["size"] // chunk) for o in objects.values())
    return b, produced, chunks


def test_concurrent_cold_readers_fetch_each_chunk_once(bucket, broker):
    """Six consumers replay the same cold history at once (1 MiB segments, read-ahead
    across them): no chunk of any segment object is fetched from the bucket twice,
    whoever asked first, and every consumer reads every record. The rate limit makes the
    replay last seconds, so the six overlap (checked: each starts before any finishes)."""
    chunk = 256 * KiB
    topic = "herd"
    b, produced, chunks = cold_history(bucket, broker, topic, chunk, remote_cache_disk_bytes=0,
                                       remote_read_rate_bytes=MiB)
    before = b.metric("strata_object_store_requests_total", op="get", topic=topic) or 0

    results: list = [None] * 6
    started: list = [None] * 6
    finished: list = [None] * 6
    barrier = threading.Barrier(len(results))

    def replay(i: int) -> None:
        barrier.wait()
        started[i] = time.monotonic()
        results[i] = confluent_consume(b.bootstrap, topic, 1)
        finished[i] = time.monotonic()

    threads = [threading.Thread(target=replay, args=(i,)) for i in range(len(results))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for i, got in enumerate(results):
        assert got is not None, f"consumer {i} failed"
        check_against_offsets(produced, got, f"consumer {i} of {len(results)}")
    assert max(started) < min(finished), "the readers did not overlap: the test proves nothing"
    gets = (b.metric("strata_object_store_requests_total", op="get", topic=topic) or 0) - before
    # Fewer is fine: a chunk holding only an object's indexes is fetched by read-ahead
    # alone, and only when a slot is free.
    assert 0 < gets <= chunks, f"{gets} GETs for {chunks} chunks: a chunk was fetched twice"


def test_history_is_answered_without_waiting_for_min_bytes(bucket, broker):
    """A consumer with a large fetch.min.bytes replays history at the speed of the reads,
    not one fetch.wait.max.ms per chunk: a remote read that returned records answers the
    fetch at once, as Kafka does. Unfixed, each of the 32+ fetches waited 30 s, so the
    replay would take over 16 minutes; the timeout leaves minutes of slack."""
    topic = "minbytes"
    b, produced, _ = cold_history(bucket, broker, topic, 256 * KiB)
    got = confluent_consume(b.bootstrap, topic, 1, timeout=120,
                            **{"fetch.min.bytes": 16 * MiB, "fetch.wait.max.ms": 30000})
    check_against_offsets(produced, got, "a consumer with fetch.min.bytes 16 MiB")
