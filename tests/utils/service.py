"""Helpers for tests that need real services: fresh Postgres databases, Redis, and server/worker processes.

When UDS_REQUIRE_SERVICES=1 (CI), a missing Postgres or Redis fails the test instead of skipping it.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

REPO = Path(__file__).resolve().parents[2]
POSTGRES_URL = os.environ.get("UDS_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres")
REDIS_URL = os.environ.get("UDS_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


def services_required() -> bool:
    return os.environ.get("UDS_REQUIRE_SERVICES", "") not in ("", "0", "false", "no")


def unavailable(what: str, why: object) -> None:
    message = f"{what} is not reachable ({why})"
    if services_required():
        pytest.fail(message + "; UDS_REQUIRE_SERVICES=1 makes this a failure", pytrace=False)
    pytest.skip(message)


def _with_database(url: str, name: str) -> str:
    from sqlalchemy.engine import make_url

    return make_url(url).set(database=name).render_as_string(hide_password=False)


@contextlib.contextmanager
def fresh_postgres_database(prefix: str = "uds_test"):
    """Create an empty database on the test server, yield its URL, drop it afterwards."""
    from sqlalchemy import create_engine, text

    name = f"{prefix}_{secrets.token_hex(4)}"
    admin = create_engine(POSTGRES_URL, isolation_level="AUTOCOMMIT", pool_pre_ping=True)
    try:
        with admin.connect() as connection:
            connection.execute(text(f'CREATE DATABASE "{name}"'))
    except Exception as exc:
        admin.dispose()
        unavailable("PostgreSQL at " + POSTGRES_URL, exc)
    url = _with_database(POSTGRES_URL, name)
    try:
        yield url
    finally:
        from api.db import dispose_all

        dispose_all()
        with admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def require_redis() -> str:
    import redis

    try:
        redis.Redis.from_url(REDIS_URL, socket_connect_timeout=2).ping()
    except Exception as exc:
        unavailable("Redis at " + REDIS_URL, exc)
    return REDIS_URL


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def child_env(**overrides: str) -> dict[str, str]:
    """The environment for a server or worker process: the repo importable, one CPU thread (2-core machine)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("UDS_")}
    env.update({
        "PYTHONPATH": str(REPO) + os.pathsep + env.get("PYTHONPATH", ""),
        "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false",
        "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "PYTHONUNBUFFERED": "1",
    })
    env.update(overrides)
    return env


class Process:
    """A child process with its output in a log file (read back on failure)."""

    def __init__(self, args: list[str], env: dict[str, str], log_path: Path):
        self.log_path = log_path
        self._log = open(log_path, "ab")
        # A new session, so stop() can end the whole group (celery's prefork children included).
        self.proc = subprocess.Popen(args, env=env, cwd=REPO, stdout=self._log, stderr=subprocess.STDOUT,
                                     start_new_session=True)

    def alive(self) -> bool:
        return self.proc.poll() is None

    def log(self, tail: int = 6000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-tail:]
        except FileNotFoundError:
            return ""

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30) -> None:
        if self.alive():
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)
        self._log.close()

    def kill(self) -> None:
        """SIGKILL the group: a crash, no cleanup."""
        self.stop(signal.SIGKILL)


class Server(Process):
    def __init__(self, port: int, env: dict[str, str], log_path: Path, host: str = "127.0.0.1"):
        code = f"from api.cli import serve; serve(host={host!r}, port={port})"
        super().__init__([sys.executable, "-c", code], env, log_path)
        self.url = f"http://{host}:{port}"

    def wait_ready(self, timeout: float = 90) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.alive():
                raise AssertionError(f"server exited with {self.proc.returncode}:\n{self.log()}")
            try:
                if httpx.get(self.url + "/readyz", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise AssertionError(f"server not ready after {timeout}s:\n{self.log()}")


class Worker(Process):
    def __init__(self, env: dict[str, str], log_path: Path, queue: str, name: str):
        code = f"from worker.cli import run_worker; run_worker(concurrency=1, queues={queue!r}, hostname={name!r})"
        super().__init__([sys.executable, "-c", code], env, log_path)
