"""The command line: ``python -m arlm_lib train | sample | eval | import-gpt2 | corpus``.

Every bad value is caught before anything is written, reported in one line that names the flag or the
value and what is allowed, and turned into a non-zero exit status.
"""

from __future__ import annotations

import argparse
import difflib
import math
import os
import re
import shlex
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import NoReturn

from .errors import ArlmError

EXIT_USAGE = 2  # bad flags or input (argparse uses 2 as well)
EXIT_DIVERGED = 3  # training stopped on a NaN/inf loss
EXIT_OUT_OF_MEMORY = 4  # the model or batch does not fit in memory


# ----------------------------------------------------------------------------- flag value types
INT64_MAX = 2**63 - 1  # counts and sizes end up in int64 tensors: anything larger cannot be represented


def _number(kind, minimum=None, exclusive=False, maximum=None, max_exclusive=False):
    """An argparse type that names the allowed range when a value falls outside it."""
    if kind is int and maximum is None:
        maximum = INT64_MAX

    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:  # also int() of a number with thousands of digits
            shown = text if len(text) <= 40 else text[:40] + "..."
            raise argparse.ArgumentTypeError(f"{shown!r} is not a valid {kind.__name__}") from None
        shown = text.strip() if len(text) <= 40 else text.strip()[:40] + "..."
        if kind is float and not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"{shown!r} is not allowed: it must be a finite number")
        if minimum is not None and (value <= minimum if exclusive else value < minimum):
            raise argparse.ArgumentTypeError(
                f"{shown} is not allowed: it must be {'>' if exclusive else '>='} {minimum}"
            )
        if maximum is not None and (value >= maximum if max_exclusive else value > maximum):
            raise argparse.ArgumentTypeError(
                f"{shown} is not allowed: it must be {'<' if max_exclusive else '<='} {maximum}"
            )
        return value

    parse.__name__ = kind.__name__
    return parse


positive_int = _number(int, 1)
non_negative_int = _number(int, 0)
positive_float = _number(float, 0, exclusive=True)
non_negative_float = _number(float, 0)
# torch.manual_seed accepts exactly this range; beyond it, it raises a bare ValueError.
seed_int = _number(int, -(2**63), maximum=2**64 - 1)


def _checkpoint_arg(text: str) -> str:
    """``--checkpoint``: a path. An empty one would quietly mean the current directory (Path("") is "."),
    and the error would then name a file the user never typed: refuse it here, naming the value."""
    if not text.strip():
        raise argparse.ArgumentTypeError(
            f"{text!r} is not allowed: give a run directory or a .safetensors file"
        )
    return text


# ``--stop``: a shell passes '\n' on as a backslash and an "n", and a stop at the end of a line needs the
# newline itself. Only these four escapes are read, not all of Python's: codecs' "unicode_escape" would
# also read non-ASCII text as Latin-1 and garble it. Any other backslash is refused rather than guessed
# at; $'...' in bash, or a real newline inside quotes, works too.
STOP_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", "\\": "\\"}


def _stop_arg(text: str) -> str:
    """``--stop``: a non-empty text, with the escapes of STOP_ESCAPES read."""
    if not text:
        raise argparse.ArgumentTypeError(
            "'' is not allowed: a stop text must be at least one character (\\n for the end of a line)"
        )

    def escape(match: re.Match) -> str:
        if match.group(1) not in STOP_ESCAPES:
            raise argparse.ArgumentTypeError(
                f"'{text}' has '\\{match.group(1)}', which is not an escape --stop reads: use \\n (newline), "
                "\\t (tab), \\r (carriage return) or \\\\ (a backslash)"
            )
        return STOP_ESCAPES[match.group(1)]

    return re.sub(r"\\(.?)", escape, text, flags=re.DOTALL)


def _compile_mode(text: str) -> str:
    """``--compile-mode``: one of the modes this torch's ``torch.compile`` knows (asked only when the flag
    is given: asking imports the compiler, which every other command would pay for as ``choices``)."""
    from .device import compile_modes

    modes = compile_modes()
    if text not in modes:
        raise argparse.ArgumentTypeError(f"{text!r} is not allowed: choose one of {', '.join(modes)}")
    return text


def _peak_flops(text: str) -> float | str:
    """``--peak-flops``: a positive number of FLOP/s, or ``auto`` to measure one."""
    return "auto" if text == "auto" else positive_float(text)


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Shows each flag's default, except where there is none to show: a default of None means "the
    preset's value" or "off", which the help line already says, and "(default: None)" would only
    contradict it."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        if action.default is None or "default" in (action.help or ""):
            return action.help
        return super()._get_help_string(action)


class _Parser(argparse.ArgumentParser):
    """Bad flags give one line that names the value and what is allowed, not the whole usage text.

    Abbreviated flags are refused: ``--resume`` overrides only the flags that were typed, and it could
    not tell that ``--max-iter`` meant ``--max-iters``.
    """

    def __init__(self, *args, **kwargs) -> None:
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)

    def parse_known_args(self, args=None, namespace=None):
        args = sys.argv[1:] if args is None else list(args)
        self._args = args  # for error(): the value after a flag that argparse says has none
        # Checked by the command's own parser (argparse hands it the command's arguments), so that the
        # message points at that command's --help; the top-level parser has subcommands, and leaves it.
        for arg in args if self._subparsers is None else ():
            # Python 3.11's argparse drops a "--" value: --lr=-- reached the checks as an empty list,
            # --grad-clip=-- silently turned clipping off and --preset=-- raised a TypeError.
            if arg.startswith("-") and arg.endswith("=--"):
                flag = arg.split("=", 1)[0]
                self.error(
                    f"{flag}=-- is not allowed: '--' on its own cannot be passed as a value (this Python's "
                    "argparse drops it, in any spelling); give another value"
                )
        return super().parse_known_args(args, namespace)

    def error(self, message: str) -> NoReturn:
        hint = self._dash_value_hint(message)
        self.exit(2, f"{self.prog}: error: {message}{hint} (see {self.prog} --help)\n")

    def _dash_value_hint(self, message: str) -> str:
        """argparse reads ``--prompt -x`` as a flag with no value, then a flag -x, and says only "expected
        one argument": say how to pass a value that starts with '-'."""
        match = re.fullmatch(r"argument (-[^\s/:]+)(?:/\S+)?: expected one argument", message)
        args = getattr(self, "_args", [])
        if match is None or match.group(1) not in args:
            return ""
        flag = match.group(1)
        after = args[args.index(flag) + 1 : args.index(flag) + 2]
        if after == ["--"]:
            return "; '--' on its own cannot be passed as a value, in any spelling; give another value"
        if not after or not after[0].startswith("-"):
            return ""
        return f"; a value that starts with '-' must be joined to its flag: {flag}={after[0]}"


def _flags_of(parser: argparse.ArgumentParser) -> list[str]:
    return [flag for action in parser._actions for flag in action.option_strings]


def _report_unknown_flags(
    command_parser: argparse.ArgumentParser,
    unknown: list[str],
    command_parsers: dict[str, argparse.ArgumentParser] | None = None,
) -> NoReturn:
    """Exit 2 naming the flags ``command_parser`` does not know, with the closest known flag for each,
    or, for a flag of other commands (``command_parsers``: name -> parser), those commands: a spelling
    hint there would be a wrong guess (``sample --lr`` got "did you mean --help?")."""
    known = _flags_of(command_parser)
    hints = []
    for arg in unknown:
        flag = arg.split("=", 1)[0]
        owners = [
            name
            for name, parser in (command_parsers or {}).items()
            if parser is not command_parser and flag in _flags_of(parser)
        ]
        close = difflib.get_close_matches(flag, known, n=1) if flag.startswith("--") else []
        if owners:
            named = ", ".join(owners[:-1]) + " and " + owners[-1] if len(owners) > 1 else owners[0]
            hints.append(f"{flag} is a flag of {named}, not of {command_parser.prog.split()[-1]}")
        elif close:
            hints.append(f"{flag}: did you mean {close[0]}?")
    message = "unrecognized arguments: " + " ".join(unknown)
    command_parser.error(message + (f" ({'; '.join(hints)})" if hints else ""))


def _one_line_warning(message, category, filename, lineno, file=None, line=None) -> str:
    """Warnings (a cropped prompt, a compile fallback) as one line, without the library's source line."""
    return f"warning: {message}\n"


# ----------------------------------------------------------------------------- parser
def build_parser() -> argparse.ArgumentParser:
    """The argument parser for every command, with a help line for each flag."""
    from .device import DEVICE_CHOICES, DTYPE_CHOICES
    from .model import POSITION_ENCODINGS, PRESETS
    from .train import SCHEDULES

    devices = [f"{name}, {name}:N" if name == "cuda" else name for name in DEVICE_CHOICES]
    device_help = f"{', '.join(devices[:-1])} or {devices[-1]}"  # auto, cpu, cuda, cuda:N or mps
    parser = _Parser(
        prog="python -m arlm_lib",
        description="Train, sample from and evaluate small GPT-style language models.",
        formatter_class=_HelpFormatter,
        epilog="Run 'python -m arlm_lib COMMAND --help' for the flags of each command.",
    )
    from . import __version__

    parser.add_argument("--version", action="version", version=f"arlm_lib {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    parser.command_parsers = commands.choices  # name -> that command's parser (see _report_unknown_flags)

    # --- train
    train = commands.add_parser(
        "train",
        help="train a model on a text file or a built-in corpus",
        formatter_class=_HelpFormatter,
        description="Train a GPT-style model. Preset values are used unless a flag overrides them.",
    )
    train.add_argument(
        "--data",
        required=True,
        help="a UTF-8 text file (or a file:// URL of one, read directly), an http(s) URL of one (downloaded "
        "once, then cached), or a built-in corpus name (see 'corpus list')",
    )
    train.add_argument(
        "--out", required=True, help="run directory for the checkpoint; refused if it holds other files"
    )
    train.add_argument("--resume", action="store_true", help="continue the run saved in --out")
    arch = train.add_argument_group("model (override the preset)")
    arch.add_argument("--preset", default="tiny", choices=sorted(PRESETS), help="architecture preset")
    arch.add_argument("--n-layer", type=positive_int, help="number of Transformer blocks")
    arch.add_argument("--n-head", type=positive_int, help="attention heads per block (must divide --n-embd)")
    arch.add_argument("--n-embd", type=positive_int, help="width of the residual stream")
    arch.add_argument("--block-size", type=positive_int, help="context length T in tokens")
    arch.add_argument(
        "--dropout", type=_number(float, 0, maximum=1, max_exclusive=True), help="dropout probability"
    )
    arch.add_argument(
        "--norm-position",
        choices=("pre", "post"),
        help="LayerNorm before (pre) or after (post) each sublayer",
    )
    arch.add_argument(
        "--qk-layernorm", action="store_true", default=None, help="LayerNorm on queries and keys"
    )
    arch.add_argument(
        "--attention", choices=("fast", "explicit"), help="fused SDPA kernel or explicit softmax(QK^T)V"
    )
    arch.add_argument(
        "--position-encoding",
        choices=POSITION_ENCODINGS,
        help="learned: a table of position vectors (GPT-2); rope: rotary embeddings, which turn queries and "
        "keys by their positions (LLaMA)",
    )
    arch.add_argument(
        "--bias", action=argparse.BooleanOptionalAction, help="biases in the Linear and LayerNorm layers"
    )
    tok = train.add_argument_group("tokenizer")
    tok.add_argument(
        "--tokenizer", choices=("char", "bpe"), default="char", help="character-level or byte-level BPE"
    )
    tok.add_argument("--bpe-vocab-size", type=_number(int, 257), default=1024, help="BPE vocabulary size")
    opt = train.add_argument_group("optimisation")
    opt.add_argument(
        "--batch-size", type=positive_int, default=32, help="sequences per micro-step, across all ranks"
    )
    opt.add_argument("--grad-accum", type=positive_int, default=1, help="micro-steps per optimizer step")
    opt.add_argument("--lr", type=positive_float, default=1e-3, help="peak learning rate")
    opt.add_argument("--min-lr", type=non_negative_float, help="final learning rate (default lr/10)")
    opt.add_argument("--max-iters", type=positive_int, default=1000, help="optimizer steps in total")
    opt.add_argument("--warmup-iters", type=non_negative_int, default=100, help="linear warmup steps")
    opt.add_argument(
        "--lr-decay-iters",
        type=positive_int,
        help="step at which the decay reaches --min-lr (default --max-iters; steps after it train at min-lr)",
    )
    opt.add_argument(
        "--schedule",
        choices=SCHEDULES,
        default="cosine",
        help="cosine or linear: warmup, then decay to --min-lr; constant: --lr at every step, no warmup "
        "(--warmup-iters, --min-lr and --lr-decay-iters are then refused)",
    )
    opt.add_argument(
        "--weight-decay", type=non_negative_float, default=0.1, help="AdamW decoupled weight decay"
    )
    opt.add_argument(
        "--grad-clip", type=non_negative_float, default=1.0, help="global-norm clip threshold; 0 disables"
    )
    opt.add_argument(
        "--eval-interval",
        type=positive_int,
        default=100,
        help="evaluate every N steps (and checkpoint, unless --checkpoint-interval says otherwise)",
    )
    opt.add_argument("--eval-iters", type=positive_int, default=20, help="batches per evaluation")
    opt.add_argument(
        "--beta1", type=_number(float, 0, maximum=1, max_exclusive=True), default=0.9, help="AdamW beta1"
    )
    opt.add_argument(
        "--beta2", type=_number(float, 0, maximum=1, max_exclusive=True), default=0.95, help="AdamW beta2"
    )
    opt.add_argument(
        "--checkpoint-interval",
        type=non_negative_int,
        help="save a checkpoint every N steps (default --eval-interval; 0: only at the end)",
    )
    opt.add_argument(
        "--seed",
        type=seed_int,
        default=1337,
        help="seed for init, batches and dropout; fixed when the run begins (--resume refuses another)",
    )
    opt.add_argument(
        "--on-nonfinite",
        choices=("stop", "rollback"),
        default="stop",
        help="on a NaN/inf loss: stop (exit 3), or roll back to the last checkpoint, halve lr and continue (at most 3 times)",
    )
    sysg = train.add_argument_group("system")
    sysg.add_argument("--device", default="auto", help=f"{device_help}; auto = cuda, then mps, then cpu")
    sysg.add_argument(
        "--dtype", default="auto", choices=DTYPE_CHOICES, help="autocast precision; auto = bf16 on CUDA"
    )
    sysg.add_argument(
        "--compile", action="store_true", help="torch.compile the model (falls back to eager if unavailable)"
    )
    sysg.add_argument(
        "--compile-mode",
        type=_compile_mode,
        metavar="MODE",
        help="with --compile: torch.compile's mode, e.g. max-autotune-no-cudagraphs (tunes the GPU kernels "
        "while compiling: minutes longer) or reduce-overhead; default: torch's default mode",
    )
    sysg.add_argument(
        "--peak-flops",
        type=_peak_flops,
        help="one device's peak FLOP/s (e.g. 989e12 for an H100 in bf16), or 'auto' to measure a matmul; adds MFU",
    )
    sysg.add_argument(
        "--ddp-timeout",
        type=positive_float,
        default=None,
        help="under torchrun: seconds a rank waits for the others before giving up with an error "
        "(default 120, or 600 with --compile, 1800 with a max-autotune --compile-mode: each rank compiles "
        "at its own pace before the first all-reduce)",
    )
    sysg.add_argument(
        "--progress",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="a progress bar; --no-progress prints a line per evaluation instead",
    )

    # --- sample
    sample = commands.add_parser(
        "sample",
        help="continue a prompt with a trained model",
        formatter_class=_HelpFormatter,
        description="Continue --prompt with a trained model: sampling (temperature and the\n"
        "filters), greedy, beam search, contrastive search, or speculative decoding with\n"
        "a --draft model.",
    )
    sample.add_argument(
        "--checkpoint",
        required=True,
        type=_checkpoint_arg,
        help="run directory (or .safetensors file) of a trained model",
    )
    sample.add_argument(
        "--prompt",
        default="",
        help="text to continue (default: empty, which starts from the start-of-document token)",
    )
    sample.add_argument("--max-new-tokens", type=non_negative_int, default=200, help="tokens to generate")
    sample.add_argument(
        "--temperature",
        type=non_negative_float,
        default=1.0,
        help="0 = greedy decoding; the filters (--top-k, --top-p, --min-p, ...) and --num-samples > 1 are "
        "then refused",
    )
    sample.add_argument("--top-k", type=positive_int, help="keep the k most likely tokens")
    sample.add_argument(
        "--top-p",
        type=_number(float, 0, exclusive=True, maximum=1),
        help="nucleus: smallest set with mass >= p",
    )
    sample.add_argument(
        "--min-p",
        type=_number(float, 0, maximum=1, max_exclusive=True),
        help="drop tokens below min_p x top prob",
    )
    sample.add_argument(
        "--typical-p",
        type=_number(float, 0, exclusive=True, maximum=1),
        help="locally typical: keep tokens whose surprisal is nearest the entropy, up to this mass",
    )
    sample.add_argument(
        "--epsilon-cutoff",
        type=_number(float, 0, maximum=1, max_exclusive=True),
        help="drop tokens below this probability (try 3e-4 for GPT-2's vocabulary)",
    )
    sample.add_argument(
        "--eta-cutoff",
        type=_number(float, 0, maximum=1, max_exclusive=True),
        help="drop tokens below min(eta, sqrt(eta) x exp(-entropy)) (try 3e-4 for GPT-2's vocabulary)",
    )
    sample.add_argument(
        "--repetition-penalty", type=positive_float, help="> 1 discourages tokens already present"
    )
    sample.add_argument(
        "--no-repeat-ngram", type=positive_int, help="forbid repeating any n-gram of this size"
    )
    sample.add_argument(
        "--beam",
        type=positive_int,
        help="beam search with this width (deterministic: no --temperature, --top-k, --top-p, ...)",
    )
    sample.add_argument(
        "--penalty-alpha",
        type=_number(float, 0, maximum=1),
        help="contrastive search: weigh similarity to the context by this much, among --top-k (default 4) "
        "candidates (deterministic; try 0.6)",
    )
    sample.add_argument(
        "--draft",
        type=_checkpoint_arg,
        metavar="CHECKPOINT",
        help="speculative decoding: this run directory (or .safetensors file), a smaller model trained with "
        "the same tokenizer, proposes tokens and the model checks several in one pass: the same text as "
        "without it at --temperature 0, the same distribution when sampling, in fewer passes of the model "
        "(a summary goes to stderr); not with --beam, --penalty-alpha, --compile or --num-samples > 1; --stream "
        "prints the tokens of each pass as it ends",
    )
    sample.add_argument(
        "--draft-tokens",
        type=non_negative_int,
        metavar="K",
        help="with --draft: tokens the draft proposes per pass of the model (default 4; 0 = plain "
        "decoding, one pass per token)",
    )
    sample.add_argument(
        "--compile",
        action="store_true",
        help="compiled decoding: a static KV cache and a torch.compile'd one-token step, replayed as a CUDA "
        "graph on a GPU, where one-token steps are otherwise bound by Python and kernel launches. The "
        "first sample compiles (seconds to a minute); the tokens are the same. On a CPU it removes only "
        "Python's share of a step, which helps small models most. Sampling and greedy decoding only (not with "
        "--beam, --penalty-alpha or --draft)",
    )
    sample.add_argument(
        "--stop",
        type=_stop_arg,
        action="append",
        metavar="TEXT",
        help="end each sample just before its new text first contains TEXT, which is not printed "
        "(repeatable: the first to appear ends it). \\n, \\t, \\r and \\\\ are read as escapes: "
        "--stop '\\n' ends at the end of a line, --stop '\\n\\n' at the end of a paragraph. --beam and "
        "--penalty-alpha end on a token, not a text: one --stop, that the tokenizer encodes as one token "
        "(one character with a char tokenizer); --draft takes any, as sampling does",
    )
    sample.add_argument(
        "--num-samples",
        type=positive_int,
        default=1,
        help="independent samples; with --beam, the N best beams (N <= the width)",
    )
    sample.add_argument(
        "--seed", type=seed_int, default=1337, help="sampling seed; the same seed reproduces the text"
    )
    sample.add_argument(
        "--stream",
        action="store_true",
        help="print tokens as they are generated (--beam prints its beams when the search ends)",
    )
    sample.add_argument("--device", default="auto", help=device_help)

    # --- eval
    evaluate = commands.add_parser(
        "eval",
        help="loss, perplexity and bits per character on a split of --data (default: the held-out last 10%%)",
        description="Score a checkpoint on a split of --data: loss (nats/token), perplexity and\n"
        "bits per character. The split is the one training used: the last 10% of the\n"
        "text is held out.",
        formatter_class=_HelpFormatter,
    )
    evaluate.add_argument(
        "--checkpoint", required=True, type=_checkpoint_arg, help="run directory (or .safetensors file)"
    )
    evaluate.add_argument(
        "--data", required=True, help="text file, URL or built-in corpus name; its last 10%% is held out"
    )
    evaluate.add_argument(
        "--split", choices=("val", "train", "all"), default="val", help="which part of --data to score"
    )
    evaluate.add_argument(
        "--block-size", type=positive_int, help="evaluation window (default and maximum: the model's context)"
    )
    evaluate.add_argument(
        "--max-tokens", type=positive_int, default=200_000, help="score at most this many tokens"
    )
    evaluate.add_argument("--device", default="auto", help=device_help)

    # --- import-gpt2
    gpt2 = commands.add_parser(
        "import-gpt2",
        help="turn OpenAI's GPT-2 weights (Hugging Face files) into a checkpoint for sample and eval",
        formatter_class=_HelpFormatter,
        # Line breaks by hand: the formatter keeps descriptions as written (RawDescriptionHelpFormatter).
        description="Convert a Hugging Face GPT-2 (gpt2, gpt2-medium, distilgpt2, ...) that you\n"
        "downloaded yourself (model.safetensors, config.json, tokenizer.json) into an\n"
        "arlm checkpoint. Nothing is downloaded.",
    )
    gpt2.add_argument(
        "--weights",
        required=True,
        type=_checkpoint_arg,
        help="model.safetensors, or the directory holding it (and config.json and tokenizer.json)",
    )
    gpt2.add_argument(
        "--config", help="config.json, for the number of heads (default: the one next to --weights)"
    )
    gpt2.add_argument("--tokenizer", help="tokenizer.json (default: the one next to --weights)")
    gpt2.add_argument(
        "--out",
        required=True,
        help="run directory for the checkpoint; refused if it holds one already, or other files",
    )

    # --- corpus
    corpus = commands.add_parser(
        "corpus",
        help="list the built-in corpora or describe one",
        formatter_class=_HelpFormatter,
        description="The built-in corpora ship with the package (--data also takes a file or a\n"
        "URL). 'info NAME' gives a corpus's size and, for the synthetic ones, the entropy\n"
        "rate: the lowest loss a model can reach.",
    )
    corpus_cmds = corpus.add_subparsers(dest="corpus_command", required=True, metavar="ACTION")
    corpus_cmds.add_parser("list", help="names, sizes and descriptions")
    info = corpus_cmds.add_parser("info", help="size and entropy rate (bits/char, bits/token) of one corpus")
    info.add_argument("name", help="a built-in corpus name")
    return parser


# ----------------------------------------------------------------------------- commands
def _load_text(data: str) -> str:
    from .corpus import corpus_names, load_corpus

    if data in corpus_names() and Path(data).exists():
        # The built-in name wins (there is no other way to ask for it), but a file of that name here
        # was almost certainly meant: never pick one of the two silently.
        print(
            f"warning: --data {data} is the built-in corpus {data!r}, not the file {data!r} in this "
            f"directory; for the file, write --data ./{data}",
            file=sys.stderr,
        )
    return load_corpus(data)


def cmd_train(args: argparse.Namespace) -> int:
    """``train``: validate every input, then train (or resume) into ``--out``."""
    import torch

    from . import checkpoint as ckpt
    from .data import check_long_enough, split_train_val
    from .errors import CheckpointError, ConfigError
    from .model import GPT, GPTConfig
    from .rundir import RunLock, prepare_run_dir
    from .tokenizers import tokenizer_from_dict, train_tokenizer
    from .train import TrainConfig, Trainer

    config_values = dict(
        batch_size=args.batch_size,
        max_iters=args.max_iters,
        lr=args.lr,
        min_lr=args.min_lr,
        warmup_iters=args.warmup_iters,
        lr_decay_iters=args.lr_decay_iters,
        schedule=args.schedule,
        weight_decay=args.weight_decay,
        beta1=args.beta1,
        beta2=args.beta2,
        checkpoint_interval=args.checkpoint_interval,
        grad_clip=args.grad_clip or None,
        grad_accum_steps=args.grad_accum,
        eval_interval=args.eval_interval,
        eval_iters=args.eval_iters,
        device=args.device,
        dtype=args.dtype,
        compile=args.compile,
        compile_mode=args.compile_mode,
        seed=args.seed,
        peak_flops=args.peak_flops,
        progress=args.progress,
        on_nonfinite=args.on_nonfinite,
        ddp_timeout_s=args.ddp_timeout,
    )
    # A new run is validated before any data is read. A resume is validated once the flags typed are
    # merged into the saved settings (checking defaults against each other would refuse, say,
    # --lr-decay-iters 20 for a run saved with --warmup-iters 5, against the default warmup of 100).
    if not args.resume and args.tokenizer != "bpe" and "bpe_vocab_size" in args._explicit:
        raise ConfigError(
            f"--bpe-vocab-size {args.bpe_vocab_size} applies to --tokenizer bpe only, and this run's "
            f"tokenizer is {args.tokenizer!r}: add --tokenizer bpe, or drop the flag"
        )
    if not args.resume:
        _check_schedule_flags(args, args.schedule)  # before TrainConfig, whose checks assume a decay
    train_config = None if args.resume else TrainConfig(**config_values)
    from .distributed import dist_env

    # Under torchrun every rank runs this command; only rank 0 creates, locks and writes --out, and prints.
    main_rank = dist_env().is_main
    from .device import resolve_device, resolve_dtype

    device = resolve_device(args.device)  # fail on a bad device before reading any data
    if not args.resume or "dtype" in args._explicit:  # (a resume's saved dtype was checked when saved)
        try:  # and on a dtype it cannot run, such as float16 on the CPU
            resolve_dtype(args.dtype, device)
        except ConfigError as exc:
            raise ConfigError(f"--dtype: {exc}") from None  # named like --device's errors
    overrides = dict(
        n_layer=args.n_layer,
        n_head=args.n_head,
        n_embd=args.n_embd,
        block_size=args.block_size,
        dropout=args.dropout,
        norm_position=args.norm_position,
        qk_layernorm=args.qk_layernorm,
        attention=args.attention,
        bias=args.bias,
        position_encoding=args.position_encoding,
    )
    text = _load_text(args.data)

    if args.resume:
        out = prepare_run_dir(args.out, resume=True)
        checkpoint = ckpt.load_checkpoint(out)
        saved = checkpoint.model_config.to_dict()
        clash = {k: (v, saved[k]) for k, v in overrides.items() if v is not None and v != saved[k]}
        if clash:
            details = ", ".join(_describe_clash(k, v, s) for k, (v, s) in clash.items())
            raise CheckpointError(f"cannot resume {out} with a different architecture: {details}")
        if "schedule" in args._explicit:
            _check_schedule_flags(args, args.schedule)
        else:
            saved_schedule = (checkpoint.train_config or {}).get("schedule", "cosine")
            _check_schedule_flags(args, saved_schedule, " (the saved run's schedule)")
        if checkpoint.tokenizer is None:
            raise CheckpointError(f"{out} holds no tokenizer, so its training data cannot be encoded")
        tokenizer = tokenizer_from_dict(checkpoint.tokenizer)
        _check_fixed_at_start(args, out, checkpoint.model_config, tokenizer, overrides, text)
        _check_seed_unchanged(args, out, checkpoint.train_config)
        block_size = checkpoint.model_config.block_size
    else:
        model_config = GPTConfig.from_preset(args.preset, vocab_size=1, **overrides)  # validate flags first
        kw = {"vocab_size": args.bpe_vocab_size} if args.tokenizer == "bpe" else {}
        tokenizer = train_tokenizer(args.tokenizer, text, **kw)
        if main_rank:
            _warn_if_bpe_stopped_short(args, tokenizer)
        model_config = GPTConfig.from_preset(args.preset, **{**overrides, "vocab_size": tokenizer.vocab_size})
        block_size = model_config.block_size

    tokens = _encode_data(text, tokenizer, args.data)
    train_tokens, val_tokens = split_train_val(tokens, val_fraction=0.1)
    check_long_enough(train_tokens, block_size, "training split")
    check_long_enough(val_tokens, block_size, "validation split")

    if args.resume:
        trainer_kwargs = {k: v for k, v in config_values.items() if k in _explicit_flags(args)}
        lock = RunLock(out).acquire() if main_rank else None
        try:
            trainer = Trainer.resume(out, train_tokens, val_tokens, **trainer_kwargs)
            if trainer.step >= trainer.config.max_iters:
                if main_rank:
                    _say(
                        f"{out} has already finished its {trainer.config.max_iters} steps: nothing to do; "
                        "give a larger --max-iters to train on"
                    )
                return 0
            if main_rank:
                _say(f"resuming {out} at step {trainer.step} of {trainer.config.max_iters}")
            return _run(trainer, lock)
        finally:
            if lock:
                lock.release()
    existed = Path(args.out).exists()
    out = prepare_run_dir(args.out, resume=False) if main_rank else Path(args.out)
    lock = None
    try:  # the lock too: a directory made just now is removed if even its lock cannot be written
        lock = RunLock(out).acquire() if main_rank else None
        torch.manual_seed(args.seed)  # the same --seed gives the same initial weights
        model = GPT(model_config)
        if main_rank:
            _say(
                f"model: {_describe_model(model)} | {tokenizer.kind} tokenizer, vocab {tokenizer.vocab_size} | "
                f"{len(train_tokens):,} training tokens"
            )
        trainer = Trainer(model, train_tokens, val_tokens, train_config, tokenizer, out_dir=out)
        return _run(trainer, lock)
    finally:
        if lock:
            lock.release()
        # A run that failed before its first checkpoint leaves nothing behind but an empty directory.
        if main_rank and not existed and out.is_dir() and not any(out.iterdir()):
            out.rmdir()


def _describe_clash(name: str, typed, saved) -> str:
    """An architecture flag against the checkpoint's value, the flag as it was typed: ``--dropout 0.1
    (checkpoint has 0.0)``, and a switch ``--no-bias (checkpoint has bias=True)``, not ``--bias False``."""
    flag = "--" + name.replace("_", "-")
    if isinstance(typed, bool):
        return f"{flag if typed else '--no-' + flag[2:]} (checkpoint has {name}={saved})"
    return f"{flag} {typed} (checkpoint has {saved})"


def _warn_if_bpe_stopped_short(args: argparse.Namespace, tokenizer) -> None:
    """BPE merges pairs until the vocabulary is full or no pair occurs twice: on a small corpus it stops
    short, and the model silently got a smaller vocabulary than asked for. Said here, not in the library,
    whose callers (the book) size their vocabularies knowingly."""
    if args.tokenizer != "bpe" or tokenizer.vocab_size >= args.bpe_vocab_size:
        return
    print(
        f"warning: --bpe-vocab-size {args.bpe_vocab_size}: the BPE stopped at {tokenizer.vocab_size} tokens, "
        "as no pair of tokens in --data occurs twice any more (nothing left to merge); the model's "
        f"vocabulary is {tokenizer.vocab_size}",
        file=sys.stderr,
    )


def _describe_model(model) -> str:
    """One line on a model's size and shape, for the summaries train and import-gpt2 print."""
    c = model.config

    def count(n: int, noun: str) -> str:
        return f"{n} {noun}" if n == 1 else f"{n} {noun}s"

    return (
        f"{model.num_params() / 1e6:.2f}M parameters | {count(c.n_layer, 'layer')}, {count(c.n_head, 'head')}, "
        f"{c.n_embd} wide, context {c.block_size}"
    )


# Flags only a decaying schedule reads: a constant one trains at --lr from the first step to the last.
_DECAY_ONLY = ("warmup_iters", "min_lr", "lr_decay_iters")


def _check_schedule_flags(args, schedule: str, whose: str = "") -> None:
    """Refuse a schedule flag typed for a schedule that ignores it, as sample refuses a filter its
    decoder ignores: it would change nothing, silently."""
    from .errors import ConfigError

    if schedule != "constant":
        return
    for name in (n for n in _DECAY_ONLY if n in args._explicit):
        raise ConfigError(
            f"--{name.replace('_', '-')} {getattr(args, name)} is not allowed with --schedule constant"
            f"{whose}: the learning rate is --lr at every step, with no warmup and no decay, so it would not "
            "be used; drop it, or use --schedule cosine or linear"
        )


_FIXED_AT_START = ("preset", "tokenizer", "bpe_vocab_size")


def _check_fixed_at_start(args, out, saved_config, tokenizer, overrides: dict, text: str) -> None:
    """The preset and the tokenizer were fixed when the run began: a resume may repeat them (scripts
    rerun the command that started the run, plus --resume) but not change them. CheckpointError naming
    each flag whose value differs from the saved run's, with both values."""
    from .errors import CheckpointError

    clashes = {}
    for name in (n for n in _FIXED_AT_START if n in args._explicit):
        saved = _saved_value(name, args, saved_config, tokenizer, overrides, text)
        if saved is not None:
            clashes[name] = saved
    if clashes:
        named = ", ".join("--" + name.replace("_", "-") for name in clashes)
        details = "; ".join(
            f"--{name.replace('_', '-')} {getattr(args, name)} {saved}" for name, saved in clashes.items()
        )
        raise CheckpointError(
            f"{named} cannot change when resuming {out}: {details}; the model and tokenizer are the saved "
            "ones: drop the flag, or start a new run with another --out"
        )


def _check_seed_unchanged(args, out, saved_train_config: dict | None) -> None:
    """A resumed run continues from the saved random state: its batches and dropout go on where they
    stopped, whatever --seed says (only the evaluation batches would follow a new one). A changed --seed
    would look honoured and not be, so it is refused, as a changed preset is. The run's own seed is
    accepted: scripts rerun the command that began the run, plus --resume."""
    from .errors import CheckpointError

    saved = (saved_train_config or {}).get("seed")
    if "seed" not in args._explicit or saved is None or args.seed == saved:
        return
    raise CheckpointError(
        f"--seed {args.seed} cannot change when resuming {out} (the run's seed is {saved}): a resumed run "
        "continues from its saved random state, so its batches and dropout would be the same; drop the "
        "flag, or start a new run with another --out"
    )


def _saved_value(name: str, args, saved_config, tokenizer, overrides: dict, text: str) -> str | None:
    """How the saved run differs from the value typed for ``name`` (None: it does not)."""
    from .model import GPTConfig
    from .tokenizers import train_tokenizer

    if name == "tokenizer":
        return None if args.tokenizer == tokenizer.kind else f"(the saved run's is {tokenizer.kind})"
    if name == "bpe_vocab_size":
        if tokenizer.kind != "bpe":
            return f"(the saved run's tokenizer is {tokenizer.kind}, not bpe)"
        size = tokenizer.vocab_size
        if args.bpe_vocab_size > size:
            # A BPE stops short of the size asked for when the text runs out of pairs to merge: the
            # size typed when the run began may be larger than the saved one. Then it stops there again.
            if train_tokenizer("bpe", text, vocab_size=args.bpe_vocab_size).vocab_size == size:
                return None
        return None if args.bpe_vocab_size == size else f"(the saved run's BPE has {size} tokens)"
    # The preset's name is not saved: it is the same preset if it gives the saved architecture, together
    # with the architecture flags typed. The vocabulary comes from the tokenizer, not the preset.
    saved = saved_config.to_dict()
    given = GPTConfig.from_preset(args.preset, **{**overrides, "vocab_size": saved["vocab_size"]}).to_dict()
    differ = [k for k in given if given[k] != saved[k]]
    if not differ:
        return None
    return (
        f"gives {', '.join(f'{k}={given[k]}' for k in differ)}, but the saved model has "
        f"{', '.join(f'{k}={saved[k]}' for k in differ)}"
    )


def _encode_data(text: str, tokenizer, data: str):
    """``text`` as token ids. The tokenizer's own error suggests a Python option (``unknown='replace'``);
    here a character a char model lacks is named with --data and what a command-line user can do."""
    from .data import encode_text
    from .errors import TokenizerError

    try:
        return encode_text(text, tokenizer)
    except TokenizerError as exc:
        if tokenizer.kind != "char":
            raise TokenizerError(f"--data {data}: {exc}") from None
        from .generation.cli import unknown_characters

        unknown = unknown_characters(tokenizer, text)
        shown = ", ".join(repr(c) for c in unknown[:10]) + (" ..." if len(unknown) > 10 else "")
        raise TokenizerError(
            f"--data {data} has {len(unknown)} character(s) the model's tokenizer never saw in training: "
            f"{shown}; use text written with its {tokenizer.vocab_size} characters, or train a model "
            "with --tokenizer bpe, which encodes any text"
        ) from None


def _explicit_flags(args: argparse.Namespace) -> set[str]:
    """TrainConfig fields the user set on the command line (to override a resumed run's values)."""
    given = set(getattr(args, "_explicit", ()))
    mapping = {"grad_accum": "grad_accum_steps", "no_progress": "progress", "ddp_timeout": "ddp_timeout_s"}
    return {mapping.get(name, name) for name in given}


def _say(line: str) -> None:
    """Print one of train's lines on stdout, flushed, so that `| tee log` shows it as it happens.

    A reader that went away (`train ... | head`, a killed `tee`) must not end the run: a BrokenPipeError
    from the next print would abandon training, delete a new run's directory and exit 0. Instead the
    rest of stdout goes to os.devnull, stderr says so once, and training goes on to its checkpoint.
    """
    try:
        print(line, flush=True)
    except BrokenPipeError:
        _discard_stdout()


def _discard_stdout() -> None:
    """Point stdout at os.devnull (the descriptor too, for the library's own prints and the unwritten
    rest of the buffer), and say so on stderr."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):  # a stdout without a descriptor (captured): replace the object
        sys.stdout = open(os.devnull, "w")  # kept open for the rest of the process
    finally:
        os.close(devnull)
    try:
        print(
            "warning: stdout was closed (its reader went away): training goes on without its progress "
            "lines, and saves its checkpoint as usual",
            file=sys.stderr,
            flush=True,
        )
    except OSError:
        pass  # stderr is gone too: nothing left to tell


def _run(trainer, lock) -> int:
    from .errors import TrainingDivergedError
    from .train import Callback

    class PrintEvals(Callback):
        def on_eval(self, trainer, record):
            if not trainer.config.progress:
                # --peak-flops adds the model FLOPs utilisation of the step (None without it)
                mfu = f" | MFU {record['mfu']:.2%}" if record.get("mfu") is not None else ""
                _say(
                    f"step {record['step']:>6} | lr {record['lr']:.2e} | train {record['train_loss']:.4f} | "
                    f"val {record['val_loss']:.4f} | {record['tokens_per_s']:,.0f} tok/s{mfu}"
                )

    trainer.callbacks.append(PrintEvals())
    try:
        history = trainer.train(handle_signals=True)
    except TrainingDivergedError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_DIVERGED
    finally:
        trainer.close()  # leave the torchrun process group (a no-op in one process)
    steps, vals = history.evaluated()
    if trainer.is_main:
        first = history.column("train_loss")[:1]
        msg = f"done at step {trainer.step}"
        if first:
            msg += f": train loss {first[0]:.4f} -> {history.column('train_loss')[-1]:.4f}"
        if vals:
            msg += f", val loss {vals[-1]:.4f}"
        _say(f"{msg}. checkpoint: {trainer.out_dir}")
        if trainer.stop_requested:
            _say("stopped early; continue with --resume")
    return 0


def cmd_sample(args: argparse.Namespace) -> int:
    """``sample``: continue ``--prompt`` with a trained model."""
    from .checkpoint import load_model
    from .device import resolve_device
    from .generation.cli import check_sample_options, sample_cli

    check_sample_options(args)  # clashing flags: refuse before the (slower) checkpoint load
    device = resolve_device(args.device)
    model, tokenizer = load_model(args.checkpoint, device=device)
    _require_tokenizer(tokenizer, args.checkpoint, "sample needs it to encode --prompt and decode the output")
    return sample_cli(model, tokenizer, args) or 0


def _require_tokenizer(tokenizer, checkpoint: str, why: str) -> None:
    """A checkpoint saved without a tokenizer cannot turn text into ids: say so instead of crashing."""
    if tokenizer is None:
        from .errors import CheckpointError

        raise CheckpointError(
            f"--checkpoint {checkpoint}: this checkpoint holds no tokenizer, and {why}; "
            "use a checkpoint written by 'train' (it saves its tokenizer)"
        )


def cmd_eval(args: argparse.Namespace) -> int:
    """``eval``: loss, perplexity and bits per character of a checkpoint on a split of ``--data``."""
    import torch

    from .checkpoint import load_model
    from .data import split_train_val
    from .device import resolve_device
    from .errors import ConfigError
    from .evaluate import evaluate_tokens
    from .generation.cli import counted

    device = resolve_device(args.device)
    model, tokenizer = load_model(args.checkpoint, device=device)
    _require_tokenizer(tokenizer, args.checkpoint, "eval needs it to encode --data")
    context = model.config.block_size
    block_size = args.block_size or context
    if block_size > context:
        raise ConfigError(f"--block-size {block_size} is larger than the model's context ({context} tokens)")
    tokens = _encode_data(_load_text(args.data), tokenizer, args.data)
    if args.split != "all":
        train_tokens, val_tokens = split_train_val(tokens, val_fraction=0.1)
        tokens = val_tokens if args.split == "val" else train_tokens
    tokens = tokens[: args.max_tokens + 1]
    if len(tokens) < 2:  # the library's own message suggests --split all, even when it was given
        other_split = "" if args.split == "all" else ", or --split all to score the whole text"
        raise ConfigError(
            f"--data {args.data}: --split {args.split} has {len(tokens)} token(s), and scoring needs at least "
            f"2 (one to predict and one before it); use a longer text{other_split}"
        )
    with torch.no_grad():
        result = evaluate_tokens(model, tokenizer, torch.as_tensor(tokens), block_size)
    print(
        f"{args.split} loss {result.loss:.4f} nats/token | perplexity {result.perplexity:.3f} | "
        f"{result.bits_per_char:.4f} bits/char | {counted(result.n_tokens, 'token', 'tokens')}, "
        f"{counted(result.n_chars, 'char', 'chars')}"
    )
    return 0


def cmd_import_gpt2(args: argparse.Namespace) -> int:
    """``import-gpt2``: Hugging Face GPT-2 files -> an arlm checkpoint in ``--out`` (nothing on failure)."""
    from .checkpoint import save_checkpoint
    from .errors import TokenizerError
    from .gpt2_weights import TOKENIZER_FILE, find_gpt2_file, load_gpt2_tokenizer, load_gpt2_weights
    from .rundir import RunLock, prepare_run_dir

    how = "delete it to import again"
    prepare_run_dir(args.out, resume=False, how_to_resume=how, create=False)  # fail before the slow load
    model = load_gpt2_weights(args.weights, config_json=args.config)
    tokenizer_path = find_gpt2_file(args.weights, args.tokenizer, TOKENIZER_FILE)
    if tokenizer_path is None:
        raise TokenizerError(
            f"no {TOKENIZER_FILE} next to --weights {args.weights}: sample and eval need GPT-2's tokenizer; "
            f"download the model's {TOKENIZER_FILE} too, or pass it with --tokenizer"
        )
    tokenizer = load_gpt2_tokenizer(tokenizer_path)
    c = model.config
    if tokenizer.vocab_size != c.vocab_size:
        raise TokenizerError(
            f"--tokenizer {tokenizer_path} has {tokenizer.vocab_size:,} tokens but the weights embed "
            f"{c.vocab_size:,}: they are not from the same model"
        )
    existed = Path(args.out).exists()
    out = prepare_run_dir(args.out, resume=False, how_to_resume=how)
    lock = RunLock(out).acquire()
    try:
        prepare_run_dir(out, resume=False, how_to_resume=how, create=False)  # no one wrote it meanwhile
        path = save_checkpoint(out, model, tokenizer=tokenizer)
    finally:
        lock.release()
        if not existed and out.is_dir() and not any(out.iterdir()):
            out.rmdir()  # a failed import leaves nothing behind
    print(
        f"imported {_describe_model(model)} | vocab {c.vocab_size:,} -> {path}\n"
        f"try: python -m arlm_lib sample --checkpoint {shlex.quote(str(out))} --prompt 'Hello, my name is'"
    )
    return 0


def cmd_corpus(args: argparse.Namespace) -> int:
    """``corpus list`` / ``corpus info NAME``."""
    from .corpus import format_corpus_info, format_corpus_list

    print(format_corpus_list() if args.corpus_command == "list" else format_corpus_info(args.name))
    return 0


COMMANDS = {
    "train": cmd_train,
    "sample": cmd_sample,
    "eval": cmd_eval,
    "import-gpt2": cmd_import_gpt2,
    "corpus": cmd_corpus,
}


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status (0 ok, 1 the OS refused a file operation, 2 bad
    input, 3 diverged, 4 out of memory, 130 interrupted)."""
    previous_format, warnings.formatwarning = warnings.formatwarning, _one_line_warning
    try:
        return _main(argv)
    except KeyboardInterrupt:  # also while the parser imports torch, in the first second
        print("interrupted", file=sys.stderr)
        return 130
    finally:
        warnings.formatwarning = previous_format


def _main(argv: Sequence[str] | None) -> int:
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    args, unknown = parser.parse_known_args(argv)
    if unknown:  # reported by the command's own parser, so the hint points at its --help
        _report_unknown_flags(parser.command_parsers[args.command], unknown, parser.command_parsers)
    # Remember which flags were typed, so --resume overrides only those, not every default.
    args._explicit = {a[2:].split("=", 1)[0].replace("-", "_") for a in argv if a.startswith("--")}
    try:
        _check_device_flag(args)
        return COMMANDS[args.command](args)
    except ArlmError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except BrokenPipeError:
        return 0
    except OSError as exc:  # full disk, permissions: still one line, not a traceback
        # A write to a full disk names no file: then no "()" after the reason.
        where = f" ({exc.filename})" if getattr(exc, "filename", None) else ""
        print(f"error: {exc.strerror or exc}{where}", file=sys.stderr)
        return 1
    except (MemoryError, RuntimeError) as exc:
        if not _is_out_of_memory(exc):
            raise  # a bug: keep its traceback
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        print(
            f"error: out of memory ({first_line}); {_OOM_HINTS.get(args.command, _OOM_HINT)}", file=sys.stderr
        )
        return EXIT_OUT_OF_MEMORY


# What to lower after an out-of-memory error: each command's own flags (sample has no --batch-size).
_OOM_HINT = "lower --batch-size, --block-size or the model size"
_OOM_HINTS = {
    "sample": "lower --beam, --num-samples or --max-new-tokens, or sample from a smaller model",
    "eval": "lower --block-size, or evaluate a smaller model",
    "import-gpt2": "import a smaller model (gpt2 rather than gpt2-xl), or free memory",
}


def _check_device_flag(args: argparse.Namespace) -> None:
    """Check --device before any work, so its error names the flag (the commands resolve it again)."""
    if getattr(args, "device", None) is None:
        return
    from .device import resolve_device
    from .errors import DeviceError

    try:
        resolve_device(args.device)
    except DeviceError as exc:
        raise DeviceError(f"--device: {exc}") from None


def _is_out_of_memory(exc: BaseException) -> bool:
    """CPU allocation failures are plain RuntimeErrors; CUDA ones are torch.OutOfMemoryError."""
    return (
        isinstance(exc, MemoryError)
        or type(exc).__name__ == "OutOfMemoryError"
        or "can't allocate memory" in str(exc)
        or "out of memory" in str(exc).lower()
    )


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
