"""UDS inside `transformers.Trainer`: one dataloader batch is one selection group, gradient accumulation is the
groups of one optimizer step, as in the paper's own Trainer subclass.

How it maps onto the Trainer's loop (see docs/INTEGRATIONS.md):
- `get_train_dataloader`: the batches are the selection groups of `uds.order.epoch_groups` (length-grouped,
  from (seed, epoch) alone), so the data order is our loop's and a resumed run's position is just its step.
- `get_batch_samples` (the Trainer fetches a step's G batches before training any): scores all G groups with
  `uds.engine.measure`, selects them in order with `uds.engine.select` (memory pushed after each group), and
  hands back one batch per group holding only its k picks, with loss weights fixed over the step.
- `compute_loss`: `uds.engine.weighted_token_loss` on the picks; the returned loss is already the step's share,
  so the Trainer does not divide it by the accumulation steps again.
- Several processes (DDP: torchrun, accelerate launch): a step is the G * W groups one process with
  `gradient_accumulation_steps = G * W` would draw. Each rank loads and measures its share of them
  (`uds.integrations.sharding`), the measures are gathered, every rank selects all of them (the same picks and
  memory everywhere) and trains the picks of its own groups, weighted over all the step's picks.
- `_save_checkpoint` / `train(resume_from_checkpoint=...)`: the selector state rides in each checkpoint folder.
- `log`: the selection statistics since the last log join the Trainer's training logs (so `report_to` gets them).
"""

from __future__ import annotations

import dataclasses
import os
from typing import TYPE_CHECKING, Any

import torch
from accelerate.data_loader import prepare_data_loader  # type: ignore[import-untyped]
from accelerate.utils import DistributedType  # type: ignore[import-untyped]
from torch.utils.data import DataLoader, Dataset
from transformers import Trainer
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR, get_last_checkpoint

from uds import engine
from uds import fingerprint as fp
from uds.config import TrainConfig
from uds.distributed import World
from uds.engine import equal_rows_mask, loss_token_count, step_token_weights, weighted_token_loss
from uds.integrations.sharding import Filler, StepCandidates, StepShareSampler, gather_step
from uds.models import output_head
from uds.selectors import Measures, make_selector

STATE_FILE = "uds_state.pt"
# Batch keys the integration adds for its own use; removed before anything reaches the model.
ROWS_KEY = "uds_rows"
WEIGHTS_KEY = "uds_weights"
FILLER_KEY = "uds_filler"
# Data parallelism where every process holds the whole model and trains its own batches (DDP) is what the
# selection is exact for; sharded or pipelined models are not.
_UNSUPPORTED = (DistributedType.DEEPSPEED, DistributedType.FSDP, DistributedType.MEGATRON_LM, DistributedType.XLA)


# The selection settings a Trainer takes from UDSConfig: names, types and defaults are TrainConfig's own.
SELECTION_SETTINGS = (
    "method",
    "budget",
    "group_by_length",
    "equal_rows",
    "alpha",
    "alpha_window",
    "buffer_size",
    "proj_r_voc",
    "proj_r_seq",
    "loss_weighting",
)


def _selection_fields() -> list[tuple[str, Any, Any]]:
    fields = {f.name: f for f in dataclasses.fields(TrainConfig)}
    return [(name, fields[name].type, dataclasses.field(default=fields[name].default)) for name in SELECTION_SETTINGS]


# Settings whose Trainer value is used when left None (see UDSConfig), and what only the integration has.
_UDSSettings: Any = dataclasses.make_dataclass(
    "_UDSSettings",
    [
        *_selection_fields(),
        ("candidate_batch_size", "int | None", dataclasses.field(default=None)),
        ("max_seq_len", "int | None", dataclasses.field(default=None)),
        ("seed", "int | None", dataclasses.field(default=None)),
        ("record_selections", "bool", dataclasses.field(default=False)),
    ],
)


class UDSConfig(_UDSSettings):
    """The selection settings: those of `SELECTION_SETTINGS`, as in TrainConfig (same defaults, same validation).
    The rest (optimizer, schedule, steps) is the Trainer's.

    The group size B is `candidate_batch_size`, or the Trainer's `per_device_train_batch_size` when None; the
    groups per optimizer step are the Trainer's `gradient_accumulation_steps`. `max_seq_len` sizes the projection
    (and alpha "paper"): None takes `args.max_length` (TRL) or else the longest training example. `seed` None
    takes `args.seed`. `record_selections` keeps every step's groups and picks in `trainer.selections`.
    """

    def train_config(self, candidate_batch_size: int, max_seq_len: int, seed: int) -> TrainConfig:
        """The same settings as a TrainConfig: validated by the one validator, and what `make_selector` takes."""
        selection = {name: getattr(self, name) for name in SELECTION_SETTINGS}
        return TrainConfig(**selection, candidate_batch_size=candidate_batch_size, max_seq_len=max_seq_len, seed=seed)


class _WithRows(Dataset):
    """The dataset's items paired with their row: the row survives any collator, so picks are reported as rows."""

    def __init__(self, dataset):
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, row: int):
        return row, self.dataset[int(row)]


class _RowsCollator:
    def __init__(self, collator):
        self.collator = collator

    def __call__(self, pairs):
        batch = dict(self.collator([item for _, item in pairs]))
        batch[ROWS_KEY] = torch.tensor([int(row) for row, _ in pairs])
        if isinstance(pairs[0][0], Filler):
            batch[FILLER_KEY] = True
        return batch


# The mixin reaches the Trainer's attributes (args, state, model, ...): type-checked as the Trainer it joins.
_MixinBase: Any = Trainer if TYPE_CHECKING else object


class UDSMixin(_MixinBase):
    """Online batch selection for a `transformers.Trainer` (or a subclass, e.g. TRL's SFTTrainer): put it first.

    One process, or several data-parallel ones (DDP under torchrun or accelerate launch) that pick exactly what one
    process with `gradient_accumulation_steps` times the number of processes picks. Batches must be right-padded
    `input_ids`, `attention_mask` and `labels` (-100 = no loss), which is what the usual collators produce.
    """

    def __init__(self, *args, uds: UDSConfig | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        if self.accelerator.distributed_type in _UNSUPPORTED:
            raise NotImplementedError(
                f"UDS selection runs in one process or in data-parallel processes (DDP), not under "
                f"{self.accelerator.distributed_type.value}"
            )
        self.uds_world = World(self.args.process_index, self.args.world_size)
        self.uds = uds or UDSConfig()
        self.uds_lengths = _example_lengths(self.train_dataset) if self.train_dataset is not None else []
        max_len = self.uds.max_seq_len or getattr(self.args, "max_length", None) or max(self.uds_lengths, default=1)
        group_size = self.uds.candidate_batch_size or self.args.per_device_train_batch_size
        seed = self.args.seed if self.uds.seed is None else self.uds.seed
        self.uds_config = self.uds.train_config(group_size, max_len, seed)
        # Logging and progress figures of the Trainer count batches of this size: keep them in candidates.
        self._train_batch_size = group_size
        self.uds_head = output_head(self.model)
        self.uds_selector = make_selector(self.uds_config, self.uds_head, max_len=max_len, device=self.args.device)
        # The picks' loss is exactly the step's share (weights fixed over the step): no division by the
        # accumulation steps on top.
        self.loss_is_scaled_for_ga = True
        self.uds_counters = {"examples_scored": 0, "examples_trained": 0}
        self.selections: list[dict[str, Any]] = []
        self._uds_pending: list[dict[str, float]] = []

    # ------------------------------------------------------------------------------------------------ data order

    def get_train_dataloader(self) -> DataLoader:
        if self.train_dataset is None:
            raise ValueError("Trainer: training requires a train_dataset.")
        dataset, collator = self._uds_dataset_and_collator()
        sampler = StepShareSampler(
            self.uds_lengths,
            self.uds_config.candidate_batch_size,
            self.uds_config.seed,
            self.uds_config.group_by_length,
            groups_per_step=self._uds_groups_per_step(),
            world=self.uds_world,
        )
        loader = DataLoader(
            _WithRows(dataset),
            batch_sampler=sampler,
            collate_fn=_RowsCollator(collator),
            num_workers=self.args.dataloader_num_workers,
            pin_memory=self.args.dataloader_pin_memory,
        )
        # Already this rank's batches: accelerate only puts them on the device (as one process), it does not shard.
        return prepare_data_loader(
            loader,
            self.args.device,
            num_processes=1,
            process_index=0,
            put_on_device=True,
            non_blocking=self.accelerator.non_blocking,
        )

    def _uds_groups_per_step(self) -> int:
        """Groups of one optimizer step over all processes: what one process with this accumulation draws."""
        return self.args.gradient_accumulation_steps * self.uds_world.size

    def _uds_dataset_and_collator(self):
        """The Trainer's own column removal, so a user's dataset and collator behave as they would without UDS."""
        try:
            import datasets
        except ImportError:  # datasets is optional for a plain Trainer
            datasets = None
        if datasets is not None and isinstance(self.train_dataset, datasets.Dataset):
            return self._remove_unused_columns(self.train_dataset, description="training"), self.data_collator
        return self.train_dataset, self._get_collator_with_removed_columns(self.data_collator, description="training")

    # ------------------------------------------------------------------------------------------------ selection

    def get_batch_samples(self, epoch_iterator, num_batches, device):
        slots = []
        for _ in range(num_batches):
            try:
                slots.append(next(epoch_iterator))
            except StopIteration:
                break
        if not slots:
            return [], None
        groups = [slot for slot in slots if not slot.get(FILLER_KEY)]
        step, first_group = gather_step(
            self._uds_candidates(groups), self.uds_world, self.uds_selector.needs_hidden, self.args.device
        )
        selection = engine.select(
            self.uds_selector, step.measures, step.sizes, self.uds_config.budget, torch.tensor(step.lengths)
        )
        self._uds_record(step, selection)
        return self._uds_picks(slots, step, first_group, selection), None

    def _uds_candidates(self, groups: list[dict[str, Any]]) -> StepCandidates:
        """This rank's groups of the step, measured (in one process: all of the step's groups)."""
        count = sum(int(group["input_ids"].shape[0]) for group in groups)
        measures = engine.measure(
            self.model,
            self.uds_selector,
            self.uds_head,
            (self._uds_scoring_batch(group) for group in groups),
            count,
            self.compute_loss_context_manager,
        )
        return StepCandidates(
            rows=[group[ROWS_KEY].tolist() for group in groups],
            lengths=[int(length) for group in groups for length in group["attention_mask"].sum(dim=1)],
            loss_tokens=[loss_token_count(labels) for group in groups for labels in group["labels"]],
            measures=measures if self.uds_selector.needs_hidden else Measures(count),
        )

    def _uds_scoring_batch(self, group: dict[str, Any]) -> engine.ScoringBatch:
        device = self.args.device
        mask = group["attention_mask"].to(device)
        score_mask = equal_rows_mask(mask) if self.uds_config.equal_rows else None
        return engine.ScoringBatch(group["input_ids"].to(device), mask, group["labels"].to(device), score_mask)

    def _uds_picks(
        self, slots: list[dict[str, Any]], step: StepCandidates, first_group: int, selection: engine.StepSelection
    ) -> list[dict[str, Any]]:
        """One batch per slot: this rank's groups cut to their picks (padding cut to them), each pick with its loss
        weight among ALL the step's picks (every rank's), so the ranks' losses add up to one process's loss."""
        chosen = selection.chosen.tolist()
        weights = step_token_weights(self.uds_config.loss_weighting, [step.loss_tokens[i] for i in chosen])
        position = {index: p for p, index in enumerate(chosen)}
        offsets = [0]
        for size in step.sizes:
            offsets.append(offsets[-1] + size)
        batches = []
        group_index = first_group
        for slot in slots:
            if slot.pop(FILLER_KEY, False):
                # Trains one row with weight 0: the same number of backward passes on every rank, no gradient.
                batch = _take(slot, [0])
                batch[WEIGHTS_KEY] = torch.zeros(1)
            else:
                start, stop = offsets[group_index], offsets[group_index + 1]
                index = [i for i in chosen if start <= i < stop]
                batch = _take(slot, [i - start for i in index])
                batch[WEIGHTS_KEY] = weights[[position[i] for i in index]]
                group_index += 1
            batch.pop(ROWS_KEY)
            batches.append(batch)
        return batches

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        weights = inputs.pop(WEIGHTS_KEY, None)
        inputs.pop(ROWS_KEY, None)
        if weights is None:  # evaluation batches: the Trainer's own loss
            return super().compute_loss(
                model, inputs, return_outputs=return_outputs, num_items_in_batch=num_items_in_batch
            )
        outputs = model(**{key: value for key, value in inputs.items() if key != "labels"})
        loss = weighted_token_loss(outputs.logits, inputs["labels"], weights)
        # DDP averages the ranks' gradients, and the step's gradient is their sum (each rank's picks are weighted
        # among all the step's picks): times W, the average is the sum. The logged loss, the mean of the ranks'
        # losses, is then the step's loss too.
        loss = loss * self.uds_world.size
        return (loss, outputs) if return_outputs else loss

    # ------------------------------------------------------------------------------------------------ statistics

    def _uds_record(self, step: StepCandidates, selection: engine.StepSelection) -> None:
        """Counters and statistics of the whole step (all ranks' groups): the same on every rank, and the same as
        one process would log."""
        self.uds_counters["examples_scored"] += int(selection.picked.numel())
        self.uds_counters["examples_trained"] += int(selection.picked.sum())
        self._uds_pending.append(engine.flat_stats(selection))
        if self.uds.record_selections:
            rows, chosen = [row for group in step.rows for row in group], selection.chosen.tolist()
            picked, start = [], 0
            for size in step.sizes:
                picked.append([rows[i] for i in chosen if start <= i < start + size])
                start += size
            self.selections.append(
                {
                    "step": self.state.global_step + 1,
                    "groups": step.rows,
                    "picked": picked,
                    "score": selection.scores.total.tolist(),
                }
            )

    def log(self, logs: dict[str, float], *args, **kwargs) -> None:
        # Training logs carry "loss"; evaluation and the final summary are left as they are.
        if "loss" in logs and self._uds_pending:
            logs = {**logs, **_mean_stats(self._uds_pending), **self._uds_totals()}
            self._uds_pending = []
        super().log(logs, *args, **kwargs)

    def _uds_totals(self) -> dict[str, float]:
        scored, trained = self.uds_counters["examples_scored"], self.uds_counters["examples_trained"]
        return {
            "uds/examples_scored": scored,
            "uds/examples_trained": trained,
            "uds/trained_fraction": trained / max(1, scored),
        }

    # ------------------------------------------------------------------------------------------------ checkpoints

    def _save_checkpoint(self, model, trial, *args, **kwargs) -> None:
        super()._save_checkpoint(model, trial, *args, **kwargs)
        folder = os.path.join(self._get_output_dir(trial=trial), f"{PREFIX_CHECKPOINT_DIR}-{self.state.global_step}")
        if os.path.isdir(folder) and self.args.should_save:
            state = {
                "selector": self.uds_selector.state_dict(),
                "counters": dict(self.uds_counters),
                "config": self.uds_config.to_dict(),
                "groups_per_step": self._uds_groups_per_step(),
            }
            torch.save(state, os.path.join(folder, STATE_FILE))

    def train(self, resume_from_checkpoint: str | bool | None = None, *args, **kwargs):
        if resume_from_checkpoint is True:
            # Resolved here too: the selector must be restored before the first resumed step is selected.
            resume_from_checkpoint = get_last_checkpoint(self.args.output_dir) or True
        if isinstance(resume_from_checkpoint, str):
            self._uds_restore(resume_from_checkpoint)
        return super().train(resume_from_checkpoint, *args, **kwargs)

    def _uds_restore(self, checkpoint: str) -> None:
        path = os.path.join(checkpoint, STATE_FILE)
        if not os.path.isfile(path):
            raise FileNotFoundError(
                f"{checkpoint} holds no UDS selector state ({STATE_FILE}); it was not written by a UDS trainer"
            )
        state = torch.load(path, map_location="cpu", weights_only=True)
        _check_same_selection(state["config"], self.uds_config)
        saved_groups = state.get("groups_per_step", self._uds_groups_per_step())
        if saved_groups != self._uds_groups_per_step():
            raise ValueError(
                f"the checkpoint was trained with {saved_groups} groups per optimizer step, this run has "
                f"{self._uds_groups_per_step()} (gradient_accumulation_steps x processes): make their product "
                f"{saved_groups} to resume it"
            )
        self.uds_selector.load_state_dict(state["selector"])
        self.uds_counters.update(state["counters"])


class UDSTrainer(UDSMixin, Trainer):  # type: ignore[misc]  # the mixin sets loss_is_scaled_for_ga per instance
    """`transformers.Trainer` with UDS online batch selection: `UDSTrainer(model=..., args=..., uds=UDSConfig(...))`."""


def _check_same_selection(saved: dict[str, Any], config: TrainConfig) -> None:
    """The resume rule of `uds.fingerprint`: every setting that changes results must be the checkpoint's."""
    changed = fp.differences({"settings": fp.settings_of(saved)}, {"settings": fp.settings_of(config)})
    if changed:
        raise ValueError(
            f"the checkpoint's UDS settings differ ({', '.join(changed)}): resume with the settings it was trained with"
        )


def _take(batch: dict[str, Any], index: list[int]) -> dict[str, Any]:
    """Rows `index` of every per-example tensor of `batch`, padding trimmed to the longest of them."""
    size = int(batch["input_ids"].shape[0])
    rows = torch.tensor(index, dtype=torch.long)
    taken = {
        key: value[rows.to(value.device)]
        if torch.is_tensor(value) and value.dim() > 0 and value.shape[0] == size
        else value
        for key, value in batch.items()
    }
    width = int(taken["attention_mask"].sum(dim=1).max()) if len(index) else 0
    for key in ("input_ids", "attention_mask", "labels"):
        taken[key] = taken[key][:, :width]
    return taken


def _example_lengths(dataset) -> list[int]:
    """Token count of each row, what length grouping sorts by: a "length" column if there is one, else input_ids."""
    names = getattr(dataset, "column_names", None) or []
    if "length" in names:
        return [int(length) for length in dataset["length"]]
    if "input_ids" in names:
        return [len(ids) for ids in dataset["input_ids"]]
    return [len(dataset[row]["input_ids"]) for row in range(len(dataset))]


def _mean_stats(steps: list[dict[str, float]]) -> dict[str, float]:
    """The mean of each statistic over the steps since the last log (a key missing in a step is not counted)."""
    keys = dict.fromkeys(key for step in steps for key in step)
    return {
        key: sum(step[key] for step in steps if key in step) / sum(1 for step in steps if key in step) for key in keys
    }
