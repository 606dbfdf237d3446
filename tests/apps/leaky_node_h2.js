// A Node.js HTTP/2 service (node's built-in `http2.createSecureServer`, TLS
// with ALPN h2 only, no npm packages) that leaks credentials the way real
// services do, in every place HTTP/2 can carry them: DATA (plain, JSON-escaped,
// percent, HTML, base64, gzip, past 64 KiB), response HEADERS (Location,
// Set-Cookie, a debug header) and trailers.  OpenSSL is linked into node.
//
//   node tests/apps/leaky_node_h2.js --port 23004 --cert cert.pem --key key.pem
//
// Leaks (request credential -> sink):
//   GET  /v1/items, /v1/items/{tag} -> 401  x-api-key -> body
//   GET  /oauth/authorize          -> 302  Bearer -> location query access_token=,
//                                          x-id-token -> location fragment id_token=
//   POST /oauth/token (JSON)       -> 401  client_secret -> body, `/` written `\/`
//   GET  /v1/session                      x-auth-token -> header x-debug-token
//   GET  /v1/remember                     cookie session -> set-cookie remember_token=
//   GET  /v1/trace                        Bearer -> trailer x-debug-authorization
//   GET  /v1/stream                       x-api-key -> body after 70,000 bytes (several DATA frames)
//   GET  /gz/export                       x-api-key -> body, content-encoding gzip
//   GET  /v1/links                        x-api-key -> body, percent-encoded
//   GET  /search?api_key=                 query api_key -> body, HTML-escaped
//   GET  /v1/debug/blob                   Bearer -> body, base64 of a JSON blob
// Benign: /v1/masked (sk_live_****1234), /v1/status[/...], /v1/large (1 MiB,
// bytes i % 251), POST /v1/upload (echoes length and sha256).

'use strict';

const crypto = require('crypto');
const fs = require('fs');
const http2 = require('http2');
const zlib = require('zlib');

const {
  deterministicBytes, arg, escapeHtml, bearerOf, cookies, sendJson, readBody, rows,
} = require('./leaky_common');

const STREAM_FILLER_BYTES = 70000;
const STREAM_WRITE_BYTES = 8192;
const LARGE_BODY_BYTES = 1 << 20;

const LARGE_BODY = deterministicBytes(LARGE_BODY_BYTES);

async function handle(req, res) {
  const url = new URL(req.url, 'https://localhost');
  const path = url.pathname;
  const h = req.headers;
  const key = h['x-api-key'] || '';
  const get = req.method === 'GET';

  // --- leaks ---
  if (get && path === '/v1/items') {
    return sendJson(res, 401, { detail: `Invalid API key: ${key}` });
  }
  if (get && path.startsWith('/v1/items/')) {
    const tag = path.slice('/v1/items/'.length);
    return sendJson(res, 401, { detail: `Invalid API key for item ${tag}: ${key}` });
  }
  if (get && path === '/oauth/authorize') {
    const query = new URLSearchParams({
      access_token: bearerOf(h.authorization),
      state: url.searchParams.get('state') || '',
    });
    const fragment = new URLSearchParams({ id_token: h['x-id-token'] || '', token_type: 'bearer' });
    res.writeHead(302, { location: `https://app.example/cb?${query}#${fragment}`, 'content-length': 0 });
    return res.end();
  }
  if (req.method === 'POST' && path === '/oauth/token') {
    const form = JSON.parse((await readBody(req)).toString('utf8'));
    // `/` written `\/`, as PHP and many gateways emit JSON.
    const body = JSON.stringify({
      error: 'invalid_client',
      error_description: `client ${form.client_id || ''} with secret `
        + `${form.client_secret || ''} is not allowed to use grant ${form.grant_type || ''}`,
    }).replace(/\//g, '\\/');
    res.writeHead(401, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) });
    return res.end(body);
  }
  if (get && path === '/v1/session') {
    return sendJson(res, 200, { session: 'active' }, { 'x-debug-token': h['x-auth-token'] || '' });
  }
  if (get && path === '/v1/remember') {
    return sendJson(res, 200, { remembered: true }, {
      'set-cookie': `remember_token=${cookies(req).session || ''}; HttpOnly; Path=/; SameSite=lax; Secure`,
    });
  }
  if (get && path === '/v1/trace') {
    // A tracing middleware that reports what it saw in a trailer.
    const data = Buffer.from(JSON.stringify({ trace_id: '4bf92f3577b34da6' }));
    res.writeHead(200, { 'content-type': 'application/json', trailer: 'x-debug-authorization' });
    res.addTrailers({ 'x-debug-authorization': h.authorization || '' });
    return res.end(data);
  }
  if (get && path === '/v1/stream') {
    res.writeHead(200, { 'content-type': 'application/json' });
    res.write('{"rows":"');
    for (let sent = 0; sent < STREAM_FILLER_BYTES;) {
      const n = Math.min(STREAM_WRITE_BYTES, STREAM_FILLER_BYTES - sent);
      res.write('r'.repeat(n));
      sent += n;
    }
    return res.end(`","request_key":"${key}"}`);
  }
  if (get && path === '/gz/export') {
    let data = Buffer.from(JSON.stringify({ rows: rows(), exported_with: key }));
    const headers = { 'content-type': 'application/json', vary: 'Accept-Encoding' };
    if (/\bgzip\b/.test(h['accept-encoding'] || '')) {
      data = zlib.gzipSync(data);
      headers['content-encoding'] = 'gzip';
    }
    headers['content-length'] = data.length;
    res.writeHead(200, headers);
    return res.end(data);
  }
  if (get && path === '/v1/links') {
    return sendJson(res, 200, { next: `https://api.example/v1/items?page=2&api_key=${encodeURIComponent(key)}` });
  }
  if (get && path === '/search') {
    const page = '<!doctype html><html><head><title>Search</title></head><body>'
      + `<h1>Results for ${escapeHtml(url.searchParams.get('q') || '')}</h1>`
      + `<p>Searching with key <code>${escapeHtml(url.searchParams.get('api_key') || '')}</code></p>`
      + '<ul><li>nothing found</li></ul></body></html>';
    res.writeHead(200, { 'content-type': 'text/html; charset=utf-8', 'content-length': Buffer.byteLength(page) });
    return res.end(page);
  }
  if (get && path === '/v1/debug/blob') {
    // Laid out as Python's json.dumps writes it (`": "`, `", "`).
    const context = `{"path": ${JSON.stringify(path)}, "authorization": ${JSON.stringify(h.authorization || null)}}`;
    return sendJson(res, 200, { trace_id: '4bf92f3577b34da6', blob: Buffer.from(context).toString('base64') });
  }

  // --- benign ---
  if (get && path === '/v1/masked') {
    return sendJson(res, 200, { key: key.length > 12 ? `${key.slice(0, 8)}****${key.slice(-4)}` : '****' });
  }
  if (get && (path === '/v1/status' || path.startsWith('/v1/status/'))) {
    return sendJson(res, 200, { status: 'ok', version: '1.4.2' });
  }
  if (get && path === '/v1/large') {
    res.writeHead(200, { 'content-type': 'application/octet-stream', 'content-length': LARGE_BODY.length });
    return res.end(LARGE_BODY);
  }
  if (req.method === 'POST' && path === '/v1/upload') {
    const data = await readBody(req);
    return sendJson(res, 200, { received: data.length, sha256: crypto.createHash('sha256').update(data).digest('hex') });
  }
  return sendJson(res, 404, { detail: 'Not Found' });
}

const server = http2.createSecureServer(
  { cert: fs.readFileSync(arg('--cert')), key: fs.readFileSync(arg('--key')), allowHTTP1: false },
  (req, res) => {
    handle(req, res).catch((e) => {
      console.error(`leaky_node_h2: ${req.method} ${req.url}: ${e.message}`);
      if (!res.headersSent) sendJson(res, 500, { detail: 'internal error' });
      else res.stream.close(http2.constants.NGHTTP2_INTERNAL_ERROR);
    });
  },
);
// A connection idle this long is closed (the tests' clients are done long before).
server.setTimeout(30000);
server.listen(Number(arg('--port')), '127.0.0.1');
for (const sig of ['SIGTERM', 'SIGINT']) process.on(sig, () => process.exit(0));
