"""One training run of the quality benchmark and its held-out measures: what run.py and compare.py both train with.

`run_one` trains one (method, budget, seed) through `uds.trainer.train`, counts the kinds of the rows it trained
on, and measures the trained adapter on the held-out rows in one teacher-forced pass (`held_out_metrics`).
"""

from __future__ import annotations

import tempfile
import time

import torch
from peft import PeftModel

from uds.config import TrainConfig
from uds.data import collate, tokenize_examples
from uds.device import resolve_device
from uds.formats import load_examples
from uds.models import load_model_and_tokenizer, resolve_model
from uds.trainer import train

STEP_FIELDS = (
    "step",
    "loss",
    "learning_rate",
    "time_scoring",
    "time_training",
    "alpha",
    "eval_loss",
    "eval_accuracy",
)


class CollectingLogger:
    """A TrainLogger that keeps the step metrics and counts the kinds of the selected training rows."""

    def __init__(self, kinds: list[str]):
        self.kinds = kinds
        self.steps: list[dict] = []
        self.selected_kinds: dict[str, int] = {}
        self.candidate_kinds: dict[str, int] = {}

    def log_step(self, metrics):
        for row in metrics.get("selections", []):
            kind = self.kinds[row["row"]] if row["row"] < len(self.kinds) else "?"
            self.candidate_kinds[kind] = self.candidate_kinds.get(kind, 0) + 1
            if row["selected"]:
                self.selected_kinds[kind] = self.selected_kinds.get(kind, 0) + 1
        self.steps.append({k: metrics.get(k) for k in STEP_FIELDS})

    def log_event(self, type, message, level="info", data=None):
        pass

    def log_checkpoint(self, step, path, metrics):
        pass

    def should_stop(self):
        return False

    def flush(self):
        pass


def run_one(
    settings: dict, label: str, method: str, budget: float, extra: dict, seed: int, kinds: list[str], curves: bool
) -> dict:
    """Train one run and measure it. With `curves`, the trainer also evaluates along the way (greedy generation
    included, which is slow on a real model); the final measures always come from `held_out_metrics`."""
    with tempfile.TemporaryDirectory(prefix="uds-quality-") as out:
        # from_dict, so that a recipe in `extra` fills only what is not given here (the lr stays the benchmark's:
        # the recipe's 1.5e-4 is for a 7B model).
        config = TrainConfig.from_dict(
            {
                "model": settings["model"],
                "dataset_path": settings["train"],
                "eval_dataset_path": settings["eval"] if curves else None,
                "output_dir": out,
                "method": method,
                "budget": budget,
                "epochs": settings["epochs"],
                "learning_rate": settings["learning_rate"],
                "warmup_ratio": settings["warmup_ratio"],
                "max_seq_len": settings["max_seq_len"],
                "micro_batch_size": settings["micro_batch_size"],
                "seed": seed,
                "device": settings.get("device", "cpu"),
                "eval_every": settings["eval_every"] if curves else None,
                "checkpoint_every": 10_000_000,
                "keep_checkpoints": 1,
                "eval_max_new_tokens": 16,
                **extra,
            }
        )
        logger = CollectingLogger(kinds)
        started = time.perf_counter()
        result = train(config, logger, resume=False)
        wall = time.perf_counter() - started
        measures = held_out_metrics(
            settings["model"],
            result.adapter_dir,
            settings["eval"],
            settings["max_seq_len"],
            settings.get("device", "cpu"),
        )
    summary = result.summary
    return {
        "label": label,
        "method": method,
        "budget": budget,
        "extra": extra,
        "seed": seed,
        **measures,
        "wall_s": wall,
        "time_scoring": summary["time_scoring"],
        "time_training": summary["time_training"],
        "examples_scored": summary["examples_scored"],
        "examples_trained": summary["examples_trained"],
        "tokens_trained": summary["tokens_trained"],
        "alpha_last": summary.get("alpha"),
        "alpha_paper": summary.get("alpha_paper"),
        "steps": len(logger.steps),
        "candidate_batch_size": config.candidate_batch_size,
        "k": config.k,
        "spearman_utility_length": summary.get("spearman_utility_length"),
        "spearman_score_length": summary.get("spearman_score_length"),
        "mean_length_candidates": summary.get("mean_length_candidates"),
        "mean_length_selected": summary.get("mean_length_selected"),
        "selected_kinds": logger.selected_kinds,
        "candidate_kinds": logger.candidate_kinds,
        "curve": logger.steps,
    }


def answer_measures(logits: torch.Tensor, labels: torch.Tensor) -> tuple[float, int, int, list[bool]]:
    """(summed answer-token loss, answer tokens predicted right, answer tokens, per row: every answer token right).

    `logits` [B, L, V] and `labels` [B, L] (-100 off the answer) of one teacher-forced batch, not yet shifted. A row
    whose answer tokens (the answer and its end-of-turn marker) are all the model's top choice is exactly what
    greedy decoding would emit, so the last value is the greedy exact match, at the price of one forward pass."""
    logits, labels = logits[:, :-1].float(), labels[:, 1:]
    mask = labels != -100
    loss = torch.nn.functional.cross_entropy(
        logits.reshape(-1, logits.shape[-1]), labels.reshape(-1), ignore_index=-100, reduction="sum"
    )
    right = (logits.argmax(-1) == labels) & mask
    rows_exact = ((right | ~mask).all(dim=1) & mask.any(dim=1)).tolist()
    return float(loss), int(right.sum()), int(mask.sum()), rows_exact


def held_out_metrics(
    model_name: str, adapter_dir: str | None, eval_path: str, max_seq_len: int, device_name: str = "cpu"
) -> dict[str, float]:
    """On the held-out rows, teacher-forced: the mean answer-token loss (`eval_loss`), the share of answer tokens
    predicted exactly (`eval_token_accuracy`) and the share of rows whose whole answer is (`eval_accuracy`, the
    greedy exact match). Without `adapter_dir`, of the base model."""

    device = resolve_device(device_name)
    model, tokenizer = load_model_and_tokenizer(resolve_model(model_name), device=device, dtype=torch.float32)
    if adapter_dir is not None:
        model = PeftModel.from_pretrained(model, adapter_dir)
    model.eval()
    items = [
        item
        for item in tokenize_examples(load_examples(eval_path), tokenizer, max_seq_len, loss_on="answer")
        if any(label != -100 for label in item.labels)
    ]
    loss = 0.0
    right = tokens = 0
    exact: list[bool] = []
    with torch.no_grad():
        for start in range(0, len(items), 16):
            batch = {k: v.to(device) for k, v in collate(items[start : start + 16], tokenizer.pad_token_id).items()}
            logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
            batch_loss, batch_right, batch_tokens, batch_exact = answer_measures(logits, batch["labels"])
            loss, right, tokens = loss + batch_loss, right + batch_right, tokens + batch_tokens
            exact += batch_exact
    return {
        "eval_loss": loss / max(1, tokens),
        "eval_token_accuracy": right / max(1, tokens),
        "eval_accuracy": sum(exact) / max(1, len(exact)),
    }
