"""The REST service: FastAPI app, settings, database models and sessions.

Never imports torch (or anything of worker/): the API process must start in a second and run on hosts
without a GPU stack. tests/api/test_no_torch.py holds the line.

Two rooms. The persistence core is what the workers share with the API: `api.models` (the tables), `api.db`
(engines and sessions), `api.settings`, `api.events` and `api.webhook_outbox` (a job's event and the webhook
deliveries it owes), `api.dispatch` (handing work to the workers), `api.ids` and `api.targets`. It imports
nothing else of api/, and worker/ imports nothing of api/ but it (tests/api/test_no_torch.py checks both). The
rest (routes, schemas, services, the OpenAI-compatible API, the dashboard) is the web service.
"""
