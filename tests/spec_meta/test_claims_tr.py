"""Meta-tests of the TR claims (spec/claims/tr.py).

- Every TR claim passes on SmolLM2 through the reference's GGUF loader (``smollm2``) and
  through transformers (``smollm2:hf``).
- On random weights every TR claim reports "needs a trained model", never passed or failed.
- Every TR claim fails on a wrong trained target: SmolLM2 with one method overridden by a
  realistic bug (residual states read after the norm, embedding rows rescaled to one
  length, a shuffled unembedding, logits off by one vocabulary slot, embedding rows off
  by one).

The SmolLM2 tests skip, saying how to get the model, when it cannot be found; with
NEXT_TOKEN_SPEC_REQUIRE_TRAINED=1 (CI) they fail instead. The models are loaded once
per process (spec.targets.smollm2 caches them, so tests/reference/test_gguf.py shares them).
"""

from __future__ import annotations

from typing import Any

import pytest
import torch
from hypothesis import settings
from torch import Tensor

from spec.catalog import CATALOG, load_all
from spec.runner import FAILED, NEEDS_TRAINED, PASSED, run_claim
from spec.targets import smollm2
from spec.targets.reference_target import ReferenceTarget

load_all()
TR = [f"TR-{i}" for i in range(1, 8)]
PROFILE = settings(max_examples=30, derandomize=True, database=None)


@pytest.fixture(scope="module")
def ref(smollm2_available: None) -> ReferenceTarget:
    return smollm2.load_reference()


@pytest.fixture(scope="module")
def hf(smollm2_available: None) -> Any:
    pytest.importorskip("transformers")
    return smollm2.load_hf()


@pytest.mark.parametrize("claim_id", TR)
def test_passes_on_smollm2_reference_loader(ref: ReferenceTarget, claim_id: str) -> None:
    r = run_claim(CATALOG[claim_id], ref, profile=PROFILE)
    assert r.status == PASSED, (r.detail, r.counterexample)
    assert r.examples >= 1


@pytest.mark.hf
@pytest.mark.parametrize("claim_id", TR)
def test_passes_on_smollm2_transformers(hf: Any, claim_id: str) -> None:
    r = run_claim(CATALOG[claim_id], hf, profile=PROFILE)
    assert r.status == PASSED, (r.detail, r.counterexample)


@pytest.mark.parametrize("preset", ["llama-tiny", "gpt2-tiny"])
@pytest.mark.parametrize("claim_id", TR)
def test_random_weights_need_a_trained_model(claim_id: str, preset: str) -> None:
    r = run_claim(CATALOG[claim_id], ReferenceTarget.from_preset(preset), profile=PROFILE)
    assert r.status == NEEDS_TRAINED, r.detail
    assert r.examples == 0


# ------------------------------------------------------------------------------ wrong trained targets


class _Wrong(ReferenceTarget):
    """SmolLM2 (the same model object, its tokenizer, trained) with one method replaced by a bug."""

    def __init__(self, base: ReferenceTarget) -> None:
        super().__init__(base.model, name=f"smollm2[{type(self).__name__}]", tokenizer=base.tokenizer(),
                         trained=True)


class StatesAfterNorm(_Wrong):
    """Residual states read after the final norm instead of before it (a hook on the wrong side)."""

    def residual_states(self, ids: Tensor, attention_mask: Tensor | None = None) -> tuple[Tensor, ...]:
        return tuple(self.model.final_norm(s) for s in super().residual_states(ids, attention_mask))


class RowsOfOneLength(_Wrong):
    """Embedding rows rescaled to the median norm (a 'normalised embedding' export)."""

    def embedding_matrix(self) -> Tensor:
        E = super().embedding_matrix()
        norms = E.norm(dim=1, keepdim=True)
        return E / norms * norms.median()


class ShuffledUnembedding(_Wrong):
    """The unembedding's columns in another vocabulary order than the logits use."""

    def unembedding(self) -> tuple[Tensor, Tensor | None]:
        if not hasattr(self, "_shuffled"):
            U, b = super().unembedding()
            perm = torch.randperm(U.shape[1], generator=torch.Generator().manual_seed(0))
            self._shuffled = (U[:, perm].contiguous(), b)
        return self._shuffled


class LogitsOffByOne(_Wrong):
    """Logit i holds token i - 1's score (an off-by-one between vocabulary and output slots)."""

    def logits(self, ids: Tensor, attention_mask: Tensor | None = None) -> Tensor:
        return super().logits(ids, attention_mask).roll(1, dims=-1)


class EmbeddingOffByOne(_Wrong):
    """Row i of the exposed table is token i - 1's vector."""

    def embedding_matrix(self) -> Tensor:
        if not hasattr(self, "_rolled"):
            self._rolled = super().embedding_matrix().roll(1, dims=0)
        return self._rolled


WRONG = {
    "TR-1": StatesAfterNorm,
    "TR-2": RowsOfOneLength,
    "TR-3": ShuffledUnembedding,
    "TR-4": LogitsOffByOne,
    "TR-5": EmbeddingOffByOne,
    "TR-6": LogitsOffByOne,
    "TR-7": LogitsOffByOne,
}


@pytest.mark.parametrize("claim_id", TR)
def test_fails_on_a_wrong_trained_target(ref: ReferenceTarget, claim_id: str) -> None:
    wrong = WRONG[claim_id](ref)
    r = run_claim(CATALOG[claim_id], wrong, profile=PROFILE)
    assert r.status == FAILED, f"{claim_id} did not fail on {wrong.name}: {r.status} {r.detail}"
    assert r.counterexample


class _SplitsWords:
    """SmolLM2's tokenizer, except that every word of two or more characters after a space is two tokens."""

    def __init__(self, base: Any) -> None:
        self.base = base
        self.vocab_size = base.vocab_size

    def encode(self, text: str) -> list[int]:
        ids = self.base.encode(text)
        return [*ids, ids[-1]] if len(ids) == 1 and len(text.strip()) > 1 else ids

    def decode(self, ids: list[int]) -> str:
        return str(self.base.decode(ids))

    def id_to_token(self, i: int) -> str:
        return str(self.base.id_to_token(i))


class WordsSplit(_Wrong):
    """A correct model whose tokenizer makes no stated word a single token: the TR claims can check nothing."""

    def tokenizer(self) -> Any:
        return _SplitsWords(super().tokenizer())


@pytest.mark.parametrize("claim_id", ["TR-4", "TR-5", "TR-6", "TR-7"])
def test_a_tokenizer_that_splits_the_stated_words_fails_never_passes_or_hides(ref: ReferenceTarget,
                                                                               claim_id: str) -> None:
    """Issue #12: a stated set with too few usable members is a failure (not "not exposed", not inconclusive)."""
    r = run_claim(CATALOG[claim_id], WordsSplit(ref), profile=PROFILE)
    assert r.status == FAILED, (claim_id, r.status, r.detail)
    assert "too few" in r.detail or "the claim needs" in r.detail, r.detail
