"""Local Sphinx extension: make the built book self-contained and keep dead widgets out of it.

- plotly.js (the cartesian bundle vendored in ``book/_vendor``, a third of the full bundle's size: see
  its SOURCE.md) and the book's figure loader (``book/_static/arlm-figures.js``) are loaded once,
  deferred, on exactly the pages that contain a plotly figure. The loader draws the figures that
  :func:`arlm_lib.display.show` wrote as JSON: those in view first, the rest when near or idle. The
  build stops if the bundle's version is not the one the installed ``plotly`` package draws for.
- ``ARLM_BOOK_BUILD=1`` is put in the build's environment, which the notebook kernels inherit, so a
  plain ``jupyter-book build .`` renders figures the same way ``make book`` does.
- jupyter-cache keys a notebook's outputs on its code cells only, so a change to ``arlm_lib`` alone
  would leave every chapter showing numbers from the old library. When the library's files change, or
  a file a chapter reads (``bench/RESULTS.md``), the execution cache is cleared and every notebook is
  read (and so executed) again.
- A notebook output that is an ipywidget would be a frozen, dead control in the static page: it is a
  build warning (and so, under ``-W``, an error) that names the fix.
- A notebook whose metadata says ``"orphan": true`` (the view test page, a fixture of the browser tests) is
  built though ``_toc.yml`` does not list it, and so without a place in the navigation: the book builds
  only the files of its table of contents (``only_build_toc_files``), and Sphinx does not ask an orphan
  page to be in a toctree.
- Accessibility repairs that axe-core asked for: every page loads ``book/_static/arlm-a11y.js`` (a
  landmark for the theme's sidebar, keyboard-scrollable wide formulas, and Chinese text marked
  ``lang="zh"`` for screen readers), and the bibliography's entries get the list-item role their list
  needs.
"""

from __future__ import annotations

import filecmp
import hashlib
import importlib.util
import json
import os
import re
import shutil
from pathlib import Path
from typing import Any

from docutils import nodes
from sphinx.application import Sphinx
from sphinx.errors import ExtensionError
from sphinx.transforms.post_transforms import SphinxPostTransform
from sphinx.util import logging

LOGGER = logging.getLogger(__name__)

#: The vendored plotly.js bundle, and where it lands in the built book, under ``_static``.
PLOTLY_BUNDLE = Path(__file__).resolve().parents[1] / "_vendor" / "plotly.js-cartesian-dist-min"
PLOTLY_JS = "arlm/plotly-cartesian.min.js"
#: Draws the figures of a page (served from book/_static, which is in html_static_path).
FIGURE_LOADER_JS = "arlm-figures.js"
#: Accessibility repairs every page gets (a landmark for the sidebar, keyboard-scrollable wide formulas).
A11Y_JS = "arlm-a11y.js"
WIDGET_MIME = "application/vnd.jupyter.widget-view+json"
WIDGET_STATE_MIME = "application/vnd.jupyter.widget-state+json"
# plotly's bundle looks for this before it loads; "local" stops it reconfiguring the page's MathJax.
PLOTLY_CONFIG_JS = "window.PlotlyConfig = {MathJaxConfig: 'local'};"


def bundle_version(path: Path) -> str | None:
    """The plotly.js version in a bundle's licence header (``plotly.js (cartesian - minified) v4.1.1``)."""
    with path.open(encoding="utf-8") as fh:
        header = fh.read(300)
    match = re.search(r"plotly\.js[^\n]*? v(\d+\.\d+\.\d+)", header)
    return match.group(1) if match else None


def _plotly_bundle() -> Path:
    from plotly.offline import get_plotlyjs_version

    path = PLOTLY_BUNDLE / "plotly-cartesian.min.js"
    if not path.is_file():
        raise ExtensionError(f"{path} is missing: restore it from git (see {PLOTLY_BUNDLE / 'SOURCE.md'})")
    vendored, wanted = bundle_version(path), get_plotlyjs_version()
    if vendored != wanted:
        raise ExtensionError(
            f"{path} is plotly.js {vendored}, but the installed plotly package draws for plotly.js {wanted}: "
            f"vendor plotly.js-cartesian-dist-min@{wanted} as {PLOTLY_BUNDLE / 'SOURCE.md'} says, "
            "or install the plotly version pinned in requirements.txt"
        )
    return path


def stage_static_files(app: Sphinx) -> None:
    """Copy the plotly.js bundle into a build-time static folder that Sphinx copies to ``_static``."""
    if app.builder.format != "html":
        return
    staging = Path(app.doctreedir).parent / "arlm_static"
    target = staging / PLOTLY_JS
    target.parent.mkdir(parents=True, exist_ok=True)
    source = _plotly_bundle()
    # Copy only when changed, so that an unchanged rebuild leaves the file (and its mtime) alone.
    if not target.exists() or not filecmp.cmp(source, target, shallow=False):
        shutil.copyfile(source, target)
    app.config.html_static_path.append(str(staging))


def page_has_plotly(body: str) -> bool:
    """True when a rendered page body contains a plotly figure div."""
    return "plotly-graph-div" in body


def add_plotly_to_page(
    app: Sphinx, pagename: str, templatename: str, context: dict[str, Any], doctree: Any
) -> None:
    """Load plotly.js and the figure loader on this page only, and only if it shows a figure."""
    if page_has_plotly(context.get("body", "")):
        # Deferred: the text is parsed and shown while plotly.js loads; deferred scripts run in order,
        # so the loader finds plotly.js, and both run before MathJax typesets (on DOMContentLoaded).
        app.add_js_file(None, body=PLOTLY_CONFIG_JS, priority=400)
        app.add_js_file(PLOTLY_JS, priority=401, loading_method="defer")
        app.add_js_file(FIGURE_LOADER_JS, priority=402, loading_method="defer")
    tidy_page_scripts(context)


#: What sphinx-thebe, which jupyter-book always loads, adds to every page for a Live Code button.
THEBE_ASSETS = ("sphinx-thebe.js", "sphinx-thebe.css")
THEBE_PAGE_CONFIG = re.compile(
    r'\s*<script type="text/x-thebe-config">.*?</script>\s*<script>kernelName = [^<]*</script>', re.DOTALL
)


def thebe_enabled(app: Sphinx) -> bool:
    """Whether _config.yml asks for the Live Code (Thebe) launch button."""
    launch_buttons = (app.config.html_theme_options or {}).get("launch_buttons") or {}
    return bool(launch_buttons.get("thebe"))


def _is_thebe_asset(asset: Any) -> bool:
    filename = str(getattr(asset, "filename", asset) or "")
    body = str((getattr(asset, "attributes", {}) or {}).get("body", ""))
    return Path(filename.split("?")[0]).name in THEBE_ASSETS or "THEBE_JS_URL" in body


def drop_unused_thebe(
    app: Sphinx, pagename: str, templatename: str, context: dict[str, Any], doctree: Any
) -> None:
    """Without the Live Code button, remove sphinx-thebe's script, stylesheet and per-page Binder config.

    They would do nothing but load on every page, and the config names a CDN (unpkg) and, by default,
    another project's Binder repository.
    """
    if thebe_enabled(app):
        return
    for key in ("script_files", "css_files"):
        assets = context.get(key)
        if isinstance(assets, list):
            assets[:] = [asset for asset in assets if not _is_thebe_asset(asset)]
    if isinstance(context.get("body"), str):
        context["body"] = THEBE_PAGE_CONFIG.sub("", context["body"])


def fix_citation_roles(
    app: Sphinx, pagename: str, templatename: str, context: dict[str, Any], doctree: Any
) -> None:
    """Give the bibliography's entries the ARIA role their list needs.

    docutils writes the citation list as ``<div role="list">`` whose entries carry
    ``role="doc-biblioentry"``, a role DPUB-ARIA 1.1 deprecates and that does not count as a list item:
    to a screen reader (and axe-core) that is a list with no items. Each entry becomes a ``listitem``.
    """
    if "body" in context:
        context["body"] = context["body"].replace('role="doc-biblioentry"', 'role="listitem"')


def _script_key(script: Any) -> tuple[Any, ...]:
    attributes = getattr(script, "attributes", {}) or {}
    filename = getattr(script, "filename", script) or ""
    return (filename, getattr(script, "priority", None), tuple(sorted(attributes.items())))


def tidy_page_scripts(context: dict[str, Any]) -> None:
    """Remove repeated ``<script>`` entries and saved widget state from a page.

    Sphinx 7.4 registers an inline script added after builder init twice (once with filename None,
    once with ""), so sphinx-thebe's ``const THEBE_JS_URL = ...`` is declared twice and the second
    copy is a JS error on every page. Saved ipywidget state is dead weight in the static book (no widget
    manager reads it) and can hold a whole figure's data again.
    """
    scripts = context.get("script_files")
    if not isinstance(scripts, list):
        return
    seen: set[tuple[Any, ...]] = set()
    unique = []
    for script in scripts:
        key = _script_key(script)
        attributes = getattr(script, "attributes", {}) or {}
        if key in seen or attributes.get("type") == WIDGET_STATE_MIME:
            continue
        seen.add(key)
        unique.append(script)
    scripts[:] = unique


def is_orphan_notebook(path: Path) -> bool:
    """Whether ``path`` is a notebook whose metadata says ``"orphan": true``."""
    if path.suffix != ".ipynb" or not path.is_file():
        return False
    try:
        metadata = json.loads(path.read_text(encoding="utf-8")).get("metadata", {})
    except (OSError, ValueError, AttributeError):
        return False
    return metadata.get("orphan") is True


def build_orphan_notebooks(app: Sphinx, config: Any) -> None:
    """Build the notebooks marked orphan that sphinx-external-toc left out for not being in ``_toc.yml``.

    With ``only_build_toc_files`` it adds every source file the table of contents does not name to
    ``exclude_patterns``, by its path (its own ``config-inited`` hook, at priority 900, runs before this
    one). A notebook marked orphan is taken out of that list again: it is built, reachable by its URL and
    by links, and in no toctree, so in no navigation. myst-nb passes the notebook's metadata on as the
    page's metadata, where Sphinx finds ``orphan`` and does not warn that the page is in no toctree.
    """
    source = Path(app.srcdir)
    patterns = list(config.exclude_patterns)
    kept = [pattern for pattern in patterns if not is_orphan_notebook(source / pattern)]
    if len(kept) != len(patterns):
        config.exclude_patterns = kept


class WarnOnWidgetOutput(SphinxPostTransform):
    """Warn about ipywidget outputs before myst-nb picks a mime type (its SelectMimeType runs at 4)."""

    default_priority = 3
    formats = ("html",)

    def run(self, **kwargs: Any) -> None:
        for node in list(self.document.findall(nodes.container)):
            if node.get("nb_element") != "mime_bundle":
                continue
            if any(child.get("mime_type") == WIDGET_MIME for child in node.children):
                LOGGER.warning(
                    "an ipywidget is displayed in the static book, where it would be a dead control; "
                    "use arlm_lib.display.show_widget(app, note) or kernel_only(note) [arlm.widget]",
                    location=node,
                    type="arlm",
                    subtype="widget",
                )


def library_fingerprint(package: str = "arlm_lib") -> str:
    """A hash of every file of the installed package the notebooks import (found without importing it)."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        return "missing"
    return tree_digest(Path(location) for location in sorted(spec.submodule_search_locations))


def tree_digest(roots: Any) -> str:
    """A hash of the names (relative to their root) and contents of every file under ``roots``."""
    digest = hashlib.sha256()
    for root in roots:
        for path in sorted(root.rglob("*")):
            if path.is_file() and "__pycache__" not in path.parts:
                digest.update(path.relative_to(root).as_posix().encode())
                digest.update(hashlib.sha256(path.read_bytes()).digest())
    return digest.hexdigest()


#: Files outside arlm_lib that a chapter reads while it executes: chapter 5 shows the benchmark results.
READ_BY_CHAPTERS = [Path(__file__).resolve().parents[2] / "bench" / "RESULTS.md"]


def execution_fingerprint() -> str:
    """A hash of what the notebooks' outputs depend on besides their own code: the library, and the
    files of :data:`READ_BY_CHAPTERS`."""
    digest = hashlib.sha256(library_fingerprint().encode())
    for path in READ_BY_CHAPTERS:
        digest.update(hashlib.sha256(path.read_bytes() if path.is_file() else b"missing").digest())
    return digest.hexdigest()


def invalidate_cache_on_library_change(
    app: Sphinx, env: Any, added: set[str], changed: set[str], removed: set[str]
) -> list[str]:
    """Clear the execution cache and re-read every notebook when arlm_lib changed since the last build.

    ``ARLM_BOOK_KEEP_CACHE=1`` skips this, for quick rebuilds while editing prose.
    """
    if os.environ.get("ARLM_BOOK_KEEP_CACHE", "").strip().lower() in {"1", "true", "yes"}:
        return []
    config = getattr(env, "mystnb_config", None)
    cache_dir = Path(
        getattr(config, "execution_cache_path", "") or Path(app.outdir).parent / ".jupyter_cache"
    )
    stamp = cache_dir / "arlm_lib.sha256"
    fingerprint = execution_fingerprint()
    if stamp.is_file() and stamp.read_text().strip() == fingerprint:
        return []
    had_cache = cache_dir.exists()
    if had_cache:
        LOGGER.info(
            "[arlm] arlm_lib or bench/RESULTS.md changed since the last build: clearing %s", cache_dir
        )
        shutil.rmtree(cache_dir)
    cache_dir.mkdir(parents=True, exist_ok=True)
    # Written now: everything executed from here on runs against this version of the library.
    stamp.write_text(fingerprint + "\n")
    if not had_cache:
        return []
    notebooks = [name for name in env.found_docs if str(env.doc2path(name)).endswith(".ipynb")]
    return sorted(set(notebooks) - added - changed)


#: A glue role that quotes another document's value: {glue:text}`04_stability.ipynb::stab_n_runs:d`.
CROSS_DOCUMENT_GLUE = re.compile(r"\{glue(?::\w+)?\}`[^`]*?\.ipynb::")


def reread_pages_quoting_notebooks(
    app: Sphinx, env: Any, added: set[str], changed: set[str], removed: set[str]
) -> list[str]:
    """Re-read, on every build, the pages that quote numbers glued in other documents.

    Sphinx re-reads a page when its own source changes, and knows nothing of a page's dependence on the
    notebooks it quotes: after a chapter re-executed with new numbers, the quoting page (the source
    notes) would keep the old ones. Such pages are Markdown with nothing to execute, so reading them
    again costs about a second.
    """
    pages = []
    for name in sorted(env.found_docs - added - changed):
        path = Path(env.doc2path(name))
        if path.suffix == ".md" and CROSS_DOCUMENT_GLUE.search(path.read_text(encoding="utf-8")):
            pages.append(name)
    return pages


#: The book's own scripts and styles (arlm-figures.js, arlm.css), copied into ``_static`` by Sphinx.
STATIC_DIR = Path(__file__).resolve().parents[1] / "_static"


def static_fingerprint() -> str:
    """A hash of the book's own scripts and styles and of the vendored plotly.js bundle, which Sphinx
    copies with them."""
    return tree_digest([STATIC_DIR, PLOTLY_BUNDLE])


def _static_stamp(app: Sphinx) -> Path:
    return Path(app.outdir) / ".arlm_static.sha256"


def reread_on_static_change(
    app: Sphinx, env: Any, added: set[str], changed: set[str], removed: set[str]
) -> list[str]:
    """Re-read the root page when the book's scripts or styles changed since the last build.

    Sphinx copies static files only in a build that writes pages; with no page out of date it stops
    early ("no targets are out of date"), and an edited figure loader would never reach ``_build``.
    One page to write is enough for it to copy every static file again. The new fingerprint is
    recorded by :func:`record_static_copied`, once the build has succeeded: a build that fails before
    copying them must not count as having done so.
    """
    stamp = _static_stamp(app)
    fingerprint = static_fingerprint()
    if stamp.is_file() and stamp.read_text().strip() == fingerprint:
        return []
    app.arlm_static_fingerprint = fingerprint
    root = app.config.root_doc
    return [] if root in added | changed or root not in env.found_docs else [root]


def record_static_copied(app: Sphinx, exception: BaseException | None) -> None:
    """After a successful build, remember which version of the static files it copied."""
    fingerprint = getattr(app, "arlm_static_fingerprint", None)
    if exception is None and fingerprint is not None:
        stamp = _static_stamp(app)
        stamp.parent.mkdir(parents=True, exist_ok=True)
        stamp.write_text(fingerprint + "\n")
        app.arlm_static_fingerprint = None


def extension_fingerprint() -> str:
    """A hash of this file's source.

    What this extension does to a page (its scripts, the citation roles) shows only when Sphinx writes
    the page, and Sphinx rewrites only pages it considers out of date. Registered as an ``"html"``
    config value, the hash lands in the HTML builder's build info: after an edit here, every page is
    written again (from the saved doctrees, without executing any notebook).
    """
    return hashlib.sha256(Path(__file__).read_bytes()).hexdigest()[:16]


def setup(app: Sphinx) -> dict[str, Any]:
    """Register the hooks; the extension keeps no state between builds."""
    app.add_config_value("arlm_book_extension_fingerprint", extension_fingerprint(), "html")
    # Kernels that myst-nb / jupyter-cache start inherit this process's environment.
    os.environ.setdefault("ARLM_BOOK_BUILD", "1")
    # A progress bar is noise in a static page (and a widget in a notebook kernel).
    os.environ.setdefault("TQDM_DISABLE", "1")
    # After sphinx-external-toc has excluded the files _toc.yml does not name (its hook has priority 900).
    app.connect("config-inited", build_orphan_notebooks, priority=950)
    app.connect("builder-inited", stage_static_files)
    app.connect("env-get-outdated", invalidate_cache_on_library_change)
    app.connect("env-get-outdated", reread_on_static_change)
    app.connect("env-get-outdated", reread_pages_quoting_notebooks)
    app.connect("build-finished", record_static_copied)
    # After the other extensions (default priority 500) have added this page's scripts.
    app.connect("html-page-context", add_plotly_to_page, priority=900)
    app.connect("html-page-context", fix_citation_roles)
    app.connect("html-page-context", drop_unused_thebe, priority=900)
    app.add_js_file(A11Y_JS, loading_method="defer")
    app.add_post_transform(WarnOnWidgetOutput)
    return {"version": "1.0", "parallel_read_safe": True, "parallel_write_safe": True}
