"""Meta-tests of claims MLP-1, MLP-2, RES-1, NORM-1, BLK-1 (spec/claims/blocks.py).

Each claim must pass on the reference (several presets, float32 and float64) and fail
on a reference whose one method carries a realistic bug. Hypothesis runs derandomized;
the failing runs skip shrinking (only the verdict matters here).
"""

from __future__ import annotations

from dataclasses import dataclass

import pytest
import torch
from hypothesis import Phase, settings
from torch import Tensor

from reference.linear import linear
from reference.norms import rms_norm
from spec.catalog import CATALOG, load_all
from spec.runner import Result, run_claim
from spec.target import Sublayers
from spec.targets.reference_target import ReferenceSublayers, ReferenceTarget

load_all()

BROKEN_MUTANT = ("TypeError", "AttributeError", "NameError")  # a crash in the mutant is no kill
PASS = settings(max_examples=12, derandomize=True, database=None)
FAIL = settings(max_examples=30, derandomize=True, database=None,
                phases=[Phase.explicit, Phase.reuse, Phase.generate])

CLAIMS = ["MLP-1", "MLP-2", "RES-1", "NORM-1", "BLK-1"]
PRESETS = ["gpt2-tiny", "llama-tiny", "neox-tiny"]


def run(claim_id: str, target: ReferenceTarget, profile: settings) -> Result:
    return run_claim(CATALOG[claim_id], target, profile=profile)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["float32", "float64"])
@pytest.mark.parametrize("preset", PRESETS)
@pytest.mark.parametrize("claim_id", CLAIMS)
def test_passes_on_reference(claim_id: str, preset: str, dtype: torch.dtype) -> None:
    r = run(claim_id, ReferenceTarget.from_preset(preset, dtype=dtype), PASS)
    assert r.status == "passed", (r.detail, r.counterexample)
    assert r.examples >= 1


# -- mutants: each overrides one piece of one block ------------------------------------------
def _with_sublayers(sub_cls: type[ReferenceSublayers]) -> type[ReferenceTarget]:
    """A ReferenceTarget whose sublayers() hands out ``sub_cls`` (one method of it carries the bug)."""

    class Mutant(ReferenceTarget):
        def sublayers(self, layer: int) -> Sublayers:
            return sub_cls(self._block(layer), self.model.cfg)

    Mutant.__name__ = f"Mutant{sub_cls.__name__}"
    return Mutant


@dataclass
class LinearMLP(ReferenceSublayers):
    """The activation was dropped: the MLP is two stacked linear maps."""

    def mlp(self, x: Tensor) -> Tensor:
        m = self.blk.mlp
        return linear(linear(x, m.W_in, m.b_in), m.W_out, m.b_out)


@dataclass
class SwappedGate(ReferenceSublayers):
    """SwiGLU with the gate and up projections swapped: act(x W_in) * (x W_gate)."""

    def mlp(self, x: Tensor) -> Tensor:
        m = self.blk.mlp
        assert m.W_gate is not None
        return linear(m.act(linear(x, m.W_in, m.b_in)) * linear(x, m.W_gate, m.b_gate), m.W_out, m.b_out)


@dataclass
class MixingMLP(ReferenceSublayers):
    """Centres its input over the sequence axis (dim=1) where the feature axis was meant."""

    def mlp(self, x: Tensor) -> Tensor:
        return self.blk.mlp(x - x.mean(dim=1, keepdim=True))


@dataclass
class ReplacingBlock(ReferenceSublayers):
    """Forgets the residual around attention: h = Attn(N1 x) instead of x + Attn(N1 x)."""

    def block(self, x: Tensor) -> Tensor:
        h = self.attention(self.norm1(x))
        return h + self.mlp(self.norm2(h))


@dataclass
class NoSqrtNorm(ReferenceSublayers):
    """Divides by the variance instead of the standard deviation (a missing sqrt)."""

    def norm1(self, x: Tensor) -> Tensor:
        n = self.blk.N1
        centred = x - x.mean(dim=-1, keepdim=True) if n.kind == "layernorm" else x
        out = centred / (centred.pow(2).mean(dim=-1, keepdim=True) + n.eps) * n.weight
        return out if n.bias is None else out + n.bias


@dataclass
class UncentredLayerNorm(ReferenceSublayers):
    """A LayerNorm model whose first norm does not subtract the mean (RMSNorm in its place)."""

    def norm1(self, x: Tensor) -> Tensor:
        n = self.blk.N1
        out = rms_norm(x, n.weight, n.eps)
        return out if n.bias is None else out + n.bias


@dataclass
class PostNormBlock(ReferenceSublayers):
    """Post-norm wiring (norm after the residual add) behind a pre-norm config."""

    def block(self, x: Tensor) -> Tensor:
        h = self.norm1(x + self.attention(x))
        return self.norm2(h + self.mlp(h))


class NormedLastState(ReferenceTarget):
    """Returns the last residual state after the final norm (HF's hidden_states convention), not before it."""

    @torch.no_grad()
    def residual_states(self, ids: Tensor, attention_mask: Tensor | None = None) -> tuple[Tensor, ...]:
        states = self.model(ids, attention_mask, return_states=True).states
        assert states is not None
        return (*states[:-1], self.model.final_norm(states[-1]))


MUTANTS = [
    ("MLP-1", _with_sublayers(LinearMLP), "gpt2-tiny"),
    ("MLP-1", _with_sublayers(SwappedGate), "llama-tiny"),
    ("MLP-2", _with_sublayers(MixingMLP), "gpt2-tiny"),
    ("RES-1", _with_sublayers(ReplacingBlock), "gpt2-tiny"),
    ("NORM-1", _with_sublayers(NoSqrtNorm), "llama-tiny"),
    ("NORM-1", _with_sublayers(UncentredLayerNorm), "gpt2-tiny"),
    ("BLK-1", _with_sublayers(PostNormBlock), "gpt2-tiny"),
    ("BLK-1", NormedLastState, "gpt2-tiny"),
]


@pytest.mark.parametrize(("claim_id", "cls", "preset"), MUTANTS,
                         ids=[f"{c}-{cls.__name__}" for c, cls, _ in MUTANTS])
def test_fails_on_mutant(claim_id: str, cls: type[ReferenceTarget], preset: str) -> None:
    r = run(claim_id, cls.from_preset(preset), FAIL)
    assert r.status == "failed", (r.status, r.detail)
    assert not r.detail.startswith(BROKEN_MUTANT), f"the mutant itself is broken: {r.detail}"


def test_res_1_literal_form_runs_on_built_models() -> None:
    """RES-1's zero-projection form needs a live reference_model(): the reference's built models have one."""
    from reference.config import ModelConfig
    from spec.claims.blocks import _zero_output_projections

    base = ReferenceTarget.from_preset("gpt2-tiny")
    sub = base.build(ModelConfig(vocab_size=11, d_model=8, n_layers=2, n_heads=2), seed=3)
    assert _zero_output_projections(sub)
    x = torch.randn(1, 5, 8)
    assert torch.equal(sub.sublayers(1).block(x), x)
