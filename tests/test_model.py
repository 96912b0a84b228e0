"""The GPT model: causality, the two attention paths, the KV cache, padding, init and learning."""

import json
import math
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.nn import functional as F

from arlm_lib.errors import ConfigError, DataError
from arlm_lib.model import GPT, PRESETS, ROPE_BASE, GPTConfig, apply_rotary, attention_mask_4d, rotary_angles

SMALL = GPTConfig(vocab_size=37, block_size=24, n_layer=2, n_head=4, n_embd=32)


def make_pair(config=SMALL, seed=0):
    """The same weights behind the fast and the explicit attention paths."""
    torch.manual_seed(seed)
    fast = GPT(replace(config, attention="fast")).eval()
    explicit = GPT(replace(config, attention="explicit")).eval()
    explicit.load_state_dict(fast.state_dict())
    return fast, explicit


@pytest.mark.parametrize("path", ["fast", "explicit"])
@pytest.mark.parametrize("norm_position", ["pre", "post"])
@pytest.mark.parametrize("position_encoding", ["learned", "rope"])
def test_changing_future_tokens_leaves_past_logits_unchanged(path, norm_position, position_encoding):
    torch.manual_seed(1)
    config = replace(SMALL, attention=path, norm_position=norm_position, position_encoding=position_encoding)
    model = GPT(config).eval()
    idx = torch.randint(0, SMALL.vocab_size, (2, 20))
    t = 9
    changed = idx.clone()
    changed[:, t + 1 :] = torch.randint(0, SMALL.vocab_size, (2, 20 - t - 1))
    before, after = model(idx).logits, model(changed).logits
    torch.testing.assert_close(before[:, : t + 1], after[:, : t + 1], rtol=0, atol=1e-6)
    assert not torch.allclose(before[:, t + 1 :], after[:, t + 1 :])  # the future did change something


@pytest.mark.parametrize("qk_layernorm", [False, True])
def test_fast_path_equals_explicit_path(qk_layernorm):
    fast, explicit = make_pair(replace(SMALL, qk_layernorm=qk_layernorm))
    idx = torch.randint(0, SMALL.vocab_size, (3, 24))
    torch.testing.assert_close(fast(idx).logits, explicit(idx).logits, rtol=0, atol=1e-5)
    # return_attention forces the explicit computation on either path; it must not change outputs
    torch.testing.assert_close(fast(idx, return_attention=True).logits, fast(idx).logits, rtol=0, atol=1e-5)


def test_attention_rows_sum_to_one_and_nothing_above_the_diagonal():
    _, explicit = make_pair()
    out = explicit(torch.randint(0, SMALL.vocab_size, (2, 16)), return_attention=True)
    assert len(out.attentions) == SMALL.n_layer
    for weights in out.attentions:
        assert weights.shape == (2, SMALL.n_head, 16, 16)
        torch.testing.assert_close(weights.sum(-1), torch.ones(2, SMALL.n_head, 16))
        above = torch.triu(torch.ones(16, 16, dtype=torch.bool), diagonal=1)
        assert torch.all(weights[..., above] == 0)
        assert torch.all(weights[..., ~above] > 0)


def reference_forward(model: GPT, idx: torch.Tensor) -> tuple[torch.Tensor, float]:
    """The model's function written out from its parameters with plain tensor ops (no module calls):
    logits and the largest pre-softmax attention score over all layers and heads."""
    c = model.config
    p = dict(model.named_parameters(remove_duplicate=False))
    B, T = idx.shape
    H, D = c.n_head, c.head_dim
    allowed = torch.tensor([[j <= i for j in range(T)] for i in range(T)])
    max_logits = []

    def ln(x, name):
        w, b = p[f"{name}.weight"], p.get(f"{name}.bias")
        mean = x.mean(-1, keepdim=True)
        var = ((x - mean) ** 2).mean(-1, keepdim=True)
        out = (x - mean) / torch.sqrt(var + 1e-5) * w
        return out + b if b is not None else out

    def linear(x, name):
        out = x @ p[f"{name}.weight"].T
        return out + p[f"{name}.bias"] if f"{name}.bias" in p else out

    def rope(x):
        # RoPE as a complex product: dims m and m + D/2 are one complex number, multiplied by
        # e^(i * position * base^(-2m/D)) (an independent writing of the library's cos/sin rotation).
        z = torch.complex(x[..., : D // 2].double(), x[..., D // 2 :].double())
        freqs = ROPE_BASE ** (-torch.arange(D // 2, dtype=torch.float64) * 2 / D)
        turned = z * torch.polar(torch.ones(T, D // 2, dtype=torch.float64), torch.arange(T)[:, None] * freqs)
        return torch.cat([turned.real, turned.imag], dim=-1).float()

    def attention(h, pre):
        q, k, v = linear(h, f"{pre}.attn.c_attn").split(c.n_embd, dim=2)
        q, k, v = (t.reshape(B, T, H, D).transpose(1, 2) for t in (q, k, v))
        if c.qk_layernorm:
            q, k = ln(q, f"{pre}.attn.q_ln"), ln(k, f"{pre}.attn.k_ln")
        if c.position_encoding == "rope":
            q, k = rope(q), rope(k)
        scores = (q @ k.transpose(-2, -1)) / math.sqrt(D)
        max_logits.append(scores[..., allowed].max().item())
        weights = torch.softmax(scores.masked_fill(~allowed, -math.inf), dim=-1)
        y = (weights @ v).transpose(1, 2).reshape(B, T, c.n_embd)
        return linear(y, f"{pre}.attn.c_proj")

    def gelu(x):
        if c.activation == "gelu_tanh":  # GPT-2's approximation
            return 0.5 * x * (1 + torch.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x**3)))
        return 0.5 * x * (1 + torch.erf(x / math.sqrt(2)))

    def mlp(h, pre):
        return linear(gelu(linear(h, f"{pre}.mlp.c_fc")), f"{pre}.mlp.c_proj")

    x = p["transformer.wte.weight"][idx]
    if c.position_encoding == "learned":
        x = x + p["transformer.wpe.weight"][torch.arange(T)]
    for layer in range(c.n_layer):
        pre = f"transformer.h.{layer}"
        if c.norm_position == "pre":
            a = attention(ln(x, f"{pre}.ln_1"), pre)
            x = x + a if c.residual else a
            m = mlp(ln(x, f"{pre}.ln_2"), pre)
            x = x + m if c.residual else m
        else:
            a = attention(x, pre)
            x = ln(x + a if c.residual else a, f"{pre}.ln_1")
            m = mlp(x, pre)
            x = ln(x + m if c.residual else m, f"{pre}.ln_2")
    if c.norm_position == "pre":
        x = ln(x, "transformer.ln_f")
    return x @ p["lm_head.weight"].T, max(max_logits)


@pytest.mark.parametrize(
    "overrides",
    [
        {},
        dict(norm_position="post"),
        dict(qk_layernorm=True),
        dict(residual=False),
        dict(norm_position="post", residual=False, qk_layernorm=True),
        dict(bias=False),
        dict(activation="gelu_tanh"),
        dict(position_encoding="rope"),
        dict(position_encoding="rope", qk_layernorm=True, norm_position="post"),
    ],
    ids=[
        "pre",
        "post",
        "qk_layernorm",
        "no_residual",
        "post_no_residual_qk",
        "no_bias",
        "gelu_tanh",
        "rope",
        "rope_qk_post",
    ],
)
def test_both_attention_paths_compute_the_written_out_transformer(overrides):
    """An independent oracle: each architecture switch (pre/post LayerNorm, skip connections, QK
    LayerNorm, biases) must change the function exactly as the written-out formulas say."""
    fast, explicit = make_pair(replace(SMALL, **overrides), seed=3)
    with torch.no_grad():
        # Non-trivial LayerNorm gains and biases, so a LayerNorm applied in the wrong place shows.
        for name, p in fast.named_parameters():
            if "ln" in name:
                p.add_(0.3 * torch.randn_like(p))
        explicit.load_state_dict(fast.state_dict())
        idx = torch.randint(0, SMALL.vocab_size, (2, 13), generator=torch.Generator().manual_seed(4))
        expected, expected_max = reference_forward(fast, idx)
        assert expected.abs().max() > 0.1  # not a degenerate all-zero output
        for model in (fast, explicit):
            torch.testing.assert_close(model(idx).logits, expected, rtol=0, atol=2e-5)
        out = explicit(idx, return_attention=True)
        torch.testing.assert_close(out.logits, expected, rtol=0, atol=2e-5)
        assert out.max_attn_logit == pytest.approx(expected_max, abs=1e-5)


@pytest.mark.parametrize("position_encoding", ["learned", "rope"])
def test_kv_cache_matches_recomputing_the_prefix(position_encoding):
    fast, _ = make_pair(replace(SMALL, position_encoding=position_encoding))
    idx = torch.randint(0, SMALL.vocab_size, (2, 20))
    full = fast(idx).logits
    cache = fast.new_kv_cache(batch_size=2)
    pieces = [fast(idx[:, :7], kv_cache=cache).logits]
    for t in range(7, 20):
        pieces.append(fast(idx[:, t : t + 1], kv_cache=cache).logits)
    assert cache.length == 20
    torch.testing.assert_close(torch.cat(pieces, dim=1), full, rtol=0, atol=1e-5)


def test_hidden_states_are_what_lm_head_reads_with_and_without_the_cache():
    # Contrastive search compares these vectors: they must be the final LayerNorm's output, the input
    # of lm_head (so that lm_head of them is the logits), one per position, and the same whether the
    # positions come in one pass or one at a time through the KV cache.
    fast, _ = make_pair()
    idx = torch.randint(0, SMALL.vocab_size, (2, 12))
    out = fast(idx)
    assert out.hidden_states.shape == (2, 12, SMALL.n_embd)
    torch.testing.assert_close(fast.lm_head(out.hidden_states), out.logits, rtol=0, atol=1e-5)
    cache = fast.new_kv_cache(batch_size=2)
    pieces = [fast(idx[:, :5], kv_cache=cache).hidden_states]
    pieces += [fast(idx[:, t : t + 1], kv_cache=cache).hidden_states for t in range(5, 12)]
    torch.testing.assert_close(torch.cat(pieces, dim=1), out.hidden_states, rtol=0, atol=1e-5)


@pytest.mark.parametrize("position_encoding", ["learned", "rope"])
def test_kv_cache_under_autocast_stores_the_autocast_dtype_and_matches_recomputing(position_encoding):
    # Generating inside autocast (float32 weights, bf16 compute; CUDA's usual setting, simulated with
    # CPU autocast): the cache must hold bf16 like the keys it stores, not float32 copies of twice the size.
    # The weights are scaled up (logits of size ~3, not ~0.6 at init) and the tolerance is a fraction of
    # the largest logit: at init, a stale key or a zeroed value in the cache moves the logits by only
    # ~0.01, inside any bf16 tolerance; here it moves them by ~0.5 or more.
    fast, _ = make_pair(replace(SMALL, position_encoding=position_encoding))
    with torch.no_grad():
        for p in fast.parameters():
            if p.dim() > 1:
                p.mul_(8.0)
    idx = torch.randint(0, SMALL.vocab_size, (2, 12))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        cache = fast.new_kv_cache(batch_size=2)
        assert cache.keys.dtype == cache.values.dtype == torch.bfloat16
        full = fast(idx).logits
        pieces = [fast(idx[:, :5], kv_cache=cache).logits]
        pieces += [fast(idx[:, t : t + 1], kv_cache=cache).logits for t in range(5, 12)]
    scale = full.abs().max().item()
    assert scale > 1.5  # the scaled weights give logits large enough for the tolerance below to mean much
    # bf16 keeps ~3 significant digits: 2% of the largest logit is rounding, not a cache bug.
    torch.testing.assert_close(torch.cat(pieces, dim=1), full, rtol=0, atol=0.02 * scale)
    assert fast.new_kv_cache(batch_size=1).keys.dtype == torch.float32  # outside autocast: the weights'


@pytest.mark.parametrize("position_encoding", ["learned", "rope"])
def test_left_padding_with_mask_and_positions_matches_the_unpadded_sequence(position_encoding):
    fast, explicit = make_pair(replace(SMALL, position_encoding=position_encoding))
    idx = torch.randint(0, SMALL.vocab_size, (1, 12))
    pad = 5
    padded = torch.cat([torch.zeros(1, pad, dtype=torch.long), idx], dim=1)
    mask = torch.cat([torch.zeros(1, pad), torch.ones(1, 12)], dim=1)
    positions = (mask.cumsum(1) - 1).clamp(min=0).long()
    for model in (fast, explicit):
        out = model(padded, attention_mask=mask, position_ids=positions).logits
        assert torch.isfinite(out).all()  # padding rows must not produce NaN
        torch.testing.assert_close(out[:, pad:], model(idx).logits, rtol=0, atol=1e-5)


def test_rope_scores_depend_on_positions_only_through_their_offset():
    torch.manual_seed(0)
    q, k = torch.randn(1, 1, 1, 16), torch.randn(1, 1, 1, 16)
    positions = torch.arange(40)
    cos, sin = rotary_angles(positions[None], head_dim=16)
    turned_q = apply_rotary(q.expand(1, 1, 40, 16), cos, sin)[0, 0]
    turned_k = apply_rotary(k.expand(1, 1, 40, 16), cos, sin)[0, 0]
    scores = turned_q @ turned_k.T  # scores[i, j]: q at position i against k at position j
    assert torch.allclose(turned_q.norm(dim=-1), q.norm().expand(40), atol=1e-5)  # rotations keep lengths
    for offset in (-7, 0, 3, 25):
        diagonal = torch.diagonal(scores, offset=offset)
        assert diagonal.max() - diagonal.min() < 1e-4, offset  # one value per offset j - i
    # ...and the offset matters: otherwise the test above would pass for no rotation at all.
    assert abs(torch.diagonal(scores, 0)[0] - torch.diagonal(scores, 3)[0]) > 0.05
    # Position 0 is not turned, and the fastest pair turns by exactly 1 radian per position.
    assert torch.equal(turned_q[0], q[0, 0, 0])
    assert cos[0, 0, 1, 0].item() == pytest.approx(math.cos(1.0)) and sin[0, 0, 1, 0].item() == pytest.approx(
        math.sin(1.0)
    )


def test_a_rope_model_sees_only_relative_positions_and_a_learned_one_absolute_ones():
    """Shifting every position by the same amount leaves a RoPE model's logits as they were (no table of
    absolute positions), and changes a learned-position model's."""
    idx = torch.randint(0, SMALL.vocab_size, (2, 10), generator=torch.Generator().manual_seed(5))
    shifted = torch.arange(9, 19)[None]
    rope, _ = make_pair(replace(SMALL, position_encoding="rope"))
    learned, _ = make_pair(SMALL)
    assert "wpe" not in rope.transformer and rope.num_params() == rope.num_params(non_embedding=False)
    torch.testing.assert_close(rope(idx, position_ids=shifted).logits, rope(idx).logits, rtol=0, atol=1e-5)
    assert (learned(idx, position_ids=shifted).logits - learned(idx).logits).abs().max() > 1e-2


def test_fractional_positions_turn_a_rope_model_and_are_refused_by_a_learned_table():
    idx = torch.randint(0, SMALL.vocab_size, (1, 6), generator=torch.Generator().manual_seed(1))
    rope, _ = make_pair(replace(SMALL, position_encoding="rope"))
    halves = torch.arange(6)[None] / 2
    squeezed = rope(idx, position_ids=halves).logits
    assert torch.isfinite(squeezed).all() and not torch.allclose(squeezed, rope(idx).logits)
    learned, _ = make_pair(SMALL)
    with pytest.raises(DataError, match=r"position_ids must be integers .* got dtype torch.float32.*'rope'"):
        learned(idx, position_ids=halves)


def test_rope_in_bfloat16_turns_by_float32_angles():
    # In bfloat16, position 1000 itself would round to 1000 or 1008; the angles must not.
    cos, sin = rotary_angles(torch.tensor([[1001]]), head_dim=8)
    x = torch.ones(1, 1, 1, 8, dtype=torch.bfloat16)
    turned = apply_rotary(x, cos, sin)
    assert turned.dtype == torch.bfloat16
    expected = torch.tensor([math.cos(1001) - math.sin(1001), math.sin(1001) + math.cos(1001)])
    assert torch.allclose(turned[0, 0, 0, [0, 4]].float(), expected, atol=2e-2)


@pytest.mark.parametrize("past", [0, 3])
def test_the_4d_mask_is_causal_hides_padding_and_lets_each_query_see_itself(past):
    """Brute force over every (row, query, key): key j is visible to new token i (at position past + i)
    when it is not in the future and is a real token, or when it is that token itself (so a padding
    query, even after a cache, keeps one finite score instead of a NaN softmax row)."""
    n_new, length = 3, past + 3
    rows = [[1] * length, [0] * length, [j % 2 for j in range(length)], [0, 0] + [1] * (length - 2)]
    keys = torch.tensor(rows)
    mask = attention_mask_4d(n_new, past, keys)
    assert mask.shape == (len(rows), 1, n_new, length)
    for b, row in enumerate(rows):
        for i in range(n_new):
            for j in range(length):
                expected = j <= past + i and (row[j] == 1 or j == past + i)
                assert bool(mask[b, 0, i, j]) == expected, (b, i, j)
    if past:
        plain = attention_mask_4d(n_new, past, None)[0, 0]
        assert plain.tolist() == [[j <= past + i for j in range(length)] for i in range(n_new)]
    else:
        assert attention_mask_4d(n_new, 0, None) is None  # the fused kernel's plain causal case


def test_targets_of_minus_100_are_left_out_of_the_loss():
    """-100 marks a position to ignore (padding, a prompt): the loss is the mean cross-entropy over the
    other positions only, not one where -100 counts as token 0 or as one more position in the mean."""
    torch.manual_seed(3)
    model = GPT(SMALL).eval()
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() > 1:
                p.mul_(8.0)  # peaked distributions: token 0 is not about as likely as every target
    idx = torch.randint(0, SMALL.vocab_size, (2, 16))
    targets = torch.randint(1, SMALL.vocab_size, (2, 16))
    targets[0, :6] = -100
    targets[1, 9] = -100
    out = model(idx, targets)
    logits, kept = out.logits.float(), targets != -100
    expected = F.cross_entropy(logits[kept], targets[kept])
    torch.testing.assert_close(out.loss, expected, rtol=1e-6, atol=1e-6)
    as_token_0 = F.cross_entropy(logits.view(-1, SMALL.vocab_size), targets.clamp(min=0).view(-1))
    assert abs(as_token_0.item() - expected.item()) > 1e-3  # 1000 times the tolerance: a real test
    torch.testing.assert_close(model(idx, targets, loss_only=True).loss, expected, rtol=1e-6, atol=1e-6)


def test_context_longer_than_block_size_is_an_error():
    model = GPT(SMALL)
    with pytest.raises(ConfigError, match="block_size=24"):
        model(torch.zeros(1, 25, dtype=torch.long))


@torch.no_grad()
def test_the_context_limit_counts_the_tokens_already_in_the_kv_cache():
    # The limit is on past + new tokens: one token at a time through a cache must still stop at
    # block_size with the same ConfigError, before any position past the table is looked up.
    model = GPT(SMALL).eval()
    cache = model.new_kv_cache(batch_size=1)
    model(torch.zeros(1, 20, dtype=torch.long), kv_cache=cache)
    model(torch.zeros(1, 4, dtype=torch.long), kv_cache=cache)  # exactly block_size: allowed
    assert cache.length == SMALL.block_size == 24
    with pytest.raises(
        ConfigError, match=r"sequence length 25 exceeds the model's context \(block_size=24\)"
    ):
        model(torch.zeros(1, 1, dtype=torch.long), kv_cache=cache)
    assert cache.length == 24  # the refused call stored nothing
    assert model.new_kv_cache(batch_size=1, max_length=24).max_length == 24
    with pytest.raises(ConfigError, match=r"max_length=25 exceeds the model's context \(block_size=24\)"):
        model.new_kv_cache(batch_size=1, max_length=25)


def test_loss_at_initialisation_is_log_vocab_size():
    torch.manual_seed(0)
    config = GPTConfig(vocab_size=256, block_size=32, n_layer=2, n_head=2, n_embd=64)
    model = GPT(config)
    assert abs(model.transformer.wte.weight.std().item() - 0.02) < 0.002
    idx = torch.randint(0, 256, (8, 32))
    loss = model(idx, torch.randint(0, 256, (8, 32))).loss.item()
    # Logits ~ N(0, 0.02^2 * n_embd): the expected excess over log V is about that variance / 2 = 0.013
    # nats. An embedding init 3x too large gives 0.2, which the old 10% band (0.55 nats) let through.
    assert abs(loss - math.log(256)) < 0.05


@pytest.mark.parametrize("attention", ["fast", "explicit"])
def test_dropout_is_active_in_training_and_off_in_eval(attention):
    """Several tests rely on "with dropout on, two runs would differ": this is where that is checked."""
    torch.manual_seed(0)
    config = GPTConfig(
        vocab_size=37, block_size=24, n_layer=2, n_head=4, n_embd=32, dropout=0.3, attention=attention
    )
    model = GPT(config)
    idx = torch.randint(0, 37, (2, 16))
    model.train()
    assert not torch.allclose(model(idx).logits, model(idx).logits)
    model.eval()
    assert torch.equal(model(idx).logits, model(idx).logits)


def test_weight_tying_and_scaled_residual_init():
    torch.manual_seed(0)
    config = GPTConfig(vocab_size=50, block_size=16, n_layer=8, n_head=4, n_embd=256)
    model = GPT(config)
    assert model.lm_head.weight is model.transformer.wte.weight
    proj_std = model.transformer.h[0].attn.c_proj.weight.std().item()
    fc_std = model.transformer.h[0].mlp.c_fc.weight.std().item()
    assert abs(fc_std - 0.02) < 0.002
    assert abs(proj_std - 0.02 / math.sqrt(2 * 8)) < 0.001
    # Every projection into the residual stream, in every block (attention and MLP), is scaled.
    for block in model.transformer.h:
        for proj in (block.attn.c_proj, block.mlp.c_proj):
            assert abs(proj.weight.std().item() - 0.02 / math.sqrt(2 * 8)) < 0.001
            assert torch.count_nonzero(proj.bias) == 0
        assert abs(block.attn.c_attn.weight.std().item() - 0.02) < 0.002
    assert abs(model.transformer.wpe.weight.std().item() - 0.02) < 0.002
    # Tied means one tensor: a step on the head moves the embedding too.
    with torch.no_grad():
        model.lm_head.weight[3, 5] = 7.0
    assert model.transformer.wte.weight[3, 5].item() == 7.0
    assert model.num_params(non_embedding=False) == sum(
        p.numel() for p in {id(p): p for p in model.parameters()}.values()
    )


def test_overfits_one_fixed_batch():
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=20, block_size=16, n_layer=2, n_head=2, n_embd=64))
    x = torch.randint(0, 20, (4, 16))
    y = torch.randint(0, 20, (4, 16))
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    for _ in range(300):
        loss = model(x, y).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert loss.item() < 0.1


def test_presets_and_parameter_counts():
    assert set(PRESETS) >= {"tiny", "small", "gpt2"}
    small = PRESETS["small"]
    assert (small.n_layer, small.n_head, small.n_embd, small.block_size) == (6, 6, 384, 256)
    gpt2 = GPT(GPTConfig.from_preset("gpt2", vocab_size=50257))
    # GPT-2 small: 124,439,808 parameters with its 50,257-token vocabulary and 1,024 positions.
    assert gpt2.num_params(non_embedding=False) == 124_439_808


@pytest.mark.parametrize(
    "overrides, match",
    [
        (dict(n_embd=30, n_head=4), "divisible"),
        (dict(n_layer=0), "n_layer=0"),
        (dict(norm_position="middle"), "norm_position"),
        (dict(attention="flash"), "attention"),
        (dict(dropout=1.5), "dropout"),
        (dict(dropout="0.1"), "dropout='0.1'"),
        # Switches are tested for truth: "no" would mean True, 0 would mean False, both silently.
        (dict(bias="no"), "bias='no'"),
        (dict(residual=0), "residual=0"),
        (dict(qk_layernorm="yes"), "qk_layernorm='yes'"),
        (dict(activation="relu"), r"activation='relu' is not allowed: choose one of \('gelu', 'gelu_tanh'\)"),
        (dict(n_lyr=3), r"n_lyr.*allowed fields.*n_layer"),
        (dict(position_encoding="alibi"), r"position_encoding='alibi' is not allowed.*'learned', 'rope'"),
        (
            dict(position_encoding="rope", n_embd=36, n_head=4),
            r"head width n_embd/n_head must be even; here it is 36/4 = 9",
        ),
    ],
)
def test_bad_config_values_are_named(overrides, match):
    with pytest.raises(ConfigError, match=match):
        GPTConfig.from_preset("tiny", **overrides)


def test_a_dropout_of_none_is_named_not_a_raw_type_error():
    # (from_preset skips None overrides, so build the config directly.)
    with pytest.raises(ConfigError, match="dropout=None"):
        GPTConfig(dropout=None)


def test_numpy_scalars_are_accepted_and_stored_as_python_values():
    # Values from a numpy grid or array: np.int64 is an integer, but json.dumps refuses it.
    config = GPTConfig(
        vocab_size=np.int64(37), n_embd=np.int64(32), n_head=np.int32(4), dropout=np.float32(0.5)
    )
    data = config.to_dict()
    assert [type(data[k]) for k in ("vocab_size", "n_embd", "n_head", "dropout")] == [int, int, int, float]
    assert GPTConfig.from_dict(json.loads(json.dumps(data))) == config
    assert config == replace(SMALL, vocab_size=37, block_size=128, n_layer=4, dropout=0.5)
    with pytest.raises(ConfigError, match="n_layer"):
        GPTConfig(n_layer=np.bool_(True))


def test_unknown_preset_lists_the_known_ones():
    with pytest.raises(ConfigError, match="tiny"):
        GPTConfig.from_preset("huge")


def test_config_round_trip_rejects_unknown_fields():
    data = PRESETS["tiny"].to_dict()
    assert GPTConfig.from_dict(data) == PRESETS["tiny"]
    with pytest.raises(ConfigError, match="rotary"):
        GPTConfig.from_dict({**data, "rotary": True})


def test_checkpoints_saved_before_the_activation_field_load_with_exact_gelu():
    from arlm_lib.checkpoint import load_checkpoint

    shipped = sorted((Path(__file__).parent.parent / "arlm_lib" / "pretrained").glob("*.safetensors"))
    assert shipped
    for path in shipped:
        saved = load_checkpoint(path)
        assert saved.model_config.activation == "gelu"
    old = {k: v for k, v in PRESETS["tiny"].to_dict().items() if k != "activation"}
    assert GPTConfig.from_dict(old) == PRESETS["tiny"]
    assert GPT(GPTConfig.from_dict(old)).transformer.h[0].mlp.gelu.approximate == "none"


def test_checkpoints_saved_before_rope_load_with_learned_positions():
    from arlm_lib import zoo
    from arlm_lib.checkpoint import load_checkpoint

    # Shipped before the field existed, without it in their config.
    for name in ("tiny-synthetic", "tiny-copy", "tiny-prose"):
        assert load_checkpoint(zoo.shipped_checkpoint(name)).model_config.position_encoding == "learned"
    assert (
        load_checkpoint(zoo.shipped_checkpoint("tiny-synthetic-rope")).model_config.position_encoding
        == "rope"
    )
    old = {k: v for k, v in PRESETS["tiny"].to_dict().items() if k != "position_encoding"}
    assert GPTConfig.from_dict(old).position_encoding == "learned"
    assert "wpe" in GPT(GPTConfig.from_dict(old)).transformer


def test_gelu_tanh_is_the_tanh_approximation():
    x = torch.linspace(-4, 4, 101)
    for activation, approximate in (("gelu", "none"), ("gelu_tanh", "tanh")):
        mlp = GPT(replace(SMALL, activation=activation)).transformer.h[0].mlp
        torch.testing.assert_close(mlp.gelu(x), F.gelu(x, approximate=approximate), rtol=0, atol=0)


@pytest.mark.parametrize("device", ["gpu", "cuda:x", "tpu"])
def test_load_model_names_a_bad_device_and_the_choices(tmp_path, device):
    # torch's own error lists some thirty device types and never says which value was wrong.
    from arlm_lib.checkpoint import load_model, save_checkpoint
    from arlm_lib.errors import DeviceError

    save_checkpoint(tmp_path / "run", GPT(SMALL))
    with pytest.raises(DeviceError, match=rf"unknown device {device!r}: choose one of .*'cpu', 'cuda'"):
        load_model(tmp_path / "run", device=device)
    model, _ = load_model(tmp_path / "run", device=torch.device("cpu"))
    assert next(model.parameters()).device.type == "cpu"


@pytest.mark.parametrize(
    "idx, match",
    [
        ([[1, 2, 3]], r"idx must be a tensor of token ids of shape \(batch, time\), got a list"),
        (torch.tensor([1, 2, 3]), r"got shape \(3,\) \(for one sequence, use idx\[None\]\)"),
        (
            torch.zeros(1, 2, 3, dtype=torch.long),
            r"idx must have shape \(batch, time\), got shape \(1, 2, 3\)$",
        ),
        (torch.tensor([[1.0, 2.0]]), r"idx must hold integer token ids, got dtype torch.float32"),
        (torch.tensor([[True, False]]), r"got dtype torch.bool"),
    ],
    ids=["list", "1-D", "3-D", "float", "bool"],
)
def test_forward_names_input_that_is_not_a_batch_of_token_ids(idx, match):
    """What a learner passes first: these reached the embedding (a float was read as an index error,
    a list as a missing ``.shape``); now each names the value and what is expected."""
    model = GPT(GPTConfig(vocab_size=8, block_size=8, n_layer=1, n_head=1, n_embd=8))
    with pytest.raises(DataError, match=match):
        model(idx)
    assert model(torch.tensor([[1, 2, 3]], dtype=torch.int32)).logits.shape == (1, 3, 8)  # any integer dtype


@pytest.mark.parametrize("config", ["tiny", {"vocab_size": 8}, None])
def test_gpt_names_a_config_that_is_not_a_gpt_config(config):
    with pytest.raises(ConfigError, match=rf"GPT takes a GPTConfig, got {type(config).__name__}: e\.g\. GPT"):
        GPT(config)
