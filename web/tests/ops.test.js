// The operations page: its numbers from /metrics-lite without a browser, and in Chromium against a
// real `assetgen serve --live` (a Gemini stub that answers 429 now and then) while a batch runs.
// The screenshot goes to target/screenshots/ops.png.

import { test, describe, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { opsView, formatPercent, histogramMean } from '../ops-model.js';
import { Assetgen, startGeminiStub, launchBrowser, openPage, screenshot, eventually } from './harness.js';

const minutes = (n, f) => Array.from({ length: n }, (_, i) => f(i));

describe('ops model', () => {
  test('sums the last hour, keeps the minute in progress apart, and leaves minutes without calls without a rate', () => {
    const lite = {
      totals: { assetgen_images_generated_total: 12 },
      gauges: { assetgen_queue_pending: 3 },
      histograms: {
        'assetgen_model_latency_seconds{result="ok",run_mode="live"}': { count: 3, sum: 3 },
        'assetgen_model_latency_seconds{result="retryable",run_mode="live"}': { count: 1, sum: 1 },
        'assetgen_http_request_duration_seconds{route="/x"}': { count: 100, sum: 1 },
      },
      last_hour: {
        minute_starts: minutes(60, (i) => 1_000_000 * 60 + i * 60),
        images: minutes(60, (i) => (i === 58 ? 5 : i === 59 ? 7 : 0)),
        model_calls: minutes(60, (i) => (i === 58 ? 6 : i === 59 ? 8 : 0)),
        rate_limited: minutes(60, (i) => (i === 58 ? 1 : i === 59 ? 1 : 0)),
        spent_usd: minutes(60, (i) => (i === 58 ? 0.195 : i === 59 ? 0.273 : 0)),
      },
    };
    const view = opsView(lite);
    assert.equal(view.imagesThisMinute, 7);
    assert.equal(view.imagesLastMinute, 5);
    assert.equal(view.imagesLastHour, 12);
    assert.equal(view.rate429LastHour, 2 / 14);
    assert.equal(view.rate429[0], null, 'no calls, no rate');
    assert.equal(view.rate429[58], 1 / 6);
    assert.ok(Math.abs(view.spendLastHour - 0.468) < 1e-9);
    assert.equal(view.queuePending, 3);
    assert.equal(view.meanModelSeconds, 1, 'the mean over every model-latency series, and only those');
    assert.equal(view.minutes[0].getTime(), 1_000_000 * 60 * 1000);
  });

  test('an empty or missing answer draws zeros, not errors', () => {
    const view = opsView({});
    assert.equal(view.imagesLastHour, 0);
    assert.equal(view.rate429LastHour, 0);
    assert.equal(view.queuePending, null);
    assert.equal(histogramMean(undefined, 'x'), null);
    assert.equal(formatPercent(null), '—');
    assert.equal(formatPercent(0.125), '13 %');
    assert.equal(formatPercent(0.05), '5.0 %');
  });
});

describe('ops page in Chromium', () => {
  let server;
  let gemini;
  let browser;

  before(async () => {
    // Calls 2 and 5 are rate limited: the row comes back after RetryInfo's pause.
    gemini = await startGeminiStub({ limitCalls: [2, 5] });
    server = await Assetgen.create({ GEMINI_API_KEY: 'test-key', GEMINI_BASE_URL: gemini.base }, ['--live']);
    browser = await launchBrowser();
  });

  after(async () => {
    await browser?.close();
    await server?.close();
    await gemini?.close();
  });

  const text = (page, id) => page.$eval(`#${id}`, (e) => e.textContent);

  test('a live batch moves images per minute, the 429 rate and the spend', async () => {
    const page = await openPage(browser, `${server.base}/ops?every=300`);
    await eventually(async () => (await text(page, 'connection-text')) === 'Live', { what: 'the page reads the metrics' });
    assert.equal(await text(page, 'stat-images-hour'), '0');
    assert.equal(await text(page, 'stat-spend'), '$0.00 / h');

    const rows = [1, 2, 3, 4].map((i) => ({ scene_id: `OPS-${i}`, prompt: `a teapot, view ${i}`, variants: 2, refs: [], ref_mode: 'style_only' }));
    const answer = await server.request('POST', '/v1/batches', { rows, run_mode: 'live' });
    assert.equal(answer.status, 202, answer.text);
    const id = answer.json.batch_id;
    await eventually(async () => (await server.batch(id)).status === 'succeeded', { timeout: 60000, what: 'the batch ends' });

    // 8 images at $0.039; 2 of 10 model calls answered 429.
    // The image counter moves when the model answers, the spend a moment later, once the image is
    // stored; the page draws a snapshot up to 300 ms old, which can fall in between.
    await eventually(async () => (await text(page, 'stat-images-hour')) === '8', { what: 'images counted' });
    await eventually(async () => (await text(page, 'stat-spend')) === '$0.31 / h', { what: 'spend counted' });
    assert.equal(await text(page, 'stat-429'), '20 % (2 of 10)');
    assert.ok(Number(await text(page, 'stat-images-minute')) > 0, 'this minute has images');
    assert.ok((await page.$$('#chart-images rect.bar')).length >= 1, 'the images chart has a bar');
    assert.ok((await page.$$('#chart-429 rect.bar')).length >= 1, 'the 429 chart has a bar');
    assert.ok((await page.$$('#chart-spend rect.bar')).length >= 1, 'the spend chart has a bar');
    assert.match(await page.$eval('#totals', (e) => e.textContent), /assetgen_rows_total/);
    assert.equal(gemini.calls(), 10);
    await screenshot(page, 'ops.png', { fullPage: true });
    assert.deepEqual(page.errors, []);
    await page.close();
  });
});
