"""Load benchmark of the distributed mode on loopback: N concurrent async clients (one keep-alive connection each,
`Connection`; the uploaders use httpx.AsyncClient) poll a running job's status and metrics, as the dashboard does (each sends its last ETag as If-None-Match, so an unchanged
answer is a 304), while a few of them upload datasets; one celery worker trains.

It starts everything itself: a fresh Postgres database, a redis-server of its own on a free port, the API under
uvicorn with --workers, and one celery worker (uds-tiny on CPU). First the job runs with no load (the baseline
step time), then the same job again under load. Reports throughput, p50/p99 latency, errors and the 304 share per
endpoint and for all polls, and the training slowdown (median step compute time and job wall time, with vs without
load).

    .venv/bin/python benchmarks/load.py --clients 100 --interval 0.5 --steps 40 --api-workers 2 [--append]

Then the slow-client scenario: another tenant's pollers alone, and again beside 50 slow uploads and 50 unread
downloads of other tenants (their p99 must not move).

Writes benchmarks/results/load.md (and load.json); --append adds the run to them, so repeated runs are all reported. Bounded: the load phase ends when the job finishes or after
--max-seconds.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import secrets
import shutil
import statistics
import sys
import time
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks.stack import Process, Worker, distributed_env, free_port, postgres_database  # noqa: E402
from uds.toy_data import make_rows, to_jsonl  # noqa: E402

KEY = "uds-load-" + secrets.token_hex(16)
JOB = dict(
    candidate_batch_size=8,
    budget=0.25,
    max_seq_len=64,
    micro_batch_size=2,
    lora_r=4,
    lora_alpha=8,
    learning_rate=1e-3,
    warmup_ratio=0.0,
)


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q / 100 * (len(ordered) - 1))))]


def wait_http(url: str, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    raise SystemExit(f"{url} not ready")


def run_job(client: httpx.Client, dataset_id: str, steps: int) -> str:
    response = client.post(
        "/api/v1/jobs",
        json={"dataset_id": dataset_id, "model": "uds-tiny", "max_steps": steps, "checkpoint_every": steps, **JOB},
    )
    response.raise_for_status()
    return response.json()["id"]


def wait_job(client: httpx.Client, job_id: str, timeout: float) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = client.get(f"/api/v1/jobs/{job_id}").json()
        if job["status"] in ("succeeded", "failed", "cancelled"):
            return job
        time.sleep(0.5)
    raise SystemExit(f"job {job_id} did not finish in {timeout}s")


def step_times(client: httpx.Client, job_id: str) -> dict:
    metrics = client.get(f"/api/v1/jobs/{job_id}/metrics", params={"limit": 1000}).json()["data"]
    compute = [m["time_scoring"] + m["time_training"] for m in metrics]
    return {"steps": len(metrics), "median_step_compute_s": statistics.median(compute)}


def job_wall(job: dict) -> float:
    from datetime import datetime

    start = datetime.fromisoformat(job["started_at"].replace("Z", "+00:00"))
    end = datetime.fromisoformat(job["finished_at"].replace("Z", "+00:00"))
    return (end - start).total_seconds()


class Connection:
    """One poller's keep-alive HTTP/1.1 connection, as a browser tab holds one: a GET written by hand, the answer's
    status line, headers and Content-Length body read back. The load generator shares the cores with the server it
    measures; httpx costs a few ms of CPU a request (half a core at 200 polls/s), which this costs a tenth of."""

    def __init__(self, host: str, port: int, headers: dict[str, str]):
        self.host, self.port = host, port
        self.fixed = "".join(f"{name}: {value}\r\n" for name, value in {"Host": f"{host}:{port}", **headers}.items())
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def get(self, target: str, headers: dict[str, str]) -> tuple[int, dict[str, str], bytes]:
        if self.writer is None or self.writer.is_closing():
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        extra = "".join(f"{name}: {value}\r\n" for name, value in headers.items())
        self.writer.write(f"GET {target} HTTP/1.1\r\n{self.fixed}{extra}\r\n".encode())
        assert self.reader is not None
        head = await self.reader.readuntil(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ", 2)[1])
        fields = {}
        for line in lines[1:]:
            if line:
                name, _, value = line.partition(":")
                fields[name.strip().lower()] = value.strip()
        if fields.get("transfer-encoding", "").lower() == "chunked":
            raise ValueError("chunked answers are not expected from the polled routes")
        body = await self.reader.readexactly(int(fields.get("content-length", "0")))
        if fields.get("connection", "").lower() == "close":
            self.writer.close()
        return status, fields, body

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


async def load_phase(
    url: str,
    job_id: str,
    clients: int,
    interval: float,
    uploaders: int,
    upload_every: float,
    max_seconds: float,
    dataset_bytes: bytes,
) -> dict:
    samples: dict[str, list[float]] = {}
    errors: dict[str, int] = {}
    not_modified: dict[str, int] = {}
    done = asyncio.Event()
    limits = httpx.Limits(max_connections=clients + 10, max_keepalive_connections=clients + 10)

    async with httpx.AsyncClient(
        base_url=url, headers={"Authorization": f"Bearer {KEY}"}, timeout=30, limits=limits
    ) as client:

        async def timed(name: str, method: str, path: str, **kwargs):
            start = time.perf_counter()
            try:
                response = await client.request(method, path, **kwargs)
                ok = response.status_code < 400
            except httpx.HTTPError:
                response, ok = None, False
            samples.setdefault(name, []).append(time.perf_counter() - start)
            if not ok:
                errors[name] = errors.get(name, 0) + 1
            elif response is not None and response.status_code == 304:
                not_modified[name] = not_modified.get(name, 0) + 1
            return response

        parsed = httpx.URL(url)

        async def poller(i: int):
            # As the dashboard polls: each answer's ETag goes back as If-None-Match, and a 304 keeps what it has.
            after, tags = 0, {}
            connection = Connection(parsed.host, parsed.port or 80, {"Authorization": f"Bearer {KEY}"})

            async def revalidate(name: str, target: str) -> tuple[int, bytes] | None:
                sent = tags.get(target)
                start = time.perf_counter()
                try:
                    status, headers, body = await connection.get(target, {"If-None-Match": sent} if sent else {})
                except (OSError, ValueError, asyncio.IncompleteReadError):
                    connection.close()
                    status, headers, body = 0, {}, b""
                samples.setdefault(name, []).append(time.perf_counter() - start)
                if not 200 <= status < 400:
                    errors[name] = errors.get(name, 0) + 1
                    return None
                if status == 304:
                    not_modified[name] = not_modified.get(name, 0) + 1
                elif "etag" in headers:
                    tags[target] = headers["etag"]
                return status, body

            await asyncio.sleep(interval * i / clients)  # spread the clients over one interval
            try:
                while not done.is_set():
                    job = await revalidate("GET /jobs/{id}", f"/api/v1/jobs/{job_id}")
                    page = await revalidate(
                        "GET /jobs/{id}/metrics", f"/api/v1/jobs/{job_id}/metrics?after_step={after}"
                    )
                    if page is not None and page[0] == 200:
                        after = json.loads(page[1])["last_step"] or after
                    if job is not None and job[0] == 200 and json.loads(job[1])["status"] in ("succeeded", "failed"):
                        done.set()
                    await asyncio.sleep(interval)
            finally:
                connection.close()

        async def uploader(i: int):
            await asyncio.sleep(upload_every * i / max(1, uploaders))
            while not done.is_set():
                await timed(
                    "POST /datasets", "POST", "/api/v1/datasets", files={"file": (f"load-{i}.jsonl", dataset_bytes)}
                )
                await asyncio.sleep(upload_every)

        started = time.perf_counter()
        tasks = [asyncio.create_task(poller(i)) for i in range(clients - uploaders)]
        tasks += [asyncio.create_task(uploader(i)) for i in range(uploaders)]
        try:
            await asyncio.wait_for(done.wait(), max_seconds)
        except asyncio.TimeoutError:
            done.set()
        await asyncio.gather(*tasks)
        elapsed = time.perf_counter() - started
    return {"elapsed_s": elapsed, "samples": samples, "errors": errors, "not_modified": not_modified}


# ---- slow clients: other tenants' pollers with and without 50 slow uploads + 50 unread downloads ----------------


async def slow_upload(port: int, key: str, hold: asyncio.Event) -> None:
    """A multipart upload that sends its headers, then a byte every 2 s (as a stalled mobile link would)."""
    boundary = "slowboundary"
    head = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="slow.jsonl"\r\n'
        "Content-Type: application/octet-stream\r\n\r\n"
    ).encode()
    request = (
        f"POST /api/v1/datasets HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nAuthorization: Bearer {key}\r\n"
        f"Content-Type: multipart/form-data; boundary={boundary}\r\nContent-Length: 100000\r\n\r\n"
    ).encode()
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(request + head)
        while not hold.is_set():
            writer.write(b"{")
            await writer.drain()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(hold.wait(), 2)
    except OSError:
        pass  # cut off by the server's slow-client timeout: that is the defence working
    finally:
        writer.close()


async def unread_download(port: int, key: str, file_id: str, hold: asyncio.Event) -> None:
    """A download of a large file whose client never reads: the server's socket buffer fills and it must wait."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(
            f"GET /v1/files/{file_id}/content HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
            f"Authorization: Bearer {key}\r\n\r\n".encode()
        )
        await writer.drain()
        await hold.wait()
    except OSError:
        pass
    finally:
        writer.close()


async def polling_phase(
    url: str, job_id: str, clients: int, interval: float, seconds: float, slow: list | None = None
) -> dict:
    """`clients` pollers of the job for `seconds`; with `slow`, the slow clients run meanwhile (started first)."""
    samples: list[float] = []
    errors = 0
    hold = asyncio.Event()
    slow_tasks = [asyncio.create_task(make(hold)) for make in (slow or [])]
    if slow_tasks:
        await asyncio.sleep(3)  # every slow client connected and holding its transfer before we measure
    limits = httpx.Limits(max_connections=clients + 10, max_keepalive_connections=clients + 10)
    async with httpx.AsyncClient(
        base_url=url, headers={"Authorization": f"Bearer {KEY}"}, timeout=30, limits=limits
    ) as client:
        stop = time.perf_counter() + seconds

        async def poller(i: int):
            nonlocal errors
            tag = None  # revalidated, as the dashboard polls
            await asyncio.sleep(interval * i / clients)
            while time.perf_counter() < stop:
                start = time.perf_counter()
                try:
                    headers = {"If-None-Match": tag} if tag else {}
                    response = await client.get(f"/api/v1/jobs/{job_id}", headers=headers)
                    ok = response.status_code in (200, 304)
                    tag = response.headers.get("etag", tag)
                except httpx.HTTPError:
                    ok = False
                samples.append(time.perf_counter() - start)
                errors += not ok
                await asyncio.sleep(interval)

        await asyncio.gather(*(poller(i) for i in range(clients)))
    hold.set()
    await asyncio.gather(*slow_tasks)
    return {
        "requests": len(samples),
        "errors": errors,
        "p50_ms": 1000 * percentile(samples, 50),
        "p99_ms": 1000 * percentile(samples, 99),
        "max_ms": 1000 * max(samples),
    }


def slow_client_scenario(url: str, port: int, database_url: str, job_id: str, args, work: Path) -> dict:
    """Pollers of one tenant alone, then the same pollers while other tenants hold `--slow-clients` slow uploads
    (one per tenant) and as many unread downloads of a large file (8 per tenant: UDS_MAX_DOWNLOADS_PER_KEY)."""
    from api.auth import add_key
    from api.db import session_factory

    big = work / "big.jsonl"
    # ~8 MB: more than the loopback socket buffers hold
    big.write_bytes(to_jsonl(make_rows(80_000, fmt="chat", seed=2)))
    with session_factory(database_url)() as session:
        keys = [add_key(session, f"slow-{i}") for i in range(args.slow_clients)]
        session.commit()
    downloaders = keys[: -(-args.slow_clients // 8)]  # ceil(n / 8) tenants, 8 downloads each
    with httpx.Client(base_url=url, timeout=300) as client, open(big, "rb") as f:
        data = f.read()
        file_ids = {
            k: client.post(
                "/v1/files",
                headers={"Authorization": f"Bearer {k}"},
                files={"file": ("big.jsonl", data)},
                data={"purpose": "fine-tune"},
            ).json()["id"]
            for k in downloaders
        }
    slow = [lambda hold, k=k: slow_upload(port, k, hold) for k in keys]
    slow += [
        lambda hold, k=k: unread_download(port, k, file_ids[k], hold) for k in (downloaders * 8)[: args.slow_clients]
    ]
    alone = asyncio.run(polling_phase(url, job_id, args.slow_pollers, args.interval, args.slow_seconds))
    beside = asyncio.run(polling_phase(url, job_id, args.slow_pollers, args.interval, args.slow_seconds, slow))
    return {
        "alone": alone,
        "with_slow_clients": beside,
        "slow_uploads": len(keys),
        "unread_downloads": min(len(downloaders) * 8, args.slow_clients),
        "download_bytes": len(data),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", type=int, default=100)
    parser.add_argument("--uploaders", type=int, default=5, help="of the clients, how many upload instead of polling")
    parser.add_argument("--interval", type=float, default=0.5, help="seconds between one client's polls")
    parser.add_argument("--upload-every", type=float, default=3.0)
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--api-workers", type=int, default=2)
    parser.add_argument("--max-seconds", type=float, default=240)
    parser.add_argument(
        "--slow-clients",
        type=int,
        default=50,
        help="tenants holding one slow upload and one unread download each (0: skip the scenario)",
    )
    parser.add_argument("--slow-pollers", type=int, default=45, help="another tenant's pollers in that scenario")
    parser.add_argument("--slow-seconds", type=float, default=20, help="length of each polling phase")
    parser.add_argument("--append", action="store_true", help="add this run to the report instead of replacing it")
    parser.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "load.md"))
    args = parser.parse_args()

    load_before = os.getloadavg()[0]  # the report says how busy the machine was: runs on a shared host vary
    work = Path(os.environ.get("TMPDIR", "/tmp")) / f"uds-load-{secrets.token_hex(4)}"
    data_dir, logs = work / "data", work / "logs"
    logs.mkdir(parents=True)
    (data_dir / "models").mkdir(parents=True)
    from uds.models import TINY_MODEL, resolve_model

    resolve_model(TINY_MODEL, models_dir=data_dir / "models")
    dataset_path = work / "train.jsonl"
    dataset_path.write_bytes(to_jsonl(make_rows(256, fmt="chat", seed=1)))
    upload_bytes = dataset_path.read_bytes()[: 16 * 1024].rsplit(b"\n", 1)[0] + b"\n"

    redis_port = free_port()
    redis = Process(
        [
            shutil.which("redis-server"),
            "--port",
            str(redis_port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
        ],
        os.environ.copy(),
        logs / "redis.log",
    )
    processes = [redis]
    try:
        with postgres_database("uds_load") as database_url:
            env = distributed_env(
                database_url,
                f"redis://127.0.0.1:{redis_port}/0",
                "gpu-load",
                data_dir,
                KEY,
                "load",
                UDS_CREATE_RATE_PER_MINUTE="0",
                UDS_MAX_ACTIVE_JOBS="0",
            )
            from api.db import migrate

            migrate(database_url)  # once, before the uvicorn workers start
            port = free_port()
            api = Process(
                [
                    sys.executable,
                    "-m",
                    "uvicorn",
                    "api.main:app",
                    "--host",
                    "127.0.0.1",
                    "--port",
                    str(port),
                    "--workers",
                    str(args.api_workers),
                    "--log-level",
                    "warning",
                    "--no-access-log",
                ],
                env,
                logs / "api.log",
            )
            worker = Worker(env, logs / "worker.log", "gpu-load", "load@%h")
            processes += [api, worker]
            url = f"http://127.0.0.1:{port}"
            wait_http(url + "/readyz")
            with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {KEY}"}, timeout=60) as client:
                with open(dataset_path, "rb") as f:
                    dataset = client.post("/api/v1/datasets", files={"file": ("train.jsonl", f)}).json()
                # Warm-up job (model build and first-load costs), then the baseline without load.
                wait_job(client, run_job(client, dataset["id"], 4), 300)
                baseline_id = run_job(client, dataset["id"], args.steps)
                baseline_job = wait_job(client, baseline_id, 600)
                baseline = {**step_times(client, baseline_id), "wall_s": job_wall(baseline_job)}

                loaded_id = run_job(client, dataset["id"], args.steps)
                while client.get(f"/api/v1/jobs/{loaded_id}").json()["status"] != "running":
                    time.sleep(0.1)
                result = asyncio.run(
                    load_phase(
                        url,
                        loaded_id,
                        args.clients,
                        args.interval,
                        args.uploaders,
                        args.upload_every,
                        args.max_seconds,
                        upload_bytes,
                    )
                )
                loaded_job = wait_job(client, loaded_id, 600)
                loaded = {**step_times(client, loaded_id), "wall_s": job_wall(loaded_job)}
            slow = slow_client_scenario(url, port, database_url, loaded_id, args, work) if args.slow_clients else None
    finally:
        for process in reversed(processes):
            process.stop()

    rows, total, total_errors, total_304 = [], 0, 0, 0
    polled = []
    for name, values in sorted(result["samples"].items()):
        n, err, n304 = len(values), result["errors"].get(name, 0), result["not_modified"].get(name, 0)
        total += n
        total_errors += err
        total_304 += n304
        if name.startswith("GET "):
            polled += values
        rows.append(
            {
                "endpoint": name,
                "requests": n,
                "per_s": n / result["elapsed_s"],
                "errors": err,
                "not_modified": n304,
                "not_modified_share": n304 / n,
                "p50_ms": 1000 * percentile(values, 50),
                "p99_ms": 1000 * percentile(values, 99),
                "max_ms": 1000 * max(values),
            }
        )
    report = {
        "args": vars(args),
        "elapsed_s": result["elapsed_s"],
        "requests": total,
        "errors": total_errors,
        "not_modified": total_304,
        "throughput_per_s": total / result["elapsed_s"],
        "endpoints": rows,
        "polling": {
            "p50_ms": 1000 * percentile(polled, 50),
            "p99_ms": 1000 * percentile(polled, 99),
            "not_modified_share": total_304 / max(1, len(polled)),
        },
        "baseline": baseline,
        "loaded": loaded,
        "slowdown": {
            "median_step_compute": loaded["median_step_compute_s"] / baseline["median_step_compute_s"],
            "wall": loaded["wall_s"] / baseline["wall_s"],
        },
        "job_status": loaded_job["status"],
        "cpus": os.cpu_count(),
        "slow_clients": slow,
        "load_average_before": load_before,
    }
    write_report(report, Path(args.out))
    print(json.dumps(report, indent=2))
    return 0 if loaded_job["status"] == "succeeded" else 1


def write_report(report: dict, path: Path) -> None:
    a = report["args"]
    command = (
        f".venv/bin/python benchmarks/load.py --clients {a['clients']} --uploaders {a['uploaders']} "
        f"--interval {a['interval']} --upload-every {a['upload_every']} --steps {a['steps']} "
        f"--api-workers {a['api_workers']}"
    )
    b, loaded = report["baseline"], report["loaded"]
    lines = [
        "# Load: polling and uploads against the distributed mode on loopback",
        "",
        f"Command: `{command}`",
        "",
        f"Set-up: Postgres (fresh database) + a redis-server of its own + the API under uvicorn with "
        f"{a['api_workers']} workers + one celery worker training uds-tiny on CPU, all on this machine "
        f"({report['cpus']} cores, shared with the load generator). {a['clients']} concurrent clients "
        f"(pollers: one keep-alive HTTP/1.1 connection each, written by hand so the generator costs little of the "
        f"cores it shares; uploaders: `httpx.AsyncClient`): {a['clients'] - a['uploaders']} poll `GET /api/v1/jobs/{{id}}` then "
        f"`GET /api/v1/jobs/{{id}}/metrics?after_step=<last>` every {a['interval']} s each (as the dashboard does), "
        f"{a['uploaders']} upload a 16 KB dataset every {a['upload_every']} s each, for as long as a "
        f"{a['steps']}-step job trains. Creation rate limits were switched off for this run "
        "(`UDS_CREATE_RATE_PER_MINUTE=0`): one key uploads far more than a person would.",
        "",
        f"Load phase: {report['elapsed_s']:.1f} s, {report['requests']} requests, "
        f"{report['throughput_per_s']:.0f} requests/s, **{report['errors']} errors**.",
        "",
        "| endpoint | requests | per s | errors | 304 share | p50 ms | p99 ms | max ms |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in report["endpoints"]:
        lines.append(
            f"| `{r['endpoint']}` | {r['requests']} | {r['per_s']:.1f} | {r['errors']} | "
            f"{r.get('not_modified_share', 0):.0%} | {r['p50_ms']:.1f} | {r['p99_ms']:.1f} | {r['max_ms']:.1f} |"
        )
    polling = report.get("polling")
    if polling:
        lines += [
            "",
            f"Polls (both GETs, each sending the last ETag as `If-None-Match`, as the dashboard does): "
            f"**p50 {polling['p50_ms']:.0f} ms, p99 {polling['p99_ms']:.0f} ms**, "
            f"{polling['not_modified_share']:.0%} answered 304 Not Modified.",
        ]
    slowdown_compute = loaded["median_step_compute_s"] / b["median_step_compute_s"] - 1
    slowdown_wall = loaded["wall_s"] / b["wall_s"] - 1
    lines += [
        "",
        "Training slowdown (the same job, same seed, with and without the load):",
        "",
        "| | without load | with load | change |",
        "|---|---:|---:|---:|",
        f"| median step compute (scoring + training), s | {b['median_step_compute_s']:.3f} | "
        f"{loaded['median_step_compute_s']:.3f} | {slowdown_compute:+.0%} |",
        f"| job wall time ({b['steps']} steps, start to finish), s | {b['wall_s']:.1f} | {loaded['wall_s']:.1f} | "
        f"{slowdown_wall:+.0%} |",
        "",
        f"Training slowdown: **{1 + slowdown_wall:.2f}x** wall time, {1 + slowdown_compute:.2f}x median step compute.",
        "",
        f"Job under load: {report['job_status']}. Goals: zero errors, p99 of the polls under 200 ms, a training "
        "slowdown under 1.2x.",
        f"Load average before the run: {report['load_average_before']:.2f} ({report['cpus']} cores).",
        "",
    ]
    lines += slow_client_lines(report.get("slow_clients"), a)
    path.parent.mkdir(parents=True, exist_ok=True)
    if report["args"].get("append") and path.exists():
        runs = json.loads(path.with_suffix(".json").read_text())
        runs = runs if isinstance(runs, list) else [runs]
        lines[0] = f"## Run {len(runs) + 1}"
        path.write_text(path.read_text().rstrip("\n") + "\n\n" + "\n".join(lines))
    else:
        runs = []
        lines[0] = "## Run 1"
        path.write_text("# Load: polling and uploads against the distributed mode on loopback\n\n" + "\n".join(lines))
    path.with_suffix(".json").write_text(json.dumps(runs + [report], indent=2))


def slow_client_lines(slow: dict | None, a: dict) -> list[str]:
    if not slow:
        return []
    alone, beside = slow["alone"], slow["with_slow_clients"]
    return [
        f"Slow clients: {a['slow_pollers']} pollers of the `load` tenant (`GET /api/v1/jobs/{{id}}` every "
        f"{a['interval']} s each) for {a['slow_seconds']:g} s alone, then again while {slow['slow_uploads']} other "
        f"tenants each hold one upload sending a byte every 2 s, and {slow['unread_downloads']} downloads (8 per "
        f"tenant) of a {slow['download_bytes'] / 1e6:.1f} MB file are never read.",
        "",
        "| pollers | requests | errors | p50 ms | p99 ms | max ms |",
        "|---|---:|---:|---:|---:|---:|",
        f"| alone | {alone['requests']} | {alone['errors']} | {alone['p50_ms']:.1f} | {alone['p99_ms']:.1f} | "
        f"{alone['max_ms']:.1f} |",
        f"| beside {slow['slow_uploads']} slow uploads + {slow['unread_downloads']} unread downloads | {beside['requests']} | {beside['errors']} | "
        f"{beside['p50_ms']:.1f} | {beside['p99_ms']:.1f} | {beside['max_ms']:.1f} |",
        "",
    ]


if __name__ == "__main__":
    raise SystemExit(main())
