"""Entry points behind `uds serve`, `uds keys create`, `uds keys revoke` and `uds demo` (wired in uds/cli.py).

`serve()` is the one place in api/ that reaches into worker/: in the embedded mode (no broker) it starts the
in-process worker thread next to the HTTP server. The import is lazy and torch loads only when a job runs.
"""

from __future__ import annotations

import logging
import sys
import threading

from api.settings import Settings, get_settings, is_loopback

log = logging.getLogger("uds.serve")


def _configure_logging(level: str) -> None:
    logging.basicConfig(level=level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")


def serve(host: str | None = None, port: int | None = None, settings: Settings | None = None,
          log_level: str = "info", on_ready=None) -> int:
    """Run the API (and, without UDS_BROKER_URL, the in-process worker) until interrupted.

    host/port default to UDS_HOST/UDS_PORT (127.0.0.1:8000). Binding anywhere but loopback requires API keys.
    """
    import uvicorn

    from api.main import create_app, prepare

    settings = settings or get_settings()
    updates = {k: v for k, v in (("host", host), ("port", port)) if v is not None}
    if updates:
        settings = settings.model_copy(update=updates)
    _configure_logging(log_level)
    if not is_loopback(settings.host) and settings.require_auth is False:
        log.error("UDS_REQUIRE_AUTH=false is only allowed on a loopback address; refusing to serve on %s "
                  "without API keys.", settings.host)
        return 2
    prepare(settings)  # migrate before the worker thread or the first request touches the database

    worker = None
    if settings.embedded and settings.embedded_worker:
        from worker.embedded import EmbeddedWorker

        worker = EmbeddedWorker(settings)
        worker.start()
    mode = "embedded (SQLite/in-process worker)" if settings.embedded else f"distributed (queue {settings.queue})"
    log.info("UDS service on http://%s:%s, %s, data in %s, API keys %s", settings.host, settings.port, mode,
             settings.data_dir, "required" if settings.auth_required else "optional on loopback")
    if on_ready is not None:
        threading.Thread(target=on_ready, args=(settings,), daemon=True).start()
    config = uvicorn.Config(create_app(settings), host=settings.host, port=settings.port, log_level=log_level,
                            proxy_headers=False, timeout_graceful_shutdown=10)
    try:
        uvicorn.Server(config).run()
    finally:
        if worker is not None:
            # The running job stops at its next step and goes back to `queued`; the next start resumes it.
            worker.stop()
    return 0


def keys_create(tenant: str, name: str | None = None, settings: Settings | None = None) -> int:
    """Create an API key for `tenant` (created if new) and print it: the only time it is shown."""
    from api.auth import add_key
    from api.db import migrate, session_factory

    settings = settings or get_settings()
    if not tenant or len(tenant) > 128:
        print("error: --tenant must be 1-128 characters", file=sys.stderr)
        return 2
    migrate(settings.sqlalchemy_url)
    with session_factory(settings.sqlalchemy_url)() as session:
        key = add_key(session, tenant, name=name)
        session.commit()
    print(key)
    return 0


def keys_revoke(key_or_prefix: str, settings: Settings | None = None) -> int:
    """Revoke one key, given whole or by its shown prefix (`uds-` + 6 characters). Takes effect at the next
    request: every request looks its key up in the database, nothing is cached."""
    from sqlalchemy import select, update

    from api.auth import KEY_PREFIX, hash_key
    from api.db import migrate, session_factory
    from api.models import ApiKey, utcnow

    settings = settings or get_settings()
    value = key_or_prefix.strip()
    if not value.startswith(KEY_PREFIX) or len(value) < len(KEY_PREFIX) + 6:
        print(f"error: give the key or its prefix ({KEY_PREFIX} and at least 6 more characters)", file=sys.stderr)
        return 2
    migrate(settings.sqlalchemy_url)
    with session_factory(settings.sqlalchemy_url).begin() as session:
        condition = ApiKey.key_hash == hash_key(value)
        if len(value) <= 16:  # the stored prefix column; a whole key is longer
            condition = ApiKey.prefix == value[:16]
        ids = session.scalars(select(ApiKey.id).where(condition, ApiKey.revoked_at.is_(None))).all()
        if not ids:
            print(f"error: no active key matches {value!r}", file=sys.stderr)
            return 1
        if len(ids) > 1:
            print(f"error: {len(ids)} active keys start with {value!r}; give the whole key", file=sys.stderr)
            return 2
        session.execute(update(ApiKey).where(ApiKey.id == ids[0]).values(revoked_at=utcnow()))
    print(f"revoked key {value[:len(KEY_PREFIX) + 6]}...")
    return 0


def demo(port: int | None = None, settings: Settings | None = None) -> int:
    """The embedded service, plus a demo dataset and two jobs on uds-tiny (uds and random) to watch."""

    def submit(settings: Settings) -> None:
        import json
        import random
        import time

        import httpx

        base = f"http://{settings.host}:{settings.port}"
        for _ in range(300):
            try:
                if httpx.get(base + "/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.2)
        rng = random.Random(0)
        rows = []
        for _ in range(256):
            word = "".join(rng.choice("abcdefgh") for _ in range(rng.randint(3, 6)))
            task = rng.choice(["Reverse", "Copy", "Upper"])
            answer = {"Reverse": word[::-1], "Copy": word, "Upper": word.upper()}[task]
            rows.append({"messages": [{"role": "user", "content": f"{task}: {word}"},
                                      {"role": "assistant", "content": answer}]})
        body = "".join(json.dumps(r) + "\n" for r in rows).encode()
        with httpx.Client(base_url=base, timeout=60) as client:
            dataset = client.post("/api/v1/datasets", files={"file": ("demo.jsonl", body)}).json()
            for method in ("uds", "random"):
                job = client.post("/api/v1/jobs", json={
                    "dataset_id": dataset["id"], "model": "uds-tiny", "method": method, "budget": 0.25,
                    "candidate_batch_size": 16, "epochs": 2, "max_seq_len": 64, "learning_rate": 1e-3,
                    "name": f"demo {method}"}).json()
                log.info("demo job %s (%s): %s/api/v1/jobs/%s", job.get("id"), method, base, job.get("id"))

    settings = settings or get_settings()
    if settings.broker_url is not None:
        settings = settings.model_copy(update={"broker_url": None})
    return serve(port=port, settings=settings, on_ready=submit)
