"""The Kafka APIs operators' tools read (kafka-ui, AKHQ, Cruise Control,
kafka-transactions.sh), through kafka-python's KafkaAdminClient and confluent-kafka's
AdminClient against real brokers: DescribeLogDirs (the one log dir, local sizes measured
on disk), AlterReplicaLogDirs (LOG_DIR_NOT_FOUND for any other dir), DescribeProducers
(idempotent and transactional producers, and the abort of an open transaction with what
it reports), and CreatePartitions with explicit replica assignments on a 3-broker
cluster (Kafka's checks, then the assignment used as given).
"""

from __future__ import annotations

import shutil
import threading
import time

import pytest
from confluent_kafka import KafkaError, Producer
from confluent_kafka.admin import NewPartitions, NewTopic
from kafka import KafkaAdminClient
from kafka import TopicPartition as KTopicPartition
from kafka import TopicPartitionReplica
from kafka.admin import AbortTransactionSpec
from kafka.errors import (
    LogDirNotFoundError,
    NoError,
    NotLeaderForPartitionError,
    ReplicaNotAvailableError,
    UnknownTopicOrPartitionError,
)

from clients import QUIET, create_topic
from replication import Cluster
from servers import wait_until

TXN_ENV = {
    "STRATA_TRANSACTION_STATE_PARTITIONS": "3",
    "STRATA_OFFSETS_TOPIC_PARTITIONS": "3",
}


def bounded(what: str, fn, timeout: float = 60):
    """Runs `fn` in a thread, failing the test if it has not returned within `timeout`
    (kafka-python's admin calls have no overall deadline); re-raises its exception."""
    box: dict = {}

    def run():
        try:
            box["result"] = fn()
        except BaseException as e:  # noqa: BLE001 - handed to the test
            box["error"] = e

    t = threading.Thread(target=run, daemon=True, name=what)
    t.start()
    t.join(timeout)
    if t.is_alive():
        pytest.fail(f"{what} did not return within {timeout} s")
    if "error" in box:
        raise box["error"]
    return box["result"]


def kafka_python_admin(bootstrap: str) -> KafkaAdminClient:
    return bounded("KafkaAdminClient", lambda: KafkaAdminClient(bootstrap_servers=bootstrap,
                                                                request_timeout_ms=30000))


def produce(bootstrap: str, topic: str, counts: dict[int, int], **extra) -> None:
    """`counts[p]` records of 100 bytes into partition p, acks=all, all delivered."""
    producer = Producer({**QUIET, "bootstrap.servers": bootstrap, "acks": "all", "linger.ms": 5, **extra})
    errors = []
    for partition, count in counts.items():
        for i in range(count):
            producer.produce(topic, value=b"%03d" % i + b"x" * 97, partition=partition,
                             on_delivery=lambda err, msg: errors.append(err) if err else None)
    assert producer.flush(30) == 0 and not errors, errors


def on_disk(b, topic: str, partition: int) -> int:
    """Bytes of the partition's segment files, as `du` would count its log."""
    return sum(p.stat().st_size for p in b.partition_dir(topic, partition).glob("*.log"))


def sizes(log_dir: dict) -> dict[tuple[str, int], int]:
    return {(t["name"], p["partition_index"]): p["partition_size"]
            for t in log_dir["topics"] for p in t["partitions"]}


def test_describe_log_dirs_reports_the_data_dir_and_local_sizes(broker, metadata):
    b = broker(metadata=metadata)
    topic = "sized"
    create_topic(b.bootstrap, topic, 3)
    produce(b.bootstrap, topic, {0: 50, 1: 5})
    admin = kafka_python_admin(b.bootstrap)
    try:
        answers = bounded("DescribeLogDirs", admin.describe_log_dirs)
        assert len(answers) == 1, answers
        dirs = answers[0]["log_dirs"]
        assert len(dirs) == 1, f"one log dir per broker: {dirs}"
        d = dirs[0]
        assert d["error_code"] == 0, d
        assert d["log_dir"] == str(b.data_dir), d
        disk = shutil.disk_usage(b.data_dir)
        assert d["total_bytes"] == disk.total, d
        assert 0 < d["usable_bytes"] <= d["total_bytes"], d
        expected = {(topic, p): on_disk(b, topic, p) for p in range(3)}
        assert expected[(topic, 0)] > expected[(topic, 1)] > 0 and expected[(topic, 2)] == 0, expected
        assert sizes(d) == expected
        assert all(p["offset_lag"] == 0 and not p["is_future_key"]
                   for t in d["topics"] for p in t["partitions"]), d

        only = bounded("DescribeLogDirs of one partition",
                       lambda: admin.describe_log_dirs(topic_partitions={topic: [1]}))
        assert sizes(only[0]["log_dirs"][0]) == {(topic, 1): expected[(topic, 1)]}
    finally:
        admin.close()


def test_alter_replica_log_dirs_knows_only_the_data_dir(broker):
    b = broker()
    topic = "pinned"
    create_topic(b.bootstrap, topic, 2)
    admin = kafka_python_admin(b.bootstrap)
    try:
        node = bounded("DescribeLogDirs", admin.describe_log_dirs)[0]["broker"]
        elsewhere = str(b.data_dir.parent / "second-disk")
        result = bounded("AlterReplicaLogDirs", lambda: admin.alter_replica_log_dirs({
            TopicPartitionReplica(topic, 0, node): elsewhere,
            TopicPartitionReplica(topic, 1, node): str(b.data_dir),
            TopicPartitionReplica("no-such-topic", 0, node): str(b.data_dir),
        }))
        assert result == {
            TopicPartitionReplica(topic, 0, node): LogDirNotFoundError,
            TopicPartitionReplica(topic, 1, node): NoError,
            TopicPartitionReplica("no-such-topic", 0, node): UnknownTopicOrPartitionError,
        }
        log = b.log_text()
        assert elsewhere in log and str(b.data_dir) in log, "the log names the dir asked for and the one there is"
    finally:
        admin.close()


def test_describe_producers_shows_open_transactions_and_their_abort(broker, metadata):
    """What `kafka-transactions.sh describe-producers` then `abort` do: the open
    transaction's producer id, epoch and start offset come from DescribeProducers, and an
    abort marker written with them closes it."""
    b = broker(metadata=metadata, env=TXN_ENV)
    topic = "produced"
    create_topic(b.bootstrap, topic, 3)
    produce(b.bootstrap, topic, {1: 3}, **{"enable.idempotence": True})
    produce(b.bootstrap, topic, {0: 2})
    tx = Producer({**QUIET, "bootstrap.servers": b.bootstrap, "transactional.id": "operator-tx",
                   "transaction.timeout.ms": 60000, "linger.ms": 5})
    tx.init_transactions(30)
    tx.begin_transaction()
    before_ms = int(time.time() * 1000)
    tx.produce(topic, value=b"open", partition=0)
    assert tx.flush(30) == 0
    after_ms = int(time.time() * 1000)
    admin = kafka_python_admin(b.bootstrap)
    tps = [KTopicPartition(topic, p) for p in range(3)]
    try:
        described = bounded("DescribeTransactions", lambda: admin.describe_transactions(["operator-tx"]))
        txn = described["operator-tx"]
        state = bounded("DescribeProducers", lambda: admin.describe_producers(tps))
        (open_one,) = state[tps[0]].active_producers
        assert (open_one.producer_id, open_one.producer_epoch) == (txn.producer_id, txn.producer_epoch)
        assert open_one.current_transaction_start_offset == 2, "after the two plain records"
        assert open_one.last_sequence == 0
        # The batch's timestamp (librdkafka stamps CreateTime), no marker yet.
        assert before_ms <= open_one.last_timestamp <= after_ms, open_one
        assert open_one.coordinator_epoch == -1, open_one
        (idempotent,) = state[tps[1]].active_producers
        assert idempotent.last_sequence == 2 and idempotent.current_transaction_start_offset == -1, idempotent
        assert idempotent.producer_id != txn.producer_id
        assert state[tps[2]].active_producers == []

        bounded("abort_transaction", lambda: admin.abort_transaction(AbortTransactionSpec(
            tps[0], open_one.producer_id, open_one.producer_epoch, open_one.coordinator_epoch)))
        (closed,) = bounded("DescribeProducers", lambda: admin.describe_producers([tps[0]]))[tps[0]].active_producers
        assert closed.producer_id == open_one.producer_id and closed.current_transaction_start_offset == -1, closed

        with pytest.raises(UnknownTopicOrPartitionError):
            bounded("DescribeProducers", lambda: admin.describe_producers([KTopicPartition(topic, 7)],
                                                                          broker_id=admin_node(admin)))
        # The producer's own abort: its coordinator writes a marker with its epoch.
        # EndTxn may answer before the markers are written: poll for it.
        tx.abort_transaction(30)

        def coordinated_marker():
            (p,) = bounded("DescribeProducers", lambda: admin.describe_producers([tps[0]]))[tps[0]].active_producers
            return p if p.coordinator_epoch >= 0 else None

        ended = wait_until("the coordinator's abort marker in partition 0", coordinated_marker, 30)
        assert ended.current_transaction_start_offset == -1 and ended.producer_id == txn.producer_id, ended
    finally:
        admin.close()


def admin_node(admin: KafkaAdminClient) -> int:
    return bounded("DescribeLogDirs", admin.describe_log_dirs)[0]["broker"]


def replicas(cluster: Cluster, topic: str, node: int | None = None) -> dict[int, list[int]]:
    return {p: list(meta.replicas) for p, meta in cluster.partitions(topic, node).items()}


def confluent_create_partitions(admin, topic: str, count: int, assignment) -> KafkaError | None:
    futures = admin.create_partitions([NewPartitions(topic, count, replica_assignment=assignment)],
                                      operation_timeout=30)
    try:
        futures[topic].result(timeout=60)
        return None
    except Exception as e:  # noqa: BLE001 - the KafkaException's error is what is checked
        return e.args[0]


def test_create_partitions_checks_and_uses_explicit_assignments(broker, etcd):
    cluster = Cluster(broker, etcd)
    topic = "placed"
    confluent = cluster.admin()  # kept: librdkafka fails the futures of a destroyed client
    confluent.create_topics([NewTopic(topic, 1, 2)], operation_timeout=30)[topic].result(timeout=60)
    wait_until(f"{topic} is known everywhere", lambda: all(
        len(replicas(cluster, topic, n)) == 1 for n in cluster.brokers), 30)

    refused = [
        ([[2, 3]], "Attempted to add 2 additional partition(s), but only 1 assignment(s) were specified."),
        ([[2, 3], [1]], "The manual partition assignment includes a partition with 1 replica(s), but this is "
                        "not consistent with previous partitions, which have 2 replica(s)."),
        ([[2, 3], [1, 9]], "The manual partition assignment includes broker 9, but no such broker is registered."),
        ([[2, 3], [3, 3]], "The manual partition assignment includes the broker 3 more than once."),
    ]
    for assignment, message in refused:
        err = confluent_create_partitions(confluent, topic, 3, assignment)
        assert err is not None and err.code() == KafkaError.INVALID_REPLICA_ASSIGNMENT, (assignment, err)
        assert err.str() == message, (assignment, err)
    assert len(replicas(cluster, topic)) == 1, "a refused request adds nothing"

    assert confluent_create_partitions(confluent, topic, 3, [[2, 3], [3, 1]]) is None
    # kafka-python's form of the same request.
    admin = kafka_python_admin(cluster.bootstrap)
    try:
        response = bounded("CreatePartitions", lambda: admin.create_partitions(
            {topic: {"count": 5, "assignments": [[1, 2]]}}, raise_errors=False))
        assert [r.error_code for r in response.results] == [KafkaError.INVALID_REPLICA_ASSIGNMENT], response
        bounded("CreatePartitions", lambda: admin.create_partitions({topic: {"count": 4, "assignments": [[1, 2]]}}))
    finally:
        admin.close()

    def placed():
        # Every broker's metadata (each refreshes on its own), so that no client is told
        # of fewer partitions later.
        views = [replicas(cluster, topic, n) for n in cluster.brokers]
        return views[0] if all(len(v) == 4 and v == views[0] for v in views) else None

    got = wait_until(f"every broker shows {topic} with 4 partitions", placed, 30)
    assert (got[1], got[2], got[3]) == ([2, 3], [3, 1], [1, 2]), got
    cluster.wait_isr(topic, 2)
    parts = cluster.partitions(topic)
    assert [parts[p].leader for p in (1, 2, 3)] == [2, 3, 1], "the first replica named leads"
    produce(cluster.bootstrap, topic, {1: 5, 2: 5, 3: 5}, **{"enable.idempotence": True})

    # Each broker describes only the replicas it holds; a broker without a replica
    # answers DescribeProducers with NOT_LEADER_OR_FOLLOWER.
    admin = kafka_python_admin(cluster.bootstrap)
    try:
        answers = bounded("DescribeLogDirs", admin.describe_log_dirs)
        held = {a["broker"]: sorted(p for (t, p) in sizes(a["log_dirs"][0]) if t == topic) for a in answers}
        assert held == {n: sorted(p for p, r in got.items() if n in r) for n in (1, 2, 3)}, (held, got)
        assert 1 not in got[1]
        with pytest.raises(NotLeaderForPartitionError):
            bounded("DescribeProducers", lambda: admin.describe_producers([KTopicPartition(topic, 1)], broker_id=1))
        # A follower answers from its own copy of the log, as in Kafka. The ISR may have
        # shrunk under load since the acks=all produce, so its copy may still lack the
        # batch: wait for it rather than read once.
        follower = got[1][1]

        def follower_state():
            state = bounded("DescribeProducers", lambda: admin.describe_producers([KTopicPartition(topic, 1)],
                                                                                  broker_id=follower))
            producers = state[KTopicPartition(topic, 1)].active_producers
            return producers if [p.last_sequence for p in producers] == [4] else None

        (producer,) = wait_until(f"broker {follower}'s copy of {topic}-1 has the producer's 5 records",
                                 follower_state, 30)
        assert producer.last_sequence == 4, producer

        # AlterReplicaLogDirs to a broker's own dir: fine for a replica it holds, Kafka's
        # REPLICA_NOT_AVAILABLE for one it does not.
        one = str(cluster.brokers[1].data_dir)
        result = bounded("AlterReplicaLogDirs", lambda: admin.alter_replica_log_dirs({
            TopicPartitionReplica(topic, 1, 1): one,
            TopicPartitionReplica(topic, 2, 1): one,
        }))
        assert result == {TopicPartitionReplica(topic, 1, 1): ReplicaNotAvailableError,
                          TopicPartitionReplica(topic, 2, 1): NoError}, result
    finally:
        admin.close()
