"""Held-out evaluation: loss, perplexity and bits per character over a token stream."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch.nn import functional as F


@dataclass
class EvalResult:
    """Cross-entropy summaries of one pass over a token stream."""

    loss: float  # mean nats per predicted token
    n_tokens: int  # tokens predicted
    n_chars: int  # characters those tokens decode to

    @property
    def perplexity(self) -> float:
        return math.exp(self.loss)

    @property
    def bits_per_token(self) -> float:
        return self.loss / math.log(2)

    @property
    def bits_per_char(self) -> float:
        """Total bits divided by the characters they encode (independent of the tokenizer)."""
        return self.loss * self.n_tokens / max(1, self.n_chars) / math.log(2)


@torch.no_grad()
def evaluate_tokens(
    model, tokenizer, tokens: torch.Tensor, block_size: int | None = None, batch_size: int = 16
) -> EvalResult:
    """Score every token of ``tokens`` (but the first) once, in non-overlapping windows of ``block_size``.

    Each window starts with an empty context, so early positions in a window see less history than a
    sliding window would give them; with block_size equal to the training context this matches how the
    model was trained.
    """
    block_size = block_size or model.config.block_size
    device = next(model.parameters()).device
    tokens = torch.as_tensor(tokens, dtype=torch.long)
    n_windows = (len(tokens) - 1) // block_size
    starts = torch.arange(n_windows) * block_size
    was_training = model.training
    model.eval()
    total, count = 0.0, 0
    for i in range(0, n_windows, batch_size):
        idx = starts[i : i + batch_size, None] + torch.arange(block_size + 1)
        window = tokens[idx].to(device)
        logits = model(window[:, :-1]).logits.float()
        total += F.cross_entropy(logits.flatten(0, 1), window[:, 1:].flatten(), reduction="sum").item()
        count += window[:, 1:].numel()
    model.train(was_training)
    scored = tokens[1 : 1 + count]
    n_chars = len(tokenizer.decode(scored)) if tokenizer is not None else count
    return EvalResult(loss=total / max(1, count), n_tokens=count, n_chars=n_chars)
