"""MLP, RES, NORM, BLK: inside a transformer block (claims MLP-1, MLP-2, RES-1, NORM-1, BLK-1).

These claims look at one block through the ``sublayers(layer)`` capability: its two
norms, its attention and its MLP, each a function of hidden states [B, T, d], and
the whole block. Hidden states are drawn as seeded Gaussian tensors of moderate
magnitude (a drawn scale and offset) in the target's dtype, on its device.

Where the target also exposes ``config`` and ``reference_model`` (its weights in the
reference layout), MLP-1 checks the MLP against the formula written out by hand;
where it can ``build`` models, MLP-1 and RES-1 also check freshly built models of
drawn configurations, so every MLP form and block wiring is covered.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import cast

import torch
from hypothesis import strategies as st
from torch import Tensor

from reference.block import Block
from spec.catalog import claim
from spec.probes import drawn_layer, hidden_states, width
from spec.strategies import built_configs, generator, scales, seeds, target_ids
from spec.target import NotExposed, Sublayers, Target, note, skip_part
from spec.tolerance import CLASSES, assert_close, assert_equal, check


# -- helpers ------------------------------------------------------------------------------
def _subjects(target: Target, data: st.DataObject, *, max_layers: int = 1) -> list[Target]:
    """The target itself, plus (with ``build``) a model of this implementation built from a drawn config."""
    out = [target]
    if "build" in target.capabilities:
        cfg = data.draw(built_configs(target, max_layers=max_layers), label="built_config")
        out.append(target.build(cfg, seed=data.draw(seeds, label="built_seed")))
    return out


def _block_formula(s: Sublayers, x: Tensor, r: float = 1.0) -> tuple[Tensor, Tensor]:
    """The pre-norm block's update from its parts: (attention output a, MLP output m), each already multiplied by the
    residual scale ``r`` the architecture declares (1 in the documents)."""
    a = r * s.attention(s.norm1(x))
    m = r * s.mlp(s.norm2(x if s.parallel else x + a))
    return a, m


def _residual_scale(target: Target) -> float:
    """The factor the target declares its sublayer outputs are multiplied by before they are added (Granite's
    residual_multiplier; spec.target.Departures), reported where it is not 1."""
    r = target.departures().residual_scale
    if r != 1.0:
        note("residual scale", f"{r:g}, declared: h + {r:g} sublayer(h)")
    return r


_ACTIVATIONS = {
    "gelu": lambda x: 0.5 * x * (1 + torch.erf(x / math.sqrt(2.0))),
    "gelu_tanh": lambda x: 0.5 * x * (1 + torch.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x**3))),
    "silu": lambda x: x / (1 + torch.exp(-x)),
    "relu": lambda x: x.clamp_min(0),
}


def _mlp_by_hand(subject: Target, layer: int, x: Tensor) -> Tensor | None:
    """The MLP of ``layer`` written out in float64 from the subject's weights (reference layout), or None."""
    have = subject.capabilities
    if not {"config", "reference_model"} <= have:
        return None
    cfg = subject.config()
    mlp = cast(Block, subject.reference_model().blocks[layer]).mlp
    d, m = cfg.d_model, cfg.mlp_dim

    def w(p: Tensor | None) -> Tensor | None:
        return None if p is None else p.detach().double().cpu()

    W_in, W_gate, W_out = w(mlp.W_in), w(mlp.W_gate), w(mlp.W_out)
    b_in, b_gate, b_out = w(mlp.b_in), w(mlp.b_gate), w(mlp.b_out)
    assert W_in is not None and W_out is not None
    check(tuple(W_in.shape) == (d, m), f"W_in has shape {tuple(W_in.shape)}, expected (d_model, d_mlp) = ({d}, {m})")
    check(tuple(W_out.shape) == (m, d), f"W_out has shape {tuple(W_out.shape)}, expected (d_mlp, d_model) = ({m}, {d})")
    check((W_gate is not None) == cfg.mlp_gated, f"gate weights present: {W_gate is not None}, config gated: "
                                                 f"{cfg.mlp_gated}")
    act = _ACTIVATIONS[cfg.mlp_activation]
    xd = x.detach().double().cpu()
    inner = xd @ W_in + (0 if b_in is None else b_in)  # [B, T, d_mlp]: widen
    if W_gate is not None:
        inner = act(xd @ W_gate + (0 if b_gate is None else b_gate)) * inner  # gated (SwiGLU / GeGLU)
    else:
        inner = act(inner)  # bend
    return inner @ W_out + (0 if b_out is None else b_out)  # project back


# -- the claims ---------------------------------------------------------------------------
@claim("MLP-1", "The MLP maps each d_model vector to its inner width d_mlp, applies a nonlinearity (plain or gated) "
                "and projects back to d_model.", source="embedding-to-choice §7; inference-journey §9",
       needs=("sublayers",),
       tolerance="output width exact; the non-affinity defect must exceed atol + 4 rtol max|mlp| of the target's "
                 "class (for an affine map the defect is the rounding of four outputs, each within the class; real "
                 "MLPs on inputs of RMS 0.5-3 give defects of 25-80% of max|mlp|); the formula check uses the "
                 "target's tolerance class (a float64 by-hand evaluation vs the target's own)",
       precise="on a fixed target the MLP is a black box, so the property checks what that allows: the output has "
               "width d_model, and the map is not affine (f(x) + f(y) - f(x + y) - f(0) != 0 beyond rounding). "
               "Where the target exposes config and reference_model, it also checks the exact formula "
               "act(x W_in + b_in) W_out + b_out, or act(x W_gate + b_gate) * (x W_in + b_in) W_out + b_out when "
               "gated, "
               "with W_in of shape [d_model, d_mlp] and the activation written out by hand; with build this runs on "
               "models of drawn configs (every activation, gated or not). 'Widens' is not required: the tiny configs "
               "include d_mlp < d_model, and the formula holds either way")
@torch.no_grad()
def mlp_1(target: Target, data: st.DataObject) -> None:
    """For drawn hidden states x, y [B, T, d]: mlp(x) has shape [B, T, d]; max |mlp(x) + mlp(y) - mlp(x + y) - mlp(0)|
    exceeds atol + 4 rtol max|mlp|; and where the weights are exposed, mlp(x) equals the by-hand formula."""
    for subject in _subjects(target, data):
        tol = CLASSES[subject.tolerance]
        d = width(subject)
        layer = drawn_layer(data, subject)
        s = subject.sublayers(layer)
        x = hidden_states(data, subject, d, label="x", min_seq=2, scale=(0.5, 3.0))
        y = hidden_states(data, subject, d, label="y", batch=x.shape[0], seq=x.shape[1], scale=(0.5, 3.0))
        fx = s.mlp(x)
        check(tuple(fx.shape) == tuple(x.shape), f"{subject.name}: mlp maps {tuple(x.shape)} to {tuple(fx.shape)}")
        fy, fxy, f0 = s.mlp(y), s.mlp(x + y), s.mlp(torch.zeros_like(x))
        defect = float((fx + fy - fxy - f0).abs().max())
        scale = max(float(t.abs().max()) for t in (fx, fy, fxy, f0))
        floor = tol.atol + 4 * tol.rtol * scale  # an affine map's defect is rounding alone: four outputs' worth
        check(defect > floor,
              f"{subject.name} layer {layer}: the MLP looks affine (defect {defect:.3g} <= {floor:.3g})")
        expected = _mlp_by_hand(subject, layer, x)
        if expected is not None:
            assert_close(fx, expected.to(dtype=fx.dtype, device=fx.device), tol,
                         f"{subject.name} layer {layer}: mlp(x) vs the formula from its weights")


@claim("MLP-2", "The MLP acts on each position separately: its output at a position depends on that position's "
                "input alone.", source="tokens-as-directions §2", needs=("sublayers",),
       tolerance="the target's tolerance class: the same per-position arithmetic done in batches of different "
                 "shapes may round differently",
       precise="checked three ways on drawn [B, T, d] inputs: changing position j leaves every other position's "
               "output unchanged; each position's output equals the MLP applied to that position alone (a length-1 "
               "sequence); permuting positions permutes the outputs")
@torch.no_grad()
def mlp_2(target: Target, data: st.DataObject) -> None:
    """mlp(x') == mlp(x) off position j when x' differs from x only at j; mlp(x)[:, i] == mlp(x[:, i:i+1])[:, 0];
    mlp(x[:, perm]) == mlp(x)[:, perm]."""
    tol = CLASSES[target.tolerance]
    d = width(target)
    layer = drawn_layer(data, target)
    s = target.sublayers(layer)
    x = hidden_states(data, target, d, label="x", min_seq=2)
    t = x.shape[1]
    j = data.draw(st.integers(0, t - 1), label="changed_position")
    x2 = x.clone()
    x2[:, j] = x[:, j] + 1.0 + hidden_states(data, target, d, label="change", batch=x.shape[0], seq=1)[:, 0]
    out, out2 = s.mlp(x), s.mlp(x2)
    keep = [i for i in range(t) if i != j]
    assert_close(out2[:, keep], out[:, keep], tol, f"layer {layer}: outputs off position {j} after changing it")
    i = data.draw(st.integers(0, t - 1), label="position")
    assert_close(out[:, i], s.mlp(x[:, i:i + 1])[:, 0], tol, f"layer {layer}: position {i} in the sequence vs alone")
    perm = torch.randperm(t, generator=generator(data.draw(seeds, label="perm_seed"))).to(x.device)
    assert_close(s.mlp(x[:, perm]), out[:, perm], tol, f"layer {layer}: mlp of permuted positions")


def _zero_output_projections(subject: Target) -> bool:
    """Zero W_O, b_O, W_out, b_out in the subject's reference_model(); True if the subject computes with them."""
    model = subject.reference_model()
    with torch.no_grad():
        for blk in cast(list[Block], list(model.blocks)):
            for p in (blk.attn.W_O, blk.attn.b_O, blk.mlp.W_out, blk.mlp.b_out):
                if p is not None:
                    p.zero_()
    again = subject.reference_model()  # a converter returns a fresh copy: then the zeros do not reach the subject
    blocks = cast(list[Block], list(again.blocks))
    return all(float(blk.attn.W_O.detach().abs().max()) == 0 and float(blk.mlp.W_out.detach().abs().max()) == 0
               for blk in blocks)


@claim("RES-1", "Residual connections add and never replace: a block's output is its input plus its sublayers' "
                "outputs, so a block whose output projections are zero is the identity.",
       source="embedding-to-choice §5; inference-journey §8", needs=("sublayers",),
       tolerance="block(x) - x vs the sublayer sum: the target's tolerance class; the zero-projection block: exact "
                 "(x + 0 + 0 is x bit for bit)",
       precise="'adds' is checked on drawn x as block(x) == x + a + m, with a = attention(norm1(x)) and "
               "m = mlp(norm2(x + a)) (sequential) or mlp(norm2(x)) (parallel), so the input passes with weight "
               "exactly 1. The literal statement runs where the target can build models whose reference_model() is "
               "the live model they compute with (checked by reading it back after zeroing): W_O, b_O, W_out and "
               "b_out are zeroed, and then every block, and the whole residual stream, must return its input bit for "
               "bit. A residual scale the architecture declares (departures(): Granite's residual_multiplier) "
               "multiplies a and m and is reported; the input's weight stays exactly 1")
@torch.no_grad()
def res_1(target: Target, data: st.DataObject) -> None:
    """block(x) == x + a + m for drawn x at a drawn layer; with ``build`` (and a live reference_model), a model
    with zeroed output projections has block(x) == x exactly and every residual state equal to the embedding."""
    tol = CLASSES[target.tolerance]
    d = width(target)
    layer = drawn_layer(data, target)
    s = target.sublayers(layer)
    x = hidden_states(data, target, d, label="x")
    a, m = _block_formula(s, x, _residual_scale(target))
    assert_close(s.block(x), x + a + m, tol, f"layer {layer} ({'parallel' if s.parallel else 'sequential'}): "
                                              "block(x) vs x + attention part + MLP part")
    if "build" not in target.capabilities:
        skip_part(NotExposed("build", "the zero-projection half needs models built with zeroed output projections"))
        return
    cfg = data.draw(built_configs(target, max_layers=2), label="built_config")
    subject = target.build(cfg, seed=data.draw(seeds, label="built_seed"))
    if not {"reference_model", "sublayers"} <= subject.capabilities or not _zero_output_projections(subject):
        skip_part(NotExposed("reference_model", "the built model's reference_model() is missing or a copy: the "
                                                "zero-projection half needs a live weight handle"))
        return
    xb = hidden_states(data, subject, cfg.d_model, label="xb")
    for i in range(cfg.n_layers):
        assert_equal(subject.sublayers(i).block(xb), xb, f"built block {i} with zero output projections vs identity")
    if "residual_states" in subject.capabilities:
        ids = data.draw(target_ids(subject, max_len=8), label="ids")
        states = subject.residual_states(ids)
        for i, h in enumerate(states[1:], start=1):
            assert_equal(h, states[0], f"residual state after block {i - 1} with zero output projections vs embedding")


def _norms(target: Target, layer: int) -> list[tuple[str, Callable[[Tensor], Tensor]]]:
    """The norms NORM-1 can reach: the block's two (sublayers) and the final one (final_norm); the one of them a
    target lacks is a skipped part, named; a target with neither cannot run the claim."""
    have = target.capabilities
    out: list[tuple[str, Callable[[Tensor], Tensor]]] = []
    if "sublayers" in have:
        s = target.sublayers(layer)
        out += [(f"norm1 of layer {layer}", s.norm1), (f"norm2 of layer {layer}", s.norm2)]
    if "final_norm" in have:
        out.append(("final norm", target.final_norm))
    if not out:
        raise NotExposed("sublayers", "NORM-1 needs a norm to call: sublayers (the block's) or final_norm")
    if "sublayers" not in have:
        skip_part(NotExposed("sublayers", "the blocks' norms (only the final norm was checked)"))
    elif "final_norm" not in have:
        skip_part(NotExposed("final_norm", "the final norm (only the blocks' norms were checked)"))
    return out


@claim("NORM-1", "Norms see only direction: LayerNorm and RMSNorm give the same output for x and a x (a > 0) up to "
                 "eps, and LayerNorm also ignores a constant added to every coordinate.",
       source="tokens-as-directions §2", needs_any=("sublayers", "final_norm"),
       tolerance="the target's tolerance class, on inputs large enough that eps moves the output by at most 1/100 of "
                 "its relative tolerance (see precise)",
       precise="with eps = 0 the invariance is exact. With eps > 0 a norm divides by sqrt(v + eps) (v the variance, "
               "or mean square for RMSNorm), so norm(a x) - beta = (norm(x) - beta) sqrt((v + eps) / (v + eps / a^2)), "
               "a relative change of at most eps / min(v, a^2 v). The property draws x with variance at least "
               "100 eps / rtol for both x and a x, so that change stays below rtol / 100; eps is the config's "
               "norm_eps, or assumed <= 1e-5 without config. The shift part needs config to know the kind: "
               "LayerNorm must be unchanged by x + c; RMSNorm, as the precise complement, must change (beyond "
               "tolerance) when a constant comparable to the spread is added to a centred x. The block's norms "
               "(sublayers) and the final norm (final_norm) are each checked where exposed; a target with only one "
               "of them runs the claim partly, naming the other")
@torch.no_grad()
def norm_1(target: Target, data: st.DataObject) -> None:
    """For norm in (norm1, norm2, final_norm): norm(a x) == norm(x) for drawn a in [0.05, 20] and x with variance
    >= 100 eps / rtol (for x and a x); with config, LayerNorm: norm(x + c) == norm(x), RMSNorm: norm(x + c) != norm(x)
    for centred x and c of the order of its spread."""
    tol = CLASSES[target.tolerance]
    d = width(target)
    layer = drawn_layer(data, target)
    cfg = target.config() if "config" in target.capabilities else None
    eps = cfg.norm_eps if cfg is not None else 1e-5
    min_std = math.sqrt(100 * eps / max(tol.rtol, 1e-12))
    a = data.draw(scales(0.05, 20.0), label="a")
    raw = hidden_states(data, target, d, label="x", scale=(1.0, 1.0)).double()
    raw = raw - raw.mean(dim=-1, keepdim=True)
    raw = raw / raw.std(dim=-1, unbiased=False, keepdim=True).clamp_min(1e-12)
    std = max(min_std, min_std / a) * data.draw(st.floats(1.0, 4.0), label="std_factor")
    mean = data.draw(st.floats(-2.0, 2.0), label="mean_over_std") * std
    x = (raw * std + mean).to(target.dtype)
    ax = (a * x.double()).to(target.dtype)
    for name, fn in _norms(target, layer):
        y = fn(x)
        check(tuple(y.shape) == tuple(x.shape), f"{name} maps {tuple(x.shape)} to {tuple(y.shape)}")
        assert_close(fn(ax), y, tol, f"{name}: norm(a x) vs norm(x), a = {a:.4g}")
        if cfg is None:
            continue
        c = data.draw(st.floats(0.5, 2.0), label="shift_over_std") * std * data.draw(st.sampled_from([-1, 1]),
                                                                                      label="shift_sign")
        if cfg.norm == "layernorm":
            xc = (x.double() + c).to(target.dtype)
            assert_close(fn(xc), y, tol, f"{name} (LayerNorm): norm(x + c) vs norm(x), c = {c:.4g}")
        else:
            centred = (raw * std).to(target.dtype)
            y0 = fn(centred)
            yc = fn((raw * std + c).to(target.dtype))
            gap = (yc - y0).abs().double()
            allowed = tol.atol + tol.rtol * y0.abs().double()
            check(bool((gap > 10 * allowed).any()),
                  f"{name} (RMSNorm): adding c = {c:.4g} to a centred x changed nothing beyond tolerance "
                  f"(max change {float(gap.max()):.3g}); RMSNorm does not subtract the mean")


@claim("BLK-1", "A pre-norm block computes h + Attn(N1(h)), then adds MLP(N2(.)) of that; every block keeps the width "
                "d_model, so the residual stream has width d_model throughout.",
       source="embedding-to-choice §2, §5; inference-journey §4", needs=("sublayers", "residual_states"),
       tolerance="the target's tolerance class: block(x) and the formula from its parts, and the model's residual "
                 "states and the blocks applied to them, are the same sums in different groupings",
       precise="sequential blocks: block(h) == h' + mlp(norm2(h')) with h' = h + attention(norm1(h)); where "
               "sublayers.parallel (GPT-NeoX, GPT-J), the parallel form h + attention(norm1(h)) + mlp(norm2(h)), and "
               "with config, parallel must match parallel_residual. Width: residual_states gives n_layers + 1 states "
               "of [B, T, d_model]. Chaining: sublayers apply the model's own positions 0..T-1 (rotary angles, "
               "ALiBi bias) inside the block, so residual state l + 1 must equal block l applied to residual "
               "state l. A declared residual scale (departures().residual_scale) multiplies each sublayer's output")
@torch.no_grad()
def blk_1(target: Target, data: st.DataObject) -> None:
    """block(x) == pre-norm formula (sequential or parallel) for drawn x; residual_states(ids) are n_layers + 1
    tensors [B, T, d]; states[l + 1] == sublayers(l).block(states[l]) for unpadded ids."""
    tol = CLASSES[target.tolerance]
    d = width(target)
    cfg = target.config() if "config" in target.capabilities else None
    layer = drawn_layer(data, target)
    s = target.sublayers(layer)
    if cfg is not None:
        check(s.parallel == cfg.parallel_residual,
              f"sublayers.parallel = {s.parallel} but config.parallel_residual = {cfg.parallel_residual}")
    x = hidden_states(data, target, d, label="x")
    out = s.block(x)
    check(tuple(out.shape) == tuple(x.shape), f"block {layer} maps {tuple(x.shape)} to {tuple(out.shape)}")
    a, m = _block_formula(s, x, _residual_scale(target))
    assert_close(out, x + a + m, tol, f"block {layer} ({'parallel' if s.parallel else 'sequential'}) vs the pre-norm "
                                     "formula from its parts")
    b = data.draw(st.integers(1, 2), label="batch")
    ids = data.draw(target_ids(target, max_len=8, batch=b), label="ids")
    states = target.residual_states(ids)
    n_layers = cfg.n_layers if cfg is not None else len(states) - 1
    check(len(states) == n_layers + 1, f"{len(states)} residual states for {n_layers} blocks (expected n_layers + 1)")
    for i, h in enumerate(states):
        check(tuple(h.shape) == (b, ids.shape[1], d), f"residual state {i} has shape {tuple(h.shape)}, expected "
                                                      f"({b}, {ids.shape[1]}, {d})")
    for i in range(n_layers):
        assert_close(target.sublayers(i).block(states[i]), states[i + 1], tol,
                     f"block {i} applied to residual state {i} vs residual state {i + 1}")

