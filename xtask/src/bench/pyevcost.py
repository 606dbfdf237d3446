"""Event cost through pyOpenSSL: evcost.c's loop (64-byte client write,
server read, server write, client read), on two pyOpenSSL connections joined
by memory BIOs in one thread.  Run by `cargo xtask bench` (event_cost) with
PYTHONPATH on a wheel set (`.tools/openssl35`: the OpenSSL 3.5.2 linked into
the cryptography 45 wheel, whose ssl_write_internal is shrink-wrapped).

    python pyevcost.py CERT KEY PORT ITERATIONS   (PORT unused: no sockets)

Prints one JSON line like evcost.c; CPU = this thread's CPU time (a uprobe's
trap is charged to it), "seconds" the wall time.
"""

import json
import sys
import time

from OpenSSL import SSL

MSG = b"x" * 64


def pump(src, dst):
    while True:
        try:
            data = src.bio_read(65536)
        except SSL.WantReadError:
            return
        dst.bio_write(data)


def main():
    cert, key, iterations = sys.argv[1], sys.argv[2], int(sys.argv[4])
    server_ctx = SSL.Context(SSL.TLS_METHOD)
    server_ctx.use_certificate_file(cert)
    server_ctx.use_privatekey_file(key)
    server = SSL.Connection(server_ctx, None)
    server.set_accept_state()
    client = SSL.Connection(SSL.Context(SSL.TLS_METHOD), None)
    client.set_connect_state()
    for _ in range(20):
        for end in (client, server):
            try:
                end.do_handshake()
            except SSL.WantReadError:
                pass
        pump(client, server)
        pump(server, client)

    def round_trips(n):
        for _ in range(n):
            client.send(MSG)
            pump(client, server)
            if server.recv(64) != MSG:
                sys.exit("pyevcost: server read the wrong bytes")
            server.send(MSG)
            pump(server, client)
            if client.recv(64) != MSG:
                sys.exit("pyevcost: client read the wrong bytes")

    round_trips(min(1000, iterations))
    wall, cpu = time.perf_counter_ns(), time.thread_time_ns()
    round_trips(iterations)
    wall, cpu = time.perf_counter_ns() - wall, time.thread_time_ns() - cpu
    calls = 4 * iterations
    print(json.dumps({
        "iterations": iterations,
        "calls": calls,
        "seconds": wall / 1e9,
        "cpu_seconds": cpu / 1e9,
        "ns_per_call": wall / calls,
        "cpu_ns_per_call": cpu / calls,
    }))


if __name__ == "__main__":
    main()
