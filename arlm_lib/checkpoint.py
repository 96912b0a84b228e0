"""Checkpoints: one safetensors file per run directory, written atomically, never pickled.

Layout of ``<run_dir>/checkpoint.safetensors``:

* tensors ``model.<name>``: the weights (a tied weight is stored once);
* tensors ``optim.<param index>.<name>``: AdamW moments and step counts;
* tensors ``rng.<name>``: the random-number generator states, so a resumed run is bit-identical;
* tensor ``state.trainer``: the trainer state (step, history, ...) as UTF-8 JSON bytes. It grows with
  every step of the run, and safetensors caps its header at 100 MB: in the header (where checkpoints
  before it kept it, and which loading still reads) a run of about 640,000 steps could no longer save;
* the safetensors header's string metadata: the format tag, a checksum of every tensor's bytes, and
  JSON for the model config, the tokenizer and the training config.

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
from .files import publish
from .model import GPT, GPTConfig

CHECKPOINT_FILE = "checkpoint.safetensors"
FORMAT = "arlm-checkpoint/1"
#: The tensor holding the trainer state as JSON bytes (see the module docstring).
TRAINER_STATE_TENSOR = "state.trainer"
#: The model-config fields ``load_model`` may override: they leave what the weights compute unchanged.
WEIGHT_FREE_OVERRIDES = ("attention", "dropout")


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
    """Accept either a run directory or the checkpoint file itself (any existing file is taken as given)."""
    if not isinstance(path, (str, os.PathLike)):
        raise ConfigError(
            f"checkpoint path {path!r} is not allowed: give a run directory or a checkpoint file, as a str or Path"
        )
    path = Path(path)
    if path.is_file() or (path.suffix == ".safetensors" and not path.is_dir()):
        return path
    return path / CHECKPOINT_FILE


def unwrap_model(model: torch.nn.Module) -> torch.nn.Module:
    """The plain module under DDP and ``torch.compile`` wrappers (so keys have no ``_orig_mod.`` prefix)."""
    while True:
        if hasattr(model, "_orig_mod"):
            model = model._orig_mod
        elif isinstance(model, torch.nn.parallel.DistributedDataParallel):
            model = model.module
        else:
            return model


def checkpoint_digest(tensors: dict[str, torch.Tensor], metadata: dict[str, str]) -> str:
    """sha256 over every tensor (name, dtype, shape, raw bytes) and every metadata entry but the digest itself.

    It detects bit flips that a well-formed file would hide: in the weights, and in the JSON configs.
    """
    digest = hashlib.sha256()
    for name in sorted(tensors):
        tensor = tensors[name].detach().cpu().contiguous()
        digest.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    for key in sorted(metadata):
        if key != "sha256":
            digest.update(f"{key}={metadata[key]}\n".encode())
    return digest.hexdigest()


def _tmp_pid(path: Path) -> int | None:
    """The writer's pid encoded in a temp file name ``.<name>.tmp-<pid>``, or None."""
    suffix = path.name.rsplit(".tmp-", 1)[-1]
    return int(suffix) if suffix.isdigit() else None


def remove_stale_temp_files(path: Path) -> list[Path]:
    """Delete temp files next to ``path`` left by writers that died mid-write (SIGKILL, power loss).

    A temp file whose writer is still alive is left alone: it may be another process's save in flight.
    """
    removed = []
    for tmp in path.parent.glob(f".{path.name}.tmp-*"):
        pid = _tmp_pid(tmp)
        if pid is None or (pid != os.getpid() and not pid_alive(pid)):
            tmp.unlink(missing_ok=True)
            removed.append(tmp)
    return removed


def pid_alive(pid: int) -> bool:
    """Whether a process with this pid exists on this machine (it may belong to another user)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError):  # exists but belongs to someone else / not a real pid
        return True
    return True


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

    ``run_dir`` is a run directory, or a checkpoint file's path (see :func:`checkpoint_path`). Refuses to
    save weights that hold NaN or inf, so the last good checkpoint is never replaced by a diverged one;
    a tokenizer with more ids than the model embeds, which :func:`load_model` would refuse; and to
    replace an existing file that is not an arlm checkpoint (a corpus, a ``torch.save`` file).
    """
    model = unwrap_model(model)
    if tokenizer is not None and tokenizer.vocab_size > model.config.vocab_size:
        raise CheckpointError(
            f"refusing to save: the tokenizer has {tokenizer.vocab_size} ids but the model embeds only "
            f"{model.config.vocab_size}, so the checkpoint could not be loaded; save the tokenizer the model "
            "was trained with"
        )
    tensors: dict[str, torch.Tensor] = {}
    seen: dict[int, str] = {}
    tied: dict[str, str] = {}
    for name, tensor in model.state_dict().items():
        if tensor.data_ptr() in seen:  # weight tying: store the shared matrix once
            tied[name] = seen[tensor.data_ptr()]
            continue
        seen[tensor.data_ptr()] = name
        tensors[f"model.{name}"] = tensor
    metadata: dict[str, str] = {
        "format": FORMAT,
        "model_config": json.dumps(model.config.to_dict()),
        "tied": json.dumps(tied),
    }
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
    state_json = json.dumps(trainer_state or {}).encode("utf-8")
    tensors[TRAINER_STATE_TENSOR] = torch.frombuffer(bytearray(state_json), dtype=torch.uint8)
    # Checked before anything touches the disk: NaN optimizer moments would poison a resumed run as
    # surely as NaN weights.
    for name, tensor in tensors.items():
        if tensor.is_floating_point() and not torch.isfinite(tensor).all():
            what = (
                f"weight {name.removeprefix('model.')!r}" if name.startswith("model.") else f"tensor {name!r}"
            )
            raise CheckpointError(
                f"refusing to save: {what} holds NaN or inf values; the previous checkpoint is kept"
            )
    tensors = {k: v.detach().cpu().contiguous() for k, v in tensors.items()}
    metadata["sha256"] = checkpoint_digest(tensors, metadata)

    path = checkpoint_path(run_dir)
    if path.is_file():
        try:
            _read_metadata(path)
        except CheckpointError as exc:
            raise CheckpointError(
                f"refusing to save over {path}: the file exists and is not an arlm checkpoint ({exc}); "
                "save into a run directory or under a new name, or delete the file first"
            ) from exc
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        remove_stale_temp_files(path)
        save_file(tensors, str(tmp), metadata=metadata)
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        publish(tmp, path)  # atomic on POSIX and Windows: readers see the old file or the new one
        _fsync_dir(path.parent)  # make the rename itself durable
    except (OSError, SafetensorError) as exc:
        # A full disk, a quota or a read-only directory: one clear error; the old file was never touched.
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        kept = "the previous checkpoint is intact" if path.is_file() else "no checkpoint was written"
        raise CheckpointError(f"could not write the checkpoint {path}: {reason}; {kept}") from exc
    finally:
        tmp.unlink(missing_ok=True)
    return path


def _fsync_dir(directory: Path) -> None:
    """Best effort: some systems (Windows, some network filesystems) cannot fsync a directory."""
    try:
        dir_fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(dir_fd)
    except OSError:
        pass  # the file itself is already on disk; only the rename's durability is in doubt
    finally:
        os.close(dir_fd)


def _read_metadata(path: Path) -> dict[str, str]:
    """Parse the safetensors header (8-byte length + JSON) without loading any tensor.

    A file that cannot be read at all (permissions, I/O) raises the OSError itself: the file may be fine,
    and calling it corrupted would send a reader (or the model zoo, which rebuilds corrupted caches) the
    wrong way. The CLI reports it as it does every OS refusal: the reason, the path, exit status 1.
    """
    try:
        size = path.stat().st_size
        if size == 0:
            raise ValueError("the file is empty")
        with open(path, "rb") as fh:
            header_len = int.from_bytes(fh.read(8), "little")
            if not 2 <= header_len <= min(100_000_000, size - 8):
                raise ValueError(f"header length {header_len} does not fit a file of {size} bytes")
            header = json.loads(fh.read(header_len))
        if not isinstance(header, dict):
            raise ValueError("the header is not a JSON object")
    except (ValueError, UnicodeDecodeError) as exc:  # not OSError: see above
        raise CheckpointError(
            f"{path} is truncated or corrupted, or not a safetensors file at all (a pickle or torch.save file "
            f"is refused, never unpickled): cannot read its header ({exc})"
        ) from exc
    metadata = header.get("__metadata__") or {}
    if not isinstance(metadata, dict) or metadata.get("format") != FORMAT:
        found = metadata.get("format") if isinstance(metadata, dict) else None
        raise CheckpointError(f"{path} is not an arlm checkpoint: format {found!r}, expected {FORMAT!r}")
    return metadata


def _json_field(
    metadata: dict[str, str], key: str, path: Path, kind: type | tuple, default: Any = None
) -> Any:
    """One JSON entry of the header, checked to be of ``kind``; CheckpointError names the entry otherwise."""
    if key not in metadata:
        return default
    try:
        value = json.loads(metadata[key])
    except (TypeError, ValueError) as exc:
        raise CheckpointError(f"{path} is corrupted: its {key!r} entry is not valid JSON ({exc})") from exc
    if not isinstance(value, kind):
        raise CheckpointError(
            f"{path} is corrupted: its {key!r} entry is a {type(value).__name__}, not a {kind}"
        )
    return value


def _check_tensor_names(tensors: dict[str, torch.Tensor], path: Path) -> None:
    unknown = sorted(
        k
        for k in tensors
        if k != TRAINER_STATE_TENSOR and (k.split(".", 1)[0] not in ("model", "optim", "rng") or "." not in k)
    )
    if unknown:
        raise CheckpointError(
            f"{path} holds tensors this format does not define: {unknown[:5]} "
            f"(allowed: 'model.', 'optim.' and 'rng.' prefixes, and {TRAINER_STATE_TENSOR!r})"
        )
    bad = [
        k
        for k, v in tensors.items()
        if (k.startswith("rng.") or k == TRAINER_STATE_TENSOR) and (v.dtype != torch.uint8 or v.dim() != 1)
    ]
    if bad:
        what = "random-generator states" if bad[0].startswith("rng.") else "trainer state"
        raise CheckpointError(f"{path} has invalid {what} {bad}: expected 1-D uint8 tensors")


def _trainer_state(tensors: dict[str, torch.Tensor], metadata: dict[str, str], path: Path) -> dict[str, Any]:
    """The trainer state: from its tensor, or from the header of a checkpoint written before it moved."""
    if TRAINER_STATE_TENSOR not in tensors:
        return _json_field(metadata, "trainer_state", path, dict, {})
    try:
        state = json.loads(tensors[TRAINER_STATE_TENSOR].numpy().tobytes().decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise CheckpointError(f"{path} has an invalid trainer state: {exc}") from exc
    if not isinstance(state, dict):
        raise CheckpointError(f"{path} has an invalid trainer state: expected a JSON object")
    return state


def load_checkpoint(path: str | os.PathLike) -> Checkpoint:
    """Read and verify a checkpoint (file or run directory) on the CPU.

    Only the safetensors header (JSON) and raw tensor bytes are parsed: nothing is unpickled, so a file
    someone sent you cannot run code. Every defect raises :class:`~arlm_lib.errors.CheckpointError`
    naming what is wrong; a file that cannot be read at all raises its ``OSError``.
    """
    path = checkpoint_path(path)
    if not path.is_file():
        expected = (
            "a run directory holding " + CHECKPOINT_FILE
            if path.name == CHECKPOINT_FILE
            else "a checkpoint file, or a run directory holding " + CHECKPOINT_FILE
        )
        raise CheckpointError(f"no checkpoint at {path}: expected {expected}")
    metadata = _read_metadata(path)
    try:
        tensors = load_file(str(path), device="cpu")
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(f"{path} is truncated or corrupted: {exc}") from exc
    if checkpoint_digest(tensors, metadata) != metadata.get("sha256"):
        raise CheckpointError(
            f"{path} is corrupted: its checksum does not match the one recorded at save time "
            "(a flipped byte, a partial copy, or an edited file)"
        )
    _check_tensor_names(tensors, path)
    try:
        model_config = GPTConfig.from_dict(_json_field(metadata, "model_config", path, dict, {}))
    except (TypeError, ConfigError) as exc:
        raise CheckpointError(f"{path} has an invalid model config: {exc}") from exc

    model_state = {k.removeprefix("model."): v for k, v in tensors.items() if k.startswith("model.")}
    for name, source in _json_field(metadata, "tied", path, dict, {}).items():
        if source in model_state:
            model_state[name] = model_state[source]
    check_config_fits(model_config, model_state, str(path))
    optimizer_state = None
    optim_meta = _json_field(metadata, "optimizer", path, dict)
    if optim_meta is not None:
        optim_tensors = {k: v for k, v in tensors.items() if k.startswith("optim.")}
        try:
            optimizer_state = _unflatten_optimizer(optim_tensors, optim_meta)
            if not isinstance(optimizer_state["param_groups"], list):
                raise TypeError("param_groups is not a list")
        except (KeyError, ValueError, TypeError, AttributeError) as exc:
            raise CheckpointError(f"{path} has an invalid optimizer state: {exc!r}") from exc
    return Checkpoint(
        model_config=model_config,
        model_state=model_state,
        tokenizer=_json_field(metadata, "tokenizer", path, dict),
        train_config=_json_field(metadata, "train_config", path, dict),
        trainer_state=_trainer_state(tensors, metadata, path),
        optimizer_state=optimizer_state,
        rng_state={k.removeprefix("rng."): v for k, v in tensors.items() if k.startswith("rng.")},
    )


def _fit_problems(expected: dict[str, torch.Tensor], state: dict[str, torch.Tensor]) -> list[str]:
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
    return problems


def load_state_strict(model: GPT, state: dict[str, torch.Tensor], source: str = "checkpoint") -> None:
    """Load weights, naming every missing, unexpected, mis-shaped or mis-typed tensor instead of guessing."""
    problems = _fit_problems(model.state_dict(), state)
    if problems:
        raise CheckpointError(f"{source} does not fit this architecture: " + "; ".join(problems))
    not_finite = [k for k, v in state.items() if v.is_floating_point() and not torch.isfinite(v).all()]
    if not_finite:
        raise CheckpointError(f"{source} holds NaN or inf weights in {not_finite[:5]}: refusing to load them")
    model.load_state_dict(state)


def check_config_fits(config: GPTConfig, state: dict[str, torch.Tensor], source: str = "checkpoint") -> None:
    """Refuse a model config that asks for far more parameters than the file holds, before allocating it.

    A config in a file someone sent you could name an absurd width to exhaust RAM. Any GPT of this
    config has at least ``(vocab + context) * n_embd + n_layer * n_embd**2`` parameters (the real count
    is ~12x the last term; ``context`` counts only for a learned position table, RoPE has none), so this
    lower bound must not exceed what is stored. The exact per-tensor comparison follows in
    :func:`load_state_strict`.

    Generation allocates a KV cache of ``2 * n_layer * block_size * n_embd`` numbers per sequence. With a
    learned table the weights bound ``block_size``; with RoPE nothing does, so a RoPE config whose cache
    for one sequence would exceed both 64 times the stored numbers and 2**28 numbers (1 GiB in float32)
    is refused as well.
    """
    context = config.block_size if config.position_encoding == "learned" else 0
    at_least = (config.vocab_size + context) * config.n_embd + config.n_layer * config.n_embd**2
    stored = sum(t.numel() for t in state.values())
    if at_least > stored:
        raise CheckpointError(
            f"{source}: its model config asks for at least {at_least:,} parameters but the file holds only "
            f"{stored:,}: the config and the weights do not belong together"
        )
    cache = 2 * config.n_layer * config.block_size * config.n_embd
    if config.position_encoding == "rope" and cache > max(64 * stored, 2**28):
        raise CheckpointError(
            f"{source}: its model config has block_size={config.block_size:,}, whose KV cache for one sequence "
            f"would hold {cache:,} numbers, more than 64 times the file's {stored:,}: refusing a context this "
            "long for these weights"
        )


def load_model(path: str | os.PathLike, device: str | torch.device = "cpu", **config_overrides: Any):
    """Rebuild the model (and its tokenizer, if saved) from a checkpoint, ready for inference.

    ``config_overrides`` may change only the fields that leave what the model computes unchanged:
    ``attention`` (``"explicit"`` returns the attention weights) and ``dropout`` (off in eval mode; it
    matters if you train the model further). Other fields, even shape-compatible ones such as
    ``residual`` or ``n_head``, would silently turn the trained weights into another model: to
    experiment with one, build ``GPT(dataclasses.replace(config, ...))`` and call
    :func:`load_state_strict` yourself.
    """
    from .device import resolve_device
    from .tokenizers import tokenizer_from_dict

    # Resolved first: the device's own error names the value and the choices ("gpu" would otherwise
    # fail late, in torch, with a list of every device type it knows).
    if not isinstance(device, torch.device):  # a torch.device is taken as given, as torch takes it
        device = resolve_device(device)
    changing = sorted(set(config_overrides) - set(WEIGHT_FREE_OVERRIDES))
    if changing:
        raise ConfigError(
            f"load_model cannot override {', '.join(changing)}: only {', '.join(WEIGHT_FREE_OVERRIDES)} "
            "leave what the trained weights compute unchanged (to experiment, build "
            "GPT(dataclasses.replace(config, ...)) and call load_state_strict)"
        )
    ckpt = load_checkpoint(path)
    source = str(checkpoint_path(path))
    config = ckpt.model_config
    if config_overrides:
        config = GPTConfig.from_dict({**config.to_dict(), **config_overrides})
    check_config_fits(config, ckpt.model_state, source)
    model = GPT(config)
    load_state_strict(model, ckpt.model_state, source=source)
    model.to(device).eval()
    tokenizer = tokenizer_from_dict(ckpt.tokenizer) if ckpt.tokenizer else None
    if tokenizer is not None and tokenizer.vocab_size > config.vocab_size:
        raise CheckpointError(
            f"{source}: its tokenizer has {tokenizer.vocab_size} tokens but the model only {config.vocab_size}"
        )
    return model, tokenizer
