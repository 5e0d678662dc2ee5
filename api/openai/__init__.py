"""The OpenAI-compatible fine-tuning API under /v1 (files, fine_tuning/jobs with events and checkpoints, models),
so the official `openai` client works with `base_url=http://host:port/v1`. The same rows as the native API:
/v1/files are the datasets, /v1/fine_tuning/jobs the jobs. See docs/OPENAI.md."""

from fastapi import APIRouter

from api.openai import files, fine_tuning, models

router = APIRouter(prefix="/v1")
for _module in (files, fine_tuning, models):
    router.include_router(_module.router)
