"""Sampling: softmax with temperature (SOFT-1, -4, -7), top-k (DEC-3), top-p (DEC-4), draws (DEC-2, DEC-5), errors."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from scipy.stats import chisquare

from reference import filtered_probabilities, greedy, sample, softmax, top_k_filter, top_p_filter

PROPERTY = settings(max_examples=60, deadline=None, derandomize=True)
NAN, INF = float("nan"), float("inf")
# Probabilities are compared in float64 against math.exp-based values: both round at
# ~1e-16 relative, so 1e-12 is loose; float32 softmax rounds at ~6e-8 relative per
# entry, so 1e-6 absolute (probabilities are <= 1) has a wide margin.
TOL = {torch.float64: {"atol": 1e-12, "rtol": 1e-12}, torch.float32: {"atol": 1e-6, "rtol": 1e-6}}


def softmax_by_hand(z: list[float], t: float = 1.0) -> list[float]:
    finite = [v for v in z if v != -INF]
    top = max(finite)
    e = [0.0 if v == -INF else math.exp((v - top) / t) for v in z]
    return [x / sum(e) for x in e]


def logits(values: list[float] | list[list[float]], dtype: torch.dtype = torch.float64) -> torch.Tensor:
    t = torch.tensor(values, dtype=dtype)
    return t if t.dim() == 2 else t[None]


@st.composite
def logit_rows(draw: st.DrawFn, min_v: int = 1) -> tuple[torch.Tensor, torch.dtype]:
    dtype = draw(st.sampled_from([torch.float32, torch.float64]))
    v = draw(st.integers(min_v, 12))
    rows = draw(st.integers(1, 3))
    values = draw(st.lists(st.lists(st.floats(-20, 20), min_size=v, max_size=v), min_size=rows, max_size=rows))
    return torch.tensor(values, dtype=dtype), dtype


# ------------------------------------------------------------------------------ softmax


@PROPERTY
@given(logit_rows(), st.sampled_from([0.3, 1.0, 2.5]))
def test_softmax_is_a_distribution_equal_to_the_formula(case: tuple[torch.Tensor, torch.dtype], t: float) -> None:
    z, dtype = case
    p = softmax(z, t)
    assert p.dtype == dtype and p.shape == z.shape
    assert bool((p >= 0).all())  # SOFT-1
    torch.testing.assert_close(p.sum(-1), torch.ones(z.shape[0], dtype=dtype), **TOL[dtype])
    expected = torch.tensor([softmax_by_hand(row, t) for row in z.double().tolist()], dtype=dtype)
    torch.testing.assert_close(p, expected, **TOL[dtype])  # SOFT-4: p = softmax(z / T)


def test_softmax_at_zero_temperature_is_one_hot_on_the_first_argmax() -> None:
    z = logits([[1.0, 3.0, 3.0, 0.0], [-5.0, -5.0, -5.0, -9.0], [0.0, 0.0, 0.0, 7.0]])
    assert softmax(z, 0.0).tolist() == [[0, 1, 0, 0], [1, 0, 0, 0], [0, 0, 0, 1]]
    assert softmax(z, 0).dtype == torch.float64
    assert greedy(z).tolist() == [1, 0, 3]  # DEC-1, ties to the lowest ID


def test_softmax_is_numerically_safe() -> None:
    # SOFT-7: |z| up to 1e4 and -inf entries give finite, correct probabilities.
    for dtype in (torch.float32, torch.float64):
        p = softmax(logits([[1e4, 0.0, -1e4], [1e4, 1e4 - 1.0, -INF], [-INF, 2.0, -INF]], dtype))
        assert bool(torch.isfinite(p).all())
        a = 1 / (1 + math.exp(-1.0))
        expected = logits([[1.0, 0.0, 0.0], [a, 1 - a, 0.0], [0.0, 1.0, 0.0]], dtype)
        torch.testing.assert_close(p, expected, **TOL[dtype])
        assert float(p[1, 2]) == 0.0 and float(p[2, 0]) == 0.0  # exactly zero for -inf


def test_softmax_of_half_logits_is_computed_in_float32() -> None:
    z = logits([[2.0, 1.0, 0.0]], torch.bfloat16)
    p = softmax(z)
    assert p.dtype == torch.float32
    torch.testing.assert_close(p, torch.tensor([softmax_by_hand([2.0, 1.0, 0.0])], dtype=torch.float32),
                               **TOL[torch.float32])


# ------------------------------------------------------------------------------- top-k


def test_top_k_breaks_ties_towards_the_lower_id() -> None:
    z = logits([[1.0, 2.0, 2.0, 2.0, 0.0], [5.0, 5.0, 5.0, 5.0, 5.0]])
    out = top_k_filter(z, 2)
    assert out.tolist() == [[-INF, 2.0, 2.0, -INF, -INF], [5.0, 5.0, -INF, -INF, -INF]]
    assert top_k_filter(z, 10).tolist() == z.tolist()  # k > V keeps everything
    assert top_k_filter(z, 1).tolist()[0] == [-INF, 2.0, -INF, -INF, -INF]


@PROPERTY
@given(logit_rows(), st.integers(1, 15))
def test_top_k_keeps_exactly_the_k_best(case: tuple[torch.Tensor, torch.dtype], k: int) -> None:
    z, _ = case
    out = top_k_filter(z, k)
    for row, kept_row in zip(z.tolist(), out.tolist(), strict=True):
        ranked = sorted(range(len(row)), key=lambda i: (-row[i], i))  # value desc, then lower ID
        keep = set(ranked[: min(k, len(row))])
        assert [i for i, v in enumerate(kept_row) if v != -INF] == sorted(keep)
        assert all(kept_row[i] == row[i] for i in keep)  # kept logits are untouched


# ------------------------------------------------------------------------------- top-p


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize(("p", "kept"), [(0.5, 1), (0.6, 2), (0.8, 2), (0.81, 3), (1.0, 3), (0.01, 1)])
def test_top_p_hand_examples(dtype: torch.dtype, p: float, kept: int) -> None:
    # probs [0.5, 0.3, 0.2]: 0.5 reaches 0.5; 0.5 + 0.3 reaches 0.6 and 0.8; 0.81 needs all three.
    z = logits([0.5, 0.3, 0.2], dtype).log()
    out = top_p_filter(z, p)
    assert torch.isfinite(out).sum().item() == kept
    assert torch.isfinite(out[0, :kept]).all()  # always the top-ranked ones
    assert torch.equal(out[0, :kept], z[0, :kept])


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
def test_top_p_keeps_the_top_token_even_when_p_underflows(dtype: torch.dtype) -> None:
    # p = 1e-300 is a valid p > 0 but rounds to 0 in float32: the nucleus is still the top token.
    z = logits([[0.1, 2.0, 1.0], [3.0, 3.0, 0.0]], dtype)
    out = top_p_filter(z, 1e-300)
    assert torch.isfinite(out).tolist() == [[False, True, False], [True, False, False]]
    assert filtered_probabilities(z, top_p=1e-300).tolist() == [[0.0, 1.0, 0.0], [1.0, 0.0, 0.0]]


def test_top_p_ranks_by_probability_not_position() -> None:
    z = logits([0.2, 0.5, 0.3]).log()
    assert torch.isfinite(top_p_filter(z, 0.6)).tolist() == [[False, True, True]]


@PROPERTY
@given(logit_rows(), st.floats(0.01, 1.0))
def test_top_p_keeps_the_smallest_top_ranked_set_reaching_p(case: tuple[torch.Tensor, torch.dtype],
                                                            p: float) -> None:
    z, _ = case
    out = top_p_filter(z, p)
    for row, kept_row in zip(z.double().tolist(), out.tolist(), strict=True):
        probs = softmax_by_hand(row)
        ranked = sorted(range(len(row)), key=lambda i: (-probs[i], i))
        partial = list(itertools.accumulate(probs[i] for i in ranked))  # mass of the top n, n = 1, 2, ...
        # Skip boundary cases where rounding decides whether the set has reached p.
        assume(all(abs(c - p) > 1e-5 for c in partial))
        m = next((n for n, c in enumerate(partial, start=1) if c >= p), len(ranked))
        kept = {i for i, v in enumerate(kept_row) if v != -INF}
        assert ranked[0] in kept  # DEC-4: the top token is always a candidate
        assert len(kept) == m
        # Which of two (near-)tied tokens at the cut is kept may differ by rounding.
        tie_at_cut = m < len(ranked) and abs(probs[ranked[m - 1]] - probs[ranked[m]]) < 1e-6
        assert kept == set(ranked[:m]) or tie_at_cut


# --------------------------------------------------------------------- filtered probs


def test_filtered_probabilities_renormalise_the_kept_tokens() -> None:
    z = logits([0.4, 0.3, 0.2, 0.1]).log()
    p = filtered_probabilities(z, top_k=3)
    torch.testing.assert_close(p, logits([4 / 9, 3 / 9, 2 / 9, 0.0]), **TOL[torch.float64])
    p = filtered_probabilities(z, top_p=0.65)  # 0.4 + 0.3 reaches 0.65
    torch.testing.assert_close(p, logits([4 / 7, 3 / 7, 0.0, 0.0]), **TOL[torch.float64])
    torch.testing.assert_close(filtered_probabilities(z), logits([0.4, 0.3, 0.2, 0.1]), **TOL[torch.float64])


def test_temperature_is_applied_before_top_p() -> None:
    # probs [0.5, 0.3, 0.2] at T = 2 become proportional to their square roots,
    # [0.415, 0.322, 0.263]: the nucleus for p = 0.5 now needs two tokens (one at T = 1).
    z = logits([0.5, 0.3, 0.2]).log()
    p = filtered_probabilities(z, temperature=2.0, top_p=0.5)
    a, b = math.sqrt(0.5), math.sqrt(0.3)
    torch.testing.assert_close(p, logits([a / (a + b), b / (a + b), 0.0]), **TOL[torch.float64])
    assert torch.count_nonzero(filtered_probabilities(z, temperature=1.0, top_p=0.5)) == 1


def test_top_k_is_applied_before_top_p() -> None:
    # probs [0.4, 0.3, 0.2, 0.1]; top-k 2 renormalises to [4/7, 3/7], whose nucleus for
    # p = 0.5 is one token. Top-p first would keep [0.4, 0.3] and top-k would keep both.
    z = logits([0.4, 0.3, 0.2, 0.1]).log()
    p = filtered_probabilities(z, top_k=2, top_p=0.5)
    assert p.tolist() == [[1.0, 0.0, 0.0, 0.0]]


def test_filtered_probabilities_at_zero_temperature_and_dtypes() -> None:
    z = logits([[0.0, 2.0, 2.0], [1.0, -INF, 0.5]], torch.float32)
    assert filtered_probabilities(z, temperature=0.0, top_k=1, top_p=0.3).tolist() == [[0, 1, 0], [1, 0, 0]]
    assert filtered_probabilities(z.bfloat16()).dtype == torch.float32
    assert filtered_probabilities(z.double()).dtype == torch.float64


# ------------------------------------------------------------------------------- draws


def test_same_seed_same_draws_and_global_rng_untouched() -> None:
    z = torch.randn(64, 10, generator=torch.Generator().manual_seed(0))
    state = torch.get_rng_state()
    a = sample(z, torch.Generator().manual_seed(7), temperature=1.3, top_k=6, top_p=0.9)
    b = sample(z, torch.Generator().manual_seed(7), temperature=1.3, top_k=6, top_p=0.9)
    c = sample(z, torch.Generator().manual_seed(8), temperature=1.3, top_k=6, top_p=0.9)
    assert torch.equal(torch.get_rng_state(), state)  # DEC-5: the global RNG is never used
    assert a.shape == (64,) and a.dtype == torch.long
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_zero_temperature_is_greedy_without_a_generator() -> None:
    z = logits([[0.1, 0.9, 0.9], [3.0, 1.0, 2.0]])
    assert sample(z, None, temperature=0.0).tolist() == [1, 0]
    assert sample(z, torch.Generator().manual_seed(0), temperature=0).tolist() == [1, 0]
    assert torch.equal(sample(z, torch.Generator().manual_seed(0), top_k=1), greedy(z))  # top-1 is greedy


def test_draws_stay_inside_the_filtered_set() -> None:
    z = torch.randn(2000, 8, generator=torch.Generator().manual_seed(1))
    drawn = sample(z, torch.Generator().manual_seed(2), top_k=3)
    top3 = z.topk(3, dim=-1).indices
    assert bool((top3 == drawn[:, None]).any(-1).all())


def test_sample_requires_a_generator_when_temperature_is_positive() -> None:
    with pytest.raises(ValueError, match="generator is required"):
        sample(logits([1.0, 2.0]), None, temperature=0.5)


@pytest.mark.parametrize(("temperature", "top_k", "top_p"), [(0.7, None, None), (1.0, 3, None), (1.5, None, 0.9)])
def test_draw_frequencies_pass_a_chi_square_test(temperature: float, top_k: int | None, top_p: float | None) -> None:
    # DEC-2: 20000 draws against softmax(z / T) (after any filter), chi-square
    # goodness of fit at a false-alarm rate alpha = 1e-3. The generator is seeded, so the
    # outcome is fixed in CI; alpha is the chance that a *correct* sampler's seed fails.
    alpha, n = 1e-3, 20000
    z = [2.0, 1.0, 0.5, 0.0, -1.0, -3.0]
    expected = softmax_by_hand(z, temperature)
    if top_k is not None:
        keep = sorted(range(len(z)), key=lambda i: -z[i])[:top_k]
        expected = [p if i in keep else 0.0 for i, p in enumerate(expected)]
    if top_p is not None:
        order = sorted(range(len(z)), key=lambda i: -expected[i])
        cum, keep = 0.0, []
        for i in order:
            keep.append(i)
            cum += expected[i]
            if cum >= top_p:
                break
        expected = [p if i in keep else 0.0 for i, p in enumerate(expected)]
    total = sum(expected)
    expected = [p / total for p in expected]

    rows = logits([z] * n)
    drawn = sample(rows, torch.Generator().manual_seed(2024), temperature, top_k, top_p)
    counts = torch.bincount(drawn, minlength=len(z)).tolist()
    support = [i for i, p in enumerate(expected) if p > 0]
    assert all(counts[i] == 0 for i in range(len(z)) if i not in support)
    assert all(n * expected[i] >= 5 for i in support)  # chi-square approximation is valid
    observed = [counts[i] for i in support]
    result = chisquare(observed, [n * expected[i] for i in support])
    assert result.pvalue > alpha, f"chi-square p = {result.pvalue:.3g} (counts {counts})"
    # The test has power: the same draws are rejected against the wrong temperature.
    wrong = softmax_by_hand(z, temperature * 2)
    wrong = [wrong[i] / sum(wrong[j] for j in support) for i in support]
    assert chisquare(observed, [n * w for w in wrong]).pvalue < alpha


# ------------------------------------------------------------------------------ errors

GOOD = logits([[1.0, 2.0, 0.5]])


@pytest.mark.parametrize(
    ("kwargs", "exc", "match"),
    [
        ({"temperature": -0.1}, ValueError, "temperature"),
        ({"temperature": NAN}, ValueError, "temperature"),
        ({"temperature": INF}, ValueError, "temperature"),
        ({"temperature": -INF}, ValueError, "temperature"),
        ({"temperature": "0.5"}, ValueError, "temperature"),  # was accepted as 0.5 (float("0.5"))
        ({"temperature": True}, ValueError, "temperature"),  # was accepted as 1.0
        ({"temperature": None}, ValueError, "temperature"),
        ({"top_k": 0}, ValueError, "top_k"),
        ({"top_k": -1}, ValueError, "top_k"),
        ({"top_k": True}, ValueError, "top_k"),
        ({"top_k": 1.5}, ValueError, "top_k"),
        ({"top_k": 2.0}, ValueError, "top_k"),
        ({"top_p": 0.0}, ValueError, "top_p"),
        ({"top_p": 1.1}, ValueError, "top_p"),
        ({"top_p": -0.5}, ValueError, "top_p"),
        ({"top_p": NAN}, ValueError, "top_p"),
        ({"top_p": INF}, ValueError, "top_p"),
        ({"top_p": "0.9"}, ValueError, "top_p"),  # was accepted as 0.9
        ({"top_p": True}, ValueError, "top_p"),  # was accepted as 1.0
        ({"logits": logits([[NAN, 1.0, 0.0]])}, ValueError, "logits contains NaN"),
        ({"logits": logits([[INF, 1.0, 0.0]])}, ValueError, r"logits contains \+inf"),
        ({"logits": logits([[0.0, 1.0], [-INF, -INF]])}, ValueError, "logits has a row where every entry is -inf"),
        ({"logits": torch.tensor([[1, 2, 3]])}, TypeError, "logits must be a floating-point"),
        ({"logits": [[1.0, 2.0]]}, TypeError, "logits must be a floating-point"),
        ({"logits": torch.tensor([1.0, 2.0])}, ValueError, r"logits must have shape \[batch, vocab\]"),
        ({"logits": torch.zeros(2, 0)}, ValueError, r"logits must have shape \[batch, vocab\]"),
        ({"logits": torch.zeros(1, 2, 3)}, ValueError, r"logits must have shape \[batch, vocab\]"),
    ],
)
@pytest.mark.parametrize("entry", ["filtered_probabilities", "sample"])
def test_bad_arguments_are_rejected_naming_the_parameter(kwargs: dict, exc: type[Exception], match: str,
                                                         entry: str) -> None:
    args = {"logits": GOOD, **kwargs}
    with pytest.raises(exc, match=match):
        if entry == "sample":
            sample(args.pop("logits"), torch.Generator().manual_seed(0), **args)
        else:
            filtered_probabilities(**args)


@pytest.mark.parametrize(("fn", "arg", "match"), [(top_k_filter, 0, "top_k"), (top_p_filter, 0.0, "top_p"),
                                                  (top_p_filter, 2.0, "top_p")])
def test_filters_validate_their_parameter(fn: object, arg: float, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        fn(GOOD, arg)  # type: ignore[operator]


@pytest.mark.parametrize("bad", [-1.0, NAN, INF])
def test_softmax_validates_temperature(bad: float) -> None:
    with pytest.raises(ValueError, match="temperature"):
        softmax(GOOD, bad)


# ------------------------------------------------------------------------ tiny temperatures (issue #14)


@pytest.mark.parametrize("t", [1e-40, 1e-46, 1e-300, 5e-324])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.bfloat16])
def test_a_tiny_temperature_gives_the_limit_one_hot_on_the_argmax(t: float, dtype: torch.dtype) -> None:
    # Before: z / T overflowed to inf, so softmax and filtered_probabilities returned all-NaN rows and
    # sample raised torch's own RuntimeError from multinomial. The limit T -> 0+ shares the mass among
    # tied maxima (row 0); T = 0 itself is the first argmax.
    z = logits([[1.0, 3.0, 3.0, 0.5], [2.0, -INF, 1.0, 0.0], [-1e4, -3.0, -1e4, -2.5]], dtype)
    limit = [[0.0, 0.5, 0.5, 0.0], [1.0, 0.0, 0.0, 0.0], [0.0, 0.0, 0.0, 1.0]]
    assert softmax(z, t).tolist() == limit
    assert filtered_probabilities(z, t).tolist() == limit
    assert filtered_probabilities(z, t, top_k=3).tolist() == limit
    assert filtered_probabilities(z, t, top_p=0.5).tolist() == [[0, 1, 0, 0], [1, 0, 0, 0], [0, 0, 0, 1]]
    draws = sample(z, torch.Generator().manual_seed(0), t).tolist()
    assert draws[0] in (1, 2) and draws[1:] == [0, 3]


def test_temperature_is_applied_without_overflow_at_any_scale() -> None:
    # (z - max) / T: the same distribution as z / T wherever the latter is finite, and finite where it is not.
    z = logits([[1.0, 0.9, -2.0]], torch.float32)
    for t in (1e-3, 1e-2, 0.5, 1.0, 7.0):
        torch.testing.assert_close(softmax(z, t), torch.softmax(z / t, dim=-1), **TOL[torch.float32])
    assert bool(torch.isfinite(softmax(z, 1e-38)).all()) and bool(torch.isfinite(softmax(z * 1e30, 1e-9)).all())
