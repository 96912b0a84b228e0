"""Tokenizers: text <-> integer ids, behind one interface.

Two kinds share the :class:`Tokenizer` interface:

* :class:`CharTokenizer`: one id per character seen in training. Unseen characters raise a
  :class:`~arlm_lib.errors.TokenizerError` naming them, unless ``unknown="replace"`` is chosen
  explicitly, which maps them to a reserved ``<unk>`` id. Characters are never dropped silently.
* :class:`BPETokenizer`: byte-level BPE trained with Hugging Face ``tokenizers``. Its initial alphabet is
  all 256 bytes, so any UTF-8 text (Chinese, emoji, control characters) round-trips exactly.

Document start (``bos_id``): both kinds use the id of ``"\\n"``. Every built-in corpus separates documents
with a newline, so a model has seen "newline, then the start of a document" countless times, and an
empty prompt is generated from that single token. No extra special token is needed, and ``decode`` of
any id sequence is plain text.

Serialization is JSON only (``to_dict`` / ``save``), so a tokenizer embedded in a checkpoint can never run
code when it is loaded.
"""

from __future__ import annotations

import json
import os
from abc import ABC, abstractmethod
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch

from arlm_lib.checks import is_int, is_integer_dtype
from arlm_lib.errors import ConfigError, TokenizerError
from arlm_lib.files import atomic_write_bytes

__all__ = [
    "BPETokenizer",
    "CharTokenizer",
    "Tokenizer",
    "last_safe_boundary",
    "load_tokenizer",
    "split_at_safe_boundaries",
    "tokenizer_from_dict",
    "train_tokenizer",
]

FORMAT_VERSION = 1
UNKNOWN_POLICIES = ("error", "replace")
TOKENIZER_KINDS = ("char", "bpe")
UNK_TOKEN = "<unk>"
# What decode() writes for the <unk> id: U+FFFD is Unicode's own "replacement character".
UNK_TEXT = "\ufffd"
# Long texts are encoded in pieces of about this many characters, so that Hugging Face never builds
# one giant Encoding (ids + offsets + token strings) for a 100 MB corpus.
ENCODE_PIECE_CHARS = 1 << 18
_SHOWN_UNKNOWN = 10


# --------------------------------------------------------------------------------------------------
# Safe places to cut a long text
# --------------------------------------------------------------------------------------------------


def last_safe_boundary(text: str, end: int | None = None, start: int = 0) -> int:
    """Return the last index ``start < i <= end`` where ``text`` can be cut without changing BPE tokens
    (0 if none).

    ``start`` bounds the backward search, so that cutting a long text piece by piece stays linear
    even where safe cuts are rare (every line indented, or ending in a space).

    A safe cut sits right after a newline whose neighbours are both non-whitespace ("...x\\n|y..."), or,
    for Windows line ends, right before a "\\r\\n" between two non-whitespace characters
    ("...x|\\r\\ny..."). The byte-level pre-tokenizer (GPT-2's regex) always ends a pre-token there, and
    it pre-tokenizes the two halves exactly as it does the whole, so encoding the pieces gives the same
    ids as encoding the text in one go. Cutting inside a run of whitespace would not: "a\\n\\n\\nb"
    pre-tokenizes as "\\n\\n" + "\\n", but its halves as "\\n" and "\\n" + "\\n"; and "x\\r\\ny"
    gives "\\r" + "\\n", but its halves after the newline "\\r\\n" and "y".
    """
    end = len(text) if end is None else min(end, len(text))
    start = max(start, 0)
    # A cut before "\r\n" at i - 1 <= end has its "\n" at i <= end + 1: search that far, and check
    # each kind of cut against ``end`` (the one after a newline at i is at i + 1).
    i = text.rfind("\n", start, end + 2)
    while i > 0:
        cut = i + 1
        # str.isspace() is a superset of the regex's \\s, so these tests only err on the safe side.
        if cut < len(text) and not text[cut].isspace():
            if not text[i - 1].isspace():
                if cut <= end:
                    return cut
            elif text[i - 1] == "\r" and i - 1 > start and not text[i - 2].isspace():
                return i - 1
        i = text.rfind("\n", start, i)
    return 0


def split_at_safe_boundaries(text: str, max_chars: int = ENCODE_PIECE_CHARS) -> Iterator[str]:
    """Yield pieces of ``text`` (about ``max_chars`` long) whose concatenation is ``text``.

    Pieces end at :func:`last_safe_boundary` where one exists; a text with no safe newline for a long
    stretch is cut at any newline, and failing that at a fixed length (the pieces still decode back to
    the exact text, but BPE may then tokenize the few characters around that cut differently).
    """
    if max_chars < 1:
        raise ConfigError(f"max_chars must be >= 1, got {max_chars!r}")
    start = 0
    while len(text) - start > max_chars:
        cut = last_safe_boundary(text, start + max_chars, start)
        if cut <= start:
            # Look further ahead before giving up on a clean cut (lines longer than max_chars).
            cut = last_safe_boundary(text, start + 8 * max_chars, start)
        if cut <= start:
            nl = text.rfind("\n", start, start + 8 * max_chars)
            cut = nl + 1 if nl >= start else start + max_chars
        yield text[start:cut]
        start = cut
    if start < len(text):
        yield text[start:]


# --------------------------------------------------------------------------------------------------
# The interface
# --------------------------------------------------------------------------------------------------


def _id_to_int(i: object) -> int:
    """One id as a Python int: an integer, numpy integer or 0-d integer tensor/array, never a bool.

    ``int()`` alone would truncate 1.7 to 1 and read True as 1: a float or bool "id" is a bug upstream
    (logits or a mask passed by mistake), so it is refused, not decoded as some other token.
    """
    if isinstance(i, (torch.Tensor, np.ndarray)) and i.ndim == 0 and is_integer_dtype(i.dtype):
        return int(i.item())
    if is_int(i):
        return int(i)  # type: ignore[call-overload]
    raise TokenizerError(f"token id {i!r:.80} is not allowed: ids must be integers (not bools or floats)")


def _ids_to_list(ids: Sequence[int] | torch.Tensor | np.ndarray) -> list[int]:
    """Turn a 1-D tensor, array or sequence of integer ids into a list of Python ints."""
    if isinstance(ids, (torch.Tensor, np.ndarray)):
        if ids.ndim > 1:
            raise TokenizerError(f"decode expects a 1-D sequence of ids, got shape {tuple(ids.shape)}")
        if not is_integer_dtype(ids.dtype):
            raise TokenizerError(
                f"decode expects integer ids, got a {type(ids).__name__} of dtype {ids.dtype}"
            )
        return [int(i) for i in ids.reshape(-1).tolist()]
    if isinstance(ids, (str, bytes)) or not isinstance(ids, Iterable):
        raise TokenizerError(f"decode expects a sequence of integer ids, got {ids!r:.80}")
    return [_id_to_int(i) for i in ids]


class Tokenizer(ABC):
    """Maps text to integer ids and back; every model and corpus in arlm_lib goes through this interface."""

    kind: ClassVar[str]

    @abstractmethod
    def encode(self, text: str) -> list[int]:
        """Return the ids of ``text`` (raises TokenizerError if it cannot be encoded)."""

    def encode_array(self, text: str) -> np.ndarray:
        """Return the ids of ``text`` as a 1-D int32 array; efficient for long texts (no list kept)."""
        return np.asarray(self.encode(text), dtype=np.int32)

    def encode_tensor(self, text: str) -> torch.Tensor:
        """Return the ids of ``text`` as a 1-D LongTensor, ready to feed a model."""
        return torch.from_numpy(self.encode_array(text).astype(np.int64))

    @abstractmethod
    def decode(self, ids: Sequence[int] | torch.Tensor) -> str:
        """Return the text of a 1-D sequence of ids (raises TokenizerError for an id out of range)."""

    @property
    @abstractmethod
    def vocab_size(self) -> int:
        """Number of distinct ids; valid ids are ``0 .. vocab_size - 1``."""

    @property
    @abstractmethod
    def bos_id(self) -> int:
        """The document-start token (the id of "\\n"); an empty prompt starts from it."""

    @abstractmethod
    def id_to_token(self, i: int) -> str:
        """A human-readable label for id ``i`` (for plots and tables)."""

    @abstractmethod
    def to_dict(self) -> dict[str, Any]:
        """A JSON-able description; ``tokenizer_from_dict`` rebuilds an identical tokenizer from it."""

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write the tokenizer as JSON to ``path`` atomically (temp file, then rename)."""
        path = Path(path)
        if path.is_dir():
            # Checked here: the atomic write would fail on its temporary file, naming that instead.
            raise TokenizerError(
                f"cannot save the tokenizer to {str(path)!r}: it is a directory; give a file path, "
                f"e.g. {str(path / 'tokenizer.json')!r}"
            )
        payload = json.dumps(self.to_dict(), indent=1)  # ensure_ascii: lone surrogates stay writable
        atomic_write_bytes(path, payload.encode("utf-8"))

    def _check_ids(self, ids: list[int]) -> None:
        """Raise TokenizerError naming the first id outside ``0 .. vocab_size - 1``."""
        n = self.vocab_size
        for i in ids:
            if not 0 <= i < n:
                raise TokenizerError(
                    f"token id {i} is out of range for this {self.kind} tokenizer: allowed 0..{n - 1}"
                )

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Tokenizer) and self.to_dict() == other.to_dict()

    __hash__ = None  # type: ignore[assignment]  # mutable-ish objects compared by content

    def __repr__(self) -> str:
        return f"{type(self).__name__}(vocab_size={self.vocab_size})"


# --------------------------------------------------------------------------------------------------
# Character-level
# --------------------------------------------------------------------------------------------------


class CharTokenizer(Tokenizer):
    """One id per character of the training text (sorted), plus ``<unk>`` under ``unknown="replace"``."""

    kind: ClassVar[str] = "char"

    def __init__(self, chars: Sequence[str], unknown: str = "error") -> None:
        if unknown not in UNKNOWN_POLICIES:
            raise ConfigError(
                f"unknown={unknown!r} is not a valid unknown-character policy; "
                f"allowed: {', '.join(map(repr, UNKNOWN_POLICIES))}"
            )
        chars = list(chars)
        bad = [c for c in chars if not isinstance(c, str) or len(c) != 1]
        if bad:
            raise TokenizerError(
                f"CharTokenizer vocabulary entries must be single characters, got {bad[:5]!r}"
            )
        if len(set(chars)) != len(chars):
            raise TokenizerError("CharTokenizer vocabulary has duplicate characters")
        if chars != sorted(chars):
            raise TokenizerError("CharTokenizer vocabulary must be sorted by code point")
        if "\n" not in chars:
            raise TokenizerError("CharTokenizer vocabulary must contain '\\n' (the document-start token)")
        self._chars = chars
        self._unknown = unknown
        self._stoi = {c: i for i, c in enumerate(chars)}
        # Sorted code points let encode_array look up a whole text at once with np.searchsorted.
        self._codes = np.array([ord(c) for c in chars], dtype=np.uint32)
        self._unk_id = len(chars) if unknown == "replace" else None

    @classmethod
    def train(cls, text: str, unknown: str = "error") -> CharTokenizer:
        """Build the vocabulary from the sorted set of characters of ``text`` (always including "\\n")."""
        if not isinstance(text, str):
            raise TokenizerError(f"CharTokenizer.train expects a str, got {type(text).__name__}")
        if not text:
            raise TokenizerError("cannot train a char tokenizer on empty text")
        return cls(sorted(set(text) | {"\n"}), unknown=unknown)

    @property
    def unknown(self) -> str:
        """The policy for characters not in the vocabulary, "error" or "replace"."""
        return self._unknown

    @property
    def unk_id(self) -> int | None:
        """The id of ``<unk>`` under ``unknown="replace"``, else None."""
        return self._unk_id

    @property
    def vocab_size(self) -> int:
        return len(self._chars) + (1 if self._unk_id is not None else 0)

    @property
    def bos_id(self) -> int:
        return self._stoi["\n"]

    def encode(self, text: str) -> list[int]:
        return self.encode_array(text).tolist()

    def encode_array(self, text: str) -> np.ndarray:
        if not isinstance(text, str):
            raise TokenizerError(f"encode expects a str, got {type(text).__name__}")
        # utf-32 gives one fixed-width code point per character; surrogatepass keeps lone surrogates
        # (possible in a Python str) so they are reported as unknown instead of crashing.
        cps = np.frombuffer(text.encode("utf-32-le", "surrogatepass"), dtype="<u4")
        ids = np.searchsorted(self._codes, cps)
        found = ids < len(self._codes)
        found[found] = self._codes[ids[found]] == cps[found]
        if not found.all():
            if self._unk_id is None:
                raise TokenizerError(self._unknown_message(cps[~found]))
            ids[~found] = self._unk_id
        return ids.astype(np.int32)

    def _unknown_message(self, missing: np.ndarray) -> str:
        """Name the unseen characters, in order of first appearance."""
        uniq, first = np.unique(missing, return_index=True)
        ordered = uniq[np.argsort(first)]
        shown = ", ".join(repr(chr(c)) for c in ordered[:_SHOWN_UNKNOWN])
        more = f" (first {_SHOWN_UNKNOWN} shown)" if len(ordered) > _SHOWN_UNKNOWN else ""
        return (
            f"char tokenizer cannot encode {len(ordered)} character(s) not seen in training "
            f"({len(missing)} occurrence(s)): {shown}{more}; train on text that contains them, "
            f"or choose unknown='replace' to map them to {UNK_TOKEN}"
        )

    def decode(self, ids: Sequence[int] | torch.Tensor) -> str:
        ids = _ids_to_list(ids)
        self._check_ids(ids)
        chars, unk = self._chars, self._unk_id
        return "".join(UNK_TEXT if i == unk else chars[i] for i in ids)

    def id_to_token(self, i: int) -> str:
        i = _id_to_int(i)
        self._check_ids([i])
        return UNK_TOKEN if i == self._unk_id else self._chars[i]

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "version": FORMAT_VERSION,
            "chars": list(self._chars),
            "unknown": self._unknown,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> CharTokenizer:
        """Rebuild from ``to_dict()`` output (raises TokenizerError for a malformed dict)."""
        chars = d.get("chars")
        if not isinstance(chars, list):
            raise TokenizerError(
                f"char tokenizer dict needs 'chars' as a list of characters, got {chars!r:.80}"
            )
        unknown = d.get("unknown", "error")
        if unknown not in UNKNOWN_POLICIES:
            raise TokenizerError(
                f"char tokenizer dict has unknown={unknown!r}; allowed: "
                f"{', '.join(map(repr, UNKNOWN_POLICIES))}"
            )
        return cls(chars, unknown=unknown)


# --------------------------------------------------------------------------------------------------
# Byte-level BPE
# --------------------------------------------------------------------------------------------------

N_BYTES = 256


def _byte_decoder() -> dict[str, int]:
    """Map GPT-2's printable stand-in characters back to the bytes they represent."""
    # The same table the ByteLevel pre-tokenizer uses (GPT-2's bytes_to_unicode).
    printable = (
        list(range(ord("!"), ord("~") + 1)) + list(range(0xA1, 0xAC + 1)) + list(range(0xAE, 0xFF + 1))
    )
    table: dict[str, int] = {chr(b): b for b in printable}
    n = 0
    for b in range(N_BYTES):
        if b not in printable:
            table[chr(N_BYTES + n)] = b
            n += 1
    return table


class BPETokenizer(Tokenizer):
    """Byte-level BPE (Hugging Face ``tokenizers``): any UTF-8 text round-trips exactly."""

    kind: ClassVar[str] = "bpe"

    def __init__(self, hf_tokenizer: Any) -> None:
        self._tok = hf_tokenizer
        self._bos = self._single_id("\n")
        self._bytes_of = _byte_decoder()
        # Special tokens are stored as text, not byte-level symbols (see decode and token_bytes).
        self._specials = {i: t.content for i, t in hf_tokenizer.get_added_tokens_decoder().items()}

    def _single_id(self, text: str) -> int:
        ids = self._tok.encode(text, add_special_tokens=False).ids
        if len(ids) != 1:
            raise TokenizerError(f"BPE tokenizer encodes {text!r} as {len(ids)} tokens, expected 1")
        return ids[0]

    @classmethod
    def train(
        cls,
        text_or_iter: str | Iterable[str],
        vocab_size: int = 512,
        min_frequency: int = 2,
        special_tokens: Sequence[str] = (),
    ) -> BPETokenizer:
        """Train byte-level BPE on a text (or an iterable of texts) up to ``vocab_size`` ids; deterministic.

        The vocabulary holds ``special_tokens`` (ids 0, 1, ... in the order given), all 256 bytes, then
        learned merges (a small corpus may stop short of ``vocab_size``). Merges must occur at least
        ``min_frequency`` times.
        """
        from tokenizers import Tokenizer as HFTokenizer
        from tokenizers import decoders, models, pre_tokenizers, trainers

        special_tokens = list(special_tokens)
        minimum = N_BYTES + len(special_tokens)
        if not is_int(vocab_size) or vocab_size < minimum:
            raise ConfigError(
                f"BPE vocab_size must be an integer >= {minimum} (256 byte tokens + "
                f"{len(special_tokens)} special tokens), got {vocab_size!r}"
            )
        if not is_int(min_frequency) or min_frequency < 0:
            raise ConfigError(f"min_frequency must be an integer >= 0, got {min_frequency!r}")

        tok = HFTokenizer(models.BPE())
        # add_prefix_space=False: a prefix space would be added on encode but not removed on decode.
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tok.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(
            vocab_size=vocab_size,
            min_frequency=min_frequency,
            # Every byte is in the vocabulary from the start, so no text can ever be unknown.
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
            special_tokens=special_tokens,
            show_progress=False,
        )
        seen = [0]
        tok.train_from_iterator(_counting_pieces(text_or_iter, seen), trainer=trainer)
        if seen[0] == 0:
            raise TokenizerError("cannot train a BPE tokenizer on empty text")
        return cls(tok)

    @property
    def vocab_size(self) -> int:
        return self._tok.get_vocab_size(with_added_tokens=True)

    @property
    def bos_id(self) -> int:
        return self._bos

    def encode(self, text: str) -> list[int]:
        return self.encode_array(text).tolist()

    def encode_array(self, text: str) -> np.ndarray:
        if not isinstance(text, str):
            raise TokenizerError(f"encode expects a str, got {type(text).__name__}")
        try:
            text.encode("utf-8")
        except UnicodeEncodeError as err:
            raise TokenizerError(
                f"text is not encodable as UTF-8 (lone surrogate {text[err.start]!r} at "
                f"character {err.start}); BPE works on UTF-8 bytes"
            ) from err
        parts = [
            np.asarray(self._tok.encode(piece, add_special_tokens=False).ids, dtype=np.int32)
            for piece in split_at_safe_boundaries(text, ENCODE_PIECE_CHARS)
        ]
        return np.concatenate(parts) if parts else np.zeros(0, dtype=np.int32)

    def decode(self, ids: Sequence[int] | torch.Tensor) -> str:
        ids = _ids_to_list(ids)
        # Hugging Face silently skips unknown ids; we refuse them instead.
        self._check_ids(ids)
        specials = self._specials
        if specials.keys().isdisjoint(ids):
            return self._tok.decode(ids, skip_special_tokens=False)
        # A special token is stored as its text, not as byte-level symbols, and the byte-level decoder
        # would map a character such as "é" in it to a single byte: decode the runs between them.
        parts, run = [], []
        for i in ids:
            if i in specials:
                parts += [self._tok.decode(run), specials[i]]
                run = []
            else:
                run.append(i)
        parts.append(self._tok.decode(run))
        return "".join(parts)

    def token_bytes(self, i: int) -> bytes:
        """The raw bytes of token ``i`` (a token may hold part of a multi-byte character)."""
        i = _id_to_int(i)
        self._check_ids([i])
        if i in self._specials:
            return self._specials[i].encode("utf-8")
        return bytes(self._bytes_of[ch] for ch in self._tok.id_to_token(i))

    def id_to_token(self, i: int) -> str:
        raw = self.token_bytes(i)
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            # Part of a multi-byte character: show the bytes, e.g. "\\xe4\\xb8".
            return "".join(f"\\x{b:02x}" for b in raw)

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "version": FORMAT_VERSION, "hf_tokenizer": self._tok.to_str()}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> BPETokenizer:
        """Rebuild from ``to_dict()`` output; checks it is byte-level BPE with the full byte alphabet."""
        from tokenizers import Tokenizer as HFTokenizer
        from tokenizers import pre_tokenizers

        s = d.get("hf_tokenizer")
        if not isinstance(s, str):
            raise TokenizerError(f"bpe tokenizer dict needs 'hf_tokenizer' as a JSON string, got {s!r:.80}")
        try:
            spec = json.loads(s)
        except json.JSONDecodeError as err:
            raise TokenizerError(f"bpe tokenizer dict: 'hf_tokenizer' is not valid JSON ({err})") from err
        if not isinstance(spec, dict):
            raise TokenizerError("bpe tokenizer dict: 'hf_tokenizer' must be a JSON object")
        for part, want in (("model", "BPE"), ("pre_tokenizer", "ByteLevel"), ("decoder", "ByteLevel")):
            section = spec.get(part)
            if section is not None and not isinstance(section, dict):
                raise TokenizerError(
                    f"bpe tokenizer dict: {part} must be an object with type {want!r}, got {section!r:.80}"
                )
            got = section.get("type") if section is not None else None
            if got != want:
                raise TokenizerError(f"bpe tokenizer dict: {part} type is {got!r}, expected {want!r}")
        if (spec.get("pre_tokenizer") or {}).get("add_prefix_space"):
            raise TokenizerError(
                "bpe tokenizer dict: pre_tokenizer has add_prefix_space=true; it must be "
                "false so that decode(encode(text)) == text"
            )
        if spec.get("normalizer") is not None:
            raise TokenizerError("bpe tokenizer dict: a normalizer is not allowed (it would change the text)")
        _check_hf_settings(spec)
        try:
            tok = HFTokenizer.from_str(s)
        except Exception as err:  # the Rust side raises a plain Exception for a malformed file
            raise TokenizerError(f"bpe tokenizer dict: Hugging Face cannot load it ({err})") from err
        vocab = tok.get_vocab(with_added_tokens=False)
        missing = [c for c in pre_tokenizers.ByteLevel.alphabet() if c not in vocab]
        if missing:
            raise TokenizerError(
                f"bpe tokenizer dict: {len(missing)} of the 256 byte tokens are missing "
                f"from the vocabulary, so some text could not be encoded"
            )
        # A model has exactly vocab_size embedding rows: every id must be in 0..vocab_size-1, once.
        ids = sorted(tok.get_vocab(with_added_tokens=True).values())
        n = tok.get_vocab_size(with_added_tokens=True)
        if ids != list(range(n)):
            dup = sorted(i for i, c in Counter(ids).items() if c > 1)
            stray = [i for i in sorted(set(ids)) if not 0 <= i < n]
            raise TokenizerError(
                f"bpe tokenizer dict: token ids must be 0..{n - 1} (vocab_size {n}), each used once; "
                f"got {f'duplicate ids {dup[:5]}' if dup else f'ids {stray[:5]} out of range'}"
            )
        return cls(tok)


def _check_hf_settings(spec: dict[str, Any]) -> None:
    """Refuse Hugging Face settings that would drop, add, randomise or strip tokens, or break chunking.

    ``encode`` must give every id of the text, deterministically, such that ``decode`` gives the text
    back and encoding in pieces (see :func:`last_safe_boundary`) equals encoding the whole.
    """
    for part, why in (("truncation", "would silently drop tokens"), ("padding", "would add pad tokens")):
        if spec.get(part) is not None:
            raise TokenizerError(f"bpe tokenizer dict: {part} must be null ({why}); got {spec[part]!r:.80}")
    model = spec.get("model") or {}
    if model.get("dropout") not in (None, 0, 0.0):
        raise TokenizerError(
            f"bpe tokenizer dict: model dropout={model['dropout']!r} makes encoding random; allowed: null"
        )
    for name in ("continuing_subword_prefix", "end_of_word_suffix"):
        if model.get(name):
            raise TokenizerError(
                f"bpe tokenizer dict: model {name}={model[name]!r} is not byte-level BPE; allowed: null or ''"
            )
    if (spec.get("pre_tokenizer") or {}).get("use_regex") is False:
        raise TokenizerError(
            "bpe tokenizer dict: pre_tokenizer has use_regex=false; it must be true (GPT-2's split into "
            "words, spaces and newlines), so that long texts can be encoded in pieces"
        )
    for added in spec.get("added_tokens") or []:
        flags = [f for f in ("lstrip", "rstrip", "single_word") if isinstance(added, dict) and added.get(f)]
        if flags:
            raise TokenizerError(
                f"bpe tokenizer dict: added token {added.get('content')!r} has {'/'.join(flags)}=true, "
                "which changes the text around it; allowed: false"
            )


def _counting_pieces(text_or_iter: str | Iterable[str], seen: list[int]) -> Iterator[str]:
    """Yield training texts in safe pieces, counting characters so empty input can be reported."""
    texts = [text_or_iter] if isinstance(text_or_iter, str) else text_or_iter
    for text in texts:
        if not isinstance(text, str):
            raise TokenizerError(f"BPE training expects str texts, got {type(text).__name__}")
        seen[0] += len(text)
        yield from split_at_safe_boundaries(text, ENCODE_PIECE_CHARS)


# --------------------------------------------------------------------------------------------------
# Factory functions
# --------------------------------------------------------------------------------------------------

_CLASSES: dict[str, type[CharTokenizer] | type[BPETokenizer]] = {"char": CharTokenizer, "bpe": BPETokenizer}
_TRAIN_OPTIONS = {"char": {"unknown"}, "bpe": {"vocab_size", "min_frequency", "special_tokens"}}


def train_tokenizer(kind: str, text: str | Iterable[str], **kw: Any) -> Tokenizer:
    """Train a tokenizer of ``kind`` ("char" or "bpe") on ``text``; ``kw`` goes to that kind's ``train``."""
    if kind not in _CLASSES:
        raise ConfigError(
            f"unknown tokenizer kind {kind!r}; allowed: {', '.join(map(repr, TOKENIZER_KINDS))}"
        )
    extra = set(kw) - _TRAIN_OPTIONS[kind]
    if extra:
        raise ConfigError(
            f"{kind} tokenizer does not take option(s) {sorted(extra)}; allowed: "
            f"{sorted(_TRAIN_OPTIONS[kind])}"
        )
    return _CLASSES[kind].train(text, **kw)


def tokenizer_from_dict(d: dict[str, Any]) -> Tokenizer:
    """Rebuild a tokenizer from ``Tokenizer.to_dict()`` output (raises TokenizerError if it is invalid)."""
    if not isinstance(d, dict):
        raise TokenizerError(f"a tokenizer dict must be a JSON object, got {type(d).__name__}")
    kind = d.get("kind")
    if kind not in _CLASSES:
        raise TokenizerError(
            f"tokenizer dict has kind={kind!r}; allowed: {', '.join(map(repr, TOKENIZER_KINDS))}"
        )
    version = d.get("version")
    if version != FORMAT_VERSION:
        raise TokenizerError(
            f"tokenizer dict has version={version!r}; this arlm_lib reads version {FORMAT_VERSION}"
        )
    return _CLASSES[kind].from_dict(d)


def load_tokenizer(path: str | os.PathLike[str]) -> Tokenizer:
    """Load a tokenizer written by ``Tokenizer.save`` (JSON only; raises TokenizerError if invalid)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError as err:
        raise TokenizerError(f"tokenizer file {str(path)!r} does not exist") from err
    except (OSError, UnicodeDecodeError) as err:
        raise TokenizerError(f"cannot read tokenizer file {str(path)!r}: {err}") from err
    try:
        d = json.loads(text)
    except json.JSONDecodeError as err:
        raise TokenizerError(f"tokenizer file {str(path)!r} is not valid JSON: {err}") from err
    return tokenizer_from_dict(d)
