"""Weigh every page of the built book and time its text and figures in headless Chromium (offline).

For each HTML page of ``_build/html``: the bytes the page itself costs a reader (its HTML plus the
scripts, images and data only it loads; files shared by every page, ``_static/`` and the search index,
are left out because the browser caches them once), and, from the moment of navigation:

* text: the first contentful paint (the browser's own ``first-contentful-paint`` entry);
* in view: the first frame in which every figure in the first screen is drawn, which is what a reader
  waits for (the book draws figures in view first, then the rest: ``book/_static/arlm-figures.js``);
  on a page that opens with prose, this is just the first frame after the page is parsed;
* first figure: the first frame with any figure drawn (plotly.js loaded and compiled, one figure drawn);
* all figures: the first frame in which every figure of the page is drawn, with no scrolling.

A recorder installed before the page's own scripts checks the figures on every animation frame, so
the times do not depend on when the load event fires. Targets: under 1.5 MB, and figures in view
within 2 s. Prints a Markdown table.

Times are given cold (a fresh browser profile: plotly.js is downloaded, parsed and compiled) and
warm (the same page loaded again: what a reader moving between chapters sees, with the browser's HTTP
and compiled-code caches). On a loaded machine they grow with the load, so the table also gives the
CPU time the page's main thread used until all figures were drawn (Chrome's ThreadTime metric).

    make book && .venv/bin/python bench/page_weight.py [--html _build/html] [--runs 3] [--pages ...]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

# The browser tests' helpers, so that the bench and the tests block the network the same way.
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from offline_web import CHROMIUM, chromium_browser, offline_context, serve_directory  # noqa: E402

SHARED_PREFIXES = ("/_static/", "/searchindex.js")
SKIP_DIRS = {"_static", "_sources", "_images", "_modules"}
TARGET_BYTES = 1.5e6
TARGET_SECONDS = 2.0
FIGURE_TIMEOUT_MS = 30_000

# Installed before any script of the page runs. On every animation frame once the document is parsed:
# the time the figures in the viewport were first all drawn, and the time every figure was.
PAINT_RECORDER_JS = """(() => {
    const record = window.__arlmPaint = {inView: null, first: null, all: null, figures: 0};
    const drawn = gd => gd._fullLayout !== undefined && gd.querySelector('svg.main-svg') !== null
        && gd.querySelectorAll('g.trace, g.hm').length > 0;
    const inView = gd => { const b = gd.getBoundingClientRect();
        return b.width > 0 && b.bottom > 0 && b.top < window.innerHeight; };
    function check(now) {
        if (document.readyState !== 'loading') {
            const divs = Array.from(document.querySelectorAll('.plotly-graph-div'));
            record.figures = divs.length;
            if (record.inView === null && divs.filter(inView).every(drawn)) record.inView = now;
            if (record.first === null && divs.some(drawn)) record.first = now;
            if (record.all === null && divs.every(drawn)) record.all = now;
        }
        if (record.all === null) requestAnimationFrame(check);
    }
    requestAnimationFrame(check);
})();"""

FIRST_CONTENTFUL_PAINT_JS = """() => {
    const fcp = performance.getEntriesByName('first-contentful-paint')[0];
    return fcp ? fcp.startTime : null;
}"""


@dataclass
class Load:
    """One load of a page: ms from navigation to each event (None: the page has no figure)."""

    figures: int
    text_ms: float | None
    in_view_ms: float | None
    first_ms: float | None
    all_ms: float | None


@dataclass
class PageResult:
    """One page's weight and timings (medians over the runs)."""

    page: str
    html_bytes: int
    own_bytes: int
    cold: Load
    warm: Load
    cpu_ms: float | None
    blocked: int


def html_pages(root: Path) -> list[Path]:
    """Every HTML page of the built book, outside the folders of shared assets, less redirect stubs."""
    return sorted(
        p
        for p in root.rglob("*.html")
        if not SKIP_DIRS.intersection(p.relative_to(root).parts[:1])
        and 'http-equiv="refresh"' not in p.read_text(encoding="utf-8", errors="replace").lower()[:2000]
    )


def _load(page: Any, url: str) -> Load:
    """Navigate to ``url`` and wait until its figures are all drawn (the recorder must be installed)."""
    page.goto(url, wait_until="load")
    figures = page.evaluate("() => document.querySelectorAll('.plotly-graph-div').length")
    if figures:
        page.wait_for_function("() => window.__arlmPaint.all !== null", timeout=FIGURE_TIMEOUT_MS)
    record = page.evaluate("() => window.__arlmPaint")
    return Load(
        figures=figures,
        text_ms=page.evaluate(FIRST_CONTENTFUL_PAINT_JS),
        in_view_ms=record["inView"] if figures else None,
        first_ms=record["first"] if figures else None,
        all_ms=record["all"] if figures else None,
    )


def _thread_ms(cdp: Any) -> float:
    """CPU time the page's main thread has used so far, in ms."""
    metrics = {m["name"]: m["value"] for m in cdp.send("Performance.getMetrics")["metrics"]}
    return 1000.0 * metrics.get("ThreadTime", float("nan"))


@dataclass
class Sample:
    """One measurement of a page: a cold load and a warm one in the same fresh browser context."""

    own_bytes: int
    cold: Load
    warm: Load
    cpu_ms: float | None
    blocked: int


def measure(browser: Any, base: str, root: Path, page_path: Path) -> Sample:
    """Load one page in a fresh context, then again."""
    blocked: list[str] = []
    own: dict[str, int] = {}
    context = offline_context(browser, blocked)
    context.add_init_script(PAINT_RECORDER_JS)

    def on_response(response: Any) -> None:
        path = unquote(urlsplit(response.url).path)
        if response.ok and not path.startswith(SHARED_PREFIXES):
            local = root / path.lstrip("/")
            own[path] = local.stat().st_size if local.is_file() else 0

    page = context.new_page()
    page.on("response", on_response)
    cdp = context.new_cdp_session(page)
    cdp.send("Performance.enable")
    url = f"{base}/{page_path.relative_to(root).as_posix()}"
    try:
        cold = _load(page, url)
        cpu_ms = _thread_ms(cdp) if cold.figures else None
        page.wait_for_load_state("networkidle")
        own_bytes = sum(own.values())
        warm = _load(page, url)
    finally:
        context.close()
    return Sample(own_bytes, cold, warm, cpu_ms, len(blocked))


def _median(values: list[float | None]) -> float | None:
    known = [v for v in values if v is not None]
    return statistics.median(known) if known else None


def _median_load(loads: list[Load]) -> Load:
    return Load(
        figures=loads[0].figures,
        text_ms=_median([x.text_ms for x in loads]),
        in_view_ms=_median([x.in_view_ms for x in loads]),
        first_ms=_median([x.first_ms for x in loads]),
        all_ms=_median([x.all_ms for x in loads]),
    )


def run(root: Path, runs: int, only: list[str] | None = None) -> list[PageResult]:
    """Measure every page (or those named) ``runs`` times, fresh browser cache each time; medians."""
    pages = html_pages(root)
    if only:
        unknown = sorted(set(only) - {p.relative_to(root).as_posix() for p in pages})
        if unknown:
            raise SystemExit(
                f"no such page in {root}: {', '.join(unknown)} (names like book/03_attention.html)"
            )
        pages = [p for p in pages if p.relative_to(root).as_posix() in only]
    results = []
    with serve_directory(root) as base, chromium_browser() as browser:
        for page_path in pages:
            samples = [measure(browser, base, root, page_path) for _ in range(runs)]
            results.append(
                PageResult(
                    page=page_path.relative_to(root).as_posix(),
                    html_bytes=page_path.stat().st_size,
                    own_bytes=max(s.own_bytes for s in samples),
                    cold=_median_load([s.cold for s in samples]),
                    warm=_median_load([s.warm for s in samples]),
                    cpu_ms=_median([s.cpu_ms for s in samples]),
                    blocked=max(s.blocked for s in samples),
                )
            )
    return results


def _seconds(ms: float | None) -> str:
    return "-" if ms is None else f"{ms / 1000:.2f} s"


def print_table(results: list[PageResult]) -> None:
    """A Markdown table; pages over a target are marked."""
    print(
        "| page | HTML KB | own KB (HTML + own scripts/data) | figures | text, cold | figures in view, cold "
        "| first figure, cold | all figures, cold | text / in view / first / all, warm "
        "| main-thread CPU, cold | blocked |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in results:
        over = []
        if r.own_bytes > TARGET_BYTES:
            over.append("over 1.5 MB")
        if r.cold.in_view_ms is not None and r.cold.in_view_ms / 1000 > TARGET_SECONDS:
            over.append("over 2 s")
        flag = f" **{', '.join(over)}**" if over else ""
        warm = " / ".join(
            _seconds(ms) for ms in (r.warm.text_ms, r.warm.in_view_ms, r.warm.first_ms, r.warm.all_ms)
        )
        print(
            f"| {r.page}{flag} | {r.html_bytes / 1e3:.1f} | {r.own_bytes / 1e3:.1f} | {r.cold.figures} "
            f"| {_seconds(r.cold.text_ms)} | {_seconds(r.cold.in_view_ms)} | {_seconds(r.cold.first_ms)} "
            f"| {_seconds(r.cold.all_ms)} "
            f"| {warm} | {_seconds(r.cpu_ms)} | {r.blocked} |"
        )
    total = sum(r.own_bytes for r in results)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(
        f"\n{len(results)} pages, {total / 1e6:.2f} MB in all; targets: < 1.5 MB and figures in view "
        f"< 2 s per page (cold). {os.cpu_count()} CPUs, load average {load:.1f} while measuring."
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--html", type=Path, default=Path("_build/html"), help="the built book")
    parser.add_argument("--runs", type=int, default=3, help="loads per page; the time is the median")
    parser.add_argument("--pages", nargs="+", help="only these pages (book/03_attention.html ...)")
    args = parser.parse_args()
    if not (args.html / "index.html").is_file():
        raise SystemExit(f"no built book at {args.html}: run `make book` first")
    if not CHROMIUM.exists():
        raise SystemExit(f"{CHROMIUM} is missing: install Debian's `chromium`")
    print_table(run(args.html, max(1, args.runs), args.pages))


if __name__ == "__main__":
    main()
