"""Meta-tests of claims OUT-1 .. OUT-7 and SOFT-1 .. SOFT-7 (spec/claims/out.py, spec/claims/soft.py).

Each claim must pass on the reference (several presets for OUT, float32 and float64)
and fail on a reference whose one method carries a realistic bug. Hypothesis runs
derandomized; the failing runs skip shrinking (only the verdict matters here).
"""

from __future__ import annotations

import pytest
import torch
from hypothesis import Phase, settings
from torch import Tensor

import reference
from spec.catalog import CATALOG, load_all
from spec.runner import Result, run_claim
from spec.targets.reference_target import ReferenceTarget

load_all()

BROKEN_MUTANT = ("TypeError", "AttributeError", "NameError")  # a crash in the mutant is no kill
PASS = settings(max_examples=12, derandomize=True, database=None)
FAIL = settings(max_examples=40, derandomize=True, database=None,
                phases=[Phase.explicit, Phase.reuse, Phase.generate])

OUT_CLAIMS = [f"OUT-{i}" for i in range(1, 8)]
SOFT_CLAIMS = [f"SOFT-{i}" for i in range(1, 8)]
DTYPES = pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["float32", "float64"])


def run(claim_id: str, target: ReferenceTarget, profile: settings) -> Result:
    return run_claim(CATALOG[claim_id], target, profile=profile)


@DTYPES
@pytest.mark.parametrize("preset", ["gpt2-tiny", "llama-tiny", "mqa-sinusoidal"])
@pytest.mark.parametrize("claim_id", OUT_CLAIMS)
def test_out_passes_on_reference(claim_id: str, preset: str, dtype: torch.dtype) -> None:
    r = run(claim_id, ReferenceTarget.from_preset(preset, dtype=dtype), PASS)
    assert r.status == "passed", (r.detail, r.counterexample)


@DTYPES
@pytest.mark.parametrize("claim_id", SOFT_CLAIMS)
def test_soft_passes_on_reference(claim_id: str, dtype: torch.dtype) -> None:
    r = run(claim_id, ReferenceTarget.from_preset("llama-tiny", dtype=dtype), PASS)
    assert r.status == "passed", (r.detail, r.counterexample)


# -- mutants: each overrides exactly one method with a realistic bug -------------------------
class DropsBias(ReferenceTarget):
    """An adapter that forgets the output bias when exposing the unembedding."""

    def unembedding(self) -> tuple[Tensor, Tensor | None]:
        return self.model.W_U.detach(), None


class NormedLastState(ReferenceTarget):
    """The last residual state is handed out after the final norm (applied twice by OUT-1's read-out)."""

    @torch.no_grad()
    def residual_states(self, ids: Tensor, attention_mask: Tensor | None = None) -> tuple[Tensor, ...]:
        states = self.model(ids, attention_mask, return_states=True).states
        assert states is not None
        return (*states[:-1], self.model.final_norm(states[-1]))


class SigmoidSoftmax(ReferenceTarget):
    """Independent sigmoids in place of a softmax (binary/multiclass mix-up)."""

    def softmax(self, logits: Tensor, temperature: float = 1.0) -> Tensor:
        return torch.sigmoid(logits / temperature) if temperature > 0 else reference.softmax(logits, 0.0)


class UnembedsWithE(ReferenceTarget):
    """An untied model whose adapter falls back to the embedding table for the output matrix."""

    def unembedding(self) -> tuple[Tensor, Tensor | None]:
        return self.model.E.detach().T, None if self.model.b_U is None else self.model.b_U.detach()


class PaddingRow(ReferenceTarget):
    """An embedding table whose row 0 is a zero padding row."""

    def embedding_matrix(self) -> Tensor:
        E = self.model.E.detach().clone()
        E[0] = 0
        return E


class PairedRows(ReferenceTarget):
    """A loader bug that fills rows 2k and 2k + 1 with the same vector."""

    def embedding_matrix(self) -> Tensor:
        E = self.model.E.detach()
        return E[torch.arange(E.shape[0]) // 2 * 2]


class TransposedU(ReferenceTarget):
    """Hands out U as stored by nn.Linear ([V, d]) without transposing it."""

    def unembedding(self) -> tuple[Tensor, Tensor | None]:
        return self.model.W_U.detach().T.contiguous(), None


class ShiftedLogits(ReferenceTarget):
    """Off by one: position i returns the logits meant for position i + 1 (the last is repeated)."""

    @torch.no_grad()
    def logits(self, ids: Tensor, attention_mask: Tensor | None = None) -> Tensor:
        z = self.model(ids, attention_mask).logits
        return torch.cat([z[:, 1:], z[:, -1:]], dim=1)


class UnnormalisedSoftmax(ReferenceTarget):
    """Forgets to divide by the sum."""

    def softmax(self, logits: Tensor, temperature: float = 1.0) -> Tensor:
        if temperature == 0:
            return reference.softmax(logits, 0.0)
        z = logits / temperature
        return torch.exp(z - z.amax(dim=-1, keepdim=True))


class SortedSoftmax(ReferenceTarget):
    """Returns the probabilities in sorted order (the sampling code's sort never scattered back)."""

    def softmax(self, logits: Tensor, temperature: float = 1.0) -> Tensor:
        return torch.sort(reference.softmax(logits, temperature), dim=-1, descending=True).values


class NaiveSoftmax(ReferenceTarget):
    """exp(z) / sum exp(z) without subtracting the maximum first."""

    def softmax(self, logits: Tensor, temperature: float = 1.0) -> Tensor:
        if temperature == 0:
            return reference.softmax(logits, 0.0)
        e = torch.exp(logits / temperature)
        return e / e.sum(dim=-1, keepdim=True)


class MultipliedTemperature(ReferenceTarget):
    """Multiplies the logits by T instead of dividing."""

    def softmax(self, logits: Tensor, temperature: float = 1.0) -> Tensor:
        if temperature == 0:
            return reference.softmax(logits, 0.0)
        return torch.softmax(logits * temperature, dim=-1)


MUTANTS = [
    ("OUT-1", DropsBias, "mqa-sinusoidal"),
    ("OUT-1", NormedLastState, "gpt2-tiny"),
    ("OUT-2", SigmoidSoftmax, "gpt2-tiny"),
    ("OUT-3", UnembedsWithE, "llama-tiny"),
    ("OUT-4", PaddingRow, "gpt2-tiny"),
    ("OUT-5", PairedRows, "gpt2-tiny"),
    ("OUT-6", TransposedU, "llama-tiny"),
    ("OUT-7", ShiftedLogits, "gpt2-tiny"),
    ("SOFT-1", UnnormalisedSoftmax, "gpt2-tiny"),
    ("SOFT-2", SortedSoftmax, "gpt2-tiny"),
    ("SOFT-3", NaiveSoftmax, "gpt2-tiny"),
    ("SOFT-4", MultipliedTemperature, "gpt2-tiny"),
    ("SOFT-5", MultipliedTemperature, "gpt2-tiny"),
    ("SOFT-6", MultipliedTemperature, "gpt2-tiny"),
    ("SOFT-7", NaiveSoftmax, "gpt2-tiny"),
]


@DTYPES
@pytest.mark.parametrize(("claim_id", "cls", "preset"), MUTANTS,
                         ids=[f"{c}-{cls.__name__}" for c, cls, _ in MUTANTS])
def test_fails_on_mutant(claim_id: str, cls: type[ReferenceTarget], preset: str, dtype: torch.dtype) -> None:
    r = run(claim_id, cls.from_preset(preset, dtype=dtype), FAIL)
    assert r.status == "failed", (r.status, r.detail)
    assert not r.detail.startswith(BROKEN_MUTANT), f"the mutant itself is broken: {r.detail}"


def test_toy_example_numbers() -> None:
    """The published 4-decimal softmax of the toy logits is the exact one (the spec's record, OUT-2)."""
    z = torch.tensor([5.0, 6.0, 4.0, 2.0, 7.0, 4.0], dtype=torch.float64)
    p = torch.exp(z) / torch.exp(z).sum()
    assert [round(float(x), 4) for x in p] == [0.0841, 0.2286, 0.0309, 0.0042, 0.6213, 0.0309]
