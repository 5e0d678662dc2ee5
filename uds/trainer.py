"""The UDS training loop. Read `train` top to bottom: set up, maybe resume, then one `_step` per candidate batch.

Each step draws a candidate batch of B examples, scores all of them with one no-grad forward pass through the
model body (no lm_head), keeps k = max(1, round(budget * B)), and runs forward + backward on those k only, in
micro-batches whose losses are token-weighted so the accumulated gradient equals that of one big batch.

The loop reports through `uds.reporter.TrainLogger` and knows nothing of databases or queues.
"""

from __future__ import annotations

import contextlib
import functools
import math
import os
import shutil
import time
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from safetensors import SafetensorError

from uds import checkpoint as ckpt
from uds.config import TrainConfig, selected_count, steps_per_epoch, total_steps
from uds.data import TokenizedExample, collate, tokenize_examples
from uds.evaluation import EvalSet, evaluate
from uds.formats import DatasetError, load_examples
from uds.models import ModelLoadError, ModelNotAllowed, add_lora, body_hidden_states, load_model_and_tokenizer, output_head, resolve_model
from uds.reporter import NullLogger, TrainLogger
from uds.scoring import summary
from uds.selectors import Scores, ScoringInputs, make_selector


class TrainingError(Exception):
    """A run that cannot go on. `code` is stable (for APIs), `message` tells a person what to do."""

    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass
class TrainResult:
    status: str  # "succeeded" | "cancelled"
    steps_done: int
    total_steps: int
    adapter_dir: str | None
    summary: dict[str, Any] = field(default_factory=dict)


@dataclass
class _Run:
    """Everything the loop mutates or reads per step, built once by `_setup`."""

    config: TrainConfig
    device: torch.device
    model: Any
    tokenizer: Any
    items: list[TokenizedExample]
    score_masks: dict[int, list[int]] | None  # by dataset row: 1 on answer tokens; None = score every real token
    eval_set: EvalSet | None
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LambdaLR
    selector: Any
    head: Any
    total_steps: int
    steps_per_epoch: int
    counters: dict[str, Any]


def train(config: TrainConfig, logger: TrainLogger | None = None, resume: bool = True, allowed_models: list[str] | None = None) -> TrainResult:
    logger = logger or NullLogger()
    run = _setup(config, allowed_models)
    checkpoints_root = os.path.join(config.output_dir, "checkpoints")

    start_step = 0
    if not resume and os.path.isdir(checkpoints_root):
        # Starting over: an older run's checkpoints would otherwise be picked up by a later resume.
        shutil.rmtree(checkpoints_root)
    latest = ckpt.latest_checkpoint(checkpoints_root) if resume else None
    if latest is not None:
        start_step = _restore(run, latest)
        logger.log_event("resumed", f"Resumed from the checkpoint at step {start_step} of {run.total_steps}.", data={"step": start_step})
    else:
        logger.log_event(
            "started",
            f"Training {config.model} with {config.method} at budget {config.budget:g}: {run.total_steps} steps of "
            f"{config.candidate_batch_size} candidates, {len(run.items)} examples, on {run.device.type}.",
            data={"total_steps": run.total_steps, "n_examples": len(run.items), "device": run.device.type},
        )

    for step in range(start_step + 1, run.total_steps + 1):
        if logger.should_stop():
            logger.log_event("cancelled", f"Stopped before step {step} of {run.total_steps}.")
            logger.flush()
            return TrainResult("cancelled", step - 1, run.total_steps, None, _summary(run))
        metrics = _guarded(lambda: _step(run, step))
        if _eval_due(config, step, run.total_steps) and run.eval_set is not None:
            metrics.update(evaluate(run.model, run.tokenizer, run.eval_set, run.device))
            logger.log_event("eval", f"Step {step}: eval loss {metrics['eval_loss']:.4f}, exact match {metrics['eval_accuracy']:.1%}.", data={"step": step, "eval_loss": metrics["eval_loss"], "eval_accuracy": metrics["eval_accuracy"]})
        logger.log_step(metrics)
        if step % config.checkpoint_every == 0 or step == run.total_steps:
            # Metrics first: a checkpoint must never be newer than the steps the logger has stored.
            logger.flush()
            path = _guarded(lambda: _save(run, checkpoints_root, step))
            logger.log_checkpoint(step, path, {key: metrics[key] for key in ("loss", "token_accuracy", "eval_loss", "eval_accuracy")})

    adapter_dir = _guarded(lambda: _export_adapter(run))
    result = TrainResult("succeeded", run.total_steps, run.total_steps, adapter_dir, _summary(run))
    logger.log_event("succeeded", _summary_sentence(result), data=result.summary)
    logger.flush()
    return result


# ---------------------------------------------------------------------------------------------------- set-up


def _setup(config: TrainConfig, allowed_models: list[str] | None) -> _Run:
    device = resolve_device(config.device)
    torch.manual_seed(config.seed)
    try:
        examples = load_examples(config.dataset_path)
        eval_examples = load_examples(config.eval_dataset_path) if config.eval_dataset_path else None
    except DatasetError as error:
        raise TrainingError("dataset_invalid", f"The dataset is invalid: {error}") from error
    except OSError as error:
        raise TrainingError("dataset_unreadable", f"The dataset file cannot be read: {error}") from error

    try:
        model_path = resolve_model(config.model, allowed=allowed_models, models_dir=config.models_dir)
        dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
        model, tokenizer = load_model_and_tokenizer(model_path, device=device, dtype=dtype)
    except ModelNotAllowed as error:
        raise TrainingError("model_not_allowed", str(error)) from error
    except (ModelLoadError, OSError, ValueError) as error:
        raise TrainingError("model_load_failed", f"The model {config.model!r} could not be loaded: {error}") from error

    if config.gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    model = add_lora(model, r=config.lora_r, alpha=config.lora_alpha, dropout=config.lora_dropout, targets=config.lora_targets)
    model.to(device)

    items = tokenize_examples(examples, tokenizer, config.max_seq_len, config.loss_on)
    score_masks = answer_masks(examples, tokenizer, config.max_seq_len, items) if config.score_on == "answer" else None
    eval_set = EvalSet.build(eval_examples, tokenizer, config.max_seq_len, config.eval_max_new_tokens) if eval_examples else None

    head = output_head(model)
    selector = make_selector(config, head, max_len=config.max_seq_len, device=device)
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=config.learning_rate, weight_decay=config.weight_decay)
    n_steps = total_steps(config, len(items))
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda=lr_multiplier(config, n_steps))
    counters = {"examples_scored": 0, "examples_trained": 0, "tokens_trained": 0, "time_scoring": 0.0, "time_training": 0.0, "alpha": None}
    return _Run(
        config, device, model, tokenizer, items, score_masks, eval_set, optimizer, scheduler, selector, head,
        n_steps, steps_per_epoch(len(items), config.candidate_batch_size), counters,
    )


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise TrainingError("device_unavailable", f"Device {name!r} was requested but CUDA is not available on this worker.")
    return torch.device(name)


def lr_multiplier(config: TrainConfig, n_steps: int):
    """Linear warm-up over `warmup_ratio` of the steps, then cosine or linear decay to zero (or constant)."""
    warmup = math.ceil(config.warmup_ratio * n_steps)

    def multiplier(done: int) -> float:
        if done < warmup:
            return (done + 1) / (warmup + 1)
        if config.lr_schedule == "constant":
            return 1.0
        progress = (done - warmup) / max(1, n_steps - warmup)
        if config.lr_schedule == "linear":
            return max(0.0, 1.0 - progress)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))

    return multiplier


# ---------------------------------------------------------------------------------------------------- one step


def candidate_rows(config: TrainConfig, n_examples: int, step: int) -> tuple[int, list[int]]:
    """(epoch, dataset rows) of the candidate batch of 1-based `step`.

    Derived from (seed, epoch, step) alone, so the data position of a resumed run is just its step number.
    """
    per_epoch = steps_per_epoch(n_examples, config.candidate_batch_size)
    epoch, batch_index = divmod(step - 1, per_epoch)
    order = _epoch_order(config.seed, epoch, n_examples)
    start = batch_index * config.candidate_batch_size
    return epoch, order[start : start + config.candidate_batch_size].tolist()


@functools.lru_cache(maxsize=2)
def _epoch_order(seed: int, epoch: int, n_examples: int) -> torch.Tensor:
    # Cached: one shuffle per epoch, not one per step (a randperm of a million rows costs milliseconds).
    return torch.randperm(n_examples, generator=torch.Generator().manual_seed(seed * 1_000_003 + epoch))


def _step(run: _Run, step: int) -> dict[str, Any]:
    config = run.config
    epoch, rows = candidate_rows(config, len(run.items), step)
    candidates = [run.items[row] for row in rows]
    k = selected_count(config.budget, len(candidates))

    started = _now(run.device)
    scores, chosen = _score_and_select(run, candidates, k)
    scored = _now(run.device)
    trained = [candidates[i] for i in chosen.tolist()]
    loss, accuracy, grad_norm, tokens = _train_on(run, trained)
    finished = _now(run.device)

    learning_rate = run.scheduler.get_last_lr()[0]
    run.scheduler.step()
    _count(run, len(candidates), len(trained), tokens, scored - started, finished - scored)
    run.counters["alpha"] = scores.alpha
    return {
        "step": step,
        "total_steps": run.total_steps,
        "epoch": epoch + 1,
        "loss": loss,
        "token_accuracy": accuracy,
        "learning_rate": learning_rate,
        "grad_norm": grad_norm,
        "tokens_trained": tokens,
        "candidates": len(candidates),
        "selected": len(trained),
        "time_scoring": scored - started,
        "time_training": finished - scored,
        "alpha": scores.alpha,
        "stats": _selection_stats(scores, chosen),
        "eval_loss": None,
        "eval_accuracy": None,
        "selections": _selection_rows(rows, scores, chosen),
    }


def _score_and_select(run: _Run, candidates: list[TokenizedExample], k: int) -> tuple[Scores, torch.Tensor]:
    batch = _to_device(collate(candidates, run.tokenizer.pad_token_id), run.device)
    hidden = None
    if run.selector.needs_hidden:  # random and full pick without looking: no scoring pass to pay for
        run.model.eval()
        with torch.no_grad(), _autocast(run.device):
            hidden = _body_hidden_in_chunks(run, batch).float()
    mask = batch["attention_mask"] if run.score_masks is None else _score_mask(run, candidates, batch["attention_mask"])
    inputs = ScoringInputs(hidden=hidden, attention_mask=mask, labels=batch["labels"], head=run.head)
    scores = run.selector.scores(inputs)
    chosen = run.selector.select(scores, k)
    run.selector.update(inputs, scores, chosen)
    # Train in candidate order, not score order: the step's result then depends only on which examples were
    # picked (budget 1.0 under any selector equals `full` exactly).
    chosen = chosen.sort().values
    return scores, chosen


def answer_masks(examples, tokenizer, max_seq_len: int, items: list[TokenizedExample]) -> dict[int, list[int]]:
    """By dataset row, 1 on the tokens of weighted assistant turns: the answer-only labels of the same tokens."""
    answers = tokenize_examples(examples, tokenizer, max_seq_len, loss_on="answer")
    masks = {}
    for item, answer in zip(items, answers):
        if answer.input_ids != item.input_ids:
            raise TrainingError("tokenisation_mismatch", f"row {item.row}: answer-only tokenisation differs; use score_on='all'")
        masks[item.row] = [int(label != -100) for label in answer.labels]
    return masks


def _score_mask(run: _Run, candidates: list[TokenizedExample], attention_mask: torch.Tensor) -> torch.Tensor:
    mask = torch.zeros_like(attention_mask)
    for i, item in enumerate(candidates):
        row_mask = run.score_masks[item.row]
        mask[i, : len(row_mask)] = torch.tensor(row_mask, dtype=mask.dtype)
    return mask


def _body_hidden_in_chunks(run: _Run, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    # Chunked so the scoring pass never holds more activations than a few training micro-batches would.
    chunk = max(8, 2 * run.config.micro_batch_size)
    parts = [
        body_hidden_states(run.model, batch["input_ids"][i : i + chunk], batch["attention_mask"][i : i + chunk])
        for i in range(0, batch["input_ids"].shape[0], chunk)
    ]
    return torch.cat(parts)


def _train_on(run: _Run, trained: list[TokenizedExample]) -> tuple[float, float, float, int]:
    """Forward + backward on the selected examples, one optimizer step. Returns loss, token accuracy, grad norm, tokens."""
    config = run.config
    run.model.train()
    run.optimizer.zero_grad(set_to_none=True)
    # Loss tokens are counted over the whole selection first: dividing each micro-batch's summed loss by the
    # total makes the accumulated gradient exactly that of one batch of k, however the k are split.
    loss_tokens = sum(_loss_token_count(item) for item in trained)
    total_loss, correct, tokens = 0.0, 0, 0
    for start in range(0, len(trained), config.micro_batch_size):
        micro = _to_device(collate(trained[start : start + config.micro_batch_size], run.tokenizer.pad_token_id), run.device)
        with _autocast(run.device):
            logits = run.model(input_ids=micro["input_ids"], attention_mask=micro["attention_mask"]).logits
        shift_logits = logits[:, :-1].float()
        shift_labels = micro["labels"][:, 1:]
        summed = F.cross_entropy(shift_logits.reshape(-1, shift_logits.shape[-1]), shift_labels.reshape(-1), ignore_index=-100, reduction="sum")
        (summed / max(1, loss_tokens)).backward()
        total_loss += summed.item()
        mask = shift_labels != -100
        correct += int((shift_logits.argmax(-1)[mask] == shift_labels[mask]).sum())
        tokens += int(micro["attention_mask"].sum())
    trainable = [p for p in run.model.parameters() if p.requires_grad]
    grad_norm = float(torch.nn.utils.clip_grad_norm_(trainable, config.max_grad_norm))
    run.optimizer.step()
    return total_loss / max(1, loss_tokens), correct / max(1, loss_tokens), grad_norm, tokens


def _loss_token_count(item: TokenizedExample) -> int:
    return sum(1 for label in item.labels[1:] if label != -100)


def _selection_stats(scores: Scores, chosen: torch.Tensor) -> dict[str, Any]:
    def stats_of(index: torch.Tensor | None) -> dict[str, Any]:
        def pick(values: torch.Tensor | None):
            if values is None:
                return None
            return summary(values if index is None else values[index])

        return {"utility": pick(scores.utility), "diversity": pick(scores.diversity), "score": pick(scores.total)}

    return {"candidates": stats_of(None), "selected": stats_of(chosen)}


def _selection_rows(rows: list[int], scores: Scores, chosen: torch.Tensor) -> list[dict[str, Any]]:
    chosen_set = set(chosen.tolist())

    def value(values: torch.Tensor | None, i: int) -> float | None:
        return None if values is None else float(values[i])

    return [
        {"row": row, "selected": i in chosen_set, "utility": value(scores.utility, i), "diversity": value(scores.diversity, i), "score": float(scores.total[i])}
        for i, row in enumerate(rows)
    ]


def _count(run: _Run, scored: int, trained: int, tokens: int, time_scoring: float, time_training: float) -> None:
    run.counters["examples_scored"] += scored
    run.counters["examples_trained"] += trained
    run.counters["tokens_trained"] += tokens
    run.counters["time_scoring"] += time_scoring
    run.counters["time_training"] += time_training


def _eval_due(config: TrainConfig, step: int, n_steps: int) -> bool:
    return step == n_steps or (config.eval_every is not None and step % config.eval_every == 0)


# ---------------------------------------------------------------------------------------------------- state


def _save(run: _Run, root: str, step: int) -> str:
    state = {
        "step": step,
        "optimizer": run.optimizer.state_dict(),
        "scheduler": run.scheduler.state_dict(),
        "selector": run.selector.state_dict(),
        "rng": ckpt.rng_state(),
        "counters": dict(run.counters),
        "config": run.config.to_dict(),
    }
    return ckpt.save_checkpoint(root, step, run.model, state, keep=run.config.keep_checkpoints)


def _restore(run: _Run, checkpoint: ckpt.Checkpoint) -> int:
    state = ckpt.load_checkpoint(checkpoint.path, run.model)
    run.optimizer.load_state_dict(state["optimizer"])
    run.scheduler.load_state_dict(state["scheduler"])
    run.selector.load_state_dict(state["selector"])
    ckpt.restore_rng_state(state["rng"])
    run.counters.update(state["counters"])
    return int(state["step"])


def _export_adapter(run: _Run) -> str:
    """The final PEFT folder (adapter + tokenizer), published by rename so a reader never sees half of it."""
    final_dir = os.path.join(run.config.output_dir, "adapter")
    temp_dir = f"{final_dir}.tmp-{os.getpid()}"
    shutil.rmtree(temp_dir, ignore_errors=True)
    run.model.save_pretrained(temp_dir, safe_serialization=True)
    run.tokenizer.save_pretrained(temp_dir)
    shutil.rmtree(final_dir, ignore_errors=True)
    os.replace(temp_dir, final_dir)
    return final_dir


def _summary(run: _Run) -> dict[str, Any]:
    scored, trained = run.counters["examples_scored"], run.counters["examples_trained"]
    return {
        **run.counters,
        "trained_fraction": trained / scored if scored else 0.0,
        "backward_saved_fraction": 1 - trained / scored if scored else 0.0,
    }


def _summary_sentence(result: TrainResult) -> str:
    s = result.summary
    return (
        f"Finished {result.steps_done} steps: scored {int(s['examples_scored'])} examples, trained on "
        f"{int(s['examples_trained'])} ({s['trained_fraction']:.1%}); scoring {s['time_scoring']:.1f} s, "
        f"training {s['time_training']:.1f} s."
    )


# ---------------------------------------------------------------------------------------------------- helpers


def _guarded(action):
    """Turn resource failures into TrainingErrors a person can act on."""
    try:
        return action()
    except torch.cuda.OutOfMemoryError as error:
        raise TrainingError("out_of_memory", "The GPU ran out of memory. Lower micro_batch_size, candidate_batch_size or max_seq_len, or enable gradient_checkpointing.") from error
    except RuntimeError as error:
        if "out of memory" in str(error).lower():
            raise TrainingError("out_of_memory", f"Out of memory: {error}. Lower micro_batch_size, candidate_batch_size or max_seq_len.") from error
        raise
    except OSError as error:
        raise TrainingError("artifact_write_failed", f"Could not write training artifacts ({error.strerror or error}): check free disk space and that the data folder is writable.") from error
    except SafetensorError as error:  # safetensors reports a full disk or a read-only folder as its own error type
        raise TrainingError("artifact_write_failed", f"Could not write training artifacts ({error}): check free disk space and that the data folder is writable.") from error


def _to_device(batch: dict[str, torch.Tensor], device: torch.device) -> dict[str, torch.Tensor]:
    return {key: value.to(device) for key, value in batch.items()}


def _autocast(device: torch.device):
    # bf16 autocast on CUDA only: CPU runs stay float32, which is what makes CPU resume tests bit-exact.
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def _now(device: torch.device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter()
