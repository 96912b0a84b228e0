"""Weigh every page of the built book and time its figures in headless Chromium (offline).

For each HTML page of ``_build/html``: the bytes the page itself costs a reader (its HTML plus the
scripts, images and data only it loads; files shared by every page, ``_static/`` and the search index,
are left out because the browser caches them once), and the time from navigation until the last plotly
figure is painted. Targets: under 1.5 MB and under 2 s per page. Prints a Markdown table.

The time is given cold (a fresh browser profile: plotly.js is downloaded, parsed and compiled) and
warm (the same page loaded again: what a reader moving between chapters sees, with the browser's HTTP
and compiled-code caches). On a loaded machine both grow with the load, so the table also gives the
CPU time the page's main thread used until then (Chrome's ThreadTime metric), which does not: on an
idle machine the cold time is about that CPU time.

    make book && .venv/bin/python bench/page_weight.py [--html _build/html] [--runs 3]
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

# Resolves to performance.now() (ms since navigation) once every plotly figure has an svg and traces.
FIGURES_PAINTED_JS = """() => {
    const divs = Array.from(document.querySelectorAll('.plotly-graph-div'));
    const done = divs.every(gd => gd._fullLayout !== undefined && gd.querySelector('svg.main-svg')
        && gd.querySelectorAll('g.trace, g.hm').length > 0);
    return done ? performance.now() : false;
}"""


@dataclass
class PageResult:
    """One page's weight and timing."""

    page: str
    html_bytes: int
    own_bytes: int
    figures: int
    paint_ms: float | None
    warm_paint_ms: float | None
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


def _paint_ms(page: Any, url: str) -> tuple[int, float | None]:
    """Navigate to ``url``: (number of figures, ms from navigation until the last one is painted)."""
    page.goto(url, wait_until="load")
    figures = page.evaluate("() => document.querySelectorAll('.plotly-graph-div').length")
    if not figures:
        return 0, None
    handle = page.wait_for_function(FIGURES_PAINTED_JS, polling="raf", timeout=FIGURE_TIMEOUT_MS)
    return figures, float(handle.json_value())


def _thread_ms(cdp: Any) -> float:
    """CPU time the page's main thread has used so far, in ms."""
    metrics = {m["name"]: m["value"] for m in cdp.send("Performance.getMetrics")["metrics"]}
    return 1000.0 * metrics.get("ThreadTime", float("nan"))


def measure(
    browser: Any, base: str, root: Path, page_path: Path
) -> tuple[int, int, float | None, float | None, float | None, int]:
    """Load one page in a fresh context, then again.

    Returns (own bytes, figures, cold ms, warm ms, cold main-thread CPU ms, blocked requests).
    """
    blocked: list[str] = []
    own: dict[str, int] = {}
    context = offline_context(browser, blocked)

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
        figures, cold_ms = _paint_ms(page, url)
        cpu_ms = _thread_ms(cdp) if figures else None
        page.wait_for_load_state("networkidle")
        own_bytes = sum(own.values())
        _, warm_ms = _paint_ms(page, url)
    finally:
        context.close()
    return own_bytes, figures, cold_ms, warm_ms, cpu_ms, len(blocked)


def run(root: Path, runs: int) -> list[PageResult]:
    """Measure every page ``runs`` times (fresh browser cache each time); times are medians."""
    results = []
    with serve_directory(root) as base, chromium_browser() as browser:
        for page_path in html_pages(root):
            samples = [measure(browser, base, root, page_path) for _ in range(runs)]
            paints = [s[2] for s in samples if s[2] is not None]
            warm = [s[3] for s in samples if s[3] is not None]
            cpu = [s[4] for s in samples if s[4] is not None]
            results.append(
                PageResult(
                    page=page_path.relative_to(root).as_posix(),
                    html_bytes=page_path.stat().st_size,
                    own_bytes=max(s[0] for s in samples),
                    figures=samples[0][1],
                    paint_ms=statistics.median(paints) if paints else None,
                    warm_paint_ms=statistics.median(warm) if warm else None,
                    cpu_ms=statistics.median(cpu) if cpu else None,
                    blocked=max(s[5] for s in samples),
                )
            )
    return results


def print_table(results: list[PageResult]) -> None:
    """A Markdown table; pages over a target are marked."""
    print(
        "| page | HTML KB | own KB (HTML + own scripts/data) | figures "
        "| last figure painted, cold | warm | main-thread CPU, cold | blocked |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for r in results:
        paint = "-" if r.paint_ms is None else f"{r.paint_ms / 1000:.2f} s"
        warm = "-" if r.warm_paint_ms is None else f"{r.warm_paint_ms / 1000:.2f} s"
        cpu = "-" if r.cpu_ms is None else f"{r.cpu_ms / 1000:.2f} s"
        over = []
        if r.own_bytes > TARGET_BYTES:
            over.append("over 1.5 MB")
        if r.paint_ms is not None and r.paint_ms / 1000 > TARGET_SECONDS:
            over.append("over 2 s")
        flag = f" **{', '.join(over)}**" if over else ""
        print(
            f"| {r.page}{flag} | {r.html_bytes / 1e3:.1f} | {r.own_bytes / 1e3:.1f} | {r.figures} "
            f"| {paint} | {warm} | {cpu} | {r.blocked} |"
        )
    total = sum(r.own_bytes for r in results)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(
        f"\n{len(results)} pages, {total / 1e6:.2f} MB in all; targets: < 1.5 MB and < 2 s per page "
        f"(cold). {os.cpu_count()} CPUs, load average {load:.1f} while measuring."
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--html", type=Path, default=Path("_build/html"), help="the built book")
    parser.add_argument("--runs", type=int, default=3, help="loads per page; the time is the median")
    args = parser.parse_args()
    if not (args.html / "index.html").is_file():
        raise SystemExit(f"no built book at {args.html}: run `make book` first")
    if not CHROMIUM.exists():
        raise SystemExit(f"{CHROMIUM} is missing: install Debian's `chromium`")
    print_table(run(args.html, max(1, args.runs)))


if __name__ == "__main__":
    main()
