"""Model edits: handles on a target's weights that claims build, edit or rebuild.

``live_model`` returns the reference Transformer a built target computes with, checked to be
live, so a claim can relabel or edit weights in place (TOK-5, EMB-6, EMB-7, ATT-5, ATT-6);
``independent_reference`` builds a fresh reference Transformer from the target's converted
weights on the explicit attention path (REF-1, and bench/bench_memory.py). They
live outside the claim modules because several claims share them: a claim module imports
helpers (this module, spec.oracles, spec.strategies, ...), never another claim module.
Padded batches are drawn inputs, not edits: see ``spec.strategies.padded_batch``."""

from __future__ import annotations

from typing import NoReturn

import torch

from reference.model import Transformer
from spec.strategies import generator
from spec.target import NotExposed, Target


@torch.no_grad()
def live_model(sub: Target) -> Transformer:
    """The built target's weights as the reference Transformer it computes with, ready to be edited in place.

    A claim that relabels or edits weights needs a handle on them; the protocol's handle
    is ``reference_model()``. Edits reach the target only when that is the model the
    target runs (true of ReferenceTarget; a converter that copies weights is not, nor one that
    derives a weight, e.g. Gemma's norm gain 1 + w). This is checked, not assumed: E is shifted
    by seeded noise and the target's logits must move; every weight is shifted and must read back
    shifted from a fresh ``reference_model()`` (a converter reads the target's live weights again).
    All weights are shifted before that one fresh conversion, not one conversion per weight (a
    claim building a model per example converted it ~20 times per example), then restored bit for
    bit from copies taken before any shift (a weight that is a view of another, a tied W_U, included).
    Otherwise the claim reports "not exposed", naming the first weight whose edit did not reach it.
    These are built models of a claim's drawn sizes: the copies kept for restoring are small.
    """
    model = sub.reference_model()
    probe = torch.arange(min(3, model.cfg.vocab_size), device=sub.device)[None]
    weights = list(model.named_parameters())
    saved = [w.detach().clone() for _, w in weights]
    try:
        for name, weight in weights:
            before = sub.logits(probe) if name == "embed.E" else None
            noise = torch.randn(weight.shape, generator=generator(12345), dtype=torch.float64)
            weight.add_(noise.to(device=weight.device, dtype=weight.dtype))
            if before is not None and torch.equal(sub.logits(probe), before):
                _not_live(name)
        seen = dict(sub.reference_model().named_parameters())
        for name, weight in weights:  # a fresh view of live weights shares their storage or holds their values
            if name not in seen or not torch.equal(seen[name].detach(), weight.detach()):
                _not_live(name)
    finally:
        for (_, weight), value in zip(weights, saved, strict=True):
            weight.copy_(value)
    return model


def _not_live(name: str) -> NoReturn:
    raise NotExposed("reference_model", f"the built target's reference_model() holds a copy of {name}: edits to it "
                                        "do not reach the target (a live weight handle is needed)")


def independent_reference(target: Target) -> Transformer:
    """A fresh reference Transformer loaded from the target's converted weights, explicit attention, eval mode."""
    try:
        converted = target.reference_model()
    except ValueError as exc:  # reference.convert's UnsupportedConfig: the wiring is not expressible
        if type(exc).__name__ == "UnsupportedConfig":
            raise NotExposed("reference_model", str(exc)) from exc
        raise
    # Built on the meta device and given the converted tensors themselves (assign=True): a new module with its
    # own forward path, holding the same weights, so checking a model never holds its weights twice.
    fresh = Transformer(converted.cfg, device="meta", dtype=converted.dtype)
    fresh.load_state_dict(converted.state_dict(), strict=True, assign=True)
    fresh.attention_impl = "explicit"
    return fresh.eval()
