"""The ``tied_embeddings`` capability (issue #12): a model's own declaration that its output matrix is tied to its
embedding table (HF's ``config.tie_word_embeddings``), so OUT-3 runs without a converter to the reference's config,
and fails a model that declares tying it does not have."""

from __future__ import annotations

import pytest
import torch
from hypothesis import Phase, settings

from spec.catalog import CATALOG, load_all
from spec.runner import FAILED, PASSED, run_claim
from spec.target import Target
from spec.targets.hf_presets import build_hf
from spec.targets.hf_target import HFTarget
from spec.targets.mutants import build as build_mutant
from spec.targets.opaque import OpaqueTarget
from spec.targets.reference_target import ReferenceTarget

load_all()

PASS = settings(max_examples=8, derandomize=True, database=None)
FAIL = settings(max_examples=30, derandomize=True, database=None,
                phases=[Phase.explicit, Phase.reuse, Phase.generate])


@pytest.mark.parametrize("family", ["gpt2", "llama", "gemma", "phi3", "opt", "bloom"])
def test_an_hf_models_declaration_is_its_config_and_its_weights(family: str) -> None:
    """tie_word_embeddings as the model declares it == the converted config's tying == whether U is E^T's storage."""
    t = HFTarget(build_hf(family))
    assert t.tied_embeddings() == t.config().tied_embeddings
    shares = t.unembedding()[0].untyped_storage().data_ptr() == t.embedding_matrix().untyped_storage().data_ptr()
    assert t.tied_embeddings() == shares, family


@pytest.mark.parametrize("target", [HFTarget(build_hf("gpt2")), HFTarget(build_hf("llama")),
                                    ReferenceTarget.from_preset("gpt2-tiny")], ids=["hf-gpt2", "hf-llama", "ref"])
def test_out_3_runs_on_the_declaration_alone(target: Target) -> None:
    opaque = OpaqueTarget(target)
    assert "config" not in opaque.capabilities and "tied_embeddings" in opaque.capabilities
    assert run_claim(CATALOG["OUT-3"], opaque, profile=PASS).status == PASSED


def test_out_3_fails_a_model_that_declares_a_tie_it_lost_without_a_converter() -> None:
    r = run_claim(CATALOG["OUT-3"], OpaqueTarget(build_mutant("tied-unembedding-lost")), profile=FAIL)
    assert r.status == FAILED and "(tied): U vs E^T" in r.detail, r.detail


class _SaysUntied(ReferenceTarget):
    """A tied reference whose declaration contradicts its config."""

    def tied_embeddings(self) -> bool:
        return False


def test_out_3_fails_when_declaration_and_config_disagree() -> None:
    model = ReferenceTarget.from_preset("gpt2-tiny", dtype=torch.float32).model
    r = run_claim(CATALOG["OUT-3"], _SaysUntied(model), profile=FAIL)
    assert r.status == FAILED and "declares tied_embeddings=False" in r.detail, r.detail
