"""report.md and the PNG plots of the quality benchmark, from results.json (see run.py)."""

from __future__ import annotations

import math
import statistics
from collections import defaultdict
from pathlib import Path

METHOD_COLORS = {
    "uds": "tab:red",
    "random": "tab:gray",
    "max_loss": "tab:blue",
    "max_grad": "tab:green",
    "full": "black",
}
KINDS = ("clean", "easy", "templated", "duplicate", "noisy")


def _mean_std(values):
    values = [v for v in values if v is not None]
    if not values:
        return float("nan"), float("nan")
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def group(runs):
    groups = defaultdict(list)
    for run in runs:
        groups[(run["label"], run["budget"])].append(run)
    return groups


def _fmt(mean, std, digits=4, pct=False):
    if math.isnan(mean):
        return "n/a"
    if pct:
        return f"{100 * mean:.1f}% ± {100 * std:.1f}"
    return f"{mean:.{digits}f} ± {std:.{digits}f}"


def write(results: dict, out: Path) -> None:
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    runs, settings = results["runs"], results["settings"]
    groups = group(runs)
    plots = _plots(results, out)
    lines = ["# Does selection pay? Quality and cost of UDS against its baselines (CPU, small scale)", ""]
    lines += [
        f"Written by `{results['command']}` on {results['date']} in {results['total_wall_s'] / 60:.1f} min "
        f"(torch threads: {results['torch_threads']}; a shared 2-core CPU at `nice -n 10`). Raw numbers: `results.json`. "
        "How it is built and what it can and cannot say: `benchmarks/quality/README.md`.",
        "",
        "## Set-up",
        "",
    ]
    p = settings["pretrain"]
    lines += [
        f"- **Base model**: Qwen2-style, {p['parameters'] / 1e6:.1f} M parameters ({p['shape']['num_hidden_layers']} layers, d={p['shape']['hidden_size']}, "
        f"byte-level vocabulary of 260), pretrained here for {p['steps']} steps ({p['tokens_seen'] / 1e6:.2f} M tokens of stdlib docstrings and "
        f"Debian package descriptions; held-out loss {p['val_loss']:.3f} nats/byte, {p['seconds']:.0f} s).",
        f"- **Data**: {settings['n_train']} training rows of signature QA ({', '.join(f'{k} {v}' for k, v in settings['train_kinds'].items())}); "
        f"{settings['n_eval']} clean held-out rows from other modules.",
        f"- **Runs**: {_runs_sentence(settings)} LoRA r=8 on q,k,v,o,gate,up,down, "
        f"lr {settings['learning_rate']:g} with {settings['warmup_ratio']:.0%} warm-up; otherwise the service's defaults (the paper's: "
        "length-grouped selection groups of B=8, k per group, picks of about 32 a step accumulated into one optimizer step, "
        'alpha "paper", linear decay, per-example loss weighting, gaussian LoRA init, loss on all tokens) unless the label says otherwise.',
        "- **Measure**: on the clean held-out split, the mean loss of the answer tokens (nats/token), the share of answer tokens "
        "predicted exactly (teacher-forced argmax, the answer and its end-of-turn marker) and exact match of the greedy answer. "
        "Mean ± standard deviation over seeds (the seed sets the data order, the LoRA init and the selector's randomness). "
        "Time = scoring + training seconds of the run (evaluation excluded).",
        "",
        "## Result",
        "",
        "| method | budget | trained on | held-out answer loss ↓ | answer-token accuracy ↑ | exact match ↑ | time (s) | of which scoring | seeds |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    order = sorted(groups, key=lambda key: (key[0] not in ("full",), key[1] != 1.0, key[1], _label_rank(key[0])))
    for label, budget in order:
        rs = groups[(label, budget)]
        loss, acc = _mean_std([r["eval_loss"] for r in rs]), _mean_std([r["eval_accuracy"] for r in rs])
        tok = _mean_std([r.get("eval_token_accuracy") for r in rs])
        time_s = statistics.fmean(r["time_scoring"] + r["time_training"] for r in rs)
        scoring = statistics.fmean(r["time_scoring"] for r in rs)
        trained = statistics.fmean(r["examples_trained"] for r in rs)
        lines.append(
            f"| {label} | {budget:.1%} | {trained:.0f} | {_fmt(*loss)} | {_fmt(*tok, pct=True)} | {_fmt(*acc, pct=True)} | {time_s:.1f} | {scoring:.1f} | {len(rs)} |"
        )
    lines += ["", f"![metric against budget]({plots['budget']})", "", *_verdict(groups), ""]
    lines += _length_section(groups, order)

    lines += [
        "## What each method trained on",
        "",
        "Share of the selected rows by kind, pooled over seeds (the first row: all candidates the runs saw).",
        "",
        "| method | budget | " + " | ".join(KINDS) + " |",
        "|---|---|" + "---|" * len(KINDS),
    ]
    candidates = defaultdict(int)
    for run in runs:
        if run["label"] == "full":
            for kind, n in run["candidate_kinds"].items():
                candidates[kind] += n
    lines.append("| (candidates) | | " + " | ".join(_share(candidates, k) for k in KINDS) + " |")
    for label, budget in order:
        if label == "full":
            continue
        counts = defaultdict(int)
        for run in groups[(label, budget)]:
            for kind, n in run["selected_kinds"].items():
                counts[kind] += n
        lines.append(f"| {label} | {budget:.1%} | " + " | ".join(_share(counts, k) for k in KINDS) + " |")
    lines += ["", f"![held-out loss during training (seed 0)]({plots['curves']})", ""]

    lines += _cost_section(results, groups, plots)
    (out / "report.md").write_text("\n".join(lines) + "\n")


def _runs_sentence(settings):
    if "epochs" in settings:
        return f"{settings['epochs']} epoch(s) over the training rows for every method (so every method sees every candidate equally often);"
    # results.json of the runs before selection groups: a fixed number of candidate batches.
    return f"{settings['steps']} steps of B={settings['candidate_batch_size']} candidates each;"


def _length_section(groups, order):
    """Issue 10's acceptance: inside a selection group, does utility (or the score) just rank by length?"""
    rows = [(label, budget, groups[(label, budget)]) for label, budget in order]
    rows = [(label, budget, rs) for label, budget, rs in rows if any(r.get("mean_length_candidates") for r in rs)]
    if not rows:
        return []
    lines = [
        "## Length bias",
        "",
        "Mean over the runs' selection groups of the rank correlation (Spearman) of utility and of the total score with the "
        "token count, inside each group; and the mean length of the selected examples against all candidates. "
        'A selector that picks "the longest" shows a correlation near 1 and selected examples longer than the candidates.',
        "",
        "| method | budget | B, k | steps | ρ(utility, length) | ρ(score, length) | selected / candidate length |",
        "|---|---|---|---|---|---|---|",
    ]
    for label, budget, rs in rows:
        rho_u = _mean_std([r.get("spearman_utility_length") for r in rs])
        rho_s = _mean_std([r.get("spearman_score_length") for r in rs])
        ratios = [
            r["mean_length_selected"] / r["mean_length_candidates"]
            for r in rs
            if r.get("mean_length_selected") and r.get("mean_length_candidates")
        ]
        ratio = _mean_std(ratios)
        shape = f"{rs[0].get('candidate_batch_size')}, {rs[0].get('k')}"
        lines.append(
            f"| {label} | {budget:.1%} | {shape} | {rs[0].get('steps')} | {_fmt(*rho_u, digits=2)} | {_fmt(*rho_s, digits=2)} | {_fmt(*ratio, digits=3)} |"
        )
    return lines + [""]


def _label_rank(label):
    order = ["uds", "random", "max_loss", "max_grad"]
    return order.index(label) if label in order else 10 + len(label)


def _share(counts, kind):
    total = sum(counts.values())
    return f"{counts.get(kind, 0) / total:.0%}" if total else "n/a"


def _verdict(groups):
    lines = []
    full = groups.get(("full", 1.0))
    for budget in (0.125, 0.25):
        if ("uds", budget) not in groups:
            continue
        uds_loss = _mean_std([r["eval_loss"] for r in groups[("uds", budget)]])
        uds_acc = _mean_std([r["eval_accuracy"] for r in groups[("uds", budget)]])
        others = {
            label: _mean_std([r["eval_loss"] for r in groups[(label, budget)]])
            for label in ("random", "max_loss", "max_grad")
            if (label, budget) in groups
        }
        ranked = sorted([("uds", uds_loss[0])] + [(k, v[0]) for k, v in others.items()], key=lambda kv: kv[1])
        rank = [k for k, _ in ranked].index("uds") + 1
        rnd = others.get("random")
        text = f"- **Budget {budget:.1%}**: uds ranks {rank} of {len(ranked)} by held-out loss ({' < '.join(k for k, _ in ranked)})."
        if rnd:
            diff = uds_loss[0] - rnd[0]
            spread = math.sqrt((uds_loss[1] ** 2 + rnd[1] ** 2) / 2) or float("nan")
            text += (
                f" Against random: {diff:+.4f} nats ({'better' if diff < 0 else 'worse'}; seed spread ≈ {spread:.4f}"
            )
            text += ", within noise)." if abs(diff) < spread else ")."
            rnd_acc = _mean_std([r["eval_accuracy"] for r in groups[("random", budget)]])
            uds_tok = _mean_std([r.get("eval_token_accuracy") for r in groups[("uds", budget)]])
            rnd_tok = _mean_std([r.get("eval_token_accuracy") for r in groups[("random", budget)]])
            text += f" Answer-token accuracy {uds_tok[0]:.1%} against {rnd_tok[0]:.1%}; exact match {uds_acc[0]:.1%} against {rnd_acc[0]:.1%}."
        if full:
            full_loss = _mean_std([r["eval_loss"] for r in full])
            text += f" Full data: {full_loss[0]:.4f} ({'uds better' if uds_loss[0] < full_loss[0] else 'full better'})."
        lines.append(text)
    return lines


def _cost_section(results, groups, plots):
    lines = ["## Cost", ""]
    if ("uds", 0.125) in groups and ("full", 1.0) in groups:
        u, f = groups[("uds", 0.125)], groups[("full", 1.0)]
        u_time = statistics.fmean(r["time_scoring"] + r["time_training"] for r in u)
        u_score = statistics.fmean(r["time_scoring"] for r in u)
        f_time = statistics.fmean(r["time_scoring"] + r["time_training"] for r in f)
        f_train = statistics.fmean(r["time_training"] for r in f)
        u_wall = statistics.fmean(r["wall_s"] for r in u)
        f_wall = statistics.fmean(r["wall_s"] for r in f)
        lines += [
            "On the benchmark's own runs (same data, same process, same steps):",
            "",
            "| | uds 12.5% | full (as `uds train` runs it) | full without the scoring pass (plain SFT) |",
            "|---|---|---|---|",
            f"| scoring + training (s) | {u_time:.1f} | {f_time:.1f} | {f_train:.1f} |",
            f"| uds 12.5% as a share | 100% | {u_time / f_time:.0%} | {u_time / f_train:.0%} |",
            f"| scoring pass share of the run | {u_score / u_time:.0%} | {(f_time - f_train) / f_time:.0%} | 0% |",
            f"| wall time incl. set-up and evaluation (s) | {u_wall:.1f} | {f_wall:.1f} | |",
            "",
            f"Goal: uds 12.5% under half the time of full. Against plain SFT: **{'met' if u_time < 0.5 * f_train else 'not met'}** "
            f"({u_time / f_train:.0%}); against `full` as the trainer runs it (which also does the scoring forward pass): "
            f"**{'met' if u_time < 0.5 * f_time else 'not met'}** ({u_time / f_time:.0%}).",
            "",
        ]
    cost = results.get("cost") or []
    if cost:
        lines += [
            f"Random-weight models of other shapes (d={cost[0]['hidden']}, same data and B, a few steps each; only the time matters here):",
            "",
            "| vocabulary | layers | uds 12.5% (s) | of which scoring | full (s) | plain SFT (s) | uds / full | uds / plain SFT |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for row in cost:
            u, f = row["uds"], row["full"]
            lines.append(
                f"| {row['vocab']} | {row['layers']} | {u['time_scoring'] + u['time_training']:.1f} | {row['scoring_share']:.0%} | "
                f"{f['time_scoring'] + f['time_training']:.1f} | {f['time_training']:.1f} | {row['ratio_vs_full']:.2f} | {row['ratio_vs_sft']:.2f} |"
            )
        lines += ["", f"![cost]({plots['cost']})", ""]
    return lines


def _plots(results, out):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = results["runs"]
    groups = group(runs)
    names = {"budget": "metric_vs_budget.png", "curves": "loss_curves.png", "cost": "cost.png"}

    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
    for ax, key, title in (
        (axes[0], "eval_loss", "held-out answer loss (lower is better)"),
        (axes[1], "eval_token_accuracy", "held-out answer-token accuracy (higher is better)"),
        (axes[2], "eval_accuracy", "held-out exact match (higher is better)"),
    ):
        full = groups.get(("full", 1.0))
        if full:
            m, s = _mean_std([r.get(key) for r in full])
            ax.axhline(m, color="black", lw=1, ls="--", label="full (100%)")
            ax.axhspan(m - s, m + s, color="black", alpha=0.08)
        for method in ("uds", "random", "max_loss", "max_grad"):
            budgets = sorted(b for (label, b) in groups if label == method)
            if not budgets:
                continue
            stats = [_mean_std([r.get(key) for r in groups[(method, b)]]) for b in budgets]
            ax.errorbar(
                [100 * b for b in budgets],
                [m for m, _ in stats],
                yerr=[s for _, s in stats],
                marker="o",
                capsize=3,
                label=method,
                color=METHOD_COLORS[method],
            )
        ax.set_xlabel("budget (% of candidates trained on)")
        ax.set_xticks([12.5, 25])
        ax.set_title(title, fontsize=10)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / names["budget"], dpi=110)
    plt.close(fig)

    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
    for ax, budget in ((axes[0], 0.125), (axes[1], 0.25)):
        for (label, b), rs in sorted(groups.items()):
            if b not in (budget, 1.0) or label not in METHOD_COLORS:
                continue
            seed0 = [r for r in rs if r["seed"] == 0]
            if not seed0:
                continue
            points = [(s["step"], s["eval_loss"]) for s in seed0[0]["curve"] if s["eval_loss"] is not None]
            ax.plot(
                *zip(*points, strict=True),
                marker="o",
                label=f"{label} {b:.1%}",
                color=METHOD_COLORS[label],
                ls="--" if label == "full" else "-",
            )
        ax.set_title(f"held-out answer loss, budget {budget:.1%} (seed 0)", fontsize=10)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    curve = results["settings"].get("pretrain_curve") or []
    if curve:
        axes[2].plot([c["step"] for c in curve], [c["loss"] for c in curve], color="tab:purple")
        axes[2].set_title("pretraining loss of the base model (nats/byte)", fontsize=10)
        axes[2].set_xlabel("pretraining step")
        axes[2].grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(out / names["curves"], dpi=110)
    plt.close(fig)

    cost = results.get("cost") or []
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    if cost:
        depth = max(set(r["layers"] for r in cost), key=lambda n: sum(1 for r in cost if r["layers"] == n))
        by_vocab = sorted((r for r in cost if r["layers"] == depth), key=lambda r: r["vocab"])
        vocab = max(set(r["vocab"] for r in cost), key=lambda v: sum(1 for r in cost if r["vocab"] == v))
        by_depth = sorted((r for r in cost if r["vocab"] == vocab), key=lambda r: r["layers"])
        for ax, rows, key, xlabel in (
            (axes[0], by_vocab, "vocab", f"vocabulary size ({depth} layers)"),
            (axes[1], by_depth, "layers", f"layers (vocabulary {vocab})"),
        ):
            xs = [r[key] for r in rows]
            ax.plot(xs, [r["ratio_vs_full"] for r in rows], marker="o", label="uds 12.5% / full (trainer)")
            ax.plot(xs, [r["ratio_vs_sft"] for r in rows], marker="s", label="uds 12.5% / plain SFT")
            ax.plot(xs, [r["scoring_share"] for r in rows], marker="^", label="scoring share of uds run")
            ax.axhline(0.5, color="gray", ls=":", lw=1)
            if key == "vocab":
                ax.set_xscale("log")
            ax.set_xlabel(xlabel)
            ax.set_ylim(0, 1.05)
            ax.grid(alpha=0.3)
        axes[0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / names["cost"], dpi=110)
    plt.close(fig)
    return names
