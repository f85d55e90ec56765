"""Executable figures: pictures drawn from the very data the claims check (``next-token-spec figures``).

Each figure is a pair of functions: a *data* function that computes what is drawn by
calling the function its claim uses (so the picture and the property cannot drift
apart), and a *plot* function that draws that data with matplotlib. ``write`` runs
both and saves a PNG and an SVG; it returns the data, which tests/spec_meta/test_figures.py
checks against each claim independently of the drawing.

=================  =======================================================  ============
file stem          what it shows                                             claims
=================  =======================================================  ============
1-toy-softmax      the toy logits of embedding-to-choice §12 and their       OUT-2
                   exact softmax
2-temperature      top probability and entropy against temperature           SOFT-4, SOFT-5
3-length           the same against the scale of the final hidden state      SOFT-6
4-residual-norms   the last position's residual norm by depth                TR-1
5-embedding-norms  histogram of embedding-row norms, band and outliers       TR-2
6-logit-lens       logit lens by depth; the IOI state in the Mary/John plane TR-3, TR-4
7-attention        the last token's attention over "The storm is", per head  ATT-3
=================  =======================================================  ============

Figure 1 needs no model; the others need a trained target exposing a tokenizer,
residual states, the final norm, the unembedding, the embedding table, softmax and
attention weights (the default, ``smollm2``, exposes them all). Output is stable from
run to run: a fixed font shipped with matplotlib (DejaVu Sans), text drawn as paths, a
fixed SVG hash salt, and no date or software version in the files.
"""

from __future__ import annotations

import math
import os
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import torch
from torch import Tensor

from spec import oracles
from spec.errors import InputError
from spec.target import NotExposed, Target

DPI = 100
WIDTH = 7.0  # inches: 700 px at DPI, the width the README shows them at
STYLE: dict[str, Any] = {
    "font.family": "DejaVu Sans", "font.size": 9, "axes.titlesize": 10, "axes.labelsize": 9,
    "legend.fontsize": 8, "xtick.labelsize": 8, "ytick.labelsize": 8, "axes.spines.top": False,
    "axes.spines.right": False, "svg.fonttype": "path", "svg.hashsalt": "next-token-spec",
    "savefig.dpi": DPI, "figure.dpi": DPI,
}
TEMPERATURES = tuple(10 ** (k / 8) for k in range(-16, 33))  # 0.01 .. 1e4, 8 per decade, 1.0 included
SCALES = tuple(10 ** (k / 8) for k in range(-32, 17))  # 1e-4 .. 100, 8 per decade, 1.0 included
CONFIDENCE_PROMPT = "The capital of France is"  # figures 2 and 3: a confident real prediction (" Paris")
ATTENTION_BLOCKS = (1, 10, 20, 30)  # the blocks figure 7 shows (1-based), clipped to the model's depth


def _show(tok: Any, i: int) -> str:
    """A token as the reader should see it: its text in quotes."""
    return repr(tok.decode([int(i)]))


def _model_name(target: Target) -> str:
    """The model's name as the figure titles give it."""
    return "SmolLM2-135M" if target.name.startswith("smollm2") else target.name


def _ids(target: Target, text: str) -> Tensor:
    return torch.tensor([target.tokenizer().encode(text)], dtype=torch.long, device=target.device)


# ------------------------------------------------------------------------------ 1. toy example (OUT-2)


@dataclass(frozen=True)
class ToyData:
    names: list[str]  # the six tokens in the document's order
    logits: Tensor  # [6] float64, h U
    probs: Tensor  # [6] float64, exact softmax
    illustrative: dict[str, float]  # the document's own (illustrative) probabilities


def toy_data() -> ToyData:
    """OUT-2's toy logits (spec.oracles.toy_logits) and their exact float64 softmax (spec.oracles)."""
    names, z = oracles.toy_logits(list(range(6)))
    illustrative = {"quickly": 0.48, "cat": 0.29, "the": 0.14, "runs": 0.04, "banana": 0.04, "blue": 0.01}
    return ToyData(names, z, oracles.exact_softmax(z, 1.0), illustrative)


def toy_plot(d: ToyData) -> Any:
    """Two bar charts side by side, tokens sorted by logit: the logits, then their softmax."""
    order = sorted(range(len(d.names)), key=lambda i: (-float(d.logits[i]), d.names[i]))
    names = [repr(d.names[i]) for i in order]
    fig, (left, right) = _figure(2.9, ncols=2, sharey=True)
    y = list(range(len(order)))[::-1]
    left.barh(y, [float(d.logits[i]) for i in order], color="#4c72b0")
    for yi, i in zip(y, order, strict=True):
        left.text(float(d.logits[i]) + 0.1, yi, f"{float(d.logits[i]):.0f}", va="center")
    left.set(yticks=y, yticklabels=names, xlim=(0, 8.2), xlabel="logit z = h · u (dimensionless)",
             title="logits: dot products with h = [2, 1, 0, 3]")
    right.barh(y, [float(d.probs[i]) for i in order], color="#dd8452", label="exact softmax")
    right.scatter([d.illustrative[d.names[i]] for i in order], y, marker="|", s=200, color="black", zorder=3,
                  label="source's illustrative values")
    for yi, i in zip(y, order, strict=True):
        clear = max(float(d.probs[i]), d.illustrative[d.names[i]])  # right of both the bar and the marker
        right.text(clear + 0.015, yi, f"{float(d.probs[i]):.4f}", va="center")
    right.set(xlim=(0, 0.8), xlabel="probability softmax(z)", title="softmax: they sum to 1")
    right.legend(loc="lower right", frameon=False)
    return fig


# ------------------------------------------------------------------------------ 2. temperature (SOFT-4, SOFT-5)


@dataclass(frozen=True)
class TemperatureData:
    prompt: str
    top_token: str
    vocab: int
    temperatures: list[float]
    p_max: Tensor  # [n] float64, the top probability at each temperature
    p_max_allowance: Tensor  # [n] its rounding allowance
    entropy: Tensor  # [n] nats
    entropy_allowance: Tensor  # [n]
    at_zero: tuple[float, float]  # (p_max, entropy) at T = 0, the argmax
    model: str


def temperature_data(target: Target, prompt: str = CONFIDENCE_PROMPT,
                     temperatures: Sequence[float] = TEMPERATURES) -> TemperatureData:
    """The target's next-token logits after ``prompt``, read at every temperature through
    spec.oracles.temperature_stats, the function SOFT-5 compares temperatures with."""
    z = target.logits(_ids(target, prompt))[:, -1]  # [1, V] in the target's dtype
    rows = [oracles.temperature_stats(target, z, t) for t in temperatures]
    pm, sp, h, sh = (torch.cat([r[k] for r in rows]) for k in range(4))
    p0, _, h0, _ = oracles.temperature_stats(target, z, 0.0)
    top = _show(target.tokenizer(), int(z[0].argmax()))
    return TemperatureData(prompt, top, int(z.shape[-1]), list(temperatures), pm, sp, h, sh, (float(p0), float(h0)),
                           _model_name(target))


def temperature_plot(d: TemperatureData) -> Any:
    """Top probability (log scale, limits 1 and 1/V) over entropy (limits 0 and ln V), against T on a log axis."""
    fig, (top, bottom) = _figure(4.6, nrows=2, sharex=True)
    t = d.temperatures
    top.plot(t, d.p_max.tolist(), color="#4c72b0", lw=2, label=f"top token {d.top_token}")
    _limit(top, 1.0, "1: one-hot, the limit T → 0 (T = 0 is the argmax)", above=False, right=True)
    _limit(top, 1.0 / d.vocab, f"1/V = 1/{d.vocab}: uniform, the limit T → ∞", above=False)
    one = t.index(1.0)
    top.plot([1.0], [float(d.p_max[one])], "o", color="#4c72b0")
    top.annotate(f"T = 1, the model's own: p = {float(d.p_max[one]):.3f}", xy=(1.0, float(d.p_max[one])),
                 xytext=(-6, -8), textcoords="offset points", ha="right", va="top", fontsize=8)
    top.set(yscale="log", ylim=(0.05 / d.vocab, 5.0), ylabel="top probability (log scale)",
            title=f"One real distribution at every temperature: {d.model} after {d.prompt!r}")
    bottom.plot(t, d.entropy.tolist(), color="#c44e52", lw=2)
    bottom.plot([1.0], [float(d.entropy[one])], "o", color="#c44e52")
    bottom.annotate(f"{float(d.entropy[one]):.2f} nats at T = 1", xy=(1.0, float(d.entropy[one])), xytext=(8, 0),
                    textcoords="offset points", va="center", fontsize=8)
    _limit(bottom, 0.0, "0 nats: one-hot", above=True, right=True)
    _limit(bottom, math.log(d.vocab), f"ln V = {math.log(d.vocab):.2f} nats: uniform", above=False)
    bottom.set(xscale="log", ylim=(-0.8, math.log(d.vocab) + 1.6), ylabel="entropy (nats)",
               xlabel="temperature T (dimensionless, log scale)")
    for ax in (top, bottom):
        ax.axvline(1.0, color="gray", ls=":", lw=1)
    top.legend(loc="center right", frameon=False)
    return fig


# ------------------------------------------------------------------------------ 3. length is confidence (SOFT-6)


@dataclass(frozen=True)
class LengthData:
    prompt: str
    vocab: int
    scales: list[float]
    tokens: list[str]  # the five tokens most probable at a = 1, best first
    probs: Tensor  # [n, 5] float64: their probabilities at each scale
    p_max: Tensor  # [n] the top probability at each scale
    argmax: list[int]  # the chosen token at each scale
    entropy: Tensor  # [n] nats
    entropy_allowance: Tensor  # [n]
    p_max_by_temperature: Tensor  # [n] top probability of softmax(h U, T = 1/a): the same curve, by temperature
    zero_scale_deviation: float  # max |p_i - 1/V| at a = 0


def length_data(target: Target, prompt: str = CONFIDENCE_PROMPT, scales: Sequence[float] = SCALES) -> LengthData:
    """The final (normed) hidden state h after ``prompt`` scaled by a, through spec.oracles.scaled_distribution,
    the function SOFT-6 scales with; also softmax(h U, T = 1/a), which SOFT-6 says is the same distribution."""
    h = oracles.lens_states(target, _ids(target, prompt))[-1]  # [d]: what the unembedding reads at the last block
    U, _ = target.unembedding()  # SOFT-6 is about h . U alone: any bias is left out
    tok = target.tokenizer()
    z = (h @ U).unsqueeze(0)  # [1, V]
    best = [int(i) for i in z[0].double().topk(5).indices]
    rows = []
    for a in scales:
        za, p, u, tiny = oracles.scaled_distribution(target, h, U, a)
        p_t = target.softmax(z, 1.0 / a)
        rows.append((p.double().cpu()[0], oracles.entropy_allowance(za, 1.0, u, tiny)[0], float(p_t.max())))
    probs = torch.stack([r[0] for r in rows])  # [n, V]
    _, p0, _, _ = oracles.scaled_distribution(target, h, U, 0.0)
    v = int(z.shape[-1])
    return LengthData(prompt, v, list(scales), [_show(tok, i) for i in best], probs[:, best], probs.amax(dim=1),
                      [int(i) for i in probs.argmax(dim=1)], oracles.entropy(probs), torch.stack([r[1] for r in rows]),
                      torch.tensor([r[2] for r in rows], dtype=torch.float64),
                      float((p0.double() - 1.0 / v).abs().max()))


def length_plot(d: LengthData) -> Any:
    """The five best tokens' probabilities and the entropy against the scale a of h (log axis); T = 1/a as dots."""
    fig, (top, bottom) = _figure(4.6, nrows=2, sharex=True)
    a = d.scales
    colors = ["#4c72b0", "#dd8452", "#55a868", "#8172b3", "#937860"]
    for k, (name, c) in enumerate(zip(d.tokens, colors, strict=True)):
        top.plot(a, d.probs[:, k].tolist(), color=c, lw=2 if k == 0 else 1, label=name)
    every = slice(0, None, 4)
    top.scatter(a[every], d.p_max_by_temperature[every].tolist(), s=14, color="black", zorder=3,
                label="softmax(h·U, T = 1/a)")
    _limit(top, 1.0 / d.vocab, f"1/V: at a = 0 every token gets 1/V (largest error {d.zero_scale_deviation:.0e})",
           above=False)
    same = len(set(d.argmax)) == 1
    top.set(yscale="log", ylim=(0.05 / d.vocab, 5.0), ylabel="probability (log scale)",
            title=f"Length is confidence, direction is choice: h after {d.prompt!r} scaled by a")
    top.annotate(f"the argmax is {d.tokens[0]} at all {len(a)} scales" if same else "the argmax changes",
                 xy=(0.01, 1.0), xycoords=("axes fraction", "data"), xytext=(0, -3), textcoords="offset points",
                 va="top", fontsize=8)
    top.legend(loc="center left", bbox_to_anchor=(0.0, 0.55), frameon=False, ncols=2, fontsize=7.5)
    bottom.plot(a, d.entropy.tolist(), color="#c44e52", lw=2)
    _limit(bottom, math.log(d.vocab), f"ln V = {math.log(d.vocab):.2f} nats: uniform", above=False, right=True)
    bottom.set(xscale="log", ylim=(-0.8, math.log(d.vocab) + 1.6), ylabel="entropy (nats)",
               xlabel="scale a of the final hidden state (dimensionless; a = 1: the model's own; log scale)")
    for ax in (top, bottom):
        ax.axvline(1.0, color="gray", ls=":", lw=1)
    return fig


# ------------------------------------------------------------------------------ 4. residual norms (TR-1)


@dataclass(frozen=True)
class NormsData:
    prompts: list[str]
    norms: list[list[float]]  # [prompt][depth 0..L]
    model: str


def norms_data(target: Target, prompts: Sequence[str] = oracles.DEPTH_PROMPTS) -> NormsData:
    """spec.oracles.residual_norms for each prompt TR-1 checks."""
    return NormsData(list(prompts), [oracles.residual_norms(target, p) for p in prompts], _model_name(target))


def norms_plot(d: NormsData) -> Any:
    """One line per prompt: |h| at the last position against depth, log y."""
    fig, (ax,) = _figure(4.4)
    for prompt, n in zip(d.prompts, d.norms, strict=True):
        label = prompt if len(prompt) <= 34 else prompt[:32] + "…"
        ax.plot(range(len(n)), n, marker="o", ms=2.5, lw=1.2, label=repr(label))
    ax.set(yscale="log", xlabel="depth: 0 = the embedding, l = after block l",
           ylabel="‖h‖₂ at the last position (log scale)",
           title=f"The residual stream grows longer with depth ({d.model})")
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.14), ncols=2, frameon=False)
    return fig


# ------------------------------------------------------------------------------ 5. embedding norms (TR-2)


@dataclass(frozen=True)
class EmbeddingNormsData:
    ratios: Tensor  # [V] float64, row norm / median row norm
    median: float  # the median row norm
    longest: list[tuple[str, float]]  # the longest rows: (token, ratio), longest first
    shortest: list[tuple[str, float]]  # the shortest rows, shortest first
    model: str


def embedding_norms_data(target: Target, named: int = 4) -> EmbeddingNormsData:
    """spec.oracles.embedding_norm_ratios, the ratios TR-2 checks, with the ``named`` extreme rows' tokens."""
    ratios = oracles.embedding_norm_ratios(target)
    E = target.embedding_matrix()
    median = float(torch.cat([c.detach().double().cpu().norm(dim=1) for c in E.split(8192)]).median())
    tok = target.tokenizer()
    hi = ratios.topk(named)
    lo = (-ratios).topk(named)
    return EmbeddingNormsData(ratios, median, [(_show(tok, int(i)), float(r)) for r, i in zip(*hi, strict=True)],
                              [(_show(tok, int(i)), -float(r)) for r, i in zip(*lo, strict=True)], _model_name(target))


def embedding_norms_plot(d: EmbeddingNormsData) -> Any:
    """Histogram of r = |E_i| / median (log counts), the +-20% band shaded, the 1.5x thresholds and named outliers."""
    fig, (ax,) = _figure(3.8)
    r = d.ratios
    band = float(((r >= 1 - oracles.BAND) & (r <= 1 + oracles.BAND)).double().mean())
    tail = int(((r > oracles.TAIL) | (r < 1 / oracles.TAIL)).sum())
    ax.hist(r.tolist(), bins=120, range=(0, 2.5), color="#4c72b0")
    ax.axvspan(1 - oracles.BAND, 1 + oracles.BAND, color="#55a868", alpha=0.2, lw=0,
               label=f"within ±{oracles.BAND:.0%} of the median: {band:.1%} of rows")
    for x in (oracles.TAIL, 1 / oracles.TAIL):
        ax.axvline(x, color="#c44e52", ls="--", lw=1)
    ax.plot([], [], color="#c44e52", ls="--", lw=1,
            label=f"outliers beyond ×{oracles.TAIL} or ÷{oracles.TAIL}: {tail} rows ({tail / r.numel():.1%})")
    ax.set(yscale="log", xlim=(0, 2.5), xlabel=f"row norm / median row norm (median ‖E_i‖₂ = {d.median:.3g})",
           ylabel="number of rows (log scale)",
           title=f"Most of the {r.numel()} embedding rows have about the same length ({d.model})")
    _name_rows(ax, "shortest", d.shortest, xy_text=(0.3, 30.0))
    _name_rows(ax, "longest", d.longest, xy_text=(2.25, 30.0))
    ax.legend(loc="upper right", frameon=False)
    return fig


def _name_rows(ax: Any, which: str, rows: list[tuple[str, float]], xy_text: tuple[float, float]) -> None:
    """List the named rows (token and norm ratio) at xy_text, with an arrow to where they sit in the histogram."""
    text = f"{which} rows:\n" + "\n".join(f"{t} {x:.2f}" for t, x in rows)
    ax.annotate(text, xy=(rows[0][1], 1.0), xytext=xy_text, ha="center", va="center", fontsize=7.5,
                arrowprops={"arrowstyle": "->", "color": "dimgray", "lw": 0.8})


# ------------------------------------------------------------------------------ 6. logit lens (TR-3, TR-4)


@dataclass(frozen=True)
class LensData:
    prompt: str
    final_token: str  # the target's choice after the prompt
    ranks: list[int]  # the final token's rank in the lens at depth 0..L
    probs: list[float]  # its lens probability at depth 0..L
    names: tuple[str, str]  # the two names spanning the plane: the expected one, then the other
    plane: Tensor  # [L + 1, 2] float64: the lens states in an orthonormal basis of the plane (first axis: names[0])
    directions: Tensor  # [2, 2]: the two names' unit output directions in that basis
    name_logits: Tensor  # [L + 1, 2]: the lens logits of the two names at each depth


def lens_data(target: Target, ioi: tuple[str, str, str] = oracles.IOI_PROMPTS[0]) -> LensData:
    """spec.oracles.logit_lens and lens_ranks (TR-3) for the essay's IOI prompt (TR-4), and the states
    oracles.lens_states projected on the plane of the two names' output directions."""
    prompt, expected, other = ioi
    tok = target.tokenizer()
    ids = _ids(target, prompt)
    lens = oracles.logit_lens(target, ids).double().cpu()  # [L + 1, V]
    final = int(target.logits(ids)[0, -1].argmax())
    probs = oracles.exact_softmax(lens, 1.0)[:, final]
    U, _ = target.unembedding()
    pair = [tok.encode(expected), tok.encode(other)]
    if any(len(p) != 1 for p in pair):
        raise ValueError(f"figure 6 needs {expected!r} and {other!r} to be single tokens for this tokenizer")
    u = U.detach().double().cpu()[:, [pair[0][0], pair[1][0]]].T  # [2, d]: the two output directions
    basis = torch.linalg.qr(u.T).Q.T  # [2, d] orthonormal, first row along u[0] (up to sign)
    basis = basis * torch.sign((basis * u).sum(dim=1, keepdim=True))  # both axes point along u[0], u[1]'s side
    states = oracles.lens_states(target, ids).double().cpu()  # [L + 1, d]
    unit = u / u.norm(dim=1, keepdim=True)
    return LensData(prompt, _show(tok, final), oracles.lens_ranks(lens, final), probs.tolist(), (expected, other),
                    states @ basis.T, unit @ basis.T, states @ u.T)


def lens_plot(d: LensData) -> Any:
    """Left: the final token's rank (log) and probability by depth. Right: the trajectory in the names' plane."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(WIDTH, 4.3), layout="constrained")
    axes = fig.subplot_mosaic([["rank", "plane"], ["prob", "plane"]], width_ratios=[1, 1.3])
    depth = list(range(len(d.ranks)))
    axes["rank"].plot(depth, [r + 1 for r in d.ranks], color="#4c72b0", marker="o", ms=2.5)
    axes["rank"].set(yscale="log", ylabel="rank + 1 (log; 1 = top)",
                     title=f"Logit lens: {d.final_token} through the layers")
    floor = 1e-20  # the embedding's lens gives far smaller probabilities; they are written, not drawn
    axes["prob"].plot(depth, [p if p >= floor else math.nan for p in d.probs], color="#dd8452", marker="o", ms=2.5)
    axes["prob"].set(yscale="log", ylim=(floor, 30.0), ylabel="lens probability (log scale)",
                     xlabel="depth: 0 = the embedding, l = after block l")
    below = [f"depth {k}: {p:.0e}" for k, p in enumerate(d.probs) if p < floor]
    if below:
        axes["prob"].text(0.98, 0.04, "below the axis: " + ", ".join(below), transform=axes["prob"].transAxes,
                          ha="right", fontsize=7)
    axes["rank"].sharex(axes["prob"])
    axes["rank"].tick_params(labelbottom=False)
    _plane(fig, axes["plane"], d)
    return fig


def _plane(fig: Any, ax: Any, d: LensData) -> None:
    """The lens states' trajectory in the plane of the two names' output directions, coloured by depth."""
    xy = d.plane
    reach = float(xy.abs().max()) * 1.15
    w = d.directions[0] - d.directions[1]  # in-plane normal of the line where the two names' logits are equal
    normal = w / w.norm()  # points to the side where names[0] scores higher
    along = torch.stack([-normal[1], normal[0]])
    edge = along * reach * 2
    ax.plot([-edge[0], edge[0]], [-edge[1], edge[1]], color="gray", ls="--", lw=1)
    for side, name in ((1.0, d.names[0]), (-1.0, d.names[1])):
        x, y = (float(c) for c in side * 0.6 * reach * normal + side * 0.4 * reach * along)
        ax.text(x, y, f"{name!r}\nscores higher", color="gray", fontsize=7.5, ha="center", va="center")
    for k, name in enumerate(d.names):
        dx, dy = (float(c) * reach * 0.85 for c in d.directions[k])
        ax.annotate("", xy=(dx, dy), xytext=(0, 0), arrowprops={"arrowstyle": "->", "color": "black", "lw": 1.2})
        ax.text(dx, dy, f" {name!r}", fontsize=8, ha="left" if dx >= 0 else "right", va="bottom")
    ax.plot(xy[:, 0].tolist(), xy[:, 1].tolist(), color="lightgray", lw=1, zorder=1)
    pts = ax.scatter(xy[:, 0].tolist(), xy[:, 1].tolist(), c=list(range(len(xy))), cmap="viridis", s=16, zorder=2)
    for k, text in ((0, "embedding"), (len(xy) - 1, f"after block {len(xy) - 1}")):
        ax.annotate(text, xy=(float(xy[k, 0]), float(xy[k, 1])), xytext=(0, 5), textcoords="offset points",
                    ha="center", va="bottom", fontsize=7.5)
    bar = fig.colorbar(pts, cax=ax.inset_axes((0.06, 0.1, 0.4, 0.03)), orientation="horizontal")
    bar.set_label("depth (0 = the embedding)", fontsize=7.5)
    bar.ax.xaxis.set_label_position("top")
    bar.ax.tick_params(labelsize=7)
    ax.set(xlim=(-reach, reach), ylim=(-reach, reach), aspect="equal",
           xlabel=f"along {d.names[0]!r} (lens state units)", ylabel="perpendicular, in the plane",
           title=f"Lens states in the plane of the output\ndirections of {d.names[0]!r} and {d.names[1]!r} (arrows)")


# ------------------------------------------------------------------------------ 7. attention (ATT-3)


@dataclass(frozen=True)
class AttentionData:
    prompt: str
    tokens: list[str]
    weights: Tensor  # [L, heads, T] float64: the last query's weights over the prompt, every block and head
    model: str


def attention_data(target: Target, prompt: str = oracles.STORM_PROMPT) -> AttentionData:
    """The target's attention weights (the capability ATT-3 checks), the last query's row in every block and head."""
    ids = _ids(target, prompt)
    rows = torch.stack([w[0, :, -1].detach().double().cpu() for w in target.attention_weights(ids)])  # [L, H, T]
    tok = target.tokenizer()
    return AttentionData(prompt, [_show(tok, int(i)) for i in ids[0]], rows, _model_name(target))


def attention_plot(d: AttentionData) -> Any:
    """For a few blocks, one stacked bar per head: the last token's weights over the prompt, each bar summing to 1."""
    blocks = sorted({min(b, d.weights.shape[0]) for b in ATTENTION_BLOCKS})
    fig, axes = _figure(4.8, nrows=(len(blocks) + 1) // 2, ncols=2, sharex=True, sharey=True)
    colors = ["#4c72b0", "#dd8452", "#55a868", "#c44e52", "#8172b3", "#937860", "#da8bc3", "#8c8c8c"]
    heads = d.weights.shape[1]
    y = list(range(heads))[::-1]
    for ax, b in zip(axes, blocks, strict=False):
        w = d.weights[b - 1]  # [H, T]
        left = torch.zeros(heads, dtype=torch.float64)
        for j, name in enumerate(d.tokens):
            ax.barh(y, w[:, j].tolist(), left=left.tolist(), color=colors[j % len(colors)], label=name, height=0.8)
            for yi, x0, x in zip(y, left.tolist(), w[:, j].tolist(), strict=True):
                if x >= 0.2:
                    ax.text(x0 + x / 2, yi, f"{x:.2f}", ha="center", va="center", fontsize=6.5, color="white")
            left += w[:, j]
        ax.set(title=f"block {b}", xlim=(0, 1), yticks=y, yticklabels=[f"head {h + 1}" for h in range(heads)])
    for ax in axes[-2:]:
        ax.set_xlabel("attention weight (share of the head's attention)")
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside upper center", ncols=len(d.tokens), frameon=False,
               title=f"Where the last token of {d.prompt!r} looks, per head ({d.model}): each bar sums to 1")
    return fig


# ------------------------------------------------------------------------------ drawing and writing


def _figure(height: float, nrows: int = 1, ncols: int = 1, **kw: Any) -> tuple[Any, list[Any]]:
    """A Figure WIDTH x ``height`` inches with constrained layout and its axes as a flat list."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(WIDTH, height), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False, **kw)
    return fig, [ax for row in axes for ax in row]


def _limit(ax: Any, y: float, text: str, *, above: bool, right: bool = False) -> None:
    """A dashed horizontal line at y with its meaning written just above or below it, at the left or right end."""
    ax.axhline(y, color="gray", ls="--", lw=1)
    ax.annotate(text, xy=(0.99 if right else 0.01, y), xycoords=("axes fraction", "data"),
                xytext=(0, 3 if above else -3), textcoords="offset points", va="bottom" if above else "top",
                ha="right" if right else "left", fontsize=7.5, color="dimgray")


@dataclass(frozen=True)
class FigureSpec:
    """One figure: its file stem, the claims it illustrates, its data function and its plot function."""

    stem: str
    claims: tuple[str, ...]
    data: Callable[..., Any]
    plot: Callable[[Any], Any]
    needs_model: bool = True


FIGURES: tuple[FigureSpec, ...] = (
    FigureSpec("1-toy-softmax", ("OUT-2",), toy_data, toy_plot, needs_model=False),
    FigureSpec("2-temperature", ("SOFT-4", "SOFT-5"), temperature_data, temperature_plot),
    FigureSpec("3-length", ("SOFT-6",), length_data, length_plot),
    FigureSpec("4-residual-norms", ("TR-1",), norms_data, norms_plot),
    FigureSpec("5-embedding-norms", ("TR-2",), embedding_norms_data, embedding_norms_plot),
    FigureSpec("6-logit-lens", ("TR-3", "TR-4"), lens_data, lens_plot),
    FigureSpec("7-attention", ("ATT-3",), attention_data, attention_plot),
)


def save(fig: Any, outdir: Path, stem: str) -> list[Path]:
    """Write ``fig`` as stem.png (DPI dots per inch) and stem.svg, with no date or version in either file.

    Each file is written to a temporary file in ``outdir`` and then renamed over the old one: a reader never sees a
    half-written figure, and a symbolic link at the name is refused (writing through it would change a file
    elsewhere).
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(fig)
    png, svg = outdir / f"{stem}.png", outdir / f"{stem}.svg"
    _replace(png, lambda f: fig.savefig(f, format="png", dpi=DPI, metadata={"Software": None}))
    fig.set_layout_engine("none")  # keep the layout the PNG got (it is in inches, so it fits the SVG): ~1/3 faster
    _replace(svg, lambda f: fig.savefig(f, format="svg", metadata={"Date": None, "Creator": None}))
    return [png, svg]


def _replace(path: Path, draw: Callable[[Any], None]) -> None:
    """``draw`` into a temporary file beside ``path``, then rename it to ``path`` (never through a link)."""
    refuse_links([path])
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            draw(f)
        mask = os.umask(0)
        os.umask(mask)
        os.chmod(tmp, 0o666 & ~mask)  # as a plain open() would have made it (mkstemp makes 0o600)
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def refuse_links(paths: Sequence[Path]) -> None:
    """InputError if any of ``paths`` is a symbolic link (or anything but a regular file, where it exists)."""
    for p in paths:
        if p.is_symlink():
            raise InputError(f"figures: {p} is a symbolic link; refusing to write through it (remove it first)")
        if p.exists() and not p.is_file():
            raise InputError(f"figures: {p} exists and is not a regular file; remove it first")


def _check_outdir(out_dir: Path, stems: Sequence[str]) -> None:
    """OUTDIR is a folder (or can be made) and no figure file in it is a link; checked before any model loads."""
    try:
        if out_dir.exists() and not out_dir.is_dir():
            raise InputError(f"figures: OUTDIR {out_dir} exists and is not a folder")
        out_dir.mkdir(parents=True, exist_ok=True)
    except (OSError, ValueError) as err:  # no permission, a name too long, a NUL byte
        if isinstance(err, InputError):
            raise
        raise InputError(f"figures: cannot create OUTDIR {str(out_dir)!r}: "
                         f"{getattr(err, 'strerror', None) or err}") from None
    if not os.access(out_dir, os.W_OK):
        raise InputError(f"figures: OUTDIR {out_dir} is not writable")
    refuse_links([out_dir / f"{stem}.{ext}" for stem in stems for ext in ("png", "svg")])


def _check_vocabulary(model: Target) -> None:
    """The model has a tokenizer (every model figure starts from text) with no more IDs than the model has rows (else
    a prompt's IDs index past its embedding)."""
    if "tokenizer" not in model.capabilities:
        raise InputError(f"figures: target {model.name} exposes no tokenizer, and the figures start from text; use a "
                         "trained model with one (the default, smollm2)")
    size = model.tokenizer().vocab_size
    if size > model.vocab_size:
        raise InputError(f"figures: target {model.name}'s vocabulary has {model.vocab_size} entries, fewer than "
                         f"its tokenizer's {size}; use a target whose model and tokenizer share one vocabulary "
                         "(the default, smollm2)")


def _data(spec: FigureSpec, model: Target | None) -> Any:
    """The figure's data; InputError naming the capability when the target lacks one the figure reads."""
    if not spec.needs_model:
        return spec.data()
    assert model is not None
    try:
        return spec.data(model)
    except NotExposed as err:
        raise InputError(f"figures: figure {spec.stem} reads the target's {err.capability}, which target "
                         f"{model.name} does not expose ({err}); use a target that does (the default, smollm2)") \
            from None


def write(outdir: str | Path, target: Target | Callable[[], Target] | None,
          only: Sequence[str] = ()) -> dict[str, tuple[Any, list[Path]]]:
    """Compute and draw every figure (or those whose stem is in ``only``) into ``outdir``.

    ``target`` is the model figures 2-7 read, or a function returning it (called only if one
    is needed). Returns {stem: (the data drawn, [png path, svg path])}.
    """
    import matplotlib

    chosen = [f for f in FIGURES if not only or f.stem in only]
    unknown = set(only) - {f.stem for f in FIGURES}
    if unknown:
        raise InputError(f"unknown figures {sorted(unknown)}; the figures are {[f.stem for f in FIGURES]}")
    if not str(outdir).strip():  # Path("") is the working directory: a missing argument must not mean it
        raise InputError("figures: OUTDIR is empty; give a folder (. for the current one)")
    out_dir = Path(outdir)
    _check_outdir(out_dir, [f.stem for f in chosen])
    model = None
    results: dict[str, tuple[Any, list[Path]]] = {}
    for spec in chosen:
        if spec.needs_model and model is None:
            if target is None:
                raise InputError(f"figure {spec.stem} needs a target (a trained model such as smollm2)")
            model = target if isinstance(target, Target) else target()
            _check_vocabulary(model)
        data = _data(spec, model)
        with matplotlib.rc_context(cast(Any, STYLE)):  # the stubs type rc keys as a Literal
            results[spec.stem] = (data, save(spec.plot(data), out_dir, spec.stem))
    return results


__all__ = ["FIGURES", "FigureSpec", "refuse_links", "save", "write"]
