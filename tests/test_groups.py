"""Consumer groups (Kafka's classic group protocol) through real clients and raw requests.

- three confluent-kafka consumers in one group over 6 partitions, one leaving, one joining
  and the broker restarting mid-way: every record processed, commits resume after the
  restart (nothing re-read from behind a committed offset), committed offsets reach the end;
- kcat -G and kafka-python group consumers resume from their committed offsets;
- committed offsets and their metadata survive a restart and a crash (both metadata
  stores); offset_metadata_max_bytes is enforced;
- admin: ListGroups, DescribeGroups (Stable / Empty), DeleteGroups (NON_EMPTY_GROUP,
  GROUP_ID_NOT_FOUND), OffsetDelete (GROUP_SUBSCRIBED_TO_TOPIC), OffsetFetch of several
  groups in one request;
- static membership (group.instance.id): a restarted member gets its partitions back
  without the other member being revoked; its session then expires;
- cooperative-sticky: only the partitions that move are revoked;
- error paths on the wire (kafka-python's message classes as the codec): KIP-394
  MEMBER_ID_REQUIRED, ILLEGAL_GENERATION, UNKNOWN_MEMBER_ID, INVALID_SESSION_TIMEOUT, ...;
- `__consumer_offsets`: created on first group use, internal, compacted, refuses produce;
- offset retention: offsets of empty groups expire, those of an active group do not.

Consumers run in threads of this process (confluent-kafka releases the GIL); every wait
has a deadline.
"""

from __future__ import annotations

import socket
import struct
import subprocess
import threading
import time

import pytest
from confluent_kafka import (
    Consumer,
    ConsumerGroupState,
    ConsumerGroupTopicPartitions,
    KafkaError,
    KafkaException,
    Producer,
    TopicCollection,
    TopicPartition,
)
from confluent_kafka.admin import ConfigResource, ResourceType
from kafka import KafkaAdminClient, KafkaConsumer
from kafka import TopicPartition as KTopicPartition
from kafka.protocol.admin.groups import (
    DeleteGroupsRequest,
    DeleteGroupsResponse,
    DescribeGroupsRequest,
    DescribeGroupsResponse,
)
from kafka.protocol.consumer.group import (
    HeartbeatRequest,
    HeartbeatResponse,
    JoinGroupRequest,
    JoinGroupResponse,
    LeaveGroupRequest,
    LeaveGroupResponse,
    OffsetCommitRequest,
    OffsetCommitResponse,
    OffsetDeleteRequest,
    OffsetDeleteResponse,
    OffsetFetchRequest,
    OffsetFetchResponse,
    SyncGroupRequest,
    SyncGroupResponse,
)
from kafka.protocol.metadata import FindCoordinatorRequest, FindCoordinatorResponse

from clients import QUIET, confluent_admin, create_topic, kcat_binary, watermarks
from servers import wait_until
from wire import connect, raw_produce, record_batch, recv_frame

OFFSETS_TOPIC = "__consumer_offsets"
OFFSETS_PARTITIONS = 5
# A short initial rebalance delay keeps the first join of each group fast.
ENV = {
    "STRATA_GROUP_INITIAL_REBALANCE_DELAY_MS": "200",
    "STRATA_OFFSETS_TOPIC_PARTITIONS": str(OFFSETS_PARTITIONS),
}
NO_OFFSET = -1001  # librdkafka's OFFSET_INVALID: nothing committed

# Kafka error codes
OFFSET_METADATA_TOO_LARGE = 12
UNKNOWN_TOPIC_OR_PARTITION = 3
INVALID_TOPIC_EXCEPTION = 17
ILLEGAL_GENERATION = 22
REBALANCE_IN_PROGRESS = 27
INCONSISTENT_GROUP_PROTOCOL = 23
INVALID_GROUP_ID = 24
UNKNOWN_MEMBER_ID = 25
INVALID_SESSION_TIMEOUT = 26
NON_EMPTY_GROUP = 68
GROUP_ID_NOT_FOUND = 69
MEMBER_ID_REQUIRED = 79
FENCED_INSTANCE_ID = 82
GROUP_SUBSCRIBED_TO_TOPIC = 86


# ---------------------------------------------------------------------------------------
# Helpers: producing numbered records, reading committed offsets
# ---------------------------------------------------------------------------------------


def value_of(i: int) -> bytes:
    return b"id=%06d" % i


def id_of(value: bytes) -> int:
    assert value.startswith(b"id="), value[:40]
    return int(value[3:])


def produce_ids(bootstrap: str, topic: str, ids, partitions: int) -> dict[int, tuple[int, int]]:
    """Produces record `i` (value id=<i>) to partition i % partitions with an idempotent
    producer; returns id -> (partition, offset). Any delivery error fails."""
    producer = Producer({**QUIET, "bootstrap.servers": bootstrap, "enable.idempotence": True, "acks": "all",
                         "linger.ms": 5, "message.timeout.ms": 60000})
    placed: dict[int, tuple[int, int]] = {}
    errors: list[str] = []

    def callback(i):
        def on_delivery(err, msg):
            if err is not None:
                errors.append(f"{i}: {err}")
            else:
                placed[i] = (msg.partition(), msg.offset())
        return on_delivery

    ids = list(ids)
    for i in ids:
        while True:
            try:
                producer.produce(topic, value=value_of(i), partition=i % partitions, on_delivery=callback(i))
                break
            except BufferError:
                producer.poll(0.05)
        producer.poll(0)
    remaining = producer.flush(60)
    assert remaining == 0 and not errors, f"{remaining} records undelivered, errors {errors[:5]}"
    assert len(placed) == len(ids)
    return placed


class PacedProducer:
    """Produces ids in small chunks with pauses, in a thread, so that consumption (and a
    broker restart) happen while records are still arriving."""

    def __init__(self, bootstrap: str, topic: str, ids, partitions: int, chunk: int = 250, pause: float = 0.1):
        self.ids = list(ids)
        self.topic, self.partitions, self.chunk, self.pause = topic, partitions, chunk, pause
        self.acked = 0
        self.errors: list[str] = []
        self.lock = threading.Lock()
        self.producer = Producer({**QUIET, "bootstrap.servers": bootstrap, "enable.idempotence": True, "acks": "all",
                                  "linger.ms": 5, "message.timeout.ms": 90000, "reconnect.backoff.ms": 50,
                                  "reconnect.backoff.max.ms": 500})
        self.thread = threading.Thread(target=self.run, name="paced-producer", daemon=True)
        self.remaining = None

    def on_delivery(self, err, msg):
        with self.lock:
            if err is not None:
                self.errors.append(str(err))
            else:
                self.acked += 1

    def run(self):
        for start in range(0, len(self.ids), self.chunk):
            for i in self.ids[start:start + self.chunk]:
                while True:
                    try:
                        self.producer.produce(self.topic, value=value_of(i), partition=i % self.partitions,
                                              on_delivery=self.on_delivery)
                        break
                    except BufferError:
                        self.producer.poll(0.05)
            self.producer.poll(0)
            time.sleep(self.pause)
        self.remaining = self.producer.flush(90)

    def start(self) -> "PacedProducer":
        self.thread.start()
        return self

    def finish(self) -> None:
        self.thread.join(120)
        assert not self.thread.is_alive(), "the paced producer did not finish within 120 s"
        assert self.remaining == 0 and not self.errors and self.acked == len(self.ids), (
            f"paced producer: {self.acked}/{len(self.ids)} acknowledged, {self.remaining} left, "
            f"errors {self.errors[:5]}")


def committed(bootstrap: str, group: str, topic: str, partitions: int) -> dict[int, tuple[int, str | None]]:
    """partition -> (committed offset, metadata) of `group`, read with confluent-kafka's
    Consumer.committed() (OffsetFetch) by a client that does not join the group;
    NO_OFFSET where nothing is committed."""
    consumer = Consumer({**QUIET, "bootstrap.servers": bootstrap, "group.id": group, "enable.auto.commit": False})
    try:
        tps = consumer.committed([TopicPartition(topic, p) for p in range(partitions)], timeout=30)
    finally:
        consumer.close()
    out = {}
    for tp in tps:
        assert tp.error is None, f"committed() for {group} {topic}[{tp.partition}]: {tp.error}"
        out[tp.partition] = (tp.offset, tp.metadata)
    return out


def committed_offsets(bootstrap: str, group: str, topic: str, partitions: int) -> dict[int, int]:
    return {p: o for p, (o, _) in committed(bootstrap, group, topic, partitions).items()}


def end_offsets(bootstrap: str, topic: str, partitions: int) -> dict[int, int]:
    return {p: watermarks(bootstrap, topic, p)[1] for p in range(partitions)}


def error_code(future, timeout: float = 60) -> int:
    """The Kafka error code an admin future failed with; 0 if it succeeded."""
    try:
        future.result(timeout=timeout)
        return 0
    except KafkaException as e:
        return e.args[0].code()


def describe(admin, group: str):
    return admin.describe_consumer_groups([group], request_timeout=30)[group].result(timeout=60)


def assigned_partitions(description) -> list[int]:
    """Every partition in the members' assignments (with repeats, if any)."""
    return sorted(tp.partition for m in description.members for tp in m.assignment.topic_partitions)


def listed_groups(admin, **kwargs) -> dict[str, object]:
    result = admin.list_consumer_groups(request_timeout=30, **kwargs).result(timeout=60)
    assert not result.errors, f"list_consumer_groups errors: {result.errors}"
    return {g.group_id: g for g in result.valid}


def java_hash_partition(group: str, partitions: int) -> int:
    """Kafka's placement of a group in __consumer_offsets: abs(String.hashCode) % n."""
    units = group.encode("utf-16-be")
    h = 0
    for i in range(0, len(units), 2):
        h = (31 * h + int.from_bytes(units[i:i + 2], "big")) & 0xFFFFFFFF
    if h >= 1 << 31:
        h -= 1 << 32
    h = 0 if h == -(1 << 31) else abs(h)
    return h % partitions


# ---------------------------------------------------------------------------------------
# A group consumer in a thread
# ---------------------------------------------------------------------------------------


class Journal:
    """Every record processed by a set of consumers, in processing order:
    (consumer name, partition, offset, id)."""

    def __init__(self):
        self.lock = threading.Lock()
        self.entries: list[tuple[str, int, int, int]] = []

    def add(self, who: str, records: list[tuple[int, int, int]]) -> None:
        with self.lock:
            self.entries.extend((who, p, o, i) for p, o, i in records)

    def __len__(self) -> int:
        with self.lock:
            return len(self.entries)

    def snapshot(self) -> list[tuple[str, int, int, int]]:
        with self.lock:
            return list(self.entries)

    def ids(self) -> set[int]:
        with self.lock:
            return {e[3] for e in self.entries}

    def count(self, who: str) -> int:
        with self.lock:
            return sum(1 for e in self.entries if e[0] == who)


class GroupConsumer:
    """A confluent-kafka consumer in a group, polling in its own thread.

    It subscribes to `topic`, records each record it processes in `journal`, and after
    each batch commits the offsets it processed, synchronously (enable.auto.commit off).
    A commit that fails (rebalance, broker restart) is retried on the next round while the
    partition is still assigned; on revocation the pending offsets of the revoked
    partitions are committed once more, best effort, and then dropped (at least once).
    Assignments and revocations are recorded as `events`. `pause()` stops fetching (the
    consumer stays in the group and keeps polling); `quiet()` tells when nothing more is
    processed or left to commit; `resume()` fetches again.
    """

    def __init__(self, name: str, bootstrap: str, group: str, topic: str, journal: Journal | None = None,
                 **config):
        self.name = name
        self.topic = topic
        self.journal = journal if journal is not None else Journal()
        self.config = {
            **QUIET,
            "bootstrap.servers": bootstrap,
            "group.id": group,
            "client.id": name,
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
            "session.timeout.ms": 6000,
            "heartbeat.interval.ms": 500,
            "fetch.wait.max.ms": 100,
            "enable.partition.eof": False,
            "reconnect.backoff.ms": 50,
            "reconnect.backoff.max.ms": 500,
        }
        self.config.update(config)
        self.lock = threading.Lock()
        self._owned: set[int] = set()
        self.events: list[tuple[str, tuple[int, ...]]] = []
        self.pending: dict[int, int] = {}
        self.errors: list[str] = []
        self.commit_failures: list[str] = []
        self.failure: BaseException | None = None
        self.stopping = threading.Event()
        self.pause_wanted = threading.Event()
        self.paused = False  # consumer's thread only
        self._quiet = False
        self.thread = threading.Thread(target=self._run, name=name, daemon=True)

    # --- read from the test's thread

    def owned(self) -> frozenset[int]:
        with self.lock:
            return frozenset(self._owned)

    def event_log(self) -> list[tuple[str, tuple[int, ...]]]:
        with self.lock:
            return list(self.events)

    def processed(self) -> int:
        return self.journal.count(self.name)

    def pause(self) -> None:
        self.pause_wanted.set()

    def resume(self) -> None:
        self.pause_wanted.clear()

    def quiet(self) -> bool:
        with self.lock:
            return self._quiet

    # --- lifecycle

    def start(self) -> "GroupConsumer":
        self.thread.start()
        return self

    def stop(self, check: bool = True) -> None:
        """Stops polling, commits what is pending and closes the consumer (a dynamic member
        leaves the group; a static one does not)."""
        self.stopping.set()
        if self.thread.is_alive():
            self.thread.join(60)
        if check:
            assert not self.thread.is_alive(), f"consumer {self.name} did not close within 60 s"
            if self.failure is not None:
                raise AssertionError(f"consumer {self.name} failed: {self.failure!r}") from self.failure

    # --- the consumer's thread

    def _on_assign(self, consumer, partitions):
        with self.lock:
            self.events.append(("assign", tuple(sorted(tp.partition for tp in partitions))))
            self._owned |= {tp.partition for tp in partitions}

    def _on_revoke(self, consumer, partitions):
        revoked = {tp.partition for tp in partitions}
        self._commit(consumer, only=revoked)
        with self.lock:
            self.events.append(("revoke", tuple(sorted(revoked))))
            self._owned -= revoked
            for p in revoked:
                self.pending.pop(p, None)

    def _on_lost(self, consumer, partitions):
        lost = {tp.partition for tp in partitions}
        with self.lock:
            self.events.append(("lost", tuple(sorted(lost))))
            self._owned -= lost
            for p in lost:
                self.pending.pop(p, None)

    def _commit(self, consumer, only: set[int] | None = None) -> None:
        with self.lock:
            todo = {p: o for p, o in self.pending.items() if only is None or p in only}
        if not todo:
            return
        try:
            result = consumer.commit(offsets=[TopicPartition(self.topic, p, o) for p, o in sorted(todo.items())],
                                     asynchronous=False)
        except KafkaException as e:
            self.commit_failures.append(str(e))
            return
        with self.lock:
            for tp in result or []:
                if tp.error is not None:
                    self.commit_failures.append(f"{tp.partition}: {tp.error}")
                    continue
                if self.pending.get(tp.partition) == tp.offset:
                    del self.pending[tp.partition]

    def _run(self):
        try:
            consumer = Consumer(self.config)
            try:
                consumer.subscribe([self.topic], on_assign=self._on_assign, on_revoke=self._on_revoke,
                                   on_lost=self._on_lost)
                while not self.stopping.is_set():
                    if self.pause_wanted.is_set() != self.paused:
                        self.paused = self.pause_wanted.is_set()
                        (consumer.pause if self.paused else consumer.resume)(consumer.assignment())
                    batch = []
                    for msg in consumer.consume(500, 0.2):
                        if msg.error():
                            self.errors.append(str(msg.error()))
                            continue
                        batch.append((msg.partition(), msg.offset(), id_of(msg.value())))
                    if batch:
                        self.journal.add(self.name, batch)
                        with self.lock:
                            for p, o, _ in batch:
                                self.pending[p] = max(self.pending.get(p, 0), o + 1)
                    self._commit(consumer)
                    with self.lock:
                        self._quiet = self.paused and not batch and not self.pending
                self._commit(consumer)
            finally:
                consumer.close()
        except BaseException as e:  # reported by stop()
            self.failure = e


def stop_all(consumers) -> None:
    """Stops every consumer (all of them, even if one fails), then reports the first failure."""
    for c in consumers:
        c.stopping.set()
    for c in consumers:
        c.stop(check=False)
    for c in consumers:
        c.stop()


def partitioned(consumers, partitions: int) -> bool:
    """True if every consumer owns at least one partition and together they own each
    partition exactly once."""
    owned = [c.owned() for c in consumers]
    return all(owned) and sorted(p for o in owned for p in o) == list(range(partitions))


def describe_consumers(consumers) -> str:
    return "; ".join(f"{c.name}: owns {sorted(c.owned())}, processed {c.processed()}, events {c.event_log()[-6:]}, "
                     f"commit failures {c.commit_failures[-3:]}, errors {c.errors[-3:]}" for c in consumers)


# ---------------------------------------------------------------------------------------
# 1. Three consumers, a leave, a join and a broker restart
# ---------------------------------------------------------------------------------------


def test_group_survives_leave_join_and_restart_processing_every_record(broker):
    b = broker(env=ENV)
    topic, group, partitions, total = "work", "workers", 6, 30_000
    create_topic(b.bootstrap, topic, partitions)
    produce_ids(b.bootstrap, topic, range(0, 10_000), partitions)
    journal = Journal()
    # A long session timeout: a member that closes is seen to go at once only if it sends
    # LeaveGroup.
    config = {"session.timeout.ms": 20000}
    a, bb, c = (GroupConsumer(n, b.bootstrap, group, topic, journal, **config) for n in ("a", "b", "c"))
    consumers = [a, bb, c]
    try:
        for x in consumers:
            x.start()
        wait_until("three consumers sharing six partitions",
                   lambda: partitioned([a, bb, c], partitions) or None, timeout=40)
        wait_until("3000 records processed", lambda: len(journal.ids()) >= 3000, timeout=30)

        c.stop()
        left_at = time.monotonic()
        wait_until("a and b owning all six partitions after c left",
                   lambda: partitioned([a, bb], partitions) or None, timeout=30)
        took = time.monotonic() - left_at
        assert took < 10, f"the group took {took:.1f}s to rebalance after c closed: LeaveGroup ignored?"

        # The broker restarts while records arrive. The consumers pause just before, so that
        # what they process next comes from the offsets the restarted broker returns, not
        # from their positions in memory (which they would commit again, hiding a loss).
        producer = PacedProducer(b.bootstrap, topic, range(10_000, 20_000), partitions).start()
        wait_until("the producer under way", lambda: producer.acked >= 1000, timeout=30)
        a.pause()
        bb.pause()
        wait_until("a and b paused with everything processed committed", lambda: a.quiet() and bb.quiet(),
                   timeout=30)
        # Committed offsets first, then the journal position: whatever is processed after
        # `mark` was processed after these offsets were committed.
        before_restart = committed_offsets(b.bootstrap, group, topic, partitions)
        assert all(o > 0 for o in before_restart.values()), before_restart
        mark = len(journal)
        processed_at_restart = len(journal.ids())
        b.restart()
        producer.finish()
        assert processed_at_restart < 20_000

        # A member joining after the restart: an eager rebalance revokes and reassigns every
        # partition, and each starts again from the offsets the restarted broker returns.
        a_events = len(a.event_log())
        d = GroupConsumer("d", b.bootstrap, group, topic, journal, **config)
        consumers.append(d)
        d.start()
        wait_until("a, b and the new d sharing six partitions",
                   lambda: partitioned([a, bb, d], partitions) or None, timeout=40)
        assert "revoke" in [kind for kind, _ in a.event_log()[a_events:]], a.event_log()
        a.resume()
        bb.resume()
        produce_ids(b.bootstrap, topic, range(20_000, total), partitions)
        wait_until("every record processed", lambda: len(journal.ids()) == total, timeout=60, interval=0.3)
        ends = end_offsets(b.bootstrap, topic, partitions)
        assert sum(ends.values()) == total, f"the topic holds {sum(ends.values())} records, {total} were produced"
        wait_until("committed offsets at the end of every partition",
                   lambda: committed_offsets(b.bootstrap, group, topic, partitions) == ends or None,
                   timeout=30, interval=0.5)
    except BaseException:
        print("consumers:", describe_consumers(consumers))
        raise
    finally:
        stop_all(consumers)

    entries = journal.snapshot()
    assert {e[3] for e in entries} == set(range(total))
    # After the restart consumers resume from the committed offsets: nothing committed
    # before the restart is processed again (a partition re-read from 0 would be).
    reread = [e for e in entries[mark:] if e[2] < before_restart[e[1]]]
    assert not reread, (f"{len(reread)} records behind the offsets committed before the restart "
                        f"({before_restart}) were processed again after it, e.g. {reread[:5]}")
    after = entries[mark:]
    assert len(after) >= total - processed_at_restart, f"only {len(after)} records processed after the restart"
    # At least once, and duplicates bounded by what can be in flight at a rebalance.
    seen: dict[tuple[int, int], int] = {}
    for _, p, o, _ in entries:
        seen[(p, o)] = seen.get((p, o), 0) + 1
    duplicates = sum(n - 1 for n in seen.values())
    assert duplicates <= 5000, f"{duplicates} records processed more than once"
    assert c.processed() > 0 and d.processed() > 0


# ---------------------------------------------------------------------------------------
# 2. kcat -G
# ---------------------------------------------------------------------------------------


def kcat_group(bootstrap: str, group: str, topic: str, *args: str, timeout: float = 60) -> list[tuple[int, int, int]]:
    """Runs kcat's balanced consumer (-G) on `topic`; returns (partition, offset, id) of
    each record it printed. No -o: with -G, -o overrides the committed offsets, so the
    group's committed offsets (or auto.offset.reset=earliest) decide where it starts."""
    command = [kcat_binary(), "-b", bootstrap, "-G", group, "-q", "-f", "%p %o %s\\n",
               "-X", "auto.offset.reset=earliest", "-X", "session.timeout.ms=6000",
               "-X", "heartbeat.interval.ms=500", "-X", "fetch.wait.max.ms=100", *args, topic]
    try:
        result = subprocess.run(command, capture_output=True, timeout=timeout)
    except subprocess.TimeoutExpired as e:
        pytest.fail(f"kcat -G {group} {' '.join(args)} did not exit within {timeout}s; "
                    f"stderr: {(e.stderr or b'').decode()[-2000:]}")
    assert result.returncode == 0, f"kcat -G exited {result.returncode}: {result.stderr.decode()[-2000:]}"
    out = []
    for line in result.stdout.decode().splitlines():
        p, o, v = line.split(" ")
        out.append((int(p), int(o), id_of(v.encode())))
    return out


def test_kcat_group_consumer_resumes_from_committed_offsets(broker):
    b = broker(env=ENV)
    topic, group, partitions = "kcat-group", "kcat-readers", 3
    create_topic(b.bootstrap, topic, partitions)
    placed = produce_ids(b.bootstrap, topic, range(1000), partitions)

    first = kcat_group(b.bootstrap, group, topic, "-c", "600")
    assert len(first) == 600 and len({(p, o) for p, o, _ in first}) == 600, f"{len(first)} lines"
    # kcat committed exactly what it printed (auto commit of stored offsets on close);
    # nothing for a partition it printed nothing from.
    got = committed_offsets(b.bootstrap, group, topic, partitions)
    per_partition = {p: sorted(o for q, o, _ in first if q == p) for p in range(partitions)}
    for p in range(partitions):
        assert per_partition[p] == list(range(len(per_partition[p]))), f"partition {p} not read from 0 in order"
        assert got[p] == (len(per_partition[p]) or NO_OFFSET), (
            f"partition {p}: committed {got[p]}, read {len(per_partition[p])}")

    second = kcat_group(b.bootstrap, group, topic, "-e")
    assert not {i for _, _, i in first} & {i for _, _, i in second}, "the second run re-read records"
    assert sorted(i for _, _, i in first + second) == list(range(1000))
    for p, o, i in first + second:
        assert placed[i] == (p, o)

    produce_ids(b.bootstrap, topic, range(1000, 1200), partitions)
    third = kcat_group(b.bootstrap, group, topic, "-e")
    assert sorted(i for _, _, i in third) == list(range(1000, 1200))
    assert committed_offsets(b.bootstrap, group, topic, partitions) == end_offsets(b.bootstrap, topic, partitions)

    # Nothing new: kcat reaches the end of every partition at once and prints nothing.
    assert kcat_group(b.bootstrap, group, topic, "-e") == []


# ---------------------------------------------------------------------------------------
# 3. kafka-python KafkaConsumer
# ---------------------------------------------------------------------------------------


def kafka_python_group_consume(bootstrap: str, group: str, topic: str, want: int, **config):
    """A kafka-python group consumer polling until it has `want` records; returns the
    consumer (still open) and [(partition, offset, id)]."""
    consumer = KafkaConsumer(topic, bootstrap_servers=bootstrap, group_id=group, auto_offset_reset="earliest",
                             session_timeout_ms=6000, heartbeat_interval_ms=500, fetch_max_wait_ms=100,
                             request_timeout_ms=30000, **config)
    got = []
    deadline = time.monotonic() + 60
    try:
        while len(got) < want:
            assert time.monotonic() < deadline, f"kafka-python consumer: {len(got)}/{want} records after 60s"
            for records in consumer.poll(timeout_ms=200).values():
                got.extend((r.partition, r.offset, id_of(r.value)) for r in records)
    except BaseException:
        consumer.close()
        raise
    return consumer, got


def test_kafka_python_group_consumer_commits_and_a_successor_resumes(broker):
    b = broker(env=ENV)
    topic, group, partitions = "kp-group", "kp-readers", 4
    create_topic(b.bootstrap, topic, partitions)
    produce_ids(b.bootstrap, topic, range(2000), partitions)
    ends = end_offsets(b.bootstrap, topic, partitions)

    consumer, got = kafka_python_group_consume(b.bootstrap, group, topic, 2000, enable_auto_commit=False)
    try:
        assert sorted(i for _, _, i in got) == list(range(2000))
        assert sorted(consumer.assignment()) == [KTopicPartition(topic, p) for p in range(partitions)]
        consumer.commit()
        for p in range(partitions):
            assert consumer.committed(KTopicPartition(topic, p)) == ends[p]
    finally:
        consumer.close()
    assert committed_offsets(b.bootstrap, group, topic, partitions) == ends

    produce_ids(b.bootstrap, topic, range(2000, 2500), partitions)
    # The successor auto-commits, and commits on close.
    consumer, got = kafka_python_group_consume(b.bootstrap, group, topic, 500, enable_auto_commit=True,
                                               auto_commit_interval_ms=1000)
    consumer.close()
    assert sorted(i for _, _, i in got) == list(range(2000, 2500)), "the successor did not start at the commits"
    assert all(o >= ends[p] for p, o, _ in got)
    assert committed_offsets(b.bootstrap, group, topic, partitions) == end_offsets(b.bootstrap, topic, partitions)


# ---------------------------------------------------------------------------------------
# 4. Committed offsets and metadata survive a restart and a crash
# ---------------------------------------------------------------------------------------


def test_committed_offsets_and_metadata_survive_restart_and_crash(broker, metadata):
    b = broker(metadata=metadata, env=ENV)
    topic, group, simple, partitions = "persist", "keepers", "simple-keeper", 3
    create_topic(b.bootstrap, topic, partitions)
    produce_ids(b.bootstrap, topic, range(300), partitions)  # 100 per partition

    # A member of the group commits chosen offsets with metadata.
    # confluent-kafka sends metadata with a trailing NUL byte: 4095 characters are the
    # 4096 bytes offset_metadata_max_bytes allows.
    wanted = {0: (10, "alpha"), 1: (20, ""), 2: (30, "m" * 4095)}
    consumer = Consumer({**QUIET, "bootstrap.servers": b.bootstrap, "group.id": group, "enable.auto.commit": False,
                         "session.timeout.ms": 6000, "heartbeat.interval.ms": 500, "auto.offset.reset": "earliest"})
    try:
        consumer.subscribe([topic])
        deadline = time.monotonic() + 30
        while len(consumer.assignment()) < partitions:
            assert time.monotonic() < deadline, "no assignment within 30 s"
            consumer.poll(0.2)
        result = consumer.commit(offsets=[TopicPartition(topic, p, o, metadata=m) for p, (o, m) in wanted.items()],
                                 asynchronous=False)
        assert all(tp.error is None for tp in result), result
        # Longer metadata than offset_metadata_max_bytes is refused; the old commit stays.
        too_big = None
        try:
            result = consumer.commit(offsets=[TopicPartition(topic, 0, 50, metadata="x" * 4097)], asynchronous=False)
            too_big = [tp.error.code() for tp in result if tp.error is not None]
        except KafkaException as e:
            too_big = [e.args[0].code()]
        assert too_big == [OFFSET_METADATA_TOO_LARGE], too_big
    finally:
        consumer.close()

    # A group without members: offsets committed by the admin client (generation -1).
    admin = confluent_admin(b.bootstrap)
    request = ConsumerGroupTopicPartitions(simple, [TopicPartition(topic, 1, 77, metadata="simple")])
    result = admin.alter_consumer_group_offsets([request])[simple].result(timeout=60)
    assert [(tp.partition, tp.offset, tp.error) for tp in result.topic_partitions] == [(1, 77, None)]

    def check(label):
        got = committed(b.bootstrap, group, topic, partitions)
        assert got == wanted, f"{label}: committed {dict((p, (o, (m or '')[:12])) for p, (o, m) in got.items())}"
        assert committed(b.bootstrap, simple, topic, partitions) == {0: (NO_OFFSET, None), 1: (77, "simple"),
                                                                       2: (NO_OFFSET, None)}, label

    check("before the restart")
    b.restart()
    check("after the restart")
    admin = confluent_admin(b.bootstrap)
    groups = listed_groups(admin)
    assert {group, simple} <= set(groups), f"groups after the restart: {sorted(groups)}"
    assert describe(admin, group).state == ConsumerGroupState.EMPTY

    # A crash right after a commit loses nothing either.
    wanted[2] = (40, "after-restart")
    result = admin.alter_consumer_group_offsets(
        [ConsumerGroupTopicPartitions(group, [TopicPartition(topic, 2, 40, metadata="after-restart")])]
    )[group].result(timeout=60)
    assert [tp.error for tp in result.topic_partitions] == [None]
    b.kill9()
    b.start()
    check("after kill -9")

    # A member of the group starts where the commits say.
    consumer = Consumer({**QUIET, "bootstrap.servers": b.bootstrap, "group.id": group, "enable.auto.commit": False,
                         "auto.offset.reset": "earliest", "session.timeout.ms": 6000})
    first: dict[int, int] = {}
    try:
        consumer.subscribe([topic])
        deadline = time.monotonic() + 30
        while len(first) < partitions:
            assert time.monotonic() < deadline, f"first offsets read: {first}"
            msg = consumer.poll(0.2)
            if msg is not None and not msg.error():
                first.setdefault(msg.partition(), msg.offset())
    finally:
        consumer.close()
    assert first == {p: o for p, (o, _) in wanted.items()}


# ---------------------------------------------------------------------------------------
# 5. Admin: list, describe, delete groups; delete and list offsets
# ---------------------------------------------------------------------------------------


def test_admin_lists_describes_and_deletes_groups_and_offsets(broker):
    b = broker(env=ENV)
    topic, other, group, idle, partitions = "adm", "adm-other", "adm-active", "adm-idle", 4
    create_topic(b.bootstrap, topic, partitions)
    create_topic(b.bootstrap, other, 1)
    produce_ids(b.bootstrap, topic, range(400), partitions)
    ends = end_offsets(b.bootstrap, topic, partitions)
    admin = confluent_admin(b.bootstrap)
    kadmin = KafkaAdminClient(bootstrap_servers=b.bootstrap, request_timeout_ms=30000)

    # An idle group: offsets only (committed by the admin client), no members.
    admin.alter_consumer_group_offsets([ConsumerGroupTopicPartitions(
        idle, [TopicPartition(topic, 0, 5), TopicPartition(other, 0, 0)])])[idle].result(timeout=60)

    journal = Journal()
    members = [GroupConsumer(f"adm-{n}", b.bootstrap, group, topic, journal) for n in range(2)]
    try:
        for m in members:
            m.start()
        wait_until("two members sharing the partitions", lambda: partitioned(members, partitions) or None, timeout=40)
        wait_until("all records processed and committed",
                   lambda: committed_offsets(b.bootstrap, group, topic, partitions) == ends or None, timeout=30)
        listed = listed_groups(admin)
        assert {group, idle} <= set(listed), sorted(listed)
        assert listed[group].state == ConsumerGroupState.STABLE
        assert listed[idle].state == ConsumerGroupState.EMPTY
        assert not listed[group].is_simple_consumer_group
        stable = listed_groups(admin, states={ConsumerGroupState.STABLE})
        assert group in stable and idle not in stable, sorted(stable)

        desc = describe(admin, group)
        assert desc.state == ConsumerGroupState.STABLE
        assert sorted(m.client_id for m in desc.members) == ["adm-0", "adm-1"]
        assert assigned_partitions(desc) == list(range(partitions)), assigned_partitions(desc)
        assert desc.partition_assignor in ("range", "roundrobin"), desc.partition_assignor
        by_client = {m.client_id: {tp.partition for tp in m.assignment.topic_partitions} for m in desc.members}
        assert by_client == {m.name: set(m.owned()) for m in members}
        assert all(m.member_id and m.group_instance_id is None for m in desc.members)

        # Deleting a group with members fails; deleting an unknown group too.
        assert error_code(admin.delete_consumer_groups([group], request_timeout=30)[group]) == NON_EMPTY_GROUP
        assert error_code(admin.delete_consumer_groups(["adm-nobody"], request_timeout=30)["adm-nobody"]) \
            == GROUP_ID_NOT_FOUND

        # OffsetDelete: refused for a topic the group is subscribed to.
        result = kadmin.delete_group_offsets(group, [KTopicPartition(topic, 0)])
        assert {tp: err.errno for tp, err in result.items()} == {KTopicPartition(topic, 0): GROUP_SUBSCRIBED_TO_TOPIC}

        # OffsetFetch for several groups in one request (v8), an unknown one included.
        fetched = kadmin.list_group_offsets({group: None, idle: None, "adm-nobody": None})
        assert {tp.partition: om.offset for tp, om in fetched[group].items() if tp.topic == topic} == ends
        assert {(tp.topic, tp.partition): om.offset for tp, om in fetched[idle].items()} == {(topic, 0): 5,
                                                                                               (other, 0): 0}
        assert not fetched.get("adm-nobody"), fetched.get("adm-nobody")
    finally:
        stop_all(members)

    wait_until("the group Empty after its members left",
               lambda: describe(admin, group).state == ConsumerGroupState.EMPTY or None, timeout=30)
    desc = describe(admin, group)
    assert desc.members == [], desc.members
    # Offsets stay after the members leave.
    listed = admin.list_consumer_group_offsets([ConsumerGroupTopicPartitions(group)])[group].result(timeout=60)
    assert {tp.partition: tp.offset for tp in listed.topic_partitions} == ends

    # OffsetDelete on the empty group removes one partition's offset, keeps the others.
    result = kadmin.delete_group_offsets(group, [KTopicPartition(topic, 0)])
    assert {tp: err.errno for tp, err in result.items()} == {KTopicPartition(topic, 0): 0}
    assert committed_offsets(b.bootstrap, group, topic, partitions) == {**ends, 0: NO_OFFSET}

    # DeleteGroups of the empty group: gone from the list, its offsets gone.
    assert error_code(admin.delete_consumer_groups([group], request_timeout=30)[group]) == 0
    assert group not in listed_groups(admin)
    assert committed_offsets(b.bootstrap, group, topic, partitions) == {p: NO_OFFSET for p in range(partitions)}
    try:
        state = describe(admin, group).state
    except KafkaException as e:
        assert e.args[0].code() == GROUP_ID_NOT_FOUND, e
    else:
        assert state == ConsumerGroupState.DEAD, state
    assert error_code(admin.delete_consumer_groups([group], request_timeout=30)[group]) == GROUP_ID_NOT_FOUND
    # The idle group is untouched.
    assert committed_offsets(b.bootstrap, idle, topic, partitions)[0] == 5
    kadmin.close()


# ---------------------------------------------------------------------------------------
# 6. Static membership
# ---------------------------------------------------------------------------------------


def test_static_member_restart_keeps_its_partitions_without_a_rebalance(broker):
    b = broker(env=ENV)
    topic, group, partitions = "static", "statics", 6
    everything = set(range(partitions))
    create_topic(b.bootstrap, topic, partitions)
    produce_ids(b.bootstrap, topic, range(600), partitions)
    admin = confluent_admin(b.bootstrap)
    config = {"session.timeout.ms": 10000, "partition.assignment.strategy": "range"}
    dynamic = GroupConsumer("dynamic-b", b.bootstrap, group, topic, **config)
    consumers = [dynamic]
    try:
        dynamic.start()
        wait_until("b owning every partition", lambda: dynamic.owned() == everything or None, timeout=30)
        first = GroupConsumer("static-a-1", b.bootstrap, group, topic, **{**config, "group.instance.id": "static-a"})
        consumers.append(first)
        first.start()
        wait_until("a and b sharing the partitions", lambda: partitioned([first, dynamic], partitions) or None,
                   timeout=30)
        wait_until("a Stable group of two", lambda: (lambda d: d.state == ConsumerGroupState.STABLE
                                                    and len(d.members) == 2)(describe(admin, group)) or None,
                   timeout=30)
        before = {m.group_instance_id: m for m in describe(admin, group).members}
        assert set(before) == {"static-a", None}, before
        a_partitions, b_partitions = first.owned(), dynamic.owned()
        b_events = len(dynamic.event_log())

        # A static member's close sends no LeaveGroup: the group keeps it.
        first.stop()
        desc = describe(admin, group)
        assert desc.state == ConsumerGroupState.STABLE and len(desc.members) == 2, (desc.state, desc.members)

        second = GroupConsumer("static-a-2", b.bootstrap, group, topic, **{**config, "group.instance.id": "static-a"})
        consumers.append(second)
        second.start()
        wait_until("the restarted static member assigned", lambda: second.owned() or None, timeout=30)
        assert second.owned() == a_partitions, f"a had {sorted(a_partitions)}, got {sorted(second.owned())} back"
        # b heartbeats every 500 ms: a rebalance would have reached it within this window.
        time.sleep(2)
        assert dynamic.event_log()[b_events:] == [], f"b was rebalanced: {dynamic.event_log()[b_events:]}"
        assert dynamic.owned() == b_partitions
        after = {m.group_instance_id: m for m in describe(admin, group).members}
        assert set(after) == {"static-a", None}, after
        assert after[None].member_id == before[None].member_id
        assert after["static-a"].member_id != before["static-a"].member_id, "the static member kept its member id"
        assert {tp.partition for tp in after["static-a"].assignment.topic_partitions} == a_partitions

        # Gone for good (no LeaveGroup again): its session expires, then b takes over.
        gone_at = time.monotonic()
        second.stop()
        wait_until("b owning every partition after a's session timed out",
                   lambda: dynamic.owned() == everything or None, timeout=40)
        waited = time.monotonic() - gone_at
        assert waited > 5, f"b took over {waited:.1f}s after a closed: before a's 10 s session timeout"
    except BaseException:
        print("consumers:", describe_consumers(consumers))
        raise
    finally:
        stop_all(consumers)


# ---------------------------------------------------------------------------------------
# 7. cooperative-sticky
# ---------------------------------------------------------------------------------------


def test_cooperative_sticky_moves_only_the_partitions_that_change_owner(broker):
    b = broker(env=ENV)
    topic, group, partitions = "coop", "cooperators", 6
    everything = set(range(partitions))
    create_topic(b.bootstrap, topic, partitions)
    produce_ids(b.bootstrap, topic, range(3000), partitions)
    journal = Journal()
    config = {"partition.assignment.strategy": "cooperative-sticky"}
    one = GroupConsumer("coop-1", b.bootstrap, group, topic, journal, **config)
    two = GroupConsumer("coop-2", b.bootstrap, group, topic, journal, **config)
    consumers = [one, two]
    try:
        one.start()
        wait_until("coop-1 owning every partition", lambda: one.owned() == everything or None, timeout=30)
        one_events = len(one.event_log())

        two.start()
        wait_until("coop-1 and coop-2 sharing the partitions", lambda: partitioned(consumers, partitions) or None,
                   timeout=40)
        revoked = {p for kind, ps in one.event_log()[one_events:] if kind == "revoke" for p in ps}
        assert revoked == set(two.owned()), (
            f"coop-1 revoked {sorted(revoked)}, coop-2 got {sorted(two.owned())}: "
            f"an eager rebalance revokes everything; events {one.event_log()}")
        assert not [e for e in one.event_log()[one_events:] if e[0] == "lost"]

        produce_ids(b.bootstrap, topic, range(3000, 6000), partitions)
        wait_until("coop-2 processing records", lambda: two.processed() > 0, timeout=30)
        one_events = len(one.event_log())
        two.stop()
        wait_until("coop-1 owning every partition after coop-2 left", lambda: one.owned() == everything or None,
                   timeout=30)
        kinds = [kind for kind, _ in one.event_log()[one_events:]]
        assert "revoke" not in kinds and "lost" not in kinds, f"coop-1 lost partitions: {one.event_log()}"

        produce_ids(b.bootstrap, topic, range(6000, 9000), partitions)
        wait_until("every record processed", lambda: len(journal.ids()) == 9000, timeout=30)
        ends = end_offsets(b.bootstrap, topic, partitions)
        wait_until("committed offsets at the end",
                   lambda: committed_offsets(b.bootstrap, group, topic, partitions) == ends or None, timeout=30)
    except BaseException:
        print("consumers:", describe_consumers(consumers))
        raise
    finally:
        stop_all(consumers)
    assert journal.ids() == set(range(9000))


# ---------------------------------------------------------------------------------------
# 8. Errors on the wire
# ---------------------------------------------------------------------------------------


class Wire:
    """One connection speaking the Kafka protocol, encoded and decoded with kafka-python's
    message classes (built from Kafka's JSON message definitions)."""

    RESPONSES = {
        FindCoordinatorRequest: FindCoordinatorResponse,
        JoinGroupRequest: JoinGroupResponse,
        SyncGroupRequest: SyncGroupResponse,
        HeartbeatRequest: HeartbeatResponse,
        LeaveGroupRequest: LeaveGroupResponse,
        OffsetCommitRequest: OffsetCommitResponse,
        OffsetFetchRequest: OffsetFetchResponse,
        OffsetDeleteRequest: OffsetDeleteResponse,
        DescribeGroupsRequest: DescribeGroupsResponse,
        DeleteGroupsRequest: DeleteGroupsResponse,
    }

    def __init__(self, bootstrap: str, client_id: str = "strata-tests"):
        self.sock = connect(bootstrap, timeout=30)
        self.correlation_id = 0
        self.client_id = client_id

    def __enter__(self) -> "Wire":
        return self

    def __exit__(self, *exc) -> None:
        self.sock.close()

    def call(self, request_class, version: int, **fields):
        request = request_class(version=version, **fields)
        self.correlation_id += 1
        request.with_header(correlation_id=self.correlation_id, client_id=self.client_id)
        self.sock.sendall(request.encode(header=True, framed=True))
        try:
            body = recv_frame(self.sock)
        except (socket.timeout, ConnectionError) as e:
            raise AssertionError(f"no response to {request}: {e!r}") from None
        response = self.RESPONSES[request_class].decode(body, version=version, header=True)
        assert response.header.correlation_id == self.correlation_id
        return response


def subscription(*topics: str) -> bytes:
    """ConsumerProtocolSubscription v0: version, topics, null user data."""
    out = struct.pack(">hi", 0, len(topics))
    for t in topics:
        out += struct.pack(">h", len(t)) + t.encode()
    return out + struct.pack(">i", -1)


def assignment_bytes(topic: str, partitions: list[int]) -> bytes:
    """ConsumerProtocolAssignment v0 for one topic."""
    return (struct.pack(">hih", 0, 1, len(topic)) + topic.encode() + struct.pack(">i", len(partitions))
            + b"".join(struct.pack(">i", p) for p in partitions) + struct.pack(">i", -1))


def join(w: Wire, version: int, group: str, member: str, *, session: int = 30000, protocol_type: str = "consumer",
         metadata: bytes = b"", rebalance: int = 30000):
    return w.call(JoinGroupRequest, version, group_id=group, session_timeout_ms=session, rebalance_timeout_ms=rebalance,
                  member_id=member, protocol_type=protocol_type,
                  protocols=[JoinGroupRequest.JoinGroupRequestProtocol(name="range", metadata=metadata)])


def heartbeat(w: Wire, group: str, generation: int, member: str) -> int:
    return w.call(HeartbeatRequest, 3, group_id=group, generation_id=generation, member_id=member).error_code


def offset_commit(w: Wire, group: str, generation: int, member: str, topic: str,
                  offsets: dict[int, tuple[int, str | None]]) -> dict[int, int]:
    T = OffsetCommitRequest.OffsetCommitRequestTopic
    response = w.call(OffsetCommitRequest, 2, group_id=group, generation_id_or_member_epoch=generation,
                      member_id=member, retention_time_ms=-1,
                      topics=[T(name=topic, partitions=[
                          T.OffsetCommitRequestPartition(partition_index=p, committed_offset=o, committed_metadata=m)
                          for p, (o, m) in offsets.items()])])
    assert [t.name for t in response.topics] == [topic], response
    return {p.partition_index: p.error_code for p in response.topics[0].partitions}


def offset_fetch_v1(w: Wire, group: str, topic: str, partitions: list[int]) -> dict[int, tuple[int, str | None, int]]:
    T = OffsetFetchRequest.OffsetFetchRequestTopic
    response = w.call(OffsetFetchRequest, 1, group_id=group, topics=[T(name=topic, partition_indexes=partitions)])
    return {p.partition_index: (p.committed_offset, p.metadata, p.error_code)
            for t in response.topics for p in t.partitions}


def offset_delete(w: Wire, group: str, topic: str, partitions: list[int]) -> tuple[int, dict[int, int]]:
    T = OffsetDeleteRequest.OffsetDeleteRequestTopic
    response = w.call(OffsetDeleteRequest, 0, group_id=group, topics=[T(
        name=topic, partitions=[T.OffsetDeleteRequestPartition(partition_index=p) for p in partitions])])
    return response.error_code, {p.partition_index: p.error_code for t in response.topics for p in t.partitions}


def test_group_protocol_errors_on_the_wire(broker):
    b = broker(env=ENV)
    topic, group = "wire-topic", "wire-group"
    create_topic(b.bootstrap, topic, 2)
    create_topic(b.bootstrap, "wire-other", 1)
    produce_ids(b.bootstrap, topic, range(10), 2)
    host, port = b.bootstrap.rsplit(":", 1)
    sub = subscription(topic)

    with Wire(b.bootstrap) as w:
        r = w.call(FindCoordinatorRequest, 0, key=group)
        assert (r.error_code, r.host, r.port) == (0, host, int(port)), r
        node = r.node_id
        r = w.call(FindCoordinatorRequest, 4, key_type=0, coordinator_keys=[group, "another-group"])
        assert sorted((c.key, c.error_code, c.node_id, c.host, c.port) for c in r.coordinators) == [
            ("another-group", 0, node, host, int(port)), (group, 0, node, host, int(port))], r

        assert join(w, 4, group, "", session=1000, metadata=sub).error_code == INVALID_SESSION_TIMEOUT
        assert described(w, group) == ("Dead", []), "a refused join makes no group"
        assert join(w, 4, "", "", metadata=sub).error_code == INVALID_GROUP_ID

        # KIP-394: from v4 a new member first gets its member id, then joins with it.
        r = join(w, 4, group, "", metadata=sub)
        assert r.error_code == MEMBER_ID_REQUIRED and r.member_id, r
        member = r.member_id
        r = join(w, 4, group, member, metadata=sub)
        assert r.error_code == 0, r
        assert (r.member_id, r.leader, r.protocol_name) == (member, member, "range"), r
        assert [(m.member_id, bytes(m.metadata)) for m in r.members] == [(member, sub)], r.members
        generation = r.generation_id
        assert generation >= 1

        S = SyncGroupRequest.SyncGroupRequestAssignment
        mine = assignment_bytes(topic, [0, 1])
        r = w.call(SyncGroupRequest, 3, group_id=group, generation_id=generation + 1, member_id=member,
                   assignments=[S(member_id=member, assignment=mine)])
        assert r.error_code == ILLEGAL_GENERATION, r
        r = w.call(SyncGroupRequest, 3, group_id=group, generation_id=generation, member_id=member,
                   assignments=[S(member_id=member, assignment=mine)])
        assert r.error_code == 0 and bytes(r.assignment) == mine, r

        # A member of another protocol type cannot join a group that has members.
        assert join(w, 4, group, "", protocol_type="connect", metadata=sub).error_code == INCONSISTENT_GROUP_PROTOCOL

        assert heartbeat(w, group, generation, member) == 0
        assert heartbeat(w, group, generation + 1, member) == ILLEGAL_GENERATION
        assert heartbeat(w, group, generation, "nobody") == UNKNOWN_MEMBER_ID
        assert heartbeat(w, "no-such-group", 1, "nobody") == UNKNOWN_MEMBER_ID

        assert offset_commit(w, group, generation, member, topic, {0: (3, "m0"), 1: (4, None)}) == {0: 0, 1: 0}
        assert offset_commit(w, group, generation - 1, member, topic, {0: (5, None)}) == {0: ILLEGAL_GENERATION}
        assert offset_commit(w, group, generation + 1, member, topic, {0: (5, None)}) == {0: ILLEGAL_GENERATION}
        assert offset_commit(w, group, generation, "nobody", topic, {0: (5, None)}) == {0: UNKNOWN_MEMBER_ID}
        # Without member and generation, commits are only accepted while the group is empty.
        assert offset_commit(w, group, -1, "", topic, {0: (5, None)}) == {0: UNKNOWN_MEMBER_ID}
        assert offset_commit(w, group, generation, member, topic, {0: (5, "x" * 4097)}) == {
            0: OFFSET_METADATA_TOO_LARGE}
        assert offset_commit(w, group, generation, member, "no-such-topic", {0: (5, None)}) == {
            0: UNKNOWN_TOPIC_OR_PARTITION}
        fetched = offset_fetch_v1(w, group, topic, [0, 1])
        assert fetched[0] == (3, "m0", 0), fetched
        assert fetched[1][0] == 4 and fetched[1][1] in ("", None) and fetched[1][2] == 0, fetched

        # OffsetFetch v8: several groups, one unknown, one request.
        G = OffsetFetchRequest.OffsetFetchRequestGroup
        r = w.call(OffsetFetchRequest, 8, groups=[G(group_id=group, topics=None),
                                                  G(group_id="no-such-group", topics=None)], require_stable=False)
        results = {g.group_id: g for g in r.groups}
        assert set(results) == {group, "no-such-group"}, r
        assert results[group].error_code == 0 and results["no-such-group"].error_code == 0, r
        assert {(t.name, p.partition_index): p.committed_offset
                for t in results[group].topics for p in t.partitions} == {(topic, 0): 3, (topic, 1): 4}
        assert [p for t in results["no-such-group"].topics for p in t.partitions if p.committed_offset >= 0] == []

        # OffsetDelete: not while the group's members are subscribed to the topic; the
        # offsets of other topics may go.
        assert offset_delete(w, group, topic, [0]) == (0, {0: GROUP_SUBSCRIBED_TO_TOPIC})
        assert offset_commit(w, group, generation, member, "wire-other", {0: (0, None)}) == {0: 0}
        assert offset_delete(w, group, "wire-other", [0]) == (0, {0: 0})
        assert offset_fetch_v1(w, group, "wire-other", [0])[0][0] == -1

        r = w.call(LeaveGroupRequest, 1, group_id=group, member_id=member)
        assert r.error_code == 0, r
        assert heartbeat(w, group, generation, member) == UNKNOWN_MEMBER_ID
        r = w.call(DescribeGroupsRequest, 0, groups=[group])
        assert [(g.error_code, g.group_id, g.group_state, len(g.members)) for g in r.groups] == [
            (0, group, "Empty", 0)], r

        # Empty now: commits without member/generation are accepted, OffsetDelete works.
        assert offset_commit(w, group, -1, "", topic, {0: (7, None)}) == {0: 0}
        assert offset_delete(w, group, topic, [0]) == (0, {0: 0})
        fetched = offset_fetch_v1(w, group, topic, [0, 1])
        assert (fetched[0][0], fetched[1][0]) == (-1, 4), fetched

        # Static membership (v5+): a new static member joins at once, without
        # MEMBER_ID_REQUIRED; a request with a stale member id for its instance id is fenced;
        # LeaveGroup v3+ removes members by instance id.
        r = w.call(JoinGroupRequest, 5, group_id="wire-static", session_timeout_ms=30000, rebalance_timeout_ms=30000,
                   member_id="", group_instance_id="instance-1", protocol_type="consumer",
                   protocols=[JoinGroupRequest.JoinGroupRequestProtocol(name="range", metadata=sub)])
        assert r.error_code == 0 and r.member_id and r.leader == r.member_id, r
        static_member, static_generation = r.member_id, r.generation_id
        r = w.call(SyncGroupRequest, 3, group_id="wire-static", generation_id=static_generation,
                   member_id=static_member, group_instance_id="instance-1",
                   assignments=[S(member_id=static_member, assignment=mine)])
        assert r.error_code == 0 and bytes(r.assignment) == mine, r
        r = w.call(HeartbeatRequest, 3, group_id="wire-static", generation_id=static_generation,
                   member_id="stale-member", group_instance_id="instance-1")
        assert r.error_code == FENCED_INSTANCE_ID, r
        r = w.call(HeartbeatRequest, 3, group_id="wire-static", generation_id=static_generation,
                   member_id=static_member, group_instance_id="instance-1")
        assert r.error_code == 0, r
        M = LeaveGroupRequest.MemberIdentity
        r = w.call(LeaveGroupRequest, 3, group_id="wire-static", members=[
            M(member_id="", group_instance_id="instance-1"), M(member_id="", group_instance_id="instance-2")])
        assert r.error_code == 0, r
        assert {m.group_instance_id: m.error_code for m in r.members} == {"instance-1": 0,
                                                                           "instance-2": UNKNOWN_MEMBER_ID}, r
        r = w.call(DescribeGroupsRequest, 0, groups=["wire-static"])
        assert [(g.group_state, len(g.members)) for g in r.groups] == [("Empty", 0)], r

        # Before v4 a new member joins at once, without MEMBER_ID_REQUIRED.
        r = join(w, 3, "wire-v3", "", metadata=sub)
        assert r.error_code == 0 and r.member_id and r.leader == r.member_id and r.generation_id >= 1, r

        r = w.call(DeleteGroupsRequest, 1, groups_names=["wire-v3", group, "no-such-group"])
        assert {x.group_id: x.error_code for x in r.results} == {
            "wire-v3": NON_EMPTY_GROUP, group: 0, "no-such-group": GROUP_ID_NOT_FOUND}, r
        fetched = offset_fetch_v1(w, group, topic, [0, 1])
        assert (fetched[0][0], fetched[1][0]) == (-1, -1), fetched


# ---------------------------------------------------------------------------------------
# 9. __consumer_offsets
# ---------------------------------------------------------------------------------------


def test_offsets_topic_is_internal_compacted_and_refuses_produce(broker):
    b = broker(env=ENV)
    topic, group = "plain", "the-one-group"
    create_topic(b.bootstrap, topic, 2)
    produce_ids(b.bootstrap, topic, range(10), 2)
    admin = confluent_admin(b.bootstrap)
    assert OFFSETS_TOPIC not in admin.list_topics(timeout=30).topics, "created before any group was used"

    admin.alter_consumer_group_offsets([ConsumerGroupTopicPartitions(
        group, [TopicPartition(topic, 0, 3), TopicPartition(topic, 1, 4)])])[group].result(timeout=60)
    assert committed_offsets(b.bootstrap, group, topic, 2) == {0: 3, 1: 4}

    listed = admin.list_topics(timeout=30).topics
    assert OFFSETS_TOPIC in listed, sorted(listed)
    assert len(listed[OFFSETS_TOPIC].partitions) == OFFSETS_PARTITIONS
    description = admin.describe_topics(TopicCollection([OFFSETS_TOPIC]))[OFFSETS_TOPIC].result(timeout=60)
    assert description.is_internal is True
    assert admin.describe_topics(TopicCollection([topic]))[topic].result(timeout=60).is_internal is False
    resource = ConfigResource(ResourceType.TOPIC, OFFSETS_TOPIC)
    configs = admin.describe_configs([resource])[resource].result(timeout=60)
    assert configs["cleanup.policy"].value == "compact"

    # The commit is a record in the group's partition: abs(hashCode(group)) % partitions.
    home = java_hash_partition(group, OFFSETS_PARTITIONS)
    highs = {p: watermarks(b.bootstrap, OFFSETS_TOPIC, p)[1] for p in range(OFFSETS_PARTITIONS)}
    assert highs[home] > 0 and all(h == 0 for p, h in highs.items() if p != home), (home, highs)

    # Clients may not write it.
    error, _ = raw_produce(b.bootstrap, OFFSETS_TOPIC, home, record_batch([b"forged"]))
    assert error == INVALID_TOPIC_EXCEPTION
    delivered = []
    producer = Producer({**QUIET, "bootstrap.servers": b.bootstrap, "message.timeout.ms": 15000,
                         "enable.idempotence": False})
    producer.produce(OFFSETS_TOPIC, value=b"forged", partition=home,
                     on_delivery=lambda err, msg: delivered.append(err))
    producer.flush(30)
    assert len(delivered) == 1 and delivered[0] is not None, delivered
    assert delivered[0].code() == KafkaError.TOPIC_EXCEPTION, delivered[0]
    assert watermarks(b.bootstrap, OFFSETS_TOPIC, home)[1] == highs[home]
    # ... nor delete it.
    assert error_code(admin.delete_topics([OFFSETS_TOPIC], operation_timeout=30)[OFFSETS_TOPIC]) != 0
    assert OFFSETS_TOPIC in admin.list_topics(timeout=30).topics
    assert committed_offsets(b.bootstrap, group, topic, 2) == {0: 3, 1: 4}


# ---------------------------------------------------------------------------------------
# 10. Offset retention
# ---------------------------------------------------------------------------------------


def test_offsets_of_empty_groups_expire_and_those_of_an_active_group_stay(broker):
    b = broker(env={**ENV, "STRATA_OFFSETS_RETENTION_MS": "3000",
                    "STRATA_OFFSETS_RETENTION_CHECK_INTERVAL_MS": "200"})
    topic, partitions = "expiring", 2
    create_topic(b.bootstrap, topic, partitions)
    produce_ids(b.bootstrap, topic, range(20), partitions)
    ends = end_offsets(b.bootstrap, topic, partitions)
    admin = confluent_admin(b.bootstrap)

    busy = GroupConsumer("busy", b.bootstrap, "busy", topic)
    try:
        busy.start()
        wait_until("busy committing the end",
                   lambda: committed_offsets(b.bootstrap, "busy", topic, partitions) == ends or None, timeout=30)
        busy_committed_at = time.monotonic()

        # "simple": offsets without members; "left": a member that committed and left.
        admin.alter_consumer_group_offsets([ConsumerGroupTopicPartitions(
            "simple", [TopicPartition(topic, 0, 1)])])["simple"].result(timeout=60)
        left = GroupConsumer("left", b.bootstrap, "left", topic)
        left.start()
        wait_until("left committing the end",
                   lambda: committed_offsets(b.bootstrap, "left", topic, partitions) == ends or None, timeout=30)
        left.stop()
        assert describe(admin, "left").state == ConsumerGroupState.EMPTY

        for group in ("simple", "left"):
            wait_until(f"the offsets of {group} expiring",
                       lambda: all(o == NO_OFFSET for o in committed_offsets(b.bootstrap, group, topic,
                                                                             partitions).values()),
                       timeout=30, interval=0.3)
        assert time.monotonic() - busy_committed_at > 3.0, "offsets expired before the retention had passed"
        # The active group's offsets are older than the retention, and stay.
        assert committed_offsets(b.bootstrap, "busy", topic, partitions) == ends
        assert busy.owned() == set(range(partitions))
        # Empty groups without offsets are removed.
        wait_until("simple and left removed",
                   lambda: not {"simple", "left"} & set(listed_groups(admin)), timeout=15)
        assert "busy" in listed_groups(admin)
    finally:
        busy.stop()
    wait_until("the offsets of busy expiring once it is empty",
               lambda: all(o == NO_OFFSET for o in committed_offsets(b.bootstrap, "busy", topic, partitions).values()),
               timeout=30, interval=0.3)


# ---------------------------------------------------------------------------------------
# 11. Edge cases of the classic protocol (as Kafka 4's group coordinator answers them)
# ---------------------------------------------------------------------------------------


def join_static(w: Wire, version: int, group: str, instance: str, member: str = "", *, metadata: bytes = b"",
                rebalance: int = 20000, session: int = 60000):
    # The rebalance timeout is also the deadline of every step of a rebalance (rejoining,
    # syncing): long, so that a loaded machine does not miss it, except where a test waits
    # it out on purpose.
    fields = dict(group_id=group, session_timeout_ms=session, rebalance_timeout_ms=rebalance, member_id=member,
                  group_instance_id=instance, protocol_type="consumer",
                  protocols=[JoinGroupRequest.JoinGroupRequestProtocol(name="range", metadata=metadata)])
    if version >= 8:
        fields["reason"] = None
    return w.call(JoinGroupRequest, version, **fields)


def sync(w: Wire, group: str, generation: int, member: str, assignments: dict[str, bytes],
         instance: str | None = None):
    S = SyncGroupRequest.SyncGroupRequestAssignment
    return w.call(SyncGroupRequest, 3, group_id=group, generation_id=generation, member_id=member,
                  group_instance_id=instance,
                  assignments=[S(member_id=m, assignment=a) for m, a in assignments.items()])


def described(w: Wire, group: str) -> tuple[str, list[str]]:
    r = w.call(DescribeGroupsRequest, 0, groups=[group])
    (g,) = r.groups
    return g.group_state, sorted(m.member_id for m in g.members)


def test_a_static_member_that_misses_a_join_phase_keeps_its_place(broker):
    b = broker(env=ENV)
    topic, group = "static-slow", "static-slow-group"
    create_topic(b.bootstrap, topic, 2)
    sub = subscription(topic)
    # The join phase below waits this out; the same time is then left for a to rejoin and
    # both to sync (three quick requests) before the sync phase gives up on them.
    rebalance = 5000
    with Wire(b.bootstrap) as a, Wire(b.bootstrap) as other:
        r = join_static(a, 5, group, "i-a", metadata=sub, rebalance=rebalance)
        assert r.error_code == 0 and r.leader == r.member_id, r
        a_id, generation = r.member_id, r.generation_id
        r = sync(a, group, generation, a_id, {a_id: assignment_bytes(topic, [0, 1])}, "i-a")
        assert r.error_code == 0, r

        # A dynamic member joins; a, restarting slowly, does not rejoin within the 5 s
        # rebalance timeout. The join phase ends without it but keeps it: the leadership
        # moves to the member that joined, which assigns to both.
        r = join(other, 4, group, "", metadata=sub, rebalance=rebalance)
        assert r.error_code == MEMBER_ID_REQUIRED, r
        r = join(other, 4, group, r.member_id, metadata=sub, rebalance=rebalance)
        assert r.error_code == 0, r
        b_id = r.member_id
        assert r.generation_id == generation + 1 and r.leader == b_id, r
        assert sorted(m.member_id for m in r.members) == sorted([a_id, b_id]), r.members
        assert described(other, group) == ("CompletingRebalance", sorted([a_id, b_id]))

        # a comes back with its member id: it gets the new generation without another rebalance.
        r = join_static(a, 5, group, "i-a", a_id, metadata=sub, rebalance=rebalance)
        assert (r.error_code, r.generation_id, r.leader, r.member_id) == (0, generation + 1, b_id, a_id), r
        r = sync(other, group, generation + 1, b_id, {a_id: assignment_bytes(topic, [0]),
                                                     b_id: assignment_bytes(topic, [1])})
        assert r.error_code == 0 and bytes(r.assignment) == assignment_bytes(topic, [1]), r
        r = sync(a, group, generation + 1, a_id, {}, "i-a")
        assert r.error_code == 0 and bytes(r.assignment) == assignment_bytes(topic, [0]), r
        assert described(a, group) == ("Stable", sorted([a_id, b_id]))


def test_commits_with_generation_minus_one_and_member_ids(broker):
    b = broker(env=ENV)
    topic, group = "gen-commits", "gen-commits-group"
    create_topic(b.bootstrap, topic, 1)
    sub = subscription(topic)
    T = OffsetCommitRequest.OffsetCommitRequestTopic
    with Wire(b.bootstrap) as w:
        # A member's commit to a group that does not exist: refused, and no group is made.
        assert offset_commit(w, "gen-nowhere", 3, "someone", topic, {0: (1, None)}) == {0: ILLEGAL_GENERATION}
        r = w.call(OffsetCommitRequest, 9, group_id="gen-nowhere", generation_id_or_member_epoch=3,
                   member_id="someone", group_instance_id=None, topics=[T(name=topic, partitions=[
                       T.OffsetCommitRequestPartition(partition_index=0, committed_offset=1, committed_leader_epoch=-1,
                                                      committed_metadata=None)])])
        assert [p.error_code for t in r.topics for p in t.partitions] == [GROUP_ID_NOT_FOUND], r
        # Nor does a JoinGroup with a member id (a member of a deleted or expired group).
        assert join(w, 4, "gen-nowhere", "old-member", metadata=sub).error_code == UNKNOWN_MEMBER_ID
        assert described(w, "gen-nowhere") == ("Dead", [])

        # An empty group takes generation -1 commits, whatever member id they carry.
        assert offset_commit(w, group, -1, "", topic, {0: (1, None)}) == {0: 0}
        assert offset_commit(w, group, -1, "a-member-that-left", topic, {0: (2, None)}) == {0: 0}
        assert offset_fetch_v1(w, group, topic, [0])[0][0] == 2

        r = join(w, 4, group, "", metadata=sub)
        r = join(w, 4, group, r.member_id, metadata=sub)
        assert r.error_code == 0, r
        member, generation = r.member_id, r.generation_id
        assert offset_commit(w, group, generation, member, topic, {0: (3, None)}) == {0: REBALANCE_IN_PROGRESS}
        assert sync(w, group, generation, member, {member: assignment_bytes(topic, [0])}).error_code == 0

        # With members: generation -1 is a member's commit of no generation.
        assert offset_commit(w, group, -1, member, topic, {0: (4, None)}) == {0: ILLEGAL_GENERATION}
        assert offset_commit(w, group, -1, "nobody", topic, {0: (4, None)}) == {0: UNKNOWN_MEMBER_ID}
        assert offset_commit(w, group, -1, "", topic, {0: (4, None)}) == {0: UNKNOWN_MEMBER_ID}
        assert offset_commit(w, group, generation, member, topic, {0: (5, None)}) == {0: 0}
        # An instance id the group does not know (OffsetCommit v7+) is an unknown member.
        r = w.call(OffsetCommitRequest, 7, group_id=group, generation_id_or_member_epoch=generation,
                   member_id=member, group_instance_id="i-unknown", topics=[T(name=topic, partitions=[
                       T.OffsetCommitRequestPartition(partition_index=0, committed_offset=6, committed_leader_epoch=-1,
                                                      committed_metadata=None)])])
        assert [p.error_code for t in r.topics for p in t.partitions] == [UNKNOWN_MEMBER_ID], r
        assert offset_fetch_v1(w, group, topic, [0])[0][0] == 5


def test_offset_delete_on_an_active_group(broker):
    b = broker(env=ENV)
    topic, other_topic = "odel", "odel-other"
    create_topic(b.bootstrap, topic, 1)
    create_topic(b.bootstrap, other_topic, 1)
    with Wire(b.bootstrap) as w:
        # A consumer group whose subscription the coordinator cannot read: every topic
        # counts as subscribed, nothing is deleted.
        group = "odel-unreadable"
        r = join(w, 4, group, "", metadata=b"\x00\x00\xff")
        r = join(w, 4, group, r.member_id, metadata=b"\x00\x00\xff")
        assert r.error_code == 0, r
        member, generation = r.member_id, r.generation_id
        assert sync(w, group, generation, member, {member: b""}).error_code == 0
        assert offset_commit(w, group, generation, member, other_topic, {0: (7, None)}) == {0: 0}
        assert offset_delete(w, group, other_topic, [0]) == (0, {0: GROUP_SUBSCRIBED_TO_TOPIC})
        assert offset_fetch_v1(w, group, other_topic, [0])[0][0] == 7

        # Another protocol type (Kafka Connect's, ...) with members: the whole request is
        # refused with NON_EMPTY_GROUP.
        group = "odel-connect"
        r = join(w, 4, group, "", protocol_type="connect", metadata=b"worker")
        r = join(w, 4, group, r.member_id, protocol_type="connect", metadata=b"worker")
        assert r.error_code == 0, r
        member, generation = r.member_id, r.generation_id
        assert sync(w, group, generation, member, {member: b""}).error_code == 0
        assert offset_commit(w, group, generation, member, topic, {0: (8, None)}) == {0: 0}
        assert offset_delete(w, group, topic, [0]) == (NON_EMPTY_GROUP, {})
        assert offset_fetch_v1(w, group, topic, [0])[0][0] == 8
        # Once empty, its offsets may go.
        assert w.call(LeaveGroupRequest, 1, group_id=group, member_id=member).error_code == 0
        assert offset_delete(w, group, topic, [0]) == (0, {0: 0})
        assert offset_fetch_v1(w, group, topic, [0])[0][0] == -1


INVALID_REQUEST = 42


def test_long_group_instance_and_client_ids(broker):
    b = broker(env=ENV)
    topic = "long-ids"
    create_topic(b.bootstrap, topic, 1)
    longest = "é" * 16383 + "g"  # 32767 bytes: the most a group record holds
    too_long = "é" * 20000  # 40000 bytes (only flexible versions can carry it)
    T = OffsetCommitRequest.OffsetCommitRequestTopic

    def commit_v8(w: Wire, group: str, offset: int) -> int:
        r = w.call(OffsetCommitRequest, 8, group_id=group, generation_id_or_member_epoch=-1, member_id="",
                   group_instance_id=None, topics=[T(name=topic, partitions=[
                       T.OffsetCommitRequestPartition(partition_index=0, committed_offset=offset,
                                                      committed_leader_epoch=-1, committed_metadata=None)])])
        (code,) = [p.error_code for t in r.topics for p in t.partitions]
        return code

    with Wire(b.bootstrap) as w:
        # Longer than a record can hold: refused, never stored cut (a cut id would be
        # another group's, or not UTF-8 at all).
        assert commit_v8(w, too_long, 9) == INVALID_GROUP_ID
        assert join(w, 6, too_long, "", metadata=subscription(topic)).error_code == INVALID_GROUP_ID
        r = join_static(w, 6, "long-instance", too_long, metadata=subscription(topic))
        assert r.error_code == INVALID_REQUEST, r
        assert described(w, "long-instance") == ("Dead", []), "a refused join makes no group"
        assert commit_v8(w, longest, 5) == 0

    # A client id at the header's limit still makes a member id the group record holds.
    with Wire(b.bootstrap, client_id="c" + "é" * 16383) as w:
        r = join(w, 3, "long-client", "", metadata=subscription(topic))
        assert r.error_code == 0, r
        member, generation = r.member_id, r.generation_id
        assert len(member.encode()) <= 32767 and member.startswith("cé"), len(member.encode())
        assert sync(w, "long-client", generation, member, {member: assignment_bytes(topic, [0])}).error_code == 0

    b.restart()
    with Wire(b.bootstrap) as w:
        assert offset_fetch_v1(w, longest, topic, [0])[0][0] == 5
        assert offset_fetch_v1(w, too_long[:16383], topic, [0])[0][0] == -1
        assert described(w, "long-client") == ("Stable", [member])
        assert heartbeat(w, "long-client", generation, member) == 0


@pytest.mark.parametrize("version", [5, 8, 9])
def test_a_static_leader_restart_keeps_the_assignment_below_and_from_v9(broker, version):
    """A static leader that restarts (new process, empty member id, same instance id) with
    the same subscription gets its place back without a rebalance. From v9 it is told to
    skip the assignment; below v9 there is no such field, and as in Kafka it is answered as
    a follower (no members, its old member id as the leader) so it does not reassign."""
    b = broker(env=ENV)
    topic, group = "static-leader", f"static-leader-v{version}"
    create_topic(b.bootstrap, topic, 2)
    sub = subscription(topic)
    with Wire(b.bootstrap) as a, Wire(b.bootstrap) as other:
        r = join_static(a, version, group, "i-a", metadata=sub)
        assert r.error_code == 0 and r.leader == r.member_id, r
        a_id = r.member_id
        assert sync(a, group, r.generation_id, a_id, {a_id: assignment_bytes(topic, [0, 1])}, "i-a").error_code == 0

        # b joins (its JoinGroup waits for a to rejoin), and a leads generation 2.
        b_joined = {}
        joining = threading.Thread(target=lambda: b_joined.update(r=join_static(other, version, group, "i-b",
                                                                                 metadata=sub)))
        joining.start()
        wait_until("the rebalance b started", lambda: described(a, group)[0] == "PreparingRebalance", timeout=30)
        r = join_static(a, version, group, "i-a", a_id, metadata=sub)
        joining.join(timeout=30)
        assert not joining.is_alive() and b_joined["r"].error_code == 0, b_joined
        b_id, generation = b_joined["r"].member_id, r.generation_id
        assert r.error_code == 0 and r.leader == a_id and len(r.members) == 2, r
        plan = {a_id: assignment_bytes(topic, [0]), b_id: assignment_bytes(topic, [1])}
        assert sync(a, group, generation, a_id, plan, "i-a").error_code == 0
        r = sync(other, group, generation, b_id, {}, "i-b")
        assert r.error_code == 0 and bytes(r.assignment) == plan[b_id], r

    # a restarts: a new connection, no member id, the same instance id and subscription.
    with Wire(b.bootstrap) as a, Wire(b.bootstrap) as other:
        r = join_static(a, version, group, "i-a", metadata=sub)
        assert r.error_code == 0 and r.generation_id == generation, r
        new_id = r.member_id
        assert new_id != a_id
        if version >= 9:
            assert r.skip_assignment and r.leader == new_id, r
            assert sorted(m.member_id for m in r.members) == sorted([new_id, b_id]), r.members
        else:
            assert (r.leader, list(r.members)) == (a_id, []), r
        # Its SyncGroup gets the partitions it had; nobody rebalances.
        r = sync(a, group, generation, new_id, {}, "i-a")
        assert r.error_code == 0 and bytes(r.assignment) == plan[a_id], r
        assert w_heartbeat(other, group, generation, b_id, "i-b") == 0
        assert w_heartbeat(a, group, generation, new_id, "i-a") == 0
        assert w_heartbeat(a, group, generation, a_id, "i-a") == FENCED_INSTANCE_ID
        assert described(a, group) == ("Stable", sorted([new_id, b_id]))


def w_heartbeat(w: Wire, group: str, generation: int, member: str, instance: str) -> int:
    return w.call(HeartbeatRequest, 3, group_id=group, generation_id=generation, member_id=member,
                  group_instance_id=instance).error_code


def test_offset_delete_and_delete_groups_drop_offsets_of_open_transactions(broker):
    """Offsets a transaction holds (TxnOffsetCommit, not yet committed) are deleted with the
    partition's or group's committed offsets, as in Kafka: the transaction's commit does not
    bring them back, neither at once nor when the offsets topic is replayed."""
    b = broker(env={**ENV, "STRATA_TRANSACTION_STATE_PARTITIONS": "5"})
    topic = "txn-held"
    create_topic(b.bootstrap, topic, 2)
    admin = confluent_admin(b.bootstrap)
    producer = Producer({**QUIET, "bootstrap.servers": b.bootstrap, "transactional.id": "txn-held",
                         "transaction.timeout.ms": 30000})
    producer.init_transactions(30)
    consumers = {group: Consumer({**QUIET, "bootstrap.servers": b.bootstrap, "group.id": group,
                                  "enable.auto.commit": False}) for group in ("txn-odel", "txn-del")}
    try:
        producer.begin_transaction()
        for group, consumer in consumers.items():
            producer.send_offsets_to_transaction([TopicPartition(topic, 0, 5), TopicPartition(topic, 1, 6)],
                                                 consumer.consumer_group_metadata(), 30)
        # While the transaction is open: OffsetDelete of one partition, DeleteGroups.
        with Wire(b.bootstrap) as w:
            assert offset_delete(w, "txn-odel", topic, [0]) == (0, {0: 0})
        assert error_code(admin.delete_consumer_groups(["txn-del"])["txn-del"]) == 0
        producer.commit_transaction(30)
    finally:
        for consumer in consumers.values():
            consumer.close()
    want = {"txn-odel": {0: NO_OFFSET, 1: 6}, "txn-del": {0: NO_OFFSET, 1: NO_OFFSET}}
    assert {g: committed_offsets(b.bootstrap, g, topic, 2) for g in want} == want
    b.restart()
    assert {g: committed_offsets(b.bootstrap, g, topic, 2) for g in want} == want
