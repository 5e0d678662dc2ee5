"""The finished adapter folder as a user receives it: `adapter_config.json` naming the model the user asked for, and
a README that is a real model card. Torch-free (plain files).

PEFT writes `base_model_name_or_path` as the path the model was loaded from, which on a server is a private folder
(`/data/models/...`) that means nothing to the user; the name they asked for (a hub id or a registered name) is
what `PeftModel.from_pretrained` on their machine needs. PEFT's README is an empty template.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path


@dataclass
class CardInfo:
    base_model: str
    dataset: str
    examples: int
    method: str
    budget: float
    steps: int
    final_loss: float | None = None
    final_eval_loss: float | None = None
    lora_r: int | None = None
    lora_alpha: int | None = None
    lora_targets: list[str] | None = None
    name: str | None = None  # the fine-tuned model's name on the service, when there is one


def finalize_adapter(adapter_dir: str | os.PathLike, info: CardInfo) -> None:
    adapter_dir = Path(adapter_dir)
    set_base_model(adapter_dir, info.base_model)
    _write(adapter_dir / "README.md", model_card(info))


def set_base_model(adapter_dir: Path, base_model: str) -> None:
    path = adapter_dir / "adapter_config.json"
    config = json.loads(path.read_text())
    config["base_model_name_or_path"] = base_model
    _write(path, json.dumps(config, indent=2, sort_keys=True) + "\n")


def _write(path: Path, text: str) -> None:
    temp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    temp.write_text(text, encoding="utf-8")
    os.replace(temp, path)


def _number(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.4f}"


def model_card(info: CardInfo) -> str:
    method = (
        "UDS (utility-diversity online batch selection, arXiv 2510.16882)"
        if info.method == "uds"
        else f"{info.method} selection"
    )
    title = info.name or f"LoRA adapter for {info.base_model}"
    lora = f"r={info.lora_r}, alpha={info.lora_alpha}, targets {', '.join(info.lora_targets or [])}"
    return f"""---
base_model: {info.base_model}
library_name: peft
tags: [lora, uds]
---

# {title}

A LoRA adapter for `{info.base_model}`, fine-tuned on `{info.dataset}` ({info.examples} examples).

| | |
|---|---|
| base model | `{info.base_model}` |
| dataset | `{info.dataset}`, {info.examples} examples |
| method | {method} |
| budget | {info.budget:g} (fraction of the candidates trained on) |
| optimizer steps | {info.steps} |
| final training loss | {_number(info.final_loss)} |
| final evaluation loss | {_number(info.final_eval_loss)} |
| LoRA | {lora} |

## Load it

```python
from transformers import AutoModelForCausalLM, AutoTokenizer
from peft import PeftModel

base = AutoModelForCausalLM.from_pretrained("{info.base_model}")
tokenizer = AutoTokenizer.from_pretrained("path/to/this/folder")
model = PeftModel.from_pretrained(base, "path/to/this/folder")
```

`model.merge_and_unload()` folds the adapter into the base weights (the service's merged export does that for you).
"""
