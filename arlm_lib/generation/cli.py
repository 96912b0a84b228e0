"""``python -m arlm_lib sample``: the body of the command, callable with a parsed argparse namespace."""

from __future__ import annotations

import contextlib
import io
import sys
import warnings
from collections.abc import Iterator
from typing import Any, TextIO

from torch import nn

from ..checks import is_int
from ..errors import CheckpointError, GenerationError, TokenizerError
from .beam import BeamHypothesis, beam_search
from .config import GenerationConfig, check_int
from .context import model_device
from .contrastive import check_penalty_alpha, contrastive_search
from .sampling import cut_at_stop, make_generator, safe_length, stream_text
from .speculative import SpeculativeResult, speculative_generate

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
    "draft": "--draft",
    "num_draft_tokens": "--draft-tokens",
    "stop": "--stop",
    "compile": "--compile",
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
    "draft": None,
    "draft_tokens": None,
    "stop": None,
    "compile": False,
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
    _check_one_stop(opts)
    if opts["compile"]:
        # Compiled decoding is the sampling loop's (generate's): the other decoders run their own loops.
        for field, flag in (("draft", "draft"), ("beam", "num_beams"), ("penalty_alpha", "penalty_alpha")):
            if opts[field] is not None:
                raise _conflict(
                    flag,
                    opts[field],
                    "with --compile: compiled decoding serves sampling and greedy decoding only; drop one",
                )
    if opts["draft"] is None:
        if opts["draft_tokens"] is not None:
            raise _conflict(
                "num_draft_tokens",
                opts["draft_tokens"],
                "without --draft: it is how many tokens the draft model proposes per pass; add "
                "--draft CHECKPOINT, or drop it",
            )
    else:
        # Speculative decoding continues one sequence, sampled or greedy, as plain sampling does.
        if beam is not None:
            raise _conflict("num_beams", beam, "with --draft: choose beam search or speculative decoding")
        if opts["penalty_alpha"] is not None:
            raise _conflict(
                "penalty_alpha",
                opts["penalty_alpha"],
                "with --draft: choose contrastive search or speculative decoding",
            )
        if is_int(num_samples) and num_samples > 1:
            raise _conflict(
                "num_samples",
                num_samples,
                "with --draft: speculative decoding prints one sample; use 1 (and another --seed for another)",
            )
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


# Beam and contrastive search end a sequence on one token id (their ``eos_id``): they never decode the
# text, so they cannot watch it for a stop text, only for that token.
# Each such search by its option: (its flag, its name).
TOKEN_STOP_SEARCHES = {
    "beam": ("--beam", "beam search"),
    "penalty_alpha": ("--penalty-alpha", "contrastive search"),
}


def _token_stop_search(opts: dict[str, Any]) -> tuple[str, str] | None:
    """(flag, name) of the search chosen in ``opts`` that stops on a token only, if one is."""
    return next((TOKEN_STOP_SEARCHES[k] for k in TOKEN_STOP_SEARCHES if opts[k] is not None), None)


def check_stops(stops: Any) -> tuple[str, ...]:
    """The ``--stop`` texts as a tuple (None: none); GenerationError naming an empty or non-str one."""
    if stops is None:
        return ()
    stops = (stops,) if isinstance(stops, str) else tuple(stops)
    for stop in stops:
        if not isinstance(stop, str) or not stop:
            raise GenerationError(
                f"--stop {stop!r} is not allowed: a stop text must be a non-empty str "
                "(\\n for the end of a line)"
            )
    return stops


def _check_one_stop(opts: dict[str, Any]) -> None:
    """Beam and contrastive search take one stop token (cheap: before loading; its token count needs the
    tokenizer, see ``_stop_token``)."""
    stops = check_stops(opts["stop"])
    search = _token_stop_search(opts)
    if search is None or len(stops) <= 1:
        return
    flag, name = search
    shown = ", ".join(repr(s) for s in stops)
    raise GenerationError(
        f"--stop given {len(stops)} times ({shown}) is not allowed with {flag}: {name} ends on one "
        f"token, so give one --stop (or sample without {flag}, which takes several)"
    )


def _stop_token(tokenizer: Any, stop: str, search: tuple[str, str]) -> int:
    """The one token id of ``stop``, for ``search`` (flag, name); GenerationError if it is more."""
    ids = tokenizer.encode(stop)
    if len(ids) == 1:
        return ids[0]
    flag, name = search
    pieces = ", ".join(repr(tokenizer.decode([i])) for i in ids[:10]) + (" ..." if len(ids) > 10 else "")
    raise GenerationError(
        f"--stop {stop!r} is not allowed with {flag}: {name} ends on one token, and {stop!r} is "
        f"{len(ids)} tokens ({pieces}); use a stop of one token (one character with a char tokenizer), "
        f"or sample without {flag}, which stops on any text"
    )


def _without_stop_token(ids: list[int], stop_id: int | None) -> list[int]:
    """A search's ids without the stop token that ended them: the printed text stops before the stop,
    as sampling's does (generate_text cuts the stop text too)."""
    return ids[:-1] if stop_id is not None and ids and ids[-1] == stop_id else ids


def _encode_stops(tokenizer: Any, stops: tuple[str, ...]) -> None:
    """Refuse a stop text with a character the model cannot produce: it could never stop anything."""
    for stop in stops:
        try:
            tokenizer.encode(stop)
        except TokenizerError as err:
            raise _unencodable(tokenizer, f"--stop {stop!r}", stop, err) from err


def _unencodable(tokenizer: Any, what: str, text: str, err: TokenizerError) -> TokenizerError:
    """An unencodable ``--prompt`` or ``--stop`` (``what`` names it), explained in terms a command-line
    user can act on.

    The tokenizer's own message suggests ``unknown='replace'``, a Python option that cannot help here:
    the checkpoint's vocabulary is fixed, so the only fix is to use the characters it knows. Only a char
    tokenizer has such a list: byte-level BPE encodes any text, and refuses only what is not UTF-8 (a lone
    surrogate from an undecodable byte in the command line), which its own message already says.
    """
    if getattr(tokenizer, "kind", None) != "char":
        return TokenizerError(f"{what}: {err}")
    unknown = unknown_characters(tokenizer, text)
    if not unknown:
        return TokenizerError(f"{what}: {err}")
    known = "".join(tokenizer.decode([i]) for i in range(tokenizer.vocab_size))
    if len(known) > 200:
        known = known[:200] + "..."
    shown = ", ".join(repr(c) for c in unknown[:10]) + (" ..." if len(unknown) > 10 else "")
    return TokenizerError(
        f"{what} has {len(unknown)} character(s) this model never saw in training: {shown}; "
        f"use only the characters of its vocabulary: {known!r}"
    )


def unknown_characters(tokenizer: Any, text: str) -> list[str]:
    """The characters of ``text`` the tokenizer cannot encode, in order of first appearance (for the
    command line's messages about --prompt, --stop and --data)."""
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
    the same text with or without ``stream``), ``stream`` (print tokens as they arrive; beam
    search prints when done, speculative decoding after each pass of the model), ``draft`` (None; a checkpoint path =
    speculative decoding, :func:`speculative_generate` with the checkpoint's model as the draft: it must
    hold the model's tokenizer; one sample; a summary of passes and accepted tokens goes to stderr),
    ``draft_tokens`` (None = speculative_generate's default; tokens drafted per pass), ``stop`` (None, or
    a list of non-empty texts: each sample ends where its new text first contains one, and is printed up
    to, not including, it, as :func:`generate_text` returns it; with ``draft`` too; beam and contrastive
    search take one, of one token, as their ``eos_id``, and print the text before it), ``compile``
    (False; True = compiled decoding, ``generate(..., compile=True)``: sampling and greedy only).

    Each sample is printed as prompt + continuation, under a ``--- sample i ---`` header when there are
    several. On Ctrl-C (KeyboardInterrupt, re-raised) the text so far is printed first: the sample's, or
    beam search's best beams after its last step. Bad values raise GenerationError naming the flag, and so do flags that would be ignored
    (see ``check_sample_options``: a filter or temperature with ``beam``, filters or several
    samples with temperature 0, ``draft_tokens`` without ``draft``, ``draft`` with ``beam``,
    ``penalty_alpha`` or several samples, several stops or a stop of several tokens with ``beam`` or
    ``penalty_alpha``); an unencodable prompt or stop raises TokenizerError naming ``--prompt`` or
    ``--stop``, the characters, and the ones the model knows; a draft checkpoint that cannot be loaded,
    holds no tokenizer or another one, or another vocabulary size, raises an error naming ``--draft``.
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
        if opts["draft_tokens"] is not None:
            check_int("num_draft_tokens", opts["draft_tokens"], 0)
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
        stops = check_stops(opts["stop"])
        check_sample_options(**opts)  # after the values: a bad value is reported as such, not as a clash
    except GenerationError as err:
        raise _flagged(err) from err
    try:
        prompt_ids = tokenizer.encode(prompt)
    except TokenizerError as err:
        raise _unencodable(tokenizer, "--prompt", prompt, err) from err
    _encode_stops(tokenizer, stops)
    search = _token_stop_search(opts)
    stop_id = _stop_token(tokenizer, stops[0], search) if search and stops else None

    num_samples = opts["num_samples"]
    if opts["draft"] is not None:
        with _printing(tokenizer, prompt, out, opts["stream"], stops) as printer:
            result = _speculate(
                model,
                tokenizer,
                prompt_ids,
                config,
                generator,
                opts["draft"],
                opts["draft_tokens"],
                printer,
                stops,
            )
        # On stderr, as warnings are: stdout holds the same text as without --draft, for scripts.
        print(speculative_summary(result), file=sys.stderr, flush=True)
        return 0
    if opts["penalty_alpha"] is not None:
        candidates = {} if opts["top_k"] is None else {"top_k": opts["top_k"]}  # else the search's default
        # The stop token ends the search and is not printed: the printer never sees it.
        with _printing(tokenizer, prompt, out, opts["stream"]) as printer:
            contrastive_search(
                model, prompt_ids, config.max_new_tokens, penalty_alpha=opts["penalty_alpha"],
                tokenizer=tokenizer, repetition_penalty=config.repetition_penalty,
                no_repeat_ngram_size=config.no_repeat_ngram_size, eos_id=stop_id,
                on_tokens=lambda ids: printer(_without_stop_token(ids, stop_id)), **candidates,
            )  # fmt: skip
        return 0
    if opts["beam"] is not None:
        # What the search would return had it ended at the last step (before the first: the prompt alone).
        so_far = [BeamHypothesis([], 0.0)]

        def keep(ranking: list[BeamHypothesis]) -> None:
            nonlocal so_far
            so_far = ranking

        def show(hypotheses: list[BeamHypothesis]) -> None:
            shown = hypotheses[:num_samples]
            for i, hyp in enumerate(shown):
                if len(shown) > 1:
                    print(f"--- beam {i + 1} (score {hyp.score:.4f}) ---", file=out)
                print(prompt + tokenizer.decode(_without_stop_token(hyp.ids, stop_id)), file=out, flush=True)

        try:
            hypotheses = beam_search(
                model, prompt_ids, opts["beam"], config.max_new_tokens, tokenizer=tokenizer, eos_id=stop_id,
                repetition_penalty=config.repetition_penalty, no_repeat_ngram_size=config.no_repeat_ngram_size,
                on_step=keep,
            )  # fmt: skip
        except KeyboardInterrupt:
            # Beam search has no single text until it ends: Ctrl-C prints the best beams so far, on their
            # own lines before "interrupted", as sampling prints its text so far.
            show(so_far)
            raise
        show(hypotheses)
        return 0

    for i in range(num_samples):
        if num_samples > 1:
            print(f"--- sample {i + 1} ---", file=out)
        # The prompt is printed with the first piece, not before the generator starts: its warnings (a
        # cropped prompt) go to stderr first, instead of into the middle of the sample's line.
        # The pieces join to exactly generate_text's result; collecting them means that Ctrl-C during a
        # long sample still prints the text generated so far (on its own line, before "interrupted").
        pieces: list[str] = []
        try:
            for piece in stream_text(
                model, tokenizer, prompt, config, seed=generator, stop_strings=stops, compile=opts["compile"]
            ):
                pieces.append(piece)
                if opts["stream"]:
                    print((prompt if len(pieces) == 1 else "") + piece, end="", file=out, flush=True)
        finally:
            if not (opts["stream"] and pieces):  # else the prompt and the pieces are out already
                print(prompt + ("" if opts["stream"] else "".join(pieces)), end="", file=out)
            print(file=out, flush=True)
    return 0


def _speculate(
    model: nn.Module,
    tokenizer: Any,
    prompt_ids: list[int],
    config: GenerationConfig,
    generator: Any,
    draft_path: Any,
    draft_tokens: int | None,
    on_tokens: Any = None,
    stops: tuple[str, ...] = (),
) -> SpeculativeResult:
    """``speculative_generate`` with the model of the ``--draft`` checkpoint, loaded as ``--checkpoint``
    is (safetensors only, verified) onto the model's device, and checked to share its tokenizer."""
    from ..checkpoint import load_model

    try:
        draft, draft_tokenizer = load_model(draft_path, device=model_device(model))
    except (CheckpointError, TokenizerError) as err:
        raise type(err)(f"--draft: {err}") from err
    if draft_tokenizer is None:
        raise CheckpointError(
            f"--draft {draft_path}: this checkpoint holds no tokenizer, so nothing shows that its token ids "
            "mean what the model's do; use a checkpoint written by 'train' (it saves its tokenizer)"
        )
    # A different vocabulary size is the library's error (below, naming both sizes). The same size is
    # not enough: two char tokenizers of 30 characters each give the same ids to different characters.
    if draft.config.vocab_size == model.config.vocab_size and draft_tokenizer != tokenizer:
        theirs, ours = _describe(draft_tokenizer), _describe(tokenizer)
        what = f"both {ours}, but not the same tokens" if theirs == ours else f"{theirs}; the model's: {ours}"
        raise GenerationError(
            f"--draft {draft_path} was trained with another tokenizer than --checkpoint ({what}): the same "
            "ids stand for other text in the two models; train the draft on the model's --data with its "
            "--tokenizer (a tokenizer is learnt from the data), or use another draft"
        )
    drafting = {} if draft_tokens is None else {"num_draft_tokens": draft_tokens}  # else the library's
    try:
        return speculative_generate(
            model,
            draft,
            prompt_ids,
            config,
            seed=generator,
            tokenizer=tokenizer,
            on_tokens=on_tokens,
            stop_strings=stops,
            **drafting,
        )
    except GenerationError as err:
        if getattr(err, "field", None) is not None:
            raise _flagged(err) from err
        raise GenerationError(f"--draft {draft_path}: {err}") from err  # the draft does not fit the model


@contextlib.contextmanager
def _printing(
    tokenizer: Any, prompt: str, out: TextIO, stream: bool, stops: tuple[str, ...] = ()
) -> Iterator[_StreamPrinter]:
    """A :class:`_StreamPrinter` for a search that reports its tokens through a callback: it prints them
    as they come (``stream``) or holds the text and prints it at the end. Either way Ctrl-C prints the
    text so far on its own line, before "interrupted", as sampling does; an error prints nothing."""
    held = None if stream else io.StringIO()
    printer = _StreamPrinter(tokenizer, prompt, held or out, stops)
    try:
        yield printer
        printer.finish()
    except KeyboardInterrupt:
        if printer.ids:
            printer.finish()
        raise
    finally:
        if held is not None:
            print(held.getvalue(), end="", file=out, flush=True)


class _StreamPrinter:
    """Prints the prompt, then the continuation as its tokens arrive, holding back a trailing partial
    UTF-8 character (decoded as U+FFFD until its last byte comes) and what may be the start of a stop
    text, as stream_text does; the text ends before the first stop text. Nothing is printed before the
    first tokens, so that an error before them (a bad draft) leaves stdout empty."""

    def __init__(self, tokenizer: Any, prompt: str, out: TextIO, stops: tuple[str, ...] = ()) -> None:
        self.tokenizer, self.out, self.stops = tokenizer, out, stops
        self.pending = prompt  # printed with the first piece
        self.ids: list[int] = []
        self.shown = 0

    def __call__(self, new_ids: list[int]) -> None:
        self.ids += new_ids
        text, stopped = self._text()
        end = len(text) if stopped else safe_length(text, self.stops)
        if end > self.shown:
            self._print(text[self.shown : end])
            self.shown = end

    def finish(self) -> None:
        """Print what is left, and the final newline."""
        self._print(self._text()[0][self.shown :] + "\n")

    def _text(self) -> tuple[str, bool]:
        """The continuation so far, cut before the first stop text, and whether one was found."""
        return cut_at_stop(self.tokenizer.decode(self.ids), self.stops)

    def _print(self, piece: str) -> None:
        print(self.pending + piece, end="", file=self.out, flush=True)
        self.pending = ""


def _describe(tokenizer: Any) -> str:
    return f"a {tokenizer.kind} tokenizer of {tokenizer.vocab_size} tokens"


def counted(n: int, one: str, many: str) -> str:
    """``1 pass``, ``3 passes``: a count and its noun, singular only for one (used by the CLI's lines)."""
    return f"{n:,} {one if n == 1 else many}"


def speculative_summary(result: SpeculativeResult) -> str:
    """One line: tokens, passes of the model, tokens per pass, and the share of drafted tokens accepted."""
    tokens = counted(len(result.ids), "token", "tokens")
    line = f"speculative: {tokens} in {counted(result.target_passes, 'pass', 'passes')} of the model"
    if result.target_passes:
        line += f" ({result.tokens_per_pass:.2f} tokens per pass)"
    if not result.drafted:
        return line + ", no tokens drafted"
    percent = round(100 * result.accepted / result.drafted)
    if result.accepted < result.drafted:  # never "100%" (or "0%") unless it is exactly so
        percent = min(percent, 99)
    if result.accepted:
        percent = max(percent, 1)
    return line + f", {percent}% of {result.drafted} drafted tokens accepted"
