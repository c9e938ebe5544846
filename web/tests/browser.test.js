// The pages in a real browser against a real `assetgen serve`: a batch followed to the end, a
// server restart mid-batch, Retry and Cancel, and the reference manager. Screenshots go to
// target/screenshots/.

import { test, describe, before, after } from 'node:test';
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import { mkdtemp, writeFile, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { Assetgen, startRefServer, startGeminiStub, launchBrowser, openPage, screenshot, eventually, sleep, png } from './harness.js';
import { formatDuration } from '../common.js';

let server;
let refs;
let browser;

const TERMINAL = ['succeeded', 'completed_with_failures', 'failed', 'cancelled'];

before(async () => {
  refs = await startRefServer();
  server = await Assetgen.create({
    ASSETGEN_MAX_ROWS: '20',
    ASSETGEN_ALLOW_PRIVATE_REFS: 'true',
    // A row killed mid-way is taken up again soon after the restart.
    ASSETGEN_LEASE_TTL_SECS: '3',
  });
  browser = await launchBrowser();
});

after(async () => {
  await browser?.close();
  await server?.close();
  await refs?.close();
});

const slow = (name, ms) => `${refs.base}/slow/${name}.png?ms=${ms}`;

async function batchStatus(page) {
  return page.$eval('#batch-status', (e) => e.dataset.status);
}

async function waitForEnd(page, timeout = 60000) {
  await page.waitForFunction((t) => t.includes(document.querySelector('#batch-status')?.dataset.status), TERMINAL, { timeout });
}

/** What the page shows for each row, to compare with `GET /v1/batches/{id}`. */
async function pageRows(page) {
  return page.evaluate(() =>
    window.assetgenProgress.model.sortedRows().map((r) => ({
      row: r.row,
      status: r.status,
      attempts: r.attempts,
      images: r.images.length,
      error: r.error ? r.error.code : null,
    })),
  );
}

function apiRows(view) {
  return view.rows.map((r) => ({
    row: r.row,
    status: r.status,
    attempts: r.attempts,
    images: r.images.length,
    error: r.error ? r.error.code : null,
  }));
}

async function cardStatuses(page) {
  return page.$$eval('#rows .card', (cards) => cards.map((c) => c.dataset.status));
}

async function expectAllThumbnailsLoaded(page) {
  const images = await page.$$('#gallery img');
  for (const img of images) {
    await img.scrollIntoViewIfNeeded();
    await page.waitForFunction((i) => i.complete && i.naturalWidth > 0, img, { timeout: 10000 });
  }
  return images.length;
}

describe('progress page', () => {
  test('follows a batch to the end: header, cards, thumbnails, lightbox, keyboard', async () => {
    const rows = [
      { scene_id: 'HERO-001', prompt: 'a ceramic mug on a clean white background', variants: 2, refs: [slow('mug', 1200)] },
      { scene_id: 'HERO-002', prompt: 'the same mug on a walnut desk, morning light', variants: 3, refs: [slow('desk', 2500)] },
      { scene_id: 'HERO-003', prompt: 'mug held in two hands, close-up', variants: 2, refs: [slow('hands', 3800)] },
      { scene_id: 'HERO-004', prompt: 'mug with steam, dark background', variants: 1, refs: [slow('steam', 5000)] },
    ];
    const id = await server.submit(rows);
    const page = await openPage(browser, `${server.base}/b/${id}`);
    await page.waitForSelector('#connection[data-state="connected"]', { timeout: 15000 });
    assert.equal(await page.textContent('#connection-text'), 'Connected');
    assert.equal(await page.textContent('#batch-id'), id);

    // Mid-batch: some images in, not all.
    await eventually(
      async () => {
        const s = await page.evaluate(() => window.assetgenProgress.model.summary());
        return s && s.imagesDone > 0 && s.imagesDone < s.imagesTotal;
      },
      { what: 'a batch half done', timeout: 20000, every: 50 },
    );
    await page.waitForFunction(() => [...document.querySelectorAll('#gallery img')].some((i) => i.complete && i.naturalWidth > 0));
    await screenshot(page, 'progress-mid-batch.png', { fullPage: true });
    assert.equal(await page.$$eval('#gallery .tile.pending', (t) => t.length > 0), true, 'slots wait for images');

    await waitForEnd(page);
    assert.equal(await batchStatus(page), 'succeeded');
    assert.equal(await page.textContent('#stat-images'), '8 / 8');
    assert.equal(await page.textContent('#stat-failures'), '0');
    assert.match(await page.textContent('#stat-rows'), /^4 \(4 done\)/);
    assert.match(await page.textContent('#stat-cost'), /^\$0\.00 of \$0\.00 est\. \(live: \$0\.\d+\)$/);
    assert.equal(await page.textContent('#stat-eta'), 'done');
    assert.match(await page.textContent('#stat-elapsed'), /^\d+s$/);
    assert.equal(await page.textContent('#clock-label'), 'Duration');
    assert.equal(await page.textContent('#cost-label'), 'Cost');
    assert.match(await page.textContent('#stat-per-image'), /^\$0\.00 \(live: \$0\.039\)$/, 'a dry run costs nothing');
    assert.deepEqual(await cardStatuses(page), ['succeeded', 'succeeded', 'succeeded', 'succeeded']);
    assert.equal(await page.$$eval('#gallery .tile.pending', (t) => t.length), 0);
    assert.equal(await expectAllThumbnailsLoaded(page), 8);
    assert.equal(await page.textContent('#connection-text'), 'Finished');
    assert.deepEqual(await pageRows(page), apiRows(await server.batch(id)));
    const log = await page.$$eval('#log li', (items) => items.map((li) => li.dataset.kind));
    assert.equal(log[0], 'done', 'the newest event is on top');
    assert.ok(log.includes('snapshot') && log.includes('row') && log.includes('batch'));
    assert.equal(await page.isDisabled('#retry'), true, 'nothing failed');
    assert.equal(await page.isDisabled('#cancel'), true, 'nothing left to cancel');

    // Keyboard: Tab reaches the first thumbnail with a visible focus ring, Enter opens the lightbox.
    await page.evaluate(() => window.scrollTo(0, 0));
    let focused = '';
    for (let i = 0; i < 20 && !focused.includes('tile-button'); i += 1) {
      await page.keyboard.press('Tab');
      focused = await page.evaluate(() => document.activeElement?.className || '');
    }
    assert.match(focused, /tile-button/, 'thumbnails are reachable with Tab');
    const outline = await page.evaluate(() => getComputedStyle(document.activeElement).outlineStyle);
    assert.notEqual(outline, 'none', 'focus is visible');
    await page.keyboard.press('Enter');
    await page.waitForSelector('#lightbox[open]');
    await page.waitForFunction(() => {
      const i = document.querySelector('#lightbox-img');
      return i.complete && i.naturalWidth > 0;
    });
    assert.match(await page.textContent('#lightbox-caption'), /^HERO-001 · variant 1 \(1 of 8\)$/);
    const download = await page.$eval('#lightbox-download', (a) => [a.getAttribute('href'), a.getAttribute('download')]);
    // An image link: the one image, with its signature, no header needed.
    assert.match(download[0], new RegExp(`/v1/images/${id}/HERO-001/1\\?sig=[A-Za-z0-9_-]{43}$`));
    assert.equal(download[1], 'HERO-001-v1.png');
    const [file] = await Promise.all([page.waitForEvent('download'), page.click('#lightbox-download')]);
    assert.equal(file.suggestedFilename(), 'HERO-001-v1.png');
    await page.keyboard.press('ArrowRight');
    assert.match(await page.textContent('#lightbox-caption'), /^HERO-001 · variant 2 /);
    await page.keyboard.press('Escape');
    await page.waitForFunction(() => !document.querySelector('#lightbox').open);
    assert.match(await page.evaluate(() => document.activeElement?.className || ''), /tile-button/, 'focus returns to the thumbnail');

    await screenshot(page, 'progress-finished.png', { fullPage: true });

    // Phone width: nothing wider than the screen, the buttons still there.
    const phone = await openPage(browser, `${server.base}/b/${id}`, { width: 390, height: 844 });
    await phone.waitForSelector('#batch-status[data-status="succeeded"]');
    await phone.waitForFunction(() => [...document.querySelectorAll('#gallery img')].slice(0, 3).every((i) => i.complete && i.naturalWidth > 0));
    const width = await phone.evaluate(() => document.documentElement.scrollWidth);
    assert.ok(width <= 390, `the page is ${width}px wide on a 390px screen`);
    assert.equal(await phone.isVisible('#retry'), true);
    assert.equal(await phone.isVisible('#cancel'), true);
    await screenshot(phone, 'progress-phone.png', { fullPage: true });
    assert.deepEqual(page.errors.concat(phone.errors), []);
    await phone.close();
    await page.close();
  });

  test('Retry re-runs a failed row and the page follows it to success', async () => {
    const rows = [
      { scene_id: 'OK-001', prompt: 'a plain scene', variants: 1 },
      { scene_id: 'MISSING-REF', prompt: 'a scene whose reference is not there yet', variants: 2, refs: [`${refs.base}/flaky/late.png`] },
    ];
    const id = await server.submit(rows);
    const page = await openPage(browser, `${server.base}/b/${id}`);
    await waitForEnd(page);
    assert.equal(await batchStatus(page), 'completed_with_failures');
    assert.equal(await page.textContent('#stat-failures'), '1');
    const failed = page.locator('#rows .card[data-status="failed"]');
    assert.equal(await failed.locator('.error-code').textContent(), 'REF_FETCH_FAILED');
    assert.match(await failed.locator('.advice').textContent(), /reference URL is reachable/);
    assert.match(await failed.locator('.error-detail').textContent(), /404/);
    assert.equal(await page.isEnabled('#retry'), true);
    assert.equal(await page.textContent('#connection-text'), 'Finished');

    refs.setAvailable('late');
    await page.focus('#retry');
    await page.keyboard.press('Enter'); // buttons work from the keyboard
    await page.waitForSelector('#toast:not([hidden])');
    assert.match(await page.textContent('#toast'), /1 row queued again/);
    await page.waitForSelector('#rows .card[data-status="failed"]', { state: 'detached', timeout: 20000 });
    await page.waitForSelector('#batch-status[data-status="succeeded"]', { timeout: 30000 });
    assert.deepEqual(await cardStatuses(page), ['succeeded', 'succeeded']);
    assert.equal(await page.textContent('#stat-images'), '3 / 3');
    assert.equal(await page.textContent('#stat-failures'), '0');
    assert.equal(await expectAllThumbnailsLoaded(page), 3);
    assert.equal(await page.isDisabled('#retry'), true);
    assert.deepEqual(await pageRows(page), apiRows(await server.batch(id)));
    assert.equal((await pageRows(page))[1].attempts, 2, 'the row ran a second time');
    assert.deepEqual(page.errors, []);
    await page.close();
  });

  test('Cancel stops the rows that have not started', async () => {
    // More rows than the local queue pushes at once (8), each waiting on a slow reference.
    const rows = Array.from({ length: 12 }, (_, i) => ({
      scene_id: `BULK-${String(i + 1).padStart(2, '0')}`,
      prompt: `bulk scene ${i + 1}`,
      variants: 1,
      refs: [slow(`bulk${i}`, 3000)],
    }));
    const id = await server.submit(rows);
    const page = await openPage(browser, `${server.base}/b/${id}`);
    await page.waitForSelector('#connection[data-state="connected"]');
    await page.waitForSelector('#cancel:not([disabled])', { timeout: 10000 });
    await page.click('#cancel');
    await page.waitForSelector('#toast:not([hidden])');
    const toast = await page.textContent('#toast');
    const cancelled = Number(/(\d+) rows? cancelled/.exec(toast)?.[1]);
    assert.ok(cancelled >= 1, `some rows were cancelled: ${toast}`);
    await waitForEnd(page, 40000);
    const view = await server.batch(id);
    assert.equal(view.totals.cancelled, cancelled);
    assert.equal(await batchStatus(page), view.status);
    assert.equal((await cardStatuses(page)).filter((s) => s === 'cancelled').length, cancelled);
    assert.deepEqual(await pageRows(page), apiRows(view));
    assert.equal(await page.isDisabled('#cancel'), true);
    assert.deepEqual(page.errors, []);
    await page.close();
  });

  test('reconnects after the server restarts on the same port, and loses no event', async () => {
    const rows = Array.from({ length: 6 }, (_, i) => ({
      scene_id: `RESTART-${i + 1}`,
      prompt: `scene ${i + 1} across a restart`,
      variants: 2,
      refs: [slow(`restart${i}`, 600 + i * 700)],
    }));
    const id = await server.submit(rows);
    const page = await openPage(browser, `${server.base}/b/${id}`);
    await page.waitForSelector('#connection[data-state="connected"]');
    await page.waitForSelector('#rows .card[data-status="succeeded"]', { timeout: 20000 });
    const before = await page.evaluate(() => window.assetgenProgress.model.lastEventId);

    await server.kill();
    await page.waitForSelector('#connection[data-state="reconnecting"]', { timeout: 15000 });
    assert.match(await page.textContent('#connection-text'), /^Reconnecting…/);
    await screenshot(page, 'progress-reconnecting.png');
    await sleep(1500);
    await server.restart();

    // Connected again (the log keeps the line even if the batch ends right after).
    await page.waitForFunction(
      () => {
        const log = window.assetgenProgress.model.log;
        const lost = log.findIndex((l) => l.kind === 'connection' && l.text.startsWith('connection lost'));
        return lost > 0 && log.slice(0, lost).some((l) => l.kind === 'connection' && l.text === 'connected');
      },
      null,
      { timeout: 45000 },
    );
    await waitForEnd(page, 60000);
    const state = await page.$eval('#connection', (e) => e.dataset.state);
    assert.ok(['connected', 'finished'].includes(state), state);
    const view = await server.batch(id);
    assert.equal(view.status, 'succeeded');
    assert.deepEqual(await pageRows(page), apiRows(view), 'the page saw every change');
    assert.equal(await page.textContent('#stat-images'), '12 / 12');
    const after = await page.evaluate(() => window.assetgenProgress.model.lastEventId);
    assert.ok(Number(after) > Number(before), 'the stream resumed past the last event seen (file store: numeric ids)');
    assert.equal(await expectAllThumbnailsLoaded(page), 12);
    assert.deepEqual(page.errors, []);
    await page.close();
  });
});

describe('a finished live batch', () => {
  let live;
  let gemini;

  before(async () => {
    gemini = await startGeminiStub();
    live = await Assetgen.create({ GEMINI_API_KEY: 'test-key', GEMINI_BASE_URL: gemini.base }, ['--live']);
  });

  after(async () => {
    await live?.close();
    await gemini?.close();
  });

  test('shows how long it took and what each image cost, also on a page opened after it ended', async () => {
    const rows = [1, 2].map((i) => ({ scene_id: `COST-${i}`, prompt: `a kettle, view ${i}`, variants: 2, refs: [], ref_mode: 'style_only' }));
    const answer = await live.request('POST', '/v1/batches', { rows, run_mode: 'live' });
    assert.equal(answer.status, 202, answer.text);
    const id = answer.json.batch_id;
    await eventually(async () => (await live.batch(id)).status === 'succeeded', { timeout: 60000, what: 'the batch ends' });
    const view = await live.batch(id);
    assert.ok(view.ended_at, `the API says when it ended: ${JSON.stringify(view)}`);
    const took = Date.parse(view.ended_at) - Date.parse(view.created_at);
    assert.ok(took >= 0, `${view.created_at} → ${view.ended_at}`);

    // Opened after the end: before, this read "Elapsed —".
    const page = await openPage(browser, `${live.base}/b/${id}`);
    await waitForEnd(page);
    assert.equal(await page.textContent('#clock-label'), 'Duration');
    assert.equal(await page.textContent('#stat-elapsed'), formatDuration(took));
    assert.equal(await page.textContent('#cost-label'), 'Cost');
    assert.equal(await page.textContent('#stat-cost'), '$0.16 of $0.16 est.', '4 images at $0.039');
    assert.equal(await page.textContent('#stat-per-image'), '$0.039');
    assert.equal(await page.textContent('#stat-eta'), 'done');
    await screenshot(page, 'progress-finished-live.png', { fullPage: true });
    assert.deepEqual(page.errors, []);
    await page.close();
  });
});

describe('reference manager', () => {
  let files;

  before(async () => {
    files = await mkdtemp(path.join(os.tmpdir(), 'assetgen-refs-'));
  });

  after(async () => {
    await rm(files, { recursive: true, force: true });
  });

  test('uploads show previews with their SHA-256, duplicates are flagged, a set is tagged', async () => {
    const red = png([220, 40, 40], 96);
    const teal = png([20, 160, 150], 96);
    const redPath = path.join(files, 'palette-red.png');
    const tealPath = path.join(files, 'palette-teal.png');
    const copyPath = path.join(files, 'red-again.png');
    await writeFile(redPath, red);
    await writeFile(tealPath, teal);
    await writeFile(copyPath, red);
    const notImage = path.join(files, 'notes.txt');
    await writeFile(notImage, 'not an image');
    const sha = (b) => crypto.createHash('sha256').update(b).digest('hex');

    const page = await openPage(browser, `${server.base}/refs`);
    await page.waitForFunction(() => !document.querySelector('#set-meta').textContent.startsWith('Loading'));
    await page.setInputFiles('#file-input', [redPath, tealPath]);
    await page.waitForFunction(() => document.querySelectorAll('#added .ref-card').length === 2);
    await page.setInputFiles('#file-input', [copyPath]);
    await page.waitForFunction(() => document.querySelectorAll('#added .ref-card').length === 3);

    const added = await page.$$eval('#added .ref-card', (cards) =>
      cards.map((c) => ({ sha: c.dataset.sha256, duplicate: c.dataset.duplicate, name: c.querySelector('.name').textContent, text: c.textContent })),
    );
    // Newest first: the copy, then teal, then red.
    assert.deepEqual(
      added.map((a) => [a.name, a.sha, a.duplicate]),
      [
        ['red-again.png', sha(red), 'true'],
        ['palette-teal.png', sha(teal), 'false'],
        ['palette-red.png', sha(red), 'false'],
      ],
    );
    assert.match(added[0].text, /duplicate/);
    assert.match(added[1].text, new RegExp(`sha256 ${sha(teal)}`));
    for (const img of await page.$$('#added img')) {
      await page.waitForFunction((i) => i.complete && i.naturalWidth === 96, img);
    }

    // A file that is not an image is refused with the reason and what to do.
    await page.setInputFiles('#file-input', [notImage]);
    await page.waitForSelector('#added .error-card');
    assert.match(await page.textContent('#added .error-card'), /REF_NOT_IMAGE.*PNG, JPEG, WebP or GIF/s);

    // A pasted URL is fetched through the server and lands in the library too.
    await page.fill('#urls', `${refs.base}/slow/pasted.png?ms=10`);
    await page.click('#fetch');
    await page.waitForFunction(() => document.querySelectorAll('#added .ref-card[data-state="stored"]').length === 4);

    // The library lists each image once, by content; tick two and save them as the global set.
    await page.waitForSelector(`#library .ref-card[data-sha256="${sha(teal)}"]`);
    const library = await page.$$eval('#library .ref-card', (cards) => cards.map((c) => c.dataset.sha256));
    assert.equal(library.filter((s) => s === sha(red)).length, 1);
    await page.check(`#pick-${sha(red)}`);
    await page.check(`#pick-${sha(teal)}`);
    await page.click('#save-set');
    await page.waitForSelector('#set-list li >> nth=1');
    const set = await server.request('GET', '/v1/refs/sets/global');
    assert.equal(set.json.revision, 1);
    // Reference links: signed, so a Sheet and the row worker load them with no header.
    assert.deepEqual(
      set.json.refs.map((u) => u.replace(/\?sig=[A-Za-z0-9_-]{43}$/, '')),
      [`${server.base}/v1/refs/${sha(red)}`, `${server.base}/v1/refs/${sha(teal)}`],
    );
    assert.ok(set.json.refs.every((u) => /\?sig=/.test(u)), set.json.refs.join(' '));
    assert.match(await page.textContent('#set-meta'), /Revision 1/);
    assert.deepEqual(await page.$$eval('#set-list code', (c) => c.map((x) => x.textContent)), set.json.refs);

    await screenshot(page, 'refs.png', { fullPage: true });

    // Copy URL puts the stable URL on the clipboard.
    await browser.context.grantPermissions(['clipboard-read', 'clipboard-write'], { origin: server.base });
    await page.click(`#library .ref-card[data-sha256="${sha(teal)}"] .copy-url`);
    await page.waitForSelector(`#library .ref-card[data-sha256="${sha(teal)}"] .copy-url:has-text("Copied")`);
    const copied = await page.evaluate(() => navigator.clipboard.readText());
    assert.match(copied, new RegExp(`^${server.base}/v1/refs/${sha(teal)}\\?sig=[A-Za-z0-9_-]{43}$`));

    // The stable URL serves the very bytes, to anyone holding it: no header, no cookie.
    const served = await fetch(copied);
    assert.equal(served.headers.get('content-type'), 'image/png');
    assert.equal(sha(Buffer.from(await served.arrayBuffer())), sha(teal));

    const phone = await openPage(browser, `${server.base}/refs`, { width: 390, height: 844 });
    await phone.waitForSelector(`#library .ref-card[data-sha256="${sha(teal)}"]`);
    assert.ok((await phone.evaluate(() => document.documentElement.scrollWidth)) <= 390);
    await screenshot(phone, 'refs-phone.png', { fullPage: true });
    assert.deepEqual(page.errors.concat(phone.errors), []);
    await phone.close();
    await page.close();
  });
});
