"""UDS scoring without logits vs the explicit-logits route of the paper's official code.

Both routes score the same random final hidden states (B x L x d) against the same random output head (V x d)
and a full memory buffer (1024 entries):

- ours:     UDSSelector.measure + select_groups (uds/selectors.py), groups of 8: nuclear norms from the per-job
            Gram factor of W, projection through the per-job W^T R_voc, per group the mean distance to the buffer,
            top-k and the push. No logits.
- explicit: logits = H W^T materialised as (B, L, V); u = torch.linalg.svdvals(logits).sum(-1); projection as in
            the official code (a Python loop over examples; per example: random signs, FFT over V, real part,
            128 of the V frequencies, then the same over positions, 8 of L_max); cdist to the buffer.

Each route runs in a fresh subprocess, so its peak memory is its own: on CPU the growth of the resident set
over the route (VmHWM reset through /proc/self/clear_refs after setup), on CUDA torch.cuda.max_memory_allocated
over the route. The per-job setup of our route (G = W^T W, its factor, W^T R_voc) is timed separately: it runs
once per job, not per step. The forward pass is the body of a random-weight Qwen2 model (no lm_head) on the
same B x L tokens.

    .venv/bin/python benchmarks/scoring.py                 # full: B=16, L=256, d=512, V in {32000, 151936}
    .venv/bin/python benchmarks/scoring.py --quick         # small shapes, a smoke test (writes no report)
    .venv/bin/python benchmarks/scoring.py --device cuda --dtype bfloat16
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import re
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

GOALS = {"speedup": 50.0, "memory_fraction": 0.1, "forward_fraction": 0.05}
BUFFER = 1024
R_SEQ, R_VOC = 8, 128


# ------------------------------------------------------------------------------------------------ workers


def _inputs(args, vocab: int, device: torch.device, dtype: torch.dtype):
    gen = torch.Generator().manual_seed(0)
    hidden = torch.randn(args.batch, args.length, args.hidden, generator=gen).to(device=device, dtype=dtype)
    weight = (torch.randn(vocab, args.hidden, generator=gen) * 0.02).to(device=device, dtype=dtype)
    mask = torch.ones(args.batch, args.length, dtype=torch.long, device=device)
    memory = torch.randn(BUFFER, R_SEQ * R_VOC, generator=gen).to(device)
    return hidden, mask, weight, memory


class _FFTProjector:
    """The official code's projection: per side, random signs, FFT, real part, a random subset of frequencies."""

    def __init__(self, max_len: int, vocab: int, device: torch.device, seed: int = 0):
        gen = torch.Generator().manual_seed(seed)
        self.sign_voc = (torch.randint(0, 2, (vocab,), generator=gen) * 2 - 1).float().to(device)
        self.idx_voc = torch.randint(0, vocab, (R_VOC,), generator=gen).to(device)
        self.sign_seq = (torch.randint(0, 2, (max_len,), generator=gen) * 2 - 1).float().to(device)
        self.idx_seq = torch.randint(0, max_len, (R_SEQ,), generator=gen).to(device)
        self.scale_voc = math.sqrt(vocab / R_VOC)
        self.scale_seq = math.sqrt(max_len / R_SEQ)

    def project(self, logits):  # one example, (L_max, V)
        x = torch.fft.fft(logits * self.sign_voc, dim=-1).real[:, self.idx_voc] * self.scale_voc
        x = torch.fft.fft(x * self.sign_seq[:, None], dim=0).real[self.idx_seq] * self.scale_seq
        return x.reshape(-1)


def _explicit_route(hidden, mask, weight, memory, projector):
    logits = (hidden @ weight.T).mul_(mask[..., None].to(hidden.dtype))
    logits = logits.float()  # svdvals has no bfloat16 kernel; the official code's logits are float too
    utility = torch.linalg.svdvals(logits).sum(-1)
    projected = torch.stack([projector.project(logits[i]) for i in range(logits.shape[0])])
    diversity = torch.cdist(projected, memory).mean(-1)
    return utility, diversity


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class _Peak:
    """Peak memory growth over a block: CUDA allocator statistics, or the process's resident-set high-water mark."""

    def __init__(self, device):
        self.device = device

    def __enter__(self):
        _sync(self.device)
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
            self.base = torch.cuda.memory_allocated(self.device)
        else:
            Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current resident set
            self.base = _proc_kib("VmRSS") * 1024
        return self

    def __exit__(self, *exc):
        _sync(self.device)
        if self.device.type == "cuda":
            self.peak = torch.cuda.max_memory_allocated(self.device) - self.base
        else:
            self.peak = _proc_kib("VmHWM") * 1024 - self.base


def _proc_kib(field: str) -> int:
    return int(re.search(rf"^{field}:\s+(\d+) kB", Path("/proc/self/status").read_text(), re.M).group(1))


def _timed(fn, device, repeats: int, warmup: int, clock=time.perf_counter):
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        _sync(device)
        start = clock()
        out = fn()
        _sync(device)
        times.append(clock() - start)
    return statistics.median(times), out


def _body(args, device, dtype):
    from transformers import Qwen2Config, Qwen2Model

    config = Qwen2Config(
        vocab_size=args.vocab_size,
        hidden_size=args.hidden,
        intermediate_size=args.intermediate,
        num_hidden_layers=args.layers,
        num_attention_heads=args.heads,
        num_key_value_heads=args.kv_heads,
        max_position_embeddings=max(args.length, 512),
    )
    model = Qwen2Model(config).to(device=device, dtype=dtype).eval()
    ids = torch.randint(0, args.vocab_size, (args.batch, args.length), device=device)
    attention = torch.ones_like(ids)
    return lambda: model(input_ids=ids, attention_mask=attention).last_hidden_state


def worker(args) -> dict:
    from uds.selectors import ScoringInputs, UDSSelector, select_groups

    device = torch.device(args.device)
    dtype = getattr(torch, args.dtype)
    if args.threads:
        torch.set_num_threads(args.threads)
    # CPU time of a single-threaded process counts the work done, whatever else shares the cores.
    clock = time.process_time if args.clock == "cpu" else time.perf_counter
    torch.manual_seed(0)
    result = {"route": args.worker, "vocab": args.vocab_size}
    hidden, mask, weight, memory = _inputs(args, args.vocab_size, device, dtype)
    with torch.no_grad():
        if args.worker == "ours":
            _sync(device)
            start = clock()
            selector = UDSSelector(
                SimpleNamespace(weight=weight, is_linear=True),
                args.length,
                r_voc=R_VOC,
                r_seq=R_SEQ,
                buffer_size=BUFFER,
                alpha="auto",
                seed=0,
                device=device,
            )
            _sync(device)
            result["setup_time"] = clock() - start
            selector.buffer.push(memory)
            inputs = ScoringInputs(hidden=hidden, attention_mask=mask, labels=None, head=None)
            sizes = [min(8, args.batch - start) for start in range(0, args.batch, 8)]  # selection groups of B=8

            def score():
                return select_groups(selector, selector.measure(inputs), sizes, 0.125).scores

            forward = _body(args, device, dtype)
            # Scoring and the forward pass alternate, so load from other processes hits both alike.
            times = {"ours": [], "forward": []}
            for step in range(args.repeats + 1):
                for name, fn in (("forward", forward), ("ours", score)):
                    elapsed, _ = _timed(fn, device, 1, 0, clock)
                    if step:  # the first round is a warm-up
                        times[name].append(elapsed)
            result["time"] = statistics.median(times["ours"])
            result["forward_time"] = statistics.median(times["forward"])
            with _Peak(device) as peak:
                scores = score()
        else:
            projector = _FFTProjector(args.length, args.vocab_size, device)
            with _Peak(device) as peak:
                result["time"], (utility, diversity) = _timed(
                    lambda: _explicit_route(hidden, mask, weight, memory, projector), device, args.repeats, 0, clock
                )
            scores = SimpleNamespace(utility=utility)
        result["peak_bytes"] = peak.peak
        result["utility"] = scores.utility.double().cpu().tolist()
    return result


def _run_worker(args, route: str, vocab: int, repeats: int) -> dict:
    with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as handle:
        out = handle.name
    # A fixed mmap threshold: every tensor of 64 KiB or more gets its own mapping and is unmapped when freed, so the
    # resident set follows live tensor memory (glibc's adaptive threshold would recycle freed heap instead).
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536"}
    command = [
        sys.executable,
        str(Path(__file__).resolve()),
        "--worker",
        route,
        "--vocab-size",
        str(vocab),
        "--result",
        out,
        "--repeats",
        str(repeats),
        *_shape_flags(args),
    ]
    try:
        subprocess.run(command, check=True, cwd=ROOT, env=env)
        return json.loads(Path(out).read_text())
    finally:
        os.unlink(out)


def _shape_flags(args) -> list[str]:
    flags = []
    for name in (
        "batch",
        "length",
        "hidden",
        "layers",
        "intermediate",
        "heads",
        "kv_heads",
        "device",
        "dtype",
        "threads",
        "clock",
    ):
        flags += [f"--{name.replace('_', '-')}", str(getattr(args, name))]
    return flags


# ------------------------------------------------------------------------------------------------- report


def _mib(n: float) -> str:
    return f"{n / 2**20:,.1f} MiB" if n < 2**30 else f"{n / 2**30:,.2f} GiB"


def _seconds(t: float) -> str:
    return f"{t * 1000:,.1f} ms" if t < 1 else f"{t:,.2f} s"


def _device_name(device: str, threads: int) -> str:
    if device.startswith("cuda"):
        return torch.cuda.get_device_name(torch.device(device))
    cpu = re.search(r"model name\s*:\s*(.*)", Path("/proc/cpuinfo").read_text())
    return f"{cpu.group(1) if cpu else platform.processor()}, {threads or torch.get_num_threads()} threads"


def report(args, rows: list[dict], command: str, load: tuple[float, float]) -> str:
    lines = [
        "# UDS scoring: no-logits route vs explicit logits",
        "",
        f"Command: `{command}`",
        "",
        f"Device: {args.device} ({_device_name(args.device, args.threads)}), dtype {args.dtype}, torch {torch.__version__}. "
        f"B={args.batch}, L={args.length}, d={args.hidden}; memory buffer {BUFFER} x {R_SEQ * R_VOC}. "
        f"Forward: random-weight Qwen2 body, {args.layers} layers, hidden {args.hidden}, intermediate {args.intermediate}, "
        f"{args.heads} heads ({args.kv_heads} KV), no lm_head. Clock: "
        f"{'process CPU time (single-threaded, so it counts the work whatever else shares the cores)' if args.clock == 'cpu' else 'wall time'}. "
        f"Times are medians ({args.repeats} runs of ours and of the forward pass, "
        f"alternating, after one warm-up; {args.explicit_repeats} of explicit); peak memory is the growth over one scoring call, "
        "each route in a fresh process. `max rel. diff u` compares the two routes' nuclear norms. "
        f"1-minute load average {load[0]:.1f} at the start and {load[1]:.1f} at the end (on a shared machine, "
        "wall times move with it; CPU time and the ratio of ours to the forward pass, which alternate, move least).",
        "",
        f"Goals: explicit/ours time >= {GOALS['speedup']:.0f}x; ours peak memory < {GOALS['memory_fraction']:.0%} of explicit; "
        f"ours < {GOALS['forward_fraction']:.0%} of the forward pass.",
        "",
        "| V | explicit time | ours time | speed-up | explicit peak mem | ours peak mem | mem ratio | forward (body) | ours / forward | max rel. diff u | per-job setup (ours) |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    verdicts = []
    for row in rows:
        speedup = row["explicit"]["time"] / row["ours"]["time"]
        memory = row["ours"]["peak_bytes"] / max(1, row["explicit"]["peak_bytes"])
        fraction = row["ours"]["time"] / row["ours"]["forward_time"]
        u_ours, u_ref = torch.tensor(row["ours"]["utility"]), torch.tensor(row["explicit"]["utility"])
        diff = float(((u_ours - u_ref).abs() / u_ref.abs().clamp_min(1e-30)).max())
        lines.append(
            f"| {row['vocab']:,} | {_seconds(row['explicit']['time'])} | {_seconds(row['ours']['time'])} | {speedup:,.0f}x | "
            f"{_mib(row['explicit']['peak_bytes'])} | {_mib(row['ours']['peak_bytes'])} | {memory:.4f} | "
            f"{_seconds(row['ours']['forward_time'])} | {fraction:.1%} | {diff:.1e} | {_seconds(row['ours']['setup_time'])} |"
        )
        verdicts.append(
            f"- V={row['vocab']:,}: speed-up {speedup:,.0f}x ({'meets' if speedup >= GOALS['speedup'] else 'MISSES'} >= 50x); "
            f"memory {memory:.4f} of explicit ({'meets' if memory < GOALS['memory_fraction'] else 'MISSES'} < 0.1); "
            f"{fraction:.1%} of the forward pass ({'meets' if fraction < GOALS['forward_fraction'] else 'MISSES'} < 5%)."
        )
    lines += ["", "Against the goals:", *verdicts, ""]
    return "\n".join(lines)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    parser.add_argument("--quick", action="store_true", help="small shapes, one vocabulary; a smoke test")
    parser.add_argument("--vocab", type=int, nargs="+", default=None, help="vocabulary sizes (default 32000 151936)")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--length", type=int, default=256)
    parser.add_argument("--hidden", type=int, default=512)
    parser.add_argument("--layers", type=int, default=8)
    parser.add_argument("--intermediate", type=int, default=1408)
    parser.add_argument("--heads", type=int, default=8)
    parser.add_argument("--kv-heads", type=int, default=2)
    parser.add_argument("--threads", type=int, default=0, help="CPU threads per route (default: torch's default)")
    parser.add_argument(
        "--clock",
        default="wall",
        choices=["wall", "cpu"],
        help="cpu: process CPU time, for a shared CPU machine (use with --threads 1)",
    )
    parser.add_argument("--repeats", type=int, default=5, help="timed runs of ours and of the forward pass")
    parser.add_argument("--explicit-repeats", type=int, default=1, help="timed runs of the explicit route (slow)")
    parser.add_argument(
        "--out", default=None, help="markdown report (default benchmarks/results/scoring.md; none with --quick)"
    )
    parser.add_argument("--worker", choices=["ours", "explicit"], help=argparse.SUPPRESS)
    parser.add_argument("--vocab-size", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--result", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.worker:
        Path(args.result).write_text(json.dumps(worker(args)))
        return
    if args.dtype == "bfloat16" and not args.device.startswith("cuda"):
        parser.error("--dtype bfloat16 is for CUDA; CPU runs are float32")
    if args.clock == "cpu" and (args.device != "cpu" or args.threads != 1):
        parser.error("--clock cpu measures work only for single-threaded CPU runs: add --device cpu --threads 1")
    if args.quick:
        args.batch, args.length, args.hidden, args.layers, args.intermediate = 4, 64, 128, 2, 352
        args.heads, args.kv_heads, args.repeats = 4, 2, 3
        args.vocab = args.vocab or [8000]
    vocabs = args.vocab or [32000, 151936]
    out = args.out or (None if args.quick else str(ROOT / "benchmarks" / "results" / "scoring.md"))
    command = " ".join(
        [".venv/bin/python", "benchmarks/scoring.py", *map(shlex.quote, (argv if argv is not None else sys.argv[1:]))]
    )

    load_start = os.getloadavg()[0]
    rows = []
    for vocab in vocabs:
        row = {"vocab": vocab}
        for route, repeats in (("ours", args.repeats), ("explicit", args.explicit_repeats)):
            row[route] = _run_worker(args, route, vocab, repeats)
            print(f"V={vocab} {route}: {_seconds(row[route]['time'])}", file=sys.stderr)
        rows.append(row)
    text = report(args, rows, command, (load_start, os.getloadavg()[0]))
    print(text)
    if out:
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        Path(out).write_text(text)


if __name__ == "__main__":
    main()
