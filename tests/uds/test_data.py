import copy

import pytest
import torch

from uds.data import IGNORE_INDEX, _encode, _encode_by_runs, collate, tokenize_example, tokenize_examples
from uds.formats import Example


@pytest.fixture(scope="module")
def tokenizer(tiny_model_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_model_dir, local_files_only=True)


@pytest.fixture(scope="module")
def plain_tokenizer(tokenizer):
    plain = copy.deepcopy(tokenizer)
    plain.chat_template = None
    return plain


def msg(role, content, weight=1):
    return {"role": role, "content": content, "weight": weight}


CONVERSATION = Example(
    row=7,
    line=8,
    messages=[
        msg("system", "Be brief."),
        msg("user", "Reverse: abc"),
        msg("assistant", "cba", weight=0),
        msg("user", "Again: héllo 你"),
        msg("assistant", "你 olléh"),
    ],
)


def decoded(tokenizer, ids):
    return tokenizer.decode(ids)


def trained_text(tokenizer, item):
    """The labelled tokens, decoded, with '|' wherever the labelled run is interrupted."""
    pieces, run = [], []
    for label in item.labels:
        if label == IGNORE_INDEX:
            if run:
                pieces.append(tokenizer.decode(run))
                run = []
        else:
            run.append(label)
    if run:
        pieces.append(tokenizer.decode(run))
    return "|".join(pieces)


def test_chat_template_text_and_eos(tokenizer):
    item = tokenize_example(CONVERSATION, tokenizer, max_seq_len=512)
    assert item.row == 7
    assert decoded(tokenizer, item.input_ids) == (
        "<|im_start|>system\nBe brief.<|im_end|>\n"
        "<|im_start|>user\nReverse: abc<|im_end|>\n"
        "<|im_start|>assistant\ncba<|im_end|>\n"
        "<|im_start|>user\nAgain: héllo 你<|im_end|>\n"
        "<|im_start|>assistant\n你 olléh<|im_end|>\n<|endoftext|>"
    )
    assert item.input_ids.count(tokenizer.eos_token_id) == 1
    assert len(item.labels) == len(item.input_ids)


def test_loss_on_all_trains_everything_but_weight_zero_turns(tokenizer):
    item = tokenize_example(CONVERSATION, tokenizer, max_seq_len=512, loss_on="all")
    assert trained_text(tokenizer, item) == (
        "<|im_start|>system\nBe brief.<|im_end|>\n"
        "<|im_start|>user\nReverse: abc<|im_end|>\n"
        "<|im_start|>assistant\n"
        "|<|im_start|>user\nAgain: héllo 你<|im_end|>\n"
        "<|im_start|>assistant\n你 olléh<|im_end|>\n<|endoftext|>"
    )
    # Where there is loss, the label is the token itself (the model shifts internally).
    assert all(label in (token, IGNORE_INDEX) for token, label in zip(item.input_ids, item.labels, strict=True))


def test_loss_on_answer_trains_weight_one_assistant_turns_only(tokenizer):
    item = tokenize_example(CONVERSATION, tokenizer, max_seq_len=512, loss_on="answer")
    assert trained_text(tokenizer, item) == "你 olléh<|im_end|>\n<|endoftext|>"


def test_eos_is_not_trained_when_the_last_turn_is_masked(tokenizer):
    example = Example(0, 1, [msg("user", "a"), msg("assistant", "b"), msg("user", "c"), msg("assistant", "d", 0)])
    for loss_on in ("all", "answer"):
        item = tokenize_example(example, tokenizer, max_seq_len=512, loss_on=loss_on)
        assert item.input_ids[-1] == tokenizer.eos_token_id and item.labels[-1] == IGNORE_INDEX
    answer = tokenize_example(example, tokenizer, max_seq_len=512, loss_on="answer")
    assert trained_text(tokenizer, answer) == "b<|im_end|>\n"


def test_plain_template_without_a_chat_template(plain_tokenizer):
    item = tokenize_example(CONVERSATION, plain_tokenizer, max_seq_len=512, loss_on="all")
    assert decoded(plain_tokenizer, item.input_ids) == (
        "### System:\nBe brief.\n\n### User:\nReverse: abc\n\n### Assistant:\ncba\n\n"
        "### User:\nAgain: héllo 你\n\n### Assistant:\n你 olléh<|endoftext|>"
    )
    assert trained_text(plain_tokenizer, item) == (
        "### System:\nBe brief.\n\n### User:\nReverse: abc\n\n### Assistant:\n"
        "|### User:\nAgain: héllo 你\n\n### Assistant:\n你 olléh<|endoftext|>"
    )
    answer = tokenize_example(CONVERSATION, plain_tokenizer, max_seq_len=512, loss_on="answer")
    assert trained_text(plain_tokenizer, answer) == "你 olléh<|endoftext|>"


def test_plain_template_starts_with_bos_when_the_tokenizer_has_one(plain_tokenizer):
    with_bos = copy.deepcopy(plain_tokenizer)
    with_bos.bos_token = "<|im_start|>"
    item = tokenize_example(Example(0, 1, [msg("user", "a"), msg("assistant", "b")]), with_bos, 512)
    assert item.input_ids[0] == with_bos.bos_token_id
    assert decoded(with_bos, item.input_ids) == "<|im_start|>### User:\na\n\n### Assistant:\nb<|endoftext|>"


def test_template_whose_prefixes_differ_falls_back_to_searching_content(tokenizer):
    # Marks the final turn differently, so rendering a prefix is not a prefix of the whole conversation.
    odd = copy.deepcopy(tokenizer)
    odd.chat_template = (
        "{% for m in messages %}[{{ m['role'] }}{% if loop.last %}*{% endif %}] {{ m['content'] }}\n{% endfor %}"
    )
    example = Example(0, 1, [msg("user", "abc"), msg("assistant", "cba"), msg("user", "x"), msg("assistant", "y")])
    item = tokenize_example(example, odd, max_seq_len=512, loss_on="answer")
    assert decoded(odd, item.input_ids) == "[user] abc\n[assistant] cba\n[user] x\n[assistant*] y\n<|endoftext|>"
    # Found by content, so the end-of-turn markup ("\n") is not part of the answer; the final EOS is.
    assert trained_text(odd, item) == "cba|y|<|endoftext|>"


def test_eos_is_not_doubled_when_the_template_ends_with_it(tokenizer):
    ending = copy.deepcopy(tokenizer)
    ending.chat_template = tokenizer.chat_template + "{{ eos_token }}"
    item = tokenize_example(Example(0, 1, [msg("user", "a"), msg("assistant", "b")]), ending, 512)
    assert item.input_ids.count(ending.eos_token_id) == 1 and item.input_ids[-1] == ending.eos_token_id


def test_truncation_keeps_the_start(tokenizer):
    full = tokenize_example(CONVERSATION, tokenizer, max_seq_len=512)
    cut = tokenize_example(CONVERSATION, tokenizer, max_seq_len=10)
    assert cut.input_ids == full.input_ids[:10] and cut.labels == full.labels[:10]


def test_encoding_by_runs_matches_offsets_for_this_tokenizer(tokenizer):
    text = "<|im_start|>user\nhé 你<|im_end|>\n"
    kinds = [0] * 17 + [1] * (len(text) - 17)
    assert _encode(tokenizer, text, kinds) == _encode_by_runs(tokenizer, text, kinds)


def test_unknown_loss_on_is_rejected(tokenizer):
    with pytest.raises(ValueError, match="loss_on"):
        tokenize_example(CONVERSATION, tokenizer, 512, loss_on="prompt")


def test_collate_right_pads_and_masks(tokenizer):
    short = Example(1, 2, [msg("user", "a"), msg("assistant", "b")])
    items = tokenize_examples([CONVERSATION, short], tokenizer, 512, "answer")
    batch = collate(items, pad_token_id=tokenizer.pad_token_id)
    n_long, n_short = len(items[0].input_ids), len(items[1].input_ids)
    assert set(batch) == {"input_ids", "attention_mask", "labels"}
    assert batch["input_ids"].shape == batch["labels"].shape == batch["attention_mask"].shape == (2, n_long)
    assert all(t.dtype == torch.long for t in batch.values())
    assert batch["attention_mask"].sum(1).tolist() == [n_long, n_short]
    assert batch["input_ids"][1, :n_short].tolist() == items[1].input_ids
    assert (batch["input_ids"][1, n_short:] == tokenizer.pad_token_id).all()
    assert (batch["labels"][1, n_short:] == IGNORE_INDEX).all()
    assert batch["labels"][0].tolist() == items[0].labels


def test_tokenized_examples_train_the_tiny_model(tiny_model_dir, tokenizer):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, local_files_only=True)
    batch = collate(tokenize_examples([CONVERSATION], tokenizer, 512, "all"), tokenizer.pad_token_id)
    loss = model(**batch).loss
    assert torch.isfinite(loss) and loss.item() > 0
