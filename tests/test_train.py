"""The trainer: schedule, clipping, history, callbacks, exact resume, divergence."""

import copy
import math
from fractions import Fraction

import pytest
import torch
from conftest import inject_nan_loss

from arlm_lib import checkpoint as ckpt
from arlm_lib.data import encode_text, get_batch, split_train_val
from arlm_lib.errors import CheckpointError, ConfigError, DataError, DeviceError, TrainingDivergedError
from arlm_lib.model import GPT, GPTConfig
from arlm_lib.tokenizers import CharTokenizer
from arlm_lib.train import (
    Callback,
    History,
    TrainConfig,
    Trainer,
    load_optimizer_state,
    lr_at,
    make_optimizer,
    warn_if_schedule_jumps,
)

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


def test_schedule_values_at_the_warmup_and_decay_boundaries():
    """Closed-form values: warmup rises linearly as lr * (s + 1) / (warmup + 1), so step 0 is not 0
    and the peak is reached at step ``warmup``; the decay ends at ``lr_decay_iters`` exactly."""
    c = TrainConfig(lr=1.0, min_lr=0.1, warmup_iters=10, max_iters=110)
    for s in range(10):
        assert lr_at(s, c) == pytest.approx((s + 1) / 11, rel=1e-12)
    assert lr_at(10, c) == pytest.approx(1.0, rel=1e-12)  # the peak, at the first decay step
    # A quarter and three quarters of the way through the cosine (steps 35 and 85 of 10..110).
    assert lr_at(35, c) == pytest.approx(0.1 + 0.9 * (1 + math.sqrt(0.5)) / 2, rel=1e-12)
    assert lr_at(85, c) == pytest.approx(0.1 + 0.9 * (1 - math.sqrt(0.5)) / 2, rel=1e-12)
    assert lr_at(109, c) > 0.1 and lr_at(109, c) == pytest.approx(0.1, abs=1e-3)
    assert lr_at(110, c) == lr_at(10_000, c) == 0.1  # from lr_decay_iters (default max_iters) on: min_lr

    linear = TrainConfig(
        lr=2.0, min_lr=0.0, warmup_iters=4, max_iters=100, lr_decay_iters=24, schedule="linear"
    )
    assert [lr_at(s, linear) for s in range(4)] == pytest.approx([0.4, 0.8, 1.2, 1.6], rel=1e-12)
    assert [lr_at(s, linear) for s in (4, 9, 14, 19)] == pytest.approx([2.0, 1.5, 1.0, 0.5], rel=1e-12)
    assert lr_at(24, linear) == lr_at(99, linear) == 0.0  # lr_decay_iters, not max_iters, ends the decay

    default_floor = TrainConfig(lr=3e-3, warmup_iters=0, max_iters=50)
    assert lr_at(0, default_floor) == pytest.approx(3e-3, rel=1e-12)  # no warmup: start at the peak
    assert lr_at(50, default_floor) == pytest.approx(3e-4, rel=1e-12)  # min_lr defaults to lr / 10
    assert lr_at(0, TrainConfig(lr=0.3, warmup_iters=10, schedule="constant")) == 0.3  # no warmup either


def test_a_linear_schedule_ends_at_min_lr_not_at_zero():
    """Catches a linear decay that heads for 0 instead of min_lr: the rate would fall below min_lr just
    before lr_decay_iters and then jump back up to it. By hand, with lr 2.0, min_lr 0.5, no warmup and
    lr_decay_iters 10: step s is at 2.0 - (s / 10) * (2.0 - 0.5) = 2.0 - 0.15 s."""
    c = TrainConfig(lr=2.0, min_lr=0.5, warmup_iters=0, max_iters=20, lr_decay_iters=10, schedule="linear")
    assert [lr_at(s, c) for s in (0, 5, 9)] == pytest.approx([2.0, 1.25, 0.65], rel=1e-12)
    lrs = [lr_at(s, c) for s in range(20)]
    assert min(lrs) == lrs[10] == lrs[19] == 0.5  # never below the floor, and flat from lr_decay_iters on


def test_the_schedule_jump_warning_advises_the_saved_runs_decay_end():
    """Catches advice computed from the resumed settings: following it must give back the saved rate.
    A 10-step run (decay to max_iters) resumed at step 6 with max_iters=20 stretches the cosine; the
    warning must say lr_decay_iters=10, and with that setting the rate at step 6 is the saved one."""
    saved = TrainConfig(lr=1.0, min_lr=0.1, warmup_iters=2, max_iters=10)
    resumed = TrainConfig(lr=1.0, min_lr=0.1, warmup_iters=2, max_iters=20)
    with pytest.warns(RuntimeWarning, match=r"set lr_decay_iters=10 \(--lr-decay-iters 10\)"):
        warn_if_schedule_jumps(saved, resumed, step=6)
    advised = TrainConfig(lr=1.0, min_lr=0.1, warmup_iters=2, max_iters=20, lr_decay_iters=10)
    assert lr_at(6, advised) == lr_at(6, saved)


def test_the_schedule_jump_warning_gives_no_decay_advice_when_lr_or_schedule_changed():
    """lr_decay_iters cannot carry on a decay the typed lr or a constant schedule replaced: the warning
    names the change instead of advising a setting that would not help."""
    saved = TrainConfig(lr=1.0, min_lr=0.1, warmup_iters=2, max_iters=10)
    for resumed in (
        TrainConfig(lr=0.5, min_lr=0.05, warmup_iters=2, max_iters=10),
        TrainConfig(lr=1.0, warmup_iters=2, max_iters=20, schedule="constant"),
    ):
        with pytest.warns(RuntimeWarning) as caught:
            warn_if_schedule_jumps(saved, resumed, step=6)
        (message,) = [str(w.message) for w in caught]
        assert "lr_decay_iters" not in message
        assert f"lr 1 -> {resumed.lr:g}, schedule cosine -> {resumed.schedule}" in message


def test_a_run_no_longer_than_its_warmup_warns_that_it_never_reaches_lr(data, recwarn):
    """TrainConfig(max_iters=50) keeps the default 100-step warmup: the run ends at half of lr and
    never decays. Said once when train() starts; nothing when the warmup ends in time, or for the
    constant schedule, which has none."""
    tokenizer, train, val = data
    short = config(max_iters=4, warmup_iters=100, eval_interval=4, eval_iters=1)
    with pytest.warns(
        RuntimeWarning, match=r"warmup_iters=100 \(--warmup-iters\) is not below max_iters=4"
    ) as caught:
        Trainer(tiny_model(tokenizer), train, val, short).train()
    assert "(3.96e-05, 4% of lr=0.001)" in str(caught[0].message)  # lr_at(3) = 1e-3 * 4 / 101
    recwarn.clear()
    for fine in (config(max_iters=4, warmup_iters=3, eval_interval=4, eval_iters=1),
                 config(max_iters=4, warmup_iters=100, schedule="constant", eval_interval=4, eval_iters=1)):  # fmt: skip
        Trainer(tiny_model(tokenizer), train, val, fine).train()
    assert not [w for w in recwarn if "warmup" in str(w.message)]


@pytest.mark.parametrize(
    "field, value, match",
    [
        ("lr", -1.0, r"lr=-1.0 is not allowed"),
        ("max_iters", 0, r"max_iters=0 is not allowed"),
        ("device", "cuda", r"changed device from 'cpu' to 'cuda' after the Trainer was built"),
        ("weight_decay", 0.0, r"changed weight_decay from 0.1 to 0.0"),
    ],
)
def test_train_checks_a_trainer_config_changed_after_the_trainer_was_built(data, field, value, match):
    """The docstring says to change ``trainer.config`` to train on, and a dataclass checks nothing set
    after it was built: a negative lr trained (and went uphill) without a word, and a new device or
    weight decay, read only when the trainer is built, would silently do nothing."""
    tokenizer, train, val = data
    trainer = Trainer(tiny_model(tokenizer), train, val, config(max_iters=2))
    setattr(trainer.config, field, value)
    weights = [p.detach().clone() for p in trainer.raw_model.parameters()]
    with pytest.raises(ConfigError, match=match):
        trainer.train()
    assert trainer.step == 0
    assert all(torch.equal(w, p) for w, p in zip(weights, trainer.raw_model.parameters()))
    setattr(trainer.config, field, getattr(config(max_iters=2), field))
    trainer.config.max_iters = 3  # the change the docstring means
    trainer.train()
    assert trainer.step == 3


@pytest.mark.parametrize(
    "arguments, match",
    [
        (dict(model=torch.nn.Linear(3, 3)), r"model must be an arlm_lib GPT, got Linear"),
        (
            dict(tokenizer=[Callback()]),
            r"tokenizer must be .* got list \(callbacks go in callbacks=\[...\]\)",
        ),
        (dict(callbacks=Callback()), r"callbacks must be a list of Callback objects, got Callback \(for one"),
        (
            dict(callbacks=TrainConfig()),
            r"callbacks got a TrainConfig: Trainer.resume takes its changes as keyword",
        ),
    ],
    ids=["model", "callbacks-as-tokenizer", "one-callback", "config-as-callbacks"],
)
def test_arguments_in_the_wrong_place_are_named(data, arguments, match):
    tokenizer, train, val = data
    given = dict(model=tiny_model(tokenizer), tokenizer=tokenizer, callbacks=()) | arguments
    with pytest.raises(ConfigError, match=match):
        Trainer(given["model"], train, val, config(), given["tokenizer"], given["callbacks"])


def test_the_optimizer_steps_with_the_scheduled_lr_and_the_clipped_gradients(data):
    """What reaches AdamW, not what the history says: every parameter group gets lr_at(step), and the
    gradients it sees have global norm grad_clip (or their own norm, unclipped, when clipping is off)."""
    tokenizer, train, val = data

    def observed(trainer):
        seen = []
        step = trainer.optimizer.step

        def spy(*args, **kwargs):
            grads = [p.grad for p in trainer.raw_model.parameters() if p.grad is not None]
            norm = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads])).item()
            seen.append(([g["lr"] for g in trainer.optimizer.param_groups], norm))
            return step(*args, **kwargs)

        trainer.optimizer.step = spy
        return seen

    cfg = config(max_iters=6, warmup_iters=2, lr_decay_iters=5, lr=1e-2, min_lr=1e-3, grad_clip=1e-3)
    clipped = Trainer(tiny_model(tokenizer), train, val, cfg)
    seen = observed(clipped)
    history = clipped.train()
    assert len(seen) == 6
    for step, (lrs, norm) in enumerate(seen):
        assert lrs == [lr_at(step, cfg)] * 2
        assert norm == pytest.approx(1e-3, rel=1e-4)
    assert len({lrs[0] for lrs, _ in seen}) == 6 and seen[-1][0] == [1e-3] * 2  # warmup, decay, min_lr
    assert all(n > 1e-2 for n in history.column("grad_norm"))  # so clipping had work to do

    free = Trainer(tiny_model(tokenizer), train, val, config(max_iters=3, grad_clip=None))
    seen = observed(free)
    history = free.train()
    assert [norm for _, norm in seen] == pytest.approx(history.column("grad_norm"), rel=1e-5)
    assert all(norm > 1e-2 for _, norm in seen)


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


def test_training_does_not_depend_on_the_global_rng_before_the_trainer(data):
    """The trainer seeds torch's global RNG (dropout's) with config.seed: whatever drew random numbers
    before it was built (a notebook cell, another model's init) must not change the run."""
    tokenizer, train, val = data
    runs = []
    for draws in (0, 5):
        model = tiny_model(tokenizer, dropout=0.3)
        torch.rand(draws)  # someone else's random numbers, between building the model and the trainer
        trainer = Trainer(model, train, val, config(batch_size=4, max_iters=3, eval_iters=1))
        runs.append(trainer.train().column("train_loss"))
    assert runs[0] == runs[1]


def test_train_switches_a_model_left_in_eval_mode_to_training_mode(data):
    """A model handed over in eval mode (after a look at its samples, say) still trains with dropout
    on: train() sets training mode; only evaluation runs in eval mode."""
    tokenizer, train, val = data
    model = tiny_model(tokenizer, dropout=0.3).eval()
    trainer = Trainer(model, train, val, config(max_iters=2, eval_interval=10, eval_iters=1))
    modes = []
    model.register_forward_pre_hook(lambda module, args: modes.append(module.training))
    trainer.train()
    assert modes == [True, True, False]  # two training steps, then the final evaluation
    assert model.training


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


def test_a_nonfinite_gradient_with_a_finite_loss_stops_before_the_update(data):
    """Without a loss scaler, an inf gradient norm is a divergence even where the loss is finite (an
    overflow in the backward pass): the step must raise before AdamW turns the weights into NaN."""
    tokenizer, train, val = data
    trainer = Trainer(tiny_model(tokenizer), train, val, config(batch_size=4, max_iters=3))
    weight = trainer.raw_model.transformer.wpe.weight
    weight.register_hook(lambda grad: torch.full_like(grad, math.inf) if trainer.step == 1 else grad)
    with pytest.raises(TrainingDivergedError, match=r"gradient norm became inf at step 2"):
        trainer.train()
    assert trainer.step == 1 and math.isfinite(trainer.history.column("train_loss")[0])
    assert all(torch.isfinite(p).all() for p in trainer.raw_model.parameters())


@pytest.mark.parametrize(
    "settings, advice, not_advised",
    [
        (dict(grad_clip=1.0, warmup_iters=5), r"Lower the learning rate \(--lr\); gradient clipping is already on \(--grad-clip 1\)", "warmup"),
        (dict(grad_clip=0.5, warmup_iters=0), r"add warmup \(--warmup-iters\); .*already on \(--grad-clip 0.5\)", "turn"),
        (dict(grad_clip=None, warmup_iters=5), r"or turn gradient clipping on \(--grad-clip 1.0\)", "already on"),
    ],
)  # fmt: skip
def test_divergence_advice_fits_the_run(data, tmp_path, settings, advice, not_advised):
    """The error says what to change for this run: clipping is on by default, so it is not always the cure."""
    tokenizer, train, val = data
    trainer = Trainer(tiny_model(tokenizer), train, val, config(max_iters=30, **settings), tokenizer,
                      [PoisonFrom(3)], out_dir=tmp_path)  # fmt: skip
    with pytest.raises(TrainingDivergedError, match=advice) as caught:
        trainer.train()
    assert not_advised not in str(caught.value)


def test_history_is_compact_floats_and_round_trips():
    history = History()
    history.append({"step": 1, "lr": 0.1, "train_loss": 2.0, "val_loss": None})
    history.append({"step": 2, "lr": 0.1, "train_loss": 1.5, "val_loss": 1.7})
    restored = History.from_dict(history.to_dict())
    assert restored.to_dict() == history.to_dict()
    assert restored.evaluated() == ([2], [1.7])
    assert all(col.typecode == "d" for col in history.columns.values())


def test_a_history_missing_a_column_keeps_its_rows_aligned():
    """A column a checkpoint did not record (say, from an older version) was left empty: rows() was cut
    to zero rows, and the next value appended to it was filed under step 1."""
    saved = {"step": [1, 2, 3], "lr": [0.1, 0.1, 0.1], "train_loss": [3.0, 2.5, 2.0]}  # no elapsed_s, mfu...
    history = History.from_dict(saved)
    assert [row["step"] for row in history.rows()] == [1, 2, 3]
    assert all(math.isnan(row["elapsed_s"]) for row in history.rows())
    history.append({"step": 4, "lr": 0.1, "train_loss": 1.8, "elapsed_s": 9.0})
    assert history.rows()[-1]["step"] == 4 and history.rows()[-1]["elapsed_s"] == 9.0
    with pytest.raises(ValueError, match="different lengths"):
        History.from_dict({**saved, "lr": [0.1]})


@pytest.mark.parametrize(
    "kw, match",
    [
        (dict(lr=0), "lr=0"),
        (dict(lr=-1e-3), "lr=-0.001"),
        (dict(lr=math.nan), "lr=nan"),
        (dict(batch_size=0), "batch_size=0"),
        (dict(schedule="step"), "schedule"),
        (dict(grad_clip=-1.0), "grad_clip"),
        (
            dict(warmup_iters=100, lr_decay_iters=50),
            r"lr_decay_iters=50 \(--lr-decay-iters\) .* >= warmup_iters \(--warmup-iters, here 100\)",
        ),
        (dict(lr_decay_iters=0), "lr_decay_iters=0"),
        (dict(lr_decay_iters=2.5), "lr_decay_iters=2.5"),
    ],
)
def test_bad_hyperparameters_are_named(kw, match):
    with pytest.raises(ConfigError, match=match):
        TrainConfig(**kw)


@pytest.mark.parametrize(
    "kw, match",
    [
        (dict(weight_decay=math.nan), "weight_decay=nan"),
        (dict(weight_decay=math.inf), "weight_decay=inf"),
        (dict(beta1=1.5), "beta1=1.5"),
        (dict(beta2=-0.1), "beta2=-0.1"),
        (dict(beta2=1.0), "beta2=1.0"),
        (dict(warmup_iters=2.5), "warmup_iters=2.5"),
        (dict(warmup_iters=True), "warmup_iters=True"),
    ],
)
def test_optimizer_hyperparameters_are_validated_up_front(kw, match):
    with pytest.raises(ConfigError, match=match):
        TrainConfig(**kw)


# ----------------------------------------------------------------------------- the GPU path, on the CPU
def test_a_training_step_reads_the_device_once_however_many_micro_steps(data, monkeypatch):
    """Each host read (``.item()``, ``.tolist()``) waits for the GPU to drain its queue and leaves it idle
    until the next launch; the loss and gradient norm of a step are fetched together, once."""
    tokenizer, train, val = data
    trainer = Trainer(tiny_model(tokenizer), train, val, config(grad_accum_steps=3))
    # Fused AdamW, as on CUDA (the CPU's default AdamW reads each step counter; the fused one reads none).
    trainer.optimizer = torch.optim.AdamW(trainer.raw_model.parameters(), fused=True)
    reads = []
    for name in ("item", "tolist"):
        original = getattr(torch.Tensor, name)

        def counted(self, *args, _original=original, _name=name, **kwargs):
            reads.append(_name)
            return _original(self, *args, **kwargs)

        monkeypatch.setattr(torch.Tensor, name, counted)
    records = [trainer._train_step() for _ in range(3)]
    assert len(reads) == 3, reads
    assert all(math.isfinite(r["train_loss"]) and r["grad_norm"] > 0 for r in records)


def test_an_fp16_rollback_leaves_the_loss_scaler_ready_for_the_next_step(data, tmp_path):
    """fp16's GradScaler (simulated on the CPU) unscales before the non-finite check; an abandoned step
    must close that unscale, or the next step's is refused ("unscale_() has already been called")."""
    tokenizer, train, val = data
    cfg = config(max_iters=8, eval_interval=3, on_nonfinite="rollback")
    trainer = Trainer(tiny_model(tokenizer), train, val, cfg, tokenizer, out_dir=tmp_path)
    trainer.scaler = torch.amp.GradScaler("cpu", init_scale=1024.0)
    inject_nan_loss(trainer, {5})
    history = trainer.train()
    assert trainer.rollbacks == [{"step": 5, "restored_step": 3, "lr": cfg.lr / 2}]
    assert trainer.config.lr == cfg.lr / 2 and cfg.lr == config().lr  # the caller's config is untouched
    assert trainer.step == 8 and all(math.isfinite(v) for v in history.column("train_loss"))


def test_a_rollback_halves_the_whole_schedule_min_lr_included(data):
    """A rollback halves lr and an explicit min_lr alike: the decay must not end above the new peak's
    floor (min_lr=None follows lr / 10 by itself). The redone steps follow lr_at of the halved config."""
    from dataclasses import replace

    tokenizer, train, val = data
    cfg = config(
        batch_size=4, max_iters=6, eval_interval=2, eval_iters=1, lr=1e-2, min_lr=1e-3, lr_decay_iters=4,
        on_nonfinite="rollback",
    )  # fmt: skip
    trainer = Trainer(tiny_model(tokenizer), train, val, cfg)
    inject_nan_loss(trainer, {4})
    history = trainer.train()
    assert trainer.rollbacks == [{"step": 4, "restored_step": 2, "lr": 5e-3}]
    assert (trainer.config.lr, trainer.config.min_lr) == (5e-3, 5e-4)
    halved = replace(cfg, lr=5e-3, min_lr=5e-4)
    assert history.column("lr") == [lr_at(s, cfg) for s in range(2)] + [lr_at(s, halved) for s in range(2, 6)]
    assert history.column("lr")[-2:] == [5e-4, 5e-4]  # past lr_decay_iters: the halved floor


@pytest.mark.parametrize("interrupt_at", ["backward", "host read"])
def test_an_interrupted_step_leaves_the_trainer_ready_for_the_next(data, monkeypatch, interrupt_at):
    """Ctrl-C in a notebook lands where a step waits: on CUDA, at the step's host read, after the fp16
    gradients were unscaled. The next step must neither be refused by the loss scaler ("unscale_() has
    already been called") nor add its gradients onto the abandoned ones, and the dropped step must not
    count towards growing the loss scale (here after every clean step)."""
    tokenizer, train, val = data
    trainer = Trainer(tiny_model(tokenizer), train, val, config(max_iters=4))
    trainer.scaler = torch.amp.GradScaler("cpu", init_scale=1024.0, growth_interval=1)
    target = (torch.Tensor, "backward") if interrupt_at == "backward" else (torch.Tensor, "tolist")
    original = getattr(*target)

    def interrupted(self, *args, **kwargs):
        if interrupt_at == "backward":
            original(self, *args, **kwargs)  # the gradients exist, then the interrupt arrives
        raise KeyboardInterrupt

    monkeypatch.setattr(*target, interrupted)
    weights = [p.detach().clone() for p in trainer.raw_model.parameters()]
    with pytest.raises(KeyboardInterrupt):
        trainer._train_step()
    monkeypatch.setattr(*target, original)
    assert all(p.grad is None for p in trainer.raw_model.parameters())
    assert all(torch.equal(w, p) for w, p in zip(weights, trainer.raw_model.parameters()))
    assert trainer.scaler.state_dict()["scale"] == 1024.0
    assert trainer.scaler.state_dict()["_growth_tracker"] == 0
    history = trainer.train()  # what a reader does after interrupting the kernel: run the cell again
    assert trainer.step == 4 and list(history.column("step")) == [1, 2, 3, 4]
    assert trainer.scaler.get_scale() == 1024.0 * 2**4  # the four clean steps, and nothing else, grew it
    assert all(math.isfinite(v) for v in history.column("train_loss"))


def test_a_cpu_checkpoint_resumed_with_fused_adamw_puts_the_step_counters_by_the_weights(data, tmp_path):
    """On CUDA the trainer's AdamW is fused, and the fused kernel needs its step counters on the GPU. A
    checkpoint saved on the CPU (not fused: counters on the CPU) must be loaded by this run's ``fused``
    flag, not the saved one. Simulated with the weights on the meta device standing in for the GPU."""
    tokenizer, train, val = data
    Trainer(tiny_model(tokenizer), train, val, config(max_iters=2), tokenizer, out_dir=tmp_path).train()
    saved = ckpt.load_checkpoint(tmp_path).optimizer_state
    assert not any(group.get("fused") for group in saved["param_groups"])

    with torch.device("meta"):  # built there: moving it would untie the tied embedding and head
        model = tiny_model(tokenizer)
    optimizer = make_optimizer(model, TrainConfig(weight_decay=0.05), torch.device("cpu"))
    for group in optimizer.param_groups:
        group["fused"] = True  # what make_optimizer sets on CUDA (the meta device has no fused kernel)
    load_optimizer_state(optimizer, saved)
    states = list(optimizer.state.values())
    assert len(states) == len(list(model.parameters()))
    for state in states:
        assert state["step"].device.type == "meta" and state["step"].dtype == torch.float32
        assert state["exp_avg"].device.type == "meta"
    assert all(group["fused"] for group in optimizer.param_groups)  # this run's settings, not the saved
    assert optimizer.param_groups[0]["weight_decay"] == 0.05


def test_an_optimizer_state_for_another_model_is_a_checkpoint_error_naming_the_mismatch(data, tmp_path):
    tokenizer, train, val = data
    Trainer(tiny_model(tokenizer), train, val, config(max_iters=1), tokenizer, out_dir=tmp_path).train()
    saved = ckpt.load_checkpoint(tmp_path).optimizer_state
    model = tiny_model(tokenizer)
    one_group = torch.optim.AdamW(model.parameters())
    with pytest.raises(CheckpointError, match="has 2 parameter group.* and this optimizer 1"):
        load_optimizer_state(one_group, saved)
    regrouped = torch.optim.AdamW(
        [{"params": list(model.parameters())[:3]}, {"params": list(model.parameters())[3:]}]
    )
    with pytest.raises(CheckpointError, match="does not fit this model"):
        load_optimizer_state(regrouped, saved)


def test_rank_zero_evaluates_the_global_batch_in_per_rank_pieces(data):
    """Under DDP rank 0 evaluates alone, on the global batch: in one piece, its logits alone could exceed
    the GPU that trains 1/world_size of it. It goes through in per-rank pieces; the mean is unchanged."""
    tokenizer, train, val = data
    trainer = Trainer(tiny_model(tokenizer), train, val, config(batch_size=8))
    whole = trainer.evaluate(iters=2)
    rows = []
    trainer.raw_model.register_forward_pre_hook(lambda module, args: rows.append(args[0].size(0)))
    trainer.world_size = 4  # what evaluate sees on rank 0 of a 4-rank job
    pieces = trainer.evaluate(iters=2)
    assert rows == [2] * 8
    assert pieces == pytest.approx(whole, rel=1e-6)


# ---------------------------------------------------------------------------- interrupts after the update
def _reference_weights(data, steps):
    tokenizer, train, val = data
    trainer = Trainer(
        tiny_model(tokenizer, dropout=0.0), train, val, config(max_iters=steps, eval_interval=4)
    )
    trainer.train()
    return [p.detach().clone() for p in trainer.raw_model.parameters()], trainer.history


@pytest.mark.parametrize("where", ["evaluation", "after the optimizer step", "inside the optimizer step"])
def test_an_interrupt_after_the_update_neither_loses_nor_redoes_the_step(data, monkeypatch, where):
    """The update is applied, then Ctrl-C arrives: in the evaluation, (on CUDA) in the wait for the
    optimizer's kernels, or (on the CPU) inside optimizer.step() itself, at its first Python line after
    the kernels that changed the weights. Calling train() again must record that step once, evaluate
    it, and not take it again: the run ends with the weights and history of an uninterrupted one."""
    tokenizer, train, val = data
    expected_weights, expected = _reference_weights(data, 8)
    trainer = Trainer(tiny_model(tokenizer, dropout=0.0), train, val, config(max_iters=8, eval_interval=4))
    import arlm_lib.train as train_module

    calls = {"n": 0}
    hook = None
    if where == "inside the optimizer step":

        def interrupt_third_update(optimizer, args, kwargs):  # runs after the update, inside step()
            calls["n"] += 1
            if calls["n"] == 3:
                raise KeyboardInterrupt

        hook = trainer.optimizer.register_step_post_hook(interrupt_third_update)
    else:
        target = (Trainer, "evaluate") if where == "evaluation" else (train_module, "synchronize")
        original = getattr(*target)

        def interrupted(*args, **kwargs):
            calls["n"] += 1
            if (where == "evaluation" and calls["n"] == 1) or (where != "evaluation" and calls["n"] == 3):
                raise KeyboardInterrupt
            return original(*args, **kwargs)

        monkeypatch.setattr(*target, interrupted)
    with pytest.raises(KeyboardInterrupt):
        trainer.train()
    assert trainer.step == (4 if where == "evaluation" else 3)  # the applied update is counted
    if hook is not None:
        hook.remove()
        adam_steps = {int(state["step"]) for state in trainer.optimizer.state.values()}
        assert adam_steps == {3}  # AdamW took three updates, and the trainer counted three steps
    history = trainer.train()
    assert list(history.column("step")) == list(range(1, 9))
    assert history.evaluated()[0] == expected.evaluated()[0] == [4, 8]
    assert history.evaluated()[1] == pytest.approx(expected.evaluated()[1])
    assert all(torch.equal(a, b) for a, b in zip(expected_weights, trainer.raw_model.parameters()))


def test_a_rank0_only_callback_may_not_save_a_checkpoint_under_ddp(data, tmp_path):
    """Under DDP on_eval runs on rank 0 alone; a save from there waited at a barrier the other ranks
    never reached, and the run died at the collective timeout (120 s, or 600 s with compile)."""
    tokenizer, train, val = data

    class SaveBest(Callback):
        def on_eval(self, trainer, record):
            trainer.save_checkpoint()

    trainer = Trainer(
        tiny_model(tokenizer),
        train,
        val,
        config(max_iters=2, eval_interval=1),
        callbacks=[SaveBest()],
        out_dir=tmp_path,
    )
    record = {"step": 1, "val_loss": 3.0}
    trainer._call_hook("on_eval", record)  # one process: every rank is here, so saving is fine
    assert ckpt.checkpoint_path(tmp_path).is_file()
    trainer.world_size = 2  # what on_eval sees on rank 0 of two
    with pytest.raises(ConfigError, match=r"on rank 0 only \(world size 2\).*checkpoint_interval"):
        trainer._call_hook("on_eval", record)
    assert not trainer._in_rank0_hook  # cleared again, even after the error


def test_on_train_begin_failing_restores_the_signal_handlers(data):
    import signal

    class Broken(Callback):
        def on_train_begin(self, trainer):
            raise RuntimeError("callback bug")

    tokenizer, train, val = data
    before = signal.getsignal(signal.SIGINT)
    trainer = Trainer(tiny_model(tokenizer), train, val, config(max_iters=2), callbacks=[Broken()])
    with pytest.raises(RuntimeError, match="callback bug"):
        trainer.train(handle_signals=True)
    assert signal.getsignal(signal.SIGINT) is before


# ---------------------------------------------------------------------------- bad input, caught up front
@pytest.mark.parametrize(
    "field, value",
    [
        ("checkpoint_interval", float("nan")),
        ("checkpoint_interval", 2.5),
        ("checkpoint_interval", True),
        ("checkpoint_interval", "10"),
        ("min_lr", "0.1"),
        ("grad_clip", "1"),
        ("grad_clip", float("inf")),
        ("compile", "no"),
        ("progress", "no"),
        ("device", 3),
        ("dtype", None),
        ("lr", 1e39),
        ("lr", float("inf")),
        ("seed", "abc"),
        ("seed", 1.5),
        ("seed", 2**64),
        ("seed", True),
        ("ddp_timeout_s", 0),
        ("lr", Fraction(1, 1000)),  # would pass the range checks, then fail at the checkpoint's JSON
        ("ddp_timeout_s", "60"),
    ],
)
def test_train_config_names_a_bad_field(field, value):
    with pytest.raises(ConfigError, match=f"{field}="):
        TrainConfig(**{field: value})


def test_numpy_values_from_a_sweep_are_stored_as_python_values():
    import json

    import numpy as np

    cfg = TrainConfig(batch_size=np.int64(8), lr=np.float32(0.5), max_iters=np.int32(10), seed=np.uint64(7))
    assert type(cfg.batch_size) is int and type(cfg.lr) is float and type(cfg.seed) is int
    assert TrainConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg  # a checkpoint's round trip


def test_collectives_wait_longer_by_default_when_every_rank_compiles_first():
    assert TrainConfig().collective_timeout_s == 120.0
    assert TrainConfig(compile=True).collective_timeout_s == 600.0
    assert TrainConfig(compile=True, ddp_timeout_s=30).collective_timeout_s == 30.0  # a given value wins


def test_the_largest_seed_trains_and_evaluates(data):
    """torch.manual_seed's whole range is allowed; the evaluation seed (seed + 1) wraps instead of overflowing."""
    tokenizer, train, val = data
    for seed in (2**64 - 1, -(2**63)):
        trainer = Trainer(tiny_model(tokenizer), train, val, config(max_iters=2, eval_interval=1, seed=seed))
        assert math.isfinite(trainer.train().evaluated()[1][-1])


def test_token_streams_are_checked_when_the_trainer_is_built(data):
    tokenizer, train, val = data
    model = tiny_model(tokenizer)
    with pytest.raises(DataError, match=r"validation tokens has 10 tokens.*block_size=32"):
        Trainer(model, train, val[:10], config())
    foreign = train.clone()
    foreign[100] = tokenizer.vocab_size + 5
    with pytest.raises(
        DataError, match=rf"training tokens hold token id {tokenizer.vocab_size + 5}, outside"
    ):
        Trainer(model, foreign, val, config())
    with pytest.raises(DataError, match="integer dtype"):
        Trainer(model, train.float(), val, config())


@pytest.mark.parametrize("iters", [0, -1, 2.5, True])
def test_evaluate_refuses_a_bad_number_of_batches(data, iters):
    tokenizer, train, val = data
    trainer = Trainer(tiny_model(tokenizer), train, val, config())
    with pytest.raises(ConfigError, match=f"iters must be an integer >= 1, got {iters!r}"):
        trainer.evaluate(iters=iters)


def test_resuming_below_the_saved_step_is_refused(data, tmp_path):
    tokenizer, train, val = data
    Trainer(tiny_model(tokenizer), train, val, config(max_iters=6), tokenizer, out_dir=tmp_path).train()
    with pytest.raises(
        ConfigError, match=r"max_iters=3 \(--max-iters\) is below the step the run was saved at \(6\)"
    ):
        Trainer.resume(tmp_path, train, val, max_iters=3)
    with pytest.warns(RuntimeWarning, match="resuming at step 6 .* moves the learning rate"):
        assert Trainer.resume(tmp_path, train, val, max_iters=9).step == 6


@pytest.mark.parametrize(
    "interval, eval_interval, expected",
    [(2, 3, [2, 4, 5]), (None, 3, [3, 5]), (0, 2, [5])],
    ids=["every 2", "default: eval_interval", "0: only at the end"],
)
def test_checkpoints_are_written_every_checkpoint_interval_steps(
    data, tmp_path, interval, eval_interval, expected
):
    """``checkpoint_interval`` sets how often a run is saved, independently of ``eval_interval`` (None:
    every eval_interval steps; 0: only at the end); the end of train() always saves."""
    tokenizer, train, val = data
    cfg = config(
        batch_size=4, max_iters=5, eval_interval=eval_interval, eval_iters=1, checkpoint_interval=interval
    )
    trainer = Trainer(tiny_model(tokenizer), train, val, cfg, tokenizer, out_dir=tmp_path)
    saved_at = []
    original = trainer.save_checkpoint

    def spy():
        original()
        saved_at.append(ckpt.load_checkpoint(tmp_path).trainer_state["step"])

    trainer.save_checkpoint = spy
    trainer.train()
    every = eval_interval if interval is None else interval
    assert saved_at == expected == [s for s in range(1, 5) if every and s % every == 0] + [5]


# ---------------------------------------------------------------------------- what a step computes
def test_gradient_accumulation_averages_the_micro_batches(data):
    """A step's loss and gradient are those of the mean over its micro-batches, as one big batch."""
    import copy

    from arlm_lib.data import get_batch

    tokenizer, train, val = data
    model = tiny_model(tokenizer, dropout=0.0)
    reference = copy.deepcopy(model)
    cfg = config(batch_size=4, grad_accum_steps=3, grad_clip=None)
    record = Trainer(model, train, val, cfg)._train_step()
    generator = torch.Generator().manual_seed(cfg.seed)  # the trainer's batch stream, replayed
    losses = [reference(x, y).loss for x, y in (get_batch(train, 4, 32, generator) for _ in range(3))]
    mean = torch.stack(losses).mean()
    mean.backward()
    norm = torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in reference.parameters()]))
    assert record["train_loss"] == pytest.approx(mean.item(), rel=1e-5)
    assert record["grad_norm"] == pytest.approx(norm.item(), rel=1e-4)


def test_tokens_per_second_counts_every_micro_batch(data, monkeypatch):
    import types

    from arlm_lib import train as train_module

    tokenizer, train, val = data
    trainer = Trainer(tiny_model(tokenizer), train, val, config(batch_size=4, grad_accum_steps=3))
    clock = iter(range(1000))
    # The trainer's own clock only: other threads keep the real time.perf_counter.
    fake_time = types.SimpleNamespace(perf_counter=lambda: float(next(clock)))
    monkeypatch.setattr(train_module, "time", fake_time)  # 1 s a reading: start, loss read, end of update
    assert trainer._train_step()["tokens_per_s"] == 4 * 3 * 32 / 2


class _QueuedDeviceClock:
    """A fake clock for the trainer (1 s a reading), a device that may be made to count as queued
    (a GPU's), and the steps after which the trainer called synchronize."""

    def __init__(self, monkeypatch, queued: bool) -> None:
        import types

        from arlm_lib import train as train_module

        self.now = 0.0
        self.synced_after: list[int] = []
        self.trainer = None
        monkeypatch.setattr(train_module, "time", types.SimpleNamespace(perf_counter=self.perf_counter))
        monkeypatch.setattr(train_module, "runs_asynchronously", lambda device: queued)
        monkeypatch.setattr(
            train_module, "synchronize", lambda device: self.synced_after.append(self.trainer.step)
        )

    def perf_counter(self) -> float:
        self.now += 1.0
        return self.now


class _SlowCallback(Callback):
    """Host work between steps (a live plot, say): 100 s on the fake clock; optionally a stop request."""

    def __init__(self, clock: _QueuedDeviceClock, stop_after: int | None = None) -> None:
        self.clock, self.stop_after = clock, stop_after

    def on_step_end(self, trainer, record):
        self.clock.now += 100.0
        if record["step"] == self.stop_after:
            self.stop_after = None
            trainer.request_stop()


@pytest.mark.parametrize("queued", [False, True], ids=["cpu", "gpu-like"])
def test_a_queued_device_times_steps_between_loss_reads_without_a_second_sync(
    data, monkeypatch, tmp_path, queued
):
    """On a GPU the host only queues work. Waiting for each update just to time it would idle the GPU
    while the host prepares the next step, so a step is timed from the previous step's loss read to
    its own (both already sync points), and synchronize runs only where that interval would hold
    other work: the first step of train(), and the step after an evaluation or a checkpoint."""
    clock = _QueuedDeviceClock(monkeypatch, queued)
    tokenizer, train, val = data
    clock.trainer = trainer = Trainer(
        tiny_model(tokenizer),
        train,
        val,
        config(max_iters=7, eval_interval=3, checkpoint_interval=4),
        out_dir=tmp_path,
        callbacks=[_SlowCallback(clock)],
    )
    history = trainer.train()
    seconds = [8 * 32 / tps for tps in history.column("tokens_per_s")]
    if queued:
        # Evaluations after steps 3 and 6, a checkpoint after step 4.
        assert clock.synced_after == [1, 4, 5, 7]
        # Steps 2, 3 and 6 are timed from the previous read, so the callback's 100 s count (the GPU
        # waits for the host there); the others are timed by the wait, from their own start.
        assert [s > 100 for s in seconds] == [False, True, True, False, False, True, False]
    else:
        assert clock.synced_after == [1, 2, 3, 4, 5, 6, 7]  # a no-op on the CPU: each step timed alone
        assert all(s < 100 for s in seconds)
    # Training itself is the same either way.
    assert history.column("step") == [1, 2, 3, 4, 5, 6, 7] and history.evaluated()[0] == [3, 6, 7]


def test_a_queued_device_times_by_the_wait_after_a_pause_or_a_failed_step(data, monkeypatch):
    """Neither the time between two train() calls nor a step that failed (rolled back here) is a
    step's time: the step after either is timed by the wait."""
    clock = _QueuedDeviceClock(monkeypatch, queued=True)
    tokenizer, train, val = data
    clock.trainer = trainer = Trainer(
        tiny_model(tokenizer),
        train,
        val,
        config(max_iters=6, eval_interval=100, on_nonfinite="rollback"),
        callbacks=[_SlowCallback(clock, stop_after=2)],
    )
    inject_nan_loss(trainer, {4})
    trainer.train()
    assert trainer.step == 2 and clock.synced_after == [1]
    trainer.train()  # step 3; step 4 fails and rolls back to step 2 (this call's start); 3 again, 4 to 6
    assert len(trainer.rollbacks) == 1
    assert clock.synced_after == [1, 3, 3]


def test_the_last_step_is_evaluated_even_off_the_interval(data):
    tokenizer, train, val = data
    history = Trainer(tiny_model(tokenizer), train, val, config(max_iters=7, eval_interval=5)).train()
    assert history.evaluated()[0] == [5, 7]


@pytest.mark.parametrize("training", [True, False])
def test_evaluate_restores_the_models_mode(data, training):
    tokenizer, train, val = data
    trainer = Trainer(tiny_model(tokenizer), train, val, config())
    trainer.raw_model.train(training)
    trainer.evaluate(iters=1)
    assert trainer.raw_model.training == training


def test_evaluate_restores_the_models_mode_when_it_fails(data, monkeypatch):
    """An out-of-memory error a caller catches (to retry with fewer batches, say) left the model in eval
    mode: the next training steps would run without dropout."""
    tokenizer, train, val = data
    trainer = Trainer(tiny_model(tokenizer), train, val, config())
    trainer.raw_model.train()

    def out_of_memory(*args, **kwargs):
        raise torch.OutOfMemoryError("CUDA out of memory")

    monkeypatch.setattr(trainer.raw_model, "forward", out_of_memory)
    with pytest.raises(torch.OutOfMemoryError):
        trainer.evaluate(iters=1)
    assert trainer.raw_model.training
    with pytest.raises(ConfigError):
        trainer.evaluate(iters=0)
    assert trainer.raw_model.training


# ---------------------------------------------------------------------------- the Python API's guards
@pytest.mark.parametrize("kind", ["file", "run", "other files"])
def test_a_new_trainer_never_overwrites_what_out_dir_holds(data, tmp_path, kind):
    """The command line's --out checks hold for Trainer(out_dir=...): a notes file, another run's
    checkpoint or a directory of someone's files is refused before any step, and left as it was."""
    tokenizer, train, val = data
    if kind == "file":
        out = tmp_path / "notes.txt"
        out.write_text("my notes\n")
        match = "is a file, not a directory"
    elif kind == "run":
        out = tmp_path / "run"
        Trainer(tiny_model(tokenizer), train, val, config(max_iters=2), tokenizer, out_dir=out).train()
        match = r"already holds a checkpoint: continue it with Trainer\.resume"
    else:
        out = tmp_path / "papers"
        out.mkdir()
        (out / "draft.tex").write_text("\\section{}")
        match = "non-empty directory that is not an arlm run"
    before = {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
    with pytest.raises(CheckpointError, match=f"out_dir {out}.*{match}"):
        Trainer(tiny_model(tokenizer), train, val, config(max_iters=2), tokenizer, out_dir=out)
    assert {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()} == before


def test_a_trainer_that_fails_its_checks_leaves_no_out_dir_behind(data, tmp_path):
    tokenizer, train, val = data
    with pytest.raises(DeviceError):
        Trainer(tiny_model(tokenizer), train, val, config(device="cuda:7"), out_dir=tmp_path / "new")
    assert not (tmp_path / "new").exists()
    Trainer(tiny_model(tokenizer), train, val, config(), out_dir=tmp_path / "new")
    assert (tmp_path / "new").is_dir(), "a trainer that passes its checks claims the directory"


def test_train_after_a_stop_continues_the_run(data):
    """An early-stopping callback's stop ends that train() call only; the next call trains on."""

    class StopAt(Callback):
        def on_step_end(self, trainer, record):
            if record["step"] == 3:
                trainer.request_stop()

    tokenizer, train, val = data
    trainer = Trainer(tiny_model(tokenizer), train, val, config(max_iters=6), callbacks=[StopAt()])
    assert trainer.train().column("step") == [1, 2, 3]
    assert trainer.train().column("step") == [1, 2, 3, 4, 5, 6]


def test_a_stop_requested_before_train_gets_going_is_kept(data):
    """A Stop pressed as a run starts (the dashboard starts train() in a thread) ends that run; only a
    stop that already ended a call is forgotten."""
    tokenizer, train, val = data
    trainer = Trainer(tiny_model(tokenizer), train, val, config(max_iters=6))
    trainer.request_stop()
    assert trainer.train().column("step") == [], "the early request was lost"
    assert trainer.train().column("step") == [1, 2, 3, 4, 5, 6]


def test_a_config_that_is_not_a_train_config_is_named(data):
    tokenizer, train, val = data
    with pytest.raises(ConfigError, match="config must be a TrainConfig, got dict"):
        Trainer(tiny_model(tokenizer), train, val, {"batch_size": 8})


def test_callbacks_need_a_hook_and_may_define_only_some(data):
    tokenizer, train, val = data
    with pytest.raises(ConfigError, match=r"callbacks\[0\] .* has none of the hooks on_train_begin"):
        Trainer(tiny_model(tokenizer), train, val, config(), callbacks=[lambda *args: None])

    class EvalsOnly:  # duck-typed: one hook, no Callback base class
        def __init__(self):
            self.steps = []

        def on_eval(self, trainer, record):
            self.steps.append(record["step"])

    evals = EvalsOnly()
    Trainer(
        tiny_model(tokenizer), train, val, config(max_iters=4, eval_interval=2), callbacks=[evals]
    ).train()
    assert evals.steps == [2, 4]


def test_callback_hooks_run_in_order_and_on_train_end_even_when_training_fails(data, tmp_path):
    """on_train_begin, then per step on_step_end (and on_eval on evaluated steps), then on_train_end after
    the final checkpoint; on_train_end also runs when train() raises, so a dashboard can close."""
    tokenizer, train, val = data

    class Log(Callback):
        def __init__(self, fail_at=None):
            self.calls, self.fail_at = [], fail_at

        def on_train_begin(self, trainer):
            self.calls.append(("begin", trainer.step))

        def on_step_end(self, trainer, record):
            self.calls.append(("step", record["step"]))
            if record["step"] == self.fail_at:
                raise RuntimeError("callback bug")

        def on_eval(self, trainer, record):
            self.calls.append(("eval", record["step"]))

        def on_train_end(self, trainer):
            saved = ckpt.load_checkpoint(tmp_path).trainer_state["step"] if self.fail_at is None else None
            self.calls.append(("end", trainer.step, saved))

    cfg = config(batch_size=4, max_iters=3, eval_interval=2, eval_iters=1, checkpoint_interval=0)
    log = Log()
    Trainer(tiny_model(tokenizer), train, val, cfg, tokenizer, [log], out_dir=tmp_path).train()
    expected = [("begin", 0), ("step", 1), ("step", 2), ("eval", 2), ("step", 3), ("eval", 3), ("end", 3, 3)]
    assert log.calls == expected
    failing = Log(fail_at=1)
    with pytest.raises(RuntimeError, match="callback bug"):
        Trainer(tiny_model(tokenizer), train, val, cfg, callbacks=[failing]).train()
    assert failing.calls == [("begin", 0), ("step", 1), ("end", 1, None)]


def test_a_tokenizer_with_more_ids_than_the_model_is_refused(data):
    tokenizer, train, val = data
    small = GPT(GPTConfig(vocab_size=tokenizer.vocab_size - 1, block_size=32, n_layer=1, n_head=2, n_embd=16))
    with pytest.raises(
        ConfigError, match=f"tokenizer has {tokenizer.vocab_size} ids, the model's vocabulary"
    ):
        Trainer(
            small, train % (tokenizer.vocab_size - 1), val % (tokenizer.vocab_size - 1), config(), tokenizer
        )


def test_evaluate_is_the_eval_mode_loss_on_seeded_validation_batches(data):
    """Trainer.evaluate (every history's val_loss) against a written-out mean: the validation stream (not
    the training one), eval mode (dropout off), and batches from a generator seeded with seed + 1."""
    tokenizer, train, _ = data
    val = torch.randint(0, tokenizer.vocab_size, (600,), generator=torch.Generator().manual_seed(9))
    trainer = Trainer(tiny_model(tokenizer), train, val, config(eval_iters=3, seed=5))
    reference = copy.deepcopy(trainer.raw_model).eval()
    generator = torch.Generator().manual_seed(5 + 1)
    with torch.no_grad():
        expected = [reference(*get_batch(val, 8, 32, generator)).loss.item() for _ in range(3)]
    assert trainer.evaluate() == pytest.approx(sum(expected) / 3, rel=1e-6)
    assert trainer.raw_model.training  # and the model is back in training mode


def test_elapsed_seconds_continue_across_a_resume(data, tmp_path):
    """``elapsed_s`` counts training time across resumes: it never goes back, one value per step."""
    tokenizer, train, val = data

    class StopAtTwo(Callback):
        def on_step_end(self, trainer, record):
            if record["step"] == 2:
                trainer.request_stop()

    cfg = config(max_iters=4, eval_interval=2, eval_iters=1)
    Trainer(tiny_model(tokenizer), train, val, cfg, tokenizer, [StopAtTwo()], out_dir=tmp_path).train()
    resumed = Trainer.resume(tmp_path, train, val)
    before = resumed.history.column("elapsed_s")[-1]
    resumed.train()
    elapsed = resumed.history.column("elapsed_s")
    assert len(elapsed) == 4 and all(b >= a for a, b in zip(elapsed, elapsed[1:]))
    assert elapsed[2] >= before > 0


def test_a_constant_schedule_does_not_compare_the_decay_with_the_warmup():
    """lr_decay_iters >= warmup_iters guards a decay that starts after the warmup: a constant schedule
    has neither, so the default warmup of 100 must not be blamed."""
    assert TrainConfig(schedule="constant", lr_decay_iters=10).lr_decay_iters == 10
