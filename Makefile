# Two commands do all the set-up on a fresh machine with Python 3.11:
#   make book   create .venv, install pinned requirements and arlm_lib, build the HTML book into _build/html
#   make test   the same set-up, build the book (cached), then run the whole suite
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: venv book book-clean test test-fast lint lab bench clean

venv: $(STAMP)

$(STAMP): requirements.txt pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "make: the pinned requirements need Python >= 3.11; $(PYTHON) is " + sys.version.split()[0] + ". Run: make PYTHON=/path/to/python3.11 ...")'
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -r requirements.txt
	$(BIN)/python -m pip install --quiet --no-deps --no-build-isolation -e .
	touch $(STAMP)

# -W: warnings are errors; -n: nitpicky (broken references); --keep-going: report them all.
# The book's shared models are cached in _build too, so `make book-clean` really starts from scratch.
book: venv
	ARLM_BOOK_BUILD=1 ARLM_CACHE_DIR=$(CURDIR)/_build/arlm_cache $(BIN)/jupyter-book build . --builder html --warningiserror --nitpick --keep-going

book-clean:
	rm -rf _build

test: book
	$(BIN)/python -m pytest -q

# Unit tests only: no book build, no browser.
test-fast: venv
	$(BIN)/python -m pytest -q -m "not browser and not slow"

lint: venv
	$(BIN)/ruff check arlm_lib tests bench book/_ext
	$(BIN)/ruff format --check arlm_lib tests bench book/_ext

lab: venv
	$(BIN)/jupyter lab book/

bench: venv
	$(BIN)/python bench/train_throughput.py

clean:
	rm -rf _build .pytest_cache .ruff_cache
