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


# Where each deployed unit's container is declared.
UNITS = {
    "submit": ("google_cloud_run_v2_service", "submit"),
    "generate": ("google_cloud_run_v2_service", "generate"),
    "relay": ("google_cloud_run_v2_service", "relay"),
    "generate-job": ("google_cloud_run_v2_job", "generate"),
}


def container(unit: str) -> dict:
    type_, name = UNITS[unit]
    template = one(module().resource(type_, name)["template"])
    if type_ == "google_cloud_run_v2_job":
        template = one(template["template"])
    return one(template["containers"])


def run_template(unit: str) -> dict:
    type_, name = UNITS[unit]
    template = one(module().resource(type_, name)["template"])
    return one(template["template"]) if type_ == "google_cloud_run_v2_job" else template


def env_vars(unit: str) -> dict[str, dict]:
    out: dict[str, dict] = {}
    for e in container(unit).get("env", []):
        assert e["name"] not in out, f"{unit} sets {e['name']} twice"
        out[e["name"]] = e
    return out


def toset_items(expr: object) -> list[str]:
    """`${toset(["a", "b"])}` (python-hcl2 drops the inner quotes) → ["a", "b"]."""
    m = re.fullmatch(r"\$\{toset\(\[(.*)\]\)\}", str(expr))
    assert m, f"not a toset([...]) literal: {expr!r}"
    return [item.strip().strip('"') for item in m.group(1).split(",") if item.strip()]
