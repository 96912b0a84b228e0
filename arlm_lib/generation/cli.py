"""``python -m arlm_lib sample``: the body of the command, callable with a parsed argparse namespace."""

from __future__ import annotations

import sys
import warnings
from typing import Any, TextIO

from torch import nn

from ..checks import is_int
from ..errors import GenerationError, TokenizerError
from .beam import beam_search
from .config import GenerationConfig, check_int
from .contrastive import check_penalty_alpha, contrastive_search
from .sampling import make_generator, stream_text

__all__ = ["FLAG_OF_FIELD", "check_sample_options", "sample_cli"]

# The CLI flag behind each option, so errors name what the user typed.
FLAG_OF_FIELD = {
    "max_new_tokens": "--max-new-tokens",
    "temperature": "--temperature",
    "top_k": "--top-k",
    "top_p": "--top-p",
    "min_p": "--min-p",
    "typical_p": "--typical-p",
    "epsilon_cutoff": "--epsilon-cutoff",
    "eta_cutoff": "--eta-cutoff",
    "repetition_penalty": "--repetition-penalty",
    "no_repeat_ngram_size": "--no-repeat-ngram",
    "num_beams": "--beam",
    "penalty_alpha": "--penalty-alpha",
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
    "typical_p": None,
    "epsilon_cutoff": None,
    "eta_cutoff": None,
    "repetition_penalty": None,
    "no_repeat_ngram": None,
    "beam": None,
    "penalty_alpha": None,
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


# Flags that only shape a *random* draw: beam search and greedy decoding have no draw to shape.
SAMPLING_ONLY = ("top_k", "top_p", "min_p", "typical_p", "epsilon_cutoff", "eta_cutoff")


def _options(args: Any, kwargs: dict[str, Any]) -> dict[str, Any]:
    """DEFAULTS, overridden by the attributes of ``args`` (an argparse namespace), then by ``kwargs``."""
    opts = dict(DEFAULTS)
    if args is not None:
        opts.update({k: getattr(args, k) for k in DEFAULTS if hasattr(args, k)})
    opts.update(kwargs)
    return opts


def _conflict(field: str, value: Any, why: str) -> GenerationError:
    return GenerationError(f"{FLAG_OF_FIELD[field]} {value!r} is not allowed {why}")


def check_sample_options(args: Any = None, **kwargs: Any) -> None:
    """Refuse flag combinations where one flag would be silently ignored (cheap: call it before loading).

    Each error names the flag, its value, and what to do instead, in one line.
    """
    opts = _options(args, kwargs)
    beam, temperature, num_samples = opts["beam"], opts["temperature"], opts["num_samples"]
    filters = [f for f in SAMPLING_ONLY if opts[f] is not None]
    if opts["penalty_alpha"] is not None:
        # Contrastive search is deterministic too; --top-k is its number of candidates.
        why = "with --penalty-alpha: contrastive search does not sample (drop one of the two)"
        if beam is not None:
            raise _conflict("num_beams", beam, "with --penalty-alpha: choose beam or contrastive search")
        drawn = [f for f in filters if f != "top_k"]
        if drawn:
            raise _conflict(drawn[0], opts[drawn[0]], why)
        if temperature is not None and temperature != 1.0:
            raise _conflict("temperature", temperature, why)
        if is_int(num_samples) and num_samples > 1:
            raise _conflict(
                "num_samples",
                num_samples,
                "with --penalty-alpha: contrastive search is deterministic, so every sample would be the "
                "same text; use 1",
            )
    elif beam is not None:
        # Beam search is deterministic: it keeps the most probable sequences, it never draws a token.
        why = "with --beam: beam search does not sample (drop one of the two)"
        if filters:
            raise _conflict(filters[0], opts[filters[0]], why)
        if temperature is not None and temperature != 1.0:
            raise _conflict("temperature", temperature, why)
        if is_int(num_samples) and is_int(beam) and num_samples > beam:
            raise _conflict("num_samples", num_samples, f"with --beam {beam}: it must be <= the beam width")
    elif temperature == 0:
        # Greedy decoding takes the most likely token of the unfiltered scores: no filter applies.
        if filters:
            raise _conflict(
                filters[0],
                opts[filters[0]],
                "with --temperature 0 (greedy): it only affects sampling; drop it, or use a temperature > 0",
            )
        if is_int(num_samples) and num_samples > 1:
            raise _conflict(
                "num_samples",
                num_samples,
                "with --temperature 0 (greedy): every sample would be the same text; "
                "use 1, or a temperature > 0",
            )


def _prompt_error(tokenizer: Any, prompt: str, err: TokenizerError) -> TokenizerError:
    """An unencodable ``--prompt``, explained in terms a command-line user can act on.

    The tokenizer's own message suggests ``unknown='replace'``, a Python option that cannot help here:
    the checkpoint's vocabulary is fixed, so the only fix is to use the characters it knows. Only a char
    tokenizer has such a list: byte-level BPE encodes any text, and refuses only what is not UTF-8 (a lone
    surrogate from an undecodable byte in the command line), which its own message already says.
    """
    if getattr(tokenizer, "kind", None) != "char":
        return TokenizerError(f"--prompt: {err}")
    unknown = unknown_characters(tokenizer, prompt)
    if not unknown:
        return TokenizerError(f"--prompt: {err}")
    known = "".join(tokenizer.decode([i]) for i in range(tokenizer.vocab_size))
    if len(known) > 200:
        known = known[:200] + "..."
    shown = ", ".join(repr(c) for c in unknown[:10]) + (" ..." if len(unknown) > 10 else "")
    return TokenizerError(
        f"--prompt has {len(unknown)} character(s) this model never saw in training: {shown}; "
        f"use only the characters of its vocabulary: {known!r}"
    )


def unknown_characters(tokenizer: Any, text: str) -> list[str]:
    """The characters of ``text`` the tokenizer cannot encode, in order of first appearance (for the
    command line's messages about --prompt and --data)."""
    return [c for c in dict.fromkeys(text) if not _encodes(tokenizer, c)]


def _encodes(tokenizer: Any, text: str) -> bool:
    try:
        tokenizer.encode(text)
    except TokenizerError:
        return False
    return True


def sample_cli(
    model: nn.Module, tokenizer: Any, args: Any = None, out: TextIO | None = None, **kwargs: Any
) -> int:
    """Print continuations of a prompt, as ``python -m arlm_lib sample`` does; returns the exit status 0.

    Options come from ``args`` (an argparse namespace; missing attributes take defaults) and ``kwargs``
    (which win): ``prompt`` (str, "" starts from the document-start token), ``max_new_tokens`` (200),
    ``temperature`` (1.0; 0 = greedy), ``top_k``, ``top_p``, ``min_p``, ``typical_p``,
    ``epsilon_cutoff``, ``eta_cutoff`` (None = off),
    ``repetition_penalty`` (None = 1.0), ``no_repeat_ngram`` (None/0 = off), ``beam`` (None = sample;
    N >= 1 = beam search of width N, deterministic, penalties applied), ``penalty_alpha`` (None; a
    number in [0, 1] = contrastive search among ``top_k`` candidates, default 4), ``num_samples`` (1:
    independent samples, or the number of best beams to print, at most ``beam``), ``seed`` (None =
    unseeded; one generator serves all samples, which run one after another, so the same seed prints
    the same text with or without ``stream``), ``stream`` (print tokens as they arrive; beam and
    contrastive search print when done).

    Each sample is printed as prompt + continuation, under a ``--- sample i ---`` header when there are
    several. Bad values raise GenerationError naming the flag, and so do flags that would be ignored
    (see ``check_sample_options``: a filter or temperature with ``beam``, filters or several
    samples with temperature 0); an unencodable prompt raises TokenizerError naming ``--prompt``, the
    characters, and the ones the model knows.
    """
    out = out or sys.stdout
    opts = _options(args, kwargs)
    prompt = opts["prompt"] or ""
    try:
        check_int("num_samples", opts["num_samples"], 1)
        if opts["beam"] is not None:
            check_int("num_beams", opts["beam"], 1)
        if opts["penalty_alpha"] is not None:
            check_penalty_alpha(opts["penalty_alpha"])
        with warnings.catch_warnings():
            # GenerationConfig only warns about filters that greedy decoding ignores; the CLI refuses
            # them just below (check_sample_options), in terms of the flags.
            warnings.simplefilter("ignore", UserWarning)
            config = GenerationConfig(
                max_new_tokens=opts["max_new_tokens"],
                temperature=opts["temperature"],
                top_k=opts["top_k"],
                top_p=opts["top_p"],
                min_p=opts["min_p"],
                typical_p=opts["typical_p"],
                epsilon_cutoff=opts["epsilon_cutoff"],
                eta_cutoff=opts["eta_cutoff"],
                repetition_penalty=1.0 if opts["repetition_penalty"] is None else opts["repetition_penalty"],
                no_repeat_ngram_size=opts["no_repeat_ngram"] or 0,
            )
        generator = make_generator(opts["seed"])
        check_sample_options(**opts)  # after the values: a bad value is reported as such, not as a clash
    except GenerationError as err:
        raise _flagged(err) from err
    try:
        prompt_ids = tokenizer.encode(prompt)
    except TokenizerError as err:
        raise _prompt_error(tokenizer, prompt, err) from err

    num_samples = opts["num_samples"]
    if opts["penalty_alpha"] is not None:
        candidates = {} if opts["top_k"] is None else {"top_k": opts["top_k"]}  # else the search's default
        ids = contrastive_search(
            model, prompt_ids, config.max_new_tokens, penalty_alpha=opts["penalty_alpha"], tokenizer=tokenizer,
            repetition_penalty=config.repetition_penalty, no_repeat_ngram_size=config.no_repeat_ngram_size,
            **candidates,
        )  # fmt: skip
        print(prompt + tokenizer.decode(ids), file=out, flush=True)
        return 0
    if opts["beam"] is not None:
        hypotheses = beam_search(
            model, prompt_ids, opts["beam"], config.max_new_tokens, tokenizer=tokenizer,
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
        # The pieces join to exactly generate_text's result; collecting them means that Ctrl-C during a
        # long sample still prints the text generated so far (on its own line, before "interrupted").
        pieces: list[str] = []
        try:
            for piece in stream_text(model, tokenizer, prompt, config, seed=generator):
                pieces.append(piece)
                if opts["stream"]:
                    print(piece, end="", file=out, flush=True)
        finally:
            if not opts["stream"]:
                print("".join(pieces), end="", file=out)
            print(file=out, flush=True)
    return 0
