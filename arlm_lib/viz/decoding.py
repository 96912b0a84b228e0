"""Next-token distributions, raw and after the decoding knobs, and the decoding explorer.

The explorer has four controls (temperature, top-k, top-p, step) and plotly's controls cannot read each
other, so each one owns a different attribute that can hide a trace (``visible``, trace ``opacity``,
``marker.opacity``, the alpha of ``marker.color``) and a bar shows only where all four agree: a logical
AND computed by the renderer (:func:`decoding_explorer_figure`).
"""

from __future__ import annotations

import html
import itertools
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
import plotly.graph_objects as go
import torch

from ..checks import check_count
from ..data import token_id_list
from ..errors import ConfigError
from ..generate import GenerationConfig, processed_probs
from ..generation.context import eval_no_grad, model_device
from ..generation.sampling import check_config, tokenizer_limit
from .theme import _VISIBLE_WHITESPACE, THEME, Theme, _numpy, style_figure, token_label

# ------------------------------------------------------------------------ next-token distributions


def _labels_for(tokenizer_or_labels: Any, ids: Sequence[int], vocab_size: int) -> list[str]:
    if hasattr(tokenizer_or_labels, "id_to_token"):
        return [tokenizer_or_labels.id_to_token(int(i)) for i in ids]
    if isinstance(tokenizer_or_labels, str) or not isinstance(tokenizer_or_labels, Iterable):
        raise ConfigError(
            f"tokenizer_or_labels must be a tokenizer or a list of labels, one per token id; got "
            f"{type(tokenizer_or_labels).__name__}"
        )
    labels = list(tokenizer_or_labels)
    if len(labels) < vocab_size:
        raise ConfigError(
            f"got {len(labels)} labels for a distribution over {vocab_size} tokens: one per token id"
        )
    return [str(labels[int(i)]) for i in ids]


def _distribution(name: str, values: Any) -> np.ndarray:
    """One next-token distribution (or row of logits) as a 1-D array; ConfigError for a batch of them."""
    if isinstance(values, (str, bytes)):
        raise ConfigError(f"{name} must be an array of numbers, one per token id; got a str")
    try:
        arr = _numpy(values)
    except (TypeError, ValueError) as err:  # a tokenizer where the probabilities belong, say
        raise ConfigError(
            f"{name} must be an array of numbers, one per token id; got {type(values).__name__}"
        ) from err
    if arr.ndim == 2 and arr.shape[0] == 1:
        arr = arr[0]  # the (1, V) of a batch of one
    if arr.ndim != 1:
        raise ConfigError(f"{name} must be one distribution, shape (V,), got shape {arr.shape}: pick one row")
    return arr


def _values(name: str, values: Any) -> list:
    """A slider's values: a list or tuple (a lone number is one value, as a reader means it)."""
    if isinstance(values, (str, bytes)) or not isinstance(values, Iterable):
        return [values]
    values = list(values)
    if not values:
        raise ConfigError(f"{name} is empty: give at least one value")
    return values


def next_token_probs(
    model: torch.nn.Module,
    ids: Sequence[int] | torch.Tensor,
    config: GenerationConfig | None = None,
    *,
    tokenizer: Any = None,
) -> tuple[np.ndarray, np.ndarray]:
    """The model's next-token distribution after ``ids``: (raw softmax, after ``config``'s processors).

    Uses the processors :func:`arlm_lib.generate.generate` samples with; greedy decoding gives a one-hot.
    The context is cropped from the left to the model's ``block_size``. With a ``tokenizer`` whose
    vocabulary is smaller than the model's (a vocabulary padded to a multiple of 64), both arrays cover
    only the ids it can decode, as generation does: the padded ids are never drawn, so they are left out.
    """
    config = check_config(config)
    limit = tokenizer_limit(tokenizer, model.config.vocab_size)
    ids = token_id_list(ids, model.config.vocab_size)
    if not ids:
        raise ConfigError("ids is empty: start from the document-start token (tokenizer.bos_id)")
    window = ids[-model.config.block_size :]
    with eval_no_grad(model):
        idx = torch.tensor([window], dtype=torch.long, device=model_device(model))
        logits = model(idx).logits[:, -1, :].float().cpu()
    return _probs_from_logits(logits[0, :limit], config, [ids])


def _probs_from_logits(
    logits: torch.Tensor, config: GenerationConfig, histories: Sequence[Sequence[int]]
) -> tuple[np.ndarray, np.ndarray]:
    raw = torch.softmax(logits.double(), dim=-1)
    processed = processed_probs(logits[None], histories, config.processors())[0]  # float64, CPU
    if config.greedy:
        processed = torch.zeros_like(processed).scatter_(0, processed.argmax().reshape(1), 1.0)
    return raw.numpy(), processed.numpy()


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
    raw = _distribution("probs", probs)
    proc = None if processed is None else _distribution("processed", processed)
    if proc is not None and proc.shape != raw.shape:
        raise ConfigError(f"processed has shape {proc.shape} but probs has {raw.shape}: they must match")
    top = check_count("top", top)
    # The tokens shown: the most likely before or after the settings (a token they raise is shown too),
    # in the model's order, so that the panels of one context line up whatever the settings did (typical
    # sampling raises mid-probability tokens above the top ones: sorted by either, its panel differed).
    key = raw if proc is None else np.maximum(raw, proc)
    chosen = np.argsort(-key, kind="stable")[: min(top, raw.size)]
    ids = [int(i) for i in chosen[np.argsort(-raw[chosen], kind="stable")]]
    labels = [token_label(t) for t in _labels_for(tokenizer_or_labels, ids, raw.size)]
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
            "title": {"text": "next token (in the model's order)"},
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


#: The height of the explorer's note on its colours (one line of 11 px text), which the context menu
#: clears.
_EXPLORER_NOTE_PX = 18


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
    top = check_count("top", top)
    temperatures = _values("temperatures", temperatures)
    top_ks = _values("top_ks", top_ks)
    top_ps = _values("top_ps", top_ps)
    grid = list(itertools.product(range(len(temperatures)), range(len(top_ks)), range(len(top_ps))))
    configs = [  # greedy (temperature 0) ignores the filters: leave them out rather than be warned
        GenerationConfig(temperature=0.0)
        if temperatures[t] == 0
        else GenerationConfig(temperature=float(temperatures[t]), top_k=top_ks[k], top_p=float(top_ps[p]))
        for t, k, p in grid
    ]
    r, g, b = theme.processed_rgb
    fig = go.Figure()
    ticks: list[list[str]] = []
    processed: list[tuple[int, tuple[int, int, int], list[float]]] = []  # (context, grid point, bars)
    for c, row in enumerate(logits):
        row = torch.as_tensor(_distribution(f"logits[{c}]", row), dtype=torch.float64)
        raw = torch.softmax(row, dim=-1).numpy()
        ids = [int(i) for i in np.argsort(-raw, kind="stable")[: min(top, raw.size)]]
        labels = [token_label(t) for t in _labels_for(tokenizer_or_labels, ids, raw.size)] + ["(other)"]
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
        "name": "context",
        "active": 0,
        "x": 0.0,
        "xanchor": "left",
        "y": 1.0,
        "yanchor": "bottom",
        # Above the note on the colours (a line of 11 px text on the plot's top edge): beside it, the
        # menu covered the note's start in a figure narrower than both side by side.
        "pad": {"b": _EXPLORER_NOTE_PX + 12},
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
    fig.update_layout(margin={"t": fig.layout.margin.t + 40 + _EXPLORER_NOTE_PX, "b": 330})
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
    prompts: str | Sequence[str],
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

    ``prompts``: a list of str, or one str. ``temperatures``, ``top_ks``, ``top_ps``: each slider's
    values (a single number is a slider of one value).

    The figure holds ``len(prompts) * steps * len(temperatures) * len(top_ks) * len(top_ps)`` bar traces
    of ``top + 1`` bars each; the defaults (2 prompts, 2 steps, 3 x 3 x 3) stay well under 300 KB.
    """
    steps = check_count("steps", steps)
    # One str is one prompt, as for generate_text: iterating over it would make each character a prompt.
    prompts = [prompts] if isinstance(prompts, str) else list(prompts)
    if not prompts:
        raise ConfigError("no prompts given: pass at least one prompt string")
    for prompt in prompts:
        if not isinstance(prompt, str):
            raise ConfigError(f"every prompt must be a str, got {type(prompt).__name__} ({prompt!r:.40})")
    block = model.config.block_size
    limit = tokenizer_limit(tokenizer, model.config.vocab_size)  # leave a padded vocabulary's rows out
    all_logits, labels, histories = [], [], []
    for prompt in prompts:
        ids = tokenizer.encode(prompt) or [tokenizer.bos_id]
        with eval_no_grad(model):
            for _ in range(steps):
                idx = torch.tensor([ids[-block:]], dtype=torch.long, device=model_device(model))
                logits = model(idx).logits[0, -1, :limit].float().cpu()
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
