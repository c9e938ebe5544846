// The pages on the cloud topology: submit, generate and relay as three processes on three ports
// (three browser origins), OIDC on with ID tokens minted by the test's own key set (no dev auth),
// fake-gcs-server and the Pub/Sub emulator pushing rows to generate. The page is served by the
// relay and calls submit's batch routes across origins (CORS). Screenshots go to
// target/screenshots/cloud-*.png.

import { test, describe, before, after } from 'node:test';
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import os from 'node:os';
import path from 'node:path';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { startRefServer, launchBrowser, openPage, screenshot, eventually, png } from './harness.js';
import { Topology } from './topology.js';

// The deployment's capability secret, chosen here so that a test can make a token that expired an
// hour ago (as the functions make them, HS256) instead of waiting an hour for one.
const CAPABILITY_SECRET = crypto.randomBytes(32).toString('hex');

let topology;
let refs;
let browser;

const TERMINAL = ['succeeded', 'completed_with_failures', 'failed', 'cancelled'];

// Owner-only control tokens and signed image links (issue 11's authorization, engineer "auth")
// land separately: until submit's contract has the control-token route, the tests that need them
// are skipped with this reason, and they turn strict by themselves once it does.
let authLinks = false;
const NEEDS_AUTH = 'needs owner-only control tokens and signed image links, not yet in this build';

before(async () => {
  refs = await startRefServer();
  // Two rows in flight at once: rows further down a batch stay queued long enough to cancel.
  topology = await Topology.start(['--push-concurrency', '2', '--env', `ASSETGEN_CAPABILITY_SECRET=${CAPABILITY_SECRET}`]);
  const contract = await topology.request('GET', `${topology.submit}/openapi.json`);
  authLinks = Boolean(contract.json?.paths?.['/v1/batches/{id}/control-token']);
  browser = await launchBrowser();
});

after(async () => {
  await browser?.close();
  await topology?.close();
  await refs?.close();
});

const slow = (name, ms) => `${refs.base}/slow/${name}.png?ms=${ms}`;
const origin = (url) => new URL(url).origin;

async function waitForEnd(page, timeout = 60000) {
  await page.waitForFunction((t) => t.includes(document.querySelector('#batch-status')?.dataset.status), TERMINAL, { timeout });
}

function rowsOf(view) {
  return view.rows.map((r) => ({ row: r.row, status: r.status, attempts: r.attempts, images: r.images.length }));
}

async function pageRows(page) {
  return page.evaluate(() =>
    window.assetgenProgress.model
      .sortedRows()
      .map((r) => ({ row: r.row, status: r.status, attempts: r.attempts, images: r.images.length })),
  );
}

async function cardStatuses(page) {
  return page.$$eval('#rows .card', (cards) => cards.map((c) => c.dataset.status));
}

async function thumbnailsLoaded(page) {
  const images = await page.$$('#gallery img');
  for (const img of images) {
    await img.scrollIntoViewIfNeeded();
    await page.waitForFunction((i) => i.complete && i.naturalWidth > 0, img, { timeout: 10000 });
  }
  return images.length;
}

/** The owner's page link with a control token in its fragment (what the Sheet and CLI open). */
async function controlPage(id) {
  const answer = await topology.request('POST', `${topology.submit}/v1/batches/${id}/control-token`, { user: 'owner' });
  assert.equal(answer.status, 200, answer.text);
  assert.match(answer.json.page, /#control=/);
  return answer.json.page;
}

/** Every request the page sends to submit's origin, with its method and whether it carried a bearer. */
function recordSubmitCalls(page) {
  const calls = [];
  page.on('request', (r) => {
    if (origin(r.url()) === origin(topology.submit)) {
      calls.push({ method: r.method(), path: new URL(r.url()).pathname, bearer: Boolean(r.headers().authorization) });
    }
  });
  return calls;
}

describe('cloud topology (three origins, OIDC)', () => {
  test('the page link from the submit response follows the batch to the end', async () => {
    const rows = [
      { scene_id: 'CLOUD-001', prompt: 'a ceramic mug on a clean white background', variants: 2 },
      { scene_id: 'CLOUD-002', prompt: 'the same mug on a walnut desk', variants: 1, refs: [slow('desk', 1500)] },
      { scene_id: 'CLOUD-003', prompt: 'mug with steam, dark background', variants: 2, refs: [slow('steam', 2500)] },
    ];
    const accepted = await topology.submitBatch(rows);
    const id = accepted.batch_id;
    const link = accepted.links.page;
    // The page is the relay's, on another origin than submit.
    assert.equal(origin(link), origin(topology.relay));
    assert.notEqual(origin(topology.relay), origin(topology.submit));

    // The batch is its owner's: another signed-in user is told it does not exist, nobody
    // unsigned gets in, and the read link opens it.
    const other = await topology.request('GET', `${topology.submit}/v1/batches/${id}`, { user: 'other' });
    if (authLinks) assert.equal(other.status, 404, other.text);
    const nobody = await topology.request('GET', `${topology.submit}/v1/batches/${id}`);
    assert.equal(nobody.status, 401, nobody.text);

    const page = await openPage(browser, 'about:blank');
    const calls = recordSubmitCalls(page);
    await page.goto(link);
    await page.waitForSelector('#connection[data-state="connected"], #connection[data-state="finished"]', { timeout: 20000 });
    assert.equal(await page.textContent('#batch-id'), id);
    await waitForEnd(page);
    assert.equal(await page.$eval('#batch-status', (e) => e.dataset.status), 'succeeded');
    assert.equal(await page.textContent('#stat-images'), '5 / 5');
    assert.deepEqual(await cardStatuses(page), ['succeeded', 'succeeded', 'succeeded']);
    if (authLinks) assert.equal(await thumbnailsLoaded(page), 5);
    assert.equal(await page.textContent('#connection-text'), 'Finished');
    const view = await topology.batch(id);
    assert.deepEqual(await pageRows(page), rowsOf(view));
    // The status came from submit, across origins, with the read link's token and no bearer.
    assert.ok(calls.some((c) => c.method === 'GET' && c.path === `/v1/batches/${id}`), JSON.stringify(calls));
    assert.deepEqual(page.errors, [], 'no CORS or CSP error, no script error');
    await screenshot(page, 'cloud-progress-finished.png', { fullPage: true });
    await page.close();

    // Without the link's token the page says why it shows nothing, once, instead of retrying.
    const bare = await openPage(browser, `${topology.relay}/b/${id}`);
    await bare.waitForSelector('#load-error:not([hidden])');
    assert.equal(await bare.textContent('#batch-status'), 'no access');
    assert.match(await bare.textContent('#load-error'), /sign|link|token/i);
    assert.equal(await bare.$eval('#connection', (e) => e.dataset.state), 'stopped');
    await screenshot(bare, 'cloud-no-access.png');
    await bare.close();
  });

  test("Retry re-runs a failed row with the owner's control token, and a forwarded read link cannot", async (t) => {
    if (!authLinks) return t.skip(NEEDS_AUTH);
    const rows = [
      { scene_id: 'OK-001', prompt: 'a plain scene', variants: 1 },
      { scene_id: 'LATE-REF', prompt: 'a scene whose reference is not there yet', variants: 2, refs: [`${refs.base}/flaky/cloud-late.png`] },
    ];
    const accepted = await topology.submitBatch(rows);
    const id = accepted.batch_id;

    // The read link (what a user may forward): the page shows the failure, and Retry is refused.
    const reader = await openPage(browser, accepted.links.page);
    await waitForEnd(reader);
    assert.equal(await reader.$eval('#batch-status', (e) => e.dataset.status), 'completed_with_failures');
    const failed = reader.locator('#rows .card[data-status="failed"]');
    assert.equal(await failed.locator('.error-code').textContent(), 'REF_FETCH_FAILED');
    refs.setAvailable('cloud-late');
    await reader.click('#retry');
    await reader.waitForSelector('#toast:not([hidden])');
    assert.match(await reader.textContent('#toast'), /cancel|retry|owner|control|not allowed|forbidden/i);
    assert.equal((await topology.batch(id)).totals.failed, 1, 'nothing was retried');
    await screenshot(reader, 'cloud-retry-refused.png');
    await reader.close();

    // The owner's page: the control token rides in the fragment, which the page then drops from
    // the address bar so a copied URL is the read link only.
    const page = await openPage(browser, await controlPage(id));
    await waitForEnd(page);
    assert.doesNotMatch(page.url(), /control=/);
    assert.equal(await page.isEnabled('#retry'), true);
    await page.click('#retry');
    await page.waitForSelector('#toast:not([hidden])');
    assert.match(await page.textContent('#toast'), /1 row queued again/);
    await page.waitForSelector('#batch-status[data-status="succeeded"]', { timeout: 45000 });
    assert.deepEqual(await cardStatuses(page), ['succeeded', 'succeeded']);
    assert.equal(await page.textContent('#stat-images'), '3 / 3');
    assert.equal(await thumbnailsLoaded(page), 3);
    const view = await topology.batch(id);
    assert.equal(view.status, 'succeeded');
    assert.deepEqual(await pageRows(page), rowsOf(view));
    assert.equal(view.rows[1].attempts, 2, 'the row ran a second time');
    assert.deepEqual(page.errors, []);
    await screenshot(page, 'cloud-retried.png', { fullPage: true });
    await page.close();
  });

  test("Cancel with the owner's control token stops the rows that have not started", async (t) => {
    if (!authLinks) return t.skip(NEEDS_AUTH);
    const rows = Array.from({ length: 8 }, (_, i) => ({
      scene_id: `BULK-${String(i + 1).padStart(2, '0')}`,
      prompt: `bulk scene ${i + 1}`,
      variants: 1,
      refs: [slow(`cloud-bulk${i}`, 2500)],
    }));
    const accepted = await topology.submitBatch(rows);
    const id = accepted.batch_id;
    const page = await openPage(browser, 'about:blank');
    const calls = recordSubmitCalls(page);
    await page.goto(await controlPage(id));
    await page.waitForSelector('#cancel:not([disabled])', { timeout: 20000 });
    await page.click('#cancel');
    await page.waitForSelector('#toast:not([hidden])');
    const toast = await page.textContent('#toast');
    const cancelled = Number(/(\d+) rows? cancelled/.exec(toast)?.[1]);
    assert.ok(cancelled >= 1, `some rows were cancelled: ${toast}`);
    assert.ok(
      calls.some((c) => c.method === 'POST' && c.path === `/v1/batches/${id}/cancel` && c.bearer),
      `cancel went to submit with the control token: ${JSON.stringify(calls)}`,
    );
    await waitForEnd(page, 60000);
    const view = await topology.batch(id);
    assert.equal(view.totals.cancelled, cancelled);
    assert.equal(await page.$eval('#batch-status', (e) => e.dataset.status), view.status);
    assert.equal((await cardStatuses(page)).filter((s) => s === 'cancelled').length, cancelled);
    assert.deepEqual(await pageRows(page), rowsOf(view));
    assert.equal(await page.isDisabled('#cancel'), true);
    assert.deepEqual(page.errors, []);
    await screenshot(page, 'cloud-cancelled.png', { fullPage: true });
    await page.close();
  });

  test('an image link opens in a fresh browser context: no cookie, no header', async (t) => {
    if (!authLinks) return t.skip(NEEDS_AUTH);
    const accepted = await topology.submitBatch([{ scene_id: 'LINK-001', prompt: 'a mug for the Sheet', variants: 1 }]);
    const id = accepted.batch_id;
    const view = await eventually(
      async () => {
        const v = await topology.batch(id);
        return v.status === 'succeeded' ? v : null;
      },
      { what: 'the batch to succeed', timeout: 30000 },
    );
    const link = view.rows[0].images[0];
    assert.equal(origin(link), origin(topology.relay));
    assert.doesNotMatch(link, /access_token=/, 'an image link carries no batch token');

    // As `=IMAGE()` in a Sheet or a pasted link would: a browser that has never seen the batch.
    const fresh = await launchBrowser();
    try {
      const page = await fresh.context.newPage();
      const response = await page.goto(link);
      assert.equal(response.status(), 200);
      assert.equal(response.headers()['content-type'], 'image/png');
      const body = await response.body();
      assert.deepEqual([...body.subarray(0, 8)], [0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a], 'a PNG');
      // Chromium shows a lone image centred in an <img>.
      await page.waitForFunction(() => {
        const i = document.querySelector('img');
        return i && i.complete && i.naturalWidth > 0;
      });
      await screenshot(page, 'cloud-image-link.png');

      // The signature opens that one image only.
      const tampered = link.replace(/sig=([A-Za-z0-9_-])/, (_, c) => `sig=${c === 'A' ? 'B' : 'A'}`);
      const refused = await page.goto(tampered);
      assert.ok([401, 403, 404].includes(refused.status()), `a tampered link is refused: ${refused.status()}`);
      await page.close();
    } finally {
      await fresh.close();
    }
  });
});

/** An HS256 JWT over `claims` with the deployment's capability secret, as the functions sign. */
function capabilityToken(claims) {
  const part = (o) => Buffer.from(JSON.stringify(o)).toString('base64url');
  const signed = `${part({ alg: 'HS256', typ: 'JWT' })}.${part(claims)}`;
  return `${signed}.${crypto.createHmac('sha256', CAPABILITY_SECRET).update(signed).digest('base64url')}`;
}

/** A reference manager token for `email` whose `exp` is `offset` seconds from now. */
function managerToken(email, offset) {
  const now = Math.floor(Date.now() / 1000);
  return capabilityToken({ sub: email, aud: 'assetgen:refs', iat: now - 60, exp: now + offset });
}

/** Every reference library call the page sends to the relay, with whether it carried a bearer. */
function recordLibraryCalls(page) {
  const calls = [];
  page.on('request', (r) => {
    const url = new URL(r.url());
    if (url.origin === origin(topology.relay) && url.pathname.startsWith('/v1/refs') && !url.searchParams.has('sig')) {
      calls.push({ method: r.method(), path: url.pathname, bearer: /^Bearer /.test(r.headers().authorization || '') });
    }
  });
  return calls;
}

describe('reference manager on the cloud topology (OIDC)', () => {
  let files;

  before(async () => {
    files = await mkdtemp(path.join(os.tmpdir(), 'assetgen-cloud-refs-'));
  });

  after(async () => {
    await rm(files, { recursive: true, force: true });
  });

  test('without a token the page says how to sign in, instead of failing on every button', async () => {
    const page = await openPage(browser, `${topology.relay}/refs`);
    await page.waitForSelector('#sign-in:not([hidden])');
    assert.equal(await page.isHidden('#manager'), true, 'no controls that can only fail');
    assert.equal(await page.textContent('#sign-in-title'), 'Sign in to manage references');
    assert.match(await page.textContent('#sign-in'), /Assets › Open reference manager/);
    assert.match(await page.textContent('#sign-in'), /assetgen refs/);
    assert.deepEqual(page.errors, []);
    await screenshot(page, 'cloud-refs-sign-in.png');
    await page.close();
  });

  test('the manager link adds a reference, lists it, and a batch that uses it renders', async () => {
    // Only a signed-in user gets a link, and a manager token cannot mint another.
    const unsigned = await topology.request('POST', `${topology.submit}/v1/refs/manager-token`);
    assert.equal(unsigned.status, 401, unsigned.text);
    const issued = await topology.request('POST', `${topology.submit}/v1/refs/manager-token`, { user: 'owner' });
    assert.equal(issued.status, 200, issued.text);
    const { token, page: link } = issued.json;
    assert.equal(link, `${topology.relay}/refs#token=${token}`, 'the relay serves the page; the token is in the fragment');
    const renewed = await topology.request('POST', `${topology.submit}/v1/refs/manager-token`, { token });
    assert.equal(renewed.status, 401, `a manager token is no sign-in: ${renewed.text}`);

    const image = png([30, 90, 200], 80);
    const sha = crypto.createHash('sha256').update(image).digest('hex');
    const file = path.join(files, 'brand-blue.png');
    await writeFile(file, image);

    const page = await openPage(browser, 'about:blank');
    const calls = recordLibraryCalls(page);
    await page.goto(link);
    await page.waitForSelector('body[data-ready="true"]');
    assert.equal(await page.isHidden('#sign-in'), true);
    assert.doesNotMatch(page.url(), /token=/, 'the token leaves the address bar');
    await page.setInputFiles('#file-input', [file]);
    await page.waitForSelector(`#added .ref-card[data-state="stored"][data-sha256="${sha}"]`);
    const card = page.locator(`#library .ref-card[data-sha256="${sha}"]`);
    await card.waitFor();
    const url = await card.locator('img').getAttribute('src');
    assert.match(url, new RegExp(`^${topology.relay}/v1/refs/${sha}\\?sig=`), 'a signed reference link on the relay');
    await page.waitForFunction((s) => {
      const i = document.querySelector(`#library .ref-card[data-sha256="${s}"] img`);
      return i && i.complete && i.naturalWidth === 80;
    }, sha);
    // Tagged as a global reference, saved in the owner's name.
    await page.check(`#pick-${sha}`);
    await page.click('#save-set');
    await page.waitForSelector('#set-list li');
    assert.match(await page.textContent('#set-meta'), new RegExp(`by ${topology.info.users.owner}`));
    for (const path of ['/v1/refs', '/v1/refs/sets/global']) {
      assert.ok(calls.some((c) => c.path === path && c.bearer), `${path} carried the token: ${JSON.stringify(calls)}`);
    }
    assert.ok(calls.every((c) => c.bearer), JSON.stringify(calls));
    // What the page shows is what the library holds, read with the owner's own ID token.
    const listed = await topology.request('GET', `${topology.relay}/v1/refs`, { user: 'owner' });
    assert.ok(listed.json.refs.some((r) => r.sha256 === sha), listed.text);
    const set = await topology.request('GET', `${topology.relay}/v1/refs/sets/global`, { user: 'owner' });
    assert.deepEqual(set.json.refs, [url]);
    assert.deepEqual(page.errors, []);
    await screenshot(page, 'cloud-refs-manager.png', { fullPage: true });

    // The reference in a row: generate fetches it by its link and the row renders on the page.
    const accepted = await topology.submitBatch([{ scene_id: 'REF-001', prompt: 'a mug in the brand blue', variants: 1, refs: [url] }]);
    const progress = await openPage(browser, accepted.links.page);
    await waitForEnd(progress);
    assert.equal(await progress.$eval('#batch-status', (e) => e.dataset.status), 'succeeded');
    assert.deepEqual(await cardStatuses(progress), ['succeeded']);
    assert.equal(await thumbnailsLoaded(progress), 1);
    assert.deepEqual(progress.errors, []);
    await progress.close();

    // The token opens the library only: no batch route takes it, not even its user's own batch.
    const id = accepted.batch_id;
    for (const [method, route] of [['GET', ''], ['POST', '/cancel'], ['POST', '/retry'], ['POST', '/control-token']]) {
      const answer = await topology.request(method, `${topology.submit}/v1/batches/${id}${route}`, { token });
      assert.equal(answer.status, 401, `${method} ${route}: ${answer.text}`);
    }
    const events = await topology.request('GET', `${topology.relay}/v1/batches/${id}/events?access_token=${token}`);
    assert.ok([401, 403].includes(events.status), `events: ${events.status} ${events.text}`);
    await page.close();
  });

  test('the token cannot cancel or retry a running batch, and an expired one leads back to sign-in', async () => {
    const token = managerToken(topology.info.users.owner, 3600);
    // A token made here the way the functions make them works: what follows fails for its expiry only.
    assert.equal((await topology.request('GET', `${topology.relay}/v1/refs`, { token })).status, 200);

    // Four slow rows, two at a time: the last ones wait in the queue, where a cancel would stop them.
    const accepted = await topology.submitBatch(
      Array.from({ length: 4 }, (_, i) => ({ scene_id: `HOLD-00${i + 1}`, prompt: `a slow scene ${i + 1}`, variants: 1, refs: [slow(`manager-hold${i}`, 2500)] })),
    );
    const id = accepted.batch_id;
    const cancel = await topology.request('POST', `${topology.submit}/v1/batches/${id}/cancel`, { token });
    assert.equal(cancel.status, 401, cancel.text);
    const view = await eventually(
      async () => {
        const v = await topology.batch(id);
        return TERMINAL.includes(v.status) ? v : null;
      },
      { what: 'the batch to end', timeout: 60000 },
    );
    assert.equal(view.status, 'succeeded', 'nothing was cancelled');
    assert.equal(view.totals.cancelled ?? 0, 0);

    const expired = managerToken(topology.info.users.owner, -3600);
    const refused = await topology.request('GET', `${topology.relay}/v1/refs`, { token: expired });
    assert.equal(refused.status, 401, refused.text);
    const page = await openPage(browser, `${topology.relay}/refs#token=${expired}`);
    await page.waitForSelector('#sign-in:not([hidden])');
    assert.equal(await page.isHidden('#manager'), true);
    assert.equal(await page.textContent('#sign-in-title'), 'This link no longer signs you in');
    assert.match(await page.textContent('#sign-in-detail'), /expired/);
    assert.match(await page.textContent('#sign-in'), /assetgen refs/);
    assert.deepEqual(page.errors, []);
    await screenshot(page, 'cloud-refs-expired.png');
    await page.close();
  });
});

