"""The command line end to end: train a few steps, then sample and evaluate from the checkpoint."""

import os
import shutil
import subprocess
import sys
import warnings

import pytest
import torch
from conftest import run_cli
from torch.nn import functional as F

from arlm_lib.checkpoint import load_checkpoint, load_model
from arlm_lib.cli import main
from arlm_lib.generate import beam_search, contrastive_search, generate_text

TINY = ["--n-layer", "1", "--n-head", "2", "--n-embd", "32", "--block-size", "32", "--batch-size", "8"]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    path = tmp_path_factory.mktemp("corpus") / "text.txt"
    path.write_text("the cat sat on the mat and the dog sat on the log.\n" * 200, encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def trained_run(corpus, tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "run"
    code = main(
        [
            "train",
            "--data",
            str(corpus),
            "--out",
            str(out),
            "--max-iters",
            "30",
            "--eval-interval",
            "10",
            "--lr",
            "3e-3",
            "--no-progress",
            *TINY,
        ]
    )
    assert code == 0
    return out


def test_train_writes_a_checkpoint_and_reports_falling_loss(trained_run, capsys):
    assert (trained_run / "checkpoint.safetensors").is_file()
    assert not (trained_run / "train.lock").exists()  # released at the end
    saved = load_checkpoint(trained_run)
    assert saved.trainer_state["step"] == 30
    assert (saved.model_config.n_layer, saved.model_config.n_embd, saved.model_config.block_size) == (
        1,
        32,
        32,
    )
    assert saved.train_config["lr"] == 3e-3 and saved.train_config["max_iters"] == 30
    assert saved.tokenizer is not None and saved.optimizer_state is not None
    history = saved.trainer_state["history"]
    evaluated = [(s, v) for s, v in zip(history["step"], history["val_loss"]) if v is not None]
    assert [s for s, _ in evaluated] == [10, 20, 30]
    assert evaluated[-1][1] < evaluated[0][1]  # the loss fell


def test_train_prints_progress_lines(corpus, tmp_path, capsys):
    out = tmp_path / "r"
    assert (
        main(
            [
                "train",
                "--data",
                str(corpus),
                "--out",
                str(out),
                "--max-iters",
                "20",
                "--eval-interval",
                "10",
                "--lr",
                "3e-3",
                "--no-progress",
                *TINY,
            ]
        )
        == 0
    )
    text = capsys.readouterr().out
    # The model line counts in words that agree with the numbers: it said "1 layers" for TINY's one layer.
    assert text.startswith("model: ") and "M parameters | 1 layer, 2 heads, 32 wide, context 32 |" in text
    assert "step     10" in text and "step     20" in text
    first, last = text.split("train loss ")[1].split(",")[0].split(" -> ")
    assert float(last) < float(first)
    last_val = load_checkpoint(out).trainer_state["history"]["val_loss"][-1]
    assert (
        f", val loss {last_val:.4f}. checkpoint: {out}" in text
    )  # the summary ends with the last evaluation


def test_eval_prints_loss_perplexity_and_bits_per_char(trained_run, corpus, capsys):
    assert main(["eval", "--checkpoint", str(trained_run), "--data", str(corpus), "--device", "cpu"]) == 0
    line = capsys.readouterr().out
    loss = float(line.split("loss ")[1].split()[0])
    ppl = float(line.split("perplexity ")[1].split()[0])
    bpc = float(line.split("| ")[2].split()[0])
    assert ppl == pytest.approx(2.718281828**loss, rel=1e-3)
    assert bpc == pytest.approx(loss / 0.693147, rel=1e-3)  # char tokenizer: one token per character
    # The loss itself, recomputed by hand: the checkpoint's model on the last 10% of the corpus, in
    # consecutive windows of its 32-token context, every token after the first predicted once.
    model, tokenizer = load_model(trained_run)
    ids = tokenizer.encode(corpus.read_text(encoding="utf-8"))
    val = torch.tensor(ids[len(ids) - round(0.1 * len(ids)) :])
    total, count = 0.0, 0
    with torch.no_grad():
        for start in range(0, len(val) - 1, 32):
            window = val[start : start + 33]
            logits = model(window[None, :-1]).logits[0]
            total += F.cross_entropy(logits, window[1:], reduction="sum").item()
            count += len(window) - 1
    assert loss == pytest.approx(total / count, abs=1e-4)
    assert f"{count:,} tokens" in line


def test_sample_continues_the_prompt(trained_run, capsys):
    assert (
        main(
            [
                "sample",
                "--checkpoint",
                str(trained_run),
                "--prompt",
                "the cat",
                "--max-new-tokens",
                "20",
                "--seed",
                "1",
                "--device",
                "cpu",
            ]
        )
        == 0
    )
    text = capsys.readouterr().out
    model, tokenizer = load_model(trained_run)
    continuation = generate_text(model, tokenizer, "the cat", max_new_tokens=20, seed=1)
    assert len(continuation) == 20  # a char tokenizer and no stop: 20 new characters
    assert text == "the cat" + continuation + "\n"


def test_resume_continues_from_the_saved_step(trained_run, corpus, capsys, tmp_path):
    """A copy of the shared run (other tests read it at step 30) resumed to step 40 keeps its first 30
    steps and adds ten."""
    run = tmp_path / "run"
    shutil.copytree(trained_run, run)
    before = load_checkpoint(run).trainer_state
    argv = [
        "train",
        "--data",
        str(corpus),
        "--out",
        str(run),
        "--resume",
        "--max-iters",
        "40",
        "--no-progress",
    ]
    assert main(argv) == 0
    assert "resuming" in capsys.readouterr().out
    after = load_checkpoint(run).trainer_state
    assert before["step"] == 30 and after["step"] == 40
    losses = after["history"]["train_loss"]
    assert len(losses) == 40 and losses[:30] == before["history"]["train_loss"]


@pytest.mark.parametrize("value", ["", "  "])
@pytest.mark.parametrize("command", [["sample"], ["eval", "--data", "synthetic"]])
def test_an_empty_checkpoint_flag_is_refused_naming_the_empty_value(command, value, capsys):
    # Path("") is the current directory: the old error named "checkpoint.safetensors", not what was typed.
    # A blank value (an unset shell variable in quotes, plus a space) is as empty.
    with pytest.raises(SystemExit) as info:
        main([command[0], "--checkpoint", value, *command[1:]])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert f"argument --checkpoint: {value!r} is not allowed" in err and "checkpoint.safetensors" not in err
    assert len(err.strip().splitlines()) == 1


def test_an_unknown_compile_mode_is_refused_naming_it_and_the_modes(tmp_path, capsys):
    with pytest.raises(SystemExit) as info:
        main(
            [
                "train",
                "--data",
                "synthetic",
                "--out",
                str(tmp_path / "run"),
                "--compile",
                "--compile-mode",
                "bogus",
            ]
        )
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert "argument --compile-mode: 'bogus' is not allowed" in err
    assert "max-autotune-no-cudagraphs" in err and "reduce-overhead" in err
    assert len(err.strip().splitlines()) == 1 and not (tmp_path / "run").exists()


def test_the_compile_mode_flag_reaches_torch_compile_and_the_checkpoint(corpus, tmp_path, monkeypatch):
    calls = []

    def recording_compile(model, **kwargs):  # compiles nothing: only the wiring is under test
        calls.append(kwargs)
        return model

    monkeypatch.setattr(torch, "compile", recording_compile)
    out = tmp_path / "run"
    argv = ["train", "--data", str(corpus), "--out", str(out), "--max-iters", "2", "--no-progress", *TINY]
    assert main([*argv, "--device", "cpu", "--compile", "--compile-mode", "max-autotune-no-cudagraphs"]) == 0
    assert calls == [{"mode": "max-autotune-no-cudagraphs"}]
    assert load_checkpoint(out).train_config["compile_mode"] == "max-autotune-no-cudagraphs"


def test_a_compile_mode_without_compile_is_refused(tmp_path, capsys):
    out = tmp_path / "run"
    code = main(["train", "--data", "synthetic", "--out", str(out), "--compile-mode", "max-autotune", *TINY])
    assert code == 2 and not out.exists()
    assert (
        "compile_mode='max-autotune' (--compile-mode) needs compile=True (--compile)"
        in capsys.readouterr().err
    )


@pytest.mark.parametrize("command", [["sample"], ["eval", "--data", "synthetic"]])
def test_a_checkpoint_without_tokenizer_is_one_line_error_not_a_traceback(command, tmp_path, capsys):
    import torch

    from arlm_lib.checkpoint import save_checkpoint
    from arlm_lib.model import GPT, GPTConfig

    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=30, block_size=16, n_layer=1, n_head=2, n_embd=16))
    save_checkpoint(tmp_path / "run", model)  # weights only, no tokenizer
    code = main([command[0], "--checkpoint", str(tmp_path / "run"), "--device", "cpu", *command[1:]])
    err = capsys.readouterr().err
    assert code == 2 and "holds no tokenizer" in err and str(tmp_path / "run") in err
    assert len(err.strip().splitlines()) == 1


def test_help_explains_every_flag():
    result = subprocess.run(
        [sys.executable, "-m", "arlm_lib", "train", "--help"], capture_output=True, text=True
    )
    assert result.returncode == 0
    for flag in [
        "--preset",
        "--n-layer",
        "--n-head",
        "--n-embd",
        "--block-size",
        "--batch-size",
        "--lr",
        "--max-iters",
        "--warmup-iters",
        "--grad-clip",
        "--dropout",
        "--tokenizer",
        "--seed",
        "--data",
        "--out",
        "--resume",
        "--device",
    ]:
        assert flag in result.stdout


@pytest.mark.parametrize(
    "argv, needle",
    [
        (["--lr", "0"], "--lr"),
        (["--lr", "-1"], "--lr"),
        (["--batch-size", "0"], "--batch-size"),
        (["--preset", "huge"], "--preset"),
        (["--device", "tpu"], "tpu"),
    ],
)
def test_bad_flags_exit_non_zero_with_one_line(corpus, tmp_path, argv, needle):
    out = tmp_path / "never"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "arlm_lib",
            "train",
            "--data",
            str(corpus),
            "--out",
            str(out),
            "--max-iters",
            "1",
            *argv,
        ],
        capture_output=True,
        text=True,
    )
    assert result.returncode != 0
    assert needle in result.stderr and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, f"not one line:\n{result.stderr}"
    assert not out.exists()  # nothing half-written


def test_resume_that_moves_the_learning_rate_says_so(corpus, tmp_path):
    """Continuing a finished run to more steps recomputes the cosine: a warning names the jump and the fix."""
    out = tmp_path / "run"
    base = [
        "train",
        "--data",
        str(corpus),
        "--out",
        str(out),
        "--no-progress",
        "--eval-interval",
        "10",
        *TINY,
    ]
    assert main([*base, "--max-iters", "20", "--warmup-iters", "5"]) == 0
    with pytest.warns(RuntimeWarning, match=r"step 20 .* from 0\.0001 to .*--lr-decay-iters 20"):
        assert main([*base, "--resume", "--max-iters", "30"]) == 0
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)  # keeping the old decay moves nothing: no warning
        assert main([*base, "--resume", "--max-iters", "40", "--lr-decay-iters", "20"]) == 0


def test_warnings_are_one_line_on_the_command_line(trained_run):
    result = subprocess.run(
        [sys.executable, "-m", "arlm_lib", "sample", "--checkpoint", str(trained_run), "--prompt", "the cat " * 10,
         "--max-new-tokens", "3"],
        capture_output=True, text=True,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert result.stderr.startswith("warning: the prompt has 80 tokens"), result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and ".py:" not in result.stderr


def test_missing_and_short_corpora_are_refused(tmp_path, capsys):
    short = tmp_path / "short.txt"
    short.write_text("too short\n", encoding="utf-8")
    for data in (tmp_path / "missing.txt", short):
        out = tmp_path / "out"
        assert main(["train", "--data", str(data), "--out", str(out), *TINY]) != 0
        assert not out.exists()
    err = capsys.readouterr().err
    assert "missing.txt" in err and "short" in err
    folder = tmp_path / "texts"
    folder.mkdir()
    assert main(["train", "--data", str(folder), "--out", str(tmp_path / "out"), *TINY]) == 2
    assert "is a directory: give a UTF-8 text file" in capsys.readouterr().err


def test_refuses_to_clobber_a_directory_that_is_not_a_run(corpus, tmp_path, capsys):
    precious = tmp_path / "precious"
    precious.mkdir()
    (precious / "notes.txt").write_text("keep me")
    assert main(["train", "--data", str(corpus), "--out", str(precious), "--max-iters", "1", *TINY]) != 0
    assert "refusing to clobber" in capsys.readouterr().err
    assert sorted(p.name for p in precious.iterdir()) == ["notes.txt"]


def test_eval_block_size_larger_than_context_is_refused(trained_run, corpus, capsys):
    assert (
        main(
            [
                "eval",
                "--checkpoint",
                str(trained_run),
                "--data",
                str(corpus),
                "--block-size",
                "64",
                "--device",
                "cpu",
            ]
        )
        != 0
    )
    assert "--block-size 64" in capsys.readouterr().err


def readme_commands() -> list[list[str]]:
    """Every ``python -m arlm_lib ...`` command in the README's shell blocks (torchrun ones included),
    continuation lines joined and comments dropped, as argv lists after ``arlm_lib``."""
    import re
    import shlex
    from pathlib import Path

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")
    commands = []
    for block in re.findall(r"```bash\n(.*?)```", readme, flags=re.S):
        for line in block.replace("\\\n", " ").splitlines():
            words = shlex.split(line, comments=True)
            if "arlm_lib" in words and "-m" in words:
                commands.append(words[words.index("arlm_lib") + 1 :])
    return commands


def test_every_readme_command_parses():
    """The README's commands use flags and values the CLI accepts (a renamed flag fails here)."""
    from arlm_lib.cli import build_parser

    commands = readme_commands()
    assert len(commands) >= 8, commands
    parser = build_parser()
    for argv in commands:
        try:
            parser.parse_args(argv)
        except SystemExit as exc:
            pytest.fail(f"README command does not parse (exit {exc.code}): {' '.join(argv)}")


@pytest.mark.parametrize("flag", ["--max-iter", "--max-iter=50", "--lr-dec"])
def test_abbreviated_flags_are_refused(trained_run, corpus, capsys, flag):
    """--resume overrides only the flags that were typed; it would miss an abbreviation of one."""
    argv = ["train", "--data", str(corpus), "--out", str(trained_run), "--resume", "--no-progress", flag]
    argv += [] if "=" in flag else ["50"]
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    assert f"unrecognized arguments: {flag}" in capsys.readouterr().err
    assert load_checkpoint(trained_run).trainer_state["step"] >= 30  # the run is untouched


def test_resume_below_the_saved_step_is_an_error(trained_run, corpus, capsys):
    steps = load_checkpoint(trained_run).trainer_state["step"]
    argv = ["train", "--data", str(corpus), "--out", str(trained_run), "--resume", "--max-iters", "3"]
    assert main([*argv, "--no-progress"]) == 2
    assert (
        f"max_iters=3 (--max-iters) is below the step the run was saved at ({steps})"
        in capsys.readouterr().err
    )
    assert load_checkpoint(trained_run).train_config["max_iters"] != 3  # nothing rewritten


def test_resume_with_the_checkpoint_file_as_out_names_its_directory(trained_run, corpus, capsys):
    """--out given the checkpoint file itself said '.../checkpoint.safetensors holds no
    checkpoint.safetensors', which reads as if the file were missing."""
    checkpoint_file = trained_run / "checkpoint.safetensors"
    before = checkpoint_file.read_bytes()
    argv = ["train", "--data", str(corpus), "--out", str(checkpoint_file), "--resume", "--no-progress"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err == (
        f"error: --out {checkpoint_file} is a file: --out takes the run directory that holds "
        f"checkpoint.safetensors ({trained_run})\n"
    )
    assert checkpoint_file.read_bytes() == before


def test_resume_refuses_to_change_the_preset_or_the_tokenizer(trained_run, corpus, capsys):
    argv = ["train", "--data", str(corpus), "--out", str(trained_run), "--resume", "--max-iters", "60"]
    assert main([*argv, "--preset", "small", "--tokenizer", "bpe", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "--preset, --tokenizer cannot change when resuming" in err
    # Both values: what the flag gives, and what the saved run has.
    assert "--preset small gives block_size=256, n_layer=6" in err
    assert "the saved model has block_size=32, n_layer=1" in err
    assert "--tokenizer bpe (the saved run's is char)" in err
    assert load_checkpoint(trained_run).train_config["max_iters"] != 60  # nothing trained or rewritten


def test_resume_accepts_the_preset_and_tokenizer_the_run_began_with(corpus, tmp_path, capsys):
    """Rerunning the command that started a run, plus --resume, is allowed: nothing changes."""
    out = tmp_path / "run"
    # 100000 is far more than this corpus has pairs to merge: the BPE stops short, at the saved size.
    start = ["train", "--data", str(corpus), "--out", str(out), "--no-progress", "--preset", "tiny", *TINY]
    start += ["--tokenizer", "bpe", "--bpe-vocab-size", "100000", "--eval-interval", "1", "--eval-iters", "1"]
    assert main([*start, "--max-iters", "2"]) == 0
    size = load_model(out)[1].vocab_size
    assert main([*start, "--max-iters", "3", "--resume"]) == 0
    assert load_checkpoint(out).trainer_state["step"] == 3
    assert main([*start[:-4], "--bpe-vocab-size", str(size), "--max-iters", "4", "--resume"]) == 0
    capsys.readouterr()
    assert main([*start[:-4], "--bpe-vocab-size", str(size - 1), "--max-iters", "5", "--resume"]) == 2
    err = capsys.readouterr().err
    assert f"--bpe-vocab-size {size - 1} (the saved run's BPE has {size} tokens)" in err
    assert load_checkpoint(out).trainer_state["step"] == 4


def test_a_rope_run_trains_samples_resumes_and_refuses_to_become_a_learned_one(corpus, tmp_path, capsys):
    out = tmp_path / "rope"
    start = ["train", "--data", str(corpus), "--out", str(out), "--no-progress", *TINY, "--lr", "3e-3"]
    start += ["--eval-interval", "10", "--position-encoding", "rope"]
    assert main([*start, "--max-iters", "20"]) == 0
    saved = load_checkpoint(out)
    assert saved.model_config.position_encoding == "rope"
    assert not any("wpe" in name for name in saved.model_state)
    evaluated = [v for v in saved.trainer_state["history"]["val_loss"] if v is not None]
    assert evaluated[-1] < evaluated[0]  # it learns
    capsys.readouterr()
    code, text, err = run_cli(
        ["sample", "--checkpoint", str(out), "--prompt", "the c", "--max-new-tokens", "8"], capsys
    )
    assert code == 0 and text.startswith("the c") and len(text) > len("the c\n"), (text, err)
    code, _, err = run_cli(
        [*start[:-2], "--position-encoding", "learned", "--max-iters", "21", "--resume"], capsys
    )
    assert code == 2 and "--position-encoding learned (checkpoint has rope)" in err, err
    assert main([*start, "--max-iters", "21", "--resume"]) == 0  # the run's own encoding, repeated: fine
    assert load_checkpoint(out).trainer_state["step"] == 21
    code, _, err = run_cli([*start[:-2], "--position-encoding", "alibi", "--max-iters", "1"], capsys)
    # (argparse quotes the choices or not, by Python version)
    assert code == 2 and "--position-encoding: invalid choice: 'alibi'" in err and "rope" in err, err


def test_resume_refuses_another_seed_and_accepts_the_runs_own(trained_run, corpus, tmp_path, capsys):
    """A resumed run continues its saved random state: another --seed would change nothing but the
    evaluation batches, so it is refused, naming both seeds; the run's own (1337, the default) is fine."""
    run = tmp_path / "run"
    shutil.copytree(trained_run, run)
    argv = ["train", "--data", str(corpus), "--out", str(run), "--resume", "--max-iters", "31"]
    argv.append("--no-progress")
    code, out, err = run_cli([*argv, "--seed", "7"], capsys)
    assert code == 2 and out == "" and len(err.strip().splitlines()) == 1, err
    assert f"--seed 7 cannot change when resuming {run} (the run's seed is 1337)" in err
    assert load_checkpoint(run).trainer_state["step"] == 30  # nothing trained or rewritten
    assert main([*argv, "--seed", "1337"]) == 0
    assert load_checkpoint(run).trainer_state["step"] == 31


def test_resuming_a_finished_run_says_how_to_continue(corpus, tmp_path, capsys):
    out = tmp_path / "run"
    base = ["train", "--data", str(corpus), "--out", str(out), "--no-progress", *TINY]
    assert main([*base, "--max-iters", "2", "--eval-interval", "1", "--eval-iters", "1"]) == 0
    capsys.readouterr()
    assert main(["train", "--data", str(corpus), "--out", str(out), "--resume"]) == 0
    assert (
        "has already finished its 2 steps: nothing to do; give a larger --max-iters"
        in capsys.readouterr().out
    )


def test_optimizer_and_checkpoint_flags_reach_the_run_and_progress_can_come_back(corpus, tmp_path):
    out = tmp_path / "run"
    flags = ["--beta1", "0.8", "--beta2", "0.99", "--checkpoint-interval", "3", "--no-bias", "--no-progress"]
    argv = ["train", "--data", str(corpus), "--out", str(out), "--max-iters", "4", "--eval-iters", "1", *TINY]
    assert main([*argv, *flags]) == 0
    saved = load_checkpoint(out)
    config = saved.train_config
    assert (config["beta1"], config["beta2"], config["checkpoint_interval"], config["progress"]) == (
        0.8,
        0.99,
        3,
        False,
    )
    assert saved.model_config.bias is False and not any(k.endswith(".bias") for k in saved.model_state)
    resume = ["train", "--data", str(corpus), "--out", str(out), "--resume", "--max-iters", "5", "--progress"]
    assert main(resume) == 0
    assert load_checkpoint(out).train_config["progress"] is True


def test_data_the_model_cannot_encode_is_named_with_the_flag(trained_run, tmp_path, capsys):
    odd = tmp_path / "odd.txt"
    odd.write_text("the cat sat on the mat. Ω €\n" * 50, encoding="utf-8")
    assert main(["eval", "--checkpoint", str(trained_run), "--data", str(odd)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"error: --data {odd} has 2 character(s) the model's tokenizer never saw")
    assert "'Ω', '€'" in err and "--tokenizer bpe" in err and "unknown=" not in err


def test_data_with_many_unknown_characters_names_the_first_ten(trained_run, tmp_path, capsys):
    """One line, however odd the file: the count is exact, the list stops at ten."""
    odd = tmp_path / "odd.txt"
    odd.write_text("the cat ABCDEFGHIJKL sat.\n" * 50, encoding="utf-8")
    assert main(["eval", "--checkpoint", str(trained_run), "--data", str(odd)]) == 2
    err = capsys.readouterr().err
    first_ten = ", ".join(repr(c) for c in "ABCDEFGHIJ")
    assert f"has 12 character(s) the model's tokenizer never saw in training: {first_ten} ...; " in err
    assert "'K'" not in err and len(err.strip().splitlines()) == 1


@pytest.mark.parametrize("split", ["val", "train", "all"])
def test_eval_split_scores_that_part_of_the_data(trained_run, corpus, capsys, split):
    """val: the last 10% (held out in training), train: the rest, all: both; every token but the first
    of the part is predicted once."""
    _, tokenizer = load_model(trained_run)
    n = len(tokenizer.encode(corpus.read_text(encoding="utf-8")))
    n_val = round(0.1 * n)
    scored = {"val": n_val, "train": n - n_val, "all": n}[split] - 1
    argv = ["eval", "--checkpoint", str(trained_run), "--data", str(corpus), "--device", "cpu"]
    assert main([*argv, "--split", split]) == 0
    line = capsys.readouterr().out
    assert line.startswith(f"{split} loss ") and f"| {scored:,} tokens, " in line


@pytest.mark.parametrize(
    "text, split, needle",
    [
        ("th", "val", "--split val has 0 token(s), and scoring needs at least 2 (one to predict and one "
                      "before it); use a longer text, or --split all to score the whole text"),
        ("t", "all", "--split all has 1 token(s), and scoring needs at least 2 (one to predict and one "
                     "before it); use a longer text\n"),
    ],
)  # fmt: skip
def test_eval_of_a_split_too_short_to_score_names_the_data_and_split(
    trained_run, tmp_path, capsys, text, split, needle
):
    """It said "(or, in the CLI, --split all)", also to a user who had given --split all."""
    data = tmp_path / "short.txt"
    data.write_text(text, encoding="utf-8")
    code, out, err = run_cli(
        ["eval", "--checkpoint", str(trained_run), "--data", str(data), "--split", split], capsys
    )
    assert code == 2 and out == "" and len(err.strip().splitlines()) == 1, err
    assert f"error: --data {data}: " in err and needle in err, err


def test_corpus_info_describes_the_named_corpus(capsys):
    from arlm_lib.corpus import corpus_names, format_corpus_info

    assert main(["corpus", "info", "prose"]) == 0
    assert capsys.readouterr().out == format_corpus_info("prose") + "\n"
    assert main(["corpus", "list"]) == 0
    listing = capsys.readouterr().out
    assert all(name in listing for name in corpus_names())
    assert main(["corpus", "info", "nope"]) == 2
    err = capsys.readouterr().err
    assert "'nope'" in err and "synthetic-copy" in err and len(err.strip().splitlines()) == 1


@pytest.mark.parametrize(
    "data, out, needle",
    [
        ("", "run", "the corpus name or path '' is empty"),
        ("/dev/null", "run", "'/dev/null' is not a regular file"),
        (None, "", "--out is empty"),
    ],
)
def test_empty_paths_and_devices_are_named_for_what_they_are(corpus, tmp_path, capsys, data, out, needle):
    data = str(corpus) if data is None else data
    out = str(tmp_path / out) if out else out
    assert main(["train", "--data", data, "--out", out, "--max-iters", "1"]) == 2
    assert needle in capsys.readouterr().err


def test_sample_interrupted_prints_what_it_generated(trained_run, capsys, monkeypatch):
    """Ctrl-C during a long sample keeps the text so far, on its own line before "interrupted"."""
    from arlm_lib.generation import cli as generation_cli

    original = generation_cli.stream_text

    def interrupted(*args, **kwargs):
        for i, piece in enumerate(original(*args, **kwargs)):
            if i == 5:
                raise KeyboardInterrupt
            yield piece

    monkeypatch.setattr(generation_cli, "stream_text", interrupted)
    argv = [
        "sample",
        "--checkpoint",
        str(trained_run),
        "--prompt",
        "the",
        "--max-new-tokens",
        "100",
        "--seed",
        "1",
    ]
    assert main(argv) == 130
    captured = capsys.readouterr()
    monkeypatch.setattr(generation_cli, "stream_text", original)
    assert main(argv) == 0
    full = capsys.readouterr().out
    assert captured.out.endswith("\n") and len(captured.out) > len("the\n")
    assert full.startswith(captured.out[:-1])  # the same seeded text, cut where the interrupt came
    assert captured.err.strip() == "interrupted"


def test_zoo_command_gives_one_line_for_a_bad_scale(monkeypatch, capsys):
    from arlm_lib import zoo

    monkeypatch.setenv("ARLM_SCALE", "gpux")
    assert zoo.main(["list"]) == 2
    assert capsys.readouterr().err.strip() == "error: ARLM_SCALE='gpux' is not allowed: use 'cpu' or 'gpu'"


@pytest.mark.parametrize(
    "flag, value",
    [
        ("--top-p", "1"),
        ("--typical-p", "1"),
        ("--min-p", "0"),
        ("--epsilon-cutoff", "0"),
        ("--eta-cutoff", "0"),
    ],
)
def test_the_neutral_value_of_a_filter_means_off_and_is_accepted(trained_run, flag, value, capsys):
    """GenerationConfig documents these values as "off": the parser must take them (and sample the
    same text as without the flag)."""
    argv = ["sample", "--checkpoint", str(trained_run), "--max-new-tokens", "8", "--device", "cpu"]
    assert main(argv) == 0
    plain = capsys.readouterr().out
    assert main([*argv, flag, value]) == 0
    assert capsys.readouterr().out == plain


@pytest.mark.parametrize(
    "flag, value", [("--typical-p", 0.2), ("--epsilon-cutoff", 0.2), ("--eta-cutoff", 0.9), ("--min-p", 0.6)]
)
def test_each_truncation_flag_reaches_the_sampler(trained_run, flag, value, capsys):
    """The CLI's text is the library's text under the same filter, and not the unfiltered text."""
    argv = ["sample", "--checkpoint", str(trained_run), "--prompt", "the ", "--max-new-tokens", "40",
            "--seed", "2", "--device", "cpu", flag, str(value)]  # fmt: skip
    assert main(argv) == 0
    text = capsys.readouterr().out
    model, tokenizer = load_model(trained_run)
    field = flag[2:].replace("-", "_")
    filtered = generate_text(model, tokenizer, "the ", max_new_tokens=40, seed=2, **{field: value})
    assert text == "the " + filtered + "\n"
    assert filtered != generate_text(model, tokenizer, "the ", max_new_tokens=40, seed=2)


def test_penalty_alpha_prints_the_contrastive_search_continuation(trained_run, capsys):
    argv = ["sample", "--checkpoint", str(trained_run), "--prompt", "the ", "--max-new-tokens", "30",
            "--device", "cpu", "--penalty-alpha", "0.6", "--top-k", "3"]  # fmt: skip
    assert main(argv) == 0
    model, tokenizer = load_model(trained_run)
    ids = contrastive_search(model, tokenizer.encode("the "), 30, penalty_alpha=0.6, top_k=3)
    assert capsys.readouterr().out == "the " + tokenizer.decode(ids) + "\n"
    assert ids != contrastive_search(model, tokenizer.encode("the "), 30, penalty_alpha=0.0)


def test_penalty_alpha_streams_the_same_text_and_ctrl_c_keeps_what_was_chosen(
    trained_run, monkeypatch, capsys
):
    """--stream prints contrastive search's tokens as they are chosen (it printed when done), and Ctrl-C
    prints the text so far on its own line (it printed nothing), with or without --stream."""
    from arlm_lib.generation import cli as generation_cli

    argv = ["sample", "--checkpoint", str(trained_run), "--prompt", "the ", "--max-new-tokens", "30",
            "--device", "cpu", "--penalty-alpha", "0.6"]  # fmt: skip
    assert main(argv) == 0
    plain = capsys.readouterr().out
    writes: list[str] = []
    original_print = print
    monkeypatch.setattr(
        "builtins.print", lambda *a, **k: (writes.append(k.get("end", "\n")), original_print(*a, **k))
    )
    assert main([*argv, "--stream"]) == 0
    monkeypatch.undo()
    assert capsys.readouterr().out == plain and len(writes) > 10  # the same text, in many pieces
    original = generation_cli.contrastive_search

    def interrupted(*args, on_tokens, **kwargs):
        def stop_at_the_sixth(ids):
            on_tokens(ids)
            stop_at_the_sixth.calls += 1
            if stop_at_the_sixth.calls == 6:
                raise KeyboardInterrupt

        stop_at_the_sixth.calls = 0
        return original(*args, on_tokens=stop_at_the_sixth, **kwargs)

    monkeypatch.setattr(generation_cli, "contrastive_search", interrupted)
    for stream in ([], ["--stream"]):
        assert main([*argv, *stream]) == 130
        captured = capsys.readouterr()
        assert captured.out.endswith("\n") and len("the \n") < len(captured.out) < len(plain)
        assert plain.startswith(captured.out[:-1])  # the text chosen so far, then its own line end
        assert captured.err.strip() == "interrupted"


def test_beam_search_interrupted_prints_the_best_beams_so_far(trained_run, monkeypatch, capsys):
    """Ctrl-C during --beam printed only "interrupted": now the beams the search would have returned had
    it ended at the last step, in the same format, then "interrupted" (exit 130)."""
    from arlm_lib.generation import cli as generation_cli

    model, tokenizer = load_model(trained_run)
    prompt_ids = tokenizer.encode("the ")
    original = generation_cli.beam_search

    def interrupted_after(steps):
        def search(*args, on_step, **kwargs):
            def report(ranking):
                on_step(ranking)
                report.calls += 1
                if report.calls == steps:
                    raise KeyboardInterrupt

            report.calls = 0
            return original(*args, on_step=report, **kwargs)

        return search

    argv = ["sample", "--checkpoint", str(trained_run), "--prompt", "the ", "--max-new-tokens", "30",
            "--device", "cpu", "--beam", "3"]  # fmt: skip
    for shown in (1, 2):
        monkeypatch.setattr(generation_cli, "beam_search", interrupted_after(6))
        assert main([*argv, "--num-samples", str(shown)]) == 130
        captured = capsys.readouterr()
        best = beam_search(model, prompt_ids, 3, 6, tokenizer=tokenizer)[:shown]  # a search of 6 tokens
        lines = ["the " + tokenizer.decode(h.ids) + "\n" for h in best]
        if shown > 1:
            lines = [
                f"--- beam {i} (score {h.score:.4f}) ---\n{line}"
                for i, (h, line) in enumerate(zip(best, lines), 1)
            ]
        assert captured.out == "".join(lines) and captured.err.strip() == "interrupted"
        assert all(len(h.ids) == 6 for h in best)

    # Ctrl-C before the first step: the prompt alone, as sampling prints it.
    def interrupted_at_once(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(generation_cli, "beam_search", interrupted_at_once)
    assert main(argv) == 130
    assert capsys.readouterr().out == "the \n"


def test_resume_applies_typed_flags_named_unlike_their_config_field(corpus, tmp_path):
    """--grad-accum, --no-progress and --ddp-timeout set grad_accum_steps, progress and ddp_timeout_s: a
    resume must map the typed flag to its field, or it silently keeps the saved value."""
    out = tmp_path / "run"
    base = ["train", "--data", str(corpus), "--out", str(out), "--eval-interval", "2", "--eval-iters", "1",
            *TINY]  # fmt: skip
    assert main([*base, "--max-iters", "2", "--progress"]) == 0
    resume = ["--resume", "--max-iters", "4", "--grad-accum", "2", "--no-progress", "--ddp-timeout", "45"]
    assert main([*base, *resume]) == 0
    saved = load_checkpoint(out)
    assert saved.trainer_state["step"] == 4 and saved.train_config["grad_accum_steps"] == 2
    assert saved.train_config["progress"] is False and saved.train_config["ddp_timeout_s"] == 45


def test_eval_refuses_a_window_one_token_past_the_context(trained_run, corpus, capsys):
    # Optional: without the CLI check, evaluate_tokens still refuses 33 (exit 2, its own message), so this
    # test tells the two apart only by the message that names --block-size.
    argv = [
        "eval",
        "--checkpoint",
        str(trained_run),
        "--data",
        str(corpus),
        "--device",
        "cpu",
        "--block-size",
    ]
    assert main([*argv, "33"]) == 2
    assert "--block-size 33 is larger than the model's context (32 tokens)" in capsys.readouterr().err
    assert main([*argv, "32"]) == 0


@pytest.mark.parametrize(
    "error, line",
    [
        (PermissionError(13, "Permission denied", "/runs/x"), "error: Permission denied (/runs/x)"),
        # A full disk during a write names no file: no empty "()" after the reason.
        (OSError(28, "No space left on device"), "error: No space left on device"),
        (OSError("the lock file vanished"), "error: the lock file vanished"),  # no errno, no strerror
    ],
)
def test_an_os_error_is_one_line_and_exit_status_1(monkeypatch, capsys, error, line):
    from arlm_lib import cli

    def refused(args):
        raise error

    monkeypatch.setitem(cli.COMMANDS, "corpus", refused)
    assert main(["corpus", "list"]) == 1
    assert capsys.readouterr().err == line + "\n"


def _raising(error):
    """A stand-in command that fails with ``error``, for main()'s handling of it."""

    def command(args):
        raise error

    return command


@pytest.mark.parametrize(
    "error, shown",
    [
        (MemoryError(), "MemoryError"),  # Python's, with no message: named by its type
        (RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried to allocate 8 GB"),
         "DefaultCPUAllocator: can't allocate memory: you tried to allocate 8 GB"),
        (torch.OutOfMemoryError("Tried to allocate 20.00 GiB"), "Tried to allocate 20.00 GiB"),
        (RuntimeError("CUDA error: out of memory\nCompile with TORCH_USE_CUDA_DSA"), "CUDA error: out of memory"),
    ],
)  # fmt: skip
def test_out_of_memory_is_exit_status_4_in_one_line_with_what_to_lower(monkeypatch, capsys, error, shown):
    """4 is the documented status (main's docstring) a script can test for: not a traceback, not 2."""
    from arlm_lib import cli

    monkeypatch.setitem(cli.COMMANDS, "corpus", _raising(error))
    assert main(["corpus", "list"]) == 4
    err = capsys.readouterr().err
    assert err.startswith(f"error: out of memory ({shown}); lower --batch-size") and err.count("\n") == 1, err


def test_a_runtime_error_that_is_not_out_of_memory_keeps_its_traceback(monkeypatch, capsys):
    """A bug must not pass for bad input (exit 2) or a full memory (exit 4): its traceback is the report."""
    from arlm_lib import cli

    monkeypatch.setitem(
        cli.COMMANDS, "corpus", _raising(RuntimeError("mat1 and mat2 shapes cannot be multiplied"))
    )
    with pytest.raises(RuntimeError, match="shapes cannot be multiplied"):
        main(["corpus", "list"])
    assert capsys.readouterr().err == ""


def test_eval_max_tokens_scores_exactly_that_many_tokens(trained_run, corpus, capsys):
    argv = ["eval", "--checkpoint", str(trained_run), "--data", str(corpus), "--device", "cpu"]
    assert main([*argv, "--max-tokens", "50"]) == 0
    assert "| 50 tokens, " in capsys.readouterr().out
    assert main([*argv, "--max-tokens", "1"]) == 0
    assert "| 1 token, " in capsys.readouterr().out


def test_resume_honours_flags_written_with_an_equals_sign_and_keeps_the_bpe_size(corpus, tmp_path, capsys):
    out = tmp_path / "run"
    base = ["train", "--data", str(corpus), "--out", str(out), "--no-progress", *TINY]
    assert main([*base, "--max-iters", "2", "--eval-interval", "1", "--eval-iters", "1"]) == 0
    resume = ["train", "--data", str(corpus), "--out", str(out), "--resume", "--no-progress"]
    assert main([*resume, "--max-iters=3", "--bpe-vocab-size", "300"]) == 2
    assert "--bpe-vocab-size cannot change when resuming" in capsys.readouterr().err
    assert main([*resume, "--max-iters=3"]) == 0
    assert load_checkpoint(out).trainer_state["step"] == 3


def test_the_command_line_restores_the_warning_format_it_borrowed(capsys):
    """A notebook or a test that calls main() keeps its own warning format afterwards."""
    before = warnings.formatwarning
    assert main(["corpus", "list"]) == 0
    assert warnings.formatwarning is before


def test_a_closed_pipe_ends_quietly_with_status_0(monkeypatch, capsys):
    """``python -m arlm_lib sample ... | head`` closes the pipe early: that is not an error."""
    from arlm_lib import cli

    def reader_went_away(args):
        raise BrokenPipeError(32, "Broken pipe")

    monkeypatch.setitem(cli.COMMANDS, "corpus", reader_went_away)
    assert main(["corpus", "list"]) == 0
    assert capsys.readouterr().err == ""


def test_a_closed_pipe_does_not_end_training(corpus, tmp_path):
    """``train ... | head -2``: the reader leaves after two lines. That must not abandon the run (it did:
    the next progress line raised BrokenPipeError, training stopped, the new run's directory was
    deleted, and the exit status was 0); it trains on to its last step and saves."""
    out = tmp_path / "run"
    argv = ["train", "--data", str(corpus), "--out", str(out), "--max-iters", "20", "--eval-interval", "1"]
    argv += ["--eval-iters", "1", "--checkpoint-interval", "0", "--no-progress", *TINY]
    child = subprocess.Popen(
        [sys.executable, "-m", "arlm_lib", *argv], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    assert child.stdout.readline().startswith("model:")
    child.stdout.close()  # as head does once it has its lines
    err = child.stderr.read()
    assert child.wait(timeout=120) == 0, err
    assert "Traceback" not in err
    assert "warning: stdout was closed (its reader went away): training goes on" in err
    assert load_checkpoint(out).trainer_state["step"] == 20


@pytest.mark.parametrize(
    "argv, command, hint",
    [
        (["train", "--data", "synthetic", "--out", "RUN", "--max-iter", "5"], "train", "--max-iter: did you mean --max-iters?"),
        (["sample", "--checkpoint", "RUN", "--temprature=0.5"], "sample", "--temprature: did you mean --temperature?"),
        (["eval", "--checkpoint", "RUN", "--data", "synthetic", "--zzz"], "eval", None),
    ],
)  # fmt: skip
def test_an_unknown_flag_points_at_the_command_help_and_the_closest_flag(
    tmp_path, capsys, argv, command, hint
):
    argv = [str(tmp_path / "run") if a == "RUN" else a for a in argv]
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    err = capsys.readouterr().err
    assert exit_info.value.code == 2
    assert f"(see python -m arlm_lib {command} --help)" in err  # that command's flags, not the top level's
    assert (hint in err) if hint else ("did you mean" not in err)
    assert not (tmp_path / "run").exists()  # refused before anything was created


@pytest.mark.parametrize(
    "argv, hint",
    [
        (["sample", "--checkpoint", "RUN", "--lr", "3"], "--lr is a flag of train, not of sample"),
        (["eval", "--checkpoint", "RUN", "--data", "synthetic", "--top-k=3"], "--top-k is a flag of sample, not of eval"),
        (["import-gpt2", "--weights", "w", "--out", "RUN", "--device", "cpu"],
         "--device is a flag of train, sample and eval, not of import-gpt2"),
    ],
)  # fmt: skip
def test_a_flag_of_another_command_is_named_as_such_not_guessed_at(tmp_path, capsys, argv, hint):
    """``sample --lr 3`` was answered "did you mean --help?": the flag is right, the command is not."""
    argv = [str(tmp_path / "run") if a == "RUN" else a for a in argv]
    code, out, err = run_cli(argv, capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert hint in err and "did you mean" not in err, err
    assert not (tmp_path / "run").exists()


def test_every_unknown_flag_is_named_each_with_its_closest_flag(tmp_path, capsys):
    argv = ["train", "--data", "synthetic", "--out", str(tmp_path / "run"), "--max-iter", "5", "--lr-decay=3",
            "--zzz"]  # fmt: skip
    code, _, err = run_cli(argv, capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert "unrecognized arguments: --max-iter 5 --lr-decay=3 --zzz" in err
    assert "(--max-iter: did you mean --max-iters?; --lr-decay: did you mean --lr-decay-iters?)" in err
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("command", ["train", "sample", "eval"])
def test_help_shows_real_defaults_and_never_none(capsys, command):
    """A default of None means "the preset's value" or "off", which the help line says in words."""
    with pytest.raises(SystemExit):
        main([command, "--help"])
    out = capsys.readouterr().out
    assert "(default: None)" not in out
    if command == "train":
        assert "(default: 1000)" in out and "(default lr/10)" in out  # real defaults, and the help's own


def test_ctrl_c_while_the_parser_loads_exits_130_in_one_line(capsys, monkeypatch):
    """The parser imports torch (a second or more): a Ctrl-C then is "interrupted", not a traceback."""
    import arlm_lib.cli as cli

    def interrupted_import():
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, "build_parser", interrupted_import)
    assert main(["corpus", "list"]) == 130
    assert capsys.readouterr().err.strip() == "interrupted"


def test_peak_flops_shows_mfu_in_the_progress_lines_and_the_bar(corpus, tmp_path, capsys):
    """--peak-flops 'adds MFU' (its help): the per-evaluation line and the progress bar show it."""
    base = ["train", "--data", str(corpus), "--max-iters", "2", "--eval-interval", "2", "--eval-iters", "1"]
    flops = ["--peak-flops", "1e12", *TINY]
    assert main([*base, "--out", str(tmp_path / "lines"), "--no-progress", *flops]) == 0
    line = next(t for t in capsys.readouterr().out.splitlines() if t.startswith("step"))
    assert line.split(" | ")[-1].startswith("MFU ") and line.endswith("%"), line
    assert main([*base, "--out", str(tmp_path / "bar"), "--progress", *flops]) == 0
    assert "mfu=" in capsys.readouterr().err
    assert main([*base, "--out", str(tmp_path / "none"), "--no-progress", *TINY]) == 0
    assert "MFU" not in capsys.readouterr().out  # without --peak-flops, no column


@pytest.mark.parametrize(
    "command, argv, hint",
    [
        ("sample", ["sample", "--checkpoint", "run"], "lower --beam, --num-samples"),
        ("eval", ["eval", "--checkpoint", "run", "--data", "x.txt"], "lower --block-size, or evaluate"),
        ("train", ["train", "--data", "x.txt", "--out", "run"], "lower --batch-size, --block-size"),
        ("import-gpt2", ["import-gpt2", "--weights", "w", "--out", "run"], "import a smaller model"),
    ],
)
def test_out_of_memory_names_flags_the_failing_command_has(monkeypatch, capsys, command, argv, hint):
    """sample has no --batch-size: its out-of-memory hint names its own flags (--beam 100000 got here)."""
    from arlm_lib import cli

    monkeypatch.setitem(cli.COMMANDS, command, _raising(RuntimeError("can't allocate memory: 26 GB")))
    assert main(argv) == 4
    err = capsys.readouterr().err
    assert err.startswith("error: out of memory (can't allocate memory: 26 GB); " + hint), err


def test_a_run_shorter_than_its_warmup_says_it_never_reaches_the_learning_rate(corpus, tmp_path, capsys):
    """With the default 100-step warmup a 3-step try-out ends at 3% of --lr and seems to learn nothing:
    allowed, but said once; nothing is said when the warmup ends in time or there is none. (The line a
    user sees on stderr, "warning: ...", is checked in a subprocess by test_reliability.py.)"""
    base = ["train", "--data", str(corpus), "--max-iters", "3", "--no-progress", "--eval-iters", "1", *TINY]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert main([*base, "--out", str(tmp_path / "long-warmup"), "--lr", "1e-3"]) == 0
    (said,) = [str(w.message) for w in caught if "warmup" in str(w.message)]
    assert "warmup_iters=100 (--warmup-iters) is not below max_iters=3 (--max-iters)" in said
    assert "(2.97e-05, 3% of lr=0.001)" in said  # lr_at(2) = 1e-3 * 3 / 101
    for flags in (["--warmup-iters", "2"], ["--schedule", "constant"]):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            assert main([*base, "--out", str(tmp_path / flags[1]), *flags]) == 0
        assert not [w for w in caught if "warmup" in str(w.message)], flags
        assert "warmup" not in capsys.readouterr().err, flags


def test_bpe_vocab_size_without_the_bpe_tokenizer_is_refused_before_anything_is_written(
    corpus, tmp_path, capsys
):
    """It was ignored: a char model was trained and the flag said nothing."""
    out = tmp_path / "run"
    for spelling in (["--bpe-vocab-size", "300"], ["--bpe-vocab-size=300"]):
        code = main(["train", "--data", str(corpus), "--out", str(out), "--max-iters", "1", *spelling, *TINY])
        err = capsys.readouterr().err
        assert code == 2 and err.startswith("error: --bpe-vocab-size 300 applies to --tokenizer bpe only"), (
            err
        )
        assert "'char'" in err and not out.exists()


def test_version_prints_the_package_version(capsys):
    import arlm_lib

    with pytest.raises(SystemExit) as exit_info:
        main(["--version"])
    assert exit_info.value.code == 0
    assert capsys.readouterr().out.strip() == f"arlm_lib {arlm_lib.__version__}"


def test_a_decay_shorter_than_the_warmup_is_refused_in_the_flags_names(corpus, tmp_path, capsys):
    """The message spoke only Python (lr_decay_iters, None) to a command-line user; a resume whose merged
    settings break the rule was refused that way even after the new-run check learnt the flags' names."""
    out = tmp_path / "run"
    code = main(
        ["train", "--data", str(corpus), "--out", str(out), "--max-iters", "3", "--lr-decay-iters", "3"]
    )
    err = capsys.readouterr().err
    assert code == 2 and not out.exists()
    assert err.startswith("error: lr_decay_iters=3 (--lr-decay-iters) is not allowed"), err
    assert "(--warmup-iters, here 100)" in err and "leave the flag out" in err

    base = ["train", "--data", str(corpus), "--out", str(out), "--no-progress", "--eval-interval", "4", *TINY]
    assert main([*base, "--max-iters", "4", "--warmup-iters", "3"]) == 0
    capsys.readouterr()
    saved = {path.name: path.read_bytes() for path in out.iterdir()}
    code = main([*base, "--resume", "--max-iters", "8", "--lr-decay-iters", "2"])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("error: lr_decay_iters=2 (--lr-decay-iters) is not allowed"), err
    assert "(--warmup-iters, here 3)" in err  # the saved warmup, not the flag's default of 100
    assert {path.name: path.read_bytes() for path in out.iterdir()} == saved  # the run is as it was


@pytest.mark.parametrize("command", ["train", "sample", "eval", "import-gpt2", "corpus"])
def test_each_command_help_describes_it_in_lines_a_terminal_holds(command, capsys, monkeypatch):
    """80 columns. sample and eval had no description; import-gpt2's was one 200-character line (they are
    kept as written, not wrapped); a '%%' meant for a help string showed up doubled in a description."""
    monkeypatch.setenv("COLUMNS", "80")
    with pytest.raises(SystemExit) as exit_info:
        main([command, "--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    usage, description = text.split("\n\n")[:2]
    assert usage.startswith("usage:") and not description.startswith(("options:", "positional"))
    assert len(description.split()) >= 5, description
    assert max(len(line) for line in text.splitlines()) <= 80
    assert "%%" not in text


def test_resuming_on_other_data_is_said_and_on_the_same_data_is_not(corpus, tmp_path):
    """A resume read whatever --data was given, silently: a mistyped path continued the run on another
    text, and its validation curve jumped for no visible reason. Allowed (fine-tuning), but said."""
    out = tmp_path / "run"
    # A constant rate: a longer --max-iters on resume moves no schedule (that has its own warning).
    base = [
        "train",
        "--out",
        str(out),
        "--no-progress",
        "--eval-interval",
        "5",
        "--schedule",
        "constant",
        *TINY,
    ]
    assert main([*base, "--data", str(corpus), "--max-iters", "5"]) == 0
    swapped = tmp_path / "swapped.txt"  # the same characters and size, other tokens
    swapped.write_text("the dog sat on the log and the cat sat on the mat.\n" * 200, encoding="utf-8")
    longer = tmp_path / "longer.txt"
    longer.write_text(corpus.read_text(encoding="utf-8") * 2, encoding="utf-8")
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)  # the same data: nothing to say
        assert main([*base, "--data", str(corpus), "--resume", "--max-iters", "10"]) == 0
    same_sizes = r"resuming on other data .* had (\d+) / (\d+) tokens, this one has \1 / \2 \(the same sizes"
    with pytest.warns(RuntimeWarning, match=same_sizes):
        assert main([*base, "--data", str(swapped), "--resume", "--max-iters", "15"]) == 0
    n = len(corpus.read_text(encoding="utf-8"))
    sizes = rf"had {n - n // 10} / {n // 10} tokens, this one has {2 * n - 2 * n // 10} / {2 * n // 10}; "
    with pytest.warns(RuntimeWarning, match=sizes):
        assert main([*base, "--data", str(longer), "--resume", "--max-iters", "20"]) == 0


def test_a_file_named_like_a_built_in_corpus_is_not_picked_silently(tmp_path, monkeypatch, capsys):
    """--data prose is the built-in corpus even with a file ./prose; a warning names both, and how to
    ask for the file."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "prose").write_text("ab\n" * 2000, encoding="utf-8")
    base = ["train", "--out", "run", "--no-progress", "--device", "cpu", *TINY]
    base += ["--max-iters", "1", "--eval-interval", "1", "--eval-iters", "1", "--warmup-iters", "0"]
    assert main([*base, "--data", "prose"]) == 0
    err = capsys.readouterr().err
    assert "warning: --data prose is the built-in corpus 'prose', not the file 'prose'" in err
    assert "write --data ./prose" in err
    assert load_model(tmp_path / "run")[1].vocab_size > 3  # the built-in text, not the file's "ab\n"
    assert main([*base, "--data", "./prose", "--out", "run2"]) == 0
    assert "warning" not in capsys.readouterr().err
    assert load_model(tmp_path / "run2")[1].vocab_size == 3


@pytest.mark.parametrize(
    "flag, value", [("--warmup-iters", "5"), ("--min-lr", "1e-4"), ("--lr-decay-iters", "50")]
)
def test_schedule_flags_a_constant_schedule_ignores_are_refused(corpus, tmp_path, capsys, flag, value):
    """--schedule constant trains at --lr from the first step to the last: a warmup, a floor or a decay
    end given with it changed nothing, silently. Refused as sample refuses a filter greedy ignores."""
    out = tmp_path / "run"
    base = ["train", "--data", str(corpus), "--out", str(out), "--no-progress", "--max-iters", "2", *TINY]
    assert main([*base, "--schedule", "constant", flag, value]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {flag} {float(value) if 'lr' == flag[-2:] else value} is not allowed ")
    assert "with --schedule constant: the learning rate is --lr at every step" in err
    assert "Traceback" not in err and not out.exists()
    # A resume of a constant run names the saved schedule; a resume that changes the schedule may set it.
    assert main([*base, "--schedule", "constant", "--eval-iters", "1"]) == 0
    resume = ["train", "--data", str(corpus), "--out", str(out), "--no-progress", "--resume"]
    resume += ["--max-iters", "3"]
    assert main([*resume, flag, value]) == 2
    assert "with --schedule constant (the saved run's schedule)" in capsys.readouterr().err
    # (The saved run keeps the default warmup of 100, unused until the schedule decays.)
    warmup = [] if flag == "--warmup-iters" else ["--warmup-iters", "0"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # the rate moves at the resumed step: said, allowed
        assert main([*resume, flag, value, *warmup, "--schedule", "linear"]) == 0


def test_a_bpe_that_stops_short_of_its_size_says_so(corpus, tmp_path, capsys):
    """--bpe-vocab-size 100000 on a small corpus gave a vocabulary of a few hundred, silently."""
    base = ["train", "--data", str(corpus), "--no-progress", "--tokenizer", "bpe", *TINY]
    base += ["--max-iters", "1", "--eval-interval", "1", "--eval-iters", "1", "--warmup-iters", "0"]
    assert main([*base, "--out", str(tmp_path / "big"), "--bpe-vocab-size", "100000"]) == 0
    reached = load_model(tmp_path / "big")[1].vocab_size
    lines = [line for line in capsys.readouterr().err.splitlines() if "bpe" in line.lower()]
    assert lines == [
        f"warning: --bpe-vocab-size 100000: the BPE stopped at {reached} tokens, as no pair of tokens in "
        f"--data occurs twice any more (nothing left to merge); the model's vocabulary is {reached}"
    ]
    assert main([*base, "--out", str(tmp_path / "fits"), "--bpe-vocab-size", "260"]) == 0
    assert "warning" not in capsys.readouterr().err


def test_a_run_directory_that_is_not_writable_is_exit_2_naming_it(trained_run, corpus, monkeypatch, capsys):
    """A read-only run directory failed at the lock with a bare "Read-only file system (.../train.lock)",
    exit 1, where the README promises exit 2 and the previous checkpoint kept. (Simulated: root may
    write to a chmod'ed directory.)"""
    import errno
    import os

    before = (trained_run / "checkpoint.safetensors").read_bytes()
    real_open = os.open

    def read_only(path, flags, *args, **kwargs):
        if str(path).endswith("train.lock") and flags & os.O_CREAT:
            raise OSError(errno.EROFS, "Read-only file system", str(path))
        return real_open(path, flags, *args, **kwargs)

    monkeypatch.setattr(os, "open", read_only)
    argv = ["train", "--data", str(corpus), "--out", str(trained_run), "--resume", "--max-iters", "40"]
    assert main([*argv, "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: the run directory {trained_run} is not writable (Read-only file system")
    assert "choose another --out" in err and err.count("\n") == 1
    monkeypatch.undo()
    assert (trained_run / "checkpoint.safetensors").read_bytes() == before


def test_a_full_disk_at_the_lock_file_is_exit_2_and_leaves_nothing(corpus, tmp_path, monkeypatch, capsys):
    """The first byte a run writes is its lock file's pid: a full disk there was exit 1 with a bare
    'No space left on device', a leaked file descriptor and a train.lock left in a new directory."""
    import errno

    from arlm_lib import rundir

    def disk_full(fd, data):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(rundir.os, "write", disk_full)
    out = tmp_path / "run"
    assert main(["train", "--data", str(corpus), "--out", str(out), "--no-progress", *TINY]) == 2
    monkeypatch.undo()
    err = capsys.readouterr().err
    assert err.startswith(f"error: the run directory {out} cannot be written (No space left on device: ")
    assert "free some space, or choose another --out" in err and err.count("\n") == 1
    assert not out.exists()  # the directory made for the run is gone with its lock file
    assert not [fd for fd in os.listdir("/proc/self/fd") if "train.lock" in _fd_target(fd)]


def _fd_target(fd: str) -> str:
    try:
        return os.readlink(f"/proc/self/fd/{fd}")
    except OSError:  # closed between listing and reading
        return ""


def test_an_out_that_cannot_be_created_is_exit_2_naming_it(corpus, tmp_path, monkeypatch, capsys):
    """A new run under a read-only directory: as for a run directory that is not writable, exit 2."""
    import errno
    import os

    real_mkdir = os.mkdir

    def read_only(path, *args, **kwargs):
        if str(path) == str(tmp_path / "ro"):  # the directory --out would be made in
            raise OSError(errno.EROFS, "Read-only file system", str(path))
        return real_mkdir(path, *args, **kwargs)

    monkeypatch.setattr(os, "mkdir", read_only)
    out = tmp_path / "ro" / "run"
    assert main(["train", "--data", str(corpus), "--out", str(out), "--no-progress", *TINY]) == 2
    err = capsys.readouterr().err
    reason = f"Read-only file system ({tmp_path / 'ro'})"
    assert err == f"error: --out {out} cannot be created: {reason}; choose a writable --out\n"
    assert not (tmp_path / "ro").exists()
