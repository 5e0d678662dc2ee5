"""Running the service's own processes from Python: a fresh Postgres database, the child environment of an API or
worker process, and child processes with their output in a log file. Used by the load benchmark and, through
tests/utils/service.py, by the tests that start a real stack.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import socket
import subprocess
import sys
from pathlib import Path

from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from api.db import dispose_all

REPO = Path(__file__).resolve().parents[1]
POSTGRES_URL = os.environ.get("UDS_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres")


class Unavailable(RuntimeError):
    """A service the caller needs (Postgres) is not reachable."""


def _with_database(url: str, name: str) -> str:
    return make_url(url).set(database=name).render_as_string(hide_password=False)


@contextlib.contextmanager
def fresh_postgres_database(prefix: str = "uds_test", server_url: str = POSTGRES_URL):
    """Create an empty database on the server, yield its URL, drop it afterwards. Unavailable if the server is not
    reachable."""
    name = f"{prefix}_{secrets.token_hex(4)}"
    admin = create_engine(server_url, isolation_level="AUTOCOMMIT", pool_pre_ping=True)
    try:
        with admin.connect() as connection:
            connection.execute(text(f'CREATE DATABASE "{name}"'))
    except Exception as exc:
        admin.dispose()
        raise Unavailable(f"PostgreSQL at {server_url} is not reachable ({exc})") from exc
    url = _with_database(server_url, name)
    try:
        yield url
    finally:
        dispose_all()
        with admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def child_env(**overrides: str) -> dict[str, str]:
    """The environment for a server or worker process: the repo importable, one CPU thread (2-core machine)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("UDS_")}
    env.update(
        {
            "PYTHONPATH": str(REPO) + os.pathsep + env.get("PYTHONPATH", ""),
            "OMP_NUM_THREADS": "1",
            "MKL_NUM_THREADS": "1",
            "TOKENIZERS_PARALLELISM": "false",
            "HF_HUB_OFFLINE": "1",
            "TRANSFORMERS_OFFLINE": "1",
            "PYTHONUNBUFFERED": "1",
        }
    )
    env.update(overrides)
    return env


def distributed_env(
    database_url: str, broker_url: str, queue: str, data_dir, key: str, tenant: str, **overrides: str
) -> dict[str, str]:
    """`child_env` for an API or worker process of the distributed stack (Postgres + a Redis broker), with auth on,
    the bootstrap key and tenant, small datasets allowed and the CPU as device; `overrides` add or replace."""
    return child_env(
        UDS_DATABASE_URL=database_url,
        UDS_BROKER_URL=broker_url,
        UDS_QUEUE=queue,
        UDS_DATA_DIR=str(data_dir),
        UDS_BOOTSTRAP_API_KEY=key,
        UDS_BOOTSTRAP_TENANT=tenant,
        UDS_REQUIRE_AUTH="true",
        UDS_MIN_EXAMPLES="8",
        UDS_DEVICE="cpu",
        **overrides,
    )


class Process:
    """A child process with its output in a log file (read back on failure)."""

    def __init__(self, args: list[str], env: dict[str, str], log_path: Path):
        self.log_path = log_path
        self._log = open(log_path, "ab")
        # A new session, so stop() can end the whole group (celery's prefork children included).
        self.proc = subprocess.Popen(
            args, env=env, cwd=REPO, stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True
        )

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


class Worker(Process):
    """`uds worker` (one process) in a child process; `preload` as for Server."""

    def __init__(self, env: dict[str, str], log_path: Path, queue: str, name: str, preload: str = ""):
        code = (
            f"{preload}\nfrom cli.worker import run_worker; "
            f"run_worker(concurrency=1, queues={queue!r}, hostname={name!r})"
        )
        super().__init__([sys.executable, "-c", code], env, log_path)
