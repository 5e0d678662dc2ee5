"""The `uds` command (see cli/__init__.py for where each sub-command lives).

uds train --data train.jsonl --budget 0.125 --method uds [--config job.yaml] [--output-dir out]
uds export JOB_OR_OUTPUT_DIR [--gguf [--quantization f16|q8_0|f32]]   a run as a merged folder, or GGUF + Modelfile
uds serve [--host 127.0.0.1] [--port 8000]        the service, embedded default (SQLite, in-process worker)
uds worker [--concurrency N|auto]                  a Celery GPU worker (distributed mode)
uds keys create [--tenant NAME]                    prints a new API key (default: the key-less local tenant)
uds keys list                                      every key's prefix, tenant and status
uds keys revoke KEY_OR_PREFIX                      revokes a key, effective at the next request
uds models add|list|remove                         the base models jobs may use (hub ids, folders, GGUF files)
uds demo [--model uds-tiny]                        the service with a demo dataset and two jobs to watch
uds build-tiny PATH                                writes the uds-tiny test model to PATH
"""

from __future__ import annotations

import argparse
import os
import sys

from cli.export import add_export_command
from cli.models import add_models_command
from cli.train import add_train_command


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)  # what a multi-device run hands to its processes
    if not getattr(args, "handler", None):
        parser.print_help()
        return 2
    try:
        return args.handler(args) or 0
    except KeyboardInterrupt:
        print("uds: interrupted", file=sys.stderr)
        return 130
    except Exception as error:  # noqa: BLE001 - a user reads one line, never our stack; UDS_DEBUG=1 shows it
        if os.environ.get("UDS_DEBUG"):
            raise
        print(f"uds: error: {one_line(error)} (UDS_DEBUG=1 shows the details)", file=sys.stderr)
        return 1


def one_line(error: BaseException) -> str:
    text = " ".join(str(error).split()) or type(error).__name__
    return f"{type(error).__name__}: {text}" if type(error).__module__ == "builtins" else text


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("uds-finetune")
    except PackageNotFoundError:  # run from a checkout that was never installed
        return "unknown"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="uds", description="LoRA fine-tuning on the data that matters (UDS online batch selection)."
    )
    parser.add_argument("--version", action="version", version=f"uds {_version()}")
    commands = parser.add_subparsers(title="commands")
    add_train_command(commands)
    add_export_command(commands)

    serve = commands.add_parser(
        "serve", help="run the service (embedded default: SQLite, local files, in-process worker)"
    )
    serve.add_argument(
        "--host", default=None, help="bind address (default 127.0.0.1; any other bind requires API keys)"
    )
    serve.add_argument("--port", type=int, default=None, help="port (default 8000)")
    serve.set_defaults(handler=_serve)

    worker = commands.add_parser("worker", help="run a Celery worker for the gpu queue (needs UDS_BROKER_URL)")
    worker.add_argument(
        "--concurrency",
        type=_concurrency,
        default="1",
        metavar="{N,auto}",
        help="jobs trained at once, one process per GPU (process i on cuda:i); auto: one per GPU "
        "visible with UDS_DEVICE=cuda, else 1",
    )
    worker.add_argument("--queues", default=None, help="comma-separated queues (default: UDS_QUEUE, else gpu)")
    worker.set_defaults(handler=_worker)

    keys = commands.add_parser("keys", help="manage API keys")
    key_commands = keys.add_subparsers(title="keys commands")
    create = key_commands.add_parser("create", help="create a key for a tenant and print it")
    create.add_argument(
        "--tenant",
        default=None,
        help="the tenant the key acts as (default on a key-less loopback server: its local tenant, "
        "whose jobs the dashboard shows without a key)",
    )
    create.add_argument("--name", default=None, help="a label to tell keys apart in `uds keys list`")
    create.set_defaults(handler=_keys_create)
    listing = key_commands.add_parser("list", help="list keys: prefix, tenant, name, created, revoked")
    listing.set_defaults(handler=_keys_list)
    revoke = key_commands.add_parser("revoke", help="revoke a key (whole, or its prefix uds-XXXXXX); effective at once")
    revoke.add_argument("key", help="the whole key, or its prefix as `uds keys list` shows it (uds-XXXXXX)")
    revoke.set_defaults(handler=_keys_revoke)

    add_models_command(commands)

    demo = commands.add_parser("demo", help="start the service with a demo dataset and a uds and a random job")
    demo.add_argument("--port", type=int, default=8000, help="port (default 8000)")
    demo.add_argument(
        "--model",
        default=None,
        help="the jobs' model (default: the built-in real model smollm2-135m-instruct; uds-tiny: the fast test model)",
    )
    demo.set_defaults(handler=_demo)

    tiny = commands.add_parser("build-tiny", help="write the uds-tiny model (deterministic, no download) to a folder")
    tiny.add_argument("path", help="folder to write the model and tokenizer to")
    tiny.add_argument("--seed", type=int, default=0, help="weight initialisation seed (default: 0, the tests' model)")
    tiny.set_defaults(handler=_build_tiny)
    return parser


# Each handler imports its sub-command only when it runs: `uds keys` must not load torch, `uds train` no database.


def _serve(args: argparse.Namespace) -> int:
    from cli.service import serve

    return serve(host=args.host, port=args.port) or 0


def _concurrency(value: str) -> int | str:
    if value == "auto":
        return value
    if value.isdigit() and int(value) >= 1:
        return int(value)
    raise argparse.ArgumentTypeError(f"expected a number of processes (1 or more) or auto, not {value!r}")


def _worker(args: argparse.Namespace) -> int:
    from cli.worker import run_worker

    return run_worker(concurrency=args.concurrency, queues=args.queues) or 0


def _keys_create(args: argparse.Namespace) -> int:
    from cli.keys import keys_create

    return keys_create(args.tenant, name=args.name) or 0


def _keys_list(args: argparse.Namespace) -> int:
    from cli.keys import keys_list

    return keys_list() or 0


def _keys_revoke(args: argparse.Namespace) -> int:
    from cli.keys import keys_revoke

    return keys_revoke(args.key) or 0


def _demo(args: argparse.Namespace) -> int:
    from cli.demo import DEMO_MODEL, demo

    return demo(port=args.port, model=args.model or DEMO_MODEL) or 0


def _build_tiny(args: argparse.Namespace) -> int:
    from uds.tiny import build_tiny_model

    print(build_tiny_model(args.path, seed=args.seed))
    return 0


if __name__ == "__main__":
    sys.exit(main())
