"""GET /metrics for Prometheus: the API's own requests, and the service's work as the database records it.

Two sources, one scrape target:

- Request counters and latency histograms are counted here, in each API process, by an ASGI middleware that labels
  a request with its route template (`/api/v1/jobs/{job_id}`, never the raw path) once routing has matched it.
  Behind `uvicorn --workers N` each process counts its own: with PROMETHEUS_MULTIPROC_DIR set, prometheus_client
  writes them to files in that folder and a scrape of any process sums them all.
- What the workers do (jobs, steps, examples, heartbeats, webhook deliveries) is read from the database at scrape
  time by `DatabaseCollector`. Workers write all of it there already, so the figures are the same whether jobs run
  in the embedded worker thread or in Celery worker processes on other hosts, and no worker needs a port of its
  own. The one figure only a worker process knows, device memory in use, travels in its step records.

Labels stay bounded: method, route template, status, error code, selection method, job status. Never a job,
dataset or key; a tenant only with UDS_METRICS_TENANT_LABELS=1.
"""

from __future__ import annotations

import itertools
import logging
import os
import re
import secrets
import time
from collections.abc import Iterator
from typing import Any

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_PLAIN_0_0_4, CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector
from sqlalchemy import Float, and_, case, func, select
from sqlalchemy.orm import Session, sessionmaker

from api.deps import auth_required_for
from api.errors import APIError
from api.models import FINISHED_STATUSES, JOB_STATUSES, Job, StepMetric, Tenant, WebhookDelivery, utcnow
from api.settings import Settings

log = logging.getLogger(__name__)

METHODS = {"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"}
UNMATCHED = "unmatched"  # no route matched (404s, requests refused before routing): one label, not the raw path
ERROR_CODE = re.compile(r"[a-z][a-z0-9_]{0,63}")
ERROR_BODY_LIMIT = 16 * 1024  # error bodies are small JSON; a larger one is not read for its code
# Seconds: uds-tiny jobs take seconds, real ones hours.
JOB_DURATION_BUCKETS = (10, 30, 60, 300, 900, 1800, 3600, 3 * 3600, 6 * 3600, 12 * 3600, 24 * 3600, 48 * 3600)
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)

# The API process's own figures. Module-level: prometheus_client wants one instance of each per process.
REQUESTS = Counter(
    "uds_http_requests", "API requests answered, by route template and status.", ["method", "route", "status"]
)
LATENCY = Histogram(
    "uds_http_request_duration_seconds",
    "Time from a request's arrival to its response's first byte, by route template.",
    ["method", "route"],
    buckets=LATENCY_BUCKETS,
)
ERRORS = Counter(
    "uds_http_errors",
    "4xx/5xx answers by the error body's stable code (`error.code`; `none` when it has none).",
    ["route", "status", "code"],
)


def multiprocess_dir() -> str | None:
    """PROMETHEUS_MULTIPROC_DIR (prometheus_client reads it once, when it is imported): set for uvicorn --workers."""
    return os.environ.get("PROMETHEUS_MULTIPROC_DIR") or os.environ.get("prometheus_multiproc_dir") or None


# ---- requests -----------------------------------------------------------------------------------------------


def route_template(scope: dict[str, Any]) -> str:
    """The matched route's full path template (`/api/v1/jobs/{job_id}`), from what routing wrote into the scope.

    `scope["route"]` is the route as its router declared it: `/jobs/{job_id}`, without the prefixes of the routers
    it was included in. The prefix is what precedes that route's own part in the matched path; prefixes here are
    fixed text (`/api/v1`, `/v1`), so the label stays a template."""
    route = scope.get("route")
    template = getattr(route, "path_format", None)
    if not template:
        return UNMATCHED
    try:
        convertors = route.param_convertors  # type: ignore[union-attr]
        params = scope.get("path_params") or {}
        own_part = template.format(**{name: convertors[name].to_string(params[name]) for name in convertors})
    except (AttributeError, KeyError, ValueError, IndexError, TypeError):
        return template
    path = scope.get("path", "")
    return path[: len(path) - len(own_part)] + template if path.endswith(own_part) else template


def error_code(body: bytes) -> str:
    import json

    try:
        code = json.loads(body)["error"]["code"]
    except (ValueError, KeyError, TypeError):
        return "none"
    return code if isinstance(code, str) and ERROR_CODE.fullmatch(code) else "none"


class RequestMetricsMiddleware:
    """Counts every HTTP request by method, route template and status; reads the code of 4xx/5xx JSON bodies."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        started = time.perf_counter()
        answer: dict[str, Any] = {"status": 500, "latency": None, "body": None}

        async def observing_send(message):
            if message["type"] == "http.response.start":
                answer["status"] = message["status"]
                answer["latency"] = time.perf_counter() - started
                headers = dict(message.get("headers") or ())
                if message["status"] >= 400 and headers.get(b"content-type", b"").startswith(b"application/json"):
                    answer["body"] = b""
            elif message["type"] == "http.response.body" and answer["body"] is not None:
                if len(answer["body"]) < ERROR_BODY_LIMIT:
                    answer["body"] += message.get("body", b"")
            await send(message)

        try:
            await self.app(scope, receive, observing_send)
        except Exception:
            answer["body"] = b'{"error": {"code": "internal_error"}}'
            raise
        finally:
            record(scope, answer, time.perf_counter() - started)


def record(scope: dict[str, Any], answer: dict[str, Any], elapsed: float) -> None:
    method = scope.get("method", "")
    method = method if method in METHODS else "other"
    route, status = route_template(scope), answer["status"]
    REQUESTS.labels(method, route, str(status)).inc()
    LATENCY.labels(method, route).observe(answer["latency"] if answer["latency"] is not None else elapsed)
    if status >= 400:
        ERRORS.labels(route, str(status), error_code(answer["body"]) if answer["body"] else "none").inc()


# ---- the database -------------------------------------------------------------------------------------------


def _seconds_between(dialect: str, start, end):
    if dialect == "sqlite":  # timestamps are stored as naive UTC text there
        return (func.julianday(end) - func.julianday(start)) * 86400.0
    # date_part, not EXTRACT: EXTRACT gives numeric (slow arithmetic over every finished job), date_part a float.
    return func.date_part("epoch", end - start, type_=Float)


class DatabaseCollector:
    """Figures computed from the database at each scrape: a handful of aggregate queries in one read transaction.

    Counters here are sums over the jobs stored: deleting a job lowers them, which Prometheus' rate() reads as a
    counter reset, as it would a restarted process."""

    def __init__(self, sessions: sessionmaker[Session], tenant_labels: bool = False):
        self.sessions = sessions
        self.tenant_labels = tenant_labels

    def collect(self) -> Iterator[Metric]:
        up = GaugeMetricFamily("uds_metrics_database_up", "1 when this scrape could read the database, else 0.")
        try:
            with self.sessions() as session:
                families = list(self._families(session))
        except Exception:
            log.exception("/metrics: reading the database failed")
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        yield up
        yield from families

    def _families(self, session: Session) -> Iterator[Metric]:
        yield from self._jobs(session)
        yield from self._queue(session)
        yield from self._work(session)
        yield from self._durations(session)
        yield from self._running(session)
        yield from self._webhooks(session)

    def _by_tenant(self, *columns):
        """Columns to group by: these, plus the tenant's name when tenant labels are on."""
        return (*columns, Tenant.name) if self.tenant_labels else columns

    def _labels(self, *names: str) -> list[str]:
        return [*names, "tenant"] if self.tenant_labels else list(names)

    def _select_jobs(self, *columns, aggregates=()):
        query = select(*columns, *aggregates).select_from(Job)
        if self.tenant_labels:
            query = query.join(Tenant, Tenant.id == Job.tenant_id)
        return query.group_by(*columns)

    def _jobs(self, session: Session) -> Iterator[Metric]:
        family = GaugeMetricFamily("uds_jobs", "Jobs stored, by status.", labels=self._labels("status"))
        counts = {
            tuple(row[:-1]): row[-1]
            for row in session.execute(self._select_jobs(*self._by_tenant(Job.status), aggregates=(func.count(),)))
        }
        if not self.tenant_labels:
            for status in JOB_STATUSES:  # every status, zeros included: a panel shows 0, not "no data"
                counts.setdefault((status,), 0)
        for labels, count in sorted(counts.items()):
            family.add_metric(list(labels), count)
        yield family

    def _queue(self, session: Session) -> Iterator[Metric]:
        oldest = session.execute(
            select(Job.created_at).where(Job.status == "queued").order_by(Job.created_at).limit(1)
        ).scalar()
        family = GaugeMetricFamily(
            "uds_queue_oldest_job_age_seconds", "Age of the oldest queued job (since it was created); 0 when none."
        )
        family.add_metric([], max(0.0, (utcnow() - oldest).total_seconds()) if oldest else 0.0)
        yield family

    def _work(self, session: Session) -> Iterator[Metric]:
        labels = self._labels("method")
        families = {
            "scored": CounterMetricFamily(
                "uds_examples_scored", "Candidates scored (forward passes of selection), all jobs.", labels=labels
            ),
            "trained": CounterMetricFamily(
                "uds_examples_trained", "Examples trained on (backward passes), all jobs.", labels=labels
            ),
            "saved": CounterMetricFamily(
                "uds_backward_passes_saved",
                "Examples scored but not trained: backward passes the selection saved.",
                labels=labels,
            ),
            "tokens": CounterMetricFamily("uds_tokens_trained", "Tokens trained on, all jobs.", labels=labels),
            "steps": CounterMetricFamily("uds_job_steps", "Optimizer steps done, all jobs.", labels=labels),
            "seconds": CounterMetricFamily(
                "uds_step_seconds",
                "Step time by part: scoring (scoring and selecting candidates) and training (on the picks).",
                labels=["part", *labels],
            ),
        }
        rows = session.execute(
            self._select_jobs(
                *self._by_tenant(Job.method),
                aggregates=(
                    func.coalesce(func.sum(Job.examples_scored), 0),
                    func.coalesce(func.sum(Job.examples_trained), 0),
                    func.coalesce(func.sum(Job.tokens_trained), 0),
                    func.coalesce(func.sum(Job.current_step), 0),
                    func.coalesce(func.sum(Job.time_scoring), 0.0),
                    func.coalesce(func.sum(Job.time_training), 0.0),
                ),
            )
        )
        for row in rows:
            key = list(row[:-6])
            scored, trained, tokens, steps, scoring, training = row[-6:]
            families["scored"].add_metric(key, scored)
            families["trained"].add_metric(key, trained)
            families["saved"].add_metric(key, max(0, scored - trained))
            families["tokens"].add_metric(key, tokens)
            families["steps"].add_metric(key, steps)
            families["seconds"].add_metric(["scoring", *key], scoring)
            families["seconds"].add_metric(["training", *key], training)
        yield from families.values()

    def _durations(self, session: Session) -> Iterator[Metric]:
        # Each finished job's duration once, then its bucket (the first bound it fits under): one pass over the
        # rows, grouped; the cumulative counts Prometheus wants are added up here.
        seconds = _seconds_between(session.get_bind().dialect.name, Job.started_at, Job.finished_at)
        keys = self._by_tenant(Job.method, Job.status)
        finished = (
            self._select_jobs(*keys, aggregates=(seconds.label("seconds"),))
            .group_by(None)
            .where(and_(Job.status.in_(FINISHED_STATUSES), Job.started_at.is_not(None), Job.finished_at.is_not(None)))
            .subquery()
        )
        columns = [finished.c[i] for i in range(len(keys))]
        bucket = case(
            *((finished.c.seconds <= bound, i) for i, bound in enumerate(JOB_DURATION_BUCKETS)),
            else_=len(JOB_DURATION_BUCKETS),
        ).label("bucket")
        rows = session.execute(
            select(*columns, bucket, func.count(), func.sum(finished.c.seconds)).group_by(*columns, bucket)
        )
        per_key: dict[tuple, tuple[list[int], list[float]]] = {}
        for row in rows:
            counts, total = per_key.setdefault(tuple(row[: len(keys)]), ([0] * (len(JOB_DURATION_BUCKETS) + 1), [0.0]))
            counts[row.bucket] += row[-2]
            total[0] += float(row[-1] or 0.0)
        family = HistogramMetricFamily(
            "uds_job_duration_seconds",
            "Finished jobs' time from first start to finish, by selection method and outcome.",
            labels=self._labels("method", "outcome"),
        )
        for key, (counts, total) in sorted(per_key.items()):
            cumulative = list(itertools.accumulate(counts))
            family.add_metric(
                list(key),
                [(str(float(b)), c) for b, c in zip(JOB_DURATION_BUCKETS, cumulative, strict=False)]
                + [("+Inf", cumulative[-1])],
                sum_value=total[0],
            )
        yield family

    def _running(self, session: Session) -> Iterator[Metric]:
        running = session.execute(select(Job.worker_id, Job.heartbeat_at).where(Job.status == "running")).all()
        now = utcnow()
        beats = [(now - r.heartbeat_at).total_seconds() for r in running if r.heartbeat_at is not None]
        age = GaugeMetricFamily(
            "uds_worker_heartbeat_age_seconds",
            "Oldest heartbeat among running jobs' workers (a job's worker beats while it trains); 0 when none run.",
        )
        age.add_metric([], max(0.0, max(beats)) if beats else 0.0)
        yield age
        workers = GaugeMetricFamily("uds_workers_busy", "Distinct workers that own a running job.")
        workers.add_metric([], len({r.worker_id for r in running if r.worker_id}))
        yield workers
        memory = self._device_memory(session)
        family = GaugeMetricFamily(
            "uds_device_memory_bytes",
            "CUDA memory the running jobs' tensors hold, summed, as each job's latest step reported it.",
        )
        if memory is not None:  # no sample (no series) when no running job trains on a CUDA device
            family.add_metric([], memory)
        yield family

    @staticmethod
    def _device_memory(session: Session) -> int | None:
        """The sum over running jobs of their latest step's figure; None when none reported one (CPU workers)."""
        latest = (
            select(StepMetric.job_id, func.max(StepMetric.step).label("step"))
            .join(Job, Job.id == StepMetric.job_id)
            .where(Job.status == "running")
            .group_by(StepMetric.job_id)
            .subquery()
        )
        rows = session.execute(
            select(StepMetric.stats).join(
                latest, and_(StepMetric.job_id == latest.c.job_id, StepMetric.step == latest.c.step)
            )
        ).scalars()
        reported = [stats.get("device_memory_bytes") for stats in rows if isinstance(stats, dict)]
        figures = [int(f) for f in reported if isinstance(f, int | float)]
        return sum(figures) if figures else None

    def _webhooks(self, session: Session) -> Iterator[Metric]:
        family = GaugeMetricFamily(
            "uds_webhook_deliveries",
            "Webhook deliveries stored, by status (pending, delivered, failed: given up after every attempt).",
            labels=["status"],
        )
        counts = dict(
            session.execute(select(WebhookDelivery.status, func.count()).group_by(WebhookDelivery.status)).all()
        )
        for status in ("pending", "delivered", "failed"):
            counts.setdefault(status, 0)
        for status, count in sorted(counts.items()):
            family.add_metric([status], count)
        yield family


# ---- the endpoint -------------------------------------------------------------------------------------------


class _ThisProcess:
    """The request metrics of this process alone (no multiprocess folder): forwarded into each scrape's registry."""

    def collect(self) -> Iterator[Metric]:
        for metric in (REQUESTS, LATENCY, ERRORS):
            yield from metric.collect()


def exposition(sessions: sessionmaker[Session], settings: Settings) -> bytes:
    registry = CollectorRegistry(auto_describe=False)
    if multiprocess_dir():
        MultiProcessCollector(registry)  # every API process's request metrics, summed
    else:
        registry.register(_ThisProcess())
    registry.register(DatabaseCollector(sessions, settings.metrics_tenant_labels))
    return generate_latest(registry)


def check_access(request: Request, settings: Settings) -> None:
    """The operator's token, never a tenant's key; without a token, only a key-less loopback server's own host."""
    token = settings.metrics_token.get_secret_value() if settings.metrics_token is not None else None
    if token:
        scheme, _, given = (request.headers.get("authorization") or "").strip().partition(" ")
        if scheme.lower() == "bearer" and secrets.compare_digest(given.strip().encode(), token.encode()):
            return
        raise APIError(
            401,
            "/metrics needs the operator's metrics token: send 'Authorization: Bearer <UDS_METRICS_TOKEN>'.",
            code="invalid_metrics_token",
            headers={"WWW-Authenticate": "Bearer"},
        )
    if not auth_required_for(settings, request):
        return
    raise APIError(
        403,
        "/metrics is off on a server that requires API keys until UDS_METRICS_TOKEN is set.",
        code="metrics_disabled",
    )


router = APIRouter()


@router.get("/metrics", include_in_schema=False)
def metrics(request: Request) -> Response:
    settings: Settings = request.app.state.settings
    check_access(request, settings)
    return Response(exposition(request.app.state.sessionmaker, settings), media_type=CONTENT_TYPE_PLAIN_0_0_4)


def install(app: FastAPI) -> None:
    """Call last in create_app: the middleware is then the outermost, so requests refused before routing count too."""
    app.add_middleware(RequestMetricsMiddleware)
    app.include_router(router)
