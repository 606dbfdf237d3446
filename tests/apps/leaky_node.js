// A Node.js HTTPS service that leaks credentials the way real services do:
// the same paths and leaks as leaky_fastapi.py (tests/README.md has the
// table), written with node's own `https`, `zlib` and `crypto` (no npm
// packages).  Node's builds link OpenSSL into the node program itself, so
// this is the test of a TLS server without a libssl.so.
//
//   node tests/apps/leaky_node.js --port 23003 --cert cert.pem --key key.pem

'use strict';

const crypto = require('crypto');
const fs = require('fs');
const https = require('https');
const zlib = require('zlib');

const {
  deterministicBytes, arg, escapeHtml, bearerOf, basicOf, cookies, sendJson, readBody, rows,
} = require('./leaky_common');

// Size of the filler sent before the key in /v1/stream: the key lands past 64 KiB.
const STREAM_FILLER_BYTES = 70000;
const LARGE_BODY_BYTES = 1 << 20;
const PLAIN_STREAM_CHUNK = 8192;
const PLAIN_STREAM_CHUNKS = 25;
const GZIP_MIN_BYTES = 256;

const LARGE_BODY = deterministicBytes(LARGE_BODY_BYTES);

// Gzipped when the client accepts it and the body is worth it (as compression
// middleware does).
function sendMaybeGzip(req, res, body) {
  let data = Buffer.from(JSON.stringify(body));
  const headers = { 'content-type': 'application/json', vary: 'Accept-Encoding' };
  if (/\bgzip\b/.test(req.headers['accept-encoding'] || '') && data.length >= GZIP_MIN_BYTES) {
    data = zlib.gzipSync(data);
    headers['content-encoding'] = 'gzip';
  }
  headers['content-length'] = data.length;
  res.writeHead(200, headers);
  res.end(data);
}

async function handle(req, res) {
  const url = new URL(req.url, 'https://localhost');
  const path = url.pathname;
  const h = req.headers;
  const key = h['x-api-key'] || '';
  const get = req.method === 'GET';

  // --- leaks ---
  if (get && path === '/v1/items') {
    // The classic: the key is "validated" and the error message quotes it back.
    return sendJson(res, 401, { detail: `Invalid API key: ${key}` });
  }
  if (get && path.startsWith('/v1/items/')) {
    const tag = path.slice('/v1/items/'.length);
    return sendJson(res, 401, { detail: `Invalid API key for item ${tag}: ${key}` });
  }
  if (get && path === '/v1/me') {
    return sendJson(res, 200, {
      user: 'alice',
      scopes: ['read', 'write'],
      debug: { authorization: h.authorization || null },
    });
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
  if (get && path === '/search') {
    const page = '<!doctype html><html><head><title>Search</title></head><body>'
      + `<h1>Results for ${escapeHtml(url.searchParams.get('q') || '')}</h1>`
      + `<p>Searching with key <code>${escapeHtml(url.searchParams.get('api_key') || '')}</code></p>`
      + '<ul><li>nothing found</li></ul></body></html>';
    res.writeHead(200, { 'content-type': 'text/html; charset=utf-8', 'content-length': Buffer.byteLength(page) });
    return res.end(page);
  }
  if (get && path === '/v1/account') {
    const [user, password] = basicOf(h.authorization);
    return sendJson(res, 401, { detail: `wrong password '${password}' for user '${user}'` });
  }
  if (req.method === 'POST' && path === '/oauth/token') {
    const form = new URLSearchParams((await readBody(req)).toString('utf8'));
    // `/` written `\/`, as PHP and many gateways emit JSON.
    const body = JSON.stringify({
      error: 'invalid_client',
      error_description: `client ${form.get('client_id') || ''} with secret `
        + `${form.get('client_secret') || ''} is not allowed to use grant ${form.get('grant_type') || ''}`,
    }).replace(/\//g, '\\/');
    res.writeHead(401, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) });
    return res.end(body);
  }
  if (get && path === '/v1/session') {
    return sendJson(res, 200, { session: 'active' }, { 'x-debug-token': h['x-auth-token'] || '' });
  }
  if (get && path === '/v1/debug/blob') {
    // Laid out as Python's json.dumps writes it (`": "`, `", "`), as the
    // Python apps' blobs are.
    const context = `{"path": ${JSON.stringify(path)}, "authorization": ${JSON.stringify(h.authorization || null)}}`;
    return sendJson(res, 200, { trace_id: '4bf92f3577b34da6', blob: Buffer.from(context).toString('base64') });
  }
  if (get && path === '/v1/links') {
    return sendJson(res, 200, { next: `https://api.example/v1/items?page=2&api_key=${encodeURIComponent(key)}` });
  }
  if (get && path === '/v1/stream') {
    // No content-length: node sends it chunked, a write per chunk.
    res.writeHead(200, { 'content-type': 'application/json' });
    res.write('{"rows":"');
    for (let sent = 0; sent < STREAM_FILLER_BYTES;) {
      const n = Math.min(8192, STREAM_FILLER_BYTES - sent);
      res.write('r'.repeat(n));
      sent += n;
    }
    return res.end(`","request_key":"${key}"}`);
  }
  if (get && path === '/v1/remember') {
    // "Remember me" cookie minted from the live session id: a second credential.
    return sendJson(res, 200, { remembered: true }, {
      'set-cookie': `remember_token=${cookies(req).session || ''}; HttpOnly; Path=/; SameSite=lax; Secure`,
    });
  }
  if (get && path === '/v1/admin') {
    return sendJson(res, 401, { detail: 'Not authenticated' }, {
      'www-authenticate': `Bearer realm="api", error="invalid_token", `
        + `error_description="token ${bearerOf(h.authorization)} has expired"`,
    });
  }
  if (get && path === '/gz/export') {
    return sendMaybeGzip(req, res, { rows: rows(), exported_with: key });
  }
  if (get && path === '/gz/report') {
    return sendMaybeGzip(req, res, { rows: rows() });
  }

  // --- benign ---
  if (get && path === '/v1/masked') {
    return sendJson(res, 200, { key: key.length > 12 ? `${key.slice(0, 8)}****${key.slice(-4)}` : '****' });
  }
  if (get && path === '/v1/whoami') {
    return sendJson(res, 200, { user: basicOf(h.authorization)[0] });
  }
  if ((get || req.method === 'HEAD') && path === '/v1/status') {
    // node sends no body for HEAD.
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
  if (get && path === '/v1/stream/plain') {
    res.writeHead(200, { 'content-type': 'text/plain' });
    for (let i = 0; i < PLAIN_STREAM_CHUNKS; i++) {
      res.write(Buffer.alloc(PLAIN_STREAM_CHUNK, 97 + (i % 26)));
    }
    return res.end();
  }
  if (req.method === 'DELETE' && path.startsWith('/v1/items/')) {
    res.writeHead(204);
    return res.end();
  }
  if (get && path === '/v1/etag') {
    if (h['if-none-match'] === '"v1"') {
      res.writeHead(304, { etag: '"v1"' });
      return res.end();
    }
    return sendJson(res, 200, { version: 1 }, { etag: '"v1"' });
  }
  if (get && path === '/v1/profile') {
    // Re-sets the same session cookie (sliding expiry): not a leak.
    return sendJson(res, 200, { profile: 'alice' }, {
      'set-cookie': `session=${cookies(req).session || ''}; HttpOnly; Path=/; SameSite=lax; Secure`,
    });
  }
  return sendJson(res, 404, { detail: 'Not Found' });
}

const server = https.createServer(
  { cert: fs.readFileSync(arg('--cert')), key: fs.readFileSync(arg('--key')) },
  (req, res) => {
    handle(req, res).catch((e) => {
      console.error(`leaky_node: ${req.method} ${req.url}: ${e.message}`);
      if (!res.headersSent) sendJson(res, 500, { detail: 'internal error' });
      else res.destroy();
    });
  },
);
server.keepAliveTimeout = 30000;
server.listen(Number(arg('--port')), '127.0.0.1');
for (const sig of ['SIGTERM', 'SIGINT']) process.on(sig, () => process.exit(0));
