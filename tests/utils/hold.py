"""Holding a job at a step inside a server or worker process a test started, until the test lets it go on.

A test that needs a job in some state (running past a checkpoint, two jobs running at once) must not race the
training loop for it: a uds-tiny step takes milliseconds on a fast machine, so "poll until it happens" can miss
the state altogether. With a hold, the child's DbLogger stops right after it has stored the held step (so the test
sees it) and waits until the test releases it, or the job is told to stop (cancel, shutdown).

    hold = StepHold(tmp_path, step=3)                       # engaged: jobs wait at step 3
    server = Server(port, env, log, preload=hold.preload)   # installed in the child before anything runs
    ...                                                     # the job sits at step 3 as long as the test needs
    hold.release()                                          # and goes on (hold.engage() to hold again)
"""

from __future__ import annotations

import os
import time
from pathlib import Path


class StepHold:
    def __init__(self, folder, step: int, engaged: bool = True):
        self.step = step
        self.release_file = Path(folder) / f"release-step-{step}"
        if not engaged:
            self.release()

    @property
    def preload(self) -> str:
        """Python code for the child process (see Server/Worker `preload` in tests/utils/service.py)."""
        return f"import tests.utils.hold; tests.utils.hold.install({self.step}, {str(self.release_file)!r})"

    def engage(self) -> None:
        self.release_file.unlink(missing_ok=True)

    def release(self) -> None:
        self.release_file.touch()


def install(step: int, release_file: str) -> None:
    """In the child: wrap DbLogger.log_step so that a job waits after `step` while `release_file` does not exist."""
    from worker.db_logger import DbLogger

    log_step = DbLogger.log_step

    def log_step_then_hold(self, metrics):
        log_step(self, metrics)
        if int(metrics["step"]) != step or os.path.exists(release_file):
            return
        self.flush()  # the held step is in the database before the test looks
        while not os.path.exists(release_file) and not self.should_stop():
            time.sleep(0.05)

    DbLogger.log_step = log_step_then_hold


def install_generation_hold(release_file: str) -> None:
    """In the child: a try-it generation waits at its first token while `release_file` does not exist, until it is
    cancelled (the real cancel check, through the row), so a test can press Cancel on a generation that is running."""
    import worker.job_tasks as job_tasks

    real_check = job_tasks._cancel_check

    def held_check(sessions, task_id, *stop_event):
        check = real_check(sessions, task_id, *stop_event)

        def should_stop() -> bool:
            while not os.path.exists(release_file):
                if check():
                    return True
                time.sleep(0.05)
            return check()

        return should_stop

    job_tasks._cancel_check = held_check


def flock_waiters(lock_path) -> int:
    """How many processes or threads the kernel shows blocked on the flock of `lock_path`: Linux's /proc/locks marks a
    waiter with "->". Lets a test that holds a lock wait until a competitor is really waiting on it, not guess."""
    inode = f":{Path(lock_path).stat().st_ino}"
    lines = Path("/proc/locks").read_text().splitlines()
    return sum(1 for line in lines if "->" in line.split() and any(f.endswith(inode) for f in line.split()))
