"""``sample --stop TEXT``: each sample ends before the first stop text, printed as the library's
generate_text returns it (the stop text cut), streamed or not, with a draft too; beam and contrastive
search end on the stop's one token; and one-line refusals that name the value."""

from __future__ import annotations

import io
import re

import pytest
from conftest import run_cli as run
from test_generate import make_model

from arlm_lib.checkpoint import load_model, save_checkpoint
from arlm_lib.cli import build_parser, main
from arlm_lib.errors import GenerationError, TokenizerError
from arlm_lib.generate import (
    beam_search,
    contrastive_search,
    generate_ids,
    generate_text,
    make_generator,
    speculative_generate,
)
from arlm_lib.generation.cli import sample_cli
from arlm_lib.model import GPT, GPTConfig
from arlm_lib.tokenizers import train_tokenizer

pytestmark = pytest.mark.usefixtures("one_thread")  # conftest.py

LINE = "the cat sat on the mat and the dog sat on the log.\n"
PROMPT, NEW = "the ", 40
SUMMARY = re.compile(r"speculative: (\d+) tokens? in ")


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """A briefly trained model (real words, spaces and newlines) and a random draft with its tokenizer."""
    root = tmp_path_factory.mktemp("stop")
    corpus = root / "text.txt"
    corpus.write_text(LINE * 200, encoding="utf-8")
    assert main(["train", "--data", str(corpus), "--out", str(root / "target"), "--max-iters", "40",
                 "--eval-interval", "40", "--eval-iters", "2", "--lr", "1e-2", "--no-progress", "--device",
                 "cpu", "--n-layer", "1", "--n-head", "2", "--n-embd", "32", "--block-size", "32"]) == 0  # fmt: skip
    _, tok = load_model(root / "target")
    save_checkpoint(root / "draft", make_model(tok.vocab_size, 16, seed=5), tokenizer=tok)
    return root


@pytest.fixture(scope="module")
def target(runs):
    return load_model(runs / "target")


def sample(runs, *flags: str) -> list[str]:
    return ["sample", "--checkpoint", str(runs / "target"), "--device", "cpu", "--prompt", PROMPT,
            "--max-new-tokens", str(NEW), *flags]  # fmt: skip


def both_ways(argv: list[str], capsys) -> tuple[int, str, str]:
    """run(argv), after checking that --stream prints exactly the same."""
    result = run(argv, capsys)
    assert run([*argv, "--stream"], capsys) == result
    return result


def continuation(printed: str) -> str:
    """The new text of one printed sample: after the prompt, before the final newline."""
    assert printed.startswith(PROMPT) and printed.endswith("\n"), printed
    return printed[len(PROMPT) : -1]


def cut_inside(text: str, stop: str) -> str:
    """``text`` before the first ``stop``, which must lie inside it: a real cut, not at its very start."""
    at = text.find(stop)
    assert 0 < at < len(text) - len(stop), (stop, text)
    return text[:at]


def stops_inside(text: str, length: int) -> list[str]:
    """The pieces of ``text`` of ``length`` characters whose first occurrence cuts it inside, by where."""
    pieces = {text[i : i + length] for i in range(1, len(text) - length)}
    return sorted((p for p in pieces if 0 < text.find(p)), key=text.find)


def a_stop_inside(text: str, length: int) -> str:
    """The piece of ``text`` of ``length`` characters that first occurs latest, but inside it: the
    longest cut text."""
    return stops_inside(text, length)[-1]


def seed_with(target, stop: str) -> int:
    """A seed whose sampled continuation of PROMPT holds ``stop`` inside it."""
    model, tok = target
    for seed in range(1, 100):
        text = generate_text(model, tok, PROMPT, max_new_tokens=NEW, seed=seed)
        if 0 < text.find(stop) < len(text) - len(stop):
            return seed
    pytest.fail(f"no seed in 1..99 samples a text with {stop!r} inside")


# ----------------------------------------------------------------------------- sampling
@pytest.mark.parametrize(
    "typed, stop",
    [("\\n", "\n"), ("at", "at"), (" ", " "), ("the", "the")],
    ids=["escaped newline", "two chars", "space", "a word"],
)
def test_a_stop_cuts_the_sampled_text_before_its_first_occurrence(runs, target, capsys, typed, stop):
    seed = seed_with(target, stop)
    argv = sample(runs, "--seed", str(seed))
    code, plain, _ = run(argv, capsys)
    model, tok = target
    assert code == 0
    assert plain == PROMPT + generate_text(model, tok, PROMPT, max_new_tokens=NEW, seed=seed) + "\n"
    code, text, err = both_ways([*argv, "--stop", typed], capsys)
    assert code == 0 and err == ""
    # The same draws up to the stop, which is not printed.
    assert text == PROMPT + cut_inside(continuation(plain), stop) + "\n"


def test_of_several_stops_the_first_to_appear_ends_the_sample(runs, target, capsys):
    argv = sample(runs, "--seed", str(seed_with(target, " ")))
    new = continuation(run(argv, capsys)[1])
    pieces = stops_inside(new, 2)
    early, late = pieces[len(pieces) // 2], pieces[-1]
    assert new.find(early) < new.find(late)
    for order in ([early, late], [late, early]):
        code, text, _ = both_ways([*argv, "--stop", order[0], "--stop", order[1]], capsys)
        assert code == 0 and text == PROMPT + cut_inside(new, early) + "\n"


def test_each_of_several_samples_stops_as_the_library_with_one_generator(runs, target, capsys):
    model, tok = target
    seed = seed_with(target, " ")
    argv = sample(runs, "--seed", str(seed), "--num-samples", "2")
    code, text, err = both_ways([*argv, "--stop", " "], capsys)
    # One generator serves both samples, one after the other, as without --stop: so the second sample
    # starts from where the first one's draws stopped.
    generator = make_generator(seed)
    expected = [
        generate_text(model, tok, PROMPT, max_new_tokens=NEW, seed=generator, stop_strings=" ")
        for _ in range(2)
    ]
    assert all(len(t) < NEW for t in expected)  # both stopped
    assert code == 0 and err == ""
    assert text == "".join(f"--- sample {i} ---\n{PROMPT}{t}\n" for i, t in enumerate(expected, 1))
    # The first sample is the one without --stop, cut.
    first = run(sample(runs, "--seed", str(seed)), capsys)[1]
    assert expected[0] == cut_inside(continuation(first), " ")


# ----------------------------------------------------------------------------- speculative decoding
@pytest.mark.parametrize("flags", [["--seed", "3"], ["--temperature", "0"]], ids=["sampled", "greedy"])
def test_with_a_draft_a_stop_ends_the_generation_and_cuts_the_text(runs, capsys, flags):
    argv = sample(runs, "--draft", str(runs / "draft"), *flags)
    code, plain, _ = run(argv, capsys)
    new = continuation(plain)
    stop = a_stop_inside(new, 2)  # two tokens: speculative decoding watches the text, as sampling does
    code, text, err = both_ways([*argv, "--stop", stop], capsys)
    assert code == 0 and text == PROMPT + cut_inside(new, stop) + "\n"
    # Generation stopped at the token that completed the stop (one token per character), not at NEW.
    assert int(SUMMARY.match(err.splitlines()[-1]).group(1)) == new.find(stop) + len(stop)
    if "--temperature" in flags:  # greedy: the text without a draft, stopped the same way
        assert run(sample(runs, *flags, "--stop", stop), capsys)[1] == text


def test_speculative_generate_stops_on_a_stop_string_as_generate_does(target, runs):
    model, tok = target
    draft, _ = load_model(runs / "draft")
    ids = tok.encode(PROMPT)
    plain = speculative_generate(model, draft, ids, max_new_tokens=NEW, seed=3, tokenizer=tok)
    stop = a_stop_inside(tok.decode(plain.ids), 2)
    pieces = []
    stopped = speculative_generate(model, draft, ids, max_new_tokens=NEW, seed=3, tokenizer=tok,
                                   stop_strings=[stop], on_tokens=pieces.append)  # fmt: skip
    end = tok.decode(plain.ids).find(stop) + len(stop)  # one token per character
    assert stopped.ids == plain.ids[:end] and sum(pieces, []) == stopped.ids
    greedy = speculative_generate(model, draft, ids, max_new_tokens=NEW, temperature=0, tokenizer=tok,
                                  stop_strings=stop, num_draft_tokens=6)  # fmt: skip
    assert greedy.ids == generate_ids(
        model, ids, max_new_tokens=NEW, temperature=0, tokenizer=tok, stop_strings=stop
    )
    with pytest.raises(GenerationError, match="stop_strings need a tokenizer"):
        speculative_generate(model, draft, ids, max_new_tokens=3, stop_strings="at")


# ----------------------------------------------------------------------------- beam and contrastive search
@pytest.mark.parametrize("width, shown", [(1, 1), (3, 1), (3, 3)])
def test_beam_search_ends_on_the_stop_token_and_prints_the_text_before_it(runs, target, capsys, width, shown):
    model, tok = target
    argv = sample(runs, "--beam", str(width), "--num-samples", str(shown), "--stop", " ")
    code, text, err = both_ways(argv, capsys)
    space = tok.encode(" ")[0]
    best = beam_search(model, tok.encode(PROMPT), width, NEW, eos_id=space, tokenizer=tok)[:shown]
    assert all(h.ids[-1] == space for h in best)  # each ended on the stop token
    lines = [PROMPT + tok.decode(h.ids[:-1]) + "\n" for h in best]  # without it, as sampling prints
    if shown > 1:
        lines = [
            f"--- beam {i} (score {h.score:.4f}) ---\n{line}"
            for i, (h, line) in enumerate(zip(best, lines), 1)
        ]
    assert code == 0 and err == "" and text == "".join(lines)
    assert text != run(argv[:-2], capsys)[1]  # the stop changed the search


def test_contrastive_search_ends_on_the_stop_token_and_prints_the_text_before_it(runs, target, capsys):
    model, tok = target
    argv = sample(runs, "--penalty-alpha", "0.6")
    new = continuation(run(argv, capsys)[1])
    stop = a_stop_inside(new, 1)
    code, text, err = both_ways([*argv, "--stop", stop], capsys)
    # Deterministic, and the stop only ends it: the text without --stop, cut.
    assert code == 0 and err == "" and text == PROMPT + cut_inside(new, stop) + "\n"
    ids = contrastive_search(
        model, tok.encode(PROMPT), NEW, penalty_alpha=0.6, eos_id=tok.encode(stop)[0], tokenizer=tok
    )
    assert (
        tok.decode(ids) == cut_inside(new, stop) + stop
    )  # the library keeps the stop token; the CLI cuts it


def test_a_stop_of_one_multi_character_token_is_the_search_end(capsys):
    bpe = train_tokenizer("bpe", "the cat sat on the mat. " * 20, vocab_size=260)
    model = GPT(GPTConfig(vocab_size=bpe.vocab_size, block_size=16, n_layer=1, n_head=2, n_embd=16))
    [the] = bpe.encode(" the")  # one token of four characters
    for options in ({"beam": 2}, {"penalty_alpha": 0.6}):
        out = io.StringIO()
        assert sample_cli(model, bpe, out=out, prompt="cat", max_new_tokens=8, stop=[" the"], **options) == 0
        if "beam" in options:
            ids = beam_search(model, bpe.encode("cat"), 2, 8, eos_id=the, tokenizer=bpe)[0].ids
        else:
            ids = contrastive_search(
                model, bpe.encode("cat"), 8, penalty_alpha=0.6, eos_id=the, tokenizer=bpe
            )
        assert out.getvalue() == "cat" + bpe.decode(ids[:-1] if ids[-1] == the else ids) + "\n"
    with pytest.raises(GenerationError, match=r"^--stop ' cat' is not allowed with --beam: .* is 3 tokens"):
        sample_cli(model, bpe, out=io.StringIO(), max_new_tokens=3, beam=2, stop=[" cat"])
    # Byte-level BPE encodes any text but a lone surrogate (an undecodable byte on the command line).
    with pytest.raises(TokenizerError, match=r"^--stop '\\udcff': .*surrogate"):
        sample_cli(model, bpe, out=io.StringIO(), max_new_tokens=3, stop=["\udcff"])


# ----------------------------------------------------------------------------- escapes, help, refusals
def test_the_stop_flag_reads_four_escapes_and_nothing_else():
    parse = build_parser().parse_args
    stops = parse(
        ["sample", "--checkpoint", "x", "--stop", "\\n", "--stop", "a\\tb\\r\\\\", "--stop", "é\n"]
    ).stop
    assert stops == ["\n", "a\tb\r\\", "é\n"]  # a real newline, and non-ASCII, pass as they are
    assert parse(["sample", "--checkpoint", "x"]).stop is None


def test_help_explains_the_stop_flag(capsys):
    with pytest.raises(SystemExit):
        main(["sample", "--help"])
    out = " ".join(capsys.readouterr().out.split())
    assert (
        "--stop TEXT" in out
        and "repeatable" in out
        and "new text first contains TEXT, which is not printed" in out
    )
    assert (
        "--stop '\\n' ends at the end of a line" in out
        and "one --stop, that the tokenizer encodes as one token" in out
    )


@pytest.mark.parametrize(
    "flags, needles",
    [
        (["--stop", ""], ["argument --stop: '' is not allowed"]),
        (["--stop", "a\\q"], ["argument --stop: 'a\\q' has '\\q', which is not an escape --stop reads", "\\n (newline)"]),
        (["--stop", "at\\"], ["argument --stop: 'at\\' has '\\'"]),
        (["--stop", "Zé."], ["--stop 'Zé.' has 2 character(s) this model never saw in training: 'Z', 'é'; use only"]),
        (["--stop", "É", "--beam", "2"], ["--stop 'É' has 1 character(s) this model never saw"]),
        (["--stop", "É", "--draft", "DRAFT"], ["--stop 'É' has 1 character(s) this model never saw"]),
        (["--stop", "at", "--beam", "2"],
         ["--stop 'at' is not allowed with --beam: beam search ends on one token, and 'at' is 2 tokens ('a', 't')"]),
        (["--stop", "\\n\\n", "--penalty-alpha", "0.6"],
         ["--stop '\\n\\n' is not allowed with --penalty-alpha: contrastive search ends on one token, and "
          "'\\n\\n' is 2 tokens"]),
        (["--beam", "2", "--stop", ".", "--stop", "\\n"],
         ["--stop given 2 times ('.', '\\n') is not allowed with --beam: beam search ends on one token"]),
        (["--penalty-alpha", "0.6", "--stop", ".", "--stop", "."],
         ["--stop given 2 times ('.', '.') is not allowed with --penalty-alpha"]),
    ],
)  # fmt: skip
def test_bad_stops_exit_2_in_one_line_naming_the_value(runs, capsys, flags, needles):
    flags = [str(runs / "draft") if f == "DRAFT" else f for f in flags]
    code, out, err = run(sample(runs, *flags), capsys)
    assert code == 2 and out == ""  # nothing printed, not even the prompt
    assert len(err.strip().splitlines()) == 1, err  # one line: no traceback
    for needle in needles:
        assert needle in err, err


def test_several_stops_with_a_search_are_refused_before_the_checkpoint_is_loaded(tmp_path, capsys):
    argv = ["sample", "--checkpoint", str(tmp_path / "missing"), "--beam", "2", "--stop", "a", "--stop", "b"]
    code, out, err = run(argv, capsys)
    assert code == 2 and out == "" and "--stop given 2 times ('a', 'b')" in err and "missing" not in err


def test_an_empty_stop_from_python_is_refused_naming_the_flag(target):
    model, tok = target
    for stop in ([""], ["a", ""]):
        with pytest.raises(
            GenerationError, match=r"^--stop '' is not allowed: a stop text must be a non-empty str"
        ):
            sample_cli(model, tok, out=io.StringIO(), max_new_tokens=3, stop=stop)
