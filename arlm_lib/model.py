"""A GPT-style decoder-only Transformer, small enough to read top to bottom.

The structure follows GPT-2 (and nanoGPT): token + learned position embeddings, a stack of blocks of
causal multi-head self-attention and a GELU MLP, a final LayerNorm, and a language-model head that
shares its weights with the token embedding. Three switches exist for the training-stability chapter:
``norm_position`` ("pre" or "post" LayerNorm), ``residual`` (drop the skip connections) and
``qk_layernorm`` (normalise queries and keys before their dot product). A fourth,
``position_encoding="rope"``, replaces GPT-2's learned position table with rotary position embeddings
(RoPE, as in LLaMA): queries and keys are rotated by angles proportional to their positions, so that
attention scores depend on positions only through their offset.

Attention has two paths that compute the same function:

* ``"fast"`` calls :func:`torch.nn.functional.scaled_dot_product_attention`, which dispatches to
  a fused kernel where the hardware has one (FlashAttention, or cuDNN's on recent GPUs with recent
  PyTorch; a fused CPU kernel too), else a memory-efficient one;
* ``"explicit"`` writes out softmax(QKᵀ/√d_k + mask)·V, so it can return the attention weights.

A preallocated :class:`KVCache` lets generation feed one new token at a time instead of the whole prefix.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields, replace
from typing import Any

import torch
import torch.nn as nn
from torch.nn import functional as F

from .checks import is_int, is_integer_dtype, is_real, plain_fields
from .errors import ConfigError, DataError

NORM_POSITIONS = ("pre", "post")
ATTENTION_PATHS = ("fast", "explicit")
ACTIVATIONS = ("gelu", "gelu_tanh")
POSITION_ENCODINGS = ("learned", "rope")
#: The base of RoPE's angles, as in RoFormer and LLaMA. Pair i of a head turns by
#: position * ROPE_BASE ** (-2i / head_dim) radians, so the wavelengths run from 2*pi positions (the
#: fastest pair) to about 2*pi * ROPE_BASE.
ROPE_BASE = 10_000.0


@dataclass(frozen=True)
class GPTConfig:
    """Architecture hyperparameters. Frozen, so a config can be shared and hashed safely."""

    vocab_size: int = 256
    block_size: int = 128  # the context window: the most tokens the model can condition on
    n_layer: int = 4
    n_head: int = 4
    n_embd: int = 128
    dropout: float = 0.0
    bias: bool = True  # biases in Linear and LayerNorm layers, as in GPT-2
    norm_position: str = "pre"  # "pre": x + f(LN(x)) (GPT-2); "post": LN(x + f(x)) (the 2017 Transformer)
    qk_layernorm: bool = False  # LayerNorm on queries and keys: bounds attention logits at high lr
    attention: str = "fast"  # "fast" (fused SDPA kernel) or "explicit" (returns the weights)
    residual: bool = True  # False removes the skip connections (stability chapter only)
    activation: str = "gelu"  # the MLP's GELU: "gelu" (exact) or "gelu_tanh" (the approximation GPT-2 used)
    position_encoding: str = "learned"  # "learned" (GPT-2's wpe table) or "rope" (rotary, as in LLaMA)

    def __post_init__(self) -> None:
        plain_fields(self)  # numpy scalars (from a sweep or an array) become JSON-able Python values
        for name in ("vocab_size", "block_size", "n_layer", "n_head", "n_embd"):
            value = getattr(self, name)
            if not is_int(value) or value < 1:
                raise ConfigError(f"{name}={value!r} is not allowed: it must be a positive integer")
        if self.n_embd % self.n_head:
            raise ConfigError(
                f"n_embd={self.n_embd} (--n-embd) is not divisible by n_head={self.n_head} (--n-head): "
                "each head gets n_embd/n_head dims"
            )
        # is_real first: comparing a str or None with a float would be a raw TypeError.
        if not is_real(self.dropout) or not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"dropout={self.dropout!r} is not allowed: it must be a number in [0, 1)")
        # The switches are tested for truth: "no" or 0 would silently mean something else than written.
        for name in ("bias", "qk_layernorm", "residual"):
            value = getattr(self, name)
            if not isinstance(value, bool):
                raise ConfigError(f"{name}={value!r} is not allowed: it must be True or False")
        if self.norm_position not in NORM_POSITIONS:
            raise ConfigError(
                f"norm_position={self.norm_position!r} is not allowed: choose one of {NORM_POSITIONS}"
            )
        if self.attention not in ATTENTION_PATHS:
            raise ConfigError(f"attention={self.attention!r} is not allowed: choose one of {ATTENTION_PATHS}")
        if self.activation not in ACTIVATIONS:
            raise ConfigError(f"activation={self.activation!r} is not allowed: choose one of {ACTIVATIONS}")
        if self.position_encoding not in POSITION_ENCODINGS:
            raise ConfigError(
                f"position_encoding={self.position_encoding!r} is not allowed: choose one of {POSITION_ENCODINGS}"
            )
        if self.position_encoding == "rope" and self.head_dim % 2:
            raise ConfigError(
                f"position_encoding='rope' rotates pairs of dimensions, so the head width n_embd/n_head must be "
                f"even; here it is {self.n_embd}/{self.n_head} = {self.head_dim}"
            )

    @property
    def head_dim(self) -> int:
        """The width of one attention head, ``n_embd // n_head``."""
        return self.n_embd // self.n_head

    @classmethod
    def from_preset(cls, name: str, **overrides: Any) -> GPTConfig:
        """The named preset, with any field overridden (``None`` values are ignored)."""
        if name not in PRESETS:
            raise ConfigError(f"unknown preset {name!r}: choose one of {sorted(PRESETS)}")
        cls._check_fields(overrides)  # replace() would raise a bare TypeError for a misspelt field
        return replace(PRESETS[name], **{k: v for k, v in overrides.items() if v is not None})

    def to_dict(self) -> dict[str, Any]:
        """The fields as a JSON-able dict (what a checkpoint stores)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> GPTConfig:
        """Rebuild a config saved by :meth:`to_dict`; unknown fields are an error, not silently dropped."""
        cls._check_fields(data)
        return cls(**data)

    @classmethod
    def _check_fields(cls, names: Any) -> None:
        """ConfigError naming every name in ``names`` that is not a GPTConfig field, and the allowed ones."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(names) - known)
        if unknown:
            raise ConfigError(f"unknown GPTConfig field(s) {unknown}: allowed fields are {sorted(known)}")


PRESETS: dict[str, GPTConfig] = {
    # The book's default: learns visibly in 1-3 minutes on 2 CPU cores.
    "tiny": GPTConfig(block_size=128, n_layer=4, n_head=4, n_embd=128),
    # About nanoGPT's Shakespeare-char model.
    "small": GPTConfig(block_size=256, n_layer=6, n_head=6, n_embd=384, dropout=0.2),
    # GPT-2 small, 124M parameters (vocab padded from 50257 to a multiple of 64 for fast matmuls).
    "gpt2": GPTConfig(vocab_size=50304, block_size=1024, n_layer=12, n_head=12, n_embd=768),
}


class KVCache:
    """Keys and values of every layer, preallocated as (n_layer, batch, n_head, max_length, head_dim).

    Generation fills it one step at a time; ``length`` is the number of positions already stored.
    """

    def __init__(
        self,
        n_layer: int,
        batch_size: int,
        n_head: int,
        max_length: int,
        head_dim: int,
        device: torch.device | str = "cpu",
        dtype: torch.dtype = torch.float32,
    ) -> None:
        shape = (n_layer, batch_size, n_head, max_length, head_dim)
        self.keys = torch.zeros(shape, device=device, dtype=dtype)
        self.values = torch.zeros(shape, device=device, dtype=dtype)
        self.max_length = max_length
        self.length = 0

    fixed_shape = False  # see StaticKVCache

    def update(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Store this step's keys/values for ``layer``; return all keys/values seen so far."""
        start, end = self.length, self.length + k.size(2)
        self.keys[layer, :, :, start:end] = k
        self.values[layer, :, :, start:end] = v
        return self.keys[layer, :, :, :end], self.values[layer, :, :, :end]

    def advance(self, n: int) -> None:
        """Count ``n`` more positions as stored (after every layer has appended its keys/values)."""
        self.length += n

    def reset(self) -> None:
        """Empty the cache (its memory is kept for reuse)."""
        self.length = 0

    def truncate(self, length: int) -> None:
        """Forget every position from ``length`` on (speculative decoding drops rejected draft tokens)."""
        if not 0 <= length <= self.length:
            raise ValueError(f"cannot truncate a cache of {self.length} positions to {length}")
        self.length = length

    def select_rows(self, index: torch.Tensor) -> None:
        """Keep only the batch rows in ``index`` (finished sequences leave; beams are reordered)."""
        self.keys = self.keys.index_select(1, index)
        self.values = self.values.index_select(1, index)


class StaticKVCache(KVCache):
    """A :class:`KVCache` whose forward passes keep the same shapes from one step to the next.

    A plain cache hands attention the keys written so far, ``keys[..., :length, :]``: one more at every
    step, so a compiled decoding step would be recompiled (or traced with dynamic shapes) at every token
    and could not be replayed as a CUDA graph. This cache always hands over the whole buffer and hides
    the slots that hold no token yet (and left padding) with a mask built from tensors. So one compiled
    step, or one captured CUDA graph, serves every token (as in gpt-fast and Hugging Face's static cache).

    The caller says where each forward pass writes with :meth:`prepare` before it, which also moves
    ``length``; nothing in the forward pass reads or changes a Python number that moves per token.
    """

    fixed_shape = True

    def __init__(self, n_layer, batch_size, n_head, max_length, head_dim, device="cpu", dtype=torch.float32):
        # One tensor per layer, not views of one: a compiled step that writes into a view of an input
        # writes the whole input back, every layer and every step (1.8x slower per token on a CPU,
        # measured), while one that writes into an input itself does it in place.
        shape = (batch_size, n_head, max_length, head_dim)
        self.layer_keys = [torch.zeros(shape, device=device, dtype=dtype) for _ in range(n_layer)]
        self.layer_values = [torch.zeros(shape, device=device, dtype=dtype) for _ in range(n_layer)]
        self.max_length = max_length
        self.length = 0
        self.slots = torch.arange(max_length, device=device)
        self.real = torch.zeros(batch_size, max_length, dtype=torch.bool, device=device)  # slot holds a token
        self.write_at = self.slots[:0]  # slots the next forward pass writes

    @property
    def keys(self) -> torch.Tensor:
        """Every layer's keys stacked into one tensor of shape (n_layer, batch, n_head, max_length,
        head_dim), as in :class:`KVCache`. It is a copy, for reading; writes go through :meth:`update`."""
        return torch.stack(self.layer_keys)

    @property
    def values(self) -> torch.Tensor:
        """Every layer's values stacked into one tensor, as :attr:`keys` (a copy, for reading)."""
        return torch.stack(self.layer_values)

    @property
    def batch_size(self) -> int:
        """The number of rows (sequences) the cache holds."""
        return self.real.size(0)

    def tensors(self) -> list[torch.Tensor]:
        """Every tensor a compiled step reads or writes in place (what a CUDA graph must find where it was
        captured)."""
        return [*self.layer_keys, *self.layer_values, self.real, self.slots]

    def prepare(self, n_new: int, real: torch.Tensor | None = None) -> None:
        """Have the next forward pass write ``n_new`` tokens per row after the ``length`` stored ones.

        ``real`` (batch, n_new): 1 for a token, 0 for left padding (never attended); default all tokens.
        """
        start, end = self.length, self.length + n_new
        if end > self.max_length:
            raise ValueError(f"cannot add {n_new} positions to a cache holding {start} of {self.max_length}")
        self.write_at = self.slots[start:end]
        self.real[:, start:end] = True if real is None else real.to(torch.bool)
        self.length = end

    def update(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Write this pass's keys/values at the prepared slots; return the whole buffers."""
        keys, values = self.layer_keys[layer], self.layer_values[layer]
        keys.index_copy_(2, self.write_at, k.to(keys.dtype))
        values.index_copy_(2, self.write_at, v.to(values.dtype))
        return keys, values

    def visible(self) -> torch.Tensor:
        """(batch, 1, n_new, max_length) attention mask: each new token sees the real tokens up to its own
        slot, and always itself (so a padding query gets a finite softmax row, as in :meth:`GPT.forward`)."""
        query_slots = self.write_at[:, None]  # (n_new, 1)
        earlier = self.slots <= query_slots  # (n_new, max_length)
        return ((earlier & self.real[:, None, :]) | (self.slots == query_slots))[:, None]

    def advance(self, n: int) -> None:
        """Nothing to count: :meth:`prepare` has moved ``length`` already (outside any compiled code)."""

    def reset(self) -> None:
        """Empty the cache for reuse. Keys and values are zeroed too: a masked slot gets zero weight,
        and zero times a stale inf or NaN would still be NaN."""
        self.length = 0
        self.real.zero_()
        for tensor in self.layer_keys + self.layer_values:
            tensor.zero_()

    def select_rows(self, index: torch.Tensor) -> None:
        """Keep only the batch rows in ``index``, in new tensors (see :meth:`copy_rows` to keep these)."""
        self.layer_keys = [t.index_select(0, index) for t in self.layer_keys]
        self.layer_values = [t.index_select(0, index) for t in self.layer_values]
        self.real = self.real.index_select(0, index)

    def copy_rows(self, source: StaticKVCache, index: torch.Tensor) -> None:
        """Fill this cache, in place, with the rows ``index`` of ``source`` (a cache of the same model)."""
        for mine, theirs in zip(self.layer_keys + self.layer_values, source.layer_keys + source.layer_values):
            mine.copy_(theirs.index_select(0, index))
        self.real.copy_(source.real.index_select(0, index))
        self.length = source.length


@dataclass
class GPTOutput:
    """What a forward pass returns. ``attentions`` is filled only with ``return_attention=True``."""

    logits: torch.Tensor | None  # (B, T, vocab_size); None with loss_only=True
    loss: torch.Tensor | None = None
    attentions: list[torch.Tensor] | None = None  # per layer: (B, n_head, T, T_keys)
    max_attn_logit: float | None = None  # largest pre-softmax score, over all layers and heads
    hidden_states: torch.Tensor | None = None  # (B, T, n_embd): the final LayerNorm's output, lm_head's input


def rotary_angles(position_ids: torch.Tensor, head_dim: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The cosines and sines of RoPE's angles for ``position_ids`` (B or 1, T), each of shape
    (B or 1, 1, T, head_dim / 2), ready to broadcast over the heads of a query or key tensor.

    Pair i of a head turns by ``position * ROPE_BASE ** (-2i / head_dim)`` radians: the first pairs turn
    fast and tell nearby positions apart, the last ones turn slowly and still differ between far ones.
    The angles are computed in float32 whatever the model's dtype: in bfloat16, position 1000 would be
    rounded to a multiple of 8.
    """
    half = head_dim // 2
    exponents = torch.arange(half, device=position_ids.device, dtype=torch.float32) / half
    angles = position_ids.float()[..., None] * ROPE_BASE**-exponents  # (B, T, half)
    return angles.cos()[:, None], angles.sin()[:, None]


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate queries or keys ``x`` (B, n_head, T, head_dim) by their positions' angles.

    Dimension i and dimension i + head_dim/2 form a pair, turned as a point in the plane by its own
    angle (the layout of GPT-NeoX and Hugging Face's LLaMA; RoFormer pairs neighbours, the same up to a
    fixed permutation of the dimensions). A rotation keeps lengths, and turning a query by angle a and a
    key by angle b changes their dot product as turning the key alone by b - a would. So the score of
    query position i and key position j depends on the positions only through j - i.
    """
    x1, x2 = x.float().chunk(2, dim=-1)
    rotated = torch.cat((x1 * cos - x2 * sin, x1 * sin + x2 * cos), dim=-1)
    return rotated.to(x.dtype)


class CausalSelfAttention(nn.Module):
    """Multi-head self-attention in which position t sees only positions <= t."""

    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        self.n_head, self.head_dim = config.n_head, config.head_dim
        # One matmul makes queries, keys and values for all heads at once.
        self.c_attn = nn.Linear(config.n_embd, 3 * config.n_embd, bias=config.bias)
        self.c_proj = nn.Linear(config.n_embd, config.n_embd, bias=config.bias)
        self.attn_dropout = nn.Dropout(config.dropout)
        self.resid_dropout = nn.Dropout(config.dropout)
        self.dropout = config.dropout
        self.path = config.attention
        if config.qk_layernorm:
            self.q_ln = nn.LayerNorm(self.head_dim, bias=config.bias)
            self.k_ln = nn.LayerNorm(self.head_dim, bias=config.bias)
        else:
            self.q_ln = self.k_ln = nn.Identity()

    def forward(
        self,
        x: torch.Tensor,
        mask: torch.Tensor | None,
        kv_cache: KVCache | None = None,
        layer: int = 0,
        return_attention: bool = False,
        rotary: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor | None, float | None]:
        B, T, C = x.shape
        q, k, v = self.c_attn(x).split(C, dim=2)
        # (B, T, C) -> (B, n_head, T, head_dim): every head attends independently.
        q, k, v = (t.view(B, T, self.n_head, self.head_dim).transpose(1, 2) for t in (q, k, v))
        q, k = self.q_ln(q), self.k_ln(k)
        if rotary is not None:  # RoPE: turn queries and keys by their positions' angles (rotary_angles)
            q, k = apply_rotary(q, *rotary), apply_rotary(k, *rotary)
        if kv_cache is not None:  # keys are cached already turned: a cached key keeps its position
            k, v = kv_cache.update(layer, k, v)
        dropout_p = self.dropout if self.training else 0.0

        weights, max_logit = None, None
        if self.path == "fast" and not return_attention:
            # mask=None means a plain causal mask over a fresh sequence: the kernel's fastest case.
            y = F.scaled_dot_product_attention(
                q, k, v, attn_mask=mask, dropout_p=dropout_p, is_causal=mask is None
            )
        else:
            # Dot products of d_k-dim vectors with unit-variance entries have variance d_k; dividing
            # by sqrt(d_k) keeps the softmax out of saturation, where its gradient vanishes.
            scores = (q @ k.transpose(-2, -1)) / math.sqrt(self.head_dim)
            if mask is None:
                mask = causal_mask(T, T, device=x.device)
            scores = scores.masked_fill(~mask, float("-inf"))
            if return_attention:  # .item() syncs with the GPU: only when the caller asked for it
                max_logit = scores.amax().item()
            weights = F.softmax(scores, dim=-1)
            y = self.attn_dropout(weights) @ v
        y = y.transpose(1, 2).contiguous().view(B, T, C)  # re-assemble all heads side by side
        return self.resid_dropout(self.c_proj(y)), weights, max_logit


class MLP(nn.Module):
    """Position-wise feed-forward network: expand 4x, GELU, project back."""

    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        self.c_fc = nn.Linear(config.n_embd, 4 * config.n_embd, bias=config.bias)
        self.gelu = nn.GELU(approximate="tanh" if config.activation == "gelu_tanh" else "none")
        self.c_proj = nn.Linear(4 * config.n_embd, config.n_embd, bias=config.bias)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.c_proj(self.gelu(self.c_fc(x))))


class Block(nn.Module):
    """One Transformer block: attention then MLP, each wrapped in LayerNorm and a residual connection."""

    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        self.ln_1 = nn.LayerNorm(config.n_embd, bias=config.bias)
        self.attn = CausalSelfAttention(config)
        self.ln_2 = nn.LayerNorm(config.n_embd, bias=config.bias)
        self.mlp = MLP(config)
        self.post_norm = config.norm_position == "post"
        self.residual = config.residual

    def forward(self, x, mask, kv_cache=None, layer=0, return_attention=False, rotary=None):
        if self.post_norm:
            # Post-LN (Vaswani et al. 2017): normalise after the sum. The residual path itself passes
            # through every LayerNorm, which is why it needs warmup (Xiong et al. 2020).
            a, weights, max_logit = self.attn(x, mask, kv_cache, layer, return_attention, rotary=rotary)
            x = self.ln_1(x + a if self.residual else a)
            m = self.mlp(x)
            x = self.ln_2(x + m if self.residual else m)
        else:
            # Pre-LN (GPT-2): the residual stream is never normalised, so gradients reach early layers
            # through an identity path.
            a, weights, max_logit = self.attn(
                self.ln_1(x), mask, kv_cache, layer, return_attention, rotary=rotary
            )
            x = x + a if self.residual else a
            m = self.mlp(self.ln_2(x))
            x = x + m if self.residual else m
        return x, weights, max_logit


def attention_mask_4d(
    n_new: int, past: int, attention_mask: torch.Tensor | None, device=None
) -> torch.Tensor | None:
    """The (B or 1, 1, n_new, past + n_new) mask for ``n_new`` tokens after ``past`` cached ones, with
    ``attention_mask`` (B, past + n_new; 0 = padding) hiding padded keys; None for a plain causal pass
    over a fresh sequence (the fused kernel's fast case)."""
    if not past and attention_mask is None:
        return None
    mask = causal_mask(n_new, past + n_new, device=device).unsqueeze(0).unsqueeze(0)  # (1,1,T,Tk)
    if attention_mask is not None:
        keys_real = attention_mask.to(torch.bool)[:, None, None, :]  # (B,1,1,Tk)
        # A padding query would otherwise see no key at all (a NaN softmax row); letting it see
        # itself keeps it finite, and real tokens never look at padding anyway.
        own = torch.eye(n_new, past + n_new, dtype=torch.bool, device=device).roll(past, dims=1)
        mask = mask & (keys_real | own)
    return mask


def causal_mask(n_queries: int, n_keys: int, device=None) -> torch.Tensor:
    """Boolean (n_queries, n_keys) mask; True where attention is allowed.

    Queries are the last ``n_queries`` of ``n_keys`` positions (the rest are in a KV cache), so query i
    may see keys 0 .. n_keys - n_queries + i.
    """
    offset = n_keys - n_queries
    return torch.ones(n_queries, n_keys, dtype=torch.bool, device=device).tril(diagonal=offset)


def check_token_ids(idx: Any) -> None:
    """Refuse what the embedding lookup would fail on with a message about indices: ``idx`` must be a
    (batch, time) tensor of integer ids. (Ids past the vocabulary are not checked here: that needs the
    values, a wait for the GPU at every call; generation checks its prompts once.)"""
    if not isinstance(idx, torch.Tensor):
        raise DataError(
            f"idx must be a tensor of token ids of shape (batch, time), got a {type(idx).__name__}: "
            "e.g. torch.tensor([tokenizer.encode(text)])"
        )
    if not is_integer_dtype(idx.dtype):
        raise DataError(f"idx must hold integer token ids, got dtype {idx.dtype}: use idx.long()")
    if idx.dim() != 2:
        one = " (for one sequence, use idx[None])" if idx.dim() == 1 else ""
        raise DataError(f"idx must have shape (batch, time), got shape {tuple(idx.shape)}{one}")


class GPT(nn.Module):
    """The decoder-only language model: tokens in, next-token logits (and optionally the loss) out."""

    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        if not isinstance(config, GPTConfig):
            raise ConfigError(
                f"GPT takes a GPTConfig, got {type(config).__name__}: e.g. GPT(GPTConfig.from_preset('tiny', "
                "vocab_size=tokenizer.vocab_size)), or GPTConfig.from_dict(a_dict)"
            )
        self.config = config
        positions = {}
        if config.position_encoding == "learned":  # (RoPE has no weights: it turns queries and keys)
            positions["wpe"] = nn.Embedding(config.block_size, config.n_embd)  # learned position embeddings
        self.transformer = nn.ModuleDict(
            dict(
                wte=nn.Embedding(config.vocab_size, config.n_embd),  # token embeddings
                **positions,
                drop=nn.Dropout(config.dropout),
                h=nn.ModuleList([Block(config) for _ in range(config.n_layer)]),
                # Post-LN blocks already end in a LayerNorm; a second one would be redundant.
                ln_f=nn.LayerNorm(config.n_embd, bias=config.bias)
                if config.norm_position == "pre"
                else nn.Identity(),
            )
        )
        self.lm_head = nn.Linear(config.n_embd, config.vocab_size, bias=False)
        # Weight tying (Press & Wolf 2017): the input embedding and the output projection share one
        # matrix. It saves vocab_size * n_embd parameters and usually helps small models.
        self.transformer.wte.weight = self.lm_head.weight

        self.apply(self._init_weights)
        # GPT-2's scaled init: each block adds two projections to the residual stream, so their
        # outputs are scaled by 1/sqrt(2 * n_layer) to keep the stream's variance independent of depth.
        for name, p in self.named_parameters():
            if name.endswith("c_proj.weight"):
                nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * config.n_layer))

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)

    def num_params(self, non_embedding: bool = True) -> int:
        """Parameter count. Position embeddings are excluded by default (token ones are tied to the head)."""
        n = sum(p.numel() for p in self.parameters())
        if non_embedding and "wpe" in self.transformer:
            n -= self.transformer.wpe.weight.numel()
        return n

    def flops_per_token(self, seq_len: int | None = None) -> int:
        """Training FLOPs per token (forward + backward): 6N + 12·L·H·Q·T (PaLM appendix B)."""
        c = self.config
        T = seq_len or c.block_size
        return 6 * self.num_params() + 12 * c.n_layer * c.n_head * c.head_dim * T

    def new_kv_cache(
        self, batch_size: int, max_length: int | None = None, device=None, dtype=None, static: bool = False
    ) -> KVCache:
        """An empty cache for ``batch_size`` sequences of up to ``max_length`` (default: block_size) tokens;
        a :class:`StaticKVCache` with ``static=True``."""
        max_length = max_length or self.config.block_size
        if max_length > self.config.block_size:
            raise ConfigError(
                f"max_length={max_length} exceeds the model's context (block_size={self.config.block_size})"
            )
        weight = self.lm_head.weight
        device = torch.device(device or weight.device)
        if dtype is None:
            # Under autocast (float32 weights, bf16 matmuls) keys and values come out in bf16: store them
            # so, not as float32 copies that take twice the memory and are cast back at every step.
            autocast = torch.is_autocast_enabled(device.type)
            dtype = torch.get_autocast_dtype(device.type) if autocast else weight.dtype
        c = self.config
        kind = StaticKVCache if static else KVCache
        return kind(c.n_layer, batch_size, c.n_head, max_length, c.head_dim, device, dtype)

    def forward(
        self,
        idx: torch.Tensor,
        targets: torch.Tensor | None = None,
        *,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        kv_cache: KVCache | None = None,
        return_attention: bool = False,
        loss_only: bool = False,
    ) -> GPTOutput:
        """Next-token logits for every position of ``idx`` (B, T).

        ``targets`` (B, T): token ids to predict (-100 is ignored); the mean cross-entropy is returned.
        ``attention_mask`` (B, T_keys): 1 for real tokens, 0 for padding; padded keys are never attended.
        ``position_ids`` (B, T): the tokens' positions (embedded, or RoPE's angles); by default 0..T-1,
        continuing after the cache. RoPE also takes fractional positions (position interpolation).
        ``kv_cache``: with a cache, ``idx`` holds only the new tokens; the cache grows by T.
        ``loss_only``: with ``targets``, return the loss alone (``logits`` and ``hidden_states`` None), as
        training does. Under ``torch.compile`` the forward and backward are one autograd function: had it
        returned the logits, the backward would build and read a zero gradient for them, a tensor as big
        as the logits (6.6 GB per step for GPT-2 at batch 64 x 1024), although no loss depends on it.
        """
        if loss_only and targets is None:
            raise ConfigError("loss_only=True needs targets: without them there is no loss to return")
        check_token_ids(idx)
        B, T = idx.shape
        if kv_cache is not None and kv_cache.fixed_shape:
            # A StaticKVCache (compiled decoding): where the new tokens go and what each one may see
            # come from the cache's tensors, set by its prepare(), which also checked the length.
            if attention_mask is not None:
                raise ConfigError(
                    "with a StaticKVCache, pass padding to its prepare(real=...), not attention_mask"
                )
            past, mask, positions = 0, kv_cache.visible(), kv_cache.write_at
        else:
            past = kv_cache.length if kv_cache is not None else 0
            mask = attention_mask_4d(T, past, attention_mask, idx.device)
            positions = torch.arange(past, past + T, device=idx.device)
        if past + T > self.config.block_size:
            raise ConfigError(
                f"sequence length {past + T} exceeds the model's context (block_size={self.config.block_size})"
            )
        if position_ids is None:
            position_ids = positions.unsqueeze(0)
        elif self.config.position_encoding == "learned" and not is_integer_dtype(position_ids.dtype):
            raise DataError(
                f"position_ids must be integers for a learned position table (rows of wpe), got dtype "
                f"{position_ids.dtype}; fractional positions work only with position_encoding='rope'"
            )
        x, rotary = self.transformer.wte(idx), None
        if self.config.position_encoding == "learned":
            x = x + self.transformer.wpe(position_ids)
        else:
            rotary = rotary_angles(position_ids, self.config.head_dim)  # computed once, used by every layer
        x = self.transformer.drop(x)

        attentions, max_logits = [], []
        for layer, block in enumerate(self.transformer.h):
            x, weights, max_logit = block(x, mask, kv_cache, layer, return_attention, rotary=rotary)
            if return_attention:
                attentions.append(weights)
                max_logits.append(max_logit)
        if kv_cache is not None:
            kv_cache.advance(T)
        x = self.transformer.ln_f(x)
        logits = self.lm_head(x)

        loss = None
        if targets is not None:
            loss = F.cross_entropy(
                logits.view(-1, logits.size(-1)).float(), targets.reshape(-1), ignore_index=-100
            )
        return GPTOutput(
            logits=None if loss_only else logits,
            loss=loss,
            attentions=attentions if return_attention else None,
            max_attn_logit=max(max_logits) if return_attention else None,
            hidden_states=None if loss_only else x,
        )
