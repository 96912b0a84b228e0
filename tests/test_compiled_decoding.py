"""Tests for compiled decoding: StaticKVCache, the compiled one-token step and its cache pool.

The static cache is checked eagerly against the plain cache (fast); the compiled path is checked
against eager decoding, for its recompiles, and for its fallback (slow: compiling takes seconds).
"""

from __future__ import annotations

import gc
import warnings
import weakref
from types import SimpleNamespace

import pytest
import torch
from conftest import run_cli
from test_generate import BLOCK, VOCAB, make_model

from arlm_lib.checkpoint import save_checkpoint
from arlm_lib.errors import ConfigError, GenerationError
from arlm_lib.generate import GenerationConfig, generate, generate_ids
from arlm_lib.generation import compiled
from arlm_lib.generation.context import ContextWindow
from arlm_lib.model import GPT, StaticKVCache, attention_mask_4d
from arlm_lib.tokenizers import CharTokenizer


@pytest.fixture(scope="module")
def model(one_thread) -> GPT:
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
def test_compiled_decoding_of_a_rope_model_gives_eager_tokens(one_thread):
    """The static cache's slots are RoPE's positions: a padded batch and a prompt decoded past the
    context (re-encoded windows) give the eager tokens."""
    rope = make_model(seed=1, position_encoding="rope")
    config = GenerationConfig(max_new_tokens=2 * BLOCK + 5, temperature=0)
    batch = [[3, 4, 5], [7, 8, 9, 10, 11, 12, 13]]
    assert generate_ids(rope, batch, config, compile=True) == generate_ids(rope, batch, config)


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


# ----------------------------------------------------------------------------- the compile=True path, eagerly
@pytest.fixture
def eager_step(monkeypatch):
    """compile=True's whole path (static cache, pooled caches, row moves, the step's states) with
    decode_step itself as the "compiled" function: the same code without compiling, so fast. It records
    the cache of every call, and uses a pool of its own."""
    step = compiled._CompiledStep("cpu")
    caches: list[StaticKVCache] = []

    def eager(model, idx, position_ids, cache):
        caches.append(cache)
        return compiled.decode_step(model, idx, position_ids, cache)

    monkeypatch.setattr(step, "_compiled", eager)
    monkeypatch.setattr("arlm_lib.generation.context.compiled_decode_step", lambda device_type: step)
    pool = compiled.CachePool()
    monkeypatch.setattr(compiled, "static_caches", pool)
    monkeypatch.setattr("arlm_lib.generation.context.static_caches", pool)
    return SimpleNamespace(step=step, caches=caches, pool=pool)


def test_static_path_gives_the_plain_tokens(model, eager_step):
    """Past the context (re-encoded windows), seeded sampling, and a left-padded batch whose FIRST row
    stops early (the other rows move into a smaller pooled cache, not a prefix of the rows)."""
    config = GenerationConfig(max_new_tokens=2 * BLOCK + 5, temperature=0)
    assert generate_ids(model, [1, 2, 3], config, compile=True) == generate_ids(model, [1, 2, 3], config)
    assert eager_step.caches and all(isinstance(c, StaticKVCache) for c in eager_step.caches)
    sampled = dict(max_new_tokens=40, temperature=1.0, top_k=10, seed=7)
    assert generate_ids(model, [5], compile=True, **sampled) == generate_ids(model, [5], **sampled)

    batch = [[7, 8, 9, 10, 11, 12, 13], [3, 4, 5], [20, 21, 22, 23, 24]]
    full = generate_ids(model, batch, config)
    stop = full[0][6]
    expected = generate_ids(model, batch, config, stop_ids=[stop])
    assert len(expected[0]) < min(len(expected[1]), len(expected[2])), "row 0 must stop first"
    eager_step.caches.clear()
    assert generate_ids(model, batch, config, stop_ids=[stop], compile=True) == expected
    sizes = [c.keys.size(1) for c in eager_step.caches]
    assert sizes[0] == 3 and 2 in sizes


def test_static_path_re_encodes_a_full_cache_after_rows_left(model, eager_step):
    """A long row stops early: the short one fills the cache (sized by the long row) before its own
    window overflows, so the windows are re-encoded, as with the plain cache."""
    config = GenerationConfig(max_new_tokens=BLOCK, temperature=0)
    batch = [list(range(1, BLOCK - 2)), [5]]
    full = generate_ids(model, batch, config)
    stop = full[0][0]
    assert stop not in full[1][: BLOCK // 2]
    expected = generate_ids(model, batch, config, stop_ids=[stop])
    assert len(expected[0]) == 1 and len(expected[1]) > 4
    assert generate_ids(model, batch, config, stop_ids=[stop], compile=True) == expected


def test_generation_returns_its_static_cache_to_the_pool(model, eager_step):
    config = GenerationConfig(max_new_tokens=5, temperature=0)
    generate_ids(model, [1, 2], config, compile=True)
    first = eager_step.caches[-1]
    assert eager_step.pool._free[model] == [first], "the finished stream must release its cache"
    generate_ids(model, [4, 5, 6], config, compile=True)
    assert eager_step.caches[-1] is first, "a later call must reuse the pooled cache"
    stream = generate(model, [1, 2], config, compile=True)
    next(stream)
    assert eager_step.pool._free[model] == []
    stream.close()  # a stream closed early gives its cache back too
    assert eager_step.pool._free[model] == [first]


def test_interleaved_streams_get_their_own_caches_eagerly(model, eager_step):
    config = GenerationConfig(max_new_tokens=12, temperature=0)
    generate_ids(model, [3], config, compile=True)  # leaves one cache in the pool
    a_ref, b_ref = generate_ids(model, [1, 2], config), generate_ids(model, [9], config)
    a, b = [], []
    for step_a, step_b in zip(
        generate(model, [1, 2], config, compile=True), generate(model, [9], config, compile=True)
    ):
        a.append(step_a.token_ids[0])
        b.append(step_b.token_ids[0])
    assert (a, b) == (a_ref, b_ref)
    assert len({id(c) for c in eager_step.caches[-20:]}) == 2


def test_select_moves_rows_into_a_pooled_cache(model, eager_step):
    """Row selection on the static cache: keys, values, which slots are real, and the length move to a
    pooled cache of the new size; the old one goes back to the pool; the logits are the plain ones."""
    windows = [[1, 2, 3, 4, 5], [6, 7], [8, 9, 10]]
    static = ContextWindow(model, windows, keep=16, compile=True)
    plain = ContextWindow(model, windows, keep=16)
    with torch.no_grad():
        for token in (11, 12):
            static.next_logits(), plain.next_logits()
            static.append([token] * 3), plain.append([token] * 3)
        static.next_logits(), plain.next_logits()
        old = static._static
        rows = torch.tensor([2, 0])
        old_real, old_keys = old.real.clone(), old.keys.clone()
        static.select([2, 0]), plain.select([2, 0])
        new = static._static
        assert new is not old and static._cache is new and new.keys.size(1) == 2
        assert new.length == old.length == 7
        assert torch.equal(new.real, old_real.index_select(0, rows))
        assert torch.equal(new.keys, old_keys.index_select(1, rows))
        assert eager_step.pool._free[model] == [old]
        for token in (13, 14):
            static.append([token] * 2), plain.append([token] * 2)
            torch.testing.assert_close(static.next_logits(), plain.next_logits())
    static.close()
    assert static._static is None and static._cache is None
    assert eager_step.pool._free[model] == [old, new]


def test_select_after_a_cut_re_encodes_into_a_cache_of_the_new_size(model, eager_step):
    """append() that cuts a window drops the cache; a select() before the next forward pass leaves
    fewer rows, so the re-encode needs a cache of that size, not the window's old one."""
    windows = [list(range(1, BLOCK + 1)), [5, 6], [7]]
    static = ContextWindow(model, windows, keep=8, compile=True)
    plain = ContextWindow(model, windows, keep=8)
    with torch.no_grad():
        static.next_logits(), plain.next_logits()
        static.append([1, 2, 3]), plain.append([1, 2, 3])  # row 0 overflows: re-encode next time
        static.select([2, 0]), plain.select([2, 0])
        torch.testing.assert_close(static.next_logits(), plain.next_logits())
    assert static._static.keys.size(1) == 2
    static.close()


def test_a_closed_window_never_writes_into_its_released_cache(model, eager_step):
    window = ContextWindow(model, [[1, 2, 3]], keep=16, compile=True)
    with torch.no_grad():
        window.next_logits()
        window.append([4])
        released = window._static
        window.close()
        other = eager_step.pool.acquire(model, 1)  # another caller now holds the released cache
        assert other is released
        reference = ContextWindow(model, [[1, 2, 3, 4]], keep=16).next_logits()
        torch.testing.assert_close(window.next_logits(), reference)  # re-encoded, in another cache
    assert other.length == 0 and not other.real.any()
    assert window._static is not other
    window.close()


def test_context_window_refuses_compile_without_the_cache(model):
    with pytest.raises(ValueError, match="use_cache"):
        ContextWindow(model, [[1, 2]], keep=16, compile=True, use_cache=False)


def test_cli_compile_decodes_through_the_static_cache(checkpoint, capsys, eager_step):
    base = ["sample", "--checkpoint", str(checkpoint), "--device", "cpu", "--prompt", "the ",
            "--max-new-tokens", "12", "--seed", "3"]  # fmt: skip
    code, plain, _ = run_cli(base, capsys)
    assert code == 0 and eager_step.caches == []
    assert run_cli([*base, "--compile"], capsys)[:2] == (0, plain)
    assert eager_step.caches, "sample --compile must decode through the compiled step"


# ----------------------------------------------------------------------------- the step and the pool
def test_the_compiled_step_is_one_per_device_type():
    assert compiled.compiled_decode_step("cpu") is compiled.compiled_decode_step("cpu")


def test_the_step_compiles_with_cuda_graphs_on_cuda_only(monkeypatch):
    modes = []
    monkeypatch.setattr(
        torch, "compile", lambda fn, mode=None, dynamic=None: modes.append((mode, dynamic)) or fn
    )
    compiled._CompiledStep("cuda"), compiled._CompiledStep("cpu")
    assert modes == [("reduce-overhead", False), (None, False)]


def test_the_step_returns_logits_a_later_step_cannot_overwrite(model):
    """A CUDA graph's outputs live in its memory pool and are overwritten by the next replay (another
    stream's, interleaved): the step must hand out a copy, or a caller still holding one step's logits
    (ContextWindow.select reorders them after the other stream ran) reads the other stream's."""
    step = compiled._CompiledStep("cpu")
    buffer = torch.zeros(1, VOCAB)

    def replay(model, idx, position_ids, cache):
        buffer.fill_(float(idx[0, 0]))  # a graph writes its output where it was captured
        return buffer

    step._compiled = replay
    first = step(model, torch.tensor([[1]]), None, None)  # the first call (compiling)
    second = step(model, torch.tensor([[2]]), None, None)  # and the later ones
    third = step(model, torch.tensor([[3]]), None, None)
    assert first.eq(1).all() and second.eq(2).all() and third.eq(3).all()


def test_a_compile_that_worked_does_not_fall_back_later(model):
    """Only the first call may fall back: an error after it (a bug, not a missing compiler) is raised."""
    step = compiled._CompiledStep("cpu")
    outcomes = iter([torch.zeros(1, VOCAB), RuntimeError("a real error")])

    def flaky(*args):
        out = next(outcomes)
        if isinstance(out, Exception):
            raise out
        return out

    step._compiled = flaky
    step(model, None, None, None)
    with pytest.raises(RuntimeError, match="a real error"):
        step(model, None, None, None)


def test_pool_matches_size_dtype_and_never_lends_one_cache_twice(model):
    pool = compiled.CachePool()
    a = pool.acquire(model, 2)
    a.prepare(3)
    pool.release(model, a)
    pool.release(model, a)  # twice: still kept once
    assert pool.acquire(model, 3).keys.size(1) == 3  # not the free 2-row cache
    with torch.autocast("cpu", dtype=torch.bfloat16):
        bf16 = pool.acquire(model, 2)
    assert bf16 is not a and bf16.keys.dtype == torch.bfloat16  # under autocast: the autocast dtype
    again = pool.acquire(model, 2)
    assert again is a and again.length == 0 and not again.real.any()  # handed out empty
    assert pool.acquire(model, 2) is not a
    for cache in [pool.acquire(model, 1) for _ in range(6)]:
        pool.release(model, cache)
    assert len(pool._free[model]) == 4  # at most a few kept
    # ...the ones given back last: a call that follows a batch of another size gets its cache again,
    # not new tensors (and, on CUDA, a new graph capture) because older caches filled the pool.
    pair = pool.acquire(model, 2)
    pool.release(model, pair)
    assert pool.acquire(model, 2) is pair


def test_pool_lets_a_deleted_model_go_with_its_caches():
    pool = compiled.CachePool()
    model = make_model()
    pool.release(model, pool.acquire(model, 1))
    gone = weakref.ref(model)
    del model
    gc.collect()
    assert gone() is None and len(pool._free) == 0


def test_pool_gives_a_model_moved_to_another_device_a_cache_there(monkeypatch):
    pool = compiled.CachePool()
    model = make_model()
    before = pool.acquire(model, 1)
    pool.release(model, before)
    # As if the model had moved to another device (meta: one every machine has), in the same dtype.
    new_kv_cache = model.new_kv_cache
    monkeypatch.setattr(
        model,
        "new_kv_cache",
        lambda batch_size, static=False: new_kv_cache(
            batch_size, static=static, device="meta", dtype=torch.float32
        ),
    )
    after = pool.acquire(model, 1)
    assert after is not before and all(t.device.type == "meta" for t in after.tensors())


def test_pool_marks_cuda_caches_as_static_addresses(monkeypatch):
    """On CUDA a replayed graph reads and writes the cache in place: the pool marks its tensors."""
    marked = []
    monkeypatch.setattr(torch._dynamo, "mark_static_address", lambda t, *a, **k: marked.append(t))
    tensors = [object() for _ in range(6)]

    class Model:
        config = SimpleNamespace(n_layer=2, block_size=8)

        def new_kv_cache(self, batch_size, static=False):
            return SimpleNamespace(real=SimpleNamespace(device=torch.device("cuda")), tensors=lambda: tensors)

    compiled.CachePool().acquire(Model(), 1)
    assert [id(t) for t in marked] == [id(t) for t in tensors]


def test_static_cache_keeps_one_tensor_per_layer_written_in_place():
    """Each layer's keys and values are tensors of their own, not views of one (a compiled step writing
    into a view would write the whole base back), and update() writes into them in place."""
    cache = StaticKVCache(3, 2, 1, max_length=5, head_dim=2)
    assert all(t._base is None for t in cache.layer_keys + cache.layer_values)
    before = [t.data_ptr() for t in cache.tensors()]
    cache.prepare(1)
    k, v = cache.update(1, torch.ones(2, 1, 1, 2), torch.full((2, 1, 1, 2), 2.0))
    assert k is cache.layer_keys[1] and v is cache.layer_values[1]
    assert [t.data_ptr() for t in cache.tensors()] == before
    assert cache.keys[1, :, :, 0].eq(1).all() and cache.keys[[0, 2]].eq(0).all()
    assert cache.values[1, :, :, 0].eq(2).all() and cache.values[1, :, :, 1:].eq(0).all()


def test_static_select_rows_and_reset_keep_the_real_slots_in_step():
    cache = StaticKVCache(1, 3, 1, max_length=6, head_dim=2)
    cache.prepare(3, real=torch.tensor([[0, 0, 1], [0, 1, 1], [1, 1, 1]]))
    cache.select_rows(torch.tensor([2, 0]))
    assert cache.real[:, :3].tolist() == [[True, True, True], [False, False, True]]
    assert cache.keys.size(1) == 2
    cache.reset()
    assert cache.length == 0 and not cache.real.any()


def test_a_reused_static_cache_cannot_leak_a_stale_nan_into_attention():
    """A pooled cache is reused: a slot left from an earlier call is masked out, but zero weight times a
    NaN value is still NaN, so reset() must clear the values too."""
    model = make_model()
    cache = model.new_kv_cache(1, static=True)
    with torch.no_grad():
        cache.prepare(4)
        model(torch.tensor([[1, 2, 3, 4]]), kv_cache=cache)
        for tensor in cache.layer_keys + cache.layer_values:
            tensor[..., 2:, :] = float("nan")  # as if an earlier, longer text had left garbage there
        cache.reset()
        cache.prepare(2)
        logits = model(torch.tensor([[5, 6]]), kv_cache=cache).logits
    assert torch.isfinite(logits).all()
    expected = model(torch.tensor([[5, 6]])).logits
    torch.testing.assert_close(logits, expected)
