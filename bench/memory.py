"""Does a long training run's memory stay flat? Resident memory over 5,000 steps of the `tiny` preset.

    .venv/bin/python bench/memory.py                     # 5,000 steps, batch 4, context 32, 1 thread
    .venv/bin/python bench/memory.py --batch-size 32 --block-size 128   # the preset's own context

The `tiny` architecture (4 layers, 4 heads, 128 wide) trains on the built-in prose corpus. To fit the
run in about 3 minutes on 2 shared CPU cores, the default batch and context are shrunk (the output says
so); memory growth per step does not depend on them. A callback keeps every history record it receives,
as a dashboard would. The table prints, every 1,000 steps, the process's resident memory (RSS, psutil),
its change since the first step, the number of live tensors (gc) and the size of the history. Flat
columns mean the history is stored compactly and logging keeps no tensors alive. Nothing is asserted:
the unit test is ``tests/test_reliability.py::test_history_is_compact_and_logging_keeps_no_tensors_alive``.
"""

from __future__ import annotations

import argparse
import gc
import platform
import sys
import time

import psutil
import torch

from arlm_lib.corpus import load_corpus
from arlm_lib.data import encode_text, split_train_val
from arlm_lib.model import GPT, PRESETS, GPTConfig
from arlm_lib.tokenizers import train_tokenizer
from arlm_lib.train import Callback, TrainConfig, Trainer


def rss_mib() -> float:
    return psutil.Process().memory_info().rss / 2**20


def live_tensors() -> int:
    gc.collect()
    return sum(1 for obj in gc.get_objects() if issubclass(type(obj), torch.Tensor))


class MemoryProbe(Callback):
    """Keeps every record (like a dashboard) and samples memory every ``every`` steps."""

    def __init__(self, every: int) -> None:
        self.every = every
        self.records: list[dict] = []
        self.rows: list[tuple[int, float, int, int, float]] = []

    def sample(self, trainer: Trainer) -> None:
        history_bytes = sum(col.buffer_info()[1] * col.itemsize for col in trainer.history.columns.values())
        self.rows.append((trainer.step, rss_mib(), live_tensors(), history_bytes, time.perf_counter()))

    def on_step_end(self, trainer: Trainer, record: dict) -> None:
        self.records.append(record)
        if trainer.step == 1 or trainer.step % self.every == 0:
            self.sample(trainer)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=5000)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--block-size", type=int, default=32)
    parser.add_argument("--data", default="prose")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--every", type=int, default=1000, help="sample memory every N steps")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)

    start_rss = rss_mib()
    text = load_corpus(args.data)
    tokenizer = train_tokenizer("char", text)
    train, val = split_train_val(encode_text(text, tokenizer))
    config = GPTConfig.from_preset("tiny", vocab_size=tokenizer.vocab_size, block_size=args.block_size)
    torch.manual_seed(0)
    model = GPT(config)
    train_config = TrainConfig(
        batch_size=args.batch_size,
        max_iters=args.steps,
        eval_interval=500,
        eval_iters=5,
        device="cpu",
        progress=False,
        checkpoint_interval=0,
    )
    probe = MemoryProbe(args.every)
    trainer = Trainer(model, train, val, train_config, tokenizer, callbacks=[probe])

    preset = PRESETS["tiny"]
    shrunk = args.batch_size != TrainConfig().batch_size or args.block_size != preset.block_size
    print(f"# bench/memory.py: {args.steps:,} training steps of the `tiny` preset on {args.data!r}")
    print(
        f"# model {model.num_params() / 1e6:.2f}M params ({config.n_layer} layers, {config.n_head} heads, "
        f"{config.n_embd} wide), batch {args.batch_size}, context {args.block_size}, {args.threads} thread(s)"
    )
    if shrunk:
        print(
            f"# NOTE: batch and context are shrunk from the preset's (batch {TrainConfig().batch_size}, "
            f"context {preset.block_size}) to fit ~3 minutes on 2 CPU cores; override with flags"
        )
    print(f"# {platform.platform()}, python {sys.version.split()[0]}, torch {torch.__version__}")
    print(f"# RSS before loading data and model: {start_rss:.1f} MiB")
    t0 = time.perf_counter()
    trainer.train()
    probe.sample(trainer)

    first_rss = probe.rows[0][1]
    print()
    print("| step | RSS (MiB) | change since step 1 (MiB) | live tensors | history (KiB) | elapsed (s) |")
    print("|---:|---:|---:|---:|---:|---:|")
    seen = set()
    for step, rss, tensors, history_bytes, t in probe.rows:
        if step in seen:
            continue
        seen.add(step)
        print(
            f"| {step:,} | {rss:.1f} | {rss - first_rss:+.1f} | {tensors} | {history_bytes / 1024:.1f} | "
            f"{t - t0:.0f} |"
        )
    print()
    print(
        f"kept {len(probe.records):,} records in the callback and {len(trainer.history):,} history rows; "
        f"final train loss {trainer.history.column('train_loss')[-1]:.3f}"
    )


if __name__ == "__main__":
    main()
