"""The randomized fault soak (benchmarks/soak.py), short: about two minutes of seeded work from four tenants while
workers and the API are killed, Redis restarted, Postgres connections terminated and a quota filled, then the
drain and every invariant. Zero violations."""

from __future__ import annotations

import pytest

from benchmarks import soak
from benchmarks.stack import ServiceUnavailable
from tests.utils.service import unavailable

pytestmark = [pytest.mark.slow, pytest.mark.services]


def test_a_short_soak_keeps_every_invariant(tmp_path):
    try:
        report = soak.run(seed=7, seconds=100, work=tmp_path, drain_seconds=180)
    except ServiceUnavailable as exc:
        unavailable("the soak's services", exc)
    assert report["faults_total"] >= 2 and report["jobs_total"] >= 3, report
    assert report["checks_total"] > report["jobs_total"], report
    assert report["violations"] == [], soak.markdown(report)
