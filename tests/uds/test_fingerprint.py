"""uds/fingerprint.py: which settings make a checkpoint another run's, and the one sentence that says so."""

from __future__ import annotations

import dataclasses

from uds.config import TrainConfig
from uds.fingerprint import BOOKKEEPING, differences, file_sha256, fingerprint, mismatch_message, settings_of


def _data(tmp_path, text="{}\n"):
    path = tmp_path / "train.jsonl"
    path.write_text(text)
    return str(path)


def test_the_same_run_matches_whatever_its_bookkeeping(tmp_path):
    data = _data(tmp_path)
    first = fingerprint(
        TrainConfig(dataset_path=data, output_dir="a", checkpoint_every=5, device="cpu", micro_batch_size=2)
    )
    again = fingerprint(
        TrainConfig(
            dataset_path=data,
            output_dir="b",
            checkpoint_every=50,
            device="auto",
            micro_batch_size=4,
            eval_every=3,
            keep_checkpoints=9,
            gradient_checkpointing=True,
        )
    )
    assert differences(first, again) == []


def test_each_result_changing_setting_is_named(tmp_path):
    data = _data(tmp_path)
    base = fingerprint(TrainConfig(dataset_path=data))
    for name, value in [
        ("budget", 0.5),
        ("method", "max_loss"),
        ("seed", 3),
        ("learning_rate", 1e-3),
        ("lora_targets", ["q_proj"]),
        ("alpha", "auto"),
        ("model", "other"),
    ]:
        other = fingerprint(TrainConfig(dataset_path=data, **{name: value}))
        found = differences(base, other)
        assert len(found) == 1 and found[0].startswith(name + " "), (name, found)


def test_every_setting_is_either_compared_or_declared_bookkeeping():
    # A new TrainConfig field is compared unless someone decides it changes nothing: the safe default.
    names = {f.name for f in dataclasses.fields(TrainConfig)}
    assert BOOKKEEPING <= names
    assert set(settings_of(TrainConfig())) == names - BOOKKEEPING


def test_other_data_content_differs_even_at_the_same_path(tmp_path):
    path = _data(tmp_path, '{"a": 1}\n')
    before = fingerprint(TrainConfig(dataset_path=path))
    (tmp_path / "train.jsonl").write_text('{"a": 2}\n')
    assert differences(before, fingerprint(TrainConfig(dataset_path=path))) == ["the training data"]


def test_file_hash_follows_content_not_name(tmp_path):
    a, b = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    a.write_text("same\n")
    b.write_text("same\n")
    assert file_sha256(str(a)) == file_sha256(str(b))


def test_a_setting_unknown_to_an_older_checkpoint_counts_only_when_not_default(tmp_path):
    current = fingerprint(TrainConfig(dataset_path=_data(tmp_path)))
    older = {
        "settings": {k: v for k, v in current["settings"].items() if k != "score_on"},
        "data_sha256": current["data_sha256"],
    }
    assert differences(older, current) == []
    changed = fingerprint(TrainConfig(dataset_path=_data(tmp_path), score_on="answer"))
    assert differences(older, changed) == ["score_on all -> answer"]


def test_the_message_is_one_sentence_with_both_ways_out():
    message = mismatch_message(["budget 0.125 -> 0.5", "the training data"], 6)
    assert "\n" not in message and message.count(". ") == 0
    assert "step 6" in message and "budget 0.125 -> 0.5" in message and "the training data" in message
    assert "--no-resume" in message and "--output-dir" in message
