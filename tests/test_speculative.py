"""Speculative decoding: the same text as plain decoding (greedy) or the same distribution (sampling),
in fewer passes of the model; the window policy, the cache, stops and bad input."""

from __future__ import annotations

import itertools
import math
import types
import warnings

import pytest
import torch
from test_generate import greedy_reference, make_model

from arlm_lib.errors import GenerationError
from arlm_lib.generate import (
    ContextWindow,
    GenerationConfig,
    SpeculativeResult,
    generate_ids,
    processed_probs,
    speculative_generate,
)
from arlm_lib.generation.speculative import _accept, _replacement, window_start
from arlm_lib.ngram import NGramModel

VOCAB, BLOCK = 40, 32


@pytest.fixture(scope="module")
def target(one_thread):
    return make_model(VOCAB, BLOCK, seed=0)


@pytest.fixture(scope="module")
def other_model():
    """A different random model over the same vocabulary: a draft that is often wrong."""
    return make_model(VOCAB, 16, seed=5)


@pytest.fixture(scope="module")
def ngram(target):
    """A bigram model fitted on the target's own greedy text: a draft that is often right."""
    text = greedy_reference(target, [1], 300, BLOCK // 2)
    return NGramModel(order=2, vocab_size=VOCAB).fit(text)


# ----------------------------------------------------------------------------- the window policy
@pytest.mark.parametrize("block, keep", [(8, 1), (8, 4), (8, 8), (5, 3), (32, 16)])
def test_window_start_gives_the_windows_context_window_keeps(block, keep):
    model = make_model(VOCAB, block)
    window = ContextWindow(model, [[1]], keep=keep, use_cache=False)
    tokens = [1]
    for t in range(2, 200):
        start = window_start(len(tokens), block, keep)
        assert window.windows[0] == tokens[start:], f"{len(tokens)} tokens"
        window.append([t % VOCAB])
        tokens.append(t % VOCAB)


# ----------------------------------------------------------------------------- greedy: the same text
@pytest.mark.parametrize("use_cache", [True, False])
@pytest.mark.parametrize("num_draft_tokens", [0, 1, 3, 8])
@pytest.mark.parametrize("draft_name", ["target", "other", "ngram"])
def test_greedy_speculative_text_is_exactly_greedy_text(
    target, other_model, ngram, draft_name, num_draft_tokens, use_cache
):
    draft = {"target": target, "other": other_model, "ngram": ngram}[draft_name]
    for prompt, keep in (([1], None), ([3, 4, 5], 1), (list(range(1, 40)), BLOCK), ([7, 8], 5)):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            expected = generate_ids(target, prompt, max_new_tokens=90, temperature=0, context_keep=keep)
            got = speculative_generate(
                target, draft, prompt, max_new_tokens=90, temperature=0, context_keep=keep,
                num_draft_tokens=num_draft_tokens, use_cache=use_cache,
            )  # fmt: skip
        # A prompt longer than the window is cropped, with the same warning from both.
        assert [str(w.message) for w in caught[: len(caught) // 2]] == [
            str(w.message) for w in caught[len(caught) // 2 :]
        ]
        assert len(caught) == (2 if len(prompt) > BLOCK else 0)
        assert got.ids == expected, (prompt, keep)
        assert got.target_passes == len(got.rounds) and sum(1 + a for _, a in got.rounds) == 90


def test_greedy_speculative_text_of_a_rope_target_is_exactly_greedy_text(other_model):
    # Rejected drafts leave turned keys in the cache; truncating it must forget them exactly.
    rope = make_model(VOCAB, BLOCK, seed=3, position_encoding="rope")
    for prompt, keep in (([1], None), ([3, 4, 5], 7)):
        expected = generate_ids(rope, prompt, max_new_tokens=80, temperature=0, context_keep=keep)
        got = speculative_generate(
            rope, other_model, prompt, max_new_tokens=80, temperature=0, context_keep=keep, num_draft_tokens=3
        )
        assert got.ids == expected and got.target_passes < 80


def test_greedy_speculation_applies_the_penalties_to_the_same_history(target, other_model):
    options = dict(max_new_tokens=80, temperature=0, repetition_penalty=1.8, no_repeat_ngram_size=2)
    expected = generate_ids(target, [2, 3], **options)
    assert expected != generate_ids(target, [2, 3], max_new_tokens=80, temperature=0)  # they act here
    got = speculative_generate(target, other_model, [2, 3], num_draft_tokens=3, **options)
    assert got.ids == expected


def test_the_target_as_its_own_draft_is_always_accepted(target):
    greedy = speculative_generate(target, target, [1], max_new_tokens=60, temperature=0, num_draft_tokens=4)
    sampled = speculative_generate(target, target, [1], max_new_tokens=60, num_draft_tokens=4, seed=3)
    for result in (greedy, sampled):
        assert result.acceptance_rate == 1.0
        assert result.tokens_per_pass > 3  # 5 per pass, less where the window is cut or at the end


def test_a_wrong_draft_is_rejected_and_costs_passes(target, other_model, ngram):
    wrong = speculative_generate(
        target, other_model, [1], max_new_tokens=60, temperature=0, num_draft_tokens=4
    )
    good = speculative_generate(target, ngram, [1], max_new_tokens=60, temperature=0, num_draft_tokens=4)
    assert wrong.acceptance_rate < good.acceptance_rate
    assert wrong.target_passes > good.target_passes
    plain = speculative_generate(target, ngram, [1], max_new_tokens=60, temperature=0, num_draft_tokens=0)
    assert plain.target_passes == 60 and plain.drafted == 0 and math.isnan(plain.acceptance_rate)


def test_the_counts_of_a_result():
    # Four passes: all 4 drafts kept (+ bonus), 1 of 4 kept, the first of 2 rejected, nothing drafted.
    result = SpeculativeResult(ids=list(range(5 + 2 + 1 + 1)), rounds=[(4, 4), (4, 1), (2, 0), (0, 0)])
    assert (result.target_passes, result.drafted, result.accepted, result.checked) == (4, 10, 5, 7)
    assert result.acceptance_rate == 5 / 7  # the two drafts after a rejection were never checked
    assert result.tokens_per_pass == 9 / 4


def test_max_new_tokens_is_never_exceeded_and_stop_ids_end_the_text(target):
    expected = generate_ids(target, [1], max_new_tokens=50, temperature=0)
    for n in (0, 1, 2, 5, 13):
        assert speculative_generate(target, target, [1], max_new_tokens=n, temperature=0).ids == expected[:n]
    # A stop token inside a run of accepted drafts: the text ends at its first use, later drafts dropped.
    stop = expected[6]
    end = expected.index(stop) + 1
    got = speculative_generate(
        target, target, [1], max_new_tokens=50, temperature=0, num_draft_tokens=8, stop_ids=stop
    )
    assert got.ids == expected[:end] and got.rounds[-1][1] >= end  # accepted past the stop, then cut


def test_no_new_tokens_is_no_pass_and_undefined_rates(target):
    empty = speculative_generate(target, target, [1], max_new_tokens=0)
    assert empty.ids == [] and empty.rounds == [] and empty.target_passes == 0 and empty.drafted == 0
    assert math.isnan(empty.tokens_per_pass) and math.isnan(empty.acceptance_rate)


def test_a_pass_drafts_as_many_tokens_as_max_new_tokens_and_the_window_leave(target):
    # 5 tokens: 4 drafts and the bonus token, all from one pass.
    got = speculative_generate(target, target, [1], max_new_tokens=5, temperature=0, num_draft_tokens=4)
    assert got.rounds == [(4, 4)]
    # A window 2 short of block_size: 2 drafts fit in it, and the bonus token fills it, in one pass.
    prompt = list(range(1, BLOCK - 1))
    got = speculative_generate(target, target, prompt, max_new_tokens=3, temperature=0, num_draft_tokens=4)
    assert got.rounds == [(2, 2)]
    assert got.ids == generate_ids(target, prompt, max_new_tokens=3, temperature=0)


def test_the_target_as_its_own_draft_agrees_under_every_processor(target):
    """The draft's distribution gets the same temperature, filters and penalties, after the same history
    (the drafts before it included), as the model's; so does the bonus token after accepted drafts."""
    penalties = dict(repetition_penalty=1.8, no_repeat_ngram_size=2)
    expected = generate_ids(target, [2, 3], max_new_tokens=60, temperature=0, **penalties)
    greedy = speculative_generate(
        target, target, [2, 3], max_new_tokens=60, temperature=0, num_draft_tokens=4, **penalties
    )
    assert greedy.ids == expected and greedy.acceptance_rate == 1.0
    sampled = speculative_generate(
        target, target, [2, 3], max_new_tokens=60, temperature=0.7, top_k=5, seed=3, num_draft_tokens=4,
        **penalties,
    )  # fmt: skip
    assert sampled.acceptance_rate == 1.0


def test_a_cropped_prompt_gets_the_windows_of_generate_with_any_context_keep(target, other_model):
    # Cropped to BLOCK tokens, then cut to 8 at a time (with keep=BLOCK every cut moves the start by one,
    # which hides an off-by-the-cropped-part window).
    prompt = list(range(1, 40))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        expected = generate_ids(target, prompt, max_new_tokens=40, temperature=0, context_keep=8)
        got = speculative_generate(
            target, other_model, prompt, max_new_tokens=40, temperature=0, context_keep=8, num_draft_tokens=3
        )
    assert got.ids == expected


def test_on_tokens_gets_each_pass_new_tokens_as_they_come(target, other_model):
    pieces = []
    result = speculative_generate(
        target, other_model, [1], max_new_tokens=50, seed=2, num_draft_tokens=3, on_tokens=pieces.append
    )
    assert [t for piece in pieces for t in piece] == result.ids
    assert [len(piece) for piece in pieces] == [accepted + 1 for _, accepted in result.rounds]
    # A stop token: the last piece ends with it, and nothing comes after.
    pieces = []
    stop = result.ids[9]
    end = result.ids.index(stop) + 1
    stopped = speculative_generate(
        target, other_model, [1], max_new_tokens=50, seed=2, num_draft_tokens=3, stop_ids=stop,
        on_tokens=pieces.append,
    )  # fmt: skip
    assert stopped.ids == result.ids[:end] and [t for piece in pieces for t in piece] == stopped.ids
    with pytest.raises(GenerationError, match="on_tokens must be a function.*list"):
        speculative_generate(target, other_model, [1], max_new_tokens=3, on_tokens=[])


# ----------------------------------------------------------------------------- sampling: the same law
def exact_joint(model, prompt, n_tokens, config):
    """P(t_1 .. t_n | prompt) for every sequence, from the model's processed distributions."""
    vocab = model.config.vocab_size
    processors = config.processors()
    table = {}
    for seq in itertools.product(range(vocab), repeat=n_tokens):
        prob, history = 1.0, list(prompt)
        for t in seq:
            logits = model(torch.tensor([history])).logits[:, -1]
            prob *= float(processed_probs(logits, [history], processors)[0, t])
            history.append(t)
        table[seq] = prob
    return table


@pytest.mark.slow
@pytest.mark.parametrize(
    "vocab, n_tokens, num_draft_tokens, options",
    [(4, 2, 1, {}), (3, 3, 2, {"temperature": 1.5}), (4, 2, 2, {"top_k": 3, "repetition_penalty": 2.0})],
)
def test_sampled_text_follows_the_models_own_distribution(vocab, n_tokens, num_draft_tokens, options):
    """A chi-square test of the emitted sequences against the exact joint distribution of the target.

    The draft is another random model, so its distribution differs a lot and every branch of the rule
    (accept, replace from the leftover, bonus token) is taken. Accepting every draft token, or drawing
    the replacement from p instead of (p - q)+, moves some cells by several percent: with 5,000 samples a
    cell's standard error is at most 0.7 %, and the statistic would exceed the bound many times over.
    """
    target, draft = make_model(vocab, 8, seed=11), make_model(vocab, 8, seed=12)
    config = GenerationConfig(max_new_tokens=n_tokens, **options)
    with torch.no_grad():
        exact = exact_joint(target, [1], n_tokens, config)
    generator = torch.Generator().manual_seed(1234)
    counts = dict.fromkeys(exact, 0)
    rejected = 0
    n_samples = 5000
    for _ in range(n_samples):
        result = speculative_generate(
            target, draft, [1], config, num_draft_tokens=num_draft_tokens, seed=generator
        )
        counts[tuple(result.ids)] += 1
        rejected += result.accepted < result.drafted
    assert 0.1 < rejected / n_samples < 0.9  # both branches are exercised
    cells = [(counts[s], n_samples * p) for s, p in exact.items() if p > 0]
    assert sum(counts[s] for s, p in exact.items() if p == 0) == 0  # nothing the filters removed
    chi2 = sum((c - e) ** 2 / e for c, e in cells)
    dof = len(cells) - 1
    assert chi2 < dof + 6 * math.sqrt(2 * dof), f"chi2 {chi2:.1f} with {dof} degrees of freedom"


class NGramAsGPT(torch.nn.Module):
    """A stand-in GPT whose next-token distribution is an n-gram model's (no KV cache)."""

    def __init__(self, ngram, block_size):
        super().__init__()
        self.ngram = ngram
        self.config = types.SimpleNamespace(vocab_size=ngram.vocab_size, block_size=block_size)
        self.anchor = torch.nn.Parameter(torch.zeros(()))  # a device to run on

    def forward(self, idx, kv_cache=None):
        assert kv_cache is None
        tokens = idx[0].tolist()
        rows = [self.ngram.next_token_probs(tokens[: t + 1]).log() for t in range(len(tokens))]
        return types.SimpleNamespace(logits=torch.stack(rows).unsqueeze(0))


def test_an_ngram_draft_proposes_from_the_ngrams_own_distribution():
    """Against a model with the n-gram's own distribution, the draft is (almost) never overruled: it
    draws from the n-gram's probabilities after the whole context the n-gram uses, not from a shorter
    one or from the probabilities taken as logits."""
    generator = torch.Generator().manual_seed(0)
    text = []
    for _ in range(60):  # the next token is a function of the last two, not of the last one
        run = torch.randint(1, VOCAB, (2,), generator=generator).tolist()
        for _ in range(10):
            run.append((3 * run[-2] + run[-1]) % (VOCAB - 1) + 1)
        text += run
    for order in (3, 4):  # order 4: a prompt shorter than the n-gram's context must reach it whole
        ngram = NGramModel(order=order, vocab_size=VOCAB).fit(text)
        twin = NGramAsGPT(ngram, block_size=64)
        for prompt in ([1], [text[0]], [5, 9]):
            for options in ({"temperature": 0}, {"seed": 0}):
                got = speculative_generate(twin, ngram, prompt, max_new_tokens=30, use_cache=False, **options)
                assert got.acceptance_rate > 0.99, (order, prompt, options, got.rounds)


def test_the_cache_feeds_each_token_about_once_and_use_cache_false_runs_without_one(target, other_model):
    def fed(use_cache):
        """Tokens fed per call, and whether a cache came with them: for the model, then the draft."""
        calls = {target: [], other_model: []}
        hooks = [
            m.register_forward_pre_hook(
                lambda mod, args, kwargs: calls[mod].append((args[0].shape[1], kwargs.get("kv_cache"))),
                with_kwargs=True,
            )
            for m in calls
        ]
        try:
            speculative_generate(
                target, other_model, [1], max_new_tokens=60, temperature=0, num_draft_tokens=3,
                use_cache=use_cache,
            )  # fmt: skip
        finally:
            for hook in hooks:
                hook.remove()
        return calls[target], calls[other_model]

    for cached, full in zip(fed(True), fed(False)):
        assert all(cache is not None for _, cache in cached) and all(cache is None for _, cache in full)
        assert len(cached) == len(full)  # the same passes
        assert sum(n for n, _ in cached) < sum(n for n, _ in full) / 3  # fewer tokens run through


def test_a_seed_reproduces_the_sampled_text(target, other_model):
    first = speculative_generate(target, other_model, [1], max_new_tokens=40, seed=7, top_p=0.9)
    again = speculative_generate(target, other_model, [1], max_new_tokens=40, seed=7, top_p=0.9)
    other = speculative_generate(target, other_model, [1], max_new_tokens=40, seed=8, top_p=0.9)
    assert first == again and first.ids != other.ids


def test_without_drafts_sampling_is_plain_sampling_token_for_token(target, ngram):
    options = dict(max_new_tokens=70, seed=4, top_k=10, repetition_penalty=1.3)
    plain = generate_ids(target, [2, 5], **options)
    assert speculative_generate(target, ngram, [2, 5], num_draft_tokens=0, **options).ids == plain
    assert speculative_generate(target, ngram, [2, 5], num_draft_tokens=2, **options).ids != plain


def test_a_padded_vocabulary_never_yields_ids_past_the_tokenizers(target, other_model):
    class SmallTokenizer:
        vocab_size, bos_id = 30, 1

    result = speculative_generate(
        target, other_model, [1], max_new_tokens=150, seed=0, temperature=3.0, tokenizer=SmallTokenizer()
    )
    assert max(result.ids) < 30 and len(result.ids) == 150


def test_training_mode_is_restored_and_dropout_is_off_while_decoding():
    target, draft = (
        make_model(VOCAB, BLOCK, seed=0, dropout=0.5),
        make_model(VOCAB, BLOCK, seed=1, dropout=0.5),
    )
    target.train(), draft.train()
    got = speculative_generate(target, draft, [1], max_new_tokens=30, temperature=0)
    assert target.training and draft.training
    target.eval()
    assert got.ids == generate_ids(target, [1], max_new_tokens=30, temperature=0)
    draft.eval()  # the draft's dropout was off too: the same drafts, accepted in the same rounds
    assert speculative_generate(target, draft, [1], max_new_tokens=30, temperature=0) == got


# ----------------------------------------------------------------------------- the cache
def test_a_truncated_cache_gives_the_logits_of_a_fresh_pass(target):
    tokens = torch.tensor([[1, 5, 9, 2, 7, 3]])
    cache = target.new_kv_cache(1)
    with torch.no_grad():
        target(tokens, kv_cache=cache)
        cache.truncate(3)  # forget 2, 7, 3; feed other tokens in their place
        cached = target(torch.tensor([[4, 4]]), kv_cache=cache).logits
        fresh = target(torch.tensor([[1, 5, 9, 4, 4]])).logits[:, -2:]
    torch.testing.assert_close(cached, fresh, rtol=1e-5, atol=1e-5)
    assert cache.length == 5
    for bad in (-1, 6):
        with pytest.raises(ValueError, match=f"to {bad}"):
            cache.truncate(bad)


# ----------------------------------------------------------------------------- bad input
def test_bad_drafts_and_arguments_are_named(target, ngram):
    with pytest.raises(GenerationError, match="draft's vocabulary has 41 ids and the model's 40"):
        speculative_generate(target, make_model(41, 8), [1], max_new_tokens=3)
    with pytest.raises(GenerationError, match="draft's vocabulary has 39 ids"):
        speculative_generate(target, NGramModel(2, 39).fit([1, 2, 3]), [1], max_new_tokens=3)
    with pytest.raises(GenerationError, match="not been fitted"):
        speculative_generate(target, NGramModel(2, VOCAB), [1], max_new_tokens=3)
    with pytest.raises(GenerationError, match="draft must be a GPT model or a fitted NGramModel.*str"):
        speculative_generate(target, "small.pt", [1], max_new_tokens=3)
    with pytest.raises(GenerationError, match="one prompt, got a batch of 2"):
        speculative_generate(target, ngram, [[1], [2]], max_new_tokens=3)
    for bad in (-1, 1.5, True, "4"):
        with pytest.raises(GenerationError, match=f"num_draft_tokens={bad!r} is not allowed"):
            speculative_generate(target, ngram, [1], max_new_tokens=3, num_draft_tokens=bad)
    with pytest.raises(GenerationError, match="temperature=-1"):
        speculative_generate(target, ngram, [1], max_new_tokens=3, temperature=-1)
    with pytest.raises(GenerationError, match="stop_ids=40"):
        speculative_generate(target, ngram, [1], max_new_tokens=3, stop_ids=[40])
    with pytest.raises(GenerationError, match="unknown generation option"):
        speculative_generate(target, ngram, [1], max_new_tokens=3, beams=2)


def test_a_rejected_draft_is_replaced_from_the_mass_the_draft_lacked():
    """The replacement is drawn from (p - q)+, normalised, never from p itself: here only token 1 has
    more target than draft probability, so every replacement is token 1. (The chi-square test above
    checks the whole rule too, but it is slow; this runs in the fast suite.)"""
    p = torch.tensor([0.5, 0.5, 0.0], dtype=torch.float64)
    q = torch.tensor([0.9, 0.1, 0.0], dtype=torch.float64)
    generator = torch.Generator().manual_seed(0)
    assert {_replacement(p, q, False, generator) for _ in range(200)} == {1}


def test_accept_or_replace_emits_the_target_distribution():
    """One speculative position, drawn 40,000 times: a draft token from q kept with probability
    min(1, p/q), else a replacement from (p - q)+, is distributed as p (Leviathan et al., theorem 1)."""
    p = torch.tensor([0.1, 0.2, 0.3, 0.4], dtype=torch.float64)
    q = torch.tensor([0.4, 0.3, 0.2, 0.1], dtype=torch.float64)
    generator = torch.Generator().manual_seed(1)
    n = 40_000
    counts = torch.zeros(4, dtype=torch.float64)
    drafts = torch.multinomial(q, n, replacement=True, generator=generator).tolist()
    for token in drafts:
        kept = _accept(p, q, token, False, generator)
        counts[token if kept else _replacement(p, q, False, generator)] += 1
    # Five standard errors per cell (largest about 0.0025); drawing replacements from p instead of
    # (p - q)+ moves token 3 from 0.40 to 0.26.
    assert torch.allclose(counts / n, p, atol=5 * math.sqrt(0.25 / n))
