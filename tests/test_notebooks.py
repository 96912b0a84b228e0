"""Notebook hygiene: every chapter is committed clean and opens anywhere (JupyterLab, VS Code, Colab).

- committed without outputs and execution counts (the build executes them; outputs in git go stale);
- valid nbformat with a Python 3 kernelspec;
- the first code cell installs arlm_lib when it is missing (Colab and Binder);
- every other import is the standard library, IPython, or arlm_lib and its own dependencies: what Colab and
  Binder have after that first cell (the book build's myst-nb is reached through ``arlm_lib.display``);
- every table-of-contents entry exists, and every notebook under book/ is in the table of contents or
  marked orphan (built without a place in the navigation: the view test page).
"""

from __future__ import annotations

import ast
import re
import sys
from pathlib import Path

import nbformat
import pytest
import tomllib
from conftest import BOOK_DIR, REPO_ROOT, orphan_docnames, toc_docnames
from IPython.core.inputtransformer2 import TransformerManager

SETUP_TAG = "arlm-setup"
NOTEBOOKS = sorted(p for p in BOOK_DIR.rglob("*.ipynb") if ".ipynb_checkpoints" not in p.parts)
SOURCE_SUFFIXES = (".ipynb", ".md")


def _ids(paths: list[Path]) -> list[str]:
    return [p.relative_to(REPO_ROOT).as_posix() for p in paths]


def test_the_book_has_notebooks():
    assert NOTEBOOKS, f"no notebooks under {BOOK_DIR}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=_ids(NOTEBOOKS))
def test_notebook_is_valid_and_clean(path: Path):
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    kernelspec = nb.metadata.get("kernelspec", {})
    assert kernelspec.get("name") == "python3", f"{path.name}: kernelspec must be python3, got {kernelspec}"
    for index, cell in enumerate(nb.cells):
        if cell.cell_type != "code":
            continue
        assert cell.get("outputs") == [], f"{path.name}: cell {index} has outputs (clear them before commit)"
        assert cell.get("execution_count") is None, f"{path.name}: cell {index} has an execution count"
    assert "widgets" not in nb.metadata, f"{path.name}: saved widget state in metadata (clear outputs)"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=_ids(NOTEBOOKS))
def test_first_code_cell_installs_arlm_lib_when_missing(path: Path):
    nb = nbformat.read(path, as_version=4)
    code_cells = [cell for cell in nb.cells if cell.cell_type == "code"]
    assert code_cells, f"{path.name} has no code cell"
    first = code_cells[0]
    tags = first.metadata.get("tags", [])
    assert SETUP_TAG in tags, f"{path.name}: the first code cell must be tagged {SETUP_TAG!r}, has {tags}"
    source = first.source
    assert "import arlm_lib" in source, f"{path.name}: the setup cell must try `import arlm_lib`"
    assert "except ImportError" in source, f"{path.name}: the setup cell must install only when missing"
    assert "pip install" in source, f"{path.name}: the setup cell must `%pip install` arlm_lib"
    repository, branch = _published_repository()
    install = f'"arlm_lib @ git+https://github.com/{repository}@{branch}"'
    assert install in source, f"{path.name}: the setup cell must install {install} (_config.yml's repository)"


def _published_repository() -> tuple[str, str]:
    """("owner/name", branch) of the repository _config.yml publishes, whose launch buttons readers use."""
    import yaml

    repository = yaml.safe_load((REPO_ROOT / "_config.yml").read_text(encoding="utf-8"))["repository"]
    match = re.fullmatch(r"https://github\.com/([\w.-]+/[\w.-]+?)/?", repository["url"])
    assert match, f"_config.yml repository.url is not a GitHub repository: {repository['url']!r}"
    return match.group(1), repository["branch"]


def test_launch_links_of_the_library_name_the_published_repository():
    from arlm_lib import display

    repository, branch = _published_repository()
    assert (display.REPOSITORY, display.BRANCH) == (repository, branch), "arlm_lib.display's launch links"


def _source_file(docname: str) -> Path | None:
    for suffix in SOURCE_SUFFIXES:
        if (candidate := REPO_ROOT / f"{docname}{suffix}").is_file():
            return candidate
    return None


def test_every_toc_entry_exists():
    missing = [name for name in toc_docnames() if _source_file(name) is None]
    assert not missing, f"_toc.yml names files that do not exist: {missing}"


def test_every_notebook_is_in_the_toc_or_marked_orphan():
    listed = {_source_file(name) for name in toc_docnames()}
    orphans = {_source_file(name) for name in orphan_docnames()}
    unbuilt = [p for p in NOTEBOOKS if p not in listed and p not in orphans]
    assert not unbuilt, (
        f"notebooks neither in _toc.yml nor marked orphan (they would not be built): {_ids(unbuilt)}"
    )
    assert not listed & orphans, f"notebooks in _toc.yml and marked orphan: {_ids(sorted(listed & orphans))}"


def test_the_view_test_page_is_built_but_not_in_the_navigation():
    """The view gallery is a fixture of the browser tests, not a chapter a reader looks for."""
    assert "book/viewtest" in orphan_docnames()
    assert "book/viewtest" not in toc_docnames()


# Import names of arlm_lib's dependencies where they differ from the distribution name.
IMPORT_NAMES = {"ipywidgets": "ipywidgets", "pyyaml": "yaml", "scikit-learn": "sklearn"}
# Present in every Jupyter kernel (JupyterLab, VS Code, Colab, Binder) without being installed.
KERNEL_MODULES = {"IPython", "ipykernel", "arlm_lib"}


def _available_modules() -> set[str]:
    project = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    dists = [re.split(r"[<>=!~ \\[;]", dep, maxsplit=1)[0].strip().lower() for dep in project["dependencies"]]
    return set(sys.stdlib_module_names) | KERNEL_MODULES | {IMPORT_NAMES.get(d, d) for d in dists}


def _required_imports(source: str) -> set[str]:
    """Top-level modules a cell imports, except inside ``try`` blocks that handle ImportError."""
    # IPython's own translation turns `%pip ...` and `!cmd` into plain Python calls.
    tree = ast.parse(TransformerManager().transform_cell(source))
    optional: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Try) and any(
            h.type is None
            or "ImportError" in ast.unparse(h.type)
            or "ModuleNotFoundError" in ast.unparse(h.type)
            for h in node.handlers
        ):
            optional.update(id(inner) for stmt in node.body for inner in ast.walk(stmt))
    names = set()
    for node in ast.walk(tree):
        if id(node) in optional:
            continue
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


@pytest.mark.parametrize("path", NOTEBOOKS, ids=_ids(NOTEBOOKS))
def test_notebook_imports_only_what_colab_and_binder_install(path: Path):
    nb = nbformat.read(path, as_version=4)
    available = _available_modules()
    missing = {
        (index, name)
        for index, cell in enumerate(nb.cells)
        if cell.cell_type == "code"
        for name in _required_imports(cell.source) - available
    }
    assert not missing, (
        f"{path.name} imports modules that arlm_lib's dependencies do not provide (cell, module): "
        f"{sorted(missing)}; add them to pyproject.toml, or import them inside try/except ImportError"
    )


def test_the_import_check_sees_unavailable_and_optional_imports():
    assert _required_imports("from myst_nb import glue\nimport torch.nn as nn") == {"myst_nb", "torch"}
    optional = "try:\n    from markdown_it import MarkdownIt\nexcept ImportError:\n    MarkdownIt = None"
    assert _required_imports(optional) == set()
    assert _required_imports("%pip install x\nimport os") == {"os"}
