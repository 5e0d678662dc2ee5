"""Throughput of one job on 1 and N devices, side by side in one run: `uds train` as one process, then under
torchrun on N (gloo on the CPU, NCCL on CUDA), the same job each time; three runs, each reported.

Per run and device count: candidates scored, examples trained and tokens trained per second of step time (the
steps' own timings, so model loading and process start are left out), the wall time of the whole command, and the
share of step time spent gathering the measures across devices and in the sequential selection after it. Every
multi-device run's picks are also checked against the one-device run's (the property the feature is for).

    .venv/bin/python benchmarks/devices.py                       # uds-tiny on the CPU, 1 vs 2 processes
    .venv/bin/python benchmarks/devices.py --model smollm2-135m-instruct --device cuda --devices 1 8

Writes benchmarks/results/devices.md (and devices.json).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="uds-tiny")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--devices", type=int, nargs="+", default=[1, 2], help="device counts (the first is the base)")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--rows", type=int, default=512)
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--candidate-batch-size", type=int, default=16)
    parser.add_argument("--groups-per-step", type=int, default=8)
    parser.add_argument("--budget", type=float, default=0.25)
    parser.add_argument("--micro-batch-size", type=int, default=4)
    parser.add_argument("--max-seq-len", type=int, default=128)
    parser.add_argument("--models-dir", default=None, help="where the model is (default: the service's models folder)")
    parser.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "devices"))
    return parser.parse_args()


def prepare(args: argparse.Namespace, folder: Path) -> tuple[Path, str]:
    from api.settings import get_settings
    from uds.models import resolve_model
    from uds.toy_data import make_rows, to_jsonl

    models_dir = args.models_dir or str(get_settings().models_dir)
    resolve_model(args.model, models_dir=models_dir)  # built or converted once, before any timing
    data = folder / "train.jsonl"
    data.write_bytes(to_jsonl(make_rows(args.rows, seed=0)))
    return data, models_dir


def train(args: argparse.Namespace, data: Path, models_dir: str, devices: int, output: Path) -> dict:
    command = [
        sys.executable, "-m", "cli.main", "train", "--data", str(data), "--models-dir", models_dir,
        "--model", args.model, "--device", args.device, "--devices", str(devices), "--max-steps", str(args.steps),
        "--candidate-batch-size", str(args.candidate_batch_size), "--groups-per-step", str(args.groups_per_step),
        "--budget", str(args.budget), "--micro-batch-size", str(args.micro_batch_size),
        "--max-seq-len", str(args.max_seq_len), "--lora-dropout", "0", "--checkpoint-every", str(args.steps),
        "--output-dir", str(output), "--no-resume", "--quiet",
    ]  # fmt: skip
    environment = {**os.environ, "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1"}
    started = time.perf_counter()
    finished = subprocess.run(command, env=environment, capture_output=True, text=True)
    wall = time.perf_counter() - started
    if finished.returncode != 0:
        raise SystemExit(f"uds train --devices {devices} failed:\n{finished.stderr[-3000:]}")
    return measured(output, devices, wall)


def measured(output: Path, devices: int, wall: float) -> dict:
    steps = [json.loads(line) for line in (output / "metrics.jsonl").read_text().splitlines()]
    step_time = sum(s["time_scoring"] + s["time_training"] for s in steps)
    picks = {}
    for line in (output / "selections.jsonl").read_text().splitlines():
        row = json.loads(line)
        if row["selected"]:
            picks.setdefault(row["step"], []).append(row["row"])
    return {
        "devices": devices,
        "wall_seconds": wall,
        "step_seconds": step_time,
        "candidates_per_second": sum(s["candidates"] for s in steps) / step_time,
        "examples_per_second": sum(s["selected"] for s in steps) / step_time,
        "tokens_per_second": sum(s["tokens_trained"] for s in steps) / step_time,
        "scoring_share": sum(s["time_scoring"] for s in steps) / step_time,
        "gather_share": sum(s["stats"]["time_gather"] for s in steps) / step_time,
        "select_share": sum(s["stats"]["time_select"] for s in steps) / step_time,
        "picks": {str(step): sorted(rows) for step, rows in picks.items()},
    }


def report(args: argparse.Namespace, runs: list[list[dict]]) -> str:
    load = os.getloadavg()[0]
    lines = [
        f"# One job on {' vs '.join(map(str, args.devices))} devices ({args.device})",
        "",
        f"`{' '.join([Path(sys.executable).name, *sys.argv])}`",
        "",
        f"{args.model}, {args.steps} steps of {args.groups_per_step} groups x {args.candidate_batch_size} candidates "
        f"(budget {args.budget:g}, micro-batch {args.micro_batch_size}, max_seq_len {args.max_seq_len}); "
        f"{os.cpu_count()} CPU cores, load average {load:.1f} at the end. Rates are per second of step time "
        "(scoring + training, as the steps timed themselves); wall is the whole command (start, load, save).",
        "",
        "| run | devices | candidates/s | examples/s | tokens/s | vs 1 device | wall s | gather | selection | same picks |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for number, results in enumerate(runs, 1):
        base = results[0]
        for result in results:
            same = "yes" if result["picks"] == base["picks"] else "**no**"
            lines.append(
                f"| {number} | {result['devices']} | {result['candidates_per_second']:.1f} | "
                f"{result['examples_per_second']:.2f} | {result['tokens_per_second']:.0f} | "
                f"{result['examples_per_second'] / base['examples_per_second']:.2f}x | {result['wall_seconds']:.1f} | "
                f"{result['gather_share']:.1%} | {result['select_share']:.1%} | {same} |"
            )
    return "\n".join(lines) + "\n"


def main() -> None:
    args = parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    runs: list[list[dict]] = []
    with tempfile.TemporaryDirectory(prefix="uds-devices-") as scratch:
        data, models_dir = prepare(args, Path(scratch))
        for run in range(args.runs):
            results = []
            for devices in args.devices:
                result = train(args, data, models_dir, devices, Path(scratch) / f"run{run}-{devices}")
                results.append(result)
                print(
                    f"run {run + 1}, {devices} device(s): {result['examples_per_second']:.2f} examples/s, "
                    f"gather {result['gather_share']:.1%}, selection {result['select_share']:.1%}",
                    flush=True,
                )
            runs.append(results)
    text = report(args, runs)
    (out / "devices.md").write_text(text, encoding="utf-8")
    for results in runs:
        for result in results:
            result.pop("picks")
    (out / "devices.json").write_text(json.dumps(runs, indent=2), encoding="utf-8")
    print(text)


if __name__ == "__main__":
    main()
