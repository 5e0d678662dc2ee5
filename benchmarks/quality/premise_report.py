"""report.md and the scatter plots of the premise test (benchmarks.quality.premise), from its results.json."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

from benchmarks.quality import correlation as corr

SCORE_NAMES = {
    "utility": "utility (nuclear norm of the logits)",
    "diversity": "diversity (mean distance to the memory)",
    "loss": "the example's loss (max_loss)",
    "grad_norm": "gradient-norm proxy (max_grad)",
}
TARGET_NAMES = {"held_out_decrease": "held-out loss decrease", "own_decrease": "own loss decrease"}
KIND_COLORS = {
    "clean": "tab:green",
    "duplicate": "tab:olive",
    "truncated": "tab:orange",
    "off_topic": "tab:purple",
    "wrong": "tab:red",
}


def _interval(row: dict) -> str:
    return f"{row['value']:+.2f} [{row['low']:+.2f}, {row['high']:+.2f}]"


def _verdict(row: dict) -> str:
    if row["low"] > 0:
        return "positive"
    if row["high"] < 0:
        return "negative"
    return "not distinguishable from 0"


def write(results: dict, out: Path) -> None:
    out = Path(out)
    settings = results["settings"]
    lines = [
        "# The selection premise: does a score predict what one step on the example does?",
        "",
        f"Written by `{results['command']}` on {results['date']}; {results.get('total_wall_s', 0) / 60:.1f} min "
        "(a shared 2-core CPU). Raw numbers, every probe: `results.json`.",
        "",
        f"- **Model**: `{settings['model']}`, LoRA r={settings['lora_r']} on all projections, AdamW lr "
        f"{settings['learning_rate']:g}, loss on all tokens, {settings['loss_weighting']} loss weighting.",
        f"- **Probes**: {len(results['lengths'])} training rows of the noisy arithmetic task "
        f"({_kind_mix(results['kinds'])}), {min(results['lengths'])}-{max(results['lengths'])} tokens; for each "
        "alone, one optimizer step from the state, then the adapter and the optimizer state restored exactly.",
        f"- **Targets**: the decrease of the mean answer-token loss on {settings['held_out']} clean held-out rows "
        "(positive = the step helped), and of the example's own loss.",
        f"- **Scores** at that state, as selection measures them: utility, diversity (against a memory of "
        f"{settings['memory']} other training rows), the example's mean token loss and the max_grad proxy.",
        "- **Length controls**: partial correlation given the token count, and Spearman inside the length groups "
        "selection forms (B=8 rows of near-equal length, group means removed). Intervals: bootstrap 95%, "
        f"{settings['resamples']} resamples of the probes.",
    ]
    for state, data in results["states"].items():
        lines += _state_section(state, data, results, settings, out)
    (out / "report.md").write_text("\n".join(lines) + "\n")


def _kind_mix(kinds: list[str]) -> str:
    counts: dict[str, int] = defaultdict(int)
    for kind in kinds:
        counts[kind] += 1
    return ", ".join(f"{kind} {n}" for kind, n in counts.items())


def _state_section(state: str, data: dict, results: dict, settings: dict, out: Path) -> list[str]:
    title = "the starting adapter" if state == "start" else "halfway through a full-data run"
    lines = [
        "",
        f"## From {title}",
        "",
        f"Held-out loss at this state {data['held_out_before']:.4f} nats/token; a single step changes it by "
        f"{min(data['held_out_decrease']):+.5f} to {max(data['held_out_decrease']):+.5f} (decrease).",
        "",
        "| score | target | Pearson | Spearman | partial Pearson given length | partial Spearman given length | "
        "Spearman within length groups |",
        "|---|---|---|---|---|---|---|",
    ]
    by_key = {(r["score"], r["target"], r["statistic"]): r for r in data["correlations"]}
    for score in SCORE_NAMES:
        for target in TARGET_NAMES:
            cells = [
                _interval(by_key[(score, target, statistic)])
                for statistic in (
                    "pearson",
                    "spearman",
                    "partial pearson | length",
                    "partial spearman | length",
                    "within length groups (spearman)",
                )
            ]
            lines.append(f"| {score} | {TARGET_NAMES[target]} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "Spearman with the token count: "
        + ", ".join(f"{name} {value:+.2f}" for name, value in data["length_correlations"].items())
        + ".",
        "",
        "In words (held-out loss decrease, length controlled within groups):",
        "",
    ]
    for score, name in SCORE_NAMES.items():
        row = by_key[(score, "held_out_decrease", "within length groups (spearman)")]
        raw = by_key[(score, "held_out_decrease", "spearman")]
        lines.append(
            f"- {name}: raw Spearman {_interval(raw)} ({_verdict(raw)}); within length groups {_interval(row)} "
            f"({_verdict(row)})."
        )
    lines += ["", "Mean held-out loss decrease of one step, by kind of row:", "", "| kind | rows | mean decrease |"]
    lines.append("|---|---|---|")
    by_kind: dict[str, list[float]] = defaultdict(list)
    for kind, value in zip(results["kinds"], data["held_out_decrease"], strict=True):
        by_kind[kind].append(value)
    for kind, values in by_kind.items():
        lines.append(f"| {kind} | {len(values)} | {sum(values) / len(values):+.5f} |")
    plot = _scatter(state, data, results, out)
    lines += ["", f"![scores against the held-out loss decrease, {title}]({plot})"]
    return lines


def _scatter(state: str, data: dict, results: dict, out: Path) -> str:
    """One panel per score: the score against the held-out loss decrease, coloured by kind, with its Spearman."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    name = f"premise_{state}.png"
    figure, axes = plt.subplots(1, len(SCORE_NAMES), figsize=(4.2 * len(SCORE_NAMES), 3.8))
    y = data["held_out_decrease"]
    for ax, (score, label) in zip(axes, SCORE_NAMES.items(), strict=True):
        x = data["scores"][score]
        for kind, color in KIND_COLORS.items():
            points = [(a, b) for a, b, k in zip(x, y, results["kinds"], strict=True) if k == kind]
            if points:
                ax.scatter(*zip(*points, strict=True), s=12, color=color, label=kind, alpha=0.8)
        ax.axhline(0.0, color="black", lw=0.8)
        ax.set_title(f"{label}\nSpearman {corr.spearman(x, y):+.2f}", fontsize=9)
        ax.set_xlabel(score)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("held-out loss decrease after one step")
    axes[0].legend(fontsize=7)
    figure.tight_layout()
    figure.savefig(out / name, dpi=100)
    plt.close(figure)
    return name
