"""The kind quickstart (deploy/helm/strata/values-kind.yaml, docs/deploy.md "Trying it"):
three brokers, the chart's etcd and the bundled single-node MinIO.

Rendered with `helm template` and validated with kubernetes-validate (the helpers of
test_deploy.py, which also runs its per-values-file checks on the ci/ copy). Then what the
objects mean: the brokers are pointed at the bundled MinIO and its keys, the bucket Job
creates the bucket of objectStore.url, and the chart refuses a MinIO the brokers would
not reach. The Job's script runs with a stand-in `mc`. Last, the rendered strata.toml runs
three real brokers on loopback against moto standing in for MinIO (same path-style,
plain-HTTP settings; only the endpoint and the metadata address are moved to this
machine; moto checks keys and signatures there, as MinIO would): topics get the
quickstart's three replicas, records go in with acks=all and come back, and a rolled
segment reaches the bucket the Job would have created. Not covered: MinIO itself, the
real `mc`, Service DNS, start.sh, and the kind/docker/kubectl commands (docs/deploy.md,
"What was run here").
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import tomllib
import uuid
from pathlib import Path

import pytest
import yaml

from servers import REPO_ROOT, S3_REGION, Bucket, MotoServer, s3_client, wait_until
from test_deploy import (CHART, KUBERNETES_VERSION, NAMESPACE, RELEASE, Rendered, container, helm_binary,
                         helm_template, kubernetes_validate_binary, pod_env, run, run_script)

QUICKSTART = CHART / "values-kind.yaml"
KIND_CONFIG = REPO_ROOT / "deploy" / "kind" / "cluster.yaml"


def render_quickstart(sets: list[str] = ()) -> Rendered:
    result = helm_template([QUICKSTART], sets)
    assert result.returncode == 0, f"helm template -f values-kind.yaml failed:\n{result.stderr}"
    return Rendered("values-kind", result.stdout, [d for d in yaml.safe_load_all(result.stdout) if d])


@pytest.fixture(scope="module")
def quickstart() -> Rendered:
    return render_quickstart()


def minio_parts(r: Rendered) -> tuple[dict, dict, dict]:
    """The bundled MinIO's Service, StatefulSet and bucket Job."""
    service = r.one("Service", "strata-minio")
    (server,) = [s for s in r.of_kind("StatefulSet") if s["metadata"]["name"] == "strata-minio"]
    (job,) = r.of_kind("Job")
    return service, server, job


def env_of(c: dict) -> dict[str, object]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in c["env"]}


def test_quickstart_is_in_the_ci_values_and_the_kind_cluster_fits_it():
    """The ci/ copy is the file itself (so test_deploy.py's per-file checks cover it), and
    the kind cluster has a worker per broker (the chart prefers one broker per node)."""
    ci = CHART / "ci" / "kind-values.yaml"
    assert ci.resolve() == QUICKSTART.resolve(), f"{ci} must be a symlink to {QUICKSTART}"
    kind = yaml.safe_load(KIND_CONFIG.read_text())
    assert kind["apiVersion"] == "kind.x-k8s.io/v1alpha4" and kind["kind"] == "Cluster"
    workers = [n for n in kind["nodes"] if n["role"] == "worker"]
    assert len(workers) == yaml.safe_load(QUICKSTART.read_text())["replicas"] == 3


def test_quickstart_validates_against_kubernetes_schemas(quickstart, tmp_path):
    path = tmp_path / "quickstart.yaml"
    path.write_text(quickstart.text)
    result = run([kubernetes_validate_binary(), "--strict", "-k", KUBERNETES_VERSION, str(path)])
    output = result.stdout + result.stderr
    assert result.returncode == 0, f"kubernetes-validate --strict rejected the quickstart:\n{output}"
    passed = re.findall(r"passed for resource (\S+) against version", output)
    assert len(passed) == len(quickstart.docs), output
    kinds = sorted(d["kind"] for d in quickstart.docs if "minio" in d["metadata"]["name"])
    assert kinds == ["Job", "NetworkPolicy", "Service", "StatefulSet"], kinds


def test_brokers_are_pointed_at_the_bundled_minio(quickstart):
    """The brokers' object store is the MinIO Service, path style over plain HTTP, with
    the keys of the Secret that is also MinIO's root user; the Job creates the bucket of
    objectStore.url, after install and upgrade, and both run as non-root."""
    service, server, job = minio_parts(quickstart)
    toml = tomllib.loads(quickstart.config_map()["strata.toml"])
    port = next(p["port"] for p in service["spec"]["ports"] if p["name"] == "s3")
    assert toml["s3_endpoint"] == f"http://{service['metadata']['name']}:{port}"
    assert toml["s3_path_style"] is True and toml["s3_allow_http"] is True
    assert toml["object_store"] == "s3://strata/kind"
    assert toml["default_replication_factor"] == 3 and toml["min_insync_replicas"] == 2
    (brokers,) = quickstart.brokers()
    assert brokers["spec"]["replicas"] == 3
    broker_env = pod_env(container(brokers), "strata-0")
    secret = "strata-minio"
    assert broker_env["AWS_ACCESS_KEY_ID"] == f"<secret {secret}/AWS_ACCESS_KEY_ID>"
    assert broker_env["AWS_SECRET_ACCESS_KEY"] == f"<secret {secret}/AWS_SECRET_ACCESS_KEY>"

    minio = server["spec"]["template"]["spec"]["containers"][0]
    minio_env = env_of(minio)
    assert minio_env["MINIO_ROOT_USER"] == {"secretKeyRef": {"name": secret, "key": "AWS_ACCESS_KEY_ID"}}
    assert minio_env["MINIO_ROOT_PASSWORD"] == {"secretKeyRef": {"name": secret, "key": "AWS_SECRET_ACCESS_KEY"}}
    assert minio["args"][:2] == ["server", "/data"] and f":{port}" in minio["args"]
    selector = service["spec"]["selector"]
    assert selector == server["spec"]["selector"]["matchLabels"]
    assert all(server["spec"]["template"]["metadata"]["labels"][k] == v for k, v in selector.items())
    # The brokers' own selector must not take the MinIO pod into the brokers' Services.
    assert selector["app.kubernetes.io/component"] != brokers["spec"]["selector"]["matchLabels"]["app.kubernetes.io/component"]
    assert server["spec"]["volumeClaimTemplates"][0]["spec"]["resources"]["requests"]["storage"] == "10Gi"

    annotations = job["metadata"]["annotations"]
    assert annotations["helm.sh/hook"] == "post-install,post-upgrade"
    assert "before-hook-creation" in annotations["helm.sh/hook-delete-policy"]
    mc = job["spec"]["template"]["spec"]["containers"][0]
    assert mc["image"] == minio["image"], "by default the Job runs the mc shipped in the MinIO image"
    assert job["spec"]["activeDeadlineSeconds"] == 540
    assert env_of(mc)["WAIT_SECONDS"] == "480", "the script gives up a minute before the Job's deadline"
    job_env = env_of(mc)
    assert job_env["BUCKET"] == "strata"
    assert job_env["MINIO_URL"] == toml["s3_endpoint"]
    assert job_env["MINIO_ROOT_USER"] == minio_env["MINIO_ROOT_USER"]
    for pod in (server["spec"]["template"]["spec"], job["spec"]["template"]["spec"]):
        assert pod["securityContext"]["runAsNonRoot"] is True and pod["securityContext"]["runAsUser"] != 0
    # The chart writes no Secret: the keys are the user's (docs/deploy.md creates them).
    assert not quickstart.of_kind("Secret")


def test_minio_is_off_by_default():
    result = helm_template([], ["objectStore.url=s3://bucket"])
    assert result.returncode == 0, result.stderr
    assert "minio" not in result.stdout.lower()


@pytest.mark.parametrize("sets,message", [
    (["objectStore.url="], "minio.enabled: set objectStore.url to s3://BUCKET"),
    (["objectStore.url=s3://Bad_Bucket/x"], 'is not an S3 bucket name'),
    (["objectStore.s3.endpoint=http://minio.elsewhere:9000"],
     "set objectStore.s3.endpoint to http://strata-minio:9000"),
    (["objectStore.s3.pathStyle=false"], "objectStore.s3.pathStyle=true and objectStore.s3.allowHttp=true"),
    (["objectStore.s3.allowHttp=false"], "objectStore.s3.pathStyle=true and objectStore.s3.allowHttp=true"),
    (["objectStore.credentials.existingSecret="], "set objectStore.credentials.existingSecret"),
])
def test_chart_refuses_a_minio_the_brokers_would_not_reach(sets, message):
    result = helm_template([QUICKSTART], sets)
    assert result.returncode != 0, f"helm template accepted --set {sets}"
    assert message in result.stderr, f"expected {message!r} in:\n{result.stderr}"


def test_minio_endpoint_may_be_the_services_full_name():
    full = f"http://strata-minio.{NAMESPACE}.svc.cluster.local:9000"
    r = render_quickstart([f"objectStore.s3.endpoint={full}"])
    assert tomllib.loads(r.config_map()["strata.toml"])["s3_endpoint"] == full


def write_mc_stub(directory: Path, failures: int | None, with_mc: bool = True) -> None:
    """An `mc` that records its arguments and fails its first `failures` calls (None:
    every call); a `sleep` that returns at once but moves the clock of a `date` stub on by
    its argument, so the script's deadline passes without waiting for it."""
    directory.mkdir(parents=True, exist_ok=True)
    if with_mc:
        (directory / "mc").write_text(
            f"#!{sys.executable}\n"
            "import json, os, sys\n"
            "log = os.environ['STUB_LOG']\n"
            "calls = len(open(log).read().splitlines()) if os.path.exists(log) else 0\n"
            "with open(log, 'a') as f:\n"
            "    f.write(json.dumps({'args': sys.argv[1:], 'home': os.environ.get('HOME')}) + '\\n')\n"
            f"failures = {failures!r}\n"
            "sys.exit(1 if failures is None or calls < failures else 0)\n")
        (directory / "mc").chmod(0o755)
    clock = directory / "clock"
    clock.write_text("1000000")
    (directory / "sleep").write_text(f"#!/bin/bash\necho $(( $(cat {clock}) + $1 )) > {clock}\n")
    (directory / "sleep").chmod(0o755)
    (directory / "date").write_text(f"#!/bin/bash\n[ \"$1\" = +%s ] || exit 2\ncat {clock}\n")
    (directory / "date").chmod(0o755)


def job_script_and_env(quickstart: Rendered) -> tuple[str, dict[str, str]]:
    _, _, job = minio_parts(quickstart)
    mc = job["spec"]["template"]["spec"]["containers"][0]
    assert mc["command"] == ["/bin/bash", "-c"]
    env = {name: value if isinstance(value, str) else f"<{value['secretKeyRef']['key']}>"
           for name, value in env_of(mc).items()}
    return mc["args"][0], env


def test_bucket_job_waits_for_minio_then_creates_the_bucket(quickstart, tmp_path):
    script, env = job_script_and_env(quickstart)
    stubs = tmp_path / "stubs"
    write_mc_stub(stubs, failures=3)
    result, calls = run_script(script, env, tmp_path, stubs)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stderr.count("not ready") == 3, result.stderr
    assert calls[-2]["args"] == ["alias", "set", "strata", "http://strata-minio:9000",
                                 "<AWS_ACCESS_KEY_ID>", "<AWS_SECRET_ACCESS_KEY>"]
    assert calls[-1]["args"] == ["mb", "--ignore-existing", "strata/strata"]
    assert calls[-1]["home"] == "/tmp"


@pytest.mark.parametrize("timeout", [120, 300])
def test_bucket_job_gives_up_before_its_deadline_when_minio_never_answers(timeout, tmp_path):
    """The script's wait is bounded by time, not by a count of attempts: it stops
    WAIT_SECONDS after it started, a minute before the Job's activeDeadlineSeconds
    (minio.bucketJobTimeoutSeconds), whatever that is set to."""
    r = render_quickstart([f"minio.bucketJobTimeoutSeconds={timeout}"])
    (job,) = r.of_kind("Job")
    assert job["spec"]["activeDeadlineSeconds"] == timeout
    script, env = job_script_and_env(r)
    stubs = tmp_path / "stubs"
    write_mc_stub(stubs, failures=None)
    result, calls = run_script(script, env, tmp_path, stubs)
    assert result.returncode == 1, result.stdout + result.stderr
    assert not any(c["args"][0] == "mb" for c in calls), "mb ran although alias set never succeeded"
    assert f"did not answer within {timeout - 60} seconds" in result.stderr, result.stderr
    waited = int((stubs / "clock").read_text()) - 1000000
    assert timeout - 60 <= waited < timeout, f"waited {waited}s of fake time, deadline {timeout}s"


def test_bucket_job_says_so_when_its_image_has_no_mc(tmp_path):
    r = render_quickstart(["minio.jobImage.repository=example.org/tools", "minio.jobImage.tag=1"])
    _, server, job = minio_parts(r)
    assert job["spec"]["template"]["spec"]["containers"][0]["image"] == "example.org/tools:1"
    assert server["spec"]["template"]["spec"]["containers"][0]["image"].startswith("quay.io/minio/minio:")
    script, env = job_script_and_env(r)
    stubs = tmp_path / "stubs"
    write_mc_stub(stubs, failures=0, with_mc=False)
    # PATH without /usr/bin, where this machine may have an mc of its own (bash is run by
    # its full path); `command -v` is a builtin.
    result, calls = run_script(script, env | {"PATH": str(stubs)}, tmp_path, stubs)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "no mc in the image example.org/tools:1; set minio.jobImage" in result.stderr, result.stderr
    assert not calls


@pytest.mark.parametrize("sets,message", [
    (["minio.bucketJobTimeoutSeconds=60"], "minio.bucketJobTimeoutSeconds 60: at least 120"),
    (["minio.jobImage.repository=example.org/tools"], "minio.jobImage.tag: set it"),
])
def test_chart_refuses_bad_bucket_job_settings(sets, message):
    result = helm_template([QUICKSTART], sets)
    assert result.returncode != 0, f"helm template accepted --set {sets}"
    assert message in result.stderr, result.stderr


def test_notes_of_the_bundled_minio_say_evaluation_only_and_how_to_log_in():
    """With minio.enabled the notes warn (evaluation only, unpatched image) and show how to
    reach the console and read its root user and password from the Secret; without it
    they say nothing of MinIO."""
    from test_deploy import notes_of

    notes = notes_of([QUICKSTART])
    secret = yaml.safe_load(QUICKSTART.read_text())["objectStore"]["credentials"]["existingSecret"]
    assert "MinIO (minio.enabled): FOR EVALUATION ONLY." in notes
    assert "gets no security fixes" in notes
    assert f"kubectl -n {NAMESPACE} port-forward svc/{RELEASE}-minio 9001:9001" in notes
    for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        assert f"get secret {secret} -o jsonpath='{{.data.{key}}}' | base64 -d" in notes, notes
    assert "minio" not in notes_of([CHART / "ci" / "minio-secret-values.yaml"]).lower()


def test_network_policy_admits_only_the_brokers_the_bucket_job_and_minio_from():
    """The bundled MinIO (root user = the brokers' keys, plain HTTP) takes connections on
    its S3 port and console from the brokers, the bucket Job and networkPolicy.minioFrom
    only: not from other pods of the namespace, other namespaces or outside the cluster.
    With networkPolicy.enabled=false nothing selects it."""
    from test_deploy import Peer, allows

    backup = {"podSelector": {"matchLabels": {"app": "backup"}}}
    r = render_quickstart(["networkPolicy.minioFrom[0].podSelector.matchLabels.app=backup"])
    policies = r.of_kind("NetworkPolicy")
    _, server, job = minio_parts(r)
    minio = server["spec"]["template"]["metadata"]["labels"]
    broker = r.brokers()[0]["spec"]["template"]["metadata"]["labels"]
    bucket_job = job["spec"]["template"]["metadata"]["labels"]
    for port in (9000, 9001):
        assert allows(policies, minio, port, Peer(NAMESPACE, broker)), port
        assert allows(policies, minio, port, Peer(NAMESPACE, bucket_job)), port
        assert allows(policies, minio, port, Peer(NAMESPACE, backup["podSelector"]["matchLabels"])), port
        for other in (Peer(NAMESPACE, {"app": "client"}), Peer("apps", {"app": "backup"}), Peer(None, {})):
            assert not allows(policies, minio, port, other), (port, other)
    assert not allows(policies, minio, 9000, Peer(NAMESPACE, broker | {"app.kubernetes.io/instance": "other"}))
    # Without minioFrom the backup pod is refused too; without policies everything is open.
    policies = render_quickstart().of_kind("NetworkPolicy")
    assert not allows(policies, minio, 9000, Peer(NAMESPACE, backup["podSelector"]["matchLabels"]))
    policies = render_quickstart(["networkPolicy.enabled=false"]).of_kind("NetworkPolicy")
    assert not policies and allows(policies, minio, 9000, Peer(None, {}))


def copy_chart(tmp_path: Path) -> Path:
    chart = tmp_path / "strata"
    shutil.copytree(CHART, chart, symlinks=True)
    return chart


def template_chart(chart: Path, sets: list[str], values: list[Path] = ()) -> subprocess.CompletedProcess:
    command = [helm_binary(), "template", RELEASE, str(chart), "--namespace", NAMESPACE]
    for v in values:
        command += ["-f", str(v)]
    for s in sets:
        command += ["--set", s]
    return run(command)


# Chart 0.2.0's values.yaml, verbatim (`git show 11eb128:deploy/helm/strata/values.yaml`;
# a copy, so that a shallow clone runs the test too).
VALUES_0_2_0 = REPO_ROOT / "tests" / "fixtures" / "chart-0.2.0-values.yaml"
# The values files of chart 0.2.0's ci/ (user values a 0.2.0 release may have been
# installed with); the files added since need sections 0.2.0 did not have.
CI_VALUES_0_2_0 = ["no-values.yaml", "embedded-etcd-values.yaml", "external-etcd-irsa-values.yaml",
                   "minio-secret-values.yaml", "monitoring-values.yaml", "security-cert-manager-values.yaml",
                   "security-existing-secret-values.yaml"]


def chart_reusing_0_2_0_values(tmp_path: Path) -> Path:
    """This chart as `helm upgrade --reuse-values` renders it for a release installed with
    chart 0.2.0: Helm replaces the new chart's values.yaml with the old release's computed
    values, so every section added since is missing (not merely empty)."""
    chart = copy_chart(tmp_path)
    shutil.copyfile(VALUES_0_2_0, chart / "values.yaml")
    return chart


def test_fixture_is_chart_0_2_0_values_yaml():
    """The fixture is 0.2.0's file: the sections this release added are absent from it."""
    old = yaml.safe_load(VALUES_0_2_0.read_text())
    new = yaml.safe_load((CHART / "values.yaml").read_text())
    assert "security" in old and "networkPolicy" in old
    for section in ("minio", "externalAccess"):
        assert section in new and section not in old, section


@pytest.mark.parametrize("values", CI_VALUES_0_2_0)
def test_reused_0_2_0_values_render_without_the_new_sections(values, tmp_path):
    """`helm upgrade --reuse-values` from 0.2.0 renders with each 0.2.0 values file, and
    what the release gets from the new sections is nothing: no MinIO, no external listener,
    no etcd snapshot CronJob (etcd.snapshots is absent; docs/upgrading.md)."""
    chart = chart_reusing_0_2_0_values(tmp_path)
    result = template_chart(chart, [], [CHART / "ci" / values])
    assert result.returncode == 0, result.stderr
    docs = [d for d in yaml.safe_load_all(result.stdout) if d]
    text = json.dumps(docs)
    assert "minio" not in json.dumps([d["metadata"] for d in docs]).lower()
    assert "EXTERNAL" not in text and "-external" not in text
    current = helm_template([CHART / "ci" / values])
    assert current.returncode == 0, current.stderr
    assert "CronJob" not in {d["kind"] for d in docs}
    assert {(d["kind"], d["metadata"]["name"]) for d in docs} == \
        {(d["kind"], d["metadata"]["name"]) for d in yaml.safe_load_all(current.stdout) if d
         and d["kind"] != "CronJob"}


@pytest.mark.parametrize("sets,section", [
    (["minio.enabled=true"], "minio.enabled"),
    (["externalAccess.enabled=true"], "externalAccess.enabled"),
    (["externalAccess.enabled=true", "externalAccess.type=NodePort"], "externalAccess.enabled"),
])
def test_reused_0_2_0_values_turning_a_new_section_on_are_refused_with_the_fix(sets, section, tmp_path):
    """A 0.2.0 release upgraded with --reuse-values --set minio.enabled=true (or
    externalAccess.enabled=true) has that section holding only what was set: the chart
    names the fix rather than failing on a nil."""
    chart = chart_reusing_0_2_0_values(tmp_path)
    values = [QUICKSTART] if section.startswith("minio") else []
    result = template_chart(chart, sets + ([] if values else ["objectStore.url=s3://bucket"]), values)
    assert result.returncode != 0, f"rendered {section} without its defaults"
    assert f"{section}: " in result.stderr and "upgrade with --reset-then-reuse-values" in result.stderr, \
        result.stderr
    assert "nil pointer" not in result.stderr


def test_minio_pod_template_does_not_change_with_the_chart_version(quickstart, tmp_path):
    """MinIO's pod template carries only its selector's labels: a chart bump (which
    changes helm.sh/chart) must not restart it, while the brokers' labels do follow it."""
    chart = copy_chart(tmp_path)
    meta = yaml.safe_load((chart / "Chart.yaml").read_text())
    meta["version"] = "99.0.0"
    (chart / "Chart.yaml").write_text(yaml.safe_dump(meta))
    result = template_chart(chart, [], [QUICKSTART])
    assert result.returncode == 0, result.stderr
    bumped = Rendered("bumped", result.stdout, [d for d in yaml.safe_load_all(result.stdout) if d])
    _, server, _ = minio_parts(quickstart)
    _, bumped_server, _ = minio_parts(bumped)
    assert bumped_server["spec"]["template"] == server["spec"]["template"]
    assert bumped_server["metadata"]["labels"] != server["metadata"]["labels"], "the version bump did not take"


class KeyedMoto(MotoServer):
    """moto that checks access keys and signatures, as MinIO does (the session's moto
    accepts any keys): its first three AWS requests, which create an IAM user, its access
    key and an s3:* policy, go unchecked (INITIAL_NO_AUTH_ACTION_COUNT); every later one
    needs that key and its secret."""

    key = secret = ""

    def environment(self) -> dict[str, str]:
        return super().environment() | {"INITIAL_NO_AUTH_ACTION_COUNT": "3"}


def keyed_client(service: str, endpoint: str, key: str, secret: str):
    import boto3
    from botocore.config import Config

    return boto3.client(service, endpoint_url=endpoint, region_name=S3_REGION, aws_access_key_id=key,
                        aws_secret_access_key=secret,
                        config=Config(s3={"addressing_style": "path"}, proxies={}, retries={"max_attempts": 2}))


@pytest.fixture(scope="module")
def keyed_moto(tmp_path_factory):
    server = KeyedMoto(tmp_path_factory.mktemp("keyed-moto")).start()
    try:
        iam = keyed_client("iam", server.endpoint, "unchecked", "unchecked")
        iam.create_user(UserName="strata")
        created = iam.create_access_key(UserName="strata")["AccessKey"]
        iam.put_user_policy(UserName="strata", PolicyName="s3", PolicyDocument=json.dumps(
            {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "s3:*", "Resource": "*"}]}))
        server.key, server.secret = created["AccessKeyId"], created["SecretAccessKey"]
        yield server
    finally:
        server.stop()


def test_quickstart_configuration_runs_three_brokers_that_tier_to_the_bucket(quickstart, broker, etcd, keyed_moto):
    """Three brokers on the rendered strata.toml (the MinIO endpoint moved to moto on
    loopback, as start.sh's addresses are moved to loopback ports; moto refuses any key but
    the one the brokers get, as the Secret's): a topic created with
    the default replication factor gets three replicas, records produced with acks=all
    are read back, and a segment rolled at 1 MiB is uploaded under the quickstart's
    prefix of the bucket the Job creates."""
    from confluent_kafka.admin import NewTopic

    from clients import Rec, confluent_admin, confluent_consume, confluent_produce

    text = quickstart.config_map()["strata.toml"]
    toml = tomllib.loads(text)
    _, job_env = job_script_and_env(quickstart)
    moto = keyed_moto
    bucket = Bucket(moto, job_env["BUCKET"])
    bucket.client = keyed_client("s3", moto.endpoint, moto.key, moto.secret)
    bucket.create()
    # Keys other than the Secret's are refused, so the brokers' uploads below prove the
    # keys reached them.
    from botocore.exceptions import ClientError
    for wrong in (s3_client(moto.endpoint), keyed_client("s3", moto.endpoint, moto.key, "not-the-secret")):
        with pytest.raises(ClientError, match="InvalidAccessKeyId|SignatureDoesNotMatch"):
            wrong.list_objects_v2(Bucket=bucket.name)
    assert toml["object_store"].startswith(f"s3://{bucket.name}/")
    prefix = toml["object_store"].split("/", 3)[3]
    text = text.replace(f's3_endpoint = "{toml["s3_endpoint"]}"', f's3_endpoint = "{moto.endpoint}"')
    assert moto.endpoint in text
    (sts,) = quickstart.brokers()
    metadata = etcd.url(f"quickstart-{uuid.uuid4().hex[:8]}")
    brokers = []
    for node in range(3):
        pod = pod_env(container(sts), f"strata-{node}")
        # The Secret strata-minio holds moto's keys here.
        env = {"AWS_ACCESS_KEY_ID": moto.key, "AWS_SECRET_ACCESS_KEY": moto.secret,
               "NO_PROXY": "127.0.0.1,localhost", "no_proxy": "127.0.0.1,localhost",
               # The chart's value (the test fixture lowers it for lone brokers).
               "STRATA_OFFSETS_TOPIC_REPLICATION_FACTOR": "3",
               "STRATA_METADATA_REFRESH_INTERVAL_MS": "250"}
        assert pod["AWS_ACCESS_KEY_ID"].startswith("<secret strata-minio/")
        brokers.append(broker(metadata=metadata, config_text=text, name=f"strata-{node}", env=env,
                              args=["--node-id", str(node + int(pod["STRATA_NODE_ID_BASE"]))]))
    bootstrap = ",".join(b.bootstrap for b in brokers)
    wait_until("every broker listed", lambda: len(confluent_admin(bootstrap).list_topics(timeout=10).brokers) == 3,
               timeout=30)

    topic = "tiered-demo"
    # Replication factor left to the brokers (the chart's default_replication_factor).
    admin = confluent_admin(bootstrap)  # kept: the futures die with their client
    futures = admin.create_topics([NewTopic(topic, 3, config={"segment.bytes": "1048576"})], operation_timeout=30)
    futures[topic].result(timeout=60)
    partitions = wait_until("the topic's replicas", lambda: (
        p := confluent_admin(bootstrap).list_topics(topic, timeout=10).topics[topic].partitions) and len(p) == 3 and p,
        timeout=30)
    assert all(len(p.replicas) == 3 for p in partitions.values()), {i: p.replicas for i, p in partitions.items()}

    # 1.6 MiB per partition: each one rolls its first 1 MiB segment.
    produced = [Rec(partition=i % 3, key=str(i).encode(), value=(f"{i:08d}" * 1280).encode()) for i in range(480)]
    confluent_produce(bootstrap, topic, produced, "none")
    got = confluent_consume(bootstrap, topic, 3)
    assert sorted((g.partition, g.offset, g.value) for g in got) == \
        sorted((r.partition, r.offset, r.value) for r in produced)

    segments = wait_until("a segment of the topic in the bucket",
                          lambda: bucket.segment_objects(topic, prefix=prefix), timeout=60)
    assert all(s["size"] > 0 for s in segments.values()), segments
    assert all(key.startswith(prefix + "/") for key in bucket.objects()), sorted(bucket.objects())[:5]
    bucket.delete_all()


# ---------------------------------------------------------------------------------------
# docs/upgrading.md: what its procedures rely on in the rendered chart
# ---------------------------------------------------------------------------------------

UPGRADING = REPO_ROOT / "docs" / "upgrading.md"


def broker_statefulset(sets: list[str]) -> dict:
    result = helm_template([], ["objectStore.url=s3://bucket/prefix"] + sets)
    assert result.returncode == 0, result.stderr
    (sts,) = [d for d in yaml.safe_load_all(result.stdout)
              if d and d["kind"] == "StatefulSet" and d["metadata"]["name"] == "strata"]
    return sts


@pytest.mark.parametrize("change", ["storage.size=200Gi", "storage.className=gp3-fast", "podManagementPolicy=Parallel"])
def test_changes_a_statefulset_refuses_leave_the_pod_template_alone(change):
    """The volume resize of docs/upgrading.md recreates the StatefulSet around running
    pods: that restarts nothing only if the value changes no field but the one Kubernetes
    refuses to update, and leaves the pod template as it was."""
    before, after = broker_statefulset([]), broker_statefulset([change])
    changed = sorted(k for k in before["spec"] if before["spec"][k] != after["spec"].get(k))
    field = "podManagementPolicy" if change.startswith("podManagementPolicy") else "volumeClaimTemplates"
    assert changed == [field], changed
    assert before["spec"]["template"] == after["spec"]["template"]
    # A change that does touch the pod template (the image) is seen as one.
    assert broker_statefulset(["image.tag=9.9.9"])["spec"]["template"] != before["spec"]["template"]


def test_upgrading_md_names_real_values_claims_and_patches():
    text = UPGRADING.read_text()
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    named = set(re.findall(r"`([a-zA-Z]+(?:\.[a-zA-Z_0-9*]+)+)(?:=[^`]*)?`", text))
    checked = 0
    for path in sorted(named):
        head, *rest = path.split(".")
        if head not in values:
            continue
        node = values
        for part in [head] + [r for r in rest if r != "*"]:
            assert isinstance(node, dict) and part in node, f"docs/upgrading.md names {path}, not in values.yaml"
            node = node[part]
            if part in ("updateStrategy", "config", "resources"):
                break  # handed to Kubernetes or the broker as they are
        checked += 1
    assert checked >= 8, sorted(named)
    # The claims it patches are the ones the StatefulSet makes: <template>-<pod>.
    sts = broker_statefulset([])
    claim = sts["spec"]["volumeClaimTemplates"][0]["metadata"]["name"]
    assert f"pvc/{claim}-{sts['metadata']['name']}-0" in text
    patch = re.search(r"patch pvc \S+ -p '([^']+)'", text)
    assert patch and json.loads(patch.group(1)) == {"spec": {"resources": {"requests": {"storage": "200Gi"}}}}
    assert "--cascade=orphan" in text and "--reset-then-reuse-values --set storage.size=200Gi" in text


def test_chart_version_is_the_one_the_changelog_and_upgrading_md_name():
    """Chart.yaml's version is bumped with every chart change; the newest CHANGELOG.md entry
    and the newest notes of docs/upgrading.md name it, and appVersion is the broker's
    (Cargo workspace) version."""
    meta = yaml.safe_load((CHART / "Chart.yaml").read_text())
    changelog = (REPO_ROOT / "CHANGELOG.md").read_text()
    headings = re.findall(r"^## \[.+$", changelog, re.MULTILINE)
    assert f"chart {meta['version']}" in headings[0], headings[0]
    assert f"chart {meta['version']}" not in "".join(headings[1:]), headings
    notes = re.findall(r"^### .+$", UPGRADING.read_text().split("## Notes per version", 1)[1], re.MULTILINE)
    assert f"Chart {meta['version']}" in notes[0], notes[0]
    cargo = tomllib.loads((REPO_ROOT / "Cargo.toml").read_text())
    assert meta["appVersion"] == cargo["workspace"]["package"]["version"]
    assert f"broker {meta['appVersion']}" in headings[0], headings[0]


def test_quickstart_commands_of_deploy_md_build_a_loadable_image_and_wait_long_enough():
    """docs/deploy.md's kind quickstart: the image is built without a provenance
    attestation, which `kind load docker-image` cannot load from Docker's containerd image
    store (kind#3795); every `helm install`/`helm upgrade` with values-kind.yaml, there and
    in values-kind.yaml's own comment, passes a --timeout no shorter than the bucket Job's
    deadline (Helm's default 5m is shorter)."""
    text = (REPO_ROOT / "docs" / "deploy.md").read_text()
    block = re.search(r"```sh\n(kind create cluster.*?)```", text, re.DOTALL)
    assert block, "no kind quickstart block in docs/deploy.md"
    lines = block.group(1).splitlines()
    (build,) = [i for i, line in enumerate(lines) if line.startswith("docker build")]
    (load,) = [i for i, line in enumerate(lines) if line.startswith("kind load docker-image")]
    assert build < load and "--provenance=false" in lines[build], lines[build]
    deadline = yaml.safe_load((CHART / "values.yaml").read_text())["minio"]["bucketJobTimeoutSeconds"]
    assert "bucketJobTimeoutSeconds" not in QUICKSTART.read_text().split("\nminio:", 1)[1]
    commands = [line for source in (text, QUICKSTART.read_text()) for line in source.splitlines()
                if re.search(r"helm (install|upgrade) .*values-kind\.yaml", line)]
    assert len(commands) >= 2, commands
    for command in commands:
        timeout = re.search(r"--timeout (\d+)m\b", command)
        assert timeout, f"no --timeout in {command!r}"
        assert int(timeout.group(1)) * 60 >= deadline, (command, deadline)
