"""The base model of the quality benchmark: a small Qwen2-style model pretrained here on general offline text.

The paper fine-tunes pretrained models; selection by nuclear norm of the logits means little on random weights.
So the base is built like `uds-tiny` (same byte-level tokenizer and ChatML template, `uds/tiny.py`), a bit deeper,
and pretrained with plain next-token loss on `dataset.pretraining_text()`: docstrings of the standard-library
modules and Debian package descriptions (/var/lib/dpkg/status), about 0.9 MB of English technical text.

Deterministic from the seed (CPU, float32, fixed number of steps), and cached: the folder is written once under
`<data dir>/base-<shape>-s<seed>-n<steps>/` and reused. A `pretrain.json` there records the loss curve and time.

    .venv/bin/python -m benchmarks.quality.pretrain --steps 600
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import time
from functools import partial
from pathlib import Path

import torch
from tqdm import tqdm

from benchmarks.quality.dataset import pretraining_text
from uds.device import autocast
from uds.tiny import build_model as build_tiny_shaped_model
from uds.tiny import build_tokenizer

DEFAULT_DATA_DIR = Path(os.environ.get("UDS_BENCH_DIR", Path.home() / ".cache" / "uds" / "bench-quality"))

BASE_SHAPE = dict(
    hidden_size=128,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    intermediate_size=384,
    max_position_embeddings=512,
)


def build_model(tokenizer, seed: int, shape: dict | None = None):
    return build_tiny_shaped_model(tokenizer, seed, shape or BASE_SHAPE)


def pretrain(
    out_dir: Path,
    steps: int = 600,
    seed: int = 0,
    seq_len: int = 128,
    batch: int = 16,
    lr: float = 3e-3,
    shape: dict | None = None,
    log=partial(print, flush=True),
    text_chars: int | None = None,
) -> Path:

    out_dir = Path(out_dir)
    if (out_dir / "config.json").exists() and (out_dir / "pretrain.json").exists():
        return out_dir
    tokenizer = build_tokenizer()
    text = pretraining_text(seed)[:text_chars]
    ids = torch.tensor(tokenizer(text)["input_ids"], dtype=torch.long)
    # 5% of the stream, held out, for the validation loss reported in pretrain.json.
    split = int(0.95 * len(ids))
    train_ids, val_ids = ids[:split], ids[split:]
    model = build_model(tokenizer, seed, shape)
    windows = val_ids[: (len(val_ids) // seq_len) * seq_len].view(-1, seq_len)[:64]
    started = time.perf_counter()
    curve, val_loss = train_loop(model, train_ids, windows, steps, seed, seq_len, batch, lr, log)
    staging = out_dir.parent / f".{out_dir.name}.tmp-{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    model.save_pretrained(staging)
    tokenizer.save_pretrained(staging)
    info = {
        "seed": seed,
        "steps": steps,
        "seq_len": seq_len,
        "batch": batch,
        "lr": lr,
        "shape": shape or BASE_SHAPE,
        "parameters": sum(p.numel() for p in model.parameters()),
        "corpus_tokens": len(ids),
        "tokens_seen": steps * batch * seq_len,
        "val_loss": val_loss,
        "seconds": time.perf_counter() - started,
        "curve": curve,
    }
    (staging / "pretrain.json").write_text(json.dumps(info, indent=1))
    shutil.rmtree(out_dir, ignore_errors=True)
    os.rename(staging, out_dir)
    return out_dir


def train_loop(
    model,
    train_ids,
    val_windows,
    steps: int,
    seed: int,
    seq_len: int,
    batch: int,
    lr: float,
    log,
    progress: bool = False,
    device: torch.device | None = None,
):
    """Plain next-token pretraining on random windows of `train_ids`: AdamW, warm-up then cosine to 10%, fixed steps.

    Deterministic from `seed` on CPU in float32 (the windows come from a seeded generator, nothing else draws).
    On CUDA the weights stay float32 and the steps run under bf16 autocast (uds.device), fast but not bit-exact.
    Returns (curve, held-out loss on `val_windows`, mean over positions)."""

    device = device or torch.device("cpu")
    model.to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.1, betas=(0.9, 0.95))
    warmup = max(1, steps // 20)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer,
        lambda s: (
            (s + 1) / warmup
            if s < warmup
            else 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * (s - warmup) / max(1, steps - warmup)))
        ),
    )
    generator = torch.Generator().manual_seed(seed)
    curve, started = [], time.perf_counter()
    bar = None
    if progress:
        bar = tqdm(total=steps, desc="pretrain", unit="step", dynamic_ncols=True)
    model.train()
    for step in range(1, steps + 1):
        starts = torch.randint(0, len(train_ids) - seq_len - 1, (batch,), generator=generator)
        x = torch.stack([train_ids[s : s + seq_len] for s in starts.tolist()]).to(device)
        with autocast(device):
            loss = model(input_ids=x, labels=x).loss  # transformers shifts the labels itself
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        schedule.step()
        if bar is not None:
            bar.update(1)
            bar.set_postfix(loss=f"{loss.item():.3f}", refresh=False)
        if step % 50 == 0 or step == steps:
            curve.append({"step": step, "loss": loss.item(), "seconds": time.perf_counter() - started})
            if bar is None:
                log(f"pretrain step {step}/{steps} loss {loss.item():.3f} ({time.perf_counter() - started:.0f} s)")
    if bar is not None:
        bar.close()
    loss = heldout_loss(model, val_windows, device=device)
    model.to("cpu")
    return curve, loss


def heldout_loss(model, windows, batch: int = 16, device: torch.device | None = None) -> float:
    """Mean next-token loss (nats/token) over every predicted position of `windows` (n x L), in batches."""

    device = device or torch.device("cpu")
    model.eval()
    total, count = 0.0, 0
    with torch.no_grad(), autocast(device):
        for start in range(0, len(windows), batch):
            x = windows[start : start + batch].to(device)
            n = x.shape[0] * (x.shape[1] - 1)
            total += float(model(input_ids=x, labels=x).loss) * n
            count += n
    return total / max(1, count)


QUICK_SHAPE = dict(
    hidden_size=64,
    num_hidden_layers=1,
    num_attention_heads=2,
    num_key_value_heads=1,
    intermediate_size=128,
    max_position_embeddings=512,
)


def base_model_dir(data_dir: Path, steps: int, seed: int, shape: dict | None = None) -> Path:
    shape = shape or BASE_SHAPE
    tag = f"d{shape['hidden_size']}-l{shape['num_hidden_layers']}-f{shape['intermediate_size']}"
    return Path(data_dir) / f"base-{tag}-s{seed}-n{steps}"


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data-dir", default=str(DEFAULT_DATA_DIR))
    parser.add_argument("--steps", type=int, default=600)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
    path = pretrain(base_model_dir(Path(args.data_dir), args.steps, args.seed), args.steps, args.seed)
    print(path, json.loads((path / "pretrain.json").read_text())["val_loss"])
