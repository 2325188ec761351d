"""Diskless topics (`diskless.enable=true`, issue 19): the contract, checked from outside.

A diskless partition lives in the object store and the metadata store only: any broker
takes produce for it, collects what it receives for `diskless_append_interval_ms`, writes
one shared object, commits the offset ranges in one etcd transaction, and only then
acknowledges. These tests run two `strata` brokers on one etcd and one moto bucket, shared
by the whole module (starting a cluster costs more than most checks), and write and read
with real clients, or by hand (Produce, Fetch and InitProducerId below) where a client
cannot be made to do what the scenario needs: send the same partition to both brokers,
retry a batch on another broker, or read through one chosen broker.

The object store is reached through two proxies, brokers -> `FaultProxy` (cut off at
will) -> `RecordingProxy` (every S3 request by method and key) -> moto, so one cluster
serves every test.

- Request economy: 60 s at 5 MiB/s over 8, then 64 partitions: the shared-object PUTs
  stay within 2 x (60 s / append interval) and etcd's committed proposals within
  brokers x appends, whatever the partition count.
- Durability: acks=all records written through both brokers to the same partitions; one
  broker is killed (-9) and its disk deleted: the other serves every acknowledged record
  at its offset, offsets dense, none twice, each writer's order kept; the first broker,
  restarted on an empty disk, serves the same log.
- Idempotence: a batch retried on the other broker gets its first offset back and is
  stored once; a sequence gap and a stale epoch are refused; an idempotent
  confluent-kafka producer writing through a broker kill has no duplicate.
- Object-store outage: produce to a diskless topic is refused with a retriable error and
  never acknowledged while the store is unreachable; a replicated topic on the same
  brokers takes acks=all produce meanwhile; once the store is back every acknowledged
  record is there.
- Mixed cluster: one consumer group reads a replicated and a diskless topic, commits,
  and a new consumer of the group resumes from the committed offsets of both;
  diskless.enable is shown and cannot be changed.
- Transactions: a transactional producer commits one transaction and aborts another over
  diskless partitions; the coordinator's broker appends the markers itself, and every
  broker serves the same log (data, and one control batch per transaction and partition).
- A broker that lists a new diskless topic in Metadata takes produce for it at once.
- Metadata sends a client that gives its zone to a broker of that zone; a tailing
  consumer there is served from what that broker wrote, without a GET.
"""

from __future__ import annotations

import math
import re
import struct
import subprocess
import threading
import time
import uuid
from dataclasses import dataclass, field

import pytest
from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AlterConfigOpType, ConfigEntry, ConfigResource, NewTopic, ResourceType

from clients import QUIET, confluent_admin, confluent_consume
from replication import Cluster, History, Writer, check_history
from servers import (Bucket, FaultProxy, RecordingProxy, StrataBroker, http_get, metric_value, s3_env,
                     stop_brokers, strata_binary, wait_until)
from wire import (connect, crc32c, frame, kstring, list_offsets_latest_v1, parse_list_offsets_v1,
                  parse_produce_response_v3, read_uvarint, record_batch, recv_frame, request_header)

MiB = 1 << 20
DISKLESS = {"diskless.enable": "true"}
APPEND_INTERVAL_S = 0.25  # diskless_append_interval_ms's default, which the brokers keep
ETCD_TXN_PARTITIONS = 40  # partitions per append transaction (spec: etcd's max-txn-ops)

# Kafka error codes the tests name.
NONE = 0
OUT_OF_ORDER_SEQUENCE_NUMBER = 45
INVALID_PRODUCER_EPOCH = 47
PRODUCER_FENCED = 90
KAFKA_STORAGE_ERROR = 56
# Retriable codes that fit "the object store is unreachable" for a produce: the client
# retries them as they are (Kafka's RetriableException subclasses). UNKNOWN_TOPIC_OR_PARTITION
# and CORRUPT_MESSAGE are retriable too, but would tell the client something false.
RETRIABLE_OUTAGE = {
    5: "LEADER_NOT_AVAILABLE",
    6: "NOT_LEADER_OR_FOLLOWER",
    7: "REQUEST_TIMED_OUT",
    13: "NETWORK_EXCEPTION",
    19: "NOT_ENOUGH_REPLICAS",
    20: "NOT_ENOUGH_REPLICAS_AFTER_APPEND",
    56: "KAFKA_STORAGE_ERROR",
}

# `<prefix>/<cluster id>/diskless/<yyyymmddhh>/<node id>-<uuid>.batches`
SHARED_OBJECT = re.compile(r"(?:^|/)diskless/\d{10}/(?P<node>\d+)-[^/]+\.batches$")
PUT_CLASS = {"PutObject", "CreateMultipartUpload", "UploadPart", "CompleteMultipartUpload", "CopyObject",
             "UploadPartCopy"}


# ---------------------------------------------------------------------------------------
# The module's cluster: two brokers, one etcd, one bucket behind two proxies
# ---------------------------------------------------------------------------------------


@dataclass
class World:
    cluster: Cluster
    bucket: Bucket
    recorder: RecordingProxy
    faults: FaultProxy
    started: list[StrataBroker] = field(default_factory=list)

    def broker(self, node: int) -> StrataBroker:
        return self.cluster.brokers[node]


@pytest.fixture(scope="module")
def world(tmp_path_factory, etcd, moto, strata_bin):
    bucket = Bucket(moto, f"strata-dl-{uuid.uuid4().hex[:12]}")
    try:
        bucket.create()
    except Exception as e:
        pytest.fail(f"cannot create bucket {bucket.name} in moto at {moto.endpoint}: {e}\n{moto.log_tail()}",
                    pytrace=False)
    recorder = RecordingProxy(moto.port, bucket.name)
    faults = FaultProxy(("127.0.0.1", recorder.port))
    env = s3_env(faults.endpoint, bucket.name, prefix="dl")
    # Replicated topics stay local (the outage test needs them independent of the store).
    del env["STRATA_REMOTE_STORAGE_ENABLE"]
    env["STRATA_DEFAULT_REPLICATION_FACTOR"] = "2"
    root = tmp_path_factory.mktemp("diskless")
    started: list[StrataBroker] = []

    def factory(metadata: str, env: dict[str, str], args, name: str) -> StrataBroker:
        b = StrataBroker(root / name, metadata=metadata, env=env, args=args)
        started.append(b)
        return b.start()

    try:
        yield World(Cluster(factory, etcd, size=2, env=env), bucket, recorder, faults, started)
    finally:
        failures = stop_brokers(started)
        faults.stop()
        recorder.stop()
        bucket.delete_all()
        if failures:
            pytest.fail("\n\n".join(failures), pytrace=False)


@pytest.fixture
def w(world, request, etcd, moto) -> World:
    """The module's cluster for one test: every broker running and listed by every
    broker, the store reachable; its servers' logs attached to a failure's report."""
    if not hasattr(request.node, "_strata_servers"):
        request.node._strata_servers = []
    request.node._strata_servers += [*world.started, etcd, moto]
    world.faults.unblock()
    for node, b in world.cluster.brokers.items():
        if not b.is_running():
            b.start()
    everyone = set(world.cluster.brokers)
    wait_until("every broker lists every broker",
               lambda: all(world.cluster.brokers_listed(n) == everyone for n in everyone), 60)
    return world


def create(w: World, topic: str, partitions: int, config: dict[str, str]) -> None:
    """CreateTopics with the broker's default replication factor (-1), as a diskless
    topic would be created by a user who has no replicas to ask for; returns once every
    broker has every partition in its metadata with a leader."""
    admin = confluent_admin(w.cluster.bootstrap)  # kept alive until the answer is in
    futures = admin.create_topics([NewTopic(topic, partitions, config=config)], operation_timeout=30)
    futures[topic].result(timeout=60)

    # Asked by hand: a client bootstrapped to one broker may send Metadata to another.
    def known(b: StrataBroker) -> bool:
        leaders = metadata_leaders(b.bootstrap, topic)
        return leaders is not None and len(leaders) == partitions

    wait_until(f"{topic} in every broker's metadata", lambda: all(known(b) for b in w.cluster.brokers.values()),
               30)


# ---------------------------------------------------------------------------------------
# The protocol by hand: Produce v3 with a chosen timeout, InitProducerId v0, Fetch v4
# ---------------------------------------------------------------------------------------


def produce(bootstrap: str, topic: str, partition: int, batch: bytes, *, acks: int = -1,
            timeout_ms: int = 10000, wait_s: float = 120, transactional_id: str | None = None) -> tuple[int, int]:
    """(error code, base offset) of a Produce v3 of one batch to this very broker."""
    body = (kstring(transactional_id) + struct.pack(">hi", acks, timeout_ms) + struct.pack(">i", 1) + kstring(topic)
            + struct.pack(">ii", 1, partition) + struct.pack(">i", len(batch)) + batch)
    with connect(bootstrap, timeout=wait_s) as sock:
        sock.sendall(frame(request_header(0, 3, 31) + body))
        correlation_id, results = parse_produce_response_v3(recv_frame(sock))
    assert correlation_id == 31 and len(results) == 1 and results[0][:2] == (topic, partition), results
    return results[0][2], results[0][3]


def metadata_leaders(bootstrap: str, topic: str) -> dict[int, int] | None:
    """{partition: leader} of `topic` in a Metadata v1 answered by this very broker;
    None while it does not know the topic."""
    with connect(bootstrap, timeout=30) as sock:
        sock.sendall(frame(request_header(3, 1, 71) + struct.pack(">i", 1) + kstring(topic)))
        buf = recv_frame(sock)

    def string(pos: int) -> tuple[str | None, int]:
        (n,) = struct.unpack_from(">h", buf, pos)
        return (None, pos + 2) if n < 0 else (buf[pos + 2:pos + 2 + n].decode(), pos + 2 + n)

    correlation_id, brokers = struct.unpack_from(">ii", buf, 0)
    assert correlation_id == 71, buf[:16]
    pos = 8
    for _ in range(brokers):
        _, pos = string(pos + 4)  # node id, host
        _, pos = string(pos + 4)  # port, rack
    (topics,) = struct.unpack_from(">i", buf, pos + 4)  # after the controller id
    pos += 8
    assert topics == 1, topics
    (error,) = struct.unpack_from(">h", buf, pos)
    name, pos = string(pos + 2)
    assert name == topic, name
    (count,) = struct.unpack_from(">i", buf, pos + 1)  # after is_internal
    pos += 5
    leaders = {}
    for _ in range(count):
        _error, index, leader, replicas = struct.unpack_from(">hiii", buf, pos)
        pos += 14 + 4 * replicas
        (isr,) = struct.unpack_from(">i", buf, pos)
        pos += 4 + 4 * isr
        leaders[index] = leader
    return leaders if error == NONE and leaders and all(v >= 0 for v in leaders.values()) else None


def init_producer_id(bootstrap: str) -> tuple[int, int]:
    """(producer id, epoch) for an idempotent (non-transactional) producer."""

    def ask():
        with connect(bootstrap, timeout=30) as sock:
            sock.sendall(frame(request_header(22, 0, 41) + kstring(None) + struct.pack(">i", 60000)))
            body = recv_frame(sock)
        correlation_id, _throttle, error, producer_id, epoch = struct.unpack_from(">iihqh", body, 0)
        assert correlation_id == 41, body
        return (producer_id, epoch) if error == NONE else None

    return wait_until(f"InitProducerId from {bootstrap}", ask, timeout=30, interval=0.5)


def zigzag(buf: bytes, pos: int) -> tuple[int, int]:
    n, pos = read_uvarint(buf, pos)
    return (n >> 1) ^ -(n & 1), pos


def decode_batches(data: bytes) -> list[tuple[int, bytes]]:
    """(offset, value) of every record of uncompressed v2 batches (a trailing partial
    batch, which Fetch may return, is left out); each batch's CRC is checked, control
    batches are skipped."""
    out = []
    pos = 0
    while len(data) - pos >= 61:
        base_offset, length = struct.unpack_from(">qi", data, pos)
        end = pos + 12 + length
        if end > len(data):
            break
        _epoch, magic, crc, attributes, last_delta = struct.unpack_from(">ibIhi", data, pos + 12)
        assert magic == 2, f"batch at offset {base_offset}: magic {magic}"
        assert crc32c(data[pos + 21:end]) == crc, f"batch at offset {base_offset}: CRC mismatch"
        assert attributes & 0x07 == 0, f"batch at offset {base_offset}: compressed (the tests send none)"
        (count,) = struct.unpack_from(">i", data, pos + 57)
        rec = pos + 61
        deltas = []
        for _ in range(count):
            size, rec = zigzag(data, rec)
            cursor = rec + 1  # attributes
            _ts, cursor = zigzag(data, cursor)
            delta, cursor = zigzag(data, cursor)
            key_len, cursor = zigzag(data, cursor)
            cursor += max(key_len, 0)
            value_len, cursor = zigzag(data, cursor)
            value = data[cursor:cursor + value_len] if value_len >= 0 else None
            if not attributes & 0x20:
                out.append((base_offset + delta, value))
            deltas.append(delta)
            rec += size
        assert rec == end, f"batch at offset {base_offset}: records end at {rec}, the batch at {end}"
        assert deltas and deltas[-1] == last_delta, f"batch at offset {base_offset}: last offset delta"
        pos = end
    return out


def fetch(bootstrap: str, topic: str, partition: int, offset: int) -> tuple[int, int, bytes]:
    """(error code, high watermark, records) of a Fetch v4 (no rack) to this broker."""
    body = (struct.pack(">iiiib", -1, 100, 1, 4 * MiB, 0) + struct.pack(">i", 1) + kstring(topic)
            + struct.pack(">iiqi", 1, partition, offset, 1 * MiB))
    with connect(bootstrap, timeout=60) as sock:
        sock.sendall(frame(request_header(1, 4, 51) + body))
        buf = recv_frame(sock)
    correlation_id, _throttle, topics = struct.unpack_from(">iii", buf, 0)
    assert correlation_id == 51 and topics == 1, buf[:64]
    (name_len,) = struct.unpack_from(">h", buf, 12)
    pos = 14 + name_len
    count, index, error, high_watermark, _lso, aborted = struct.unpack_from(">iihqqi", buf, pos)
    assert count == 1 and index == partition, (count, index)
    pos += 4 + 4 + 2 + 8 + 8 + 4 + 16 * max(aborted, 0)
    (size,) = struct.unpack_from(">i", buf, pos)
    return error, high_watermark, buf[pos + 4:pos + 4 + max(size, 0)]


def high_watermark(b: StrataBroker, topic: str, partition: int) -> int:
    """The high watermark broker `b` itself answers (ListOffsets v1, latest)."""
    with connect(b.bootstrap, timeout=60) as sock:
        sock.sendall(list_offsets_latest_v1(61, topic, partition))
        correlation_id, results = parse_list_offsets_v1(recv_frame(sock))
    assert correlation_id == 61 and len(results) == 1, results
    _, _, error, offset = results[0]
    assert error == NONE, f"ListOffsets {topic}/{partition} through {b.bootstrap}: error {error}"
    return offset


def wait_caught_up(w: World, topic: str, ends: dict[int, int], timeout: float = 30) -> None:
    """Waits until every broker's high watermark of each partition is at least
    `ends[partition]` (the end of what was acknowledged): a broker learns of another's
    commits through its etcd watch, a moment later. One that never does fails here."""

    def behind() -> list[str]:
        return [f"node {n} {topic}/{p} at {hw} of {end}" for n, b in w.cluster.brokers.items()
                for p, end in ends.items() if (hw := high_watermark(b, topic, p)) < end]

    lagging: list[str] = []

    def done() -> bool:
        lagging[:] = behind()
        return not lagging

    deadline = time.monotonic() + timeout
    while not done():
        assert time.monotonic() < deadline, f"brokers still behind what was acknowledged after {timeout}s: {lagging}"
        time.sleep(0.2)


def read_through(b: StrataBroker, topic: str, partition: int) -> list[tuple[int, str]]:
    """Every (offset, value) of a partition from offset 0 to the high watermark, served
    by broker `b` itself."""
    out: list[tuple[int, str]] = []
    end = None
    position = 0
    deadline = time.monotonic() + 120
    while end is None or position < end:
        error, high_watermark, data = fetch(b.bootstrap, topic, partition, position)
        assert error == NONE, f"{topic}/{partition} at {position} through {b.bootstrap}: error {error}"
        end = high_watermark if end is None else end
        for offset, value in decode_batches(data):
            if offset >= position:
                out.append((offset, value.decode()))
                position = offset + 1
        assert time.monotonic() < deadline, f"{topic}/{partition} through {b.bootstrap}: stuck at {position} of {end}"
    return out


def check_log(acked: dict[str, tuple[int, int]], logs: dict[int, list[tuple[int, str]]], *,
              sent: set[str]) -> list[str]:
    """Anomalies of partition logs ((offset, value) lists) against what writers were told.
    Values are "<partition>:<writer>:<seq>". Every acknowledged value is at its offset;
    no value twice; offsets dense from 0; each writer's values in its order; nothing that
    was never sent."""
    anomalies = []
    for partition, log in sorted(logs.items()):
        where = f"partition {partition}"
        at = {value: offset for offset, value in log}
        lost = sorted((o, v) for v, (p, o) in acked.items() if p == partition and at.get(v) != o)
        if lost:
            anomalies.append(f"{where}: {len(lost)} acknowledged records missing or moved, e.g. {lost[0][1]} "
                             f"acknowledged at {lost[0][0]}, found at {at.get(lost[0][1])}")
        values = [v for _, v in log]
        if len(values) != len(set(values)):
            anomalies.append(f"{where}: {len(values) - len(set(values))} duplicates, e.g. "
                             f"{next(v for v in values if values.count(v) > 1)}")
        offsets = [o for o, _ in log]
        if offsets != list(range(len(offsets))):
            gap = next(i for i, o in enumerate(offsets) if o != i)
            anomalies.append(f"{where}: offsets not dense from 0: {offsets[max(gap - 1, 0):gap + 2]} at index {gap}")
        unknown = [v for v in values if v not in sent]
        if unknown:
            anomalies.append(f"{where}: {len(unknown)} records nobody sent, e.g. {unknown[0]!r}")
        last: dict[str, int] = {}
        for v in values:
            _, writer, seq = v.split(":")
            if int(seq) <= last.get(writer, -1):
                anomalies.append(f"{where}: writer {writer}'s {seq} after {last[writer]}")
                break
            last[writer] = int(seq)
    return anomalies


def batch_of(values: list[str], producer: tuple[int, int, int] = (-1, -1, -1)) -> bytes:
    return record_batch([v.encode() for v in values], producer=producer)


# ---------------------------------------------------------------------------------------
# Request economy
# ---------------------------------------------------------------------------------------


def etcd_counters(etcd) -> tuple[float, float]:
    """(etcd_server_proposals_committed_total, etcd_mvcc_txn_total) from etcd's /metrics:
    writes through raft, and transactions of more than one operation."""
    status, text = http_get(f"http://{etcd.endpoint}/metrics")
    assert status == 200, f"etcd /metrics answered {status}"
    proposals = metric_value(text, "etcd_server_proposals_committed_total")
    txns = metric_value(text, "etcd_mvcc_txn_total")
    assert proposals is not None and txns is not None, "etcd's /metrics lacks its proposal or txn counter"
    return proposals, txns


@dataclass
class Economy:
    partitions: int
    seconds: float
    acked_mib: float
    shared_puts: int
    shared_objects_by_node: dict[int, int]
    partitions_by_leader: dict[int, int]
    merge_puts: int
    proposals: int
    txns: int

    def __str__(self) -> str:
        return (f"{self.partitions} partitions, {self.seconds:.1f} s, {self.acked_mib:.0f} MiB acknowledged: "
                f"{self.shared_puts} shared-object PUTs (objects by node {self.shared_objects_by_node}, "
                f"partitions by leader {self.partitions_by_leader}), "
                f"{self.merge_puts} PUTs under topics/, {self.proposals} etcd proposals committed, "
                f"{self.txns} etcd txns")


def run_economy(w: World, etcd, topic: str, partitions: int, seconds: float = 60,
                rate: int = 5 * MiB) -> Economy:
    """Produces `rate` bytes/s of 1 KiB records round-robin over the partitions for
    `seconds` (acks=all, through both brokers: metadata spreads the partitions), and
    counts what the store and etcd saw from the first produce to the last acknowledgement."""
    create(w, topic, partitions, DISKLESS)
    by_leader: dict[int, int] = {}
    for p in w.cluster.partitions(topic).values():
        by_leader[p.leader] = by_leader.get(p.leader, 0) + 1
    producer = Producer({**QUIET, "bootstrap.servers": w.cluster.bootstrap, "acks": "all",
                         "enable.idempotence": False, "linger.ms": 50, "compression.type": "none",
                         "message.timeout.ms": 120000})
    acked = [0]
    errors: list[str] = []

    def delivered(err, msg):
        if err is None:
            acked[0] += len(msg.value())
        else:
            errors.append(str(err))

    value = bytes(range(256)) * 4
    per_tick = rate // len(value) // 10  # records per 100 ms
    first_request = w.recorder.mark()
    proposals0, txns0 = etcd_counters(etcd)
    started = time.monotonic()
    n = 0
    for tick in range(int(seconds * 10)):
        for _ in range(per_tick):
            while True:
                try:
                    producer.produce(topic, value=value, partition=n % partitions, on_delivery=delivered)
                    break
                except BufferError:
                    # The client's queue is full (a slow machine): wait for acknowledgements
                    # rather than fail; the bounds below hold for whatever rate was reached.
                    producer.poll(0.1)
            n += 1
        producer.poll(0)
        time.sleep(max(0.0, started + (tick + 1) / 10 - time.monotonic()))
    assert producer.flush(120) == 0, f"{len(producer)} records still unacknowledged"
    elapsed = time.monotonic() - started
    proposals1, txns1 = etcd_counters(etcd)
    requests = w.recorder.since(first_request)
    assert not errors, f"{len(errors)} records failed, e.g. {errors[0]}"
    assert acked[0] == n * len(value)

    shared = [(op, key) for method, op, key in requests if SHARED_OBJECT.search(key)]
    by_node: dict[int, int] = {}
    for op, key in shared:
        if op in ("PutObject", "CompleteMultipartUpload"):
            node = int(SHARED_OBJECT.search(key).group("node"))
            by_node[node] = by_node.get(node, 0) + 1
    merge_puts = sum(1 for _, op, key in requests if op in PUT_CLASS and "/topics/" in f"/{key}")

    # Nothing was lost on the way: the high watermarks add up to what was acknowledged.
    consumer = Consumer({**QUIET, "bootstrap.servers": w.cluster.bootstrap, "group.id": "dl-economy-unused"})
    try:
        total = sum(consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=30, cached=False)[1]
                    for p in range(partitions))
    finally:
        consumer.close()
    assert total == n, f"{topic}: the high watermarks add up to {total}, {n} records were acknowledged"
    return Economy(partitions, elapsed, acked[0] / MiB, sum(1 for op, _ in shared if op in PUT_CLASS), by_node,
                   by_leader, merge_puts, int(proposals1 - proposals0), int(txns1 - txns0))


def test_request_economy_does_not_grow_with_partitions(w, etcd):
    """PUTs of shared objects are bounded by brokers x (time / append interval), and
    etcd writes by brokers x appends (x the transactions an append needs for the
    partitions one broker touches, 40 a transaction), with 8 partitions as with 64. A
    broker writing an object, or committing a transaction, per partition fails this."""
    results = []
    for partitions in (8, 64):
        e = run_economy(w, etcd, f"economy-{partitions}", partitions)
        print(e)
        results.append(e)
        appends = 2 * math.ceil(e.seconds / APPEND_INTERVAL_S)
        # Each broker may start one interval early and end one late.
        assert e.shared_puts <= appends + 2, f"{e}: more shared-object PUTs than 2 x {e.seconds:.1f} s / 0.25 s"
        # The producer sends each partition to the broker metadata names (a stable hash
        # over both): each of those brokers wrote objects, and only those.
        assert set(e.shared_objects_by_node) == set(e.partitions_by_leader), f"{e}: the wrong brokers wrote"
        # An append commits one transaction per 40 partitions it touches. Merges (one
        # segment per partition: they do grow with partitions) commit through etcd too,
        # a manifest update and a trim each at most.
        per_append = math.ceil(max(e.partitions_by_leader.values()) / ETCD_TXN_PARTITIONS)
        allowed = appends * per_append + 2 * e.merge_puts + 100
        assert e.proposals <= allowed, \
            f"{e}: etcd committed more proposals than brokers x appends ({allowed} with merges and slack)"
    eight, sixty_four = results
    # The same traffic over 8 times the partitions: no more objects a second, and at most
    # twice the etcd writes a second (a broker leading over 40 partitions needs two
    # transactions an append), the merges aside. A commit per partition would be 8 times.
    assert sixty_four.shared_puts / sixty_four.seconds <= eight.shared_puts / eight.seconds * 1.25 + 0.2, \
        f"shared PUTs grew: {eight} -> {sixty_four}"
    assert (sixty_four.proposals - 2 * sixty_four.merge_puts) / sixty_four.seconds \
        <= eight.proposals / eight.seconds * 2 + 1, f"etcd writes grew with partitions: {eight} -> {sixty_four}"


# ---------------------------------------------------------------------------------------
# Durability
# ---------------------------------------------------------------------------------------


def test_every_acknowledged_record_survives_a_broker_and_its_disk(w):
    """Two confluent-kafka producers (acks=all, not idempotent), each asking for brokers
    of its own zone (`client.id` ... `strata_az=rN`), and two hand-made writers sending
    the same partitions to both brokers by hand, so both brokers commit batches of every
    partition. Broker 1 is killed as soon as the last acknowledgement arrives and its
    data dir deleted: broker 2 serves every acknowledged record, at the offset it was
    acknowledged at, with dense offsets, no duplicates and each writer's order; so does
    broker 1 restarted on its empty disk."""
    topic, partitions = "durable", 8
    create(w, topic, partitions, DISKLESS)
    b1, b2 = w.broker(1), w.broker(2)
    mark = w.recorder.mark()
    acked: dict[str, tuple[int, int]] = {}
    sent: set[str] = set()
    errors: list[str] = []
    lock = threading.Lock()

    def delivered(err, msg):
        with lock:
            if err is None:
                acked[msg.value().decode()] = (msg.partition(), msg.offset())
            else:
                errors.append(f"{msg.value().decode()}: {err}")

    def by_hand(b: StrataBroker, writer: str):
        for seq in range(2):
            for p in range(partitions):
                values = [f"{p}:{writer}:{seq * 10 + i}" for i in range(3)]
                with lock:
                    sent.update(values)
                error, base = produce(b.bootstrap, topic, p, batch_of(values))
                with lock:
                    if error == NONE:
                        acked.update({v: (p, base + i) for i, v in enumerate(values)})
                    else:
                        errors.append(f"by hand to node {b.bootstrap} {topic}/{p}: error {error}")

    producers = [(Producer({**QUIET, "bootstrap.servers": b.bootstrap, "client.id": f"durable-{n},strata_az=r{n}",
                            "acks": "all", "enable.idempotence": False, "linger.ms": 5,
                            "max.in.flight.requests.per.connection": 1, "compression.type": "none",
                            "message.timeout.ms": 60000}), f"c{n}") for n, b in ((1, b1), (2, b2))]
    hands = [threading.Thread(target=by_hand, args=(b, f"w{n}")) for n, b in ((1, b1), (2, b2))]
    for t in hands:
        t.start()
    for seq in range(150):
        for producer, writer in producers:
            for p in range(partitions):
                value = f"{p}:{writer}:{seq}"
                with lock:
                    sent.add(value)
                producer.produce(topic, value=value.encode(), partition=p, on_delivery=delivered)
            producer.poll(0)
        time.sleep(0.01)
    for t in hands:
        t.join(120)
    for producer, _ in producers:
        assert producer.flush(60) == 0, "records still unacknowledged"
    b1.kill9()
    assert not errors, f"{len(errors)} sends failed, e.g. {errors[:3]}"
    # Nothing of the partitions is on either broker's disk.
    for b in (b1, b2):
        log_dir = b.data_dir / "logs"
        local = [d.name for d in log_dir.iterdir() if d.name.startswith(f"{topic}.")] if log_dir.is_dir() else []
        assert not local, f"a diskless topic has log directories on {b.data_dir}: {local}"
    assert len(acked) == len(sent) == partitions * (2 * 150 + 2 * 6)
    # Both brokers wrote shared objects meanwhile: the hand-made writers' batches were
    # answered by the broker they were sent to, not forwarded.
    writers = {int(m.group("node")) for _, op, key in w.recorder.since(mark)
               if op in ("PutObject", "CompleteMultipartUpload") and (m := SHARED_OBJECT.search(key))}
    assert writers == {1, 2}, f"shared objects written by nodes {writers}"

    b1.wipe_data_dir()
    wait_until("broker 2 alone in its metadata", lambda: w.cluster.brokers_listed(2) == {2}, 30)
    logs = {p: read_through(b2, topic, p) for p in range(partitions)}
    anomalies = check_log(acked, logs, sent=sent)
    assert not anomalies, "\n".join(anomalies)
    assert sum(len(log) for log in logs.values()) == len(acked)
    # A client follows the metadata to the survivor and reads the same records.
    got = confluent_consume(b2.bootstrap, topic, partitions)
    assert sorted((g.partition, g.offset, g.value.decode()) for g in got) == \
        sorted((p, o, v) for p, log in logs.items() for o, v in log)

    b1.start()
    wait_until("both brokers listed again", lambda: w.cluster.brokers_listed(1) == {1, 2}, 30)
    again = {p: read_through(b1, topic, p) for p in range(partitions)}
    for p in range(partitions):
        assert again[p] == logs[p], f"partition {p}: broker 1 on an empty disk serves another log than broker 2"


# ---------------------------------------------------------------------------------------
# Idempotence
# ---------------------------------------------------------------------------------------


def test_a_retry_on_another_broker_is_recognised(w):
    """An idempotent producer's batches to broker 1, retried on broker 2 (as a client does
    when its connection breaks before the answer): the same base offsets come back and the
    partition holds each batch once. A batch with a sequence gap is refused
    (OUT_OF_ORDER_SEQUENCE_NUMBER) and a batch of an older epoch fenced, whichever broker
    gets it."""
    topic = "idem-retry"
    create(w, topic, 2, DISKLESS)
    b1, b2 = w.broker(1), w.broker(2)
    producer_id, epoch = init_producer_id(b1.bootstrap)
    first = batch_of(["0:a:0", "0:a:1", "0:a:2"], (producer_id, epoch, 0))
    second = batch_of(["0:a:3", "0:a:4"], (producer_id, epoch, 3))

    error, base_first = produce(b1.bootstrap, topic, 0, first)
    assert error == NONE, f"first batch: error {error}"
    error, base_second = produce(b1.bootstrap, topic, 0, second)
    assert (error, base_second) == (NONE, base_first + 3), (error, base_first, base_second)
    # Retries of both (not only the last batch) on the other broker.
    assert produce(b2.bootstrap, topic, 0, first) == (NONE, base_first), "a retry on broker 2 got another answer"
    assert produce(b2.bootstrap, topic, 0, second) == (NONE, base_second), "a retry on broker 2 got another answer"
    # A new batch of another producer shows where the log ends: right after the two.
    error, after = produce(b2.bootstrap, topic, 0, batch_of(["0:b:0"]))
    assert (error, after) == (NONE, base_first + 5), f"the retries were stored again: next offset {after}"

    # Sequence 5 is next; 7 leaves a gap.
    gap = batch_of(["0:a:7"], (producer_id, epoch, 7))
    assert produce(b2.bootstrap, topic, 0, gap)[0] == OUT_OF_ORDER_SEQUENCE_NUMBER
    assert produce(b1.bootstrap, topic, 0, gap)[0] == OUT_OF_ORDER_SEQUENCE_NUMBER
    # The client bumps its epoch (KIP-360): sequence 0 again. The old epoch is fenced then.
    error, bumped = produce(b2.bootstrap, topic, 0, batch_of(["0:a:8"], (producer_id, epoch + 1, 0)))
    assert (error, bumped) == (NONE, base_first + 6), (error, bumped)
    stale = batch_of(["0:a:9"], (producer_id, epoch, 5))
    for b in (b1, b2):
        error, _ = produce(b.bootstrap, topic, 0, stale)
        assert error in (INVALID_PRODUCER_EPOCH, PRODUCER_FENCED), f"a stale epoch through {b.bootstrap}: {error}"

    expected = [(base_first + i, v) for i, v in enumerate(["0:a:0", "0:a:1", "0:a:2", "0:a:3", "0:a:4",
                                                           "0:b:0", "0:a:8"])]
    for b in (b1, b2):
        assert read_through(b, topic, 0) == expected, f"through {b.bootstrap}"


def log_through(b: StrataBroker, topic: str, partition: int) -> list[tuple[int, str]]:
    """Every (offset, value) of a partition from offset 0 to the high watermark, served by
    broker `b` itself, with "marker" for a control batch's offset."""
    out: list[tuple[int, str]] = []
    end = None
    position = 0
    deadline = time.monotonic() + 120
    while end is None or position < end:
        error, high_watermark, data = fetch(b.bootstrap, topic, partition, position)
        assert error == NONE, f"{topic}/{partition} at {position} through {b.bootstrap}: error {error}"
        end = high_watermark if end is None else end
        values = dict(decode_batches(data))
        pos = 0
        while len(data) - pos >= 61:
            base_offset, length = struct.unpack_from(">qi", data, pos)
            if pos + 12 + length > len(data):
                break
            attributes, last_delta = struct.unpack_from(">hi", data, pos + 21)
            last = base_offset + last_delta
            if last >= position:
                if attributes & 0x20:
                    out.append((base_offset, "marker"))
                else:
                    out += [(o, values[o].decode()) for o in range(max(base_offset, position), last + 1)]
                position = last + 1
            pos += 12 + length
        assert time.monotonic() < deadline, f"{topic}/{partition} through {b.bootstrap}: stuck at {position} of {end}"
    return out


def test_transactions_commit_and_abort_on_diskless_partitions(w):
    """A transactional producer (confluent-kafka, bootstrapped to the cluster) commits one
    transaction and aborts another over two diskless partitions. The markers have no
    leader to go to: the coordinator's broker appends them through its own appender, so
    data and markers of one partition come through different brokers. Every broker serves
    the same log: two records, the commit marker, two records, the abort marker."""
    from confluent_kafka import Producer

    topic = "txn"
    create(w, topic, 2, DISKLESS)
    producer = Producer({**QUIET, "bootstrap.servers": w.cluster.bootstrap, "transactional.id": "dl-txn",
                         "linger.ms": 5})
    producer.init_transactions(30)
    for outcome in ("commit", "abort"):
        producer.begin_transaction()
        for i in range(4):
            producer.produce(topic, value=f"{i % 2}:{outcome}:{i // 2}".encode(), partition=i % 2)
        producer.flush(30)
        if outcome == "commit":
            producer.commit_transaction(30)
        else:
            producer.abort_transaction(30)
    for p in (0, 1):
        expected = [(0, f"{p}:commit:0"), (1, f"{p}:commit:1"), (2, "marker"),
                    (3, f"{p}:abort:0"), (4, f"{p}:abort:1"), (5, "marker")]
        for b in w.cluster.brokers.values():
            wait_until(f"partition {p}'s markers through {b.bootstrap}",
                       lambda b=b, p=p: fetch(b.bootstrap, topic, p, 0)[1] == 6, 30)
            assert log_through(b, topic, p) == expected, f"partition {p} through {b.bootstrap}"


def test_metadata_sends_a_client_to_a_broker_of_its_zone(w):
    """Metadata names a live broker of the client's zone as every diskless partition's
    leader when the client says its zone (`client.id` containing `strata_az=<zone>`), and
    spreads the partitions over all live brokers otherwise."""
    from confluent_kafka.admin import AdminClient

    topic, partitions = "zones", 16
    create(w, topic, partitions, DISKLESS)
    for zone, node in (("r1", 1), ("r2", 2)):
        admin = AdminClient({**QUIET, "bootstrap.servers": w.cluster.bootstrap,
                             "client.id": f"zones-app,strata_az={zone}"})
        leaders = {p.leader for p in admin.list_topics(topic=topic, timeout=15).topics[topic].partitions.values()}
        assert leaders == {node}, f"a client of zone {zone} is sent to {leaders}"
    # Without a zone: a stable hash over both brokers (16 partitions all on one broker
    # would be a 1 in 32768 chance).
    leaders = {i: p.leader for i, p in w.cluster.partitions(topic).items()}
    assert set(leaders.values()) == {1, 2}, leaders
    for node, b in w.cluster.brokers.items():
        assert metadata_leaders(b.bootstrap, topic) == leaders, f"broker {node} spreads the partitions differently"


def test_a_tailing_consumer_is_served_from_the_write_cache(w):
    """A consumer tailing a diskless partition through the broker that takes its
    producer's writes (both in zone r1) reads every record without that broker reading
    back a shared object it wrote: no GET of an object written during the test. A
    consumer in zone r2 then reads them through broker 2, which has to GET them."""
    topic = "tail"
    create(w, topic, 1, DISKLESS)
    zone = {"client.id": "tail-app,strata_az=r1"}
    consumer = Consumer({**QUIET, **zone, "bootstrap.servers": w.cluster.bootstrap, "group.id": "tail-unused",
                         "enable.auto.commit": False, "fetch.wait.max.ms": 500})
    consumer.assign([TopicPartition(topic, 0, 0)])
    consumer.consume(1, timeout=1)  # connected and fetching before anything is written
    mark = w.recorder.mark()
    producer = Producer({**QUIET, **zone, "bootstrap.servers": w.cluster.bootstrap, "acks": "all", "linger.ms": 5})
    got: list[bytes] = []
    try:
        for i in range(5):
            for j in range(20):
                producer.produce(topic, value=b"tail-%d-%d" % (i, j), partition=0)
            assert producer.flush(30) == 0
            deadline = time.monotonic() + 30
            while len(got) < 20 * (i + 1) and time.monotonic() < deadline:
                for m in consumer.consume(100, timeout=0.5):
                    if m.error():
                        raise KafkaException(m.error())
                    got.append(m.value())
    finally:
        consumer.close()
    assert got == [b"tail-%d-%d" % (i, j) for i in range(5) for j in range(20)]
    requests = w.recorder.since(mark)
    written = {key for _, op, key in requests if op in ("PutObject", "CompleteMultipartUpload")
               and SHARED_OBJECT.search(key)}
    assert {int(SHARED_OBJECT.search(k).group("node")) for k in written} == {1}, written
    read_back = [key for _, op, key in requests if op == "GetObject" and key in written]
    assert not read_back, f"the tailing consumer was served by reading back {len(read_back)} objects"
    # The control: broker 2 did not write them, so it reads them from the store, and the
    # recorder sees those reads.
    mark = w.recorder.mark()
    other = confluent_consume(w.broker(2).bootstrap, topic, 1, **{"client.id": "tail-app,strata_az=r2"})
    assert [g.value for g in other] == got
    assert any(op == "GetObject" and key in written for _, op, key in w.recorder.since(mark)), \
        "broker 2 served records it never wrote without reading an object"


def test_a_consumer_of_another_rack_is_redirected_to_a_listed_replica(w):
    """KIP-392 on a diskless partition: Metadata lists every live broker as a replica and
    in sync, the chosen leader first; a consumer sent to broker 1 (its client.id says
    zone r1) but naming rack r2 in Fetch is answered preferred_read_replica = broker 2,
    which is in that list, and reads there: broker 2 GETs the objects broker 1 wrote
    (broker 1 would have served them from its write cache)."""
    topic = "redirect"
    create(w, topic, 1, DISKLESS)
    zone = {"client.id": "redirect-app,strata_az=r1"}
    from confluent_kafka.admin import AdminClient
    admin = AdminClient({**QUIET, **zone, "bootstrap.servers": w.cluster.bootstrap})
    partition = admin.list_topics(topic=topic, timeout=15).topics[topic].partitions[0]
    assert partition.leader == 1, partition.leader
    assert list(partition.replicas) == [1, 2] and list(partition.isrs) == [1, 2], \
        (partition.replicas, partition.isrs)
    producer = Producer({**QUIET, **zone, "bootstrap.servers": w.cluster.bootstrap, "acks": "all", "linger.ms": 5})
    mark = w.recorder.mark()
    for i in range(20):
        producer.produce(topic, value=b"redirect-%d" % i, partition=0)
    assert producer.flush(30) == 0
    written = {key for _, op, key in w.recorder.since(mark)
               if op in ("PutObject", "CompleteMultipartUpload") and SHARED_OBJECT.search(key)}
    assert {int(SHARED_OBJECT.search(k).group("node")) for k in written} == {1}, written
    mark = w.recorder.mark()
    got = confluent_consume(w.cluster.bootstrap, topic, 1, **zone, **{"client.rack": "r2"})
    assert [g.value for g in got] == [b"redirect-%d" % i for i in range(20)]
    assert any(op == "GetObject" and key in written for _, op, key in w.recorder.since(mark)), \
        "the consumer was not served by broker 2 (no GET of broker 1's objects)"


def test_list_offsets_by_timestamp_on_unmerged_runs(w):
    """ListOffsets by timestamp on a diskless partition's runs (not merged yet: the
    default merge age is a minute), through both brokers: the first record at or after
    the timestamp, one between two batches' timestamps included, -1 past the last."""
    topic = "by-time"
    create(w, topic, 1, DISKLESS)
    now = int(time.time() * 1000) - 60_000
    producer = Producer({**QUIET, "bootstrap.servers": w.cluster.bootstrap, "acks": "all", "linger.ms": 0})
    for i in range(3):
        producer.produce(topic, value=b"t%d" % i, partition=0, timestamp=now + 1000 * i)
        assert producer.flush(30) == 0  # one batch (and one run) each
    for node, b in w.cluster.brokers.items():
        # The zone in client.id makes Metadata name broker `node` as the leader.
        consumer = Consumer({**QUIET, "bootstrap.servers": b.bootstrap, "group.id": "by-time-unused",
                             "client.id": f"by-time,strata_az=r{node}"})
        try:
            for ts, want in ((now - 5, 0), (now, 0), (now + 1, 1), (now + 1500, 2), (now + 2000, 2),
                             (now + 2001, -1)):
                [found] = consumer.offsets_for_times([TopicPartition(topic, 0, ts)], timeout=15)
                assert found.error is None and found.offset == want, \
                    f"broker {node}: timestamp {ts - now:+d} ms: {found.offset} ({found.error}), not {want}"
        finally:
            consumer.close()


def test_a_broker_listing_a_diskless_topic_takes_produce_for_it(w):
    """Any broker takes produce for any diskless partition: once a broker lists a new
    diskless topic in its Metadata answer, it accepts produce to every partition at once
    (no UNKNOWN_TOPIC_OR_PARTITION, which a client would retry, a moment later)."""
    topic, partitions = "listed", 4
    admin = confluent_admin(w.broker(1).bootstrap)
    admin.create_topics([NewTopic(topic, partitions, config=DISKLESS)], operation_timeout=30)[topic].result(60)
    # Broker 1 answered CreateTopics; broker 2 learns of the topic from etcd.
    b2 = w.broker(2)
    leaders = wait_until(f"{topic} in broker 2's metadata", lambda: metadata_leaders(b2.bootstrap, topic), 30,
                         interval=0.005)
    assert len(leaders) == partitions, leaders
    answers = {p: produce(b2.bootstrap, topic, p, batch_of([f"{p}:l:0"]))[0]
               for p in range(partitions)}
    assert answers == {p: NONE for p in range(partitions)}, f"broker 2, listing {topic}, answered {answers}"


def test_idempotent_producer_across_a_broker_kill_has_no_duplicate(w):
    """An idempotent acks=all confluent-kafka producer writes to a diskless topic through
    both brokers; the broker metadata sends partition 0 to is killed (-9) mid-stream, so
    batches it committed without answering are retried on the other broker, which must
    then take every partition; it is restarted afterwards. Every acknowledged record is at
    its offset, none twice, each partition in order, offsets dense, both brokers serve the
    same log."""
    topic, partitions = "idem-kill", 4
    create(w, topic, partitions, DISKLESS)
    victim = w.cluster.leader(topic, 0)
    history = History()
    writer = Writer(w.cluster.bootstrap, topic, partitions, history, rate=1000)

    def acked_per_partition() -> list[int]:
        with history.lock:
            places = list(history.acked.values())
        return [sum(1 for p, _ in places if p == partition) for partition in range(partitions)]

    writer.start()
    try:
        wait_until("records acknowledged in every partition", lambda: min(acked_per_partition()) > 100, 60)
        w.broker(victim).kill9()
        at_kill = acked_per_partition()
        wait_until(f"every partition acknowledged through the broker left after node {victim}'s kill",
                   lambda: all(now > then + 200 for now, then in zip(acked_per_partition(), at_kill)), 90)
        w.broker(victim).start()
        at_restart = acked_per_partition()
        wait_until("records acknowledged in every partition after the restart",
                   lambda: all(now > then + 100 for now, then in zip(acked_per_partition(), at_restart)), 60)
    finally:
        writer.stop()
    assert not history.failed, f"{len(history.failed)} records failed, e.g. {history.failed[:3]}"
    ends = {p: 1 + max((o for q, o in history.acked.values() if q == p), default=-1) for p in range(partitions)}
    wait_caught_up(w, topic, ends)
    logs = {p: {n: [(o, v) for o, v in read_through(w.broker(n), topic, p)] for n in (1, 2)}
            for p in range(partitions)}
    anomalies = check_history(history, logs)
    assert not anomalies, "\n".join(anomalies)
    assert sum(len(logs[p][1]) for p in logs) == len(history.acked), "records in the log nobody was told about"


# ---------------------------------------------------------------------------------------
# Object-store outage
# ---------------------------------------------------------------------------------------


def test_object_store_outage_refuses_diskless_produce_only(w):
    """With the store unreachable, a diskless produce to either broker is answered with a
    retriable error, and an idempotent producer's records are not acknowledged until the
    store is back; a replicated topic on the same brokers takes acks=all produce
    meanwhile. Afterwards every acknowledged record is at its offset, once."""
    diskless, replicated = "outage-diskless", "outage-replicated"
    create(w, diskless, 2, DISKLESS)
    create(w, replicated, 2, {})
    b1, b2 = w.broker(1), w.broker(2)
    acked: dict[str, tuple[int, int]] = {}
    sent: set[str] = set()
    for p in range(2):
        values = [f"{p}:before:{i}" for i in range(3)]
        sent.update(values)
        error, base = produce(b1.bootstrap, diskless, p, batch_of(values))
        assert error == NONE, f"before the outage: error {error}"
        acked.update({v: (p, base + i) for i, v in enumerate(values)})

    acked_while_blocked: list[str] = []
    blocked = threading.Event()
    late: dict[str, tuple[int, int]] = {}
    late_errors: list[str] = []

    def delivered(err, msg):
        value = msg.value().decode()
        if err is not None:
            late_errors.append(f"{value}: {err}")
            return
        if blocked.is_set():
            acked_while_blocked.append(value)
        late[value] = (msg.partition(), msg.offset())

    idempotent = Producer({**QUIET, "bootstrap.servers": w.cluster.bootstrap, "acks": "all",
                           "enable.idempotence": True, "linger.ms": 5, "message.timeout.ms": 300000})
    w.faults.block()
    blocked.set()
    try:
        refused: dict[int, int] = {}

        def refuse(n: int, b: StrataBroker):
            # A timeout well past the PUT's retries, so the answer is the failed PUT's
            # (KAFKA_STORAGE_ERROR: nothing committed), never REQUEST_TIMED_OUT.
            started = time.monotonic()
            refused[n], _ = produce(b.bootstrap, diskless, 0, batch_of([f"0:refused{n}:0"]),
                                    timeout_ms=120000, wait_s=150)
            print(f"broker {n} refused the produce after {time.monotonic() - started:.1f}s")

        sent.update({"0:refused1:0", "0:refused2:0"})
        both = [threading.Thread(target=refuse, args=(n, b)) for n, b in ((1, b1), (2, b2))]
        for t in both:
            t.start()
        for t in both:
            t.join(150)
        assert set(refused) == {1, 2}, f"a produce during the outage got no answer: {refused}"
        assert all(code == KAFKA_STORAGE_ERROR for code in refused.values()), \
            f"diskless produce during the outage answered {refused}, not KAFKA_STORAGE_ERROR (56)"
        for i in range(200):
            value = f"{i % 2}:idem:{i // 2}"
            sent.add(value)
            idempotent.produce(diskless, value=value.encode(), partition=i % 2, on_delivery=delivered)
        idempotent.poll(0)
        # The replicated topic is not held up by the store.
        plain = Producer({**QUIET, "bootstrap.servers": w.cluster.bootstrap, "acks": "all", "linger.ms": 5,
                          "message.timeout.ms": 30000})
        replicated_errors: list[str] = []
        for i in range(200):
            plain.produce(replicated, value=b"r%d" % i, partition=i % 2,
                          on_delivery=lambda err, msg: replicated_errors.append(str(err)) if err else None)
        assert plain.flush(60) == 0 and not replicated_errors, replicated_errors[:3]
        # Give the brokers a few append intervals to (wrongly) acknowledge.
        until = time.monotonic() + 3
        while time.monotonic() < until:
            idempotent.poll(0.2)
    finally:
        blocked.clear()
        w.faults.unblock()
    assert not acked_while_blocked, \
        f"{len(acked_while_blocked)} diskless records acknowledged while the store was unreachable"
    assert idempotent.flush(240) == 0, "records still unacknowledged long after the store came back"
    assert not late_errors, f"{len(late_errors)} records failed, e.g. {late_errors[:3]}"
    acked.update(late)
    wait_caught_up(w, diskless, {p: 1 + max(o for q, o in acked.values() if q == p) for p in range(2)})
    logs = {p: read_through(b2, diskless, p) for p in range(2)}
    anomalies = check_log(acked, logs, sent=sent)
    assert not anomalies, "\n".join(anomalies)
    for p in range(2):
        assert read_through(b1, diskless, p) == logs[p], f"partition {p}: the brokers serve different logs"
    # Everything in the log was acknowledged: a KAFKA_STORAGE_ERROR from a failed PUT
    # means nothing was committed, so the two refused batches are not in it.
    extra = {v for log in logs.values() for _, v in log} - acked.keys()
    assert not extra, f"refused during the outage ({refused}) but in the log: {sorted(extra)}"
    got = confluent_consume(w.cluster.bootstrap, replicated, 2)
    assert sorted(g.value for g in got) == sorted(b"r%d" % i for i in range(200))


# ---------------------------------------------------------------------------------------
# Mixed cluster
# ---------------------------------------------------------------------------------------


def produce_all(bootstrap: str, topic: str, values: list[tuple[int, bytes]]) -> None:
    producer = Producer({**QUIET, "bootstrap.servers": bootstrap, "acks": "all", "linger.ms": 5})
    errors: list[str] = []
    for partition, value in values:
        producer.produce(topic, value=value, partition=partition,
                         on_delivery=lambda err, msg: errors.append(str(err)) if err else None)
    assert producer.flush(60) == 0 and not errors, errors[:3]


def consume_group(bootstrap: str, group: str, topics: list[str], want: int) -> list[tuple[str, int, int, bytes]]:
    """Subscribes `group` to `topics`, reads until `want` records came (and then a
    moment longer, to see any extra), commits synchronously and leaves."""
    consumer = Consumer({**QUIET, "bootstrap.servers": bootstrap, "group.id": group, "enable.auto.commit": False,
                         "auto.offset.reset": "earliest", "fetch.wait.max.ms": 100,
                         "session.timeout.ms": 10000})
    got: list[tuple[str, int, int, bytes]] = []
    try:
        consumer.subscribe(topics)
        deadline = time.monotonic() + 120
        while len(got) < want and time.monotonic() < deadline:
            for m in consumer.consume(1000, timeout=0.5):
                if m.error():
                    raise KafkaException(m.error())
                got.append((m.topic(), m.partition(), m.offset(), m.value()))
        for m in consumer.consume(1000, timeout=2):
            if not m.error():
                got.append((m.topic(), m.partition(), m.offset(), m.value()))
        assert len(got) >= want, f"group {group} read {len(got)} of {want} records"
        consumer.commit(asynchronous=False)
    finally:
        consumer.close()
    return got


def test_one_group_reads_a_replicated_and_a_diskless_topic(w):
    """A consumer group subscribed to a replicated and a diskless topic gets every record
    of both once, commits on both, and a new member of the group resumes from those
    commits: it reads only what came after. DescribeConfigs and `strata topics describe`
    tell the topics apart, and diskless.enable cannot be changed afterwards."""
    replicated, diskless = "mixed-replicated", "mixed-diskless"
    create(w, replicated, 3, {})
    create(w, diskless, 4, DISKLESS)
    first = {replicated: [(i % 3, b"r-%d" % i) for i in range(300)],
             diskless: [(i % 4, b"d-%d" % i) for i in range(400)]}
    for topic, values in first.items():
        produce_all(w.cluster.bootstrap, topic, values)
    group = "mixed-group"
    got = consume_group(w.cluster.bootstrap, group, [replicated, diskless], 700)
    assert sorted((t, v) for t, _, _, v in got) == sorted((t, v) for t, vs in first.items() for _, v in vs)

    second = {replicated: [(i % 3, b"r2-%d" % i) for i in range(90)],
              diskless: [(i % 4, b"d2-%d" % i) for i in range(120)]}
    for topic, values in second.items():
        produce_all(w.cluster.bootstrap, topic, values)
    resumed = consume_group(w.cluster.bootstrap, group, [replicated, diskless], 210)
    assert sorted((t, v) for t, _, _, v in resumed) == sorted((t, v) for t, vs in second.items() for _, v in vs), \
        "the group did not resume from its committed offsets"

    consumer = Consumer({**QUIET, "bootstrap.servers": w.cluster.bootstrap, "group.id": group})
    try:
        committed = consumer.committed([TopicPartition(replicated, p) for p in range(3)]
                                       + [TopicPartition(diskless, p) for p in range(4)], timeout=30)
    finally:
        consumer.close()
    assert {(tp.topic, tp.partition): tp.offset for tp in committed} == \
        {**{(replicated, p): 130 for p in range(3)}, **{(diskless, p): 130 for p in range(4)}}

    admin = confluent_admin(w.cluster.bootstrap)
    described = admin.describe_configs([ConfigResource(ResourceType.TOPIC, t) for t in (replicated, diskless)])
    modes = {r.name: c["diskless.enable"].value for r, f in described.items() for c in [f.result(timeout=30)]}
    assert modes == {replicated: "false", diskless: "true"}, modes
    for topic, mode in ((replicated, "replicated"), (diskless, "diskless")):
        shown = subprocess.run([str(strata_binary()), "topics", "describe", topic, "--admin", w.broker(1).admin],
                               capture_output=True, text=True, timeout=120)
        assert shown.returncode == 0, f"strata topics describe {topic}: {shown.stderr}"
        assert f"mode: {mode}" in shown.stdout, shown.stdout
    for topic, value in ((diskless, "false"), (replicated, "true")):
        resource = ConfigResource(ResourceType.TOPIC, topic, incremental_configs=[
            ConfigEntry("diskless.enable", value, incremental_operation=AlterConfigOpType.SET)])
        with pytest.raises(KafkaException) as refused:
            admin.incremental_alter_configs([resource])[resource].result(timeout=30)
        assert refused.value.args[0].code() == KafkaError.INVALID_CONFIG, refused.value
