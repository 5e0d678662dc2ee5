"""The selection methods: the one registry every list of them derives from.

A method is a class in `uds/selectors.py` (marked `@register`, found by its `name`) and one line
here: its name and how people read it. The config's choices, the API's and the dashboard's lists (through the
OpenAPI schema), the comparison plan and the benchmarks take the names from here. Torch-free, so the API can
validate a job without loading PyTorch. docs/INTERFACES.md ("Adding a selector") walks through an example.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Method:
    name: str  # the `method` setting's value
    label: str  # how the dashboard names it
    short: str  # in tables
    help: str  # one sentence: what it trains on
    selects: bool = True  # False for `full`: no selection, the reference a comparison measures savings against


REGISTRY: tuple[Method, ...] = (
    Method(
        "uds",
        "UDS (utility + diversity)",
        "UDS",
        "Scores each candidate by utility (nuclear norm of its logits) plus α × diversity against recently "
        "selected examples; trains on the top k.",
    ),
    Method("random", "Random", "random", "Picks k candidates uniformly at random: the baseline to beat."),
    Method("max_loss", "Max loss", "max loss", "Picks the k candidates with the highest mean token loss."),
    Method(
        "max_grad",
        "Max gradient",
        "max grad",
        "Picks the k candidates with the largest gradient norm with respect to the logits.",
    ),
    Method(
        "full",
        "Full data (no selection)",
        "full data",
        "Trains on every candidate (budget 100 %): the reference that savings are measured against.",
        selects=False,
    ),
)

METHODS: tuple[str, ...] = tuple(m.name for m in REGISTRY)
# The methods that select (everything but `full`): what a comparison compares against random and full.
SELECTORS: tuple[str, ...] = tuple(m.name for m in REGISTRY if m.selects)
