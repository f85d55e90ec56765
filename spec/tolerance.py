"""How close is close enough: tolerance classes and the assertion helpers claims use.

Every numeric comparison in the spec goes through ``assert_close``, which applies
torch.testing.assert_close with the target's tolerance class for its dtype and
records how much of the tolerance the worst element used (reported as "worst").

Classes (atol, rtol), and why:
- exact: 0, 0 — the claim is bit-for-bit (row selection, the toy example's integers).
- float64: 1e-10, 1e-9 — two orderings of the same float64 sums over a few layers
  differ near 1e-14 relative; the margin leaves room for depth without hiding a bug
  (every bug in the mutant zoo moves logits by > 1e-3).
- float32: 1e-4, 1e-4 — float32 rounding (eps 1.2e-7) accumulated over d_model-term dot
  products across up to 30 layers gives up to ~1e-5 on logits of magnitude ~10; 1e-4
  keeps a tenfold margin while real bugs move logits by > 1e-3.
- half: 2e-2, 2e-2 — bfloat16 keeps 8 bits of mantissa (eps 7.8e-3).
- quantized: elementwise closeness is not meaningful (weights and activations are
  rounded to 4-8 bits); such targets are judged by top-1 agreement and a KL bound.
"""

from __future__ import annotations

import contextvars
from dataclasses import dataclass, field

import torch
from torch import Tensor


@dataclass(frozen=True)
class ToleranceClass:
    name: str
    atol: float
    rtol: float
    max_kl: float | None = None  # quantized class: bound on KL(p_ref || p_target) per position


CLASSES: dict[str, ToleranceClass] = {
    "exact": ToleranceClass("exact", 0.0, 0.0),
    "float64": ToleranceClass("float64", 1e-10, 1e-9),
    "float32": ToleranceClass("float32", 1e-4, 1e-4),
    "half": ToleranceClass("half", 2e-2, 2e-2),
    "quantized": ToleranceClass("quantized", 0.5, 0.0, max_kl=0.02),
}


def for_dtype(dtype: torch.dtype) -> ToleranceClass:
    """The class that fits results computed in ``dtype``."""
    if dtype == torch.float64:
        return CLASSES["float64"]
    if dtype in (torch.float16, torch.bfloat16):
        return CLASSES["half"]
    return CLASSES["float32"]


@dataclass
class Recorder:
    """Collects, over all examples of one claim run, the worst error / tolerance ratio."""

    worst: float = 0.0
    comparisons: int = 0
    notes: list[str] = field(default_factory=list)

    def record(self, ratio: float) -> None:
        self.comparisons += 1
        self.worst = max(self.worst, ratio)


_RECORDER: contextvars.ContextVar[Recorder | None] = contextvars.ContextVar("spec_recorder", default=None)


def recording(rec: Recorder) -> contextvars.Token[Recorder | None]:
    return _RECORDER.set(rec)


def stop_recording(token: contextvars.Token[Recorder | None]) -> None:
    _RECORDER.reset(token)


def error_ratio(actual: Tensor, expected: Tensor, atol: float, rtol: float) -> float:
    """max |a - e| / (atol + rtol |e|) over finite entries: <= 1 means within tolerance."""
    a, e = actual.detach().double().cpu(), expected.detach().double().cpu()
    both = torch.isfinite(a) & torch.isfinite(e)
    if not bool(both.any()):
        return 0.0
    err = (a - e).abs()[both]
    allowed = atol + rtol * e.abs()[both]
    if bool((allowed == 0).any()):
        return float("inf") if bool((err[allowed == 0] > 0).any()) else float((err / allowed.clamp_min(1e-300)).max())
    return float((err / allowed).max())


def assert_close(actual: Tensor, expected: Tensor, tol: ToleranceClass, what: str) -> None:
    """torch.testing.assert_close under ``tol``, recording the worst ratio; ``what`` names the quantity."""
    if actual.shape != expected.shape:
        raise AssertionError(f"{what}: shape {tuple(actual.shape)} != expected {tuple(expected.shape)}")
    rec = _RECORDER.get()
    if rec is not None:
        rec.record(error_ratio(actual, expected, tol.atol, tol.rtol))
    torch.testing.assert_close(actual.detach().cpu(), expected.detach().cpu().to(actual.dtype),
                               atol=tol.atol, rtol=tol.rtol, equal_nan=False,
                               msg=lambda m: f"{what} [{tol.name}: atol={tol.atol}, rtol={tol.rtol}]\n{m}")


def assert_equal(actual: Tensor, expected: Tensor, what: str) -> None:
    """Bit-for-bit equality (shape, dtype and every value)."""
    assert_close(actual, expected, CLASSES["exact"], what)


def check(condition: bool, message: str) -> None:
    """A plain assertion that survives ``python -O``."""
    if not condition:
        raise AssertionError(message)
