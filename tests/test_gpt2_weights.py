"""Importing Hugging Face GPT-2 files (weights, config.json, tokenizer.json) offline.

Tiny GPT-2s are written here in Hugging Face's own layout (Conv1D weights stored (in, out), the causal
mask buffers, an untagged BPE model in tokenizer.json), and the imported model is checked against a
GPT-2 forward pass written out from those tensors with plain tensor operations.
"""

import json
import math
import re
import shlex

import pytest
import torch
from safetensors.torch import save_file

from arlm_lib.checkpoint import load_checkpoint, load_model, save_checkpoint
from arlm_lib.cli import main
from arlm_lib.errors import CheckpointError, ConfigError, TokenizerError
from arlm_lib.gpt2_weights import load_gpt2_tokenizer, load_gpt2_weights
from arlm_lib.model import GPT, GPTConfig

N_LAYER, N_HEAD, N_EMBD, VOCAB, CONTEXT = 2, 4, 32, 50, 16


@pytest.fixture(autouse=True, scope="module")
def _one_thread(one_thread):
    pass


def hf_gpt2_tensors(vocab=VOCAB, n_layer=N_LAYER, C=N_EMBD, context=CONTEXT, seed=0):
    """Random GPT-2 weights named and shaped as in Hugging Face's model.safetensors, with the mask buffers.

    Weights of std 0.3 and LayerNorm gains far from 1, so that a wrong transpose, head split, activation
    or LayerNorm placement changes the logits by far more than float32 rounding does.
    """
    g = torch.Generator().manual_seed(seed)

    def rand(*shape, scale=0.3):
        return torch.randn(*shape, generator=g) * scale

    t = {
        "wte.weight": rand(vocab, C),
        "wpe.weight": rand(context, C),
        "ln_f.weight": 1 + rand(C),
        "ln_f.bias": rand(C),
    }
    for i in range(n_layer):
        h = f"h.{i}."
        t |= {
            h + "ln_1.weight": 1 + rand(C),
            h + "ln_1.bias": rand(C),
            h + "attn.c_attn.weight": rand(C, 3 * C),  # Conv1D: (in, out)
            h + "attn.c_attn.bias": rand(3 * C),
            h + "attn.c_proj.weight": rand(C, C),
            h + "attn.c_proj.bias": rand(C),
            h + "ln_2.weight": 1 + rand(C),
            h + "ln_2.bias": rand(C),
            h + "mlp.c_fc.weight": rand(C, 4 * C),
            h + "mlp.c_fc.bias": rand(4 * C),
            h + "mlp.c_proj.weight": rand(4 * C, C),
            h + "mlp.c_proj.bias": rand(C),
            # Buffers Hugging Face saves with the weights: the causal mask and the value it fills in.
            h + "attn.bias": torch.ones(context, context).tril().view(1, 1, context, context),
            h + "attn.masked_bias": torch.tensor(-1e4),
        }
    return t


def hf_config(**overrides):
    """A config.json as Hugging Face writes it for these sizes."""
    return {
        "architectures": ["GPT2LMHeadModel"],
        "model_type": "gpt2",
        "activation_function": "gelu_new",
        "layer_norm_epsilon": 1e-05,
        "n_ctx": CONTEXT,
        "n_positions": CONTEXT,
        "n_embd": N_EMBD,
        "n_head": N_HEAD,
        "n_layer": N_LAYER,
        "vocab_size": VOCAB,
        **overrides,
    }


def write_model(directory, tensors=None, config=None, tokenizer=None):
    """model.safetensors (+ config.json, + tokenizer.json) in ``directory``, as a reader downloads them."""
    directory.mkdir(parents=True, exist_ok=True)
    tensors = hf_gpt2_tensors() if tensors is None else tensors
    save_file(
        {k: v.contiguous() for k, v in tensors.items()}, directory / "model.safetensors", {"format": "pt"}
    )
    if config is not False:
        (directory / "config.json").write_text(json.dumps(hf_config() if config is None else config))
    if tokenizer is not None:
        (directory / "tokenizer.json").write_text(tokenizer)
    return directory


def gelu_new(x):
    """GPT-2's activation, as in its original TensorFlow code."""
    return 0.5 * x * (1 + torch.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x**3)))


def gpt2_reference(t, idx, n_head=N_HEAD):
    """GPT-2's forward pass written out from Hugging Face-layout tensors: logits (B, T, vocab)."""
    B, T = idx.shape
    C = t["wte.weight"].shape[1]
    D = C // n_head
    n_layer = len({k.split(".")[1] for k in t if k.startswith("h.")})

    def ln(x, name):
        mean = x.mean(-1, keepdim=True)
        var = ((x - mean) ** 2).mean(-1, keepdim=True)
        return (x - mean) / torch.sqrt(var + 1e-5) * t[f"{name}.weight"] + t[f"{name}.bias"]

    def conv1d(x, name):  # Hugging Face's Conv1D: x @ W + b with W (in, out)
        return x @ t[f"{name}.weight"] + t[f"{name}.bias"]

    future = torch.ones(T, T).triu(1).bool()
    x = t["wte.weight"][idx] + t["wpe.weight"][:T]
    for i in range(n_layer):
        q, k, v = conv1d(ln(x, f"h.{i}.ln_1"), f"h.{i}.attn.c_attn").split(C, dim=-1)
        q, k, v = (z.reshape(B, T, n_head, D).transpose(1, 2) for z in (q, k, v))
        scores = (q @ k.transpose(-2, -1)) / math.sqrt(D)
        weights = torch.softmax(scores.masked_fill(future, -math.inf), dim=-1)
        y = (weights @ v).transpose(1, 2).reshape(B, T, C)
        x = x + conv1d(y, f"h.{i}.attn.c_proj")
        x = x + conv1d(gelu_new(conv1d(ln(x, f"h.{i}.ln_2"), f"h.{i}.mlp.c_fc")), f"h.{i}.mlp.c_proj")
    return ln(x, "ln_f") @ t["wte.weight"].T  # the output layer is the token embedding


IDX = torch.randint(0, VOCAB, (2, CONTEXT), generator=torch.Generator().manual_seed(1))


def logits(model, idx=IDX):
    with torch.no_grad():
        return model(idx).logits


# ---------------------------------------------------------------------------------------------- weights
def test_the_imported_model_computes_gpt2s_forward_pass(tmp_path):
    tensors = hf_gpt2_tensors()
    model = load_gpt2_weights(write_model(tmp_path / "gpt2"))  # the directory; config.json found in it
    c = model.config
    assert (c.n_layer, c.n_head, c.n_embd, c.vocab_size, c.block_size) == (2, 4, 32, 50, 16)
    assert (c.activation, c.bias, c.dropout) == ("gelu_tanh", True, 0.0) and not model.training
    expected = gpt2_reference(tensors, IDX)
    assert expected.abs().max() > 1  # far from a degenerate output
    torch.testing.assert_close(logits(model), expected, rtol=1e-5, atol=1e-5)
    assert model.lm_head.weight is model.transformer.wte.weight  # still tied

    # The comparison can fail: exact GELU, or 2 heads of 16 instead of 4 of 8, give other logits.
    exact = GPT(GPTConfig(**{**c.to_dict(), "activation": "gelu"})).eval()
    exact.load_state_dict(model.state_dict())
    assert (logits(exact) - expected).abs().max() > 1e-3
    two_heads = load_gpt2_weights(
        write_model(tmp_path / "two", config=hf_config(n_head=2)) / "model.safetensors"
    )
    assert (logits(two_heads) - expected).abs().max() > 1e-3


@pytest.mark.parametrize(
    "prefix, lm_head, buffers",
    [("transformer.", False, True), ("", True, False), ("transformer.", True, True)],
    ids=["prefix", "lm_head_no_buffers", "prefix_lm_head"],
)
def test_prefix_lm_head_and_mask_buffers(tmp_path, prefix, lm_head, buffers):
    tensors = hf_gpt2_tensors(seed=2)
    stored = {
        prefix + k: v
        for k, v in tensors.items()
        if buffers or not re.search(r"\.attn\.(bias|masked_bias)$", k)
    }
    if lm_head:
        stored["lm_head.weight"] = tensors["wte.weight"].clone()
    model = load_gpt2_weights(write_model(tmp_path, stored) / "model.safetensors")
    torch.testing.assert_close(logits(model), gpt2_reference(tensors, IDX), rtol=1e-5, atol=1e-5)


def test_half_precision_files_load_as_float32(tmp_path):
    tensors = {k: v.to(torch.bfloat16) for k, v in hf_gpt2_tensors().items()}
    model = load_gpt2_weights(write_model(tmp_path, tensors))
    assert model.lm_head.weight.dtype == torch.float32
    as_float = {k: v.float() for k, v in tensors.items()}
    torch.testing.assert_close(logits(model), gpt2_reference(as_float, IDX), rtol=1e-5, atol=1e-5)


def _with(**changes):
    """GPT-2 tensors with some replaced (a value of None deletes the tensor)."""
    tensors = hf_gpt2_tensors()
    for name, value in changes.items():
        if value is None:
            del tensors[name]
        else:
            tensors[name] = value
    return tensors


@pytest.mark.parametrize(
    "tensors, match",
    [
        (
            _with(**{"h.1.mlp.c_fc.weight": torch.zeros(32, 127)}),
            r"h\.1\.mlp\.c_fc\.weight has shape \(32, 127\), expected \(32, 128\)",
        ),
        (  # an nn.Linear-oriented (out, in) weight, e.g. from another exporter
            _with(**{"h.0.attn.c_attn.weight": torch.zeros(96, 32)}),
            r"h\.0\.attn\.c_attn\.weight has shape \(96, 32\), expected \(32, 96\).*\(in, out\)",
        ),
        (_with(**{"h.1.ln_2.bias": None}), r"missing tensors \['h\.1\.ln_2\.bias'\]"),
        (
            _with(**{"h.0.crossattention.c_attn.weight": torch.zeros(2)}),
            r"unexpected tensors \['h\.0\.crossattention\.c_attn\.weight'\]",
        ),
        (_with(**{"lm_head.weight": torch.zeros(VOCAB, N_EMBD)}), "lm_head.weight differs from wte.weight"),
        (
            _with(**{"h.0.ln_1.bias": torch.zeros(32, dtype=torch.int64)}),
            r"not floating point.*h\.0\.ln_1\.bias",
        ),
        (_with(**{"h.0.ln_1.bias": torch.full((32,), math.nan)}), "NaN or inf"),
        (
            _with(**{"wpe.weight": torch.zeros(16, 31)}),
            r"wpe\.weight has shape \(16, 31\), expected \(16, 32\)",
        ),
        ({"encoder.layer.0.weight": torch.zeros(4, 4)}, "not a Hugging Face GPT-2 weights file"),
        (_with(**{"h.123456789.ln_1.bias": torch.zeros(32)}), "names block h.123456789"),
    ],
    ids=[
        "shape",
        "linear_layout",
        "missing",
        "unexpected",
        "untied_head",
        "int",
        "nan",
        "wpe_width",
        "not_gpt2",
        "stray_block",
    ],
)
def test_weights_that_do_not_fit_are_named(tmp_path, tensors, match):
    with pytest.raises(CheckpointError, match=match):
        load_gpt2_weights(write_model(tmp_path, tensors))


@pytest.mark.parametrize(
    "config, match",
    [
        (False, r"no config\.json next to .*number of attention heads"),
        (hf_config(n_head=None), "n_head=None"),
        (hf_config(n_head=5), "not divisible by n_head=5"),
        (hf_config(n_layer=3), "says n_layer=3 but the weights hold 2"),
        (hf_config(vocab_size=50257), "says vocab_size=50257 but the weights hold 50"),
        (hf_config(activation_function="relu"), "activation_function='relu'"),
        (hf_config(layer_norm_epsilon=1e-6), "layer_norm_epsilon=1e-06"),
        (hf_config(scale_attn_by_inverse_layer_idx=True), "scale_attn_by_inverse_layer_idx=True"),
        (hf_config(model_type="llama"), "'llama' model, not 'gpt2'"),
        ([1, 2], "not an object"),
    ],
    ids=[
        "absent",
        "no_n_head",
        "indivisible",
        "n_layer",
        "vocab",
        "relu",
        "eps",
        "layer_scale",
        "llama",
        "list",
    ],
)
def test_a_config_that_does_not_fit_is_named(tmp_path, config, match):
    with pytest.raises(ConfigError, match=match):
        load_gpt2_weights(write_model(tmp_path, config=config))


def test_config_json_can_be_given_elsewhere(tmp_path):
    weights = write_model(tmp_path / "w", config=False) / "model.safetensors"
    (tmp_path / "cfg.json").write_text(json.dumps(hf_config(activation_function="gelu_pytorch_tanh")))
    model = load_gpt2_weights(weights, config_json=tmp_path / "cfg.json")
    torch.testing.assert_close(logits(model), gpt2_reference(hf_gpt2_tensors(), IDX), rtol=1e-5, atol=1e-5)
    with pytest.raises(ConfigError, match="does not exist"):
        load_gpt2_weights(weights, config_json=tmp_path / "nope.json")
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(ConfigError, match="cannot read .*bad.json"):
        load_gpt2_weights(weights, config_json=tmp_path / "bad.json")


def test_corrupt_pickled_missing_and_arlm_files_are_refused(tmp_path):
    weights = write_model(tmp_path / "m") / "model.safetensors"
    data = weights.read_bytes()
    weights.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="truncated or corrupted"):
        load_gpt2_weights(weights)
    weights.write_bytes(b"\xff" * 64)
    with pytest.raises(CheckpointError, match="truncated or corrupted"):
        load_gpt2_weights(weights)
    pickled = tmp_path / "pytorch_model.bin"
    torch.save(hf_gpt2_tensors(), pickled)
    with pytest.raises(CheckpointError, match="never unpickled"):
        load_gpt2_weights(pickled)
    with pytest.raises(CheckpointError, match="does not exist"):
        load_gpt2_weights(tmp_path / "nowhere" / "model.safetensors")
    with pytest.raises(CheckpointError, match="holds no model.safetensors"):
        load_gpt2_weights(tmp_path)
    save_checkpoint(tmp_path / "run", GPT(GPTConfig(vocab_size=50, n_layer=1, n_embd=32, block_size=8)))
    with pytest.raises(CheckpointError, match="arlm checkpoint already"):
        load_gpt2_weights(tmp_path / "run" / "checkpoint.safetensors")


# -------------------------------------------------------------------------------------------- tokenizer
def gpt2_style_tokenizer_json(texts=("hello world, the quick brown fox.\n",) * 20, vocab_size=300):
    """A small tokenizer.json in GPT-2's configuration and in the form its file has on the Hub.

    GPT-2's file: ids 0-255 are the bytes, then the merges, then <|endoftext|> (in the vocabulary and an
    added special token); no normalizer; ByteLevel pre-tokenizer (no prefix space), post-processor and
    decoder; and a model object without a "type" key, with "" for the subword prefix and suffix.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    hf = Tokenizer(models.BPE())
    hf.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False
    )
    hf.decoder = decoders.ByteLevel()
    hf.train_from_iterator(list(texts), trainer=trainer)
    model = json.loads(hf.to_str())["model"]
    vocab = dict(model["vocab"])
    eot = len(vocab)
    vocab["<|endoftext|>"] = eot
    spec = {
        "version": "1.0",
        "truncation": None,
        "padding": None,
        "added_tokens": [
            {
                "id": eot,
                "special": True,
                "content": "<|endoftext|>",
                "single_word": False,
                "lstrip": False,
                "rstrip": False,
                "normalized": True,
            }
        ],
        "normalizer": None,
        "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True},
        "post_processor": {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": False},
        "decoder": {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True},
        "model": {
            "dropout": None,
            "unk_token": None,
            "continuing_subword_prefix": "",
            "end_of_word_suffix": "",
            "fuse_unk": False,
            "vocab": vocab,
            "merges": [" ".join(pair) for pair in model["merges"]],
        },
    }
    return json.dumps(spec, ensure_ascii=False)


TEXTS = ["hello world", " leading space", "the fox<|endoftext|>next doc", "é 日本語 🙂\n\n\tx  ", ""]


def test_gpt2s_tokenizer_json_loads_and_round_trips(tmp_path):
    from tokenizers import Tokenizer

    path = tmp_path / "tokenizer.json"
    path.write_text(gpt2_style_tokenizer_json(), encoding="utf-8")
    tokenizer = load_gpt2_tokenizer(path)
    hf = Tokenizer.from_file(str(path))  # Hugging Face's own reading of the file: the reference ids
    assert tokenizer.vocab_size == hf.get_vocab_size() > 256 + 20  # bytes, merges, <|endoftext|>
    assert tokenizer.bos_id == hf.token_to_id("Ċ")  # "\n", one token, as in GPT-2 (198)
    for text in TEXTS:
        ids = tokenizer.encode(text)
        assert ids == hf.encode(text).ids
        assert tokenizer.decode(ids) == text
    assert tokenizer.encode("<|endoftext|>") == [tokenizer.vocab_size - 1]
    assert tokenizer.encode("hello world") != [ord(c) for c in "hello world"]  # merges are applied


WORDPIECE = {
    "type": "WordPiece",
    "unk_token": "!",
    "continuing_subword_prefix": "##",
    "max_input_chars_per_word": 100,
}


@pytest.mark.parametrize(
    "edit, match",
    [
        (
            lambda s: s["pre_tokenizer"].update(add_prefix_space=True),
            "add_prefix_space",
        ),
        (lambda s: s.update(normalizer={"type": "NFC"}), "normalizer"),
        (
            lambda s: s.update(model={**WORDPIECE, "vocab": s["model"]["vocab"]}),
            "WordPiece",
        ),
        (lambda s: s.pop("model"), "no 'model' object"),
    ],
    ids=["prefix_space", "normalizer", "wordpiece", "no_model"],
)
def test_tokenizers_that_are_not_gpt2s_are_refused(tmp_path, edit, match):
    spec = json.loads(gpt2_style_tokenizer_json())
    edit(spec)
    path = tmp_path / "tokenizer.json"
    path.write_text(json.dumps(spec))
    with pytest.raises(TokenizerError, match=match):
        load_gpt2_tokenizer(path)
    path.write_text("{")
    with pytest.raises(TokenizerError, match="not valid JSON"):
        load_gpt2_tokenizer(path)
    with pytest.raises(TokenizerError, match="does not exist"):
        load_gpt2_tokenizer(tmp_path / "missing.json")


# -------------------------------------------------------------------------------------------------- CLI
@pytest.fixture(scope="module")
def gpt2_dir(tmp_path_factory):
    """A complete tiny GPT-2 download: weights, config.json and a tokenizer.json of the same vocabulary."""
    tokenizer = gpt2_style_tokenizer_json()
    vocab = len(json.loads(tokenizer)["model"]["vocab"])
    tensors = hf_gpt2_tensors(vocab=vocab, seed=5)
    directory = tmp_path_factory.mktemp("hub") / "gpt2"
    write_model(directory, tensors, hf_config(vocab_size=vocab), tokenizer)
    return directory, tensors


def test_import_gpt2_then_sample_and_eval(gpt2_dir, tmp_path, capsys):
    directory, tensors = gpt2_dir
    out = tmp_path / "my run"  # the printed hint quotes the path, so it can be pasted into a shell
    assert main(["import-gpt2", "--weights", str(directory), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "4 heads" in printed
    hint = printed.split("try: ", 1)[1].strip()
    assert shlex.split(hint)[:5] == ["python", "-m", "arlm_lib", "sample", "--checkpoint"]
    assert shlex.split(hint)[5] == str(out)
    assert sorted(p.name for p in out.iterdir()) == ["checkpoint.safetensors"]
    saved = load_checkpoint(out)
    assert saved.model_config.activation == "gelu_tanh" and saved.tokenizer["kind"] == "bpe"
    model, tokenizer = load_model(out)
    assert tokenizer == load_gpt2_tokenizer(directory / "tokenizer.json")
    idx = torch.randint(0, tokenizer.vocab_size, (1, CONTEXT), generator=torch.Generator().manual_seed(3))
    torch.testing.assert_close(logits(model, idx), gpt2_reference(tensors, idx), rtol=1e-5, atol=1e-5)

    prompt = "hello"
    args = ["sample", "--checkpoint", str(out), "--prompt", prompt, "--temperature", "0"]
    assert main([*args, "--max-new-tokens", "6", "--device", "cpu"]) == 0
    text = capsys.readouterr().out
    assert text.startswith(prompt) and len(text) > len(prompt)
    # Greedy decoding, recomputed from the reference forward pass: the printed text is GPT-2's choice.
    ids = tokenizer.encode(prompt)
    for _ in range(6):
        ids.append(int(gpt2_reference(tensors, torch.tensor([ids[-CONTEXT:]]))[0, -1].argmax()))
    assert text.rstrip("\n") == tokenizer.decode(ids).rstrip("\n")

    data = tmp_path / "text.txt"
    data.write_text("hello world, the quick brown fox.\n" * 30)
    assert main(["eval", "--checkpoint", str(out), "--data", str(data), "--device", "cpu"]) == 0
    assert "perplexity" in capsys.readouterr().out

    # Importing again into the same --out is refused; the checkpoint stays as it was.
    before = (out / "checkpoint.safetensors").read_bytes()
    assert main(["import-gpt2", "--weights", str(directory), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "already holds a checkpoint" in err and len(err.strip().splitlines()) == 1
    assert (out / "checkpoint.safetensors").read_bytes() == before


def _cli_case(tmp_path, gpt2_dir, case):
    """(extra flags, expected message) for one way of giving import-gpt2 bad input."""
    directory, tensors = gpt2_dir
    weights = ["--weights", str(directory)]
    if case == "missing_weights":
        return ["--weights", str(tmp_path / "nope")], "does not exist"
    if case == "missing_tokenizer":
        bare = write_model(tmp_path / "bare", tensors, hf_config(vocab_size=tensors["wte.weight"].shape[0]))
        return ["--weights", str(bare)], r"no tokenizer\.json next to --weights"
    if case == "vocab_mismatch":
        other = tmp_path / "other.json"
        other.write_text(gpt2_style_tokenizer_json(vocab_size=260))
        vocab = tensors["wte.weight"].shape[0]
        return [*weights, "--tokenizer", str(other)], f"has 261 tokens but the weights embed {vocab}"
    if case == "wrong_tokenizer_file":
        return [*weights, "--tokenizer", str(directory / "config.json")], "no 'model' object"
    if case == "wrong_config":
        return [*weights, "--config", str(directory / "tokenizer.json")], "n_head=None"
    if case == "weights_not_gpt2":
        save_file({"x": torch.zeros(2)}, tmp_path / "x.safetensors")
        return ["--weights", str(tmp_path / "x.safetensors")], "not a Hugging Face GPT-2 weights file"
    raise AssertionError(case)


CLI_CASES = [
    "missing_weights",
    "missing_tokenizer",
    "vocab_mismatch",
    "wrong_tokenizer_file",
    "wrong_config",
    "weights_not_gpt2",
]


@pytest.mark.parametrize("case", CLI_CASES)
def test_import_gpt2_bad_input_is_one_line_and_writes_nothing(gpt2_dir, tmp_path, capsys, case):
    flags, match = _cli_case(tmp_path, gpt2_dir, case)
    out = tmp_path / "run"
    assert main(["import-gpt2", *flags, "--out", str(out)]) == 2
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ")
    assert re.search(match, lines[0]), lines[0]
    assert not out.exists() and captured.out == ""


def test_import_gpt2_refuses_a_directory_of_other_files(gpt2_dir, tmp_path, capsys):
    out = tmp_path / "notes"
    out.mkdir()
    (out / "todo.txt").write_text("mine")
    assert main(["import-gpt2", "--weights", str(gpt2_dir[0]), "--out", str(out)]) == 2
    assert "refusing to clobber" in capsys.readouterr().err
    assert sorted(p.name for p in out.iterdir()) == ["todo.txt"]


def test_import_gpt2_help_names_every_flag_and_no_none_default(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["import-gpt2", "--help"])
    out = capsys.readouterr().out
    assert exit_info.value.code == 0 and "(default: None)" not in out
    assert all(flag in out for flag in ("--weights", "--config", "--tokenizer", "--out"))
