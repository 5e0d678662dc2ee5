"""How close POST /api/v1/jobs/estimate comes to what jobs then take.

Each run starts a fresh embedded service (`uds serve`, SQLite, uds-tiny on the CPU), trains one calibration job so
the deployment has a measurement, then a few jobs of other sizes. Before each, it asks for the estimate; after
each, it compares the estimated seconds with the job's measured compute time (the sum of its steps' scoring and
training time: what the estimate models; loading and saving are outside it) and, for context, its wall time.
Every finished job adds a measurement, so `based_on` grows through a run.

    .venv/bin/python benchmarks/estimate.py [--runs 3]

Writes benchmarks/results/estimate.md: each run's jobs, ratio estimate / actual, the median error
(|ratio - 1|), and the load average (the machine is shared).
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks.stack import Server, child_env, free_port, wait_for  # noqa: E402
from uds.toy_data import make_rows, to_jsonl  # noqa: E402

COMMON = dict(budget=0.25, micro_batch_size=4, lora_r=4, lora_alpha=8, learning_rate=1e-3, warmup_ratio=0.0)
CALIBRATION = ("calibration", dict(max_steps=20, candidate_batch_size=8, max_seq_len=64))
JOBS = [
    ("short", dict(max_steps=10, candidate_batch_size=8, max_seq_len=64)),
    ("long", dict(max_steps=40, candidate_batch_size=8, max_seq_len=64)),
    ("wide groups", dict(max_steps=20, candidate_batch_size=16, max_seq_len=64)),
    ("cut rows", dict(max_steps=20, candidate_batch_size=8, max_seq_len=24)),  # rows of ~40 tokens cut to 24
]
ROWS = 400


def train(api: httpx.Client, dataset_id: str, settings: dict) -> dict:
    body = {"dataset_id": dataset_id, "model": "uds-tiny", "method": "uds", **COMMON, **settings}
    body["checkpoint_every"] = settings["max_steps"]
    estimate = api.post("/api/v1/jobs/estimate", json=body).raise_for_status().json()
    job_id = api.post("/api/v1/jobs", json=body).raise_for_status().json()["id"]

    def finished():
        job = api.get(f"/api/v1/jobs/{job_id}").raise_for_status().json()
        if job["status"] in ("failed", "cancelled"):
            raise SystemExit(f"job {job_id} {job['status']}: {job['error']}")
        return job if job["status"] == "succeeded" else None

    job = wait_for(finished, 600, f"job {job_id}", interval=0.5)
    metrics = api.get(f"/api/v1/jobs/{job_id}/metrics", params={"limit": 1000}).raise_for_status().json()["data"]
    compute = sum(m["time_scoring"] + m["time_training"] for m in metrics)
    started = job["started_at"]
    wall = None
    if started and job["finished_at"]:
        from datetime import datetime

        wall = (datetime.fromisoformat(job["finished_at"]) - datetime.fromisoformat(started)).total_seconds()
    return {"estimate": estimate, "job": job, "compute": compute, "wall": wall}


def one_run(index: int) -> dict:
    data = Path(tempfile.mkdtemp(prefix=f"uds-estimate-{index}-"))
    env = child_env(UDS_DATA_DIR=str(data / "data"), UDS_DEVICE="cpu", UDS_MIN_EXAMPLES="8")
    server = Server(free_port(), env, data / "server.log")
    load_before = os.getloadavg()
    try:
        server.wait_ready()
        api = httpx.Client(base_url=server.url, timeout=60)
        dataset = api.post(
            "/api/v1/datasets", files={"file": ("train.jsonl", to_jsonl(make_rows(ROWS, seed=index)))}
        ).raise_for_status()
        dataset_id = dataset.json()["id"]
        calibration = train(api, dataset_id, CALIBRATION[1])
        assert calibration["estimate"]["time"]["seconds"] is None, "a fresh service has no measurement"
        jobs = []
        for name, settings in JOBS:
            result = train(api, dataset_id, settings)
            result["name"], result["settings"] = name, settings
            jobs.append(result)
    finally:
        server.stop()
    return {"jobs": jobs, "load": (load_before, os.getloadavg()), "calibration": calibration}


def ratio(job: dict) -> float:
    return job["estimate"]["time"]["seconds"] / job["compute"]


def report(runs: list[dict], command: str) -> str:
    lines = [
        "# Estimate against actual time",
        "",
        f"Command: `{command}`",
        "",
        f"Setup: fresh embedded service per run (`uds serve`, SQLite), uds-tiny on the CPU ({platform.machine()}, "
        f"{os.cpu_count()} cores shared with other engineers' work, 1 torch thread), method uds at budget "
        f"{COMMON['budget']}, micro-batch {COMMON['micro_batch_size']}, {ROWS}-row toy dataset. Each run first "
        f"trains a calibration job ({CALIBRATION[1]['max_steps']} steps, B {CALIBRATION[1]['candidate_batch_size']}, "
        f"max_seq_len {CALIBRATION[1]['max_seq_len']}); then the jobs below, each estimated just before it was "
        "submitted (from every job finished so far: `based_on`).",
        "",
        "Actual = the job's compute time (its steps' scoring + training seconds), what the estimate models; wall time"
        " (start to finish: model loading, checkpoint and adapter saving too) is shown for context. Tokens: the"
        " estimate (trained examples x the dataset's mean row, cut at max_seq_len) against what the job trained.",
        "",
    ]
    errors = []
    for index, run in enumerate(runs, 1):
        (b1, b5, b15), (a1, a5, a15) = run["load"]
        lines += [
            f"## Run {index}",
            "",
            f"Load average before: {b1:.2f} / {b5:.2f} / {b15:.2f}; after: {a1:.2f} / {a5:.2f} / {a15:.2f}.",
            "",
            "| job | steps | B | max_seq_len | candidates | tokens estimated / trained | based on | estimate "
            "| actual compute | ratio | wall |",
            "|---|---|---|---|---|---|---|---|---|---|---|",
        ]
        for job in run["jobs"]:
            est, s = job["estimate"], job["settings"]
            r = ratio(job)
            errors.append(abs(r - 1))
            lines.append(
                f"| {job['name']} | {est['steps']} | {s['candidate_batch_size']} | {s['max_seq_len']} | "
                f"{est['candidates_scored']} | {est['tokens_trained']} / {job['job']['tokens_trained']} | "
                f"{est['time']['based_on']} | "
                f"{est['time']['seconds']:.2f} s | {job['compute']:.2f} s | {r:.2f} | "
                f"{job['wall']:.1f} s |"
            )
        run_errors = [abs(ratio(job) - 1) for job in run["jobs"]]
        lines += ["", f"Median error of run {index}: {statistics.median(run_errors):.0%}.", ""]
    lines += [
        "## Summary",
        "",
        f"**Median error over all {len(errors)} estimates: {statistics.median(errors):.0%}** "
        f"(largest {max(errors):.0%}).",
        "",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "estimate.md"))
    args = parser.parse_args()
    started = time.monotonic()
    runs = []
    for index in range(1, args.runs + 1):
        runs.append(one_run(index))
        print(f"run {index} done after {time.monotonic() - started:.0f} s", flush=True)
    command = ".venv/bin/python benchmarks/estimate.py" + (f" --runs {args.runs}" if args.runs != 3 else "")
    text = report(runs, command)
    Path(args.out).write_text(text, encoding="utf-8")
    print(text)


if __name__ == "__main__":
    main()
