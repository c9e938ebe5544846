// An in-memory stand-in for the service's HTTP contract (submit's /v1/* as in /openapi.json), for
// the unit tests' UrlFetchApp. The end-to-end test talks to the real `assetgen serve` instead.
'use strict';
const crypto = require('node:crypto');

const PRICE = 0.039;
/** Through Google's batch (`run_mode: "bulk"`): half the live price. */
const BULK_PRICE = PRICE / 2;
const BASE = 'https://assetgen.test';

function problem(status, code, detail, extra = {}) {
  return { status, body: { type: `urn:assetgen:problem:${code.toLowerCase()}`, title: code, status, detail, code, advice: `advice for ${code}`, ...extra } };
}

class FakeService {
  constructor({ limitUsd = 10, rowsPerGet = Infinity } = {}) {
    this.limitUsd = limitUsd;
    this.reservedUsd = 0;
    this.batches = new Map();
    this.keys = new Map();
    this.rowsPerGet = rowsPerGet; // rows that finish each time a batch is read
    this.scripted = []; // answers (or {throw: message}) served before the contract, in order
    this.requests = [];
    this.failScene = new Set(); // scene_ids whose rows fail
    this.controlTokens = true;
    this.managerTokens = true;
    this.manual = false; // true: rows finish only when the test calls advance()
  }

  handler() {
    return (req) => this.handle(req);
  }

  handle(req) {
    this.requests.push(req);
    if (this.scripted.length) {
      const next = this.scripted.shift();
      if (next.throw) throw new Error(next.throw);
      return next;
    }
    const url = new URL(req.url);
    const p = url.pathname;
    let m;
    if (req.method === 'POST' && p === '/v1/estimate') return this.estimate(JSON.parse(req.payload));
    if (req.method === 'POST' && p === '/v1/batches') return this.submit(req);
    if (req.method === 'GET' && (m = /^\/v1\/batches\/([^/]+)$/.exec(p))) return this.view(m[1]);
    if (req.method === 'POST' && (m = /^\/v1\/batches\/([^/]+)\/cancel$/.exec(p))) return this.cancel(m[1]);
    if (req.method === 'POST' && (m = /^\/v1\/batches\/([^/]+)\/retry$/.exec(p))) return this.retry(m[1]);
    if (req.method === 'POST' && (m = /^\/v1\/batches\/([^/]+)\/control-token$/.exec(p))) {
      if (!this.controlTokens) return problem(404, 'NOT_FOUND', 'no route');
      return { status: 200, body: { batch_id: m[1], token: 'ctl-' + m[1], expires_at: '2026-11-28T10:00:00Z', page: `${BASE}/b/${m[1]}?access_token=read-${m[1]}#control=ctl-${m[1]}` } };
    }
    if (req.method === 'POST' && p === '/v1/refs/manager-token') {
      if (!this.managerTokens) return problem(404, 'NOT_FOUND', 'no route');
      return { status: 200, body: { token: 'refs-token', expires_at: '2026-11-28T10:00:00Z', page: `${BASE}/refs#token=refs-token` } };
    }
    return problem(404, 'NOT_FOUND', `${req.method} ${p}`);
  }

  costOf(body) {
    const images = body.rows.reduce((n, r) => n + (r.variants || 1), 0);
    const live = +(images * PRICE).toFixed(6);
    const bulk = +(images * BULK_PRICE).toFixed(6);
    const usd = { live, bulk }[body.run_mode] || 0;
    return { images, usd, usd_if_live: live, usd_if_bulk: bulk };
  }

  budget() {
    return { limit_usd: this.limitUsd, spent_usd: 0, reserved_usd: this.reservedUsd, remaining_usd: this.limitUsd - this.reservedUsd };
  }

  estimate(body) {
    const estimate = this.costOf(body);
    const after = this.budget();
    after.remaining_usd -= estimate.usd;
    return { status: 200, body: { estimate, budget_after: after, models: [{ model: 'gemini-2.5-flash-image', usd_per_image: PRICE, usd_per_image_bulk: BULK_PRICE }] } };
  }

  submit(req) {
    const body = JSON.parse(req.payload);
    const key = req.headers['Idempotency-Key'];
    if (key && this.keys.has(key)) {
      const first = this.keys.get(key);
      if (first.payload !== req.payload) return problem(422, 'IDEMPOTENCY_KEY_REUSED', 'another request');
      return { status: 202, body: first.answer };
    }
    const estimate = this.costOf(body);
    if (estimate.usd > this.limitUsd - this.reservedUsd + 1e-9) {
      return problem(402, 'BUDGET_EXCEEDED', `this batch needs $${estimate.usd}`, {
        budget: this.budget(), resets_at: '2026-11-29T00:00:00Z',
      });
    }
    this.reservedUsd += estimate.usd;
    const id = crypto.randomUUID();
    this.batches.set(id, {
      id,
      run_mode: body.run_mode,
      estimate,
      created_at: new Date().toISOString(),
      rows: body.rows.map((r, i) => ({ row: i, scene_id: r.scene_id, status: 'queued', attempts: 0, variants: r.variants || 1, images: [], objects: [], provenance: [], refs: [], cost_usd: 0 })),
    });
    const answer = {
      batch_id: id,
      estimate,
      budget: this.budget(),
      links: { self: `${BASE}/v1/batches/${id}`, events: `${BASE}/v1/batches/${id}/events`, page: `${BASE}/b/${id}` },
    };
    if (key) this.keys.set(key, { payload: req.payload, answer });
    return { status: 202, body: answer };
  }

  /** Finishes up to `n` rows of the batch (the next ones in order). */
  advance(id, n) {
    const b = this.batches.get(id);
    let left = n;
    for (const row of b.rows) {
      if (left <= 0) break;
      if (row.status === 'queued' || row.status === 'running') {
        left--;
        row.attempts++;
        if (this.failScene.has(row.scene_id)) {
          row.status = 'failed';
          row.error = { code: 'CONTENT_BLOCKED', detail: 'the model blocked this prompt', advice: 'Rephrase the prompt.' };
        } else {
          row.status = 'succeeded';
          row.images = Array.from({ length: row.variants }, (_, v) => `${BASE}/v1/images/${id}/${row.scene_id}/${v + 1}?sig=abc"def`);
          row.objects = Array.from({ length: row.variants }, (_, v) => `images/${id}/${row.scene_id}-v${v + 1}.png`);
          row.provenance = Array.from({ length: row.variants }, (_, v) => `${BASE}/v1/provenance/${id}/${row.scene_id}/${v + 1}?sig=abc`);
          row.cost_usd = +(row.variants * ({ live: PRICE, bulk: BULK_PRICE }[b.run_mode] || 0)).toFixed(6);
          delete row.error;
        }
      }
    }
    const next = b.rows.find((r) => r.status === 'queued');
    if (next && n > 0) next.status = 'running';
  }

  view(id) {
    const b = this.batches.get(id);
    if (!b) return problem(404, 'BATCH_NOT_FOUND', `batch ${id} does not exist`);
    if (!this.manual) {
      // rowsPerGet may be a fraction: 0.25 finishes one row every fourth read.
      b.credit = (b.credit || 0) + (this.rowsPerGet === Infinity ? b.rows.length : this.rowsPerGet);
      const n = Math.floor(b.credit + 1e-9);
      b.credit -= n;
      this.advance(id, n);
    }
    const done = b.rows.every((r) => ['succeeded', 'failed', 'cancelled'].includes(r.status));
    const anyBad = b.rows.some((r) => r.status !== 'succeeded');
    const count = (st) => b.rows.filter((r) => r.status === st).length;
    // A bulk batch's job: at Google (pending) until its rows have ended, as the Batch API stub's.
    const bulk = b.run_mode !== 'bulk' ? {} : {
      bulk: {
        state: done ? 'succeeded' : 'pending', job: `batches/fake-${id.slice(0, 8)}`, rows: b.rows.length,
        requests: b.rows.reduce((n, r) => n + r.variants, 0), submitted_at: b.created_at, cancel_requested: false,
      },
    };
    return {
      status: 200,
      body: {
        ...bulk,
        batch_id: id,
        status: done ? (anyBad ? 'completed_with_failures' : 'succeeded') : 'running',
        created_at: b.created_at,
        run_mode: b.run_mode,
        model: 'gemini-2.5-flash-image',
        estimate: b.estimate,
        totals: {
          rows: b.rows.length, queued: count('queued'), running: count('running'), succeeded: count('succeeded'),
          failed: count('failed'), cancelled: count('cancelled'),
          images_done: b.rows.reduce((n, r) => n + r.images.length, 0), images_total: b.rows.reduce((n, r) => n + r.variants, 0),
        },
        rows: b.rows.map((r) => ({ ...r, images: r.images.slice(), provenance: (r.provenance || []).slice() })),
        cost_usd: b.rows.reduce((s, r) => s + r.cost_usd, 0),
      },
    };
  }

  cancel(id) {
    const b = this.batches.get(id);
    if (!b) return problem(404, 'BATCH_NOT_FOUND', 'no batch');
    const rows = b.rows.filter((r) => r.status === 'queued');
    rows.forEach((r) => { r.status = 'cancelled'; });
    return { status: 200, body: { batch_id: id, rows: rows.map((r) => r.row), reserved_usd: 0 } };
  }

  retry(id) {
    const b = this.batches.get(id);
    if (!b) return problem(404, 'BATCH_NOT_FOUND', 'no batch');
    const rows = b.rows.filter((r) => r.status === 'failed');
    if (rows.length === 0) return problem(409, 'NOTHING_TO_RETRY', 'no failed rows');
    rows.forEach((r) => { r.status = 'queued'; delete r.error; });
    this.failScene.clear();
    return { status: 200, body: { batch_id: id, rows: rows.map((r) => r.row), reserved_usd: 0 } };
  }
}

module.exports = { FakeService, problem, BASE, PRICE, BULK_PRICE };
