"""The opaque view of a target (spec/targets/opaque.py, issue #12): config, reference_model and build hidden, the rest
delegated; the ``opaque:<target>`` kind. The zoo runs every mutant this way (tests/spec_meta/test_zoo.py)."""

from __future__ import annotations

from typing import cast

import pytest
import torch

from spec.catalog import CATALOG, load_all
from spec.runner import NO_CONVERTER, NOT_EXPOSED, run_claim
from spec.target import CAPABILITIES, NotExposed, Target
from spec.targets.mutants import MutantTarget, build
from spec.targets.opaque import DELEGATED, HIDDEN, OpaqueTarget
from spec.targets.registry import resolve


@pytest.mark.parametrize("spec", ["reference:llama-tiny", "mutant:residual-dropped"])
def test_opaque_target_hides_config_converter_and_build(spec: str) -> None:
    inner = resolve(spec)
    t = OpaqueTarget(inner)
    assert t.capabilities == inner.capabilities - set(HIDDEN)
    assert not set(HIDDEN) & t.capabilities and set(HIDDEN) <= inner.capabilities
    for name in HIDDEN:
        with pytest.raises(NotExposed):
            getattr(t, name)(*([inner.config()] if name == "build" else []))
    assert t.buildable(inner.config()) == inner.config()  # nothing to build: the base class's identity
    for attr in ("vocab_size", "max_positions", "tolerance", "trained", "device", "dtype", "version",
                 "max_examples", "realistic_examples"):
        assert getattr(t, attr) == getattr(inner, attr), attr
    assert t.name == f"opaque:{inner.name}"


def test_opaque_target_delegates_everything_else() -> None:
    """Every other method is the inner target's, called with the same arguments (results identical)."""
    assert set(DELEGATED) == {"logits", *CAPABILITIES} - set(HIDDEN) - {"trained"}
    inner = build("residual-dropped")
    t = OpaqueTarget(inner)
    ids = torch.randint(0, inner.vocab_size, (2, 5), generator=torch.Generator().manual_seed(0))
    mask = torch.ones(2, 5, dtype=torch.long)
    mask[0, :2] = 0
    assert torch.equal(t.logits(ids, mask), inner.logits(ids, mask))
    assert torch.equal(t.decode(ids, 2, mask), inner.decode(ids, 2, mask))
    assert torch.equal(t.embedding_matrix(), inner.embedding_matrix())
    for a, b in zip(t.residual_states(ids), inner.residual_states(ids), strict=True):
        assert torch.equal(a, b)
    x = torch.randn(1, 4, inner.config().d_model, generator=torch.Generator().manual_seed(1))
    assert torch.equal(t.sublayers(0).block(x), inner.sublayers(0).block(x))
    z = torch.randn(2, inner.vocab_size, generator=torch.Generator().manual_seed(2))
    draws = [s.sample(z, torch.Generator().manual_seed(3), 0.8, 5, 0.9) for s in (t, inner)]
    assert torch.equal(draws[0], draws[1])
    assert t.tokenizer() is inner.tokenizer()

    class Bare(Target):  # logits only: the opaque view exposes nothing more
        vocab_size = 7

    assert OpaqueTarget(Bare()).capabilities == frozenset()
    with pytest.raises(NotExposed):
        OpaqueTarget(Bare()).decode(ids, 1)


def test_opaque_kind_in_the_registry_and_ref1_has_no_converter() -> None:
    t = resolve("opaque:mutant:attn-scale-none")
    assert isinstance(t, OpaqueTarget) and isinstance(t.inner, MutantTarget)
    assert t.name == "opaque:mutant:attn-scale-none"
    load_all()
    assert run_claim(CATALOG["REF-1"], t).status == NO_CONVERTER
    assert run_claim(CATALOG["POS-2"], t).status == NOT_EXPOSED  # it needs config


def test_claims_measure_without_config_what_config_would_say() -> None:
    """On an opaque target EMB-1 and EMB-3 measure the lookup stage (a scale, a norm after the lookup) and ATT-2 takes
    the documented score form (plain or ALiBi) closer to the weights: correct models pass, a wrong row or scale
    fails."""
    from hypothesis import settings

    import reference
    from spec.targets.mutants import MUTANTS, Mutant

    load_all()
    quick = settings(settings.get_profile("ci"), max_examples=8)
    for preset in ("bloom-tiny", "gemma-tiny"):  # an embedding norm and ALiBi; a scaled lookup
        t = resolve(f"opaque:reference:{preset}")
        for c in ("EMB-1", "EMB-3", "ATT-2"):
            assert run_claim(CATALOG[c], t, profile=quick).status == "passed", (preset, c)
    off_by_one = cast(Mutant, MUTANTS["embedding-off-by-one"]).stages  # the zoo's lookup of row id - 1
    wrong_row = Mutant("off-by-one", "", "", "", "bloom-tiny", off_by_one)
    t = OpaqueTarget(MutantTarget(wrong_row, reference.build(reference.preset("bloom-tiny"))))
    for c in ("EMB-1", "EMB-3"):
        assert run_claim(CATALOG[c], t, profile=quick).status == "failed", c
    assert run_claim(CATALOG["ATT-2"], resolve("opaque:mutant:attn-scale-none"), profile=quick).status == "failed"
