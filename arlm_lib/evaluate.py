"""Held-out evaluation: loss, perplexity and bits per character over a token stream."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from torch.nn import functional as F

from .checks import is_int
from .data import check_positive_int, check_stream
from .errors import ConfigError, DataError
from .generation.sampling import tokenizer_limit


@dataclass
class EvalResult:
    """Cross-entropy summaries of one pass over a token stream."""

    loss: float  # mean nats per predicted token
    n_tokens: int  # tokens predicted
    n_chars: int  # characters those tokens decode to (without a tokenizer: one per token)

    @property
    def perplexity(self) -> float:
        """The effective number of equally likely next tokens, exp(loss)."""
        return math.exp(self.loss)

    @property
    def bits_per_token(self) -> float:
        """The loss in bits (loss / ln 2)."""
        return self.loss / math.log(2)

    @property
    def bits_per_char(self) -> float:
        """Total bits divided by the characters they encode, comparable across tokenizers. Evaluated
        without a tokenizer, each token counts as one character: right for a character-level model's
        ids, but for BPE ids it is bits per token; pass the tokenizer."""
        return self.loss * self.n_tokens / max(1, self.n_chars) / math.log(2)


@torch.no_grad()
def evaluate_tokens(
    model, tokenizer, tokens: torch.Tensor, block_size: int | None = None, batch_size: int = 16
) -> EvalResult:
    """Score every token of ``tokens`` (but the first) once, in non-overlapping windows of ``block_size``.

    Each window starts with an empty context, so early positions in a window see less history than a
    sliding window would give them; with block_size equal to the training context this matches how the
    model was trained. The tokens after the last full window are scored in one shorter window, so a
    text shorter than the context is scored too.

    ``tokenizer`` is used only to count the characters the scored tokens decode to (for
    ``bits_per_char``); with None each token counts as one character.
    """
    if tokenizer is not None and not callable(getattr(tokenizer, "decode", None)):
        raise ConfigError(
            f"tokenizer must be an arlm_lib tokenizer or None, got {type(tokenizer).__name__}: the arguments "
            "are (model, tokenizer, tokens)"
        )
    if isinstance(tokens, str):
        raise DataError("tokens must be token ids, not a str: encode the text first (tokenizer.encode(text))")
    # Another model's tokenizer would still decode the ids, to the wrong characters: bits_per_char
    # would be divided by a wrong count without a word.
    tokenizer_limit(tokenizer, model.config.vocab_size)
    context = model.config.block_size
    block_size = context if block_size is None else block_size
    if not is_int(block_size) or not 1 <= block_size <= context:
        raise ConfigError(
            f"block_size must be an integer in 1..{context} (the model's context), got {block_size!r}"
        )
    batch_size = check_positive_int("batch_size", batch_size)
    device = next(model.parameters()).device
    if not isinstance(tokens, (torch.Tensor, np.ndarray)):
        # A list keeps its own dtype (float for [1.5, 2.0]), checked next; [] would be float32 too.
        tokens = torch.as_tensor(tokens) if len(tokens) else torch.zeros(0, dtype=torch.long)
    if tokens.ndim == 1:
        # Before the cast to long, which would truncate 1.5 to 1 and score ids nobody meant.
        check_stream(tokens)
    tokens = torch.as_tensor(tokens, dtype=torch.long)
    if tokens.dim() != 1:
        raise DataError(f"evaluation needs a 1-D stream of token ids; got shape {tuple(tokens.shape)}")
    vocab_size = model.config.vocab_size
    bad = tokens[(tokens < 0) | (tokens >= vocab_size)]
    if len(bad):
        raise DataError(
            f"token id {int(bad[0])} is outside the model's vocabulary 0..{vocab_size - 1}: were these "
            "tokens encoded with this model's tokenizer?"
        )
    if len(tokens) < 2:
        raise DataError(
            f"evaluation needs at least 2 tokens (one to predict and one before it); got {len(tokens)}: "
            "use a longer text (or, in the CLI, --split all)"
        )
    n_windows = (len(tokens) - 1) // block_size
    starts = torch.arange(n_windows) * block_size
    was_training = model.training
    model.eval()
    total, count = 0.0, 0

    def score(windows: torch.Tensor) -> None:
        nonlocal total, count
        windows = windows.to(device)
        logits = model(windows[:, :-1]).logits.float()
        total += F.cross_entropy(logits.flatten(0, 1), windows[:, 1:].flatten(), reduction="sum").item()
        count += windows[:, 1:].numel()

    for i in range(0, n_windows, batch_size):
        score(tokens[starts[i : i + batch_size, None] + torch.arange(block_size + 1)])
    tail = tokens[n_windows * block_size :]
    if len(tail) >= 2:
        score(tail[None])
    model.train(was_training)
    if tokenizer is None:
        n_chars = count
    else:
        # The characters of the text minus those the unscored first token completes. Decoding the scored
        # tokens alone would turn a multi-byte character split by the first token into broken ones.
        text, head = tokenizer.decode(tokens[: 1 + count]), tokenizer.decode(tokens[:1])
        if not text.startswith(head):  # the first token ends inside a character
            head = head.rstrip("\ufffd")
        n_chars = len(text) - len(head)
    return EvalResult(loss=total / count, n_tokens=count, n_chars=n_chars)
