"""The chart's external access (values.yaml `externalAccess`): a per-broker EXTERNAL Kafka
listener reached through a NodePort, a load balancer per broker, or a name the user
routes (Domain).

For each mode `helm template` renders manifests that kubernetes-validate accepts; the
container's start script, run for every pod with a stub `strata`, advertises each
broker's own external address on EXTERNAL while the client listener (CLIENT, or PLAINTEXT
without security: the names it has with the feature off) keeps the in-cluster name;
there is one Service per broker selecting exactly that pod (ClusterIP for Domain); the
NetworkPolicy opens the external port (to the configured CIDRs) and keeps the admin API
and replication closed; the Certificate names the external hosts; unsafe or
inconsistent values fail the render with a message; scaling with listed addresses
leaves the pod template alone. Then two real brokers run the rendered strata.toml and
start.sh's advertised listeners (SASL_SSL on EXTERNAL, the test PKI of test_deploy): a
client configured from NOTES.txt bootstraps through the external listener, is told the
external addresses, produces and consumes, while a client of the internal listener is
told the internal ones.
"""

from __future__ import annotations

import ipaddress
import time
import tomllib
import uuid
from pathlib import Path

import pytest
import yaml

from servers import free_port, wait_until
from test_deploy import (KUBERNETES_VERSION, NAMESPACE, RELEASE, SECURITY_DIR, CHART, Peer, allows, container,
                         helm_binary, helm_template, kubernetes_validate_binary, notes_block, pod_env, pods, render,
                         run, run_script, write_pki, write_stub)

S3 = {"objectStore": {"url": "s3://strata/prod"}}
SECURED = {"security": {"enabled": True, "tls": {"existingSecret": "strata-broker-tls"},
                        "sasl": {"users": {"existingSecret": "strata-sasl-users"}},
                        "authorization": {"superUsers": ["User:admin"]},
                        "admin": {"existingSecret": "strata-admin-token"}}}
CERT_MANAGER = {"security": {"enabled": True, "tls": {"certManager": {"enabled": True, "issuerRef": {"name": "ca"}}},
                             "admin": {"existingSecret": "strata-admin-token"}}}
NODE_IP = "10.1.2.3"


def merge(*parts: dict) -> dict:
    out: dict = {}
    for part in parts:
        for key, value in part.items():
            out[key] = merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def render_dict(values: dict, tmp_path: Path, name: str):
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(values))
    return render(path), path


# Each mode: its values, then what each pod (by name) must advertise on EXTERNAL, and
# each broker's node port (NodePort only).
MODES = {
    "nodeport-node-address": (
        merge(S3, {"externalAccess": {"enabled": True, "type": "NodePort", "protocol": "PLAINTEXT",
                                      "allowPlaintext": True}}),
        {"strata-0": f"{NODE_IP}:30020", "strata-1": f"{NODE_IP}:30021", "strata-2": f"{NODE_IP}:30022"},
        {"strata-0": 30020, "strata-1": 30021, "strata-2": 30022}),
    # One name for every node (externalTrafficPolicy Cluster: any node forwards each
    # broker's node port to it); zones take the default zoneOffset.
    "nodeport-one-name": (
        merge(S3, SECURED, {"zones": ["a", "b"], "replicas": 2,
                            "externalAccess": {"enabled": True, "type": "NodePort",
                                               "hostPattern": "nodes.kafka.example.com"}}),
        {"strata-a-0": "nodes.kafka.example.com:30020", "strata-a-1": "nodes.kafka.example.com:30021",
         "strata-b-0": "nodes.kafka.example.com:30040", "strata-b-1": "nodes.kafka.example.com:30041"},
        {"strata-a-0": 30020, "strata-a-1": 30021, "strata-b-0": 30040, "strata-b-1": 30041}),
    "nodeport-zones-hosts": (
        merge(S3, SECURED, {"zones": ["us-east-1a", "us-east-1b"], "replicas": 2,
                            "externalAccess": {"enabled": True, "type": "NodePort",
                                               "hostPattern": "{pod}.nodes.example.com",
                                               "nodePort": {"base": 32000, "zoneOffset": 10}}}),
        {"strata-us-east-1a-0": "strata-us-east-1a-0.nodes.example.com:32000",
         "strata-us-east-1a-1": "strata-us-east-1a-1.nodes.example.com:32001",
         "strata-us-east-1b-0": "strata-us-east-1b-0.nodes.example.com:32010",
         "strata-us-east-1b-1": "strata-us-east-1b-1.nodes.example.com:32011"},
        {"strata-us-east-1a-0": 32000, "strata-us-east-1a-1": 32001, "strata-us-east-1b-0": 32010,
         "strata-us-east-1b-1": 32011}),
    "loadbalancer": (
        merge(S3, CERT_MANAGER, {"externalAccess": {
            "enabled": True, "hostPattern": "strata-{ordinal}.kafka.example.com",
            "service": {"annotations": {"service.beta.kubernetes.io/aws-load-balancer-type": "external",
                                        "external-dns.alpha.kubernetes.io/hostname":
                                            "strata-{ordinal}.kafka.example.com"},
                        "externalTrafficPolicy": "Local", "loadBalancerSourceRanges": ["203.0.113.0/24"]},
            # Clients, and the VPC: the NLB's health checks come from its private addresses.
            "networkPolicy": {"allowedCidrs": ["203.0.113.0/24", "10.0.0.0/16"]}}}),
        {"strata-0": "strata-0.kafka.example.com:9094", "strata-1": "strata-1.kafka.example.com:9094",
         "strata-2": "strata-2.kafka.example.com:9094"},
        None),
    "loadbalancer-zones-hosts": (
        merge(S3, CERT_MANAGER, {"zones": ["a", "b"], "replicas": 1, "externalAccess": {
            "enabled": True, "port": 19092, "hosts": ["kafka-a.example.com", "203.0.113.7"]}}),
        {"strata-a-0": "kafka-a.example.com:19092", "strata-b-0": "203.0.113.7:19092"},
        None),
    # SSL (certificates) on the client listener, SASL_SSL only on EXTERNAL: the SASL users
    # file must still be mounted.
    "ssl-client-sasl-external": (
        merge(S3, SECURED, {"security": {"protocol": "SSL", "tls": {"clientAuth": "requested"}},
                            "externalAccess": {"enabled": True, "hostPattern": "strata-{ordinal}.kafka.example.com"}}),
        {"strata-0": "strata-0.kafka.example.com:9094", "strata-1": "strata-1.kafka.example.com:9094",
         "strata-2": "strata-2.kafka.example.com:9094"},
        None),
    "domain": (
        merge(S3, SECURED, {"zones": ["a", "b"], "replicas": 2, "externalAccess": {
            "enabled": True, "type": "Domain", "hostPattern": "b{nodeId}.kafka.example.com", "port": 443}}),
        {"strata-a-0": "b0.kafka.example.com:443", "strata-a-1": "b1.kafka.example.com:443",
         "strata-b-0": "b1000.kafka.example.com:443", "strata-b-1": "b1001.kafka.example.com:443"},
        None),
}


def resolved_env(c: dict, pod: str) -> dict[str, str]:
    """pod_env, with the node's address (status.hostIP) set to NODE_IP."""
    plain = dict(c, env=[e for e in c["env"] if e["name"] != "HOST_IP"])
    env = pod_env(plain, pod)
    if any(e["name"] == "HOST_IP" for e in c["env"]):
        (host_ip,) = [e for e in c["env"] if e["name"] == "HOST_IP"]
        assert host_ip["valueFrom"]["fieldRef"]["fieldPath"] == "status.hostIP"
        env["HOST_IP"] = NODE_IP
    return env


def addresses_env(r, tmp_path: Path) -> dict[str, str]:
    """STRATA_EXTERNAL_ADDRESSES for start.sh: the rendered ConfigMap of listed external
    addresses, where the pod would have it mounted (nothing when the chart renders none)."""
    found = [c for c in r.of_kind("ConfigMap") if c["metadata"]["name"] == f"{r.fullname()}-external-addresses"]
    if not found:
        return {}
    path = tmp_path / f"addresses-{uuid.uuid4().hex[:8]}"
    path.write_text(found[0]["data"]["addresses"])
    return {"STRATA_EXTERNAL_ADDRESSES": str(path)}


def allows_from_address(policies: list[dict], pod_labels: dict, port: int, address: str) -> bool:
    """Whether a connection from `address` outside the cluster reaches `port` (ipBlock
    peers; test_deploy's `allows` evaluates pod peers)."""
    for policy in policies:
        if not policy["spec"]["podSelector"]["matchLabels"].items() <= pod_labels.items():
            continue
        for rule in policy["spec"]["ingress"]:
            if not any(p["port"] == port for p in rule["ports"]):
                continue
            if "from" not in rule:
                return True
            for source in rule["from"]:
                block = source.get("ipBlock")
                if block and ipaddress.ip_address(address) in ipaddress.ip_network(block["cidr"]) and \
                        not any(ipaddress.ip_address(address) in ipaddress.ip_network(x)
                                for x in block.get("except", [])):
                    return True
    return False


@pytest.mark.parametrize("mode", list(MODES))
def test_each_broker_advertises_its_own_external_address(mode, tmp_path):
    values, expected, node_ports = MODES[mode]
    r, path = render_dict(values, tmp_path, mode)
    ext = merge(yaml.safe_load((CHART / "values.yaml").read_text())["externalAccess"], values["externalAccess"])

    # Kubernetes accepts every object; helm lint --strict passes.
    manifest = tmp_path / "manifest.yaml"
    manifest.write_text(r.text)
    validated = run([kubernetes_validate_binary(), "--strict", "-k", KUBERNETES_VERSION, str(manifest)])
    assert validated.returncode == 0, validated.stdout + validated.stderr
    lint = run([helm_binary(), "lint", "--strict", str(CHART), "-f", str(path)])
    assert lint.returncode == 0, lint.stdout + lint.stderr

    data = r.config_map()
    toml = tomllib.loads(data["strata.toml"])
    listeners = dict(x.split("://") for x in toml["listeners"].split(","))
    protocols = dict(x.split(":") for x in toml["listener_security_protocol_map"].split(","))
    assert listeners["EXTERNAL"] == f"0.0.0.0:{ext['containerPort']}" and "listen" not in toml
    assert protocols["EXTERNAL"] == ext["protocol"]
    if ext["protocol"].startswith("SASL_"):
        assert toml["sasl_enabled_mechanisms"] == "SCRAM-SHA-512"

    stub_dir = tmp_path / "bin"
    write_stub(stub_dir)
    advertised = {}
    for sts in r.brokers():
        c = container(sts)
        # Every file strata.toml names under the security directory is on a mounted volume
        # (a missing one stops the broker at start).
        mounts = [m["mountPath"] for m in c["volumeMounts"]]
        volumes = {v["name"] for v in sts["spec"]["template"]["spec"]["volumes"]}
        assert {m["name"] for m in c["volumeMounts"]} <= volumes | {"data"}
        for key, value in toml.items():
            if isinstance(value, str) and value.startswith(SECURITY_DIR + "/"):
                assert any(value.startswith(m + "/") for m in mounts), f"{key} = {value}: no volume mounted there"
        ports = {p["name"]: p["containerPort"] for p in c["ports"]}
        assert ports["kafka-external"] == ext["containerPort"]
        for pod in pods(sts):
            env = resolved_env(c, pod) | {"STRATA_CONFIG_FILE": str(tmp_path / "strata.toml")} | addresses_env(r, tmp_path)
            result, calls = run_script(data["start.sh"], env, tmp_path, stub_dir)
            assert result.returncode == 0, f"start.sh for {pod}:\n{result.stderr}"
            announced = dict(x.split("://") for x in calls[-1]["env"]["STRATA_ADVERTISED_LISTENERS"].split(","))
            # Every listener strata.toml binds is advertised, and nothing else.
            assert announced.keys() == listeners.keys()
            # In-cluster clients keep the pod's own name; EXTERNAL gets the outside address.
            client = "CLIENT" if values.get("security", {}).get("enabled") else "PLAINTEXT"
            assert announced[client] == f"{pod}.strata-headless.{NAMESPACE}.svc.cluster.local:9092"
            advertised[pod] = announced["EXTERNAL"]
    assert advertised == expected

    # One Service per broker; Domain's are ClusterIP, the target of the user's proxy.
    services = [s for s in r.of_kind("Service") if s["metadata"]["labels"].get("strata.dev/service") == "external"]
    assert sorted(s["metadata"]["name"] for s in services) == sorted(f"{p}-external" for p in expected)
    for s in services:
        pod = s["metadata"]["name"].removesuffix("-external")
        spec = s["spec"]
        assert spec["type"] == {"Domain": "ClusterIP"}.get(ext["type"], ext["type"])
        # Exactly this broker: the StatefulSet's pod-name label.
        assert spec["selector"]["statefulset.kubernetes.io/pod-name"] == pod
        assert spec["selector"]["app.kubernetes.io/component"] == "broker"
        (port,) = spec["ports"]
        assert port["targetPort"] == "kafka-external"
        if ext["type"] == "NodePort":
            assert port["nodePort"] == node_ports[pod]
        else:
            assert port["port"] == int(expected[pod].rsplit(":", 1)[1])
        if mode == "loadbalancer":
            host = expected[pod].rsplit(":", 1)[0]
            assert s["metadata"]["annotations"]["external-dns.alpha.kubernetes.io/hostname"] == host
            assert spec["externalTrafficPolicy"] == "Local"
            assert spec["loadBalancerSourceRanges"] == ["203.0.113.0/24"]

    # NetworkPolicy: the external port open (to allowedCidrs when set), the admin API
    # and replication still closed to everyone outside the release.
    policies = r.of_kind("NetworkPolicy")
    cidrs = ext["networkPolicy"]["allowedCidrs"]
    for sts in r.brokers():
        labels = sts["spec"]["template"]["metadata"]["labels"]
        assert allows_from_address(policies, labels, ext["containerPort"], "10.0.5.5") == (
            not cidrs or "10.0.0.0/16" in cidrs)
        assert allows_from_address(policies, labels, ext["containerPort"], "198.51.100.1") == (not cidrs)
        for port in (9093, 9094):
            assert not allows_from_address(policies, labels, port, "10.0.5.5")
            assert not allows(policies, labels, port, Peer(None, {}))
            assert not allows(policies, labels, port, Peer("apps", {"app": "producer"}))

    # The Certificate names every external host (clients outside check them).
    for cert in r.of_kind("Certificate"):
        hosts = {a.rsplit(":", 1)[0] for a in expected.values()}
        named = set(cert["spec"]["dnsNames"]) | set(cert["spec"]["ipAddresses"])
        assert hosts <= named, hosts - named

    # The notes list every external address and the client settings, without a secret.
    notes = notes_of_values(path)
    for pod, address in expected.items():
        shown = address if not address.startswith(NODE_IP) else "<its node's address>:" + address.rsplit(":", 1)[1]
        assert f"  {pod} (node id " in notes and shown in notes, (pod, shown)
    client = notes_block(notes, "Clients outside the cluster")
    assert client["security.protocol"] == ext["protocol"]
    if mode != "nodeport-node-address":
        assert client["bootstrap.servers"].split(",") == list(expected.values())
    # Node ports above the default range's static band (30000-30085, KEP-3668) may be
    # taken by automatically assigned ones; the notes say which.
    assert ("in the band Kubernetes (1.29+)" in notes) == any(p > 30085 for p in (node_ports or {}).values())
    # Behind load balancers, allowedCidrs must admit their health checks (private addresses).
    assert ("must include the VPC CIDR" in notes) == bool(cidrs and ext["type"] == "LoadBalancer")
    if ext["protocol"] == "SASL_SSL":
        assert client["sasl.password"] == "<password>" and client["ssl.ca.location"] == "ca.crt"
    else:
        assert "WARNING: externalAccess.allowPlaintext" in notes


def in_cluster_listeners(values: dict, tmp_path: Path, name: str) -> dict[str, str]:
    """strata-0's Kafka listeners other than EXTERNAL, as the broker would name them:
    name -> (bound address, advertised address). Without `listeners` the broker names
    `listen` PLAINTEXT."""
    r, _ = render_dict(values, tmp_path, name)
    data = r.config_map()
    toml = tomllib.loads(data["strata.toml"])
    stub_dir = tmp_path / "bin"
    write_stub(stub_dir)
    (sts,) = r.brokers()
    env = resolved_env(container(sts), "strata-0") | {"STRATA_CONFIG_FILE": str(tmp_path / "unused.toml")}
    result, calls = run_script(data["start.sh"], env, tmp_path, stub_dir)
    assert result.returncode == 0, result.stderr
    serve = calls[-1]["env"]
    if "listeners" not in toml:
        return {"PLAINTEXT": (toml["listen"], serve["STRATA_ADVERTISE"])}
    bound = dict(x.split("://") for x in toml["listeners"].split(","))
    advertised = dict(x.split("://") for x in serve["STRATA_ADVERTISED_LISTENERS"].split(","))
    return {n: (bound[n], advertised[n]) for n in bound if n != "EXTERNAL"}


@pytest.mark.parametrize("base", ["plaintext", "secured", "secured-internal"])
def test_turning_external_access_on_keeps_the_in_cluster_listener_names(base, tmp_path):
    """A broker answers Metadata, DescribeCluster and FindCoordinator with the other
    brokers' addresses on the caller's listener name, and leaves out a broker that has no
    listener of that name. During the roll that turns externalAccess on, old and new
    brokers run side by side: the in-cluster listeners must keep their names, bind
    addresses and advertised addresses."""
    values = {"plaintext": S3, "secured": merge(S3, SECURED),
              "secured-internal": merge(S3, SECURED, {"security": {"internalListener": {"enabled": True},
                                                                   "tls": {"clientAuth": "requested"}}})}[base]
    external = {"enabled": True, "type": "NodePort"}
    if base == "plaintext":
        external |= {"protocol": "PLAINTEXT", "allowPlaintext": True}
    else:
        external |= {"hostPattern": "{pod}.nodes.example.com"}
    off = in_cluster_listeners(values, tmp_path, f"{base}-off")
    on = in_cluster_listeners(merge(values, {"externalAccess": external}), tmp_path, f"{base}-on")
    assert on == off
    assert off.keys() == {"plaintext": {"PLAINTEXT"}, "secured": {"CLIENT"},
                          "secured-internal": {"CLIENT", "INTERNAL"}}[base]


@pytest.mark.parametrize("listed", ["hosts", "nodePort.ports"])
def test_scaling_with_listed_addresses_restarts_no_broker(listed, tmp_path):
    """Scaling from 3 to 4 brokers extends `hosts` (or `nodePort.ports`) in the same values
    change. The brokers' pod template, and so checksum/config, must not change with it,
    or the StatefulSet rolls every broker. The new pod reads its address from the
    mounted list; a pod the list misses fails at start and says what to extend."""
    def values(n: int) -> dict:
        if listed == "hosts":
            ext = {"hosts": [f"b{i}.kafka.example.com" for i in range(n)]}
            return merge(S3, CERT_MANAGER, {"replicas": n, "externalAccess": ON | ext})
        ext = {"type": "NodePort", "protocol": "PLAINTEXT", "allowPlaintext": True,
               "nodePort": {"ports": [30100 + i for i in range(n)]}}
        return merge(S3, {"replicas": n, "externalAccess": ON | ext})

    three, _ = render_dict(values(3), tmp_path, "three")
    four, _ = render_dict(values(4), tmp_path, "four")
    (sts3,), (sts4,) = three.brokers(), four.brokers()
    assert sts3["spec"]["template"] == sts4["spec"]["template"]
    assert sts4["spec"]["replicas"] == 4

    c = container(sts4)
    (mount,) = [m for m in c["volumeMounts"] if m["name"] == "external-addresses"]
    (volume,) = [v for v in sts4["spec"]["template"]["spec"]["volumes"] if v["name"] == "external-addresses"]
    assert volume["configMap"]["name"] == "strata-external-addresses"
    data = four.config_map()
    assert f'{mount["mountPath"]}/addresses' in data["start.sh"]

    stub_dir = tmp_path / "bin"
    write_stub(stub_dir)
    env = resolved_env(c, "strata-3") | {"STRATA_CONFIG_FILE": str(tmp_path / "unused.toml")}
    result, calls = run_script(data["start.sh"], env | addresses_env(four, tmp_path), tmp_path, stub_dir)
    assert result.returncode == 0, result.stderr
    announced = dict(x.split("://") for x in calls[-1]["env"]["STRATA_ADVERTISED_LISTENERS"].split(","))
    assert announced["EXTERNAL"] == ("b3.kafka.example.com:9094" if listed == "hosts" else f"{NODE_IP}:30103")

    # The new pod with the old list (the values change forgot to extend it).
    result, calls = run_script(data["start.sh"], env | addresses_env(three, tmp_path), tmp_path, stub_dir)
    assert result.returncode == 2 and not calls
    assert f"externalAccess names no address for pod 'strata-3': give every broker an entry in " \
           f"externalAccess.{listed}" in result.stderr


def test_node_ports_follow_a_custom_range_and_its_static_band(tmp_path):
    """nodePort.range moves the accepted ports and the static band (KEP-3668: the lowest
    min(max(16, size/32), 128) ports): in 20000-20999 (1000 ports) the band is
    20000-20030, so 20031 draws the warning and 20030 does not."""
    for base, warned in ((20029, True), (20028, False)):
        values = merge(S3, {"externalAccess": ON | {"type": "NodePort", "protocol": "PLAINTEXT",
                                                    "allowPlaintext": True,
                                                    "nodePort": {"range": "20000-20999", "base": base}}})
        r, path = render_dict(values, tmp_path, f"range-{base}")
        ports = sorted(s["spec"]["ports"][0]["nodePort"] for s in r.of_kind("Service")
                       if s["metadata"]["name"].endswith("-external"))
        assert ports == [base, base + 1, base + 2]
        notes = notes_of_values(path)
        assert ("WARNING: node ports 20031 lie above 20030" in notes) == warned, notes


def notes_of_values(path: Path) -> str:
    result = run([helm_binary(), "install", "--dry-run=client", RELEASE, str(CHART), "--namespace", NAMESPACE,
                  "-f", str(path)])
    assert result.returncode == 0, result.stderr
    return result.stdout.split("NOTES:", 1)[1]


def test_notes_say_where_outside_clients_go(tmp_path):
    """Without externalAccess the notes say clients must run inside the cluster and point
    to External access; with it, they say outside clients use the external listener and
    no longer claim that clients must be inside."""
    inside = "so clients must run inside the cluster"
    path = tmp_path / "plain.yaml"
    path.write_text(yaml.safe_dump(S3))
    notes = " ".join(notes_of_values(path).split())
    assert inside in notes and '(docs/deploy.md, "External access")' in notes, notes
    path = tmp_path / "external.yaml"
    path.write_text(yaml.safe_dump(merge(S3, {"externalAccess": {"enabled": True, "type": "NodePort",
                                                                  "protocol": "PLAINTEXT", "allowPlaintext": True}})))
    notes = " ".join(notes_of_values(path).split())
    assert inside not in notes, notes
    assert "clients outside the cluster use the external listener" in notes, notes


def test_default_install_has_no_external_listener(tmp_path):
    r, _ = render_dict(S3, tmp_path, "plain")
    assert "EXTERNAL" not in r.text and "kafka-external" not in r.text
    assert not [s for s in r.of_kind("Service") if s["metadata"]["name"].endswith("-external")]


ON = {"enabled": True}


@pytest.mark.parametrize("values,message", [
    # Unsafe: an external listener without TLS needs the loud opt-in.
    (merge(S3, {"externalAccess": ON | {"type": "NodePort"}}), "needs security.enabled=true"),
    (merge(S3, {"externalAccess": ON | {"type": "NodePort", "protocol": "PLAINTEXT"}}),
     "set externalAccess.allowPlaintext=true"),
    (merge(S3, SECURED, {"externalAccess": ON | {"type": "NodePort", "protocol": "SASL_PLAINTEXT",
                                                 "hostPattern": "b{ordinal}.example.com"}}),
     "set externalAccess.allowPlaintext=true"),
    (merge(S3, {"externalAccess": ON | {"type": "NodePort", "protocol": "SASL_PLAINTEXT", "allowPlaintext": True}}),
     "needs security.enabled=true"),
    (merge(S3, SECURED, {"externalAccess": ON | {"type": "NodePort"}}), "cannot name node addresses"),
    (merge(S3, SECURED, {"security": {"protocol": "SSL"},
                         "externalAccess": ON | {"hostPattern": "b{ordinal}.example.com"}}),
     "SASL clients would need a certificate too"),
    # Inconsistent.
    (merge(S3, SECURED, {"externalAccess": ON | {"type": "Ingress"}}), 'externalAccess.type "Ingress"'),
    (merge(S3, SECURED, {"externalAccess": ON}), "set externalAccess.hostPattern"),
    (merge(S3, SECURED, {"externalAccess": ON | {"hostPattern": "kafka.example.com"}}),
     "every broker needs its own address"),
    (merge(S3, SECURED, {"zones": ["a", "b"], "externalAccess": ON | {"hostPattern": "b{ordinal}.example.com"}}),
     "ordinals repeat in each zone"),
    (merge(S3, SECURED, {"externalAccess": ON | {"hostPattern": "{zone}-{ordinal}.example.com"}}),
     "{zone} needs `zones`"),
    (merge(S3, SECURED, {"externalAccess": ON | {"hostPattern": "b{id}.example.com"}}), "the only placeholders"),
    (merge(S3, SECURED, {"externalAccess": ON | {"hostPattern": "b{ordinal}.example.com;rm"}}),
     "a DNS name with the placeholders"),
    (merge(S3, SECURED, {"externalAccess": ON | {"hosts": ["a.example.com", "b.example.com"]}}),
     "2 entries for 3 brokers"),
    (merge(S3, SECURED, {"externalAccess": ON | {"hosts": ["a.example.com"] * 3}}), "would both advertise"),
    # An empty entry would leave that pod's start.sh without an address.
    (merge(S3, {"externalAccess": ON | {"type": "NodePort", "protocol": "PLAINTEXT", "allowPlaintext": True,
                                        "hosts": ["a.example.com", "", "c.example.com"]}}),
     "externalAccess.hosts[1] is empty"),
    (merge(S3, SECURED, {"externalAccess": ON | {"hosts": ["a.example.com", None, "c.example.com"]}}),
     "externalAccess.hosts[1] is empty"),
    (merge(S3, SECURED, {"externalAccess": ON | {"hosts": ["a", "b", "c"], "hostPattern": "b{ordinal}.x"}}),
     "not both"),
    (merge(S3, {"replicas": 5, "zones": ["a", "b"], "externalAccess": ON | {
        "type": "NodePort", "protocol": "PLAINTEXT", "allowPlaintext": True, "nodePort": {"zoneOffset": 4}}}),
     "zoneOffset 4"),
    (merge(S3, {"externalAccess": ON | {"type": "NodePort", "protocol": "PLAINTEXT", "allowPlaintext": True,
                                        "nodePort": {"ports": [31000, 31001]}}}), "2 entries for 3 brokers"),
    (merge(S3, SECURED, {"externalAccess": ON | {"hostPattern": "b{ordinal}.x", "containerPort": 9094}}),
     "another listener of the broker uses it"),
    (merge(S3, {"externalAccess": {"hostPattern": "b{ordinal}.x"}}), "apply only with externalAccess.enabled"),
    # Node ports outside the cluster's range, or a range that is not one.
    (merge(S3, {"externalAccess": ON | {"type": "NodePort", "protocol": "PLAINTEXT", "allowPlaintext": True,
                                        "nodePort": {"base": 29999}}}),
     "29999 (broker strata-0) is outside the node-port range 30000-32767"),
    (merge(S3, {"externalAccess": ON | {"type": "NodePort", "protocol": "PLAINTEXT", "allowPlaintext": True,
                                        "nodePort": {"ports": [30000, 30001, 32768]}}}),
     "32768 (broker strata-2) is outside the node-port range 30000-32767"),
    (merge(S3, {"externalAccess": ON | {"type": "NodePort", "protocol": "PLAINTEXT", "allowPlaintext": True,
                                        "nodePort": {"range": "20000-22767"}}}),
     "30020 (broker strata-0) is outside the node-port range 20000-22767"),
    (merge(S3, {"externalAccess": ON | {"type": "NodePort", "protocol": "PLAINTEXT", "allowPlaintext": True,
                                        "nodePort": {"range": "30000:32767"}}}),
     'externalAccess.nodePort.range "30000:32767"'),
    # One name for all brokers, but with Local a node forwards only to a broker it runs.
    (merge(S3, SECURED, {"externalAccess": ON | {"type": "NodePort", "hostPattern": "nodes.example.com",
                                                 "service": {"externalTrafficPolicy": "Local"}}}),
     "brokers strata-0 and strata-1 both advertise nodes.example.com"),
    # Node ports outside NodePort would be silently ignored: every broker advertises `port`.
    (merge(S3, SECURED, {"externalAccess": ON | {"type": "Domain", "hostPattern": "b{ordinal}.x",
                                                 "nodePort": {"ports": [31000, 31001, 31002]}}}),
     "nodePort.ports: apply only with type NodePort"),
])
def test_chart_refuses_unsafe_or_inconsistent_external_values(values, message, tmp_path):
    path = tmp_path / "values.yaml"
    path.write_text(yaml.safe_dump(values))
    result = helm_template([path])
    assert result.returncode != 0, f"helm template accepted {values}"
    assert message in result.stderr, f"expected {message!r} in:\n{result.stderr}"


def test_external_clients_get_external_addresses_from_real_brokers(broker, etcd, tmp_path):
    """Two real brokers with the rendered strata.toml and the advertised listeners
    start.sh exports (NodePort mode, SASL_SSL, both brokers named localhost, each with its
    node port), so the broker's own parser reads the chart's `listeners`,
    `listener_security_protocol_map` and `advertised_listeners`. Only bind addresses
    move to loopback (the node ports stand for kube-proxy's forwarding, and each broker's
    client port is a free one, given to start.sh as KAFKA_PORT), and the pods'
    in-cluster names, which do not resolve here, become 127.0.0.1. A client set up from
    the notes' external settings bootstraps through EXTERNAL, is told the external
    addresses, creates a replicated topic, produces with acks=all and consumes; a client
    of the client listener is told the internal addresses by each broker; a wrong
    password is refused."""
    from confluent_kafka import Consumer, KafkaError, KafkaException, Producer
    from confluent_kafka.admin import AdminClient, NewTopic

    node_ports = [free_port(), free_port()]
    # Free ports stand for node ports: the range admits them.
    values = merge(S3, SECURED, {"replicas": 2, "externalAccess": ON | {
        "type": "NodePort", "hosts": ["localhost", "localhost"],
        "nodePort": {"ports": node_ports, "range": "1024-65535"}}})
    r, path = render_dict(values, tmp_path, "real")
    data = r.config_map()
    (sts,) = r.brokers()

    pki = write_pki(tmp_path / "pki", ["localhost", "127.0.0.1"])
    password = uuid.uuid4().hex
    root = tmp_path / "mounts"
    for name, content in {"tls/tls.crt": pki["cert"].read_text(), "tls/tls.key": pki["key"].read_text(),
                          "tls/ca.crt": pki["ca"].read_text(), "sasl/users": f"admin:SCRAM-SHA-512:{password}\n",
                          "admin/token": uuid.uuid4().hex + "\n"}.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(content)
    text = data["strata.toml"].replace(SECURITY_DIR, str(root))
    rendered_listeners = f'listeners = "CLIENT://0.0.0.0:9092,EXTERNAL://0.0.0.0:{values_external_port(r)}"'
    assert rendered_listeners in text

    stub_dir = tmp_path / "bin"
    write_stub(stub_dir)
    metadata = etcd.url(f"external-{uuid.uuid4().hex[:8]}")
    internal = {}
    for ordinal, pod in enumerate(pods(sts)):
        internal[ordinal] = free_port()
        env = pod_env(container(sts), pod) | {"STRATA_CONFIG_FILE": str(tmp_path / "unused.toml"),
                                              "KAFKA_PORT": str(internal[ordinal])} | addresses_env(r, tmp_path)
        result, calls = run_script(data["start.sh"], env, tmp_path, stub_dir)
        assert result.returncode == 0, result.stderr
        serve = calls[-1]["env"]
        advertised = serve["STRATA_ADVERTISED_LISTENERS"]
        announced = dict(x.split("://") for x in advertised.split(","))
        assert announced.keys() == {"CLIENT", "EXTERNAL"}
        assert announced["EXTERNAL"] == f"localhost:{node_ports[ordinal]}"
        in_cluster = f"{pod}.strata-headless.{NAMESPACE}.svc.cluster.local"
        assert announced["CLIENT"] == f"{in_cluster}:{internal[ordinal]}"
        # strata.toml's listeners bound on loopback: CLIENT on the free port, EXTERNAL on
        # the broker's node port. Nothing else in the file changes.
        config = text.replace(rendered_listeners, f'listeners = "CLIENT://127.0.0.1:{internal[ordinal]},'
                                                  f'EXTERNAL://127.0.0.1:{node_ports[ordinal]}"')
        env = {
            # What start.sh exports, with 127.0.0.1 for the pod's in-cluster name.
            "STRATA_ADVERTISED_LISTENERS": advertised.replace(in_cluster, "127.0.0.1"),
            "STRATA_DEFAULT_REPLICATION_FACTOR": "2", "STRATA_MIN_INSYNC_REPLICAS": "1",
            "STRATA_METADATA_REFRESH_INTERVAL_MS": "200",
        }
        broker(metadata=metadata, config_text=config, env=env, name=pod,
               args=["--object-store", f"file://{tmp_path / 'objects'}", "--node-id", serve["STRATA_NODE_ID"]])

    notes = notes_of_values(path)
    fill = {"<user>": "admin", "<password>": password, "ca.crt": str(pki["ca"])}
    external = {k: fill.get(v, v) for k, v in notes_block(notes, "Clients outside the cluster").items()}
    assert external["bootstrap.servers"] == ",".join(f"localhost:{p}" for p in node_ports)
    assert external["security.protocol"] == "SASL_SSL" and external["sasl.mechanism"] == "SCRAM-SHA-512"

    def brokers_seen(config: dict) -> set[tuple[str, int]]:
        meta = AdminClient(config).list_topics(timeout=30)
        return {(b.host, b.port) for b in meta.brokers.values()}

    external_addresses = {("localhost", p) for p in node_ports}
    wait_until("both brokers on the external listener", lambda: brokers_seen(external) == external_addresses,
               timeout=60)
    # Each broker's own view: the wait above proves only that some broker sees both.
    internal_addresses = {("127.0.0.1", p) for p in internal.values()}
    for port in internal.values():
        internal_client = external | {"bootstrap.servers": f"127.0.0.1:{port}"}
        wait_until(f"both brokers on the client listener, asked through 127.0.0.1:{port}",
                   lambda client=internal_client: brokers_seen(client) == internal_addresses, timeout=60)

    admin = AdminClient(external)
    for future in admin.create_topics([NewTopic("outside", 2, 2)]).values():
        future.result(timeout=30)
    producer = Producer(external | {"acks": "all"})
    for i in range(10):
        producer.produce("outside", key=str(i).encode(), value=f"record-{i}".encode())
    assert producer.flush(30) == 0
    consumer = Consumer(external | {"group.id": "outside", "auto.offset.reset": "earliest",
                                    "enable.auto.commit": False})
    try:
        consumer.subscribe(["outside"])
        got = set()
        deadline = time.monotonic() + 60
        while len(got) < 10 and time.monotonic() < deadline:
            message = consumer.poll(1)
            if message is not None and not message.error():
                got.add(message.value())
        assert got == {f"record-{i}".encode() for i in range(10)}
    finally:
        consumer.close()

    errors = []
    wrong = AdminClient(external | {"sasl.password": "not-the-password", "error_cb": errors.append})
    with pytest.raises(KafkaException):
        wrong.list_topics(timeout=5)

    def authentication_failed() -> bool:
        wrong.poll(0.2)  # serves error_cb
        return any(e.code() == KafkaError._AUTHENTICATION for e in errors)

    wait_until("the authentication error", authentication_failed, timeout=30)


def values_external_port(r) -> int:
    (sts,) = r.brokers()
    return {p["name"]: p["containerPort"] for p in container(sts)["ports"]}["kafka-external"]


def test_worked_values_of_deploy_md_render_as_documented(tmp_path):
    """Each values example of docs/deploy.md, "External access" (with security on, as
    the section says), renders, lints and validates; start.sh gives the broker the
    section names the address the section states."""
    import re

    from servers import REPO_ROOT

    text = (REPO_ROOT / "docs" / "deploy.md").read_text()
    section = text.split("\n## External access\n", 1)[1].split("\n## ", 1)[0]
    blocks = {m.group(1): yaml.safe_load(m.group(2))
              for m in re.finditer(r"```yaml\n# (\S+)\n(.*?)```", section, re.S)}
    documented = {
        "external-lb.yaml": ("strata-1", "strata-1.kafka.example.com:9094"),
        "external-nodeport.yaml": ("strata-us-east-1b-2", "nodes.example.com:30042"),
        "external-domain.yaml": ("strata-2", "b2.kafka.example.com:9094"),
    }
    assert blocks.keys() == documented.keys()
    for name, (pod, address) in documented.items():
        assert f"`{address}`" in section or f"{address}," in section, f"the section does not state {address}"
        r, path = render_dict(merge(S3, CERT_MANAGER, blocks[name]), tmp_path, name.removesuffix(".yaml"))
        lint = run([helm_binary(), "lint", "--strict", str(CHART), "-f", str(path)])
        assert lint.returncode == 0, lint.stdout + lint.stderr
        manifest = tmp_path / f"{name}-manifest.yaml"
        manifest.write_text(r.text)
        validated = run([kubernetes_validate_binary(), "--strict", "-k", KUBERNETES_VERSION, str(manifest)])
        assert validated.returncode == 0, validated.stdout + validated.stderr
        (sts,) = [s for s in r.brokers() if pod in pods(s)]
        stub_dir = tmp_path / "bin"
        write_stub(stub_dir)
        env = pod_env(container(sts), pod) | {"STRATA_CONFIG_FILE": str(tmp_path / "unused.toml")} | \
            addresses_env(r, tmp_path)
        result, calls = run_script(r.config_map()["start.sh"], env, tmp_path, stub_dir)
        assert result.returncode == 0, result.stderr
        announced = dict(x.split("://") for x in calls[-1]["env"]["STRATA_ADVERTISED_LISTENERS"].split(","))
        assert announced["EXTERNAL"] == address, name
        # The broker's own Service, which the section tells users to route (Domain) or
        # expose (NodePort, LoadBalancer).
        (service,) = [s for s in r.of_kind("Service") if s["metadata"]["name"] == f"{pod}-external"]
        assert service["spec"]["selector"]["statefulset.kubernetes.io/pod-name"] == pod
        if blocks[name]["externalAccess"].get("type") == "Domain":
            assert f"`{pod}-external`" in section
            assert service["spec"]["ports"][0]["port"] == int(address.rsplit(":", 1)[1])
        (cert,) = r.of_kind("Certificate")
        assert address.split(":")[0] in cert["spec"]["dnsNames"]
