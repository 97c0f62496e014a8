#!/usr/bin/env python3
# Copied unchanged from shared/bench-peers/backend.py (the shared peers harness), so bench/ runs from a clean clone.
"""Task API backend for the cache benchmark harness (bench/peers.sh).

A small FastAPI app that stands in for a real "task" REST service:

    GET    /api/v1/tasks/{task_id}
    PUT    /api/v1/tasks/{task_id}
    DELETE /api/v1/tasks/{task_id}
    POST   /api/v1/tasks
    GET    /api/v1/tasks?offset=&limit=&status=      (list)
    GET    /_bench/stats                             (harness counters)
    GET    /healthz

Tasks live in an in-memory dict seeded with --tasks (default 10,000)
deterministic tasks (UUIDs drawn from a seeded RNG).  Every access to that
dict goes through FakeDB, which awaits --db-latency-ms (default 2 ms) first,
like an async database driver would.

--cache switches on the "seed" approach: in-application caching through
redis-py asyncio, via a @cache_result(...) decorator that stores the JSON of
the result in Redis with SETEX, and an @invalidate_cache(patterns=[...])
decorator that runs SCAN MATCH + DEL on writes.  Without --cache the
decorators are no-ops.

Run (one worker; uvloop + httptools when installed):
    python backend.py --port 18000 --db-latency-ms 2
    python backend.py --port 18001 --cache --redis-url redis://127.0.0.1:18379/0
"""
from __future__ import annotations

import argparse
import asyncio
import inspect
import json
import random
import uuid
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from functools import wraps
from typing import Any, Callable, Optional

from fastapi import FastAPI, HTTPException, Query, Response
from pydantic import BaseModel, Field


# --------------------------------------------------------------------------
# configuration and counters
# --------------------------------------------------------------------------
@dataclass
class Config:
    db_latency_ms: float = 2.0
    cache: bool = False
    redis_url: str = "redis://127.0.0.1:18379/0"
    tasks: int = 10_000
    seed: int = 42


@dataclass
class Stats:
    db_reads: int = 0
    db_writes: int = 0
    cache_hits: int = 0
    cache_misses: int = 0
    invalidations: int = 0
    keys_deleted: int = 0
    started_at: str = field(default_factory=lambda: datetime.now(timezone.utc).isoformat())


# --------------------------------------------------------------------------
# deterministic seed data
# --------------------------------------------------------------------------
STATUSES = ["todo", "in_progress", "blocked", "review", "done"]
VERBS = ["Refactor", "Document", "Migrate", "Benchmark", "Review", "Fix", "Design",
         "Deploy", "Profile", "Audit", "Test", "Upgrade"]
NOUNS = ["billing service", "login flow", "search index", "report exporter",
         "payment webhook", "user settings page", "notification queue",
         "audit log", "image resizer", "rate limiter", "CSV importer", "session store"]
TAGS = ["backend", "frontend", "infra", "security", "perf", "ux", "api", "db",
        "urgent", "tech-debt", "customer", "q3", "q4", "mobile", "ops"]
WORDS = ("the of and to in is that for it with as was on be at by this had not are "
         "but from or have an they which one you were all we her she there would "
         "their will when who him been has more if no out do so can what up said "
         "about other into than its time only could new them man some these then "
         "two first may any like now my such make over our even most me state after "
         "also made many did must before back see through way where get much go well "
         "your know should down work year because come people just say each those "
         "take day good how long little use").split()


def make_tasks(n: int, seed: int) -> dict[str, dict[str, Any]]:
    """Build n deterministic tasks; insertion order is the id order used by
    the harness (the first N ids form the benchmark working set)."""
    rng = random.Random(seed)
    base = datetime(2024, 1, 1, tzinfo=timezone.utc)
    tasks: dict[str, dict[str, Any]] = {}
    for i in range(n):
        tid = str(uuid.UUID(int=rng.getrandbits(128), version=4))
        created = base + timedelta(seconds=rng.randrange(0, 365 * 86400))
        updated = created + timedelta(seconds=rng.randrange(0, 30 * 86400))
        desc_words = [rng.choice(WORDS) for _ in range(rng.randint(28, 42))]
        description = " ".join(desc_words).capitalize() + "."
        tasks[tid] = {
            "id": tid,
            "name": f"Task {i:05d}: {rng.choice(VERBS)} {rng.choice(NOUNS)}",
            "description": description,
            "status": rng.choice(STATUSES),
            "metadata": {
                "priority": rng.randint(1, 5),
                "assignee": f"user{rng.randint(1, 500):03d}@example.com",
                "project": f"proj-{rng.randint(1, 50):02d}",
                "tags": rng.sample(TAGS, rng.randint(1, 4)),
                "estimate_hours": round(rng.uniform(0.5, 40.0), 1),
            },
            "created_at": created,
            "updated_at": updated,
        }
    return tasks


# --------------------------------------------------------------------------
# API models
# --------------------------------------------------------------------------
class Task(BaseModel):
    id: str
    name: str
    description: str
    status: str
    metadata: dict[str, Any]
    created_at: datetime
    updated_at: datetime


class TaskCreate(BaseModel):
    name: str = Field(min_length=1, max_length=200)
    description: str = ""
    status: str = "todo"
    metadata: dict[str, Any] = Field(default_factory=dict)


class TaskUpdate(BaseModel):
    name: Optional[str] = Field(default=None, min_length=1, max_length=200)
    description: Optional[str] = None
    status: Optional[str] = None
    metadata: Optional[dict[str, Any]] = None


class TaskList(BaseModel):
    items: list[Task]
    total: int
    offset: int
    limit: int


# --------------------------------------------------------------------------
# fake database with simulated latency
# --------------------------------------------------------------------------
class FakeDB:
    def __init__(self, cfg: Config, stats: Stats):
        self.latency_s = max(cfg.db_latency_ms, 0.0) / 1000.0
        self.stats = stats
        self.tasks = make_tasks(cfg.tasks, cfg.seed)

    async def _io(self) -> None:
        if self.latency_s > 0:
            await asyncio.sleep(self.latency_s)

    async def get(self, task_id: str) -> Optional[dict[str, Any]]:
        await self._io()
        self.stats.db_reads += 1
        row = self.tasks.get(task_id)
        return dict(row) if row is not None else None

    async def list(self, offset: int, limit: int, status: Optional[str]) -> tuple[list[dict], int]:
        await self._io()
        self.stats.db_reads += 1
        rows = self.tasks.values()
        if status is not None:
            rows = [r for r in rows if r["status"] == status]
        else:
            rows = list(rows)
        return [dict(r) for r in rows[offset:offset + limit]], len(rows)

    async def insert(self, row: dict[str, Any]) -> dict[str, Any]:
        await self._io()
        self.stats.db_writes += 1
        self.tasks[row["id"]] = row
        return dict(row)

    async def update(self, task_id: str, changes: dict[str, Any]) -> Optional[dict[str, Any]]:
        await self._io()
        self.stats.db_writes += 1
        row = self.tasks.get(task_id)
        if row is None:
            return None
        row.update(changes)
        return dict(row)

    async def delete(self, task_id: str) -> bool:
        await self._io()
        self.stats.db_writes += 1
        return self.tasks.pop(task_id, None) is not None


# --------------------------------------------------------------------------
# the "seed" in-app Redis cache (decorators)
# --------------------------------------------------------------------------
class RedisCache:
    """Holds the redis.asyncio client used by the decorators.  When disabled
    (no --cache) the decorators return the wrapped function unchanged."""

    def __init__(self, stats: Stats):
        self.enabled = False
        self.client = None
        self.stats = stats

    def connect(self, url: str) -> None:
        import redis.asyncio as aioredis  # only needed with --cache

        self.client = aioredis.from_url(url, decode_responses=True)
        self.enabled = True

    async def close(self) -> None:
        if self.client is not None:
            await self.client.aclose()


def _call_key_builder(key_builder: Callable[..., str], kwargs: dict[str, Any]) -> str:
    params = inspect.signature(key_builder).parameters
    return key_builder(**{k: v for k, v in kwargs.items() if k in params})


def make_decorators(cache: RedisCache):
    def cache_result(prefix: str, expire: int = 300,
                     key_builder: Optional[Callable[..., str]] = None):
        def decorator(func):
            if not cache.enabled:
                return func

            @wraps(func)
            async def wrapper(*args, **kwargs):
                if key_builder is not None:
                    key = _call_key_builder(key_builder, kwargs)
                else:
                    key = f"{prefix}:{func.__name__}:" + ":".join(
                        f"{k}={v}" for k, v in sorted(kwargs.items()))
                cached = await cache.client.get(key)
                if cached is not None:
                    cache.stats.cache_hits += 1
                    return json.loads(cached)
                cache.stats.cache_misses += 1
                result = await func(*args, **kwargs)
                if isinstance(result, BaseModel):
                    payload = result.model_dump_json()
                else:
                    payload = json.dumps(result, default=str)
                await cache.client.setex(key, expire, payload)
                return result

            return wrapper

        return decorator

    def invalidate_cache(patterns: list[str]):
        def decorator(func):
            if not cache.enabled:
                return func

            @wraps(func)
            async def wrapper(*args, **kwargs):
                result = await func(*args, **kwargs)
                cache.stats.invalidations += 1
                for pattern in patterns:
                    keys = [k async for k in cache.client.scan_iter(match=pattern, count=500)]
                    if keys:
                        cache.stats.keys_deleted += await cache.client.delete(*keys)
                return result

            return wrapper

        return decorator

    return cache_result, invalidate_cache


# --------------------------------------------------------------------------
# application
# --------------------------------------------------------------------------
def create_app(cfg: Config) -> FastAPI:
    stats = Stats()
    db = FakeDB(cfg, stats)
    cache = RedisCache(stats)
    if cfg.cache:
        cache.connect(cfg.redis_url)
    cache_result, invalidate_cache = make_decorators(cache)

    @asynccontextmanager
    async def lifespan(_app: FastAPI):
        yield
        await cache.close()

    app = FastAPI(title="Task API (benchmark backend)", version="1.0", lifespan=lifespan)

    @app.get("/healthz")
    async def healthz() -> dict[str, Any]:
        return {"ok": True, "cache": cfg.cache, "tasks": len(db.tasks)}

    @app.get("/_bench/stats")
    async def bench_stats() -> dict[str, Any]:
        return {**stats.__dict__, "cache": cfg.cache, "db_latency_ms": cfg.db_latency_ms,
                "tasks": len(db.tasks)}

    @app.get("/api/v1/tasks", response_model=TaskList)
    @cache_result(prefix="tasks", expire=300,
                  key_builder=lambda offset, limit, status: f"tasks:{offset}:{limit}:{status}")
    async def list_tasks(offset: int = Query(0, ge=0),
                         limit: int = Query(50, ge=1, le=1000),
                         status: Optional[str] = None):
        rows, total = await db.list(offset, limit, status)
        return {"items": rows, "total": total, "offset": offset, "limit": limit}

    @app.get("/api/v1/tasks/{task_id}", response_model=Task)
    @cache_result(prefix="task", expire=300, key_builder=lambda task_id: f"task:{task_id}")
    async def get_task(task_id: str):
        row = await db.get(task_id)
        if row is None:
            raise HTTPException(status_code=404, detail="task not found")
        return row

    @app.post("/api/v1/tasks", response_model=Task, status_code=201)
    @invalidate_cache(patterns=["tasks:*"])
    async def create_task(body: TaskCreate):
        now = datetime.now(timezone.utc)
        row = {"id": str(uuid.uuid4()), **body.model_dump(), "created_at": now, "updated_at": now}
        return await db.insert(row)

    @app.put("/api/v1/tasks/{task_id}", response_model=Task)
    @invalidate_cache(patterns=["task:*", "tasks:*"])
    async def update_task(task_id: str, body: TaskUpdate):
        changes = body.model_dump(exclude_unset=True)
        changes["updated_at"] = datetime.now(timezone.utc)
        row = await db.update(task_id, changes)
        if row is None:
            raise HTTPException(status_code=404, detail="task not found")
        return row

    @app.delete("/api/v1/tasks/{task_id}", status_code=204)
    @invalidate_cache(patterns=["task:*", "tasks:*"])
    async def delete_task(task_id: str):
        if not await db.delete(task_id):
            raise HTTPException(status_code=404, detail="task not found")
        return Response(status_code=204)

    return app


def _pick(option: str, module: str, fallback: str) -> str:
    if option != "auto":
        return option
    try:
        __import__(module)
        return option.replace("auto", module)
    except ImportError:
        return fallback


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=18000)
    ap.add_argument("--db-latency-ms", type=float, default=2.0)
    ap.add_argument("--cache", action="store_true", help="seed approach: in-app Redis cache")
    ap.add_argument("--redis-url", default="redis://127.0.0.1:18379/0")
    ap.add_argument("--tasks", type=int, default=10_000)
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--loop", default="auto", choices=["auto", "uvloop", "asyncio"])
    ap.add_argument("--http", default="auto", choices=["auto", "httptools", "h11"])
    ap.add_argument("--dump-ids", type=int, metavar="N",
                    help="print the first N task ids (the working set) and exit")
    args = ap.parse_args()

    cfg = Config(db_latency_ms=args.db_latency_ms, cache=args.cache, redis_url=args.redis_url,
                 tasks=args.tasks, seed=args.seed)
    if args.dump_ids is not None:
        for i, tid in enumerate(make_tasks(cfg.tasks, cfg.seed)):
            if i >= args.dump_ids:
                break
            print(tid)
        return

    import uvicorn

    loop = _pick(args.loop, "uvloop", "asyncio")
    http = _pick(args.http, "httptools", "h11")
    print(f"backend: port={args.port} cache={cfg.cache} db_latency_ms={cfg.db_latency_ms} "
          f"loop={loop} http={http} tasks={cfg.tasks}", flush=True)
    uvicorn.run(create_app(cfg), host=args.host, port=args.port, workers=1, loop=loop,
                http=http, access_log=False, log_level="warning", backlog=4096)


if __name__ == "__main__":
    main()
