#!/usr/bin/env python3
"""A leaky HTTPS API on pyOpenSSL: TLS from the OpenSSL that the
`cryptography` wheel links into its own extension module (not the system
libssl), as Twisted and daphne servers use it.

    python leaky_pyopenssl.py --port 23020 --cert cert.pem --key key.pem

HTTP/1.1 keep-alive, one connection at a time.  Every request gets a 401
whose JSON error quotes the request's x-api-key back (the classic leak).
"""

import argparse
import json
import socket
import struct

from OpenSSL import SSL

# A client that stalls must not hold the server forever.
IDLE_TIMEOUT_S = 30
MAX_HEAD = 64 * 1024


def serve(conn):
    conn.do_handshake()
    buf = b""
    while True:
        while b"\r\n\r\n" not in buf:
            if len(buf) > MAX_HEAD:
                return
            chunk = conn.recv(65536)
            if not chunk:
                return
            buf += chunk
        head, buf = buf.split(b"\r\n\r\n", 1)
        key = ""
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"x-api-key":
                key = value.strip().decode("latin-1")
        body = json.dumps({"error": f"Invalid API key: {key}"}).encode()
        conn.sendall(
            b"HTTP/1.1 401 Unauthorized\r\nContent-Type: application/json\r\n"
            + b"Content-Length: %d\r\n\r\n" % len(body)
            + body
        )


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--cert", required=True)
    p.add_argument("--key", required=True)
    a = p.parse_args()
    ctx = SSL.Context(SSL.TLS_SERVER_METHOD)
    ctx.use_certificate_file(a.cert)
    ctx.use_privatekey_file(a.key)
    ls = socket.socket()
    ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    ls.bind(("127.0.0.1", a.port))
    ls.listen(16)
    while True:
        sock, _ = ls.accept()
        # A kernel receive timeout, not settimeout(): that would make the
        # socket non-blocking, which pyOpenSSL reports as WantReadError.
        sock.setsockopt(
            socket.SOL_SOCKET, socket.SO_RCVTIMEO, struct.pack("ll", IDLE_TIMEOUT_S, 0)
        )
        conn = SSL.Connection(ctx, sock)
        conn.set_accept_state()
        try:
            serve(conn)
        except (SSL.Error, OSError):
            pass
        finally:
            sock.close()


if __name__ == "__main__":
    main()
