"""The look every figure shares (:class:`Theme`, :func:`style_figure`) and the text and array helpers.

Text that came from a tokenizer or a reader goes through :func:`token_label` before it reaches a plotly
label: plotly renders a small HTML subset, so it must be escaped.
"""

from __future__ import annotations

import functools
import html
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import plotly.graph_objects as go
import torch

# ---------------------------------------------------------------------------------------- the theme


@dataclass(frozen=True)
class Theme:
    """Fonts, colours, margins and sizes shared by every figure: change a view's look in one place."""

    font_family: str = "system-ui, -apple-system, 'Segoe UI', Roboto, Helvetica, Arial, sans-serif"
    mono_family: str = "ui-monospace, SFMono-Regular, Menlo, Consolas, monospace"
    font_size: int = 13
    text_color: str = "#222222"
    grid_color: str = "#e6e6e6"
    # Okabe and Ito's colour-blind-safe palette first (the first four stay apart under every common colour
    # vision deficiency and reach 3:1 contrast on white), then brown, grey and yellow for long legends.
    colorway: tuple[str, ...] = (
        "#0072B2",
        "#D55E00",
        "#009E73",
        "#CC79A7",
        "#E69F00",
        "#56B4E9",
        "#000000",
        "#8C564B",
        "#7F7F7F",
        "#F0E442",
    )
    attention_colorscale: str = "Blues"
    score_colorscale: str = "Viridis"
    raw_color: str = "#9e9e9e"
    processed_rgb: tuple[int, int, int] = (0, 114, 178)  # colorway[0]
    highlight_color: str = "#D55E00"  # colorway[1]
    # Attention cells hidden by the causal mask. Not white: the attention scale's 0 is near-white, and a
    # masked cell must not read as "attended with weight 0".
    masked_color: str = "#cfcfcf"
    # Token colours by probability, low -> high (ColorBrewer RdYlBu, light end: dark text stays legible).
    probability_stops: tuple[str, ...] = ("#f46d43", "#fee090", "#abd9e9")
    margin: tuple[int, int, int, int] = (70, 30, 70, 60)  # left, right, top, bottom (px)
    height: int = 420
    cell_px: int = 22  # heatmap cell size when a figure sizes itself to the number of tokens
    label_chars: int = 12  # longer token labels are cut with an ellipsis
    # The narrowest a figure is drawn: the book's text column is about 690 px wide, and arlm.css keeps a
    # figure at least this wide on a phone (it scrolls sideways). Builders fit their tick labels to it.
    figure_width: int = 600
    # A longer title wraps onto a second line (plotly never wraps a title itself). 48 characters of
    # the title font (about 9.1 px each, from 16 px in) end left of the mode bar (about 110 px at the
    # top right, arlm_lib.display.PLOTLY_CONFIG) in the narrowest figure: it covered a title's end.
    title_chars: int = 48
    title_line_px: int = 24  # the height of one more title line, added to the top margin

    def template(self) -> go.layout.Template:
        """A small plotly template (a few hundred bytes, unlike plotly's default of about 7 KB per figure)."""
        return _template(self)


@functools.lru_cache(maxsize=8)
def _template(theme: Theme) -> go.layout.Template:
    # Building a Template validates every property (~0.15 s): build one per theme, not per figure.
    axis = {
        "gridcolor": theme.grid_color,
        "zeroline": False,
        "automargin": True,
        "linecolor": "#bbbbbb",
        # A log axis labels 2 and 5 between the powers of ten; plotly's default writes them as bare small
        # digits ("2" for 0.2 and for 20 alike). Write the whole number.
        "minorloglabels": "complete",
    }
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
    escaped first (:func:`token_label`). A title longer than ``theme.title_chars`` wraps at a space
    (plotly cuts a long title off at the figure's edge), and the top margin grows by one line for each
    extra line: a builder that needs more room at the top adds to ``fig.layout.margin.t``.
    """
    left, right, top, bottom = theme.margin
    fig.layout.template = theme.template()
    extra_lines = 0
    if title is not None:
        title = wrap_title(title, theme.title_chars)
        extra_lines = title.count("<br>")
    fig.update_layout(
        margin={"l": left, "r": right, "t": top + extra_lines * theme.title_line_px, "b": bottom},
        height=(height or theme.height) + extra_lines * theme.title_line_px,
        **layout,
    )
    if title is not None:
        # At the top left, a few pixels in from the figure's edges (not touching the left edge, and not
        # centred in the top margin, where a second line would run into the menus above the plot).
        fig.update_layout(
            title={
                "text": title,
                "x": 0.0,
                "xanchor": "left",
                "xref": "container",
                "y": 1.0,
                "yanchor": "top",
                "yref": "container",
                # plotly.js 4 sets a title of several lines 12 px higher than one line at the same
                # pad (measured in Chromium: tops at 9 px for one line, -3 px for two or three).
                "pad": {"l": 8, "t": 24 if extra_lines else 12},
            }
        )
    return fig


def wrap_title(title: str, max_chars: int) -> str:
    """``title`` with ``<br>`` at spaces so that no line is longer than ``max_chars`` (where a space allows).

    A title that already holds a ``<br>`` is the author's own layout and stays as it is.
    """
    if len(title) <= max_chars or "<br>" in title:
        return title
    lines: list[str] = []
    line = ""
    for word in title.split(" "):
        if line and len(line) + 1 + len(word) > max_chars:
            lines.append(line)
            line = word
        else:
            line = f"{line} {word}" if line else word
    lines.append(line)
    return "<br>".join(lines)


# ----------------------------------------------------------------------------- text and array helpers

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


def _significant(values: np.ndarray, digits: int = 4) -> list:
    """:func:`_plain` with each value rounded to ``digits`` significant digits (``%{y:.4g}`` in hover).

    A float64 prints with up to 17 digits in the figure's JSON; a long training curve is then mostly
    digits that no reader can see (about 3x the size of the rounded data).
    """
    return [None if v is None else float(f"{v:.{digits}g}") for v in _plain(values)]


def _numpy(x: Any) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        return x.detach().float().cpu().numpy()
    return np.asarray(x, dtype=float)
