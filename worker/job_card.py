"""What the model card of a finished job says, gathered from its rows (uds/model_card.py writes it)."""

from __future__ import annotations

from sqlalchemy import select

from api.ids import fine_tuned_model_name
from api.models import Dataset, Job, StepMetric
from uds.model_card import CardInfo


def card_info(sessions, job: Job, organization: str, steps: int) -> CardInfo:
    config = job.config or {}
    with sessions() as session:
        dataset = session.get(Dataset, job.dataset_id)
        # The last step that has a loss, and the last evaluation (they need not be the same step).
        loss = session.scalar(
            select(StepMetric.loss)
            .where(StepMetric.job_id == job.id, StepMetric.loss.is_not(None))
            .order_by(StepMetric.step.desc())
            .limit(1)
        )
        eval_loss = session.scalar(
            select(StepMetric.eval_loss)
            .where(StepMetric.job_id == job.id, StepMetric.eval_loss.is_not(None))
            .order_by(StepMetric.step.desc())
            .limit(1)
        )
    return CardInfo(
        base_model=config.get("model", job.model),
        dataset=dataset.filename if dataset else job.dataset_id,
        examples=dataset.n_examples if dataset else 0,
        method=job.method,
        budget=job.budget,
        steps=steps,
        final_loss=loss,
        final_eval_loss=eval_loss,
        lora_r=config.get("lora_r"),
        lora_alpha=config.get("lora_alpha"),
        lora_targets=config.get("lora_targets"),
        name=fine_tuned_model_name(job.model, organization, job.suffix, job.id),
    )
