"""Autoregressive sampling as a stream: one :class:`GenerationStep` per new token.

:func:`generate` works on token ids; :func:`generate_ids` collects its output, and :func:`generate_text`
/ :func:`stream_text` wrap it for text with a tokenizer.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from ..checks import is_int, is_seed, is_token_id
from ..errors import GenerationError
from .config import GenerationConfig, bad_value, check_int
from .context import ContextWindow, check_model, crop_prompt, is_single_prompt, normalize_prompts
from .processors import LogitsProcessor, VocabLimit, descending_order, processed_probs

__all__ = [
    "GeneratedToken",
    "GenerationStep",
    "generate",
    "generate_ids",
    "generate_text",
    "make_generator",
    "stream_text",
]

FINISH_REASONS = ("stop_id", "stop_string", "length")


@dataclass(frozen=True)
class GeneratedToken:
    """One new token of one sequence, with the probabilities it was chosen under.

    ``prob``: its probability under the *processed* distribution it was drawn from (after penalties,
    temperature and filters; for greedy decoding, after the penalties only, since temperature 0 would
    make it a one-hot). ``raw_prob`` / ``logprob``: the model's own probability (plain softmax of the
    logits, temperature 1, no processing) and its natural log, the term :func:`score_sequence` sums.
    ``top`` / ``top_raw``: the N most likely (token id, probability) of each distribution, best first
    (only with ``return_top=N``). ``top`` lists only tokens that could have been drawn (probability
    > 0), so after top-k / top-p / min-p or an n-gram ban it can hold fewer than N; ``top_raw`` always
    holds N (the model's own softmax gives every token some probability).
    """

    token_id: int
    prob: float
    raw_prob: float
    logprob: float
    top: tuple[tuple[int, float], ...] = ()
    top_raw: tuple[tuple[int, float], ...] = ()
    finish_reason: str | None = None  # "stop_id", "stop_string", "length"; None: the sequence goes on

    @property
    def finished(self) -> bool:
        """True if this is the sequence's last token."""
        return self.finish_reason is not None


@dataclass(frozen=True)
class GenerationStep:
    """What one step of :func:`generate` produced: a token for every sequence still running.

    ``tokens[b]`` is None for a sequence that finished at an earlier step.
    """

    index: int  # 0 for the first new token
    tokens: tuple[GeneratedToken | None, ...]

    @property
    def token_ids(self) -> list[int | None]:
        """Each row's new token id, ``None`` for a row that has already finished."""
        return [None if t is None else t.token_id for t in self.tokens]

    @property
    def finished(self) -> bool:
        """True when every sequence has finished (this is the last step)."""
        return all(t is None or t.finished for t in self.tokens)


def make_generator(seed: int | torch.Generator | None) -> torch.Generator | None:
    """A CPU generator for ``seed`` (an int), the generator itself, or None for torch's global RNG.

    Sampling always draws on the CPU, so a seed gives the same tokens on every device.
    """
    if seed is None or isinstance(seed, torch.Generator):
        if isinstance(seed, torch.Generator) and seed.device.type != "cpu":
            raise GenerationError(f"seed generator must be a CPU torch.Generator, got one on {seed.device}")
        return seed
    if not is_seed(seed):
        raise bad_value(
            "seed", seed, "it must be an integer in [-2**63, 2**64), a CPU torch.Generator, or None"
        )
    return torch.Generator(device="cpu").manual_seed(int(seed))


def check_config(config: Any) -> GenerationConfig:
    """``config`` itself, or the default GenerationConfig for None; GenerationError for anything else."""
    if config is None:
        return GenerationConfig()
    if not isinstance(config, GenerationConfig):
        raise GenerationError(
            f"config must be a GenerationConfig or None, got {type(config).__name__} {config!r:.80}: "
            "pass GenerationConfig(...), or the options as keyword arguments (temperature=0.7)"
        )
    return config


def check_tokenizer(tokenizer: Any, call: str) -> None:
    """GenerationError unless ``tokenizer`` looks like an arlm_lib tokenizer (encode, decode, vocab_size,
    bos_id); ``call`` names the function as the reader writes it, to show the order of the arguments."""
    needed = ("encode", "decode", "vocab_size", "bos_id")
    if tokenizer is None or not all(hasattr(tokenizer, name) for name in needed):
        raise _not_a_tokenizer(tokenizer, f": the call is {call}")


def _not_a_tokenizer(value: Any, detail: str = "") -> GenerationError:
    return GenerationError(
        f"tokenizer must be an arlm_lib tokenizer (the one the model was trained with), got "
        f"{type(value).__name__}{detail}"
    )


def tokenizer_limit(tokenizer: Any, vocab_size: int) -> int | None:
    """The tokenizer's vocabulary size when the model has more rows than it (None if equal or none).

    A model's vocabulary may be padded past its tokenizer's (GPT-2: 50257 ids in 50304 rows, a multiple
    of 64 for fast matmuls): the extra ids must never be generated, since the tokenizer cannot decode
    them. A tokenizer with MORE ids than the model is another model's: GenerationError, up front.
    """
    if tokenizer is None:
        return None
    n = getattr(tokenizer, "vocab_size", None)
    if not is_int(n):  # a text or a model passed as tokenizer=
        raise _not_a_tokenizer(tokenizer)
    if n > vocab_size:
        raise GenerationError(
            f"the tokenizer has {n} ids, the model's vocabulary only {vocab_size}: they do not belong "
            "together (use the tokenizer the model was trained with, e.g. the one load_model returns)"
        )
    return n if n < vocab_size else None


def with_vocab_limit(processors: list[LogitsProcessor], limit: int | None) -> list[LogitsProcessor]:
    """``processors`` preceded by a :class:`VocabLimit` when ``limit`` is set: the padded ids are gone
    before anything else looks at the distribution (top-p and min-p must not count their mass)."""
    return processors if limit is None else [VocabLimit(limit), *processors]


def check_text_prompt(prompt: Any) -> tuple[list[str], bool]:
    """(prompts, was_a_single_str) for a str or a non-empty list/tuple of str; GenerationError otherwise."""
    if isinstance(prompt, str):
        return [prompt], True
    if isinstance(prompt, (list, tuple)) and prompt:
        for row, p in enumerate(prompt):
            if not isinstance(p, str):
                raise GenerationError(
                    f"prompt {row} is of type {type(p).__name__} ({p!r:.60}): every prompt must be a str "
                    "(to continue token ids, use generate_ids)"
                )
        return list(prompt), False
    what = "an empty list" if isinstance(prompt, (list, tuple)) else f"of type {type(prompt).__name__}"
    raise GenerationError(
        f"prompt is {what} ({prompt!r:.60}): it must be a str or a non-empty list of str "
        "(to continue token ids, use generate_ids)"
    )


def check_stop_ids(stop_ids: Iterable[int] | int | None, vocab_size: int) -> frozenset[int]:
    """The set of stop ids (one id, an iterable of them, or None); GenerationError for a bad one."""
    if stop_ids is None:
        return frozenset()
    if isinstance(stop_ids, numbers.Integral):
        stop_ids = [stop_ids]
    out = set()
    for t in stop_ids:
        if not is_token_id(t, vocab_size):
            raise bad_value("stop_ids", t, f"every stop id must be an integer in 0..{vocab_size - 1}")
        out.add(int(t))
    return frozenset(out)


def check_stop_strings(stop_strings: Iterable[str] | str | None, tokenizer: Any) -> tuple[str, ...]:
    if stop_strings is None:
        return ()
    strings = (stop_strings,) if isinstance(stop_strings, str) else tuple(stop_strings)
    for s in strings:
        if not isinstance(s, str) or not s:
            raise bad_value("stop_strings", s, "every stop string must be a non-empty str")
    if strings and tokenizer is None:
        raise GenerationError("stop_strings need a tokenizer to decode the text: pass tokenizer=")
    return strings


def generate(
    model: nn.Module,
    prompt_ids: Sequence[int] | Sequence[Sequence[int]] | torch.Tensor,
    config: GenerationConfig | None = None,
    *,
    seed: int | torch.Generator | None = None,
    use_cache: bool = True,
    compile: bool = False,
    stop_ids: Iterable[int] | int | None = None,
    stop_strings: Iterable[str] | str | None = None,
    tokenizer: Any = None,
    bos_id: int | None = None,
    return_top: int = 0,
    **overrides: Any,
) -> Iterator[GenerationStep]:
    """Stream new tokens for one prompt or a batch of prompts, one :class:`GenerationStep` per token.

    ``prompt_ids``: a list (or 1-D tensor or array) of ids, or a batch of them of any lengths. A batch
    is left-padded with an attention mask, so each row's next-token distribution is the one it would
    have alone: greedy decoding gives each row exactly its text alone. Sampling draws every row from
    its own distribution too, but all rows share one random stream (one draw for the whole batch per
    step), so with a seed a row's tokens depend on the rest of the batch. An empty prompt starts
    from the document-start token ``bos_id`` (default: ``tokenizer.bos_id``). A prompt longer than the
    context window is cropped from the left with a warning; past the context, see
    :class:`GenerationConfig` (``context_keep``).
    ``config`` and ``**overrides`` (any GenerationConfig field) say how to choose tokens.
    ``seed``: an int or a CPU ``torch.Generator`` makes sampling reproducible; None uses torch's global RNG.
    A sequence stops on a token in ``stop_ids`` (the token is emitted), when its generated text contains
    one of ``stop_strings`` (needs ``tokenizer``), or after ``max_new_tokens``; the others go on.
    ``compile=True`` decodes through a :class:`~arlm_lib.model.StaticKVCache` with a compiled one-token
    step (a CUDA graph on a GPU; see ``arlm_lib/generation/compiled.py``): the same tokens, up to
    floating-point rounding. It is meant for GPUs, where one-token steps are bound by kernel launches;
    on a CPU it removes only Python's share of a step, which helps small models most. The first call
    compiles (seconds to a minute); later calls with the same model and batch size reuse it. It needs
    ``use_cache=True``.
    ``return_top=N`` fills each token's ``top`` / ``top_raw`` with the N most likely tokens (``top``:
    only those the filters left a probability > 0).
    ``tokenizer`` may have fewer ids than the model's vocabulary (one padded to a multiple of 64): the
    ids past the tokenizer's are then never generated (nor listed in ``top`` / ``top_raw``).
    Bad values raise :class:`~arlm_lib.errors.GenerationError` here, before the first step.
    """
    check_model(model, "generate(model, prompt_ids, config)")
    config = check_config(config).with_overrides(**overrides)
    vocab_size, block_size = model.config.vocab_size, model.config.block_size
    limit = tokenizer_limit(tokenizer, vocab_size)
    if bos_id is None and tokenizer is not None:
        bos_id = tokenizer.bos_id
    prompts, _ = normalize_prompts(prompt_ids, vocab_size, bos_id)
    keep = config.keep_for(block_size)
    stops = check_stop_ids(stop_ids, vocab_size)
    strings = check_stop_strings(stop_strings, tokenizer)
    check_int("return_top", return_top, 0)
    for name, value in (("use_cache", use_cache), ("compile", compile)):
        if not isinstance(value, bool):
            raise bad_value(name, value, "it must be True or False")
    if compile and not use_cache:
        raise GenerationError("compile=True decodes through a static KV cache: it needs use_cache=True")
    generator = make_generator(seed)
    windows = [crop_prompt(p, block_size, row, len(prompts)) for row, p in enumerate(prompts)]
    return _steps(
        model,
        prompts,
        windows,
        config,
        keep,
        use_cache,
        compile,
        generator,
        stops,
        strings,
        tokenizer,
        min(return_top, limit or vocab_size),
        limit,
    )


@dataclass
class _Draw:
    """One step's choice for every running row, with the distributions it came from (on the CPU)."""

    chosen: list[int]
    probs: torch.Tensor  # processed distribution (B, V)
    raw_logp: torch.Tensor  # the model's log-softmax (B, V)
    top: list[tuple[tuple[int, float], ...]]
    top_raw: list[tuple[tuple[int, float], ...]]


def _top_n(probs: torch.Tensor, n: int, possible_only: bool = False) -> list[tuple[tuple[int, float], ...]]:
    """Each row's ``n`` most likely (id, prob), best first; ``possible_only`` drops probability-0 ones.

    A token a filter removed cannot be drawn: listing it as an "alternative" (with 0.0) would suggest
    the sampler could have picked it.
    """
    if n == 0:
        return [()] * probs.size(0)
    order = descending_order(probs)[:, :n]
    rows = zip(order.tolist(), probs.gather(-1, order).tolist())
    return [tuple((i, p) for i, p in zip(ids, ps) if p > 0 or not possible_only) for ids, ps in rows]


def _draw(
    logits: torch.Tensor,
    histories: list[list[int]],
    config: GenerationConfig,
    processors: list,
    generator: torch.Generator | None,
    return_top: int,
    limit: int | None = None,
) -> _Draw:
    """Process the logits and pick one token per row: argmax if greedy, else a sample.

    ``processors`` already hold the VocabLimit for ``limit``; ``limit`` itself keeps the padded ids out
    of ``top_raw`` (the tokenizer could not decode them).
    """
    logits = logits.detach().float().cpu()  # one copy off the device per step; the draw is on the CPU
    probs = processed_probs(logits, histories, processors)  # float64
    if config.greedy:
        chosen = probs.argmax(dim=-1)  # ties: the lowest id, like the top-k rule
    else:
        chosen = torch.multinomial(probs, 1, generator=generator).squeeze(1)
    raw_logp = F.log_softmax(logits, dim=-1)
    return _Draw(
        chosen=chosen.tolist(),
        probs=probs,
        raw_logp=raw_logp,
        top=_top_n(probs, return_top, possible_only=True),
        top_raw=_top_n(raw_logp[:, :limit].exp(), return_top),
    )


def _steps(
    model: nn.Module,
    prompts: list[list[int]],
    windows: list[list[int]],
    config: GenerationConfig,
    keep: int,
    use_cache: bool,
    compile: bool,
    generator: torch.Generator | None,
    stop_ids: frozenset[int],
    stop_strings: tuple[str, ...],
    tokenizer: Any,
    return_top: int,
    limit: int | None,
) -> Iterator[GenerationStep]:
    """The generation loop behind :func:`generate` (arguments already validated)."""
    n_rows = len(prompts)
    histories = [list(p) for p in prompts]  # the whole text so far: what the penalties look at
    generated: list[list[int]] = [[] for _ in range(n_rows)]
    active = list(range(n_rows))  # rows still generating; ContextWindow row j is prompt active[j]
    processors = with_vocab_limit(config.processors(), limit)
    context = ContextWindow(model, windows, keep=keep, use_cache=use_cache, compile=compile)
    # Eval mode for the whole stream (switching modes walks every submodule: too slow per token),
    # restored when the stream ends, is closed, or is garbage-collected.
    was_training = model.training
    try:
        for step in range(config.max_new_tokens):
            if model.training:  # the caller switched it between two steps
                model.eval()
            with torch.no_grad():
                draw = _draw(
                    context.next_logits(),
                    [histories[r] for r in active],
                    config,
                    processors,
                    generator,
                    return_top,
                    limit,
                )
            tokens: list[GeneratedToken | None] = [None] * n_rows
            for j, row in enumerate(active):
                t = draw.chosen[j]
                generated[row].append(t)
                histories[row].append(t)
                reason = None
                if t in stop_ids:
                    reason = "stop_id"
                elif stop_strings and any(s in tokenizer.decode(generated[row]) for s in stop_strings):
                    reason = "stop_string"
                elif step == config.max_new_tokens - 1:
                    reason = "length"
                logprob = float(draw.raw_logp[j, t])
                tokens[row] = GeneratedToken(
                    token_id=t,
                    prob=float(draw.probs[j, t]),
                    raw_prob=math.exp(logprob),
                    logprob=logprob,
                    top=draw.top[j],
                    top_raw=draw.top_raw[j],
                    finish_reason=reason,
                )
            result = GenerationStep(index=step, tokens=tuple(tokens))
            yield result
            if result.finished:
                return
            going_on = [j for j, row in enumerate(active) if not tokens[row].finished]
            with torch.no_grad():
                if len(going_on) < len(active):
                    context.select(going_on)  # finished rows leave the batch: no compute spent on them
                active = [active[j] for j in going_on]
                context.append([generated[row][-1] for row in active])
    finally:
        model.train(was_training)
        context.close()


def generate_ids(
    model: nn.Module,
    prompt_ids: Sequence[int] | Sequence[Sequence[int]] | torch.Tensor,
    config: GenerationConfig | None = None,
    **kwargs: Any,
) -> list[int] | list[list[int]]:
    """The new token ids only (not the prompt): a list for one prompt, a list of lists for a batch.

    Takes the same arguments as :func:`generate`.
    """
    steps = generate(model, prompt_ids, config, **kwargs)
    single = is_single_prompt(prompt_ids)
    out: list[list[int]] | None = None
    for step in steps:
        if out is None:
            out = [[] for _ in step.tokens]
        for row, token in enumerate(step.tokens):
            if token is not None:
                out[row].append(token.token_id)
    if out is None:  # max_new_tokens=0
        n = 1 if single else len(prompt_ids)
        out = [[] for _ in range(n)]
    return out[0] if single else out


def cut_at_stop(text: str, stop_strings: Sequence[str]) -> tuple[str, bool]:
    """``text`` up to (not including) the first stop string in it, and whether one was found."""
    cuts = [i for i in (text.find(s) for s in stop_strings) if i >= 0]
    return (text[: min(cuts)], True) if cuts else (text, False)


def _continuation_text(tokenizer: Any, ids: list[int], stop_ids: frozenset[int]) -> str:
    if ids and ids[-1] in stop_ids:
        ids = ids[:-1]  # the stop token ends the text; it is not part of it
    return tokenizer.decode(ids)


def generate_text(
    model: nn.Module,
    tokenizer: Any,
    prompt: str | Sequence[str],
    config: GenerationConfig | None = None,
    *,
    stop_strings: Iterable[str] | str | None = None,
    stop_ids: Iterable[int] | int | None = None,
    **kwargs: Any,
) -> str | list[str]:
    """Continue ``prompt`` (a str, or a list of them) and return the new text only.

    An empty prompt starts from ``tokenizer.bos_id``. The text ends before the earliest stop string
    or a stop token. A prompt that is not a str or a non-empty list of str raises
    :class:`~arlm_lib.errors.GenerationError`; one the tokenizer cannot encode raises
    :class:`~arlm_lib.errors.TokenizerError`. Other arguments are those of :func:`generate`.
    """
    check_model(model, "generate_text(model, tokenizer, prompt)")
    check_tokenizer(tokenizer, "generate_text(model, tokenizer, prompt)")
    prompts, single = check_text_prompt(prompt)
    check_config(config)
    tokenizer_limit(tokenizer, model.config.vocab_size)  # a mismatch first, not as a bad prompt id
    ids = [tokenizer.encode(p) for p in prompts]
    strings = check_stop_strings(stop_strings, tokenizer)
    stops = check_stop_ids(stop_ids, tokenizer.vocab_size)
    new = generate_ids(
        model, ids, config, tokenizer=tokenizer, stop_strings=strings, stop_ids=stops, **kwargs
    )
    texts = [cut_at_stop(_continuation_text(tokenizer, row, stops), strings)[0] for row in new]
    return texts[0] if single else texts


def safe_length(text: str, stop_strings: Sequence[str]) -> int:
    """How much of ``text`` can be shown for sure: not a trailing partial UTF-8 character (shown as
    U+FFFD until its last byte arrives) and not a suffix that might be the start of a stop string."""
    n = len(text.rstrip("\ufffd"))
    for s in stop_strings:
        for k in range(min(len(s) - 1, n), 0, -1):
            if text[:n].endswith(s[:k]):
                n -= k
                break
    return n


def stream_text(
    model: nn.Module,
    tokenizer: Any,
    prompt: str,
    config: GenerationConfig | None = None,
    *,
    stop_strings: Iterable[str] | str | None = None,
    stop_ids: Iterable[int] | int | None = None,
    **kwargs: Any,
) -> Iterator[str]:
    """Yield the continuation of ``prompt`` piece by piece as it is generated.

    The pieces join to exactly what :func:`generate_text` returns for the same arguments and seed. A
    piece is held back while it may still change: an incomplete multi-byte character, or a possible
    beginning of a stop string.
    """
    check_model(model, "stream_text(model, tokenizer, prompt)")
    check_tokenizer(tokenizer, "stream_text(model, tokenizer, prompt)")
    if not isinstance(prompt, str):
        raise GenerationError(
            f"stream_text takes one prompt str, got {type(prompt).__name__} ({prompt!r:.60})"
        )
    check_config(config)
    tokenizer_limit(tokenizer, model.config.vocab_size)  # a mismatch first, not as a bad prompt id
    strings = check_stop_strings(stop_strings, tokenizer)
    stops = check_stop_ids(stop_ids, tokenizer.vocab_size)
    steps = generate(
        model,
        tokenizer.encode(prompt),
        config,
        tokenizer=tokenizer,
        stop_strings=strings,
        stop_ids=stops,
        **kwargs,
    )
    ids: list[int] = []
    shown = 0
    for step in steps:
        ids.append(step.tokens[0].token_id)
        text, stopped = cut_at_stop(_continuation_text(tokenizer, ids, stops), strings)
        end = len(text) if (stopped or step.finished) else safe_length(text, strings)
        if end > shown:
            yield text[shown:end]
            shown = end
        if stopped:
            return
