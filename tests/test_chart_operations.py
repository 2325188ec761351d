"""Day-2 operations of the Helm chart, run as the StatefulSet runs them: the chart's own
scripts (prestop.sh, start.sh), rendered by `helm template`, against real brokers on etcd.

- A rolling restart of 3 brokers (replication factor 3, min.insync.replicas 2) under an
  acks=all producer: each broker's preStop waits on its /safe-to-stop, and the next
  broker goes only once the restarted one answers its readiness probe, /readyz/in-sync.
  A preStop that runs while another broker is down waits, and lets its broker stop once
  that one is back in sync. No produce is answered NOT_ENOUGH_REPLICAS (the producer
  does not retry, so every error a broker answers reaches a delivery report), and
  nothing acknowledged is lost: the leader serves it and every replica's segments are
  the leader's, byte for byte.
  The gate refuses while another broker is down; the readiness gate lets the first
  broker of a cold start (every broker down) become ready.
- Scaling down: a broker an operator drained stays drained through its preStop and any
  restart of its container (only a drain by the preStop hook itself is undone at start);
  a removed broker's volume claim is retained unless storage.whenScaled says Delete,
  and Delete refuses replicas 0.
- Upgrading from the previous chart: its values (--reuse-values) render, and its pods'
  environment runs the new scripts; the preStop gate holds only on 503, and a broker
  that never answers holds it 10 s per attempt.
- The replication defaults derive from the broker count at install and never go up on
  an upgrade (lookup, against a fake API server); a one-broker release's configuration
  starts a broker on which a topic created without a replication factor and a consumer
  group work; a replication factor above the broker count is refused.
"""

from __future__ import annotations

import subprocess
import threading
import time
import tomllib
import uuid
from pathlib import Path

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import NewTopic

from clients import QUIET
from replication import Cluster, History, read_replica
from servers import free_port, http_get, wait_until
import yaml
from test_deploy import container, helm_binary, helm_template, pod_env, run_script, write_stub

# The values of a production-like release (the rendered scripts do not depend on them
# beyond the names of the pods).
S3 = "objectStore.url=s3://strata-ci/operations"


def render(*sets: str) -> list[dict]:
    result = helm_template(sets=[S3, *sets])
    assert result.returncode == 0, result.stderr
    return [d for d in yaml.safe_load_all(result.stdout) if d]


def broker_set(docs: list[dict]) -> dict:
    (sts,) = [d for d in docs if d["kind"] == "StatefulSet"
              and d["spec"]["template"]["metadata"]["labels"].get("app.kubernetes.io/component") == "broker"]
    return sts


def scripts(docs: list[dict]) -> dict[str, str]:
    (cm,) = [d for d in docs if d["kind"] == "ConfigMap" and "prestop.sh" in d.get("data", {})]
    return cm["data"]


def real_strata(strata_bin: Path, tmp_path: Path) -> Path:
    """A PATH directory whose `strata` is the broker binary under test."""
    directory = tmp_path / "real"
    directory.mkdir(exist_ok=True)
    if not (directory / "strata").exists():
        (directory / "strata").symlink_to(strata_bin)
    return directory


def pod_of(sts: dict, node: int, metadata: str, http_port: int, marker: Path, **more: str) -> dict[str, str]:
    """The environment the kubelet gives broker `node`'s container (its pod ordinal is
    its node id: one StatefulSet, base 0), pointed at this machine's etcd and broker."""
    env = pod_env(container(sts), f"{sts['metadata']['name']}-{node}")
    assert env["STRATA_NODE_ID_BASE"] == "0"
    return env | {"STRATA_METADATA": metadata, "HTTP_PORT": str(http_port), "DRAIN_MARKER": str(marker), **more}


def http_status(url: str) -> int:
    return http_get(url, timeout=5)[0]


def probe_ready(data: dict[str, str], http_port: int) -> bool:
    """The chart's readiness probe with rollGate: its ready.sh, run as the kubelet runs
    it (exit 0: ready)."""
    result = subprocess.run(["/bin/bash", "-c", data["ready.sh"]], env={"PATH": "/usr/bin:/bin",
                            "HTTP_PORT": str(http_port)}, capture_output=True, text=True, timeout=30)
    return result.returncode == 0


# ---------------------------------------------------------------------------------------
# Rolling restart gated on in-sync replicas
# ---------------------------------------------------------------------------------------


class CountingWriter(threading.Thread):
    """An acks=all producer that never retries: every error a broker answers ends in a
    delivery report, counted by code here, so none can be missed. Acknowledged records go
    to `history` (replication.History)."""

    def __init__(self, bootstrap: str, topic: str, partitions: int, history: History):
        super().__init__(daemon=True)
        self.producer = Producer({**QUIET, "bootstrap.servers": bootstrap, "acks": "all",
                                  "enable.idempotence": False, "retries": 0, "linger.ms": 5,
                                  "message.timeout.ms": 60000, "max.in.flight.requests.per.connection": 1})
        self.topic, self.partitions, self.history = topic, partitions, history
        self.errors: dict[str, int] = {}
        self.halt = threading.Event()

    def delivered(self, err, msg) -> None:
        if err is not None:
            with self.history.lock:
                self.errors[err.name()] = self.errors.get(err.name(), 0) + 1
        self.history.record(err, msg)

    def run(self) -> None:
        seq = [0] * self.partitions
        sent = 0
        while not self.halt.is_set():
            for _ in range(20):
                p = sent % self.partitions
                self.producer.produce(self.topic, value=f"{p}:{seq[p]}".encode(), partition=p,
                                      on_delivery=self.delivered)
                seq[p] += 1
                sent += 1
            self.producer.poll(0)
            time.sleep(0.05)
        self.producer.flush(90)

    def stop(self) -> None:
        self.halt.set()
        self.join(timeout=120)
        assert not self.is_alive(), "the producer did not finish flushing"


def test_roll_gated_on_in_sync_replicas_loses_nothing(broker, etcd, strata_bin, tmp_path):
    docs = render()
    sts, data = broker_set(docs), scripts(docs)
    c = container(sts)
    assert c["readinessProbe"]["exec"]["command"] == ["/bin/bash", "/etc/strata/ready.sh"]
    assert "prestop.sh" in c["lifecycle"]["preStop"]["exec"]["command"][2]
    # The grace period covers the gate, the broker's shutdown and a margin.
    gate_s = int(pod_env(c, "x-0")["ROLL_GATE_TIMEOUT_S"])
    assert gate_s > 0 and sts["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] >= gate_s + 30

    # A long lag time: with the ISR at the minimum during each stop, one follower
    # dropped for lagging on a loaded machine would be a refusal the gate cannot
    # prevent (the docs qualify the guarantee by it).
    cluster = Cluster(broker, etcd, size=3, env={"STRATA_MIN_INSYNC_REPLICAS": "2",
                                                 "STRATA_REPLICA_LAG_TIME_MAX_MS": "30000"})
    topic, partitions = "rolled", 6
    admin = cluster.admin()
    admin.create_topics([NewTopic(topic, partitions, 3)], operation_timeout=30)[topic].result(timeout=60)
    cluster.wait_isr(topic, 3)
    path = real_strata(strata_bin, tmp_path)

    history = History()
    writer = CountingWriter(cluster.bootstrap, topic, partitions, history)
    writer.start()
    wait_until("records acknowledged before the roll", lambda: len(history.acked) > 500, timeout=60)
    # The StatefulSet's order: highest ordinal first, one at a time.
    for node in (3, 2, 1):
        b = cluster.brokers[node]
        env = pod_of(sts, node, cluster.metadata, b.http_port, tmp_path / f"marker-{node}")
        acked_before = len(history.acked)
        result, _ = run_script(data["prestop.sh"], env, tmp_path, path, timeout=gate_s + 30)
        assert result.returncode == 0, result.stdout + result.stderr
        assert f"broker {node} may stop" in result.stdout, result.stdout
        b.restart()  # SIGTERM (exit code 0 asserted), then the container starts again
        wait_until(f"broker {node} ready and back in every ISR (the readiness probe)",
                   lambda: probe_ready(data, b.http_port), timeout=120, interval=0.5)
        assert http_status(b.http_url + "/readyz/in-sync") == 200
        # A rejoined broker is in the ISR of every partition it holds, in its own view
        # (the one its readiness was judged from).
        isr = {p: set(x.isrs) for p, x in cluster.partitions(topic, node=node).items()}
        assert all(node in members for members in isr.values()), isr
        wait_until(f"the producer going on (acknowledged {acked_before} before; errors so far {writer.errors})",
                   lambda: len(history.acked) > acked_before + 200, timeout=60)

    # The gate has to wait: broker 3 is stopped (it will be catching up when it starts
    # again) when broker 2's preStop runs. The hook waits, and lets broker 2 stop only
    # once broker 3 is back in sync, within its timeout.
    b2, b3 = cluster.brokers[2], cluster.brokers[3]
    assert b3.stop() == 0
    wait_until("broker 2's gate closed, in its own view",
               lambda: http_status(b2.http_url + "/safe-to-stop") == 503, timeout=30, interval=0.5)
    env = pod_of(sts, 2, cluster.metadata, b2.http_port, tmp_path / "marker-2")
    hook = subprocess.Popen(["/bin/bash", "-c", data["prestop.sh"]], text=True, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, env={"PATH": f"{path}:/usr/bin:/bin", **env})
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(hook.stdout), daemon=True)
    reader.start()
    wait_until("broker 2's preStop waiting", lambda: any("prestop: waiting:" in line for line in lines),
               timeout=30)
    assert hook.poll() is None, lines
    cluster.start(3)
    assert hook.wait(timeout=gate_s + 30) == 0
    reader.join(timeout=10)
    output = "".join(lines)
    assert "broker 2 may stop (no partition falls below" in output and "still not safe" not in output, output
    acked_before = len(history.acked)
    b2.restart()
    wait_until("broker 2 ready and back in every ISR (the readiness probe)",
               lambda: probe_ready(data, b2.http_port), timeout=120, interval=0.5)
    wait_until(f"the producer going on (errors so far {writer.errors})",
               lambda: len(history.acked) > acked_before + 200, timeout=60)
    writer.stop()

    assert len(history.acked) > 1000, f"only {len(history.acked)} records acknowledged"
    refused = {k: v for k, v in writer.errors.items() if k.startswith("NOT_ENOUGH_REPLICAS")}
    assert not refused, f"acks=all produce refused during the roll: {writer.errors}"
    cluster.wait_isr(topic, 3)
    # Every acknowledged record is at its acknowledged offset in the log the leader
    # serves, and each replica's segments on disk are that log, byte for byte. (Without
    # retries or idempotence a client may send a batch twice, so duplicates are not
    # checked: replication's own tests do, with an idempotent producer.)
    for p in range(partitions):
        acked = history.acked_in(p)
        leader = cluster.partitions(topic)[p].leader
        at = dict(read_replica(cluster, leader, topic, p))
        lost = [v for v, o in acked.items() if at.get(o) != v]
        assert not lost, f"partition {p} (leader {leader}): {len(lost)} acknowledged records lost, e.g. {lost[:3]}"
        wait_until(f"partition {p}: every replica's segments equal to the leader's",
                   lambda: all(cluster.log_bytes(n, topic, p) == cluster.log_bytes(leader, topic, p)
                               for n in cluster.brokers), timeout=60, interval=0.5)

    # The negative: with broker 3 down, broker 2's preStop waits (here 4 s), naming the
    # partitions that would fall below min.insync.replicas, and stops only at the end.
    cluster.brokers[3].stop()
    (status, body), = wait_until("broker 2's gate closed, in its own view",
                                 lambda: (a := http_get(b2.http_url + "/safe-to-stop", timeout=5))[0] == 503 and (a,),
                                 timeout=30, interval=0.5)
    assert f"{topic}/" in body and "min.insync.replicas 2" in body, (status, body)
    env = pod_of(sts, 2, cluster.metadata, b2.http_port, tmp_path / "marker-2", ROLL_GATE_TIMEOUT_S="4")
    started = time.monotonic()
    result, _ = run_script(data["prestop.sh"], env, tmp_path, path, timeout=60)
    assert result.returncode == 0, result.stderr
    assert "prestop: waiting:" in result.stdout and "still not safe after 4 s" in result.stdout, result.stdout
    assert "would fall below min.insync.replicas" in result.stdout and "1 would be left" in result.stdout, \
        result.stdout
    assert time.monotonic() - started >= 4
    # The count above can see a refusal: with broker 2 stopped too, the same producer
    # is answered NOT_ENOUGH_REPLICAS.
    b2.stop()
    wait_until("one in-sync replica left",
               lambda: all(list(x.isrs) == [1] for x in cluster.partitions(topic, node=1).values()), timeout=30)
    lonely = CountingWriter(cluster.brokers[1].bootstrap, topic, partitions, History())
    for p in range(partitions):
        lonely.producer.produce(topic, value=b"refused", partition=p, on_delivery=lonely.delivered)
    assert lonely.producer.flush(60) == 0
    assert lonely.errors.get("NOT_ENOUGH_REPLICAS") == partitions, lonely.errors
    # Brokers 3 and 2 back and in sync: broker 2 may stop again.
    cluster.start(2)
    cluster.start(3)
    wait_until("broker 3 back in every ISR",
               lambda: http_status(cluster.brokers[3].http_url + "/readyz/in-sync") == 200, timeout=120, interval=0.5)
    wait_until("broker 2 safe to stop again", lambda: http_status(b2.http_url + "/safe-to-stop") == 200, timeout=60)

    # A cold start does not deadlock: every broker stopped (3 first, so the ISRs end as
    # [1]), broker 3 alone comes up ready, as OrderedReady needs the first pod to be
    # before it creates the next. Its partitions have no live leader to catch up from.
    for node in (3, 2, 1):
        cluster.brokers[node].stop()
    cluster.start(3)
    wait_until("broker 3, alone, ready by its readiness probe",
               lambda: probe_ready(data, cluster.brokers[3].http_port), timeout=60, interval=0.5)


# ---------------------------------------------------------------------------------------
# Scaling down
# ---------------------------------------------------------------------------------------


def test_gates_can_be_turned_off():
    sts = broker_set(render("rollGate.enabled=false"))
    c = container(sts)
    assert c["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert "lifecycle" not in c, "a preStop hook with neither drainOnShutdown nor rollGate"
    assert sts["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] == 30 + 30
    gated = broker_set(render("rollGate.timeoutSeconds=120", "drainOnShutdown.enabled=true",
                              "drainOnShutdown.timeoutSeconds=200"))
    assert gated["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] == 120 + 200 + 30 + 30


def test_scaling_down_is_a_values_change_and_retains_the_removed_claim():
    sts = broker_set(render("replicas=5"))
    assert sts["spec"]["replicas"] == 5
    # A scale that keeps the derived settings restarts no broker (same ConfigMap
    # checksum); one that changes them does.
    checksum = lambda docs: broker_set(docs)["spec"]["template"]["metadata"]["annotations"]["checksum/config"]  # noqa: E731
    assert checksum(render("replicas=4")) == checksum(render("replicas=3"))
    assert checksum(render("replicas=2")) != checksum(render("replicas=3"))
    # Retain by default: a broker removed without a completed drain keeps its volume.
    assert sts["spec"]["persistentVolumeClaimRetentionPolicy"] == {"whenScaled": "Retain", "whenDeleted": "Retain"}
    deleted = broker_set(render("storage.whenScaled=Delete", "storage.whenDeleted=Delete"))
    assert deleted["spec"]["persistentVolumeClaimRetentionPolicy"] == {"whenScaled": "Delete", "whenDeleted": "Delete"}
    # Stopping every broker: refused with Delete (every volume would go); with Retain the
    # replication defaults stay those of three brokers, not 0.
    refused = helm_template(sets=[S3, "replicas=0", "storage.whenScaled=Delete"])
    assert refused.returncode != 0 and "replicas: 0 with storage.whenScaled Delete" in refused.stderr
    stopped = tomllib.loads(strata_toml(render("replicas=0")))
    assert (stopped["default_replication_factor"], stopped["offsets_topic_replication_factor"],
            stopped["min_insync_replicas"]) == (3, 3, 2)
    assert broker_set(render("replicas=0", "config.min_insync_replicas=2"))["spec"]["replicas"] == 0
    refused = helm_template(sets=[S3, "storage.whenScaled=Keep"])
    assert refused.returncode != 0 and 'storage.whenScaled "Keep": use Retain or Delete' in refused.stderr


# ---------------------------------------------------------------------------------------
# Upgrading from the chart before the roll gate (11eb128)
# ---------------------------------------------------------------------------------------

PREVIOUS_CHART = "11eb128"


def previous_chart(tmp_path: Path) -> Path:
    """The chart as it was before the roll gate and the drain marker."""
    repo = Path(__file__).resolve().parent.parent
    out = tmp_path / "previous"
    out.mkdir()
    archive = subprocess.run(["git", "-C", str(repo), "archive", PREVIOUS_CHART, "deploy/helm/strata"],
                             check=True, capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(out)], input=archive, check=True)
    return out / "deploy" / "helm" / "strata"


def test_previous_release_values_render(tmp_path):
    """`helm upgrade --reuse-values` from the previous chart renders the new templates
    with the previous release's values alone (the new chart's defaults are ignored), so
    storage.whenScaled and rollGate are missing. The templates render (no nil pointer),
    the claims are retained, the gate stays off (plain /readyz, no preStop without
    drainOnShutdown)."""
    import shutil

    chart = tmp_path / "reused"
    shutil.copytree(Path(__file__).resolve().parent.parent / "deploy" / "helm" / "strata", chart)
    (chart / "values.yaml").write_text((previous_chart(tmp_path) / "values.yaml").read_text())
    result = subprocess.run([helm_binary(), "template", "strata", str(chart), "--namespace", "strata", "--set", S3],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    docs = [d for d in yaml.safe_load_all(result.stdout) if d]
    sts = broker_set(docs)
    assert sts["spec"]["persistentVolumeClaimRetentionPolicy"] == {"whenScaled": "Retain", "whenDeleted": "Retain"}
    c = container(sts)
    assert c["readinessProbe"]["httpGet"]["path"] == "/readyz" and "lifecycle" not in c
    assert pod_env(c, "x-0")["ROLL_GATE_TIMEOUT_S"] == "0"


@pytest.mark.parametrize("drain", [True, False])
def test_new_scripts_run_in_previous_revision_pods(tmp_path, drain):
    """During an upgrade's rollout the pods not yet replaced keep the previous chart's
    environment but read the new ConfigMap's scripts (mounted as a directory). With
    that environment start.sh still starts the broker (no unbound variable under set
    -u), undrains at every start as the previous chart did when drainOnShutdown was on,
    and prestop.sh still drains."""
    chart = previous_chart(tmp_path)
    old = subprocess.run([helm_binary(), "template", "strata", str(chart), "--namespace", "strata",
                          "--set", S3, "--set", f"drainOnShutdown.enabled={str(drain).lower()}"],
                         capture_output=True, text=True)
    assert old.returncode == 0, old.stderr
    old_env = pod_env(container(broker_set([d for d in yaml.safe_load_all(old.stdout) if d])), "strata-2")
    assert "DRAIN_MARKER" not in old_env and "HTTP_PORT" not in old_env
    data = scripts(render())
    stub_dir = tmp_path / "stub"
    write_stub(stub_dir)
    env = old_env | {"STRATA_CONFIG_FILE": str(tmp_path / "unused.toml"), "STRATA_METADATA": "http://127.0.0.1:1/x"}
    result, calls = run_script(data["start.sh"], env, tmp_path, stub_dir)
    assert result.returncode == 0 and "unbound" not in result.stderr, result.stderr
    assert [c["args"][0] for c in calls] == (["undrain", "serve"] if drain else ["serve"]), calls
    result, calls = run_script(data["prestop.sh"], env, tmp_path, stub_dir)
    assert result.returncode == 0 and "unbound" not in result.stderr, result.stderr
    assert [c["args"][0] for c in calls] == (["drain"] if drain else []), calls


@pytest.mark.parametrize("in_sync, plain, ready", [
    (200, 200, True), (503, 200, False),
    # An image older than the gate: /readyz decides.
    (404, 200, True), (404, 503, False),
])
def test_readiness_probe_falls_back_to_readyz(in_sync, plain, ready):
    """ready.sh, the readiness probe with rollGate, against a broker answering
    /readyz/in-sync and /readyz as given: an image without /readyz/in-sync (404) is
    judged by /readyz instead of never becoming ready."""
    import http.server

    class Broker(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response({"/readyz/in-sync": in_sync, "/readyz": plain}.get(self.path, 404))
            self.end_headers()

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Broker)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        assert probe_ready(scripts(render()), server.server_port) == ready
    finally:
        server.shutdown()
    # Nothing listening: not ready.
    assert not probe_ready(scripts(render()), free_port())


def test_prestop_gate_blocks_only_on_503(tmp_path):
    """An image older than the gate answers /safe-to-stop 404: the stop goes ahead at
    once instead of waiting the whole timeout. A broker that accepts the connection but
    never answers holds the hook for at most one 10 s exchange per attempt, and the hook
    then lets it stop (no answer: not serving)."""
    import http.server
    import socket

    class Old(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(404)
            self.end_headers()

        def log_message(self, *args):
            pass

    data = scripts(render())
    env = {"POD_NAME": "strata-1", "STRATA_NODE_ID_BASE": "0", "ROLL_GATE_TIMEOUT_S": "300",
           "STRATA_METADATA": "http://127.0.0.1:1/x"}
    server = http.server.HTTPServer(("127.0.0.1", 0), Old)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        result, _ = run_script(data["prestop.sh"], env | {"HTTP_PORT": str(server.server_port)}, tmp_path,
                               tmp_path, timeout=60)
    finally:
        server.shutdown()
    assert result.returncode == 0, result.stderr
    assert "broker 1 may stop (/safe-to-stop answered 404" in result.stdout, result.stdout
    assert "waiting" not in result.stdout
    # Listening, never accepting or answering: the kernel completes the connection, the
    # request goes unanswered.
    hung = socket.socket()
    hung.bind(("127.0.0.1", 0))
    hung.listen(16)
    try:
        result, _ = run_script(data["prestop.sh"], env | {"HTTP_PORT": str(hung.getsockname()[1])}, tmp_path,
                               tmp_path, timeout=60)
    finally:
        hung.close()
    assert result.returncode == 0, result.stderr
    assert "broker 1 may stop (no answer" in result.stdout, result.stdout


def test_an_operator_drained_broker_stays_drained(broker, etcd, strata_bin, tmp_path):
    """The documented scale-down: drain the highest broker, lower `replicas`. Its preStop
    (drainOnShutdown on) finds it drained already and leaves no marker, so neither a
    restart of its container nor a later start undrains it. A broker the preStop itself
    drained is undrained at its next start (tests/test_deploy.py runs that case)."""
    docs = render("drainOnShutdown.enabled=true")
    sts, data = broker_set(docs), scripts(docs)
    cluster = Cluster(broker, etcd, size=3, env={"STRATA_DEFAULT_REPLICATION_FACTOR": "2",
                                                 "STRATA_OFFSETS_TOPIC_REPLICATION_FACTOR": "2"})
    topic = "scaled"
    admin = cluster.admin()
    admin.create_topics([NewTopic(topic, 6, 2)], operation_timeout=30)[topic].result(timeout=60)
    wait_until("replicas on broker 3", lambda: any(3 in p.replicas for p in cluster.partitions(topic).values()),
               timeout=30)
    path = real_strata(strata_bin, tmp_path)
    b3 = cluster.brokers[3]

    # The operator's drain, through the admin API (kubectl exec <pod> -- strata drain --node 3).
    drained = run_script(f"exec strata drain --admin {cluster.brokers[1].admin} --node 3 --timeout-ms 60000\n",
                         {}, tmp_path, path, timeout=90)[0]
    assert drained.returncode == 0, drained.stdout + drained.stderr
    assert all(3 not in p.replicas for p in cluster.partitions(topic).values())

    # `replicas: 2`: the StatefulSet stops pod 3; its preStop runs.
    # A marker left by an undrain that failed at an earlier start goes too: kept, it
    # would make the next start undo the operator's drain.
    marker = tmp_path / "volume-3" / "drained-by-prestop"
    marker.parent.mkdir()
    marker.write_text("3\n")
    env = pod_of(sts, 3, cluster.metadata, b3.http_port, marker)
    result, _ = run_script(data["prestop.sh"], env, tmp_path, path, timeout=90)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "was already marked draining" in result.stdout and "broker 3 may stop" in result.stdout, result.stdout
    assert not marker.exists(), "the preStop left a marker on an operator's drain"
    b3.stop()

    # Its container starts again (a crash loop, or a scale-up before the cleanup): start.sh
    # runs no undrain, and the broker serves, drained.
    stub_dir = tmp_path / "hybrid"
    write_stub(stub_dir, real=strata_bin)
    result, calls = run_script(data["start.sh"], env | {"STRATA_CONFIG_FILE": str(tmp_path / "unused.toml")},
                               tmp_path, stub_dir, timeout=60)
    assert result.returncode == 0, result.stderr
    assert [c["args"][0] for c in calls] == ["serve"], calls
    b3.start()
    assert etcd.get_prefix(f"{cluster.prefix}/draining/"), "broker 3 lost its drain mark"
    more = "scaled-after"
    admin.create_topics([NewTopic(more, 6, 2)], operation_timeout=30)[more].result(timeout=60)
    placed = wait_until("the new topic's partitions", lambda: (p := cluster.partitions(more)) and len(p) == 6 and p,
                        timeout=30)
    assert all(3 not in p.replicas for p in placed.values()), "a drained broker received new replicas"

    # A marker that cannot be written (a full or read-only volume; here a missing
    # directory): the drain fails before it marks the broker, which would otherwise stay
    # drained after its restart with nothing to undrain it.
    b2 = cluster.brokers[2]
    unwritable = tmp_path / "no-such-volume" / "drained-by-prestop"
    env_unwritable = pod_of(sts, 2, cluster.metadata, b2.http_port, unwritable, DRAIN_TIMEOUT_MS="3000")
    result, _ = run_script(data["prestop.sh"], env_unwritable, tmp_path, path, timeout=90)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "write the drain marker" in result.stderr and "the drain did not finish" in result.stdout, \
        result.stdout + result.stderr
    assert list(etcd.get_prefix(f"{cluster.prefix}/draining/")) == [f"{cluster.prefix}/draining/3"]

    # The negative: a preStop drain of a broker nobody drained writes the marker, and the
    # next start undrains it.
    marker2 = tmp_path / "volume-2" / "drained-by-prestop"
    marker2.parent.mkdir()
    env2 = pod_of(sts, 2, cluster.metadata, b2.http_port, marker2, DRAIN_TIMEOUT_MS="3000")
    result, _ = run_script(data["prestop.sh"], env2, tmp_path, path, timeout=90)
    assert result.returncode == 0, result.stdout + result.stderr
    node, token = marker2.read_text().split()
    assert node == "2" and len(token) >= 16, result.stdout
    result, calls = run_script(data["start.sh"], env2 | {"STRATA_CONFIG_FILE": str(tmp_path / "unused.toml")},
                               tmp_path, stub_dir, timeout=60)
    assert [c["args"][0] for c in calls] == ["undrain", "serve"], calls
    assert not marker2.exists()
    assert list(etcd.get_prefix(f"{cluster.prefix}/draining/")) == [f"{cluster.prefix}/draining/3"]

    # An operator's drain stored while a preStop-drained broker is down is not undone by
    # its next start: the mark no longer carries the marker's token.
    result, _ = run_script(data["prestop.sh"], env2, tmp_path, path, timeout=90)
    assert result.returncode == 0 and marker2.exists(), result.stdout + result.stderr
    operator = run_script(f"exec strata drain --admin {cluster.brokers[1].admin} --node 2 --timeout-ms 1000\n",
                          {}, tmp_path, path, timeout=60)[0]
    assert "marked" in operator.stdout + operator.stderr, operator.stdout + operator.stderr
    result, calls = run_script(data["start.sh"], env2 | {"STRATA_CONFIG_FILE": str(tmp_path / "unused.toml")},
                               tmp_path, stub_dir, timeout=60)
    assert result.returncode == 0, result.stderr
    assert [c["args"][0] for c in calls] == ["undrain", "serve"], calls
    assert "marked draining again by someone else" in result.stdout, result.stdout
    assert not marker2.exists()
    assert sorted(etcd.get_prefix(f"{cluster.prefix}/draining/")) == [f"{cluster.prefix}/draining/{n}" for n in (2, 3)]


# ---------------------------------------------------------------------------------------
# Replication defaults from the broker count
# ---------------------------------------------------------------------------------------


def strata_toml(docs: list[dict]) -> str:
    return scripts(docs)["strata.toml"]


@pytest.mark.parametrize("sets, expected", [
    ([], {"default_replication_factor": 3, "offsets_topic_replication_factor": 3, "min_insync_replicas": 2}),
    (["replicas=2"], {"default_replication_factor": 2, "offsets_topic_replication_factor": 2,
                      "min_insync_replicas": 1}),
    (["replicas=1"], {"default_replication_factor": 1, "offsets_topic_replication_factor": 1,
                      "min_insync_replicas": 1}),
    # One broker in each of three zones: three brokers.
    (["replicas=1", "zones={a,b,c}"], {"default_replication_factor": 3, "offsets_topic_replication_factor": 3,
                                       "min_insync_replicas": 2}),
    (["replicas=5"], {"default_replication_factor": 3, "offsets_topic_replication_factor": 3,
                      "min_insync_replicas": 2}),
    # What the user sets stays.
    (["replicas=5", "config.default_replication_factor=5", "config.min_insync_replicas=3"],
     {"default_replication_factor": 5, "offsets_topic_replication_factor": 3, "min_insync_replicas": 3}),
])
def test_replication_defaults_follow_the_broker_count(sets, expected):
    settings = tomllib.loads(strata_toml(render(*sets)))
    assert {k: settings[k] for k in expected} == expected


class FakeKubernetes:
    """Just enough of a Kubernetes API for `helm template --dry-run=server`, so that the
    chart's `lookup` finds this release's ConfigMap from a previous install (`configmap`,
    or none): discovery of the kinds the chart renders, and GET of that ConfigMap."""

    KINDS = {"v1": [("configmaps", "ConfigMap"), ("services", "Service"), ("serviceaccounts", "ServiceAccount")],
             "apps/v1": [("statefulsets", "StatefulSet")],
             "batch/v1": [("cronjobs", "CronJob"), ("jobs", "Job")],
             "networking.k8s.io/v1": [("networkpolicies", "NetworkPolicy")],
             "policy/v1": [("poddisruptionbudgets", "PodDisruptionBudget")]}

    def __init__(self, tmp_path: Path):
        import http.server
        import json

        fake = self
        self.configmap: dict | None = None

        class Api(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                path = self.path.split("?")[0].rstrip("/")
                groups = [g for g in fake.KINDS if "/" in g]
                resources = lambda gv: {"kind": "APIResourceList", "groupVersion": gv, "resources": [  # noqa: E731
                    {"name": n, "singularName": k.lower(), "namespaced": True, "kind": k, "verbs": ["get", "list"]}
                    for n, k in fake.KINDS[gv]]}
                body = None
                if path == "/version":
                    body = {"major": "1", "minor": "30", "gitVersion": "v1.30.0"}
                elif path == "/api":
                    body = {"kind": "APIVersions", "versions": ["v1"]}
                elif path == "/apis":
                    body = {"kind": "APIGroupList", "apiVersion": "v1", "groups": [
                        {"name": g.split("/")[0], "versions": [{"groupVersion": g, "version": "v1"}],
                         "preferredVersion": {"groupVersion": g, "version": "v1"}} for g in groups]}
                elif path == "/api/v1":
                    body = resources("v1")
                elif path.startswith("/apis/") and path[len("/apis/"):] in fake.KINDS:
                    body = resources(path[len("/apis/"):])
                elif path == "/api/v1/namespaces/strata/configmaps/strata" and fake.configmap is not None:
                    body = fake.configmap
                if body is None:
                    body = {"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "NotFound", "code": 404}
                self.send_response(200 if body.get("code") != 404 else 404)
                self.send_header("Content-Type", "application/json")
                self.end_headers()
                self.wfile.write(json.dumps(body).encode())

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Api)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.kubeconfig = tmp_path / "kubeconfig"
        self.kubeconfig.write_text(yaml.safe_dump({
            "apiVersion": "v1", "kind": "Config",
            "clusters": [{"name": "fake", "cluster": {"server": f"http://127.0.0.1:{self.server.server_port}"}}],
            "users": [{"name": "fake", "user": {}}],
            "contexts": [{"name": "fake", "context": {"cluster": "fake", "user": "fake", "namespace": "strata"}}],
            "current-context": "fake"}))

    def upgrade(self, *sets: str) -> dict:
        """Renders an upgrade of release `strata` as `helm upgrade` would (lookup answered
        by this API); returns the rendered strata.toml's settings and records the new
        ConfigMap as the release's."""
        chart = Path(__file__).resolve().parent.parent / "deploy" / "helm" / "strata"
        command = [helm_binary(), "template", "strata", str(chart), "--namespace", "strata",
                   "--kubeconfig", str(self.kubeconfig), "--dry-run=server", "--disable-openapi-validation"]
        for item in (S3, *sets):
            command += ["--set", item]
        result = subprocess.run(command, capture_output=True, text=True, timeout=60)
        assert result.returncode == 0, result.stderr
        (cm,) = [d for d in yaml.safe_load_all(result.stdout)
                 if d and d["kind"] == "ConfigMap" and "strata.toml" in d.get("data", {})]
        self.record(cm)
        return tomllib.loads(cm["data"]["strata.toml"])

    def record(self, configmap: dict) -> None:
        """Makes `configmap` the one in the cluster, owned by release strata as Helm
        marks what it installs (else helm refuses to take it over)."""
        meta = configmap.setdefault("metadata", {})
        meta.setdefault("annotations", {}).update({"meta.helm.sh/release-name": "strata",
                                                   "meta.helm.sh/release-namespace": "strata"})
        meta.setdefault("labels", {})["app.kubernetes.io/managed-by"] = "Helm"
        self.configmap = configmap

    def close(self) -> None:
        self.server.shutdown()


def derived(settings: dict) -> tuple[int, int, int]:
    return (settings["default_replication_factor"], settings["offsets_topic_replication_factor"],
            settings["min_insync_replicas"])


def test_derived_replication_settings_never_go_up_on_upgrade(tmp_path):
    """An install on one broker derives 1/1; growing to three keeps 1/1 (raising
    min.insync.replicas would refuse acks=all on the topics created with one replica).
    An install on three derives 3/3/2; shrinking to two lowers it to 2/2/1, growing back
    keeps that; stopping every broker (replicas 0) keeps it too. A ConfigMap of the
    previous chart (no annotation) derives from the broker count."""
    kube = FakeKubernetes(tmp_path)
    try:
        assert derived(kube.upgrade("replicas=1")) == (1, 1, 1)  # install: nothing to look up
        assert derived(kube.upgrade("replicas=3")) == (1, 1, 1)
        kube.configmap = None
        assert derived(kube.upgrade("replicas=3")) == (3, 3, 2)
        assert derived(kube.upgrade("replicas=5")) == (3, 3, 2)
        assert derived(kube.upgrade("replicas=2")) == (2, 2, 1)
        assert derived(kube.upgrade("replicas=3")) == (2, 2, 1)
        assert derived(kube.upgrade("replicas=0")) == (2, 2, 1)
        assert derived(kube.upgrade("replicas=3")) == (2, 2, 1)
        kube.record({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "strata"}, "data": {}})
        assert derived(kube.upgrade("replicas=3")) == (3, 3, 2)
        # What `config` sets still wins.
        assert derived(kube.upgrade("replicas=3", "config.min_insync_replicas=1")) == (3, 3, 1)
    finally:
        kube.close()


@pytest.mark.parametrize("sets, name", [
    (["replicas=1", "config.default_replication_factor=3"], "default_replication_factor"),
    (["replicas=2", "config.offsets_topic_replication_factor=3"], "offsets_topic_replication_factor"),
    (["replicas=2", "config.min_insync_replicas=3"], "min_insync_replicas"),
])
def test_a_replication_factor_above_the_broker_count_is_refused(sets, name):
    result = helm_template(sets=[S3, *sets])
    assert result.returncode != 0
    assert f"config.{name}: 3 is more than the" in result.stderr and "broker(s)" in result.stderr, result.stderr


def test_single_broker_release_serves_topics_and_groups(broker, etcd, tmp_path):
    """replicas=1 on a shared object store (not the evaluation install): the rendered
    strata.toml starts a broker on etcd, which creates a topic without a replication
    factor and coordinates a consumer group (the offsets topic needs one broker)."""
    text = strata_toml(render("replicas=1"))
    # As test_deploy's rendered-configuration test: addresses and the object store move
    # to this machine by flags.
    b = broker(metadata=etcd.url(f"single-{uuid.uuid4().hex[:8]}"), config_text=text, name="single",
               args=["--object-store", f"file://{tmp_path / 'objects'}", "--node-id", "0"])
    # The fixture gives a lone broker on etcd an offsets topic of 1 through the
    # environment; without it, the file's value must do it.
    b.env.pop("STRATA_OFFSETS_TOPIC_REPLICATION_FACTOR", None)
    b.restart()
    from clients import confluent_admin

    topic = "single"
    # Replication factor -1: the broker's default_replication_factor.
    admin = confluent_admin(b.bootstrap)
    admin.create_topics([NewTopic(topic, 2, -1)], operation_timeout=30)[topic].result(timeout=60)
    producer = Producer({**QUIET, "bootstrap.servers": b.bootstrap, "acks": "all"})
    for i in range(10):
        producer.produce(topic, value=f"v{i}".encode(), partition=i % 2)
    assert producer.flush(30) == 0
    consumer = Consumer({**QUIET, "bootstrap.servers": b.bootstrap, "group.id": "single-group",
                         "auto.offset.reset": "earliest", "enable.auto.commit": False})
    try:
        consumer.subscribe([topic])
        got = []
        deadline = time.monotonic() + 60
        while len(got) < 10 and time.monotonic() < deadline:
            msg = consumer.poll(1)
            if msg is not None and not msg.error():
                got.append(msg.value())
        assert len(got) == 10, f"the group consumed {len(got)} of 10 records"
        consumer.commit(asynchronous=False)
        committed = consumer.committed([TopicPartition(topic, 0), TopicPartition(topic, 1)], timeout=30)
        assert sorted(tp.offset for tp in committed) == [5, 5]
    finally:
        consumer.close()
