"""Transactions across a 3-broker cluster (etcd): the coordinator writes markers to
partitions other brokers lead (over the replication channel, WriteTxnMarker), partition
leaders verify a producer's first batch with a coordinator on another broker
(VerifyTransaction), and a transaction survives the loss of its coordinator's broker.

- 20 transactions over 6 partitions led by all three brokers, every other one aborted:
  a read_committed consumer sees exactly the committed records, in order per partition,
  and a read_uncommitted one sees all of them; every replica holds the same markers, so
  a read_committed consumer served by each follower (KIP-392) sees the same.
- The coordinator's broker is killed (-9) between the transaction's writes and its
  commit: the producer finds the new coordinator (the new leader of the id's
  `__transaction_state` partition, which replays it) and commits; the transaction is
  visible whole, exactly once.
"""

from __future__ import annotations

import time
import uuid

from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import NewTopic

from clients import QUIET
from replication import Cluster

PARTITIONS = 6
TXN_PARTITIONS = 3


def java_hash_partition(key: str, partitions: int) -> int:
    """Kafka's `Utils.abs(key.hashCode()) % partitions` (Java's UTF-16 string hash)."""
    h = 0
    data = key.encode("utf-16-be")
    for i in range(0, len(data), 2):
        h = (31 * h + int.from_bytes(data[i:i + 2], "big")) & 0xFFFFFFFF
    if h >= 1 << 31:
        h -= 1 << 32
    h = 0 if h == -(1 << 31) else abs(h)
    return h % partitions


def start_cluster(broker, etcd) -> Cluster:
    cluster = Cluster(broker, etcd, env={
        "STRATA_TRANSACTION_STATE_PARTITIONS": str(TXN_PARTITIONS),
        "STRATA_OFFSETS_TOPIC_PARTITIONS": "3",
    })
    admin = cluster.admin()
    for f in admin.create_topics([NewTopic("txc", PARTITIONS, 3)]).values():
        f.result(30)
    cluster.wait_isr("txc", 3)
    return cluster


def consume_all(bootstrap: str, isolation: str, expected: int, rack: str | None = None,
                timeout: float = 60) -> dict[int, list[bytes]]:
    config = {
        **QUIET,
        "bootstrap.servers": bootstrap,
        "group.id": f"check-{uuid.uuid4().hex[:8]}",
        "enable.auto.commit": False,
        "isolation.level": isolation,
        "fetch.wait.max.ms": 100,
    }
    if rack:
        config["client.rack"] = rack
    consumer = Consumer(config)
    consumer.assign([TopicPartition("txc", p, 0) for p in range(PARTITIONS)])
    got: dict[int, list[bytes]] = {p: [] for p in range(PARTITIONS)}
    deadline = time.monotonic() + timeout
    quiet_since = time.monotonic()
    while time.monotonic() < deadline:
        batch = consumer.consume(500, timeout=0.5)
        for m in batch:
            if not m.error():
                got[m.partition()].append(m.value())
        if batch:
            quiet_since = time.monotonic()
        total = sum(len(v) for v in got.values())
        if total >= expected and time.monotonic() - quiet_since > 2:
            break
    consumer.close()
    return got


def transactional_producer(bootstrap: str, transactional_id: str) -> Producer:
    producer = Producer({
        **QUIET,
        "bootstrap.servers": bootstrap,
        "transactional.id": transactional_id,
        "transaction.timeout.ms": 60000,
    })
    producer.init_transactions(60)
    return producer


def test_markers_and_verification_cross_brokers(broker, etcd):
    cluster = start_cluster(broker, etcd)
    leaders = {cluster.leader("txc", p) for p in range(PARTITIONS)}
    assert len(leaders) >= 2, f"partitions should be led by several brokers: {leaders}"
    producer = transactional_producer(cluster.bootstrap, "cross-brokers")
    committed: dict[int, list[bytes]] = {p: [] for p in range(PARTITIONS)}
    everything: dict[int, list[bytes]] = {p: [] for p in range(PARTITIONS)}
    for txn in range(20):
        producer.begin_transaction()
        for i in range(30):
            partition = i % PARTITIONS
            value = f"t{txn}-r{i}".encode()
            producer.produce("txc", value=value, partition=partition)
            everything[partition].append(value)
            if txn % 2 == 0:
                committed[partition].append(value)
        producer.flush(30)
        if txn % 2 == 0:
            producer.commit_transaction(60)
        else:
            producer.abort_transaction(60)
    total_committed = sum(len(v) for v in committed.values())
    got = consume_all(cluster.bootstrap, "read_committed", total_committed)
    assert got == committed, "read_committed must see exactly the committed records, in order"
    got = consume_all(cluster.bootstrap, "read_uncommitted", sum(len(v) for v in everything.values()))
    assert got == everything
    # Every replica holds the markers: a consumer served by each broker's replicas sees the
    # same committed records (followers serve consumers in their rack once in sync).
    cluster.wait_isr("txc", 3)
    for node in cluster.brokers:
        got = consume_all(cluster.bootstrap, "read_committed", total_committed, rack=f"r{node}")
        assert got == committed, f"replicas on broker {node} disagree on the transactions"


def test_a_transaction_survives_its_coordinators_broker(broker, etcd):
    cluster = start_cluster(broker, etcd)
    transactional_id = "survivor"
    producer = transactional_producer(cluster.bootstrap, transactional_id)
    cluster.wait_isr("__transaction_state", 3)
    # A first transaction, committed normally.
    producer.begin_transaction()
    for i in range(12):
        producer.produce("txc", value=f"before-{i}".encode(), partition=i % PARTITIONS)
    producer.commit_transaction(60)
    # The second one loses its coordinator between its writes and its commit.
    producer.begin_transaction()
    for i in range(12):
        producer.produce("txc", value=f"during-{i}".encode(), partition=i % PARTITIONS)
    producer.flush(30)
    index = java_hash_partition(transactional_id, TXN_PARTITIONS)
    coordinator = cluster.leader("__transaction_state", index)
    assert coordinator in cluster.brokers, f"no coordinator for {transactional_id}: {coordinator}"
    cluster.kill(coordinator)
    producer.commit_transaction(120)
    survivors = [b for n, b in cluster.brokers.items() if n != coordinator]
    bootstrap = ",".join(b.bootstrap for b in survivors)
    got = consume_all(bootstrap, "read_committed", 24)
    values = sorted(v.decode() for vs in got.values() for v in vs)
    expected = sorted([f"before-{i}" for i in range(12)] + [f"during-{i}" for i in range(12)])
    assert values == expected, "the transaction must be visible whole and exactly once"
