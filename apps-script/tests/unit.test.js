// Unit tests: the .gs files in a vm context with fakes of the Apps Script services and an
// in-memory stand-in for the service's HTTP contract.
'use strict';
const test = require('node:test');
const assert = require('node:assert/strict');
const { makeWorld, plain, sheetWith, FakeSheet } = require('./fakes');
const { FakeService, problem, BULK_PRICE } = require('./fake-service');

const HEADERS = ['scene_id', 'prompt', 'variants', 'refs', 'ref_mode', 'aspect_ratio'];

function scenes(n, extra = {}) {
  return Array.from({ length: n }, (_, i) => ({
    scene_id: `HERO-${String(i + 1).padStart(3, '0')}`,
    prompt: `a ceramic mug, shot ${i + 1}`,
    variants: (i % 3) + 1,
    ...extra,
  }));
}

/** A world with settings filled in, one sheet and the fake service behind UrlFetchApp. */
function world({ rows = scenes(3), headers = HEADERS, service = new FakeService(), settings = true, ...rest } = {}) {
  const sheet = sheetWith(headers, rows);
  const w = makeWorld({ sheets: [sheet], http: service.handler(), ...rest });
  if (settings) {
    const saved = w.gs.saveSettings({ serviceUrl: 'https://assetgen.test/', defaultRunMode: 'dry_run', maxRows: 10 });
    assert.equal(saved.ok, true, JSON.stringify(saved));
  }
  return { ...w, sheet, service };
}

function sidebarProblems(w) {
  assert.equal(w.ui.sidebars.length, 1, 'one sidebar with every problem');
  return w.ui.sidebars[0].data().problems;
}

function submits(w) {
  return w.service.requests.filter((r) => r.method === 'POST' && r.url.endsWith('/v1/batches'));
}

test('onOpen adds the Assets menu, and every item runs a function that exists', () => {
  const w = world();
  w.gs.onOpen();
  const menu = w.ui.menus[0];
  assert.equal(menu.name, 'Assets');
  assert.deepEqual(menu.items.map((i) => i.caption), [
    'Generate selected rows (dry run)', 'Generate selected rows (live)', 'Generate selected rows (bulk: half price, within 24 h)',
    'Estimate cost', 'Open progress page',
    'Retry failed rows', 'Cancel batch', 'Open reference manager', 'Settings',
  ]);
  for (const item of menu.items) assert.equal(typeof w.gs[item.fn], 'function', item.fn);
});

test('columns are found by header name, in any order and spelling; missing output columns are added', () => {
  const headers = ['Notes', 'PROMPT', 'Aspect Ratio', 'status', 'Scene ID', 'variants', 'ref-mode', 'refs'];
  const w = world({ headers, rows: [{ 'Scene ID': 'A-1', PROMPT: 'a cat', variants: 2, 'Aspect Ratio': '16:9', Notes: 'x', 'ref-mode': 'style_and_composition' }] });
  w.sheet.select('A2:H2');
  w.gs.generateDryRun();
  const sent = JSON.parse(submits(w)[0].payload);
  assert.deepEqual(sent.rows, [{ scene_id: 'A-1', prompt: 'a cat', variants: 2, refs: [], ref_mode: 'style_and_composition', aspect_ratio: '16:9' }]);
  const header = w.sheet.table.call(w.sheet) && w.sheet.cells[0].map((c) => c.value);
  assert.deepEqual(header, [...headers, 'preview', 'images', 'error', 'batch_id', 'cost'], 'status kept where it was, the others added once');
  w.sheet.select('A2:H2');
  w.gs.ensureOutputColumns_(w.sheet);
  assert.equal(w.sheet.cells[0].length, headers.length + 5, 'not added twice');
});

test('a sheet with only scene_id and prompt columns sends the defaults', () => {
  const w = world({ headers: ['scene_id', 'prompt'], rows: [{ scene_id: 'A', prompt: 'a cat' }] });
  w.sheet.select('A2:B2');
  w.gs.generateDryRun();
  assert.equal(w.ui.sidebars.length, 0, JSON.stringify(w.ui.sidebars.map((s) => s.data())));
  assert.deepEqual(JSON.parse(submits(w)[0].payload).rows, [{ scene_id: 'A', prompt: 'a cat', variants: 1, refs: [], ref_mode: 'style_only' }]);
});

test('a sheet without a prompt column says so and sends nothing', () => {
  const w = world({ headers: ['scene_id', 'variants'], rows: [{ scene_id: 'A', variants: 1 }] });
  w.sheet.select('A2:B2');
  w.gs.generateDryRun();
  const problems = sidebarProblems(w);
  assert.deepEqual(plain(problems.map((p) => [p.row, p.column])), [[1, 'prompt']]);
  assert.equal(w.service.requests.length, 0);
});

test('blank rows in a selection are skipped, and several ranges make one selection', () => {
  const rows = [...scenes(2), {}, {}, ...scenes(5).slice(2)];
  const w = world({ rows });
  w.sheet.select('A2:F4', 'B6:C7', [5, 5]);
  w.gs.generateDryRun();
  const sent = JSON.parse(submits(w)[0].payload);
  assert.deepEqual(sent.rows.map((r) => r.scene_id), ['HERO-001', 'HERO-002', 'HERO-003', 'HERO-004']);
  const t = w.sheet.table();
  assert.deepEqual(t.map((r) => r.status), ['queued', 'queued', '', '', 'queued', 'queued', '']);
});

test('every invalid cell is listed in one sidebar with row, column, what is wrong and the fix; nothing is sent', () => {
  const rows = [
    { scene_id: 'OK-1', prompt: 'fine', variants: 1 },
    { scene_id: 'bad id', prompt: '   ', variants: 4 },
    { scene_id: '.hidden', prompt: 'p', variants: 'two', ref_mode: 'collage', aspect_ratio: '7:5' },
    { scene_id: 'ok-1', prompt: 'dup', refs: 'http://example.com/a.png|https://127.0.0.1/x.png|ftp://x/y|gs://bucket' },
    { scene_id: 'X'.repeat(65), prompt: 'bell\u0007', variants: 2.5, refs: 'file:///etc/passwd|https://user:pw@example.com/a.png' },
    { scene_id: 'R', prompt: 'p', refs: Array.from({ length: 7 }, (_, i) => `https://example.com/${i}.png`).join('\n') },
    { scene_id: 'L', prompt: 'x'.repeat(4001), refs: 'https://169.254.169.254/computeMetadata/v1/|https://metadata.google.internal/x|https://[::1]/a|https://2130706433/a' },
  ];
  const w = world({ rows });
  w.sheet.select('A2:F8');
  w.gs.generateDryRun();
  assert.equal(w.service.requests.length, 0, 'nothing is sent while any row is invalid');
  const problems = plain(sidebarProblems(w));
  const got = problems.map((p) => `${p.row} ${p.column}: ${p.message}`);
  assert.deepEqual(got, [
    '3 scene_id: scene_id "bad id" contains a space; use letters, digits, "-", "_" or ".".',
    '3 prompt: prompt is empty.',
    '3 variants: variants is 4; ask for 1 to 3.',
    '4 scene_id: scene_id ".hidden" starts with ".".',
    '4 variants: variants "two" is not a whole number; ask for 1 to 3.',
    '4 ref_mode: ref_mode "collage" is not style_only or style_and_composition.',
    '4 aspect_ratio: aspect_ratio "7:5" is not supported.',
    '5 scene_id: scene_id "ok-1" is already used by row 2.',
    '5 refs: reference "http://example.com/a.png" uses http://; use https://.',
    '5 refs: reference "https://127.0.0.1/x.png" points at a private or internal address.',
    '5 refs: reference "ftp://x/y" has scheme "ftp"; use https:// or gs://.',
    '5 refs: reference "gs://bucket" must look like gs://bucket/object.',
    `6 scene_id: scene_id is 65 characters long; the limit is 64.`,
    '6 prompt: prompt contains control characters (invisible characters pasted with the text).',
    '6 variants: variants "2.5" is not a whole number; ask for 1 to 3.',
    '6 refs: reference "file:///etc/passwd" is a local file; upload it and use its https:// URL.',
    '6 refs: reference "https://user:pw@example.com/a.png" carries credentials; use a public URL.',
    '7 refs: 7 references; the limit is 6.',
    '8 prompt: prompt is 4001 characters long; the limit is 4000.',
    '8 refs: reference "https://169.254.169.254/computeMetadata/v1/" points at a private or internal address.',
    '8 refs: reference "https://metadata.google.internal/x" points at a private or internal address.',
    '8 refs: reference "https://[::1]/a" points at a private or internal address.',
    '8 refs: reference "https://2130706433/a" is not in the accepted form: a host name of ASCII letters, digits and single hyphens, an optional port, then a path of printable ASCII (percent-encode the rest).',
  ]);
  assert.ok(problems.every((p) => p.fix.length > 10), 'every problem says how to fix it');
  assert.equal(problems[0].fix, "Use 1–64 letters, digits, '-', '_' or '.', not starting with '.'.");
  // The sidebar is the real Problems.html with the data inlined safely.
  const html = w.ui.sidebars[0].getContent();
  assert.ok(!/<\/script>.*bad id/.test(html));
});

test('a cell that breaks out of a script element is shown as text, not run', () => {
  const w = world({ rows: [{ scene_id: '</script><script>alert(1)</script>', prompt: 'p' }] });
  w.sheet.select('A2:F2');
  w.gs.generateDryRun();
  const html = w.ui.sidebars[0].getContent();
  assert.equal((html.match(/<\/script>/g) || []).length, 1, 'only the page\'s own closing tag');
  assert.match(plain(sidebarProblems(w))[0].message, /<\/script><script>alert\(1\)<\/script>/);
});

test('cells are sent as they read; only what Sheets itself changed is read back', () => {
  const time = new Date(2026, 0, 1, 16, 9, 0); // Sheets turns a typed 16:9 into a time
  const rows = [
    { scene_id: 'hero_shot.v2', prompt: ' two\nlines\t', variants: '3', refs: 'https://example.com/a.png||https://example.com/a.png\ngs://bucket/refs/aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa|', ref_mode: 'style_and_composition', aspect_ratio: time },
    { scene_id: 'B', prompt: 'ééééé', variants: '', ref_mode: '', aspect_ratio: '9:16' },
    { scene_id: 'C', prompt: '\ufeff', variants: 2.0, refs: 'https://[2606:4700::1]/a.png|https://8.8.8.8/b.png|https://example.com./c.png' },
  ];
  const w = world({ rows });
  w.sheet.select('A2:F4');
  w.gs.generateDryRun();
  assert.equal(w.ui.sidebars.length, 0, JSON.stringify(w.ui.sidebars.map((s) => s.data())));
  assert.deepEqual(JSON.parse(submits(w)[0].payload).rows, [
    { scene_id: 'hero_shot.v2', prompt: ' two\nlines\t', variants: 3, refs: ['https://example.com/a.png', 'https://example.com/a.png', 'gs://bucket/refs/aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa'], ref_mode: 'style_and_composition', aspect_ratio: '16:9' },
    { scene_id: 'B', prompt: 'ééééé', variants: 1, refs: [], ref_mode: 'style_only', aspect_ratio: '9:16' },
    // U+FEFF is not white space to Rust's trim (JavaScript's trim removes it): the server takes it.
    { scene_id: 'C', prompt: '\ufeff', variants: 2, refs: ['https://[2606:4700::1]/a.png', 'https://8.8.8.8/b.png', 'https://example.com./c.png'], ref_mode: 'style_only' },
  ]);
});

test('a person\'s spellings the wire does not take are refused with the one it does, never rewritten', () => {
  const rows = [
    { scene_id: ' hero_shot.v2 ', prompt: 'p', ref_mode: 'Composition', aspect_ratio: ' 9 : 16 ' },
    { scene_id: 'B', prompt: '\u3000\u00a0', variants: ' 2', ref_mode: 'Style-Only', aspect_ratio: '16 : 9' },
    { scene_id: 'C', prompt: 'p', ref_mode: ' ', refs: 'https://example.com/a.png | https://example.com/b.png' },
  ];
  const w = world({ rows });
  w.sheet.select('A2:F4');
  w.gs.generateDryRun();
  assert.equal(w.service.requests.length, 0, 'nothing is sent');
  const problems = plain(sidebarProblems(w));
  assert.deepEqual(problems.map((p) => `${p.row} ${p.column}: ${p.message}`), [
    '2 scene_id: scene_id " hero_shot.v2 " has spaces around it; remove them.',
    '2 ref_mode: ref_mode "Composition" is not style_only or style_and_composition.',
    '2 aspect_ratio: aspect_ratio " 9 : 16 " is not supported.',
    '3 prompt: prompt is empty.',
    '3 variants: variants " 2" is not a whole number; ask for 1 to 3.',
    '3 ref_mode: ref_mode "Style-Only" is not style_only or style_and_composition.',
    '3 aspect_ratio: aspect_ratio "16 : 9" is not supported.',
    '4 refs: reference "https://example.com/a.png " has spaces around it.',
    '4 refs: reference " https://example.com/b.png" has spaces around it.',
    '4 ref_mode: ref_mode " " is not style_only or style_and_composition.',
  ]);
  assert.equal(problems[1].fix, 'Use style_only or style_and_composition.');
  assert.equal(problems[2].fix, 'Use one of 1:1, 2:3, 3:2, 3:4, 4:3, 4:5, 5:4, 9:16, 16:9, 21:9.');
});

test('more rows than one batch takes: a message naming the limit, nothing sent', () => {
  const w = world({ rows: scenes(11) });
  w.sheet.select('A2:F12');
  w.gs.generateDryRun();
  const problems = plain(sidebarProblems(w));
  assert.equal(problems.length, 1);
  assert.equal(problems[0].message, '11 rows are selected; the service accepts at most 10 rows in one batch.');
  assert.match(problems[0].fix, /Select at most 10 rows/);
  assert.equal(w.service.requests.length, 0);
});

test('the server\'s own batch limit (413) is shown as a problem, not a stack trace', () => {
  const w = world({ rows: scenes(3) });
  w.service.scripted.push(problem(413, 'TOO_MANY_ROWS', 'the batch has 3 rows; the limit is 2'));
  w.sheet.select('A2:F4');
  w.gs.generateDryRun();
  const problems = plain(sidebarProblems(w));
  assert.deepEqual(problems.map((p) => [p.row, p.message]), [[null, 'the batch has 3 rows; the limit is 2']]);
  assert.equal(w.sheet.table()[0].status, '', 'nothing is marked queued');
});

test('a server 422 is shown field by field, mapped back to sheet rows', () => {
  const w = world({ rows: [...scenes(1), {}, ...scenes(3).slice(1)] });
  w.service.scripted.push(problem(422, 'INVALID_REF_URL', 'x (and 1 more problems)', {
    errors: [
      { code: 'INVALID_REF_URL', row: 1, scene_id: 'HERO-002', field: 'rows[1].refs[0]', detail: 'reference "https://evil.test/a" points at a private or internal address' },
      { code: 'INVALID_VARIANTS', row: 2, field: 'rows[2].variants', detail: 'variants is 9; ask for 1 to 3' },
    ],
  }));
  w.sheet.select('A2:F5');
  w.gs.generateDryRun();
  const problems = plain(sidebarProblems(w));
  assert.deepEqual(problems.map((p) => [p.row, p.column, p.message]), [
    [4, 'refs', 'reference "https://evil.test/a" points at a private or internal address'],
    [5, 'variants', 'variants is 9; ask for 1 to 3'],
  ]);
  assert.equal(problems[1].fix, 'Ask for 1, 2 or 3 variants.');
});

test('the exact request: one POST /v1/batches with the identity token, an Idempotency-Key, JSON and muted HTTP errors', () => {
  const w = world({ rows: scenes(2), token: () => 'eyJ.token.sig' });
  w.sheet.select('A2:F3');
  w.gs.generateDryRun();
  assert.equal(w.service.requests.length, 1);
  const req = w.service.requests[0];
  assert.equal(req.method, 'POST');
  assert.equal(req.url, 'https://assetgen.test/v1/batches');
  assert.equal(req.headers.Authorization, 'Bearer eyJ.token.sig');
  assert.match(req.headers['Idempotency-Key'], /^[0-9a-f-]{36}$/);
  assert.equal(req.contentType, 'application/json');
  assert.equal(req.muteHttpExceptions, true);
  assert.deepEqual(JSON.parse(req.payload), {
    rows: [
      { scene_id: 'HERO-001', prompt: 'a ceramic mug, shot 1', variants: 1, refs: [], ref_mode: 'style_only' },
      { scene_id: 'HERO-002', prompt: 'a ceramic mug, shot 2', variants: 2, refs: [], ref_mode: 'style_only' },
    ],
    global_refs: [],
    run_mode: 'dry_run',
  });
  const id = [...w.service.batches.keys()][0];
  assert.deepEqual(w.sheet.table().map((r) => [r.status, r.batch_id]), [['queued', id], ['queued', id]]);
  assert.equal(w.scriptApp.triggers.length, 1, 'a trigger follows the batch');
  assert.equal(w.scriptApp.triggers[0].spec.everyMinutes, 1);
});

test('a retried fetch reuses the click\'s Idempotency-Key, with backoff, and submits once', () => {
  const w = world({ rows: scenes(2) });
  w.service.scripted.push({ throw: 'Address unavailable: https://assetgen.test/v1/batches' });
  w.service.scripted.push(problem(503, 'QUEUE_UNAVAILABLE', 'try later'));
  w.sheet.select('A2:F3');
  w.gs.generateDryRun();
  const reqs = submits(w);
  assert.equal(reqs.length, 3);
  assert.equal(new Set(reqs.map((r) => r.headers['Idempotency-Key'])).size, 1, 'one key for the click');
  assert.equal(new Set(reqs.map((r) => r.payload)).size, 1);
  assert.equal(w.service.batches.size, 1);
  const sleeps = w.clock.sleeps;
  assert.equal(sleeps.length, 2);
  assert.ok(sleeps[0] >= 1000 && sleeps[1] >= 2000 && sleeps[1] > sleeps[0], `exponential: ${sleeps}`);
});

test('a click whose run died after the POST sends the same key again; a double click submits once', () => {
  const w = world({ rows: scenes(2) });
  w.sheet.select('A2:F3');
  w.gs.ensureOutputColumns_(w.sheet);
  w.sheet.writes = 0;
  w.sheet.killAfter = 0; // the run dies on its first sheet write, after the server accepted the batch
  w.gs.generateDryRun();
  assert.match(w.ui.alerts[0].text, /^That did not finish: writing status: Exceeded maximum execution time/);
  w.sheet.killAfter = Infinity;
  w.gs.generateDryRun();
  const reqs = submits(w);
  assert.equal(reqs.length, 2);
  assert.equal(reqs[0].headers['Idempotency-Key'], reqs[1].headers['Idempotency-Key']);
  assert.equal(w.service.batches.size, 1, 'the server answered the first batch again');
  // The second click of a double click finds the rows queued in a followed batch.
  w.gs.generateDryRun();
  assert.equal(submits(w).length, 2, 'nothing sent again');
  assert.match(plain(sidebarProblems(w))[0].message, /still queued in batch/);
});

test('a click while another submit holds the lock waits, then says so and sends nothing', () => {
  const w = world();
  w.locks.document.heldElsewhere = true;
  w.sheet.select('A2:F4');
  w.gs.generateDryRun();
  assert.equal(w.service.requests.length, 0);
  assert.match(w.ui.alerts[0].text, /Another submit/);
});

test('live: estimate, then CONFIRM gates the submit', () => {
  const w = world({ rows: scenes(3) });
  w.sheet.select('A2:F4');
  // Cancel, then a wrong word: nothing is submitted.
  w.ui.promptAnswers.push({ button: 'CANCEL', text: 'CONFIRM' }, { button: 'OK', text: 'confirm' }, { button: 'OK', text: ' CONFIRM ' });
  w.gs.generateLive();
  w.gs.generateLive();
  assert.equal(submits(w).length, 0);
  assert.equal(w.service.requests.filter((r) => r.url.endsWith('/v1/estimate')).length, 2);
  assert.match(w.ui.alerts.at(-1).text, /Not confirmed: nothing was sent/);
  const prompt = w.ui.prompts[0].text;
  assert.match(prompt, /3 rows, 6 images: \$0\.234\./);
  assert.match(prompt, /Budget left today: \$10\.00 of \$10\.00; after this batch \$9\.766\./);
  assert.match(prompt, /resets at 00:00 UTC \(2026-11-29 01:00 Europe\/Paris, in 15 h 0 min\)/);
  assert.match(prompt, /Type CONFIRM/);
  w.gs.generateLive();
  const sent = submits(w);
  assert.equal(sent.length, 1);
  assert.equal(JSON.parse(sent[0].payload).run_mode, 'live');
  const estimateBody = JSON.parse(w.service.requests.find((r) => r.url.endsWith('/v1/estimate')).payload);
  assert.deepEqual(estimateBody, JSON.parse(sent[0].payload), 'the estimate priced exactly what was sent');
});

test('live over the budget: the estimate says so and no CONFIRM is asked', () => {
  const w = world({ rows: scenes(3), service: new FakeService({ limitUsd: 0.1 }) });
  w.sheet.select('A2:F4');
  w.gs.generateLive();
  assert.equal(w.ui.prompts.length, 0);
  assert.equal(submits(w).length, 0);
  assert.match(w.ui.alerts[0].text, /^Over today's budget: \$0\.10 left, resets at 00:00 UTC/);
});

test('a 402 at submit is shown readably: what is left and when it resets', () => {
  const w = world({ rows: scenes(3) });
  w.sheet.select('A2:F4');
  w.ui.promptAnswers.push({ button: 'OK', text: 'CONFIRM' });
  // Someone else spent the budget between the estimate and the submit.
  w.service.scripted.push(w.service.estimate({ rows: scenes(3), run_mode: 'live' }));
  w.service.limitUsd = 0.05;
  w.gs.generateLive();
  const alert = w.ui.alerts.at(-1).text;
  assert.match(alert, /^Over today's budget: \$0\.05 left, resets at 00:00 UTC \(2026-11-29 01:00 Europe\/Paris/);
  assert.doesNotMatch(alert, /at .*\(.*\.js|Error:/, 'no stack trace');
  assert.equal(w.sheet.table()[0].status, '');
});

test('other problems read as title, detail and advice; unreachable service names the URL', () => {
  const w = world({ rows: scenes(1) });
  w.sheet.select('A2:F2');
  w.service.scripted.push(problem(401, 'UNAUTHENTICATED', 'token audience is not accepted'));
  w.gs.generateDryRun();
  assert.match(w.ui.alerts[0].text, /token audience is not accepted\n\nadvice for UNAUTHENTICATED\n\nThe service must accept this script's OAuth client id/);
  for (let i = 0; i < 4; i++) w.service.scripted.push({ throw: 'DNS error: https://assetgen.test/v1/batches' });
  w.gs.generateDryRun();
  assert.match(w.ui.alerts[1].text, /The service could not be reached\nhttps:\/\/assetgen.test did not answer \(DNS error/);
  w.service.scripted.push({ status: 502, body: '<html>Bad gateway</html>', headers: { 'Content-Type': 'text/html' } });
  w.service.scripted.push({ status: 500, body: '<html>oops</html>', headers: { 'Content-Type': 'text/html' } });
  w.gs.generateDryRun();
  assert.match(w.ui.alerts[2].text, /^The service answered HTTP 500\n<html>oops/);
});

test('a missing setting opens the Settings dialog instead of failing; saving checks every field', () => {
  const w = world({ settings: false });
  w.sheet.select('A2:F4');
  w.gs.generateDryRun();
  assert.equal(w.service.requests.length, 0);
  assert.equal(w.ui.dialogs.length, 1);
  assert.equal(w.ui.dialogs[0].title, 'Assets: settings');
  assert.match(w.ui.dialogs[0].html.data().notice, /service URL first/);
  const bad = w.gs.saveSettings({ serviceUrl: 'not a url', refsUrl: 'ftp://x', defaultRunMode: 'maybe', maxRows: '0' });
  assert.deepEqual(Object.keys(plain(bad.errors)).sort(), ['defaultRunMode', 'maxRows', 'refsUrl', 'serviceUrl']);
  assert.equal(w.props.document.getProperty('assetgen.serviceUrl'), null, 'nothing stored when a field is wrong');
  assert.equal(w.gs.saveSettings({ serviceUrl: 'https://svc.test//', defaultRunMode: 'live', maxRows: '25' }).ok, true);
  assert.deepEqual(plain(w.gs.getSettings_()), { serviceUrl: 'https://svc.test', refsUrl: 'https://svc.test/refs', defaultRunMode: 'live', maxRows: 25 });
  w.service.managerTokens = false; // a service without reference manager tokens: the bare page
  w.gs.openReferenceManager();
  assert.equal(w.ui.dialogs[1].html.data().url, 'https://svc.test/refs');
});

test('Open reference manager opens /refs signed in by a token in the fragment, or says why not', () => {
  const w = world();
  w.gs.openReferenceManager();
  const asked = w.service.requests.filter((r) => r.url === 'https://assetgen.test/v1/refs/manager-token');
  assert.equal(asked.length, 1);
  assert.equal(asked[0].method.toLowerCase(), 'post');
  assert.equal(asked[0].headers.Authorization, 'Bearer test-identity-token', "in the user's own name");
  assert.equal(w.ui.dialogs.length, 1);
  assert.equal(w.ui.dialogs[0].title, 'Assets: reference manager');
  assert.equal(w.ui.dialogs[0].html.data().url, 'https://assetgen.test/refs#token=refs-token');

  // Refused (not on the allow-list): the reason, and no link that would only fail.
  w.service.scripted.push({ status: 403, body: { code: 'FORBIDDEN', status: 403, title: 'Forbidden', detail: 'lead@studio.test is not on the allow-list', advice: '' } });
  w.gs.openReferenceManager();
  assert.equal(w.ui.dialogs.length, 1, 'no second dialog');
  assert.match(w.ui.alerts.at(-1).text, /not on the allow-list/);
});

/** Submits `n` rows (dry run) and returns the batch id. */
function submitted(w, n) {
  w.sheet.select(`A2:F${n + 1}`);
  w.gs.generateDryRun();
  return [...w.service.batches.keys()].at(-1);
}

test('the trigger writes status, cost, error advice, =IMAGE() and links, then deletes itself', () => {
  const w = world({ rows: scenes(3) });
  w.service.failScene.add('HERO-002');
  const id = submitted(w, 3);
  w.gs.followBatches();
  const t = w.sheet.table();
  assert.deepEqual(t.map((r) => r.status), ['succeeded', 'failed', 'succeeded']);
  const img = (scene, v) => `https://assetgen.test/v1/images/${id}/${scene}/${v}?sig=abc"def`;
  assert.equal(t[0]['preview.formula'], `=IMAGE("https://assetgen.test/v1/images/${id}/HERO-001/1?sig=abc""def")`);
  assert.equal(t[0].images, 'v1');
  assert.deepEqual(t[2]['images.links'], [img('HERO-003', 1), img('HERO-003', 2), img('HERO-003', 3)]);
  assert.equal(t[2].images, 'v1 · v2 · v3');
  assert.equal(t[1].error, 'CONTENT_BLOCKED: the model blocked this prompt — Rephrase the prompt.');
  assert.equal(t[1].images, '');
  assert.equal(t[0].cost, 0);
  assert.equal(w.sheet.peek(2, HEADERS.length + 6).format, '$0.000#', 'tenths of a cent, and $0.0195 for a bulk image');
  assert.equal(w.scriptApp.triggers.length, 0, 'the trigger deleted itself');
  assert.equal(w.gs.followedBatches_().length, 0);
  assert.equal(w.locks.script.held, false);
});

test("a notes column gets links to each image's provenance, and a note the user wrote stays", () => {
  const headers = [...HEADERS, 'notes'];
  const rows = scenes(3).map((r, i) => ({ ...r, notes: i === 2 ? 'check the handle colour' : '' }));
  const w = world({ headers, rows });
  w.service.failScene.add('HERO-002');
  const id = submitted(w, 3);
  w.gs.followBatches();
  const t = w.sheet.table();
  assert.deepEqual(t.map((r) => r.status), ['succeeded', 'failed', 'succeeded']);
  assert.equal(t[0].notes, 'how it was made: v1');
  assert.deepEqual(t[0]['notes.links'], [`https://assetgen.test/v1/provenance/${id}/HERO-001/1?sig=abc`]);
  assert.equal(t[1].notes, '', 'no image, no provenance');
  assert.equal(t[2].notes, 'check the handle colour', "the user's note is kept");
  assert.equal(t[1].error, 'CONTENT_BLOCKED: the model blocked this prompt — Rephrase the prompt.', 'errors stay in their column');
});

test('write-back backs off exponentially on Sheets and UrlFetch quota errors', () => {
  const w = world({ rows: scenes(2) });
  submitted(w, 2);
  w.sheet.fail('write', 2, 'Service Spreadsheets failed while accessing document with id fake.');
  w.sheet.fail('read', 1, 'Too many requests: try again later.');
  w.service.scripted.push({ throw: 'Service invoked too many times in a short time: urlfetch. Try Utilities.sleep(1000) between calls.' });
  w.clock.sleeps.length = 0;
  w.gs.followBatches();
  assert.deepEqual(w.sheet.table().map((r) => r.status), ['succeeded', 'succeeded']);
  assert.equal(w.clock.sleeps.length, 4, `slept ${w.clock.sleeps}`);
  const twoWrites = w.clock.sleeps.slice(-2);
  assert.ok(twoWrites[1] > twoWrites[0] && twoWrites[0] >= 1000, `backoff doubles: ${twoWrites}`);
  assert.equal(w.scriptApp.triggers.length, 0);
});

test('a failure that is not a quota is not retried', () => {
  const w = world({ rows: scenes(1) });
  submitted(w, 1);
  w.sheet.fail('write', 1, 'You do not have permission to edit this range (protected).');
  assert.throws(() => w.gs.followBatches(), /writing .*: You do not have permission/);
  assert.equal(w.locks.script.held, false, 'the lock is released');
  assert.equal(w.scriptApp.triggers.length, 1, 'the trigger stays: the next run tries again');
});

test('the follower stops before the 6-minute limit and the next run resumes from what the sheet shows', () => {
  // One row finishes every fourth look: about seven minutes of following, more than one run may take.
  const w = world({ rows: scenes(10), service: new FakeService({ rowsPerGet: 0.25 }), fetchCostMs: 500 });
  const id = submitted(w, 10);
  const started = w.clock.now();
  w.gs.followBatches();
  const ran = w.clock.now() - started;
  assert.ok(ran < 6 * 60 * 1000 && ran > 4 * 60 * 1000, `ran ${ran} ms`);
  const firstRun = w.sheet.table().map((r) => r.status);
  assert.ok(firstRun.filter((s) => s === 'succeeded').length > 0 && firstRun.includes('queued'), firstRun.join());
  assert.equal(w.scriptApp.triggers.length, 1, 'still following');
  w.service.rowsPerGet = 10;
  w.gs.followBatches();
  assert.ok(w.sheet.table().every((r) => r.status === 'succeeded' && r.batch_id === id));
  assert.equal(w.scriptApp.triggers.length, 0);
});

test('a run killed mid-write loses nothing: the next run writes only what is missing', () => {
  const w = world({ rows: scenes(6) });
  submitted(w, 6);
  w.sheet.writes = 0;
  w.sheet.killAfter = 7; // killed in the middle of the second row's cells
  assert.throws(() => w.gs.followBatches(), /Exceeded maximum execution time/);
  const half = w.sheet.table();
  assert.equal(half[0].status, 'succeeded');
  assert.equal(half[2].status, 'queued');
  w.sheet.killAfter = Infinity;
  w.sheet.writes = 0;
  w.gs.followBatches();
  const t = w.sheet.table();
  assert.ok(t.every((r) => r.status === 'succeeded' && r['images.links'].length === r.variants), JSON.stringify(t));
  const rewritten = w.sheet.writes;
  assert.ok(rewritten <= 6 * 5 - 7 + 1, `only the missing cells are written (${rewritten})`);
});

test('rows sorted or moved while the batch runs are found again by scene_id and batch_id', () => {
  const w = world({ rows: scenes(4), service: new FakeService() });
  w.service.manual = true;
  const id = submitted(w, 4);
  w.service.advance(id, 1);
  w.gs.followBatches();
  assert.equal(w.sheet.table()[0].status, 'succeeded');
  // The user sorts by scene_id descending and inserts a row at the top.
  w.sheet.sortRows((a, b) => String(b[0]).localeCompare(String(a[0])));
  w.sheet.insertRowBefore(2);
  w.sheet.cell(2, 1).value = 'HERO-003'; // same scene_id, another batch (never submitted)
  w.sheet.cell(2, 2).value = 'a copy';
  w.service.advance(id, 3);
  w.gs.followBatches();
  const t = w.sheet.table();
  assert.deepEqual(t.map((r) => [r.scene_id, r.status]), [
    ['HERO-003', ''], ['HERO-004', 'succeeded'], ['HERO-003', 'succeeded'], ['HERO-002', 'succeeded'], ['HERO-001', 'succeeded'],
  ]);
  for (const r of t.slice(1)) {
    assert.equal(r['images.links'][0], `https://assetgen.test/v1/images/${id}/${r.scene_id}/1?sig=abc"def`);
  }
  assert.equal(w.scriptApp.triggers.length, 0);
});

test('one trigger follows several batches; only one follower runs at a time', () => {
  const rows = scenes(4);
  const w = world({ rows });
  w.service.manual = true;
  w.sheet.select('A2:F3');
  w.gs.generateDryRun();
  w.sheet.select('A4:F5');
  w.gs.generateDryRun();
  assert.equal(w.scriptApp.triggers.length, 1, 'the second submit found the trigger');
  assert.equal(w.gs.followedBatches_().length, 2);
  w.locks.script.heldElsewhere = true;
  w.gs.followBatches();
  assert.equal(w.service.requests.filter((r) => r.method === 'GET').length, 0, 'a second follower does nothing');
  w.locks.script.heldElsewhere = false;
  for (const id of w.service.batches.keys()) w.service.advance(id, 2);
  w.gs.followBatches();
  assert.ok(w.sheet.table().every((r) => r.status === 'succeeded'));
  assert.equal(w.scriptApp.triggers.length, 0);
});

test('a batch submitted while the follower deletes its trigger gets a trigger again', () => {
  const w = world({ rows: scenes(1) });
  const id = submitted(w, 1);
  w.gs.followBatches();
  assert.equal(w.scriptApp.triggers.length, 0);
  // The race: the follower saw nothing to follow, and a submit adds a batch before the trigger is gone.
  w.props.document.setProperty('assetgen.batch.late', JSON.stringify({ id: 'late', sheetId: 101, submittedAt: 'x' }));
  w.gs.stopFollowing_();
  assert.equal(w.scriptApp.triggers.length, 1);
  assert.ok(id);
});

test('cancel, retry (live: after CONFIRM) and the progress page act on the selected rows\' batch', () => {
  const w = world({ rows: scenes(3) });
  w.service.manual = true;
  const id = submitted(w, 3);
  w.sheet.select('A3:F3');
  w.gs.openProgressPage();
  assert.equal(w.ui.dialogs.at(-1).html.data().url, `https://assetgen.test/b/${id}?access_token=read-${id}#control=ctl-${id}`);
  w.service.controlTokens = false;
  w.gs.openProgressPage();
  assert.equal(w.ui.dialogs.at(-1).html.data().url, `https://assetgen.test/b/${id}`, 'falls back to the page link submit gave');

  w.service.advance(id, 1);
  w.ui.alertAnswers.push('NO');
  w.gs.cancelBatch();
  assert.equal(w.service.requests.filter((r) => r.url.endsWith('/cancel')).length, 0, 'not confirmed');
  w.gs.cancelBatch();
  assert.deepEqual(w.sheet.table().map((r) => r.status), ['succeeded', 'running', 'cancelled'], 'shown at once');
  w.gs.followBatches(); // the row being generated finishes; the queued one stays cancelled
  assert.deepEqual(w.sheet.table().map((r) => r.status), ['succeeded', 'running', 'cancelled']);
  w.service.advance(id, 1);
  w.gs.followBatches();
  assert.deepEqual(w.sheet.table().map((r) => r.status), ['succeeded', 'succeeded', 'cancelled']);
  assert.equal(w.scriptApp.triggers.length, 0);

  // A live batch with a failed row.
  const live = world({ rows: scenes(2) });
  live.service.failScene.add('HERO-002');
  live.sheet.select('A2:F3');
  live.ui.promptAnswers.push({ button: 'OK', text: 'CONFIRM' });
  live.gs.generateLive();
  live.gs.followBatches();
  assert.equal(live.sheet.table()[1].status, 'failed');
  live.sheet.select('A3:F3');
  live.ui.promptAnswers.push({ button: 'OK', text: 'no' });
  live.gs.retryFailedRows();
  assert.equal(live.service.requests.filter((r) => r.url.endsWith('/retry')).length, 0);
  assert.match(live.ui.prompts.at(-1).text, /1 failed rows, 2 images to make again/);
  live.ui.promptAnswers.push({ button: 'OK', text: 'CONFIRM' });
  live.service.manual = true;
  live.gs.retryFailedRows();
  assert.deepEqual(live.sheet.table().map((r) => [r.status, r.error]), [['succeeded', ''], ['queued', '']], 'shown at once');
  assert.equal(live.scriptApp.triggers.length, 1);
  live.service.manual = false;
  live.gs.followBatches();
  assert.deepEqual(live.sheet.table().map((r) => [r.status, r.error]), [['succeeded', ''], ['succeeded', '']]);
});

test('estimate cost shows images, the live price, the budget and its reset; nothing is written', () => {
  const w = world({ rows: scenes(3) });
  w.sheet.select('A2:F4');
  w.gs.estimateCost();
  const text = w.ui.alerts[0].text;
  assert.match(text, /3 rows, 6 images\.\nLive: \$0\.234\. A dry run costs nothing\.\nBulk: \$0\.117 \(half price; Google may take up to 24 hours\)\.\nBudget left today: \$10\.00 of \$10\.00\.\nAfter this batch: \$9\.766\. The budget resets at 00:00 UTC/);
  assert.equal(submits(w).length, 0);
  assert.equal(JSON.parse(w.service.requests[0].payload).run_mode, 'live');
});

test('rows of several batches: actions ask for one batch', () => {
  const w = world({ rows: scenes(2) });
  w.sheet.select('A2:F2');
  w.gs.generateDryRun();
  w.sheet.select('A3:F3');
  w.gs.generateDryRun();
  w.sheet.select('A2:F3');
  w.gs.cancelBatch();
  assert.match(w.ui.alerts.at(-1).text, /belong to 2 batches/);
});

test('other tabs are untouched: a batch writes only into the tab it came from', () => {
  const other = new FakeSheet('Other', 202, [['scene_id', 'prompt', 'batch_id', 'status'], ['HERO-001', 'p', '', '']]);
  const w = world({ rows: scenes(1) });
  w.ss.sheets.push(other);
  submitted(w, 1);
  w.gs.followBatches();
  assert.equal(other.cells[1][3].value, '');
  assert.equal(w.sheet.table()[0].status, 'succeeded');
});

test('showOAuthClientId shows the aud the service must accept, read from the identity token', () => {
  const claims = { iss: 'https://accounts.google.com', aud: '1234-abc.apps.googleusercontent.com', email: 'lead@studio.test', email_verified: true, name: 'Zoë' };
  const token = ['{"alg":"RS256"}', JSON.stringify(claims)].map((p) => Buffer.from(p).toString('base64url')).join('.') + '.sig';
  const w = world({ token: () => token });
  assert.deepEqual(plain(w.gs.showOAuthClientId()), { aud: '1234-abc.apps.googleusercontent.com', email: 'lead@studio.test' });
  assert.match(w.ui.alerts[0].text, /OAuth client id \(aud\): 1234-abc\.apps\.googleusercontent\.com\nEmail: lead@studio\.test \(verified: true\)/);
  assert.match(w.ui.alerts[0].text, /ASSETGEN_OIDC_AUDIENCE/);
});

test('in a shared Sheet each user\'s trigger follows only the batches that user submitted', () => {
  const w = world({ rows: scenes(2) });
  w.service.manual = true;
  const id = submitted(w, 2);
  w.user.email = 'colleague@studio.test';
  w.gs.followBatches();
  assert.equal(w.service.requests.filter((r) => r.method === 'GET').length, 0, 'the colleague cannot read it, so does not ask');
  assert.equal(w.scriptApp.triggers.length, 1, 'and leaves the owner\'s trigger alone');
  assert.deepEqual(w.sheet.table().map((r) => r.status), ['queued', 'queued']);
  assert.equal(w.gs.followedBatches_().length, 1, 'still followed, by its owner');
  w.user.email = 'lead@studio.test';
  w.service.advance(id, 2);
  w.gs.followBatches();
  assert.deepEqual(w.sheet.table().map((r) => r.status), ['succeeded', 'succeeded']);
});

test('the default run mode comes first in the menu', () => {
  const w = world();
  w.gs.saveSettings({ serviceUrl: 'https://assetgen.test', defaultRunMode: 'live', maxRows: 10 });
  w.gs.onOpen();
  assert.deepEqual(w.ui.menus[0].items.slice(0, 3).map((i) => i.fn), ['generateLive', 'generateBulk', 'generateDryRun'], 'bulk next to live');
});

test('Settings: the default run mode can be bulk; the menu\'s first item then submits in bulk after the bulk CONFIRM', () => {
  const w = world({ rows: scenes(2) });
  const refused = w.gs.saveSettings({ serviceUrl: 'https://assetgen.test', defaultRunMode: 'Bulk', maxRows: 10 });
  assert.equal(refused.ok, false, 'one spelling, as the service has');
  assert.equal(refused.errors.defaultRunMode, 'Choose dry_run, live or bulk (half price, results within 24 hours).');
  assert.equal(w.gs.getSettings_().defaultRunMode, 'dry_run', 'nothing stored');
  assert.deepEqual(plain(w.gs.saveSettings({ serviceUrl: 'https://assetgen.test', defaultRunMode: 'bulk', maxRows: 10 })), { ok: true, errors: {} });
  assert.equal(w.props.document.getProperty('assetgen.defaultRunMode'), 'bulk');
  assert.equal(w.gs.getSettings_().defaultRunMode, 'bulk');

  w.gs.onOpen();
  const items = w.ui.menus[0].items;
  assert.deepEqual(items.slice(0, 3).map((i) => i.fn), ['generateBulk', 'generateLive', 'generateDryRun'], 'live next to bulk');
  assert.equal(items[0].caption, 'Generate selected rows (bulk: half price, within 24 h)');

  // The default action: estimated at the bulk price, the bulk CONFIRM; not confirmed, nothing sent.
  w.sheet.select('A2:F3');
  w.ui.promptAnswers.push({ button: 'CANCEL', text: '' });
  w.gs[items[0].fn]();
  assert.equal(w.ui.prompts.length, 1);
  assert.equal(w.ui.prompts[0].title, 'Assets: bulk run');
  assert.match(w.ui.prompts[0].text, /^2 rows, 3 images: \$0\.0585 at the bulk price \(half of live: \$0\.117\)\.\nGoogle runs bulk batches within 24 hours/);
  assert.match(w.ui.prompts[0].text, /Type CONFIRM to send these rows to Google's batch and spend the money\.$/);
  assert.equal(JSON.parse(w.service.requests.find((r) => r.url.endsWith('/v1/estimate')).payload).run_mode, 'bulk');
  assert.equal(submits(w).length, 0);
  assert.match(w.ui.alerts.at(-1).text, /Not confirmed: nothing was sent/);

  // Confirmed: one submit, in bulk, followed as a bulk batch.
  w.ui.promptAnswers.push({ button: 'OK', text: 'CONFIRM' });
  w.service.manual = true;
  w.gs[items[0].fn]();
  assert.equal(w.ui.prompts.length, 2);
  const sent = submits(w);
  assert.equal(sent.length, 1);
  assert.equal(JSON.parse(sent[0].payload).run_mode, 'bulk');
  assert.equal(w.gs.followedBatches_()[0].runMode, 'bulk');

  // A stored value the dialog would refuse (edited by hand) is read as the dry run, never as a paid mode.
  w.props.document.setProperty('assetgen.defaultRunMode', 'everything');
  assert.equal(w.gs.getSettings_().defaultRunMode, 'dry_run');
  w.gs.onOpen();
  assert.equal(w.ui.menus.at(-1).items[0].fn, 'generateDryRun');
});

test('bulk: the estimate at the bulk price and a day\'s wait, then CONFIRM gates the submit', () => {
  const w = world({ rows: scenes(3) });
  w.sheet.select('A2:F4');
  w.ui.promptAnswers.push({ button: 'OK', text: 'confirm' });
  w.gs.generateBulk();
  assert.equal(submits(w).length, 0, 'not confirmed: nothing sent');
  assert.match(w.ui.alerts.at(-1).text, /Not confirmed: nothing was sent/);
  const prompt = w.ui.prompts[0];
  assert.equal(prompt.title, 'Assets: bulk run');
  assert.equal(prompt.text.split('\n').slice(0, 4).join('\n'), [
    '3 rows, 6 images: $0.117 at the bulk price (half of live: $0.234).',
    'Google runs bulk batches within 24 hours: the results can take up to a day to appear in the rows.',
    'Budget left today: $10.00 of $10.00; after this batch $9.883.',
    'The budget resets at 00:00 UTC (2026-11-29 01:00 Europe/Paris, in 15 h 0 min).',
  ].join('\n'));
  assert.match(prompt.text, /Type CONFIRM to send these rows to Google's batch and spend the money\.$/);
  const estimate = JSON.parse(w.service.requests.find((r) => r.url.endsWith('/v1/estimate')).payload);
  assert.equal(estimate.run_mode, 'bulk', 'estimated at the bulk price, not live');

  w.ui.promptAnswers.push({ button: 'OK', text: 'CONFIRM' });
  w.service.manual = true;
  w.gs.generateBulk();
  const sent = submits(w);
  assert.equal(sent.length, 1);
  assert.equal(JSON.parse(sent[0].payload).run_mode, 'bulk');
  assert.deepEqual(JSON.parse(sent[0].payload), JSON.parse(w.service.requests.filter((r) => r.url.endsWith('/v1/estimate')).at(-1).payload),
    'the estimate priced exactly what was sent');
  assert.match(w.ss.toasts.at(-1).msg, /\(6 images, \$0\.117 at the bulk price\)\. Results appear in the rows when Google's batch is done, within 24 hours\.$/);
  assert.deepEqual(w.sheet.table().map((r) => r.status), ['queued', 'queued', 'queued']);
  assert.equal(w.gs.followedBatches_()[0].runMode, 'bulk');
});

test('bulk over the budget: the estimate at the bulk price says so, and nothing is sent', () => {
  // Six bulk images cost $0.117; $0.10 is left.
  const w = world({ rows: scenes(3), service: new FakeService({ limitUsd: 0.1 }) });
  w.sheet.select('A2:F4');
  w.gs.generateBulk();
  assert.equal(w.ui.prompts.length, 0);
  assert.equal(submits(w).length, 0);
  assert.equal(w.ui.alerts[0].title, 'Assets: bulk run');
  assert.match(w.ui.alerts[0].text, /^Over today's budget: \$0\.10 left, resets at 00:00 UTC .*\n\nThis batch needs \$0\.117\./s);
});

test('a bulk batch at Google is looked at every ten minutes, a trigger run with nothing due ends at once, and its rows are written back like live ones', () => {
  const w = world({ rows: scenes(3) });
  w.service.manual = true;
  w.sheet.select('A2:F4');
  w.ui.promptAnswers.push({ button: 'OK', text: 'CONFIRM' });
  w.gs.generateBulk();
  const id = [...w.service.batches.keys()].at(-1);
  const looks = () => w.service.requests.filter((r) => r.method === 'GET' && r.url.endsWith(`/v1/batches/${id}`)).length;

  // The first run looks once, sees the job pending at Google, and ends instead of polling for minutes.
  let started = w.clock.now();
  w.gs.followBatches();
  assert.equal(looks(), 1);
  const ran = w.clock.now() - started;
  assert.ok(ran <= 1000, `the run ended after its one look (${ran} ms), without sleeping`);
  assert.equal(w.scriptApp.triggers.length, 1, 'still following');
  assert.equal(w.gs.followedBatches_()[0].lookAfter, w.clock.now() + 10 * 60 * 1000, 'next look in ten minutes');

  // The trigger's runs of the next minutes do not ask at all (from the ninth on, the look is less
  // than a minute away and is made: a 10-minute trigger may fire a little early).
  for (let minute = 1; minute < 9; minute++) {
    w.clock.advance(60 * 1000);
    started = w.clock.now();
    w.gs.followBatches();
    assert.equal(w.clock.now(), started, 'nothing due: no request, no sleep');
  }
  assert.equal(looks(), 1);

  // A live batch submitted meanwhile is followed at the live pace, beside the waiting bulk one.
  const live = sheetWith(HEADERS, scenes(1).map((r) => ({ ...r, scene_id: 'LIVE-1' })), 202, 'Live');
  w.ss.sheets.push(live);
  w.ss.active = live;
  live.select('A2:F2');
  w.ui.promptAnswers.push({ button: 'OK', text: 'CONFIRM' });
  w.gs.generateLive();
  const liveId = [...w.service.batches.keys()].at(-1);
  w.service.advance(liveId, 1);
  w.gs.followBatches();
  assert.equal(live.table()[0].status, 'succeeded');
  assert.equal(looks(), 1, 'the bulk batch was not due yet');

  // Google finishes; the next look (ten minutes after the last) writes the rows as for a live batch.
  w.service.advance(id, 3);
  w.clock.advance(60 * 1000);
  w.gs.followBatches();
  assert.equal(looks(), 2);
  const t = w.sheet.table();
  assert.deepEqual(t.map((r) => r.status), ['succeeded', 'succeeded', 'succeeded']);
  assert.deepEqual(t.map((r) => r.cost), [1, 2, 3].map((v) => +(v * BULK_PRICE).toFixed(6)), 'paid at the bulk price');
  assert.deepEqual(t.map((r) => r['images.links'].length), [1, 2, 3]);
  assert.equal(t[0]['preview.formula'], `=IMAGE("https://assetgen.test/v1/images/${id}/HERO-001/1?sig=abc""def")`);
  assert.equal(w.scriptApp.triggers.length, 0, 'nothing left to follow: the trigger deleted itself');
});

test('while only bulk batches wait at Google the trigger fires every 10 minutes, and every minute again once a live batch is followed', () => {
  const w = world({ rows: scenes(2) });
  w.service.manual = true;
  const cadence = () => {
    assert.equal(w.scriptApp.triggers.length, 1, 'one follow trigger');
    assert.equal(w.scriptApp.triggers[0].getHandlerFunction(), 'followBatches');
    return w.scriptApp.triggers[0].spec.everyMinutes;
  };
  w.sheet.select('A2:F3');
  w.ui.promptAnswers.push({ button: 'OK', text: 'CONFIRM' });
  w.gs.generateBulk();
  const bulkId = [...w.service.batches.keys()].at(-1);
  const looks = () => w.service.requests.filter((r) => r.method === 'GET' && r.url.endsWith(`/v1/batches/${bulkId}`)).length;
  assert.equal(cadence(), 1, 'a batch just followed is looked at within the minute');

  // The first look finds the job at Google, and the follower swaps the minute trigger for a
  // ten-minute one. A live batch submitted just then (a submit takes no script lock, so it found
  // the minute trigger still there) is seen before the run ends: the minute cadence stays.
  const newTrigger = w.scriptApp.newTrigger.bind(w.scriptApp);
  let raced = false;
  w.scriptApp.newTrigger = (fn) => {
    const builder = newTrigger(fn);
    const everyMinutes = builder.everyMinutes;
    builder.everyMinutes = (n) => {
      if (n === 10 && !raced) {
        raced = true;
        const batch = { id: 'raced', sheetId: 909, runMode: 'live', page: '', submittedAt: new Date(w.clock.now()).toISOString(), owner: 'lead@studio.test' };
        w.props.document.setProperty('assetgen.batch.raced', JSON.stringify(batch));
      }
      return everyMinutes(n);
    };
    return builder;
  };
  w.gs.followBatches();
  w.scriptApp.newTrigger = newTrigger;
  assert.equal(looks(), 1);
  assert.equal(w.sheet.table()[0].status, 'queued');
  assert.ok(raced, 'the swap to ten minutes was under way');
  assert.equal(cadence(), 1, 'the live batch followed meanwhile keeps the minute trigger');
  w.gs.unfollowBatch_('raced');

  // With only the bulk batch left at Google, the next run (nothing due) slows the trigger down.
  w.clock.advance(60 * 1000);
  w.gs.followBatches();
  assert.equal(looks(), 1, 'not due yet');
  assert.equal(cadence(), 10);
  const slow = w.scriptApp.triggers[0].getUniqueId();

  // Its runs ten minutes apart look at the job and keep the same trigger.
  for (let run = 0; run < 3; run++) {
    w.clock.advance(10 * 60 * 1000);
    w.gs.followBatches();
  }
  assert.equal(looks(), 4, 'looked at on every run ten minutes apart');
  assert.equal(cadence(), 10);
  assert.equal(w.scriptApp.triggers[0].getUniqueId(), slow, 'not made again on every run');

  // A live batch is followed: every minute again, at once.
  const live = sheetWith(HEADERS, scenes(1).map((r) => ({ ...r, scene_id: 'LIVE-1' })), 202, 'Live');
  w.ss.sheets.push(live);
  w.ss.active = live;
  live.select('A2:F2');
  w.ui.promptAnswers.push({ button: 'OK', text: 'CONFIRM' });
  w.gs.generateLive();
  const liveId = [...w.service.batches.keys()].at(-1);
  assert.equal(cadence(), 1);
  const created = w.scriptApp.created;
  w.gs.followBatches();
  assert.equal(live.table()[0].status, 'queued');
  assert.equal(cadence(), 1, 'the live batch is still running');
  assert.equal(w.scriptApp.created, created, 'the minute trigger kept');

  // The live batch ends: only the bulk batch waits at Google again.
  w.service.advance(liveId, 1);
  w.clock.advance(60 * 1000);
  w.gs.followBatches();
  assert.equal(live.table()[0].status, 'succeeded');
  assert.equal(cadence(), 10);

  // Google finishes the bulk job: its rows are written and the trigger deletes itself.
  w.service.advance(bulkId, 2);
  w.clock.advance(10 * 60 * 1000);
  w.gs.followBatches();
  assert.deepEqual(w.sheet.table().map((r) => r.status), ['succeeded', 'succeeded']);
  assert.equal(w.scriptApp.triggers.length, 0, 'nothing left to follow');
  assert.equal(w.props.user.getProperty('assetgen.followTrigger'), null);
});

test('bulk retry asks CONFIRM for a new Google batch; cancel says what Google\'s cancel keeps', () => {
  const w = world({ rows: scenes(2) });
  w.service.failScene.add('HERO-002');
  w.sheet.select('A2:F3');
  w.ui.promptAnswers.push({ button: 'OK', text: 'CONFIRM' });
  w.gs.generateBulk();
  w.gs.followBatches();
  assert.deepEqual(w.sheet.table().map((r) => r.status), ['succeeded', 'failed']);
  w.sheet.select('A3:F3');
  w.ui.promptAnswers.push({ button: 'CANCEL', text: '' });
  w.gs.retryFailedRows();
  assert.equal(w.service.requests.filter((r) => r.url.endsWith('/retry')).length, 0, 'a bulk retry spends money: not without CONFIRM');
  const prompt = w.ui.prompts.at(-1);
  assert.equal(prompt.title, 'Assets: retry bulk rows');
  assert.match(prompt.text, /^1 failed rows, 2 images to make again; stored images are not paid twice\.\nThey go to a new Google batch at the bulk price, done within 24 hours\.\n\nType CONFIRM/);
  w.ui.promptAnswers.push({ button: 'OK', text: 'CONFIRM' });
  w.service.manual = true;
  w.gs.retryFailedRows();
  assert.equal(w.service.requests.filter((r) => r.url.endsWith('/retry')).length, 1);
  assert.deepEqual(w.sheet.table().map((r) => r.status), ['succeeded', 'queued']);

  w.ui.alertAnswers.push('NO');
  w.gs.cancelBatch();
  assert.match(w.ui.alerts.at(-1).text, /\? Google's batch is cancelled; images it made before that are kept and paid for, the rest of the money is released\.$/);
  assert.equal(w.service.requests.filter((r) => r.url.endsWith('/cancel')).length, 0, 'not confirmed');
});
