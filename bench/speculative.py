"""Speculative decoding on the book's model: acceptance, tokens per pass of the model, and speed.

    python bench/speculative.py                    # n-gram drafts of order 2, 4, 6; k = 1, 2, 4, 8
    python bench/speculative.py --orders 6 --draft-tokens 4 --new-tokens 200

The model is the book's shared ``tiny-synthetic`` (shipped with the package, so nothing trains); the
drafts are n-gram models fitted on its training text. For each draft order, draft length k and mode
(greedy, and sampling at temperature 1 with a fixed seed) it generates ``--new-tokens`` tokens from the
start symbol with :func:`arlm_lib.generate.speculative_generate`, and the same number with plain
decoding. Greedy speculative tokens must equal plain greedy tokens (the script fails otherwise); when
sampling the two texts differ, so the speed-up compares equal lengths, not the same tokens.
"acceptance" is accepted draft tokens per draft token checked (``SpeculativeResult.acceptance_rate``:
a round stops at its first rejection); "tokens/pass" is new tokens per forward pass of the model. On
the CPU times are the process's CPU time, which a busy shared machine distorts little; on a GPU they
are wall-clock time with the device synchronised. The fastest of ``--repeats`` runs counts, alternating
plain and speculative decoding. Prints a Markdown table.
"""

from __future__ import annotations

import argparse
import math
import platform
import time

import torch

from arlm_lib.device import synchronize
from arlm_lib.generate import generate_ids, speculative_generate
from arlm_lib.ngram import NGramModel
from arlm_lib.zoo import trained


def timed(fn, device: str):
    """``fn()`` and its duration: CPU time on the CPU; on a GPU, wall-clock time with the queue drained
    (CPU time would miss the device's work, or count the host's busy waiting)."""
    if device == "cpu":
        start = time.process_time()
        out = fn()
        return out, time.process_time() - start
    synchronize(torch.device(device))
    start = time.perf_counter()
    out = fn()
    synchronize(torch.device(device))
    return out, time.perf_counter() - start


def bench(model, draft, start: list[int], order: int, k: int, greedy: bool, args) -> dict:
    new_tokens, repeats, device = args.new_tokens, args.repeats, args.device
    how = {"temperature": 0} if greedy else {"seed": 0}
    best_plain = best_spec = math.inf
    for _ in range(repeats):
        plain, seconds = timed(lambda: generate_ids(model, start, max_new_tokens=new_tokens, **how), device)
        best_plain = min(best_plain, seconds)
        result, seconds = timed(
            lambda: speculative_generate(
                model, draft, start, max_new_tokens=new_tokens, num_draft_tokens=k, **how
            ),
            device,
        )
        best_spec = min(best_spec, seconds)
    return dict(
        order=order,
        k=k,
        mode="greedy" if greedy else "sampling",
        acceptance=result.acceptance_rate,
        tokens_per_pass=result.tokens_per_pass,
        plain=new_tokens / best_plain,
        speculative=new_tokens / best_spec,
        speedup=best_plain / best_spec,
        same="yes" if result.ids == plain else "NO" if greedy else "-",
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--orders", type=int, nargs="+", default=[2, 4, 6], help="n-gram orders of the drafts"
    )
    parser.add_argument("--draft-tokens", type=int, nargs="+", default=[1, 2, 4, 8], help="values of k")
    parser.add_argument("--new-tokens", type=int, default=500)
    parser.add_argument("--repeats", type=int, default=3, help="runs of each; the fastest counts")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--device", default="cpu", help="cpu, cuda, mps")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    shared = trained("tiny-synthetic")
    model, tokenizer = shared.model.to(args.device).eval(), shared.tokenizer
    where = torch.cuda.get_device_name() if args.device.startswith("cuda") else args.device
    print(
        f"torch {torch.__version__}, {platform.machine()}, {args.threads} CPU threads, device: {where}; "
        f"model tiny-synthetic ({model.num_params() / 1e6:.2f} M parameters), {args.new_tokens} new tokens"
    )
    rows = []
    for order in args.orders:
        draft = NGramModel(order=order, vocab_size=tokenizer.vocab_size).fit(shared.train_tokens)
        for k in args.draft_tokens:
            for greedy in (True, False):
                row = bench(model, draft, [tokenizer.bos_id], order, k, greedy, args)
                rows.append(row)
                print(
                    f"  {order}-gram, k={k}, {row['mode']}: {row['tokens_per_pass']:.2f} tokens per pass",
                    flush=True,
                )
    print()
    print(
        "| draft | k | mode | acceptance | tokens/pass | plain (tok/s) | speculative (tok/s) | speedup "
        "| same tokens |"
    )
    print("|---|---:|---|---:|---:|---:|---:|---:|---|")
    for r in rows:
        print(
            f"| {r['order']}-gram | {r['k']} | {r['mode']} | {r['acceptance']:.2f} "
            f"| {r['tokens_per_pass']:.2f} | {r['plain']:.0f} | {r['speculative']:.0f} | {r['speedup']:.2f}x "
            f"| {r['same']} |"
        )
    if any(r["same"] == "NO" for r in rows):
        raise SystemExit("speculative decoding changed the greedy tokens")


if __name__ == "__main__":
    main()
