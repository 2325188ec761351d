"""`strata rebalance` after scaling up: three brokers with data (topics of replication
factor 2 and 3), a fourth joins, and the rebalance gives it a fair share of replicas and
preferred leaderships through throttled reassignments, without losing a record.

The throttle is shown to act twice over: the new broker's follower throttle counts the
bytes it let through and the time it held them back, and the catch-up, bytes copied to
the new broker over the rebalance's duration, stays within twice the limit (unthrottled,
the same copy takes a fraction of that time on loopback).

A producer writes to every partition throughout the rebalance (in sum over the moves in
flight below the throttle, as the docs ask): the moves still join the ISR, which needs
each new replica's fetch offset at the moving high watermark, and every record the
producer had acknowledged is there afterwards.
"""

from __future__ import annotations

import json
import signal
import subprocess
import threading
import time

from confluent_kafka import Producer
from confluent_kafka.admin import ConfigResource, ConfigSource

from clients import QUIET
from replication import LAG_TIME_MS, SESSION_TIMEOUT_MS, Cluster, read_replica
from servers import wait_until
from servers import strata_binary
from test_admin_cli import cli, cli_json
from test_broker_configs import alter_cluster_default, describe_cluster_default, set_broker_configs, value_and_source
from test_reassignment import NO_REBALANCE
from test_replication import make_topic

RATE = 256 * 1024  # bytes/s, per broker and side
RECORDS = 500  # per partition, 1 KiB each
TOPICS = {"triple": (4, 3), "double": (6, 2)}  # name: (partitions, replication factor)
# Records a second while the rebalance runs: about 20 KiB/s a partition, 80 KiB/s over the
# four moves in flight, under RATE (a throttle below the write rate of the partitions
# moving at once never lets them catch up).
PRODUCE_RATE = 200


def fill(cluster: Cluster) -> dict[tuple[str, int], list[str]]:
    """RECORDS values in every partition, acknowledged by all in-sync replicas."""
    producer = Producer({**QUIET, "bootstrap.servers": cluster.bootstrap, "acks": "all",
                         "linger.ms": 5, "enable.idempotence": True})
    written: dict[tuple[str, int], list[str]] = {}
    failures: list[str] = []
    for topic, (partitions, _) in TOPICS.items():
        for p in range(partitions):
            values = [f"{topic}-{p}-{i:05d}-" + "x" * 1000 for i in range(RECORDS)]
            written[(topic, p)] = values
            for v in values:
                producer.produce(topic, v.encode(), partition=p,
                                 on_delivery=lambda err, _msg: err and failures.append(str(err)))
                producer.poll(0)
    assert producer.flush(60) == 0 and not failures, failures[:3]
    return written


class SteadyProducer(threading.Thread):
    """Writes PRODUCE_RATE records of 1 KiB a second, spread over every partition, acks=all,
    until stopped; `delivered` holds what the cluster acknowledged, per partition."""

    def __init__(self, cluster: Cluster):
        super().__init__(daemon=True)
        self.producer = Producer({**QUIET, "bootstrap.servers": cluster.bootstrap, "acks": "all",
                                  "linger.ms": 5, "enable.idempotence": True})
        self.stop = threading.Event()
        self.delivered: dict[tuple[str, int], list[str]] = {}
        self.failures: list[str] = []
        self.unflushed = -1
        self.partitions = [(t, p) for t, (n, _) in TOPICS.items() for p in range(n)]

    def _on_delivery(self, err, msg) -> None:
        if err:
            self.failures.append(str(err))
        else:
            self.delivered.setdefault((msg.topic(), msg.partition()), []).append(msg.value().decode())

    def run(self) -> None:
        sent = 0
        started = time.monotonic()
        while not self.stop.is_set():
            # Pacing, not an assertion: ahead of schedule, wait for the next tick.
            if sent >= PRODUCE_RATE * (time.monotonic() - started):
                self.stop.wait(0.01)
                continue
            topic, p = self.partitions[sent % len(self.partitions)]
            value = f"live-{topic}-{p}-{sent:07d}-" + "y" * 1000
            self.producer.produce(topic, value.encode(), partition=p, on_delivery=self._on_delivery)
            self.producer.poll(0)
            sent += 1
        self.unflushed = self.producer.flush(60)


def placement(cluster: Cluster) -> dict[tuple[str, int], object]:
    return {(t, p): meta for t in TOPICS for p, meta in cluster.partitions(t).items()}


def test_rebalance_after_adding_a_broker_spreads_replicas_and_leaders_throttled(broker, etcd):
    cluster = Cluster(broker, etcd, env=NO_REBALANCE)
    for topic, (partitions, rf) in TOPICS.items():
        make_topic(cluster, topic, partitions, rf=rf)
    written = fill(cluster)

    env = {"STRATA_BROKER_SESSION_TIMEOUT_MS": str(SESSION_TIMEOUT_MS),
           "STRATA_REPLICA_LAG_TIME_MAX_MS": str(LAG_TIME_MS),
           "STRATA_METADATA_REFRESH_INTERVAL_MS": "250", **NO_REBALANCE}
    cluster.brokers[4] = broker(metadata=cluster.metadata, env=env, args=["--node-id", "4", "--rack", "r4"],
                                name="node4")
    wait_until("every broker lists broker 4", lambda: all(4 in cluster.brokers_listed(n) for n in cluster.brokers), 30)
    admin = cluster.brokers[1].admin
    total_replicas = sum(n * rf for n, rf in TOPICS.values())
    total_partitions = sum(n for n, _ in TOPICS.values())

    # The dry run plans broker 4's share and moves nothing.
    plan_file = cluster.brokers[1].workdir / "plan.json"
    planned = cli_json(admin, "rebalance", "--dry-run", "--plan-file", str(plan_file))
    gained = sum(1 for m in planned for r in m["target"] if r == 4)
    assert gained == total_replicas // 4, planned
    assert sum(len(set(m["target"]) - set(m["current"])) for m in planned) == gained, \
        f"only replicas that go to broker 4 are copied: {planned}"
    on_file = json.loads(plan_file.read_text())
    assert [(p["topic"], p["partition"], p["replicas"]) for p in on_file["partitions"]] == \
        [(m["topic"], m["partition"], m["target"]) for m in planned]
    assert all(4 not in meta.replicas for meta in placement(cluster).values()), "a dry run moves nothing"
    assert cluster.brokers[4].metric("strata_replication_throttled_bytes_total", side="follower") in (None, 0)

    # What a moving replica is missing when the rebalance starts: the throttle bounds its copy.
    before = {(t, p): len(cluster.log_bytes(meta.replicas[0], t, p)) for (t, p), meta in placement(cluster).items()}
    live = SteadyProducer(cluster)
    live.start()
    # Rates an operator set: the cluster default, replaced for the run and put back after
    # it, and broker 2's own, which beats the cluster default (the run warns of it).
    names = ("leader.replication.throttled.rate", "follower.replication.throttled.rate")
    operator_rate = str(64 * 1024 * 1024)
    assert alter_cluster_default(cluster.brokers[1].bootstrap, dict.fromkeys(names, operator_rate))[0] == 0
    set_broker_configs(cluster.brokers[2].bootstrap, "2", {names[0]: operator_rate})

    started = time.monotonic()
    try:
        result = cli(admin, "rebalance", "--throttle", str(RATE), "--max-moves", "4", "--timeout-ms", "100000")
    finally:
        elapsed = time.monotonic() - started
        live.stop.set()
        live.join(90)
    assert live.unflushed == 0 and not live.failures, (live.unflushed, live.failures[:3])
    assert sum(map(len, live.delivered.values())) >= PRODUCE_RATE * elapsed / 2, "the producer kept writing"
    assert "partitions done" in result.stdout and "replication throttle cleared" in result.stdout, result.stdout
    assert "done:" in result.stdout, result.stdout
    assert "broker(s) 2 have their own replication throttle rate" in result.stderr, result.stderr

    # A fair share: 24 replicas over four brokers, 10 preferred leaders (2 or 3 each),
    # and the election moved leadership to broker 4 too. Broker 1's view, which learns of
    # the last moves within a metadata refresh.
    def fair_share():
        after = placement(cluster)
        for node in (1, 2, 3, 4):
            held = sum(1 for meta in after.values() if node in meta.replicas)
            preferred = sum(1 for meta in after.values() if meta.replicas[0] == node)
            if held != total_replicas // 4 or preferred not in (total_partitions // 4, total_partitions // 4 + 1):
                return False
        return {t for (t, _), meta in after.items() if 4 in meta.replicas} == set(TOPICS)

    wait_until("a fair share of replicas and preferred leaders on each broker, each topic spread", fair_share, 15)
    after = placement(cluster)
    # Brokers learn of the election within a metadata refresh.
    wait_until("every partition led by its preferred leader, some by broker 4",
               lambda: all(m.leader == m.replicas[0] for m in placement(cluster).values()), 15)
    assert any(meta.leader == 4 for meta in placement(cluster).values())

    # Every replica holds the same bytes, and broker 4 serves every record it took on.
    for topic, (_, rf) in TOPICS.items():
        cluster.wait_isr(topic, rf)
    copied = 0
    for (topic, p), meta in after.items():
        logs = {n: cluster.log_bytes(n, topic, p) for n in meta.replicas}
        assert len(set(logs.values())) == 1 and logs[meta.replicas[0]], f"{topic}/{p} replicas differ"
        # Every acknowledged record, the ones written during the rebalance included.
        expected = written[(topic, p)] + live.delivered.get((topic, p), [])
        for node in {meta.replicas[0], 4} & set(meta.replicas):
            values = [v for _, v in read_replica(cluster, node, topic, p)]
            assert values == expected, f"{topic}/{p} as broker {node} serves it"
        if 4 in meta.replicas:
            copied += before[(topic, p)]

    # The throttle acted: broker 4's follower side counted what it let through and held
    # the catch-up back, and the copy of what it was missing ran at most at twice the
    # limit. (What it copied while at the high watermark, following produce, is not
    # throttled.)
    node4 = cluster.brokers[4]
    assert node4.metric("strata_replication_throttled_bytes_total", side="follower") >= copied * 0.9
    assert node4.metric("strata_replication_throttled_time_ms_total", side="follower") > 0
    assert copied / elapsed <= 2 * RATE, f"{copied} bytes in {elapsed:.1f} s"

    # The throttle is gone again: the operator's cluster-default rates are back.
    assert describe_cluster_default(cluster.brokers[1].bootstrap) == \
        dict.fromkeys(names, (operator_rate, ConfigSource.DYNAMIC_DEFAULT_BROKER_CONFIG.value))
    assert "earlier rates are back" in result.stdout, result.stdout

    # Idempotent: the cluster is balanced now.
    assert cli_json(admin, "rebalance", "--dry-run") == []
    assert "nothing to move" in cli(admin, "rebalance", "--dry-run").stdout


def test_throttle_rates_are_kafka_dynamic_broker_configs(broker):
    """kafka-reassign-partitions --throttle and kafka-configs set the rates as dynamic
    broker configs through IncrementalAlterConfigs: accepted at the cluster default and
    per broker, described with their source, a rate of 0 (which would stop every move)
    refused naming the config, and `strata rebalance --clear-throttle` removes them."""
    b = broker(env={"STRATA_NODE_ID": "1"})
    names = ("leader.replication.throttled.rate", "follower.replication.throttled.rate")
    assert alter_cluster_default(b.bootstrap, dict.fromkeys(names, "1048576"))[0] == 0
    assert describe_cluster_default(b.bootstrap) == dict.fromkeys(names, ("1048576", ConfigSource.DYNAMIC_DEFAULT_BROKER_CONFIG.value))
    set_broker_configs(b.bootstrap, "1", {names[0]: "2097152"})
    assert value_and_source(b.bootstrap, "1", names[0]) == ("2097152", ConfigSource.DYNAMIC_BROKER_CONFIG.value)
    assert value_and_source(b.bootstrap, "1", names[1]) == \
        ("1048576", ConfigSource.DYNAMIC_DEFAULT_BROKER_CONFIG.value)
    code, message = alter_cluster_default(b.bootstrap, {names[1]: "0"})
    assert code == 42 and names[1] in message, (code, message)

    assert "cleared" in cli(b.admin, "rebalance", "--clear-throttle").stdout
    assert describe_cluster_default(b.bootstrap) == {}
    set_broker_configs(b.bootstrap, "1", {names[0]: None})
    assert value_and_source(b.bootstrap, "1", names[0]) == (str(2**63 - 1), ConfigSource.DEFAULT_CONFIG.value)


def test_an_interrupted_rebalance_clears_its_throttle_and_a_rerun_with_nothing_to_move_clears_a_leftover(broker, etcd):
    """Ctrl-C while moves are throttled: the throttle this run set is removed (the moves
    go on, unthrottled, and complete), instead of throttling later catch-ups. A rerun
    with --throttle that finds nothing to move removes a throttle of that rate left by an
    earlier run, and leaves a different rate someone else set."""
    cluster = Cluster(broker, etcd, size=1, env=NO_REBALANCE)
    make_topic(cluster, "slow", 4, rf=1)
    producer = Producer({**QUIET, "bootstrap.servers": cluster.bootstrap, "acks": "1"})
    for p in range(4):
        for i in range(300):
            producer.produce("slow", f"{p}-{i:04d}-".encode() + b"z" * 1000, partition=p)
            producer.poll(0)
    assert producer.flush(60) == 0
    env = {"STRATA_METADATA_REFRESH_INTERVAL_MS": "250", **NO_REBALANCE}
    cluster.brokers[2] = broker(metadata=cluster.metadata, env=env, args=["--node-id", "2", "--rack", "r2"],
                                name="node2")
    wait_until("broker 1 lists broker 2", lambda: 2 in cluster.brokers_listed(1), 30)
    names = ("leader.replication.throttled.rate", "follower.replication.throttled.rate")
    b1 = cluster.brokers[1]

    # 1 KiB/s: the moves would take minutes.
    run = subprocess.Popen([str(strata_binary()), "rebalance", "--throttle", "1024", "--admin", b1.admin],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_until("the throttle set", lambda: describe_cluster_default(b1.bootstrap) != {}, 30)
        wait_until("a move under way", lambda: any(2 in m.replicas for m in cluster.partitions("slow", 1).values()), 30)
        run.send_signal(signal.SIGINT)
        _, stderr = run.communicate(timeout=30)
    finally:
        run.kill()
    assert run.returncode != 0 and "interrupted" in stderr and "replication throttle cleared" in stderr, stderr
    assert describe_cluster_default(b1.bootstrap) == {}
    # The moves submitted complete without the throttle.
    wait_until("the moves submitted complete",
               lambda: cli_json(b1.admin, "reassign", "list") == [], 60)

    # A leftover of the same rate is cleared by a rerun with nothing to move; another rate stays.
    def rerun_leaves(rate: str):
        assert alter_cluster_default(b1.bootstrap, dict.fromkeys(names, rate))[0] == 0
        wait_until("the cluster balanced", lambda: cli_json(b1.admin, "rebalance", "--dry-run") == [], 60)
        cli(b1.admin, "rebalance", "--throttle", "1024", "--no-leader-election")
        return describe_cluster_default(b1.bootstrap)

    assert rerun_leaves("1024") == {}
    assert rerun_leaves("5000") == dict.fromkeys(names, ("5000", ConfigSource.DYNAMIC_DEFAULT_BROKER_CONFIG.value))


def test_a_move_that_caught_up_joins_under_produce_while_another_is_still_throttled(broker, etcd, tmp_path):
    """Two moves share broker 2's follower throttle: `big` has megabytes to copy, `live`
    has nothing but a producer writing to it. Once `live`'s new replica has reached the
    high watermark it is no longer throttled, so it keeps up with produce and joins the
    ISR while `big` is still copying. (Held back with `big` instead, its fetch offset
    would trail the moving high watermark, and it could not join before `big` is done.)"""
    cluster = Cluster(broker, etcd, size=2, env=NO_REBALANCE)
    make_topic(cluster, "big", 1, rf=1, min_insync_replicas=1)
    make_topic(cluster, "live", 1, rf=1, min_insync_replicas=1)
    producer = Producer({**QUIET, "bootstrap.servers": cluster.bootstrap, "acks": "all", "linger.ms": 5})
    for i in range(3000):
        producer.produce("big", f"{i:05d}-".encode() + b"b" * 1000, partition=0)
        producer.poll(0)
    assert producer.flush(60) == 0
    names = ("leader.replication.throttled.rate", "follower.replication.throttled.rate")
    b1 = cluster.brokers[1]
    # 3 MB at 128 KiB/s: about 23 s for `big`.
    assert alter_cluster_default(b1.bootstrap, dict.fromkeys(names, str(128 * 1024)))[0] == 0

    stop = threading.Event()
    delivered: list[str] = []

    def write_live():
        live = Producer({**QUIET, "bootstrap.servers": cluster.bootstrap, "acks": "all"})
        i = 0
        while not stop.wait(0.05):  # pacing, not an assertion
            live.produce("live", f"live-{i:05d}".encode(), partition=0,
                         on_delivery=lambda err, msg: err or delivered.append(msg.value().decode()))
            live.poll(0)
            i += 1
        live.flush(30)

    writer = threading.Thread(target=write_live, daemon=True)
    writer.start()
    try:
        wait_until("the producer writing to live", lambda: len(delivered) >= 5, 30)
        leaders = {t: cluster.partitions(t, 1)[0].leader for t in ("big", "live")}
        plan = tmp_path / "plan.json"
        plan.write_text(json.dumps({"version": 1, "partitions": [
            {"topic": t, "partition": 0, "replicas": [leader, 3 - leader]} for t, leader in leaders.items()]}))
        cli(b1.admin, "reassign", "start", "--file", str(plan), "--allow-replication-factor-change")

        def moving() -> set[str]:
            return {m["topic"] for m in cli_json(b1.admin, "reassign", "list")}

        wait_until("the move of live done", lambda: "live" not in moving(), 60)
        assert "big" in moving(), "big was still copying under the throttle"
        wait_until("the move of big done", lambda: not moving(), 120)
    finally:
        stop.set()
        writer.join(60)
    assert [v for _, v in read_replica(cluster, 2, "live", 0)] == delivered, "every acknowledged record on broker 2"


def _alter_broker_configs(admin: str, node_id: int, name: str, value: str):
    """The admin API's AlterBrokerConfigs, the request encoded by hand (no generated
    stubs in the tests): node_id (field 1) and one `set` map entry (field 2)."""
    import grpc

    def varint(n: int) -> bytes:
        n &= (1 << 64) - 1  # int32 -1 is encoded as ten bytes, two's complement
        out = b""
        while True:
            low, n = n & 0x7F, n >> 7
            out += bytes([low | (0x80 if n else 0)])
            if not n:
                return out

    def field(tag: int, payload: bytes) -> bytes:
        return bytes([tag << 3 | 2]) + varint(len(payload)) + payload

    entry = field(1, name.encode()) + field(2, value.encode())
    request = bytes([1 << 3]) + varint(node_id) + field(2, entry)
    with grpc.insecure_channel(admin) as channel:
        call = channel.unary_unary("/strata.admin.v1.Admin/AlterBrokerConfigs",
                                   request_serializer=None, response_deserializer=None)
        try:
            call(request, timeout=30)
            return None
        except grpc.RpcError as e:
            return e.code(), e.details()


def test_alter_broker_configs_takes_only_the_receivers_own_scope_or_the_cluster_default(broker):
    """A broker checks values against its own settings, so the admin API refuses another
    broker's id (and any other negative id) instead of storing what it cannot check."""
    import grpc

    b = broker(env={"STRATA_NODE_ID": "1"})
    name = "leader.replication.throttled.rate"
    for other in (2, -2):
        refused = _alter_broker_configs(b.admin, other, name, "1048576")
        assert refused is not None and refused[0] == grpc.StatusCode.INVALID_ARGUMENT, (other, refused)
        assert "broker 1" in refused[1], refused
    assert describe_cluster_default(b.bootstrap) == {}, "nothing stored as the cluster default"
    assert value_and_source(b.bootstrap, "1", name) == (str(2**63 - 1), ConfigSource.DEFAULT_CONFIG.value)

    assert _alter_broker_configs(b.admin, 1, name, "2097152") is None
    assert value_and_source(b.bootstrap, "1", name) == ("2097152", ConfigSource.DYNAMIC_BROKER_CONFIG.value)
    assert _alter_broker_configs(b.admin, -1, name, "1048576") is None
    assert describe_cluster_default(b.bootstrap) == {name: ("1048576", ConfigSource.DYNAMIC_DEFAULT_BROKER_CONFIG.value)}
