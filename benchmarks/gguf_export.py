"""GGUF export on the real model: time, size, and what the file answers, against the merged transformers model.

A LoRA adapter on SmolLM2-135M-Instruct (random, non-zero: every q/k/v/o/gate/up/down gets a low-rank delta that
moves the logits visibly), exported merged (float32 safetensors) and as GGUF f16 and q8_0, three runs each. Each
GGUF file is read back with transformers' GGUF loader and compared with the merged model on held-out prompts:
greedy answers (where they first differ), and the mean token loss of held-out chat texts.

Where greedy answers first differ is found without generating with each file: the merged model's greedy answer is
generated once, then each file reads prompt + that answer in one forward pass; the first answer position whose
argmax is not the merged model's next token is where the file's own greedy answer would first differ (up to there
both generate the same tokens from the same context).

    nice -n 15 .venv/bin/python benchmarks/gguf_export.py --model smollm2-135m-instruct \\
        --out benchmarks/results/gguf_export.md
    # the comparison again on an earlier run's files (its work folder is printed first):
    nice -n 15 .venv/bin/python benchmarks/gguf_export.py --reuse /tmp/gguf-bench-XXXX --out ...
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch

PROMPTS = [
    "What is the capital of France?",
    "Write a haiku about the sea.",
    "Explain what a prime number is in one sentence.",
    "Give me three tips for learning to cook.",
    "What is 17 + 25?",
    "Name a famous painting by Leonardo da Vinci.",
]

HELD_OUT = [
    ("What colour is the sky on a clear day?", "On a clear day the sky is blue, because air scatters blue light most."),
    ("Translate 'good morning' into French.", "'Good morning' in French is 'bonjour'."),
    ("How many legs does a spider have?", "A spider has eight legs."),
    ("What do bees make?", "Bees make honey and beeswax."),
    ("Which planet is known as the red planet?", "Mars is known as the red planet because of its rusty surface."),
    ("What is the boiling point of water at sea level?", "Water boils at 100 degrees Celsius at sea level."),
    ("Who wrote Romeo and Juliet?", "William Shakespeare wrote Romeo and Juliet."),
    ("What is the largest ocean on Earth?", "The Pacific Ocean is the largest ocean on Earth."),
]


def make_adapter(base_dir: str, out: Path, seed: int, scale: float) -> float:
    """Save a random LoRA adapter; returns the max |logit change| it causes on one prompt (so it is not a no-op)."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(base_dir)
    targets = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    peft_model = get_peft_model(model, LoraConfig(r=8, lora_alpha=16, target_modules=targets))
    with torch.no_grad():
        for name, parameter in peft_model.named_parameters():
            if "lora_B" in name:
                parameter.normal_(0, scale)
    ids = tokenizer(PROMPTS[0], return_tensors="pt")
    with torch.no_grad():
        tuned = peft_model(**ids).logits
        with peft_model.disable_adapter():
            base = peft_model(**ids).logits
    peft_model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return (tuned - base).abs().max().item()


def chat_ids(tokenizer, prompt: str) -> torch.Tensor:
    return tokenizer.apply_chat_template(
        [{"role": "user", "content": prompt}], add_generation_prompt=True, return_tensors="pt", return_dict=True
    )["input_ids"]


def greedy(model, tokenizer, prompt: str, tokens: int) -> list[int]:
    ids = chat_ids(tokenizer, prompt)
    with torch.no_grad():
        out = model.generate(ids, max_new_tokens=tokens, do_sample=False)
    return out[0, ids.shape[1] :].tolist()


def first_disagreement(model, tokenizer, prompt: str, answer: list[int]) -> int | None:
    """The first answer position where `model`'s greedy choice differs from `answer`'s token, or None."""
    ids = chat_ids(tokenizer, prompt)
    full = torch.cat([ids, torch.tensor([answer])], dim=1)
    with torch.no_grad():
        choices = model(full).logits[0, ids.shape[1] - 1 : -1].argmax(-1).tolist()
    return next((i for i, (x, y) in enumerate(zip(choices, answer, strict=True)) if x != y), None)


def held_out_loss(model, tokenizer) -> float:
    losses = []
    for question, answer in HELD_OUT:
        text = tokenizer.apply_chat_template(
            [{"role": "user", "content": question}, {"role": "assistant", "content": answer}], tokenize=False
        )
        ids = tokenizer(text, return_tensors="pt")
        with torch.no_grad():
            losses.append(model(**ids, labels=ids["input_ids"]).loss.item())
    return statistics.fmean(losses)


def export_all(args, adapter: Path, work: Path, shift: float, lines: list[str]) -> tuple[Path, dict]:
    """Export merged once and GGUF f16 and q8_0 `args.runs` times each, timed; table rows appended to `lines`."""
    from uds.export import export_merged
    from uds.gguf_export import export_gguf

    lines += [
        f"Command: `nice -n 15 .venv/bin/python benchmarks/gguf_export.py --runs {args.runs} --tokens {args.tokens}`. "
        f"CPU, {torch.get_num_threads()} torch threads, shared machine. Adapter: random LoRA r=8 on q/k/v/o/gate/up/"
        f"down, lora_B ~ N(0, {args.scale}) (max |logit change| vs the base on one prompt: {shift:.2f}). Each time "
        "includes loading the base, merging in float32 and writing the file.",
        "",
        "| export | run | seconds | bytes |",
        "|---|---|---|---|",
    ]
    start = time.perf_counter()
    merged_dir = export_merged(args.model_dir, str(adapter), work / "merged")
    merged_bytes = sum(p.stat().st_size for p in merged_dir.glob("*.safetensors"))
    lines.append(f"| merged (float32 safetensors) | 1 | {time.perf_counter() - start:.1f} | {merged_bytes:,} |")
    print(lines[-1], flush=True)
    files = {}
    for quantization in ("f16", "q8_0"):
        for run in range(1, args.runs + 1):
            out = work / f"gguf-{quantization}-{run}"
            start = time.perf_counter()
            export_gguf(args.model_dir, str(adapter), out, quantization, name="bench")
            seconds = time.perf_counter() - start
            files[quantization] = out / f"bench-{quantization}.gguf"
            lines.append(f"| gguf {quantization} | {run} | {seconds:.1f} | {files[quantization].stat().st_size:,} |")
            print(lines[-1], flush=True)
    lines.append("")
    return merged_dir, files


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--model", default="smollm2-135m-instruct", help="a built-in or registered model name, or a model folder"
    )
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--tokens", type=int, default=40)
    parser.add_argument("--scale", type=float, default=0.01, help="std of the random lora_B entries")
    parser.add_argument("--out", default="benchmarks/results/gguf_export.md")
    parser.add_argument("--reuse", default=None, help="an earlier run's work folder: compare its files, export none")
    args = parser.parse_args()
    from uds.models import resolve_model

    args.model_dir = resolve_model(args.model)
    torch.set_num_threads(max(1, torch.get_num_threads()))
    from transformers import AutoModelForCausalLM, AutoTokenizer

    work = Path(args.reuse) if args.reuse else Path(tempfile.mkdtemp(prefix="gguf-bench-"))
    print(f"work folder: {work}", flush=True)
    adapter = work / "adapter"
    lines = ["# GGUF export on SmolLM2-135M-Instruct with a LoRA adapter", ""]
    if args.reuse:
        merged_dir = work / "merged"
        files = {q: work / f"gguf-{q}-{args.runs}" / f"bench-{q}.gguf" for q in ("f16", "q8_0")}
        lines += [f"Comparison of the files of an earlier run ({work}), `--reuse`; no export timed here.", ""]
    else:
        shift = make_adapter(args.model_dir, adapter, seed=0, scale=args.scale)
        merged_dir, files = export_all(args, adapter, work, shift, lines)
    merged_bytes = sum(p.stat().st_size for p in merged_dir.glob("*.safetensors"))
    for quantization, path in files.items():
        ratio = path.stat().st_size / merged_bytes
        lines.append(f"{quantization} file / float32 merged safetensors ({merged_bytes:,} bytes): {ratio:.3f}.")
    lines.append("")

    merged = AutoModelForCausalLM.from_pretrained(merged_dir, dtype=torch.float32).eval()
    tokenizer = AutoTokenizer.from_pretrained(merged_dir)
    reference = {prompt: greedy(merged, tokenizer, prompt, args.tokens) for prompt in PROMPTS}
    merged_loss = held_out_loss(merged, tokenizer)
    del merged
    lengths = ", ".join(str(len(reference[p])) for p in PROMPTS)
    lines += [
        f"Held-out prompts: {len(PROMPTS)}, the merged model's greedy answer to each (chat template, at most "
        f"{args.tokens} tokens, ending at its end-of-turn token; lengths {lengths}). Held-out loss: mean token cross-entropy over "
        f"{len(HELD_OUT)} chat texts (question and answer) not in any training data.",
        "",
        "| model | held-out loss | prompts whose greedy answer is the merged model's for all tokens | first "
        "differing answer token, per prompt |",
        "|---|---|---|---|",
        f"| merged float32 | {merged_loss:.5f} | reference | |",
    ]
    for quantization, path in files.items():
        model = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, dtype=torch.float32).eval()
        back_tokenizer = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
        firsts = [first_disagreement(model, back_tokenizer, p, reference[p]) for p in PROMPTS]
        same = sum(f is None for f in firsts)
        where = ", ".join("same" if f is None else str(f) for f in firsts)
        loss = held_out_loss(model, back_tokenizer)
        lines.append(f"| gguf {quantization} | {loss:.5f} | {same} of {len(PROMPTS)} | {where} |")
        print(lines[-1], flush=True)
        del model
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text("\n".join(lines) + "\n", encoding="utf-8")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
