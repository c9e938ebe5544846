"""Schemathesis hooks for `make contract-test`.

Two rules of `POST /v1/batches` and `POST /v1/estimate` span several fields, which JSON Schema
cannot state (the schema's descriptions do): scene ids are unique within a batch, ignoring case,
and a row's references together with the global ones name at most MAX_REFS distinct URLs. A
generated *positive* request is made to keep them, so that "valid data is accepted" tests what
the schema promises; negative requests are left as generated.
"""

import schemathesis

MAX_REFS = 6
BATCH_PATHS = {"/v1/batches", "/v1/estimate"}


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
        refs = row.get("refs")
        if isinstance(refs, list):
            distinct = set(global_refs)
            kept = []
            for ref in refs:
                if ref in distinct or len(distinct) < MAX_REFS:
                    distinct.add(ref)
                    kept.append(ref)
            row["refs"] = kept
    return case
