"""`uds export`: a finished run's adapter as a merged transformers folder or a GGUF file with its Ollama Modelfile.

    uds export out/                               merged folder  -> out/export-merged/
    uds export out/ --gguf --quantization q8_0    GGUF           -> out/export-gguf-q8_0/ (<name>.gguf + Modelfile)
    uds export job-abc123 --gguf                  a job of the local service (UDS_DATA_DIR/jobs/<id>/adapter)
                                                  -> ./job-abc123-export-gguf-f16/

The run is a `uds train --output-dir` folder (its adapter/ inside), an adapter folder itself, or a job id. The base
model is the one the adapter names, found as `uds train` finds it (uds-tiny, registered models, local folders).
The same code as the service's exports writes the result, whole or not at all.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from uds.gguf_support import DEFAULT_QUANTIZATION, QUANTIZATIONS


def add_export_command(commands) -> None:
    export = commands.add_parser(
        "export",
        help="write a finished run as a merged transformers folder, or as GGUF (llama.cpp, Ollama) with --gguf",
        description="Merge a run's LoRA adapter into its base model (in float32) and write it as a transformers "
        "folder, or with --gguf as one GGUF file and an Ollama Modelfile.",
    )
    export.add_argument("run", metavar="JOB_OR_OUTPUT_DIR", help="a `uds train --output-dir` folder, or a job id")
    export.add_argument("--gguf", action="store_true", help="write GGUF (llama.cpp, Ollama, LM Studio) instead")
    export.add_argument(
        "--quantization",
        choices=QUANTIZATIONS,
        default=None,
        help=f"GGUF weights (default {DEFAULT_QUANTIZATION}): f16 half of float32, q8_0 about a quarter, f32 exact",
    )
    export.add_argument(
        "--out",
        default=None,
        help="the folder to write (must not exist; default: next to the run, or here for a job id)",
    )
    export.set_defaults(handler=run_export)


def find_adapter(run: str, jobs_dir: Path) -> Path:
    """The adapter folder of a `uds train` output folder, an adapter folder, or a job of the local service."""
    path = Path(run).expanduser()
    for candidate in (path / "adapter", path, jobs_dir / run / "adapter"):
        if (candidate / "adapter_config.json").is_file():
            return candidate
    raise FileNotFoundError(
        f"{run} is neither a finished `uds train` output folder (with adapter/adapter_config.json), an adapter "
        f"folder, nor a job with an adapter in {jobs_dir}"
    )


def run_export(args: argparse.Namespace) -> int:
    if args.quantization and not args.gguf:
        print("uds export: --quantization applies to --gguf exports only", file=sys.stderr)
        return 2
    from api.settings import get_settings
    from uds.models import resolve_model

    settings = get_settings()
    adapter = find_adapter(args.run, settings.jobs_dir)
    model = json.loads((adapter / "adapter_config.json").read_text())["base_model_name_or_path"]
    base = resolve_model(model, models_dir=settings.models_dir)
    home = adapter.parent if adapter.name == "adapter" else adapter
    quantization = args.quantization or DEFAULT_QUANTIZATION
    kind = f"gguf-{quantization}" if args.gguf else "merged"
    # A job's folder belongs to the service: its export goes to the current folder instead.
    of_job = not Path(args.run).expanduser().exists()  # found as UDS_DATA_DIR/jobs/<id>, not as a path
    default = Path.cwd() / f"{args.run}-export-{kind}" if of_job else home / f"export-{kind}"
    out = Path(args.out).expanduser() if args.out else default
    if out.exists():
        print(f"uds export: {out} exists; remove it or give another --out", file=sys.stderr)
        return 2
    if args.gguf:
        from uds.gguf_export import export_gguf

        export_gguf(base, str(adapter), out, quantization, name=_name(home))
        print(out)
        print(f"run it in Ollama:  cd {out} && ollama create {_name(home)} -f Modelfile", file=sys.stderr)
    else:
        from uds.export import export_merged

        export_merged(base, str(adapter), out)
        print(out)
    return 0


def _name(home: Path) -> str:
    """A model name for the file and `ollama create`: the run folder's name, in the characters Ollama accepts."""
    name = "".join(c if c.isalnum() or c in "-_." else "-" for c in home.resolve().name.lower()).strip("-.")
    return name or "fine-tune"
