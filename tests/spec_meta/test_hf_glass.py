"""Glass-box HF (issue #12): attention internals through AttentionInterface, sublayers through module hooks.

Each capability is checked against an oracle that is not the code under test: the reference model converted
from the same weights (reference/convert/, itself tested against HF logits), and HF's own eager weights.
"""

from __future__ import annotations

import pytest
import torch

from reference.convert import from_hf
from spec.target import NotExposed
from spec.targets.hf_glass import attention_calls, decoder_layers, inputs_of, layout
from spec.targets.hf_presets import HF_PRESETS, build_hf
from spec.targets.hf_target import HFTarget
from spec.targets.reference_target import ReferenceTarget
from spec.tolerance import CLASSES, assert_close

GLASS = ["llama", "gpt2", "gpt_neox", "phi", "qwen2", "gptj", "gemma", "phi3", "mistral"]
IMPLEMENTATIONS = ["eager", "sdpa"]
TOL = CLASSES["float32"]


def _pair(family: str, implementation: str) -> tuple[HFTarget, ReferenceTarget]:
    model = build_hf(family)
    model.set_attn_implementation(implementation)
    return HFTarget(model, name=f"hf:{family}"), ReferenceTarget(from_hf(model), name=f"reference of {family}")


def _ids(seed: int = 0, shape: tuple[int, int] = (2, 6)) -> torch.Tensor:
    return torch.randint(0, 90, shape, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("implementation", IMPLEMENTATIONS)
@pytest.mark.parametrize("family", GLASS)
def test_queries_and_keys_are_the_references(family: str, implementation: str) -> None:
    hf, ref = _pair(family, implementation)
    assert {"queries_keys", "attention_weights", "sublayers"} <= hf.capabilities
    ids = _ids()
    for layer in range(2):
        (q, k), (rq, rk) = hf.queries_keys(layer, ids), ref.queries_keys(layer, ids)
        assert_close(q, rq, TOL, f"{family} layer {layer}: queries")
        assert_close(k, rk, TOL, f"{family} layer {layer}: keys")


@pytest.mark.parametrize("family", GLASS)
def test_computed_weights_equal_eager_weights(family: str) -> None:
    """sdpa returns no weights: the ones computed from its recorded call equal what eager returns, padded or not."""
    eager, _ = _pair(family, "eager")
    sdpa, _ = _pair(family, "sdpa")
    ids = _ids(1, (2, 7))
    mask = torch.ones_like(ids)
    mask[0, :3] = 0
    for m in (None, mask):
        for layer, (we, ws) in enumerate(zip(eager.attention_weights(ids, m), sdpa.attention_weights(ids, m),
                                             strict=True)):
            real = (torch.ones_like(ids) if m is None else m).bool()[:, None, :, None].expand_as(we)
            assert_close(ws[real], we[real], TOL, f"{family} layer {layer} (mask {m is not None}): weights")


@pytest.mark.parametrize("implementation", IMPLEMENTATIONS)
@pytest.mark.parametrize("family", GLASS)
def test_sublayers_are_the_references(family: str, implementation: str) -> None:
    hf, ref = _pair(family, implementation)
    x = torch.randn(2, 5, hf.model.config.hidden_size, generator=torch.Generator().manual_seed(2))
    for layer in range(2):
        s, r = hf.sublayers(layer), ref.sublayers(layer)
        assert s.parallel == r.parallel, family
        for part in ("norm1", "norm2", "attention", "mlp", "block"):
            assert_close(getattr(s, part)(x), getattr(r, part)(x), TOL, f"{family} layer {layer}: {part}")


def test_capture_leaves_the_model_as_it_was() -> None:
    """The implementation is switched back, the logits are the same, and so after a forward that raised."""
    hf, _ = _pair("llama", "sdpa")
    ids = _ids()
    before = hf.logits(ids)
    hf.queries_keys(0, ids)
    with pytest.raises(RuntimeError), attention_calls(hf.model):
        raise RuntimeError("a forward pass that failed")
    assert hf.model.config._attn_implementation == "sdpa"
    assert torch.equal(hf.logits(ids), before)


@pytest.mark.parametrize("family", ["falcon", "bloom"])
def test_models_outside_the_interface_say_why(family: str) -> None:
    hf, _ = _pair(family, "eager")
    assert "queries_keys" not in hf.capabilities and "sublayers" not in hf.capabilities
    assert "attention_weights" in hf.capabilities  # eager: HF's output_attentions
    with pytest.raises(NotExposed, match="AttentionInterface"):
        hf.queries_keys(0, _ids())
    with pytest.raises(NotExposed, match="self_attn"):
        hf.sublayers(0)


def test_a_layer_with_unplaced_norms_is_not_guessed() -> None:
    """Gemma 2's layers add pre/post feed-forward norms to the Llama names: not exposed, naming them."""
    import transformers

    cfg = transformers.Gemma2Config(vocab_size=97, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                    num_attention_heads=4, num_key_value_heads=2, head_dim=8)
    why = layout(transformers.Gemma2ForCausalLM(cfg))
    assert isinstance(why, str) and "pre_feedforward_layernorm" in why


def test_a_scale_folded_into_the_queries_is_divided_out() -> None:
    """OPT computes q_proj(x) * scaling and passes scaling=1.0: the queries reported are q_proj(x), the reference's."""
    hf, ref = _pair("opt", "sdpa")
    ids = _ids()
    (q, _), (rq, _) = hf.queries_keys(0, ids), ref.queries_keys(0, ids)
    assert_close(q, rq, TOL, "opt: queries with the folded scale divided out")


@pytest.mark.parametrize("implementation", IMPLEMENTATIONS)
@pytest.mark.parametrize("family", sorted(HF_PRESETS))
def test_stopped_passes_give_hfs_own_hidden_states(family: str, implementation: str) -> None:
    """embed and residual_states stop the forward pass at the layer (or final norm) whose input they need; what
    they return is bit for bit what HF's whole pass returns as hidden_states (the last one before the final norm,
    taken by a hook on it), with and without left padding."""
    model = build_hf(family)
    if implementation == "sdpa":
        model.set_attn_implementation("sdpa")
    target = HFTarget(model, name=f"hf:{family}")
    ids = _ids(1, (2, 7))
    mask = torch.ones_like(ids)
    mask[1, :3] = 0
    with torch.no_grad():
        full = model(input_ids=ids, output_hidden_states=True).hidden_states
        assert torch.equal(target.embed(ids), full[0])
        for attention_mask in (None, mask):
            kw = target._kwargs(ids, attention_mask)
            seen: list[torch.Tensor] = []
            hook = target._final_norm.register_forward_pre_hook(lambda _m, args, seen=seen: seen.append(args[0]))
            try:
                whole = model(**kw, output_hidden_states=True).hidden_states
            finally:
                hook.remove()
            got = target.residual_states(ids, attention_mask)
            assert len(got) == len(whole)
            for i, (a, b) in enumerate(zip(got, (*whole[:-1], seen[-1]), strict=True)):
                assert torch.equal(a, b), f"{family}: state {i} differs"


def test_a_pass_that_skips_a_hooked_layer_falls_back_to_the_whole_pass() -> None:
    """inputs_of gives None (never a short or shuffled list) when a module is not called once, in order."""
    model = build_hf("llama")
    layers = decoder_layers(model)
    assert layers is not None
    ids = _ids()
    run = lambda: model(input_ids=ids, use_cache=False)  # noqa: E731
    assert inputs_of([layers[1], layers[0]], run) is None
    got = inputs_of([layers[0], layers[1]], run)
    assert got is not None and len(got) == 2
    layers[1] = layers[0]  # one layer run twice (shared weights): its second input is not the first's
    assert inputs_of([layers[0], layers[1]], run) is None
    first = inputs_of([layers[0]], run)  # stopped at its first call: the embedding, as before
    assert first is not None and torch.equal(first[0], got[0])


@pytest.mark.parametrize("implementation", IMPLEMENTATIONS)
@pytest.mark.parametrize("family", GLASS)
def test_stopped_attention_passes_record_what_the_whole_pass_does(family: str, implementation: str) -> None:
    """queries_keys and attention_values stop the pass after their layer, attention_weights before the final norm:
    each layer's query, key, value and output are bit for bit those of a whole pass with every call recorded, and
    neither the layers after the one asked for nor the unembedding run."""
    model = build_hf(family)
    model.set_attn_implementation(implementation)
    target = HFTarget(model, name=f"hf:{family}")
    ids = _ids(3, (2, 7))
    with torch.no_grad(), attention_calls(model) as whole:
        model(input_ids=ids, use_cache=False)
    head = model.get_output_embeddings()
    layers = decoder_layers(model)
    assert layers is not None and len(whole) == len(layers) >= 2
    ran: list[str] = []
    hooks = [m.register_forward_hook(lambda _m, _a, _o, name=name: ran.append(name))  # modules that finished
             for name, m in (("head", head), *((f"layer {i}", m) for i, m in enumerate(layers)))]
    try:
        for layer in range(len(layers)):
            ran.clear()
            q, k = target.queries_keys(layer, ids)
            v, mix = target.attention_values(layer, ids)
            assert ran == [f"layer {i}" for i in range(layer + 1)] * 2, ran
            assert torch.equal(q, whole[layer].queries()) and torch.equal(k, whole[layer].key)
            assert torch.equal(v, whole[layer].value) and torch.equal(mix, whole[layer].output.transpose(1, 2))
        q, k = target.queries_keys(-1, ids)  # an index outside 0..n-1: a whole pass, indexed as Python does
        assert torch.equal(q, whole[-1].queries()) and torch.equal(k, whole[-1].key)
        ran.clear()
        weights = target.attention_weights(ids)
        assert "head" not in ran
        assert all(torch.equal(w, c.probabilities()) for w, c in zip(weights, whole, strict=True))
    finally:
        for h in hooks:
            h.remove()


def test_a_stopped_attention_pass_with_shared_layers_runs_whole() -> None:
    """Layers sharing one module (the same layer listed twice) make the stopped pass's call count wrong: the whole
    pass runs and decides (here: as many calls as layers, so the capability holds)."""
    model = build_hf("llama")
    layers = decoder_layers(model)
    assert layers is not None
    layers[1] = layers[0]
    target = HFTarget(model, name="hf:llama shared")
    ids = _ids()
    with torch.no_grad(), attention_calls(model) as whole:
        model(input_ids=ids, use_cache=False)
    q, _ = target.queries_keys(0, ids)  # stopping before layers[1] is stopping before layers[0]: no call yet
    assert torch.equal(q, whole[0].queries())


def test_a_negative_layer_counts_from_the_end_on_both_targets() -> None:
    """queries_keys(-1) is the last layer's, as a list index: the reference's (which now stops its pass at the layer)
    agrees with its own queries_keys(n - 1) and with HF's."""
    hf, ref = _pair("llama", "eager")
    ids = _ids()
    n = ref.model.cfg.n_layers
    (q, k), (rq, rk), (lq, lk) = hf.queries_keys(-1, ids), ref.queries_keys(-1, ids), ref.queries_keys(n - 1, ids)
    assert torch.equal(rq, lq) and torch.equal(rk, lk)
    assert_close(q, rq, TOL, "llama layer -1: queries")
    assert_close(k, rk, TOL, "llama layer -1: keys")
