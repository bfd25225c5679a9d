"""A local stand-in for Slack incoming webhooks: Slack itself cannot be reached from here.

It follows the documented incoming-webhook behaviour: POST JSON to a registered
``/services/...`` path; ``200 ok`` when accepted; ``400 invalid_payload`` for a body
that is not JSON, ``400 no_text`` for JSON with neither ``text`` nor ``blocks``;
``404 no_service`` for an unknown path; ``429 rate_limited`` with ``Retry-After``;
5xx when Slack has trouble. Tests script the next responses per path (or make a
path hang, like a blackholed connection) and read back every attempt and every
accepted payload. Runs on 127.0.0.1 on a random port in a thread of its own.
"""

from __future__ import annotations

import json
import secrets
import threading
import time
from collections import defaultdict, deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class Scripted:
    status: int
    body: str
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class Attempt:
    path: str
    at: float
    status: int | None  # None: hung, never answered


class FakeSlack:
    def __init__(self) -> None:
        self.hooks: set[str] = set()
        self.script: dict[str, deque[Scripted]] = defaultdict(deque)
        self.accepted: dict[str, list[dict[str, Any]]] = defaultdict(list)
        self.attempts: list[Attempt] = []
        self.hang: set[str] = set()
        self.generic: set[str] = set()  # plain JSON webhooks: any JSON object is accepted
        self.release = threading.Event()
        self.lock = threading.Lock()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    # -- test API -----------------------------------------------------------
    def __enter__(self) -> FakeSlack:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def new_hook(self, label: str = "hook") -> str:
        """Register a webhook and return its full URL (Slack's shape: /services/T.../B.../secret)."""
        path = f"/services/T{label}/B{label}/{secrets.token_hex(12)}"
        self.hooks.add(path)
        return self.base_url + path

    def new_json_hook(self, label: str = "json") -> str:
        """A generic JSON webhook (not Slack): accepts any JSON object, records it, answers 200 ok."""
        url = self.new_hook(label)
        self.generic.add(_path(url))
        return url

    def then(self, url: str, status: int, body: str, **headers: str) -> None:
        """Answer the next otherwise-valid POST to ``url`` with this response (FIFO)."""
        self.script[_path(url)].append(Scripted(status, body, {k.replace("_", "-"): v for k, v in headers.items()}))

    def messages(self, url: str) -> list[dict[str, Any]]:
        with self.lock:
            return list(self.accepted[_path(url)])

    def attempts_for(self, url: str) -> list[Attempt]:
        with self.lock:
            return [a for a in self.attempts if a.path == _path(url)]

    # -- server ---------------------------------------------------------------
    def _handler(self) -> type[BaseHTTPRequestHandler]:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:  # quiet; and URLs are secrets
                pass

            def _answer(self, status: int, body: str, headers: dict[str, str] | None = None) -> None:
                with fake.lock:
                    fake.attempts.append(Attempt(self.path, time.monotonic(), status))
                data = body.encode()
                self.send_response(status)
                self.send_header("Content-Type", "text/html")
                self.send_header("Content-Length", str(len(data)))
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(data)

            def do_POST(self) -> None:  # noqa: N802
                raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                if self.path in fake.hang:
                    with fake.lock:
                        fake.attempts.append(Attempt(self.path, time.monotonic(), None))
                    fake.release.wait(30)  # a blackhole: the connection stays open, nothing comes back
                    return
                if self.path not in fake.hooks:
                    return self._answer(404, "no_service")
                try:
                    payload = json.loads(raw)
                except ValueError:
                    return self._answer(400, "invalid_payload")
                if not isinstance(payload, dict):
                    return self._answer(400, "invalid_payload")
                if self.path not in fake.generic and not payload.get("text") and not payload.get("blocks"):
                    return self._answer(400, "no_text")
                with fake.lock:
                    scripted = fake.script[self.path].popleft() if fake.script[self.path] else None
                if scripted is not None:
                    return self._answer(scripted.status, scripted.body, scripted.headers)
                with fake.lock:
                    fake.accepted[self.path].append(payload)
                self._answer(200, "ok")

        return Handler


def _path(url: str) -> str:
    return "/" + url.split("/", 3)[3]
