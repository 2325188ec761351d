"""Records and real Kafka clients: confluent-kafka (librdkafka), kafka-python and kcat.

Producers record where each record landed; consumers read with assign() and explicit
offsets (group consumers are tested in test_groups.py); the checks compare byte for byte.
"""

from __future__ import annotations

import logging
import random
import subprocess
import time
from dataclasses import dataclass, field

import pytest

CONSUME_TIMEOUT_S = 180

# ---------------------------------------------------------------------------------------
# Records
# ---------------------------------------------------------------------------------------

CODECS = ["none", "gzip", "snappy", "lz4", "zstd"]

# librdkafka's own log lines go to a Python logger (shown by pytest for failing tests)
# instead of stderr, where clients left to the garbage collector would spray them later.
QUIET = {"logger": logging.getLogger("rdkafka")}


@dataclass
class Rec:
    """A record as produced, and (after consuming) where it landed."""

    partition: int
    key: bytes | None
    value: bytes | None
    headers: list[tuple[str, bytes | None]] = field(default_factory=list)
    timestamp: int | None = None
    offset: int | None = None


@dataclass
class Got:
    """A record as a consumer returned it."""

    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: list[tuple[str, bytes | None]]
    timestamp_type: int  # 1 CreateTime, 2 LogAppendTime (confluent-kafka's numbering)
    timestamp: int


BASE_TS = 1_700_000_000_000


def make_records(seed: int, count: int, partitions: int, *, null_keys: bool = True, null_values: bool = True,
                 null_headers: bool = True, binary: bool = True) -> list[Rec]:
    """Deterministic records with varied keys, values, headers and timestamps.

    Mostly small records, a few of tens of KiB; binary bytes including 0x00 and 0xff;
    some null keys / values / header values; timestamps not monotonic.
    """
    rng = random.Random(seed)
    out = []
    for i in range(count):
        def blob(n: int) -> bytes:
            if binary:
                return rng.randbytes(n)
            return bytes(rng.choice(PRINTABLE) for _ in range(n))

        size = rng.choice([0, 1, 7, 30, 100, 250]) if rng.random() < 0.999 else rng.randint(20_000, 120_000)
        value = b"%d:" % i + blob(size)
        key = b"k%d-" % i + blob(rng.randint(0, 20))
        headers: list[tuple[str, bytes | None]] = []
        for h in range(rng.choice([0, 0, 1, 2, 3])):
            headers.append((f"h{h}-{rng.randint(0, 9)}", blob(rng.randint(0, 12))))
        r = rng.random()
        if r < 0.02 and null_keys:
            key = None
        elif r < 0.03 and null_values:
            value = None
        if headers and rng.random() < 0.05 and null_headers:
            headers.append(("nullhdr", None))
        ts = BASE_TS + rng.randint(0, 10_000_000)
        out.append(Rec(partition=rng.randrange(partitions), key=key, value=value, headers=headers, timestamp=ts))
    return out


PRINTABLE = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789 !#$%&()*+-./:;<>?@[]^_{}~"


def check_against_offsets(produced: list[Rec], got: list[Got], what: str, *, timestamps: bool = True) -> None:
    """Every produced record (with its acknowledged offset) is what the consumer returned
    at that offset, byte for byte; nothing else is there."""
    by_pos = {}
    for g in got:
        pos = (g.partition, g.offset)
        assert pos not in by_pos, f"{what}: offset {pos} returned twice"
        by_pos[pos] = g
    assert len(got) == len(produced), f"{what}: consumed {len(got)} records, produced {len(produced)}"
    mismatches = []
    for r in produced:
        g = by_pos.get((r.partition, r.offset))
        if g is None:
            mismatches.append(f"partition {r.partition} offset {r.offset}: missing")
            continue
        problems = compare(r, g, timestamps=timestamps)
        if problems:
            mismatches.append(f"partition {r.partition} offset {r.offset}: {problems}")
        if len(mismatches) > 10:
            break
    assert not mismatches, f"{what}: {len(mismatches)}+ records differ:\n" + "\n".join(mismatches)


def check_in_partition_order(produced: list[Rec], got: list[Got], what: str, *, timestamps: bool = True) -> None:
    """For producers that report no offsets: per partition, the consumed records are the
    produced ones in production order, offsets dense from 0."""
    assert len(got) == len(produced), f"{what}: consumed {len(got)} records, produced {len(produced)}"
    mine: dict[int, list[Rec]] = {}
    for r in produced:
        mine.setdefault(r.partition, []).append(r)
    theirs: dict[int, list[Got]] = {}
    for g in got:
        theirs.setdefault(g.partition, []).append(g)
    assert sorted(mine) == sorted(theirs), f"{what}: partitions produced {sorted(mine)} != consumed {sorted(theirs)}"
    mismatches = []
    for p, recs in mine.items():
        gots = sorted(theirs[p], key=lambda g: g.offset)
        assert [g.offset for g in gots] == list(range(len(gots))), f"{what}: partition {p} offsets are not 0..{len(gots) - 1}"
        for r, g in zip(recs, gots):
            problems = compare(r, g, timestamps=timestamps)
            if problems:
                mismatches.append(f"partition {p} offset {g.offset}: {problems}")
            if len(mismatches) > 10:
                break
    assert not mismatches, f"{what}: {len(mismatches)}+ records differ:\n" + "\n".join(mismatches)


def compare(r: Rec, g: Got, *, timestamps: bool = True) -> str:
    problems = []
    if r.key != g.key:
        problems.append(f"key {short(r.key)} != {short(g.key)}")
    if r.value != g.value:
        problems.append(f"value {short(r.value)} != {short(g.value)}")
    if list(r.headers) != list(g.headers):
        problems.append(f"headers {r.headers[:4]} != {g.headers[:4]}")
    if timestamps:
        if g.timestamp_type != 1:
            problems.append(f"timestamp type {g.timestamp_type} is not CreateTime")
        if r.timestamp is not None and r.timestamp != g.timestamp:
            problems.append(f"timestamp {r.timestamp} != {g.timestamp}")
    return "; ".join(problems)


def short(b: bytes | None) -> str:
    if b is None:
        return "None"
    return repr(b[:24]) + (f"...({len(b)} bytes)" if len(b) > 24 else "")


# ---------------------------------------------------------------------------------------
# Clients
# ---------------------------------------------------------------------------------------


def confluent_produce(bootstrap: str, topic: str, records: list[Rec], codec: str, **extra) -> None:
    """Produces with confluent-kafka (acks=all); sets each record's offset from its
    delivery report; fails on any delivery error."""
    from confluent_kafka import Producer

    config = {
        **QUIET,
        "bootstrap.servers": bootstrap,
        "acks": "all",
        "enable.idempotence": False,
        "compression.type": codec,
        "linger.ms": 5,
        "message.timeout.ms": 60000,
        "queue.buffering.max.messages": 200000,
        "queue.buffering.max.kbytes": 1048576,
    }
    config.update(extra)
    producer = Producer(config)
    errors: list[str] = []

    def make_callback(rec: Rec):
        def on_delivery(err, msg):
            if err is not None:
                errors.append(str(err))
            else:
                rec.offset = msg.offset()
                if msg.partition() != rec.partition:
                    errors.append(f"delivered to partition {msg.partition()}, asked {rec.partition}")

        return on_delivery

    for rec in records:
        while True:
            try:
                producer.produce(
                    topic,
                    key=rec.key,
                    value=rec.value,
                    partition=rec.partition,
                    headers=rec.headers or None,
                    timestamp=rec.timestamp or 0,
                    on_delivery=make_callback(rec),
                )
                break
            except BufferError:
                producer.poll(0.1)
        producer.poll(0)
    remaining = producer.flush(120)
    producer.close()
    assert remaining == 0, f"confluent-kafka: {remaining} records not delivered within 120s"
    assert not errors, f"confluent-kafka delivery errors ({len(errors)}): {errors[:5]}"
    assert all(r.offset is not None for r in records)


def kafka_python_produce(bootstrap: str, topic: str, records: list[Rec], codec: str) -> None:
    """Produces with kafka-python (acks=all, idempotence off: Strata has no
    InitProducerId yet); sets each record's offset from its RecordMetadata."""
    from kafka import KafkaProducer
    from kafka import codec as kafka_codec

    available = {"none": True, "gzip": True, "snappy": kafka_codec.has_snappy(), "lz4": kafka_codec.has_lz4(),
                 "zstd": kafka_codec.has_zstd()}
    if not available[codec]:
        pytest.fail(f"kafka-python cannot use {codec}: pip install -r tests/requirements.txt", pytrace=False)
    producer = KafkaProducer(
        bootstrap_servers=bootstrap,
        acks="all",
        enable_idempotence=False,
        compression_type=None if codec == "none" else codec,
        linger_ms=5,
        max_request_size=4 * 1024 * 1024,
        request_timeout_ms=60000,
    )
    try:
        futures = []
        for rec in records:
            futures.append(
                producer.send(
                    topic,
                    key=rec.key,
                    value=rec.value,
                    partition=rec.partition,
                    headers=[(k, v) for k, v in rec.headers],
                    timestamp_ms=rec.timestamp,
                )
            )
        producer.flush(timeout=120)
        for rec, future in zip(records, futures):
            meta = future.get(timeout=60)
            assert meta.partition == rec.partition
            rec.offset = meta.offset
    finally:
        producer.close(timeout=30)


def _convert_confluent(msg) -> Got:
    ts_type, ts = msg.timestamp()
    return Got(
        partition=msg.partition(),
        offset=msg.offset(),
        key=msg.key(),
        value=msg.value(),
        headers=list(msg.headers() or []),
        timestamp_type=ts_type,
        timestamp=ts,
    )


def confluent_consume(bootstrap: str, topic: str, partitions: int, *, start: dict[int, int] | None = None,
                      timeout: float = CONSUME_TIMEOUT_S, **extra) -> list[Got]:
    """Reads every partition from `start` (default 0) to the high watermark with
    assign() and explicit offsets (no group membership). Any consumer error fails."""
    from confluent_kafka import Consumer, KafkaException, TopicPartition

    config = {
        **QUIET,
        "bootstrap.servers": bootstrap,
        # librdkafka requires a group id even for assign(); nothing is committed.
        "group.id": "strata-tests-unused",
        "enable.auto.commit": False,
        "enable.auto.offset.store": False,
        "auto.offset.reset": "error",
        "check.crcs": True,
        "fetch.wait.max.ms": 100,
        "enable.partition.eof": False,
    }
    config.update(extra)
    consumer = Consumer(config)
    try:
        start = start or {}
        ends = {}
        for p in range(partitions):
            low, high = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=30, cached=False)
            ends[p] = high
        consumer.assign([TopicPartition(topic, p, start.get(p, 0)) for p in range(partitions)])
        got: list[Got] = []
        position = {p: start.get(p, 0) for p in range(partitions)}
        deadline = time.monotonic() + timeout
        while any(position[p] < ends[p] for p in ends):
            if time.monotonic() > deadline:
                pytest.fail(f"confluent-kafka consumer: timed out at {position}, wanted {ends}")
            for msg in consumer.consume(10000, 0.5):
                if msg.error():
                    raise KafkaException(msg.error())
                g = _convert_confluent(msg)
                got.append(g)
                position[g.partition] = max(position[g.partition], g.offset + 1)
        return got
    finally:
        consumer.close()


def kafka_python_consume(bootstrap: str, topic: str, partitions: int, *, timeout: float = CONSUME_TIMEOUT_S) -> list[Got]:
    """Reads every partition from its beginning to its end with KafkaConsumer(group_id=None)
    and assign()."""
    from kafka import KafkaConsumer, TopicPartition

    consumer = KafkaConsumer(
        bootstrap_servers=bootstrap,
        group_id=None,
        enable_auto_commit=False,
        auto_offset_reset="none",
        check_crcs=True,
        fetch_max_wait_ms=100,
        max_partition_fetch_bytes=1024 * 1024,
        request_timeout_ms=60000,
    )
    try:
        tps = [TopicPartition(topic, p) for p in range(partitions)]
        consumer.assign(tps)
        begins = consumer.beginning_offsets(tps)
        ends = consumer.end_offsets(tps)
        for tp in tps:
            consumer.seek(tp, begins[tp])
        got: list[Got] = []
        position = {tp.partition: begins[tp] for tp in tps}
        want = {tp.partition: ends[tp] for tp in tps}
        deadline = time.monotonic() + timeout
        while any(position[p] < want[p] for p in want):
            if time.monotonic() > deadline:
                pytest.fail(f"kafka-python consumer: timed out at {position}, wanted {want}")
            for tp, msgs in consumer.poll(timeout_ms=500, max_records=10000).items():
                for m in msgs:
                    got.append(
                        Got(
                            partition=m.partition,
                            offset=m.offset,
                            key=m.key,
                            value=m.value,
                            headers=[(k, v) for k, v in (m.headers or [])],
                            timestamp_type=m.timestamp_type + 1,  # kafka-python: 0 create, 1 log-append
                            timestamp=m.timestamp,
                        )
                    )
                    position[m.partition] = max(position[m.partition], m.offset + 1)
        return got
    finally:
        consumer.close()


def confluent_admin(bootstrap: str):
    from confluent_kafka.admin import AdminClient

    return AdminClient({**QUIET, "bootstrap.servers": bootstrap})


def create_topic(bootstrap: str, name: str, partitions: int, config: dict[str, str] | None = None) -> None:
    from confluent_kafka.admin import NewTopic

    admin = confluent_admin(bootstrap)
    futures = admin.create_topics([NewTopic(name, partitions, 1, config=config or {})], operation_timeout=30)
    futures[name].result(timeout=60)


# ---------------------------------------------------------------------------------------
# kcat
# ---------------------------------------------------------------------------------------

KCAT_FORMAT = r"%p\t%o\t%T\t%K\t%k\t%S\t%s\t%h\n"


def kcat_binary() -> str:
    import shutil

    path = shutil.which("kcat") or shutil.which("kafkacat")
    if not path:
        pytest.fail("kcat is not installed (Debian package kcat)", pytrace=False)
    return path


def kcat_produce(bootstrap: str, topic: str, records: list[Rec], codec: str, headers: list[tuple[str, str]],
                 partition: int | None = None) -> None:
    """Produces `records` (printable keys/values, no '|', tab or newline) with kcat -P -K'|'.

    Without `partition`, kcat's murmur2 key partitioner places each record (as the Java
    client would); the caller checks where they landed.
    """
    command = [kcat_binary(), "-P", "-b", bootstrap, "-t", topic, "-K", "|", "-z", codec,
               "-X", "topic.partitioner=murmur2_random", "-X", "acks=all", "-X", "linger.ms=5",
               "-X", "enable.idempotence=false", "-m", "30"]
    for name, value in headers:
        command += ["-H", f"{name}={value}"]
    if partition is not None:
        command += ["-p", str(partition)]
    data = b"".join(r.key + b"|" + r.value + b"\n" for r in records)
    for r in records:
        assert b"|" not in r.key + r.value and b"\n" not in r.key + r.value and b"\t" not in r.key + r.value
    result = subprocess.run(command, input=data, capture_output=True, timeout=300)
    assert result.returncode == 0, f"kcat -P exited {result.returncode}: {result.stderr.decode()[-2000:]}"
    assert b"fail" not in result.stderr.lower(), f"kcat -P reported: {result.stderr.decode()[-2000:]}"


def kcat_consume(bootstrap: str, topic: str, partition: int | None = None) -> list[Got]:
    """Consumes the topic (or one partition) from the beginning to the end with kcat -C -e."""
    command = [kcat_binary(), "-C", "-b", bootstrap, "-t", topic, "-o", "beginning", "-e", "-q",
               "-X", "check.crcs=true", "-m", "30", "-f", KCAT_FORMAT]
    if partition is not None:
        command += ["-p", str(partition)]
    result = subprocess.run(command, capture_output=True, timeout=300)
    assert result.returncode == 0, f"kcat -C exited {result.returncode}: {result.stderr.decode()[-2000:]}"
    assert result.stderr.strip() == b"", f"kcat -C reported: {result.stderr.decode()[-2000:]}"
    got = []
    for line in result.stdout.split(b"\n")[:-1]:
        p, o, ts, klen, key, vlen, value, hdrs = line.split(b"\t")
        headers = []
        if hdrs:
            for pair in hdrs.split(b","):
                name, _, v = pair.partition(b"=")
                headers.append((name.decode(), v))
        got.append(Got(
            partition=int(p), offset=int(o),
            key=None if int(klen) < 0 else key,
            value=None if int(vlen) < 0 else value,
            headers=headers, timestamp_type=1, timestamp=int(ts),
        ))
        assert int(klen) < 0 or len(key) == int(klen), line
        assert int(vlen) < 0 or len(value) == int(vlen), line
    return got


KCAT_RAW_FORMAT = "%p %o %T %K %S\n%k%s\n"


def kcat_consume_raw(bootstrap: str, topic: str, partition: int, *, timeout: float = 300) -> list[Got]:
    """Consumes one partition from the beginning to the end with kcat -C -e, binary-safe:
    each record is a line `partition offset timestamp keylen valuelen` followed by the raw
    key and value bytes and a newline. Headers are not read (returned empty)."""
    command = [kcat_binary(), "-C", "-b", bootstrap, "-t", topic, "-p", str(partition), "-o", "beginning", "-e",
               "-q", "-X", "check.crcs=true", "-m", "60", "-f", KCAT_RAW_FORMAT]
    result = subprocess.run(command, capture_output=True, timeout=timeout)
    assert result.returncode == 0, f"kcat -C exited {result.returncode}: {result.stderr.decode()[-2000:]}"
    assert result.stderr.strip() == b"", f"kcat -C reported: {result.stderr.decode()[-2000:]}"
    out = result.stdout
    got = []
    pos = 0
    while pos < len(out):
        nl = out.index(b"\n", pos)
        p, o, ts, klen, vlen = (int(x) for x in out[pos:nl].split(b" "))
        start = nl + 1
        key_end = start + max(klen, 0)
        value_end = key_end + max(vlen, 0)
        assert out[value_end:value_end + 1] == b"\n", f"kcat output is not framed as expected at byte {value_end}"
        got.append(Got(
            partition=p, offset=o,
            key=None if klen < 0 else out[start:key_end],
            value=None if vlen < 0 else out[key_end:value_end],
            headers=[], timestamp_type=1, timestamp=ts,
        ))
        pos = value_end + 1
    return got


def watermarks(bootstrap: str, topic: str, partition: int = 0) -> tuple[int, int]:
    """(log start offset, high watermark) as confluent-kafka reads them (ListOffsets)."""
    from confluent_kafka import Consumer, TopicPartition

    consumer = Consumer({**QUIET, "bootstrap.servers": bootstrap, "group.id": "strata-tests-unused"})
    try:
        return consumer.get_watermark_offsets(TopicPartition(topic, partition), timeout=30, cached=False)
    finally:
        consumer.close()
