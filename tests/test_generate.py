"""Tests for arlm_lib.generate: processors, streaming generation, KV cache, beam search, scoring, metrics.

Models are tiny random GPTs (vocab 40, block 32, 2 layers, 32 wide). Their weights are scaled up so
that next-token distributions are far from uniform and greedy text varies: a broken cache, mask or
position id then changes the tokens instead of hiding in near-ties.
"""

from __future__ import annotations

import dataclasses
import io
import json
import math
import warnings
from collections.abc import Sequence
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch.nn import functional as F

from arlm_lib.errors import ArlmError, GenerationError, TokenizerError
from arlm_lib.generate import (
    EpsilonCutoff,
    EtaCutoff,
    GenerationConfig,
    MinP,
    NoRepeatNGram,
    RepetitionPenalty,
    Temperature,
    TopK,
    TopP,
    TypicalP,
    apply_processors,
    beam_search,
    contrastive_search,
    distinct_n,
    generate,
    generate_ids,
    generate_text,
    generated_perplexity,
    has_repetition,
    processed_probs,
    repetition_rate,
    sample_cli,
    score_sequence,
    score_text,
    speculative_generate,
    stream_text,
)
from arlm_lib.generation.cli import check_sample_options
from arlm_lib.generation.processors import VocabLimit
from arlm_lib.generation.sampling import safe_length
from arlm_lib.model import GPT, GPTConfig
from arlm_lib.tokenizers import CharTokenizer, train_tokenizer

VOCAB, BLOCK = 40, 32
PROMPTS = [[3, 4, 5], [1], [7, 8, 9, 10, 11, 12, 13]]


def make_model(
    vocab_size: int = VOCAB,
    block_size: int = BLOCK,
    seed: int = 0,
    dropout: float = 0.0,
    position_encoding: str = "learned",
) -> GPT:
    torch.manual_seed(seed)
    config = GPTConfig(
        vocab_size=vocab_size,
        block_size=block_size,
        n_layer=2,
        n_head=2,
        n_embd=32,
        dropout=dropout,
        position_encoding=position_encoding,
    )
    model = GPT(config)
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() > 1:
                p.mul_(8.0)
    return model.eval()


@pytest.fixture(scope="module")
def model(one_thread) -> GPT:
    return make_model()


@pytest.fixture(scope="module")
def tok() -> CharTokenizer:
    return CharTokenizer.train("the quick brown fox jumps over the lazy dog.\nTHE END!")


@pytest.fixture(scope="module")
def text_model(tok) -> GPT:
    return make_model(vocab_size=tok.vocab_size)


def greedy_reference(model: GPT, prompt: list[int], n: int, keep: int) -> list[int]:
    """Greedy decoding written the slow, obvious way: re-run the whole window at every step."""
    block = model.config.block_size
    ids, start = list(prompt), max(0, len(prompt) - block)
    out = []
    with torch.no_grad():
        for _ in range(n):
            window = ids[start:]
            logits = model(torch.tensor([window])).logits[0, -1]
            t = int(torch.argmax(logits))
            out.append(t)
            ids.append(t)
            if len(ids) - start > block:
                start = len(ids) - keep
    return out


# ----------------------------------------------------------------------------- config validation
@pytest.mark.parametrize(
    "field, value",
    [
        ("temperature", -0.1),
        ("temperature", float("nan")),
        ("temperature", float("inf")),
        ("top_k", 0),
        ("top_k", -3),
        ("top_k", 2.5),
        ("top_p", 0.0),
        ("top_p", 1.5),
        ("top_p", -0.2),
        ("min_p", 1.0),
        ("min_p", -0.1),
        ("typical_p", 0.0),
        ("typical_p", 1.5),
        ("typical_p", float("nan")),
        ("epsilon_cutoff", 1.0),
        ("epsilon_cutoff", -1e-4),
        ("eta_cutoff", 1.0),
        ("eta_cutoff", float("inf")),
        ("repetition_penalty", 0.0),
        ("repetition_penalty", -1.0),
        ("max_new_tokens", -1),
        ("max_new_tokens", True),
        ("no_repeat_ngram_size", -1),
        ("context_keep", 0),
    ],
)
def test_bad_config_values_raise_naming_the_value(field, value):
    with pytest.raises(GenerationError) as info:
        GenerationConfig(**{field: value})
    message = str(info.value)
    assert field in message and repr(value) in message and "allowed" in message


def test_numpy_scalars_are_accepted_and_stored_as_python_values():
    # Values from a numpy grid: np.int64(3) is an integer (it was refused as not one), and the stored
    # values must be plain Python ones, since json.dumps refuses numpy scalars.
    config = GenerationConfig(
        top_k=np.int64(3), temperature=np.float32(0.5), top_p=np.float64(0.9), max_new_tokens=np.int32(7)
    )
    data = dataclasses.asdict(config)
    kinds = {k: type(data[k]) for k in ("top_k", "temperature", "top_p", "max_new_tokens")}
    assert kinds == {"top_k": int, "temperature": float, "top_p": float, "max_new_tokens": int}
    assert GenerationConfig(**json.loads(json.dumps(data))) == config
    assert (config.top_k, config.temperature, config.max_new_tokens) == (3, 0.5, 7)


@pytest.mark.parametrize(
    "options, name",
    [
        (dict(temperature=0, top_k=5), "top_k"),
        (dict(temperature=0.0, top_p=0.5), "top_p"),
        (dict(do_sample=False, min_p=0.1), "min_p"),
        (dict(temperature=0, typical_p=0.9), "typical_p"),
        (dict(temperature=0, epsilon_cutoff=3e-4), "epsilon_cutoff"),
        (dict(do_sample=False, eta_cutoff=3e-4), "eta_cutoff"),
    ],
)
def test_filters_that_greedy_decoding_ignores_are_warned_about(options, name):
    # The CLI refuses these combinations; the Python API warns (the notebook widget and the decoding
    # explorer build such configs from independent controls and must keep working).
    with pytest.warns(UserWarning, match=rf"{name}=.* has no effect with .*greedy"):
        config = GenerationConfig(**options)
    assert config.processors() == []  # ...because greedy decoding really ignores them


def test_the_greedy_filter_warning_points_at_the_callers_line(model):
    """However the config is built (directly, by with_overrides, inside generate), the warning names the
    reader's line, not dataclasses.py or the library."""
    builds = [
        lambda: GenerationConfig(temperature=0, top_k=3),
        lambda: GenerationConfig().with_overrides(temperature=0, top_k=3),
        lambda: generate_ids(model, [1, 2], max_new_tokens=1, temperature=0, top_k=3),
    ]
    for build in builds:
        with pytest.warns(UserWarning, match="has no effect") as caught:
            build()
        assert [w.filename for w in caught] == [__file__]


def test_greedy_with_neutral_filters_or_penalties_and_sampling_with_filters_do_not_warn():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        GenerationConfig(
            temperature=0, top_p=1.0, min_p=0.0, typical_p=1.0, epsilon_cutoff=0.0, eta_cutoff=0.0,
            repetition_penalty=1.3, no_repeat_ngram_size=2,
        )  # fmt: skip
        GenerationConfig(temperature=0.7, top_k=5, top_p=0.9, min_p=0.1, typical_p=0.9, eta_cutoff=3e-4)


@pytest.mark.parametrize("config", [{"temperature": 0}, 5, 0, "greedy"])
def test_a_config_that_is_not_a_generation_config_is_named(model, text_model, tok, config):
    # It used to fail with AttributeError 'with_overrides' (and 0 silently meant the default config).
    pattern = f"config must be a GenerationConfig or None, got {type(config).__name__}"
    with pytest.raises(GenerationError, match=pattern):
        generate(model, [1, 2], config)
    with pytest.raises(GenerationError, match=pattern):
        generate_text(text_model, tok, "the ", config)
    with pytest.raises(GenerationError, match=pattern):
        list(stream_text(text_model, tok, "the ", config))


@pytest.mark.parametrize(
    "prompt, pattern",
    [
        ([], "prompt is an empty list"),
        (b"the", "prompt is of type bytes"),
        (5, "prompt is of type int"),
        (None, "prompt is of type NoneType"),
        (["the ", b"x"], "prompt 1 is of type bytes"),
    ],
)
def test_text_prompts_must_be_a_str_or_a_non_empty_list_of_str(text_model, tok, prompt, pattern):
    with pytest.raises(GenerationError, match=pattern):
        generate_text(text_model, tok, prompt, max_new_tokens=2)
    with pytest.raises(
        GenerationError, match=f"stream_text takes one prompt str, got {type(prompt).__name__}"
    ):
        list(stream_text(text_model, tok, prompt, max_new_tokens=2))


@pytest.mark.parametrize("seed", [2**64, 2**70, -(2**63) - 1])
def test_a_seed_outside_64_bits_is_named(model, text_model, tok, seed):
    # torch would say "Overflow when unpacking long long", after the prompt was already checked.
    pattern = rf"seed={seed} is not allowed: it must be an integer in \[-2\*\*63, 2\*\*64\)"
    with pytest.raises(GenerationError, match=pattern):
        generate(model, [1], seed=seed)
    with pytest.raises(GenerationError, match=pattern):
        generate_text(text_model, tok, "the ", seed=seed, max_new_tokens=2)
    for edge in (2**64 - 1, -(2**63)):  # the ends of the range are seeds
        assert len(generate_ids(model, [1], seed=edge, max_new_tokens=3)) == 3


def test_bad_beam_width_and_context_keep_raise(model):
    with pytest.raises(GenerationError, match="num_beams"):
        beam_search(model, [1, 2], 0, 5)
    with pytest.raises(GenerationError, match="context_keep"):
        list(generate(model, [1, 2], context_keep=BLOCK + 1))


def test_bad_generate_arguments_raise_before_the_first_step(model):
    with pytest.raises(GenerationError, match="temperature"):
        generate(model, [1, 2], temperature=-1)  # not even iterated
    with pytest.raises(GenerationError, match="token id"):
        generate(model, [1, VOCAB])
    with pytest.raises(GenerationError, match="stop_strings"):
        generate(model, [1], stop_strings=["x"])  # no tokenizer to decode with
    with pytest.raises(GenerationError, match="unknown generation option"):
        generate(model, [1], topk=3)


@pytest.mark.parametrize("stop_ids", [True, [True], [2, False]])
def test_a_bool_stop_id_is_refused_not_read_as_token_one_or_zero(model, text_model, tok, stop_ids):
    # bool is an int subclass: without its own check, stop_ids=True would silently stop on token 1.
    with pytest.raises(GenerationError, match="stop_ids"):
        generate(model, [1, 2], stop_ids=stop_ids)
    with pytest.raises(GenerationError, match="stop_ids"):
        generate_text(text_model, tok, "the ", stop_ids=stop_ids)


def test_unencodable_prompt_is_a_clear_tokenizer_error(text_model, tok):
    with pytest.raises(TokenizerError, match="'Z'"):
        generate_text(text_model, tok, "the Zebra", max_new_tokens=3)
    with pytest.raises(TokenizerError, match="--prompt"):
        sample_cli(text_model, tok, prompt="Zebra", max_new_tokens=3, out=io.StringIO())


def test_unencodable_prompt_on_the_command_line_gives_advice_a_cli_user_can_follow(text_model, tok):
    # The tokenizer's own advice (unknown='replace') is a Python option: no flag can act on it, and a
    # trained checkpoint's vocabulary is fixed anyway. The CLI names the characters it does know.
    with pytest.raises(TokenizerError) as info:
        sample_cli(text_model, tok, prompt="the Zebra \u00e9", max_new_tokens=3, out=io.StringIO())
    message = str(info.value)
    assert "--prompt" in message and "'Z'" in message and "'\u00e9'" in message
    assert "replace" not in message
    known = "".join(tok.decode([i]) for i in range(tok.vocab_size))
    assert repr(known) in message


def test_a_bpe_prompt_error_keeps_the_tokenizers_own_reason():
    # Byte-level BPE encodes any text; it refuses only a lone surrogate (an undecodable byte in argv).
    # "Characters this model never saw" with a list of byte symbols would send the user the wrong way.
    bpe = train_tokenizer("bpe", "the cat sat on the mat. " * 20, vocab_size=260)
    model = GPT(GPTConfig(vocab_size=bpe.vocab_size, block_size=16, n_layer=1, n_head=2, n_embd=16))
    with pytest.raises(TokenizerError) as info:
        sample_cli(model, bpe, prompt="cat \udcff", max_new_tokens=3, out=io.StringIO())
    message = str(info.value)
    assert message.startswith("--prompt: ") and "surrogate" in message
    assert "never saw" not in message


def test_arguments_in_the_wrong_order_name_the_call(model, text_model, tok):
    """A model and a tokenizer swapped (or ids passed first) used to end in an AttributeError about
    ``config`` or ``encode`` deep inside; every entry point names the order of its arguments."""
    calls = [
        (lambda: generate_text(tok, text_model, "the"), "generate_text(model, tokenizer, prompt)"),
        (lambda: list(stream_text(tok, text_model, "the")), "stream_text(model, tokenizer, prompt)"),
        (lambda: generate_ids([1, 2], model), "generate(model, prompt_ids, config)"),
        (lambda: beam_search(tok, [1, 2], 2, 3), "beam_search(model, prompt_ids, ...)"),
        (lambda: contrastive_search([1, 2], model, 3), "contrastive_search(model, prompt_ids, ...)"),
        (lambda: score_text(tok, text_model, "the"), "score_text(model, tokenizer, text)"),
        (lambda: score_sequence([1, 2], model), "score_sequence(model, ids)"),
        (lambda: generated_perplexity([1, 2], model), "generated_perplexity(model, sequences)"),
        (lambda: generate_text(text_model, None, "the"), "generate_text(model, tokenizer, prompt)"),
        (lambda: score_text(text_model, "the", tok), "score_text(model, tokenizer, text)"),
        (
            lambda: speculative_generate(tok, text_model, [1]),
            "speculative_generate(model, draft, prompt_ids, config)",
        ),
    ]
    for call, signature in calls:
        with pytest.raises(GenerationError, match="must be a") as info:
            call()
        assert str(info.value).endswith(f"the call is {signature}"), str(info.value)
    with pytest.raises(GenerationError, match="tokenizer must be an arlm_lib tokenizer"):
        generate_ids(model, [1, 2], tokenizer="abc")


# ----------------------------------------------------------------------------- processors
@pytest.mark.parametrize(
    ("make", "field"),
    [
        (lambda: TopK(0), "top_k"),
        (lambda: TopK(2.7), "top_k"),
        (lambda: TopK("3"), "top_k"),
        (lambda: Temperature(0), "temperature"),
        (lambda: Temperature(-1.0), "temperature"),
        (lambda: TopP(0), "top_p"),
        (lambda: TopP(1.5), "top_p"),
        (lambda: MinP(1.0), "min_p"),
        (lambda: MinP(2), "min_p"),
        (lambda: TypicalP(0), "typical_p"),
        (lambda: EpsilonCutoff(1.5), "epsilon_cutoff"),
        (lambda: EtaCutoff(float("nan")), "eta_cutoff"),
        (lambda: RepetitionPenalty(-1.0), "repetition_penalty"),
        (lambda: NoRepeatNGram(-1), "no_repeat_ngram_size"),
        (lambda: VocabLimit(0), "size"),
    ],
)
def test_a_processor_built_by_hand_refuses_a_value_generation_config_refuses(make, field):
    # TopK(0), Temperature(0), MinP(2) and VocabLimit(0) used to turn every row into NaN; Temperature(-1)
    # silently inverted the distribution.
    with pytest.raises(GenerationError, match=f"^{field}=.* is not allowed") as info:
        make()
    assert info.value.field == field


def test_processors_accept_their_neutral_values_and_numpy_scalars():
    logits = torch.randn(1, 6, dtype=torch.float64)
    for processor in (
        TopP(1.0),
        MinP(0.0),
        TypicalP(1.0),
        EpsilonCutoff(0.0),
        EtaCutoff(0),
        TopK(np.int64(9)),
    ):
        assert torch.equal(processor(logits, [[]]), logits)
    assert repr(Temperature(np.float32(0.5))) == "Temperature(0.5)"


def test_top_k_keeps_exactly_k_with_ties_going_to_lower_ids():
    logits = torch.tensor([[1.0, 3.0, 2.0, 3.0, 2.0, 2.0, 0.5]])
    kept = torch.isfinite(TopK(3)(logits, [[]]))[0].tolist()
    # 3.0 at ids 1 and 3, then the 2.0 tie (ids 2, 4, 5) is cut after the lowest id.
    assert kept == [False, True, True, True, False, False, False]
    for k in range(1, 8):
        assert int(torch.isfinite(TopK(k)(logits, [[]])).sum()) == k


def fill_to_mass(probs: Sequence[float], order: Sequence[int], mass: float) -> set[int]:
    """The tokens of ``order``, taken one by one until their probability reaches ``mass``."""
    kept, total = set(), 0.0
    for i in order:
        kept.add(i)
        total += float(probs[i])
        if total >= mass:
            break
    return kept


def brute_force_nucleus(probs: torch.Tensor, p: float) -> set[int]:
    return fill_to_mass(probs, sorted(range(len(probs)), key=lambda i: (-float(probs[i]), i)), p)


def test_top_p_stops_as_soon_as_the_mass_reaches_p_and_breaks_ties_by_id():
    equal = torch.zeros(1, 4, dtype=torch.float64)  # four tokens at exactly 0.25
    assert torch.isfinite(TopP(0.5)(equal, [[]]))[0].tolist() == [True, True, False, False]
    assert torch.isfinite(TopP(0.50001)(equal, [[]]))[0].tolist() == [True, True, True, False]
    assert torch.isfinite(TopP(1.0)(equal, [[]]))[0].all()


def test_min_p_keeps_a_token_exactly_at_the_threshold():
    # Probabilities 4/7, 2/7, 1/7; min_p = 0.5 puts the threshold exactly on the middle token, which is
    # not *below* it and must stay.
    logits = torch.tensor([[0.0, math.log(0.5), math.log(0.25)]], dtype=torch.float64)
    probs = F.softmax(logits, -1)
    assert probs[0, 1] == 0.5 * probs[0, 0]  # the boundary case really is exact
    assert torch.isfinite(MinP(0.5)(logits, [[]]))[0].tolist() == [True, True, False]


def test_min_p_threshold_scales_with_the_top_probability():
    # A token at 5% survives min_p=0.3 when the top token has 10% (threshold 3%), not when it has 90%.
    flat = torch.tensor([[0.10] * 9 + [0.05, 0.05]]).log()
    peaked = torch.tensor([[0.90, 0.05, 0.05]]).log()
    assert torch.isfinite(MinP(0.3)(flat, [[]]))[0].all()
    assert torch.isfinite(MinP(0.3)(peaked, [[]]))[0].tolist() == [True, False, False]
    gen = torch.Generator().manual_seed(1)
    logits = torch.randn(10, 25, generator=gen, dtype=torch.float64) * 3
    probs = F.softmax(logits, dim=-1)
    kept = torch.isfinite(MinP(0.2)(logits, [[]] * 10))
    assert torch.equal(kept, probs >= 0.2 * probs.amax(dim=-1, keepdim=True))


def brute_force_typical(probs: torch.Tensor, mass: float) -> set[int]:
    """Meister et al.'s set, written out: rank by |surprisal - entropy| (ties: lower id), fill to mass."""
    p = [float(x) for x in probs]
    entropy = -sum(x * math.log(x) for x in p if x > 0)
    order = sorted((i for i in range(len(p)) if p[i] > 0), key=lambda i: (abs(-math.log(p[i]) - entropy), i))
    return fill_to_mass(p, order, mass)


@pytest.mark.parametrize("mass", [1e-9, 0.1, 0.2, 0.5, 0.9, 0.99])
@pytest.mark.parametrize(
    "processor, brute_force",
    [(TopP, brute_force_nucleus), (TypicalP, brute_force_typical)],
    ids=["top-p", "typical"],
)
def test_mass_filters_keep_the_shortest_ranked_set_reaching_the_mass(processor, brute_force, mass):
    """Top-p ranks by probability, typical sampling by |surprisal - entropy|; both fill to the mass."""
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(20, 30, generator=gen, dtype=torch.float64) * 2
    out = processor(mass)(logits, [[]] * 20)
    probs = F.softmax(logits, dim=-1)
    for row in range(20):
        kept = set(torch.nonzero(torch.isfinite(out[row])).flatten().tolist())
        assert kept == brute_force(probs[row], mass)
        assert probs[row, sorted(kept)].sum() >= mass - 1e-12


def test_typical_p_can_drop_the_most_likely_token_where_top_p_keeps_it():
    # One token at 0.3, six at 0.1 and a tail of 100 at 0.001: the entropy is about 2.43 nats, the six
    # middle tokens have surprisal 2.30 (typical) and the favourite 1.20 (atypically unsurprising).
    probs = torch.tensor([[0.3] + [0.1] * 6 + [0.001] * 100], dtype=torch.float64)
    kept = torch.isfinite(TypicalP(0.45)(probs.log(), [[]]))[0]
    assert kept.nonzero().flatten().tolist() == [1, 2, 3, 4, 5]  # 5 x 0.1 passes 0.45; not token 0
    assert torch.isfinite(TopP(0.45)(probs.log(), [[]]))[0, 0]


def test_typical_p_ignores_tokens_an_earlier_filter_removed():
    # The entropy is that of what is left: after top-k the same 4 tokens must give the same set as
    # those 4 tokens alone (a bug that counted the removed ones as probability 0 in H would differ).
    gen = torch.Generator().manual_seed(5)
    logits = torch.randn(6, 12, generator=gen, dtype=torch.float64) * 2
    filtered = TypicalP(0.6)(TopK(4)(logits, [[]] * 6), [[]] * 6)
    for row in range(6):
        top4 = logits[row].topk(4).indices.sort().values
        alone = TypicalP(0.6)(logits[row, top4].unsqueeze(0), [[]])[0]
        assert (
            torch.isfinite(filtered[row]).nonzero().flatten().tolist() == top4[torch.isfinite(alone)].tolist()
        )
    equal = torch.zeros(1, 4, dtype=torch.float64)  # every token equally typical: ids break the tie
    assert torch.isfinite(TypicalP(0.5)(equal, [[]]))[0].tolist() == [True, True, False, False]


def test_epsilon_cutoff_drops_tokens_below_epsilon_but_never_the_most_likely():
    peaked = torch.tensor([[0.9, 0.05, 0.03, 0.02]], dtype=torch.float64).log()
    assert torch.isfinite(EpsilonCutoff(0.04)(peaked, [[]]))[0].tolist() == [True, True, False, False]
    flat = torch.zeros(1, 100, dtype=torch.float64)  # 0.01 each, all below 0.05, all tied for first
    assert torch.isfinite(EpsilonCutoff(0.05)(flat, [[]])).all()
    lonely = torch.tensor([[0.04, 0.03] + [0.93 / 50] * 50], dtype=torch.float64).log()
    assert torch.isfinite(EpsilonCutoff(0.5)(lonely, [[]]))[0].tolist() == [True] + [False] * 51


def test_eta_cutoff_threshold_falls_as_the_entropy_rises():
    eta = 0.01  # threshold min(0.01, 0.1 * exp(-H))
    gen = torch.Generator().manual_seed(6)
    logits = torch.randn(10, 40, generator=gen, dtype=torch.float64) * 3
    probs = F.softmax(logits, dim=-1)
    entropy = -(probs * probs.log()).sum(-1, keepdim=True)
    threshold = torch.minimum(torch.full_like(entropy, eta), math.sqrt(eta) * torch.exp(-entropy))
    expected = (probs >= threshold) | (probs == probs.amax(-1, keepdim=True))
    assert torch.equal(torch.isfinite(EtaCutoff(eta)(logits, [[]] * 10)), expected)
    # A token at 0.005 survives in a flat distribution (H = ln 200, threshold 0.0005) and not in a
    # peaked one (H = 0.13 nats, threshold 0.01), where epsilon sampling would drop it either way.
    flat = torch.full((1, 200), 0.005, dtype=torch.float64).log()
    peaked = torch.tensor([[0.99, 0.005, 0.005]], dtype=torch.float64).log()
    assert torch.isfinite(EtaCutoff(eta)(flat, [[]])).all()
    assert torch.isfinite(EtaCutoff(eta)(peaked, [[]]))[0].tolist() == [True, False, False]
    assert not torch.isfinite(EpsilonCutoff(eta)(flat[:, :3] + torch.tensor([[5.0, 0, 0]]), [[]]))[
        0, 1:
    ].any()


def test_a_mass_of_one_keeps_every_token_even_where_the_sum_rounds_to_one():
    # Tokens 60 nats below the favourite have probability ~1e-26: added to it in float64 they change
    # nothing, so the running sum is exactly 1.0 before them. A mass of 1 means "off" (documented), not
    # "the prefix whose sum rounds to 1", so every token must stay, for top-p and typical alike.
    logits = torch.tensor([[0.0] + [-60.0] * 5], dtype=torch.float64)
    assert F.softmax(logits, -1)[0, 0] == 1.0  # the favourite alone already sums to 1.0
    assert torch.equal(TypicalP(1.0)(logits, [[]]), logits)
    assert torch.equal(TopP(1.0)(logits, [[]]), logits)


def test_mass_filters_break_even_a_long_tie_by_token_id():
    # 200 equally likely tokens are equally typical (and equally probable): the set is the lowest ids.
    # An unstable sort keeps a handful of ties in id order (the 4 tokens above) but scrambles ~100+.
    # Mass 0.4975 lies between 99 x 0.005 and 100 x 0.005, so exactly 100 tokens are needed.
    equal = torch.zeros(1, 200, dtype=torch.float64)
    for processor in (TypicalP(0.4975), TopP(0.4975)):
        kept = torch.isfinite(processor(equal, [[]]))[0]
        assert kept.tolist() == [True] * 100 + [False] * 100, processor


def test_epsilon_cutoff_keeps_a_token_exactly_at_epsilon():
    # Only tokens strictly *below* epsilon go (Hewitt et al.; Hugging Face's probs < epsilon): take
    # epsilon to be exactly the probability the processor computes for token 1, which must then stay.
    logits = torch.tensor([[2.0, 1.0, 0.5, -1.0]], dtype=torch.float64)
    epsilon = float(F.softmax(logits, dim=-1)[0, 1])
    assert torch.isfinite(EpsilonCutoff(epsilon)(logits, [[]]))[0].tolist() == [True, True, False, False]


def test_repetition_penalty_divides_positive_and_multiplies_negative_seen_logits():
    logits = torch.tensor([[2.0, -2.0, 2.0, -2.0]])
    out = RepetitionPenalty(2.0)(logits, [[0, 1, 1]])
    assert out.tolist() == [[1.0, -4.0, 2.0, -2.0]]


def test_penalties_use_each_rows_own_history():
    """A token seen in one row (or beam) must not be penalised in another."""
    out = RepetitionPenalty(2.0)(torch.full((2, 4), 2.0), [[0], [3]])
    assert out.tolist() == [[1.0, 2.0, 2.0, 2.0], [2.0, 2.0, 2.0, 1.0]]
    model = make_model()
    prompts = [[3, 4, 5], [1], [7, 8, 9, 10, 11, 12, 13]]
    for penalty in (dict(repetition_penalty=1.8), dict(no_repeat_ngram_size=2)):
        batched = generate_ids(model, prompts, temperature=0, max_new_tokens=30, **penalty)
        assert batched == [
            generate_ids(model, p, temperature=0, max_new_tokens=30, **penalty) for p in prompts
        ]


def test_sample_cli_beam_prints_the_penalised_beam_search():
    """``sample --beam N`` passes the penalties on: its text is the penalised beam, not the plain one."""
    tok = CharTokenizer.train("the quick brown fox jumps over the lazy dog.\nTHE END!")
    model = make_model(tok.vocab_size)
    prompt = tok.encode("the ")
    for penalties, flags in (
        (dict(repetition_penalty=3.0), dict(repetition_penalty=3.0)),
        (dict(no_repeat_ngram_size=1), dict(no_repeat_ngram=1)),
    ):
        expected = beam_search(model, prompt, 2, 20, tokenizer=tok, **penalties)[0].ids
        assert expected != beam_search(model, prompt, 2, 20, tokenizer=tok)[0].ids  # the penalty acts here
        out = io.StringIO()
        sample_cli(model, tok, prompt="the ", max_new_tokens=20, beam=2, out=out, **flags)
        assert out.getvalue() == "the " + tok.decode(expected) + "\n"


def test_no_repeat_ngram_bans_completions_and_never_bans_everything():
    history = [5, 6, 7, 5, 6]  # the bigram (5, 6) was followed by 7; 6 is the last token
    out = NoRepeatNGram(3)(torch.zeros(1, 10), [history])
    assert torch.isinf(out[0, 7]) and torch.isfinite(out[0]).sum() == 9
    out = NoRepeatNGram(2)(torch.zeros(1, 10), [history])  # after 6 came 7: ban 7
    assert torch.isfinite(out[0]).tolist() == [i != 7 for i in range(10)]
    everything = NoRepeatNGram(1)(torch.zeros(1, 3), [[0, 1, 2]])  # every token used: lift the ban
    assert torch.isfinite(everything).all()


def test_temperature_to_zero_is_argmax():
    gen = torch.Generator().manual_seed(2)
    logits = torch.randn(8, 40, generator=gen)
    probs = processed_probs(logits, [[]] * 8, [Temperature(1e-4)])
    assert torch.equal(probs.argmax(-1), logits.argmax(-1))
    assert torch.allclose(probs.max(-1).values, torch.ones(8, dtype=probs.dtype))


def test_processor_order_is_the_documented_one():
    config = GenerationConfig(
        temperature=0.7, top_k=5, top_p=0.9, min_p=0.1, typical_p=0.9, epsilon_cutoff=3e-4,
        eta_cutoff=3e-4, repetition_penalty=1.3, no_repeat_ngram_size=2,
    )  # fmt: skip
    kinds = [type(p) for p in config.processors()]
    assert kinds == [
        RepetitionPenalty, NoRepeatNGram, Temperature, TopK, TopP, MinP, TypicalP, EpsilonCutoff, EtaCutoff
    ]  # fmt: skip
    with pytest.warns(UserWarning, match="top_k=5 has no effect"):
        greedy = GenerationConfig(temperature=0, top_k=5, repetition_penalty=1.3)
    assert [type(p) for p in greedy.processors()] == [RepetitionPenalty]


def test_neutral_filter_values_add_no_processor():
    # None and the neutral value both mean "off": neither may add a processor (a TypicalP(1.0) would be
    # a useless step at every token, and would show in the list that a reader inspects).
    neutral = GenerationConfig(
        temperature=0.7, top_p=1.0, min_p=0.0, typical_p=1.0, epsilon_cutoff=0.0, eta_cutoff=0.0
    )
    assert [type(p) for p in neutral.processors()] == [Temperature]


def test_vocab_limit_removes_exactly_the_ids_past_the_limit():
    logits = torch.tensor([[1.0, 3.0, 2.0, 9.0, 8.0]], dtype=torch.float64)
    assert torch.isfinite(VocabLimit(3)(logits, [[]]))[0].tolist() == [True, True, True, False, False]
    assert torch.equal(VocabLimit(5)(logits, [[]]), logits)


finite_floats = st.floats(allow_nan=False, allow_infinity=False, width=32)  # the whole float32 range


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    logits=st.lists(finite_floats, min_size=1, max_size=24),
    history=st.lists(st.integers(min_value=0, max_value=23), max_size=12),
    temperature=st.floats(min_value=0.0, allow_nan=False, allow_infinity=False),
    top_k=st.one_of(st.none(), st.integers(min_value=1, max_value=30)),
    top_p=st.one_of(st.none(), st.floats(min_value=0.0, max_value=1.0, exclude_min=True)),
    min_p=st.one_of(st.none(), st.floats(min_value=0.0, max_value=1.0, exclude_max=True)),
    typical_p=st.one_of(st.none(), st.floats(min_value=0.0, max_value=1.0, exclude_min=True)),
    cutoffs=st.tuples(*[st.one_of(st.none(), st.floats(min_value=0.0, max_value=1.0, exclude_max=True))] * 2),
    penalty=st.floats(min_value=0.0, exclude_min=True, allow_nan=False, allow_infinity=False),
    ngram=st.integers(min_value=0, max_value=5),
)
def test_processed_distribution_is_always_valid(
    logits, history, temperature, top_k, top_p, min_p, typical_p, cutoffs, penalty, ngram
):
    """For any finite logits and any valid parameters: non-negative, sums to 1, at least one token."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # temperature 0 with a filter: tested above
        config = GenerationConfig(
            temperature=temperature,
            top_k=top_k,
            top_p=top_p,
            min_p=min_p,
            typical_p=typical_p,
            epsilon_cutoff=cutoffs[0],
            eta_cutoff=cutoffs[1],
            repetition_penalty=penalty,
            no_repeat_ngram_size=ngram,
        )
    x = torch.tensor([logits], dtype=torch.float32)
    hist = [[t for t in history if t < x.size(1)]]
    probs = processed_probs(x, hist, config.processors())
    assert torch.isfinite(probs).all()
    assert (probs >= 0).all()
    assert abs(float(probs.sum()) - 1.0) < 1e-5
    assert int((probs > 0).sum()) >= 1
    if top_k is not None and not config.greedy:
        assert int((probs > 0).sum()) <= top_k


# ----------------------------------------------------------------------------- generation
def test_cache_and_no_cache_give_the_same_tokens(model):
    n = 70  # prompt + 70 new tokens is more than twice the 32-token context: several cuts
    for kwargs in (dict(temperature=0), dict(seed=7), dict(seed=3, temperature=0.8, top_k=10, top_p=0.9)):
        with_cache = generate_ids(model, PROMPTS, max_new_tokens=n, use_cache=True, **kwargs)
        without = generate_ids(model, PROMPTS, max_new_tokens=n, use_cache=False, **kwargs)
        assert with_cache == without
        assert all(len(row) == n for row in with_cache)


@pytest.mark.parametrize("keep", [1, 5, 16, BLOCK])
def test_past_context_policy_matches_the_slow_reference(model, keep):
    # Not [2, 9, 4, 1, 6]: from there greedy repeats one token whatever the window, so a wrong keep
    # would go unseen. From this prompt each keep gives a different text.
    prompt = PROMPTS[2]
    expected = greedy_reference(model, prompt, 60, keep)
    for use_cache in (True, False):
        got = generate_ids(
            model, prompt, temperature=0, max_new_tokens=60, context_keep=keep, use_cache=use_cache
        )
        assert got == expected


def test_default_keep_is_half_the_block(model):
    prompt = [2, 9, 4]
    assert generate_ids(model, prompt, temperature=0, max_new_tokens=50) == greedy_reference(
        model, prompt, 50, BLOCK // 2
    )


def test_batched_generation_equals_one_by_one(model):
    batched = generate_ids(model, PROMPTS, temperature=0, max_new_tokens=45)
    single = [generate_ids(model, p, temperature=0, max_new_tokens=45) for p in PROMPTS]
    assert batched == single
    # The same with rows that stop at different times (stop ids), so rows leave the batch mid-way.
    stop = {single[0][5], single[2][9]}
    batched = generate_ids(model, PROMPTS, temperature=0, max_new_tokens=45, stop_ids=stop)
    assert batched == [
        generate_ids(model, p, temperature=0, max_new_tokens=45, stop_ids=stop) for p in PROMPTS
    ]


def test_a_rope_model_decodes_alike_with_and_without_cache_in_a_batch_and_past_its_context():
    """RoPE turns the cached keys by the positions they were written at: the cache, left padding in a
    batch and the re-encoded windows past the context must all give the slow reference's tokens."""
    rope = make_model(position_encoding="rope", seed=2)
    for keep in (5, BLOCK // 2):
        expected = [greedy_reference(rope, p, 70, keep) for p in PROMPTS]
        for use_cache in (True, False):
            got = generate_ids(
                rope, PROMPTS, temperature=0, max_new_tokens=70, context_keep=keep, use_cache=use_cache
            )
            assert got == expected, (keep, use_cache)
    sampled = dict(max_new_tokens=50, seed=4, temperature=0.9)
    assert generate_ids(rope, PROMPTS, **sampled) == generate_ids(rope, PROMPTS, use_cache=False, **sampled)


def test_prompts_as_tensors_and_zero_new_tokens(model):
    as_lists = generate_ids(model, [[1, 2, 3], [4, 5, 6]], temperature=0, max_new_tokens=6)
    assert (
        generate_ids(model, torch.tensor([[1, 2, 3], [4, 5, 6]]), temperature=0, max_new_tokens=6) == as_lists
    )
    assert generate_ids(model, torch.tensor([1, 2, 3]), temperature=0, max_new_tokens=6) == as_lists[0]
    assert generate_ids(model, [1, 2, 3], max_new_tokens=0) == []
    assert generate_ids(model, [[1], [2]], max_new_tokens=0) == [[], []]
    assert beam_search(model, [1, 2], 3, 0) == [([], 0.0)]


def test_greedy_equals_argmax_and_temperature_zero_equals_do_sample_false(model):
    greedy = generate_ids(model, PROMPTS[0], temperature=0, max_new_tokens=20)
    assert greedy == generate_ids(model, PROMPTS[0], do_sample=False, temperature=1.3, max_new_tokens=20)
    assert greedy == greedy_reference(model, PROMPTS[0], 20, BLOCK // 2)
    tiny_t = generate_ids(model, PROMPTS[0], temperature=1e-5, max_new_tokens=20, seed=0)
    assert tiny_t == greedy


def test_seeded_sampling_reproduces_and_seeds_differ(model):
    a = generate_ids(model, PROMPTS, max_new_tokens=30, seed=11)
    assert a == generate_ids(model, PROMPTS, max_new_tokens=30, seed=11)
    assert a != generate_ids(model, PROMPTS, max_new_tokens=30, seed=12)
    gen = torch.Generator().manual_seed(11)
    assert a == generate_ids(model, PROMPTS, max_new_tokens=30, seed=gen)


def test_sampled_tokens_follow_the_processed_distribution(model):
    """Reproducible is not enough: the draws must come from softmax(logits / T) cut to the top k. 4000
    rows of the same prompt each draw one token; every frequency lies within 5 standard errors of the
    distribution computed here from the logits (the test is seeded, so it cannot flake)."""
    n, temperature, k = 4000, 0.5, 6
    with torch.no_grad():
        logits = model(torch.tensor([PROMPTS[0]])).logits[0, -1].double()
    target = F.softmax(logits / temperature, -1)
    top = torch.topk(target, k).indices
    target = torch.zeros_like(target).index_put_((top,), target[top])
    target /= target.sum()
    assert target.max() < 0.6 and (target > 0.02).sum() >= 3  # several plausible tokens: a real test

    (step,) = generate(model, [PROMPTS[0]] * n, max_new_tokens=1, seed=0, temperature=temperature, top_k=k)
    drawn = torch.tensor([t.token_id for t in step.tokens])
    freq = torch.bincount(drawn, minlength=VOCAB).double() / n
    stderr = (target * (1 - target) / n).sqrt()
    assert torch.all((freq - target).abs() <= 5 * stderr + 1e-12), (freq[top], target[top])
    assert all(t.prob == pytest.approx(float(target[t.token_id]), rel=1e-6) for t in step.tokens[:50])


def test_steps_report_processed_and_raw_probabilities(model):
    steps = list(
        generate(model, PROMPTS[0], max_new_tokens=12, seed=4, temperature=0.5, top_k=3, return_top=3)
    )
    ids = list(PROMPTS[0])
    for step in steps:
        tok = step.tokens[0]
        with torch.no_grad():
            logits = model(torch.tensor([ids])).logits[0, -1]
        raw = F.softmax(logits, -1)
        processed = F.softmax(logits / 0.5, -1)
        top3 = torch.topk(processed, 3)
        processed = torch.where(processed >= top3.values[-1], processed, 0) / top3.values.sum()
        assert tok.raw_prob == pytest.approx(float(raw[tok.token_id]), rel=1e-4)
        assert tok.logprob == pytest.approx(math.log(tok.raw_prob), abs=1e-5)
        assert tok.prob == pytest.approx(float(processed[tok.token_id]), rel=1e-4)
        assert [t for t, _ in tok.top] == top3.indices.tolist()
        assert tok.token_id in [t for t, _ in tok.top]
        assert [p for _, p in tok.top_raw] == sorted((p for _, p in tok.top_raw), reverse=True)
        ids.append(tok.token_id)
    assert steps[-1].tokens[0].finish_reason == "length" and steps[-1].finished


@pytest.mark.parametrize("penalty", [1.0, 1.8])
def test_greedy_steps_report_the_penalised_softmax_not_a_one_hot(model, penalty):
    """Greedy decoding takes the argmax, but the reported ``prob`` and ``top`` are those of the
    distribution after the penalties only (softmax of the penalised logits): a one-hot would report
    1.0 for every token and list only the chosen one."""
    ids = list(PROMPTS[0])
    steps = list(
        generate(model, ids, temperature=0, repetition_penalty=penalty, max_new_tokens=12, return_top=3)
    )
    for step in steps:
        tok = step.tokens[0]
        with torch.no_grad():
            logits = model(torch.tensor([ids])).logits[0, -1].double()
        seen = torch.tensor(sorted(set(ids)))
        penalised = logits.clone()
        penalised[seen] = torch.where(logits[seen] > 0, logits[seen] / penalty, logits[seen] * penalty)
        probs = F.softmax(penalised, -1)
        top3 = torch.topk(probs, 3)
        assert tok.token_id == int(top3.indices[0])
        assert tok.prob == pytest.approx(float(probs[tok.token_id]), rel=1e-5)
        assert tok.prob < 0.999  # a real distribution here, so a one-hot could not pass the line above
        assert len(tok.top) == 3
        assert [t for t, _ in tok.top] == top3.indices.tolist()
        assert [p for _, p in tok.top] == pytest.approx(top3.values.tolist(), rel=1e-5)
        assert tok.raw_prob == pytest.approx(float(F.softmax(logits, -1)[tok.token_id]), rel=1e-4)
        ids.append(tok.token_id)


@pytest.mark.parametrize(
    "filters", [{"top_k": 3}, {"top_p": 1e-9}, {"min_p": 0.5}, {"typical_p": 0.2}, {"epsilon_cutoff": 0.2}]
)
def test_return_top_lists_only_tokens_that_could_have_been_drawn(model, filters):
    # A token a filter removed has probability 0: listing it among the "top alternatives" would
    # claim the sampler might have picked it.
    for step in generate(model, PROMPTS, max_new_tokens=6, seed=2, return_top=10, **filters):
        for tok in step.tokens:
            assert all(p > 0 for _, p in tok.top), tok.top
            assert sum(p for _, p in tok.top) == pytest.approx(1.0)  # all the survivors fit in 10
            assert tok.token_id in [t for t, _ in tok.top]
            assert len(tok.top_raw) == 10  # the model's own distribution has no zeros to drop


def test_finished_sequences_stop_and_report_none(model):
    first = generate_ids(model, PROMPTS, temperature=0, max_new_tokens=20)
    stop = first[1][2]
    steps = list(generate(model, PROMPTS, temperature=0, max_new_tokens=20, stop_ids=[stop]))
    row1 = [s.tokens[1] for s in steps]
    end = next(i for i, t in enumerate(row1) if t is not None and t.token_id == stop)
    assert row1[end].finish_reason == "stop_id"
    assert all(t is None for t in row1[end + 1 :])


def test_a_list_of_scalar_tensors_is_one_prompt(model):
    """``list(torch.tensor([1, 2, 3]))`` holds 0-d tensors: one prompt of three tokens, not a batch."""
    prompt = torch.tensor([1, 2, 3])
    expected = generate_ids(model, [1, 2, 3], temperature=0, max_new_tokens=4)
    assert generate_ids(model, list(prompt), temperature=0, max_new_tokens=4) == expected
    assert score_sequence(model, list(prompt)) == pytest.approx(score_sequence(model, [1, 2, 3]))


def test_a_2d_numpy_array_is_a_batch_like_a_2d_tensor(model):
    batch = np.array([[1, 2, 3], [4, 5, 6]])
    expected = generate_ids(model, batch.tolist(), temperature=0, max_new_tokens=5)
    assert generate_ids(model, batch, temperature=0, max_new_tokens=5) == expected  # was one "prompt"
    assert generate_ids(model, list(batch), temperature=0, max_new_tokens=5) == expected
    assert generate_ids(model, batch[1], temperature=0, max_new_tokens=5) == expected[1]
    with pytest.raises(GenerationError, match="token id 1.5"):
        generate_ids(model, np.array([1.5, 2.0]), max_new_tokens=2)


def test_a_tokenizer_with_more_ids_than_the_model_is_refused_up_front(tok):
    small = make_model(vocab_size=tok.vocab_size - 1)  # another model's tokenizer
    pattern = rf"tokenizer has {tok.vocab_size} ids, the model's vocabulary only {tok.vocab_size - 1}"
    calls = {
        "generate_text": lambda: generate_text(small, tok, "the ", max_new_tokens=3),
        "stream_text": lambda: list(stream_text(small, tok, "the ", max_new_tokens=3)),
        "generate": lambda: generate(small, [1, 2], tokenizer=tok),
        "beam_search": lambda: beam_search(small, [1, 2], 2, 3, tokenizer=tok),
        "contrastive_search": lambda: contrastive_search(small, [1, 2], 3, tokenizer=tok),
    }
    for call in calls.values():
        with pytest.raises(GenerationError, match=pattern):
            call()


def test_ids_past_a_smaller_tokenizer_are_never_generated(model, tok):
    """A model vocabulary padded past its tokenizer's (40 rows, 35 ids): the padding is never chosen."""
    n = tok.vocab_size
    assert n < VOCAB

    def favour_padding(module, args, output):  # make the padding rows the most likely tokens
        output.logits[..., n:] += 50.0
        return output

    handle = model.register_forward_hook(favour_padding)
    try:
        # Without the tokenizer, nothing says those rows are padding: they win (the hook works).
        assert min(generate_ids(model, [1, 2], temperature=0, max_new_tokens=5)) >= n
        sampling = [dict(temperature=0), dict(seed=0), dict(seed=1, top_p=0.9), dict(seed=2, min_p=0.5),
                    dict(seed=3, top_k=3), dict(temperature=0, no_repeat_ngram_size=1)]  # fmt: skip
        for use_cache in (True, False):
            for options in sampling:
                kw = dict(use_cache=use_cache, max_new_tokens=20, **options)
                for step in generate(model, [1, 2], tokenizer=tok, return_top=VOCAB, **kw):
                    t = step.tokens[0]
                    assert t.token_id < n, (use_cache, options)
                    assert max(i for i, _ in t.top) < n and max(i for i, _ in t.top_raw) < n
                    assert sum(p for _, p in t.top) == pytest.approx(1.0)  # none of the mass on padding
                    assert len(t.top_raw) == n
                assert len(generate_text(model, tok, "the ", **kw)) == 20  # decodable: one char per id
        for h in beam_search(model, [1, 2], 3, 10, tokenizer=tok):
            assert max(h.ids) < n
        # Every token a candidate: the padding (probability 0 once limited) must not even be one.
        assert max(contrastive_search(model, [1, 2], 10, top_k=VOCAB)) >= n  # the hook works here too
        for use_cache in (True, False):
            assert (
                max(contrastive_search(model, [1, 2], 10, top_k=VOCAB, tokenizer=tok, use_cache=use_cache))
                < n
            )
    finally:
        handle.remove()


def test_empty_prompt_starts_from_bos(model, tok, text_model):
    assert generate_ids(model, [], temperature=0, max_new_tokens=10, bos_id=7) == generate_ids(
        model, [7], temperature=0, max_new_tokens=10
    )
    text = generate_text(text_model, tok, "", temperature=0, max_new_tokens=10)
    assert text == tok.decode(generate_ids(text_model, [tok.bos_id], temperature=0, max_new_tokens=10))
    # The searches too: the tokenizer's bos_id is the default start token.
    assert contrastive_search(text_model, [], 10, tokenizer=tok) == contrastive_search(
        text_model, [tok.bos_id], 10
    )
    assert beam_search(text_model, [], 2, 10, tokenizer=tok) == beam_search(text_model, [tok.bos_id], 2, 10)
    with pytest.raises(GenerationError, match="empty prompt"):
        generate(model, [])


@pytest.mark.parametrize("bos_id", [-1, "vocab", True, 2.0, "7"])
def test_a_bos_id_outside_the_vocabulary_is_refused_up_front(model, bos_id):
    bad = model.config.vocab_size if bos_id == "vocab" else bos_id
    with pytest.raises(GenerationError, match=f"bos_id {bad!r} is not a token id"):
        generate_ids(model, [], temperature=0, max_new_tokens=3, bos_id=bad)
    with pytest.raises(GenerationError, match="bos_id"):
        beam_search(model, [], num_beams=2, max_new_tokens=3, bos_id=bad)


def test_long_prompt_is_cropped_from_the_left_with_a_warning(model):
    long_prompt = [(i * 7) % VOCAB for i in range(BLOCK + 9)]
    with pytest.warns(UserWarning, match="cropped"):
        got = generate_ids(model, long_prompt, temperature=0, max_new_tokens=10)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert got == generate_ids(model, long_prompt[-BLOCK:], temperature=0, max_new_tokens=10)


def test_messages_name_a_prompt_by_its_row_only_in_a_batch_of_several(model):
    """The command line's one prompt was called "prompt 0"; a batch's prompts keep their Python index."""
    long_prompt = [(i * 7) % VOCAB for i in range(BLOCK + 9)]
    with pytest.warns(UserWarning, match=rf"^the prompt has {BLOCK + 9} tokens"):
        generate_ids(model, [long_prompt], temperature=0, max_new_tokens=1)
    with pytest.warns(UserWarning, match=rf"^prompt 1 has {BLOCK + 9} tokens"):
        generate_ids(model, [[1, 2], long_prompt], temperature=0, max_new_tokens=1)
    with pytest.raises(GenerationError, match=rf"^the prompt has token id {VOCAB}:"):
        generate_ids(model, [1, VOCAB], temperature=0, max_new_tokens=1)
    with pytest.raises(GenerationError, match=r"^prompt 1 has token id -1:"):
        generate_ids(model, [[1], [2, -1]], temperature=0, max_new_tokens=1)


def test_the_text_ends_before_the_earliest_stop_string(text_model, tok):
    kw = dict(seed=5, max_new_tokens=25)
    full = generate_text(text_model, tok, "the ", **kw)
    # A character that has not occurred before: both stop strings below first appear at that step.
    i = next(i for i in range(2, len(full) - 1) if full[i + 1] not in full[: i + 1])
    pair, single = full[i : i + 2], full[i + 1]
    for stops in ([pair, single], [single, pair]):  # the earliest one wins, whatever the order
        assert generate_text(text_model, tok, "the ", stop_strings=stops, **kw) == full[:i]
        assert "".join(stream_text(text_model, tok, "the ", stop_strings=stops, **kw)) == full[:i]
    steps = list(generate(text_model, tok.encode("the "), stop_strings=[pair], tokenizer=tok, **kw))
    assert steps[-1].tokens[0].finish_reason == "stop_string"
    assert tok.decode([s.tokens[0].token_id for s in steps]) == full[: i + 2]  # emitted up to the stop


def test_a_stop_string_at_the_very_start_of_the_continuation_leaves_no_text(text_model, tok):
    # The first new character is itself a stop string: it sits at offset 0 of the continuation, which
    # is a match like any other (find() returns 0, not -1), so nothing at all is returned or streamed.
    kw = dict(seed=5, max_new_tokens=25)
    full = generate_text(text_model, tok, "the ", **kw)
    assert generate_text(text_model, tok, "the ", stop_strings=[full[0]], **kw) == ""
    assert list(stream_text(text_model, tok, "the ", stop_strings=[full[:2]], **kw)) == []
    steps = list(generate(text_model, tok.encode("the "), stop_strings=[full[0]], tokenizer=tok, **kw))
    assert len(steps) == 1 and steps[0].tokens[0].finish_reason == "stop_string"


def test_a_stop_string_in_the_prompt_does_not_stop_the_generation(text_model, tok):
    # Stop strings are looked for in the generated text only: the prompt "the " holds "he", which
    # must not end the continuation at its first token (only an "he" the model writes does).
    kw = dict(seed=5, max_new_tokens=25)
    full = generate_text(text_model, tok, "the ", **kw)
    expected = full.split("he")[0]
    assert len(expected) >= 2  # the model does not write "he" at once: the prompt's would end it early
    assert generate_text(text_model, tok, "the ", stop_strings=["he"], **kw) == expected
    assert "".join(stream_text(text_model, tok, "the ", stop_strings=["he"], **kw)) == expected
    steps = list(generate(text_model, tok.encode("the "), stop_strings=["he"], tokenizer=tok, **kw))
    assert len(steps) == (len(full) if expected == full else len(expected) + 2)


def test_stream_text_holds_back_what_may_become_a_stop_string(text_model, tok):
    kw = dict(seed=5, max_new_tokens=25)
    full = generate_text(text_model, tok, "the ", **kw)
    stop = full[6:9]  # three characters: the first two must not be shown before the third decides
    expected = full[: full.index(stop)]
    pieces = list(stream_text(text_model, tok, "the ", stop_strings=[stop], **kw))
    assert "".join(pieces) == expected == generate_text(text_model, tok, "the ", stop_strings=[stop], **kw)


def test_a_stop_token_ends_the_text_and_is_not_part_of_it(text_model, tok):
    kw = dict(seed=5, max_new_tokens=25)
    full = generate_text(text_model, tok, "the ", **kw)
    i = next(i for i in range(1, len(full)) if full[i] not in full[:i])
    stop_id = tok.encode(full[i])[0]
    assert generate_text(text_model, tok, "the ", stop_ids=[stop_id], **kw) == full[:i]
    assert "".join(stream_text(text_model, tok, "the ", stop_ids=[stop_id], **kw)) == full[:i]


def test_stream_text_joins_to_generate_text(text_model, tok):
    full = generate_text(text_model, tok, "the ", max_new_tokens=30, seed=5)
    stop = full[-10:-8]  # met late in the text, after pieces were already shown
    assert full.index(stop) > 5
    for kwargs in (dict(seed=5), dict(seed=5, stop_strings=[stop])):
        pieces = list(stream_text(text_model, tok, "the ", max_new_tokens=30, **kwargs))
        assert "".join(pieces) == generate_text(text_model, tok, "the ", max_new_tokens=30, **kwargs)
        assert len(pieces) > 1
    assert "".join(pieces) == full[: full.index(stop)]


def test_stream_text_sends_the_held_back_tail_when_the_length_limit_ends_the_text(text_model, tok):
    """The last character begins a stop string that never completes: held back while the stop might
    still come, it must be sent once max_new_tokens ends the generation (else it is silently lost)."""
    kw = dict(seed=5, max_new_tokens=25)
    full = generate_text(text_model, tok, "the ", **kw)
    stop = full[-1] + "#"  # "#" is not in the tokenizer's alphabet: this stop string never matches
    assert generate_text(text_model, tok, "the ", stop_strings=[stop], **kw) == full
    assert "".join(stream_text(text_model, tok, "the ", stop_strings=[stop], **kw)) == full


def test_safe_length_holds_back_the_longest_possible_start_of_a_stop_string():
    # "ab\n\n" ends with "\n" and with "\n\n", both starts of "\n\nQ:": both newlines may belong to it.
    assert safe_length("ab\n\n", ["\n\nQ:"]) == 2
    assert safe_length("ab\n", ["\n\nQ:"]) == 2
    assert safe_length("abc", ["\n\nQ:"]) == 3
    assert safe_length("aaa", ["aab"]) == 1
    assert safe_length("ab\ufffd", ["x"]) == 2  # a partial UTF-8 character is never shown


def test_stream_text_holds_back_a_repeated_character_that_may_start_a_stop_string(text_model, tok):
    """A stop string whose start repeats a character ("xx" + one more): after "xx" both characters
    may begin it, so both are held back, not only the last one."""
    kw = dict(seed=5, max_new_tokens=25)
    full = generate_text(text_model, tok, "the ", **kw)
    i = next(i for i in range(len(full) - 2) if full[i] == full[i + 1])
    stop = full[i : i + 3]
    assert full.index(stop) == i
    pieces = list(stream_text(text_model, tok, "the ", stop_strings=[stop], **kw))
    assert "".join(pieces) == full[:i] == generate_text(text_model, tok, "the ", stop_strings=[stop], **kw)


def test_stream_text_never_shows_half_a_character():
    bpe = train_tokenizer("bpe", "注意力机制 " * 30, vocab_size=260)
    script = bpe.encode("注意")
    assert bpe.decode(script[:1]).endswith("\ufffd")  # the first token is part of a character
    model = make_model(vocab_size=bpe.vocab_size)
    prompt = bpe.encode("x")

    def force(module, args, output):  # the model "predicts" the scripted tokens, one per step
        step = args[0].shape[1] - len(prompt)
        output.logits[:, -1] = -1e9
        output.logits[:, -1, script[step]] = 1e9
        return output

    handle = model.register_forward_hook(force)
    try:
        kw = dict(temperature=0, max_new_tokens=len(script), use_cache=False)
        pieces = list(stream_text(model, bpe, "x", **kw))
        assert generate_text(model, bpe, "x", **kw) == "注意"
    finally:
        handle.remove()
    assert "".join(pieces) == "注意" and not any("\ufffd" in p for p in pieces)


def test_penalties_see_the_prompt_too(model):
    prompt = PROMPTS[2]
    out = generate_ids(model, prompt, temperature=0, max_new_tokens=12, no_repeat_ngram_size=1)
    assert not set(out) & set(prompt) and len(set(out)) == len(out)
    for h in beam_search(model, prompt, 3, 8, no_repeat_ngram_size=1):
        assert not set(h.ids) & set(prompt) and len(set(h.ids)) == len(h.ids)


@pytest.mark.parametrize("was_training", [True, False])
def test_model_mode_is_restored_and_dropout_is_off(was_training):
    model = make_model(dropout=0.5)
    model.train(was_training)
    a = generate_ids(model, PROMPTS[0], temperature=0, max_new_tokens=15)
    assert model.training == was_training
    b = generate_ids(model, PROMPTS[0], temperature=0, max_new_tokens=15)
    assert a == b  # with dropout active the two runs would differ
    steps = generate(model, PROMPTS[0], max_new_tokens=5, seed=0)
    next(steps)
    assert not model.training  # eval mode while the stream runs...
    steps.close()
    assert model.training == was_training  # ...restored when it is closed (or ends)
    switched = []
    for step in generate(model, PROMPTS[0], temperature=0, max_new_tokens=15):
        switched.append(step.tokens[0].token_id)
        model.train()  # the caller switches modes between steps: generation still runs in eval
    assert switched == a
    assert model.training == was_training
    score_sequence(model, PROMPTS[2])
    assert model.training == was_training


# ----------------------------------------------------------------------------- beam search
def test_beam_width_one_equals_greedy(model):
    for prompt in PROMPTS:
        (best,) = beam_search(model, prompt, 1, 50)
        assert best.ids == generate_ids(model, prompt, temperature=0, max_new_tokens=50)


def test_beam_width_one_equals_greedy_past_the_context_for_every_context_keep(model):
    """beam_search must pass its context_keep on to the window: dropped, every beam would be cut back
    to the default half block (16 tokens) instead, and the 60 tokens past the 32-token block differ."""
    prompt = PROMPTS[2]  # [2, 9, 4, 1, 6] would fall into repeating one token, whatever the keep
    default = generate_ids(model, prompt, temperature=0, max_new_tokens=60)
    differ = 0
    for keep in (1, 5, BLOCK):
        greedy = generate_ids(model, prompt, temperature=0, max_new_tokens=60, context_keep=keep)
        (best,) = beam_search(model, prompt, 1, 60, context_keep=keep)
        assert best.ids == greedy, keep
        differ += greedy != default
    assert differ == 3  # every keep changes the text here: the comparison above can see a dropped keep


def test_beam_search_never_fills_a_beam_with_an_impossible_token():
    """2 * num_beams candidates, but only two possible tokens (a tokenizer of 2 ids, a model of 4 rows):
    the padded ids have score -inf and must end the candidate list, not become a third hypothesis."""
    model = make_model(vocab_size=4, seed=1)
    tokenizer = SimpleNamespace(vocab_size=2, bos_id=0)
    for use_cache in (True, False):
        hyps = beam_search(model, [1, 0], 3, 1, tokenizer=tokenizer, use_cache=use_cache)
        assert len(hyps) == 2, hyps
        assert sorted(h.ids[0] for h in hyps) == [0, 1]
        assert all(len(h.ids) == 1 and math.isfinite(h.score) for h in hyps)


def test_wide_beam_finds_the_exact_best_two_token_continuation(model):
    prompt = [3, 1, 4]
    with torch.no_grad():
        first = F.log_softmax(model(torch.tensor([prompt])).logits[0, -1].double(), -1)
        seqs = torch.tensor([prompt + [a] for a in range(VOCAB)])
        second = F.log_softmax(model(seqs).logits[:, -1].double(), -1)
    totals = first.unsqueeze(1) + second  # (first token, second token)
    best = int(torch.argmax(totals))
    hyps = beam_search(model, prompt, VOCAB, 2, length_penalty=0.0)
    assert hyps[0].ids == list(divmod(best, VOCAB))
    assert hyps[0].score == pytest.approx(float(totals.max()), abs=1e-6)
    assert [h.score for h in hyps] == sorted((h.score for h in hyps), reverse=True)
    assert len(hyps) == VOCAB


def test_beam_scores_are_length_normalized_log_probs_and_eos_ends_a_beam(model):
    prompt = PROMPTS[0]
    eos = generate_ids(model, prompt, temperature=0, max_new_tokens=30)[1]
    for length_penalty in (0.0, 1.0, 2.0):
        hyps = beam_search(model, prompt, 3, 30, length_penalty=length_penalty, eos_id=eos)
        for h in hyps:
            assert eos not in h.ids[:-1]  # a beam ends at its first eos
            assert h.ids[-1] == eos or len(h.ids) == 30
            logp = score_sequence(model, prompt + h.ids, context_len=len(prompt)).total_logprob
            assert h.score == pytest.approx(logp / len(h.ids) ** length_penalty, abs=1e-5)
        without_cache = beam_search(
            model, prompt, 3, 30, length_penalty=length_penalty, eos_id=eos, use_cache=False
        )
        assert [h.ids for h in without_cache] == [h.ids for h in hyps]
        assert [h.score for h in without_cache] == pytest.approx([h.score for h in hyps], abs=1e-5)
    # Without length normalization, short sequences that end early win: the eos hypotheses come first.
    assert beam_search(model, prompt, 3, 30, length_penalty=0.0, eos_id=eos)[0].ids[-1] == eos


def beam_reference(model, prompt, width, n, length_penalty, eos):
    """Beam search written out the slow way (no cache, one forward per beam), Hugging Face's rules:
    the 2*width best candidates; an eos among the best `width` finishes a hypothesis, the other
    candidates fill `width` running beams; stop once `width` hypotheses are finished and the best
    running beam (scored at its current length) cannot beat the worst of them."""

    def final(total, length):
        return total / length**length_penalty

    beams, finished = [([], 0.0)], []
    for step in range(n):
        cands = []
        for b, (ids, total) in enumerate(beams):
            with torch.no_grad():
                logp = F.log_softmax(model(torch.tensor([prompt + ids])).logits[0, -1].double(), -1)
            cands += [(total + float(logp[t]), b, t) for t in range(VOCAB)]
        cands.sort(key=lambda c: (-c[0], c[1], c[2]))
        running = []
        for rank, (total, b, t) in enumerate(cands[: 2 * width]):
            ids = beams[b][0] + [t]
            if t == eos:
                if rank < width:
                    finished.append((ids, final(total, len(ids))))
            elif len(running) < width:
                running.append((ids, total))
        finished = sorted(finished, key=lambda h: -h[1])[:width]
        beams = running
        if step == n - 1:
            break
        if len(finished) == width and finished[-1][1] >= max(final(t, step + 1) for _, t in beams):
            beams = []
            break
    hyps = finished + [(ids, final(t, len(ids))) for ids, t in beams]
    return sorted(hyps, key=lambda h: -h[1])[:width]


@pytest.mark.parametrize("length_penalty", [0.0, 1.0])
@pytest.mark.parametrize("width", [2, 4])
def test_beam_search_matches_the_written_out_algorithm(model, width, length_penalty):
    prompt = PROMPTS[0]
    greedy = generate_ids(model, prompt, temperature=0, max_new_tokens=10)
    for eos in greedy[:4]:  # likely tokens, so that eos competes inside and just outside the top width
        expected = beam_reference(model, prompt, width, 10, length_penalty, eos)
        got = beam_search(model, prompt, width, 10, length_penalty=length_penalty, eos_id=eos)
        assert [h.ids for h in got] == [ids for ids, _ in expected], eos
        # The reference runs each beam alone, without the cache: float32 logits that differ in the last
        # bits (how much depends on the CPU's kernels), summed over 10 tokens of about -2 each.
        assert [h.score for h in got] == pytest.approx([s for _, s in expected], abs=1e-5)


def test_beam_search_reports_after_each_step_what_it_would_return_if_it_ended_there(model):
    """on_step gets, after step s, exactly the result of a search of s + 1 tokens (the finished
    hypotheses and the running beams scored at their length), and last the returned list: what the
    sample command prints when Ctrl-C interrupts a search."""
    prompt = PROMPTS[0]
    greedy = generate_ids(model, prompt, temperature=0, max_new_tokens=12)
    for eos in (None, greedy[2], greedy[5]):  # no stop, and stops that end beams and the search early
        rankings: list[list] = []
        result = beam_search(model, prompt, 3, 12, eos_id=eos, on_step=rankings.append)
        assert rankings and rankings[-1] == result
        for step, ranking in enumerate(rankings):
            shorter = beam_search(model, prompt, 3, step + 1, eos_id=eos)
            assert [h.ids for h in ranking] == [h.ids for h in shorter], (eos, step)
            assert [h.score for h in ranking] == pytest.approx([h.score for h in shorter], abs=1e-9)
    # Width 1 without length normalization stops as soon as greedy decoding reaches the stop token: one
    # report per step actually taken.
    eos = greedy[2]
    reports: list[list] = []
    (stopped,) = beam_search(model, prompt, 1, 12, eos_id=eos, length_penalty=0.0, on_step=reports.append)
    assert stopped.ids == greedy[: greedy.index(eos) + 1] and len(reports) == len(stopped.ids) < 12
    with pytest.raises(
        GenerationError, match="on_step must be a function of a list of BeamHypothesis, got list"
    ):
        beam_search(model, prompt, 2, 5, on_step=[])


# ----------------------------------------------------------------------------- contrastive search
def contrastive_reference(
    model: GPT, prompt: list[int], n: int, alpha: float, k: int, keep: int
) -> list[int]:
    """Su et al.'s rule written the slow, obvious way: each candidate's window re-run from scratch."""
    window, out = list(prompt), []
    with torch.no_grad():
        for _ in range(n):
            probs = F.softmax(model(torch.tensor([window])).logits[0, -1].double(), -1)
            candidates = sorted(range(len(probs)), key=lambda t: (-float(probs[t]), t))[:k]
            best = None
            for t in candidates:
                extended = window + [t]
                if len(extended) > model.config.block_size:
                    extended = extended[-keep:]
                hidden = model(torch.tensor([extended])).hidden_states[0]
                similarity = (
                    F.cosine_similarity(hidden[-1:], hidden[:-1], dim=-1).max() if len(hidden) > 1 else 0
                )
                score = (1 - alpha) * float(probs[t]) - alpha * float(similarity)
                if best is None or score > best[0]:  # strict: a tie keeps the more probable candidate
                    best = (score, t, extended)
            out.append(best[1])
            window = best[2]
    return out


@pytest.mark.parametrize("alpha, k, keep", [(0.6, 4, 16), (0.3, 7, 1), (1.0, 3, BLOCK)])
def test_contrastive_search_matches_the_written_out_rule_with_and_without_the_cache(model, alpha, k, keep):
    prompt = [4, 9, 2, 7]
    expected = contrastive_reference(model, prompt, 70, alpha, k, keep)  # 70 > 2 x BLOCK: several cuts
    for use_cache in (True, False):
        got = contrastive_search(
            model, prompt, 70, penalty_alpha=alpha, top_k=k, context_keep=keep, use_cache=use_cache
        )
        assert got == expected


def test_contrastive_search_with_alpha_zero_or_one_candidate_is_greedy(model):
    greedy = generate_ids(model, PROMPTS[2], max_new_tokens=50, temperature=0)
    assert contrastive_search(model, PROMPTS[2], 50, penalty_alpha=0.0, top_k=5) == greedy
    assert contrastive_search(model, PROMPTS[2], 50, penalty_alpha=0.9, top_k=1) == greedy
    assert contrastive_search(model, PROMPTS[2], 50, penalty_alpha=0.9, top_k=5) != greedy  # it matters


def test_contrastive_search_stops_at_eos_and_respects_the_penalties(model):
    free = contrastive_search(model, [3, 1], 40)
    eos = free[5]
    stopped = contrastive_search(model, [3, 1], 40, eos_id=eos)
    assert stopped == free[: free.index(eos) + 1]
    banned = contrastive_search(model, [3, 1], 40, no_repeat_ngram_size=2)
    pairs = list(zip([3, 1, *banned], [1, *banned]))
    assert len(pairs) == len(set(pairs))  # no bigram twice, prompt included


def test_contrastive_search_reports_each_token_as_it_is_chosen(model):
    seen: list[list[int]] = []
    ids = contrastive_search(model, [3, 1], 25, on_tokens=seen.append)
    assert seen == [[token] for token in ids] and len(ids) == 25
    eos = ids[4]
    seen.clear()
    assert (
        contrastive_search(model, [3, 1], 25, eos_id=eos, on_tokens=seen.append) == ids[: ids.index(eos) + 1]
    )
    assert seen[-1] == [eos]  # the stop token too: the caller decides whether to show it
    with pytest.raises(GenerationError, match="on_tokens must be a function of a list of ids, got list"):
        contrastive_search(model, [3, 1], 5, on_tokens=[])


@pytest.mark.parametrize(
    "kwargs, field",
    [
        (dict(penalty_alpha=-0.1), "penalty_alpha"),
        (dict(penalty_alpha=1.5), "penalty_alpha"),
        (dict(penalty_alpha=float("nan")), "penalty_alpha"),
        (dict(penalty_alpha=True), "penalty_alpha"),
        (dict(top_k=0), "top_k"),
        (dict(eos_id=VOCAB), "eos_id"),
    ],
)
def test_contrastive_search_names_a_bad_argument(model, kwargs, field):
    with pytest.raises(GenerationError, match=rf"{field}=.* is not allowed"):
        contrastive_search(model, [1, 2], 5, **kwargs)
    with pytest.raises(GenerationError, match="one prompt"):
        contrastive_search(model, [[1, 2], [3]], 5)


def test_contrastive_search_defaults_are_alpha_0_6_and_four_candidates(model):
    # The documented defaults (Su et al.'s alpha, and the 4 candidates the CLI's help promises); the
    # neighbouring values give other text here, so a changed default would show.
    got = contrastive_search(model, PROMPTS[0], 40)
    assert got == contrastive_search(model, PROMPTS[0], 40, penalty_alpha=0.6, top_k=4)
    assert got != contrastive_search(model, PROMPTS[0], 40, penalty_alpha=0.5, top_k=4)
    assert got != contrastive_search(model, PROMPTS[0], 40, penalty_alpha=0.6, top_k=5)


def test_contrastive_search_never_picks_a_banned_token(model):
    # With alpha = 1 the score ignores probability, so a banned token (probability 0) that were still a
    # candidate would win whenever its hidden state is the least similar. Every token is a candidate
    # here (top_k = VOCAB): only leaving the banned ones out keeps the ban.
    prompt = [3, 1]
    out = contrastive_search(model, prompt, 30, penalty_alpha=1.0, top_k=VOCAB, no_repeat_ngram_size=1)
    assert len(set(prompt + out)) == len(prompt) + 30  # size 1: no token twice (38 are left to use)


def test_contrastive_search_at_alpha_zero_is_greedy_under_the_same_penalties_past_a_long_prompt(model):
    # alpha = 0 scores by probability alone: contrastive search must be greedy decoding with the same
    # penalties, and those count the whole prompt, even the part cut off the context window. To make
    # that part matter, it holds the first two tokens that the window alone leads to.
    window = [(i * 7) % VOCAB for i in range(BLOCK)]
    for penalties in (dict(repetition_penalty=3.0), dict(no_repeat_ngram_size=2)):
        window_only = generate_ids(model, window, temperature=0, max_new_tokens=40, **penalties)
        long_prompt = window_only[:2] + window
        with pytest.warns(UserWarning, match="cropped"):
            greedy = generate_ids(model, long_prompt, temperature=0, max_new_tokens=40, **penalties)
        with pytest.warns(UserWarning, match="cropped"):
            got = contrastive_search(model, long_prompt, 40, penalty_alpha=0.0, top_k=5, **penalties)
        assert got == greedy, penalties
        assert got != window_only, penalties  # the cut-off part really changed the text


def test_contrastive_search_without_the_cache_never_makes_one(model, monkeypatch):
    # Both paths give the same tokens (checked above), so only this shows that use_cache=False reaches
    # the context window: no KV cache may be allocated.
    expected = contrastive_search(model, PROMPTS[0], 40)

    def no_cache(*args, **kwargs):
        raise AssertionError("a KV cache was made with use_cache=False")

    monkeypatch.setattr(model, "new_kv_cache", no_cache)
    assert contrastive_search(model, PROMPTS[0], 40, use_cache=False) == expected


def test_context_window_hidden_states_are_each_row_s_own_tokens(model):
    """Rows of different lengths share one left-padded forward pass; each row's hidden states must be
    those of its window run alone (none of the padding), after appends (through the cache or not) and
    after select repeats and reorders rows, as contrastive search does."""
    from arlm_lib.generation.context import ContextWindow

    def alone(window: list[int]) -> torch.Tensor:
        return model(torch.tensor([window])).hidden_states[0]

    def check(context: ContextWindow) -> None:
        hidden = context.hidden_states()
        assert len(hidden) == len(context.windows)
        for h, window in zip(hidden, context.windows):
            torch.testing.assert_close(h, alone(window), rtol=1e-4, atol=1e-4)

    with torch.no_grad():
        for use_cache in (True, False):
            context = ContextWindow(
                model, [[1, 2, 3, 4, 5], [6, 7]], keep=BLOCK // 2, use_cache=use_cache, track_hidden=True
            )
            for step in range(3):
                check(context)
                context.append([8 + step, 20 + step])
            context.select([1, 1, 0])
            check(context)
            context.append([30, 31, 32])
            check(context)
    with pytest.raises(ValueError, match="track_hidden=True"):
        ContextWindow(model, [[1, 2]], keep=4).hidden_states()


# ----------------------------------------------------------------------------- scoring
def test_score_equals_the_sum_of_generation_logprobs_even_past_the_context(model):
    prompt = PROMPTS[2]
    steps = list(generate(model, prompt, max_new_tokens=60, seed=9))  # 67 tokens: > 2 windows
    ids = prompt + [s.tokens[0].token_id for s in steps]
    score = score_sequence(model, ids, context_len=len(prompt))
    reported = [s.tokens[0].logprob for s in steps]
    assert score.token_ids == ids[len(prompt) :]
    assert score.token_logprobs == pytest.approx(reported, abs=1e-5)
    assert score.total_logprob == pytest.approx(math.fsum(reported), abs=1e-4)
    assert score.surprisal_bits == pytest.approx([-lp / math.log(2) for lp in reported], abs=1e-5)


def test_score_uses_the_given_context_keep_like_generation_did(model):
    """Generated with context_keep=5 past the block, the text scores to the reported log-probs only
    when scored with the same keep: the default keep (half the block) sees other windows."""
    prompt = PROMPTS[2]
    steps = list(generate(model, prompt, max_new_tokens=60, seed=9, context_keep=5))
    ids = prompt + [s.tokens[0].token_id for s in steps]
    reported = [s.tokens[0].logprob for s in steps]
    score = score_sequence(model, ids, context_len=len(prompt), context_keep=5)
    assert score.token_logprobs == pytest.approx(reported, abs=1e-5)
    default = score_sequence(model, ids, context_len=len(prompt))
    assert default.token_logprobs != pytest.approx(reported, abs=1e-3)


def test_scoring_after_a_context_longer_than_the_window_matches_generation(model):
    long_prompt = [(i * 7) % VOCAB for i in range(BLOCK + 9)]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the prompt is cropped, with a warning
        steps = list(generate(model, long_prompt, max_new_tokens=10, seed=1))
    ids = long_prompt + [s.tokens[0].token_id for s in steps]
    score = score_sequence(model, ids, context_len=len(long_prompt))
    assert score.token_logprobs == pytest.approx([s.tokens[0].logprob for s in steps], abs=1e-5)


def test_generated_perplexity_pools_tokens_over_sequences(model):
    a, b = [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11], [5, 9, 2]
    sa, sb = score_sequence(model, a, context_len=2), score_sequence(model, b, context_len=1)
    n = len(sa.token_logprobs) + len(sb.token_logprobs)
    pooled = math.exp(-(sa.total_logprob + sb.total_logprob) / n)
    assert sa.perplexity != pytest.approx(sb.perplexity, rel=1e-2)  # pooling differs from averaging
    assert generated_perplexity(model, [a, b], context_len=[2, 1]) == pytest.approx(pooled, rel=1e-9)


def test_bad_scoring_arguments_are_named(model):
    with pytest.raises(GenerationError, match="empty sequence"):  # not a context_len problem
        score_sequence(model, [])
    with pytest.raises(GenerationError, match=r"context_len=1\.0 is not allowed"):
        generated_perplexity(model, [[1, 2, 3]], context_len=1.0)
    with pytest.raises(GenerationError, match=r"context_len=0 is not allowed"):
        generated_perplexity(model, [[1, 2, 3], [4, 5]], context_len=[1, 0])


def test_score_is_the_chain_rule_within_the_context(model):
    ids = [5, 2, 8, 8, 1, 0, 3]
    with torch.no_grad():
        logp = F.log_softmax(model(torch.tensor([ids])).logits[0], -1)
    expected = [float(logp[t - 1, ids[t]]) for t in range(1, len(ids))]
    score = score_sequence(model, ids)
    assert score.token_logprobs == pytest.approx(expected, abs=1e-5)
    assert score.perplexity == pytest.approx(math.exp(-sum(expected) / len(expected)), rel=1e-5)


def test_score_text_starts_from_bos_and_perplexity_matches(text_model, tok):
    score = score_text(text_model, tok, "the dog")
    assert score.token_ids == tok.encode("the dog")
    direct = score_sequence(text_model, [tok.bos_id] + tok.encode("the dog"))
    assert score.total_logprob == direct.total_logprob
    ppl = generated_perplexity(text_model, [tok.bos_id] + tok.encode("the dog"))
    assert ppl == pytest.approx(score.perplexity)
    with pytest.raises(GenerationError, match="context_len"):
        score_sequence(text_model, [1, 2], context_len=3)


# ----------------------------------------------------------------------------- metrics
def test_distinct_n():
    assert distinct_n([[1, 2, 3, 1, 2]], 2) == pytest.approx(3 / 4)  # (1,2) twice, (2,3), (3,1)
    assert distinct_n([[1, 1, 1, 1]], 1) == pytest.approx(1 / 4)
    assert distinct_n(["a b c", "a b d"], 2) == pytest.approx(3 / 4)  # n-grams do not span texts
    assert distinct_n([1, 2, 3], 1) == 1.0  # a flat list is one generation
    assert distinct_n([[1]], 2) == 0.0
    with pytest.raises(GenerationError):
        distinct_n([[1, 2]], 0)


def test_metrics_treat_a_list_of_scalar_tensors_as_one_generation():
    # list(tensor) gives 0-d tensors; generate() already reads such a list as one prompt. The metrics
    # used to count each id as a one-token generation (and hash tensors by identity).
    ids = torch.tensor([5, 6, 5, 6, 5, 6, 7])
    assert distinct_n(list(ids), 2) == distinct_n(ids.tolist(), 2) == pytest.approx(3 / 6)
    assert distinct_n([list(ids), list(ids)], 2) == distinct_n([ids.tolist()] * 2, 2)
    looping = torch.tensor([1, 2, 3, 4, 3, 4, 3, 4])
    assert repetition_rate(list(looping)) == repetition_rate(looping.tolist()) == 1.0
    assert has_repetition(list(looping))


def test_metrics_read_a_1d_tensor_as_one_generation_and_a_2d_tensor_as_rows():
    ids = torch.tensor([5, 6, 5, 6, 5, 6, 7])
    assert distinct_n(ids, 2) == distinct_n(ids.tolist(), 2)
    rows = torch.tensor([[1, 2, 1, 2, 1, 2], [3, 4, 5, 6, 7, 8]])
    assert distinct_n(rows, 2) == distinct_n(rows.tolist(), 2)
    assert repetition_rate(rows) == repetition_rate(rows.tolist()) == pytest.approx(1 / 2)
    assert repetition_rate(torch.tensor([1, 2, 1, 2, 1, 2])) == 1.0


def test_repetition_rate_of_no_generations_is_zero():
    assert repetition_rate([]) == 0.0


def test_metric_settings_are_checked_even_without_generations_and_a_lone_number_is_named():
    # repetition_rate checked its settings only inside has_repetition, once per generation: with none,
    # min_repeats=1 (every phrase "repeats" once) passed unnoticed.
    with pytest.raises(GenerationError, match=r"min_repeats=1 is not allowed: it must be an integer >= 2"):
        repetition_rate([], min_repeats=1)
    with pytest.raises(GenerationError, match=r"min_phrase_len=0 is not allowed"):
        repetition_rate([], min_phrase_len=0)
    for call in (lambda: distinct_n(5, 1), lambda: has_repetition(5), lambda: repetition_rate(5)):
        with pytest.raises(
            GenerationError, match=r"generations must be a str, a tensor or a sequence .* got int \(5\)"
        ):
            call()


def test_repetition_rate_holtzman_loop_at_the_end():
    loop_at_end = [9, 8, 7, 1, 2, 1, 2, 1, 2]
    loop_in_middle = [1, 2, 1, 2, 1, 2, 9, 8, 7]
    only_twice = [9, 1, 2, 1, 2]
    single_unit_run = [5, 4, 4, 4, 4, 4, 4]  # "4 4" three times
    assert has_repetition(loop_at_end)
    assert not has_repetition(loop_in_middle)
    assert has_repetition(loop_in_middle, at_end=False)
    assert not has_repetition(only_twice) and not has_repetition(only_twice, at_end=False)
    assert has_repetition(single_unit_run)
    assert not has_repetition([9, 1, 2, 3, 1, 2, 3, 1, 2])  # the third "1 2 3" is one unit short
    gens = [loop_at_end, loop_in_middle, only_twice, single_unit_run]
    assert repetition_rate(gens) == pytest.approx(2 / 4)
    assert repetition_rate(gens, at_end=False) == pytest.approx(3 / 4)
    assert repetition_rate(["I know . I know . I know .", "fresh words here"], min_phrase_len=3) == 0.5


# ----------------------------------------------------------------------------- CLI body
def test_sample_cli_prints_and_stream_matches(text_model, tok):
    args = SimpleNamespace(
        prompt="the ", max_new_tokens=20, temperature=0.9, top_k=None, top_p=0.95, min_p=None,
        repetition_penalty=None, no_repeat_ngram=None, beam=None, num_samples=2, seed=3, stream=False,
    )  # fmt: skip
    plain, streamed = io.StringIO(), io.StringIO()
    assert sample_cli(text_model, tok, args, out=plain) == 0
    assert sample_cli(text_model, tok, args, out=streamed, stream=True) == 0
    assert plain.getvalue() == streamed.getvalue()
    assert plain.getvalue().count("--- sample") == 2 and plain.getvalue().count("the ") >= 2
    beams = io.StringIO()
    sample_cli(text_model, tok, args, out=beams, beam=3, temperature=1.0, top_p=None)
    assert beams.getvalue().count("--- beam") == 2


@pytest.mark.parametrize("stream", [False, True])
def test_sample_cli_warns_of_a_cropped_prompt_before_printing_it(text_model, tok, monkeypatch, stream):
    """In a terminal stdout and stderr share a screen: the warning used to land mid-line, after the prompt."""
    screen: list[str] = []

    class Terminal(io.StringIO):
        def write(self, text):
            screen.append(text)
            return len(text)

    def show_warning(message, *args, **kwargs):
        screen.append(f"warning: {message}\n")

    prompt = "the quick brown fox " * 4  # 80 characters, past the 32-token window
    assert len(tok.encode(prompt)) > text_model.config.block_size
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        monkeypatch.setattr(warnings, "showwarning", show_warning)
        sample_cli(text_model, tok, prompt=prompt, max_new_tokens=5, seed=0, stream=stream, out=Terminal())
    text = "".join(screen)
    assert text.startswith("warning: the prompt has 80 tokens") and text.count("warning:") == 1
    assert text.split("\n", 1)[1].startswith(prompt)


@pytest.mark.parametrize(
    "options, flag",
    [
        ({"beam": 2, "top_k": 5}, "--top-k 5"),
        ({"beam": 2, "top_p": 0.9}, "--top-p 0.9"),
        ({"beam": 2, "min_p": 0.1}, "--min-p 0.1"),
        ({"beam": 2, "typical_p": 0.9}, "--typical-p 0.9"),
        ({"beam": 2, "epsilon_cutoff": 3e-4}, "--epsilon-cutoff 0.0003"),
        ({"beam": 2, "temperature": 0.7}, "--temperature 0.7 is not allowed with --beam"),
        ({"beam": 2, "num_samples": 3}, "--num-samples 3"),
        ({"temperature": 0, "top_k": 5}, "--top-k 5"),
        ({"temperature": 0.0, "top_p": 0.5}, "--top-p 0.5"),
        ({"temperature": 0, "eta_cutoff": 3e-4}, "--eta-cutoff 0.0003"),
        ({"temperature": 0, "num_samples": 2}, "--num-samples 2 is not allowed with --temperature 0"),
        ({"penalty_alpha": 0.6, "top_p": 0.9}, "--top-p 0.9 is not allowed with --penalty-alpha"),
        ({"penalty_alpha": 0.6, "beam": 2}, "--beam 2 is not allowed with --penalty-alpha"),
        ({"penalty_alpha": 0.6, "temperature": 0.7}, "--temperature 0.7 is not allowed with --penalty-alpha"),
        ({"penalty_alpha": 0.6, "num_samples": 2}, "--num-samples 2 is not allowed with --penalty-alpha"),
    ],
)
def test_sample_cli_refuses_flags_that_would_be_silently_ignored(text_model, tok, options, flag):
    out = io.StringIO()
    with pytest.raises(GenerationError) as info:
        sample_cli(text_model, tok, prompt="the ", max_new_tokens=3, out=out, **options)
    assert flag in str(info.value) and "\n" not in str(info.value)
    assert out.getvalue() == ""  # refused before anything is printed


@pytest.mark.parametrize(
    "options",
    [
        {"penalty_alpha": 0.6, "top_k": 4},  # contrastive search's candidates
        {"penalty_alpha": 0.6, "temperature": 1.0},
        {"beam": 3, "num_samples": 3},
        {"beam": 3, "temperature": 1.0},
        {"temperature": 0, "num_samples": 1},
        {"temperature": 0.8, "top_k": 5, "num_samples": 4},
    ],
)
def test_sample_options_that_all_take_effect_pass(options):
    check_sample_options(**options)


@pytest.mark.parametrize(
    "options",
    [
        {"beam": 2, "num_samples": 2, "temperature": 1.0, "repetition_penalty": 1.2},
        {"temperature": 0, "repetition_penalty": 1.3, "no_repeat_ngram": 2},
        {"penalty_alpha": 0.6, "top_k": 3, "repetition_penalty": 1.2},
    ],
)
def test_sample_cli_accepts_the_options_that_do_combine(text_model, tok, options):
    out = io.StringIO()
    assert sample_cli(text_model, tok, prompt="the ", max_new_tokens=3, out=out, **options) == 0
    assert out.getvalue().count("the ") == options.get("num_samples", 1)


def test_sample_cli_penalty_alpha_runs_contrastive_search_with_the_cli_options(text_model, tok):
    # The help promises 4 candidates without --top-k, and --top-k and the penalties must reach the
    # search: the CLI prints exactly the library's text, and each option really changes that text.
    prompt_ids = tok.encode("the ")

    def search(**options):
        options = {"penalty_alpha": 0.6, "top_k": 4, **options}
        return contrastive_search(text_model, prompt_ids, 40, tokenizer=tok, **options)

    plain = search()
    assert plain != search(top_k=5)  # so a different default number of candidates would show
    cases = [
        ({}, {}),
        ({"top_k": 3}, {"top_k": 3}),
        ({"repetition_penalty": 2.0}, {"repetition_penalty": 2.0}),
        ({"no_repeat_ngram": 2}, {"no_repeat_ngram_size": 2}),
    ]
    for flags, options in cases:
        expected = search(**options)
        out = io.StringIO()
        sample_cli(text_model, tok, prompt="the ", max_new_tokens=40, penalty_alpha=0.6, out=out, **flags)
        assert out.getvalue() == "the " + tok.decode(expected) + "\n", flags
        assert (expected != plain) == bool(flags), flags


@pytest.mark.parametrize(
    "flag, value",
    [
        ("temperature", -1.0), ("top_k", 0), ("top_p", 2.0), ("typical_p", 0.0), ("epsilon_cutoff", 1.0),
        ("eta_cutoff", -0.5), ("beam", 0), ("num_samples", 0), ("penalty_alpha", 1.5),
    ],
)  # fmt: skip
def test_sample_cli_errors_name_the_flag(text_model, tok, flag, value):
    with pytest.raises(ArlmError) as info:
        sample_cli(text_model, tok, out=io.StringIO(), **{flag: value})
    assert f"--{flag.replace('_', '-')}" in str(info.value)


def _accelerator() -> str | None:
    if torch.cuda.is_available():
        return "cuda"
    if torch.backends.mps.is_available():
        return "mps"
    return None


@pytest.mark.skipif(_accelerator() is None, reason="needs a CUDA or MPS device")
def test_processing_runs_in_float64_on_the_cpu_whatever_the_logits_device():
    # Apple's MPS has no float64: processing where the logits live would crash every sampled token there.
    device = _accelerator()
    logits = torch.randn(2, 50, device=device)
    processors = GenerationConfig(temperature=0.7, top_k=10, top_p=0.9, min_p=0.05).processors()
    out = apply_processors(logits, [[1, 2], [3]], processors)
    assert out.device.type == "cpu" and out.dtype == torch.float64
    expected = apply_processors(logits.cpu(), [[1, 2], [3]], processors)
    assert torch.equal(out, expected)
    model = GPT(GPTConfig(vocab_size=50, block_size=16, n_layer=1, n_head=2, n_embd=16)).to(device)
    on_device = generate_ids(model, [1, 2], GenerationConfig(max_new_tokens=5, top_p=0.9), seed=0)
    assert len(on_device) == 5 and all(0 <= t < 50 for t in on_device)


class _OnAnAccelerator(torch.Tensor):
    """A CPU tensor standing in for logits on an accelerator: every result of an operation on it stays
    "on the accelerator" (this class) except a move to the CPU (``.cpu()``, ``.to("cpu")``,
    ``.to(device="cpu")``), which gives a plain tensor. So without CUDA or MPS, a test can see whether
    code moved the logits to the CPU or computed where they live."""

    @classmethod
    def __torch_function__(cls, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        with torch._C.DisableTorchFunctionSubclass():
            out = func(*args, **kwargs)
        if func is torch.Tensor.cpu or (func is torch.Tensor.to and cls._target(args, kwargs) == "cpu"):
            return out.as_subclass(torch.Tensor)

        def wrap(x):
            return x.as_subclass(cls) if isinstance(x, torch.Tensor) else x

        return tuple(wrap(x) for x in out) if isinstance(out, (tuple, list)) else wrap(out)

    @classmethod
    def _target(cls, args, kwargs) -> str | None:
        """The device type a ``Tensor.to`` call moves to (None: it does not name one)."""
        for a in (*args[1:], kwargs.get("device")):
            if isinstance(a, (str, torch.device)):
                return torch.device(a).type
            if isinstance(a, torch.Tensor):  # .to(other): other's device
                return None if isinstance(a, cls) else a.device.type
        return None


def test_processing_runs_in_float64_on_the_cpu_even_for_logits_elsewhere_without_an_accelerator():
    """The CPU-runnable half of test_processing_runs_in_float64_on_the_cpu_whatever_the_logits_device
    (above, which needs a GPU): every processor must get a float64 tensor moved to the CPU, whatever
    device the logits come from (MPS has no float64; a draw on the device would break seeds)."""
    seen = []

    def spy(processor):
        def call(logits, histories):
            seen.append((type(logits), logits.dtype))
            return processor(logits, histories)

        return call

    logits = torch.randn(2, 50).as_subclass(_OnAnAccelerator)
    assert type(logits.float() * 2) is _OnAnAccelerator and type(logits.to(torch.float64)) is _OnAnAccelerator
    processors = GenerationConfig(temperature=0.7, top_k=10, top_p=0.9, min_p=0.05).processors()
    out = apply_processors(logits, [[1, 2], [3]], [spy(p) for p in processors])
    assert seen == [(torch.Tensor, torch.float64)] * len(processors)
    assert type(out) is torch.Tensor and out.dtype == torch.float64
    assert torch.equal(out, apply_processors(logits.as_subclass(torch.Tensor), [[1, 2], [3]], processors))

    # Generation: a model whose logits are "on the accelerator" samples exactly the CPU model's tokens.
    model = make_model()
    expected = generate_ids(model, [1, 2], max_new_tokens=5, top_p=0.9, seed=0)

    def elsewhere(module, args, output):
        output.logits = output.logits.as_subclass(_OnAnAccelerator)
        return output

    handle = model.register_forward_hook(elsewhere)
    try:
        steps = list(generate(model, [1, 2], max_new_tokens=5, top_p=0.9, seed=0))
    finally:
        handle.remove()
    assert [s.tokens[0].token_id for s in steps] == expected
    assert all(type(s.tokens[0].prob) is float for s in steps)
