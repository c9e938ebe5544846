#!/usr/bin/env bash
# Prints the absolute path of the Google Terraform provider's schema as jsii ships it (npm
# @cdktf/provider-google, its .jsii file, about 98 MB), installing the package first when missing
# into .tools/provider-google (gitignored). Terraform cannot download providers here, so the
# structural tests check resource and attribute names against this instead. Progress to stderr.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
prefix="$root/.tools/provider-google"
version="16.12.1"
jsii="$prefix/node_modules/@cdktf/provider-google/.jsii"

if [[ ! -s "$jsii" ]] || ! grep -q "\"version\": \"$version\"" "$prefix/node_modules/@cdktf/provider-google/package.json" 2>/dev/null; then
  command -v npm >/dev/null || { echo "npm is needed to install @cdktf/provider-google (Debian: apt-get install npm)" >&2; exit 1; }
  echo "installing @cdktf/provider-google@$version into .tools/provider-google (npm; its schema, not its code, is used)" >&2
  mkdir -p "$prefix"
  # --omit=peer: cdktf and constructs (its peers) are not needed to read the schema.
  npm install --prefix "$prefix" --no-save --no-audit --no-fund --omit=peer --ignore-scripts \
    "@cdktf/provider-google@$version" >&2
fi
[[ -s "$jsii" ]] || { echo "no $jsii after installing @cdktf/provider-google@$version" >&2; exit 1; }
echo "$jsii"
