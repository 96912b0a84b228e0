"""Kernel apps driven headlessly: set the controls, click, and check the state and the figure data.

No kernel is needed: ipywidgets run without a front end, and the click handlers are plain methods.
Both figure holders are covered: plotly's FigureWidget (needs anywidget) when it is installed, and the
Output fallback always.
"""

from __future__ import annotations

import gc
import math
import threading
import weakref

import numpy as np
import pytest
import torch
from conftest import require_module

from arlm_lib import viz, widgets
from arlm_lib.checkpoint import load_checkpoint
from arlm_lib.errors import ConfigError, GenerationError
from arlm_lib.generate import GenerationConfig, generate
from arlm_lib.model import GPT, GPTConfig
from arlm_lib.tokenizers import CharTokenizer
from arlm_lib.train import Callback, TrainConfig, Trainer

XSS = "<img src=x onerror=alert(1)>"
TEXT = ("the cat sat on the mat. the dog sat on the log. " * 12) + XSS + "\n"


@pytest.fixture(scope="module")
def tokenizer() -> CharTokenizer:
    return CharTokenizer.train(TEXT)


def tiny_model(tokenizer, sharpen: float = 1.0) -> GPT:
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=tokenizer.vocab_size, block_size=32, n_layer=2, n_head=2, n_embd=16))
    with torch.no_grad():
        model.lm_head.weight.mul_(sharpen)  # sharper logits, so the sampling sliders visibly matter
    return model.eval()


@pytest.fixture
def model(tokenizer) -> GPT:
    return tiny_model(tokenizer, sharpen=40.0)


def z_lower(z) -> np.ndarray:
    arr = np.array([[math.nan if v is None else v for v in row] for row in z], dtype=float)
    return arr[np.tril_indices(arr.shape[0])]


# ------------------------------------------------------------------------------ attention explorer


def expected_attention(model, tokenizer, text, layer, head):
    with torch.no_grad():
        out = model(torch.tensor([tokenizer.encode(text)]), return_attention=True)
    w = out.attentions[layer][0, head].numpy()
    return w[np.tril_indices(w.shape[0])]


@pytest.mark.parametrize("use_widget", [False, True])
def test_attention_explorer_recomputes_on_new_text_and_selections(model, tokenizer, use_widget, monkeypatch):
    if use_widget:
        require_module("anywidget", "plotly's FigureWidget needs anywidget")
    monkeypatch.setattr(widgets, "_figure_widget_available", lambda: use_widget)
    app = widgets.AttentionExplorer(model, tokenizer, "the cat")
    assert type(app.figure).__name__ == ("FigureWidget" if use_widget else "Figure")
    np.testing.assert_allclose(
        z_lower(app.figure.data[0].z), expected_attention(model, tokenizer, "the cat", 0, 0), atol=1e-4
    )

    app.text.value = "the dog sat on the log"  # the reader types a new sentence
    assert app.attentions.shape == (2, 2, 22, 22)
    assert len(app.figure.data[0].x) == 22 and app.query.max == 21 and app.query.value == 21
    np.testing.assert_allclose(
        z_lower(app.figure.data[0].z),
        expected_attention(model, tokenizer, "the dog sat on the log", 0, 0),
        atol=1e-4,
    )
    app.layer.value, app.head.value = 1, 1
    np.testing.assert_allclose(
        z_lower(app.figure.data[0].z),
        expected_attention(model, tokenizer, "the dog sat on the log", 1, 1),
        atol=1e-4,
    )
    app.query.value = 4
    np.testing.assert_allclose(app.bars.figure.data[0].y, app.attentions[1, 1, 4], atol=1e-4)
    app.view.value = "all heads"
    assert len(app.figure.data) == 2 and not app.figure.layout.updatemenus  # the app's own selectors rule
    app.close()


def test_attention_explorer_mean_over_heads_and_all_heads_follow_the_chosen_layer(
    model, tokenizer, monkeypatch
):
    monkeypatch.setattr(widgets, "_figure_widget_available", lambda: False)
    text = "the cat sat"
    app = widgets.AttentionExplorer(model, tokenizer, text, layer=1)
    with torch.no_grad():
        out = model(torch.tensor([tokenizer.encode(text)]), return_attention=True)
    layer1 = out.attentions[1][0].numpy()  # (H, T, T)
    lower = np.tril_indices(layer1.shape[-1])
    app.head.value = None  # "mean over heads"
    np.testing.assert_allclose(z_lower(app.figure.data[0].z), layer1.mean(0)[lower], atol=1e-4)
    np.testing.assert_allclose(app.bars.figure.data[0].y, layer1.mean(0)[-1], atol=1e-4)
    app.view.value = "all heads"
    for h, trace in enumerate(app.figure.data):
        np.testing.assert_allclose(z_lower(trace.z), layer1[h][lower], atol=1e-3)
    app.close()


def test_attention_explorer_starts_on_text_it_cannot_encode_and_explains_edge_cases(model, tokenizer):
    app = widgets.AttentionExplorer(model, tokenizer, "zebra")  # the reader's first text has unknown chars
    assert "cannot encode" in app.status.value
    assert app.tokens == [tokenizer.id_to_token(tokenizer.bos_id)] and len(app.figure.data[0].x) == 1
    app.text.value = ""
    assert "empty" in app.status.value and len(app.figure.data[0].x) == 1
    app.text.value = "the cat sat on the mat. " * 3  # 72 tokens, more than block_size=32
    assert "72 tokens" in app.status.value and "last 32" in app.status.value
    assert len(app.figure.data[0].x) == 32 and app.query.max == 31
    app.close()


def test_attention_explorer_shows_an_unexpected_error_in_its_status(model, tokenizer, monkeypatch):
    app = widgets.AttentionExplorer(model, tokenizer, "the cat")

    def broken(*args, **kwargs):
        raise RuntimeError("CUDA error: device-side assert")

    monkeypatch.setattr(viz, "attention_heatmap", broken)
    app.layer.value = 1  # the handler fails: the reader sees why, instead of a control that does nothing
    assert "RuntimeError: CUDA error" in app.status.value
    app.close()


def test_attention_explorer_shows_untypable_text_as_an_escaped_error(model, tokenizer):
    app = widgets.AttentionExplorer(model, tokenizer, "the cat")
    before = app.attentions.copy()
    app.text.value = "zebra " + XSS  # 'z' and 'b' ... are not in the char vocabulary
    assert "cannot encode" in app.status.value
    assert np.array_equal(app.attentions, before)
    app.text.value = XSS  # every character is known: it is attended over, and its labels are text
    assert app.attentions.shape[-1] == len(XSS)
    assert "<img" not in app.figure.to_json()
    ref = weakref.ref(app)
    app.close()
    del app
    gc.collect()
    assert ref() is None  # closing releases every widget callback


# ------------------------------------------------------------------------------ training dashboard


class StopAt(Callback):
    """Clicks the dashboard's Stop button when the trainer reaches ``step``."""

    def __init__(self, dashboard: widgets.TrainingDashboard, step: int) -> None:
        self.dashboard, self.step = dashboard, step

    def on_step_end(self, trainer, record) -> None:
        if trainer.step == self.step:
            self.dashboard._on_stop(self.dashboard.stop_button)


def make_trainer(tokenizer, out_dir, max_iters: int = 30) -> Trainer:
    ids = torch.tensor(tokenizer.encode(TEXT))
    config = TrainConfig(
        batch_size=4,
        max_iters=max_iters,
        eval_interval=4,
        eval_iters=1,
        warmup_iters=2,
        progress=False,
        seed=0,
    )
    return Trainer(tiny_model(tokenizer), ids[:500], ids[500:], config, tokenizer=tokenizer, out_dir=out_dir)


def test_dashboard_streams_history_and_stop_ends_training_with_a_checkpoint(tokenizer, tmp_path):
    trainer = make_trainer(tokenizer, tmp_path)
    dashboard = widgets.TrainingDashboard(trainer, redraw_interval_s=0.0)
    assert dashboard in trainer.callbacks and len(dashboard.figure.data[0].x) == 0
    trainer.callbacks.append(StopAt(dashboard, 7))
    dashboard._on_start(dashboard.start_button)  # training runs in a background thread
    dashboard.wait(timeout=120)
    assert not dashboard.running and dashboard.error is None
    assert trainer.step == 7  # stopped right after the step in which Stop was clicked
    assert dashboard.redraws >= 7  # the curves were redrawn while training ran, not only at the end
    assert list(dashboard.figure.data[0].x) == list(range(1, 8))
    # The figure holds 4 significant digits (what hover shows).
    np.testing.assert_allclose(dashboard.figure.data[0].y, trainer.history.column("train_loss"), rtol=5e-4)
    assert list(dashboard.figure.data[1].x) == [4]  # validation ran at step 4 only
    assert "stopped" in dashboard.status.value
    checkpoint = load_checkpoint(tmp_path)
    assert checkpoint.trainer_state["step"] == 7
    # Stop ends this run, not the training: the Start button now continues it to max_iters.
    assert not dashboard.start_button.disabled and dashboard.start_button.description == "Continue"
    trainer.callbacks = [cb for cb in trainer.callbacks if not isinstance(cb, StopAt)]
    dashboard._on_start(dashboard.start_button)
    dashboard.wait(timeout=120)
    assert dashboard.error is None and trainer.step == 30
    assert trainer.history.column("step") == list(range(1, 31))
    assert "done" in dashboard.status.value and dashboard.start_button.disabled


def test_dashboard_throttles_redraws(tokenizer, tmp_path):
    trainer = make_trainer(tokenizer, tmp_path, max_iters=12)
    dashboard = widgets.TrainingDashboard(trainer, redraw_interval_s=3600.0, redraw_every_steps=5)
    dashboard.start()
    dashboard.wait(timeout=120)
    # The first step, steps 5 and 10, and the final redraw at the end of training.
    assert dashboard.redraws == 4
    assert len(dashboard.figure.data[0].x) == 12
    dashboard.close()


def test_closing_a_dashboard_removes_its_callback_and_frees_it(tokenizer, tmp_path):
    trainer = make_trainer(tokenizer, tmp_path, max_iters=3)
    dashboard = widgets.TrainingDashboard(trainer)
    dashboard.start()
    dashboard.wait(timeout=120)
    ref = weakref.ref(dashboard)
    dashboard.close()
    assert dashboard not in trainer.callbacks
    del dashboard
    gc.collect()
    assert ref() is None  # no widget, handler or trainer keeps the closed dashboard alive


class Gate(Callback):
    """Holds training at ``step`` until the test opens the gate, so the test can act while it runs."""

    def __init__(self, step: int) -> None:
        self.step, self.reached, self.open = step, threading.Event(), threading.Event()

    def on_step_end(self, trainer, record) -> None:
        if trainer.step == self.step:
            self.reached.set()
            self.open.wait(timeout=120)


def training_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "arlm-training"]


def test_a_cell_run_twice_replaces_its_dashboard_and_never_trains_twice_at_once(tokenizer, tmp_path):
    trainer = make_trainer(tokenizer, tmp_path, max_iters=40)
    gate = Gate(step=2)
    trainer.callbacks.append(gate)
    first = widgets.TrainingDashboard(trainer, redraw_interval_s=0.0)
    first._on_start(first.start_button)
    assert gate.reached.wait(timeout=120)
    second = widgets.TrainingDashboard(trainer, redraw_interval_s=0.0)  # the reader runs the cell again
    # One dashboard per trainer: the first one's callback and widgets are gone.
    assert [cb for cb in trainer.callbacks if isinstance(cb, widgets.TrainingDashboard)] == [second]
    assert first.trainer is None
    # The new dashboard follows the run already going: Start is off, Stop is on and works.
    assert second.running and second.start_button.disabled and not second.stop_button.disabled
    second._on_start(second.start_button)
    assert len(training_threads()) == 1
    second._on_stop(second.stop_button)
    gate.open.set()
    second.wait(timeout=120)
    assert not training_threads() and second.error is None
    steps = trainer.history.column("step")
    assert steps == [1, 2]  # one run, its steps in order, stopped where Stop was clicked
    assert "stopped" in second.status.value and list(second.figure.data[0].x) == steps
    second.close()


def test_dashboard_shows_a_training_error_and_clicking_start_after_the_end_does_nothing(tokenizer, tmp_path):
    class Boom(Callback):
        def on_step_end(self, trainer, record) -> None:
            if trainer.step == 2:
                raise RuntimeError("out of memory")

    trainer = make_trainer(tokenizer, tmp_path, max_iters=3)
    boom = Boom()
    trainer.callbacks.append(boom)
    dashboard = widgets.TrainingDashboard(trainer)
    dashboard._on_start(dashboard.start_button)
    dashboard.wait(timeout=120)
    assert isinstance(dashboard.error, RuntimeError)
    assert "training failed: RuntimeError: out of memory" in dashboard.status.value
    assert not dashboard.start_button.disabled and dashboard.stop_button.disabled
    trainer.callbacks.remove(boom)
    dashboard._on_start(dashboard.start_button)
    dashboard.wait(timeout=120)
    assert trainer.step == 3 and dashboard.error is None and dashboard.start_button.disabled
    dashboard._on_start(dashboard.start_button)  # nothing left to train: no thread, a message
    assert not dashboard.running and "nothing left to train" in dashboard.status.value
    dashboard.close()


# ------------------------------------------------------------------------------ sampling playground


def test_playground_chart_reshapes_with_the_sliders(model, tokenizer):
    app = widgets.SamplingPlayground(model, tokenizer, "the c", max_new_tokens=8)
    raw_before = list(app.figure.data[0].y)
    processed_before = list(app.figure.data[1].y)
    app.temperature.value = 0.7
    app.top_k.value = 3
    expected = GenerationConfig(
        max_new_tokens=8, temperature=0.7, top_k=3, top_p=1.0, min_p=0.0, typical_p=1.0
    )
    assert app.config() == expected
    assert list(app.figure.data[0].y) == raw_before  # the model's own distribution does not move
    assert list(app.figure.data[1].y) != processed_before
    raw, processed = viz.next_token_probs(model, tokenizer.encode("the c"), app.config())
    shown = [int(c.rsplit("#", 1)[1]) for c in app.figure.data[1].x]
    np.testing.assert_allclose(app.figure.data[1].y, processed[shown], atol=1e-5)
    assert (processed > 0).sum() == 3 and sum(v > 0 for v in app.figure.data[1].y) <= 3
    app.prompt.value = "the d"  # a new prompt: a new distribution
    assert list(app.figure.data[0].y) != raw_before
    app.close()


def test_playground_chart_leaves_out_a_padded_vocabulary(tokenizer):
    """A model with more rows than its tokenizer has ids: the chart ranks only ids it can label."""
    n = tokenizer.vocab_size
    torch.manual_seed(0)
    padded = GPT(GPTConfig(vocab_size=n + 5, block_size=32, n_layer=1, n_head=2, n_embd=16))

    def favour_padding(module, args, output) -> None:  # the padding rows would be the most likely
        output.logits[..., n:] += 50.0

    handle = padded.register_forward_hook(favour_padding)
    try:
        app = widgets.SamplingPlayground(padded, tokenizer, "the c", max_new_tokens=4)
        shown = [int(c.rsplit("#", 1)[1]) for c in app.figure.data[0].x]
        assert shown and max(shown) < n
        app.top_p.value = 0.5
        assert max(int(c.rsplit("#", 1)[1]) for c in app.figure.data[1].x) < n
        app.close()
    finally:
        handle.remove()


def test_playground_generates_the_same_tokens_as_generate_and_escapes_the_prompt(model, tokenizer):
    app = widgets.SamplingPlayground(model, tokenizer, XSS, max_new_tokens=12, seed=5)
    app.temperature.value, app.top_p.value = 0.8, 0.9
    app._generate()
    expected = [
        s.tokens[0].token_id
        for s in generate(model, tokenizer.encode(XSS), app.config(), seed=5, tokenizer=tokenizer)
    ]
    assert [t.token_id for t in app.generated] == expected and len(expected) == 12
    assert app.output.value.count('class="arlm-token"') == 12
    assert "<img" not in app.output.value and "&lt;img src=x onerror=alert(1)&gt;" in app.output.value
    assert "done: 12 tokens" in app.status.value
    assert not app.generate_button.disabled and app.stop_button.disabled
    ref = weakref.ref(app)
    app.close()
    del app
    gc.collect()
    assert ref() is None  # closing releases every widget callback


def test_playground_stop_ends_generation_after_the_current_token(model, tokenizer, monkeypatch):
    app = widgets.SamplingPlayground(model, tokenizer, "the ", max_new_tokens=200, redraw_interval_s=0.0)
    shown = []

    def show_and_stop():
        shown.append(len(app.generated))
        if len(app.generated) >= 3:
            app._on_stop(app.stop_button)

    monkeypatch.setattr(app, "_show", show_and_stop)
    app._on_generate(app.generate_button)  # in a background thread, as the button does
    app.wait(timeout=60)
    assert len(app.generated) == 3 and shown[:3] == [1, 2, 3]  # streamed token by token
    assert "stopped: 3 tokens" in app.status.value
    app.close()


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"max_new_tokens": -5}, r"max_new_tokens=-5 is not allowed: it must be an integer >= 1"),
        ({"max_new_tokens": 2.5}, r"max_new_tokens=2.5 is not allowed"),
        ({"seed": 1.5}, r"seed=1.5 is not allowed: it must be an integer"),
        ({"chart_top": 0}, r"chart_top=0 is not allowed: it must be an integer >= 1"),
        ({"top_alternatives": -1}, r"top_alternatives=-1 is not allowed"),
        ({"redraw_interval_s": float("nan")}, r"redraw_interval_s=nan is not allowed"),
        ({"prompt": None}, r"prompt must be a str, got NoneType"),
    ],
)
def test_playground_names_a_bad_argument_instead_of_clamping_it(model, tokenizer, kwargs, message):
    # The sliders used to clamp these into their ranges: max_new_tokens=-5 became 1, seed=1.5 became 1.
    with pytest.raises(ConfigError, match=message):
        widgets.SamplingPlayground(model, tokenizer, **kwargs)


def test_apps_name_bad_layers_heads_and_swapped_arguments(model, tokenizer):
    with pytest.raises(ConfigError, match=r"layer=9 is out of range: it must be an integer in 0..1"):
        widgets.AttentionExplorer(model, tokenizer, "the cat", layer=9)  # was traitlets' "Invalid selection"
    with pytest.raises(ConfigError, match=r"head=1.0 is out of range"):
        widgets.AttentionExplorer(model, tokenizer, "the cat", head=1.0)
    with pytest.raises(ConfigError, match=r"text must be a str, got list"):
        widgets.AttentionExplorer(model, tokenizer, ["the", "cat"])
    with pytest.raises(GenerationError, match=r"the call is AttentionExplorer\(model, tokenizer, text\)"):
        widgets.AttentionExplorer(tokenizer, model, "the cat")
    with pytest.raises(GenerationError, match=r"the call is SamplingPlayground\(model, tokenizer, prompt\)"):
        widgets.SamplingPlayground(model, "the c")


def test_playground_reports_a_prompt_it_cannot_encode(model, tokenizer):
    app = widgets.SamplingPlayground(model, tokenizer, "zebra")
    assert "cannot encode" in app.status.value
    app._generate()
    assert app.generated == [] and "cannot encode" in app.status.value
    app.close()


def test_playground_explains_edge_settings_and_clears_a_failed_run(model, tokenizer, recwarn):
    app = widgets.SamplingPlayground(model, tokenizer, "the ", max_new_tokens=4)
    app._generate()
    assert app.output.value.count('class="arlm-token"') == 4
    chart = [list(t.y) for t in app.figure.data]
    app.prompt.value = "zebra"  # a prompt the tokenizer cannot encode
    assert "cannot encode" in app.status.value
    assert [list(t.y) for t in app.figure.data] == chart  # the last real chart stays, no made-up one
    app._generate()
    assert "cannot encode" in app.status.value and app.output.value == ""  # not the last run's text
    app.prompt.value = ""
    assert "empty prompt" in app.status.value
    app.top_k.value, app.top_p.value, app.min_p.value, app.typical_p.value = 3, 0.5, 0.1, 0.5
    app.temperature.value = 0.0
    assert "greedy" in app.status.value
    # Greedy ignores the filter sliders: they are left out of the config, which would otherwise warn.
    config = app.config()
    assert config.top_k is None and config.top_p == 1.0 and config.min_p == 0.0 and config.typical_p == 1.0
    assert config.greedy
    app.prompt.value = "the cat sat on the mat. " * 2  # 48 tokens, more than block_size=32
    assert "48 tokens" in app.status.value and "last 32" in app.status.value
    app._generate()
    assert "done: 4 tokens" in app.status.value and "last 32" in app.status.value
    # Said in the status, not as a warning printed into whichever cell the kernel is running.
    assert not [w for w in recwarn if "context window" in str(w.message)]
    assert not [w for w in recwarn if "has no effect" in str(w.message)]
    app.close()


def test_playground_shows_any_generation_error_in_its_status(model, tokenizer, monkeypatch):
    app = widgets.SamplingPlayground(model, tokenizer, "the ", max_new_tokens=4)

    def broken(*args, **kwargs):
        raise RuntimeError("MPS backend out of memory")

    monkeypatch.setattr(widgets, "generate", broken)
    app._on_generate(app.generate_button)  # in a thread: its exception must not vanish
    app.wait(timeout=60)
    assert "RuntimeError: MPS backend out of memory" in app.status.value
    assert not app.generate_button.disabled and app.stop_button.disabled
    app.close()


# ------------------------------------------------------------------------------- in a real kernel

KERNEL_CODE = """
import torch
from arlm_lib import widgets
from arlm_lib.model import GPT, GPTConfig
from arlm_lib.tokenizers import CharTokenizer
widgets._figure_widget_available = lambda: False  # the Output fallback: it only draws inside a kernel
tok = CharTokenizer.train("the cat sat on the mat.")
torch.manual_seed(0)
app = widgets.AttentionExplorer(GPT(GPTConfig(vocab_size=tok.vocab_size, block_size=32, n_layer=1,
                                              n_head=2, n_embd=8)), tok, "the cat")
app.text.value = "the mat sat"
bundle = app.heatmap.widget.outputs[0]["data"]["application/vnd.plotly.v1+json"]
print("x labels:", len(bundle["data"][0]["x"]))
"""


@pytest.mark.slow
def test_output_fallback_draws_into_its_widget_in_a_kernel():
    nbformat = require_module("nbformat")
    nbclient = require_module("nbclient")
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(KERNEL_CODE)])
    nbclient.NotebookClient(nb, timeout=120, kernel_name="python3").execute()
    outputs = nb.cells[0].outputs
    assert [o.output_type for o in outputs] == ["stream"]  # no figure leaked into the running cell
    assert "x labels: 11" in outputs[0].text


def test_attention_explorer_keeps_the_last_block_of_a_long_text(model, tokenizer):
    text = "the cat sat on the mat. the dog sat on the log. "  # 48 tokens, block_size is 32
    ids = tokenizer.encode(text)
    app = widgets.AttentionExplorer(model, tokenizer, text)
    assert app.tokens == [tokenizer.id_to_token(i) for i in ids[-32:]]
    np.testing.assert_allclose(app.attentions, viz.model_attention(model, ids[-32:]), atol=1e-6)
    app.close()


@pytest.mark.parametrize("slider, value", [("min_p", 0.2), ("typical_p", 0.3)])
def test_playground_mass_sliders_reach_the_config_and_the_chart(model, tokenizer, slider, value):
    app = widgets.SamplingPlayground(model, tokenizer, "the c", max_new_tokens=8)
    before = list(app.figure.data[1].y)
    getattr(app, slider).value = value
    assert getattr(app.config(), slider) == pytest.approx(value)
    config = GenerationConfig(**{slider: value})
    _, processed = viz.next_token_probs(model, tokenizer.encode("the c"), config)
    shown = [int(c.rsplit("#", 1)[1]) for c in app.figure.data[1].x]
    np.testing.assert_allclose(app.figure.data[1].y, processed[shown], atol=1e-5)
    assert list(app.figure.data[1].y) != before  # the slider really moved the chart
    app.close()


def test_playground_sliders_cannot_reach_an_invalid_setting(model, tokenizer):
    # Each filter slider, at either end of its range, must give a valid config (top-p and typical-p
    # refuse 0, min-p refuses 1): a slider that can reach a refused value breaks the chart mid-drag.
    app = widgets.SamplingPlayground(model, tokenizer, "the c", max_new_tokens=8)
    # Temperature last: at 0 (greedy) the config leaves the filters out, so it would hide them.
    for slider in (app.top_k, app.top_p, app.min_p, app.typical_p, app.temperature):
        start = slider.value
        for value in (slider.min, slider.max):
            slider.value = value
            app.config()  # raises GenerationError on a refused value
        slider.value = start
    app.close()


def test_closing_a_dashboard_stops_the_run_it_started(tokenizer, tmp_path):
    trainer = make_trainer(tokenizer, tmp_path, max_iters=40)
    gate = Gate(step=2)
    trainer.callbacks.append(gate)
    dashboard = widgets.TrainingDashboard(trainer, redraw_interval_s=0.0)
    dashboard.start()
    assert gate.reached.wait(timeout=120)
    dashboard.close()  # with the dashboard gone, nothing else could stop the run
    gate.open.set()
    for thread in training_threads():
        thread.join(timeout=120)
    assert not training_threads()
    assert trainer.step == 2 and trainer.stop_requested


def test_dashboard_says_start_before_the_first_step(tokenizer):
    dashboard = widgets.TrainingDashboard(make_trainer(tokenizer, None, max_iters=3))
    assert dashboard.start_button.description == "Start" and not dashboard.start_button.disabled
    dashboard.close()


def test_a_stopped_run_without_a_run_directory_does_not_claim_a_checkpoint(tokenizer):
    trainer = make_trainer(tokenizer, None, max_iters=30)
    dashboard = widgets.TrainingDashboard(trainer, redraw_interval_s=0.0)
    trainer.callbacks.append(StopAt(dashboard, 3))
    dashboard.start()
    dashboard.wait(timeout=120)
    assert trainer.step == 3 and dashboard.error is None
    assert "stopped" in dashboard.status.value and "checkpoint" not in dashboard.status.value
    dashboard.close()


def test_playground_notes_only_a_prompt_longer_than_the_context(model, tokenizer):
    app = widgets.SamplingPlayground(model, tokenizer, "the cat sat on the mat. the dog ", max_new_tokens=1)
    assert len(tokenizer.encode(app.prompt.value)) == model.config.block_size
    assert "last" not in app.status.value  # exactly the context: nothing is cut off
    app._generate()
    assert "done: 1 token" in app.status.value and "1 tokens" not in app.status.value
    app.close()
