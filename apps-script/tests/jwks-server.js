// A key set on loopback for the end-to-end test: serves ASSETGEN_TEST_JWKS at /certs and prints
// its port. It runs as its own process because the test blocks its own event loop in curl calls
// (UrlFetchApp is synchronous), while the service fetches keys at that very moment.
'use strict';
const http = require('node:http');

const body = process.env.ASSETGEN_TEST_JWKS;
let fetches = 0;
const server = http.createServer((req, res) => {
  if (req.url === '/certs') {
    fetches++;
    res.writeHead(200, { 'Content-Type': 'application/json', 'Cache-Control': 'public, max-age=3600' });
    res.end(body);
  } else if (req.url === '/fetches') {
    res.writeHead(200, { 'Content-Type': 'text/plain' });
    res.end(String(fetches));
  } else {
    res.writeHead(404);
    res.end();
  }
});
server.listen(0, '127.0.0.1', () => {
  console.log(`jwks listening on ${server.address().port}`);
});
process.on('SIGTERM', () => server.close(() => process.exit(0)));
