"""Evaluation on an optional held-out file: mean answer-token loss and exact-match accuracy of greedy answers.

The answer is the last assistant turn. Its span is read off the answer-only labels, so evaluation uses exactly
the tokenisation training uses, whatever template the tokenizer has.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from uds.data import TokenizedExample, collate, tokenize_examples
from uds.device import autocast
from uds.formats import Example

EVAL_BATCH = 8


@dataclass
class EvalItem:
    scored: TokenizedExample  # full example, answer-only labels
    prompt_ids: list[int]  # everything before the last answer
    reference_ids: list[int]  # the last answer's tokens


@dataclass
class EvalSet:
    items: list[EvalItem]
    max_new_tokens: int

    @classmethod
    def build(cls, examples: list[Example], tokenizer, max_seq_len: int, max_new_tokens: int) -> "EvalSet":
        tokenized = tokenize_examples(examples, tokenizer, max_seq_len, loss_on="answer")
        return cls([item for item in map(_split_answer, tokenized) if item is not None], max_new_tokens)


def _split_answer(item: TokenizedExample) -> EvalItem | None:
    labelled = [i for i, label in enumerate(item.labels) if label != -100]
    if not labelled:
        return None  # the answer was truncated away: nothing to score
    end = labelled[-1] + 1
    start = end - 1
    while start > 0 and item.labels[start - 1] != -100:
        start -= 1
    if start == 0:
        return None
    return EvalItem(item, item.input_ids[:start], item.input_ids[start:end])


def evaluate(model, tokenizer, eval_set: EvalSet, device: torch.device) -> dict[str, float]:
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), autocast(device):
            loss = _answer_loss(model, tokenizer, eval_set, device)
            accuracy = _exact_match(model, tokenizer, eval_set, device)
    finally:
        model.train(was_training)
    return {"eval_loss": loss, "eval_accuracy": accuracy}


def _answer_loss(model, tokenizer, eval_set: EvalSet, device: torch.device) -> float:
    summed, count = 0.0, 0
    for start in range(0, len(eval_set.items), EVAL_BATCH):
        chunk = [item.scored for item in eval_set.items[start : start + EVAL_BATCH]]
        batch = {key: value.to(device) for key, value in collate(chunk, tokenizer.pad_token_id).items()}
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits[:, :-1].float()
        labels = batch["labels"][:, 1:]
        summed += F.cross_entropy(
            logits.reshape(-1, logits.shape[-1]), labels.reshape(-1), ignore_index=-100, reduction="sum"
        ).item()
        count += int((labels != -100).sum())
    return summed / max(1, count)


def _exact_match(model, tokenizer, eval_set: EvalSet, device: torch.device) -> float:
    if not eval_set.items:
        return 0.0
    hits = 0
    for item in eval_set.items:
        prompt = torch.tensor([item.prompt_ids], device=device)
        output = model.generate(
            input_ids=prompt,
            attention_mask=torch.ones_like(prompt),
            max_new_tokens=min(eval_set.max_new_tokens, len(item.reference_ids) + 8),
            do_sample=False,
            pad_token_id=tokenizer.pad_token_id,
            eos_token_id=_stop_ids(tokenizer),
        )
        generated = tokenizer.decode(output[0, prompt.shape[1] :], skip_special_tokens=True)
        reference = tokenizer.decode(item.reference_ids, skip_special_tokens=True)
        hits += int(_normalise(generated) == _normalise(reference))
    return hits / len(eval_set.items)


def _stop_ids(tokenizer) -> list[int]:
    # Chat templates end a turn with their own marker, which is not always the tokenizer's EOS.
    ids = {tokenizer.eos_token_id}
    for marker in ("<|im_end|>", "<|eot_id|>", "<|end|>"):
        token_id = tokenizer.convert_tokens_to_ids(marker)
        if isinstance(token_id, int) and token_id != tokenizer.unk_token_id:
            ids.add(token_id)
    return sorted(i for i in ids if i is not None)


def _normalise(text: str) -> str:
    return " ".join(text.split())
