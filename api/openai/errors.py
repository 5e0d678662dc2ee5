"""The error mapping of /v1. Every error already has the OpenAI shape `{"error": {message, type, param, code}}`
(api/errors.py installs it for the whole app, FastAPI's validation errors included, as 400). What differs here:

- A training file that fails validation is 400 (the client's BadRequestError), not the native 422; the message
  names the first problem's line and `problems` lists them all.
- Native parameter names are renamed to the request's (dataset_id -> training_file, ...), see mapping.py.
- Statuses the client retries (408, 409, 429, 5xx) are used only for conditions that pass (429 over the rate
  limit); nothing permanent is ever 409 or 5xx. A broker that is down at job creation is no error at all: the
  job is created `queued` and the workers' sweep sends it later (worker/recovery.py).
"""

from __future__ import annotations

import contextlib

from api.errors import APIError
from api.openai.mapping import remap_error


@contextlib.contextmanager
def openai_errors(sources: dict[str, str] | None = None):
    try:
        yield
    except APIError as exc:
        error = remap_error(exc, sources or {})
        if error.status_code == 422:
            error.status_code = 400
        raise error from None
