"""Where a multi-device job may run: the queues it is sent to and consumed from, the GPUs its processes get, and
the claim of a worker offering fewer devices (which leaves the job queued for one that has them)."""

from __future__ import annotations

import pytest

from api.dispatch import job_devices, job_queue, worker_queues
from cli.worker import worker_concurrency
from worker.devices import DevicesFailed, public_settings, visible_gpus


def test_a_job_goes_to_the_queue_of_its_device_count():
    assert job_queue("gpu", 1) == "gpu"
    assert job_queue("gpu", 4) == "gpu.devices-4"
    assert job_devices(None) == 1 and job_devices({}) == 1 and job_devices({"devices": 3}) == 3


def test_a_worker_consumes_the_queues_of_jobs_it_can_run():
    assert worker_queues("gpu", 1) == ["gpu"]
    assert worker_queues("gpu", 3) == ["gpu", "gpu.devices-2", "gpu.devices-3"]
    assert worker_queues("a, b", 2) == ["a", "a.devices-2", "b", "b.devices-2"]
    # Every job a worker offering N devices can run is on one of its queues, and no other.
    for offered in range(1, 5):
        consumed = set(worker_queues("gpu", offered))
        assert {job_queue("gpu", n) for n in range(1, 9) if n <= offered} == consumed


def test_processes_per_host_divide_the_gpus():
    assert worker_concurrency("auto", "cuda", count_gpus=lambda: 8, devices_each=2) == 4
    assert worker_concurrency("auto", "cuda", count_gpus=lambda: 8) == 8
    assert worker_concurrency(2, "cuda", count_gpus=lambda: 8, devices_each=4) == 2
    with pytest.raises(RuntimeError, match="needs 12 GPUs"):
        worker_concurrency(3, "cuda", count_gpus=lambda: 8, devices_each=4)
    with pytest.raises(RuntimeError, match="2 GPU"):
        worker_concurrency("auto", "cuda", count_gpus=lambda: 1, devices_each=2)


def test_a_jobs_processes_see_the_workers_own_gpus():
    assert visible_gpus("cuda", 2, None) == "0,1"
    assert visible_gpus("cuda:4", 4, None) == "4,5,6,7"  # pool process 1 of a host with 4 GPUs per process
    assert visible_gpus("cuda:2", 2, "3,5,6,7") == "6,7"  # through the worker's own CUDA_VISIBLE_DEVICES
    with pytest.raises(DevicesFailed, match="sees 2 GPUs"):
        visible_gpus("cuda:1", 2, "0,1")


def test_the_processes_get_the_settings_without_secrets(tmp_path):
    from api.settings import Settings

    settings = Settings(data_dir=tmp_path, bootstrap_api_key="uds-" + "k" * 40, worker_devices=2)
    public = public_settings(settings)
    assert "bootstrap_api_key" not in public
    assert Settings(**public).worker_devices == 2 and Settings(**public).data_dir == tmp_path


def test_a_worker_offering_fewer_devices_leaves_the_job_queued(sessions, make_job, settings):
    from tests.utils.factories import job_row
    from worker.runner import claim, run_job

    job_id = make_job(devices=2)
    assert claim(sessions, job_id, "host-a:1:aaaa", settings.stale_after_seconds, devices_offered=1) is None
    assert run_job(job_id, "host-a:1:aaaa", settings.model_copy(update={"worker_devices": 1})) is None
    job = job_row(sessions, job_id)
    assert (job.status, job.worker_id, job.attempts) == ("queued", None, 0)
    # A worker with two devices takes it.
    assert claim(sessions, job_id, "host-b:2:bbbb", settings.stale_after_seconds, devices_offered=2) is not None


def test_the_processes_find_this_checkout_and_a_store_of_their_attempt():
    from uds.launch import rank_environment

    environment = rank_environment({"PYTHONPATH": "/elsewhere"}, threads=3)
    root = str(__import__("pathlib").Path(__file__).resolve().parents[2])
    assert environment["PYTHONPATH"].split(":") == [root, "/elsewhere"]
    assert environment["OMP_NUM_THREADS"] == "3"
    # A restarted group must not read its peers' addresses from the attempt before (see the kill -9 test).
    assert environment["TORCH_DISABLE_SHARE_RDZV_TCP_STORE"] == "1"
