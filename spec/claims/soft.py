"""SOFT: logits to probabilities (claims SOFT-1 .. SOFT-7).

Every claim here runs the target's own softmax (capability ``softmax``) on drawn
logit vectors cast to the target's dtype, and judges it against softmax computed
independently in float64 by hand (maximum subtracted, ``exp``, sum, divide).

How close is close enough (used by every claim of this module and by OUT-2):
the exact answer is the float64 softmax of the very values the target received.
A target working in a precision with unit roundoff u (2^-24 for float32) rounds
z/T, subtracts the maximum, exponentiates, sums V terms and divides. Rounding the
exponent y_i = z_i/T costs up to u|y_i| (zero when T = 1), subtracting the maximum
up to u|y_i - max y|; a perturbation e of the exponents moves p_i by at most
p_i (|e_i| + sum_j p_j |e_j|) to first order, and exp, the sum and the division add a
relative error of at most (V + 4) u. ``spec.oracles.softmax_error_bound`` returns twice that
first-order bound per entry (the factor covers second-order terms and exponentials
accurate to one ulp rather than half), plus the smallest normal number of the dtype
for entries that underflow. A known perturbation d of the logits before the softmax (SOFT-3's shift
rounded in the target's dtype) moves p_i by a factor within e^(+-(d_i + max_j d_j)) whatever its size; the
larger of that and its first-order form is added (bfloat16 rounds 1030 to 1032, and e^2 is not 1 + 2 * 2).
With |z| <= 30 and T = 1 in float32 this is ~1e-5 on
p ~ 1 and it grows with |z|/T, as the conditioning of softmax demands: no
implementation working in float32 can do better for logits of 1e4 at T = 0.05.
Comparisons are recorded as error / bound, so "worst" <= 1 means within it.
"""

from __future__ import annotations

import math

import torch
from hypothesis import strategies as st
from torch import Tensor

from spec.catalog import claim
from spec.oracles import (
    at_most,
    entropy,
    entropy_allowance,
    exact_softmax,
    run_softmax,
    scaled_distribution,
    softmax_error_bound,
    temperature_stats,
    within,
)
from spec.probes import drawn_layer, hidden_states, width
from spec.strategies import logit_vectors, scales, seeds, temperatures
from spec.target import NotExposed, Target, skip_part
from spec.tolerance import CLASSES, assert_close, check


def _draw_logits(data: st.DataObject, target: Target, *, magnitude: float = 30.0, max_vocab: int = 40,
                 label: str = "logits") -> Tensor:
    """[batch, V] logits in the target's dtype, on its device (batch 1-3, V 2-max_vocab)."""
    batch = data.draw(st.integers(1, 3), label="batch")
    z = data.draw(logit_vectors(max_vocab=max_vocab, magnitude=magnitude, batch=batch), label=label)
    return z.to(dtype=target.dtype, device=target.device).clone()


_SOURCE_13 = "embedding-to-choice §13"


def _sum_rounding(a: Tensor, b: Tensor, computed: Tensor) -> Tensor:
    """computed - (a + b) exactly, for float64 a, b and a computed sum (Knuth's TwoSum gives a + b's own error)."""
    s = a + b
    bb = s - a
    err = (a - (s - bb)) + (b - bb)  # a + b == s + err exactly
    return (computed - s) - err


# -- the claims ---------------------------------------------------------------------------
@claim("SOFT-1", "Softmax turns any logits into a distribution: every probability is >= 0 and each row sums to 1.",
       source=_SOURCE_13, needs=("softmax",),
       tolerance="row sums within (2V + 8) u of 1 (u the unit roundoff of the dtype): exp, a sum of V terms and "
                 "one division each round once; rounding the exponents cannot unbalance the sum",
       precise="'add up to one' holds up to the rounding of a V-term sum; non-negativity holds exactly; checked at "
               "T = 1, at drawn temperatures and at T = 0 (argmax), on batches of rows")
def soft_1(target: Target, data: st.DataObject) -> None:
    """For drawn logits z [B, V] and T in {1, drawn, 0}: p = softmax(z, T) is finite, p >= 0 exactly, and every
    row sums to 1 within (2V + 8) u."""
    z = _draw_logits(data, target)
    t = data.draw(st.one_of(st.just(1.0), temperatures(), st.just(0.0)), label="temperature")
    p, u, _ = run_softmax(target, z, t)
    check(bool(torch.isfinite(p).all()), f"softmax(T={t}) produced non-finite probabilities: {p}")
    check(bool((p >= 0).all()), f"softmax(T={t}) produced a negative probability: min {float(p.min())}")
    v = z.shape[-1]
    sums = p.double().sum(dim=-1).cpu()
    within(sums, torch.ones_like(sums), torch.full_like(sums, (2 * v + 8) * u), f"row sums of softmax(T={t})")


@claim("SOFT-2", "Softmax keeps the order of the logits: a larger logit gets a larger probability, equal logits "
                 "equal probabilities.", source=_SOURCE_13, needs=("softmax",),
       tolerance="weak order and ties up to 4u relative (one rounding of the exponential); strict order is "
                 "required wherever the exact probabilities differ by more than the two entries' rounding "
                 "bounds (module doc)",
       precise="z_i > z_j gives p_i > p_j only where the exact gap survives rounding: two tiny probabilities can "
               "both underflow to 0, and logits 1 ulp apart can round to the same exponent; so the property "
               "asks p_i >= p_j (1 - 4u) always and p_i > p_j where the exact values are resolvable; ties are "
               "made by copying drawn logits onto others")
def soft_2(target: Target, data: st.DataObject) -> None:
    """For drawn z with drawn ties and T in {1, drawn}: wherever z_i > z_j, p_i >= p_j (1 - 4u), and p_i > p_j
    when exact(p_i) - exact(p_j) exceeds bound_i + bound_j; wherever z_i == z_j, |p_i - p_j| <= 4u max(p_i, p_j)."""
    z = _draw_logits(data, target)
    v = z.shape[-1]
    pairs = data.draw(st.lists(st.tuples(st.integers(0, v - 1), st.integers(0, v - 1)), max_size=v), label="ties")
    for i, j in pairs:
        z[:, j] = z[:, i]
    t = data.draw(st.one_of(st.just(1.0), temperatures()), label="temperature")
    p, u, tiny = run_softmax(target, z, t)
    pd, zd = p.double().cpu(), z.double().cpu()
    exact = exact_softmax(zd, t)
    bnd = softmax_error_bound(zd, t, u, tiny)
    greater = zd[:, :, None] > zd[:, None, :]
    tied = zd[:, :, None] == zd[:, None, :]
    pi, pj = pd[:, :, None], pd[:, None, :]
    weak_bad = greater & (pi < pj * (1 - 4 * u) - tiny)
    check(not bool(weak_bad.any()), f"ranking broken at (row, i, j) {weak_bad.nonzero()[:5].tolist()}: "
                                    f"z_i > z_j but p_i < p_j (T={t})")
    resolvable = greater & ((exact[:, :, None] - exact[:, None, :]) > bnd[:, :, None] + bnd[:, None, :])
    strict_bad = resolvable & ~(pi > pj)
    check(not bool(strict_bad.any()), f"strict order lost at (row, i, j) {strict_bad.nonzero()[:5].tolist()}: "
                                      f"z_i > z_j by a resolvable margin but p_i <= p_j (T={t})")
    tied = tied & ~torch.eye(v, dtype=torch.bool)
    rows, ti, tj = tied.nonzero(as_tuple=True)
    if rows.numel():
        within(pd[rows, ti], pd[rows, tj], 4 * u * torch.maximum(pd[rows, ti], pd[rows, tj]) + tiny,
               f"probabilities of tied logits (T={t})")


@claim("SOFT-3", "Adding the same constant to every logit leaves the probabilities unchanged.",
       source="embedding-to-choice §13 (implied)", needs=("softmax",),
       tolerance="each result within the derived softmax rounding bound of the exact softmax of the unshifted "
                 "logits, the bound for the shifted input also carrying the exact rounding error of the shift "
                 "itself (computed in float64)",
       precise="exp(z_i + c) / sum_j exp(z_j + c) == softmax(z) exactly in real arithmetic; in floating point the "
               "shifted logits are rounded, which moves p by at most that rounding / T; shifts up to 1e3 and the "
               "common shift by -max(z) are drawn, and the shift 1e3 is always checked (e^(1000 / T) overflows any "
               "float format, so skipping the max subtraction is caught whatever is drawn)")
def soft_3(target: Target, data: st.DataObject) -> None:
    """For drawn z, T and c in [-1e3, 1e3] or c = -max(z), and for c = 1e3: softmax(z + c, T) and softmax(z, T) all
    match the exact softmax(z / T) within the derived bound (a shifted one allowing the shift's own rounding)."""
    z = _draw_logits(data, target)
    t = data.draw(st.one_of(st.just(1.0), temperatures()), label="temperature")
    c_kind = data.draw(st.sampled_from(["drawn", "minus_max"]), label="shift_kind")
    c = data.draw(st.floats(-1e3, 1e3, allow_nan=False), label="shift") if c_kind == "drawn" else None
    shift = -z.amax(dim=-1, keepdim=True) if c is None else torch.tensor(c, dtype=z.dtype, device=z.device)
    zd = z.double().cpu()
    exact = exact_softmax(zd, t)
    p0, u, tiny = run_softmax(target, z, t)
    within(p0, exact, softmax_error_bound(zd, t, u, tiny), f"softmax(z, T={t})")
    # the drawn shift, and always the largest of the range: e^(1000 / T) overflows every float format, so an
    # implementation that exponentiates without subtracting the maximum cannot pass on the luck of the draw
    big = torch.tensor(1e3, dtype=z.dtype, device=z.device)
    for name, sh in ((f"{'-max z' if c is None else c}", shift), ("1e3", big)):
        zs = z + sh
        ps = run_softmax(target, zs, t)[0]
        rounding = _sum_rounding(zd, sh.double().cpu().expand_as(zd), zs.double().cpu())
        within(ps, exact, softmax_error_bound(zs.double().cpu(), t, u, tiny, input_err=rounding, reference_z=zd),
               f"softmax(z + c, T={t}) vs softmax(z, T={t}) (c = {name})")


@claim("SOFT-4", "Temperature divides the logits: p = softmax(z / T); T -> 0 tends to the one-hot argmax (T = 0 is "
                 "the argmax) and T -> infinity to the uniform distribution.",
       source="inference-journey §12; tokens-as-directions §3.3", needs=("softmax",),
       tolerance="softmax(z, T) within the derived rounding bound of exact softmax(z / T); the limits are closed-form "
                 "inequalities, each widened by the same per-entry rounding bound; T = 0 is exact",
       precise="'tends to' is made quantitative. Small T: with k tied maxima and gap g to the next logit, the mass "
               "off the maxima is <= (V - k) exp(-g / T), so T <= g / ln((V - k) / eps) puts it below eps. Large T: "
               "with logit range R, |p_i - 1/V| <= (exp(R / T) - 1) / V, so T >= R / ln(1 + V eps) gives "
               "max |p_i - 1/V| <= eps. T = 0 must be exactly one-hot on a maximal logit. The small-T bound is "
               "only exercised when g >= 1e-3, so z / T stays far from overflow")
def soft_4(target: Target, data: st.DataObject) -> None:
    """(i) softmax(z, T) == exact softmax(z / T) for drawn T; (ii) softmax(z, 0) is one-hot on a maximal logit;
    (iii) at T = s g / ln((V - k)/eps), s in (0.01, 1], the non-maximal mass is <= (V - k) e^{-g/T} and each of the
    k maxima has probability in [(1 - (V - k) e^{-g/T}) / k, 1/k]; (iv) at T = s R / ln(1 + V eps), s in [1, 100],
    every |p_i - 1/V| <= (e^{R/T} - 1) / V."""
    z = _draw_logits(data, target)
    zd = z.double().cpu()
    v = z.shape[-1]
    t = data.draw(temperatures(), label="temperature")
    p, u, tiny = run_softmax(target, z, t)
    within(p, exact_softmax(zd, t), softmax_error_bound(zd, t, u, tiny), f"softmax(z, T={t}) vs softmax(z / T)")

    p0, _, _ = run_softmax(target, z, 0.0)
    p0d = p0.double().cpu()
    check(bool(((p0d == 0) | (p0d == 1)).all()) and bool((p0d.sum(dim=-1) == 1).all()),
          f"softmax(z, T=0) is not one-hot: {p0d}")
    chosen = zd.gather(-1, p0d.argmax(dim=-1, keepdim=True))
    check(bool((chosen == zd.amax(dim=-1, keepdim=True)).all()),
          f"softmax(z, T=0) puts its 1 on logit {chosen.flatten().tolist()}, not on the maximum "
          f"{zd.amax(dim=-1).tolist()}")

    eps = data.draw(st.floats(math.log(1e-6), math.log(0.1)).map(math.exp), label="eps")
    row = zd[0]
    top = float(row.max())
    k = int((row == top).sum())
    if k < v:
        g = top - float(row[row < top].max())
        if g >= 1e-3:
            s = data.draw(st.floats(0.01, 1.0), label="small_T_fraction")
            t_small = s * g / math.log((v - k) / eps)
            ps, u_s, tiny_s = run_softmax(target, z[:1], t_small)
            psd = ps.double().cpu()[0]
            bnd = softmax_error_bound(zd[:1], t_small, u_s, tiny_s)[0]
            is_top = row == top
            tail = (v - k) * math.exp(-g / t_small)
            at_most(float(psd[~is_top].sum()), tail, float(bnd[~is_top].sum()),
                    f"mass off the maxima at T={t_small:.3g} (gap {g:.3g})")
            at_most((1 - tail) / k, psd[is_top], bnd[is_top],
                    f"probability of each of the {k} maximal logits at T={t_small:.3g} vs (1 - tail) / k")
            at_most(psd[is_top], 1.0 / k, bnd[is_top], f"probability of each of the {k} maximal logits vs 1/k")
    r = float(row.max() - row.min())
    if r > 0:
        s = data.draw(st.floats(1.0, 100.0), label="large_T_factor")
        t_large = s * r / math.log1p(v * eps)
        pl, u_l, tiny_l = run_softmax(target, z[:1], t_large)
        bnd = softmax_error_bound(zd[:1], t_large, u_l, tiny_l)[0]
        at_most((pl.double().cpu()[0] - 1.0 / v).abs(), math.expm1(r / t_large) / v, bnd,
                f"|p_i - 1/V| at T={t_large:.3g} (range {r:.3g}) vs (e^(R/T) - 1) / V")


@claim("SOFT-5", "The top probability lies between 1/V and 1 and never rises as T rises; the entropy never falls.",
       source="tokens-as-directions §3.3", needs=("softmax",),
       tolerance="each comparison widened by the derived rounding bounds of both temperatures: for the top "
                 "probability the entries' bounds, for the entropy sum_i bound_i (1 + |ln p_i|)",
       precise="p_max(T) = 1 / sum_j exp((z_j - z_max) / T) and H(softmax(z / T)) are monotone in T in exact "
               "arithmetic (dH/d(1/T) = -Var(z) / T <= 0); the property checks pairs T1 < T2 (T1 may be 0) up to "
               "rounding, and 1/V <= p_max <= 1, 0 <= H <= ln V")
def soft_5(target: Target, data: st.DataObject) -> None:
    """For drawn z and T1 < T2 (T1 possibly 0): 1/V <= p_max(T) <= 1 and 0 <= H(T) <= ln V for both, and
    p_max(T1) >= p_max(T2), H(T1) <= H(T2), each up to the rounding allowances."""
    z = _draw_logits(data, target)
    v = z.shape[-1]
    a = data.draw(st.one_of(st.just(0.0), temperatures()), label="T_a")
    b = data.draw(temperatures(), label="T_b")
    t1, t2 = min(a, b), max(a, b)
    if t1 == t2:
        return
    stats = []
    for t in (t1, t2):
        pmax, slack_p, h, slack_h = temperature_stats(target, z, t)
        for r in range(z.shape[0]):
            at_most(1.0 / v, float(pmax[r]), float(slack_p[r]), f"1/V vs top probability (row {r}, T={t:.4g})")
            at_most(float(pmax[r]), 1.0, float(slack_p[r]), f"top probability vs 1 (row {r}, T={t:.4g})")
            at_most(0.0, float(h[r]), float(slack_h[r]), f"entropy >= 0 (row {r}, T={t:.4g})")
            at_most(float(h[r]), math.log(v), float(slack_h[r]), f"entropy <= ln V (row {r}, T={t:.4g})")
        stats.append((pmax, slack_p, h, slack_h))
    (m1, s1, h1, e1), (m2, s2, h2, e2) = stats
    for r in range(z.shape[0]):
        at_most(float(m2[r]), float(m1[r]), float(s1[r] + s2[r]),
                f"top probability at T2={t2:.4g} vs at T1={t1:.4g} (row {r})")
        at_most(float(h1[r]), float(h2[r]), float(e1[r] + e2[r]), f"entropy at T1={t1:.4g} vs at T2={t2:.4g} (row {r})")


@claim("SOFT-6", "Scaling the final hidden state by a > 0 (no bias) multiplies the logits by a, the same as "
                 "temperature 1/a: the argmax stays, entropy never rises with a, and a = 0 gives the uniform "
                 "distribution.", source="tokens-as-directions \"The effect of vector length\"",
       needs=("unembedding", "softmax"),
       illustration="the scaled state is multiplied by U here, not read out by the target (the protocol has no "
                    "capability that runs a target's head on a given state); the target's part, softmax with "
                    "temperature, is SOFT-4's check",
       tolerance="(a h) U vs a (h U): the target's tolerance class (two float orderings of a d-term product); "
                 "probabilities: the derived softmax rounding bound, the bound for the scaled logits also carrying "
                 "their measured deviation from a times the unscaled ones",
       precise="the claim concerns h . U_i alone: a bias b would give a (h U) + b, which is not a rescaling, so the "
               "property uses U only (any bias of the target is left out, as the claim's 'no bias' says). h is a "
               "drawn vector; U is the target's. 'Argmax stays' is checked up to rounding near ties; the entropy "
               "comparison takes pairs a1 < a2")
def soft_6(target: Target, data: st.DataObject) -> None:
    """For U from the target, drawn h and 0 < a1 < a2: (a h) U == a (h U); softmax((a h) U, 1) == softmax(h U, 1/a)
    (both match exact softmax(a h U)); the chosen token is a maximiser of h U at both scales; H(a1) >= H(a2);
    softmax(0 U) is uniform."""
    U, _ = target.unembedding()
    d, v = U.shape
    seed = data.draw(seeds, label="h_seed")
    norm = data.draw(scales(0.1, 30.0), label="h_norm")
    h64 = torch.randn(d, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    h = (h64 * (norm / float(h64.norm()))).to(dtype=U.dtype, device=U.device)
    a1 = data.draw(scales(0.05, 20.0), label="a1")
    a2 = data.draw(scales(0.05, 20.0), label="a2")
    a1, a2 = min(a1, a2), max(a1, a2)
    z = (h @ U).unsqueeze(0)  # [1, V] in the target's dtype
    zd = z.double().cpu()
    entropies = []
    for a in (a1, a2):
        za, p_scaled, u, tiny = scaled_distribution(target, h, U, a)
        assert_close(za, a * z, CLASSES[target.tolerance], f"(a h) U vs a (h U) at a={a:.4g}")
        exact = exact_softmax(zd, 1.0 / a)  # softmax(a h U), exactly up to float64 rounding
        deviation = (za.double().cpu() - a * zd).abs() + 2.0**-52 * (a * zd).abs()
        within(p_scaled, exact, softmax_error_bound(za.double().cpu(), 1.0, u, tiny, input_err=deviation,
                                                    reference_z=zd, reference_temperature=1.0 / a),
               f"softmax((a h) U) vs exact softmax(a h U) at a={a:.4g}")
        p_temp, u, tiny = run_softmax(target, z, 1.0 / a)
        within(p_temp, exact, softmax_error_bound(zd, 1.0 / a, u, tiny),
               f"softmax(h U, T=1/a) vs exact softmax(a h U) at a={a:.4g}")
        bnd = softmax_error_bound(zd, 1.0 / a, u, tiny)[0]
        c = int(p_scaled[0].argmax())
        m = int(exact[0].argmax())
        at_most(float(exact[0, m]), float(exact[0, c]), float(bnd[c] + bnd[m]),
                f"token {c} chosen at a={a:.4g} vs the maximiser {m} of h U")
        entropies.append((entropy(p_scaled)[0], entropy_allowance(za, 1.0, u, tiny)[0]))
    (h1, e1), (h2, e2) = entropies
    at_most(float(h2), float(h1), float(e1 + e2), f"entropy at a2={a2:.4g} vs at a1={a1:.4g}")
    zero = ((0.0 * h) @ U).unsqueeze(0)
    p0, u, tiny = run_softmax(target, zero, 1.0)
    within(p0, torch.full((1, v), 1.0 / v, dtype=torch.float64),
           softmax_error_bound(torch.zeros(1, v), 1.0, u, tiny), "softmax at a = 0 vs uniform")


@claim("SOFT-7", "Softmax is numerically safe: logits up to 1e4 in magnitude and -inf entries give finite "
                 "probabilities that match an exact computation, with exactly 0 where the logit is -inf.",
       source="engineering requirement", needs_any=("softmax", "sublayers"),
       tolerance="the derived softmax rounding bound against an independent float64 computation; -inf entries "
                 "exactly 0. Attention part: the target's tolerance class for position 0's update at scale c "
                 "against c times its update at scale 1 (both less the update of a zero input)",
       precise="'correct' means within the conditioning bound of the module doc: logits of 1e4 in float32 are "
               "themselves only known to ~1e-3, so the bound scales with |z| / T; at least one logit per row stays "
               "finite (a row of all -inf has no distribution). The attention softmax is held to the same safety where"
               " the target's attention can be driven directly (sublayers): its input scaled by c multiplies every "
               "score by c^2, so c up to 1024 (8 in float16, whose range ends at 65504, so a correct q . k itself "
               "overflows sooner; powers of two, so that c x is exact) gives scores far beyond exp's range (exp "
               "overflows float32 above 88) on any model whose queries and keys grow with their input. The output must"
               " be finite at every position, and position 0, which sees only itself, must keep weight exactly 1 on "
               "its own value: its update less that of a zero input grows exactly linearly in c (the value path is "
               "linear; rotary and ALiBi change nothing at offset 0). Models that normalise q and k (QK-norm) keep "
               "their scores bounded and pass trivially. Where the target declares attention sinks or a norm of the "
               "heads' mix before W_O (departures()), position 0's output is not linear in c, and that half is "
               "skipped by name; the finiteness half runs")
def soft_7(target: Target, data: st.DataObject) -> None:
    """For drawn z with |z| <= 1e4, a drawn subset of entries set to -inf (never a whole row), and T in {1, drawn}:
    softmax(z, T) is finite, exactly 0 on -inf entries, and matches exact float64 softmax(z / T) within the bound.
    With sublayers: the attention of a drawn layer on c x (c up to 1024) is finite, and position 0's update is
    linear in c (its single weight stays exactly 1)."""
    if "softmax" in target.capabilities:
        _soft_7_softmax(target, data)
    else:
        skip_part(NotExposed("softmax", "the target's own softmax with temperature (only attention was checked)"))
    if "sublayers" in target.capabilities:
        _soft_7_attention(target, data)
    else:
        skip_part(NotExposed("sublayers", "driving the target's attention directly (only its softmax was checked)"))


# Powers of two, so c x is exact in every binary format and, without biases, position 0's update scales exactly
_ATTENTION_SCALES = {torch.float16: (1.0, 8.0)}  # the rest: (1, 16, 128, 1024)


def _soft_7_attention(target: Target, data: st.DataObject) -> None:
    """sublayers(l).attention(c x) is finite everywhere, and at position 0 equals base + c (attention(x) - base)
    with base = attention(0) (the value path through W_O with its biases)."""
    layer = drawn_layer(data, target)
    x = hidden_states(data, target, width(target), label="x", min_seq=2, max_seq=6, batch=1)
    c = data.draw(st.sampled_from(_ATTENTION_SCALES.get(target.dtype, (1.0, 16.0, 128.0, 1024.0))), label="scale")
    attention = target.sublayers(layer).attention
    y = attention((c * x.double()).to(target.dtype))  # [1, T, d]
    check(bool(torch.isfinite(y).all()),
          f"layer {layer}'s attention of its input times {c:g} is not finite (scores grow as c^2): "
          f"{(~torch.isfinite(y)).sum().item()} entries of {y.numel()} are inf or NaN, at positions "
          f"{sorted(set(torch.nonzero(~torch.isfinite(y))[:, 1].tolist()))}")
    blocked = target.departures().head_output_not_affine("position 0's linear scaling")
    if blocked is not None:
        skip_part(blocked)
        return
    base = attention(torch.zeros_like(x))[:, 0].double()
    one = attention(x)[:, 0].double() - base
    assert_close((y[:, 0].double() - base) / c, one, CLASSES[target.tolerance],
                 f"layer {layer}, position 0 (its own value only): (attention(c x) - attention(0)) / c vs "
                 f"attention(x) - attention(0), c = {c:g}")


def _soft_7_softmax(target: Target, data: st.DataObject) -> None:
    """The target's softmax on logits up to 1e4 and -inf entries (SOFT-7's first part)."""
    z = _draw_logits(data, target, magnitude=1e4)
    v = z.shape[-1]
    masked = data.draw(st.lists(st.booleans(), min_size=v, max_size=v), label="masked")
    if all(masked):
        masked[data.draw(st.integers(0, v - 1), label="kept")] = False
    mask = torch.tensor(masked, device=z.device)
    z[:, mask] = -math.inf
    t = data.draw(st.one_of(st.just(1.0), temperatures(0.5, 2.0)), label="temperature")
    p, u, tiny = run_softmax(target, z, t)
    check(bool(torch.isfinite(p).all()), f"softmax(T={t}) of logits up to 1e4 / -inf is not finite: {p}")
    pd = p.double().cpu()
    check(bool((pd[:, mask.cpu()] == 0).all()),
          f"softmax gives non-zero probability to -inf logits: {pd[:, mask.cpu()]}")
    zd = z.double().cpu()
    within(pd, exact_softmax(zd, t), softmax_error_bound(zd, t, u, tiny), f"softmax(z, T={t}) with |z| <= 1e4")
