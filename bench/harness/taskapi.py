#!/usr/bin/env python3
"""A programmable task API (stdlib only, asyncio) for bench/soak.sh and bench/chaos.sh.

Unlike backend.py (the FastAPI one shared with the peers benchmark) it keeps
a version per task, so a client can tell a stale answer from a fresh one, and
it takes orders at run time (an added latency, for the "backend slow" chaos
phase):

    GET  /api/v1/tasks/{n}             {"id": "n", "version": v, "name": ..., "description": ...}
    GET  /api/v1/short/{n}             the same task (a second cache rule, short TTL + stale-if-error)
    PUT  /api/v1/tasks/{n}             bumps the task's version, answers the new row
    GET  /api/v1/tasks?offset=&limit=  {"items": [{"id", "version"}...]} for ids offset+1..offset+limit
    GET  /healthz                      {"ok": true}
    GET  /_ctl/stats                   request counters
    POST /_ctl/delay?ms=N              every /api/ request waits N ms more (0: off)

Any integer id 0..10^12 exists (version 0 until written); anything else is 404.
With --state FILE the versions survive a restart (SIGKILL included): each
write is appended to FILE (line-buffered, so in the kernel before the answer).
Every /api/ request first awaits --db-latency-ms (a database round trip).
HTTP/1.1 keep-alive, Content-Length bodies, one process, one event loop.

    python3 taskapi.py --port 19201 --db-latency-ms 1
"""
from __future__ import annotations

import argparse
import asyncio
import json
import signal
import sys
import time
from urllib.parse import parse_qs

WORDS = ("the of and to in is that for it with as was on be at by this had not are but from or "
         "have an they which one you were all we her she there would their will when who him").split()


class Api:
    def __init__(self, db_latency_ms: float, body_bytes: int, state: str | None = None):
        self.db_latency = db_latency_ms / 1000.0
        self.delay = 0.0
        self.body_bytes = body_bytes
        self.versions: dict[int, int] = {}
        self.cache: dict[tuple[int, str], bytes] = {}   # serialized rows (cleared per id on write)
        # The versions survive a restart (a kill included) when --state names a file: every
        # write is appended to it before it is answered, like a database's log.
        self.state = None
        if state:
            try:
                with open(state) as f:
                    for line in f:
                        n, v = line.split()
                        self.versions[int(n)] = int(v)
            except FileNotFoundError:
                pass
            self.state = open(state, "a", buffering=1)
        self.stats = {"requests": 0, "gets": 0, "lists": 0, "puts": 0, "not_found": 0,
                      "open_connections": 0, "connections": 0, "delayed": 0,
                      "started": time.time()}

    def row(self, n: int, kind: str) -> bytes:
        key = (n, kind)
        b = self.cache.get(key)
        if b is None:
            words = " ".join(WORDS[(n * 7 + i * 13) % len(WORDS)] for i in range(self.body_bytes // 5))
            obj = {"id": str(n), "version": self.versions.get(n, 0), "kind": kind,
                   "name": f"Task {n}", "description": words[: self.body_bytes]}
            b = json.dumps(obj, separators=(",", ":")).encode()
            if len(self.cache) > 200_000:
                self.cache.clear()
            self.cache[key] = b
        return b

    async def handle(self, method: str, target: str, body: bytes) -> tuple[int, bytes]:
        path, _, query = target.partition("?")
        st = self.stats
        st["requests"] += 1
        if path.startswith("/_ctl/") or path == "/healthz":
            if path == "/healthz":
                return 200, b'{"ok":true}'
            if path == "/_ctl/stats":
                return 200, json.dumps({**st, "delay_ms": self.delay * 1000,
                                        "written_ids": len(self.versions)}).encode()
            if path == "/_ctl/delay" and method == "POST":
                ms = float(parse_qs(query).get("ms", ["0"])[0])
                self.delay = max(ms, 0.0) / 1000.0
                return 200, json.dumps({"delay_ms": ms}).encode()
            return 404, b'{"error":"not_found"}'
        if not path.startswith("/api/v1/"):
            return 404, b'{"error":"not_found"}'
        if self.delay > 0:
            st["delayed"] += 1
            await asyncio.sleep(self.delay)
        if self.db_latency > 0:
            await asyncio.sleep(self.db_latency)
        parts = path.split("/")   # ['', 'api', 'v1', 'tasks', '{n}']
        if path == "/api/v1/tasks" and method in ("GET", "HEAD"):
            q = parse_qs(query)
            try:
                offset = int(q.get("offset", ["0"])[0])
                limit = min(int(q.get("limit", ["20"])[0]), 1000)
            except ValueError:
                return 400, b'{"error":"bad_query"}'
            st["lists"] += 1
            items = [{"id": str(n), "version": self.versions.get(n, 0)}
                     for n in range(offset + 1, offset + limit + 1)]
            return 200, json.dumps({"items": items, "offset": offset, "limit": limit},
                                   separators=(",", ":")).encode()
        if len(parts) == 5 and parts[3] in ("tasks", "short"):
            try:
                n = int(parts[4])
                if not 0 <= n < 10**12:
                    raise ValueError
            except ValueError:
                st["not_found"] += 1
                return 404, b'{"error":"task not found"}'
            if method in ("GET", "HEAD"):
                st["gets"] += 1
                return 200, self.row(n, parts[3])
            if method in ("PUT", "PATCH") and parts[3] == "tasks":
                st["puts"] += 1
                self.versions[n] = self.versions.get(n, 0) + 1
                if self.state is not None:
                    self.state.write(f"{n} {self.versions[n]}\n")
                self.cache.pop((n, "tasks"), None)
                self.cache.pop((n, "short"), None)
                return 200, self.row(n, "tasks")
            return 405, b'{"error":"method_not_allowed"}'
        st["not_found"] += 1
        return 404, b'{"error":"not_found"}'

    async def serve_conn(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        st = self.stats
        st["connections"] += 1
        st["open_connections"] += 1
        try:
            while True:
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
                    return
                lines = head.decode("latin-1").split("\r\n")
                try:
                    method, target, version = lines[0].split(" ", 2)
                except ValueError:
                    return
                length = 0
                close = version == "HTTP/1.0"
                for line in lines[1:]:
                    name, _, value = line.partition(":")
                    name = name.strip().lower()
                    if name == "content-length":
                        length = int(value.strip())
                    elif name == "connection":
                        v = value.strip().lower()
                        close = v == "close" or (close and v != "keep-alive")
                body = await reader.readexactly(length) if length else b""
                status, payload = await self.handle(method, target, body)
                reason = {200: "OK", 400: "Bad Request", 404: "Not Found",
                          405: "Method Not Allowed"}.get(status, "OK")
                out = (f"HTTP/1.1 {status} {reason}\r\ncontent-type: application/json\r\n"
                       f"content-length: {len(payload)}\r\n"
                       f"{'connection: close' + chr(13) + chr(10) if close else ''}\r\n").encode()
                writer.write(out if method == "HEAD" else out + payload)
                await writer.drain()
                if close:
                    return
        except (ConnectionError, asyncio.IncompleteReadError):
            return
        finally:
            st["open_connections"] -= 1
            try:
                writer.close()
            except Exception:
                pass


async def main_async(a: argparse.Namespace) -> None:
    api = Api(a.db_latency_ms, a.body_bytes, a.state)
    server = await asyncio.start_server(api.serve_conn, a.host, a.port, backlog=4096,
                                        reuse_address=True)
    print(f"taskapi: port={a.port} db_latency_ms={a.db_latency_ms} body_bytes={a.body_bytes}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for s in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(s, stop.set)
    async with server:
        await stop.wait()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--db-latency-ms", type=float, default=1.0)
    ap.add_argument("--body-bytes", type=int, default=600, help="size of a task's description")
    ap.add_argument("--state", help="file keeping the task versions across restarts (appended to on every write)")
    asyncio.run(main_async(ap.parse_args()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
