"""Reliability: interruption, a crash mid-write, non-finite losses, one writer per run, a full disk, memory.

Subprocess tests run the real command line (``python -m arlm_lib train``) on a tiny model and a small
temporary corpus, and deliver real signals; the rest run in-process for speed.
"""

from __future__ import annotations

import errno
import gc
import json
import math
import os
import queue
import random
import re
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
from array import array
from pathlib import Path

import pytest
import torch
from conftest import inject_nan_loss

from arlm_lib import checkpoint as ckpt
from arlm_lib.cli import main
from arlm_lib.data import encode_text, split_train_val
from arlm_lib.errors import CheckpointError, TrainingDivergedError
from arlm_lib.model import GPT, GPTConfig
from arlm_lib.rundir import LOCK_FILE, RunLock, prepare_run_dir
from arlm_lib.tokenizers import train_tokenizer
from arlm_lib.train import Callback, TrainConfig, Trainer, lr_at

TINY = ["--n-layer", "1", "--n-head", "2", "--n-embd", "32", "--block-size", "32", "--batch-size", "8"]
FAST = ["--no-progress", "--device", "cpu", "--eval-iters", "2"]
# One thread: a fixed reduction order (bit-identical runs across processes) and no CPU oversubscription.
CHILD_ENV = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
TIMEOUT = 300  # generous: the machine is shared; tests never assert on time


pytestmark = pytest.mark.usefixtures("one_thread")  # conftest.py


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    rng = random.Random(0)
    words = "the cat sat on a mat and dog ran far away with big red ball".split()
    path = tmp_path_factory.mktemp("corpus") / "corpus.txt"
    path.write_text(" ".join(rng.choice(words) for _ in range(3000)))
    return path


def _train_argv(corpus: Path, out: Path, *extra: str) -> list[str]:
    return ["train", "--data", str(corpus), "--out", str(out), *TINY, *FAST, *extra]


def _spawn(argv: list[str]) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "arlm_lib", *argv],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=CHILD_ENV,
    )


def _run(argv: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "arlm_lib", *argv],
        capture_output=True,
        text=True,
        env=CHILD_ENV,
        timeout=TIMEOUT,
    )


class _Lines:
    """Collects a child's stdout lines on a thread, so the test can wait for one without blocking forever."""

    def __init__(self, proc: subprocess.Popen) -> None:
        self.lines: queue.Queue[str] = queue.Queue()
        self.seen: list[str] = []
        threading.Thread(target=self._pump, args=(proc.stdout,), daemon=True).start()

    def _pump(self, stream) -> None:
        for line in stream:
            self.lines.put(line)

    def wait_for(self, pattern: str, timeout: float = TIMEOUT) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                line = self.lines.get(timeout=1)
            except queue.Empty:
                continue
            self.seen.append(line)
            if re.search(pattern, line):
                return line
        raise AssertionError(f"no line matching {pattern!r} within {timeout}s; got {self.seen}")

    def rest(self) -> str:
        while not self.lines.empty():
            self.seen.append(self.lines.get())
        return "".join(self.seen)


def _wait_for_file(path: Path, proc: subprocess.Popen, timeout: float = TIMEOUT) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert proc.poll() is None, f"the child exited ({proc.returncode}) before {path} appeared"
        assert time.monotonic() < deadline, f"{path} did not appear within {timeout}s"
        time.sleep(0.05)


def _leftovers(run: Path) -> list[str]:
    """Lock files and checkpoint temp files: a finished or refused run must leave none of them."""
    return sorted(p.name for p in run.iterdir() if p.name == LOCK_FILE or ".tmp-" in p.name)


def _all_tensors(checkpoint: ckpt.Checkpoint) -> dict[str, torch.Tensor]:
    tensors = {f"model.{k}": v for k, v in checkpoint.model_state.items()}
    for index, state in checkpoint.optimizer_state["state"].items():
        tensors.update({f"optim.{index}.{k}": v for k, v in state.items() if torch.is_tensor(v)})
    return tensors


# ==================================================================================== 1. interruption
RESUME_ITERS = 300
# A warmup shorter than the run: a longer one adds a warning line to stderr, which these tests read.
WARMUP_10 = ["--warmup-iters", "10"]
RESUME_FLAGS = ["--max-iters", str(RESUME_ITERS), "--eval-interval", "50", "--warmup-iters", "20"]


@pytest.fixture(scope="module")
def uninterrupted(corpus, tmp_path_factory) -> ckpt.Checkpoint:
    """The reference: the same command, never interrupted."""
    out = tmp_path_factory.mktemp("reference") / "run"
    result = _run(_train_argv(corpus, out, *RESUME_FLAGS))
    assert result.returncode == 0, result.stderr
    return ckpt.load_checkpoint(out)


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_signal_saves_exits_cleanly_and_resume_is_exact(corpus, tmp_path, uninterrupted, sig) -> None:
    run = tmp_path / "run"
    proc = _spawn(_train_argv(corpus, run, *RESUME_FLAGS))
    lines = _Lines(proc)
    lines.wait_for(r"^step\s+50 ")  # training is under way (and past its first checkpoint)
    proc.send_signal(sig)
    code = proc.wait(timeout=TIMEOUT)
    err = proc.stderr.read()
    assert code == 0 and "Traceback" not in err, err
    out = lines.rest()
    assert f"{sig.name} received" in out and "stopped early; continue with --resume" in out

    stopped = ckpt.load_checkpoint(run)
    step = stopped.trainer_state["step"]
    assert 50 <= step < RESUME_ITERS, f"the signal should land mid-run, it stopped at step {step}"
    assert len(stopped.trainer_state["history"]["step"]) == step  # the final checkpoint is of the last step
    assert _leftovers(run) == []
    first_losses = (
        stopped.trainer_state["history"]["train_loss"][:1],
        uninterrupted.trainer_state["history"]["train_loss"][:1],
    )
    assert first_losses[0] == first_losses[1], (
        f"two runs with the same --seed differ from their first step {first_losses}: the model init is not "
        "seeded (cli.cmd_train must call torch.manual_seed(args.seed) before GPT(model_config))"
    )

    # Resume in a fresh process: it must finish exactly as if it had never been interrupted.
    result = _run(["train", "--data", str(corpus), "--out", str(run), "--resume", *FAST])
    assert result.returncode == 0, result.stderr
    assert f"resuming {run} at step {step} of {RESUME_ITERS}" in result.stdout
    resumed = ckpt.load_checkpoint(run)
    assert resumed.trainer_state["step"] == RESUME_ITERS
    for column in ("train_loss", "val_loss", "lr", "grad_norm"):
        assert resumed.trainer_state["history"][column] == uninterrupted.trainer_state["history"][column], (
            column
        )
    reference = _all_tensors(uninterrupted)
    final = _all_tensors(resumed)
    assert final.keys() == reference.keys()
    different = [k for k in reference if not torch.equal(final[k], reference[k])]
    assert different == [], f"resume is not exact: {different[:5]} differ"


def test_request_stop_saves_the_current_step(corpus, tmp_path) -> None:
    """The dashboard's Stop button calls request_stop(): the loop ends after the step and saves it."""

    class StopAt(Callback):
        def on_step_end(self, trainer, record):
            if record["step"] == 7:
                trainer.request_stop()

    trainer = _trainer(
        corpus, TrainConfig(max_iters=1000, eval_interval=100, **_CFG), out_dir=tmp_path / "run"
    )
    trainer.callbacks.append(StopAt())
    trainer.train()
    assert trainer.step == 7
    assert ckpt.load_checkpoint(tmp_path / "run").trainer_state["step"] == 7


# ==================================================================================== 2. crash mid-write
CRASH_CHILD = textwrap.dedent(
    """
    import os, sys, time
    import arlm_lib.checkpoint as ck
    from arlm_lib.cli import main

    real_save_file, calls = ck.save_file, []

    def save_file_then_hang(tensors, filename, metadata=None):
        calls.append(filename)
        real_save_file(tensors, filename, metadata=metadata)
        if len(calls) == 2:  # the second checkpoint: half written when the process is killed
            os.truncate(filename, os.path.getsize(filename) // 2)
            open(os.environ["ARLM_TEST_MARKER"], "w").write(filename)
            time.sleep(600)

    ck.save_file = save_file_then_hang
    sys.exit(main(sys.argv[1:]))
    """
)


@pytest.mark.slow
def test_sigkill_while_writing_a_checkpoint_keeps_the_previous_one(corpus, tmp_path, capsys) -> None:
    run, marker = tmp_path / "run", tmp_path / "writing"
    argv = _train_argv(corpus, run, "--max-iters", "1000", "--eval-interval", "20")
    proc = subprocess.Popen(
        [sys.executable, "-c", CRASH_CHILD, *argv],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**CHILD_ENV, "ARLM_TEST_MARKER": str(marker)},
    )
    try:
        _wait_for_file(marker, proc)
        proc.kill()  # SIGKILL: no handler, no finally, no cleanup
    finally:
        proc.kill()
        proc.communicate(timeout=TIMEOUT)
    temp = Path(marker.read_text())
    assert temp.exists() and temp.parent == run, "the kill should leave the half-written temp file behind"
    assert (run / LOCK_FILE).exists(), "the kill should leave the lock file behind"

    # The previous checkpoint is intact and loadable, weights and all.
    survivor = ckpt.load_checkpoint(run)
    assert survivor.trainer_state["step"] == 20
    ckpt.load_model(run)

    # Neither the dead process's lock nor its temp file blocks the next run, and the debris is cleaned.
    code = main(["train", "--data", str(corpus), "--out", str(run), "--resume", "--max-iters", "30", *FAST])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert "resuming" in captured.out and "at step 20" in captured.out
    assert ckpt.load_checkpoint(run).trainer_state["step"] == 30
    assert _leftovers(run) == []


def test_stale_temp_files_are_removed_on_the_next_save_but_live_ones_are_not(tmp_path) -> None:
    model = _model(vocab_size=10)
    run = tmp_path / "run"
    ckpt.save_checkpoint(run, model)
    dead = run / f".{ckpt.CHECKPOINT_FILE}.tmp-{_dead_pid()}"
    alive = run / f".{ckpt.CHECKPOINT_FILE}.tmp-{os.getppid()}"  # a live process's save in flight
    dead.write_bytes(b"half a checkpoint")
    alive.write_bytes(b"someone else's write in progress")
    ckpt.save_checkpoint(run, model)
    assert not dead.exists()
    assert alive.exists()
    # A directory holding only a crashed run's debris is not "someone else's files": a new run may use it.
    alive.unlink()
    fresh = tmp_path / "crashed-before-first-checkpoint"
    fresh.mkdir()
    (fresh / LOCK_FILE).write_text(json.dumps({"pid": _dead_pid(), "host": socket.gethostname()}))
    (fresh / f".{ckpt.CHECKPOINT_FILE}.tmp-{_dead_pid()}").write_bytes(b"x")
    assert prepare_run_dir(fresh, resume=False) == fresh
    assert _leftovers(fresh) == [LOCK_FILE]  # the dead temp file is gone; the lock is taken over later


def test_a_temp_file_of_another_users_live_process_is_kept(tmp_path, monkeypatch) -> None:
    """A save in flight by another user's process (signalling it is refused: EPERM) is not debris."""
    model = _model(vocab_size=10)
    run = tmp_path / "run"
    ckpt.save_checkpoint(run, model)
    other = _dead_pid()  # stands in for the pid of a live process this user may not signal
    theirs = run / f".{ckpt.CHECKPOINT_FILE}.tmp-{other}"
    theirs.write_bytes(b"another user's write in progress")
    real_kill = os.kill

    def kill(pid, sig):
        if pid == other:
            raise PermissionError(errno.EPERM, os.strerror(errno.EPERM))
        return real_kill(pid, sig)

    monkeypatch.setattr(os, "kill", kill)
    ckpt.save_checkpoint(run, model)
    assert theirs.exists()


def test_a_checkpoint_is_on_disk_before_it_replaces_the_previous_one(tmp_path, monkeypatch) -> None:
    """A power cut just after the rename must not leave a partly written file under the real name: the
    new file is flushed to disk (fsync) before the rename publishes it, and the directory after it."""
    events: list[tuple] = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd):
        events.append(("fsync", os.fstat(fd).st_ino))
        return real_fsync(fd)

    def replace(src, dst):
        events.append(("replace", os.stat(src).st_ino, Path(dst).name))
        return real_replace(src, dst)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    path = ckpt.save_checkpoint(tmp_path / "run", _model(vocab_size=10))
    inode = path.stat().st_ino
    published = events.index(("replace", inode, ckpt.CHECKPOINT_FILE))
    assert ("fsync", inode) in events[:published], events
    # The rename lives in the directory: until the directory is flushed too, a power cut can bring back
    # the previous checkpoint (or none).
    assert ("fsync", path.parent.stat().st_ino) in events[published + 1 :], events


# ==================================================================================== 3. non-finite loss
@pytest.mark.slow
def test_absurd_lr_stops_with_exit_3_naming_the_step_and_keeps_finite_checkpoint(corpus, tmp_path) -> None:
    run = tmp_path / "run"
    # lr grows by ~1 per step (a huge peak reached over a huge warmup): the run diverges after a few
    # checkpoints, so there is a last good checkpoint to protect.
    flags = ["--lr", "1e6", "--warmup-iters", "1000000", "--grad-clip", "0", "--eval-interval", "10"]
    result = _run(_train_argv(corpus, run, "--max-iters", "500", *flags))
    assert result.returncode == 3, result.stderr
    assert "Traceback" not in result.stderr
    warning, *message = result.stderr.strip().splitlines()
    assert warning.startswith("warning: warmup_iters=1000000 (--warmup-iters) is not below max_iters=500"), (
        warning
    )
    assert len(message) == 1 and message[0].startswith("error: ")
    match = re.search(r"became (nan|inf) at step (\d+)", message[0])
    assert match, message[0]
    bad_step = int(match.group(2))

    saved = ckpt.load_checkpoint(run)
    step = saved.trainer_state["step"]
    assert step > 0 and step == (bad_step - 1) // 10 * 10, (step, bad_step)  # the last periodic checkpoint
    assert all(torch.isfinite(t).all() for t in _all_tensors(saved).values() if t.is_floating_point())
    ckpt.load_model(run)
    assert _leftovers(run) == []


def test_divergence_before_the_first_checkpoint_leaves_nothing(corpus, tmp_path, capsys) -> None:
    run = tmp_path / "run"
    code = main(_train_argv(corpus, run, "--max-iters", "50", "--lr", "1e6", "--grad-clip", "0", *WARMUP_10))
    err = capsys.readouterr().err
    assert code == 3
    assert re.search(r"^error: the (training loss|gradient norm) became (nan|inf) at step \d+", err)
    assert not run.exists(), "a run that failed before its first checkpoint must leave no directory"


def test_a_failed_run_keeps_the_empty_directory_the_user_made(corpus, tmp_path, capsys) -> None:
    """Only a directory the run created itself is removed after a failure before the first checkpoint."""
    run = tmp_path / "run"
    run.mkdir()
    code = main(_train_argv(corpus, run, "--max-iters", "50", "--lr", "1e6", "--grad-clip", "0", *WARMUP_10))
    assert code == 3, capsys.readouterr().err
    assert run.is_dir() and list(run.iterdir()) == []


def test_save_checkpoint_refuses_nan_weights_and_keeps_the_old_file(tmp_path) -> None:
    model = _model(vocab_size=10)
    path = ckpt.save_checkpoint(tmp_path / "run", model)
    before = path.read_bytes()
    with torch.no_grad():
        model.transformer.h[0].mlp.c_fc.weight[3, 4] = math.inf
    with pytest.raises(CheckpointError, match=r"refusing to save: weight .*mlp\.c_fc\.weight.* NaN or inf"):
        ckpt.save_checkpoint(tmp_path / "run", model)
    assert path.read_bytes() == before
    assert _leftovers(tmp_path / "run") == []


def test_save_checkpoint_refuses_nan_optimizer_moments_and_keeps_the_old_file(tmp_path) -> None:
    """NaN AdamW moments poison a resumed run as surely as NaN weights: they are refused too."""
    model = _model(vocab_size=10)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    idx = torch.zeros(1, 4, dtype=torch.long)
    model(idx, idx).loss.backward()
    optimizer.step()
    path = ckpt.save_checkpoint(tmp_path / "run", model, optimizer=optimizer)
    before = path.read_bytes()
    next(iter(optimizer.state.values()))["exp_avg_sq"].fill_(math.nan)
    with pytest.raises(CheckpointError, match=r"refusing to save: tensor 'optim\.\d+\.exp_avg_sq' holds NaN"):
        ckpt.save_checkpoint(tmp_path / "run", model, optimizer=optimizer)
    assert path.read_bytes() == before
    assert _leftovers(tmp_path / "run") == []


_CFG = dict(batch_size=8, progress=False, device="cpu", eval_iters=2, warmup_iters=2, lr=1e-3)


def _model(vocab_size: int) -> GPT:
    torch.manual_seed(0)
    return GPT(
        GPTConfig.from_preset("tiny", n_layer=1, n_head=2, n_embd=32, block_size=32, vocab_size=vocab_size)
    )


def _trainer(corpus: Path, config: TrainConfig, out_dir: Path | None = None) -> Trainer:
    text = corpus.read_text()
    tokenizer = train_tokenizer("char", text)
    train, val = split_train_val(encode_text(text, tokenizer))
    return Trainer(_model(tokenizer.vocab_size), train, val, config, tokenizer, out_dir=out_dir)


def test_rollback_restores_the_last_checkpoint_halves_lr_and_continues(corpus, tmp_path) -> None:
    config = TrainConfig(max_iters=12, eval_interval=5, on_nonfinite="rollback", **_CFG)
    halved = TrainConfig(**{**config.to_dict(), "lr": 5e-4})
    expected_lrs = [lr_at(s, config) for s in range(5)] + [lr_at(s, halved) for s in range(5, 12)]
    trainer = _trainer(corpus, config, out_dir=tmp_path / "run")
    inject_nan_loss(trainer, {8}, times=1)
    history = trainer.train()

    assert trainer.rollbacks == [{"step": 8, "restored_step": 5, "lr": 5e-4}]
    assert trainer.step == 12
    assert history.column("step") == [float(s) for s in range(1, 13)]  # steps 6-7 redone, not duplicated
    assert history.column("lr") == expected_lrs
    saved = ckpt.load_checkpoint(tmp_path / "run")
    assert saved.train_config["lr"] == 5e-4  # a resumed run keeps the safer lr
    assert all(torch.isfinite(p).all() for p in trainer.raw_model.parameters())


def test_rollback_replays_the_same_batches_from_the_restored_state(corpus) -> None:
    """Rolling back restores weights, AdamW state and RNG: the redone steps equal, bit for bit, a clean run
    that simply lowered its lr at the restored step."""
    config = TrainConfig(max_iters=9, eval_interval=3, on_nonfinite="rollback", schedule="constant", **_CFG)
    clean = _trainer(corpus, TrainConfig(**{**config.to_dict(), "max_iters": 3}))
    clean.train()
    clean.config.lr /= 2
    clean.config.max_iters = 9
    clean.train()

    rolled = _trainer(corpus, config)
    inject_nan_loss(rolled, {5}, times=1)
    rolled.train()
    assert rolled.rollbacks == [{"step": 5, "restored_step": 3, "lr": 5e-4}]
    assert rolled.history.column("train_loss") == clean.history.column("train_loss")
    for a, b in zip(rolled.raw_model.parameters(), clean.raw_model.parameters()):
        assert torch.equal(a, b)


def test_rollback_gives_up_after_max_rollbacks(corpus, tmp_path) -> None:
    config = TrainConfig(max_iters=12, eval_interval=5, on_nonfinite="rollback", max_rollbacks=3, **_CFG)
    trainer = _trainer(corpus, config, out_dir=tmp_path / "run")
    inject_nan_loss(trainer, {8}, times=100)
    with pytest.raises(TrainingDivergedError, match=r"at step 8 .*Gave up after 3 rollback\(s\)"):
        trainer.train()
    assert [r["restored_step"] for r in trainer.rollbacks] == [5, 5, 5]
    assert trainer.config.lr == pytest.approx(1e-3 / 8)
    assert ckpt.load_checkpoint(tmp_path / "run").trainer_state["step"] == 5


def test_stop_policy_raises_naming_the_step(corpus) -> None:
    trainer = _trainer(corpus, TrainConfig(max_iters=12, eval_interval=5, **_CFG))
    inject_nan_loss(trainer, {8}, times=1)
    with pytest.raises(TrainingDivergedError, match=r"training loss became nan at step 8\b"):
        trainer.train()
    assert trainer.rollbacks == []


# ==================================================================================== 4. one writer
def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_a_second_writer_is_refused_while_the_first_runs(corpus, tmp_path, capsys) -> None:
    run = tmp_path / "run"
    run.mkdir()
    with RunLock(run) as lock:  # stands in for a live training process
        assert json.loads(lock.path.read_text())["pid"] == os.getpid()
        code = main(_train_argv(corpus, run, "--max-iters", "5"))
        err = capsys.readouterr().err
        assert code == 2 and "Traceback" not in err
        assert f"in use by another training run (pid {os.getpid()}" in err
        assert lock.path.exists()  # the refused run did not remove someone else's lock
        with pytest.raises(CheckpointError, match="in use by another training run"):
            RunLock(run).acquire()
    assert not (run / LOCK_FILE).exists()
    assert main(_train_argv(corpus, run, "--max-iters", "5")) == 0  # free again once released


@pytest.mark.slow
def test_second_resume_into_a_running_run_is_refused(corpus, tmp_path, capsys) -> None:
    run = tmp_path / "run"
    proc = _spawn(_train_argv(corpus, run, "--max-iters", "100000", "--eval-interval", "20"))
    try:
        _wait_for_file(run / ckpt.CHECKPOINT_FILE, proc)

        def settled() -> list[str]:  # the live run writes temp files (.NAME.tmp...) at its own pace
            return sorted(p.name for p in run.iterdir() if not (p.name.startswith(".") and ".tmp" in p.name))

        before = settled()
        code = main(["train", "--data", str(corpus), "--out", str(run), "--resume", *FAST])
        err = capsys.readouterr().err
        assert code == 2 and "Traceback" not in err
        assert f"in use by another training run (pid {proc.pid}" in err
        assert settled() == before  # the refused run added and removed nothing (its temp files: below)
    finally:
        proc.terminate()
        assert proc.wait(timeout=TIMEOUT) == 0
    assert _leftovers(run) == []


def test_a_lock_left_by_a_dead_process_does_not_block(tmp_path) -> None:
    run = tmp_path / "run"
    run.mkdir()
    (run / LOCK_FILE).write_text(json.dumps({"pid": _dead_pid(), "host": socket.gethostname()}))
    with RunLock(run) as lock:
        assert json.loads(lock.path.read_text())["pid"] == os.getpid()
    assert not (run / LOCK_FILE).exists()


def test_a_lock_file_replaced_while_being_locked_is_locked_again(tmp_path, monkeypatch) -> None:
    """Catches a lock taken on a file the previous holder unlinked between our open() and our flock():
    that orphaned file locks nothing, and the next writer would lock the new file at the path, so two
    runs would write one directory. The unlink is simulated once, just before the first flock."""
    from arlm_lib import rundir

    run = tmp_path / "run"
    run.mkdir()
    real_flock, calls = rundir.fcntl.flock, []

    def flock_after_the_holder_left(fd, op):
        if not calls:
            (run / LOCK_FILE).unlink()  # the previous holder releases: unlink, then close
        calls.append(fd)
        return real_flock(fd, op)

    monkeypatch.setattr(rundir.fcntl, "flock", flock_after_the_holder_left)
    lock = RunLock(run).acquire()
    monkeypatch.undo()
    try:
        assert len(calls) == 2  # retried on the file now at the path
        assert os.fstat(lock._fd).st_ino == os.stat(run / LOCK_FILE).st_ino
        with pytest.raises(CheckpointError, match="in use by another training run"):
            RunLock(run).acquire()
    finally:
        lock.release()


def test_resuming_a_directory_without_a_checkpoint_is_refused(tmp_path) -> None:
    """Catches prepare_run_dir(resume=True) accepting a directory with nothing to resume from."""
    with pytest.raises(CheckpointError, match=f"--resume was given but .* holds no {ckpt.CHECKPOINT_FILE}"):
        prepare_run_dir(tmp_path, resume=True)


def test_a_longer_stale_lock_file_is_rewritten_whole(tmp_path) -> None:
    """A dead run's lock may hold a longer record than ours: the new owner's record replaces it whole,
    so a refused second writer is told which process holds the directory."""
    run = tmp_path / "run"
    run.mkdir()
    (run / LOCK_FILE).write_text(json.dumps({"pid": _dead_pid(), "host": "a-long-host-name." * 20}))
    with RunLock(run) as lock:
        assert json.loads(lock.path.read_text()) == {"pid": os.getpid(), "host": socket.gethostname()}
        with pytest.raises(CheckpointError, match=f"pid {os.getpid()} on {re.escape(socket.gethostname())}"):
            RunLock(run).acquire()


def test_entering_a_lock_already_held_keeps_it(tmp_path) -> None:
    lock = RunLock(tmp_path).acquire()
    assert lock.acquire() is lock
    with lock:  # ``with`` on a lock taken earlier: no refusal by its own holder
        assert lock.held and (tmp_path / LOCK_FILE).exists()
    assert not lock.held and not (tmp_path / LOCK_FILE).exists()


def test_a_lock_file_that_cannot_be_removed_still_releases_the_lock(tmp_path, monkeypatch) -> None:
    """A directory turned read-only mid-run: release() warns instead of raising, so the error that ended
    the run (say, a failed checkpoint write) is the one the user sees, and the lock is free."""
    run = tmp_path / "run"
    run.mkdir()
    lock = RunLock(run).acquire()
    path_type, real_unlink = type(lock.path), type(lock.path).unlink

    def refuse(path, missing_ok=False):
        if path.name == LOCK_FILE:
            raise PermissionError(errno.EPERM, "Operation not permitted", str(path))
        return real_unlink(path, missing_ok=missing_ok)

    monkeypatch.setattr(path_type, "unlink", refuse)
    with pytest.raises(KeyError, match="the error that ended the run"):
        try:
            raise KeyError("the error that ended the run")
        finally:
            with pytest.warns(
                UserWarning, match=r"could not remove the lock file .*Operation not permitted.*unlocked"
            ):
                lock.release()
    assert not lock.held and (run / LOCK_FILE).exists()
    monkeypatch.undo()
    with RunLock(run) as again:  # the file stayed behind, but nobody holds it
        assert again.held


# ==================================================================================== full disk
def _enospc_after_half(real):
    def save_file(tensors, filename, metadata=None):
        real(tensors, filename, metadata=metadata)
        os.truncate(filename, os.path.getsize(filename) // 2)  # the disk filled up half-way
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), filename)

    return save_file


def test_full_disk_keeps_the_old_checkpoint_and_removes_the_temp_file(tmp_path, monkeypatch) -> None:
    model = _model(vocab_size=10)
    path = ckpt.save_checkpoint(tmp_path / "run", model)
    before = path.read_bytes()
    monkeypatch.setattr(ckpt, "save_file", _enospc_after_half(ckpt.save_file))
    with pytest.raises(CheckpointError, match="No space left on device; the previous checkpoint is intact"):
        ckpt.save_checkpoint(tmp_path / "run", model)
    assert path.read_bytes() == before
    assert sorted(p.name for p in path.parent.iterdir()) == [ckpt.CHECKPOINT_FILE]


def test_a_first_save_on_a_full_disk_says_no_checkpoint_was_written(tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(ckpt, "save_file", _enospc_after_half(ckpt.save_file))
    with pytest.raises(CheckpointError, match="No space left on device; no checkpoint was written"):
        ckpt.save_checkpoint(tmp_path / "run", _model(vocab_size=10))
    assert list((tmp_path / "run").iterdir()) == []


def test_cli_on_a_full_disk_prints_one_line_and_keeps_the_last_checkpoint(
    corpus, tmp_path, monkeypatch, capsys
):
    real, calls = ckpt.save_file, []

    def first_save_works(tensors, filename, metadata=None):
        calls.append(filename)
        save = real if len(calls) == 1 else _enospc_after_half(real)
        save(tensors, filename, metadata=metadata)

    monkeypatch.setattr(ckpt, "save_file", first_save_works)
    run = tmp_path / "run"
    code = main(_train_argv(corpus, run, "--max-iters", "30", "--eval-interval", "10", *WARMUP_10))
    err = capsys.readouterr().err
    assert code != 0 and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1
    assert err.startswith("error: could not write the checkpoint") and "No space left on device" in err
    assert ckpt.load_checkpoint(run).trainer_state["step"] == 10
    assert _leftovers(run) == []


REAL_WRITE_LIMIT_CHILD = textwrap.dedent(
    """
    import resource, signal, sys, torch
    from arlm_lib import checkpoint as ck
    from arlm_lib.errors import CheckpointError
    from arlm_lib.model import GPT, GPTConfig

    torch.manual_seed(0)
    model = GPT(GPTConfig.from_preset("tiny", n_layer=1, n_head=2, n_embd=32, block_size=32, vocab_size=10))
    path = ck.save_checkpoint(sys.argv[1], model)
    # From now on no file may grow past 4 KiB: the next write fails for real, in the kernel.
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (4096, 4096))
    with torch.no_grad():
        model.lm_head.weight.add_(1.0)
    try:
        ck.save_checkpoint(sys.argv[1], model)
    except CheckpointError as exc:
        print(exc)
        sys.exit(7)
    """
)


@pytest.mark.skipif(sys.platform == "win32", reason="RLIMIT_FSIZE is POSIX")
def test_a_real_failed_write_is_one_checkpoint_error(tmp_path) -> None:
    run = tmp_path / "run"
    result = subprocess.run(
        [sys.executable, "-c", REAL_WRITE_LIMIT_CHILD, str(run)],
        capture_output=True,
        text=True,
        env=CHILD_ENV,
        timeout=TIMEOUT,
    )
    assert result.returncode == 7, result.stderr
    assert (
        "could not write the checkpoint" in result.stdout
        and "the previous checkpoint is intact" in result.stdout
    )
    model, _ = ckpt.load_model(run)
    assert torch.equal(model.lm_head.weight, _model(vocab_size=10).lm_head.weight)  # the first save, intact
    assert sorted(p.name for p in run.iterdir()) == [ckpt.CHECKPOINT_FILE]


# ==================================================================================== 7. memory
def _live_tensor_count() -> int:
    gc.collect()
    return sum(1 for obj in gc.get_objects() if issubclass(type(obj), torch.Tensor))


def test_history_is_compact_and_logging_keeps_no_tensors_alive(corpus) -> None:
    records = []

    class Keep(Callback):  # a dashboard that keeps every record it is given
        def on_step_end(self, trainer, record):
            records.append(record)

    trainer = _trainer(corpus, TrainConfig(max_iters=20, eval_interval=10, **_CFG))
    trainer.callbacks.append(Keep())
    trainer.train()
    baseline = _live_tensor_count()
    trainer.config.max_iters = 80
    trainer.train()
    grown = _live_tensor_count() - baseline

    assert len(trainer.history) == 80 and len(records) == 80
    assert all(isinstance(col, array) and col.typecode == "d" for col in trainer.history.columns.values())
    assert all(v is None or type(v) in (int, float) for record in records for v in record.values())
    # 60 more steps, each logged and kept by the callback: a per-step tensor kept alive would add >= 60.
    assert grown < 10, f"{grown} more live tensors after 60 more logged steps"


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="counts open descriptors in Linux's /proc")
def test_releasing_a_run_lock_closes_its_file(tmp_path) -> None:
    """A notebook that trains again and again must not leak one descriptor (and one flock) per run.
    Counts only the descriptors open on the lock file: other threads may open and close files meanwhile."""
    lock_file = str(tmp_path / LOCK_FILE)

    def open_on_the_lock() -> int:
        count = 0
        for fd in os.listdir("/proc/self/fd"):
            try:
                target = os.readlink(f"/proc/self/fd/{fd}")
            except OSError:  # closed between listing and reading
                continue
            count += target.startswith(lock_file)  # "(deleted)" is appended once the file is removed
        return count

    for _ in range(5):
        with RunLock(tmp_path):
            assert open_on_the_lock() == 1
    assert open_on_the_lock() == 0
    assert not (tmp_path / LOCK_FILE).exists()
