#!/usr/bin/env python3
"""cachegate's own benchmark: the orchestrator behind bench/bench.sh (stdlib only).

bench.sh builds cachegate, checks the tools, makes the backend's venv and
runs this pinned to the load-generator core. This script starts every server
process pinned to the server core (each in a session of its own, its pid
written to <run>/pids), then:

  matrix    ROUNDS rounds, each going through every row in turn: nginx
            proxy_cache hit, cachegate hit (in-process tier), cachegate hit
            from Redis (tier off), the in-app Redis decorator (seed), the
            backend direct, cachegate pass-through, nginx pass-through
            (warm-up, verification against the backend's JSON, wrk, CPU
            accounting from /proc, cachegate's RSS sampled meanwhile);
            then cachegate's three rows again with the access log on as
            shipped (cg-tier-log, cg-redis-log, cg-pass-log; SKIP=accesslog
            drops them); with --baseline-bin, every cachegate row again
            right after its twin, run from a baseline binary (cg-*-base),
            so every round measures old and new back to back; the report
            gives each target for both, and new ÷ baseline;
  memory    cachegate's tier filled past its default 64 MiB bound, then hit
            load: VmRSS / VmHWM;
  stream    1 GiB bodies streamed through cachegate: RSS growth;
  stale     two instances on one Redis: how long B serves a key from its
            tier after a PUT through A purged it;
  purge     1,000,000 records in a private Redis: a PUT's key+tag purge
            cost (also through the baseline binary), then the admin clear
            of them all and Redis's SLOWLOG;
  scaling   req/CPU-s at 1/64/512 connections (cg-tier, nginx-hit); CPU
            per hit of 1 KiB/16 KiB/256 KiB bodies (cachegate, nginx); a
            Zipf working set over a million ids, 10x the tier (SKIP=zipf);
            then a projection of cores and Redis shards for 1 M req/s;

prints the tables and writes the markdown results file. Every process it
started is stopped on the way out (normal end, error, INT, TERM).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import random
import re
import secrets
import shlex
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
import urllib.parse
from pathlib import Path

HERE = Path(__file__).resolve().parent
BENCH = HERE.parent
REPO = BENCH.parent
sys.dont_write_bytecode = True
sys.path.insert(0, str(HERE))
import benchctl as bc  # noqa: E402

SECTIONS = ("matrix", "memory", "stream", "stale", "purge", "scaling")
# SKIP names that are not sections of their own: `accesslog` drops the
# access-log rows (cg-*-log, cg-*-log-base) from the matrix; `zipf` drops the
# Zipf part of `scaling` (its million-entry fill takes a few minutes);
# `protocols` drops the TLS and HTTP/2 rows (PROTO_PAIRS) from the matrix
SKIP_EXTRA = ("accesslog", "zipf", "protocols")
# cachegate rows of the matrix that have access-log (-log) and baseline
# (-base) variants: name -> (config, key prefix, tier on, Redis DB of the
# plain row); the variants get their own prefixes and DBs (see INSTANCES)
CG_ROWS = ("cg-tier", "cg-redis", "cg-pass")
# name -> (config, key prefix, tier, Redis DB, port offset, access log, baseline binary)
INSTANCES = {
    "cg-tier": ("hit.toml", "cgt:", None, 1, 30, False, False),
    "cg-redis": ("hit.toml", "cgr:", False, 2, 31, False, False),
    "cg-pass": ("pass.toml", "cgp:", None, 3, 32, False, False),
    "cg-tier-base": ("hit.toml", "cgtb:", None, 6, 33, False, True),
    "cg-redis-base": ("hit.toml", "cgrb:", False, 7, 34, False, True),
    "cg-pass-base": ("pass.toml", "cgpb:", None, 8, 35, False, True),
    "cg-tier-log": ("hit.toml", "cgtl:", None, 9, 70, True, False),
    "cg-redis-log": ("hit.toml", "cgrl:", False, 10, 71, True, False),
    "cg-pass-log": ("pass.toml", "cgpl:", None, 11, 72, True, False),
    "cg-tier-log-base": ("hit.toml", "cgtlb:", None, 12, 73, True, True),
    "cg-redis-log-base": ("hit.toml", "cgrlb:", False, 13, 74, True, True),
    "cg-pass-log-base": ("pass.toml", "cgplb:", None, 14, 75, True, True),
    # the protocol rows' instances: the hit config behind a TLS listener (its
    # rows cg-tls over HTTP/1.1 and cg-h2 over h2 by ALPN) and behind a
    # cleartext one with h2c on (cg-h2c); every Redis DB is taken, so they
    # share cg-tier's, each with its own key prefix
    "cg-tls": ("hit.toml", "cgtls:", None, 1, 36, False, False),
    "cg-h2c": ("hit.toml", "cgh2c:", None, 1, 37, False, False),
}
# The protocol rows, each cachegate row beside nginx configured the same way
# (one certificate, TLS 1.2 and 1.3, keep-alive; see start_nginx): HTTP/1.1
# over TLS (wrk), HTTP/2 over TLS by ALPN and cleartext HTTP/2 with prior
# knowledge (h2load, H2_CONNS connections of H2_STREAMS streams each).
PROTO_PAIRS = (("cg-tls", "nginx-tls"), ("cg-h2", "nginx-h2"), ("cg-h2c", "nginx-h2c"))
# a row measured on another row's instance: row -> instance
INSTANCE_OF = {"cg-h2": "cg-tls"}
# --baseline-bin: (row of the current binary, the same row from the baseline
# binary); new ÷ baseline median req/s at or above this is "within 3 %"
BASELINE_PAIRS = tuple((n + v, n + v + "-base") for v in ("", "-log") for n in CG_ROWS)
BASELINE_MIN_RATIO = 0.97
# variants of the cachegate rows: suffix -> what
VARIANTS = {"": "log off", "-base": "log off, baseline binary", "-log": "access log on",
            "-log-base": "access log on, baseline binary"}


def env_int(name: str, default: int) -> int:
    v = os.environ.get(name, "")
    return int(v) if v.strip() else default


class Knobs:
    def __init__(self) -> None:
        self.rounds = env_int("ROUNDS", 3)
        self.duration = env_int("DURATION", 5)
        self.threads = env_int("THREADS", 1)
        self.conns = env_int("CONNS", 64)
        self.working_set = env_int("WORKING_SET", 1000)
        self.tasks = env_int("TASKS", 10000)
        self.db_latency_ms = env_int("DB_LATENCY_MS", 2)
        self.server_cpu = os.environ.get("SERVER_CPU", "0") or "0"
        self.loadgen_cpu = os.environ.get("LOADGEN_CPU", "1") or "1"
        self.port_base = env_int("PORT_BASE", 19000)
        self.puts = env_int("PUTS", 300)
        self.stale_trials = env_int("STALE_TRIALS", 200)
        self.purge_entries = env_int("PURGE_ENTRIES", 1_000_000)
        self.stream_mb = env_int("STREAM_MB", 1024)
        self.tier_fill_mb = env_int("TIER_FILL_MB", 96)
        # scaling section
        self.scale_conns = [int(x) for x in os.environ.get("SCALE_CONNS", "1,64,512").split(",") if x.strip()]
        self.body_sizes = [int(x) for x in os.environ.get("BODY_SIZES", "1024,16384,262144").split(",")
                           if x.strip()]
        self.body_ids = env_int("BODY_IDS", 100)
        self.scale_rounds = env_int("SCALE_ROUNDS", 1)
        self.zipf_ids = env_int("ZIPF_IDS", 1_000_000)
        self.zipf_s = float(os.environ.get("ZIPF_S", "") or 1.0)
        self.zipf_task_bytes = env_int("ZIPF_TASK_BYTES", 600)
        self.zipf_tier_div = env_int("ZIPF_TIER_DIV", 10)
        self.proj_rps = env_int("PROJ_RPS", 1_000_000)
        self.proj_hit = float(os.environ.get("PROJ_HIT", "") or 0.95)
        # HTTP/2 rows: h2load's connections and concurrent streams per connection
        self.h2_conns = env_int("H2_CONNS", 8)
        self.h2_streams = env_int("H2_STREAMS", 8)
        self.only = [r for r in os.environ.get("ONLY", "").split(",") if r]
        skip = [s for s in os.environ.get("SKIP", "").split(",") if s]
        for s in skip:
            if s not in SECTIONS + SKIP_EXTRA:
                raise SystemExit(f"SKIP: unknown name {s!r} (known: {', '.join(SECTIONS + SKIP_EXTRA)})")
        self.sections = [s for s in SECTIONS if s not in skip]
        self.skip = skip

    def invocation(self) -> str:
        defaults = {"ROUNDS": "3", "DURATION": "5", "THREADS": "1", "CONNS": "64",
                    "WORKING_SET": "1000", "TASKS": "10000", "DB_LATENCY_MS": "2",
                    "SERVER_CPU": "0", "LOADGEN_CPU": "1", "PORT_BASE": "19000", "PUTS": "300",
                    "STALE_TRIALS": "200", "PURGE_ENTRIES": "1000000", "STREAM_MB": "1024",
                    "TIER_FILL_MB": "96", "ONLY": "", "SKIP": "", "CACHEGATE_BIN": "", "BASELINE_BIN": "",
                    "SCALE_CONNS": "1,64,512", "BODY_SIZES": "1024,16384,262144", "BODY_IDS": "100",
                    "SCALE_ROUNDS": "1", "ZIPF_IDS": "1000000", "ZIPF_S": "1.0", "ZIPF_TASK_BYTES": "600",
                    "ZIPF_TIER_DIV": "10", "PROJ_RPS": "1000000", "PROJ_HIT": "0.95",
                    "H2_CONNS": "8", "H2_STREAMS": "8"}
        parts = []
        for k, d in defaults.items():
            v = os.environ.get(k, "")
            if v and v != d:
                parts.append(f"{k}={v}")
        return " ".join(parts + ["bench/bench.sh"])


T0 = time.monotonic()


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')} +{time.monotonic() - T0:5.0f}s] {msg}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------
# processes: every server process pinned to the server core, own session
# --------------------------------------------------------------------------
class Daemons:
    def __init__(self, run_dir: Path, cpu: str):
        self.run_dir = run_dir
        self.cpu = cpu
        self.procs: dict[str, subprocess.Popen] = {}
        self.order: list[str] = []
        self.commands: list[str] = []
        self.pidfile = run_dir / "pids"
        (run_dir / "logs").mkdir(parents=True, exist_ok=True)

    def start(self, name: str, argv: list[str], env: dict | None = None) -> int:
        cwd = self.run_dir / "cwd" / name
        cwd.mkdir(parents=True, exist_ok=True)
        full_env = dict(os.environ)
        if env:
            full_env.update(env)
        logf = open(self.run_dir / "logs" / f"{name}.log", "wb")
        p = subprocess.Popen(["taskset", "-c", self.cpu, *argv], cwd=cwd, env=full_env,
                             stdin=subprocess.DEVNULL, stdout=logf, stderr=subprocess.STDOUT,
                             start_new_session=True)
        logf.close()
        self.procs[name] = p
        self.order.append(name)
        with open(self.pidfile, "a") as f:
            f.write(f"{p.pid} {name}\n")
        shown_env = " ".join(f"{k}={v}" for k, v in (env or {}).items() if "TOKEN" not in k)
        self.commands.append((shown_env + " " if shown_env else "") +
                             shlex.join(["taskset", "-c", self.cpu, *argv]))
        return p.pid

    def pid(self, name: str) -> int:
        return self.procs[name].pid

    def alive(self, name: str) -> bool:
        return name in self.procs and self.procs[name].poll() is None

    def pids(self) -> list[int]:
        return [p.pid for n, p in self.procs.items() if p.poll() is None]

    def stop(self, name: str) -> None:
        p = self.procs.pop(name, None)
        if p is None:
            return
        if p.poll() is None:
            try:
                os.killpg(p.pid, signal.SIGTERM)   # its own session: pid == pgid
            except ProcessLookupError:
                pass
            try:
                p.wait(timeout=5)
            except subprocess.TimeoutExpired:
                try:
                    os.killpg(p.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                p.wait(timeout=5)
        self.order.remove(name)

    def stop_all(self) -> None:
        for name in reversed(list(self.order)):
            try:
                self.stop(name)
            except Exception as e:  # keep stopping the others
                log(f"stopping {name}: {e}")


def port_free(port: int) -> bool:
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        s.bind(("127.0.0.1", port))
        return True
    except OSError:
        return False
    finally:
        s.close()


def wait_until(what: str, check, daemons: Daemons, name: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if check():
                return
        except Exception:
            pass
        if not daemons.alive(name):
            break
        time.sleep(0.05)
    tail = ""
    logf = daemons.run_dir / "logs" / f"{name}.log"
    if logf.exists():
        tail = logf.read_text(errors="replace")[-1500:]
    raise RuntimeError(f"{name} did not become ready ({what}); log tail:\n{tail}")


def http_ok(port: int, path: str) -> bool:
    c = Raw(port, timeout=2)
    try:
        st, _, _ = c.request("GET", path)
        return st == 200
    finally:
        c.close()


# --------------------------------------------------------------------------
# clients: raw HTTP/1.1 keep-alive (timing-friendly) and a minimal RESP one
# --------------------------------------------------------------------------
class Raw:
    def __init__(self, port: int, host: str = "127.0.0.1", timeout: float = 10.0):
        self.addr = (host, port)
        self.timeout = timeout
        self.sock: socket.socket | None = None
        self.buf = b""

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()
            self.sock = None
        self.buf = b""

    def _connect(self) -> None:
        self.sock = socket.create_connection(self.addr, timeout=self.timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = b""

    def build(self, method: str, path: str, body: bytes = b"", headers: dict | None = None) -> bytes:
        lines = [f"{method} {path} HTTP/1.1", f"Host: {self.addr[0]}:{self.addr[1]}",
                 "Accept: application/json"]
        for k, v in (headers or {}).items():
            lines.append(f"{k}: {v}")
        if body or method in ("PUT", "POST", "PATCH"):
            lines.append("Content-Type: application/json")
            lines.append(f"Content-Length: {len(body)}")
        return ("\r\n".join(lines) + "\r\n\r\n").encode() + body

    def send(self, raw: bytes) -> None:
        if self.sock is None:
            self._connect()
        self.sock.sendall(raw)

    def request(self, method: str, path: str, body: bytes = b"", headers: dict | None = None):
        raw = self.build(method, path, body, headers)
        for attempt in (1, 2):
            try:
                self.send(raw)
                return self.read_response(head_only=(method == "HEAD"))
            except (ConnectionError, socket.timeout, OSError, EOFError):
                self.close()
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")

    def _fill(self) -> None:
        data = self.sock.recv(262144)
        if not data:
            raise EOFError("connection closed")
        self.buf += data

    def read_response(self, head_only: bool = False):
        while b"\r\n\r\n" not in self.buf:
            self._fill()
        head, self.buf = self.buf.split(b"\r\n\r\n", 1)
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split()[1])
        hdrs: dict[str, str] = {}
        for l in lines[1:]:
            k, _, v = l.partition(":")
            hdrs[k.strip().lower()] = v.strip()
        if head_only or status in (204, 304) or 100 <= status < 200:
            body = b""
        elif "content-length" in hdrs:
            n = int(hdrs["content-length"])
            while len(self.buf) < n:
                self._fill()
            body, self.buf = self.buf[:n], self.buf[n:]
        elif "chunked" in hdrs.get("transfer-encoding", "").lower():
            parts = []
            while True:
                while b"\r\n" not in self.buf:
                    self._fill()
                size_line, self.buf = self.buf.split(b"\r\n", 1)
                size = int(size_line.split(b";")[0], 16)
                while len(self.buf) < size + 2:
                    self._fill()
                parts.append(self.buf[:size])
                self.buf = self.buf[size + 2:]
                if size == 0:
                    break
            body = b"".join(parts)
        else:
            try:
                while True:
                    self._fill()
            except EOFError:
                pass
            body, self.buf = self.buf, b""
            self.close()
        if hdrs.get("connection", "").lower() == "close":
            self.close()
        return status, hdrs, body


class RespError(Exception):
    pass


class Resp:
    def __init__(self, port: int, timeout: float = 30.0):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.f = self.sock.makefile("rb")

    def close(self) -> None:
        self.f.close()
        self.sock.close()

    def cmd(self, *args):
        out = [b"*%d\r\n" % len(args)]
        for a in args:
            a = a if isinstance(a, bytes) else str(a).encode()
            out.append(b"$%d\r\n%s\r\n" % (len(a), a))
        self.sock.sendall(b"".join(out))
        return self._read()

    def _read(self):
        line = self.f.readline()
        if not line:
            raise EOFError("redis closed the connection")
        t, rest = line[:1], line[1:-2]
        if t == b"+":
            return rest.decode()
        if t == b"-":
            raise RespError(rest.decode())
        if t == b":":
            return int(rest)
        if t == b"$":
            n = int(rest)
            if n < 0:
                return None
            data = self.f.read(n + 2)
            return data[:-2]
        if t == b"*":
            n = int(rest)
            if n < 0:
                return None
            return [self._read() for _ in range(n)]
        raise RespError(f"unexpected reply {line!r}")

    def info(self, section: str = "") -> dict[str, str]:
        raw = self.cmd("INFO", section) if section else self.cmd("INFO")
        d = {}
        for l in raw.decode().splitlines():
            if ":" in l and not l.startswith("#"):
                k, v = l.split(":", 1)
                d[k] = v
        return d


def redis_ping(port: int) -> bool:
    r = Resp(port, timeout=1)
    try:
        return r.cmd("PING") == "PONG"
    finally:
        r.close()


# --------------------------------------------------------------------------
# memory of a process
# --------------------------------------------------------------------------
def proc_status(pid: int) -> dict[str, int]:
    out = {}
    for l in open(f"/proc/{pid}/status"):
        if l.startswith(("VmRSS:", "VmHWM:")):
            k, v = l.split(":", 1)
            out[k] = int(v.split()[0])  # kB
    return out


def reset_hwm(pid: int) -> bool:
    """Resets VmHWM to the current RSS (Linux: write 5 to clear_refs)."""
    try:
        with open(f"/proc/{pid}/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


class RssSampler:
    """Samples a process's VmRSS every `every` seconds in a thread."""

    def __init__(self, pid: int, every: float = 0.02):
        self.pid, self.every = pid, every
        self.max_kb = 0
        self.samples = 0
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                rss = proc_status(self.pid).get("VmRSS", 0)
                self.max_kb = max(self.max_kb, rss)
                self.samples += 1
            except OSError:
                return
            self._stop.wait(self.every)

    def __enter__(self):
        self._t.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._t.join()


def mb(kb: float | None) -> str:
    return "—" if kb is None else f"{kb / 1024:.1f} MB"


# --------------------------------------------------------------------------
# Prometheus text: histograms of /metrics
# --------------------------------------------------------------------------
METRIC_RE = re.compile(r'^([a-zA-Z_:][\w:]*)(?:\{([^}]*)\})?\s+(\S+)')


def parse_metrics(text: str) -> list[tuple[str, dict, float]]:
    out = []
    for l in text.splitlines():
        if l.startswith("#"):
            continue
        m = METRIC_RE.match(l)
        if not m:
            continue
        labels = dict(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', m.group(2) or ""))
        try:
            out.append((m.group(1), labels, float(m.group(3))))
        except ValueError:
            pass
    return out


def histogram(metrics, name: str, **want) -> dict | None:
    """{'count','sum','buckets':[(le, cumulative)]} of one labelled histogram."""
    buckets, count, total = [], None, None
    for n, labels, v in metrics:
        if any(labels.get(k) != w for k, w in want.items()):
            continue
        if n == name + "_bucket":
            le = labels.get("le")
            buckets.append((float("inf") if le == "+Inf" else float(le), v))
        elif n == name + "_count":
            count = v
        elif n == name + "_sum":
            total = v
    if count is None:
        return None
    buckets.sort()
    return {"count": count, "sum": total, "buckets": buckets}


def hist_diff(a: dict | None, b: dict | None) -> dict | None:
    if b is None:
        return None
    if a is None:
        return b
    ab = dict(a["buckets"])
    return {"count": b["count"] - a["count"], "sum": (b["sum"] or 0) - (a["sum"] or 0),
            "buckets": [(le, c - ab.get(le, 0)) for le, c in b["buckets"]]}


def hist_quantile_bound(h: dict | None, q: float) -> float | None:
    """Upper bound (bucket edge, seconds) under which a fraction q of calls fell."""
    if not h or not h["count"]:
        return None
    need = q * h["count"]
    for le, c in h["buckets"]:
        if c >= need:
            return le
    return float("inf")


# --------------------------------------------------------------------------
# statistics helpers
# --------------------------------------------------------------------------
def med(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def pct(xs: list[float], q: float) -> float | None:
    """Nearest-rank percentile (q in 0..100)."""
    if not xs:
        return None
    s = sorted(xs)
    k = max(0, min(len(s) - 1, int(-(-q * len(s) // 100)) - 1))
    return s[k]


def f_rps(x) -> str:
    return "—" if x is None else f"{x:,.0f}"


def f_ms(x) -> str:
    """x in ms."""
    if x is None:
        return "—"
    return f"{x:.2f}" if abs(x) < 100 else f"{x:.0f}"


def f_ratio(x) -> str:
    if x is None:
        return "—"
    return f"{x:.2f}×" if x >= 0.095 else f"{x:.3f}×"


def f_pct(x) -> str:
    return "—" if x is None else f"{100 * x:.0f}%"


# --------------------------------------------------------------------------
# the benchmark
# --------------------------------------------------------------------------
class Bench:
    def __init__(self, a: argparse.Namespace):
        self.a = a
        self.k = Knobs()
        self.bin = a.bin
        # --baseline-bin: cg-tier-base and cg-redis-base run this binary (the
        # code before a change) beside cg-tier and cg-redis (the current one)
        self.baseline_bin = getattr(a, "baseline_bin", None)
        self.py = a.backend_python
        self.run_dir = Path(a.run_dir)
        self.d = Daemons(self.run_dir, self.k.server_cpu)
        self.results: dict = {"sections": {}, "failures": [], "warnings": []}
        b = self.k.port_base
        self.P = {"direct": b, "seed": b + 1, "redis": b + 10, "redis-purge": b + 11,
                  "nginx-hit": b + 20, "nginx-pass": b + 21, "nginx-tls": b + 22, "nginx-h2c": b + 23,
                  "cg-tier": b + 30, "cg-redis": b + 31, "cg-pass": b + 32,
                  "big": b + 40, "cg-big": b + 41, "stale-a": b + 50, "stale-b": b + 51,
                  "cg-purge": b + 60,
                  "sized": b + 80, "redis-zipf": b + 81, "cg-body": b + 82, "cg-zipf": b + 83,
                  "nginx-body": b + 84}
        for n, spec in INSTANCES.items():
            if not spec[6] or self.baseline_bin:
                self.P[n] = b + spec[4]
        if self.baseline_bin:
            self.P["cg-purge-base"] = b + 61
        self.token = secrets.token_hex(24)
        self.ids: list[str] = []
        self.extra_ids: list[str] = []
        self.golden = self.run_dir / "golden"
        self.matrix_daemons: list[str] = []

    # ------------------------------------------------------------ helpers
    def url(self, name: str, scheme: str = "http") -> str:
        return f"{scheme}://127.0.0.1:{self.P[name]}"

    def make_cert(self) -> None:
        """One ECDSA P-256 certificate for every TLS listener of the run
        (cachegate's and nginx's)."""
        d = self.run_dir / "tls"
        d.mkdir(exist_ok=True)
        self.cert, self.key = d / "cert.pem", d / "key.pem"
        if self.cert.exists():
            return
        subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                        "-nodes", "-keyout", str(self.key), "-out", str(self.cert), "-days", "7",
                        "-subj", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"],
                       check=True, capture_output=True)

    def proto_conf(self, name: str) -> str:
        """What an instance's config gets appended for its listener."""
        if name == "cg-tls":
            return f'\n[server.tls]\ncert_file = "{self.cert}"\nkey_file = "{self.key}"\n'
        if name == "cg-h2c":
            return "\n[server]\nh2c = true\n"
        return ""

    def tls_handshake(self, port: int) -> str:
        """The protocol and cipher a TLS listener negotiates (openssl s_client)."""
        p = subprocess.run(["openssl", "s_client", "-connect", f"127.0.0.1:{port}", "-alpn", "h2,http/1.1"],
                           input="", capture_output=True, text=True, errors="replace", timeout=10)
        proto = re.search(r"^New, (\S+), Cipher is (\S+)", p.stdout, re.M)
        alpn = re.search(r"^ALPN protocol: (\S+)", p.stdout, re.M)
        return (f"{proto.group(1)} {proto.group(2)}" if proto else "?") + (f", ALPN {alpn.group(1)}" if alpn else "")

    def need_ports(self, *names: str) -> None:
        for n in names:
            if not port_free(self.P[n]):
                raise RuntimeError(f"port {self.P[n]} ({n}) is already in use by a process this run did "
                                   "not start; free it or set PORT_BASE")

    def write_conf(self, name: str, base: str, prefix: str, tier: bool | None = None,
                   access_log: bool | None = None, tier_max_bytes: int | None = None, extra: str = "") -> Path:
        """A copy of conf/BASE with its own key_prefix; optionally the tier on/off,
        the access log on/off (`[access_log] enabled`, stdout: the daemon's log
        file) and the tier's max_bytes."""
        text = (BENCH / "conf" / base).read_text()
        text, n = re.subn(r'(?m)^key_prefix = ".*"$', f'key_prefix = "{prefix}"', text)
        assert n == 1, f"{base}: expected one key_prefix line"
        if access_log is not None:
            text, n = re.subn(r'(?ms)^(\[access_log\]\n)enabled = \w+$',
                              rf'\1enabled = {str(access_log).lower()}', text)
            assert n == 1, f"{base}: expected `enabled = ...` right under [access_log]"
        if tier_max_bytes is not None:
            text, n = re.subn(r'(?ms)^(\[tier\]\nenabled = true\n)', rf'\1max_bytes = {tier_max_bytes}\n', text)
            assert n == 1, f"{base}: expected `enabled = true` right under [tier]"
        if tier is not None:
            if "[tier]" in text:
                text, n = re.subn(r'(?ms)^(\[tier\]\n)enabled = \w+$', rf'\1enabled = {str(tier).lower()}', text)
                assert n == 1, f"{base}: expected `enabled = ...` right under [tier]"
            else:
                text += f"\n[tier]\nenabled = {str(tier).lower()}\n"
        text += extra
        d = self.run_dir / "conf"
        d.mkdir(exist_ok=True)
        p = d / f"{name}.toml"
        p.write_text(text)
        return p

    def start_cachegate(self, name: str, conf: Path, backend: str, redis_port: int, db: int,
                        binary: str | None = None) -> None:
        """Starts a cachegate instance; `binary` defaults to the one measured (--bin)."""
        self.need_ports(name)
        env = {"CACHEGATE_LISTEN": f"127.0.0.1:{self.P[name]}", "CACHEGATE_BACKEND": backend,
               "REDIS_URL": f"redis://127.0.0.1:{redis_port}/{db}",
               "CACHEGATE_BENCH_TOKEN": self.token}
        self.d.start(name, [binary or self.bin, "--config", str(conf), "--log", "warn"], env)

    def wait_cachegate(self, name: str) -> None:
        if name == "cg-tls":
            url = self.url(name, "https")
            wait_until("/readyz", lambda: bc.Client(url, timeout=2).get("/readyz")[0] == 200, self.d, name)
            return
        wait_until("/readyz", lambda: http_ok(self.P[name], "/readyz"), self.d, name)

    def start_redis(self, name: str, extra: list[str] | None = None) -> None:
        self.need_ports(name)
        data = self.run_dir / "cwd" / name
        data.mkdir(parents=True, exist_ok=True)
        self.d.start(name, ["redis-server", "--bind", "127.0.0.1", "--port", str(self.P[name]),
                            "--save", "", "--appendonly", "no", "--dir", str(data),
                            "--protected-mode", "yes", *(extra or [])])
        wait_until("PING", lambda: redis_ping(self.P[name]), self.d, name)

    def section(self, name: str, fn) -> None:
        if name not in self.k.sections:
            log(f"== {name}: skipped (SKIP)")
            return
        log(f"== {name}")
        t = time.monotonic()
        try:
            fn()
        except Exception as e:
            import traceback
            traceback.print_exc()
            self.results["failures"].append(f"section {name} failed: {type(e).__name__}: {e}"[:1500])
            log(f"section {name} FAILED: {e}")
        self.results.setdefault("section_s", {})[name] = round(time.monotonic() - t, 1)

    # ------------------------------------------------------------ setup
    def setup(self) -> None:
        k = self.k
        self.need_ports(*self.P)   # all of them, before starting anything
        n_extra = k.puts + k.stale_trials
        if k.working_set + n_extra > k.tasks:
            raise RuntimeError("WORKING_SET + PUTS + STALE_TRIALS must not exceed TASKS")
        ids = subprocess.run([self.py, str(HERE / "backend.py"), "--tasks", str(k.tasks),
                              "--dump-ids", str(k.working_set + n_extra)],
                             check=True, capture_output=True, text=True).stdout.split()
        self.ids = ids[:k.working_set]
        self.extra_ids = ids[k.working_set:]
        self.ids_file = self.run_dir / "ids.txt"
        self.ids_file.write_text("\n".join(self.ids) + "\n")

        self.start_redis("redis")
        backend = [self.py, str(HERE / "backend.py"), "--db-latency-ms", str(k.db_latency_ms),
                   "--tasks", str(k.tasks)]
        self.need_ports("direct", "seed")
        self.d.start("direct", backend + ["--port", str(self.P["direct"])])
        self.d.start("seed", backend + ["--port", str(self.P["seed"]), "--cache", "--redis-url",
                                        f"redis://127.0.0.1:{self.P['redis']}/0"])
        for n in ("direct", "seed"):
            wait_until("/healthz", lambda n=n: http_ok(self.P[n], "/healthz"), self.d, n, timeout=60)
        log("backend up; fetching the working set's JSON (golden copy)")
        rc = bc.cmd_golden(argparse.Namespace(base=self.url("direct"), ids=str(self.ids_file),
                                              out=str(self.golden), prefix="/api/v1/tasks/"))
        if rc:
            raise RuntimeError("golden fetch failed")
        self.matrix_daemons = ["redis", "direct", "seed"]

        if "matrix" in k.sections or "memory" in k.sections or "scaling" in k.sections:
            self.make_cert()
            self.start_nginx()
            self.matrix_daemons.append("nginx")
            direct = self.url("direct")
            # cg-tier, cg-redis, cg-pass always (memory and scaling use cg-tier);
            # the access-log and baseline variants when a matrix row needs them.
            # The variants have their own key prefixes and Redis DBs (4 and 5
            # are cg-big's and stale's, 15 cg-body's).
            wanted = set(CG_ROWS)
            if "matrix" in k.sections:
                wanted |= {INSTANCE_OF.get(r["name"], r["name"]) for r in self.rows()} & INSTANCES.keys()
            started = []
            for n, (conf, prefix, tier, db, _, log_on, base) in INSTANCES.items():
                if n not in wanted:
                    continue
                self.start_cachegate(n, self.write_conf(n, conf, prefix, tier=tier,
                                                        access_log=True if log_on else None,
                                                        extra=self.proto_conf(n)),
                                     direct, self.P["redis"], db, binary=self.baseline_bin if base else None)
                started.append(n)
            for n in started:
                self.wait_cachegate(n)
                self.matrix_daemons.append(n)
            wait_until("nginx", lambda: http_ok(self.P["nginx-pass"], "/healthz"), self.d, "nginx")
            if "cg-tls" in started:
                self.results["tls"] = {"cg-tls": self.tls_handshake(self.P["cg-tls"]),
                                       "nginx-tls": self.tls_handshake(self.P["nginx-tls"])}
                log(f"TLS negotiated: {self.results['tls']}")

    def start_nginx(self) -> None:
        self.need_ports("nginx-hit", "nginx-pass", "nginx-body", "nginx-tls", "nginx-h2c")
        ng = self.run_dir / "cwd" / "nginx"
        for sub in ("cache", "tmp"):
            (ng / sub).mkdir(parents=True, exist_ok=True)
        d = self.P["direct"]
        hit_locations = """location /api/v1/tasks/ {
            proxy_pass http://backend;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_cache tasks;
            proxy_cache_key $uri;
            proxy_cache_valid 200 10m;
            proxy_cache_lock on;
            add_header X-Cache-Status $upstream_cache_status;
            open_file_cache max=10000 inactive=60s;
            open_file_cache_valid 60s;
        }
        location / {
            proxy_pass http://backend;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }"""
        conf = f"""# generated by bench/bench.sh (as shared/bench-peers/peers.sh's nginx-hit and nginx-pass)
worker_processes 1;
daemon off;
pid {ng}/nginx.pid;
error_log {ng}/error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    sendfile on;
    tcp_nopush on;
    tcp_nodelay on;
    keepalive_timeout 75s;
    keepalive_requests 1000000;
    client_body_temp_path {ng}/tmp/body;
    proxy_temp_path {ng}/tmp/proxy;
    fastcgi_temp_path {ng}/tmp/fastcgi;
    uwsgi_temp_path {ng}/tmp/uwsgi;
    scgi_temp_path {ng}/tmp/scgi;
    upstream backend {{
        server 127.0.0.1:{d};
        keepalive 64;
    }}
    upstream sized {{
        server 127.0.0.1:{self.P['sized']};
        keepalive 64;
    }}
    proxy_cache_path {ng}/cache levels=1:2 keys_zone=tasks:10m max_size=256m inactive=20m use_temp_path=off;

    # nginx-hit: proxy_cache (+ open_file_cache), as the peers harness's nginx-hit row
    server {{
        listen 127.0.0.1:{self.P['nginx-hit']};
        location /api/v1/tasks/ {{
            proxy_pass http://backend;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_cache tasks;
            proxy_cache_key $uri;
            proxy_cache_valid 200 10m;
            proxy_cache_lock on;
            add_header X-Cache-Status $upstream_cache_status;
            open_file_cache max=10000 inactive=60s;
            open_file_cache_valid 60s;
        }}
        location / {{
            proxy_pass http://backend;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }}
    }}
    # nginx-body: proxy_cache hits of the scaling section's bodies (harness/sizedbackend.py)
    server {{
        listen 127.0.0.1:{self.P['nginx-body']};
        location /blob/ {{
            proxy_pass http://sized;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_cache tasks;
            proxy_cache_key $uri;
            proxy_cache_valid 200 10m;
            proxy_cache_lock on;
            proxy_buffers 64 8k;
            add_header X-Cache-Status $upstream_cache_status;
            open_file_cache max=10000 inactive=60s;
            open_file_cache_valid 60s;
        }}
    }}
    # nginx-tls (rows nginx-tls, HTTP/1.1, and nginx-h2, h2 by ALPN) and nginx-h2c
    # (cleartext HTTP/2, prior knowledge): nginx-hit's cache (one zone, one key)
    # behind other listeners; the certificate and TLS versions are cachegate's,
    # session reuse off (keep-alive connections handshake once either way)
    server {{
        listen 127.0.0.1:{self.P['nginx-tls']} ssl http2;
        ssl_certificate {self.cert};
        ssl_certificate_key {self.key};
        ssl_protocols TLSv1.2 TLSv1.3;
        ssl_session_cache off;
        ssl_session_tickets off;
        {hit_locations}
    }}
    server {{
        listen 127.0.0.1:{self.P['nginx-h2c']} http2;
        {hit_locations}
    }}
    # nginx-pass: the same proxy, no cache (miss path)
    server {{
        listen 127.0.0.1:{self.P['nginx-pass']};
        location / {{
            proxy_pass http://backend;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }}
    }}
}}
"""
        (ng / "nginx.conf").write_text(conf)
        t = subprocess.run(["nginx", "-t", "-q", "-p", str(ng), "-e", str(ng / "error.log"),
                            "-c", str(ng / "nginx.conf")], capture_output=True, text=True)
        if t.returncode:
            raise RuntimeError(f"nginx config test failed: {t.stderr}")
        self.d.start("nginx", ["nginx", "-p", str(ng), "-e", str(ng / "error.log"), "-c", str(ng / "nginx.conf")])

    # ------------------------------------------------------------ 1. matrix
    def rows(self) -> list[dict]:
        direct = self.url("direct")
        rows = [
            dict(name="nginx-hit", group="hit", url=self.url("nginx-hit"), hit_header="x-cache-status",
                 stats=[direct], warm=1, label="nginx proxy_cache hit (+ open_file_cache)"),
            dict(name="cg-tier", group="hit", url=self.url("cg-tier"), hit_header="x-cache",
                 stats=[direct], warm=2, rss="cg-tier", label="cachegate hit, in-process tier (Redis behind)"),
            dict(name="cg-redis", group="hit", url=self.url("cg-redis"), hit_header="x-cache",
                 stats=[direct], warm=1, rss="cg-redis", label="cachegate hit from Redis (`[tier] enabled = false`)"),
            dict(name="seed", group="hit", url=self.url("seed"), hit_header="",
                 stats=[self.url("seed")], warm=1, label="FastAPI + in-app Redis decorator (seed), cached"),
            dict(name="direct", group="miss", url=direct, hit_header="", stats=[direct], warm=0,
                 label="FastAPI backend direct, no cache (2 ms DB)"),
            dict(name="cg-pass", group="miss", url=self.url("cg-pass"), hit_header="x-cache",
                 stats=[direct], warm=0, rss="cg-pass", label="cachegate pass-through (no rule matches)"),
            dict(name="nginx-pass", group="miss", url=self.url("nginx-pass"), hit_header="",
                 stats=[direct], warm=0, label="nginx proxy, no cache"),
        ]
        if "protocols" not in self.k.skip:
            tls, h2c = self.url("cg-tls", "https"), self.url("cg-h2c")
            ng_tls, ng_h2c = self.url("nginx-tls", "https"), self.url("nginx-h2c")
            h2 = f"h2load -c{self.k.h2_conns} -m{self.k.h2_streams}"
            rows += [
                dict(name="nginx-tls", group="proto", url=ng_tls, hit_header="x-cache-status", stats=[direct],
                     warm=1, label="nginx proxy_cache hit, HTTP/1.1 over TLS (wrk)"),
                dict(name="cg-tls", group="proto", url=tls, hit_header="x-cache", stats=[direct], warm=2,
                     rss="cg-tls", label="cachegate hit (tier), HTTP/1.1 over TLS (wrk)"),
                # h2load checks every status; the warm-up and the JSON check go
                # over HTTP/1.1 to the same cache (nginx: one zone for all listeners)
                dict(name="nginx-h2", group="proto", url=ng_tls, hit_header="x-cache-status", stats=[direct],
                     warm=1, tool="h2load", label=f"nginx proxy_cache hit, HTTP/2 over TLS ({h2})"),
                dict(name="cg-h2", group="proto", url=tls, hit_header="x-cache", stats=[direct], warm=2,
                     rss="cg-tls", tool="h2load", label=f"cachegate hit (tier), HTTP/2 over TLS ({h2})"),
                dict(name="nginx-h2c", group="proto", url=ng_h2c, check_url=self.url("nginx-hit"),
                     hit_header="x-cache-status", stats=[direct], warm=1, tool="h2load",
                     label=f"nginx proxy_cache hit, cleartext HTTP/2 ({h2})"),
                dict(name="cg-h2c", group="proto", url=h2c, hit_header="x-cache", stats=[direct], warm=2,
                     rss="cg-h2c", tool="h2load", label=f"cachegate hit (tier), cleartext HTTP/2 h2c ({h2})"),
            ]
        # right after their plain twins, so each round measures them back to back:
        # cg-X, cg-X-base (baseline binary), cg-X-log (access log on, stdout to
        # the daemon's log file), cg-X-log-base
        suffixes = [""]
        if self.baseline_bin:
            suffixes.append("-base")
        if "accesslog" not in self.k.skip:
            suffixes.append("-log")
            if self.baseline_bin:
                suffixes.append("-log-base")
        out = []
        for r in rows:
            if r["name"] not in CG_ROWS:
                out.append(r)
                continue
            for v in suffixes:
                x = dict(r, name=r["name"] + v, url=self.url(r["name"] + v), rss=r["name"] + v,
                         variant=v, twin=r["name"])
                if v:
                    x["label"] = r["label"] + f" ({VARIANTS[v]})"
                out.append(x)
        rows = out
        if self.k.only:
            rows = [r for r in rows if r["name"] in self.k.only]
        for i, r in enumerate(rows):
            r["index"] = i
            r["verify"] = "exact"
        return rows

    def wrk_args(self, duration: int | None = None, connections: int | None = None,
                 ids: str | None = None, prefix: str = "/api/v1/tasks/") -> argparse.Namespace:
        k = self.k
        return argparse.Namespace(loadgen_cpu=k.loadgen_cpu, threads=k.threads,
                                  connections=connections or k.conns,
                                  duration=duration or k.duration, script=str(HERE / "tasks.lua"),
                                  ids=ids or str(self.ids_file), prefix=prefix)

    def metrics_of(self, name: str) -> list[tuple[str, dict, float]]:
        m = Raw(self.P[name])
        try:
            _, _, body = m.request("GET", "/metrics")
        finally:
            m.close()
        return parse_metrics(body.decode())

    @staticmethod
    def metric_sum(metrics, part: str, **want) -> float:
        """Sum of the samples whose name contains `part` (and the labels `want`)."""
        return sum(v for n, labels, v in metrics
                   if part in n and not n.endswith(("_created", "_bucket"))
                   and all(labels.get(a) == b for a, b in want.items()))

    def access_log_stats(self, name: str) -> dict:
        """Lines the access log wrote (the daemon's log file: stdout) and dropped."""
        out: dict = {}
        f = self.run_dir / "logs" / f"{name}.log"
        try:
            lines, size = 0, 0
            with open(f, "rb") as fh:
                while True:
                    b = fh.read(1 << 22)
                    if not b:
                        break
                    lines += b.count(b"\n")
                    size += len(b)
            out.update({"file": str(f.relative_to(self.run_dir)), "lines": lines, "bytes": size})
        except OSError:
            pass
        try:
            out["dropped"] = self.metric_sum(self.metrics_of(name), "access_log_dropped")
        except Exception as e:
            out["dropped_error"] = str(e)[:200]
        return out

    def matrix(self) -> None:
        k = self.k
        rows = self.rows()
        rng = random.Random(1)
        raw = open(self.run_dir / "raw.jsonl", "w")
        recs = []
        server_pids = [self.d.pid(n) for n in self.matrix_daemons]
        for rnd in range(1, k.rounds + 1):
            for row in rows:
                rec = {"round": rnd, "row": row["name"], "row_index": row["index"], "group": row["group"],
                       "label": row["label"], "url": row["url"], "ts": time.time()}
                try:
                    if row["warm"]:
                        bad = 0
                        t = time.monotonic()
                        for _ in range(row["warm"]):
                            _, b = bc.warm(row.get("check_url", row["url"]), "/api/v1/tasks/", self.ids)
                            bad += b
                        rec["warm_s"] = round(time.monotonic() - t, 3)
                        rec["warm_bad"] = bad
                    checked = dict(row, url=row.get("check_url", row["url"]))
                    rec["verify"] = bc.verify(checked, "/api/v1/tasks/", self.ids, self.golden, 25, rng)
                    win = bc.Window(server_pids, row["stats"])
                    ticks0 = {n: bc.tree_ticks([self.d.pid(n)]) for n in self.matrix_daemons}
                    rss_pid = self.d.pid(row["rss"]) if row.get("rss") else None
                    sampler = RssSampler(rss_pid, 0.05) if rss_pid else None
                    win.start()
                    if sampler:
                        sampler.__enter__()
                    try:
                        if row.get("tool") == "h2load":
                            cmd, res, _ = bc.run_h2load(self.wrk_args(), row, k.h2_conns, k.h2_streams)
                        else:
                            cmd, res, _ = bc.run_wrk(self.wrk_args(), row)
                    finally:
                        if sampler:
                            sampler.__exit__(None, None, None)
                    rec.update(win.stop())
                    rec["cpu_by"] = {n: round((bc.tree_ticks([self.d.pid(n)]) - t0) / bc.HZ, 2)
                                     for n, t0 in ticks0.items()}
                    if rss_pid:
                        st = proc_status(rss_pid)
                        rec["rss_max_kb"] = max(sampler.max_kb, st.get("VmRSS", 0))
                        rec["hwm_kb"] = st.get("VmHWM")
                except Exception as exc:
                    rec["failed"] = f"{type(exc).__name__}: {exc}"[:800]
                    raw.write(json.dumps(rec) + "\n")
                    raw.flush()
                    recs.append(rec)
                    log(f"[round {rnd}] {row['name']:<11} FAILED: {rec['failed']}")
                    continue
                rec["cmd"] = " ".join(cmd)
                rec.update(res)
                rec["errors"] = sum(res[x] for x in ("err_connect", "err_read", "err_write",
                                                     "err_status", "err_timeout"))
                rec["per_cpu"] = res["rps"] / rec["server_cpu_frac"] if rec.get("server_cpu_frac") else None
                raw.write(json.dumps(rec) + "\n")
                raw.flush()
                recs.append(rec)
                v = rec["verify"]
                tally = ", ".join(f"{a}:{b}" for a, b in sorted(v["hit_header_values"].items()))
                log(f"[round {rnd}] {row['name']:<17} {res['rps']:>9.0f} req/s  "
                    f"{(rec['per_cpu'] or 0):>9.0f} req/CPU-s  p50 {res['p50_us'] / 1000:6.2f} ms  "
                    f"p99 {res['p99_us'] / 1000:7.2f} ms  err {rec['errors']}  srv {rec['server_cpu_frac']:.2f}  "
                    f"lg {rec['loadgen_cpu_frac']:.2f}  db-reads {rec['upstream_db_reads']}  "
                    f"verify {v['checked'] - v['n_problems']}/{v['checked']}"
                    + (f" ({tally})" if tally else "")
                    + (f"  rss {mb(rec['rss_max_kb'])}" if rec.get("rss_max_kb") else ""))
        raw.close()
        logs = {}
        for row in rows:
            if row.get("variant", "").startswith("-log") and self.d.alive(row["name"]):
                logs[row["name"]] = self.access_log_stats(row["name"])
                log(f"{row['name']}: access log {logs[row['name']].get('lines', 0):,} lines, "
                    f"{logs[row['name']].get('bytes', 0) / 1048576:.0f} MB, dropped "
                    f"{logs[row['name']].get('dropped')}")
        self.results["sections"]["matrix"] = {"records": recs, "access_log": logs}

    # ------------------------------------------------------------ 2. memory: tier at its bound
    def memory(self) -> None:
        k = self.k
        name = "cg-tier"
        if not self.d.alive(name):
            raise RuntimeError("cg-tier is not running")
        pid = self.d.pid(name)
        out: dict = {"before": proc_status(pid)}
        # Fill the tier with list pages (tagged "tasks" entries, ~0.5 KB per task)
        # until TIER_FILL_MB of bodies went through it; each page is read twice
        # (MISS stores it in Redis, the second read brings it into the tier).
        c = Raw(self.P[name], timeout=30)
        limit, stored, pages, bad = 500, 0, 0, 0
        t = time.monotonic()
        while stored < k.tier_fill_mb * 1024 * 1024 and pages < max(k.tasks - limit, 1):
            path = f"/api/v1/tasks?offset={pages}&limit={limit}"   # a distinct key per page
            st, h, body = c.request("GET", path)
            st2, h2, _ = c.request("GET", path)
            st3, h3, _ = c.request("GET", path)
            if st != 200 or st2 != 200:
                bad += 1
            stored += len(body)
            pages += 1
        c.close()
        out.update({"fill_pages": pages, "fill_bytes": stored, "fill_bad": bad,
                    "fill_s": round(time.monotonic() - t, 1), "last_x_cache": h3.get("x-cache"),
                    "after_fill": proc_status(pid)})
        # Hit load on the working set, RSS sampled
        reset_hwm(pid)
        row = dict(name=name, url=self.url(name))
        for _ in range(2):
            bc.warm(row["url"], "/api/v1/tasks/", self.ids)
        with RssSampler(pid, 0.05) as s:
            _, res, _ = bc.run_wrk(self.wrk_args(), row)
        st = proc_status(pid)
        out.update({"load_rps": res["rps"], "load_rss_max_kb": max(s.max_kb, st["VmRSS"]),
                    "after_load": st,
                    "load_errors": sum(res[x] for x in ("err_connect", "err_read", "err_write",
                                                        "err_status", "err_timeout"))})
        try:
            m = Raw(self.P[name])
            _, _, body = m.request("GET", "/metrics")
            m.close()
            for n, _, v in parse_metrics(body.decode()):
                if n == "cachegate_stored_bytes_total" or n == "cachegate_stored_bytes":
                    out["stored_bytes_metric"] = v
        except Exception:
            pass
        self.results["sections"]["memory"] = out
        log(f"tier fill: {pages} list pages, {stored / 1048576:.0f} MB of bodies in {out['fill_s']} s; "
            f"RSS {mb(out['after_fill']['VmRSS'])} after the fill, max {mb(out['load_rss_max_kb'])} "
            f"under hit load ({res['rps']:.0f} req/s), VmHWM {mb(st['VmHWM'])}")

    # ------------------------------------------------------------ 3. stream 1 GiB
    def stream(self) -> None:
        k = self.k
        size = k.stream_mb * 1024 * 1024
        self.need_ports("big")
        self.d.start("big", [sys.executable, str(HERE / "bigserver.py"), "--port", str(self.P["big"]),
                             "--size", str(size)])
        wait_until("/healthz", lambda: http_ok(self.P["big"], "/healthz"), self.d, "big")
        self.start_cachegate("cg-big", self.write_conf("cg-big", "big.toml", "cgb:"), self.url("big"),
                             self.P["redis"], 4)
        self.wait_cachegate("cg-big")
        pid = self.d.pid("cg-big")
        # a few small requests first, so the baseline includes a warmed-up process
        http_ok(self.P["cg-big"], "/healthz")
        variants = [("pass/len", "no rule, Content-Length"),
                    ("pass/chunked", "no rule, chunked"),
                    ("cached/len", "rule path, body over max_body_bytes, Content-Length"),
                    ("cached/chunked", "rule path, chunked (tee gives up its copy)")]
        out = []
        for path, what in variants:
            time.sleep(0.2)
            before = proc_status(pid)
            reset_hwm(pid)
            t = time.monotonic()
            with RssSampler(pid, 0.01) as s:
                p = subprocess.run(["taskset", "-c", k.loadgen_cpu, "curl", "-s", "-o", "/dev/null",
                                    "-D", str(self.run_dir / "stream-headers.txt"),
                                    "-w", "%{http_code} %{size_download}",
                                    f"{self.url('cg-big')}/big/{path}"],
                                   capture_output=True, text=True, timeout=600)
            wall = time.monotonic() - t
            time.sleep(0.1)
            after = proc_status(pid)
            code, got = (p.stdout.split() + ["?", "0"])[:2]
            hdrs = (self.run_dir / "stream-headers.txt").read_text(errors="replace")
            xc = re.search(r"(?im)^x-cache:\s*(\S+)", hdrs)
            peak = max(s.max_kb, after.get("VmHWM", 0))
            rec = {"path": f"/big/{path}", "what": what, "status": code, "bytes": int(got),
                   "complete": int(got) == size and code == "200", "seconds": round(wall, 2),
                   "mb_s": round(int(got) / 1048576 / wall, 0) if wall else None,
                   "rss_before_kb": before["VmRSS"], "rss_peak_kb": peak, "rss_after_kb": after["VmRSS"],
                   "growth_kb": peak - before["VmRSS"], "x_cache": xc.group(1) if xc else None,
                   "samples": s.samples}
            out.append(rec)
            log(f"stream {rec['path']:<20} {code} {int(got) / 1048576:7.0f} MiB in {wall:5.2f} s  "
                f"RSS {mb(before['VmRSS'])} -> peak {mb(peak)} (growth {mb(rec['growth_kb'])})")
        self.d.stop("cg-big")
        self.d.stop("big")
        self.results["sections"]["stream"] = {"size": size, "variants": out}

    # ------------------------------------------------------------ 4. cross-instance staleness
    def stale(self) -> None:
        k = self.k
        direct = self.url("direct")
        for n in ("stale-a", "stale-b"):
            self.start_cachegate(n, self.write_conf(n, "hit.toml", "cgs:"), direct, self.P["redis"], 5)
        for n in ("stale-a", "stale-b"):
            self.wait_cachegate(n)
        time.sleep(0.3)  # tracking established (polled every 20 ms by cachegate)
        ids = self.extra_ids[k.puts:k.puts + k.stale_trials]
        A, B = Raw(self.P["stale-a"]), Raw(self.P["stale-b"])
        r = Resp(self.P["redis"])

        def reads() -> int:
            i = r.info("stats")
            return int(i["keyspace_hits"]) + int(i["keyspace_misses"])

        trials = []
        for i, tid in enumerate(ids):
            path = f"/api/v1/tasks/{tid}"
            B.request("GET", path)              # MISS: stored in Redis
            B.request("GET", path)              # from Redis, into B's tier
            from_tier = False
            for _ in range(3):
                r0 = reads()
                st, h, old = B.request("GET", path)
                from_tier = reads() == r0 and h.get("x-cache") == "HIT"
                if from_tier:
                    break
            body = json.dumps({"name": f"stale trial {i} {secrets.token_hex(4)}"}).encode()
            st_put, _, _ = A.request("PUT", path, body)
            t_put = time.perf_counter_ns()
            req = B.build("GET", path)
            stale_n, res = 0, None
            deadline = t_put + 2_000_000_000
            while True:
                t_send = time.perf_counter_ns()
                B.send(req)
                st, h, b = B.read_response()
                t_recv = time.perf_counter_ns()
                if b != old:
                    res = (t_send, t_recv, st, h.get("x-cache"))
                    break
                stale_n += 1
                if t_recv > deadline:
                    break
            trial = {"id": tid, "from_tier": from_tier, "put_status": st_put, "stale_polls": stale_n}
            if res:
                trial.update({"window_ms": (res[0] - t_put) / 1e6, "answer_ms": (res[1] - t_put) / 1e6,
                              "new_status": res[2], "new_x_cache": res[3]})
            else:
                trial["timed_out"] = True
            trials.append(trial)
        A.close()
        B.close()
        r.close()
        self.d.stop("stale-b")
        self.d.stop("stale-a")
        win = [t["window_ms"] for t in trials if "window_ms" in t]
        ans = [t["answer_ms"] for t in trials if "answer_ms" in t]
        out = {"trials": len(trials), "from_tier": sum(t["from_tier"] for t in trials),
               "put_ok": sum(t["put_status"] == 200 for t in trials),
               "timed_out": sum(bool(t.get("timed_out")) for t in trials),
               "with_stale": sum(t["stale_polls"] > 0 for t in trials),
               "stale_polls_max": max((t["stale_polls"] for t in trials), default=0),
               "new_x_cache": {},
               "window_p50": pct(win, 50), "window_p99": pct(win, 99), "window_max": max(win, default=None),
               "answer_p50": pct(ans, 50), "answer_p99": pct(ans, 99)}
        for t in trials:
            key = f"{t.get('new_status')} {t.get('new_x_cache')}"
            out["new_x_cache"][key] = out["new_x_cache"].get(key, 0) + 1
        (self.run_dir / "stale.jsonl").write_text("".join(json.dumps(t) + "\n" for t in trials))
        self.results["sections"]["stale"] = out
        log(f"staleness: {out['trials']} trials ({out['from_tier']} primed from B's tier), "
            f"{out['with_stale']} saw a stale answer after the PUT returned; window p50 "
            f"{f_ms(out['window_p50'])} ms p99 {f_ms(out['window_p99'])} ms; new answer arrived p50 "
            f"{f_ms(out['answer_p50'])} ms p99 {f_ms(out['answer_p99'])} ms")

    # ------------------------------------------------------------ 5. purge over a million entries
    def purge(self) -> None:
        k = self.k
        name = "cg-purge"
        self.start_redis("redis-purge", ["--slowlog-log-slower-than", "1000", "--slowlog-max-len", "4096"])
        port = self.P["redis-purge"]
        t = time.monotonic()
        gen = subprocess.Popen([sys.executable, str(HERE / "fillresp.py"), str(k.purge_entries), "1000", "cg:"],
                               stdout=subprocess.PIPE)
        pipe = subprocess.run(["redis-cli", "-p", str(port), "--pipe"], stdin=gen.stdout,
                              capture_output=True, text=True)
        gen.stdout.close()
        gen.wait()
        if pipe.returncode or gen.returncode:
            raise RuntimeError(f"filling Redis failed: {pipe.stdout[-300:]} {pipe.stderr[-300:]}")
        r = Resp(port, timeout=120)
        keys0 = r.cmd("DBSIZE")
        out: dict = {"entries": k.purge_entries, "keys_after_fill": keys0,
                     "fill_s": round(time.monotonic() - t, 1)}
        log(f"filled {keys0:,} keys in {out['fill_s']} s")
        self.start_cachegate(name, self.write_conf(name, "hit.toml", "cg:"), self.url("direct"), port, 0)
        base = "cg-purge-base" if self.baseline_bin else None
        if base:   # the same instance from the baseline binary, on the same keyspace
            self.start_cachegate(base, self.write_conf(base, "hit.toml", "cg:"), self.url("direct"), port, 0,
                                 binary=self.baseline_bin)
            self.wait_cachegate(base)
        self.wait_cachegate(name)
        time.sleep(0.3)

        cg, direct = Raw(self.P[name]), Raw(self.P["direct"])
        cgb = Raw(self.P[base]) if base else None

        def metrics():
            m = Raw(self.P[name])
            try:
                _, _, body = m.request("GET", "/metrics")
            finally:
                m.close()
            return parse_metrics(body.decode())

        ids = self.extra_ids[:k.puts]
        # warm every path (connections, code) before timing
        for tid in ids[:5]:
            for c in (cg, cgb):
                if c:
                    c.request("GET", f"/api/v1/tasks/{tid}")
            direct.request("PUT", f"/api/v1/tasks/{tid}", b'{"status":"todo"}')
            for c in (cg, cgb):
                if c:
                    c.request("PUT", f"/api/v1/tasks/{tid}", b'{"status":"todo"}')
        m0 = metrics()
        r.cmd("SLOWLOG", "RESET")
        via, dir_, viab, bad, primed = [], [], [], 0, {}
        ways = [(dir_, direct, False), (via, cg, True)] + ([(viab, cgb, True)] if cgb else [])
        import itertools
        orders = list(itertools.permutations(ways))   # every order in turn: no path always first
        for i, tid in enumerate(ids):
            path = f"/api/v1/tasks/{tid}"
            body = json.dumps({"name": f"purge trial {i}"}).encode()
            for lst, c, prime in orders[i % len(orders)]:
                if prime:   # an entry for the key purge and a tagged list page, through this instance
                    st1, h1, _ = c.request("GET", path)
                    st2, h2, _ = c.request("GET", f"/api/v1/tasks?offset={i}&limit=5")
                    if c is cg:
                        for h in (h1, h2):
                            primed[h.get("x-cache")] = primed.get(h.get("x-cache"), 0) + 1
                t0 = time.perf_counter_ns()
                st, _, _ = c.request("PUT", path, body)
                lst.append((time.perf_counter_ns() - t0) / 1e6)
                if st != 200:
                    bad += 1
        cg.close()
        direct.close()
        if cgb:
            cgb.close()
        m1 = metrics()
        slow_put = r.cmd("SLOWLOG", "GET", "4096") or []
        hists = {}
        for op in ("purge_keys", "purge_tags", "purge_pattern"):
            h = hist_diff(histogram(m0, "cachegate_store_duration_seconds", op=op),
                          histogram(m1, "cachegate_store_duration_seconds", op=op))
            if h and h["count"]:
                hists[op] = {"count": int(h["count"]), "mean_ms": 1000 * h["sum"] / h["count"],
                             "p50_le_ms": 1000 * hist_quantile_bound(h, 0.5),
                             "p99_le_ms": 1000 * hist_quantile_bound(h, 0.99)}
        out["put"] = {
            "n": len(via), "bad": bad, "primed_x_cache": primed,
            "direct_p50": pct(dir_, 50), "direct_p99": pct(dir_, 99), "direct_mean": statistics.fmean(dir_),
            "via_p50": pct(via, 50), "via_p99": pct(via, 99), "via_mean": statistics.fmean(via),
            "diff_p50": pct(via, 50) - pct(dir_, 50), "diff_p99": pct(via, 99) - pct(dir_, 99),
            "diff_mean": statistics.fmean(via) - statistics.fmean(dir_),
            "store_histograms": hists,
            "slowlog_max_us": max((e[2] for e in slow_put), default=0), "slowlog_n": len(slow_put),
        }
        if viab:
            out["put"].update({
                "base_p50": pct(viab, 50), "base_p99": pct(viab, 99), "base_mean": statistics.fmean(viab),
                "base_diff_p50": pct(viab, 50) - pct(dir_, 50), "base_diff_p99": pct(viab, 99) - pct(dir_, 99),
                "base_diff_mean": statistics.fmean(viab) - statistics.fmean(dir_)})
        p = out["put"]
        log(f"PUT x{p['n']}: direct p50 {f_ms(p['direct_p50'])} p99 {f_ms(p['direct_p99'])} ms; via cachegate "
            f"p50 {f_ms(p['via_p50'])} p99 {f_ms(p['via_p99'])} ms; added p50 {f_ms(p['diff_p50'])} "
            f"p99 {f_ms(p['diff_p99'])} ms; store calls {json.dumps(hists)}"
            + (f"; baseline binary p50 {f_ms(p['base_p50'])} p99 {f_ms(p['base_p99'])} ms, added p99 "
               f"{f_ms(p['base_diff_p99'])} ms" if viab else ""))
        if base:
            self.d.stop(base)

        # the admin clear over the million
        r.cmd("SLOWLOG", "RESET")
        c = Raw(self.P[name], timeout=600)
        t0 = time.monotonic()
        st, _, body = c.request("DELETE", "/api/v1/cache/clear?pattern=task:*",
                                headers={"Authorization": f"Bearer {self.token}"})
        took = time.monotonic() - t0
        c.close()
        slow = r.cmd("SLOWLOG", "GET", "4096") or []
        entries = sorted(([int(e[2]), " ".join(x.decode(errors="replace") for x in e[3][:4])] for e in slow),
                         key=lambda e: -e[0])
        try:
            answer = json.loads(body)
        except ValueError:
            answer = body.decode(errors="replace")[:300]
        foreign_left = 0
        cursor = "0"
        while True:
            cur, keys = r.cmd("SCAN", cursor, "MATCH", "cg:task:foreign:*", "COUNT", "10000")
            foreign_left += len(keys)
            cursor = cur.decode()
            if cursor == "0":
                break
        out["clear"] = {"status": st, "answer": answer, "seconds": round(took, 2),
                        "keys_left": r.cmd("DBSIZE"), "foreign_left": foreign_left,
                        "slowlog_n": len(entries), "slowest": entries[:5],
                        "over_10ms": sum(e[0] > 10_000 for e in entries),
                        "max_us": entries[0][0] if entries else 0}
        r.close()
        cl = out["clear"]
        log(f"clear: HTTP {st} {answer} in {took:.1f} s; slowest Redis command "
            f"{cl['max_us'] / 1000:.2f} ms ({cl['over_10ms']} over 10 ms); keys left {cl['keys_left']}")
        self.d.stop(name)
        self.d.stop("redis-purge")
        self.results["sections"]["purge"] = out

    # ------------------------------------------------------------ 6. scaling (reported, not a target)
    def timed_wrk(self, row: dict, args: argparse.Namespace, script_args: list[str] | None = None,
                  script: str | None = None) -> dict:
        """One wrk run with the CPU accounting of the matrix rows (every running
        server process; per-process split)."""
        names = [n for n in self.d.order if self.d.alive(n)]
        win = bc.Window([self.d.pid(n) for n in names], [])
        ticks0 = {n: bc.tree_ticks([self.d.pid(n)]) for n in names}
        win.start()
        if script:
            cmd = ["taskset", "-c", self.k.loadgen_cpu, "wrk", f"-t{args.threads}", f"-c{args.connections}",
                   f"-d{args.duration}s", "--latency", "-s", script, row["url"], "--", *(script_args or [])]
            p = subprocess.run(cmd, capture_output=True, text=True, timeout=args.duration + 120)
            m = re.search(r"^WRKJSON (\{.*\})$", p.stdout, re.M)
            if p.returncode != 0 or not m:
                raise RuntimeError(f"wrk failed rc={p.returncode}: {p.stdout[-500:]} {p.stderr[-500:]}")
            res = json.loads(m.group(1))
        else:
            cmd, res, _ = bc.run_wrk(args, row)
        rec = dict(res)
        rec.update(win.stop())
        rec["cpu_by"] = {n: round((bc.tree_ticks([self.d.pid(n)]) - t0) / bc.HZ, 3)
                         for n, t0 in ticks0.items() if self.d.alive(n)}
        rec["errors"] = sum(res[x] for x in ("err_connect", "err_read", "err_write", "err_status", "err_timeout"))
        rec["per_cpu"] = res["rps"] / rec["server_cpu_frac"] if rec.get("server_cpu_frac") else None
        rec["us_per_req"] = 1e6 / rec["per_cpu"] if rec["per_cpu"] else None
        rec["cmd"] = " ".join(cmd)
        return rec

    def scaling(self) -> None:
        k = self.k
        out: dict = {"conns": [], "bodies": [], "zipf": None}
        self.results["sections"]["scaling"] = out
        try:
            self._scaling(out)
        finally:
            bad = [f"{r['row']} {r.get('conns') or r.get('size')}: {r['errors']}" for r in out["conns"] + out["bodies"]
                   if r["errors"]]
            bad += [f"cg-zipf run {i}: {r['errors']}" for i, r in enumerate((out["zipf"] or {}).get("runs", []))
                    if r["errors"]]
            fill = (out["zipf"] or {}).get("fill") or {}
            if fill.get("errors"):
                # not a measurement: a request wrk gave up on (timeout) is only a
                # note, unless ids were left unfilled (they would show as misses)
                msg = (f"scaling: the Zipf fill counted {fill['errors']} wrk errors {fill.get('errors_by')}; "
                       f"Redis held {fill.get('redis_keys', 0):,} keys for {out['zipf']['ids']:,} ids")
                if set(fill.get("errors_by") or {}) - {"err_timeout"} or fill.get("redis_keys", 0) < out["zipf"]["ids"]:
                    bad.append(msg)
                else:
                    self.results["warnings"].append(msg)
            bad += [f"{r['row']} {r['size']}: sampled {r['sampled']}" for r in out["bodies"]
                    if any(not key.startswith("200 ") or not key.endswith(" True") for key in r["sampled"])]
            if bad:
                self.results["failures"].append("scaling: wrk errors or bad samples: " + "; ".join(bad)[:1000])

    def _scaling(self, out: dict) -> None:
        k = self.k
        # (a) connections: cg-tier and nginx-hit at 1, 64, 512 connections
        for rnd in range(1, k.scale_rounds + 1):
            for c in k.scale_conns:
                for name, hh, warm in (("cg-tier", "x-cache", 2), ("nginx-hit", "x-cache-status", 1)):
                    row = dict(name=name, url=self.url(name))
                    for _ in range(warm):
                        bc.warm(row["url"], "/api/v1/tasks/", self.ids)
                    rec = self.timed_wrk(row, self.wrk_args(connections=c))
                    rec.update({"round": rnd, "row": name, "conns": c})
                    out["conns"].append(rec)
                    log(f"scaling c={c:<4} {name:<10} {rec['rps']:>9.0f} req/s {rec['per_cpu'] or 0:>9.0f} req/CPU-s "
                        f"p99 {rec['p99_us'] / 1000:7.2f} ms  srv {rec['server_cpu_frac']:.2f} "
                        f"lg {rec['loadgen_cpu_frac']:.2f} err {rec['errors']}")
        # (b) body sizes: hits of 1 KiB .. 256 KiB bodies, cachegate (tier) and nginx
        self.need_ports("sized")
        self.d.start("sized", [sys.executable, str(HERE / "sizedbackend.py"), "--port", str(self.P["sized"]),
                               "--tasks", str(max(k.zipf_ids, 1)), "--task-bytes", str(k.zipf_task_bytes)])
        wait_until("/healthz", lambda: http_ok(self.P["sized"], "/healthz"), self.d, "sized")
        if k.body_sizes:
            self.start_cachegate("cg-body", self.write_conf("cg-body", "scale.toml", "cgbody:"), self.url("sized"),
                                 self.P["redis"], 15)
            self.wait_cachegate("cg-body")
            ids_file = self.run_dir / "body-ids.txt"
            ids = [str(i) for i in range(k.body_ids)]
            ids_file.write_text("\n".join(ids) + "\n")
            for rnd in range(1, k.scale_rounds + 1):
                for size in k.body_sizes:
                    prefix = f"/blob/{size}/"
                    for name, hh, warm in (("cg-body", "x-cache", 2), ("nginx-body", "x-cache-status", 1)):
                        row = dict(name=name, url=self.url(name))
                        bad = 0
                        for _ in range(warm):
                            bad += bc.warm(row["url"], prefix, ids)[1]
                        cl = bc.Client(row["url"])
                        tally: dict[str, int] = {}
                        for tid in ids[:20]:
                            st, h, b = cl.get(prefix + tid)
                            key = f"{st} {h.get(hh, '-')} {len(b) == size}"
                            tally[key] = tally.get(key, 0) + 1
                        cl.close()
                        rec = self.timed_wrk(row, self.wrk_args(ids=str(ids_file), prefix=prefix))
                        rec.update({"round": rnd, "row": name, "size": size, "warm_bad": bad, "sampled": tally,
                                    "mb_s": rec["bytes"] / rec["duration_s"] / 1048576})
                        out["bodies"].append(rec)
                        log(f"scaling body {size:>7} {name:<10} {rec['rps']:>9.0f} req/s {rec['per_cpu'] or 0:>9.0f} "
                            f"req/CPU-s ({rec['us_per_req'] or 0:.1f} µs/req) {rec['mb_s']:.0f} MB/s  "
                            f"p99 {rec['p99_us'] / 1000:7.2f} ms  lg {rec['loadgen_cpu_frac']:.2f}  "
                            f"err {rec['errors']}  sampled {tally}")
            self.d.stop("cg-body")
        # (c) Zipf over ZIPF_IDS ids, tier max_bytes = working set bytes / ZIPF_TIER_DIV
        if "zipf" not in k.skip and k.zipf_ids > 0:
            out["zipf"] = self.zipf()
        self.d.stop("sized")

    def zipf(self) -> dict:
        k = self.k
        n = k.zipf_ids
        ws_bytes = n * k.zipf_task_bytes
        tier_bytes = ws_bytes // max(k.zipf_tier_div, 1)
        z: dict = {"ids": n, "s": k.zipf_s, "body_bytes": k.zipf_task_bytes, "ws_bytes": ws_bytes,
                   "tier_max_bytes": tier_bytes}
        self.start_redis("redis-zipf")
        self.start_cachegate("cg-zipf", self.write_conf("cg-zipf", "scale.toml", "cgz:", tier_max_bytes=tier_bytes),
                             self.url("sized"), self.P["redis-zipf"], 0)
        self.wait_cachegate("cg-zipf")
        row = dict(name="cg-zipf", url=self.url("cg-zipf"))
        procs = ("cg-zipf", "redis-zipf", "sized")
        # fill: every id once, in order (each a MISS: forward + store), in wrk runs
        # of a few seconds, each starting where the last one's answered requests end
        t0 = time.monotonic()
        ticks0 = {p: bc.tree_ticks([self.d.pid(p)]) for p in procs}
        m0 = self.metrics_of("cg-zipf")
        start, runs, errors, rate, errors_by = 0, 0, 0, None, {}
        pure = {p: 0.0 for p in procs}   # CPU of the runs that were all misses (no id 0 past the end)
        pure_n = 0
        while start < n:
            runs += 1
            left = n - start
            d = 10 if rate is None else max(1, min(10, int(left / rate)))
            t_run = {p: bc.tree_ticks([self.d.pid(p)]) for p in procs}
            cmd = ["taskset", "-c", k.loadgen_cpu, "wrk", "-t1", f"-c{k.conns}", f"-d{d}s", "-s",
                   str(HERE / "seqfill.lua"), row["url"], "--", str(start), str(n), "/api/v1/tasks/"]
            p = subprocess.run(cmd, capture_output=True, text=True, timeout=d + 60)
            m = re.search(r"^WRKJSON (\{.*\})$", p.stdout, re.M)
            if p.returncode != 0 or not m:
                raise RuntimeError(f"fill: wrk failed rc={p.returncode}: {p.stdout[-500:]} {p.stderr[-500:]}")
            res = json.loads(m.group(1))
            for x in ("err_connect", "err_read", "err_write", "err_status", "err_timeout"):
                errors += res[x]
                if res[x]:
                    errors_by[x] = errors_by.get(x, 0) + res[x]
            if res["requests"] == 0:
                raise RuntimeError("fill: no request answered")
            rate = res["rps"]
            if start + res["requests"] + k.conns <= n:
                for p in procs:
                    pure[p] += (bc.tree_ticks([self.d.pid(p)]) - t_run[p]) / bc.HZ
                pure_n += res["requests"]
            start += res["requests"]
        fill_s = time.monotonic() - t0
        cpu = {p: (bc.tree_ticks([self.d.pid(p)]) - ticks0[p]) / bc.HZ for p in procs}
        m1 = self.metrics_of("cg-zipf")
        misses = self.metric_sum(m1, "cachegate_requests", cache_status="miss") - \
            self.metric_sum(m0, "cachegate_requests", cache_status="miss")
        r = Resp(self.P["redis-zipf"])
        z["fill"] = {"seconds": round(fill_s, 1), "wrk_runs": runs, "requests": start, "errors": errors,
                     "errors_by": errors_by,
                     "misses": misses, "rps": start / fill_s, "cpu_s": cpu,
                     "us_per_miss": ({p: 1e6 * v / pure_n for p, v in pure.items()} if pure_n else
                                     {p: 1e6 * v / max(misses, 1) for p, v in cpu.items()}),
                     "us_per_miss_from": pure_n or misses,
                     "redis_keys": r.cmd("DBSIZE"),
                     "redis_used_mb": int(r.info("memory").get("used_memory", 0)) / 1048576}
        log(f"zipf fill: {start:,} requests ({misses:,.0f} misses) in {fill_s:.0f} s ({start / fill_s:,.0f} req/s), "
            f"{errors} errors; per miss µs: " + ", ".join(f"{p} {v:.1f}" for p, v in z["fill"]["us_per_miss"].items())
            + f"; Redis {z['fill']['redis_keys']:,} keys, {z['fill']['redis_used_mb']:.0f} MB")
        # Zipf load: one warm-up run (the tier fills), then the measured runs
        runs_out = []
        for i in range(k.scale_rounds + 1):
            ma = self.metrics_of("cg-zipf")
            rec = self.timed_wrk(row, self.wrk_args(), script=str(HERE / "zipf.lua"),
                                 script_args=[str(n), str(k.zipf_s), "262144", "/api/v1/tasks/", str(i + 1)])
            mb_ = self.metrics_of("cg-zipf")
            d = lambda part, **w: self.metric_sum(mb_, part, **w) - self.metric_sum(ma, part, **w)
            hits, miss = d("cachegate_requests", cache_status="hit"), d("cachegate_requests", cache_status="miss")
            tier = d("tier_hits")
            total = hits + miss + d("cachegate_requests", cache_status="stale") + \
                d("cachegate_requests", cache_status="bypass")
            rec.update({"warmup": i == 0, "hits": hits, "misses": miss, "tier_hits": tier, "counted": total,
                        "tier_hit_rate": tier / total if total else None,
                        "hit_rate": hits / total if total else None,
                        "tier_share_of_hits": tier / hits if hits else None})
            runs_out.append(rec)
            log(f"zipf {'warm-up' if i == 0 else 'run'}: {rec['rps']:,.0f} req/s, {rec['per_cpu'] or 0:,.0f} req/CPU-s, "
                f"tier hit rate {f_pct(rec['tier_hit_rate'])}, hit rate {f_pct(rec['hit_rate'])} "
                f"({tier:,.0f} tier hits, {hits:,.0f} hits, {miss:,.0f} misses of {total:,.0f}), "
                f"p99 {rec['p99_us'] / 1000:.2f} ms, err {rec['errors']}")
        z["runs"] = runs_out
        z["redis_used_mb_end"] = int(r.info("memory").get("used_memory", 0)) / 1048576
        r.close()
        z["cg_rss_kb"] = proc_status(self.d.pid("cg-zipf")).get("VmRSS")
        # the ideal: a tier holding the hottest ids that fit (perfect LFU)
        fit = max(1, tier_bytes // max(k.zipf_task_bytes, 1))
        w = [1.0 / (i ** k.zipf_s) for i in range(1, n + 1)]
        z["ideal_hit_rate"] = sum(w[:fit]) / sum(w)
        z["hottest_share"] = w[0] / sum(w)
        self.d.stop("cg-zipf")
        self.d.stop("redis-zipf")
        return z

    # ------------------------------------------------------------ report
    def summarize(self) -> None:
        m = self.results["sections"].get("matrix")
        if not m:
            return
        ok = [r for r in m["records"] if "failed" not in r]
        by_row: dict[str, list[dict]] = {}
        for r in ok:
            by_row.setdefault(r["row"], []).append(r)
        by_round: dict[int, dict[str, dict]] = {}
        for r in ok:
            by_round.setdefault(r["round"], {})[r["row"]] = r
        S = {}
        for name, rs in by_row.items():
            rps = [r["rps"] for r in rs]
            hv: dict[str, int] = {}
            for r in rs:
                for a, b in (r.get("verify", {}).get("hit_header_values") or {}).items():
                    hv[a] = hv.get(a, 0) + b
            S[name] = {
                "label": rs[0]["label"], "group": rs[0]["group"], "index": rs[0]["row_index"], "n": len(rs),
                "rps": med(rps), "rps_min": min(rps), "rps_max": max(rps),
                "per_cpu": med([r.get("per_cpu") for r in rs]),
                "p50": med([r["p50_us"] / 1000 for r in rs]), "p99": med([r["p99_us"] / 1000 for r in rs]),
                "srv": med([r.get("server_cpu_frac") for r in rs]), "lg": med([r.get("loadgen_cpu_frac") for r in rs]),
                "foreign0": med([r.get("cpu0_foreign_frac") for r in rs]),
                "foreign1": med([r.get("cpu1_foreign_frac") for r in rs]),
                "errors": sum(r["errors"] for r in rs), "requests": sum(r["requests"] for r in rs),
                "db_reads": sum(r.get("upstream_db_reads", 0) for r in rs),
                "verify_checked": sum(r["verify"]["checked"] for r in rs),
                "verify_bad": sum(r["verify"]["n_problems"] for r in rs),
                "verify_problems": [p for r in rs for p in r["verify"]["problems"]][:3],
                "warm_bad": sum(r.get("warm_bad", 0) for r in rs),
                "hit_values": hv,
                "rss_max_kb": max([r["rss_max_kb"] for r in rs if r.get("rss_max_kb")], default=None),
                "hwm_kb": max([r["hwm_kb"] for r in rs if r.get("hwm_kb")], default=None),
                "cpu_split": self._cpu_split(rs),
                # per-request CPU (µs): the row's own process, Redis, every server process
                "us_own": med([self._us(r, self._proc(name)) for r in rs]),
                "us_redis": med([self._us(r, "redis") for r in rs]),
                "us_server": med([1e6 / r["per_cpu"] if r.get("per_cpu") else None for r in rs]),
                "own_share": med([self._share(r, self._proc(name)) for r in rs]),
            }

        def per_round(a: str, b: str, f) -> list[float]:
            out = []
            for rnd in sorted(by_round):
                d = by_round[rnd]
                if a in d and b in d:
                    try:
                        out.append(f(d[a], d[b]))
                    except (TypeError, ZeroDivisionError):
                        pass
            return out

        cpu = lambda x, y: x["per_cpu"] / y["per_cpu"]
        rps = lambda x, y: x["rps"] / y["rps"]
        p99 = lambda x, y: x["p99_us"] / y["p99_us"]
        self.results["rows"] = S
        self.results["ratios"] = {
            "tier_seed": per_round("cg-tier", "seed", rps),
            "nginx_pass_direct": per_round("nginx-pass", "direct", rps),
        }
        # cachegate's own share of the server core in its pass-through row ÷
        # nginx's share in nginx-pass (same round)
        share = lambda x, y: self._share(x, x["row"]) / self._share(y, "nginx")
        for v in VARIANTS:   # "", "-base", "-log", "-log-base"
            t, rd, ps = "cg-tier" + v, "cg-redis" + v, "cg-pass" + v
            self.results["ratios"].update({
                f"tier_cpu{v}": per_round(t, "nginx-hit", cpu),
                f"tier_rps{v}": per_round(t, "nginx-hit", rps),
                f"tier_p99{v}": per_round(t, "nginx-hit", p99),
                f"redis_cpu{v}": per_round(rd, "nginx-hit", cpu),
                f"redis_rps{v}": per_round(rd, "nginx-hit", rps),
                f"pass_direct{v}": per_round(ps, "direct", rps),
                f"pass_share{v}": per_round(ps, "nginx-pass", share),
            })
        for b in ("", "-base"):   # target 6: access log on ÷ off, req/CPU-s
            for n in CG_ROWS:
                self.results["ratios"][f"log_{n[3:]}{b}"] = per_round(n + "-log" + b, n + b, cpu)
        # new binary vs baseline binary (--baseline-bin): ratio of the median req/s
        self.results["baseline"] = [
            {"new": n, "base": b, "rps_new": S[n]["rps"], "rps_base": S[b]["rps"],
             "ratio": S[n]["rps"] / S[b]["rps"] if S[n]["rps"] and S[b]["rps"] else None,
             "p99_new": S[n]["p99"], "p99_base": S[b]["p99"],
             "p99_ratio": S[n]["p99"] / S[b]["p99"] if S[n]["p99"] and S[b]["p99"] else None,
             "per_round": per_round(n, b, rps)}
            for n, b in BASELINE_PAIRS if n in S and b in S]
        # the protocol rows: cachegate ÷ nginx, same protocol, same round
        self.results["protocols"] = [
            {"cg": c, "nginx": n, "rps_cg": S[c]["rps"], "rps_nginx": S[n]["rps"],
             "rps_ratio": med(per_round(c, n, rps)), "cpu_ratio": med(per_round(c, n, cpu)),
             "p99_cg": S[c]["p99"], "p99_nginx": S[n]["p99"], "per_round": per_round(c, n, rps)}
            for c, n in PROTO_PAIRS if c in S and n in S]

    @staticmethod
    def _proc(row: str) -> str:
        """The server process a row measures (the others idle or serve it)."""
        return "nginx" if row.startswith("nginx") else INSTANCE_OF.get(row, row)

    @staticmethod
    def _us(rec: dict, proc: str) -> float | None:
        """µs of `proc`'s CPU per request in one run."""
        v = (rec.get("cpu_by") or {}).get(proc)
        return 1e6 * v / rec["requests"] if v is not None and rec.get("requests") else None

    @staticmethod
    def _share(rec: dict, proc: str) -> float | None:
        by = rec.get("cpu_by") or {}
        tot = sum(by.values())
        return by.get(proc, 0.0) / tot if tot and proc in by else None

    @staticmethod
    def _cpu_split(rs: list[dict]) -> dict[str, float]:
        """Each server process's share of the server CPU time, summed over rounds."""
        tot: dict[str, float] = {}
        for r in rs:
            for n, v in (r.get("cpu_by") or {}).items():
                tot[n] = tot.get(n, 0.0) + v
        s = sum(tot.values())
        return {n: v / s for n, v in sorted(tot.items(), key=lambda kv: -kv[1])} if s else {}

    def render(self) -> tuple[str, str]:
        """(terminal text, markdown)."""
        R = self.results
        S = R.get("rows", {})
        ratios = R.get("ratios", {})
        L: list[str] = []
        w = L.append
        k = self.k

        def rr(key):
            vals = ratios.get(key) or []
            return med(vals), vals

        w("## Throughput and latency")
        w("")
        w(f"One server core (every server process on CPU {k.server_cpu}), wrk -t{k.threads} -c{k.conns} "
          f"-d{k.duration}s on CPU {k.loadgen_cpu}, `GET /api/v1/tasks/{{id}}` over {k.working_set:,} hot ids; "
          f"medians over {k.rounds} round(s), rows measured in turn within each round.")
        w("")
        head = ["row", "what", "req/s", "min–max", "req/CPU-s", "p50 ms", "p99 ms", "srv CPU", "lg CPU",
                "errors", "upstream reads", "verified (hit header)", "server CPU split", "cachegate RSS max"]
        w("| " + " | ".join(head) + " |")
        w("|" + "|".join(["---", "---"] + ["---:"] * (len(head) - 2)) + "|")
        for name in sorted(S, key=lambda n: S[n]["index"]):
            s = S[name]
            ver = f"{s['verify_checked'] - s['verify_bad']}/{s['verify_checked']}"
            if s["hit_values"]:
                ver += " (" + ", ".join(f"{a}:{b}" for a, b in sorted(s["hit_values"].items())) + ")"
            w("| " + " | ".join([
                f"`{name}`", s["label"], f_rps(s["rps"]), f"{f_rps(s['rps_min'])}–{f_rps(s['rps_max'])}",
                f_rps(s["per_cpu"]), f_ms(s["p50"]), f_ms(s["p99"]), f_pct(s["srv"]), f_pct(s["lg"]),
                str(s["errors"]), str(s["db_reads"]), ver,
                ", ".join(f"{n} {100 * v:.0f}%" for n, v in s["cpu_split"].items() if v >= 0.02) or "—",
                mb(s["rss_max_kb"]) if s["rss_max_kb"] else "—"]) + " |")
        w("")

        protos = R.get("protocols") or []
        if protos:
            w("## Over TLS and HTTP/2: cachegate ÷ nginx")
            w("")
            w("Hits of the same working set, each pair measured in the same rounds: HTTP/1.1 over TLS (wrk, "
              f"{k.conns} connections), HTTP/2 over TLS by ALPN and cleartext HTTP/2 with prior knowledge "
              f"(h2load, {k.h2_conns} connections × {k.h2_streams} streams). One ECDSA P-256 certificate, "
              "TLS 1.2 and 1.3 on both, keep-alive; negotiated: "
              + ", ".join(f"{n} {v}" for n, v in (R.get("tls") or {}).items()) + ". "
              "Ratios are medians of the per-round ratios (above 1 = cachegate ahead).")
            w("")
            w("| rows | cachegate req/s | nginx req/s | req/s cachegate ÷ nginx | req/CPU-s cachegate ÷ nginx "
              "| p99 ms cachegate | p99 ms nginx | req/s ratio per round |")
            w("|---|---:|---:|---:|---:|---:|---:|---|")
            for p in protos:
                w(f"| `{p['cg']}` ÷ `{p['nginx']}` | {f_rps(p['rps_cg'])} | {f_rps(p['rps_nginx'])} | "
                  f"{f_ratio(p['rps_ratio'])} | {f_ratio(p['cpu_ratio'])} | {f_ms(p['p99_cg'])} | "
                  f"{f_ms(p['p99_nginx'])} | " + ", ".join(f"{x:.2f}" for x in p["per_round"]) + " |")
            w("")

        pairs = R.get("baseline") or []
        if pairs:
            w("## New binary vs baseline")
            w("")
            w("The same cachegate instances run from the baseline binary (`-base` rows), measured in the same "
              "rounds right after their current-binary rows. Ratio = new ÷ baseline of the median req/s; "
              f"within 3 % means ≥ {BASELINE_MIN_RATIO:.2f} (above 1 = the new binary is faster).")
            w("")
            w("| rows | new req/s | baseline req/s | new ÷ baseline | | new p99 ms | baseline p99 ms | "
              "p99 new ÷ baseline | req/s ratio per round |")
            w("|---|---:|---:|---:|---|---:|---:|---:|---|")
            for p in pairs:
                ok = p["ratio"] is not None and p["ratio"] >= BASELINE_MIN_RATIO
                verdict = ("—" if p["ratio"] is None else "within 3 %" if ok
                           else f"**not within 3 %** (below {BASELINE_MIN_RATIO:.2f})")
                ratio = "—" if p["ratio"] is None else f"{p['ratio']:.3f}"
                p99_ratio = "—" if p["p99_ratio"] is None else f"{p['p99_ratio']:.3f}"
                w(f"| `{p['new']}` ÷ `{p['base']}` | {f_rps(p['rps_new'])} | {f_rps(p['rps_base'])} | {ratio} | "
                  f"{verdict} | {f_ms(p['p99_new'])} | {f_ms(p['p99_base'])} | {p99_ratio} | "
                  + ", ".join(f"{x:.3f}" for x in p["per_round"]) + " |")
            w("")

        # targets
        targets = []
        has_base = bool(R.get("baseline_bin") or any(n.endswith("-base") for n in S))

        def verdict(ok):
            return "met" if ok else ("—" if ok is None else "**missed**")

        def target(num, what, shown, goal, ok, rounds=None, base=None):
            """base: (shown, ok) of the baseline binary's figure, or None."""
            targets.append((num, what, shown, (base[0] if base else "—") if has_base else None, goal,
                            verdict(ok), (verdict(base[1]) if base else "—") if has_base else None,
                            ", ".join(f"{x:.2f}" for x in rounds) if rounds else ""))

        def ratio_target(num, what, key, goal, test, rounds_too=True):
            """A ratio target for the plain row's figure and its baseline twin's."""
            v, vals = rr(key)
            b = None
            if has_base and key.endswith(("-log", "")) and not key.endswith("-base"):
                bv, _ = rr(key + "-base")
                b = (f_ratio(bv), None if bv is None or test is None else test(bv))
            target(num, what, f_ratio(v), goal, None if v is None or test is None else test(v),
                   vals if rounds_too else None, b)

        def p99_shown(row):
            if row in S and "nginx-hit" in S:
                return f" ({f_ms(S[row]['p99'])} vs {f_ms(S['nginx-hit']['p99'])} ms)"
            return ""

        def p99_target(num, what, v_key, row):
            v, vals = rr(v_key)
            b = None
            if has_base:
                bv, _ = rr(v_key + "-base")
                b = (f_ratio(bv) + p99_shown(row + "-base"), None if bv is None else bv <= 1.0)
            target(num, what, f_ratio(v) + p99_shown(row), "≤ 1.00", None if v is None else v <= 1.0, vals, b)

        def share_shown(v_key, row):
            if row in S and "nginx-pass" in S and S[row]["own_share"] is not None \
                    and S["nginx-pass"]["own_share"] is not None:
                return f" ({f_pct(S[row]['own_share'])} vs {f_pct(S['nginx-pass']['own_share'])})"
            return ""

        def share_target(num, what, v_key, row):
            v, vals = rr(v_key)
            b = None
            if has_base:
                bv, _ = rr(v_key + "-base")
                b = (f_ratio(bv) + share_shown(v_key + "-base", row + "-base"), None if bv is None else bv < 1.0)
            target(num, what, f_ratio(v) + share_shown(v_key, row), "< 1.00", None if v is None else v < 1.0,
                   vals, b)

        for v, state in (("", "access log off"), ("-log", "access log on")):
            ratio_target("1", f"`cg-tier{v}` req/CPU-s ÷ `nginx-hit` req/CPU-s ({state})", f"tier_cpu{v}",
                         "≥ 1.25", lambda x: x >= 1.25)
            p99_target("1", f"`cg-tier{v}` p99 ÷ `nginx-hit` p99 ({state})", f"tier_p99{v}", f"cg-tier{v}")
        ratio_target("1", "… `cg-tier` ÷ `nginx-hit` in req/s (reference)", "tier_rps", "—", None)
        for v, state in (("", "access log off"), ("-log", "access log on")):
            ratio_target("2", f"`cg-redis{v}` (tier off) req/CPU-s ÷ `nginx-hit` req/CPU-s ({state})",
                         f"redis_cpu{v}", "≥ 0.75", lambda x: x >= 0.75)
        for v, state in (("", "access log off"), ("-log", "access log on")):
            ratio_target("3", f"`cg-pass{v}` req/s ÷ `direct` req/s ({state})", f"pass_direct{v}", "≥ 0.90",
                         lambda x: x >= 0.9)
            share_target("3", f"cachegate's share of the server core in `cg-pass{v}` ÷ nginx's in `nginx-pass` "
                              f"({state})", f"pass_share{v}", f"cg-pass{v}")
        v, vals = rr("nginx_pass_direct")
        target("3", "… `nginx-pass` ÷ `direct` (reference; ~0.76 in the issue)", f_ratio(v), "—", None, vals)
        pu = R["sections"].get("purge")
        if pu and "put" in pu:
            p = pu["put"]
            b = ((f"{f_ms(p['base_diff_p99'])} ms", p["base_diff_p99"] <= 1) if "base_diff_p99" in p else None)
            target("4", f"PUT latency added by cachegate (forward + key & tag purge), p99 via − p99 direct, "
                        f"{p['n']} PUTs, {pu['keys_after_fill']:,} keys in Redis", f"{f_ms(p['diff_p99'])} ms",
                   "≤ 1 ms", p["diff_p99"] <= 1, None, b)
        sc = R["sections"].get("scaling")
        if sc:
            target("5", "scaling: connections, body sizes, Zipf working set 10× the tier, capacity projection "
                        "(sections below)", "reported", "—", None)
        for n in CG_ROWS:
            key = f"log_{n[3:]}"
            ratio_target("6", f"access log cost: `{n}-log` req/CPU-s ÷ `{n}` req/CPU-s"
                              + ("" if n == "cg-tier" else " (reference)"), key,
                         "≥ 0.90" if n == "cg-tier" else "(≥ 0.90)", lambda x: x >= 0.9)
        # the earlier issue's figures, kept
        v, vals = rr("tier_seed")
        target("–", "`cg-tier` req/s ÷ in-app decorator (`seed`) req/s", f_ratio(v), "≥ 15",
               None if v is None else v >= 15, vals)
        mem = R["sections"].get("memory")
        rss_load = max([S[n]["rss_max_kb"] for n in ("cg-tier", "cg-redis", "cg-pass")
                        if n in S and S[n]["rss_max_kb"]], default=None)
        if rss_load:
            target("–", f"cachegate RSS under wrk load, {k.working_set:,}-id working set (max VmRSS of "
                        "`cg-tier`, `cg-redis`, `cg-pass`)", mb(rss_load), "< 100 MB", rss_load < 100 * 1024)
        if mem:
            worst = max(mem["load_rss_max_kb"], mem["after_load"]["VmHWM"])
            filled = (f"its tier filled past the default 64 MiB bound ({mem['fill_bytes'] / 1048576:.0f} MB of "
                      "list pages)" if mem["fill_bytes"] >= 64 * 1048576 else
                      f"{mem['fill_bytes'] / 1048576:.0f} MB of list pages in its tier (less than its 64 MiB bound)")
            target("–", f"cachegate RSS at full load with {filled} (max VmRSS / VmHWM)",
                   f"{mb(mem['load_rss_max_kb'])} / {mb(mem['after_load']['VmHWM'])}", "< 100 MB",
                   worst < 100 * 1024)
        st = R["sections"].get("stream")
        if st:
            g = max(v["growth_kb"] for v in st["variants"])
            complete = all(v["complete"] for v in st["variants"])
            target("–", f"RSS growth while {st['size'] / 2**30:g} GiB streams through cachegate (worst of "
                        f"{len(st['variants'])} variants)",
                   mb(g) + ("" if complete else " (a transfer was incomplete!)"), "< 32 MB",
                   g < 32 * 1024 and complete)
        if pu and "clear" in pu:
            c = pu["clear"]
            done = (f"{c['seconds']:.1f} s in all" if c["status"] == 200 else
                    f"but the clear **failed**: HTTP {c['status']} after {c['seconds']:.1f} s, "
                    f"{c['keys_left']:,} keys left")
            target("–", f"clear `task:*` over {pu['entries']:,} entries: slowest Redis command (SLOWLOG)",
                   f"{c['max_us'] / 1000:.2f} ms ({done})", "< 10 ms",
                   c["max_us"] <= 10_000 and c["status"] == 200)
        sl = R["sections"].get("stale")
        if sl:
            target("–", f"cross-instance staleness window p99 ({sl['trials']} trials)",
                   f"{f_ms(sl['window_p99'])} ms", "< 5 ms",
                   sl["window_p99"] is not None and sl["window_p99"] < 5 and not sl["timed_out"])
        w("## Targets")
        w("")
        w("Issue 18's targets (1–6), then the earlier figures (–). Ratios are medians of per-round ratios "
          "(same round = measured back to back); *per round* = the new binary's."
          + (" *baseline* = the same figure for the baseline binary's rows (`-base`: `BASELINE_BIN`), "
             "against the same `nginx-hit` / `direct` / `nginx-pass` runs." if has_base else ""))
        w("")
        if has_base:
            w("| # | figure | new | baseline | target | new | baseline | per round |")
            w("|---|---|---:|---:|---:|---|---|---|")
        else:
            w("| # | figure | measured | target | | per round |")
            w("|---|---|---:|---:|---|---|")
        for t in targets:
            w("| " + " | ".join(x for x in t if x is not None) + " |")
        w("")
        logs = R["sections"].get("matrix", {}).get("access_log") or {}
        if logs:
            w("Access log rows (`-log`): `[access_log] enabled = true` as shipped (text, to stdout), stdout "
              "redirected to the daemon's log file in the run directory: "
              "lines written (warm-up and verification included) and lines dropped (`access_log_dropped`): "
              + "; ".join(f"`{n}` {x.get('lines', 0):,} lines, {x.get('bytes', 0) / 1048576:.0f} MB, "
                          + (f"{x['dropped']:,.0f} dropped" if isinstance(x.get("dropped"), float) else "dropped ?")
                          for n, x in logs.items()) + ".")
            w("")

        if mem or rss_load or st:
            w("## Memory")
            w("")
            for n in ("cg-tier", "cg-redis", "cg-pass"):
                if n in S and S[n]["rss_max_kb"]:
                    w(f"- `{n}` under wrk load ({k.conns} connections): max VmRSS {mb(S[n]['rss_max_kb'])}, "
                      f"VmHWM {mb(S[n]['hwm_kb'])}.")
            if mem:
                w(f"- `cg-tier` with its tier (default `max_bytes`, 64 MiB) filled: {mem['fill_pages']} list pages "
                  f"(`GET /api/v1/tasks?offset=…&limit=500`, {mem['fill_bytes'] / 1048576:.0f} MB of bodies, each "
                  f"read 3×, {mem['fill_s']} s): VmRSS {mb(mem['before']['VmRSS'])} before, "
                  f"{mb(mem['after_fill']['VmRSS'])} after; then hit load {f_rps(mem['load_rps'])} req/s: max VmRSS "
                  f"{mb(mem['load_rss_max_kb'])}, VmHWM {mb(mem['after_load']['VmHWM'])}"
                  + (f", {mem['load_errors']} errors" if mem["load_errors"] else "")
                  + (f"; {mem['fill_bad']} fill requests failed" if mem["fill_bad"] else "") + ".")
            if st:
                w("")
                w(f"{st['size'] / 2**30:g} GiB bodies from `bench/harness/bigserver.py` through a fresh cachegate "
                  "(`bench/conf/big.toml`), read by `curl -o /dev/null` on the load-generator core; RSS sampled "
                  "every 10 ms, VmHWM reset before each transfer:")
                w("")
                w("| path | what | status | received | s | MB/s | x-cache | RSS before | peak | growth |")
                w("|---|---|---:|---:|---:|---:|---|---:|---:|---:|")
                for v in st["variants"]:
                    w(f"| `{v['path']}` | {v['what']} | {v['status']} | {v['bytes']:,} | {v['seconds']} | "
                      f"{v['mb_s']:.0f} | {v['x_cache'] or '—'} | {mb(v['rss_before_kb'])} | {mb(v['rss_peak_kb'])} | "
                      f"{mb(v['growth_kb'])} |")
            w("")
        if pu:
            w("## Purge cost with a million entries")
            w("")
            w(f"Private redis-server filled with {pu['entries']:,} cachegate-shaped records + 1,000 foreign keys "
              f"({pu['fill_s']} s); cachegate (`bench/conf/hit.toml`, tier on) in front of the backend.")
            w("")
            if "put" in pu:
                p = pu["put"]
                w(f"- {p['n']} PUTs, each through cachegate after priming, through the same instance, an entry for "
                  "the task (GET) and a tagged list page; the same PUT straight to the backend"
                  + (" and through the baseline binary's instance" if "base_p99" in p else "")
                  + ", the order rotating over every permutation:")
                w("")
                w("  | | p50 ms | p99 ms | mean ms |")
                w("  |---|---:|---:|---:|")
                w(f"  | PUT straight to the backend | {f_ms(p['direct_p50'])} | {f_ms(p['direct_p99'])} | {f_ms(p['direct_mean'])} |")
                w(f"  | PUT through cachegate (forward + key + tag purge) | {f_ms(p['via_p50'])} | {f_ms(p['via_p99'])} | {f_ms(p['via_mean'])} |")
                w(f"  | added | {f_ms(p['diff_p50'])} | {f_ms(p['diff_p99'])} | {f_ms(p['diff_mean'])} |")
                if "base_p99" in p:
                    w(f"  | PUT through the baseline binary (`cg-purge-base`, same keyspace) | {f_ms(p['base_p50'])} | "
                      f"{f_ms(p['base_p99'])} | {f_ms(p['base_mean'])} |")
                    w(f"  | added (baseline binary) | {f_ms(p['base_diff_p50'])} | {f_ms(p['base_diff_p99'])} | "
                      f"{f_ms(p['base_diff_mean'])} |")
                w("")
                for op, h in p["store_histograms"].items():
                    w(f"- cachegate `store_duration_seconds{{op=\"{op}\"}}` over the PUTs: {h['count']} calls "
                      f"({h['count'] / max(p['n'], 1):.1f} per PUT), mean "
                      f"{h['mean_ms']:.3f} ms, p50 ≤ {h['p50_le_ms']:g} ms, p99 ≤ {h['p99_le_ms']:g} ms (bucket edges).")
                w(f"- Redis SLOWLOG during the PUTs (≥ 1 ms): {p['slowlog_n']} entries"
                  + (f", slowest {p['slowlog_max_us'] / 1000:.2f} ms" if p["slowlog_n"] else "") + ".")
                if p["bad"]:
                    w(f"- {p['bad']} PUTs did not answer 200.")
                w(f"- priming answers (x-cache): {', '.join(f'{a}:{b}' for a, b in sorted(p['primed_x_cache'].items(), key=str))}.")
            if "clear" in pu:
                c = pu["clear"]
                w(f"- `DELETE /api/v1/cache/clear?pattern=task:*`: HTTP {c['status']} `{json.dumps(c['answer'])}` in "
                  f"{c['seconds']} s; keys left {c['keys_left']:,} (foreign kept: {c['foreign_left']:,}/1,000); Redis SLOWLOG "
                  f"(≥ 1 ms): {c['slowlog_n']} entries, {c['over_10ms']} over 10 ms.")
                for us, cmd in c["slowest"]:
                    w(f"  - {us / 1000:.2f} ms `{cmd}`")
            w("")
        if sl:
            w("## Cross-instance staleness")
            w("")
            w(f"Two cachegate instances (tier on) sharing one Redis. {sl['trials']} trials: B serves the task from its "
              f"tier (checked: no Redis read, in {sl['from_tier']}/{sl['trials']} trials), a PUT through A purges "
              "it, then B is polled back to back until its answer changes.")
            w("")
            w(f"- window = first poll that got the new answer was *sent* − A's PUT answer arrived: p50 "
              f"{f_ms(sl['window_p50'])} ms, p99 {f_ms(sl['window_p99'])} ms, max {f_ms(sl['window_max'])} ms.")
            w(f"- until the new answer *arrived* (includes B's MISS to the 2 ms backend): p50 "
              f"{f_ms(sl['answer_p50'])} ms, p99 {f_ms(sl['answer_p99'])} ms.")
            w(f"- trials where B still served the old body after the PUT returned: {sl['with_stale']} "
              f"(at most {sl['stale_polls_max']} stale answers in one trial); no change within 2 s: {sl['timed_out']}; "
              f"PUTs answered 200: {sl['put_ok']}/{sl['trials']}; B's first new answers: "
              + ", ".join(f"{a}: {b}" for a, b in sorted(sl["new_x_cache"].items())) + ".")
            w("")
        sc = R["sections"].get("scaling")
        if sc:
            self.render_scaling(w, sc)
        proj = self.projection()
        if proj:
            self.render_projection(w, proj)
        notes = self.notes()
        if notes:
            w("## Notes")
            w("")
            for n in notes:
                w(f"- {n}")
            w("")
        text = "\n".join(L)
        return text, text

    # ------------------------------------------------------------ scaling report
    def render_scaling(self, w, sc: dict) -> None:
        k = self.k

        def agg(recs, key):
            groups: dict = {}
            for r in recs:
                groups.setdefault((r[key], r["row"]), []).append(r)
            return groups

        w("## Scaling (reported, not a target)")
        w("")
        if sc.get("conns"):
            w(f"`GET /api/v1/tasks/{{id}}` over the {k.working_set:,}-id working set (as the matrix), wrk -t{k.threads} "
              f"at each connection count; medians over {k.scale_rounds} round(s). µs/req = server CPU per request "
              "(1e6 ÷ req/CPU-s).")
            w("")
            w("| connections | row | req/s | req/CPU-s | µs/req (server) | p50 ms | p99 ms | srv CPU | lg CPU | errors |")
            w("|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|")
            for (c, row), rs in sorted(agg(sc["conns"], "conns").items()):
                w(f"| {c} | `{row}` | {f_rps(med([r['rps'] for r in rs]))} | {f_rps(med([r['per_cpu'] for r in rs]))} | "
                  f"{med([r['us_per_req'] for r in rs]) or 0:.1f} | {f_ms(med([r['p50_us'] / 1000 for r in rs]))} | "
                  f"{f_ms(med([r['p99_us'] / 1000 for r in rs]))} | {f_pct(med([r['server_cpu_frac'] for r in rs]))} | "
                  f"{f_pct(med([r['loadgen_cpu_frac'] for r in rs]))} | {sum(r['errors'] for r in rs)} |")
            w("")
        if sc.get("bodies"):
            w(f"Hits of bodies of each size: `GET /blob/<size>/<n>` over {k.body_ids} ids from "
              "`bench/harness/sizedbackend.py`, through cachegate (`cg-body`: `bench/conf/scale.toml`, tier on, "
              f"default 64 MiB) and nginx proxy_cache (`nginx-body`), wrk -t{k.threads} -c{k.conns}. CPU per hit = "
              "µs of server CPU per request.")
            w("")
            w("| body | row | req/s | req/CPU-s | CPU per hit µs | MB/s | p99 ms | lg CPU | errors | sampled (status hit-header size-ok) |")
            w("|---:|---|---:|---:|---:|---:|---:|---:|---:|---|")
            for (size, row), rs in sorted(agg(sc["bodies"], "size").items()):
                tally: dict = {}
                for r in rs:
                    for a, b in r["sampled"].items():
                        tally[a] = tally.get(a, 0) + b
                w(f"| {size / 1024:g} KiB | `{row}` | {f_rps(med([r['rps'] for r in rs]))} | "
                  f"{f_rps(med([r['per_cpu'] for r in rs]))} | {med([r['us_per_req'] for r in rs]) or 0:.1f} | "
                  f"{med([r['mb_s'] for r in rs]):.0f} | {f_ms(med([r['p99_us'] / 1000 for r in rs]))} | "
                  f"{f_pct(med([r['loadgen_cpu_frac'] for r in rs]))} | {sum(r['errors'] for r in rs)} | "
                  + ", ".join(f"{a}: {b}" for a, b in sorted(tally.items())) + " |")
            w("")
        z = sc.get("zipf")
        if z:
            f = z["fill"]
            w(f"**Working set 10× the tier.** `GET /api/v1/tasks/<n>`, n drawn Zipf (s = {z['s']:g}) over "
              f"{z['ids']:,} ids (`bench/harness/zipf.lua`: {262144:,} draws per thread made in init()), "
              f"{z['body_bytes']}-byte bodies from `bench/harness/sizedbackend.py` (it builds each body from its id: "
              f"`backend.py --tasks 1000000` would need ~1.3 GB and ~25 s to start, and minutes to answer a million "
              f"misses), so the working set is {z['ws_bytes'] / 1048576:.0f} MB of bodies; `cg-zipf` "
              f"(`bench/conf/scale.toml`) has `[tier] max_bytes = {z['tier_max_bytes']:,}` (1/{k.zipf_tier_div} of "
              f"that; the tier also weighs keys and headers, so it holds fewer than 1/{k.zipf_tier_div} of the "
              f"entries) and a Redis of its own. First every id was requested once, in order ({f['requests']:,} "
              f"requests, {f['misses']:,.0f} misses, {f['seconds']} s, {f_rps(f['rps'])} req/s, {f['errors']} errors; "
              f"Redis then held {f['redis_keys']:,} keys, {f['redis_used_mb']:.0f} MB), so a tier miss is a Redis "
              f"hit; then one warm-up run and {len(z['runs']) - 1} measured run(s) of {k.duration} s, wrk "
              f"-t{k.threads} -c{k.conns}. Hit rates from cachegate's `/metrics` (`tier_hits`, `requests` by "
              "cache_status) over each run.")
            w("")
            w("| run | req/s | req/CPU-s | µs/req (server) | tier hit rate | hit rate | tier hits | hits | misses | p50 ms | p99 ms | CPU split | errors |")
            w("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|")
            for i, r in enumerate(z["runs"]):
                tot = sum(r["cpu_by"].values()) or 1
                split = ", ".join(f"{n} {100 * v / tot:.0f}%" for n, v in sorted(r["cpu_by"].items(), key=lambda kv: -kv[1])
                                  if v / tot >= 0.02)
                w(f"| {'warm-up' if r['warmup'] else i} | {f_rps(r['rps'])} | {f_rps(r['per_cpu'])} | "
                  f"{r['us_per_req'] or 0:.1f} | {f_pct(r['tier_hit_rate'])} | {f_pct(r['hit_rate'])} | "
                  f"{r['tier_hits']:,.0f} | {r['hits']:,.0f} | {r['misses']:,.0f} | {f_ms(r['p50_us'] / 1000)} | "
                  f"{f_ms(r['p99_us'] / 1000)} | {split} | {r['errors']} |")
            w("")
            w(f"For scale: a tier that always held the hottest ids that fit ({z['tier_max_bytes'] // z['body_bytes']:,} "
              f"bodies, bodies only) would hit {f_pct(z['ideal_hit_rate'])}; the hottest id alone draws "
              f"{100 * z['hottest_share']:.1f}% of requests. Per miss during the fill (µs of CPU per request): "
              + ", ".join(f"{p} {v:.1f}" for p, v in f["us_per_miss"].items())
              + f". cachegate's VmRSS at the end: {mb(z.get('cg_rss_kb'))}.")
            w("")

    def projection(self) -> dict | None:
        """Cores and Redis shards for PROJ_RPS at PROJ_HIT, from the measured per-request costs."""
        R, k = self.results, self.k
        S = R.get("rows", {})
        if "cg-tier" not in S or "cg-redis" not in S:
            return None
        t, rd = S["cg-tier"], S["cg-redis"]
        c_tier, c_redis = t["us_own"], rd["us_own"]
        r_cmd = rd["us_redis"]            # Redis µs per hit of cg-redis: one store read each
        r_tier = t["us_redis"] or 0.0     # Redis µs per tier hit (tracking, invalidations)
        if c_tier is None or c_redis is None or r_cmd is None:
            return None
        z = (R["sections"].get("scaling") or {}).get("zipf")
        src_miss = None
        if z and z.get("fill"):
            um = z["fill"]["us_per_miss"]
            c_miss, r_miss = um.get("cg-zipf"), um.get("redis-zipf")
            src_miss = (f"the Zipf fill ({z['fill'].get('us_per_miss_from', z['fill']['requests']):,.0f} misses "
                        "through `cg-zipf`: forward + store; backend CPU excluded)")
        elif "cg-pass" in S and S["cg-pass"]["us_own"] is not None:
            c_miss, r_miss = S["cg-pass"]["us_own"], 2 * r_cmd
            src_miss = ("`cg-pass` (forward only: no store write, so a lower bound) and 2 Redis commands "
                        "(no Zipf run: SKIP=zipf)")
        else:
            return None
        b_miss = S["direct"]["us_server"] if "direct" in S else None   # FastAPI backend µs per request
        measured = [r for r in (z or {}).get("runs", []) if not r["warmup"] and r.get("tier_share_of_hits") is not None]
        f_meas = med([r["tier_share_of_hits"] for r in measured])
        scenarios = [("every hit from the tier", 1.0)]
        if f_meas is not None:
            scenarios.append((f"hits split as in the Zipf run ({f_pct(f_meas)} from the tier)", f_meas))
        scenarios.append(("tier off (every hit from Redis)", 0.0))
        h, rate = k.proj_hit, k.proj_rps
        out = {"rps": rate, "hit": h, "c_tier": c_tier, "c_redis": c_redis, "c_miss": c_miss, "r_cmd": r_cmd,
               "r_tier": r_tier, "r_miss": r_miss, "b_miss": b_miss, "src_miss": src_miss,
               "hottest": z["hottest_share"] if z else None, "scenarios": []}
        for name, f in scenarios:
            cg_us = h * (f * c_tier + (1 - f) * c_redis) + (1 - h) * c_miss     # per request, on average
            redis_us = h * (f * r_tier + (1 - f) * r_cmd) + (1 - h) * r_miss
            be_us = (1 - h) * b_miss if b_miss else None
            units = {"cachegate": cg_us, "Redis": redis_us}
            if be_us:
                units["backend (FastAPI, one worker)"] = be_us
            sat = {u: 1e6 / v for u, v in units.items() if v}   # req/s (all requests) one core of it carries
            first = min(sat, key=sat.get)
            sc = {"name": name, "f": f, "cg_us": cg_us, "redis_us": redis_us, "be_us": be_us,
                  "cg_cores": rate * cg_us / 1e6, "redis_cores": rate * redis_us / 1e6,
                  "be_cores": rate * be_us / 1e6 if be_us else None, "sat": sat, "first": first}
            # one hot key: its share of Redis reads lands on one shard
            if z and f == 0.0 and r_cmd:   # with a tier, the hottest keys stay in it
                sc["hot_key_cores"] = rate * h * z["hottest_share"] * r_cmd / 1e6
            out["scenarios"].append(sc)
        return out

    def render_projection(self, w, p: dict) -> None:
        import math
        w(f"## Projection: {p['rps']:,.0f} req/s at {100 * p['hit']:.0f} % hit rate")
        w("")
        w("Computed from this run's per-request CPU (µs of one core per request): "
          f"cachegate per tier hit {p['c_tier']:.1f} (`cg-tier`'s own CPU ÷ its requests), per Redis hit "
          f"{p['c_redis']:.1f} (`cg-redis`), per miss {p['c_miss']:.1f} (from {p['src_miss']}); Redis per command "
          f"{p['r_cmd']:.1f} (Redis's CPU in the `cg-redis` row's split ÷ requests: one store read per hit), per "
          f"tier hit {p['r_tier']:.2f}, per miss {p['r_miss']:.1f}"
          + (f"; the FastAPI backend {p['b_miss']:.0f} per request (`direct`: 1e6 ÷ req/CPU-s)" if p["b_miss"] else "")
          + ". Cores = rate × µs per request ÷ 1e6, at 100 % of a core (×1/0.7 for 70 % headroom); a Redis "
          "shard is one core (single-threaded). Linear scaling assumed: no network, no kernel "
          "cost beyond what loopback showed, keys spread evenly over shards.")
        w("")
        w("| scenario | cachegate µs/req | cachegate cores (instances) | at 70 % | Redis µs/req | Redis shards | at 70 % "
          "| backend cores (misses) | one core of each saturates at (req/s) | first bottleneck |")
        w("|---|---:|---:|---:|---:|---:|---:|---:|---|---|")
        for s in p["scenarios"]:
            be = "—" if s["be_cores"] is None else f"{s['be_cores']:.0f}"
            w(f"| {s['name']} | {s['cg_us']:.1f} | {math.ceil(s['cg_cores'])} | {math.ceil(s['cg_cores'] / 0.7)} | "
              f"{s['redis_us']:.2f} | {math.ceil(s['redis_cores'])} | {math.ceil(s['redis_cores'] / 0.7)} | {be} | "
              + ", ".join(f"{u} {v:,.0f}" for u, v in s["sat"].items()) + f" | {s['first']} |")
        w("")
        for s in p["scenarios"]:
            if s.get("hot_key_cores") is not None:
                w(f"- {s['name']}: the hottest key (Zipf s=1: {100 * p['hottest']:.1f} % of requests) alone needs "
                  f"{s['hot_key_cores']:.2f} cores of the one shard that holds it"
                  + (" — more than a shard has: hot keys need the tier (or replicas)" if s["hot_key_cores"] > 1 else "")
                  + ".")
        first = {s["first"] for s in p["scenarios"]}
        w(f"- First bottleneck (the component one core of which carries the fewest requests per second): "
          + "; ".join(f"{s['name']}: **{s['first']}**" for s in p["scenarios"]) + ".")
        w("")

    def notes(self) -> list[str]:
        R = self.results
        S = R.get("rows", {})
        out = list(R["failures"]) + list(R.get("warnings") or [])
        for name, s in sorted(S.items(), key=lambda kv: kv[1]["index"]):
            if s["errors"]:
                out.append(f"`{name}`: {s['errors']} wrk errors (non-2xx/3xx or socket errors) over {s['n']} runs.")
            if s["verify_bad"]:
                out.append(f"`{name}`: {s['verify_bad']} sampled responses did NOT match the backend: "
                           f"{s['verify_problems']}")
            if s["warm_bad"]:
                out.append(f"`{name}`: {s['warm_bad']} warm-up requests did not return 200.")
            if s["group"] == "hit" and s["db_reads"]:
                out.append(f"`{name}`: {s['db_reads']} backend reads during timed hit runs "
                           f"({100 * s['db_reads'] / max(s['requests'], 1):.3f}% of requests).")
            if s["lg"] is not None and s["lg"] > 0.9:
                out.append(f"`{name}`: wrk used {f_pct(s['lg'])} of CPU {self.k.loadgen_cpu}: the load generator, not "
                           "the server, was the limit; req/CPU-s is the figure to compare.")
            if s["srv"] is not None and s["srv"] < 0.85:
                out.append(f"`{name}`: server processes used only {f_pct(s['srv'])} of CPU {self.k.server_cpu}.")
            if s["foreign0"] is not None and s["foreign0"] > 0.05:
                out.append(f"`{name}`: other processes used ~{f_pct(s['foreign0'])} of CPU {self.k.server_cpu} "
                           "during its runs; req/CPU-s is the fairer figure.")
            if s["foreign1"] is not None and s["foreign1"] > 0.05:
                out.append(f"`{name}`: other processes used ~{f_pct(s['foreign1'])} of CPU {self.k.loadgen_cpu} (the "
                           "load generator's core) during its runs.")
            if s["rps"] and (s["rps_max"] - s["rps_min"]) / s["rps"] > 0.15:
                out.append(f"`{name}`: rounds spread {100 * (s['rps_max'] - s['rps_min']) / s['rps']:.0f}% — noisy.")
        for r in R["sections"].get("matrix", {}).get("records", []):
            if "failed" in r:
                out.append(f"`{r['row']}` round {r['round']} failed: {r['failed'][:300]}")
                continue
            f0, f1 = r.get("cpu0_foreign_frac") or 0, r.get("cpu1_foreign_frac") or 0
            # CPU stolen from the server core, or from wrk while the server was not saturated
            if f0 > 0.1 or (f1 > 0.2 and (r.get("server_cpu_frac") or 0) < 0.9):
                out.append(f"round {r['round']} `{r['row']}`: other processes used {f_pct(f0)} of CPU "
                           f"{self.k.server_cpu} and {f_pct(f1)} of CPU {self.k.loadgen_cpu} meanwhile: that "
                           "round's figures and ratios for it are suspect.")
        pu = R["sections"].get("purge")
        if pu and pu.get("clear") and pu["clear"]["status"] != 200:
            out.append(f"purge: the admin clear answered HTTP {pu['clear']['status']} "
                       f"`{json.dumps(pu['clear']['answer'])}` and left {pu['clear']['keys_left']:,} keys.")
        mem = R["sections"].get("memory")
        if mem and mem.get("last_x_cache") != "HIT":
            out.append(f"memory: the third read of a list page answered x-cache {mem.get('last_x_cache')!r}, not HIT.")
        st = R["sections"].get("stream")
        if st:
            for v in st["variants"]:
                if not v["complete"]:
                    out.append(f"stream {v['path']}: HTTP {v['status']}, {v['bytes']:,} of {st['size']:,} bytes.")
        sl = R["sections"].get("stale")
        if sl and sl["from_tier"] < sl["trials"]:
            out.append(f"staleness: in {sl['trials'] - sl['from_tier']} trials B's primed answer was not (provably) "
                       "served from its tier.")
        return out

    def machine(self) -> list[str]:
        def cmd(*a):
            try:
                p = subprocess.run(a, capture_output=True, text=True, timeout=10)
                return (p.stdout + p.stderr).strip()
            except Exception:
                return "?"
        cpu = "?"
        for l in open("/proc/cpuinfo"):
            if l.startswith("model name"):
                cpu = l.split(":", 1)[1].strip()
                break
        osn = "?"
        try:
            for l in open("/etc/os-release"):
                if l.startswith("PRETTY_NAME="):
                    osn = l.split("=", 1)[1].strip().strip('"')
        except OSError:
            pass
        pyv = cmd(self.py, "-c", "import sys, importlib.metadata as m; print('python %s, ' % sys.version.split()[0] + "
                  "', '.join('%s %s' % (p, m.version(p)) for p in ('fastapi', 'pydantic', 'uvicorn', 'uvloop', 'redis')))")
        return [
            f"- machine: {cpu}, {os.cpu_count()} vCPUs, {platform.system()} {platform.release()}, {osn}",
            f"- cachegate: `{self.bin}` ({cmd(self.bin, '--version')})",
            *([f"- baseline cachegate (`-base` rows): `{self.baseline_bin}` ({cmd(self.baseline_bin, '--version')})"]
              if self.baseline_bin else []),
            f"- {cmd('nginx', '-v').replace('nginx version: ', '')}, redis {cmd('redis-server', '--version').split('v=')[1].split()[0] if 'v=' in cmd('redis-server', '--version') else '?'}, "
            f"{cmd('wrk', '-v').splitlines()[0].split(' Copyright')[0] if cmd('wrk', '-v') else 'wrk ?'}, {pyv}",
        ]

    def write_results(self, body: str) -> None:
        R = self.results
        L = ["# cachegate benchmark results", ""]
        L.append(f"Generated by `bench/bench.sh` on {R['date']}, measuring part {R['elapsed_s']:.0f} s (run "
                 f"`{self.run_dir.name}`; raw data and logs under the git-ignored `bench/run/{self.run_dir.name}/`).")
        L.append("")
        L.append("```sh")
        L.append(R["invocation"])
        L.append("```")
        L.append("")
        L += R["machine"]
        L.append("")
        L.append(body)
        L.append("## Method")
        L.append("")
        L.append("- Rows: `nginx-hit` = nginx proxy_cache (one worker, open_file_cache, keepalive_requests 1e6); "
                 "`cg-tier` = cachegate with `bench/conf/hit.toml` (in-process tier on, default 64 MiB); `cg-redis` = "
                 "the same with `[tier] enabled = false` (every hit is one Redis call); `seed` = the FastAPI backend "
                 "with its in-app Redis decorator (`--cache`); `direct` = the FastAPI backend (`bench/harness/backend.py`, "
                 "uvicorn, 2 ms simulated DB latency); `cg-pass` = cachegate with `bench/conf/pass.toml` (no rule: "
                 "pass-through); `nginx-pass` = nginx proxy without cache. Every server process, Redis included, "
                 "is pinned to one core; wrk and this harness to the other."
                 + " `cg-tier-log`, `cg-redis-log`, `cg-pass-log` = the same with the access log on as shipped "
                 "(`[access_log] enabled = true`, text to stdout, redirected to the daemon's log file in the run "
                 "directory); nginx keeps `access_log off`."
                 + (" `-base` rows (`cg-tier-base`, `cg-redis-base`, `cg-pass-base`, `cg-*-log-base`) = the same "
                    "instances (same configs, own key prefixes and Redis DBs) run from the baseline binary "
                    "(`BASELINE_BIN`), right after their twins in every round." if R.get("baseline") else ""))
        L.append("- Each round goes through every row in turn. Before a hit row, every working-set id is requested "
                 "(twice for `cg-tier`, so its tier is warm), then 25 random responses are compared with the backend's "
                 "JSON and the hit header is tallied. *upstream reads* = backend DB reads during the timed run "
                 "(0 for real hits).")
        L.append("- *srv CPU* = CPU time of all running server processes ÷ wall time (from /proc); *req/CPU-s* = req/s ÷ "
                 "srv CPU: throughput per server core, the fair figure when wrk (≈150k req/s on one core) is the limit. "
                 "*lg CPU* = wrk's share of its core. wrk is closed-loop: p50/p99 are latencies under saturation.")
        L.append("- The harness (`bench/harness/`) reuses the shared peers harness's backend, wrk script and "
                 "measurement code (copied from `shared/bench-peers/`), so ratios are comparable with its runs.")
        L.append("")
        L.append("## Per-round data")
        L.append("")
        L.append("| round | row | req/s | req/CPU-s | p50 ms | p99 ms | srv CPU | lg CPU | errors | upstream reads |")
        L.append("|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|")
        for r in self.results["sections"].get("matrix", {}).get("records", []):
            if "failed" in r:
                L.append(f"| {r['round']} | `{r['row']}` | failed | | | | | | | |")
                continue
            L.append(f"| {r['round']} | `{r['row']}` | {f_rps(r['rps'])} | {f_rps(r.get('per_cpu'))} | "
                     f"{f_ms(r['p50_us'] / 1000)} | {f_ms(r['p99_us'] / 1000)} | {f_pct(r.get('server_cpu_frac'))} | "
                     f"{f_pct(r.get('loadgen_cpu_frac'))} | {r['errors']} | {r.get('upstream_db_reads', 0)} |")
        L.append("")
        L.append("## Server processes")
        L.append("")
        L.append("```sh")
        rel = lambda s: s.replace(str(REPO) + "/", "")
        for c in R["commands"]:
            L.append(rel(c))
        L.append("```")
        L.append("")
        # bench/compression.sh's section is measured apart: kept as it is.
        old = Path(self.a.results).read_text() if Path(self.a.results).exists() else ""
        kept = old[old.index("\n## Compression"):].strip("\n") if "\n## Compression" in old else ""
        if kept:
            L.extend([kept, ""])
        Path(self.a.results).write_text("\n".join(L))

    # ------------------------------------------------------------ main
    def run(self) -> int:
        t = time.monotonic()
        try:
            self.setup()
            self.section("matrix", self.matrix)
            self.summarize()
            self.section("memory", self.memory)
            self.section("stream", self.stream)
            self.section("stale", self.stale)
            self.section("purge", self.purge)
            self.section("scaling", self.scaling)
        finally:
            log("stopping the server processes")
            self.d.stop_all()
        elapsed = time.monotonic() - t
        self.results.update({
            "elapsed_s": round(elapsed, 1), "date": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
            "invocation": self.k.invocation(), "knobs": vars(self.k), "commands": self.d.commands,
            "machine": self.machine()})
        (self.run_dir / "results.json").write_text(json.dumps(self.results, indent=1, default=str))
        return self.report()

    def report(self) -> int:
        """Prints the tables and writes the results file (from self.results)."""
        text, md = self.render()
        self.write_results(md)
        print()
        print(text)
        print(f"measuring part: {self.results['elapsed_s']:.0f} s; results: {self.a.results}")
        bad = bool(self.results["failures"]) or any(
            s["errors"] or s["verify_bad"] or s["warm_bad"] for s in self.results.get("rows", {}).values())
        return 1 if bad else 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--bin", help="the cachegate binary")
    ap.add_argument("--backend-python", help="python of the venv with backend.py's dependencies")
    ap.add_argument("--baseline-bin", help="a baseline cachegate binary: adds the rows cg-tier-base, "
                                           "cg-redis-base, cg-pass-base and cg-*-log-base (run from it) beside "
                                           "their twins, and a baseline instance in the PUT figures")
    ap.add_argument("--run-dir", required=True)
    ap.add_argument("--results", required=True)
    ap.add_argument("--rerender", action="store_true",
                    help="only rewrite the report from RUN_DIR/results.json (e.g. after changing the report code)")
    a = ap.parse_args()
    if a.rerender:
        b = Bench(a)
        b.results = json.loads((Path(a.run_dir) / "results.json").read_text())
        for key, v in b.results["knobs"].items():
            setattr(b.k, key, v)
        b.summarize()
        b.report()
        return 0
    if not a.bin or not a.backend_python:
        ap.error("--bin and --backend-python are needed to run")

    def on_term(signum, _frame):
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGHUP, on_term)
    b = Bench(a)
    try:
        return b.run()
    except KeyboardInterrupt:
        return 130
    except RuntimeError as e:   # setup problems: say what, no traceback
        log(f"ERROR: {e}")
        return 2


if __name__ == "__main__":
    sys.exit(main())
