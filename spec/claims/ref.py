"""REF: agreement with the reference built from the target's own weights (claim REF-1).

``target.reference_model()`` converts the target's configuration and weights into a
reference ``Transformer`` (for HuggingFace models, ``reference.convert.from_hf``). The
claim never trusts that object's own forward path: it loads the converted state dict
into a freshly constructed ``Transformer(cfg)`` on the explicit attention path (the
math spelled out, no fused kernel) and runs its own cached-decoding loop. The fresh
model shares the converted tensors (meta-device construction, ``assign=True``), and
the converters share the target's (views, see ``reference.convert``): REF-1 never
copies a model's weights. For the
reference target, whose reference_model() is its own model, this makes REF-1 a check
of the fast path against the explicit one and of the target's decode against an
independent cache loop.
"""

from __future__ import annotations

import torch
from hypothesis import strategies as st
from torch import Tensor

from reference.model import Transformer
from spec.catalog import claim
from spec.edits import independent_reference
from spec.strategies import padded_batch, target_ids
from spec.target import NotExposed, Target, skip_part
from spec.tolerance import CLASSES, assert_close, assert_logits_close, check


@torch.no_grad()
def cached_decode(model: Transformer, ids: Tensor, prefill: int, mask: Tensor | None = None) -> Tensor:
    """The reference's logits fed ids[:, :prefill] at once, then one token at a time through its KV cache."""
    real = torch.ones_like(ids, dtype=torch.bool) if mask is None else mask.bool()
    cache = model.new_cache(ids.shape[0], ids.shape[1])
    out = [model(ids[:, :prefill], real[:, :prefill], cache).logits]
    for t in range(prefill, ids.shape[1]):
        out.append(model(ids[:, t:t + 1], real[:, t:t + 1], cache).logits)
    return torch.cat(out, dim=1)


@claim("REF-1", "A target whose configuration and weights convert to the reference computes the reference's "
                "logits, per-layer residual states and cached decoding.",
       source="the pipeline as all five documents describe it", needs=("reference_model",), kind="numeric",
       tolerance="the target's tolerance class: two implementations of the same math in the same dtype differ "
                 "by reduction order and fused kernels only (float32: atol = rtol = 1e-4)",
       precise="'the same pipeline' becomes: with ref = a fresh reference Transformer loaded (strict) from "
               "target.reference_model()'s state dict and run on the explicit attention path, "
               "target.logits(ids) == ref(ids).logits; where exposed, every residual state (before each block "
               "and after the last, before the final norm; n_layers + 1 of them) equals the reference's, and "
               "target.decode(ids, prefill) equals the reference's own cache loop; and on a left-padded batch "
               "with its mask, logits agree at every real position. A config the converter cannot express is "
               "reported as 'no converter for this target', never as passed.")
def ref_1(target: Target, data: st.DataObject) -> None:
    """Target and independently built reference agree on logits, residual states, decoding and padded batches."""
    ref = independent_reference(target)
    tol = CLASSES[target.tolerance]
    dev = ref.device
    ids = data.draw(target_ids(target, max_len=12, batch=data.draw(st.integers(1, 2), label="batch")), label="ids")
    with torch.no_grad():
        out = ref(ids.to(dev), return_states=True)
    assert_logits_close(target.logits(ids), out.logits, tol, "target logits vs the reference built from its weights")
    caps = target.capabilities
    if "residual_states" in caps:
        states = target.residual_states(ids)
        assert out.states is not None
        check(len(states) == len(out.states),
              f"target gives {len(states)} residual states, the reference {len(out.states)} (n_layers + 1)")
        for i, (got, want) in enumerate(zip(states, out.states, strict=True)):
            assert_close(got, want, tol, f"residual state {i} (before block {i}) vs the reference")
    if "decode" in caps:
        prefill = data.draw(st.integers(1, ids.shape[1]), label="prefill")
        assert_logits_close(target.decode(ids, prefill), cached_decode(ref, ids.to(dev), prefill), tol,
                     f"target's cached decoding vs the reference's (prefill {prefill} of {ids.shape[1]})")
    padded, mask, singles = data.draw(padded_batch(target, max_len=10), label="padded_batch")
    try:
        got = target.logits(padded, mask)
    except NotExposed as exc:  # a target that takes no attention mask: the unpadded comparisons above still count
        skip_part(exc)
        return
    with torch.no_grad():
        want = ref(padded.to(dev), mask.to(dev)).logits
    width = padded.shape[1]
    for r, row in enumerate(singles):
        start = width - row.shape[1]
        assert_logits_close(got[r, start:], want[r, start:], tol,
                     f"row {r} of a left-padded batch (padding {start}): target vs reference at real positions")
