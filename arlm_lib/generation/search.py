"""What the deterministic searches (beam, contrastive) share: one checked prompt and its processors."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

import torch
from torch import nn

from ..checks import is_int
from ..errors import GenerationError
from .config import GenerationConfig, bad_value
from .context import check_model, crop_prompt, normalize_prompts
from .processors import LogitsProcessor
from .sampling import tokenizer_limit, with_vocab_limit

__all__ = ["SearchStart", "start_search"]


class SearchStart(NamedTuple):
    """One prompt, ready for a search loop."""

    prompt: list[int]  # the whole prompt: the penalties look at all of it
    window: list[int]  # its last block_size tokens, what the model sees first
    keep: int  # tokens kept when the window is cut (``context_keep``)
    processors: list[LogitsProcessor]  # the penalties, and a padded vocabulary's limit


def start_search(
    model: nn.Module,
    prompt_ids: Sequence[int] | torch.Tensor,
    search: str,
    *,
    eos_id: int | None,
    bos_id: int | None,
    repetition_penalty: float,
    no_repeat_ngram_size: int,
    context_keep: int | None,
    tokenizer: Any,
) -> SearchStart:
    """Check the arguments every search takes (naming ``search`` in the errors) and prepare its start.

    ``tokenizer`` (optional) gives the default ``bos_id`` and, if it has fewer ids than the model's
    vocabulary (a padded one), keeps the ids past its own out, as :func:`generate` does.
    """
    check_model(model, f"{search}(model, prompt_ids, ...)")
    vocab_size, block_size = model.config.vocab_size, model.config.block_size
    if bos_id is None and tokenizer is not None:
        bos_id = tokenizer.bos_id
    if eos_id is not None and (not is_int(eos_id) or not 0 <= eos_id < vocab_size):
        raise bad_value("eos_id", eos_id, f"it must be None or an integer in 0..{vocab_size - 1}")
    prompts, single = normalize_prompts(prompt_ids, vocab_size, bos_id)
    if not single:
        raise GenerationError(f"{search} takes one prompt, got a batch of {len(prompts)}")
    config = GenerationConfig(
        repetition_penalty=repetition_penalty,
        no_repeat_ngram_size=no_repeat_ngram_size,
        do_sample=False,
        context_keep=context_keep,
    )
    processors = with_vocab_limit(config.processors(), tokenizer_limit(tokenizer, vocab_size))
    return SearchStart(
        prompts[0], crop_prompt(prompts[0], block_size), config.keep_for(block_size), processors
    )
