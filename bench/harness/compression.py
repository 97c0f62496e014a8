#!/usr/bin/env python3
"""Redis memory saved by `[compression] encode` on the benchmark's JSON bodies.

Serves the task bodies bench/bench.sh's backend (bench/harness/backend.py)
serves, built by its own `make_tasks` (taken from its source, so FastAPI
is not needed) and written as FastAPI writes them (compact JSON, UTC
datetimes with `Z`), from a stdlib HTTP server. For each mode (encode off,
gzip, br, zstd) it starts a private redis-server on a free port (never
6379) and cachegate in front of the backend, fills N single tasks and P
list pages through cachegate, and reads Redis's `INFO memory` used_memory
and the `MEMORY USAGE` of the keys it wrote. With wrk present, it also
measures hit throughput on the single tasks for each mode (a short run, one
connection set; a rough figure, not bench.sh's pinned rows).

    python3 bench/harness/compression.py --bin target/release/cachegate
"""
from __future__ import annotations

import argparse
import ast
import http.server
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from datetime import datetime
from pathlib import Path

HERE = Path(__file__).resolve().parent


def load_make_tasks():
    """`make_tasks` and the word lists it draws from, out of backend.py."""
    src = (HERE / "backend.py").read_text()
    tree = ast.parse(src)
    keep = []
    for node in tree.body:
        if isinstance(node, ast.Assign) and all(
            isinstance(t, ast.Name) and t.id in {"STATUSES", "VERBS", "NOUNS", "TAGS", "WORDS"} for t in node.targets
        ):
            keep.append(node)
        elif isinstance(node, ast.FunctionDef) and node.name == "make_tasks":
            keep.append(node)
    module = ast.Module(body=keep, type_ignores=[])
    scope: dict = {}
    exec("import random, uuid\nfrom datetime import datetime, timedelta, timezone\nfrom typing import Any", scope)
    exec(compile(module, "backend.py", "exec"), scope)
    return scope["make_tasks"]


def as_json(value) -> bytes:
    def default(o):
        if isinstance(o, datetime):
            return o.isoformat().replace("+00:00", "Z")
        raise TypeError(o)

    return json.dumps(value, separators=(",", ":"), default=default).encode()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def serve_backend(tasks: dict, port: int) -> http.server.ThreadingHTTPServer:
    ids = list(tasks)

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args):
            pass

        def do_GET(self):
            path, _, query = self.path.partition("?")
            if path.startswith("/api/v1/tasks/") and path[len("/api/v1/tasks/"):] in tasks:
                body = as_json(tasks[path[len("/api/v1/tasks/"):]])
            elif path == "/api/v1/tasks":
                q = dict(p.split("=", 1) for p in query.split("&") if "=" in p)
                offset, limit = int(q.get("offset", 0)), int(q.get("limit", 50))
                items = [tasks[i] for i in ids[offset:offset + limit]]
                body = as_json({"items": items, "total": len(ids), "offset": offset, "limit": limit})
            else:
                self.send_response(404)
                self.send_header("content-length", "0")
                self.end_headers()
                return
            self.send_response(200)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    server = http.server.ThreadingHTTPServer(("127.0.0.1", port), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def redis_cli(port: int, *args: str) -> str:
    return subprocess.run(["redis-cli", "-p", str(port), *args], capture_output=True, text=True, check=True).stdout


def used_memory(port: int) -> int:
    for line in redis_cli(port, "INFO", "memory").splitlines():
        if line.startswith("used_memory:"):
            return int(line.split(":")[1])
    raise RuntimeError("no used_memory")


def keys_usage(port: int, pattern: str) -> tuple[int, int]:
    keys = [k for k in redis_cli(port, "--scan", "--pattern", pattern).split() if k]
    total = sum(int(redis_cli(port, "MEMORY", "USAGE", k, "SAMPLES", "0").strip() or 0) for k in keys)
    return len(keys), total


def wait_http(url: str, within: float = 20.0) -> None:
    deadline = time.time() + within
    while time.time() < deadline:
        try:
            urllib.request.urlopen(url, timeout=1).read()
            return
        except Exception:
            time.sleep(0.1)
    raise RuntimeError(f"{url} did not answer")


def config(backend: int, redis: int, listen: int, encode: str, min_bytes: int) -> str:
    return f"""
[server]
listen = "127.0.0.1:{listen}"
[backend]
url = "http://127.0.0.1:{backend}"
[store]
kind = "redis"
[redis]
url = "redis://127.0.0.1:{redis}"
[tier]
enabled = true
[compression]
encode = "{encode}"
min_bytes = {min_bytes}
[[rule]]
name = "task"
path = '^/api/v1/tasks/(?P<task_id>[^/]+)$'
key = "task:{{task_id}}"
ttl = 600
[[rule]]
name = "task-list"
path = '^/api/v1/tasks$'
key = "tasks:{{query}}"
ttl = 600
[access_log]
enabled = false
"""


def fetch(url: str) -> int:
    with urllib.request.urlopen(url, timeout=10) as r:
        return len(r.read())


def wrk_rps(url: str, seconds: int, accept_encoding: str | None) -> float | None:
    """Hit throughput on one URL; `accept_encoding` None sends no such header
    (an encoded entry is then decoded on the fly for every answer)."""
    if seconds <= 0 or not shutil.which("wrk"):
        return None
    headers = ["-H", f"Accept-Encoding: {accept_encoding}"] if accept_encoding else []
    out = subprocess.run(
        ["wrk", "-t1", "-c32", f"-d{seconds}s", *headers, url],
        capture_output=True, text=True,
    ).stdout
    for line in out.splitlines():
        if line.startswith("Requests/sec:"):
            return float(line.split()[1])
    return None


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--bin", default="target/release/cachegate")
    ap.add_argument("--tasks", type=int, default=1000, help="single tasks filled")
    ap.add_argument("--pages", type=int, default=50, help="list pages filled (limit=--page-size)")
    ap.add_argument("--page-size", type=int, default=100)
    ap.add_argument("--min-bytes", type=int, default=256,
                    help="[compression] min_bytes (a single task is ~650 bytes: under the default 1024)")
    ap.add_argument("--wrk-seconds", type=int, default=5, help="0: no throughput figure")
    ap.add_argument("--modes", default="off,gzip,br,zstd")
    a = ap.parse_args()

    tasks = load_make_tasks()(max(a.tasks, a.pages * a.page_size), 42)
    ids = list(tasks)
    backend_port = free_port()
    backend = serve_backend(tasks, backend_port)
    single_bytes = sum(len(as_json(tasks[i])) for i in ids[:a.tasks])
    rows = []
    for mode in a.modes.split(","):
        tmp = tempfile.mkdtemp(prefix="cg-compression-")
        redis_port, listen = free_port(), free_port()
        redis = subprocess.Popen(
            ["redis-server", "--port", str(redis_port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
             "--dir", tmp],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        conf = Path(tmp) / "proxy.toml"
        conf.write_text(config(backend_port, redis_port, listen, mode, a.min_bytes))
        env = {k: v for k, v in os.environ.items() if not k.startswith(("CACHEGATE_", "REDIS_"))}
        cg = subprocess.Popen([a.bin, "--config", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                              env=env)
        try:
            base = f"http://127.0.0.1:{listen}"
            wait_http(f"{base}/healthz")
            time.sleep(0.5)
            before = used_memory(redis_port)
            for i in ids[:a.tasks]:
                fetch(f"{base}/api/v1/tasks/{i}")
            time.sleep(0.5)
            after_tasks = used_memory(redis_port)
            page_bytes = 0
            for p in range(a.pages):
                page_bytes += fetch(f"{base}/api/v1/tasks?offset={p * a.page_size}&limit={a.page_size}")
            time.sleep(0.5)
            after_pages = used_memory(redis_port)
            n_task, task_usage = keys_usage(redis_port, "task:*")
            n_page, page_usage = keys_usage(redis_port, "tasks:*")
            rps = wrk_rps(f"{base}/api/v1/tasks/{ids[0]}", a.wrk_seconds, "gzip, br, zstd")
            rps_plain = wrk_rps(f"{base}/api/v1/tasks/{ids[0]}", a.wrk_seconds, None)
            rows.append({
                "mode": mode, "tasks": n_task, "task_usage": task_usage, "task_delta": after_tasks - before,
                "pages": n_page, "page_usage": page_usage, "page_delta": after_pages - after_tasks, "rps": rps, "rps_plain": rps_plain,
                "single_bytes": single_bytes, "page_bytes": page_bytes,
            })
        finally:
            cg.terminate()
            cg.wait(10)
            redis.terminate()
            redis.wait(10)
            shutil.rmtree(tmp, ignore_errors=True)
    backend.shutdown()

    off = next((r for r in rows if r["mode"] == "off"), rows[0])
    print(f"{a.tasks} single tasks ({off['single_bytes']:,} bytes of JSON, "
          f"{off['single_bytes'] / a.tasks:.0f} avg), {a.pages} list pages of {a.page_size} "
          f"({off['page_bytes']:,} bytes of JSON); min_bytes = {a.min_bytes}\n")
    print("| encode | tasks: MEMORY USAGE | ÷ off | used_memory Δ | pages: MEMORY USAGE | ÷ off | used_memory Δ "
          "| hit req/s, client accepts all | hit req/s, no Accept-Encoding (decoded) |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        rps = f"{r['rps']:,.0f}" if r["rps"] else "—"
        plain = f"{r['rps_plain']:,.0f}" if r["rps_plain"] else "—"
        print(f"| {r['mode']} | {r['task_usage']:,} | {r['task_usage'] / off['task_usage']:.2f} | {r['task_delta']:,} "
              f"| {r['page_usage']:,} | {r['page_usage'] / off['page_usage']:.2f} | {r['page_delta']:,} | {rps} | {plain} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
