"""The ``attention_values`` capability and the claims that read the target's own attention (issue #12): ATT-5 on
the values and head outputs of the target's forward pass, SOFT-7 on its attention driven with large scores.

What is captured must be what the forward pass used: on the reference, the head outputs at the named seam
(``Attention.hook_mix``) put through W_O must give the attention sublayer's output; on HF models, the head outputs
recorded through AttentionInterface must equal the reference's for the converted weights (two implementations,
one set of weights). Each claim fails on a target that carries one realistic bug, with and without the converter.
"""

from __future__ import annotations

from typing import cast

import pytest
import torch
from hypothesis import Phase, settings
from torch import Tensor

from reference.attention import merge_heads
from reference.block import Block
from reference.linear import linear
from spec.catalog import CATALOG, load_all
from spec.runner import FAILED, PARTLY, PASSED, Result, run_claim
from spec.target import Sublayers, Target
from spec.targets.hf_presets import build_hf
from spec.targets.hf_target import HFTarget
from spec.targets.mutants import build as build_mutant
from spec.targets.opaque import OpaqueTarget
from spec.targets.reference_target import ReferenceTarget
from spec.tolerance import CLASSES, assert_close

load_all()

PASS = settings(max_examples=8, derandomize=True, database=None)
FAIL = settings(max_examples=30, derandomize=True, database=None,
                phases=[Phase.explicit, Phase.reuse, Phase.generate])
IDS = torch.tensor([[3, 1, 4, 1, 5, 9], [2, 6, 5, 3, 5, 8]])


def run(claim_id: str, target: Target, profile: settings) -> Result:
    return run_claim(CATALOG[claim_id], target, profile=profile)


# ------------------------------------------------------------------------------------------ the capability
@pytest.mark.parametrize("preset", ["llama-tiny", "mqa-sinusoidal", "gpt2-tiny", "bloom-tiny"])
def test_reference_head_outputs_through_W_O_are_the_attention_sublayers_output(preset: str) -> None:
    t = ReferenceTarget.from_preset(preset, dtype=torch.float64)
    cfg = t.config()
    for layer in range(cfg.n_layers):
        v, mixed = t.attention_values(layer, IDS)
        assert tuple(v.shape) == (2, cfg.kv_heads, 6, cfg.head_dim)
        assert tuple(mixed.shape) == (2, cfg.n_heads, 6, cfg.head_dim)
        attn = cast(Block, t.model.blocks[layer]).attn
        h = t.residual_states(IDS)[layer]
        out = t.sublayers(layer).attention(t.sublayers(layer).norm1(h))
        assert_close(linear(merge_heads(mixed), attn.W_O, attn.b_O), out, CLASSES["float64"], f"{preset} {layer}")


@pytest.mark.parametrize("family", ["llama", "gpt2", "phi3", "qwen2", "mistral"])
@pytest.mark.parametrize("implementation", ["eager", "sdpa"])
def test_hf_values_and_head_outputs_equal_the_references_for_the_same_weights(family: str,
                                                                              implementation: str) -> None:
    """Captured through AttentionInterface from HF's own call (any implementation) == the reference's seams, within
    float32's tolerance: HF's norms compute in float32 whatever the model's dtype."""
    model = build_hf(family)
    model.set_attn_implementation(implementation)
    hf = HFTarget(model)
    ref = ReferenceTarget(hf.reference_model())
    for layer in range(hf.config().n_layers):
        for got, want in zip(hf.attention_values(layer, IDS), ref.attention_values(layer, IDS), strict=True):
            assert_close(got, want, CLASSES["float32"], f"{family} ({implementation}) layer {layer}")


# ------------------------------------------------------------------------------------------ ATT-5
class _SwappedHeads(Target):
    """A correct target whose head outputs come back with heads 0 and 1 exchanged: what a kernel that writes each
    head's result to another head's slot (a stride or layout bug) hands over."""

    def __init__(self, inner: Target) -> None:
        self.inner, self.name, self.vocab_size = inner, f"swapped({inner.name})", inner.vocab_size
        self.dtype, self.device, self.tolerance = inner.dtype, inner.device, inner.tolerance

    def logits(self, ids: Tensor, attention_mask: Tensor | None = None) -> Tensor:
        return self.inner.logits(ids, attention_mask)

    def attention_weights(self, ids: Tensor, attention_mask: Tensor | None = None) -> tuple[Tensor, ...]:
        return self.inner.attention_weights(ids, attention_mask)

    def residual_states(self, ids: Tensor, attention_mask: Tensor | None = None) -> tuple[Tensor, ...]:
        return self.inner.residual_states(ids, attention_mask)

    def attention_values(self, layer: int, ids: Tensor) -> tuple[Tensor, Tensor]:
        v, mixed = self.inner.attention_values(layer, ids)
        return v, mixed[:, [1, 0, *range(2, mixed.shape[1])]]


@pytest.mark.parametrize("target", [ReferenceTarget.from_preset("llama-tiny"), HFTarget(build_hf("llama"))],
                         ids=["reference", "hf"])
def test_att_5_runs_on_the_targets_own_pass_without_a_converter(target: Target) -> None:
    r = run("ATT-5", OpaqueTarget(target), PASS)
    assert r.status == PARTLY and "build" in r.detail, r.detail
    assert run("ATT-5", _SwappedHeads(target), FAIL).status == FAILED


def test_att_5_fails_on_grouped_heads_tiled_without_a_converter() -> None:
    r = run("ATT-5", OpaqueTarget(build_mutant("gqa-tiled-heads")), FAIL)
    assert r.status == FAILED and "head outputs leave the convex hull" in r.detail, r.detail


def test_att_5_checks_an_sdpa_kernels_output_against_weights_from_its_own_queries_and_keys() -> None:
    model = build_hf("llama")
    model.set_attn_implementation("sdpa")
    assert run("ATT-5", HFTarget(model), PASS).status == PASSED


# ------------------------------------------------------------------------------------------ SOFT-7
def test_soft_7_catches_an_attention_softmax_without_max_subtraction_as_an_opaque_target() -> None:
    mutant = "attention-softmax-unstable"
    for target in (build_mutant(mutant), OpaqueTarget(build_mutant(mutant))):
        r = run("SOFT-7", target, FAIL)
        assert r.status == FAILED and "attention" in r.detail and "not finite" in r.detail, r.detail


class _NoSoftmax(Target):
    """The reference without its own softmax: only the attention part of SOFT-7 can run."""

    def __init__(self, inner: ReferenceTarget) -> None:
        self.inner, self.name, self.vocab_size = inner, "no-softmax", inner.vocab_size

    def logits(self, ids: Tensor, attention_mask: Tensor | None = None) -> Tensor:
        return self.inner.logits(ids, attention_mask)

    def embedding_matrix(self) -> Tensor:
        return self.inner.embedding_matrix()

    def sublayers(self, layer: int) -> Sublayers:
        return self.inner.sublayers(layer)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16], ids=str)
def test_soft_7_attention_part_passes_on_the_reference(dtype: torch.dtype) -> None:
    for preset in ("llama-tiny", "gpt2-tiny", "bloom-tiny"):
        assert run("SOFT-7", ReferenceTarget.from_preset(preset, dtype=dtype), PASS).status == PASSED, preset


def test_soft_7_names_the_part_it_cannot_run() -> None:
    r = run("SOFT-7", _NoSoftmax(ReferenceTarget.from_preset("llama-tiny")), PASS)
    assert r.status == PARTLY and "softmax" in r.detail, r.detail
    r = run("SOFT-7", HFTarget(build_hf("falcon")), PASS)  # Falcon's layer layout has no sublayers
    assert r.status == PARTLY and "sublayers" in r.detail, r.detail
