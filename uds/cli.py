"""The `uds` command: the one composition root allowed to import uds/, api/ and worker/ (lazily, per sub-command).

    uds train --data train.jsonl --budget 0.125 --method uds [--config job.yaml] [--output-dir out]
    uds serve [--host 127.0.0.1] [--port 8000]        the service, embedded default (SQLite, in-process worker)
    uds worker [--concurrency 1]                       a Celery GPU worker (distributed mode)
    uds keys create --tenant NAME                      prints a new API key
    uds keys revoke KEY_OR_PREFIX                      revokes a key, effective at the next request
    uds demo                                           the service with a demo dataset and two jobs to watch
    uds build-tiny PATH                                writes the uds-tiny test model to PATH
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import typing
from typing import Any

from uds.config import ConfigError, TrainConfig

_LIST_FIELDS = {"lora_targets"}


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if not getattr(args, "handler", None):
        parser.print_help()
        return 2
    return args.handler(args) or 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="uds", description="LoRA fine-tuning on the data that matters (UDS online batch selection).")
    commands = parser.add_subparsers(title="commands")

    train = commands.add_parser("train", help="train locally, no service", description="Train a LoRA adapter locally. Flags override the --config file.")
    train.add_argument("--config", help="YAML or JSON file with any of the settings below")
    train.add_argument("--data", dest="dataset_path", help="training JSONL (chat, Alpaca or prompt/completion)")
    train.add_argument("--eval-data", dest="eval_dataset_path", help="held-out JSONL for eval loss and exact match")
    train.add_argument("--no-resume", action="store_true", help="start over even if a checkpoint exists in --output-dir")
    train.add_argument("--quiet", action="store_true", help="no progress bar")
    for field in dataclasses.fields(TrainConfig):
        if field.name in ("dataset_path", "eval_dataset_path"):
            continue
        train.add_argument("--" + field.name.replace("_", "-"), dest=field.name, default=None, help=_help(field))
    train.set_defaults(handler=_train)

    serve = commands.add_parser("serve", help="run the service (embedded default: SQLite, local files, in-process worker)")
    serve.add_argument("--host", default=None, help="bind address (default 127.0.0.1; any other bind requires API keys)")
    serve.add_argument("--port", type=int, default=None, help="port (default 8000)")
    serve.set_defaults(handler=_serve)

    worker = commands.add_parser("worker", help="run a Celery worker for the gpu queue (needs UDS_BROKER_URL)")
    worker.add_argument("--concurrency", type=int, default=1, help="processes; one per GPU")
    worker.add_argument("--queues", default=None, help="comma-separated queues (default: UDS_QUEUE, else gpu)")
    worker.set_defaults(handler=_worker)

    keys = commands.add_parser("keys", help="manage API keys")
    key_commands = keys.add_subparsers(title="keys commands")
    create = key_commands.add_parser("create", help="create a key for a tenant and print it")
    create.add_argument("--tenant", required=True)
    create.set_defaults(handler=_keys_create)
    revoke = key_commands.add_parser("revoke", help="revoke a key (whole, or its prefix uds-XXXXXX); effective at once")
    revoke.add_argument("key")
    revoke.set_defaults(handler=_keys_revoke)

    demo = commands.add_parser("demo", help="start the service with a demo dataset and a uds and a random job")
    demo.add_argument("--port", type=int, default=8000)
    demo.set_defaults(handler=_demo)

    tiny = commands.add_parser("build-tiny", help="write the uds-tiny model (deterministic, no download) to a folder")
    tiny.add_argument("path")
    tiny.add_argument("--seed", type=int, default=0)
    tiny.set_defaults(handler=_build_tiny)
    return parser


def _help(field: dataclasses.Field) -> str:
    default = field.default_factory() if field.default_factory is not dataclasses.MISSING else field.default  # type: ignore[misc]
    return f"default: {default}"


# ---------------------------------------------------------------------------------------------------- train


def load_train_config(args: argparse.Namespace) -> TrainConfig:
    """File settings, then flags on top; every value checked by TrainConfig."""
    values: dict[str, Any] = _read_config_file(args.config) if args.config else {}
    types = typing.get_type_hints(TrainConfig)
    for field in dataclasses.fields(TrainConfig):
        raw = getattr(args, field.name, None)
        if raw is not None:
            values[field.name] = _parse_flag(field.name, raw, types[field.name])
    return TrainConfig.from_dict(values)


def _read_config_file(path: str) -> dict[str, Any]:
    import yaml

    try:
        with open(path, encoding="utf-8") as f:
            values = yaml.safe_load(f) or {}
    except OSError as error:
        raise ConfigError("config", f"cannot read {path}: {error.strerror}") from error
    except yaml.YAMLError as error:
        raise ConfigError("config", f"{path} is not valid YAML/JSON: {error}") from error
    if not isinstance(values, dict):
        raise ConfigError("config", f"{path} must hold a mapping of setting names to values")
    return values


def _parse_flag(name: str, raw: str, annotation: Any) -> Any:
    if name in _LIST_FIELDS:
        return [part.strip() for part in raw.split(",") if part.strip()]
    if name == "alpha":
        return raw if raw == "auto" else _number(name, raw, float)
    allowed = set(typing.get_args(annotation)) or {annotation}
    if bool in allowed:
        if raw.lower() not in ("true", "false", "1", "0", "yes", "no"):
            raise ConfigError(name, f"must be true or false, got {raw!r}")
        return raw.lower() in ("true", "1", "yes")
    if int in allowed:
        return _number(name, raw, int)
    if float in allowed:
        return _number(name, raw, float)
    return raw


def _number(name: str, raw: str, kind: type) -> Any:
    try:
        return kind(raw)
    except ValueError:
        raise ConfigError(name, f"must be {'an integer' if kind is int else 'a number'}, got {raw!r}") from None


def _train(args: argparse.Namespace) -> int:
    try:
        config = load_train_config(args)
        if not config.dataset_path:
            raise ConfigError("data", "give the training file with --data or dataset_path in --config")
    except ConfigError as error:
        print(f"uds train: invalid setting {error.param}: {error.message}", file=sys.stderr)
        return 2

    from uds.cli_progress import ProgressLogger
    from uds.trainer import TrainingError, train

    logger = ProgressLogger(config.output_dir, show_bar=not args.quiet, resume=not args.no_resume)
    try:
        result = train(config, logger, resume=not args.no_resume)
    except TrainingError as error:
        logger.close()
        print(f"uds train: failed ({error.code}): {error.message}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        logger.close()
        print("uds train: interrupted; run the same command again to resume from the newest checkpoint.", file=sys.stderr)
        return 130
    logger.close()
    print(_final_summary(result), file=sys.stderr)
    return 0


def _final_summary(result) -> str:
    s = result.summary
    total_time = s["time_scoring"] + s["time_training"]
    lines = [
        f"status             {result.status} ({result.steps_done}/{result.total_steps} steps)",
        f"examples scored    {int(s['examples_scored'])}",
        f"examples trained   {int(s['examples_trained'])} ({s['trained_fraction']:.1%} of scored)",
        f"tokens trained     {int(s['tokens_trained'])}",
        f"wall time          {total_time:.1f} s (scoring {s['time_scoring']:.1f} s, training {s['time_training']:.1f} s)",
    ]
    if s.get("alpha") is not None:
        lines.append(f"alpha in use       {s['alpha']:.4g}")
    if result.adapter_dir:
        lines.append(f"adapter            {result.adapter_dir}")
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------------- service


def _serve(args: argparse.Namespace) -> int:
    from api.cli import serve

    return serve(host=args.host, port=args.port) or 0


def _worker(args: argparse.Namespace) -> int:
    from worker.cli import run_worker

    return run_worker(concurrency=args.concurrency, queues=args.queues) or 0


def _keys_create(args: argparse.Namespace) -> int:
    from api.cli import keys_create

    return keys_create(args.tenant) or 0


def _keys_revoke(args: argparse.Namespace) -> int:
    from api.cli import keys_revoke

    return keys_revoke(args.key) or 0


def _demo(args: argparse.Namespace) -> int:
    from api.cli import demo

    return demo(port=args.port) or 0


def _build_tiny(args: argparse.Namespace) -> int:
    from uds.tiny import build_tiny_model

    print(build_tiny_model(args.path, seed=args.seed))
    return 0


if __name__ == "__main__":
    sys.exit(main())
