"""A backend that answers with exact bytes, for tests: what a buggy or hostile server can send and no HTTP framework would.

Each request (headers and Content-Length body read) gets ``reply`` verbatim, then the connection
is closed. Runs in its own thread on 127.0.0.1.
"""

from __future__ import annotations

import socketserver
import threading
from collections.abc import Iterator
from contextlib import contextmanager


class _Handler(socketserver.StreamRequestHandler):
    server: RawUpstream

    def handle(self) -> None:
        length = 0
        while (line := self.rfile.readline()) not in (b"\r\n", b"\n", b""):
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value.strip())
        self.rfile.read(length)
        self.wfile.write(self.server.reply)
        self.wfile.flush()


class RawUpstream(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True
    reply = b""

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


def http_reply(body: bytes, *, status: bytes = b"200 OK", content_type: bytes = b"application/json", headers: bytes = b"") -> bytes:
    """A complete HTTP/1.1 response with the given raw extra header lines (each ending in CRLF)."""
    return (
        b"HTTP/1.1 "
        + status
        + b"\r\nContent-Type: "
        + content_type
        + b"\r\nContent-Length: "
        + str(len(body)).encode()
        + b"\r\nConnection: close\r\n"
        + headers
        + b"\r\n"
        + body
    )


@contextmanager
def raw_upstream() -> Iterator[RawUpstream]:
    server = RawUpstream(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
