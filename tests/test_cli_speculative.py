"""``sample --draft``: speculative decoding on the command line. The same text as without a draft at
--temperature 0, exactly the library's text when sampling, a summary on stderr, and one-line refusals."""

from __future__ import annotations

import inspect
import io
import re

import pytest
from conftest import run_cli as run
from test_generate import make_model

from arlm_lib.checkpoint import CHECKPOINT_FILE, load_model, save_checkpoint
from arlm_lib.cli import main
from arlm_lib.errors import CheckpointError, GenerationError
from arlm_lib.generate import SpeculativeResult, speculative_generate
from arlm_lib.generation.cli import _StreamPrinter, sample_cli, speculative_summary
from arlm_lib.tokenizers import CharTokenizer

pytestmark = pytest.mark.usefixtures("one_thread")  # conftest.py

LINE = "the cat sat on the mat and the dog sat on the log.\n"
STATS = re.compile(
    r"speculative: (\d+) tokens? in (\d+) pass(?:es)? of the model \((\d+\.\d\d) tokens per pass\), "
    r"(\d+)% of (\d+) drafted tokens accepted"
)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """A trained model, a smaller and less trained draft (same data, so the same tokenizer; often
    overruled), and drafts that do not fit the model."""
    root = tmp_path_factory.mktemp("speculative")
    corpus = root / "text.txt"
    corpus.write_text(LINE * 200, encoding="utf-8")
    train = ["train", "--data", str(corpus), "--lr", "1e-2", "--eval-iters", "2", "--no-progress", "--device", "cpu"]  # fmt: skip
    assert main([*train, "--out", str(root / "target"), "--max-iters", "80", "--eval-interval", "80",
                 "--n-layer", "1", "--n-head", "2", "--n-embd", "32", "--block-size", "32"]) == 0  # fmt: skip
    assert main([*train, "--out", str(root / "draft"), "--max-iters", "50", "--eval-interval", "50",
                 "--n-layer", "1", "--n-head", "1", "--n-embd", "16", "--block-size", "16", "--seed", "7"]) == 0  # fmt: skip
    _, tok = load_model(root / "target")
    same_size = CharTokenizer.train(LINE.upper())  # 15 characters too, but other ones
    assert same_size.vocab_size == tok.vocab_size and same_size != tok
    bigger = CharTokenizer.train(LINE + "xyz")
    save_checkpoint(root / "other_tokenizer", make_model(tok.vocab_size, 16), tokenizer=same_size)
    save_checkpoint(root / "other_vocab", make_model(bigger.vocab_size, 16), tokenizer=bigger)
    save_checkpoint(root / "no_tokenizer", make_model(tok.vocab_size, 16))
    (root / "corrupt").mkdir()
    data = (root / "draft" / CHECKPOINT_FILE).read_bytes()
    (root / "corrupt" / CHECKPOINT_FILE).write_bytes(data[: len(data) // 2])
    return root


def sample(runs, *flags: str) -> list[str]:
    return ["sample", "--checkpoint", str(runs / "target"), "--device", "cpu", *flags]


def stats(err: str) -> tuple[int, int, int, int]:
    """(tokens, passes, percent accepted, drafted) from the summary line, the last line of stderr."""
    match = STATS.fullmatch(err.strip().splitlines()[-1])
    assert match, err
    tokens, passes, per_pass, percent, drafted = match.groups()
    assert float(per_pass) == pytest.approx(int(tokens) / int(passes), abs=0.005)
    return int(tokens), int(passes), int(percent), int(drafted)


# ----------------------------------------------------------------------------- greedy: the same text
@pytest.mark.parametrize("prompt", ["the ", ""])
@pytest.mark.parametrize("draft_tokens", [[], ["--draft-tokens", "1"], ["--draft-tokens", "7"]])
def test_greedy_text_with_a_draft_is_the_greedy_text_without_one(runs, capsys, prompt, draft_tokens):
    # 60 new tokens: past the model's 32-token context, so the windows are cut too.
    argv = sample(runs, "--prompt", prompt, "--temperature", "0", "--max-new-tokens", "60")
    code, plain, err = run(argv, capsys)
    assert code == 0 and err == ""
    assert len(set(plain[len(prompt) :])) > 5  # a real text, not one character over and over

    code, text, err = run([*argv, "--draft", str(runs / "draft"), *draft_tokens], capsys)
    assert code == 0 and text == plain
    tokens, _, percent, drafted = stats(err)
    assert tokens == 60 and 0 < percent < 100  # the draft was sometimes right, sometimes overruled

    code, text, err = run([*argv, "--draft", str(runs / "target"), *draft_tokens], capsys)
    assert code == 0 and text == plain
    _, passes, percent, _ = stats(err)
    assert percent == 100 and passes < 60  # the model as its own draft: never overruled


def test_the_summary_is_the_library_count_and_stdout_keeps_its_shape(runs, capsys):
    argv = sample(runs, "--prompt", "the ", "--temperature", "0", "--max-new-tokens", "40")
    code, text, err = run([*argv, "--draft", str(runs / "draft"), "--draft-tokens", "3"], capsys)
    model, tok = load_model(runs / "target")
    draft, _ = load_model(runs / "draft")
    result = speculative_generate(model, draft, tok.encode("the "), max_new_tokens=40, temperature=0,
                                  num_draft_tokens=3, tokenizer=tok)  # fmt: skip
    assert code == 0 and text == "the " + tok.decode(result.ids) + "\n"
    assert len(err.strip().splitlines()) == 1  # one line, and only on stderr
    assert stats(err) == (
        40,
        result.target_passes,
        round(100 * result.accepted / result.drafted),
        result.drafted,
    )
    assert result.accepted < result.drafted  # a rejected draft token: the case greedy equality tests
    code, streamed, _ = run(
        [*argv, "--draft", str(runs / "draft"), "--draft-tokens", "3", "--stream"], capsys
    )
    assert code == 0 and streamed == text  # --stream prints the same text


class Writes(io.StringIO):
    """A stdout that remembers each write."""

    def __init__(self):
        super().__init__()
        self.pieces = []

    def write(self, text):
        self.pieces.append(text)
        return super().write(text)


def test_stream_prints_each_pass_as_it_ends_and_nothing_before_a_bad_draft(runs):
    model, tok = load_model(runs / "target")
    options = dict(prompt="the ", temperature=0, max_new_tokens=40, draft_tokens=3)
    out = Writes()
    assert sample_cli(model, tok, out=out, draft=str(runs / "draft"), stream=True, **options) == 0
    plain = io.StringIO()
    sample_cli(model, tok, out=plain, draft=str(runs / "draft"), **options)
    assert out.getvalue() == plain.getvalue()
    pieces = [p for p in out.pieces if p]
    draft, _ = load_model(runs / "draft")
    result = speculative_generate(model, draft, tok.encode("the "), max_new_tokens=40, temperature=0,
                                  num_draft_tokens=3, tokenizer=tok)  # fmt: skip
    assert len(pieces) == result.target_passes + 1  # one piece per pass (the prompt with the first), "\n"
    out = Writes()
    with pytest.raises(CheckpointError):
        sample_cli(model, tok, out=out, draft=str(runs / "missing"), stream=True, **options)
    assert out.getvalue() == ""


@pytest.mark.parametrize("stream", [False, True])
def test_ctrl_c_prints_the_text_accepted_so_far_on_its_own_line(runs, monkeypatch, stream):
    """As sampling does: without --stream the text was lost, and with it "interrupted" followed it on
    the same line."""
    from arlm_lib.generation import cli as generation_cli

    model, tok = load_model(runs / "target")
    options = dict(prompt="the ", temperature=0, max_new_tokens=40, draft_tokens=3, draft=str(runs / "draft"))
    full = io.StringIO()
    sample_cli(model, tok, out=full, stream=stream, **options)
    original = generation_cli.speculative_generate

    def interrupted(*args, on_tokens, **kwargs):
        calls = []

        def count_then_stop(ids):
            on_tokens(ids)
            calls.append(ids)
            if len(calls) == 3:
                raise KeyboardInterrupt

        return original(*args, on_tokens=count_then_stop, **kwargs)

    monkeypatch.setattr(generation_cli, "speculative_generate", interrupted)
    out = io.StringIO()
    with pytest.raises(KeyboardInterrupt):
        sample_cli(model, tok, out=out, stream=stream, **options)
    cut = out.getvalue()
    assert cut.endswith("\n") and cut.count("\n") == 1 and len(cut) > len("the \n")
    assert full.getvalue().startswith(cut[:-1]) and len(cut) < len(full.getvalue())


def test_the_stream_holds_back_a_partial_utf8_character():
    class Bytes:  # token ids are bytes
        def decode(self, ids):
            return bytes(ids).decode("utf-8", errors="replace")

    out = Writes()
    printer = _StreamPrinter(Bytes(), "> ", out)
    for ids in ([104, 105], [0xC3], [0xA9, 33], []):  # "hi", then the two bytes of "é", then "!"
        printer(ids)
    printer.finish()
    assert [p for p in out.pieces if p] == ["> hi", "é!", "\n"]


def test_draft_tokens_zero_is_plain_decoding_one_pass_per_token(runs, capsys):
    argv = sample(runs, "--prompt", "the ", "--temperature", "0", "--max-new-tokens", "12")
    _, plain, _ = run(argv, capsys)
    code, text, err = run([*argv, "--draft", str(runs / "draft"), "--draft-tokens", "0"], capsys)
    assert code == 0 and text == plain
    assert (
        err.strip()
        == "speculative: 12 tokens in 12 passes of the model (1.00 tokens per pass), no tokens drafted"
    )


# ----------------------------------------------------------------------------- sampling: the library's text
LIBRARY_NAME = {"--no-repeat-ngram": "no_repeat_ngram_size", "--draft-tokens": "num_draft_tokens"}


@pytest.mark.parametrize(
    "flag, value",
    [
        (None, None),
        ("--temperature", 0.6),
        ("--top-k", 2),
        ("--draft-tokens", 1),
        ("--draft-tokens", 6),
        ("--top-p", 0.7),
        ("--min-p", 0.3),
        ("--typical-p", 0.5),
        ("--repetition-penalty", 1.5),
        ("--no-repeat-ngram", 2),
    ],
)
def test_sampled_text_is_the_library_text_with_the_same_flags_and_seed(runs, capsys, flag, value):
    argv = sample(
        runs, "--prompt", "the ", "--max-new-tokens", "40", "--seed", "5", "--draft", str(runs / "draft")
    )
    code, text, err = run([*argv, flag, str(value)] if flag else argv, capsys)
    assert code == 0
    model, tok = load_model(runs / "target")
    draft, _ = load_model(runs / "draft")

    def library(**options):
        return speculative_generate(model, draft, tok.encode("the "), max_new_tokens=40, seed=5, tokenizer=tok,
                                    **options)  # fmt: skip

    options = {LIBRARY_NAME.get(flag, flag[2:].replace("-", "_")): value} if flag else {}
    result = library(**options)
    assert text == "the " + tok.decode(result.ids) + "\n"
    assert stats(err) == (
        40,
        result.target_passes,
        round(100 * result.accepted / result.drafted),
        result.drafted,
    )
    if flag:  # the flag reached the library: without it, another text or other counts
        plain = library()
        assert (plain.ids, plain.rounds) != (result.ids, result.rounds)


def test_the_seed_reaches_the_library_and_reproduces_the_text(runs, capsys):
    argv = sample(runs, "--prompt", "the ", "--max-new-tokens", "30", "--draft", str(runs / "draft"))
    texts = [run([*argv, "--seed", seed], capsys)[1] for seed in ("1", "1", "2")]
    assert texts[0] == texts[1] != texts[2]


def test_the_summary_counts_in_words_and_never_rounds_to_all_or_nothing():
    def line(n_ids, rounds):
        return speculative_summary(SpeculativeResult([7] * n_ids, rounds))

    assert line(0, []) == "speculative: 0 tokens in 0 passes of the model, no tokens drafted"
    assert line(1, [(0, 0)]) == (
        "speculative: 1 token in 1 pass of the model (1.00 tokens per pass), no tokens drafted"
    )
    assert line(2, [(3, 0), (0, 0)]) == (
        "speculative: 2 tokens in 2 passes of the model (1.00 tokens per pass), 0% of 3 drafted tokens accepted"
    )
    assert line(5, [(4, 4)]).endswith("(5.00 tokens per pass), 100% of 4 drafted tokens accepted")
    assert line(200, [(200, 199)]).endswith(", 99% of 200 drafted tokens accepted")  # 99.5% is not all
    assert line(2, [(300, 1)]).endswith(", 1% of 300 drafted tokens accepted")  # 0.3% is not none


def test_a_bad_draft_tokens_value_is_refused_as_such_before_any_draft_is_loaded(runs):
    model, tok = load_model(runs / "target")
    for draft in (None, str(runs / "missing")):
        with pytest.raises(
            GenerationError, match=r"^--draft-tokens -1 is not allowed: it must be an integer >= 0$"
        ):
            sample_cli(model, tok, out=io.StringIO(), draft=draft, draft_tokens=-1, max_new_tokens=3)


def test_help_names_the_draft_flags_and_the_library_default(capsys):
    with pytest.raises(SystemExit):
        main(["sample", "--help"])
    out = " ".join(capsys.readouterr().out.split())
    default = inspect.signature(speculative_generate).parameters["num_draft_tokens"].default
    assert "--draft CHECKPOINT" in out and "--draft-tokens K" in out and f"(default {default};" in out


# ----------------------------------------------------------------------------- refusals and bad input
@pytest.mark.parametrize(
    "flags, needles",
    [
        (["--draft-tokens", "3"], ["--draft-tokens 3 is not allowed without --draft"]),
        (["--draft", "DRAFT", "--beam", "2"], ["--beam 2 is not allowed with --draft"]),
        (["--draft", "DRAFT", "--penalty-alpha", "0.6"], ["--penalty-alpha 0.6 is not allowed with --draft"]),
        (["--draft", "DRAFT", "--num-samples", "2"], ["--num-samples 2 is not allowed with --draft"]),
        (
            ["--draft", "DRAFT", "--temperature", "0", "--top-k", "3"],
            ["--top-k 3", "--temperature 0 (greedy)"],
        ),
        (
            ["--draft", "DRAFT", "--draft-tokens", "-1"],
            ["argument --draft-tokens: -1 is not allowed: it must be >= 0"],
        ),
        (["--draft", "DRAFT", "--draft-tokens", "x"], ["argument --draft-tokens: 'x' is not a valid int"]),
        (["--draft", ""], ["argument --draft: '' is not allowed"]),
        (["--draft", "RUNS/missing"], ["--draft: no checkpoint at", "missing"]),
        (["--draft", "RUNS/corrupt"], ["--draft: ", "corrupt", "truncated or corrupted"]),
        (["--draft", "RUNS/no_tokenizer"], ["--draft ", "no_tokenizer: this checkpoint holds no tokenizer"]),
        (
            ["--draft", "RUNS/other_vocab"],
            ["--draft ", "other_vocab: the draft's vocabulary has 18 ids and the model's 15"],
        ),
        (
            ["--draft", "RUNS/other_tokenizer"],
            [
                "--draft ",
                "other_tokenizer was trained with another tokenizer than --checkpoint",
                "both a char tokenizer of 15 tokens, but not the same tokens",
            ],
        ),  # fmt: skip
    ],
)
def test_refused_combinations_and_bad_drafts_exit_2_naming_the_flag(runs, capsys, flags, needles):
    flags = [str(runs / "draft") if f == "DRAFT" else f.replace("RUNS", str(runs)) for f in flags]
    code, out, err = run(sample(runs, "--prompt", "the ", "--max-new-tokens", "5", *flags), capsys)
    assert code == 2 and out == ""  # nothing printed, not even the prompt
    assert len(err.strip().splitlines()) == 1, err  # one line: no traceback
    for needle in needles:
        assert needle in err, err


def test_the_draft_is_loaded_by_the_checkpoint_loader_onto_the_model_device(runs, capsys, monkeypatch):
    """The draft goes through load_model, as --checkpoint does (safetensors only, verified)."""
    import arlm_lib.checkpoint as checkpoint

    loaded = []

    def spy(path, *args, **kwargs):
        loaded.append((str(path), str(kwargs.get("device"))))
        return load_model(path, *args, **kwargs)

    monkeypatch.setattr(checkpoint, "load_model", spy)
    code, _, _ = run(sample(runs, "--max-new-tokens", "3", "--draft", str(runs / "draft")), capsys)
    assert code == 0 and loaded == [(str(runs / "target"), "cpu"), (str(runs / "draft"), "cpu")]
