"""The ONNX Runtime peer (spec/targets/onnx_runtime.py): exported graphs compute what the torch models compute.

onnx, onnxscript and onnxruntime come with the `peers` extra, which the README's install (`.[hf,dev]`) leaves out,
like the other peers' packages. Without them the tests that export are skipped, naming what is missing; with
NEXT_TOKEN_SPEC_REQUIRE_PEERS=1 they fail instead: `nox -s peers`, which installs the extra, sets it and runs this
file, so CI runs these tests there and never skips them silently. The refusals need no peer package and always run.

Each target is exported once per process (spec.targets.onnx_runtime caches them): 25-80 s each on 2 cores at
load 6-13; the whole file took 190-222 s at load 12-15 (67-69 s of CPU).
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Callable

import pytest
import torch
from hypothesis import settings

from spec import profiles  # noqa: F401  (registers the "ci" profile)
from spec.catalog import ordered
from spec.errors import InputError
from spec.runner import PARTLY, PASSED, run_claim
from spec.target import Target
from spec.targets.registry import resolve
from spec.tolerance import CLASSES, assert_close

PEER_PACKAGES = ("onnx", "onnxscript", "onnxruntime", "transformers")
REFERENCE, HF = "onnx:reference:llama-tiny", "onnx:hf:llama"
FLOAT32 = CLASSES["float32"]


@pytest.fixture(scope="module")
def peers() -> None:
    """The peer packages must be importable: a failure under NEXT_TOKEN_SPEC_REQUIRE_PEERS=1, else a named skip."""
    missing = [name for name in PEER_PACKAGES if importlib.util.find_spec(name) is None]
    if missing:
        why = f"needs the `peers` extra (pip install -e '.[hf,peers]'): {', '.join(missing)} not installed"
        if os.environ.get("NEXT_TOKEN_SPEC_REQUIRE_PEERS", "") not in ("", "0"):
            pytest.fail(f"NEXT_TOKEN_SPEC_REQUIRE_PEERS is set but the ONNX Runtime peer {why}")
        pytest.skip(f"ONNX Runtime peer {why}")


def _batch(vocab: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Three rows of 9 IDs, two of them left-padded (4 and 1 padding tokens)."""
    ids = torch.randint(0, vocab, (3, 9), generator=torch.Generator().manual_seed(0))
    mask = torch.ones_like(ids)
    mask[0, :4] = 0
    mask[2, :1] = 0
    return ids, mask


def _agree(target: Target, logits_of: Callable[[torch.Tensor, torch.Tensor | None], torch.Tensor]) -> None:
    """Logits with and without padding, and cached decoding from every prefill, equal the torch model's."""
    ids, mask = _batch(target.vocab_size)
    want_plain, want_padded = logits_of(ids, None), logits_of(ids, mask)
    assert_close(target.logits(ids), want_plain, FLOAT32, "ONNX Runtime logits vs torch")
    got = target.logits(ids, mask)
    for r in range(ids.shape[0]):
        real = mask[r].bool()
        assert_close(got[r][real], want_padded[r][real], FLOAT32, f"row {r} of a left-padded batch vs torch")
    for prefill in range(1, ids.shape[1] + 1):
        assert_close(target.decode(ids, prefill), want_plain, FLOAT32, f"decode from prefill {prefill} vs torch")
        got = target.decode(ids, prefill, mask)
        for r in range(ids.shape[0]):
            real = mask[r].bool()
            assert_close(got[r][real], want_padded[r][real], FLOAT32, f"padded decode, prefill {prefill}, row {r}")


@pytest.mark.slow
def test_the_exported_reference_computes_the_reference(peers: None) -> None:
    target = resolve(REFERENCE)
    model = target.reference_model()  # the seeded reference:llama-tiny the graph was exported from

    @torch.no_grad()
    def logits_of(ids: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        return model(ids, None if mask is None else mask.bool()).logits

    _agree(target, logits_of)
    assert torch.equal(model.E, resolve("reference:llama-tiny").embedding_matrix())
    # E and U are read from the exported file (the lookup's table, the logits' matrix), equal to the weights bit for bit
    assert torch.equal(target.embedding_matrix(), model.E.detach())
    U, b = target.unembedding()
    assert torch.equal(U, model.W_U.detach()) and b is None
    assert target.capabilities == {"embedding_matrix", "unembedding", "decode", "config", "reference_model"}


@pytest.mark.slow
def test_the_exported_hf_model_computes_the_hf_model(peers: None) -> None:
    target = resolve(HF)
    hf = resolve("hf:llama")  # the same seeded preset, in transformers

    _agree(target, lambda ids, mask: hf.logits(ids, mask))
    assert torch.equal(target.embedding_matrix(), hf.embedding_matrix())
    U, b = target.unembedding()
    want_U, want_b = hf.unembedding()
    assert torch.equal(U, want_U) and b is None and want_b is None


@pytest.mark.slow
@pytest.mark.parametrize("spec", [REFERENCE, HF])
@pytest.mark.parametrize("claim_id", ["REF-1", "GEN-2", "OUT-3", "GEN-3"])
def test_claims_hold_on_the_onnx_targets(peers: None, spec: str, claim_id: str) -> None:
    """A few claims through the runner: REF-1 (logits, cached decoding and a padded batch against the reference from
    the same weights), GEN-2 (cache = full pass), OUT-3 (the exported E and U tied as the config says) and GEN-3,
    whose padded-logits half runs and whose padded-generate half is skipped, named (an export has no generate)."""
    claim = next(c for c in ordered() if c.id == claim_id)  # ordered() registers the catalog
    result = run_claim(claim, resolve(spec), profile=settings.get_profile("ci"), target_spec=spec,
                       profile_name="ci")
    want = PARTLY if claim_id == "GEN-3" else PASSED
    assert result.status == want, (result.status, result.detail, result.counterexample)
    assert result.examples > 0
    if claim_id == "GEN-3":
        assert "generate" in result.detail


@pytest.mark.parametrize("spec", ["onnx:llama-tiny", "onnx:reference:nope", "onnx:hf:nope", "onnx:tlens:llama-tiny",
                                  "onnx:", "onnx:hf:"])
def test_unknown_presets_are_refused_naming_the_allowed_ones(spec: str) -> None:
    with pytest.raises(InputError, match=r"unknown target onnx:.*choose one of .*onnx:reference:llama-tiny.*"
                                         r"onnx:hf:llama"):
        resolve(spec)


def test_other_dtypes_are_refused_before_anything_is_exported() -> None:
    with pytest.raises(InputError, match="float32 only"):
        resolve(REFERENCE, dtype="float64")
