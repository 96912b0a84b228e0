"""Named, reproducible training recipes whose results are cached, so the book trains each model once.

Every chapter that needs "the tiny model trained on the synthetic language" calls
``trained("tiny-synthetic")``. The first call trains it with a fixed seed and writes a checkpoint under
the cache directory (``$ARLM_CACHE_DIR``, default ``~/.cache/arlm``); later calls, in any chapter or
process, load it in a second. The cache key is a hash of the whole recipe, so changing a hyperparameter
retrains instead of silently reusing a stale model.

So that a clean book build fits its time budget, the CPU-scale models also ship with the package
(``arlm_lib/pretrained/NAME-KEY.safetensors``, weights and tokenizer only). They are exactly what
``python -m arlm_lib.zoo export NAME`` produces, and a test retrains each recipe to check that the command
still reaches the shipped model's quality. A shipped file is used only when its key matches the recipe.

``ARLM_SCALE=gpu`` switches every recipe to its bigger variant (the ``small`` preset, more steps) for
readers with a GPU; the notebooks do not change.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import time
import warnings
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch

from . import checkpoint as ckpt
from .corpus import load_corpus
from .corpus.entropy import SYNTHETIC_CORPORA
from .corpus.loading import resolve_cache_dir
from .corpus.synthetic import GRAMMAR_VERSION
from .data import encode_text, split_train_val
from .errors import ArlmError, CheckpointError, ConfigError
from .model import GPT, GPTConfig
from .rundir import RunLock
from .tokenizers import Tokenizer, tokenizer_from_dict, train_tokenizer
from .train import History, TrainConfig, Trainer


@dataclass(frozen=True)
class Recipe:
    """Everything that determines a trained model: data, tokenizer, architecture and optimisation."""

    corpus: str
    preset: str = "tiny"
    tokenizer: str = "char"
    tokenizer_kwargs: dict[str, Any] = field(default_factory=dict)
    model: dict[str, Any] = field(default_factory=dict)  # GPTConfig overrides
    train: dict[str, Any] = field(default_factory=dict)  # TrainConfig fields
    corpus_size: int | None = None

    def key(self) -> str:
        """A hash of the recipe and of the corpus it trains on, so a changed grammar retrains too."""
        blob = json.dumps(
            {**self.__dict__, "corpus_version": corpus_version(self.corpus)}, sort_keys=True, default=str
        )
        return hashlib.sha256(blob.encode()).hexdigest()[:12]


def corpus_version(name: str) -> str:
    """The grammar version of a built-in synthetic corpus; a content hash of any other corpus (or file)."""
    if name in SYNTHETIC_CORPORA:  # not startswith: a file "synthetic_notes.txt" is hashed like any file
        return f"grammar-{GRAMMAR_VERSION}"
    return hashlib.sha256(load_corpus(name).encode()).hexdigest()[:12]


_CPU_TRAIN = dict(batch_size=32, lr=2e-3, warmup_iters=50, eval_interval=100, eval_iters=10, seed=1337)

# The book's main model: the full synthetic language, char-level, the `tiny` preset. Smaller batches at a
# higher lr reach the entropy floor sooner on a CPU (bench/entropy_gap.py measures the gap).
_MAIN = Recipe(
    corpus="synthetic", train=dict(_CPU_TRAIN, batch_size=16, lr=5e-3, warmup_iters=30, max_iters=1800)
)

RECIPES: dict[str, Recipe] = {
    "tiny-synthetic": _MAIN,
    # Attention chapter: the main model with rotary position embeddings instead of a learned table, to
    # compare the two on equal terms.
    "tiny-synthetic-rope": replace(_MAIN, model=dict(position_encoding="rope")),
    # Attention chapter: the copy-only variant, where induction heads are easy to find.
    "tiny-copy": Recipe(
        corpus="synthetic-copy", model=dict(n_layer=2), train=dict(_CPU_TRAIN, max_iters=900, lr=4e-3)
    ),
    # Real text, byte-level BPE: tokenizer and generation demos.
    "tiny-prose": Recipe(
        corpus="prose",
        tokenizer="bpe",
        tokenizer_kwargs=dict(vocab_size=512),
        model=dict(block_size=64, dropout=0.1),
        train=dict(_CPU_TRAIN, max_iters=600, lr=1e-3),
    ),
}

# The same recipes at GPU scale: a bigger model and more steps; nothing else changes.
GPU_OVERRIDES: dict[str, Any] = dict(preset="small", train_scale=10)


def scale() -> str:
    """``cpu`` (default) or ``gpu``, from ``$ARLM_SCALE``; empty counts as unset, as for ``$ARLM_CACHE_DIR``."""
    value = (os.environ.get("ARLM_SCALE") or "cpu").strip().lower()
    if value not in ("cpu", "gpu"):
        raise ConfigError(f"ARLM_SCALE={value!r} is not allowed: use 'cpu' or 'gpu'")
    return value


def get_recipe(name: str) -> Recipe:
    """The named recipe at the current :func:`scale`."""
    if name not in RECIPES:
        raise ConfigError(f"unknown recipe {name!r}: choose one of {sorted(RECIPES)}")
    recipe = RECIPES[name]
    if scale() == "gpu":
        train = dict(
            recipe.train, max_iters=recipe.train["max_iters"] * GPU_OVERRIDES["train_scale"], device="auto"
        )
        recipe = replace(recipe, preset=GPU_OVERRIDES["preset"], train=train)
    return recipe


def _wait_for_lock(run_dir: Path, checkpoint_file: Path | None, poll_s: float = 2.0) -> RunLock:
    """Take the run's lock; if another process is training this model, wait for it to finish instead.

    With ``checkpoint_file`` given, stop waiting (and hold no lock) as soon as that file exists.
    """
    while True:
        try:
            return RunLock(run_dir).acquire()
        except CheckpointError:
            if checkpoint_file is not None and checkpoint_file.is_file():
                return _NoLock()
            time.sleep(poll_s)


class _NoLock:
    def release(self) -> None:
        pass


@dataclass
class TrainedModel:
    """A model from the zoo, with what the chapters need to measure it."""

    name: str
    recipe: Recipe
    model: GPT
    tokenizer: Tokenizer
    history: History
    train_tokens: torch.Tensor
    val_tokens: torch.Tensor
    run_dir: Path


def prepare_data(recipe: Recipe, tokenizer: Tokenizer | None = None):
    """Load the recipe's corpus, train (or reuse) its tokenizer, and split the token stream."""
    text = load_corpus(recipe.corpus, size=recipe.corpus_size)
    tokenizer = tokenizer or train_tokenizer(recipe.tokenizer, text, **recipe.tokenizer_kwargs)
    train_tokens, val_tokens = split_train_val(encode_text(text, tokenizer), val_fraction=0.1)
    return tokenizer, train_tokens, val_tokens


def train_recipe(recipe: Recipe, out_dir=None, callbacks=(), progress: bool = False) -> Trainer:
    """Train a recipe from scratch (no cache); returns the finished trainer."""
    tokenizer, train_tokens, val_tokens = prepare_data(recipe)
    config = GPTConfig.from_preset(recipe.preset, **{**recipe.model, "vocab_size": tokenizer.vocab_size})
    torch.manual_seed(recipe.train.get("seed", 1337))
    model = GPT(config)
    # checkpoint_interval=0: only a finished run writes a checkpoint, so the cache never holds half a model.
    train_config = TrainConfig(
        **{"device": "cpu", "progress": progress, "checkpoint_interval": 0, **recipe.train}
    )
    trainer = Trainer(
        model, train_tokens, val_tokens, train_config, tokenizer, list(callbacks), out_dir=out_dir
    )
    trainer.train()
    return trainer


PRETRAINED_DIR = Path(__file__).parent / "pretrained"


def shipped_checkpoint(name: str, recipe: Recipe | None = None) -> Path:
    """Where the package keeps the exported checkpoint of ``name`` for the current recipe."""
    recipe = recipe or get_recipe(name)
    return PRETRAINED_DIR / f"{name}-{recipe.key()}.safetensors"


def export(name: str, progress: bool = True, cache_dir: str | os.PathLike | None = None) -> Path:
    """Ship ``name``: weights, tokenizer and history, no optimizer state.

    The model comes from the cache directory when this recipe was trained there already (the same
    ``train_recipe`` code path), otherwise it is trained now.
    """
    recipe = get_recipe(name)
    model = trained(name, progress=progress, cache_dir=cache_dir, use_shipped=False)
    PRETRAINED_DIR.mkdir(exist_ok=True)
    for stale in PRETRAINED_DIR.glob(f"{name}-*.safetensors"):
        stale.unlink()
    path = shipped_checkpoint(name, recipe)
    ckpt.save_checkpoint(
        path,
        model.model,
        tokenizer=model.tokenizer,
        train_config={"device": "cpu", "progress": progress, "checkpoint_interval": 0, **recipe.train},
        trainer_state={"step": len(model.history), "history": model.history.to_dict()},
    )
    path.chmod(0o644)  # safetensors writes 0600; package data must be readable by every user
    return path


def trained(
    name: str,
    progress: bool = False,
    cache_dir: str | os.PathLike | None = None,
    use_shipped: bool = True,
) -> TrainedModel:
    """The named model: shipped with the package, or trained once per cache directory and then loaded."""
    recipe = get_recipe(name)
    run_dir = resolve_cache_dir(cache_dir) / "models" / f"{name}-{recipe.key()}"
    checkpoint_file = run_dir / ckpt.CHECKPOINT_FILE
    shipped = shipped_checkpoint(name, recipe)
    if use_shipped and not checkpoint_file.is_file() and shipped.is_file():
        return _load(name, recipe, shipped, run_dir)
    if checkpoint_file.is_file():
        try:
            return _load(name, recipe, checkpoint_file, run_dir)
        except CheckpointError as err:
            if _could_not_read(err, checkpoint_file):
                raise  # not corruption (a permission, an I/O error): deleting a good model would not help
            # A corrupted cache entry (a flipped byte, a copy cut short, an old format): rebuild it, under
            # the lock, so that two notebooks do not both retrain or delete each other's fresh file.
            return _rebuild(
                name, recipe, checkpoint_file, run_dir, shipped if use_shipped else None, progress
            )
    run_dir.mkdir(parents=True, exist_ok=True)
    lock = _wait_for_lock(run_dir, checkpoint_file)
    try:
        if not checkpoint_file.is_file():  # nobody else trained it meanwhile: our turn
            return _train_into(name, recipe, run_dir, progress)
    finally:
        lock.release()
    return _load(name, recipe, checkpoint_file, run_dir)


def _could_not_read(err: CheckpointError, path: Path) -> bool:
    """Whether loading failed because the file could not be read (permissions, I/O), not because its
    contents are bad. The header read raises a bare OSError, which never reaches this; an OSError while
    the tensors are read comes wrapped in a CheckpointError, which this unwraps."""
    if not os.access(path, os.R_OK):
        return True
    cause = err.__cause__
    while cause is not None:
        if isinstance(cause, OSError):
            return True
        cause = cause.__cause__
    return False


def _train_into(name: str, recipe: Recipe, run_dir: Path, progress: bool) -> TrainedModel:
    trainer = train_recipe(recipe, out_dir=run_dir, progress=progress)
    trainer.raw_model.eval()
    return TrainedModel(
        name, recipe, trainer.raw_model, trainer.tokenizer, trainer.history,
        trainer.train_tokens, trainer.val_tokens, run_dir,
    )  # fmt: skip


def _rebuild(
    name: str, recipe: Recipe, checkpoint_file: Path, run_dir: Path, shipped: Path | None, progress: bool
) -> TrainedModel:
    """Replace a cached checkpoint that cannot be loaded: by the shipped model if any, else by training."""
    lock = _wait_for_lock(run_dir, None)
    try:
        try:  # another process may have rebuilt it while we waited for the lock
            return _load(name, recipe, checkpoint_file, run_dir)
        except CheckpointError as err:
            if _could_not_read(err, checkpoint_file):
                raise
            use_shipped = shipped is not None and shipped.is_file()
            warnings.warn(
                f"the cached model {name!r} at {checkpoint_file} cannot be loaded ({err}); "
                f"removing it and {'loading the shipped one' if use_shipped else 'training it again'}",
                stacklevel=3,
            )
            checkpoint_file.unlink(missing_ok=True)
        if use_shipped:
            return _load(name, recipe, shipped, run_dir)
        return _train_into(name, recipe, run_dir, progress)
    finally:
        lock.release()


def _load(name: str, recipe: Recipe, path: Path, run_dir: Path) -> TrainedModel:
    saved = ckpt.load_checkpoint(path)
    model = GPT(saved.model_config)
    ckpt.load_state_strict(model, saved.model_state, source=str(path))
    model.eval()
    tokenizer = tokenizer_from_dict(saved.tokenizer)
    _, train_tokens, val_tokens = prepare_data(recipe, tokenizer)
    history = History.from_dict(saved.trainer_state.get("history", {}))
    return TrainedModel(name, recipe, model, tokenizer, history, train_tokens, val_tokens, run_dir)


def main(argv: list[str] | None = None) -> int:
    """python -m arlm_lib.zoo list | export [NAME ...]: list the recipes (and whether each ships with the
    package), or retrain them and write the shipped checkpoints."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m arlm_lib.zoo", description=main.__doc__)
    # Optional to argparse only so that a missing action gets its own message: argparse would call the
    # optional names "required" too.
    parser.add_argument("action", nargs="?", choices=["export", "list"], help="list, or retrain and export")
    parser.add_argument("names", nargs="*", help=f"recipes (default: all of {sorted(RECIPES)})")
    args = parser.parse_args(argv)
    if args.action is None:
        parser.error("say what to do: 'list' the recipes, or 'export' them (each retrains: minutes on a CPU)")
    unknown = sorted(set(args.names) - set(RECIPES))
    if unknown:
        parser.error(f"unknown recipe(s) {unknown}: choose from {sorted(RECIPES)}")  # exits with status 2
    try:
        for name in args.names or sorted(RECIPES):
            if args.action == "list":
                shipped = shipped_checkpoint(name)
                print(
                    f"{name:16} key {get_recipe(name).key()}  shipped: {'yes' if shipped.is_file() else 'no'}"
                )
            else:
                start = time.perf_counter()
                path = export(name)
                print(
                    f"{name}: {path} ({path.stat().st_size / 1e6:.1f} MB, {time.perf_counter() - start:.0f} s)"
                )
    except ArlmError as exc:  # e.g. a bad $ARLM_SCALE: one line, as the main command line gives
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
