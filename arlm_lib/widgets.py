"""Kernel apps (ipywidgets 8) that drive :mod:`arlm_lib.viz` from a live Python kernel.

* :class:`AttentionExplorer`: type a sentence, its attention is recomputed; pick layer, head, query.
* :class:`TrainingDashboard`: a training :class:`~arlm_lib.train.Callback` that streams the curves, with
  Start and Stop buttons.
* :class:`SamplingPlayground`: prompt, sampling sliders, streamed tokens coloured by probability, and a
  next-token chart that reshapes as the sliders move.

Each app draws only figures that a :mod:`arlm_lib.viz` builder made, shows them in a plotly
``FigureWidget`` (plain figures in an ``Output`` when ``anywidget``, which plotly >= 6 needs for
FigureWidget, is missing), and exposes ``.widget`` to display. Every control is an attribute, and the
click handlers are plain methods, so tests drive an app headlessly: set ``app.text.value``, call
``app.start()`` / ``app._generate()``, read ``app.figure``.

Long work (training, generation) runs in a background thread when started from a button: the kernel
stays free to handle the Stop click and to send the figure updates. That works the same in JupyterLab,
classic Notebook and VS Code. In the static book, show these apps with
:func:`arlm_lib.display.show_widget`, which puts a note with a launch link in their place.
"""

from __future__ import annotations

import functools
import html
import math
import threading
import time
import weakref
from collections.abc import Callable
from typing import Any

import ipywidgets as widgets
import plotly.graph_objects as go
import torch

from . import viz
from .checks import check_count, is_int, is_real, is_seed
from .errors import ArlmError, ConfigError
from .generate import GenerationConfig, generate
from .generation.context import check_model
from .generation.sampling import check_tokenizer
from .train import Callback, Trainer

__all__ = ["AttentionExplorer", "FigureView", "SamplingPlayground", "TrainingDashboard"]


def _figure_widget_available() -> bool:
    try:
        import anywidget  # noqa: F401  (plotly's FigureWidget is built on it)
    except ImportError:
        return False
    return True


def _in_kernel() -> bool:
    try:
        from IPython import get_ipython
    except ImportError:  # pragma: no cover - IPython ships with ipywidgets
        return False
    shell = get_ipython()
    return shell is not None and getattr(shell, "kernel", None) is not None


def _status_html(message: str, error: bool = False) -> str:
    color = "#b00020" if error else "#555555"
    return f'<span style="color: {color};">{html.escape(message)}</span>'


def _error_text(err: BaseException) -> str:
    """An error as one line for a status label: arlm_lib's own messages as they are, others with their type."""
    return str(err) if isinstance(err, ArlmError) else f"{type(err).__name__}: {err}"


def _reports_errors(handler: Callable[..., None]) -> Callable[..., None]:
    """Show an error a control's handler raises in the app's ``status`` label.

    ipywidgets sends an exception raised in an ``observe`` handler to the front end's log, not to the
    notebook: the reader would see a control that silently does nothing.
    """

    @functools.wraps(handler)
    def wrapper(self: Any, *args: Any, **kwargs: Any) -> None:
        try:
            handler(self, *args, **kwargs)
        except Exception as err:  # noqa: BLE001 - shown to the reader instead of lost in the log
            self.status.value = _status_html(_error_text(err), error=True)

    return wrapper


def _check_interval(name: str, value: Any) -> float:
    if not is_real(value) or not math.isfinite(value) or value < 0:
        raise ConfigError(f"{name}={value!r} is not allowed: it must be a number of seconds >= 0")
    return float(value)


def _check_text(name: str, value: Any) -> str:
    if not isinstance(value, str):
        raise ConfigError(f"{name} must be a str, got {type(value).__name__} ({value!r:.60})")
    return value


def _check_choice(name: str, value: Any, size: int) -> int:
    """An index into ``size`` choices (a dropdown's), as a plain int."""
    if not is_int(value) or not 0 <= value < size:
        raise ConfigError(f"{name}={value!r} is out of range: it must be an integer in 0..{size - 1}")
    return int(value)


def _tokens_text(n: int) -> str:
    return f"{n} token" if n == 1 else f"{n} tokens"


class FigureView:
    """The figure an app shows, kept in step with the builder's output.

    ``figure`` is a ``go.FigureWidget`` where anywidget is installed; otherwise a ``go.Figure`` that is
    re-displayed in an ``Output`` widget after each change (``use_widget=False`` forces this).
    """

    def __init__(self, fig: go.Figure, use_widget: bool | None = None) -> None:
        use_widget = _figure_widget_available() if use_widget is None else use_widget
        if use_widget:
            self.figure: go.Figure = go.FigureWidget(fig)
            self.widget: widgets.Widget = self.figure
        else:
            self.figure = go.Figure(fig)
            self.widget = widgets.Output()
        self._live = use_widget
        self.refresh()

    def replace(self, fig: go.Figure) -> None:
        """Show ``fig`` (a new figure from a viz builder) in place of the current one."""
        with self.figure.batch_update():
            self.figure.data = ()
            self.figure.add_traces(list(fig.data))
            self.figure.layout = fig.layout
        self.refresh()

    def refresh(self) -> None:
        """Redraw after an in-place change (a FigureWidget redraws itself)."""
        if self._live or not _in_kernel():
            return
        # The bundle of plotly's default renderer for this front end (display() would print the figure
        # into the running cell instead). Setting ``outputs`` in one assignment is safe from the training
        # thread, where ``with output:`` would capture whatever cell the kernel is running.
        data = self.figure._repr_mimebundle_()
        self.widget.outputs = ({"output_type": "display_data", "data": data, "metadata": {}},)

    def close(self) -> None:
        self.widget.close()


def _close_tree(widget: widgets.Widget) -> None:
    """Close a widget and every widget inside it: a Box left open keeps its children (and their click
    handlers, and so the app) alive in ipywidgets' registry."""
    for child in getattr(widget, "children", ()):
        _close_tree(child)
    for part in (getattr(widget, "style", None), getattr(widget, "layout", None)):
        if isinstance(part, widgets.Widget):
            part.close()
    widget.close()


def _run_in_thread(target: Callable[[], None], name: str) -> threading.Thread:
    thread = threading.Thread(target=target, name=name, daemon=True)
    thread.start()
    return thread


# ------------------------------------------------------------------------------- attention explorer


class AttentionExplorer:
    """Type a text and see every head's attention over it; pick layer, head, view and query token.

    ``explorer.attentions`` is the model's (n_layer, n_head, T, T) attention on the text; the text is
    cut to its last ``block_size`` tokens.
    """

    def __init__(
        self, model: torch.nn.Module, tokenizer: Any, text: str = "", *, layer: int = 0, head: int = 0
    ) -> None:
        call = "AttentionExplorer(model, tokenizer, text)"
        check_model(model, call)
        check_tokenizer(tokenizer, call)
        self.model, self.tokenizer = model, tokenizer
        n_layer, n_head = model.config.n_layer, model.config.n_head
        text = _check_text("text", text)
        layer, head = _check_choice("layer", layer, n_layer), _check_choice("head", head, n_head)
        self.text = widgets.Text(
            value=text, description="text", continuous_update=False, layout=widgets.Layout(width="95%")
        )
        self.layer = widgets.Dropdown(
            options=[(f"layer {i}", i) for i in range(n_layer)], value=layer, description="layer"
        )
        self.head = widgets.Dropdown(
            options=[(f"head {i}", i) for i in range(n_head)] + [("mean over heads", None)],
            value=head,
            description="head",
        )
        self.view = widgets.ToggleButtons(options=["one head", "all heads"], value="one head")
        self.query = widgets.IntSlider(value=0, min=0, max=0, description="query", continuous_update=False)
        self.status = widgets.HTML()
        self.attentions = None
        self.tokens: list[str] = []
        self._moving_query = False
        self._compute()
        self.heatmap = FigureView(self._heatmap_figure())
        self.bars = FigureView(self._bars_figure())
        self.figure = self.heatmap.figure  # the main figure, for tests and notebooks
        self.text.observe(self._on_text, names="value")
        for control in (self.layer, self.head, self.view):
            control.observe(self._on_selection, names="value")
        self.query.observe(self._on_query, names="value")
        self.widget = widgets.VBox(
            [
                self.text,
                widgets.HBox([self.layer, self.head, self.view]),
                self.status,
                self.heatmap.widget,
                self.query,
                self.bars.widget,
            ]
        )

    def _compute(self) -> None:
        """Encode the text and recompute the attention; a text the tokenizer rejects keeps the last one
        (or, when there is none yet, shows the document-start token)."""
        error = ""
        try:
            ids = self.tokenizer.encode(self.text.value)
        except ArlmError as err:
            if self.attentions is not None:
                self.status.value = _status_html(str(err), error=True)
                return
            error, ids = str(err), []
        block = self.model.config.block_size
        if error:
            note = ""
        elif not ids:
            note = "the text is empty: showing the document-start token"
        elif len(ids) > block:
            note = f"the text has {len(ids)} tokens: showing its last {block}, the model's context"
        else:
            note = _tokens_text(len(ids))
        ids = ids[-block:] or [self.tokenizer.bos_id]
        self.attentions = viz.model_attention(self.model, ids)
        self.tokens = [self.tokenizer.id_to_token(i) for i in ids]
        self.status.value = _status_html(error, error=True) if error else _status_html(note)
        # The query slider spans the new text, pointing at its last token (no redraw per change).
        self._moving_query = True
        try:
            self.query.value = min(self.query.value, len(ids) - 1)
            self.query.max = len(ids) - 1
            self.query.value = len(ids) - 1
        finally:
            self._moving_query = False

    def _heatmap_figure(self) -> go.Figure:
        if self.view.value == "all heads":
            return viz.attention_grid(self.attentions, self.tokens, layer=self.layer.value, controls=False)
        return viz.attention_heatmap(
            self.attentions, self.tokens, layer=self.layer.value, head=self.head.value
        )

    def _bars_figure(self) -> go.Figure:
        return viz.token_attention_bars(
            self.attentions,
            self.tokens,
            query_index=self.query.value,
            layer=self.layer.value,
            head=self.head.value,
            controls=False,
        )

    def redraw(self) -> None:
        """Rebuild both figures from the current attention and selections."""
        self.heatmap.replace(self._heatmap_figure())
        self.bars.replace(self._bars_figure())

    @_reports_errors
    def _on_text(self, change: dict) -> None:
        before = self.attentions
        self._compute()
        if self.attentions is not before:  # a rejected text changes nothing: nothing to redraw
            self.redraw()

    @_reports_errors
    def _on_selection(self, change: dict) -> None:
        self.redraw()

    @_reports_errors
    def _on_query(self, change: dict) -> None:
        if not self._moving_query:
            self.bars.replace(self._bars_figure())

    def close(self) -> None:
        """Close every widget and drop the model."""
        _close_tree(self.widget)
        self.heatmap.close()
        self.bars.close()
        self.model = self.tokenizer = self.attentions = None


# ------------------------------------------------------------------------------- training dashboard


#: The thread training each trainer that a dashboard started. One run per trainer, whichever of its
#: dashboards started it: a cell run twice makes a second dashboard, and it must not start a second
#: ``trainer.train()`` beside the first (two threads stepping one model and one optimizer).
_TRAINING_THREADS: weakref.WeakKeyDictionary[Trainer, threading.Thread] = weakref.WeakKeyDictionary()
_TRAINING_LOCK = threading.Lock()


def _training_thread(trainer: Trainer) -> threading.Thread | None:
    """The live thread a dashboard started to train ``trainer``, if any."""
    thread = _TRAINING_THREADS.get(trainer)
    return thread if thread is not None and thread.is_alive() else None


class TrainingDashboard(Callback):
    """Live training curves with Start and Stop buttons; a :class:`~arlm_lib.train.Callback`.

    Creating it adds it to ``trainer.callbacks``; :meth:`close` removes it. A trainer has one dashboard:
    a new one (the same cell run again) replaces the trainer's earlier dashboards, and takes over a run
    one of them started, so its Stop button works and its curves stream. The figure is
    :func:`arlm_lib.viz.training_curves` of ``trainer.history``, redrawn at most every
    ``redraw_interval_s`` seconds (and every ``redraw_every_steps`` steps, if given) and at the end.

    Start runs ``trainer.train()`` in a background thread, so the notebook stays responsive and Stop
    works (JupyterLab, classic Notebook, VS Code). Stop calls ``trainer.request_stop()``: training ends
    after the current step and the trainer writes its checkpoint; Start (now "Continue") then resumes the
    same run. Calling ``trainer.train()`` in a cell yourself also streams into the dashboard, but then the
    busy kernel cannot receive the Stop click; interrupt the kernel instead.
    """

    def __init__(
        self,
        trainer: Trainer,
        *,
        redraw_interval_s: float = 0.5,
        redraw_every_steps: int | None = None,
        max_points: int = 2000,
        log_y: bool = False,
    ) -> None:
        self.trainer: Trainer | None = trainer
        self.redraw_interval_s = redraw_interval_s
        self.redraw_every_steps = redraw_every_steps
        self.max_points = max_points
        self.redraws = 0
        self.error: BaseException | None = None
        self._last_draw = 0.0
        self._thread: threading.Thread | None = None
        self.start_button = widgets.Button(description="Start", button_style="success", icon="play")
        self.stop_button = widgets.Button(
            description="Stop", button_style="danger", icon="stop", disabled=True
        )
        self.status = widgets.HTML(_status_html(self._progress_text("ready")))
        self.view = FigureView(viz.training_curves(trainer.history, log_y=log_y, max_points=max_points))
        self.figure = self.view.figure
        self.start_button.on_click(self._on_start)
        self.stop_button.on_click(self._on_stop)
        self.widget = widgets.VBox(
            [widgets.HBox([self.start_button, self.stop_button, self.status]), self.view.widget]
        )
        for earlier in self._dashboards(trainer):
            earlier._close(stop=False)  # replaced by this one: no duplicate callbacks, no dead controls
        trainer.callbacks.append(self)
        self._thread = _training_thread(trainer)  # a run an earlier dashboard started
        self._show_state("training" if self.running else None)

    # -- state
    @property
    def running(self) -> bool:
        """True while the background training thread runs."""
        return self._thread is not None and self._thread.is_alive()

    def _progress_text(self, state: str) -> str:
        trainer = self.trainer
        if trainer is None:
            return state
        return f"{state}: step {trainer.step} / {trainer.config.max_iters}"

    def _show_state(self, state: str | None = None, running: bool | None = None) -> None:
        """Set the buttons (and, given ``state``, the status) for a running or an idle trainer;
        ``running`` defaults to whether this dashboard's training thread is alive."""
        trainer = self.trainer
        if trainer is None:
            return
        running = self.running if running is None else running
        self.stop_button.disabled = not running
        self.start_button.disabled = running or trainer.step >= trainer.config.max_iters
        self.start_button.description = "Continue" if trainer.step > 0 else "Start"
        if state is not None:
            self.status.value = _status_html(self._progress_text(state))

    # -- buttons
    def start(self) -> None:
        """Start (or continue) training in a background thread (what the Start button does)."""
        if self.trainer is None:
            raise ArlmError("this dashboard is closed: create a new one for the trainer")
        trainer = self.trainer
        with _TRAINING_LOCK:
            if self.running:
                return
            running = _training_thread(trainer)
            if running is not None:  # started by another dashboard of this trainer: follow that run
                self._thread = running
                self._show_state("training")
                return
            if trainer.step >= trainer.config.max_iters:
                self._show_state("done, nothing left to train (max_iters reached)")
                return
            trainer.clear_stop()  # a Stop clicked earlier ended that run, not this one
            self.error = None
            self._thread = threading.Thread(
                target=self._train, args=(trainer,), name="arlm-training", daemon=True
            )
            _TRAINING_THREADS[trainer] = self._thread
            # The buttons before the thread starts: a short run may be over before this line returns.
            self._show_state("training", running=True)
            self._thread.start()

    def wait(self, timeout: float | None = None) -> None:
        """Block until the background training run ends (for scripts and tests)."""
        if self._thread is not None:
            self._thread.join(timeout)

    def stop(self) -> None:
        """Ask the trainer to stop after the current step; it then saves its checkpoint."""
        if self.trainer is not None and self.running:
            self.trainer.request_stop()
            self.status.value = _status_html(self._progress_text("stopping after this step"))

    def _train(self, trainer: Trainer) -> None:
        try:
            trainer.train()
        except Exception as err:  # shown in the dashboard: a thread's exception would otherwise vanish
            # This one too when closed: a script's wait() then reads .error.
            for dashboard in {self, *self._dashboards(trainer)}:
                dashboard.error = err
                dashboard.status.value = _status_html(f"training failed: {_error_text(err)}", error=True)
        finally:
            for dashboard in self._dashboards(trainer):
                dashboard._show_state(running=False)  # this thread still counts as alive here

    @staticmethod
    def _dashboards(trainer: Trainer) -> list[TrainingDashboard]:
        """The dashboards showing ``trainer`` now (this one, or the one that replaced it)."""
        return [cb for cb in trainer.callbacks if isinstance(cb, TrainingDashboard)]

    def _on_start(self, button: widgets.Button | None = None) -> None:
        try:
            self.start()
        except Exception as err:  # noqa: BLE001 - a click handler's exception goes to the front end's log
            self.status.value = _status_html(_error_text(err), error=True)

    def _on_stop(self, button: widgets.Button | None = None) -> None:
        self.stop()

    # -- Callback hooks (called in the training thread)
    def on_train_begin(self, trainer: Trainer) -> None:
        self._last_draw = -math.inf  # the first step is drawn at once

    def on_step_end(self, trainer: Trainer, record: dict[str, Any]) -> None:
        now = time.monotonic()
        every = self.redraw_every_steps
        if now - self._last_draw >= self.redraw_interval_s or (every and trainer.step % every == 0):
            self.redraw()

    def on_train_end(self, trainer: Trainer) -> None:
        self.redraw()
        if self.error is None:
            stopped = trainer.stop_requested and trainer.step < trainer.config.max_iters
            state = (
                "stopped, checkpoint saved"
                if stopped and trainer.out_dir
                else ("stopped" if stopped else "done")
            )
            self.status.value = _status_html(self._progress_text(state))

    def redraw(self) -> None:
        """Redraw the curves from the trainer's history now."""
        trainer = self.trainer  # read once: a replacing dashboard may close this one meanwhile
        if trainer is None:
            return
        viz.update_training_curves(self.figure, trainer.history, max_points=self.max_points)
        self.view.refresh()
        self.redraws += 1
        self._last_draw = time.monotonic()
        if self.running:
            self.status.value = _status_html(self._progress_text("training"))

    def close(self) -> None:
        """Remove the dashboard from the trainer's callbacks and close its widgets.

        A run still going is asked to stop (after its current step, with its checkpoint): with the
        dashboard gone, nothing else could stop it.
        """
        self._close(stop=True)

    def _close(self, stop: bool) -> None:
        trainer, self.trainer = self.trainer, None
        if trainer is not None:
            if stop and self.running:
                trainer.request_stop()
            if self in trainer.callbacks:
                trainer.callbacks.remove(self)
        _close_tree(self.widget)
        self.view.close()


# ------------------------------------------------------------------------------- sampling playground


class SamplingPlayground:
    """Prompt, sampling sliders, Generate and Stop; tokens stream in coloured by their probability.

    The chart shows the next-token distribution after the prompt, raw and after the current settings,
    and reshapes as the sliders move. ``top_k=0``, ``top_p=1``, ``min_p=0`` and ``typical_p=1`` mean "off";
    ``temperature=0`` is greedy decoding.
    """

    def __init__(
        self,
        model: torch.nn.Module,
        tokenizer: Any,
        prompt: str = "",
        *,
        max_new_tokens: int = 100,
        top_alternatives: int = 5,
        chart_top: int = 15,
        seed: int = 0,
        redraw_interval_s: float = 0.1,
    ) -> None:
        call = "SamplingPlayground(model, tokenizer, prompt)"
        check_model(model, call)
        check_tokenizer(tokenizer, call)
        prompt = _check_text("prompt", prompt)
        # Checked here: the sliders would clamp a bad value into their range without a word (-5 became 1).
        max_new_tokens = check_count("max_new_tokens", max_new_tokens, 1)
        if not is_seed(seed):
            raise ConfigError(f"seed={seed!r} is not allowed: it must be an integer in [-2**63, 2**64)")
        self.model, self.tokenizer = model, tokenizer
        # the text is re-rendered at most this often
        self.redraw_interval_s = _check_interval("redraw_interval_s", redraw_interval_s)
        self.top_alternatives = check_count("top_alternatives", top_alternatives, 0)
        self.chart_top = check_count("chart_top", chart_top, 1)
        self.prompt = widgets.Textarea(
            value=prompt, description="prompt", continuous_update=False, layout=widgets.Layout(width="95%")
        )
        slider = {"continuous_update": False, "style": {"description_width": "initial"}}
        self.temperature = widgets.FloatSlider(
            value=1.0, min=0.0, max=2.0, step=0.05, description="temperature", **slider
        )
        vocab = tokenizer.vocab_size
        self.top_k = widgets.IntSlider(
            value=0, min=0, max=min(vocab, 200), description="top-k (0 = off)", **slider
        )
        self.top_p = widgets.FloatSlider(
            value=1.0, min=0.05, max=1.0, step=0.05, description="top-p", **slider
        )
        self.min_p = widgets.FloatSlider(
            value=0.0, min=0.0, max=0.5, step=0.01, description="min-p", **slider
        )
        self.typical_p = widgets.FloatSlider(
            value=1.0, min=0.05, max=1.0, step=0.05, description="typical-p", **slider
        )
        self.max_tokens = widgets.IntSlider(
            value=max_new_tokens, min=1, max=max(500, max_new_tokens), description="max tokens", **slider
        )
        self.seed = widgets.IntText(value=seed, description="seed")
        self.generate_button = widgets.Button(description="Generate", button_style="success", icon="play")
        self.stop_button = widgets.Button(
            description="Stop", button_style="danger", icon="stop", disabled=True
        )
        self.output = widgets.HTML()
        self.status = widgets.HTML()
        self.generated: list[Any] = []  # the GeneratedToken s of the last run
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        try:
            chart = self._chart_figure()
            self.status.value = _status_html(self._settings_note())
        except Exception as err:  # noqa: BLE001 - e.g. a prompt the tokenizer cannot encode
            self.status.value = _status_html(_error_text(err), error=True)
            chart = self._chart_figure([self.tokenizer.bos_id], "Next token at the document start")
        self.view = FigureView(chart)
        self.figure = self.view.figure
        self.generate_button.on_click(self._on_generate)
        self.stop_button.on_click(self._on_stop)
        for control in (self.prompt, self.temperature, self.top_k, self.top_p, self.min_p, self.typical_p):
            control.observe(self._on_settings, names="value")
        self.widget = widgets.VBox(
            [
                self.prompt,
                widgets.HBox([self.temperature, self.top_k]),
                widgets.HBox([self.top_p, self.min_p, self.typical_p]),
                widgets.HBox([self.max_tokens, self.seed]),
                widgets.HBox([self.generate_button, self.stop_button, self.status]),
                self.output,
                self.view.widget,
            ]
        )

    def config(self) -> GenerationConfig:
        """The GenerationConfig the controls describe. At temperature 0 (greedy) the filter sliders
        are left out: greedy decoding ignores them, and GenerationConfig warns about such a mix."""
        greedy = float(self.temperature.value) == 0
        return GenerationConfig(
            max_new_tokens=int(self.max_tokens.value),
            temperature=float(self.temperature.value),
            top_k=None if greedy else int(self.top_k.value) or None,
            top_p=1.0 if greedy else float(self.top_p.value),
            min_p=0.0 if greedy else float(self.min_p.value),
            typical_p=1.0 if greedy else float(self.typical_p.value),
        )

    def _prompt_ids(self) -> list[int]:
        return self.tokenizer.encode(self.prompt.value) or [self.tokenizer.bos_id]

    def _settings_note(self) -> str:
        """What the reader should know about the prompt and the settings (shown in the status)."""
        notes = []
        if not self.prompt.value:
            notes.append("empty prompt: the model starts at the document-start token")
        else:
            n, block = len(self.tokenizer.encode(self.prompt.value)), self.model.config.block_size
            if n > block:
                notes.append(f"the prompt has {n} tokens: the model sees only its last {block}")
        if self.temperature.value == 0:
            notes.append("temperature 0 is greedy: always the most likely token (the seed has no effect)")
        return "; ".join(notes)

    def _chart_figure(
        self, ids: list[int] | None = None, title: str = "Next token after the prompt"
    ) -> go.Figure:
        """The next-token chart; raises what encoding the prompt raises."""
        raw, processed = viz.next_token_probs(
            self.model, self._prompt_ids() if ids is None else ids, self.config(), tokenizer=self.tokenizer
        )
        return viz.next_token_distribution(
            raw, self.tokenizer, top=self.chart_top, processed=processed, title=title
        )

    @_reports_errors
    def _on_settings(self, change: dict) -> None:
        # A prompt the tokenizer rejects leaves the last chart in place, with the reason in the status.
        self.view.replace(self._chart_figure())
        self.status.value = _status_html(self._settings_note())

    def _show(self) -> None:
        """Render the prompt and the tokens generated so far into the output."""
        self.output.value = viz.generation_html(self.tokenizer, self.generated, prompt=self.prompt.value)

    def _generate(self) -> None:
        """Generate with the current settings, streaming into the output; returns when done or stopped."""
        self._stop.clear()
        self.generated = []
        self.output.value = ""  # a failed run must not leave the last run's text under its error
        self.generate_button.disabled, self.stop_button.disabled = True, False
        self.status.value = _status_html("generating")
        last_shown = -math.inf
        try:
            ids = self._prompt_ids()
            note = self._settings_note()
            # The playground's settings use no penalty that reads the cut-off history, so cropping here
            # changes nothing but the warning generate() would print into whichever cell is running.
            steps = generate(
                self.model,
                ids[-self.model.config.block_size :],
                self.config(),
                seed=int(self.seed.value),
                tokenizer=self.tokenizer,
                return_top=self.top_alternatives,
            )
            for step in steps:
                self.generated.append(step.tokens[0])
                if time.monotonic() - last_shown >= self.redraw_interval_s:
                    self._show()
                    last_shown = time.monotonic()
                if self._stop.is_set():
                    break
            self._show()
            done = f"{'stopped' if self._stop.is_set() else 'done'}: {_tokens_text(len(self.generated))}"
            self.status.value = _status_html(f"{done} ({note})" if note else done)
        except Exception as err:  # noqa: BLE001 - in a thread, an exception would otherwise vanish
            self.status.value = _status_html(_error_text(err), error=True)
        finally:
            self.generate_button.disabled, self.stop_button.disabled = False, True

    def _on_generate(self, button: widgets.Button | None = None) -> None:
        if self._thread is not None and self._thread.is_alive():
            return
        self._thread = _run_in_thread(self._generate, "arlm-generation")

    def _on_stop(self, button: widgets.Button | None = None) -> None:
        self._stop.set()

    def wait(self, timeout: float | None = None) -> None:
        """Block until a generation started by the Generate button ends."""
        if self._thread is not None:
            self._thread.join(timeout)

    def close(self) -> None:
        """Stop any generation, close every widget and drop the model."""
        self._stop.set()
        self.wait(timeout=5.0)
        _close_tree(self.widget)
        self.view.close()
        self.model = self.tokenizer = None
