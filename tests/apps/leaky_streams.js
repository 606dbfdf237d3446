// A Node.js HTTPS service whose leaks are in responses that do not end the
// usual way: a server-sent event stream that stays open, a chunked body
// with the key in a trailer, and a large download its client hangs up on.
// node's own `http2` (HTTP/2, and HTTP/1.1 for clients that do not offer
// h2: `allowHTTP1`), no npm packages.
//
//   node tests/apps/leaky_streams.js --port 23005 --cert cert.pem --key key.pem
//
// | request | leak |
// | --- | --- |
// | GET /v1/events?seconds=N | x-api-key in the first event; a comment every 250 ms; ends after N s (default 6) |
// | GET /v1/trailer | x-api-key in the trailer field X-Debug-Token (chunked body `{"ok":true}`) |
// | GET /v1/download | x-api-key in the first bytes of an 8 MiB body (Content-Length) |

'use strict';

const fs = require('fs');
const http2 = require('http2');

const { deterministicBytes, arg } = require('./leaky_common');

const PING_EVERY_MS = 250;
const DEFAULT_STREAM_SECONDS = 6;
const DOWNLOAD_BYTES = 8 << 20;
const DOWNLOAD_PIECE = 64 << 10;

function events(req, res, key, url) {
  const seconds = Number(url.searchParams.get('seconds') || DEFAULT_STREAM_SECONDS);
  res.writeHead(200, { 'content-type': 'text/event-stream', 'cache-control': 'no-cache' });
  res.write(`event: error\ndata: ${JSON.stringify({ error: `key ${key} is deprecated` })}\n\n`);
  const ping = setInterval(() => res.write(': ping\n\n'), PING_EVERY_MS);
  const end = setTimeout(() => {
    clearInterval(ping);
    res.end('event: bye\ndata: {}\n\n');
  }, seconds * 1000);
  req.on('close', () => {
    clearInterval(ping);
    clearTimeout(end);
  });
}

function trailer(res, key) {
  res.writeHead(200, { 'content-type': 'application/json', trailer: 'X-Debug-Token' });
  res.write('{"ok":');
  res.addTrailers({ 'X-Debug-Token': key });
  res.end('true}');
}

function download(res, key) {
  const head = Buffer.from(`{"key":"${key}","data":"`);
  const filler = deterministicBytes(DOWNLOAD_PIECE);
  res.writeHead(200, {
    'content-type': 'application/octet-stream',
    'content-length': String(DOWNLOAD_BYTES),
  });
  let sent = 0;
  const more = () => {
    while (sent < DOWNLOAD_BYTES && !res.destroyed) {
      const piece = sent === 0 ? head : filler.subarray(0, Math.min(DOWNLOAD_PIECE, DOWNLOAD_BYTES - sent));
      sent += piece.length;
      if (sent >= DOWNLOAD_BYTES) {
        res.end(piece);
        return;
      }
      if (!res.write(piece)) {
        res.once('drain', more);
        return;
      }
    }
  };
  res.on('error', () => {});
  more();
}

const server = http2.createSecureServer(
  { cert: fs.readFileSync(arg('--cert')), key: fs.readFileSync(arg('--key')), allowHTTP1: true },
  (req, res) => {
    const url = new URL(req.url, 'https://localhost');
    const key = req.headers['x-api-key'] || '';
    if (url.pathname === '/v1/events') return events(req, res, key, url);
    if (url.pathname === '/v1/trailer') return trailer(res, key);
    if (url.pathname === '/v1/download') return download(res, key);
    res.writeHead(404, { 'content-type': 'text/plain' });
    return res.end('not found');
  },
);
server.on('clientError', (_err, socket) => socket.destroy());
server.on('sessionError', () => {});
server.listen(Number(arg('--port')), '127.0.0.1');
