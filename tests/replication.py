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
    def __init__(self, broker_factory, etcd, *, size: int = 3, env: dict[str, str] | None = None):
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
            args = ["--node-id", str(node), "--rack", f"r{node}"]
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
