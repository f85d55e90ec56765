"""DEC: choosing the token (claims DEC-1 .. DEC-5).

The sampler claims feed the target's own ``sample`` / ``filtered_probabilities`` with
logits drawn on a grid of quarter-integers: every grid value is exact in float32 and
float64, distinct values stay distinct after division by any drawn temperature, and
equal values (ties) are common, so the tie rules are exercised on every run.

Expected distributions are computed here, independently, in float64: softmax by hand
(shift by the maximum, exponentiate, divide by the sum) and the ranking by Python's
``sorted`` on (logit descending, ID ascending) — never by the target's functions.

Statistical claims (DEC-2, DEC-3, DEC-4) draw N = 20,000 tokens per example from a
``torch.Generator`` seeded by a drawn seed, so each example's verdict is a fixed
function of its drawn data (reproducible, and Hypothesis never sees a flaky verdict).
Each claim runs at most 4 examples with at most 2 tests each (a chi-square over the
cells expected >= 5 times, the rarer cells merged into one pooled cell, and a binomial
test on that pool instead when even the pool is expected < 5 times); each
test runs at alpha = 1e-4 / 8 = 1.25e-5, so by Bonferroni a correct sampler fails a
claim with probability at most 1e-4 per run of the claim.
"""

from __future__ import annotations

import math

import torch
from hypothesis import strategies as st
from scipy import stats
from torch import Tensor

from spec.catalog import claim
from spec.strategies import generator, seeds
from spec.target import NotExposed, Target
from spec.tolerance import CLASSES, ToleranceClass, assert_close, assert_equal, check, error_ratio, for_dtype

# -- statistical budget -------------------------------------------------------------------------------
DRAWS = 20_000  # tokens drawn per statistical example
STAT_EXAMPLES = 4  # max_examples of each statistical claim
TESTS_PER_EXAMPLE = 2  # chi-square over the cells + binomial on a pool of rare cells expected < 5 times
FAMILY_ALPHA = 1e-4  # false-alarm probability of one run of one statistical claim on a correct sampler
ALPHA = FAMILY_ALPHA / (STAT_EXAMPLES * TESTS_PER_EXAMPLE)  # per test (Bonferroni): 1.25e-5
MIN_EXPECTED = 5.0  # cells expected fewer times than this are pooled (chi-square validity)


# -- drawing logits -----------------------------------------------------------------------------------
def grid_logits(*, min_vocab: int = 2, max_vocab: int = 16, lo: int = -16, hi: int = 16, step: float = 0.25,
                batch: int = 1) -> st.SearchStrategy[list[list[float]]]:
    """[batch][V] logits on the grid ``step * k`` for integers lo <= k <= hi (exact in every float dtype)."""

    @st.composite
    def draw(d: st.DrawFn) -> list[list[float]]:
        v = d(st.integers(min_vocab, max_vocab), label="vocab")
        row = st.lists(st.integers(lo, hi), min_size=v, max_size=v)
        return [[step * k for k in d(row)] for _ in range(batch)]

    return draw()


def spread(row: list[float], step: float = 0.25) -> list[float]:
    """The row, made non-uniform: all-equal rows get their first entry raised by 8 steps."""
    if len(set(row)) == 1:
        return [row[0] + 8 * step, *row[1:]]
    return row


def unique_max(row: list[float], step: float = 0.25) -> list[float]:
    """The row with a unique maximum: the first of tied maxima is raised by one grid step."""
    m = max(row)
    if row.count(m) > 1:
        i = row.index(m)
        return [*row[:i], m + step, *row[i + 1:]]
    return row


temperatures_away_from_one = st.one_of(st.floats(0.25, 0.8), st.floats(1.25, 4.0))


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
    """Token IDs by logit, highest first; among equal logits the lower ID first."""
    return sorted(range(len(row)), key=lambda i: (-row[i], i))


def renormalised(q: list[float], keep: list[int]) -> list[float]:
    s = math.fsum(q[i] for i in keep)
    out = [0.0] * len(q)
    for i in keep:
        out[i] = q[i] / s
    return out


def top_k_set(row: list[float], k: int) -> list[int]:
    """The k top-ranked IDs (ties at the k-th place broken toward the lower ID; never more than k)."""
    return ranked(row)[:min(k, len(row))]


def top_p_sets(row: list[float], temperature: float, p: float, slack: float) -> list[list[int]]:
    """Every nucleus a correct implementation may keep, the exact rule's first.

    Exact rule: walk the ranking, keep a token while the mass ranked strictly above it is
    below p; so the set is the shortest top-ranked prefix whose mass reaches p, the top token
    is always kept, and p = 1 keeps everything. Where a prefix's mass lies within ``slack``
    of p, rounding in the target may put the boundary one place either way: those prefix
    lengths are accepted too (slack = 0 for the exactly representable boundary cases).
    """
    q = probs64(row, temperature)
    order = ranked(row)
    cum = [0.0]
    for i in order:
        cum.append(cum[-1] + q[i])
    n = len(order)
    if p >= 1.0:
        exact = n
    else:
        exact = next((j for j in range(1, n + 1) if cum[j - 1] < p <= cum[j]), n)
        exact = max(exact, 1)
    lengths = [exact]
    for j in range(1, n + 1):
        reaches = cum[j] >= p - slack
        minimal = j == 1 or cum[j - 1] < p + slack
        if j != exact and reaches and minimal and p < 1.0:
            lengths.append(j)
    return [order[:j] for j in lengths]


# -- statistics ---------------------------------------------------------------------------------------
def gof_pvalue(counts: list[int], probs: list[float]) -> tuple[float, str]:
    """Goodness of fit of observed ``counts`` per cell to the cells' ``probs`` (summing to 1).

    Cells expected fewer than MIN_EXPECTED times are pooled into one bin. If the pool is
    expected at least MIN_EXPECTED times it is one more chi-square cell; if less (but above 0),
    it gets an exact two-sided binomial test and the chi-square runs over the common cells
    conditional on their observed total; if its probability is 0, it must be empty. Returns
    (the smaller p-value, a description); at most two tests, hence TESTS_PER_EXAMPLE = 2.
    """
    n = sum(counts)
    common = [i for i, q in enumerate(probs) if n * q >= MIN_EXPECTED]
    rare = [i for i, q in enumerate(probs) if n * q < MIN_EXPECTED]
    obs = [counts[i] for i in common]
    cell_probs = [probs[i] for i in common]
    names = [str(i) for i in common]
    pvals: list[tuple[float, str]] = []
    if rare:
        k, q = sum(counts[i] for i in rare), math.fsum(probs[i] for i in rare)
        if n * q >= MIN_EXPECTED:
            obs.append(k)
            cell_probs.append(q)
            names.append(f"pool{rare}")
        elif q <= 0.0:
            pvals.append((1.0 if k == 0 else 0.0, f"{k} draws of tokens {rare}, which have probability 0"))
        else:
            pv = float(stats.binomtest(k, n, min(q, 1.0)).pvalue)
            pvals.append((pv, f"binomial test on the pooled rare tokens {rare}: {k} draws, expected {n * q:.3g}"))
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
def first_argmax(row: list[float]) -> int:
    m = max(row)
    return next(i for i, z in enumerate(row) if z == m)


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


# ======================================================================================================
@claim("DEC-1", "Greedy decoding chooses the token with the highest logit; among tied maxima, the lowest ID.",
       source="embedding-to-choice §14; inference-journey §12", needs=(), kind="exact",
       tolerance="exact for the sampler at T = 0 (a choice among given numbers); for generate, the chosen "
                 "token's logit in a fresh full forward pass may trail the maximum by at most twice the "
                 "target's tolerance class, because generate may compute its step logits through a KV cache",
       precise="'greedy picks the highest-probability token' becomes: (a) sample(z, g, T=0) returns, per row, "
               "a token whose logit is maximal, and among several maximal logits the lowest ID (the rule of "
               "torch.argmax, numpy.argmax and the reference), with or without top-k/top-p given; the target's "
               "filtered_probabilities at T = 0 (if exposed) is one-hot on that same token; (b) each token of "
               "the target's greedy generate attains the maximum of a fresh full forward pass on its prefix "
               "(up to the stated band). Runs (a) where 'sample' is exposed and (b) where 'generate' is; a "
               "target with neither is reported as not exposing 'sample'.")
def dec_1(target: Target, data: st.DataObject) -> None:
    """Greedy is argmax with lowest-ID tie-breaking, in the sampler at T = 0 and in generate.

    Sampler: integer logits in [-3, 3] (so ties are frequent), a batch of rows; the choice
    must have the row's maximal logit and be the first such ID; optional top_k / top_p
    must not change it (both always keep the argmax). Generate: every appended token's
    logit in a fresh full forward pass on its prefix is within the tolerance band of the
    maximum (exact ties between model logits cannot be told from rounding, so no tie
    rule is imposed there).
    """
    caps = target.capabilities
    if "sample" not in caps and "generate" not in caps:
        raise NotExposed("sample", "DEC-1 needs the target's sampler or its greedy generate")
    if "sample" in caps:
        rows = data.draw(grid_logits(min_vocab=2, max_vocab=24, lo=-3, hi=3, step=1.0,
                                     batch=data.draw(st.integers(1, 6), label="batch")), label="logits")
        z = as_logits(target, rows)
        v = z.shape[-1]
        top_k = data.draw(st.none() | st.integers(1, v), label="top_k")
        top_p = data.draw(st.none() | st.floats(0.0, 1.0, exclude_min=True), label="top_p")
        seed = data.draw(seeds, label="seed")
        got = target.sample(z, generator(seed, target.device), 0.0, top_k=top_k, top_p=top_p)
        check(tuple(got.shape) == (len(rows),), f"sample at T=0 returned shape {tuple(got.shape)}, "
                                                f"expected ({len(rows)},)")
        for r, row in enumerate(rows):
            c, want = int(got[r]), first_argmax(row)
            check(0 <= c < v, f"row {r}: greedy chose token {c}, outside [0, {v})")
            check(row[c] == max(row), f"row {r}: greedy chose token {c} with logit {row[c]}, "
                                      f"below the maximum {max(row)} (logits {row})")
            check(c == want, f"row {r}: greedy chose token {c} among tied maxima "
                             f"{[i for i, x in enumerate(row) if x == max(row)]}; the rule is the lowest ID, {want}")
        if "filtered_probabilities" in caps:
            probs = target.filtered_probabilities(z, 0.0, top_k=top_k, top_p=top_p)
            want_t = torch.tensor([first_argmax(row) for row in rows], device=probs.device)
            one_hot = torch.nn.functional.one_hot(want_t, v).to(probs.dtype)
            assert_equal(probs, one_hot, "filtered_probabilities at T=0 vs one-hot on the greedy token")
    if "generate" in caps:
        tol = CLASSES[target.tolerance]
        n_prompt = data.draw(st.integers(1, 6), label="prompt_len")
        n_new = data.draw(st.integers(1, 4), label="new_tokens")
        n_prompt = max(1, min(n_prompt, target.max_positions - n_new))
        ids = data.draw(st.lists(st.integers(0, target.vocab_size - 1), min_size=n_prompt, max_size=n_prompt),
                        label="prompt")
        prompt = torch.tensor([ids], dtype=torch.long, device=target.device)
        out = target.generate(prompt, n_new)
        check(tuple(out.shape) == (1, n_prompt + n_new),
              f"generate({n_prompt} tokens, {n_new} new) returned shape {tuple(out.shape)}")
        for j in range(n_new):
            z = target.logits(out[:, :n_prompt + j])[0, -1]
            check_greedy_step(z, int(out[0, n_prompt + j]), tol, f"generate step {j}")


# ======================================================================================================
@claim("DEC-2", "Sampling at temperature T draws token i with probability softmax(z / T)[i].",
       source="embedding-to-choice §14; inference-journey §12", needs=("sample",), kind="statistical",
       max_examples=STAT_EXAMPLES,
       tolerance=f"statistical: {DRAWS} seeded draws per example; chi-square over the tokens expected >= 5 "
                 "times with the rarer ones pooled into one cell (or, if even the pool is expected < 5 times, "
                 f"an exact binomial test on the pool), each test at alpha={ALPHA:.3g} "
                 f"(Bonferroni over {TESTS_PER_EXAMPLE} tests x {STAT_EXAMPLES} examples: a correct sampler "
                 f"fails with probability <= {FAMILY_ALPHA:g} per run; the seed is drawn, so each verdict "
                 "is reproducible)",
       precise="'randomly pick from the distribution, biased by those probabilities' becomes a goodness-of-fit "
               "test of the target's sampler against softmax(z / T) computed independently in float64, at a "
               "stated false-alarm rate; temperatures are drawn away from 1 (in [0.25, 0.8] or [1.25, 4]) and "
               "logits are never all equal, so a sampler that ignores T cannot pass by accident.")
def dec_2(target: Target, data: st.DataObject) -> None:
    """Observed frequencies of DRAWS seeded draws fit softmax(z / T) (see the module docstring for alpha).

    False-alarm rate: <= 1e-4 per run of this claim on a correct sampler (4 examples,
    2 tests each, alpha 1.25e-5 per test); under derandomized profiles the drawn seeds
    are fixed, so a run's verdict never changes between runs.
    """
    row = spread(data.draw(grid_logits(min_vocab=2, max_vocab=12, lo=-16, hi=16), label="logits")[0])
    temperature = data.draw(temperatures_away_from_one, label="temperature")
    seed = data.draw(seeds, label="seed")
    counts = draw_counts(target, as_logits(target, [row])[0], seed, temperature)
    check_fit(counts, probs64(row, temperature), f"sample(T={temperature:.4g}) of logits {row}")


# ======================================================================================================
def _check_filtered(target: Target, row: list[float], temperature: float, candidates: list[list[int]],
                    what: str, *, top_k: int | None = None, top_p: float | None = None) -> list[int]:
    """The target's filtered distribution equals softmax(z / T) restricted to one acceptable candidate set
    and renormalised: exact zeros outside it, proportional inside, summing to 1. Returns the set matched."""
    z = as_logits(target, [row])
    got = target.filtered_probabilities(z, temperature, top_k=top_k, top_p=top_p)
    check(tuple(got.shape) == (1, len(row)), f"{what}: filtered_probabilities shape {tuple(got.shape)}")
    tol = for_dtype(got.dtype)
    q = probs64(row, temperature)
    expects = [torch.tensor([renormalised(q, keep)], dtype=torch.float64) for keep in candidates]
    ratios = [error_ratio(got, e, tol.atol, tol.rtol) for e in expects]
    best = min(range(len(candidates)), key=lambda i: ratios[i])
    keep = candidates[best]
    outside = [i for i in range(len(row)) if i not in keep]
    if outside:
        leaked = got[0, outside].detach().cpu()
        assert_equal(leaked, torch.zeros_like(leaked), f"{what}: probability of tokens {outside} outside the "
                                                       f"candidate set {sorted(keep)} (logits {row})")
    assert_close(got, expects[best].to(got.device), tol, f"{what}: filtered probabilities vs softmax(z/T) "
                                                         f"restricted to {sorted(keep)}, renormalised")
    total = float(got.double().sum())
    check(abs(total - 1.0) <= tol.atol * len(row), f"{what}: filtered probabilities sum to {total!r}, not 1")
    return keep


def _check_draws(target: Target, row: list[float], temperature: float, candidates: list[list[int]], seed: int,
                 what: str, *, top_k: int | None = None, top_p: float | None = None) -> None:
    """DRAWS seeded draws fall in an acceptable candidate set and fit its renormalised probabilities."""
    counts = draw_counts(target, as_logits(target, [row])[0], seed, temperature, top_k=top_k, top_p=top_p)
    drawn = {i for i, c in enumerate(counts) if c > 0}
    fitting = [keep for keep in candidates if drawn <= set(keep)]
    widest = set().union(*candidates)
    check(bool(fitting), f"{what}: drew tokens {sorted(drawn - widest)} outside the "
                         f"candidate set {sorted(candidates[0])} (counts {counts})")
    q = probs64(row, temperature)
    results = [gof_pvalue(counts, renormalised(q, keep)) for keep in fitting]
    pv, how = max(results)
    check(pv >= ALPHA, f"{what}: goodness of fit inside the candidate set rejected at alpha={ALPHA:.3g} "
                       f"(p={pv:.3g}); {how}")


@claim("DEC-3", "Top-k: only the k highest-ranked tokens can be drawn, with probabilities renormalised in "
                "proportion.",
       source="inference-journey §12", needs=("sample",), kind="statistical", max_examples=STAT_EXAMPLES,
       tolerance="filtered_probabilities vs an independent float64 computation: the class of its dtype "
                 "(float32: atol = rtol = 1e-4 covers float32 softmax rounding), and exact zeros outside the "
                 f"top k; draws: no draw outside the top k (exact), goodness of fit inside at alpha={ALPHA:.3g} "
                 f"per test (Bonferroni: <= {FAMILY_ALPHA:g} false alarms per run)",
       precise="'the k most probable' is ambiguous under ties; made precise as: exactly min(k, V) candidates, "
               "never more; no non-candidate is more probable than a candidate; among equally probable tokens "
               "at the k-th place the lower IDs are the candidates (so top-1 is the greedy choice of DEC-1); "
               "the candidates keep softmax(z / T) in proportion, summing to 1. Checked on "
               "filtered_probabilities (where exposed) for 6 cases per example including an all-tied row, and "
               "statistically on sample.")
def dec_3(target: Target, data: st.DataObject) -> None:
    """Top-k keeps exactly the k top-ranked IDs (ties at the k-th place to the lower ID) and renormalises.

    Exact part (if filtered_probabilities is exposed): 5 drawn (logits, T, k) cases plus an
    all-equal row, compared with softmax(z/T) restricted to ranked(z)[:k] and renormalised.
    Statistical part: DRAWS draws of sample(..., top_k=k) land only in the top k and fit the
    renormalised probabilities (alpha as in the module docstring).
    """
    if "filtered_probabilities" in target.capabilities:
        for case in range(5):
            row = data.draw(grid_logits(min_vocab=1, max_vocab=24, lo=-12, hi=12, step=0.5), label=f"logits{case}")[0]
            temperature = data.draw(st.floats(0.05, 20.0), label=f"temperature{case}")
            k = data.draw(st.integers(1, len(row)), label=f"k{case}")
            keep = _check_filtered(target, row, temperature, [top_k_set(row, k)], f"top_k={k}, T={temperature:.4g}",
                                   top_k=k)
            check(len(keep) == min(k, len(row)), f"top_k={k}: {len(keep)} candidates")
        v = data.draw(st.integers(2, 16), label="tied_vocab")
        k = data.draw(st.integers(1, v), label="tied_k")
        _check_filtered(target, [0.0] * v, 1.0, [list(range(k))], f"top_k={k} on {v} equal logits", top_k=k)
    row = spread(data.draw(grid_logits(min_vocab=3, max_vocab=12, lo=-8, hi=8), label="logits")[0])
    k = data.draw(st.integers(1, len(row) - 1), label="k")
    temperature = data.draw(temperatures_away_from_one, label="temperature")
    seed = data.draw(seeds, label="seed")
    _check_draws(target, row, temperature, [top_k_set(row, k)], seed, f"sample(top_k={k}, T={temperature:.4g})",
                 top_k=k)


@claim("DEC-4", "Top-p: the candidates are the shortest top-ranked set whose probability reaches p; the top "
                "token is always one; their probabilities are renormalised.",
       source="inference-journey §12", needs=("sample",), kind="statistical", max_examples=STAT_EXAMPLES,
       tolerance="filtered_probabilities vs an independent float64 computation: the class of its dtype, exact "
                 "zeros outside the nucleus; where a cumulative mass lies within 256 ulps of p (3e-5 in "
                 "float32) the boundary may fall one place either way and both sets are accepted; the "
                 "all-equal dyadic cases are exact (slack 0); draws: none outside the nucleus, goodness of fit "
                 f"inside at alpha={ALPHA:.3g} per test (Bonferroni: <= {FAMILY_ALPHA:g} false alarms per run)",
       precise="ranking is by probability, highest first, equal probabilities by lower ID (a stable sort); a "
               "token is a candidate iff the mass ranked strictly above it is below p, i.e. the set stops at the "
               "first token whose running mass reaches p (>= p, not > p); p = 1 keeps every token; the nucleus "
               "is taken from the tempered distribution softmax(z / T) (temperature first, as in HF and vLLM; "
               "llama.cpp's default chain applies temperature last and would deviate), then renormalised. "
               "Checked on filtered_probabilities (where exposed) for 6 cases per example, one of them all-equal "
               "logits over 2, 4 or 8 tokens with p = j / V exactly (keeps exactly IDs 0..j-1), and "
               "statistically on sample.")
def dec_4(target: Target, data: st.DataObject) -> None:
    """Top-p keeps the shortest top-ranked prefix reaching p (ties ranked by lower ID) and renormalises.

    Exact part (if filtered_probabilities is exposed): 5 drawn (logits, T, p) cases compared
    with the independent nucleus (top_p_sets), plus an exactly representable boundary case:
    V = 2^a equal logits and p = j / V, where exactly IDs 0..j-1 must be kept. Statistical
    part: DRAWS draws of sample(..., top_p=p) land only in the nucleus and fit it.
    """
    slack = boundary_slack(work_dtype(target))
    p_values = st.one_of(st.floats(0.0, 1.0, exclude_min=True), st.sampled_from([1.0, 0.5, 0.9, 0.95]))
    if "filtered_probabilities" in target.capabilities:
        for case in range(5):
            row = data.draw(grid_logits(min_vocab=1, max_vocab=24, lo=-12, hi=12, step=0.5), label=f"logits{case}")[0]
            temperature = data.draw(st.floats(0.05, 20.0), label=f"temperature{case}")
            p = data.draw(p_values, label=f"p{case}")
            _check_filtered(target, row, temperature, top_p_sets(row, temperature, p, slack),
                            f"top_p={p!r}, T={temperature:.4g}", top_p=p)
        v = 2 ** data.draw(st.integers(1, 3), label="log2_tied_vocab")
        j = data.draw(st.integers(1, v), label="tied_j")
        p = j / v
        keep = _check_filtered(target, [0.0] * v, 1.0, [list(range(j))], f"top_p={p} on {v} equal logits", top_p=p)
        check(keep == list(range(j)), f"top_p={p} on {v} equal logits kept {keep}")
    row = spread(data.draw(grid_logits(min_vocab=3, max_vocab=12, lo=-8, hi=8), label="logits")[0])
    p = data.draw(st.floats(0.05, 0.95), label="p")
    temperature = data.draw(temperatures_away_from_one, label="temperature")
    seed = data.draw(seeds, label="seed")
    _check_draws(target, row, temperature, top_p_sets(row, temperature, p, slack), seed,
                 f"sample(top_p={p:.4g}, T={temperature:.4g})", top_p=p)


# ======================================================================================================
def _global_rng_states(device: torch.device) -> list[Tensor]:
    states = [torch.get_rng_state()]
    if device.type == "cuda":
        states.append(torch.cuda.get_rng_state(device))
    return states


@claim("DEC-5", "The same seed gives the same draws, the global RNG is neither used nor consulted, and sampling "
                "tends to greedy as T -> 0.",
       source="inference-journey §12", needs=("sample",), kind="exact",
       tolerance="exact: draws are token IDs, compared for equality; the T -> 0 part is certain up to a "
                 "probability below 1e-18 per run (stated in the docstring), so it is treated as exact",
       precise="'the same seed gives the same draws' becomes: two fresh torch.Generators with the same seed give "
               "identical sequences of 6 batched draws (with the drawn top-k/top-p); sampling leaves torch's "
               "global RNG state (CPU, and CUDA on a CUDA target) unchanged; and the draws do not change when the "
               "global seed does. 'Greedy is the T -> 0 limit' becomes: for logits whose maximum is unique with "
               "gap g to the runner-up, at T = g / 50 every non-argmax token has probability <= e^-50, so all "
               "of 64 seeded draws (probability of any exception <= 64 (V - 1) e^-50 < 1e-18) equal the argmax, "
               "which is also sample(T = 0).")
def dec_5(target: Target, data: st.DataObject) -> None:
    """Reproducible seeded draws independent of the global RNG; greedy as the T -> 0 limit."""
    rows = data.draw(grid_logits(min_vocab=2, max_vocab=20, lo=-8, hi=8, batch=4), label="logits")
    z = as_logits(target, [spread(r) for r in rows])
    v = z.shape[-1]
    temperature = data.draw(st.floats(0.5, 2.0), label="temperature")
    top_k = data.draw(st.none() | st.integers(2, v), label="top_k")
    top_p = data.draw(st.none() | st.floats(0.5, 1.0), label="top_p")
    seed = data.draw(seeds, label="seed")

    def draws() -> Tensor:
        g = generator(seed, target.device)
        return torch.stack([target.sample(z, g, temperature, top_k=top_k, top_p=top_p) for _ in range(6)]).cpu()

    saved = _global_rng_states(target.device)
    first = draws()
    after = _global_rng_states(target.device)
    for where, a, b in zip(("CPU", "CUDA"), saved, after, strict=False):
        check(torch.equal(a, b), f"sampling changed torch's global {where} RNG state: the global generator was used")
    assert_equal(draws(), first, f"draws of two fresh generators seeded {seed}")
    try:
        torch.manual_seed(seed + 1)
        other_global = draws()
    finally:
        torch.set_rng_state(saved[0])
        if len(saved) > 1:
            torch.cuda.set_rng_state(saved[1], target.device)
    assert_equal(other_global, first, "draws after changing the global seed vs before (same generator seed)")

    # T -> 0: unique maximum with gap g, T = g / 50
    row = unique_max(data.draw(grid_logits(min_vocab=2, max_vocab=40, lo=-40, hi=40), label="limit_logits")[0])
    order = ranked(row)
    gap = row[order[0]] - row[order[1]]
    cold = gap / 50.0
    many = as_logits(target, [row] * 64)
    got = target.sample(many, generator(seed, target.device), cold)
    want = torch.full((64,), order[0], dtype=torch.long)
    assert_equal(got.cpu().long(), want, f"64 draws at T = gap/50 = {cold:.3g} vs the argmax {order[0]} of {row}")
    greedy = target.sample(many[:1], generator(seed, target.device), 0.0)
    assert_equal(greedy.cpu().long(), want[:1], f"sample at T=0 vs the argmax {order[0]} of {row}")
