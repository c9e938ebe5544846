// Test harness for the browser tests: a real `assetgen serve` (restartable on the same port and
// data directory), a loopback server of reference images that can be slow or missing, and Debian's
// Chromium driven by playwright-core. Everything stays on 127.0.0.1.

import { spawn } from 'node:child_process';
import { mkdtemp, mkdir, rm } from 'node:fs/promises';
import { existsSync } from 'node:fs';
import http from 'node:http';
import os from 'node:os';
import path from 'node:path';
import readline from 'node:readline';
import zlib from 'node:zlib';
import { fileURLToPath } from 'node:url';

const here = path.dirname(fileURLToPath(import.meta.url));
export const repoRoot = path.resolve(here, '../..');
export const screenshotDir = path.join(repoRoot, 'target', 'screenshots');
const binary = process.env.ASSETGEN_BIN || path.join(repoRoot, 'target', 'debug', 'assetgen');
const chromiumPath = process.env.CHROMIUM || '/usr/bin/chromium';

export const CHROMIUM_ARGS = [
  '--headless',
  '--no-sandbox',
  '--disable-gpu',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
  '--no-first-run',
  '--disable-quic',
];

// ---------------------------------------------------------------------------------------------
// PNG images made here (no fixtures): a solid colour with a darker band, so previews are visible.

function crc32(bytes) {
  let crc = 0xffffffff;
  for (const b of bytes) {
    crc ^= b;
    for (let k = 0; k < 8; k += 1) crc = crc & 1 ? 0xedb88320 ^ (crc >>> 1) : crc >>> 1;
  }
  return (crc ^ 0xffffffff) >>> 0;
}

function chunk(type, data) {
  const length = Buffer.alloc(4);
  length.writeUInt32BE(data.length);
  const body = Buffer.concat([Buffer.from(type, 'ascii'), data]);
  const crc = Buffer.alloc(4);
  crc.writeUInt32BE(crc32(body));
  return Buffer.concat([length, body, crc]);
}

/** A `size`×`size` RGB PNG of colour `[r, g, b]`. */
export function png([r, g, b], size = 64) {
  const header = Buffer.alloc(13);
  header.writeUInt32BE(size, 0);
  header.writeUInt32BE(size, 4);
  header.set([8, 2, 0, 0, 0], 8);
  const raw = Buffer.alloc((size * 3 + 1) * size);
  for (let y = 0; y < size; y += 1) {
    const row = y * (size * 3 + 1);
    const band = y > size * 0.6 && y < size * 0.8 ? 0.6 : 1;
    for (let x = 0; x < size; x += 1) {
      raw.set([Math.round(r * band), Math.round(g * band), Math.round(b * band)], row + 1 + x * 3);
    }
  }
  return Buffer.concat([
    Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]),
    chunk('IHDR', header),
    chunk('IDAT', zlib.deflateSync(raw)),
    chunk('IEND', Buffer.alloc(0)),
  ]);
}

// ---------------------------------------------------------------------------------------------
// Reference server: `/slow/NAME.png?ms=N` answers after N ms; `/flaky/NAME.png` is 404 until
// `setAvailable(NAME)`; every answer is a PNG coloured by NAME.

export async function startRefServer() {
  const available = new Set();
  const hits = new Map();
  const colour = (name) => {
    let h = 0;
    for (const c of name) h = (h * 31 + c.charCodeAt(0)) >>> 0;
    return [60 + (h % 160), 60 + ((h >> 8) % 160), 60 + ((h >> 16) % 160)];
  };
  const server = http.createServer((req, res) => {
    const url = new URL(req.url, 'http://127.0.0.1');
    const [, kind, file] = url.pathname.split('/');
    const name = (file || '').replace(/\.png$/, '');
    hits.set(url.pathname, (hits.get(url.pathname) || 0) + 1);
    const send = () => {
      const body = png(colour(name));
      res.writeHead(200, { 'Content-Type': 'image/png', 'Content-Length': body.length });
      res.end(body);
    };
    if (kind === 'slow') {
      const ms = Math.min(8000, Number(url.searchParams.get('ms')) || 0);
      setTimeout(send, ms);
    } else if (kind === 'flaky' && available.has(name)) {
      send();
    } else {
      res.writeHead(404, { 'Content-Type': 'text/plain' });
      res.end('not here');
    }
  });
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
  const base = `http://127.0.0.1:${server.address().port}`;
  return {
    base,
    hits,
    setAvailable: (name) => available.add(name),
    close: () =>
      new Promise((resolve) => {
        server.closeAllConnections?.();
        server.close(resolve);
      }),
  };
}

// ---------------------------------------------------------------------------------------------
// A Gemini `generateContent` stub on loopback, in the real wire format: an image per call, and
// `429 RESOURCE_EXHAUSTED` with `RetryInfo` on the calls numbered in `limitCalls` (1-based).

export async function startGeminiStub({ limitCalls = [] } = {}) {
  let calls = 0;
  const server = http.createServer((req, res) => {
    req.resume();
    req.on('end', () => {
      calls += 1;
      res.setHeader('Content-Type', 'application/json');
      if (limitCalls.includes(calls)) {
        res.writeHead(429);
        res.end(JSON.stringify({ error: { code: 429, message: 'Resource has been exhausted (e.g. check quota).',
          status: 'RESOURCE_EXHAUSTED', details: [{ '@type': 'type.googleapis.com/google.rpc.RetryInfo', retryDelay: '1s' }] } }));
        return;
      }
      const data = png([40 + (calls * 37) % 180, 120, 200 - (calls * 23) % 150]).toString('base64');
      res.writeHead(200);
      res.end(JSON.stringify({ candidates: [{ content: { role: 'model', parts: [
        { text: 'planning the composition', thought: true },
        { inlineData: { mimeType: 'image/png', data } },
      ] }, finishReason: 'STOP', index: 0 }], modelVersion: 'gemini-2.5-flash-image',
        responseId: `stub-response-${calls}` }));
    });
  });
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    base: `http://127.0.0.1:${server.address().port}`,
    calls: () => calls,
    close: () =>
      new Promise((resolve) => {
        server.closeAllConnections?.();
        server.close(resolve);
      }),
  };
}

// ---------------------------------------------------------------------------------------------
// Gemini's Batch API on loopback, inline jobs only, in the wire format of tests/src/bulk_stub.rs
// (captured from google-genai): `POST …:batchGenerateContent` makes a job, `GET /v1beta/batches/ID`
// answers its state. The test moves the job (`setState('running')`, …), so a page can be watched
// at each step; a succeeded job answers an image per request.

export async function startBatchStub() {
  const jobs = [];
  let state = 'PENDING';
  const operation = (job) => {
    const metadata = {
      '@type': 'type.googleapis.com/google.ai.generativelanguage.v1main.GenerateContentBatch',
      model: 'models/gemini-2.5-flash-image', displayName: job.displayName, name: job.name,
      createTime: '2026-11-28T14:02:00.000000Z', updateTime: '2026-11-28T14:02:00.000000Z',
      state: `BATCH_STATE_${state}`, batchStats: { requestCount: String(job.keys.length) },
    };
    const op = { name: job.name, metadata };
    if (state !== 'PENDING' && state !== 'RUNNING') op.done = true;
    if (state === 'SUCCEEDED') {
      const inlinedResponses = job.keys.map((key, n) => ({ metadata: { key }, response: { candidates: [{ content: { role: 'model', parts: [
        { text: 'planning the composition', thought: true },
        { inlineData: { mimeType: 'image/png', data: png([60 + n * 40, 140, 90]).toString('base64') } },
      ] }, finishReason: 'STOP', index: 0 }], modelVersion: 'gemini-2.5-flash-image' } }));
      metadata.output = { inlinedResponses: { inlinedResponses } };
    }
    return op;
  };
  const server = http.createServer((req, res) => {
    const chunks = [];
    req.on('data', (c) => chunks.push(c));
    req.on('end', () => {
      res.setHeader('Content-Type', 'application/json');
      const url = new URL(req.url, 'http://stub');
      const get = url.pathname.match(/^\/v1beta\/(batches\/[^/:]+)$/);
      if (req.method === 'POST' && url.pathname.endsWith(':batchGenerateContent')) {
        const batch = JSON.parse(Buffer.concat(chunks).toString() || '{}').batch || {};
        const requests = batch.inputConfig?.requests?.requests || [];
        const job = { name: `batches/webstub${jobs.length + 1}`, displayName: batch.displayName || '', keys: requests.map((r) => r.metadata?.key) };
        jobs.push(job);
        res.end(JSON.stringify(operation(job)));
      } else if (req.method === 'GET' && get && jobs.some((j) => j.name === get[1])) {
        res.end(JSON.stringify(operation(jobs.find((j) => j.name === get[1]))));
      } else {
        res.writeHead(400);
        res.end(JSON.stringify({ error: { code: 400, message: `this stub does not serve ${req.method} ${url.pathname}`, status: 'INVALID_ARGUMENT' } }));
      }
    });
  });
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    base: `http://127.0.0.1:${server.address().port}`,
    jobs: () => jobs,
    /** `running`, `succeeded`, `expired`, …: what the next poll answers. */
    setState: (next) => { state = next.toUpperCase(); },
    close: () =>
      new Promise((resolve) => {
        server.closeAllConnections?.();
        server.close(resolve);
      }),
  };
}

// ---------------------------------------------------------------------------------------------
// assetgen serve

export class Assetgen {
  constructor(dataDir, env = {}, args = []) {
    this.dataDir = dataDir;
    this.env = env;
    this.args = args;
    this.child = null;
    this.base = null;
    this.port = 0;
    this.stderr = [];
  }

  /** `args` go after `serve --port N`, e.g. `['--live']`. */
  static async create(env = {}, args = []) {
    if (!existsSync(binary)) {
      throw new Error(`${binary} is missing: run \`cargo build -p assetgen-local --bin assetgen\` first`);
    }
    const dataDir = await mkdtemp(path.join(os.tmpdir(), 'assetgen-web-'));
    const server = new Assetgen(dataDir, env, args);
    await server.start();
    return server;
  }

  /** Starts the server (on the same port as before, after a restart) and waits for its first line. */
  async start() {
    const child = spawn(binary, ['serve', '--port', String(this.port), ...this.args], {
      cwd: this.dataDir,
      env: {
        ...process.env,
        ASSETGEN_STORE: `file://${this.dataDir}/store`,
        RUST_LOG: process.env.RUST_LOG || 'warn',
        ...this.env,
      },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    this.child = child;
    child.stderr.on('data', (d) => {
      this.stderr.push(String(d));
      if (this.stderr.length > 200) this.stderr.shift();
    });
    const lines = readline.createInterface({ input: child.stdout });
    const first = await new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`assetgen did not start: ${this.stderr.join('')}`)), 20000);
      child.once('exit', (code) => {
        clearTimeout(timer);
        reject(new Error(`assetgen exited with ${code}: ${this.stderr.join('')}`));
      });
      lines.once('line', (line) => {
        clearTimeout(timer);
        resolve(line);
      });
    });
    lines.on('line', () => {}); // keep draining stdout
    const match = /listening on (http:\/\/127\.0\.0\.1:(\d+))\/?/.exec(first);
    if (!match) throw new Error(`unexpected first line: ${first}`);
    this.base = match[1];
    this.port = Number(match[2]);
    child.removeAllListeners('exit');
  }

  /** Kills the process at once (SIGKILL: nothing is flushed or said goodbye to). */
  async kill() {
    const child = this.child;
    if (!child || child.exitCode !== null || child.signalCode !== null) return;
    const exited = new Promise((resolve) => child.once('exit', resolve));
    child.kill('SIGKILL');
    await exited;
    this.child = null;
  }

  async restart() {
    await this.kill();
    await this.start();
  }

  async close() {
    await this.kill();
    await rm(this.dataDir, { recursive: true, force: true });
  }

  async request(method, pathname, body) {
    const response = await fetch(`${this.base}${pathname}`, {
      method,
      headers: body === undefined ? {} : { 'Content-Type': 'application/json' },
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    const text = await response.text();
    let json = null;
    try {
      json = JSON.parse(text);
    } catch {
      json = null;
    }
    return { status: response.status, json, text };
  }

  async submit(rows) {
    const answer = await this.request('POST', '/v1/batches', { rows, run_mode: 'dry_run' });
    if (answer.status !== 202) throw new Error(`submit refused (${answer.status}): ${answer.text}`);
    return answer.json.batch_id;
  }

  async batch(id) {
    const answer = await this.request('GET', `/v1/batches/${id}`);
    if (answer.status !== 200) throw new Error(`GET batch ${id}: ${answer.status} ${answer.text}`);
    return answer.json;
  }
}

// ---------------------------------------------------------------------------------------------
// Chromium

export async function launchBrowser() {
  if (!existsSync(chromiumPath)) {
    throw new Error(`${chromiumPath} is missing: \`make test\` installs Debian's chromium (apt-get install -y chromium)`);
  }
  const { chromium } = await import('playwright-core');
  const userDataDir = await mkdtemp(path.join(os.tmpdir(), 'assetgen-chromium-'));
  const context = await chromium.launchPersistentContext(userDataDir, {
    executablePath: chromiumPath,
    headless: true,
    args: CHROMIUM_ARGS,
    viewport: { width: 1280, height: 900 },
    acceptDownloads: true,
  });
  return {
    context,
    async close() {
      await context.close();
      await rm(userDataDir, { recursive: true, force: true });
    },
  };
}

/** A new page that records its script errors (the tests assert there are none). */
export async function openPage(browser, url, viewport) {
  const page = await browser.context.newPage();
  if (viewport) await page.setViewportSize(viewport);
  page.errors = [];
  page.on('pageerror', (e) => page.errors.push(String(e)));
  page.on('console', (m) => {
    if (m.type() === 'error' && !/Failed to load resource|net::ERR_|EventSource/.test(m.text())) page.errors.push(m.text());
  });
  await page.goto(url);
  return page;
}

export async function screenshot(page, name, options = {}) {
  await mkdir(screenshotDir, { recursive: true });
  // A full-page shot draws the sticky top bar where the page is scrolled to: start at the top,
  // and let the progress bar's transition end.
  if (options.fullPage) await page.evaluate(() => window.scrollTo(0, 0));
  await sleep(400);
  const file = path.join(screenshotDir, name);
  await page.screenshot({ path: file, ...options });
  return file;
}

export const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

/** Polls `check` until it returns a truthy value or `timeout` ms pass. */
export async function eventually(check, { timeout = 30000, every = 100, what = 'condition' } = {}) {
  const deadline = Date.now() + timeout;
  let last;
  for (;;) {
    try {
      last = await check();
      if (last) return last;
    } catch (e) {
      last = e;
    }
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what} (last: ${last})`);
    await sleep(every);
  }
}
