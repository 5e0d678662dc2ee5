"""The REST service: FastAPI app, settings, database models and sessions.

Never imports torch (or anything of worker/): the API process must start in a second and run on hosts
without a GPU stack. tests/api/test_no_torch.py holds the line.
"""
