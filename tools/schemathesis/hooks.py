"""Schemathesis hooks for `make contract-test`.

Three rules of `POST /v1/batches` and `POST /v1/estimate` are beyond JSON Schema (the schema's
descriptions state them): scene ids are unique within a batch, ignoring case; a row's references
together with the global ones name at most MAX_REFS distinct URLs; and a reference to an internal
address (loopback, private, link-local, the metadata server, every special-purpose range) is
refused with 403. A generated *positive* request is made to keep them, so that "valid data is
accepted" tests what the schema promises and the stateful phase gets batches to follow (its
links: status, events, cancel, retry, control token); negative requests are left as generated.
"""

import ipaddress
import re

import schemathesis

MAX_REFS = 6
BATCH_PATHS = {"/v1/batches", "/v1/estimate"}
# refs/address_policy.rs: names refused whatever they resolve to, and the refused addresses.
INTERNAL_NAMES = ("localhost", "metadata", "metadata.google.internal", "metadata.goog")
REFUSED_V4 = [
    ipaddress.ip_network(n)
    for n in (
        "0.0.0.0/8", "10.0.0.0/8", "100.64.0.0/10", "127.0.0.0/8", "169.254.0.0/16", "172.16.0.0/12",
        "192.0.0.0/24", "192.0.2.0/24", "192.31.196.0/24", "192.52.193.0/24", "192.88.99.0/24",
        "192.168.0.0/16", "192.175.48.0/24", "198.18.0.0/15", "198.51.100.0/24", "203.0.113.0/24",
        "224.0.0.0/4", "240.0.0.0/4",
    )
]
GLOBAL_UNICAST = ipaddress.ip_network("2000::/3")
NAT64 = ipaddress.ip_network("64:ff9b::/96")
REFUSED_V6 = [
    ipaddress.ip_network(n) for n in ("2001::/23", "2001:db8::/32", "2002::/16", "2620:4f:8000::/48", "3fff::/20")
]


def address_is_refused(ip):
    if ip.version == 6:
        if ip.ipv4_mapped is not None:
            return address_is_refused(ip.ipv4_mapped)
        if ip in NAT64:
            return address_is_refused(ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF))
        return ip not in GLOBAL_UNICAST or any(ip in net for net in REFUSED_V6)
    return any(ip in net for net in REFUSED_V4)
HOST = re.compile(r"^https?://(\[(?P<v6>[^\]]+)\]|(?P<name>[^/?#:]+))")


def is_internal(ref):
    """Whether the address policy would refuse `ref` (a close reading; the server decides)."""
    m = HOST.match(ref) if isinstance(ref, str) else None
    if not m:
        return False
    literal = m.group("v6") or m.group("name")
    try:
        return address_is_refused(ipaddress.ip_address(literal))
    except ValueError:
        name = literal.rstrip(".").lower()
        return (
            any(name == n or name.endswith("." + n) for n in INTERNAL_NAMES)
            or name.endswith(".internal")
            or name.endswith(".local")
        )


def public(refs):
    return [r for r in refs if not is_internal(r)] if isinstance(refs, list) else refs


@schemathesis.hook
def map_case(context, case):
    if case.operation.path not in BATCH_PATHS or case.operation.method.upper() != "POST":
        return case
    meta = case.meta
    if meta is None or not meta.generation.mode.is_positive:
        return case
    body = case.body
    if not isinstance(body, dict) or not isinstance(body.get("rows"), list):
        return case
    if isinstance(body.get("global_refs"), list):
        body["global_refs"] = public(body["global_refs"])
    global_refs = body.get("global_refs") if isinstance(body.get("global_refs"), list) else []
    seen = set()
    for index, row in enumerate(body["rows"]):
        if not isinstance(row, dict):
            continue
        scene = row.get("scene_id")
        if isinstance(scene, str):
            if scene.lower() in seen:
                # Still matches the pattern: the index keeps it unique, the cut keeps it short.
                scene = (f"{index}-" + scene)[:64]
                while scene.lower() in seen:
                    scene = ("x" + scene)[:64]
                row["scene_id"] = scene
            seen.add(scene.lower())
        refs = public(row.get("refs"))
        if isinstance(refs, list):
            distinct = set(global_refs)
            kept = []
            for ref in refs:
                if ref in distinct or len(distinct) < MAX_REFS:
                    distinct.add(ref)
                    kept.append(ref)
            row["refs"] = kept
    return case
