"""One prepared GPU benchmark: training tokens/s and MFU, generation tokens/s, peak memory.

On a machine with CUDA (about 5 minutes on one H100/H200; it stops starting new items after
``--budget-s`` seconds, 480 by default, so it ends within about 10 minutes)::

    python bench/gpu.py --json bench/gpu_results.json

It measures, in bf16 (fp16 on GPUs without bf16), with TF32 allowed and fused AdamW:

* training (forward, backward, clipping, AdamW step, through the real Trainer) of the ``small`` and
  ``gpt2`` presets, ``torch.compile`` off and on: median tokens/s, MFU and peak memory. MFU uses the
  trainer's FLOPs per token, 6N + 12·L·H·Q·T, divided by the datasheet peak of the GPU (when known, as
  nanoGPT and llm.c report it) and by a measured bf16 matmul peak;
* greedy generation from a one-token prompt to the end of the context with and without the KV cache
  (``arlm_lib.generate.generate_ids``), batch 1: tokens/s, peak memory, and whether both give the
  same tokens.

Without CUDA (or with ``--reduced``) it runs the same code on the CPU with scaled-down models (2 layers,
64 wide, context 64) and 2 timed steps, so the script is known to work before a GPU is at hand; those
numbers say nothing about GPU speed. Results go to a table on stdout and, with ``--json``, to a JSON
file that is rewritten after every item (a run cut short keeps what it measured).
"""

from __future__ import annotations

import argparse
import gc
import json
import statistics
import sys
import time
import warnings
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the sibling bench script, when imported

from train_throughput import machine_description, measure_training  # noqa: E402

from arlm_lib.device import measure_peak_flops, resolve_dtype, spec_peak_flops, synchronize  # noqa: E402
from arlm_lib.generate import GenerationConfig, generate_ids  # noqa: E402
from arlm_lib.model import GPT, GPTConfig  # noqa: E402

# Micro-batches on a GPU: nanoGPT's Shakespeare-char batch for small; 32 x 1024 tokens for gpt2 (well
# within an 80 GB card in eager mode, and enough work per step to keep the GPU busy).
GPU_BATCH = {"small": 64, "gpt2": 32}
REDUCED = dict(n_layer=2, n_head=2, n_embd=64, block_size=64)


def bench_config(preset: str, reduced: bool) -> GPTConfig:
    """The preset (vocab 65 for small, as Shakespeare-char; gpt2's own 50304), scaled down if reduced."""
    overrides = {"vocab_size": 65} if preset == "small" else {}
    if reduced:
        overrides.update(REDUCED)
    return GPTConfig.from_preset(preset, **overrides)


def release_memory(device: torch.device) -> None:
    """Free what the last item left (compiled graphs, cached blocks) so items do not interfere."""
    torch._dynamo.reset()
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def train_item(preset: str, compile: bool, args, device: torch.device, peaks: dict) -> dict:
    config = bench_config(preset, args.reduced)
    batch = 2 if args.reduced else GPU_BATCH[preset]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", RuntimeWarning)
        result = measure_training(
            config, batch, args.steps, args.warmup, str(device), args.dtype, compile, peak_flops=None
        )
    fallback = [str(w.message) for w in caught if "torch.compile failed" in str(w.message)]
    achieved = result["flops_per_token"] * result["tokens_per_s"]
    return {
        "item": "train",
        "preset": preset,
        "compile": compile,
        "compiled": result["compiled"],
        "compile_fallback": fallback[0] if fallback else None,
        **{
            k: result[k]
            for k in ("params_M", "batch_size", "block_size", "dtype", "tokens_per_s", "ms_per_step")
        },
        "achieved_TFLOPs": achieved / 1e12,
        "mfu_spec": achieved / peaks["spec"] if peaks["spec"] else None,
        "mfu_measured": achieved / peaks["measured"],
        "peak_memory_GiB": result["peak_memory_GiB"],
        "final_loss": result["final_loss"],
        "wall_s": result["wall_s"],
    }


def generation_item(preset: str, args, device: torch.device, dtype: torch.dtype) -> dict:
    torch.manual_seed(0)
    model = GPT(bench_config(preset, args.reduced)).to(device=device, dtype=dtype).eval()
    new_tokens = model.config.block_size - 1  # one-token prompt up to the full context: no window cut
    config = GenerationConfig(max_new_tokens=new_tokens, temperature=0)
    generate_ids(model, [0], config, max_new_tokens=4)  # warm-up: kernels, allocator
    row = {
        "item": "generate",
        "preset": preset,
        "dtype": str(dtype).removeprefix("torch."),
        "new_tokens": new_tokens,
    }
    outputs = {}
    for use_cache in (True, False):
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        times = []
        for _ in range(args.gen_repeats):
            synchronize(device)
            start = time.perf_counter()
            outputs[use_cache] = generate_ids(model, [0], config, use_cache=use_cache)
            synchronize(device)
            times.append(time.perf_counter() - start)
        key = "cache" if use_cache else "no_cache"
        row[f"{key}_tokens_per_s"] = new_tokens / statistics.median(times)
        row[f"{key}_peak_memory_GiB"] = (
            torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None
        )
    row["speedup"] = row["cache_tokens_per_s"] / row["no_cache_tokens_per_s"]
    row["same_tokens"] = outputs[True] == outputs[False]
    return row


def fmt(value, spec: str = ",.0f", scale: float = 1.0, suffix: str = "") -> str:
    return "n/a" if value is None else f"{value * scale:{spec}}{suffix}"


def print_tables(results: dict) -> None:
    train = [r for r in results["items"] if r["item"] == "train"]
    gen = [r for r in results["items"] if r["item"] == "generate"]
    if train:
        print(
            "\n| preset | params | batch x context | compile | tokens/s | ms/step | TFLOP/s | MFU (datasheet) "
            "| MFU (measured matmul peak) | peak memory |"
        )
        print("|" + "---|" * 10)
        for r in train:
            compiled = "on" if r["compiled"] else ("off" if not r["compile"] else "failed: eager")
            print(
                f"| {r['preset']} | {r['params_M']:.1f}M | {r['batch_size']}x{r['block_size']} | {compiled} | "
                f"{fmt(r['tokens_per_s'])} | {fmt(r['ms_per_step'], '.1f')} | {fmt(r['achieved_TFLOPs'], '.3g')} | "
                f"{fmt(r['mfu_spec'], '.1f', 100, '%')} | {fmt(r['mfu_measured'], '.1f', 100, '%')} | "
                f"{fmt(r['peak_memory_GiB'], '.1f', suffix=' GiB')} |"
            )
    if gen:
        print(
            "\n| preset | new tokens | KV cache tokens/s | no cache tokens/s | speed-up | same tokens | peak memory "
            "(cache / no cache) |"
        )
        print("|" + "---|" * 7)
        for r in gen:
            print(
                f"| {r['preset']} | {r['new_tokens']} | {fmt(r['cache_tokens_per_s'])} | "
                f"{fmt(r['no_cache_tokens_per_s'])} | {r['speedup']:.1f}x | {'yes' if r['same_tokens'] else 'NO'} | "
                f"{fmt(r['cache_peak_memory_GiB'], '.2f')} / {fmt(r['no_cache_peak_memory_GiB'], '.2f', suffix=' GiB')} |"
            )
    for name in results["skipped"]:
        print(f"skipped (time budget): {name}")
    for failure in results["failed"]:
        print(f"FAILED: {failure}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", help="write the results here (rewritten after every item)")
    parser.add_argument(
        "--reduced", action="store_true", help="CPU-sized models and steps (automatic without CUDA)"
    )
    parser.add_argument(
        "--steps", type=int, help="timed training steps per item (default 20 on CUDA, 2 reduced)"
    )
    parser.add_argument(
        "--warmup", type=int, help="untimed steps first, compilation included (default 3, 1 reduced)"
    )
    parser.add_argument("--dtype", default="auto", help="auto = bf16, or fp16 on GPUs without bf16")
    parser.add_argument("--presets", nargs="+", default=["small", "gpt2"], choices=["small", "gpt2"])
    parser.add_argument("--no-compile", action="store_true", help="skip the compile-on training items")
    parser.add_argument(
        "--gen-repeats", type=int, help="generation runs per setting (median; default 3, 1 reduced)"
    )
    parser.add_argument(
        "--budget-s", type=float, default=480.0, help="start no new item after this many seconds"
    )
    args = parser.parse_args(argv)

    start = time.perf_counter()
    cuda = torch.cuda.is_available() and not args.reduced
    args.reduced = not cuda
    device = torch.device("cuda") if cuda else torch.device("cpu")
    if args.dtype == "auto":
        args.dtype = "bfloat16" if not cuda or torch.cuda.is_bf16_supported() else "float16"
    dtype = resolve_dtype(args.dtype, device)
    args.steps = args.steps or (2 if args.reduced else 20)
    args.warmup = args.warmup or (1 if args.reduced else 3)
    args.gen_repeats = args.gen_repeats or (1 if args.reduced else 3)
    if not cuda:
        torch.set_num_threads(1)  # a smoke run: one thread is kinder to a shared machine

    machine = machine_description(device)
    peaks = {"spec": spec_peak_flops(device, dtype), "measured": measure_peak_flops(device, dtype)}
    print(" | ".join(f"{k}: {v}" for k, v in machine.items()))
    print(
        f"mode: {'reduced (CPU, scaled-down models)' if args.reduced else 'CUDA'} | dtype {args.dtype} | "
        f"peak FLOP/s: datasheet {fmt(peaks['spec'], '.3g')}, measured matmul {peaks['measured']:.3g}",
        flush=True,
    )
    results = {
        "machine": machine,
        "mode": "reduced-cpu" if args.reduced else "cuda",
        "dtype": args.dtype,
        "steps": args.steps,
        "warmup": args.warmup,
        "peak_flops": peaks,
        "items": [],
        "skipped": [],
        "failed": [],
    }
    # Cheap items first, the compiled ones last: if the budget runs out, what is lost is the slowest.
    plan = [
        (f"train {p} compile off", lambda p=p: train_item(p, False, args, device, peaks))
        for p in args.presets
    ]
    plan += [(f"generate {p}", lambda p=p: generation_item(p, args, device, dtype)) for p in args.presets]
    if not args.no_compile:
        plan += [
            (f"train {p} compile on", lambda p=p: train_item(p, True, args, device, peaks))
            for p in args.presets
        ]

    for name, run in plan:
        if time.perf_counter() - start > args.budget_s:
            results["skipped"].append(name)
            continue
        t0 = time.perf_counter()
        try:
            results["items"].append(run())
            print(f"  {name}: {time.perf_counter() - t0:.0f} s", flush=True)
        except Exception as exc:  # one failing item must not cost the others' numbers
            results["failed"].append(f"{name}: {type(exc).__name__}: {exc}")
            print(f"  {name}: FAILED {type(exc).__name__}: {exc}", flush=True)
        release_memory(device)
        results["total_s"] = time.perf_counter() - start
        if args.json:
            Path(args.json).write_text(json.dumps(results, indent=2))
    print_tables(results)
    print(f"\ntotal {results['total_s']:.0f} s")
    return 1 if results["failed"] else 0


if __name__ == "__main__":
    raise SystemExit(main())
