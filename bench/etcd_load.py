"""What an idle cluster costs etcd: three brokers on loopback sharing one etcd, TOPICS
topics of one partition (replication factor 3) created, then the requests and bytes etcd
served in WINDOW seconds, from etcd's own /metrics.

    python3 bench/etcd_load.py [STRATA_BINARY]    # default target/release/strata

Environment: TOPICS (200), WINDOW (20). Uses tests/servers.py to run the processes (by
PID, loopback only). Prints one JSON line; asserts nothing."""

from __future__ import annotations

import json
import os
import re
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from confluent_kafka.admin import AdminClient, NewTopic  # noqa: E402

from servers import EtcdServer, StrataBroker, wait_until  # noqa: E402


def etcd_counters(endpoint: str) -> dict[str, float]:
    text = urllib.request.urlopen(f"http://{endpoint}/metrics", timeout=5).read().decode()
    out: dict[str, float] = {}
    for line in text.splitlines():
        m = re.match(r'grpc_server_handled_total\{.*grpc_method="(\w+)".*\} (\S+)', line)
        if m:
            out[m.group(1)] = out.get(m.group(1), 0) + float(m.group(2))
        m = re.match(r"etcd_network_client_grpc_sent_bytes_total (\S+)", line)
        if m:
            out["sent_bytes"] = float(m.group(1))
    return out


def main() -> None:
    binary = str(Path(sys.argv[1]).resolve()) if len(sys.argv) > 1 else str(ROOT / "target/release/strata")
    os.environ["STRATA_BIN"] = binary
    topics, window = int(os.environ.get("TOPICS", "200")), float(os.environ.get("WINDOW", "20"))
    with tempfile.TemporaryDirectory(prefix="strata-etcd-load.") as tmp:
        work = Path(tmp)
        etcd = EtcdServer(work / "etcd", "/usr/bin/etcd").start()
        brokers = []
        try:
            for node in (1, 2, 3):
                b = StrataBroker(work / f"node{node}", metadata=etcd.url("load"),
                                 args=["--node-id", str(node), "--rack", f"r{node}"])
                brokers.append(b.start())
            bootstrap = ",".join(b.bootstrap for b in brokers)
            admin = AdminClient({"bootstrap.servers": bootstrap})
            wait_until("three brokers listed", lambda: len(admin.list_topics(timeout=10).brokers) == 3, 30)
            for future in admin.create_topics([NewTopic(f"idle-{i}", 1, 3) for i in range(topics)]).values():
                future.result(timeout=60)
            time.sleep(5)  # ISRs settle
            before = etcd_counters(etcd.endpoint)
            time.sleep(window)
            after = etcd_counters(etcd.endpoint)
        finally:
            for b in brokers:
                b.stop()
            etcd.stop()
    per_s = {k: round((after.get(k, 0) - before.get(k, 0)) / window, 1) for k in sorted(after)}
    per_s = {k: v for k, v in per_s.items() if v}
    print(json.dumps({"binary": binary, "topics": topics, "window_s": window, "etcd_per_s": per_s}))


if __name__ == "__main__":
    main()
