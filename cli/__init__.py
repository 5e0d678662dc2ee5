"""The `uds` command line: the one composition root, the only package that imports uds/, api/ and worker/.

Each sub-command imports what it needs when it runs, so `uds keys create` never loads torch and `uds train`
never touches a database:

    main.py      the parser and the dispatch to the sub-commands below
    train.py     `uds train`: flags generated from uds.config.TrainConfig, a local run with no service
    progress.py  the progress bar and JSONL files of `uds train`
    export.py    `uds export`: a finished run as a merged folder, or GGUF with an Ollama Modelfile
    service.py   `uds serve` (and the in-process worker of the embedded mode)
    demo.py      `uds demo`: the service plus a demo dataset and two jobs to watch
    keys.py      `uds keys create | revoke`
    worker.py    `uds worker`: a Celery worker for the gpu queue
"""
