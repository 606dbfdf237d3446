#!/usr/bin/env python3
"""A stand-in for `sensor run`, for the harness's own tests: serves /readyz and
/metrics on --metrics-addr, writes one contract-shaped pair and finding, and
exits 0 on SIGTERM.  It captures nothing."""

import argparse
import json
import signal
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

parser = argparse.ArgumentParser()
parser.add_argument("cmd")
parser.add_argument("--findings", required=True)
parser.add_argument("--pairs", required=True)
parser.add_argument("--metrics-addr", required=True)
parser.add_argument("--api-addr", required=True)
args, _ = parser.parse_known_args()

conn = {"id": "4242:7f00:1", "peer": None}
process = {"pid": 4242, "comm": "uvicorn", "container_id": None, "pod": None}
pair = {
    "schema": "sensor.pair.v1", "ts": "2026-11-22T21:00:00.120000Z", "role": "server",
    "process": {"pid": 4242, "comm": "uvicorn"}, "connection": dict(conn, seq=1),
    "request": {"method": "GET", "path": "/v1/items", "version": "HTTP/1.1",
                "headers": [["host", "api.example"], ["x-api-key", "<redacted>"]],
                "body_len": 0, "body_truncated": False},
    "response": {"status": 401, "version": "HTTP/1.1",
                 "headers": [["content-type", "application/json"]],
                 "body_len": 58, "body_truncated": False},
    "latency_us": 1830,
}
finding = {
    "schema": "sensor.finding.v1", "ts": "2026-11-22T21:00:00.123456Z", "kind": "credential_leak",
    "severity": "high", "exposure": "full",
    "credential": {"source": "header", "name": "x-api-key", "type": "api_key",
                   "fingerprint": "3f9a0c1b2d4e5f60", "length": 30},
    "sink": {"location": "body", "name": None, "encoding": "plain",
             "content_encoding": "identity", "offset": 29},
    "request": {"method": "GET", "path": "/v1/items", "host": "api.example"},
    "response": {"status": 401, "content_type": "application/json"},
    "role": "server", "process": process, "connection": conn,
}
with open(args.pairs, "a") as f:
    f.write(json.dumps(pair) + "\n")
with open(args.findings, "a") as f:
    f.write(json.dumps(finding) + "\n")
    f.write('{"schema": "sensor.finding.v1", "partial line still being writ')


class Handler(BaseHTTPRequestHandler):
    def log_message(self, *a):
        pass

    def do_GET(self):
        if self.path == "/readyz":
            body = b"ready\n"
        elif self.path == "/metrics":
            body = b'sensor_masked_echoes_total{role="server",sink="body"} 2\nsensor_capture_lost_events_total 0\n'
        else:
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


host, port = args.metrics_addr.rsplit(":", 1)
server = ThreadingHTTPServer((host, int(port)), Handler)
signal.signal(signal.SIGTERM, lambda *_: threading.Thread(target=server.shutdown).start())
print("fake sensor: ready", file=sys.stderr, flush=True)
server.serve_forever()
sys.exit(0)
