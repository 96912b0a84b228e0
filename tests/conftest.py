"""Shared fixtures: the repository paths, the book's table of contents, and the built HTML book.

Tests that need the built book (``make book``) or Chromium skip with a loud reason on a user's machine
when either is missing, and fail under CI (``CI=true``), where ``.ci/run`` provides both.
"""

from __future__ import annotations

import importlib
import json
import math
import os
from pathlib import Path
from types import ModuleType

import pytest
import torch

REPO_ROOT = Path(__file__).resolve().parent.parent
BOOK_DIR = REPO_ROOT / "book"
BUILD_HTML = REPO_ROOT / "_build" / "html"
TOC_PATH = REPO_ROOT / "_toc.yml"


@pytest.fixture(scope="module")
def one_thread():
    """One intra-op torch thread for a module's tiny models: they gain nothing from more, and on a busy
    2-core machine idle OpenMP threads spin. The previous setting is restored for the other modules."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def under_ci() -> bool:
    """True when running under CI, where a missing prerequisite is a failure, never a skip."""
    return os.environ.get("CI", "").strip().lower() in {"1", "true", "yes"}


def skip_or_fail(reason: str) -> None:
    """Skip the test with a loud reason, or fail it under CI."""
    if under_ci():
        pytest.fail(f"{reason} (CI=true: this must not be skipped)")
    pytest.skip(f"*** SKIPPED: {reason} ***")


def require_module(name: str, reason: str | None = None) -> ModuleType:
    """Import ``name`` for a test, like ``pytest.importorskip``, but under CI a missing module fails the
    test instead of skipping it silently (CI installs every test dependency)."""
    try:
        return importlib.import_module(name)
    except ImportError as exc:
        skip_or_fail(f"{reason or f'{name} is not installed'} ({exc})")


def toc_docnames() -> list[str]:
    """Every document named in _toc.yml, root first, as Sphinx docnames (``book/intro``)."""
    from sphinx_external_toc.parsing import parse_toc_yaml

    site = parse_toc_yaml(TOC_PATH)
    root = site.root.docname
    return [root] + [name for name in site if name != root]


def orphan_docnames() -> list[str]:
    """The notebooks built without a place in _toc.yml or the navigation, as docnames: those whose
    metadata says ``"orphan": true`` (the view test page; book/_ext/arlm_book.py builds them)."""
    return [
        path.relative_to(REPO_ROOT).with_suffix("").as_posix()
        for path in sorted(BOOK_DIR.glob("*.ipynb"))
        if json.loads(path.read_text(encoding="utf-8")).get("metadata", {}).get("orphan") is True
    ]


def book_docnames() -> list[str]:
    """Every page the book builds from its sources: the table of contents, then the orphan notebooks."""
    return toc_docnames() + orphan_docnames()


@pytest.fixture(scope="session")
def built_html() -> Path:
    """The built book; skips (or fails under CI) when ``make book`` has not been run."""
    if not (BUILD_HTML / "index.html").is_file():
        skip_or_fail(f"no built book at {BUILD_HTML}: run `make book` first")
    return BUILD_HTML


def run_cli(argv: list[str], capsys) -> tuple[int, str, str]:
    """``python -m arlm_lib ARGV`` in this process: (exit status, stdout, stderr), with argparse's
    SystemExit counted as an exit status."""
    from arlm_lib.cli import main

    try:
        code = main(argv)
    except SystemExit as exc:
        code = exc.code
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def inject_nan_loss(trainer, steps: set[int], times: int = 1) -> None:
    """Make the training loss NaN for the first ``times`` attempts at each of ``steps`` (1-based, as in
    history), with a forward hook on the model: evaluation (eval mode) is left alone."""
    remaining = dict.fromkeys(steps, times)

    def poison(module, args, output):
        step = trainer.step + 1
        if module.training and output.loss is not None and remaining.get(step, 0) > 0:
            remaining[step] -= 1
            output.loss = output.loss * math.nan
        return output

    trainer.raw_model.register_forward_hook(poison)
