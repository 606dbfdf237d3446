// Helpers the leaky node apps share (leaky_node.js over HTTPS/1.1,
// leaky_node_h2.js over HTTP/2): arguments, credential parsing, bodies.

'use strict';

const path = require('path');

function deterministicBytes(n) {
  const out = Buffer.alloc(n);
  for (let i = 0; i < n; i++) out[i] = i % 251;
  return out;
}

function arg(name) {
  const i = process.argv.indexOf(name);
  if (i < 0 || i + 1 >= process.argv.length) {
    console.error(`usage: ${path.basename(process.argv[1])} --port N --cert FILE --key FILE (missing ${name})`);
    process.exit(2);
  }
  return process.argv[i + 1];
}

function escapeHtml(s) {
  return s.replace(/[&<>"']/g, (c) => ({
    '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#x27;',
  })[c]);
}

function bearerOf(authorization) {
  if (authorization && authorization.toLowerCase().startsWith('bearer ')) {
    return authorization.slice(7).trim();
  }
  return '';
}

function basicOf(authorization) {
  if (!authorization || !authorization.toLowerCase().startsWith('basic ')) {
    return ['', ''];
  }
  const decoded = Buffer.from(authorization.slice(6), 'base64').toString('utf8');
  const i = decoded.indexOf(':');
  return i < 0 ? [decoded, ''] : [decoded.slice(0, i), decoded.slice(i + 1)];
}

// HTTP/2 may split the cookie header into several fields (node joins them with '; ').
function cookies(req) {
  const out = {};
  for (const part of (req.headers.cookie || '').split(';')) {
    const i = part.indexOf('=');
    if (i > 0) out[part.slice(0, i).trim()] = part.slice(i + 1).trim();
  }
  return out;
}

function sendJson(res, status, body, headers = {}) {
  const data = Buffer.from(JSON.stringify(body));
  res.writeHead(status, {
    'content-type': 'application/json',
    'content-length': data.length,
    ...headers,
  });
  res.end(data);
}

function readBody(req) {
  return new Promise((resolve, reject) => {
    const parts = [];
    req.on('data', (d) => parts.push(d));
    req.on('end', () => resolve(Buffer.concat(parts)));
    req.on('error', reject);
  });
}

function rows() {
  const out = [];
  for (let i = 0; i < 40; i++) out.push({ id: i, name: `item-${i}`, price: i * 3 });
  return out;
}

module.exports = { deterministicBytes, arg, escapeHtml, bearerOf, basicOf, cookies, sendJson, readBody, rows };
