"""Try-it before the first token: a prompt of any size is cut to the model's context minus max_new_tokens (from
the left, whole turns in the chat template's shape), the prefill runs in chunks with the same answer as one pass,
and a cancel or the time limit stops it between chunks."""

from __future__ import annotations

import pytest
import torch

from uds.tryit import PromptTooLong, _answer, context_length, fit_prompt, generate_pair, prompt_ids

HUGE = [{"role": "user", "content": f"{i:02d}" + "c" * 31990} for i in range(30)]  # ~1 MB, as in a request body


@pytest.fixture(scope="module")
def tiny(tiny_model_dir):
    from peft import LoraConfig, get_peft_model

    from uds.models import load_model_and_tokenizer

    model, tokenizer = load_model_and_tokenizer(tiny_model_dir)
    torch.manual_seed(0)
    peft = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"])).eval()
    return peft, tokenizer


def test_a_prompt_that_fits_is_left_as_it_is(tiny):
    _, tokenizer = tiny
    messages = [{"role": "system", "content": "Be short."}, {"role": "user", "content": "Reverse: abc"}]
    assert fit_prompt(tokenizer, messages, 100) == (prompt_ids(tokenizer, messages), False)


def test_a_huge_prompt_is_cut_from_the_left_keeping_the_chat_template(tiny):
    model, tokenizer = tiny
    budget = context_length(model, tokenizer) - 256
    assert budget == 1024 - 256
    ids, truncated = fit_prompt(tokenizer, HUGE, budget)
    assert truncated and budget - 8 <= len(ids) <= budget
    text = tokenizer.decode(ids)
    # The newest message's end and the assistant prompt are kept; the cut falls inside the last user turn, which
    # still opens with its role marker.
    assert text.startswith("<|im_start|>user\n") and text.endswith("c<|im_end|>\n<|im_start|>assistant\n")
    assert "29" not in text  # the newest turn's beginning was older than the budget


def test_older_turns_go_whole_before_the_newest_is_cut(tiny):
    _, tokenizer = tiny
    messages = [{"role": "user", "content": "old " * 100}, {"role": "assistant", "content": "ok"}]
    messages.append({"role": "user", "content": "new question"})
    ids, truncated = fit_prompt(tokenizer, messages, 50)
    assert truncated and tokenizer.decode(ids) == prompt_ids_text(tokenizer, messages[1:])


def prompt_ids_text(tokenizer, messages):
    return tokenizer.decode(prompt_ids(tokenizer, messages))


def test_no_room_for_any_prompt_is_an_error(tiny):
    _, tokenizer = tiny
    with pytest.raises(PromptTooLong):
        fit_prompt(tokenizer, [{"role": "user", "content": "hi"}], 3)


def test_chunked_prefill_gives_the_answer_of_one_pass(tiny):
    model, tokenizer = tiny
    ids = prompt_ids(tokenizer, [{"role": "user", "content": "Copy this sentence, please: the quick brown fox"}])
    whole = _answer(model, tokenizer, ids, 12, 0.0, 0, 60.0, lambda: False, chunk=10_000)
    chunked = _answer(model, tokenizer, ids, 12, 0.0, 0, 60.0, lambda: False, chunk=7)
    assert chunked["text"] == whole["text"] and chunked["tokens"] == whole["tokens"] == 12


class Counting:
    """The model, counting forward passes (prefill chunks and generated tokens alike)."""

    def __init__(self, model):
        self.model, self.calls = model, 0

    def __getattr__(self, name):
        return getattr(self.model, name)

    def __call__(self, *args, **kwargs):
        self.calls += 1
        return self.model(*args, **kwargs)


def test_a_cancel_during_the_prefill_stops_it_between_chunks(tiny):
    model, tokenizer = tiny
    ids, _ = fit_prompt(tokenizer, HUGE, 768)
    counting = Counting(model)
    asked = iter(range(1000))
    answer = _answer(counting, tokenizer, ids, 256, 0.0, 0, 60.0, lambda: next(asked) >= 2, chunk=64)
    assert answer["tokens"] == 0 and answer["text"] == ""
    assert counting.calls == 2  # two chunks of the twelve, then the cancel was seen


def test_the_time_limit_covers_the_prefill(tiny):
    model, tokenizer = tiny
    ids, _ = fit_prompt(tokenizer, HUGE, 768)
    counting = Counting(model)
    answer = _answer(counting, tokenizer, ids, 256, 0.0, 0, 0.0, lambda: False, chunk=64)
    assert answer["tokens"] == 0 and counting.calls == 0


def test_generate_pair_bounds_a_huge_conversation(tiny):
    model, tokenizer = tiny
    result = generate_pair(model, tokenizer, HUGE, max_new_tokens=4)
    assert result["prompt_truncated"] and result["prompt_tokens"] <= 1024 - 4
    assert result["fine_tuned"]["tokens"] == result["base"]["tokens"] == 4
