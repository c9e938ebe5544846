// The sidebar and dialogs as a user sees them: the HTML the script's templates produce, opened in
// Debian's Chromium (playwright-core), with google.script.run wired to the script's real functions
// in the vm world.
'use strict';
const test = require('node:test');
const assert = require('node:assert/strict');
const fs = require('node:fs');
const path = require('node:path');
const { makeWorld, plain, sheetWith } = require('./fakes');

const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';

/** Stands in for Apps Script's client API inside the dialog's page. */
const GOOGLE_SCRIPT_STUB = `
  window.__closed = false;
  window.google = { script: {
    host: { close: () => { window.__closed = true; } },
    get run() {
      const handlers = { ok: () => {}, fail: () => {} };
      const runner = {
        withSuccessHandler(f) { handlers.ok = f; return runner; },
        withFailureHandler(f) { handlers.fail = f; return runner; },
        saveSettings(form) { window.__saveSettings(form).then((r) => handlers.ok(r), (e) => handlers.fail(e)); },
      };
      return runner;
    },
  } };
`;

/** The page with the stub as its first script, as Apps Script's iframe has google.script first. */
function withStub(html) {
  return html.replace('<head>', `<head><script>${GOOGLE_SCRIPT_STUB}</script>`);
}

test('the sidebar, the Settings dialog and the link dialog work in a browser', async (t) => {
  assert.ok(fs.existsSync(CHROMIUM), `${CHROMIUM} is missing (make web-tools installs it)`);
  const { chromium } = require('playwright-core');
  const browser = await chromium.launch({ executablePath: CHROMIUM, headless: true, args: ['--no-sandbox', '--disable-gpu'] });
  t.after(() => browser.close());
  const shots = path.resolve(__dirname, '..', '..', 'target', 'screenshots');
  fs.mkdirSync(shots, { recursive: true });

  const sheet = sheetWith(['scene_id', 'prompt', 'variants'], [
    { scene_id: '<img src=x onerror=alert(1)>', prompt: 'p', variants: 1 },
    { scene_id: 'B', prompt: '', variants: 7 },
  ]);
  // Only the reference manager's link is asked for here (the service's other answers are unused).
  const managerLink = 'https://relay.assetgen.example.com/refs#token=refs-token';
  const http = (req) => (req.url.endsWith('/v1/refs/manager-token')
    ? { status: 200, body: { token: 'refs-token', expires_at: '2026-11-28T10:00:00Z', page: managerLink } }
    : { status: 500, body: 'unused' });
  const w = makeWorld({ sheets: [sheet], http });
  w.gs.saveSettings({ serviceUrl: 'https://assetgen.test', defaultRunMode: 'dry_run', maxRows: 10 });

  await t.test('the problems sidebar lists every problem as text', async () => {
    sheet.select('A2:C3');
    w.gs.generateDryRun();
    const page = await browser.newPage({ viewport: { width: 300, height: 600 } });
    const dialogs = [];
    page.on('dialog', (d) => { dialogs.push(d.message()); d.dismiss(); });
    await page.setContent(w.ui.sidebars[0].getContent());
    assert.equal(await page.textContent('#title'), 'Nothing was sent: fix these rows first');
    assert.equal(await page.textContent('#count'), '3 problems');
    const items = await page.$$eval('#problems li', (lis) => lis.map((li) => li.innerText));
    assert.equal(items.length, 3);
    assert.match(items[0], /^Row 2, scene_id\nscene_id "<img src=x onerror=alert\(1\)>" contains "<"/);
    assert.match(items[0], /Fix: Use 1–64 letters/);
    assert.match(items[2], /^Row 3, variants\nvariants is 7; ask for 1 to 3\./);
    assert.equal(await page.$$eval('img', (imgs) => imgs.length), 0, 'a cell is never HTML');
    assert.deepEqual(dialogs, []);
    await page.screenshot({ path: path.join(shots, 'sheet-problems-sidebar.png') });
    await page.close();
  });

  await t.test('the Settings dialog shows each field\'s problem, then saves through saveSettings and closes', async () => {
    w.props.document.deleteProperty('assetgen.serviceUrl');
    w.gs.generateDryRun(); // a missing setting opens the dialog
    const html = w.ui.dialogs.at(-1).html.getContent();
    const page = await browser.newPage({ viewport: { width: 460, height: 420 } });
    const errors = [];
    page.on('pageerror', (e) => errors.push(String(e)));
    t.after(() => assert.deepEqual(errors, [], 'no script error in the dialog'));
    await page.exposeFunction('__saveSettings', (form) => plain(w.gs.saveSettings(form)));
    await page.setContent(withStub(html));
    assert.match(await page.textContent('#notice'), /Fill in the service URL first/);
    await page.fill('input[name=serviceUrl]', 'not a url');
    await page.fill('input[name=maxRows]', '0');
    await page.click('#save');
    await page.waitForFunction(() => document.querySelector('[data-for=serviceUrl]').textContent !== '');
    assert.match(await page.textContent('[data-for=serviceUrl]'), /https:\/\//);
    assert.match(await page.textContent('[data-for=maxRows]'), /whole number from 1 to 1000/);
    assert.equal(await page.evaluate(() => window.__closed), false);
    await page.screenshot({ path: path.join(shots, 'sheet-settings-errors.png') });
    await page.fill('input[name=serviceUrl]', 'https://assetgen.example.com/');
    await page.fill('input[name=maxRows]', '12');
    assert.deepEqual(await page.$$eval('select[name=defaultRunMode] option', (os) => os.map((o) => o.value)), ['dry_run', 'live', 'bulk']);
    await page.selectOption('select[name=defaultRunMode]', 'bulk');
    await page.click('#save');
    await page.waitForFunction(() => window.__closed === true);
    assert.deepEqual(plain(w.gs.getSettings_()), {
      serviceUrl: 'https://assetgen.example.com', refsUrl: 'https://assetgen.example.com/refs', defaultRunMode: 'bulk', maxRows: 12,
    });
    await page.close();
    // Opened again, the dialog shows the bulk default chosen.
    w.gs.openSettings();
    const again = await browser.newPage({ viewport: { width: 460, height: 420 } });
    await again.setContent(withStub(w.ui.dialogs.at(-1).html.getContent()));
    assert.equal(await again.$eval('select[name=defaultRunMode]', (s) => s.value), 'bulk');
    await again.close();
  });

  await t.test('the link dialog opens the URL it was given', async () => {
    w.gs.openReferenceManager();
    const page = await browser.newPage({ viewport: { width: 420, height: 140 } });
    await page.setContent(withStub(w.ui.dialogs.at(-1).html.getContent()));
    assert.equal(await page.getAttribute('#link', 'href'), managerLink, 'signed in by the token in the fragment');
    assert.equal(await page.textContent('#link'), 'Open the reference manager');
    await page.close();
  });
});
