#!/usr/bin/env python3
"""TLS clients for the e2e tests and the demo: keep-alive sequences, concurrent
connections, uploads.  http.client is standard library; httpx is used when
`--lib httpx` is given (from the tools venv).

Prints one JSON object per request on stdout: what the client saw (status,
body length, body sha256, the local port of the connection).  Never prints a
header value or a body, so no credential reaches test output.

    client.py keepalive  --port P --cacert C --n 10 --path '/v1/items/k{i}' -H 'x-api-key: K'
    client.py concurrent --port P --cacert C --threads 20 --per-thread 3 \
                         --keys-file keys.txt --key-header x-api-key --path '/v1/items/t{t}-{i}'
    client.py upload     --port P --cacert C --size 1048576 --path /v1/upload
    client.py demo       --port P --cacert C      # leaky traffic for `cargo xtask demo`
    client.py plan       --port P --cacert C --lib httpx --http2 --plan-file plan.json
    client.py raw-h2     --port P --cacert C --path /v1/trace -H 'authorization: Bearer T'

`--http2` (httpx only) speaks HTTP/2 only (ALPN h2) and fails unless every
response really was HTTP/2.  `plan` sends the requests of a JSON file
([{"method", "path", "headers": [[name, value], ...], "body_file": path|null}],
it holds credentials: the caller keeps it private) in order on one connection.
`raw-h2` sends one request with the h2 library itself and reports the
response's trailers: each name, with the names of the request headers whose
values it repeats (never a value); with `--end-early reset|close` it ends the
stream as curl does once the body has its content-length.

Templates: {i} = request index (from 0), {t} = thread index, {key} = the thread's key.
"""

import argparse
import hashlib
import http.client
import json
import secrets
import ssl
import sys
import threading

# Every request is bounded: a stuck server fails the client instead of hanging a test.
REQUEST_TIMEOUT_S = 20


def tls_context(cacert: str) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=cacert)


def parse_headers(items, **fmt):
    headers = {}
    for item in items or []:
        name, _, value = item.partition(":")
        headers[name.strip()] = value.strip().format(**fmt)
    return headers


class Connection:
    """One TLS connection, kept alive across requests (http.client or httpx)."""

    def __init__(self, lib: str, host: str, port: int, cacert: str, http2: bool = False):
        self.lib = lib
        self.http2 = http2
        self.base = f"https://{host}:{port}"
        if http2 and lib != "httpx":
            sys.exit("client.py: --http2 needs --lib httpx")
        if lib == "httpx":
            import httpx  # only in the tools venv

            self.client = httpx.Client(
                verify=tls_context(cacert),
                http1=not http2,
                http2=http2,
                timeout=REQUEST_TIMEOUT_S,
                limits=httpx.Limits(max_connections=1, max_keepalive_connections=1),
            )
        else:
            self.conn = http.client.HTTPSConnection(
                host, port, context=tls_context(cacert), timeout=REQUEST_TIMEOUT_S
            )

    def request(self, method: str, path: str, headers: dict, body: bytes | None = None):
        if self.lib == "httpx":
            # No automatic Accept-Encoding: bodies must arrive as the test expects.
            headers = {"accept-encoding": "identity", **headers}
            resp = self.client.request(method, self.base + path, headers=headers, content=body)
            data = resp.content
            self.http_version = resp.http_version
            # Bytes as they came over the wire (before any content decoding).
            self.raw_len = resp.num_bytes_downloaded
            if self.http2 and resp.http_version != "HTTP/2":
                sys.exit(f"client.py: --http2 but the response was {resp.http_version}")
            local_port = None
            stream = resp.extensions.get("network_stream")
            if stream is not None:
                sock = stream.get_extra_info("socket")
                if sock is not None:
                    local_port = sock.getsockname()[1]
            return resp.status_code, data, local_port
        self.conn.request(method, path, body=body, headers=headers)
        resp = self.conn.getresponse()
        data = resp.read()
        local_port = self.conn.sock.getsockname()[1] if self.conn.sock else None
        return resp.status, data, local_port

    def close(self):
        if self.lib == "httpx":
            self.client.close()
        else:
            self.conn.close()


def report(**fields):
    sys.stdout.write(json.dumps(fields) + "\n")
    sys.stdout.flush()


def describe(status, data, local_port, **extra):
    return dict(
        extra,
        status=status,
        body_len=len(data),
        body_sha256=hashlib.sha256(data).hexdigest(),
        local_port=local_port,
    )


def cmd_keepalive(args):
    conn = Connection(args.lib, args.host, args.port, args.cacert, http2=args.http2)
    try:
        for i in range(args.n):
            path = args.path.format(i=i, t=0)
            status, data, port = conn.request(args.method, path, parse_headers(args.header, i=i, t=0))
            report(**describe(status, data, port, i=i, path=path))
    finally:
        conn.close()


def cmd_concurrent(args):
    with open(args.keys_file) as f:
        keys = [line.strip() for line in f if line.strip()]
    if len(keys) < args.threads:
        sys.exit(f"client.py: {args.keys_file} has {len(keys)} keys, need {args.threads}")
    lock = threading.Lock()
    errors = []
    start = threading.Barrier(args.threads)

    def worker(t: int):
        try:
            conn = Connection(args.lib, args.host, args.port, args.cacert)
            start.wait(timeout=REQUEST_TIMEOUT_S)
            try:
                for i in range(args.per_thread):
                    path = args.path.format(i=i, t=t, key="")
                    headers = {args.key_header: keys[t]}
                    status, data, port = conn.request("GET", path, headers)
                    with lock:
                        report(**describe(status, data, port, thread=t, i=i, path=path))
            finally:
                conn.close()
        except Exception as err:  # reported, and the exit code says it failed
            with lock:
                errors.append(f"thread {t}: {type(err).__name__}")

    threads = [threading.Thread(target=worker, args=(t,)) for t in range(args.threads)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    if errors:
        sys.exit("client.py: " + "; ".join(errors))


def cmd_upload(args):
    # Deterministic upload body (i % 251), so tests can predict length and hash.
    pattern = bytes(range(251))
    body = (pattern * (args.size // len(pattern) + 1))[: args.size]
    conn = Connection(args.lib, args.host, args.port, args.cacert)
    try:
        headers = parse_headers(args.header)
        headers.setdefault("Content-Type", "application/octet-stream")
        for i in range(args.n):
            status, data, port = conn.request("POST", args.path, headers, body)
            try:
                echoed = json.loads(data)
            except ValueError:
                echoed = None
            report(**describe(status, data, port, i=i, sent=len(body),
                              sent_sha256=hashlib.sha256(body).hexdigest(), echoed=echoed))
    finally:
        conn.close()


def cmd_plan(args):
    with open(args.plan_file) as f:
        plan = json.load(f)
    conn = Connection(args.lib, args.host, args.port, args.cacert, http2=args.http2)
    try:
        for i, req in enumerate(plan):
            body = None
            if req.get("body_file"):
                with open(req["body_file"], "rb") as f:
                    body = f.read()
            headers = {name: value for name, value in req.get("headers", [])}
            status, data, port = conn.request(req["method"], req["path"], headers, body)
            extra = {}
            if args.lib == "httpx":
                extra = dict(http_version=conn.http_version, raw_len=conn.raw_len)
            # The query may hold a credential: only the path is reported.
            report(**describe(status, data, port, i=i, path=req["path"].split("?")[0], **extra))
    finally:
        conn.close()


def cmd_raw_h2(args):
    """One request with the h2 library: the response's trailers (names), and
    how the stream ended.  `--end-early reset|close`: as soon as the body has
    its content-length, reset the stream (RST_STREAM CANCEL, as curl does) or
    close the connection, without reading the END_STREAM that may follow."""
    import socket

    import h2.config  # only in the tools venv
    import h2.connection
    import h2.errors
    import h2.events

    ctx = tls_context(args.cacert)
    ctx.set_alpn_protocols(["h2"])
    raw = socket.create_connection((args.host, args.port), timeout=REQUEST_TIMEOUT_S)
    sock = ctx.wrap_socket(raw, server_hostname=args.host)
    try:
        if sock.selected_alpn_protocol() != "h2":
            sys.exit(f"client.py: ALPN chose {sock.selected_alpn_protocol()!r}, not h2")
        conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
        conn.initiate_connection()
        headers = [(":method", "GET"), (":path", args.path), (":scheme", "https"),
                   (":authority", f"{args.host}:{args.port}")]
        headers += [(n.lower(), v) for n, v in parse_headers(args.header).items()]
        conn.send_headers(1, headers, end_stream=True)
        sock.sendall(conn.data_to_send())
        status, data, names, trailers, ended_by = None, b"", [], {}, None
        content_length = None
        while ended_by is None:
            chunk = sock.recv(65536)
            if not chunk:
                sys.exit("client.py: connection closed before the stream ended")
            for event in conn.receive_data(chunk):
                if isinstance(event, h2.events.ResponseReceived):
                    for n, v in event.headers:
                        if n == b":status":
                            status = int(v)
                        else:
                            names.append(n.decode())
                        if n == b"content-length":
                            content_length = int(v)
                elif isinstance(event, h2.events.DataReceived):
                    data += event.data
                    conn.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
                elif isinstance(event, h2.events.TrailersReceived):
                    for n, v in event.headers:
                        # Which request headers' values the trailer repeats (names only).
                        trailers[n.decode()] = [rn for rn, rv in headers
                                                if not rn.startswith(":") and rv.encode() in v]
                elif isinstance(event, h2.events.StreamEnded):
                    ended_by = "end_stream"
                elif isinstance(event, h2.events.StreamReset):
                    sys.exit("client.py: stream reset by the server")
            complete = content_length is not None and len(data) >= content_length
            if ended_by is None and args.end_early and complete:
                ended_by = args.end_early
                if args.end_early == "reset":
                    conn.reset_stream(1, error_code=h2.errors.ErrorCodes.CANCEL)
            sock.sendall(conn.data_to_send())
        if ended_by != "close":
            conn.close_connection()
            sock.sendall(conn.data_to_send())
        report(**describe(status, data, sock.getsockname()[1], path=args.path.split("?")[0],
                          http_version="HTTP/2", header_names=names, trailers=trailers,
                          ended_by=ended_by))
    finally:
        sock.close()


def cmd_demo(args):
    """Leaky and benign traffic against demo_api.py, with fresh random credentials."""
    api_key = "sk_live_" + secrets.token_hex(16)
    bearer = "tok_" + secrets.token_urlsafe(24)
    conn = Connection(args.lib, args.host, args.port, args.cacert)
    plan = [
        ("GET", "/v1/items", {"x-api-key": api_key}),
        ("GET", "/v1/masked", {"x-api-key": api_key}),
        ("GET", "/oauth/authorize?response_type=token&state=demo", {"Authorization": f"Bearer {bearer}"}),
        ("GET", "/debug", {"Authorization": f"Bearer {bearer}"}),
        ("GET", "/search?api_key=" + api_key, {}),
        ("GET", "/v1/status", {"x-api-key": api_key}),
    ]
    try:
        for round_ in range(args.rounds):
            for method, path, headers in plan:
                status, data, port = conn.request(method, path, headers)
                report(**describe(status, data, port, round=round_, path=path.split("?")[0]))
    finally:
        conn.close()


def main():
    parser = argparse.ArgumentParser(description="TLS test clients (see module doc).")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--host", default="127.0.0.1")
    common.add_argument("--port", type=int, required=True)
    common.add_argument("--cacert", required=True)
    common.add_argument("--lib", choices=["http.client", "httpx"], default="http.client")
    common.add_argument("--http2", action="store_true", help="httpx: HTTP/2 only, checked")
    sub = parser.add_subparsers(dest="cmd", required=True)

    p = sub.add_parser("keepalive", parents=[common])
    p.add_argument("--n", type=int, default=10)
    p.add_argument("--method", default="GET")
    p.add_argument("--path", required=True)
    p.add_argument("-H", "--header", action="append")
    p.set_defaults(func=cmd_keepalive)

    p = sub.add_parser("concurrent", parents=[common])
    p.add_argument("--threads", type=int, default=20)
    p.add_argument("--per-thread", type=int, default=3)
    p.add_argument("--keys-file", required=True)
    p.add_argument("--key-header", default="x-api-key")
    p.add_argument("--path", required=True)
    p.set_defaults(func=cmd_concurrent)

    p = sub.add_parser("upload", parents=[common])
    p.add_argument("--size", type=int, default=1 << 20)
    p.add_argument("--n", type=int, default=1)
    p.add_argument("--path", default="/v1/upload")
    p.add_argument("-H", "--header", action="append")
    p.set_defaults(func=cmd_upload)

    p = sub.add_parser("plan", parents=[common])
    p.add_argument("--plan-file", required=True)
    p.set_defaults(func=cmd_plan)

    p = sub.add_parser("raw-h2", parents=[common])
    p.add_argument("--path", required=True)
    p.add_argument("-H", "--header", action="append")
    p.add_argument("--end-early", choices=["reset", "close"])
    p.set_defaults(func=cmd_raw_h2)

    p = sub.add_parser("demo", parents=[common])
    p.add_argument("--rounds", type=int, default=1)
    p.set_defaults(func=cmd_demo)

    args = parser.parse_args()
    args.func(args)


if __name__ == "__main__":
    main()
