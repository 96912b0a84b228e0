"""Head scores: which heads copy (induction) and which look one token back (previous token)."""

from __future__ import annotations

import html
from collections.abc import Mapping
from typing import Any

import numpy as np
import plotly.graph_objects as go
import torch
from plotly.subplots import make_subplots

from ..errors import ConfigError
from .attention import _attention_5d
from .theme import THEME, Theme, _numpy, style_figure

# ------------------------------------------------------------------------------------- head scores


def repeated_sequence_batch(
    vocab_size: int, length: int, seed: int, batch_size: int = 1, bos_id: int | None = None
) -> torch.Tensor:
    """Random token sequences repeated twice, (batch_size, 2 * length) (+1 with ``bos_id`` in front).

    Tokens within a copy are distinct when ``length <= vocab_size``, so the only way to predict the
    second copy is to look back: the test bed for induction heads.
    """
    if length < 1 or vocab_size < 1 or batch_size < 1:
        raise ConfigError(
            f"vocab_size={vocab_size}, length={length}, batch_size={batch_size} are not allowed: all must be >= 1"
        )
    generator = torch.Generator().manual_seed(seed)
    rows = []
    for _ in range(batch_size):
        if length <= vocab_size:
            first = torch.randperm(vocab_size, generator=generator)[:length]
        else:
            first = torch.randint(vocab_size, (length,), generator=generator)
        row = torch.cat([first, first])
        if bos_id is not None:
            row = torch.cat([torch.tensor([bos_id]), row])
        rows.append(row)
    return torch.stack(rows).long()


def _ids_2d(tokens_or_ids: Any, batch: int) -> list[list[Any]]:
    if isinstance(tokens_or_ids, (torch.Tensor, np.ndarray)):
        rows = tokens_or_ids.tolist()
    else:
        rows = list(tokens_or_ids)
    if rows and not isinstance(rows[0], (list, tuple)):
        rows = [rows]
    if len(rows) == 1 and batch > 1:
        rows = rows * batch
    if len(rows) != batch:
        raise ConfigError(f"got {len(rows)} token sequences for a batch of {batch} attention maps")
    return [list(r) for r in rows]


def induction_scores(attentions: Any, tokens_or_ids: Any) -> np.ndarray:
    """Per (layer, head): mean attention from a token to the token right after its earlier occurrences.

    On :func:`repeated_sequence_batch` this is the mean, over the second copy, of the weight on the
    position that follows the same token in the first copy: near 1 for an induction head. Queries with
    no earlier occurrence (or only the one right before them) are left out. Returns (n_layer, n_head).
    """
    arr = _attention_5d(attentions)
    n_layer, batch, n_head, n_q, n_k = arr.shape
    if n_q != n_k:
        raise ConfigError(f"induction scores need square attention maps, got {n_q} queries x {n_k} keys")
    rows = _ids_2d(tokens_or_ids, batch)
    total = np.zeros((n_layer, n_head))
    count = 0
    for b, ids in enumerate(rows):
        if len(ids) != n_k:
            raise ConfigError(f"sequence {b} has {len(ids)} tokens for attention over {n_k} positions")
        seen: dict[Any, list[int]] = {}
        for t, tok in enumerate(ids):
            # s + 1 == t would be the query itself: attending to yourself is not induction.
            targets = [s + 1 for s in seen.get(tok, []) if s + 1 < t]
            if targets:
                total += arr[:, b, :, t, :][..., targets].sum(axis=-1)
                count += 1
            seen.setdefault(tok, []).append(t)
    if count == 0:
        raise ConfigError(
            "no token repeats in the sequence, so there is nothing to induce: use a repeated one"
        )
    return total / count


def previous_token_scores(attentions: Any) -> np.ndarray:
    """Per (layer, head): mean attention from each token to the one just before it; (n_layer, n_head)."""
    arr = _attention_5d(attentions)
    n_q, n_k = arr.shape[-2:]
    if n_k < 2:
        raise ConfigError("previous-token scores need at least two tokens")
    queries = [q for q in range(n_q) if n_k - n_q + q >= 1]
    values = np.stack([arr[:, :, :, q, n_k - n_q + q - 1] for q in queries], axis=-1)  # (L, B, H, Q)
    return values.mean(axis=(1, 3))


def head_scores_figure(
    scores: Mapping[str, Any] | Any, *, title: str | None = None, theme: Theme = THEME
) -> go.Figure:
    """Heatmaps of per-head scores (layers down, heads across), one panel per named score.

    ``scores``: an (n_layer, n_head) array, or a mapping such as
    ``{"induction": induction_scores(...), "previous token": previous_token_scores(...)}``.
    """
    named = dict(scores) if isinstance(scores, Mapping) else {"score": scores}
    arrays = {html.escape(str(name)): _numpy(v) for name, v in named.items()}
    for name, arr in arrays.items():
        if arr.ndim != 2:
            raise ConfigError(f"score {name!r} has shape {arr.shape}: it must be (n_layer, n_head)")
    fig = make_subplots(rows=1, cols=len(arrays), subplot_titles=list(arrays), horizontal_spacing=0.08)
    for i, (name, arr) in enumerate(arrays.items(), start=1):
        n_layer, n_head = arr.shape
        fig.add_trace(
            go.Heatmap(
                z=np.round(arr, 4).tolist(),
                x=list(range(n_head)),
                y=list(range(n_layer)),
                coloraxis="coloraxis",
                texttemplate="%{z:.2f}",
                name=name,
                hovertemplate=f"layer %{{y}}, head %{{x}}<br>{name} score %{{z:.3f}}<extra></extra>",
            ),
            row=1,
            col=i,
        )
        fig.update_xaxes(title_text="head", dtick=1, showgrid=False, row=1, col=i)
        fig.update_yaxes(
            title_text="layer" if i == 1 else None,
            dtick=1,
            autorange="reversed",
            showgrid=False,
            row=1,
            col=i,
        )
    n_layer = next(iter(arrays.values())).shape[0]
    style_figure(
        fig,
        title=title if title is not None else "Attention-head scores",
        height=max(280, 60 * n_layer + 170),
        theme=theme,
        coloraxis={"colorscale": theme.score_colorscale, "cmin": 0.0, "cmax": 1.0},
    )
    return fig
