"""Retrying database work through a brief outage (a restarted Postgres, connections cut by an administrator or a
proxy, a failover), with exponential backoff.

Only errors that say the connection is gone are retried, and only around work that is safe to repeat: every
worker write is idempotent (delete-then-insert on (job_id, step), conditional updates fenced by ownership), so
repeating a transaction whose commit may or may not have landed gives the same rows. Anything else (a constraint
violation, a bug) is raised at once. After the last attempt the error is raised and the job fails with it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TypeVar

from sqlalchemy.exc import DBAPIError, OperationalError

log = logging.getLogger(__name__)

T = TypeVar("T")

ATTEMPTS = 8
FIRST_DELAY = 0.1
MAX_DELAY = 5.0  # 0.1 + 0.2 + ... capped: about 20 s in all, longer than a Postgres restart or failover takes


def is_transient(error: BaseException) -> bool:
    if isinstance(error, OperationalError):
        return True
    return isinstance(error, DBAPIError) and bool(error.connection_invalidated)


def with_retries(
    work: Callable[[], T],
    what: str,
    attempts: int = ATTEMPTS,
    first_delay: float = FIRST_DELAY,
    sleep: Callable[[float], None] = time.sleep,
) -> T:
    """Run `work()`; on a lost connection run it again after 0.1 s, 0.2 s, 0.4 s, ... (at most MAX_DELAY)."""
    delay = first_delay
    for attempt in range(1, attempts + 1):
        try:
            return work()
        except Exception as error:
            if attempt == attempts or not is_transient(error):
                raise
            log.warning(
                "%s: database unreachable (%s: %s); retry %d of %d in %.1f s",
                what,
                type(error).__name__,
                str(error).splitlines()[0][:200],
                attempt,
                attempts - 1,
                delay,
            )
            sleep(delay)
            delay = min(delay * 2, MAX_DELAY)
    raise AssertionError("unreachable")
