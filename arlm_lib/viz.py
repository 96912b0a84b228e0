"""Plotly figure builders: attention, head scores, training curves, next-token distributions.

Every builder returns a self-contained :class:`plotly.graph_objects.Figure`. Its interactivity (layer
and head selectors, sliders over query tokens, the decoding explorer's sliders, a log-scale toggle) lives
in the figure's own ``updatemenus`` / ``sliders`` over precomputed data, so it works in the static HTML
book with no kernel. Show a figure with :func:`arlm_lib.display.show`; the kernel apps in
:mod:`arlm_lib.widgets` wrap these same builders and never draw a figure their own way.

Two plotly.js facts shape the code:

* plotly's controls are independent: a button cannot read another control's value. Two dropdowns (layer
  and head) compose by rewriting each other's buttons (``_linked_menus``). The decoding explorer
  has four controls, so each one owns a different attribute that can hide a trace (``visible``, trace
  ``opacity``, ``marker.opacity``, the alpha of ``marker.color``) and a bar shows only where all four
  agree: a logical AND computed by the renderer (:func:`decoding_explorer_figure`).
* plotly renders a small HTML subset in every label. Text that came from a tokenizer or a reader goes
  through :func:`token_label` / :func:`html.escape`, so ``<img src=x onerror=...>`` shows as text.
"""

from __future__ import annotations

import functools
import html
import itertools
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import plotly.graph_objects as go
import torch
from plotly.subplots import make_subplots

from .errors import ConfigError
from .generate import GenerationConfig, processed_probs
from .generation.context import eval_no_grad, model_device
from .train import History

__all__ = [
    "THEME",
    "Theme",
    "attention_array",
    "attention_figure",
    "attention_grid",
    "attention_heatmap",
    "decoding_explorer",
    "decoding_explorer_figure",
    "generation_html",
    "head_scores_figure",
    "induction_scores",
    "model_attention",
    "next_token_distribution",
    "next_token_probs",
    "previous_token_scores",
    "probability_color",
    "repeated_sequence_batch",
    "style_figure",
    "token_attention_bars",
    "token_label",
    "token_probability_html",
    "training_curves",
    "update_training_curves",
]


# ---------------------------------------------------------------------------------------- the theme


@dataclass(frozen=True)
class Theme:
    """Fonts, colours, margins and sizes shared by every figure: change a view's look in one place."""

    font_family: str = "system-ui, -apple-system, 'Segoe UI', Roboto, Helvetica, Arial, sans-serif"
    mono_family: str = "ui-monospace, SFMono-Regular, Menlo, Consolas, monospace"
    font_size: int = 13
    text_color: str = "#222222"
    grid_color: str = "#e6e6e6"
    colorway: tuple[str, ...] = (
        "#1f77b4",
        "#ff7f0e",
        "#2ca02c",
        "#d62728",
        "#9467bd",
        "#8c564b",
        "#e377c2",
        "#7f7f7f",
        "#bcbd22",
        "#17becf",
    )
    attention_colorscale: str = "Blues"
    score_colorscale: str = "Viridis"
    raw_color: str = "#9e9e9e"
    processed_rgb: tuple[int, int, int] = (31, 119, 180)
    highlight_color: str = "#d62728"
    # Token colours by probability, low -> high (ColorBrewer RdYlBu, light end: dark text stays legible).
    probability_stops: tuple[str, ...] = ("#f46d43", "#fee090", "#abd9e9")
    margin: tuple[int, int, int, int] = (70, 30, 70, 60)  # left, right, top, bottom (px)
    height: int = 420
    cell_px: int = 22  # heatmap cell size when a figure sizes itself to the number of tokens
    label_chars: int = 12  # longer token labels are cut with an ellipsis

    def template(self) -> go.layout.Template:
        """A small plotly template (a few hundred bytes, unlike plotly's default of about 7 KB per figure)."""
        return _template(self)


@functools.lru_cache(maxsize=8)
def _template(theme: Theme) -> go.layout.Template:
    # Building a Template validates every property (~0.15 s): build one per theme, not per figure.
    axis = {"gridcolor": theme.grid_color, "zeroline": False, "automargin": True, "linecolor": "#bbbbbb"}
    return go.layout.Template(
        layout={
            "font": {"family": theme.font_family, "size": theme.font_size, "color": theme.text_color},
            "colorway": list(theme.colorway),
            "paper_bgcolor": "white",
            "plot_bgcolor": "white",
            "hoverlabel": {"font": {"family": theme.mono_family}},
            "xaxis": axis,
            "yaxis": axis,
        }
    )


#: The theme every builder uses unless it is given another one.
THEME = Theme()


def style_figure(
    fig: go.Figure,
    *,
    title: str | None = None,
    height: int | None = None,
    theme: Theme = THEME,
    **layout: Any,
) -> go.Figure:
    """Apply the theme (template, margins, height, title) to ``fig`` and return it.

    ``title`` is trusted text written by the chapter author; text from a reader or a tokenizer must be
    escaped first (:func:`token_label`).
    """
    left, right, top, bottom = theme.margin
    fig.layout.template = theme.template()
    fig.update_layout(
        margin={"l": left, "r": right, "t": top, "b": bottom},
        height=height or theme.height,
        **layout,
    )
    if title is not None:
        fig.update_layout(title={"text": title, "x": 0.0, "xanchor": "left"})
    return fig


# --------------------------------------------------------------------------------------- text helpers

_VISIBLE_WHITESPACE = {"\n": "↵", "\t": "⇥", "\r": "␍", " ": "␣"}


def _visible(token: str, max_chars: int) -> str:
    text = "".join(_VISIBLE_WHITESPACE.get(ch, ch) for ch in str(token)) or "∅"
    return text[: max_chars - 1] + "…" if len(text) > max_chars else text


def token_label(token: str, max_chars: int | None = None) -> str:
    """A token as a short figure label: whitespace made visible (␣ ↵ ⇥), cut to ``max_chars``, escaped."""
    return html.escape(_visible(token, THEME.label_chars if max_chars is None else max_chars), quote=False)


def _unique_categories(labels: Sequence[str]) -> list[str]:
    """Category names that stay distinct when tokens repeat; hover shows them (``the #3``)."""
    return [f"{label} #{i}" for i, label in enumerate(labels)]


def _as_tokens(tokens: Sequence[Any] | torch.Tensor | np.ndarray) -> list[str]:
    if isinstance(tokens, (torch.Tensor, np.ndarray)):
        tokens = tokens.tolist()
    return [str(t) for t in tokens]


def _round(values: np.ndarray, decimals: int | None) -> np.ndarray:
    return values if decimals is None else np.round(values, decimals)


def _plain(values: np.ndarray) -> list:
    """A JSON-friendly nested list with ``None`` for NaN (plotly's gaps)."""
    arr = np.asarray(values, dtype=float)
    return np.where(np.isnan(arr), None, arr).tolist()


# ----------------------------------------------------------------------------------- attention data


def _numpy(x: Any) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        return x.detach().float().cpu().numpy()
    return np.asarray(x, dtype=float)


def _attention_5d(attentions: Any) -> np.ndarray:
    """Attention as (n_layer, batch, n_head, T_query, T_key).

    Accepts the model's list per layer of (B, H, T, T) or (H, T, T), or one array of shape
    (L, H, T, T) or (L, B, H, T, T).
    """
    if isinstance(attentions, (list, tuple)):
        if not attentions:
            raise ConfigError("attentions is empty: pass one (H, T, T) or (B, H, T, T) array per layer")
        layers = [_numpy(a) for a in attentions]
        if layers[0].ndim == 3:
            layers = [a[None] for a in layers]
        arr = np.stack(layers)
    else:
        arr = _numpy(attentions)
        if arr.ndim == 4:
            arr = arr[:, None]
    if arr.ndim != 5:
        raise ConfigError(
            f"attention weights of shape {arr.shape} are not allowed: use a list per layer of (H, T, T) or "
            "(B, H, T, T), or an array of shape (L, H, T, T)"
        )
    return arr


def attention_array(attentions: Any, batch_index: int = 0) -> np.ndarray:
    """One sequence's attention as a (n_layer, n_head, T_query, T_key) float array."""
    arr = _attention_5d(attentions)
    if not 0 <= batch_index < arr.shape[1]:
        raise ConfigError(
            f"batch_index={batch_index} is out of range: the batch has {arr.shape[1]} sequences"
        )
    return arr[:, batch_index]


def model_attention(model: torch.nn.Module, ids: Sequence[int] | torch.Tensor) -> np.ndarray:
    """Run ``model`` on one sequence of token ids; return its attention weights as (L, H, T, T).

    The model runs in eval mode without autograd (its previous mode is restored).
    """
    idx = torch.as_tensor(list(ids) if not isinstance(ids, torch.Tensor) else ids, dtype=torch.long)
    idx = idx.reshape(1, -1).to(model_device(model))
    if idx.shape[1] == 0:
        raise ConfigError("ids is empty: attention needs at least one token")
    with eval_no_grad(model):
        out = model(idx, return_attention=True)
    return attention_array(out.attentions)


def _select_map(weights: Any, layer: int | None, head: int | None) -> tuple[np.ndarray, str]:
    """Reduce weights to one (T_query, T_key) map; ``None`` averages over that axis. Returns a caption."""
    arr = _numpy(weights) if not isinstance(weights, (list, tuple)) else attention_array(weights)
    caption = []
    if arr.ndim == 4:
        arr, caption = _pick(arr, layer, "layer", caption)
    if arr.ndim == 3:
        arr, caption = _pick(arr, head, "head", caption)
    if arr.ndim != 2:
        raise ConfigError(
            f"attention weights of shape {arr.shape} are not allowed: use (T, T), (H, T, T) or (L, H, T, T)"
        )
    return arr, ", ".join(caption)


def _pick(arr: np.ndarray, index: int | None, name: str, caption: list[str]) -> tuple[np.ndarray, list[str]]:
    if index is None:
        return arr.mean(axis=0), [*caption, f"mean over {name}s"]
    if not -arr.shape[0] <= index < arr.shape[0]:
        raise ConfigError(f"{name}={index} is out of range: there are {arr.shape[0]} {name}s")
    return arr[index], [*caption, f"{name} {index % arr.shape[0]}"]


def _check_index(name: str, value: int, size: int) -> None:
    if not isinstance(value, int) or not 0 <= value < size:
        raise ConfigError(f"{name}={value!r} is out of range: it must be an integer in 0..{size - 1}")


def _check_tokens(tokens: list[str], n_keys: int) -> None:
    if len(tokens) != n_keys:
        raise ConfigError(f"got {len(tokens)} tokens for attention over {n_keys} positions: they must match")


# ------------------------------------------------------------------------------------ attention views


def _attention_trace(
    weights: np.ndarray,
    keys: list[str],
    queries: list[str],
    *,
    decimals: int | None,
    mask_future: bool,
    theme: Theme,
    **trace: Any,
) -> go.Heatmap:
    """One heatmap of a (T_query, T_key) map; future keys (never attended) are left blank."""
    n_q, n_k = weights.shape
    z = _round(weights.astype(float), decimals)
    if mask_future:
        # Query i is position n_k - n_q + i; the causal mask hides every key after it.
        future = np.arange(n_k)[None, :] > (n_k - n_q + np.arange(n_q))[:, None]
        z = np.where(future, np.nan, z)
    return go.Heatmap(
        z=_plain(z),
        x=keys,
        y=queries,
        coloraxis="coloraxis",
        hoverongaps=False,
        xgap=1 if n_k <= 40 else 0,
        ygap=1 if n_q <= 40 else 0,
        hovertemplate="query %{y}<br>key %{x}<br>weight %{z:.3f}<extra></extra>",
        **trace,
    )


def _axes_for_tokens(labels: list[str], n_q: int, show_ticks: bool = True) -> tuple[dict, dict]:
    keys = _unique_categories(labels)
    queries = keys[len(keys) - n_q :]
    xaxis = {
        "title": {"text": "key (attended to)"},
        "tickmode": "array",
        "tickvals": keys,
        "ticktext": labels,
        "showticklabels": show_ticks,
        "tickfont": {"family": THEME.mono_family},
        "showgrid": False,
    }
    yaxis = {
        "title": {"text": "query (attending)"},
        "tickmode": "array",
        "tickvals": queries,
        "ticktext": labels[len(labels) - n_q :],
        "showticklabels": show_ticks,
        "autorange": "reversed",  # the first token on top, as in a matrix
        "tickfont": {"family": THEME.mono_family},
        "showgrid": False,
    }
    return xaxis, yaxis


def _auto_height(n: int, theme: Theme, extra: int = 170) -> int:
    return int(min(900, max(320, n * theme.cell_px + extra)))


def attention_heatmap(
    weights: Any,
    tokens: Sequence[str],
    layer: int | None = None,
    head: int | None = None,
    *,
    title: str | None = None,
    zmax: float | None = None,
    decimals: int | None = 4,
    mask_future: bool = True,
    theme: Theme = THEME,
) -> go.Figure:
    """A heatmap of one head's attention (queries down, keys across) labelled with the tokens.

    ``weights``: (T, T), (H, T, T), (L, H, T, T) or the model's list per layer; ``layer`` / ``head``
    pick the map (``None`` averages over that axis). Hover shows the query token, the key token and the
    weight; keys after the query (hidden by the causal mask) are blank.
    """
    w, caption = _select_map(weights, layer, head)
    labels = [token_label(t) for t in _as_tokens(tokens)]
    _check_tokens(labels, w.shape[1])
    xaxis, yaxis = _axes_for_tokens(labels, w.shape[0])
    keys, queries = xaxis["tickvals"], yaxis["tickvals"]
    fig = go.Figure(
        _attention_trace(w, keys, queries, decimals=decimals, mask_future=mask_future, theme=theme)
    )
    style_figure(
        fig,
        title=title if title is not None else f"Attention weights{f' ({caption})' if caption else ''}",
        height=_auto_height(w.shape[0], theme),
        theme=theme,
        xaxis=xaxis,
        yaxis=yaxis,
        coloraxis={
            "colorscale": theme.attention_colorscale,
            "cmin": 0.0,
            "cmax": zmax or float(w.max() or 1.0),
        },
    )
    return fig


def _menu_visibility(n_traces: int, index: int) -> list[bool]:
    return [i == index for i in range(n_traces)]


def _linked_menus(
    n_a: int, n_b: int, trace_index, labels_a: list[str], labels_b: list[str], active: tuple[int, int]
) -> list[dict]:
    """Two dropdowns (A, B) that select trace ``trace_index(a, b)`` together.

    A plotly button cannot read the other menu's value, so each button, besides showing its trace, also
    rewrites the other menu's buttons for its own value: after "A = a", button "B = b" shows (a, b).
    """
    n_traces = n_a * n_b
    a0, b0 = active
    buttons_a = []
    for a in range(n_a):
        rewrite = {
            f"updatemenus[1].buttons[{b}].args[0].visible": _menu_visibility(n_traces, trace_index(a, b))
            for b in range(n_b)
        }
        buttons_a.append(
            {
                "label": labels_a[a],
                "method": "update",
                "args": [{"visible": _menu_visibility(n_traces, trace_index(a, b0))}, rewrite],
            }
        )
    buttons_b = []
    for b in range(n_b):
        rewrite = {
            f"updatemenus[0].buttons[{a}].args[0].visible": _menu_visibility(n_traces, trace_index(a, b))
            for a in range(n_a)
        }
        buttons_b.append(
            {
                "label": labels_b[b],
                "method": "update",
                "args": [{"visible": _menu_visibility(n_traces, trace_index(a0, b))}, rewrite],
            }
        )
    common = {"type": "dropdown", "direction": "down", "showactive": True, "y": 1.0, "yanchor": "bottom"}
    return [
        {**common, "buttons": buttons_a, "active": a0, "x": 0.0, "xanchor": "left", "pad": {"b": 10}},
        {**common, "buttons": buttons_b, "active": b0, "x": 0.22, "xanchor": "left", "pad": {"b": 10}},
    ]


def attention_figure(
    attentions: Any,
    tokens: Sequence[str],
    layer: int = 0,
    head: int = 0,
    *,
    title: str | None = None,
    decimals: int | None = 3,
    batch_index: int = 0,
    theme: Theme = THEME,
) -> go.Figure:
    """Every head of every layer in one heatmap figure, with layer and head dropdowns that work offline.

    ``attentions``: the model's list per layer of (B, H, T, T) or (H, T, T), or an (L, H, T, T) array.
    The head menu ends with "mean over heads". Trace ``l * (H + 1) + h`` holds layer l, head h.
    """
    arr = attention_array(attentions, batch_index)
    n_layer, n_head, n_q, n_k = arr.shape
    _check_index("layer", layer, n_layer)
    _check_index("head", head, n_head + 1)
    labels = [token_label(t) for t in _as_tokens(tokens)]
    _check_tokens(labels, n_k)
    xaxis, yaxis = _axes_for_tokens(labels, n_q)
    keys, queries = xaxis["tickvals"], yaxis["tickvals"]
    n_choices = n_head + 1  # the heads, then their mean

    def index(layer_: int, head_: int) -> int:
        return layer_ * n_choices + head_

    fig = go.Figure()
    for li in range(n_layer):
        for hi in range(n_choices):
            w = arr[li, hi] if hi < n_head else arr[li].mean(axis=0)
            name = f"layer {li}, " + (f"head {hi}" if hi < n_head else "mean over heads")
            fig.add_trace(
                _attention_trace(
                    w,
                    keys,
                    queries,
                    decimals=decimals,
                    mask_future=True,
                    theme=theme,
                    name=name,
                    visible=(li, hi) == (layer, head),
                )
            )
    menus = _linked_menus(
        n_layer,
        n_choices,
        index,
        [f"layer {i}" for i in range(n_layer)],
        [f"head {i}" for i in range(n_head)] + ["mean over heads"],
        (layer, head),
    )
    style_figure(
        fig,
        title=title if title is not None else "Attention weights: pick a layer and a head",
        height=_auto_height(n_q, theme, extra=220),
        theme=theme,
        xaxis=xaxis,
        yaxis=yaxis,
        updatemenus=menus,
        coloraxis={"colorscale": theme.attention_colorscale, "cmin": 0.0, "cmax": float(arr.max() or 1.0)},
    )
    fig.update_layout(margin={"t": theme.margin[2] + 50})
    return fig


def attention_grid(
    attentions: Any,
    tokens: Sequence[str],
    layer: int = 0,
    *,
    title: str | None = None,
    cols: int = 4,
    decimals: int | None = 3,
    batch_index: int = 0,
    controls: bool = True,
    theme: Theme = THEME,
) -> go.Figure:
    """All heads of a layer side by side (one shared colour scale), with a layer dropdown.

    ``controls=False`` leaves out the dropdown and holds only ``layer`` (the kernel app's own
    selector replaces it). Trace ``l * H + h`` holds layer l, head h.
    """
    arr = attention_array(attentions, batch_index)
    n_layer, n_head, n_q, n_k = arr.shape
    _check_index("layer", layer, n_layer)
    labels = [token_label(t) for t in _as_tokens(tokens)]
    _check_tokens(labels, n_k)
    layers = range(n_layer) if controls else [layer]
    cols = max(1, min(cols, n_head))
    rows = math.ceil(n_head / cols)
    fig = make_subplots(
        rows=rows,
        cols=cols,
        subplot_titles=[f"head {h}" for h in range(n_head)],
        horizontal_spacing=0.04,
        vertical_spacing=0.1 if rows > 1 else 0.0,
        shared_xaxes=False,
        shared_yaxes=False,
    )
    show_ticks = n_k <= 24  # small multiples of a long text: hover carries the tokens
    xaxis, yaxis = _axes_for_tokens(labels, n_q, show_ticks)
    keys, queries = xaxis["tickvals"], yaxis["tickvals"]
    for li in layers:
        for h in range(n_head):
            fig.add_trace(
                _attention_trace(
                    arr[li, h],
                    keys,
                    queries,
                    decimals=decimals,
                    mask_future=True,
                    theme=theme,
                    name=f"layer {li}, head {h}",
                    visible=li == layer,
                ),
                row=h // cols + 1,
                col=h % cols + 1,
            )
    xaxis.pop("title")
    yaxis.pop("title")
    fig.update_xaxes(**xaxis)
    fig.update_yaxes(**yaxis)
    updatemenus = []
    if controls:
        n_traces = n_layer * n_head
        updatemenus = [
            {
                "type": "dropdown",
                "active": layer,
                "x": 0.0,
                "xanchor": "left",
                "y": 1.0,
                "yanchor": "bottom",
                "pad": {"b": 30},
                "buttons": [
                    {
                        "label": f"layer {li}",
                        "method": "update",
                        "args": [{"visible": [i // n_head == li for i in range(n_traces)]}],
                    }
                    for li in range(n_layer)
                ],
            }
        ]
    panel_px = 150 if show_ticks else 120
    style_figure(
        fig,
        title=title
        if title is not None
        else (f"All heads of layer {layer}" if not controls else "All heads"),
        height=int(rows * panel_px * max(1.0, n_q / 12) ** 0.5 + 200),
        theme=theme,
        updatemenus=updatemenus,
        coloraxis={"colorscale": theme.attention_colorscale, "cmin": 0.0, "cmax": float(arr.max() or 1.0)},
    )
    fig.update_layout(margin={"t": theme.margin[2] + (60 if controls else 20)})
    return fig


def token_attention_bars(
    weights: Any,
    tokens: Sequence[str],
    query_index: int | None = None,
    layer: int | None = None,
    head: int | None = None,
    *,
    title: str | None = None,
    controls: bool = True,
    decimals: int | None = 4,
    theme: Theme = THEME,
) -> go.Figure:
    """One query token's attention as bars over the text, with a slider over query tokens.

    ``weights`` and ``layer`` / ``head`` as in :func:`attention_heatmap`; ``query_index`` defaults to
    the last token. ``controls=False`` leaves out the slider (the kernel app uses its own).
    """
    w, caption = _select_map(weights, layer, head)
    labels = [token_label(t) for t in _as_tokens(tokens)]
    n_q, n_k = w.shape
    _check_tokens(labels, n_k)
    offset = n_k - n_q
    query_index = n_q - 1 if query_index is None else query_index
    if not 0 <= query_index < n_q:
        raise ConfigError(f"query_index={query_index} is out of range: there are {n_q} query tokens")
    keys = _unique_categories(labels)

    def row(q: int) -> tuple[list, list[str], str]:
        y = _round(w[q].astype(float), decimals).tolist()
        colors = [theme.highlight_color if k == offset + q else theme.colorway[0] for k in range(n_k)]
        head_text = f"Attention from query {keys[offset + q]}"
        return y, colors, head_text + (f" ({caption})" if caption else "")

    y0, colors0, title0 = row(query_index)
    fig = go.Figure(
        go.Bar(
            x=keys,
            y=y0,
            marker={"color": colors0},
            hovertemplate="key %{x}<br>weight %{y:.3f}<extra></extra>",
            name="attention",
        )
    )
    sliders = []
    if controls:
        steps = []
        for q in range(n_q):
            y, colors, text = row(q)
            steps.append(
                {
                    "label": labels[offset + q],
                    "method": "update",
                    "args": [{"y": [y], "marker.color": [colors]}, {"title.text": text}],
                }
            )
        sliders = [
            {
                "active": query_index,
                "steps": steps,
                "currentvalue": {"prefix": "query token: "},
                "pad": {"t": 70},
                "len": 1.0,
            }
        ]
    style_figure(
        fig,
        title=title if title is not None else title0,
        height=theme.height + (90 if controls else 0),
        theme=theme,
        sliders=sliders,
        xaxis={
            "tickmode": "array",
            "tickvals": keys,
            "ticktext": labels,
            "tickfont": {"family": theme.mono_family},
            "title": {"text": "key (attended to)"},
        },
        yaxis={"title": {"text": "attention weight"}, "range": [0.0, 1.0]},
        showlegend=False,
    )
    return fig


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


# --------------------------------------------------------------------------------- training curves

# (panel row, panel col, column, series label, line style): the order of the traces in the figure.
_CURVES = (
    (1, 1, "train_loss", "train loss", {"dash": "solid"}),
    (1, 1, "val_loss", "val loss", {"dash": "dot"}),
    (1, 2, "grad_norm", "grad norm", {"dash": "solid"}),
    (1, 2, "grad_norm_clipped", "grad norm (clipped)", {"dash": "dash"}),
    (2, 1, "lr", "learning rate", {"dash": "solid"}),
    (2, 2, "tokens_per_s", "tokens/s", {"dash": "solid"}),
)
_PANEL_TITLES = ("loss", "gradient norm (before / after clipping)", "learning rate", "throughput (tokens/s)")


def _history_columns(run: Any) -> dict[str, np.ndarray]:
    if isinstance(run, History):
        data = {name: np.asarray(run.columns[name], dtype=float) for name in History.COLUMNS}
    elif isinstance(run, Mapping):
        data = {
            name: np.asarray([math.nan if v is None else v for v in run.get(name, [])], dtype=float)
            for name in History.COLUMNS
        }
    else:
        raise ConfigError(
            f"a training history must be a History or History.to_dict(), got {type(run).__name__}"
        )
    n = len(data["step"])
    for name, col in data.items():
        if len(col) == 0:
            data[name] = np.full(n, math.nan)  # a column an older history did not record
        elif len(col) != n:
            raise ConfigError(f"history column {name!r} has {len(col)} values but 'step' has {n}")
    return data


def _runs(history_or_histories: Any) -> dict[str, dict[str, np.ndarray]]:
    """``{run name: columns}`` from a History, a to_dict() dict, or a mapping of names to either."""
    obj = history_or_histories
    if isinstance(obj, History) or (isinstance(obj, Mapping) and "step" in obj):
        return {"run": _history_columns(obj)}
    if isinstance(obj, Mapping):
        if not obj:
            raise ConfigError("no runs given: pass a History or a dict {name: History}")
        return {str(name): _history_columns(run) for name, run in obj.items()}
    raise ConfigError(
        f"training_curves takes a History, History.to_dict(), or a dict of them; got {type(obj).__name__}"
    )


def _decimate(x: np.ndarray, y: np.ndarray, max_points: int) -> tuple[np.ndarray, np.ndarray]:
    """At most about ``max_points`` points, keeping each bucket's min and max so spikes stay visible."""
    if len(x) <= max_points:
        return x, y
    n_buckets = max(1, max_points // 2)
    keep = {0, len(x) - 1}
    for bucket in np.array_split(np.arange(len(x)), n_buckets):
        values = y[bucket]
        if np.all(np.isnan(values)):
            continue
        keep.add(int(bucket[np.nanargmax(values)]))
        keep.add(int(bucket[np.nanargmin(values)]))
    idx = np.array(sorted(keep))
    return x[idx], y[idx]


def _curve_data(columns: dict[str, np.ndarray], max_points: int) -> list[tuple[list, list]]:
    """(x, y) for each entry of ``_CURVES``; validation loss only where it was measured."""
    steps = columns["step"]
    out = []
    for _, _, name, _, _ in _CURVES:
        y = columns[name]
        measured = ~np.isnan(y)
        x_m, y_m = (steps[measured], y[measured]) if name == "val_loss" else (steps, y)
        x_m, y_m = _decimate(x_m, y_m, max_points)
        out.append((x_m.astype(int).tolist(), _plain(y_m)))
    return out


def training_curves(
    history_or_histories: Any,
    log_y: bool = False,
    *,
    title: str | None = None,
    max_points: int = 2000,
    theme: Theme = THEME,
) -> go.Figure:
    """Loss, gradient norm (before and after clipping), learning rate and tokens/s against the step.

    Takes a :class:`~arlm_lib.train.History`, its ``to_dict()``, or ``{run name: either}`` to overlay
    runs (one colour and legend group per run: a legend click hides a whole run). A "linear / log"
    toggle switches the loss and gradient-norm axes; ``log_y`` sets its start.
    """
    runs = _runs(history_or_histories)
    several = len(runs) > 1
    fig = make_subplots(
        rows=2, cols=2, subplot_titles=_PANEL_TITLES, horizontal_spacing=0.1, vertical_spacing=0.16
    )
    for r, (run, columns) in enumerate(runs.items()):
        run_label = html.escape(run)
        color = theme.colorway[r % len(theme.colorway)]
        for i, ((row, col, name, label, line), (x, y)) in enumerate(
            zip(_CURVES, _curve_data(columns, max_points))
        ):
            if several:
                series_color, legend = (
                    color,
                    {"legendgroup": run_label, "showlegend": i == 0, "name": run_label},
                )
            else:
                series_color = theme.colorway[1 if line["dash"] != "solid" else 0]
                legend = {"name": label, "showlegend": True}
            fig.add_trace(
                go.Scatter(
                    x=x,
                    y=y,
                    mode="lines+markers" if name == "val_loss" else "lines",
                    line={**line, "color": series_color, "width": 1.6},
                    marker={"size": 5},
                    hovertemplate=f"{run_label + ': ' if several else ''}{label}<br>step %{{x}}<br>%{{y:.4g}}"
                    "<extra></extra>",
                    **legend,
                ),
                row=row,
                col=col,
            )
    log_axes = {"yaxis.type": "log", "yaxis2.type": "log"}
    linear_axes = {"yaxis.type": "linear", "yaxis2.type": "linear"}
    toggle = {
        "type": "buttons",
        "direction": "right",
        "active": 1 if log_y else 0,
        "x": 1.0,
        "xanchor": "right",
        "y": 1.0,
        "yanchor": "bottom",
        "pad": {"b": 28},
        "buttons": [
            {"label": "linear", "method": "relayout", "args": [linear_axes]},
            {"label": "log", "method": "relayout", "args": [log_axes]},
        ],
    }
    style_figure(
        fig,
        title=title if title is not None else "Training curves",
        height=620,
        theme=theme,
        updatemenus=[toggle],
        hovermode="closest",
        legend={"orientation": "h", "y": -0.2, "yanchor": "top", "x": 0.0},
    )
    fig.update_layout(yaxis_type="log" if log_y else "linear", yaxis2_type="log" if log_y else "linear")
    fig.update_layout(margin={"t": theme.margin[2] + 50, "b": theme.margin[3] + 60})
    if several:
        fig.add_annotation(
            text="solid: train loss / grad norm; dotted: val loss; dashed: clipped grad norm",
            xref="paper",
            yref="paper",
            x=0.0,
            y=-0.3,
            showarrow=False,
            font={"size": 11},
            xanchor="left",
        )
    for c in (1, 2):
        fig.update_xaxes(title_text="step", row=2, col=c)
    return fig


def update_training_curves(fig: go.Figure, history_or_histories: Any, *, max_points: int = 2000) -> None:
    """Refresh the curves of a :func:`training_curves` figure in place (a FigureWidget too) with new data.

    The runs must be the ones the figure was built from (same names, same order).
    """
    runs = _runs(history_or_histories)
    data = [xy for columns in runs.values() for xy in _curve_data(columns, max_points)]
    if len(data) != len(fig.data):
        raise ConfigError(
            f"the figure has {len(fig.data)} traces but {len(runs)} run(s) need {len(data)}: rebuild it "
            "with training_curves()"
        )
    with fig.batch_update():
        for trace, (x, y) in zip(fig.data, data):
            trace.x, trace.y = x, y


# ------------------------------------------------------------------------ next-token distributions


def _labels_for(tokenizer_or_labels: Any, ids: Sequence[int]) -> list[str]:
    if hasattr(tokenizer_or_labels, "id_to_token"):
        return [tokenizer_or_labels.id_to_token(int(i)) for i in ids]
    labels = list(tokenizer_or_labels)
    return [str(labels[int(i)]) for i in ids]


def next_token_probs(
    model: torch.nn.Module, ids: Sequence[int] | torch.Tensor, config: GenerationConfig | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """The model's next-token distribution after ``ids``: (raw softmax, after ``config``'s processors).

    Uses the processors :func:`arlm_lib.generate.generate` samples with; greedy decoding gives a one-hot.
    The context is cropped from the left to the model's ``block_size``.
    """
    config = config or GenerationConfig()
    ids = [int(i) for i in (ids.tolist() if isinstance(ids, torch.Tensor) else ids)]
    if not ids:
        raise ConfigError("ids is empty: start from the document-start token (tokenizer.bos_id)")
    window = ids[-model.config.block_size :]
    with eval_no_grad(model):
        idx = torch.tensor([window], dtype=torch.long, device=model_device(model))
        logits = model(idx).logits[:, -1, :].float().cpu()
    return _probs_from_logits(logits[0], config, [ids])


def _probs_from_logits(
    logits: torch.Tensor, config: GenerationConfig, histories: Sequence[Sequence[int]]
) -> tuple[np.ndarray, np.ndarray]:
    raw = torch.softmax(logits.double(), dim=-1)
    processed = processed_probs(logits[None].double(), histories, config.processors())[0]
    if config.greedy:
        processed = torch.zeros_like(processed).scatter_(0, processed.argmax().reshape(1), 1.0)
    return raw.numpy(), processed.double().numpy()


def next_token_distribution(
    probs: Any,
    tokenizer_or_labels: Any,
    top: int = 20,
    processed: Any = None,
    *,
    title: str | None = None,
    theme: Theme = THEME,
) -> go.Figure:
    """Bars of the ``top`` most likely next tokens: the model's distribution, and optionally the
    processed one (after temperature / top-k / top-p / min-p) beside it.

    ``tokenizer_or_labels``: a tokenizer (``id_to_token``) or a list of labels indexed by token id.
    """
    raw = _numpy(probs).reshape(-1)
    proc = None if processed is None else _numpy(processed).reshape(-1)
    if proc is not None and proc.shape != raw.shape:
        raise ConfigError(f"processed has shape {proc.shape} but probs has {raw.shape}: they must match")
    if top < 1:
        raise ConfigError(f"top={top} is not allowed: show at least 1 token")
    key = raw if proc is None else np.maximum(raw, proc)
    ids = [int(i) for i in np.argsort(-key, kind="stable")[: min(top, raw.size)]]
    labels = [token_label(t) for t in _labels_for(tokenizer_or_labels, ids)]
    cats = [f"{label} #{i}" for label, i in zip(labels, ids)]
    fig = go.Figure()
    fig.add_trace(
        go.Bar(
            x=cats,
            y=np.round(raw[ids], 5).tolist(),
            name="model (raw)",
            marker={"color": theme.raw_color},
            hovertemplate="token %{x}<br>raw p = %{y:.4f}<extra></extra>",
        )
    )
    if proc is not None:
        r, g, b = theme.processed_rgb
        fig.add_trace(
            go.Bar(
                x=cats,
                y=np.round(proc[ids], 5).tolist(),
                name="after sampling settings",
                marker={"color": f"rgb({r},{g},{b})"},
                hovertemplate="token %{x}<br>processed p = %{y:.4f}<extra></extra>",
            )
        )
    shown = f"top {len(ids)} of {raw.size} tokens hold {raw[ids].sum():.0%} of the model's probability"
    if proc is not None:
        shown += f" and {proc[ids].sum():.0%} after the sampling settings"
    style_figure(
        fig,
        title=title if title is not None else "Next-token distribution",
        theme=theme,
        barmode="group",
        xaxis={
            "tickmode": "array",
            "tickvals": cats,
            "ticktext": labels,
            "tickfont": {"family": theme.mono_family},
        },
        yaxis={"title": {"text": "probability"}, "rangemode": "tozero"},
        legend={"orientation": "h", "y": 1.02, "yanchor": "bottom", "x": 1.0, "xanchor": "right"},
    )
    fig.add_annotation(
        text=shown,
        xref="paper",
        yref="paper",
        x=0.0,
        y=1.0,
        yanchor="bottom",
        showarrow=False,
        font={"size": 11},
    )
    return fig


def _explorer_label(text: str, max_chars: int = 28) -> str:
    text = "".join(_VISIBLE_WHITESPACE.get(ch, ch) if ch != " " else " " for ch in text)
    if len(text) > max_chars:
        text = "…" + text[-(max_chars - 1) :]
    return html.escape(text or "∅", quote=False)


def _option_label(value: Any, off: Any) -> str:
    return "off" if value is None or value == off else f"{value:g}"


def _bars_with_other(p: np.ndarray, ids: list[int]) -> list[float]:
    """``p`` at ``ids``, then one "(other)" bar with the rest of the mass (rounded for a small figure)."""
    shown = p[ids]
    return np.round(np.append(shown, max(0.0, 1.0 - shown.sum())), 3).tolist()


def _explorer_slider(name: str, labels: list[str], y: float, update) -> dict:
    """One slider of the decoding explorer; ``update(i)`` is the restyle that selecting value i applies."""
    return {
        "active": 0,
        "currentvalue": {"prefix": f"{name}: "},
        "x": 0.0,
        "len": 1.0,
        "y": y,
        "yanchor": "top",
        "pad": {"t": 10, "b": 10},
        "steps": [
            {"label": label, "method": "restyle", "args": [update(i)]} for i, label in enumerate(labels)
        ],
    }


def decoding_explorer_figure(
    logits: Sequence[Any],
    context_labels: Sequence[str],
    tokenizer_or_labels: Any,
    temperatures: Sequence[float] = (0.5, 1.0, 1.5),
    top_ks: Sequence[int | None] = (None, 10, 3),
    top_ps: Sequence[float] = (1.0, 0.9, 0.5),
    *,
    top: int = 12,
    histories: Sequence[Sequence[int]] | None = None,
    title: str | None = None,
    theme: Theme = THEME,
) -> go.Figure:
    """The decoding explorer from precomputed next-token logits: a context dropdown and temperature,
    top-k and top-p sliders that reshape the processed distribution in the browser, with no kernel.

    ``logits[c]`` (V,) is the model's output after context c (labelled ``context_labels[c]``, shown as
    text). Each context shows its ``top`` most likely raw tokens plus an "(other)" bar holding the rest
    of the mass. ``None`` in ``top_ks`` and 1.0 in ``top_ps`` mean "off"; a temperature of 0 is greedy.
    ``histories[c]`` (the context's token ids) only matters for the penalties, which are off here.

    How the four controls compose: each owns one attribute that can hide a processed trace, namely
    ``visible`` (context), trace ``opacity`` (temperature), ``marker.opacity`` and ``textposition``
    (top-k), and the alpha of ``marker.color`` and ``textfont.color`` (top-p), so exactly one processed
    trace is drawn: the one whose four settings match. Trace order: one raw trace per context, then the
    processed traces in ``itertools.product(contexts, temperatures, top_ks, top_ps)`` order.
    """
    n_ctx = len(logits)
    if n_ctx != len(context_labels) or not n_ctx:
        raise ConfigError(f"got {n_ctx} logits rows for {len(context_labels)} context labels")
    grid = list(itertools.product(range(len(temperatures)), range(len(top_ks)), range(len(top_ps))))
    configs = [
        GenerationConfig(temperature=float(temperatures[t]), top_k=top_ks[k], top_p=float(top_ps[p]))
        for t, k, p in grid
    ]
    r, g, b = theme.processed_rgb
    fig = go.Figure()
    ticks: list[list[str]] = []
    processed: list[tuple[int, tuple[int, int, int], list[float]]] = []  # (context, grid point, bars)
    for c, row in enumerate(logits):
        row = torch.as_tensor(_numpy(row), dtype=torch.float64).reshape(-1)
        raw = torch.softmax(row, dim=-1).numpy()
        ids = [int(i) for i in np.argsort(-raw, kind="stable")[: min(top, raw.size)]]
        labels = [token_label(t) for t in _labels_for(tokenizer_or_labels, ids)] + ["(other)"]
        ticks.append(labels)
        fig.add_trace(
            go.Bar(
                x0=0,
                dx=1,
                y=_bars_with_other(raw, ids),
                name="model (raw)",
                customdata=labels,
                marker={"color": "rgba(0,0,0,0)", "line": {"color": theme.raw_color, "width": 1.5}},
                hovertemplate="%{customdata}<br>raw p = %{y:.3f}<extra></extra>",
                visible=c == 0,
                showlegend=False,
            )
        )
        history = [list(histories[c]) if histories is not None else []]
        for point, config in zip(grid, configs):
            processed.append((c, point, _bars_with_other(_probs_from_logits(row, config, history)[1], ids)))

    for c, (t, k, p), y in processed:  # the first value of every control is selected at the start
        fig.add_trace(
            go.Bar(
                x0=0,
                dx=1,
                y=y,
                text=[f"{v:.2f}" if v > 0 else "" for v in y],
                textposition="outside" if k == 0 else "none",
                textfont={"color": f"rgba(34,34,34,{int(p == 0)})"},
                cliponaxis=False,
                opacity=1.0 if t == 0 else 0.0,
                marker={"color": f"rgba({r},{g},{b},{int(p == 0)})", "opacity": 1.0 if k == 0 else 0.0},
                hoverinfo="skip",  # hidden traces must never answer a hover; the raw trace does
                visible=c == 0,
                showlegend=False,
            )
        )

    def per_trace(raw_value: Any, value_of) -> list:
        """One restyle value per trace: a constant for the raw traces, ``value_of(grid point)`` after."""
        return [raw_value] * n_ctx + [value_of(point) for _, point, _ in processed]

    context_menu = {
        "type": "dropdown",
        "active": 0,
        "x": 0.0,
        "xanchor": "left",
        "y": 1.0,
        "yanchor": "bottom",
        "pad": {"b": 12},
        "buttons": [
            {
                "label": _explorer_label(label),
                "method": "update",
                "args": [
                    {"visible": [i == c for i in range(n_ctx)] + [pc == c for pc, _, _ in processed]},
                    {"xaxis.ticktext": ticks[c], "xaxis.tickvals": list(range(len(ticks[c])))},
                ],
            }
            for c, label in enumerate(context_labels)
        ],
    }
    sliders = [
        _explorer_slider(
            "temperature",
            [f"{v:g}" if v > 0 else "0 (greedy)" for v in temperatures],
            -0.18,
            lambda i: {"opacity": per_trace(1.0, lambda pt: float(pt[0] == i))},
        ),
        _explorer_slider(
            "top-k",
            [_option_label(v, None) for v in top_ks],
            -0.48,
            lambda i: {
                "marker.opacity": per_trace(1.0, lambda pt: float(pt[1] == i)),
                "textposition": per_trace("none", lambda pt: "outside" if pt[1] == i else "none"),
            },
        ),
        _explorer_slider(
            "top-p",
            [_option_label(v, 1.0) for v in top_ps],
            -0.78,
            lambda i: {
                "marker.color": per_trace("rgba(0,0,0,0)", lambda pt: f"rgba({r},{g},{b},{int(pt[2] == i)})"),
                "textfont.color": per_trace(
                    "rgba(34,34,34,0)", lambda pt: f"rgba(34,34,34,{int(pt[2] == i)})"
                ),
            },
        ),
    ]
    style_figure(
        fig,
        title=title
        if title is not None
        else "Decoding explorer: the next-token distribution after the context",
        height=780,
        theme=theme,
        barmode="overlay",
        updatemenus=[context_menu],
        sliders=sliders,
        xaxis={
            "tickmode": "array",
            "tickvals": list(range(len(ticks[0]))),
            "ticktext": ticks[0],
            "tickfont": {"family": theme.mono_family},
        },
        yaxis={"title": {"text": "probability"}, "range": [0.0, 1.1]},
        hovermode="closest",
    )
    fig.update_layout(margin={"t": theme.margin[2] + 40, "b": 330})
    fig.add_annotation(
        text="grey outline: the model's own distribution; blue: what sampling draws from",
        xref="paper",
        yref="paper",
        x=1.0,
        y=1.0,
        xanchor="right",
        yanchor="bottom",
        showarrow=False,
        font={"size": 11},
    )
    return fig


def decoding_explorer(
    model: torch.nn.Module,
    tokenizer: Any,
    prompts: Sequence[str],
    steps: int = 2,
    temperatures: Sequence[float] = (0.5, 1.0, 1.5),
    top_ks: Sequence[int | None] = (None, 10, 3),
    top_ps: Sequence[float] = (1.0, 0.9, 0.5),
    *,
    top: int = 12,
    title: str | None = None,
    theme: Theme = THEME,
) -> go.Figure:
    """Precompute next-token distributions for each prompt and each of ``steps`` greedy continuation
    steps, and build :func:`decoding_explorer_figure` over them (interactive with no kernel).

    The figure holds ``len(prompts) * steps * len(temperatures) * len(top_ks) * len(top_ps)`` bar traces
    of ``top + 1`` bars each; the defaults (2 prompts, 2 steps, 3 x 3 x 3) stay well under 300 KB.
    """
    if steps < 1:
        raise ConfigError(f"steps={steps} is not allowed: show at least 1 step per prompt")
    if not prompts:
        raise ConfigError("no prompts given: pass at least one prompt string")
    block = model.config.block_size
    all_logits, labels, histories = [], [], []
    for prompt in prompts:
        ids = tokenizer.encode(prompt) or [tokenizer.bos_id]
        with eval_no_grad(model):
            for _ in range(steps):
                idx = torch.tensor([ids[-block:]], dtype=torch.long, device=model_device(model))
                logits = model(idx).logits[0, -1].float().cpu()
                all_logits.append(logits)
                histories.append(list(ids))
                labels.append(tokenizer.decode(ids[-40:]))
                ids = ids + [int(logits.argmax())]  # continue greedily: the next context
    return decoding_explorer_figure(
        all_logits,
        labels,
        tokenizer,
        temperatures,
        top_ks,
        top_ps,
        top=top,
        histories=histories,
        title=title,
        theme=theme,
    )


# ------------------------------------------------------------------- coloured tokens (HTML, no plotly)


def _hex_to_rgb(color: str) -> tuple[int, int, int]:
    color = color.lstrip("#")
    return int(color[0:2], 16), int(color[2:4], 16), int(color[4:6], 16)


def probability_color(p: float, theme: Theme = THEME) -> str:
    """The background colour of a token with probability ``p``: warm when surprising, cool when expected."""
    p = min(1.0, max(0.0, float(p) if math.isfinite(p) else 0.0))
    stops = [_hex_to_rgb(c) for c in theme.probability_stops]
    pos = p * (len(stops) - 1)
    i = min(int(pos), len(stops) - 2)
    frac = pos - i
    rgb = [round(a + (b - a) * frac) for a, b in zip(stops[i], stops[i + 1])]
    return "#{:02x}{:02x}{:02x}".format(*rgb)


def token_probability_html(
    tokens: Sequence[str],
    probs: Sequence[float],
    top_alternatives: Sequence[Sequence[tuple[str, float]]] | None = None,
    *,
    prompt: str = "",
    legend: bool = True,
    theme: Theme = THEME,
) -> str:
    """Generated text as HTML: each token's background shows its probability, and its hover title lists
    the top alternatives. Every piece of text is ``html.escape``-d: a prompt of
    ``<img src=x onerror=alert(1)>`` shows as those characters.
    """
    if len(tokens) != len(probs):
        raise ConfigError(f"got {len(tokens)} tokens but {len(probs)} probabilities: they must match")
    if top_alternatives is not None and len(top_alternatives) != len(tokens):
        raise ConfigError(f"got {len(top_alternatives)} alternative lists for {len(tokens)} tokens")
    parts = [
        f'<div class="arlm-token-text" style="font-family: {html.escape(theme.mono_family)}; '
        'white-space: pre-wrap; line-height: 1.9; word-break: break-word;">'
    ]
    if prompt:
        parts.append(f'<span class="arlm-prompt" style="font-weight: 600;">{html.escape(prompt)}</span>')
    for i, (token, p) in enumerate(zip(tokens, probs)):
        lines = [f"{_visible(token, 40)}  p = {p:.3f}"]
        if top_alternatives is not None and top_alternatives[i]:
            lines.append("top alternatives:")
            lines += [f"  {_visible(alt, 24)}  {alt_p:.3f}" for alt, alt_p in top_alternatives[i]]
        title = html.escape("\n".join(lines), quote=True)  # the browser un-escapes it once for the tooltip
        parts.append(
            f'<span class="arlm-token" style="background-color: {probability_color(p, theme)}; '
            f'border-radius: 3px; padding: 1px 0; box-shadow: inset -1px 0 #ffffff;" title="{title}">{html.escape(str(token))}</span>'
        )
    parts.append("</div>")
    if legend:
        stops = ", ".join(theme.probability_stops)
        parts.append(
            '<div class="arlm-token-legend" style="font-size: 0.8em; margin-top: 4px;">probability of each '
            'token: 0 <span style="display: inline-block; width: 120px; height: 0.8em; vertical-align: middle; '
            f'background: linear-gradient(to right, {stops});"></span> 1 (hover a token for the alternatives)</div>'
        )
    return "".join(parts)


def generation_html(
    tokenizer: Any,
    generated: Sequence[Any],
    *,
    prompt: str = "",
    processed: bool = True,
    legend: bool = True,
    theme: Theme = THEME,
) -> str:
    """:func:`token_probability_html` for the :class:`~arlm_lib.generate.GeneratedToken` s that
    :func:`~arlm_lib.generate.generate` streamed (``return_top=N`` fills the alternatives).

    ``processed=True`` shows each token's probability under the distribution it was drawn from;
    ``False`` the model's own (raw) probability.
    """
    tokens = [tokenizer.id_to_token(t.token_id) for t in generated]
    probs = [t.prob if processed else t.raw_prob for t in generated]
    alternatives = [
        [(tokenizer.id_to_token(i), p) for i, p in (t.top if processed else t.top_raw)] for t in generated
    ]
    return token_probability_html(tokens, probs, alternatives, prompt=prompt, legend=legend, theme=theme)
