"""Every page of the built book, in headless Chromium, with every non-localhost request blocked.

What a reader of the static book must get (DESIGN.md, "Three places a reader meets the same view"):
no JS errors, no blank figure (each plotly figure painted, each equation typeset), no broken internal
link, no dead widget, every chapter of the table of contents present, and on the view test page (built,
but in no navigation), selectors and sliders that change the plotted data with no kernel. Every page also
passes axe-core's WCAG 2.x A/AA and best-practice rules, at a desktop width, on a phone and in dark mode,
and marks its Chinese text as Chinese.

Needs ``make book`` and Debian's ``chromium`` (``/usr/bin/chromium``); without them it skips loudly, and
under ``CI=true`` it fails instead.
"""

from __future__ import annotations

import contextlib
import functools
import re
import shutil
from collections.abc import Iterator
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urljoin, urlsplit

import numpy as np
import plotly.graph_objects as go
import pytest
from conftest import REPO_ROOT, book_docnames, orphan_docnames, skip_or_fail, toc_docnames
from offline_web import CHROMIUM, chromium_browser, offline_context, serve_directory

from arlm_lib import display

pytestmark = pytest.mark.browser

VIEWTEST = "book/viewtest"
XSS_PROMPT = "<img src=x onerror=alert(1)>"
FIGURE_TIMEOUT_MS = 60_000  # generous: a loaded 2-core machine parses plotly.js slowly

# True once every plotly div on the page has been drawn by plotly.js (or failed to be).
ALL_FIGURES_DRAWN_JS = """() => Array.from(document.querySelectorAll('.plotly-graph-div'))
    .every(gd => gd._fullLayout !== undefined && gd.querySelector('svg.main-svg') !== null)"""

# Per figure: its id, whether an svg of non-zero size exists, and how many marks its traces drew.
FIGURE_STATE_JS = """() => Array.from(document.querySelectorAll('.plotly-graph-div')).map(gd => {
    const svg = gd.querySelector('svg.main-svg');
    const box = svg ? svg.getBoundingClientRect() : {width: 0, height: 0};
    const marks = Array.from(gd.querySelectorAll('g.trace path, g.trace image, g.hm image, g.trace rect'))
        .filter(el => el.tagName !== 'path' || ((el.getAttribute('d') || '').length > 3));
    const cloud = Array.from(gd.querySelectorAll('.modebar-btn'))
        .map(b => b.getAttribute('data-title') || '')
        .filter(t => /share|cloud|chart studio/i.test(t));
    return {id: gd.id, width: box.width, height: box.height,
            traces: (gd._fullData || []).length, marks: marks.length, cloud: cloud};
})"""

# Per math element: whether MathJax replaced it, and any MathJax error on the page.
MATH_STATE_JS = """() => ({
    total: document.querySelectorAll('.math').length,
    typeset: Array.from(document.querySelectorAll('.math'))
        .filter(el => el.querySelector('mjx-container') !== null).length,
    containers: document.querySelectorAll('mjx-container').length,
    errors: document.querySelectorAll('mjx-merror, [data-mjx-error]').length,
})"""

# The page's visible prose, leaving out code (which may legitimately contain "$$" or "\\(").
PROSE_TEXT_JS = """() => {
    const main = document.querySelector('main') || document.body;
    const clone = main.cloneNode(true);
    clone.querySelectorAll('pre, code, script, style, .highlight, mjx-container, .cell_input')
        .forEach(el => el.remove());
    return clone.textContent;
}"""

DEAD_WIDGETS_JS = """() => document.querySelectorAll(
    '.jupyter-widgets, .widget-area, script[type="application/vnd.jupyter.widget-view+json"]').length"""

BROKEN_IMAGES_JS = """() => Array.from(document.images)
    .filter(img => img.loading !== 'lazy' && (!img.complete || img.naturalWidth === 0))
    .map(img => img.getAttribute('src'))"""


# ----------------------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def base_url(built_html: Path) -> Iterator[str]:
    """The built book served over HTTP on 127.0.0.1 at a random free port."""
    with serve_directory(built_html) as url:
        yield f"{url}/"


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """Debian's headless Chromium driven by Playwright."""
    if not CHROMIUM.exists():
        skip_or_fail(f"{CHROMIUM} is missing: install Debian's `chromium` to run the browser checks")
    with chromium_browser() as chromium:
        yield chromium


@dataclass
class PageVisit:
    """A loaded page and everything it reported while loading."""

    page: Any
    url: str
    blocked: list[str] = field(default_factory=list)
    js_errors: list[str] = field(default_factory=list)
    console_errors: list[str] = field(default_factory=list)
    failed_responses: list[str] = field(default_factory=list)
    dialogs: list[str] = field(default_factory=list)


def visit(browser: Any, url: str, viewport: dict[str, int] | None = None, dark: bool = False) -> PageVisit:
    """Open ``url`` offline (non-local requests aborted and recorded) and wait for figures and math;
    at ``viewport``'s size, and with ``dark`` as a reader whose system asks for dark colours and who has
    not chosen a mode on the page: the book's ``default_mode: auto`` must follow the system."""
    blocked: list[str] = []
    context = offline_context(browser, blocked, viewport)
    page = context.new_page()
    if dark:
        page.emulate_media(color_scheme="dark")
    record = PageVisit(page=page, url=url, blocked=blocked)

    def on_dialog(dialog: Any) -> None:
        record.dialogs.append(dialog.message)
        dialog.dismiss()

    page.on("pageerror", lambda exc: record.js_errors.append(str(exc)))
    page.on("console", lambda msg: record.console_errors.append(msg.text) if msg.type == "error" else None)
    page.on("dialog", on_dialog)
    page.on(
        "response",
        # Browsers ask for /favicon.ico on their own; the book does not link one.
        lambda r: (
            record.failed_responses.append(f"HTTP {r.status} {r.url}")
            if r.status >= 400 and not r.url.endswith("/favicon.ico")
            else None
        ),
    )
    page.goto(url, wait_until="load")
    page.wait_for_load_state("networkidle")
    try:
        page.wait_for_function(ALL_FIGURES_DRAWN_JS, timeout=FIGURE_TIMEOUT_MS)
    except Exception:  # noqa: BLE001 - the checks below report which figure is blank
        pass
    if page.evaluate("() => document.querySelector('.math') !== null"):
        try:
            page.wait_for_function(
                "() => window.MathJax && MathJax.startup && MathJax.startup.promise",
                timeout=FIGURE_TIMEOUT_MS,
            )
            page.evaluate("() => MathJax.startup.promise.then(() => true)")
        except Exception:  # noqa: BLE001 - reported by the math check
            pass
    return record


class Visits(dict):
    """Book pages by docname, each opened on first use and then shared by the tests of this module."""

    def __init__(self, browser: Any, base_url: str) -> None:
        super().__init__()
        self.browser = browser
        self.base_url = base_url

    def __missing__(self, docname: str) -> PageVisit:
        record = self[docname] = visit(self.browser, urljoin(self.base_url, f"{docname}.html"))
        return record


@pytest.fixture(scope="module")
def visits(browser: Any, base_url: str) -> Iterator[Visits]:
    """Each page of the book, visited lazily once per module."""
    opened = Visits(browser, base_url)
    yield opened
    for record in opened.values():
        record.page.context.close()


# ---------------------------------------------------------------------------- link checking helpers


class _Anchors(HTMLParser):
    """Collects every id and name attribute of an HTML file (the targets of #fragments)."""

    def __init__(self) -> None:
        super().__init__()
        self.anchors: set[str] = set()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        for key, value in attrs:
            if key in ("id", "name") and value:
                self.anchors.add(value)


@functools.cache
def anchors_of(path: Path) -> frozenset[str]:
    parser = _Anchors()
    parser.feed(path.read_text(encoding="utf-8", errors="replace"))
    return frozenset(parser.anchors)


def broken_links(hrefs: list[str], page_url: str, base_url: str, root: Path) -> list[str]:
    """The local hrefs of a page whose file or #fragment does not exist in the built book."""
    base = urlsplit(base_url)
    problems = []
    for href in hrefs:
        if not href or href.startswith(("javascript:", "mailto:", "data:")) or href == "#":
            continue
        target = urlsplit(urljoin(page_url, href))
        if target.scheme not in ("http", "https") or target.netloc != base.netloc:
            continue  # an external link: reading it needs the network, loading the page does not
        path = root / unquote(target.path).lstrip("/")
        if path.is_dir():
            path = path / "index.html"
        if not path.is_file():
            problems.append(f"{href} -> missing file {path.relative_to(root)}")
        elif target.fragment and path.suffix == ".html":
            if unquote(target.fragment) not in anchors_of(path):
                problems.append(f"{href} -> no anchor #{target.fragment} in {path.relative_to(root)}")
    return problems


# ------------------------------------------------------------------------------------------- tests


@pytest.mark.parametrize("docname", book_docnames())
def test_page_renders_offline(docname: str, visits: dict[str, PageVisit], base_url: str, built_html: Path):
    """No network, no JS error, every figure painted, every equation typeset, no broken link."""
    assert (built_html / f"{docname}.html").is_file(), f"toc page {docname} was not built"
    record = visits[docname]
    page = record.page
    problems: list[str] = []

    problems += [f"blocked non-local request: {url}" for url in record.blocked]
    problems += [f"JS error: {msg}" for msg in record.js_errors]
    problems += [f"console error: {msg}" for msg in record.console_errors]
    problems += [f"failed request: {msg}" for msg in record.failed_responses]

    for fig in page.evaluate(FIGURE_STATE_JS):
        if not (fig["width"] > 0 and fig["height"] > 0 and fig["traces"] > 0 and fig["marks"] > 0):
            problems.append(f"blank plotly figure {fig}")

    math = page.evaluate(MATH_STATE_JS)
    if math["typeset"] != math["total"]:
        problems.append(f"{math['total'] - math['typeset']} of {math['total']} math elements not typeset")
    if math["total"] and not math["containers"]:
        problems.append("the page has math but no mjx-container: MathJax did not run")
    if math["errors"]:
        problems.append(f"{math['errors']} MathJax errors")
    prose = page.evaluate(PROSE_TEXT_JS)
    for raw in ("$$", "\\(", "\\["):
        if raw in prose:
            context = prose[max(0, prose.index(raw) - 40) : prose.index(raw) + 40]
            problems.append(f"raw math delimiter {raw!r} left in the text: ...{context!r}...")

    if page.evaluate(DEAD_WIDGETS_JS):
        problems.append("an ipywidget (a dead control without a kernel) is on the page")
    problems += [f"broken image: {src}" for src in page.evaluate(BROKEN_IMAGES_JS)]

    hrefs = page.eval_on_selector_all("a[href]", "els => els.map(e => e.getAttribute('href'))")
    problems += [f"broken link: {p}" for p in broken_links(hrefs, record.url, base_url, built_html)]

    assert not problems, f"{docname}: " + "\n  ".join([""] + problems)


def test_every_toc_chapter_is_in_the_navigation(visits: dict[str, PageVisit], base_url: str):
    """The root page's navigation links to every page of the table of contents, and to no orphan page
    (the view test page is a fixture, reached by its URL)."""
    names = toc_docnames()
    record = visits[names[0]]
    hrefs = record.page.eval_on_selector_all(
        ".bd-sidebar-primary a[href]", "els => els.map(e => e.getAttribute('href'))"
    )
    linked = {urlsplit(urljoin(record.url, h)).path.lstrip("/") for h in hrefs}
    missing = [name for name in names[1:] if f"{name}.html" not in linked]
    assert not missing, f"toc pages missing from the navigation: {missing}"
    listed = [name for name in orphan_docnames() if f"{name}.html" in linked]
    assert not listed, f"orphan pages in the navigation: {listed}"
    for name in book_docnames():
        heading = visits[name].page.eval_on_selector("main h1", "el => el.textContent.trim()")
        assert heading, f"{name} has no title"


def _figure_with(page: Any, layout_key: str) -> str:
    ids = page.evaluate(
        f"""() => Array.from(document.querySelectorAll('.plotly-graph-div'))
            .filter(gd => ((gd.layout || {{}}).{layout_key} || []).length > 0).map(gd => gd.id)"""
    )
    assert ids, f"the view test page has no figure with {layout_key}"
    return ids[0]


def _trace_y(page: Any, div_id: str) -> list[float]:
    return page.evaluate(f"() => Array.from(document.getElementById('{div_id}').data[0].y)")


def _trace_y_after_change(page: Any, div_id: str, before: list[float]) -> list[float]:
    """The trace's y values once they differ from ``before`` (or as they are after a few seconds)."""
    try:
        page.wait_for_function(
            """([id, before]) => JSON.stringify(Array.from(document.getElementById(id).data[0].y))
                !== JSON.stringify(before)""",
            arg=[div_id, before],
            timeout=10_000,
        )
    except Exception:  # noqa: BLE001 - the caller asserts on the values
        pass
    return _trace_y(page, div_id)


def test_dropdown_changes_plotted_data(visits: dict[str, PageVisit]):
    """Picking another option of a plotly dropdown restyles the trace with that option's data."""
    page = visits[VIEWTEST].page
    div_id = _figure_with(page, "updatemenus")
    before = _trace_y(page, div_id)
    menu = page.locator(f"#{div_id} .updatemenu-header-group").first
    menu.scroll_into_view_if_needed()
    menu.click()
    options = page.locator(f"#{div_id} .updatemenu-dropdown-button-group .updatemenu-dropdown-button")
    assert options.count() >= 2, "the dropdown did not open"
    options.nth(1).click()
    after = _trace_y_after_change(page, div_id, before)
    assert len(after) == len(before) and after != before, "the dropdown did not change the data"
    expected = page.evaluate(
        f"() => Array.from(document.getElementById('{div_id}').layout.updatemenus[0].buttons[1].args[0].y[0])"
    )
    assert after == pytest.approx(expected)


def test_slider_changes_plotted_data(visits: dict[str, PageVisit]):
    """Moving a plotly slider to its last step restyles the trace with that step's data."""
    page = visits[VIEWTEST].page
    div_id = _figure_with(page, "sliders")
    before = _trace_y(page, div_id)
    rail = page.locator(f"#{div_id} .slider-rail-touch-rect").first
    rail.scroll_into_view_if_needed()
    box = rail.bounding_box()
    assert box and box["width"] > 0, "the slider rail is not drawn"
    page.mouse.click(box["x"] + box["width"] - 2, box["y"] + box["height"] / 2)
    after = _trace_y_after_change(page, div_id, before)
    assert after != before, "the slider did not change the data"
    expected = page.evaluate(
        f"() => {{ const s = document.getElementById('{div_id}').layout.sliders[0];"
        f" return Array.from(s.steps[s.steps.length - 1].args[0].y[0]); }}"
    )
    assert after == pytest.approx(expected)


def test_keyboard_reaches_and_operates_a_figure_menu_and_slider(visits: dict[str, PageVisit]):
    """plotly draws menus and sliders as SVG the keyboard cannot reach; the loader adds native controls
    that do the same, hidden until one has focus, and keeps them in step with the figure."""
    page = visits[VIEWTEST].page
    for layout_key, selector in (("updatemenus", "select"), ("sliders", "input[type=range]")):
        div_id = _figure_with(page, layout_key)
        before = _trace_y(page, div_id)
        bar = page.locator(f"#{div_id}").locator("xpath=../preceding-sibling::div[1]")
        control = bar.locator(selector)
        assert control.count() == 1, f"no keyboard control for the figure's {layout_key}"
        page.evaluate("() => document.activeElement && document.activeElement.blur()")
        assert bar.bounding_box()["width"] <= 1, "the keyboard controls show for mouse readers too"
        control.focus()
        assert bar.bounding_box()["width"] > 1, "the focused control is not shown"
        # Another option than the current one (earlier tests may have moved the figure with the mouse,
        # and the control follows), picked as a keyboard reader picks it.
        value, last = control.evaluate(
            "e => [Number(e.value), e.options ? e.options.length - 1 : Number(e.max)]"
        )
        if selector == "select":
            page.keyboard.press("ArrowDown" if value < last else "ArrowUp")
        else:
            page.keyboard.press("End" if value < last else "Home")
        chosen = int(control.evaluate("e => Number(e.value)"))
        assert chosen != value, "the key did not move the control"
        after = _trace_y_after_change(page, div_id, before)
        assert after != before, f"the keyboard control of {layout_key} did not change the data"
        entries = "updatemenus[0].buttons" if selector == "select" else "sliders[0].steps"
        expected = page.evaluate(
            f"() => Array.from(document.getElementById('{div_id}').layout.{entries}[{chosen}].args[0].y[0])"
        )
        assert after == pytest.approx(expected)


def test_every_figure_has_an_accessible_name(visits: dict[str, PageVisit]):
    """A screen reader announces a figure by its title, not as its hundreds of tick labels."""
    page = visits[VIEWTEST].page
    names = page.eval_on_selector_all(
        "div.arlm-figure", "els => els.map(e => [e.getAttribute('role'), e.getAttribute('aria-label')])"
    )
    assert names and all(role == "figure" and label and label != "figure" for role, label in names), names
    hidden = page.eval_on_selector_all(
        "div.arlm-figure svg.main-svg",
        "els => els.map(e => e.getAttribute('aria-hidden') || e.getAttribute('role'))",
    )
    assert "img" in hidden and "true" in hidden, hidden


#: Every piece of text plotly drew in each figure that a reader must be able to read, and the pairs that
#: collide: boxes that overlap by more than 2 px across and 40% of the shorter one's height (boxes of
#: neighbouring text touch by a few pixels without the letters meeting). Tick labels that plotly turned
#: on their side are boxed by their slanted extent, so two of those are not compared with each other.
#: Also the text that sticks out of its figure, which the page cuts off. Text drawn fully transparent is
#: not shown, so it is left out.
LABEL_COLLISIONS_JS = """() => {
    const selector = 'text.annotation-text, text.gtitle, text.legendtext, text.legendtitletext, '
        + 'text.slider-label, g.updatemenu-header, text[class$="title"], g[class$="tick"] > text, '
        + 'text.bartext';
    // Figures that switch views by opacity (the decoding explorer) keep their hidden text in the page.
    const shown = el => {
        for (let node = el; node && node.tagName !== 'DIV'; node = node.parentElement) {
            const style = getComputedStyle(node);
            if (style.display === 'none' || style.visibility === 'hidden' || Number(style.opacity) === 0
                || Number(style.fillOpacity) === 0 || /rgba\\(.*,\\s*0\\)$/.test(style.fill)) return false;
        }
        return true;
    };
    const found = [];
    document.querySelectorAll('.plotly-graph-div').forEach((div, index) => {
        const name = `figure ${index + 1} (${(div.layout?.title?.text || 'untitled').slice(0, 40)})`;
        const frame = div.querySelector('svg.main-svg').getBoundingClientRect();
        const labels = Array.from(div.querySelectorAll(selector)).filter(shown)
            .map(el => ({el, box: el.getBoundingClientRect(), text: el.textContent.trim().slice(0, 30)}))
            .filter(l => l.text && l.box.width > 0 && l.box.height > 0);
        const turned = l => /tick/.test(l.el.parentElement.getAttribute('class') || '')
            && /rotate\\((?!0[,)])/.test(l.el.getAttribute('transform') || '');
        for (const l of labels) {
            if (l.box.left < frame.left - 1 || l.box.right > frame.right + 1)
                found.push(`${name}: "${l.text}" runs past the figure's edge`);
        }
        for (let i = 0; i < labels.length; i++) {
            for (let j = i + 1; j < labels.length; j++) {
                const [a, b] = [labels[i], labels[j]];
                if (turned(a) && turned(b)) continue;
                const across = Math.min(a.box.right, b.box.right) - Math.max(a.box.left, b.box.left);
                const down = Math.min(a.box.bottom, b.box.bottom) - Math.max(a.box.top, b.box.top);
                if (across > 2 && down > 0.4 * Math.min(a.box.height, b.box.height))
                    found.push(`${name}: "${a.text}" and "${b.text}" overlap`);
            }
        }
    });
    return found;
}"""


@pytest.mark.parametrize("docname", book_docnames())
def test_no_figure_text_collides_on_a_desktop_or_a_phone(
    docname: str, visits: dict[str, PageVisit], browser: Any, base_url: str
):
    """Titles, legends, annotations, menus and tick labels of a figure neither overlap nor run off its
    edge, at a desktop's column width and in a phone's 600 px figures (a label on a log axis landed on
    another, panel titles ran into each other and slanted labels ran under a legend, none of which the
    other checks see)."""
    collisions = [f"desktop: {c}" for c in visits[docname].page.evaluate(LABEL_COLLISIONS_JS)]
    phone = visit(browser, urljoin(base_url, f"{docname}.html"), viewport=PHONE)
    try:
        collisions += [f"phone: {c}" for c in phone.page.evaluate(LABEL_COLLISIONS_JS)]
    finally:
        phone.page.context.close()
    assert not collisions, f"{docname}:" + "\n  ".join([""] + collisions)


def test_reader_text_is_shown_literally(visits: dict[str, PageVisit]):
    """A prompt that is an HTML injection shows as text in a figure and in a note, and never runs."""
    record = visits[VIEWTEST]
    page = record.page
    titles = page.eval_on_selector_all(".plotly-graph-div .gtitle", "els => els.map(e => e.textContent)")
    assert XSS_PROMPT in titles, f"the prompt is not shown literally in a figure title: {titles}"
    assert page.locator("img[src='x']").count() == 0, "the prompt was injected as an <img>"
    assert record.dialogs == [], f"injected script ran: {record.dialogs}"
    note = page.locator(".arlm-kernel-only").first.text_content()
    assert "<heads> & watch" in note, f"the kernel-only note did not keep its text literally: {note!r}"


def test_plotly_js_loaded_once_per_page(visits: dict[str, PageVisit], built_html: Path):
    """plotly.js comes from the book's _static, once, only on pages that show a figure."""
    for name in book_docnames():
        page = visits[name].page
        scripts = page.eval_on_selector_all("script[src]", "els => els.map(e => e.getAttribute('src'))")
        plotly = [s for s in scripts if re.search(r"plotly[^/]*\.js", s)]
        has_figure = page.evaluate("() => document.querySelector('.plotly-graph-div') !== null")
        assert len(plotly) == (1 if has_figure else 0), f"{name}: plotly scripts {plotly}"
        for src in plotly:
            assert "_static/" in src, f"{name}: plotly.js not from the book's _static: {src}"


# ------------------------------------------------------------------- the figure loader, on its own page

# Wraps Plotly.newPlot as soon as plotly.js defines it, to record the order in which figures are drawn.
RECORD_DRAW_ORDER_JS = """(() => {
    window.__drawOrder = [];
    let plotly;
    Object.defineProperty(window, 'Plotly', {configurable: true, get: () => plotly, set(value) {
        const newPlot = value.newPlot;
        value.newPlot = function (div, ...rest) {
            window.__drawOrder.push(typeof div === 'string' ? div : div.id);
            return newPlot.call(this, div, ...rest);
        };
        plotly = value;
    }});
})();"""


def _loader_page(folder: Path, figure_count: int, with_plotly: bool = True) -> None:
    """A page laid out like a chapter: figures far apart, scrolled to the last one while parsing."""
    shutil.copyfile(REPO_ROOT / "book" / "_static" / "arlm-figures.js", folder / "arlm-figures.js")
    shutil.copyfile(
        REPO_ROOT / "book" / "_vendor" / "plotly.js-cartesian-dist-min" / "plotly-cartesian.min.js",
        folder / "plotly.js",
    )
    figures = [
        display.figure_html(go.Figure(go.Scatter(y=[i, i + 1, 0])), div_id=f"fig-{i}")
        for i in range(figure_count)
    ]
    spacer = '<div style="height: 3000px">text</div>'
    scripts = '<script defer src="plotly.js"></script>' if with_plotly else ""
    (folder / "index.html").write_text(
        f'<!DOCTYPE html><html><head><meta charset="utf-8">{scripts}'
        '<script defer src="arlm-figures.js"></script></head><body>'
        + spacer.join(figures)
        # Runs while the page is parsed, before the deferred scripts: the reader is at the last figure.
        + "<script>window.scrollTo(0, document.body.scrollHeight);</script></body></html>",
        encoding="utf-8",
    )


@contextlib.contextmanager
def _open_loader_page(
    browser: Any, folder: Path, errors: list[str], init_script: str | None = None, width: int | None = None
) -> Iterator[Any]:
    """``folder``'s index.html, served locally in an offline browser context; JS errors go to ``errors``."""
    with serve_directory(folder) as url:
        context = offline_context(browser, [])
        if init_script:
            context.add_init_script(init_script)
        page = context.new_page()
        if width:
            page.set_viewport_size({"width": width, "height": 800})
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        try:
            page.goto(f"{url}/index.html", wait_until="load")
            yield page
        finally:
            context.close()


def test_figure_loader_draws_the_figure_in_view_first_then_every_other(browser: Any, tmp_path: Path):
    _loader_page(tmp_path, figure_count=4)
    errors: list[str] = []
    with _open_loader_page(browser, tmp_path, errors, init_script=RECORD_DRAW_ORDER_JS) as page:
        page.wait_for_function(ALL_FIGURES_DRAWN_JS, timeout=FIGURE_TIMEOUT_MS)
        order = page.evaluate("() => window.__drawOrder")
        states = page.evaluate(FIGURE_STATE_JS)
    assert errors == []
    assert order[0] == "fig-3", f"the figure in view was not drawn first: {order}"
    assert order == ["fig-3", "fig-0", "fig-1", "fig-2"], "each figure once, the rest in page order"
    assert all(s["traces"] == 1 and s["marks"] > 0 and s["height"] > 0 for s in states), states


def test_figure_loader_says_so_when_plotly_js_is_missing(browser: Any, tmp_path: Path):
    """No plotly.js: each figure box says why it is empty, and the page reports a JS error."""
    _loader_page(tmp_path, figure_count=2, with_plotly=False)
    errors: list[str] = []
    with _open_loader_page(browser, tmp_path, errors) as page:
        texts = page.eval_on_selector_all(".plotly-graph-div", "els => els.map(e => e.textContent)")
    assert texts == ["This figure needs plotly.js, which did not load (see the browser console)."] * 2
    assert any("plotly.js is not loaded" in e for e in errors), errors


def test_a_figure_keeps_its_width_on_a_phone_and_scrolls_sideways(browser: Any, tmp_path: Path):
    """At 390 px a figure squeezed to the screen ran its menus, panel titles and token labels into each
    other; arlm.css keeps it at the width the builders lay out for (Theme.figure_width) and its output
    box scrolls, with a cue above it while it does."""
    from arlm_lib.viz import THEME

    _loader_page(tmp_path, figure_count=0)  # the loader and plotly.js; the figure goes in an output box
    shutil.copyfile(REPO_ROOT / "book" / "_static" / "arlm.css", tmp_path / "arlm.css")
    page_html = (tmp_path / "index.html").read_text(encoding="utf-8")
    figure = display.figure_html(go.Figure(go.Scatter(y=[1, 2])), div_id="fig-phone")
    page_html = page_html.replace(
        "<body>",
        '<body><link rel="stylesheet" href="arlm.css">'
        f'<div class="cell_output"><div class="output text_html">{figure}</div></div>',
    )
    (tmp_path / "index.html").write_text(page_html, encoding="utf-8")
    hint_shown = "() => { const h = document.querySelector('.arlm-scroll-hint'); return h.offsetHeight > 0; }"
    # "ResizeObserver loop" errors reach window.onerror (and error monitors), not Playwright's pageerror.
    record_errors = "window.__errors = []; addEventListener('error', e => __errors.push(e.message));"
    errors: list[str] = []
    with _open_loader_page(browser, tmp_path, errors, init_script=record_errors, width=390) as page:
        page.wait_for_function(ALL_FIGURES_DRAWN_JS, timeout=FIGURE_TIMEOUT_MS)
        figure_width = page.evaluate("() => document.getElementById('fig-phone')._fullLayout.width")
        box = page.evaluate(
            "() => { const b = document.querySelector('div.output.text_html');"
            " return [b.clientWidth, b.scrollWidth, document.documentElement.scrollWidth]; }"
        )
        page.wait_for_function(hint_shown, timeout=FIGURE_TIMEOUT_MS)
        hint = page.inner_text(".arlm-scroll-hint")
        # Turned to landscape on a tablet: the figure fits, and the cue goes.
        page.set_viewport_size({"width": 1000, "height": 800})
        page.wait_for_function(f"() => !({hint_shown})()", timeout=FIGURE_TIMEOUT_MS)
        page.wait_for_timeout(200)  # a frame or two, for an error from the last resize
        window_errors = page.evaluate("() => window.__errors")
    assert errors == []
    assert figure_width >= THEME.figure_width
    client, scroll, page_width = box
    assert client <= 390 < scroll, "the output box scrolls the figure sideways"
    assert page_width <= 390, "the page itself does not scroll sideways"
    assert "scroll sideways" in hint, "a cue says there is more of the figure to the right"
    assert window_errors == []


def test_a_wide_output_table_scrolls_sideways_on_its_own_and_is_a_named_tab_stop(
    browser: Any, tmp_path: Path
):
    """Chapter 5's bench results: tables 930 px wide in a 688 px column, in one output box thousands of px
    tall, which scrolled all of them together with its scrollbar at its foot. arlm.css makes each wide
    table scroll itself, and arlm-a11y.js makes it a named tab stop that keeps its table role; a narrow
    table neither scrolls nor takes the focus, and the output box no longer overflows."""
    for name in ("arlm.css", "arlm-a11y.js"):
        shutil.copyfile(REPO_ROOT / "book" / "_static" / name, tmp_path / name)
    row = "".join(f"<td>{1_000_000 + i:,}</td>" for i in range(12))
    head = "".join(f"<th>column header {i}</th>" for i in range(12))
    wide = f"<table><thead><tr>{head}</tr></thead><tbody><tr>{row}</tr></tbody></table>"
    narrow = "<table><tr><th>a</th><td>1</td></tr></table>"
    (tmp_path / "index.html").write_text(
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><link rel="stylesheet" href="arlm.css">'
        '<script defer src="arlm-a11y.js"></script></head><body><main style="width: 688px">'
        f'<div class="cell_output"><div class="output text_html"><div>{wide}<p>text</p>{narrow}{wide}</div>'
        "</div></div></main></body></html>",
        encoding="utf-8",
    )
    errors: list[str] = []
    with _open_loader_page(browser, tmp_path, errors) as page:
        page.wait_for_function("() => document.querySelector('table[tabindex]') !== null", timeout=10_000)
        tables = page.evaluate(
            "() => Array.from(document.querySelectorAll('table')).map(t => ({scrolls: t.scrollWidth >"
            " t.clientWidth + 1, width: t.getBoundingClientRect().width, tab: t.getAttribute('tabindex'),"
            " role: t.getAttribute('role'), label: t.getAttribute('aria-label') || ''}))"
        )
        box = page.evaluate(
            "() => { const b = document.querySelector('div.output.text_html'); return [b.clientWidth, b.scrollWidth]; }"
        )
    assert errors == []
    wide_1, small, wide_2 = tables
    for table in (wide_1, wide_2):
        assert table["scrolls"] and table["width"] <= 688, table
        assert table["tab"] == "0" and table["role"] is None and table["label"].startswith("Table wider"), (
            table
        )
    assert not small["scrolls"] and small["tab"] is None, small
    assert box[1] <= box[0] + 1, "the output box itself does not scroll"


def test_the_keyboard_reads_a_figures_values(browser: Any, tmp_path: Path):
    """Values shown only on hover (an attention weight, a token's probability) are read with the arrow
    keys: plotly's own hover label moves from point to point, and a live region says what it shows."""
    _loader_page(tmp_path, figure_count=0)
    bars = go.Figure(
        [
            go.Bar(
                x=["a", "b", "c"],
                y=np.array([0.5, 0.3, 0.2]),
                name="model",
                hovertemplate="%{x}: p=%{y}<extra></extra>",
            ),
            go.Bar(x=["a", "b", "c"], y=[0.7, 0.2, 0.1], name="hidden", visible=False),
            go.Bar(
                x=["a", "b", "c"],
                y=[0.6, 0.4, 0.0],
                name="sampled",
                hovertemplate="%{x}: q=%{y}<extra></extra>",
            ),
        ],
        layout={"title": {"text": "Next token"}},
    )
    from plotly.subplots import make_subplots

    heatmap = make_subplots(rows=1, cols=2)  # two panels, as the per-head figures
    for col, (z, name) in enumerate(
        [
            (np.array([[1.0, np.nan], [0.25, 0.75]]), "head 0"),
            (np.array([[0.5, np.nan], [0.1, 0.9]]), "head 1"),
        ],
        start=1,
    ):
        heatmap.add_trace(
            go.Heatmap(
                z=z,  # numpy: plotly sends it base64-encoded
                x=["k0", "k1"],
                y=["q0", "q1"],
                hovertemplate=name + " query %{y}<br>key %{x}<br>weight %{z}<extra></extra>",
                hoverongaps=False,  # as the library's attention maps: a masked cell has no label
                coloraxis="coloraxis",
            ),
            row=1,
            col=col,
        )
    heatmap.update_layout(title={"text": "Attention"})
    page_html = (
        (tmp_path / "index.html")
        .read_text(encoding="utf-8")
        .replace(
            "<body>",
            "<body>"
            + display.figure_html(bars, div_id="fig-bars")
            + display.figure_html(heatmap, div_id="fig-heat"),
        )
    )
    (tmp_path / "index.html").write_text(page_html, encoding="utf-8")
    errors: list[str] = []
    with _open_loader_page(browser, tmp_path, errors) as page:
        page.wait_for_function(ALL_FIGURES_DRAWN_JS, timeout=FIGURE_TIMEOUT_MS)
        page.wait_for_function("() => document.querySelectorAll('.arlm-figure-readout').length === 2")

        def read(figure: int, *keys: str) -> str:
            for key in keys:
                page.keyboard.press(key)
            page.wait_for_function(  # the loader reads plotly's label once it is drawn
                f"() => !document.querySelectorAll('.arlm-figure-readout')[{figure}].dataset.pending"
            )
            return page.evaluate(
                f"() => document.querySelectorAll('.arlm-figure-readout')[{figure}].textContent"
            )

        page.keyboard.press("Tab")  # the first figure takes the focus
        assert page.evaluate("() => document.activeElement.getAttribute('aria-label')") == (
            "Next token. Arrow keys read its values."
        )
        first_box, second_box = 0, 1
        focused_at = page.evaluate("() => window.scrollY")  # the focus may scroll the figure into view
        assert read(first_box, "ArrowRight") == "a: p=0.5"
        assert read(first_box, "ArrowRight", "ArrowRight", "ArrowRight") == "c: p=0.2"  # stops at the end
        assert read(first_box, "ArrowDown") == "c: q=0", "down: the next shown curve (not the hidden one)"
        assert read(first_box, "Home") == "a: q=0.6"
        assert read(first_box, "PageDown") == "b: q=0.4"
        assert page.evaluate("() => window.scrollY") == focused_at, "the arrow keys scrolled the page"
        assert read(first_box, "Escape") == ""
        focused = ""
        for _ in range(12):  # past the first figure's tool buttons
            page.keyboard.press("Tab")
            focused = page.evaluate("() => document.activeElement.getAttribute('aria-label')") or ""
            if focused.startswith("Attention"):
                break
        assert focused == "Attention. Arrow keys read its values."
        assert read(second_box, "ArrowRight") == "head 0 query q0; key k0; weight 1"
        assert read(second_box, "ArrowDown", "End") == "head 0 query q1; key k1; weight 0.75"
        assert read(second_box, "ArrowUp") == "no value at this point"  # the masked cell
        assert read(second_box, "ArrowDown", "ArrowDown") == "no value at this point", "down: the next panel"
        assert read(second_box, "ArrowLeft") == "head 1 query q0; key k0; weight 0.5"
        assert read(second_box, "ArrowUp") == "head 0 query q1; key k0; weight 0.25", "up: back a panel"
        before = read(second_box)
        page.keyboard.press("Shift+ArrowRight")  # a browser or selection shortcut: not ours
        assert read(second_box) == before
        page.keyboard.press("Tab")  # the focus moves on: the keyboard's label goes
        assert page.evaluate("() => document.querySelectorAll('.hoverlayer .hovertext').length") == 0
    assert errors == []


# ------------------------------------------------------------------------------------ accessibility

#: axe-core's rule sets: WCAG 2.0, 2.1 and 2.2 at levels A and AA, and Deque's best practices.
AXE_TAGS = ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa", "wcag22aa", "best-practice"]
PHONE = {"width": 390, "height": 844}


#: The rules whose outcome depends on the width or the colours: all a phone or dark mode can change.
PHONE_RULES = ["scrollable-region-focusable", "meta-viewport", "target-size", "region", "landmark-one-main"]
DARK_RULES = ["color-contrast", "link-in-text-block"]
#: What the book styles itself (notebook outputs, its notes); the theme's own dark mode is the theme's.
BOOK_STYLED = ".cell_output, .admonition"


def axe_violations(page: Any, rules: list[str] | None = None, within: str | None = None) -> list[str]:
    """axe-core's violations on the page as it is now, one line each: rule, impact, where. All the rules
    of :data:`AXE_TAGS`, or only ``rules``, on the whole page or on the elements the CSS selector
    ``within`` matches (axe takes up to 20 s on a chapter of thousands of nodes, most of it colour
    contrast)."""
    from axe_playwright_python.sync_playwright import Axe

    run_only = {"type": "rule", "values": rules} if rules else {"type": "tag", "values": AXE_TAGS}
    options = {"runOnly": run_only, "resultTypes": ["violations"]}
    found = Axe().run(page, context=within, options=options).response["violations"]
    lines = []
    for violation in found:
        where = ["/".join(map(str, node["target"])) for node in violation["nodes"]]
        shown = ", ".join(where[:4]) + (f" and {len(where) - 4} more" if len(where) > 4 else "")
        lines.append(f"{violation['id']} ({violation['impact']}): {violation['help']}; at {shown}")
    return lines


@pytest.mark.parametrize("docname", book_docnames())
def test_page_passes_axe_core_rules(docname: str, visits: dict[str, PageVisit]):
    """No WCAG A/AA or best-practice violation on a desktop-sized page, once figures and math are drawn."""
    violations = axe_violations(visits[docname].page)
    assert not violations, f"{docname}: " + "\n  ".join([""] + violations)


#: Text in notebook outputs whose colour is too close to what is behind it: WCAG's contrast ratio below
#: 4.5:1 (3:1 for large text), the background found by stacking the element's and its ancestors'
#: background colours. axe-core reports a ratio near 1:1 as "needs review", not as a violation (the text
#: might be hidden on purpose): pink inline code on the light output box of dark mode, at 1.01:1, passed
#: it. Figures (plotly's SVG) and formulas are left to axe-core.
LOW_CONTRAST_OUTPUT_TEXT_JS = """(selector) => {
    const rgba = c => { const m = c.match(/rgba?\\(([^)]+)\\)/); if (!m) return [0, 0, 0, 0];
        const p = m[1].split(/[\\s,\\/]+/).filter(Boolean).map(Number); return [p[0], p[1], p[2], p[3] ?? 1]; };
    const over = (top, below) => [0, 1, 2].map(i => top[i] * top[3] + below[i] * (1 - top[3])).concat(1);
    const luminance = c => c.slice(0, 3).map(v => v / 255)
        .map(v => v <= 0.03928 ? v / 12.92 : ((v + 0.055) / 1.055) ** 2.4)
        .reduce((sum, v, i) => sum + v * [0.2126, 0.7152, 0.0722][i], 0);
    const behind = el => {
        const layers = [];
        for (let node = el; node; node = node.parentElement) {
            const colour = rgba(getComputedStyle(node).backgroundColor);
            if (colour[3] > 0) layers.push(colour);
            if (colour[3] >= 1) break;
        }
        return layers.reduceRight((below, layer) => over(layer, below), [255, 255, 255, 1]);
    };
    const found = [];
    document.querySelectorAll(selector).forEach(el => {
        if (el.closest('svg, .plotly-graph-div, mjx-container')) return;
        if (!Array.from(el.childNodes).some(n => n.nodeType === 3 && n.textContent.trim())) return;
        const box = el.getBoundingClientRect();
        const style = getComputedStyle(el);
        if (box.width <= 1 || box.height <= 1 || style.visibility === 'hidden') return;
        const background = behind(el);
        const [a, b] = [luminance(over(rgba(style.color), background)), luminance(background)];
        const ratio = (Math.max(a, b) + 0.05) / (Math.min(a, b) + 0.05);
        const size = parseFloat(style.fontSize);
        const large = size >= 24 || (size >= 18.66 && Number(style.fontWeight) >= 700);
        if (ratio < (large ? 3 : 4.5))
            found.push(`${ratio.toFixed(2)}:1 ${el.tagName.toLowerCase()} "${el.textContent.trim().slice(0, 40)}"`
                + ` (${style.color} on rgb(${background.slice(0, 3).map(Math.round).join(', ')}))`);
    });
    return found;
}"""
#: The text of notebook outputs, and the cue above a figure wider than a phone (arlm-figures.js).
OUTPUT_TEXT = ".cell_output *"
SCROLL_HINT = ".cell_output .arlm-scroll-hint"


@pytest.mark.parametrize("docname", book_docnames())
@pytest.mark.parametrize("setting", ["phone", "dark"])
def test_page_passes_axe_core_rules_on_a_phone_and_in_dark_mode(
    docname: str, setting: str, browser: Any, base_url: str
):
    """The rules a setting can change, at a phone's width (formulas and tables that scroll sideways must be
    reachable by keyboard) and in the theme's dark mode (colour contrast of the book's own styles). In dark
    mode also every text of a notebook output, at a desktop's width and then at a phone's, where the cue
    above a wide figure shows."""
    url = urljoin(base_url, f"{docname}.html")
    record = visit(browser, url, viewport=PHONE) if setting == "phone" else visit(browser, url, dark=True)
    try:
        if setting == "dark":
            assert record.page.evaluate("document.documentElement.dataset.theme") == "dark"
            assert not record.js_errors + record.console_errors, "the first visit in dark mode logged errors"
        if setting == "phone":
            violations = axe_violations(record.page, PHONE_RULES)
        else:
            # A page with no notebook output or note (the glossary, say) is short: check its whole text.
            styled = record.page.locator(BOOK_STYLED).count() > 0
            violations = axe_violations(
                record.page, DARK_RULES, within=BOOK_STYLED if styled else ".bd-article"
            )
            violations += record.page.evaluate(LOW_CONTRAST_OUTPUT_TEXT_JS, OUTPUT_TEXT)
            if record.page.locator(SCROLL_HINT).count():
                record.page.set_viewport_size(PHONE)
                record.page.wait_for_function(
                    f"() => Array.from(document.querySelectorAll('{SCROLL_HINT}')).some(h => !h.hidden)",
                    timeout=FIGURE_TIMEOUT_MS,
                )
                shown = f"{SCROLL_HINT}:not([hidden])"
                violations += [
                    f"phone: {line}" for line in record.page.evaluate(LOW_CONTRAST_OUTPUT_TEXT_JS, shown)
                ]
    finally:
        record.page.context.close()
    assert not violations, f"{docname} ({setting}): " + "\n  ".join([""] + violations)


#: Text in the book's pages (the article, its contents list, the navigation) that holds a Han character,
#: CJK punctuation or a fullwidth form and has no language of its own: a screen reader reads it with the
#: page's English voice. Code, formulas, figures and form controls are not prose (arlm-a11y.js).
UNMARKED_CHINESE_JS = """() => {
    const cjk = /[\\p{Script=Han}\\u3000-\\u303F\\uFF00-\\uFFEF]/u;
    const notProse = 'script, style, textarea, select, code, pre, kbd, samp, svg, math, mjx-container, '
        + '.math, .plotly-graph-div';
    const found = [];
    document.querySelectorAll('.bd-main, #pst-primary-sidebar').forEach(root => {
        const walker = document.createTreeWalker(root, NodeFilter.SHOW_TEXT);
        while (walker.nextNode()) {
            const text = walker.currentNode;
            const parent = text.parentElement;
            if (!cjk.test(text.data) || parent.closest(notProse)) continue;
            const said = parent.closest('[lang]');
            if (!said || said === document.documentElement) found.push(text.data.trim().slice(0, 40));
        }
    });
    return found;
}"""
CHINESE_SPANS_JS = "() => document.querySelectorAll('span[lang=\"zh\"]').length"


@pytest.mark.parametrize("docname", book_docnames())
def test_chinese_text_is_marked_as_chinese(docname: str, visits: dict[str, PageVisit]):
    """The book gives each Chinese term once ("mixed precision (混合精度)"); in a page whose language is
    English a screen reader read it with an English voice. arlm-a11y.js marks every run of Chinese in
    the page's prose lang="zh", and a second pass changes nothing."""
    page = visits[docname].page
    unmarked = page.evaluate(UNMARKED_CHINESE_JS)
    assert not unmarked, f"{docname}: Chinese text with no lang: {unmarked[:10]}"
    if docname == "book/glossary":
        term = page.locator('dt span[lang="zh"]', has_text="混合精度")
        assert term.count() == 1, "the glossary's Chinese term for mixed precision is not marked lang=zh"
        assert term.evaluate("el => el.textContent") == "混合精度"
        before = page.evaluate(CHINESE_SPANS_JS)
        assert before > 50
        page.add_script_tag(path=str(REPO_ROOT / "book" / "_static" / "arlm-a11y.js"))
        assert page.evaluate(CHINESE_SPANS_JS) == before, "a second pass wrapped text again"
        assert page.evaluate("() => document.querySelectorAll('span[lang] span[lang]').length") == 0


WIDE_FORMULAS_JS = """() => Array.from(document.querySelectorAll('mjx-container[display="true"]')).map(m => ({
    overflows: m.scrollWidth > m.clientWidth + 1,
    tabStop: m.getAttribute('tabindex') === '0' && m.getAttribute('role') === 'group'
        && (m.getAttribute('aria-label') || '').startsWith('Formula wider than the page'),
}))"""


def test_only_formulas_wider_than_the_page_are_tab_stops(browser: Any, base_url: str):
    """arlm-a11y.js: on a phone the formulas that scroll sideways are named tab stops, the others are not;
    widening the window to a desktop takes the stop away from those that now fit."""
    record = visit(browser, urljoin(base_url, "book/03_attention.html"), viewport=PHONE)
    page = record.page
    try:
        on_phone = page.evaluate(WIDE_FORMULAS_JS)
        assert any(f["overflows"] for f in on_phone) and not all(f["overflows"] for f in on_phone)
        assert all(f["tabStop"] == f["overflows"] for f in on_phone), on_phone
        page.set_viewport_size({"width": 1280, "height": 900})
        page.wait_for_function(
            f"() => ({WIDE_FORMULAS_JS})().every(f => f.tabStop === f.overflows)", timeout=FIGURE_TIMEOUT_MS
        )
        on_desktop = page.evaluate(WIDE_FORMULAS_JS)
        fewer = sum(f["tabStop"] for f in on_desktop) < sum(f["tabStop"] for f in on_phone)
        assert fewer, (on_phone, on_desktop)
    finally:
        page.context.close()
