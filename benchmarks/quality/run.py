"""Does selection pay? The quality benchmark: one command, from the dataset to the report.

    .venv/bin/python -m benchmarks.quality.run --seeds 3          # the full benchmark (see README.md for run time)
    .venv/bin/python -m benchmarks.quality.run --quick            # seconds: a smoke run of every stage
    .venv/bin/python -m benchmarks.quality.run --report-only      # rewrite report.md and plots from results.json
    .venv/bin/python -m benchmarks.quality.run --train my.jsonl --eval my_eval.jsonl   # any user's data (compare.py)

Stages: (1) the dataset (benchmarks/quality/data, built if missing), (2) the base model (pretrained once, cached
under --data-dir), (3) the comparison: every method and budget, same base, same candidate steps, same learning
rate schedule, each seed, (4) the cost: uds 12.5% against full on random-weight models of several vocabulary
sizes and depths, (5) report.md, results.json and PNG plots under --out.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import torch  # noqa: E402  (after the offline switches above)

from benchmarks.quality import compare, compare_report  # noqa: E402
from benchmarks.quality.dataset import write as write_dataset  # noqa: E402
from benchmarks.quality.pretrain import (  # noqa: E402
    BASE_SHAPE,
    DEFAULT_DATA_DIR,
    QUICK_SHAPE,
    base_model_dir,
    build_model,
    pretrain,
)
from benchmarks.quality.training import run_one  # noqa: E402
from uds.config import TrainConfig, total_steps  # noqa: E402
from uds.tiny import build_tokenizer  # noqa: E402
from uds.trainer import train  # noqa: E402

HERE = Path(__file__).resolve().parent
DEFAULT_OUT = ROOT / "benchmarks" / "results" / "quality"

# (label, method, budget, extra TrainConfig fields). The main grid of the issue...
GRID = [
    ("full", "full", 1.0, {}),
    ("uds", "uds", 0.125, {}),
    ("random", "random", 0.125, {}),
    ("max_loss", "max_loss", 0.125, {}),
    ("max_grad", "max_grad", 0.125, {}),
    ("uds", "uds", 0.25, {}),
    ("random", "random", 0.25, {}),
    ("max_loss", "max_loss", 0.25, {}),
    ("max_grad", "max_grad", 0.25, {}),
]
# ...and variants of uds. "previous defaults" is how the service selected before it followed the paper's step structure: one group of 32 candidates
# per optimizer step (k 4 at 12.5%), random order, alpha auto, cosine, token-weighted loss, PEFT's default LoRA init.
PREVIOUS_DEFAULTS = {
    "candidate_batch_size": 32,
    "groups_per_step": 1,
    "group_by_length": False,
    "alpha": "auto",
    "lr_schedule": "cosine",
    "loss_weighting": "token",
    "lora_init": "default",
    "equal_rows": False,
}
VARIANTS = [
    ("uds, recipe=paper", "uds", 0.25, {"recipe": "paper"}),  # B 4, k 1 (at 12.5% the recipe with B 8 is the default)
    ("uds, previous defaults", "uds", 0.125, PREVIOUS_DEFAULTS),
    ("uds, equal_rows=false", "uds", 0.125, {"equal_rows": False}),
    ("uds, no length grouping", "uds", 0.125, {"group_by_length": False, "equal_rows": False}),
    ("uds, alpha=auto", "uds", 0.125, {"alpha": "auto"}),
    ("uds alpha=0 (utility only)", "uds", 0.125, {"alpha": 0.0}),
    ("uds, score_on=answer", "uds", 0.125, {"score_on": "answer"}),
]


def cost_runs(settings: dict, shapes: list[dict], steps: int, log) -> list[dict]:
    """uds 12.5% vs full on random-weight models (same data, same process): time split scoring / training."""
    rows = []
    tokenizer = build_tokenizer()
    with tempfile.TemporaryDirectory(prefix="uds-cost-") as root:
        for shape in shapes:
            full_shape = {**(settings.get("cost_shape") or BASE_SHAPE), "num_hidden_layers": shape["layers"]}
            model = build_model(tokenizer, 0, full_shape)
            if shape["vocab"] != model.config.vocab_size:
                model.resize_token_embeddings(shape["vocab"])
            folder = Path(root) / f"v{shape['vocab']}-l{shape['layers']}"
            model.save_pretrained(folder)
            tokenizer.save_pretrained(folder)
            del model
            row = {"vocab": shape["vocab"], "layers": shape["layers"], "hidden": full_shape["hidden_size"]}
            for method, budget in (("uds", 0.125), ("full", 1.0)):
                # One epoch each: both see every candidate once (uds scores all, trains on 12.5%).
                config = TrainConfig(
                    model=str(folder),
                    dataset_path=settings["train"],
                    output_dir=str(Path(root) / f"out-{folder.name}-{method}"),
                    method=method,
                    budget=budget,
                    epochs=1,
                    max_steps=steps,
                    learning_rate=settings["learning_rate"],
                    max_seq_len=settings["max_seq_len"],
                    micro_batch_size=settings["micro_batch_size"],
                    seed=0,
                    device="cpu",
                    checkpoint_every=10_000_000,
                    keep_checkpoints=1,
                )
                started = time.perf_counter()
                summary = train(config, None, resume=False).summary
                row[method] = {
                    "wall_s": time.perf_counter() - started,
                    "time_scoring": summary["time_scoring"],
                    "time_training": summary["time_training"],
                }
                shutil.rmtree(config.output_dir, ignore_errors=True)
            u, f = row["uds"], row["full"]
            row["ratio_vs_full"] = (u["time_scoring"] + u["time_training"]) / (f["time_scoring"] + f["time_training"])
            row["ratio_vs_sft"] = (u["time_scoring"] + u["time_training"]) / f["time_training"]
            row["scoring_share"] = u["time_scoring"] / (u["time_scoring"] + u["time_training"])
            log(
                f"cost V={shape['vocab']} layers={shape['layers']}: uds/full {row['ratio_vs_full']:.2f}, uds/plain SFT {row['ratio_vs_sft']:.2f}, scoring share {row['scoring_share']:.0%}"
            )
            rows.append(row)
            torch.set_num_threads(torch.get_num_threads())
    return rows


def _num(value) -> str:
    return "n/a" if value is None else f"{value:+.2f}"


def main(argv=None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if any(arg.split("=")[0] in ("--train", "--eval", "--model") for arg in args):
        # A user's data or model: every method at the chosen budgets, paired seeds and intervals (compare.py takes
        # the same command line; `--help` there lists its flags).
        return compare.main(args)
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=3, help="passes over the training rows per run")
    parser.add_argument("--learning-rate", type=float, default=1e-2)
    parser.add_argument("--pretrain-steps", type=int, default=600)
    parser.add_argument(
        "--no-variants",
        action="store_true",
        help="skip the uds variants (recipe=paper, previous defaults, no equal rows, no length grouping)",
    )
    parser.add_argument("--no-cost", action="store_true", help="skip the cost part")
    parser.add_argument(
        "--quick", action="store_true", help="a smoke run: tiny everything, report not written to --out unless given"
    )
    parser.add_argument("--report-only", action="store_true")
    parser.add_argument(
        "--data-dir",
        default=None,
        help="cache of the base model (default ~/.cache/uds/bench-quality or $UDS_BENCH_DIR)",
    )
    parser.add_argument("--out", default=None)
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch threads; 1 is fastest on a busy machine (2 threads spin-wait for each other)",
    )
    args = parser.parse_args(argv)

    torch.set_num_threads(args.threads)
    out = (
        Path(args.out)
        if args.out
        else (Path(tempfile.mkdtemp(prefix="uds-quality-quick-")) if args.quick else DEFAULT_OUT)
    )
    out.mkdir(parents=True, exist_ok=True)
    if args.report_only:
        compare_report.write(json.loads((out / "results.json").read_text()), out)
        print(out / "report.md")
        return 0

    def log(message):
        print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)

    started = time.perf_counter()
    data_dir = Path(args.data_dir) if args.data_dir else DEFAULT_DATA_DIR
    dataset_dir = HERE / "data"
    if args.quick:
        dataset_dir = out / "data"
    if not (dataset_dir / "train.jsonl").exists():
        log(f"dataset: {write_dataset(dataset_dir)}")
    kinds = [json.loads(line)["kind"] for line in (dataset_dir / "train_meta.jsonl").read_text().splitlines()]

    pretrain_steps = 4 if args.quick else args.pretrain_steps
    shape = QUICK_SHAPE if args.quick else BASE_SHAPE
    base = base_model_dir(data_dir, pretrain_steps, 0, shape)
    t0 = time.perf_counter()
    base = pretrain(
        base,
        steps=pretrain_steps,
        seed=0,
        batch=4 if args.quick else 16,
        log=log,
        shape=shape,
        text_chars=20_000 if args.quick else None,
    )
    pretrain_info = json.loads((base / "pretrain.json").read_text())
    log(
        f"base model: {base} (val loss {pretrain_info['val_loss']:.3f}; {time.perf_counter() - t0:.0f} s now, {pretrain_info['seconds']:.0f} s when built)"
    )

    eval_path = dataset_dir / "eval.jsonl"
    if args.quick:
        lines = eval_path.read_text().splitlines()[:2]
        eval_path = out / "eval-small.jsonl"
        eval_path.write_text("\n".join(lines) + "\n")
    epochs = 1 if args.quick else args.epochs
    n_rows = len(kinds)
    # Evaluate about three times along the way; the number of steps depends on the method's groups per step.
    steps_at_12 = total_steps(TrainConfig(dataset_path="x", budget=0.125, epochs=epochs), n_rows)
    settings = {
        "model": str(base),
        "train": str(dataset_dir / "train.jsonl"),
        "eval": str(eval_path),
        "epochs": epochs,
        "candidate_batch_size": TrainConfig.__dataclass_fields__["candidate_batch_size"].default,
        "learning_rate": args.learning_rate,
        "warmup_ratio": 0.05,
        "max_seq_len": 192,
        "micro_batch_size": 4,
        "eval_every": max(1, steps_at_12 // 3),
        "threads": args.threads,
        "task": "signature QA",
        "budgets": [0.125, 0.25],
        "overrides": {},
        "pretrain": {
            **{k: v for k, v in pretrain_info.items() if k != "curve"},
            "kind": "byte-level, 260 tokens (pretrain.py)",
            "vocab_size": 260,
        },
        "pretrain_curve": pretrain_info["curve"],
        "n_train": len(kinds),
        "n_eval": len(eval_path.read_text().splitlines()),
        "train_kinds": {k: kinds.count(k) for k in sorted(set(kinds))},
        "cost_shape": shape,
    }
    grid = GRID + ([] if args.no_variants or args.quick else VARIANTS)
    if args.quick:
        grid = [GRID[0], GRID[1], GRID[2]]
    runs = []
    for seed in range(args.seeds if not args.quick else 1):
        for label, method, budget, extra in grid:
            row = run_one(settings, label, method, budget, extra, seed, kinds, curves=(seed == 0))
            runs.append(row)
            log(
                f"seed {seed} {label:>28} {budget:>5.3f}: eval loss {row['eval_loss']:.4f}, exact match {row['eval_accuracy']:.1%}, "
                f"answer tokens {row['eval_token_accuracy']:.1%}, {row['steps']} steps, rho(u, len) {_num(row['spearman_utility_length'])}, "
                f"{row['time_scoring'] + row['time_training']:.1f} s (scoring {row['time_scoring']:.1f} s)"
            )
    cost = []
    if not args.no_cost:
        shapes = (
            [{"vocab": 260, "layers": 1}, {"vocab": 1024, "layers": 1}]
            if args.quick
            else [
                {"vocab": 260, "layers": 2},
                {"vocab": 4096, "layers": 2},
                {"vocab": 32768, "layers": 2},
                {"vocab": 4096, "layers": 1},
                {"vocab": 4096, "layers": 8},
            ]
        )
        cost = cost_runs(settings, shapes, 2 if args.quick else None, log)
    results = {
        "command": " ".join(["python -m benchmarks.quality.run", *(argv if argv is not None else sys.argv[1:])]),
        "settings": settings,
        "runs": runs,
        "cost": cost,
        "total_wall_s": time.perf_counter() - started,
        "torch_threads": torch.get_num_threads(),
        "date": time.strftime("%Y-%m-%d %H:%M"),
    }
    (out / "results.json").write_text(json.dumps(results, indent=1))
    compare_report.write(results, out)
    log(f"done in {results['total_wall_s']:.0f} s: {out / 'report.md'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
