"""The chart's care of etcd, and its alerts (issue 21, part "etcd").

- The snapshot CronJob renders with the brokers' service account and credentials, and its
  command, run as the pod runs it (addresses rewritten to loopback), uploads etcd
  snapshots to a bucket (moto) that `etcdctl snapshot status` reads, keeping the newest.
- The restore runbook of docs/deploy.md, run for real: broker + etcd + bucket, produce,
  snapshot, lose etcd's data, restore, restart: what the snapshot held is back.
- The etcd members' start script (etcd.yaml), run as the init container runs it against
  a real three-member etcd on loopback: a first install forms the cluster; a member whose
  volume was lost rejoins it.
- The PrometheusRule: promtool accepts it, and its expressions name only metrics that
  docs/operations.md documents (or etcd's, or kube-state-metrics' one named there).

Helpers come from test_deploy.py (rendering, pod environments, script runs).
"""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import signal
import subprocess
import time
import uuid
from pathlib import Path

import pytest
import yaml

from servers import REPO_ROOT, EtcdServer, ServerProcess, free_port, http_get, s3_env, wait_until
from test_deploy import (
    NAMESPACE,
    Rendered,
    chart_values,
    container,
    deep_merge,
    documented_metrics,
    helm_template,
    pod_env,
    render_values,
    rendered,  # noqa: F401  (fixture)
)

OPERATIONS = REPO_ROOT / "docs" / "operations.md"
DEPLOY = REPO_ROOT / "docs" / "deploy.md"


def promtool_binary() -> str:
    """The promtool scripts/install-deps.sh unpacks into the tools cache, else one on PATH."""
    tools = Path(os.environ.get("STRATA_TOOLS_DIR", Path.home() / ".cache" / "strata" / "tools"))
    cached = tools / "bin" / "promtool"
    found = str(cached) if os.access(cached, os.X_OK) else shutil.which("promtool")
    if not found:
        pytest.fail(f"promtool is not installed (scripts/install-deps.sh unpacks Debian's prometheus package into {cached})", pytrace=False)
    return found


def etcdctl() -> str:
    found = shutil.which("etcdctl")
    if not found:
        pytest.fail("etcdctl is not installed (Debian package etcd-client; scripts/install-deps.sh)", pytrace=False)
    return found


def etcd_binary() -> str:
    found = shutil.which("etcd")
    if not found:
        pytest.fail("etcd is not installed (Debian package etcd-server)", pytrace=False)
    return found


def ctl(endpoint: str, *args: str, timeout: float = 30) -> subprocess.CompletedProcess:
    env = {**os.environ, "ETCDCTL_API": "3"}
    return subprocess.run([etcdctl(), f"--endpoints={endpoint}", *args], capture_output=True, text=True,
                          timeout=timeout, env=env)


def snapshot_status(path: Path) -> dict:
    import json

    result = ctl("127.0.0.1:1", "snapshot", "status", str(path), "-w", "json")
    assert result.returncode == 0, f"etcdctl snapshot status {path}: {result.stdout}{result.stderr}"
    return json.loads(result.stdout)


def cronjob_pod(r: Rendered) -> dict:
    (job,) = r.of_kind("CronJob")
    return job["spec"]["jobTemplate"]["spec"]["template"]["spec"]


# ---------------------------------------------------------------------------------------
# Snapshots
# ---------------------------------------------------------------------------------------


def broker_env_value(r: Rendered, name: str) -> str:
    (value,) = [e["value"] for e in container(r.brokers()[0])["env"] if e["name"] == name]
    return value


def test_snapshot_cronjob_uses_the_brokers_identity_and_reaches_etcd(rendered):
    """With the chart's etcd and an s3:// bucket the CronJob is there by default, with the
    brokers' service account (IRSA), image and object-store credentials, and the etcd
    NetworkPolicy lets its pods (and no stranger) reach etcd's client port."""
    from test_deploy import Peer, allows

    for name in ("minio-secret-values", "monitoring-values", "embedded-etcd-values"):
        r = rendered[name]
        pod = cronjob_pod(r)
        broker_pod = r.brokers()[0]["spec"]["template"]["spec"]
        assert pod["serviceAccountName"] == broker_pod["serviceAccountName"]
        (c,) = pod["containers"]
        assert c["image"] == container(r.brokers()[0])["image"]
        assert c["command"][:3] == ["strata", "etcd", "snapshot"]
        args = dict(a.split("=", 1) for a in c["command"][3:])
        etcd_client = r.one("Service", f"{r.fullname()}-etcd")["metadata"]["name"]
        values = chart_values(name)
        # The brokers' metadata URL, prefix included: the cluster id is read there.
        assert args["--metadata"] == f"etcd://{etcd_client}.{NAMESPACE}.svc.cluster.local:2379/" \
            f"{values.get('metadata', {}).get('prefix', 'strata')}"
        assert args["--metadata"] == broker_env_value(r, "STRATA_METADATA")
        assert args["--object-store"] == values["objectStore"]["url"]
        broker_env = {e["name"]: e for e in container(r.brokers()[0])["env"]}
        for e in c["env"]:
            if e["name"].startswith("AWS_"):
                assert e == broker_env[e["name"]], f"{name}: {e['name']} differs from the brokers'"
        creds = values["objectStore"].get("credentials", {}).get("existingSecret")
        assert bool(creds) == any(e["name"] == "AWS_ACCESS_KEY_ID" for e in c["env"])
        # Room in /tmp for a snapshot as large as etcd's quota.
        (tmp,) = [v for v in pod["volumes"] if v["name"] == "tmp"]
        assert int(tmp["emptyDir"]["sizeLimit"]) > int(values["etcd"]["quotaBackendBytes"])
        labels = pod_labels = r.of_kind("CronJob")[0]["spec"]["jobTemplate"]["spec"]["template"]["metadata"]["labels"]
        etcd_sts = [s for s in r.of_kind("StatefulSet") if s["metadata"]["name"] == f"{r.fullname()}-etcd"][0]
        etcd_labels = etcd_sts["spec"]["template"]["metadata"]["labels"]
        policies = r.of_kind("NetworkPolicy")
        assert allows(policies, etcd_labels, 2379, Peer(NAMESPACE, pod_labels))
        assert not allows(policies, etcd_labels, 2380, Peer(NAMESPACE, labels))
        assert not allows(policies, etcd_labels, 2379, Peer(NAMESPACE, {"app": "stranger"}))
    # No CronJob without a bucket (the evaluation install) or with an etcd of your own.
    for name in ("no-values", "external-etcd-irsa-values"):
        assert not rendered[name].of_kind("CronJob"), name


def test_etcd_pods_roll_on_a_new_start_script_and_the_snapshot_job_gets_extra_env(tmp_path):
    """The etcd pod template carries the sha256 of the start script it runs (a new
    script rolls the members); the snapshot CronJob gets the brokers' extraEnv (S3 or
    AWS settings given only there)."""
    import hashlib

    r = render_values(deep_merge(chart_values("embedded-etcd-values"), {
        "extraEnv": [{"name": "AWS_REGION", "value": "eu-west-3"}]}), tmp_path, "extra-env")
    script = r.one("ConfigMap", f"{r.fullname()}-etcd")["data"]["start.sh"]
    (sts,) = [s for s in r.of_kind("StatefulSet") if s["metadata"]["name"] == f"{r.fullname()}-etcd"]
    annotations = sts["spec"]["template"]["metadata"]["annotations"]
    # The ConfigMap's block scalar adds the final newline.
    assert annotations["checksum/start-script"] == hashlib.sha256(script.rstrip("\n").encode()).hexdigest(), annotations
    (c,) = cronjob_pod(r)["containers"]
    assert {"name": "AWS_REGION", "value": "eu-west-3"} in c["env"], c["env"]


def test_snapshot_values_are_checked(tmp_path):
    off = render_values(deep_merge(chart_values("minio-secret-values"), {"etcd": {"snapshots": {"enabled": False}}}),
                        tmp_path, "off")
    assert not off.of_kind("CronJob")
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(deep_merge(chart_values("minio-secret-values"), {"etcd": {"snapshots": {"keep": 0}}})))
    result = helm_template([bad])
    assert result.returncode != 0 and "etcd.snapshots.keep" in result.stderr, result.stderr


def snapshot_command(r: Rendered, etcd_endpoint: str, moto_endpoint: str) -> tuple[list[str], dict[str, str]]:
    """The CronJob's command and environment with the cluster's addresses rewritten to
    loopback (etcd) and moto (the bucket), the credentials moto takes."""
    (c,) = cronjob_pod(r)["containers"]
    command = [re.sub(r"^--metadata=etcd://[^/]+", f"--metadata=etcd://{etcd_endpoint}", a) for a in c["command"]]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "STRATA_"))}
    for e in c["env"]:
        env[e["name"]] = e.get("value", "")
    bucket_env = s3_env(moto_endpoint, "unused")
    env.update({k: bucket_env[k] for k in ("STRATA_S3_ENDPOINT", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY",
                                          "NO_PROXY", "no_proxy")})
    return command, env


def run_snapshot(command: list[str], env: dict[str, str], strata_bin, object_store: str, keep: int | None = None):
    args = [str(strata_bin), *command[1:]]
    args = [f"--object-store={object_store}" if a.startswith("--object-store=") else a for a in args]
    if keep is not None:
        args = [f"--keep={keep}" if a.startswith("--keep=") else a for a in args]
    result = subprocess.run(args, capture_output=True, text=True, env=env, timeout=120)
    assert result.returncode == 0, f"{args}: {result.stdout}{result.stderr}"
    return result.stdout


def test_snapshot_job_uploads_restorable_snapshots_and_keeps_the_newest(rendered, etcd, bucket, strata_bin, tmp_path):
    """The CronJob's command against a real etcd and bucket: each run uploads a snapshot
    under <objectStore.url>/etcd-snapshots/<cluster id>/ that etcdctl reads, at a
    revision that includes what was written before it; runs beyond `keep` delete the
    oldest of that cluster only. An etcd without a Strata cluster id (an empty one, as
    after losing every volume) is refused: its snapshots would rotate out the good ones.
    A second cluster sharing the bucket (another prefix) keeps its own."""
    r = rendered["minio-secret-values"]
    command, env = snapshot_command(r, etcd.endpoint, bucket.endpoint)
    env["STRATA_S3_REGION"] = "us-east-1"
    object_store = f"s3://{bucket.name}/dev"
    prefix = re.match(r"--metadata=etcd://[^/]+/(.+)$", next(a for a in command if a.startswith("--metadata="))).group(1)
    # No cluster id yet: refused, nothing uploaded.
    args = [str(strata_bin), *command[1:]]
    args = [f"--object-store={object_store}" if a.startswith("--object-store=") else a for a in args]
    refused = subprocess.run(args, capture_output=True, text=True, env=env, timeout=120)
    assert refused.returncode != 0 and "cluster_id" in refused.stderr, refused.stdout + refused.stderr
    assert bucket.objects("dev/etcd-snapshots/") == {}
    cluster_id, other_id = f"c-{uuid.uuid4().hex[:8]}", f"o-{uuid.uuid4().hex[:8]}"
    assert ctl(etcd.endpoint, "put", f"{prefix}/cluster_id", cluster_id).returncode == 0
    assert ctl(etcd.endpoint, "put", "other/cluster_id", other_id).returncode == 0
    other = [re.sub(r"^(--metadata=etcd://[^/]+)/.*$", r"\1/other", a) for a in command]
    other_out = run_snapshot(other, env, strata_bin, object_store, keep=1)
    other_name = re.search(rf"snapshot etcd-snapshots/{other_id}/(\S+):", other_out).group(1)
    key = f"snap-{uuid.uuid4().hex[:8]}"
    taken = []
    for i in range(3):
        assert ctl(etcd.endpoint, "put", key, f"value-{i}").returncode == 0
        revision = int(re.search(r'"revision":"?(\d+)', ctl(etcd.endpoint, "get", key, "-w", "json").stdout).group(1))
        out = run_snapshot(command, env, strata_bin, object_store, keep=2)
        name = re.search(rf"snapshot etcd-snapshots/{cluster_id}/(\S+):", out).group(1)
        taken.append((name, revision))
        time.sleep(1.1)  # names carry the second: three distinct snapshots
    objects = bucket.objects("dev/etcd-snapshots/")
    assert sorted(objects) == sorted([f"dev/etcd-snapshots/{cluster_id}/{n}" for n, _ in taken[1:]]
                                     + [f"dev/etcd-snapshots/{other_id}/{other_name}"]), objects
    assert f"deleted etcd-snapshots/{cluster_id}/{taken[0][0]}" in out
    # `fetch latest --cluster-id` brings back the newest; etcdctl reads it at the revision written.
    listing = subprocess.run([str(strata_bin), "etcd", "snapshots", f"--object-store={object_store}"],
                             capture_output=True, text=True, env=env, timeout=60)
    assert listing.returncode == 0 and f"{cluster_id}/{taken[2][0]}" in listing.stdout \
        and taken[0][0] not in listing.stdout and f"{other_id}/{other_name}" in listing.stdout, \
        listing.stdout + listing.stderr
    path = tmp_path / "latest.db"
    fetch = [str(strata_bin), "etcd", "fetch", "latest", f"--output={path}", f"--object-store={object_store}"]
    no_id = subprocess.run(fetch, capture_output=True, text=True, env=env, timeout=60)
    assert no_id.returncode != 0 and "--cluster-id" in no_id.stderr, no_id.stdout + no_id.stderr
    fetched = subprocess.run([*fetch, f"--cluster-id={cluster_id}"], capture_output=True, text=True, env=env, timeout=60)
    assert fetched.returncode == 0, fetched.stdout + fetched.stderr
    assert taken[2][0] in fetched.stdout
    status = snapshot_status(path)
    assert status["revision"] >= taken[2][1] and status["totalKey"] > 0, status
    # The bytes are etcd's snapshot as uploaded.
    assert path.stat().st_size == objects[f"dev/etcd-snapshots/{cluster_id}/{taken[2][0]}"]
    # By name, as the runbook fetches it.
    by_name = tmp_path / "by-name.db"
    fetched = subprocess.run([str(strata_bin), "etcd", "fetch", f"{cluster_id}/{taken[1][0]}", f"--output={by_name}",
                              f"--object-store={object_store}"], capture_output=True, text=True, env=env, timeout=60)
    assert fetched.returncode == 0, fetched.stdout + fetched.stderr
    assert snapshot_status(by_name)["revision"] >= taken[1][1]
    # A snapshot damaged in the bucket (cut short) is refused, and nothing lands at the
    # output: etcd's appended SHA-256 no longer matches.
    damaged_key = f"dev/etcd-snapshots/{cluster_id}/{taken[1][0]}"
    whole = bucket.client.get_object(Bucket=bucket.name, Key=damaged_key)["Body"].read()
    bucket.client.put_object(Bucket=bucket.name, Key=damaged_key, Body=whole[:-100] + whole[-32:])
    damaged = tmp_path / "damaged.db"
    fetched = subprocess.run([str(strata_bin), "etcd", "fetch", f"{cluster_id}/{taken[1][0]}", f"--output={damaged}",
                              f"--object-store={object_store}"], capture_output=True, text=True, env=env, timeout=60)
    assert fetched.returncode != 0 and "SHA-256" in fetched.stderr, fetched.stdout + fetched.stderr
    assert not damaged.exists() and not damaged.with_suffix(".partial").exists()
    # A wrong bucket fails loudly.
    env_bad = dict(env)
    result = subprocess.run([str(strata_bin), *command[1:3], f"--metadata=etcd://{etcd.endpoint}/{prefix}",
                             f"--object-store=s3://no-such-bucket-{uuid.uuid4().hex[:6]}"],
                            capture_output=True, text=True, env=env_bad, timeout=120)
    assert result.returncode != 0 and "upload the snapshot" in result.stderr, result.stdout + result.stderr


def epochs_and_producer_ids(endpoint: str, prefix: str) -> tuple[dict[tuple[str, int], int], int | None]:
    """Every partition's leader epoch in etcd, and the next producer id (None: none yet)."""
    listed = ctl(endpoint, "get", f"{prefix}/topics/", "--prefix", "-w", "json")
    assert listed.returncode == 0, listed.stderr
    epochs = {}
    for kv in json.loads(listed.stdout).get("kvs", []):
        record = json.loads(base64.b64decode(kv["value"]))
        for i, p in enumerate(record["partitions"]):
            epochs[(record["name"], i)] = p["leader_epoch"]
    counter = ctl(endpoint, "get", f"{prefix}/producer_ids", "--print-value-only")
    assert counter.returncode == 0, counter.stderr
    return epochs, int(counter.stdout) if counter.stdout.strip() else None


def test_restore_runbook_brings_back_the_snapshot(broker, bucket, strata_bin, tmp_path):
    """docs/deploy.md, "Restoring etcd from a snapshot", on loopback: a tiered broker on
    etcd and a bucket, records produced, a snapshot taken, more written after it; the
    broker stopped, etcd's data lost; the snapshot fetched and restored with
    `etcdctl snapshot restore`; `strata etcd after-restore` raises every leader epoch
    and the producer id counter past what was used before the loss (the snapshot rolled
    them back); etcd and the broker started again. The topic of the
    snapshot is back with every record (those after the snapshot too: they were on the
    broker's disk), the topic created after the snapshot is gone."""
    from clients import confluent_admin, confluent_consume, confluent_produce, create_topic, make_records

    etcd = EtcdServer(tmp_path / "etcd", etcd_binary()).start()
    try:
        url = etcd.url("strata")
        env = s3_env(bucket.endpoint, bucket.name, remote_upload_interval_ms=200, log_housekeeping_interval_ms=200)
        b = broker(metadata=url, env=env, name="b0")
        create_topic(b.bootstrap, "kept", 2, {"remote.storage.enable": "true", "segment.bytes": str(64 * 1024),
                                              "segment.ms": "1000", "retention.ms": "-1"})
        before = make_records(1, 400, 2, binary=True)
        # Idempotent: producer ids are reserved in etcd (<prefix>/producer_ids).
        confluent_produce(b.bootstrap, "kept", before, "none", **{"enable.idempotence": True})
        wait_until("segments of `kept` in the bucket",
                   lambda: len(bucket.segment_objects("kept")) >= 2, timeout=120)
        snapshot_env = {**os.environ, **env}
        out = subprocess.run([str(strata_bin), "etcd", "snapshot", f"--metadata=etcd://{etcd.endpoint}"],
                             capture_output=True, text=True, env=snapshot_env, timeout=120)
        assert out.returncode == 0, out.stdout + out.stderr
        in_snapshot = set(bucket.segment_objects("kept"))
        after = make_records(2, 100, 2, binary=True)
        confluent_produce(b.bootstrap, "kept", after, "none")
        # Segments uploaded after the snapshot: the restored manifests will not know them.
        uploaded_after = wait_until("segments uploaded after the snapshot",
                                    lambda: set(bucket.segment_objects("kept")) - in_snapshot, timeout=120)
        create_topic(b.bootstrap, "lost", 1)
        assert "lost" in confluent_admin(b.bootstrap).list_topics(timeout=10).topics
        # Another producer after the snapshot: a producer id the restored counter would
        # hand out again.
        late = make_records(4, 5, 2)
        confluent_produce(b.bootstrap, "kept", late, "none", **{"enable.idempotence": True})
        used_epochs, used_producer_ids = epochs_and_producer_ids(etcd.endpoint, "strata")
        assert used_producer_ids is not None, "no producer id was reserved"

        # Scale the brokers to 0; etcd loses its data.
        assert b.stop() == 0
        etcd.stop()
        shutil.rmtree(etcd.workdir / "data")
        snapshot = tmp_path / "restore.db"
        # The runbook's step 2: the snapshot by name, as `snapshots` lists it.
        listed = subprocess.run([str(strata_bin), "etcd", "snapshots"], capture_output=True, text=True,
                                env=snapshot_env, timeout=60)
        assert listed.returncode == 0, listed.stdout + listed.stderr
        (name,) = re.findall(r"^(\S+/\S+\.db)\s", listed.stdout, re.M)
        fetched = subprocess.run([str(strata_bin), "etcd", "fetch", name, f"--output={snapshot}"],
                                 capture_output=True, text=True, env=snapshot_env, timeout=60)
        assert fetched.returncode == 0, fetched.stdout + fetched.stderr
        peer = f"http://127.0.0.1:{etcd.peer_port}"
        restored = ctl("127.0.0.1:1", "snapshot", "restore", str(snapshot), "--name", "default",
                       f"--data-dir={etcd.workdir / 'data'}", f"--initial-cluster=default={peer}",
                       f"--initial-advertise-peer-urls={peer}", "--initial-cluster-token=restored")
        assert restored.returncode == 0, restored.stdout + restored.stderr
        etcd.spawn()
        etcd.wait_ready()
        # The snapshot's counters are at most what the logs and producers used (ids come
        # in blocks of a broker: here the block of the snapshot still covered them).
        snapshot_epochs, snapshot_producer_ids = epochs_and_producer_ids(etcd.endpoint, "strata")
        assert snapshot_producer_ids is not None and snapshot_producer_ids <= used_producer_ids
        after_restore = subprocess.run([str(strata_bin), "etcd", "after-restore", f"--metadata=etcd://{etcd.endpoint}"],
                                       capture_output=True, text=True, env=snapshot_env, timeout=60)
        assert after_restore.returncode == 0, after_restore.stdout + after_restore.stderr
        raised_epochs, raised_producer_ids = epochs_and_producer_ids(etcd.endpoint, "strata")
        assert raised_producer_ids > used_producer_ids, (raised_producer_ids, used_producer_ids)
        assert set(raised_epochs) == set(snapshot_epochs)
        assert min(raised_epochs.values()) > max(used_epochs.values()), (raised_epochs, used_epochs)
        b.start()
        topics = wait_until("the restored metadata", lambda: (t := confluent_admin(b.bootstrap).list_topics(
            timeout=10).topics) and "kept" in t and t, timeout=60)
        assert "lost" not in topics, "a topic created after the snapshot came back"
        got = confluent_consume(b.bootstrap, "kept", 2)
        assert sorted(repr((g.key, g.value)) for g in got) == sorted(repr((r.key, r.value)) for r in before + after + late)
        # The leader uploads again, under new keys, what only the lost manifests held.
        lost_ranges = {(v["partition"], v["base"]) for k, v in bucket.segment_objects("kept").items()
                       if k in uploaded_after}
        assert lost_ranges, "the objects uploaded after the snapshot are gone already"
        wait_until("post-snapshot segments uploaded again", lambda: {
            (v["partition"], v["base"]) for k, v in bucket.segment_objects("kept").items()
            if k not in in_snapshot and k not in uploaded_after} >= lost_ranges, timeout=120)
        # The broker writes on: the restored metadata is live, not read-only.
        confluent_produce(b.bootstrap, "kept", make_records(3, 10, 2), "none")
        assert b.stop() == 0
    finally:
        etcd.stop()


# ---------------------------------------------------------------------------------------
# Members that lost their volume
# ---------------------------------------------------------------------------------------


class ConfiguredEtcd(ServerProcess):
    """etcd started as the chart's etcd container starts it: from the configuration file
    the init container wrote."""

    name = "etcd"

    def __init__(self, workdir: Path, config_file: Path, client_url: str):
        super().__init__(workdir)
        self.config_file = config_file
        self.client_url = client_url

    def command(self) -> list[str]:
        return [etcd_binary(), f"--config-file={self.config_file}"]

    def is_ready(self) -> bool:
        status, body = http_get(f"{self.client_url}/health", timeout=2)
        return status == 200 and '"true"' in body


def member_env(r: Rendered, ordinal: int, ports: list[dict], root: Path) -> dict[str, str]:
    """The init container's environment for pod `ordinal`, with every member's address
    rewritten to its loopback ports and the volumes to directories under `root`."""
    (sts,) = [s for s in r.of_kind("StatefulSet") if s["metadata"]["name"] == f"{r.fullname()}-etcd"]
    (init,) = sts["spec"]["template"]["spec"]["initContainers"]
    pod = f"{sts['metadata']['name']}-{ordinal}"
    env = {k: v.replace("$(POD_NAME)", pod) for k, v in pod_env(init, pod).items()}
    domain = f"{sts['spec']['serviceName']}.{NAMESPACE}.svc.cluster.local"
    for i, p in enumerate(ports):
        host = f"{sts['metadata']['name']}-{i}.{domain}"
        for key, value in env.items():
            value = value.replace(f"http://{host}:2380", f"http://127.0.0.1:{p['peer']}")
            env[key] = value.replace(f"http://{host}:2379", f"http://127.0.0.1:{p['client']}")
    mine = ports[ordinal]
    member_dir = root / pod
    member_dir.mkdir(parents=True, exist_ok=True)
    env.update(
        DATA_DIR=str(member_dir / "data"), CONFIG_FILE=str(member_dir / "etcd.yaml"), TMPDIR=str(member_dir),
        LISTEN_CLIENT_URLS=f"http://127.0.0.1:{mine['client']}", LISTEN_PEER_URLS=f"http://127.0.0.1:{mine['peer']}",
        LISTEN_METRICS_URLS=f"http://127.0.0.1:{mine['metrics']}",
    )
    assert "cluster.local" not in "".join(env.values()), f"an address was not rewritten: {env}"
    return env


class StartScript:
    """The init container's start.sh, run in the background as the kubelet runs it."""

    def __init__(self, r: Rendered, env: dict[str, str], strata_bin, tmp_path: Path):
        # Written once: bash reads a script as it runs, so rewriting it under a running
        # one breaks that one.
        script = tmp_path / "etcd-start.sh"
        text = r.one("ConfigMap", f"{r.fullname()}-etcd")["data"]["start.sh"]
        if not script.exists() or script.read_text() != text:
            script.write_text(text)
        bin_dir = tmp_path / "bin"
        bin_dir.mkdir(exist_ok=True)
        if not (bin_dir / "strata").exists():
            (bin_dir / "strata").symlink_to(strata_bin)
        full = {"PATH": f"{bin_dir}:/usr/bin:/bin", "HOME": str(tmp_path), **env}
        logs = Path(env["CONFIG_FILE"]).parent
        self.stdout_path, self.stderr_path = logs / "start.out", logs / "start.err"
        with open(self.stdout_path, "w") as out, open(self.stderr_path, "w") as err:
            self.proc = subprocess.Popen(["/bin/bash", str(script)], stdout=out, stderr=err, env=full,
                                         start_new_session=True)

    def stderr(self) -> str:
        return self.stderr_path.read_text()

    def wait(self, timeout: float = 180) -> subprocess.CompletedProcess:
        code = self.proc.wait(timeout=timeout)
        return subprocess.CompletedProcess(self.proc.args, code, self.stdout_path.read_text(), self.stderr())

    def kill(self) -> None:
        """The script and its `strata` (its own process group)."""
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()


def run_start_script(r: Rendered, env: dict[str, str], strata_bin, tmp_path: Path) -> subprocess.CompletedProcess:
    return StartScript(r, env, strata_bin, tmp_path).wait()


def peer_members(env: dict[str, str]) -> tuple[int, str]:
    """The answer of a member's peer port to GET /members: (status, body); (0, "") when
    nothing listens."""
    try:
        return http_get(f"{env['PEER_URL']}/members", timeout=2)
    except OSError:
        return 0, ""


def first_install(r: Rendered, envs: list[dict[str, str]], strata_bin, tmp_path: Path) -> list[ConfiguredEtcd]:
    """Every member's start script at once, each member's etcd started as soon as its
    script is done (as the kubelet does); each one decides `new`, or, late while two
    others formed the cluster already, `existing` as the member it was listed as."""
    scripts = [StartScript(r, env, strata_bin, tmp_path) for env in envs]
    members: list[ConfiguredEtcd | None] = [None] * len(envs)
    try:
        def started() -> bool:
            for i, (script, env) in enumerate(zip(scripts, envs)):
                if members[i] is None and script.proc.poll() is not None:
                    result = script.wait()
                    assert result.returncode == 0, result.stdout + result.stderr
                    members[i] = ConfiguredEtcd(Path(env["DATA_DIR"]).parent, Path(env["CONFIG_FILE"]), env["CLIENT_URL"])
                    members[i].spawn()
            return all(m is not None for m in members)
        wait_until("every member's start script", started, timeout=120)
    except BaseException:
        for script in scripts:
            script.kill()
        for m in members:
            if m is not None:
                m.kill9()
        raise
    states = []
    for script, env in zip(scripts, envs):
        result = script.wait()
        config = yaml.safe_load(Path(env["CONFIG_FILE"]).read_text())
        states.append(config["initial-cluster-state"])
        assert sorted(config["initial-cluster"].split(",")) == sorted(env["INITIAL_CLUSTER"].split(","))
        if config["initial-cluster-state"] == "existing":
            assert "never started: starting it as is" in result.stderr, result.stdout + result.stderr
        else:
            assert "--initial-cluster-state=new" in result.stdout, result.stdout + result.stderr
    assert states.count("new") >= 2, states
    return [m for m in members if m is not None]


def three_members(r: Rendered, tmp_path: Path) -> list[dict[str, str]]:
    """The three members' environments. The rejoin lock lasts 10 s instead of the chart's
    90 (each rejoin holds it that long), so that the test's rejoins follow each other
    faster."""
    ports = [{"client": free_port(), "peer": free_port(), "metrics": free_port()} for _ in range(3)]
    envs = [member_env(r, i, ports, tmp_path / "members") for i in range(3)]
    for env in envs:
        assert env["REJOIN_LOCK_SECONDS"] == "90"
        env["REJOIN_LOCK_SECONDS"] = "10"
    return envs


def test_a_member_that_lost_its_volume_rejoins(rendered, strata_bin, tmp_path):
    """Three members from the chart's start script: a first install, every script at
    once, forms a cluster (state new). Member 2 loses its data: started with the first
    install's configuration it is refused (the old fixed --initial-cluster-state=new); the
    script instead replaces its membership and it rejoins with state existing, with the
    data replicated to it."""
    r = rendered["embedded-etcd-values"]
    envs = three_members(r, tmp_path)
    members: list[ConfiguredEtcd] = []
    try:
        members = first_install(r, envs, strata_bin, tmp_path)
        for env in envs:
            config = yaml.safe_load(Path(env["CONFIG_FILE"]).read_text())
            assert config["quota-backend-bytes"] == int(chart_values("embedded-etcd-values")["etcd"]["quotaBackendBytes"])
        for m in members:
            m.wait_ready()
        endpoints = ",".join(e["CLIENT_URL"] for e in envs)
        assert ctl(endpoints, "put", "before", "loss").returncode == 0
        # Metrics on their own port, as the PodMonitor scrapes them.
        status, text = http_get(f"http://127.0.0.1:{envs[0]['LISTEN_METRICS_URLS'].rsplit(':', 1)[1]}/metrics")
        assert status == 200 and "etcd_server_has_leader 1" in text

        # Member 2 loses its volume.
        members[2].stop()
        shutil.rmtree(envs[2]["DATA_DIR"])
        # Negative: a first install's configuration (state new) cannot bring it back.
        stale_config = yaml.safe_load(Path(envs[2]["CONFIG_FILE"]).read_text())
        stale_config.update({"initial-cluster-state": "new", "initial-cluster": envs[2]["INITIAL_CLUSTER"]})
        (tmp_path / "stale").mkdir()
        stale_file = tmp_path / "stale" / "etcd.yaml"
        stale_file.write_text(yaml.safe_dump(stale_config))
        stale = ConfiguredEtcd(tmp_path / "stale", stale_file, envs[2]["CLIENT_URL"])
        stale.spawn()
        code = stale.proc.wait(timeout=60)
        assert code != 0, "a member with no data started with state new in a formed cluster"
        shutil.rmtree(envs[2]["DATA_DIR"], ignore_errors=True)

        assert ctl(endpoints.rsplit(",", 1)[0], "put", "during", "loss").returncode == 0
        result = run_start_script(r, envs[2], strata_bin, tmp_path)
        assert result.returncode == 0, result.stdout + result.stderr
        assert "removing and re-adding" in result.stderr and "--initial-cluster-state=existing" in result.stdout, \
            result.stdout + result.stderr
        config = yaml.safe_load(Path(envs[2]["CONFIG_FILE"]).read_text())
        assert config["initial-cluster-state"] == "existing"
        assert sorted(config["initial-cluster"].split(",")) == sorted(envs[0]["INITIAL_CLUSTER"].split(","))
        members[2].spawn()
        members[2].wait_ready()
        own = envs[2]["CLIENT_URL"]
        for key, value in (("before", "loss"), ("during", "loss")):
            got = wait_until(f"{key} on the rejoined member",
                             lambda: (x := ctl(own, "get", key, "--consistency=s", "--print-value-only"))
                             and x.stdout.strip() == value and x, timeout=30)
            assert got
        listed = ctl(endpoints, "member", "list").stdout
        names = sorted(line.split(", ")[2] for line in listed.strip().splitlines())
        assert names == sorted(f"{r.fullname()}-etcd-{i}" for i in range(3)), listed
        assert ctl(endpoints, "endpoint", "health").returncode == 0

        # A restart with its data keeps it (the script asks nobody).
        members[2].stop()
        result = run_start_script(r, envs[2], strata_bin, tmp_path)
        assert result.returncode == 0 and "restarts from the data" in result.stdout, result.stdout + result.stderr
        members[2].spawn()
        members[2].wait_ready()
        assert len(ctl(endpoints, "member", "list").stdout.strip().splitlines()) == 3

        # A majority lost: members 0 and 1 down, 1 without data. Member 2 answers
        # without a quorum; member 1 must neither join nor start a new cluster.
        members[0].stop()
        members[1].stop()
        shutil.rmtree(envs[1]["DATA_DIR"])
        Path(envs[1]["CONFIG_FILE"]).unlink()
        result = run_start_script(r, {**envs[1], "REJOIN_WAIT_SECONDS": "10"}, strata_bin, tmp_path)
        assert result.returncode != 0, result.stdout + result.stderr
        assert not Path(envs[1]["CONFIG_FILE"]).exists(), "a configuration was written"
        assert "lost its quorum" in result.stderr, result.stderr
    finally:
        for m in members:
            m.kill9()


def test_two_members_that_lost_their_volumes_rejoin_at_once(strata_bin, tmp_path):
    """Five members (etcd.replicas 5); two lose their volumes and their start scripts
    run at the same time. Each re-adds itself under the rejoin lock, one after the
    other, and both start: five healthy members with the data on both. (Run without
    the lock this passed too: with two of five members down etcd itself refuses the
    second add as "unhealthy" until the first member runs, and the script retries; the
    lock covers what that check does not, e.g. with one member down and another added
    by hand.)"""
    r = render_values(deep_merge(chart_values("embedded-etcd-values"), {"etcd": {"replicas": 5}}), tmp_path, "five")
    ports = [{"client": free_port(), "peer": free_port(), "metrics": free_port()} for _ in range(5)]
    envs = [member_env(r, i, ports, tmp_path / "members") for i in range(5)]
    for env in envs:
        env["REJOIN_LOCK_SECONDS"] = "10"
    members: list[ConfiguredEtcd] = []
    scripts: list[StartScript] = []
    try:
        members = first_install(r, envs, strata_bin, tmp_path)
        for m in members:
            m.wait_ready()
        endpoints = ",".join(e["CLIENT_URL"] for e in envs)
        assert ctl(endpoints, "put", "before", "both").returncode == 0
        for i in (3, 4):
            members[i].stop()
            shutil.rmtree(envs[i]["DATA_DIR"])
        scripts = [StartScript(r, envs[i], strata_bin, tmp_path) for i in (3, 4)]
        started: set[int] = set()

        def start_when_decided() -> bool:
            for i, script in zip((3, 4), scripts):
                if i not in started and script.proc.poll() is not None:
                    result = script.wait()
                    assert result.returncode == 0, result.stdout + result.stderr
                    assert "--initial-cluster-state=existing" in result.stdout, result.stdout + result.stderr
                    members[i].spawn()
                    started.add(i)
            return started == {3, 4}
        wait_until("both start scripts", start_when_decided, timeout=150)
        for i in (3, 4):
            members[i].wait_ready()
            got = wait_until(f"the data on member {i}",
                             lambda: (x := ctl(envs[i]["CLIENT_URL"], "get", "before", "--consistency=s",
                                               "--print-value-only")) and x.stdout.strip() == "both" and x,
                             timeout=30)
            assert got
        listed = ctl(endpoints, "member", "list").stdout.strip().splitlines()
        assert len(listed) == 5, listed
        assert ctl(endpoints, "endpoint", "health").returncode == 0
    finally:
        for script in scripts:
            script.kill()
        for m in members:
            m.kill9()


def test_an_empty_member_waits_for_slow_members_with_data(rendered, strata_bin, tmp_path):
    """A restart of every member where member 2's volume is empty and the two members
    with data come up later: while they are silent, and while only one of them runs (no
    quorum yet), member 2's script neither starts a new cluster (raft amnesia: its old
    member ID with an empty log) nor gives up; once they have a quorum it rejoins, and
    the data written before is on it."""
    r = rendered["embedded-etcd-values"]
    envs = three_members(r, tmp_path)
    members: list[ConfiguredEtcd] = []
    script = None
    try:
        members = first_install(r, envs, strata_bin, tmp_path)
        for m in members:
            m.wait_ready()
        endpoints = ",".join(e["CLIENT_URL"] for e in envs)
        assert ctl(endpoints, "put", "before", "restart").returncode == 0
        for m in members:
            m.stop()
        shutil.rmtree(envs[2]["DATA_DIR"])

        script = StartScript(r, envs[2], strata_bin, tmp_path)
        # Deciding, and telling the others it has no data, while they are all down.
        wait_until("member 2 announcing that it has no data",
                   lambda: peer_members(envs[2])[1].strip() == "no data", timeout=30)
        assert script.proc.poll() is None, script.stderr()
        # Member 0 comes back with its data: its peer port answers, no quorum yet.
        members[0].spawn()
        wait_until("member 2 seeing that the cluster formed before",
                   lambda: "formed before" in script.stderr(), timeout=60)
        assert script.proc.poll() is None, script.stderr()
        members[1].spawn()
        result = script.wait()
        assert result.returncode == 0, result.stdout + result.stderr
        assert "--initial-cluster-state=existing" in result.stdout, result.stdout + result.stderr
        assert "removing and re-adding" in result.stderr, result.stderr
        members[2].spawn()
        members[2].wait_ready()
        got = wait_until("the data written before on member 2",
                         lambda: (x := ctl(envs[2]["CLIENT_URL"], "get", "before", "--consistency=s", "--print-value-only"))
                         and x.stdout.strip() == "restart" and x, timeout=30)
        assert got
        assert ctl(endpoints, "endpoint", "health").returncode == 0
    finally:
        if script is not None:
            script.kill()
        for m in members:
            m.kill9()


# ---------------------------------------------------------------------------------------
# Metrics and alerts
# ---------------------------------------------------------------------------------------


def etcd_metrics_in_the_docs() -> set[str]:
    text = OPERATIONS.read_text()
    section = text.split("\n## Alerts", 1)[1].split("\n## ", 1)[0]
    return set(re.findall(r"`((?:etcd|kube)_[a-z_]+)`", section))


def test_alerts_are_valid_rules_on_documented_metrics(rendered, tmp_path):
    """promtool accepts the rendered rules; every metric they read is in the metrics table
    of docs/operations.md or named in its "Alerts" section (etcd's, kube-state-metrics');
    each alert links to a section of that page that exists and names the alert."""
    r = rendered["monitoring-values"]
    (rule,) = r.of_kind("PrometheusRule")
    assert rule["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    path = tmp_path / "rules.yaml"
    path.write_text(yaml.safe_dump({"groups": rule["spec"]["groups"]}))
    promtool = promtool_binary()
    result = subprocess.run([promtool, "check", "rules", str(path)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    rules = [x for g in rule["spec"]["groups"] for x in g["rules"]]
    assert f"SUCCESS: {len(rules)} rules found" in result.stdout
    documented = documented_metrics() | etcd_metrics_in_the_docs()
    alerts_doc = OPERATIONS.read_text().split("\n## Alerts", 1)[1].split("\n## ", 1)[0]
    anchors = {re.sub(r"[^a-z0-9 -]", "", h.lower()).replace(" ", "-")
               for h in re.findall(r"^### (.+)$", alerts_doc, re.M)}
    used = set()
    for x in rules:
        for name in re.findall(r"\b((?:strata|etcd|kube)_[a-z_]+)", x["expr"]):
            used.add(re.sub(r"_(bucket|sum|count)$", "", name) if not name.startswith("strata_")
                     or re.sub(r"_(bucket|sum|count)$", "", name) in documented else name)
        assert x["labels"]["team"] == "streaming" and x["labels"]["severity"] in {"warning", "critical"}
        assert x["annotations"]["summary"] and x["annotations"]["description"]
        base, anchor = x["annotations"]["runbook_url"].split("#")
        assert base == "https://docs.example.com/strata/operations" and anchor in anchors, x["annotations"]
        assert f"`{x['alert']}`" in alerts_doc, f"{x['alert']} is not described in docs/operations.md, Alerts"
        # Scoped to this release's pods.
        assert f'namespace="{NAMESPACE}"' in x["expr"], x["expr"]
    assert used <= documented, f"metrics not in docs/operations.md: {sorted(used - documented)}"
    described = set(re.findall(r"^\| `(Strata[A-Za-z]+)`", alerts_doc, re.M))
    assert described == {x["alert"] for x in rules}, "docs/operations.md, Alerts, and the rule differ"
    for wanted in ("strata_offline_partitions", "strata_under_replicated_partitions", "strata_remote_upload_lag_seconds",
                   "strata_task_restarts_total", "strata_disk_used_percent", "etcd_mvcc_db_total_size_in_bytes",
                   "etcd_server_quota_backend_bytes", "etcd_server_has_leader", "etcd_server_leader_changes_seen_total",
                   "etcd_disk_wal_fsync_duration_seconds", "etcd_disk_backend_commit_duration_seconds"):
        assert wanted in used, f"no alert reads {wanted}"
    by_name = {x["alert"]: x["expr"] for x in rules}
    # Silent-alert traps: a CronJob that never succeeded has no last-success series, and
    # with every etcd member down etcd_server_has_leader has none either.
    assert "kube_cronjob_created" in by_name["StrataEtcdSnapshotMissing"], by_name["StrataEtcdSnapshotMissing"]
    assert "absent(up{" in by_name["StrataEtcdMembersDown"], by_name["StrataEtcdMembersDown"]
    # Negative: a rule on an undocumented metric would be caught.
    assert "strata_made_up_total" not in documented


def test_etcd_alerts_fire_without_the_series_they_usually_read(rendered, tmp_path):
    """promtool evaluates the rendered rules: a snapshot CronJob that never succeeded
    (only kube_cronjob_created) fires StrataEtcdSnapshotMissing, and etcd with every
    member down (no etcd_server_has_leader series; `up` 0, or no target at all) fires
    StrataEtcdMembersDown."""
    promtool = promtool_binary()
    r = rendered["monitoring-values"]
    (rule,) = r.of_kind("PrometheusRule")
    groups = rule["spec"]["groups"]
    for group in groups:  # promtool compares annotations too; the labels are the point here
        for x in group["rules"]:
            x.pop("annotations", None)
    rules = tmp_path / "rules.yaml"
    rules.write_text(yaml.safe_dump({"groups": groups}))
    etcd_job = f"{NAMESPACE}/{r.fullname()}-etcd"
    cronjob = f"{r.fullname()}-etcd-snapshot"
    max_age = int(chart_values("monitoring-values").get("prometheusRule", {}).get("etcdSnapshotMaxAgeSeconds", 10800))
    minutes = max_age // 60 + 30

    def case(series: list[dict], alerts: list[dict]) -> dict:
        return {"interval": "1m", "input_series": series, "alert_rule_test": alerts}

    created = {"series": f'kube_cronjob_created{{namespace="{NAMESPACE}", cronjob="{cronjob}"}}', "values": f"0x{minutes}"}
    down = {"series": f'up{{namespace="{NAMESPACE}", job="{etcd_job}", pod="{r.fullname()}-etcd-0"}}', "values": "0x10"}
    tests = {
        "rule_files": [str(rules)],
        "evaluation_interval": "1m",
        "tests": [
            case([created], [{"eval_time": f"{minutes}m", "alertname": "StrataEtcdSnapshotMissing",
                              "exp_alerts": [{"exp_labels": {"severity": "warning", "team": "streaming"}}]}]),
            case([down], [{"eval_time": "5m", "alertname": "StrataEtcdMembersDown",
                           "exp_alerts": [{"exp_labels": {"severity": "critical", "team": "streaming"}}]}]),
            case([], [{"eval_time": "5m", "alertname": "StrataEtcdMembersDown",
                       "exp_alerts": [{"exp_labels": {"severity": "critical", "team": "streaming",
                                                      "namespace": NAMESPACE, "job": etcd_job}}]}]),
        ],
    }
    path = tmp_path / "tests.yaml"
    path.write_text(yaml.safe_dump(tests))
    result = subprocess.run([promtool, "test", "rules", str(path)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


def test_alerts_follow_the_values(tmp_path):
    """Off by default; `disabled` drops alerts; without the chart's etcd there are no etcd
    alerts; the etcd PodMonitor selects the etcd pods' metrics port."""
    assert not render_values(chart_values("minio-secret-values"), tmp_path, "default").of_kind("PrometheusRule")
    values = deep_merge(chart_values("monitoring-values"),
                        {"prometheusRule": {"disabled": ["StrataIsrFlapping"]}})
    r = render_values(values, tmp_path, "disabled")
    (rule,) = r.of_kind("PrometheusRule")
    names = {x["alert"] for g in rule["spec"]["groups"] for x in g["rules"]}
    assert "StrataIsrFlapping" not in names and "StrataOfflinePartitions" in names and "StrataEtcdNoLeader" in names
    (monitor,) = r.of_kind("PodMonitor")
    (sts,) = [s for s in r.of_kind("StatefulSet") if s["metadata"]["name"] == f"{r.fullname()}-etcd"]
    labels = sts["spec"]["template"]["metadata"]["labels"]
    assert monitor["spec"]["selector"]["matchLabels"].items() <= labels.items()
    ports = {p["name"]: p["containerPort"] for p in sts["spec"]["template"]["spec"]["containers"][0]["ports"]}
    (endpoint,) = monitor["spec"]["podMetricsEndpoints"]
    assert ports[endpoint["port"]] == 2381
    # The rule's etcd job is the PodMonitor's (namespace/name), the brokers' the headless Service.
    exprs = " ".join(x["expr"] for g in rule["spec"]["groups"] for x in g["rules"])
    assert f'job="{NAMESPACE}/{monitor["metadata"]["name"]}"' in exprs
    assert f'job="{r.fullname()}-headless"' in exprs
    external = deep_merge(chart_values("external-etcd-irsa-values"), {"prometheusRule": {"enabled": True},
                                                                      "metrics": {"serviceMonitor": {"enabled": True}}})
    r = render_values(external, tmp_path, "external")
    (rule,) = r.of_kind("PrometheusRule")
    assert not [x for g in rule["spec"]["groups"] for x in g["rules"] if "etcd_" in x["expr"]]
    assert not r.of_kind("PodMonitor")


def test_the_restore_pod_of_the_docs_matches_the_chart(rendered, tmp_path):
    """The restore pod of docs/deploy.md, for each member of a 3-member etcd: a valid
    Pod whose etcdutl flags are the member's name, peer URL and the cluster the chart's
    etcd starts with (namespace strata there), on the member's claim; the fetch runs the
    `strata etcd fetch` this file tests."""
    from test_deploy import KUBERNETES_VERSION, kubernetes_validate_binary, run

    section = DEPLOY.read_text().split("### Restoring etcd from a snapshot", 1)[1].split("\n## ", 1)[0]
    (block,) = re.findall(r"```yaml\n(.*?)```", section, re.S)
    r = rendered["embedded-etcd-values"]
    (sts,) = [s for s in r.of_kind("StatefulSet") if s["metadata"]["name"] == f"{r.fullname()}-etcd"]
    assert sts["spec"]["replicas"] == 3 and sts["metadata"]["name"] == "strata-etcd"
    (init,) = sts["spec"]["template"]["spec"]["initContainers"]
    chart_env = {e["name"]: e.get("value") for e in init["env"]}
    claim = sts["spec"]["volumeClaimTemplates"][0]["metadata"]["name"]
    for n in range(3):
        text = "\n".join(line[3:] for line in block.replace("-N", f"-{n}").splitlines())
        pod = yaml.safe_load(text)
        path = tmp_path / f"restore-{n}.yaml"
        path.write_text(yaml.safe_dump(pod))
        result = run([kubernetes_validate_binary(), "--strict", "-k", KUBERNETES_VERSION, str(path)])
        assert result.returncode == 0, result.stdout + result.stderr
        (restore,) = pod["spec"]["containers"]
        assert restore["command"][:4] == ["etcdutl", "snapshot", "restore", "/var/lib/etcd/restore.db"]
        flags = dict(a.split("=", 1) if "=" in a else (a, "") for a in restore["command"][4:])
        # Revisions past any handed out before the loss (etcdutl 3.5.10+, the chart's image).
        assert int(flags["--bump-revision"]) >= 1_000_000_000 and "--mark-compacted" in flags
        major, minor, patch = (int(x) for x in restore["image"].rsplit(":v", 1)[1].split("."))
        assert (major, minor, patch) >= (3, 5, 10), restore["image"]
        in_chart = lambda value: value.replace(f".{NAMESPACE}.", ".strata.")  # noqa: E731
        assert flags["--name"] == f"strata-etcd-{n}"
        assert flags["--initial-cluster"] == in_chart(chart_env["INITIAL_CLUSTER"])
        assert flags["--initial-advertise-peer-urls"] == in_chart(chart_env["PEER_URL"].replace("$(POD_NAME)", f"strata-etcd-{n}"))
        assert flags["--data-dir"] == chart_env["DATA_DIR"]
        assert pod["spec"]["volumes"][0]["persistentVolumeClaim"]["claimName"] == f"{claim}-strata-etcd-{n}"
        assert restore["image"] == f"{sts['spec']['template']['spec']['containers'][0]['image']}"
        (fetch,) = pod["spec"]["initContainers"]
        assert "strata etcd fetch CLUSTER_ID/SNAPSHOT.db --output /var/lib/etcd/restore.db" in fetch["command"][-1]
        assert pod["spec"]["serviceAccountName"] == r.brokers()[0]["spec"]["template"]["spec"]["serviceAccountName"]
