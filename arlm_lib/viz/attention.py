"""Attention weights and their views: a heatmap, a figure with layer / head selectors, a grid, bars.

plotly's controls are independent (a button cannot read another control's value), so the layer and head
dropdowns compose by rewriting each other's buttons (``_linked_menus``).
"""

from __future__ import annotations

import html
import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import plotly.graph_objects as go
import torch
from plotly.subplots import make_subplots

from ..checks import check_count, is_int
from ..data import token_id_list
from ..errors import ConfigError
from ..generation.context import eval_no_grad, model_device
from .theme import (
    THEME,
    Theme,
    _as_tokens,
    _numpy,
    _plain,
    _round,
    _unique_categories,
    style_figure,
    token_label,
)

# ----------------------------------------------------------------------------------- attention data


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
    if not is_int(batch_index) or not 0 <= batch_index < arr.shape[1]:
        raise ConfigError(
            f"batch_index={batch_index!r} is out of range: the batch has {arr.shape[1]} sequences"
        )
    return arr[:, batch_index]


def model_attention(model: torch.nn.Module, ids: Sequence[int] | torch.Tensor) -> np.ndarray:
    """Run ``model`` on one sequence of token ids; return its attention weights as (L, H, T, T).

    The model runs in eval mode without autograd (its previous mode is restored).
    """
    ids = token_id_list(ids, model.config.vocab_size)
    idx = torch.tensor([ids], dtype=torch.long, device=model_device(model))
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
    # is_int: a float or str would fail inside numpy's indexing, and True would add an axis.
    if not is_int(index) or not -arr.shape[0] <= index < arr.shape[0]:
        raise ConfigError(f"{name}={index!r} is out of range: there are {arr.shape[0]} {name}s")
    return arr[index], [*caption, f"{name} {index % arr.shape[0]}"]


def _check_index(name: str, value: int, size: int) -> int:
    """``value`` as a Python int (plotly refuses numpy's in a menu's ``active``), or ConfigError."""
    # is_int, not isinstance(value, int): np.int64(1) from an argmax over scores is a fine layer.
    if not is_int(value) or not 0 <= value < size:
        raise ConfigError(f"{name}={value!r} is out of range: it must be an integer in 0..{size - 1}")
    return int(value)


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


# Room a heatmap's colour bar and its title take beside the plot (measured: about 120 px).
_COLORBAR_PX = 120
# Smallest tick font for token labels: below it labels are thinned out instead (hover shows every token).
_MIN_TICK_FONT = 9


def _label_px(labels: list[str], size: float, across: bool) -> float:
    """Pixels a token label needs along its axis at font ``size`` (monospace: 0.6 em per character).

    Across (x axis): the widest label, but plotly turns crowded labels of several characters on their
    side, so at most a line's height (single characters stay upright: :func:`_token_ticks`).
    Down (y axis): a line of lowercase characters, whose glyphs are shorter than the line.
    """
    if not across:
        return 0.85 * size + 1
    return min(_widest(labels) * 0.6 * size, 1.25 * size) + 2


def _widest(labels: list[str]) -> int:
    """Characters in the longest label, as shown (HTML entities count as one)."""
    return max((len(html.unescape(label)) for label in labels), default=1)


def _token_ticks(
    categories: list[str], labels: list[str], cell_px: float, across: bool, theme: Theme
) -> dict[str, Any]:
    """Tick values, texts and font for a token axis whose cells are ``cell_px`` wide (or tall).

    The largest font, from the theme's down to ``_MIN_TICK_FONT``, at which every label fits its cell
    with a little padding. At the smallest font the labels may touch (a monospace glyph's advance holds
    its own side bearings, so touching labels read like monospace text): every token keeps its label,
    so that a reader can find a column, until even that is too large; only then is every k-th token
    labelled, since labels that overlap cannot be read.
    """
    size = theme.font_size
    while size > _MIN_TICK_FONT and _label_px(labels, size, across) > cell_px:
        size -= 1
    need = _label_px(labels, size, across)
    if need > cell_px:
        need -= 2 if across else 1  # the padding _label_px adds
    stride = max(1, math.ceil(need / max(cell_px, 1e-9) - 1e-9))
    ticks = {
        "tickmode": "array",
        "tickvals": categories[::stride],
        "ticktext": labels[::stride],
        "tickfont": {"family": theme.mono_family, "size": size},
    }
    if across and _widest(labels) <= 1:
        # Single characters fit their cells upright (sized above); plotly's own test, with its padding,
        # turned them on their side in a phone's 600 px figure, where sideways letters are hard to read.
        ticks["tickangle"] = 0
    return ticks


def _axes_for_tokens(
    labels: list[str],
    n_q: int,
    show_ticks: bool = True,
    *,
    plot_px: tuple[float, float] | None = None,
    theme: Theme = THEME,
) -> tuple[dict, dict]:
    """The key (x) and query (y) axes of an attention heatmap over ``labels``.

    ``plot_px``: the plot area's (width, height) in pixels at the book's narrowest figure width, to
    which the tick labels are fitted (:func:`_token_ticks`); ``None`` labels every token.
    """
    keys = _unique_categories(labels)
    queries = keys[len(keys) - n_q :]
    q_labels = labels[len(labels) - n_q :]
    if plot_px is None:
        x_ticks = {
            "tickmode": "array",
            "tickvals": keys,
            "ticktext": labels,
            "tickfont": {"family": theme.mono_family},
        }
        y_ticks = {**x_ticks, "tickvals": queries, "ticktext": q_labels}
    else:
        width, height = plot_px
        x_ticks = _token_ticks(keys, labels, width / max(len(keys), 1), True, theme)
        y_ticks = _token_ticks(queries, q_labels, height / max(n_q, 1), False, theme)
    xaxis = {
        "title": {"text": "key (attended to)"},
        **x_ticks,
        "showticklabels": show_ticks,
        "showgrid": False,
    }
    yaxis = {
        "title": {"text": "query (attending)"},
        **y_ticks,
        "showticklabels": show_ticks,
        "autorange": "reversed",  # the first token on top, as in a matrix
        "showgrid": False,
    }
    return xaxis, yaxis


def _heatmap_plot_px(height: int, top: int, theme: Theme, cols: int = 1) -> tuple[float, float]:
    """A heatmap panel's plot area (width, height) at the book's narrowest figure width."""
    left, right, _, bottom = theme.margin
    width = (theme.figure_width - left - right - _COLORBAR_PX) / cols
    return width, height - top - bottom - 2 * theme.font_size  # the key labels take a line


def _attention_colors(cmax: float, masked: bool, theme: Theme) -> dict[str, Any]:
    """The layout of an attention heatmap's colours: one scale from 0 to ``cmax`` for every trace, and
    the cells the causal mask hides (gaps, drawn in the plot background) in grey, not in the white of
    the scale's 0: a masked key is not a key attended with weight 0."""
    title = "weight<br>grey: masked" if masked else "weight"
    layout: dict[str, Any] = {
        "coloraxis": {
            "colorscale": theme.attention_colorscale,
            "cmin": 0.0,
            "cmax": cmax,
            "colorbar": {"title": {"text": title}},
        }
    }
    if masked:
        layout["plot_bgcolor"] = theme.masked_color
    return layout


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
    height = _auto_height(w.shape[0], theme)
    xaxis, yaxis = _axes_for_tokens(
        labels, w.shape[0], plot_px=_heatmap_plot_px(height, theme.margin[2], theme), theme=theme
    )
    keys = _unique_categories(labels)
    queries = keys[len(keys) - w.shape[0] :]
    fig = go.Figure(
        _attention_trace(w, keys, queries, decimals=decimals, mask_future=mask_future, theme=theme)
    )
    style_figure(
        fig,
        title=title if title is not None else f"Attention weights{f' ({caption})' if caption else ''}",
        height=height,
        theme=theme,
        xaxis=xaxis,
        yaxis=yaxis,
        **_attention_colors(zmax or float(w.max() or 1.0), mask_future, theme),
    )
    return fig


def _menu_visibility(n_traces: int, index: int) -> list[bool]:
    return [i == index for i in range(n_traces)]


def _menu_buttons(
    n_traces: int, labels: list[str], n_other: int, other_menu: int, pick, other_active: int
) -> list[dict]:
    """One menu's buttons: button ``own`` shows trace ``pick(own, other_active)`` and rewrites each button
    ``other`` of menu ``other_menu`` to show ``pick(own, other)``."""
    buttons = []
    for own, label in enumerate(labels):
        rewrite = {
            f"updatemenus[{other_menu}].buttons[{other}].args[0].visible": _menu_visibility(
                n_traces, pick(own, other)
            )
            for other in range(n_other)
        }
        shown = _menu_visibility(n_traces, pick(own, other_active))
        buttons.append({"label": label, "method": "update", "args": [{"visible": shown}, rewrite]})
    return buttons


def _linked_menus(
    n_a: int,
    n_b: int,
    trace_index,
    labels_a: list[str],
    labels_b: list[str],
    active: tuple[int, int],
    names: tuple[str, str] = ("menu A", "menu B"),
) -> list[dict]:
    """Two dropdowns (A, B) that select trace ``trace_index(a, b)`` together.

    ``names`` label the menus' keyboard controls in the book (``book/_static/arlm-figures.js``).

    A plotly button cannot read the other menu's value, so each button, besides showing its trace, also
    rewrites the other menu's buttons for its own value: after "A = a", button "B = b" shows (a, b).
    """
    n_traces = n_a * n_b
    a0, b0 = active
    buttons_a = _menu_buttons(n_traces, labels_a, n_b, 1, trace_index, b0)
    buttons_b = _menu_buttons(n_traces, labels_b, n_a, 0, lambda b, a: trace_index(a, b), a0)
    common = {"type": "dropdown", "direction": "down", "showactive": True, "y": 1.0, "yanchor": "bottom"}
    # Menu B starts a fixed number of pixels after menu A's start (pad.l), past A's widest label: a
    # fraction of the plot's width (x) puts them on top of each other in a narrow figure.
    a_px = _menu_px(labels_a) + 10
    return [
        {
            **common,
            "name": names[0],
            "buttons": buttons_a,
            "active": a0,
            "x": 0.0,
            "xanchor": "left",
            "pad": {"b": 10},
        },
        {
            **common,
            "name": names[1],
            "buttons": buttons_b,
            "active": b0,
            "x": 0.0,
            "xanchor": "left",
            "pad": {"b": 10, "l": a_px},
        },
    ]


def _menu_px(labels: list[str], font_size: int = THEME.font_size) -> int:
    """A generous width in pixels of a plotly dropdown showing ``labels``: the widest label at about
    0.62 em per character, plus the box's padding and its arrow (measured: 114 px for "layer 3")."""
    return int(max((len(html.unescape(label)) for label in labels), default=1) * 0.62 * font_size + 70)


# Room above the plot for the layer and head menus.
_MENU_ROOM_PX = 50


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
    layer = _check_index("layer", layer, n_layer)
    head = _check_index("head", head, n_head + 1)
    labels = [token_label(t) for t in _as_tokens(tokens)]
    _check_tokens(labels, n_k)
    height = _auto_height(n_q, theme, extra=220)
    xaxis, yaxis = _axes_for_tokens(
        labels, n_q, plot_px=_heatmap_plot_px(height, theme.margin[2] + _MENU_ROOM_PX, theme), theme=theme
    )
    keys = _unique_categories(labels)
    queries = keys[len(keys) - n_q :]
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
        names=("layer", "head"),
    )
    style_figure(
        fig,
        title=title if title is not None else "Attention weights: pick a layer and a head",
        height=height,
        theme=theme,
        xaxis=xaxis,
        yaxis=yaxis,
        updatemenus=menus,
        **_attention_colors(float(arr.max() or 1.0), True, theme),
    )
    fig.update_layout(margin={"t": fig.layout.margin.t + _MENU_ROOM_PX})
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
    layer = _check_index("layer", layer, n_layer)
    labels = [token_label(t) for t in _as_tokens(tokens)]
    _check_tokens(labels, n_k)
    layers = range(n_layer) if controls else [layer]
    cols = min(check_count("cols", cols, why=" (heads per row)"), n_head)
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
    panel_px = 150 if show_ticks else 120
    height = int(rows * panel_px * max(1.0, n_q / 12) ** 0.5 + 200)
    top = theme.margin[2] + (60 if controls else 20)
    plot_w, plot_h = _heatmap_plot_px(height, top, theme, cols)
    xaxis, yaxis = _axes_for_tokens(labels, n_q, show_ticks, plot_px=(plot_w, plot_h / rows), theme=theme)
    keys = _unique_categories(labels)
    queries = keys[len(keys) - n_q :]
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
                "name": "layer",
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
    style_figure(
        fig,
        title=title
        if title is not None
        else (f"All heads of layer {layer}" if not controls else "All heads"),
        height=height,
        theme=theme,
        updatemenus=updatemenus,
        **_attention_colors(float(arr.max() or 1.0), True, theme),
    )
    fig.update_layout(margin={"t": fig.layout.margin.t + (60 if controls else 20)})
    return fig


# plotly.js's slider: the room between a step's label and the next (labelPadding) and the inset of the
# first and last steps from the slider's ends (stepInset).
_SLIDER_LABEL_PAD_PX = 8
_SLIDER_INSET_PX = 10


def _slider_thins_labels(labels: list[str], theme: Theme) -> bool:
    """Whether plotly would label only every k-th step of a slider over ``labels`` in the book's
    narrowest figure (it thins labels wider than a step's spacing, with its padding)."""
    if len(labels) < 2:
        return False
    width = theme.figure_width - theme.margin[0] - theme.margin[1] - 2 * _SLIDER_INSET_PX
    # The labels are in the proportional font, and the whitespace symbols (␣ ↵) come from a fallback font
    # about 1 em wide: count 1 em per character.
    label_px = _widest(labels) * theme.font_size + _SLIDER_LABEL_PAD_PX
    return label_px > width / (len(labels) - 1)


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
    if not is_int(query_index) or not 0 <= query_index < n_q:
        raise ConfigError(f"query_index={query_index!r} is out of range: there are {n_q} query tokens")
    keys = _unique_categories(labels)

    def row(q: int) -> tuple[list, str]:
        y = _round(w[q].astype(float), decimals).tolist()
        head_text = f"Attention from query {keys[offset + q]}"
        return y, head_text + (f" ({caption})" if caption else "")

    def highlight(q: int, y: list) -> dict[str, float]:
        """Where the query's own bar is: a rectangle drawn over it in the highlight colour."""
        k = offset + q
        return {"x0": k - 0.4, "x1": k + 0.4, "y1": y[k]}

    # One bar colour, and the query's own bar covered by a highlight rectangle (a layout shape) that
    # each slider step moves with 3 numbers. Colouring bars by an array of 0/1 flags through a
    # colorscale made plotly.js 4 log "Invalid color specifier" once per bar on every page load.
    y0, title0 = row(query_index)
    fig = go.Figure(
        go.Bar(
            x=keys,
            y=y0,
            marker={"color": theme.colorway[0]},
            hovertemplate="key %{x}<br>weight %{y:.3f}<extra></extra>",
            name="attention",
        )
    )
    fig.add_shape(
        type="rect",
        xref="x",
        yref="y",
        y0=0.0,
        fillcolor=theme.highlight_color,
        line={"width": 0},
        layer="above",
        **highlight(query_index, y0),
    )
    sliders = []
    if controls:
        steps = []
        for q in range(n_q):
            y, text = row(q)
            layout_update = {"title.text": text, **{f"shapes[0].{k}": v for k, v in highlight(q, y).items()}}
            steps.append(
                {
                    "label": labels[offset + q],
                    "method": "update",
                    "args": [{"y": [y]}, layout_update],
                }
            )
        slider: dict[str, Any] = {
            "active": query_index,
            "steps": steps,
            "currentvalue": {"prefix": "query token: "},
            "pad": {"t": 70},
            "len": 1.0,
        }
        if _slider_thins_labels(labels[offset:], theme):
            # plotly labels every k-th step where the labels do not fit, so most tokens had no label and
            # the others sat between steps. The step labels are drawn transparent; the readout above the
            # slider (and the title) name the current query token.
            slider["font"] = {"color": "rgba(0,0,0,0)"}
            slider["currentvalue"]["font"] = {"color": theme.text_color}
        sliders = [slider]
    style_figure(
        fig,
        title=title if title is not None else title0,
        height=theme.height + (90 if controls else 0),
        theme=theme,
        sliders=sliders,
        xaxis={
            **_token_ticks(
                keys, labels, (theme.figure_width - theme.margin[0] - theme.margin[1]) / n_k, True, theme
            ),
            "title": {"text": "key (attended to)"},
        },
        yaxis={"title": {"text": "attention weight"}, "range": [0.0, 1.0]},
        showlegend=False,
    )
    return fig
