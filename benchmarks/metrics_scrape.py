"""Cost of GET /metrics: one scrape's database reads against the number of jobs stored, and what counting one
request adds (route template, counters, latency histogram), both in this process.

    .venv/bin/python benchmarks/metrics_scrape.py                                   # 1k, 10k, 100k jobs on Postgres
    .venv/bin/python benchmarks/metrics_scrape.py --jobs 1000 --repeats 3 --no-report   # smoke test
Postgres: UDS_BENCH_POSTGRES_URL as benchmarks/stack.py reads it (a fresh database is created and dropped).
Writes benchmarks/results/metrics_scrape.md.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import random
import shlex
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

STATUSES = ["succeeded"] * 80 + ["failed"] * 8 + ["cancelled"] * 8 + ["queued"] * 4
RUNNING = 8  # jobs running at once: one per GPU of a few worker hosts
METHODS = ["uds", "random", "max_loss", "max_grad", "full"]


def fill(url: str, total: int, have: int) -> None:
    """Jobs up to `total`, as a busy service leaves them: mostly finished, a few queued and running."""
    from sqlalchemy import insert, text

    from api.auth import get_or_create_tenant
    from api.db import session_factory
    from api.models import Job, StepMetric

    rng = random.Random(have)
    now = dt.datetime.now(dt.timezone.utc)
    with session_factory(url).begin() as session:
        tenant = get_or_create_tenant(session, "bench")
        rows, steps = [], []
        for i in range(have, total):
            status = "running" if i < RUNNING else rng.choice(STATUSES)
            started = now - dt.timedelta(seconds=rng.uniform(60, 30 * 86400))
            finished = (
                started + dt.timedelta(seconds=rng.uniform(5, 86400)) if status not in ("queued", "running") else None
            )
            job_id = f"ftjob-{i:024x}"
            rows.append(
                {
                    "id": job_id,
                    "tenant_id": tenant.id,
                    "status": status,
                    "model": "uds-tiny",
                    "method": rng.choice(METHODS),
                    "config": {"budget": 0.125},
                    "dataset_id": f"file-{i:024x}",
                    "created_at": started,
                    "started_at": None if status == "queued" else started,
                    "finished_at": finished,
                    "current_step": 100,
                    "examples_scored": 1600,
                    "examples_trained": 200,
                    "tokens_trained": 12800,
                    "time_scoring": 10.0,
                    "time_training": 30.0,
                    "worker_id": "bench:1" if status == "running" else None,
                    "heartbeat_at": now if status == "running" else None,
                }
            )
            if status == "running":
                steps.append({"job_id": job_id, "step": 100, "stats": {"device_memory_bytes": 2**30}})
        for start in range(0, len(rows), 5000):
            session.execute(insert(Job), rows[start : start + 5000])
        if steps:
            session.execute(insert(StepMetric), steps)
    with session_factory(url).begin() as session:
        session.execute(text("ANALYZE"))  # the planner's statistics, as autovacuum keeps them on a live server


def time_scrapes(url: str, repeats: int) -> tuple[float, int]:
    from api.db import session_factory
    from api.monitoring import exposition
    from api.settings import Settings

    sessions = session_factory(url, "bench")
    settings = Settings(database_url=url)
    exposition(sessions, settings)  # warm: connection, statement compilation
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        body = exposition(sessions, settings)
        times.append(time.perf_counter() - started)
    return statistics.median(times), len(body)


def time_counting(n: int) -> float:
    """Seconds per request of what the middleware adds: the route template and the three metric updates."""
    from api.monitoring import record
    from api.routes.jobs import router

    route = next(r for r in router.routes if getattr(r, "path", "") == "/jobs/{job_id}")
    scope = {
        "method": "GET",
        "path": "/api/v1/jobs/ftjob-0123456789abcdef01234567",
        "route": route,
        "path_params": {"job_id": "ftjob-0123456789abcdef01234567"},
    }
    answer = {"status": 200, "latency": 0.004, "body": None}
    started = time.perf_counter()
    for _ in range(n):
        record(scope, answer, 0.004)
    return (time.perf_counter() - started) / n


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=int, nargs="+", default=[1000, 10_000, 100_000])
    parser.add_argument("--repeats", type=int, default=9, help="scrapes timed at each size (the median is reported)")
    parser.add_argument("--no-report", action="store_true")
    args = parser.parse_args()

    from api.db import migrate
    from benchmarks.stack import POSTGRES_URL, postgres_database

    results, have = [], 0
    with postgres_database("uds_bench_scrape") as url:
        migrate(url)
        for total in sorted(args.jobs):
            fill(url, total, have)
            have = total
            seconds, size = time_scrapes(url, args.repeats)
            results.append((total, seconds, size))
            print(f"{total:>7} jobs: scrape {seconds * 1000:.1f} ms, {size} bytes", flush=True)
    per_request = time_counting(20_000)
    print(f"counting one request: {per_request * 1e6:.1f} us", flush=True)
    if args.no_report:
        return 0

    command = "benchmarks/metrics_scrape.py" + ("" if sys.argv[1:] == [] else " " + shlex.join(sys.argv[1:]))
    lines = [
        "# GET /metrics: scrape cost and per-request counting",
        "",
        f"Command: `.venv/bin/python {command}`",
        "",
        f"Setup: {platform.machine()}, {platform.python_version()}, PostgreSQL ({POSTGRES_URL.rsplit('@', 1)[-1]}), "
        "one process, no other load from this run. Jobs as a busy service leaves them (80% succeeded, 16% failed or "
        "cancelled, 4% queued; 8 running, each with a step row); each scrape is the database part of GET /metrics "
        f"(`api.monitoring.exposition`), median of {args.repeats}.",
        "",
        "| jobs stored | scrape | body |",
        "|---|---|---|",
        *[f"| {total:,} | {seconds * 1000:.1f} ms | {size:,} B |" for total, seconds, size in results],
        "",
        f"Counting one request (route template, request counter, latency histogram): {per_request * 1e6:.1f} us.",
        "",
        f"Machine load average at the end: {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs (shared with other "
        "work: the figures are upper bounds).",
        "",
    ]
    out = ROOT / "benchmarks" / "results" / "metrics_scrape.md"
    out.write_text("\n".join(lines))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
