"""The training loop: AdamW, warmup + cosine schedule, clipping, mixed precision, DDP, checkpoints.

The :class:`Trainer` knows nothing about widgets or plots. It records one row of numbers per step in a
:class:`History` and hands each row to its callbacks; a dashboard is just a callback.
"""

from __future__ import annotations

import functools
import math
import os
import signal
import threading
import time
import warnings
from array import array
from dataclasses import asdict, dataclass, fields, replace
from typing import Any

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

from . import checkpoint as ckpt
from .checks import is_int, is_real, is_seed, plain_fields
from .data import check_positive_int, check_token_stream, get_batch
from .device import (
    autocast_context,
    compile_modes,
    compile_or_warn,
    enable_fast_matmul,
    fall_back_if_ops_missing,
    resolve_device,
    resolve_dtype,
    resolve_peak_flops,
    runs_asynchronously,
    synchronize,
    warn_compile_fallback,
)
from .distributed import (
    check_same_on_all_ranks,
    communication_guard,
    dist_env,
    fingerprint,
    init_process_group,
    rank_seed,
)
from .errors import CheckpointError, ConfigError, DeviceError, TrainingDivergedError
from .model import GPT
from .rundir import prepare_run_dir

SCHEDULES = ("cosine", "linear", "constant")
NONFINITE_POLICIES = ("stop", "rollback")
#: TrainConfig fields a Trainer reads only when it is built (the device, the optimizer, the compiled
#: model, the random generators, the MFU peak): ``train()`` refuses a ``trainer.config`` that changed them.
INIT_ONLY_FIELDS = (
    "device", "dtype", "compile", "compile_mode", "seed", "peak_flops", "weight_decay", "beta1", "beta2",
)  # fmt: skip


_FLOAT32_MAX = float(torch.finfo(torch.float32).max)


@dataclass
class TrainConfig:
    """Optimisation hyperparameters. ``batch_size`` is the global number of sequences per micro-step."""

    batch_size: int = 32
    max_iters: int = 1000
    lr: float = 1e-3
    min_lr: float | None = None  # floor of the decay; default lr / 10 (Chinchilla, nanoGPT)
    warmup_iters: int = 100
    lr_decay_iters: int | None = None  # default max_iters
    schedule: str = "cosine"
    weight_decay: float = 0.1
    beta1: float = 0.9
    beta2: float = 0.95
    grad_clip: float | None = 1.0  # global-norm clipping threshold; None or 0 turns clipping off
    grad_accum_steps: int = 1
    eval_interval: int = 100
    eval_iters: int = 20
    checkpoint_interval: int | None = None  # default eval_interval; 0 = only at the end
    device: str = "auto"
    dtype: str = "auto"
    compile: bool = False
    # torch.compile's mode (e.g. "max-autotune-no-cudagraphs"); None is torch's default. Needs compile=True.
    compile_mode: str | None = None
    seed: int = 1337
    peak_flops: float | str | None = None  # one device's peak FLOP/s for the MFU column; "auto" measures it
    progress: bool = True
    # A collective waiting longer than this fails (a dead or hung rank). None: 120 s, or 600 s with compile
    # (1800 s in a max-autotune mode), because every rank compiles at its own pace before the first
    # gradient all-reduce.
    ddp_timeout_s: float | None = None
    # On a NaN/inf loss or gradient norm: "stop" raises TrainingDivergedError; "rollback" restores the
    # state of the last checkpoint step (kept in host memory), halves lr and continues, at most
    # max_rollbacks times.
    on_nonfinite: str = "stop"
    max_rollbacks: int = 3

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Check every field (``ConfigError`` names the first bad one). Runs when the config is built and
        again when ``Trainer.train()`` starts, since a dataclass does not check fields set afterwards."""
        plain_fields(self)  # numpy scalars (from a sweep or an array) become plain Python values
        if self.on_nonfinite not in NONFINITE_POLICIES:
            raise ConfigError(
                f"on_nonfinite={self.on_nonfinite!r} is not allowed: choose from {NONFINITE_POLICIES}"
            )
        rollbacks = self.max_rollbacks
        if not is_int(rollbacks) or rollbacks < 0:
            raise ConfigError(f"max_rollbacks={rollbacks!r} is not allowed: it must be an integer >= 0")
        positive_ints = ("batch_size", "max_iters", "grad_accum_steps", "eval_iters", "eval_interval")
        for name in positive_ints:
            value = getattr(self, name)
            if not is_int(value) or value < 1:
                raise ConfigError(f"{name}={value!r} is not allowed: it must be an integer >= 1")
        warmup = self.warmup_iters
        if not is_int(warmup) or warmup < 0:
            raise ConfigError(f"warmup_iters={warmup!r} is not allowed: it must be an integer >= 0")
        decay = self.lr_decay_iters
        # A constant schedule has no warmup and no decay: warmup_iters cannot clash with lr_decay_iters.
        warmup_end = 1 if self.schedule == "constant" else max(1, self.warmup_iters)
        if decay is not None and (not is_int(decay) or decay < warmup_end):
            # A decay that ended before the warmup would drop the lr from its peak straight to min_lr.
            # Named in both forms (as warn_if_schedule_jumps does): the CLI passes this message on as is,
            # for a new run and for a resume's merged settings alike.
            raise ConfigError(
                f"lr_decay_iters={decay!r} (--lr-decay-iters) is not allowed: it must be an integer >= 1 and "
                f">= warmup_iters (--warmup-iters, here {self.warmup_iters}), since the decay starts where the "
                "warmup ends; lower the warmup, or use None (leave the flag out) to decay over max_iters"
            )
        # AdamW keeps the lr in float32 arithmetic: a larger one overflows inside the optimizer step.
        if not (is_real(self.lr) and 0 < self.lr <= _FLOAT32_MAX):
            raise ConfigError(
                f"lr={self.lr!r} is not allowed: the learning rate must be a number > 0 and <= {_FLOAT32_MAX:.3g}"
            )
        if self.min_lr is not None and not (is_real(self.min_lr) and 0 <= self.min_lr <= self.lr):
            raise ConfigError(
                f"min_lr={self.min_lr!r} (--min-lr) is not allowed: it must be a number in [0, lr={self.lr}] "
                "(--lr)"
            )
        if self.schedule not in SCHEDULES:
            raise ConfigError(f"schedule={self.schedule!r} is not allowed: choose one of {SCHEDULES}")
        if self.grad_clip is not None and not (is_real(self.grad_clip) and 0 <= self.grad_clip < math.inf):
            raise ConfigError(
                f"grad_clip={self.grad_clip!r} is not allowed: use a positive threshold, or 0 or None to disable"
            )
        if not is_real(self.weight_decay) or not 0 <= self.weight_decay < math.inf:
            raise ConfigError(
                f"weight_decay={self.weight_decay!r} is not allowed: it must be a finite number >= 0"
            )
        for name in ("beta1", "beta2"):  # AdamW's moment decay rates: a rate of 1 would never forget
            beta = getattr(self, name)
            if not is_real(beta) or not 0 <= beta < 1:
                raise ConfigError(f"{name}={beta!r} is not allowed: it must be a number in [0, 1)")
        every = self.checkpoint_interval
        if every is not None and (not is_int(every) or every < 0):
            raise ConfigError(
                f"checkpoint_interval={every!r} is not allowed: it must be an integer >= 0 (0: only at the end), "
                "or None for eval_interval"
            )
        seed = self.seed
        if not is_seed(seed):
            raise ConfigError(f"seed={seed!r} is not allowed: it must be an integer in [-2**63, 2**64)")
        for name in ("compile", "progress"):
            if not isinstance(getattr(self, name), bool):
                raise ConfigError(f"{name}={getattr(self, name)!r} is not allowed: it must be True or False")
        self._check_compile_mode()
        for name in ("device", "dtype"):
            if not isinstance(getattr(self, name), str):
                raise ConfigError(
                    f"{name}={getattr(self, name)!r} is not allowed: it must be a string such as 'auto'"
                )
        peak = self.peak_flops
        if peak is not None and peak != "auto" and not (is_real(peak) and math.isfinite(peak) and peak > 0):
            raise ConfigError(
                f"peak_flops={peak!r} is not allowed: give FLOP/s > 0 (e.g. 989e12), 'auto' or None"
            )
        timeout = self.ddp_timeout_s
        if timeout is not None and (not is_real(timeout) or not timeout > 0):
            raise ConfigError(
                f"ddp_timeout_s={timeout!r} is not allowed: it must be a number of seconds > 0, or None "
                "(120 s, 600 s with compile, 1800 s in a max-autotune compile_mode)"
            )

    def _check_compile_mode(self) -> None:
        mode = self.compile_mode
        if mode is None:
            return
        modes = compile_modes()
        if mode not in modes:
            raise ConfigError(
                f"compile_mode={mode!r} is not allowed: choose one of {modes}, or None for torch.compile's default"
            )
        if not self.compile:  # a mode without compiling would be ignored: a speed-up that silently is not
            raise ConfigError(
                f"compile_mode={mode!r} (--compile-mode) needs compile=True (--compile): without it the model "
                "is not compiled"
            )

    @property
    def collective_timeout_s(self) -> float:
        """The seconds a collective waits for the other ranks (``ddp_timeout_s``, or its default)."""
        if self.ddp_timeout_s is not None:
            return float(self.ddp_timeout_s)
        if not self.compile:
            return 120.0
        # max-autotune benchmarks candidate kernels while it compiles: minutes more than the default mode.
        return 1800.0 if (self.compile_mode or "").startswith("max-autotune") else 600.0

    def to_dict(self) -> dict[str, Any]:
        """Every field, JSON-able (what a checkpoint stores)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        """Build and validate a config from :meth:`to_dict`'s output; unknown fields are a ConfigError."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"unknown TrainConfig field(s) {unknown}: allowed fields are {sorted(known)}")
        return cls(**data)


def lr_at(step: int, config: TrainConfig) -> float:
    """Linear warmup to ``lr``, then cosine (or linear) decay to ``min_lr`` at ``lr_decay_iters``."""
    min_lr = config.lr / 10 if config.min_lr is None else config.min_lr
    if config.schedule == "constant":
        return config.lr
    if step < config.warmup_iters:
        return config.lr * (step + 1) / (config.warmup_iters + 1)
    decay_iters = config.lr_decay_iters or config.max_iters
    if step >= decay_iters:
        return min_lr
    progress = (step - config.warmup_iters) / max(1, decay_iters - config.warmup_iters)
    if config.schedule == "linear":
        return config.lr - progress * (config.lr - min_lr)
    return min_lr + 0.5 * (1.0 + math.cos(math.pi * progress)) * (config.lr - min_lr)


def warn_if_schedule_jumps(saved: TrainConfig, resumed: TrainConfig, step: int) -> None:
    """Warn when a resume's settings move the learning rate at the step it resumes from.

    The schedule is a function of ``max_iters`` (and ``lr_decay_iters``, ``warmup_iters``, ``lr``):
    continuing a finished 1,500-step run to 3,000 steps stretches the cosine, and the rate jumps from
    its final value back up mid-curve, a warm restart. That may be wanted; it must not be a surprise.
    """
    before, after = lr_at(step, saved), lr_at(step, resumed)
    if math.isclose(before, after, rel_tol=1e-9, abs_tol=0.0):
        return
    moved = f"resuming at step {step} with these settings moves the learning rate there from {before:.3g} to {after:.3g}"
    if resumed.schedule == "constant" or (resumed.schedule, resumed.lr) != (saved.schedule, saved.lr):
        # The typed lr or schedule is the change itself: lr_decay_iters cannot carry on the saved decay.
        why = f"lr {saved.lr:g} -> {resumed.lr:g}, schedule {saved.schedule} -> {resumed.schedule}"
        warnings.warn(f"{moved} ({why})", RuntimeWarning, stacklevel=3)
        return
    keep = saved.lr_decay_iters or saved.max_iters
    warnings.warn(
        f"{moved} (the schedule is recomputed for max_iters={resumed.max_iters}); to carry on the saved "
        f"decay instead, set lr_decay_iters={keep} (--lr-decay-iters {keep}): steps past it train at min_lr",
        RuntimeWarning,
        stacklevel=3,
    )


def warn_if_warmup_never_ends(config: TrainConfig) -> None:
    """Warn when a run is no longer than its warmup, so it never reaches ``lr``: with the default warmup
    of 100 steps, a 50-step try-out ends at half of it and seems to learn little. Allowed, but never
    silently. (A constant schedule has no warmup.)"""
    if config.schedule == "constant" or config.warmup_iters < config.max_iters:
        return
    last = lr_at(config.max_iters - 1, config)
    warnings.warn(
        f"warmup_iters={config.warmup_iters} (--warmup-iters) is not below max_iters={config.max_iters} "
        f"(--max-iters): the learning rate is still warming up at the last step ({last:.2e}, "
        f"{last / config.lr:.0%} of lr={config.lr:g}); give a smaller warmup_iters (or the constant schedule, "
        "without one) for a short run",
        RuntimeWarning,
        stacklevel=3,
    )


def make_optimizer(model: torch.nn.Module, config: TrainConfig, device: torch.device) -> torch.optim.AdamW:
    """AdamW with two parameter groups.

    Matrices (linear weights, embeddings) decay; biases and LayerNorm gains do not: shrinking a gain
    towards 0 would just switch a normalised feature off, and biases have no scale to regularise.
    """
    params = [p for p in model.parameters() if p.requires_grad]
    decay = [p for p in params if p.dim() >= 2]
    no_decay = [p for p in params if p.dim() < 2]
    groups = [
        {"params": decay, "weight_decay": config.weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    # The fused kernel does the whole update in one launch on CUDA.
    extra = {"fused": True} if device.type == "cuda" else {}
    return torch.optim.AdamW(groups, lr=config.lr, betas=(config.beta1, config.beta2), **extra)


def load_optimizer_state(optimizer: torch.optim.Optimizer, state: dict[str, Any]) -> None:
    """Load a saved optimizer state into ``optimizer``, keeping ``optimizer``'s own settings.

    A saved state also holds the saved run's hyperparameters (weight decay, betas, and ``fused``, which
    depends on the device it ran on). This run's settings win, since a resume may change them on purpose,
    and they are put in place *before* loading: ``load_state_dict`` moves the moments to the parameters'
    device, and puts AdamW's step counters where the ``fused`` flag says (fused: next to the parameters,
    as the fused CUDA kernel requires; otherwise on the CPU). With the saved flag instead, a CPU
    checkpoint resumed on a GPU would leave the fused kernel step counters on the CPU.
    """
    configured = [{k: v for k, v in group.items() if k != "params"} for group in optimizer.param_groups]
    saved = state["param_groups"]
    if len(saved) != len(configured):
        raise CheckpointError(
            f"the checkpoint's optimizer state has {len(saved)} parameter group(s) and this optimizer "
            f"{len(configured)}: it was written for a different model or optimizer, so it cannot resume this run"
        )
    merged = [{**group, **settings} for group, settings in zip(saved, configured)]
    try:
        optimizer.load_state_dict({**state, "param_groups": merged})
    except ValueError as err:  # torch's check of the group sizes: a different set of parameters
        raise CheckpointError(f"the checkpoint's optimizer state does not fit this model: {err}") from err


class History:
    """Per-step training numbers, stored column-wise in compact float arrays (NaN = not measured)."""

    COLUMNS = (
        "step",
        "lr",
        "train_loss",
        "val_loss",
        "grad_norm",
        "grad_norm_clipped",
        "tokens_per_s",
        "mfu",
        "elapsed_s",
    )

    def __init__(self) -> None:
        self.columns: dict[str, array] = {name: array("d") for name in self.COLUMNS}

    def __len__(self) -> int:
        return len(self.columns["step"])

    def append(self, record: dict[str, float | None]) -> None:
        """Add one step's row; a missing or ``None`` value is stored as NaN."""
        for name in self.COLUMNS:
            value = record.get(name)
            self.columns[name].append(math.nan if value is None else float(value))

    def set_last(self, name: str, value: float) -> None:
        """Overwrite column ``name`` of the last row."""
        self.columns[name][-1] = float(value)

    def column(self, name: str, drop_missing: bool = False) -> list[float]:
        """One column as floats (``step`` too), NaN where not measured; ``drop_missing`` leaves those out."""
        values = list(self.columns[name])
        return [v for v in values if not math.isnan(v)] if drop_missing else values

    def evaluated(self) -> tuple[list[int], list[float]]:
        """Steps at which validation loss was measured, and its values."""
        pairs = [
            (int(s), v) for s, v in zip(self.columns["step"], self.columns["val_loss"]) if not math.isnan(v)
        ]
        return [s for s, _ in pairs], [v for _, v in pairs]

    def to_dict(self) -> dict[str, list[float | None]]:
        """JSON-able columns, with ``None`` where a value was not measured."""
        return {k: [None if math.isnan(v) else v for v in col] for k, col in self.columns.items()}

    @classmethod
    def from_dict(cls, data: dict[str, list[float | None]]) -> History:
        """The inverse of :meth:`to_dict`; ``ValueError`` if the columns differ in length.

        A column that is missing or empty (one a checkpoint from an older version did not record) is
        filled with NaN, one per step, so that every later row stays aligned with its step.
        """
        history = cls()
        for name in cls.COLUMNS:
            history.columns[name].extend(math.nan if v is None else v for v in data.get(name, []))
        lengths = {name: len(values) for name, values in history.columns.items() if len(values)}
        if len(set(lengths.values())) > 1:
            raise ValueError(f"history columns of different lengths {lengths}: one row per step is needed")
        steps = max(lengths.values(), default=0)
        for values in history.columns.values():
            if not values:
                values.extend([math.nan] * steps)
        return history

    def rows(self) -> list[dict[str, float]]:
        """One dict per step (floats, NaN where not measured), e.g. for ``pandas.DataFrame(history.rows())``."""
        return [dict(zip(self.COLUMNS, values)) for values in zip(*self.columns.values())]


#: The hooks a callback may define; the trainer calls those it has.
CALLBACK_HOOKS = ("on_train_begin", "on_step_end", "on_eval", "on_train_end")
#: The hooks only rank 0 calls under DDP (the others are called on every rank).
RANK0_HOOKS = ("on_step_end", "on_eval")


class Callback:
    """Hooks the trainer calls; subclass and override the ones you need (any object with one or more of
    these methods works too). Under torchrun ``on_train_begin`` and ``on_train_end`` run on every rank,
    ``on_step_end`` and ``on_eval`` on rank 0 only, the one that logs (so they must not call anything
    every rank has to join, such as ``trainer.save_checkpoint()``; that is refused there).

    A step's ``record`` is a dict: ``step`` (int, counted from 1), ``lr``, ``train_loss`` (nats, the mean
    over the step's micro-batches and ranks), ``grad_norm`` (before clipping), ``grad_norm_clipped``,
    ``tokens_per_s`` (floats; on a GPU a step is timed from the previous step's loss read to its own,
    so no second sync point is needed), ``elapsed_s`` (seconds since the run began, across resumes), ``val_loss``
    (nats; ``None`` on steps without an evaluation) and ``mfu`` (a fraction; ``None`` without a
    ``peak_flops``). :class:`History` stores the same columns, with NaN for ``None``.
    """

    def on_train_begin(self, trainer: Trainer) -> None:
        """Called when ``train()`` starts, before the first step of that call."""

    def on_step_end(self, trainer: Trainer, record: dict[str, Any]) -> None:
        """Called after every optimizer step, with that step's record (after its evaluation, if any)."""

    def on_eval(self, trainer: Trainer, record: dict[str, Any]) -> None:
        """Called after ``on_step_end`` on the steps that were evaluated (``record["val_loss"]`` is set)."""

    def on_train_end(self, trainer: Trainer) -> None:
        """Called when ``train()`` returns (after its final checkpoint) or raises."""


class Trainer:
    """Trains a :class:`~arlm_lib.model.GPT` on a token stream; resumable, bit-exactly on CPU.

    Under ``torchrun`` (``WORLD_SIZE`` > 1) it joins the process group and wraps the model in DDP.
    Only rank 0 evaluates, logs and writes checkpoints; the other ranks wait at a barrier. The
    sampling scheme, resuming with another world size and what happens when a rank dies are described
    in :mod:`arlm_lib.distributed`. MFU = ``flops_per_token`` x tokens/s / (``peak_flops`` x ranks).

    What building one does, besides checking its arguments: it seeds torch's global RNG with
    ``config.seed`` (dropout draws from it; batches come from the trainer's own generator), moves
    ``model`` to the device in place, and works on a copy of ``config`` (change ``trainer.config``, not
    your own object, to train on). ``out_dir``, if given, is where checkpoints go: a new run refuses a
    file, a directory of other files, or one that already holds a checkpoint (continue that one with
    :meth:`resume`); unlike the command line it takes no lock, so keep to one trainer per directory.
    Losses are in nats throughout (``History``, records, :meth:`evaluate`).
    """

    def __init__(
        self,
        model: GPT,
        train_tokens,
        val_tokens,
        config: TrainConfig,
        tokenizer=None,
        callbacks: list[Callback] | tuple = (),
        out_dir: str | os.PathLike | None = None,
    ) -> None:
        if not isinstance(config, TrainConfig):
            raise ConfigError(
                f"config must be a TrainConfig, got {type(config).__name__}: build one with "
                "TrainConfig(batch_size=..., ...) or TrainConfig.from_dict(a_dict)"
            )
        # A copy: a rollback halves this run's lr, which must not change the caller's config object.
        self.config = config = replace(config)
        self._built_with = {name: getattr(config, name) for name in INIT_ONLY_FIELDS}
        if not isinstance(model, GPT):
            raise ConfigError(
                f"model must be an arlm_lib GPT, got {type(model).__name__}: the trainer relies on its config "
                "(vocabulary, context, FLOPs per token) and its loss"
            )
        if tokenizer is not None and not isinstance(getattr(tokenizer, "vocab_size", None), int):
            hint = (
                " (callbacks go in callbacks=[...])" if isinstance(tokenizer, (list, tuple, Callback)) else ""
            )
            raise ConfigError(
                f"tokenizer must be an arlm_lib tokenizer or None, got {type(tokenizer).__name__}{hint}"
            )
        if isinstance(callbacks, TrainConfig):
            raise ConfigError(
                "callbacks got a TrainConfig: Trainer.resume takes its changes as keyword arguments "
                "(Trainer.resume(run_dir, train, val, max_iters=2000)), on top of the saved config"
            )
        if not isinstance(callbacks, (list, tuple)):
            one = " (for one callback, pass [callback])" if isinstance(callbacks, Callback) else ""
            raise ConfigError(
                f"callbacks must be a list of Callback objects, got {type(callbacks).__name__}{one}"
            )
        if tokenizer is not None and tokenizer.vocab_size > model.config.vocab_size:
            # Saved with the checkpoint, it would only fail when someone generates: say so now.
            raise ConfigError(
                f"the tokenizer has {tokenizer.vocab_size} ids, the model's vocabulary only "
                f"{model.config.vocab_size}: build the model with vocab_size >= {tokenizer.vocab_size}"
            )
        self.tokenizer = tokenizer
        self.callbacks = list(callbacks)
        for i, callback in enumerate(self.callbacks):
            if not any(callable(getattr(callback, hook, None)) for hook in CALLBACK_HOOKS):
                raise ConfigError(
                    f"callbacks[{i}] ({callback!r}) has none of the hooks {', '.join(CALLBACK_HOOKS)}: "
                    "subclass arlm_lib.train.Callback and override the ones you need"
                )
        self.out_dir = out_dir
        self.block_size = model.config.block_size
        for name, tokens in (("the training tokens", train_tokens), ("the validation tokens", val_tokens)):
            check_token_stream(tokens, self.block_size, model.config.vocab_size, name)
        self.train_tokens, self.val_tokens = train_tokens, val_tokens

        self.dist = dist_env()
        self.world_size, self.rank, self.local_rank = (
            self.dist.world_size,
            self.dist.rank,
            self.dist.local_rank,
        )
        self._check_batch_split()
        # The checks of the command line's --out, on the one writer: a new run never overwrites a file,
        # another run's checkpoint or a directory of someone's files. Checked now, created once every
        # other check has passed. Trainer.resume sets out_dir after __init__.
        claim_out_dir = functools.partial(
            prepare_run_dir,
            out_dir,
            resume=False,
            name="out_dir",
            how_to_resume="continue it with Trainer.resume(out_dir, ...)",
        )
        if out_dir is not None and self.rank == 0:
            claim_out_dir(create=False)
        device = resolve_device(config.device)
        if self.world_size > 1 and device.type == "mps":
            raise DeviceError(
                "DDP (torchrun with several processes) is not supported on mps: use --device cpu"
            )
        if self.world_size > 1 and device.type == "cuda":
            device = torch.device("cuda", self.local_rank)  # one GPU per process, chosen by torchrun
            torch.cuda.set_device(device)
        self.device = device
        self.dtype = resolve_dtype(config.dtype, device)
        enable_fast_matmul(device)
        self._owns_process_group = False
        self._init_distributed()

        # Dropout masks follow from here. Rank 0 uses the seed itself (so one process is reproducible);
        # the other ranks get their own streams. Initial weights come from rank 0 (DDP broadcasts them).
        torch.manual_seed(config.seed if self.rank == 0 else rank_seed(config.seed, self.rank, 0))
        self.raw_model = model.to(device)
        if device.type == "mps":  # PyTorch lacks some ops on MPS: probe once, else train on the CPU
            self.device = device = fall_back_if_ops_missing(
                self.raw_model, device, self.dtype, self.block_size
            )
            if device.type == "cpu" and self.dtype is torch.float16:
                self.dtype = torch.float32
        self.optimizer = make_optimizer(self.raw_model, config, device)
        # Set once the optimizer has changed the weights: an interrupt that arrives inside optimizer.step()
        # after its kernels ran (raised at its next Python line) must count the step, not drop it.
        self._update_applied = False
        self.optimizer.register_step_post_hook(lambda *_: setattr(self, "_update_applied", True))
        # fp16 has a narrow exponent range: scale the loss so small gradients do not flush to zero.
        self.scaler = torch.amp.GradScaler(device.type, enabled=self.dtype is torch.float16)
        # One generator drives batch sampling; seeded alike on every rank, so each rank can take its
        # slice of the same global batch.
        self.batch_generator = torch.Generator().manual_seed(config.seed)
        self.step = 0
        self.history = History()
        self._stop = threading.Event()
        self._stop_honoured = False  # a stop request that ended a train() call (cleared by the next)
        self.rollbacks: list[dict[str, float]] = []  # one entry per non-finite step rolled back
        self._good_state: dict[str, Any] | None = None  # rollback target (on_nonfinite="rollback" only)
        self._pending_record: dict[str, Any] | None = None  # a step applied but not yet recorded
        self._in_rank0_hook = False  # inside a callback hook that rank 0 alone runs (under DDP)
        # On a GPU a step's time is the period between its host read and the previous step's (see
        # _step_seconds); None when the previous step's read is not comparable (none yet, or work between).
        self._last_read_at: float | None = None
        # MFU = achieved FLOP/s / peak. The FLOPs per token are fixed by the architecture and context.
        self.flops_per_token = self.raw_model.flops_per_token(self.block_size)
        self.peak_flops = resolve_peak_flops(config.peak_flops, device, self.dtype)
        self._compiled_ok = not config.compile
        if self.world_size > 1:  # before DDP compares shapes, so a mismatch gets a message that says why
            with self._communication_guard("the start-up check"):
                check_same_on_all_ranks(self._run_fingerprint(), "the corpus, tokenizer and config", device)
        self.model: torch.nn.Module = self._wrap_model(config.compile)
        if out_dir is not None and self.rank == 0:
            self.out_dir = claim_out_dir(create=True)

    @functools.cached_property
    def _data_identity(self) -> dict[str, Any]:
        """The token streams' sizes and a fingerprint of a strided sample of them (cheap at any size)."""
        return {
            "train_tokens": len(self.train_tokens),
            "val_tokens": len(self.val_tokens),
            "fingerprint": fingerprint(self.train_tokens, self.val_tokens)[:16],
        }

    def _warn_if_other_data(self, saved: Any) -> None:
        """Resuming on other data is allowed (continue training on new text), but then the run does not
        continue as it was: say so once (rank 0), naming the sizes."""
        if not isinstance(saved, dict) or "fingerprint" not in saved or not self.is_main:
            return  # a checkpoint from before the fingerprint was kept
        now = self._data_identity
        if saved["fingerprint"] == now["fingerprint"]:
            return
        before = (saved.get("train_tokens"), saved.get("val_tokens"))
        same_sizes = (
            " (the same sizes, other tokens)" if before == (now["train_tokens"], now["val_tokens"]) else ""
        )
        warnings.warn(
            f"resuming on other data than the run trained on: the checkpoint's training / validation "
            f"split had {before[0]} / {before[1]} tokens, this one has {now['train_tokens']} / "
            f"{now['val_tokens']}{same_sizes}; training continues on the new data, and its validation "
            "loss is not comparable with the old",
            RuntimeWarning,
            stacklevel=4,  # the caller of Trainer.resume (this method <- load_state <- resume)
        )

    def _run_fingerprint(self) -> str:
        """What every rank must share: configs, tokenizer and token streams (a sample of them)."""
        tokenizer = self.tokenizer.to_dict() if self.tokenizer is not None else None
        model_config = self.raw_model.config.to_dict()
        return fingerprint(model_config, self.config.to_dict(), tokenizer, self.train_tokens, self.val_tokens)

    # ------------------------------------------------------------------ setup
    def _init_distributed(self) -> None:
        if self.world_size == 1:
            return
        # A timeout turns a dead or hung peer into an error on the survivors instead of a hang.
        with communication_guard(
            self.dist, "start-up (init_process_group)", self.config.collective_timeout_s
        ):
            self._owns_process_group = init_process_group(self.device, self.config.collective_timeout_s)

    def _wrap_model(self, use_compile: bool) -> torch.nn.Module:
        """The module the training step calls: the raw model, compiled if asked, inside DDP under torchrun.

        Checkpoints always save ``raw_model``, so their keys never carry ``_orig_mod.`` or ``module.``.
        """
        model: torch.nn.Module = self.raw_model
        if use_compile:
            model = compile_or_warn(model, warn=self.is_main, mode=self.config.compile_mode)
            self._compiled_ok = model is self.raw_model  # nothing left to fall back from
        if self.world_size > 1:
            device_ids = [self.device.index] if self.device.type == "cuda" else None
            with communication_guard(self.dist, "the DDP set-up", self.config.collective_timeout_s):
                model = DistributedDataParallel(model, device_ids=device_ids)  # broadcasts rank 0's weights
        return model

    def close(self) -> None:
        """Leave the process group this trainer joined (call once training is over, under torchrun)."""
        if self._owns_process_group and dist.is_initialized():
            dist.destroy_process_group()
            self._owns_process_group = False

    @property
    def is_main(self) -> bool:
        """Whether this process is rank 0, the one that evaluates, logs and writes checkpoints."""
        return self.rank == 0

    def request_stop(self) -> None:
        """Ask ``train()`` to stop after the current step (the running call, or the next one if it has not
        started yet); it then saves a checkpoint and returns. Safe to call from a callback, another thread
        or a signal handler. The request ends that one call: the call after it continues the run."""
        self._stop.set()

    def clear_stop(self) -> None:
        """Forget a stop request that ``train()`` has not acted on yet."""
        self._stop.clear()

    @property
    def stop_requested(self) -> bool:
        """Whether a stop was requested and not yet acted on."""
        return self._stop.is_set()

    # ------------------------------------------------------------------ state
    def rng_state(self) -> dict[str, torch.Tensor]:
        """The random states a bit-exact resume restores: torch's (dropout), the batches', CUDA's."""
        state = {"torch_cpu": torch.get_rng_state(), "batches": self.batch_generator.get_state()}
        if self.device.type == "cuda":
            state["torch_cuda"] = torch.cuda.get_rng_state(self.device)
        return state

    def state_dict(self) -> dict[str, Any]:
        """The training state a checkpoint stores besides weights and optimizer: step, history, world size,
        and which data it trained on (a fingerprint: a resume on other data is then said, not silent)."""
        state = {
            "step": self.step,
            "history": self.history.to_dict(),
            "world_size": self.world_size,
            "data": self._data_identity,
        }
        if self.scaler.is_enabled():
            # fp16: keep the loss scale it has settled on, so a resume does not redo the search.
            state["grad_scaler"] = self.scaler.state_dict()
        return state

    def save_checkpoint(self) -> None:
        """Write the run's checkpoint (rank 0 only) and make every rank wait until it exists.

        Every rank must call it: under DDP a callback's ``on_step_end`` or ``on_eval`` runs on rank 0
        alone, so calling it there is refused (the other ranks would never reach its barrier).
        """
        if self._in_rank0_hook:
            raise ConfigError(
                "save_checkpoint() was called from a callback's on_step_end or on_eval, which under DDP run "
                f"on rank 0 only (world size {self.world_size}): the other ranks would never reach its "
                "barrier. The trainer saves every checkpoint_interval steps (TrainConfig), on a stop and at the end"
            )
        if self.out_dir is not None and self.is_main:
            ckpt.save_checkpoint(
                self.out_dir,
                self.raw_model,
                tokenizer=self.tokenizer,
                optimizer=self.optimizer,
                train_config=self.config.to_dict(),
                trainer_state=self.state_dict(),
                rng_state=self.rng_state(),
            )
        self._barrier()

    def load_state(self, checkpoint: ckpt.Checkpoint) -> None:
        """Restore optimizer, step, history and RNG states from a checkpoint (weights are loaded apart)."""
        if checkpoint.optimizer_state is None:
            raise CheckpointError(
                "the checkpoint holds no optimizer state, so training cannot resume exactly"
            )
        load_optimizer_state(self.optimizer, checkpoint.optimizer_state)
        state = checkpoint.trainer_state
        step = state.get("step", 0) if isinstance(state, dict) else None
        if not is_int(step) or step < 0:
            raise CheckpointError(
                f"the checkpoint's trainer state has step={step!r}: it must be an integer >= 0"
            )
        # A checksum-valid file can still hold a state this code did not write (edited by hand, another
        # version): whatever fails to restore is reported as the checkpoint's defect, not as a bare error.
        try:
            history = History.from_dict(state.get("history", {}))
            scaler_state = state.get("grad_scaler")
            if scaler_state and self.scaler.is_enabled():
                self.scaler.load_state_dict(scaler_state)
            self._restore_rng(checkpoint.rng_state)
        except (TypeError, ValueError, KeyError, AttributeError, RuntimeError) as exc:
            raise CheckpointError(f"the checkpoint's training state cannot be restored: {exc}") from exc
        self.step, self.history = step, history
        self._warn_if_other_data(state.get("data"))
        if self.rank > 0:  # the checkpoint holds rank 0's dropout RNG; the other ranks derive their own
            torch.manual_seed(rank_seed(self.config.seed, self.rank, self.step))

    @classmethod
    def resume(
        cls,
        run_dir: str | os.PathLike,
        train_tokens,
        val_tokens,
        callbacks: list[Callback] | tuple = (),
        **config_overrides: Any,
    ) -> Trainer:
        """Rebuild a trainer from ``run_dir``'s checkpoint; overrides (e.g. ``max_iters``) apply on top."""
        from .tokenizers import tokenizer_from_dict

        checkpoint = ckpt.load_checkpoint(run_dir)
        if checkpoint.train_config is None:
            raise CheckpointError(
                f"{run_dir} holds weights only (no training config), so it cannot be resumed"
            )
        try:
            saved = TrainConfig.from_dict(_resumable_compile_mode(checkpoint.train_config, config_overrides))
        except (ConfigError, TypeError, ValueError) as exc:
            raise CheckpointError(
                f"{run_dir} holds a training config this version cannot use: {exc}"
            ) from exc
        config = TrainConfig.from_dict({**saved.to_dict(), **config_overrides})
        model = GPT(checkpoint.model_config)
        ckpt.load_state_strict(model, checkpoint.model_state, source=str(run_dir))
        tokenizer = tokenizer_from_dict(checkpoint.tokenizer) if checkpoint.tokenizer else None
        trainer = cls(model, train_tokens, val_tokens, config, tokenizer, callbacks)
        trainer.out_dir = run_dir  # after __init__, whose checks of out_dir are for a new run
        trainer.load_state(checkpoint)
        if trainer.step > config.max_iters:
            raise ConfigError(
                f"max_iters={config.max_iters} (--max-iters) is below the step the run was saved at "
                f"({trainer.step}): to train on, give max_iters > {trainer.step}"
            )
        if trainer.is_main:
            warn_if_schedule_jumps(saved, config, trainer.step)
        return trainer

    # ------------------------------------------------------------------ loop
    def _barrier(self) -> None:
        if self.world_size > 1:
            with self._communication_guard("a barrier"):
                dist.barrier()

    def _communication_guard(self, what: str):
        """Report a collective that failed (a rank died or hangs) as a DistributedError naming the step."""
        return communication_guard(self.dist, what, self.config.collective_timeout_s, self.step)

    def _batch(self, tokens, generator) -> tuple[torch.Tensor, torch.Tensor]:
        return get_batch(
            tokens,
            self.config.batch_size // self.world_size,
            self.block_size,
            generator,
            device=self.device,
            pin_memory=self.device.type == "cuda",
            rank=self.rank,
            world_size=self.world_size,
        )

    def _forward_loss(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        with autocast_context(self.device, self.dtype):
            if self._compiled_ok:
                return self.model(x, y, loss_only=True).loss
            try:  # torch.compile is lazy: a missing backend or compiler only shows at the first call
                with _backward_compiled_now():  # ...and the backward graph's at the first backward
                    loss = self.model(x, y, loss_only=True).loss
                self._compiled_ok = True
                return loss
            except torch.cuda.OutOfMemoryError:  # torch.OutOfMemoryError only from torch 2.5
                raise  # the batch does not fit: a memory problem, not a compiler one (eager needs more)
            except Exception as exc:
                if self.is_main:
                    warn_compile_fallback(exc)
                self._compiled_ok = True
                self.model = self._wrap_model(use_compile=False)
                return self.model(x, y, loss_only=True).loss

    @torch.no_grad()
    def evaluate(self, tokens=None, iters: int | None = None) -> float:
        """Mean loss (nats per token) over ``iters`` batches of held-out data; the model's train/eval
        mode is restored afterwards.

        The batches come from a generator seeded the same way at every evaluation, so successive
        evaluations compare the model on identical data, and evaluating never disturbs training's RNG.
        """
        tokens = self.val_tokens if tokens is None else tokens
        generator = torch.Generator().manual_seed((self.config.seed + 1) % 2**64)
        was_training = self.raw_model.training
        self.raw_model.eval()
        # Under DDP rank 0 evaluates alone, but on the whole global batch: fed at once, its logits alone
        # (batch x context x vocab) can exceed one GPU. So it goes through in the per-rank micro-batches
        # that training already fits in memory; equal-sized pieces, so the mean of their means is the mean.
        micro = self.config.batch_size // self.world_size
        losses = []
        try:
            iters = self.config.eval_iters if iters is None else check_positive_int("iters", iters)
            for _ in range(iters):
                x, y = get_batch(tokens, self.config.batch_size, self.block_size, generator)
                pieces = []
                for xs, ys in zip(x.split(micro), y.split(micro)):
                    xs, ys = self._to_device(xs), self._to_device(ys)
                    with autocast_context(self.device, self.dtype):
                        pieces.append(self.raw_model(xs, ys).loss)
                losses.append(torch.stack(pieces).mean().item())
        finally:  # an error (out of memory, say) that the caller catches must not leave it in eval mode
            self.raw_model.train(was_training)
        return sum(losses) / len(losses)

    def _to_device(self, batch: torch.Tensor) -> torch.Tensor:
        """A CPU batch on the training device; through pinned memory on CUDA, as :func:`get_batch` does."""
        if self.device.type == "cuda":
            return batch.pin_memory().to(self.device, non_blocking=True)
        return batch.to(self.device)

    def _checkpoint_note(self) -> str:
        """What a reader of a divergence error can fall back on."""
        if self.out_dir is not None and ckpt.checkpoint_path(self.out_dir).is_file():
            return "the last good checkpoint is kept"
        return "no checkpoint had been written yet, so there is nothing to resume from"

    def _abandon_step(self, unscaled: bool = True) -> None:
        """Drop this step's gradients. With fp16, also close the loss scaler's step once ``unscale_`` has
        run: the scaler refuses a second ``unscale_`` (the next step's) before an ``update``. The update
        would also count the dropped step towards growing the scale (or lower it after an overflow), so
        the scale and its growth count are put back as they were: a dropped step leaves no trace."""
        self.optimizer.zero_grad(set_to_none=True)
        if unscaled and self.scaler.is_enabled():
            before = self.scaler.state_dict()  # a host read, but only on this rare path
            self.scaler.update()
            self.scaler.load_state_dict(before)

    def _accumulate_gradients(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Forward and backward over ``grad_accum_steps`` micro-batches. Returns the summed loss and the
        number of ranks that asked to stop (see ``_stop_before_step``), both still on the device."""
        config = self.config
        loss_sum = torch.zeros((), device=self.device)  # summed on the device: no host read per micro-step
        with self._communication_guard("the forward/backward pass"):  # DDP all-reduces inside backward
            for micro in range(config.grad_accum_steps):
                x, y = self._batch(self.train_tokens, self.batch_generator)
                last = micro == config.grad_accum_steps - 1
                # Under DDP, only the last micro-step all-reduces gradients; the others accumulate locally.
                sync = self.model.no_sync() if (self.world_size > 1 and not last) else _null_context()
                with sync:
                    loss = self._forward_loss(x, y) / config.grad_accum_steps
                    self.scaler.scale(loss).backward()
                loss_sum += loss.detach()
            # torch.full writes the flag with a kernel: no host-to-device copy, which would wait for the GPU.
            sums = torch.stack([loss_sum, torch.full((), float(self.stop_requested), device=self.device)])
            if self.world_size > 1:
                dist.all_reduce(sums)  # one collective for the ranks' losses and their stop votes
        return sums[0], sums[1]

    def _stop_before_step(self) -> bool:
        """Whether to end training before the next step on this rank's own stop request.

        One process stops when asked. Under DDP a rank cannot: its peers would wait for it in the next
        step's all-reduce. A stop request there (a callback's: they run on rank 0 alone; or a signal)
        is a vote carried by the all-reduce of the next step's loss, which every rank reads anyway; if
        any rank voted, all of them drop that step before its update and stop after the step the
        request came in, without a host read of their own at every step.
        """
        return self.world_size == 1 and self.stop_requested

    def _check_finite(self, total_loss: float, grad_norm: float, lr: float) -> None:
        """Raise TrainingDivergedError for a non-finite loss, or a non-finite gradient norm without a
        loss scaler (with fp16's scaler, an overflow only makes it skip the step and lower its scale)."""
        if not math.isfinite(total_loss):
            raise TrainingDivergedError(
                f"the training loss became {total_loss} at step {self.step + 1} (lr={lr:.3g}); the weights were not "
                f"updated and {self._checkpoint_note()}. {self._divergence_advice()}"
            )
        if not math.isfinite(grad_norm) and not self.scaler.is_enabled():
            raise TrainingDivergedError(
                f"the gradient norm became {grad_norm} at step {self.step + 1} (lr={lr:.3g}); the weights were not "
                f"updated and {self._checkpoint_note()}. {self._divergence_advice()}"
            )

    def _divergence_advice(self) -> str:
        """What to change after a divergence: clipping only where it is off (it is on by default)."""
        warmup = "" if self.config.warmup_iters else ", add warmup (--warmup-iters)"
        if self.config.grad_clip:
            return f"Lower the learning rate (--lr){warmup}; gradient clipping is already on (--grad-clip {self.config.grad_clip:g})."
        return f"Lower the learning rate (--lr){warmup}, or turn gradient clipping on (--grad-clip 1.0)."

    def _train_step(self) -> dict[str, Any] | None:
        """One optimizer step: gradients over the micro-batches, clip, check, update; the step's record
        (None for a step dropped by a stop vote under DDP)."""
        config = self.config
        lr = lr_at(self.step, config)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        previous_read, self._last_read_at = self._last_read_at, None  # set again once this step succeeds
        # Under DDP a stop vote drops the step after its batches were drawn and its dropout masks made: a
        # copy of the random states lets the run resume exactly as if the step had never been started.
        random_states = self.rng_state() if self.world_size > 1 else None
        t0 = time.perf_counter()
        try:
            loss_sum, stop_votes = self._accumulate_gradients()
        except BaseException:  # e.g. Ctrl-C in a notebook: the next step must not add onto these gradients
            self.optimizer.zero_grad(set_to_none=True)
            raise
        unscaled = scaler_updated = False
        self._update_applied = False
        try:
            self.scaler.unscale_(self.optimizer)
            unscaled = True
            max_norm = config.grad_clip if config.grad_clip else math.inf
            norm = torch.nn.utils.clip_grad_norm_(self.raw_model.parameters(), max_norm)
            # The step's one host read: every read waits for the GPU to finish all queued work and leaves
            # it idle until the next kernels are launched, so the loss, the norm and the ranks' stop votes
            # are fetched together. The loss and the norm are checked before the optimizer step, so a
            # non-finite value never reaches the weights.
            read = torch.stack([loss_sum, norm.to(loss_sum), stop_votes]).tolist()
            read_at = time.perf_counter()
            total_loss, grad_norm, stop_votes = read
            if self.world_size > 1 and stop_votes > 0:  # (one process stops between steps instead)
                self._abandon_step(unscaled)
                self._restore_rng(random_states)
                self._stop.set()  # on every rank, so each ends this train() call alike
                return None
            total_loss /= self.world_size
            self._check_finite(total_loss, grad_norm, lr)
            self.scaler.step(self.optimizer)  # skips the update if fp16 gradients overflowed
            self.scaler.update()
            scaler_updated = True
        except BaseException:
            if self._update_applied:
                # Ctrl-C inside optimizer.step(), after the weights changed: the step happened. Count it
                # (the next train() records it), so that the run never takes an update twice.
                if not scaler_updated:
                    self.scaler.update()
                self._count_applied_step(lr, total_loss, grad_norm, max_norm)
                raise
            # A divergence, or an interrupt while waiting for the GPU (on CUDA that read is where a
            # step spends its time): leave the optimizer and the loss scaler ready for the next step.
            self._abandon_step(unscaled)
            raise
        record = self._count_applied_step(lr, total_loss, grad_norm, max_norm)
        dt = self._step_seconds(t0, previous_read, read_at)
        tokens = config.batch_size * config.grad_accum_steps * self.block_size
        record["tokens_per_s"] = tokens / dt if dt > 0 else math.nan
        if self.peak_flops:
            # tokens_per_s counts every rank's tokens; peak_flops is one device's, so divide by the ranks.
            record["mfu"] = (
                self.flops_per_token * record["tokens_per_s"] / (self.peak_flops * self.world_size)
            )
        return record

    def _count_applied_step(
        self, lr: float, loss: float, grad_norm: float, max_norm: float
    ) -> dict[str, Any]:
        """Count an update the weights have taken, at once, and leave its record pending: an interrupt
        from here on (on a GPU, a wait for the optimizer's kernels) must not make the next train() redo a
        step the weights already took; that call records it instead."""
        self.step += 1
        record = {
            "step": self.step,
            "lr": lr,
            "train_loss": loss,
            "val_loss": None,
            "grad_norm": grad_norm,
            "grad_norm_clipped": min(grad_norm, max_norm),
            "tokens_per_s": math.nan,
            "mfu": None,
        }
        self._pending_record = record  # finished by _finish_step, even if the timing is interrupted
        self.optimizer.zero_grad(set_to_none=True)
        return record

    def _step_seconds(self, started: float, previous_read: float | None, read_at: float) -> float:
        """The wall time of the step that started at ``started`` and read its loss at ``read_at``.

        On the CPU, from its start to the end of its update. A GPU only queues the work, so measuring the
        same span needs a wait for the update's kernels, and that wait leaves the GPU idle while the host
        prepares the next step: a second bubble per step on top of the loss read's. So, on a GPU, a step
        whose predecessor read its loss in the same run of steps is timed from that read to its own.
        Each read waits for all queued work, so the interval holds exactly one step of GPU work (the
        previous update, then this step's passes), and the idle time the host leaves between steps
        (callbacks included) counts, as it does in training. The first step of a ``train()`` call, and
        one after an evaluation, a checkpoint or a failed step, is timed by the wait instead.
        """
        self._last_read_at = read_at
        if previous_read is not None and runs_asynchronously(self.device):
            return read_at - previous_read
        synchronize(self.device)  # wait for the queued update, or the time covers only its launch
        return time.perf_counter() - started

    def _finish_step(self, record: dict[str, Any], elapsed_s: float, checkpoint_every: int | None) -> None:
        """Evaluate, record, report and checkpoint a step whose update is applied.

        The record stays pending until this returns, so a step interrupted here (Ctrl-C during the
        evaluation, say) is finished by the next ``train()`` instead of missing from the history.
        """
        config = self.config
        record.setdefault("elapsed_s", elapsed_s)
        evaluate_now = self.step % config.eval_interval == 0 or self.step == config.max_iters
        if evaluate_now and self.is_main and record["val_loss"] is None:
            record["val_loss"] = self.evaluate()
            self._last_read_at = None  # the next step's interval would hold the evaluation
        recorded = self.history.columns["step"]  # read in place: copying the column every step is O(n^2)
        if not recorded or recorded[-1] != record["step"]:
            self.history.append(record)
        self._pending_record = None
        if self.is_main:
            self._call_hook("on_step_end", record)
            if record["val_loss"] is not None:
                self._call_hook("on_eval", record)
        if checkpoint_every and self.step % checkpoint_every == 0 and self.step < config.max_iters:
            self.save_checkpoint()
            self._remember_good_state()
            self._last_read_at = None

    def _check_config_changes(self) -> None:
        """Check ``trainer.config`` as changed since the trainer was built (the way to train on, say, with
        a higher ``max_iters``): every field must still be valid, and the fields read only when the
        trainer is built must not have changed, since changing them now would do nothing."""
        self.config.validate()
        changed = [
            f"{name} from {self._built_with[name]!r} to {getattr(self.config, name)!r}"
            for name in INIT_ONLY_FIELDS
            if getattr(self.config, name) != self._built_with[name]
        ]
        if changed:
            raise ConfigError(
                f"trainer.config changed {'; '.join(changed)} after the Trainer was built, but "
                f"{', '.join(INIT_ONLY_FIELDS)} are read only when it is built, so the change would do "
                "nothing: put the old value back, or build a new Trainer (Trainer.resume(out_dir, ...) "
                "continues a saved run with new values)"
            )
        self._check_batch_split()

    def _check_batch_split(self) -> None:
        if self.config.batch_size % self.world_size:
            raise ConfigError(
                f"batch_size={self.config.batch_size} (--batch-size) is not divisible by the world size "
                f"{self.world_size}: the global batch is split evenly across ranks"
            )

    def train(self, handle_signals: bool = False) -> History:
        """Run until ``max_iters`` or a stop request; save a checkpoint at the end and on stop.

        Call it again to continue (after raising ``config.max_iters``, or after a stop): a stop that ended
        an earlier call, say an early-stopping callback's, does not carry over, as in Keras and Lightning;
        otherwise the second call would return at once, having trained nothing. A stop requested before
        this call got going (a Stop button pressed as a run starts) is kept: it ends this call.

        ``handle_signals``: turn SIGINT/SIGTERM into a clean stop (the command line does this).
        """
        from tqdm.auto import tqdm

        self._check_config_changes()
        config = self.config
        if self.is_main and self.step < config.max_iters:
            warn_if_warmup_never_ends(config)
        if self._stop_honoured:
            self._stop_honoured = False
            self.clear_stop()
        checkpoint_every = (
            config.eval_interval if config.checkpoint_interval is None else config.checkpoint_interval
        )
        restore = self._install_signal_handlers() if handle_signals else None
        self.raw_model.train()
        bar = tqdm(
            total=config.max_iters,
            initial=self.step,
            disable=not (config.progress and self.is_main),
            desc="train",
            dynamic_ncols=True,
        )
        start = time.perf_counter()
        self._last_read_at = None  # time between train() calls is not a step's
        elapsed_before = self.history.column("elapsed_s", drop_missing=True)
        offset = elapsed_before[-1] if elapsed_before else 0.0
        try:
            self._call_hook("on_train_begin")
            if self._pending_record is not None:  # a step the previous train() applied but did not finish
                self.optimizer.zero_grad(set_to_none=True)  # in case the interrupt came before it did
                self._finish_step(self._pending_record, offset, checkpoint_every)
            self._remember_good_state()
            while self.step < config.max_iters and not self._stop_before_step():
                try:
                    record = self._train_step()
                except TrainingDivergedError as exc:
                    self._roll_back(exc)  # re-raises unless a rollback is allowed
                    bar.n = self.step
                    continue
                if record is None:  # the ranks voted to stop
                    break
                self._finish_step(record, offset + time.perf_counter() - start, checkpoint_every)
                bar.update(1)
                postfix = {"loss": f"{record['train_loss']:.4f}"}
                if record.get("mfu") is not None:  # with peak_flops: the step's model FLOPs utilisation
                    postfix["mfu"] = f"{record['mfu']:.2%}"
                bar.set_postfix(postfix, refresh=False)
            self.save_checkpoint()
        finally:
            self._stop_honoured = self.stop_requested  # this call has seen it: the next one starts afresh
            bar.close()
            if restore:
                restore()
            self._call_hook("on_train_end")
        return self.history

    def _call_hook(self, hook: str, *args: Any) -> None:
        """Call ``hook`` on every callback that defines it (a duck-typed callback may define only some)."""
        self._in_rank0_hook = hook in RANK0_HOOKS and self.world_size > 1
        try:
            for callback in self.callbacks:
                method = getattr(callback, hook, None)
                if method is not None:
                    method(self, *args)
        finally:
            self._in_rank0_hook = False

    # ------------------------------------------------------------------ non-finite loss
    def _remember_good_state(self) -> None:
        """Keep a host-memory copy of the state just checkpointed, as the rollback target.

        Costs one copy of the weights and AdamW moments in RAM, so it is only taken in rollback mode.
        """
        if self.config.on_nonfinite != "rollback":
            return
        self._good_state = {
            "model": _cpu_copy(self.raw_model.state_dict()),
            "optimizer": _cpu_copy(self.optimizer.state_dict()),
            "scaler": self.scaler.state_dict(),
            "rng": _cpu_copy(self.rng_state()),
            "step": self.step,
        }

    def _roll_back(self, exc: TrainingDivergedError) -> None:
        """Restore the last good state and halve the peak lr; re-raise ``exc`` when that is not allowed."""
        config = self.config
        if config.on_nonfinite != "rollback" or self._good_state is None:
            raise exc
        if len(self.rollbacks) >= config.max_rollbacks:
            raise TrainingDivergedError(
                f"{exc} Gave up after {len(self.rollbacks)} rollback(s) (max_rollbacks={config.max_rollbacks})."
            ) from exc
        good = self._good_state
        failed_step = self.step + 1
        self.raw_model.load_state_dict(good["model"])
        columns = self.history.to_dict()
        keep = [step <= good["step"] for step in columns["step"]]  # forget the steps being redone
        history = {name: [v for v, k in zip(values, keep) if k] for name, values in columns.items()}
        self.load_state(
            ckpt.Checkpoint(
                model_config=self.raw_model.config,
                model_state={},
                optimizer_state=_cpu_copy(good["optimizer"]),
                trainer_state={"step": good["step"], "history": history},
                rng_state=good["rng"],
            )
        )
        self.scaler.load_state_dict(good["scaler"])
        # The schedule scales with config.lr, so halving it halves every later step's lr (and it is saved
        # with the next checkpoint, so a resumed run keeps the safer value).
        config.lr /= 2
        if config.min_lr is not None:
            config.min_lr /= 2
        self.rollbacks.append({"step": failed_step, "restored_step": good["step"], "lr": config.lr})
        if self.is_main:
            print(
                f"non-finite value at step {failed_step}: rolled back to step {good['step']} and halved lr to "
                f"{config.lr:.3g} (rollback {len(self.rollbacks)} of at most {config.max_rollbacks})"
            )

    def _restore_rng(self, state: dict[str, torch.Tensor]) -> None:
        """Put back the random states :meth:`rng_state` returned (those present; CUDA's on CUDA only)."""
        if "torch_cpu" in state:
            torch.set_rng_state(state["torch_cpu"])
        if "batches" in state:
            self.batch_generator.set_state(state["batches"])
        if "torch_cuda" in state and self.device.type == "cuda":
            torch.cuda.set_rng_state(state["torch_cuda"], self.device)

    def _install_signal_handlers(self):
        if threading.current_thread() is not threading.main_thread():
            return None

        def handler(signum, frame):
            name = signal.Signals(signum).name
            if self.stop_requested:  # a second Ctrl-C means "now"
                raise KeyboardInterrupt
            if self.is_main:
                # No step number: the signal may land in an evaluation after a step, or (under DDP) while
                # another rank is a step ahead; the closing line names the step the run stopped at.
                print(f"\n{name} received: finishing the step in progress, saving a checkpoint, then exiting")
            self.request_stop()

        previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}

        def restore():
            for sig, old in previous.items():
                signal.signal(sig, old)

        return restore


def _resumable_compile_mode(saved: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """A saved training config, less a compile mode the resume cannot or will not use.

    The mode is a speed knob, like ``compile`` itself: a resume that turns compile off, or that runs on a
    torch which does not know the saved mode, trains on in torch.compile's default instead of refusing.
    """
    mode = saved.get("compile_mode")
    if mode is None:
        return saved
    if "compile_mode" in overrides or not overrides.get("compile", saved.get("compile")):
        return {**saved, "compile_mode": None}  # replaced by the override, or not compiled at all
    if mode not in compile_modes():
        warnings.warn(
            f"the run was compiled with compile_mode={mode!r}, which this torch does not know "
            f"(it knows {compile_modes()}): resuming in torch.compile's default mode",
            RuntimeWarning,
            stacklevel=3,
        )
        return {**saved, "compile_mode": None}
    return saved


def _backward_compiled_now():
    """Have torch.compile lower the backward graph during the first forward call: by default it waits
    for the first backward, outside the eager fallback of ``_forward_loss``, so a backward that fails to
    compile would end the run instead of continuing in eager mode. The switch is private to PyTorch
    (``torch._functorch.config``); where a version lacks it, only the forward is covered."""
    import torch._functorch.config as functorch_config

    if hasattr(functorch_config, "force_non_lazy_backward_lowering"):
        return functorch_config.patch(force_non_lazy_backward_lowering=True)
    return _null_context()


def _cpu_copy(obj: Any) -> Any:
    """A deep copy of nested dicts/lists whose tensors are cloned to the CPU (snapshots for rollback)."""
    if torch.is_tensor(obj):
        return obj.detach().to("cpu", copy=True)
    if isinstance(obj, dict):
        return {k: _cpu_copy(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_cpu_copy(v) for v in obj)
    return obj


class _null_context:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False
