"""`integrations` of a job: trackers its step metrics are mirrored to by the worker (worker/integrations.py).

The shape follows OpenAI's fine-tuning `integrations` (`{"type": "wandb", "wandb": {"project", ...}}`), plus MLflow
as `{"type": "mlflow", "tracking_uri", "experiment"}`. A tracker that is down never fails the job.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

from api.errors import APIError
from api.settings import Settings
from api.targets import TargetError, check_url


class MlflowIntegration(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    type: Literal["mlflow"]
    tracking_uri: str = Field(
        max_length=2048,
        description="http(s)://... of an MLflow server (file:... where UDS_ALLOW_PRIVATE_TARGETS allows it).",
    )
    experiment: str = Field(default="uds", min_length=1, max_length=256)
    run_name: str | None = Field(default=None, max_length=256, description="Default: the job's id.")


class WandbSettings(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    project: str = Field(min_length=1, max_length=128)
    name: str | None = Field(default=None, max_length=128)
    entity: str | None = Field(default=None, max_length=128)
    tags: list[str] | None = Field(default=None, max_length=20)


class WandbIntegration(BaseModel):
    """Runs in W&B offline mode (the run is written under the job's folder; `wandb sync` uploads it)."""

    model_config = ConfigDict(extra="forbid", strict=True)
    type: Literal["wandb"]
    wandb: WandbSettings


Integration = Annotated[MlflowIntegration | WandbIntegration, Field(discriminator="type")]


def check_integrations(integrations: list | None, settings: Settings) -> list[dict] | None:
    """The integrations as stored on the job, or a 400 naming the one whose target this deployment refuses."""
    if not integrations:
        return None
    for i, integration in enumerate(integrations):
        if integration.type == "mlflow":
            try:
                check_url(integration.tracking_uri, settings.private_targets_allowed, ("http", "https", "file"))
            except TargetError as exc:
                raise APIError(
                    400,
                    f"integrations[{i}].tracking_uri: {exc}.",
                    code="invalid_url",
                    param=f"integrations[{i}].tracking_uri",
                ) from None
    return [integration.model_dump() for integration in integrations]
