"""A cluster of three `strata` processes on loopback with a real etcd (and moto for the
tiered tests): membership, acks=all and min.insync.replicas, leaders killed again and
again under an idempotent producer (checked Jepsen-style), an etcd outage, a broker
replaced with an empty disk, drain and decommission under load, and a consumer group losing its
coordinator. Session and lag timeouts are short (3 s, 4 s) so failovers take seconds.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
import uuid

import pytest
from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from clients import QUIET
from replication import Cluster, History, Writer, check_history, read_replica
from servers import EtcdServer, StrataBroker, s3_env, strata_binary, wait_until
from wire import (connect, list_offsets_latest_v1, parse_list_offsets_v1, parse_produce_response_v3,
                  produce_request_v3, raw_offset_fetch_v1, record_batch, recv_frame)

KiB = 1 << 10
FAILOVER_S = 20


def make_topic(cluster: Cluster, name: str, partitions: int, rf: int = 3, **configs: str) -> None:
    config = {"min.insync.replicas": "2", **{k.replace("_", "."): str(v) for k, v in configs.items()}}
    def create():
        # The broker answering may not have seen every broker register yet (its view is
        # refreshed every 250 ms): INVALID_REPLICATION_FACTOR then, so try again.
        admin = cluster.admin()  # kept alive until the futures resolve
        try:
            for future in admin.create_topics([NewTopic(name, partitions, rf, config=config)]).values():
                future.result(timeout=30)
            return True
        except KafkaException as e:
            if e.args[0].code() == KafkaError.TOPIC_ALREADY_EXISTS:
                return True
            if e.args[0].code() != KafkaError.INVALID_REPLICATION_FACTOR:
                raise
            return False

    wait_until(f"topic {name} created", create, 30, interval=0.5)
    cluster.wait_isr(name, rf)


def group_coordinator(cluster: Cluster, group: str) -> int:
    admin = cluster.admin()
    return admin.describe_consumer_groups([group])[group].result(timeout=30).coordinator.id


def verify_replicas(cluster: Cluster, topic: str, partitions: int, history: History, nodes: list[int]) -> None:
    """Every replica serves the acknowledged history intact, and the replicas' segment
    bytes on disk are identical."""
    cluster.wait_isr(topic, len(nodes), timeout=90)
    logs = {p: {n: read_replica(cluster, n, topic, p) for n in nodes} for p in range(partitions)}
    anomalies = check_history(history, logs)
    assert not anomalies, "\n".join(anomalies)
    for node in nodes:
        leads = [p for p, meta in cluster.partitions(topic).items() if meta.leader == node]
        if len(leads) < partitions:
            served = cluster.brokers[node].metric("strata_bytes_out_total", topic=topic)
            assert served and served > 0, f"node {node} served no fetch of {topic}: KIP-392 did not send readers to it"
    for b in cluster.live():
        assert b.stop() == 0, b.log_tail()
    for p in range(partitions):
        reference = cluster.log_bytes(nodes[0], topic, p)
        for node in nodes[1:]:
            assert cluster.log_bytes(node, topic, p) == reference, f"partition {p}: node {node}'s segments differ"


def test_membership_failover_and_rejoin(broker, etcd):
    cluster = Cluster(broker, etcd)
    assert cluster.brokers_listed() == {1, 2, 3}
    md = cluster.admin().list_topics(timeout=15)
    assert {b.id: b.port for b in md.brokers.values()} == {n: b.port for n, b in cluster.brokers.items()}
    make_topic(cluster, "members", 3)
    parts = cluster.partitions("members")
    assert {p.leader for p in parts.values()} == {1, 2, 3}, "leaders are spread over the brokers"
    for p in parts.values():
        assert sorted(p.replicas) == [1, 2, 3] and sorted(p.isrs) == [1, 2, 3]

    victim = parts[0].leader
    cluster.kill(victim)
    wait_until(f"broker {victim} leaves the broker list", lambda: victim not in cluster.brokers_listed(), FAILOVER_S)
    # Every partition: led elsewhere, without the dead broker in its ISR.
    wait_until(f"broker {victim} leads nothing and is in no ISR",
               lambda: all(p.leader not in (victim, -1) and victim not in p.isrs
                           for p in cluster.partitions("members").values()), FAILOVER_S)
    cluster.start(victim)
    wait_until(f"broker {victim} is listed again", lambda: victim in cluster.brokers_listed(), FAILOVER_S)
    cluster.wait_isr("members", 3)


def test_acks_all_needs_min_insync_replicas(broker, etcd):
    cluster = Cluster(broker, etcd)
    make_topic(cluster, "quorum", 1)
    producer = Producer({**QUIET, "bootstrap.servers": cluster.bootstrap, "acks": "all", "message.timeout.ms": 20000})
    errors = []
    for i in range(200):
        producer.produce("quorum", value=b"%d" % i, on_delivery=lambda e, m: errors.append(e) if e else None)
    producer.flush(30)
    assert not errors, errors[:3]

    leader = cluster.leader("quorum", 0)
    followers = [n for n in cluster.brokers if n != leader]
    for node in followers:
        cluster.kill(node)
    wait_until("the ISR shrinks to the leader",
               lambda: cluster.partitions("quorum", node=leader)[0].isrs == [leader], FAILOVER_S)
    outcome = []
    producer = Producer({**QUIET, "bootstrap.servers": cluster.brokers[leader].bootstrap, "acks": "all",
                         "message.timeout.ms": 5000, "retries": 0})
    producer.produce("quorum", value=b"lonely", on_delivery=lambda e, m: outcome.append(e))
    producer.flush(30)
    assert outcome and outcome[0] is not None, "acks=all succeeded with one in-sync replica of min.insync.replicas=2"
    assert outcome[0].code() == KafkaError.NOT_ENOUGH_REPLICAS, outcome[0]
    # acks=1 still works: the leader is alive.
    producer = Producer({**QUIET, "bootstrap.servers": cluster.brokers[leader].bootstrap, "acks": 1})
    ok = []
    producer.produce("quorum", value=b"acks-1", on_delivery=lambda e, m: ok.append(e))
    producer.flush(30)
    assert ok == [None]


def leader_in_its_own_view(cluster: Cluster, topic: str) -> int:
    """Partition 0's leader, once that broker itself answers as its leader and holds the
    whole ISR (another broker's view may lag, and a produce sent to a broker that does not
    know yet that it leads is refused)."""
    def settled():
        leader = cluster.leader(topic, 0)
        if leader < 0:
            return None
        own = cluster.partitions(topic, node=leader)[0]
        return (leader,) if own.leader == leader and len(own.isrs) == len(cluster.brokers) else None

    return wait_until(f"the leader of {topic} sees itself lead with the full ISR", settled, 60)[0]


def test_a_request_behind_a_waiting_acks_all_produce_sees_its_records(broker, etcd):
    """A ListOffsets (latest) sent right behind an acks=all Produce on one connection, while
    a follower is frozen so the Produce waits: the ListOffsets is not started until the
    Produce is answered, so it sees the produced record (the high watermark past it), as it
    would from Kafka, which reads one request at a time."""
    cluster = Cluster(broker, etcd, env={"STRATA_BROKER_SESSION_TIMEOUT_MS": "60000",
                                         "STRATA_REPLICA_LAG_TIME_MAX_MS": "60000"})
    topic = "behind"
    make_topic(cluster, topic, 1)
    leader = leader_in_its_own_view(cluster, topic)
    frozen = cluster.brokers[next(n for n in cluster.brokers if n != leader)].proc
    with connect(cluster.brokers[leader].bootstrap, timeout=60) as sock:
        os.kill(frozen.pid, signal.SIGSTOP)
        try:
            sock.sendall(produce_request_v3(0, topic, 0, record_batch([b"v0"]), acks=-1)
                         + list_offsets_latest_v1(1, topic, 0))
            wait_until("the leader appends the produce",
                       lambda: cluster.brokers[leader].metric("strata_log_end_offset", topic=topic,
                                                              partition="0") == 1, 30)
        finally:
            os.kill(frozen.pid, signal.SIGCONT)
        produced = parse_produce_response_v3(recv_frame(sock))
        latest = parse_list_offsets_v1(recv_frame(sock))
    assert produced == (0, [(topic, 0, 0, 0)]), produced
    assert latest == (1, [(topic, 0, 0, 1)]), f"ListOffsets did not see the acknowledged record: {latest}"


def test_a_connection_waiting_for_its_isr_is_not_idle(broker, etcd):
    """connections_max_idle_ms counts only while a connection has nothing pending: a
    connection whose acks=all Produce waits (a follower frozen) longer than the idle time
    stays open, answers the Produce, and serves the next request."""
    cluster = Cluster(broker, etcd, env={"STRATA_BROKER_SESSION_TIMEOUT_MS": "60000",
                                         "STRATA_REPLICA_LAG_TIME_MAX_MS": "60000",
                                         "STRATA_CONNECTIONS_MAX_IDLE_MS": "1500"})
    topic = "waiting"
    make_topic(cluster, topic, 1)
    leader = leader_in_its_own_view(cluster, topic)
    node = cluster.brokers[leader]
    frozen = cluster.brokers[next(n for n in cluster.brokers if n != leader)].proc
    with connect(node.bootstrap, timeout=60) as sock:
        os.kill(frozen.pid, signal.SIGSTOP)
        try:
            sock.sendall(produce_request_v3(0, topic, 0, record_batch([b"v0"]), acks=-1))
            wait_until("the leader appends the produce",
                       lambda: node.metric("strata_log_end_offset", topic=topic, partition="0") == 1, 30)
            # A connection opened now that sends nothing is closed as idle: by then the
            # produce's connection has been waiting for its ISR for the idle time.
            closed_before = node.metric("strata_connections_closed_total", reason="idle") or 0
            with connect(node.bootstrap):
                wait_until("an idle connection is closed",
                           lambda: (node.metric("strata_connections_closed_total", reason="idle") or 0)
                           > closed_before, 30)
        finally:
            os.kill(frozen.pid, signal.SIGCONT)
        assert parse_produce_response_v3(recv_frame(sock)) == (0, [(topic, 0, 0, 0)])
        sock.sendall(list_offsets_latest_v1(1, topic, 0))
        assert parse_list_offsets_v1(recv_frame(sock)) == (1, [(topic, 0, 0, 1)])


def test_pipelined_acks_all_produce_appends_ahead_and_answers_in_order(broker, etcd):
    """Produce requests sent back to back on one connection with acks=all: while a
    follower is frozen, so none can be acknowledged, the leader still appends every one of
    them in request order (the next request starts once the one before is in the log, not
    once the ISR holds it); once the follower resumes, the responses come back in request
    order with the offsets of that order, and every replica holds the records in it."""
    # Sessions and lag long enough that the frozen follower stays in the ISR meanwhile.
    cluster = Cluster(broker, etcd, env={"STRATA_BROKER_SESSION_TIMEOUT_MS": "60000",
                                         "STRATA_REPLICA_LAG_TIME_MAX_MS": "60000"})
    topic, requests = "pipelined", 4
    make_topic(cluster, topic, 1)
    leader = leader_in_its_own_view(cluster, topic)
    frozen = cluster.brokers[next(n for n in cluster.brokers if n != leader)].proc
    with connect(cluster.brokers[leader].bootstrap, timeout=60) as sock:
        os.kill(frozen.pid, signal.SIGSTOP)
        try:
            for i in range(requests):
                sock.sendall(produce_request_v3(i, topic, 0, record_batch([b"v%d" % i]), acks=-1))
            wait_until(f"the leader appends all {requests} requests before acknowledging any",
                       lambda: cluster.brokers[leader].metric("strata_log_end_offset", topic=topic,
                                                              partition="0") == requests, 30)
        finally:
            os.kill(frozen.pid, signal.SIGCONT)
        answers = [parse_produce_response_v3(recv_frame(sock)) for _ in range(requests)]
    assert [a[0] for a in answers] == list(range(requests)), "responses out of request order"
    assert [a[1] for a in answers] == [[(topic, 0, 0, i)] for i in range(requests)], answers
    for node in cluster.brokers:
        assert read_replica(cluster, node, topic, 0) == [(i, "v%d" % i) for i in range(requests)]


def test_killed_leaders_lose_no_acknowledged_record(broker, etcd):
    """Jepsen-style: an idempotent acks=all producer while the leader of a partition is
    killed (SIGKILL) and restarted, four times; then every acknowledged record must be at
    its offset on every replica, with no duplicate, in order, and the replicas' bytes equal."""
    cluster = Cluster(broker, etcd)
    topic, partitions = "jepsen", 3
    make_topic(cluster, topic, partitions)
    history = History()
    writer = Writer(cluster.bootstrap, topic, partitions, history)
    writer.start()
    kills = 0
    for round_ in range(4):
        time.sleep(4)
        partition = round_ % partitions
        meta = cluster.partitions(topic)[partition]
        victim = meta.leader
        cluster.kill(victim)
        kills += 1
        wait_until(f"partition {partition} leaves broker {victim}",
                   lambda: cluster.leader(topic, partition) not in (victim, -1), FAILOVER_S)
        time.sleep(2)
        cluster.start(victim)
    time.sleep(3)
    writer.stop()
    acked_during = len(history.acked)
    print(f"jepsen: {writer.sent} sent, {acked_during} acknowledged, {len(history.failed)} failed, {kills} leaders killed")
    assert acked_during > 1000, "the producer made no progress across failovers"
    verify_replicas(cluster, topic, partitions, history, [1, 2, 3])


def test_etcd_outage_keeps_leaders_serving(broker, tmp_path):
    """etcd stopped for longer than the session timeout: leaders keep acknowledging
    acks=all writes; when it is back, every broker agrees on every leader and epoch."""
    import shutil

    etcd = EtcdServer(tmp_path / "own-etcd", shutil.which("etcd") or "/usr/bin/etcd").start()
    try:
        cluster = Cluster(broker, etcd)
        topic, partitions = "outage", 3
        make_topic(cluster, topic, partitions)
        history = History()
        writer = Writer(cluster.bootstrap, topic, partitions, history)
        writer.start()
        time.sleep(3)
        before = dict(cluster.partitions(topic))
        etcd.stop()
        acked_at_stop = len(history.acked)
        time.sleep(8)
        acked_during = len(history.acked) - acked_at_stop
        etcd.start()
        time.sleep(4)
        writer.stop()
        assert acked_during > 100, f"only {acked_during} acks while etcd was down"
        views = {n: {p: (m.leader, m.isrs) for p, m in cluster.partitions(topic, node=n).items()} for n in cluster.brokers}
        assert len({repr(v) for v in views.values()}) == 1, f"brokers disagree after the outage: {views}"
        assert {p: m.leader for p, m in before.items()} == {p: v[0] for p, v in views[1].items()}, \
            "leadership moved although no broker failed"
        verify_replicas(cluster, topic, partitions, history, [1, 2, 3])
    finally:
        etcd.stop()


def test_empty_disk_replacement_serves_history_from_the_bucket(broker, etcd, bucket):
    """A follower's disk is lost: started empty with the same node id, it restores the
    tiered history from the manifest (without copying it), takes the tail from the leader,
    rejoins the ISR, and can lead and serve everything from offset 0."""
    env = s3_env(bucket.endpoint, bucket.name, remote_upload_interval_ms=200, log_housekeeping_interval_ms=200)
    cluster = Cluster(broker, etcd, env=env)
    topic = "replaced"
    make_topic(cluster, topic, 1, segment_bytes=64 * KiB, local_retention_ms=1000, retention_ms=-1)
    history = History()
    producer = Producer({**QUIET, "bootstrap.servers": cluster.bootstrap, "acks": "all", "enable.idempotence": True,
                         "linger.ms": 5, "batch.size": 16 * KiB})
    for i in range(3000):
        producer.produce(topic, value=b"0:%d:" % i + b"x" * 200, partition=0, on_delivery=history.record)
    producer.flush(60)
    assert len(history.acked) == 3000
    wait_until("the bucket holds segments", lambda: len(bucket.segment_objects(topic, 0)) >= 5, 60)

    leader = cluster.leader(topic, 0)
    victim = next(n for n in cluster.brokers if n != leader)
    cluster.kill(victim)
    wait_until(f"broker {victim} leaves the ISR",
               lambda: victim not in cluster.partitions(topic, node=leader)[0].isrs, FAILOVER_S)
    cluster.brokers[victim].wipe_data_dir()
    cluster.start(victim)
    wait_until(f"the replaced broker {victim} is back in the ISR",
               lambda: victim in cluster.partitions(topic, node=leader)[0].isrs, 90)
    segments = cluster.brokers[victim].local_segments(topic, 0)
    assert segments and segments[0] > 0, f"the replacement copied history instead of using the bucket: {segments}"

    # The replaced broker alone: it leads and serves everything, history from the bucket.
    others = [n for n in cluster.brokers if n != victim]
    for node in others:
        cluster.kill(node)
    wait_until(f"broker {victim} leads", lambda: cluster.leader(topic, 0) == victim, FAILOVER_S)
    consumer = Consumer({**QUIET, "bootstrap.servers": cluster.brokers[victim].bootstrap,
                         "group.id": f"replay-{uuid.uuid4().hex[:6]}", "enable.auto.commit": False})
    consumer.assign([TopicPartition(topic, 0, 0)])
    got = {}
    deadline = time.monotonic() + 60
    while len(got) < 3000 and time.monotonic() < deadline:
        for m in consumer.consume(1000, timeout=1):
            if not m.error():
                got[m.value().decode().rsplit(":", 1)[0] + ":"] = m.offset()
    consumer.close()
    expected = {v.rsplit(":", 1)[0] + ":": o for v, (_, o) in history.acked.items()}
    assert got == expected, f"{len(got)} of {len(expected)} records served by the replaced broker"


def test_drain_and_decommission_under_load(broker, etcd):
    """Under an acks=all producer: node 3 is drained through etcd (`--metadata`, no broker
    needed), undrained, then decommissioned through the admin API, which drains it again
    and asks it to stop. No write fails, and every acknowledged record survives on the
    remaining replicas."""
    cluster = Cluster(broker, etcd)
    topic, partitions = "drained", 6
    make_topic(cluster, topic, partitions, rf=2)
    assert any(3 in p.replicas for p in cluster.partitions(topic).values())
    history = History()
    writer = Writer(cluster.bootstrap, topic, partitions, history)
    writer.start()
    time.sleep(2)
    strata = str(strata_binary())
    drain = subprocess.run([strata, "drain", "--metadata", cluster.metadata, "--node", "3",
                            "--timeout-ms", "90000"], capture_output=True, text=True, timeout=120)
    assert drain.returncode == 0, drain.stdout + drain.stderr
    assert "drained" in drain.stdout
    for p in cluster.partitions(topic).values():
        assert 3 not in p.replicas and len(p.replicas) == 2, (p.id, p.replicas)
    undrain = subprocess.run([strata, "undrain", "--metadata", cluster.metadata, "--node", "3"],
                             capture_output=True, text=True, timeout=60)
    assert undrain.returncode == 0, undrain.stdout + undrain.stderr
    # Back in placement: a new topic may use node 3 again, so the decommission below has
    # replicas to move.
    make_topic(cluster, "after-undrain", 6, rf=2)
    assert any(3 in p.replicas for p in cluster.partitions("after-undrain").values())

    done = subprocess.run([strata, "decommission", "--admin", cluster.brokers[1].admin, "--node", "3",
                           "--timeout-ms", "90000"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    wait_until("node 3 exits after decommission", lambda: not cluster.brokers[3].is_running(), 30)
    assert cluster.brokers[3].proc.returncode == 0, cluster.brokers[3].log_tail()
    for name in (topic, "after-undrain"):
        for p in cluster.partitions(name).values():
            assert 3 not in p.replicas and len(p.replicas) == 2, (name, p.id, p.replicas)
    time.sleep(2)
    writer.stop()
    assert not history.failed, f"{len(history.failed)} writes failed during drain and decommission"
    verify_replicas(cluster, topic, partitions, history, [1, 2])


def test_consumer_group_survives_its_coordinator(broker, etcd):
    cluster = Cluster(broker, etcd)
    topic = "grouped"
    make_topic(cluster, topic, 3)
    producer = Producer({**QUIET, "bootstrap.servers": cluster.bootstrap, "acks": "all"})
    for i in range(3000):
        producer.produce(topic, value=b"%d" % i, partition=i % 3)
    producer.flush(30)

    def consumer():
        return Consumer({**QUIET, "bootstrap.servers": cluster.bootstrap, "group.id": "survivors",
                         "auto.offset.reset": "earliest", "enable.auto.commit": False})

    first = consumer()
    first.subscribe([topic])
    seen = []
    deadline = time.monotonic() + 60
    while len(seen) < 1500 and time.monotonic() < deadline:
        m = first.poll(1)
        if m is not None and not m.error():
            seen.append((m.partition(), m.offset()))
    first.commit(asynchronous=False)
    committed = {tp.partition: tp.offset for tp in first.committed([TopicPartition(topic, p) for p in range(3)])}
    first.close()
    coordinator = group_coordinator(cluster, "survivors")
    # Only the coordinator answers with the commits; the others say NOT_COORDINATOR (16)
    # rather than "nothing committed", which would send a consumer to auto.offset.reset.
    for node, b in cluster.brokers.items():
        answer = raw_offset_fetch_v1(b.bootstrap, "survivors", topic, [0, 1, 2])
        if node == coordinator:
            # librdkafka shows "nothing committed" as -1001; the protocol says -1.
            assert answer == {p: (max(committed[p], -1), 0) for p in range(3)}, answer
        else:
            assert answer == {p: (-1, 16) for p in range(3)}, (node, answer)

    cluster.kill(coordinator)
    second = consumer()
    second.subscribe([topic])
    rest = []
    deadline = time.monotonic() + 90
    while len(rest) < 3000 - len(seen) and time.monotonic() < deadline:
        m = second.poll(1)
        if m is not None and not m.error():
            rest.append((m.partition(), m.offset()))
    second.close()
    assert len(rest) == 3000 - len(seen), f"after the coordinator died the group read {len(rest)} more"
    for partition, offset in rest:
        assert offset >= max(committed[partition], 0), f"partition {partition}: re-read {offset} below the commit"
    assert group_coordinator(cluster, "survivors") != coordinator


def test_checker_finds_each_anomaly():
    history = History()
    for offset in range(4):
        history.acked[f"0:{offset}"] = (0, offset)
    good = [(o, f"0:{o}") for o in range(4)]
    assert check_history(history, {0: {1: good, 2: list(good)}}) == []
    cases = {
        "lost": [(0, "0:0"), (1, "0:1"), (2, "0:2")],
        "moved": [(0, "0:0"), (1, "0:2"), (2, "0:1"), (3, "0:3")],
        "duplicate": good + [(4, "0:3")],
        "gap": [(0, "0:0"), (1, "0:1"), (2, "0:2"), (3, "0:3"), (5, "0:5")],
    }
    for name, bad in cases.items():
        anomalies = check_history(history, {0: {1: good, 2: bad}})
        assert anomalies, f"the checker missed a {name} record"
        assert any("node 2" in a for a in anomalies), anomalies


# ---- membership at default-like settings: watches, probes, successors ----------------

# A session this long cannot expire during a test: what the tests below see happen must
# come from the watch, the probes or the successor's claim.
LONG_SESSION = {"STRATA_BROKER_SESSION_TIMEOUT_MS": "600000"}


def listed_by(b) -> set[int]:
    return set(AdminClient({**QUIET, "bootstrap.servers": b.bootstrap}).list_topics(timeout=15).brokers)


def test_a_change_reaches_another_broker_through_the_watch(broker, etcd):
    """Rounds every 10 minutes: the first broker learns that the second registered only
    through its watch on etcd."""
    metadata = etcd.url(f"watch-{uuid.uuid4().hex[:8]}")
    env = {**LONG_SESSION, "STRATA_METADATA_REFRESH_INTERVAL_MS": "600000"}
    first = broker(metadata=metadata, env=env, args=["--node-id", "1"], name="first")
    assert listed_by(first) == {1}
    broker(metadata=metadata, env=env, args=["--node-id", "2"], name="second")
    wait_until("the first broker lists the second", lambda: listed_by(first) == {1, 2}, 30)


def test_a_crashed_broker_is_taken_out_long_before_its_session_expires(broker, etcd):
    """Peers' probes find the killed leader's listener refusing connections and end its
    session; its partition moves to the other in-sync replica."""
    metadata = etcd.url(f"probe-{uuid.uuid4().hex[:8]}")
    brokers = {n: broker(metadata=metadata, env=LONG_SESSION, args=["--node-id", str(n)], name=f"node{n}")
               for n in (1, 2)}
    wait_until("both brokers are listed", lambda: listed_by(brokers[1]) == {1, 2}, 30)
    admin = AdminClient({**QUIET, "bootstrap.servers": brokers[1].bootstrap})
    admin.create_topics([NewTopic("probed", 1, 2)])["probed"].result(30)

    def state(node):
        p = AdminClient({**QUIET, "bootstrap.servers": brokers[node].bootstrap}).list_topics("probed", timeout=15) \
            .topics["probed"].partitions[0]
        return p.leader, sorted(p.isrs)
    wait_until("both in sync", lambda: state(1)[1] == [1, 2], 30)
    victim = state(1)[0]
    survivor = 3 - victim
    brokers[victim].kill9()
    wait_until(f"broker {survivor} leads alone", lambda: state(survivor) == (survivor, [survivor]), 60)
    assert "refuses connections at its replication address: ended its session" in brokers[survivor].log_text()


def test_a_stalled_leader_is_left_to_its_session(broker, etcd):
    """A leader stopped (SIGSTOP) for many probe intervals still has its listening socket:
    the kernel accepts probes into its backlog, so no peer ends its session; resumed, it
    is still registered and still leads."""
    metadata = etcd.url(f"stall-{uuid.uuid4().hex[:8]}")
    brokers = {n: broker(metadata=metadata, env=LONG_SESSION, args=["--node-id", str(n)], name=f"node{n}")
               for n in (1, 2)}
    wait_until("both brokers are listed", lambda: listed_by(brokers[1]) == {1, 2}, 30)
    admin = AdminClient({**QUIET, "bootstrap.servers": brokers[1].bootstrap})
    admin.create_topics([NewTopic("stalled", 1, 2)])["stalled"].result(30)

    def state(node):
        p = AdminClient({**QUIET, "bootstrap.servers": brokers[node].bootstrap}).list_topics("stalled", timeout=15) \
            .topics["stalled"].partitions[0]
        return p.leader, sorted(p.isrs)
    wait_until("both in sync", lambda: state(1)[1] == [1, 2], 30)
    victim = state(1)[0]
    survivor = 3 - victim
    os.kill(brokers[victim].proc.pid, signal.SIGSTOP)
    try:
        # Asserting that nothing happens needs a wait: 30 probe intervals (100 ms each),
        # far more than the two refusals a crash takes.
        time.sleep(3)
        assert listed_by(brokers[survivor]) == {1, 2}
    finally:
        os.kill(brokers[victim].proc.pid, signal.SIGCONT)
    assert state(survivor)[0] == victim
    assert "ended its session" not in brokers[survivor].log_text()
    assert "session is gone" not in brokers[victim].log_text()


def test_a_restarted_broker_waits_for_its_previous_incarnation_s_session(broker, etcd):
    """Killed and started again on an empty disk while its session is alive, the broker
    does not take the node id from that session (nothing proves the holder is dead): it
    registers once the session expired."""
    metadata = etcd.url(f"claim-{uuid.uuid4().hex[:8]}")
    b = broker(metadata=metadata, env={"STRATA_BROKER_SESSION_TIMEOUT_MS": "6000"}, args=["--node-id", "1"])
    b.kill9()
    b.wipe_data_dir()
    b.start()
    assert "waiting for its session to expire" in b.log_text(), b.log_tail()
    assert listed_by(b) == {1}


@pytest.mark.parametrize("same_replication_address", [False, True])
def test_a_second_live_process_with_the_same_node_id_is_still_refused(broker, etcd, tmp_path,
                                                                      same_replication_address):
    """Another process given a live broker's node id must not take it, even when it
    advertises the live one's replication address (every incarnation of a Kubernetes pod
    advertises the same name): it waits for the live one's session, then gives up."""
    metadata = etcd.url(f"twice-{uuid.uuid4().hex[:8]}")
    env = {"STRATA_BROKER_SESSION_TIMEOUT_MS": "6000"}
    first = broker(metadata=metadata, env=env, args=["--node-id", "1"], name="first")
    second_env = dict(env)
    if same_replication_address:
        second_env["STRATA_REPLICATION_ADVERTISE"] = f"127.0.0.1:{first.replication_port}"
    second = StrataBroker(tmp_path / "second", metadata=metadata, env=second_env, args=["--node-id", "1"])
    try:
        code = second.spawn().wait(timeout=120)
    finally:
        second.kill9()
    assert code != 0, second.log_tail()
    assert "registered by another live broker" in second.log_text(), second.log_tail()
    assert first.is_ready() and listed_by(first) == {1}
    assert "session is gone" not in first.log_text(), first.log_tail()
