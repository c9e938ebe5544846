// The page's logic without a browser: the batch model fed by events, and the reconnecting
// connection driven by a fake EventSource and fake timers.

import { test, describe } from 'node:test';
import assert from 'node:assert/strict';
import { BatchModel, eta, LOG_LIMIT, bulkText, formatPrice } from '../progress-model.js';
import { LiveConnection, backoffDelay, BACKOFF_CAP_MS } from '../connection.js';
import { problemText, submitUrl } from '../common.js';

function rowView(row, status, images = 0, variants = 2, extra = {}) {
  return {
    row,
    scene_id: `S${row}`,
    status,
    attempts: status === 'queued' ? 0 : 1,
    variants,
    images: Array.from({ length: images }, (_, i) => `/v1/images/b/S${row}/${i + 1}`),
    objects: [],
    refs: [],
    cost_usd: 0,
    ...extra,
  };
}

function batchView(status, rows, createdAt = '2025-01-01T00:00:00Z') {
  const totals = { rows: rows.length, queued: 0, running: 0, succeeded: 0, failed: 0, cancelled: 0, images_done: 0, images_total: 0 };
  for (const r of rows) {
    totals[r.status] += 1;
    totals.images_done += r.images.length;
    totals.images_total += r.variants;
  }
  return {
    batch_id: 'b',
    status,
    created_at: createdAt,
    run_mode: 'dry_run',
    model: 'gemini-2.5-flash-image',
    estimate: { images: totals.images_total, usd: 0, usd_if_live: 0.156 },
    totals,
    cost_usd: 0,
    rows,
  };
}

describe('BatchModel', () => {
  test('a snapshot, row and batch events and done build the page state', () => {
    const m = new BatchModel('b');
    const t0 = Date.parse('2025-01-01T00:00:00Z');
    m.apply('snapshot', batchView('queued', [rowView(0, 'queued'), rowView(1, 'queued')]), '10', t0 + 1000);
    assert.equal(m.status, 'queued');
    assert.equal(m.gallery().length, 4, 'a slot for every expected image');
    assert.equal(m.gallery().filter((t) => t.url).length, 0);

    m.apply('row', rowView(0, 'succeeded', 2), '15', t0 + 4000);
    const after = batchView('running', [rowView(0, 'succeeded', 2), rowView(1, 'running')]);
    m.apply('batch', { batch_id: 'b', status: 'running', totals: after.totals, cost_usd: 0 }, '15', t0 + 4000);
    const s = m.summary(t0 + 4000);
    assert.deepEqual([s.imagesDone, s.imagesTotal, s.percent, s.elapsedMs], [2, 4, 50, 4000]);
    assert.equal(s.etaMs, 4000, 'two images in 4 s: two more take 4 s');
    assert.equal(m.lastEventId, '15');

    // A failed row keeps no empty slots; the error and its advice stay on the row.
    const error = { code: 'REF_FETCH_FAILED', detail: 'HTTP 404', advice: 'Check the URL' };
    m.apply('row', rowView(1, 'failed', 0, 2, { error }), '20', t0 + 6000);
    assert.equal(m.gallery().length, 2);
    assert.equal(m.rows.get(1).error.code, 'REF_FETCH_FAILED');

    const end = batchView('completed_with_failures', [rowView(0, 'succeeded', 2), rowView(1, 'failed', 0, 2, { error })]);
    m.apply('done', end, '20', t0 + 6000);
    assert.equal(m.terminal, true);
    assert.equal(m.summary(t0 + 60000).elapsedMs, 6000, 'the clock stops when the batch ends');
    assert.deepEqual(m.rowStatuses(), { 0: 'succeeded', 1: 'failed' });
    assert.deepEqual(
      m.log.map((l) => l.kind),
      ['done', 'row', 'batch', 'row', 'snapshot'],
      'newest first',
    );
  });

  test('the latest id is kept as the relay wrote it, and the same event twice changes nothing', () => {
    const m = new BatchModel('b');
    m.apply('snapshot', batchView('running', [rowView(0, 'running')]), '30');
    m.apply('row', rowView(0, 'succeeded', 2), '40~7:12');
    m.apply('row', rowView(0, 'succeeded', 2), '40~7:12');
    m.apply('batch', { batch_id: 'b', status: 'running', totals: batchView('running', [rowView(0, 'succeeded', 2)]).totals, cost_usd: 0 }, '41~7:11');
    assert.equal(m.lastEventId, '41~7:11', 'an id is a cursor, not a number: the latest covers all before it');
    assert.equal(m.rows.size, 1);
    assert.equal(m.rows.get(0).status, 'succeeded');
  });

  test('a batch that ended before the page opened has no elapsed time; a retry starts the clock', () => {
    const m = new BatchModel('b');
    const view = batchView('failed', [rowView(0, 'failed')]);
    m.apply('snapshot', view, '5');
    assert.equal(m.summary().elapsedMs, null);
    m.apply('row', rowView(0, 'queued'), '6');
    m.apply('batch', { batch_id: 'b', status: 'queued', totals: batchView('queued', [rowView(0, 'queued')]).totals, cost_usd: 0 }, '6');
    assert.equal(m.terminal, false);
    assert.notEqual(m.summary().elapsedMs, null);
  });

  test("a finished batch's duration comes from the server's ended_at, even on a page opened after it ended", () => {
    const t0 = Date.parse('2025-01-01T00:00:00Z');
    const ended = { ...batchView('succeeded', [rowView(0, 'succeeded', 2)]), ended_at: '2025-01-01T00:03:05Z' };
    const late = new BatchModel('b');
    late.apply('snapshot', ended, '9', t0 + 3_600_000);
    const s = late.summary(t0 + 7_200_000);
    assert.equal(s.elapsedMs, 185_000, 'created 00:00:00, ended 00:03:05: not the page clock, not unknown');
    assert.equal(s.ended, true);

    // Followed live: the batch event that ends it carries ended_at, and it wins over the page's clock.
    const live = new BatchModel('b');
    live.apply('snapshot', batchView('running', [rowView(0, 'running')]), '1', t0 + 1000);
    assert.equal(live.summary(t0 + 2000).elapsedMs, 2000, 'while it runs: time since it was accepted');
    const totals = batchView('succeeded', [rowView(0, 'succeeded', 2)]).totals;
    live.apply('batch', { batch_id: 'b', status: 'succeeded', totals, cost_usd: 0, ended_at: '2025-01-01T00:00:04Z' }, '2', t0 + 9000);
    assert.equal(live.summary(t0 + 60_000).elapsedMs, 4000);

    // A retry reopens it: no end any more, the clock runs again.
    const queued = batchView('queued', [rowView(0, 'queued')]).totals;
    live.apply('batch', { batch_id: 'b', status: 'queued', totals: queued, cost_usd: 0 }, '3', t0 + 10_000);
    assert.equal(live.view.ended_at, undefined);
    assert.equal(live.summary(t0 + 12_000).elapsedMs, 12_000);
  });

  test('cost per image: the spend over the images made; a dry run says what one would cost live', () => {
    const rows = [rowView(0, 'succeeded', 2), rowView(1, 'succeeded', 2)];
    const live = new BatchModel('b');
    live.apply('snapshot', { ...batchView('succeeded', rows), run_mode: 'live', cost_usd: 0.156, estimate: { images: 4, usd: 0.156, usd_if_live: 0.156 } }, '1');
    const s = live.summary();
    assert.ok(Math.abs(s.costPerImageUsd - 0.039) < 1e-12, String(s.costPerImageUsd));
    assert.equal(s.costUsd, 0.156);

    const dry = new BatchModel('b');
    dry.apply('snapshot', batchView('running', [rowView(0, 'running')]), '1');
    assert.equal(dry.summary().costPerImageUsd, null, 'no image yet: no price per image');
    assert.equal(dry.summary().livePerImageUsd, 0.078, '$0.156 live for 2 images');
  });

  test("a bulk batch says where Google's job stands, from the snapshot and then the batch events", () => {
    // The shapes of BatchView.bulk and BatchProgress.bulk (common/src/bulk.rs BulkView, serde).
    const job = (state, extra = {}) => ({
      state,
      job: 'batches/abc123',
      rows: 2,
      requests: 4,
      submitted_at: '2026-11-28T14:02:31.123456Z',
      polled_at: '2026-11-28T14:05:00Z',
      cancel_requested: false,
      ...extra,
    });
    const rows = [rowView(0, 'running'), rowView(1, 'running')];
    const snapshot = {
      ...batchView('running', rows),
      run_mode: 'bulk',
      estimate: { images: 4, usd: 0.078, usd_if_live: 0.156, usd_if_bulk: 0.078 },
      bulk: job('pending'),
    };
    const m = new BatchModel('b');
    m.apply('snapshot', snapshot, '1');
    let s = m.summary();
    assert.equal(s.bulkText, "Waiting for Google's batch, submitted 14:02 UTC", 'as the CLI says it');
    assert.equal(s.runMode, 'bulk');
    assert.equal(s.bulkPerImageUsd, 0.0195, 'half of the live $0.039');
    assert.equal(s.livePerImageUsd, 0.039);
    assert.equal(formatPrice(s.bulkPerImageUsd), '$0.0195');
    assert.equal(formatPrice(s.livePerImageUsd), '$0.039');

    // The job moves at Google while no row does: only a batch event tells.
    const progress = (state, extra) => ({ batch_id: 'b', status: 'running', totals: snapshot.totals, cost_usd: 0, bulk: job(state, extra) });
    const line = m.apply('batch', progress('running'), '2');
    assert.equal(m.summary().bulkText, "Google is running the batch, submitted 14:02 UTC");
    assert.match(line, /^Google is running the batch/, 'the log says it too');
    m.apply('batch', progress('running', { cancel_requested: true }), '3');
    assert.equal(m.summary().bulkText, "Google is running the batch, submitted 14:02 UTC (cancelling)");
    // A batch event without a job (an older relay) keeps what the page knew.
    m.apply('batch', { batch_id: 'b', status: 'running', totals: snapshot.totals, cost_usd: 0 }, '4');
    assert.equal(m.summary().bulkState, 'running');

    for (const [state, text] of [
      ['succeeded', "Google's batch succeeded"],
      ['failed', "Google's batch failed"],
      ['expired', "Google's batch expired"],
      ['cancelled', "Google's batch cancelled"],
      ['preparing', "Preparing Google's batch"],
    ]) {
      assert.equal(bulkText(job(state)), text);
    }
    assert.equal(bulkText(job('pending', { submitted_at: undefined })), "Waiting for Google's batch", 'not submitted yet: no time');

    const done = { ...batchView('succeeded', [rowView(0, 'succeeded', 2), rowView(1, 'succeeded', 2)]), run_mode: 'bulk', cost_usd: 0.078, estimate: snapshot.estimate, bulk: job('succeeded') };
    m.apply('done', done, '5');
    s = m.summary();
    assert.equal(s.bulkText, "Google's batch succeeded");
    assert.ok(Math.abs(s.costPerImageUsd - 0.0195) < 1e-12, 'each image was paid at the bulk price');

    const live = new BatchModel('b');
    live.apply('snapshot', batchView('running', rows), '1');
    assert.equal(live.summary().bulkText, null, 'a live or dry-run batch has no job');
  });

  test('the log keeps the last 50 entries', () => {
    const m = new BatchModel('b');
    m.apply('snapshot', batchView('running', [rowView(0, 'running')]), '1');
    for (let i = 0; i < 80; i += 1) m.apply('row', rowView(0, 'running'), String(i + 2));
    assert.equal(m.log.length, LOG_LIMIT);
    assert.equal(m.log[0].id, '81');
  });

  test('eta is unknown before the first image and zero at the end', () => {
    assert.equal(eta(5000, 0, 10), null);
    assert.equal(eta(null, 2, 10), null);
    assert.equal(eta(5000, 10, 10), 0);
    assert.equal(eta(5000, 5, 10), 5000);
  });
});

// A fake EventSource and clock: the test decides when connections open, fail and deliver.
class FakeSource {
  static CONNECTING = 0;
  static OPEN = 1;
  static CLOSED = 2;
  static all = [];

  constructor(url) {
    this.url = url;
    this.readyState = FakeSource.CONNECTING;
    this.listeners = {};
    this.closed = false;
    FakeSource.all.push(this);
  }

  addEventListener(name, f) {
    (this.listeners[name] ||= []).push(f);
  }

  close() {
    this.closed = true;
    this.readyState = FakeSource.CLOSED;
  }

  open() {
    this.readyState = FakeSource.OPEN;
    this.onopen?.();
  }

  /** The stream dropped; `retrying` = the browser will reconnect by itself. */
  fail(retrying) {
    this.readyState = retrying ? FakeSource.CONNECTING : FakeSource.CLOSED;
    this.onerror?.();
  }

  emit(name, data, id) {
    for (const f of this.listeners[name] || []) f({ data: JSON.stringify(data), lastEventId: id });
  }
}

function fakeTimers() {
  const pending = [];
  return {
    pending,
    setTimeout: (f, ms) => {
      const t = { f, ms };
      pending.push(t);
      return t;
    },
    clearTimeout: (t) => {
      const i = pending.indexOf(t);
      if (i >= 0) pending.splice(i, 1);
    },
    runNext() {
      const t = pending.shift();
      t.f();
      return t.ms;
    },
  };
}

describe('LiveConnection', () => {
  test('backoff doubles from 1 s and never passes 30 s', () => {
    const mid = () => 0.5;
    assert.deepEqual([1, 2, 3, 4, 5, 6, 7, 12].map((n) => backoffDelay(n, mid)), [1000, 2000, 4000, 8000, 16000, 30000, 30000, 30000]);
    for (let n = 1; n < 40; n += 1) {
      assert.ok(backoffDelay(n, () => 1) <= BACKOFF_CAP_MS);
      assert.ok(backoffDelay(n, () => 0) >= 800);
    }
  });

  test('a dropped stream is left to EventSource once, then reopened with backoff and the last id', () => {
    FakeSource.all = [];
    const timers = fakeTimers();
    const states = [];
    const events = [];
    const c = new LiveConnection('/v1/batches/b/events', {
      EventSourceImpl: FakeSource,
      timers,
      random: () => 0.5,
      onState: (s, d) => states.push([s, d.retryInMs ?? null]),
      onEvent: (name, data, id) => events.push([name, id]),
    });
    c.start();
    const first = FakeSource.all[0];
    assert.equal(first.url, '/v1/batches/b/events');
    first.open();
    first.emit('snapshot', { rows: [] }, '100');
    first.emit('row', { row: 0 }, '120~3:4');
    assert.equal(c.lastEventId, '120~3:4');

    // The relay closed the stream (retry hint): EventSource reconnects by itself.
    first.fail(true);
    assert.deepEqual(states.at(-1), ['reconnecting', null]);
    assert.equal(first.closed, false);
    assert.equal(timers.pending.length, 0);
    first.open();
    assert.equal(states.at(-1)[0], 'connected');

    // The server went away: the browser's own attempt fails too, so the page takes over.
    first.fail(true);
    first.fail(false);
    assert.equal(first.closed, true);
    assert.deepEqual(states.at(-1), ['reconnecting', 2000]);
    assert.equal(timers.runNext(), 2000);
    const second = FakeSource.all[1];
    assert.equal(second.url, '/v1/batches/b/events?last_event_id=120~3%3A4');
    second.fail(false);
    assert.equal(timers.runNext(), 4000);
    FakeSource.all[2].fail(false);
    assert.equal(timers.runNext(), 8000);
    const fourth = FakeSource.all[3];
    fourth.open();
    assert.equal(states.at(-1)[0], 'connected');
    fourth.emit('row', { row: 1 }, '130');
    fourth.emit('done', { rows: [] }, '130');
    assert.deepEqual(events.map((e) => e[0]), ['snapshot', 'row', 'row', 'done']);

    // Events of a source that was replaced are ignored.
    first.emit('row', { row: 9 }, '999');
    assert.equal(c.lastEventId, '130');

    c.finish();
    assert.equal(fourth.closed, true);
    assert.equal(states.at(-1)[0], 'finished');
    c.resume();
    assert.equal(FakeSource.all[4].url, '/v1/batches/b/events?last_event_id=130');
  });

  test('the wait between attempts stays at the cap however long the server is away', () => {
    FakeSource.all = [];
    const timers = fakeTimers();
    const c = new LiveConnection('/e', { EventSourceImpl: FakeSource, timers, random: () => 0.5 });
    c.start();
    const waits = [];
    for (let i = 0; i < 10; i += 1) {
      FakeSource.all.at(-1).fail(false);
      waits.push(timers.runNext());
    }
    assert.deepEqual(waits, [1000, 2000, 4000, 8000, 16000, 30000, 30000, 30000, 30000, 30000]);
    c.stop();
    assert.equal(timers.pending.length, 0);
  });
});

describe('common', () => {
  test('a problem reads as one line with one full stop before the advice', () => {
    const problem = { title: 'You are not allowed to do this', detail: 'This link lets you watch the batch, not retry it.', advice: 'Open the page from the Sheet.' };
    assert.equal(problemText(problem), 'You are not allowed to do this: This link lets you watch the batch, not retry it. Open the page from the Sheet.');
    assert.equal(problemText({ title: 'Gone', detail: 'no such batch' }), 'Gone: no such batch');
  });

  test("submit's routes are on the page's own origin when the relay names no submit URL", () => {
    assert.equal(submitUrl('/v1/batches/b1/retry'), '/v1/batches/b1/retry');
  });
});
