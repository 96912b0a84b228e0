"""One prepared GPU benchmark: training tokens/s and MFU, generation tokens/s, peak memory.

On a machine with CUDA (about 5 minutes on one H100/H200; it starts no item it expects to end after
``--budget-s`` seconds, 480 by default, so it ends within about 9 minutes)::

    python bench/gpu.py --json bench/gpu_results.json
    python bench/gpu.py --tune --json bench/gpu_results.json   # also the gpt2 tuning variants, ~9 minutes

It measures, in bf16 (fp16 on GPUs without bf16), with TF32 allowed and fused AdamW:

* training (forward, backward, clipping, AdamW step, through the real Trainer) of the ``small`` and
  ``gpt2`` presets, ``torch.compile`` off and on: median tokens/s, MFU and peak memory. MFU uses the
  trainer's FLOPs per token, 6N + 12·L·H·Q·T, divided by the datasheet peak of the GPU (when known, as
  nanoGPT and llm.c report it) and by a measured bf16 matmul peak. A batch that runs out of memory is
  halved and retried (the row says so) instead of losing the item;
* compiled decoding (``generate(..., compile=True)``: a static KV cache and a compiled one-token step,
  captured as a CUDA graph) against the plain KV cache, greedy, batch 1, a one-token prompt to the end
  of the context: tokens/s of each, how many tokens agree in bf16, and the first call's compile time.
  The H200 run found one-token steps bound by the host (3.7 ms of wall time for 0.64 ms of GPU work);
  this measures the remedy. It runs right after the compiled ``gpt2`` (and ``--tune``'s cheap variant);
* greedy generation from a one-token prompt to the end of the context with and without the KV cache
  (``arlm_lib.generate.generate_ids``), batch 1: tokens/s, peak memory, and whether both give the same
  tokens. That check is made in float32 (TF32 off), on the first 64 tokens: in bf16 the two paths
  round differently (one query against the cache vs. the whole causal square), and on random weights,
  whose logits are nearly tied, that alone can flip a greedy pick; the bf16 runs report how many
  tokens agree.

The header also names the attention kernel PyTorch's dispatcher picks for each preset's training call
(FLASH_ATTENTION expected on a GPU), and each compiled row counts the graphs torch.compile built (one
expected: more means a recompile or a graph break), two things a low MFU would otherwise leave open.

``--tune`` adds gpt2 training variants aimed at issue 8's target (45% MFU against the datasheet peak;
the H200 run measured 43.7% with the compiled batch-64 row), each a row of its own with its variant named:

* ``batch x2``: the default compile mode at twice the micro-batch (128 x 1024 on a GPU). The H200 run used
  40.9 of 141 GiB at 64, and a bigger step spreads the work that does not grow with the batch (clipping
  and the AdamW step over every parameter, the loss read back) over twice the tokens. Out of memory, it
  is halved like any other item;
* ``max-autotune-no-cudagraphs``: ``torch.compile(mode=...)`` at batch 64, which benchmarks Triton GEMM
  templates against cuBLAS and tunes the fused kernels' launch configurations while compiling (minutes
  more). Without CUDA graphs: they save kernel launches, a small share of a 130 ms step whose optimizer
  runs outside the graph anyway, and they would add a memory pool and input copies of their own.

Order: the quick eager items first, then the compiled ``gpt2`` (the number the GPU run is for), with
``--tune`` its cheap ``batch x2`` variant, then compiled decoding of ``gpt2`` (new since the H200 run),
then ``--tune``'s costly ``max-autotune-no-cudagraphs`` variant, then plain generation (measured before,
and no tuning changes it), then the compiled ``small`` and its compiled decoding: a run cut short by the
budget or the session loses the least. Each item carries about how long it took on the H200 (an
estimate for the new items; max-autotune's compile time is the least known), and an item expected to
end after ``--budget-s`` is skipped, not started. The default budget (480 s) keeps a plain run within
``timeout 540``; a ``--tune`` run expects about 515 s up to the max-autotune item, so its default
budget is 560 s, for ``timeout 590`` (the command in bench/RESULTS.md): 45 s of slack for the estimates
before it, the new decode item's above all, so that an overrun there does not skip the row the run is
for. In the reduced mode only the start of each item is checked.

Without CUDA (or with ``--reduced``) it runs the same code on the CPU with scaled-down models (2 layers,
64 wide, context 64) and 2 timed steps, so the script is known to work before a GPU is at hand; those
numbers say nothing about GPU speed. Results go to a table on stdout and, with ``--json``, to a JSON
file that is rewritten after every item (a run cut short keeps what it measured).
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import signal
import statistics
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the sibling bench script, when imported
# This checkout's arlm_lib, also where the package is not pip-installed (a bare GPU machine with only torch).
sys.path.insert(1, str(Path(__file__).resolve().parents[1]))

from train_throughput import machine_description, measure_training  # noqa: E402

from arlm_lib.device import measure_peak_flops, resolve_dtype, spec_peak_flops, synchronize  # noqa: E402
from arlm_lib.generate import GenerationConfig, generate_ids  # noqa: E402
from arlm_lib.model import GPT, GPTConfig  # noqa: E402

# Micro-batches on a GPU: nanoGPT's Shakespeare-char batch for small; 64 x 1024 tokens for gpt2 (as
# llm.c on an H100). Eager bf16 keeps ~0.5 GiB of activations per gpt2 sequence (measured on the CPU
# with saved-tensor hooks), plus the float32 logits of the loss: ~60 GiB at 64, within an 80 GB card and
# far within an H200; compiled, less. The larger the step, the smaller the share of the per-step
# overhead (host read, batch copy, launches) in it. Smaller cards: halved on out-of-memory.
GPU_BATCH = {"small": 64, "gpt2": 64}
# The --tune variants of the compiled gpt2: (variant, compile mode, batch multiplier), cheap one first.
TUNE_VARIANTS = (("batch x2", None, 2), ("max-autotune-no-cudagraphs", "max-autotune-no-cudagraphs", 1))
# About how long each item takes on one H200 (bench/results/gpu_h200_2026-11-29.log, rounded up); the
# --tune ones are estimates: twice the batch compiles as fast and steps twice as long, and max-autotune
# compiles for minutes (its tuning benchmarks every candidate kernel).
H200_SECONDS = {
    "train small compile off": 10,
    "train gpt2 compile off": 10,
    "train gpt2 compile on": 35,
    "train gpt2 compile on, batch x2": 60,
    "train gpt2 compile on, max-autotune-no-cudagraphs": 300,
    "generate small": 50,
    "generate gpt2": 180,
    # Estimates: compiling the one-token step and capturing its CUDA graph, then 3 runs each way.
    "decode small compiled": 50,
    "decode gpt2 compiled": 100,
    "train small compile on": 15,
}
REDUCED = dict(n_layer=2, n_head=2, n_embd=64, block_size=64)
DEFAULT_BUDGET_S = 480.0  # with `timeout 540`: room for the start-up and an estimate that ran over
TUNE_BUDGET_S = 560.0  # --tune, with `timeout 590`: the max-autotune row is the one the run is for
CHECK_TOKENS = 64  # float32 cache-vs-no-cache check: tokens generated


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


def sdpa_backends(args, device: torch.device, dtype: torch.dtype) -> dict[str, str]:
    """The kernel scaled_dot_product_attention picks for each preset's training call (q, k, v as views of
    one c_attn output, causal, no mask, the preset's dropout, in the training dtype). FLASH_ATTENTION is
    what a high MFU needs; MATH would explain a low one, and a one-off GPU run has no other way to tell.
    ``torch._fused_sdp_choice`` is private (present since torch 2.0), so a failure is reported, never raised.
    """
    backends = {}
    for preset in args.presets:
        try:
            from torch.nn.attention import SDPBackend

            c = bench_config(preset, args.reduced)
            shape = (1, c.block_size, c.n_head, c.head_dim)
            qkv = torch.zeros(1, c.block_size, 3 * c.n_embd, device=device, dtype=dtype, requires_grad=True)
            q, k, v = (t.view(shape).transpose(1, 2) for t in qkv.split(c.n_embd, dim=2))
            backends[preset] = SDPBackend(torch._fused_sdp_choice(q, k, v, None, c.dropout, True)).name
        except Exception as exc:
            backends[preset] = f"unknown ({type(exc).__name__}: {str(exc).strip()[:200]})"
    return backends


def dynamo_counts() -> tuple[int, int] | None:
    """Graphs torch.compile has built and graph breaks it has met so far in this process (private
    counters, which ``torch._dynamo.reset()`` does not clear; None where they are missing)."""
    try:
        from torch._dynamo.utils import counters

        return int(counters["stats"]["unique_graphs"]), int(sum(counters["graph_break"].values()))
    except Exception:
        return None


def train_item(
    preset: str,
    compile: bool,
    args,
    device: torch.device,
    peaks: dict,
    compile_mode: str | None = None,
    batch_multiplier: int = 1,
    variant: str | None = None,
) -> dict:
    """One training row; ``variant`` names a --tune variant (None for the plain rows)."""
    config = bench_config(preset, args.reduced)
    batch = (2 if args.reduced else GPU_BATCH[preset]) * batch_multiplier
    halved_from = []
    while True:
        before = dynamo_counts()  # per attempt: an attempt that ran out of memory may have compiled too
        try:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")  # every warning, every time: the JSON row lists them
                result = measure_training(
                    config,
                    batch,
                    args.steps,
                    args.warmup,
                    str(device),
                    args.dtype,
                    compile,
                    peak_flops=None,
                    compile_mode=compile_mode,
                )
            break
        except torch.cuda.OutOfMemoryError:  # torch.OutOfMemoryError only from torch 2.5
            if batch == 1:
                raise
        # Outside the except block, so the failed attempt's model and optimizer can be freed first.
        release_memory(device)
        halved_from.append(batch)
        batch //= 2
        print(f"    out of memory at batch {halved_from[-1]}: retrying with {batch}", flush=True)
    fallback = [str(w.message) for w in caught if "torch.compile failed" in str(w.message)]
    # Every other warning too (an attention backend that is not used, a compiler's performance hint): in
    # a one-off GPU run it may be the only clue to a low MFU.
    seen = sorted(
        {f"{w.category.__name__}: {(str(w.message).strip().splitlines() or [''])[0][:300]}" for w in caught}
    )
    achieved = result["flops_per_token"] * result["tokens_per_s"]
    # One graph per compiled item is expected; more means a recompile or a graph break, and a recompile
    # after the warm-up steps would land in the timing (the median of the timed steps mostly hides it).
    after = dynamo_counts()
    graphs = [b - a for a, b in zip(before, after)] if compile and before and after else None
    return {
        "item": "train",
        "preset": preset,
        "compile": compile,
        "compile_mode": result["compile_mode"],  # as the trainer got it; None: torch.compile's default
        "variant": variant,
        "compiled": result["compiled"],
        "compile_fallback": fallback[0] if fallback else None,
        "compiled_graphs": graphs[0] if graphs else None,
        "graph_breaks": graphs[1] if graphs else None,
        "oom_halved_from": halved_from,
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
        "warnings": seen,
    }


def agreeing_prefix(a: list[int], b: list[int]) -> int:
    """How many tokens two generations share before they first differ."""
    return next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))


def cache_check_float32(model: GPT) -> bool:
    """Whether the KV cache and the cache-free path pick the same greedy tokens; ``model`` in float32,
    and TF32 off (so that only a real difference, not rounding, can make them disagree)."""
    tf32 = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = False
    try:
        config = GenerationConfig(
            max_new_tokens=min(CHECK_TOKENS, model.config.block_size - 1), temperature=0
        )
        return generate_ids(model, [0], config, use_cache=True) == generate_ids(
            model, [0], config, use_cache=False
        )
    finally:
        torch.backends.cuda.matmul.allow_tf32 = tf32


def generation_item(preset: str, args, device: torch.device, dtype: torch.dtype) -> dict:
    torch.manual_seed(0)
    model = GPT(bench_config(preset, args.reduced)).to(device=device).eval()
    same_float32 = cache_check_float32(model)
    model.to(dtype=dtype)
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
    row["same_tokens"] = same_float32
    row["tokens_agreeing"] = agreeing_prefix(outputs[True], outputs[False])  # in dtype, of new_tokens
    return row


def compiled_decoding_item(preset: str, args, device: torch.device, dtype: torch.dtype) -> dict:
    """Greedy decoding with the plain KV cache against ``generate(..., compile=True)`` (a static cache
    and a compiled one-token step, a CUDA graph on a GPU), batch 1, one-token prompt to the full context.
    The first compiled call (compile and capture) is timed on its own, outside the tokens/s."""
    torch.manual_seed(0)
    model = GPT(bench_config(preset, args.reduced)).to(device=device, dtype=dtype).eval()
    new_tokens = model.config.block_size - 1
    config = GenerationConfig(max_new_tokens=new_tokens, temperature=0)
    generate_ids(model, [0], config, max_new_tokens=4)  # warm-up of the plain path
    synchronize(device)
    start = time.perf_counter()
    generate_ids(model, [0], config, max_new_tokens=4, compile=True)
    synchronize(device)
    row = {
        "item": "decode",
        "preset": preset,
        "new_tokens": new_tokens,
        "first_call_s": time.perf_counter() - start,
    }
    outputs, times = {}, {True: [], False: []}
    for _ in range(args.gen_repeats):  # alternated: a drifting clock or load affects both alike
        for compiled in (True, False):
            synchronize(device)
            start = time.perf_counter()
            outputs[compiled] = generate_ids(model, [0], config, compile=compiled)
            synchronize(device)
            times[compiled].append(time.perf_counter() - start)
    row["compiled_tokens_per_s"] = new_tokens / statistics.median(times[True])
    row["cache_tokens_per_s"] = new_tokens / statistics.median(times[False])
    row["speedup"] = row["compiled_tokens_per_s"] / row["cache_tokens_per_s"]
    # In bf16 the two round differently (fused kernels), so near-tied random logits may flip a pick.
    row["tokens_agreeing"] = agreeing_prefix(outputs[True], outputs[False])
    return row


def fmt(value, spec: str = ",.0f", scale: float = 1.0, suffix: str = "") -> str:
    return "n/a" if value is None else f"{value * scale:{spec}}{suffix}"


def print_tables(results: dict) -> None:
    train = [r for r in results["items"] if r["item"] == "train"]
    gen = [r for r in results["items"] if r["item"] == "generate"]
    if train:
        print(
            "\n| preset | params | batch x context | compile | variant | tokens/s | ms/step | TFLOP/s "
            "| MFU (datasheet) | MFU (measured matmul peak) | peak memory |"
        )
        print("|" + "---|" * 11)
        for r in train:
            compiled = "on" if r["compiled"] else ("off" if not r["compile"] else "failed: eager")
            batch = f"{r['batch_size']}x{r['block_size']}"
            if r["oom_halved_from"]:
                batch += f" (out of memory at {r['oom_halved_from'][0]})"
            print(
                f"| {r['preset']} | {r['params_M']:.1f}M | {batch} | {compiled} | {r['variant'] or '-'} | "
                f"{fmt(r['tokens_per_s'])} | {fmt(r['ms_per_step'], '.1f')} | {fmt(r['achieved_TFLOPs'], '.3g')} | "
                f"{fmt(r['mfu_spec'], '.1f', 100, '%')} | {fmt(r['mfu_measured'], '.1f', 100, '%')} | "
                f"{fmt(r['peak_memory_GiB'], '.1f', suffix=' GiB')} |"
            )
    if gen:
        print(
            f"\n| preset | new tokens | KV cache tokens/s | no cache tokens/s | speed-up | same tokens (float32, "
            f"{CHECK_TOKENS}) | tokens agreeing ({results['dtype']}) | peak memory (cache / no cache) |"
        )
        print("|" + "---|" * 8)
        for r in gen:
            print(
                f"| {r['preset']} | {r['new_tokens']} | {fmt(r['cache_tokens_per_s'])} | "
                f"{fmt(r['no_cache_tokens_per_s'])} | {r['speedup']:.1f}x | {'yes' if r['same_tokens'] else 'NO'} | "
                f"{r['tokens_agreeing']} of {r['new_tokens']} | "
                f"{fmt(r['cache_peak_memory_GiB'], '.2f')} / {fmt(r['no_cache_peak_memory_GiB'], '.2f', suffix=' GiB')} |"
            )
    decode = [r for r in results["items"] if r["item"] == "decode"]
    if decode:
        print(
            "\n| preset | new tokens | compiled decoding tokens/s | KV cache tokens/s | speed-up "
            f"| tokens agreeing ({results['dtype']}) | first call (compile) |"
        )
        print("|" + "---|" * 7)
        for r in decode:
            print(
                f"| {r['preset']} | {r['new_tokens']} | {fmt(r['compiled_tokens_per_s'])} | "
                f"{fmt(r['cache_tokens_per_s'])} | {r['speedup']:.1f}x | {r['tokens_agreeing']} of {r['new_tokens']} "
                f"| {r['first_call_s']:.0f} s |"
            )
    for r in train:
        if (r.get("compiled_graphs") or 0) > 1 or r.get("graph_breaks"):
            label = r["preset"] + (f" ({r['variant']})" if r["variant"] else "")
            print(
                f"note: {label} compiled {r['compiled_graphs']} graphs with {r['graph_breaks']} graph "
                "break(s): a recompile or a break, where one graph was expected"
            )
    for name in results["skipped"]:
        print(f"skipped (time budget): {name}")
    for failure in results["failed"]:
        print(f"FAILED: {failure}")
    if results.get("interrupted"):
        print(f"INTERRUPTED during: {results['interrupted']}")


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
    parser.add_argument(
        "--no-compile", action="store_true", help="skip every compiled item (training and decoding)"
    )
    parser.add_argument(
        "--tune",
        action="store_true",
        help="also the gpt2 variants aimed at 45%% MFU: batch x2, and compile mode max-autotune-no-cudagraphs",
    )
    parser.add_argument(
        "--gen-repeats", type=int, help="generation runs per setting (median; default 3, 1 reduced)"
    )
    parser.add_argument(
        "--budget-s",
        type=float,
        help=f"start no item expected to end after this many seconds (on a GPU; reduced: to start after); "
        f"default {DEFAULT_BUDGET_S:.0f}, {TUNE_BUDGET_S:.0f} with --tune",
    )
    args = parser.parse_args(argv)
    if args.budget_s is None:
        args.budget_s = TUNE_BUDGET_S if args.tune else DEFAULT_BUDGET_S
    if args.tune and (args.no_compile or "gpt2" not in args.presets):
        parser.error("--tune varies the compiled gpt2: it needs the gpt2 preset and no --no-compile")

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
    # A GPU idles at a low clock: time the matmul for a second, not the default quarter, so it ramps up.
    measured = measure_peak_flops(device, dtype, min_time_s=1.0 if cuda else 0.25)
    peaks = {"spec": spec_peak_flops(device, dtype), "measured": measured}
    attention = sdpa_backends(args, device, dtype)
    print(" | ".join(f"{k}: {v}" for k, v in machine.items()))
    print(
        f"mode: {'reduced (CPU, scaled-down models)' if args.reduced else 'CUDA'} | dtype {args.dtype} | "
        f"peak FLOP/s: datasheet {fmt(peaks['spec'], '.3g')}, measured matmul {peaks['measured']:.3g} | "
        f"attention kernel (training): {', '.join(f'{k} {v}' for k, v in attention.items())}",
        flush=True,
    )
    results = {
        "machine": machine,
        "mode": "reduced-cpu" if args.reduced else "cuda",
        "dtype": args.dtype,
        "steps": args.steps,
        "warmup": args.warmup,
        "peak_flops": peaks,
        "sdpa_backend": attention,
        "items": [],
        "skipped": [],
        "failed": [],
    }
    plan = build_plan(args, device, dtype, peaks)

    def save() -> None:
        results["total_s"] = time.perf_counter() - start
        if args.json:
            # Through a temporary file: a run killed mid-write (a second signal, the session's own
            # limit) keeps the last complete file instead of a truncated one.
            path = Path(args.json)
            tmp = path.with_name(path.name + ".tmp")
            tmp.write_text(json.dumps(results, indent=2))
            os.replace(tmp, path)

    # A `timeout` or a session that ends sends SIGTERM: end like Ctrl-C, with the table printed.
    previous_handler = signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    save()  # the machine and peaks, even if the first item takes the process down
    try:
        for name, run, expected_s in plan:
            elapsed = time.perf_counter() - start
            if elapsed + expected_s > args.budget_s:
                results["skipped"].append(name)
                print(
                    f"  {name}: skipped ({elapsed:.0f} s + about {expected_s:.0f} s > --budget-s)", flush=True
                )
                continue
            t0 = time.perf_counter()
            results["interrupted"] = name  # until it ends: a run killed meanwhile says where
            save()
            print(f"  {name} ...", flush=True)
            try:
                results["items"].append(run())
                print(f"  {name}: {time.perf_counter() - t0:.0f} s", flush=True)
            except Exception as exc:  # one failing item must not cost the others' numbers
                first_line = (str(exc).strip().splitlines() or [""])[0][:500]
                results["failed"].append(f"{name}: {type(exc).__name__}: {first_line}")
                print(f"  {name}: FAILED {type(exc).__name__}: {first_line}", flush=True)
            del results["interrupted"]
            release_memory(device)
            save()
    finally:  # also on SIGTERM / Ctrl-C: what was measured is kept and shown
        signal.signal(signal.SIGTERM, previous_handler)  # main() may be called from a test or a script
        save()
        print_tables(results)
        print(f"\ntotal {results['total_s']:.0f} s")
    return 1 if results["failed"] else 0


def build_plan(
    args, device: torch.device, dtype: torch.dtype, peaks: dict
) -> list[tuple[str, Callable[[], dict], float]]:
    """The items in the order they run, each with the seconds it is expected to take: the quick eager
    ones, the compiled gpt2 (the number the GPU run is for), with ``--tune`` its variants, generation,
    and the compiled small last, so a run cut short loses the least (see the module docstring)."""

    def item(name: str, run: Callable[[], dict]) -> tuple[str, Callable[[], dict], float]:
        # An H200's seconds say nothing about the reduced mode's CPU: there only the start is checked.
        return name, run, 0.0 if args.reduced else float(H200_SECONDS[name])

    presets = args.presets
    plan = [
        item(f"train {p} compile off", lambda p=p: train_item(p, False, args, device, peaks)) for p in presets
    ]
    compiled = [
        item(f"train {p} compile on", lambda p=p: train_item(p, True, args, device, peaks))
        for p in sorted(presets, key=lambda p: p != "gpt2")
    ]
    decode = [
        item(f"decode {p} compiled", lambda p=p: compiled_decoding_item(p, args, device, dtype))
        for p in sorted(presets, key=lambda p: p != "gpt2")
    ]
    if args.no_compile:
        compiled, decode = [], []
    plan += compiled[:1]
    tune = []
    if args.tune:
        tune = [
            item(
                f"train gpt2 compile on, {variant}",
                lambda variant=variant, mode=mode, multiplier=multiplier: train_item(
                    "gpt2", True, args, device, peaks, mode, batch_multiplier=multiplier, variant=variant
                ),
            )
            for variant, mode, multiplier in TUNE_VARIANTS
        ]
        plan += tune[:1]
    plan += decode[:1]  # new since the H200 run: before the costly max-autotune variant
    if args.tune:
        plan += tune[1:]
    plan += [item(f"generate {p}", lambda p=p: generation_item(p, args, device, dtype)) for p in presets]
    plan += compiled[1:] + decode[1:]
    return plan


if __name__ == "__main__":
    raise SystemExit(main())
