"""Named built-in corpora: ``load_corpus("synthetic")``, ``--data NAME``, ``python -m arlm_lib corpus list``.

Synthetic corpora are generated deterministically on first use and cached as text files under the cache
directory (``$ARLM_CACHE_DIR`` or ``~/.cache/arlm``); nothing generated is committed to the repository.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from arlm_lib.checks import is_int
from arlm_lib.corpus.entropy import SYNTHETIC_CORPORA, entropy_rate, token_entropy_rate
from arlm_lib.corpus.loading import (
    atomic_write_bytes,
    decode_utf8,
    is_url,
    load_text,
    read_text_file,
    resolve_cache_dir,
)
from arlm_lib.corpus.prose import prose_text
from arlm_lib.corpus.synthetic import GRAMMAR_VERSION, SyntheticLanguage
from arlm_lib.errors import ConfigError, DataError

CORPUS_SEED = 1  # the sampling seed of every built-in synthetic corpus (entropy estimates default to 0)


@dataclass(frozen=True)
class CorpusInfo:
    """A built-in corpus: its name, a one-line description, its default size in characters and its kind."""

    name: str
    description: str
    approx_chars: int
    kind: str  # "synthetic" or "prose"


_BUILTINS = (
    CorpusInfo(
        "synthetic",
        "English-like synthetic language with exact probabilities: agreement across relative clauses, "
        "nested brackets, copied word sequences (the default)",
        3_000_000,
        "synthetic",
    ),
    CorpusInfo(
        "synthetic-copy",
        "copy sentences only: a random word sequence in quotes, then its exact repeat (induction heads)",
        1_000_000,
        "synthetic",
    ),
    CorpusInfo(
        "synthetic-agreement",
        "declarative sentences only, most with a relative clause between subject and verb",
        1_000_000,
        "synthetic",
    ),
    CorpusInfo(
        "prose",
        "a small English prose corpus written for this project (about language models), one paragraph per line",
        len(prose_text()),
        "prose",
    ),
)


def list_corpora() -> list[CorpusInfo]:
    """All built-in corpora, default first."""
    return list(_BUILTINS)


def corpus_names() -> list[str]:
    """Names of the built-in corpora."""
    return [c.name for c in _BUILTINS]


def get_corpus_info(name: str) -> CorpusInfo:
    """The CorpusInfo of a built-in name; DataError listing the known names otherwise."""
    for c in _BUILTINS:
        if c.name == name:
            return c
    raise DataError(f"unknown corpus {name!r}; built-in corpora are: {', '.join(corpus_names())}")


def truncate_lines(text: str, size: int) -> str:
    """The longest prefix of whole lines within ``size`` characters (or the first ``size`` characters
    when the first line alone is longer)."""
    if len(text) <= size:
        return text
    cut = text.rfind("\n", 0, size) + 1
    return text[: cut or size]


def load_corpus(name_or_path: str | os.PathLike, size: int | None = None, *, cache_dir=None) -> str:
    """Text of a built-in corpus (by name), a local UTF-8 file, or a URL (see ``load_text``).

    ``size`` caps the length in characters, cut at a line boundary where possible; ``None`` = whole corpus.
    A built-in name wins over a file of the same name; write ``./name`` to mean the file.
    """
    if size is not None and (not is_int(size) or size <= 0):
        raise ConfigError(f"size must be a positive number of characters or None; got {size!r}")
    source = os.fspath(name_or_path)
    choices = f"a UTF-8 text file, a URL or a built-in corpus ({', '.join(corpus_names())})"
    if not source.strip():
        raise DataError(f"the corpus name or path {source!r} is empty: give {choices}")
    builtin = source in corpus_names()
    if builtin and source in SYNTHETIC_CORPORA:
        text = _synthetic_text(source, size, resolve_cache_dir(cache_dir))
    elif builtin:
        text = prose_text()
    elif is_url(source):
        text = load_text(source, cache_dir=cache_dir)
    elif Path(source).is_file():
        text = read_text_file(source)
    elif Path(source).is_dir():
        raise DataError(f"{source!r} is a directory: give {choices}")
    elif Path(source).exists():  # a device, a pipe or a socket: not a file that can be read twice
        raise DataError(f"{source!r} is not a regular file: give {choices}")
    else:
        raise DataError(
            f"unknown corpus {source!r}: not a built-in corpus ({', '.join(corpus_names())}) and no such file"
        )
    return text if size is None else truncate_lines(text, size)


def _synthetic_text(name: str, size: int | None, cache: Path) -> str:
    """Generate (or read from the cache) the default-size text; larger sizes get their own cache file.

    Generation draws sentences from one seeded stream, so a smaller size is a prefix of a larger one.
    """
    default = get_corpus_info(name).approx_chars
    n_chars = default if size is None or size <= default else size
    path = cache / "corpora" / f"{name}-g{GRAMMAR_VERSION}-s{CORPUS_SEED}-{n_chars}.txt"
    if path.is_file():
        try:
            return decode_utf8(path.read_bytes(), str(path))
        except DataError:
            path.unlink(missing_ok=True)  # a corrupted cache entry: regenerate it
    text = SyntheticLanguage(SYNTHETIC_CORPORA[name], seed=CORPUS_SEED).text(n_chars)
    atomic_write_bytes(path, text.encode("utf-8"))
    return text


def format_corpus_list() -> str:
    """A plain-text table of the built-in corpora (``python -m arlm_lib corpus list``)."""
    rows = [(c.name, _human_size(c.approx_chars), c.description) for c in _BUILTINS]
    w0 = max(len("name"), *(len(r[0]) for r in rows))
    w1 = max(len("chars"), *(len(r[1]) for r in rows))
    lines = [f"{'name':<{w0}}  {'chars':>{w1}}  description"]
    lines += [f"{a:<{w0}}  {b:>{w1}}  {c}" for a, b, c in rows]
    return "\n".join(lines)


def format_corpus_info(
    name: str,
    n_sentences: int = 100_000,
    seed: int = 0,
    bpe_vocab_size: int | None = None,
    cache_dir=None,
    tokenizer_sample_chars: int = 300_000,
) -> str:
    """Details of one built-in corpus; for a synthetic one, its entropy rate in bits/char and in bits/token
    for the char and BPE tokenizers (trained on the corpus's first ``tokenizer_sample_chars``), with 95%
    confidence intervals."""
    info = get_corpus_info(name)
    text = load_corpus(name, cache_dir=cache_dir)
    lines = [
        f"name:        {info.name}",
        f"description: {info.description}",
        f"size:        {len(text):,} characters, {text.count(chr(10)):,} lines, {len(set(text))} distinct characters",
    ]
    if info.kind != "synthetic":
        lines.append("entropy:     unknown (real text has no known floor; see the synthetic corpora)")
        return "\n".join(lines)
    est = entropy_rate(name, n_sentences=n_sentences, seed=seed)
    lines.append(f"entropy:     {est}  [{est.n_sentences:,} sampled sentences, seed {seed}]")
    lines.append(f"             {est.bits_per_sentence:.2f} bits per sentence on average")
    try:
        from arlm_lib.tokenizers import train_tokenizer
    except ImportError:  # the tokenizers module is optional for this report
        lines.append("bits/token:  unavailable (arlm_lib.tokenizers could not be imported)")
        return "\n".join(lines)
    sample = truncate_lines(text, tokenizer_sample_chars)
    bpe_kw = {} if bpe_vocab_size is None else {"vocab_size": bpe_vocab_size}
    for kind, kw in (("char", {}), ("bpe", bpe_kw)):
        tok = train_tokenizer(kind, sample, **kw)
        t_est = token_entropy_rate(tok, name, n_sentences=n_sentences, seed=seed)
        lines.append(
            f"{kind + ' tokens:':<13}{t_est}  [vocab {tok.vocab_size}, {t_est.chars_per_token:.2f} chars/token]"
        )
    return "\n".join(lines)


def _human_size(n: int) -> str:
    if n >= 1_000_000:
        return f"{n / 1_000_000:.1f}M"
    if n >= 1_000:
        return f"{n / 1_000:.0f}k"
    return str(n)
