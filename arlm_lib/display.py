"""Show a view the right way for where the reader is: the static HTML book or a live kernel.

A reader meets each figure in two kinds of places: a live kernel or the static book. In a kernel
(JupyterLab, VS Code, Colab, Binder) plotly's own renderer draws the figure and ipywidgets run. In the static book there is no kernel: the figure must be self-contained HTML that uses
the plotly.js the book serves once per page from ``_static``, and a widget must give way to a note with a
launch link, never a frozen control that does nothing. The book build sets ``ARLM_BOOK_BUILD=1`` in
the environment of the kernels it starts; this module reads it to choose.

Chapters use only :func:`show` for plotly figures, :func:`show_widget` (or :func:`kernel_only`) for
kernel apps, :func:`glue` to hand numbers to the prose, and :func:`show_source` for the library's code.
"""

from __future__ import annotations

import hashlib
import html
import inspect
import os
import re
import sys
import textwrap
from typing import Any

#: Environment variable the book build sets (Makefile ``book`` target and ``book/_ext/arlm_book.py``).
BOOK_BUILD_ENV = "ARLM_BOOK_BUILD"

#: The plotly.js config of every figure. It resizes with the page, shows no plotly logo, and has no
#: "Share chart" button (plotly.js 3 shows one by default; it uploads the figure to Plotly's cloud).
#: The mode bar keeps four buttons (save as PNG, zoom, pan, reset): with its ten it took about 250 px
#: of the top right corner, where it covered the end of a long title when the mouse was over the
#: figure; the titles wrap short of the four (``Theme.title_chars``).
PLOTLY_CONFIG: dict[str, Any] = {
    "displaylogo": False,
    "responsive": True,
    "showSendToCloud": False,
    "modeBarButtonsToRemove": ["select2d", "lasso2d", "zoomIn2d", "zoomOut2d", "autoScale2d"],
}

#: Height of a figure whose layout sets none. plotly's HTML default of "100%" of an auto-height
#: container collapses to nothing in some page layouts, which is a blank figure.
DEFAULT_HEIGHT_PX = 450

REPOSITORY = "arlm-guide/arlm"
BRANCH = "main"
BINDER_URL = f"https://mybinder.org/v2/gh/{REPOSITORY}/{BRANCH}"
COLAB_URL = f"https://colab.research.google.com/github/{REPOSITORY}/blob/{BRANCH}"

_FALSE_WORDS = {"", "0", "false", "no", "off"}

#: The trace types the static book can draw, which are those of the plotly.js cartesian bundle it
#: serves (book/_vendor/plotly.js-cartesian-dist-min). A live kernel uses plotly's full bundle.
STATIC_TRACE_TYPES = frozenset(
    {
        "bar", "box", "contour", "heatmap", "histogram", "histogram2d", "histogram2dcontour", "image",
        "pie", "scatter", "scatterternary", "violin",
    }
)  # fmt: skip


def in_book_build() -> bool:
    """True while the static HTML book is being built (``ARLM_BOOK_BUILD`` set to a true value)."""
    return os.environ.get(BOOK_BUILD_ENV, "").strip().lower() not in _FALSE_WORDS


def escape(text: object) -> str:
    """Escape text a reader typed so that HTML (and plotly labels) show it literally, never run it."""
    return html.escape(str(text), quote=True)


def figure_div_id(fig: Any, salt: str = "") -> str:
    """A div id that depends only on the figure's content, so cached book outputs are byte-stable."""
    return _content_id(fig.to_json(), salt)


def _content_id(serialized: str, salt: str) -> str:
    digest = hashlib.sha1((salt + serialized).encode("utf-8")).hexdigest()[:16]
    return f"arlm-fig-{digest}"


def _shell() -> Any:
    """The running IPython shell, or None outside IPython."""
    try:
        from IPython import get_ipython
    except ImportError:  # pragma: no cover - IPython ships with the book's requirements
        return None
    return get_ipython()


def _execution_salt() -> str:
    # Two cells that show the same figure must still get distinct div ids on one page; the cell's
    # execution count tells them apart and is deterministic when a notebook runs top to bottom.
    shell = _shell()
    return str(getattr(shell, "execution_count", "")) if shell is not None else ""


def _plain_text(markup: str) -> str:
    """A plotly title as plain text: line breaks become spaces, tags and entities are dropped."""
    text = re.sub(r"<br\s*/?>", " ", markup, flags=re.IGNORECASE)
    text = html.unescape(re.sub(r"<[^>]+>", "", text))
    return " ".join(text.split())


def figure_html(fig: Any, *, div_id: str | None = None, config: dict[str, Any] | None = None) -> str:
    """The figure as an HTML fragment for the static book: a sized, empty div and the figure as JSON.

    The book's figure loader (``book/_static/arlm-figures.js``, which the book loads after plotly.js on
    every page with a figure) draws it: figures in view first, any figure coming within a screen of the
    viewport, then the rest in page order, one per task.
    Drawing every figure while the page was still being parsed held the text and the first figure back
    by seconds (``bench/page_weight.py``). The fragment loads nothing itself (no inline plotly.js, no CDN).

    The JSON is plotly's own encoding, which writes ``<``, ``>`` and ``/`` as ``\\u`` escapes, so no
    figure text can close the script element; pass reader-typed labels through :func:`escape` so
    plotly shows them literally.
    """
    from plotly.io.json import to_json_plotly

    figure = fig.to_dict()
    if figure.get("frames"):
        raise ValueError("the static book's figure loader draws no animation frames: use sliders or menus")
    layout = figure.get("layout", {})
    template = layout.get("template", {}).get("layout", {})

    def css_size(key: str, default: str) -> str:
        value = layout.get(key, template.get(key))
        return f"{value}px" if isinstance(value, (int, float)) else default

    spec = to_json_plotly(
        {
            "data": figure.get("data", []),
            "layout": layout,
            "config": {**PLOTLY_CONFIG, **(config or {})},
        }
    )
    # The id hashes the JSON just made, rather than serialising the figure a second time.
    div_id = escape(div_id or _content_id(spec, _execution_salt()))
    # A screen reader announces the figure by its title, not as hundreds of loose tick labels.
    title = layout.get("title", {})
    label = _plain_text(title.get("text", "") if isinstance(title, dict) else str(title)) or "figure"
    # The outer div keeps the figure's size before it is drawn, so drawing it never shifts the page.
    return (
        f'<div class="arlm-figure" role="figure" aria-label="{escape(label)}" '
        f'style="height:{css_size("height", f"{DEFAULT_HEIGHT_PX}px")}; width:{css_size("width", "100%")};">'
        f'<div id="{div_id}" class="plotly-graph-div" style="height:100%; width:100%;"></div>'
        f'<script type="application/json" class="arlm-figure-spec" data-figure="{div_id}">{spec}</script>'
        "</div>"
    )


def show(fig: Any, *, config: dict[str, Any] | None = None) -> None:
    """Display a plotly figure: self-contained HTML in the book build, plotly's own renderer elsewhere.

    In JupyterLab, VS Code and Colab this is ``fig.show()``. In the book build it displays only
    ``text/html`` (myst-nb skips plotly's JSON mime type and the figure would be blank).
    """
    from IPython.display import HTML, display

    if in_book_build():
        unsupported = sorted({trace.type for trace in fig.data} - STATIC_TRACE_TYPES)
        if unsupported:  # the served bundle would leave a blank figure, with no error in the build
            raise ValueError(
                f"trace type {', '.join(map(repr, unsupported))} cannot be drawn in the static book, which "
                f"serves plotly.js's cartesian bundle: use one of {sorted(STATIC_TRACE_TYPES)}"
            )
        display(HTML(figure_html(fig, config=config)))
    else:
        fig.show(config={**PLOTLY_CONFIG, **(config or {})})


def glue(name: str, value: Any, display: bool = True) -> None:
    """Record ``value`` under ``name`` for the prose's ``{glue:text}`` roles (myst-nb's ``glue``).

    The book build fills the roles in. A notebook viewer cannot (its markdown is static, and shows
    `` {glue:text}`name` `` as written), so in a live kernel a value glued with ``display=False`` is
    listed instead, in one line at the end of the cell that computed it: the reader finds each number
    of the prose by its name. There nothing is recorded for myst-nb: only the build reads its records,
    and VS Code shows each one as a box saying it has no renderer for the record's mime type.

    Only the book build needs myst-nb. Colab and Binder install arlm_lib's own dependencies, so there
    this shows the value (``display=True``) or lists it: a chapter must run top to bottom in either place.
    """
    if not display and not in_book_build():
        _GLUED.add(name, value)
        return
    try:
        from myst_nb import glue as myst_glue
    except ImportError:
        if display:
            from IPython.display import display as ipython_display

            ipython_display(value)
        return
    myst_glue(name, value, display=display)


def _brief(value: Any) -> str:
    """A glued value as the live listing shows it: numbers to four significant digits, text cut short."""
    import numbers

    if isinstance(value, numbers.Integral) and not isinstance(value, bool):
        return f"{int(value):,}"
    if isinstance(value, numbers.Real) and not isinstance(value, bool):
        value = float(value)
        # Large numbers in full (1,234,567 rather than 1.235e+06), as the prose prints them.
        return f"{value:,.0f}" if 1e4 <= abs(value) < 1e15 else f"{value:.4g}"
    text = value if isinstance(value, str) else repr(value)
    return text if len(text) <= 60 else text[:59] + "\u2026"


class GluedValues:
    """The values one cell glued for the prose, shown under the cell (live kernels only).

    Up to ``FOLD_AFTER`` values show as one line; more (a whole table's worth) fold behind a summary
    line that opens on a click, so that they do not push the cell's own results out of sight.
    """

    FOLD_AFTER = 8

    def __init__(self, values: dict[str, str] | None = None) -> None:
        self.values: dict[str, str] = dict(values or {})

    def _repr_html_(self) -> str:
        items = " \u00b7 ".join(f"<code>{escape(k)}</code> = {escape(v)}" for k, v in self.values.items())
        # Muted by opacity rather than a grey, so that it reads on a dark theme too.
        style = "font-size:0.85em; opacity:0.75"
        if len(self.values) <= self.FOLD_AFTER:
            return f'<div class="arlm-glued" style="{style}">for the text: {items}</div>'
        return (
            f'<details class="arlm-glued" style="{style}"><summary>for the text: {len(self.values)} '
            f"values</summary>{items}</details>"
        )

    def __repr__(self) -> str:
        return "for the text: " + ", ".join(f"{k} = {v}" for k, v in self.values.items())


class _CellListing:
    """Gathers the values a cell glues and shows them once, after the cell's own output.

    IPython's ``post_execute`` event runs while the cell is still the one being executed, so what it
    displays lands at the end of that cell's output (matplotlib's inline backend shows its figures the
    same way). Outside IPython a value is listed at once.
    """

    def __init__(self) -> None:
        self.values: dict[str, str] = {}
        self.shell: Any = None

    def add(self, name: str, value: Any) -> None:
        self.values[name] = _brief(value)
        shell = _shell()
        if shell is None:
            self.flush()
        elif shell is not self.shell:  # registered once per shell
            shell.events.register("post_execute", self.flush)
            self.shell = shell

    def flush(self) -> None:
        if self.values:
            from IPython.display import display as ipython_display

            values, self.values = self.values, {}
            ipython_display(GluedValues(values))


_GLUED = _CellListing()


def kernel_only(note_text: str, launch: bool = True, *, notebook: str | None = None) -> Any:
    """An HTML note standing in for a control that needs a live kernel (for the static book).

    ``notebook`` is the path from the repository root (``book/03_attention.ipynb``); with it the note links
    straight to that notebook on Binder and Colab, otherwise to the repository on Binder.
    """
    from IPython.display import HTML

    parts = [
        '<div class="admonition note arlm-kernel-only">',
        '<p class="admonition-title">This control needs a live kernel</p>',
        f"<p>{escape(note_text)}</p>",
    ]
    if launch:
        if notebook:
            binder = f"{BINDER_URL}?urlpath=lab/tree/{notebook}"
            links = (
                f'<a class="reference external" href="{escape(binder)}">launch on Binder</a> or '
                f'<a class="reference external" href="{escape(f"{COLAB_URL}/{notebook}")}">open in Colab</a>'
            )
        else:
            links = f'<a class="reference external" href="{escape(BINDER_URL)}">launch on Binder</a>'
        parts.append(
            f"<p>To use it, {links}, or use the rocket button at the top of this page; "
            "locally, run this notebook in JupyterLab or VS Code.</p>"
        )
    parts.append("</div>")
    return HTML("".join(parts))


def show_widget(app: Any, note_text: str, *, notebook: str | None = None) -> None:
    """Display a kernel app in a live kernel, and the :func:`kernel_only` note in the static book.

    ``app`` is an ipywidget, or an :mod:`arlm_lib.widgets` app (anything with a ``.widget`` to show).
    """
    from IPython.display import display

    if in_book_build():
        display(kernel_only(note_text, notebook=notebook))
        return
    import ipywidgets

    if "google.colab" in sys.modules:
        # Colab draws only its own widgets until asked; plotly's FigureWidget (an anywidget) would stay
        # blank inside an app's VBox, because anywidget asks only when it is displayed itself.
        from google.colab import output

        output.enable_custom_widget_manager()
    display(app if isinstance(app, ipywidgets.Widget) else getattr(app, "widget", app))


def source_listing(*objects: Any) -> str:
    """The source of each object (a function, class or method), dedented, as fenced Python blocks.

    The fence is longer than any run of backticks in the source, so the listing survives Markdown.
    """
    if not objects:
        raise TypeError("source_listing() needs at least one function, class or method")
    blocks = []
    for obj in objects:
        try:
            source = textwrap.dedent(inspect.getsource(obj)).rstrip()
        except (TypeError, OSError) as exc:
            raise TypeError(
                f"cannot show the source of {obj!r}: a function, class or method defined in a file is needed ({exc})"
            ) from None
        fence = "`" * max(3, 1 + max((len(run) for run in re.findall(r"`+", source)), default=0))
        blocks.append(f"{fence}python\n{source}\n{fence}")
    return "\n\n".join(blocks)


def show_source(*objects: Any) -> None:
    """Display the library's own code for each object: the book's code listings.

    A listing is Markdown output, so it reads the same in the static book (a highlighted code block) and
    in a live kernel. A Sphinx ``literalinclude`` in a Markdown cell would show as raw text there.
    """
    from IPython.display import Markdown, display

    display(Markdown(source_listing(*objects)))
