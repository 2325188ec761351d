"""Replication between brokers over mutual TLS (issue 16): three brokers on one etcd, each
with its own certificate from one CA (`ssl_cert_file`, `ssl_ca_file`), replicate an
acks=all topic; a fourth broker whose certificate comes from another CA registers in the
cluster but cannot join the replication stream: it never receives a record and leaves
the ISR of every partition it follows.
"""

from __future__ import annotations

import time

from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, NewTopic

from clients import QUIET
from security import Pki
from servers import wait_until

SESSION_TIMEOUT_MS = 3000
LAG_TIME_MS = 3000


def broker_env(cert, ca_path) -> dict[str, str]:
    return {
        "STRATA_SSL_CERT_FILE": str(cert.cert_path),
        "STRATA_SSL_KEY_FILE": str(cert.key_path),
        "STRATA_SSL_CA_FILE": str(ca_path),
        "STRATA_BROKER_SESSION_TIMEOUT_MS": str(SESSION_TIMEOUT_MS),
        "STRATA_REPLICA_LAG_TIME_MAX_MS": str(LAG_TIME_MS),
        "STRATA_METADATA_REFRESH_INTERVAL_MS": "250",
        "STRATA_OFFSETS_TOPIC_REPLICATION_FACTOR": "1",
    }


def partitions(bootstrap: str, topic: str) -> dict[int, object]:
    md = AdminClient({**QUIET, "bootstrap.servers": bootstrap}).list_topics(topic=topic, timeout=15)
    return dict(md.topics[topic].partitions)


def produce(bootstrap: str, topic: str, count: int, partitions: int) -> None:
    """`count` records, spread over every partition."""
    errors = []
    p = Producer({**QUIET, "bootstrap.servers": bootstrap, "acks": "all", "linger.ms": 5})
    for i in range(count):
        p.produce(topic, f"v{i}".encode(), partition=i % partitions,
                  callback=lambda err, _msg: errors.append(err) if err else None)
    assert p.flush(60) == 0, "records still in flight after 60 s"
    assert not errors, f"acks=all produce failed: {errors[:3]}"


def test_brokers_replicate_over_mtls_and_a_broker_with_a_foreign_certificate_is_kept_out(broker, etcd, tmp_path):
    pki = Pki(tmp_path / "pki")
    metadata = etcd.url(f"mtls-{int(time.time() * 1000)}")
    brokers = {}
    for node in (1, 2, 3):
        cert = pki.root.issue(f"CN=broker-{node},O=Strata Tests", file_stem=f"broker-{node}", server=True,
                              client=True, ips=("127.0.0.1",), dns=("localhost",))
        brokers[node] = broker(metadata=metadata, env=broker_env(cert, pki.root.cert_path),
                               args=["--node-id", str(node)], name=f"node{node}")
    bootstrap = ",".join(b.bootstrap for b in brokers.values())
    wait_until("three brokers listed",
               lambda: len(AdminClient({**QUIET, "bootstrap.servers": bootstrap}).list_topics(timeout=10).brokers) == 3,
               30)

    # Three brokers with certificates from the cluster's CA replicate.
    admin = AdminClient({**QUIET, "bootstrap.servers": bootstrap})
    admin.create_topics([NewTopic("replicated", 3, 3)])["replicated"].result(30)
    wait_until("every partition of `replicated` has 3 in-sync replicas",
               lambda: all(len(p.isrs) == 3 and p.leader > 0 for p in partitions(bootstrap, "replicated").values()),
               60)
    produce(bootstrap, "replicated", 300, 3)

    def log_size(b, topic: str, partition: int) -> int:
        return sum(f.stat().st_size for f in b.partition_dir(topic, partition).glob("*.log"))

    for partition in range(3):
        wait_until(f"every broker holds the same records of replicated/{partition}",
                   lambda partition=partition: len({log_size(b, "replicated", partition)
                                                    for b in brokers.values()} - {0}) == 1
                   and all(log_size(b, "replicated", partition) > 0 for b in brokers.values()),
                   30)
    assert all(len(p.isrs) == 3 for p in partitions(bootstrap, "replicated").values()), \
        "a replica left the ISR while every broker had a valid certificate"

    # A fourth broker with a certificate from another CA: it joins the cluster through
    # etcd, but the leaders refuse its TLS handshakes, so it cannot follow anything.
    stranger_cert = pki.other.issue("CN=broker-4,O=Strata Tests", file_stem="broker-4", server=True, client=True,
                                    ips=("127.0.0.1",), dns=("localhost",))
    stranger = broker(metadata=metadata, env=broker_env(stranger_cert, pki.other.cert_path),
                      args=["--node-id", "4"], name="node4")
    wait_until("four brokers listed",
               lambda: len(AdminClient({**QUIET, "bootstrap.servers": bootstrap}).list_topics(timeout=10).brokers) == 4,
               30)
    admin.create_topics([NewTopic("everywhere", 8, 4)])["everywhere"].result(30)
    produce(bootstrap, "everywhere", 400, 8)

    def stranger_out_where_others_lead():
        parts = partitions(bootstrap, "everywhere")
        led_by_others = [p for p in parts.values() if p.leader in (1, 2, 3)]
        return led_by_others and all(4 in p.replicas and 4 not in p.isrs for p in led_by_others)

    wait_until("broker 4 out of the ISR of every partition another broker leads", stranger_out_where_others_lead,
               LAG_TIME_MS / 1000 + 30)
    for partition, p in partitions(bootstrap, "everywhere").items():
        if p.leader == 4:
            continue
        logs = list(stranger.partition_dir("everywhere", partition).glob("*.log"))
        assert all(f.stat().st_size == 0 for f in logs), \
            f"broker 4 received records of everywhere/{partition} without a valid certificate"
    # The three brokers with valid certificates still replicate each other.
    assert all(len(p.isrs) == 3 for p in partitions(bootstrap, "replicated").values())
