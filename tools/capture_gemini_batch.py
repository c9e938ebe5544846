"""Captures the Gemini Batch API wire format from Google's own SDK (PyPI `google-genai`), no network.

The SDK is pointed at a loopback HTTP server that records every request it receives and answers
just enough for the SDK to go on. What it recorded is written to `common/tests/fixtures/` as
`gemini-batch-*.json`; the Rust adapter's tests compare what it sends to these files.

Run it with `tools/capture-gemini-batch.sh` (installs the SDK into .tools/genai-venv first).
"""

import base64
import json
import os
import sys
import tempfile
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from google import genai
from google.genai import types

OUT = sys.argv[1] if len(sys.argv) > 1 else "common/tests/fixtures"
PNG = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg=="
)
MODEL = "gemini-2.5-flash-image"
recorded = []


def operation(state, name="batches/test-batch-1"):
    """A batch as the Developer API returns it: an Operation with the batch in `metadata`."""
    return {
        "name": name,
        "metadata": {
            "@type": "type.googleapis.com/google.ai.generativelanguage.v1main.GenerateContentBatch",
            "model": f"models/{MODEL}",
            "displayName": "assetgen-capture",
            "createTime": "2026-11-28T14:02:00.000000Z",
            "updateTime": "2026-11-28T14:02:00.000000Z",
            "state": state,
            "name": name,
        },
    }


class Recorder(BaseHTTPRequestHandler):
    def _record(self):
        length = int(self.headers.get("content-length") or 0)
        raw = self.rfile.read(length) if length else b""
        if "upload_id" in self.path:
            body = raw.decode("utf-8")  # the uploaded JSONL, byte for byte
        else:
            body = json.loads(raw) if raw else None
        keep = {"content-type", "x-goog-api-key", "x-goog-upload-protocol", "x-goog-upload-command",
                "x-goog-upload-header-content-type", "x-goog-upload-header-content-length",
                "x-goog-upload-offset"}
        headers = {k.lower(): v for k, v in self.headers.items() if k.lower() in keep}
        recorded.append({"method": self.command, "path": self.path, "headers": headers, "body": body})
        return body

    def _answer(self, status, body, headers=None):
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("content-type", "application/json")
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_POST(self):
        self._record()
        path = self.path
        if path.startswith("/upload/") and "upload_id" not in path:
            port = self.server.server_address[1]
            self._answer(200, {}, {"x-goog-upload-url": f"http://127.0.0.1:{port}/upload/v1beta/files?upload_id=u1",
                                   "x-goog-upload-status": "active"})
        elif "upload_id" in path:
            self._answer(200, {"file": {"name": "files/input-1", "mimeType": "application/jsonl",
                                        "sizeBytes": "10", "state": "ACTIVE",
                                        "uri": "https://generativelanguage.googleapis.com/v1beta/files/input-1"}},
                         {"x-goog-upload-status": "final"})
        elif path.endswith(":cancel"):
            self._answer(200, {})
        else:
            self._answer(200, operation("BATCH_STATE_PENDING"))

    def do_GET(self):
        self._record()
        if self.path.startswith("/v1beta/batches?") or self.path == "/v1beta/batches":
            # Two pages, so the SDK's pager shows how it asks for the next one.
            if "pageToken" in self.path:
                self._answer(200, {"operations": [operation("BATCH_STATE_RUNNING", "batches/test-batch-2")]})
            else:
                self._answer(200, {"operations": [operation("BATCH_STATE_RUNNING")], "nextPageToken": "page-2"})
        elif "download" in self.path:
            self.send_response(200)
            self.send_header("content-length", "0")
            self.end_headers()
        else:
            self._answer(200, operation("BATCH_STATE_RUNNING"))

    def do_DELETE(self):
        self._record()
        self._answer(200, {})

    def log_message(self, *args):
        pass


def request(scene, variant, refs):
    """One image call, as the live adapter makes it (gemini-generate-request.json)."""
    parts = [types.Part(text=f"A product on a clean background, scene {scene} variant {variant}")]
    parts += [types.Part(inline_data=types.Blob(mime_type="image/png", data=PNG)) for _ in range(refs)]
    return types.InlinedRequest(
        contents=[types.Content(role="user", parts=parts)],
        config=types.GenerateContentConfig(
            response_modalities=["IMAGE"], image_config=types.ImageConfig(aspect_ratio="16:9")
        ),
        metadata={"key": f"{scene}.v{variant}"},
    )


def save(name, entries):
    with open(os.path.join(OUT, name), "w") as f:
        json.dump(entries if len(entries) != 1 else entries[0], f, indent=2, sort_keys=False)
        f.write("\n")
    print(f"wrote {name}")


def main():
    server = ThreadingHTTPServer(("127.0.0.1", 0), Recorder)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{server.server_address[1]}"
    client = genai.Client(api_key="test-key", http_options=types.HttpOptions(base_url=base, api_version="v1beta"))

    # Inline requests: one GenerateContentRequest per image, each keyed.
    client.batches.create(
        model=MODEL,
        src=[request("BATCH-001", 1, 1), request("BATCH-001", 2, 1), request("BATCH-002", 1, 0)],
        config=types.CreateBatchJobConfig(display_name="assetgen-capture"),
    )
    save("gemini-batch-create-inline-request.json", recorded[-1:])

    # The file variant: the JSONL is uploaded through the Files API (resumable upload), then named.
    start = len(recorded)
    with tempfile.NamedTemporaryFile("w", suffix=".jsonl", delete=False) as f:
        f.write(json.dumps({"key": "BATCH-001.v1", "request": {"contents": [{"role": "user", "parts": [
            {"text": "A product on a clean background, scene BATCH-001 variant 1"}]}],
            "generationConfig": {"responseModalities": ["IMAGE"], "imageConfig": {"aspectRatio": "16:9"}}}}) + "\n")
        path = f.name
    uploaded = client.files.upload(
        file=path, config=types.UploadFileConfig(mime_type="application/jsonl", display_name="assetgen-capture")
    )
    save("gemini-batch-upload-requests.json", recorded[start:])
    start = len(recorded)
    client.batches.create(
        model=MODEL, src=uploaded.name, config=types.CreateBatchJobConfig(display_name="assetgen-capture")
    )
    save("gemini-batch-create-file-request.json", recorded[start:])

    start = len(recorded)
    client.batches.get(name="batches/test-batch-1")
    save("gemini-batch-get-request.json", recorded[start:])
    start = len(recorded)
    client.batches.cancel(name="batches/test-batch-1")
    save("gemini-batch-cancel-request.json", recorded[start:])
    start = len(recorded)
    listed = [job.name for job in client.batches.list(config=types.ListBatchJobsConfig(page_size=100))]
    assert listed == ["batches/test-batch-1", "batches/test-batch-2"], listed
    save("gemini-batch-list-requests.json", recorded[start:])
    start = len(recorded)
    try:
        client.files.download(file="files/batch-test-batch-1-output")
    except Exception as e:  # the SDK may check the answer; the request is what matters
        print(f"download: {e}", file=sys.stderr)
    save("gemini-batch-download-request.json", recorded[start:])
    # A job's uploaded input, deleted once the job has ended.
    start = len(recorded)
    client.files.delete(name="files/input-1")
    save("gemini-batch-delete-file-request.json", recorded[start:])
    server.shutdown()


if __name__ == "__main__":
    main()
