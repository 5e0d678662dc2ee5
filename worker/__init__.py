"""Runs jobs: a thin Celery task (distributed mode) or a thread in `uds serve` (embedded mode), both calling
`worker.runner.run_job(job_id, worker_id)`, which claims the job row, calls uds.trainer.train and records the result.
"""
