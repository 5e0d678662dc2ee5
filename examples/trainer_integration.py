"""UDS online batch selection inside a transformers Trainer or a TRL SFTTrainer, on uds-tiny (downloads nothing).

    python examples/trainer_integration.py                  # transformers.Trainer on tokenized rows
    python examples/trainer_integration.py --trainer sft    # trl.SFTTrainer on chat messages, LoRA via peft_config

uds-tiny is built into --models-dir on first use. Each optimizer step scores --groups groups of --group-size
candidates and trains on `budget` of each; the selection statistics appear in the Trainer's logs (uds/...).
"""

from __future__ import annotations

import argparse
import os

from transformers import TrainingArguments

from uds.config import DEFAULT_LORA_TARGETS
from uds.data import TokenizedExample, collate, tokenize_examples
from uds.formats import Example, normalise_record
from uds.integrations import UDSConfig, UDSTrainer
from uds.models import TINY_MODEL, add_lora, load_model_and_tokenizer, resolve_model
from uds.toy_data import make_rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trainer", choices=("hf", "sft"), default="hf")
    parser.add_argument("--output-dir", default="uds-example")
    parser.add_argument("--models-dir", default=None, help="where uds-tiny is built (default: <output-dir>/models)")
    parser.add_argument("--examples", type=int, default=256)
    parser.add_argument("--group-size", type=int, default=8)
    parser.add_argument("--groups", type=int, default=4, help="groups per optimizer step (gradient accumulation)")
    parser.add_argument("--budget", type=float, default=0.25)
    parser.add_argument("--max-steps", type=int, default=20)
    args = parser.parse_args()

    model_dir = resolve_model(TINY_MODEL, models_dir=args.models_dir or os.path.join(args.output_dir, "models"))
    model, tokenizer = load_model_and_tokenizer(model_dir, device="cpu")
    chat_rows = make_rows(args.examples, task="reverse", seed=0)
    uds = UDSConfig(budget=args.budget, candidate_batch_size=args.group_size, alpha="paper", max_seq_len=128)
    common = dict(
        output_dir=os.path.join(args.output_dir, args.trainer),
        per_device_train_batch_size=args.group_size,
        gradient_accumulation_steps=args.groups,
        max_steps=args.max_steps,
        learning_rate=3e-3,
        logging_steps=5,
        save_steps=10,
        report_to="none",
        use_cpu=True,
    )
    if args.trainer == "sft":
        trainer = _sft_trainer(model, tokenizer, chat_rows, common, uds)
    else:
        trainer = _hf_trainer(model, tokenizer, chat_rows, common, uds)
    trainer.train()
    trainer.save_model(os.path.join(args.output_dir, args.trainer, "adapter"))


def _hf_trainer(model, tokenizer, chat_rows, common, uds):
    # A plain Trainer takes tokenized rows and a collator that pads them to the right (labels -100 on padding).
    examples = [
        Example(row=i, line=i + 1, messages=normalise_record(record, "chat")) for i, record in enumerate(chat_rows)
    ]
    items = tokenize_examples(examples, tokenizer, max_seq_len=128)
    rows = [{"input_ids": item.input_ids, "labels": item.labels} for item in items]

    def pad(features):
        return collate([TokenizedExample(0, f["input_ids"], f["labels"]) for f in features], tokenizer.pad_token_id)

    model = add_lora(model, r=8, alpha=16, targets=DEFAULT_LORA_TARGETS)
    return UDSTrainer(model=model, args=TrainingArguments(**common), train_dataset=rows, data_collator=pad, uds=uds)


def _sft_trainer(model, tokenizer, chat_rows, common, uds):
    # TRL tokenizes the chat rows with the model's chat template and wraps the model in LoRA itself.
    from datasets import Dataset
    from peft import LoraConfig
    from trl import SFTConfig

    from uds.integrations import UDSSFTTrainer

    config = SFTConfig(**common, max_length=128, bf16=False)
    lora = LoraConfig(r=8, lora_alpha=16, target_modules=list(DEFAULT_LORA_TARGETS), task_type="CAUSAL_LM")
    return UDSSFTTrainer(
        model=model,
        args=config,
        train_dataset=Dataset.from_list(chat_rows),
        processing_class=tokenizer,
        peft_config=lora,
        uds=uds,
    )


if __name__ == "__main__":
    main()
