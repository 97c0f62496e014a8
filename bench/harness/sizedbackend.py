#!/usr/bin/env python3
"""A light backend for bench/bench.sh's scaling figures (stdlib only).

    GET /api/v1/tasks/<n>       a task-shaped JSON body of --task-bytes bytes, for
                                every integer 0 <= n < --tasks (404 otherwise)
    GET /blob/<size>/<n>        a JSON body of exactly <size> bytes (1..4 MiB)
    GET /_bench/stats           {"db_reads": <requests answered 200>}
    GET /healthz                200

It "knows" --tasks tasks without holding them: each body is built from its
id when asked (no per-task memory, starts at once, whatever --tasks is).
`bench/harness/backend.py --tasks 1000000` would need ~1.3 GB of RSS and
~25 s to start (measured: make_tasks alone 22 s, 1.28 GB), and, at a few
thousand requests per second, minutes to fill a million cache entries; this
one answers a miss in a few tens of µs. No simulated DB latency (the
scaling figures are about cachegate's CPU, not the backend's).
"""
from __future__ import annotations

import argparse
import asyncio
import json

MAX_BLOB = 4 << 20


class Backend(asyncio.Protocol):
    tasks = 1_000_000
    task_bytes = 600
    served = 0
    _pads: dict[int, bytes] = {}

    def connection_made(self, transport) -> None:
        self.t = transport
        self.buf = b""

    def data_received(self, data: bytes) -> None:
        self.buf += data
        while True:
            i = self.buf.find(b"\r\n\r\n")
            if i < 0:
                return
            head, self.buf = self.buf[:i], self.buf[i + 4:]
            line = head.split(b"\r\n", 1)[0]
            parts = line.split(b" ")
            if len(parts) < 2:
                self.t.close()
                return
            # bodies of requests (PUT) are ignored: GET only in these runs
            for h in head.split(b"\r\n")[1:]:
                if h[:15].lower() == b"content-length:":
                    n = int(h[15:])
                    self.buf = self.buf[n:]
            self.t.write(self.answer(parts[1].decode("latin-1")))

    def pad(self, n: int) -> bytes:
        p = self._pads.get(n)
        if p is None:
            p = self._pads[n] = b"x" * max(n, 0)
        return p

    def body(self, tid: str, size: int) -> bytes:
        head = b'{"id":"%s","size":%d,"pad":"' % (tid.encode(), size)
        return head + self.pad(size - len(head) - 2) + b'"}'

    def answer(self, path: str) -> bytes:
        status, body = 404, b'{"detail":"not found"}'
        p = path.split("?", 1)[0].split("/")
        try:
            if path == "/healthz":
                status, body = 200, b'{"ok":true}'
            elif path == "/_bench/stats":
                status, body = 200, json.dumps({"db_reads": Backend.served}).encode()
            elif len(p) == 5 and p[1:4] == ["api", "v1", "tasks"] and 0 <= int(p[4]) < self.tasks:
                status, body = 200, self.body(p[4], self.task_bytes)
            elif len(p) == 4 and p[1] == "blob" and 16 <= int(p[2]) <= MAX_BLOB:
                status, body = 200, self.body(p[3], int(p[2]))
        except ValueError:
            pass
        if status == 200 and path != "/healthz" and path != "/_bench/stats":
            Backend.served += 1
        reason = b"OK" if status == 200 else b"Not Found"
        return (b"HTTP/1.1 %d %s\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n"
                % (status, reason, len(body))) + body


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--tasks", type=int, default=1_000_000)
    ap.add_argument("--task-bytes", type=int, default=600, help="size of a task body (default 600)")
    a = ap.parse_args()
    Backend.tasks, Backend.task_bytes = a.tasks, a.task_bytes
    loop = asyncio.get_running_loop()
    srv = await loop.create_server(Backend, a.host, a.port, backlog=4096)
    async with srv:
        await srv.serve_forever()


if __name__ == "__main__":
    asyncio.run(main())
