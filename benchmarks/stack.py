"""The distributed stack as child processes, for the tests that start it and for benchmarks (which must not import
tests/): Postgres databases of their own, a redis-server of its own (restartable without touching a shared one),
`uds serve` and `uds worker` processes with their output in log files."""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[1]
POSTGRES_URL = os.environ.get("UDS_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres")


class ServiceUnavailable(RuntimeError):
    """Postgres or redis-server is not there to start the stack on."""


def _with_database(url: str, name: str) -> str:
    from sqlalchemy.engine import make_url

    return make_url(url).set(database=name).render_as_string(hide_password=False)


@contextlib.contextmanager
def postgres_database(prefix: str = "uds_test"):
    """Create an empty database on the Postgres server, yield its URL, drop it afterwards."""
    from sqlalchemy import create_engine, text

    name = f"{prefix}_{secrets.token_hex(4)}"
    admin = create_engine(POSTGRES_URL, isolation_level="AUTOCOMMIT", pool_pre_ping=True)
    try:
        with admin.connect() as connection:
            connection.execute(text(f'CREATE DATABASE "{name}"'))
    except Exception as exc:
        admin.dispose()
        raise ServiceUnavailable(f"PostgreSQL at {POSTGRES_URL} is not reachable ({exc})") from exc
    url = _with_database(POSTGRES_URL, name)
    try:
        yield url
    finally:
        from api.db import dispose_all

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


def wait_for(predicate, timeout: float, what: str, interval: float = 0.2, on_timeout=None):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            detail = on_timeout() if on_timeout else ""
            raise AssertionError(f"timed out after {timeout}s waiting for {what}\n{detail}")
        time.sleep(interval)


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


class Server(Process):
    """`uds serve` in a child process. `preload`: Python code run first there (a StepHold of tests/utils/hold.py)."""

    def __init__(self, port: int, env: dict[str, str], log_path: Path, host: str = "127.0.0.1", preload: str = ""):
        code = f"{preload}\nfrom cli.service import serve; serve(host={host!r}, port={port})"
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
    """`uds worker` (one process) in a child process; `preload` as for Server."""

    def __init__(self, env: dict[str, str], log_path: Path, queue: str, name: str, preload: str = ""):
        code = (
            f"{preload}\nfrom cli.worker import run_worker; "
            f"run_worker(concurrency=1, queues={queue!r}, hostname={name!r})"
        )
        super().__init__([sys.executable, "-c", code], env, log_path)


class RedisServer(Process):
    """A redis-server of our own on `port`: restartable without touching a shared one."""

    def __init__(self, port: int, log_path: Path):
        if shutil.which("redis-server") is None:
            raise ServiceUnavailable("redis-server is not installed")
        self.port = port
        args = ["--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
        super().__init__([shutil.which("redis-server") or "redis-server", *args], os.environ.copy(), log_path)
        self.wait()

    def wait(self) -> None:
        import redis

        def up():
            try:
                return redis.Redis(port=self.port, socket_connect_timeout=0.5).ping()
            except redis.RedisError:
                return False

        wait_for(up, 20, f"redis-server on {self.port}", on_timeout=self.log)
