"""Learning shows up where the structure is: a small Transformer tracks the subject's number up to the
verb, often across a relative clause, which a 3-gram model cannot see."""

from __future__ import annotations

import pytest
import torch

from arlm_lib.corpus import SyntheticLanguage
from arlm_lib.model import GPT, GPTConfig
from arlm_lib.ngram import NGramModel
from arlm_lib.tokenizers import train_tokenizer
from arlm_lib.train import TrainConfig, Trainer


def _says_singular(p: torch.Tensor, tok) -> bool:
    """After a verb stem, "s" means singular; a space or the full stop means plural."""
    space, stop, s = tok.encode(" .s")
    return bool(p[s] > p[space] + p[stop])


@torch.no_grad()
def _transformer_next_probs(model: GPT, tok, prefixes: list[str]) -> list[torch.Tensor]:
    encoded = [[tok.bos_id, *tok.encode(p)] for p in prefixes]
    width = max(map(len, encoded))
    x = torch.full((len(encoded), width), tok.bos_id, dtype=torch.long)
    for r, ids in enumerate(encoded):
        x[r, : len(ids)] = torch.tensor(ids)  # right padding: causal attention never looks at it
    probs = model(x).logits.softmax(-1)
    return [probs[r, len(ids) - 1] for r, ids in enumerate(encoded)]


@pytest.mark.usefixtures("one_thread")  # conftest.py
def test_small_transformer_predicts_verb_number_better_than_a_trigram():
    lang = SyntheticLanguage("agreement")
    text = lang.text(300_000, seed=1)
    tok = train_tokenizer("char", text)
    tokens = tok.encode_tensor(text)
    # The tiny preset, shrunk so that training takes seconds on a CPU.
    config = GPTConfig.from_preset(
        "tiny", vocab_size=tok.vocab_size, block_size=64, n_layer=2, n_head=4, n_embd=32
    )
    torch.manual_seed(0)
    model = GPT(config)
    train_config = TrainConfig(
        batch_size=16, max_iters=1000, lr=1e-2, warmup_iters=20, eval_interval=1000, eval_iters=1,
        device="cpu", progress=False, checkpoint_interval=0, seed=0,
    )  # fmt: skip
    Trainer(model, tokens, tokens[-2_000:], train_config).train()
    model.eval()
    trigram = NGramModel(3, tok.vocab_size).fit(tokens)

    # Held-out probes from a seed the training text never used; most have a relative clause.
    items = lang.agreement_items(400, seed=99)
    prefixes = [it.decision_prefix for it in items]
    transformer = _transformer_next_probs(model, tok, prefixes)
    ngram = [trigram.next_token_probs(tok.encode(p)) for p in prefixes]
    correct_transformer = sum(_says_singular(p, tok) == it.is_singular for p, it in zip(transformer, items))
    correct_trigram = sum(_says_singular(p, tok) == it.is_singular for p, it in zip(ngram, items))
    acc_transformer, acc_trigram = correct_transformer / len(items), correct_trigram / len(items)
    assert acc_trigram < 0.65  # two characters of context cannot see the subject
    assert acc_transformer > acc_trigram + 0.15, (acc_transformer, acc_trigram)
