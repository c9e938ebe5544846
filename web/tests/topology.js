// The cloud topology for the browser tests: `target/debug/topology` (tests/src/bin/topology.rs)
// starts submit, generate and relay as three processes on three ports with OIDC on, over
// fake-gcs-server and the Pub/Sub emulator, prints their URLs and users' ID tokens as one JSON
// line, and stops everything when its stdin closes.

import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import path from 'node:path';
import readline from 'node:readline';
import { repoRoot } from './harness.js';

const binary = process.env.ASSETGEN_TOPOLOGY_BIN || path.join(repoRoot, 'target', 'debug', 'topology');

export class Topology {
  constructor(child, info, stderr) {
    this.child = child;
    this.info = info;
    this.stderr = stderr;
    this.submit = info.submit;
    this.relay = info.relay;
    this.generate = info.generate;
    this.tokens = info.tokens;
  }

  /** Starts the topology (`args`: `--push-concurrency N`, `--env KEY=VALUE`) and waits for its line. */
  static async start(args = []) {
    if (!existsSync(binary)) {
      throw new Error(`${binary} is missing: run \`cargo build -p assetgen-tests --bins\` and the functions' binaries first (make web-test does)`);
    }
    const child = spawn(binary, args, {
      env: { ...process.env, RUST_LOG: process.env.RUST_LOG || 'warn' },
      stdio: ['pipe', 'pipe', 'pipe'],
    });
    const stderr = [];
    child.stderr.on('data', (d) => {
      stderr.push(String(d));
      if (stderr.length > 200) stderr.shift();
    });
    const lines = readline.createInterface({ input: child.stdout });
    const first = await new Promise((resolve, reject) => {
      // The Pub/Sub emulator is a JVM: give it time on a busy machine.
      const timer = setTimeout(() => reject(new Error(`the topology did not start: ${stderr.join('')}`)), 120000);
      child.once('exit', (code) => {
        clearTimeout(timer);
        reject(new Error(`the topology exited with ${code}: ${stderr.join('')}`));
      });
      lines.once('line', (line) => {
        clearTimeout(timer);
        resolve(line);
      });
    });
    child.removeAllListeners('exit');
    return new Topology(child, JSON.parse(first), stderr);
  }

  /** Closes its stdin, which stops every process it started; kills it if it lingers. */
  async close() {
    const child = this.child;
    if (child.exitCode !== null || child.signalCode !== null) return;
    const exited = new Promise((resolve) => child.once('exit', resolve));
    child.stdin.end();
    const timer = setTimeout(() => child.kill('SIGKILL'), 20000);
    await exited;
    clearTimeout(timer);
  }

  /** A JSON request to `base` (`submit` or `relay`) as `user` (`owner`, `other`, `admin`, or none). */
  async request(method, url, { user, token, body } = {}) {
    const headers = {};
    const bearer = token || (user ? this.tokens[user] : null);
    if (bearer) headers.Authorization = `Bearer ${bearer}`;
    if (body !== undefined) headers['Content-Type'] = 'application/json';
    const response = await fetch(url, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
    const text = await response.text();
    let json = null;
    try {
      json = JSON.parse(text);
    } catch {
      json = null;
    }
    return { status: response.status, json, text, headers: response.headers };
  }

  /** Submits `rows` as the owner (dry run); returns submit's 202 answer. */
  async submitBatch(rows, user = 'owner') {
    const answer = await this.request('POST', `${this.submit}/v1/batches`, { user, body: { rows, run_mode: 'dry_run' } });
    if (answer.status !== 202) throw new Error(`submit refused (${answer.status}): ${answer.text}`);
    return answer.json;
  }

  /** `GET /v1/batches/{id}` on submit as the owner. */
  async batch(id, user = 'owner') {
    const answer = await this.request('GET', `${this.submit}/v1/batches/${id}`, { user });
    if (answer.status !== 200) throw new Error(`GET batch ${id}: ${answer.status} ${answer.text}`);
    return answer.json;
  }
}
