"""Canary releases: each service's traffic blocks follow var.canary_percent and var.stable_revisions."""

import re

import pytest
import tf

M = tf.module
SERVICES = ("submit", "generate", "relay")


def python(expr: str) -> str:
    """HCL's `c ? a : b` (nested in parentheses or not) as Python's `a if c else b`."""
    e = expr.strip()
    depth, question, colon, quote = 0, None, None, None
    for i, c in enumerate(e):
        if quote:
            quote = None if c == quote else quote
        elif c in "'\"":
            quote = c
        elif c in "([":
            depth += 1
        elif c in ")]":
            depth -= 1
        elif depth == 0 and c == "?" and question is None:
            question = i
        elif depth == 0 and c == ":" and question is not None and colon is None:
            colon = i
    if question is not None and colon is not None:
        return f"({python(e[question + 1 : colon])}) if ({python(e[:question])}) else ({python(e[colon + 1 :])})"
    if e.startswith("(") and e.endswith(")"):
        return f"({python(e[1:-1])})"
    return e.replace("null", "None")


def evaluate(expr: str, canary: int, stable: dict[str, str]):
    """Evaluates the few HCL expressions the traffic blocks use, for one choice of the variables."""
    e = tf.ref(expr)
    e = e.replace("local.canary_tag", f"({tf.ref(M().locals['canary_tag'])})")
    e = e.replace("local.canary_split", f"({tf.ref(M().locals['canary_split'])})")
    e = e.replace("var.canary_percent", str(canary))
    e = re.sub(r"'?\$\{var\.stable_revisions\[\"(\w+)\"\]\}'?", lambda m: repr(stable.get(m.group(1), "")), e)
    return eval(python(e), {})


def plan(service: str, canary: int, stable: dict[str, str]) -> list[dict]:
    """The traffic targets Terraform would send for this service."""
    body = tf.instance("google_cloud_run_v2_service", "function", service)
    targets = []
    for block in body.get("traffic", []):
        targets.append({k: evaluate(v, canary, stable) if isinstance(v, str) and "${" in v else v for k, v in block.items()})
    for dynamic in body.get("dynamic", []):
        spec = dynamic["traffic"]
        for value in evaluate(spec["for_each"], canary, stable):
            (content,) = spec["content"]
            targets.append(
                {k: value if v == "${traffic.value}" else evaluate(v, canary, stable) if isinstance(v, str) and "${" in v else v for k, v in content.items()}
            )
    return targets


STABLE = {s: f"assetgen-{s}-00041-abc" for s in SERVICES}


@pytest.mark.parametrize("service", SERVICES)
def test_a_plain_rollout_sends_everything_to_the_new_revision(service):
    assert plan(service, 100, {}) == [{"type": "TRAFFIC_TARGET_ALLOCATION_TYPE_LATEST", "percent": 100, "tag": None}]


@pytest.mark.parametrize("service", SERVICES)
def test_a_canary_gets_its_share_tagged_and_the_stable_revision_the_rest(service):
    assert plan(service, 10, STABLE) == [
        {"type": "TRAFFIC_TARGET_ALLOCATION_TYPE_LATEST", "percent": 10, "tag": "canary"},
        {"type": "TRAFFIC_TARGET_ALLOCATION_TYPE_REVISION", "revision": STABLE[service], "percent": 90, "tag": "stable"},
    ]


@pytest.mark.parametrize("service", SERVICES)
def test_a_rollback_sends_everything_to_the_stable_revision(service):
    targets = plan(service, 0, STABLE)
    assert [(t["type"], t["percent"]) for t in targets] == [
        ("TRAFFIC_TARGET_ALLOCATION_TYPE_LATEST", 0),
        ("TRAFFIC_TARGET_ALLOCATION_TYPE_REVISION", 100),
    ]
    assert targets[1]["revision"] == STABLE[service]


@pytest.mark.parametrize("service", SERVICES)
@pytest.mark.parametrize("canary", [0, 1, 10, 50, 99, 100])
def test_shares_always_add_up_to_100(service, canary):
    assert sum(t["percent"] for t in plan(service, canary, STABLE)) == 100


def test_a_split_without_a_stable_revision_is_refused_before_apply():
    for service in SERVICES:
        (pre,) = tf.one(tf.instance("google_cloud_run_v2_service", "function", service)["lifecycle"])["precondition"]
        assert f'stable_revisions["{service}"]' in pre["condition"] or f"stable_revisions[\"{service}\"]" in pre["condition"]


def test_make_targets_drive_the_variables():
    makefile = (tf.ROOT / "Makefile").read_text()
    assert re.search(r"\ndeploy:.*?\n\ttools/deploy\.sh deploy \$\(ENV\) \$\(CANARY\)", makefile, re.S)
    assert re.search(r"\npromote:.*?\n\ttools/deploy\.sh promote \$\(ENV\)", makefile, re.S)
    assert re.search(r"\nrollback:.*?\n\ttools/deploy\.sh rollback \$\(ENV\)", makefile, re.S)
    script = (tf.ROOT / "tools" / "deploy.sh").read_text()
    cases = {m.group(1): m.group(2) for m in re.finditer(r"\n  (deploy|promote|rollback)\)\n(.*?)\n    ;;", script, re.S)}
    assert set(cases) == {"deploy", "promote", "rollback"}
    assert '-var "canary_percent=${canary:-100}"' in cases["deploy"]
    assert "stable_revisions=$(tf output -json stable_revisions)" in cases["deploy"]
    assert "-var canary_percent=100" in cases["promote"] and "stable_revisions" not in cases["promote"]
    assert "-var canary_percent=0" in cases["rollback"]
    assert "stable_revisions=$(tf output -json stable_revisions)" in cases["rollback"]
