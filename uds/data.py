"""Tokenisation of chat examples into input ids and loss labels, and right-padded batching.

Which tokens get loss (`labels` = the token id) and which do not (`labels` = -100):

- ``loss_on="all"`` (the paper's setting): every real token, including the chat markup and the prompt, except the
  tokens of assistant turns with weight 0.
- ``loss_on="answer"``: only the tokens of assistant turns with weight 1.

An assistant turn's tokens are its content and the end-of-turn markup the template writes after it (e.g.
``<|im_end|>\\n``), so the model learns to stop; the role header before it (``<|im_start|>assistant\\n``) belongs to
the prompt. The EOS token appended at the end belongs to the last message.

Rendering: with the tokenizer's chat template when it has one. Each message's span in the rendered text is found by
rendering prefixes of the conversation (``messages[:i+1]``, and ``messages[:i]`` with the generation prompt for the
header of an assistant turn); templates whose prefixes are not prefixes of the whole (some add text depending on the
last message) fall back to locating each message's content in order (an assistant turn is then its content only,
without the end-of-turn markup). Without a chat template the plain template
is used::

    ### System:\\n{content}\\n\\n       (for system messages)
    ### User:\\n{content}\\n\\n
    ### Assistant:\\n{content}\\n\\n    (the last message has no trailing "\\n\\n")

preceded by the tokenizer's BOS token if it has one. In both cases the EOS token is appended unless the text
already ends with it, and the result is cut to `max_seq_len` tokens (keeping the start).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch

IGNORE_INDEX = -100
LOSS_ON = ("all", "answer")

PLAIN_HEADERS = {"system": "### System:\n", "user": "### User:\n", "assistant": "### Assistant:\n"}
PLAIN_SEPARATOR = "\n\n"

# What a character of the rendered text is, for labelling the token that starts on it.
CONTEXT = 0  # markup, system and user text: loss only with loss_on="all"
ANSWER = 1  # a weight-1 assistant turn: loss in both modes
MASKED = 2  # a weight-0 assistant turn: never loss


@dataclass
class TokenizedExample:
    row: int
    input_ids: list[int]
    labels: list[int]  # IGNORE_INDEX (-100) where there is no loss


@dataclass
class _Span:
    start: int  # character offsets into the rendered text, end exclusive
    end: int
    kind: int


def _message_kind(message: dict) -> int:
    if message["role"] != "assistant":
        return CONTEXT
    return ANSWER if message.get("weight", 1) else MASKED


def _template_messages(messages: Sequence[dict]) -> list[dict]:
    # Templates only need role and content; `weight` is ours and some templates reject unknown keys.
    return [{"role": m["role"], "content": m["content"]} for m in messages]


def _render(tokenizer, messages: Sequence[dict], add_generation_prompt: bool = False) -> str:
    return tokenizer.apply_chat_template(
        _template_messages(messages), tokenize=False, add_generation_prompt=add_generation_prompt
    )


def _spans_by_prefix(tokenizer, messages: Sequence[dict], text: str) -> list[_Span] | None:
    """Assistant spans from prefix renders, or None if this template's prefixes are not prefixes of the text."""
    spans = []
    for index, message in enumerate(messages):
        if message["role"] != "assistant":
            continue
        header = _render(tokenizer, messages[:index], add_generation_prompt=True)
        through = _render(tokenizer, messages[: index + 1])
        if not (text.startswith(header) and text.startswith(through) and len(header) <= len(through)):
            return None
        spans.append(_Span(len(header), len(through), _message_kind(message)))
    return spans


def _spans_by_search(messages: Sequence[dict], text: str) -> list[_Span]:
    """Assistant spans by finding each message's content in order (templates may strip it, so try both)."""
    spans, cursor = [], 0
    for message in messages:
        content = message["content"]
        found = text.find(content, cursor)
        if found < 0:
            content = content.strip()
            found = text.find(content, cursor)
        if found < 0:
            raise ValueError(f"the chat template does not reproduce the {message['role']} message's content")
        cursor = found + len(content)
        if message["role"] == "assistant":
            spans.append(_Span(found, cursor, _message_kind(message)))
    return spans


def render_with_template(tokenizer, messages: Sequence[dict]) -> tuple[str, list[_Span]]:
    text = _render(tokenizer, messages)
    try:
        spans = _spans_by_prefix(tokenizer, messages, text)
    except Exception:  # noqa: BLE001 - a template may reject a partial conversation; searching still works
        spans = None
    if spans is None:
        spans = _spans_by_search(messages, text)
    return text, spans


def render_plain(tokenizer, messages: Sequence[dict]) -> tuple[str, list[_Span]]:
    text = tokenizer.bos_token or ""
    spans = []
    for index, message in enumerate(messages):
        text += PLAIN_HEADERS[message["role"]]
        start = len(text)
        text += message["content"]
        if index < len(messages) - 1:
            text += PLAIN_SEPARATOR
        if message["role"] == "assistant":
            spans.append(_Span(start, len(text), _message_kind(message)))
    return text, spans


def _char_kinds(length: int, spans: list[_Span]) -> list[int]:
    kinds = [CONTEXT] * length
    for span in spans:
        kinds[span.start : span.end] = [span.kind] * (span.end - span.start)
    return kinds


def _encode(tokenizer, text: str, char_kinds: list[int]) -> tuple[list[int], list[int]]:
    """Token ids of `text` and the kind of each token (that of the character it starts on)."""
    # BOS and other markup are already in the rendered text, so the tokenizer must not add its own.
    try:
        encoding = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    except (NotImplementedError, ValueError, TypeError):
        # Tokenizers without offsets (pure-Python ones): encode each run of same-kind characters on its own.
        return _encode_by_runs(tokenizer, text, char_kinds)
    input_ids = list(encoding["input_ids"])
    # A multi-byte character may span several byte tokens; they all start on it.
    kinds = [char_kinds[start] if start < len(text) else CONTEXT for start, _ in encoding["offset_mapping"]]
    return input_ids, kinds


def _encode_by_runs(tokenizer, text: str, char_kinds: list[int]) -> tuple[list[int], list[int]]:
    input_ids, kinds, start = [], [], 0
    for end in range(1, len(text) + 1):
        if end == len(text) or char_kinds[end] != char_kinds[start]:
            ids = tokenizer(text[start:end], add_special_tokens=False)["input_ids"]
            input_ids.extend(ids)
            kinds.extend([char_kinds[start]] * len(ids))
            start = end
    return input_ids, kinds


def _has_loss(kind: int, loss_on: str) -> bool:
    return kind == ANSWER or (kind == CONTEXT and loss_on == "all")


def tokenize_example(example, tokenizer, max_seq_len: int, loss_on: str = "all") -> TokenizedExample:
    """Input ids and labels for one `formats.Example` (see the module docstring for the rules)."""
    if loss_on not in LOSS_ON:
        raise ValueError(f"loss_on must be one of {LOSS_ON}, got {loss_on!r}")
    messages = example.messages
    if getattr(tokenizer, "chat_template", None):
        text, spans = render_with_template(tokenizer, messages)
    else:
        text, spans = render_plain(tokenizer, messages)

    input_ids, token_kinds = _encode(tokenizer, text, _char_kinds(len(text), spans))

    eos_id = tokenizer.eos_token_id
    if eos_id is not None and (not input_ids or input_ids[-1] != eos_id):
        input_ids.append(eos_id)
        token_kinds.append(_message_kind(messages[-1]))

    labels = [
        token if _has_loss(kind, loss_on) else IGNORE_INDEX for token, kind in zip(input_ids, token_kinds, strict=True)
    ]
    return TokenizedExample(row=example.row, input_ids=input_ids[:max_seq_len], labels=labels[:max_seq_len])


def tokenize_examples(examples, tokenizer, max_seq_len: int, loss_on: str = "all") -> list[TokenizedExample]:
    return [tokenize_example(example, tokenizer, max_seq_len, loss_on) for example in examples]


def collate(items: Sequence[TokenizedExample], pad_token_id: int) -> dict[str, torch.Tensor]:
    """Right-pad a batch: input_ids and attention_mask [B, L] long, labels [B, L] with -100 on padding."""
    if not items:
        raise ValueError("collate needs at least one example")
    length = max(len(item.input_ids) for item in items)
    input_ids = torch.full((len(items), length), pad_token_id, dtype=torch.long)
    attention_mask = torch.zeros((len(items), length), dtype=torch.long)
    labels = torch.full((len(items), length), IGNORE_INDEX, dtype=torch.long)
    for index, item in enumerate(items):
        n = len(item.input_ids)
        input_ids[index, :n] = torch.tensor(item.input_ids, dtype=torch.long)
        attention_mask[index, :n] = 1
        labels[index, :n] = torch.tensor(item.labels, dtype=torch.long)
    return {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels}
