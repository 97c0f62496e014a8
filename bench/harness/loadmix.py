#!/usr/bin/env python3
"""Shared parts of bench/soak.sh and bench/chaos.sh (stdlib only).

- Daemons: redis-server, the task API (taskapi.py) and cachegate, each in a
  session of its own (pid == process group), pids written to RUN_DIR/pids,
  logs to RUN_DIR/logs/, started in RUN_DIR/cwd/<name>/ (bench.sh's scheme,
  so a killed run's leftovers can be found by their working directory).
- the cachegate config both scripts use (tier on, a task rule, a short-TTL
  rule with stale-if-error, a tagged list rule, an invalidate rule with keys
  and tags, an admin token);
- Load: a rate-limited load generator (asyncio, in a thread of its own) over
  keep-alive connections, with a mix of operations, that checks every answer:
  status, the body's id, and that no GET sent after a PUT's answer arrived
  shows an older version of that task (list pages included);
- /proc and /metrics readers.
"""
from __future__ import annotations

import asyncio
import http.client
import json
import os
import random
import re
import shlex
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import Counter, deque
from pathlib import Path

HERE = Path(__file__).resolve().parent
T0 = time.monotonic()


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')} +{time.monotonic() - T0:6.1f}s] {msg}", file=sys.stderr, flush=True)


def env_int(name: str, default: int) -> int:
    v = os.environ.get(name, "")
    return int(v) if v.strip() else default


def env_float(name: str, default: float) -> float:
    v = os.environ.get(name, "")
    return float(v) if v.strip() else default


# --------------------------------------------------------------------------
# processes
# --------------------------------------------------------------------------
class Daemons:
    def __init__(self, run_dir: Path, cpu: str = ""):
        self.run_dir = run_dir
        self.cpu = cpu
        self.procs: dict[str, subprocess.Popen] = {}
        self.argv: dict[str, tuple[list[str], dict | None]] = {}
        self.commands: list[str] = []
        self.pidfile = run_dir / "daemons.pids"   # not "pids": bench.sh sweeps bench/run/*/pids as leftovers
        (run_dir / "logs").mkdir(parents=True, exist_ok=True)

    def start(self, name: str, argv: list[str], env: dict | None = None) -> int:
        cwd = self.run_dir / "cwd" / name
        cwd.mkdir(parents=True, exist_ok=True)
        full_env = dict(os.environ)
        if env:
            full_env.update(env)
        pre = ["taskset", "-c", self.cpu] if self.cpu else []
        logf = open(self.run_dir / "logs" / f"{name}.log", "ab")
        p = subprocess.Popen([*pre, *argv], cwd=cwd, env=full_env, stdin=subprocess.DEVNULL,
                             stdout=logf, stderr=subprocess.STDOUT, start_new_session=True)
        logf.close()
        self.procs[name] = p
        self.argv[name] = (argv, env)
        with open(self.pidfile, "a") as f:
            f.write(f"{p.pid} {name}\n")
        shown = " ".join(f"{k}={v}" for k, v in (env or {}).items() if "TOKEN" not in k)
        cmd = (shown + " " if shown else "") + shlex.join([*pre, *argv])
        if cmd not in self.commands:
            self.commands.append(cmd)
        return p.pid

    def restart(self, name: str) -> int:
        argv, env = self.argv[name]
        return self.start(name, argv, env)

    def pid(self, name: str) -> int:
        return self.procs[name].pid

    def alive(self, name: str) -> bool:
        return name in self.procs and self.procs[name].poll() is None

    def signal(self, name: str, sig: int) -> None:
        os.kill(self.procs[name].pid, sig)

    def kill(self, name: str) -> None:
        """SIGKILL, and reap."""
        p = self.procs[name]
        try:
            os.killpg(p.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        p.wait(timeout=10)

    def stop(self, name: str) -> None:
        p = self.procs.pop(name, None)
        if p is None or p.poll() is not None:
            return
        try:
            os.killpg(p.pid, signal.SIGCONT)   # in case it was left paused
            os.killpg(p.pid, signal.SIGTERM)
        except ProcessLookupError:
            return
        try:
            p.wait(timeout=10)
        except subprocess.TimeoutExpired:
            try:
                os.killpg(p.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            p.wait(timeout=5)

    def stop_all(self) -> None:
        for name in reversed(list(self.procs)):
            try:
                self.stop(name)
            except Exception as e:
                log(f"stopping {name}: {e}")


def port_free(port: int) -> bool:
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)   # TIME_WAIT leftovers do not count
    try:
        s.bind(("127.0.0.1", port))
        return True
    except OSError:
        return False
    finally:
        s.close()


def wait_until(what: str, check, daemons: Daemons, name: str, timeout: float = 30.0) -> float:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if check():
                return time.monotonic()
        except Exception:
            pass
        if not daemons.alive(name):
            break
        time.sleep(0.01)
    tail = ""
    logf = daemons.run_dir / "logs" / f"{name}.log"
    if logf.exists():
        tail = logf.read_text(errors="replace")[-1500:]
    raise RuntimeError(f"{name} did not become ready ({what}); log tail:\n{tail}")


def redis_cmd(port: int, *args: str, timeout: float = 1.0):
    """One RESP command on a fresh connection; returns the decoded reply."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        out = f"*{len(args)}\r\n" + "".join(f"${len(a.encode())}\r\n{a}\r\n" for a in args)
        s.sendall(out.encode())
        f = s.makefile("rb")

        def read():
            line = f.readline()
            t, rest = line[:1], line[1:-2]
            if t in (b"+", b"-"):
                return rest.decode()
            if t == b":":
                return int(rest)
            if t == b"$":
                n = int(rest)
                return None if n < 0 else f.read(n + 2)[:-2].decode(errors="replace")
            if t == b"*":
                return [read() for _ in range(int(rest))]
            raise RuntimeError(f"bad RESP {line!r}")
        return read()


def redis_ping(port: int) -> bool:
    try:
        return redis_cmd(port, "PING", timeout=0.5) == "PONG"
    except OSError:
        return False


def redis_info(port: int, section: str = "memory") -> dict[str, str]:
    text = redis_cmd(port, "INFO", section)
    return dict(l.split(":", 1) for l in text.splitlines() if ":" in l and not l.startswith("#"))


def http_get(port: int, path: str, headers: dict | None = None, method: str = "GET",
             timeout: float = 5.0) -> tuple[int, dict, bytes]:
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        c.request(method, path, headers=headers or {})
        r = c.getresponse()
        return r.status, {k.lower(): v for k, v in r.getheaders()}, r.read()
    finally:
        c.close()


def http_ok(port: int, path: str) -> bool:
    return http_get(port, path, timeout=2)[0] == 200


# --------------------------------------------------------------------------
# /proc and /metrics
# --------------------------------------------------------------------------
def proc_sample(pid: int) -> dict:
    out = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            k, _, v = line.partition(":")
            if k in ("VmRSS", "VmHWM", "RssAnon", "RssFile"):
                out[k] = int(v.split()[0])   # kB
            elif k == "Threads":
                out[k] = int(v)
    out["fds"] = len(os.listdir(f"/proc/{pid}/fd"))
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    out["cpu_s"] = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return out


def _tcp_table(pid: int) -> dict[str, tuple[int, int, str]]:
    """socket inode -> (local port, remote port, state hex) from /proc/PID/net/tcp{,6}."""
    out = {}
    for fn in ("tcp", "tcp6"):
        try:
            with open(f"/proc/{pid}/net/{fn}") as f:
                next(f)
                for line in f:
                    p = line.split()
                    out[p[9]] = (int(p[1].rsplit(":", 1)[1], 16), int(p[2].rsplit(":", 1)[1], 16), p[3])
        except OSError:
            pass
    return out


def fd_classes(pid: int, listen_port: int, backend_port: int, redis_port: int) -> Counter:
    """cachegate's open fds by kind: client (accepted connections), backend, redis, listen,
    other_socket, other (epoll, eventfd, pipes, files)."""
    tcp = _tcp_table(pid)
    c: Counter = Counter()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if not target.startswith("socket:["):
            c["other"] += 1
            continue
        ent = tcp.get(target[8:-1])
        if ent is None:
            c["other_socket"] += 1
        elif ent[2] == "0A":
            c["listen"] += 1
        elif ent[1] == backend_port:
            c["backend"] += 1
        elif ent[1] == redis_port:
            c["redis"] += 1
        elif ent[0] == listen_port:
            c["client"] += 1
        else:
            c["other_socket"] += 1
    return c


METRIC_RE = re.compile(r'^([a-zA-Z_:][\w:]*)(\{[^}]*\})?\s+([^\s]+)')


def parse_metrics(text: str) -> list[tuple[str, dict, float]]:
    out = []
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        m = METRIC_RE.match(line)
        if not m:
            continue
        labels = dict(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', m.group(2) or ""))
        try:
            out.append((m.group(1), labels, float(m.group(3))))
        except ValueError:
            pass
    return out


def cache_counts(port: int) -> dict:
    """cachegate_requests_total summed by cache_status, plus store errors and store_up."""
    st, _, body = http_get(port, "/metrics")
    c: Counter = Counter()
    for name, labels, v in parse_metrics(body.decode(errors="replace")):
        if name.startswith("cachegate_requests") and labels.get("cache_status"):
            c[labels["cache_status"]] += v
        elif name.startswith("cachegate_store_errors"):
            c["store_errors"] += v
        elif name == "cachegate_store_up":
            c["store_up"] = v
    return dict(c)


def pct(xs: list[float], q: float) -> float | None:
    if not xs:
        return None
    s = sorted(xs)
    return s[min(len(s) - 1, int(round(q / 100 * (len(s) - 1))))]


def fmt_ms(x: float | None) -> str:
    return "-" if x is None else (f"{x * 1000:.1f}" if x < 10 else f"{x * 1000:.0f}")


# --------------------------------------------------------------------------
# cachegate config
# --------------------------------------------------------------------------
def cachegate_conf(prefix: str, task_ttl: int, list_ttl: int, short_ttl: int, stale_if_error: int,
                   backend_timeout_ms: int, connect_timeout_ms: int, store_timeout_ms: int) -> str:
    return f'''# generated by bench/harness/loadmix.py (bench/soak.sh, bench/chaos.sh)
edition = "business"

[server]
shutdown_timeout_ms = 3000

[backend]
connect_timeout_ms = {connect_timeout_ms}
timeout_ms = {backend_timeout_ms}

[store]
kind = "redis"
timeout_ms = {store_timeout_ms}

[redis]
key_prefix = "{prefix}"
pool_size = 2

[tier]
enabled = true

[[admin.tokens]]
name = "bench"
token_env = "CACHEGATE_BENCH_TOKEN"
scopes = ["read", "purge", "inspect"]

[[rule]]
name = "task"
methods = ["GET", "HEAD"]
path = '^/api/v1/tasks/(?P<task_id>[^/]+)$'
key = "task:{{task_id}}"
ttl = {task_ttl}
statuses = [200]

# Same tasks under a short TTL: expired entries are served while the backend
# fails (stale-if-error).
[[rule]]
name = "short"
methods = ["GET", "HEAD"]
path = '^/api/v1/short/(?P<task_id>[^/]+)$'
key = "short:{{task_id}}"
ttl = {short_ttl}
stale_if_error = {stale_if_error}
statuses = [200]

[[rule]]
name = "task-list"
methods = ["GET", "HEAD"]
path = '^/api/v1/tasks$'
key = "tasks:{{query}}"
ttl = {list_ttl}
statuses = [200]
tags = ["tasks"]

[[invalidate]]
name = "task-write"
methods = ["PUT", "PATCH", "DELETE"]
path = '^/api/v1/tasks/(?P<task_id>[^/]+)$'
keys = ["task:{{task_id}}", "short:{{task_id}}"]
tags = ["tasks"]
'''


def write_conf(bin_path: str, path: Path, text: str, env: dict) -> str:
    """Writes the config with `[access_log] enabled = false` appended (builds that
    have an access log write one line per request to stdout by default: at
    these rates that is a log file of hundreds of MB; ACCESS_LOG=1 keeps it) and
    validates it with `cachegate check`; a build that does not know
    [access_log] gets the config without it. Returns a note on what was done."""
    keep = os.environ.get("ACCESS_LOG", "") not in ("", "0")
    tries = [(text, "access log: the build's default")] if keep else [
        (text + "\n[access_log]\nenabled = false\n", "access log: off ([access_log] enabled = false)"),
        (text, "access log: this build has none")]
    err = ""
    for body, note in tries:
        path.write_text(body)
        chk = subprocess.run([bin_path, "check", "--config", str(path)], env={**os.environ, **env},
                             capture_output=True, text=True)
        if chk.returncode == 0:
            return note
        err = chk.stdout + chk.stderr
        if "access_log" not in err:
            break
    raise RuntimeError(f"cachegate check failed:\n{err}")


# --------------------------------------------------------------------------
# load generator
# --------------------------------------------------------------------------
OPS = ("hot", "cold", "list", "short", "put", "purge_key", "purge_tag")
EXPECT = {op: 200 for op in OPS}
LIST_PAGE = 20


class Interval:
    """Counters of one sampling interval (swapped by the sampler)."""

    def __init__(self) -> None:
        self.t0 = time.monotonic()
        self.n = 0
        self.ops: Counter = Counter()
        self.status: Counter = Counter()
        self.xcache: Counter = Counter()
        self.errors: Counter = Counter()
        self.lat: list[float] = []
        self.lat_op: dict[str, list[float]] = {}
        self.behind = 0     # sends that were late by more than 1 s (skipped)


class HttpConn:
    def __init__(self, port: int):
        self.port = port
        self.r: asyncio.StreamReader | None = None
        self.w: asyncio.StreamWriter | None = None

    async def connect(self) -> None:
        self.r, self.w = await asyncio.open_connection("127.0.0.1", self.port)

    def close(self) -> None:
        if self.w is not None:
            try:
                self.w.close()
            except Exception:
                pass
        self.r = self.w = None

    async def request(self, raw: bytes) -> tuple[int, dict, bytes]:
        if self.w is None:
            await self.connect()
        self.w.write(raw)
        head = await self.r.readuntil(b"\r\n\r\n")
        status = int(head[9:12])
        hdrs = {}
        for line in head.split(b"\r\n")[1:]:
            if line:
                k, _, v = line.partition(b":")
                hdrs[k.strip().lower()] = v.strip()
        cl = hdrs.get(b"content-length")
        if cl is not None:
            body = await self.r.readexactly(int(cl)) if int(cl) else b""
        elif hdrs.get(b"transfer-encoding", b"").lower() == b"chunked":
            parts = []
            while True:
                size = int((await self.r.readuntil(b"\r\n")).split(b";")[0], 16)
                if size == 0:
                    await self.r.readuntil(b"\r\n")
                    break
                parts.append(await self.r.readexactly(size))
                await self.r.readexactly(2)
            body = b"".join(parts)
        elif status in (204, 304):
            body = b""
        else:
            body = await self.r.read()
            self.close()
        if hdrs.get(b"connection", b"").lower() == b"close":
            self.close()
        return status, hdrs, body


def raw_request(method: str, path: str, headers: list[str], body: bytes = b"") -> bytes:
    h = "".join(f"{x}\r\n" for x in headers)
    if body or method in ("PUT", "POST"):
        h += f"content-type: application/json\r\ncontent-length: {len(body)}\r\n"
    return f"{method} {path} HTTP/1.1\r\nhost: cachegate\r\n{h}\r\n".encode() + body


class Load:
    """Rate-limited mix over `conns` keep-alive connections, in its own thread.

    mix: {op: weight}. ops: hot (GET a task of the working set), cold (GET a
    never-seen task: a miss), list (GET a list page over the working set),
    short (GET /api/v1/short/{id}, short TTL + stale-if-error), put (PUT a
    working-set task), purge_key (admin DELETE /key/task:{id}), purge_tag
    (admin DELETE /clear?tag=tasks).

    record_all keeps one tuple per answer: (t_send, latency, op, status,
    x-cache, stored, error) with t_send on time.monotonic()'s clock.
    """

    def __init__(self, port: int, rate: float, conns: int, hot: int, mix: dict[str, float],
                 token: str, timeout: float = 30.0, record_all: bool = False,
                 short_ids: int = 100, tenants: bool = True, seed: int = 1,
                 keep_total_lat: bool = True):
        self.port = port
        self.keep_total_lat = keep_total_lat
        self.rate = rate
        self.conns = conns
        self.hot = hot
        self.short_ids = min(short_ids, hot)
        self.set_mix(mix)
        self.token = token
        self.timeout = timeout
        self.record_all = record_all
        self.records: list[tuple] = []
        self.tenants = tenants
        self.rng = random.Random(seed)
        self.done_put: dict[int, int] = {}   # task id -> highest version a completed PUT answered
        self.cur = Interval()
        self.total = Interval()
        self.error_samples: deque = deque(maxlen=200)
        self.loop: asyncio.AbstractEventLoop | None = None
        self.thread: threading.Thread | None = None
        self._stop = False
        self.cold_next = 10**9 + seed * 10**8   # never-seen ids
        self.pages = max(1, hot // LIST_PAGE)
        self.probe_expect: int | None = None
        self.probe_records: list[tuple] = []
        self._probe_on = False
        self._direct_on = False
        self.direct_records: list[tuple] = []

    def set_mix(self, mix: dict[str, float]) -> None:
        ops = [op for op in OPS if mix.get(op, 0) > 0]
        total = sum(mix[op] for op in ops)
        acc, cum = 0.0, []
        for op in ops:
            acc += mix[op] / total
            cum.append(acc)
        self._mix = (ops, cum)   # swapped atomically
        self.mix = dict(mix)

    def pick(self) -> str:
        ops, cum = self._mix
        x = self.rng.random()
        for op, c in zip(ops, cum):
            if x < c:
                return op
        return ops[-1]

    # ---------------------------------------------------------------- thread
    def start(self) -> None:
        ready = threading.Event()

        def run():
            self.loop = asyncio.new_event_loop()
            asyncio.set_event_loop(self.loop)
            ready.set()
            self.loop.run_until_complete(self._main())
            self.loop.close()

        self.thread = threading.Thread(target=run, name="load", daemon=True)
        self.thread.start()
        ready.wait()

    def stop(self) -> None:
        self._stop = True
        self._probe_on = False
        if self.thread:
            self.thread.join(timeout=self.timeout + 10)

    def swap(self) -> Interval:
        """The interval so far; a new one starts (done in the load thread: no lost counts)."""
        async def sw():
            old, self.cur = self.cur, Interval()
            return old
        return asyncio.run_coroutine_threadsafe(sw(), self.loop).result(timeout=10)

    def snapshot_records(self) -> list[tuple]:
        async def cp():
            return list(self.records)
        return asyncio.run_coroutine_threadsafe(cp(), self.loop).result(timeout=30)

    # ---------------------------------------------------------------- probes
    def probes(self, on: bool, expect: int | None = None, rate: float = 20.0, conns: int = 8) -> None:
        """Extra GETs of never-seen task ids, outside the mix (recorded apart, never errors)."""
        if on and not self._probe_on:
            self.probe_expect = expect
            self._probe_on = True
            for i in range(conns):
                asyncio.run_coroutine_threadsafe(self._probe_worker(i, rate / conns), self.loop)
        elif on:
            self.probe_expect = expect
        else:
            self._probe_on = False

    async def _probe_worker(self, i: int, rate: float) -> None:
        conn = HttpConn(self.port)
        interval = 1.0 / rate
        nxt = time.monotonic() + interval * self.rng.random()
        while self._probe_on and not self._stop:
            now = time.monotonic()
            if nxt > now:
                await asyncio.sleep(nxt - now)
            nxt = max(nxt + interval, time.monotonic())
            self.cold_next += 1
            raw = raw_request("GET", f"/api/v1/tasks/{self.cold_next}", [])
            t = time.monotonic()
            try:
                async with asyncio.timeout(self.timeout):
                    st, h, body = await conn.request(raw)
                lat = time.monotonic() - t
                err = ""
                if st >= 400:
                    try:
                        err = json.loads(body).get("error", "?")
                    except ValueError:
                        err = "not-json"
                self.probe_records.append((t, lat, st, h.get(b"x-cache", b"").decode(), err))
            except Exception as e:
                conn.close()
                self.probe_records.append((t, time.monotonic() - t, 0, "", type(e).__name__))
        conn.close()

    def direct(self, on: bool, port: int = 0, rate: float = 50.0, conns: int = 4) -> None:
        """GETs of working-set tasks straight to the backend (not through cachegate), to
        measure the backend's own time meanwhile; recorded in direct_records (t, latency, status)."""
        if on and not self._direct_on:
            self._direct_on = True
            for i in range(conns):
                asyncio.run_coroutine_threadsafe(self._direct_worker(port, rate / conns), self.loop)
        elif not on:
            self._direct_on = False

    async def _direct_worker(self, port: int, rate: float) -> None:
        conn = HttpConn(port)
        interval = 1.0 / rate
        nxt = time.monotonic() + interval * self.rng.random()
        while self._direct_on and not self._stop:
            now = time.monotonic()
            if nxt > now:
                await asyncio.sleep(nxt - now)
            nxt = max(nxt + interval, time.monotonic())
            raw = raw_request("GET", f"/api/v1/tasks/{self.rng.randint(1, self.hot)}", [])
            t = time.monotonic()
            try:
                async with asyncio.timeout(self.timeout):
                    st, _, _ = await conn.request(raw)
            except Exception:
                conn.close()
                st = 0
            self.direct_records.append((t, time.monotonic() - t, st))
        conn.close()

    # ---------------------------------------------------------------- load
    async def _main(self) -> None:
        await asyncio.gather(*(self._worker(i) for i in range(self.conns)))

    def _tenant(self, i: int) -> list[str]:
        # 3 connections in 4 anonymous, the others tenant a or b (own credential scopes)
        if not self.tenants or i % 8 not in (1, 2):
            return []
        return [f"authorization: Bearer tenant-{'ab'[i % 8 - 1]}-secret"]

    def _build(self, op: str, i: int) -> tuple[bytes, object]:
        auth = self._tenant(i)
        rng = self.rng
        if op == "hot":
            n = rng.randint(1, self.hot)
            return raw_request("GET", f"/api/v1/tasks/{n}", auth), n
        if op == "short":
            n = rng.randint(1, self.short_ids)
            return raw_request("GET", f"/api/v1/short/{n}", auth), n
        if op == "cold":
            self.cold_next += 1
            return raw_request("GET", f"/api/v1/tasks/{self.cold_next}", auth), self.cold_next
        if op == "list":
            off = rng.randrange(self.pages) * LIST_PAGE
            return raw_request("GET", f"/api/v1/tasks?offset={off}&limit={LIST_PAGE}", auth), off
        if op == "put":
            n = rng.randint(1, self.hot)
            body = json.dumps({"name": f"Task {n} (edited)"}).encode()
            return raw_request("PUT", f"/api/v1/tasks/{n}", auth, body), n
        adm = [f"authorization: Bearer {self.token}"]
        if op == "purge_key":
            n = rng.randint(1, self.hot)
            return raw_request("DELETE", f"/api/v1/cache/key/task:{n}", adm), n
        if op == "purge_tag":
            return raw_request("DELETE", "/api/v1/cache/clear?tag=tasks", adm), None
        raise ValueError(op)

    def _check(self, op: str, arg, status: int, body: bytes, need) -> str:
        """'' when the answer is right, else what is wrong."""
        if status != EXPECT[op]:
            return f"status {status}"
        if op in ("hot", "cold", "short", "put"):
            try:
                obj = json.loads(body)
            except ValueError:
                return "body not JSON"
            if obj.get("id") != str(arg):
                return f"wrong id {obj.get('id')!r} for {arg}"
            v = obj.get("version", -1)
            if op == "put":
                if v > self.done_put.get(arg, 0):
                    self.done_put[arg] = v
            elif need is not None and v < need:
                return f"stale: task {arg} version {v} < {need} (a PUT answered before this GET was sent)"
            return ""
        if op == "list":
            try:
                items = json.loads(body)["items"]
            except (ValueError, KeyError):
                return "list body"
            if [it["id"] for it in items] != [str(n) for n in range(arg + 1, arg + LIST_PAGE + 1)]:
                return "list ids"
            for it, nd in zip(items, need):
                if it["version"] < nd:
                    return f"stale list: task {it['id']} version {it['version']} < {nd} at offset {arg}"
            return ""
        if op in ("purge_key", "purge_tag"):
            try:
                obj = json.loads(body)
            except ValueError:
                return "admin body not JSON"
            if obj.get("status") not in ("deleted", "cleared"):
                return f"admin status {obj.get('status')!r}"
        return ""

    async def _worker(self, i: int) -> None:
        conn = HttpConn(self.port)
        nxt = time.monotonic() + self.rng.random() * self.conns / max(self.rate, 1e-9)
        while not self._stop:
            interval = self.conns / max(self.rate, 1e-9)
            now = time.monotonic()
            if nxt > now:
                await asyncio.sleep(nxt - now)
                if self._stop:
                    break
            elif now - nxt > 1.0:     # more than 1 s behind: do not burst to catch up
                self.cur.behind += 1
                self.total.behind += 1
                nxt = now
            nxt += interval
            op = self.pick()
            raw, arg = self._build(op, i)
            # what a correct answer must show at least (PUTs answered before we send)
            if op in ("hot", "cold", "short"):
                need = self.done_put.get(arg)
            elif op == "list":
                need = [self.done_put.get(n, 0) for n in range(arg + 1, arg + LIST_PAGE + 1)]
            else:
                need = None
            t = time.monotonic()
            status, xc, stored, err = 0, "", False, ""
            try:
                async with asyncio.timeout(self.timeout):
                    status, hdrs, body = await conn.request(raw)
                xc = hdrs.get(b"x-cache", b"").decode()
                stored = b"stored" in hdrs.get(b"cache-status", b"")
                err = self._check(op, arg, status, body, need)
            except TimeoutError:
                err = "client timeout"
                conn.close()
            except (OSError, asyncio.IncompleteReadError, ValueError) as e:
                err = f"connection: {type(e).__name__}"
                conn.close()
            lat = time.monotonic() - t
            for iv in (self.cur, self.total):
                iv.n += 1
                iv.ops[op] += 1
                iv.status[status] += 1
                if xc:
                    iv.xcache[xc] += 1
                if iv is self.cur or self.keep_total_lat:
                    iv.lat.append(lat)
                    iv.lat_op.setdefault(op, []).append(lat)
                if err:
                    iv.errors[err.split(":")[0]] += 1
            if err:
                self.error_samples.append((round(time.time(), 3), op, arg, status, xc, err))
            if self.record_all:
                self.records.append((t, lat, op, status, xc, stored, err, arg))
        conn.close()


def fetch_many(port: int, raws: list[bytes], conns: int = 16) -> list[tuple[int, dict, bytes]]:
    """Sends every request (over `conns` keep-alive connections at once, in a
    private event loop); answers in order, (0, {}, b"") for a failed one."""
    out: list = [(0, {}, b"")] * len(raws)

    async def one(i: int) -> None:
        c = HttpConn(port)
        for j in range(i, len(raws), conns):
            try:
                async with asyncio.timeout(30):
                    out[j] = await c.request(raws[j])
            except Exception:
                c.close()
        c.close()

    async def run() -> None:
        await asyncio.gather(*(one(i) for i in range(conns)))

    asyncio.run(run())
    return out


TENANTS = [[], ["authorization: Bearer tenant-a-secret"], ["authorization: Bearer tenant-b-secret"]]


def warm(port: int, hot: int, short_ids: int, tenants: bool = True, conns: int = 16) -> int:
    """GET every working-set task, short task and list page once per credential
    scope; returns the count of non-200 answers."""
    paths = [f"/api/v1/tasks/{n}" for n in range(1, hot + 1)]
    paths += [f"/api/v1/short/{n}" for n in range(1, min(short_ids, hot) + 1)]
    paths += [f"/api/v1/tasks?offset={o}&limit={LIST_PAGE}" for o in range(0, hot // LIST_PAGE * LIST_PAGE, LIST_PAGE)]
    auths = TENANTS if tenants else TENANTS[:1]
    answers = fetch_many(port, [raw_request("GET", p, a) for a in auths for p in paths], conns)
    return sum(1 for st, _, _ in answers if st != 200)


def stale_scan(port: int, backend_port: int, hot: int, short_ids: int) -> dict:
    """Compares what cachegate answers for every working-set task, short task and
    list page (each credential scope) with the backend's versions. Run it with no
    writes in flight. Returns counts and the first stale ones."""
    st, _, body = http_get(backend_port, f"/api/v1/tasks?offset=0&limit={hot}", timeout=10)
    truth = {int(it["id"]): it["version"] for it in json.loads(body)["items"]}
    reqs, what = [], []
    for si, a in enumerate(TENANTS):
        for n in range(1, hot + 1):
            reqs.append(raw_request("GET", f"/api/v1/tasks/{n}", a))
            what.append(("task", si, n))
        for n in range(1, min(short_ids, hot) + 1):
            reqs.append(raw_request("GET", f"/api/v1/short/{n}", a))
            what.append(("short", si, n))
        for o in range(0, hot // LIST_PAGE * LIST_PAGE, LIST_PAGE):
            reqs.append(raw_request("GET", f"/api/v1/tasks?offset={o}&limit={LIST_PAGE}", a))
            what.append(("list", si, o))
    answers = fetch_many(port, reqs)
    stale: list = []
    bad = 0
    for (kind, si, n), (status, hdrs, b) in zip(what, answers):
        if status != 200:
            bad += 1
            continue
        obj = json.loads(b)
        xc = hdrs.get(b"x-cache", b"").decode()
        if kind == "list":
            for it in obj["items"]:
                if it["version"] < truth[int(it["id"])]:
                    stale.append((kind, si, n, int(it["id"]), it["version"], truth[int(it["id"])], xc))
                    break
        elif obj["version"] < truth[n]:
            stale.append((kind, si, n, n, obj["version"], truth[n], xc))
    by_kind = Counter(x[0] for x in stale)
    return {"checked": len(reqs), "non_200": bad, "stale": len(stale), "stale_by_kind": dict(by_kind),
            "stale_tasks": len({x[3] for x in stale}),
            "samples": [f"{k} scope{si} {n}: version {v} < {t} ({xc})" for k, si, n, _, v, t, xc in stale[:6]]}


ANSI = re.compile(r"\x1b\[[0-9;]*m")


def log_lines(path: Path) -> list[str]:
    """A daemon's log without ANSI colours."""
    try:
        return ANSI.sub("", path.read_text(errors="replace")).splitlines()
    except OSError:
        return []
