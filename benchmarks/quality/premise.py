"""The selection premise, tested: does an example's score predict how much one step on it lowers the held-out loss?

    .venv/bin/python -m benchmarks.quality.premise --model smollm2-135m-instruct --out benchmarks/results/premise

From one starting state (a fresh LoRA adapter, and again one halfway through a full-data run), for each of
`--probes` training examples alone: one optimizer step on it (the training's AdamW, its state as it was), the
change of the loss on a fixed held-out set and of the example's own loss, then the adapter and the optimizer state
restored exactly. Each example's scores are measured at that state as selection measures them (one no-grad pass of
the body through the selectors' own `measure`): utility (the nuclear norm of its logits), diversity (mean distance
of its projection to a memory of `--memory` other training rows), its mean token loss (max_loss) and the norm of
the loss's gradient with respect to the logits (max_grad). Then the correlation of each score with the decrease,
Pearson and Spearman with bootstrap intervals, raw, partial given the token count, and within length groups
(`uds.trainer.epoch_groups`, B rows of near-equal length, as selection sees them). A scatter plot per score.

The pool is the noisy arithmetic task (`arithmetic.py`): clean rows and the kinds of bad rows (wrong, truncated,
duplicated, off-topic), so the report also says which kinds a step on helps or hurts.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
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

from benchmarks.quality import arithmetic, premise_report  # noqa: E402
from benchmarks.quality import correlation as corr  # noqa: E402
from uds.config import TrainConfig  # noqa: E402
from uds.data import TokenizedExample, collate, tokenize_examples  # noqa: E402
from uds.device import resolve_device  # noqa: E402
from uds.engine import measure_batch, step_token_weights, weighted_token_loss  # noqa: E402
from uds.formats import Example, load_examples  # noqa: E402
from uds.models import (  # noqa: E402
    add_lora,
    body_hidden_states,
    load_model_and_tokenizer,
    output_head,
    resolve_model,
)
from uds.order import epoch_groups  # noqa: E402
from uds.selectors import MaxGradSelector, MaxLossSelector, UDSSelector  # noqa: E402

SCORES = ("utility", "diversity", "loss", "grad_norm")
TARGETS = ("held_out_decrease", "own_decrease")
BATCH = 16


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


# ---------------------------------------------------------------------------------------------------- state


class Probe:
    """A model with its LoRA adapter and optimizer, able to take one step on one example and come back exactly."""

    def __init__(self, model, tokenizer, optimizer: torch.optim.Optimizer, config: TrainConfig):
        self.model, self.tokenizer, self.optimizer, self.config = model, tokenizer, optimizer, config
        self.trainable = [p for p in model.parameters() if p.requires_grad]
        self.device = self.trainable[0].device

    def batch(self, items: list[TokenizedExample]) -> dict[str, torch.Tensor]:
        """`items` right-padded into one batch on the model's device."""
        return {k: v.to(self.device) for k, v in collate(items, self.tokenizer.pad_token_id).items()}

    def snapshot(self) -> tuple[list[torch.Tensor], dict]:
        """The adapter's weights and the optimizer's state, deep-copied."""
        return [p.detach().clone() for p in self.trainable], copy.deepcopy(self.optimizer.state_dict())

    def restore(self, snapshot: tuple[list[torch.Tensor], dict]) -> None:
        weights, optimizer_state = snapshot
        with torch.no_grad():
            for parameter, saved in zip(self.trainable, weights, strict=True):
                parameter.copy_(saved)
        # load_state_dict keeps references to the tensors it is given: a copy, so the snapshot stays as it was.
        self.optimizer.load_state_dict(copy.deepcopy(optimizer_state))

    def step(self, items: list[TokenizedExample]) -> None:
        """One optimizer step on `items` as the trainer takes it: per-example loss weighting, clipping, AdamW."""
        self.model.train()
        self.optimizer.zero_grad(set_to_none=True)
        counts = [sum(1 for label in item.labels[1:] if label != -100) for item in items]
        weights = step_token_weights(self.config.loss_weighting, counts)
        for start in range(0, len(items), self.config.micro_batch_size):
            micro = self.batch(items[start : start + self.config.micro_batch_size])
            logits = self.model(input_ids=micro["input_ids"], attention_mask=micro["attention_mask"]).logits
            weighted_token_loss(logits, micro["labels"], weights[start : start + len(micro["input_ids"])]).backward()
        torch.nn.utils.clip_grad_norm_(self.trainable, self.config.max_grad_norm)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)

    @torch.no_grad()
    def mean_losses(self, items: list[TokenizedExample]) -> list[float]:
        """Each item's mean loss over its labelled tokens (the training loss of one example)."""
        self.model.eval()
        losses = []
        for start in range(0, len(items), BATCH):
            batch = self.batch(items[start : start + BATCH])
            logits = self.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
            losses += per_row_loss(logits, batch["labels"]).tolist()
        return losses

    def held_out_loss(self, items: list[TokenizedExample]) -> float:
        """Mean answer-token loss over the held-out rows (every answer token counts once). The output layer runs on
        the answer positions only: the same numbers as the model's full logits, a fifth less compute per probe."""
        self.model.eval()
        head = output_head(self.model)
        summed, count = 0.0, 0
        with torch.no_grad():
            for start in range(0, len(items), BATCH):
                batch = self.batch(items[start : start + BATCH])
                hidden = body_hidden_states(self.model, batch["input_ids"], batch["attention_mask"])[:, :-1]
                labels = batch["labels"][:, 1:]
                answer = labels != -100
                logits = head.logits(hidden[answer]).float()
                summed += float(torch.nn.functional.cross_entropy(logits, labels[answer], reduction="sum"))
                count += int(answer.sum())
        return summed / max(1, count)


def per_row_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """[B] mean next-token loss of each row over its labelled tokens (0 for a row with none)."""
    targets = labels[:, 1:]
    mask = targets != -100
    losses = torch.nn.functional.cross_entropy(
        logits[:, :-1].float().transpose(1, 2), targets.clamp_min(0), reduction="none"
    )
    return (losses * mask).sum(1) / mask.sum(1).clamp_min(1)


# ---------------------------------------------------------------------------------------------------- scores


@torch.no_grad()
def scores_at(probe: Probe, items: list[TokenizedExample], memory: list[TokenizedExample], config) -> dict:
    """{score: [value per item]} at the probe's current weights, measured by the selectors' own code."""
    model = probe.model
    model.eval()
    head = output_head(model)
    uds = UDSSelector(head, config.max_seq_len, seed=config.seed, buffer_size=max(1, len(memory)), device=probe.device)
    selectors = {"uds": uds, "loss": MaxLossSelector(), "grad_norm": MaxGradSelector()}

    def measured(selector, rows):
        parts = []
        for start in range(0, len(rows), BATCH):
            batch = probe.batch(rows[start : start + BATCH])
            parts.append(
                measure_batch(model, selector, head, batch["input_ids"], batch["attention_mask"], batch["labels"])
            )
        return parts

    memory_projection = torch.cat([m.projection for m in measured(uds, memory)])
    uds.buffer.push(memory_projection)
    uds_parts = measured(uds, items)
    utility = torch.cat([m.utility for m in uds_parts])
    projection = torch.cat([m.projection for m in uds_parts])
    return {
        "utility": utility.tolist(),
        "diversity": uds.buffer.mean_distances(projection).tolist(),
        "loss": torch.cat([m.statistic for m in measured(selectors["loss"], items)]).tolist(),
        "grad_norm": torch.cat([m.statistic for m in measured(selectors["grad_norm"], items)]).tolist(),
    }


def probe_all(probe: Probe, items: list[TokenizedExample], held_out: list[TokenizedExample]) -> dict:
    """For each item alone: one step from the current state, the held-out and own loss decrease, state restored."""
    saved = probe.snapshot()
    before = probe.held_out_loss(held_out)
    own_before = probe.mean_losses(items)
    held_out_decrease, own_decrease = [], []
    for i, item in enumerate(items):
        probe.step([item])
        held_out_decrease.append(before - probe.held_out_loss(held_out))
        own_decrease.append(own_before[i] - probe.mean_losses([item])[0])
        probe.restore(saved)
        if (i + 1) % 16 == 0:
            log(f"  probe {i + 1}/{len(items)}")
    return {
        "held_out_before": before,
        "held_out_decrease": held_out_decrease,
        "own_before": own_before,
        "own_decrease": own_decrease,
    }


# ---------------------------------------------------------------------------------------------------- analysis


def correlations(scores: dict, targets: dict, lengths: list[int], groups: list[int], resamples: int) -> list[dict]:
    """Each score against each target: Pearson and Spearman, raw, partial given length, within length groups, each
    with its bootstrap 95% interval."""
    variants = {
        "pearson": (corr.pearson, ()),
        "spearman": (corr.spearman, ()),
        "partial pearson | length": (corr.partial_pearson, (lengths,)),
        "partial spearman | length": (corr.partial_spearman, (lengths,)),
        "within length groups (spearman)": (corr.within_group_spearman, (groups,)),
    }
    rows = []
    for score in SCORES:
        for target in TARGETS:
            for name, (statistic, extra) in variants.items():
                columns = (scores[score], targets[target], *extra)
                low, high = corr.bootstrap_interval(statistic, columns, resamples=resamples)
                rows.append(
                    {
                        "score": score,
                        "target": target,
                        "statistic": name,
                        "value": statistic(*columns),
                        "low": low,
                        "high": high,
                    }
                )
    return rows


def length_groups(lengths: list[int], size: int, seed: int) -> list[int]:
    """The group of each row when selection groups them (length-grouped, B rows each, epoch 0)."""
    label = [0] * len(lengths)
    for g, group in enumerate(epoch_groups(lengths, size, seed, 0, group_by_length=True)):
        for row in group:
            label[row] = g
    return label


# ---------------------------------------------------------------------------------------------------- run


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="smollm2-135m-instruct", help="registered name, built-in or folder")
    parser.add_argument("--probes", type=int, default=128, help="training examples probed one by one")
    parser.add_argument("--memory", type=int, default=64, help="other training rows in diversity's memory")
    parser.add_argument("--held-out", type=int, default=32, help="held-out rows whose loss change is measured")
    parser.add_argument("--train-rows", type=int, default=256, help="rows of the run the halfway state comes from")
    parser.add_argument("--epochs", type=int, default=2, help="epochs of that run (halfway = half its steps)")
    parser.add_argument("--learning-rate", type=float, default=1e-3)
    parser.add_argument("--max-seq-len", type=int, default=96)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--resamples", type=int, default=1000, help="bootstrap resamples per interval")
    parser.add_argument("--states", nargs="+", default=["start", "halfway"], choices=("start", "halfway"))
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--device", default="cpu", help="cpu, cuda, ... (float32 either way)")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "premise"))
    parser.add_argument("--report-only", action="store_true", help="rewrite report.md and plots from results.json")
    return parser.parse_args(argv)


def _rows(examples: list[Example], tokenizer, max_seq_len: int, loss_on: str) -> list[TokenizedExample]:
    return tokenize_examples(examples, tokenizer, max_seq_len, loss_on)


def main(argv=None) -> int:
    args = parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.report_only:
        write_report(json.loads((out / "results.json").read_text()), out)
        return 0
    torch.set_num_threads(args.threads)
    started = time.perf_counter()
    data = Path(tempfile.mkdtemp(prefix="uds-premise-"))  # regenerated from the seed: not part of the results
    n_pool = args.probes + args.memory
    arithmetic.write(data, max(args.train_rows, n_pool), args.held_out, seed=args.seed, noisy=True)
    kinds = [json.loads(line)["kind"] for line in (data / "train_meta.jsonl").read_text().splitlines()]
    config = TrainConfig(
        model=args.model,
        dataset_path=str(data / "train.jsonl"),
        learning_rate=args.learning_rate,
        max_seq_len=args.max_seq_len,
        seed=args.seed,
    )
    device = resolve_device(args.device)
    model, tokenizer = load_model_and_tokenizer(resolve_model(args.model), device=device, dtype=torch.float32)
    torch.manual_seed(args.seed)
    model = add_lora(model, config.lora_r, config.lora_alpha, config.lora_dropout, config.lora_targets).to(device)
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=args.learning_rate, weight_decay=config.weight_decay)
    probe = Probe(model, tokenizer, optimizer, config)

    train_items = _rows(load_examples(str(data / "train.jsonl")), tokenizer, args.max_seq_len, config.loss_on)
    held_out = _rows(load_examples(str(data / "eval.jsonl")), tokenizer, args.max_seq_len, "answer")
    items, memory = train_items[: args.probes], train_items[args.probes : n_pool]
    lengths = [len(item.input_ids) for item in items]
    groups = length_groups(lengths, config.candidate_batch_size, args.seed)
    results = {
        "command": " ".join(["python -m benchmarks.quality.premise", *(argv if argv is not None else sys.argv[1:])]),
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "settings": {**vars(args), "loss_weighting": config.loss_weighting, "lora_r": config.lora_r},
        "kinds": kinds[: args.probes],
        "lengths": lengths,
        "groups": groups,
        "states": {},
    }
    for state in args.states:
        if state == "halfway":
            steps = halfway_steps(len(train_items), args.epochs, config.train_batch_size)
            log(f"halfway: {steps} full-data steps of {config.train_batch_size} rows from the start")
            train_run(probe, train_items, steps, config.train_batch_size, args.seed)
        log(f"{state}: scores of {len(items)} examples")
        scores = scores_at(probe, items, memory, config)
        log(f"{state}: {len(items)} one-step probes against {len(held_out)} held-out rows")
        targets = probe_all(probe, items, held_out)
        results["states"][state] = {
            "scores": scores,
            **targets,
            "correlations": correlations(scores, targets, lengths, groups, args.resamples),
            "length_correlations": {
                name: corr.spearman(values, lengths)
                for name, values in [*scores.items(), *((t, targets[t]) for t in TARGETS)]
            },
        }
        results["total_wall_s"] = time.perf_counter() - started
        (out / "results.json").write_text(json.dumps(results, indent=1))
        write_report(results, out)
    log(f"done in {(time.perf_counter() - started) / 60:.1f} min: {out / 'report.md'}")
    return 0


def halfway_steps(n_rows: int, epochs: int, batch: int) -> int:
    """Half the optimizer steps of a full-data run of `epochs` over `n_rows` rows, `batch` rows a step."""
    return max(1, (epochs * -(-n_rows // batch)) // 2)


def train_run(probe: Probe, items: list[TokenizedExample], steps: int, batch: int, seed: int) -> None:
    """`steps` optimizer steps over the rows in a seeded order, `batch` rows each: the first half of a full run."""
    generator = torch.Generator().manual_seed(seed)
    order: list[int] = []
    for _ in range(steps):
        if len(order) < batch:
            order += torch.randperm(len(items), generator=generator).tolist()
        picked, order = order[:batch], order[batch:]
        probe.step([items[i] for i in picked])


# ---------------------------------------------------------------------------------------------------- report


def write_report(results: dict, out: Path) -> None:
    premise_report.write(results, out)


if __name__ == "__main__":
    raise SystemExit(main())
