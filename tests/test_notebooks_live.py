"""Every chapter runs top to bottom in a live kernel, as a reader's JupyterLab, VS Code, Colab or Binder runs it.

The book build executes the chapters too, but with ``ARLM_BOOK_BUILD=1``, where each live app is replaced
by a note. Here the variable is unset, so every widget app is built and displayed as in a reader's kernel,
and the figures take the kernel's path through ``arlm_lib.display``. The shared models come from the
book build's cache when it exists (``make test`` builds the book first), so nothing is trained twice.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import BOOK_DIR, REPO_ROOT, require_module

CHAPTERS = sorted(BOOK_DIR.glob("0*.ipynb"))
WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"
# Chapters with a live app (an ipywidgets view) that the static book replaces with a note.
LIVE_APPS = {"03_attention.ipynb", "04_stability.ipynb", "06_generation.ipynb"}


@pytest.mark.slow
@pytest.mark.parametrize("path", CHAPTERS, ids=[p.name for p in CHAPTERS])
def test_chapter_runs_top_to_bottom_in_a_live_kernel(path: Path, monkeypatch, tmp_path) -> None:
    nbformat = require_module("nbformat")  # under CI a missing one fails: it must not skip unseen
    nbclient = require_module("nbclient")
    monkeypatch.delenv("ARLM_BOOK_BUILD", raising=False)  # the kernel inherits this process's environment
    cache = REPO_ROOT / "_build" / "arlm_cache"
    monkeypatch.setenv("ARLM_CACHE_DIR", str(cache if cache.is_dir() else tmp_path / "cache"))
    scratch = tmp_path / "tmp"  # the kernel's temp folder, to see what the chapter leaves behind
    scratch.mkdir()
    monkeypatch.setenv("TMPDIR", str(scratch))
    notebook = nbformat.read(path, as_version=4)
    client = nbclient.NotebookClient(
        notebook, timeout=900, kernel_name="python3", resources={"metadata": {"path": str(BOOK_DIR)}}
    )
    client.execute()  # raises CellExecutionError, naming the cell, if any cell fails

    outputs = [out for cell in notebook.cells if cell.cell_type == "code" for out in cell.outputs]
    kinds = {kind for out in outputs for kind in out.get("data", {})}
    html = " ".join(str(out.get("data", {}).get("text/html", "")) for out in outputs)
    assert "arlm-kernel-only" not in html, "a live kernel got the static book's note instead of the app"
    # The prose's {glue:text} roles stay as written in a notebook viewer: their values are listed instead.
    assert "arlm-glued" in html, f"{path.name} listed no value for its prose under the cells that glue them"
    if path.name in LIVE_APPS:
        assert WIDGET_VIEW in kinds, f"{path.name} displayed no widget in a live kernel"
    assert not [out for out in outputs if out.output_type == "error"]
    # Scratch run directories (chapter 5 writes checkpoints) go when the kernel shuts down, not pile up.
    # Other entries, such as torch.compile's cache folder, are caches meant to stay.
    left = sorted(p.name for p in scratch.iterdir() if p.name.startswith("arlm-"))
    assert not left, f"{path.name} left scratch folders in the temp folder: {left}"
