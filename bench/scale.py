#!/usr/bin/env python3
"""The partition-scale scenario for one partition count (bench/scale.sh drives it).

Creates PARTITIONS partitions (topics of --per-topic partitions, 100 topics per
CreateTopics request) on a fresh broker, then restarts that data directory with the
baseline and the new binary in turn (interleaved) and times how long each takes to listen
and to serve metadata with a leader for every partition; counts descriptors, memory, idle
CPU and the etcd requests of each phase. Prints one JSON line per measurement.

    bench/scale.py --base OLD --new NEW --partitions 5000 [--etcd http://H:P] [--base-create]
"""
import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

from confluent_kafka.admin import AdminClient, NewTopic


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def listening(port):
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return True
    except OSError:
        return False


def fds(pid):
    return len(os.listdir(f"/proc/{pid}/fd"))


def rss_mib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def cpu_s(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def etcd_counts(url):
    """Requests etcd served so far (by gRPC method) and its database size."""
    if not url:
        return {}
    text = urllib.request.urlopen(f"{url}/metrics", timeout=5).read().decode()
    counts = {"db_bytes": 0}
    for line in text.splitlines():
        if line.startswith("grpc_server_handled_total{"):
            method = line.split('grpc_method="', 1)[1].split('"', 1)[0]
            counts[method] = counts.get(method, 0) + float(line.rsplit(" ", 1)[1])
        elif line.startswith("etcd_mvcc_db_total_size_in_use_in_bytes "):
            counts["db_bytes"] = float(line.rsplit(" ", 1)[1])
    return counts


def etcd_delta(before, after):
    keys = ("Range", "Txn", "Put", "LeaseKeepAlive", "LeaseGrant", "DeleteRange")
    delta = {k: int(after.get(k, 0) - before.get(k, 0)) for k in keys}
    delta["requests"] = sum(delta.values())
    return delta


class Broker:
    def __init__(self, args, strata, prefix, data):
        self.args, self.strata, self.prefix, self.data = args, strata, prefix, data
        self.kafka, self.http = free_port(), free_port()
        self.repl, self.admin = free_port(), free_port()
        self.proc = None

    def start(self):
        env = dict(os.environ, NO_COLOR="1", STRATA_MAX_PARTITIONS="1000000")
        cmd = [self.strata, "serve", "--data-dir", self.data,
               "--listen", f"127.0.0.1:{self.kafka}", "--http", f"127.0.0.1:{self.http}",
               "--replication-listen", f"127.0.0.1:{self.repl}",
               "--admin-listen", f"127.0.0.1:{self.admin}"]
        if self.args.etcd:
            cmd += ["--metadata", f"etcd://{self.args.etcd.split('//', 1)[1]}/{self.prefix}"]
        os.makedirs(self.data, exist_ok=True)
        log = open(os.path.join(os.path.dirname(self.data), "strata.log"), "ab")
        started = time.monotonic()
        self.proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=log)
        deadline = started + 300
        while not listening(self.kafka):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the broker did not listen (exit status {self.proc.poll()})")
            time.sleep(0.01)
        return started, time.monotonic()

    def stop(self):
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(timeout=120)

    def kill(self):
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def bootstrap(self):
        return f"127.0.0.1:{self.kafka}"


def serving_all(bootstrap, partitions, deadline):
    """Waits until Metadata lists `partitions` partitions, each with a leader."""
    client = AdminClient({"bootstrap.servers": bootstrap})
    while time.monotonic() < deadline:
        try:
            md = client.list_topics(timeout=10)
            count = sum(
                1
                for name, t in md.topics.items()
                if name.startswith("scale-")
                for p in t.partitions.values()
                if p.leader >= 0
            )
            if count >= partitions:
                return time.monotonic()
        except Exception:
            pass
        time.sleep(0.05)
    raise RuntimeError("Metadata never listed every partition")


def create(args, strata, prefix, data):
    """Creates the partitions on a fresh broker; returns (result, broker stopped)."""
    broker = Broker(args, strata, prefix, data)
    result = {}
    try:
        broker.start()
        serving_all(broker.bootstrap(), 0, time.monotonic() + 60)
        topics = args.partitions // args.per_topic
        admin = AdminClient({"bootstrap.servers": broker.bootstrap()})
        before = etcd_counts(args.etcd)
        t0 = time.monotonic()
        for first in range(0, topics, 100):
            names = [f"scale-{i}" for i in range(first, min(topics, first + 100))]
            futures = admin.create_topics(
                [NewTopic(n, args.per_topic, 1) for n in names],
                request_timeout=600, operation_timeout=600)
            for f in futures.values():
                f.result()
        result["create_s"] = round(time.monotonic() - t0, 3)
        if args.etcd:
            result["etcd_create"] = etcd_delta(before, etcd_counts(args.etcd))
        pid = broker.proc.pid
        result["fds"] = fds(pid)
        result["rss_mib"] = round(rss_mib(pid), 1)
        broker.stop()
    finally:
        broker.kill()
    return result


def restart(args, strata, prefix, data):
    """Starts a broker on an existing data directory: time to listen, to serve metadata
    for every partition, then descriptors, memory and the idle cost."""
    broker = Broker(args, strata, prefix, data)
    result = {}
    try:
        before = etcd_counts(args.etcd)
        try:
            started, listening_at = broker.start()
        except RuntimeError as e:
            return {"error": str(e)}
        served = serving_all(broker.bootstrap(), args.partitions, started + 600)
        result["listen_s"] = round(listening_at - started, 3)
        result["metadata_s"] = round(served - started, 3)
        pid = broker.proc.pid
        result["fds_serving"] = fds(pid)
        cpu0, idle_before = cpu_s(pid), etcd_counts(args.etcd)
        time.sleep(args.idle_s)
        result["idle_cpu_pct"] = round(100 * (cpu_s(pid) - cpu0) / args.idle_s, 1)
        if args.etcd:
            after = etcd_counts(args.etcd)
            result["etcd_restart"] = etcd_delta(before, idle_before)
            result["etcd_idle_per_s"] = round(
                etcd_delta(idle_before, after)["requests"] / args.idle_s, 1)
            result["etcd_db_bytes"] = int(after.get("db_bytes", 0))
        result["fds_idle"] = fds(pid)
        result["rss_mib"] = round(rss_mib(pid), 1)
        broker.stop()
    finally:
        broker.kill()
    return result


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--base", required=True, help="the baseline strata binary")
    p.add_argument("--new", required=True, help="the strata binary under test")
    p.add_argument("--partitions", type=int, required=True)
    p.add_argument("--per-topic", type=int, default=10)
    p.add_argument("--etcd", default="", help="http://HOST:PORT of an etcd to use")
    p.add_argument("--restarts", type=int, default=3, help="restarts of each binary")
    p.add_argument("--base-create", action="store_true",
                   help="also time creation with the baseline (slow: minutes at 5000)")
    p.add_argument("--no-base-restart", action="store_true",
                   help="restart only the new binary (the baseline needs 3 descriptors per "
                        "partition and minutes of fsyncs at 5000)")
    p.add_argument("--idle-s", type=float, default=5)
    args = p.parse_args()
    tag = f"scale-{os.getpid()}-{int(time.time() * 1000)}"
    common = {"partitions": args.partitions, "metadata": "etcd" if args.etcd else "embedded"}

    def emit(**fields):
        print(json.dumps({**common, **fields}), flush=True)

    work = tempfile.mkdtemp(prefix="strata-scale.")
    try:
        if args.base_create:
            data = os.path.join(work, "base")
            emit(phase="create", label="before", **create(args, args.base, tag + "-b", data))
            shutil.rmtree(data, ignore_errors=True)
        data = os.path.join(work, "data")
        emit(phase="create", label="after", **create(args, args.new, tag, data))
        # A directory the new binary created holds no segment files until a partition is
        # written; the baseline creates them when it opens it. One untimed baseline start
        # first, so its timed restarts open what it would have created itself (and the new
        # binary's restarts open directories that hold segment files, as written ones do).
        if not args.no_base_restart:
            restart(args, args.base, tag, data)
        # Restarts of the same data directory, interleaved: before, after, after, before...
        for r in range(args.restarts):
            order = [("before", args.base), ("after", args.new)]
            if args.no_base_restart:
                order = order[1:]
            for label, strata in order if r % 2 == 0 else reversed(order):
                emit(phase="restart", label=label, run=r, **restart(args, strata, tag, data))
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
