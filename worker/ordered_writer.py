"""A writer thread that runs submitted work in order, so the training loop does not wait for the database.

The first error stops the writing: later work is skipped and the error is handed to the submitting thread at its
next `raise_error()`. A bounded queue applies back-pressure: a database slower than the training loop holds the
loop up after a few batches instead of buffering without end.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from typing import Any

MAX_QUEUED = 8


class OrderedWriter:
    """`background` False runs each piece of work inline (the same order, no thread). `skip()` True drops work
    that has not started yet (the job was lost to another worker)."""

    def __init__(self, name: str, background: bool = True, skip: Callable[[], bool] = lambda: False):
        self.name = name
        self.background = background
        self.skip = skip
        self._queue: queue.Queue = queue.Queue(maxsize=MAX_QUEUED)
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None

    def submit(self, work: Callable[[], Any]) -> None:
        """Run `work` after everything submitted before it."""
        if not self.background:
            work()
            return
        if self._thread is None:
            self._thread = threading.Thread(target=self._loop, name=self.name, daemon=True)
            self._thread.start()
        self._queue.put(work)  # blocks when MAX_QUEUED are waiting: back-pressure, not unbounded memory

    def wait(self) -> None:
        """Until everything submitted so far has run."""
        if self._thread is not None:
            self._queue.join()

    def take_error(self) -> BaseException | None:
        """The error that stopped the writing, once (None if none)."""
        error, self._error = self._error, None
        return error

    def close(self, timeout: float = 60) -> None:
        if self._thread is not None:
            self._queue.put(None)
            self._thread.join(timeout=timeout)
            self._thread = None

    def _loop(self) -> None:
        while True:
            work = self._queue.get()
            try:
                if work is None:
                    return
                if self._error is None and not self.skip():
                    work()
            except BaseException as exc:  # handed to the submitting thread at its next take_error()
                self._error = exc
            finally:
                self._queue.task_done()
