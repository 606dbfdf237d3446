#!/usr/bin/env python3
"""The bundled demo API for `cargo xtask demo`: a small, leaky HTTPS service.

Python standard library only (http.server + ssl), so it also runs inside a
minimal root filesystem (the separate-root e2e test) and needs no venv.
HTTP/1.1 with keep-alive, one thread per connection.

    python3 demo_api.py --port 23010 --cert cert.pem --key key.pem

Leaks (source -> sink):
  GET /v1/items            x-api-key      -> 400 JSON error body (plain)
  GET /oauth/authorize     bearer token   -> 302 Location fragment #access_token=
  GET /debug               Authorization  -> JSON dump of request headers (plain)
  GET /search?api_key=K    query api_key  -> HTML page (html-escaped)
Benign:
  GET /v1/masked           x-api-key      -> masked echo "sk_live_****1234"
  GET /v1/status, GET /    normal JSON / HTML, no credential
"""

import argparse
import html
import json
import ssl
import sys
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

# A client that stalls mid-request must not hold a thread forever.
CONNECTION_IDLE_TIMEOUT_S = 30
MAX_REQUEST_BODY = 1 << 20


class DemoHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive
    server_version = "demo-api/1.0"
    timeout = CONNECTION_IDLE_TIMEOUT_S

    def log_message(self, fmt, *args):  # access log without query strings
        sys.stderr.write(f"demo-api: {self.command} {self.path.split('?')[0]} {args[1] if len(args) > 1 else ''}\n")

    def send_body(self, status, body: bytes, content_type: str, extra_headers=()):
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for name, value in extra_headers:
            self.send_header(name, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def send_json(self, status, payload, extra_headers=()):
        self.send_body(status, json.dumps(payload).encode(), "application/json", extra_headers)

    def bearer(self) -> str:
        auth = self.headers.get("Authorization", "")
        return auth[7:].strip() if auth.lower().startswith("bearer ") else ""

    def drain_body(self):
        length = int(self.headers.get("Content-Length") or 0)
        if length > MAX_REQUEST_BODY:
            self.close_connection = True
            return None
        return self.rfile.read(length) if length > 0 else b""

    def do_HEAD(self):
        self.do_GET()

    def do_POST(self):
        body = self.drain_body()
        if body is None:
            self.send_json(413, {"error": "request body too large"})
            return
        self.send_json(200, {"received": len(body)})

    def do_GET(self):
        url = urllib.parse.urlsplit(self.path)
        query = urllib.parse.parse_qs(url.query)
        path = url.path
        if path == "/v1/items":
            key = self.headers.get("x-api-key")
            if not key:
                self.send_json(401, {"error": "missing x-api-key"})
            else:
                # The leak: the rejected key quoted back in the error.
                self.send_json(400, {"error": "invalid api key", "key": key})
        elif path == "/oauth/authorize":
            fragment = urllib.parse.urlencode(
                {"access_token": self.bearer(), "token_type": "bearer",
                 "state": query.get("state", [""])[0]}
            )
            self.send_body(302, b"", "text/plain",
                           [("Location", f"https://app.example/cb#{fragment}")])
        elif path == "/debug":
            self.send_json(200, {"path": path, "headers": dict(self.headers.items())})
        elif path == "/search":
            key = query.get("api_key", [""])[0]
            page = (
                "<!doctype html><html><head><title>Search</title></head><body>"
                f"<p>Results for key <code>{html.escape(key)}</code></p></body></html>"
            )
            self.send_body(200, page.encode(), "text/html; charset=utf-8")
        elif path == "/v1/masked":
            key = self.headers.get("x-api-key", "")
            masked = f"{key[:8]}****{key[-4:]}" if len(key) > 12 else "****"
            self.send_json(200, {"key": masked})
        elif path == "/v1/status":
            self.send_json(200, {"status": "ok", "version": "1.0.0"})
        elif path == "/":
            self.send_body(200, b"<!doctype html><title>demo</title><p>demo api</p>",
                           "text/html; charset=utf-8")
        else:
            self.send_json(404, {"error": "not found"})


class TLSThreadingServer(ThreadingHTTPServer):
    """TLS handshake in the connection's thread, not in accept(): one slow or
    broken client cannot stall the listener."""

    daemon_threads = True

    def __init__(self, address, handler, context: ssl.SSLContext):
        self.tls_context = context
        super().__init__(address, handler)

    def finish_request(self, request, client_address):
        request.settimeout(CONNECTION_IDLE_TIMEOUT_S)
        try:
            tls = self.tls_context.wrap_socket(request, server_side=True)
        except (ssl.SSLError, OSError) as err:
            sys.stderr.write(f"demo-api: TLS handshake with {client_address[0]} failed: {err}\n")
            return
        try:
            self.RequestHandlerClass(tls, client_address, self)
        finally:
            tls.close()


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--cert", required=True)
    parser.add_argument("--key", required=True)
    args = parser.parse_args()

    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(args.cert, args.key)
    server = TLSThreadingServer((args.host, args.port), DemoHandler, context)
    print(f"demo-api: listening on https://{args.host}:{args.port}", file=sys.stderr, flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


if __name__ == "__main__":
    main()
