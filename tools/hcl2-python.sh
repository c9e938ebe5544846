#!/usr/bin/env bash
# Prints the absolute path of a Python that has python-hcl2 and pytest (the structural tests of
# terraform/), installing them first when missing into .tools/hcl2-venv (gitignored; its own venv
# because checkov's bc-python-hcl2 would shadow the `hcl2` module). Progress goes to stderr.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="$root/.tools/hcl2-venv"
packages=("python-hcl2==7.3.1" "pytest==8.4.2")

if ! "$venv/bin/python" -c 'import hcl2, pytest' 2>/dev/null; then
  echo "installing ${packages[*]} into .tools/hcl2-venv (PyPI)" >&2
  [[ -x "$venv/bin/pip" ]] || python3 -m venv "$venv" >&2
  "$venv/bin/pip" install --quiet --disable-pip-version-check "${packages[@]}" >&2
fi
"$venv/bin/python" -c 'import hcl2, pytest' || { echo "python-hcl2 or pytest missing in $venv" >&2; exit 1; }
echo "$venv/bin/python"
