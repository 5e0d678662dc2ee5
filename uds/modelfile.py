"""The Ollama Modelfile written next to a GGUF export: FROM the file, the chat template, the stop tokens.

Ollama's templates are Go templates, not the Jinja of `tokenizer.chat_template`, so the Jinja is not translated
but recognised: it is rendered on a probe conversation and compared with what ChatML (SmolLM2, Qwen2, uds-tiny's
template) would give. A recognised template gets its Go template, and the default system prompt the Jinja inserts
when a conversation has none becomes SYSTEM. Another template gets no TEMPLATE line, and Ollama picks the
template matching the file's `tokenizer.chat_template` from its own library (or none: a comment says so).
"""

from __future__ import annotations

PROBE = [
    {"role": "system", "content": "SYSTEM-PROBE"},
    {"role": "user", "content": "USER-PROBE-1"},
    {"role": "assistant", "content": "ASSISTANT-PROBE"},
    {"role": "user", "content": "USER-PROBE-2"},
]

CHATML_START, CHATML_END = "<|im_start|>", "<|im_end|>"

# Ollama puts the SYSTEM of the Modelfile first in .Messages when a request has no system message.
CHATML_GO_TEMPLATE = (
    "{{- range .Messages }}<|im_start|>{{ .Role }}\n{{ .Content }}<|im_end|>\n{{ end }}<|im_start|>assistant\n"
)


def _chatml(messages: list[dict], generation_prompt: bool) -> str:
    text = "".join(f"{CHATML_START}{m['role']}\n{m['content']}{CHATML_END}\n" for m in messages)
    return text + (f"{CHATML_START}assistant\n" if generation_prompt else "")


def _render(tokenizer, messages: list[dict]) -> str | None:
    try:
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    except Exception:  # noqa: BLE001 - a template that cannot render a probe is simply not recognised
        return None


def chatml_default_system(tokenizer) -> tuple[bool, str | None]:
    """(is ChatML, the system prompt the template inserts when a conversation has none, or None)."""
    if not getattr(tokenizer, "chat_template", None) or _render(tokenizer, PROBE) != _chatml(PROBE, True):
        return False, None
    without_system = _render(tokenizer, PROBE[1:]) or ""
    rest = _chatml(PROBE[1:], True)
    head = without_system[: -len(rest)] if without_system.endswith(rest) else ""
    prefix, suffix = f"{CHATML_START}system\n", f"{CHATML_END}\n"
    if head.startswith(prefix) and head.endswith(suffix):
        return True, head[len(prefix) : -len(suffix)]
    return True, None


def _quoted(text: str) -> str:
    if '"""' in text:
        raise ValueError("a Modelfile value cannot contain three double quotes")
    return f'"""{text}"""'


def modelfile(gguf_name: str, tokenizer) -> str:
    """The Modelfile text for `ollama create NAME -f Modelfile`, run in the folder that holds `gguf_name`."""
    lines = [f"FROM ./{gguf_name}"]
    chatml, system = chatml_default_system(tokenizer)
    stops = []
    if chatml:
        lines.append(f"TEMPLATE {_quoted(CHATML_GO_TEMPLATE)}")
        if system:
            lines.append(f"SYSTEM {_quoted(system)}")
        stops += [CHATML_END, CHATML_START]
    else:
        lines.append(
            "# No TEMPLATE: this chat template is not ChatML, so Ollama picks the template matching the GGUF file's "
            "tokenizer.chat_template from its own library (write a TEMPLATE here if it knows none)."
        )
    eos = getattr(tokenizer, "eos_token", None)
    if eos and eos not in stops:
        stops.append(eos)
    lines += [f'PARAMETER stop "{stop}"' for stop in stops if '"' not in stop and "\n" not in stop]
    return "\n".join(lines) + "\n"
