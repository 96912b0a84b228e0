"""``python -m arlm_lib sample``: the body of the command, callable with a parsed argparse namespace."""

from __future__ import annotations

import sys
from typing import Any, TextIO

from torch import nn

from ..errors import GenerationError, TokenizerError
from .beam import beam_search
from .config import GenerationConfig, check_int
from .sampling import generate_text, make_generator, stream_text

__all__ = ["FLAG_OF_FIELD", "sample_cli"]

# The CLI flag behind each option, so errors name what the user typed.
FLAG_OF_FIELD = {
    "max_new_tokens": "--max-new-tokens",
    "temperature": "--temperature",
    "top_k": "--top-k",
    "top_p": "--top-p",
    "min_p": "--min-p",
    "repetition_penalty": "--repetition-penalty",
    "no_repeat_ngram_size": "--no-repeat-ngram",
    "num_beams": "--beam",
    "num_samples": "--num-samples",
    "seed": "--seed",
}

DEFAULTS: dict[str, Any] = {
    "prompt": "",
    "max_new_tokens": 200,
    "temperature": 1.0,
    "top_k": None,
    "top_p": None,
    "min_p": None,
    "repetition_penalty": None,
    "no_repeat_ngram": None,
    "beam": None,
    "num_samples": 1,
    "seed": None,
    "stream": False,
}


def _flagged(err: GenerationError) -> GenerationError:
    """The same error, reworded to name the CLI flag instead of the Python field."""
    field = getattr(err, "field", None)
    if field not in FLAG_OF_FIELD:
        return err
    return GenerationError(f"{FLAG_OF_FIELD[field]} {err.value!r} is not allowed: {err.allowed}")


def sample_cli(
    model: nn.Module, tokenizer: Any, args: Any = None, out: TextIO | None = None, **kwargs: Any
) -> int:
    """Print continuations of a prompt, as ``python -m arlm_lib sample`` does; returns the exit status 0.

    Options come from ``args`` (an argparse namespace; missing attributes take defaults) and ``kwargs``
    (which win): ``prompt`` (str, "" starts from the document-start token), ``max_new_tokens`` (200),
    ``temperature`` (1.0; 0 = greedy), ``top_k``, ``top_p``, ``min_p`` (None = off),
    ``repetition_penalty`` (None = 1.0), ``no_repeat_ngram`` (None/0 = off), ``beam`` (None = sample;
    N >= 1 = beam search of width N, deterministic, sampling flags ignored, penalties applied),
    ``num_samples`` (1: independent samples, or the number of best beams to print), ``seed`` (None =
    unseeded; one generator serves all samples, which run one after another, so the same seed prints
    the same text with or without ``stream``), ``stream`` (print tokens as they arrive; beam search
    prints when done).

    Each sample is printed as prompt + continuation, under a ``--- sample i ---`` header when there are
    several. Bad values raise GenerationError naming the flag; an unencodable prompt raises
    TokenizerError naming ``--prompt`` and the characters.
    """
    out = out or sys.stdout
    opts = dict(DEFAULTS)
    if args is not None:
        opts.update({k: getattr(args, k) for k in DEFAULTS if hasattr(args, k)})
    opts.update(kwargs)
    prompt = opts["prompt"] or ""
    try:
        check_int("num_samples", opts["num_samples"], 1)
        if opts["beam"] is not None:
            check_int("num_beams", opts["beam"], 1)
        config = GenerationConfig(
            max_new_tokens=opts["max_new_tokens"],
            temperature=opts["temperature"],
            top_k=opts["top_k"],
            top_p=opts["top_p"],
            min_p=opts["min_p"],
            repetition_penalty=1.0 if opts["repetition_penalty"] is None else opts["repetition_penalty"],
            no_repeat_ngram_size=opts["no_repeat_ngram"] or 0,
        )
        generator = make_generator(opts["seed"])
    except GenerationError as err:
        raise _flagged(err) from err
    try:
        prompt_ids = tokenizer.encode(prompt)
    except TokenizerError as err:
        raise TokenizerError(f"--prompt: {err}") from err

    num_samples = opts["num_samples"]
    if opts["beam"] is not None:
        hypotheses = beam_search(
            model, prompt_ids, opts["beam"], config.max_new_tokens, bos_id=tokenizer.bos_id,
            repetition_penalty=config.repetition_penalty, no_repeat_ngram_size=config.no_repeat_ngram_size,
        )  # fmt: skip
        shown = hypotheses[:num_samples]
        for i, hyp in enumerate(shown):
            if len(shown) > 1:
                print(f"--- beam {i + 1} (score {hyp.score:.4f}) ---", file=out)
            print(prompt + tokenizer.decode(hyp.ids), file=out, flush=True)
        return 0

    for i in range(num_samples):
        if num_samples > 1:
            print(f"--- sample {i + 1} ---", file=out)
        print(prompt, end="", file=out, flush=True)
        if opts["stream"]:
            for piece in stream_text(model, tokenizer, prompt, config, seed=generator):
                print(piece, end="", file=out, flush=True)
            print(file=out, flush=True)
        else:
            print(generate_text(model, tokenizer, prompt, config, seed=generator), file=out, flush=True)
    return 0
