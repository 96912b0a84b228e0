"""Held-out evaluation: every token but the first is scored exactly once, and too little data is an error."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch.nn import functional as F

from arlm_lib.errors import ConfigError, DataError, GenerationError
from arlm_lib.evaluate import evaluate_tokens
from arlm_lib.model import GPT, GPTConfig
from arlm_lib.tokenizers import BPETokenizer, CharTokenizer

pytestmark = pytest.mark.usefixtures("one_thread")

BLOCK = 8


@pytest.fixture(scope="module")
def model() -> GPT:
    torch.manual_seed(0)
    return GPT(GPTConfig(vocab_size=12, block_size=BLOCK, n_layer=1, n_head=2, n_embd=16)).eval()


def reference_nll(model: GPT, tokens: torch.Tensor, block_size: int) -> tuple[float, int]:
    """Summed cross-entropy over consecutive windows of at most ``block_size`` predictions, one at a time."""
    total, count = 0.0, 0
    with torch.no_grad():
        for start in range(0, len(tokens) - 1, block_size):
            window = tokens[start : start + block_size + 1]
            logits = model(window[None, :-1]).logits[0]
            total += F.cross_entropy(logits, window[1:], reduction="sum").item()
            count += len(window) - 1
    return total, count


@pytest.mark.parametrize("length", [2, 5, BLOCK + 1, BLOCK + 2, 3 * BLOCK + 1, 3 * BLOCK + 6])
def test_every_token_after_the_first_is_scored_once(model: GPT, length: int):
    tokens = torch.randint(0, 12, (length,), generator=torch.Generator().manual_seed(length))
    result = evaluate_tokens(model, None, tokens, batch_size=2)
    total, count = reference_nll(model, tokens, BLOCK)
    assert result.n_tokens == count == length - 1
    assert result.loss == pytest.approx(total / count, rel=1e-5)
    assert result.perplexity == pytest.approx(math.exp(total / count), rel=1e-5)


def test_bits_per_char_counts_the_characters_scored(model: GPT):
    tokenizer = CharTokenizer.train("abcdefghijk")  # 11 characters and the document-start id: 12 ids
    tokens = torch.as_tensor(tokenizer.encode("abcabcabcabcabcab"))
    result = evaluate_tokens(model, tokenizer, tokens)
    assert result.n_chars == len(tokens) - 1
    assert result.bits_per_char == pytest.approx(result.loss / math.log(2))


def test_without_a_tokenizer_each_scored_token_counts_as_one_character(model: GPT):
    """Catches a character count that is off without a tokenizer (the ids are then the characters):
    n_chars must be the n_tokens scored, so bits per char equals bits per token."""
    tokens = torch.randint(0, 12, (2 * BLOCK + 3,), generator=torch.Generator().manual_seed(1))
    result = evaluate_tokens(model, None, tokens)
    assert result.n_chars == result.n_tokens == len(tokens) - 1
    assert result.bits_per_char == pytest.approx(result.bits_per_token, rel=1e-12)


@pytest.mark.parametrize("block_size", [1, 3, BLOCK - 1])
def test_a_shorter_evaluation_window_is_honoured(model: GPT, block_size: int):
    tokens = torch.randint(0, 12, (3 * BLOCK + 5,), generator=torch.Generator().manual_seed(block_size))
    result = evaluate_tokens(model, None, tokens, block_size=block_size, batch_size=3)
    total, count = reference_nll(model, tokens, block_size)
    assert result.n_tokens == count == len(tokens) - 1
    assert result.loss == pytest.approx(total / count, rel=1e-5)
    assert result.loss != pytest.approx(evaluate_tokens(model, None, tokens).loss, rel=1e-3)  # it matters


def test_bits_per_char_divides_the_total_bits_by_the_characters_not_the_tokens():
    """With BPE a token spans several characters: bits/char = total bits / characters scored."""
    text = "the cat sat on the mat. the dog sat on the log. " * 20
    bpe = BPETokenizer.train(text, vocab_size=300)
    torch.manual_seed(0)
    bpe_model = GPT(GPTConfig(vocab_size=bpe.vocab_size, block_size=BLOCK, n_layer=1, n_head=2, n_embd=16))
    tokens = torch.as_tensor(bpe.encode(text[:300]))
    chars = len(bpe.decode(tokens[1:]))  # the first token is context, never scored
    assert chars > 1.5 * (len(tokens) - 1)  # merges happened: several characters per token
    result = evaluate_tokens(bpe_model, bpe, tokens)
    total, count = reference_nll(bpe_model, tokens, BLOCK)
    assert result.n_chars == chars
    assert result.bits_per_token == pytest.approx(total / count / math.log(2), rel=1e-5)
    assert result.bits_per_char == pytest.approx(total / math.log(2) / chars, rel=1e-5)


def test_a_character_split_by_the_first_token_counts_once():
    """Byte-level BPE can end the first (unscored) token inside a character: it is counted once, whole."""
    bpe = BPETokenizer.train("注意力机制 " * 30, vocab_size=260)
    tokens = torch.as_tensor(bpe.encode("注意力"))
    assert bpe.decode(tokens[:1]) == "\ufffd"  # the first token holds only part of 注
    torch.manual_seed(0)
    bpe_model = GPT(GPTConfig(vocab_size=bpe.vocab_size, block_size=BLOCK, n_layer=1, n_head=2, n_embd=16))
    result = evaluate_tokens(bpe_model, bpe, tokens)
    assert result.n_chars == 3  # the rest of 注, then 意 and 力; not the broken pieces of decode(tokens[1:])
    text = "the cat sat. " * 4  # whole characters: the count is simply the characters after the first token
    ascii_tokens = torch.as_tensor(bpe.encode(text))
    assert evaluate_tokens(bpe_model, bpe, ascii_tokens).n_chars == len(text) - len(
        bpe.decode(ascii_tokens[:1])
    )


@pytest.mark.parametrize("tokens", [[], [3]])
def test_too_few_tokens_is_an_error_naming_the_count(model: GPT, tokens: list[int]):
    with pytest.raises(DataError, match=f"at least 2 tokens.*got {len(tokens)}"):
        evaluate_tokens(model, None, torch.as_tensor(tokens, dtype=torch.long))


def test_a_batch_instead_of_a_stream_is_an_error(model: GPT):
    with pytest.raises(DataError, match=r"1-D stream.*\(2, 5\)"):
        evaluate_tokens(model, None, torch.zeros(2, 5, dtype=torch.long))


@pytest.mark.parametrize(
    ("kwargs", "pattern"),
    [
        (dict(block_size=0), r"block_size must be an integer in 1\.\.8.*got 0"),  # silently meant "default"
        (dict(block_size=-3), r"block_size .* got -3"),
        (dict(block_size=BLOCK + 1), r"1\.\.8 \(the model's context\), got 9"),
        (dict(batch_size=0), "batch_size must be an integer >= 1, got 0"),
    ],
)
def test_bad_window_and_batch_sizes_are_named(model: GPT, kwargs: dict, pattern: str):
    with pytest.raises(ConfigError, match=pattern):
        evaluate_tokens(model, None, torch.arange(12), **kwargs)


def test_a_token_outside_the_vocabulary_is_named(model: GPT):
    with pytest.raises(DataError, match="token id 40 is outside the model's vocabulary 0..11"):
        evaluate_tokens(model, None, torch.tensor([1, 2, 40, 3]))


@pytest.mark.parametrize(
    "tokens",
    [
        torch.tensor([1.5, 2.0, 3.0]),
        [1.5, 2.0, 3.0],
        np.array([1.0, 2.0, 3.0]),
        torch.tensor([True, False, True]),
    ],
    ids=["float-tensor", "float-list", "float-array", "bool-tensor"],
)
def test_float_or_bool_ids_are_refused_not_truncated(model: GPT, tokens):
    # Casting to long would score id 1 for 1.5: a loss for a stream that holds no token ids at all.
    dtype = str(tokens.dtype) if isinstance(tokens, (torch.Tensor, np.ndarray)) else "torch.float32"
    with pytest.raises(DataError, match=f"integer dtype, got {dtype}"):
        evaluate_tokens(model, None, tokens)


def test_integer_ids_in_a_list_or_a_numpy_array_are_scored_like_a_tensor(model: GPT):
    ids = [1, 5, 2, 7, 3, 11, 0]
    expected = evaluate_tokens(model, None, torch.tensor(ids))
    assert evaluate_tokens(model, None, ids) == expected
    assert evaluate_tokens(model, None, np.array(ids, dtype=np.uint16)) == expected


def test_the_first_id_past_the_vocabulary_is_named(model: GPT):
    # Id 12 of a 12-token vocabulary: one past the end, the classic off-by-one of a tokenizer mismatch.
    with pytest.raises(DataError, match="token id 12 is outside the model's vocabulary 0..11"):
        evaluate_tokens(model, None, torch.tensor([1, 2, 12, 3]))


def test_a_negative_id_is_named_not_wrapped_around(model: GPT):
    # An embedding would read id -1 as the last row, or fail deep in torch: it is named up front.
    with pytest.raises(DataError, match="token id -1 is outside the model's vocabulary 0..11"):
        evaluate_tokens(model, None, torch.tensor([1, 2, -1, 3]))


def test_evaluating_a_model_in_training_leaves_it_in_training():
    """A notebook evaluates in the middle of training: dropout must be back on afterwards."""
    torch.manual_seed(0)
    training = GPT(GPTConfig(vocab_size=12, block_size=BLOCK, n_layer=1, n_head=2, n_embd=16, dropout=0.1))
    training.train()
    tokens = torch.randint(0, 12, (20,), generator=torch.Generator().manual_seed(0))
    first = evaluate_tokens(training, None, tokens)
    assert training.training
    assert evaluate_tokens(training, None, tokens) == first  # scored without dropout, every time


def test_text_and_swapped_arguments_are_named(model: GPT):
    """A str for the tokens, or the tokens and the tokenizer swapped: named, not a TypeError from torch."""
    tokenizer = CharTokenizer.train("abcdefghijk")
    tokens = torch.as_tensor(tokenizer.encode("abcabcabc"))
    with pytest.raises(DataError, match=r"tokens must be token ids, not a str: encode the text first"):
        evaluate_tokens(model, tokenizer, "abcabc")
    with pytest.raises(ConfigError, match=r"got Tensor: the arguments are \(model, tokenizer, tokens\)"):
        evaluate_tokens(model, tokens, tokenizer)


def test_a_tokenizer_with_more_ids_than_the_model_is_refused(model: GPT):
    """Another model's tokenizer decodes the ids to the wrong characters, so bits_per_char would be
    divided by a wrong count: refused up front, as generate() refuses it. One with fewer ids (a padded
    vocabulary) is still accepted."""
    tokens = torch.arange(12).repeat(3)
    too_big = CharTokenizer.train("abcdefghijklmnop")  # 16 characters (plus specials) for 12 rows
    with pytest.raises(GenerationError, match=r"the tokenizer has \d+ ids, the model's vocabulary only 12"):
        evaluate_tokens(model, too_big, tokens)
    padded = CharTokenizer.train("abcdefgh")
    assert padded.vocab_size < 12
    assert evaluate_tokens(model, padded, tokens % padded.vocab_size).bits_per_char > 0
