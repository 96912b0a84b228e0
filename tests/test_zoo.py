"""The model zoo: a recipe trains once per cache directory, then loads the same weights."""

import pytest
import torch

from arlm_lib import zoo
from arlm_lib.errors import ConfigError


@pytest.fixture
def tiny_recipe(monkeypatch, tmp_path):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("abc abd abe abf\n" * 300, encoding="utf-8")
    recipe = zoo.Recipe(
        corpus=str(corpus),
        model=dict(n_layer=1, n_head=2, n_embd=16, block_size=16),
        train=dict(batch_size=4, max_iters=8, eval_interval=4, eval_iters=1, warmup_iters=2, seed=3),
    )
    monkeypatch.setitem(zoo.RECIPES, "test-tiny", recipe)
    return recipe


def test_trains_once_then_loads_identical_weights(tiny_recipe, tmp_path):
    first = zoo.trained("test-tiny", cache_dir=tmp_path / "cache")
    assert len(first.history) == 8
    second = zoo.trained("test-tiny", cache_dir=tmp_path / "cache")
    a, b = first.model.state_dict(), second.model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert second.history.to_dict() == first.history.to_dict()
    assert torch.equal(second.val_tokens, first.val_tokens)
    assert not second.model.training


def test_changing_the_recipe_changes_the_cache_key(tiny_recipe):
    other = zoo.Recipe(**{**tiny_recipe.__dict__, "train": dict(tiny_recipe.train, lr=5e-4)})
    assert other.key() != tiny_recipe.key()
    assert zoo.Recipe(**tiny_recipe.__dict__).key() == tiny_recipe.key()


def test_unknown_recipe_and_scale_are_named(monkeypatch):
    with pytest.raises(ConfigError, match="tiny-synthetic"):
        zoo.get_recipe("huge")
    monkeypatch.setenv("ARLM_SCALE", "tpu")
    with pytest.raises(ConfigError, match="ARLM_SCALE='tpu'"):
        zoo.get_recipe("tiny-synthetic")


def test_gpu_scale_uses_the_bigger_preset(monkeypatch):
    monkeypatch.setenv("ARLM_SCALE", "gpu")
    recipe = zoo.get_recipe("tiny-synthetic")
    assert recipe.preset == "small"
    assert recipe.train["max_iters"] == 10 * zoo.RECIPES["tiny-synthetic"].train["max_iters"]
