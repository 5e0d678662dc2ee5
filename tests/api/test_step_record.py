"""The step record is declared once (uds.records); the table and the API's model are derived from it or checked
against it, so a field renamed in one place fails here instead of showing None."""

from __future__ import annotations

import datetime as dt
from types import SimpleNamespace

import pytest
from pydantic import ValidationError

from api.models import StepMetric
from api.schemas import MetricPublic, metric_public
from uds.records import METRIC_FIELDS, StepRecord

KEYS = {"step", "stats", "created_at"}


def test_the_step_table_has_a_column_for_each_stored_field_of_the_record():
    assert set(StepMetric.__table__.columns.keys()) == KEYS | {"job_id"} | set(METRIC_FIELDS)
    assert set(METRIC_FIELDS) <= set(StepRecord.__annotations__)


def test_the_public_metric_model_is_the_record_s_stored_fields():
    assert set(MetricPublic.model_fields) == KEYS | set(METRIC_FIELDS)


def test_a_row_missing_a_field_fails_instead_of_reading_none():
    row = {name: 1.0 for name in METRIC_FIELDS} | {"step": 3, "stats": None, "created_at": dt.datetime.now(dt.UTC)}
    assert metric_public(SimpleNamespace(**row)).loss == 1.0
    del row["loss"]
    row["loss_value"] = 1.0
    with pytest.raises(ValidationError, match="loss"):
        metric_public(SimpleNamespace(**row))
