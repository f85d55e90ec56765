"""Oracles: the independent computations, bounds and statistics the claims judge a target by.

A claim states a property; what it compares the target against is computed here, never by
the target's own functions: softmax by hand in float64 and the rounding bound a target's
softmax must stay within (the derivation is in spec/claims/soft.py's docstring), the
documents' toy example, the sampler's expected distributions, acceptable tie outcomes and
goodness-of-fit tests with their false-alarm budget (see spec/claims/dec.py's docstring),
the greedy band, and the measurements, stated prompts and thresholds of the trained-model
claims. They live outside the claim modules because several claims and the executable
figures (spec/figures.py) share them: a claim module imports helpers (this module,
spec.edits, spec.strategies, ...), never another claim module, and a figure draws what the
claim's oracle computes. Each function names the claims that use it."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from scipy import special, stats
from torch import Tensor

from spec.strategies import generator
from spec.target import Target
from spec.tolerance import ToleranceClass, assert_close, check

# == softmax in float64 and its rounding bounds (SOFT-1 .. SOFT-7, OUT-2, figures 1-3, 6) ====================
_BOUND = ToleranceClass("derived bound", 1.0, 0.0)  # compares error / bound against 0: within when <= 1


def unit_roundoff(*dtypes: torch.dtype) -> float:
    """The largest unit roundoff (eps / 2) among the floating dtypes given."""
    return max(torch.finfo(dt).eps / 2 for dt in dtypes if dt.is_floating_point)


def exact_softmax(z: Tensor, temperature: float) -> Tensor:
    """softmax(z / T) over the last axis in float64 on the CPU, by hand; -inf entries get exactly 0."""
    y = z.detach().double().cpu() / temperature
    m = torch.where(torch.isfinite(y), y, torch.full_like(y, -math.inf)).amax(dim=-1, keepdim=True)
    e = torch.exp(y - m)
    return e / e.sum(dim=-1, keepdim=True)


def softmax_error_bound(z: Tensor, temperature: float, u: float, tiny: float,
                        input_err: Tensor | None = None, reference_z: Tensor | None = None,
                        reference_temperature: float | None = None) -> Tensor:
    """Per-entry bound on |computed - exact| for softmax(z / T) worked out with unit roundoff u (module doc).

    ``input_err`` [same shape as z]: a known absolute perturbation of each logit before the
    softmax (e.g. the rounding of a shift applied in the target's dtype), added to the exponents.
    The float64 reference (``exact_softmax`` of ``reference_z`` at ``reference_temperature``, by
    default z and T) rounds too: its own bound, the same formula with u = 2^-53, is added, which
    matters only for float64 targets.
    """
    ref = z if reference_z is None else reference_z
    ref_t = temperature if reference_temperature is None else reference_temperature
    return _rounding_bound(z, temperature, u, tiny, input_err) + _rounding_bound(ref, ref_t, 2.0**-53, 0.0, None)


def _rounding_bound(z: Tensor, temperature: float, u: float, tiny: float, input_err: Tensor | None) -> Tensor:
    zd = z.detach().double().cpu()
    finite = torch.isfinite(zd)
    y = torch.where(finite, zd / temperature, torch.zeros_like(zd))
    m = torch.where(finite, y, torch.full_like(y, -math.inf)).amax(dim=-1, keepdim=True)
    a = 2 * (y - m).abs() + 1
    if temperature != 1.0:
        a = a + y.abs()
    a = a * u
    a = torch.where(finite, a, torch.zeros_like(a))
    p = exact_softmax(zd, temperature)
    a_bar = (p * a).sum(dim=-1, keepdim=True)
    v = zd.shape[-1]
    bound = 2 * p * (a + a_bar + (v + 4) * u) + tiny
    if input_err is None:
        return bound
    # Logits moved by up to d_j each move p_i by a factor within e^(+-(d_i + max_j d_j)) at any size; the first-order
    # 2 p (d_i + sum_j p_j d_j) alone is too small once d is not small (bfloat16 rounds 1030 to 1032: d = 2, and the
    # probabilities move by e^2). The larger of the two, so no bound is tighter than the first-order one was.
    d = torch.where(finite, input_err.detach().double().cpu().abs() / temperature, torch.zeros_like(zd))
    first_order = 2 * p * (d + (p * d).sum(dim=-1, keepdim=True))
    return bound + torch.maximum(first_order, p * torch.expm1(d + d.amax(dim=-1, keepdim=True)))


def within(actual: Tensor, expected: Tensor, bound: Tensor, what: str) -> None:
    """|actual - expected| <= bound entry by entry (NaN never is); records error / bound as the worst ratio."""
    a = actual.detach().double().cpu()
    e = expected.detach().double().cpu()
    if e.shape != a.shape:
        raise AssertionError(f"{what}: shape {tuple(a.shape)} != expected {tuple(e.shape)}")
    b = torch.as_tensor(bound, dtype=torch.float64).detach().cpu().expand_as(a)
    same = a == e  # also covers matching zeros and matching infinities
    ratio = torch.where(same, torch.zeros_like(a), (a - e).abs() / b)
    if ratio.numel():
        k = int(torch.nan_to_num(ratio, nan=math.inf).argmax())
        idx = tuple(int(i) for i in torch.unravel_index(torch.tensor(k), a.shape))
        what = (f"{what}: worst at {idx}: got {a[idx].item():.10g}, expected {e[idx].item():.10g}, "
                f"allowed error {b[idx].item():.3g}")
    assert_close(ratio, torch.zeros_like(ratio), _BOUND, what + " (error / allowed)")


def at_most(a: float | Tensor, b: float | Tensor, slack: float | Tensor, what: str) -> None:
    """a <= b + slack (entry by entry for tensors); records max(0, a - b) / slack as the ratio to the allowance."""
    ta, tb, ts = (torch.as_tensor(x, dtype=torch.float64).detach().cpu() for x in (a, b, slack))
    ta, tb, ts = torch.broadcast_tensors(ta, tb, ts)
    over = torch.nan_to_num((ta - tb).clamp_min(0), nan=math.inf)
    ratio = torch.where(over == 0, torch.zeros_like(over), over / ts)
    k = int(ratio.flatten().argmax()) if ratio.numel() else 0
    fa, fb, fs = (float(x.flatten()[k]) if x.numel() else 0.0 for x in (ta, tb, ts))
    assert_close(ratio.flatten(), torch.zeros(ratio.numel(), dtype=torch.float64), _BOUND,
                 f"{what}: {fa:.10g} must be <= {fb:.10g} (+ allowed {fs:.3g})")


def entropy(p: Tensor) -> Tensor:
    """Shannon entropy (nats) of each row of p, in float64, with 0 log 0 = 0."""
    q = p.detach().double().cpu()
    return -(torch.where(q > 0, q * torch.log(q), torch.zeros_like(q))).sum(dim=-1)


def entropy_allowance(z: Tensor, temperature: float, u: float, tiny: float) -> Tensor:
    """How far rounding may move the entropy of softmax(z / T): sum_i bound_i (1 + |log p_i|) per row."""
    if temperature == 0.0:
        return torch.full(z.shape[:-1], tiny, dtype=torch.float64)
    bnd = softmax_error_bound(z, temperature, u, tiny)
    p = exact_softmax(z, temperature).clamp_min(tiny)
    return (bnd * (1 + p.log().abs())).sum(dim=-1)


def run_softmax(target: Target, z: Tensor, temperature: float) -> tuple[Tensor, float, float]:
    """The target's softmax of z (already in its dtype and on its device), with the u and tiny to judge it by."""
    p = target.softmax(z, temperature)
    check(isinstance(p, Tensor) and tuple(p.shape) == tuple(z.shape),
          f"softmax returned shape {tuple(getattr(p, 'shape', ()))} for logits of shape {tuple(z.shape)}")
    check(p.dtype.is_floating_point, f"softmax returned dtype {p.dtype}")
    u = unit_roundoff(z.dtype, p.dtype)
    tiny = max(torch.finfo(z.dtype).tiny, torch.finfo(p.dtype).tiny)
    return p, u, tiny


def temperature_stats(target: Target, z: Tensor, temperature: float) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Top probability and entropy of the target's softmax(z / T) per row of z [B, V] (SOFT-5), each with its
    rounding allowance: (p_max [B], allowance [B], entropy in nats [B], allowance [B]). T = 0 is the argmax."""
    zd = z.double().cpu()
    p, u, tiny = run_softmax(target, z, temperature)
    pd = p.double().cpu()
    bnd = torch.full_like(zd, tiny) if temperature == 0.0 else softmax_error_bound(zd, temperature, u, tiny)
    return pd.amax(dim=-1), bnd.amax(dim=-1), entropy(pd), entropy_allowance(zd, temperature, u, tiny)


def scaled_distribution(target: Target, h: Tensor, U: Tensor, a: float) -> tuple[Tensor, Tensor, float, float]:
    """The logits of the hidden state h [d] scaled by a, (a h) U [1, V], and the target's softmax of them at
    T = 1 [1, V] (SOFT-6), with the unit roundoff and smallest normal to judge that softmax by."""
    za = ((a * h) @ U).unsqueeze(0)  # [1, V] in the target's dtype
    p, u, tiny = run_softmax(target, za, 1.0)
    return za, p, u, tiny


# == the documents' toy example (OUT-2, figure 1) ============================================================
_TOY_H = [2.0, 1.0, 0.0, 3.0]
_TOY_NAMES = ["the", "cat", "runs", "blue", "quickly", "banana"]
_TOY_VECTORS = [[1, 0, 0, 1], [1, 1, 0, 1], [0, 1, 1, 1], [1, 0, 1, 0], [0, 1, 0, 2], [2, 0, 1, 0]]


def toy_logits(order: list[int], dtype: torch.dtype = torch.float64,
               device: torch.device | str = "cpu") -> tuple[list[str], Tensor]:
    """The toy example of embedding-to-choice §12 (OUT-2): the six token names in ``order`` and their logits
    h U [6], with h = [2, 1, 0, 3] and the six output vectors as the columns of U, in ``dtype`` on ``device``."""
    U = torch.tensor([_TOY_VECTORS[i] for i in order], dtype=dtype, device=device).T  # [4, 6]
    h = torch.tensor(_TOY_H, dtype=dtype, device=device)  # [4]
    return [_TOY_NAMES[i] for i in order], h @ U


# == choosing the token (DEC-1 .. DEC-4, GEN-1); see spec/claims/dec.py's docstring ==========================

# -- statistical budget -------------------------------------------------------------------------------
DRAWS = 20_000  # tokens drawn per statistical example
STAT_EXAMPLES = 4  # max_examples of each statistical claim
TESTS_PER_EXAMPLE = 2  # chi-square over the cells + binomial on a pool of rare cells expected < 5 times
FAMILY_ALPHA = 1e-4  # false-alarm probability of one run of one statistical claim on a correct sampler
ALPHA = FAMILY_ALPHA / (STAT_EXAMPLES * TESTS_PER_EXAMPLE)  # per test (Bonferroni): 1.25e-5
MIN_EXPECTED = 5.0  # cells expected fewer times than this are pooled (chi-square validity)


def work_dtype(target: Target) -> torch.dtype:
    """The dtype logits are handed to the target's sampler in: float64 for float64 targets, else float32."""
    return torch.float64 if target.dtype == torch.float64 else torch.float32


def as_logits(target: Target, rows: list[list[float]]) -> Tensor:
    return torch.tensor(rows, dtype=work_dtype(target), device=target.device)


def boundary_slack(dtype: torch.dtype) -> float:
    """How far a computed cumulative probability may sit from the exact one: 256 ulps of 1 in ``dtype``.

    A float32 softmax over <= 40 entries and its running sum are off by at most ~V * 2 eps;
    256 eps (3e-5 in float32, 6e-14 in float64) covers that with room to spare.
    """
    return 256 * torch.finfo(dtype).eps


# -- the independent computation -------------------------------------------------------------------------
def probs64(row: list[float], temperature: float) -> list[float]:
    """softmax(row / T) by hand in float64: shift by the maximum, exponentiate, normalise."""
    m = max(row)
    e = [math.exp((z - m) / temperature) for z in row]
    s = math.fsum(e)
    return [x / s for x in e]


def ranked(row: list[float]) -> list[int]:
    """Token IDs by logit, highest first; equal logits in ID order (this module's bookkeeping, not a tie rule)."""
    return sorted(range(len(row)), key=lambda i: (-row[i], i))


def renormalised(q: list[float], keep: list[int]) -> list[float]:
    s = math.fsum(q[i] for i in keep)
    out = [0.0] * len(q)
    for i in keep:
        out[i] = q[i] / s
    return out


@dataclass(frozen=True)
class Keep:
    """One acceptable outcome of a filter: every token of ``sure``, and any ``m`` tokens of the tie group ``tied``.

    The tokens of ``tied`` have equal logits; which m of them survive is the implementation's choice,
    since the sources state no tie rule. ``choice`` names that choice for the report (spec.target.note);
    it is "" where nothing was left to choose (no tie group split by the boundary).
    """

    sure: tuple[int, ...]
    tied: tuple[int, ...] = ()
    m: int = 0
    choice: str = ""

    def describe(self) -> str:
        if not self.tied:
            return f"IDs {sorted(self.sure)}"
        return f"IDs {sorted(self.sure)} and any {self.m} of the tied IDs {sorted(self.tied)}"


def split_at(row: list[float], j: int) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """For the j-th largest logit value v (1-based): the IDs with a logit above v, and the IDs whose logit is v."""
    v = sorted(row, reverse=True)[j - 1]
    return tuple(i for i, z in enumerate(row) if z > v), tuple(i for i, z in enumerate(row) if z == v)


def cut_options(row: list[float], j: int, exact: str, whole: str) -> list[Keep]:
    """The outcomes of keeping the j top-ranked tokens, with ``exact`` / ``whole`` naming the two tie choices.

    Every token above the j-th value is kept. If the j-th value's tie group fits entirely into
    the first j places, nothing is left to choose. Otherwise the group is split by the boundary
    and either exactly j tokens survive (any of the tied ones: a sort or torch.topk picks some) or
    the whole group does (an implementation comparing against the j-th value keeps every equal one).
    """
    above, group = split_at(row, j)
    m = j - len(above)
    if m == len(group):
        return [Keep(tuple(sorted(above + group)))]
    return [Keep(above, group, m, exact), Keep(above, group, len(group), whole)]


TOP_K_EXACT, TOP_K_WHOLE = "keeps exactly k", "keeps all tied"
TOP_P_EXACT, TOP_P_WHOLE = "keeps as many as the shortest set", "keeps the whole tie group"


def top_k_options(row: list[float], k: int) -> list[Keep]:
    """The acceptable top-k outcomes: exactly min(k, V) tokens, or every token tied with the k-th as well."""
    return cut_options(row, min(k, len(row)), TOP_K_EXACT, TOP_K_WHOLE)


def top_p_options(row: list[float], temperature: float, p: float, slack: float) -> list[Keep]:
    """Every nucleus a correct implementation may keep, the exact rule's first.

    Exact rule: walk the ranking, keep a token while the mass ranked strictly above it is
    below p; so the set has the size j of the shortest top-ranked prefix whose mass reaches p,
    the top token is always kept, and p = 1 keeps everything. Which tokens of a tie group cut by
    that boundary are in the prefix is free; an implementation treating equal probabilities as
    one rank keeps the whole group instead (``cut_options``). Where a prefix's mass lies within
    ``slack`` of p, rounding in the target may put the boundary one place either way: those
    prefix lengths are accepted too (slack = 0 for the exactly representable boundary cases).
    The prefix masses depend only on the prefix length, not on which tied tokens it holds.
    """
    q = probs64(row, temperature)
    n = len(row)
    if p >= 1.0:
        return [Keep(tuple(range(n)))]
    cum = [0.0]
    for i in ranked(row):
        cum.append(cum[-1] + q[i])
    exact = max(next((j for j in range(1, n + 1) if cum[j - 1] < p <= cum[j]), n), 1)
    lengths = [exact]
    for j in range(1, n + 1):
        reaches = cum[j] >= p - slack
        minimal = j == 1 or cum[j - 1] < p + slack
        if j != exact and reaches and minimal:
            lengths.append(j)
    options: list[Keep] = []
    for j in lengths:
        options += [o for o in cut_options(row, j, TOP_P_EXACT, TOP_P_WHOLE) if o not in options]
    return options


def members_label(tied: tuple[int, ...], members: list[int]) -> str:
    """Which members of a tie group were kept, in words: the lowest IDs, the highest IDs, or others."""
    group, kept = sorted(tied), sorted(members)
    if kept == group[:len(kept)]:
        return "the lowest IDs of the tie"
    if kept == group[len(group) - len(kept):]:
        return "the highest IDs of the tie"
    return "other members of the tie"


# -- statistics ---------------------------------------------------------------------------------------
def gof_pvalue(counts: list[int], probs: list[float], labels: list[str] | None = None) -> tuple[float, str]:
    """Goodness of fit of observed ``counts`` per cell to the cells' ``probs`` (summing to 1).

    ``labels`` name the cells in the description (default: their indices, i.e. token IDs).

    Cells expected fewer than MIN_EXPECTED times are pooled into one bin. If the pool is
    expected at least MIN_EXPECTED times it is one more chi-square cell; if less (but above 0),
    it gets an exact two-sided binomial test and the chi-square runs over the common cells
    conditional on their observed total; if its probability is 0, it must be empty. Returns
    (the smaller p-value, a description); at most two tests, hence TESTS_PER_EXAMPLE = 2.
    """
    label = labels or [str(i) for i in range(len(counts))]
    n = sum(counts)
    common = [i for i, q in enumerate(probs) if n * q >= MIN_EXPECTED]
    rare = [i for i, q in enumerate(probs) if n * q < MIN_EXPECTED]
    obs = [counts[i] for i in common]
    cell_probs = [probs[i] for i in common]
    names = [label[i] for i in common]
    pvals: list[tuple[float, str]] = []
    if rare:
        k, q = sum(counts[i] for i in rare), math.fsum(probs[i] for i in rare)
        pooled = ", ".join(label[i] for i in rare)
        if n * q >= MIN_EXPECTED:
            obs.append(k)
            cell_probs.append(q)
            names.append(f"pool[{pooled}]")
        elif q <= 0.0:
            pvals.append((1.0 if k == 0 else 0.0, f"{k} draws of cells [{pooled}], which have probability 0"))
        else:
            pv = float(stats.binomtest(k, n, min(q, 1.0)).pvalue)
            pvals.append((pv, f"binomial test on the pooled rare cells [{pooled}]: {k} draws, expected {n * q:.3g}"))
    total, mass = sum(obs), math.fsum(cell_probs)
    if len(obs) >= 2 and total > 0:
        exp = [total * q / mass for q in cell_probs]
        exp[-1] += total - math.fsum(exp)  # exact equality of sums, as scipy requires
        res = stats.chisquare(obs, exp)
        pvals.append((float(res.pvalue), f"chi-square over cells {names}: observed {obs}, "
                                         f"expected {[round(e, 1) for e in exp]}"))
    if not pvals:
        return 1.0, "a single cell: nothing to test"
    return min(pvals)


def draw_counts(target: Target, logits_row: Tensor, seed: int, temperature: float, *, top_k: int | None = None,
                top_p: float | None = None) -> list[int]:
    """DRAWS tokens from the target's sampler (one call on DRAWS copies of the row) -> counts per token."""
    v = logits_row.shape[-1]
    batch = logits_row.reshape(1, v).repeat(DRAWS, 1)
    got = target.sample(batch, generator(seed, target.device), temperature, top_k=top_k, top_p=top_p)
    check(tuple(got.shape) == (DRAWS,), f"sample of a [{DRAWS}, {v}] batch returned shape {tuple(got.shape)}")
    check(not got.dtype.is_floating_point, f"sample returned {got.dtype}, not token IDs")
    lo, hi = int(got.min()), int(got.max())
    check(lo >= 0 and hi < v, f"sample returned token {lo if lo < 0 else hi}, outside [0, {v})")
    return [int(c) for c in torch.bincount(got.cpu(), minlength=v)]


def check_fit(counts: list[int], probs: list[float], what: str) -> None:
    """Tokens of probability 0 never drawn (exactly); the rest fit ``probs`` at ALPHA."""
    zero = [i for i, q in enumerate(probs) if q == 0.0 and counts[i] > 0]
    check(not zero, f"{what}: drew tokens {zero}, which have probability 0 (counts {counts})")
    pv, how = gof_pvalue(counts, probs)
    check(pv >= ALPHA, f"{what}: goodness of fit rejected at alpha={ALPHA:.3g} (p={pv:.3g}); {how}")


# -- greedy ---------------------------------------------------------------------------------------------
def greedy_band(z_max: float, tol: ToleranceClass) -> float:
    """How far below the maximum a greedy token's logit may lie when the greedy step's logits were
    computed another way (e.g. through a KV cache): twice the target's tolerance at that logit."""
    return 2.0 * (tol.atol + tol.rtol * abs(z_max))


def check_greedy_step(z: Tensor, chosen: int, tol: ToleranceClass, what: str) -> None:
    """``chosen`` is an argmax of the fresh logits ``z`` [V], up to the band of ``greedy_band``."""
    zz = z.detach().double().cpu()
    z_max, best = float(zz.max()), int(zz.argmax())
    check(0 <= chosen < zz.shape[0], f"{what}: chose token {chosen}, outside [0, {zz.shape[0]})")
    got = float(zz[chosen])
    band = greedy_band(z_max, tol)
    check(got >= z_max - band,
          f"{what}: chose token {chosen} with logit {got:.6g}, but token {best} has logit {z_max:.6g} "
          f"(gap {z_max - got:.3g} > allowed {band:.3g})")


# == trained-model measurements, prompts and thresholds (TR-1 .. TR-4, TR-7, figures 4-7) ====================
def text_ids(target: Target, text: str) -> Tensor:
    """``text`` encoded by the target's tokenizer: [1, T] token IDs on its device (at least one token)."""
    ids = target.tokenizer().encode(text)
    check(len(ids) > 0, f"the tokenizer gives no tokens for {text!r}")
    return torch.tensor([ids], dtype=torch.long, device=target.device)


def rank_of(z: Tensor, i: int) -> int:
    """How many tokens score strictly higher than token i (0 = the top choice)."""
    return int((z > z[i]).sum())


# Prompts whose last position TR-1 and TR-3 follow through the layers.
DEPTH_PROMPTS = (
    "John and Mary went to the bar. John bought a drink for",
    "The storm is",
    "The capital of France is",
    "Once upon a time, there was a little",
    "The sun rises in the east and sets in the",
    "def add(a, b):\n    return",
    "I like to eat apples and",
    "She opened the door and saw",
)


def residual_norms(target: Target, text: str) -> list[float]:
    """|h_l| at the last position of ``text`` for l = 0..L (h_0 the embedding, h_l the residual stream after
    block l, before the final norm), in float64 (TR-1)."""
    states = target.residual_states(text_ids(target, text))
    return [float(s[0, -1].detach().double().norm()) for s in states]


# TR-2 with r_i = |E_i| / median_j |E_j|:
BAND = 0.2  # "similar norm": within +-20% of the median row norm
MIN_IN_BAND = 0.70
TAIL = 1.5  # an outlier row is longer than 1.5x or shorter than 1/1.5 of the median
MAX_TAIL_SHARE = 0.05
MIN_LONGEST = 2.0  # the longest row is at least twice the median


def embedding_norm_ratios(target: Target) -> Tensor:
    """|E_i| / median_j |E_j| for every row of the embedding table, in float64 on the CPU: [V] (TR-2)."""
    E = target.embedding_matrix()
    norms = torch.cat([chunk.detach().double().cpu().norm(dim=1) for chunk in E.split(8192)])
    return norms / norms.median()


def lens_states(target: Target, ids: Tensor) -> Tensor:
    """final_norm(h_l) at the last position of ids [1, T] for l = 0..L: the states the logit lens reads,
    in the target's dtype: [L + 1, d] (TR-3)."""
    states = target.residual_states(ids)
    h = torch.stack([s[0, -1].detach() for s in states])[None]  # the last position at every depth: [1, L + 1, d]
    return target.final_norm(h)[0].detach()


def logit_lens(target: Target, ids: Tensor) -> Tensor:
    """final_norm(h_l) @ U (+ b) at the last position of ids [1, T] for l = 0..L: [L + 1, V] (TR-3)."""
    U, b = target.unembedding()
    lens = lens_states(target, ids) @ U.detach()  # [L + 1, V]
    return lens if b is None else lens + b


def lens_ranks(lens: Tensor, token: int) -> list[int]:
    """The rank of ``token`` (0 = top) in each row of the logit lens [L + 1, V], compared in float64 (TR-3)."""
    return [rank_of(z, token) for z in lens.double().cpu()]



# (prompt, the name expected, the name it should beat). The first is the essay's; the second is its mirror
# image, so a model preferring " Mary" whatever the prompt fails.
IOI_PROMPTS = (
    ("John and Mary went to the bar. John bought a drink for", " Mary", " John"),
    ("John and Mary went to the bar. Mary bought a drink for", " John", " Mary"),
)

STORM_PROMPT = "The storm is"  # TR-7 and figure 7


# -- EMB-8: the law of the cosine of random directions ---------------------------------------------------
def mean_abs_cos(d: int) -> float:
    """E|cos| for two independent uniform directions in R^d: Gamma(d/2) / (sqrt(pi) Gamma((d+1)/2))."""
    return math.exp(special.gammaln(d / 2) - special.gammaln((d + 1) / 2)) / math.sqrt(math.pi)


def check_cosine_law(cos: np.ndarray, d: int, alpha: float) -> None:
    """Cosines of independent Gaussian pairs in R^d follow their exact law (claim EMB-8): a Kolmogorov-Smirnov test
    against (cos + 1) / 2 ~ Beta((d-1)/2, (d-1)/2) and z-tests of mean |cos| and mean cos^2, at ``alpha`` in all."""
    each = alpha / 3
    half = (d - 1) / 2
    ks = stats.kstest((cos + 1) / 2, stats.beta(half, half).cdf)
    check(ks.pvalue > each, f"d={d}: KS test of cos against its exact law rejects (p={ks.pvalue:.3g} < {each:.2g})")
    z_crit = float(stats.norm.isf(each / 2))
    m_abs = mean_abs_cos(d)
    sd_abs = math.sqrt(1 / d - m_abs**2)
    z_abs = (abs(cos).mean() - m_abs) / (sd_abs / math.sqrt(len(cos)))
    check(abs(z_abs) < z_crit, f"d={d}: mean |cos| {abs(cos).mean():.5f} vs exact {m_abs:.5f} (z={z_abs:.2f})")
    sd_sq = math.sqrt(2 * (d - 1) / (d**2 * (d + 2)))  # variance of Beta(1/2, (d-1)/2)
    z_sq = ((cos**2).mean() - 1 / d) / (sd_sq / math.sqrt(len(cos)))
    check(abs(z_sq) < z_crit, f"d={d}: mean cos^2 {(cos**2).mean():.5f} vs 1/d = {1 / d:.5f} (z={z_sq:.2f})")
    approx = math.sqrt(2 / (math.pi * d))
    check(approx <= m_abs <= approx * (1 + 1 / (3 * d)),
          f"d={d}: exact E|cos| {m_abs:.6f} is not sqrt(2/(pi d)) = {approx:.6f} up to 1/(3d)")
