"""Training configuration: one validated dataclass, shared by the CLI, the service and the trainer.

Torch-free on purpose: the API validates and resolves job configurations with it without importing any ML code.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any, Literal, Union

from uds.methods import METHODS

LOSS_ON = ("all", "answer")
SCORE_ON = ("all", "answer")
SCHEDULES = ("cosine", "linear", "constant")
LORA_INITS = ("gaussian", "default")
LOSS_WEIGHTINGS = ("example", "token")
ALPHA_MODES = ("paper", "auto")
RECIPES = ("paper",)
DEFAULT_LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")

# An epoch is cut into at least this many optimizer steps when the data allows it: a small dataset gets fewer
# selection groups per step rather than one giant step per epoch (see `groups_per_step`).
MIN_STEPS_PER_EPOCH = 4
# Processes one job may span: a node of GPUs (torchrun starts them all on the claiming worker's host).
MAX_DEVICES = 64

Alpha = Union[float, Literal["auto", "paper"]]

# The official script's settings (scripts/run_mmlu.sh of the paper's code, Qwen2.5-7B on MMLU): micro batch 4 with
# k_base 1 is a selection group of 4 with 1 picked; batch 128 is 32 groups accumulated into one optimizer step.
PAPER_RECIPE: dict[str, Any] = {
    "method": "uds",
    "budget": 0.25,
    "candidate_batch_size": 4,
    "train_batch_size": 32,  # with k 1 of 4: 32 groups a step on large data (fewer on small data, see groups_per_step)
    "group_by_length": True,
    "alpha": "paper",
    "buffer_size": 1024,
    "proj_r_voc": 128,
    "proj_r_seq": 8,
    "epochs": 1,
    "learning_rate": 1.5e-4,
    "warmup_ratio": 0.01,
    "lr_schedule": "linear",
    "weight_decay": 0.0,
    "max_grad_norm": 1.0,
    "lora_r": 8,
    "lora_alpha": 16,
    "lora_dropout": 0.0,
    "lora_targets": list(DEFAULT_LORA_TARGETS),
    "lora_init": "gaussian",
    "loss_weighting": "example",
    "max_seq_len": 512,
    "loss_on": "all",
    "score_on": "all",
}
RECIPE_SETTINGS = {"paper": PAPER_RECIPE}


class ConfigError(ValueError):
    """A configuration value is invalid. `param` names the field, `message` says what is wrong."""

    def __init__(self, param: str, message: str):
        super().__init__(f"{param}: {message}")
        self.param = param
        self.message = message


def _setting(default: Any, help: str, choices: tuple[str, ...] | None = None) -> Any:
    """A dataclass field with its help text and, for a fixed set of values, its choices, as field metadata."""
    metadata = {"help": help} if choices is None else {"help": help, "choices": tuple(choices)}
    return field(default=default, metadata=metadata)


def setting_help(name: str) -> str:
    return TrainConfig.__dataclass_fields__[name].metadata.get("help", "")


def setting_choices(name: str) -> tuple[str, ...] | None:
    return TrainConfig.__dataclass_fields__[name].metadata.get("choices")


@dataclass
class TrainConfig:
    """Every setting of a run. Each field's metadata carries its `help` (one line) and, where the values are a fixed
    set, its `choices`: the `uds train` flags, the job API's schema and the dashboard's hints are built from them."""

    # What to train, on what, where to write.
    model: str = _setting("uds-tiny", "model name (uds-tiny, a registered or allow-listed model) or a local folder")
    dataset_path: str = _setting("", "training JSONL (chat, Alpaca or prompt/completion)")
    eval_dataset_path: str | None = _setting(None, "held-out JSONL for eval loss and exact match")
    output_dir: str = _setting("uds-output", "folder for checkpoints, metrics and the adapter")

    # A named set of settings applied under the ones given explicitly ("paper": the official script's).
    recipe: str | None = _setting(
        None, "fill every setting not given with a named recipe: paper = the official script's", RECIPES
    )

    # Selection. A selection group is B candidates of near-equal length, k of them picked;
    # one optimizer step accumulates the picks of `groups_per_step` groups.
    method: str = _setting("uds", "how each group's k are picked (full: no selection)", METHODS)
    budget: float = _setting(0.125, "fraction of candidates trained on: k = max(1, round(budget * B)) per group")
    candidate_batch_size: int = _setting(8, "B: candidates in one selection group (near-equal lengths)")
    groups_per_step: int | None = _setting(
        None, "selection groups per optimizer step (default: about train_batch_size picks a step)"
    )
    train_batch_size: int = _setting(32, "picks per optimizer step that groups_per_step aims at when not given")
    group_by_length: bool = _setting(True, "length-grouped candidate order, so a group compares examples, not lengths")
    equal_rows: bool = _setting(True, "score a group's candidates on the same number of tokens (its shortest length)")
    alpha: Alpha = _setting("paper", 'weight of diversity: a number, "paper" (the official 1.5e-3 converted) or "auto"')
    alpha_window: int = _setting(256, 'selection groups that alpha "auto" pools its spreads over')
    buffer_size: int = _setting(1024, "memory of the projections of selected examples (FIFO)")
    proj_r_voc: int = _setting(128, "projection size over the vocabulary")
    proj_r_seq: int = _setting(8, "projection size over positions")

    # Optimisation. Defaults follow the paper's shipped script.
    epochs: int = _setting(1, "passes over the data")
    max_steps: int | None = _setting(None, "optimizer steps; overrides epochs when set")
    learning_rate: float = _setting(1.5e-4, "peak learning rate (AdamW)")
    warmup_ratio: float = _setting(0.01, "share of the steps spent warming up (at least one step)")
    lr_schedule: str = _setting("linear", "decay after warm-up", SCHEDULES)
    loss_weighting: str = _setting(
        "example", "example: mean of each pick's token mean (the paper); token: every token alike", LOSS_WEIGHTINGS
    )
    weight_decay: float = _setting(0.0, "AdamW weight decay")
    max_grad_norm: float = _setting(1.0, "gradient clipping norm")
    micro_batch_size: int = _setting(4, "examples per forward/backward (memory only: accumulation is exact)")
    seed: int = _setting(0, "data order, LoRA init and random selection")

    # LoRA (paper: r 8, alpha 16, dropout 0, attention and MLP projections).
    lora_r: int = _setting(8, "LoRA rank")
    lora_alpha: int = _setting(16, "LoRA scaling numerator (scale = lora_alpha / lora_r)")
    lora_dropout: float = _setting(0.0, "LoRA dropout")
    lora_targets: list[str] = field(
        default_factory=lambda: list(DEFAULT_LORA_TARGETS), metadata={"help": "module names that get LoRA adapters"}
    )
    lora_init: str = _setting(
        "gaussian", "LoRA A init: gaussian (the paper) or PEFT's default Kaiming-uniform", LORA_INITS
    )

    # Data.
    max_seq_len: int = _setting(512, "tokens kept per example (longer ones are truncated)")
    loss_on: str = _setting("all", "tokens with loss: all (prompt and answer, the paper) or the answer only", LOSS_ON)
    # Which rows of the logits UDS scores: every real token (the paper) or the assistant answers only.
    score_on: str = _setting("all", "tokens UDS scores: all real tokens (the paper) or the answer only", SCORE_ON)

    # Bookkeeping.
    checkpoint_every: int = _setting(50, "steps between checkpoints")
    keep_checkpoints: int = _setting(2, "newest checkpoints kept")
    eval_every: int | None = _setting(None, "steps between evaluations on the eval file (always at the end)")
    eval_max_new_tokens: int = _setting(32, "tokens generated per eval answer for exact match")
    device: str = _setting("auto", "auto, cpu, cuda or cuda:N")
    devices: int = _setting(
        1, "devices one job trains on, data-parallel (GPUs, or CPU processes); picks the same examples on any number"
    )
    gradient_checkpointing: bool = _setting(False, "recompute activations in backward to save memory")
    models_dir: str | None = _setting(None, "where local and built models live")

    def __post_init__(self) -> None:
        if self.recipe is not None and self.recipe in RECIPE_SETTINGS:
            _apply_recipe_to_defaults(self)
        self.validate()

    @property
    def k(self) -> int:
        """Examples trained on per full selection group."""
        return selected_count(self.budget, self.candidate_batch_size)

    def validate(self) -> None:
        for spec in dataclasses.fields(self):
            choices = spec.metadata.get("choices")
            value = getattr(self, spec.name)
            if choices and not (value is None and spec.default is None) and value not in choices:
                raise ConfigError(spec.name, f"must be one of {', '.join(choices)}, got {value!r}")
        if isinstance(self.budget, bool) or not isinstance(self.budget, (int, float)) or not (0 < self.budget <= 1):
            raise ConfigError("budget", f"must be a fraction in (0, 1], got {self.budget!r}")
        if self.method == "full" and self.budget != 1:
            # `full` means no selection; silently training on a fraction would mislabel the baseline.
            self.budget = 1.0
        if isinstance(self.alpha, str):
            if self.alpha not in ALPHA_MODES:
                raise ConfigError("alpha", f'must be a non-negative number, "paper" or "auto", got {self.alpha!r}')
        elif (
            isinstance(self.alpha, bool)
            or not isinstance(self.alpha, (int, float))
            or not math.isfinite(self.alpha)
            or self.alpha < 0
        ):
            raise ConfigError("alpha", f'must be a non-negative number, "paper" or "auto", got {self.alpha!r}')
        _positive_int(self, "candidate_batch_size", maximum=4096)
        _positive_int(self, "train_batch_size", maximum=1_000_000)
        if self.groups_per_step is not None:
            _positive_int(self, "groups_per_step", maximum=1_000_000)
        for name in ("group_by_length", "equal_rows", "gradient_checkpointing"):
            if not isinstance(getattr(self, name), bool):
                raise ConfigError(name, f"must be true or false, got {getattr(self, name)!r}")
        _positive_int(self, "buffer_size", maximum=1_000_000)
        _positive_int(self, "proj_r_voc", maximum=4096)
        _positive_int(self, "proj_r_seq", maximum=512)
        _positive_int(self, "alpha_window", maximum=100_000)
        _positive_int(self, "epochs", maximum=1000)
        _positive_int(self, "micro_batch_size", maximum=4096)
        _positive_int(self, "devices", maximum=MAX_DEVICES)
        _positive_int(self, "lora_r", maximum=1024)
        _positive_int(self, "lora_alpha", maximum=100_000)
        _positive_int(self, "max_seq_len", maximum=131_072)
        _positive_int(self, "checkpoint_every", maximum=10_000_000)
        _positive_int(self, "keep_checkpoints", maximum=1000)
        _positive_int(self, "eval_max_new_tokens", maximum=4096)
        if self.max_steps is not None:
            _positive_int(self, "max_steps", maximum=10_000_000)
        if self.eval_every is not None:
            _positive_int(self, "eval_every", maximum=10_000_000)
        if not _finite_number(self.learning_rate) or not (0 < self.learning_rate < 1):
            raise ConfigError("learning_rate", f"must be in (0, 1), got {self.learning_rate!r}")
        if not _finite_number(self.warmup_ratio) or not (0 <= self.warmup_ratio < 1):
            raise ConfigError("warmup_ratio", f"must be in [0, 1), got {self.warmup_ratio!r}")
        if not _finite_number(self.weight_decay) or self.weight_decay < 0:
            raise ConfigError("weight_decay", f"must be >= 0, got {self.weight_decay!r}")
        if not _finite_number(self.max_grad_norm) or self.max_grad_norm <= 0:
            raise ConfigError("max_grad_norm", f"must be > 0, got {self.max_grad_norm!r}")
        if not _finite_number(self.lora_dropout) or not (0 <= self.lora_dropout < 1):
            raise ConfigError("lora_dropout", f"must be in [0, 1), got {self.lora_dropout!r}")
        if self.device not in ("auto", "cpu", "cuda") and not str(self.device).startswith("cuda:"):
            raise ConfigError("device", f'must be "auto", "cpu", "cuda" or "cuda:N", got {self.device!r}')
        if (
            not isinstance(self.lora_targets, (list, tuple))
            or not self.lora_targets
            or not all(isinstance(t, str) and t for t in self.lora_targets)
        ):
            raise ConfigError("lora_targets", "must be a non-empty list of module names")
        self.lora_targets = list(self.lora_targets)
        if not isinstance(self.model, str) or not self.model:
            raise ConfigError("model", "must be a model name or a local folder")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "TrainConfig":
        """A config from explicit settings. A `recipe` fills every setting not given; given ones always win."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ConfigError(unknown[0], f"unknown setting (known: {', '.join(sorted(known))})")
        recipe = values.get("recipe")
        if recipe is None:
            return cls(**values)
        if recipe not in RECIPES:
            raise ConfigError("recipe", f"must be one of {', '.join(RECIPES)} or null, got {recipe!r}")
        # Built without the recipe, then labelled: __post_init__ would otherwise re-apply it to any explicit
        # value that happens to equal the dataclass default (e.g. candidate_batch_size 8 under "paper").
        config = cls(**{**RECIPE_SETTINGS[recipe], **values, "recipe": None})
        config.recipe = recipe
        return config


def _apply_recipe_to_defaults(config: TrainConfig) -> None:
    """For direct construction (`TrainConfig(recipe="paper", ...)`): recipe values replace settings left at their
    dataclass default. `from_dict` is exact about what was given; this cannot tell an explicit default apart."""
    for name, value in RECIPE_SETTINGS[str(config.recipe)].items():
        spec = config.__dataclass_fields__[name]
        default = spec.default_factory() if spec.default_factory is not dataclasses.MISSING else spec.default
        if getattr(config, name) == default:
            setattr(config, name, list(value) if isinstance(value, list) else value)


def selected_count(budget: float, candidates: int) -> int:
    """k = max(1, round(budget * B)): never zero, so every group trains on something."""
    return max(1, min(candidates, int(round(budget * candidates))))


def group_count(n_examples: int, candidate_batch_size: int) -> int:
    """Selection groups in one epoch; the last, partial group is kept so every row is a candidate once."""
    return max(1, math.ceil(n_examples / candidate_batch_size))


def groups_per_step(config: TrainConfig, n_examples: int) -> int:
    """Selection groups accumulated into one optimizer step.

    Given explicitly, it is honoured (up to one epoch's groups). Otherwise it is chosen so that a step trains on
    about `train_batch_size` selected examples (32, as the official script's 128 candidates at k 1 of 4), but
    never so many that an epoch has fewer than MIN_STEPS_PER_EPOCH steps: a 200-row dataset at B 8 gets 6 groups
    a step (5 steps), not 32 groups (1 step).
    """
    n_groups = group_count(n_examples, config.candidate_batch_size)
    if config.groups_per_step is not None:
        return min(config.groups_per_step, n_groups)
    wanted = max(1, round(config.train_batch_size / config.k))
    return max(1, min(wanted, n_groups // MIN_STEPS_PER_EPOCH))


def steps_per_epoch(config: TrainConfig, n_examples: int) -> int:
    """Optimizer steps in one epoch; the last step of an epoch may hold fewer groups."""
    return math.ceil(group_count(n_examples, config.candidate_batch_size) / groups_per_step(config, n_examples))


def total_steps(config: TrainConfig, n_examples: int) -> int:
    """`max_steps`, when set, is the length of the run and overrides `epochs` (as in transformers' Trainer)."""
    if config.max_steps is not None:
        return config.max_steps
    return config.epochs * steps_per_epoch(config, n_examples)


def _finite_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _positive_int(config: TrainConfig, name: str, maximum: int) -> None:
    value = getattr(config, name)
    if isinstance(value, bool) or not isinstance(value, int) or not (1 <= value <= maximum):
        raise ConfigError(name, f"must be an integer in [1, {maximum}], got {value!r}")
