#!/usr/bin/env bash
# The HTTP contract, tested as a stranger would: schemathesis (PyPI, pinned) with every check over
# every operation of /openapi.json, against a real `assetgen serve` (dev auth on loopback, a fresh
# file store), including the stateful links from POST /v1/batches to the batch's status, events,
# cancel and retry. Fails on any failure, a 5xx included, or if the server died on the way.
#
#   tools/contract-test.sh [path/to/assetgen]
#
# CONTRACT_EXAMPLES (default 30) bounds the test cases per operation and phase; CONTRACT_SEED
# (default fixed) makes a run repeatable: set it to another number to explore.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
binary="${1:-$root/target/debug/assetgen}"
version="4.32.5"
venv="$root/.tools/schemathesis"
examples="${CONTRACT_EXAMPLES:-30}"
seed="${CONTRACT_SEED:-20261128}"

if [[ ! -x "$venv/bin/st" ]] || ! "$venv/bin/st" --version 2>/dev/null | grep -q "$version"; then
  echo "installing schemathesis $version into .tools/schemathesis (PyPI)" >&2
  python3 -m venv "$venv" >&2 || {
    echo "cannot create a Python venv: install python3 and its venv module (Debian: apt-get install python3-venv)" >&2
    exit 1
  }
  "$venv/bin/pip" install --quiet --disable-pip-version-check "schemathesis==$version" >&2
fi
[[ -x "$binary" ]] || { echo "$binary is missing: cargo build -p assetgen-local --bin assetgen" >&2; exit 1; }

work="$(mktemp -d)"
server_pid=""
cleanup() {
  if [[ -n "$server_pid" ]]; then kill "$server_pid" 2>/dev/null || true; wait "$server_pid" 2>/dev/null || true; fi
  rm -rf "$work"
}
trap cleanup EXIT

ASSETGEN_STORE="file://$work/data" RUST_LOG=warn "$binary" serve --port 0 >"$work/serve.log" 2>&1 &
server_pid=$!
base=""
for _ in $(seq 1 100); do
  base="$(sed -n 's/^assetgen is listening on \(http:[^ ]*\)$/\1/p' "$work/serve.log" | head -n 1)"
  [[ -n "$base" ]] && break
  kill -0 "$server_pid" 2>/dev/null || { cat "$work/serve.log" >&2; exit 1; }
  sleep 0.1
done
[[ -n "$base" ]] || { echo "assetgen serve did not say where it listens" >&2; cat "$work/serve.log" >&2; exit 1; }
base="${base%/}"

started=$SECONDS
status=0
# From the scratch directory: schemathesis keeps a cache (.schemathesis/) where it runs.
cd "$work"
SCHEMATHESIS_HOOKS="$root/tools/schemathesis/hooks.py" "$venv/bin/st" \
  --config-file "$root/tools/schemathesis/schemathesis.toml" \
  run "$base/openapi.json" --checks all --max-examples "$examples" --seed "$seed" \
  --no-color --output-truncate false --report junit --report-dir "$work/report" || status=$?
echo "schemathesis: $((SECONDS - started)) s, $examples examples per operation, seed $seed"

if ! kill -0 "$server_pid" 2>/dev/null; then
  echo "assetgen serve died during the run:" >&2
  tail -n 50 "$work/serve.log" >&2
  exit 1
fi
if grep -q '"severity":"ERROR".*panicked\|panicked at' "$work/serve.log"; then
  echo "assetgen serve panicked during the run:" >&2
  grep -m 5 'panicked' "$work/serve.log" >&2
  exit 1
fi
exit "$status"
