"""Attention: head plumbing, the visibility mask, explicit vs fused paths, weights (ATT-2..ATT-6), the module."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from reference import KVCache, ModelConfig
from reference.attention import (
    Attention,
    explicit_attention,
    fast_attention,
    merge_heads,
    repeat_kv,
    scores_to_weights,
    split_heads,
    visibility_mask,
)
from reference.positions import rotary_angles

PROPERTY = settings(max_examples=60, deadline=None, derandomize=True)

# Tolerances for comparing two computations of the same attention output:
# - float64: both paths round at ~1e-16 relative on O(1) values summed over <= 8 keys,
#   so they agree to ~1e-15; 1e-12 leaves a margin of 1000 and catches any real error.
# - float32: the fused kernel reorders the softmax and the weighted sum; on O(1) values
#   over <= 8 keys this moves results by a few ulps (~1e-7). torch's own float32 defaults
#   (atol=1e-5, rtol=1.3e-6) bound that with margin; a wrong mask or scale moves O(0.1).
TOL = {torch.float64: {"atol": 1e-12, "rtol": 1e-12}, torch.float32: {"atol": 1e-5, "rtol": 1.3e-6}}


def randn(*shape: int, seed: int, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64).to(dtype)


# ------------------------------------------------------------------------ head plumbing


def test_split_heads_puts_head_h_in_columns_h_times_d_head() -> None:
    x = torch.arange(2 * 3 * 12, dtype=torch.float32).view(2, 3, 12)
    heads = split_heads(x, 4)
    assert heads.shape == (2, 4, 3, 3)
    for h in range(4):
        assert torch.equal(heads[:, h], x[:, :, 3 * h:3 * h + 3])


@given(st.integers(1, 3), st.integers(1, 5), st.integers(1, 6), st.integers(1, 5))
@settings(max_examples=30, deadline=None, derandomize=True)
def test_split_merge_round_trip(b: int, t: int, h: int, d: int) -> None:
    x = randn(b, t, h * d, seed=b * 100 + t * 10 + h)
    assert torch.equal(merge_heads(split_heads(x, h)), x)
    y = randn(b, h, t, d, seed=7)
    assert torch.equal(split_heads(merge_heads(y), h), y)


@pytest.mark.parametrize(("kv_heads", "n_rep"), [(1, 4), (2, 2), (2, 3), (3, 1)])
def test_repeat_kv_gives_query_head_i_the_kv_head_i_div_group(kv_heads: int, n_rep: int) -> None:
    x = randn(2, kv_heads, 5, 4, seed=kv_heads)
    out = repeat_kv(x, n_rep)
    assert out.shape == (2, kv_heads * n_rep, 5, 4)
    for i in range(kv_heads * n_rep):
        assert torch.equal(out[:, i], x[:, i // n_rep])  # KV head j serves query heads j*g .. j*g + g - 1
    if n_rep == 1:
        assert out is x


# ------------------------------------------------------------------------- visibility


def test_visibility_mask_small_padded_example() -> None:
    key_mask = torch.tensor([[0, 1, 1], [1, 1, 1]], dtype=torch.bool)
    m = visibility_mask(key_mask, q_len=3, past=0)
    assert m.shape == (2, 1, 3, 3) and m.dtype == torch.bool
    assert m[0, 0].int().tolist() == [[1, 0, 0],  # the padding query sees only itself
                                      [0, 1, 0],  # never the padding key
                                      [0, 1, 1]]
    assert m[1, 0].int().tolist() == [[1, 0, 0], [1, 1, 0], [1, 1, 1]]  # plain causal


def test_visibility_mask_with_cached_past() -> None:
    key_mask = torch.tensor([[0, 1, 1, 1, 1], [1, 1, 1, 1, 1]], dtype=torch.bool)
    m = visibility_mask(key_mask, q_len=2, past=3)  # queries sit at slots 3 and 4
    assert m.shape == (2, 1, 2, 5)
    assert m[0, 0].int().tolist() == [[0, 1, 1, 1, 0], [0, 1, 1, 1, 1]]
    assert m[1, 0].int().tolist() == [[1, 1, 1, 1, 0], [1, 1, 1, 1, 1]]


# --------------------------------------------------------------- explicit vs fast paths


@st.composite
def attention_case(draw: st.DrawFn) -> dict:
    dtype = draw(st.sampled_from([torch.float32, torch.float64]))
    b = draw(st.integers(1, 3))
    kv = draw(st.integers(1, 2))
    group = draw(st.sampled_from([1, 2, 4]))  # 1: MHA; kv == 1 and group > 1: MQA; else GQA
    h = kv * group
    d = draw(st.sampled_from([2, 4, 8]))
    q_len = draw(st.integers(1, 5))
    past = draw(st.integers(0, 3))
    k_len = past + q_len
    seed = draw(st.integers(0, 2**16))
    q = randn(b, h, q_len, d, seed=seed, dtype=dtype)
    k = randn(b, kv, k_len, d, seed=seed + 1, dtype=dtype)
    v = randn(b, kv, k_len, d, seed=seed + 2, dtype=dtype)
    mask_kind = draw(st.sampled_from(["none", "visibility"]))
    mask = None
    if mask_kind == "visibility":
        pads = [draw(st.integers(0, k_len - 1)) for _ in range(b)]
        key_mask = torch.tensor([[j >= p for j in range(k_len)] for p in pads])
        mask = visibility_mask(key_mask, q_len, past)
    bias = None
    if draw(st.booleans()):
        slopes = torch.tensor([2.0 ** -(i + 1) for i in range(h)], dtype=dtype)
        dist = torch.arange(k_len, dtype=dtype)[None, :] - torch.arange(past, k_len, dtype=dtype)[:, None]
        bias = (slopes[:, None, None] * dist).expand(b, h, q_len, k_len)
    return {"q": q, "k": repeat_kv(k, group), "v": repeat_kv(v, group), "mask": mask, "bias": bias,
            "scale": d ** -0.5, "dtype": dtype}


@PROPERTY
@given(attention_case())
def test_explicit_and_fast_attention_agree(case: dict) -> None:
    q, k, v, mask, bias, scale = (case[n] for n in ("q", "k", "v", "mask", "bias", "scale"))
    out, weights = explicit_attention(q, k, v, mask, scale, bias)
    fast = fast_attention(q, k, v, mask, scale, bias)
    assert out.dtype == fast.dtype == case["dtype"]
    torch.testing.assert_close(fast, out, **TOL[case["dtype"]])
    assert weights.shape == (*q.shape[:3], k.shape[2])


@PROPERTY
@given(attention_case())
def test_weights_are_distributions_that_ignore_masked_keys(case: dict) -> None:
    q, k, v, mask, bias, scale = (case[n] for n in ("q", "k", "v", "mask", "bias", "scale"))
    out, weights = explicit_attention(q, k, v, mask, scale, bias)
    assert bool((weights >= 0).all())
    torch.testing.assert_close(weights.sum(-1), torch.ones(weights.shape[:-1], dtype=weights.dtype),
                               **TOL[case["dtype"]])
    if mask is not None:
        assert bool((weights.masked_select(~mask.expand_as(weights)) == 0).all())
    # ATT-5: each output is the weighted sum of the values (convex combination).
    expected = torch.einsum("bhqk,bhkd->bhqd", weights.to(v.dtype), v)
    torch.testing.assert_close(out, expected, **TOL[case["dtype"]])


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_causal_flag_equals_the_explicit_causal_mask(dtype: torch.dtype) -> None:
    q, k, v = (randn(2, 3, 5, 4, seed=s, dtype=dtype) for s in (1, 2, 3))
    mask = visibility_mask(torch.ones(2, 5, dtype=torch.bool), 5, 0)
    expected, _ = explicit_attention(q, k, v, mask, 0.5)
    torch.testing.assert_close(fast_attention(q, k, v, None, 0.5, causal=True), expected, **TOL[dtype])
    torch.testing.assert_close(fast_attention(q, k, v, mask, 0.5), expected, **TOL[dtype])


def test_one_head_example_by_hand() -> None:
    # d_head = 2, scale 1/sqrt(2); query [1, 0] against keys [1, 0] and [0, 1].
    q = torch.tensor([[[[1.0, 0.0]]]], dtype=torch.float64)
    k = torch.tensor([[[[1.0, 0.0], [0.0, 1.0]]]], dtype=torch.float64)
    v = torch.tensor([[[[1.0, 2.0], [3.0, 4.0]]]], dtype=torch.float64)
    s0, s1 = 1 / math.sqrt(2), 0.0
    w0 = math.exp(s0) / (math.exp(s0) + math.exp(s1))
    w1 = 1 - w0  # 0.6697615493266569, 0.3302384506733431
    expected = torch.tensor([[[[w0 * 1 + w1 * 3, w0 * 2 + w1 * 4]]]], dtype=torch.float64)
    for out in (explicit_attention(q, k, v, None, 2**-0.5)[0], fast_attention(q, k, v, None, 2**-0.5)):
        torch.testing.assert_close(out, expected, atol=1e-15, rtol=1e-15)
    weights = explicit_attention(q, k, v, None, 2**-0.5)[1]
    torch.testing.assert_close(weights, torch.tensor([[[[w0, w1]]]], dtype=torch.float64), atol=1e-15, rtol=1e-15)


def test_causal_example_with_independent_ops() -> None:
    q, k, v = (randn(1, 1, 4, 3, seed=s) for s in (10, 11, 12))
    scale = 0.7
    out, weights = explicit_attention(q, k, v, visibility_mask(torch.ones(1, 4, dtype=torch.bool), 4, 0), scale)
    for i in range(4):
        scores = [scale * float(q[0, 0, i] @ k[0, 0, j]) for j in range(i + 1)]
        top = max(scores)
        e = [math.exp(s - top) for s in scores]
        w = [x / sum(e) for x in e]
        expected = sum(w[j] * v[0, 0, j] for j in range(i + 1))
        torch.testing.assert_close(out[0, 0, i], expected, atol=1e-14, rtol=1e-14)
        assert weights[0, 0, i, i + 1:].abs().sum() == 0  # ATT-4: nothing after the query
    # ATT-5: the first position's output is its own value.
    torch.testing.assert_close(out[0, 0, 0], v[0, 0, 0], atol=1e-15, rtol=0)


def test_scores_to_weights_work_in_float32_at_least() -> None:
    scores = randn(1, 2, 3, 3, seed=0, dtype=torch.bfloat16)
    w = scores_to_weights(scores, None)
    assert w.dtype == torch.float32
    torch.testing.assert_close(w, torch.softmax(scores.float(), -1), atol=0, rtol=0)
    assert scores_to_weights(randn(1, 1, 2, 2, seed=1), None).dtype == torch.float64
    mask = torch.tensor([[[[True, False], [True, True]]]])
    w = scores_to_weights(torch.zeros(1, 1, 2, 2), mask)
    assert w.tolist() == [[[[1.0, 0.0], [0.5, 0.5]]]]


def test_explicit_attention_on_half_inputs_is_finite_and_close() -> None:
    q, k, v = (randn(1, 2, 4, 8, seed=s) for s in (20, 21, 22))
    mask = visibility_mask(torch.ones(1, 4, dtype=torch.bool), 4, 0)
    ref, _ = explicit_attention(q, k, v, mask, 8**-0.5)
    out, w = explicit_attention(q.bfloat16(), k.bfloat16(), v.bfloat16(), mask, 8**-0.5)
    assert out.dtype == torch.bfloat16 and w.dtype == torch.float32
    # bfloat16 inputs carry 8 mantissa bits (relative error 2^-9 each); a few such roundings
    # on O(1) values stay well under 5e-2.
    torch.testing.assert_close(out.double(), ref, atol=5e-2, rtol=5e-2)


# ---------------------------------------------------------------------- the module


def rope_by_hand(x: torch.Tensor, pos: torch.Tensor, theta: float) -> torch.Tensor:
    """Half-split rotary of the full head width, written with complex multiplication."""
    d = x.shape[-1]
    inv = theta ** (-torch.arange(0, d, 2, dtype=torch.float64) / d)
    rot = torch.polar(torch.ones(pos.shape[-1], d // 2, dtype=torch.float64), pos[0, :, None].double() * inv)
    z = torch.complex(x[..., : d // 2], x[..., d // 2:]) * rot
    return torch.cat((z.real, z.imag), dim=-1)


def attention_by_hand(att: Attention, x: torch.Tensor, key_mask: torch.Tensor | None = None,
                      rotary_theta: float | None = None) -> torch.Tensor:
    """Per-head loop: causal softmax(q k^T * scale) v, summed through each head's slice of W_O (ATT-6)."""
    cfg = att.cfg
    b, t, _ = x.shape
    dh, g = cfg.head_dim, cfg.n_heads // cfg.kv_heads

    def proj(W: torch.Tensor, bias: torch.Tensor | None, heads: int) -> torch.Tensor:
        y = torch.einsum("btd,de->bte", x, W) + (0 if bias is None else bias)
        return y.view(b, t, heads, dh).permute(0, 2, 1, 3)

    q, k, v = proj(att.W_Q, att.b_Q, cfg.n_heads), proj(att.W_K, att.b_K, cfg.kv_heads), proj(att.W_V, att.b_V,
                                                                                              cfg.kv_heads)
    if rotary_theta is not None:
        pos = torch.arange(t)[None]
        q, k = rope_by_hand(q, pos, rotary_theta), rope_by_hand(k, pos, rotary_theta)
    allowed = torch.ones(t, t, dtype=torch.bool).tril()
    out = torch.zeros(b, t, cfg.d_model, dtype=x.dtype)
    for h in range(cfg.n_heads):
        scores = q[:, h] @ k[:, h // g].transpose(-1, -2) * cfg.scale  # [b, t, t]
        vis = allowed[None] if key_mask is None else (allowed[None] & key_mask[:, None, :]) | torch.eye(
            t, dtype=torch.bool)[None]
        w = torch.softmax(scores.masked_fill(~vis, float("-inf")), dim=-1)
        out = out + (w @ v[:, h // g]) @ att.W_O[h * dh:(h + 1) * dh]
    return out + (0 if att.b_O is None else att.b_O)


def make_attention(seed: int = 0, **changes: object) -> Attention:
    cfg = ModelConfig(**{"vocab_size": 5, "d_model": 16, "n_layers": 1, "n_heads": 4, **changes})  # type: ignore[arg-type]
    att = Attention(cfg, dtype=torch.float64)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in att.parameters():
            p.copy_(0.3 * torch.randn(p.shape, generator=g, dtype=torch.float64))
    return att


@pytest.mark.parametrize("kv", [4, 2, 1])  # MHA, GQA, MQA
@pytest.mark.parametrize("biases", [True, False])
def test_attention_module_matches_per_head_reference(kv: int, biases: bool) -> None:
    att = make_attention(n_kv_heads=kv, attn_qkv_bias=biases, attn_out_bias=biases)
    assert att.W_K.shape == (16, kv * 4) and att.W_Q.shape == (16, 16) and att.W_O.shape == (16, 16)
    assert (att.b_Q is None) == (not biases) and (att.b_O is None) == (not biases)
    x = randn(2, 5, 16, seed=3)
    expected = attention_by_hand(att, x)
    with torch.no_grad():
        fast, no_weights = att(x, None, causal=True)
        explicit, weights = att(x, None, causal=True, explicit=True)
    assert no_weights is None and weights is not None and weights.shape == (2, 4, 5, 5)
    torch.testing.assert_close(fast, expected, **TOL[torch.float64])
    torch.testing.assert_close(explicit, expected, **TOL[torch.float64])


def test_attention_module_with_padding_mask() -> None:
    att = make_attention(n_kv_heads=2)
    x = randn(2, 4, 16, seed=4)
    key_mask = torch.tensor([[0, 0, 1, 1], [1, 1, 1, 1]], dtype=torch.bool)
    expected = attention_by_hand(att, x, key_mask)
    mask = visibility_mask(key_mask, 4, 0)
    with torch.no_grad():
        for explicit in (False, True):
            out, _ = att(x, mask, explicit=explicit)
            torch.testing.assert_close(out, expected, **TOL[torch.float64])


def test_attention_module_applies_rotary_to_queries_and_keys() -> None:
    att = make_attention(n_kv_heads=2, positions="rotary", rotary_theta=50.0)
    x = randn(1, 6, 16, seed=5)
    expected = attention_by_hand(att, x, rotary_theta=50.0)
    rotary = rotary_angles(torch.arange(6)[None], 4, 50.0, torch.float64)
    with torch.no_grad():
        out, _ = att(x, None, rotary=rotary, causal=True)
        plain, _ = att(x, None, causal=True)
    torch.testing.assert_close(out, expected, **TOL[torch.float64])
    assert (out - plain).abs().max() > 1e-3


def test_gqa_equals_mha_with_repeated_kv_weights() -> None:
    # ATT-6: grouped-query attention == multi-head attention whose K/V heads are copies.
    gqa = make_attention(seed=1, n_kv_heads=2)
    mha = make_attention(seed=2, n_kv_heads=4)
    with torch.no_grad():
        for name in ("W_Q", "b_Q", "W_O", "b_O"):
            getattr(mha, name).copy_(getattr(gqa, name))
        for name in ("W_K", "W_V", "b_K", "b_V"):
            src = getattr(gqa, name)
            heads = src.view(*src.shape[:-1], 2, 4)  # [..., kv head, d_head]
            getattr(mha, name).copy_(heads.repeat_interleave(2, dim=-2).reshape(*src.shape[:-1], 16))
        x = randn(2, 5, 16, seed=6)
        torch.testing.assert_close(mha(x, None, causal=True)[0], gqa(x, None, causal=True)[0], **TOL[torch.float64])


def test_attention_module_with_cache_matches_full_sequence() -> None:
    att = make_attention(n_kv_heads=2)
    cfg = att.cfg
    x = randn(2, 5, 16, seed=7)
    with torch.no_grad():
        full, _ = att(x, None, causal=True)
        cache = KVCache.empty(cfg, batch=2, capacity=5, dtype=torch.float64)
        first, _ = att(x[:, :3], None, cache=cache, causal=True)
        cache.advance(torch.ones(2, 3, dtype=torch.bool))
        steps = [first]
        for i in (3, 4):
            out, _ = att(x[:, i:i + 1], None, cache=cache)
            cache.advance(torch.ones(2, 1, dtype=torch.bool))
            steps.append(out)
        explicit_cache = KVCache.empty(cfg, batch=2, capacity=5, dtype=torch.float64)
        att(x[:, :4], None, cache=explicit_cache, causal=True, explicit=True)
        explicit_cache.advance(torch.ones(2, 4, dtype=torch.bool))
        last, weights = att(x[:, 4:], None, cache=explicit_cache, explicit=True)
    torch.testing.assert_close(torch.cat(steps, dim=1), full, **TOL[torch.float64])
    torch.testing.assert_close(last, full[:, 4:], **TOL[torch.float64])
    assert weights is not None and weights.shape == (2, 4, 1, 5)
    assert cache.length == 5 and cache.next_position.tolist() == [5, 5]


# ------------------------------------------------------------------------ non-finite values (issue #14)


@pytest.mark.parametrize("where", ["query", "own key"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("kv_heads", [2, 1])
def test_fused_attention_never_turns_nan_into_a_finite_row(where: str, dtype: torch.dtype, kv_heads: int) -> None:
    # torch's fused kernel (CPU flash attention, float32) returned zeros for a row whose scores are all NaN,
    # as for a fully masked row; a NaN query (or a NaN key every query sees) came out finite.
    g = torch.Generator().manual_seed(0)
    q = torch.randn(1, 2, 4, 8, generator=g, dtype=dtype)
    k, v = (torch.randn(1, kv_heads, 4, 8, generator=g, dtype=dtype) for _ in range(2))
    if where == "query":
        q[0, 1, 2, 0] = float("nan")  # row 2 of head 1: every score of that row is NaN
    else:
        k[0, :, :, 0] = float("nan")  # every key of both heads: every score of every row is NaN
    bad_rows = [2] if where == "query" else [0, 1, 2, 3]
    mask = visibility_mask(torch.ones(1, 4, dtype=torch.bool), 4, 0)
    explicit, _ = explicit_attention(q, repeat_kv(k, 2 // kv_heads), repeat_kv(v, 2 // kv_heads), mask, 8 ** -0.5)
    for out in (fast_attention(q, k, v, None, 8 ** -0.5, causal=True), fast_attention(q, k, v, mask, 8 ** -0.5),
                fast_attention(q[:, :, -1:], k, v, None, 8 ** -0.5)):  # prefill (flag, mask) and one decode query
        rows = range(4 - out.shape[2], 4)
        for row, o in zip(rows, out.unbind(2), strict=True):
            assert bool(torch.isnan(o).any()) == (row in bad_rows), (row, o)  # W_O spreads it over the row
            if row not in bad_rows:  # finite rows are untouched
                torch.testing.assert_close(o, explicit[:, :, row], atol=1e-6, rtol=1e-6)
