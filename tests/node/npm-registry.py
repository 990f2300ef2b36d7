#!/usr/bin/env python3
"""A caching proxy of the npm registry on 127.0.0.1, for jaam's tests.

The instance boxes (tests/boxes.rs) have no network but the ports forwarded
into them; their builds install from this proxy (`npm_config_registry`), so
`npm ci` on a box downloads the same packages a real instance downloads from
registry.npmjs.org. Tarballs are immutable: each is kept under CACHE_DIR and
served from there ever after, so a warm CI machine downloads nothing.
Package documents (packuments) are fetched each time, with their tarball
URLs pointing here, and the last copy is served when the registry cannot be
reached. (verdaccio, the usual choice, does not install from the registry
mirror CI has.)

    npm-registry.py PORT CACHE_DIR [UPSTREAM]
"""

import hashlib
import http.server
import os
import shutil
import sys
import tempfile
import threading
import urllib.error
import urllib.parse
import urllib.request

PORT = int(sys.argv[1])
CACHE = sys.argv[2]
UPSTREAM = (sys.argv[3] if len(sys.argv) > 3 else "https://registry.npmjs.org").rstrip("/")
SELF = f"http://127.0.0.1:{PORT}"
LOCKS: dict[str, threading.Lock] = {}
LOCKS_LOCK = threading.Lock()


def lock_for(key: str) -> threading.Lock:
    with LOCKS_LOCK:
        return LOCKS.setdefault(key, threading.Lock())


def cache_path(kind: str, path: str) -> str:
    digest = hashlib.sha256(path.encode()).hexdigest()
    name = os.path.basename(urllib.parse.unquote(path))[:80]
    return os.path.join(CACHE, kind, f"{digest[:16]}-{name}")


def fetch(path: str, accept: str) -> bytes:
    request = urllib.request.Request(UPSTREAM + path, headers={"Accept": accept})
    with urllib.request.urlopen(request, timeout=120) as answer:
        return answer.read()


def store(target: str, body: bytes) -> None:
    os.makedirs(os.path.dirname(target), exist_ok=True)
    fd, temporary = tempfile.mkstemp(dir=os.path.dirname(target))
    with os.fdopen(fd, "wb") as out:
        out.write(body)
    os.replace(temporary, target)


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, format, *args):  # noqa: A002 (the base class's name)
        sys.stderr.write("npm-registry: " + (format % args) + "\n")

    def answer(self, status: int, body: bytes, kind: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def do_HEAD(self):  # noqa: N802 (the base class's name)
        self.do_GET()

    def do_GET(self):  # noqa: N802 (the base class's name)
        path = self.path.split("?", 1)[0]
        if path == "/-/ping":
            return self.answer(200, b"{}", "application/json")
        try:
            if "/-/" in path and path.endswith(".tgz"):
                self.tarball(path)
            else:
                self.packument(path)
        except urllib.error.HTTPError as error:
            self.answer(error.code, error.read(), "application/json")
        except (OSError, urllib.error.URLError) as error:
            self.answer(502, f'{{"error": "upstream: {error}"}}'.encode(), "application/json")

    def tarball(self, path: str) -> None:
        target = cache_path("tarballs", path)
        with lock_for(target):
            if not os.path.exists(target):
                store(target, fetch(path, "*/*"))
        with open(target, "rb") as cached:
            self.send_response(200)
            self.send_header("Content-Type", "application/octet-stream")
            self.send_header("Content-Length", str(os.fstat(cached.fileno()).st_size))
            self.end_headers()
            if self.command != "HEAD":
                shutil.copyfileobj(cached, self.wfile)

    def packument(self, path: str) -> None:
        accept = self.headers.get("Accept", "application/json")
        target = cache_path("packuments", path + "#" + accept)
        try:
            body = fetch(path, accept).replace(UPSTREAM.encode() + b"/", SELF.encode() + b"/")
            store(target, body)
        except urllib.error.HTTPError:
            raise
        except (OSError, urllib.error.URLError):
            if not os.path.exists(target):
                raise
            with open(target, "rb") as cached:
                body = cached.read()
        self.answer(200, body, "application/json")


if __name__ == "__main__":
    os.makedirs(CACHE, exist_ok=True)
    server = http.server.ThreadingHTTPServer(("127.0.0.1", PORT), Handler)
    server.daemon_threads = True
    server.serve_forever()
