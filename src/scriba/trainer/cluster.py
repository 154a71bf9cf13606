"""How many processes a run has and who starts them: one process, scriba's own launcher, torchrun or SLURM.

:func:`resolve_layout` reads ``--device``, ``--processes`` and ``--num-nodes`` together with the environment
of the process: under ``torchrun`` (``TORCHELASTIC_RUN_ID``) and under ``srun`` (``SLURM_NTASKS`` > 1) the
processes already exist and join the process group their launcher describes; otherwise several processes
on this node are started by :mod:`scriba.trainer.launch`, whose children carry ``SCRIBA_DDP_CHILD``.
:func:`trainer_arguments` turns a layout into Lightning's ``devices``, ``num_nodes``, ``strategy`` and
cluster environment. Nothing here imports torch at module level.
"""

from __future__ import annotations

import logging
import os
import sys
from dataclasses import dataclass
from typing import Any

from scriba.errors import UsageError

CHILD_ENV = "SCRIBA_DDP_CHILD"
LAUNCHERS = ("single", "local", "child", "torchrun", "slurm")


@dataclass(frozen=True)
class Layout:
    """``processes`` per node on ``nodes`` nodes; ``launcher`` says who starts them (see :data:`LAUNCHERS`)."""

    processes: int = 1
    nodes: int = 1
    launcher: str = "single"

    @property
    def world(self) -> int:
        return self.processes * self.nodes

    @property
    def distributed(self) -> bool:
        return self.world > 1


def device_count(devices: Any) -> int | None:
    """How many devices an explicit list names (``cuda:0,cuda:1`` -> 2); None for ``cpu``, ``cuda``, ``auto``."""
    return len(devices) if isinstance(devices, list) else None


def _slurm_launched(env: dict[str, str]) -> bool:
    # Lightning's rule (srun sets SLURM_NTASKS; job names bash/interactive mean a shell, not a launch)
    if env.get("SLURM_JOB_NAME") in ("bash", "interactive"):
        return False
    return int(env.get("SLURM_NTASKS", "1") or 1) > 1 and "SLURM_PROCID" in env


def resolve_layout(processes: int | None, num_nodes: int, devices: Any, env: dict[str, str] | None = None) -> Layout:
    """The layout of a run; a :class:`UsageError` when the options and the launcher disagree."""
    env = dict(os.environ if env is None else env)
    listed = device_count(devices)
    if processes is not None and processes < 1:
        raise UsageError(f"--processes must be positive, got {processes}")
    if num_nodes < 1:
        raise UsageError(f"--num-nodes must be positive, got {num_nodes}")
    if listed is not None and processes is not None and processes != listed:
        raise UsageError(f"--processes {processes} does not match the {listed} devices of --device (one process each)")
    wanted = processes or listed or 1
    if env.get(CHILD_ENV):
        return Layout(int(env["LOCAL_WORLD_SIZE"]), 1, "child")
    if env.get("TORCHELASTIC_RUN_ID") is not None and int(env.get("WORLD_SIZE", "1")) > 1:
        world, local = int(env["WORLD_SIZE"]), int(env.get("LOCAL_WORLD_SIZE", env["WORLD_SIZE"]))
        return _joined("torchrun", "--nproc-per-node", local, world // max(1, local), processes, listed, num_nodes)
    if _slurm_launched(env):
        nodes = int(env.get("SLURM_NNODES", "1") or 1)
        tasks = int(env["SLURM_NTASKS"])
        per_node = env.get("SLURM_NTASKS_PER_NODE", "").split("(")[0]
        local = int(per_node) if per_node.isdigit() else tasks // nodes
        return _joined("slurm", "--ntasks-per-node", local, nodes, processes, listed, num_nodes)
    if num_nodes > 1:
        raise UsageError(
            f"--num-nodes {num_nodes} needs a cluster launcher: start ketos on every node with srun (SLURM) "
            f"or torchrun, see the README"
        )
    return Layout(wanted, 1, "local" if wanted > 1 else "single")


def _joined(
    name: str, flag: str, local: int, nodes: int, processes: int | None, listed: int | None, num_nodes: int
) -> Layout:
    """A layout set by an external launcher; the options may repeat it but not contradict it."""
    if processes is not None and processes != local:
        raise UsageError(f"--processes {processes} contradicts {name}, which started {local} per node ({flag})")
    if listed is not None and listed != local:
        raise UsageError(f"--device lists {listed} devices but {name} started {local} processes per node ({flag})")
    if num_nodes != 1 and num_nodes != nodes:
        raise UsageError(f"--num-nodes {num_nodes} contradicts {name}, which runs on {nodes} node(s)")
    return Layout(local, nodes, name)


def trainer_arguments(layout: Layout, accelerator: str, devices: Any, *, find_unused: bool = False) -> dict[str, Any]:
    """Lightning ``Trainer`` keywords (``devices``, ``num_nodes``, ``strategy``, ``plugins``) for ``layout``."""
    if not layout.distributed:
        return {"devices": devices}
    from lightning.fabric.plugins.environments import (
        LightningEnvironment,
        SLURMEnvironment,
        TorchElasticEnvironment,
    )
    from lightning.pytorch.strategies import DDPStrategy

    environment = {
        "child": LightningEnvironment,
        "local": LightningEnvironment,
        "torchrun": TorchElasticEnvironment,
        "slurm": lambda: SLURMEnvironment(auto_requeue=False),
    }[layout.launcher]()
    import inspect

    import torch

    # buffer broadcasts are collectives inside forward, and the processes run different numbers of
    # validation batches (torch >= 2.13 renamed the switch)
    no_sync: dict[str, Any] = (
        {"forward_sync_buffers": False}
        if "forward_sync_buffers" in inspect.signature(torch.nn.parallel.DistributedDataParallel).parameters
        else {"broadcast_buffers": False}
    )
    strategy = DDPStrategy(
        cluster_environment=environment,
        # frozen layers (--freeze-backbone) get no gradient until they thaw
        find_unused_parameters=find_unused,
        **no_sync,
    )
    return {
        "devices": devices if isinstance(devices, list) else layout.processes,
        "num_nodes": layout.nodes,
        "strategy": strategy,
    }


def shared_seed(layout: Layout, env: dict[str, str] | None = None) -> int:
    """A seed every process of an unseeded run agrees on (the split, the batch order and the shards depend on
    it), different from run to run: drawn by scriba's launcher, else derived from the launcher's run."""
    env = dict(os.environ if env is None else env)
    if layout.launcher == "local":
        import random

        return random.SystemRandom().randrange(2**31)
    import hashlib

    keys = ("TORCHELASTIC_RUN_ID", "MASTER_ADDR", "MASTER_PORT", "SLURM_JOB_ID", "SLURM_STEP_ID")
    ident = "|".join(env.get(k, "") for k in keys)
    return int(hashlib.sha256(ident.encode()).hexdigest()[:8], 16) % 2**31


def process_rank(layout: Layout, env: dict[str, str] | None = None) -> int:
    """This process's global rank before Lightning knows it (0 outside DDP)."""
    if not layout.distributed:
        return 0
    env = dict(os.environ if env is None else env)
    return int(env["SLURM_PROCID"] if layout.launcher == "slurm" else env.get("RANK", 0))


def one_process_only(processes: int | None, num_nodes: int, devices: Any, command: str) -> None:
    """Refuses a run of several processes (options or a torchrun/srun launch) for a job without DDP support,
    instead of training the same model several times side by side into one directory."""
    if resolve_layout(processes, num_nodes, devices).distributed:
        raise UsageError(f"{command} runs in one process: drop --processes, the device list, or the launcher")


def quiet_other_ranks(rank: int) -> None:
    """Leaves the warnings to rank 0 (the other processes read the same data with the same options); errors
    still show, whichever process has them."""
    if rank:
        root = logging.getLogger()
        root.setLevel(logging.ERROR)
        for handler in root.handlers:
            handler.setLevel(max(handler.level, logging.ERROR))


def announce(layout: Layout, batch_size: int, rank: int) -> None:
    """Rank 0 of a DDP run says how many processes train on what global batch (``-B`` is per process)."""
    if layout.distributed and rank == 0:
        print(
            f"DDP: {layout.world} processes ({layout.processes} per node on {layout.nodes} node(s)), "
            f"-B {batch_size} each: global batch {batch_size * layout.world}",
            file=sys.stderr,
            flush=True,
        )
