// UrlFetchApp over real HTTP. UrlFetchApp is synchronous, so each fetch runs curl to completion
// with spawnSync. Like UrlFetchApp it throws when no answer came back (refused connection, time-out)
// and, without muteHttpExceptions, on an HTTP error status.
'use strict';
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const { spawnSync } = require('node:child_process');

class CurlUrlFetch {
  constructor({ timeoutSecs = 30 } = {}) {
    this.timeoutSecs = timeoutSecs;
    this.requests = [];
    this.dir = fs.mkdtempSync(path.join(os.tmpdir(), 'assetgen-curl-'));
  }

  fetch(url, params = {}) {
    const method = String(params.method || 'get').toUpperCase();
    const headers = { ...(params.headers || {}) };
    if (params.contentType) headers['Content-Type'] = params.contentType;
    this.requests.push({ url, method, headers: { ...headers }, payload: params.payload });
    const n = this.requests.length;
    const bodyFile = path.join(this.dir, `body-${n}`);
    const headFile = path.join(this.dir, `head-${n}`);
    const args = ['-sS', '-X', method, '--max-time', String(this.timeoutSecs), '-o', bodyFile, '-D', headFile, '-w', '%{http_code}'];
    if (params.followRedirects !== false) args.push('-L');
    for (const [k, v] of Object.entries(headers)) args.push('-H', `${k}: ${v}`);
    let input;
    if (params.payload !== undefined) {
      args.push('--data-binary', '@-');
      input = Buffer.from(String(params.payload), 'utf8');
    }
    args.push(url);
    const run = spawnSync('curl', args, { input, encoding: 'utf8' });
    if (run.error) throw run.error;
    if (run.status !== 0) {
      throw new Error(`Address unavailable: ${url} (curl exit ${run.status}: ${run.stderr.trim()})`);
    }
    const status = Number(run.stdout.trim());
    const body = fs.readFileSync(bodyFile);
    // With -L the file holds every hop's headers; the last block is the answer's.
    const blocks = fs.readFileSync(headFile, 'utf8').split(/\r?\n\r?\n/).filter((b) => b.trim());
    const last = blocks.length ? blocks[blocks.length - 1] : '';
    const responseHeaders = {};
    for (const line of last.split(/\r?\n/).slice(1)) {
      const i = line.indexOf(':');
      if (i > 0) responseHeaders[line.slice(0, i).trim()] = line.slice(i + 1).trim();
    }
    fs.rmSync(bodyFile, { force: true });
    fs.rmSync(headFile, { force: true });
    if (!params.muteHttpExceptions && status >= 400) {
      throw new Error(`Request failed for ${url} returned code ${status}. Truncated server response: ${body.toString('utf8').slice(0, 200)}`);
    }
    return {
      getResponseCode: () => status,
      getContentText: () => body.toString('utf8'),
      getHeaders: () => ({ ...responseHeaders }),
      getAllHeaders: () => ({ ...responseHeaders }),
      getBlob: () => ({ getBytes: () => [...body], getContentType: () => responseHeaders['content-type'] || responseHeaders['Content-Type'] }),
      bytes: body,
    };
  }
}

module.exports = { CurlUrlFetch };
