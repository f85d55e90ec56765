"""ATT: attention (claims ATT-1 .. ATT-6).

ATT-1..3 read queries, keys and attention weights the target exposes; ATT-4 needs
only logits; ATT-5 and ATT-6 edit freshly built models (``build`` and a live
``reference_model()``, see spec.edits.live_model) because the protocol exposes
neither per-head values nor head outputs.

Head grouping follows the common convention: query head h reads key/value head
h // (heads / kv_heads).
"""

from __future__ import annotations

import math
from typing import cast

import torch
from hypothesis import assume
from hypothesis import strategies as st
from torch import Tensor

from reference.block import Block
from reference.config import ModelConfig
from reference.model import Transformer
from spec.catalog import claim
from spec.edits import live_model
from spec.probes import drawn_layer
from spec.strategies import built_configs, seeds, target_ids, token_ids
from spec.target import NotExposed, Target, note, skip_part
from spec.tolerance import CLASSES, ToleranceClass, assert_close, assert_logits_close, check


def _n_layers(target: Target) -> int:
    if "config" in target.capabilities:
        return target.config().n_layers
    return len(target.residual_states(torch.zeros(1, 1, dtype=torch.long, device=target.device))) - 1


def _affine_fit(x: Tensor, y: Tensor) -> Tensor:
    """The least-squares affine fit of y on x, evaluated at x (float64): equal to y when y is affine in x."""
    xa = torch.cat([x.double(), torch.ones(x.shape[0], 1, dtype=torch.float64, device=x.device)], dim=1)
    coef = torch.linalg.lstsq(xa.cpu(), y.double().cpu()).solution.to(x.device)
    return xa @ coef


@claim("ATT-1", "Queries, keys and values are linear projections of the current hidden states.",
       source="embedding-to-choice §6; inference-journey §5", needs=("queries_keys", "residual_states", "sublayers"),
       kind="numeric", max_examples=15,
       tolerance="the target's tolerance class between q (k) and its least-squares affine fit on x in float64 (the "
                 "fit of an exactly affine map reproduces it to ~1e-6 relative in float32); a nonlinear map leaves "
                 "residuals of order its curvature",
       precise="'linear projection' is affine (x W + b, biases allowed) of x = norm1(h), the normalised hidden state "
               "the block feeds to attention. Over many drawn sequences, at each position (rotary turns q and k by a "
               "position-dependent rotation, still linear), q and k must be exactly an affine function of x: the "
               "least-squares fit over more distinct states than d_model + 1 (drawn random sequences: real prompts are "
               "too few to give that many) must reproduce them. Values are not "
               "exposed; they are checked through the attention output of single-token inputs, which is the value "
               "itself times W_O (ATT-5): attention(x) for one position must be affine in x. Where the target "
               "declares QK-norm (departures().qk_norm: queries and keys normalised after their projections, as in "
               "Qwen 3, OLMo 2 and Gemma 3), the projections before that norm are checked, as the target's "
               "projections() gives them. With declared attention sinks or a norm of the heads' mix before W_O, a "
               "one-token output is not its value through W_O, and the values half is skipped by name")
def att_1(target: Target, data: st.DataObject) -> None:
    """At each position, q and k are affine in x = norm1(h); a one-token attention output is affine in x."""
    layer = data.draw(st.integers(0, _n_layers(target) - 1), label="layer")
    states = target.residual_states(torch.zeros(1, 1, dtype=torch.long, device=target.device))
    d = states[0].shape[-1]
    batch = d + 1 + min(d + 1, 64) + 8  # rows enough to over-determine the affine fit; 641 for d = 576
    ids = data.draw(target_ids(target, min_len=2, max_len=4, batch=batch, realistic=False), label="ids")
    s = target.sublayers(layer)
    x = s.norm1(target.residual_states(ids)[layer])  # [B, T, d]
    if target.departures().qk_norm:  # normalised after the projection: the projection is what the claim is about
        note("queries and keys", "normalised after their projections (QK-norm, declared): the projections checked")
        q, k = target.projections(layer, ids)  # [B, T, features]
    else:
        q, k = (y.transpose(1, 2).flatten(2) for y in target.queries_keys(layer, ids))  # [B, T, heads * d_head]
    tol = CLASSES[target.tolerance]
    tested = 0
    for m in range(ids.shape[1]):
        xm, keep = torch.unique(x[:, m], dim=0, return_inverse=True)
        if xm.shape[0] < d + 4:
            continue  # too few distinct states at this position to pin an affine map down
        first = torch.zeros(xm.shape[0], dtype=torch.long, device=x.device).scatter_(
            0, keep, torch.arange(keep.shape[0], device=x.device))
        for name, y in (("q", q), ("k", k)):
            ym = y[first, m]
            assert_close(ym.double(), _affine_fit(xm, ym), tol,
                         f"layer {layer}, position {m}: {name} vs its affine fit on norm1(h)")
        tested += 1
    assume(tested > 0)
    blocked = target.departures().head_output_not_affine("the values half")
    if blocked is not None:
        skip_part(blocked)
        return
    g = torch.Generator().manual_seed(data.draw(seeds, label="x_seed"))
    xs = torch.randn(batch, 1, d, generator=g, dtype=torch.float64).to(dtype=x.dtype, device=x.device)
    out = s.attention(xs)[:, 0]
    assert_close(out.double(), _affine_fit(xs[:, 0], out), tol,
                 f"layer {layer}: one-token attention output (value through W_O) vs its affine fit")


def _alibi_slopes(n: int) -> list[float]:
    """ALiBi's head slopes (Press et al.): 2^(-8 i / n) for a power of two, else every other slope of 2n filled in."""
    if n & (n - 1) == 0:
        return [2.0 ** (-8.0 * (i + 1) / n) for i in range(n)]
    c = 2 ** math.floor(math.log2(n))
    return _alibi_slopes(c) + _alibi_slopes(2 * c)[0::2][: n - c]


def _expected_weights(q: Tensor, k: Tensor, alibi: bool, scale: float | None = None,
                      softcap: float | None = None, sinks: Tensor | None = None) -> Tensor:
    """softmax(q k^T * scale (soft-capped) (+ ALiBi), causal) in float64: q [B, H, T, dh], k [B, Hkv, T, dh]; the
    scale 1 / sqrt(d_head) unless a declared one is given, the cap c tanh(s / c) where one is declared, and each
    head's sink logit [H] as one more entry of every row (its probability dropped) where sinks are declared."""
    h, t, dh = q.shape[1], q.shape[2], q.shape[3]
    kk = k.double().repeat_interleave(h // k.shape[1], dim=1)
    scores = q.double() @ kk.transpose(-1, -2) * (1 / math.sqrt(dh) if scale is None else scale)
    if softcap is not None:
        scores = softcap * torch.tanh(scores / softcap)
    pos = torch.arange(t, device=q.device)
    if alibi:
        slopes = torch.tensor(_alibi_slopes(h), dtype=torch.float64, device=q.device)
        scores = scores + slopes[:, None, None] * (pos[None, :] - pos[:, None]).double()
    future = pos[None, :] > pos[:, None]
    scores = scores.masked_fill(future, float("-inf"))
    if sinks is None:
        return torch.softmax(scores, dim=-1)
    sink = sinks.double().to(scores.device)[None, :, None, None].expand(*scores.shape[:3], 1)
    return torch.softmax(torch.cat([scores, sink], dim=-1), dim=-1)[..., :-1]


@claim("ATT-2", "Attention scores are scaled dot products q . k / sqrt(d_head).",
       source="inference-journey §5", needs=("queries_keys", "attention_weights"), kind="numeric",
       tolerance="the target's tolerance class on the weights (float32 scores over d_head <= 128 terms round at "
                 "~1e-6; a wrong scale moves weights by > 1e-2)",
       precise="checked through the weights the target reports: softmax over visible keys of q . k / sqrt(d_head), "
               "d_head the width of the exposed queries, with q and k after positions, must equal the target's "
               "attention weights at every layer drawn. Grouped heads read their shared key head. ALiBi models add "
               "slope_h (j - i) to each score (config exposed), with the standard slopes computed here "
               "independently. A scale or a soft cap the architecture declares (departures(): Granite's "
               "attention_multiplier, Gemma 2's query_pre_attn_scalar and attn_logit_softcapping, config.attn_scale) "
               "replaces 1/sqrt(d_head) and is reported; any other scale fails, as it should. Without config the "
               "position scheme is unknown: of the two documented forms, plain and ALiBi, the one closer to the "
               "target's weights is checked (an opaque ALiBi model is not a failure; a wrong scale matches neither)")
def att_2(target: Target, data: st.DataObject) -> None:
    """attention_weights[layer] == softmax(causal(q k^T / sqrt(d_head) [+ ALiBi])) from queries_keys."""
    layer = data.draw(st.integers(0, _n_layers(target) - 1), label="layer")
    ids = data.draw(target_ids(target, max_len=10, batch=data.draw(st.integers(1, 2), label="batch")), label="ids")
    q, k = target.queries_keys(layer, ids)
    got = target.attention_weights(ids)[layer].double()
    declared = target.departures()
    scale, cap = declared.attn_scale, declared.attn_softcap
    formula = f"q.k / sqrt({q.shape[-1]})" if scale is None else f"q.k * {scale:.6g} (declared scale)"
    if scale is not None and not math.isclose(scale, q.shape[-1] ** -0.5, rel_tol=1e-6):
        note("attention scale", f"{scale:.6g}, declared, instead of 1/sqrt(d_head) = {q.shape[-1] ** -0.5:.6g}")
    if declared.attn_scale_by_layer:
        note("attention scale", "declared: divided by the layer's number + 1")
        scale = (q.shape[-1] ** -0.5 if scale is None else scale) / (layer + 1)  # layer drawn in 0..n_layers - 1
        formula += f" / {layer + 1} (declared: layer + 1)"
    if cap is not None:
        note("attention scores", f"soft-capped at {cap:g} (c tanh(s / c)), declared")
        formula = f"{cap:g} tanh(({formula}) / {cap:g})"
    sinks = target.attention_sinks(layer) if declared.attn_sinks else None
    if sinks is not None:
        note("attention sinks", "declared: one more learned logit per head in every softmax row, with no value")
        formula += " with each head's sink logit"
    if "config" in target.capabilities:
        want = _expected_weights(q, k, target.config().scheme.biases_scores, scale, cap, sinks)
    else:
        want = min((_expected_weights(q, k, alibi, scale, cap, sinks) for alibi in (False, True)),
                   key=lambda w: float((w - got).abs().max()))
    assert_close(got, want, CLASSES[target.tolerance], f"layer {layer}: attention weights vs softmax({formula})")


def _left_padded(data: st.DataObject, target: Target) -> tuple[Tensor, Tensor]:
    ids = data.draw(target_ids(target, min_len=2, max_len=10, batch=2), label="ids")
    t = ids.shape[1]
    pads = [data.draw(st.integers(0, t - 1), label=f"pad_{b}") for b in range(2)]
    mask = torch.stack([torch.arange(t) >= p for p in pads]).to(ids.device)
    return ids, mask


@claim("ATT-3", "Attention weights over the visible positions form a probability distribution: non-negative, "
                "summing to one.",
       source="inference-journey §5; what-happens-next A", needs=("attention_weights",), kind="numeric",
       tolerance="row sums: the target's tolerance class (a softmax's sum is 1 up to a few roundings); non-negativity "
                 "and zeros on hidden keys: exact (exp of a masked score underflows to exactly 0)",
       precise="'visible' made precise: for every real (unpadded) query position i, the weights on keys after i and "
               "on padding keys are exactly 0, all weights are finite and >= 0, and each row sums to 1, in every "
               "layer and head, with and without left padding (an attention mask). Rows of padding queries are not "
               "constrained. Where the target declares attention sinks (departures().attn_sinks, GPT-OSS), a row "
               "sums to at most 1 and more than 0: the rest is the sink's")
def att_3(target: Target, data: st.DataObject) -> None:
    """For real queries: weights >= 0, exactly 0 on future and padding keys, rows sum to 1."""
    ids, mask = _left_padded(data, target)
    tol = CLASSES[target.tolerance]
    sinks = target.departures().attn_sinks  # rows then sum to 1 minus the sink's share: at most 1, above 0
    if sinks:
        note("attention sinks", "declared: rows of weights over the positions sum to at most 1 (the rest is the "
                                "sink's)")
    t = ids.shape[1]
    future = torch.arange(t, device=ids.device)[None, :] > torch.arange(t, device=ids.device)[:, None]
    for use_mask in (False, True):
        m = mask if use_mask else torch.ones_like(mask)
        for layer, w in enumerate(target.attention_weights(ids, mask if use_mask else None)):
            hidden = (future[None] | ~m[:, None, :])[:, None]  # [B, 1, q, k]
            real = m[:, None, :, None].expand_as(w)  # rows of real queries
            rows = w.masked_select(real)
            what = f"layer {layer}{' with padding' if use_mask else ''}"
            check(bool(torch.isfinite(rows).all()), f"{what}: non-finite attention weights on real queries")
            check(bool((rows >= 0).all()), f"{what}: negative attention weight {float(rows.min())}")
            leak = w.masked_select(real & hidden.expand_as(w))
            check(bool((leak == 0).all()), f"{what}: weight {float(leak.abs().max()) if leak.numel() else 0:.3g} on a "
                                           "future or padding key")
            sums = w.sum(-1).masked_select(m[:, None, :].expand(w.shape[:3]))
            if sinks:
                check(bool((sums > 0).all()), f"{what}: a row of weights sums to 0 or less")
                assert_close(sums.double().clamp_max(1.0), sums.double(), tol, f"{what}: row sums above 1")
            else:
                assert_close(sums.double(), torch.ones_like(sums, dtype=torch.float64), tol, f"{what}: row sums")


@claim("ATT-4", "Causality: the output at position i never depends on tokens after i; changing a later token leaves "
                "every earlier logit unchanged.",
       source="inference-journey §4", needs=(), kind="numeric",
       tolerance="the target's tolerance class (the earlier positions' computation is the same; kernels may still "
                 "block a longer row differently)",
       precise="for drawn ids, a cut i and any replacement of the tokens after i (every one changed), logits at "
               "positions 0..i are unchanged, and so are the residual states there where exposed")
def att_4(target: Target, data: st.DataObject) -> None:
    """logits(ids)[:, :i+1] == logits(ids with every token after i replaced)[:, :i+1]."""
    ids = data.draw(target_ids(target, min_len=2, max_len=12, batch=data.draw(st.integers(1, 2), label="batch")),
                    label="ids")
    t = ids.shape[1]
    cut = data.draw(st.integers(0, t - 2), label="cut")
    shift = data.draw(st.lists(st.integers(1, max(1, target.vocab_size - 1)), min_size=t - cut - 1,
                               max_size=t - cut - 1), label="shift")
    later = ids.clone()
    later[:, cut + 1:] = (ids[:, cut + 1:] + torch.tensor(shift, device=ids.device)) % target.vocab_size
    tol = CLASSES[target.tolerance]
    assert_logits_close(target.logits(later)[:, :cut + 1], target.logits(ids)[:, :cut + 1], tol,
                 f"logits at positions 0..{cut} after changing the tokens after {cut}")
    if "residual_states" in target.capabilities:
        for n, (a, b) in enumerate(zip(target.residual_states(later), target.residual_states(ids), strict=True)):
            assert_close(a[:, :cut + 1], b[:, :cut + 1], tol, f"residual state {n} at positions 0..{cut}")


# -- ATT-5 and ATT-6 edit built models --------------------------------------------------------------
@torch.no_grad()
def _silence_mlps(model: Transformer) -> None:
    """Zero every MLP's output projection: a block's update is then its attention output alone."""
    for blk in cast(list[Block], list(model.blocks)):
        blk.mlp.W_out.zero_()
        if blk.mlp.b_out is not None:
            blk.mlp.b_out.zero_()


def _attention_update(sub: Target, ids: Tensor) -> tuple[Tensor, Tensor]:
    """(block 0's input h, its update h1 - h) from the target's residual states."""
    states = sub.residual_states(ids)
    return states[0], states[1] - states[0]


@claim("ATT-5", "Each head's output is a weighted sum of the value vectors, so it lies in their convex hull; the "
                "first position's output is its own value.",
       source="inference-journey §6; what-happens-next \"weighted sum\"", needs_any=("attention_values", "build"),
       kind="numeric",
       tolerance="the target's tolerance class (the attention update is read as h1 - h0, one extra rounding of h; "
                 "a head's mix against the float64 product of the target's own weights and values)",
       precise="two parts, each run where the target allows. Its own forward pass (attention_values and "
               "attention_weights): each head's output before W_O, as the pass computed it, must equal the target's "
               "attention weights (non-negative, rows summing to 1: a convex combination) times its values, query "
               "head h reading value head h // (H / H_kv) (ATT-6's grouping), and at position 0 the head's own value. "
               "For an implementation whose weights are not returned (sdpa, flash) the weights come from the "
               "queries, keys, scaling and mask of the same call, so the kernel's output is checked against them. "
               "In float16 and bfloat16 the reported weights and those a kernel used differ by the rounding of the "
               "scores (u |s|, measured 4% of a weight on bfloat16 llama-tiny), so there each head's output is held "
               "to the convex hull of the values it can see (per coordinate, within the tolerance class) and to "
               "its own value at position 0. "
               "A built model (build and its reference_model): with its MLP outputs zeroed (so block 0 adds only "
               "attention), the update at every position must equal sum_h (sum_j a_hij v_hj) W_O[h] + b_O with the "
               "target's own weights a and v = norm1(h) W_V + b_V computed here from the weights; at position 0, "
               "sum_h v_h0 W_O[h] + b_O with no weights at all. With declared attention sinks (departures()."
               "attn_sinks) the weights may sum to less than 1: each head's output is held to the hull of its values "
               "and 0, and at position 0 to its weight times its own value")
def att_5(target: Target, data: st.DataObject) -> None:
    """Built model: block-0 attention update == (attention weights @ values) W_O + b_O, at position 0 v_0 W_O + b_O.
    Own forward pass: each head's mix == its weights @ its group's values, at position 0 its own value."""
    have = target.capabilities
    if "build" in have:
        try:
            _att_5_built(target, data)
        except NotExposed as exc:
            skip_part(exc)
    else:
        skip_part(NotExposed("build", "a built model with its MLPs silenced (the update through W_O)"))
    if {"attention_values", "attention_weights"} <= have:
        _att_5_own(target, data)
    else:
        skip_part(NotExposed("attention_values", "the values and head outputs of the target's own forward pass "
                                                 "(with its attention weights)"))


def _check_convex(a: Tensor, tol: ToleranceClass, where: str = "") -> None:
    """Attention weights [B, H, T, S] that make each head's mix a convex combination: >= 0, rows summing to 1."""
    check(bool((a >= 0).all()), f"{where}attention weights are negative somewhere: not a convex combination")
    assert_close(a.sum(-1), torch.ones_like(a[..., 0]), tol, f"{where}attention weight rows sum to 1")


def _att_5_own(target: Target, data: st.DataObject) -> None:
    """A drawn layer's head outputs == its attention weights @ values (grouped), position 0's == its own value."""
    layer = drawn_layer(data, target)
    ids = data.draw(target_ids(target, max_len=10, batch=data.draw(st.integers(1, 2), label="own_batch")),
                    label="own_ids")
    v, mixed = target.attention_values(layer, ids)  # [B, H_kv, T, dh], [B, H, T, dh]
    a = target.attention_weights(ids)[layer].double().cpu()  # [B, H, T, T]
    b, t = ids.shape
    h, h_kv = int(mixed.shape[1]), int(v.shape[1])
    check(v.ndim == 4 and mixed.ndim == 4 and tuple(v.shape[::2]) == (b, t) and tuple(mixed.shape[::2]) == (b, t)
          and v.shape[3] == mixed.shape[3] and h_kv > 0 and h % h_kv == 0,
          f"layer {layer}: values {tuple(v.shape)} and head outputs {tuple(mixed.shape)} for ids {tuple(ids.shape)}: "
          f"expected [B, kv_heads, T, d_head] and [B, heads, T, d_head] with heads a multiple of kv_heads")
    check(tuple(a.shape) == (b, h, t, t), f"layer {layer}: attention weights {tuple(a.shape)}, expected {(b, h, t, t)}")
    tol = CLASSES[target.tolerance]
    sinks = target.departures().attn_sinks  # the sink's share goes to no value: the hull of the values and 0
    if sinks:
        note("attention sinks", "declared: each head's output lies in the hull of its values and 0, position 0's "
                                "is its weight times its own value")
        check(bool((a >= 0).all()), f"layer {layer}: attention weights are negative somewhere")
        check(bool((a.sum(-1) <= 1 + tol.atol).all()), f"layer {layer}: attention weight rows sum to more than 1")
    else:
        _check_convex(a, tol, f"layer {layer}: ")
    values = v.double().cpu().repeat_interleave(h // h_kv, dim=1)  # query head h reads value head h // group
    out = mixed.double().cpu()
    lo, hi = values.cummin(dim=2).values, values.cummax(dim=2).values  # [B, H, T, dh]: over the keys j <= t
    if sinks:
        lo, hi = lo.clamp_max(0.0), hi.clamp_min(0.0)
    slack = tol.atol + tol.rtol * values.abs().amax(dim=2, keepdim=True)
    outside = (out < lo - slack) | (out > hi + slack)
    if outside.any():
        check(False, f"layer {layer}: head outputs leave the convex hull of the values they can see (keys 0..t) at "
                     f"{int(outside.sum())} of {outside.numel()} coordinates, first [batch, head, position, "
                     f"coordinate] {torch.nonzero(outside)[0].tolist()}")
    own = values[:, :, 0] * (a[:, :, 0, :1] if sinks else 1.0)  # [B, H, dh]: the sink takes the rest of the weight
    assert_close(out[:, :, 0], own, tol, f"layer {layer}: position 0's head outputs vs its own values"
                                         f"{' times their weight' if sinks else ''}")
    if target.dtype in (torch.float16, torch.bfloat16):
        note("ATT-5 in half precision", "head outputs checked against the convex hull of the values, not against "
             "reported weights times values: a kernel's own weights differ from the reported ones by the rounding "
             "of scores in half precision (u |s|: 4% of a weight at |s| = 10 in bfloat16)")
        return
    assert_close(out, a @ values, tol, f"layer {layer}: each head's output vs its attention weights times the values")


def _att_5_built(target: Target, data: st.DataObject) -> None:
    """Block-0 attention update of a built model with silenced MLPs == (weights @ values) W_O + b_O."""
    cfg = data.draw(built_configs(target, max_layers=1), label="config")
    sub = target.build(cfg, seed=data.draw(seeds, label="seed"))
    model = live_model(sub)
    _silence_mlps(model)
    ids = data.draw(token_ids(cfg.vocab_size, max_len=10, batch=data.draw(st.integers(1, 2), label="batch"),
                              max_positions=cfg.max_positions), label="ids").to(sub.device)
    h, update = _attention_update(sub, ids)
    a = sub.attention_weights(ids)[0].double()  # [B, H, T, T]
    tol = CLASSES[sub.tolerance]
    _check_convex(a, tol)
    attn = cast(Block, model.blocks[0]).attn
    x = sub.sublayers(0).norm1(h).double()
    v = x @ attn.W_V.double() + (0 if attn.b_V is None else attn.b_V.double())
    b, t = ids.shape
    v = v.view(b, t, cfg.kv_heads, cfg.head_dim).transpose(1, 2)  # [B, Hkv, T, dh]
    v = v.repeat_interleave(cfg.n_heads // cfg.kv_heads, dim=1)  # query head h reads value head h // group
    mixed = a @ v  # [B, H, T, dh]: each head's convex mix of values
    W_O = attn.W_O.double()
    b_O = 0 if attn.b_O is None else attn.b_O.double()
    expect = mixed.transpose(1, 2).reshape(b, t, -1) @ W_O + b_O
    assert_close(update.double(), expect, tol, "attention update vs weighted sum of values through W_O")
    first = v[:, :, 0].reshape(b, -1) @ W_O + b_O
    assert_close(update[:, 0].double(), first, tol, "position 0's attention update vs its own value through W_O")


def _copy_head(src: Transformer, dst: Transformer, head: int) -> None:
    """Make the one-head model dst carry head ``head`` of src (everything else copied, b_O zeroed)."""
    cfg = src.cfg
    dh, group = cfg.head_dim, cfg.n_heads // cfg.kv_heads
    kv = head // group
    q_cols, kv_cols = slice(head * dh, (head + 1) * dh), slice(kv * dh, (kv + 1) * dh)
    state = src.state_dict()
    for i in range(cfg.n_layers):
        pre = f"blocks.{i}.attn."
        state[pre + "W_Q"] = state[pre + "W_Q"][:, q_cols]
        state[pre + "W_K"] = state[pre + "W_K"][:, kv_cols]
        state[pre + "W_V"] = state[pre + "W_V"][:, kv_cols]
        state[pre + "W_O"] = state[pre + "W_O"][q_cols, :]
        if cfg.attn_qkv_bias:
            state[pre + "b_Q"] = state[pre + "b_Q"][q_cols]
            state[pre + "b_K"] = state[pre + "b_K"][kv_cols]
            state[pre + "b_V"] = state[pre + "b_V"][kv_cols]
        if cfg.attn_out_bias:
            state[pre + "b_O"] = torch.zeros_like(state[pre + "b_O"])
    dst.load_state_dict(state)


def _repeat_kv_heads(src: Transformer, dst: Transformer) -> None:
    """Give the MHA model dst src's weights with every key/value head repeated for its group (repeat_interleave)."""
    cfg = src.cfg
    dh, group = cfg.head_dim, cfg.n_heads // cfg.kv_heads
    state = src.state_dict()
    for i in range(cfg.n_layers):
        for name in ("W_K", "W_V", "b_K", "b_V"):
            key = f"blocks.{i}.attn.{name}"
            if key not in state:
                continue
            w = state[key]
            lead = w.shape[:-1]
            state[key] = w.reshape(*lead, cfg.kv_heads, dh).repeat_interleave(group, dim=-2).reshape(*lead, -1)
    dst.load_state_dict(state)


def _gqa_config(data: st.DataObject, target: Target) -> ModelConfig:
    cfg = data.draw(built_configs(target, max_layers=2), label="config")
    kv = data.draw(st.sampled_from([1, 2]), label="kv_heads")
    try:
        return cfg.with_(n_heads=4, n_kv_heads=kv)
    except ValueError as exc:  # a family's own head width (d_model / heads) leaves no valid rotary width at 4 heads
        raise NotExposed("build", f"{target.name} cannot take 4 query heads at the drawn width: {exc}") from exc


@claim("ATT-6", "Multi-head attention: concatenating the heads and projecting by W_O equals summing each head's "
                "output through its own slice of W_O; grouped-query attention equals multi-head attention with each "
                "key/value head repeated for its group.",
       source="inference-journey §7", needs=("build",), kind="numeric",
       tolerance="the target's tolerance class (the same products summed in another order)",
       precise="on built models with 4 query heads and 1 or 2 key/value heads. (1) With MLP outputs zeroed, block "
               "0's update in the full model equals b_O plus the sum over heads h of the update of a one-head model "
               "(built by the target) that holds only head h's W_Q columns, its key/value head's W_K, W_V columns "
               "(head h // group) and rows h of W_O; not checked for ALiBi, whose slope depends on the head's index "
               "among n heads. (2) A multi-head model (built by the target) given the grouped model's weights with "
               "each W_K, W_V (and bias) head block repeated group times in place (repeat_interleave) computes the "
               "same logits as the grouped model")
def att_6(target: Target, data: st.DataObject) -> None:
    """Sum of one-head models' updates + b_O == the multi-head update; GQA logits == MHA with repeated K/V heads."""
    cfg = _gqa_config(data, target)
    seed = data.draw(seeds, label="seed")
    sub = target.build(cfg, seed=seed)
    model = live_model(sub)
    ids = data.draw(token_ids(cfg.vocab_size, max_len=10, batch=data.draw(st.integers(1, 2), label="batch"),
                              max_positions=cfg.max_positions), label="ids").to(sub.device)
    tol = CLASSES[sub.tolerance]
    mha = target.build(cfg.with_(n_kv_heads=cfg.n_heads), seed=seed)
    with torch.no_grad():
        _repeat_kv_heads(model, live_model(mha))
    assert_close(mha.logits(ids), sub.logits(ids), tol,
                 f"logits: {cfg.kv_heads} key/value heads vs {cfg.n_heads} heads with K/V repeated per group")
    if cfg.scheme.biases_scores:  # part (1) does not apply: a head's ALiBi slope depends on its index among n heads
        note("ATT-6 one-head sum", "not applicable to ALiBi models (the GQA half ran)")
        return
    _silence_mlps(model)
    _, full = _attention_update(sub, ids)
    one_head = cfg.with_(n_heads=1, n_kv_heads=1, d_head=cfg.head_dim)
    total = torch.zeros_like(full, dtype=torch.float64)
    for head in range(cfg.n_heads):
        try:
            single = target.build(one_head, seed=seed)
        except NotExposed as exc:  # e.g. a family whose head width is d_model / heads: part (2) still counts
            skip_part(exc)
            return
        with torch.no_grad():
            _copy_head(model, live_model(single), head)
        total += _attention_update(single, ids)[1].double()
    b_O = cast(Block, model.blocks[0]).attn.b_O
    if b_O is not None:
        total += b_O.detach().double()
    assert_close(full.double(), total, tol, "multi-head attention update vs sum of one-head updates + b_O")
