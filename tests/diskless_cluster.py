"""A two-broker diskless cluster for one test module: brokers 1 and 2 (racks/zones r1
and r2) on one etcd prefix and one moto bucket, with fast appends and merges, and the
helpers the diskless transaction and operations tests share.

- `start_world(...)`: a generator for a module-scoped fixture; everything it started is
  stopped by PID at teardown (a broker that does not exit 0 on SIGTERM fails the module).
- `World.create(...)`: CreateTopics, then waits until both brokers list every partition.
- `World.heads(topic)`: the topic's partition heads as stored in etcd (`next`, `merged`,
  `log_start`, `open` ...), read through etcd's JSON gateway, not through a broker;
  `World.wait_merged(topic)` polls until every partition is merged up to its end with
  no run left.

Clients are steered to a broker with the zone in `client.id` (`strata_az=rN`): Metadata
then names broker N as the leader of every diskless partition (tests/test_diskless.py
checks that), so "through broker B" means what it says for produce, fetch and
ListOffsets alike.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, field

import pytest
from confluent_kafka.admin import NewTopic

from clients import QUIET, confluent_admin
from replication import Cluster
from servers import Bucket, StrataBroker, s3_env, stop_brokers, wait_until
from test_diskless import metadata_leaders

DISKLESS = {"diskless.enable": "true"}
BUCKET_PREFIX = "dl"
MERGE_WAIT_S = 60


def zone(node: int, app: str = "dl-test") -> dict[str, str]:
    """Client settings that make Metadata name broker `node` leader of diskless partitions."""
    return {"client.id": f"{app},strata_az=r{node}"}


def fast_env(bucket: Bucket, **extra) -> dict[str, str]:
    """Appends every 50 ms; runs merge after 300 ms into segments of ~1 KiB (several per
    partition); few partitions of the internal topics, no first-rebalance delay.
    Replicated topics stay local (remote storage off), replication factor 2."""
    env = s3_env(
        bucket.endpoint, bucket.name, prefix=BUCKET_PREFIX,
        diskless_append_interval_ms=50,
        diskless_merge_interval_ms=200,
        diskless_merge_bytes=1024,
        diskless_merge_max_age_ms=300,
        transaction_state_partitions=3,
        offsets_topic_partitions=3,
        group_initial_rebalance_delay_ms=0,
        default_replication_factor=2,
        **extra,
    )
    del env["STRATA_REMOTE_STORAGE_ENABLE"]
    return env


@dataclass
class World:
    cluster: Cluster
    bucket: Bucket
    etcd: object
    started: list[StrataBroker] = field(default_factory=list)

    def broker(self, node: int) -> StrataBroker:
        return self.cluster.brokers[node]

    @property
    def a(self) -> StrataBroker:
        return self.cluster.brokers[1]

    @property
    def b(self) -> StrataBroker:
        return self.cluster.brokers[2]

    def create(self, topic: str, partitions: int, config: dict[str, str] | None = None,
               replication_factor: int = -1) -> None:
        """CreateTopics (through broker 1); returns once both brokers list every
        partition with a leader. A refusal fails with the broker's error."""
        admin = confluent_admin(self.a.bootstrap)
        futures = admin.create_topics([NewTopic(topic, partitions, replication_factor, config=config or {})],
                                      operation_timeout=30)
        try:
            futures[topic].result(timeout=60)
        except Exception as e:  # noqa: BLE001 - the reason is the test's failure
            pytest.fail(f"CreateTopics {topic} ({partitions} partitions, config {config}) was refused: {e}",
                        pytrace=False)
        self.wait_listed(topic, partitions)

    def wait_listed(self, topic: str, partitions: int, timeout: float = 30) -> None:
        def listed() -> bool:
            for b in self.cluster.brokers.values():
                leaders = metadata_leaders(b.bootstrap, topic)
                if leaders is None or len(leaders) != partitions:
                    return False
            return True

        wait_until(f"{topic} with {partitions} partitions in both brokers' metadata", listed, timeout)

    def topic_id(self, topic: str) -> str:
        """32 lowercase hex digits of the topic's id (DescribeTopics)."""
        from confluent_kafka import TopicCollection

        admin = confluent_admin(self.a.bootstrap)
        described = admin.describe_topics(TopicCollection([topic]))[topic].result(timeout=30)
        tid = described.topic_id
        mask = (1 << 64) - 1
        value = ((tid.get_most_significant_bits() & mask) << 64) | (tid.get_least_significant_bits() & mask)
        return f"{value:032x}"

    def segments(self, topic: str) -> dict[str, dict]:
        """The topic's merged segment objects in the bucket (servers.Bucket.segment_objects)."""
        return self.bucket.segment_objects(topic, prefix=BUCKET_PREFIX + "/")

    def diskless_keys(self) -> dict[str, str]:
        return self.etcd.get_prefix(f"{self.cluster.prefix}/diskless/")

    def heads(self, topic: str, topic_id: str | None = None) -> tuple[dict[int, dict], dict[int, int]]:
        """({partition: head JSON}, {partition: run records left}) of `topic` in etcd."""
        tid = topic_id or self.topic_id(topic)
        root = f"{self.cluster.prefix}/diskless/"
        heads: dict[int, dict] = {}
        runs: dict[int, int] = {}
        for key, value in self.diskless_keys().items():
            parts = key[len(root):].split("/")
            if len(parts) < 3 or parts[0].replace("-", "").lower() != tid:
                continue
            partition = int(parts[1])
            if parts[2] == "head":
                heads[partition] = json.loads(value)
            elif parts[2] == "runs":
                runs[partition] = runs.get(partition, 0) + 1
        return heads, runs

    def wait_merged(self, topic: str, partitions: int, timeout: float = MERGE_WAIT_S) -> dict[int, dict]:
        """Polls etcd until every partition's head has merged == next > 0 and no run is
        left (every record is in merged segments in the bucket); returns the heads."""
        tid = self.topic_id(topic)
        last: list = [None]

        def merged():
            heads, runs = self.heads(topic, tid)
            last[0] = (heads, runs)
            done = (len(heads) == partitions and not runs
                    and all(h["next"] > 0 and h.get("merged") == h["next"] for h in heads.values()))
            return heads if done else None

        try:
            return wait_until(f"every partition of {topic} merged to its end", merged, timeout=timeout)
        except BaseException:
            print(f"{topic}: last seen heads and run counts in etcd: {last[0]}")
            raise


def start_world(tmp_path_factory, etcd, moto, env_extra: dict[str, str] | None = None, name: str = "dl"):
    """Generator for a module-scoped fixture: yields a started two-broker `World`."""
    bucket = Bucket(moto, f"strata-{name}-{uuid.uuid4().hex[:12]}")
    try:
        bucket.create()
    except Exception as e:  # noqa: BLE001
        pytest.fail(f"cannot create bucket {bucket.name} in moto at {moto.endpoint}: {e}\n{moto.log_tail()}",
                    pytrace=False)
    env = {**fast_env(bucket), **(env_extra or {})}
    root = tmp_path_factory.mktemp(name)
    started: list[StrataBroker] = []

    def factory(metadata: str, env: dict[str, str], args, name: str) -> StrataBroker:
        b = StrataBroker(root / name, metadata=metadata, env=env, args=args)
        started.append(b)
        return b.start()

    try:
        yield World(Cluster(factory, etcd, size=2, env=env), bucket, etcd, started)
    finally:
        failures = stop_brokers(started)
        bucket.delete_all()
        if failures:
            pytest.fail("\n\n".join(failures), pytrace=False)


def attach_logs(world: World, request, *others) -> World:
    """Attaches the servers' log tails to this test's failure report."""
    if not hasattr(request.node, "_strata_servers"):
        request.node._strata_servers = []
    request.node._strata_servers += [*world.started, *others]
    for b in world.cluster.brokers.values():
        if not b.is_running():
            pytest.fail(f"broker {b.bootstrap} of the module's cluster is not running:\n{b.log_tail()}",
                        pytrace=False)
    return world


__all__ = ["DISKLESS", "QUIET", "World", "attach_logs", "fast_env", "start_world", "zone"]
