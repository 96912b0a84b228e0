"""The book build contract, without a browser: how views are displayed, and what the built book holds.

- ``arlm_lib.display``: self-contained figure HTML in the book build, the native renderer elsewhere,
  stable div ids (cached outputs stay byte-identical), reader text shown literally.
- ``book/_ext/arlm_book.py``: plotly.js once per page, no duplicate inline scripts, the execution cache
  cleared when arlm_lib changes, a warning for a widget frozen into the static book.
- The built book (``make book``): no script, style or image from outside the book, plotly.js served and
  never inlined, executed outputs with no mime type myst-nb would drop, launch buttons that point at
  the notebook in the repository.
"""

from __future__ import annotations

import inspect
import json
import re
import sys
import textwrap
import types
from pathlib import Path
from typing import Any

import nbformat
import numpy as np
import plotly.graph_objects as go
import pytest
from conftest import REPO_ROOT, book_docnames

from arlm_lib import display

sys.path.insert(0, str(REPO_ROOT / "book" / "_ext"))
import arlm_book  # noqa: E402

XSS_PROMPT = "<img src=x onerror=alert(1)>"
PLOTLY_MIME = "application/vnd.plotly.v1+json"
WIDGET_MIME = "application/vnd.jupyter.widget-view+json"


def small_figure(title: str = "loss", y: tuple[float, ...] = (3.0, 2.0, 1.5)) -> go.Figure:
    fig = go.Figure(go.Scatter(x=list(range(len(y))), y=list(y), mode="lines"))
    fig.update_layout(title=title)
    return fig


# ------------------------------------------------------------------------------------ arlm_lib.display


@pytest.mark.parametrize(
    ("value", "expected"),
    [(None, False), ("", False), ("0", False), ("false", False), ("1", True), ("yes", True)],
)
def test_in_book_build_reads_the_environment(monkeypatch, value, expected):
    if value is None:
        monkeypatch.delenv(display.BOOK_BUILD_ENV, raising=False)
    else:
        monkeypatch.setenv(display.BOOK_BUILD_ENV, value)
    assert display.in_book_build() is expected


def build_small_book(src: Path, tmp_path: Path, settings: dict[str, Any]) -> str:
    """Build the Sphinx project in ``src`` (no conf.py: ``settings`` are its configuration) into
    ``tmp_path/out``, in this process; returns what the build warned."""
    from io import StringIO

    from sphinx.application import Sphinx
    from sphinx.util.docutils import docutils_namespace

    warnings = StringIO()
    # Sphinx registers its nodes with docutils, process-wide: a second build in this process would
    # warn that they are already registered, unless each build puts back what it found.
    with docutils_namespace():
        Sphinx(
            srcdir=str(src),
            confdir=None,
            outdir=str(tmp_path / "out"),
            doctreedir=str(tmp_path / "doctrees"),
            buildername="html",
            confoverrides=settings,
            status=None,
            warning=warnings,
            freshenv=True,
        ).build()
    return warnings.getvalue()


def figure_spec(html: str) -> dict[str, Any]:
    """The JSON a figure fragment hands the book's figure loader, checked to name the fragment's div."""
    div_id = re.search(r'<div id="([^"]+)" class="plotly-graph-div"', html).group(1)
    match = re.search(
        r'<script type="application/json" class="arlm-figure-spec" data-figure="([^"]+)">(.*?)</script>', html
    )
    assert match and match.group(1) == div_id, "the spec does not name its figure's div"
    return json.loads(match.group(2))


def test_figure_html_is_data_for_the_loader_and_loads_nothing():
    fig = small_figure()
    html = display.figure_html(fig)
    spec = figure_spec(html)
    assert spec["data"] == json.loads(fig.to_json())["data"], (
        "the figure's data must reach the page unchanged"
    )
    assert spec["layout"]["title"]["text"] == "loss"
    assert spec["config"] == display.PLOTLY_CONFIG, "no logo, no cloud button, responsive"
    assert "Plotly.newPlot" not in html, "figures are drawn by the loader, not while the page is parsed"
    assert "<script src" not in html and "cdn" not in html.lower()
    assert len(html) < 20_000, "plotly.js must not be inlined into a figure"


def test_figure_html_reserves_the_figure_size():
    """The box has its final height before plotly.js draws into it, so drawing never moves the text."""
    assert 'style="height:450px; width:100%;"' in display.figure_html(small_figure())
    sized = small_figure()
    sized.update_layout(height=320, width=600)
    assert 'style="height:320px; width:600px;"' in display.figure_html(sized)


def test_figure_html_sizes_from_the_template_and_from_fractional_pixels():
    templated = small_figure()
    templated.update_layout(template={"layout": {"height": 333}})
    assert 'style="height:333px; width:100%;"' in display.figure_html(templated)
    fractional = small_figure()
    fractional.update_layout(height=320.5)
    assert 'style="height:320.5px; width:100%;"' in display.figure_html(fractional)


def test_figure_html_config_overrides_the_defaults_and_keeps_the_rest():
    spec = figure_spec(display.figure_html(small_figure(), config={"responsive": False, "scrollZoom": True}))
    assert spec["config"] == {**display.PLOTLY_CONFIG, "responsive": False, "scrollZoom": True}


def test_figure_html_gives_the_same_figure_in_two_cells_two_ids(monkeypatch):
    ids = []
    for count in ("7", "8"):
        monkeypatch.setattr(display, "_execution_salt", lambda count=count: count)
        ids.append(re.search(r'id="(arlm-fig-[0-9a-f]+)"', display.figure_html(small_figure())).group(1))
    assert ids[0] != ids[1]


def test_figure_html_refuses_animation_frames():
    fig = small_figure()
    fig.frames = [go.Frame(data=[go.Scatter(y=[1, 2, 3])])]
    with pytest.raises(ValueError, match="animation frames"):
        display.figure_html(fig)


def test_figure_html_is_deterministic_and_ids_follow_content():
    first = display.figure_html(small_figure())
    again = display.figure_html(small_figure())
    other = display.figure_html(small_figure(y=(3.0, 2.5, 2.0)))
    assert first == again, "the same figure must give byte-identical HTML (cached outputs stay stable)"
    ids = [re.search(r'id="(arlm-fig-[0-9a-f]+)"', html).group(1) for html in (first, other)]
    assert ids[0] != ids[1]
    assert display.figure_html(small_figure(), div_id="chosen").count('id="chosen"') == 1


def test_reader_text_is_escaped_for_html_and_figures():
    assert display.escape(XSS_PROMPT) == "&lt;img src=x onerror=alert(1)&gt;"
    for title in (display.escape(XSS_PROMPT), XSS_PROMPT):
        html = display.figure_html(small_figure(title=title))
        assert "<img" not in html, f"an <img> tag reached the page for title {title!r}"
        assert figure_spec(html)["layout"]["title"]["text"] == title, "the title must survive intact"
    closing = "</script><script>alert(1)</script>"
    html = display.figure_html(small_figure(title=closing))
    assert html.count("</script>") == 1, "figure text closed the spec's script element"
    assert figure_spec(html)["layout"]["title"]["text"] == closing
    fig = small_figure(title=display.escape(XSS_PROMPT))
    assert json.loads(fig.to_json())["layout"]["title"]["text"] == "&lt;img src=x onerror=alert(1)&gt;"


def test_kernel_only_note_escapes_text_and_links_to_launchers():
    note = display.kernel_only(XSS_PROMPT, notebook="book/attention.ipynb")._repr_html_()
    assert "&lt;img src=x onerror=alert(1)&gt;" in note and "<img" not in note
    assert "arlm-kernel-only" in note
    assert f"{display.BINDER_URL}?urlpath=lab/tree/book/attention.ipynb" in note
    assert f"{display.COLAB_URL}/book/attention.ipynb" in note
    assert "mybinder.org" not in display.kernel_only("x", launch=False)._repr_html_()


@pytest.fixture
def displayed(monkeypatch) -> list[Any]:
    """What IPython.display.display was called with."""
    import IPython.display

    calls: list[Any] = []
    monkeypatch.setattr(IPython.display, "display", lambda obj, **kw: calls.append(obj))
    return calls


def test_show_in_the_book_build_emits_html_only(monkeypatch, displayed):
    monkeypatch.setenv(display.BOOK_BUILD_ENV, "1")
    fig = small_figure()
    monkeypatch.setattr(fig, "show", lambda *a, **k: pytest.fail("fig.show() used in the book build"))
    display.show(fig)
    assert len(displayed) == 1
    from IPython.core.formatters import DisplayFormatter

    data, _ = DisplayFormatter().format(displayed[0])
    assert "plotly-graph-div" in data["text/html"]
    assert PLOTLY_MIME not in data, "myst-nb would skip this mime type: a blank figure"


def test_show_outside_the_book_uses_plotly_renderer(monkeypatch, displayed):
    monkeypatch.delenv(display.BOOK_BUILD_ENV, raising=False)
    fig = small_figure()
    shown: list[dict] = []
    monkeypatch.setattr(fig, "show", lambda config=None: shown.append(config))
    display.show(fig)
    assert displayed == [] and len(shown) == 1
    assert shown[0]["showSendToCloud"] is False


def test_vendored_plotly_bundle_is_the_version_plotly_draws_for():
    from plotly.offline import get_plotlyjs_version

    bundle = arlm_book.PLOTLY_BUNDLE / "plotly-cartesian.min.js"
    assert arlm_book.bundle_version(bundle) == get_plotlyjs_version()
    assert (arlm_book.PLOTLY_BUNDLE / "LICENSE").is_file(), "plotly.js is MIT: its licence ships with it"


def test_a_bundle_of_another_plotly_js_version_stops_the_build(monkeypatch, tmp_path):
    (tmp_path / "plotly-cartesian.min.js").write_text("/**\n* plotly.js (cartesian - minified) v1.2.3\n*/\n")
    monkeypatch.setattr(arlm_book, "PLOTLY_BUNDLE", tmp_path)
    with pytest.raises(arlm_book.ExtensionError, match=r"plotly\.js 1\.2\.3, but .* draws for plotly\.js \d"):
        arlm_book._plotly_bundle()


def test_book_build_refuses_a_trace_the_served_bundle_cannot_draw(monkeypatch, displayed):
    monkeypatch.setenv(display.BOOK_BUILD_ENV, "1")
    with pytest.raises(ValueError, match=r"'scatter3d' cannot be drawn.*'heatmap'"):
        display.show(go.Figure(go.Scatter3d(x=[1], y=[2], z=[3])))
    assert displayed == []
    display.show(go.Figure([go.Bar(y=[1]), go.Heatmap(z=[[1]])]))  # the book's own kinds draw
    assert len(displayed) == 1


def test_glue_records_for_the_book_with_myst_nb(monkeypatch, displayed):
    import myst_nb

    monkeypatch.setenv(display.BOOK_BUILD_ENV, "1")
    recorded: list[tuple] = []
    monkeypatch.setattr(
        myst_nb, "glue", lambda name, value, display=True: recorded.append((name, value, display))
    )
    display.glue("answer", 42, display=False)
    assert recorded == [("answer", 42, False)]
    assert displayed == []  # the book's prose shows it: no listing under the cell


class FakeKernel:
    """Stands in for IPython: a shell whose post_execute callbacks run when a cell ends, and a display
    that records what each displayed object renders as, in order."""

    def __init__(self, monkeypatch) -> None:
        import IPython.display

        self.outputs: list[str] = []
        self.callbacks: list = []
        self.events = types.SimpleNamespace(register=lambda event, fn: self.callbacks.append((event, fn)))
        monkeypatch.setattr(display, "_shell", lambda: self)
        monkeypatch.setattr(IPython.display, "display", self.display)

    def display(self, obj, **kwargs):
        assert not kwargs.get("raw"), "a myst-nb record in a live kernel (VS Code shows it as an error box)"
        self.outputs.append(obj._repr_html_())

    def end_cell(self) -> None:
        for event, fn in self.callbacks:
            assert event == "post_execute"
            fn()


@pytest.mark.parametrize("with_myst_nb", [True, False], ids=["local", "colab"])
def test_glue_in_a_kernel_lists_the_values_once_at_the_end_of_the_cell(monkeypatch, with_myst_nb):
    """A notebook viewer shows the prose's roles as written: the numbers must show somewhere else."""
    monkeypatch.delenv(display.BOOK_BUILD_ENV, raising=False)
    if not with_myst_nb:  # Colab and Binder do not install myst-nb: the chapter must still run
        monkeypatch.setitem(sys.modules, "myst_nb", None)  # makes `import myst_nb` raise ImportError
    monkeypatch.setattr(display, "_GLUED", display._CellListing())
    kernel = FakeKernel(monkeypatch)
    display.glue("val_loss", np.float32(1.234567), display=False)
    display.glue("steps", 1500, display=False)
    display.glue("tokens", np.float64(1234567.8), display=False)
    display.glue("label", "<b>x</b>", display=False)
    assert kernel.outputs == []  # nothing yet: the listing comes after the cell's own output
    kernel.outputs.append("the cell's own output")
    kernel.end_cell()
    assert len(kernel.outputs) == 2 and len(kernel.callbacks) == 1  # one line, one hook
    line = kernel.outputs[1]
    assert "<code>val_loss</code> = 1.235" in line and "<code>steps</code> = 1,500" in line
    assert "<code>tokens</code> = 1,234,568" in line
    assert "&lt;b&gt;x&lt;/b&gt;" in line and "<b>" not in line
    kernel.end_cell()  # a cell that glues nothing lists nothing
    assert len(kernel.outputs) == 2
    display.glue("val_loss", 2.0, display=False)  # the next cell's listing has its own values only
    kernel.end_cell()
    assert len(kernel.outputs) == 3 and "steps" not in kernel.outputs[2] and len(kernel.callbacks) == 1


def test_a_long_listing_folds_behind_one_summary_line():
    """A table's worth of values (112 in one cell of chapter 6) would bury the cell's results."""
    few = display.GluedValues({f"v{i}": str(i) for i in range(display.GluedValues.FOLD_AFTER)})
    many = display.GluedValues({f"v{i}": str(i) for i in range(display.GluedValues.FOLD_AFTER + 1)})
    assert "<details" not in few._repr_html_() and "<code>v7</code> = 7" in few._repr_html_()
    folded = many._repr_html_()
    assert (
        folded.startswith('<details class="arlm-glued"')
        and "<summary>for the text: 9 values</summary>" in folded
    )
    assert "<code>v8</code> = 8" in folded and repr(many).endswith("v8 = 8")


def test_glue_without_myst_nb_shows_a_displayed_value_once(monkeypatch, displayed):
    monkeypatch.setitem(sys.modules, "myst_nb", None)
    monkeypatch.delenv(display.BOOK_BUILD_ENV, raising=False)
    display.glue("shown", 2.5)
    assert displayed == [2.5]  # shown as itself, not listed a second time


def test_show_widget_puts_a_note_in_the_book_and_the_widget_in_a_kernel(monkeypatch, displayed):
    import ipywidgets

    slider = ipywidgets.IntSlider()

    class App:
        widget = ipywidgets.VBox([slider])

    monkeypatch.delenv(display.BOOK_BUILD_ENV, raising=False)
    display.show_widget(slider, "Drag it")
    display.show_widget(App(), "Drag it")
    monkeypatch.setenv(display.BOOK_BUILD_ENV, "1")
    display.show_widget(App(), "Drag it")
    assert displayed[0] is slider
    assert displayed[1] is App.widget, "an app is shown through its .widget"
    assert "This control needs a live kernel" in displayed[2]._repr_html_()


def test_show_widget_on_colab_first_turns_on_its_third_party_widget_manager(monkeypatch, displayed):
    import ipywidgets

    calls: list[str] = []
    output = types.ModuleType("google.colab.output")
    output.enable_custom_widget_manager = lambda: calls.append(f"enabled after {len(displayed)} displays")
    colab = types.ModuleType("google.colab")
    colab.output = output
    monkeypatch.setitem(sys.modules, "google.colab", colab)
    monkeypatch.setitem(sys.modules, "google.colab.output", output)
    monkeypatch.delenv(display.BOOK_BUILD_ENV, raising=False)
    display.show_widget(ipywidgets.IntSlider(), "Drag it")
    assert calls == ["enabled after 0 displays"], "plotly's FigureWidget stays blank on Colab without it"
    assert len(displayed) == 1


def _fenced_blocks(markdown: str) -> list[tuple[str, str]]:
    """(language, code) of each fenced block, as a CommonMark parser (myst-nb's) reads them."""
    from markdown_it import MarkdownIt

    return [
        (t.info.strip(), t.content) for t in MarkdownIt("commonmark").parse(markdown) if t.type == "fence"
    ]


def test_show_source_displays_each_objects_code_dedented_as_a_python_block(displayed):
    import ast

    from arlm_lib.model import causal_mask
    from arlm_lib.train import Trainer

    display.show_source(causal_mask, Trainer._train_step)
    (listing,) = displayed
    blocks = _fenced_blocks(listing.data)
    assert [language for language, _ in blocks] == ["python", "python"]
    train_py = (REPO_ROOT / "arlm_lib" / "train.py").read_text(encoding="utf-8")
    for (_, code), name in zip(blocks, ["causal_mask", "_train_step"], strict=True):
        (definition,) = ast.parse(code).body  # a method's body parses only once dedented
        assert definition.name == name
    method = blocks[1][1]
    assert textwrap.indent(method, "    ") in train_py, "the method, line for line, as the library has it"
    assert method.rstrip().endswith("return record"), "the listing runs to the method's last line"


def test_show_source_fences_code_that_contains_backticks():
    def has_a_fence():
        return "```"  # a Markdown fence inside the code

    (block,) = _fenced_blocks(display.source_listing(has_a_fence))
    assert block[1].rstrip("\n") == textwrap.dedent(inspect.getsource(has_a_fence)).rstrip()


@pytest.mark.parametrize("bad", [3, "causal_mask", None])
def test_show_source_refuses_what_has_no_source(bad):
    with pytest.raises(TypeError, match=re.escape(repr(bad))):
        display.source_listing(bad)
    with pytest.raises(TypeError, match="at least one"):
        display.source_listing()


# ------------------------------------------------------------------------------ book/_ext/arlm_book.py


def test_plotly_detected_in_page_body():
    assert arlm_book.page_has_plotly(display.figure_html(small_figure()))
    assert not arlm_book.page_has_plotly("<p>no figure here</p>")


def test_duplicate_inline_scripts_and_widget_state_are_dropped():
    from sphinx.builders.html._assets import _JavaScript

    thebe = "const THEBE_JS_URL = 'x'"
    scripts = [
        _JavaScript("_static/a.js", priority=200),
        _JavaScript(None, body=thebe, priority=500),
        _JavaScript("", body=thebe, priority=500),  # Sphinx 7.4 re-adds it with "" for None
        _JavaScript(None, body="var other = 1", priority=500),
        _JavaScript(None, body="{}", type="application/vnd.jupyter.widget-state+json"),
    ]
    context = {"script_files": scripts}
    arlm_book.tidy_page_scripts(context)
    bodies = [s.attributes.get("body") for s in context["script_files"]]
    assert bodies == [None, thebe, "var other = 1"]
    assert context["script_files"] is scripts, "must edit the page's list in place"


@pytest.mark.parametrize("thebe_on", [False, True])
def test_sphinx_thebe_leaves_no_trace_without_a_live_code_button(thebe_on):
    from types import SimpleNamespace

    from sphinx.builders.html._assets import _CascadingStyleSheet, _JavaScript

    app = SimpleNamespace(config=SimpleNamespace(html_theme_options={"launch_buttons": {"thebe": thebe_on}}))
    scripts = [
        _JavaScript("_static/a.js"),
        _JavaScript(None, body='const THEBE_JS_URL = "https://unpkg.com/thebe@0.8.2/lib/index.js"'),
        _JavaScript("_static/sphinx-thebe.js?v=c100c467", **{"async": "async"}),
    ]
    styles = [
        _CascadingStyleSheet("_static/sphinx-thebe.css?v=4fa983c6"),
        _CascadingStyleSheet("_static/a.css"),
    ]
    config = '<script type="text/x-thebe-config">\n{ binderOptions: { repo: "x/y" } }\n</script>\n'
    body = f"<p>text</p>\n{config}<script>kernelName = 'python3'</script>"
    context = {"script_files": list(scripts), "css_files": list(styles), "body": body}
    arlm_book.drop_unused_thebe(app, "book/a", "page.html", context, None)
    if thebe_on:
        assert context == {"script_files": scripts, "css_files": styles, "body": body}
    else:
        assert context == {"script_files": scripts[:1], "css_files": styles[1:], "body": "<p>text</p>"}


def test_library_fingerprint_follows_file_contents(tmp_path, monkeypatch):
    package = tmp_path / "fingerprinted_pkg"
    package.mkdir()
    (package / "__init__.py").write_text("x = 1\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    before = arlm_book.library_fingerprint("fingerprinted_pkg")
    assert arlm_book.library_fingerprint("fingerprinted_pkg") == before
    (package / "__pycache__").mkdir()
    (package / "__pycache__" / "x.pyc").write_bytes(b"bytecode")
    assert arlm_book.library_fingerprint("fingerprinted_pkg") == before, "bytecode is not the library"
    (package / "__init__.py").write_text("x = 2\n")
    assert arlm_book.library_fingerprint("fingerprinted_pkg") != before
    assert arlm_book.library_fingerprint("no_such_package_here") == "missing"


class _Env:
    def __init__(self, cache_dir: Path, docs: dict[str, str]):
        self.mystnb_config = type("Cfg", (), {"execution_cache_path": str(cache_dir)})()
        self._docs = docs
        self.found_docs = set(docs)

    def doc2path(self, name: str) -> str:
        return self._docs[name]


def test_library_change_clears_the_cache_and_rereads_notebooks(tmp_path, monkeypatch):
    monkeypatch.delenv("ARLM_BOOK_KEEP_CACHE", raising=False)
    cache = tmp_path / ".jupyter_cache"
    env = _Env(cache, {"book/a": "book/a.ipynb", "book/b": "book/b.ipynb", "book/intro": "book/intro.md"})
    version = {"value": "v1"}
    monkeypatch.setattr(arlm_book, "library_fingerprint", lambda: version["value"])

    def outdated(changed=()):
        return arlm_book.invalidate_cache_on_library_change(None, env, set(), set(changed), set())

    assert outdated() == [], "a first build has nothing cached to clear"
    (cache / "global.db").write_text("cached outputs")
    assert outdated() == [], "an unchanged library keeps the cache"
    assert (cache / "global.db").exists()
    version["value"] = "v2"
    assert outdated(changed={"book/b"}) == ["book/a"]
    assert not (cache / "global.db").exists(), "outputs of the old library must go"
    assert outdated() == [], "once cleared, the new library's outputs are kept"
    version["value"] = "v3"
    (cache / "global.db").write_text("cached outputs")
    monkeypatch.setenv("ARLM_BOOK_KEEP_CACHE", "1")
    assert outdated() == [] and (cache / "global.db").exists()


def test_pages_that_quote_a_notebooks_numbers_are_reread_on_every_build(tmp_path):
    """The source notes quote chapters' glued numbers; Sphinx saw no change in the notes' own source and
    kept showing a chapter's old numbers after the chapter re-executed."""
    from types import SimpleNamespace

    files = {
        "book/notes": ("notes.md", "ran {glue:text}`04_stability.ipynb::stab_n_runs:d` runs"),
        "book/plain": ("plain.md", "no numbers here, and `a.ipynb::b` is only code"),
        "book/local": ("local.ipynb", "{glue:text}`own_value`"),
    }
    for filename, text in files.values():
        (tmp_path / filename).write_text(text, encoding="utf-8")
    paths = {name: str(tmp_path / filename) for name, (filename, _) in files.items()}
    env = SimpleNamespace(found_docs=set(files), doc2path=paths.__getitem__)

    assert arlm_book.reread_pages_quoting_notebooks(None, env, set(), set(), set()) == ["book/notes"]
    assert arlm_book.reread_pages_quoting_notebooks(None, env, set(), {"book/notes"}, set()) == []
    # and the book's own source notes are such a page
    notes = (REPO_ROOT / "book" / "08_source_notes.md").read_text(encoding="utf-8")
    assert arlm_book.CROSS_DOCUMENT_GLUE.search(notes)


def test_an_edited_figure_loader_reaches_the_built_book(tmp_path, monkeypatch):
    """With no page out of date Sphinx stops before copying static files: a change to the book's
    scripts or styles re-reads the root page, so that the build copies them again; a build that fails
    does not count as having copied them."""
    from types import SimpleNamespace

    static = tmp_path / "static"
    static.mkdir()
    (static / "arlm-figures.js").write_text("draw();")
    monkeypatch.setattr(arlm_book, "STATIC_DIR", static)
    monkeypatch.setattr(arlm_book, "PLOTLY_BUNDLE", tmp_path / "no-bundle")
    app = SimpleNamespace(outdir=str(tmp_path / "html"), config=SimpleNamespace(root_doc="book/intro"))
    env = SimpleNamespace(found_docs={"book/intro", "book/a"})

    def build(changed=(), failure=None):
        outdated = arlm_book.reread_on_static_change(app, env, set(), set(changed), set())
        arlm_book.record_static_copied(app, failure)
        return outdated

    assert build() == ["book/intro"], "a first build (or one without a stamp) copies them"
    assert build() == [], "unchanged: nothing extra to read"
    (static / "arlm-figures.js").write_text("draw(); readByKeyboard();")
    assert build(changed={"book/intro"}) == [], "the root page is re-read anyway"
    (static / "arlm.css").write_text("div {}")
    assert build(failure=RuntimeError("interrupted")) == ["book/intro"]
    assert build() == ["book/intro"], "the failed build copied nothing: the next one must"
    assert build() == []


def test_figure_html_labels_a_wrapped_title_with_its_words():
    """style_figure wraps a long title with <br>; the screen-reader label must keep the words apart."""
    from arlm_lib import viz

    long = "Which forecast does each score prefer? (dotted: its optimum; dashed: the true distribution)"
    html = display.figure_html(viz.style_figure(go.Figure(), title=long))
    assert f'aria-label="{display.escape(long)}"' in html


def test_the_execution_fingerprint_follows_the_files_chapters_read(tmp_path, monkeypatch):
    """Chapter 5 shows bench/RESULTS.md: new results must re-execute it, not leave the cached page."""
    assert (REPO_ROOT / "bench" / "RESULTS.md").resolve() in [p.resolve() for p in arlm_book.READ_BY_CHAPTERS]
    results = tmp_path / "RESULTS.md"
    monkeypatch.setattr(arlm_book, "READ_BY_CHAPTERS", [results])
    monkeypatch.setattr(arlm_book, "library_fingerprint", lambda: "library v1")
    missing = arlm_book.execution_fingerprint()
    results.write_text("| no GPU |", encoding="utf-8")
    before = arlm_book.execution_fingerprint()
    assert before != missing and arlm_book.execution_fingerprint() == before
    results.write_text("| H200 | 43.7% |", encoding="utf-8")
    assert arlm_book.execution_fingerprint() != before
    monkeypatch.setattr(arlm_book, "library_fingerprint", lambda: "library v2")
    assert len({before, arlm_book.execution_fingerprint()}) == 2


def test_library_fingerprint_follows_file_names(tmp_path, monkeypatch):
    package = tmp_path / "renamed_pkg"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "a.py").write_text("x = 1\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    before = arlm_book.library_fingerprint("renamed_pkg")
    (package / "a.py").rename(package / "b.py")  # `from renamed_pkg import a` now fails
    assert arlm_book.library_fingerprint("renamed_pkg") != before


@pytest.mark.slow
def test_build_warns_on_widget_and_plotly_json_outputs(tmp_path, monkeypatch):
    """A widget frozen into a page, or a bare plotly figure, is a build warning (an error under -W)."""

    # The extension sets these with setdefault; set them here so monkeypatch restores the environment.
    monkeypatch.setenv("ARLM_BOOK_BUILD", "1")
    monkeypatch.setenv("TQDM_DISABLE", "1")

    src = tmp_path / "src"
    src.mkdir()
    nb = nbformat.v4.new_notebook(
        metadata={"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}}
    )
    nb.cells = [
        nbformat.v4.new_markdown_cell("# Outputs"),
        nbformat.v4.new_code_cell(
            "slider",
            outputs=[
                nbformat.v4.new_output(
                    "display_data",
                    data={WIDGET_MIME: {"model_id": "abc", "version_major": 2}, "text/plain": "IntSlider()"},
                )
            ],
        ),
        nbformat.v4.new_code_cell(
            "fig",
            outputs=[
                nbformat.v4.new_output("display_data", data={PLOTLY_MIME: {"data": []}, "text/plain": "Fig"})
            ],
        ),
    ]
    nbformat.write(nb, src / "index.ipynb")
    log = build_small_book(
        src,
        tmp_path,
        {"extensions": ["myst_nb", "arlm_book"], "nb_execution_mode": "off", "nb_ipywidgets_js": {}},
    )
    assert "an ipywidget is displayed in the static book" in log
    assert PLOTLY_MIME in log, "myst-nb's skipped-mime warning must reach the build log"


@pytest.mark.slow
def test_a_notebook_marked_orphan_is_built_without_a_place_in_the_navigation(tmp_path, monkeypatch):
    """The view test page is a fixture, not a chapter: left out of _toc.yml (and so of every page's
    navigation) but marked orphan, it is still built, with no warning under -W; a notebook _toc.yml does
    not name and that is not marked orphan is still left out."""

    monkeypatch.setenv("ARLM_BOOK_BUILD", "1")
    monkeypatch.setenv("TQDM_DISABLE", "1")

    src = tmp_path / "src"
    (src / "book").mkdir(parents=True)
    (src / "_toc.yml").write_text("format: jb-book\nroot: book/intro\nchapters:\n- file: book/a\n")
    (src / "book" / "intro.md").write_text("# Intro\n\nThe [view test page](viewtest.ipynb).\n")
    kernelspec = {"name": "python3", "display_name": "Python 3", "language": "python"}
    for name, title, orphan in (("a", "A", False), ("viewtest", "Views", True), ("draft", "Draft", False)):
        nb = nbformat.v4.new_notebook(
            metadata={"kernelspec": kernelspec, **({"orphan": True} if orphan else {})}
        )
        nb.cells = [nbformat.v4.new_markdown_cell(f"# {title}")]
        nbformat.write(nb, src / "book" / f"{name}.ipynb")
    assert arlm_book.is_orphan_notebook(src / "book" / "viewtest.ipynb")
    assert not arlm_book.is_orphan_notebook(src / "book" / "draft.ipynb")
    assert arlm_book.is_orphan_notebook(REPO_ROOT / "book" / "viewtest.ipynb"), "the book's own fixture"
    settings = {
        "extensions": ["myst_nb", "sphinx_external_toc", "arlm_book"],
        "external_toc_exclude_missing": True,
        "nb_execution_mode": "off",
    }
    assert build_small_book(src, tmp_path, settings) == ""
    out = tmp_path / "out" / "book"
    assert (out / "viewtest.html").is_file(), "the orphan notebook was not built"
    assert not (out / "draft.html").exists(), "a notebook _toc.yml does not name must stay out"
    assert "viewtest.html" not in (out / "a.html").read_text(encoding="utf-8"), "it is in the navigation"
    assert 'href="viewtest.html"' in (out / "intro.html").read_text(encoding="utf-8"), (
        "a link still reaches it"
    )


# ---------------------------------------------------------------------------------- the built book


def _pages(built_html: Path) -> list[Path]:
    return [built_html / f"{name}.html" for name in book_docnames()]


def _references(html: str) -> list[str]:
    return re.findall(r'<(?:script|img|link|iframe|source)\b[^>]*?\b(?:src|href)="([^"]+)"', html)


def test_built_pages_load_nothing_from_outside_the_book(built_html):
    problems = []
    for page in _pages(built_html):
        html = page.read_text(encoding="utf-8")
        for ref in _references(html):
            if re.match(r"^[a-z][a-z0-9+.-]*:", ref) or ref.startswith("//"):
                problems.append(f"{page.name}: loads {ref}")
                continue
            target = (page.parent / ref.split("?")[0].split("#")[0]).resolve()
            if not target.exists():
                problems.append(f"{page.name}: {ref} is missing from the build")
        for needle in (
            "require.min.js",
            "embed-amd.js",
            "cdn.jsdelivr",
            "cdnjs",
            "cdn.plot.ly",
            "widget-state+json",
        ):
            if needle in html:
                problems.append(f"{page.name}: mentions {needle}")
    assert not problems, "\n".join(problems)


def test_plotly_js_is_served_once_and_never_inlined(built_html):
    served = built_html / "_static" / arlm_book.PLOTLY_JS
    assert served.read_bytes() == (arlm_book.PLOTLY_BUNDLE / "plotly-cartesian.min.js").read_bytes()
    for page in _pages(built_html):
        html = page.read_text(encoding="utf-8")
        assert "plotly.js v" not in html and "plotly.js (" not in html, f"{page.name} inlines plotly.js"
        loads = len(re.findall(r'<script[^>]+src="[^"]*plotly[^"/]*\.min\.js', html))
        assert loads == (1 if "plotly-graph-div" in html else 0), f"{page.name} loads plotly.js {loads} times"
        # Deferred, plotly.js first: the loader draws the figures with it once the page is parsed.
        deferred = re.findall(r'<script defer="defer" src="[^"]*_static/([^"?]+)', html)
        scripts = [name for name in deferred if name in (arlm_book.PLOTLY_JS, arlm_book.FIGURE_LOADER_JS)]
        expected = [arlm_book.PLOTLY_JS, arlm_book.FIGURE_LOADER_JS] if "plotly-graph-div" in html else []
        assert scripts == expected, f"{page.name}: deferred figure scripts {scripts}"
        for div_id in re.findall(r'<div id="([^"]+)" class="plotly-graph-div"', html):
            assert f'data-figure="{div_id}"' in html, f"{page.name}: figure {div_id} has no spec to draw"


def test_mathjax_is_served_by_the_book(built_html):
    assert (built_html / "_static" / "mathjax" / "tex-chtml.js").is_file()
    pages_with_math = [p for p in _pages(built_html) if 'class="math' in p.read_text(encoding="utf-8")]
    assert pages_with_math, "no page with math: the view test page should have some"
    for page in pages_with_math:
        assert re.search(r'src="[^"]*_static/mathjax/tex-chtml\.js', page.read_text(encoding="utf-8"))


def test_executed_outputs_have_no_mime_type_the_book_drops(built_html):
    """The outputs the book renders (from the execution cache) are HTML figures, never a plotly or
    widget mime bundle that would be a blank figure or a dead control."""
    from jupyter_cache import get_cache

    cache_dir = built_html.parent / ".jupyter_cache"
    assert cache_dir.is_dir(), f"no execution cache at {cache_dir}"
    cache = get_cache(str(cache_dir))
    records = cache.list_cache_records()
    assert records, "the execution cache holds no notebook"
    figures = 0
    for record in records:
        name = Path(record.uri).name
        for cell in cache.get_cache_bundle(record.pk).nb.cells:
            for output in cell.get("outputs", []):
                data = output.get("data", {})
                assert PLOTLY_MIME not in data, f"{name}: bare plotly output (use display.show)"
                assert WIDGET_MIME not in data, f"{name}: widget output (use display.show_widget)"
                figures += "plotly-graph-div" in data.get("text/html", "")
    assert figures > 0, "ARLM_BOOK_BUILD did not reach the kernel: no figure was rendered as HTML"


def test_launch_buttons_point_at_the_notebook_in_the_repository(built_html):
    for name in book_docnames():
        source = REPO_ROOT / f"{name}.ipynb"
        if not source.is_file():
            continue
        html = (built_html / f"{name}.html").read_text(encoding="utf-8")
        assert f"mybinder.org/v2/gh/arlm-guide/arlm/main?urlpath=lab/tree/{name}.ipynb" in html
        assert f"colab.research.google.com/github/arlm-guide/arlm/blob/main/{name}.ipynb" in html
        # Thebe draws neither plotly output nor ipywidgets 8: a Live Code button would blank the figures.
        assert "thebe" not in html.lower(), f"{name}: a Live Code button, or sphinx-thebe's unused assets"


def _pins(path: Path) -> dict[str, str]:
    pins = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        line = line.split("#")[0].strip()
        if "==" in line and not line.startswith("-"):
            name, version = line.split("==", 1)
            pins[name.strip().lower()] = version.strip()
    return pins


def test_binder_installs_cpu_torch_and_the_same_pins():
    binder = REPO_ROOT / "binder" / "requirements.txt"
    text = binder.read_text(encoding="utf-8")
    assert "--extra-index-url https://download.pytorch.org/whl/cpu" in text
    binder_pins, root_pins = _pins(binder), _pins(REPO_ROOT / "requirements.txt")
    assert binder_pins["torch"] == f"{root_pins['torch']}+cpu", "Binder must get the CPU build of torch"
    drift = {name: (v, root_pins.get(name)) for name, v in binder_pins.items() if name != "torch"}
    drift = {name: pair for name, pair in drift.items() if pair[0] != pair[1]}
    assert not drift, f"binder/requirements.txt pins differ from requirements.txt: {drift}"
    postbuild = (REPO_ROOT / "binder" / "postBuild").read_text(encoding="utf-8")
    assert "pip install --no-deps -e ." in postbuild, "postBuild must install arlm_lib itself"
    # postBuild installs arlm_lib without its dependencies, so Binder must pin every one of them.
    unpinned = sorted(set(arlm_lib_dependencies()) - set(binder_pins))
    assert not unpinned, f"arlm_lib needs {unpinned}, which binder/requirements.txt does not install"


def arlm_lib_dependencies() -> list[str]:
    """The distribution names in pyproject.toml's ``[project] dependencies``, lower-cased."""
    import tomllib

    project = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    return [re.split(r"[<>=!~ \[;]", dep, maxsplit=1)[0].strip().lower() for dep in project["dependencies"]]
