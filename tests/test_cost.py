"""The cost ledger (docs/cost.md) against what really happened: a tiered broker behind a
recording proxy in front of moto, and a three-broker cluster with two racks.

- The per-topic request counts by billing class that `strata cost --json` and
  `strata_cost_requests_total` report equal the requests the proxy saw on that topic's
  keys (multipart uploads, single PUTs and remote-read GETs), and the dollars equal those
  counts times the prices of a custom `cost_price_table`; bytes read equal the bodies of
  the GETs the proxy answered; a projection on minutes of data is shown, marked
  `(< 1 h of data)`, and not judged against the budget (judging is unit-tested).
- Replication from a leader of another rack is counted as inter-zone bytes (exactly the
  partition's log bytes); from a leader of the same rack, nothing.
- Client records cross zones when the client's zone is known (Fetch `client.rack`, or
  `strata_az=` in `client.id`) and is not the broker's `rack`.
- A bad price table or budget is refused with the setting's name.
- Diskless topics pay for the shared objects they are in, split by their bytes: the
  topics' counts add up to the requests the proxy saw on shared objects."""

from __future__ import annotations

import json
import subprocess
import threading

from clients import Rec, confluent_consume, confluent_produce, create_topic
from confluent_kafka.admin import NewTopic
from replication import Cluster
from servers import RecordingProxy, StrataBroker, s3_env, strata_binary, wait_until

KiB = 1024
MiB = 1024 * KiB

# S3's billing classes, by the operation the proxy names (DELETE and abort are free).
PUT_CLASS = {"PutObject", "CopyObject", "CreateMultipartUpload", "UploadPart", "UploadPartCopy",
             "CompleteMultipartUpload", "ListObjectsV2", "ListObjects", "ListMultipartUploads", "ListParts"}
GET_CLASS = {"GetObject", "HeadObject"}
# Round numbers so dollars are easy to check: $1 a PUT, $0.10 a GET, nothing else.
PRICES = "put_per_1000 = 1000.0\nget_per_1000 = 100.0\nstorage_per_gb_month = 0\ninter_zone_per_gb = 0\n"


def cli_json(admin: str, *args: str):
    result = subprocess.run([str(strata_binary()), *args, "--admin", admin, "--json"],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def proxy_counts(proxy: RecordingProxy, topic: str) -> tuple[int, int]:
    """(PUT-class, GET-class) requests the proxy saw on `topic`'s objects."""
    with proxy.lock:
        requests = list(proxy.requests)
    mine = [op for _, op, key in requests if f"topics/{topic}." in key]
    return sum(op in PUT_CLASS for op in mine), sum(op in GET_CLASS for op in mine)


def ledger_counts(b: StrataBroker, topic: str) -> tuple[float, float]:
    return (b.metric("strata_cost_requests_total", topic=topic, **{"class": "put"}) or 0,
            b.metric("strata_cost_requests_total", topic=topic, **{"class": "get"}) or 0)


def test_request_counts_and_dollars_equal_what_the_store_saw(bucket, broker):
    proxy = RecordingProxy(bucket.moto.port, bucket.name)
    try:
        env = s3_env(proxy.endpoint, bucket.name, remote_upload_interval_ms=200, log_housekeeping_interval_ms=200,
                     remote_upload_part_bytes=5 * MiB, remote_chunk_bytes=64 * KiB)
        env["STRATA_COST_PRICE_TABLE"] = PRICES
        b = broker(env=env)
        tiered = {"remote.storage.enable": "true", "retention.ms": "-1", "retention.bytes": "-1"}
        # Small segments, local copies dropped: single PUTs, then a replay from the bucket.
        create_topic(b.bootstrap, "ledger", 1, tiered | {
            "segment.bytes": str(32 * KiB), "local.retention.bytes": str(32 * KiB), "cost.budget.usd.month": "1"})
        # One segment above a part: a multipart upload (create, 2 parts, complete).
        create_topic(b.bootstrap, "big", 1, tiered | {
            "segment.bytes": str(6 * MiB), "cost.budget.usd.month": "1000000000"})
        small = [Rec(partition=0, key=b"k%d" % i, value=bytes([i % 251]) * 1000) for i in range(300)]
        confluent_produce(b.bootstrap, "ledger", small, "none", **{"batch.size": 8192})
        confluent_produce(b.bootstrap, "big", [Rec(partition=0, key=None, value=bytes(950_000)) for _ in range(7)],
                          "none")

        def uploaded(topic: str, end: int) -> bool:
            return (b.metric("strata_remote_log_end_offset", topic=topic, partition="0") or 0) >= end

        wait_until("the small topic's segments to be uploaded", lambda: uploaded("ledger", 250), timeout=120)
        wait_until("the big topic's sealed segment to be uploaded", lambda: uploaded("big", 6), timeout=120)
        wait_until("local copies of the small topic to go", lambda: b.local_segments("ledger", 0)[0] > 100, timeout=60)
        # The replay: the small topic's history is only in the bucket.
        assert len(confluent_consume(b.bootstrap, "ledger", 1)) == len(small)

        # Read-ahead may still be fetching: wait until the ledger has caught up with the
        # proxy (both count each request once; they differ only while one is in flight).
        for topic in ("ledger", "big"):
            wait_until(f"the ledger to count what the proxy saw for {topic}",
                       lambda: ledger_counts(b, topic) == proxy_counts(proxy, topic), timeout=30)
        puts, gets = proxy_counts(proxy, "ledger")
        big_puts, big_gets = proxy_counts(proxy, "big")
        assert puts >= 8 and gets >= 1, (puts, gets)
        with proxy.lock:
            big_ops = [op for _, op, key in proxy.requests if "topics/big." in key]
        assert big_ops.count("CreateMultipartUpload") == 1 and big_ops.count("UploadPart") == 2, big_ops
        assert big_puts == 4 and big_gets == 0, (big_puts, big_gets)

        report = cli_json(b.admin, "cost")
        topics = {t["topic"]: t for t in report["topics"]}
        for topic, (p, g) in (("ledger", (puts, gets)), ("big", (big_puts, big_gets))):
            total = topics[topic]["since_start"]
            assert (total["put_requests"], total["get_requests"]) == (p, g), (topic, total, (p, g))
            # Dollars are counts × prices: $1 a PUT, $0.10 a GET, storage and transfer free.
            assert abs(total["put_requests_usd"] - p * 1.0) < 1e-9, total
            assert abs(total["get_requests_usd"] - g * 0.1) < 1e-9, total
            assert abs(total["total_usd"] - (p + g * 0.1)) < 1e-9, total
            assert topics[topic]["last_hour"]["put_requests"] == p
            usd = b.metric("strata_cost_estimated_usd_total", topic=topic, item="put_requests")
            assert abs(usd - p) < 1e-9, usd
        assert report["brokers"][0]["prices"]["put_per_1000"] == 1000.0
        # Bytes read back: exactly the bodies of the GETs the proxy answered; stored bytes:
        # the manifest's.
        with proxy.lock:
            got = sum(n for key, n in proxy.get_bytes if "topics/ledger." in key)
        assert got > 0
        wait_until("the ledger to count the bytes the proxy returned",
                   lambda: b.metric("strata_cost_read_bytes_total", topic="ledger") == got, timeout=30)
        ledger_now = {t["topic"]: t for t in cli_json(b.admin, "cost")["topics"]}["ledger"]
        assert ledger_now["since_start"]["read_bytes"] == got, (ledger_now["since_start"], got)
        def stored_matches() -> bool:
            manifest = b.metric("strata_remote_bytes", topic="ledger", partition="0") or 0
            return manifest > 0 and b.metric("strata_cost_stored_bytes", topic="ledger") == manifest

        wait_until("the stored bytes to reach the ledger", stored_matches, timeout=30)

        # Budgets: $1 a month is far below a projection of hundreds of PUTs at $1 each
        # scaled to a month, but the projection covers minutes, not the hour budgets are
        # judged on (the unit tests judge them with a test clock): shown, marked, not judged.
        wait_until("the projection", lambda: (b.metric("strata_cost_projected_usd_month", topic="ledger") or 0) > 1,
                   timeout=30)
        assert b.metric("strata_cost_budget_exceeded", topic="ledger") == 0
        assert b.metric("strata_cost_budget_exceeded", topic="big") == 0
        assert "exceeds its cost.budget.usd.month" not in b.log_text()
        ledger_now = {t["topic"]: t for t in cli_json(b.admin, "cost")["topics"]}["ledger"]
        assert 0 < ledger_now["projection_covered_ms"] < 3_600_000, ledger_now
        table = subprocess.run([str(strata_binary()), "cost", "--admin", b.admin], capture_output=True, text=True,
                               timeout=60).stdout.splitlines()
        assert table[0].split()[:4] == ["TOPIC", "LAST_HOUR", "LAST_DAY", "MONTH(PROJECTED)"], table
        row = next(line for line in table if line.startswith("ledger "))
        assert "(< 1 h of data)" in row and "EXCEEDED" not in row, table

        # A negative budget is refused, naming the config.
        try:
            create_topic(b.bootstrap, "bad-budget", 1, {"cost.budget.usd.month": "-1"})
            raise AssertionError("a negative budget was accepted")
        except Exception as e:  # noqa: BLE001 - the client's error type varies
            assert "cost.budget.usd.month" in str(e), e
    finally:
        proxy.stop()


def test_a_bad_price_table_is_refused_at_start(tmp_path, strata_bin):
    b = StrataBroker(tmp_path / "strata", env={"STRATA_COST_PRICE_TABLE": "put_per_1000 = -1"})
    b.spawn()
    try:
        assert b.proc.wait(timeout=30) != 0
        assert "cost_price_table" in b.log_text() and "put_per_1000" in b.log_text(), b.log_tail()
    finally:
        b.kill9()


def test_inter_zone_bytes_count_replication_across_racks_only(broker, etcd):
    racks = {1: "az-a", 2: "az-a", 3: "az-b"}
    cluster = Cluster(broker, etcd, racks=racks, env={"STRATA_LOG_HOUSEKEEPING_INTERVAL_MS": "200"})
    topics = ["zones-0", "zones-1", "zones-2"]
    admin = cluster.admin()
    for future in admin.create_topics([NewTopic(t, 1, 3) for t in topics], operation_timeout=30).values():
        future.result(timeout=60)
    for topic in topics:
        cluster.wait_isr(topic, 3)
        confluent_produce(cluster.bootstrap, topic, [Rec(partition=0, key=None, value=bytes(2000)) for _ in range(50)],
                          "none")
    leaders = {t: cluster.leader(t, 0) for t in topics}
    # Both cases happen: a follower in the leader's zone, and one in the other zone.
    assert any(racks[leader] == "az-a" for leader in leaders.values()), leaders

    def log_bytes(topic: str) -> float:
        return cluster.brokers[leaders[topic]].metric("strata_log_size_bytes", topic=topic, partition="0") or 0

    for topic, leader in leaders.items():
        wait_until(f"{topic}'s log size to be reported", lambda: log_bytes(topic) >= 50 * 2000, timeout=60)
        for node, b in cluster.brokers.items():
            counted = lambda: b.metric("strata_cost_inter_zone_bytes_total", topic=topic)  # noqa: E731
            if node != leader and racks[node] != racks[leader]:
                # Every batch was fetched across zones: exactly the leader's log bytes.
                wait_until(f"node {node} to count {topic}'s replication across zones",
                           lambda: counted() == log_bytes(topic), timeout=60)
            else:
                assert counted() is None, (topic, leader, node, counted())
    report = cli_json(cluster.brokers[1].admin, "cost")
    summed = {t["topic"]: t["since_start"]["inter_zone_bytes"] for t in report["topics"]}
    for topic, leader in leaders.items():
        crossing = sum(1 for node in racks if node != leader and racks[node] != racks[leader])
        assert summed.get(topic, 0) == crossing * log_bytes(topic), (topic, summed, leaders)


def test_client_bytes_count_when_the_clients_zone_is_known_and_another(broker):
    b = broker(args=["--rack", "az-a"], env={"STRATA_LOG_HOUSEKEEPING_INTERVAL_MS": "200"})
    for topic in ("far", "near"):
        create_topic(b.bootstrap, topic, 1)
    records = lambda: [Rec(partition=0, key=None, value=bytes(1000)) for _ in range(20)]  # noqa: E731
    confluent_produce(b.bootstrap, "far", records(), "none", **{"client.id": "app,strata_az=az-b"})
    confluent_produce(b.bootstrap, "near", records(), "none", **{"client.id": "app,strata_az=az-a"})

    def size(topic: str) -> float:
        return b.metric("strata_log_size_bytes", topic=topic, partition="0") or 0

    def crossed(topic: str) -> float | None:
        return b.metric("strata_cost_inter_zone_bytes_total", topic=topic)

    wait_until("the log sizes", lambda: size("far") >= 20_000 and size("near") >= 20_000, timeout=30)
    # The producer in az-b sent every batch across zones; the one in az-a none.
    assert crossed("far") == size("far")
    assert crossed("near") is None
    # Consumers: no zone, or the broker's zone, cross nothing; a consumer with
    # client.rack=az-b gets the whole log across zones.
    assert len(confluent_consume(b.bootstrap, "near", 1)) == 20
    assert len(confluent_consume(b.bootstrap, "near", 1, **{"client.rack": "az-a"})) == 20
    assert crossed("near") is None
    assert len(confluent_consume(b.bootstrap, "near", 1, **{"client.rack": "az-b"})) == 20
    assert crossed("near") >= size("near"), (crossed("near"), size("near"))


def test_a_failed_multipart_upload_counts_what_was_sent_and_its_retry(bucket, broker):
    """The first UploadPart is refused (403): the broker aborts that upload and uploads the
    segment again on a later pass. The ledger counts each attempt as the store saw it: the
    failed upload's create and the part it sent, then the whole retried upload."""
    proxy = RecordingProxy(bucket.moto.port, bucket.name, fail_upload_parts=1)
    try:
        env = s3_env(proxy.endpoint, bucket.name, remote_upload_interval_ms=200, log_housekeeping_interval_ms=200,
                     remote_upload_part_bytes=5 * MiB)
        env["STRATA_COST_PRICE_TABLE"] = PRICES
        b = broker(env=env)
        create_topic(b.bootstrap, "retried", 1, {"remote.storage.enable": "true", "retention.ms": "-1",
                                                 "retention.bytes": "-1", "segment.bytes": str(6 * MiB)})
        confluent_produce(b.bootstrap, "retried",
                          [Rec(partition=0, key=None, value=bytes(950_000)) for _ in range(7)], "none")
        wait_until("the sealed segment to be uploaded despite the refused part",
                   lambda: (b.metric("strata_remote_log_end_offset", topic="retried", partition="0") or 0) >= 6,
                   timeout=120)
        with proxy.lock:
            ops = [op for _, op, key in proxy.requests if "topics/retried." in key]
        assert ops.count("CreateMultipartUpload") == 2, ops
        assert ops.count("CompleteMultipartUpload") == 1, ops
        assert ops.count("UploadPart") >= 3, ops
        wait_until("the ledger to count what the proxy saw, the failed attempt included",
                   lambda: ledger_counts(b, "retried") == proxy_counts(proxy, "retried"), timeout=30)
        puts, _ = proxy_counts(proxy, "retried")
        assert puts == sum(op in PUT_CLASS for op in ops), (puts, ops)
        report = {t["topic"]: t for t in cli_json(b.admin, "cost")["topics"]}
        assert report["retried"]["since_start"]["put_requests"] == puts
    finally:
        proxy.stop()


def shared_and_topic_counts(requests, topics: tuple[str, ...]) -> tuple[int, int]:
    """(PUT-class, GET-class) requests on shared objects and on `topics`' own objects."""
    mine = [op for _, op, key in requests
            if "/diskless/" in f"/{key}" or any(f"topics/{t}." in key for t in topics)]
    return sum(op in PUT_CLASS for op in mine), sum(op in GET_CLASS for op in mine)


def test_diskless_topics_pay_for_the_shared_objects_they_are_in(bucket, broker):
    """A shared object holds several topics: its PUT and GETs are split between them by
    their bytes in it. The split is not visible to the store, but the sum is: the
    diskless topics' ledger counts add up to the requests the proxy saw on shared
    objects (and their own merged objects), for PUTs as they are written and for GETs
    when a restarted broker (its write cache empty) reads them back."""
    proxy = RecordingProxy(bucket.moto.port, bucket.name)
    try:
        env = s3_env(proxy.endpoint, bucket.name, remote_chunk_bytes=64 * KiB)
        env["STRATA_COST_PRICE_TABLE"] = PRICES
        b = broker(env=env)
        diskless = {"diskless.enable": "true"}
        for topic in ("dl-one", "dl-a", "dl-b"):
            create_topic(b.bootstrap, topic, 1, diskless)

        # One topic alone: every shared object is all its own, so the counts are exact.
        start = proxy.mark()
        confluent_produce(b.bootstrap, "dl-one", [Rec(partition=0, key=None, value=bytes(1000)) for _ in range(200)],
                          "none", **{"linger.ms": 50})
        puts, _ = shared_and_topic_counts(proxy.since(start), ("dl-one",))
        assert puts >= 1
        wait_until("the ledger to count dl-one's shared-object PUTs",
                   lambda: ledger_counts(b, "dl-one")[0] == puts, timeout=30)

        # Two topics in the same objects, three times the bytes for one: split by bytes,
        # summing to what the store saw. Each producer writes in small pieces over a few
        # append intervals so both topics share objects.
        start = proxy.mark()
        before = {t: ledger_counts(b, t)[0] for t in ("dl-a", "dl-b")}
        writers = [threading.Thread(target=confluent_produce, args=(b.bootstrap, t, [
            Rec(partition=0, key=None, value=bytes(size)) for _ in range(100)], "none"),
            kwargs={"linger.ms": 100}) for t, size in (("dl-a", 3000), ("dl-b", 1000))]
        for w in writers:
            w.start()
        for w in writers:
            w.join(timeout=120)
        shared_puts, _ = shared_and_topic_counts(proxy.since(start), ("dl-a", "dl-b"))

        def split() -> tuple[float, float]:
            return tuple(ledger_counts(b, t)[0] - before[t] for t in ("dl-a", "dl-b"))

        wait_until("the two topics' PUT shares to add up to the PUTs the proxy saw",
                   lambda: abs(sum(split()) - shared_puts) < 1e-6, timeout=30)
        a, bb = split()
        assert a > bb > 0, (a, bb)

        # Reads after a restart: the write cache is gone, the objects are read back with
        # ranged GETs, attributed through the view's runs (counters restart at zero).
        b.restart()
        start = proxy.mark()
        assert len(confluent_consume(b.bootstrap, "dl-one", 1)) == 200
        _, gets = shared_and_topic_counts(proxy.since(start), ("dl-one",))
        assert gets >= 1
        wait_until("the ledger to count dl-one's GETs of its shared objects",
                   lambda: ledger_counts(b, "dl-one")[1] == gets, timeout=30)
        report = {t["topic"]: t for t in cli_json(b.admin, "cost")["topics"]}
        total = report["dl-one"]["since_start"]
        assert abs(total["get_requests_usd"] - gets * 0.1) < 1e-9, total
        assert b.metric("strata_cost_requests_total", topic="(shared)", **{"class": "put"}) in (None, 0)
    finally:
        proxy.stop()
