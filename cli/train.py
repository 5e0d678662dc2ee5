"""`uds train`: a local training run with no service. Its flags are generated from uds.config.TrainConfig, so a
new setting is a flag the moment it is a field (help text and choices from the field's metadata when it has them).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import time
import typing
from typing import Any

from uds.config import ConfigError, TrainConfig

_LIST_FIELDS = {"lora_targets"}
_FILE_FIELDS = ("dataset_path", "eval_dataset_path")  # given as --data / --eval-data


def add_train_command(commands) -> None:
    train = commands.add_parser(
        "train",
        help="train locally, no service",
        description="Train a LoRA adapter locally. Flags override the --config file.",
    )
    train.add_argument("--config", help="YAML or JSON file with any of the settings below")
    train.add_argument("--data", dest="dataset_path", help="training JSONL (chat, Alpaca or prompt/completion)")
    train.add_argument("--eval-data", dest="eval_dataset_path", help="held-out JSONL for eval loss and exact match")
    train.add_argument(
        "--no-resume", action="store_true", help="start over even if a checkpoint exists in --output-dir"
    )
    train.add_argument("--quiet", action="store_true", help="no progress bar")
    train.add_argument(
        "--dry-run",
        action="store_true",
        help="print what the run would cost (steps, examples, tokens, memory, time) and train nothing",
    )
    types = typing.get_type_hints(TrainConfig)
    for field in dataclasses.fields(TrainConfig):
        if field.name in _FILE_FIELDS:
            continue
        flag = "--" + field.name.replace("_", "-")
        if types[field.name] is bool:
            # A flag: `--gradient-checkpointing` alone means true; `--group-by-length false` still turns one off.
            train.add_argument(
                flag, dest=field.name, default=None, nargs="?", const="true", metavar="true|false", help=_help(field)
            )
        else:
            train.add_argument(flag, dest=field.name, default=None, help=_help(field), metavar=_metavar(field))
    train.set_defaults(handler=run_train)


def _help(field: dataclasses.Field) -> str:
    default = field.default_factory() if field.default_factory is not dataclasses.MISSING else field.default  # type: ignore[misc]
    parts = [field.metadata["help"]] if field.metadata.get("help") else []
    if field.metadata.get("choices"):
        parts.append("one of " + ", ".join(str(c) for c in field.metadata["choices"]))
    parts.append(f"default: {default}")
    return "; ".join(parts).replace("%", "%%")  # argparse formats help strings with %


def _metavar(field: dataclasses.Field) -> str | None:
    choices = field.metadata.get("choices")
    return "{" + ",".join(map(str, choices)) + "}" if choices else None


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
    allowed = _flatten(annotation)
    if raw in allowed:  # a literal word of a number-or-word setting, such as alpha "auto"
        return raw
    if bool in allowed:
        if raw.lower() not in ("true", "false", "1", "0", "yes", "no"):
            raise ConfigError(name, f"must be true or false, got {raw!r}")
        return raw.lower() in ("true", "1", "yes")
    if int in allowed:
        return _number(name, raw, int)
    if float in allowed:
        return _number(name, raw, float)
    return raw


def _flatten(annotation: Any) -> set:
    """The types and literal values an annotation admits: `float | Literal["auto"] | None` -> {float, "auto", None}."""
    args = typing.get_args(annotation)
    if not args:
        return {annotation}
    if typing.get_origin(annotation) is typing.Literal:
        return set(args)
    return set().union(*(_flatten(arg) for arg in args))


def _number(name: str, raw: str, kind: type) -> Any:
    try:
        return kind(raw)
    except ValueError:
        raise ConfigError(name, f"must be {'an integer' if kind is int else 'a number'}, got {raw!r}") from None


def run_train(args: argparse.Namespace) -> int:
    try:
        config = load_train_config(args)
        if not config.dataset_path:
            raise ConfigError("data", "give the training file with --data or dataset_path in --config")
        if config.models_dir is None:
            # Where `uds models add` registers models (UDS_DATA_DIR/models), so registered names work here too.
            config = dataclasses.replace(config, models_dir=str(_settings().models_dir))
    except ConfigError as error:
        print(f"uds train: invalid setting {error.param}: {error.message}", file=sys.stderr)
        return 2

    if args.dry_run:
        return dry_run(config)

    from uds.distributed import launched_world, shutdown

    if config.devices > 1 and not launched_world().distributed:
        return _launch_processes(config.devices, args.argv)

    from cli.progress import ProgressLogger
    from uds.reporter import NullLogger
    from uds.trainer import TrainingError, train

    if args.quiet:  # transformers' own weight-loading bar too: --quiet leaves stderr to the summary and errors
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()

    started = time.monotonic()  # the whole run: loading, evaluation and saving too, not only the steps
    main_process = launched_world().is_main
    # One writer: the other processes of a multi-device run report nothing (rank 0 writes the files and the bar).
    logger = (
        ProgressLogger(config.output_dir, show_bar=not args.quiet, resume=not args.no_resume)
        if main_process
        else NullLogger()
    )
    try:
        result = train(config, logger, resume=not args.no_resume)
    except TrainingError as error:
        print(_failure(error), file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(
            "uds train: interrupted; run the same command again to resume from the newest checkpoint.", file=sys.stderr
        )
        return 130
    finally:
        if main_process:
            logger.close()
        shutdown()
    if main_process:
        print(final_summary(result, time.monotonic() - started), file=sys.stderr)
    return 0


def _launch_processes(devices: int, argv: list[str]) -> int:
    """The same command as `devices` processes under torchrun (uds.launch), on this host; its exit status."""
    import subprocess

    from uds.launch import cpu_threads_per_process, rank_environment, torchrun_command

    environment = rank_environment(threads=cpu_threads_per_process(devices))
    # No automatic restarts here: a failed local run is rerun by hand, and the same command resumes it.
    command = torchrun_command(devices, "cli.main", argv, max_restarts=0)
    return subprocess.run(command, env=environment).returncode


def dry_run(config: TrainConfig) -> int:
    """The estimate POST /api/v1/jobs/estimate gives for the same settings (uds/estimate.py), its time from the
    jobs the local service (UDS_DATA_DIR's database) finished."""
    from uds.estimate import ModelShape, TokenCounter, estimate, format_estimate, row_lengths
    from uds.formats import DatasetError, load_examples
    from uds.models import ModelLoadError, ModelNotAllowed, resolve_model
    from uds.registry import RegistryError, read_facts

    try:
        examples = load_examples(config.dataset_path)
        folder = resolve_model(config.model, models_dir=config.models_dir)
    except DatasetError as error:
        print(f"uds train: the dataset has problems: {'; '.join(error.summary(3))}", file=sys.stderr)
        return 1
    except (ModelLoadError, ModelNotAllowed, OSError) as error:
        print(f"uds train: {error}", file=sys.stderr)
        return 1
    counter = TokenCounter.from_folder(folder)
    try:
        shape: ModelShape | None = ModelShape.from_folder(folder, read_facts(folder).parameters)
    except (KeyError, TypeError, ValueError, RegistryError, OSError):
        shape = None  # a config.json without the sizes (or a hub id): the counts and time still stand
    result = estimate(
        config,
        row_lengths(counter, examples, config.max_seq_len),
        shape,
        _local_rates(config),
        tokens_counted_exactly=counter.exact,
    )
    print(format_estimate(result))
    return 0


def _local_rates(config: TrainConfig) -> list[tuple[float, float]]:
    """The speeds the local service's succeeded jobs measured; none when it has no database (or an older one)."""
    from api.db import session_factory
    from api.services.estimates import deployment_rates

    settings = _settings()
    url = settings.sqlalchemy_url
    if url.startswith("sqlite:///") and not os.path.isfile(url.removeprefix("sqlite:///")):
        return []  # never create a database just to find it empty
    try:
        with session_factory(url, "cli")() as session:
            return deployment_rates(session, config.model, config.method, config.devices)[1]
    except Exception:  # noqa: BLE001 - an unreachable or older database: the estimate without a time
        return []


MAX_PROBLEMS_PRINTED = 20


def _failure(error) -> str:
    """What a failed run prints. A bad dataset lists its first problems and a count, not a hundred lines."""
    from uds.formats import DatasetError

    cause = error.__cause__
    if not isinstance(cause, DatasetError):
        return f"uds train: failed ({error.code}): {error.message}"
    noun = "problem" if cause.total == 1 else "problems"
    lines = [f"uds train: failed ({error.code}): the dataset has {cause.total} {noun}:"]
    return "\n".join(lines + [f"  {line}" for line in cause.summary(MAX_PROBLEMS_PRINTED)])


def _settings():
    from api.settings import get_settings

    return get_settings()


def final_summary(result, wall_seconds: float | None = None) -> str:
    s = result.summary
    total_time = wall_seconds if wall_seconds is not None else s["time_scoring"] + s["time_training"]
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
