"""The Google provider's schema, read from the jsii assembly npm `@cdktf/provider-google` ships.

Terraform cannot download providers here, so `terraform validate` cannot run; this is the schema
it would check against. `tools/provider-schema.sh` installs the package (about 98 MB) once into
.tools/ and prints the `.jsii` path; the compact schema extracted from it is cached beside it.

Schema shape: {"resource"|"data": {tf_type: {"args": {name: nested-or-None}, "attrs": [names]}}},
where a nested block is itself {"args": ..., "attrs": []} and `attrs` are the computed attributes
(what `google_x.name.attr` may read besides the arguments).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
ASSEMBLY = "@cdktf/provider-google."
CACHE_VERSION = 2


def snake(name: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


def _property_name(prop: dict) -> str:
    # The docs link names the Terraform attribute exactly (`#ack_deadline_seconds Class#...`);
    # camel-to-snake is the fallback for the few without one.
    m = re.search(r"#([a-z0-9_]+) \w+#", prop.get("docs", {}).get("remarks", ""))
    return m.group(1) if m else snake(prop["name"])


def _struct_fqns(type_ref: dict) -> list[str]:
    """Structs of this provider a property's type names (a block or a list of blocks)."""
    found = []
    if "fqn" in type_ref and type_ref["fqn"].startswith(ASSEMBLY):
        found.append(type_ref["fqn"])
    for t in type_ref.get("union", {}).get("types", []):
        found += _struct_fqns(t)
    if "collection" in type_ref:
        found += _struct_fqns(type_ref["collection"]["elementtype"])
    return found


def _block(types: dict, fqn: str, seen: tuple[str, ...] = ()) -> dict:
    args: dict[str, dict | None] = {}
    struct = types[fqn]
    for prop in struct.get("properties", []):
        nested = [f for f in _struct_fqns(prop["type"]) if types.get(f, {}).get("datatype")]
        name = _property_name(prop)
        args[name] = _block(types, nested[0], seen + (fqn,)) if nested and nested[0] not in seen else None
    return {"args": args, "attrs": []}


def extract(jsii_path: Path) -> dict:
    types = json.loads(jsii_path.read_text())["types"]
    schema: dict[str, dict] = {"resource": {}, "data": {}}
    for t in types.values():
        if t.get("kind") != "class" or t.get("base") not in ("cdktf.TerraformResource", "cdktf.TerraformDataSource"):
            continue
        m = re.search(r"/docs/(resources|data-sources)/([a-z0-9_]+)", t.get("docs", {}).get("summary", ""))
        if not m:
            continue
        kind = "resource" if m.group(1) == "resources" else "data"
        tf_type = m.group(2) if m.group(2).startswith("google_") else "google_" + m.group(2)
        (config,) = [p for p in t["initializer"]["parameters"] if p["name"] == "config"]
        block = _block(types, config["type"]["fqn"])
        block["attrs"] = sorted(
            snake(p["name"]) for p in t.get("properties", []) if not p.get("static") and not p["name"].endswith("Input")
        )
        schema[kind][tf_type] = block
    return schema


def load() -> dict:
    """The schema, extracted once per package version and cached under .tools/."""
    jsii = Path(
        os.environ.get("PROVIDER_SCHEMA_JSII")
        or subprocess.run(
            [str(ROOT / "tools" / "provider-schema.sh")], check=True, capture_output=True, text=True
        ).stdout.strip()
    )
    cache = jsii.parent.parent.parent.parent / f"schema-v{CACHE_VERSION}.json"
    if cache.exists() and cache.stat().st_mtime >= jsii.stat().st_mtime:
        return json.loads(cache.read_text())
    schema = extract(jsii)
    if len(schema["resource"]) < 500:
        raise AssertionError(f"only {len(schema['resource'])} resources read from {jsii}: the jsii layout changed")
    cache.write_text(json.dumps(schema))
    return schema


META_ARGUMENTS = {"count", "for_each", "depends_on", "provider", "lifecycle", "provisioner", "connection"}


def unknown_names(body: dict, block: dict, where: str) -> list[str]:
    """Every argument or nested block of a parsed (python-hcl2) body the schema does not have."""
    problems = []
    for key, value in body.items():
        if key in META_ARGUMENTS or key.startswith("__"):
            continue
        if key == "dynamic":
            for dynamic in value:
                for name, spec in dynamic.items():
                    if name not in block["args"] or block["args"][name] is None:
                        problems.append(f"{where}: no block {name!r} (dynamic)")
                        continue
                    for content in spec.get("content", []):
                        problems += unknown_names(content, block["args"][name], f"{where}.{name}")
            continue
        if key not in block["args"]:
            problems.append(f"{where}: no argument or block {key!r}")
            continue
        nested = block["args"][key]
        if nested is not None and isinstance(value, list):
            for item in value:
                if isinstance(item, dict):
                    problems += unknown_names(item, nested, f"{where}.{key}")
    return problems
