"""The trainer: schedule, clipping, history, callbacks, exact resume, divergence."""

import math

import pytest
import torch

from arlm_lib import checkpoint as ckpt
from arlm_lib.data import encode_text, split_train_val
from arlm_lib.errors import ConfigError, TrainingDivergedError
from arlm_lib.model import GPT, GPTConfig
from arlm_lib.tokenizers import CharTokenizer
from arlm_lib.train import Callback, History, TrainConfig, Trainer, lr_at, make_optimizer

TEXT = "the quick brown fox jumps over the lazy dog. a lazy cat naps in the sun.\n" * 300


@pytest.fixture(scope="module")
def data():
    tokenizer = CharTokenizer.train(TEXT)
    train, val = split_train_val(encode_text(TEXT, tokenizer))
    return tokenizer, train, val


def tiny_model(tokenizer, seed=0, dropout=0.1):
    torch.manual_seed(seed)
    return GPT(
        GPTConfig(
            vocab_size=tokenizer.vocab_size, block_size=32, n_layer=2, n_head=2, n_embd=32, dropout=dropout
        )
    )


def config(**kw):
    base = dict(
        batch_size=8,
        max_iters=20,
        eval_interval=10,
        eval_iters=2,
        warmup_iters=3,
        progress=False,
        device="cpu",
    )
    return TrainConfig(**{**base, **kw})


def test_warmup_then_cosine_decay_to_min_lr():
    c = TrainConfig(lr=1.0, min_lr=0.1, warmup_iters=10, max_iters=110)
    lrs = [lr_at(s, c) for s in range(120)]
    assert all(a < b for a, b in zip(lrs[:10], lrs[1:11]))  # increasing during warmup
    assert lrs[10] == pytest.approx(1.0)
    assert lrs[60] == pytest.approx(0.55)  # halfway through the cosine: the mean of lr and min_lr
    assert all(a >= b for a, b in zip(lrs[10:110], lrs[11:111]))
    assert lrs[115] == pytest.approx(0.1)
    assert lr_at(50, TrainConfig(lr=0.3, schedule="constant")) == 0.3


def test_weight_decay_applies_to_matrices_only(data):
    model = tiny_model(data[0])
    groups = make_optimizer(model, TrainConfig(weight_decay=0.1), torch.device("cpu")).param_groups
    decayed = {id(p) for p in groups[0]["params"]}
    for name, p in model.named_parameters():
        assert (id(p) in decayed) == (p.dim() >= 2), name
    assert groups[1]["weight_decay"] == 0.0


def test_training_lowers_the_loss_and_records_history(data):
    tokenizer, train, val = data
    seen = []

    class Recorder(Callback):
        def on_step_end(self, trainer, record):
            seen.append(record["step"])

    trainer = Trainer(
        tiny_model(tokenizer), train, val, config(max_iters=60, lr=3e-3), callbacks=[Recorder()]
    )
    history = trainer.train()
    assert seen == list(range(1, 61))
    assert len(history) == 60
    losses = history.column("train_loss")
    assert sum(losses[-10:]) / 10 < losses[0] - 0.5
    steps, vals = history.evaluated()
    assert steps == [10, 20, 30, 40, 50, 60] and vals[-1] < vals[0]
    assert all(n > 0 for n in history.column("tokens_per_s"))
    assert history.to_dict()["val_loss"][0] is None


def test_clipping_caps_the_norm_and_reports_the_norm_before_clipping(data):
    tokenizer, train, val = data
    trainer = Trainer(tiny_model(tokenizer), train, val, config(max_iters=5, grad_clip=1e-3))
    history = trainer.train()
    before = history.column("grad_norm")
    after = history.column("grad_norm_clipped")
    assert all(b > 1e-3 for b in before)
    assert all(a == pytest.approx(1e-3) for a in after)
    unclipped = Trainer(tiny_model(tokenizer), train, val, config(max_iters=5, grad_clip=None)).train()
    assert unclipped.column("grad_norm") == unclipped.column("grad_norm_clipped")


def test_seeded_cpu_runs_are_reproducible(data):
    tokenizer, train, val = data
    a = Trainer(tiny_model(tokenizer), train, val, config()).train().column("train_loss")
    b = Trainer(tiny_model(tokenizer), train, val, config()).train().column("train_loss")
    c = Trainer(tiny_model(tokenizer), train, val, config(seed=7)).train().column("train_loss")
    assert a == b and a != c


def test_resume_50_plus_50_is_bit_identical_to_100_straight(data, tmp_path):
    tokenizer, train, val = data
    cfg = config(max_iters=100, eval_interval=25)
    straight = Trainer(tiny_model(tokenizer), train, val, cfg, tokenizer, out_dir=tmp_path / "straight")
    straight.train()

    class StopAt50(Callback):
        def on_step_end(self, trainer, record):
            if record["step"] == 50:
                trainer.request_stop()

    first = Trainer(
        tiny_model(tokenizer), train, val, cfg, tokenizer, [StopAt50()], out_dir=tmp_path / "split"
    )
    first.train()
    assert first.step == 50
    second = Trainer.resume(tmp_path / "split", train, val)
    assert second.step == 50
    second.train()
    a, b = straight.raw_model.state_dict(), second.raw_model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert second.history.column("train_loss") == straight.history.column("train_loss")


def test_resume_applies_changed_optimizer_settings(data, tmp_path):
    """A resume that changes weight decay or betas trains with them (the saved groups held the old ones)."""
    tokenizer, train, val = data
    Trainer(
        tiny_model(tokenizer), train, val, config(max_iters=2, weight_decay=0.1), tokenizer, out_dir=tmp_path
    ).train()
    resumed = Trainer.resume(tmp_path, train, val, weight_decay=0.0, beta1=0.5, beta2=0.9)
    decay_group, no_decay_group = resumed.optimizer.param_groups
    assert decay_group["weight_decay"] == 0.0 and no_decay_group["weight_decay"] == 0.0
    assert all(group["betas"] == (0.5, 0.9) for group in resumed.optimizer.param_groups)
    assert resumed.optimizer.state, "the moment estimates must still come from the checkpoint"
    unchanged = Trainer.resume(tmp_path, train, val)
    assert unchanged.optimizer.param_groups[0]["weight_decay"] == 0.1


def test_fp16_loss_scale_survives_a_resume(data, tmp_path):
    """fp16 runs (GPUs without bf16) keep their loss scale across a resume. Simulated on the CPU, where
    PyTorch's GradScaler runs but fp16 autocast is not offered."""
    tokenizer, train, val = data
    first = Trainer(tiny_model(tokenizer), train, val, config(max_iters=2), tokenizer, out_dir=tmp_path)
    first.scaler = torch.amp.GradScaler("cpu", init_scale=4096.0, growth_interval=1)
    first.train()
    scale = first.scaler.get_scale()
    assert scale != 4096.0, "the scale should have grown after clean steps"
    resumed = Trainer.resume(tmp_path, train, val)
    resumed.scaler = torch.amp.GradScaler("cpu")
    resumed.load_state(ckpt.load_checkpoint(tmp_path))
    assert resumed.scaler.get_scale() == scale


class PoisonFrom(Callback):
    """Makes a weight infinite at the end of step ``step`` and every step after it."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_step_end(self, trainer, record):
        if record["step"] >= self.step:
            with torch.no_grad():
                trainer.raw_model.transformer.wte.weight[0, 0] = math.inf


def poisoned_trainer(data, tmp_path, step: int) -> Trainer:
    tokenizer, train, val = data
    return Trainer(
        tiny_model(tokenizer),
        train,
        val,
        config(max_iters=30),
        tokenizer,
        [PoisonFrom(step)],
        out_dir=tmp_path,
    )


def test_nonfinite_loss_stops_with_the_step_and_keeps_the_last_good_checkpoint(data, tmp_path):
    trainer = poisoned_trainer(data, tmp_path, step=12)
    with pytest.raises(TrainingDivergedError, match="step 13.*last good checkpoint is kept"):
        trainer.train()
    saved = ckpt.load_checkpoint(tmp_path)
    assert saved.trainer_state["step"] == 10
    assert all(torch.isfinite(t).all() for t in saved.model_state.values())


def test_divergence_before_the_first_checkpoint_does_not_promise_one(data, tmp_path):
    trainer = poisoned_trainer(data, tmp_path, step=1)
    with pytest.raises(TrainingDivergedError, match="step 2 .*nothing to resume from"):
        trainer.train()


def test_history_is_compact_floats_and_round_trips():
    history = History()
    history.append({"step": 1, "lr": 0.1, "train_loss": 2.0, "val_loss": None})
    history.append({"step": 2, "lr": 0.1, "train_loss": 1.5, "val_loss": 1.7})
    restored = History.from_dict(history.to_dict())
    assert restored.to_dict() == history.to_dict()
    assert restored.evaluated() == ([2], [1.7])
    assert all(col.typecode == "d" for col in history.columns.values())


@pytest.mark.parametrize(
    "kw, match",
    [
        (dict(lr=0), "lr=0"),
        (dict(lr=-1e-3), "lr=-0.001"),
        (dict(lr=math.nan), "lr=nan"),
        (dict(batch_size=0), "batch_size=0"),
        (dict(schedule="step"), "schedule"),
        (dict(grad_clip=-1.0), "grad_clip"),
        (dict(warmup_iters=100, lr_decay_iters=50), "lr_decay_iters=50 .* >= warmup_iters \\(100\\)"),
        (dict(lr_decay_iters=0), "lr_decay_iters=0"),
        (dict(lr_decay_iters=2.5), "lr_decay_iters=2.5"),
    ],
)
def test_bad_hyperparameters_are_named(kw, match):
    with pytest.raises(ConfigError, match=match):
        TrainConfig(**kw)
