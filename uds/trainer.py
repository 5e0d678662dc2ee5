"""The UDS training loop. Read `train` top to bottom: set up, maybe resume, then one `_step` per optimizer step.

Each step takes G selection groups of B candidates (length-grouped: near-equal lengths inside a group), scores
all G * B with one no-grad forward pass through the model body (no lm_head), then selects group by group,
k = max(1, round(budget * B)) of each, the memory updated after every group as in the paper's code; then it
runs forward + backward on the G * k picks in micro-batches whose losses are weighted so the accumulated
gradient equals that of one big batch (per example or per token), and takes one optimizer step.

The loop reports through `uds.reporter.TrainLogger` and knows nothing of databases or queues.
"""

from __future__ import annotations

import math
import os
import pickle
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import torch
from safetensors import SafetensorError

from uds import checkpoint as ckpt
from uds import distributed, engine
from uds import fingerprint as fp
from uds.config import TrainConfig, groups_per_step, steps_per_epoch, total_steps
from uds.data import TokenizedExample, collate, tokenize_examples
from uds.device import DeviceUnavailable, autocast, device_kind, resolve_device
from uds.distributed import World
from uds.engine import first_rows_mask, loss_token_count, step_token_weights, weighted_token_loss
from uds.evaluation import EvalSet, evaluate
from uds.formats import DatasetError, load_examples
from uds.model_card import CardInfo, finalize_adapter
from uds.models import ModelLoadError, ModelNotAllowed, add_lora, load_model_and_tokenizer, output_head, resolve_model
from uds.order import epoch_groups
from uds.records import StepRecord
from uds.reporter import NullLogger, TrainLogger, report_phase
from uds.selectors import Measures, Scores, make_selector


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
    lengths: list[int]  # token count of each dataset row, what length grouping sorts by
    score_masks: dict[int, list[int]] | None  # by dataset row: 1 on answer tokens; None = score every real token
    eval_set: EvalSet | None
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LambdaLR
    selector: Any
    head: Any
    total_steps: int
    steps_per_epoch: int
    groups_per_step: int
    counters: dict[str, Any]
    world: World = distributed.SINGLE
    epoch_groups: dict[int, list[list[int]]] = field(default_factory=dict)  # the last epochs' group orders


def train(
    config: TrainConfig, logger: TrainLogger | None = None, resume: bool = True, allowed_models: list[str] | None = None
) -> TrainResult:
    logger = logger or NullLogger()
    report_phase(logger, "loading")
    run = _setup(config, allowed_models)
    if not run.world.is_main:
        logger = NullLogger()  # rank 0 is the one writer: metrics, events, checkpoints, the adapter
    checkpoints_root = os.path.join(config.output_dir, "checkpoints")

    start_step = 0
    if not resume and os.path.isdir(checkpoints_root):
        # Starting over: an older run's checkpoints would otherwise be picked up by a later resume.
        shutil.rmtree(checkpoints_root)
    latest = ckpt.latest_checkpoint(checkpoints_root) if resume else None
    if latest is not None:
        _check_fingerprint(run, latest)
        # Every rank restores the same checkpoint: the same adapter, optimizer, selector memory and counters.
        start_step = _restore(run, latest)
        logger.log_event(
            "resumed",
            f"Resumed from the checkpoint at step {start_step} of {run.total_steps}.",
            data={"step": start_step},
        )
    else:
        logger.log_event(
            "started",
            f"Training {config.model} with {config.method} at budget {config.budget:g}: {run.total_steps} steps of "
            f"{run.groups_per_step} groups of {config.candidate_batch_size} candidates ({config.k} picked per group), "
            f"{len(run.items)} examples, on {_devices_text(run)}.",
            data={
                "total_steps": run.total_steps,
                "n_examples": len(run.items),
                "device": run.device.type,
                "devices": run.world.size,
                "groups_per_step": run.groups_per_step,
                "candidate_batch_size": config.candidate_batch_size,
                "k": config.k,
                "alpha_paper": run.counters["alpha_paper"],
            },
        )

    report_phase(logger, "training")
    for step in range(start_step + 1, run.total_steps + 1):
        if distributed.agree(logger.should_stop(), run.world):
            logger.log_event("cancelled", f"Stopped before step {step} of {run.total_steps}.")
            logger.flush()
            return TrainResult("cancelled", step - 1, run.total_steps, None, _summary(run))
        metrics = _guarded(partial(_step, run, step))
        if _eval_due(config, step, run.total_steps) and run.eval_set is not None and run.world.is_main:
            report_phase(logger, "evaluating", {"step": step, "examples": len(run.eval_set.items)})
            metrics.update(evaluate(run.model, run.tokenizer, run.eval_set, run.device))
            report_phase(logger, "training")
            logger.log_event(
                "eval",
                f"Step {step}: eval loss {metrics['eval_loss']:.4f}, exact match {metrics['eval_accuracy']:.1%}.",
                data={"step": step, "eval_loss": metrics["eval_loss"], "eval_accuracy": metrics["eval_accuracy"]},
            )
        logger.log_step(metrics)
        run.counters["last_loss"] = metrics["loss"]
        if metrics.get("eval_loss") is not None:
            run.counters["last_eval_loss"] = metrics["eval_loss"]
        if step == run.total_steps:
            report_phase(logger, "saving")
        if (step % config.checkpoint_every == 0 or step == run.total_steps) and run.world.is_main:
            # Metrics first: a checkpoint must never be newer than the steps the logger has stored.
            logger.flush()
            path = _guarded(partial(_save, run, checkpoints_root, step))
            logger.log_checkpoint(
                step, path, {key: metrics[key] for key in ("loss", "token_accuracy", "eval_loss", "eval_accuracy")}
            )

    if not run.world.is_main:
        return TrainResult("succeeded", run.total_steps, run.total_steps, None, _summary(run))
    adapter_dir = _guarded(lambda: _export_adapter(run))
    result = TrainResult("succeeded", run.total_steps, run.total_steps, adapter_dir, _summary(run))
    logger.log_event("succeeded", _summary_sentence(result), data=result.summary)
    logger.flush()
    return result


# ---------------------------------------------------------------------------------------------------- set-up


def _setup(config: TrainConfig, allowed_models: list[str] | None) -> _Run:
    try:
        device = _rank_device(resolve_device(config.device))
    except DeviceUnavailable as error:
        raise TrainingError("device_unavailable", str(error)) from error
    world = distributed.init_from_env(device)
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
        model, tokenizer = load_model_and_tokenizer(model_path, device=device)
    except ModelNotAllowed as error:
        raise TrainingError("model_not_allowed", str(error)) from error
    except (ModelLoadError, OSError, ValueError) as error:
        raise TrainingError("model_load_failed", f"The model {config.model!r} could not be loaded: {error}") from error

    if config.gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    model = add_lora(
        model,
        r=config.lora_r,
        alpha=config.lora_alpha,
        dropout=config.lora_dropout,
        targets=config.lora_targets,
        init=config.lora_init,
    )
    model.to(device)
    # Every rank starts from rank 0's adapter (each drew the same initialisation, but a collective makes it sure).
    distributed.broadcast_parameters([p for p in model.parameters() if p.requires_grad], world)

    items = tokenize_examples(examples, tokenizer, config.max_seq_len, config.loss_on)
    score_masks = answer_masks(examples, tokenizer, config.max_seq_len, items) if config.score_on == "answer" else None
    eval_set = (
        EvalSet.build(eval_examples, tokenizer, config.max_seq_len, config.eval_max_new_tokens)
        if eval_examples
        else None
    )

    head = output_head(model)
    selector = make_selector(config, head, max_len=config.max_seq_len, device=device)
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=config.learning_rate, weight_decay=config.weight_decay)
    n_steps = total_steps(config, len(items))
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda=lr_multiplier(config, n_steps))
    counters = {
        "examples_scored": 0,
        "examples_trained": 0,
        "tokens_trained": 0,
        "time_scoring": 0.0,
        "time_training": 0.0,
        "alpha": None,
        "alpha_paper": getattr(selector, "paper_alpha", None),
        **_LENGTH_COUNTERS,
    }
    return _Run(
        config,
        device,
        model,
        tokenizer,
        items,
        [len(item.input_ids) for item in items],
        score_masks,
        eval_set,
        optimizer,
        scheduler,
        selector,
        head,
        n_steps,
        steps_per_epoch(config, len(items)),
        groups_per_step(config, len(items)),
        counters,
        world,
    )


def _rank_device(device: torch.device) -> torch.device:
    """A rank of a multi-device job on CUDA trains on the GPU of its local rank (the launcher's process `i` on the
    i-th visible GPU); the CPU is shared."""
    if device.type == "cuda" and distributed.launched_world().distributed:
        return torch.device("cuda", distributed.local_rank())
    return device


def _devices_text(run: _Run) -> str:
    kind = run.device.type
    return kind if run.world.size == 1 else f"{run.world.size} {kind} processes"


def lr_multiplier(config: TrainConfig, n_steps: int):
    """Linear warm-up over `warmup_ratio` of the steps, then cosine or linear decay to zero (or constant).

    Warm-up steps are counted as the official script does, max(1, int(ratio * steps)) (so a 39-step run at 1%
    warms up for one step). Unlike transformers' schedule, the first step is not taken at learning rate 0.
    """
    warmup = max(1, int(config.warmup_ratio * n_steps)) if config.warmup_ratio > 0 else 0

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


def step_groups(run: _Run, step: int) -> tuple[int, list[list[int]]]:
    """(epoch, selection groups) of 1-based `step`: the step's slice of its epoch's groups."""
    config = run.config
    epoch, index = divmod(step - 1, run.steps_per_epoch)
    if epoch not in run.epoch_groups:
        # Kept for the epochs in use only: one sort per epoch, not one per step.
        run.epoch_groups = {
            epoch: epoch_groups(run.lengths, config.candidate_batch_size, config.seed, epoch, config.group_by_length)
        }
    groups = run.epoch_groups[epoch]
    return epoch, groups[index * run.groups_per_step : (index + 1) * run.groups_per_step]


def _step(run: _Run, step: int) -> StepRecord:
    epoch, groups = step_groups(run, step)
    rows = [row for group in groups for row in group]
    candidates = [run.items[row] for row in rows]
    sizes = [len(group) for group in groups]

    started = _now(run.device)
    measures, measured, gathered = _measure_step(run, groups, len(rows))
    lengths = torch.tensor([run.lengths[row] for row in rows])
    selection = engine.select(run.selector, measures, sizes, run.config.budget, lengths)
    scored = _now(run.device)
    trained = [candidates[i] for i in selection.chosen.tolist()]
    loss, accuracy, grad_norm, tokens = _train_on(run, trained)
    finished = _now(run.device)

    learning_rate = float(run.scheduler.get_last_lr()[0])
    run.scheduler.step()
    scores = selection.scores
    _count(
        run,
        len(candidates),
        len(trained),
        tokens,
        scored - started,
        finished - scored,
        selection.length,
        lengths,
        selection.picked,
    )
    run.counters["alpha"] = scores.alpha
    stats = {
        **selection.stats,
        "groups": len(groups),
        "length": selection.length,
        "devices": run.world.size,
        # Of time_scoring: the measures' gather across devices and the sequential selection after it.
        "time_gather": gathered - measured if run.world.distributed else 0.0,
        "time_select": scored - gathered,
    }
    if run.device.type == "cuda":  # what this run's tensors hold on its device; no such figure on a CPU
        stats["device_memory_bytes"] = torch.cuda.memory_allocated(run.device)
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
        "groups": len(groups),
        "time_scoring": scored - started,
        "time_training": finished - scored,
        "alpha": scores.alpha,
        "stats": stats,
        "eval_loss": None,
        "eval_accuracy": None,
        "selections": _selection_rows(rows, scores, selection.chosen),
    }


def _measure_step(run: _Run, groups: list[list[int]], count: int) -> tuple[Measures, float, float]:
    """The step's measures, and when this rank finished measuring its share and when the gather finished.

    The scoring chunks are the same whatever the number of devices (each rank measures a contiguous share of them),
    so every candidate is measured in the same padded batch as in one process; the gather puts the shares back in
    candidate order.
    """
    chunks = _chunks_of_groups(groups, max(8, 2 * run.config.micro_batch_size))
    mine = distributed.share(chunks, run.world)
    batches = _scoring_batches(run, groups, mine)
    autocast_context = partial(autocast, run.device)
    local = engine.measure(run.model, run.selector, run.head, batches, sum(map(len, mine)), autocast_context)
    measured = _now(run.device)
    if not run.selector.needs_hidden:  # random and full measure nothing: there is nothing to gather
        return Measures(count), measured, measured
    # The measures stay where the scoring pass put them (the device), as in one process.
    return distributed.gather_measures(local, run.world, run.device), measured, _now(run.device)


def _scoring_batches(run: _Run, groups: list[list[int]], chunks: list[list[int]]) -> Iterator[engine.ScoringBatch]:
    """Candidates of `chunks` (runs of whole groups of the step's `groups`) for the scoring pass, a chunk a batch.

    Each chunk is padded to its own longest row only, and groups are near-equal in length, so length grouping
    also keeps the scoring pass free of padding. Chunks hold at least as many rows as a few training micro-batches
    would, so the pass never holds more activations than training does.
    """
    rows_scored = _rows_scored(run, groups)
    for chunk in chunks:
        candidates = [run.items[row] for row in chunk]
        batch = _to_device(collate(candidates, run.tokenizer.pad_token_id), run.device)
        score_mask = None if run.score_masks is None else _score_mask(run, candidates, batch["attention_mask"])
        if rows_scored is not None:
            score_mask = first_rows_mask(
                batch["attention_mask"] if score_mask is None else score_mask, [rows_scored[row] for row in chunk]
            )
        yield engine.ScoringBatch(batch["input_ids"], batch["attention_mask"], batch["labels"], score_mask)


def _rows_scored(run: _Run, groups: list[list[int]]) -> dict[int, int] | None:
    """With `equal_rows`, by dataset row: the token rows its group scores, the group's shortest length.

    The nuclear norm grows with the number of rows, so even in a length-grouped group a candidate a few tokens
    longer than the others ranks higher for that alone. Scoring every candidate of a group on the same number of
    rows removes that (the official code gets equal row counts by scoring padded positions, which we never do).
    Groups hold near-equal lengths, so what is left out is a few trailing tokens.
    """
    if not run.config.equal_rows:
        return None
    return {row: min(run.lengths[r] for r in group) for group in groups for row in group}


def _chunks_of_groups(groups: list[list[int]], rows: int) -> list[list[int]]:
    chunks, current = [], []
    for group in groups:
        current.extend(group)
        if len(current) >= rows:
            chunks.append(current)
            current = []
    if current:
        chunks.append(current)
    return chunks


def answer_masks(examples, tokenizer, max_seq_len: int, items: list[TokenizedExample]) -> dict[int, list[int]]:
    """By dataset row, 1 on the tokens of weighted assistant turns: the answer-only labels of the same tokens."""
    answers = tokenize_examples(examples, tokenizer, max_seq_len, loss_on="answer")
    masks = {}
    for item, answer in zip(items, answers, strict=False):
        if answer.input_ids != item.input_ids:
            raise TrainingError(
                "tokenisation_mismatch", f"row {item.row}: answer-only tokenisation differs; use score_on='all'"
            )
        masks[item.row] = [int(label != -100) for label in answer.labels]
    return masks


def _score_mask(run: _Run, candidates: list[TokenizedExample], attention_mask: torch.Tensor) -> torch.Tensor:
    mask = torch.zeros_like(attention_mask)
    score_masks = run.score_masks or {}
    for i, item in enumerate(candidates):
        row_mask = score_masks[item.row]
        mask[i, : len(row_mask)] = torch.tensor(row_mask, dtype=mask.dtype)
    return mask


def _train_on(run: _Run, trained: list[TokenizedExample]) -> tuple[float, float, float, int]:
    """Forward + backward on the selected examples, one optimizer step. Returns loss, token accuracy, grad norm, tokens.

    Weights are fixed over the whole selection before the first micro-batch, so the accumulated gradient is
    exactly that of one batch however the picks are split: "token" weights every loss token 1 / (all loss tokens);
    "example" (the official script: each micro-batch's mean, k = 1 per micro-batch) weights example i's tokens
    1 / (T_i * examples), the mean over examples of each example's token mean.

    On several devices each rank trains a contiguous share of the same micro-batches and the gradients (already
    weighted for the whole step) are summed, not averaged: an explicit all-reduce rather than a DDP wrapper,
    because ranks may hold different numbers of micro-batches (DDP wants the same number of backward passes
    everywhere) and because exact step weights need a sum where DDP divides by the number of ranks.
    """
    config = run.config
    run.model.train()
    run.optimizer.zero_grad(set_to_none=True)
    # Sorted by length for the micro-batches: the picks come from groups of different lengths, and padding each
    # micro-batch to near-equal rows saves compute. Stable, so the order depends only on which were picked.
    trained = sorted(trained, key=lambda item: len(item.input_ids))
    token_counts = [_loss_token_count(item) for item in trained]
    weights = step_token_weights(config.loss_weighting, token_counts)
    total_loss, correct, tokens = 0.0, 0, 0
    starts = distributed.share(range(0, len(trained), config.micro_batch_size), run.world)
    for start in starts:
        micro_items = trained[start : start + config.micro_batch_size]
        micro = _to_device(collate(micro_items, run.tokenizer.pad_token_id), run.device)
        with autocast(run.device):
            logits = run.model(input_ids=micro["input_ids"], attention_mask=micro["attention_mask"]).logits
        weighted = weighted_token_loss(logits, micro["labels"], weights[start : start + len(micro_items)])
        weighted.backward()
        total_loss += weighted.item()
        predicted, targets = logits[:, :-1].argmax(-1), micro["labels"][:, 1:]
        mask = targets != -100
        correct += int((predicted[mask] == targets[mask]).sum())
        tokens += int(micro["attention_mask"].sum())
    trainable = [p for p in run.model.parameters() if p.requires_grad]
    total_loss, summed_correct, summed_tokens = distributed.sum_gradients(
        trainable, [total_loss, correct, tokens], run.world
    )
    grad_norm = float(torch.nn.utils.clip_grad_norm_(trainable, config.max_grad_norm))
    run.optimizer.step()
    return total_loss, round(summed_correct) / max(1, sum(token_counts)), grad_norm, round(summed_tokens)


def _loss_token_count(item: TokenizedExample) -> int:
    return loss_token_count(item.labels)


def _selection_rows(rows: list[int], scores: Scores, chosen: torch.Tensor) -> list[dict[str, Any]]:
    chosen_set = set(chosen.tolist())

    def value(values: torch.Tensor | None, i: int) -> float | None:
        return None if values is None else float(values[i])

    return [
        {
            "row": row,
            "selected": i in chosen_set,
            "utility": value(scores.utility, i),
            "diversity": value(scores.diversity, i),
            "score": float(scores.total[i]),
        }
        for i, row in enumerate(rows)
    ]


# Running sums of the length diagnostic, kept with the other counters (and so in checkpoints).
_LENGTH_COUNTERS = {
    "rho_utility_sum": 0.0,
    "rho_utility_groups": 0,
    "rho_score_sum": 0.0,
    "rho_score_groups": 0,
    "length_candidates_sum": 0,
    "length_selected_sum": 0,
}


def _count(
    run: _Run,
    scored: int,
    trained: int,
    tokens: int,
    time_scoring: float,
    time_training: float,
    bias: dict[str, Any],
    lengths: torch.Tensor,
    selected: torch.Tensor,
) -> None:
    counters = run.counters
    counters["examples_scored"] += scored
    counters["examples_trained"] += trained
    counters["tokens_trained"] += tokens
    counters["time_scoring"] += time_scoring
    counters["time_training"] += time_training
    # A step's mean correlation weighs by its groups that had one, so the job's figure is a mean over groups.
    if bias["spearman_utility_length"] is not None:
        counters["rho_utility_sum"] += bias["spearman_utility_length"] * bias["groups_with_utility_rho"]
        counters["rho_utility_groups"] += bias["groups_with_utility_rho"]
    if bias["spearman_score_length"] is not None:
        counters["rho_score_sum"] += bias["spearman_score_length"] * bias["groups_with_score_rho"]
        counters["rho_score_groups"] += bias["groups_with_score_rho"]
    counters["length_candidates_sum"] += int(lengths.sum())
    counters["length_selected_sum"] += int(lengths[selected].sum())


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
    return ckpt.save_checkpoint(
        root, step, run.model, state, keep=run.config.keep_checkpoints, fingerprint=fp.fingerprint(run.config)
    )


def _check_fingerprint(run: _Run, checkpoint: ckpt.Checkpoint) -> None:
    """Resume only the run the checkpoint belongs to (a checkpoint older than fingerprints is trusted)."""
    stored = ckpt.read_fingerprint(checkpoint.path)
    differing = [] if stored is None else fp.differences(stored, fp.fingerprint(run.config))
    if differing:
        raise TrainingError("checkpoint_mismatch", fp.mismatch_message(differing, checkpoint.step))
    if checkpoint.step > run.total_steps:
        raise TrainingError("checkpoint_mismatch", fp.past_the_end_message(checkpoint.step, run.total_steps))


def _restore(run: _Run, checkpoint: ckpt.Checkpoint) -> int:
    try:
        state = ckpt.load_checkpoint(checkpoint.path, run.model)
        run.optimizer.load_state_dict(state["optimizer"])
        run.scheduler.load_state_dict(state["scheduler"])
        run.selector.load_state_dict(state["selector"])
        ckpt.restore_rng_state(state["rng"])
        run.counters.update(state["counters"])
        return int(state["step"])
    except (KeyError, ValueError, RuntimeError, pickle.UnpicklingError, SafetensorError) as error:
        # A checkpoint that does not fit this run (or is damaged) is the user's to resolve, not a crash.
        raise TrainingError(
            "checkpoint_incompatible",
            f"The checkpoint at step {checkpoint.step} cannot be resumed "
            f"({error}); start over with --no-resume (resume=False), or write to another --output-dir.",
        ) from error


def _export_adapter(run: _Run) -> str:
    """The final PEFT folder (adapter + tokenizer), published by rename so a reader never sees half of it."""
    final_dir = os.path.join(run.config.output_dir, "adapter")
    temp_dir = f"{final_dir}.tmp-{os.getpid()}"
    shutil.rmtree(temp_dir, ignore_errors=True)
    run.model.save_pretrained(temp_dir, safe_serialization=True)
    run.tokenizer.save_pretrained(temp_dir)
    # PEFT records the folder the base was loaded from (a private path for uds-tiny or a registered model); the
    # adapter must name what the user asked for, and carry a real model card instead of PEFT's empty template.
    config = run.config
    finalize_adapter(
        temp_dir,
        CardInfo(
            base_model=config.model,
            dataset=os.path.basename(config.dataset_path),
            examples=len(run.items),
            method=config.method,
            budget=config.budget,
            steps=run.total_steps,
            final_loss=run.counters.get("last_loss"),
            final_eval_loss=run.counters.get("last_eval_loss"),
            lora_r=config.lora_r,
            lora_alpha=config.lora_alpha,
            lora_targets=list(config.lora_targets),
        ),
    )
    shutil.rmtree(final_dir, ignore_errors=True)
    os.replace(temp_dir, final_dir)
    return final_dir


def _summary(run: _Run) -> dict[str, Any]:
    c = run.counters
    scored, trained = c["examples_scored"], c["examples_trained"]
    return {
        **{key: value for key, value in c.items() if key not in _LENGTH_COUNTERS},
        "trained_fraction": trained / scored if scored else 0.0,
        "backward_saved_fraction": 1 - trained / scored if scored else 0.0,
        "spearman_utility_length": c["rho_utility_sum"] / c["rho_utility_groups"] if c["rho_utility_groups"] else None,
        "spearman_score_length": c["rho_score_sum"] / c["rho_score_groups"] if c["rho_score_groups"] else None,
        "mean_length_candidates": c["length_candidates_sum"] / scored if scored else None,
        "mean_length_selected": c["length_selected_sum"] / trained if trained else None,
        "device_kind": device_kind(run.device, run.world.size),
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
        raise TrainingError(
            "out_of_memory",
            "The GPU ran out of memory. Lower micro_batch_size, candidate_batch_size or max_seq_len, or enable gradient_checkpointing.",
        ) from error
    except RuntimeError as error:
        if "out of memory" in str(error).lower():
            raise TrainingError(
                "out_of_memory", f"Out of memory: {error}. Lower micro_batch_size, candidate_batch_size or max_seq_len."
            ) from error
        raise
    except OSError as error:
        raise TrainingError(
            "artifact_write_failed",
            f"Could not write training artifacts ({error.strerror or error}): check free disk space and that the data folder is writable.",
        ) from error
    except SafetensorError as error:  # safetensors reports a full disk or a read-only folder as its own error type
        raise TrainingError(
            "artifact_write_failed",
            f"Could not write training artifacts ({error}): check free disk space and that the data folder is writable.",
        ) from error


def _to_device(batch: dict[str, torch.Tensor], device: torch.device) -> dict[str, torch.Tensor]:
    return {key: value.to(device) for key, value in batch.items()}


def _now(device: torch.device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter()
