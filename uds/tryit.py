"""Try a fine-tune: the same prompt answered by the base model with the job's adapter and without it.

One model in memory: the base answer runs with the adapter disabled (`PeftModel.disable_adapter`), so the two
answers differ only by the adapter. Bounded by `max_new_tokens` and `max_seconds`, and stopped between tokens when
`should_stop()` turns true (a cancelled request).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

import torch

from uds.data import render_plain


def prompt_ids(tokenizer, messages: Sequence[dict]) -> list[int]:
    """The conversation rendered as in training, ending where the assistant's answer starts."""
    if getattr(tokenizer, "chat_template", None):
        return list(
            tokenizer.apply_chat_template(list(messages), add_generation_prompt=True, tokenize=True, return_dict=True)[
                "input_ids"
            ]
        )
    text, _ = render_plain(tokenizer, [*messages, {"role": "assistant", "content": ""}])
    return tokenizer(text, add_special_tokens=False)["input_ids"]


class _StopWhen:
    """A transformers StoppingCriteria (duck-typed): stop every row once `should_stop()` is true."""

    def __init__(self, should_stop: Callable[[], bool]):
        self.should_stop = should_stop

    def __call__(self, input_ids, scores, **kwargs):
        return torch.full((input_ids.shape[0],), bool(self.should_stop()), dtype=torch.bool, device=input_ids.device)


def _answer(
    model,
    tokenizer,
    ids: list[int],
    max_new_tokens: int,
    temperature: float,
    seed: int,
    max_seconds: float,
    should_stop: Callable[[], bool],
) -> dict:
    from transformers import StoppingCriteriaList

    device = next(model.parameters()).device
    prompt = torch.tensor([ids], device=device)
    sampling = dict(do_sample=True, temperature=temperature, top_p=1.0) if temperature > 0 else dict(do_sample=False)
    started = time.monotonic()
    with torch.no_grad(), torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)  # the same seed for both answers: sampling differs only by the adapter
        output = model.generate(
            input_ids=prompt,
            attention_mask=torch.ones_like(prompt),
            max_new_tokens=max_new_tokens,
            max_time=max_seconds,
            stopping_criteria=StoppingCriteriaList([_StopWhen(should_stop)]),
            pad_token_id=tokenizer.pad_token_id,
            **sampling,
        )
    new = output[0, prompt.shape[1] :]
    return {
        "text": tokenizer.decode(new, skip_special_tokens=True),
        "tokens": int(new.shape[0]),
        "seconds": round(time.monotonic() - started, 3),
    }


def generate_pair(
    model,
    tokenizer,
    messages: Sequence[dict],
    max_new_tokens: int = 128,
    temperature: float = 0.0,
    seed: int = 0,
    max_seconds: float = 60.0,
    should_stop: Callable[[], bool] = lambda: False,
) -> dict:
    """{"fine_tuned": answer, "base": answer}, each {"text", "tokens", "seconds"}; `model` is a PeftModel."""
    ids = prompt_ids(tokenizer, messages)
    tuned = _answer(model, tokenizer, ids, max_new_tokens, temperature, seed, max_seconds, should_stop)
    with model.disable_adapter():
        base = _answer(model, tokenizer, ids, max_new_tokens, temperature, seed, max_seconds, should_stop)
    return {"fine_tuned": tuned, "base": base, "prompt_tokens": len(ids)}
