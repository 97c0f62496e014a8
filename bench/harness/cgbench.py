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
            with --baseline-bin, two more rows right after cachegate's hit
            rows, the same instances run from a baseline binary
            (cg-tier-base, cg-redis-base), so every round measures old
            and new back to back; the report gives new ÷ baseline;
  memory    cachegate's tier filled past its default 64 MiB bound, then hit
            load: VmRSS / VmHWM;
  stream    1 GiB bodies streamed through cachegate: RSS growth;
  stale     two instances on one Redis: how long B serves a key from its
            tier after a PUT through A purged it;
  purge     1,000,000 records in a private Redis: a PUT's key+tag purge
            cost, then the admin clear of them all and Redis's SLOWLOG;

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

SECTIONS = ("matrix", "memory", "stream", "stale", "purge")
# --baseline-bin: (row of the current binary, the same row from the baseline
# binary); new ÷ baseline median req/s at or above this is "within 3 %"
BASELINE_PAIRS = (("cg-tier", "cg-tier-base"), ("cg-redis", "cg-redis-base"))
BASELINE_MIN_RATIO = 0.97


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
        self.only = [r for r in os.environ.get("ONLY", "").split(",") if r]
        skip = [s for s in os.environ.get("SKIP", "").split(",") if s]
        for s in skip:
            if s not in SECTIONS:
                raise SystemExit(f"SKIP: unknown section {s!r} (known: {', '.join(SECTIONS)})")
        self.sections = [s for s in SECTIONS if s not in skip]

    def invocation(self) -> str:
        defaults = {"ROUNDS": "3", "DURATION": "5", "THREADS": "1", "CONNS": "64",
                    "WORKING_SET": "1000", "TASKS": "10000", "DB_LATENCY_MS": "2",
                    "SERVER_CPU": "0", "LOADGEN_CPU": "1", "PORT_BASE": "19000", "PUTS": "300",
                    "STALE_TRIALS": "200", "PURGE_ENTRIES": "1000000", "STREAM_MB": "1024",
                    "TIER_FILL_MB": "96", "ONLY": "", "SKIP": "", "CACHEGATE_BIN": "", "BASELINE_BIN": ""}
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
                  "nginx-hit": b + 20, "nginx-pass": b + 21,
                  "cg-tier": b + 30, "cg-redis": b + 31, "cg-pass": b + 32,
                  "big": b + 40, "cg-big": b + 41, "stale-a": b + 50, "stale-b": b + 51,
                  "cg-purge": b + 60}
        if self.baseline_bin:
            self.P.update({"cg-tier-base": b + 33, "cg-redis-base": b + 34})
        self.token = secrets.token_hex(24)
        self.ids: list[str] = []
        self.extra_ids: list[str] = []
        self.golden = self.run_dir / "golden"
        self.matrix_daemons: list[str] = []

    # ------------------------------------------------------------ helpers
    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.P[name]}"

    def need_ports(self, *names: str) -> None:
        for n in names:
            if not port_free(self.P[n]):
                raise RuntimeError(f"port {self.P[n]} ({n}) is already in use by a process this run did "
                                   "not start; free it or set PORT_BASE")

    def write_conf(self, name: str, base: str, prefix: str, tier: bool | None = None) -> Path:
        text = (BENCH / "conf" / base).read_text()
        text, n = re.subn(r'(?m)^key_prefix = ".*"$', f'key_prefix = "{prefix}"', text)
        assert n == 1, f"{base}: expected one key_prefix line"
        if tier is not None:
            if "[tier]" in text:
                text, n = re.subn(r'(?ms)^(\[tier\]\n)enabled = \w+$', rf'\1enabled = {str(tier).lower()}', text)
                assert n == 1, f"{base}: expected `enabled = ...` right under [tier]"
            else:
                text += f"\n[tier]\nenabled = {str(tier).lower()}\n"
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

        if "matrix" in k.sections or "memory" in k.sections:
            self.start_nginx()
            self.matrix_daemons.append("nginx")
            direct = self.url("direct")
            self.start_cachegate("cg-tier", self.write_conf("cg-tier", "hit.toml", "cgt:"), direct,
                                 self.P["redis"], 1)
            self.start_cachegate("cg-redis", self.write_conf("cg-redis", "hit.toml", "cgr:", tier=False),
                                 direct, self.P["redis"], 2)
            self.start_cachegate("cg-pass", self.write_conf("cg-pass", "pass.toml", "cgp:"), direct,
                                 self.P["redis"], 3)
            for n in ("cg-tier", "cg-redis", "cg-pass"):
                self.wait_cachegate(n)
                self.matrix_daemons.append(n)
            if self.baseline_bin and "matrix" in k.sections:
                # the same instances from the baseline binary: same configs, their
                # own key prefixes and Redis DBs (4 and 5 are cg-big's and stale's)
                self.start_cachegate("cg-tier-base", self.write_conf("cg-tier-base", "hit.toml", "cgtb:"),
                                     direct, self.P["redis"], 6, binary=self.baseline_bin)
                self.start_cachegate("cg-redis-base",
                                     self.write_conf("cg-redis-base", "hit.toml", "cgrb:", tier=False),
                                     direct, self.P["redis"], 7, binary=self.baseline_bin)
                for n in ("cg-tier-base", "cg-redis-base"):
                    self.wait_cachegate(n)
                    self.matrix_daemons.append(n)
            wait_until("nginx", lambda: http_ok(self.P["nginx-pass"], "/healthz"), self.d, "nginx")

    def start_nginx(self) -> None:
        self.need_ports("nginx-hit", "nginx-pass")
        ng = self.run_dir / "cwd" / "nginx"
        for sub in ("cache", "tmp"):
            (ng / sub).mkdir(parents=True, exist_ok=True)
        d = self.P["direct"]
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
        if self.baseline_bin:
            # right after their current-binary twins, so each round measures old and new back to back
            base = {
                "cg-tier": dict(name="cg-tier-base", group="hit", url=self.url("cg-tier-base"), hit_header="x-cache",
                                stats=[direct], warm=2, rss="cg-tier-base",
                                label="cachegate hit, in-process tier (Redis behind) (baseline binary)"),
                "cg-redis": dict(name="cg-redis-base", group="hit", url=self.url("cg-redis-base"),
                                 hit_header="x-cache", stats=[direct], warm=1, rss="cg-redis-base",
                                 label="cachegate hit from Redis (`[tier] enabled = false`) (baseline binary)"),
            }
            rows = [x for r in rows for x in ([r, base[r["name"]]] if r["name"] in base else [r])]
        if self.k.only:
            rows = [r for r in rows if r["name"] in self.k.only]
        for i, r in enumerate(rows):
            r["index"] = i
            r["verify"] = "exact"
        return rows

    def wrk_args(self, duration: int | None = None) -> argparse.Namespace:
        k = self.k
        return argparse.Namespace(loadgen_cpu=k.loadgen_cpu, threads=k.threads, connections=k.conns,
                                  duration=duration or k.duration, script=str(HERE / "tasks.lua"),
                                  ids=str(self.ids_file), prefix="/api/v1/tasks/")

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
                            _, b = bc.warm(row["url"], "/api/v1/tasks/", self.ids)
                            bad += b
                        rec["warm_s"] = round(time.monotonic() - t, 3)
                        rec["warm_bad"] = bad
                    rec["verify"] = bc.verify(row, "/api/v1/tasks/", self.ids, self.golden, 25, rng)
                    win = bc.Window(server_pids, row["stats"])
                    ticks0 = {n: bc.tree_ticks([self.d.pid(n)]) for n in self.matrix_daemons}
                    rss_pid = self.d.pid(row["rss"]) if row.get("rss") else None
                    sampler = RssSampler(rss_pid, 0.05) if rss_pid else None
                    win.start()
                    if sampler:
                        sampler.__enter__()
                    try:
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
                log(f"[round {rnd}] {row['name']:<11} {res['rps']:>9.0f} req/s  "
                    f"{(rec['per_cpu'] or 0):>9.0f} req/CPU-s  p50 {res['p50_us'] / 1000:6.2f} ms  "
                    f"p99 {res['p99_us'] / 1000:7.2f} ms  err {rec['errors']}  srv {rec['server_cpu_frac']:.2f}  "
                    f"lg {rec['loadgen_cpu_frac']:.2f}  db-reads {rec['upstream_db_reads']}  "
                    f"verify {v['checked'] - v['n_problems']}/{v['checked']}"
                    + (f" ({tally})" if tally else "")
                    + (f"  rss {mb(rec['rss_max_kb'])}" if rec.get("rss_max_kb") else ""))
        raw.close()
        self.results["sections"]["matrix"] = {"records": recs}

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
        self.wait_cachegate(name)
        time.sleep(0.3)

        cg, direct = Raw(self.P[name]), Raw(self.P["direct"])

        def metrics():
            m = Raw(self.P[name])
            try:
                _, _, body = m.request("GET", "/metrics")
            finally:
                m.close()
            return parse_metrics(body.decode())

        ids = self.extra_ids[:k.puts]
        # warm both paths (connections, code) before timing
        for tid in ids[:5]:
            cg.request("GET", f"/api/v1/tasks/{tid}")
            direct.request("PUT", f"/api/v1/tasks/{tid}", b'{"status":"todo"}')
            cg.request("PUT", f"/api/v1/tasks/{tid}", b'{"status":"todo"}')
        m0 = metrics()
        r.cmd("SLOWLOG", "RESET")
        via, dir_, bad, primed = [], [], 0, {}
        for i, tid in enumerate(ids):
            path = f"/api/v1/tasks/{tid}"
            st1, h1, _ = cg.request("GET", path)                       # an entry for the key purge
            st2, h2, _ = cg.request("GET", f"/api/v1/tasks?offset={i}&limit=5")  # a tagged list page
            for h in (h1, h2):
                primed[h.get("x-cache")] = primed.get(h.get("x-cache"), 0) + 1
            body = json.dumps({"name": f"purge trial {i}"}).encode()
            order = [(dir_, direct), (via, cg)] if i % 2 == 0 else [(via, cg), (dir_, direct)]
            for lst, c in order:
                t0 = time.perf_counter_ns()
                st, _, _ = c.request("PUT", path, body)
                lst.append((time.perf_counter_ns() - t0) / 1e6)
                if st != 200:
                    bad += 1
        cg.close()
        direct.close()
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
        p = out["put"]
        log(f"PUT x{p['n']}: direct p50 {f_ms(p['direct_p50'])} p99 {f_ms(p['direct_p99'])} ms; via cachegate "
            f"p50 {f_ms(p['via_p50'])} p99 {f_ms(p['via_p99'])} ms; added p50 {f_ms(p['diff_p50'])} "
            f"p99 {f_ms(p['diff_p99'])} ms; store calls {json.dumps(hists)}")

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
            "tier_cpu": per_round("cg-tier", "nginx-hit", cpu),
            "tier_rps": per_round("cg-tier", "nginx-hit", rps),
            "tier_p99": per_round("cg-tier", "nginx-hit", p99),
            "redis_cpu": per_round("cg-redis", "nginx-hit", cpu),
            "redis_rps": per_round("cg-redis", "nginx-hit", rps),
            "tier_seed": per_round("cg-tier", "seed", rps),
            "pass_direct": per_round("cg-pass", "direct", rps),
            "nginx_pass_direct": per_round("nginx-pass", "direct", rps),
        }
        # new binary vs baseline binary (--baseline-bin): ratio of the median req/s
        self.results["baseline"] = [
            {"new": n, "base": b, "rps_new": S[n]["rps"], "rps_base": S[b]["rps"],
             "ratio": S[n]["rps"] / S[b]["rps"] if S[n]["rps"] and S[b]["rps"] else None,
             "p99_new": S[n]["p99"], "p99_base": S[b]["p99"],
             "p99_ratio": S[n]["p99"] / S[b]["p99"] if S[n]["p99"] and S[b]["p99"] else None,
             "per_round": per_round(n, b, rps)}
            for n, b in BASELINE_PAIRS if n in S and b in S]

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

        def target(num, what, value, shown, goal, ok, rounds=None):
            targets.append((num, what, shown, goal, "met" if ok else ("—" if ok is None else "**missed**"),
                            ", ".join(f"{x:.2f}" for x in rounds) if rounds else ""))

        v, vals = rr("tier_cpu")
        target("1", "cachegate hit (tier) req/CPU-s ÷ nginx hit req/CPU-s", v, f_ratio(v), "≥ 1.15",
               None if v is None else v >= 1.15, vals)
        v, vals = rr("tier_rps")
        target("1", "… the same in req/s (for reference)", v, f_ratio(v), "—", None, vals)
        v, vals = rr("tier_p99")
        p99s = (f" ({f_ms(S['cg-tier']['p99'])} vs {f_ms(S['nginx-hit']['p99'])} ms)"
                if "cg-tier" in S and "nginx-hit" in S else "")
        target("1", "cachegate hit (tier) p99 ÷ nginx hit p99", v, f_ratio(v) + p99s, "≤ 1.00",
               None if v is None else v <= 1.0, vals)
        v, vals = rr("redis_cpu")
        target("2", "cachegate hit from Redis (tier off) req/CPU-s ÷ nginx hit req/CPU-s", v, f_ratio(v), "≥ 0.60",
               None if v is None else v >= 0.6, vals)
        v, vals = rr("tier_seed")
        target("3", "cachegate hit (tier) req/s ÷ in-app decorator (seed) req/s", v, f_ratio(v), "≥ 15",
               None if v is None else v >= 15, vals)
        v, vals = rr("pass_direct")
        target("4", "cachegate pass-through req/s ÷ direct backend req/s", v, f_ratio(v), "≥ 0.90",
               None if v is None else v >= 0.9, vals)
        v, vals = rr("nginx_pass_direct")
        target("4", "… nginx pass-through ÷ direct (reference; ~0.76 in the issue)", v, f_ratio(v), "—", None, vals)
        mem = R["sections"].get("memory")
        rss_load = max([S[n]["rss_max_kb"] for n in ("cg-tier", "cg-redis", "cg-pass")
                        if n in S and S[n]["rss_max_kb"]], default=None)
        if rss_load:
            target("5", f"cachegate RSS under wrk load, {k.working_set:,}-id working set (max VmRSS of the "
                        "cachegate rows)", rss_load, mb(rss_load), "< 100 MB", rss_load < 100 * 1024)
        if mem:
            worst = max(mem["load_rss_max_kb"], mem["after_load"]["VmHWM"])
            filled = (f"its tier filled past the default 64 MiB bound ({mem['fill_bytes'] / 1048576:.0f} MB of "
                      "list pages)" if mem["fill_bytes"] >= 64 * 1048576 else
                      f"{mem['fill_bytes'] / 1048576:.0f} MB of list pages in its tier (less than its 64 MiB bound)")
            target("5", f"cachegate RSS at full load with {filled} (max VmRSS / VmHWM)",
                   worst, f"{mb(mem['load_rss_max_kb'])} / {mb(mem['after_load']['VmHWM'])}", "< 100 MB",
                   worst < 100 * 1024)
        st = R["sections"].get("stream")
        if st:
            g = max(v["growth_kb"] for v in st["variants"])
            complete = all(v["complete"] for v in st["variants"])
            target("5", f"RSS growth while {st['size'] / 2**30:g} GiB streams through cachegate (worst of "
                        f"{len(st['variants'])} variants)", g,
                   mb(g) + ("" if complete else " (a transfer was incomplete!)"), "< 32 MB",
                   g < 32 * 1024 and complete)
        pu = R["sections"].get("purge")
        if pu and "put" in pu:
            p = pu["put"]
            target("6", f"PUT latency added by cachegate's key+tag purge, p99 (via − direct, "
                        f"{p['n']} PUTs, {pu['keys_after_fill']:,} keys in Redis)", p["diff_p99"],
                   f"{f_ms(p['diff_p99'])} ms", "< 2 ms", p["diff_p99"] < 2)
        if pu and "clear" in pu:
            c = pu["clear"]
            done = (f"{c['seconds']:.1f} s in all" if c["status"] == 200 else
                    f"but the clear **failed**: HTTP {c['status']} after {c['seconds']:.1f} s, "
                    f"{c['keys_left']:,} keys left")
            target("6", f"clear `task:*` over {pu['entries']:,} entries: slowest Redis command (SLOWLOG)",
                   c["max_us"], f"{c['max_us'] / 1000:.2f} ms ({done})", "< 10 ms",
                   c["max_us"] <= 10_000 and c["status"] == 200)
        sl = R["sections"].get("stale")
        if sl:
            target("7", f"cross-instance staleness window p99 ({sl['trials']} trials)", sl["window_p99"],
                   f"{f_ms(sl['window_p99'])} ms", "< 5 ms",
                   sl["window_p99"] is not None and sl["window_p99"] < 5 and not sl["timed_out"])
        w("## Targets")
        w("")
        w("Ratios are medians of per-round ratios (same round = measured back to back).")
        w("")
        w("| # | figure | measured | target | | per round |")
        w("|---|---|---:|---:|---|---|")
        for t in targets:
            w("| " + " | ".join(t) + " |")
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
                w(f"- {p['n']} PUTs, each after priming an entry for the task (GET) and a tagged list page, "
                  "alternating with the same PUT straight to the backend:")
                w("")
                w("  | | p50 ms | p99 ms | mean ms |")
                w("  |---|---:|---:|---:|")
                w(f"  | PUT straight to the backend | {f_ms(p['direct_p50'])} | {f_ms(p['direct_p99'])} | {f_ms(p['direct_mean'])} |")
                w(f"  | PUT through cachegate (forward + key + tag purge) | {f_ms(p['via_p50'])} | {f_ms(p['via_p99'])} | {f_ms(p['via_mean'])} |")
                w(f"  | added | {f_ms(p['diff_p50'])} | {f_ms(p['diff_p99'])} | {f_ms(p['diff_mean'])} |")
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
        notes = self.notes()
        if notes:
            w("## Notes")
            w("")
            for n in notes:
                w(f"- {n}")
            w("")
        text = "\n".join(L)
        return text, text

    def notes(self) -> list[str]:
        R = self.results
        S = R.get("rows", {})
        out = list(R["failures"])
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
                 + (" `cg-tier-base`, `cg-redis-base` = `cg-tier`, `cg-redis` (same configs, own key prefixes "
                    "and Redis DBs) run from the baseline binary (`BASELINE_BIN`)." if R.get("baseline") else ""))
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
    ap.add_argument("--baseline-bin", help="a baseline cachegate binary: adds the rows cg-tier-base and "
                                           "cg-redis-base (run from it) beside cg-tier and cg-redis")
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
