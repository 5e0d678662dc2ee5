"""Does selection pay, with paired seeds and intervals, on the BPE base and on any data: the comparison runner.

    nice -n 10 .venv/bin/python -m benchmarks.quality.compare --task manpages --seeds 5       # the man-page task
    .venv/bin/python -m benchmarks.quality.compare --train my.jsonl --eval my_eval.jsonl       # a user's data
    .venv/bin/python -m benchmarks.quality.run --train my.jsonl --eval my_eval.jsonl           # the same, via run.py

For each seed, `full` and every selector at every budget train through `uds.trainer.train` from the same base with
the same settings. The seed fixes the candidate order (`uds.trainer.epoch_groups(seed, epoch)`, the same for every
method because they share the group size B) and the LoRA init (`torch.manual_seed(seed)` before `add_lora`, and
nothing that differs by method draws before it); tests/benchmarks/test_pairing.py checks both. So per-seed
differences between methods are paired, and `stats.t_interval` of them is the comparison (report in
`compare_report.py`). results.json is rewritten after every run, so a cut-short run still reports what it has.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import torch  # noqa: E402  (after the offline switches above)
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer  # noqa: E402

from api.previews import row_labels as service_row_labels  # noqa: E402
from benchmarks.quality import arithmetic, base, compare_report, manpages  # noqa: E402
from benchmarks.quality.dataset import write as write_signature  # noqa: E402
from benchmarks.quality.pretrain import BASE_SHAPE, DEFAULT_DATA_DIR, base_model_dir, pretrain  # noqa: E402
from benchmarks.quality.training import held_out_metrics, run_one  # noqa: E402
from uds.config import TrainConfig  # noqa: E402
from uds.formats import validate_file  # noqa: E402
from uds.methods import SELECTORS  # noqa: E402
from uds.models import ModelLoadError, ModelNotAllowed, resolve_model  # noqa: E402
from uds.trainer import train  # noqa: E402

DEFAULT_OUT = ROOT / "benchmarks" / "results" / "compare"


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


# ---------------------------------------------------------------------------------------------------- data


def validated(path: str) -> str:
    """`path` if uds.formats accepts it (the service's own upload validation), else SystemExit with its problems."""
    report = validate_file(path)
    if report.problems:
        problems = "\n".join(f"  {problem}" for problem in report.problems[:20])
        raise SystemExit(f"{path} is not a dataset the service accepts:\n{problems}")
    return path


def prepare_data(args, work: Path) -> dict:
    """{"train", "eval", "kinds", "task"}: the user's files (validated) or a built-in task written under `work`."""
    if args.train or args.eval:
        if not (args.train and args.eval):
            raise SystemExit("--train and --eval go together")
        kinds = []
        if args.kinds:
            kinds = [json.loads(line)["kind"] for line in Path(args.kinds).read_text().splitlines() if line.strip()]
        elif args.label_field:
            kinds = row_labels(args.train, args.label_field)
        return {
            "train": validated(args.train),
            "eval": validated(args.eval),
            "kinds": kinds,
            "task": f"user data ({Path(args.train).name})",
        }
    if args.task == "manpages":
        folder = work / "manpages"
        manpages.write(folder, args.train_rows, args.eval_rows, seed=0)
    elif args.task in ("arithmetic", "arithmetic-noisy"):
        folder = work / args.task
        arithmetic.write(folder, args.train_rows, args.eval_rows, seed=0, noisy=args.task == "arithmetic-noisy")
    else:
        folder = Path(__file__).resolve().parent / "data"
        if not (folder / "train.jsonl").exists():
            write_signature(folder)
    kinds = [json.loads(line)["kind"] for line in (folder / "train_meta.jsonl").read_text().splitlines()]
    train, eval_path = folder / "train.jsonl", folder / "eval.jsonl"
    if args.train_rows and args.task == "signature":
        train = _head(train, work / "signature-train.jsonl", args.train_rows)
        kinds = kinds[: args.train_rows]
    if args.eval_rows and args.task == "signature":
        eval_path = _head(eval_path, work / "signature-eval.jsonl", args.eval_rows)
    return {"train": str(train), "eval": str(eval_path), "kinds": kinds, "task": args.task}


def row_labels(path: str, field: str) -> list[str]:
    """Each training row's string value of `field` ("(none)" where it has none): the service's own reading
    (api.previews.row_labels, behind comparisons' `label_field`)."""
    labels = service_row_labels(Path(path), field)
    if all(label is None for label in labels):
        raise SystemExit(f"--label-field {field}: no row of {path} has a string {field!r}")
    return [label if label is not None else "(none)" for label in labels]


def overrides(pairs: list[str]) -> dict:
    """--set KEY=VALUE pairs as training settings, checked against TrainConfig's fields."""
    settings = {}
    for pair in pairs:
        key, sep, text = pair.partition("=")
        if not sep or key not in TrainConfig.__dataclass_fields__:
            raise SystemExit(f"--set {pair}: expected KEY=VALUE with KEY a training setting")
        try:
            settings[key] = json.loads(text)
        except json.JSONDecodeError:
            settings[key] = text
    return settings


def _head(source: Path, target: Path, n: int) -> Path:
    target.write_text("".join(line + "\n" for line in source.read_text().splitlines()[:n]))
    return target


# ---------------------------------------------------------------------------------------------------- base


def prepare_base(args) -> tuple[str, dict]:
    """(model folder, what the report says of it): `--model` resolved as the service resolves a job's model (a
    registered name, a built-in, a local folder), else the BPE base of benchmarks.quality.base or the byte-level one
    (with their pretrain.json)."""
    if args.model:
        return registered_model(args.model)
    data_dir = Path(args.data_dir) if args.data_dir else None
    if args.base == "byte":
        folder = pretrain(
            base_model_dir(data_dir or DEFAULT_DATA_DIR, args.pretrain_steps, 0, BASE_SHAPE),
            steps=args.pretrain_steps,
            log=log,
        )
        info = json.loads((folder / "pretrain.json").read_text())
        return str(folder), {**info, "vocab_size": 260, "kind": "byte-level, 260 tokens (pretrain.py)"}
    folder = base.build(base.spec_from_args(args), data_dir, log=log, progress=not args.no_progress, device=args.device)
    info = json.loads((folder / "pretrain.json").read_text())
    return str(folder), {**info, "kind": f"byte-level BPE, {info['vocab_size']} tokens (base.py)"}


def registered_model(name: str) -> tuple[str, dict]:
    """(folder, description) of a model the service can train: its parameter count and vocabulary from the folder's
    config, without loading the weights."""
    try:
        folder = resolve_model(name)
    except (ModelNotAllowed, ModelLoadError) as error:
        raise SystemExit(f"--model {name}: {error}") from None
    config = AutoConfig.from_pretrained(folder)
    with torch.device("meta"):  # shapes only: counting parameters reads no weights
        parameters = sum(p.numel() for p in AutoModelForCausalLM.from_config(config).parameters())
    architecture = (config.architectures or [config.model_type])[0]
    return folder, {
        "kind": f"{name} ({architecture}, {config.num_hidden_layers} layers, hidden {config.hidden_size})",
        "parameters": parameters,
        "vocab_size": config.vocab_size,
    }


# ---------------------------------------------------------------------------------------------------- runs


def grid(methods, budgets) -> list[tuple[str, float]]:
    """(method, budget) of one seed: full first (the reference), then each selector at each budget."""
    return [("full", 1.0)] + [(m, b) for b in budgets for m in methods if m != "full"]


def cost_at_vocab(model_dir: str, vocab: int, settings: dict, methods, budgets, rows: int) -> dict:
    """Each method for one epoch over the first `rows` training rows on a copy of the base whose vocabulary is
    widened to `vocab` (new rows random: this measures time, not quality), seed 0, in this process."""
    with tempfile.TemporaryDirectory(prefix="uds-cost-") as root:
        folder = Path(root) / f"v{vocab}"
        model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            model.resize_token_embeddings(vocab, mean_resizing=False)
        model.save_pretrained(folder)
        AutoTokenizer.from_pretrained(model_dir).save_pretrained(folder)
        del model
        subset = _head(Path(settings["train"]), Path(root) / "cost-train.jsonl", rows)
        timings = {}
        for method, budget in grid(methods, budgets):
            config = TrainConfig(
                model=str(folder),
                dataset_path=str(subset),
                output_dir=str(Path(root) / f"out-{method}-{budget}"),
                method=method,
                budget=budget,
                epochs=1,
                learning_rate=settings["learning_rate"],
                max_seq_len=settings["max_seq_len"],
                micro_batch_size=settings["micro_batch_size"],
                seed=0,
                device=settings.get("device", "cpu"),
                checkpoint_every=10_000_000,
                keep_checkpoints=1,
            )
            summary = train(config, None, resume=False).summary
            timings[f"{method}@{budget:g}"] = {
                "method": method,
                "budget": budget,
                "time_scoring": summary["time_scoring"],
                "time_training": summary["time_training"],
            }
            shutil.rmtree(config.output_dir, ignore_errors=True)
            log(
                f"cost V={vocab}: {method} {budget:g}: {summary['time_scoring'] + summary['time_training']:.1f} s (scoring {summary['time_scoring']:.1f} s)"
            )
    return {"vocab": vocab, "rows": rows, "timings": timings}


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--model",
        help="train this model instead of a base built here: a registered name (`uds models list`), a built-in "
        "(uds-tiny) or a local transformers folder; the base's flags are then ignored",
    )
    parser.add_argument(
        "--task",
        choices=("manpages", "signature", "arithmetic", "arithmetic-noisy"),
        default="manpages",
        help="built-in task (ignored with --train/--eval)",
    )
    parser.add_argument(
        "--train", help="training JSONL in any format the service accepts (chat, alpaca, prompt/completion)"
    )
    parser.add_argument("--eval", help="held-out JSONL (any accepted format); loss on its answers and exact match")
    parser.add_argument(
        "--kinds", help='optional JSONL with a {"kind": ...} per training row, to count what each method picked'
    )
    parser.add_argument(
        "--label-field",
        help="a key of the training rows holding a string label (e.g. kind), to count what each method picked",
    )
    parser.add_argument(
        "--train-rows", type=int, default=320, help="built-in task: training rows (signature: first N; 0 = all)"
    )
    parser.add_argument("--eval-rows", type=int, default=48, help="built-in task: held-out rows")
    parser.add_argument(
        "--base",
        choices=("bpe", "byte"),
        default="bpe",
        help="bpe: benchmarks.quality.base (flags below); byte: pretrain.py's",
    )
    parser.add_argument("--pretrain-steps", type=int, default=600, help="--base byte: its pretraining steps")
    base.add_spec_arguments(parser)
    base.add_device_argument(parser)
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--budgets", type=float, nargs="+", default=[0.125, 0.25])
    parser.add_argument("--methods", nargs="+", default=list(SELECTORS), choices=SELECTORS)
    parser.add_argument(
        "--epochs",
        type=int,
        default=3,
        help="passes over the training rows (every method sees each candidate this often)",
    )
    parser.add_argument(
        "--full-epochs",
        type=int,
        default=None,
        help="epochs of the full run (default --epochs); e.g. to compare "
        "selectors at as many optimizer steps as full takes",
    )
    parser.add_argument(
        "--learning-rate", type=float, default=5e-3, help="the same for every method (not tuned per method)"
    )
    parser.add_argument("--max-seq-len", type=int, default=128)
    parser.add_argument("--warmup-ratio", type=float, default=0.05)
    parser.add_argument("--micro-batch-size", type=int, default=8, help="examples per forward/backward (memory only)")
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="any other training setting for every run (VALUE read as JSON when it parses), e.g. --set score_on=answer",
    )
    parser.add_argument(
        "--cost-vocab", type=int, nargs="*", default=[32768], help="also time every method at these vocabulary sizes"
    )
    parser.add_argument("--cost-rows", type=int, default=128)
    parser.add_argument(
        "--data-dir", default=None, help="cache of base models ($UDS_BENCH_DIR or ~/.cache/uds/bench-quality)"
    )
    parser.add_argument("--out", default=str(DEFAULT_OUT))
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--no-progress", action="store_true")
    parser.add_argument("--report-only", action="store_true", help="rewrite report.md from --out/results.json")
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.report_only:
        compare_report.write(json.loads((out / "results.json").read_text()), out)
        return 0
    started = time.perf_counter()
    work = Path(tempfile.mkdtemp(prefix="uds-compare-"))
    data = prepare_data(args, work)
    model_dir, pretrain_info = prepare_base(args)
    before = held_out_metrics(model_dir, None, data["eval"], args.max_seq_len, args.device)
    log(
        f"base: {model_dir}; before fine-tuning: held-out answer loss {before['eval_loss']:.3f}, "
        f"answer tokens {before['eval_token_accuracy']:.1%}, exact match {before['eval_accuracy']:.1%}"
    )
    settings = {
        "model": model_dir,
        "train": data["train"],
        "eval": data["eval"],
        "task": data["task"],
        "epochs": args.epochs,
        "learning_rate": args.learning_rate,
        "warmup_ratio": args.warmup_ratio,
        "max_seq_len": args.max_seq_len,
        "micro_batch_size": args.micro_batch_size,
        "device": args.device,
        "eval_every": None,
        "n_train": sum(1 for line in Path(data["train"]).read_text().splitlines() if line.strip()),
        "n_eval": sum(1 for line in Path(data["eval"]).read_text().splitlines() if line.strip()),
        "train_kinds": {k: data["kinds"].count(k) for k in dict.fromkeys(data["kinds"])},
        "pretrain": {k: v for k, v in pretrain_info.items() if k != "curve"},
        "before": before,
        "seeds": args.seeds,
        "budgets": args.budgets,
        "full_epochs": args.full_epochs or args.epochs,
        "overrides": overrides(args.set),
    }
    results = {
        "command": " ".join(["python -m benchmarks.quality.compare", *(argv if argv is not None else sys.argv[1:])]),
        "settings": settings,
        "runs": [],
        "cost": [],
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "torch_threads": args.threads,
    }

    def save():
        results["total_wall_s"] = time.perf_counter() - started
        (out / "results.json").write_text(json.dumps(results, indent=1))
        compare_report.write(results, out)

    for seed in range(args.seeds):
        for method, budget in grid(args.methods, args.budgets):
            extra = {**settings["overrides"]}
            if method == "full" and args.full_epochs:
                extra["epochs"] = args.full_epochs
            row = run_one(settings, method, method, budget, extra, seed, data["kinds"], curves=False)
            row.pop("curve", None)
            results["runs"].append(row)
            log(
                f"seed {seed} {method:>8} {budget:>5.3f}: eval loss {row['eval_loss']:.4f}, exact match {row['eval_accuracy']:.1%}, "
                f"answer tokens {row['eval_token_accuracy']:.1%}, {row['time_scoring'] + row['time_training']:.1f} s (scoring {row['time_scoring']:.1f} s)"
            )
            save()
    for vocab in args.cost_vocab:
        results["cost"].append(cost_at_vocab(model_dir, vocab, settings, args.methods, args.budgets, args.cost_rows))
        save()
    shutil.rmtree(work, ignore_errors=True)
    save()
    log(f"done in {results['total_wall_s'] / 60:.1f} min: {out / 'report.md'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
