"""The trainer's per-step length diagnostic reaches step_metrics.stats unchanged, and the API's per-job aggregate
over the stored steps equals the trainer's own running figure (its run summary): one real run of uds-tiny."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from api.db import migrate
from api.models import Job, JobEvent, StepMetric
from api.services.length_bias import job_length_bias
from worker.runner import run_job

pytestmark = pytest.mark.slow

LENGTH_KEYS = {
    "spearman_utility_length",
    "spearman_score_length",
    "groups_with_utility_rho",
    "groups_with_score_rho",
    "mean_length_candidates",
    "mean_length_selected",
}


@pytest.fixture(scope="module")
def database_url(tmp_path_factory):
    url = f"sqlite:///{tmp_path_factory.mktemp('length') / 'length.db'}"
    migrate(url)
    return url


def test_steps_store_groups_and_length_and_the_job_figure_matches_the_trainer(sessions, make_job, tiny_in_data_dir):
    job_id = make_job(rows=48, groups_per_step=2, max_steps=3, alpha="auto", checkpoint_every=3)
    assert run_job(job_id, "me:1:len", tiny_in_data_dir) == "succeeded"
    with sessions() as session:
        rows = session.execute(
            select(StepMetric.candidates, StepMetric.selected, StepMetric.stats)
            .where(StepMetric.job_id == job_id)
            .order_by(StepMetric.step)
        ).all()
        summaries = [
            d
            for d in session.scalars(
                select(JobEvent.data).where(JobEvent.job_id == job_id, JobEvent.type == "succeeded")
            )
            if d and "alpha_paper" in d
        ]
        figure = job_length_bias(session, session.get(Job, job_id))
    assert len(rows) == 3
    for candidates, selected, stats in rows:
        assert stats["groups"] == 2 and candidates == 16 and selected == 4  # 2 groups of 8, k = 2 of each
        assert set(stats["length"]) == LENGTH_KEYS
        assert 0 <= stats["length"]["groups_with_utility_rho"] <= 2
    (summary,) = summaries
    for name in ("spearman_utility_length", "spearman_score_length", "mean_length_candidates", "mean_length_selected"):
        assert figure[name] == pytest.approx(summary[name]), name
    assert figure["steps"] == 3 and figure["groups"] == 6
    assert figure["alpha_setting"] == "auto" and figure["alpha_paper"] == pytest.approx(summary["alpha_paper"])
