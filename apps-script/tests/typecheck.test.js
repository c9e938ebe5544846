// The type check is a real gate: the .gs files pass it, and a misspelt Apps Script call fails it.
'use strict';
const test = require('node:test');
const assert = require('node:assert/strict');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const { spawnSync } = require('node:child_process');
const { ROOT } = require('./fakes');

function typecheck(dir) {
  return spawnSync(process.execPath, [path.join(__dirname, 'typecheck.js'), dir], { encoding: 'utf8' });
}

test('every .gs file type-checks against @types/google-apps-script', () => {
  const run = typecheck(ROOT);
  assert.equal(run.status, 0, run.stdout + run.stderr);
});

test('a misspelt service method or a wrong argument fails the check, naming the .gs file', () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'assetgen-gs-typo-'));
  try {
    for (const f of fs.readdirSync(ROOT).filter((f) => f.endsWith('.gs'))) fs.copyFileSync(path.join(ROOT, f), path.join(dir, f));
    fs.writeFileSync(path.join(dir, 'Typo.gs'), [
      'function typo_() {',
      '  var sheet = SpreadsheetApp.getActiveSpreadsheet().getActiveSheeet();',
      '  UrlFetchApp.fetch("https://x.test", { muteHttpException: true });',
      '  ScriptApp.newTrigger("followBatches").timeBased().everyMinutes("1").create();',
      '}',
      '',
    ].join('\n'));
    const run = typecheck(dir);
    const out = run.stdout + run.stderr;
    assert.notEqual(run.status, 0);
    assert.match(out, /apps-script\/Typo\.gs\(2,\d+\): error TS2551: Property 'getActiveSheeet' does not exist/);
    assert.match(out, /Typo\.gs\(3,\d+\).*muteHttpException/);
    assert.match(out, /Typo\.gs\(4,\d+\).*not assignable to parameter of type 'number'/);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});
