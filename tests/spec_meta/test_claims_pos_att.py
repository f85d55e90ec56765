"""Meta-tests of claims POS-1..3 and ATT-1..6 (spec/claims/pos.py, spec/claims/att.py).

Each claim must pass on the reference (several presets, float32 and float64) and fail
on a target that carries one realistic bug. Hypothesis runs derandomized; failing runs
skip shrinking (only the verdict matters here). Bugs inside the reference's attention
are put in by replacing one of the model's stages (reference.stages) in that model
alone, which leaves every other model and test untouched.
"""

from __future__ import annotations

from dataclasses import replace
from typing import cast

import pytest
import torch
from hypothesis import Phase, settings
from torch import Tensor

import reference
from reference.block import Block
from reference.config import ModelConfig
from reference.positions import apply_rotary, rotary_angles
from reference.stages import REFERENCE, Stages
from spec.catalog import CATALOG, load_all
from spec.runner import Result, run_claim
from spec.target import Target
from spec.targets.mutants import MUTANTS, Mutant
from spec.targets.reference_target import ReferenceTarget

load_all()

BROKEN_MUTANT = ("TypeError", "AttributeError", "NameError")  # a crash in the mutant is no kill
PASS = settings(max_examples=8, derandomize=True, database=None)
FAIL = settings(max_examples=30, derandomize=True, database=None,
                phases=[Phase.explicit, Phase.reuse, Phase.generate])

CLAIMS = ["POS-1", "POS-2", "POS-3", "ATT-1", "ATT-2", "ATT-3", "ATT-4", "ATT-5", "ATT-6"]
# learned, sinusoidal, rotary (halves, partial, interleaved), ALiBi, none; MHA, GQA, MQA
PRESETS = ["gpt2-tiny", "llama-tiny", "mqa-sinusoidal", "gptj-tiny", "bloom-tiny", "nopos-tiny"]


def run(claim_id: str, target: Target, profile: settings) -> Result:
    return run_claim(CATALOG[claim_id], target, profile=profile)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["float32", "float64"])
@pytest.mark.parametrize("preset", PRESETS)
@pytest.mark.parametrize("claim_id", CLAIMS)
def test_passes_on_reference(claim_id: str, preset: str, dtype: torch.dtype) -> None:
    r = run(claim_id, ReferenceTarget.from_preset(preset, dtype=dtype), PASS)
    assert r.status == "passed", (r.detail, r.counterexample)
    assert r.examples >= 1


# -- mutants -------------------------------------------------------------------------------------------
def _model(preset: str, stages: Stages = REFERENCE, **changes: object) -> reference.Transformer:
    model = reference.build(reference.preset(preset).with_(**changes))
    model.use_stages(stages)
    return model


class PositionsByDefault(ReferenceTarget):
    """Its builder adds sinusoidal positions even when the config asks for none."""

    def build(self, config: ModelConfig, seed: int = 0) -> ReferenceTarget:
        cfg = config.with_(positions="sinusoidal") if not config.scheme.sees_order else config
        return ReferenceTarget(reference.build(cfg, seed=seed, dtype=self.dtype), name="mutant[built]")


class PositionsDropped(ReferenceTarget):
    """Its builder ignores the position scheme of the config."""

    def build(self, config: ModelConfig, seed: int = 0) -> ReferenceTarget:
        return ReferenceTarget(reference.build(config.with_(positions="none"), seed=seed, dtype=self.dtype),
                               name="mutant[built]")


class PositionsForgotten(ReferenceTarget):
    """The input stage forgets to add the position table."""

    @torch.no_grad()
    def embed(self, ids: Tensor) -> Tensor:
        return self.model.embed(ids)


class PositionsFromOne(ReferenceTarget):
    """Counts positions from 1 (a cache offset applied to a fresh sequence)."""

    @torch.no_grad()
    def embed(self, ids: Tensor) -> Tensor:
        pos = torch.arange(1, ids.shape[1] + 1, device=ids.device).expand_as(ids)
        return self.model._embed(ids, pos)


class KeysNotRotated(ReferenceTarget):
    """Rotates the queries but not the keys."""

    @torch.no_grad()
    def queries_keys(self, layer: int, ids: Tensor) -> tuple[Tensor, Tensor]:
        states = self.residual_states(ids)
        blk = cast(Block, self.model.blocks[layer])
        q, k, _ = blk.attn.project(blk.N1(states[layer]))
        cfg = self.model.cfg
        pos = torch.arange(ids.shape[1], device=ids.device).expand_as(ids)
        cos, sin = rotary_angles(pos, cfg.rotary_dim, cfg.rotary_theta, q.dtype)
        return apply_rotary(q, cos, sin, cfg.rotary_interleaved), k


class QueriesBeforeNorm(ReferenceTarget):
    """Projects queries and keys from the residual stream before the block's norm."""

    @torch.no_grad()
    def queries_keys(self, layer: int, ids: Tensor) -> tuple[Tensor, Tensor]:
        blk = cast(Block, self.model.blocks[layer])
        q, k, _ = blk.attn.project(self.residual_states(ids)[layer])
        return q, k


class PaddingVisible(ReferenceTarget):
    """Reports attention weights computed without the attention mask, so padding keys get weight."""

    @torch.no_grad()
    def attention_weights(self, ids: Tensor, attention_mask: Tensor | None = None) -> tuple[Tensor, ...]:
        return super().attention_weights(ids, None)


def _sees_every_key(key_mask: Tensor, q_len: int, past: int) -> Tensor:
    """The visibility stage without its causal part: every query sees every real key, later ones too."""
    return key_mask[:, None, None, :].expand(-1, 1, q_len, -1)


def _weights_over_queries(scores: Tensor, mask: Tensor | None) -> Tensor:
    """The weights stage normalising over the queries (dim -2) instead of the keys."""
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    return torch.softmax(scores, dim=-2)


class WrongAxisStream(ReferenceTarget):
    """Its residual stream mixes values with weights normalised over the wrong axis (reported weights are right)."""

    @torch.no_grad()
    def residual_states(self, ids: Tensor, attention_mask: Tensor | None = None) -> tuple[Tensor, ...]:
        self.model.use_stages(replace(REFERENCE, weights=_weights_over_queries))  # this model only, this call only
        try:
            return super().residual_states(ids, attention_mask)
        finally:
            self.model.use_stages(REFERENCE)


def _builds(cls: type[ReferenceTarget]) -> type[ReferenceTarget]:
    """A ReferenceTarget whose build() hands out ``cls`` targets (the bug lives in the built models)."""

    class Builder(ReferenceTarget):
        def build(self, config: ModelConfig, seed: int = 0) -> ReferenceTarget:
            return cls(reference.build(config, seed=seed, dtype=self.dtype), name="mutant[built]")

    Builder.__name__ = f"Builds{cls.__name__}"
    return Builder


@pytest.mark.parametrize(("claim_id", "target"), [
    ("POS-1", PositionsByDefault(_model("llama-tiny"))),
    ("POS-1", PositionsDropped(_model("llama-tiny"))),
    ("POS-2", PositionsForgotten(_model("gpt2-tiny"))),
    ("POS-2", PositionsFromOne(_model("mqa-sinusoidal"))),
    ("POS-3", KeysNotRotated(_model("llama-tiny"))),
    ("ATT-1", QueriesBeforeNorm(_model("llama-tiny"))),
    ("ATT-2", ReferenceTarget(_model("llama-tiny", replace(REFERENCE, scale=lambda cfg: 1 / cfg.head_dim)))),
    ("ATT-3", PaddingVisible(_model("gpt2-tiny"))),
    ("ATT-4", ReferenceTarget(_model("llama-tiny", replace(REFERENCE, visibility=_sees_every_key)))),
    ("ATT-5", _builds(WrongAxisStream)(_model("llama-tiny"))),
], ids=["POS-1-positions-by-default", "POS-1-positions-dropped", "POS-2-forgotten", "POS-2-from-one",
        "POS-3-keys-not-rotated", "ATT-1-before-norm", "ATT-2-scale-1/d", "ATT-3-padding-visible",
        "ATT-4-no-causal-mask", "ATT-5-wrong-axis"])
def test_claims_fail_on_mutants(claim_id: str, target: ReferenceTarget) -> None:
    r = run(claim_id, target, FAIL)
    assert r.status == "failed", (r.status, r.detail)
    assert not r.detail.startswith(BROKEN_MUTANT), f"the mutant itself is broken: {r.detail}"


def _merged_transposed(x: Tensor) -> Tensor:
    """Heads concatenated feature-major ([T, d_head, heads]) where W_O expects head-major rows."""
    b, h, t, d = x.shape
    return x.permute(0, 2, 3, 1).reshape(b, t, h * d)


# K/V heads tiled where grouped (the zoo's gqa-tiled-heads stage), heads merged in the wrong order
_TILED = cast(Mutant, MUTANTS["gqa-tiled-heads"]).stages.repeat_kv


@pytest.mark.parametrize("stages", [replace(REFERENCE, repeat_kv=_TILED),
                                    replace(REFERENCE, merge_heads=_merged_transposed)],
                         ids=["ATT-6-tiled-kv", "ATT-6-heads-transposed"])
def test_att_6_fails_on_wrong_head_wiring(stages: Stages) -> None:
    r = run("ATT-6", ReferenceTarget(_model("llama-tiny", stages)), FAIL)
    assert r.status == "failed", (r.status, r.detail)
    assert not r.detail.startswith(BROKEN_MUTANT), f"the mutant itself is broken: {r.detail}"
