"""The GPU-path code exercised on the CPU: MFU accounting, peak-FLOP measurement, bf16 autocast,
``torch.compile`` and its fallback, the MPS fallback probe, and bad devices."""

from __future__ import annotations

import contextlib
import math
import re
import threading
import warnings

import pytest
import torch

from arlm_lib import checkpoint as ckpt
from arlm_lib.cli import main as cli_main
from arlm_lib.data import encode_text, split_train_val
from arlm_lib.device import (
    autocast_context,
    compile_or_warn,
    cpu_threads,
    enable_fast_matmul,
    fall_back_if_ops_missing,
    measure_peak_flops,
    resolve_device,
    resolve_dtype,
    resolve_peak_flops,
    spec_peak_flops,
    synchronize,
    warn_compile_fallback,
)
from arlm_lib.errors import ConfigError, DeviceError
from arlm_lib.model import GPT, GPTConfig
from arlm_lib.tokenizers import CharTokenizer
from arlm_lib.train import TrainConfig, Trainer

TEXT = "the quick brown fox jumps over the lazy dog. a lazy cat naps in the sun.\n" * 200


@pytest.fixture(scope="module")
def data():
    tokenizer = CharTokenizer.train(TEXT)
    train, val = split_train_val(encode_text(TEXT, tokenizer))
    return tokenizer, train, val


def small_model(vocab_size: int, position_encoding: str = "learned") -> GPT:
    torch.manual_seed(0)
    return GPT(
        GPTConfig(
            vocab_size=vocab_size,
            block_size=32,
            n_layer=2,
            n_head=2,
            n_embd=32,
            position_encoding=position_encoding,
        )
    )


def config(**kw) -> TrainConfig:
    base = dict(
        batch_size=4, max_iters=3, eval_interval=3, eval_iters=1, warmup_iters=1, progress=False, device="cpu"
    )
    return TrainConfig(**{**base, **kw})


def losses(trainer: Trainer) -> list[float]:
    return trainer.train().column("train_loss")


# ----------------------------------------------------------------------------- MFU
def test_flops_per_token_matches_a_hand_count():
    # vocab V=10, context T=8, L=2 layers, H=2 heads of Q=2 dims (C=4 wide), with biases.
    model = GPT(GPTConfig(vocab_size=10, block_size=8, n_layer=2, n_head=2, n_embd=4))
    V, T, L, H, Q, C = 10, 8, 2, 2, 2, 4
    token_embedding = V * C  # 40, shared with the output head (weight tying), so counted once
    layer_norm = 2 * C  # gain + bias
    attention = (C * 3 * C + 3 * C) + (C * C + C)  # c_attn 60, c_proj 20
    mlp = (C * 4 * C + 4 * C) + (4 * C * C + C)  # c_fc 80, c_proj 68
    per_block = 2 * layer_norm + attention + mlp  # 244
    n = token_embedding + L * per_block + layer_norm  # 536: positions excluded, final LayerNorm included
    assert n == 536
    # 6N for the matmuls with weights (2 forward + 4 backward FLOPs per weight per token), and
    # 12·L·H·Q·T for the attention scores and the weighted sum of values.
    assert model.flops_per_token() == 6 * 536 + 12 * L * H * Q * T == 3984
    assert model.flops_per_token(seq_len=4) == 6 * 536 + 12 * L * H * Q * 4


def test_the_trainer_logs_mfu_against_the_given_peak(data):
    tokenizer, train, val = data
    model = small_model(tokenizer.vocab_size)
    flops = model.flops_per_token()
    history = Trainer(model, train, val, config(peak_flops=1e9)).train()
    for tps, mfu in zip(history.column("tokens_per_s"), history.column("mfu")):
        assert tps > 0 and mfu == pytest.approx(flops * tps / 1e9, rel=1e-12)
    no_peak = Trainer(small_model(tokenizer.vocab_size), train, val, config()).train()
    assert all(math.isnan(m) for m in no_peak.column("mfu"))


def test_peak_flops_can_be_measured_by_a_matmul(data):
    measured = measure_peak_flops("cpu", size=128, min_time_s=0.02)
    assert math.isfinite(measured) and 1e6 < measured < 1e14  # a CPU: well above 1 MFLOP/s, below 100 TFLOP/s
    rng = torch.get_rng_state()
    assert resolve_peak_flops("auto", torch.device("cpu"), torch.float32) > 0
    assert torch.equal(torch.get_rng_state(), rng)  # measuring never shifts the training RNG
    assert resolve_peak_flops(2e9, torch.device("cpu"), torch.float32) == 2e9
    assert spec_peak_flops("cpu") is None
    tokenizer, train, val = data
    trainer = Trainer(small_model(tokenizer.vocab_size), train, val, config(peak_flops="auto", max_iters=1))
    assert trainer.peak_flops > 0
    assert 0 < trainer.train().column("mfu")[0] < 10


class _MatmulDtypes(torch.overrides.TorchFunctionMode):
    """Records the dtype of every matmul run inside it."""

    def __init__(self):
        super().__init__()
        self.dtypes = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        if getattr(func, "__name__", "") in {"matmul", "__matmul__"}:
            self.dtypes.append(args[0].dtype)
        return func(*args, **(kwargs or {}))


def test_the_peak_is_measured_in_the_dtype_training_computes_in(monkeypatch):
    # bf16 matmuls run several times faster than float32 ones on a GPU: a peak measured in the wrong
    # dtype puts MFU off by that factor.
    from arlm_lib import device

    with _MatmulDtypes() as bf16:
        measure_peak_flops("cpu", dtype=torch.bfloat16, size=8, min_time_s=0)
    with _MatmulDtypes() as default:
        measure_peak_flops("cpu", size=8, min_time_s=0)
    assert bf16.dtypes and set(bf16.dtypes) == {torch.bfloat16}
    assert default.dtypes and set(default.dtypes) == {torch.float32}  # the CPU's training dtype
    asked = []
    monkeypatch.setattr(device, "measure_peak_flops", lambda dev, dtype=None: asked.append(dtype) or 1e9)
    assert resolve_peak_flops("auto", torch.device("cpu"), torch.bfloat16) == 1e9
    assert asked == [torch.bfloat16]


@pytest.mark.parametrize("peak", [-1.0, 0, "fast", math.inf, True])
def test_a_bad_peak_is_refused(peak):
    with pytest.raises(ConfigError, match="peak_flops="):
        TrainConfig(peak_flops=peak)


# ----------------------------------------------------------------------------- autocast
def test_cpu_bf16_autocast_trains_with_finite_loss(data):
    tokenizer, train, val = data
    bf16 = Trainer(small_model(tokenizer.vocab_size), train, val, config(dtype="bfloat16"))
    assert bf16.dtype is torch.bfloat16
    mixed = losses(bf16)
    full = losses(Trainer(small_model(tokenizer.vocab_size), train, val, config(dtype="float32")))
    assert all(math.isfinite(v) for v in mixed)
    # Same weights, same batches: bf16 rounding moves the loss a little, never a lot.
    assert mixed != full  # the autocast path really ran
    assert mixed == pytest.approx(full, rel=0.02)
    with pytest.raises(ConfigError, match="float16"):
        Trainer(small_model(tokenizer.vocab_size), train, val, config(dtype="float16"))


def test_autocast_runs_in_the_chosen_dtype_on_the_devices_own_type():
    assert isinstance(autocast_context(torch.device("cpu"), torch.float32), contextlib.nullcontext)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a CUDA autocast made on a machine without CUDA warns
        fp16 = autocast_context(torch.device("cuda"), torch.float16)
    assert (fp16.device, fp16.fast_dtype) == ("cuda", torch.float16)  # not a CPU autocast, not bf16


def test_tf32_is_switched_on_for_cuda_only():
    # Process-wide switches: a CPU or MPS run must leave them alone. (monkeypatch cannot restore
    # torch.backends.cuda.matmul's attributes, which live behind its __getattr__.)
    matmul, cudnn = torch.backends.cuda.matmul, torch.backends.cudnn
    saved = matmul.allow_tf32, cudnn.allow_tf32
    try:
        matmul.allow_tf32 = cudnn.allow_tf32 = False
        enable_fast_matmul(torch.device("cpu"))
        enable_fast_matmul(torch.device("mps"))
        assert not matmul.allow_tf32 and not cudnn.allow_tf32
        enable_fast_matmul(torch.device("cuda"))
        assert matmul.allow_tf32 and cudnn.allow_tf32
    finally:
        matmul.allow_tf32, cudnn.allow_tf32 = saved


# ----------------------------------------------------------------------------- compile
@pytest.mark.slow
@pytest.mark.parametrize("position_encoding", ["learned", "rope"])
def test_compiled_training_matches_eager_and_its_checkpoint_loads_into_a_plain_model(
    data, tmp_path, position_encoding
):
    tokenizer, train, val = data
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)  # a silent fallback to eager would pass otherwise
        compiled = Trainer(
            small_model(tokenizer.vocab_size, position_encoding),
            train,
            val,
            config(compile=True),
            tokenizer,
            out_dir=tmp_path / "run",
        )
        compiled_losses = losses(compiled)
    assert hasattr(compiled.model, "_orig_mod")  # it really is the compiled module that trained
    eager_losses = losses(Trainer(small_model(tokenizer.vocab_size, position_encoding), train, val, config()))
    assert all(math.isfinite(v) for v in compiled_losses)
    assert compiled_losses == pytest.approx(eager_losses, abs=1e-4)

    saved = ckpt.load_checkpoint(tmp_path / "run")
    assert not any("_orig_mod" in k or k.startswith("module.") for k in saved.model_state)
    model, _ = ckpt.load_model(tmp_path / "run")
    assert type(model) is GPT
    trained = compiled.raw_model.state_dict()
    assert all(torch.equal(v, trained[k]) for k, v in model.state_dict().items())


@pytest.mark.slow
def test_a_compiled_training_step_builds_no_gradient_for_the_logits(data):
    """Compiled, forward and backward are one autograd function: outputs the loss does not use (the
    logits, the hidden states) get zero gradients built and read at every step unless the trainer asks
    the model for the loss alone. For GPT-2 at batch 64 x 1024 that is 6.6 GB of zeros per step."""
    from torch.profiler import ProfilerActivity, profile

    tokenizer, train, val = data
    trainer = Trainer(small_model(tokenizer.vocab_size), train, val, config(compile=True, max_iters=1))
    trainer.train()  # compiles
    trainer.config.max_iters = 2
    with profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof:
        trainer.train()
    logits_shape = [4, 32, tokenizer.vocab_size]
    zero_fills = [e.input_shapes for e in prof.events() if e.name in ("aten::zero_", "aten::fill_")]
    assert zero_fills  # the profile did see the step's fills (attention's gradient buffers among them)
    assert logits_shape not in [shapes[0] for shapes in zero_fills if shapes]


def test_loss_only_returns_the_same_loss_and_gradients_without_the_logits():
    model = small_model(37)
    idx, targets = torch.randint(0, 37, (2, 16)), torch.randint(0, 37, (2, 16))
    full = model(idx, targets)
    full.loss.backward()
    expected = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    lean = model(idx, targets, loss_only=True)
    assert lean.logits is None and lean.hidden_states is None
    lean.loss.backward()
    assert torch.equal(lean.loss, full.loss)
    assert all(torch.equal(p.grad, g) for p, g in zip(model.parameters(), expected))
    with pytest.raises(ConfigError, match="loss_only=True needs targets"):
        model(idx, loss_only=True)


def _broken_compile_at_wrap(*args, **kwargs):
    raise RuntimeError("backend 'inductor' is not available on this machine")


class _BrokenAtFirstCall(torch.nn.Module):
    def __init__(self, model):
        super().__init__()
        self._orig_mod = model

    def forward(self, *args, **kwargs):
        raise RuntimeError("InductorError: C++ compiler not found")


def _broken_backward_compiler(model, **kwargs):
    """A real torch.compile whose forward compiles and whose backward compiler fails: torch compiles the
    backward graph lazily, at the first backward, outside the forward's fallback."""
    from torch._dynamo.backends.common import aot_autograd

    def backward_compiler(graph, example_inputs):
        raise RuntimeError("the backward graph does not compile")

    backend = aot_autograd(
        fw_compiler=lambda graph, example_inputs: graph.forward, bw_compiler=backward_compiler
    )
    return _real_compile(model, backend=backend)


_real_compile = torch.compile


@pytest.mark.parametrize(
    "broken, message",
    [
        (_broken_compile_at_wrap, "backend 'inductor' is not available"),
        (lambda model, **kw: _BrokenAtFirstCall(model), "C\\+\\+ compiler not found"),
        (_broken_backward_compiler, "the backward graph does not compile"),
    ],
    ids=["fails-when-wrapping", "fails-at-first-call", "fails-at-first-backward"],
)
def test_a_broken_compile_backend_falls_back_to_eager_with_a_clear_message(
    data, monkeypatch, broken, message
):
    tokenizer, train, val = data
    eager = losses(Trainer(small_model(tokenizer.vocab_size), train, val, config()))
    monkeypatch.setattr(torch, "compile", broken)
    with pytest.warns(
        RuntimeWarning, match=rf"--compile: torch.compile failed .*{message}.*continues in eager mode"
    ):
        fallback = losses(Trainer(small_model(tokenizer.vocab_size), train, val, config(compile=True)))
    assert fallback == eager  # eager mode after the fallback: bit-identical to never compiling


def test_the_compile_warning_names_the_first_line_of_the_root_cause():
    reason = "no working C++ compiler: " + "x" * 400
    root = RuntimeError(f"\n   \n  {reason}  \nthe compiler's output follows")
    wrapper = ValueError("compiling the graph failed")
    wrapper.__cause__ = root  # raise ... from root
    with pytest.warns(RuntimeWarning) as caught:
        warn_compile_fallback(wrapper)
    # The wrapper's type, then the cause's first non-blank line, cut to 300 characters.
    assert f"torch.compile failed (ValueError, from RuntimeError: {reason[:300]});" in str(caught[0].message)


def test_the_compile_warning_stops_at_a_cycle_of_causes():
    first, second = RuntimeError("first"), RuntimeError("second")
    first.__cause__, second.__cause__ = second, first
    messages = []

    def warn():
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            warn_compile_fallback(first)
        messages.extend(str(w.message) for w in caught)

    thread = threading.Thread(target=warn, daemon=True)  # a daemon: a looping bug must not hang pytest
    thread.start()
    thread.join(timeout=10)
    assert not thread.is_alive(), "following the causes round a cycle never ends"
    assert len(messages) == 1 and "RuntimeError, from RuntimeError: second" in messages[0]


def test_only_a_rank_asked_to_warn_reports_a_failed_compile(monkeypatch):
    # Under DDP every rank compiles and fails alike; one warning, from the main rank, is enough.
    monkeypatch.setattr(torch, "compile", _broken_compile_at_wrap)
    model = torch.nn.Linear(2, 2)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert compile_or_warn(model, warn=False) is model
    with pytest.warns(RuntimeWarning, match="backend 'inductor' is not available"):
        assert compile_or_warn(model) is model


class _OutOfMemoryAtFirstCall(torch.nn.Module):
    def __init__(self, model):
        super().__init__()
        self._orig_mod = model

    def forward(self, *args, **kwargs):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 12.00 GiB")


def test_running_out_of_memory_in_the_compiled_model_is_not_taken_for_a_compile_failure(data, monkeypatch):
    # Eager mode needs more memory than the compiled graph: falling back would only fail again, later,
    # after a misleading "torch.compile failed" warning. The batch is too big; say so.
    tokenizer, train, val = data
    monkeypatch.setattr(torch, "compile", lambda model, **kw: _OutOfMemoryAtFirstCall(model))
    trainer = Trainer(small_model(tokenizer.vocab_size), train, val, config(compile=True))
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        with pytest.raises(torch.OutOfMemoryError, match="Tried to allocate"):
            trainer.train()


# ----------------------------------------------------------------------------- compile mode
def _recording_compile(calls: list):
    """A stand-in for torch.compile that records its keyword arguments and compiles nothing."""

    def compile(model, **kwargs):
        calls.append(kwargs)
        return model

    return compile


@pytest.mark.parametrize(
    "mode, passed", [(None, {}), ("max-autotune-no-cudagraphs", {"mode": "max-autotune-no-cudagraphs"})]
)
def test_the_compile_mode_reaches_torch_compile(data, monkeypatch, mode, passed):
    tokenizer, train, val = data
    calls = []
    monkeypatch.setattr(torch, "compile", _recording_compile(calls))
    trainer = Trainer(small_model(tokenizer.vocab_size), train, val, config(compile=True, compile_mode=mode))
    assert calls == [passed]  # no mode: torch.compile's own default, not a mode= of ours
    assert trainer.config.compile_mode == mode


def test_a_resume_keeps_the_compile_mode_and_dropping_compile_drops_it(data, monkeypatch, tmp_path):
    tokenizer, train, val = data
    calls = []
    monkeypatch.setattr(torch, "compile", _recording_compile(calls))
    mode = "max-autotune-no-cudagraphs"
    first = Trainer(
        small_model(tokenizer.vocab_size),
        train,
        val,
        config(max_iters=2, schedule="constant", compile=True, compile_mode=mode),
        tokenizer,
        out_dir=tmp_path,
    )
    first.train()
    assert ckpt.load_checkpoint(tmp_path).train_config["compile_mode"] == mode
    assert Trainer.resume(tmp_path, train, val, max_iters=3).config.compile_mode == mode
    assert calls == [{"mode": mode}, {"mode": mode}]
    # A speed knob, like compile itself: turning compile off on resume must not be refused for the mode.
    eager = Trainer.resume(tmp_path, train, val, max_iters=3, compile=False)
    assert (eager.config.compile, eager.config.compile_mode) == (False, None)
    assert len(calls) == 2, "compile=False still compiled"


def test_a_resume_on_a_torch_without_the_saved_compile_mode_compiles_in_the_default(
    data, monkeypatch, tmp_path
):
    import arlm_lib.train

    tokenizer, train, val = data
    calls = []
    monkeypatch.setattr(torch, "compile", _recording_compile(calls))
    cfg = config(max_iters=2, schedule="constant", compile=True, compile_mode="max-autotune-no-cudagraphs")
    Trainer(small_model(tokenizer.vocab_size), train, val, cfg, tokenizer, out_dir=tmp_path).train()
    monkeypatch.setattr(arlm_lib.train, "compile_modes", lambda: ("default", "reduce-overhead"))
    with pytest.warns(RuntimeWarning, match="compile_mode='max-autotune-no-cudagraphs'.*default mode"):
        resumed = Trainer.resume(tmp_path, train, val, max_iters=3)
    assert (resumed.config.compile, resumed.config.compile_mode) == (True, None)
    assert calls[-1] == {}
    # A mode given for the resume replaces the saved one, which then needs no warning.
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        replaced = Trainer.resume(tmp_path, train, val, max_iters=3, compile_mode="reduce-overhead")
    assert replaced.config.compile_mode == "reduce-overhead" and calls[-1] == {"mode": "reduce-overhead"}


@pytest.mark.parametrize("bad", ["max_autotune", "MAX-AUTOTUNE", "", 3])
def test_an_unknown_compile_mode_is_refused_naming_it_and_the_modes(bad):
    with pytest.raises(ConfigError) as info:
        TrainConfig(compile=True, compile_mode=bad)
    message = str(info.value)
    assert f"compile_mode={bad!r}" in message
    for mode in ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs"):
        assert repr(mode) in message


def test_a_compile_mode_without_compile_is_refused():
    with pytest.raises(
        ConfigError, match=r"compile_mode='max-autotune' \(--compile-mode\) needs compile=True"
    ):
        TrainConfig(compile_mode="max-autotune")


def test_the_compile_modes_are_torchs_own(monkeypatch):
    import torch._inductor

    from arlm_lib.device import KNOWN_COMPILE_MODES, compile_modes

    assert set(KNOWN_COMPILE_MODES) <= set(compile_modes())
    monkeypatch.setattr(torch._inductor, "list_mode_options", lambda: {"default": {}, "newer-mode": {}})
    assert compile_modes() == ("default", "newer-mode")
    assert TrainConfig(compile=True, compile_mode="newer-mode").compile_mode == "newer-mode"
    monkeypatch.delattr(torch._inductor, "list_mode_options")  # an older torch
    assert compile_modes() == KNOWN_COMPILE_MODES


def test_the_compile_mode_round_trips_and_an_older_checkpoints_config_loads():
    import json

    saved = TrainConfig(compile=True, compile_mode="reduce-overhead")
    assert TrainConfig.from_dict(json.loads(json.dumps(saved.to_dict()))) == saved
    older = {k: v for k, v in TrainConfig(compile=True).to_dict().items() if k != "compile_mode"}
    assert TrainConfig.from_dict(older).compile_mode is None


def test_max_autotune_gives_the_ranks_longer_to_compile():
    default = TrainConfig(compile=True).collective_timeout_s
    assert TrainConfig(compile=True, compile_mode="max-autotune-no-cudagraphs").collective_timeout_s > default
    assert TrainConfig(compile=True, compile_mode="reduce-overhead").collective_timeout_s == default
    assert TrainConfig(compile=True, compile_mode="max-autotune", ddp_timeout_s=30).collective_timeout_s == 30


# ----------------------------------------------------------------------------- devices
def test_cuda_requested_without_cuda_is_a_clear_error(tmp_path, capsys):
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    with pytest.raises(DeviceError, match="CUDA is not available"):
        resolve_device("cuda")
    for bad in ("cuda:x", "tpu", "cpu:0"):
        with pytest.raises(DeviceError, match="unknown device"):
            resolve_device(bad)
    corpus = tmp_path / "corpus.txt"
    corpus.write_text(TEXT)
    argv = [
        "train",
        "--data",
        str(corpus),
        "--out",
        str(tmp_path / "run"),
        "--device",
        "cuda",
        "--max-iters",
        "1",
    ]
    assert cli_main(argv) != 0
    assert "CUDA is not available" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


def test_float16_on_the_cpu_is_refused_before_any_data_is_read_or_directory_made(
    tmp_path, capsys, monkeypatch
):
    """Refused at the start: it used to come after loading and encoding the data and building the model,
    and to leave the parents of --out it had created behind."""
    import arlm_lib.cli as cli

    def no_data(*args):
        raise AssertionError("the data was read before the dtype was checked")

    monkeypatch.setattr(cli, "_load_text", no_data)
    out = tmp_path / "deep" / "a" / "run"
    argv = ["train", "--data", "synthetic", "--out", str(out), "--device", "cpu", "--dtype", "float16"]
    assert cli_main(argv) == 2
    assert "error: --dtype: dtype 'float16' is not supported on the CPU" in capsys.readouterr().err
    assert not (tmp_path / "deep").exists()


class _MissingOp(torch.nn.Module):
    def forward(self, idx, targets=None):
        raise NotImplementedError(
            "The operator 'aten::_fancy_op' is not currently implemented for the MPS device"
        )


class _MissingOpWithWeights(_MissingOp):
    """Records where it is moved to (its weights stay on the CPU, so moving them is real)."""

    def __init__(self):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.zeros(2))
        self.moved_to = []

    def to(self, *args, **kwargs):
        self.moved_to.append(torch.device(args[0]))
        return super().to(*args, **kwargs)


def test_a_missing_device_op_falls_back_to_the_cpu_with_a_warning():
    model = _MissingOpWithWeights()
    with pytest.warns(
        RuntimeWarning, match=r"aten::_fancy_op.*training on the CPU.*PYTORCH_ENABLE_MPS_FALLBACK"
    ):
        device = fall_back_if_ops_missing(model, torch.device("meta"), torch.float32, seq_len=8)
    assert device == torch.device("cpu")
    assert model.moved_to == [torch.device("cpu")]  # the model goes where the training now runs


class _Broken(torch.nn.Module):
    def forward(self, idx, targets=None):
        raise RuntimeError("mat1 and mat2 shapes cannot be multiplied (8x32 and 16x32)")


def test_the_device_probe_lets_a_bug_in_the_model_through():
    # Only a missing op is the device's fault; any other error would fail on the CPU too, later and
    # slower, after a misleading warning.
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(RuntimeError, match="cannot be multiplied"):
            fall_back_if_ops_missing(_Broken(), torch.device("cpu"), torch.float32, seq_len=8)


def test_the_device_probe_keeps_a_working_device_and_leaves_no_trace():
    # With dropout, a probe in train mode would draw random numbers and shift the training RNG.
    model = GPT(GPTConfig(vocab_size=11, block_size=32, n_layer=2, n_head=2, n_embd=32, dropout=0.2)).train()
    rng = torch.get_rng_state()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        device = fall_back_if_ops_missing(model, torch.device("cpu"), torch.float32, seq_len=32)
    assert device == torch.device("cpu")
    assert model.training and all(p.grad is None for p in model.parameters())
    assert torch.equal(torch.get_rng_state(), rng)


@pytest.mark.parametrize(
    "name, peak",
    [
        ("NVIDIA H200", 989e12),
        ("NVIDIA GH200 480GB", 989e12),
        ("NVIDIA H200 NVL", 835e12),
        ("NVIDIA H100 80GB HBM3", 989e12),
        ("NVIDIA H100 PCIe", 756e12),
        ("NVIDIA A100-SXM4-80GB", 312e12),
        ("NVIDIA L40", 181e12),
        ("NVIDIA L40S", 362e12),
        ("NVIDIA L4", 121e12),
        ("NVIDIA GeForce RTX 4090", None),
    ],
)
def test_datasheet_peaks_are_found_by_the_gpu_name(monkeypatch, name, peak):
    # torch.cuda.get_device_name's strings; a name containing another's key (L40 holds "L4") gets its own.
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: name)
    assert spec_peak_flops(torch.device("cuda"), torch.bfloat16) == peak
    assert spec_peak_flops(torch.device("cuda"), torch.float16) == peak  # the same tensor-core peak
    assert spec_peak_flops(torch.device("cuda"), torch.float32) is None  # no tensor-core float32 figure


def test_the_datasheet_peak_is_that_of_the_gpu_asked_about(monkeypatch):
    # A machine with two kinds of GPU: cuda:1's peak is cuda:1's, not that of the current device (0).
    names = {"cuda:1": "NVIDIA A100-SXM4-80GB"}
    monkeypatch.setattr(
        torch.cuda, "get_device_name", lambda device=None: names.get(str(device), "NVIDIA H100 80GB HBM3")
    )
    assert spec_peak_flops("cuda:1") == 312e12


def test_synchronize_waits_on_the_device_it_is_given(monkeypatch):
    calls = []
    monkeypatch.setattr(torch.cuda, "synchronize", lambda device=None: calls.append(("cuda", device)))
    monkeypatch.setattr(torch.mps, "synchronize", lambda: calls.append(("mps", None)))
    synchronize(torch.device("cpu"))
    synchronize(torch.device("cuda:1"))
    synchronize(torch.device("mps"))
    assert calls == [("cuda", torch.device("cuda:1")), ("mps", None)]


def test_measured_peak_counts_a_multiply_add_as_two_flops(monkeypatch):
    import types

    from arlm_lib import device

    ticks = iter([0.0, 1.0])  # the timed loop runs once: 5 matmuls in one (fake) second
    monkeypatch.setattr(device, "time", types.SimpleNamespace(perf_counter=lambda: next(ticks)))
    assert measure_peak_flops("cpu", size=8, min_time_s=0.5) == 2 * 8**3 * 5


def test_the_ops_probe_leaves_the_model_in_the_mode_it_found():
    model = GPT(GPTConfig(vocab_size=10, block_size=8, n_layer=1, n_head=2, n_embd=16)).eval()
    assert fall_back_if_ops_missing(model, torch.device("cpu"), torch.float32, seq_len=8) == torch.device(
        "cpu"
    )
    assert not model.training  # an eval-mode model (a notebook's) stays in eval mode
    model.train()
    fall_back_if_ops_missing(model, torch.device("cpu"), torch.float32, seq_len=8)
    assert model.training and all(p.grad is None for p in model.parameters())


def test_auto_dtype_is_float16_on_a_gpu_without_bf16(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    assert resolve_dtype("auto", torch.device("cuda")) is torch.float16
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    assert resolve_dtype("auto", torch.device("cuda")) is torch.bfloat16
    assert resolve_dtype("auto", torch.device("cpu")) is torch.float32
    assert (
        resolve_dtype("auto", torch.device("mps")) is torch.float32
    )  # CUDA's bf16 support says nothing of MPS


def test_auto_prefers_cuda_and_a_gpu_index_must_exist(monkeypatch):
    """auto: CUDA before Apple MPS; cuda:N names one of the machine's GPUs, counted from 0."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: True)
    assert resolve_device("auto") == torch.device("cuda")
    assert resolve_device("cuda:0") == torch.device("cuda:0")
    with pytest.raises(DeviceError, match=r"'cuda:1' does not exist: this machine has 1 GPU\(s\)"):
        resolve_device("cuda:1")


def test_auto_falls_back_to_mps_then_the_cpu_and_mps_must_exist(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: True)
    assert resolve_device("auto") == torch.device("mps")
    assert resolve_device("mps") == torch.device("mps")
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    assert resolve_device("auto") == torch.device("cpu")
    with pytest.raises(DeviceError, match="'mps' was requested but Apple MPS is not available"):
        resolve_device("mps")


@pytest.fixture
def cgroup(monkeypatch, tmp_path):
    """Point the device module's cgroup files at files this test writes; 8 CPUs in the affinity mask."""
    from arlm_lib import device

    v2, quota, period = tmp_path / "cpu.max", tmp_path / "cfs_quota_us", tmp_path / "cfs_period_us"
    monkeypatch.setattr(device, "_CGROUP_CPU_MAX", str(v2))
    monkeypatch.setattr(device, "_CGROUP_V1_QUOTA", (str(quota), str(period)))
    monkeypatch.setattr(device.os, "sched_getaffinity", lambda pid: set(range(8)), raising=False)
    return v2, quota, period


@pytest.mark.parametrize(
    ("v2_text", "v1_quota", "at_most", "expected"),
    [
        (None, None, 2, 2),  # no quota anywhere: the affinity mask, capped
        (None, None, 16, 8),
        ("max 100000", None, 16, 8),  # cgroup v2 without a limit
        ("150000 100000", None, 16, 1),  # 1.5 CPUs: one thread, not two fighting for a core and a half
        ("400000 100000", None, 16, 4),
        ("50000 100000", None, 2, 1),  # half a CPU still gets one thread
        (None, "200000", 16, 2),  # cgroup v1: quota 200 ms per 100 ms period
        (None, "-1", 16, 8),  # cgroup v1 without a limit
    ],
)
def test_cpu_threads_respects_the_affinity_mask_and_a_container_quota(
    cgroup, v2_text, v1_quota, at_most, expected
):
    v2, quota, period = cgroup
    if v2_text is not None:
        v2.write_text(v2_text + "\n")
    if v1_quota is not None:
        quota.write_text(v1_quota + "\n")
        period.write_text("100000\n")
    assert cpu_threads(at_most) == expected


def test_cpu_threads_uses_the_one_cpu_a_process_is_pinned_to(cgroup, monkeypatch):
    from arlm_lib import device

    monkeypatch.setattr(device.os, "sched_getaffinity", lambda pid: {3}, raising=False)
    assert cpu_threads(2) == 1


@pytest.mark.parametrize(("cpu_count", "expected"), [(6, 6), (None, 1)])
def test_cpu_threads_counts_the_cpus_where_there_is_no_affinity_mask(
    cgroup, monkeypatch, cpu_count, expected
):
    # macOS and Windows: no sched_getaffinity; os.cpu_count() may be None when it cannot tell.
    from arlm_lib import device

    monkeypatch.delattr(device.os, "sched_getaffinity")
    monkeypatch.setattr(device.os, "cpu_count", lambda: cpu_count)
    assert cpu_threads(16) == expected


@pytest.mark.parametrize("bad", [0, -1, 1.5, True, "2"])
def test_cpu_threads_refuses_a_cap_that_is_not_a_positive_integer(bad):
    with pytest.raises(ConfigError, match=re.escape(repr(bad))):
        cpu_threads(bad)
