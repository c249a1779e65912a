"""A pass-through HTTP proxy on loopback that counts the chat completions a real server answered,
so a test can check a report's call counts against what actually went over the wire."""
from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler

import httpx

from loopback import Loopback


class CountingProxy(Loopback):
    def __init__(self, upstream: str):
        self.upstream = upstream.rstrip("/")  # e.g. http://127.0.0.1:8081/v1
        self.completions = 0
        self._lock = threading.Lock()
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def _forward(self, method: str):
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0)) if method == "POST" else None
                headers = {k: v for k, v in self.headers.items() if k.lower() not in ("host", "content-length")}
                path = self.path.removeprefix("/v1")
                reply = httpx.request(method, owner.upstream + path, content=body, headers=headers, timeout=3600)
                if method == "POST" and path.endswith("/chat/completions") and reply.status_code == 200:
                    with owner._lock:
                        owner.completions += 1
                self.send_response(reply.status_code)
                for k, v in reply.headers.items():
                    if k.lower() not in ("content-length", "transfer-encoding", "content-encoding", "connection"):
                        self.send_header(k, v)
                self.send_header("Content-Length", str(len(reply.content)))
                self.end_headers()
                self.wfile.write(reply.content)

            def do_GET(self):
                self._forward("GET")

            def do_POST(self):
                self._forward("POST")

        super().__init__(Handler)

