"""A `UDSTrainer` run on uds-tiny, as one process or as one rank of a torchrun / accelerate launch job, that dumps
what the distributed tests compare: each rank writes `<out>/rank<R>.pt` with its recorded selections, selector
state, counters, training logs and LoRA weights.

    python -m torch.distributed.run --standalone --nproc-per-node 2 -m tests.utils.trainer_ranks \\
        --model DIR --data train.jsonl --output-dir OUT --out DUMPS --accumulation 2

(a module, from the repository root: run as a file, its folder would shadow the `datasets` package).

Settings are the test's: seed 7, groups of 4, budget 0.5 (k = 2), LoRA r 4 without dropout, float32 on the CPU;
`--trainer sft` runs a `UDSSFTTrainer` on the same rows.
"""

from __future__ import annotations

import argparse
import os

import torch
from transformers import TrainingArguments

from uds.config import DEFAULT_LORA_TARGETS
from uds.data import TokenizedExample, collate, tokenize_examples
from uds.formats import load_examples
from uds.integrations import UDSConfig, UDSTrainer
from uds.models import add_lora, load_model_and_tokenizer

SEED, GROUP_SIZE, BUDGET, MAX_LEN = 7, 4, 0.5, 64


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", required=True)
    parser.add_argument("--data", required=True)
    parser.add_argument("--output-dir", required=True, help="the Trainer's output_dir (checkpoints)")
    parser.add_argument("--out", required=True, help="folder of the rank<R>.pt dumps")
    parser.add_argument("--accumulation", type=int, required=True, help="gradient_accumulation_steps per process")
    parser.add_argument("--epochs", type=float, default=2.0)
    parser.add_argument("--save-steps", type=int, default=0)
    parser.add_argument("--resume", default=None, help="a checkpoint folder to resume from")
    parser.add_argument("--trainer", choices=("trainer", "sft"), default="trainer")
    args = parser.parse_args()

    trainer = build_trainer(
        args.model, args.data, args.output_dir, args.accumulation, args.epochs, args.save_steps, args.trainer
    )
    trainer.train(resume_from_checkpoint=args.resume)

    os.makedirs(args.out, exist_ok=True)
    model = trainer.model
    dump = {
        "world_size": trainer.args.world_size,
        "selections": trainer.selections,
        "selector": trainer.uds_selector.state_dict(),
        "counters": dict(trainer.uds_counters),
        "logs": [entry for entry in trainer.state.log_history if "loss" in entry],
        "adapter": {
            name: parameter.detach().clone() for name, parameter in model.named_parameters() if parameter.requires_grad
        },
    }
    torch.save(dump, os.path.join(args.out, f"rank{trainer.args.process_index}.pt"))


def build_trainer(
    model_dir: str,
    data: str,
    output_dir: str,
    accumulation: int,
    epochs: float = 2.0,
    save_steps: int = 0,
    kind: str = "trainer",
):
    """A `UDSTrainer` on pre-tokenized rows, or (`kind` "sft") a `UDSSFTTrainer` on the same rows as a dataset."""
    torch.manual_seed(SEED)  # the LoRA A matrices: the same draw in every process
    model, tokenizer = load_model_and_tokenizer(model_dir, device="cpu")
    model = add_lora(model, r=4, alpha=8, dropout=0.0, targets=DEFAULT_LORA_TARGETS, init="gaussian")
    items = tokenize_examples(load_examples(data), tokenizer, MAX_LEN, "all")
    rows = [{"input_ids": item.input_ids, "labels": item.labels} for item in items]
    settings = dict(
        output_dir=output_dir,
        per_device_train_batch_size=GROUP_SIZE,
        gradient_accumulation_steps=accumulation,
        num_train_epochs=epochs,
        learning_rate=3e-3,
        weight_decay=0.0,
        max_grad_norm=1.0,
        lr_scheduler_type="linear",
        optim="adamw_torch",
        seed=SEED,
        report_to="none",
        logging_steps=1,
        save_strategy="steps" if save_steps else "no",
        save_steps=save_steps or 500,
        use_cpu=True,
        dataloader_pin_memory=False,
        disable_tqdm=True,
    )
    uds = UDSConfig(budget=BUDGET, max_seq_len=MAX_LEN, record_selections=True)
    if kind == "sft":
        import datasets
        import trl

        from uds.integrations import UDSSFTTrainer

        return UDSSFTTrainer(
            model=model,
            # SFTConfig turns bf16 autocast on by default, on the CPU too.
            args=trl.SFTConfig(**settings, max_length=MAX_LEN, bf16=False),
            train_dataset=datasets.Dataset.from_list(rows),
            processing_class=tokenizer,
            uds=uds,
        )
    return UDSTrainer(
        model=model,
        args=TrainingArguments(**settings),
        train_dataset=rows,
        data_collator=lambda features: collate(
            [TokenizedExample(0, f["input_ids"], f["labels"]) for f in features], tokenizer.pad_token_id
        ),
        uds=uds,
    )


if __name__ == "__main__":
    main()
