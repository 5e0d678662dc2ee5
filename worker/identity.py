"""Worker identities and whether the owner of a job is provably gone.

A worker id is "<host>:<pid>:<token>". The token is random per process, so a restarted process that happens to
get the same pid (common in containers, where the worker is pid 1 or 7) is still told apart from its predecessor.
"""

from __future__ import annotations

import datetime as dt
import os
import secrets
import socket

from sqlalchemy import Update, update

from api.models import Job

_token: tuple[int, str] | None = None  # (pid it was made in, token): recomputed after a fork


def worker_id() -> str:
    global _token
    pid = os.getpid()
    if _token is None or _token[0] != pid:
        _token = (pid, secrets.token_hex(4))
    return f"{socket.gethostname()}:{pid}:{_token[1]}"


def owner_is_dead(owner: str | None) -> bool:
    """True only when we can prove it: the owner ran on this host and its process no longer exists.
    Owners on other hosts are judged by their heartbeat alone."""
    if not owner:
        return True
    parts = owner.rsplit(":", 2)
    if len(parts) != 3 or not parts[1].isdigit():
        return False
    host, pid_text, token = parts
    if host != socket.gethostname():
        return False
    pid = int(pid_text)
    if pid == os.getpid():
        return owner != worker_id()  # our pid, another token: a previous incarnation of this process
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False  # exists, owned by someone else
    return False


def owned_update(job_id: str, worker_id: str | None) -> Update:
    """UPDATE of the job fenced by ownership: it matches only while `worker_id` runs the job, so a worker that lost
    the job (re-queued, claimed by another) changes nothing. Check `.rowcount` to know whether it still owns it."""
    return update(Job).where(Job.id == job_id, Job.worker_id == worker_id, Job.status == "running")


def owner_lost(owner: str | None, last_seen: dt.datetime | None, cutoff: dt.datetime) -> bool:
    """Whether a running row's owner is gone: not seen since `cutoff` (or never), or provably dead on this host.
    The one test both recovery sweeps (jobs by heartbeat, tasks by start time) apply."""
    return last_seen is None or last_seen < cutoff or owner_is_dead(owner)
