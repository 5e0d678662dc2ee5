"""One process of a multi-device job (`python -m worker.ranks RUN_JSON`, started by torchrun: worker/devices.py).

Rank 0 trains and reports exactly as a one-device job does (worker.runner.train_in_process) and writes the
outcome for the worker that claimed the job; the other ranks train and report nothing.
"""

from __future__ import annotations

import dataclasses
import logging
import sys
import threading
from pathlib import Path

from api.db import session_factory
from api.models import Job
from uds import distributed
from worker import devices
from worker.runner import ClaimedJob, JobFailure, train_in_process

log = logging.getLogger(__name__)


def main(argv: list[str]) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s rank %(process)d %(levelname)s %(message)s")
    run_path = Path(argv[0])
    job_id, worker_id, settings, config = devices.read_run(str(run_path))
    config = devices.rank_config(config)
    try:
        if distributed.launched_world().is_main:
            _train_and_report(run_path.parent, job_id, worker_id, settings, config)
        else:
            from uds.reporter import NullLogger
            from uds.trainer import TrainingError, train

            try:
                train(config, NullLogger(), resume=True, allowed_models=settings.models)
            except TrainingError as error:
                # Usually rank 0 meets the same error; when only this rank does (its GPU ran out of memory), rank 0
                # would wait for it at the next collective: the outcome is the job's, and the worker stops the rest.
                log.error("job %s: %s", job_id, error.message)
                devices.write_outcome(run_path.parent, {"failure": {"code": error.code, "message": error.message}})
    finally:
        distributed.shutdown()
    return 0


def _train_and_report(folder: Path, job_id: str, worker_id: str, settings, config) -> None:
    sessions = session_factory(settings.sqlalchemy_url)
    with sessions() as session:
        job = session.get(Job, job_id)
        session.expunge(job)
    claimed = ClaimedJob(job, worker_id, settings, sessions)
    stop_event = threading.Event()
    devices.watch_stop_file(folder, stop_event)
    try:
        result = train_in_process(claimed, config, stop_event)
    except JobFailure as failure:
        if failure.code == "internal_error":
            # Not the job's fault as far as we know, and what a peer's death looks like from here (a collective
            # whose connection closed): exit with an error, and the agent starts every process again from the
            # newest checkpoint (up to its restarts; then the worker fails the job).
            log.error("job %s: %s", job_id, failure.message)
            raise SystemExit(1) from failure
        # The job's own failure (bad data, out of memory, the time limit, a full disk): reported, not raised, since
        # an exit status other than 0 would have the agent start the processes again.
        devices.write_outcome(folder, {"failure": {"code": failure.code, "message": failure.message}})
        return
    if result is None:
        devices.write_outcome(folder, {"lost": True})
    else:
        devices.write_outcome(folder, {"result": dataclasses.asdict(result), "stopped": stop_event.is_set()})


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
