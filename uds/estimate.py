"""What a job will cost before it starts: its counts, its peak memory per device, and its time.

Torch-free (the API imports it; `uds train --dry-run` uses the same functions), so every figure is arithmetic on
the configuration, the dataset's per-row token counts and the model's config.json.

Counts (exact, from uds.config's step arithmetic): an epoch cuts the n rows into ceil(n / B) selection groups (the
last may be partial), `groups_per_step` of them a step; a group of s candidates trains on
k = max(1, round(budget * s)). `max_steps` may end inside an epoch: that epoch's first steps are counted with the
partial group last, which is exact unless length grouping shuffled the partial group into the steps run (off by at
most B - 1 candidates). Tokens trained are the trained rows' token counts (truncated at max_seq_len): exact when
every candidate of the steps run is trained (method full, or budget 1) over whole epochs, otherwise the trained
examples times the dataset's mean row length (selection decides which rows; `tokens_exact` says which).

Time: seconds = candidates / scoring_rate + tokens / training_rate, each rate the median over this deployment's
succeeded jobs of the same model, method and device kind (candidates scored per second of scoring time, tokens
trained per second of training time). Model loading, evaluation and saving are not in it.

Memory (bytes, an estimate of the largest allocations, not a measurement):
- weights: parameters x 4 bytes on the CPU (float32), x 2 on CUDA (bfloat16);
- LoRA: r x (in + out) float32 values per adapted matrix, times 4 (the values, their gradients, AdamW's two moments);
- selector: UDS's memory buffer, buffer_size x (proj_r_seq * proj_r_voc + 1) float64, and its projection matrices,
  (vocab x proj_r_voc + proj_r_seq x max_seq_len) float32; nothing for the other methods;
- training activations: micro_batch_size x max_seq_len tokens, each keeping per layer (10 h + 4 kv + 4 i + heads x
  max_seq_len) values at the compute precision (h hidden size, kv key/value width, i MLP width; the last term is
  the attention weights), plus float32 logits and their gradient (2 x vocab); gradient checkpointing keeps one
  hidden state per layer and one layer's worth;
- scoring activations: one no-grad chunk of whole groups (at least max(8, 2 x micro_batch_size) rows), one layer
  alive at a time: (3 h + 2 kv + 3 i + heads x max_seq_len) values per token.
Peak = weights + LoRA + selector + the larger of the two activation figures.
"""

from __future__ import annotations

import json
import math
import statistics
import unicodedata
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from uds.config import TrainConfig, group_count, groups_per_step, selected_count, steps_per_epoch, total_steps
from uds.tiny import CHAT_TEMPLATE, EOS_TOKEN, MODEL_SHAPE, SPECIAL_TOKENS

DEVICES = ("cpu", "cuda")
WEIGHT_BYTES = {"cpu": 4, "cuda": 2}  # uds.device: float32 on the CPU, bfloat16 on CUDA
ACTIVATION_BYTES = WEIGHT_BYTES  # CUDA trains under bf16 autocast; the CPU stays float32
FLOAT32, FLOAT64 = 4, 8
LORA_STATE_COPIES = 4  # the LoRA values, their gradients, AdamW's exp_avg and exp_avg_sq (float32 each)
# Subword tokenizers average about this many UTF-8 bytes of English text per token: the fallback count when the
# tokenizer is not byte-level (its exact count needs the tokenizers package, which the API must not import).
BYTES_PER_SUBWORD_TOKEN = 4.0
NO_MEASUREMENT = "no measurement yet"


# ---- counts ------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Counts:
    steps: int
    groups_per_step: int
    candidates_scored: int
    examples_trained: int
    tokens_trained: int
    tokens_exact: bool


def epoch_group_sizes(n_examples: int, candidate_batch_size: int) -> list[int]:
    """Sizes of one epoch's selection groups, the partial one last."""
    n_groups = group_count(n_examples, candidate_batch_size)
    return [candidate_batch_size] * (n_groups - 1) + [n_examples - candidate_batch_size * (n_groups - 1)]


def job_counts(config: TrainConfig, lengths: Sequence[int]) -> Counts:
    """Steps, candidates, trained examples and tokens of a run of `config` on rows of these token counts (each
    already cut to max_seq_len). See the module docstring for when tokens are exact."""
    n = len(lengths)
    steps = total_steps(config, n)
    per_step = groups_per_step(config, n)
    per_epoch = steps_per_epoch(config, n)
    sizes = epoch_group_sizes(n, config.candidate_batch_size)
    full_epochs, rest_steps = divmod(steps, per_epoch)
    rest = sizes[: rest_steps * per_step]
    candidates = full_epochs * n + sum(rest)
    trained = full_epochs * sum(selected_count(config.budget, s) for s in sizes)
    trained += sum(selected_count(config.budget, s) for s in rest)
    all_trained = trained == candidates
    if all_trained and not rest:
        tokens, exact = full_epochs * sum(lengths), True
    else:
        tokens, exact = round(trained * sum(lengths) / n), False
    return Counts(steps, per_step, candidates, trained, tokens, exact)


# ---- token counts without the tokenizers package -----------------------------------------------------------------


@dataclass(frozen=True)
class TokenCounter:
    """Counts a row's tokens from its rendered text: each special token is one, the rest UTF-8 bytes divided by
    `bytes_per_token` (1 for a byte-level tokenizer without merges, such as uds-tiny's: then the count is exact)."""

    chat_template: str | None
    special_tokens: tuple[str, ...]
    bos_token: str | None
    eos_token: str | None
    bytes_per_token: float

    @property
    def exact(self) -> bool:
        return self.bytes_per_token == 1.0

    @classmethod
    def from_folder(cls, folder: str | Path) -> "TokenCounter":
        folder = Path(folder)
        settings = _read_json(folder / "tokenizer_config.json")
        tokenizer = _read_json(folder / "tokenizer.json")
        template = settings.get("chat_template")
        if not isinstance(template, str) and (folder / "chat_template.jinja").is_file():
            template = (folder / "chat_template.jinja").read_text(encoding="utf-8")
        model = tokenizer.get("model") or {}
        byte_level = model.get("type") == "BPE" and not model.get("merges")
        special = tuple(t["content"] for t in tokenizer.get("added_tokens") or () if t.get("special", True))
        return cls(
            template if isinstance(template, str) else None,
            special,
            _token_text(settings.get("bos_token")),
            _token_text(settings.get("eos_token")),
            1.0 if byte_level else BYTES_PER_SUBWORD_TOKEN,
        )

    def count(self, messages: Sequence[dict]) -> int:
        text = self.render(messages)
        tokens = 0
        for piece in _split_on(text, self.special_tokens):
            if piece in self.special_tokens:
                tokens += 1
            else:
                tokens += math.ceil(len(unicodedata.normalize("NFC", piece).encode("utf-8")) / self.bytes_per_token)
        if self.eos_token and not text.endswith(self.eos_token):
            tokens += 1  # uds.data appends EOS
        return tokens

    def render(self, messages: Sequence[dict]) -> str:
        plain = [{"role": m["role"], "content": m["content"]} for m in messages]
        if self.chat_template:
            try:
                return _jinja_template(self.chat_template).render(
                    messages=plain,
                    add_generation_prompt=False,
                    bos_token=self.bos_token or "",
                    eos_token=self.eos_token or "",
                )
            except Exception:  # noqa: BLE001 - a template this renderer cannot run: the plain layout's count
                pass
        return _render_plain(plain, self.bos_token)


def _render_plain(messages: Sequence[dict], bos_token: str | None) -> str:
    # uds.data.render_plain's layout
    headers = {"system": "### System:\n", "user": "### User:\n", "assistant": "### Assistant:\n"}
    return (bos_token or "") + "\n\n".join(headers[m["role"]] + m["content"] for m in messages)


def _jinja_template(source: str):
    from jinja2.ext import loopcontrols
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    def raise_exception(message):
        raise ValueError(message)

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=[loopcontrols])
    env.globals["raise_exception"] = raise_exception
    return env.from_string(source)


def _split_on(text: str, specials: Sequence[str]) -> list[str]:
    pieces = [text]
    for special in sorted(specials, key=len, reverse=True):
        split: list[str] = []
        for piece in pieces:
            if piece in specials:
                split.append(piece)
                continue
            parts = piece.split(special)
            for i, part in enumerate(parts):
                if i:
                    split.append(special)
                if part:
                    split.append(part)
        pieces = split
    return pieces


def _token_text(value: Any) -> str | None:
    if isinstance(value, dict):
        value = value.get("content")
    return value if isinstance(value, str) else None


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def row_lengths(counter: TokenCounter, examples: Iterable[Any], max_seq_len: int) -> list[int]:
    """Each row's token count, cut at max_seq_len as uds.data cuts it."""
    return [min(max_seq_len, counter.count(example.messages)) for example in examples]


# ---- memory ------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ModelShape:
    """What the memory figures need of a Llama-family config.json."""

    parameters: int
    vocab_size: int
    hidden_size: int
    layers: int
    intermediate_size: int
    heads: int
    kv_heads: int
    head_dim: int

    @classmethod
    def from_config(cls, config: dict[str, Any], parameters: int | None = None) -> "ModelShape":
        """KeyError when a size is missing (a config this arithmetic does not know)."""
        hidden, layers, vocab = int(config["hidden_size"]), int(config["num_hidden_layers"]), int(config["vocab_size"])
        heads = int(config["num_attention_heads"])
        kv_heads = int(config.get("num_key_value_heads") or heads)
        head_dim = int(config.get("head_dim") or hidden // heads)
        inter = int(config.get("intermediate_size") or 4 * hidden)
        if parameters is None:
            per_layer = sum(i * o for i, o in _linear_shapes(hidden, inter, heads, kv_heads, head_dim).values())
            # q, k and v have biases in Qwen2 (always) and where a Llama-style config says `attention_bias`.
            if config.get("attention_bias", config.get("model_type") == "qwen2"):
                per_layer += (heads + 2 * kv_heads) * head_dim
            embeddings = vocab * hidden * (1 if config.get("tie_word_embeddings", False) else 2)
            parameters = embeddings + layers * (per_layer + 2 * hidden) + hidden
        return cls(parameters, vocab, hidden, layers, inter, heads, kv_heads, head_dim)

    @classmethod
    def from_folder(cls, folder: str | Path, parameters: int | None = None) -> "ModelShape":
        return cls.from_config(_read_json(Path(folder) / "config.json"), parameters)

    def linear_shapes(self) -> dict[str, tuple[int, int]]:
        return _linear_shapes(self.hidden_size, self.intermediate_size, self.heads, self.kv_heads, self.head_dim)


def _linear_shapes(hidden: int, inter: int, heads: int, kv_heads: int, head_dim: int) -> dict[str, tuple[int, int]]:
    """(in, out) of each projection of one decoder layer."""
    return {
        "q_proj": (hidden, heads * head_dim),
        "k_proj": (hidden, kv_heads * head_dim),
        "v_proj": (hidden, kv_heads * head_dim),
        "o_proj": (heads * head_dim, hidden),
        "gate_proj": (hidden, inter),
        "up_proj": (hidden, inter),
        "down_proj": (inter, hidden),
    }


def lora_parameters(shape: ModelShape, config: TrainConfig) -> int:
    linears = shape.linear_shapes()
    return shape.layers * sum(config.lora_r * sum(linears[t]) for t in config.lora_targets if t in linears)


def selector_bytes(config: TrainConfig, vocab_size: int) -> int:
    if config.method != "uds":
        return 0
    buffer = config.buffer_size * (config.proj_r_seq * config.proj_r_voc + 1) * FLOAT64
    projections = (vocab_size * config.proj_r_voc + config.proj_r_seq * config.max_seq_len) * FLOAT32
    return buffer + projections


def scoring_chunk_rows(config: TrainConfig, candidates_per_step: int) -> int:
    """The most rows one scoring forward holds: whole groups are added until a chunk reaches max(8, 2 x micro)."""
    wanted = max(8, 2 * config.micro_batch_size)
    return min(candidates_per_step, wanted - 1 + config.candidate_batch_size)


def memory_breakdown(shape: ModelShape, config: TrainConfig, candidates_per_step: int, device: str) -> dict[str, int]:
    """Bytes per part and the peak, on `device` ("cpu" or "cuda")."""
    act = ACTIVATION_BYTES[device]
    s, h, i = config.max_seq_len, shape.hidden_size, shape.intermediate_size
    kv = shape.kv_heads * shape.head_dim
    attention = shape.heads * s
    if config.gradient_checkpointing:
        per_token = (shape.layers * h + 10 * h + 4 * kv + 4 * i + attention) * act
    else:
        per_token = shape.layers * (10 * h + 4 * kv + 4 * i + attention) * act
    per_token += 2 * shape.vocab_size * FLOAT32
    parts = {
        "weights": shape.parameters * WEIGHT_BYTES[device],
        "lora": lora_parameters(shape, config) * FLOAT32 * LORA_STATE_COPIES,
        "selector": selector_bytes(config, shape.vocab_size),
        "training_activations": config.micro_batch_size * s * per_token,
        "scoring_activations": scoring_chunk_rows(config, candidates_per_step)
        * s
        * (3 * h + 2 * kv + 3 * i + attention)
        * act,
    }
    fixed = parts["weights"] + parts["lora"] + parts["selector"]
    return {**parts, "peak": fixed + max(parts["training_activations"], parts["scoring_activations"])}


# ---- uds-tiny before it is built ---------------------------------------------------------------------------------
# A worker builds uds-tiny's folder the first time a job uses it; until then its facts are the constants it is
# built from (tests check them against the built folder).


def tiny_counter() -> TokenCounter:
    return TokenCounter(CHAT_TEMPLATE, SPECIAL_TOKENS, None, EOS_TOKEN, 1.0)


def tiny_shape() -> ModelShape:
    vocab = 256 + len(SPECIAL_TOKENS)  # one token a byte, then the special tokens
    return ModelShape.from_config({**MODEL_SHAPE, "vocab_size": vocab, "model_type": "qwen2"})


# ---- time --------------------------------------------------------------------------------------------------------


def measured_rates(
    examples_scored: int, time_scoring: float | None, tokens_trained: int, time_training: float | None
) -> tuple[float | None, float | None]:
    """(candidates scored per second of scoring, tokens trained per second of training) of one finished job."""

    def rate(amount: int, seconds: float | None) -> float | None:
        return amount / seconds if amount and seconds and seconds > 0 else None

    return rate(examples_scored, time_scoring), rate(tokens_trained, time_training)


@dataclass(frozen=True)
class TimeEstimate:
    seconds: float | None
    scoring_seconds: float | None
    training_seconds: float | None
    scoring_rate: float | None
    training_rate: float | None
    based_on: int
    reason: str | None


def estimate_time(candidates: int, tokens: int, rates: Sequence[tuple[float, float]]) -> TimeEstimate:
    """candidates / median scoring rate + tokens / median training rate over `rates` (one pair per job)."""
    if not rates:
        return TimeEstimate(None, None, None, None, None, 0, NO_MEASUREMENT)
    scoring_rate = statistics.median(r[0] for r in rates)
    training_rate = statistics.median(r[1] for r in rates)
    scoring, training = candidates / scoring_rate, tokens / training_rate
    return TimeEstimate(
        round(scoring + training, 1),
        round(scoring, 1),
        round(training, 1),
        scoring_rate,
        training_rate,
        len(rates),
        None,
    )


# ---- the whole estimate ------------------------------------------------------------------------------------------


def estimate(
    config: TrainConfig,
    lengths: Sequence[int],
    shape: ModelShape | None,
    rates: Sequence[tuple[float, float]],
    tokens_counted_exactly: bool = True,
) -> dict[str, Any]:
    """The estimate as the API returns it and `uds train --dry-run` prints it."""
    counts = job_counts(config, lengths)
    candidates_per_step = config.candidate_batch_size * counts.groups_per_step
    time = estimate_time(counts.candidates_scored, counts.tokens_trained, rates)
    return {
        "steps": counts.steps,
        "groups_per_step": counts.groups_per_step,
        "candidates_scored": counts.candidates_scored,
        "examples_trained": counts.examples_trained,
        "tokens_trained": counts.tokens_trained,
        "tokens_exact": counts.tokens_exact and tokens_counted_exactly,
        "dataset_rows": len(lengths),
        "dataset_tokens": sum(lengths),
        "memory": None
        if shape is None
        else {device: memory_breakdown(shape, config, candidates_per_step, device) for device in DEVICES},
        "time": asdict(time),
    }


def format_estimate(result: dict[str, Any]) -> str:
    """A few lines for people (the CLI's --dry-run)."""
    lines = [
        f"Steps: {result['steps']} ({result['groups_per_step']} selection group{'' if result['groups_per_step'] == 1 else 's'} each)",
        f"Candidates scored: {result['candidates_scored']:,}",
        f"Examples trained: {result['examples_trained']:,}",
        f"Tokens trained: {result['tokens_trained']:,}" + ("" if result["tokens_exact"] else " (estimated)"),
    ]
    for device, parts in (result["memory"] or {}).items():
        shown = ", ".join(f"{name} {_mib(value)}" for name, value in parts.items() if name != "peak")
        lines.append(f"Peak memory on {device}: {_mib(parts['peak'])} ({shown})")
    time = result["time"]
    if time["seconds"] is None:
        lines.append(f"Time: unknown ({time['reason']})")
    else:
        lines.append(
            f"Time: about {time['seconds']:.0f} s (scoring {time['scoring_seconds']:.0f} s + training "
            f"{time['training_seconds']:.0f} s; measured on {time['based_on']} finished job(s))"
        )
    return "\n".join(lines)


def _mib(value: int) -> str:
    return f"{value / 2**20:,.1f} MiB"


def kind_on_devices(kind: str, devices: int) -> str:
    """A device kind ("cpu", "cuda <GPU name>") for a job on `devices` of them: " x N" appended when N > 1."""
    return kind if devices == 1 else f"{kind} x {devices}"


def kind_devices(kind: str | None) -> int:
    """The device count a kind names (`kind_on_devices`; 1 without the suffix)."""
    if kind and " x " in kind:
        count = kind.rsplit(" x ", 1)[1]
        if count.isdigit():
            return int(count)
    return 1
