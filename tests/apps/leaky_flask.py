"""A Flask service that leaks credentials the way real services do.

Run under gunicorn with TLS and keep-alive (gthread worker), e.g.
    gunicorn --chdir tests/apps -k gthread --threads 8 --keep-alive 30 \
        --bind 127.0.0.1:23002 --certfile cert.pem --keyfile key.pem leaky_flask:app

Same paths as leaky_fastapi.py (table in tests/README.md); the leaks are written
with Flask idioms: abort() + error handlers, jsonify, redirect,
render_template_string (autoescaped), set_cookie, generators for streaming.
"""

import base64
import gzip
import hashlib
import json
import urllib.parse

from flask import Flask, Response, abort, jsonify, redirect, render_template_string, request
from werkzeug.exceptions import HTTPException

app = Flask(__name__)

STREAM_FILLER_BYTES = 70_000
LARGE_BODY_BYTES = 1 << 20
PLAIN_STREAM_CHUNK = 8192
PLAIN_STREAM_CHUNKS = 25


def deterministic_bytes(n: int) -> bytes:
    """n bytes of a fixed pattern (i % 251), so tests can predict length and hash."""
    pattern = bytes(range(251))
    reps, rem = divmod(n, len(pattern))
    return pattern * reps + pattern[:rem]


LARGE_BODY = deterministic_bytes(LARGE_BODY_BYTES)

SEARCH_PAGE = """<!doctype html>
<html><head><title>Search</title></head><body>
<h1>Results for {{ q }}</h1>
<p>Searching with key <code>{{ api_key }}</code></p>
<ul><li>nothing found</li></ul>
</body></html>"""


@app.errorhandler(HTTPException)
def json_errors(exc: HTTPException):
    # API-style errors: every abort() becomes JSON with its description.
    resp = jsonify(error=exc.name, message=exc.description)
    resp.status_code = exc.code or 500
    return resp


def bearer_token() -> str:
    auth = request.headers.get("Authorization", "")
    return auth[7:].strip() if auth.lower().startswith("bearer ") else ""


# --- leaks -------------------------------------------------------------------


@app.get("/v1/items")
def list_items():
    abort(401, description=f"Invalid API key: {request.headers.get('X-Api-Key')}")


@app.get("/v1/items/<tag>")
def get_item(tag):
    abort(401, description=f"Invalid API key for item {tag}: {request.headers.get('X-Api-Key')}")


@app.get("/v1/me")
def me():
    return jsonify(
        user="alice",
        scopes=["read", "write"],
        debug={"authorization": request.headers.get("Authorization")},
    )


@app.get("/oauth/authorize")
def authorize():
    query = urllib.parse.urlencode(
        {"access_token": bearer_token(), "state": request.args.get("state", "")}
    )
    fragment = urllib.parse.urlencode(
        {"id_token": request.headers.get("X-Id-Token", ""), "token_type": "bearer"}
    )
    return redirect(f"https://app.example/cb?{query}#{fragment}", code=302)


@app.get("/search")
def search():
    return render_template_string(
        SEARCH_PAGE, q=request.args.get("q", ""), api_key=request.args.get("api_key", "")
    )


@app.get("/v1/account")
def account():
    auth = request.authorization
    user = auth.username if auth else ""
    password = auth.password if auth else ""
    abort(401, description=f"wrong password '{password}' for user '{user}'")


@app.post("/oauth/token")
def token():
    body = request.get_json(silent=True) or {}
    return (
        jsonify(
            error="invalid_client",
            error_description=f"client {body.get('client_id')} with secret "
            f"{body.get('client_secret')} is not allowed to use grant {body.get('grant_type')}",
        ),
        401,
    )


@app.get("/v1/session")
def session():
    resp = jsonify(session="active")
    resp.headers["X-Debug-Token"] = request.headers.get("X-Auth-Token", "")
    return resp


@app.get("/v1/debug/blob")
def debug_blob():
    context = {"path": request.path, "authorization": request.headers.get("Authorization")}
    blob = base64.b64encode(json.dumps(context).encode()).decode()
    return jsonify(trace_id="4bf92f3577b34da6", blob=blob)


@app.get("/v1/links")
def links():
    key = urllib.parse.quote(request.headers.get("X-Api-Key", ""), safe="")
    return jsonify(next=f"https://api.example/v1/items?page=2&api_key={key}")


@app.get("/v1/stream")
def stream():
    key = request.headers.get("X-Api-Key", "")

    def body():
        yield b'{"rows":"'
        sent = 0
        while sent < STREAM_FILLER_BYTES:
            n = min(8192, STREAM_FILLER_BYTES - sent)
            yield b"r" * n
            sent += n
        yield f'","request_key":"{key}"}}'.encode()

    return Response(body(), mimetype="application/json")


@app.get("/v1/remember")
def remember():
    resp = jsonify(remembered=True)
    resp.set_cookie(
        "remember_token", request.cookies.get("session", ""), httponly=True, secure=True
    )
    return resp


@app.get("/v1/admin")
def admin():
    resp = jsonify(error="Unauthorized", message="Not authenticated")
    resp.status_code = 401
    resp.headers["WWW-Authenticate"] = (
        f'Bearer realm="api", error="invalid_token", '
        f'error_description="token {bearer_token()} has expired"'
    )
    return resp


def gzipped_json(payload) -> Response:
    raw = json.dumps(payload).encode()
    if "gzip" in request.headers.get("Accept-Encoding", ""):
        resp = Response(gzip.compress(raw), mimetype="application/json")
        resp.headers["Content-Encoding"] = "gzip"
        resp.headers["Vary"] = "Accept-Encoding"
        return resp
    return Response(raw, mimetype="application/json")


@app.get("/gz/export")
def export():
    rows = [{"id": i, "name": f"item-{i}", "price": i * 3} for i in range(40)]
    return gzipped_json({"rows": rows, "exported_with": request.headers.get("X-Api-Key")})


@app.get("/gz/report")
def report():
    rows = [{"id": i, "name": f"item-{i}", "price": i * 3} for i in range(40)]
    return gzipped_json({"rows": rows})


# --- benign ------------------------------------------------------------------


@app.get("/v1/masked")
def masked():
    key = request.headers.get("X-Api-Key", "")
    return jsonify(key=f"{key[:8]}****{key[-4:]}" if len(key) > 12 else "****")


@app.get("/v1/whoami")
def whoami():
    auth = request.authorization
    return jsonify(user=auth.username if auth else "")


@app.get("/v1/status")  # Flask answers HEAD for GET routes.
def status():
    return jsonify(status="ok", version="1.4.2")


@app.get("/v1/large")
def large():
    return Response(LARGE_BODY, mimetype="application/octet-stream")


@app.post("/v1/upload")
def upload():
    data = request.get_data()
    return jsonify(received=len(data), sha256=hashlib.sha256(data).hexdigest())


@app.get("/v1/stream/plain")
def stream_plain():
    def body():
        for i in range(PLAIN_STREAM_CHUNKS):
            yield bytes([ord("a") + i % 26]) * PLAIN_STREAM_CHUNK

    return Response(body(), mimetype="text/plain")


@app.delete("/v1/items/<tag>")
def delete_item(tag):
    return "", 204


@app.get("/v1/etag")
def etag():
    if request.headers.get("If-None-Match") == '"v1"':
        return Response(status=304, headers={"ETag": '"v1"'})
    resp = jsonify(version=1)
    resp.headers["ETag"] = '"v1"'
    return resp


@app.get("/v1/profile")
def profile():
    resp = jsonify(profile="alice")
    resp.set_cookie("session", request.cookies.get("session", ""), httponly=True, secure=True)
    return resp
