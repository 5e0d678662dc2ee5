"""Does UDS rank by length? The length diagnostic of three ways to form and score selection groups, side by side.

Runs `uds` at 12.5% on a dataset (default: the quality benchmark's training split) with uds-tiny (or --model), for
each seed: the defaults (length-grouped order, every candidate of a group scored on the group's shortest length),
length grouping alone (`equal_rows` off), and plain shuffled order (both off). Reports per run the mean
within-group Spearman correlation of utility and of the total score with token count, and the mean length of the
selected examples against the candidates (the goal with the defaults: rho under 0.3 and selected lengths within
10% of the candidates').

    .venv/bin/python benchmarks/length_bias.py                        # 3 seeds, 8 steps each; writes the report
    .venv/bin/python benchmarks/length_bias.py --data my.jsonl --seeds 1 --out -
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

DEFAULT_DATA = ROOT / "benchmarks" / "quality" / "data" / "train.jsonl"
DEFAULT_OUT = ROOT / "benchmarks" / "results" / "length_bias.md"


# label -> settings
ORDERS = {
    "defaults (grouped, equal rows)": {"group_by_length": True, "equal_rows": True},
    "grouped, all rows": {"group_by_length": True, "equal_rows": False},
    "shuffled, all rows": {"group_by_length": False, "equal_rows": False},
}


def run(data: str, model: str, seed: int, order: str, steps: int, max_seq_len: int) -> dict:
    from uds.config import TrainConfig
    from uds.trainer import train

    with tempfile.TemporaryDirectory(prefix="uds-length-") as out:
        config = TrainConfig(
            model=model,
            dataset_path=data,
            output_dir=out,
            method="uds",
            budget=0.125,
            max_steps=steps,
            seed=seed,
            max_seq_len=max_seq_len,
            checkpoint_every=10_000_000,
            device="cpu",
            **ORDERS[order],
        )
        summary = train(config, None, resume=False).summary
    return {
        "seed": seed,
        "order": order,
        **{
            k: summary[k]
            for k in (
                "spearman_utility_length",
                "spearman_score_length",
                "mean_length_candidates",
                "mean_length_selected",
            )
        },
    }


def report(rows: list[dict], command: str, data: str, model: str) -> str:
    lines = [
        "# Length bias of UDS selection: length-grouped candidates against plain shuffled order",
        "",
        f"Command: `{command}` ({time.strftime('%Y-%m-%d')}). Data: `{os.path.relpath(data, ROOT)}`. Model: `{model}`. "
        "uds at 12.5%, B=8, the service's defaults otherwise. One row per run; rho is the mean over the run's selection "
        "groups of Spearman's rank correlation with the token count (groups whose lengths are all equal have none).",
        "",
        "| order | seed | rho(utility, length) | rho(score, length) | mean length candidates | mean length selected | selected / candidates |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        ratio = r["mean_length_selected"] / r["mean_length_candidates"]
        lines.append(
            f"| {r['order']} | {r['seed']} | {_num(r['spearman_utility_length'])} | "
            f"{_num(r['spearman_score_length'])} | {r['mean_length_candidates']:.1f} | {r['mean_length_selected']:.1f} | {ratio:.3f} |"
        )
    return "\n".join(lines) + "\n"


def _num(value) -> str:
    return "n/a" if value is None else f"{value:.2f}"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", default=str(DEFAULT_DATA))
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--max-seq-len", type=int, default=256)
    parser.add_argument("--model", default="uds-tiny", help="uds-tiny (built here) or a model folder")
    parser.add_argument("--out", default=str(DEFAULT_OUT), help="markdown report, or - for standard output only")
    args = parser.parse_args(argv)

    import torch

    from uds.models import TINY_MODEL, resolve_model

    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory(prefix="uds-tiny-") as models:
        model = resolve_model(TINY_MODEL, models_dir=models) if args.model == TINY_MODEL else args.model
        rows = [
            run(args.data, model, seed, order, args.steps, args.max_seq_len)
            for seed in range(args.seeds)
            for order in ORDERS
        ]
    text = report(
        rows,
        " ".join(["python benchmarks/length_bias.py", *(argv if argv is not None else sys.argv[1:])]),
        args.data,
        args.model,
    )
    print(text)
    if args.out != "-":
        Path(args.out).write_text(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
