"""A cluster of `strata` processes sharing one etcd (and optionally one bucket), and a
Jepsen-style checker of what a producer was told against what the replicas hold.

`Cluster` starts brokers 1..n with racks r1..rn, short session and lag timeouts (so a
failover takes a few seconds), each on its own loopback ports and data dir. Every process
is stopped by PID at teardown (the `broker` fixture's bookkeeping is reused).

`History` records an idempotent acks=all producer's outcomes; `check_history` compares
them with each replica's log (read through the replica itself, KIP-392) and the on-disk
segment bytes, and returns every anomaly it finds, so a test asserts the list is empty
and a unit test can show that each kind of anomaly is caught.
"""

from __future__ import annotations

import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient

from clients import QUIET
from servers import StrataBroker, wait_until

SESSION_TIMEOUT_MS = 3000
LAG_TIME_MS = 4000


class Cluster:
    def __init__(self, broker_factory, etcd, *, size: int = 3, env: dict[str, str] | None = None,
                 racks: dict[int, str] | None = None):
        """Brokers 1..size on `etcd`; broker N in rack `rN` unless `racks` says otherwise."""
        self.etcd = etcd
        self.prefix = f"cluster-{uuid.uuid4().hex[:10]}"
        self.metadata = etcd.url(self.prefix)
        base = {
            "STRATA_BROKER_SESSION_TIMEOUT_MS": str(SESSION_TIMEOUT_MS),
            "STRATA_REPLICA_LAG_TIME_MAX_MS": str(LAG_TIME_MS),
            "STRATA_METADATA_REFRESH_INTERVAL_MS": "250",
            "STRATA_DEFAULT_REPLICATION_FACTOR": "3",
            "STRATA_OFFSETS_TOPIC_REPLICATION_FACTOR": str(size),
            "STRATA_GROUP_INITIAL_REBALANCE_DELAY_MS": "0",
            **(env or {}),
        }
        self.brokers: dict[int, StrataBroker] = {}
        for node in range(1, size + 1):
            args = ["--node-id", str(node), "--rack", (racks or {}).get(node, f"r{node}")]
            self.brokers[node] = broker_factory(metadata=self.metadata, env=base, args=args, name=f"node{node}")
        everyone = set(self.brokers)
        wait_until("every broker lists every broker",
                   lambda: all(self.brokers_listed(n) == everyone for n in self.brokers), 30)

    @property
    def bootstrap(self) -> str:
        return ",".join(b.bootstrap for b in self.live())

    def live(self) -> list[StrataBroker]:
        return [b for b in self.brokers.values() if b.is_running()]

    def admin(self, node: int | None = None) -> AdminClient:
        bootstrap = self.brokers[node].bootstrap if node else self.bootstrap
        return AdminClient({**QUIET, "bootstrap.servers": bootstrap})

    def partitions(self, topic: str, node: int | None = None) -> dict[int, object]:
        """Fresh metadata (a new client each time: librdkafka caches)."""
        md = self.admin(node).list_topics(topic=topic, timeout=15)
        return dict(md.topics[topic].partitions)

    def brokers_listed(self, node: int | None = None) -> set[int]:
        return set(self.admin(node).list_topics(timeout=15).brokers)

    def leader(self, topic: str, partition: int) -> int:
        return self.partitions(topic)[partition].leader

    def wait_isr(self, topic: str, size: int, timeout: float = 60) -> None:
        def full():
            parts = self.partitions(topic)
            return all(len(p.isrs) >= size and p.leader >= 0 for p in parts.values())

        wait_until(f"every partition of {topic} has {size} in-sync replicas", full, timeout=timeout)

    def kill(self, node: int) -> None:
        self.brokers[node].kill9()

    def start(self, node: int) -> None:
        self.brokers[node].start()

    def partition_dir(self, node: int, topic: str, partition: int) -> Path:
        return self.brokers[node].partition_dir(topic, partition)

    def log_bytes(self, node: int, topic: str, partition: int) -> bytes:
        """The partition's local segments, concatenated in offset order."""
        files = sorted(self.partition_dir(node, topic, partition).glob("*.log"), key=lambda p: int(p.stem))
        return b"".join(p.read_bytes() for p in files)


def read_replica(cluster: Cluster, node: int, topic: str, partition: int) -> list[tuple[int, str]]:
    """(offset, value) of every record, as served by `node`: a consumer in `node`'s rack
    is sent there by the leader (KIP-392) once it is in sync."""
    consumer = Consumer({
        **QUIET,
        "bootstrap.servers": cluster.bootstrap,
        "group.id": f"read-{uuid.uuid4().hex[:8]}",
        "client.rack": f"r{node}",
        "enable.auto.commit": False,
        "fetch.wait.max.ms": 100,
    })
    consumer.assign([TopicPartition(topic, partition, 0)])
    out: list[tuple[int, str]] = []
    (high,) = wait_until(f"the high watermark of {topic}/{partition}",
                         lambda: _high_watermark(consumer, topic, partition), timeout=60)
    deadline = time.monotonic() + 60
    while (not out or out[-1][0] < high - 1) and time.monotonic() < deadline:
        for m in consumer.consume(1000, timeout=1):
            if not m.error():
                out.append((m.offset(), m.value().decode()))
    consumer.close()
    return out


def _high_watermark(consumer: Consumer, topic: str, partition: int) -> tuple[int] | None:
    try:
        return (consumer.get_watermark_offsets(TopicPartition(topic, partition), timeout=10)[1],)
    except KafkaException:  # a broker that just stopped, or metadata still moving
        return None


@dataclass
class History:
    """What an idempotent acks=all producer was told: value -> (partition, offset) for
    acknowledged records, and values whose delivery failed (indeterminate)."""

    acked: dict[str, tuple[int, int]] = field(default_factory=dict)
    failed: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def record(self, err, msg) -> None:
        value = msg.value().decode()
        with self.lock:
            if err is None:
                self.acked[value] = (msg.partition(), msg.offset())
            else:
                self.failed.append(value)

    def acked_in(self, partition: int) -> dict[str, int]:
        return {v: o for v, (p, o) in self.acked.items() if p == partition}


class Writer(threading.Thread):
    """Writes "<partition>:<seq>" to each partition in turn, seq increasing per partition,
    at a bounded rate, until stopped."""

    def __init__(self, bootstrap: str, topic: str, partitions: int, history: History, rate: int = 1500):
        super().__init__(daemon=True)
        self.producer = Producer({
            **QUIET,
            "bootstrap.servers": bootstrap,
            "acks": "all",
            "enable.idempotence": True,
            "linger.ms": 5,
            "message.timeout.ms": 120000,
        })
        self.topic, self.partitions, self.history, self.rate = topic, partitions, history, rate
        self.halt = threading.Event()
        self.sent = 0

    def run(self) -> None:
        seq = [0] * self.partitions
        while not self.halt.is_set():
            started = time.monotonic()
            for _ in range(max(1, self.rate // 20)):
                p = self.sent % self.partitions
                self.producer.produce(self.topic, value=f"{p}:{seq[p]}".encode(), partition=p,
                                      on_delivery=self.history.record)
                seq[p] += 1
                self.sent += 1
            self.producer.poll(0)
            time.sleep(max(0.0, 0.05 - (time.monotonic() - started)))
        self.producer.flush(120)

    def stop(self) -> None:
        self.halt.set()
        self.join(timeout=180)
        assert not self.is_alive(), "the producer did not finish flushing"


def check_history(history: History, logs: dict[int, dict[int, list[tuple[int, str]]]]) -> list[str]:
    """Anomalies between the history and the replicas' logs: logs[partition][node] is the
    (offset, value) list node holds. Checks, per partition: every acknowledged record is at
    its acknowledged offset on every replica; no value twice; sequence numbers in order;
    offsets dense; all replicas identical."""
    anomalies: list[str] = []
    for partition, replicas in sorted(logs.items()):
        acked = history.acked_in(partition)
        for node, log in sorted(replicas.items()):
            where = f"partition {partition} on node {node}"
            at = {value: offset for offset, value in log}
            lost = [v for v, o in acked.items() if at.get(v) != o]
            if lost:
                anomalies.append(f"{where}: {len(lost)} acknowledged records missing or moved, e.g. "
                                 f"{lost[0]} acked at {acked[lost[0]]}, found at {at.get(lost[0])}")
            values = [v for _, v in log]
            if len(values) != len(set(values)):
                dup = next(v for v in values if values.count(v) > 1)
                anomalies.append(f"{where}: duplicate record {dup}")
            seqs = [int(v.split(":")[1]) for v in values]
            backwards = [(a, b) for a, b in zip(seqs, seqs[1:]) if b <= a]
            if backwards:
                anomalies.append(f"{where}: sequence out of order: {backwards[0][1]} after {backwards[0][0]}")
            offsets = [o for o, _ in log]
            if offsets and offsets != list(range(offsets[0], offsets[0] + len(offsets))):
                anomalies.append(f"{where}: offsets are not dense")
        reference_node = min(replicas)
        for node, log in sorted(replicas.items()):
            if log != replicas[reference_node]:
                anomalies.append(f"partition {partition}: node {node} holds {len(log)} records, "
                                 f"node {reference_node} {len(replicas[reference_node])}; they differ")
    return anomalies


# ---------------------------------------------------------------------------------------
# Transactions: a history of what transactional producers were told, and its checker
# ---------------------------------------------------------------------------------------

import random  # noqa: E402 - appended section
import traceback  # noqa: E402

from confluent_kafka import KafkaError  # noqa: E402

COMMITTED, ABORTED, UNKNOWN = "committed", "aborted", "unknown"


@dataclass
class Txn:
    """One transaction as its producer saw it: (partition, value) in produce order, the
    delivery reports (value -> (partition, offset), or the error), and the outcome:
    committed (commit_transaction returned), aborted (abort_transaction returned), unknown
    (anything else: the producer was replaced, so the coordinator decided), or open
    (never resolved)."""

    id: str
    sent: list[tuple[int, str]] = field(default_factory=list)
    outcome: str = "open"
    commit_attempted: bool = False
    acked: dict[str, tuple[int, int]] = field(default_factory=dict)
    failed: dict[str, str] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    began: float = 0.0
    ended: float = 0.0

    def delivered(self, err, msg) -> None:
        value = msg.value().decode()
        if err is None:
            self.acked[value] = (msg.partition(), msg.offset())
        else:
            self.failed[value] = repr(err)


@dataclass
class TxnHistory:
    """Every transaction of the writers by id (values are "<txn id>-<i>"), and a
    timestamped log of what happened (kills, restarts, client errors) for reports."""

    txns: dict[str, Txn] = field(default_factory=dict)
    events: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    started: float = field(default_factory=time.monotonic)

    def new(self, txn_id: str) -> Txn:
        txn = Txn(txn_id)
        with self.lock:
            assert txn_id not in self.txns, txn_id
            self.txns[txn_id] = txn
        return txn

    def event(self, what: str) -> None:
        with self.lock:
            self.events.append(f"{time.monotonic() - self.started:7.2f}s {what}")

    def count(self, outcome: str) -> int:
        return sum(1 for t in list(self.txns.values()) if t.outcome == outcome)


class TxnWriter(threading.Thread):
    """A transactional producer (acks=all, idempotent) that writes transactions of a few
    records to each of 3-4 random partitions, one in `abort_one_in` aborted on purpose,
    until stopped. Errors are handled as an application must: retriable -> call again;
    abortable -> abort_transaction (the transaction is aborted if that returns); fatal,
    or anything unresolved -> a new producer with the same transactional.id
    (init_transactions fences the old one and ends its transaction: outcome unknown).
    With `crash_one_in`, one transaction in that many is abandoned as if the application
    crashed: a new producer takes over and the old one is left running as a zombie until
    the writer stops. Abandoned while writing, the transaction was never committed, so it
    counts as aborted; abandoned a moment into commit_transaction (which goes on in the
    zombie), it is committed if that call returns, else unknown: the coordinator decided."""

    CALL_TIMEOUT_S = 10
    RESOLVE_S = 25

    def __init__(self, name: str, bootstrap: str, topic: str, partitions: int, transactional_id: str,
                 history: TxnHistory, *, seed: int, txn_timeout_ms: int = 12000, abort_one_in: int = 3,
                 crash_one_in: int = 0):
        super().__init__(daemon=True, name=name)
        self.bootstrap, self.topic, self.partitions = bootstrap, topic, partitions
        self.transactional_id, self.history = transactional_id, history
        self.txn_timeout_ms, self.abort_one_in, self.crash_one_in = txn_timeout_ms, abort_one_in, crash_one_in
        self.zombies: list[Producer] = []
        self.zombie_commits: list[tuple[Txn, threading.Thread, dict]] = []
        self.rng = random.Random(seed)
        self.halt = threading.Event()
        self.producer: Producer | None = None
        self.current: Txn | None = None
        self.phase = "idle"  # writing, committing, aborting: where the current transaction is
        self.producers = 0
        self.failure: str | None = None

    def log(self, what: str) -> None:
        self.history.event(f"{self.name}: {what}")

    def run(self) -> None:
        try:
            self.producer = self.new_producer()
            n = 0
            while not self.halt.is_set():
                self.current = self.history.new(f"{self.name}.{n}")
                n += 1
                self.transaction(self.current)
                self.current = None
            self.close()
        except BaseException:  # noqa: BLE001 - reported by the test
            self.failure = traceback.format_exc()

    def make_producer(self) -> Producer:
        self.producers += 1
        return Producer({
            **QUIET,
            "bootstrap.servers": self.bootstrap,
            "transactional.id": self.transactional_id,
            "acks": "all",
            "linger.ms": 5,
            "transaction.timeout.ms": self.txn_timeout_ms,
            "reconnect.backoff.ms": 50,
            "reconnect.backoff.max.ms": 500,
        })

    def new_producer(self, ready: Producer | None = None) -> Producer:
        """A producer with init_transactions done (`ready`, made and connected beforehand,
        if given): it fences every earlier producer of the id."""
        deadline = time.monotonic() + 60
        while True:
            producer = ready or self.make_producer()
            ready = None
            while True:
                try:
                    producer.init_transactions(self.CALL_TIMEOUT_S)
                    if self.producers > 1:
                        self.log(f"producer {self.producers} initialized")
                    return producer
                except KafkaException as e:
                    err = e.args[0]
                    self.log(f"init_transactions (producer {self.producers}): {err!r}")
                    if time.monotonic() > deadline:
                        raise AssertionError(f"{self.name}: no transactional producer initialized within 60s: {err!r}")
                    if err.fatal() or not err.retriable():
                        self.dispose(producer)
                        time.sleep(0.2)
                        break
                    time.sleep(0.1)

    def dispose(self, producer: Producer) -> None:
        """Drops a producer that can no longer be used; its transaction is left to the
        coordinator (the next init_transactions ends it)."""
        try:
            producer.purge()
        except Exception as e:  # noqa: BLE001 - a fatal producer may refuse
            self.log(f"purge: {e!r}")
        try:
            producer.close()
        except Exception as e:  # noqa: BLE001
            self.log(f"close: {e!r}")

    def retrying(self, what: str, call) -> None:
        """Calls `call(timeout)` again while it fails with a retriable error, for RESOLVE_S."""
        deadline = time.monotonic() + self.RESOLVE_S
        while True:
            try:
                call(self.CALL_TIMEOUT_S)
                return
            except KafkaException as e:
                err = e.args[0]
                if err.fatal() or err.txn_requires_abort() or not err.retriable() or time.monotonic() > deadline:
                    raise
                self.log(f"{what} (retrying): {err!r}")
                time.sleep(0.05)

    def transaction(self, txn: Txn) -> None:
        parts = self.rng.sample(range(self.partitions), self.rng.randint(3, min(4, self.partitions)))
        commit = self.rng.randrange(self.abort_one_in) != 0
        crash = self.crash_one_in and self.rng.randrange(self.crash_one_in) == 0
        if crash:
            commit = self.rng.random() < 0.75
        producer = self.producer
        txn.began = time.monotonic()
        try:
            if crash:
                self._crash(txn, producer, parts, commit)
            else:
                self._transaction(txn, producer, parts, commit)
        finally:
            txn.ended = time.monotonic()
            self.phase = "idle"

    def _transaction(self, txn: Txn, producer: Producer, parts: list[int], commit: bool) -> None:
        try:
            self.phase = "writing"
            producer.begin_transaction()
            i = 0
            for _ in range(3):
                for p in parts:
                    value = f"{txn.id}-{i}"
                    i += 1
                    txn.sent.append((p, value))
                    producer.produce(self.topic, value=value.encode(), partition=p, on_delivery=txn.delivered)
                producer.poll(0)
                time.sleep(0.02)  # the transaction stays open a while: kills land inside
            producer.flush(self.CALL_TIMEOUT_S)
            self.phase = "committing" if commit else "aborting"
            if commit:
                txn.commit_attempted = True
                self.retrying(f"commit {txn.id}", producer.commit_transaction)
                txn.outcome = COMMITTED
            else:
                self.retrying(f"abort {txn.id}", producer.abort_transaction)
                txn.outcome = ABORTED
        except KafkaException as e:
            err = e.args[0]
            txn.errors.append(repr(err))
            self.log(f"{txn.id} ({'commit' if commit else 'abort'} wanted): {err!r}")
            if err.txn_requires_abort() and not err.fatal():
                self.phase = "aborting"
                try:
                    self.retrying(f"abort {txn.id} after an error", producer.abort_transaction)
                    txn.outcome = ABORTED
                    return
                except KafkaException as e2:
                    txn.errors.append(repr(e2.args[0]))
                    self.log(f"abort {txn.id}: {e2.args[0]!r}")
            txn.outcome = UNKNOWN
            self.dispose(producer)
            self.producer = self.new_producer()

    def _crash(self, txn: Txn, producer: Producer, parts: list[int], commit: bool) -> None:
        """Writes the transaction, then (if `commit`) starts commit_transaction in a thread
        of its own and, a moment later, abandons the producer: a new one (init_transactions)
        races the old one's EndTxn. The old one goes on as a zombie; if its
        commit_transaction returns, the transaction is committed after all (settled when
        the writer stops), else its outcome stays unknown."""
        try:
            self.phase = "writing"
            producer.begin_transaction()
            for i, p in enumerate(parts * 3):
                value = f"{txn.id}-{i}"
                txn.sent.append((p, value))
                producer.produce(self.topic, value=value.encode(), partition=p, on_delivery=txn.delivered)
            producer.poll(0)
            if commit:
                if self.rng.random() < 0.6:
                    producer.flush(self.CALL_TIMEOUT_S)
                # The successor, connected already, so that its InitProducerId is quick.
                successor = self.make_producer()
                try:
                    successor.list_topics(self.topic, timeout=self.CALL_TIMEOUT_S)
                except KafkaException as e:  # a broker down: it connects in init_transactions
                    self.log(f"the successor's metadata: {e.args[0]!r}")
                self.phase = "committing"
                txn.commit_attempted = True
                result: dict = {}

                # Which goes first, the old producer's commit or the new one's
                # init_transactions, and by how much (seconds; negative: the new one).
                lead = self.rng.choice((-1.0, -0.6, -0.3, -0.1, -0.01, 0, 0.001, 0.003, 0.01))

                def zombie_commit() -> None:
                    time.sleep(max(0.0, -lead))
                    result["commit_started"] = time.monotonic()
                    try:
                        producer.commit_transaction(2 * self.CALL_TIMEOUT_S)
                        result["ok"] = True
                    except KafkaException as e:
                        result["error"] = e.args[0]
                    result["commit_ended"] = time.monotonic()

                thread = threading.Thread(target=zombie_commit, daemon=True, name=f"{txn.id}-commit")
                thread.start()
                time.sleep(max(0.0, lead))
                self.zombie_commits.append((txn, thread, result))
                txn.outcome = UNKNOWN
                self.log(f"{txn.id}: the application crashes in commit_transaction (its successor starts "
                         f"{lead * 1000:+.0f} ms after the commit)")
                self.zombies.append(producer)
                result["init_started"] = time.monotonic()
                self.producer = self.new_producer(successor)
                result["init_ended"] = time.monotonic()
                return
        except KafkaException as e:
            txn.errors.append(repr(e.args[0]))
        self.log(f"{txn.id}: the application crashes while writing"
                 f"{'; ' + txn.errors[-1] if txn.errors else ''}")
        # Never committed: the successor's init_transactions aborts it, and the zombie's
        # late writes are fenced, so none of it may ever be visible.
        txn.outcome = ABORTED
        self.zombies.append(producer)
        self.producer = self.new_producer()

    def settle_zombies(self) -> None:
        """Waits for the abandoned commits: one that returned is a committed transaction."""
        for txn, thread, result in self.zombie_commits:
            thread.join(3 * self.CALL_TIMEOUT_S)
            if result.get("ok"):
                txn.outcome = COMMITTED
            else:
                txn.errors.append(repr(result.get("error", "commit_transaction still running")))
            t0 = result.get("commit_started", 0)
            timing = ", ".join(f"{k} {1000 * (v - t0):+.1f} ms" for k, v in result.items() if k.endswith(("ed",)))
            self.log(f"{txn.id}: the zombie's commit_transaction "
                     f"{'returned: committed' if result.get('ok') else 'failed: ' + txn.errors[-1]} ({timing})")

    def close(self) -> None:
        if self.producer is not None:
            self.producer.close()
            self.producer = None
        self.settle_zombies()
        # The zombies: fenced by now; closing one must not hold the writer for long.
        def close(zombie: Producer) -> None:
            try:
                zombie.close()
            except KafkaException:  # fenced: expected
                pass

        closers = [threading.Thread(target=close, args=(z,), daemon=True) for z in self.zombies]
        for c in closers:
            c.start()
        for c in closers:
            c.join(15)
        if any(c.is_alive() for c in closers):
            self.log("a zombie producer did not close within 15s")

    def stop(self, timeout: float = 90) -> None:
        self.halt.set()
        self.join(timeout)
        assert not self.is_alive(), (f"{self.name} did not finish its last transaction within {timeout}s; "
                                     f"events: {self.history.events[-10:]}")


def read_partitions(bootstrap: str, topic: str, ends: dict[int, int], isolation: str, *,
                    timeout: float = 30, rack: str | None = None
                    ) -> tuple[dict[int, list[tuple[int, str]]], dict[int, int | None]]:
    """Reads every partition in `ends` from offset 0 until the consumer reports the end
    of the partition at or past ends[p], or `timeout`. Returns (offset, value) per
    partition and the position of the last end-of-partition seen (None: never)."""
    config = {
        **QUIET,
        "bootstrap.servers": bootstrap,
        "group.id": f"read-{uuid.uuid4().hex[:8]}",
        "enable.auto.commit": False,
        "enable.auto.offset.store": False,
        "auto.offset.reset": "error",
        "isolation.level": isolation,
        "enable.partition.eof": True,
        "fetch.wait.max.ms": 100,
        "check.crcs": True,
    }
    if rack:
        config["client.rack"] = rack
    consumer = Consumer(config)
    consumer.assign([TopicPartition(topic, p, 0) for p in ends])
    got: dict[int, list[tuple[int, str]]] = {p: [] for p in ends}
    reached: dict[int, int | None] = {p: None for p in ends}
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline and not all(
                reached[p] is not None and reached[p] >= end for p, end in ends.items()):
            for m in consumer.consume(1000, 0.2):
                err = m.error()
                if err is None:
                    got[m.partition()].append((m.offset(), m.value().decode()))
                elif err.code() == KafkaError._PARTITION_EOF:
                    reached[m.partition()] = m.offset()
    finally:
        consumer.close()
    return got, reached


def check_transactions(history: TxnHistory, committed_reads: dict[int, list[tuple[int, str]]],
                       uncommitted_reads: dict[int, list[tuple[int, str]]] | None = None,
                       ends: dict[int, tuple[int | None, int]] | None = None) -> list[str]:
    """Anomalies between what transactional producers were told and what read_committed
    (and read_uncommitted) consumers read, as (offset, value) per partition:

    - lost: a committed transaction's record is not visible to read_committed;
    - aborted visible: an aborted transaction's record is;
    - torn: a transaction of unknown outcome is partly visible (all or nothing);
    - phantom (never sent), duplicate, wrong partition, moved (not at the offset its
      delivery report gave), reordered (a transaction's records in one partition out of
      produce order), offsets not increasing;
    - with `uncommitted_reads`: an acknowledged record (any outcome) missing from the log
      or moved, a duplicate in the log, a read_committed record not in the log there;
    - with `ends` (partition -> (offset the read_committed consumer reached, high
      watermark)): stuck, when it never reached the high watermark."""
    anomalies: list[str] = []
    txns = history.txns
    sent_at = {v: p for t in txns.values() for p, v in t.sent}
    where: dict[str, list[tuple[int, int]]] = {}
    for p, recs in sorted(committed_reads.items()):
        offsets = [o for o, _ in recs]
        if offsets != sorted(set(offsets)):
            anomalies.append(f"read_committed partition {p}: offsets not increasing")
        for o, v in recs:
            where.setdefault(v, []).append((p, o))
    for v, places in sorted(where.items()):
        if v not in sent_at:
            anomalies.append(f"phantom: read_committed {v} at partition/offset {places[0]} was never sent")
        if len(places) > 1:
            anomalies.append(f"duplicate: read_committed {v} {len(places)} times, at {places}")
    for t in txns.values():
        if not t.sent:
            continue
        seen = [(p, v) for p, v in t.sent if v in where]
        missing = [(p, v) for p, v in t.sent if v not in where]
        note = (f" [delivered {len(t.acked)}, failed {len(t.failed)}, commit attempted: {t.commit_attempted}, "
                f"errors: {t.errors[:3]}]")
        if t.outcome == COMMITTED and missing:
            p, v = missing[0]
            anomalies.append(f"lost: committed transaction {t.id}: {len(missing)} of {len(t.sent)} records not "
                             f"visible to read_committed, e.g. {v} (partition {p}, acked at {t.acked.get(v)})"
                             + note)
        elif t.outcome == ABORTED and seen:
            p, v = seen[0]
            anomalies.append(f"aborted visible: aborted transaction {t.id}: {len(seen)} of {len(t.sent)} records "
                             f"visible to read_committed, e.g. {v} at {where[v][0]}" + note)
        elif t.outcome not in (COMMITTED, ABORTED) and seen and missing:
            anomalies.append(f"torn: transaction {t.id} ({t.outcome}): {len(seen)} of {len(t.sent)} records visible "
                             f"to read_committed, e.g. {seen[0][1]} at {where[seen[0][1]][0]}, not "
                             f"{missing[0][1]} (partition {missing[0][0]})" + note)
        for p, v in seen:
            rp, ro = where[v][0]
            if rp != p:
                anomalies.append(f"wrong partition: {v} sent to partition {p}, read from {rp}")
            elif v in t.acked and t.acked[v] != (rp, ro):
                anomalies.append(f"moved: {v} acknowledged at {t.acked[v]}, read_committed at {(rp, ro)}")
        for p in sorted({p for p, _ in t.sent}):
            offsets = [where[v][0][1] for q, v in t.sent if q == p and v in where]
            if offsets != sorted(offsets):
                anomalies.append(f"reordered: transaction {t.id} in partition {p}: read_committed offsets "
                                 f"{offsets} are not in produce order")
    if uncommitted_reads is not None:
        logged: dict[str, list[tuple[int, int]]] = {}
        for p, recs in sorted(uncommitted_reads.items()):
            for o, v in recs:
                logged.setdefault(v, []).append((p, o))
        for v, places in sorted(logged.items()):
            if len(places) > 1:
                anomalies.append(f"duplicate in the log: read_uncommitted {v} {len(places)} times, at {places}")
        for t in txns.values():
            for v, at in sorted(t.acked.items()):
                if at not in logged.get(v, []):
                    anomalies.append(f"acknowledged record missing from the log: {v} of {t.id} ({t.outcome}) "
                                     f"acked at {at}, read_uncommitted at {logged.get(v)}")
        for v, places in sorted(where.items()):
            if places[0] not in logged.get(v, []):
                anomalies.append(f"read_committed {v} at {places[0]} is not in the log there "
                                 f"(read_uncommitted: {logged.get(v)})")
    for p, (reached, high) in sorted((ends or {}).items()):
        if reached is None or reached < high:
            anomalies.append(f"stuck: read_committed consumer of partition {p} reached offset {reached}, "
                             f"the high watermark is {high}")
    return anomalies
