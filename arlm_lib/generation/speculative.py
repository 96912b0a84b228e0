"""Speculative decoding (Leviathan et al. 2023; Chen et al. 2023): a cheap draft guesses, the model checks.

Each round a draft proposes up to ``num_draft_tokens`` tokens, one after the other, and the model (the
*target*) scores all of them in ONE forward pass: the logits at every drafted position come out of the
same pass, as in training. The drafted tokens are then accepted from the left by a rule that makes every
emitted token an exact draw from the target's own distribution ``p``:

* accept the draft token x (drawn from the draft's distribution ``q``) with probability min(1, p(x)/q(x));
* at the first rejection, draw the replacement from what is left of p, max(0, p - q), normalised;
* if every draft token was accepted, the pass already holds p after the last one: draw a bonus token.

Why it is exact: P(emit x) = q(x) min(1, p(x)/q(x)) + P(reject) (p(x) - q(x))+ / sum_y (p(y) - q(y))+,
and since P(reject) = 1 - sum_y min(p(y), q(y)) = sum_y (p(y) - q(y))+, this is
min(p(x), q(x)) + (p(x) - q(x))+ = p(x). A round emits 1 to ``num_draft_tokens`` + 1 tokens for one
pass of the target; a good draft makes the passes few. Greedy decoding is the limit case: a draft token
is accepted when it is the target's argmax, so the text is the target's greedy text (up to floating-point
rounding: a pass over several tokens sums in another order than one-token steps, which could flip a
near-tie between the two most likely tokens).
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterable, Sequence
from typing import Any, NamedTuple

import torch
from torch import nn

from ..errors import GenerationError
from .config import GenerationConfig, check_int, resolve_keep
from .context import check_model, crop_prompt, eval_no_grad, model_device, normalize_prompts
from .processors import LogitsProcessor, processed_probs
from .sampling import (
    check_config,
    check_stop_ids,
    check_stop_strings,
    make_generator,
    tokenizer_limit,
    with_vocab_limit,
)
from .values import check_callback

__all__ = ["SpeculativeResult", "speculative_generate", "window_start"]


class SpeculativeResult(NamedTuple):
    """The new token ids, and per pass of the target model: (tokens drafted, tokens accepted)."""

    ids: list[int]
    rounds: list[tuple[int, int]]

    @property
    def target_passes(self) -> int:
        """Forward passes of the target model (plain decoding needs one per token)."""
        return len(self.rounds)

    @property
    def drafted(self) -> int:
        return sum(n for n, _ in self.rounds)

    @property
    def accepted(self) -> int:
        return sum(a for _, a in self.rounds)

    @property
    def checked(self) -> int:
        """Draft tokens the rule looked at, the accepted ones and the first rejected one of each round
        (the drafts after a rejection are never looked at)."""
        return self.accepted + sum(a < n for n, a in self.rounds)

    @property
    def acceptance_rate(self) -> float:
        """Accepted / checked draft tokens, the estimate of the per-token acceptance probability
        (NaN if nothing was drafted). Not accepted / drafted, which also counts unchecked drafts."""
        return self.accepted / self.checked if self.checked else math.nan

    @property
    def tokens_per_pass(self) -> float:
        """New tokens per forward pass of the target, the speed-up over plain decoding in passes."""
        return len(self.ids) / self.target_passes if self.target_passes else math.nan


def window_start(n_tokens: int, block_size: int, keep: int) -> int:
    """Where the window the model sees starts once there are ``n_tokens`` tokens (counted from the
    cropped prompt's first token).

    The window grows to ``block_size``; one token more and it is cut back to its last ``keep`` tokens,
    then grows again: the windows of :class:`~arlm_lib.generation.context.ContextWindow` and
    :func:`~arlm_lib.generation.sampling.generate`, as a function of the length alone. Each cut moves
    the start by ``block_size + 1 - keep``.
    """
    if n_tokens <= block_size:
        return 0
    jump = block_size + 1 - keep
    return -(-(n_tokens - block_size) // jump) * jump  # ceil((n_tokens - block_size) / jump) jumps


def _shared_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n


class _PrefixRunner:
    """Runs a model on token windows, reusing the KV cache of the longest prefix it has already run.

    A window that extends the last one feeds only its new tokens; one that shares less (rejected draft
    tokens, a cut window) first truncates the cache to the shared part. Keys and values depend only on
    the tokens before them and their positions in the window, so a shared prefix's cache is exact.
    """

    def __init__(self, model: nn.Module, use_cache: bool) -> None:
        self.model = model
        self.device = model_device(model)
        self.cache = model.new_kv_cache(1) if use_cache else None
        self.fed: list[int] = []  # the tokens whose keys and values are in the cache

    def logits(self, window: list[int], n_last: int) -> torch.Tensor:
        """Next-token logits (n_last, V) after each of the window's last ``n_last`` tokens, one pass."""
        start = 0
        if self.cache is not None:
            start = min(_shared_prefix(self.fed, window), len(window) - n_last)
            self.cache.truncate(start)
            self.fed = list(window)
        idx = torch.as_tensor(window[start:], dtype=torch.long, device=self.device).unsqueeze(0)
        return self.model(idx, kv_cache=self.cache).logits[0, -n_last:].float().cpu()


class _ModelDraft:
    """A (smaller) GPT as the draft: its own sliding window and KV cache."""

    def __init__(self, model: nn.Module, use_cache: bool) -> None:
        self.runner = _PrefixRunner(model, use_cache)
        self.block_size = model.config.block_size
        self.keep = resolve_keep(None, self.block_size)  # generate's default cut

    def next_logits(self, history: list[int]) -> torch.Tensor:
        window = history[window_start(len(history), self.block_size, self.keep) :]
        return self.runner.logits(window, 1)[0]


class _NGramDraft:
    """A fitted :class:`~arlm_lib.ngram.NGramModel` as the draft: a table look-up per token."""

    def __init__(self, ngram: Any) -> None:
        self.ngram = ngram
        self.context = max(0, ngram.order - 1)

    def next_logits(self, history: list[int]) -> torch.Tensor:
        # The n-gram reads at most its last order - 1 tokens: pass no more (converting a long history
        # costs time at every draft token), but all of a shorter one.
        return self.ngram.next_token_probs(history[max(0, len(history) - self.context) :]).log()


def _as_draft(draft: Any, vocab_size: int, use_cache: bool) -> _ModelDraft | _NGramDraft:
    if isinstance(draft, nn.Module) and hasattr(getattr(draft, "config", None), "vocab_size"):
        size, wrapped = draft.config.vocab_size, lambda: _ModelDraft(draft, use_cache)
    elif callable(getattr(draft, "next_token_probs", None)) and hasattr(draft, "vocab_size"):
        if not getattr(draft, "fitted", True):
            raise GenerationError("the n-gram draft has not been fitted: call draft.fit(token_ids) first")
        size, wrapped = draft.vocab_size, lambda: _NGramDraft(draft)
    else:
        raise GenerationError(
            f"draft must be a GPT model or a fitted NGramModel over the model's vocabulary; got "
            f"{type(draft).__name__}"
        )
    if size != vocab_size:
        raise GenerationError(
            f"the draft's vocabulary has {size} ids and the model's {vocab_size}: a draft must predict "
            "the same tokens (train or fit it with the model's tokenizer)"
        )
    return wrapped()


def speculative_generate(
    model: nn.Module,
    draft: Any,
    prompt_ids: Sequence[int] | torch.Tensor,
    config: GenerationConfig | None = None,
    *,
    num_draft_tokens: int = 4,
    seed: int | torch.Generator | None = None,
    use_cache: bool = True,
    stop_ids: Iterable[int] | int | None = None,
    stop_strings: Iterable[str] | str | None = None,
    tokenizer: Any = None,
    bos_id: int | None = None,
    on_tokens: Callable[[list[int]], Any] | None = None,
    **overrides: Any,
) -> SpeculativeResult:
    """Continue one prompt with ``model``, letting ``draft`` propose ``num_draft_tokens`` at a time.

    ``draft``: a GPT over the same vocabulary (smaller, so cheaper), or a fitted
    :class:`~arlm_lib.ngram.NGramModel`. The text is distributed exactly as :func:`generate`'s with the
    same ``config`` / ``**overrides`` (temperature, filters and penalties apply to the model's and the
    draft's distributions alike), and greedy decoding gives :func:`generate`'s greedy text, also past
    the context window (the same windows, ``context_keep``), up to floating-point rounding that could
    flip a near-tie. Only the random stream differs, so a seed reproduces this function's text, not
    :func:`generate`'s. ``num_draft_tokens=0`` is plain decoding, one pass per token (and then the random
    stream is :func:`generate`'s too). The drafts of a round must fit in the current window, so a full
    window gets none until the next cut, and a true sliding window (``context_keep=block_size``) gets none
    once the text outgrows the context. Stops after a token in ``stop_ids`` (emitted), once the
    generated text contains one of ``stop_strings`` (needs ``tokenizer``; as in :func:`generate`, the
    token that completes it is the last, and cutting the text before it is the caller's job, as
    :func:`generate_text` does), or after ``max_new_tokens``. ``on_tokens`` (optional) is called after
    each pass with the tokens it added, to show them as they come. Returns the ids with per-pass counts (:class:`SpeculativeResult`:
    ``tokens_per_pass``, ``acceptance_rate``).
    """
    check_model(model, "speculative_generate(model, draft, prompt_ids, config)")
    config = check_config(config).with_overrides(**overrides)
    check_int("num_draft_tokens", num_draft_tokens, 0)
    check_callback(on_tokens)
    vocab_size, block_size = model.config.vocab_size, model.config.block_size
    drafter = _as_draft(draft, vocab_size, use_cache)
    limit = tokenizer_limit(tokenizer, vocab_size)
    if bos_id is None and tokenizer is not None:
        bos_id = tokenizer.bos_id
    prompts, single = normalize_prompts(prompt_ids, vocab_size, bos_id)
    if not single:
        raise GenerationError(f"speculative_generate takes one prompt, got a batch of {len(prompts)}")
    keep = config.keep_for(block_size)
    stops = check_stop_ids(stop_ids, vocab_size)
    strings = check_stop_strings(stop_strings, tokenizer)
    generator = make_generator(seed)
    processors = with_vocab_limit(config.processors(), limit)
    draft_mode = eval_no_grad(draft) if isinstance(draft, nn.Module) else contextlib.nullcontext()
    with eval_no_grad(model), draft_mode:
        return _speculate(
            _PrefixRunner(model, use_cache), drafter, prompts[0], config, processors, int(num_draft_tokens),
            block_size, keep, generator, stops, on_tokens, strings, tokenizer,
        )  # fmt: skip


def _speculate(
    target: _PrefixRunner,
    drafter: _ModelDraft | _NGramDraft,
    prompt: list[int],
    config: GenerationConfig,
    processors: list[LogitsProcessor],
    num_draft_tokens: int,
    block_size: int,
    keep: int,
    generator: torch.Generator | None,
    stops: frozenset[int],
    on_tokens: Callable[[list[int]], Any] | None = None,
    stop_strings: tuple[str, ...] = (),
    tokenizer: Any = None,
) -> SpeculativeResult:
    greedy = config.greedy
    offset = len(prompt) - len(crop_prompt(prompt, block_size))  # prompt tokens the model never sees
    history = list(prompt)  # everything so far: the draft and the penalties look at all of it
    ids: list[int] = []
    rounds: list[tuple[int, int]] = []
    while len(ids) < config.max_new_tokens:
        window = history[offset + window_start(len(history) - offset, block_size, keep) :]
        # As many drafts as keep every checked prefix inside this window (no cut between them, so one
        # pass scores them all), and leave room for the pass's own token.
        n = min(num_draft_tokens, config.max_new_tokens - len(ids) - 1, block_size - len(window))
        drafts: list[int] = []
        q_rows: list[torch.Tensor] = []
        for _ in range(n):
            q = _probs(drafter.next_logits(history + drafts), history + drafts, processors)
            drafts.append(_pick(q, greedy, generator))
            q_rows.append(q)
        logits = target.logits(window + drafts, n + 1)  # p after the window, and after each draft token
        accepted, new = 0, None
        for i, token in enumerate(drafts):
            p = _probs(logits[i], history + drafts[:i], processors)
            if _accept(p, q_rows[i], token, greedy, generator):
                accepted += 1
                continue
            new = _replacement(p, q_rows[i], greedy, generator)
            break
        if new is None:  # every draft accepted (or none drafted): the bonus token, from the same pass
            new = _pick(_probs(logits[n], history + drafts, processors), greedy, generator)
        rounds.append((n, accepted))
        emitted = drafts[:accepted] + [new]
        stop = _stop_index(ids, emitted, stops, stop_strings, tokenizer)
        if stop is not None:
            emitted = emitted[: stop + 1]  # the text ends at the stop token: later drafts are dropped
        ids += emitted
        history += emitted
        if on_tokens is not None:
            on_tokens(list(emitted))
        if stop is not None:
            break
    return SpeculativeResult(ids, rounds)


def _stop_index(
    ids: list[int], emitted: list[int], stops: frozenset[int], stop_strings: tuple[str, ...], tokenizer: Any
) -> int | None:
    """The index in ``emitted`` (the tokens of one pass, after ``ids``) of the first token that ends
    the text: a stop id, or the one after which the generated text contains a stop string."""
    for i, token in enumerate(emitted):
        if token in stops:
            return i
        # Decoded whole, as generate does: a stop string may span tokens, or lie inside one.
        if stop_strings and any(s in tokenizer.decode(ids + emitted[: i + 1]) for s in stop_strings):
            return i
    return None


def _probs(logits: torch.Tensor, history: list[int], processors: list[LogitsProcessor]) -> torch.Tensor:
    """The processed distribution (V,) float64 after ``history``, as :func:`generate` draws from."""
    return processed_probs(logits.unsqueeze(0), [history], processors)[0]


def _pick(probs: torch.Tensor, greedy: bool, generator: torch.Generator | None) -> int:
    if greedy:
        return int(probs.argmax())  # ties: the lowest id, as generate
    return int(torch.multinomial(probs, 1, generator=generator))


def _accept(
    p: torch.Tensor, q: torch.Tensor, token: int, greedy: bool, generator: torch.Generator | None
) -> bool:
    """Keep a draft token: the target's argmax when greedy, else with probability min(1, p/q)."""
    if greedy:
        return token == int(p.argmax())
    u = float(torch.rand(1, generator=generator, dtype=torch.float64))
    return u * float(q[token]) < float(p[token])  # u < p/q without dividing; q[token] > 0 (it was drawn)


def _replacement(p: torch.Tensor, q: torch.Tensor, greedy: bool, generator: torch.Generator | None) -> int:
    """The token emitted instead of a rejected draft: a draw from (p - q)+, the mass q lacked."""
    if greedy:
        return int(p.argmax())
    leftover = (p - q).clamp(min=0)
    if not float(leftover.sum()) > 0:  # p == q up to rounding: a rejection was a rounding accident
        leftover = p
    return int(torch.multinomial(leftover, 1, generator=generator))
