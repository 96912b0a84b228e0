"""Training throughput: tokens per second through forward, backward and the optimizer step.

    python bench/train_throughput.py                      # tiny, small, nanoGPT's CPU setting
    python bench/train_throughput.py --threads 1          # what bench/RESULTS.md records on a shared CPU
    python bench/train_throughput.py --steps 10 --warmup 3 --models tiny
    python bench/train_throughput.py --device cuda --dtype bfloat16 --compile

Each model trains on random tokens (vocab 65, Shakespeare-char sized) through the real
:class:`~arlm_lib.train.Trainer`, with both attention paths side by side: ``fast`` (fused
scaled_dot_product_attention) and ``explicit`` (softmax(QKᵀ/√d)·V written out). The trainer times every
step itself (batch sampling, forward, backward, clipping, AdamW; not evaluation); the table shows the
median over the timed steps, after ``--warmup`` steps that are not counted (allocations, compilation).
Timing goes on for at least ``--steps`` steps and at least ``--min-time`` seconds.
Timings are wall-clock on a possibly shared machine: compare columns of one table, not tables of
different days.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import time
from dataclasses import dataclass

import torch

from arlm_lib.device import resolve_device, resolve_dtype, resolve_peak_flops, spec_peak_flops
from arlm_lib.model import GPT, GPTConfig
from arlm_lib.train import Callback, TrainConfig, Trainer

VOCAB = 65


@dataclass(frozen=True)
class Setting:
    """A model to time and the micro-batch it trains with on a CPU and on a GPU."""

    name: str
    config: GPTConfig
    cpu_batch: int
    gpu_batch: int

    def batch_size(self, device: torch.device) -> int:
        return self.cpu_batch if device.type == "cpu" else self.gpu_batch


def settings(vocab_size: int = VOCAB) -> dict[str, Setting]:
    """The rows of the table: the book's presets and nanoGPT's CPU example."""
    return {
        "tiny": Setting("tiny", GPTConfig.from_preset("tiny", vocab_size=vocab_size), 32, 64),
        # On a CPU a smaller batch keeps the run short; 64 is nanoGPT's Shakespeare-char batch.
        "small": Setting("small", GPTConfig.from_preset("small", vocab_size=vocab_size), 4, 64),
        # nanoGPT README, "I only have a macbook": 4 layers, 4 heads, 128 wide, context 64, batch 12.
        "nanogpt-cpu": Setting(
            "nanogpt-cpu",
            GPTConfig(vocab_size=vocab_size, block_size=64, n_layer=4, n_head=4, n_embd=128, dropout=0.0),
            12,
            12,
        ),
    }


def measure_training(
    config: GPTConfig,
    batch_size: int,
    steps: int,
    warmup: int,
    device: str = "auto",
    dtype: str = "auto",
    compile: bool = False,
    peak_flops: float | str | None = None,
    min_time_s: float = 0.0,
    compile_mode: str | None = None,
) -> dict:
    """Train on random tokens: ``warmup`` untimed steps, then at least ``steps`` timed steps and
    ``min_time_s`` seconds; the median tokens/s and MFU of the timed steps. ``compile_mode`` is
    torch.compile's mode (with ``compile``; None: its default)."""
    torch.manual_seed(0)
    model = GPT(config)
    tokens = torch.randint(config.vocab_size, (max(200_000, 4 * batch_size * (config.block_size + 1)),))
    train_config = TrainConfig(
        batch_size=batch_size,
        # One step more than the Clock below stops at: the trainer evaluates at max_iters, on a whole batch
        # in eager mode, which would land inside the timing and the peak-memory window.
        max_iters=warmup + max(steps, 10_000 if min_time_s else 0) + 1,
        warmup_iters=0,
        eval_interval=10**9,
        eval_iters=1,
        device=device,
        dtype=dtype,
        compile=compile,
        compile_mode=compile_mode,
        peak_flops=peak_flops,
        progress=False,
    )

    class Clock(Callback):
        """Process CPU time after each step, and a stop once enough steps and seconds were timed."""

        def __init__(self) -> None:
            self.marks: list[float] = []
            self.timed_from = 0.0

        def on_train_begin(self, trainer) -> None:
            self.marks.append(time.process_time())

        def on_step_end(self, trainer, record) -> None:
            self.marks.append(time.process_time())
            if record["step"] == warmup:
                self.timed_from = time.perf_counter()
            timed = record["step"] - warmup
            if timed >= steps and time.perf_counter() - self.timed_from >= min_time_s:
                trainer.request_stop()

    clock = Clock()
    trainer = Trainer(model, tokens, tokens[:50_000], train_config, callbacks=[clock])
    if trainer.device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(trainer.device)
    start = time.perf_counter()
    history = trainer.train()
    wall = time.perf_counter() - start
    tokens_per_s = history.column("tokens_per_s")[warmup:]
    timed_steps = len(tokens_per_s)
    cpu_s = clock.marks[-1] - clock.marks[warmup]
    mfu = [m for m in history.column("mfu")[warmup:] if m == m]
    return {
        "params_M": model.num_params() / 1e6,
        "flops_per_token": trainer.flops_per_token,
        "batch_size": batch_size,
        "block_size": config.block_size,
        "attention": config.attention,
        "dtype": str(trainer.dtype).removeprefix("torch."),
        "compiled": hasattr(trainer.model, "_orig_mod"),
        "compile_mode": trainer.config.compile_mode,
        "tokens_per_s": statistics.median(tokens_per_s),
        "ms_per_step": 1000 * batch_size * config.block_size / statistics.median(tokens_per_s),
        "tokens_per_cpu_s": timed_steps * batch_size * config.block_size / cpu_s if cpu_s > 0 else None,
        "timed_steps": timed_steps,
        "mfu": statistics.median(mfu) if mfu else None,
        "peak_memory_GiB": torch.cuda.max_memory_allocated(trainer.device) / 2**30
        if trainer.device.type == "cuda"
        else None,
        "final_loss": history.column("train_loss")[-1],
        "wall_s": wall,
    }


def machine_description(device: torch.device) -> dict:
    """What the numbers were measured on: CPU model and cores, GPU name, torch version, load."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10).stdout.splitlines():
            if line.startswith("Model name:"):
                cpu = line.split(":", 1)[1].strip()
    except (OSError, subprocess.SubprocessError):
        pass
    info = {
        "date": time.strftime("%Y-%m-%d"),
        "cpu": cpu,
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "device": str(device),
    }
    if hasattr(os, "getloadavg"):
        info["load_average_1min"] = round(os.getloadavg()[0], 1)
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
        info["cuda"] = torch.version.cuda
    return info


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--models", nargs="+", default=["tiny", "small", "nanogpt-cpu"], choices=list(settings())
    )
    parser.add_argument("--steps", type=int, default=2, help="timed steps per measurement, at least")
    parser.add_argument(
        "--min-time", type=float, default=6.0, help="seconds of timed steps per measurement, at least"
    )
    parser.add_argument("--warmup", type=int, default=1, help="untimed steps first")
    parser.add_argument("--batch-size", type=int, help="override every row's micro-batch")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--dtype", default="auto", help="auto = bf16 on CUDA, float32 on CPU")
    parser.add_argument("--compile", action="store_true", help="torch.compile the model")
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: all cores)")
    parser.add_argument("--peak-flops", help="FLOP/s for the MFU column, or 'auto' to measure a matmul")
    parser.add_argument("--json", help="also write the results to this JSON file")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    device = resolve_device(args.device)
    dtype = resolve_dtype(args.dtype, device)
    peak = args.peak_flops
    if peak is None and device.type == "cuda":
        peak = spec_peak_flops(device, dtype)
    elif peak not in (None, "auto"):
        peak = float(peak)
    if peak == "auto":
        peak = resolve_peak_flops("auto", device, dtype)
    machine = machine_description(device)
    print(" | ".join(f"{k}: {v}" for k, v in machine.items()))

    rows = []
    for name in args.models:
        setting = settings()[name]
        batch = args.batch_size or setting.batch_size(device)
        row = {"model": name}
        for attention in ("fast", "explicit"):
            cfg = GPTConfig.from_dict({**setting.config.to_dict(), "attention": attention})
            result = measure_training(
                cfg,
                batch,
                args.steps,
                args.warmup,
                args.device,
                args.dtype,
                args.compile,
                peak,
                args.min_time,
            )
            row.update({"params_M": result["params_M"], "shape": f"{batch}x{cfg.block_size}"})
            row[attention] = result
        rows.append(row)
        print(f"  measured {name}", flush=True)

    mfu = peak is not None
    on_cpu = device.type == "cpu"
    header = "| model | params | batch x context | fast tok/s | explicit tok/s | explicit / fast |"
    header += " fast tok/CPU-s | explicit tok/CPU-s |" if on_cpu else ""
    header += " fast MFU |" if mfu else ""
    print()
    print(header)
    print("|" + "---|" * (header.count("|") - 1))
    for row in rows:
        fast, explicit = row["fast"]["tokens_per_s"], row["explicit"]["tokens_per_s"]
        line = (
            f"| {row['model']} | {row['params_M']:.2f}M | {row['shape']} | {fast:,.0f} | {explicit:,.0f} | "
            f"{explicit / fast:.2f} |"
        )
        if on_cpu:
            line += f" {row['fast']['tokens_per_cpu_s']:,.0f} | {row['explicit']['tokens_per_cpu_s']:,.0f} |"
        if mfu:
            line += f" {100 * row['fast']['mfu']:.1f}% |"
        print(line)
    print(
        f"\nAt least {args.steps} timed steps and {args.min_time:g} s after {args.warmup} warm-up steps; "
        f"{torch.get_num_threads()} CPU thread(s); dtype {rows[0]['fast']['dtype']}, "
        f"compile {'on' if args.compile else 'off'}; median tokens/s (wall clock) of the timed steps."
    )
    if on_cpu:
        print(
            "tok/CPU-s: timed tokens / CPU seconds this process used (all its threads). On a shared machine "
            "wall-clock tok/s drops with the load; tokens per CPU-second much less."
        )
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"machine": machine, "peak_flops": peak, "rows": rows}, fh, indent=2)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
