#!/usr/bin/env python3
"""bench/soak.sh's orchestrator (stdlib only): a long run at a steady moderate load.

Starts a private redis-server, the task API (taskapi.py) and cachegate, then
sends a rate-limited mix (task GETs over a working set, never-seen tasks,
short-TTL tasks, list pages, PUTs, admin key and tag purges) for DURATION
seconds, checking every answer. Every SAMPLE_SECONDS it samples cachegate's
VmRSS, VmHWM, open fds, threads and CPU, the interval's requests, errors and
latencies, and /metrics' hit ratio; at the end it judges: RSS flat after the
warm-up (growth < 10 %), fds not growing, zero errors. Writes samples.csv,
summary.md and summary.json into the run directory.
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import secrets
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import loadmix as lm  # noqa: E402
from loadmix import log  # noqa: E402

DEFAULT_MIX = "hot=68,cold=8,short=4,list=10,put=7,purge_key=2.5,purge_tag=0.5"


class Knobs:
    def __init__(self) -> None:
        self.duration = lm.env_int("DURATION", 1800)
        self.rate = lm.env_float("RATE", 800)
        self.conns = lm.env_int("CONNS", 32)
        self.sample = lm.env_int("SAMPLE_SECONDS", 30)
        self.warmup = lm.env_int("WARMUP_SECONDS", 120)
        self.hot = lm.env_int("HOT", 1000)
        self.port_base = lm.env_int("PORT_BASE", 19200)
        self.task_ttl = lm.env_int("TASK_TTL", 120)
        self.list_ttl = lm.env_int("LIST_TTL", 60)
        self.short_ttl = lm.env_int("SHORT_TTL", 2)
        self.db_latency_ms = lm.env_float("DB_LATENCY_MS", 1)
        self.rss_limit_pct = lm.env_float("RSS_GROWTH_LIMIT_PCT", 10)
        self.fd_slack = lm.env_int("FD_SLACK", 5)
        mix = os.environ.get("MIX", "").strip() or DEFAULT_MIX
        self.mix = {k.strip(): float(v) for k, v in (x.split("=") for x in mix.split(","))}
        for k in self.mix:
            if k not in lm.OPS:
                raise SystemExit(f"MIX: unknown op {k!r} (ops: {', '.join(lm.OPS)})")
        self.server_cpu = os.environ.get("SERVER_CPU", "")
        if self.warmup >= self.duration:
            self.warmup = max(self.sample, self.duration // 3)


def mb(kb: float | None) -> str:
    return "-" if kb is None else f"{kb / 1024:.1f}"


class Soak:
    def __init__(self, a: argparse.Namespace):
        self.k = Knobs()
        self.bin = a.bin
        self.run_dir = Path(a.run_dir)
        self.d = lm.Daemons(self.run_dir, self.k.server_cpu)
        b = self.k.port_base
        self.P = {"redis": b, "backend": b + 1, "cachegate": b + 2}
        self.token = secrets.token_hex(24)
        self.samples: list[dict] = []
        self.load: lm.Load | None = None
        self.lat_hist: Counter = Counter()   # whole run, 0.1 ms buckets
        self.failures: list[str] = []

    # ------------------------------------------------------------ setup
    def setup(self) -> None:
        k, P = self.k, self.P
        for n, p in P.items():
            if not lm.port_free(p):
                raise RuntimeError(f"port {p} ({n}) is in use by a process this run did not start; "
                                   "free it or set PORT_BASE")
        data = self.run_dir / "cwd" / "redis"
        data.mkdir(parents=True, exist_ok=True)
        self.d.start("redis", ["redis-server", "--bind", "127.0.0.1", "--port", str(P["redis"]),
                               "--save", "", "--appendonly", "no", "--dir", str(data),
                               "--protected-mode", "yes"])
        lm.wait_until("PING", lambda: lm.redis_ping(P["redis"]), self.d, "redis")
        self.d.start("backend", [sys.executable, str(lm.HERE / "taskapi.py"), "--port", str(P["backend"]),
                                 "--db-latency-ms", str(k.db_latency_ms)])
        lm.wait_until("/healthz", lambda: lm.http_ok(P["backend"], "/healthz"), self.d, "backend")
        conf = self.run_dir / "cachegate.toml"
        conf.write_text(lm.cachegate_conf("soak:", k.task_ttl, k.list_ttl, k.short_ttl, 60,
                                          backend_timeout_ms=10000, connect_timeout_ms=1000,
                                          store_timeout_ms=100))
        env = {"CACHEGATE_LISTEN": f"127.0.0.1:{P['cachegate']}",
               "CACHEGATE_BACKEND": f"http://127.0.0.1:{P['backend']}",
               "REDIS_URL": f"redis://127.0.0.1:{P['redis']}/0",
               "CACHEGATE_BENCH_TOKEN": self.token}
        self.conf_note = lm.write_conf(self.bin, conf, conf.read_text(), env)
        log(self.conf_note)
        self.d.start("cachegate", [self.bin, "--config", str(conf), "--log", "warn"], env)
        lm.wait_until("/readyz", lambda: lm.http_ok(P["cachegate"], "/readyz"), self.d, "cachegate")
        self.cg_pid = self.d.pid("cachegate")
        log(f"up: redis :{P['redis']}, task API :{P['backend']}, cachegate :{P['cachegate']} (pid {self.cg_pid})")

    # ------------------------------------------------------------ sampling
    def sample(self, t: float) -> dict:
        iv = self.load.swap()
        dt = max(time.monotonic() - iv.t0, 1e-9)
        pr = lm.proc_sample(self.cg_pid)
        fc = lm.fd_classes(self.cg_pid, self.P["cachegate"], self.P["backend"], self.P["redis"])
        try:
            cc = lm.cache_counts(self.P["cachegate"])
        except Exception as e:
            cc = {}
            self.failures.append(f"/metrics at {t:.0f}s: {e}")
        prev = self.samples[-1] if self.samples else None
        pc = prev["_cc"] if prev else {}
        d = {s: cc.get(s, 0) - pc.get(s, 0) for s in ("hit", "miss", "stale", "bypass")}
        looked = sum(d.values())
        try:
            ri = lm.redis_info(self.P["redis"])
            keys = lm.redis_cmd(self.P["redis"], "DBSIZE")
        except Exception:
            ri, keys = {}, None
        try:
            be = lm.proc_sample(self.d.pid("backend"))
        except Exception:
            be = {}
        cpu_prev = prev["_cpu_s"] if prev else self.cpu0
        for x in iv.lat:
            self.lat_hist[int(x * 10000)] += 1
        s = {
            "t_s": round(t),
            "requests": iv.n,
            "rps": round(iv.n / dt, 1),
            "errors": sum(iv.errors.values()),
            "hits": iv.xcache.get("HIT", 0),
            "misses": iv.xcache.get("MISS", 0),
            "stale": iv.xcache.get("STALE", 0),
            "bypass": iv.xcache.get("BYPASS", 0),
            "metrics_hit_pct": round(100 * (d["hit"] + d["stale"]) / looked, 1) if looked else None,
            "p50_ms": round(lm.pct(iv.lat, 50) * 1000, 2) if iv.lat else None,
            "p99_ms": round(lm.pct(iv.lat, 99) * 1000, 2) if iv.lat else None,
            "max_ms": round(max(iv.lat) * 1000, 1) if iv.lat else None,
            "put_p99_ms": round(lm.pct(iv.lat_op.get("put", []), 99) * 1000, 2) if iv.lat_op.get("put") else None,
            "rss_kb": pr["VmRSS"], "hwm_kb": pr["VmHWM"], "rss_anon_kb": pr.get("RssAnon"),
            "fds": pr["fds"], "fd_client": fc["client"], "fd_backend": fc["backend"],
            "fd_redis": fc["redis"], "fd_other": fc["other"] + fc["other_socket"] + fc["listen"],
            "threads": pr["Threads"],
            "cg_cpu_pct": round(100 * (pr["cpu_s"] - cpu_prev) / dt, 1),
            "store_errors": cc.get("store_errors", 0),
            "redis_used_kb": int(int(ri.get("used_memory", 0)) / 1024) if ri else None,
            "redis_keys": keys,
            "backend_rss_kb": be.get("VmRSS"),
            "behind": iv.behind,
            "loadavg": open("/proc/loadavg").read().split()[0],
            "_cc": cc, "_cpu_s": pr["cpu_s"],
        }
        self.samples.append(s)
        if iv.errors:
            log(f"   errors this interval: {dict(iv.errors)}; last: {list(self.load.error_samples)[-3:]}")
        return s

    HEAD = (f"{'t(s)':>6} {'req/s':>7} {'err':>4} {'hit%':>5} {'p50':>6} {'p99':>6} {'max':>7} "
            f"{'putp99':>6} {'RSS MB':>7} {'HWM MB':>7} {'fds':>4} {'c/b/r/o':>12} {'thr':>4} {'cg cpu%':>7} "
            f"{'redis MB':>8} {'keys':>6} {'load':>5}")

    @staticmethod
    def line(s: dict) -> str:
        f = lambda v, w, spec="": f"{'-' if v is None else format(v, spec):>{w}}"  # noqa: E731
        return (f"{s['t_s']:>6} {s['rps']:>7.0f} {s['errors']:>4} {f(s['metrics_hit_pct'], 5)} "
                f"{f(s['p50_ms'], 6, '.2f')} {f(s['p99_ms'], 6, '.2f')} {f(s['max_ms'], 7, '.1f')} "
                f"{f(s['put_p99_ms'], 6, '.2f')} {mb(s['rss_kb']):>7} {mb(s['hwm_kb']):>7} {s['fds']:>4} "
                f"{'/'.join(str(s[x]) for x in ('fd_client', 'fd_backend', 'fd_redis', 'fd_other')):>12} "
                f"{s['threads']:>4} {s['cg_cpu_pct']:>7.1f} {mb(s['redis_used_kb']):>8} "
                f"{f(s['redis_keys'], 6)} {s['loadavg']:>5}")

    # ------------------------------------------------------------ run
    def run(self) -> int:
        k = self.k
        self.setup()
        log(f"warming {k.hot} tasks, {k.hot // lm.LIST_PAGE} list pages, 3 tenants")
        t = time.monotonic()
        bad = lm.warm(self.P["cachegate"], k.hot, 100)
        log(f"warm pass: {time.monotonic() - t:.1f} s, {bad} non-200")
        if bad:
            self.failures.append(f"warm pass: {bad} non-200 answers")
        self.cpu0 = lm.proc_sample(self.cg_pid)["cpu_s"]
        self.load = lm.Load(self.P["cachegate"], k.rate, k.conns, k.hot, k.mix, self.token,
                            timeout=30.0, short_ids=100, keep_total_lat=False)
        log(f"load: {k.rate:g} req/s over {k.conns} keep-alive connections, mix {k.mix}, "
            f"{k.duration} s, a sample every {k.sample} s, warm-up {k.warmup} s")
        t_start = time.monotonic()
        self.load.start()
        print(self.HEAD, flush=True)
        csv_path = self.run_dir / "samples.csv"
        with open(csv_path, "w", newline="") as fcsv:
            w = None
            nxt = t_start + k.sample
            while True:
                end = t_start + k.duration
                nxt = min(nxt, end)
                while time.monotonic() < nxt:
                    time.sleep(min(1.0, nxt - time.monotonic()))
                    if not self.d.alive("cachegate"):
                        break
                if not self.d.alive("cachegate"):
                    self.failures.append(f"cachegate exited (status {self.d.procs['cachegate'].poll()}) "
                                         f"at {time.monotonic() - t_start:.0f} s")
                    log(self.failures[-1])
                    break
                s = self.sample(time.monotonic() - t_start)
                print(self.line(s), flush=True)
                row = {kk: v for kk, v in s.items() if not kk.startswith("_")}
                if w is None:
                    w = csv.DictWriter(fcsv, fieldnames=list(row))
                    w.writeheader()
                w.writerow(row)
                fcsv.flush()
                if nxt >= end:
                    break
                nxt += k.sample
        self.load.stop()
        self.t_run = time.monotonic() - t_start
        return self.report()

    # ------------------------------------------------------------ summary
    def binary_id(self) -> str:
        try:
            lines = (self.run_dir / "binary.txt").read_text().splitlines()
            src = lines[0].split(": ", 1)[1]
            sha = lines[1].split()[0]
            built = next((l.split(": ", 1)[1] for l in lines if l.startswith("built: ")), "?")
            return f"{src} (built {built}; sha256 {sha[:16]}…)"
        except (OSError, IndexError):
            return self.bin

    def log_findings(self) -> dict:
        lines = lm.log_lines(self.run_dir / "logs" / "cachegate.log")
        out = {"lines": len(lines),
               "warn": sum(" WARN " in l for l in lines),
               "error": sum(" ERROR " in l for l in lines),
               "panic": sum("panicked" in l for l in lines)}
        out["first"] = lines[:5]
        return out

    def report(self) -> int:
        k, S = self.k, self.samples
        if not S:
            log("no samples")
            return 1
        post = [s for s in S if s["t_s"] >= k.warmup] or S[-1:]
        warm, end = post[0], S[-1]
        growth = end["rss_kb"] - warm["rss_kb"]
        growth_pct = 100 * growth / warm["rss_kb"]
        # least-squares slope of RSS after the warm-up, MB per hour
        slope = None
        if len(post) >= 3:
            xs = [s["t_s"] for s in post]
            ys = [s["rss_kb"] / 1024 for s in post]
            mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
            den = sum((x - mx) ** 2 for x in xs)
            slope = sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / den * 3600 if den else None
        med = lambda xs: sorted(xs)[len(xs) // 2]  # noqa: E731
        fd_first = med([s["fds"] for s in post[:3]])
        fd_last = med([s["fds"] for s in S[-3:]])
        nb = lambda s: s["fds"] - s["fd_backend"]  # noqa: E731
        nb_first, nb_last = med([nb(s) for s in post[:3]]), med([nb(s) for s in S[-3:]])
        half = post[: max(1, len(post) // 2)]
        be_first_half_max = max(s["fd_backend"] for s in half)
        be_last = med([s["fd_backend"] for s in S[-3:]])
        tot = self.load.total
        errors = sum(tot.errors.values())
        hist = self.lat_hist
        n_lat = sum(hist.values())

        def hq(q):
            if not n_lat:
                return None
            target, acc = q / 100 * n_lat, 0
            for b in sorted(hist):
                acc += hist[b]
                if acc >= target:
                    return b / 10000
        p99s = [s["p99_ms"] for s in S if s["p99_ms"] is not None]
        lf = self.log_findings()
        rss_ok = growth_pct < k.rss_limit_pct
        # A leak grows without bound; the backend pool may legitimately grow to the
        # highest concurrency seen (bounded by pool_idle_per_host, idle ones closed
        # after pool_idle_timeout_ms). So: every fd that is not a backend connection
        # must stay put, and backend connections at the end must not exceed their
        # count over the first half after the warm-up.
        fd_ok = (fd_last - fd_first <= k.fd_slack) or (
            nb_last - nb_first <= k.fd_slack and be_last <= be_first_half_max + k.fd_slack)
        err_ok = errors == 0 and not self.failures and lf["panic"] == 0
        verdict = "PASS" if (rss_ok and fd_ok and err_ok and self.t_run >= k.duration - 1) else "FAIL"
        hits = tot.xcache.get("HIT", 0)
        answered = sum(tot.xcache.values())
        summary = {
            "verdict": verdict,
            "binary": self.binary_id(),
            "duration_s": round(self.t_run), "rate": k.rate, "conns": k.conns, "mix": k.mix,
            "requests": tot.n, "achieved_rps": round(tot.n / self.t_run, 1),
            "ops": dict(tot.ops), "statuses": {str(a): b for a, b in tot.status.items()},
            "x_cache": dict(tot.xcache), "hit_pct_of_cached_routes": round(100 * hits / answered, 1) if answered else None,
            "errors": errors, "error_kinds": dict(tot.errors), "error_samples": list(self.load.error_samples)[:20],
            "late_sends_skipped": tot.behind,
            "rss_warm_mb": round(warm["rss_kb"] / 1024, 1), "rss_warm_at_s": warm["t_s"],
            "rss_end_mb": round(end["rss_kb"] / 1024, 1),
            "rss_growth_mb": round(growth / 1024, 2), "rss_growth_pct": round(growth_pct, 2),
            "rss_max_after_warm_mb": round(max(s["rss_kb"] for s in post) / 1024, 1),
            "rss_min_after_warm_mb": round(min(s["rss_kb"] for s in post) / 1024, 1),
            "rss_slope_mb_per_h": None if slope is None else round(slope, 2),
            "hwm_end_mb": round(end["hwm_kb"] / 1024, 1),
            "fds_min": min(s["fds"] for s in S), "fds_max": max(s["fds"] for s in S),
            "fds_after_warm_first": fd_first, "fds_end": fd_last,
            "fds_non_backend_after_warm": nb_first, "fds_non_backend_end": nb_last,
            "fd_backend_first_half_max": be_first_half_max, "fd_backend_end": be_last,
            "fd_backend_max": max(s["fd_backend"] for s in S),
            "threads_min": min(s["threads"] for s in S), "threads_max": max(s["threads"] for s in S),
            "p50_ms": None if hq(50) is None else round(hq(50) * 1000, 2),
            "p99_ms": None if hq(99) is None else round(hq(99) * 1000, 2),
            "p999_ms": None if hq(99.9) is None else round(hq(99.9) * 1000, 2),
            "interval_p99_ms_min_median_max": [min(p99s), med(p99s), max(p99s)] if p99s else None,
            "max_ms": max(s["max_ms"] for s in S if s["max_ms"] is not None),
            "cg_cpu_pct_median": med([s["cg_cpu_pct"] for s in S]),
            "store_errors": end["store_errors"],
            "redis_keys_end": end["redis_keys"], "redis_used_mb_end": None if end["redis_used_kb"] is None else round(end["redis_used_kb"] / 1024, 1),
            "loadavg_min_max": [min(float(s["loadavg"]) for s in S), max(float(s["loadavg"]) for s in S)],
            "cachegate_log": {kk: v for kk, v in lf.items() if kk != "first"},
            "cachegate_log_first_lines": lf["first"],
            "failures": self.failures,
            "checks": {"rss_flat": rss_ok, "fds_not_growing": fd_ok, "zero_errors": err_ok},
        }
        (self.run_dir / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
        text = self.render(summary)
        (self.run_dir / "summary.md").write_text(text)
        print("\n" + text, flush=True)
        return 0 if verdict == "PASS" else 1

    def render(self, s: dict) -> str:
        k = self.k
        L = []
        w = L.append
        w(f"# cachegate soak: {s['verdict']}\n")
        w(f"{time.strftime('%Y-%m-%d %H:%M')}, {s['duration_s']} s at {k.rate:g} req/s (achieved "
          f"{s['achieved_rps']:g}) over {k.conns} keep-alive connections; mix {s['mix']}; working set "
          f"{k.hot} tasks (TTL {k.task_ttl} s), list pages TTL {k.list_ttl} s, short-TTL rule {k.short_ttl} s; "
          f"a sample every {k.sample} s, warm-up {k.warmup} s. Processes not pinned and not niced, on a "
          f"{os.cpu_count()}-core machine shared with other work (load average {s['loadavg_min_max'][0]:g}–"
          f"{s['loadavg_min_max'][1]:g} during the run).\n")
        w(f"Binary: {s['binary']}; {self.conf_note}.\n")
        w("| check | figure | verdict |")
        w("|---|---|---|")
        w(f"| RSS flat after warm-up (growth < {k.rss_limit_pct:g} %) | {s['rss_warm_mb']} MB at {s['rss_warm_at_s']} s → "
          f"{s['rss_end_mb']} MB at the end: {s['rss_growth_mb']:+} MB ({s['rss_growth_pct']:+.1f} %); "
          f"min/max after warm-up {s['rss_min_after_warm_mb']}/{s['rss_max_after_warm_mb']} MB; "
          f"slope {s['rss_slope_mb_per_h']} MB/h; VmHWM {s['hwm_end_mb']} MB | "
          f"{'PASS' if s['checks']['rss_flat'] else 'FAIL'} |")
        w(f"| fds not growing (end − after warm-up ≤ {k.fd_slack}; or: non-backend fds so, and backend pool "
          f"connections at the end ≤ their max over the first half after warm-up + {k.fd_slack}) | "
          f"{s['fds_after_warm_first']} after warm-up → {s['fds_end']} at the end (medians of 3 samples); "
          f"min {s['fds_min']}, max {s['fds_max']}; without backend connections {s['fds_non_backend_after_warm']} → "
          f"{s['fds_non_backend_end']}; backend connections {s['fd_backend_end']} at the end, "
          f"max {s['fd_backend_first_half_max']} over the first half, {s['fd_backend_max']} overall | "
          f"{'PASS' if s['checks']['fds_not_growing'] else 'FAIL'} |")
        w(f"| zero errors | {s['errors']} errors in {s['requests']:,} requests {s['error_kinds'] or ''}; "
          f"cachegate log: {s['cachegate_log']['warn']} WARN, {s['cachegate_log']['error']} ERROR, "
          f"{s['cachegate_log']['panic']} panics{'; ' + '; '.join(s['failures']) if s['failures'] else ''} | "
          f"{'PASS' if s['checks']['zero_errors'] else 'FAIL'} |")
        w("")
        w(f"- requests: {s['requests']:,} ({s['ops']}); statuses {s['statuses']}; X-Cache {s['x_cache']} "
          f"({s['hit_pct_of_cached_routes']} % HIT of answers through a rule)")
        ip = s["interval_p99_ms_min_median_max"]
        w(f"- latency over the run: p50 {s['p50_ms']} ms, p99 {s['p99_ms']} ms, p99.9 {s['p999_ms']} ms, "
          f"max {s['max_ms']} ms; per-interval p99 min/median/max {ip[0]}/{ip[1]}/{ip[2]} ms")
        w(f"- threads {s['threads_min']}–{s['threads_max']}; cachegate CPU median {s['cg_cpu_pct_median']} % of a core; "
          f"store errors {s['store_errors']:g}; Redis at the end {s['redis_keys_end']} keys, {s['redis_used_mb_end']} MB; "
          f"late sends skipped {s['late_sends_skipped']}")
        if s["error_samples"]:
            w(f"- first errors: {s['error_samples'][:5]}")
        w("\n## Samples\n")
        w("| t (s) | req/s | errors | hit % (/metrics) | p50 ms | p99 ms | max ms | PUT p99 ms | RSS MB | HWM MB | fds | fds client/backend/redis/other | threads | cachegate CPU % | Redis MB | Redis keys | load avg |")
        w("|" + "---:|" * 17)
        for x in self.samples:
            w(f"| {x['t_s']} | {x['rps']:.0f} | {x['errors']} | {x['metrics_hit_pct']} | {x['p50_ms']} | {x['p99_ms']} | "
              f"{x['max_ms']} | {x['put_p99_ms']} | {mb(x['rss_kb'])} | {mb(x['hwm_kb'])} | {x['fds']} | "
              f"{x['fd_client']}/{x['fd_backend']}/{x['fd_redis']}/{x['fd_other']} | {x['threads']} | "
              f"{x['cg_cpu_pct']} | {mb(x['redis_used_kb'])} | {x['redis_keys']} | {x['loadavg']} |")
        w("\n## Commands\n")
        w("```")
        L.extend(self.d.commands)
        w("```")
        return "\n".join(L) + "\n"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--bin", required=True)
    ap.add_argument("--run-dir", required=True)
    a = ap.parse_args()

    def on_term(signum, _frame):
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGHUP, on_term)
    s = Soak(a)
    try:
        return s.run()
    except KeyboardInterrupt:
        return 130
    except RuntimeError as e:
        log(f"ERROR: {e}")
        return 2
    finally:
        if s.load is not None:
            s.load._stop = True
        s.d.stop_all()


if __name__ == "__main__":
    sys.exit(main())
