// A bulk batch (`run_mode: "bulk"`) on the progress page in Chromium, against a real
// `assetgen serve --live` whose Gemini is a Batch API stub on loopback: the page tells where
// Google's job stands as it moves (waiting, running, succeeded) and what an image costs in bulk.

import { test, describe, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { Assetgen, startBatchStub, launchBrowser, openPage, screenshot, eventually } from './harness.js';

describe('a bulk batch', () => {
  let stub;
  let server;
  let browser;

  before(async () => {
    stub = await startBatchStub();
    server = await Assetgen.create(
      { GEMINI_API_KEY: 'test-key', GEMINI_BASE_URL: stub.base, ASSETGEN_BULK_POLL_SECS: '1' },
      ['--live'],
    );
    browser = await launchBrowser();
  });

  after(async () => {
    await browser?.close();
    await server?.close();
    await stub?.close();
  });

  test("shows Google's job as it moves and the bulk price per image", async () => {
    const rows = [1, 2].map((i) => ({ scene_id: `BULK-${i}`, prompt: `a teapot, view ${i}`, variants: 1 }));
    const answer = await server.request('POST', '/v1/batches', { rows, run_mode: 'bulk' });
    assert.equal(answer.status, 202, answer.text);
    const id = answer.json.batch_id;
    const page = await openPage(browser, `${server.base}/b/${id}`);
    const bulk = () => page.textContent('#bulk-state');

    await eventually(async () => /^Waiting for Google's batch, submitted \d\d:\d\d UTC$/.test(await bulk()), {
      what: 'the wait for Google on the page',
    });
    const submitted = (await server.batch(id)).bulk.submitted_at;
    const d = new Date(submitted);
    const hhmm = `${String(d.getUTCHours()).padStart(2, '0')}:${String(d.getUTCMinutes()).padStart(2, '0')}`;
    assert.equal(await bulk(), `Waiting for Google's batch, submitted ${hhmm} UTC`, 'the API\'s submit time');
    assert.match(await page.textContent('#batch-mode'), /^bulk · /);
    assert.equal(await page.textContent('#stat-per-image'), '$0.0195 (bulk price, live $0.039)');
    await screenshot(page, 'progress-bulk-waiting.png', { fullPage: true });

    // No row changes while Google runs the job: the page hears it from the batch events.
    stub.setState('running');
    await eventually(async () => (await bulk()) === `Google is running the batch, submitted ${hhmm} UTC`, {
      what: 'the running job on the page',
    });
    assert.equal(await page.$eval('#bulk-state', (e) => e.dataset.state), 'running');

    stub.setState('succeeded');
    await page.waitForFunction(() => document.querySelector('#batch-status')?.dataset.status === 'succeeded', null, { timeout: 60000 });
    await eventually(async () => (await bulk()) === "Google's batch succeeded", { what: 'the job ended on the page' });
    assert.equal(await page.textContent('#stat-per-image'), '$0.0195 (bulk price, live $0.039)', 'paid at the bulk price');
    assert.equal(await page.textContent('#stat-images'), '2 / 2');
    assert.equal(stub.jobs().length, 1, 'one job for the batch');
    await screenshot(page, 'progress-bulk-succeeded.png', { fullPage: true });
    assert.deepEqual(page.errors, []);
    await page.close();
  });
});
