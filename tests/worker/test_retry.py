"""Lost database connections are retried with backoff; other errors are not."""

from __future__ import annotations

import pytest
from sqlalchemy.exc import IntegrityError, OperationalError

from worker.retry import with_retries


def test_lost_connection_is_retried_with_growing_delays():
    calls, sleeps = [], []

    def flaky():
        calls.append(1)
        if len(calls) < 4:
            raise OperationalError("SELECT 1", {}, Exception("terminating connection due to administrator command"))
        return "ok"

    assert with_retries(flaky, "test", sleep=sleeps.append) == "ok"
    assert len(calls) == 4 and sleeps == [0.1, 0.2, 0.4]


def test_gives_up_after_the_last_attempt_and_never_retries_other_errors():
    sleeps = []

    def down():
        raise OperationalError("SELECT 1", {}, Exception("connection refused"))

    with pytest.raises(OperationalError):
        with_retries(down, "test", attempts=3, sleep=sleeps.append)
    assert len(sleeps) == 2

    calls = []

    def conflict():
        calls.append(1)
        raise IntegrityError("INSERT", {}, Exception("duplicate key"))

    with pytest.raises(IntegrityError):
        with_retries(conflict, "test", sleep=sleeps.append)
    assert calls == [1]
