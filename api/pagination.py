"""Cursor pagination, newest first: `limit` plus `after=<id of the last object you saw>`.

Ordering is (created_at DESC, id DESC), so objects created in the same microsecond still have one total order,
and `has_more` is exact because one extra row is fetched.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Query
from sqlalchemy import Select, and_, or_, select
from sqlalchemy.orm import Session

from api.errors import invalid_cursor

LimitParam = Annotated[int, Query(ge=1, le=100, description="Page size (1-100).")]
AfterParam = Annotated[str | None, Query(max_length=64, description="Return objects older than this id.")]


def newest_first(session: Session, model, stmt: Select, after: str | None, limit: int, tenant_id: int):
    if after is not None:
        cursor = session.execute(
            select(model.created_at, model.id).where(model.id == after, model.tenant_id == tenant_id)
        ).first()
        if cursor is None:
            raise invalid_cursor(f"no object with id {after!r} to continue from.")
        created_at, cursor_id = cursor
        stmt = stmt.where(
            or_(model.created_at < created_at, and_(model.created_at == created_at, model.id < cursor_id))
        )
    return fetch_page(session, stmt.order_by(model.created_at.desc(), model.id.desc()), limit)


def fetch_page(session: Session, stmt: Select, limit: int) -> tuple[list, bool]:
    """The first `limit` objects of the ordered `stmt`, and whether more follow (one extra row is read to know)."""
    rows = list(session.scalars(stmt.limit(limit + 1)))
    return rows[:limit], len(rows) > limit
