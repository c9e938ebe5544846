#!/usr/bin/env python3
"""Manual check (not in `make test`): the RSS of `assetgen serve` while N clients open a batch's
event stream and never read. The automated proof is `cargo test -p assetgen-relay --test
slow_clients`; this runs the real binary with the kernel's own buffer sizes.

    python3 tools/silent-clients.py BINARY N ROWS PORT [VARIANTS [PIPELINED]]

Starts BINARY serve on PORT (file store under /tmp/silent-clients), submits a dry run of ROWS rows of
VARIANTS images, opens N TCP clients (4 KiB receive buffer) that each send PIPELINED requests for
the batch's events and never read, and one reading client (curl). Samples the server's VmRSS and
its /metrics-lite gauges every 0.5 s until every stream is gone (or 420 s), then prints one line.
"""
import json, os, socket, subprocess, sys, time, urllib.request
BIN = os.path.abspath(sys.argv[1]); N = int(sys.argv[2]); ROWS = int(sys.argv[3]); PORT = int(sys.argv[4]); VARIANTS = int(sys.argv[5]) if len(sys.argv) > 5 else 3; PIPELINE = int(sys.argv[6]) if len(sys.argv) > 6 else 1
work = f"/tmp/silent-clients/w{N}"; os.makedirs(work, exist_ok=True)
env = dict(os.environ, ASSETGEN_STORE=f"file://{work}/data", ASSETGEN_MAX_ROWS=str(ROWS), RUST_LOG="warn")
srv = subprocess.Popen([BIN, "serve", "--port", str(PORT)], cwd=work, env=env, stdout=subprocess.DEVNULL)
base = f"http://127.0.0.1:{PORT}"
for _ in range(300):
    try: urllib.request.urlopen(base + "/healthz"); break
    except Exception: time.sleep(0.1)
def rss(): 
    for l in open(f"/proc/{srv.pid}/status"):
        if l.startswith("VmRSS:"): return int(l.split()[1])
def lite():
    d = json.load(urllib.request.urlopen(base + "/metrics-lite"))
    return d["gauges"], d["totals"]
csv = f"{work}/rows.csv"
with open(csv, "w") as f:
    f.write("scene_id,prompt,variants\n")
    for i in range(ROWS): f.write(f"S{i},scene {i},{VARIANTS}\n")
idle = rss()
out = subprocess.run([BIN, "--server", base, "submit", csv, "--json"], capture_output=True, text=True)
batch = json.loads(out.stdout)["batch_id"]
path = f"/v1/batches/{batch}/events"
socks = []
for _ in range(N):
    s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    s.connect(("127.0.0.1", PORT))
    s.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode() * PIPELINE); socks.append(s)
reader = subprocess.Popen(["curl", "-sN", "-o", f"{work}/reader.txt", base + path])
peak = 0; t0 = time.time(); reader_done = t0; most_unsent = 0; most_clients = 0
while time.time() - t0 < 420:
    peak = max(peak, rss()); g, t = lite()
    most_unsent = max(most_unsent, g.get("assetgen_relay_unsent_bytes", 0)); most_clients = max(most_clients, g.get("assetgen_relay_clients", 0))
    if reader.poll() is None: reader_done = time.time()
    # A pipelined client's next stream starts after the last one ended: wait 60 s past the
    # reader's end (the stall limit is 30 s) before taking no streams for all streams gone.
    elif time.time() - reader_done > 60 and g.get("assetgen_relay_clients", 0) == 0: break
    time.sleep(0.5)
events = open(f"{work}/reader.txt").read().count("event: ")
g, t = lite()
print(f"N={N} rows={ROWS}x{VARIANTS} pipelined={PIPELINE}: RSS idle {idle} KiB, peak {peak} KiB, end {rss()} KiB; clients at most {most_clients:.0f}, "
      f"unsent bytes at most {most_unsent:.0f} (sum), stalled writes cut {t.get('assetgen_http_writes_stalled_total', 0)}, "
      f"clients now {g.get('assetgen_relay_clients')}, reader events {events}, after {time.time()-t0:.0f} s")
srv.terminate(); srv.wait()
