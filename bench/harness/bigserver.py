#!/usr/bin/env python3
"""A tiny backend that serves one large body, for bench/bench.sh's
streaming memory figures (stdlib only).

    GET /big/<anything>/len/...      --size bytes of zeros with Content-Length
    GET /big/<anything>/chunked/...  the same bytes, chunked (length unknown)
    GET /healthz                     200

Paths whose last part contains "chunked" are sent chunked; the rest with a
Content-Length. The body is one zero-filled buffer written over and over, so
the server itself needs no memory to speak of (like a sparse file).
"""
from __future__ import annotations

import argparse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

CHUNK = 1 << 20


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    size = 1 << 30
    block = memoryview(bytes(CHUNK))

    def log_message(self, *args) -> None:  # quiet
        pass

    def do_GET(self) -> None:
        if self.path == "/healthz":
            body = b'{"ok":true}'
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
            return
        chunked = "chunked" in self.path.rsplit("/", 1)[-1]
        self.send_response(200)
        self.send_header("Content-Type", "application/octet-stream")
        if chunked:
            self.send_header("Transfer-Encoding", "chunked")
        else:
            self.send_header("Content-Length", str(self.size))
        self.end_headers()
        left = self.size
        try:
            while left > 0:
                n = min(left, CHUNK)
                if chunked:
                    self.wfile.write(b"%x\r\n" % n)
                    self.wfile.write(self.block[:n])
                    self.wfile.write(b"\r\n")
                else:
                    self.wfile.write(self.block[:n])
                left -= n
            if chunked:
                self.wfile.write(b"0\r\n\r\n")
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--size", type=int, default=1 << 30, help="body size in bytes (default 1 GiB)")
    a = ap.parse_args()
    Handler.size = a.size
    srv = ThreadingHTTPServer((a.host, a.port), Handler)
    srv.daemon_threads = True
    srv.serve_forever()


if __name__ == "__main__":
    main()
