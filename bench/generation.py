"""Generation speed with and without the KV cache, and a check that both give the same tokens.

    python bench/generation.py                 # tiny and small, 500 new tokens, 2 threads
    python bench/generation.py --presets tiny --new-tokens 200

For each preset (random init weights, vocab 65, eval mode) it times greedy decoding from a one-token
prompt twice: once within the context window (prompt + new tokens = block_size, so no cut), and once
for ``--new-tokens`` new tokens, which for both presets runs past the context. Past the context the
documented policy applies (see ``arlm_lib.generate``): the window grows to block_size and is then cut
to its last ``context_keep`` tokens (default block_size // 2), re-encoded once per cut with the cache;
without the cache every step re-encodes the whole window. ``--context-keep`` changes the cut
(``--context-keep 256`` with ``small`` is a true sliding window, where the cache cannot help past the
context). Prints a Markdown table. Each run is repeated (``--repeats``, alternating cache and no cache)
and the fastest counts; tokens/s use the process's CPU time, which a busy shared machine distorts far
less than wall-clock time (the wall-clock speedup is shown too). Greedy tokens must be identical.

``--compile`` adds a third column: the cache decoded through ``generate(..., compile=True)`` (a static
cache and a compiled one-token step; a CUDA graph on a GPU). Its first call, which compiles, is a
warm-up outside the timing.
"""

from __future__ import annotations

import argparse
import math
import platform
import time

import torch

from arlm_lib.device import synchronize
from arlm_lib.generate import GenerationConfig, generate_ids
from arlm_lib.generation.context import model_device
from arlm_lib.model import GPT, GPTConfig

VOCAB = 65  # Shakespeare-char sized


MODES = {"no cache": dict(use_cache=False), "cache": dict(use_cache=True), "compiled": dict(compile=True)}


def time_run(model: GPT, config: GenerationConfig, mode: str) -> tuple[list[int], float, float]:
    """Greedy tokens from the one-token prompt [0], and the (wall, CPU) seconds they took."""
    synchronize(model_device(model))
    wall, cpu = time.perf_counter(), time.process_time()
    ids = generate_ids(model, [0], config, **MODES[mode])
    synchronize(model_device(model))
    return ids, time.perf_counter() - wall, time.process_time() - cpu


def bench_preset(
    name: str, new_tokens: int, context_keep: int | None, device: str, repeats: int, modes: list[str]
) -> list[dict]:
    torch.manual_seed(0)
    model = GPT(GPTConfig.from_preset(name, vocab_size=VOCAB)).to(device).eval()
    block = model.config.block_size
    keep = context_keep or block // 2
    generate_ids(model, [0], max_new_tokens=8, temperature=0)  # warm-up: first-call allocations
    if "compiled" in modes:  # compiles the one-token step (and captures its CUDA graph)
        generate_ids(model, [0], max_new_tokens=8, temperature=0, compile=True)
    rows = []
    for n in (block - 1, new_tokens):
        label = "within context" if n <= block - 1 else f"past context (cut to last {keep})"
        config = GenerationConfig(max_new_tokens=n, temperature=0, context_keep=context_keep)
        best = {mode: [math.inf, math.inf] for mode in modes}
        outputs = {}
        for _ in range(repeats):  # alternate the modes, keep the fastest of each: load drifts on a shared box
            for mode in modes:
                outputs[mode], wall, cpu = time_run(model, config, mode)
                best[mode] = [min(best[mode][0], wall), min(best[mode][1], cpu)]
        (wall_c, cpu_c), (wall_f, cpu_f) = best["cache"], best["no cache"]
        # On a GPU the process's CPU time misses the device's work: there, tokens/s come from wall time.
        clock = 0 if device.startswith("cuda") else 1
        rows.append(
            dict(
                preset=name,
                params=model.num_params() / 1e6,
                block=block,
                new=n,
                label=label,
                full=n / best["no cache"][clock],
                cache=n / best["cache"][clock],
                compiled=n / best["compiled"][clock] if "compiled" in modes else None,
                speedup=cpu_f / cpu_c,
                wall_speedup=wall_f / wall_c,
                same=all(outputs[mode] == outputs["no cache"] for mode in modes),
            )
        )
        print(
            f"  {name}: {n} tokens, {label}: without cache {wall_f:.1f} s wall / {cpu_f:.1f} s CPU, "
            f"with {wall_c:.1f} s / {cpu_c:.1f} s",
            flush=True,
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--presets", nargs="+", default=["tiny", "small"])
    parser.add_argument("--new-tokens", type=int, default=500)
    parser.add_argument(
        "--context-keep", type=int, default=None, help="tokens kept at a cut (default block/2)"
    )
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="cpu", help="cpu, cuda, mps")
    parser.add_argument("--repeats", type=int, default=3, help="runs of each; the fastest counts")
    parser.add_argument(
        "--compile", action="store_true", help="also time compiled decoding (generate(..., compile=True))"
    )
    args = parser.parse_args()
    modes = ["cache", "no cache"] + (["compiled"] if args.compile else [])
    torch.set_num_threads(args.threads)
    where = torch.cuda.get_device_name() if args.device.startswith("cuda") else args.device
    print(f"torch {torch.__version__}, {platform.machine()}, {args.threads} CPU threads, device: {where}")
    rows = [
        row
        for name in args.presets
        for row in bench_preset(name, args.new_tokens, args.context_keep, args.device, args.repeats, modes)
    ]
    print()
    compiled_header = " compiled cache (tok/s) |" if args.compile else ""
    print(
        "| preset | params (M) | block | new tokens | context | no cache (tok/s) | KV cache (tok/s) "
        f"|{compiled_header} speedup | speedup (wall) | same tokens |"
    )
    print("|---|---:|---:|---:|---|---:|---:|" + ("---:|" if args.compile else "") + "---:|---:|---|")
    for r in rows:
        compiled_cell = f" {r['compiled']:.1f} |" if args.compile else ""
        print(
            f"| {r['preset']} | {r['params']:.2f} | {r['block']} | {r['new']} | {r['label']} | {r['full']:.1f} "
            f"| {r['cache']:.1f} |{compiled_cell} {r['speedup']:.1f}x | {r['wall_speedup']:.1f}x | "
            f"{'yes' if r['same'] else 'NO'} |"
        )
    if not all(r["same"] for r in rows):
        raise SystemExit("the KV cache (or compiled decoding) changed the tokens")


if __name__ == "__main__":
    main()
