"""Token streams, train/val splits and (input, target) batches for next-token training.

A corpus is encoded once into a single 1-D stream of token ids (a :data:`TokenStream`): a torch tensor,
or a numpy memory map on disk for corpora too big for RAM. Never a Python list: a list costs up to 36
bytes per token (an 8-byte pointer plus a 28-byte int object), a uint16 memmap 2 bytes of disk.

Training examples are windows cut from that stream. For a window starting at ``s``::

    x = tokens[s     : s + T]        the model reads these T tokens
    y = tokens[s + 1 : s + T + 1]    and must predict, at every position t, the token that follows x[t]

**Why no padding is needed.** Every window is cut from the same long stream and is exactly ``T`` tokens
long (a start is drawn only where ``T + 1`` tokens remain), so all rows of a batch have the same length
and every position holds a real token with a real target. Documents are simply concatenated, separated
by a newline, and the model learns that a newline starts something new. Padding (and an attention mask
to ignore it) is needed only when separate sequences of different lengths share a batch: for example
several prompts of different lengths at generation time. The old "pad to the same length" preprocessing
step comes from that setting, not from language-model training.
"""

from __future__ import annotations

import codecs
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import TypeAlias

import numpy as np
import torch

from arlm_lib.checks import is_int, is_integer_dtype, is_token_id
from arlm_lib.errors import ConfigError, DataError, DeviceError
from arlm_lib.files import publish
from arlm_lib.tokenizers import Tokenizer, last_safe_boundary

__all__ = [
    "TokenStream",
    "check_long_enough",
    "check_token_stream",
    "encode_file",
    "encode_file_to_memmap",
    "encode_text",
    "get_batch",
    "load_token_memmap",
    "read_text_file",
    "split_train_val",
    "tensor_dtype_for",
    "memmap_dtype_for",
]

#: A 1-D stream of token ids, as a torch integer tensor or a numpy array / memmap.
TokenStream: TypeAlias = torch.Tensor | np.ndarray

DEFAULT_CHUNK_CHARS = 1 << 20
_BOM = "\ufeff"  # a UTF-8 byte-order mark, dropped at the start of a file (not elsewhere)
# How much text to accumulate while waiting for a safe cut before cutting anyway (only files with
# no "x\n" + non-space line start for this long, e.g. one giant line, ever reach it).
_PATIENCE_CHARS = 1 << 16


# --------------------------------------------------------------------------------------------------
# Reading and encoding
# --------------------------------------------------------------------------------------------------


def _check_file(path: Path) -> None:
    """Raise DataError unless ``path`` is an existing, non-empty regular file."""
    if not path.exists():
        raise DataError(f"corpus file {str(path)!r} does not exist")
    if not path.is_file():
        raise DataError(f"corpus path {str(path)!r} is not a regular file")
    if path.stat().st_size == 0:
        raise DataError(f"corpus file {str(path)!r} is empty; it needs at least one context window of text")


def _not_utf8(path: Path, offset: int, bad: bytes) -> DataError:
    shown = bad[:4].hex(" ") if bad else "?"
    return DataError(
        f"corpus file {str(path)!r} is not valid UTF-8: invalid byte(s) {shown} at byte offset "
        f"{offset}; re-encode it as UTF-8 (for example: iconv -f latin1 -t utf-8)"
    )


def read_text_file(path: str | os.PathLike[str]) -> str:
    """Read a whole UTF-8 text file; DataError for a missing, empty or non-UTF-8 file (names the offset).

    A leading byte-order mark (Windows editors write one) is dropped, as ``load_corpus`` drops it, so a
    tokenizer trained on ``load_corpus(path)`` can encode ``encode_file(path)``.
    """
    path = Path(path)
    _check_file(path)
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8").removeprefix(_BOM)
    except UnicodeDecodeError as err:
        raise _not_utf8(path, err.start, raw[err.start : err.end]) from err
    if not text:  # a byte-order mark and nothing else
        raise DataError(
            f"{path} holds no text (only a byte-order mark); a corpus needs at least one character"
        )
    return text


def tensor_dtype_for(vocab_size: int) -> torch.dtype:
    """The smallest signed torch dtype that holds ids ``0 .. vocab_size - 1`` (int16, else int32)."""
    # Signed: torch's uint16 supports few operations; int16 still covers any char vocabulary.
    return torch.int16 if vocab_size <= 2**15 else torch.int32


def memmap_dtype_for(vocab_size: int) -> np.dtype:
    """The on-disk dtype for ids ``0 .. vocab_size - 1``: uint16 (as nanoGPT, fits GPT-2's 50257), else int32."""
    return np.dtype(np.uint16) if vocab_size <= 2**16 else np.dtype(np.int32)


def encode_text(text: str, tokenizer: Tokenizer, dtype: torch.dtype | None = None) -> torch.Tensor:
    """Encode ``text`` into a 1-D tensor of ids, in a compact dtype unless ``dtype`` is given.

    The default dtype is :func:`tensor_dtype_for` (int16 for char vocabularies): half or a quarter of
    int64's memory. :func:`get_batch` returns int64 batches whatever the stream's dtype.
    """
    if dtype is None:
        dtype = tensor_dtype_for(tokenizer.vocab_size)
    elif dtype.is_floating_point or dtype.is_complex or dtype == torch.bool:
        raise ConfigError(f"dtype={dtype} is not allowed: token ids need an integer dtype")
    elif torch.iinfo(dtype).max < tokenizer.vocab_size - 1:  # ids past it would wrap round to other ids
        raise ConfigError(
            f"dtype={dtype} is not allowed: it holds ids up to {torch.iinfo(dtype).max}, and this tokenizer "
            f"has {tokenizer.vocab_size} ids; leave dtype out to get {tensor_dtype_for(tokenizer.vocab_size)}"
        )
    return torch.from_numpy(tokenizer.encode_array(text)).to(dtype)


def encode_file(
    path: str | os.PathLike[str], tokenizer: Tokenizer, dtype: torch.dtype | None = None
) -> torch.Tensor:
    """Read a UTF-8 file and encode it into a 1-D tensor (see :func:`encode_text`); fits corpora that fit RAM."""
    return encode_text(read_text_file(path), tokenizer, dtype=dtype)


def _iter_file_text(path: Path, chunk_chars: int) -> Iterator[str]:
    """Yield the decoded text of ``path`` in pieces of about ``chunk_chars``, cut at safe boundaries.

    The file is read as bytes and decoded incrementally, so a multi-byte UTF-8 character split between
    two reads is reassembled, and a bad byte is reported with its absolute offset. Pieces end where
    :func:`~arlm_lib.tokenizers.last_safe_boundary` says BPE tokens cannot straddle the cut, so encoding
    piece by piece gives the same ids as encoding the whole text (for the char tokenizer any cut would).
    """
    decoder = codecs.getincrementaldecoder("utf-8")()
    fed = 0  # bytes given to the decoder so far
    buf = ""
    at_start = True  # no character decoded yet: a byte-order mark there is dropped (see read_text_file)
    with open(path, "rb") as f:
        while True:
            raw = f.read(chunk_chars)
            pending = decoder.getstate()[0]
            try:
                buf += decoder.decode(raw, final=not raw)
            except UnicodeDecodeError as err:
                # err.start counts from the start of (pending + raw).
                bad = (pending + raw)[err.start : err.end]
                raise _not_utf8(path, fed - len(pending) + err.start, bad) from err
            fed += len(raw)
            if at_start and buf:
                buf, at_start = buf.removeprefix(_BOM), False
            if not raw:
                break
            if len(buf) < chunk_chars:
                continue
            cut = last_safe_boundary(buf)
            if cut == 0 and len(buf) >= max(8 * chunk_chars, _PATIENCE_CHARS):
                # No clean cut for a long stretch (very long lines): any newline, else a hard cut. The
                # ids still decode to the same text; only tokens right at the cut may differ.
                cut = buf.rfind("\n") + 1 or len(buf)
            if cut:
                yield buf[:cut]
                buf = buf[cut:]
    if buf:
        yield buf


def encode_file_to_memmap(
    path: str | os.PathLike[str],
    tokenizer: Tokenizer,
    out_path: str | os.PathLike[str],
    chunk_chars: int = DEFAULT_CHUNK_CHARS,
) -> np.memmap:
    """Stream-encode a (possibly huge) UTF-8 file into a ``.npy`` file and return it memory-mapped.

    Only one chunk of text and its ids are in memory at a time. The ids are written with
    :func:`memmap_dtype_for` (uint16 for vocabularies up to 65536). The result is written to a temp file
    and renamed, so ``out_path`` is never left half-written; reopen it later with :func:`load_token_memmap`.
    """
    path, out_path = Path(path), Path(out_path)
    if not is_int(chunk_chars) or chunk_chars < 1:
        raise ConfigError(f"chunk_chars must be an integer >= 1, got {chunk_chars!r}")
    _check_file(path)
    dtype = memmap_dtype_for(tokenizer.vocab_size)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    tmp_raw = tmp_npy = None
    try:
        # Pass 1: raw ids, appended chunk by chunk (the final count is unknown until the end).
        fd, tmp_raw = tempfile.mkstemp(prefix=f".{out_path.name}.", suffix=".raw", dir=out_path.parent)
        n = 0
        with os.fdopen(fd, "wb") as raw_f:
            for piece in _iter_file_text(path, chunk_chars):
                ids = tokenizer.encode_array(piece)
                ids.astype(dtype).tofile(raw_f)
                n += len(ids)
        # Pass 2: prepend the .npy header, now that the length is known, by streaming the bytes over.
        fd, tmp_npy = tempfile.mkstemp(prefix=f".{out_path.name}.", suffix=".npy", dir=out_path.parent)
        with os.fdopen(fd, "wb") as out_f, open(tmp_raw, "rb") as raw_f:
            header = {"descr": np.lib.format.dtype_to_descr(dtype), "fortran_order": False, "shape": (n,)}
            np.lib.format.write_array_header_1_0(out_f, header)
            while block := raw_f.read(1 << 22):
                out_f.write(block)
        publish(tmp_npy, out_path)
        tmp_npy = None
    finally:
        for tmp in (tmp_raw, tmp_npy):
            if tmp is not None:
                Path(tmp).unlink(missing_ok=True)
    return load_token_memmap(out_path)


def load_token_memmap(path: str | os.PathLike[str]) -> np.memmap:
    """Open a ``.npy`` token file read-only as a memmap; DataError unless it is a 1-D integer array."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"token file {str(path)!r} does not exist")
    try:
        # allow_pickle=False: a token file must never be able to run code.
        arr = np.load(path, mmap_mode="r", allow_pickle=False)
    except (ValueError, OSError) as err:
        raise DataError(f"token file {str(path)!r} is not a valid .npy array: {err}") from err
    if not isinstance(arr, np.memmap) or arr.ndim != 1 or arr.dtype.kind not in "iu":
        raise DataError(
            f"token file {str(path)!r} must hold a 1-D integer array, got shape {arr.shape} "
            f"and dtype {arr.dtype}"
        )
    return arr


# --------------------------------------------------------------------------------------------------
# Splits and batches
# --------------------------------------------------------------------------------------------------


def check_positive_int(name: str, value: object) -> int:
    """``value`` as an int; ConfigError naming ``name`` unless it is an integer >= 1 (not a bool)."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ConfigError(f"{name} must be an integer >= 1, got {value!r}")
    return int(value)


def check_stream(tokens: TokenStream) -> None:
    """Raise DataError unless ``tokens`` is a 1-D tensor or array (memmap) of integer ids."""
    if not isinstance(tokens, (torch.Tensor, np.ndarray)):
        raise DataError(
            f"tokens must be a 1-D torch tensor or numpy array/memmap, got {type(tokens).__name__}"
        )
    if tokens.ndim != 1:
        raise DataError(f"tokens must be 1-D, got shape {tuple(tokens.shape)}")
    if not is_integer_dtype(tokens.dtype):
        raise DataError(f"tokens must have an integer dtype, got {tokens.dtype}")


def token_id_list(ids: object, vocab_size: int, name: str = "ids") -> list[int]:
    """One sequence of token ids (a list, a 1-D tensor or array, or one of shape (1, T)) as a list of
    ints in ``0..vocab_size-1``; a DataError naming the first bad value otherwise."""
    if isinstance(ids, str):
        raise DataError(
            f"{name} must be token ids, not a str: encode the text first, e.g. tokenizer.encode({ids[:20]!r})"
        )
    if isinstance(ids, (torch.Tensor, np.ndarray)):
        if ids.ndim == 2 and ids.shape[0] == 1:
            ids = ids[0]
        if ids.ndim != 1:
            raise DataError(f"{name} must be one sequence of token ids (1-D), got shape {tuple(ids.shape)}")
        ids = ids.tolist()
    if not isinstance(ids, (list, tuple, range)):
        raise DataError(f"{name} must be a list or 1-D tensor of token ids, got {type(ids).__name__}")
    for t in ids:
        if not is_token_id(t, vocab_size):
            raise DataError(f"{name} has token id {t!r}: ids must be integers in 0..{vocab_size - 1}")
    return [int(t) for t in ids]


def check_long_enough(tokens: TokenStream, block_size: int, name: str = "corpus") -> None:
    """Raise DataError unless ``tokens`` holds at least one window: ``block_size + 1`` tokens."""
    block_size = check_positive_int("block_size", block_size)
    n = len(tokens)
    if n < block_size + 1:
        raise DataError(
            f"{name} has {n} tokens, but block_size={block_size} needs at least {block_size + 1} "
            f"(one window of {block_size} plus the shifted target); use more text or a smaller "
            f"block size"
        )


def check_token_stream(tokens: TokenStream, block_size: int, vocab_size: int, name: str) -> None:
    """DataError unless ``tokens`` is a 1-D integer stream with a full window and ids in 0..vocab_size-1.

    A trainer checks its streams up front: an id outside the vocabulary would otherwise fail at a random
    step (on CUDA as a device-side assert that breaks the whole process), a short one at the first
    evaluation.
    """
    check_stream(tokens)
    check_long_enough(tokens, block_size, name)
    low, high = int(tokens.min()), int(tokens.max())
    if low < 0 or high >= vocab_size:
        bad = low if low < 0 else high
        raise DataError(
            f"{name} hold token id {bad}, outside the model's vocabulary 0..{vocab_size - 1}: were they "
            "encoded with this model's tokenizer?"
        )


def split_train_val(
    tokens: TokenStream, val_fraction: float = 0.1, block_size: int | None = None
) -> tuple[TokenStream, TokenStream]:
    """Split a stream into (train, val): the last ``val_fraction`` of the tokens is validation.

    Deterministic and contiguous (views, no copy), so validation text is never seen in training. With
    ``block_size`` given, both parts are checked to hold at least one window (DataError otherwise).
    """
    check_stream(tokens)
    if (
        isinstance(val_fraction, bool)
        or not isinstance(val_fraction, (int, float))
        or not 0 < val_fraction < 1
    ):
        raise ConfigError(f"val_fraction must be a number strictly between 0 and 1, got {val_fraction!r}")
    n = len(tokens)
    n_val = int(round(n * val_fraction))
    train, val = tokens[: n - n_val], tokens[n - n_val :]
    if block_size is not None:
        check_long_enough(train, block_size, f"training split ({1 - val_fraction:.0%} of {n} tokens)")
        check_long_enough(val, block_size, f"validation split ({val_fraction:.0%} of {n} tokens)")
    return train, val


def get_batch(
    tokens: TokenStream,
    batch_size: int,
    block_size: int,
    generator: torch.Generator,
    device: str | torch.device = "cpu",
    pin_memory: bool | None = None,
    *,
    rank: int = 0,
    world_size: int = 1,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Draw a random batch of windows: ``x`` (B, T) int64 and ``y`` = ``x`` shifted by one token.

    Sampling scheme: ``batch_size * world_size`` window starts are drawn uniformly from
    ``[0, len(tokens) - block_size)`` with ``generator`` (a CPU generator); this process keeps rows
    ``rank * batch_size`` to ``(rank + 1) * batch_size``. Under DDP every rank seeds its generator
    identically, so all ranks draw the same global batch and each keeps a different slice: ranks never
    see the same sample in a step, and a single process with ``batch_size * world_size`` rows sees
    exactly the samples of the whole group. The generator advances identically on every rank.

    Works for tensors and numpy memmaps (only the sampled windows are read from disk). On CUDA the
    batch is copied through pinned memory with ``non_blocking=True`` (``pin_memory=None`` means "pin on
    CUDA"): the call returns once the copy is queued, so the host goes on to launch the step's kernels
    (or build the next micro-batch) while the GPU is still busy with earlier work.
    """
    batch_size = check_positive_int("batch_size", batch_size)
    block_size = check_positive_int("block_size", block_size)
    world_size = check_positive_int("world_size", world_size)
    if not is_int(rank) or not 0 <= rank < world_size:
        raise ConfigError(
            f"rank must be an integer in 0..{world_size - 1} (world_size={world_size}), got {rank!r}"
        )
    if not isinstance(generator, torch.Generator):
        raise ConfigError(f"generator must be a seeded torch.Generator, got {type(generator).__name__}")
    if generator.device.type != "cpu":
        raise ConfigError(f"generator must be a CPU torch.Generator, got one on {generator.device}")
    try:
        device = torch.device(device)
    except (RuntimeError, TypeError) as err:
        raise DeviceError(f"unknown device {device!r}; allowed: 'cpu', 'cuda', 'cuda:N', 'mps'") from err
    check_stream(tokens)
    check_long_enough(tokens, block_size, "token stream")

    starts = torch.randint(len(tokens) - block_size, (batch_size * world_size,), generator=generator)
    starts = starts[rank * batch_size : (rank + 1) * batch_size]
    offsets = torch.arange(block_size + 1)
    if isinstance(tokens, torch.Tensor):
        # Index where the stream lives (a stream already on the GPU is gathered there, not copied back).
        windows = tokens[(starts[:, None] + offsets).to(tokens.device)].long()
    else:
        # Fancy indexing reads only the B * (T + 1) sampled ids from a memmap.
        index = (starts[:, None] + offsets).numpy()
        windows = torch.from_numpy(np.asarray(tokens[index], dtype=np.int64))
    x, y = windows[:, :-1].contiguous(), windows[:, 1:].contiguous()
    if x.device.type == "cpu" and device.type == "cuda":
        if pin_memory is None or pin_memory:
            x, y = x.pin_memory(), y.pin_memory()
        return x.to(device, non_blocking=True), y.to(device, non_blocking=True)
    return x.to(device), y.to(device)
