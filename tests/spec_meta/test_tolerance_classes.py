"""Meta-tests of the tolerance classes (spec/tolerance.py), above all the quantized one.

The quantized class judges logits as distributions: per-position KL and top-1 agreement
(up to a near-tie). It must accept what a quantized implementation really does to the
logits and reject a real bug. The quantized run here is SmolLM2 through the reference
with every matmul input rounded to 8 bits in blocks of 32 (llama.cpp's Q8 activation
rounding for Q4_1/Q8_0 weights), on the same dequantized weights llama.cpp multiplies
with; `nox -s peers` checks llama.cpp itself against the same class (REF-1 on
llamacpp:smollm2). Everything is deterministic: no statistical test, no false-alarm rate.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch
from torch import Tensor

import reference.attention
import reference.mlp
import reference.unembedding
from reference.linear import linear
from spec.targets.reference_target import ReferenceTarget
from spec.targets.smollm2 import load_reference
from spec.tolerance import CLASSES, Recorder, assert_logits_close, kl_and_top1_gap, recording, stop_recording

PROMPT = "The capital of France is Paris. The capital of Germany is Berlin. The capital of Italy is"
QUANT = CLASSES["quantized"]


def q8_blocks(x: Tensor, block: int = 32) -> Tensor:
    """x rounded as llama.cpp rounds a matmul's activations: per block of 32, scale max|x| / 127, 8-bit integers."""
    shape = x.shape
    xb = x.reshape(*shape[:-1], shape[-1] // block, block)  # [..., n_blocks, 32]
    scale = xb.abs().amax(-1, keepdim=True) / 127.0
    q = torch.where(scale > 0, torch.round(xb / scale.clamp_min(1e-30)), torch.zeros_like(xb))
    return (q * scale).reshape(shape)


def q8_linear(x: Tensor, W: Tensor, b: Tensor | None = None) -> Tensor:
    return linear(q8_blocks(x), W, b)


@pytest.fixture(scope="module")
def smollm2() -> ReferenceTarget:
    return load_reference()


@pytest.fixture(scope="module")
def ids(smollm2: ReferenceTarget) -> Tensor:
    return torch.tensor([smollm2.tokenizer().encode(PROMPT)])  # [1, T]


@pytest.fixture(scope="module")
def exact_and_quantized(smollm2: ReferenceTarget, ids: Tensor) -> Iterator[tuple[Tensor, Tensor]]:
    """SmolLM2's float32 logits and its logits with 8-bit activations, on the real prompt: two [1, T, V]."""
    exact = smollm2.logits(ids)
    with pytest.MonkeyPatch.context() as mp:
        for module in (reference.attention, reference.mlp, reference.unembedding):
            mp.setattr(module, "linear", q8_linear)
        quantized = smollm2.logits(ids)
    yield exact, quantized


def test_only_the_quantized_class_is_distributional() -> None:
    assert [name for name, tol in CLASSES.items() if tol.distributional] == ["quantized"]
    assert QUANT.max_kl is not None and QUANT.max_kl > 0
    assert QUANT.top1_margin is not None and QUANT.top1_margin > 0


def test_elementwise_classes_keep_assert_close() -> None:
    """float32 logits: a difference of 5e-5 passes, 1e-3 fails, exactly as assert_close decides."""
    z = torch.linspace(-3, 3, 50).reshape(2, 25)
    assert_logits_close(z + 5e-5, z, CLASSES["float32"], "logits")
    with pytest.raises(AssertionError, match="float32"):
        assert_logits_close(z + 1e-3, z, CLASSES["float32"], "logits")


def test_the_emulated_deviation_is_real(exact_and_quantized: tuple[Tensor, Tensor]) -> None:
    """The 8-bit run differs far beyond float32 rounding, so the float32 class rejects it."""
    exact, quantized = exact_and_quantized
    assert float((quantized - exact).abs().max()) > 0.05
    with pytest.raises(AssertionError):
        assert_logits_close(quantized, exact, CLASSES["float32"], "8-bit activations vs float32")


def test_quantized_class_accepts_quantized_logits(exact_and_quantized: tuple[Tensor, Tensor]) -> None:
    exact, quantized = exact_and_quantized
    rec = Recorder()
    token = recording(rec)
    try:
        assert_logits_close(quantized, exact, QUANT, "8-bit activations vs float32")
    finally:
        stop_recording(token)
    assert rec.comparisons == 1 and 0 < rec.worst <= 1


def test_quantized_class_rejects_logits_of_the_next_position(exact_and_quantized: tuple[Tensor, Tensor]) -> None:
    """An off-by-one in positions (each row the next position's logits) is a bug the class must catch."""
    exact, quantized = exact_and_quantized
    with pytest.raises(AssertionError, match="KL"):
        assert_logits_close(quantized[:, 1:], exact[:, :-1], QUANT, "shifted positions")


def test_quantized_class_rejects_a_permuted_vocabulary(exact_and_quantized: tuple[Tensor, Tensor]) -> None:
    """Logits assigned to the wrong token IDs (a vocabulary permutation, seed 0) must fail."""
    exact, quantized = exact_and_quantized
    perm = torch.randperm(exact.shape[-1], generator=torch.Generator().manual_seed(0))
    with pytest.raises(AssertionError, match="KL"):
        assert_logits_close(quantized[..., perm], exact, QUANT, "permuted vocabulary")


def test_quantized_class_rejects_one_swapped_top_token() -> None:
    """Swapping the leader with a token 3 logits behind changes top-1 beyond a near-tie even where KL stays small."""
    z = torch.zeros(1, 1, 100_000)  # a wide vocabulary: the leader holds little mass, so KL alone would pass
    z[0, 0, 0] = 3.0
    bad = z.clone()
    bad[0, 0, 0], bad[0, 0, 1] = 0.0, 3.0
    kl, gap = kl_and_top1_gap(bad, z)
    assert float(kl) < QUANT.max_kl  # type: ignore[operator]
    assert float(gap) == 3.0
    with pytest.raises(AssertionError, match="top-1"):
        assert_logits_close(bad, z, QUANT, "swapped leader")


def test_near_tie_is_not_a_top1_failure() -> None:
    """Two tokens 0.1 apart may trade places: that is within the quantized class's top-1 margin."""
    z = torch.zeros(1, 1, 100)
    z[0, 0, 0], z[0, 0, 1] = 5.0, 4.9
    flipped = z.clone()
    flipped[0, 0, 0], flipped[0, 0, 1] = 4.9, 5.0
    assert_logits_close(flipped, z, QUANT, "near tie")


def test_big_tensors_are_compared_block_by_block_with_the_whole_verdict() -> None:
    """assert_close and error_ratio work on blocks of ~1M entries (a 128k x 2048 table would otherwise be copied
    to float64 several times over); the verdict, the recorded worst ratio and the failure message are those of the
    whole comparison, computed independently here in float64 on the whole tensors."""
    from spec.tolerance import _BLOCK, assert_close, error_ratio

    g = torch.Generator().manual_seed(0)
    e = torch.randn(3 * _BLOCK // 512 + 7, 512, generator=g)  # [V, d]: several blocks and a ragged last one
    tol = CLASSES["float32"]
    a = e * (1 + 0.5 * tol.rtol * torch.rand(e.shape, generator=g))  # within tolerance everywhere
    whole = float(((a.double() - e.double()).abs() / (tol.atol + tol.rtol * e.double().abs())).max())
    assert error_ratio(a, e, tol.atol, tol.rtol) == pytest.approx(whole, rel=1e-12)
    rec = Recorder()
    token = recording(rec)
    try:
        assert_close(a, e.T.T, tol, "table")  # a view, as E^T of a tied table is
    finally:
        stop_recording(token)
    assert rec.worst == pytest.approx(whole, rel=1e-12)
    bad = a.clone()
    bad[-1, -1] += 1.0  # one entry, in the last block
    bad[2, 3] = float("nan")  # one NaN, in the first
    with pytest.raises(AssertionError) as blocked:
        assert_close(bad, e, tol, "table")
    with pytest.raises(AssertionError) as direct:
        torch.testing.assert_close(bad, e, atol=tol.atol, rtol=tol.rtol, equal_nan=False)
    assert str(direct.value) in str(blocked.value)  # torch's message about the whole table, both entries counted
    assert "Mismatched elements: 2 / " in str(blocked.value)
