"""Partition reassignment (KIP-455) and leader election (KIP-460) on a three-broker etcd
cluster, driven by kafka-python's and confluent-kafka's admin clients, as
kafka-reassign-partitions, kafka-leader-election and Cruise Control drive them.

Reassignments run under an idempotent acks=all producer and are checked Jepsen-style:
every acknowledged record is on every new replica at its acknowledged offset.
"""

from __future__ import annotations

import json
import os
import signal
import time

from confluent_kafka import KafkaException, Producer, TopicPartition
from confluent_kafka import ElectionType
from kafka import KafkaAdminClient
from kafka.admin import NewTopic
from kafka import TopicPartition as KTopicPartition
from kafka.errors import (
    InvalidReplicationAssignmentError,
    NoReassignmentInProgressError,
    UnknownTopicOrPartitionError,
)

from clients import QUIET, confluent_consume
from replication import Cluster, History, Writer, check_history, read_replica
from servers import wait_until
from test_admin_cli import cli, cli_json
from test_replication import make_topic

# No automatic return to the preferred leader: the tests elect it themselves.
NO_REBALANCE = {"STRATA_LEADER_REBALANCE_INTERVAL_MS": "0"}


def part(cluster: Cluster, topic: str, index: int = 0, node: int | None = None):
    """Partition `index` of `topic` as `node` (or any live broker) sees it; None while that
    broker's metadata (refreshed every 250 ms) does not hold it yet."""
    try:
        return cluster.partitions(topic, node).get(index)
    except KeyError:
        return None


def leader(cluster: Cluster, topic: str, node: int | None = None) -> int | None:
    p = part(cluster, topic, 0, node)
    return p.leader if p else None


def kafka_admin(cluster: Cluster) -> KafkaAdminClient:
    return KafkaAdminClient(bootstrap_servers=cluster.bootstrap, request_timeout_ms=30000)


def test_reassignment_moves_replicas_and_leaders_under_load(broker, etcd):
    """Every partition moves to a new replica set that leaves out its current leader
    (partition 0 also grows from two replicas to three) while a producer writes, then
    back to the replicas it had: brokers that held the partition before are added again
    and must copy everything, not only what came after they left. No write fails and
    nothing acknowledged is lost on any replica."""
    cluster = Cluster(broker, etcd, env=NO_REBALANCE)
    topic, partitions = "moved", 3
    make_topic(cluster, topic, partitions, rf=2)
    before = cluster.partitions(topic)
    there: dict[int, list[int]] = {}
    for p, meta in before.items():
        others = [n for n in (1, 2, 3) if n != meta.leader]
        there[p] = others + [meta.leader] if p == 0 else others
    back = {p: list(meta.replicas) for p, meta in before.items()}
    history = History()
    writer = Writer(cluster.bootstrap, topic, partitions, history)
    writer.start()
    admin = kafka_admin(cluster)

    def move(targets: dict[int, list[int]]) -> None:
        time.sleep(2)  # records written before the move, and more during it
        result = admin.alter_partition_reassignments(
            {KTopicPartition(topic, p): target for p, target in targets.items()})
        assert result == {KTopicPartition(topic, p): None for p in targets}, result

        def done():
            ongoing = admin.list_partition_reassignments()
            for tp, state in ongoing.items():
                assert tp.topic == topic, ongoing
                assert state["replicas"][: len(targets[tp.partition])] == targets[tp.partition], state
            # One broker's view: every target replica in sync and leading from the target.
            meta = cluster.partitions(topic)
            return not ongoing and all(meta[p].replicas == t and sorted(meta[p].isrs) == sorted(t)
                                       and meta[p].leader in t for p, t in targets.items())

        wait_until("every reassignment completes", done, 90, interval=0.5)

    move(there)
    move(back)
    time.sleep(2)
    writer.stop()
    assert not history.failed, f"{len(history.failed)} writes failed during the reassignments"
    logs = {p: {n: read_replica(cluster, n, topic, p) for n in t} for p, t in back.items()}
    anomalies = check_history(history, logs)
    assert not anomalies, "\n".join(anomalies)
    admin.close()


def test_reassignment_errors_and_cancel(broker, etcd):
    """Unknown brokers, repeated brokers, unknown partitions and a cancel with nothing to
    cancel are refused with Kafka's errors; a started reassignment is listed with its
    adding and removing replicas, and can be cancelled, returning the replicas. (The
    KIP-860 replication factor check is in broker/tests/authorization.rs: kafka-python
    always allows the change.)"""
    cluster = Cluster(broker, etcd, env=NO_REBALANCE)
    make_topic(cluster, "errs", 1, rf=2, min_insync_replicas=1)
    admin = kafka_admin(cluster)
    tp = KTopicPartition("errs", 0)
    replicas = cluster.partitions("errs")[0].replicas
    assert admin.alter_partition_reassignments({tp: [replicas[0], 9]}) == {tp: InvalidReplicationAssignmentError}
    assert admin.alter_partition_reassignments({tp: [replicas[0], replicas[0]]}) == {
        tp: InvalidReplicationAssignmentError}
    assert admin.alter_partition_reassignments({tp: None}) == {tp: NoReassignmentInProgressError}
    unknown = KTopicPartition("errs", 5)
    assert admin.alter_partition_reassignments({unknown: replicas}) == {unknown: UnknownTopicOrPartitionError}
    missing = KTopicPartition("no-such-topic", 0)
    assert admin.alter_partition_reassignments({missing: replicas}) == {missing: UnknownTopicOrPartitionError}
    assert cluster.partitions("errs")[0].replicas == replicas, "a refused reassignment changes nothing"

    # A broker that is not registered cannot be assigned.
    spare = next(n for n in (1, 2, 3) if n not in replicas)
    cluster.brokers[spare].stop()
    wait_until(f"node {spare} leaves the cluster", lambda: spare not in cluster.brokers_listed(replicas[0]), 30)
    assert admin.alter_partition_reassignments({tp: [spare, replicas[1]]}) == {tp: InvalidReplicationAssignmentError}
    cluster.start(spare)
    wait_until(f"node {spare} rejoins", lambda: spare in cluster.brokers_listed(replicas[0]), 30)

    # Started while the new replica's broker is frozen (still registered: its session
    # outlives the freeze), so it cannot catch up and the move waits; then cancelled.
    frozen = cluster.brokers[spare].proc
    os.kill(frozen.pid, signal.SIGSTOP)
    try:
        assert admin.alter_partition_reassignments({tp: [spare, replicas[1]]}) == {tp: None}
        ongoing = admin.list_partition_reassignments([tp])
        assert ongoing[tp] == {"replicas": [spare, replicas[1], replicas[0]], "adding_replicas": [spare],
                               "removing_replicas": [replicas[0]]}, ongoing
        assert admin.alter_partition_reassignments({tp: None}) == {tp: None}
        assert admin.list_partition_reassignments() == {}
    finally:
        os.kill(frozen.pid, signal.SIGCONT)
    wait_until("the replicas are back",
               lambda: sorted(cluster.partitions("errs", node=replicas[0])[0].replicas) == sorted(replicas), 30)
    admin.close()


def test_elect_leaders_preferred_and_unclean(broker, etcd):
    """Preferred election (confluent-kafka) moves leadership back to the first replica
    once it is in sync again; unclean election (kafka-python) gives a partition whose only
    in-sync replica is down a leader from the out-of-sync replica that is up."""
    cluster = Cluster(broker, etcd, env=NO_REBALANCE)
    make_topic(cluster, "elect", 1, rf=3)
    preferred = wait_until("partition 0 of elect", lambda: part(cluster, "elect"), 30).replicas[0]
    wait_until("the first replica leads", lambda: leader(cluster, "elect") == preferred, 30)
    cluster.kill(preferred)
    wait_until("a new leader", lambda: leader(cluster, "elect") not in (preferred, -1, None), 30)
    cluster.start(preferred)
    cluster.wait_isr("elect", 3)
    assert leader(cluster, "elect") not in (preferred, None)

    admin = cluster.admin()
    partition = TopicPartition("elect", 0)
    results = admin.elect_leaders(ElectionType.PREFERRED, [partition]).result(timeout=30)
    assert results[partition] is None, results
    wait_until("the preferred replica leads", lambda: leader(cluster, "elect") == preferred, 30)
    again = admin.elect_leaders(ElectionType.PREFERRED, [partition]).result(timeout=30)
    assert again[partition].name() == "ELECTION_NOT_NEEDED", again
    # All partitions: those that need no election are left out of the answer.
    assert admin.elect_leaders(ElectionType.PREFERRED, None).result(timeout=30) == {}

    # Unclean: replicas [a, b]; b is stopped and leaves the ISR, then a is killed.
    make_topic(cluster, "unclean", 1, rf=2, min_insync_replicas=1)
    a, b = wait_until("partition 0 of unclean", lambda: part(cluster, "unclean"), 30).replicas
    cluster.brokers[b].stop()
    wait_until(f"node {b} leaves the ISR", lambda: getattr(part(cluster, "unclean", node=a), "isrs", None) == [a], 30)
    cluster.kill(a)
    cluster.start(b)
    wait_until("the partition is leaderless", lambda: leader(cluster, "unclean", node=b) == -1, 30)
    # Metadata lists a departed broker for a few seconds more (a librdkafka workaround);
    # kafka-python's admin may pick it as the node to ask for the controller and fail on
    # the refused connection instead of trying another, so wait until it is gone.
    wait_until(f"node {a} leaves the broker list", lambda: a not in cluster.brokers_listed(node=b), 30)
    # kafka-python sends ElectLeaders to the controller Metadata names, and only there:
    # wait until that is no longer the killed broker either.
    wait_until(f"node {a} is no longer the controller",
               lambda: cluster.admin(b).list_topics(timeout=15).controller_id not in (a, -1), 30)
    kadmin = kafka_admin(cluster)
    response = kadmin.elect_leaders(1, {"unclean": [0]})
    (result,) = response.replica_election_results
    assert [(p.partition_id, p.error_code) for p in result.partition_result] == [(0, 0)], response
    wait_until(f"node {b} leads", lambda: leader(cluster, "unclean", node=b) == b, 30)
    producer = Producer({**QUIET, "bootstrap.servers": cluster.bootstrap, "acks": "all"})
    producer.produce("unclean", b"after", partition=0)
    assert producer.flush(30) == 0
    kadmin.close()


def test_reassignment_apis_answer_on_one_broker(broker):
    """With embedded metadata (one broker), reassigning onto another broker id is refused
    and electing a leader needs no election."""
    b = broker()
    admin = KafkaAdminClient(bootstrap_servers=b.bootstrap, request_timeout_ms=30000)
    admin.create_topics([NewTopic("solo", 1, 1)])
    tp = KTopicPartition("solo", 0)
    wait_until("topic solo", lambda: "solo" in admin.list_topics(), 10)
    assert admin.alter_partition_reassignments({tp: [5]}) == {tp: InvalidReplicationAssignmentError}
    assert admin.alter_partition_reassignments({tp: [0]}) == {tp: None}
    assert admin.list_partition_reassignments() == {}
    response = admin.elect_leaders(0, {"solo": [0]}, raise_errors=False)
    (result,) = response.replica_election_results
    assert [p.error_code for p in result.partition_result] == [84], response  # ELECTION_NOT_NEEDED
    admin.close()


def test_cli_reassign_and_elect_leaders(broker, etcd, tmp_path):
    """`strata reassign start --file` (kafka-reassign-partitions' plan) with `--wait`,
    `strata reassign list` and `cancel`, and `strata elect-leaders`, against a cluster."""
    cluster = Cluster(broker, etcd, env=NO_REBALANCE)
    make_topic(cluster, "cli", 2, rf=1, min_insync_replicas=1)
    producer = Producer({**QUIET, "bootstrap.servers": cluster.bootstrap, "acks": "all"})
    for i in range(200):
        producer.produce("cli", f"v{i}".encode(), partition=i % 2)
    assert producer.flush(30) == 0
    admin = cluster.brokers[1].admin
    before = wait_until("node 1 knows both partitions of cli",
                        lambda: {p: part(cluster, "cli", p, node=1) for p in (0, 1)}
                        if all(part(cluster, "cli", p, node=1) for p in (0, 1)) else None, 30)
    # Each partition grows to two replicas with a new broker first: a new preferred leader.
    plan_targets = {p: [next(n for n in (1, 2, 3) if n != meta.leader), meta.leader] for p, meta in before.items()}
    plan = tmp_path / "plan.json"
    plan.write_text(json.dumps({"version": 1, "partitions": [
        {"topic": "cli", "partition": p, "replicas": t, "log_dirs": ["any", "any"]} for p, t in plan_targets.items()]}))
    refused = cli(admin, "reassign", "start", "--file", str(plan), check=False)
    assert refused.returncode != 0 and "INVALID_REPLICATION_FACTOR" in refused.stdout, refused.stdout + refused.stderr
    started = cli(admin, "reassign", "start", "--file", str(plan), "--allow-replication-factor-change", "--wait")
    assert "done: every partition is on its new replicas" in started.stdout, started.stdout
    assert cli_json(admin, "reassign", "list") == []
    assert "no reassignment in progress" in cli(admin, "reassign", "list").stdout

    def moved():  # one broker's view, up to a refresh behind the store
        meta = cluster.partitions("cli", node=1)
        for p, m in meta.items():
            assert m.leader == before[p].leader, "leadership stays until an election"
        return all(m.replicas == plan_targets[p] and sorted(m.isrs) == sorted(plan_targets[p])
                   for p, m in meta.items())

    wait_until("node 1 sees the new replicas", moved, 30)

    elected = cli_json(admin, "elect-leaders", "--partition", "cli/0", "--partition", "cli/1")
    assert [(r["partition"], r["error"]) for r in elected] == [(0, ""), (1, "")], elected
    wait_until("the new preferred replicas lead",
               lambda: all(m.leader == plan_targets[p][0] for n in (1, 2, 3)
                           for p, m in cluster.partitions("cli", node=n).items()), 30)
    assert "every partition already has the leader" in cli(admin, "elect-leaders", "--all-partitions").stdout
    bare = cli(admin, "elect-leaders", check=False)
    assert bare.returncode == 2 and "--partition" in bare.stderr, bare.stderr
    cancelled = cli(admin, "reassign", "cancel", "--partition", "cli/0", check=False)
    assert cancelled.returncode != 0 and "NO_REASSIGNMENT_IN_PROGRESS" in cancelled.stdout, cancelled.stdout
    # Every record is still there, read from the new leaders.
    def consumed():
        try:
            return confluent_consume(cluster.bootstrap, "cli", 2)
        except KafkaException:  # a client that met a leader it knew before the election
            return None

    got = wait_until("every record read back", consumed, 60)
    assert sorted(g.value for g in got) == sorted(f"v{i}".encode() for i in range(200))
