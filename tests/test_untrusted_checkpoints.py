"""Loading a checkpoint someone sent you: nothing is unpickled, and every defect is named.

Each crafted file below is a well-formed safetensors file whose checksum is recomputed with the module's
own digest helper, so the check that fires is the one under test (shape, dtype, names, config), not the
checksum.
"""

from __future__ import annotations

import io
import json
import pickle
import re
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from arlm_lib import checkpoint as ckpt
from arlm_lib.cli import main
from arlm_lib.errors import CheckpointError, ConfigError
from arlm_lib.model import GPT, GPTConfig
from arlm_lib.tokenizers import CharTokenizer
from arlm_lib.train import TrainConfig, make_optimizer

TEXT = "the cat sat on the mat. a dog ran far away. "


def _tiny_model(**overrides) -> GPT:
    torch.manual_seed(0)
    config = dict(
        n_layer=1, n_head=2, n_embd=32, block_size=32, vocab_size=CharTokenizer.train(TEXT).vocab_size
    )
    return GPT(GPTConfig.from_preset("tiny", **{**config, **overrides}))


@pytest.fixture()
def good_run(tmp_path: Path) -> Path:
    """A genuine checkpoint with weights, tokenizer and optimizer state."""
    model = _tiny_model()
    optimizer = make_optimizer(model, TrainConfig(device="cpu"), torch.device("cpu"))
    model(torch.zeros(1, 4, dtype=torch.long), torch.zeros(1, 4, dtype=torch.long)).loss.backward()
    optimizer.step()
    run = tmp_path / "good"
    ckpt.save_checkpoint(run, model, tokenizer=CharTokenizer.train(TEXT), optimizer=optimizer)
    return run


def _read(run: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    path = run / ckpt.CHECKPOINT_FILE
    with safe_open(str(path), framework="pt") as fh:
        metadata = dict(fh.metadata())
    return load_file(str(path)), metadata


def _craft(tmp_path: Path, run: Path, edit, name: str = "crafted") -> Path:
    """Copy ``run`` with ``edit(tensors, metadata)`` applied and a freshly computed, valid checksum."""
    tensors, metadata = _read(run)
    edit(tensors, metadata)
    metadata["sha256"] = ckpt.checkpoint_digest(tensors, metadata)
    out = tmp_path / name
    out.mkdir()
    save_file(
        {k: v.contiguous() for k, v in tensors.items()}, str(out / ckpt.CHECKPOINT_FILE), metadata=metadata
    )
    return out


def test_genuine_checkpoint_loads(tmp_path: Path) -> None:
    reference = _tiny_model()
    ckpt.save_checkpoint(tmp_path / "run", reference, tokenizer=CharTokenizer.train(TEXT))
    model, tokenizer = ckpt.load_model(tmp_path / "run")
    assert tokenizer.decode(tokenizer.encode("the cat")) == "the cat"
    assert model.state_dict().keys() == reference.state_dict().keys()
    assert all(torch.equal(model.state_dict()[k], v) for k, v in reference.state_dict().items())


def test_every_saved_tensor_and_field_round_trips_exactly(tmp_path: Path) -> None:
    """Weights, every AdamW moment and step count (more than ten parameters, so index order matters),
    RNG states, tokenizer, training config and trainer state come back bit for bit."""
    model = _tiny_model(n_layer=2)
    optimizer = make_optimizer(model, TrainConfig(device="cpu"), torch.device("cpu"))
    for seed in range(2):  # two steps: moments differ from one parameter to the next
        idx = torch.randint(0, 10, (2, 8), generator=torch.Generator().manual_seed(seed))
        model(idx, idx).loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    rng = {"torch_cpu": torch.get_rng_state(), "batches": torch.Generator().manual_seed(5).get_state()}
    tokenizer = CharTokenizer.train(TEXT)
    train_config = TrainConfig(device="cpu", lr=2e-3).to_dict()
    trainer_state = {"step": 2, "history": {"step": [1.0, 2.0], "val_loss": [None, 1.5]}}
    ckpt.save_checkpoint(
        tmp_path, model, tokenizer=tokenizer, optimizer=optimizer, train_config=train_config,
        trainer_state=trainer_state, rng_state=rng,
    )  # fmt: skip
    loaded = ckpt.load_checkpoint(tmp_path)

    assert loaded.model_config == model.config
    state = model.state_dict()
    assert loaded.model_state.keys() == state.keys()  # the tied head is restored from the embedding
    assert all(torch.equal(loaded.model_state[k], v) for k, v in state.items())
    saved = optimizer.state_dict()
    assert len(saved["state"]) > 10
    # JSON has no tuples: betas come back as a list, which AdamW accepts alike.
    assert loaded.optimizer_state["param_groups"] == json.loads(json.dumps(saved["param_groups"]))
    assert loaded.optimizer_state["state"].keys() == saved["state"].keys()
    for index, moments in saved["state"].items():
        got = loaded.optimizer_state["state"][index]
        assert got.keys() == moments.keys()
        for name, value in moments.items():
            assert torch.equal(got[name], value), (index, name)
    assert loaded.rng_state.keys() == rng.keys()
    assert all(torch.equal(loaded.rng_state[k], v) for k, v in rng.items())
    assert loaded.tokenizer == tokenizer.to_dict()
    assert loaded.train_config == train_config and loaded.trainer_state == trainer_state

    # Loaded into a fresh optimizer, the moments sit on the right parameters.
    fresh = make_optimizer(_tiny_model(n_layer=2), TrainConfig(device="cpu"), torch.device("cpu"))
    fresh.load_state_dict(loaded.optimizer_state)
    for index, moments in optimizer.state_dict()["state"].items():
        assert torch.equal(fresh.state_dict()["state"][index]["exp_avg_sq"], moments["exp_avg_sq"])


# ------------------------------------------------------------------ nothing is unpickled
class _PlantsMarker:
    """Unpickling this object creates a file: the proof that code ran."""

    marker = ""

    def __reduce__(self):
        return (Path.touch, (Path(self.marker),))


def _malicious_pickle(marker: Path) -> bytes:
    payload = _PlantsMarker()
    payload.marker = str(marker)
    data = pickle.dumps({"model": payload})
    return data


def _malicious_torch_save(marker: Path) -> bytes:
    payload = _PlantsMarker()
    payload.marker = str(marker)
    buffer = io.BytesIO()
    torch.save({"model.transformer.wte.weight": torch.zeros(2, 2), "evil": payload}, buffer)
    return buffer.getvalue()


@pytest.mark.parametrize("make", [_malicious_pickle, _malicious_torch_save], ids=["pickle", "torch.save"])
def test_pickle_named_safetensors_is_rejected_without_running_code(tmp_path: Path, make) -> None:
    marker = tmp_path / "code-ran"
    # The payload really does run code when unpickled: the test would notice a loader that unpickles.
    pickle.loads(_malicious_pickle(marker))
    assert marker.exists()
    marker.unlink()

    run = tmp_path / "sent-by-a-stranger"
    run.mkdir()
    (run / ckpt.CHECKPOINT_FILE).write_bytes(make(marker))
    for load in (ckpt.load_checkpoint, ckpt.load_model):
        with pytest.raises(CheckpointError, match="not a safetensors file|not an arlm checkpoint"):
            load(run)
    # Also as a bare file with another name, the way people share weights.
    bare = tmp_path / "weights.pt"
    bare.write_bytes(make(marker))
    with pytest.raises(CheckpointError):
        ckpt.load_model(bare)
    assert not marker.exists(), "loading a checkpoint executed code from a pickle"


def test_cli_refuses_a_pickle_checkpoint(tmp_path: Path, capsys) -> None:
    marker = tmp_path / "code-ran"
    run = tmp_path / "run"
    run.mkdir()
    (run / ckpt.CHECKPOINT_FILE).write_bytes(_malicious_torch_save(marker))
    code = main(["sample", "--checkpoint", str(run), "--device", "cpu", "--max-new-tokens", "2"])
    err = capsys.readouterr().err
    assert code != 0 and "Traceback" not in err
    assert err.startswith("error:") and len(err.strip().splitlines()) == 1
    assert not marker.exists()


# ------------------------------------------------------------------ architecture mismatches are named
def _transpose(name):
    def edit(tensors, metadata):
        tensors[name] = tensors[name].t().contiguous()

    return edit


def _delete(name):
    def edit(tensors, metadata):
        del tensors[name]

    return edit


def _add(name):
    def edit(tensors, metadata):
        tensors[name] = torch.zeros(32)

    return edit


def _cast(name, dtype):
    def edit(tensors, metadata):
        tensors[name] = tensors[name].to(dtype)

    return edit


def _json_entry(entry: str, **fields):
    """An edit that sets ``fields`` in the JSON metadata ``entry``."""

    def edit(tensors, metadata):
        metadata[entry] = json.dumps({**json.loads(metadata[entry]), **fields})

    return edit


def _config_field(**fields):
    return _json_entry("model_config", **fields)


CASES = {
    "shape": (
        _transpose("model.transformer.h.0.mlp.c_fc.weight"),
        r"shape mismatch.*mlp\.c_fc\.weight.*\(32, 128\)",
    ),
    "missing": (_delete("model.transformer.h.0.attn.c_attn.bias"), r"missing tensors.*attn\.c_attn\.bias"),
    "extra": (_add("model.transformer.h.0.attn.rotary.weight"), r"unexpected tensors.*attn\.rotary\.weight"),
    "dtype": (
        _cast("model.transformer.ln_f.weight", torch.float64),
        r"dtype mismatch.*ln_f\.weight.*float64",
    ),
    "dtype-int": (_cast("model.transformer.wpe.weight", torch.int32), r"dtype mismatch.*wpe\.weight.*int32"),
    "unknown-config-field": (_config_field(n_experts=8), r"unknown GPTConfig field.*n_experts"),
    "bad-config-value": (
        _config_field(n_head=3),
        r"n_embd=32 \(--n-embd\) is not divisible by n_head=3 \(--n-head\)",
    ),
    "other-architecture": (_config_field(n_layer=2), r"missing tensors.*h\.1\."),
    "absurd-config": (_config_field(n_embd=2**30, n_head=1), r"asks for at least .* parameters"),
    # The table of learned positions has no place in a RoPE model: the weights are another model's.
    "learned-weights-as-rope": (_config_field(position_encoding="rope"), r"unexpected tensors.*wpe\.weight"),
    "unknown-tensor-prefix": (_add("payload.exe"), r"tensors this format does not define.*payload\.exe"),
    "nan-weights": (
        lambda t, m: t["model.transformer.wpe.weight"].__setitem__((0, 0), float("nan")),
        r"NaN or inf weights.*wpe\.weight",
    ),
    "bad-rng": (lambda t, m: t.__setitem__("rng.torch_cpu", torch.zeros(3)), r"random-generator states"),
    "bad-rng-2d": (
        lambda t, m: t.__setitem__("rng.torch_cpu", torch.zeros(2, 3, dtype=torch.uint8)),
        r"random-generator states",
    ),
    # A bare prefix is no name this format defines, even with an allowed prefix's spelling.
    "tensor-without-a-dot": (_add("model"), r"tensors this format does not define.*'model'"),
    # "tied" pointing at a tensor the file lacks: the head is named missing, not a KeyError.
    "tied-to-nothing": (
        lambda t, m: m.__setitem__("tied", json.dumps({"lm_head.weight": "no.such.tensor"})),
        r"missing tensors.*lm_head\.weight",
    ),
    "optimizer-groups-not-a-list": (
        lambda t, m: m.__setitem__("optimizer", json.dumps({"param_groups": 5, "scalars": {}})),
        r"invalid optimizer state",
    ),
    "optimizer-without-groups": (
        lambda t, m: m.__setitem__("optimizer", json.dumps({"scalars": {}})),
        r"invalid optimizer state",
    ),
    "bad-json": (
        lambda t, m: t.__setitem__(ckpt.TRAINER_STATE_TENSOR, _state_bytes("{not json")),
        r"invalid trainer state",
    ),
    "trainer-state-not-an-object": (
        lambda t, m: t.__setitem__(ckpt.TRAINER_STATE_TENSOR, _state_bytes("[1, 2]")),
        r"invalid trainer state: expected a JSON object",
    ),
    "trainer-state-2d": (
        lambda t, m: t.__setitem__(ckpt.TRAINER_STATE_TENSOR, torch.zeros(2, 3, dtype=torch.uint8)),
        r"invalid trainer state \['state\.trainer'\]",
    ),
    "bad-json-in-an-old-header": (
        lambda t, m: (t.pop(ckpt.TRAINER_STATE_TENSOR), m.__setitem__("trainer_state", "{not json")),
        r"'trainer_state' entry is not valid JSON",
    ),
    "bad-optimizer": (lambda t, m: m.__setitem__("optimizer", "[]"), r"'optimizer' entry is a list"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_crafted_checkpoint_is_rejected_naming_the_problem(tmp_path: Path, good_run: Path, case: str) -> None:
    edit, pattern = CASES[case]
    crafted = _craft(tmp_path, good_run, edit)
    with pytest.raises(CheckpointError, match=pattern):
        ckpt.load_model(crafted)


def test_a_rope_checkpoint_round_trips_and_refuses_a_context_its_weights_cannot_bound(tmp_path: Path) -> None:
    """No tensor's shape holds a RoPE model's context, so a crafted block_size is bounded by the KV
    cache it would make generation allocate, not by the weights."""
    reference = _tiny_model(position_encoding="rope").eval()
    ckpt.save_checkpoint(tmp_path / "run", reference, tokenizer=CharTokenizer.train(TEXT))
    model, _ = ckpt.load_model(tmp_path / "run")
    assert model.config.position_encoding == "rope" and "wpe" not in model.transformer
    idx = torch.tensor([[1, 2, 3, 4]])
    assert torch.equal(model(idx).logits, reference(idx).logits)
    longer = _craft(tmp_path, tmp_path / "run", _config_field(block_size=4096), name="longer")
    assert ckpt.load_model(longer)[0].config.block_size == 4096  # a longer context, within reason, loads
    absurd = _craft(tmp_path, tmp_path / "run", _config_field(block_size=2**40), name="absurd")
    with pytest.raises(CheckpointError, match=r"block_size=1,099,511,627,776, whose KV cache .* refusing"):
        ckpt.load_model(absurd)


def test_load_state_strict_names_every_problem_at_once() -> None:
    model = _tiny_model()
    state = dict(model.state_dict())
    del state["transformer.wpe.weight"]
    state["extra.bias"] = torch.zeros(1)
    state["transformer.ln_f.bias"] = torch.zeros(7)
    state["lm_head.weight"] = state["lm_head.weight"].half()
    with pytest.raises(CheckpointError) as info:
        ckpt.load_state_strict(_tiny_model(), state, source="theirs.safetensors")
    message = str(info.value)
    for expected in (
        "theirs.safetensors",
        "missing tensors",
        "wpe.weight",
        "unexpected tensors",
        "extra.bias",
    ):
        assert expected in message
    assert "ln_f.bias: (7,) vs model (32,)" in message
    assert "lm_head.weight: torch.float16 vs model torch.float32" in message


def test_cli_resume_with_other_architecture_is_refused(tmp_path: Path, good_run: Path, capsys) -> None:
    data = tmp_path / "corpus.txt"
    data.write_text(TEXT * 40)
    before = (good_run / ckpt.CHECKPOINT_FILE).read_bytes()
    code = main(
        [
            "train",
            "--data",
            str(data),
            "--out",
            str(good_run),
            "--resume",
            "--n-layer",
            "3",
            "--device",
            "cpu",
        ]
    )
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err
    assert "--n-layer 3 (checkpoint has 1)" in err
    assert (good_run / ckpt.CHECKPOINT_FILE).read_bytes() == before


# ------------------------------------------------------------------ truncated and flipped bytes
def test_truncated_checkpoint_is_corrupt(tmp_path: Path, good_run: Path) -> None:
    data = (good_run / ckpt.CHECKPOINT_FILE).read_bytes()
    header_len = int.from_bytes(data[:8], "little")
    for cut in (0, 4, 8, 8 + header_len // 2, 8 + header_len + 10, len(data) - 1):
        path = tmp_path / f"cut{cut}.safetensors"
        path.write_bytes(data[:cut])
        with pytest.raises(CheckpointError, match="truncated or corrupted"):
            ckpt.load_checkpoint(path)


def test_an_empty_checkpoint_file_is_called_empty(tmp_path: Path) -> None:
    path = tmp_path / "empty.safetensors"
    path.write_bytes(b"")
    with pytest.raises(CheckpointError, match=r"truncated or corrupted.*the file is empty"):
        ckpt.load_checkpoint(path)


def test_an_unreadable_checkpoint_is_an_os_error_not_corruption(
    tmp_path: Path, good_run: Path, capsys, monkeypatch
) -> None:
    """A file the user may not read was reported as "truncated or corrupted" with exit status 2; it may
    be a good checkpoint, so the reason and the path are reported as for any OS refusal, exit 1."""
    path = good_run / ckpt.CHECKPOINT_FILE
    real_open = open

    def refuse(file, *args, **kwargs):
        if Path(file) == path:
            raise PermissionError(13, "Permission denied", str(file))
        return real_open(file, *args, **kwargs)

    monkeypatch.setattr(ckpt, "open", refuse, raising=False)  # root reads any file: chmod 000 would not do
    with pytest.raises(PermissionError):
        ckpt.load_checkpoint(good_run)
    data = tmp_path / "text.txt"
    data.write_text(TEXT * 20, encoding="utf-8")
    for command in (["sample", "--max-new-tokens", "2"], ["eval", "--data", str(data)]):
        code = main([*command, "--checkpoint", str(good_run), "--device", "cpu"])
        err = capsys.readouterr().err
        assert code == 1, (command, err)
        assert err.strip() == f"error: Permission denied ({path})", err


def test_flipped_byte_in_weights_is_caught_by_the_checksum(tmp_path: Path, good_run: Path) -> None:
    data = bytearray((good_run / ckpt.CHECKPOINT_FILE).read_bytes())
    data[-100] ^= 0x01  # one bit of one float: still a well-formed file, only the checksum can tell
    path = tmp_path / "flipped.safetensors"
    path.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="corrupted: its checksum does not match"):
        ckpt.load_checkpoint(path)


@pytest.mark.parametrize(
    "old, new",
    [
        # '"dropout": 0.0' -> '"dropout": 0.1' in the config: valid JSON, a plausible config.
        (b'\\"dropout\\": 0.0', b'\\"dropout\\": 0.1'),
        # A tensor's dimensions swapped in the header: a (96, 32) matrix read as (32, 96), same bytes.
        (b'"shape":[96,32]', b'"shape":[32,96]'),
        # A tensor's dtype changed in the header: the same bytes read as int32 instead of float32.
        (b'"dtype":"F32"', b'"dtype":"I32"'),
    ],
    ids=["config value", "tensor shape", "tensor dtype"],
)
def test_an_edit_that_keeps_the_file_well_formed_is_caught_by_the_checksum(
    tmp_path: Path, good_run: Path, old: bytes, new: bytes
) -> None:
    """Only the checksum, which covers the config and every tensor's shape, can tell these edits."""
    data = (good_run / ckpt.CHECKPOINT_FILE).read_bytes()
    edited = data.replace(old, new, 1)
    assert edited != data and len(edited) == len(data)
    path = tmp_path / "edited.safetensors"
    path.write_bytes(edited)
    with pytest.raises(CheckpointError, match="corrupted: its checksum does not match"):
        ckpt.load_checkpoint(path)


@pytest.fixture(scope="module")
def checkpoint_bytes(tmp_path_factory) -> bytes:
    run = tmp_path_factory.mktemp("fuzz") / "run"
    model = _tiny_model(n_layer=1, n_embd=8, n_head=2, block_size=8)
    ckpt.save_checkpoint(run, model, tokenizer=CharTokenizer.train(TEXT))
    return (run / ckpt.CHECKPOINT_FILE).read_bytes()


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_any_flipped_byte_is_refused_or_harmless(tmp_path: Path, checkpoint_bytes: bytes, data) -> None:
    """Flip one byte anywhere: the loader raises CheckpointError, or (a JSON whitespace change) loads the
    very same content. It never loads different weights or configs, and never raises anything else."""
    original = checkpoint_bytes
    position = data.draw(st.integers(0, len(original) - 1), label="position")
    mask = data.draw(st.integers(1, 255), label="xor")
    corrupted = bytearray(original)
    corrupted[position] ^= mask
    path = tmp_path / "fuzzed.safetensors"
    path.write_bytes(bytes(corrupted))
    try:
        loaded = ckpt.load_checkpoint(path)
    except CheckpointError:
        return
    path.write_bytes(original)
    reference = ckpt.load_checkpoint(path)
    assert loaded.model_config == reference.model_config
    assert loaded.tokenizer == reference.tokenizer
    assert loaded.model_state.keys() == reference.model_state.keys()
    assert all(torch.equal(loaded.model_state[k], reference.model_state[k]) for k in reference.model_state)


@pytest.fixture()
def trained_run(tmp_path: Path) -> tuple[Path, torch.Tensor]:
    """A genuine run directory written by the trainer: weights, optimizer, trainer state, RNG states."""
    from arlm_lib.train import Trainer

    tokenizer = CharTokenizer.train(TEXT)
    tokens = torch.tensor(tokenizer.encode(TEXT * 20))
    config = TrainConfig(
        batch_size=4, max_iters=4, eval_interval=2, eval_iters=1, device="cpu", progress=False
    )
    run = tmp_path / "run"
    Trainer(_tiny_model(), tokens, tokens, config, tokenizer, out_dir=run).train()
    return run, tokens


def _state_bytes(text: str) -> torch.Tensor:
    return torch.frombuffer(bytearray(text.encode("utf-8")), dtype=torch.uint8)


def _trainer_state(**fields):
    """An edit that sets ``fields`` in the trainer state (JSON bytes in its own tensor)."""

    def edit(tensors, metadata):
        state = json.loads(tensors[ckpt.TRAINER_STATE_TENSOR].numpy().tobytes())
        tensors[ckpt.TRAINER_STATE_TENSOR] = _state_bytes(json.dumps({**state, **fields}))

    return edit


def _move_trainer_state_to_the_header(tensors, metadata):
    """Where checkpoints written before the trainer state had its own tensor kept it."""
    metadata["trainer_state"] = tensors.pop(ckpt.TRAINER_STATE_TENSOR).numpy().tobytes().decode("utf-8")


def test_a_checkpoint_with_the_trainer_state_in_its_header_still_resumes(tmp_path: Path, trained_run) -> None:
    """The models shipped with the package, and every run saved before the state moved, keep it there."""
    from arlm_lib.train import Trainer

    run, tokens = trained_run
    old_style = _craft(tmp_path, run, _move_trainer_state_to_the_header)
    assert ckpt.load_checkpoint(old_style).trainer_state == ckpt.load_checkpoint(run).trainer_state
    resumed = Trainer.resume(old_style, tokens, tokens, max_iters=6)
    assert resumed.step == 4 and list(resumed.history.column("step")) == [1, 2, 3, 4]


def test_the_header_stays_small_however_long_the_history(tmp_path: Path) -> None:
    """safetensors caps its header at 100 MB; with the history in it, at about 157 bytes a step, a run of
    some 640,000 steps could no longer save a checkpoint, nor resume past that point."""
    steps = 20_000
    history = {"step": list(range(1, steps + 1)), "train_loss": [2.5] * steps}
    ckpt.save_checkpoint(tmp_path / "run", _tiny_model(), trainer_state={"step": steps, "history": history})
    path = tmp_path / "run" / ckpt.CHECKPOINT_FILE
    with open(path, "rb") as fh:
        header_bytes = int.from_bytes(fh.read(8), "little")
    assert header_bytes < 20_000  # model config, checksum and tensor offsets only
    assert ckpt.load_checkpoint(path).trainer_state["history"] == history


def _train_config(**fields):
    return _json_entry("train_config", **fields)


RESUME_CASES = {
    "step-string": (_trainer_state(step="abc"), r"step='abc'"),
    "step-negative": (_trainer_state(step=-5), r"step=-5"),
    "history-not-a-dict": (_trainer_state(history=[1, 2]), r"training state cannot be restored"),
    "history-ragged": (
        _trainer_state(history={"step": [1, 2, 3], "lr": [0.1]}),
        r"history columns of different lengths",
    ),
    "history-strings": (_trainer_state(history={"step": ["a"]}), r"training state cannot be restored"),
    "config-string-min-lr": (_train_config(min_lr="0.1"), r"training config this version cannot use.*min_lr"),
    "config-string-seed": (_train_config(seed="x"), r"training config this version cannot use.*seed"),
    "rng-wrong-size": (
        lambda t, m: t.__setitem__("rng.batches", torch.zeros(7, dtype=torch.uint8)),
        r"training state cannot be restored",
    ),
}


@pytest.mark.parametrize("case", sorted(RESUME_CASES))
def test_resuming_a_crafted_checkpoint_is_a_checkpoint_error(tmp_path: Path, trained_run, case: str) -> None:
    """A checksum-valid file can still hold a training state the trainer did not write."""
    from arlm_lib.train import Trainer

    run, tokens = trained_run
    edit, pattern = RESUME_CASES[case]
    crafted = _craft(tmp_path, run, edit)
    with pytest.raises(CheckpointError, match=pattern):
        Trainer.resume(crafted, tokens, tokens)


# ------------------------------------------------------------------ files under other names and formats
def test_a_checkpoint_file_under_any_name_loads(tmp_path: Path, good_run: Path) -> None:
    """People share the file itself, renamed: any existing file is taken as given, whatever its suffix."""
    shared = tmp_path / "tiny-model.bin"
    shared.write_bytes((good_run / ckpt.CHECKPOINT_FILE).read_bytes())
    model, tokenizer = ckpt.load_model(shared)
    reference, _ = ckpt.load_model(good_run)
    assert tokenizer.decode(tokenizer.encode("the cat")) == "the cat"
    assert all(torch.equal(model.state_dict()[k], v) for k, v in reference.state_dict().items())


def test_a_safetensors_file_from_another_tool_is_named_as_such(tmp_path: Path) -> None:
    """Well-formed safetensors without this format's tag (someone's exported weights): the error says it
    is not an arlm checkpoint, rather than calling a perfectly good file corrupted."""
    path = tmp_path / "model.safetensors"
    save_file({"wte.weight": torch.zeros(4, 8)}, str(path), metadata={"format": "pt"})
    with pytest.raises(CheckpointError, match="not an arlm checkpoint: format 'pt'"):
        ckpt.load_checkpoint(path)


def test_reading_a_checkpoint_refuses_an_absurd_config_before_any_model_is_built(
    tmp_path: Path, good_run: Path
) -> None:
    """``load_checkpoint`` is what ``Trainer.resume`` and the zoo read: the size check must fire there,
    not only in ``load_model``, or a crafted width would be allocated on resume."""
    crafted = _craft(tmp_path, good_run, _config_field(n_embd=2**30, n_head=1))
    with pytest.raises(CheckpointError, match=r"asks for at least .* parameters"):
        ckpt.load_checkpoint(crafted)


def test_load_model_is_ready_for_inference_and_takes_weight_free_overrides(tmp_path: Path) -> None:
    """A model trained with dropout comes back in eval mode (the same input, the same logits), and
    ``attention="explicit"`` switches the path that returns attention weights without touching them."""
    reference = _tiny_model(dropout=0.2)
    ckpt.save_checkpoint(tmp_path / "run", reference, tokenizer=CharTokenizer.train(TEXT))
    model, _ = ckpt.load_model(tmp_path / "run")
    assert not model.training
    idx = torch.arange(10)[None]
    with torch.no_grad():
        assert torch.equal(model(idx).logits, model(idx).logits)
    explicit, _ = ckpt.load_model(tmp_path / "run", attention="explicit")
    assert explicit.config.attention == "explicit" and explicit.config.dropout == 0.2
    with torch.no_grad():
        out = explicit(idx, return_attention=True)
        assert out.attentions is not None and len(out.attentions) == 1
        assert torch.allclose(out.logits, model(idx).logits, atol=1e-5)


def test_a_tokenizer_with_more_ids_than_the_model_is_refused(tmp_path: Path) -> None:
    """Ids past the model's vocabulary would index past its embedding table at the first prompt. Saving
    such a pair is refused before anything is written; a file made elsewhere is refused at loading."""
    model, tokenizer = _tiny_model(vocab_size=5), CharTokenizer.train(TEXT)
    with pytest.raises(
        CheckpointError, match=rf"tokenizer has {tokenizer.vocab_size} ids but the model embeds only 5"
    ):
        ckpt.save_checkpoint(tmp_path / "refused", model, tokenizer=tokenizer)
    assert not (tmp_path / "refused").exists()
    ckpt.save_checkpoint(tmp_path / "run", model)

    def add_tokenizer(tensors, metadata):
        metadata["tokenizer"] = json.dumps(tokenizer.to_dict())

    crafted = _craft(tmp_path, tmp_path / "run", add_tokenizer)
    with pytest.raises(CheckpointError, match=r"its tokenizer has \d+ tokens but the model only 5"):
        ckpt.load_model(crafted)


@pytest.mark.parametrize(
    "override",
    [
        {"residual": False},
        {"n_head": 1},
        {"activation": "gelu_tanh"},
        {"norm_position": "post"},
        {"n_embd": 2**20},
    ],
    ids=lambda o: next(iter(o)),
)
def test_load_model_refuses_overrides_that_change_what_the_weights_compute(
    good_run: Path, monkeypatch, override: dict
) -> None:
    """Shape-compatible overrides would load the trained weights into another function without a word
    (``residual=False`` doubles the loss): refused by name before any model is built, so an absurd width
    is never allocated either."""

    def no_model(config):
        raise AssertionError(f"a model was built for {config}")

    monkeypatch.setattr(ckpt, "GPT", no_model)
    with pytest.raises(
        ConfigError, match=rf"cannot override {next(iter(override))}: only attention, dropout"
    ):
        ckpt.load_model(good_run, **override)


def test_save_checkpoint_never_replaces_a_file_that_is_not_a_checkpoint(tmp_path: Path) -> None:
    """Any existing file is taken as the checkpoint's path: a corpus or a ``torch.save`` file named by
    mistake is refused, byte for byte unchanged; an arlm checkpoint file is replaced as before."""
    model = _tiny_model()
    notes = tmp_path / "notes.txt"
    notes.write_text("my notes\n", encoding="utf-8")
    pickled = tmp_path / "model.pt"
    torch.save(model.state_dict(), pickled)
    for path in (notes, pickled):
        before = path.read_bytes()
        with pytest.raises(
            CheckpointError, match=rf"refusing to save over {path}: the file exists and is not"
        ):
            ckpt.save_checkpoint(path, model)
        assert path.read_bytes() == before
    checkpoint_file = ckpt.save_checkpoint(tmp_path / "run", model)
    with torch.no_grad():
        model.lm_head.weight.add_(1.0)
    assert ckpt.save_checkpoint(checkpoint_file, model) == checkpoint_file
    assert torch.equal(
        ckpt.load_checkpoint(checkpoint_file).model_state["lm_head.weight"], model.lm_head.weight
    )


@pytest.mark.parametrize("path", [None, 3, ["run"]])
def test_a_checkpoint_path_of_the_wrong_type_is_named(path) -> None:
    with pytest.raises(ConfigError, match=rf"checkpoint path {re.escape(repr(path))} is not allowed"):
        ckpt.load_model(path)


def test_a_compiled_model_saves_like_the_plain_one(tmp_path: Path) -> None:
    """``torch.compile`` wraps the model (its keys gain ``_orig_mod.``): the checkpoint holds the plain
    names, so it loads into an uncompiled model."""
    reference = _tiny_model()
    ckpt.save_checkpoint(tmp_path / "run", torch.compile(reference), tokenizer=CharTokenizer.train(TEXT))
    model, _ = ckpt.load_model(tmp_path / "run")
    assert all(torch.equal(model.state_dict()[k], v) for k, v in reference.state_dict().items())
