// Google, as far as the end-to-end test needs it, on loopback: the key set ID tokens are checked
// against (ASSETGEN_TEST_JWKS at /certs) and Gemini's generateContent speaking its wire format
// (/shared/fixtures/gemini-response-image.json), answering a small PNG. It runs as its own process
// because the test blocks its own event loop in curl calls (UrlFetchApp is synchronous) while the
// service calls these at that very moment.
'use strict';
const http = require('node:http');
const zlib = require('node:zlib');

const jwks = process.env.ASSETGEN_TEST_JWKS;
const apiKey = process.env.ASSETGEN_TEST_GEMINI_KEY;
const counts = { certs: 0, generate: 0 };
const blockedOnce = new Set();

function crc32(bytes) {
  let crc = 0xffffffff;
  for (const b of bytes) {
    crc ^= b;
    for (let k = 0; k < 8; k++) crc = crc & 1 ? 0xedb88320 ^ (crc >>> 1) : crc >>> 1;
  }
  return (crc ^ 0xffffffff) >>> 0;
}

function chunk(type, data) {
  const len = Buffer.alloc(4);
  len.writeUInt32BE(data.length);
  const body = Buffer.concat([Buffer.from(type, 'ascii'), data]);
  const crc = Buffer.alloc(4);
  crc.writeUInt32BE(crc32(body));
  return Buffer.concat([len, body, crc]);
}

/** A 32×32 PNG of one colour. */
function png([r, g, b]) {
  const size = 32;
  const header = Buffer.alloc(13);
  header.writeUInt32BE(size, 0);
  header.writeUInt32BE(size, 4);
  header.set([8, 2, 0, 0, 0], 8);
  const raw = Buffer.alloc((size * 3 + 1) * size);
  for (let y = 0; y < size; y++) for (let x = 0; x < size; x++) raw.set([r, g, b], y * (size * 3 + 1) + 1 + x * 3);
  return Buffer.concat([Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]), chunk('IHDR', header),
    chunk('IDAT', zlib.deflateSync(raw)), chunk('IEND', Buffer.alloc(0))]);
}

function generate(req, res, body) {
  if (req.headers['x-goog-api-key'] !== apiKey) {
    res.writeHead(403, { 'Content-Type': 'application/json' });
    res.end(JSON.stringify({ error: { code: 403, message: 'API key not valid.', status: 'PERMISSION_DENIED' } }));
    return;
  }
  counts.generate++;
  const request = JSON.parse(body);
  const prompt = request.contents[0].parts.map((p) => p.text || '').join(' ');
  // A prompt saying BLOCK-ONCE is blocked for safety the first time it is asked for
  // (fixtures/gemini-response-blocked.json), and drawn when it is retried.
  if (prompt.includes('BLOCK-ONCE') && !blockedOnce.has(prompt)) {
    blockedOnce.add(prompt);
    res.writeHead(200, { 'Content-Type': 'application/json' });
    res.end(JSON.stringify({
      candidates: [{ finishReason: 'IMAGE_SAFETY', index: 0 }],
      usageMetadata: { promptTokenCount: 12, totalTokenCount: 12 },
      modelVersion: 'gemini-2.5-flash-image',
    }));
    return;
  }
  res.writeHead(200, { 'Content-Type': 'application/json' });
  res.end(JSON.stringify({
    candidates: [{
      content: {
        role: 'model',
        parts: [
          { text: 'planning the composition', thought: true },
          { inlineData: { mimeType: 'image/png', data: png([200, 200, 200]).toString('base64') }, thought: true },
          { inlineData: { mimeType: 'image/png', data: png([prompt.length % 256, 90, 160]).toString('base64') } },
        ],
      },
      finishReason: 'STOP',
      index: 0,
    }],
    usageMetadata: { promptTokenCount: 300, candidatesTokenCount: 1290, totalTokenCount: 1590 },
    modelVersion: 'gemini-2.5-flash-image',
    responseId: `loopback-response-${counts.generate}`,
  }));
}

const server = http.createServer((req, res) => {
  let body = '';
  req.on('data', (d) => { body += d; });
  req.on('end', () => {
    if (req.method === 'GET' && req.url === '/certs') {
      counts.certs++;
      res.writeHead(200, { 'Content-Type': 'application/json', 'Cache-Control': 'public, max-age=3600' });
      res.end(jwks);
    } else if (req.method === 'POST' && /^\/v1beta\/models\/[^/]+:generateContent$/.test(req.url)) {
      generate(req, res, body);
    } else if (req.url === '/counts') {
      res.writeHead(200, { 'Content-Type': 'application/json' });
      res.end(JSON.stringify(counts));
    } else {
      res.writeHead(404);
      res.end();
    }
  });
});
server.listen(0, '127.0.0.1', () => {
  console.log(`loopback google listening on ${server.address().port}`);
});
process.on('SIGTERM', () => server.close(() => process.exit(0)));
