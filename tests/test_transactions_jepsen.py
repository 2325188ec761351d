"""Jepsen-style transactions on a 3-broker cluster (etcd): two transactional producers
write transactions spanning 3-4 of 6 partitions (RF 3, min.insync.replicas 2), commit
two in three and abort the rest, while, three times over, the broker of their
transaction coordinator is killed (-9) during a commit and restarted, then the leader of
a partition on another broker. Each producer handles errors as an application must
(`replication.TxnWriter`) and records every transaction's outcome: committed, aborted,
or unknown. One transaction in 25 is abandoned as if the application crashed, while
writing (never committed: it counts as aborted) or just after calling
commit_transaction: a new producer with the same id races the old one's EndTxn
(init_transactions fences it), so the coordinator decides. One more
transaction is left open for good across the last coordinator failover: the new
coordinator must abort it when it times out.

`replication.check_transactions` then compares the history with what read_committed and
read_uncommitted consumers read from offset 0: no committed record lost, no aborted
record visible, no transaction torn (all of it or none of it, across partitions), no
duplicate or reordered record, every acknowledged record at its offset; and the
read_committed consumer reaches the high watermark once the writers have stopped (the
LSO is not stuck). Every replica, read through itself (KIP-392), serves the same
read_committed view, and the replicas' segment bytes are identical.
`test_txn_checker_finds_each_anomaly` shows that the checker catches each anomaly.
About 45 s."""

from __future__ import annotations

import random
import threading
import time

import pytest
from confluent_kafka import KafkaException, Producer

from replication import (ABORTED, COMMITTED, UNKNOWN, Cluster, Txn, TxnHistory, TxnWriter, check_transactions,
                         read_partitions)
from servers import wait_until
from test_replication import FAILOVER_S, make_topic
from test_transactions_cluster import java_hash_partition

TOPIC = "txjepsen"
PARTITIONS = 6
TXN_PARTITIONS = 3
TXN_TIMEOUT_MS = 12000
ROUNDS = 3  # each kills the coordinator's broker, then a partition leader's
WRITE_S = 40  # the writers run at least this long, across every kill
CRASH_ONE_IN = 25  # transactions abandoned by a "crashed" application (outcome unknown)
STUCK_S = TXN_TIMEOUT_MS / 1000 + 15  # an open transaction must be over by then


def same_coordinator_ids(base: str, count: int) -> list[str]:
    """`count` transactional ids on the same `__transaction_state` partition as `base`,
    so that one kill takes away the coordinator of every writer."""
    want = java_hash_partition(base, TXN_PARTITIONS)
    ids, n = [base], 0
    while len(ids) < count:
        n += 1
        if java_hash_partition(f"{base}-{n}", TXN_PARTITIONS) == want:
            ids.append(f"{base}-{n}")
    return ids


def watermarks(cluster: Cluster) -> tuple[dict[int, int], dict[int, int]]:
    """(LSO, high watermark) per partition, as ListOffsets LATEST answers read_committed
    and read_uncommitted clients (admin client, leader of each partition)."""
    from confluent_kafka import IsolationLevel, TopicPartition
    from confluent_kafka.admin import OffsetSpec

    admin = cluster.admin()
    out = []
    for isolation in (IsolationLevel.READ_COMMITTED, IsolationLevel.READ_UNCOMMITTED):
        tps = {TopicPartition(TOPIC, p): OffsetSpec.latest() for p in range(PARTITIONS)}
        futures = admin.list_offsets(tps, isolation_level=isolation, request_timeout=15)
        out.append({tp.partition: f.result(timeout=30).offset for tp, f in futures.items()})
    return out[0], out[1]


# Closing a zombie (fenced in the middle of its commit) warns that its abort failed.
@pytest.mark.filterwarnings("ignore:Producer abort_transaction failed during close")
def test_killed_coordinator_and_leader_lose_or_tear_no_transaction(broker, etcd):
    cluster = Cluster(broker, etcd, env={
        "STRATA_TRANSACTION_STATE_PARTITIONS": str(TXN_PARTITIONS),
        "STRATA_OFFSETS_TOPIC_PARTITIONS": "3",
        "STRATA_TRANSACTION_ABORT_TIMED_OUT_TRANSACTION_CLEANUP_INTERVAL_MS": "500",
    })
    make_topic(cluster, TOPIC, PARTITIONS)
    history = TxnHistory()
    seed = random.randrange(1 << 30)
    history.event(f"random seed {seed}")
    ids = same_coordinator_ids("jepsen-tx", 3)  # two writers, and one transaction left open
    index = java_hash_partition(ids[0], TXN_PARTITIONS)
    writers = [TxnWriter(f"w{n}", cluster.bootstrap, TOPIC, PARTITIONS, tid, history, seed=seed + n,
                         txn_timeout_ms=TXN_TIMEOUT_MS, crash_one_in=CRASH_ONE_IN) for n, tid in enumerate(ids[:2])]
    for w in writers:
        w.start()

    def open_txns() -> str:
        return ", ".join(f"{w.name}:{w.current.id if w.current else '-'}/{w.phase}" for w in writers)

    def leader_everywhere(topic: str, partition: int) -> int | None:
        """The partition's leader if every live broker names the same one, else None."""
        try:
            views = {cluster.partitions(topic, node=n)[partition].leader
                     for n, b in cluster.brokers.items() if b.is_running()}
        except (KafkaException, KeyError):  # a broker just started, metadata still moving
            return None
        return views.pop() if len(views) == 1 else None

    def agreed_leader(topic: str, partition: int) -> int:
        def agreed():
            leader = leader_everywhere(topic, partition)
            return leader if leader is not None and leader > 0 else None

        return wait_until(f"every live broker names the same leader of {topic}/{partition}", agreed, FAILOVER_S)

    def during_a_commit() -> None:
        """Returns as soon as a writer is committing (or after 3 s): the kill that follows
        lands between EndTxn and the markers, or while the markers are written."""
        deadline = time.monotonic() + 3
        while time.monotonic() < deadline and not any(w.phase == "committing" for w in writers):
            time.sleep(0.001)

    def progress(what: str, more: int, timeout: float) -> None:
        target = history.count(COMMITTED) + more
        wait_until(f"{more} more committed transactions {what} (events: {history.events[-8:]})",
                   lambda: history.count(COMMITTED) >= target or any(w.failure for w in writers), timeout)
        failed = [w.failure for w in writers if w.failure]
        assert not failed, f"a writer failed:\n{failed[0]}\nevents: {history.events[-20:]}"

    def kill_and_restart(node: int, why: str, topic: str, partition: int) -> None:
        """kill -9 `node` while a writer commits, wait until every live broker names
        another leader of topic/partition, restart it."""
        during_a_commit()
        cluster.kill(node)
        history.event(f"kill -9 broker {node} ({why}); open transactions: {open_txns()}")

        def moved():
            leader = leader_everywhere(topic, partition)
            return leader if leader not in (node, -1, None) else None

        now = wait_until(f"every live broker names a leader of {topic}/{partition} other than {node}", moved,
                         FAILOVER_S)
        history.event(f"{topic}/{partition} moved to broker {now}; open transactions: {open_txns()}")
        time.sleep(1.5)
        cluster.start(node)
        history.event(f"broker {node} restarted")

    def leave_a_transaction_open() -> Producer:
        """A producer that writes a transaction and is never heard of again: the
        coordinator must abort it after transaction.timeout.ms, or read_committed
        consumers of its partitions are stuck for good."""
        abandoner = TxnWriter("abandoned", cluster.bootstrap, TOPIC, PARTITIONS, ids[2], history, seed=99,
                              txn_timeout_ms=TXN_TIMEOUT_MS)
        producer = abandoner.new_producer()
        txn = history.new("abandoned.0")
        producer.begin_transaction()
        for i, p in enumerate([0, 2, 4] * 3):
            value = f"{txn.id}-{i}"
            txn.sent.append((p, value))
            producer.produce(TOPIC, value=value.encode(), partition=p, on_delivery=txn.delivered)
        assert producer.flush(30) == 0, "the abandoned transaction's records were not delivered"
        txn.outcome = ABORTED  # never committed: none of it may ever be visible
        history.event(f"{txn.id} left open ({ids[2]}, partitions 0, 2, 4)")
        return producer

    abandoned = None
    try:
        write_until = time.monotonic() + WRITE_S
        progress("before the first kill", 20, 40)
        victims = set()
        for round_ in range(ROUNDS):
            cluster.wait_isr(TOPIC, 3)
            cluster.wait_isr("__transaction_state", 3)
            if round_ == ROUNDS - 1:
                # Open across the coordinator's failover: its successor must time it out.
                abandoned = leave_a_transaction_open()
            # 1. The coordinator's broker, mid-transaction.
            coordinator = agreed_leader("__transaction_state", index)
            kill_and_restart(coordinator, f"coordinator of {ids}", "__transaction_state", index)
            victims.add(coordinator)
            progress("after the coordinator's broker came back", 5, 40)
            cluster.wait_isr(TOPIC, 3)
            cluster.wait_isr("__transaction_state", 3)
            # 2. The leader of a partition, on another broker than the coordinator's old and
            # (if possible) current ones.
            now_coordinator = agreed_leader("__transaction_state", index)
            leaders = {p: agreed_leader(TOPIC, p) for p in range(PARTITIONS)}
            choices = [p for p, n in leaders.items() if n not in (coordinator, now_coordinator)] or \
                      [p for p, n in leaders.items() if n != coordinator] or list(leaders)
            partition = choices[round_ % len(choices)]
            victim = leaders[partition]
            kill_and_restart(victim, f"leader of {TOPIC}/{partition}; the coordinator is on {now_coordinator}",
                             TOPIC, partition)
            victims.add(victim)
            progress("after the leader's broker came back", 5, 40)
        assert len(victims) >= 2, f"the same broker was killed every time: {victims}"
        time.sleep(max(0.0, write_until - time.monotonic()))
    finally:
        for w in writers:
            w.halt.set()
        for w in writers:
            w.join(90)
    history.event("writers stopped")
    running = [w.name for w in writers if w.is_alive()]
    assert not running, f"{running} did not finish their last transaction within 90s; events: {history.events}"
    assert abandoned is not None
    failed = [w.failure for w in writers if w.failure]
    assert not failed, f"a writer failed:\n{failed[0]}\nevents: {history.events}"

    cluster.wait_isr(TOPIC, 3)
    # read_committed consumers are never stuck: once the writers stopped, every open
    # transaction ends (its producer's successor or the coordinator's timeout aborts it)
    # and the LSO reaches the high watermark.
    deadline = time.monotonic() + STUCK_S
    while True:
        lso, high = watermarks(cluster)
        if lso == high or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    history.event(f"LSO {lso}, high watermarks {high}")
    threading.Thread(target=close_quietly, args=(abandoned,), daemon=True).start()
    committed, reached = read_partitions(cluster.bootstrap, TOPIC, high, "read_committed", timeout=30)
    uncommitted, _ = read_partitions(cluster.bootstrap, TOPIC, high, "read_uncommitted", timeout=30)
    anomalies = check_transactions(history, committed, uncommitted,
                                   ends={p: (reached[p], high[p]) for p in range(PARTITIONS)})
    if lso != high:
        anomalies.append(f"stuck: {STUCK_S}s after the writers stopped the LSO is {lso}, high watermarks {high}")
    # Every replica, read through itself, serves the same read_committed view (markers
    # and aborted-transaction index replicated with the records).
    for node in sorted(cluster.brokers):
        replica, at = read_partitions(cluster.bootstrap, TOPIC, high, "read_committed", timeout=30, rack=f"r{node}")
        for p in range(PARTITIONS):
            if replica[p] != committed[p]:
                anomalies.append(f"replica: read_committed served by node {node}'s rack reads {len(replica[p])} "
                                 f"records of partition {p} (end {at[p]}), the leader {len(committed[p])}")

    counts = {o: history.count(o) for o in (COMMITTED, ABORTED, UNKNOWN, "open")}
    slow = sorted(((t.ended - t.began, t.id, t.outcome) for t in history.txns.values()), reverse=True)[:5]
    summary = (f"transactions: {counts}; producers: {[w.producers for w in writers]}, "
               f"application crashes: {[len(w.zombies) for w in writers]}; "
               f"slowest: {[(f'{d:.1f}s', i, o) for d, i, o in slow]}; "
               f"records read_committed {sum(map(len, committed.values()))}, "
               f"read_uncommitted {sum(map(len, uncommitted.values()))}")
    print(summary)
    print("\n".join(history.events))
    assert not anomalies, ("\n".join(anomalies[:40]) + f"\n({len(anomalies)} anomalies)\n{summary}\nevents:\n"
                           + "\n".join(history.events))
    crashes = sum(len(w.zombies) for w in writers)
    assert counts[COMMITTED] >= 30 and counts[ABORTED] >= 10 and crashes >= 2, \
        f"too little progress ({crashes} application crashes): {summary}"

    # The replicas' bytes: identical once every broker has stopped.
    for b in cluster.live():
        assert b.stop() == 0, b.log_tail()
    for p in range(PARTITIONS):
        reference = cluster.log_bytes(1, TOPIC, p)
        for node in (2, 3):
            assert cluster.log_bytes(node, TOPIC, p) == reference, f"partition {p}: node {node}'s segments differ"


def close_quietly(producer: Producer) -> None:
    """Closes a producer whose transaction the coordinator aborted (it is fenced)."""
    try:
        producer.close()
    except KafkaException:
        pass


def test_txn_checker_finds_each_anomaly():
    def history() -> TxnHistory:
        h = TxnHistory()
        for tid, outcome in (("c", COMMITTED), ("a", ABORTED), ("u", UNKNOWN), ("n", UNKNOWN)):
            t = Txn(tid, outcome=outcome)
            for i in range(4):
                t.sent.append((i % 2, f"{tid}-{i}"))
            h.txns[tid] = t
        return h

    def log(*values: str) -> dict[int, list[tuple[int, str]]]:
        out: dict[int, list[tuple[int, str]]] = {0: [], 1: []}
        for v in values:
            p = int(v.rsplit("-", 1)[1]) % 2
            out[p].append((len(out[p]), v))
        return out

    h = history()
    good = log("c-0", "c-1", "u-0", "u-1", "c-2", "c-3", "u-2", "u-3")
    everything = log("c-0", "c-1", "u-0", "u-1", "c-2", "c-3", "u-2", "u-3", "a-0", "a-1", "a-2", "a-3")
    for t in h.txns.values():  # delivery reports where each record landed
        for p, recs in (good if t.id != "a" else everything).items():
            t.acked.update({v: (p, o) for o, v in recs if v.startswith(t.id + "-")})
    # (The unknown transaction "n", wholly invisible, is fine: all or nothing.)
    assert check_transactions(h, good) == [], check_transactions(h, good)

    cases = {
        "lost": log("c-0", "c-1", "c-2", "u-0", "u-1", "u-2", "u-3"),
        "aborted visible": log("c-0", "c-1", "c-2", "c-3", "a-0"),
        "torn": log("c-0", "c-1", "c-2", "c-3", "u-0", "u-1", "u-2"),
        "duplicate": log("c-0", "c-1", "c-2", "c-3", "c-1"),
        "reordered": log("c-2", "c-1", "c-0", "c-3"),
        "phantom": log("c-0", "c-1", "c-2", "c-3", "x-0"),
    }
    for name, reads in cases.items():
        anomalies = check_transactions(h, reads)
        assert any(a.startswith(name) for a in anomalies), f"the checker missed {name}: {anomalies}"
    # Moved: read at another offset than its delivery report said.
    moved = log("c-0", "c-1", "c-2", "c-3")
    moved[0] = [(o + 1, v) for o, v in moved[0]]
    assert any(a.startswith("moved") for a in check_transactions(h, moved))
    # Wrong partition.
    swapped = {0: [(0, "c-1")], 1: [(0, "c-0")]}
    assert any(a.startswith("wrong partition") for a in check_transactions(h, swapped))
    # The log (read_uncommitted) lost an acknowledged record of the aborted transaction.
    short_log = log("c-0", "c-1", "u-0", "u-1", "c-2", "c-3", "u-2", "u-3", "a-0", "a-1", "a-2")
    assert any(a.startswith("acknowledged record missing") for a in check_transactions(h, good, short_log))
    assert check_transactions(h, good, everything) == []
    # Stuck: the read_committed consumer never reached the high watermark.
    anomalies = check_transactions(h, good, ends={0: (4, 4), 1: (2, 6)})
    assert any(a.startswith("stuck") for a in anomalies), anomalies
    assert check_transactions(h, good, ends={0: (4, 4), 1: (6, 6)}) == []
    assert any(a.startswith("stuck") for a in check_transactions(h, good, ends={0: (None, 4)}))
