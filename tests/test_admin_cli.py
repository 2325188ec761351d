"""The admin API through the `strata` CLI (status, topics, partitions, tiering, cache,
drain, decommission) against real brokers: one with tiering on a local object store, and
a three-broker cluster on etcd. Human tables are checked for their headers and rows;
numbers are checked through `--json`."""

from __future__ import annotations

import json
import subprocess
import time

from confluent_kafka import Producer

from clients import QUIET, kcat_consume_raw
from servers import strata_binary, wait_until

MiB = 1024 * 1024


def cli(admin: str, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    result = subprocess.run([str(strata_binary()), *args, "--admin", admin],
                            capture_output=True, text=True, timeout=120)
    if check:
        assert result.returncode == 0, f"strata {' '.join(args)} exited {result.returncode}:\n{result.stderr}"
    return result


def cli_json(admin: str, *args: str):
    return json.loads(cli(admin, *args, "--json").stdout)


def test_topics_tiering_and_cache_on_one_broker(broker):
    b = broker(env={"STRATA_REMOTE_UPLOAD_INTERVAL_MS": "200", "STRATA_LOG_HOUSEKEEPING_INTERVAL_MS": "200"})
    status = cli_json(b.admin, "status")
    assert [(x["node_id"], x["port"], x["controller"]) for x in status["brokers"]] == [(0, b.port, True)]
    assert status["answered_by"] == 0 and status["topics"] == 0

    created = cli_json(b.admin, "topics", "create", "cold", "--partitions", "2",
                       "--config", "remote.storage.enable=true", "--config", f"segment.bytes={MiB}",
                       "--config", f"local.retention.bytes={MiB}", "--config", "retention.ms=-1")
    assert [p["index"] for p in created["partitions"]] == [0, 1]
    assert created["configs"]["remote.storage.enable"] == "true"
    # The human table, and the errors a user gets.
    table = cli(b.admin, "topics", "list").stdout.splitlines()
    assert table[0].split() == ["TOPIC", "PARTITIONS", "RF", "INTERNAL", "CONFIGS"]
    assert table[1].split()[:3] == ["cold", "2", "1"], table
    again = cli(b.admin, "topics", "create", "cold", check=False)
    assert again.returncode == 1 and "already exists" in again.stderr, again
    bad = cli(b.admin, "topics", "create", "odd", "--config", "retention.ms=soon", check=False)
    assert bad.returncode == 1 and "retention.ms" in bad.stderr, bad
    missing = cli(b.admin, "topics", "describe", "nope", check=False)
    assert missing.returncode == 1 and "nope" in missing.stderr, missing

    altered = cli_json(b.admin, "topics", "alter", "cold", "--set", "retention.bytes=-1",
                       "--delete", "retention.ms")
    assert "retention.ms" not in altered["configs"] and altered["configs"]["retention.bytes"] == "-1"

    # About 6 MiB into partition 0: several 1 MiB segments are sealed and uploaded.
    producer = Producer({"bootstrap.servers": b.bootstrap, "linger.ms": 20, **QUIET})
    for i in range(6 * 64):
        producer.produce("cold", value=b"%06d" % i + bytes(16 * 1024 - 6), partition=0)
    assert producer.flush(60) == 0

    def uploaded():
        rows = cli_json(b.admin, "tiering", "--topic", "cold")
        row = next(r for r in rows if r["partition"] == 0)
        return row if row["remote_end_offset"] > 0 and row["local_log_start_offset"] > 0 else None

    row = wait_until("segments uploaded and local copies dropped", uploaded, 60)
    assert row["remote_storage_enable"] and row["log_start_offset"] == 0
    assert 0 < row["local_log_start_offset"] <= row["remote_end_offset"] <= row["high_watermark"] == 384
    assert row["remote_segments"] >= 3 and row["remote_bytes"] >= 3 * MiB, row
    assert row["manifest_tail_entries"] == row["remote_segments"] and row["manifest_root_bytes"] > 0
    table = cli(b.admin, "tiering").stdout.splitlines()
    assert table[0].split()[:4] == ["TOPIC", "PARTITION", "TIERED", "LOG_START"] and len(table) == 3

    before = cli_json(b.admin, "cache")[0]
    assert before["enabled"] and before["memory_capacity_bytes"] > 0
    # Reading from offset 0 goes through the bucket and the cache.
    got = kcat_consume_raw(b.bootstrap, "cold", 0)
    assert len(got) == 384
    after = cli_json(b.admin, "cache")[0]
    assert after["lookups"] > before["lookups"] and after["misses"] > before["misses"], (before, after)
    assert after["fetched_bytes"] >= row["local_log_start_offset"] * 16 * 1024

    cli(b.admin, "topics", "delete", "cold")
    assert cli_json(b.admin, "topics", "list") == []
    drain = cli(b.admin, "drain", "--node", "0", check=False)
    assert drain.returncode == 1 and "embedded" in drain.stderr, drain


def test_cluster_status_placement_and_decommission(broker, etcd):
    metadata = etcd.url(f"admin-{time.time_ns()}")
    env = {"STRATA_BROKER_SESSION_TIMEOUT_MS": "3000", "STRATA_METADATA_REFRESH_INTERVAL_MS": "250",
           "STRATA_REMOTE_UPLOAD_INTERVAL_MS": "200"}
    nodes = {n: broker(env=env, metadata=metadata, args=["--node-id", str(n), "--rack", f"r{n}"], name=f"node{n}")
             for n in (1, 2, 3)}
    admin = nodes[1].admin
    wait_until("three live brokers", lambda: len(cli_json(admin, "status")["brokers"]) == 3, 30)
    status = cli_json(admin, "status")
    assert sorted(b["admin"] for b in status["brokers"]) == sorted(n.admin for n in nodes.values())
    assert sum(b["controller"] for b in status["brokers"]) == 1

    topic = cli_json(admin, "topics", "create", "spread", "--partitions", "3", "--replication-factor", "2")
    assert all(len(p["replicas"]) == 2 for p in topic["partitions"])
    assert {p["leader"] for p in topic["partitions"]} == {1, 2, 3}, "rack-aware placement spreads leaders"
    # Tiering rows come from each partition's leader: all three, though each broker
    # leads one.
    wait_until("every leader answers", lambda: len(cli_json(admin, "tiering", "--topic", "spread")) == 3, 30)
    rows = cli(admin, "partitions", "--topic", "spread").stdout.splitlines()
    assert rows[0].split() == ["TOPIC", "PARTITION", "LEADER", "EPOCH", "REPLICAS", "ISR", "REMOVING"]
    assert len(rows) == 4

    done = cli(admin, "decommission", "--node", "3", "--timeout-ms", "90000")
    assert "drained: broker 3 holds no replicas" in done.stdout, done.stdout
    wait_until("broker 3 exits after the shutdown request", lambda: not nodes[3].is_running(), 30)
    assert nodes[3].proc.returncode == 0, nodes[3].log_tail()
    placed = cli_json(admin, "topics", "describe", "spread")
    assert all(3 not in p["replicas"] and len(p["replicas"]) == 2 for p in placed["partitions"]), placed
    wait_until("broker 3 leaves the cluster",
               lambda: [b["node_id"] for b in cli_json(admin, "status")["brokers"]] == [1, 2], 30)
    assert [b["draining"] for b in cli_json(admin, "status")["brokers"]] == [False, False]
    cli(admin, "undrain", "--node", "3")
