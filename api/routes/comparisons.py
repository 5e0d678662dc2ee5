"""/api/v1/comparisons: compare methods. Create (a group of ordinary jobs, all or none), list, get, the report (JSON
and markdown), cancel, delete. Tenant-scoped like jobs: another tenant's comparison is a 404."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from sqlalchemy import select

from api.conditional import NOT_MODIFIED, conditional, row_state
from api.deps import ComparisonDep, CurrentTenant, SessionDep, SettingsDep, read_outside_a_transaction
from api.limits import RateLimited, charge_creations
from api.models import Comparison
from api.pagination import AfterParam, LimitParam, newest_first
from api.query import KNOWN_QUERY
from api.schemas import ListPage
from api.schemas.comparisons import ComparisonCreate, ComparisonDeleted, ComparisonPublic, ComparisonReport
from api.services import comparison_report as report_service
from api.services import comparisons as service
from api.services.comparison_markdown import report_markdown

router = APIRouter(prefix="/comparisons", tags=["comparisons"])


def _public(session: SessionDep, comparison: Comparison) -> ComparisonPublic:
    return service.comparison_views(session, [comparison])[0]


@router.post("", status_code=201, response_model=ComparisonPublic, dependencies=[RateLimited])
def create_comparison(
    body: ComparisonCreate, request: Request, session: SessionDep, tenant: CurrentTenant, settings: SettingsDep
):
    """Every selector in `methods` at every budget in `budgets`, plus full (unless `include_full` is false), once
    per seed 0..seeds-1: ordinary jobs, validated as POST /jobs validates one, created all or none and dispatched
    seed by seed. 400 `comparison_too_large` over UDS_MAX_COMPARISON_JOBS. It costs the key's rate limit one
    creation per job (429 `rate_limit_exceeded` with Retry-After), as that many POST /jobs would: one when asked,
    like any creation, the rest once the comparison is valid (a refused one costs no more than a refused job)."""

    def charge_the_rest(jobs: int) -> None:
        if jobs > 1:
            charge_creations(request, tenant, settings, jobs - 1)

    comparison = service.create_comparison(
        session, tenant, settings, request.app.state.dispatcher, body, charge=charge_the_rest
    )
    return _public(session, comparison)


@router.get("", response_model=ListPage[ComparisonPublic], dependencies=[KNOWN_QUERY])
def list_comparisons(session: SessionDep, tenant: CurrentTenant, limit: LimitParam = 20, after: AfterParam = None):
    """Newest first; `after=<comparison id>` continues with older ones."""
    stmt = select(Comparison).where(Comparison.tenant_id == tenant.id)
    rows, has_more = newest_first(session, Comparison, stmt, after, limit, tenant.id)
    return ListPage[ComparisonPublic].page(service.comparison_views(session, rows), has_more=has_more)


def _unchanged(
    request: Request, response: Response, session: SessionDep, comparison: Comparison, *more: object
) -> Response | None:
    # What the comparison and its report are made of: its row and its runs' progress (one small query). Reads
    # only, like the lookups.
    read_outside_a_transaction(session)
    return conditional(request, response, row_state(comparison), service.runs_state(session, comparison), *more)


@router.get("/{comparison_id}", response_model=ComparisonPublic, responses=NOT_MODIFIED)
def get_comparison(comparison: ComparisonDep, session: SessionDep, request: Request, response: Response):
    if (unchanged := _unchanged(request, response, session, comparison)) is not None:
        return unchanged
    return _public(session, comparison)


@router.get("/{comparison_id}/report", response_model=ComparisonReport, responses=NOT_MODIFIED)
def comparison_report(
    comparison: ComparisonDep, session: SessionDep, settings: SettingsDep, request: Request, response: Response
):
    """The paired comparison of the succeeded runs so far (`complete` once every job has finished)."""
    read_outside_a_transaction(session)
    labels = report_service.label_source(session, settings, comparison)
    if (unchanged := _unchanged(request, response, session, comparison, labels)) is not None:
        return unchanged
    return report_service.comparison_report(session, settings, comparison)


@router.get(
    "/{comparison_id}/report.md",
    response_class=Response,
    responses={200: {"content": {"text/markdown": {}}, "description": "the report as a markdown document"}},
)
def comparison_report_markdown(comparison: ComparisonDep, session: SessionDep, settings: SettingsDep):
    report = report_service.comparison_report(session, settings, comparison)
    return Response(
        report_markdown(comparison, report),
        media_type="text/markdown; charset=utf-8",
        headers={"Content-Disposition": f'attachment; filename="{comparison.id}-report.md"'},
    )


@router.post("/{comparison_id}/cancel", response_model=ComparisonPublic)
def cancel_comparison(comparison: ComparisonDep, session: SessionDep):
    """Every unfinished job cancelled as POST /jobs/{id}/cancel does (queued ones at once, running ones at their
    next step). Finished jobs stay as they are, so this may be repeated."""
    service.cancel_comparison(session, comparison)
    return _public(session, comparison)


@router.delete("/{comparison_id}", response_model=ComparisonDeleted)
def delete_comparison(comparison: ComparisonDep, session: SessionDep, settings: SettingsDep):
    """The comparison and its jobs (as DELETE /jobs/{id} deletes each). 409 `comparison_not_finished` while one of
    its jobs is queued or running: cancel it first and wait for the jobs to stop."""
    comparison_id = comparison.id  # read now: the row is gone afterwards
    service.delete_comparison(session, settings, comparison)
    return ComparisonDeleted(id=comparison_id)
