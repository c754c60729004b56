"""Helpers for runs of several processes (``accelerate launch`` / torchrun); each is a no-op in one process.

The orchestrator joins the process group once (:func:`init_processes`) and every stage that shards work waits for
the others with :func:`barrier`.
"""

from __future__ import annotations

import logging

from sipo.logging_utils import process_rank

logger = logging.getLogger(__name__)


DIST_TIMEOUT_S = 6 * 3600
"""How long a process waits at a barrier (e.g. while rank 0 runs the combine and filter stages alone) before the
job fails; override with ``SIPO_DIST_TIMEOUT_S``."""


def init_processes(device: str) -> None:
    """Join the process group of an ``accelerate launch`` / torchrun job before the first barrier.

    accelerate picks gloo only when told the job runs on CPU (``PartialState(cpu=True)``); a bare
    ``PartialState()`` on a machine without CUDA silently runs as one process, so its barriers would not wait.
    The group is created here, once, with :data:`DIST_TIMEOUT_S`; the Trainer later re-creates accelerate's state
    but keeps this process group.
    """
    import datetime
    import os

    from accelerate import PartialState

    timeout = datetime.timedelta(seconds=int(os.environ.get("SIPO_DIST_TIMEOUT_S", DIST_TIMEOUT_S)))
    state = PartialState(cpu=device == "cpu", timeout=timeout)
    if state.num_processes != process_rank()[1]:
        raise RuntimeError(f"launcher says {process_rank()[1]} processes but accelerate joined "
                           f"{state.num_processes} ({state.distributed_type})")


def warn_if_launch_lost_processes() -> None:
    """Warn when ``accelerate launch --cpu --num_processes N`` (N > 1) started this single process.

    accelerate's CPU mode starts several processes only through mpirun; otherwise it runs the script once, with
    ``MASTER_ADDR`` set but no ``WORLD_SIZE``.
    """
    import os

    if os.environ.get("ACCELERATE_USE_CPU", "").lower() == "true" and os.environ.get("MASTER_ADDR") \
            and "WORLD_SIZE" not in os.environ:
        logger.warning("accelerate launch --cpu started one process (it needs mpirun for more); for several CPU "
                       "processes use: accelerate launch --config_file configs/accelerate/ddp_cpu.yaml -m sipo ... "
                       "or torchrun --nproc_per_node N -m sipo ...")


def barrier() -> None:
    """Wait for every process of an ``accelerate launch`` / torchrun job (a no-op in a single process)."""
    if process_rank()[1] > 1:
        from accelerate import PartialState

        PartialState().wait_for_everyone()
