"""DEC: choosing the token (claims DEC-1 .. DEC-5).

The sampler claims feed the target's own ``sample`` / ``filtered_probabilities`` with
logits drawn on a grid of quarter-integers: every grid value is exact in float32 and
float64, distinct values stay distinct after division by any drawn temperature, and
equal values (ties) are common, so every example exercises what the sources leave open.

Ties. The sources state no tie rule: which of several maximal logits greedy takes, whether
top-k keeps exactly k tokens or every token tied with the k-th, and which members of a tie
at the top-p boundary the nucleus keeps are the implementation's choice. The claims accept
every consistent choice (a filter's acceptable outcomes are ``Keep`` values: some tokens
for certain and any m tokens of one tie group) and report the choice the target made with
``spec.target.note``, as information, never as a failure, and only where a tie occurred.

Expected distributions are computed independently, in float64, by spec.oracles (with the
statistics and the acceptable outcomes below): softmax by hand (shift by the maximum,
exponentiate, divide by the sum), the ranking by Python's ``sorted`` on the logits and tie
groups as sets of equal logits — never by the target's functions. The logit grid is drawn by
``spec.strategies.grid_logits``.

Statistical claims (DEC-2, DEC-3, DEC-4) draw N = 20,000 tokens per example from a
``torch.Generator`` seeded by a drawn seed, so each example's verdict is a fixed
function of its drawn data (reproducible, and Hypothesis never sees a flaky verdict).
Each claim runs at most 4 examples with at most 2 tests each (a chi-square over the
cells expected >= 5 times, the rarer cells merged into one pooled cell, and a binomial
test on that pool instead when even the pool is expected < 5 times); each
test runs at alpha = 1e-4 / 8 = 1.25e-5, so by Bonferroni a correct sampler fails a
claim with probability at most 1e-4 per run of the claim. Where several outcomes are
acceptable (DEC-3, DEC-4: a tie at the boundary, or a top-p boundary within float slack),
the tokens of a tie group form one cell (they have equal probability, so their pooled
probability is m times one token's whichever m are kept), the draws may touch at most m
distinct tokens of the group, and the example passes if any acceptable outcome fits. The
outcome the sampler implements is among those tried, so its own two tests bound the
false-alarm rate as above: taking the best of several fits can only lower it.
"""

from __future__ import annotations

import math

import torch
from hypothesis import strategies as st
from torch import Tensor

from spec.catalog import claim
from spec.oracles import (
    ALPHA,
    DRAWS,
    FAMILY_ALPHA,
    STAT_EXAMPLES,
    TESTS_PER_EXAMPLE,
    Keep,
    as_logits,
    boundary_slack,
    check_fit,
    check_greedy_step,
    draw_counts,
    gof_pvalue,
    members_label,
    probs64,
    ranked,
    renormalised,
    top_k_options,
    top_p_options,
    work_dtype,
)
from spec.strategies import (
    generator,
    grid_logits,
    real_logits_row,
    sampling_temperatures,
    seeds,
    spread,
    temperatures_away_from_one,
    top_ks,
    top_ps,
    unique_max,
)
from spec.target import NotExposed, Target, note
from spec.tolerance import CLASSES, assert_close, assert_equal, check, error_ratio, for_dtype


# ======================================================================================================
@claim("DEC-1", "Greedy decoding chooses a token with the highest logit.",
       source="embedding-to-choice §14; inference-journey §12", needs=(), kind="exact",
       tolerance="exact for the sampler at T = 0 (a choice among given numbers); for generate, the chosen "
                 "token's logit in a fresh full forward pass may trail the maximum by at most twice the "
                 "target's tolerance class, because generate may compute its step logits through a KV cache",
       precise="'greedy picks the highest-probability token' becomes: (a) sample(z, g, T=0) returns, per row, "
               "a token whose logit is maximal, with or without top-k/top-p given; the target's "
               "filtered_probabilities at T = 0 (if exposed) is one-hot on a token whose logit is maximal; "
               "(b) each token of the target's greedy generate attains the maximum of a fresh full forward pass "
               "on its prefix (up to the stated band). The sources state no tie rule: among several maximal "
               "logits any may be chosen (torch.argmax takes the first; a torch.topk-based step may take "
               "another), and the sampler and filtered_probabilities need not choose the same one; which one the "
               "sampler took is reported as a note (greedy tie: lowest ID, highest ID or another tied maximum), "
               "never a failure. Runs (a) where 'sample' is exposed and (b) where 'generate' is; a target with "
               "neither is reported as not exposing 'sample'.")
def dec_1(target: Target, data: st.DataObject) -> None:
    """Greedy is an argmax, in the sampler at T = 0 and in generate; the choice among tied maxima is free.

    Sampler: integer logits in [-3, 3] (so ties are frequent), a batch of rows; the choice
    must have the row's maximal logit; optional top_k / top_p must not change that (both
    always keep a maximal token). Where the maximum is tied, which tied token was chosen is
    noted ("greedy tie"). Generate: every appended token's logit in a fresh full forward pass
    on its prefix is within the tolerance band of the maximum (exact ties between model
    logits cannot be told from rounding there).
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
            c, top = int(got[r]), max(row)
            check(0 <= c < v, f"row {r}: greedy chose token {c}, outside [0, {v})")
            check(row[c] == top, f"row {r}: greedy chose token {c} with logit {row[c]}, "
                                 f"below the maximum {top} (logits {row})")
            tied = [i for i, x in enumerate(row) if x == top]
            if len(tied) > 1:
                note("greedy tie", "lowest ID" if c == tied[0] else "highest ID" if c == tied[-1]
                     else "another tied maximum")
        if "filtered_probabilities" in caps:
            probs = target.filtered_probabilities(z, 0.0, top_k=top_k, top_p=top_p)
            check(tuple(probs.shape) == (len(rows), v), f"filtered_probabilities at T=0 returned shape "
                                                        f"{tuple(probs.shape)}, expected ({len(rows)}, {v})")
            chosen = [int(i) for i in probs.detach().double().argmax(dim=-1).cpu()]
            for r, row in enumerate(rows):
                check(row[chosen[r]] == max(row), f"row {r}: filtered_probabilities at T=0 puts its mass on "
                                                  f"token {chosen[r]} with logit {row[chosen[r]]}, below the "
                                                  f"maximum {max(row)} (logits {row})")
            one_hot = torch.nn.functional.one_hot(torch.tensor(chosen, device=probs.device), v).to(probs.dtype)
            assert_equal(probs, one_hot, "filtered_probabilities at T=0 vs one-hot on a maximal logit")
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
       max_examples=STAT_EXAMPLES, alpha=FAMILY_ALPHA,
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
    row, shown = _sampled_row(target, data, min_vocab=2, max_vocab=12, lo=-16, hi=16)
    temperature = data.draw(sampling_temperatures(temperatures_away_from_one), label="temperature")
    seed = data.draw(seeds, label="seed")
    counts = draw_counts(target, as_logits(target, [row])[0], seed, temperature)
    check_fit(counts, probs64(row, temperature), f"sample(T={temperature:.4g}) of {shown}")


def _sampled_row(target: Target, data: st.DataObject, *, min_vocab: int, max_vocab: int, lo: int,
                 hi: int) -> tuple[list[float], str]:
    """The logits a statistical part samples from, and how a failure names them: a drawn grid row (never all
    equal), or in a realistic example the target's own top logits after a real prompt (spec.strategies)."""
    real = real_logits_row(target)
    if real is not None:
        return real, f"the target's {len(real)} largest next-token logits after a real prompt"
    row = spread(data.draw(grid_logits(min_vocab=min_vocab, max_vocab=max_vocab, lo=lo, hi=hi), label="logits")[0])
    return row, f"logits {row}"


# ======================================================================================================
def _check_filtered(target: Target, row: list[float], temperature: float, options: list[Keep], what: str,
                    topic: str, *, top_k: int | None = None, top_p: float | None = None) -> None:
    """The target's filtered distribution equals softmax(z / T) restricted to one acceptable outcome and
    renormalised: exact zeros outside it, proportional inside, summing to 1.

    An outcome keeps any m tokens of its tie group: they are taken to be the m tied tokens the
    target gave the most probability (they all have the same expected value, so any other m
    would only fit worse). Where a tie was split, the choice is noted under ``topic`` if the
    target's output shows it (exactly m tied tokens with nonzero probability).
    """
    z = as_logits(target, [row])
    got = target.filtered_probabilities(z, temperature, top_k=top_k, top_p=top_p)
    check(tuple(got.shape) == (1, len(row)), f"{what}: filtered_probabilities shape {tuple(got.shape)}")
    tol = for_dtype(got.dtype)
    q = probs64(row, temperature)
    g = [float(x) for x in got[0].detach().double().cpu()]
    picked = [sorted(sorted(o.tied, key=lambda i: (-g[i], i))[:o.m]) for o in options]
    keeps = [[*o.sure, *members] for o, members in zip(options, picked, strict=True)]
    expects = [torch.tensor([renormalised(q, keep)], dtype=torch.float64) for keep in keeps]
    ratios = [error_ratio(got, e, tol.atol, tol.rtol) for e in expects]
    leaks = [any(g[i] != 0.0 for i in range(len(row)) if i not in keep) for keep in keeps]
    best = min(range(len(options)), key=lambda i: (leaks[i], ratios[i]))  # exact zeros outside first, then closest
    keep, option = keeps[best], options[best]
    outside = [i for i in range(len(row)) if i not in keep]
    if outside:
        leaked = got[0, outside].detach().cpu()
        assert_equal(leaked, torch.zeros_like(leaked), f"{what}: probability of tokens {outside} outside the "
                                                       f"candidate set {sorted(keep)} (logits {row}; acceptable: "
                                                       f"{'; or '.join(o.describe() for o in options)})")
    assert_close(got, expects[best].to(got.device), tol, f"{what}: filtered probabilities vs softmax(z/T) "
                                                         f"restricted to {sorted(keep)}, renormalised")
    total = float(got.double().sum())
    check(abs(total - 1.0) <= tol.atol * len(row), f"{what}: filtered probabilities sum to {total!r}, not 1")
    if option.choice and sum(g[i] > 0 for i in option.tied) == option.m:
        members = "" if option.m == len(option.tied) else f" ({members_label(option.tied, picked[best])})"
        note(topic, option.choice + members)


def _check_draws(target: Target, row: list[float], temperature: float, options: list[Keep], seed: int,
                 what: str, topic: str, *, top_k: int | None = None, top_p: float | None = None) -> None:
    """DRAWS seeded draws fit one acceptable outcome: none outside it, at most m distinct tokens of its tie
    group, and the frequencies fit its renormalised probabilities with the tie group pooled into one cell.

    The tie group's tokens have equal probability, so the pooled cell's probability is m times one
    token's whichever m are kept: no subsets are enumerated. The example passes if any outcome fits
    (see the module docstring for why that keeps the false-alarm bound). The choice is noted under
    ``topic`` when the draws single it out: every outcome that fits makes the same choice. The DRAWS rows
    of the one batched call are copies of one row, so they are taken to share one candidate set: a
    sampler keeping different tied tokens in different rows would draw more than m of them and fail.
    """
    counts = draw_counts(target, as_logits(target, [row])[0], seed, temperature, top_k=top_k, top_p=top_p)
    q = probs64(row, temperature)
    drawn = {i for i, c in enumerate(counts) if c > 0}
    fits: list[tuple[float, str, Keep, set[int]]] = []
    for o in options:
        tied_drawn = drawn & set(o.tied)
        if not drawn <= set(o.sure) | set(o.tied) or len(tied_drawn) > o.m:
            continue
        q_tied = q[o.tied[0]] if o.tied else 0.0
        mass = math.fsum(q[i] for i in o.sure) + o.m * q_tied
        cells, probs, labels = [counts[i] for i in o.sure], [q[i] / mass for i in o.sure], [str(i) for i in o.sure]
        if o.m:
            cells.append(sum(counts[i] for i in o.tied))
            probs.append(o.m * q_tied / mass)
            labels.append(f"{o.m} of tie{sorted(o.tied)}")
        pv, how = gof_pvalue(cells, probs, labels)
        fits.append((pv, how, o, tied_drawn))
    check(bool(fits), f"{what}: the drawn tokens {sorted(drawn)} fit no acceptable candidate set "
                      f"({'; or '.join(o.describe() for o in options)}); counts {counts}")
    pv, how, option, tied_drawn = max(fits, key=lambda f: f[0])
    check(pv >= ALPHA, f"{what}: goodness of fit inside the candidate set rejected at alpha={ALPHA:.3g} "
                       f"(p={pv:.3g}); {how}")
    choices = {f[2].choice for f in fits if f[0] >= ALPHA}
    if len(choices) == 1 and option.choice:
        split = option.m < len(option.tied) and len(tied_drawn) == option.m
        note(topic, option.choice + (f" ({members_label(option.tied, sorted(tied_drawn))})" if split else ""))


TOP_K_TIE, TOP_P_TIE = "top-k tie at the k-th place", "top-p tie at the boundary"


@claim("DEC-3", "Top-k: only the k most probable tokens can be drawn, with probabilities renormalised in proportion.",
       source="inference-journey §12", needs=("sample",), kind="statistical", max_examples=STAT_EXAMPLES,
       alpha=FAMILY_ALPHA,
       tolerance="filtered_probabilities vs an independent float64 computation: the class of its dtype "
                 "(float32: atol = rtol = 1e-4 covers float32 softmax rounding), and exact zeros outside the "
                 "candidates; draws: no draw outside the candidates and no more distinct tokens of a tie group "
                 "than the outcome keeps (exact), goodness of fit inside at "
                 f"alpha={ALPHA:.3g} per test, tie groups pooled into one cell, against the best-fitting acceptable "
                 f"outcome (Bonferroni: <= {FAMILY_ALPHA:g} false alarms per run)",
       precise="'the k most probable' is ambiguous under ties, and the sources state no tie rule; made precise as: "
               "every token more probable than the k-th is a candidate, no token less probable than the k-th is; "
               "with no tie at the k-th place, exactly min(k, V) candidates; where tokens tie at the k-th place, "
               "the target may keep exactly min(k, V) tokens (any of the tied ones, as a sort or torch.topk picks "
               "them) or every token tied with the k-th (as transformers' TopKLogitsWarper does), and its choice is "
               "reported as a note (top-k tie at the k-th place), never a failure; the candidates keep "
               "softmax(z / T) in proportion, summing to 1. Checked on filtered_probabilities (where exposed) for "
               "6 cases per example including an all-tied row, and statistically on sample (the rows of one "
               "batched call are one distribution, so they keep the same tied tokens).")
def dec_3(target: Target, data: st.DataObject) -> None:
    """Top-k keeps the k top-ranked tokens (at a tie at the k-th place: exactly k, or all tied) and renormalises.

    Exact part (if filtered_probabilities is exposed): 5 drawn (logits, T, k) cases plus an
    all-equal row, compared with softmax(z/T) restricted to an acceptable outcome
    (top_k_options) and renormalised. Statistical part: DRAWS draws of sample(..., top_k=k)
    land only in an acceptable outcome and fit its renormalised probabilities (alpha as in
    the module docstring).
    """
    if "filtered_probabilities" in target.capabilities:
        for case in range(5):
            row = data.draw(grid_logits(min_vocab=1, max_vocab=24, lo=-12, hi=12, step=0.5), label=f"logits{case}")[0]
            temperature = data.draw(st.floats(0.05, 20.0), label=f"temperature{case}")
            k = data.draw(st.integers(1, len(row)), label=f"k{case}")
            _check_filtered(target, row, temperature, top_k_options(row, k), f"top_k={k}, T={temperature:.4g}",
                            TOP_K_TIE, top_k=k)
        v = data.draw(st.integers(2, 16), label="tied_vocab")
        k = data.draw(st.integers(1, v), label="tied_k")
        _check_filtered(target, [0.0] * v, 1.0, top_k_options([0.0] * v, k), f"top_k={k} on {v} equal logits",
                        TOP_K_TIE, top_k=k)
    row, _ = _sampled_row(target, data, min_vocab=3, max_vocab=12, lo=-8, hi=8)
    k = data.draw(top_ks(1, len(row) - 1), label="k")
    temperature = data.draw(sampling_temperatures(temperatures_away_from_one), label="temperature")
    seed = data.draw(seeds, label="seed")
    _check_draws(target, row, temperature, top_k_options(row, k), seed, f"sample(top_k={k}, T={temperature:.4g})",
                 TOP_K_TIE, top_k=k)


@claim("DEC-4", "Top-p: the candidates are the shortest top-ranked set whose probability reaches p (a tie at its "
                "boundary may be kept whole); the top token is always one; their probabilities are renormalised.",
       source="inference-journey §12", needs=("sample",), kind="statistical", max_examples=STAT_EXAMPLES,
       alpha=FAMILY_ALPHA,
       tolerance="filtered_probabilities vs an independent float64 computation: the class of its dtype, exact "
                 "zeros outside the nucleus; where a cumulative mass lies within 256 ulps of p (3e-5 in "
                 "float32) the boundary may fall one place either way and both sets are accepted; the "
                 "all-equal dyadic cases are exact (slack 0); draws: none outside the nucleus and no more "
                 "distinct tokens of a tie group than it keeps, goodness of fit inside at "
                 f"alpha={ALPHA:.3g} per test, tie groups pooled into one cell, against the best-fitting acceptable "
                 f"nucleus (Bonferroni: <= {FAMILY_ALPHA:g} false alarms per run)",
       precise="ranking is by probability, highest first; the sources state no order among equal probabilities. "
               "The nucleus has the size of the shortest top-ranked prefix whose running mass reaches p (the first "
               "token whose running mass is >= p, not > p, ends it): every token more probable than its last one, "
               "and as many of the tokens tied with its last one as the prefix holds, any of them (a stable "
               "descending sort keeps the lower IDs, transformers' TopPLogitsWarper, sorting ascending, mostly the "
               "higher); "
               "or, for an implementation that treats equal probabilities as one rank, that whole boundary tie "
               "group. The choice is reported as a note (top-p tie at the boundary), never a failure. No token is "
               "kept whose removal would still leave mass >= p (beyond the float slack) other than such tied ones; "
               "the top token is always kept; p = 1 keeps every token; the nucleus is taken from the tempered "
               "distribution softmax(z / T) (temperature first, as in HF and vLLM; llama.cpp's default chain "
               "applies temperature last and would deviate), then renormalised. Checked on filtered_probabilities "
               "(where exposed) for 6 cases per example, one of them all-equal logits over 2, 4 or 8 tokens with "
               "p = j / V exactly (keeps exactly j of them, or all V as one rank), and statistically on sample.")
def dec_4(target: Target, data: st.DataObject) -> None:
    """Top-p keeps the shortest top-ranked set reaching p (any members of a boundary tie, or all) and renormalises.

    Exact part (if filtered_probabilities is exposed): 5 drawn (logits, T, p) cases compared
    with the independent nuclei (top_p_options), plus an exactly representable boundary case:
    V = 2^a equal logits and p = j / V, where exactly j of them (or all V) must be kept.
    Statistical part: DRAWS draws of sample(..., top_p=p) land only in an acceptable nucleus
    and fit it.
    """
    slack = boundary_slack(work_dtype(target))
    p_values = st.one_of(st.floats(0.0, 1.0, exclude_min=True), st.sampled_from([1.0, 0.5, 0.9, 0.95]))
    if "filtered_probabilities" in target.capabilities:
        for case in range(5):
            row = data.draw(grid_logits(min_vocab=1, max_vocab=24, lo=-12, hi=12, step=0.5), label=f"logits{case}")[0]
            temperature = data.draw(st.floats(0.05, 20.0), label=f"temperature{case}")
            p = data.draw(p_values, label=f"p{case}")
            _check_filtered(target, row, temperature, top_p_options(row, temperature, p, slack),
                            f"top_p={p!r}, T={temperature:.4g}", TOP_P_TIE, top_p=p)
        v = 2 ** data.draw(st.integers(1, 3), label="log2_tied_vocab")
        j = data.draw(st.integers(1, v), label="tied_j")
        p = j / v
        _check_filtered(target, [0.0] * v, 1.0, top_p_options([0.0] * v, 1.0, p, 0.0),
                        f"top_p={p} on {v} equal logits", TOP_P_TIE, top_p=p)
    row, _ = _sampled_row(target, data, min_vocab=3, max_vocab=12, lo=-8, hi=8)
    p = data.draw(top_ps(0.05, 0.95), label="p")
    temperature = data.draw(sampling_temperatures(temperatures_away_from_one), label="temperature")
    seed = data.draw(seeds, label="seed")
    _check_draws(target, row, temperature, top_p_options(row, temperature, p, slack), seed,
                 f"sample(top_p={p:.4g}, T={temperature:.4g})", TOP_P_TIE, top_p=p)


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
