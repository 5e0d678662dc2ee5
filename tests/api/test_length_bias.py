"""The per-job length-bias diagnostic: the aggregation against a naive computation over every group and example,
and GET /api/v1/jobs/{id}/length-bias over steps written the way the worker writes them."""

from __future__ import annotations

import random

import pytest
from sqlalchemy import update

from api.db import session_factory
from api.events import add_event
from api.models import Job, utcnow
from api.services.length_bias import StepLength, aggregate_length_bias
from tests.utils.factories import bearer, chat_rows, create_job, jsonl, upload
from worker.db_logger import DbLogger


def fake_run(seed: int, n_steps: int = 12):
    """Per-group correlations and per-example lengths, and the per-step figures the trainer would report for them
    (uds/diagnostics.py length_bias: means over the groups that have a correlation, and their counts)."""
    rng = random.Random(seed)
    steps, groups_u, groups_s, cand_lengths, sel_lengths = [], [], [], [], []
    for _ in range(n_steps):
        n_groups = rng.randint(1, 5)
        u = [None if rng.random() < 0.2 else rng.uniform(-1, 1) for _ in range(n_groups)]
        s = [None if rng.random() < 0.3 else rng.uniform(-1, 1) for _ in range(n_groups)]
        lengths = [rng.randint(3, 300) for _ in range(n_groups * 4)]
        picked = rng.sample(lengths, n_groups)
        groups_u += [v for v in u if v is not None]
        groups_s += [v for v in s if v is not None]
        cand_lengths += lengths
        sel_lengths += picked
        present_u, present_s = [v for v in u if v is not None], [v for v in s if v is not None]
        length = {
            "spearman_utility_length": sum(present_u) / len(present_u) if present_u else None,
            "spearman_score_length": sum(present_s) / len(present_s) if present_s else None,
            "groups_with_utility_rho": len(present_u),
            "groups_with_score_rho": len(present_s),
            "mean_length_candidates": sum(lengths) / len(lengths),
            "mean_length_selected": sum(picked) / len(picked),
        }
        steps.append(StepLength(len(lengths), len(picked), {"groups": n_groups, "length": length}))
    naive = {
        "spearman_utility_length": sum(groups_u) / len(groups_u),
        "spearman_score_length": sum(groups_s) / len(groups_s),
        "mean_length_candidates": sum(cand_lengths) / len(cand_lengths),
        "mean_length_selected": sum(sel_lengths) / len(sel_lengths),
        "groups_with_utility_rho": len(groups_u),
        "groups_with_score_rho": len(groups_s),
    }
    return steps, naive


@pytest.mark.parametrize("seed", range(5))
def test_aggregate_is_the_mean_over_all_groups_and_examples(seed):
    steps, naive = fake_run(seed)
    got = aggregate_length_bias(steps)
    for name, value in naive.items():
        assert got[name] == pytest.approx(value, rel=1e-12), name
    assert got["steps"] == len(steps) and got["groups"] == sum(s.stats["groups"] for s in steps)
    assert got["selected_to_candidates_length"] == pytest.approx(
        naive["mean_length_selected"] / naive["mean_length_candidates"]
    )


def test_steps_without_the_diagnostic_or_a_figure_are_left_out():
    steps, naive = fake_run(7, n_steps=3)
    older = [StepLength(8, 2, None), StepLength(8, 2, {"candidates": {}}), StepLength(None, None, None)]
    no_scores = StepLength(
        8,
        8,
        {
            "groups": 1,
            "length": {  # `full`: nothing ranked, so no correlation
                "spearman_utility_length": None,
                "spearman_score_length": None,
                "groups_with_utility_rho": 0,
                "groups_with_score_rho": 0,
                "mean_length_candidates": None,
                "mean_length_selected": None,
            },
        },
    )
    got = aggregate_length_bias(older + steps + [no_scores])
    assert got["steps"] == 4 and got["spearman_utility_length"] == pytest.approx(naive["spearman_utility_length"])
    assert got["mean_length_candidates"] == pytest.approx(naive["mean_length_candidates"])
    empty = aggregate_length_bias(older)
    assert empty["steps"] == 0 and empty["spearman_utility_length"] is None
    assert empty["mean_length_selected"] is None and empty["selected_to_candidates_length"] is None


def test_the_endpoint_aggregates_the_stored_steps(client, key, settings):
    dataset = upload(client, key, jsonl(chat_rows(20))).json()
    job = create_job(client, key, dataset["id"], alpha="auto").json()
    url = f"/api/v1/jobs/{job['id']}/length-bias"
    before = client.get(url, headers=bearer(key))
    assert before.status_code == 200, before.text
    assert before.json()["steps"] == 0 and before.json()["spearman_utility_length"] is None

    sessions = session_factory(settings.sqlalchemy_url)
    with sessions.begin() as session:
        session.execute(
            update(Job).where(Job.id == job["id"]).values(status="running", worker_id="w1", heartbeat_at=utcnow())
        )
    steps, naive = fake_run(11, n_steps=6)
    logger = DbLogger(sessions, job["id"], "w1", flush_steps=100, flush_seconds=3600)
    for number, step in enumerate(steps, start=1):
        logger.log_step(
            {
                "step": number,
                "total_steps": 6,
                "candidates": step.candidates,
                "selected": step.selected,
                "alpha": 0.25,
                "stats": step.stats,
                "selections": [],
            }
        )
    logger.flush()
    logger.close()
    with sessions.begin() as session:  # the trainer's run summary, as its "succeeded" event carries it
        add_event(session, job["id"], "succeeded", "Finished.", data={"alpha_paper": 6.5, "alpha": 0.25})

    body = client.get(url, headers=bearer(key)).json()
    assert body["object"] == "job.length_bias" and body["job_id"] == job["id"] and body["steps"] == 6
    for name, value in naive.items():
        assert body[name] == pytest.approx(value), name
    assert body["alpha_setting"] == "auto" and body["alpha_used"] == 0.25 and body["alpha_paper"] == 6.5
