"""Checkpoints: one safetensors file per run directory, written atomically, never pickled.

Layout of ``<run_dir>/checkpoint.safetensors``:

* tensors ``model.<name>``: the weights (a tied weight is stored once);
* tensors ``optim.<param index>.<name>``: AdamW moments and step counts;
* tensors ``rng.<name>``: the random-number generator states, so a resumed run is bit-identical;
* the safetensors header's string metadata: the format tag, a checksum of every tensor's bytes, and
  JSON for the model config, the tokenizer, the training config and the trainer state (step, history).

Loading parses only the safetensors header (JSON) and raw tensor bytes, so opening a checkpoint someone
sent you cannot execute code, unlike ``torch.load`` of a pickle. A checkpoint is written to a temporary
file in the same directory, flushed to disk, then renamed over the old one: a crash mid-write leaves the
previous checkpoint intact.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from .errors import CheckpointError, ConfigError
from .model import GPT, GPTConfig

CHECKPOINT_FILE = "checkpoint.safetensors"
FORMAT = "arlm-checkpoint/1"


@dataclass
class Checkpoint:
    """Everything read back from a checkpoint file, as plain tensors and dicts."""

    model_config: GPTConfig
    model_state: dict[str, torch.Tensor]
    tokenizer: dict[str, Any] | None = None
    train_config: dict[str, Any] | None = None
    trainer_state: dict[str, Any] = field(default_factory=dict)
    optimizer_state: dict[str, Any] | None = None
    rng_state: dict[str, torch.Tensor] = field(default_factory=dict)


def checkpoint_path(path: str | os.PathLike) -> Path:
    """Accept either a run directory or the checkpoint file itself."""
    path = Path(path)
    return path / CHECKPOINT_FILE if path.is_dir() or path.suffix != ".safetensors" else path


def unwrap_model(model: torch.nn.Module) -> torch.nn.Module:
    """The plain module under DDP and ``torch.compile`` wrappers (so keys have no ``_orig_mod.`` prefix)."""
    while True:
        if hasattr(model, "_orig_mod"):
            model = model._orig_mod
        elif isinstance(model, torch.nn.parallel.DistributedDataParallel):
            model = model.module
        else:
            return model


def _tensor_digest(tensors: dict[str, torch.Tensor]) -> str:
    """sha256 over names and raw bytes: detects bit flips that a well-formed header would hide."""
    digest = hashlib.sha256()
    for name in sorted(tensors):
        digest.update(name.encode())
        digest.update(tensors[name].detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def _flatten_optimizer(state: dict[str, Any]) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    tensors = {}
    scalars: dict[str, dict[str, Any]] = {}
    for index, param_state in state["state"].items():
        for key, value in param_state.items():
            if torch.is_tensor(value):
                tensors[f"optim.{index}.{key}"] = value
            else:
                scalars.setdefault(str(index), {})[key] = value
    return tensors, {"param_groups": state["param_groups"], "scalars": scalars}


def _unflatten_optimizer(tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> dict[str, Any]:
    state: dict[int, dict[str, Any]] = {}
    for name, value in tensors.items():
        _, index, key = name.split(".", 2)
        state.setdefault(int(index), {})[key] = value
    for index, scalars in meta.get("scalars", {}).items():
        state.setdefault(int(index), {}).update(scalars)
    return {"state": state, "param_groups": meta["param_groups"]}


def save_checkpoint(
    run_dir: str | os.PathLike,
    model: torch.nn.Module,
    *,
    tokenizer=None,
    optimizer: torch.optim.Optimizer | None = None,
    train_config: dict[str, Any] | None = None,
    trainer_state: dict[str, Any] | None = None,
    rng_state: dict[str, torch.Tensor] | None = None,
) -> Path:
    """Write a checkpoint atomically into ``run_dir`` and return its path.

    Refuses to save weights that hold NaN or inf, so the last good checkpoint is never replaced by a
    diverged one.
    """
    model = unwrap_model(model)
    tensors: dict[str, torch.Tensor] = {}
    seen: dict[int, str] = {}
    tied: dict[str, str] = {}
    for name, tensor in model.state_dict().items():
        if tensor.data_ptr() in seen:  # weight tying: store the shared matrix once
            tied[name] = seen[tensor.data_ptr()]
            continue
        seen[tensor.data_ptr()] = name
        if tensor.is_floating_point() and not torch.isfinite(tensor).all():
            raise CheckpointError(f"refusing to save: weight {name!r} holds NaN or inf values")
        tensors[f"model.{name}"] = tensor
    metadata: dict[str, str] = {"format": FORMAT, "model_config": json.dumps(model.config.to_dict()), "tied": json.dumps(tied)}
    if optimizer is not None:
        optim_tensors, optim_meta = _flatten_optimizer(optimizer.state_dict())
        tensors.update(optim_tensors)
        metadata["optimizer"] = json.dumps(optim_meta)
    for name, value in (rng_state or {}).items():
        tensors[f"rng.{name}"] = value
    if tokenizer is not None:
        metadata["tokenizer"] = json.dumps(tokenizer.to_dict())
    if train_config is not None:
        metadata["train_config"] = json.dumps(train_config)
    metadata["trainer_state"] = json.dumps(trainer_state or {})
    tensors = {k: v.detach().cpu().contiguous() for k, v in tensors.items()}
    metadata["sha256"] = _tensor_digest(tensors)

    path = checkpoint_path(run_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        save_file(tensors, str(tmp), metadata=metadata)
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)  # atomic on POSIX and Windows: readers see the old file or the new one
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)  # make the rename itself durable
        finally:
            os.close(dir_fd)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


def _read_metadata(path: Path) -> dict[str, str]:
    try:
        with open(path, "rb") as fh:
            header_len = int.from_bytes(fh.read(8), "little")
            if header_len <= 0 or header_len > 100_000_000:
                raise ValueError(f"header length {header_len} is implausible")
            header = json.loads(fh.read(header_len))
    except (OSError, ValueError, UnicodeDecodeError) as exc:
        raise CheckpointError(f"{path} is truncated or corrupted: cannot read its header ({exc})") from exc
    metadata = header.get("__metadata__") or {}
    if metadata.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not an arlm checkpoint: format {metadata.get('format')!r}, expected {FORMAT!r}")
    return metadata


def load_checkpoint(path: str | os.PathLike) -> Checkpoint:
    """Read and verify a checkpoint (file or run directory) on the CPU."""
    path = checkpoint_path(path)
    if not path.is_file():
        raise CheckpointError(f"no checkpoint at {path}: expected a run directory holding {CHECKPOINT_FILE}")
    metadata = _read_metadata(path)
    try:
        tensors = load_file(str(path), device="cpu")
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(f"{path} is truncated or corrupted: {exc}") from exc
    if _tensor_digest(tensors) != metadata.get("sha256"):
        raise CheckpointError(f"{path} is corrupted: its tensor checksum does not match the one recorded at save time")
    try:
        model_config = GPTConfig.from_dict(json.loads(metadata["model_config"]))
    except (KeyError, json.JSONDecodeError, TypeError, ConfigError) as exc:
        raise CheckpointError(f"{path} has an invalid model config: {exc}") from exc

    model_state = {k.removeprefix("model."): v for k, v in tensors.items() if k.startswith("model.")}
    for name, source in json.loads(metadata.get("tied", "{}")).items():
        if source in model_state:
            model_state[name] = model_state[source]
    optimizer_state = None
    if "optimizer" in metadata:
        optim_tensors = {k: v for k, v in tensors.items() if k.startswith("optim.")}
        optimizer_state = _unflatten_optimizer(optim_tensors, json.loads(metadata["optimizer"]))
    return Checkpoint(
        model_config=model_config,
        model_state=model_state,
        tokenizer=json.loads(metadata["tokenizer"]) if "tokenizer" in metadata else None,
        train_config=json.loads(metadata["train_config"]) if "train_config" in metadata else None,
        trainer_state=json.loads(metadata.get("trainer_state", "{}")),
        optimizer_state=optimizer_state,
        rng_state={k.removeprefix("rng."): v for k, v in tensors.items() if k.startswith("rng.")},
    )


def load_state_strict(model: GPT, state: dict[str, torch.Tensor], source: str = "checkpoint") -> None:
    """Load weights, naming every missing, unexpected, mis-shaped or mis-typed tensor instead of guessing."""
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    extra = sorted(set(state) - set(expected))
    wrong_shape = [
        f"{k}: {tuple(state[k].shape)} vs model {tuple(expected[k].shape)}"
        for k in expected
        if k in state and state[k].shape != expected[k].shape
    ]
    wrong_dtype = [
        f"{k}: {state[k].dtype} vs model {expected[k].dtype}"
        for k in expected
        if k in state and state[k].dtype != expected[k].dtype
    ]
    problems = []
    if missing:
        problems.append(f"missing tensors {missing[:5]}")
    if extra:
        problems.append(f"unexpected tensors {extra[:5]}")
    if wrong_shape:
        problems.append(f"shape mismatch {wrong_shape[:5]}")
    if wrong_dtype:
        problems.append(f"dtype mismatch {wrong_dtype[:5]}")
    if problems:
        raise CheckpointError(f"{source} does not fit this architecture: " + "; ".join(problems))
    model.load_state_dict(state)


def load_model(path: str | os.PathLike, device: str | torch.device = "cpu", **config_overrides: Any):
    """Rebuild the model (and its tokenizer, if saved) from a checkpoint, ready for inference.

    ``config_overrides`` may change fields that do not alter the weights, e.g. ``attention="explicit"``.
    """
    from .tokenizers import tokenizer_from_dict

    ckpt = load_checkpoint(path)
    config = ckpt.model_config
    if config_overrides:
        config = GPTConfig.from_dict({**config.to_dict(), **config_overrides})
    model = GPT(config)
    load_state_strict(model, ckpt.model_state, source=str(checkpoint_path(path)))
    model.to(device).eval()
    tokenizer = tokenizer_from_dict(ckpt.tokenizer) if ckpt.tokenizer else None
    return model, tokenizer
