"""Half-written checkpoint folders (`step-N.tmp-<pid>`, left by a kill -9 mid-write) are deleted by the next writer
or reader of the job's checkpoints, not kept until an API restart."""

from __future__ import annotations

import os

from tests.uds.test_trainer import RecordingLogger, _config, dataset  # noqa: F401 (dataset is a fixture)
from uds.checkpoint import list_checkpoints, save_checkpoint
from uds.trainer import train

DEAD_PID = 2**22 + 12345  # above the default pid_max: no process has it


def plant_abandoned_write(root, step: int, pid: int = DEAD_PID):
    folder = os.path.join(root, f"step-{step:08d}.tmp-{pid}")
    os.makedirs(folder)
    with open(os.path.join(folder, "state.pt"), "wb") as handle:
        handle.write(b"\0" * 1024)
    return folder


class FolderModel:
    def save_pretrained(self, path, safe_serialization=True):
        os.makedirs(path, exist_ok=True)
        open(os.path.join(path, "adapter_model.safetensors"), "wb").close()


def test_saving_removes_other_writers_leftovers(tmp_path):
    root = str(tmp_path / "checkpoints")
    leftover = plant_abandoned_write(root, 2)
    save_checkpoint(root, 4, FolderModel(), {"step": 4}, keep=3)
    assert not os.path.exists(leftover)
    assert sorted(os.listdir(root)) == ["step-00000004"]


def test_resuming_removes_a_crashed_writers_leftover(tmp_path, dataset, tiny_model_dir):
    config = _config(tmp_path / "job", dataset, tiny_model_dir, candidate_batch_size=4, micro_batch_size=3)
    assert train(config, RecordingLogger(stop_before_step=5)).status == "cancelled"  # checkpoint at step 3
    root = os.path.join(config.output_dir, "checkpoints")
    leftover = plant_abandoned_write(root, 4)  # the kill -9 came while step 4's checkpoint was being written

    # Stop at once after loading step 3: nothing is saved, so only the load can have removed it.
    resumed = RecordingLogger(stop_before_step=1)
    assert train(config, resumed).status == "cancelled"
    assert any(kind == "resumed" for kind, _ in resumed.events)
    assert not os.path.exists(leftover)
    assert [c.step for c in list_checkpoints(root)] == [3]
