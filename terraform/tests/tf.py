"""The Terraform tree parsed with python-hcl2, merged per directory."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

import hcl2

ROOT = Path(__file__).resolve().parents[2]
TERRAFORM = ROOT / "terraform"
MODULE = TERRAFORM / "modules" / "assetgen"
ENVS = {name: TERRAFORM / "envs" / name for name in ("dev", "prod")}


@dataclass
class Dir:
    path: Path
    resources: dict[tuple[str, str], dict] = field(default_factory=dict)
    data: dict[tuple[str, str], dict] = field(default_factory=dict)
    locals: dict[str, object] = field(default_factory=dict)
    variables: dict[str, dict] = field(default_factory=dict)
    outputs: dict[str, dict] = field(default_factory=dict)
    modules: dict[str, dict] = field(default_factory=dict)
    terraform: list[dict] = field(default_factory=list)
    moved: dict[str, str] = field(default_factory=dict)  # from address -> to address
    text: dict[str, str] = field(default_factory=dict)

    def resource(self, type_: str, name: str) -> dict:
        assert (type_, name) in self.resources, f"{self.path.name}: no resource {type_}.{name}"
        return self.resources[(type_, name)]

    def of_type(self, type_: str) -> dict[str, dict]:
        return {n: body for (t, n), body in self.resources.items() if t == type_}


@cache
def load(path: Path) -> Dir:
    d = Dir(path)
    for f in sorted(path.glob("*.tf")):
        text = f.read_text()
        d.text[f.name] = text
        parsed = hcl2.loads(text)
        for kind, target in (("resource", d.resources), ("data", d.data)):
            for entry in parsed.get(kind, []):
                for type_, named in entry.items():
                    for name, body in named.items():
                        assert (type_, name) not in target, f"{type_}.{name} declared twice"
                        target[(type_, name)] = body
        for entry in parsed.get("locals", []):
            d.locals.update(entry)
        for entry in parsed.get("variable", []):
            d.variables.update(entry)
        for entry in parsed.get("output", []):
            d.outputs.update(entry)
        for entry in parsed.get("module", []):
            d.modules.update(entry)
        d.terraform += parsed.get("terraform", [])
        for block in parsed.get("moved", []):
            from_ = ref(block["from"])
            assert from_ not in d.moved, f"two moved blocks from {from_}"
            d.moved[from_] = ref(block["to"])
    return d


def module() -> Dir:
    return load(MODULE)


def env(name: str) -> Dir:
    return load(ENVS[name])


def one(blocks: list[dict]) -> dict:
    assert isinstance(blocks, list) and len(blocks) == 1, f"expected one block, got {blocks!r}"
    return blocks[0]


def ref(text: object) -> str:
    """`${local.x}` → `local.x`; anything else unchanged (as a string)."""
    s = str(text)
    m = re.fullmatch(r"\$\{(.*)\}", s)
    return m.group(1) if m else s


# Where each deployed unit's container is declared: resource type, name and for_each key.
UNITS = {
    "submit": ("google_cloud_run_v2_service", "function", "submit"),
    "generate": ("google_cloud_run_v2_service", "function", "generate"),
    "relay": ("google_cloud_run_v2_service", "function", "relay"),
    "generate-job": ("google_cloud_run_v2_job", "generate", None),
}


def container(unit: str) -> dict:
    return one(run_template(unit)["containers"])


def run_template(unit: str) -> dict:
    type_, name, key = UNITS[unit]
    template = one(instance(type_, name, key)["template"])
    return one(template["template"]) if type_ == "google_cloud_run_v2_job" else template


def env_vars(unit: str) -> dict[str, dict]:
    out: dict[str, dict] = {}
    for e in container(unit).get("env", []):
        assert e["name"] not in out, f"{unit} sets {e['name']} twice"
        out[e["name"]] = e
    return out


def norm(expr: object) -> str:
    """`local.sa["submit"]` → `local.sa.submit` (the same in HCL), after `ref`."""
    return re.sub(r'\["([A-Za-z_][\w-]*)"\]', r".\1", ref(expr))


# ---- Terraform's expansion of for_each and dynamic "env", for the forms this module uses ------
# Anything else raises: the tests then need teaching, rather than silently reading a wrong value.

# The one shape of a `dynamic "env"` block's content: an entry of a local env list has a value,
# or names the secret of local.secrets it is read from.
ENV_CONTENT = [
    {
        "name": "${env.value.name}",
        "value": "${try(env.value.value, null)}",
        "dynamic": [
            {
                "value_source": {
                    "for_each": "${try([${env.value.secret}], [])}",
                    "content": [{"secret_key_ref": [{"secret": "${local.secrets[value_source.value].secret_id}", "version": "latest"}]}],
                }
            }
        ],
    }
]


def split_top_level(text: str) -> list[str]:
    """`a, [b, c], {d = e}` → ["a", "[b, c]", "{d = e}"]: commas outside brackets and strings."""
    parts, depth, quote, start, i = [], 0, False, 0, 0
    while i < len(text):
        c = text[i]
        if quote:
            if c == "\\":
                i += 1
            elif c == '"':
                quote = False
        elif c == '"':
            quote = True
        elif c in "([{":
            depth += 1
        elif c in ")]}":
            depth -= 1
        elif c == "," and depth == 0:
            parts.append(text[start:i].strip())
            start = i + 1
        i += 1
    assert depth == 0 and not quote, f"unbalanced: {text!r}"
    last = text[start:].strip()
    return parts + ([last] if last else [])


def local_value(path: str) -> object:
    """`local.env.common` → the parsed value of that local (objects walked by attribute)."""
    names = path.split(".")
    assert names[0] == "local" and len(names) > 1, f"not a local: {path!r}"
    value: object = module().locals
    for n in names[1:]:
        assert isinstance(value, dict) and n in value, f"no {path}"
        value = value[n]
    return value


def evaluate_list(expr: object) -> list:
    """A list literal, `local.X.Y`, or `concat(...)` of those."""
    if isinstance(expr, list):
        return expr
    e = ref(expr)
    if re.fullmatch(r"local(\.\w+)+", e):
        return evaluate_list(local_value(e))
    m = re.fullmatch(r"concat\((.*)\)", e, re.S)
    if m:
        return [item for arg in split_top_level(m.group(1)) for item in evaluate_list(arg)]
    if e.startswith("["):
        return hcl2.loads(f"x = {e}\n")["x"]
    raise AssertionError(f"cannot evaluate {expr!r} as a list")


def for_each_keys(body: dict) -> list[str]:
    """The keys of a resource's for_each: a `local.X` map or a `toset([...])` (literal or local)."""
    e = body["for_each"]
    if re.fullmatch(r"\$\{local\.\w+\}", str(e)):
        e = local_value(ref(e))
    if isinstance(e, dict):
        return list(e)
    return toset_items(e)


def secret_address(name: str) -> str:
    """The resource `local.secrets[name]` is: local.secrets merges single resources named in an
    object and for_each resources by their keys."""
    m = re.fullmatch(r"merge\((.*)\)", ref(module().locals["secrets"]), re.S)
    assert m, "local.secrets is no longer a merge(...)"
    found = {}
    for arg in split_top_level(m.group(1)):
        if arg.startswith("{"):
            for k, v in hcl2.loads(f"x = {arg}\n")["x"].items():
                found[k] = ref(v)
        else:
            type_, res = arg.split(".")
            for k in for_each_keys(module().resource(type_, res)):
                found[k] = f'{type_}.{res}["{k}"]'
    for address in found.values():
        type_, res = address.split("[")[0].split(".")
        module().resource(type_, res)
    assert name in found, f"local.secrets has no {name}"
    return found[name]


def expand_env(spec: dict) -> list[dict]:
    """The env blocks a `dynamic "env"` makes, each as python-hcl2 parses a written-out block."""
    assert spec["content"] == ENV_CONTENT, f"dynamic env changed shape: {spec['content']!r}"
    blocks = []
    for entry in evaluate_list(spec["for_each"]):
        assert set(entry) in ({"name", "value"}, {"name", "secret"}), f"env entry {entry!r}"
        if "value" in entry:
            blocks.append({"name": entry["name"], "value": entry["value"]})
        else:
            secret = "${" + secret_address(entry["secret"]) + ".secret_id}"
            blocks.append({"name": entry["name"], "value_source": [{"secret_key_ref": [{"secret": secret, "version": "latest"}]}]})
    return blocks


def _substitute(value: object, key: str | None, each_value: dict | None) -> object:
    if isinstance(value, list):
        return [_substitute(v, key, each_value) for v in value]
    if isinstance(value, dict):
        out = {k: _substitute(v, key, each_value) for k, v in value.items() if k != "dynamic"}
        dynamics = []
        for d in value.get("dynamic", []):
            ((block, spec),) = d.items()
            spec = _substitute(spec, key, each_value)
            if block == "env":
                out["env"] = out.get("env", []) + expand_env(spec)
            else:
                dynamics.append({block: spec})
        if dynamics:
            out["dynamic"] = dynamics
        return out
    if not isinstance(value, str) or "each." not in value:
        return value
    assert key is not None, f"each. outside for_each: {value!r}"
    m = re.fullmatch(r"\$\{each\.value\.(\w+)\}", value)
    if m:
        assert isinstance(each_value, dict) and m.group(1) in each_value, f"each.value has no {m.group(1)}"
        return each_value[m.group(1)]
    value = value.replace("[each.key]", f'["{key}"]').replace("${each.key}", key)
    assert "each." not in value, f"cannot expand {value!r}"
    return value


def instance(type_: str, name: str, key: str | None = None) -> dict:
    """A resource's body as Terraform expands it: for one for_each key, `each.key` and
    `each.value.X` replaced, and `dynamic "env"` blocks written out as the env blocks they make."""
    body = module().resource(type_, name)
    if key is None:
        assert "for_each" not in body, f"{type_}.{name} has for_each: name a key"
        return _substitute(body, None, None)
    keys = for_each_keys(body)
    assert key in keys, f"{type_}.{name} has no instance {key!r} (keys {keys})"
    source = local_value(ref(body["for_each"])) if re.fullmatch(r"\$\{local\.\w+\}", str(body["for_each"])) else None
    each_value = source[key] if isinstance(source, dict) else None  # a set's each.value is its key
    body = {k: v for k, v in body.items() if k != "for_each"}
    return _substitute(body, key, each_value)


def toset_items(expr: object) -> list[str]:
    """`${toset(["a", "b"])}` (python-hcl2 drops the inner quotes) → ["a", "b"]."""
    m = re.fullmatch(r"\$\{toset\(\[(.*)\]\)\}", str(expr))
    assert m, f"not a toset([...]) literal: {expr!r}"
    return [item.strip().strip('"') for item in m.group(1).split(",") if item.strip()]
