#!/usr/bin/env python3
"""Failover and restart scenarios of bench/failover.sh, for two builds interleaved.

For each trial and each build (A B A B ...), on a fresh etcd each time:
  failover  three brokers at default settings, a topic of three partitions (one led by
            each broker) with replication factor 3 and min.insync.replicas=2. First the
            idle etcd request rate (request messages etcd received per second, from its
            /metrics, while no client is connected), then a producer sends one acks=all
            record at a time to the partition the victim leads, and the victim is killed
            (SIGKILL): a broker that is not the controller in even trials, the controller
            in odd ones. Reported: kill -> acknowledgement of the first record sent after
            the kill (the one in flight at the kill goes first), and
            kill -> the moment a surviving broker's Metadata names a new leader.
  restart   one broker on etcd with tiered storage (a local-directory object store),
            HISTORY_MIB of records uploaded, then SIGKILL, the data dir deleted, and the
            same command started again at once. Reported: start -> the first record
            (offset 0, from the object store) in a consumer's hands.
Prints one JSON line per measurement; bench/failover.sh turns them into the report.
"""

import argparse
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

from confluent_kafka import Consumer, KafkaError, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic


CLIENT_DEBUG = {"debug": os.environ["CLIENT_DEBUG"], "log_level": 7} if os.environ.get("CLIENT_DEBUG") else {}


def free_port():
    # Below the ephemeral range, where a client socket in TIME_WAIT would refuse a bind.
    for _ in range(200):
        port = random.randint(20000, 32000)
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
                return port
            except OSError:
                continue
    raise RuntimeError("no free port")


def http_get(url, timeout=1.0):
    with urllib.request.urlopen(url, timeout=timeout) as r:
        return r.read().decode()


def wait_for(what, check, timeout=30.0, every=0.05):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            value = check()
            if value:
                return value
        except Exception:
            pass
        time.sleep(every)
    raise RuntimeError(f"timed out waiting for {what}")


class Etcd:
    def __init__(self, work):
        self.dir = os.path.join(work, "etcd")
        self.port, peer = free_port(), free_port()
        self.log = open(os.path.join(work, "etcd.log"), "w")
        self.proc = subprocess.Popen(
            ["etcd", "--data-dir", self.dir,
             "--listen-client-urls", f"http://127.0.0.1:{self.port}",
             "--advertise-client-urls", f"http://127.0.0.1:{self.port}",
             "--listen-peer-urls", f"http://127.0.0.1:{peer}",
             "--initial-advertise-peer-urls", f"http://127.0.0.1:{peer}",
             "--initial-cluster", f"default=http://127.0.0.1:{peer}"],
            stdout=self.log, stderr=subprocess.STDOUT)
        wait_for("etcd", lambda: "true" in http_get(f"http://127.0.0.1:{self.port}/health"))

    def requests(self):
        """Request messages etcd has received: one per unary call (a range, a transaction),
        one per message on a stream (a lease renewal, a watch creation)."""
        return sum(float(line.rsplit(" ", 1)[1])
                   for line in http_get(f"http://127.0.0.1:{self.port}/metrics").splitlines()
                   if line.startswith("grpc_server_msg_received_total{"))

    def stop(self):
        self.proc.kill()
        self.proc.wait()
        self.log.close()


class Broker:
    def __init__(self, strata, work, node, metadata, env=None):
        self.strata, self.node, self.metadata = strata, node, metadata
        self.data = os.path.join(work, f"data{node}")
        self.kafka, self.http, self.repl, self.admin = (free_port() for _ in range(4))
        self.env = dict(os.environ, NO_COLOR="1", **(env or {}))
        self.logfile = os.path.join(work, f"strata{node}.log")
        self.proc = None

    def start(self, wait=True):
        log = open(self.logfile, "a")
        self.started = time.monotonic()
        self.proc = subprocess.Popen(
            [self.strata, "serve", "--node-id", str(self.node), "--metadata", self.metadata,
             "--listen", f"127.0.0.1:{self.kafka}", "--http", f"127.0.0.1:{self.http}",
             "--replication-listen", f"127.0.0.1:{self.repl}",
             "--admin-listen", f"127.0.0.1:{self.admin}", "--data-dir", self.data],
            stdout=log, stderr=subprocess.STDOUT, env=self.env)
        log.close()
        if wait:
            self.wait_ready()

    def wait_ready(self):
        def ready():
            if self.proc.poll() is not None:
                raise SystemExit(f"broker {self.node} exited; see {self.logfile}")
            return http_get(f"http://127.0.0.1:{self.http}/readyz") is not None
        wait_for(f"broker {self.node}", ready, timeout=60)

    @property
    def bootstrap(self):
        return f"127.0.0.1:{self.kafka}"

    def kill(self):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait()

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.kill()


def partition_states(bootstrap, topic):
    """{partition: (leader, isr)} as the broker at `bootstrap` answers Metadata, and the
    controller it names."""
    admin = AdminClient({"bootstrap.servers": bootstrap, "log_level": 2})
    md = admin.list_topics(topic, timeout=2)
    if md.topics[topic].error is not None:
        return None, md.controller_id
    return {i: (p.leader, sorted(p.isrs)) for i, p in md.topics[topic].partitions.items()}, md.controller_id


def failover_trial(strata, build, trial, work, idle_s):
    etcd = Etcd(work)
    metadata = f"etcd://127.0.0.1:{etcd.port}/bench"
    brokers = {n: Broker(strata, work, n, metadata) for n in (1, 2, 3)}
    try:
        for b in brokers.values():
            b.start()
        bootstrap = ",".join(b.bootstrap for b in brokers.values())
        topic = "failover"
        admin = AdminClient({"bootstrap.servers": bootstrap, "log_level": 2})
        # One partition led by each broker: the victim's is the one written to.
        admin.create_topics([NewTopic(topic, 3, 3, config={"min.insync.replicas": "2"})])[topic].result(30)

        def settled(b):
            states, _ = partition_states(b.bootstrap, topic)
            return states and len(states) == 3 and all(isr == [1, 2, 3] for _, isr in states.values()) \
                and sorted(leader for leader, _ in states.values()) == [1, 2, 3]
        for b in brokers.values():
            wait_for("a full ISR", lambda b=b: settled(b))
        states, controller = partition_states(bootstrap, topic)
        # Even trials kill a broker that is not the controller, odd ones the controller
        # (its own session and the controllership must move as well).
        victim = controller if trial % 2 else next(n for n in brokers if n != controller)
        partition = next(i for i, (leader, _) in states.items() if leader == victim)
        # Idle: no client connected.
        time.sleep(2)
        before, t0 = etcd.requests(), time.monotonic()
        time.sleep(idle_s)
        idle_rate = (etcd.requests() - before) / (time.monotonic() - t0)

        acks, errors = [], []
        stop = threading.Event()

        def produce():
            producer = Producer({"bootstrap.servers": bootstrap, "acks": "all", "linger.ms": 0,
                                 "enable.idempotence": False, "log_level": 2, **CLIENT_DEBUG})

            def done(err, _msg, sent):
                (errors if err else acks).append((time.monotonic(), sent))
            while not stop.is_set():
                sent = time.monotonic()
                producer.produce(topic, b"x" * 100, partition=partition,
                                 on_delivery=lambda err, msg, sent=sent: done(err, msg, sent))
                producer.flush(30)
            producer.flush(30)

        thread = threading.Thread(target=produce, daemon=True)
        thread.start()
        wait_for("acknowledgements", lambda: len(acks) > 50, timeout=30)
        time.sleep(1)
        leader = victim
        survivor = next(b for n, b in brokers.items() if n != leader)
        killed_at = time.monotonic()
        brokers[leader].kill()
        new_leader_at = None
        deadline = killed_at + 30
        # A record sent before the kill may be acknowledged by the old leader and its
        # report delivered just after the kill: only records sent after it count.
        while time.monotonic() < deadline and (new_leader_at is None or not [a for a in acks if a[1] >= killed_at]):
            if new_leader_at is None:
                try:
                    states, _ = partition_states(survivor.bootstrap, topic)
                    if states and states[partition][0] not in (-1, leader):
                        new_leader_at = time.monotonic()
                except Exception:
                    pass
            time.sleep(0.02)
        stop.set()
        thread.join(40)
        after = [t for t, sent in acks if sent >= killed_at]
        result = {
            "scenario": "failover", "build": build, "trial": trial, "partition": partition,
            "idle_etcd_requests_per_s": round(idle_rate, 2),
            "killed": leader, "killed_was_controller": leader == controller,
            "kill_to_new_leader_s": round(new_leader_at - killed_at, 3) if new_leader_at else None,
            "kill_to_ack_s": round(after[0] - killed_at, 3) if after else None,
            "errors": len(errors),
        }
        print(json.dumps(result), flush=True)
    finally:
        for b in brokers.values():
            b.kill()
        etcd.stop()


def restart_trial(strata, bench, build, trial, work, history_mib):
    etcd = Etcd(work)
    metadata = f"etcd://127.0.0.1:{etcd.port}/bench"
    objects = os.path.join(work, "objects")
    env = {"STRATA_OBJECT_STORE": f"file://{objects}", "STRATA_REMOTE_STORAGE_ENABLE": "true",
           "STRATA_REMOTE_UPLOAD_INTERVAL_MS": "200"}
    broker = Broker(strata, work, 1, metadata, env)
    segment = 64 << 20
    try:
        broker.start()
        topic = "history"
        records = history_mib * 1024
        subprocess.run([bench, "produce", "--bootstrap", broker.bootstrap, "--topic", topic,
                        "--records", str(records), "--record-size", "1024", "--acks", "1",
                        "--topic-config", f"segment.bytes={segment}"],
                       check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

        def uploaded():
            total = 0
            for root, _, files in os.walk(objects):
                total += sum(os.path.getsize(os.path.join(root, f)) for f in files)
            return total >= (history_mib << 20) - segment
        wait_for("the uploads", uploaded, timeout=120, every=0.5)
        time.sleep(1)  # the last manifest commit
        broker.kill()
        shutil.rmtree(broker.data)
        broker.start(wait=False)
        consumer = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": "restart",
                             "enable.auto.commit": False, "reconnect.backoff.ms": 20,
                             "reconnect.backoff.max.ms": 100, "topic.metadata.refresh.interval.ms": 100})
        consumer.assign([TopicPartition(topic, 0, 0)])
        first = None
        deadline = time.monotonic() + 60
        while first is None and time.monotonic() < deadline:
            msg = consumer.poll(0.05)
            if msg is not None and msg.error() is None:
                first = time.monotonic()
        consumer.close()
        ready = wait_for("readiness", lambda: http_get(f"http://127.0.0.1:{broker.http}/readyz") is not None)
        result = {"scenario": "restart", "build": build, "trial": trial, "history_mib": history_mib,
                  "start_to_first_record_s": round(first - broker.started, 3) if first else None,
                  "ready": bool(ready)}
        print(json.dumps(result), flush=True)
    finally:
        broker.kill()
        etcd.stop()


def cleanup(work, keep):
    if keep:
        print(f"kept {work}", file=sys.stderr)
    else:
        shutil.rmtree(work, ignore_errors=True)


def main():
    # Stopped by SIGTERM: the `finally` blocks still stop the servers started.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--build", action="append", required=True,
                        help="NAME=STRATA_BIN; give two to interleave them")
    parser.add_argument("--bench", required=True, help="strata-bench binary")
    parser.add_argument("--trials", type=int, default=3)
    parser.add_argument("--restart-trials", type=int, default=2)
    parser.add_argument("--idle-s", type=float, default=5.0)
    parser.add_argument("--history-mib", type=int, default=512)
    parser.add_argument("--keep-work", action="store_true", help="keep the logs and data dirs")
    args = parser.parse_args()
    builds = [b.split("=", 1) for b in args.build]
    for trial in range(args.trials):
        for name, strata in builds:
            work = tempfile.mkdtemp(prefix="strata-failover.")
            try:
                failover_trial(strata, name, trial, work, args.idle_s)
            finally:
                cleanup(work, args.keep_work)
    for trial in range(args.restart_trials):
        for name, strata in builds:
            work = tempfile.mkdtemp(prefix="strata-restart.")
            try:
                restart_trial(strata, args.bench, name, trial, work, args.history_mib)
            finally:
                cleanup(work, args.keep_work)


if __name__ == "__main__":
    sys.exit(main())
