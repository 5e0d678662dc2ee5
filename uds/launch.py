"""Starting the processes of a multi-device job: torchrun's elastic agent (`torch.distributed.run`), not a launcher
of our own. It starts one process per device on this host, sets the environment `uds.distributed.init_from_env`
reads (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR/PORT), and when one process dies it stops the others and starts
them all again (up to `max_restarts` times); the restarted processes resume from the job's newest checkpoint,
which is what makes a killed rank cost the steps since that checkpoint and nothing else.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence

# A restarted group resumes from its newest checkpoint; a rank that keeps dying fails the run after this many.
DEFAULT_MAX_RESTARTS = 2


def torchrun_command(
    processes: int, module: str, arguments: Sequence[str], max_restarts: int = DEFAULT_MAX_RESTARTS
) -> list[str]:
    """The command that runs `python -m module arguments...` as `processes` ranks on this host.

    `--standalone`: a rendezvous of this host only, on a free port of its own, so two jobs on one host never meet.
    """
    return [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nnodes=1",
        f"--nproc-per-node={processes}",
        f"--max-restarts={max_restarts}",
        "--monitor-interval=1",
        "-m",
        module,
        *arguments,
    ]


def rank_environment(base: dict[str, str] | None = None, threads: int | None = None) -> dict[str, str]:
    """The environment of the launched processes: the caller's, with the repository importable (the ranks import
    the same modules as the caller, also when it runs from a checkout) and, on the CPU, the cores shared out
    (torchrun's own default is one thread per process)."""
    environment = dict(os.environ if base is None else base)
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    paths = [root, *filter(None, environment.get("PYTHONPATH", "").split(os.pathsep))]
    environment["PYTHONPATH"] = os.pathsep.join(dict.fromkeys(paths))
    if threads is not None and "OMP_NUM_THREADS" not in environment:
        environment["OMP_NUM_THREADS"] = str(max(1, threads))
    # A store of each attempt's own for the process group: with the agent's store shared across restarts, the
    # processes of a restarted group read their peers' addresses from the attempt before (keys without an attempt
    # prefix) and fail to connect to processes that no longer exist.
    environment.setdefault("TORCH_DISABLE_SHARE_RDZV_TCP_STORE", "1")
    return environment


def cpu_threads_per_process(processes: int) -> int:
    """The host's cores divided among `processes` CPU ranks, so they do not oversubscribe each other."""
    return max(1, (os.cpu_count() or 1) // max(1, processes))
