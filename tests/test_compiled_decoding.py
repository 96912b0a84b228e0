"""Tests for compiled decoding: StaticKVCache, the compiled one-token step and its cache pool.

The static cache is checked eagerly against the plain cache (fast); the compiled path is checked
against eager decoding, for its recompiles, and for its fallback (slow: compiling takes seconds).
"""

from __future__ import annotations

import warnings

import pytest
import torch

from arlm_lib.checkpoint import save_checkpoint
from arlm_lib.cli import main
from arlm_lib.errors import ConfigError, GenerationError
from arlm_lib.generate import GenerationConfig, generate, generate_ids
from arlm_lib.generation import compiled
from arlm_lib.generation.context import ContextWindow
from arlm_lib.model import GPT, GPTConfig, StaticKVCache, attention_mask_4d
from arlm_lib.tokenizers import CharTokenizer

VOCAB, BLOCK = 40, 32


def make_model(seed: int = 0) -> GPT:
    """A tiny random GPT with weights scaled up, so greedy text varies and near-ties are rare."""
    torch.manual_seed(seed)
    model = GPT(GPTConfig(vocab_size=VOCAB, block_size=BLOCK, n_layer=2, n_head=2, n_embd=32, dropout=0.0))
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() > 1:
                p.mul_(8.0)
    return model.eval()


@pytest.fixture(scope="module")
def model() -> GPT:
    torch.set_num_threads(1)
    return make_model()


def graphs_compiled() -> int:
    from torch._dynamo.utils import counters

    return int(counters["stats"]["unique_graphs"])


# ----------------------------------------------------------------------------- StaticKVCache, eager
def test_static_cache_matches_the_plain_cache_with_padding(model):
    """Prefill of left-padded rows, then one-token steps: the same logits as the sliced plain cache."""
    idx = torch.tensor([[0, 0, 5, 6, 7], [1, 2, 3, 4, 5]])
    real = torch.tensor([[0, 0, 1, 1, 1], [1, 1, 1, 1, 1]])
    positions = (real.cumsum(1) - 1).clamp(min=0)
    plain, static = model.new_kv_cache(2), model.new_kv_cache(2, static=True)
    assert isinstance(static, StaticKVCache) and not isinstance(plain, StaticKVCache)
    with torch.no_grad():
        expected = model(idx, attention_mask=real, position_ids=positions, kv_cache=plain).logits
        static.prepare(5, real=real)
        got = model(idx, position_ids=positions, kv_cache=static).logits
        torch.testing.assert_close(got[real.bool()], expected[real.bool()])
        mask, pos = real, positions[:, -1:]
        for token in (9, 11, 13):
            new = torch.tensor([[token], [token + 1]])
            mask, pos = torch.cat([mask, torch.ones(2, 1, dtype=mask.dtype)], 1), pos + 1
            expected = model(new, attention_mask=mask, position_ids=pos, kv_cache=plain).logits
            static.prepare(1)
            got = model(new, position_ids=pos, kv_cache=static).logits
            torch.testing.assert_close(got, expected)
    assert static.length == plain.length == 8


def test_static_cache_mask_is_the_plain_mask_over_the_whole_buffer():
    """visible() restricted to the written slots is attention_mask_4d; later slots are hidden."""
    cache = StaticKVCache(1, 2, 1, max_length=10, head_dim=4)
    real = torch.tensor([[0, 1, 1, 1], [1, 1, 1, 1]])
    cache.prepare(4, real=real)
    full = cache.visible()
    assert full.shape == (2, 1, 4, 10)
    assert torch.equal(full[..., :4], attention_mask_4d(4, 0, real).expand(2, 1, 4, 4))
    assert not full[..., 4:].any()
    cache.prepare(2)
    full = cache.visible()
    expected = attention_mask_4d(2, 4, torch.cat([real, torch.ones(2, 2, dtype=real.dtype)], 1))
    assert torch.equal(full[..., :6], expected.expand(2, 1, 2, 6))
    assert not full[..., 6:].any()


def test_static_cache_refuses_to_overflow_and_attention_masks():
    cache = StaticKVCache(1, 1, 1, max_length=4, head_dim=2)
    cache.prepare(3)
    with pytest.raises(ValueError, match="cannot add 2 positions to a cache holding 3 of 4"):
        cache.prepare(2)
    assert cache.length == 3  # nothing half-done
    model = make_model()
    static = model.new_kv_cache(1, static=True)
    static.prepare(2)
    with pytest.raises(ConfigError, match="prepare\\(real=...\\)"):
        model(torch.tensor([[1, 2]]), attention_mask=torch.ones(1, 2), kv_cache=static)


def test_compile_arguments_are_checked(model):
    with pytest.raises(GenerationError, match="needs use_cache=True"):
        generate(model, [1, 2], max_new_tokens=2, use_cache=False, compile=True)
    with pytest.raises(GenerationError, match="compile='yes'"):
        generate(model, [1, 2], max_new_tokens=2, compile="yes")
    with pytest.raises(ValueError, match="hidden states"):
        ContextWindow(model, [[1, 2]], keep=16, compile=True, track_hidden=True)


def test_pool_lends_a_cache_to_one_caller_at_a_time(model):
    pool = compiled.CachePool()
    first, second = pool.acquire(model, 2), pool.acquire(model, 2)
    assert first is not second
    pool.release(model, first)
    again = pool.acquire(model, 2)
    assert again is first and again.length == 0 and not again.real.any()
    assert pool.acquire(model, 3).keys.size(1) == 3  # another batch size: another cache


# ----------------------------------------------------------------------------- compiled, slow
@pytest.mark.slow
def test_compiled_decoding_gives_eager_tokens_and_compiles_once(model):
    """Greedy and seeded sampling, one prompt past the context (re-encoded windows) and a padded batch
    in which one row stops early (rows move to a smaller pooled cache): the eager tokens every time.
    A second call reuses the compiled step: no new graph."""
    config = GenerationConfig(max_new_tokens=2 * BLOCK + 5, temperature=0)
    batch = [[3, 4, 5], [7, 8, 9, 10, 11, 12, 13]]
    eager = generate_ids(model, [1, 2, 3], config)
    assert generate_ids(model, [1, 2, 3], config, compile=True) == eager
    before = graphs_compiled()
    assert generate_ids(model, [1, 2, 3], config, compile=True) == eager
    assert graphs_compiled() == before, "a second call recompiled the decoding step"

    sampled = dict(max_new_tokens=40, temperature=1.0, top_k=10, seed=7)
    assert generate_ids(model, [5], compile=True, **sampled) == generate_ids(model, [5], **sampled)

    expected = generate_ids(model, batch, config)
    stop = expected[0][10]  # row 0 stops there (or earlier, at the first occurrence); row 1 goes on
    expected = generate_ids(model, batch, config, stop_ids=[stop])
    assert len(expected[0]) < len(expected[1])
    assert generate_ids(model, batch, config, stop_ids=[stop], compile=True) == expected


@pytest.mark.slow
def test_interleaved_compiled_streams_do_not_share_a_cache(model):
    config = GenerationConfig(max_new_tokens=20, temperature=0)
    a_ref, b_ref = generate_ids(model, [1, 2], config), generate_ids(model, [9], config)
    a_stream = generate(model, [1, 2], config, compile=True)
    b_stream = generate(model, [9], config, compile=True)
    a, b = [], []
    for step_a, step_b in zip(a_stream, b_stream):
        a.append(step_a.token_ids[0])
        b.append(step_b.token_ids[0])
    assert (a, b) == (a_ref, b_ref)


def test_a_failing_compiler_falls_back_to_eager_with_one_warning(model, monkeypatch):
    step = compiled._CompiledStep("cpu")
    calls = []

    def broken(*args):
        calls.append(1)
        raise RuntimeError("no C++ compiler found\nmore detail")

    monkeypatch.setattr(step, "_compiled", broken)
    monkeypatch.setattr(compiled, "compiled_decode_step", lambda device_type: step)
    monkeypatch.setattr("arlm_lib.generation.context.compiled_decode_step", lambda device_type: step)
    config = GenerationConfig(max_new_tokens=12, temperature=0)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        got = generate_ids(model, [4, 5], config, compile=True)
    assert got == generate_ids(model, [4, 5], config)
    messages = [str(w.message) for w in caught if "compiled decoding" in str(w.message)]
    assert len(messages) == 1 and "RuntimeError: no C++ compiler found" in messages[0]
    assert "more detail" not in messages[0]
    assert len(calls) == 1, "after a failed compile, the step must not be retried at every token"


# ----------------------------------------------------------------------------- the CLI's --compile
def run_cli(argv: list[str], capsys) -> tuple[int, str, str]:
    try:
        code = main(argv)
    except SystemExit as exc:
        code = exc.code
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    root = tmp_path_factory.mktemp("compiled")
    tok = CharTokenizer.train("the cat sat on the mat.\n")
    save_checkpoint(root / "ckpt", make_model(), tokenizer=tok)
    return root / "ckpt"


@pytest.mark.parametrize(
    "flags, named",
    [
        (["--beam", "2"], "--beam 2"),
        (["--penalty-alpha", "0.5"], "--penalty-alpha 0.5"),
        (["--draft", "DRAFT"], "--draft"),
    ],
)
def test_cli_compile_refuses_the_decoders_with_their_own_loops(checkpoint, capsys, flags, named):
    flags = [str(checkpoint) if f == "DRAFT" else f for f in flags]
    code, out, err = run_cli(["sample", "--checkpoint", str(checkpoint), "--compile", *flags], capsys)
    assert code == 2 and out == ""
    assert named in err and "with --compile" in err


@pytest.mark.slow
def test_cli_compile_prints_the_text_of_plain_decoding(checkpoint, capsys):
    base = ["sample", "--checkpoint", str(checkpoint), "--device", "cpu", "--prompt", "the ",
            "--max-new-tokens", "45", "--seed", "3", "--num-samples", "2"]  # fmt: skip
    code, plain, _ = run_cli(base, capsys)
    assert code == 0 and plain.count("--- sample") == 2
    assert run_cli([*base, "--compile"], capsys)[:2] == (0, plain)
    assert run_cli([*base, "--compile", "--stream"], capsys)[:2] == (0, plain)
