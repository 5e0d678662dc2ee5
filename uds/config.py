"""Training configuration: one validated dataclass, shared by the CLI, the service and the trainer.

Torch-free on purpose: the API validates and resolves job configurations with it without importing any ML code.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any, Literal, Union

METHODS = ("uds", "random", "max_loss", "max_grad", "full")
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


@dataclass
class TrainConfig:
    # What to train, on what, where to write.
    model: str = "uds-tiny"
    dataset_path: str = ""
    eval_dataset_path: str | None = None
    output_dir: str = "uds-output"

    # A named set of settings applied under the ones given explicitly ("paper": the official script's).
    recipe: str | None = None

    # Selection (DESIGN.md section 3). A selection group is B candidates of near-equal length, k of them picked;
    # one optimizer step accumulates the picks of `groups_per_step` groups.
    method: str = "uds"
    budget: float = 0.125
    candidate_batch_size: int = 8
    groups_per_step: int | None = None
    train_batch_size: int = 32
    group_by_length: bool = True
    alpha: Alpha = "paper"
    alpha_window: int = 256
    buffer_size: int = 1024
    proj_r_voc: int = 128
    proj_r_seq: int = 8

    # Optimisation. Defaults follow the paper's shipped script.
    epochs: int = 1
    max_steps: int | None = None
    learning_rate: float = 1.5e-4
    warmup_ratio: float = 0.01
    lr_schedule: str = "linear"
    loss_weighting: str = "example"
    weight_decay: float = 0.0
    max_grad_norm: float = 1.0
    micro_batch_size: int = 4
    seed: int = 0

    # LoRA (paper: r 8, alpha 16, dropout 0, attention and MLP projections).
    lora_r: int = 8
    lora_alpha: int = 16
    lora_dropout: float = 0.0
    lora_targets: list[str] = field(default_factory=lambda: list(DEFAULT_LORA_TARGETS))
    lora_init: str = "gaussian"

    # Data.
    max_seq_len: int = 512
    loss_on: str = "all"
    # Which rows of the logits UDS scores: every real token (the paper) or the assistant answers only.
    score_on: str = "all"

    # Bookkeeping.
    checkpoint_every: int = 50
    keep_checkpoints: int = 2
    eval_every: int | None = None
    eval_max_new_tokens: int = 32
    device: str = "auto"
    gradient_checkpointing: bool = False
    models_dir: str | None = None

    def __post_init__(self) -> None:
        if self.recipe is not None and self.recipe in RECIPE_SETTINGS:
            _apply_recipe_to_defaults(self)
        self.validate()

    @property
    def k(self) -> int:
        """Examples trained on per full selection group."""
        return selected_count(self.budget, self.candidate_batch_size)

    def validate(self) -> None:
        if self.method not in METHODS:
            raise ConfigError("method", f"must be one of {', '.join(METHODS)}, got {self.method!r}")
        if isinstance(self.budget, bool) or not isinstance(self.budget, (int, float)) or not (0 < self.budget <= 1):
            raise ConfigError("budget", f"must be a fraction in (0, 1], got {self.budget!r}")
        if self.method == "full" and self.budget != 1:
            # `full` means no selection; silently training on a fraction would mislabel the baseline.
            self.budget = 1.0
        if self.recipe is not None and self.recipe not in RECIPES:
            raise ConfigError("recipe", f"must be one of {', '.join(RECIPES)} or null, got {self.recipe!r}")
        if isinstance(self.alpha, str):
            if self.alpha not in ALPHA_MODES:
                raise ConfigError("alpha", f'must be a non-negative number, "paper" or "auto", got {self.alpha!r}')
        elif isinstance(self.alpha, bool) or not isinstance(self.alpha, (int, float)) or not math.isfinite(self.alpha) or self.alpha < 0:
            raise ConfigError("alpha", f'must be a non-negative number, "paper" or "auto", got {self.alpha!r}')
        _positive_int(self, "candidate_batch_size", maximum=4096)
        _positive_int(self, "train_batch_size", maximum=1_000_000)
        if self.groups_per_step is not None:
            _positive_int(self, "groups_per_step", maximum=1_000_000)
        if not isinstance(self.group_by_length, bool):
            raise ConfigError("group_by_length", f"must be true or false, got {self.group_by_length!r}")
        _positive_int(self, "buffer_size", maximum=1_000_000)
        _positive_int(self, "proj_r_voc", maximum=4096)
        _positive_int(self, "proj_r_seq", maximum=512)
        _positive_int(self, "alpha_window", maximum=100_000)
        _positive_int(self, "epochs", maximum=1000)
        _positive_int(self, "micro_batch_size", maximum=4096)
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
        if self.lr_schedule not in SCHEDULES:
            raise ConfigError("lr_schedule", f"must be one of {', '.join(SCHEDULES)}, got {self.lr_schedule!r}")
        if self.loss_on not in LOSS_ON:
            raise ConfigError("loss_on", f"must be one of {', '.join(LOSS_ON)}, got {self.loss_on!r}")
        if self.loss_weighting not in LOSS_WEIGHTINGS:
            raise ConfigError("loss_weighting", f"must be one of {', '.join(LOSS_WEIGHTINGS)}, got {self.loss_weighting!r}")
        if self.lora_init not in LORA_INITS:
            raise ConfigError("lora_init", f"must be one of {', '.join(LORA_INITS)}, got {self.lora_init!r}")
        if self.score_on not in SCORE_ON:
            raise ConfigError("score_on", f"must be one of {', '.join(SCORE_ON)}, got {self.score_on!r}")
        if self.device not in ("auto", "cpu", "cuda") and not str(self.device).startswith("cuda:"):
            raise ConfigError("device", f'must be "auto", "cpu", "cuda" or "cuda:N", got {self.device!r}')
        if not isinstance(self.lora_targets, (list, tuple)) or not self.lora_targets or not all(
            isinstance(t, str) and t for t in self.lora_targets
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
    for name, value in RECIPE_SETTINGS[config.recipe].items():
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
