#!/usr/bin/env python3
"""Diskless against replicated topics, same traffic, same run: produce latency and
throughput, object-store requests, etcd writes, inter-broker bytes and the cost ledger.

Three brokers in racks r1-r3 share one etcd and one moto bucket (behind a recording
proxy that counts S3 requests). For each mode, a topic of PARTITIONS partitions gets
MIB MiB of 1 KiB records from one confluent-kafka producer (acks=all, linger.ms LINGER,
idempotence on), bootstrapped to all brokers; then one consumer reads everything back.
Replicated: replication factor 3, tiered, segment.bytes 1 MiB. Diskless:
diskless.enable=true, default append interval (250 ms).

Reported per mode: records/s and MiB/s of the produce, p50/p99/max of send → delivery
report latency, S3 requests by class (from the proxy), etcd proposals committed (etcd's
/metrics), replication bytes between brokers (strata_cost_inter_zone_bytes_total: every
broker is in its own rack, so all replication is inter-zone) per produced byte, and the
ledger's dollars (`strata cost --json`, since start, summed over brokers).

    source scripts/test-python.sh; STRATA_BIN=target/release/strata $(test_python) bench/diskless.py
    MIB=64 PARTITIONS=64 LINGER=5 ...   # the defaults: 64 MiB, 8 partitions, linger.ms 5
    RATE=4 MIB=32 ...                   # held to 4 MiB/s: latency at a fixed rate
    IDEMPOTENCE=0 INTERVAL_MS=100 ...   # a plain producer; the brokers' append interval

All processes share this machine's cores; the figures compare the modes with each other
on the same hardware. Asserts nothing; prints a markdown table."""

from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from servers import (  # noqa: E402
    Bucket, EtcdServer, MotoServer, RecordingProxy, StrataBroker, s3_env, strata_binary, wait_until)

MIB = int(os.environ.get("MIB", "64"))
PARTITIONS = int(os.environ.get("PARTITIONS", "8"))
LINGER = os.environ.get("LINGER", "5")
# IDEMPOTENCE=0: a plain acks=all producer (no cap of 5 requests in flight per connection).
IDEMPOTENCE = os.environ.get("IDEMPOTENCE", "1") != "0"
# The brokers' diskless_append_interval_ms (their default when unset).
INTERVAL_MS = os.environ.get("INTERVAL_MS")
# MiB/s the producer is held to (0: as fast as it can). At a fixed rate below what both
# modes sustain, send -> delivery latency is the broker's, not time queued in the client.
RATE = float(os.environ.get("RATE", "0"))
RECORD = 1024
PUT_CLASS = {"PutObject", "CopyObject", "CreateMultipartUpload", "UploadPart", "CompleteMultipartUpload",
             "ListObjectsV2", "ListObjects"}
GET_CLASS = {"GetObject", "HeadObject"}


def etcd_proposals(etcd: EtcdServer) -> float:
    body = urllib.request.urlopen(f"http://{etcd.endpoint}/metrics", timeout=5).read().decode()
    for line in body.splitlines():
        if line.startswith("etcd_server_proposals_committed_total"):
            return float(line.split()[-1])
    raise RuntimeError("etcd_server_proposals_committed_total not in etcd's /metrics")


def produce(bootstrap: str, topic: str) -> tuple[float, list[float]]:
    from confluent_kafka import Producer

    producer = Producer({"bootstrap.servers": bootstrap, "acks": "all", "enable.idempotence": IDEMPOTENCE,
                         "linger.ms": int(LINGER), "batch.size": 1 << 20, "log_level": 0})
    count = MIB * 1024 * 1024 // RECORD
    latencies: list[float] = []
    errors: list[str] = []
    value = os.urandom(RECORD)

    def delivered(err, msg, sent=None):
        if err is not None:
            errors.append(str(err))
        else:
            latencies.append(time.monotonic() - sent)

    started = time.monotonic()
    per_second = RATE * 1024 * 1024 / RECORD
    for i in range(count):
        if per_second > 0:
            due = started + i / per_second
            while (ahead := due - time.monotonic()) > 0:
                producer.poll(min(ahead, 0.005))
        sent = time.monotonic()
        while True:
            try:
                producer.produce(topic, value, partition=i % PARTITIONS,
                                 on_delivery=lambda err, msg, sent=sent: delivered(err, msg, sent))
                break
            except BufferError:
                producer.poll(0.01)
        producer.poll(0)
    producer.flush(300)
    elapsed = time.monotonic() - started
    if errors or len(latencies) != count:
        raise RuntimeError(f"{topic}: {len(latencies)}/{count} delivered; errors: {errors[:3]}")
    return elapsed, latencies


def consume(bootstrap: str, topic: str) -> int:
    from confluent_kafka import Consumer, TopicPartition

    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"bench-{topic}", "enable.auto.commit": False,
                         "auto.offset.reset": "earliest", "log_level": 0})
    consumer.assign([TopicPartition(topic, p, 0) for p in range(PARTITIONS)])
    want = MIB * 1024 * 1024 // RECORD
    got = 0
    deadline = time.monotonic() + 300
    while got < want and time.monotonic() < deadline:
        for msg in consumer.consume(1000, 1.0):
            if msg.error() is None:
                got += 1
    consumer.close()
    return got


def cli_cost(admin: str) -> dict:
    out = subprocess.run([str(strata_binary()), "cost", "--admin", admin, "--json"], capture_output=True,
                         text=True, timeout=120, check=True).stdout
    return {t["topic"]: t for t in json.loads(out)["topics"]}


def run_mode(name: str, configs: dict[str, str], brokers: list[StrataBroker], etcd: EtcdServer,
             proxy: RecordingProxy) -> dict:
    from confluent_kafka.admin import AdminClient, NewTopic

    bootstrap = ",".join(b.bootstrap for b in brokers)
    admin = AdminClient({"bootstrap.servers": bootstrap})
    rf = 3 if name == "replicated" else -1
    admin.create_topics([NewTopic(name, PARTITIONS, rf, config=configs)])[name].result(30)
    time.sleep(2)
    mark, proposals = proxy.mark(), etcd_proposals(etcd)
    elapsed, latencies = produce(bootstrap, name)
    produce_proposals = etcd_proposals(etcd) - proposals
    got = consume(bootstrap, name)
    time.sleep(6)  # a ledger tick (5 s) for stored bytes
    ops = [op for _, op, _ in proxy.since(mark)]
    cost = cli_cost(brokers[0].admin).get(name, {})
    produced = MIB * 1024 * 1024
    inter = sum(b.metric("strata_cost_inter_zone_bytes_total", topic=name) or 0 for b in brokers)
    latencies.sort()
    stages = {}
    if name == "diskless":
        # Mean of each stage of a diskless append over all brokers (the topic is new).
        for stage in ("wait", "put", "commit"):
            total = sum(b.metric(f"strata_diskless_append_{stage}_seconds_sum", topic=name) or 0 for b in brokers)
            count = sum(b.metric(f"strata_diskless_append_{stage}_seconds_count", topic=name) or 0 for b in brokers)
            stages[f"append {stage} mean ms (broker)"] = total / count * 1000 if count else float("nan")
    return {
        "mode": name, "records/s": len(latencies) / elapsed, "MiB/s": MIB / elapsed,
        "p50 ms": statistics.median(latencies) * 1000, "p99 ms": latencies[int(len(latencies) * 0.99)] * 1000,
        "max ms": latencies[-1] * 1000, "consumed": got,
        "PUT-class": sum(op in PUT_CLASS for op in ops), "GET-class": sum(op in GET_CLASS for op in ops),
        "PUTs/s during produce": sum(op in PUT_CLASS for op in ops) / elapsed,
        "etcd proposals/s during produce": produce_proposals / elapsed,
        "inter-broker bytes per produced byte": inter / produced,
        "ledger $ total": cost.get("since_start", {}).get("total_usd", 0.0),
        "ledger PUT-class": cost.get("since_start", {}).get("put_requests", 0.0),
        "ledger stored bytes": cost.get("stored_bytes", 0),
        **stages,
    }


def main() -> None:
    work = Path(tempfile.mkdtemp(prefix="strata-diskless-bench-"))
    procs = []
    try:
        etcd = EtcdServer(work / "etcd", shutil.which("etcd") or "etcd").start()
        procs.append(etcd)
        moto = MotoServer(work / "moto").start()
        procs.append(moto)
        bucket = Bucket(moto, "bench").create()
        proxy = RecordingProxy(moto.port, bucket.name)
        env = s3_env(proxy.endpoint, bucket.name, remote_upload_interval_ms=200,
                     diskless_append_interval_ms=INTERVAL_MS,
                     default_replication_factor=3, offsets_topic_replication_factor=3)
        brokers = []
        for node in (1, 2, 3):
            b = StrataBroker(work / f"b{node}", metadata=etcd.url("bench"), env=env,
                             args=["--node-id", str(node), "--rack", f"r{node}"])
            b.start()
            procs.append(b)
            brokers.append(b)
        rows = [run_mode("replicated", {"remote.storage.enable": "true", "segment.bytes": str(1 << 20),
                                        "min.insync.replicas": "2"}, brokers, etcd, proxy),
                run_mode("diskless", {"diskless.enable": "true"}, brokers, etcd, proxy)]
        proxy.stop()
        keys = list(dict.fromkeys(k for r in rows for k in r))
        print(f"| figure | {' | '.join(r['mode'] for r in rows)} |")
        print("|---|" + "---|" * len(rows))
        for k in keys[1:]:
            cells = [f"{r[k]:.4g}" if isinstance(r.get(k), float) else str(r.get(k, "–")) for r in rows]
            print(f"| {k} | {' | '.join(cells)} |")
        print(f"\n{MIB} MiB of 1 KiB records, {PARTITIONS} partitions, linger.ms {LINGER}, rate {RATE or 'unlimited'} MiB/s, "
              f"idempotence {IDEMPOTENCE}, diskless_append_interval_ms {INTERVAL_MS or 'default'}, binary {strata_binary()}")
    finally:
        for p in reversed(procs):
            try:
                p.stop()
            except Exception as e:  # a failed stop must not hide the others
                print(f"stopping {p.name}: {e}", file=sys.stderr)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
