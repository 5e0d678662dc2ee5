"""report.md and the figures of the quality benchmark (run.py) and of its comparisons (compare.py), from their
results.json: per-method means, paired-seed intervals against random and full with a plain verdict each, what each
method picked, the length diagnostic, and the cost of each method against full. The one report writer: run.py's
results add variants of uds (runs whose label is not their method: in the tables, never in the paired
intervals), loss curves and the cost on random-weight models of several shapes."""

from __future__ import annotations

import math
from pathlib import Path

from uds import paired_stats as stats
from uds.comparison import (
    EXACT_MATCH,
    HELD_OUT_LOSS,
    TOKEN_ACCURACY,
    cost_rows,
    groups,
    paired_comparisons,
    pooled_label_counts,
    seconds,
)

METRICS = (HELD_OUT_LOSS, TOKEN_ACCURACY, EXACT_MATCH)


def comparisons(runs: list[dict], budgets: list[float]) -> list[dict]:
    """Every selector at every budget against random (same budget), uds against max_loss, all against full; variants
    (a label other than the method) left out, as they would pair with their method's runs."""
    return paired_comparisons([r for r in runs if not _is_variant(r)], budgets, METRICS)


def _is_variant(run: dict) -> bool:
    return run.get("label", run["method"]) != run["method"]


def by_label(runs: list[dict]) -> dict[tuple[str, float], list[dict]]:
    """Runs by (label, budget) in report order: the main methods as `uds.comparison.groups` orders them, then
    the variants."""
    grouped: dict[tuple[str, float], list[dict]] = {}
    for run in [r for rs in groups([r for r in runs if not _is_variant(r)]).values() for r in rs] + [
        r for r in runs if _is_variant(r)
    ]:
        grouped.setdefault((run.get("label", run["method"]), run["budget"]), []).append(run)
    return grouped


def _mean_sd(values) -> str:
    values = [v for v in values if v is not None]
    if not values:
        return "n/a"
    return f"{stats.mean(values):.3f} ± {stats.sample_sd(values):.3f}"


def _pct(values) -> str:
    values = [v for v in values if v is not None]
    return f"{100 * stats.mean(values):.1f}% ± {100 * stats.sample_sd(values):.1f}" if values else "n/a"


def write(results: dict, out: Path) -> None:
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    runs, settings = results["runs"], results["settings"]
    p = settings["pretrain"]
    seeds = sorted({r["seed"] for r in runs})
    lines = [
        f"# Does selection pay? {settings['task']}, paired seeds",
        "",
        f"Written by `{results['command']}` on {results['date']}; {results.get('total_wall_s', 0) / 60:.1f} min wall time "
        f"(torch threads {results['torch_threads']}, a shared 2-core CPU). Raw numbers: `results.json`.",
        "",
        "## Set-up",
        "",
        _base_line(p),
        f"- **Data**: {settings['n_train']} training rows"
        + (f" ({', '.join(f'{k} {v}' for k, v in settings['train_kinds'].items())})" if settings["train_kinds"] else "")
        + f", {settings['n_eval']} held-out rows; `{Path(settings['train']).name}` / `{Path(settings['eval']).name}`.",
        f"- **Runs**: {settings['epochs']} epoch(s)"
        + (
            f" ({settings['full_epochs']} for full)"
            if settings.get("full_epochs", settings["epochs"]) != settings["epochs"]
            else ""
        )
        + f", lr {settings['learning_rate']:g} ({settings['warmup_ratio']:.0%} warm-up), max length "
        f"{settings['max_seq_len']}, LoRA r=8 on all projections, "
        + (
            "with " + ", ".join(f"{k}={v}" for k, v in settings["overrides"].items()) + ", "
            if settings.get("overrides")
            else ""
        )
        + "otherwise the service's defaults (B=8, about 32 picks per step, alpha "
        f'"paper", loss on all tokens). Seeds {seeds[0] if seeds else "-"}..{seeds[-1] if seeds else "-"}: a seed fixes the candidate order and the '
        "LoRA init for every method (tests/benchmarks/test_pairing.py), so differences are paired per seed.",
        "- **Measure**: on the held-out rows, teacher-forced: mean loss of the answer tokens, answer-token accuracy "
        "(argmax) and exact match (every answer token and the end-of-turn marker is the model's top choice: what "
        "greedy decoding emits). Time = scoring + training seconds.",
        "",
        "## Result (mean ± standard deviation over seeds)",
        "",
        "| method | budget | trained on | held-out answer loss ↓ | answer-token accuracy ↑ | exact match ↑ | time (s) | "
        "of which scoring | seeds |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    before = settings.get("before")
    if before:
        lines.append(
            f"| before fine-tuning | | 0 | {before['eval_loss']:.3f} | {100 * before['eval_token_accuracy']:.1f}% | "
            f"{100 * before['eval_accuracy']:.1f}% | | | |"
        )
    grouped = by_label(runs)
    order = list(grouped)
    for label, budget in order:
        rs = grouped[(label, budget)]
        lines.append(
            f"| {label} | {budget:.1%} | {stats.mean([r['examples_trained'] for r in rs]):.0f} | "
            f"{_mean_sd([r['eval_loss'] for r in rs])} | {_pct([r['eval_token_accuracy'] for r in rs])} | "
            f"{_pct([r['eval_accuracy'] for r in rs])} | {stats.mean([seconds(r) for r in rs]):.1f} | "
            f"{stats.mean([r['time_scoring'] for r in rs]):.1f} | {len(rs)} |"
        )
    rows = comparisons(runs, settings["budgets"])
    lines += [
        "",
        "## Paired differences (method − reference, 95% t-interval over seeds)",
        "",
        'Negative loss differences and positive accuracy differences favour the method. "Indistinguishable" means the '
        "interval contains 0 at this number of seeds, not that the methods are equal.",
        "",
        "| method | budget | against | metric | mean difference | 95% interval | verdict |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        metric, i = row["metric"], row["interval"]
        scale, unit = metric.scale, metric.unit
        lines.append(
            f"| {row['method']} | {row['budget']:.1%} | {row['reference']} | {metric.name} | {i.mean * scale:+.3f}{unit} | "
            f"{i.low * scale:+.3f} to {i.high * scale:+.3f} | {row['verdict']} |"
        )
    lines += ["", "In words (held-out answer loss, the primary metric):", ""]
    lines += [f"- {row['sentence']}" for row in rows if row["metric"] == HELD_OUT_LOSS]
    lines += _kinds_section(grouped, settings)
    lines += _length_section(grouped)
    lines += _cost_section(results)
    lines += _shapes_section(results.get("cost") or [])
    plots = _plots(results, rows, out)
    if plots:
        lines += ["", "## Plots", ""] + [f"![{name}]({file})" for name, file in plots.items()]
    (out / "report.md").write_text("\n".join(lines) + "\n")


def _base_line(p: dict) -> str:
    """The set-up's line on the model trained: a base built here (with its pretraining figures) or a given one."""
    if "val_loss" not in p:
        return (
            f"- **Model**: {p.get('kind', '?')}, {p['parameters'] / 1e6:.1f} M parameters, vocabulary "
            f"{p.get('vocab_size', '?')}; LoRA on it, as the service trains it."
        )
    return (
        f"- **Base model**: Qwen2-style, {p['parameters'] / 1e6:.1f} M parameters, {p.get('kind', '')}; held-out loss "
        f"**{p['val_loss']:.3f} nats/token**"
        + (
            f" against **{p['unigram_loss']:.3f}** for a unigram model (same tokenizer, same held-out text)"
            if "unigram_loss" in p
            else ""
        )
        + (f"; {p['seconds'] / 60:.1f} min to build." if "seconds" in p else ".")
    )


def _kinds_section(grouped, settings) -> list[str]:
    kinds = list(settings["train_kinds"])
    if not kinds:
        return []
    lines = [
        "",
        "## What each method trained on",
        "",
        "Share of the selected rows by kind, pooled over seeds (first row: the training set).",
        "",
        "| method | budget | " + " | ".join(kinds) + " |",
        "|---|---|" + "---|" * len(kinds),
    ]
    total = sum(settings["train_kinds"].values())
    lines.append(
        "| (training set) | | " + " | ".join(f"{settings['train_kinds'][k] / total:.0%}" for k in kinds) + " |"
    )
    for (label, budget), rs in grouped.items():
        if label == "full":
            continue
        counts = pooled_label_counts(rs)
        picked = sum(counts.values()) or 1
        lines.append(
            f"| {label} | {budget:.1%} | " + " | ".join(f"{counts.get(k, 0) / picked:.0%}" for k in kinds) + " |"
        )
    return lines


def _length_section(grouped) -> list[str]:
    """Inside a selection group, does the score just rank by length? Spearman of utility and of the total score
    with the token count in each group (mean over a run's groups), and the selected examples' length."""
    rows = [(key, rs) for key, rs in grouped.items() if any(r.get("mean_length_candidates") for r in rs)]
    rows = [(key, rs) for key, rs in rows if key[0] != "full"]
    if not rows:
        return []
    lines = [
        "",
        "## Length bias",
        "",
        "Mean over a run's selection groups of the rank correlation of utility and of the score with the token "
        "count inside the group, and the selected rows' mean length over the candidates'. A selector that picks \"the "
        'longest" shows a correlation near 1 and a ratio above 1.',
        "",
        "| method | budget | B, k | steps | ρ(utility, length) | ρ(score, length) | selected / candidate length |",
        "|---|---|---|---|---|---|---|",
    ]
    for (label, budget), rs in rows:
        ratios = [
            r["mean_length_selected"] / r["mean_length_candidates"]
            for r in rs
            if r.get("mean_length_selected") and r.get("mean_length_candidates")
        ]
        lines.append(
            f"| {label} | {budget:.1%} | {rs[0].get('candidate_batch_size')}, {rs[0].get('k')} | {rs[0].get('steps')} | "
            f"{_mean_sd([r.get('spearman_utility_length') for r in rs])} | "
            f"{_mean_sd([r.get('spearman_score_length') for r in rs])} | {_mean_sd(ratios)} |"
        )
    return lines


def _cost_section(results) -> list[str]:
    p = results["settings"]["pretrain"]
    lines = [
        "",
        "## Cost against full",
        "",
        f"Same run, same machine; at the base's vocabulary ({p.get('vocab_size', '?')}), mean over seeds:",
        "",
        "| method | budget | time (s) | of full | scoring share |",
        "|---|---|---|---|---|",
    ]
    main = [r for r in results["runs"] if not _is_variant(r)]
    for row in sorted(cost_rows(main), key=lambda r: (r["method"] != "full", r["budget"], r["method"])):
        lines.append(
            f"| {row['method']} | {row['budget']:.1%} | {row['seconds']:.1f} | "
            + (f"{row['ratio']:.2f}" if row["ratio"] is not None else "n/a")
            + f" | {row['scoring_share']:.0%} |"
        )
    for cost in results.get("cost", []):
        if "timings" not in cost:
            continue
        timings = cost["timings"]
        full = timings.get("full@1")
        if not full:
            continue
        full_s = full["time_scoring"] + full["time_training"]
        lines += [
            "",
            f"At vocabulary {cost['vocab']} (the base with its output layer widened, new rows random; one epoch over the first "
            f"{cost['rows']} rows, seed 0):",
            "",
            "| method | budget | time (s) | of full | scoring share |",
            "|---|---|---|---|---|",
        ]
        for t in timings.values():
            seconds = t["time_scoring"] + t["time_training"]
            lines.append(
                f"| {t['method']} | {t['budget']:.1%} | {seconds:.1f} | {seconds / full_s:.2f} | {t['time_scoring'] / seconds if seconds else 0:.0%} |"
            )
    return lines


def _shapes_section(cost: list[dict]) -> list[str]:
    """The quality benchmark's cost part: uds 12.5% against full on random-weight models of several shapes."""
    shapes = [row for row in cost if "ratio_vs_full" in row]
    if not shapes:
        return []
    lines = [
        "",
        f"Random-weight models of other shapes (d={shapes[0]['hidden']}, same data and B, a few steps each; only the "
        "time matters here):",
        "",
        "| vocabulary | layers | uds 12.5% (s) | of which scoring | full (s) | plain SFT (s) | uds / full | uds / plain SFT |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for row in shapes:
        u, f = row["uds"], row["full"]
        lines.append(
            f"| {row['vocab']} | {row['layers']} | {u['time_scoring'] + u['time_training']:.1f} | "
            f"{row['scoring_share']:.0%} | {f['time_scoring'] + f['time_training']:.1f} | {f['time_training']:.1f} | "
            f"{row['ratio_vs_full']:.2f} | {row['ratio_vs_sft']:.2f} |"
        )
    return lines


# ---------------------------------------------------------------------------------------------------- plots

METHOD_COLORS = {
    "full": "black",
    "uds": "tab:red",
    "random": "tab:gray",
    "max_loss": "tab:blue",
    "max_grad": "tab:green",
}
VERDICT_COLORS = {"better": "tab:green", "worse": "tab:red", "indistinguishable": "tab:gray"}


def _plots(results: dict, rows: list[dict], out: Path) -> dict[str, str]:
    """The report's figures (file names by caption): held-out loss against budget, the paired differences with
    their intervals, the time split of every method; loss curves and the cost by shape where the results have them.
    Drawn from the same numbers as the tables."""
    runs = results["runs"]
    if not runs:
        return {}
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    main = [r for r in runs if not _is_variant(r)]
    figures = {
        "loss_vs_budget.png": ("held-out answer loss against budget", _loss_vs_budget(plt, main)),
        "differences.png": ("paired differences in held-out answer loss", _differences(plt, rows)),
        "time_split.png": ("time split against full", _time_split(plt, main)),
    }
    if any(step.get("eval_loss") is not None for r in main for step in r.get("curve") or []):
        figures["loss_curves.png"] = ("held-out loss during training (seed 0)", _curves(plt, main))
    shapes = [row for row in results.get("cost") or [] if "ratio_vs_full" in row]
    if shapes:
        figures["cost.png"] = ("cost against full by model shape", _shapes(plt, shapes))
    plots = {}
    for file, (caption, figure) in figures.items():
        plots[caption] = file
        figure.tight_layout()
        figure.savefig(out / file, dpi=110)
        plt.close(figure)
    return plots


def _loss_vs_budget(plt, runs):
    figure, ax = plt.subplots(figsize=(6, 4))
    grouped = groups(runs)
    full = [r["eval_loss"] for r in grouped.get(("full", 1.0), []) if r.get("eval_loss") is not None]
    if full:
        m, sd = stats.mean(full), stats.sample_sd(full)
        ax.axhline(m, color="black", lw=1, ls="--", label="full (100%)")
        ax.axhspan(m - sd, m + sd, color="black", alpha=0.08)
    for method in dict.fromkeys(method for method, _ in grouped if method != "full"):
        budgets = sorted(b for (name, b) in grouped if name == method)
        points = [[r["eval_loss"] for r in grouped[(method, b)] if r.get("eval_loss") is not None] for b in budgets]
        ax.errorbar(
            [100 * b for b in budgets],
            [stats.mean(p) for p in points],
            yerr=[stats.sample_sd(p) for p in points],
            marker="o",
            capsize=3,
            label=method,
            color=METHOD_COLORS.get(method),
        )
    ax.set_xlabel("budget (% of candidates trained on)")
    ax.set_ylabel("held-out answer loss (nats), mean ± sd over seeds")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return figure


def _differences(plt, rows):
    """A forest plot: each selector's paired difference against each reference, with its 95% interval."""
    shown = [row for row in rows if row["metric"] == HELD_OUT_LOSS]
    figure, ax = plt.subplots(figsize=(7, 0.35 * len(shown) + 1.2))
    for y, row in enumerate(reversed(shown)):
        i = row["interval"]
        low, high = (i.low, i.high) if math.isfinite(i.low) else (i.mean, i.mean)
        color = VERDICT_COLORS[row["verdict"]]
        ax.plot([low, high], [y, y], color=color, lw=2)
        ax.plot([i.mean], [y], "o", color=color)
    ax.axvline(0.0, color="black", lw=1)
    ax.set_yticks(range(len(shown)))
    ax.set_yticklabels([f"{r['method']} {r['budget']:.1%} − {r['reference']}" for r in reversed(shown)], fontsize=8)
    ax.set_xlabel("held-out answer loss difference (nats; < 0 favours the method), 95% interval")
    ax.grid(alpha=0.3, axis="x")
    return figure


def _time_split(plt, runs):
    """Stacked bars: scoring and training seconds of each method, mean over seeds, full first."""
    rows = cost_rows(runs)
    figure, ax = plt.subplots(figsize=(7, 4))
    labels = [f"{r['method']}\n{r['budget']:.1%}" for r in rows]
    scoring = [r["seconds"] * r["scoring_share"] for r in rows]
    training = [r["seconds"] - s for r, s in zip(rows, scoring, strict=True)]
    ax.bar(labels, scoring, color="tab:orange", label="scoring")
    ax.bar(labels, training, bottom=scoring, color="tab:blue", label="training")
    ax.set_ylabel("seconds per run (mean over seeds)")
    ax.tick_params(axis="x", labelsize=8)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3, axis="y")
    return figure


def _curves(plt, runs):
    """Held-out loss along the run of seed 0, one panel per budget, full dashed in each."""
    budgets = sorted({r["budget"] for r in runs if r["method"] != "full"})
    figure, axes = plt.subplots(1, max(1, len(budgets)), figsize=(6 * max(1, len(budgets)), 4), squeeze=False)
    for ax, budget in zip(axes[0], budgets, strict=False):
        for run in runs:
            if run["seed"] != 0 or run["budget"] not in (budget, 1.0):
                continue
            points = [(s["step"], s["eval_loss"]) for s in run.get("curve") or [] if s.get("eval_loss") is not None]
            if points:
                ax.plot(
                    *zip(*points, strict=True),
                    marker="o",
                    label=f"{run['method']} {run['budget']:.1%}",
                    color=METHOD_COLORS.get(run["method"]),
                    ls="--" if run["method"] == "full" else "-",
                )
        ax.set_title(f"held-out answer loss, budget {budget:.1%} (seed 0)", fontsize=10)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    return figure


def _shapes(plt, shapes):
    """uds 12.5% against full (and plain SFT), and the scoring share, by vocabulary and by depth."""
    figure, axes = plt.subplots(1, 2, figsize=(10, 4))
    depth = max({r["layers"] for r in shapes}, key=lambda n: sum(1 for r in shapes if r["layers"] == n))
    vocab = max({r["vocab"] for r in shapes}, key=lambda v: sum(1 for r in shapes if r["vocab"] == v))
    for ax, key, rows, xlabel in (
        (axes[0], "vocab", [r for r in shapes if r["layers"] == depth], f"vocabulary size ({depth} layers)"),
        (axes[1], "layers", [r for r in shapes if r["vocab"] == vocab], f"layers (vocabulary {vocab})"),
    ):
        rows = sorted(rows, key=lambda r: r[key])
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
    return figure
