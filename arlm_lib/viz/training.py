"""Training curves (loss, gradient norm, learning rate, throughput) of one run or several, updated live."""

from __future__ import annotations

import html
import math
from collections.abc import Mapping
from typing import Any

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from ..errors import ConfigError
from ..train import History
from .theme import THEME, Theme, _significant, style_figure

# --------------------------------------------------------------------------------- training curves

# (panel row, panel col, column, series label, line style): the order of the traces in the figure.
RUN_SYMBOLS = ("circle", "square", "diamond", "triangle-up", "x", "triangle-down", "cross", "star")
_CURVES = (
    (1, 1, "train_loss", "train loss", {"dash": "solid"}),
    (1, 1, "val_loss", "val loss", {"dash": "dot"}),
    (1, 2, "grad_norm", "grad norm", {"dash": "solid"}),
    (1, 2, "grad_norm_clipped", "grad norm (clipped)", {"dash": "dash"}),
    (2, 1, "lr", "learning rate", {"dash": "solid"}),
    (2, 2, "tokens_per_s", "tokens/s", {"dash": "solid"}),
)
#: Significant digits of every plotted value: what hover shows (``%{y:.4g}``), no more.
_DIGITS = 4
#: The series drawn at a few steps only, with a marker at each one.
_MARKED = frozenset({"val_loss", "grad_norm_clipped"})
#: The series that share a panel with another one (the rest have a panel of their own).
_PAIRED = frozenset({"train_loss", "val_loss", "grad_norm", "grad_norm_clipped"})
# Short enough for a phone's 600 px figure, where two panels share a row. The trainer's losses are nats.
# The throughput is the wall-clock speed of the machine that ran the cell (the book's is a shared build
# machine): its noise is not a difference between runs.
_PANEL_TITLES = ("loss (nats/token)", "grad norm (raw / clipped)", "learning rate", "tokens/s (wall clock)")


def _line_style_key(recorded: set[str]) -> str:
    """The legend's key to the line styles of overlaid runs, naming only the series that were recorded."""
    parts = []
    solid = [
        label
        for name, label in (("train_loss", "train loss"), ("grad_norm", "grad norm"))
        if name in recorded
    ]
    if ("val_loss" in recorded or "grad_norm_clipped" in recorded) and solid:
        parts.append("solid: " + " / ".join(solid))
    if "val_loss" in recorded:
        parts.append("dotted, open markers: val loss")
    if "grad_norm_clipped" in recorded:
        parts.append("dashed: clipped grad norm (where clipping cut it)")
    # One part per line once they would not fit on one: a phone's 600 px figure is narrower than the three.
    return "; ".join(parts) if sum(map(len, parts)) <= 60 else ";<br>".join(parts)


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


def _curves(throughput: bool) -> tuple[tuple, ...]:
    """The entries of ``_CURVES`` a figure draws for each run."""
    return _CURVES if throughput else tuple(c for c in _CURVES if c[2] != "tokens_per_s")


def _curve_data(
    columns: dict[str, np.ndarray], max_points: int, curves: tuple[tuple, ...] = _CURVES
) -> list[tuple[list, list]]:
    """(x, y) for each entry of ``curves``; validation loss only where it was measured."""
    steps = columns["step"]
    out = []
    for _, _, name, _, _ in curves:
        y = columns[name]
        measured = ~np.isnan(y)
        if name == "grad_norm_clipped":
            # Drawn only where clipping cut the norm: elsewhere it equals the raw norm and hid under it.
            raw = columns["grad_norm"]
            y = np.where(measured & ~(y < raw * (1 - 1e-6)), math.nan, y)
        x_m, y_m = (steps[measured], y[measured]) if name == "val_loss" else (steps, y)
        x_m, y_m = _decimate(x_m, y_m, max_points)
        out.append((x_m.astype(int).tolist(), _significant(y_m, _DIGITS)))
    return out


def _spans_a_decade(runs: dict[str, dict[str, np.ndarray]]) -> bool:
    """Whether the loss or the gradient norm of some run spans more than a factor of 10 (a step-0 spike of
    the gradient norm, a loss that falls from 10 to 0.5): on a linear axis the rest is a flat line."""
    for columns in runs.values():
        for names in (("train_loss", "val_loss"), ("grad_norm", "grad_norm_clipped")):
            values = np.concatenate([columns[name] for name in names])
            values = values[np.isfinite(values) & (values > 0)]
            if len(values) and values.max() > 10 * values.min():
                return True
    return False


def training_curves(
    history_or_histories: Any,
    log_y: bool | None = None,
    *,
    title: str | None = None,
    max_points: int = 2000,
    throughput: bool | None = None,
    theme: Theme = THEME,
) -> go.Figure:
    """Loss, gradient norm (before and after clipping), learning rate and tokens/s against the step.

    Takes a :class:`~arlm_lib.train.History`, its ``to_dict()``, or ``{run name: either}`` to overlay
    runs (one colour and legend group per run: a legend click hides a whole run). A "linear / log"
    toggle switches the loss and gradient-norm axes; ``log_y`` sets its start. By default (``None``) the
    axes start logarithmic when a run's loss or gradient norm spans more than a decade, else linear.

    ``throughput`` draws the tokens/s panel: the wall-clock speed of the machine that ran the code, whose
    noise (another job on the machine) is no difference between runs. By default (``None``) it is drawn
    for one run and left out when several runs are compared; the learning rate then spans the bottom row.
    """
    runs = _runs(history_or_histories)
    if log_y is None:
        log_y = _spans_a_decade(runs)
    several = len(runs) > 1
    if throughput is None:
        throughput = not several
    curves = _curves(throughput)
    recorded = _recorded(runs)
    fig = make_subplots(
        rows=2,
        cols=2,
        # Without the throughput panel the learning rate spans the bottom row.
        specs=[[{}, {}], [{}, {}] if throughput else [{"colspan": 2}, None]],
        subplot_titles=_PANEL_TITLES if throughput else _PANEL_TITLES[:3],
        horizontal_spacing=0.1,
        vertical_spacing=0.16,
    )
    for r, (run, columns) in enumerate(runs.items()):
        run_label = html.escape(run)
        color = theme.colorway[r % len(theme.colorway)]
        for i, ((row, col, name, label, line), (x, y)) in enumerate(
            zip(curves, _curve_data(columns, max_points, curves))
        ):
            if several:
                series_color, legend = (
                    color,
                    {"legendgroup": run_label, "showlegend": i == 0, "name": run_label},
                )
            else:
                series_color = theme.colorway[1 if line["dash"] != "solid" else 0]
                legend = {"name": label, "showlegend": _in_single_run_legend(name, recorded)}
            # Several runs differ by colour and by a marker symbol, so that they stay apart for a reader
            # who cannot tell the colours apart; a dozen markers per curve are enough to tell.
            symbol = RUN_SYMBOLS[r % len(RUN_SYMBOLS)] if several else "circle"
            marker: dict[str, Any] = {"size": 5}
            if several:
                marker = {"size": 6, "symbol": symbol, "maxdisplayed": 12}
            if name in _MARKED:
                # Validation runs a few times per run and clipping at a few steps: a dotted or dashed line
                # through 1 to 6 points is not seen. Open markers, each one drawn, tell them from the
                # training curves' filled ones.
                marker = {
                    "size": 8 if name == "val_loss" else 6,
                    "symbol": f"{symbol}-open",
                    "line": {"width": 1.6},
                }
            fig.add_trace(
                go.Scatter(
                    x=x,
                    y=y,
                    mode="lines+markers" if (several or name in _MARKED) else "lines",
                    line={**line, "color": series_color, "width": 2.0 if name in _MARKED else 1.6},
                    marker=marker,
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
        "name": "y axis",
        "direction": "right",
        "active": 1 if log_y else 0,
        "x": 1.0,
        "xanchor": "right",
        "y": 1.0,
        "yanchor": "bottom",
        "pad": {"b": 30},
        "buttons": [
            {"label": "linear", "method": "relayout", "args": [linear_axes]},
            {"label": "log", "method": "relayout", "args": [log_axes]},
        ],
    }
    legend: dict[str, Any] = {"orientation": "h", "y": -0.2, "yanchor": "top", "x": 0.0}
    if several:
        # The line-style key heads the legend, so the legend's rows can wrap without covering it.
        key = _line_style_key(recorded)
        if key:
            legend["title"] = {"text": key, "side": "top", "font": {"size": 11}}
    style_figure(
        fig,
        title=title if title is not None else "Training curves",
        height=640,
        theme=theme,
        updatemenus=[toggle],
        hovermode="closest",
        legend=legend,
    )
    fig.update_layout(yaxis_type="log" if log_y else "linear", yaxis2_type="log" if log_y else "linear")
    # Room between the title (pinned to the top) and the panels for the linear/log toggle.
    fig.update_layout(margin={"t": fig.layout.margin.t + 50, "b": theme.margin[3] + 60})
    for c in (1, 2) if throughput else (1,):
        fig.update_xaxes(title_text="step", row=2, col=c)
    return fig


def update_training_curves(fig: go.Figure, history_or_histories: Any, *, max_points: int = 2000) -> None:
    """Refresh the curves of a :func:`training_curves` figure in place (a FigureWidget too) with new data.

    The runs must be the ones the figure was built from (same names, same order).
    """
    runs = _runs(history_or_histories)
    # A figure drawn without the throughput panel has one trace fewer per run.
    curves = _curves(len(fig.data) != len(runs) * (len(_CURVES) - 1))
    data = [xy for columns in runs.values() for xy in _curve_data(columns, max_points, curves)]
    if len(data) != len(fig.data):
        raise ConfigError(
            f"the figure has {len(fig.data)} traces but {len(runs)} run(s) need {len(data)}: rebuild it "
            "with training_curves()"
        )
    recorded = _recorded(runs)
    with fig.batch_update():
        for i, (trace, (x, y)) in enumerate(zip(fig.data, data)):
            trace.x, trace.y = x, y
            if len(runs) == 1:  # a live run: a series gets its legend entry once it has data
                trace.showlegend = _in_single_run_legend(curves[i][2], recorded)


def _recorded(runs: dict[str, dict]) -> set[str]:
    """The series some run recorded: a legend entry or key for a series with no data names nothing."""
    return {name for columns in runs.values() for name in columns if np.isfinite(columns[name]).any()}


def _in_single_run_legend(name: str, recorded: set[str]) -> bool:
    """Only the two panels that hold two series need a legend (their panel titles name the others): six
    entries in two colours read as six different things."""
    return name in recorded and name in _PAIRED
