"""Data-parallel training across processes with ``torchrun`` and DDP: who does what, and what fails how.

Launching
---------
The same command that trains in one process trains in many; ``torchrun`` starts one process per GPU
(or per CPU slot) and sets ``RANK``, ``LOCAL_RANK`` and ``WORLD_SIZE``, which the trainer reads.

One machine, 8 GPUs (NCCL)::

    torchrun --standalone --nproc_per_node=8 -m arlm_lib train --preset gpt2 --data corpus.txt \\
        --out runs/gpt2 --batch-size 64 --grad-accum 8 --compile

Two machines with 8 GPUs each (run on both; ``--node_rank`` 0 on the first, 1 on the second;
``MASTER`` is the first machine's address, reachable from the second)::

    torchrun --nnodes=2 --node_rank=0 --nproc_per_node=8 --master_addr=MASTER --master_port=29500 \\
        -m arlm_lib train --preset gpt2 --data corpus.txt --out runs/gpt2 --batch-size 128 --grad-accum 4 --compile

Both examples take 64 x 8 = 128 x 4 = 512 sequences of 1024 tokens (about 0.5M tokens, GPT-2's batch)
per optimizer step, 8 sequences per GPU per micro-step.

Two processes on a CPU (gloo), to try it on a laptop::

    torchrun --standalone --nproc_per_node=2 -m arlm_lib train --preset tiny --data corpus.txt \\
        --out runs/ddp --device cpu

Sampling scheme
---------------
``--batch-size`` is the *global* batch per micro-step; it must be divisible by the world size, and
each rank trains on ``batch_size / world_size`` sequences. Every rank seeds its batch generator with
the same seed, draws the same ``batch_size`` window starts, and keeps its own contiguous slice
(rank r keeps rows ``r*B/W .. (r+1)*B/W``; see :func:`arlm_lib.data.get_batch`). So within a step
the ranks train on different rows of one global draw (never on copies of each other's rows), and
together they see exactly the windows a single process with the whole batch would see. DDP averages the gradients, so N ranks take the same optimizer step
as one process (up to float rounding in the order of the sums).

Because the batch generator's state is the same on every rank, the checkpoint stores one global
state: a run saved with N ranks resumes with M ranks (any M that divides the batch) and continues with
the very windows it would have drawn. Ranks other than 0 reseed their dropout RNG from
``(seed, rank, step)``, so dropout masks differ between ranks.

Who does what
-------------
Gradient accumulation all-reduces only on the last micro-step (``no_sync`` on the others). Rank 0 alone
evaluates, runs callbacks, shows the progress bar and writes checkpoints; the other ranks wait at the
next collective (a barrier after each checkpoint). With several machines, ``--out`` must be on a
filesystem every machine sees, for ``--resume`` to read the same checkpoint everywhere.

A stop request (a signal, or a callback's on rank 0) reaches the other ranks without a collective of its
own: the next step all-reduces each rank's stop vote with its loss. If any rank voted, every rank drops
that step before its update (its random draws are restored, so ``--resume`` redoes it exactly) and
stops after the same step.

When a rank dies
----------------
Every collective has a timeout, ``TrainConfig.ddp_timeout_s`` (default 120 s; 600 s with ``compile``,
1800 s with a max-autotune ``compile_mode``, as every rank compiles at its own pace before the first
gradient all-reduce). With gloo a peer that exits closes its sockets and the survivors fail at their next collective, at once; a peer that hangs
makes them fail after the timeout. The failure is raised as :class:`DistributedError` naming the rank
and step (the command line prints it as one line and exits non-zero). Under ``torchrun`` the launcher
also stops the remaining workers as soon as one exits with an error, and reports which rank failed.
With NCCL, PyTorch's watchdog aborts a process whose collective exceeded the timeout. The timeout must
be longer than rank 0's evaluation plus a checkpoint write, during which the other ranks wait.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import numpy as np
import torch
import torch.distributed as dist

from .errors import ArlmError, ConfigError

# Words that PyTorch's gloo/NCCL/store errors use when a peer has gone away or a collective timed out.
_COMMUNICATION_WORDS = (
    "gloo",
    "nccl",
    "connection",
    "timed out",
    "timeout",
    "peer",
    "socket",
    "processgroup",
)


class DistributedError(ArlmError, RuntimeError):
    """A collective failed or timed out: another rank died or hangs."""


@dataclass(frozen=True)
class DistEnv:
    """This process's place in a ``torchrun`` job (``world_size == 1`` outside one)."""

    rank: int = 0
    local_rank: int = 0
    world_size: int = 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def dist_env(environ: dict[str, str] | None = None) -> DistEnv:
    """Read ``RANK``, ``LOCAL_RANK`` and ``WORLD_SIZE`` as ``torchrun`` sets them."""
    environ = os.environ if environ is None else environ
    values = {}
    for key, default in (("RANK", "0"), ("LOCAL_RANK", "0"), ("WORLD_SIZE", "1")):
        text = environ.get(key, default)
        try:
            values[key] = int(text)
        except ValueError:
            raise ConfigError(
                f"environment variable {key}={text!r} is not an integer (torchrun sets it)"
            ) from None
    env = DistEnv(rank=values["RANK"], local_rank=values["LOCAL_RANK"], world_size=values["WORLD_SIZE"])
    if env.world_size < 1 or not 0 <= env.rank < env.world_size:
        raise ConfigError(
            f"RANK={env.rank} with WORLD_SIZE={env.world_size}: the rank must be in 0..WORLD_SIZE-1"
        )
    return env


def init_process_group(device: torch.device, timeout_s: float) -> bool:
    """Join the ``torchrun`` job (NCCL on CUDA, gloo otherwise); False if already joined."""
    if dist.is_initialized():
        return False
    kwargs = {"device_id": device} if device.type == "cuda" else {}
    dist.init_process_group(
        backend="nccl" if device.type == "cuda" else "gloo", timeout=timedelta(seconds=timeout_s), **kwargs
    )
    return True


def is_communication_error(exc: BaseException) -> bool:
    """True for the errors a dead, hung or unreachable peer produces (not for bugs in the model)."""
    if isinstance(exc, getattr(dist, "DistError", ())):
        return True
    return isinstance(exc, RuntimeError) and any(w in str(exc).lower() for w in _COMMUNICATION_WORDS)


@contextlib.contextmanager
def communication_guard(env: DistEnv, what: str, timeout_s: float, step: int | None = None) -> Iterator[None]:
    """Turn a failed collective into a :class:`DistributedError` that names this rank, step and timeout."""
    if env.world_size == 1:
        yield
        return
    try:
        yield
    except Exception as exc:
        if isinstance(exc, ArlmError) or not is_communication_error(exc):
            raise
        first_line = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else type(exc).__name__
        when = f"{what} at step {step + 1}" if step is not None else what
        raise DistributedError(
            f"rank {env.rank} of {env.world_size} lost contact with the other ranks during {when}: another "
            f"process probably died or hangs (see its log; collectives give up after ddp_timeout_s="
            f"{timeout_s:g} s). Cause: {first_line}"
        ) from exc


def rank_seed(seed: int, rank: int, step: int) -> int:
    """A dropout seed for ``rank`` > 0 at ``step``: distinct per rank, reproducible from the config."""
    return (seed * 1_000_003 + rank * 7_919 + step) % (2**63)


def fingerprint(*parts: Any) -> str:
    """A short hash of JSON-able values and token streams (a strided sample of each stream and its length)."""
    digest = hashlib.sha256()
    for part in parts:
        if isinstance(part, (torch.Tensor, np.ndarray)):
            n = len(part)
            positions = (
                np.linspace(0, n - 1, num=min(n, 4096)).astype(np.int64) if n else np.zeros(0, np.int64)
            )
            sample = part[torch.from_numpy(positions)] if isinstance(part, torch.Tensor) else part[positions]
            sample = sample.cpu().numpy() if isinstance(sample, torch.Tensor) else np.asarray(sample)
            digest.update(f"stream:{n}:".encode() + sample.astype(np.int64).tobytes())
        else:
            digest.update(json.dumps(part, sort_keys=True, default=str).encode())
    return digest.hexdigest()


def check_same_on_all_ranks(value: str, what: str, device: torch.device) -> None:
    """Raise :class:`~arlm_lib.errors.ConfigError` on every rank if ``value`` (a fingerprint) differs.

    Ranks that silently trained on different corpora or tokenizers (another ``--data`` file on another
    machine) would average gradients of unrelated problems; this makes it an error before step 1.
    """
    code = int(value[:15], 16)  # 60 bits: fits an int64
    both = torch.tensor([code, -code], dtype=torch.int64, device=device)
    dist.all_reduce(both, op=dist.ReduceOp.MAX)  # [max, -min]: equal magnitudes iff all ranks agree
    if both[0].item() != -both[1].item():
        raise ConfigError(
            f"the ranks do not agree on {what} (rank {dist.get_rank()} has fingerprint {value[:12]}): "
            "every rank must read the same --data and build the same tokenizer and model"
        )
