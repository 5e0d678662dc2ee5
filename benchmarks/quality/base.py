"""A realistic base for the quality benchmark: a byte-level BPE tokenizer trained here and a Qwen2-style model
pretrained here, both on the offline corpus of `corpus.py` (stdlib sources, man pages, /usr/share/doc, licences,
dpkg descriptions).

Why: the 0.46 M-parameter byte-level base of `pretrain.py` makes scoring cost about a training forward pass and
its logits carry little; UDS's utility (the nuclear norm of the logits) needs a model with a prior and a real
vocabulary. This builds one in CPU minutes.

Deterministic from the seed: the corpus is read in sorted order and shuffled with the seed, the BPE trainer is
deterministic, the model is initialised from the seed and trained on CPU in float32 for a fixed number of steps
(`train_loop` in `pretrain.py`), so the same flags rebuild the same files bit for bit
(tests/benchmarks/test_base_model.py checks it on a tiny shape). Cached under `$UDS_BENCH_DIR` or
`~/.cache/uds/bench-quality`, in a folder named after every flag; `pretrain.json` there records the held-out loss
next to a unigram baseline (same tokenizer, same held-out windows), the loss curve and the build time.

    nice -n 10 .venv/bin/python -m benchmarks.quality.base                     # the default base (see README)
    .venv/bin/python -m benchmarks.quality.base --hidden 256 --layers 4 --heads 4 --kv-heads 2 --ffn 768 --steps 400
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import time
from collections import Counter
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path

import torch
from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

from benchmarks.quality import corpus
from benchmarks.quality.pretrain import DEFAULT_DATA_DIR, build_model, train_loop
from uds.device import resolve_device
from uds.tiny import CHAT_TEMPLATE, EOS_TOKEN, PAD_TOKEN, QWEN2_SPLIT_REGEX, SPECIAL_TOKENS


@dataclass(frozen=True)
class BaseSpec:
    """Everything that determines the base model; the cache folder is named after it."""

    vocab: int = 8192
    hidden: int = 320
    layers: int = 6
    heads: int = 5
    kv_heads: int = 1
    ffn: int = 960
    steps: int = 800
    batch: int = 8
    seq_len: int = 256
    lr: float = 3e-3
    seed: int = 0
    corpus_scale: float = 1.0  # x the per-source caps of corpus.SOURCE_CAPS (about 10 M characters at 1.0)

    def shape(self) -> dict:
        return dict(
            hidden_size=self.hidden,
            num_hidden_layers=self.layers,
            num_attention_heads=self.heads,
            num_key_value_heads=self.kv_heads,
            intermediate_size=self.ffn,
            max_position_embeddings=1024,
        )

    def folder_name(self) -> str:
        return (
            f"bpe{self.vocab}-d{self.hidden}-l{self.layers}-h{self.heads}-kv{self.kv_heads}-f{self.ffn}"
            f"-n{self.steps}-b{self.batch}x{self.seq_len}-lr{self.lr:g}-c{self.corpus_scale:g}-s{self.seed}"
        )


# ---------------------------------------------------------------------------------------------------- tokenizer


def train_tokenizer(texts, vocab_size: int):
    """A byte-level BPE `PreTrainedTokenizerFast` of `vocab_size` entries (special tokens included) trained on
    `texts`, with the uds-tiny special tokens and ChatML template.

    The pipeline (NFC, Qwen2's split regex, ByteLevel without its own regex) is the one transformers rebuilds for a
    `qwen2` folder, so the tokenizer `AutoTokenizer` loads from the saved folder encodes exactly like this one."""

    backend = Tokenizer(models.BPE(unk_token=None, fuse_unk=False, byte_fallback=False))
    backend.normalizer = normalizers.NFC()
    backend.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(QWEN2_SPLIT_REGEX), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=2,
        show_progress=False,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),  # every byte stays encodable
    )
    backend.train_from_iterator(texts, trainer=trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=backend,
        eos_token=EOS_TOKEN,
        pad_token=PAD_TOKEN,
        chat_template=CHAT_TEMPLATE,
        model_max_length=1024,
        padding_side="right",
    )


def encode_documents(tokenizer, docs) -> list[int]:
    """One token stream: the documents in order, each followed by the end-of-text token."""
    ids: list[int] = []
    eos = tokenizer.eos_token_id
    for start in range(0, len(docs), 64):
        for row in tokenizer([d.text for d in docs[start : start + 64]], add_special_tokens=False)["input_ids"]:
            ids += row + [eos]
    return ids


# ---------------------------------------------------------------------------------------------------- baseline


def unigram_loss(train_ids, target_ids, vocab_size: int) -> float:
    """Held-out loss (nats/token) of the add-one-smoothed unigram model fitted on `train_ids`: the floor a model
    with no context reaches, so the base model's loss means something next to it."""
    counts = Counter(train_ids)
    total = len(train_ids) + vocab_size
    return -sum(math.log((counts.get(t, 0) + 1) / total) for t in target_ids) / max(1, len(target_ids))


# ---------------------------------------------------------------------------------------------------- build


def base_dir(spec: BaseSpec, data_dir: Path | None = None) -> Path:
    return Path(data_dir or DEFAULT_DATA_DIR) / spec.folder_name()


def build(
    spec: BaseSpec,
    data_dir: Path | None = None,
    log=partial(print, flush=True),
    progress: bool = True,
    device: str = "cpu",
) -> Path:
    """Build (or find in the cache) the base model of `spec`; returns its folder (model + tokenizer + pretrain.json).

    `device` "cpu" (the default) rebuilds bit for bit; "cuda" pretrains under bf16 autocast, for the 100-300 M
    shapes a GPU makes affordable, in a folder of its own (its bits differ from a CPU build's)."""

    torch_device = resolve_device(device)
    out_dir = base_dir(spec, data_dir)
    if torch_device.type != "cpu":
        out_dir = out_dir.with_name(out_dir.name + f"-{torch_device.type}")
    if (out_dir / "config.json").exists() and (out_dir / "pretrain.json").exists():
        return out_dir
    started = time.perf_counter()
    train_docs, heldout_docs = corpus.split(corpus.documents(spec.seed, spec.corpus_scale))
    if len(heldout_docs) < 2:
        # A tiny corpus (tests) may have no document in the held-out bucket: hold out its last 5% instead.
        cut = max(2, len(train_docs) // 20)
        train_docs, heldout_docs = train_docs[:-cut], train_docs[-cut:]
    log(
        f"corpus: {len(train_docs)} training documents ({sum(len(d.text) for d in train_docs) / 1e6:.1f} M chars), "
        f"{len(heldout_docs)} held out ({sum(len(d.text) for d in heldout_docs) / 1e6:.2f} M chars)"
    )
    tokenizer = train_tokenizer((d.text for d in train_docs), spec.vocab)
    tokenizer_seconds = time.perf_counter() - started
    train_ids = encode_documents(tokenizer, train_docs)
    heldout_ids = encode_documents(tokenizer, heldout_docs)
    log(
        f"tokenizer: {len(tokenizer)} entries in {tokenizer_seconds:.0f} s; {len(train_ids) / 1e6:.2f} M training tokens, "
        f"{len(heldout_ids) / 1e3:.0f} k held out"
    )

    n_windows = min(64, len(heldout_ids) // spec.seq_len)
    windows = torch.tensor(heldout_ids[: n_windows * spec.seq_len], dtype=torch.long).view(n_windows, spec.seq_len)
    model = build_model(tokenizer, spec.seed, spec.shape())
    parameters = sum(p.numel() for p in model.parameters())
    log(
        f"model: {parameters / 1e6:.1f} M parameters ({spec.shape()}); {spec.steps} steps of {spec.batch} x {spec.seq_len} tokens"
    )
    train_started = time.perf_counter()
    curve, val_loss = train_loop(
        model,
        torch.tensor(train_ids, dtype=torch.long),
        windows,
        spec.steps,
        spec.seed,
        spec.seq_len,
        spec.batch,
        spec.lr,
        log,
        progress=progress,
        device=torch_device,
    )
    train_seconds = time.perf_counter() - train_started
    # The unigram model predicts the same positions the model's loss covers: every window token but the first.
    targets = windows[:, 1:].reshape(-1).tolist()
    unigram = unigram_loss(train_ids, targets, len(tokenizer))
    heldout_bytes = sum(len(tokenizer.decode(row)) for row in windows[:, 1:].tolist())
    info = {
        "spec": asdict(spec),
        "shape": spec.shape(),
        "parameters": parameters,
        "vocab_size": len(tokenizer),
        "corpus_train_chars": sum(len(d.text) for d in train_docs),
        "corpus_heldout_chars": sum(len(d.text) for d in heldout_docs),
        "train_tokens": len(train_ids),
        "heldout_tokens_scored": len(targets),
        "tokens_seen": spec.steps * spec.batch * spec.seq_len,
        "epochs_over_corpus": spec.steps * spec.batch * spec.seq_len / len(train_ids),
        "val_loss": val_loss,
        "unigram_loss": unigram,
        # nats per character of the held-out text: comparable across tokenizers (the byte-level base reports per byte).
        "val_nats_per_char": val_loss * len(targets) / heldout_bytes,
        "unigram_nats_per_char": unigram * len(targets) / heldout_bytes,
        "tokenizer_seconds": tokenizer_seconds,
        "train_seconds": train_seconds,
        "seconds": time.perf_counter() - started,
        "torch_threads": torch.get_num_threads(),
        "device": torch.cuda.get_device_name(torch_device) if torch_device.type == "cuda" else "cpu",
        "curve": curve,
    }
    staging = out_dir.parent / f".{out_dir.name}.tmp-{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    model.save_pretrained(staging)
    tokenizer.save_pretrained(staging)
    (staging / "pretrain.json").write_text(json.dumps(info, indent=1))
    shutil.rmtree(out_dir, ignore_errors=True)
    os.rename(staging, out_dir)
    log(f"held-out loss {val_loss:.3f} nats/token (unigram {unigram:.3f}); {info['seconds'] / 60:.1f} min; {out_dir}")
    return out_dir


def add_spec_arguments(parser: argparse.ArgumentParser) -> None:
    """The BaseSpec fields as --flags (shared by this CLI and benchmarks.quality.compare)."""
    defaults = BaseSpec()
    for name, value in asdict(defaults).items():
        parser.add_argument(
            f"--{name.replace('_', '-')}", type=type(value), default=value, help=f"base model: {name} (default {value})"
        )


def add_device_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--device",
        default="cpu",
        help="cpu (default: float32, bit-for-bit), cuda or auto (bf16 autocast on a GPU, for larger --hidden/--layers)",
    )


def spec_from_args(args) -> BaseSpec:
    return BaseSpec(**{name: getattr(args, name) for name in asdict(BaseSpec())})


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_spec_arguments(parser)
    parser.add_argument(
        "--data-dir", default=None, help="cache folder (default $UDS_BENCH_DIR or ~/.cache/uds/bench-quality)"
    )
    parser.add_argument("--threads", type=int, default=2, help="torch threads")
    add_device_argument(parser)
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)

    torch.set_num_threads(args.threads)
    path = build(
        spec_from_args(args),
        Path(args.data_dir) if args.data_dir else None,
        progress=not args.no_progress,
        device=args.device,
    )
    info = json.loads((path / "pretrain.json").read_text())
    print(
        json.dumps(
            {
                k: info[k]
                for k in (
                    "parameters",
                    "vocab_size",
                    "val_loss",
                    "unigram_loss",
                    "val_nats_per_char",
                    "unigram_nats_per_char",
                    "seconds",
                )
            },
            indent=1,
        )
    )
    print(path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
