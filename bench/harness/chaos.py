#!/usr/bin/env python3
"""bench/chaos.sh's orchestrator (stdlib only): faults under load.

Starts a private redis-server, the task API (taskapi.py) and cachegate, puts
a steady load on it (mostly hits; every answer checked, including that no
GET sent after a PUT's answer shows an older version), then, one after the
other, with CHAOS_PHASE_SECONDS of steady load before and after each:

1. Redis SIGKILLed for REDIS_DOWN_SECONDS, then restarted on the same port:
   zero client errors; caching (HIT answers, no more BYPASS) back within
   RESUME_LIMIT_S of Redis answering PING again.
2. Redis paused (SIGSTOP) for PAUSE_SECONDS, then SIGCONT: no request waits
   longer than the store timeout plus the backend's time (the slowest
   forwarded request of the steady load before the pause); zero errors;
   caching back within RESUME_LIMIT_S of SIGCONT.
3. The backend SIGKILLed for BACKEND_DOWN_SECONDS (load: reads only, every
   entry warmed first): hits still served, expired entries of the
   stale-if-error rule served STALE, never-seen ids (probes) answered 502 JSON
   within the connect timeout; after the restart, probes get 200 again.
4. The backend slowed past [backend] timeout_ms (its latency knob) for
   SLOW_SECONDS: probes answered 504 JSON at timeout_ms, hits unaffected;
   after, probes 200 again at normal latency (the pool recovers).

Prints per-phase figures with PASS/FAIL, writes summary.md, summary.json,
records.csv.gz (every answer) and probes.csv into the run directory.
"""
from __future__ import annotations

import argparse
import csv
import gzip
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

NORMAL_MIX = {"hot": 88, "cold": 3, "short": 3, "list": 3, "put": 3}
READS_MIX = {"hot": 94, "short": 3, "list": 3}


class Knobs:
    def __init__(self) -> None:
        e, f = lm.env_int, lm.env_float
        self.rate = f("CHAOS_RATE", 2000)
        self.conns = e("CHAOS_CONNS", 128)
        self.phase = f("CHAOS_PHASE_SECONDS", 10)
        self.redis_down = f("REDIS_DOWN_SECONDS", 5)
        self.pause = f("PAUSE_SECONDS", 3)
        self.backend_down = f("BACKEND_DOWN_SECONDS", 5)
        self.slow = f("SLOW_SECONDS", 5)
        self.hot = e("HOT", 1000)
        self.short_ids = e("SHORT_IDS", 50)
        self.short_ttl = e("SHORT_TTL", 1)
        self.stale_if_error = e("STALE_IF_ERROR", 60)
        self.backend_timeout_ms = e("BACKEND_TIMEOUT_MS", 2000)
        self.connect_timeout_ms = e("CONNECT_TIMEOUT_MS", 1000)
        self.store_timeout_ms = e("STORE_TIMEOUT_MS", 100)
        self.slow_ms = e("SLOW_MS", self.backend_timeout_ms + 500)
        self.timeout_slack_ms = e("TIMEOUT_SLACK_MS", 300)
        self.resume_limit = f("RESUME_LIMIT_S", 1.0)
        self.db_latency_ms = f("DB_LATENCY_MS", 1)
        self.port_base = e("PORT_BASE", 19240)
        self.probe_rate = f("PROBE_RATE", 20)
        self.phases = [int(x) for x in os.environ.get("PHASES", "1,2,3,4").split(",") if x.strip()]
        self.server_cpu = os.environ.get("SERVER_CPU", "")


def r3(x):
    return None if x is None else round(x, 3)


def ms(x):
    return None if x is None else round(x * 1000, 1)


class Chaos:
    def __init__(self, a: argparse.Namespace):
        self.k = Knobs()
        self.bin = a.bin
        self.run_dir = Path(a.run_dir)
        self.d = lm.Daemons(self.run_dir, self.k.server_cpu)
        b = self.k.port_base
        self.P = {"redis": b, "backend": b + 1, "cachegate": b + 2}
        self.token = secrets.token_hex(24)
        self.load: lm.Load | None = None
        self.events: list[tuple[float, str]] = []
        self.phases: list[dict] = []
        self.failures: list[str] = []

    # ------------------------------------------------------------ helpers
    def ev(self, what: str) -> float:
        t = time.monotonic()
        self.events.append((t, what))
        log(what)
        return t

    def start_redis(self) -> None:
        data = self.run_dir / "cwd" / "redis"
        data.mkdir(parents=True, exist_ok=True)
        self.d.start("redis", ["redis-server", "--bind", "127.0.0.1", "--port", str(self.P["redis"]),
                               "--save", "", "--appendonly", "no", "--dir", str(data),
                               "--protected-mode", "yes"])

    def start_backend(self) -> None:
        # --state: the task versions survive the backend's SIGKILL (as a database would)
        self.d.start("backend", [sys.executable, str(lm.HERE / "taskapi.py"), "--port", str(self.P["backend"]),
                                 "--db-latency-ms", str(self.k.db_latency_ms),
                                 "--state", str(self.run_dir / "backend-versions.txt")])

    def backend_ctl(self, path: str, method: str = "GET") -> dict:
        st, _, body = lm.http_get(self.P["backend"], path, method=method)
        return json.loads(body)

    def setup(self) -> None:
        k, P = self.k, self.P
        for n, p in P.items():
            if not lm.port_free(p):
                raise RuntimeError(f"port {p} ({n}) is in use by a process this run did not start; "
                                   "free it or set PORT_BASE")
        self.start_redis()
        lm.wait_until("PING", lambda: lm.redis_ping(P["redis"]), self.d, "redis")
        self.start_backend()
        lm.wait_until("/healthz", lambda: lm.http_ok(P["backend"], "/healthz"), self.d, "backend")
        conf = self.run_dir / "cachegate.toml"
        conf.write_text(lm.cachegate_conf("chaos:", 600, 600, k.short_ttl, k.stale_if_error,
                                          backend_timeout_ms=k.backend_timeout_ms,
                                          connect_timeout_ms=k.connect_timeout_ms,
                                          store_timeout_ms=k.store_timeout_ms))
        env = {"CACHEGATE_LISTEN": f"127.0.0.1:{P['cachegate']}",
               "CACHEGATE_BACKEND": f"http://127.0.0.1:{P['backend']}",
               "REDIS_URL": f"redis://127.0.0.1:{P['redis']}/0",
               "CACHEGATE_BENCH_TOKEN": self.token}
        self.conf_note = lm.write_conf(self.bin, conf, conf.read_text(), env)
        log(self.conf_note)
        self.d.start("cachegate", [self.bin, "--config", str(conf), "--log", "info"], env)
        lm.wait_until("/readyz", lambda: lm.http_ok(P["cachegate"], "/readyz"), self.d, "cachegate")
        log(f"up: redis :{P['redis']}, task API :{P['backend']}, cachegate :{P['cachegate']}")

    def warm(self) -> None:
        t = time.monotonic()
        bad = lm.warm(self.P["cachegate"], self.k.hot, self.k.short_ids)
        log(f"warm pass: {time.monotonic() - t:.1f} s, {bad} non-200")
        if bad:
            self.failures.append(f"warm pass: {bad} non-200 answers")

    def wait(self, s: float) -> None:
        end = time.monotonic() + s
        while time.monotonic() < end:
            time.sleep(min(0.05, max(0.0, end - time.monotonic())))
            if not self.d.alive("cachegate"):
                raise RuntimeError(f"cachegate exited (status {self.d.procs['cachegate'].poll()})")

    def recs(self) -> list[tuple]:
        return self.load.snapshot_records()

    @staticmethod
    def sent_in(recs, t0, t1):
        return [r for r in recs if t0 <= r[0] <= t1]

    @staticmethod
    def overlapping(recs, t0, t1):
        return [r for r in recs if r[0] <= t1 and r[0] + r[1] >= t0]

    @staticmethod
    def summary_of(recs, dur: float | None = None) -> dict:
        if not recs:
            return {"requests": 0}
        lat = [r[1] for r in recs]
        return {"requests": len(recs), **({"req_per_s": round(len(recs) / dur)} if dur else {}), "errors": sum(1 for r in recs if r[6] and not r[6].startswith("stale")),
                "stale": sum(1 for r in recs if r[6].startswith("stale")),
                "x_cache": dict(Counter(r[4] or "-" for r in recs)),
                "status": {str(a): b for a, b in Counter(r[3] for r in recs).items()},
                "p50_ms": ms(lm.pct(lat, 50)), "p99_ms": ms(lm.pct(lat, 99)), "max_ms": ms(max(lat))}

    def resume(self, recs, t_back: float) -> dict:
        """How caching came back after t_back: first HIT, first stored fill, last BYPASS
        (send times, seconds after t_back), and when HITs were again >= 50 % of working-set GETs."""
        after = sorted((r for r in recs if r[0] >= t_back), key=lambda r: r[0])
        first_hit = next((r[0] - t_back for r in after if r[4] == "HIT"), None)
        first_stored = next((r[0] - t_back for r in after if r[5]), None)
        first_cached = next((r[0] - t_back for r in after if r[4] in ("HIT", "MISS", "STALE")), None)
        bypass = [r[0] - t_back for r in after if r[4] == "BYPASS"]
        last_bypass = max(bypass) if bypass else None
        half = None
        bins: dict[int, Counter] = {}
        for r in after:
            if r[2] == "hot":
                bins.setdefault(int((r[0] - t_back) * 10), Counter())[r[4]] += 1
        for b in sorted(bins):
            c = bins[b]
            if c["HIT"] * 2 >= sum(c.values()):
                half = b / 10
                break
        # caching resumed = the first answer that went through the store again; BYPASS
        # answers after that (the store marked down again for a moment) are counted apart
        resumed = first_cached
        later = [b for b in bypass if resumed is not None and b > resumed]
        return {"first_hit_s": r3(first_hit), "first_stored_s": r3(first_stored),
                "first_not_bypass_s": r3(first_cached), "last_bypass_s": r3(last_bypass),
                "bypass_after": len(bypass), "bypass_after_resume": len(later),
                "hits_50pct_s": half, "resumed_s": r3(resumed)}

    def errors_in(self, recs, t0, t1, stale: bool = False) -> tuple[int, list]:
        """Errors (wrong status, connection, bad body) among requests sent in [t0, t1];
        with stale=True the stale answers (older than a PUT answered before) instead."""
        bad = [r for r in self.sent_in(recs, t0, t1) if r[6] and r[6].startswith("stale") == stale]
        return len(bad), [(round(r[0] - self.t_start, 3), r[2], r[7], r[3], r[4], r[6]) for r in bad[:6]]

    def stale_after(self, recs, t0: float) -> dict:
        st = [r for r in recs if r[0] >= t0 and r[6].startswith("stale")]
        return {"answers": len(st), "tasks": len({r[7] for r in st if r[2] != "list"}),
                "lists": len({r[7] for r in st if r[2] == "list"}),
                "first_s": r3(min(r[0] for r in st) - t0) if st else None,
                "last_s": r3(max(r[0] for r in st) - t0) if st else None,
                "x_cache": dict(Counter(r[4] for r in st))}

    def scan(self, label: str) -> dict:
        """No writes for a moment; compare every cached task/list with the backend; clear the
        cache if anything is stale, so the next phase starts clean."""
        mix = self.load.mix
        self.load.set_mix(READS_MIX)
        self.wait(0.5)
        res = lm.stale_scan(self.P["cachegate"], self.P["backend"], self.k.hot, self.k.short_ids)
        log(f"{label}: stale scan: {res['stale']} stale of {res['checked']} answers "
            f"({res['stale_tasks']} tasks) {res['samples'][:3]}")
        if res["stale"]:
            st, _, body = lm.http_get(self.P["cachegate"], "/api/v1/cache/clear", method="DELETE",
                                      headers={"authorization": f"Bearer {self.token}"}, timeout=30)
            res["cleared"] = f"{st} {body.decode(errors='replace')[:200]}"
            self.ev(f"{label}: cache cleared (DELETE /api/v1/cache/clear) so the next phase starts clean: {res['cleared']}")
        self.load.set_mix(mix)
        return res

    def direct_probe(self, n: int = 20) -> dict:
        """n GETs of never-seen ids, one after the other, right now."""
        out = []
        for _ in range(n):
            self.load.cold_next += 1
            t = time.monotonic()
            try:
                st, _, _ = lm.http_get(self.P["cachegate"], f"/api/v1/tasks/{self.load.cold_next + 5 * 10**8}",
                                       timeout=10)
            except OSError:
                st = 0
            out.append((st, time.monotonic() - t))
        return {"status": {str(a): b for a, b in Counter(x[0] for x in out).items()},
                "max_ms": ms(max(x[1] for x in out)), "p50_ms": ms(lm.pct([x[1] for x in out], 50)),
                "ok": all(x[0] == 200 for x in out)}

    def store_log(self, t0: float, t1: float) -> list:
        """cachegate's store up/down lines between t0 and t1 (monotonic), as (s from t0, text)."""
        out = []
        for l in lm.log_lines(self.run_dir / "logs" / "cachegate.log"):
            if "cachegate::store" not in l:
                continue
            try:
                ts = time.mktime(time.strptime(l[:19], "%Y-%m-%dT%H:%M:%S")) - time.timezone + float("0" + l[19:26].rstrip("Z"))
            except ValueError:
                continue
            tm = ts - self.wall_off
            if t0 - 0.5 <= tm <= t1:
                out.append((r3(tm - t0), l.split("cachegate::store:", 1)[1].strip()[:90]))
        return out

    def rel(self, t: float) -> float:
        return round(t - self.t_start, 3)

    # ------------------------------------------------------------ phases
    def phase_redis_kill(self) -> dict:
        k = self.k
        self.wait(k.phase)
        t_kill = self.ev("phase 1: SIGKILL redis-server")
        self.d.kill("redis")
        self.wait(k.redis_down)
        t_restart = self.ev("phase 1: restarting redis-server on the same port")
        self.start_redis()
        t_back = lm.wait_until("PING", lambda: lm.redis_ping(self.P["redis"]), self.d, "redis")
        self.events.append((t_back, "phase 1: redis answers PING"))
        log(f"phase 1: redis back {t_back - t_restart:.2f} s after the restart")
        self.wait(k.phase)
        recs = self.recs()
        n_err, samples = self.errors_in(recs, t_kill - 1, t_back + k.phase)
        n_stale, stale_samples = self.errors_in(recs, t_kill - 1, t_back + k.phase, stale=True)
        res = self.resume(recs, t_back)
        down = self.summary_of(self.sent_in(recs, t_kill, t_back), t_back - t_kill)
        after = self.summary_of(self.sent_in(recs, t_back, t_back + k.phase), k.phase)
        scan = self.scan("phase 1")
        checks = {"zero client errors": n_err == 0,
                  "no stale answers (a GET after a completed PUT shows it)": n_stale == 0 and scan["stale"] == 0,
                  f"caching back within {k.resume_limit:g} s of Redis answering": res["resumed_s"] is not None
                  and res["resumed_s"] <= k.resume_limit}
        return {"phase": 1, "name": f"Redis SIGKILL {k.redis_down:g} s, restart", "t_kill": self.rel(t_kill),
                "t_restart": self.rel(t_restart), "t_back": self.rel(t_back), "errors": n_err,
                "error_samples": samples, "stale": n_stale, "stale_samples": stale_samples, "scan": scan,
                "while_down": down, "after": after, "resume": res,
                "store_log": self.store_log(t_kill, t_back + k.phase), "checks": checks}

    def phase_redis_pause(self) -> dict:
        k = self.k
        # the backend's own time, measured straight (not through cachegate) all along
        self.load.direct(True, self.P["backend"])
        self.wait(k.phase)
        t_stop = self.ev("phase 2: SIGSTOP redis-server")
        self.d.signal("redis", signal.SIGSTOP)
        self.wait(k.pause)
        t_cont = self.ev("phase 2: SIGCONT redis-server")
        self.d.signal("redis", signal.SIGCONT)
        self.wait(k.phase)
        self.load.direct(False)
        recs = self.recs()
        # the backend's time: the slowest forwarded request (miss, bypass, PUT) of the
        # steady load before the pause, as the client saw it (cachegate + backend)
        base = [r for r in self.sent_in(recs, t_stop - k.phase, t_stop - 0.2)
                if r[4] in ("MISS", "BYPASS") or r[2] == "put"]
        backend_max = max((r[1] for r in base), default=0.0)
        backend_p99 = lm.pct([r[1] for r in base], 99) or 0.0
        # during the pause every request goes to the backend: its time there, measured directly
        direct = [d for d in list(self.load.direct_records) if d[0] <= t_cont and d[0] + d[1] >= t_stop]
        direct_max = max((d[1] for d in direct), default=0.0)
        # p99, not max, of the steady load before: one outlier there must not widen the bound
        bound = k.store_timeout_ms / 1000 + max(backend_p99, direct_max)
        hit = self.overlapping(recs, t_stop, t_cont)
        by_op = {}
        for op in sorted({r[2] for r in hit}):
            rs = [r for r in hit if r[2] == op]
            by_op[op] = {"requests": len(rs), "max_ms": ms(max(r[1] for r in rs)),
                         "p99_ms": ms(lm.pct([r[1] for r in rs], 99)),
                         "over_bound": sum(1 for r in rs if r[1] > bound),
                         "x_cache": dict(Counter(r[4] or "-" for r in rs))}
        worst = max(hit, key=lambda r: r[1]) if hit else None
        over = [r for r in hit if r[1] > bound]
        n_err, samples = self.errors_in(recs, t_stop - 1, t_cont + k.phase)
        n_stale, stale_samples = self.errors_in(recs, t_stop - 1, t_cont + k.phase, stale=True)
        stale_after = self.stale_after(recs, t_cont)
        res = self.resume(recs, t_cont)
        store_log = self.store_log(t_stop, t_cont + k.phase)
        scan = self.scan("phase 2")
        reads_over = [r for r in over if r[2] != "put"]
        checks = {"zero client errors": n_err == 0,
                  "no stale answers (a GET after a completed PUT shows it)": n_stale == 0 and scan["stale"] == 0,
                  "no read longer than store timeout + backend time": not reads_over,
                  "no PUT longer than store timeout + backend time": not [r for r in over if r[2] == "put"],
                  f"caching back within {k.resume_limit:g} s of SIGCONT": res["resumed_s"] is not None
                  and res["resumed_s"] <= k.resume_limit}
        return {"phase": 2, "name": f"Redis SIGSTOP {k.pause:g} s, SIGCONT", "t_stop": self.rel(t_stop),
                "t_cont": self.rel(t_cont), "errors": n_err, "error_samples": samples,
                "stale": n_stale, "stale_samples": stale_samples, "stale_after_sigcont": stale_after, "scan": scan,
                "store_log": store_log,
                "baseline_forwarded": len(base), "backend_time_max_ms": ms(backend_max),
                "backend_time_p99_ms": ms(backend_p99), "store_timeout_ms": k.store_timeout_ms,
                "backend_direct_during_pause": {"requests": len(direct), "max_ms": ms(direct_max),
                                                "p50_ms": ms(lm.pct([d[1] for d in direct], 50))},
                "bound_ms": ms(bound), "during": self.summary_of(hit, t_cont - t_stop), "during_by_op": by_op,
                "over_bound": len(over),
                "worst": None if worst is None else {"op": worst[2], "arg": worst[7], "latency_ms": ms(worst[1]),
                                                     "sent_s_after_stop": r3(worst[0] - t_stop),
                                                     "x_cache": worst[4], "status": worst[3]},
                "over_bound_samples": [(r[2], r[7], ms(r[1]), r3(r[0] - t_stop), r[4]) for r in
                                       sorted(over, key=lambda r: -r[1])[:10]],
                "resume": res, "after": self.summary_of(self.sent_in(recs, t_cont, t_cont + k.phase)),
                "checks": checks}

    def probes_between(self, t0, t1) -> list[tuple]:
        return [p for p in list(self.load.probe_records) if t0 <= p[0] <= t1]

    @staticmethod
    def probe_summary(ps) -> dict:
        if not ps:
            return {"probes": 0}
        lat = [p[1] for p in ps]
        return {"probes": len(ps), "status": {str(a): b for a, b in Counter(p[2] for p in ps).items()},
                "error_codes": dict(Counter(p[4] for p in ps if p[4])),
                "min_ms": ms(min(lat)), "p50_ms": ms(lm.pct(lat, 50)), "max_ms": ms(max(lat))}

    def reads_only(self) -> float:
        self.load.set_mix(READS_MIX)
        self.ev("load: reads only (no PUTs, no never-seen ids); warming every entry")
        self.wait(1.0)
        self.warm()
        return time.monotonic()

    def phase_backend_down(self) -> dict:
        k = self.k
        self.wait(k.phase)
        self.reads_only()
        self.wait(1.0)
        t_kill = self.ev("phase 3: SIGKILL the backend; probes (never-seen ids) on")
        self.d.kill("backend")
        self.load.probes(True, 502, k.probe_rate)
        self.wait(k.backend_down)
        t_restart = self.ev("phase 3: restarting the backend")
        self.start_backend()
        t_back = lm.wait_until("/healthz", lambda: lm.http_ok(self.P["backend"], "/healthz"), self.d, "backend")
        self.events.append((t_back, "phase 3: backend answers /healthz"))
        direct = self.direct_probe()
        self.wait(k.phase)
        self.load.probes(False)
        self.load.set_mix(NORMAL_MIX)
        self.ev("load: normal mix again")
        recs = self.recs()
        n_err, samples = self.errors_in(recs, t_kill, t_back + k.phase)
        down = self.sent_in(recs, t_kill, t_restart)
        short = [r for r in down if r[2] == "short"]
        p_down = self.probes_between(t_kill, t_restart)
        p_after = sorted(self.probes_between(t_back, t_back + k.phase))
        first_ok = next((p[0] - t_back for p in p_after if p[2] == 200), None)
        late_bad = [p for p in p_after if p[0] > t_back + 0.05 and p[2] != 200]
        ok502 = all(p[2] == 502 and p[4] == "bad_gateway" for p in p_down)
        quick = max((p[1] for p in p_down), default=0.0) < k.connect_timeout_ms / 1000
        checks = {"zero client errors (hits and stale served)": n_err == 0,
                  "expired stale-if-error entries served STALE": any(r[4] == "STALE" for r in short),
                  "uncached ids: 502 JSON (bad_gateway)": bool(p_down) and ok502,
                  "502 within the connect timeout": bool(p_down) and quick,
                  "back to 200 at once when the backend is back": direct["ok"] and first_ok is not None
                  and first_ok <= 1.0 and not late_bad}
        return {"phase": 3, "name": f"backend SIGKILL {k.backend_down:g} s, restart", "t_kill": self.rel(t_kill),
                "t_restart": self.rel(t_restart), "t_back": self.rel(t_back), "errors": n_err,
                "error_samples": samples, "while_down": self.summary_of(down),
                "short_while_down": self.summary_of(short), "probes_while_down": self.probe_summary(p_down),
                "probes_after": self.probe_summary(p_after), "first_probe_200_s": r3(first_ok),
                "probes_not_200_after": len(late_bad), "connect_timeout_ms": k.connect_timeout_ms,
                "direct_after": direct,
                "checks": checks}

    def phase_backend_slow(self) -> dict:
        k = self.k
        self.wait(k.phase)
        self.reads_only()
        self.wait(1.0)
        conns_before = self.backend_ctl("/_ctl/stats")["open_connections"]
        t_slow = self.ev(f"phase 4: backend slowed by {k.slow_ms} ms (timeout_ms {k.backend_timeout_ms}); probes on")
        self.backend_ctl(f"/_ctl/delay?ms={k.slow_ms}", "POST")
        self.load.probes(True, 504, k.probe_rate)
        self.wait(k.slow)
        t_fast = self.ev("phase 4: backend fast again")
        self.backend_ctl("/_ctl/delay?ms=0", "POST")
        direct = self.direct_probe()
        self.wait(k.phase)
        self.load.probes(False)
        conns_after = self.backend_ctl("/_ctl/stats")["open_connections"]
        self.load.set_mix(NORMAL_MIX)
        self.ev("load: normal mix again")
        recs = self.recs()
        n_err, samples = self.errors_in(recs, t_slow, t_fast + k.phase)
        slow_recs = self.sent_in(recs, t_slow, t_fast)
        short = [r for r in slow_recs if r[2] == "short"]
        hot = [r for r in slow_recs if r[2] == "hot"]
        timeout = k.backend_timeout_ms / 1000
        # probes that reached the backend while it was slow, and would have been answered after the timeout
        p_slow = self.probes_between(t_slow + 0.05, t_fast - k.slow_ms / 1000 + timeout - 0.05)
        p_after = sorted(self.probes_between(t_fast, t_fast + k.phase))
        first_ok = next((p[0] - t_fast for p in p_after if p[2] == 200), None)
        late = [p for p in p_after if p[0] > t_fast + 0.05]
        late_bad = [p for p in late if p[2] != 200]
        short_slow = [r for r in short if r[1] > timeout + k.timeout_slack_ms / 1000]
        ok504 = all(p[2] == 504 and p[4] == "gateway_timeout" for p in p_slow)
        at_timeout = all(timeout <= p[1] <= timeout + k.timeout_slack_ms / 1000 for p in p_slow)
        late_p99 = lm.pct([p[1] for p in late], 99)
        checks = {"zero client errors (hits served)": n_err == 0,
                  "uncached ids: 504 JSON (gateway_timeout)": bool(p_slow) and ok504,
                  f"504 at timeout_ms (within +{k.timeout_slack_ms} ms)": bool(p_slow) and at_timeout,
                  "pool recovers: 200 at once, p99 < 100 ms after": direct["ok"] and direct["max_ms"] < 100
                  and not late_bad and late_p99 is not None and late_p99 < 0.1}
        return {"phase": 4, "name": f"backend slowed {k.slow_ms} ms for {k.slow:g} s (timeout_ms {k.backend_timeout_ms})",
                "t_slow": self.rel(t_slow), "t_fast": self.rel(t_fast), "errors": n_err, "error_samples": samples,
                "hot_while_slow": self.summary_of(hot), "short_while_slow": self.summary_of(short),
                "probes_while_slow": self.probe_summary(p_slow), "probes_after": self.probe_summary(p_after),
                "first_probe_200_s": r3(first_ok), "probes_not_200_after": len(late_bad),
                "probe_p99_after_ms": ms(late_p99), "direct_after": direct,
                "short_over_timeout": len(short_slow),
                "short_over_timeout_samples": [(r[7], ms(r[1]), r3(r[0] - t_slow), r[4]) for r in
                                               sorted(short_slow, key=lambda r: -r[1])[:6]],
                "backend_open_connections_before_after": [conns_before, conns_after],
                "checks": checks}

    # ------------------------------------------------------------ run
    def run(self) -> int:
        k = self.k
        self.setup()
        self.warm()
        self.load = lm.Load(self.P["cachegate"], k.rate, k.conns, k.hot, NORMAL_MIX, self.token,
                            timeout=30.0, record_all=True, short_ids=k.short_ids, seed=7)
        self.t_start = time.monotonic()
        self.wall_off = time.time() - time.monotonic()
        log(f"load: {k.rate:g} req/s over {k.conns} connections, mix {NORMAL_MIX}; phases {k.phases}, "
            f"{k.phase:g} s of steady load around each")
        self.load.start()
        cpu0 = lm.proc_sample(self.d.pid("cachegate"))["cpu_s"]
        fns = {1: self.phase_redis_kill, 2: self.phase_redis_pause, 3: self.phase_backend_down,
               4: self.phase_backend_slow}
        try:
            for p in k.phases:
                res = fns[p]()
                self.phases.append(res)
                self.print_phase(res)
            self.wait(k.phase)
        except RuntimeError as e:
            self.failures.append(str(e))
            log(f"FAILED: {e}")
        self.load.stop()
        self.t_end = time.monotonic()
        return self.report(cpu0)

    def binary_id(self) -> str:
        try:
            lines = (self.run_dir / "binary.txt").read_text().splitlines()
            src = lines[0].split(": ", 1)[1]
            sha = lines[1].split()[0]
            built = next((l.split(": ", 1)[1] for l in lines if l.startswith("built: ")), "?")
            return f"{src} (built {built}; sha256 {sha[:16]}…)"
        except (OSError, IndexError):
            return self.bin

    def print_phase(self, p: dict) -> None:
        ok = all(p["checks"].values())
        log(f"phase {p['phase']} ({p['name']}): {'PASS' if ok else 'FAIL'}")
        for c, v in p["checks"].items():
            log(f"    {'ok  ' if v else 'FAIL'} {c}")

    def report(self, cpu0: float) -> int:
        k = self.k
        recs = self.load.records
        tot = self.summary_of(recs)
        dur = self.t_end - self.t_start
        errs = [r for r in recs if r[6]]
        alive = self.d.alive("cachegate")
        pr = lm.proc_sample(self.d.pid("cachegate")) if alive else {}
        try:
            cc = lm.cache_counts(self.P["cachegate"])
        except Exception:
            cc = {}
        logtext = lm.log_lines(self.run_dir / "logs" / "cachegate.log")
        warn = [l for l in logtext if " WARN " in l or " ERROR " in l]
        panics = [l for l in logtext if "panicked" in l]
        all_ok = (not self.failures and alive and not panics and not errs
                  and all(all(p["checks"].values()) for p in self.phases)
                  and len(self.phases) == len(k.phases))
        summary = {
            "verdict": "PASS" if all_ok else "FAIL",
            "knobs": {kk: v for kk, v in vars(k).items()},
            "binary": self.binary_id(),
            "duration_s": round(dur, 1), "requests": tot.get("requests", 0),
            "achieved_rps": round(tot.get("requests", 0) / dur, 1) if dur else None,
            "late_sends_skipped": self.load.total.behind,
            "whole_run": tot, "errors_total": len(errs),
            "stale_total": sum(1 for r in errs if r[6].startswith("stale")),
            "error_samples": [(self.rel(r[0]), r[2], r[7], r[3], r[4], r[6]) for r in errs[:20]],
            "phases": self.phases,
            "cachegate": {"alive_at_end": alive, "rss_mb": round(pr.get("VmRSS", 0) / 1024, 1),
                          "hwm_mb": round(pr.get("VmHWM", 0) / 1024, 1), "fds": pr.get("fds"),
                          "threads": pr.get("Threads"),
                          "cpu_pct": round(100 * (pr.get("cpu_s", cpu0) - cpu0) / dur, 1) if dur else None,
                          "metrics": cc, "log_warn_error_lines": len(warn), "log_panics": len(panics),
                          "log_warn_first": warn[:12]},
            "events": [(self.rel(t), w) for t, w in self.events],
            "failures": self.failures,
        }
        (self.run_dir / "summary.json").write_text(json.dumps(summary, indent=2, default=str) + "\n")
        with gzip.open(self.run_dir / "records.csv.gz", "wt", newline="") as f:
            w = csv.writer(f)
            w.writerow(["t_send_s", "latency_ms", "op", "arg", "status", "x_cache", "stored", "error"])
            for r in recs:
                w.writerow([f"{r[0] - self.t_start:.4f}", f"{r[1] * 1000:.2f}", r[2], r[7], r[3], r[4],
                            int(r[5]), r[6]])
        with open(self.run_dir / "direct.csv", "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["t_send_s", "latency_ms", "status"])
            for d in self.load.direct_records:
                w.writerow([f"{d[0] - self.t_start:.4f}", f"{d[1] * 1000:.2f}", d[2]])
        with open(self.run_dir / "probes.csv", "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["t_send_s", "latency_ms", "status", "x_cache", "error"])
            for p in self.load.probe_records:
                w.writerow([f"{p[0] - self.t_start:.4f}", f"{p[1] * 1000:.2f}", p[2], p[3], p[4]])
        text = self.render(summary)
        (self.run_dir / "summary.md").write_text(text)
        print("\n" + text, flush=True)
        return 0 if all_ok else 1

    def render(self, s: dict) -> str:
        k = self.k
        L: list[str] = []
        w = L.append
        w(f"# cachegate chaos run: {s['verdict']}\n")
        w(f"{time.strftime('%Y-%m-%d %H:%M')}; {s['duration_s']} s of load at {k.rate:g} req/s asked "
          f"({s['achieved_rps']} achieved) over {k.conns} keep-alive connections; mix {NORMAL_MIX} "
          f"(reads only, {READS_MIX}, around the backend faults); working set {k.hot} tasks × 3 credential "
          f"scopes; store timeout {k.store_timeout_ms} ms, backend timeout_ms {k.backend_timeout_ms}, "
          f"connect_timeout_ms {k.connect_timeout_ms}, short rule TTL {k.short_ttl} s + stale_if_error "
          f"{k.stale_if_error} s; {k.phase:g} s of steady load around each fault. Processes not pinned, "
          f"on a {os.cpu_count()}-core machine shared with other work. The load is closed-loop per "
          f"connection: when answers slow down, fewer requests are sent (req/s shown per window).\n")
        w(f"Binary: {s['binary']}; {self.conf_note}.\n")
        wr = s["whole_run"]
        w(f"Whole run: {s['requests']:,} requests, **{s['errors_total'] - s['stale_total']} client errors** (status, "
          f"connection, body) and **{s['stale_total']} stale answers**, statuses {wr.get('status')}, "
          f"X-Cache {wr.get('x_cache')}, p50 {wr.get('p50_ms')} ms, p99 {wr.get('p99_ms')} ms, max {wr.get('max_ms')} ms; "
          f"late sends skipped {s['late_sends_skipped']}.\n")
        for p in s["phases"]:
            ok = all(p["checks"].values())
            w(f"## Phase {p['phase']}: {p['name']}: {'PASS' if ok else 'FAIL'}\n")
            for c, v in p["checks"].items():
                w(f"- {'PASS' if v else 'FAIL'}: {c}")
            w("")
            if p["phase"] == 1:
                r = p["resume"]
                w(f"- Redis killed at {p['t_kill']} s, restarted at {p['t_restart']} s, answering PING at {p['t_back']} s")
                w(f"- client errors from 1 s before the kill to {k.phase:g} s after Redis was back: **{p['errors']}** {p['error_samples'] or ''}")
                w(f"- stale answers in that window: {p['stale']} {p['stale_samples'] or ''}; stale scan after: {p['scan']}")
                w(f"- while down: {p['while_down']}")
                w(f"- after Redis was back (s after PING): caching resumed (first answer through the store) after "
                  f"**{r['resumed_s']} s**; first fill stored {r['first_stored_s']}, first HIT {r['first_hit_s']}, "
                  f"HITs ≥ 50 % of working-set GETs from {r['hits_50pct_s']} (the emptied Redis refilling); "
                  f"{r['bypass_after_resume']} BYPASS answers after resuming, the last sent at {r['last_bypass_s']}")
                w(f"- cachegate's store log (s after the kill): {p['store_log']}")
                w(f"- the {k.phase:g} s after: {p['after']}")
            elif p["phase"] == 2:
                r = p["resume"]
                w(f"- SIGSTOP at {p['t_stop']} s, SIGCONT at {p['t_cont']} s")
                bd = p["backend_direct_during_pause"]
                w(f"- backend time: p99 of the {p['baseline_forwarded']} forwarded requests (misses, PUTs) of "
                  f"the {k.phase:g} s before, as the client saw them, {p['backend_time_p99_ms']} ms (max "
                  f"{p['backend_time_max_ms']} ms); the slowest of {bd['requests']} GETs sent straight to the backend "
                  f"during the pause (all traffic goes there then) {bd['max_ms']} ms (p50 {bd['p50_ms']} ms); "
                  f"bound = store timeout {p['store_timeout_ms']} ms + the larger = **{p['bound_ms']} ms**")
                d = p["during"]
                w(f"- requests in flight during the pause: {d.get('requests')}, max **{d.get('max_ms')} ms**, "
                  f"p99 {d.get('p99_ms')} ms, {p['over_bound']} over the bound; worst {p['worst']}")
                for op, x in p["during_by_op"].items():
                    w(f"  - {op}: {x}")
                if p["over_bound_samples"]:
                    w(f"- over the bound (op, id, ms, sent s after SIGSTOP, X-Cache): {p['over_bound_samples']}")
                w(f"- client errors from 1 s before to {k.phase:g} s after: **{p['errors']}** {p['error_samples'] or ''}")
                sa = p["stale_after_sigcont"]
                w(f"- **stale answers** (a GET sent after a PUT's answer showing an older version) after SIGCONT: "
                  f"{sa['answers']} answers over {sa['tasks']} tasks and {sa['lists']} list pages, X-Cache {sa['x_cache']}, "
                  f"from {sa['first_s']} s to {sa['last_s']} s after SIGCONT; first ones {p['stale_samples']}")
                w(f"- stale scan {k.phase:g} s after SIGCONT (no writes in flight; every task, short task and list "
                  f"page, 3 credential scopes, compared with the backend): {p['scan']}")
                w(f"- after SIGCONT (s): caching resumed (first answer through the store) after **{r['resumed_s']} s**; "
                  f"first stored fill {r['first_stored_s']}, first HIT {r['first_hit_s']}; {r['bypass_after_resume']} "
                  f"BYPASS answers after resuming, last sent at {r['last_bypass_s']}")
                w(f"- cachegate's store log (s after SIGSTOP): {p['store_log']}")
            elif p["phase"] == 3:
                w(f"- backend killed at {p['t_kill']} s, restarted at {p['t_restart']} s, answering at {p['t_back']} s")
                w(f"- load while down: {p['while_down']}")
                w(f"- short-TTL rule while down (stale-if-error): {p['short_while_down']}")
                w(f"- probes while down: {p['probes_while_down']} (connect timeout {p['connect_timeout_ms']} ms)")
                w(f"- 20 GETs of never-seen ids right after the backend answered /healthz: {p['direct_after']}")
                w(f"- probes after: {p['probes_after']}; first 200 sent {p['first_probe_200_s']} s after the backend's "
                  f"return; {p['probes_not_200_after']} not 200")
                w(f"- client errors: {p['errors']} {p['error_samples'] or ''}")
            elif p["phase"] == 4:
                w(f"- slowed at {p['t_slow']} s, fast again at {p['t_fast']} s")
                w(f"- working-set GETs while slow: {p['hot_while_slow']}")
                w(f"- short-TTL rule while slow (stale-if-error after the timeout): {p['short_while_slow']}; "
                  f"{p['short_over_timeout']} answers took longer than timeout_ms + {k.timeout_slack_ms} ms "
                  f"(id, ms, sent s after slowing, X-Cache): {p['short_over_timeout_samples']}")
                w(f"- probes while slow: {p['probes_while_slow']}")
                w(f"- 20 GETs of never-seen ids right after the backend was fast again: {p['direct_after']}")
                w(f"- probes sent after: {p['probes_after']}; {p['probes_not_200_after']} not 200; p99 {p['probe_p99_after_ms']} ms; "
                  f"backend connections open before/after {p['backend_open_connections_before_after']}")
                w(f"- client errors: {p['errors']} {p['error_samples'] or ''}")
            w("")
        c = s["cachegate"]
        w("## cachegate\n")
        w(f"- alive at the end: {c['alive_at_end']}; RSS {c['rss_mb']} MB (VmHWM {c['hwm_mb']} MB), {c['fds']} fds, "
          f"{c['threads']} threads, CPU {c['cpu_pct']} % of a core over the run")
        w(f"- /metrics at the end: {c['metrics']}")
        w(f"- log: {c['log_warn_error_lines']} WARN/ERROR lines, {c['log_panics']} panics; first ones:")
        for l in c["log_warn_first"]:
            w(f"  - `{l[:300]}`")
        if s["failures"]:
            w(f"\n**Failures:** {s['failures']}")
        if s["error_samples"]:
            w(f"\nFirst client errors and stale answers (t s, op, id, status, X-Cache, what): {s['error_samples'][:8]}")
        w("\n## Timeline (s from the start of the load)\n")
        for t, what in s["events"]:
            w(f"- {t}: {what}")
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
    c = Chaos(a)
    try:
        return c.run()
    except KeyboardInterrupt:
        return 130
    except RuntimeError as e:
        log(f"ERROR: {e}")
        return 2
    finally:
        if c.load is not None:
            c.load._stop = True
            c.load._probe_on = False
        c.d.stop_all()


if __name__ == "__main__":
    sys.exit(main())
