"""Data-parallel training on the CPU (gloo): torchrun runs, agreement with one process, N -> M resume,
and what the surviving ranks do when one dies or hangs.

The multi-process tests start real processes (``python -m torch.distributed.run`` or two plain
processes with the torchrun environment variables set by hand), each with a timeout, and compare what
they wrote: rank 0's checkpoint and, for the test only, every rank's final weights.

Tolerance: two ranks and one process take the same optimizer steps, but sum the gradient in a
different order, so float32 weights agree to rounding (~1e-7 per step). We allow 1e-5 absolute after
the few steps these runs take; any real difference (a wrong batch slice, a missing all-reduce, an
un-averaged gradient) moves weights by ~lr = 1e-3.
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from arlm_lib import checkpoint as ckpt
from arlm_lib.data import encode_text, get_batch, split_train_val
from arlm_lib.distributed import (
    DistEnv,
    DistributedError,
    communication_guard,
    dist_env,
    is_communication_error,
)
from arlm_lib.errors import ConfigError
from arlm_lib.model import GPT, GPTConfig
from arlm_lib.tokenizers import CharTokenizer
from arlm_lib.train import TrainConfig, Trainer

TEXT = "the quick brown fox jumps over the lazy dog. a lazy cat naps in the sun.\n" * 200
MODEL = dict(block_size=32, n_layer=2, n_head=2, n_embd=32, dropout=0.0)
TRAIN = dict(
    batch_size=8,
    grad_accum_steps=2,  # exercises no_sync on the first micro-step
    max_iters=4,
    eval_interval=2,
    eval_iters=2,
    warmup_iters=2,
    lr_decay_iters=8,  # the same schedule for 4- and 8-step runs, so 4 + 4 steps can equal 8 straight
    lr=1e-3,
    progress=True,
    device="cpu",
    peak_flops=1e9,
)
ATOL = 1e-5
PROCESS_TIMEOUT_S = 240  # a hang fails the test instead of the suite

# The program every rank runs. It reads a JSON spec, trains, and saves its final weights for the test
# to compare (the library itself writes only rank 0's checkpoint). "fail" makes rank 1 exit or hang
# at a given step, to watch what the other rank does.
WORKER = textwrap.dedent(
    """
    import json, os, sys, time
    import torch
    torch.set_num_threads(1)
    from safetensors.torch import save_file
    from arlm_lib.data import encode_text, split_train_val
    from arlm_lib.errors import ArlmError
    from arlm_lib.model import GPT, GPTConfig
    from arlm_lib.tokenizers import CharTokenizer
    from arlm_lib.train import Callback, TrainConfig, Trainer

    spec = json.loads(open(sys.argv[1]).read())
    rank = int(os.environ["RANK"])
    text = spec.get(f"text_rank{rank}", spec["text"])
    tokenizer = CharTokenizer.train(text)
    train, val = split_train_val(encode_text(text, tokenizer))
    results = spec["results"]

    class Witness(Callback):  # the trainer calls callbacks on rank 0 only
        def on_step_end(self, trainer, record):
            with open(os.path.join(results, f"callback_rank{trainer.rank}.txt"), "a") as fh:
                fh.write(f"{record['step']} {time.time()}\\n")
            if record["step"] == spec.get("stop_at"):
                trainer.request_stop()  # as an early-stopping callback would: on rank 0 alone

    def build():
        if spec.get("resume"):
            return Trainer.resume(spec["out"], train, val, **spec["train"])
        torch.manual_seed(0)
        model = GPT(GPTConfig(vocab_size=tokenizer.vocab_size, **spec["model"]))
        return Trainer(model, train, val, TrainConfig(**spec["train"]), tokenizer, [Witness()], spec["out"])

    def sabotage(trainer, fail):
        step_once = trainer._train_step
        def failing_step():
            if trainer.step == fail["step"]:
                if fail["how"] == "exit":
                    os._exit(3)
                time.sleep(600)  # hang: alive, but never joins the next collective
            return step_once()
        trainer._train_step = failing_step

    try:
        trainer = build()
        if spec.get("fail") and rank == 1:
            sabotage(trainer, spec["fail"])
        trainer.train()
    except ArlmError as exc:
        print(f"{type(exc).__name__}: {exc}", file=sys.stderr, flush=True)
        with open(os.path.join(results, f"error_rank{rank}.json"), "w") as fh:
            json.dump({"type": type(exc).__name__, "message": str(exc), "time": time.time()}, fh)
        sys.exit(2)
    state = {k: v.detach().clone() for k, v in trainer.raw_model.state_dict().items()}
    save_file(state, os.path.join(results, f"weights_rank{rank}.safetensors"))
    trainer.close()
    """
)


# ----------------------------------------------------------------------------- helpers
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def clean_env() -> dict[str, str]:
    """The environment for child processes: one thread each, no inherited torchrun variables."""
    env = {
        k: v for k, v in os.environ.items() if k not in {"RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_PORT"}
    }
    env.update(OMP_NUM_THREADS="1", CUDA_VISIBLE_DEVICES="", PYTHONUNBUFFERED="1")
    return env


def write_spec(tmp: Path, **spec) -> tuple[Path, Path]:
    """The worker script and its JSON spec in ``tmp``; ``results`` is where ranks leave their files."""
    results = tmp / "results"
    results.mkdir(parents=True, exist_ok=True)
    worker = tmp / "worker.py"
    worker.write_text(WORKER)
    spec_path = tmp / "spec.json"
    spec_path.write_text(json.dumps({"text": TEXT, "model": MODEL, "results": str(results), **spec}))
    return worker, spec_path


def torchrun(tmp: Path, nproc: int = 2, **spec) -> subprocess.CompletedProcess:
    """Run the worker under ``torchrun --nproc_per_node=nproc``; each rank's output goes to tmp/logs."""
    worker, spec_path = write_spec(tmp, **spec)
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        f"--nproc_per_node={nproc}",
        "--nnodes=1",
        "--master_addr=127.0.0.1",
        f"--master_port={free_port()}",
        f"--log-dir={tmp / 'logs'}",
        "--redirects=3",  # each rank's stdout and stderr to its own file, to check who printed
        str(worker),
        str(spec_path),
    ]
    return subprocess.run(cmd, env=clean_env(), capture_output=True, text=True, timeout=PROCESS_TIMEOUT_S)


def rank_log(tmp: Path, rank: int, stream: str) -> str:
    [path] = (tmp / "logs").rglob(f"attempt_0/{rank}/{stream}.log")
    return path.read_text()


@pytest.fixture(scope="module")
def data():
    tokenizer = CharTokenizer.train(TEXT)
    train, val = split_train_val(encode_text(TEXT, tokenizer))
    return tokenizer, train, val


def single_process(data, max_iters: int, out_dir=None) -> Trainer:
    """The same run as the workers', in this process (world size 1), with the whole global batch."""
    tokenizer, train, val = data
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=tokenizer.vocab_size, **MODEL))
    config = TrainConfig(**{**TRAIN, "max_iters": max_iters, "progress": False})
    trainer = Trainer(model, train, val, config, tokenizer, out_dir=out_dir)
    trainer.train()
    return trainer


def max_abs_diff(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    assert a.keys() == b.keys()
    return max((a[k] - b[k]).abs().max().item() for k in a)


@pytest.fixture(scope="module")
def two_rank_run(tmp_path_factory):
    """A 4-step, 2-rank torchrun run on the CPU; its directory holds logs, results and the checkpoint."""
    tmp = tmp_path_factory.mktemp("ddp")
    proc = torchrun(tmp, out=str(tmp / "run"), train=TRAIN)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return tmp


# ----------------------------------------------------------------------------- torchrun runs
@pytest.mark.slow
def test_two_ranks_end_identical_and_match_one_process(two_rank_run, data):
    results = two_rank_run / "results"
    rank0 = load_file(results / "weights_rank0.safetensors")
    rank1 = load_file(results / "weights_rank1.safetensors")
    assert all(torch.equal(rank0[k], rank1[k]) for k in rank0), "DDP ranks drifted apart"

    alone = single_process(data, max_iters=4)
    reference = alone.raw_model.state_dict()
    torch.manual_seed(0)
    initial = GPT(GPTConfig(vocab_size=data[0].vocab_size, **MODEL)).state_dict()
    assert max_abs_diff(reference, initial) > 100 * ATOL  # training moved the weights well past ATOL
    assert max_abs_diff(rank0, reference) < ATOL

    # The checkpoint rank 0 wrote has the same weights, plain keys, and the same loss curve.
    saved = ckpt.load_checkpoint(two_rank_run / "run")
    assert saved.trainer_state["step"] == 4
    assert (
        max_abs_diff(saved.model_state, {k: v for k, v in reference.items() if k in saved.model_state}) < ATOL
    )
    losses = saved.trainer_state["history"]["train_loss"]
    assert losses == pytest.approx(alone.history.column("train_loss"), abs=ATOL)


@pytest.mark.slow
def test_only_rank_zero_logs_runs_callbacks_and_writes(two_rank_run):
    results = two_rank_run / "results"
    assert (results / "callback_rank0.txt").read_text().count("\n") == 4
    assert not (results / "callback_rank1.txt").exists()
    assert sorted(p.name for p in (two_rank_run / "run").iterdir()) == [ckpt.CHECKPOINT_FILE]
    assert "train" in rank_log(two_rank_run, 0, "stderr")  # rank 0's progress bar
    assert rank_log(two_rank_run, 1, "stdout") == ""
    assert "train" not in rank_log(two_rank_run, 1, "stderr")


@pytest.mark.slow
def test_mfu_under_ddp_is_per_device(two_rank_run, data):
    # tokens_per_s counts both ranks' tokens and peak_flops is one device's: MFU divides by 2 ranks.
    history = ckpt.load_checkpoint(two_rank_run / "run").trainer_state["history"]
    flops_per_token = GPT(GPTConfig(vocab_size=data[0].vocab_size, **MODEL)).flops_per_token()
    for tps, mfu in zip(history["tokens_per_s"], history["mfu"]):
        assert mfu == pytest.approx(flops_per_token * tps / (TRAIN["peak_flops"] * 2), rel=1e-9)


@pytest.mark.slow
def test_a_stop_requested_on_rank_zero_stops_every_rank_after_that_step(data, tmp_path):
    """Callbacks run on rank 0 only, so an early-stopping callback stops rank 0 alone. The ranks agree
    on it (a vote in the next step's loss all-reduce, which drops that step): both end after step 2
    with the same weights (a rank that went on would wait forever for its peer in the next
    all-reduce), and rank 0's checkpoint is that step's. Resumed, it goes on exactly as a run that
    never stopped: the dropped step's batches are drawn again."""
    train = {**TRAIN, "progress": False, "ddp_timeout_s": 30}  # a broken stop fails in 30 s, not 120
    proc = torchrun(tmp_path, out=str(tmp_path / "run"), train=train, stop_at=2)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    results = tmp_path / "results"
    rank0 = load_file(results / "weights_rank0.safetensors")
    rank1 = load_file(results / "weights_rank1.safetensors")
    assert all(torch.equal(rank0[k], rank1[k]) for k in rank0)
    assert max_abs_diff(rank0, single_process(data, max_iters=2).raw_model.state_dict()) < ATOL
    assert ckpt.load_checkpoint(tmp_path / "run").trainer_state["step"] == 2
    assert (results / "callback_rank0.txt").read_text().count("\n") == 2

    tokenizer, train_tokens, val_tokens = data
    resumed = Trainer.resume(tmp_path / "run", train_tokens, val_tokens, max_iters=4, progress=False)
    resumed.train()
    straight = single_process(data, max_iters=4)
    assert max_abs_diff(resumed.raw_model.state_dict(), straight.raw_model.state_dict()) < ATOL
    assert resumed.history.column("train_loss") == pytest.approx(
        straight.history.column("train_loss"), abs=ATOL
    )


@pytest.mark.slow
def test_a_two_rank_checkpoint_resumes_in_one_process(two_rank_run, data, tmp_path):
    tokenizer, train, val = data
    run = tmp_path / "run"
    run.mkdir()
    (run / ckpt.CHECKPOINT_FILE).write_bytes((two_rank_run / "run" / ckpt.CHECKPOINT_FILE).read_bytes())
    resumed = Trainer.resume(run, train, val, max_iters=8, progress=False)
    assert resumed.world_size == 1 and resumed.step == 4
    resumed.train()

    straight = single_process(data, max_iters=8)
    assert max_abs_diff(resumed.raw_model.state_dict(), straight.raw_model.state_dict()) < ATOL
    # Had the batch stream restarted instead of continuing, steps 5..8 would see other windows.
    assert resumed.history.column("train_loss") == pytest.approx(
        straight.history.column("train_loss"), abs=ATOL
    )


@pytest.mark.slow
def test_a_one_process_checkpoint_resumes_with_two_ranks(data, tmp_path):
    single_process(data, max_iters=4, out_dir=tmp_path / "run")
    proc = torchrun(
        tmp_path, out=str(tmp_path / "run"), resume=True, train={"max_iters": 8, "progress": False}
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    straight = single_process(data, max_iters=8)
    rank1 = load_file(tmp_path / "results" / "weights_rank1.safetensors")
    assert max_abs_diff(rank1, straight.raw_model.state_dict()) < ATOL


@pytest.mark.slow
def test_a_rank_that_dies_ends_the_torchrun_job_with_an_error(tmp_path):
    """The job ends at once, not when a collective gives up: the survivor's timeout (200 s) is far
    above the 90 s allowed, and rank 0 must end by torchrun's SIGTERM or by its own error about the
    lost connection. A rank 0 that ignored the SIGTERM and waited would be SIGKILLed by torchrun after
    its 30 s grace period, which the old check (elapsed < 90 with a 30 s timeout) let pass."""
    train = {**TRAIN, "max_iters": 200, "eval_interval": 100, "progress": False, "ddp_timeout_s": 200}
    start = time.monotonic()
    proc = torchrun(tmp_path, out=None, train=train, fail={"step": 2, "how": "exit"})
    elapsed = time.monotonic() - start
    assert proc.returncode != 0
    assert elapsed < 90, f"the job took {elapsed:.0f} s to end after a rank died"
    # torchrun names the rank that failed and its exit code...
    assert re.search(r"rank\s*:\s*1 \(local_rank: 1\)\s+exitcode\s*:\s*3", proc.stderr), proc.stderr[-3000:]
    # ...and how rank 0 ended: its own DistributedError (exit 2) or torchrun's SIGTERM, never SIGKILL.
    rank0 = re.search(r"rank\s*:\s*0 \(local_rank: 0\)\s+exitcode\s*:\s*(-?\d+)", proc.stderr)
    assert rank0 and rank0.group(1) in {"2", "-15"}, proc.stderr[-3000:]
    assert "Unable to shutdown process" not in proc.stderr
    error_file = tmp_path / "results" / "error_rank0.json"
    if error_file.exists():  # rank 0 saw the broken connection before torchrun's SIGTERM reached it
        error = json.loads(error_file.read_text())
        assert error["type"] == "DistributedError" and "rank 0 of 2 lost contact" in error["message"]
        cause = error["message"].split("Cause:", 1)[1].lower()
        assert "timed out" not in cause and "timeout" not in cause, error["message"]
    assert not (tmp_path / "results" / "weights_rank0.safetensors").exists()


@pytest.mark.slow
def test_ranks_that_read_different_corpora_are_refused_before_training(tmp_path):
    # Same characters (so the same vocabulary and model shapes), different text: DDP alone would train.
    other = "a lazy cat naps in the sun. the quick brown fox jumps over the lazy dog.\n" * 200
    proc = torchrun(tmp_path, out=None, train={**TRAIN, "progress": False}, text_rank1=other)
    assert proc.returncode != 0
    errors = [json.loads(p.read_text()) for p in (tmp_path / "results").glob("error_rank*.json")]
    assert errors, proc.stderr[-3000:]
    assert all(e["type"] == "ConfigError" and "do not agree on the corpus" in e["message"] for e in errors)
    assert not list((tmp_path / "results").glob("callback_rank*.txt"))  # not a single step was taken


@pytest.mark.slow
def test_the_command_line_trains_under_torchrun_and_resumes_in_one_process(tmp_path):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text(TEXT)
    out = tmp_path / "run"
    flags = ["--data", str(corpus), "--out", str(out), "--device", "cpu", "--no-progress"]
    model = ["--n-layer", "2", "--n-head", "2", "--n-embd", "32", "--block-size", "32", "--batch-size", "8"]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--nnodes=1"]
    cmd += ["--master_addr=127.0.0.1", f"--master_port={free_port()}", "-m", "arlm_lib", "train"]
    cmd += flags + model + ["--max-iters", "4", "--eval-interval", "2", "--eval-iters", "1"]
    proc = subprocess.run(cmd, env=clean_env(), capture_output=True, text=True, timeout=PROCESS_TIMEOUT_S)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    # Rank 0 alone prints: one model line, one line per evaluation, one summary.
    assert proc.stdout.count("model: ") == 1 and proc.stdout.count("done at step 4") == 1, proc.stdout
    assert sorted(p.name for p in out.iterdir()) == [ckpt.CHECKPOINT_FILE]

    resume = [sys.executable, "-m", "arlm_lib", "train", *flags, "--resume", "--max-iters", "6"]
    proc = subprocess.run(resume, env=clean_env(), capture_output=True, text=True, timeout=PROCESS_TIMEOUT_S)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "resuming" in proc.stdout and "at step 4 of 6" in proc.stdout and "done at step 6" in proc.stdout


# ----------------------------------------------------------------------------- without a launcher
def launch_by_hand(tmp: Path, fail: dict, timeout_s: float) -> tuple[subprocess.Popen, subprocess.Popen]:
    """Two plain processes with the torchrun environment set by hand: no agent will kill the survivor,
    so what it does is the trainer's own doing (as on another machine of a multi-node job)."""
    train = {**TRAIN, "max_iters": 200, "eval_interval": 100, "progress": False, "ddp_timeout_s": timeout_s}
    worker, spec_path = write_spec(tmp, out=None, train=train, fail=fail)
    port = free_port()
    procs = []
    for rank in (0, 1):
        env = clean_env()
        env.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE="2", MASTER_ADDR="127.0.0.1")
        env["MASTER_PORT"] = str(port)
        procs.append(
            subprocess.Popen(
                [sys.executable, str(worker), str(spec_path)],
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
        )
    return procs[0], procs[1]


def last_callback_time(results: Path) -> float:
    return float((results / "callback_rank0.txt").read_text().split()[-1])


@pytest.mark.slow
@pytest.mark.parametrize("how", ["exit", "hang"])
def test_the_survivor_reports_a_dead_or_hung_rank_within_the_timeout(tmp_path, how):
    timeout_s = 20.0
    survivor, failing = launch_by_hand(tmp_path, {"step": 3, "how": how}, timeout_s)
    try:
        _, err = survivor.communicate(timeout=PROCESS_TIMEOUT_S)
    finally:
        failing.kill()  # the hanging rank would sleep on; we started it, so we end it
        failing.communicate()
    assert survivor.returncode == 2, err[-3000:]
    error = json.loads((tmp_path / "results" / "error_rank0.json").read_text())
    assert error["type"] == "DistributedError"
    assert "rank 0 of 2 lost contact" in error["message"] and "step 4" in error["message"]
    assert f"ddp_timeout_s={timeout_s:g}" in error["message"]
    assert "DistributedError: rank 0 of 2" in err
    # From rank 0's last completed step to its error: at most the timeout (plus scheduling slack).
    waited = error["time"] - last_callback_time(tmp_path / "results")
    assert waited < timeout_s + 15, f"rank 0 waited {waited:.1f} s"
    if how == "exit":  # a closed socket is noticed at once, without waiting for the timeout
        assert waited < timeout_s


# ----------------------------------------------------------------------------- units
def test_a_world_size_that_does_not_divide_the_batch_is_refused(data, monkeypatch):
    tokenizer, train, val = data
    monkeypatch.setenv("WORLD_SIZE", "3")
    monkeypatch.setenv("RANK", "0")
    model = GPT(GPTConfig(vocab_size=tokenizer.vocab_size, **MODEL))
    with pytest.raises(
        ConfigError, match=r"batch_size=8 \(--batch-size\) is not divisible by the world size 3"
    ):
        Trainer(model, train, val, TrainConfig(batch_size=8, device="cpu", progress=False))


def test_rank_slices_of_the_global_batch_are_disjoint_and_complete(data):
    train = data[1]
    whole_x, whole_y = get_batch(train, 8, 16, torch.Generator().manual_seed(5))
    parts = [get_batch(train, 4, 16, torch.Generator().manual_seed(5), rank=r, world_size=2) for r in (0, 1)]
    assert torch.equal(torch.cat([p[0] for p in parts]), whole_x)
    assert torch.equal(torch.cat([p[1] for p in parts]), whole_y)


@pytest.mark.parametrize(
    "environ, match",
    [
        ({"WORLD_SIZE": "two"}, "WORLD_SIZE='two'"),
        ({"WORLD_SIZE": "2", "RANK": "2"}, "RANK=2 with WORLD_SIZE=2"),
    ],
)
def test_a_malformed_torchrun_environment_is_named(environ, match):
    with pytest.raises(ConfigError, match=re.escape(match)):
        dist_env(environ)
    assert dist_env({}) == DistEnv(rank=0, local_rank=0, world_size=1)


def test_communication_failures_become_distributed_errors_and_bugs_do_not():
    env = DistEnv(rank=1, local_rank=1, world_size=2)
    gloo = RuntimeError("[gloo/transport/tcp/pair.cc:537] Read error: Connection reset by peer")
    assert is_communication_error(gloo)
    with pytest.raises(
        DistributedError, match=r"rank 1 of 2 .* during a barrier at step 8: .*ddp_timeout_s=5 s"
    ):
        with communication_guard(env, "a barrier", 5.0, step=7):
            raise gloo
    bug = RuntimeError("mat1 and mat2 shapes cannot be multiplied (4x8 and 16x4)")
    assert not is_communication_error(bug)
    with pytest.raises(RuntimeError, match="mat1 and mat2"):
        with communication_guard(env, "a barrier", 5.0, step=7):
            raise bug
    with communication_guard(DistEnv(), "a barrier", 5.0):  # one process: nothing to translate
        pass


def test_dropout_seeds_differ_between_ranks_and_steps():
    from arlm_lib.distributed import rank_seed

    seeds = {rank_seed(1337, rank, step) for rank in range(1, 9) for step in range(100)}
    assert len(seeds) == 8 * 100
    assert rank_seed(1337, 3, 5) == rank_seed(1337, 3, 5)


def test_only_global_rank_zero_is_the_main_process_on_every_machine():
    """On the second machine of a job, LOCAL_RANK 0 is global rank 8: it must not also write --out."""
    assert dist_env({"RANK": "0", "LOCAL_RANK": "0", "WORLD_SIZE": "16"}).is_main
    assert not dist_env({"RANK": "8", "LOCAL_RANK": "0", "WORLD_SIZE": "16"}).is_main


def test_nccl_failures_are_recognised_whatever_their_case():
    env = DistEnv(rank=0, local_rank=0, world_size=2)
    nccl = RuntimeError("NCCL error in: ProcessGroupNCCL.cpp:1970, unhandled system error")
    assert is_communication_error(nccl)
    with pytest.raises(DistributedError, match="rank 0 of 2 lost contact"):
        with communication_guard(env, "the gradient all-reduce", 5.0, step=0):
            raise nccl


def test_a_failure_reported_by_an_inner_guard_is_not_wrapped_again():
    env = DistEnv(rank=1, local_rank=1, world_size=2)
    gloo = RuntimeError("[gloo/transport/tcp/pair.cc:537] Read error: Connection reset by peer")
    with pytest.raises(DistributedError) as info:
        with communication_guard(env, "training", 5.0, step=3):
            with communication_guard(env, "a barrier", 5.0, step=7):
                raise gloo
    message = str(info.value)
    assert "during a barrier at step 8" in message and message.count("lost contact") == 1
