"""OpenAI's GPT-2 weights, as Hugging Face publishes them, in this library's :class:`~arlm_lib.model.GPT`.

The model is GPT-2's architecture already (nanoGPT's ``GPT.from_pretrained`` does the same import), so
loading the real weights is a matter of renaming and of three facts the files do not say themselves:

* Hugging Face's GPT-2 stores its four projections as ``Conv1D`` layers, whose weight is (in, out): the
  transpose of an ``nn.Linear`` weight (out, in). Those four are transposed on the way in.
* GPT-2's MLP uses the tanh approximation of GELU ("gelu_new"), hence ``activation="gelu_tanh"``.
* The number of attention heads is in no tensor's shape (12 heads of 64 or 6 of 128 give the same
  matrices), so it is read from ``config.json``'s ``n_head``. Guessing 64-dim heads would fit every
  OpenAI GPT-2 size, but a wrong guess would give a model that runs and writes nonsense.

Everything else (layers, width, vocabulary, context) is read from the tensors' shapes. The files are
downloaded by the reader (see the README): nothing here touches the network.

Layout of a GPT-2 ``model.safetensors`` (keys may carry a ``transformer.`` prefix)::

    wte.weight (vocab, C)   wpe.weight (context, C)   ln_f.{weight,bias} (C)
    h.N.ln_1.{weight,bias} (C)              h.N.ln_2.{weight,bias} (C)
    h.N.attn.c_attn.weight (C, 3C) + bias   h.N.attn.c_proj.weight (C, C) + bias
    h.N.mlp.c_fc.weight (C, 4C) + bias      h.N.mlp.c_proj.weight (4C, C) + bias
    h.N.attn.bias, h.N.attn.masked_bias     causal-mask buffers, not weights: ignored
    lm_head.weight (vocab, C)               if present, the same matrix as wte (tied)
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file

from .checkpoint import FORMAT, load_state_strict
from .errors import CheckpointError, ConfigError, TokenizerError
from .model import GPT, GPTConfig
from .tokenizers import FORMAT_VERSION, BPETokenizer

__all__ = ["find_gpt2_file", "gpt2_config", "load_gpt2_tokenizer", "load_gpt2_weights"]

WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "config.json"
TOKENIZER_FILE = "tokenizer.json"
PREFIX = "transformer."
CONV1D = ("attn.c_attn", "attn.c_proj", "mlp.c_fc", "mlp.c_proj")  # weights stored (in, out)
IGNORED = re.compile(r"h\.\d+\.attn\.(bias|masked_bias)")  # the causal mask, kept as buffers by HF
LAYER = re.compile(r"h\.(\d+)\.")
# config.json's activation_function -> GPTConfig.activation. "gelu_new", "gelu_fast" and
# "gelu_pytorch_tanh" are three implementations of the same tanh formula.
ACTIVATIONS = {
    "gelu_new": "gelu_tanh",
    "gelu_fast": "gelu_tanh",
    "gelu_pytorch_tanh": "gelu_tanh",
    "gelu": "gelu",
}


def find_gpt2_file(weights: str | os.PathLike, given: str | os.PathLike | None, name: str) -> Path | None:
    """``given`` if set (it must exist), else the file ``name`` next to the weights, else None."""
    if given is not None:
        path = Path(given)
        if not path.is_file():
            raise ConfigError(f"{path} does not exist or is not a file (expected Hugging Face's {name})")
        return path
    weights = Path(weights)
    found = (weights if weights.is_dir() else weights.parent) / name
    return found if found.is_file() else None


def _weights_file(path: str | os.PathLike) -> Path:
    """A ``model.safetensors`` file, or the directory holding one."""
    path = Path(path)
    if path.is_dir():
        if (path / WEIGHTS_FILE).is_file():
            return path / WEIGHTS_FILE
        sharded = (
            " (split into shards, which this importer does not read)"
            if any(path.glob("*.index.json"))
            else ""
        )
        raise CheckpointError(
            f"{path} holds no {WEIGHTS_FILE}{sharded}: download it from the model's Hugging Face page"
        )
    if not path.is_file():
        raise CheckpointError(
            f"{path} does not exist: give GPT-2's {WEIGHTS_FILE}, or the directory holding it"
        )
    return path


def gpt2_config(path: str | os.PathLike) -> dict[str, Any]:
    """Read a Hugging Face ``config.json`` as a dict (ConfigError if it is not a JSON object)."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise ConfigError(f"cannot read {path} as a Hugging Face config.json: {exc}") from exc
    if not isinstance(data, dict):
        raise ConfigError(
            f"{path} is not a Hugging Face config.json: it holds a {type(data).__name__}, not an object"
        )
    return data


def _architecture(hf: dict[str, Any], source: Path, found: dict[str, int]) -> dict[str, Any]:
    """n_head and the activation from config.json, after checking it describes what this model computes
    and agrees with the sizes ``found`` in the tensors."""
    if hf.get("model_type", "gpt2") != "gpt2":
        raise ConfigError(f"{source} describes a {hf['model_type']!r} model, not 'gpt2'")
    n_head = hf.get("n_head")
    if isinstance(n_head, bool) or not isinstance(n_head, int) or n_head < 1:
        raise ConfigError(
            f"{source} has n_head={n_head!r}: the number of attention heads must be a positive integer"
        )
    activation = hf.get("activation_function", "gelu_new")
    if not isinstance(activation, str) or activation not in ACTIVATIONS:
        raise ConfigError(
            f"{source} has activation_function={activation!r}: this model computes one of {sorted(ACTIVATIONS)}"
        )
    # Settings GPT-2 never changed but a config may: the model here has LayerNorm eps 1e-5, a 4x MLP,
    # and attention scaled by 1/sqrt(head_dim) only. A model trained otherwise would load and be wrong.
    unsupported = {
        "layer_norm_epsilon": (hf.get("layer_norm_epsilon", 1e-5), 1e-5),
        "n_inner": (hf.get("n_inner"), (None, 4 * found["n_embd"])),
        "scale_attn_weights": (hf.get("scale_attn_weights", True), True),
        "scale_attn_by_inverse_layer_idx": (hf.get("scale_attn_by_inverse_layer_idx", False), False),
        "add_cross_attention": (hf.get("add_cross_attention", False), False),
    }
    for key, (value, allowed) in unsupported.items():
        if value not in (allowed if isinstance(allowed, tuple) else (allowed,)):
            raise ConfigError(
                f"{source} has {key}={value!r}, which this model does not implement (allowed: {allowed!r})"
            )
    for key, ours in (
        ("n_layer", "n_layer"),
        ("n_embd", "n_embd"),
        ("vocab_size", "vocab_size"),
        ("n_positions", "block_size"),
    ):
        if key in hf and hf[key] != found[ours]:
            raise ConfigError(
                f"{source} says {key}={hf[key]!r} but the weights hold {found[ours]}: "
                "the config and the weights are not from the same model"
            )
    return {"n_head": n_head, "activation": ACTIVATIONS[activation]}


def _expected_shapes(n_layer: int, C: int, vocab: int, context: int) -> dict[str, tuple[int, ...]]:
    """Every tensor of a Hugging Face GPT-2 with these sizes, in its own layout (Conv1D: (in, out))."""
    shapes = {"wte.weight": (vocab, C), "wpe.weight": (context, C), "ln_f.weight": (C,), "ln_f.bias": (C,)}
    for i in range(n_layer):
        for name, shape in {
            "ln_1.weight": (C,),
            "ln_1.bias": (C,),
            "attn.c_attn.weight": (C, 3 * C),
            "attn.c_attn.bias": (3 * C,),
            "attn.c_proj.weight": (C, C),
            "attn.c_proj.bias": (C,),
            "ln_2.weight": (C,),
            "ln_2.bias": (C,),
            "mlp.c_fc.weight": (C, 4 * C),
            "mlp.c_fc.bias": (4 * C,),
            "mlp.c_proj.weight": (4 * C, C),
            "mlp.c_proj.bias": (C,),
        }.items():
            shapes[f"h.{i}.{name}"] = shape
    return shapes


def _read_header(path: Path) -> tuple[dict[str, str], dict[str, tuple[int, ...]], dict[str, str]]:
    """The metadata, and every tensor's shape and dtype by stored name, without loading any tensor."""
    try:
        with safe_open(str(path), framework="pt") as f:
            metadata = f.metadata() or {}
            shapes, dtypes = {}, {}
            for key in f.keys():
                view = f.get_slice(key)
                shapes[key], dtypes[key] = tuple(view.get_shape()), view.get_dtype()
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(
            f"{path} is truncated or corrupted, or not a safetensors file at all (a pytorch_model.bin pickle is "
            f"refused, never unpickled: download model.safetensors): {exc}"
        ) from exc
    return metadata, shapes, dtypes


def load_gpt2_weights(path: str | os.PathLike, config_json: str | os.PathLike | None = None) -> GPT:
    """A :class:`~arlm_lib.model.GPT` holding the Hugging Face GPT-2 weights in ``path``
    (``model.safetensors`` or its directory), in eval mode on the CPU, with ``activation="gelu_tanh"``,
    biases and no dropout.

    ``config_json`` (default: the ``config.json`` next to the weights) gives the number of heads. Every
    defect raises :class:`~arlm_lib.errors.CheckpointError` or :class:`~arlm_lib.errors.ConfigError`
    naming the file, the tensor and the shapes; nothing is written anywhere.
    """
    path = _weights_file(path)
    metadata, stored_shapes, dtypes = _read_header(path)
    if metadata.get("format") == FORMAT:
        raise CheckpointError(f"{path} is an arlm checkpoint already: pass it to --checkpoint as it is")

    # Stored name -> GPT-2 name (without the prefix some exports add).
    names: dict[str, str] = {}
    for key in stored_shapes:
        name = key.removeprefix(PREFIX)
        if name in names.values():
            raise CheckpointError(f"{path} holds {name!r} twice, with and without the {PREFIX!r} prefix")
        names[key] = name
    shapes = {names[k]: s for k, s in stored_shapes.items()}
    if "wte.weight" not in shapes or "wpe.weight" not in shapes or not any(LAYER.match(n) for n in shapes):
        shown = sorted(shapes)[:5]
        raise CheckpointError(
            f"{path} is not a Hugging Face GPT-2 weights file: it lacks wte.weight, wpe.weight or blocks "
            f"h.0, h.1, ... (it holds {len(shapes)} tensors, e.g. {shown})"
        )
    wte, wpe = shapes["wte.weight"], shapes["wpe.weight"]
    if len(wte) != 2 or len(wpe) != 2 or min(*wte, *wpe) < 1:
        raise CheckpointError(
            f"{path}: wte.weight has shape {wte} and wpe.weight {wpe}; both must be 2-D (rows, n_embd)"
        )
    layers = {int(m.group(1)) for n in shapes if (m := LAYER.match(n))}
    if max(layers) >= len(shapes):  # a stray "h.99999..." would otherwise list a million missing tensors
        raise CheckpointError(
            f"{path} names block h.{max(layers)} but holds only {len(shapes)} tensors: not a GPT-2 weights file"
        )
    found = dict(
        n_layer=1 + max(layers),
        n_embd=wte[1],
        vocab_size=wte[0],
        block_size=wpe[0],
    )

    expected = _expected_shapes(found["n_layer"], found["n_embd"], found["vocab_size"], found["block_size"])
    if "lm_head.weight" in shapes:
        expected["lm_head.weight"] = wte
    problems, conv1d_note = [], ""
    missing = sorted(set(expected) - set(shapes), key=_natural)
    unexpected = sorted((n for n in shapes if n not in expected and not IGNORED.fullmatch(n)), key=_natural)
    if missing:
        problems.append(f"missing tensors {missing[:5]}{' ...' if len(missing) > 5 else ''}")
    if unexpected:
        problems.append(f"unexpected tensors {unexpected[:5]}{' ...' if len(unexpected) > 5 else ''}")
    for name in sorted(set(expected) & set(shapes), key=_natural):
        if shapes[name] != expected[name]:
            problems.append(f"{name} has shape {shapes[name]}, expected {expected[name]}")
            conv1d_note = " (Hugging Face's Conv1D weights are stored (in, out))"
    not_float = [
        f"{n} ({dtypes[k]})"
        for k, n in names.items()
        if n in expected and not dtypes[k].startswith(("F", "BF"))
    ]
    if not_float:
        problems.append(f"tensors that are not floating point: {not_float[:5]}")
    if problems:
        sizes = ", ".join(f"{k}={v}" for k, v in found.items())
        raise CheckpointError(
            f"{path} does not hold the GPT-2 its embeddings imply ({sizes}): "
            + "; ".join(problems[:6])
            + conv1d_note
        )

    config_path = find_gpt2_file(path, config_json, CONFIG_FILE)
    if config_path is None:
        raise ConfigError(
            f"no {CONFIG_FILE} next to {path}: the number of attention heads is in no tensor's shape, so it "
            f"is read from config.json's n_head; download the model's {CONFIG_FILE} too, or pass it with --config"
        )
    arch = _architecture(gpt2_config(config_path), config_path, found)
    try:
        config = GPTConfig(**found, **arch, bias=True, dropout=0.0)
    except ConfigError as exc:
        raise ConfigError(f"{config_path} and {path} do not make a valid model: {exc}") from exc

    try:
        tensors = load_file(str(path), device="cpu")
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(f"{path} is truncated or corrupted: {exc}") from exc
    state = {}
    for key, tensor in tensors.items():
        name = names[key]
        if name not in expected or name == "lm_head.weight":
            continue
        tensor = tensor.float()  # float16 and bfloat16 files too: the model computes in float32
        if name.endswith(".weight") and name.split(".", 2)[-1].removesuffix(".weight") in CONV1D:
            tensor = tensor.t()  # Conv1D (in, out) -> nn.Linear (out, in)
        state[f"{PREFIX}{name}"] = tensor.contiguous()
    if "lm_head.weight" in shapes:
        head = tensors[next(k for k, n in names.items() if n == "lm_head.weight")]
        if not torch.equal(head.float(), state[f"{PREFIX}wte.weight"]):
            raise CheckpointError(
                f"{path}: lm_head.weight differs from wte.weight; this model ties the output layer to the "
                "token embedding, as GPT-2 does, so it cannot hold a separate one"
            )
    state["lm_head.weight"] = state[f"{PREFIX}wte.weight"]  # the tied output layer

    model = GPT(config)
    load_state_strict(model, state, source=str(path))  # also refuses NaN or inf weights
    return model.eval()


def _natural(name: str) -> tuple:
    """Sort h.2 before h.10."""
    return tuple(int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name))


def load_gpt2_tokenizer(path: str | os.PathLike) -> BPETokenizer:
    """GPT-2's byte-level BPE from a Hugging Face ``tokenizer.json``, as a
    :class:`~arlm_lib.tokenizers.BPETokenizer`.

    GPT-2's file was written by an early version of ``tokenizers`` and gives its model no ``"type":
    "BPE"`` tag, which :meth:`~arlm_lib.tokenizers.BPETokenizer.from_dict` requires. Hugging Face reads
    such an untagged model by trying each model kind in turn; loading the file once and writing it back out gives the same
    tokenizer with its tag (and every setting spelled out), which then goes through all of
    ``from_dict``'s checks unchanged. Its other settings pass those checks as they are: no normalizer,
    a ByteLevel pre-tokenizer without a prefix space, a ByteLevel decoder, and a ByteLevel post-processor
    that adds no tokens, so ``decode(encode(text)) == text``.
    """
    from tokenizers import Tokenizer as HFTokenizer

    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError as exc:
        raise TokenizerError(f"tokenizer file {path} does not exist") from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise TokenizerError(f"cannot read tokenizer file {path}: {exc}") from exc
    try:
        spec = json.loads(text)
    except ValueError as exc:
        raise TokenizerError(f"{path} is not a Hugging Face tokenizer.json: not valid JSON ({exc})") from exc
    if not isinstance(spec, dict) or not isinstance(spec.get("model"), dict):
        raise TokenizerError(f"{path} is not a Hugging Face tokenizer.json: it has no 'model' object")
    try:
        canonical = HFTokenizer.from_str(text).to_str()
    except Exception as exc:  # the Rust side raises a plain Exception for a malformed file
        raise TokenizerError(f"{path}: Hugging Face cannot load it as a tokenizer ({exc})") from exc
    try:
        return BPETokenizer.from_dict({"kind": "bpe", "version": FORMAT_VERSION, "hf_tokenizer": canonical})
    except TokenizerError as exc:
        raise TokenizerError(f"{path} is not a GPT-2 style byte-level BPE tokenizer: {exc}") from exc
