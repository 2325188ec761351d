"""A stand-in copy of terraform/ that a real terraform binary can init, validate and plan
without downloading anything (tests/test_terraform.py).

Providers and registry modules cannot be fetched here, so the copy replaces them, and
nothing else:

- every `resource "T" "N"` and `data "T" "N"` becomes `module "r_T__N"` / `module
  "d_T__N"` calling one local stand-in module, with the SAME count / for_each, the same
  argument expressions (gathered into one `args` object; nested blocks become lists of
  objects, `dynamic` blocks `for` expressions over the same for_each) and the same
  lifecycle preconditions (checked by a validation of the stand-in's input, which
  fails the plan as a precondition would). Its `attrs` output is the arguments plus the
  attributes the provider computes (COMPUTED), unknown until apply. References such as
  `aws_iam_role.broker[0].arn` become `module.r_aws_iam_role__broker[0].attrs.arn`.
- every registry module call keeps its arguments and gets a stand-in with the real
  module's interface (REGISTRY_MODULES, terraform_registry_modules.json): its input
  variables with their type constraints (required ones without a default), and its output
  names, all unknown until apply, as a module that creates the thing (a VPC, an EKS
  cluster) has. A misspelt or renamed argument fails as "Unsupported argument", a missing
  required one as "Missing required argument", a misspelt output (module.eks.oidc_arn)
  as "Unsupported attribute", a value of the wrong type as "Invalid value for module
  argument". What the stand-in does not have: the module's own resources and
  validations, the attributes inside `any`-typed inputs (an eks_managed_node_groups
  entry's keys are not checked), and the providers' resource schemas.
- provider and `terraform` blocks are dropped (no provider to configure; the real
  required_version is above the test's binary).

Terraform v1.0.3 is the binary the registries offer (scripts/install-deps.sh). `timestamp()`
is unknown while planning, which makes the unknown values, each behind a condition on
it (`timestamp() == "" ? null : ...`): Terraform 1.6 and later would know that
`"x${timestamp()}"` is not null, and a provider's or module's unknown carries no such
promise (the EKS module's oidc_provider_arn is a try(..., null)). For a terraform older than 1.3,
one rewrite makes the copy parse: `optional(T, default)` becomes `optional(T)` with the
experiment those versions need for it. It changes nothing while the object is null (the
example's tls_issuer in every plan here); set, an omitted attribute would be null, not the
default. A newer terraform gets the expressions unchanged.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

# Attributes each resource or data source type computes (unknown while planning, for a
# new resource). Lists are marked; the rest are strings. A type missing here fails.
COMPUTED: dict[str, dict[str, str]] = {
    "aws_s3_bucket": {"id": "string", "arn": "string", "region": "string"},
    "aws_s3_bucket_ownership_controls": {"id": "string"},
    "aws_s3_bucket_public_access_block": {"id": "string"},
    "aws_s3_bucket_server_side_encryption_configuration": {"id": "string"},
    "aws_s3_bucket_lifecycle_configuration": {"id": "string"},
    "aws_s3_bucket_policy": {"id": "string"},
    "aws_iam_policy_document": {"id": "string", "json": "string"},
    "aws_iam_policy": {"id": "string", "arn": "string"},
    "aws_iam_role": {"id": "string", "arn": "string", "unique_id": "string"},
    "aws_iam_role_policy_attachment": {"id": "string"},
    "aws_availability_zones": {"id": "string", "names": "list", "zone_ids": "list"},
    "aws_vpc_endpoint": {"id": "string", "arn": "string"},
    "aws_ecr_repository": {"id": "string", "arn": "string", "repository_url": "string", "registry_id": "string"},
    "kubernetes_storage_class_v1": {"id": "string"},
    "helm_release": {"id": "string", "status": "string"},
    "minio_s3_bucket": {"id": "string", "arn": "string"},
    "minio_iam_user": {"id": "string", "secret": "string", "status": "string"},
    "minio_iam_policy": {"id": "string"},
    "minio_iam_user_policy_attachment": {"id": "string"},
}

# The interfaces of the registry modules the example calls, read from their sources at
# every release the example's version constraint admits (regenerate with
# `python3 tests/terraform_standin.py EKS_MODULE_CLONE VPC_MODULE_CLONE` after changing a
# constraint; the clones are git repositories of terraform-aws-modules/terraform-aws-eks and
# terraform-aws-vpc with their tags).
REGISTRY_MODULES_FILE = Path(__file__).with_name("terraform_registry_modules.json")

# Outputs of registry modules that are lists (the rest are strings).
LIST_OUTPUTS = {"private_subnets", "public_subnets", "private_route_table_ids", "public_route_table_ids"}

META_ARGUMENTS = {"count", "for_each", "depends_on", "provider", "providers"}

STANDIN_RESOURCE = """\
# A provider resource or data source: its arguments, plus computed attributes that are
# unknown until apply (timestamp() is unknown while planning).
variable "args" {
  type = any
}

variable "computed_strings" {
  type    = list(string)
  default = []
}

variable "computed_lists" {
  type    = list(string)
  default = []
}

variable "preconditions" {
  type    = list(object({ condition = bool, error_message = string }))
  default = []

  validation {
    condition     = alltrue([for p in var.preconditions : p.condition != false])
    error_message = "Stand-in resource: a lifecycle precondition failed."
  }
}

output "attrs" {
  value = merge(
    var.args,
    { for name in var.computed_strings : name => timestamp() == "" ? null : "${name}-${timestamp()}" },
    { for name in var.computed_lists : name => timestamp() == "" ? null : split(",", "${name}-${timestamp()}") },
  )
}
"""


@dataclass
class Block:
    kind: str
    labels: list[str]
    items: list = field(default_factory=list)  # Attr | Block


@dataclass
class Attr:
    name: str
    expr: str


class Scanner:
    """Splits HCL native syntax into blocks and attributes, keeping each attribute's
    expression as its exact text (strings, templates and brackets are skipped over)."""

    def __init__(self, text: str):
        self.text = text
        self.i = 0

    def skip_space(self) -> None:
        t = self.text
        while self.i < len(t):
            c = t[self.i]
            if c in " \t\r\n":
                self.i += 1
            elif c == "#" or t.startswith("//", self.i):
                while self.i < len(t) and t[self.i] != "\n":
                    self.i += 1
            elif t.startswith("/*", self.i):
                self.i = t.index("*/", self.i) + 2
            else:
                return

    def body(self, closing: bool) -> list:
        items = []
        while True:
            self.skip_space()
            if self.i >= len(self.text):
                assert not closing, "unbalanced braces"
                return items
            if self.text[self.i] == "}":
                assert closing, f"unexpected }} at {self.i}"
                self.i += 1
                return items
            m = re.compile(r"[A-Za-z_][\w-]*").match(self.text, self.i)
            assert m, f"expected a name at {self.text[self.i:self.i + 40]!r}"
            name = m.group(0)
            self.i = m.end()
            self.skip_inline_space()
            if self.text[self.i] == "=" and self.text[self.i + 1] != "=":
                self.i += 1
                start = self.i
                self.i = self.expression_end(self.i)
                items.append(Attr(name, self.text[start:self.i].strip()))
                continue
            labels = []
            while self.text[self.i] == '"':
                end = self.string_end(self.i + 1)
                labels.append(self.text[self.i + 1:end - 1])
                self.i = end
                self.skip_inline_space()
            assert self.text[self.i] == "{", f"expected {{ after {name} {labels}"
            self.i += 1
            items.append(Block(name, labels, self.body(closing=True)))

    def skip_inline_space(self) -> None:
        while self.text[self.i] in " \t":
            self.i += 1

    def string_end(self, i: int) -> int:
        """Index after the closing quote of a string whose body starts at i."""
        t = self.text
        while True:
            c = t[i]
            if c == "\\":
                i += 2
            elif c == '"':
                return i + 1
            elif t.startswith("${", i) or t.startswith("%{", i):
                i = self.code_end(i + 2, "}") + 1
            else:
                i += 1

    def code_end(self, i: int, closer: str) -> int:
        """Index of the `closer` that ends code starting at i."""
        t = self.text
        while True:
            c = t[i]
            if c == closer:
                return i
            if c == '"':
                i = self.string_end(i + 1)
            elif c in "([{":
                i = self.code_end(i + 1, {"(": ")", "[": "]", "{": "}"}[c]) + 1
            elif c == "#" or t.startswith("//", i):
                i = t.index("\n", i)
            else:
                i += 1

    def expression_end(self, i: int) -> int:
        t = self.text
        while i < len(t):
            c = t[i]
            if c == "\n" or c == "#" or t.startswith("//", i):
                return i
            if c == '"':
                i = self.string_end(i + 1)
            elif c in "([{":
                i = self.code_end(i + 1, {"(": ")", "[": "]", "{": "}"}[c]) + 1
            elif t.startswith("<<", i):
                raise AssertionError("heredocs are not supported by the stand-in scanner")
            else:
                i += 1
        return i


def parse(text: str) -> list:
    return Scanner(text).body(closing=False)


def standin_name(kind: str, rtype: str, name: str) -> str:
    return f"{'r' if kind == 'resource' else 'd'}_{rtype}__{name}"


def render_items(items: list, indent: str) -> str:
    """Blocks and attributes back to HCL text, verbatim."""
    out = []
    for item in items:
        if isinstance(item, Attr):
            out.append(f"{indent}{item.name} = {item.expr}")
        else:
            labels = "".join(f' "{label}"' for label in item.labels)
            out.append(f"{indent}{item.kind}{labels} {{")
            out.append(render_items(item.items, indent + "  "))
            out.append(f"{indent}}}")
    return "\n".join(out)


def object_of(items: list) -> str:
    """A block body as an object constructor: attributes as they are, nested blocks as
    lists of objects (grouped by type), dynamic blocks as `for` expressions."""
    attrs = [f"{a.name} = {a.expr}" for a in items if isinstance(a, Attr)]
    groups: dict[str, list[str]] = {}
    for block in (b for b in items if isinstance(b, Block)):
        if block.kind == "dynamic":
            (name,) = block.labels
            for_each = next(a.expr for a in block.items if isinstance(a, Attr) and a.name == "for_each")
            assert not any(isinstance(a, Attr) and a.name == "iterator" for a in block.items)
            (content,) = [b for b in block.items if isinstance(b, Block) and b.kind == "content"]
            body = object_of(content.items)
            body = re.sub(rf"(?<![\w.]){re.escape(name)}\.(key|value)\b", rf"{name}_\1", body)
            groups.setdefault(name, []).append(f"[for {name}_key, {name}_value in {for_each} : {body}]")
        else:
            groups.setdefault(block.kind, []).append(f"[{object_of(block.items)}]")
    for name, lists in groups.items():
        attrs.append(f"{name} = {lists[0] if len(lists) == 1 else 'concat(' + ', '.join(lists) + ')'}")
    return "{\n" + "\n".join(attrs) + "\n}"


class Tree:
    """Writes the stand-in copy of `source` (the repository's terraform/) into `dest`."""

    def __init__(self, source: Path, dest: Path, optional_defaults: bool):
        self.source = source
        self.dest = dest
        # Whether the terraform that will run knows optional(T, default) (1.3 and later).
        self.optional_defaults = optional_defaults
        self.resource_module = dest / "_standins" / "resource"

    def build(self, modules: list[str], edit=None) -> None:
        """`edit(relative_path, text) -> text` changes a real file before conversion
        (the negative checks put an old expression back)."""
        self.resource_module.mkdir(parents=True, exist_ok=True)
        (self.resource_module / "main.tf").write_text(STANDIN_RESOURCE)
        for module in modules:
            texts = {}
            for path in sorted((self.source / module).glob("*.tf")):
                text = path.read_text()
                if edit:
                    text = edit(f"{module}/{path.name}", text)
                texts[path.name] = text
            self.convert(module, texts)

    def convert(self, module: str, texts: dict[str, str]) -> None:
        out_dir = self.dest / module
        out_dir.mkdir(parents=True, exist_ok=True)
        parsed = {name: parse(text) for name, text in texts.items()}
        # Every resource and data source of the module, for rewriting references.
        declared = [(b.kind, b.labels[0], b.labels[1]) for items in parsed.values() for b in items
                    if isinstance(b, Block) and b.kind in ("resource", "data")]
        all_text = "\n".join(texts.values())
        needs_optional_experiment = not self.optional_defaults and bool(re.search(r"optional\(\w+,", all_text))
        for name, items in parsed.items():
            out = []
            for block in items:
                assert isinstance(block, Block), f"{module}/{name}: a top-level attribute"
                if block.kind in ("terraform", "provider"):
                    continue
                if block.kind in ("resource", "data"):
                    out.append(self.resource_call(module, block))
                elif block.kind == "module":
                    out.append(self.module_call(module, block))
                else:
                    out.append(render_items([block], ""))
            text = "\n\n".join(out) + "\n"
            if not self.optional_defaults:
                text = re.sub(r"optional\((\w+),[^()]*\)", r"optional(\1)", text)
            (out_dir / name).write_text(self.rewrite_references(text, declared))
        if needs_optional_experiment:
            (out_dir / "_experiments.tf").write_text(
                "terraform {\n  experiments = [module_variable_optional_attrs]\n}\n")

    def resource_call(self, module: str, block: Block) -> str:
        rtype, name = block.labels
        assert rtype in COMPUTED, f"the stand-in does not know what {rtype} computes: add it to COMPUTED"
        meta = {a.name: a.expr for a in block.items if isinstance(a, Attr) and a.name in META_ARGUMENTS}
        args = [i for i in block.items if not (isinstance(i, Attr) and i.name in META_ARGUMENTS)
                and not (isinstance(i, Block) and i.kind == "lifecycle")]
        preconditions = []
        for lifecycle in (b for b in block.items if isinstance(b, Block) and b.kind == "lifecycle"):
            for item in lifecycle.items:
                assert isinstance(item, Block) and item.kind == "precondition", \
                    f"{rtype}.{name}: the stand-in keeps only lifecycle preconditions"
                preconditions.append(object_of(item.items))
        lines = [f'module "{standin_name(block.kind, rtype, name)}" {{',
                 f'  source = "./{self.relative(self.resource_module, module)}"']
        for meta_name in ("count", "for_each"):
            if meta_name in meta:
                lines.append(f"  {meta_name} = {meta[meta_name]}")
        if "depends_on" in meta:
            lines.append(f"  depends_on = {self.depends_on(meta['depends_on'])}")
        computed = COMPUTED[rtype]
        lines.append(f"  computed_strings = {quote_list(k for k, v in computed.items() if v == 'string')}")
        lines.append(f"  computed_lists = {quote_list(k for k, v in computed.items() if v == 'list')}")
        if preconditions:
            lines.append(f"  preconditions = [{', '.join(preconditions)}]")
        lines.append(f"  args = {object_of(args)}")
        lines.append("}")
        return "\n".join(lines)

    def module_call(self, module: str, block: Block) -> str:
        (name,) = block.labels
        attrs = {a.name: a.expr for a in block.items if isinstance(a, Attr)}
        source = attrs["source"].strip('"')
        if source.startswith("./") or source.startswith("../"):
            return render_items([block], "")
        # A registry module: the real module's inputs and outputs, outputs unknown until apply.
        registry = json.loads(REGISTRY_MODULES_FILE.read_text())
        assert source in registry, f"{module}: no recorded interface for {source}: add it to {REGISTRY_MODULES_FILE.name}"
        interface = registry[source]
        version = attrs.get("version", "").strip('"')
        assert version == interface["constraint"], (
            f"{module}: module {name} asks for {source} {version!r}; {REGISTRY_MODULES_FILE.name} holds the "
            f"interface of {interface['constraint']!r}: regenerate it")
        standin = self.dest / "_standins" / "modules" / module.replace("/", "_") / name
        standin.mkdir(parents=True, exist_ok=True)
        lines = [f"# Stand-in for {source} {version}: the input variables and outputs of releases "
                 f"{', '.join(interface['releases'])}, outputs unknown until apply."]
        for variable, spec in sorted(interface["inputs"].items()):
            default = "" if spec["required"] else "\n  default = null"
            lines.append(f'variable "{variable}" {{\n  type    = {spec["type"]}{default}\n}}')
        for output in sorted(interface["outputs"]):
            value = (f'split(",", "{output}-${{timestamp()}}")' if output in LIST_OUTPUTS
                     else f'"{output}-${{timestamp()}}"')
            value = f'timestamp() == "" ? null : {value}'
            lines.append(f'output "{output}" {{\n  value = {value}\n}}')
        (standin / "main.tf").write_text("\n\n".join(lines) + "\n")
        items = [Attr("source", f'"./{self.relative(standin, module)}"')]
        items += [i for i in block.items if not (isinstance(i, Attr) and i.name in ("source", "version"))]
        return render_items([Block("module", [name], items)], "")

    def relative(self, target: Path, module: str) -> str:
        """`target` as a module source path seen from the copy of `module`."""
        return os.path.relpath(target, self.dest / module)

    def depends_on(self, expr: str) -> str:
        return re.sub(r"(?<![\w.])(data\.)?([a-z0-9_]+)\.([\w-]+)",
                      lambda m: m.group(0) if m.group(2) == "module" and not m.group(1)
                      else f"module.{standin_name('data' if m.group(1) else 'resource', m.group(2), m.group(3))}",
                      expr)

    @staticmethod
    def rewrite_references(text: str, declared: list[tuple[str, str, str]]) -> str:
        for kind, rtype, name in declared:
            prefix = r"data\." if kind == "data" else ""
            pattern = rf"(?<![\w.]){prefix}{re.escape(rtype)}\.{re.escape(name)}\b(\[[^\]]*\])?"
            text = re.sub(pattern, lambda m, k=kind, t=rtype, n=name:
                          f"module.{standin_name(k, t, n)}{m.group(1) or ''}.attrs", text)
        return text


def module_interface(repo: str, tag: str) -> tuple[dict[str, dict], set[str]]:
    """The input variables ({name: {type, required}}) and output names of a module's
    root at a tag of its git clone."""
    def show(path: str) -> str:
        return subprocess.run(["git", "-C", repo, "show", f"{tag}:{path}"], capture_output=True, text=True,
                              check=True).stdout

    files = subprocess.run(["git", "-C", repo, "ls-tree", "--name-only", tag], capture_output=True, text=True,
                           check=True).stdout.split()
    inputs, outputs = {}, set()
    for path in (f for f in files if f.endswith(".tf")):
        for block in parse(show(path)):
            if isinstance(block, Block) and block.kind == "variable":
                attrs = {a.name: a.expr for a in block.items if isinstance(a, Attr)}
                inputs[block.labels[0]] = {"type": attrs.get("type", "any"), "required": "default" not in attrs}
            elif isinstance(block, Block) and block.kind == "output":
                outputs.add(block.labels[0])
    return inputs, outputs


def registry_interface(repo: str, constraint: str) -> dict:
    """What every release admitted by a `~> MAJOR.MINOR` constraint has in common: the
    inputs all of them declare (the type where they agree, else any; required where any
    requires it) and the outputs all of them have."""
    m = re.fullmatch(r"~> (\d+)\.(\d+)", constraint)
    assert m, f"only ~> MAJOR.MINOR constraints are handled, not {constraint!r}"
    major, minor = int(m.group(1)), int(m.group(2))
    tags = subprocess.run(["git", "-C", repo, "tag"], capture_output=True, text=True, check=True).stdout.split()
    releases = sorted((t for t in tags if (v := re.fullmatch(r"v(\d+)\.(\d+)\.(\d+)", t))
                       and int(v.group(1)) == major and int(v.group(2)) >= minor),
                      key=lambda t: tuple(int(x) for x in t[1:].split(".")))
    assert releases, f"{repo} has no release for {constraint}"
    inputs: dict[str, dict] | None = None
    outputs: set[str] | None = None
    for tag in releases:
        these_inputs, these_outputs = module_interface(repo, tag)
        if inputs is None:
            inputs, outputs = these_inputs, these_outputs
            continue
        inputs = {name: {"type": spec["type"] if spec["type"] == these_inputs[name]["type"] else "any",
                         "required": spec["required"] or these_inputs[name]["required"]}
                  for name, spec in inputs.items() if name in these_inputs}
        outputs &= these_outputs
    return {"constraint": constraint, "releases": releases, "inputs": inputs, "outputs": sorted(outputs)}


def quote_list(names) -> str:
    return "[" + ", ".join(f'"{n}"' for n in names) + "]"


def build(source: Path, dest: Path, modules: list[str], terraform_version: tuple[int, int], edit=None) -> None:
    """The stand-in copy of `modules` for a terraform of `terraform_version` (major, minor)."""
    shutil.rmtree(dest, ignore_errors=True)
    Tree(source, dest, optional_defaults=terraform_version >= (1, 3)).build(modules, edit)


if __name__ == "__main__":
    # python3 tests/terraform_standin.py EKS_MODULE_CLONE VPC_MODULE_CLONE: the constraints
    # are the example's.
    clones = dict(zip(["terraform-aws-modules/eks/aws", "terraform-aws-modules/vpc/aws"], sys.argv[1:3]))
    example = Path(__file__).resolve().parent.parent / "terraform" / "examples" / "eks" / "main.tf"
    calls = {attrs["source"].strip('"'): attrs["version"].strip('"')
             for block in parse(example.read_text()) if isinstance(block, Block) and block.kind == "module"
             for attrs in [{a.name: a.expr for a in block.items if isinstance(a, Attr)}] if "version" in attrs}
    assert set(calls) == set(clones), f"the example calls {sorted(calls)}"
    REGISTRY_MODULES_FILE.write_text(json.dumps(
        {source: registry_interface(clones[source], constraint) for source, constraint in calls.items()},
        indent=1, sort_keys=True) + "\n")
