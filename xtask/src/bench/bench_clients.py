#!/usr/bin/env python3
"""Load clients for `cargo xtask bench` (memory); standard library only.

    bench_clients.py hold   --port P --conns N --path /1k.bin
        Opens N TLS connections, makes one keep-alive request on each, prints
        "ready OK ERRORS" and keeps every connection open until stdin closes.
    bench_clients.py upload --port P --conns N --size BYTES --path /upload
        Opens N TLS connections, sends the headers and the first half of a
        BYTES-long body on each, prints "half OK ERRORS", waits for a line on
        stdin, sends the rest, reads every response, prints "done OK ERRORS".

Never prints a body.  Every step is bounded in time.
"""

import argparse
import asyncio
import ssl
import sys

# Handshakes in flight at once (the listen backlog is far larger).
CONNECT_CONCURRENCY = 200
STEP_TIMEOUT_S = 300


def tls_context() -> ssl.SSLContext:
    ctx = ssl.create_default_context()
    # Self-signed benchmark certificate on loopback.
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


async def read_response(reader: asyncio.StreamReader) -> int:
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    if length:
        await reader.readexactly(length)
    return status


def report(word: str, results) -> list:
    ok = [r for r in results if not isinstance(r, BaseException) and r is not None]
    errors = [r for r in results if isinstance(r, BaseException)]
    print(f"{word} {len(ok)} {len(errors)}", flush=True)
    if errors:
        print(f"first error: {errors[0]!r}", file=sys.stderr, flush=True)
    return ok


async def hold(a) -> None:
    sem = asyncio.Semaphore(CONNECT_CONCURRENCY)
    tls = tls_context()
    request = f"GET {a.path} HTTP/1.1\r\nHost: localhost\r\n\r\n".encode()

    async def one():
        async with sem:
            r, w = await asyncio.open_connection("127.0.0.1", a.port, ssl=tls)
            w.write(request)
            await w.drain()
            if await read_response(r) != 200:
                raise RuntimeError("status != 200")
            return (r, w)

    results = await asyncio.wait_for(
        asyncio.gather(*(one() for _ in range(a.conns)), return_exceptions=True),
        STEP_TIMEOUT_S,
    )
    conns = report("ready", results)
    loop = asyncio.get_running_loop()
    await loop.run_in_executor(None, sys.stdin.read)
    for _, w in conns:
        w.close()


async def upload(a) -> None:
    sem = asyncio.Semaphore(CONNECT_CONCURRENCY)
    tls = tls_context()
    half = a.size // 2
    first = b"u" * half
    rest = b"v" * (a.size - half)
    head = (
        f"POST {a.path} HTTP/1.1\r\nHost: localhost\r\n"
        f"Content-Type: application/octet-stream\r\nContent-Length: {a.size}\r\n\r\n"
    ).encode()

    async def start():
        async with sem:
            r, w = await asyncio.open_connection("127.0.0.1", a.port, ssl=tls)
            w.write(head)
            w.write(first)
            await w.drain()
            return (r, w)

    async def finish(rw):
        r, w = rw
        w.write(rest)
        await w.drain()
        status = await read_response(r)
        w.close()
        if status != 200:
            raise RuntimeError(f"status {status}")
        return status

    results = await asyncio.wait_for(
        asyncio.gather(*(start() for _ in range(a.conns)), return_exceptions=True),
        STEP_TIMEOUT_S,
    )
    conns = report("half", results)
    loop = asyncio.get_running_loop()
    await loop.run_in_executor(None, sys.stdin.readline)
    results = await asyncio.wait_for(
        asyncio.gather(*(finish(c) for c in conns), return_exceptions=True),
        STEP_TIMEOUT_S,
    )
    report("done", results)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("mode", choices=["hold", "upload"])
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--conns", type=int, required=True)
    p.add_argument("--path", required=True)
    p.add_argument("--size", type=int, default=1 << 20)
    a = p.parse_args()
    asyncio.run(hold(a) if a.mode == "hold" else upload(a))


if __name__ == "__main__":
    main()
