// Type-checks every .gs file against @types/google-apps-script: each is copied to a .js file
// (tsc does not read .gs) and checked as one program, as Apps Script runs them in one global scope.
// A misspelt service or method fails here, not in front of a user.
'use strict';
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const { spawnSync } = require('node:child_process');

const root = path.resolve(__dirname, '..');
// The .gs files of apps-script/, or of the directory given (the test of this check uses a copy).
const source = process.argv[2] ? path.resolve(process.argv[2]) : root;
const out = fs.mkdtempSync(path.join(os.tmpdir(), 'assetgen-gs-'));
const files = fs.readdirSync(source).filter((f) => f.endsWith('.gs'));
if (files.length === 0) {
  console.error('no .gs files found in', source);
  process.exit(1);
}
for (const f of files) {
  fs.copyFileSync(path.join(source, f), path.join(out, f.replace(/\.gs$/, '.js')));
}
const tsc = path.join(root, 'node_modules', 'typescript', 'bin', 'tsc');
const args = [
  tsc, '--noEmit', '--allowJs', '--checkJs', '--target', 'es2020', '--lib', 'es2020',
  '--types', 'google-apps-script', '--typeRoots', path.join(root, 'node_modules', '@types'),
  ...files.map((f) => f.replace(/\.gs$/, '.js')),
];
const run = spawnSync(process.execPath, args, { encoding: 'utf8', cwd: out });
// Name the .gs file, not the temporary copy, in every message.
const text = (run.stdout + run.stderr).replace(/^(?:.*[\\/])?([A-Za-z0-9_]+)\.js\(/gm, 'apps-script/$1.gs(');
process.stdout.write(text);
fs.rmSync(out, { recursive: true, force: true });
if (run.status !== 0) {
  console.error(`tsc --checkJs failed on ${files.length} .gs files`);
  process.exit(run.status || 1);
}
console.log(`tsc --checkJs: ${files.length} .gs files type-check against @types/google-apps-script`);
