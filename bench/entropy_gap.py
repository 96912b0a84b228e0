"""How close does the `tiny` Transformer get to the synthetic language's true entropy floor?

Trains the `tiny` preset (char tokenizer) on the built-in synthetic corpus for the book's CPU budget, then
scores held-out sentences the model never saw, each with its whole sentence as context (windows start
at a newline, the document-start token), and prints its bits/char next to the floor:

* the floor on the very same held-out text (exact log-probabilities from the grammar), and
* the language's entropy rate with a 95% confidence interval (sampled sentences).

    .venv/bin/python bench/entropy_gap.py               # the book's budget: 180 s on 2 threads
    .venv/bin/python bench/entropy_gap.py --threads 1 --max-iters 1800   # fixed steps (a busy machine)

The recipe: batch 16 x context 128, AdamW lr 5e-3 (30 warmup steps, cosine to lr/10). By default the
number of steps is sized to the budget from a timed probe, so the schedule always decays fully. On a
shared machine, prefer one thread and a fixed step count: idle OpenMP threads spin when cores are busy.
1800 steps (3.7M tokens) is about 260 CPU-seconds, i.e. under 3 minutes on 2 idle cores.

Target: the gap is within 5% of the floor after at most 3 minutes on 2 cores.
"""

from __future__ import annotations

import argparse
import math
import time

import torch
from torch.nn import functional as F

from arlm_lib.corpus import SyntheticLanguage, entropy_rate, load_corpus, text_bits_per_char
from arlm_lib.corpus.entropy import SYNTHETIC_CORPORA
from arlm_lib.model import GPT, GPTConfig
from arlm_lib.tokenizers import train_tokenizer
from arlm_lib.train import Callback, TrainConfig, Trainer


class TimeBudget(Callback):
    """Stops training once the wall-clock budget is spent (a guard; the recipe is sized to fit)."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.start = time.perf_counter()

    def on_train_begin(self, trainer) -> None:
        self.start = time.perf_counter()

    def on_step_end(self, trainer, record) -> None:
        if time.perf_counter() - self.start > self.seconds:
            trainer.request_stop()


@torch.no_grad()
def sentence_aligned_bits_per_char(model: GPT, tokenizer, text: str, batch_size: int = 64) -> float:
    """Bits/char of ``text`` (whole "\\n"-terminated sentences) with every sentence fully in context.

    Windows start with the newline token and hold whole sentences, so each target is predicted from at
    least its own sentence: the setting in which the grammar's log-probability is the floor.
    """
    block = model.config.block_size
    bos = tokenizer.bos_id
    windows: list[list[int]] = []
    current: list[int] = [bos]
    for line in text.split("\n")[:-1]:
        ids = tokenizer.encode(line + "\n")
        if len(current) + len(ids) > block + 1 and len(current) > 1:
            windows.append(current)
            current = [bos]
        current.extend(ids[: block + 1 - len(current)])  # a sentence longer than the block is cut
    windows.append(current)
    total, count = 0.0, 0
    model.eval()
    for i in range(0, len(windows), batch_size):
        chunk = windows[i : i + batch_size]
        width = max(len(w) for w in chunk)
        x = torch.full((len(chunk), width), bos, dtype=torch.long)
        y = torch.full((len(chunk), width), -100, dtype=torch.long)
        for r, w in enumerate(chunk):
            x[r, : len(w)] = torch.tensor(w)
            y[r, : len(w) - 1] = torch.tensor(w[1:])
        logits = model(x[:, :-1]).logits.float()
        total += F.cross_entropy(
            logits.flatten(0, 1), y[:, :-1].flatten(), reduction="sum", ignore_index=-100
        ).item()
        count += int((y[:, :-1] != -100).sum())
    scored_chars = count  # char tokenizer: one token per character
    if scored_chars != len(text):
        print(f"note: {len(text) - scored_chars} characters of over-long sentences were not scored")
    return total / math.log(2) / scored_chars


def seconds_per_step(config: GPTConfig, batch_size: int, steps: int = 5) -> float:
    """Wall-clock seconds of one training step (forward, backward, AdamW) of a throwaway model."""
    model = GPT(config)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    x = torch.randint(config.vocab_size, (batch_size, config.block_size))
    for i in range(steps + 2):
        if i == 2:  # the first steps allocate; time the rest
            t0 = time.perf_counter()
        model(x, x).loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
    return (time.perf_counter() - t0) / steps


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--corpus", default="synthetic", choices=sorted(SYNTHETIC_CORPORA))
    p.add_argument("--preset", default="tiny")
    p.add_argument(
        "--max-iters", type=int, default=None, help="default: as many steps as fit in --budget-s (measured)"
    )
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--block-size", type=int, default=None, help="override the preset's context length")
    p.add_argument("--lr", type=float, default=5e-3)
    p.add_argument("--min-lr", type=float, default=None)
    p.add_argument("--warmup", type=int, default=30)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--budget-s", type=float, default=180.0, help="the training time budget in seconds")
    p.add_argument("--val-chars", type=int, default=100_000, help="held-out text, sampled with its own seed")
    p.add_argument("--seed", type=int, default=1337)
    args = p.parse_args()
    torch.set_num_threads(args.threads)

    text = load_corpus(args.corpus)
    tokenizer = train_tokenizer("char", text)
    train_tokens = tokenizer.encode_tensor(text)
    # Held-out sentences come from a seed the corpus never used: none of them was trained on.
    lang = SyntheticLanguage(SYNTHETIC_CORPORA[args.corpus])
    val_text = lang.text(args.val_chars, seed=10_000 + args.seed)
    val_tokens = tokenizer.encode_tensor(val_text)

    config = GPTConfig.from_preset(args.preset, vocab_size=tokenizer.vocab_size, block_size=args.block_size)
    max_iters = args.max_iters
    if max_iters is None:
        # Size the cosine schedule to the budget on this machine, so it decays fully within it.
        step_s = seconds_per_step(config, args.batch_size)
        max_iters = max(1, int(0.9 * args.budget_s / step_s))  # 10% for batching, clipping, logging
        print(f"measured {step_s:.3f} s/step: training {max_iters} steps to fit {args.budget_s:.0f} s")
    torch.manual_seed(args.seed)
    model = GPT(config)
    train_config = TrainConfig(
        batch_size=args.batch_size,
        max_iters=max_iters,
        lr=args.lr,
        min_lr=args.min_lr,
        warmup_iters=args.warmup,
        eval_interval=max_iters,
        eval_iters=5,
        device="cpu",
        seed=args.seed,
        progress=False,
        checkpoint_interval=0,
    )
    # The guard only matters with an explicit --max-iters that does not fit the budget.
    budget = [TimeBudget(args.budget_s)] if args.max_iters is None else []
    trainer = Trainer(model, train_tokens, val_tokens, train_config, tokenizer, budget)
    t0, c0 = time.perf_counter(), time.process_time()
    history = trainer.train()
    train_s, cpu_s = time.perf_counter() - t0, time.process_time() - c0

    model_bpc = sentence_aligned_bits_per_char(trainer.raw_model, tokenizer, val_text)
    floor_text = text_bits_per_char(val_text, lang)
    floor = entropy_rate(args.corpus, n_sentences=100_000)
    gap = model_bpc - floor_text
    rows = [
        ("corpus", args.corpus),
        ("model", f"{args.preset} ({trainer.raw_model.num_params() / 1e3:.0f}k non-embedding params)"),
        (
            "recipe",
            f"{len(history)} steps x batch {args.batch_size} x block {config.block_size}, lr {args.lr:g}",
        ),
        ("train time", f"{train_s:.0f} s wall ({cpu_s:.0f} CPU-s) on {args.threads} threads"),
        ("held-out text", f"{len(val_text):,} chars"),
        ("model bits/char", f"{model_bpc:.4f}"),
        ("floor on the same text", f"{floor_text:.4f}"),
        ("entropy rate (100k sentences)", str(floor)),
        ("gap", f"{gap:+.4f} bits/char = {100 * gap / floor_text:+.1f}% of the floor"),
    ]
    width = max(len(k) for k, _ in rows)
    for k, v in rows:
        print(f"{k:<{width}}  {v}")


if __name__ == "__main__":
    main()
