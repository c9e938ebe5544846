"""Which environment variables each cloud function reads, derived from the Rust source.

The Terraform tests compare this with the `env` blocks of the Cloud Run services and the job, so
a variable added to the code without Terraform (or left in Terraform after the code stopped reading
it) fails `make test`. The analysis is deliberately small and strict: where the code reads the
environment in a way it does not understand, it raises instead of guessing.

How a variable reaches a function:
- `common/src/config.rs` reads variables into `Config` fields (`get("VAR")` inside `from_lookup`);
  a function reads a variable when its `main` uses the field, directly (`config.field`), through a
  `Config` method (`self.field`), or through a `common` function it hands `&config` to
  (transitively: `cloud::parts` calls `cloud::store`, ...).
- a literal `std::env::var("VAR")` (or `var_os`, or a closure wrapping it) in a function's own
  crate belongs to that function; in `common` it belongs to the `&Config` function it sits in, or,
  outside any of them (logging), to every function.
- generate's `main` has two modes: the job (sweep, Cloud Run job) runs what precedes
  `if as_job {` and that block; the service runs what precedes it and what follows it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
COMMON = ROOT / "common" / "src"
FUNCTIONS = {name: ROOT / "functions" / name / "src" for name in ("submit", "generate", "relay")}

# What the cloud runs: three services and the generate job (the same binary in job mode).
SERVICES = ("submit", "generate", "relay", "generate-job")

ENV_NAME = r"[A-Z][A-Z0-9]*(?:_[A-Z0-9]+)*"
# Calls whose first argument names a variable being read: std's own and the closures that wrap it.
READ_CALL = re.compile(r"\b(?:env::var|env::var_os|var|var_os|get|read|lookup)\s*\(\s*\"(" + ENV_NAME + r")\"")
# Reads through a non-literal name are only allowed where a known wrapper forwards its argument.
DYNAMIC_READ = re.compile(r"env::var(?:_os)?\s*\(\s*([a-z_][a-z0-9_]*)\s*\)")
KNOWN_WRAPPERS = {
    ("common/src/config.rs", "k"),  # from_env hands `|k| std::env::var(k)` to from_lookup as `lookup`
    ("functions/generate/src/job.rs", "name"),  # Task::from_env's `read(name, default)`
}


def strip_comments(src: str) -> str:
    """Removes `//` and `/* */` comments, keeping string literals (URLs contain `//`) intact."""
    out, i, n = [], 0, len(src)
    while i < n:
        c = src[i]
        if src.startswith("//", i):
            while i < n and src[i] != "\n":
                i += 1
        elif src.startswith("/*", i):
            end = src.find("*/", i + 2)
            i = n if end < 0 else end + 2
        elif c == "r" and re.match(r'r#*"', src[i:]) and (i == 0 or not (src[i - 1].isalnum() or src[i - 1] == "_")):
            hashes = re.match(r"r(#*)\"", src[i:]).group(1)
            end = src.find('"' + hashes, i + 2 + len(hashes))
            end = n if end < 0 else end + 1 + len(hashes)
            out.append(src[i:end])
            i = end
        elif c == '"':
            j = i + 1
            while j < n and src[j] != '"':
                j += 2 if src[j] == "\\" else 1
            out.append(src[i : j + 1])
            i = j + 1
        elif c == "'":
            # a char literal ('a', '\n', '"') or a lifetime ('a, 'static)
            m = re.match(r"'(?:\\.[^']*|[^\\'])'", src[i:])
            if m:
                out.append(m.group(0))
                i += len(m.group(0))
            else:
                out.append(c)
                i += 1
        else:
            out.append(c)
            i += 1
    return "".join(out)


def matching(src: str, open_at: int) -> int:
    """Index just past the bracket that closes the one at `open_at` (strings and chars skipped)."""
    pairs = {"{": "}", "(": ")", "[": "]"}
    stack, i = [], open_at
    while i < len(src):
        c = src[i]
        if c == '"':
            i += 1
            while src[i] != '"':
                i += 2 if src[i] == "\\" else 1
        elif c == "'" and re.match(r"'(?:\\.[^']*|[^\\'])'", src[i:]):
            i += len(re.match(r"'(?:\\.[^']*|[^\\'])'", src[i:]).group(0)) - 1
        elif c in pairs:
            stack.append(pairs[c])
        elif c in ")]}":
            if not stack or stack.pop() != c:
                raise ValueError(f"unbalanced {c!r} at {i}")
            if not stack:
                return i + 1
        i += 1
    raise ValueError(f"no closing bracket for the one at {open_at}")


def without_tests(src: str) -> str:
    """Drops `#[cfg(test)]` items: what tests read is not what the cloud runs."""
    while (m := re.search(r"#\[cfg\(test\)\]\s*(?:pub\s+)?mod\s+\w+\s*\{", src)) is not None:
        src = src[: m.start()] + src[matching(src, m.end() - 1) :]
    return src


def source(path: Path) -> str:
    return without_tests(strip_comments(path.read_text()))


def rel(path: Path) -> str:
    return path.relative_to(ROOT).as_posix()


@dataclass
class Function:
    """A Rust `fn` whose body we look into."""

    file: str
    name: str
    params: str
    body: str
    config_param: str | None = None

    def __post_init__(self) -> None:
        m = re.search(r"\b(\w+)\s*:\s*&\s*Config\b", self.params)
        self.config_param = m.group(1) if m else None


def functions_in(path: Path) -> list[Function]:
    src = source(path)
    found = []
    for m in re.finditer(r"\bfn\s+(\w+)\s*(?:<[^>]*>)?\s*\(", src):
        params_end = matching(src, m.end() - 1)
        body_open = src.find("{", params_end)
        semicolon = src.find(";", params_end)
        if body_open < 0 or (0 <= semicolon < body_open):
            continue  # a declaration without a body (trait method)
        found.append(
            Function(rel(path), m.group(1), src[m.end() - 1 : params_end], src[body_open : matching(src, body_open)])
        )
    return found


def direct_reads(text: str) -> set[str]:
    return set(READ_CALL.findall(text))


def check_dynamic_reads(path: Path) -> None:
    for name in DYNAMIC_READ.findall(source(path)):
        if (rel(path), name) not in KNOWN_WRAPPERS:
            raise AssertionError(
                f"{rel(path)} reads the environment through `{name}`, which terraform/tests/rust_env.py "
                "cannot follow: read a literal name, or teach rust_env.py the wrapper"
            )


# ---- config.rs: which variables feed which Config field -------------------------------------------------


def top_level_statements(block: str) -> list[str]:
    """Splits a `{ ... }` body into its statements (`;`-ended, or block statements like `for`)."""
    inner, out, start, i = block[1:-1], [], 0, 0
    while i < len(inner):
        c = inner[i]
        if c in "{([":
            i = matching(inner, i)
            head = inner[start:i].lstrip()
            if c == "{" and re.match(r"(for|while|loop|if)\b", head) and not re.match(r"\s*else\b", inner[i:]):
                out.append(inner[start:i])
                start = i
            continue
        if c == '"':
            i += 1
            while inner[i] != '"':
                i += 2 if inner[i] == "\\" else 1
        elif c == ";":
            out.append(inner[start : i + 1])
            start = i + 1
        i += 1
    if inner[start:].strip():
        out.append(inner[start:])
    return [s.strip() for s in out if s.strip()]


def split_commas(text: str) -> list[str]:
    parts, start, i = [], 0, 0
    while i < len(text):
        if text[i] in "{([":
            i = matching(text, i)
            continue
        if text[i] == '"':
            i += 1
            while text[i] != '"':
                i += 2 if text[i] == "\\" else 1
        elif text[i] == ",":
            parts.append(text[start:i])
            start = i + 1
        i += 1
    parts.append(text[start:])
    return [p.strip() for p in parts if p.strip()]


def identifiers(text: str) -> set[str]:
    return set(re.findall(r"\b[a-z_][a-z0-9_]*\b", re.sub(r'"(?:\\.|[^"\\])*"', '""', text)))


def config_fields() -> dict[str, set[str]]:
    """`Config` field → the variables its value comes from (from `Config::from_lookup`)."""
    path = COMMON / "config.rs"
    (from_lookup,) = [f for f in functions_in(path) if f.name == "from_lookup"]
    locals_: dict[str, set[str]] = {}
    fields: dict[str, set[str]] = {}
    for stmt in top_level_statements(from_lookup.body):
        reads = direct_reads(stmt)
        if m := re.match(r"let\s+(mut\s+)?(\(?[\w\s,]+\)?)\s*(?::[^=]+)?=", stmt):
            derived = set().union(*(locals_.get(i, set()) for i in identifiers(stmt[m.end() :])))
            for name in identifiers(m.group(2)) - {"mut"}:
                locals_[name] = reads | derived
        elif stmt.startswith("Ok(Self"):
            body_open = stmt.index("{")
            for entry in split_commas(stmt[body_open + 1 : matching(stmt, body_open) - 1]):
                name, _, expr = entry.partition(":")
                expr = expr or name  # shorthand `store,`
                fields[name.strip()] = direct_reads(expr) | set().union(
                    *(locals_.get(i, set()) for i in identifiers(expr))
                )
        else:
            # `for entry in get("X")... { user_limits.insert(..) }`: feeds the `let mut` locals it names
            for name in identifiers(stmt):
                if name in locals_ and re.search(r"let\s+mut\s+" + name + r"\b", from_lookup.body):
                    locals_[name] |= reads
    if not fields:
        raise AssertionError("no `Ok(Self { ... })` found in Config::from_lookup")
    unplaced = direct_reads(from_lookup.body) - set().union(*fields.values())
    if unplaced:
        raise AssertionError(f"config.rs reads {sorted(unplaced)} but rust_env.py cannot tell which field they feed")
    return fields


# ---- who uses which field -------------------------------------------------------------------------------


@dataclass
class Reach:
    fields: set[str] = field(default_factory=set)
    reads: set[str] = field(default_factory=set)


def common_config_functions() -> dict[str, Function]:
    """`common` functions taking `&Config`, and `Config`'s own methods (keyed `Config::name`)."""
    out: dict[str, Function] = {}
    for path in sorted(COMMON.rglob("*.rs")):
        if "testkit" in path.parts:
            continue
        for f in functions_in(path):
            if f.config_param:
                out[f.name] = f
            elif path.name == "config.rs" and re.search(r"&self\b", f.params) and f.name not in ("fmt", "expose"):
                f.config_param = "self"
                out[f"Config::{f.name}"] = f
    return out


def reach(text: str, param: str, known: dict[str, Function], seen: set[str] | None = None) -> Reach:
    """What `text` reads through its `Config` named `param`, following calls that pass it on."""
    seen = set() if seen is None else seen
    result = Reach(reads=direct_reads(text))
    for name, call in re.findall(r"\b" + param + r"\s*\.\s*(\w+)\s*(\()?", text):
        if call:
            callee = f"Config::{name}"
            if callee not in known:
                raise AssertionError(f"{param}.{name}(...) is not a Config method rust_env.py knows")
            calls = [callee]
        else:
            result.fields.add(name)
            calls = []
        for callee in calls:
            if callee not in seen:
                seen.add(callee)
                sub = reach(known[callee].body, "self", known, seen)
                result.fields |= sub.fields
                result.reads |= sub.reads
    for name in re.findall(r"\b(\w+)\s*\(\s*&?\s*" + param + r"\b", text):
        if name in known and name not in seen:
            seen.add(name)
            f = known[name]
            sub = reach(f.body, f.config_param, known, seen)
            result.fields |= sub.fields
            result.reads |= sub.reads
    return result


def reads_outside_config_functions() -> set[str]:
    """Variables `common` reads in code that is handed no `Config` (logging): every function's."""
    out: set[str] = set()
    for path in sorted(COMMON.rglob("*.rs")):
        if "testkit" in path.parts or path.name == "config.rs":
            continue
        check_dynamic_reads(path)
        text = source(path)
        for f in functions_in(path):
            if f.config_param:
                text = text.replace(f.body, "")
        out |= direct_reads(text)
    return out


def pipeline_start_body() -> str:
    """The body of `shim::PipelineStart::from_env`, where submit and generate read their `Config`
    and wire the pipeline from it."""
    path = COMMON / "shim" / "pipeline_start.rs"
    check_dynamic_reads(path)
    starts = [f for f in functions_in(path) if f.name == "from_env"]
    if len(starts) != 1 or "Config::from_env" not in starts[0].body:
        raise AssertionError(f"{rel(path)}: expected one `from_env` that calls Config::from_env")
    return starts[0].body


def main_run_body(function: str) -> tuple[str, str]:
    """The text of a function's `main.rs` outside `run` (helpers), and its `run` body. A `run` that
    starts from `PipelineStart::from_env()` gets that function's body in front of its own, so its
    `Config` binding and what is built from it are followed as if written there."""
    path = FUNCTIONS[function] / "main.rs"
    check_dynamic_reads(path)
    runs = [f for f in functions_in(path) if f.name == "run"]
    own = runs[0].body if len(runs) == 1 else ""
    run = pipeline_start_body() + "\n" + own if "PipelineStart::from_env" in own else own
    if len(runs) != 1 or "Config::from_env" not in run:
        raise AssertionError(f"{rel(path)}: expected one `run` that calls Config::from_env or PipelineStart::from_env")
    return source(path).replace(own, ""), run


def config_binding(body: str) -> str:
    m = re.search(r"let\s+(\w+)\s*=\s*Config::from_env", body)
    if not m:
        raise AssertionError("no `let NAME = Config::from_env(...)` in run")
    return m.group(1)


def service_texts() -> dict[str, tuple[str, str]]:
    """The code each deployed unit runs from its crate: its part of `run` (where its `Config`
    binding lives; split by mode for generate), and the crate's other non-test sources (generate's
    job module only for the job)."""
    texts: dict[str, tuple[str, str]] = {}
    for function, src_dir in FUNCTIONS.items():
        crate_rest, run = main_run_body(function)
        for path in sorted(src_dir.rglob("*.rs")):
            check_dynamic_reads(path)
            if path.name not in ("main.rs", "job.rs"):
                crate_rest += source(path)
        if function == "generate":
            m = re.search(r"\bif\s+as_job\s*\{", run)
            if not m:
                raise AssertionError("functions/generate/src/main.rs: `if as_job {` not found; update rust_env.py")
            end = matching(run, m.end() - 1)
            before, job_block, after = run[: m.start()], run[m.start() : end], run[end:]
            texts["generate"] = (before + after, crate_rest)
            texts["generate-job"] = (before + job_block, crate_rest + source(src_dir / "job.rs"))
        else:
            texts[function] = (run, crate_rest)
    return texts


def variables_by_service() -> dict[str, set[str]]:
    """Service (submit, generate, relay, generate-job) → every variable its code reads."""
    fields = config_fields()
    known = common_config_functions()
    everywhere = reads_outside_config_functions()
    out = {}
    for service, (run, rest) in service_texts().items():
        r = reach(run, config_binding(run), known)
        unknown = r.fields - fields.keys()
        if unknown:
            raise AssertionError(f"{service} uses Config fields rust_env.py cannot map: {sorted(unknown)}")
        out[service] = r.reads | direct_reads(rest) | everywhere | set().union(*(fields[f] for f in r.fields))
    return out


def all_variables() -> set[str]:
    """Every variable any non-test source of the cloud functions and `common` reads."""
    everything = set().union(*config_fields().values())
    for path in list(COMMON.rglob("*.rs")) + [p for d in FUNCTIONS.values() for p in d.rglob("*.rs")]:
        if "testkit" not in path.parts:
            everything |= direct_reads(source(path))
    return everything


if __name__ == "__main__":
    for service, variables in sorted(variables_by_service().items()):
        print(f"{service}: {' '.join(sorted(variables))}")
