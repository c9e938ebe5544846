#!/usr/bin/env bash
# Captures the Gemini Batch API requests as Google's Python SDK (google-genai) builds them, against a
# loopback recorder (no network), into common/tests/fixtures/gemini-batch-*.json. Not part of
# `make test`: the fixtures are committed; run this again to check them against a newer SDK.
set -euo pipefail
cd "$(dirname "$0")/.."
VERSION="${GOOGLE_GENAI_VERSION:-3.6.1}"
VENV=.tools/genai-venv
if ! "$VENV/bin/python" -c "import google.genai" 2>/dev/null; then
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q "google-genai==$VERSION"
fi
"$VENV/bin/python" tools/capture_gemini_batch.py common/tests/fixtures
