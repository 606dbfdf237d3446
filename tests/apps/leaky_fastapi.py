"""A FastAPI service that leaks credentials the way real services do.

Run under uvicorn with TLS, e.g.
    uvicorn leaky_fastapi:app --app-dir tests/apps --host 127.0.0.1 --port 23001 \
        --ssl-certfile cert.pem --ssl-keyfile key.pem

Every leak is written the way application code commonly writes it (HTTPException
detail, exception handlers, JSONResponse, RedirectResponse, middleware), not as
a synthetic "echo" endpoint.  The same paths exist in leaky_flask.py; the table
of what each path leaks (source -> sink, encoding) is in tests/README.md and
mirrored by tests/harness/apps.rs.  Benign endpoints carry credentials in the
request but must give no finding.
"""

import base64
import hashlib
import html
import json
import urllib.parse

from fastapi import FastAPI, Header, HTTPException, Request, Response
from fastapi.middleware.gzip import GZipMiddleware
from fastapi.responses import (
    HTMLResponse,
    JSONResponse,
    RedirectResponse,
    StreamingResponse,
)

app = FastAPI(title="leaky-fastapi", docs_url=None, redoc_url=None, openapi_url=None)

# Size of the filler sent before the key in /v1/stream: the key lands past 64 KiB.
STREAM_FILLER_BYTES = 70_000
# /v1/large and /v1/stream/plain sizes (deterministic bodies).
LARGE_BODY_BYTES = 1 << 20
PLAIN_STREAM_CHUNK = 8192
PLAIN_STREAM_CHUNKS = 25


def deterministic_bytes(n: int) -> bytes:
    """n bytes of a fixed pattern (i % 251), so tests can predict length and hash."""
    pattern = bytes(range(251))
    reps, rem = divmod(n, len(pattern))
    return pattern * reps + pattern[:rem]


LARGE_BODY = deterministic_bytes(LARGE_BODY_BYTES)


class SlashEscapingJSONResponse(JSONResponse):
    """JSON with `/` escaped as `\\/` (what ujson, PHP and many gateways emit by
    default; legacy clients of this API expect it)."""

    def render(self, content) -> bytes:
        return json.dumps(content, separators=(",", ":")).replace("/", "\\/").encode()


def bearer_of(authorization: str | None) -> str | None:
    if authorization and authorization.lower().startswith("bearer "):
        return authorization[7:].strip()
    return None


# --- leaks -------------------------------------------------------------------


@app.get("/v1/items")
async def list_items(x_api_key: str | None = Header(default=None)):
    # The classic: the key is "validated" and the error message quotes it back.
    raise HTTPException(status_code=401, detail=f"Invalid API key: {x_api_key}")


@app.get("/v1/items/{tag}")
async def get_item(tag: str, x_api_key: str | None = Header(default=None)):
    raise HTTPException(status_code=401, detail=f"Invalid API key for item {tag}: {x_api_key}")


@app.get("/v1/me")
async def me(request: Request):
    # A debug field left in the profile response.
    return {
        "user": "alice",
        "scopes": ["read", "write"],
        "debug": {"authorization": request.headers.get("authorization")},
    }


@app.get("/oauth/authorize")
async def authorize(request: Request, state: str = "", client_id: str = ""):
    # Implicit-flow style redirect built from the caller's own tokens: the
    # access token in the query, the id token in the fragment.
    token = bearer_of(request.headers.get("authorization")) or ""
    id_token = request.headers.get("x-id-token", "")
    query = urllib.parse.urlencode({"access_token": token, "state": state})
    fragment = urllib.parse.urlencode({"id_token": id_token, "token_type": "bearer"})
    return RedirectResponse(f"https://app.example/cb?{query}#{fragment}", status_code=302)


@app.get("/search", response_class=HTMLResponse)
async def search(api_key: str = "", q: str = ""):
    # Server-rendered page that reflects the key (escaped, so "safe" from XSS).
    return (
        "<!doctype html><html><head><title>Search</title></head><body>"
        f"<h1>Results for {html.escape(q)}</h1>"
        f"<p>Searching with key <code>{html.escape(api_key)}</code></p>"
        "<ul><li>nothing found</li></ul></body></html>"
    )


@app.get("/v1/account")
async def account(request: Request):
    auth = request.headers.get("authorization", "")
    user, password = "", ""
    if auth.lower().startswith("basic "):
        decoded = base64.b64decode(auth[6:]).decode("utf-8", "replace")
        user, _, password = decoded.partition(":")
    raise HTTPException(status_code=401, detail=f"wrong password '{password}' for user '{user}'")


@app.post("/oauth/token")
async def token(request: Request):
    # application/x-www-form-urlencoded, parsed by hand (no python-multipart).
    form = urllib.parse.parse_qs((await request.body()).decode("utf-8", "replace"))
    client_id = form.get("client_id", [""])[0]
    client_secret = form.get("client_secret", [""])[0]
    grant_type = form.get("grant_type", [""])[0]
    return SlashEscapingJSONResponse(
        status_code=401,
        content={
            "error": "invalid_client",
            "error_description": f"client {client_id} with secret {client_secret} is not allowed "
            f"to use grant {grant_type}",
        },
    )


@app.get("/v1/session")
async def session(x_auth_token: str | None = Header(default=None)):
    return JSONResponse({"session": "active"}, headers={"X-Debug-Token": x_auth_token or ""})


@app.get("/v1/debug/blob")
async def debug_blob(request: Request):
    context = {"path": request.url.path, "authorization": request.headers.get("authorization")}
    blob = base64.b64encode(json.dumps(context).encode()).decode()
    return {"trace_id": "4bf92f3577b34da6", "blob": blob}


@app.get("/v1/links")
async def links(x_api_key: str | None = Header(default=None)):
    key = urllib.parse.quote(x_api_key or "", safe="")
    return {"next": f"https://api.example/v1/items?page=2&api_key={key}"}


@app.get("/v1/stream")
async def stream(x_api_key: str | None = Header(default=None)):
    async def body():
        yield b'{"rows":"'
        sent = 0
        while sent < STREAM_FILLER_BYTES:
            n = min(8192, STREAM_FILLER_BYTES - sent)
            yield b"r" * n
            sent += n
        yield f'","request_key":"{x_api_key}"}}'.encode()

    return StreamingResponse(body(), media_type="application/json")


@app.get("/v1/remember")
async def remember(request: Request):
    # "Remember me" cookie minted from the live session id: a second credential.
    resp = JSONResponse({"remembered": True})
    resp.set_cookie("remember_token", request.cookies.get("session", ""), httponly=True, secure=True)
    return resp


@app.get("/v1/admin")
async def admin(request: Request):
    token = bearer_of(request.headers.get("authorization")) or ""
    raise HTTPException(
        status_code=401,
        detail="Not authenticated",
        headers={
            "WWW-Authenticate": f'Bearer realm="api", error="invalid_token", '
            f'error_description="token {token} has expired"'
        },
    )


# Compressed responses live in a sub-application so only they are gzipped.
gz = FastAPI(docs_url=None, redoc_url=None, openapi_url=None)
gz.add_middleware(GZipMiddleware, minimum_size=256)


@gz.get("/export")
async def export(x_api_key: str | None = Header(default=None)):
    rows = [{"id": i, "name": f"item-{i}", "price": i * 3} for i in range(40)]
    return {"rows": rows, "exported_with": x_api_key}


@gz.get("/report")
async def report():
    rows = [{"id": i, "name": f"item-{i}", "price": i * 3} for i in range(40)]
    return {"rows": rows}


app.mount("/gz", gz)

# --- benign ------------------------------------------------------------------


@app.get("/v1/masked")
async def masked(x_api_key: str | None = Header(default=None)):
    key = x_api_key or ""
    return {"key": f"{key[:8]}****{key[-4:]}" if len(key) > 12 else "****"}


@app.get("/v1/whoami")
async def whoami(request: Request):
    auth = request.headers.get("authorization", "")
    user = ""
    if auth.lower().startswith("basic "):
        user = base64.b64decode(auth[6:]).decode("utf-8", "replace").partition(":")[0]
    return {"user": user}


@app.api_route("/v1/status", methods=["GET", "HEAD"])
async def status():
    return {"status": "ok", "version": "1.4.2"}


@app.get("/v1/large")
async def large():
    return Response(LARGE_BODY, media_type="application/octet-stream")


@app.post("/v1/upload")
async def upload(request: Request):
    data = await request.body()
    return {"received": len(data), "sha256": hashlib.sha256(data).hexdigest()}


@app.get("/v1/stream/plain")
async def stream_plain():
    async def body():
        for i in range(PLAIN_STREAM_CHUNKS):
            yield bytes([ord("a") + i % 26]) * PLAIN_STREAM_CHUNK

    return StreamingResponse(body(), media_type="text/plain")


@app.delete("/v1/items/{tag}", status_code=204)
async def delete_item(tag: str):
    return Response(status_code=204)


@app.get("/v1/etag")
async def etag(if_none_match: str | None = Header(default=None)):
    if if_none_match == '"v1"':
        return Response(status_code=304, headers={"ETag": '"v1"'})
    return JSONResponse({"version": 1}, headers={"ETag": '"v1"'})


@app.get("/v1/profile")
async def profile(request: Request):
    # Re-sets the same session cookie (sliding expiry): not a leak.
    resp = JSONResponse({"profile": "alice"})
    resp.set_cookie("session", request.cookies.get("session", ""), httponly=True, secure=True)
    return resp
