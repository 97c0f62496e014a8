#!/usr/bin/env python3
"""Measurement primitives for bench/bench.sh (stdlib only).

Adapted from shared/bench-peers/benchctl.py (the shared peers harness): its
keep-alive client, CPU accounting from /proc, warm-up, response verification
and wrk runner, unchanged; the matrix loop and the report live in cgbench.py.
"""
from __future__ import annotations

import argparse
import http.client
import json
import os
import random
import re
import resource
import ssl
import statistics
import subprocess
import sys
import time
import urllib.parse
from pathlib import Path

HZ = os.sysconf("SC_CLK_TCK")


# --------------------------------------------------------------------------
# small HTTP client (keep-alive)
# --------------------------------------------------------------------------
class Client:
    def __init__(self, base: str, timeout: float = 10.0):
        u = urllib.parse.urlsplit(base)
        self.https = u.scheme == "https"
        self.host, self.port = u.hostname, u.port or (443 if self.https else 80)
        self.timeout = timeout
        self.conn: http.client.HTTPConnection | None = None

    def _connect(self) -> http.client.HTTPConnection:
        if self.https:   # the bench's own self-signed certificate
            ctx = ssl.create_default_context()
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
            return http.client.HTTPSConnection(self.host, self.port, timeout=self.timeout, context=ctx)
        return http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)

    def get(self, path: str) -> tuple[int, dict[str, str], bytes]:
        for attempt in (1, 2):
            if self.conn is None:
                self.conn = self._connect()
            try:
                self.conn.request("GET", path, headers={"Accept": "application/json"})
                r = self.conn.getresponse()
                body = r.read()
                hdrs = {k.lower(): v for k, v in r.getheaders()}
                if r.will_close:
                    self.close()
                return r.status, hdrs, body
            except (http.client.HTTPException, ConnectionError, OSError):
                self.close()
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
            self.conn = None


def read_ids(path: str) -> list[str]:
    return [l.strip() for l in open(path) if l.strip()]


# --------------------------------------------------------------------------
# CPU accounting
# --------------------------------------------------------------------------
def _proc_table() -> dict[int, tuple[int, int]]:
    """pid -> (ppid, utime+stime ticks) for every visible process."""
    table = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            raw = open(f"/proc/{name}/stat").read()
        except OSError:
            continue
        rest = raw[raw.rfind(")") + 2:].split()
        # rest[0] is field 3 (state); ppid is field 4, utime 14, stime 15
        table[int(name)] = (int(rest[1]), int(rest[11]) + int(rest[12]))
    return table


def tree_ticks(roots: list[int]) -> int:
    table = _proc_table()
    children: dict[int, list[int]] = {}
    for pid, (ppid, _) in table.items():
        children.setdefault(ppid, []).append(pid)
    seen, stack, total = set(), list(roots), 0
    while stack:
        pid = stack.pop()
        if pid in seen or pid not in table:
            continue
        seen.add(pid)
        total += table[pid][1]
        stack.extend(children.get(pid, []))
    return total


def cpu_lines() -> dict[str, tuple[int, int]]:
    """cpuN -> (busy ticks, total ticks) from /proc/stat."""
    out = {}
    for line in open("/proc/stat"):
        if line.startswith("cpu") and line[3].isdigit():
            f = line.split()
            v = [int(x) for x in f[1:9]]
            busy = v[0] + v[1] + v[2] + v[5] + v[6] + v[7]
            out[f[0]] = (busy, sum(v))
    return out


class Window:
    """Snapshot of everything measured around one timed run."""

    def __init__(self, server_pids: list[int], stats_urls: list[str]):
        self.server_pids = server_pids
        self.stats_urls = stats_urls

    def _upstream(self) -> dict[str, int]:
        tot = {"db_reads": 0, "cache_hits": 0, "cache_misses": 0}
        for url in self.stats_urls:
            c = Client(url)
            try:
                st, _, body = c.get("/_bench/stats")
            finally:
                c.close()
            if st == 200:
                d = json.loads(body)
                for k in tot:
                    tot[k] += int(d.get(k, 0))
        return tot

    def start(self) -> None:
        self.up0 = self._upstream()
        self.srv0 = tree_ticks(self.server_pids)
        self.cpu0 = cpu_lines()
        self.ru0 = resource.getrusage(resource.RUSAGE_CHILDREN)
        self.t0 = time.monotonic()

    def stop(self) -> dict:
        wall = time.monotonic() - self.t0
        ru1 = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu1 = cpu_lines()
        srv1 = tree_ticks(self.server_pids)
        up1 = self._upstream()
        lg = (ru1.ru_utime - self.ru0.ru_utime) + (ru1.ru_stime - self.ru0.ru_stime)
        srv = (srv1 - self.srv0) / HZ
        res = {
            "wall_s": round(wall, 3),
            "server_cpu_s": round(srv, 3),
            "server_cpu_frac": round(srv / wall, 3),
            "loadgen_cpu_s": round(lg, 3),
            "loadgen_cpu_frac": round(lg / wall, 3),
        }
        for cpu in ("cpu0", "cpu1"):
            if cpu in self.cpu0 and cpu in cpu1:
                b = cpu1[cpu][0] - self.cpu0[cpu][0]
                t = cpu1[cpu][1] - self.cpu0[cpu][1]
                res[f"{cpu}_busy_frac"] = round(b / t, 3) if t else None
        # CPU-0 time not spent by our server processes = other tenants' work
        if res.get("cpu0_busy_frac") is not None:
            res["cpu0_foreign_frac"] = round(max(res["cpu0_busy_frac"] - res["server_cpu_frac"], 0.0), 3)
        if res.get("cpu1_busy_frac") is not None:
            res["cpu1_foreign_frac"] = round(max(res["cpu1_busy_frac"] - res["loadgen_cpu_frac"], 0.0), 3)
        res["upstream_db_reads"] = up1["db_reads"] - self.up0["db_reads"]
        res["app_cache_misses"] = up1["cache_misses"] - self.up0["cache_misses"]
        return res


# --------------------------------------------------------------------------
# golden snapshot
# --------------------------------------------------------------------------
def cmd_golden(a: argparse.Namespace) -> int:
    ids = read_ids(a.ids)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    c = Client(a.base)
    for tid in ids:
        st, hdrs, body = c.get(a.prefix + tid)
        if st != 200:
            print(f"golden: {tid}: HTTP {st}", file=sys.stderr)
            return 1
        doc = json.loads(body)
        if doc.get("id") != tid:
            print(f"golden: {tid}: body has id {doc.get('id')!r}", file=sys.stderr)
            return 1
        (out / tid).write_bytes(body)
    c.close()
    sizes = [len((out / t).read_bytes()) for t in ids]
    print(f"golden: {len(ids)} bodies, {min(sizes)}..{max(sizes)} bytes "
          f"(median {int(statistics.median(sizes))})")
    return 0


# --------------------------------------------------------------------------
# warm + verify
# --------------------------------------------------------------------------
def warm(base: str, prefix: str, ids: list[str]) -> tuple[float, int]:
    c = Client(base)
    t0, bad = time.monotonic(), 0
    for tid in ids:
        st, _, _ = c.get(prefix + tid)
        if st != 200:
            bad += 1
    c.close()
    return time.monotonic() - t0, bad


def verify(row: dict, prefix: str, ids: list[str], golden: Path, sample: int,
           rng: random.Random) -> dict:
    c = Client(row["url"])
    checked, problems, hits = 0, [], {}
    for tid in rng.sample(ids, min(sample, len(ids))):
        st, hdrs, body = c.get(prefix + tid)
        checked += 1
        if st != 200:
            problems.append(f"{tid}: HTTP {st}")
            continue
        if "json" not in hdrs.get("content-type", ""):
            problems.append(f"{tid}: content-type {hdrs.get('content-type')!r}")
        try:
            doc = json.loads(body)
        except ValueError:
            problems.append(f"{tid}: body is not JSON")
            continue
        if row["verify"] == "exact":
            want = json.loads((golden / tid).read_bytes())
            if doc != want:
                problems.append(f"{tid}: body differs from backend's")
        if row.get("hit_header"):
            v = hdrs.get(row["hit_header"].lower(), "<absent>")
            hits[v] = hits.get(v, 0) + 1
    c.close()
    return {"checked": checked, "problems": problems[:5], "n_problems": len(problems),
            "hit_header_values": hits}


# --------------------------------------------------------------------------
# load generator
# --------------------------------------------------------------------------
def run_h2load(a: argparse.Namespace, row: dict, conns: int, streams: int) -> tuple[list[str], dict, str]:
    """The HTTP/2 rows' load: h2load (Debian's nghttp2-client) over the same
    ids as wrk's tasks.lua (in file order, each connection cycling through
    them), `conns` connections of `streams` concurrent streams each, for
    a.duration seconds. Returns the figures under wrk's WRKJSON names;
    latencies come from h2load's per-request log."""
    run = Path(a.ids).parent
    uris = run / f"h2load-{row['name']}.uris"
    base = row["url"].rstrip("/")
    uris.write_text("".join(f"{base}{a.prefix}{i}\n" for i in read_ids(a.ids)))
    reqlog = run / f"h2load-{row['name']}.log"
    cmd = ["taskset", "-c", a.loadgen_cpu, "h2load", f"-t{a.threads}", f"-c{conns}", f"-m{streams}",
           f"-D{a.duration}", "-H", "Accept: application/json", "-i", str(uris), f"--log-file={reqlog}"]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=a.duration + 60)
    out = p.stdout
    fin = re.search(r"^finished in ([\d.]+)s, ([\d.]+) req/s", out, re.M)
    req = re.search(r"^requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, (\d+) failed, "
                    r"(\d+) errored, (\d+) timeout", out, re.M)
    codes = re.search(r"^status codes: (\d+) 2xx, (\d+) 3xx, (\d+) 4xx, (\d+) 5xx", out, re.M)
    traffic = re.search(r"^traffic: .*?\((\d+)\) total", out, re.M)
    if p.returncode != 0 or not (fin and req and codes):
        raise RuntimeError(f"h2load failed rc={p.returncode}: {out[-500:]} {p.stderr[-500:]}")
    lat = []
    with open(reqlog) as f:
        for line in f:
            parts = line.split("\t")
            if len(parts) >= 3:
                lat.append(int(parts[2]))
    lat.sort()
    q = lambda x: lat[min(len(lat) - 1, int(x * len(lat)))] if lat else 0
    reqlog.unlink()
    # non-2xx from the status tally (h2load's `done` can differ from it by one)
    done, non2xx = int(req.group(3)), sum(int(codes.group(i)) for i in (2, 3, 4))
    res = {"requests": done, "duration_s": float(fin.group(1)), "rps": float(fin.group(2)),
           "bytes": int(traffic.group(1)) if traffic else 0,
           "p50_us": q(0.50), "p90_us": q(0.90), "p99_us": q(0.99), "p999_us": q(0.999),
           "mean_us": statistics.fmean(lat) if lat else 0.0, "max_us": lat[-1] if lat else 0,
           "err_connect": 0, "err_read": int(req.group(5)) + int(req.group(6)), "err_write": 0,
           "err_status": non2xx, "err_timeout": int(req.group(7))}
    return cmd, res, out


def run_wrk(a: argparse.Namespace, row: dict) -> tuple[list[str], dict, str]:
    cmd = ["taskset", "-c", a.loadgen_cpu, "wrk", f"-t{a.threads}", f"-c{a.connections}",
           f"-d{a.duration}s", "--latency", "-s", a.script, row["url"], "--", a.ids, a.prefix]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=a.duration + 60)
    m = re.search(r"^WRKJSON (\{.*\})$", p.stdout, re.M)
    if p.returncode != 0 or not m:
        raise RuntimeError(f"wrk failed rc={p.returncode}: {p.stdout[-500:]} {p.stderr[-500:]}")
    return cmd, json.loads(m.group(1)), p.stdout
