"""Try a fine-tune: the same prompt answered by the base model with the job's adapter and without it.

One model in memory: the base answer runs with the adapter disabled (`PeftModel.disable_adapter`), so the two
answers differ only by the adapter. Everything before the first token is bounded too, since a prompt may be up to
the request body cap (about a million characters):

- the prompt is cut to the model's context minus `max_new_tokens` tokens, from the left: the oldest turns go first,
  then the oldest part of the earliest kept message, so what remains is still the chat template's rendering of whole
  turns ending in the assistant's prompt (`fit_prompt`);
- the prefill runs in chunks of PREFILL_CHUNK tokens into the key/value cache, so its memory is one chunk's
  attention against the context, and `should_stop()` (a cancelled request) and `max_seconds` are checked between
  chunks as they are between tokens.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

import torch

from uds.data import render_plain

PREFILL_CHUNK = 256
# Before tokenizing, the conversation is cut to this many characters per token of budget, from the left: no
# tokenizer we know has tokens longer than this, so the cut keeps every token that could fit and bounds the work
# of tokenizing a prompt of any size.
CHARS_PER_TOKEN = 32


class PromptTooLong(ValueError):
    """Not even the chat template around an empty message fits the budget."""


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


def context_length(model, tokenizer) -> int:
    """Positions the model was built for (config), else the tokenizer's limit, else a conservative 2048."""
    config = getattr(model, "config", None)
    for value in (getattr(config, "max_position_embeddings", None), getattr(tokenizer, "model_max_length", None)):
        if isinstance(value, int) and 0 < value < 10**7:  # tokenizers without a limit report 1e30
            return value
    return 2048


def _keep_last_chars(messages: Sequence[dict], chars: int) -> list[dict]:
    kept: list[dict] = []
    for message in reversed(messages):
        if chars <= 0:
            break
        content = message["content"]
        kept.append({**message, "content": content[-chars:]})
        chars -= len(content)
    return kept[::-1]


def fit_prompt(tokenizer, messages: Sequence[dict], budget: int) -> tuple[list[int], bool]:
    """(ids, truncated): the conversation in at most `budget` tokens, cut from the left as the module says."""
    fitted = _keep_last_chars(messages, budget * CHARS_PER_TOKEN)
    truncated = fitted != list(messages)
    while True:
        ids = prompt_ids(tokenizer, fitted)
        over = len(ids) - budget
        if over <= 0:
            return ids, truncated
        truncated = True
        first = tokenizer(fitted[0]["content"], add_special_tokens=False)["input_ids"]
        if len(first) <= over and len(fitted) > 1:
            fitted = fitted[1:]
        elif not first:
            raise PromptTooLong(f"the chat template alone takes {len(ids)} tokens, above the budget of {budget}")
        else:
            # A cut inside a multi-byte character decodes to U+FFFD; dropping it keeps every pass shorter.
            rest = tokenizer.decode(first[over:], skip_special_tokens=False).lstrip("\ufffd")
            fitted = [{**fitted[0], "content": rest}, *fitted[1:]]


class _StopWhen:
    """A transformers StoppingCriteria (duck-typed): stop every row once `should_stop()` is true."""

    def __init__(self, should_stop: Callable[[], bool]):
        self.should_stop = should_stop

    def __call__(self, input_ids, scores, **kwargs):
        return torch.full((input_ids.shape[0],), bool(self.should_stop()), dtype=torch.bool, device=input_ids.device)


def _prefill(model, prompt, deadline: float, should_stop: Callable[[], bool], chunk: int):
    """The key/value cache of all prompt tokens but the last (generate runs that one), chunk by chunk; None when
    stopped or out of time before the end."""
    from transformers import DynamicCache

    cache = DynamicCache()
    for start in range(0, prompt.shape[1] - 1, chunk):
        if should_stop() or time.monotonic() >= deadline:
            return None
        model(input_ids=prompt[:, start : min(start + chunk, prompt.shape[1] - 1)], cache=cache, use_cache=True)
    return cache


def _answer(
    model,
    tokenizer,
    ids: list[int],
    max_new_tokens: int,
    temperature: float,
    seed: int,
    max_seconds: float,
    should_stop: Callable[[], bool],
    chunk: int = PREFILL_CHUNK,
) -> dict:
    from transformers import StoppingCriteriaList

    device = next(model.parameters()).device
    prompt = torch.tensor([ids], device=device)
    sampling = dict(do_sample=True, temperature=temperature, top_p=1.0) if temperature > 0 else dict(do_sample=False)
    started = time.monotonic()
    deadline = started + max_seconds
    with torch.no_grad(), torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)  # the same seed for both answers: sampling differs only by the adapter
        cache = _prefill(model, prompt, deadline, should_stop, chunk)
        if cache is None or should_stop() or time.monotonic() >= deadline:
            return {"text": "", "tokens": 0, "seconds": round(time.monotonic() - started, 3)}
        output = model.generate(
            input_ids=prompt,
            attention_mask=torch.ones_like(prompt),
            cache=cache,
            max_new_tokens=max_new_tokens,
            max_time=max(deadline - time.monotonic(), 0.001),
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
    """{"fine_tuned": answer, "base": answer, "prompt_tokens", "prompt_truncated"}, each answer {"text", "tokens",
    "seconds"}; `model` is a PeftModel. Raises PromptTooLong when max_new_tokens leaves no room for a prompt."""
    ids, truncated = fit_prompt(tokenizer, messages, context_length(model, tokenizer) - max_new_tokens)
    tuned = _answer(model, tokenizer, ids, max_new_tokens, temperature, seed, max_seconds, should_stop)
    with model.disable_adapter():
        base = _answer(model, tokenizer, ids, max_new_tokens, temperature, seed, max_seconds, should_stop)
    return {"fine_tuned": tuned, "base": base, "prompt_tokens": len(ids), "prompt_truncated": truncated}
