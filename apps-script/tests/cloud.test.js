// The Sheet on the cloud topology: submit, generate and relay as three processes with OIDC on, over
// fake-gcs-server and Google's Pub/Sub emulator (`target/debug/topology`, tests/src/topology.rs).
// Its key set signs the users' ID tokens with the audience of the Sheet's OAuth client id; the
// fake ScriptApp.getIdentityToken() hands out the owner's.
'use strict';
const test = require('node:test');
const assert = require('node:assert/strict');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const { spawn } = require('node:child_process');
const { makeWorld, plain, sheetWith, blockFor, ROOT } = require('./fakes');
const { CurlUrlFetch } = require('./curl-fetch');

const REPO = path.resolve(ROOT, '..');
const TOPOLOGY = process.env.ASSETGEN_TOPOLOGY_BIN || path.join(REPO, 'target', 'debug', 'topology');
const HEADERS = ['scene_id', 'prompt', 'variants', 'refs', 'ref_mode', 'aspect_ratio'];
const PNG_MAGIC = Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]);
// Server pieces of issue 9 that come together (batches that belong to their submitter; image links
// signed to load with no header; control tokens). Submit's /openapi.json says whether the functions
// have them (it lists POST /v1/batches/{id}/control-token); where they do not, these subtests run
// and are reported as TODO, naming what is missing; where they do, they must pass.
const SERVER_TODO = { ownership: false, signedLinks: false };
const todo = (piece, what) => (SERVER_TODO[piece] ? {} : { todo: `the functions do not yet ${what}` });

/**
 * Starts the topology with its output in files (this process blocks in curl, so a pipe could fill)
 * and returns its description; it runs until its stdin closes.
 */
async function startTopology(t) {
  assert.ok(fs.existsSync(TOPOLOGY), `${TOPOLOGY} is missing: cargo build -p assetgen-tests --bins (make apps-script-test does)`);
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'assetgen-sheet-cloud-'));
  const out = path.join(dir, 'stdout');
  const err = path.join(dir, 'stderr');
  const [outFd, errFd] = [fs.openSync(out, 'w'), fs.openSync(err, 'w')];
  const child = spawn(TOPOLOGY, ['--env', 'ASSETGEN_MAX_ROWS=12'], {
    env: { ...process.env, RUST_LOG: 'warn' },
    stdio: ['pipe', outFd, errFd],
  });
  fs.closeSync(outFd);
  fs.closeSync(errFd);
  t.after(async () => {
    if (child.exitCode === null) {
      const exited = new Promise((resolve) => child.once('exit', resolve));
      child.stdin.end();
      const timer = setTimeout(() => child.kill('SIGKILL'), 20000);
      await exited;
      clearTimeout(timer);
    }
    fs.rmSync(dir, { recursive: true, force: true });
  });
  // The Pub/Sub emulator is a JVM: give it time on a busy machine.
  const deadline = Date.now() + 120000;
  while (Date.now() < deadline) {
    const line = fs.readFileSync(out, 'utf8').split('\n')[0];
    if (line.trim().startsWith('{') && fs.readFileSync(out, 'utf8').includes('\n')) return JSON.parse(line);
    if (child.exitCode !== null) break;
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`the topology did not start:\n${fs.readFileSync(err, 'utf8').slice(-4000)}`);
}

test('the Sheet on the cloud topology: 12 rows, one invalid, fixed, dry run, followed to the end', async (t) => {
  const topo = await startTopology(t);
  const http = new CurlUrlFetch();
  const api = JSON.parse(http.fetch(`${topo.submit}/openapi.json`, { muteHttpExceptions: true }).getContentText());
  if ('/v1/batches/{id}/control-token' in api.paths) {
    Object.keys(SERVER_TODO).forEach((k) => { SERVER_TODO[k] = true; });
  }
  const rows = Array.from({ length: 12 }, (_, i) => ({
    scene_id: `CLOUD-${String(i + 1).padStart(3, '0')}`,
    prompt: `a ceramic mug in the cloud, angle ${i + 1}`,
    variants: (i % 3) + 1,
  }));
  const sheet = sheetWith(HEADERS, rows);
  sheet.cell(4, 1).value = 'CLOUD 003'; // a space: the server refuses it
  const w = makeWorld({ sheets: [sheet], http, token: () => topo.tokens.owner, email: topo.users.owner, realSleepScale: 0.05 });
  assert.equal(w.gs.saveSettings({ serviceUrl: topo.submit, defaultRunMode: 'dry_run', maxRows: 12 }).ok, true);

  sheet.select('A2:F13');
  const sentBefore = http.requests.length;
  w.gs.generateDryRun();
  assert.equal(http.requests.length, sentBefore, 'nothing sent while a row is invalid');
  assert.deepEqual(plain(w.ui.sidebars[0].data().problems).map((p) => [p.row, p.column]), [[4, 'scene_id']]);

  sheet.cell(4, 1).value = 'CLOUD-003';
  w.gs.generateDryRun();
  assert.deepEqual(w.ui.alerts, [], JSON.stringify(w.ui.alerts));
  const submits = http.requests.filter((r) => r.method === 'POST' && r.url === `${topo.submit}/v1/batches`);
  assert.equal(submits.length, 1);
  assert.equal(submits[0].headers.Authorization, `Bearer ${topo.tokens.owner}`);
  const batchId = sheet.table()[0].batch_id;
  assert.match(batchId, /^[0-9a-f-]{36}$/);

  // A colleague's trigger in the same Sheet leaves the owner's batch (and trigger) alone.
  w.user.email = topo.users.other;
  const before = http.requests.length;
  w.gs.followBatches();
  assert.equal(http.requests.length, before);
  w.user.email = topo.users.owner;
  assert.equal(w.scriptApp.getProjectTriggers().length, 1);

  let runs = 0;
  while (w.scriptApp.triggers.length > 0 && runs++ < 30) {
    w.gs.followBatches();
    blockFor(300);
  }
  assert.equal(w.scriptApp.triggers.length, 0, `the trigger deleted itself (${runs} runs)`);
  const written = sheet.table();
  for (const r of written) {
    assert.equal(r.status, 'succeeded', `${r.scene_id}: ${r.error}`);
    assert.equal(r['images.links'].length, ((Number(r.scene_id.slice(-3)) - 1) % 3) + 1);
  }
  const links = written.flatMap((r) => r['images.links']);
  assert.equal(links.length, 24);

  await t.test('the colleague is not shown the owner\'s batch', todo('ownership', 'keep a batch to its submitter'), () => {
    const theirs = http.fetch(`${topo.submit}/v1/batches/${batchId}`, { headers: { Authorization: `Bearer ${topo.tokens.other}` }, muteHttpExceptions: true });
    assert.equal(theirs.getResponseCode(), 404, 'a batch belongs to its submitter');
  });

  await t.test('every image link loads with no header and is a PNG', todo('signedLinks', 'sign image links'), () => {
    for (const link of links) {
      const res = http.fetch(link, { muteHttpExceptions: true });
      assert.equal(res.getResponseCode(), 200, `${link}: ${res.getContentText().slice(0, 200)}`);
      assert.ok(res.bytes.subarray(0, 8).equals(PNG_MAGIC), `${link} is a PNG`);
    }
  });

  await t.test('Open reference manager opens the relay\'s /refs with a token that works the library only', () => {
    w.gs.openReferenceManager();
    const link = w.ui.dialogs.at(-1).html.data().url;
    const [page, token] = link.split('#token=');
    assert.equal(page, `${topo.relay}/refs`, link);
    assert.ok(token, 'the token rides in the fragment');
    const bearer = { Authorization: `Bearer ${token}` };
    const library = http.fetch(`${topo.relay}/v1/refs`, { headers: bearer, muteHttpExceptions: true });
    assert.equal(library.getResponseCode(), 200, library.getContentText());
    const cancel = http.fetch(`${topo.submit}/v1/batches/${batchId}/cancel`, { method: 'post', headers: bearer, muteHttpExceptions: true });
    assert.equal(cancel.getResponseCode(), 401, 'it opens no batch');
  });
});
