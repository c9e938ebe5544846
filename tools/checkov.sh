#!/usr/bin/env bash
# Prints the absolute path of checkov (static analysis of terraform/), installing it first when
# it is missing: PyPI's checkov into its own venv, .tools/checkov-venv (gitignored), because it
# brings bc-python-hcl2, which shadows python-hcl2's `hcl2` module that the structural tests use.
# Progress goes to stderr, only the path to stdout.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="$root/.tools/checkov-venv"
version="3.3.30"

if [[ ! -x "$venv/bin/checkov" ]]; then
  echo "installing checkov into .tools/checkov-venv (PyPI package checkov==$version)" >&2
  [[ -x "$venv/bin/pip" ]] || python3 -m venv "$venv" >&2
  "$venv/bin/pip" install --quiet --disable-pip-version-check "checkov==$version" >&2
fi
[[ -x "$venv/bin/checkov" ]] || { echo "no checkov under $venv after installing checkov==$version" >&2; exit 1; }
echo "$venv/bin/checkov"
