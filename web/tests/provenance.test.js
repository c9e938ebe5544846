// The lightbox says how the image on show was made (issue 13): prompt as sent, references and
// what became of each, model and version, response id, price, who asked, and whether the image is
// the one the row state records, fetched from the image's sidecar by its own signed link. In
// Debian's Chromium against a real `assetgen serve` (dry run).

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { Assetgen, startRefServer, launchBrowser, openPage, screenshot } from './harness.js';

let server;
let refs;
let browser;

before(async () => {
  refs = await startRefServer();
  server = await Assetgen.create({ ASSETGEN_ALLOW_PRIVATE_REFS: 'true' });
  browser = await launchBrowser();
});

after(async () => {
  await browser?.close();
  await server?.close();
  await refs?.close();
});

const field = (page, name) => page.textContent(`#lightbox-provenance dd[data-field="${name}"]`);

test('the lightbox shows the provenance of the image on show', async () => {
  // The same bytes under two URLs (the ref server colours by name): the second is a duplicate.
  const mug = `${refs.base}/slow/mug.png?ms=0`;
  const mugAgain = `${refs.base}/slow/mug.png?ms=1`;
  const desk = `${refs.base}/slow/desk.png?ms=0`;
  const id = await server.submit([
    { scene_id: 'PROV-001', prompt: 'a ceramic mug, «café» lighting', variants: 2, refs: [mug, mugAgain, desk], ref_mode: 'style_and_composition', aspect_ratio: '16:9' },
  ]);
  const page = await openPage(browser, `${server.base}/b/${id}`);
  await page.waitForSelector('#batch-status[data-status="succeeded"]', { timeout: 30000 });
  await page.click('#gallery .tile-button');
  await page.waitForSelector('#lightbox[open]');
  await page.waitForSelector('#lightbox-provenance[data-state="ready"]', { timeout: 10000 });

  // What the page shows is what the sidecar says.
  const link = await page.getAttribute('#lightbox-provenance .provenance-json', 'href');
  assert.match(link, new RegExp(`/v1/provenance/${id}/PROV-001/1\\?sig=[A-Za-z0-9_-]{43}$`));
  const view = await (await fetch(link)).json();
  const p = view.sidecar;
  assert.equal(await field(page, 'prompt'), p.prompt);
  assert.match(p.prompt, /^a ceramic mug, «café» lighting\n\nFollow the attached reference images/);
  assert.equal(await field(page, 'model'), 'gemini-2.5-flash-image (version assetgen-dry-run)');
  assert.equal(await field(page, 'response-id'), p.response_id);
  assert.match(p.response_id, /^dry-run-/);
  assert.equal(await field(page, 'price'), '$0.00 (dry run: nothing spent)');
  assert.equal(await field(page, 'aspect-ratio'), '16:9, references style and composition');
  assert.equal(await field(page, 'requested-by'), 'dev@localhost');
  assert.equal(await field(page, 'attempt'), '1, retry round 0');
  assert.match(await field(page, 'image'), /matches the row state$/);
  const shownRefs = await page.$$eval('#lightbox-provenance .provenance-refs li', (items) =>
    items.map((li) => [li.dataset.outcome, li.querySelector('.ref-url').textContent, li.querySelector('code').title]));
  assert.deepEqual(shownRefs, p.refs.map((r) => [r.outcome, r.url, r.sha256]));
  assert.deepEqual(shownRefs.map(([outcome, url]) => [outcome, url]), [['used', mug], ['duplicate', mugAgain], ['used', desk]]);
  assert.equal(shownRefs[0][2], shownRefs[1][2], 'a duplicate has the same bytes');
  await screenshot(page, 'progress-lightbox-provenance.png');

  // The next image shows its own record (another answer of the model).
  await page.keyboard.press('ArrowRight');
  await page.waitForFunction(
    (first) => document.querySelector('#lightbox-provenance[data-state="ready"] dd[data-field="response-id"]')?.textContent !== first,
    p.response_id,
  );
  assert.match(await page.getAttribute('#lightbox-provenance .provenance-json', 'href'), new RegExp(`/PROV-001/2\\?sig=`));

  // Like the image: the signed link opens it for anyone, the bare route only for the batch's reader.
  const stranger = { headers: { 'X-Assetgen-User': 'stranger@elsewhere.test' } };
  assert.equal((await fetch(link, stranger)).status, 200);
  const bare = `${server.base}/v1/provenance/${id}/PROV-001/1`;
  assert.equal((await fetch(bare, stranger)).status, 404);
  assert.equal((await fetch(bare)).status, 200, 'the owner');
  assert.deepEqual(page.errors, []);
  await page.close();
});
