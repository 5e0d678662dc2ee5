"""Randomized fault soak of the distributed stack, with invariant checks afterwards.

Postgres (a database of its own), a private redis-server (on a free loopback port: restarting it disturbs no one
else), `uds serve` and two `uds worker` processes. A seeded stream of work from several tenants (uploads, uds-tiny
jobs of a few steps, comparisons, merged exports, try-it generations, cancels, reads of their own and of other
tenants' objects) runs while a seeded schedule injects faults: SIGKILL of a worker or of the API (restarted),
a Redis restart (its queue lost: the recovery sweep sends jobs again), every Postgres connection of the soak's
database terminated, and one tenant filling its storage quota (UDS_TENANT_STORAGE_BYTES). Then the faults stop,
the work drains, and the invariants are checked:

- every job ends exactly once: succeeded, failed with an error code, or cancelled, one final status event;
- every succeeded job has every step's metrics exactly once and a downloadable adapter (its sha256 as announced);
- no artifact without a row and no row without its artifact (datasets, job folders, adapters, exports);
- no tenant saw another's object (lists hold only its own ids; another tenant's ids are 404);
- no 500: no answer >= 500 other than 503 (a queue that is down says so), no unhandled error in any log.

    nice -n 10 python benchmarks/soak.py --seed 1 --minutes 6 --out benchmarks/results/soak-seed1.json

writes the report as JSON and markdown (faults injected, jobs run, invariants checked, violations). The CI runs a
short version (tests/reliability/test_soak.py).
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import random
import secrets
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.stack import (  # noqa: E402
    RedisServer,
    Server,
    Worker,
    distributed_env,
    free_port,
    postgres_database,
    wait_for,
)

QUEUE = "soak"
QUOTA = 60_000_000
JOB = dict(
    model="uds-tiny",
    method="uds",
    budget=0.25,
    candidate_batch_size=8,
    max_steps=4,
    max_seq_len=64,
    micro_batch_size=2,
    lora_r=4,
    lora_alpha=8,
    checkpoint_every=2,
    learning_rate=1e-3,
    warmup_ratio=0.0,
    buffer_size=16,
)
SHARED = {k: JOB[k] for k in ("candidate_batch_size", "max_steps", "max_seq_len", "micro_batch_size", "lora_r")}
FINAL = {"succeeded", "failed", "cancelled"}
FAULTS = ("kill_worker", "kill_api", "restart_redis", "terminate_postgres", "fill_quota")


def chat_jsonl(rng: random.Random, rows: int, pad: int = 0) -> bytes:
    words = ["alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel", "india", "juliet"]
    lines = []
    for _ in range(rows):
        word = "".join(rng.choice(words) for _ in range(2))
        user = f"Reverse: {word}" + (" " + "x" * pad if pad else "")
        lines.append(
            json.dumps({"messages": [{"role": "user", "content": user}, {"role": "assistant", "content": word[::-1]}]})
        )
    return ("\n".join(lines) + "\n").encode()


@dataclass
class Tenant:
    name: str
    key: str
    datasets: list[str] = field(default_factory=list)
    jobs: list[str] = field(default_factory=list)
    comparisons: list[str] = field(default_factory=list)
    tasks: list[str] = field(default_factory=list)

    def owns(self) -> set[str]:
        return {*self.datasets, *self.jobs, *self.comparisons, *self.tasks}


@dataclass
class Soak:
    seed: int
    url: str
    tenants: list[Tenant]
    rng: random.Random
    counts: Counter = field(default_factory=Counter)
    faults: Counter = field(default_factory=Counter)
    violations: list[str] = field(default_factory=list)
    checks: Counter = field(default_factory=Counter)

    def call(self, tenant: Tenant, method: str, path: str, **kwargs) -> httpx.Response | None:
        """One request; None when the API is down (being restarted). An answer >= 500 but 503 is a violation."""
        try:
            response = httpx.request(
                method, self.url + path, headers={"Authorization": f"Bearer {tenant.key}"}, timeout=30, **kwargs
            )
        except httpx.HTTPError:
            self.counts["requests_unanswered"] += 1
            return None
        self.counts["requests"] += 1
        self.checks["answers_below_500"] += 1
        if response.status_code >= 500 and response.status_code != 503:
            self.violations.append(f"{method} {path} -> {response.status_code}: {response.text[:300]}")
        return response

    # ---- the work ----------------------------------------------------------------------------------------------

    def upload(self, tenant: Tenant, rows: int = 32, pad: int = 0) -> httpx.Response | None:
        body = chat_jsonl(self.rng, rows, pad)
        response = self.call(tenant, "POST", "/api/v1/datasets", files={"file": ("d.jsonl", body)})
        if response is not None and response.status_code == 201:
            tenant.datasets.append(response.json()["id"])
            self.counts["uploads"] += 1
        return response

    def submit_job(self, tenant: Tenant) -> None:
        if not tenant.datasets:
            return
        body = {**JOB, "dataset_id": tenant.datasets[0], "seed": self.rng.randrange(1000)}
        if self.rng.random() < 0.3:
            body.update(method="random", buffer_size=None)
            body.pop("buffer_size")
        response = self.call(tenant, "POST", "/api/v1/jobs", json=body)
        if response is not None and response.status_code == 201:
            tenant.jobs.append(response.json()["id"])
            self.counts["jobs_submitted"] += 1

    def submit_comparison(self, tenant: Tenant) -> None:
        if len(tenant.datasets) < 2:
            return
        body = {
            "dataset_id": tenant.datasets[0],
            "eval_dataset_id": tenant.datasets[1],
            "methods": ["random"],
            "budgets": [0.5],
            "seeds": 2,
            "include_full": False,
            "settings": {**SHARED, "eval_max_new_tokens": 4},
        }
        response = self.call(tenant, "POST", "/api/v1/comparisons", json=body)
        if response is not None and response.status_code == 201:
            comparison = response.json()
            tenant.comparisons.append(comparison["id"])
            tenant.jobs += [run["job_id"] for run in comparison["runs"]]
            self.counts["comparisons"] += 1
            self.counts["jobs_submitted"] += len(comparison["runs"])

    def succeeded_job(self, tenant: Tenant) -> str | None:
        for job_id in self.rng.sample(tenant.jobs, len(tenant.jobs)):
            response = self.call(tenant, "GET", f"/api/v1/jobs/{job_id}")
            if response is not None and response.status_code == 200 and response.json()["status"] == "succeeded":
                return job_id
        return None

    def export(self, tenant: Tenant) -> None:
        job_id = self.succeeded_job(tenant)
        response = self.call(tenant, "POST", f"/api/v1/jobs/{job_id}/exports", json={}) if job_id else None
        if response is not None and response.status_code in (200, 202):
            tenant.tasks.append(response.json()["id"])
            self.counts["exports"] += response.status_code == 202

    def generate(self, tenant: Tenant) -> None:
        job_id = self.succeeded_job(tenant)
        body = {"prompt": "Reverse: echo", "max_new_tokens": 8}
        response = self.call(tenant, "POST", f"/api/v1/jobs/{job_id}/generate", json=body) if job_id else None
        if response is not None and response.status_code == 202:
            tenant.tasks.append(response.json()["id"])
            self.counts["generations"] += 1

    def cancel(self, tenant: Tenant) -> None:
        if tenant.jobs:
            response = self.call(tenant, "POST", f"/api/v1/jobs/{self.rng.choice(tenant.jobs)}/cancel")
            self.counts["cancels"] += response is not None and response.status_code == 200

    def look(self, tenant: Tenant) -> None:
        """Its own lists hold only its own ids; another tenant's objects are 404."""
        for path in ("/api/v1/jobs?limit=100", "/api/v1/datasets?limit=100", "/api/v1/comparisons?limit=100"):
            response = self.call(tenant, "GET", path)
            if response is None or response.status_code != 200:
                continue
            ids = {item["id"] for item in response.json()["data"]}
            self.checks["lists_hold_only_own_objects"] += 1
            if ids - tenant.owns():
                self.violations.append(f"{tenant.name} listed objects it did not create: {sorted(ids - tenant.owns())}")
        other = self.rng.choice([t for t in self.tenants if t is not tenant])
        for kind, ids in (("jobs", other.jobs), ("datasets", other.datasets), ("comparisons", other.comparisons)):
            if ids:
                response = self.call(tenant, "GET", f"/api/v1/{kind}/{self.rng.choice(ids)}")
                if response is not None:
                    self.checks["other_tenants_objects_are_404"] += 1
                    if response.status_code != 404:
                        self.violations.append(f"{tenant.name} got {response.status_code} for {other.name}'s {kind}")

    def step(self) -> None:
        tenant = self.rng.choice(self.tenants[1:])  # tenant 0 is the one that fills its quota
        action = self.rng.choices(
            [self.submit_job, self.submit_comparison, self.export, self.generate, self.cancel, self.look],
            weights=[5, 1, 1, 2, 1, 3],
        )[0]
        action(tenant)


# ---- the faults ------------------------------------------------------------------------------------------------


@dataclass
class Stack:
    env: dict
    logs: Path
    database_url: str
    redis: RedisServer
    server: Server
    workers: list
    started: int = 0

    def start_worker(self) -> Worker:
        self.started += 1
        return Worker(self.env, self.logs / f"worker{self.started}.log", QUEUE, f"soak{self.started}@%h")

    def kill_worker(self, rng: random.Random) -> None:
        i = rng.randrange(len(self.workers))
        self.workers[i].kill()
        time.sleep(rng.uniform(1, 4))
        self.workers[i] = self.start_worker()

    def kill_api(self, rng: random.Random) -> None:
        port = int(self.server.url.rsplit(":", 1)[1])
        self.server.kill()
        time.sleep(rng.uniform(0.5, 2))
        self.server = Server(port, self.env, self.logs / "api.log")
        self.server.wait_ready(300)

    def restart_redis(self, rng: random.Random) -> None:
        self.redis.kill()
        time.sleep(rng.uniform(0.5, 3))
        self.redis = RedisServer(self.redis.port, self.logs / "redis.log")

    def terminate_postgres(self, rng: random.Random) -> None:
        from sqlalchemy import create_engine, text
        from sqlalchemy.engine import make_url

        name = make_url(self.database_url).database
        engine = create_engine(self.database_url, isolation_level="AUTOCOMMIT")
        try:
            with engine.connect() as connection:
                connection.execute(
                    text(
                        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                        "WHERE datname = :name AND pid <> pg_backend_pid()"
                    ),
                    {"name": name},
                )
        finally:
            engine.dispose()

    def stop(self) -> None:
        for process in (*self.workers, self.server, self.redis):
            process.stop()


def fill_quota(soak: Soak) -> None:
    """The hoarding tenant uploads 6 MB datasets until the quota refuses one: a 400, never a 500 or a half file."""
    hoarder = soak.tenants[0]
    for _ in range(QUOTA // 6_000_000 + 2):
        response = soak.upload(hoarder, rows=8, pad=750_000)
        if response is not None and response.status_code == 400:
            soak.checks["quota_refusal_is_400_storage_quota_exceeded"] += 1
            if response.json()["error"]["code"] != "storage_quota_exceeded":
                soak.violations.append(f"quota refusal: {response.text[:200]}")
            return


# ---- afterwards: the invariants --------------------------------------------------------------------------------


def check_invariants(soak: Soak, stack: Stack, data_dir: Path) -> dict:
    from sqlalchemy import create_engine, text

    engine = create_engine(stack.database_url)
    jobs: dict[str, dict] = {}
    with engine.connect() as db:
        for row in db.execute(text("SELECT id, status, error_code, adapter_path, config FROM jobs")).mappings():
            jobs[row["id"]] = dict(row)
        finals = Counter(
            job_id
            for job_id, data in db.execute(text("SELECT job_id, data FROM job_events WHERE type = 'status'"))
            if (json.loads(data) if isinstance(data, str) else data or {}).get("status") in FINAL
        )
        steps = {}
        for job_id, step, n in db.execute(
            text("SELECT job_id, step, count(*) FROM step_metrics GROUP BY job_id, step")
        ):
            steps.setdefault(job_id, {})[step] = n
        datasets = dict(db.execute(text("SELECT id, storage_path FROM datasets")).all())
        exports = db.execute(
            text("SELECT id, path FROM job_tasks WHERE kind = 'export' AND status = 'succeeded'")
        ).all()
    engine.dispose()

    by_status = Counter(job["status"] for job in jobs.values())
    for job_id, job in jobs.items():
        soak.checks["job_ends_exactly_once"] += 1
        if job["status"] not in FINAL:
            soak.violations.append(f"job {job_id} is still {job['status']}")
        elif job["status"] == "failed" and not job["error_code"]:
            soak.violations.append(f"job {job_id} failed without an error code")
        elif finals[job_id] != 1:
            soak.violations.append(f"job {job_id} has {finals[job_id]} final status events")
        if job["status"] != "succeeded":
            continue
        soak.checks["succeeded_job_has_every_step_once"] += 1
        wanted = set(range(1, (job["config"] or {}).get("max_steps", JOB["max_steps"]) + 1))
        got = steps.get(job_id, {})
        if set(got) != wanted or any(n != 1 for n in got.values()):
            soak.violations.append(
                f"job {job_id}: step metrics {sorted(got.items())}, wanted each of {sorted(wanted)} once"
            )
        owner = next(t for t in soak.tenants if job_id in t.jobs)
        soak.checks["succeeded_job_has_a_downloadable_adapter"] += 1
        response = soak.call(owner, "GET", f"/api/v1/jobs/{job_id}/adapter")
        if response is None or response.status_code != 200:
            soak.violations.append(f"job {job_id}: adapter download {getattr(response, 'status_code', 'no answer')}")
        elif hashlib.sha256(response.content).hexdigest() != response.headers.get("x-checksum-sha256"):
            soak.violations.append(f"job {job_id}: adapter sha256 differs from X-Checksum-SHA256")

    # No row without its artifact, no artifact without its row.
    for dataset_id, path in datasets.items():
        soak.checks["row_has_its_artifact"] += 1
        if not (data_dir / path).is_file():
            soak.violations.append(f"dataset {dataset_id}: {path} is missing")
    for job_id, job in jobs.items():
        if job["adapter_path"]:
            soak.checks["row_has_its_artifact"] += 1
            if not (data_dir / job["adapter_path"]).is_file():
                soak.violations.append(f"job {job_id}: adapter {job['adapter_path']} is missing")
    for task_id, path in exports:
        soak.checks["row_has_its_artifact"] += 1
        if not path or not (data_dir / path).is_file():
            soak.violations.append(f"export {task_id}: {path} is missing")
    stored = {f"datasets/{p.name}" for p in (data_dir / "datasets").glob("*.jsonl")}
    for path in stored - set(datasets.values()):
        soak.violations.append(f"{path} has no dataset row")
    soak.checks["artifact_has_its_row"] += len(stored)
    for folder in (data_dir / "jobs").glob("*"):
        soak.checks["artifact_has_its_row"] += 1
        if folder.name not in jobs:
            soak.violations.append(f"jobs/{folder.name} has no job row")

    # No 500 and no unhandled error in any log.
    for log in sorted(stack.logs.glob("*.log")):
        soak.checks["logs_without_500"] += 1
        text_ = log.read_text(errors="replace")
        for marker in ('" 500', "unhandled error", "Internal Server Error"):
            if marker in text_:
                line = next(line for line in text_.splitlines() if marker in line)
                soak.violations.append(f"{log.name}: {line[:300]}")
    return dict(by_status)


# ---- the run ---------------------------------------------------------------------------------------------------


def run(seed: int, seconds: float, work: Path, drain_seconds: float = 300) -> dict:
    from api.auth import add_key
    from api.db import migrate, session_factory
    from uds.models import TINY_MODEL, resolve_model

    rng = random.Random(seed)
    data_dir, logs = work / "data", work / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    resolve_model(TINY_MODEL, models_dir=data_dir / "models")  # built once here, not by every worker
    redis = RedisServer(free_port(), logs / "redis.log")
    with postgres_database("uds_soak") as database_url:
        migrate(database_url)
        keys = []
        with session_factory(database_url)() as session:
            for i in range(4):
                keys.append((f"soak-tenant-{i}", add_key(session, f"soak-tenant-{i}")))
            session.commit()
        env = distributed_env(
            database_url,
            f"redis://127.0.0.1:{redis.port}/0",
            QUEUE,
            data_dir,
            "uds-soak-" + secrets.token_hex(16),
            "soak-admin",
            UDS_HEARTBEAT_SECONDS="1",
            UDS_STALE_AFTER_SECONDS="20",
            UDS_TASK_STALE_AFTER_SECONDS="60",
            UDS_REDISPATCH_AFTER_SECONDS="20",
            UDS_METRICS_FLUSH_SECONDS="0.5",
            UDS_TENANT_STORAGE_BYTES=str(QUOTA),
            UDS_CREATE_RATE_PER_MINUTE="0",
            UDS_GENERATE_MAX_SECONDS="20",
        )
        server = Server(free_port(), env, logs / "api.log")
        stack = Stack(env, logs, database_url, redis, server, [])
        stack.workers = [stack.start_worker(), stack.start_worker()]
        try:
            server.wait_ready(300)
            soak = Soak(seed, server.url, [Tenant(name, key) for name, key in keys], rng)
            return _drive(soak, stack, data_dir, seconds, drain_seconds)
        finally:
            stack.stop()


def _drive(soak: Soak, stack: Stack, data_dir: Path, seconds: float, drain_seconds: float) -> dict:
    started = time.monotonic()
    for tenant in soak.tenants[1:]:
        soak.upload(tenant)
        soak.upload(tenant, rows=12)  # held-out rows for comparisons
    next_fault = started + soak.rng.uniform(10, 25)
    while time.monotonic() - started < seconds:
        soak.step()
        if time.monotonic() >= next_fault:
            fault = soak.rng.choice(FAULTS)
            soak.faults[fault] += 1
            if fault == "fill_quota":
                fill_quota(soak)
            else:
                getattr(stack, fault)(soak.rng)
            next_fault = time.monotonic() + soak.rng.uniform(10, 30)
        time.sleep(soak.rng.uniform(0.5, 2.0))
    fault_seconds = time.monotonic() - started

    # Drain: no more faults; every job and task must reach an end (the recovery sweeps resend what was lost).
    everyone = soak.tenants

    def drained() -> bool:
        for tenant in everyone:
            for job_id in tenant.jobs:
                response = soak.call(tenant, "GET", f"/api/v1/jobs/{job_id}")
                if response is None or response.status_code != 200 or response.json()["status"] not in FINAL:
                    return False
        return True

    with contextlib.suppress(AssertionError):
        wait_for(drained, drain_seconds, "every job to finish", interval=5)
    for tenant in everyone:  # one last look at every tenant's objects
        soak.look(tenant)
    by_status = check_invariants(soak, stack, data_dir)
    return {
        "seed": soak.seed,
        "fault_seconds": round(fault_seconds),
        "total_seconds": round(time.monotonic() - started),
        "faults": dict(soak.faults),
        "faults_total": sum(soak.faults.values()),
        "jobs": by_status,
        "jobs_total": sum(by_status.values()),
        "work": dict(soak.counts),
        "invariants_checked": dict(soak.checks),
        "checks_total": sum(soak.checks.values()),
        "violations": soak.violations,
    }


def markdown(report: dict) -> str:
    lines = [
        f"# Fault soak, seed {report['seed']}",
        "",
        f"{report['fault_seconds']} s of work under faults, {report['total_seconds']} s with the drain.",
        "",
        f"- faults injected: {report['faults_total']} ({', '.join(f'{k} {v}' for k, v in sorted(report['faults'].items()))})",
        f"- jobs run: {report['jobs_total']} ({', '.join(f'{k} {v}' for k, v in sorted(report['jobs'].items()))})",
        f"- work: {', '.join(f'{k} {v}' for k, v in sorted(report['work'].items()))}",
        f"- invariants checked: {report['checks_total']} "
        f"({', '.join(f'{k} {v}' for k, v in sorted(report['invariants_checked'].items()))})",
        f"- violations: {len(report['violations'])}",
        *[f"  - {v}" for v in report["violations"]],
    ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--minutes", type=float, default=6.0, help="work under faults, before the drain")
    parser.add_argument("--drain-minutes", type=float, default=5.0)
    parser.add_argument("--work", type=Path, default=None, help="folder for data and logs (default: a temp folder)")
    parser.add_argument("--out", type=Path, default=None, help="the report, as .json and .md next to it")
    args = parser.parse_args(argv)
    import tempfile

    work = args.work or Path(tempfile.mkdtemp(prefix="uds-soak-"))
    report = run(args.seed, args.minutes * 60, work, args.drain_minutes * 60)
    report["work_folder"] = str(work)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.with_suffix(".json").write_text(json.dumps(report, indent=2) + "\n")
        args.out.with_suffix(".md").write_text(markdown(report))
    print(markdown(report))
    return 1 if report["violations"] else 0


if __name__ == "__main__":
    raise SystemExit(main())
