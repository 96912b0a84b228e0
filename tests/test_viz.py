"""Figure builders: the data they plot is the model's, their offline controls compose, and text is escaped.

The figures' dropdowns and sliders run in the browser; :func:`apply_control` replays what plotly.js does
when one is clicked (``restyle`` / ``relayout`` / ``update`` with nested attribute paths), so these tests
check the composed state of several controls without a browser. ``tests/test_browser.py`` clicks them
for real on the built book.
"""

from __future__ import annotations

import copy
import dataclasses
import itertools
import json
import math
import re
from html.parser import HTMLParser

import numpy as np
import pytest
import torch

from arlm_lib import viz
from arlm_lib.errors import ConfigError, DataError, GenerationError
from arlm_lib.generate import GeneratedToken, GenerationConfig, processed_probs
from arlm_lib.model import GPT, GPTConfig
from arlm_lib.tokenizers import CharTokenizer
from arlm_lib.train import History

XSS = "<img src=x onerror=alert(1)>"
TEXT = "the cat sat on the mat. " + XSS + "\n"


@pytest.fixture(scope="module")
def tokenizer() -> CharTokenizer:
    return CharTokenizer.train(TEXT)


@pytest.fixture(scope="module")
def model(tokenizer) -> GPT:
    torch.manual_seed(0)
    config = GPTConfig(vocab_size=tokenizer.vocab_size, block_size=48, n_layer=2, n_head=3, n_embd=24)
    model = GPT(config).eval()
    with torch.no_grad():  # sharper logits than at init, so sampling settings visibly matter
        model.lm_head.weight.mul_(40.0)
    return model


@pytest.fixture(scope="module")
def sample(model, tokenizer):
    ids = tokenizer.encode("the cat sat")
    with torch.no_grad():
        attentions = model(torch.tensor([ids]), return_attention=True).attentions
    return ids, [tokenizer.id_to_token(i) for i in ids], attentions


# ------------------------------------------------------------------- replaying plotly.js controls

_SEGMENT = re.compile(r"([^.\[\]]+)|\[(\d+)\]")


def _path(key: str) -> list:
    return [name if name else int(index) for name, index in _SEGMENT.findall(key)]


def _set(obj, key: str, value) -> None:
    parts = _path(key)
    for part in parts[:-1]:
        if isinstance(part, int):
            obj = obj[part]
        else:
            obj = obj.setdefault(part, {})
    obj[parts[-1]] = copy.deepcopy(value)


def apply_control(fig: dict, control: dict) -> None:
    """Apply a button or slider step the way plotly.js does (restyle arrays go one value per trace)."""
    method, args = control["method"], control["args"]
    trace_update, layout_update = {}, {}
    if method == "restyle":
        trace_update = args[0]
    elif method == "relayout":
        layout_update = args[0]
    elif method == "update":
        trace_update, layout_update = args[0], (args[1] if len(args) > 1 else {})
    for key, value in trace_update.items():
        for i, trace in enumerate(fig["data"]):
            _set(trace, key, value[i % len(value)] if isinstance(value, list) else value)
    for key, value in layout_update.items():
        _set(fig["layout"], key, value)


def click_menu(fig: dict, menu: int, button: int) -> None:
    apply_control(fig, fig["layout"]["updatemenus"][menu]["buttons"][button])


def move_slider(fig: dict, slider: int, step: int) -> None:
    apply_control(fig, fig["layout"]["sliders"][slider]["steps"][step])


def as_dict(fig) -> dict:
    return json.loads(fig.to_json())


def visible_traces(fig: dict) -> list[int]:
    return [i for i, t in enumerate(fig["data"]) if t.get("visible", True) is True]


def lower_triangle(z) -> np.ndarray:
    """A heatmap's z with the blank (None) future cells as NaN."""
    return np.array([[math.nan if v is None else v for v in row] for row in z], dtype=float)


# ------------------------------------------------------------------------------------- attention


def test_heatmap_plots_the_models_weights_with_unique_escaped_labels(model, tokenizer, sample):
    ids, tokens, attentions = sample
    fig = viz.attention_heatmap(attentions, tokens, layer=1, head=2, decimals=None)
    expected = attentions[1][0, 2].numpy()
    z = lower_triangle(fig.data[0].z)
    T = len(ids)
    assert z.shape == (T, T)
    lower = np.tril(np.ones((T, T), dtype=bool))
    np.testing.assert_allclose(z[lower], expected[lower], rtol=0, atol=1e-6)
    assert np.isnan(z[~lower]).all()  # the causal mask's cells are blank, not zero
    # Repeated tokens ("t", " ") still get distinct categories, and the ticks show the token text.
    assert len(set(fig.data[0].x)) == T and len(set(fig.data[0].y)) == T
    assert list(fig.layout.xaxis.ticktext) == [viz.token_label(t) for t in tokens]
    assert "␣" in fig.layout.xaxis.ticktext  # spaces are visible
    assert "query %{y}" in fig.data[0].hovertemplate and "key %{x}" in fig.data[0].hovertemplate


def test_heatmap_from_model_attention_helper_and_head_mean(model, sample):
    ids, tokens, attentions = sample
    arr = viz.model_attention(model, ids)
    assert arr.shape == (2, 3, len(ids), len(ids))
    np.testing.assert_allclose(arr[0], attentions[0][0].numpy(), atol=1e-6)
    fig = viz.attention_heatmap(arr, tokens, layer=0, head=None, decimals=None)
    z = lower_triangle(fig.data[0].z)
    mean = arr[0].mean(axis=0)
    np.testing.assert_allclose(z[np.tril_indices(len(ids))], mean[np.tril_indices(len(ids))], atol=1e-6)
    assert "mean over heads" in fig.layout.title.text


def test_attention_figure_layer_and_head_menus_compose(sample):
    ids, tokens, attentions = sample
    fig = as_dict(viz.attention_figure(attentions, tokens, decimals=None))
    n_layer, n_head = 2, 3
    assert len(fig["data"]) == n_layer * (n_head + 1)
    assert visible_traces(fig) == [0]
    layer, head = 0, 0
    # Click the menus in every order: each click must keep the other menu's choice.
    for menu, choice in [(1, 2), (0, 1), (1, 0), (0, 0), (1, 3), (0, 1), (0, 0), (1, 1), (1, 2), (0, 1)]:
        click_menu(fig, menu, choice)
        layer, head = (choice, head) if menu == 0 else (layer, choice)
        shown = visible_traces(fig)
        assert shown == [layer * (n_head + 1) + head]
        z = lower_triangle(fig["data"][shown[0]]["z"])
        expected = attentions[layer][0].mean(0) if head == n_head else attentions[layer][0, head]
        idx = np.tril_indices(len(ids))
        np.testing.assert_allclose(z[idx], expected.numpy()[idx], atol=1e-6)


def test_attention_grid_has_one_panel_per_head_and_a_layer_menu(sample):
    ids, tokens, attentions = sample
    fig = as_dict(viz.attention_grid(attentions, tokens, layer=1, decimals=None))
    assert len(fig["data"]) == 2 * 3
    assert visible_traces(fig) == [3, 4, 5]
    assert [t["xaxis"] for t in fig["data"][3:]] == ["x", "x2", "x3"]  # one subplot per head
    click_menu(fig, 0, 0)
    assert visible_traces(fig) == [0, 1, 2]
    z = lower_triangle(fig["data"][1]["z"])
    np.testing.assert_allclose(np.nan_to_num(z), attentions[0][0, 1].numpy(), atol=1e-6)
    assert len(viz.attention_grid(attentions, tokens, layer=1, controls=False).data) == 3


def test_token_attention_bars_highlight_the_query_with_a_shape_not_a_colour_array(sample):
    """One bar colour and a highlight rectangle that each slider step moves with a few numbers.

    0/1 colour flags through a colorscale made plotly.js log "Invalid color specifier" once per bar.
    """
    ids, tokens, attentions = sample
    fig = as_dict(viz.token_attention_bars(attentions, tokens, query_index=2, layer=0, head=1))
    marker = fig["data"][0]["marker"]
    assert isinstance(marker["color"], str) and "colorscale" not in marker
    (shape,) = fig["layout"]["shapes"]
    assert shape["fillcolor"] == viz.THEME.highlight_color and shape["xref"] == "x"
    assert shape["x0"] < 2 < shape["x1"] and shape["y1"] == fig["data"][0]["y"][2]
    for step in fig["layout"]["sliders"][0]["steps"]:
        assert set(step["args"][0]) == {"y"}  # the bars' data, no colours
        assert {k for k in step["args"][1] if k.startswith("shapes")} == {
            "shapes[0].x0",
            "shapes[0].x1",
            "shapes[0].y1",
        }


def test_token_attention_bars_slider_steps_hold_each_query_row(sample):
    ids, tokens, attentions = sample
    fig = as_dict(viz.token_attention_bars(attentions, tokens, query_index=2, layer=0, head=1, decimals=None))
    weights = attentions[0][0, 1].numpy()
    np.testing.assert_allclose(fig["data"][0]["y"], weights[2], atol=1e-6)
    steps = fig["layout"]["sliders"][0]["steps"]
    assert len(steps) == len(ids)
    move_slider(fig, 0, 7)
    np.testing.assert_allclose(fig["data"][0]["y"], weights[7], atol=1e-6)
    shape = fig["layout"]["shapes"][0]
    assert shape["x0"] < 7 < shape["x1"]  # the query's own position is highlighted ...
    assert shape["y1"] == pytest.approx(weights[7, 7], abs=1e-6)  # ... up to its own weight
    assert len({tuple(s["args"][0]["y"][0]) for s in steps}) == len(ids)


def _label_overlap(ticktext: list[str], tickfont: dict, cell_px: float, stride: int) -> float:
    """How far one monospace tick label is wider than the room between two labels (> 0: overlap)."""
    size = tickfont.get("size", viz.THEME.font_size)
    return 0.6 * size * max(len(t) for t in ticktext) - stride * cell_px


def test_long_sequences_get_tick_labels_that_do_not_overlap():
    """68 character tokens (the book's copy sentence) in a ~380 px wide heatmap: every label at 13 px
    overlapped its neighbours. The labels shrink, then thin out; a short text keeps all at full size."""
    theme = viz.THEME
    for n in (8, 46, 68, 120):
        tokens = [chr(ord("a") + i % 26) for i in range(n)]
        weights = np.tril(np.ones((n, n))) / np.arange(1, n + 1)[:, None]
        for fig in (
            viz.attention_heatmap(weights, tokens),
            viz.attention_figure(weights[None, None], tokens),
        ):
            xaxis, yaxis = fig.layout.xaxis, fig.layout.yaxis
            stride = n // len(xaxis.ticktext) if len(xaxis.ticktext) < n else 1
            width = theme.figure_width - theme.margin[0] - theme.margin[1] - 120
            assert (
                _label_overlap(list(xaxis.ticktext), xaxis.tickfont.to_plotly_json(), width / n, stride) <= 0
            )
            plot_h = fig.layout.height - fig.layout.margin.t - fig.layout.margin.b - 2 * theme.font_size
            y_size = yaxis.tickfont.size or theme.font_size
            assert 0.85 * y_size <= plot_h / n * (n / len(yaxis.ticktext)), (n, y_size)
            assert xaxis.tickfont.size >= 9 and y_size >= 9  # legible, if small
            if n <= 8:
                assert list(xaxis.ticktext) == tokens and xaxis.tickfont.size == theme.font_size
            else:
                assert len(xaxis.ticktext) < n or xaxis.tickfont.size < theme.font_size
            # Every token still has its own cell: hover names each one.
            assert len(fig.data[0].x) == n


def test_single_character_key_labels_stay_upright_and_longer_ones_may_turn():
    """In a phone's 600 px figure plotly laid 46 one-character labels on their side, where letters are
    hard to read, although they fit their cells upright; labels of whole words may still turn."""
    n = 46
    weights = np.tril(np.ones((n, n))) / np.arange(1, n + 1)[:, None]
    chars = [chr(ord("a") + i % 26) for i in range(n - 2)] + ["&", "<"]  # escaped for HTML: still one
    for fig in (viz.attention_heatmap(weights, chars), viz.attention_figure(weights[None, None], chars)):
        assert fig.layout.xaxis.tickangle == 0
        assert fig.layout.yaxis.tickangle is None  # query labels lie along the rows anyway
    words = [f"w{i}" for i in range(n)]
    assert viz.attention_heatmap(weights, words).layout.xaxis.tickangle is None


def test_attention_figure_head_menu_starts_past_the_layer_menu_at_any_width(sample):
    """The head menu sat at 22% of the plot's width: on the layer menu itself in a narrow figure."""
    ids, tokens, attentions = sample
    layer_menu, head_menu = viz.attention_figure(attentions, tokens).layout.updatemenus
    assert layer_menu.x == head_menu.x == 0.0 and layer_menu.xanchor == head_menu.xanchor == "left"
    widest = max(len(b.label) for b in layer_menu.buttons)
    # "layer 3" measured 114 px wide in Chromium: the offset must clear it, whatever the figure width.
    assert head_menu.pad.l >= 114 * widest / len("layer 3")


def test_long_titles_wrap_and_push_the_plot_down_instead_of_being_cut_off():
    """plotly cuts a long title at the figure's edge; a figure at least 600 px wide holds ~64 characters."""
    import plotly.graph_objects as go

    long = "Which forecast does each score prefer? (dotted: its optimum; dashed: the true distribution)"
    fig = viz.style_figure(go.Figure(), title=long, height=400)
    lines = fig.layout.title.text.split("<br>")
    assert len(lines) == 2 and " ".join(lines) == long
    assert all(len(line) <= viz.THEME.title_chars for line in lines)
    assert fig.layout.margin.t == viz.THEME.margin[2] + viz.THEME.title_line_px
    assert fig.layout.height == 400 + viz.THEME.title_line_px  # the plot keeps its height
    assert fig.layout.title.yanchor == "top" and fig.layout.title.pad.l > 0  # off the figure's edge
    assert fig.layout.title.pad.t > viz.style_figure(go.Figure(), title="short").layout.title.pad.t
    short = viz.style_figure(go.Figure(), title="A short title")
    assert short.layout.title.text == "A short title" and short.layout.margin.t == viz.THEME.margin[2]
    # Builders that need more room at the top add to the wrapped title's margin.
    weights = np.tril(np.ones((3, 3))) / np.arange(1, 4)[:, None]
    menus = viz.attention_figure(weights[None, None], list("abc"), title=long)
    assert menus.layout.margin.t == viz.THEME.margin[2] + viz.THEME.title_line_px + 50


def test_log_axes_label_their_minor_ticks_with_whole_numbers():
    """plotly's default labels 0.2 and 20 on a log axis alike, as a bare small "2"."""
    template = viz.THEME.template().layout
    assert template.xaxis.minorloglabels == "complete" and template.yaxis.minorloglabels == "complete"
    fig = viz.training_curves(History(), log_y=True)
    assert fig.layout.template.layout.yaxis.minorloglabels == "complete"


def rgb_distance(a: str, b: str) -> float:
    def rgb(color: str) -> np.ndarray:
        named = {"white": (255, 255, 255)}
        if color in named:
            return np.array(named[color], dtype=float)
        if color.startswith("#"):
            return np.array([int(color[i : i + 2], 16) for i in (1, 3, 5)], dtype=float)
        return np.array([float(v) for v in color[color.index("(") + 1 : -1].split(",")[:3]])

    return float(np.linalg.norm(rgb(a) - rgb(b)))


def every_attention_map(attentions, tokens) -> list:
    """One figure of each attention-map builder (one head, head menu, grid of every head)."""
    return [
        viz.attention_heatmap(attentions, tokens, layer=0, head=0),
        viz.attention_figure(attentions, tokens),
        viz.attention_grid(attentions, tokens),
    ]


def test_attention_heatmaps_draw_masked_cells_unlike_a_zero_weight(sample):
    """The causal mask's cells are gaps, drawn in the plot background: it must not be the colour of 0."""
    ids, tokens, attentions = sample
    figures = every_attention_map(attentions, tokens)
    for fig in figures:
        layout = fig.layout
        background = layout.plot_bgcolor or layout.template.layout.plot_bgcolor
        zero = layout.coloraxis.colorscale[0][1]
        assert rgb_distance(background, zero) > 40, (background, zero)
        assert "masked" in layout.coloraxis.colorbar.title.text


def test_labels_from_a_reader_are_escaped_everywhere():
    tokens = [XSS, "a", XSS]
    weights = np.tril(np.ones((3, 3))) / np.arange(1, 4)[:, None]
    figs = [
        viz.attention_heatmap(weights, tokens),
        viz.attention_figure(weights[None, None], tokens),
        viz.token_attention_bars(weights, tokens),
        viz.next_token_distribution(np.array([0.5, 0.3, 0.2]), tokens, top=3),
        viz.training_curves({XSS: History(), "b": History()}),
    ]
    for fig in figs:
        text = fig.to_json()
        assert "<img" not in text and "\\u003cimg" not in text
        assert "&lt;img" in text  # shown as text: plotly decodes the entity once
        assert "&amp;lt;" not in text  # ... and only once: no double escaping


def test_attention_builders_reject_mismatched_tokens(sample):
    ids, tokens, attentions = sample
    with pytest.raises(ConfigError, match="tokens"):
        viz.attention_heatmap(attentions, tokens[:-1], layer=0, head=0)
    with pytest.raises(ConfigError, match="head"):
        viz.attention_heatmap(attentions, tokens, layer=0, head=7)


# ----------------------------------------------------------------------------------- head scores


def constructed_attention(ids: list[int]) -> np.ndarray:
    """(1 layer, 3 heads, T, T): head 0 attends to the induction target, 1 is uniform, 2 previous token."""
    T = len(ids)
    att = np.zeros((1, 3, T, T))
    half = T // 2
    for t in range(T):
        att[0, 1, t, : t + 1] = 1.0 / (t + 1)
        att[0, 2, t, max(t - 1, 0)] = 1.0
        att[0, 0, t, t - half + 1 if t >= half else 0] = 1.0
    return att


def test_repeated_sequence_batch_repeats_distinct_tokens():
    batch = viz.repeated_sequence_batch(vocab_size=50, length=12, seed=3, batch_size=2)
    assert batch.shape == (2, 24) and batch.dtype == torch.long
    assert torch.equal(batch[:, :12], batch[:, 12:])
    assert all(len(set(row[:12].tolist())) == 12 for row in batch)
    assert torch.equal(batch, viz.repeated_sequence_batch(50, 12, 3, batch_size=2))
    assert not torch.equal(batch, viz.repeated_sequence_batch(50, 12, 4, batch_size=2))
    assert viz.repeated_sequence_batch(50, 5, 0, bos_id=7)[0, 0] == 7


def test_induction_and_previous_token_scores_find_the_constructed_heads():
    ids = viz.repeated_sequence_batch(vocab_size=40, length=10, seed=0)[0].tolist()
    att = constructed_attention(ids)
    induction = viz.induction_scores(att, ids)
    previous = viz.previous_token_scores(att)
    assert induction.shape == previous.shape == (1, 3)
    assert induction[0, 0] == pytest.approx(1.0)
    assert induction[0, 1] < 0.1  # uniform attention spreads over ~15 positions
    assert induction[0, 2] == pytest.approx(0.0)
    assert previous[0, 2] == pytest.approx(1.0)
    assert previous[0, 0] < 0.2
    # Uniform: the score is the mean over the second copy of 1 / (t + 1), computed independently.
    assert induction[0, 1] == pytest.approx(np.mean([1 / (t + 1) for t in range(10, 20)]))


def test_induction_scores_accept_model_output_with_a_batch(model):
    ids = viz.repeated_sequence_batch(model.config.vocab_size, 8, seed=1, batch_size=3)
    with torch.no_grad():
        attentions = model(ids, return_attention=True).attentions
    scores = viz.induction_scores(attentions, ids)
    assert scores.shape == (2, 3) and np.all((scores >= 0) & (scores <= 1))
    manual = np.mean([[attentions[1][b, 0, 8 + i, i + 1].item() for i in range(1, 8)] for b in range(3)])
    # Query 8 (the first token of the second copy) also counts: its target is position 1.
    first = np.mean([attentions[1][b, 0, 8, 1].item() for b in range(3)])
    assert scores[1, 0] == pytest.approx((manual * 7 + first) / 8, abs=1e-6)
    fig = viz.head_scores_figure(
        {"induction": scores, "previous token": viz.previous_token_scores(attentions)}
    )
    assert len(fig.data) == 2 and np.allclose(fig.data[0].z, np.round(scores, 4))
    with pytest.raises(ConfigError, match="repeat"):
        viz.induction_scores(attentions, torch.arange(16).repeat(3, 1))


# ------------------------------------------------------------------------------- training curves


def fake_history(n: int, scale: float, eval_every: int = 10) -> History:
    history = History()
    for step in range(1, n + 1):
        history.append(
            {
                "step": step,
                "lr": 1e-3 * scale,
                "train_loss": scale * 3.0 / step,
                "val_loss": scale * 3.2 / step if step % eval_every == 0 else None,
                "grad_norm": scale * (1.0 + step % 3),
                "grad_norm_clipped": min(1.0, scale * (1.0 + step % 3)),
                "tokens_per_s": 1000.0 * scale,
            }
        )
    return history


def test_training_curves_plot_every_series_against_steps():
    history = fake_history(40, 1.0)
    fig = viz.training_curves(history)
    assert len(fig.data) == 6
    by_name = {t.name: t for t in fig.data}
    assert list(by_name["train loss"].x) == list(range(1, 41))
    # The figure holds 4 significant digits, what hover shows (%{y:.4g}): relative error <= 5e-4.
    close = {"rtol": 5e-4, "atol": 0}
    np.testing.assert_allclose(by_name["train loss"].y, history.column("train_loss"), **close)
    assert list(by_name["val loss"].x) == [10, 20, 30, 40]  # only where validation ran
    np.testing.assert_allclose(by_name["grad norm"].y, history.column("grad_norm"), **close)
    # The clipped norm only where clipping cut it (elsewhere it would hide under the raw norm).
    raw, clipped = np.asarray(history.column("grad_norm")), np.asarray(history.column("grad_norm_clipped"))
    drawn = np.array([np.nan if v is None else v for v in by_name["grad norm (clipped)"].y])
    np.testing.assert_allclose(drawn, np.where(clipped < raw, clipped, np.nan), **close)
    np.testing.assert_allclose(by_name["learning rate"].y, history.column("lr"), **close)
    np.testing.assert_allclose(by_name["tokens/s"].y, history.column("tokens_per_s"), **close)
    same = viz.training_curves(history.to_dict())
    assert [list(t.y) for t in same.data] == [list(t.y) for t in fig.data]


def test_a_history_dict_missing_a_column_gives_every_trace_one_y_per_x():
    """Catches a column an older history did not record (here the clipped norm) left empty instead of
    filled with NaN: its trace would get 40 steps and no values, and a live update or a later series
    would be misaligned. Each trace must hold as many values as steps, all missing for that column."""
    data = fake_history(40, 1.0).to_dict()
    del data["grad_norm_clipped"]
    for fig in (
        viz.training_curves(data),
        viz.training_curves({"old run": data, "new": fake_history(40, 1.0)}),
    ):
        assert all(len(trace.x) == len(trace.y) for trace in fig.data)
    clipped = {t.name: t for t in viz.training_curves(data).data}["grad norm (clipped)"]
    assert len(clipped.y) == 40 and all(v is None or math.isnan(v) for v in clipped.y)


def test_training_curves_overlay_runs_with_legend_groups_and_a_log_toggle():
    runs = {
        "lr 1e-3": fake_history(30, 1.0),
        "lr 3e-3": fake_history(20, 2.0),
        "no clip": fake_history(25, 3.0),
    }
    fig = viz.training_curves(runs, log_y=True, throughput=True)
    assert len(fig.data) == 3 * 6
    groups = [t.legendgroup for t in fig.data]
    assert groups == [name for name in runs for _ in range(6)]
    assert sum(bool(t.showlegend) for t in fig.data) == 3  # one legend entry per run
    assert len({t.line.color for t in fig.data}) == 3
    assert list(fig.data[6].x) == list(range(1, 21))
    assert fig.layout.yaxis.type == "log" and fig.layout.yaxis3.type != "log"
    as_json = as_dict(fig)
    linear = [b for b in as_json["layout"]["updatemenus"][0]["buttons"] if b["label"] == "linear"][0]
    apply_control(as_json, linear)
    assert as_json["layout"]["yaxis"]["type"] == "linear" and as_json["layout"]["yaxis2"]["type"] == "linear"


def test_training_curves_legend_names_only_what_the_figure_draws():
    """One run: six legend entries in two colours (learning rate and tokens/s the same blue as the train
    loss) read as six different things; overlaid runs: the line-style key named a val loss no run had."""
    single = viz.training_curves(fake_history(40, 1.0))
    in_legend = [t.name for t in single.data if t.showlegend]
    assert in_legend == ["train loss", "val loss", "grad norm", "grad norm (clipped)"]
    no_eval = fake_history(40, 1.0, eval_every=1000)  # validation never ran
    assert "val loss" not in [t.name for t in viz.training_curves(no_eval).data if t.showlegend]
    runs = viz.training_curves({"a": no_eval, "b": fake_history(30, 2.0, eval_every=1000)})
    key = runs.layout.legend.title.text
    assert "val loss" not in key and "dashed: clipped grad norm" in key
    with_eval = viz.training_curves({"a": fake_history(40, 1.0), "b": no_eval}).layout.legend.title.text
    assert "dotted, open markers: val loss" in with_eval


def test_a_live_figure_gains_its_legend_as_the_series_get_data():
    """The dashboard builds its figure from a fresh trainer's empty history, then only updates it."""
    fig = viz.training_curves(History())
    assert not any(t.showlegend for t in fig.data)
    viz.update_training_curves(fig, fake_history(40, 1.0))
    assert (
        [t.name for t in fig.data if t.showlegend]
        == [t.name for t in viz.training_curves(fake_history(40, 1.0)).data if t.showlegend]
        == ["train loss", "val loss", "grad norm", "grad norm (clipped)"]
    )


def test_training_curves_hold_only_the_digits_hover_shows():
    """A float64 written with 17 digits made a long run's figure about twice the size for nothing."""
    rng = np.random.default_rng(0)
    history = History()
    for step in range(1, 1001):
        history.append(
            {
                "step": step,
                "lr": 3e-4 * rng.random(),
                "train_loss": 3.0 / np.sqrt(step) + 0.1 * rng.random(),
                "val_loss": 3.1 / np.sqrt(step) if step % 50 == 0 else None,
                "grad_norm": 2.0 * rng.random(),
                "grad_norm_clipped": min(1.0, 2.0 * rng.random()),
                "tokens_per_s": 20_000 + 1_000 * rng.random(),
            }
        )
    fig = as_dict(viz.training_curves(history))
    for trace in fig["data"]:
        assert all(v == float(f"{v:.4g}") for v in trace["y"] if v is not None), trace["name"]
        assert "%{y:.4g}" in trace["hovertemplate"]  # hover shows exactly the digits the page holds
    assert len(viz.training_curves(history).to_json()) < 70_000  # 1000 steps x 6 series


def test_update_training_curves_refreshes_in_place_and_long_runs_keep_spikes():
    history = fake_history(5, 1.0)
    fig = viz.training_curves(history)
    history.append({"step": 6, "lr": 1e-3, "train_loss": 0.1, "grad_norm": 1.0, "tokens_per_s": 1.0})
    viz.update_training_curves(fig, history)
    assert list(fig.data[0].x) == [1, 2, 3, 4, 5, 6] and fig.data[0].y[-1] == pytest.approx(0.1)
    with pytest.raises(ConfigError, match="traces"):
        viz.update_training_curves(fig, {"a": history, "b": history})
    long = fake_history(10_000, 1.0)
    long.columns["grad_norm"][7_777] = 99.0  # a spike must survive the thinning
    fig = viz.training_curves(long, max_points=500)
    grad = fig.data[2]
    assert len(grad.x) <= 600 and 99.0 in grad.y and 7_778 in grad.x


# ------------------------------------------------------------------ next-token views and explorer


def test_next_token_distribution_shows_top_tokens_raw_and_processed(model, tokenizer):
    ids = tokenizer.encode("the c")
    config = GenerationConfig(temperature=0.5, top_k=3)
    raw, processed = viz.next_token_probs(model, ids, config)
    assert raw.sum() == pytest.approx(1.0) and processed.sum() == pytest.approx(1.0)
    assert (processed > 0).sum() == 3
    fig = viz.next_token_distribution(raw, tokenizer, top=8, processed=processed)
    assert [t.name for t in fig.data] == ["model (raw)", "after sampling settings"]
    shown = [int(c.rsplit("#", 1)[1]) for c in fig.data[0].x]
    assert len(shown) == 8
    np.testing.assert_allclose(fig.data[0].y, raw[shown], atol=1e-5)
    np.testing.assert_allclose(fig.data[1].y, processed[shown], atol=1e-5)
    assert list(fig.layout.xaxis.ticktext) == [viz.token_label(tokenizer.id_to_token(i)) for i in shown]
    greedy_raw, greedy = viz.next_token_probs(model, ids, GenerationConfig(temperature=0))
    assert greedy.max() == 1.0 and greedy.argmax() == greedy_raw.argmax()


def test_next_token_views_leave_out_a_padded_vocabulary(tokenizer):
    """A model with more rows than its tokenizer has ids (padded to a multiple of 64): the chart, the
    playground's next_token_probs and the explorer never rank the padding, even when it scores highest."""
    n = tokenizer.vocab_size
    torch.manual_seed(0)
    padded = GPT(GPTConfig(vocab_size=n + 7, block_size=48, n_layer=1, n_head=2, n_embd=16)).eval()

    def favour_padding(module, args, output):
        output.logits[..., n:] += 50.0
        return output

    handle = padded.register_forward_hook(favour_padding)
    try:
        ids = tokenizer.encode("the c")
        raw, _ = viz.next_token_probs(padded, ids)  # no tokenizer: nothing says those rows are padding
        assert raw.size == n + 7 and raw.argmax() >= n
        for config in (GenerationConfig(), GenerationConfig(temperature=0), GenerationConfig(top_p=0.5)):
            raw, processed = viz.next_token_probs(padded, ids, config, tokenizer=tokenizer)
            assert raw.shape == processed.shape == (n,)
            assert raw.sum() == pytest.approx(1.0) and processed.sum() == pytest.approx(1.0)
            fig = viz.next_token_distribution(raw, tokenizer, top=n, processed=processed)
            assert len(fig.data[0].x) == n
        # The explorer's greedy steps continue with decodable ids, and every context ranks only those.
        fig = viz.decoding_explorer(padded, tokenizer, ["the c"], steps=3, top=5)
        decodable = {viz.token_label(tokenizer.id_to_token(i)) for i in range(n)}
        for button in fig.layout.updatemenus[0].buttons:
            ticks = button.args[1]["xaxis.ticktext"]
            assert len(ticks) == 6 and set(ticks[:-1]) <= decodable and ticks[-1] == "(other)"
    finally:
        handle.remove()
    with pytest.raises(GenerationError, match="does not belong|do not belong"):
        viz.next_token_probs(GPT(GPTConfig(vocab_size=n - 1, block_size=8, n_layer=1, n_head=1, n_embd=8)),
                             [0], tokenizer=tokenizer)  # fmt: skip


def effective_processed_traces(fig: dict, n_ctx: int) -> list[int]:
    """Processed traces the renderer draws: visible, with every opacity and colour alpha above 0."""
    shown = []
    for i, t in enumerate(fig["data"][n_ctx:], start=n_ctx):
        alpha = float(t["marker"]["color"].rsplit(",", 1)[1].rstrip(")"))
        if (
            t.get("visible") is True
            and t.get("opacity", 1) > 0
            and t["marker"].get("opacity", 1) > 0
            and alpha > 0
        ):
            shown.append(i)
    return shown


def test_decoding_explorer_with_a_greedy_temperature_warns_nothing(tokenizer, recwarn):
    """Temperature 0 on the slider with top-k and top-p on theirs: greedy ignores the filters, so the
    explorer leaves them out of its configs instead of printing a warning into the reader's cell."""
    logits = [torch.randn(tokenizer.vocab_size, generator=torch.Generator().manual_seed(3))]
    fig = as_dict(viz.decoding_explorer_figure(logits, ["a"], tokenizer, (0.0, 1.0), (None, 4), (1.0, 0.6)))
    assert not [w for w in recwarn if "has no effect" in str(w.message)]
    greedy_bars = [trace["y"] for trace in fig["data"][1:5]]  # temperature 0: every filter setting
    assert all(max(y) == 1.0 for y in greedy_bars) and all(y == greedy_bars[0] for y in greedy_bars)


def test_decoding_explorer_sliders_compose_to_the_right_precomputed_distribution(tokenizer):
    torch.manual_seed(1)
    logits = [torch.randn(tokenizer.vocab_size) * 3 for _ in range(3)]
    temperatures, top_ks, top_ps = (0.5, 1.0, 2.0), (None, 4), (1.0, 0.6)
    fig = as_dict(
        viz.decoding_explorer_figure(logits, ["a", "b", XSS], tokenizer, temperatures, top_ks, top_ps, top=10)
    )
    n_ctx, per_ctx = 3, 3 * 2 * 2
    assert len(fig["data"]) == n_ctx + n_ctx * per_ctx
    assert effective_processed_traces(fig, n_ctx) == [n_ctx]
    grid = list(itertools.product(range(3), range(2), range(2)))
    seen_y: set[tuple] = set()
    for c, t, k, p in [(0, 2, 0, 0), (0, 2, 1, 0), (2, 2, 1, 1), (1, 0, 1, 1), (1, 1, 0, 1)]:
        move_slider(fig, 0, t)
        click_menu(fig, 0, c)
        move_slider(fig, 2, p)
        move_slider(fig, 1, k)
        shown = effective_processed_traces(fig, n_ctx)
        assert shown == [n_ctx + c * per_ctx + grid.index((t, k, p))]
        # The bars hold the processed distribution computed by generate's own processors.
        config = GenerationConfig(temperature=temperatures[t], top_k=top_ks[k], top_p=top_ps[p])
        expected = processed_probs(logits[c][None].double(), [[]], config.processors())[0].numpy()
        raw = torch.softmax(logits[c].double(), -1).numpy()
        top = np.argsort(-raw, kind="stable")[:10]
        y = fig["data"][shown[0]]["y"]
        np.testing.assert_allclose(y[:10], expected[top], atol=1e-3)
        assert y[10] == pytest.approx(max(0.0, 1 - expected[top].sum()), abs=2e-3)  # the "(other)" bar
        assert fig["layout"]["xaxis"]["ticktext"][:10] == [
            viz.token_label(tokenizer.id_to_token(i)) for i in top
        ]
        seen_y.add(tuple(y))
        # Text labels follow the same AND: only the drawn trace shows its numbers.
        labelled = [
            i
            for i, tr in enumerate(fig["data"][n_ctx:], start=n_ctx)
            if tr.get("visible") is True
            and tr["textposition"] != "none"
            and tr.get("opacity", 1) > 0
            and not tr["textfont"]["color"].endswith(",0)")
        ]
        assert labelled == shown
    assert len(seen_y) >= 4  # the settings really hold different data
    # With the filters off, each temperature's trace holds a different distribution.
    by_temperature = [tuple(fig["data"][n_ctx + grid.index((t, 0, 0))]["y"]) for t in range(3)]
    assert len(set(by_temperature)) == 3
    assert "<img" not in json.dumps(fig)


def test_decoding_explorer_from_a_model_stays_small(model, tokenizer):
    fig = viz.decoding_explorer(model, tokenizer, ["the cat", XSS], steps=2)
    assert len(fig.data) == 2 * 2 + 2 * 2 * 27
    assert len(fig.to_json()) < 300_000
    labels = [b["label"] for b in fig.layout.updatemenus[0].buttons]
    assert len(labels) == 4 and "&lt;img" in labels[2]


# ---------------------------------------------------------------------------------- token HTML


def test_token_probability_html_escapes_everything_and_colours_by_probability():
    tokens = ["a", XSS, "\n", '"q"']
    probs = [0.9, 0.05, 0.5, 0.3]
    alternatives = [[("b", 0.05)], [(XSS, 0.05), ("<script>", 0.01)], [], [("&amp;", 0.2)]]
    out = viz.token_probability_html(tokens, probs, alternatives, prompt=XSS)
    assert "<img" not in out and "<script>" not in out
    assert out.count("&lt;img src=x onerror=alert(1)&gt;") >= 2  # the prompt and the token
    assert out.count('class="arlm-token"') == 4
    assert "&amp;amp;" in out  # a literal "&amp;" alternative stays literal after one decoding
    assert viz.probability_color(0.9) in out and viz.probability_color(0.05) in out
    assert viz.probability_color(0.9) != viz.probability_color(0.05)
    assert viz.probability_color(0.0) == "#f46d43" and viz.probability_color(1.0) == "#abd9e9"
    with pytest.raises(ConfigError):
        viz.token_probability_html(["a"], [0.1, 0.2])


class TokenSpans(HTMLParser):
    """The token spans of token_probability_html as a browser reads them: each one's text, background
    colour and (un-escaped) hover title, in order."""

    def __init__(self, markup: str):
        super().__init__(convert_charrefs=True)
        self.spans: list[tuple[str, str, str]] = []
        self._open: list[str] | None = None
        self.feed(markup)
        self.close()

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if attrs.get("class") == "arlm-token":
            colour = re.search(r"background-color: (#[0-9a-f]{6});", attrs["style"]).group(1)
            self._open = ["", colour, attrs.get("title")]

    def handle_data(self, data):
        if self._open is not None:
            self._open[0] += data

    def handle_endtag(self, tag):
        if tag == "span" and self._open is not None:
            self.spans.append(tuple(self._open))
            self._open = None


def test_each_token_span_holds_its_own_probability_colour_and_alternatives():
    tokens = ["a", '"q"', "<b>"]
    probs = [0.9, 0.05, 0.5]
    alternatives = [[("b", 0.05), ("c", 0.04)], [('x"onmouseover="alert(1)', 0.5)], []]
    spans = TokenSpans(viz.token_probability_html(tokens, probs, alternatives)).spans
    assert [text for text, _, _ in spans] == tokens
    assert [colour for _, colour, _ in spans] == [viz.probability_color(p) for p in probs]
    # A quote in a token or an alternative stays inside the title attribute; a token without
    # alternatives gets no empty "top alternatives:" heading.
    assert [title for _, _, title in spans] == [
        "a  p = 0.900\ntop alternatives:\n  b  0.050\n  c  0.040",
        '"q"  p = 0.050\ntop alternatives:\n  x"onmouseover="alert(1)  0.500',
        "<b>  p = 0.500",
    ]
    with pytest.raises(ConfigError, match="got 2 alternative lists for 3 tokens"):
        viz.token_probability_html(tokens, probs, alternatives[:2])


def test_probability_colours_interpolate_between_the_theme_stops_and_clamp():
    low, middle, high = (viz.THEME.probability_stops[i] for i in range(3))
    assert viz.probability_color(0.5) == middle

    def rgb(colour):
        return [int(colour[i : i + 2], 16) for i in (1, 3, 5)]

    between = rgb(viz.probability_color(0.3))  # 60% of the way from the low stop to the middle one
    assert all(abs(c - (a + 0.6 * (b - a))) <= 0.5 for c, a, b in zip(between, rgb(low), rgb(middle)))
    # A probability a rounding error puts outside [0, 1], or a NaN, still gets an end colour.
    assert viz.probability_color(1.5) == high
    assert viz.probability_color(-0.5) == viz.probability_color(math.nan) == low


def test_token_html_follows_the_theme_and_can_leave_out_the_legend(tokenizer):
    theme = dataclasses.replace(viz.THEME, probability_stops=("#000000", "#ffffff"))
    assert viz.probability_color(0.25, theme) == "#404040"  # 63.75, rounded
    generated = [
        GeneratedToken(token_id=tokenizer.encode(ch)[0], prob=p, raw_prob=p, logprob=math.log(p))
        for ch, p in (("t", 0.001), ("h", 0.999))
    ]
    for out in (
        viz.token_probability_html(["t", "h"], [0.001, 0.999], theme=theme),
        viz.generation_html(tokenizer, generated, theme=theme),
    ):
        assert [colour for _, colour, _ in TokenSpans(out).spans] == ["#000000", "#ffffff"]
        assert "linear-gradient(to right, #000000, #ffffff)" in out  # the legend shows the same stops
    assert 'class="arlm-token-legend"' in viz.generation_html(tokenizer, generated)
    for out in (
        viz.token_probability_html(["t"], [0.5], legend=False),
        viz.generation_html(tokenizer, generated, legend=False),
    ):
        assert 'class="arlm-token-legend"' not in out and out.count('class="arlm-token"') >= 1


def test_generation_html_uses_the_streamed_tokens(model, tokenizer):
    from arlm_lib.generate import generate

    ids = tokenizer.encode("the ")
    steps = list(generate(model, ids, seed=0, max_new_tokens=6, return_top=3, tokenizer=tokenizer))
    generated = [s.tokens[0] for s in steps]
    out = viz.generation_html(tokenizer, generated, prompt="the ")
    assert out.count('class="arlm-token"') == 6
    first = generated[0]
    assert f"p = {first.prob:.3f}" in out
    assert viz.token_label(tokenizer.id_to_token(first.top[1][0]), 24) in out


def test_heatmap_of_the_last_queries_labels_them_with_the_last_tokens():
    """A (T_q < T_k) map, e.g. the queries of a continuation over a cached prefix: query i is token
    T_k - T_q + i, and it sees the keys up to itself."""
    weights = np.array([[1 / 3, 1 / 3, 1 / 3, 0.0], [0.25, 0.25, 0.25, 0.25]])
    fig = viz.attention_heatmap(weights, list("abcd"), decimals=None)
    assert list(fig.data[0].y) == ["c #2", "d #3"]
    assert list(fig.layout.yaxis.ticktext) == ["c", "d"]
    z = lower_triangle(fig.data[0].z)
    assert np.isnan(z[0, 3]) and not np.isnan(z[0, 2]) and not np.isnan(z[1]).any()


def test_heatmap_colour_scale_ends_at_the_largest_weight():
    """Without the first query (whose one weight is 1) the weights can all be small: a fixed 0..1 scale
    would draw them near-white."""
    weights = np.array([[1 / 3, 1 / 3, 1 / 3, 0.0], [0.25, 0.25, 0.25, 0.25]])
    fig = viz.attention_heatmap(weights, list("abcd"))
    assert fig.layout.coloraxis.cmin == 0.0
    assert fig.layout.coloraxis.cmax == pytest.approx(1 / 3)
    assert viz.attention_heatmap(weights, list("abcd"), zmax=0.5).layout.coloraxis.cmax == 0.5


def test_token_attention_bars_default_to_the_last_query(sample):
    ids, tokens, attentions = sample
    fig = as_dict(viz.token_attention_bars(attentions, tokens, layer=0, head=1, decimals=None))
    np.testing.assert_allclose(fig["data"][0]["y"], attentions[0][0, 1, -1].numpy(), atol=1e-6)
    assert fig["layout"]["sliders"][0]["active"] == len(ids) - 1
    shape = fig["layout"]["shapes"][0]
    assert shape["x0"] < len(ids) - 1 < shape["x1"]


def test_attention_heatmaps_put_the_first_query_on_top(sample):
    ids, tokens, attentions = sample
    figures = every_attention_map(attentions, tokens)
    for fig in figures:
        yaxes = list(fig.select_yaxes())
        assert yaxes and all(axis.autorange == "reversed" for axis in yaxes)


def test_attending_to_yourself_is_not_induction():
    """Token 3 at t=1 follows an earlier 3, whose successor is t=1 itself: no induction target."""
    att = np.eye(4)[None, None]  # one head: every query attends only to its own position
    assert viz.induction_scores(att, [3, 3, 4, 3])[0, 0] == pytest.approx(0.0)


def test_head_score_names_are_escaped():
    text = viz.head_scores_figure({XSS: np.zeros((2, 2))}).to_json()
    assert "<img" not in text and "\\u003cimg" not in text and "&lt;img" in text


def test_thinned_curves_keep_dips_as_well_as_spikes():
    long = fake_history(10_000, 1.0)
    long.columns["grad_norm"][4_321] = 0.01  # a dip (the other values are 1, 2 or 3)
    grad = viz.training_curves(long, max_points=500).data[2]
    assert len(grad.x) <= 600 and 0.01 in grad.y and 4_322 in grad.x


def test_log_toggle_switches_the_loss_and_grad_norm_axes():
    fig = as_dict(viz.training_curves(fake_history(20, 1.0)))
    buttons = {b["label"]: b for b in fig["layout"]["updatemenus"][0]["buttons"]}
    apply_control(fig, buttons["log"])
    assert fig["layout"]["yaxis"]["type"] == "log" and fig["layout"]["yaxis2"]["type"] == "log"
    assert fig["layout"].get("yaxis3", {}).get("type") != "log"  # the learning rate stays linear


def test_next_token_probs_crop_a_long_context_from_the_left(model, tokenizer):
    ids = tokenizer.encode(TEXT * 2)
    block = model.config.block_size
    assert len(ids) > block
    raw, _ = viz.next_token_probs(model, ids, GenerationConfig())
    with torch.no_grad():
        logits = model(torch.tensor([ids[-block:]])).logits[0, -1].float()
    np.testing.assert_allclose(raw, torch.softmax(logits.double(), -1).numpy(), atol=1e-9)


def test_decoding_explorer_steps_continue_the_prompt_greedily(model, tokenizer):
    fig = viz.decoding_explorer(
        model, tokenizer, ["the cat"], steps=2, temperatures=(1.0,), top_ks=(None,), top_ps=(1.0,)
    )
    labels = [b["label"] for b in fig.layout.updatemenus[0].buttons]
    assert labels[1].startswith(labels[0]) and len(labels[1]) == len(labels[0]) + 1
    ids = tokenizer.encode("the cat")
    with torch.no_grad():
        nxt = int(model(torch.tensor([ids])).logits[0, -1].argmax())
        logits = model(torch.tensor([ids + [nxt]])).logits[0, -1].float()
    expected = torch.softmax(logits.double(), -1).numpy()
    top = np.argsort(-expected, kind="stable")[:12]
    np.testing.assert_allclose(fig.data[1].y[:12], expected[top], atol=1e-3)  # context 1's raw bars


def test_decoding_explorer_takes_one_str_as_one_prompt_and_a_number_as_one_slider_value(model, tokenizer):
    """A str used to be iterated over: "the cat" gave seven one-character prompts, silently."""
    one = dict(steps=1, top_ks=(None,), top_ps=(1.0,))
    fig = viz.decoding_explorer(model, tokenizer, "the cat", temperatures=0.7, **one)
    as_list = viz.decoding_explorer(model, tokenizer, ["the cat"], temperatures=(0.7,), **one)
    assert len(fig.data) == len(as_list.data) == 2  # one context: its raw trace and one processed trace
    assert [b["label"] for b in fig.layout.updatemenus[0].buttons] == [
        b["label"] for b in as_list.layout.updatemenus[0].buttons
    ]


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda m, t, p: viz.decoding_explorer(m, t, ["the"], steps=1.5), r"steps=1\.5 is not allowed"),
        (lambda m, t, p: viz.decoding_explorer(m, t, ["the"], top=0), "top=0 is not allowed"),
        (lambda m, t, p: viz.decoding_explorer(m, t, [[1, 2]]), "every prompt must be a str"),
        (lambda m, t, p: viz.next_token_distribution(p, t, top=2.5), r"top=2\.5 is not allowed"),
        (lambda m, t, p: viz.next_token_distribution(p, t, top="5"), "top='5' is not allowed"),
        (lambda m, t, p: viz.next_token_distribution(t, p), "probs must be an array of numbers"),
        (lambda m, t, p: viz.next_token_distribution(np.stack([p, p]), t), r"one distribution, shape \(V,\)"),
        (lambda m, t, p: viz.next_token_distribution(p, ["a", "b"]), "got 2 labels for a distribution over"),
    ],
)
def test_decoding_figures_name_a_bad_argument(model, tokenizer, call, message):
    # These used to fail inside numpy or a slice (TypeError, IndexError), or, for a batch of
    # distributions, with a tokenizer error about an id past the vocabulary.
    probs, _ = viz.next_token_probs(model, tokenizer.encode("the "))
    with pytest.raises(ConfigError, match=message):
        call(model, tokenizer, probs)


def test_generation_html_shows_the_raw_probability_when_asked(model, tokenizer):
    from arlm_lib.generate import generate

    config = GenerationConfig(temperature=4.0)  # the sharpened model's raw p is ~1.0, its processed p ~0.68
    prompt = tokenizer.encode("the ")
    steps = list(generate(model, prompt, config, seed=0, max_new_tokens=3, return_top=2, tokenizer=tokenizer))
    generated = [s.tokens[0] for s in steps]
    first = generated[0]
    assert abs(first.prob - first.raw_prob) > 0.1  # the settings really reshape the distribution
    raw_html = viz.generation_html(tokenizer, generated, processed=False)
    assert f"p = {first.raw_prob:.3f}" in raw_html and f"p = {first.prob:.3f}" not in raw_html
    assert viz.probability_color(first.raw_prob) in raw_html
    # ...and the alternatives of the distribution it shows: the model's own, or the processed one.
    for processed, top in ((False, first.top_raw), (True, first.top)):
        title = TokenSpans(viz.generation_html(tokenizer, generated, processed=processed)).spans[0][2]
        shown = [float(line.split()[-1]) for line in title.splitlines()[2:]]
        assert shown == pytest.approx([p for _, p in top], abs=5e-4)
    assert [p for _, p in first.top_raw] != pytest.approx([p for _, p in first.top], abs=5e-3)


def test_long_token_labels_are_cut_to_the_label_width():
    label = viz.token_label("abcdefghijklmnopqrstuvwxyz")
    assert len(label) == viz.THEME.label_chars and label.endswith("…")
    assert viz.token_label("abc", 3) == "abc" and viz.token_label("abcd", 3) == "ab…"


def test_attention_array_reads_every_layout_and_the_chosen_batch_row():
    """A list per layer of (H, T, T) or (B, H, T, T), or one (L, H, T, T) array, all give (L, H, T, T)
    of the row asked for."""
    rng = np.random.default_rng(0)
    batched = rng.random((2, 3, 4, 5, 5))  # (L, B, H, T, T)
    for b in range(3):
        np.testing.assert_array_equal(viz.attention_array(list(batched), batch_index=b), batched[:, b])
    one = batched[:, 1]  # (L, H, T, T)
    np.testing.assert_array_equal(viz.attention_array(one), one)
    np.testing.assert_array_equal(viz.attention_array(list(one)), one)  # a list per layer of (H, T, T)


def test_attention_figure_starts_on_the_asked_layer_and_head_and_keeps_it_in_the_menus(sample):
    ids, tokens, attentions = sample
    n_head = 3
    fig = as_dict(viz.attention_figure(attentions, tokens, layer=1, head=2, decimals=None))
    assert visible_traces(fig) == [1 * (n_head + 1) + 2]
    layer_menu, head_menu = fig["layout"]["updatemenus"]
    assert (layer_menu["active"], head_menu["active"]) == (1, 2)
    click_menu(fig, 0, 0)  # another layer, the same head
    assert visible_traces(fig) == [0 * (n_head + 1) + 2]
    click_menu(fig, 1, 0)  # another head, the layer just picked
    assert visible_traces(fig) == [0]


def test_attention_heatmap_names_a_negative_layer_or_head_by_its_index(sample):
    ids, tokens, attentions = sample
    fig = viz.attention_heatmap(attentions, tokens, layer=-1, head=-1)
    assert "layer 1, head 2" in fig.layout.title.text
    np.testing.assert_allclose(
        np.nan_to_num(lower_triangle(fig.data[0].z)), attentions[1][0, 2].numpy(), atol=1e-3
    )


def test_attention_grid_puts_head_h_in_row_h_div_cols_and_column_h_mod_cols():
    n_head, cols = 5, 2
    weights = np.tril(np.ones((1, n_head, 3, 3)))
    weights /= weights.sum(-1, keepdims=True)
    fig = viz.attention_grid(weights, list("abc"), cols=cols, controls=False)
    for h, trace in enumerate(fig.data):
        row, col = h // cols + 1, h % cols + 1
        subplot = (row - 1) * cols + col
        assert trace.xaxis == ("x" if subplot == 1 else f"x{subplot}")
        assert trace.yaxis == ("y" if subplot == 1 else f"y{subplot}")


def test_token_attention_bars_of_the_last_queries_label_and_highlight_their_own_tokens():
    """A (T_q < T_k) map: query q is token T_k - T_q + q, so its label, title and highlighted bar are
    that token's, and the bar's height is the query's weight on itself."""
    weights = np.array([[0.1, 0.2, 0.7, 0.0], [0.4, 0.3, 0.2, 0.1]])
    tokens = list("abcd")
    fig = as_dict(viz.token_attention_bars(weights, tokens, query_index=0, decimals=None))
    slider = fig["layout"]["sliders"][0]
    assert slider["active"] == 0
    assert [s["label"] for s in slider["steps"]] == ["c", "d"]
    assert "query c" in fig["layout"]["title"]["text"]
    shape = fig["layout"]["shapes"][0]
    assert shape["x0"] < 2 < shape["x1"] and shape["y1"] == pytest.approx(weights[0, 2])
    move_slider(fig, 0, 1)
    np.testing.assert_allclose(fig["data"][0]["y"], weights[1])
    assert "query d" in fig["layout"]["title"]["text"]
    shape = fig["layout"]["shapes"][0]
    assert shape["x0"] < 3 < shape["x1"] and shape["y1"] == pytest.approx(weights[1, 3])


def test_induction_scores_add_up_the_weight_on_every_earlier_occurrence():
    """Three copies of "a b": a query in the third copy that splits its attention between the two
    tokens after its earlier occurrences is a full induction head (score 1), not half of one."""
    ids = [0, 1, 0, 1, 0, 1]
    weights = np.zeros((1, 1, 6, 6))  # (L=1, H=1, T, T)
    for t in range(6):
        weights[0, 0, t, t] = 1.0  # attend to yourself where there is no induction target
    weights[0, 0, 2, :] = 0
    weights[0, 0, 2, 1] = 1.0  # position 2 ("a"): the token after the first "a"
    weights[0, 0, 3, :] = 0
    weights[0, 0, 3, 2] = 1.0  # position 3 ("b"): the token after the first "b"
    weights[0, 0, 4, :] = 0
    weights[0, 0, 4, [1, 3]] = 0.5  # position 4 ("a"): split between the two targets
    weights[0, 0, 5, :] = 0
    weights[0, 0, 5, [2, 4]] = 0.5
    np.testing.assert_allclose(viz.induction_scores(weights, ids), [[1.0]])


def test_induction_scores_use_one_token_sequence_for_a_whole_batch():
    rng = np.random.default_rng(1)
    ids = [3, 5, 3, 5]
    batch = rng.random((1, 2, 2, 4, 4))  # (L, B, H, T, T)
    each = [viz.induction_scores(batch[:, b], ids) for b in range(2)]
    np.testing.assert_allclose(viz.induction_scores(list(batch), ids), (each[0] + each[1]) / 2)


def test_previous_token_scores_average_the_batch_and_place_the_last_queries():
    rng = np.random.default_rng(2)
    square = rng.random((2, 2, 3, 4, 4))  # (L, B, H, T, T)
    expected = np.mean([square[:, :, :, t, t - 1] for t in range(1, 4)], axis=0).mean(axis=1)
    np.testing.assert_allclose(viz.previous_token_scores(square), expected)
    # The last two queries over four keys: query q is position 2 + q, its previous token 1 + q.
    last = rng.random((1, 3, 2, 4))  # (L, H, T_q, T_k)
    expected = np.mean([last[:, :, 0, 1], last[:, :, 1, 2]], axis=0)
    np.testing.assert_allclose(viz.previous_token_scores(last), expected)


def test_head_scores_figure_puts_heads_across_and_layers_down():
    scores = np.arange(6, dtype=float).reshape(2, 3) / 10  # 2 layers, 3 heads
    (trace,) = viz.head_scores_figure(scores).data
    assert list(trace.x) == [0, 1, 2] and list(trace.y) == [0, 1]
    np.testing.assert_allclose(trace.z, scores)


def test_training_curves_thin_only_past_max_points_and_keep_the_last_step():
    history = fake_history(300, 1.0)
    for i in range(len(history)):
        history.columns["train_loss"][i] = 1.0  # flat: each bucket's min and max are its first point
    exact = viz.training_curves(history, max_points=300).data[0]
    assert list(exact.x) == list(range(1, 301))
    thinned = viz.training_curves(history, max_points=100).data[0]
    assert len(thinned.x) < 300 and thinned.x[0] == 1 and thinned.x[-1] == 300


def test_next_token_probs_penalise_tokens_from_the_whole_history_not_just_the_window(model, tokenizer):
    """As in generate(): the model sees the last block_size tokens, the repetition penalty all of them."""
    block = model.config.block_size
    early, late = tokenizer.encode("x")[0], tokenizer.encode("a")[0]
    ids = [early] + [late] * block  # "x" only before the window
    config = GenerationConfig(repetition_penalty=3.0)
    _, processed = viz.next_token_probs(model, ids, config)
    with torch.no_grad():
        logits = model(torch.tensor([ids[-block:]])).logits[0, -1].float()
    expected = processed_probs(logits[None], [ids], config.processors())[0]
    np.testing.assert_allclose(processed, expected.numpy(), atol=1e-9)
    in_window = processed_probs(logits[None], [ids[-block:]], config.processors())[0]
    assert processed[early] < in_window[early]  # the early token is penalised too


def test_next_token_distribution_shows_tokens_the_settings_make_likely_and_labels_them_by_id():
    raw = np.array([0.5, 0.3, 0.15, 0.05])
    processed = np.array([0.0, 0.0, 0.0, 1.0])  # e.g. a bias toward a token the model finds unlikely
    labels = ["w", "x", "y", "z"]
    fig = viz.next_token_distribution(raw, labels, top=2, processed=processed)
    shown = [int(c.rsplit("#", 1)[1]) for c in fig.data[0].x]
    # Chosen by the larger of the two probabilities, shown in the model's order (panels line up).
    assert shown == [0, 3]
    assert list(fig.layout.xaxis.ticktext) == [labels[i] for i in shown]
    assert f"hold {raw[shown].sum():.0%} of the model's probability" in fig.layout.annotations[0].text
    assert f"and {processed[shown].sum():.0%} after" in fig.layout.annotations[0].text


@pytest.mark.parametrize(
    "ids, match",
    [
        (
            "the cat",
            r"ids must be token ids, not a str: encode the text first, e\.g\. tokenizer\.encode\('the cat'\)",
        ),
        ([1, 999], r"ids has token id 999: ids must be integers in 0\.\.\d+"),
        ([1, 2.5], r"ids has token id 2\.5"),
        (
            torch.zeros(2, 3, dtype=torch.long),
            r"ids must be one sequence of token ids \(1-D\), got shape \(2, 3\)",
        ),
        (7, r"ids must be a list or 1-D tensor of token ids, got int"),
    ],
    ids=["str", "past-vocab", "float", "batch", "int"],
)
def test_the_model_helpers_name_ids_that_are_not_one_sequence_of_token_ids(model, ids, match):
    """next_token_probs and model_attention, as the chapters call them: text or an id past the
    vocabulary was an int() ValueError or torch's "index out of range in self"."""
    for helper in (viz.next_token_probs, viz.model_attention):
        with pytest.raises(DataError, match=match):
            helper(model, ids)
    one_row = torch.tensor([[1, 2, 3]])  # shape (1, T), as encoders often return, is one sequence
    assert viz.model_attention(model, one_row).shape[-1] == 3


def test_attention_views_take_numpy_indices_and_name_a_bad_one(model, tokenizer):
    ids = tokenizer.encode("the cat")
    tokens = [tokenizer.id_to_token(i) for i in ids]
    att = viz.model_attention(model, ids)
    # np.int64 (from an argmax over head scores) used to be called "out of range" by attention_figure
    # and attention_grid, though attention_heatmap took it.
    layer = np.int64(att.shape[0] - 1)
    viz.attention_figure(att, tokens, layer=layer, head=np.int64(0))
    viz.attention_grid(att, tokens, layer=layer)
    viz.token_attention_bars(att, tokens, query_index=np.int64(1), layer=layer, head=0)
    bad = [  # each used to fail inside numpy (IndexError, TypeError) or plotly, or with a wrong shape
        (lambda: viz.attention_heatmap(att, tokens, layer=1.5), "layer=1.5 is out of range"),
        (lambda: viz.attention_heatmap(att, tokens, layer="0"), "layer='0' is out of range"),
        (lambda: viz.attention_heatmap(att, tokens, layer=True), "layer=True is out of range"),
        (lambda: viz.token_attention_bars(att, tokens, query_index=2.5), "query_index=2.5 is out of range"),
        (lambda: viz.attention_array(att[:, None], batch_index="0"), "batch_index='0' is out of range"),
        (lambda: viz.attention_grid(att, tokens, cols=0), "cols=0 is not allowed"),
        (lambda: viz.attention_grid(att, tokens, cols=2.5), "cols=2.5 is not allowed"),
    ]
    for call, message in bad:
        with pytest.raises(ConfigError, match=re.escape(message)):
            call()


def _flat_history(n: int, grad_spike: float | None = None) -> History:
    history = History()
    for step in range(n):
        grad = 1.0 + 0.1 * (step % 3)
        if grad_spike is not None and step == 0:
            grad = grad_spike
        history.append(
            {
                "step": step,
                "lr": 1e-3,
                "train_loss": 3.0 - 0.01 * step,
                "val_loss": 3.0 - 0.01 * step if step % 10 == 0 else None,
                "grad_norm": grad,
                "grad_norm_clipped": min(grad, 1.0),
                "tokens_per_s": 1000.0,
            }
        )
    return history


def test_training_curves_start_log_when_the_data_span_a_decade_and_the_toggle_agrees():
    """A step-0 gradient-norm spike of 45 squashed the rest of a linear grad-norm panel to a flat line, and
    some dashboards opened in log, others in linear: by default the axes start log when a run's loss or
    grad norm spans more than a decade, and the toggle's active button is the axes' initial type."""
    cases = {
        "spike": (_flat_history(30, grad_spike=45.0), "log"),
        "flat": (_flat_history(30), "linear"),
        "one run of several spikes": ({"a": _flat_history(30), "b": _flat_history(30, 45.0)}, "log"),
    }
    for name, (data, expected) in cases.items():
        for log_y, want in ((None, expected), (True, "log"), (False, "linear")):
            fig = viz.training_curves(data, log_y=log_y)
            assert fig.layout.yaxis.type == fig.layout.yaxis2.type == want, (name, log_y)
            menu = fig.layout.updatemenus[0]
            assert menu.buttons[menu.active].label == want, (name, log_y)


def test_validation_loss_and_clipping_are_drawn_so_that_they_are_seen():
    """Validation ran 1 to 6 times a run (a dotted line through a few points is not seen) and the clipped
    norm, equal to the raw one wherever clipping did not cut it, hid under it: both get a marker at each
    point (open, unlike the training curves' filled ones), and the clipped norm is drawn only where it
    differs from the raw norm, so the legend's line-style key stays true."""
    history = fake_history(40, 1.0)  # grad norm 1, 2, 3, ...; clipped at 1
    for fig, several in (
        (viz.training_curves(history), False),
        (viz.training_curves({"a": history, "b": history}), True),
    ):
        for i, trace in enumerate(fig.data[:5]):
            name = trace.legendgroup if several else trace.name
            kind = ["train loss", "val loss", "grad norm", "grad norm (clipped)", "learning rate"][i]
            if kind in ("val loss", "grad norm (clipped)"):
                assert "markers" in trace.mode and trace.marker.symbol.endswith("-open"), (name, kind)
                assert trace.marker.maxdisplayed in (None, 0)  # every point drawn
        clipped = fig.data[3]
        raw = dict(zip(fig.data[2].x, fig.data[2].y))
        shown = [(x, y) for x, y in zip(clipped.x, clipped.y) if y is not None and not math.isnan(y)]
        assert shown and all(y < raw[x] for x, y in shown)
        assert len(shown) < len(clipped.x)  # not drawn where clipping did not cut the norm
    assert (
        "open markers: val loss" in viz.training_curves({"a": history, "b": history}).layout.legend.title.text
    )


def test_the_throughput_panel_is_left_out_when_runs_are_compared():
    """tokens/s is the wall-clock speed of the machine that built the page: between overlaid runs its noise
    read as a difference between the runs. It is drawn for one run, and for several only on request; a live
    figure without it still updates."""
    one, two = fake_history(30, 1.0), fake_history(20, 2.0)
    single = viz.training_curves(one)
    assert "tokens/s" in [t.name for t in single.data]
    assert any("wall clock" in a.text for a in single.layout.annotations)
    compared = viz.training_curves({"a": one, "b": two})
    assert len(compared.data) == 2 * 5 and not any("tokens/s" in a.text for a in compared.layout.annotations)
    assert compared.layout.xaxis3.domain[1] > 0.9  # the learning rate spans the bottom row
    assert len(viz.training_curves({"a": one, "b": two}, throughput=True).data) == 2 * 6
    assert len(viz.training_curves(one, throughput=False).data) == 5
    viz.update_training_curves(compared, {"a": fake_history(40, 1.0), "b": two})
    assert list(compared.data[0].x) == list(range(1, 41))


def test_every_key_token_of_the_books_copy_sentence_is_a_tick_label():
    """68 one-character tokens at the book's narrowest figure width: the heatmaps and the bars labelled
    every second key (the labels' padding did not fit), so a reader could not find a column."""
    n = 68
    tokens = [chr(ord("a") + i % 26) for i in range(n)]
    weights = np.tril(np.ones((n, n))) / np.arange(1, n + 1)[:, None]
    for fig in (
        viz.attention_heatmap(weights, tokens),
        viz.attention_figure(weights[None, None], tokens),
        viz.token_attention_bars(weights, tokens),
    ):
        assert list(fig.layout.xaxis.ticktext) == tokens
        assert len(fig.layout.xaxis.tickvals) == n and fig.layout.xaxis.tickmode == "array"
    heatmap = viz.attention_heatmap(weights, tokens)
    assert list(heatmap.layout.yaxis.ticktext) == tokens


def test_a_long_query_slider_hides_its_thinned_step_labels_and_the_readout_names_the_query():
    """plotly labelled every second step of a 30-token slider, between the steps: the step labels are
    transparent when they would be thinned, and the readout (in the text colour) names the query token;
    a short text keeps its visible labels."""
    for n, hidden in ((30, True), (68, True), (8, False)):
        tokens = [chr(ord("a") + i % 26) for i in range(n)]
        weights = np.tril(np.ones((n, n))) / np.arange(1, n + 1)[:, None]
        slider = viz.token_attention_bars(weights, tokens).layout.sliders[0]
        assert [s.label for s in slider.steps] == tokens  # the readout shows the active step's label
        assert (slider.font.color == "rgba(0,0,0,0)") is hidden, n
        if hidden:
            assert slider.currentvalue.font.color == viz.THEME.text_color


def test_titles_end_left_of_the_mode_bar():
    """plotly's mode bar (ten buttons, about 250 px at the top right) covered the end of a long title when
    the mouse was over a figure: it keeps four buttons (about 110 px) and titles wrap short of them in the
    narrowest figure (the title font is about 0.7 em wide per character, from 16 px in)."""
    import plotly.graph_objects as go

    from arlm_lib.display import PLOTLY_CONFIG

    removed = set(PLOTLY_CONFIG["modeBarButtonsToRemove"])
    assert {"select2d", "lasso2d", "zoomIn2d", "zoomOut2d", "autoScale2d"} <= removed
    assert not {"toImage", "zoom2d", "pan2d", "resetScale2d"} & removed
    title_px = 16 + viz.THEME.title_chars * 0.7 * viz.THEME.font_size
    assert title_px <= viz.THEME.figure_width - 120
    long = "Pre-LN without warmup at lr 0.03: with and without clipping (seed 0)"
    fig = viz.style_figure(go.Figure(), title=long)
    assert all(len(line) <= viz.THEME.title_chars for line in fig.layout.title.text.split("<br>"))


def test_next_token_bars_keep_the_models_order_and_name_the_x_axis():
    """Typical sampling raises mid-probability tokens above the top ones: its panel was sorted by the
    processed probabilities (c, h, s, d, b...) while its siblings read d, b, c, h, s. The bars keep the
    model's order whatever the settings, and the x axis says what the bars are."""
    labels = list("abcdefgh")
    raw = np.array([0.02, 0.25, 0.15, 0.30, 0.03, 0.05, 0.12, 0.08])
    processed = np.array([0.0, 0.05, 0.45, 0.0, 0.0, 0.2, 0.3, 0.0])
    fig = viz.next_token_distribution(raw, labels, top=5, processed=processed)
    shown = [labels.index(t) for t in fig.layout.xaxis.ticktext]
    assert list(raw[shown]) == sorted(raw[shown], reverse=True)
    assert {2, 5, 6} <= set(shown)  # the tokens the settings raise stay in view
    assert fig.layout.xaxis.title.text.startswith("next token")
    plain = viz.next_token_distribution(raw, labels, top=5)
    assert list(plain.layout.xaxis.ticktext) == ["d", "b", "c", "g", "h"]


def test_the_explorers_context_menu_sits_above_its_note(tokenizer):
    """The context dropdown covered the start of the note "grey outline: the model's own distribution…"
    (both sat on the plot's top edge): the menu now clears a line of the note's text, and the top margin
    holds both."""
    logits = [torch.randn(tokenizer.vocab_size)]
    fig = viz.decoding_explorer_figure(logits, ["a"], tokenizer, (0.0, 1.0), (None, 4), (1.0, 0.6))
    note = [a for a in fig.layout.annotations if "grey outline" in a.text][0]
    menu = fig.layout.updatemenus[0]
    assert note.yanchor == "bottom" and note.y == 1.0 and menu.y == 1.0 and menu.yanchor == "bottom"
    note_px = 1.3 * note.font.size
    assert menu.pad.b >= note_px + 4
    assert fig.layout.margin.t >= viz.THEME.margin[2] + menu.pad.b + 30  # the menu's ~30 px box
