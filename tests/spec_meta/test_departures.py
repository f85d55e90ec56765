"""Declared departures (spec.target.Departures): architectures that change a documented formula on purpose, and say so.

HF families with no converter and no preset here (Qwen 3, Granite, Cohere, Gemma 2), built from tiny configs with
seeded random weights: correct models that failed ATT-1, ATT-2, OUT-1, RES-1 and BLK-1 before their declarations
were read. Each must pass, report what it declared, and fail again as a port that ignores its own declaration
(the module attribute HF's forward reads set back to the documents' value) or breaks the step the claim checks.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import pytest
import torch
from hypothesis import Phase, settings
from torch import nn

from spec.catalog import CATALOG, load_all
from spec.runner import Result, run_claim
from spec.target import Departures, NotExposed
from spec.targets.hf_presets import random_hf_model
from spec.targets.hf_target import HFTarget
from spec.targets.reference_target import ReferenceTarget

pytestmark = pytest.mark.hf
transformers = pytest.importorskip("transformers")
load_all()

PASS = settings(max_examples=6, derandomize=True, database=None)
FAIL = settings(max_examples=20, derandomize=True, database=None, phases=[Phase.explicit, Phase.reuse, Phase.generate])
TINY: dict[str, Any] = {"vocab_size": 97, "hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 4,
                        "num_key_value_heads": 2, "intermediate_size": 64, "max_position_embeddings": 64,
                        "bos_token_id": 1, "eos_token_id": 2, "pad_token_id": 0}
FAMILIES: dict[str, tuple[str, dict[str, Any]]] = {
    "qwen3": ("Qwen3Config", {"head_dim": 8}),  # q_norm, k_norm on each head after the projections
    "granite": ("GraniteConfig", {"attention_multiplier": 0.3, "residual_multiplier": 0.5, "logits_scaling": 4.0,
                                  "embedding_multiplier": 2.0}),
    "phi": ("PhiConfig", {"qk_layernorm": True, "partial_rotary_factor": 0.5}),  # LayerNorm on [B, H, T, d_head]
    "cohere": ("CohereConfig", {"logit_scale": 0.0625}),
    "gpt_oss": ("GptOssConfig", {"head_dim": 8, "num_local_experts": 4, "num_experts_per_tok": 2,
                                 "sliding_window": 64}),  # a learned sink logit per head in every softmax
    "bitnet": ("BitNetConfig", {}),  # attn_sub_norm: the heads' mix normalised before W_O
    # caps small enough that tanh bends these scores and logits (Gemma 2's own 50 and 30 barely would)
    "gemma2": ("Gemma2Config", {"head_dim": 8, "query_pre_attn_scalar": 16, "attn_logit_softcapping": 1.0,
                                "final_logit_softcapping": 2.0, "sliding_window": 64}),
}


def _target(family: str, edit: Callable[[nn.Module], None] | None = None) -> HFTarget:
    config_class, extra = FAMILIES[family]
    model = random_hf_model(getattr(transformers, config_class)(**(TINY | extra)), seed=0)
    if edit is not None:
        edit(model)
    return HFTarget(model, name=f"hf-config:{family}")


def _run(claim: str, target: HFTarget, profile: settings) -> Result:
    return run_claim(CATALOG[claim], target, profile=profile)


def test_declarations_are_read_from_the_config() -> None:
    assert _target("granite").departures() == Departures(attn_scale=0.3, logit_scale=0.25, residual_scale=0.5)
    assert _target("cohere").departures() == Departures(logit_scale=0.0625)
    assert _target("gemma2").departures() == Departures(attn_scale=0.25, attn_softcap=1.0, logit_softcap=2.0)
    assert _target("qwen3").departures() == Departures(qk_norm=True)
    assert _target("phi").departures() == Departures(qk_norm=True)
    assert _target("gpt_oss").departures() == Departures(attn_sinks=True)
    assert _target("bitnet").departures() == Departures(attn_sub_norm=True)
    assert HFTarget(random_hf_model(transformers.LlamaConfig(**TINY), seed=0)).departures().declared() == {}
    # a declaration that is not a number (MPT's logit_scale rule) is not read as one, and does not crash the reading
    mpt = transformers.MptConfig(d_model=32, n_heads=4, n_layers=2, vocab_size=97, max_seq_len=64,
                                 logit_scale="inv_sqrt_d_model")
    assert HFTarget(random_hf_model(mpt, seed=0)).departures() == Departures()
    # the reference's own declaration: config.attn_scale (GPT-2's scale_attn_weights = False converts to 1.0)
    assert ReferenceTarget.from_preset("llama-tiny").departures() == Departures()


@pytest.mark.parametrize(("family", "claim", "noted"), [
    ("qwen3", "ATT-1", "queries and keys"), ("phi", "ATT-1", "queries and keys"),
    ("granite", "ATT-2", "attention scale"), ("granite", "OUT-1", "logit scale"),
    ("granite", "RES-1", "residual scale"), ("granite", "BLK-1", "residual scale"),
    ("cohere", "OUT-1", "logit scale"),
    ("gemma2", "ATT-2", "attention scores"), ("gemma2", "OUT-1", "logit soft cap"),
    ("gpt_oss", "ATT-2", "attention sinks"), ("gpt_oss", "ATT-3", "attention sinks"),
    ("gpt_oss", "ATT-5", "attention sinks"),
])
def test_a_declared_departure_passes_and_is_reported(family: str, claim: str, noted: str) -> None:
    r = _run(claim, _target(family), PASS)
    assert r.status in ("passed", "partly run"), (r.detail, r.counterexample)
    assert r.examples >= 1
    assert noted in r.notes, r.notes


def _each(kind: str, attribute: str, value: object) -> Callable[[nn.Module], None]:
    """Set ``attribute`` on every module whose class name ends with ``kind`` (what HF's forward reads)."""
    def edit(model: nn.Module) -> None:
        for module in model.modules():
            if type(module).__name__.endswith(kind):
                setattr(module, attribute, value)
    return edit


def _nonlinear_q_proj(model: nn.Module) -> None:
    """A port whose query projection is not linear (tanh on its output), before the QK-norm."""
    for module in model.modules():
        if type(module).__name__.endswith("Attention"):
            module.q_proj.register_forward_hook(lambda _m, _args, out: torch.tanh(3 * out))


@pytest.mark.parametrize(("family", "claim", "edit"), [
    ("qwen3", "ATT-1", _nonlinear_q_proj),
    ("phi", "ATT-1", _nonlinear_q_proj),
    ("granite", "ATT-2", _each("Attention", "scaling", 8 ** -0.5)),  # attention_multiplier ignored
    ("granite", "RES-1", _each("DecoderLayer", "residual_multiplier", 1.0)),
    ("granite", "BLK-1", _each("DecoderLayer", "residual_multiplier", 1.0)),
    ("cohere", "OUT-1", _each("ForCausalLM", "logit_scale", 1.0)),  # logit_scale ignored
    ("gemma2", "ATT-2", _each("Attention", "attn_logit_softcapping", None)),  # the soft cap ignored
    ("gemma2", "ATT-2", _each("Attention", "scaling", 8 ** -0.5)),  # query_pre_attn_scalar ignored
], ids=["qwen3-ATT-1-nonlinear-projection", "phi-ATT-1-nonlinear-projection", "granite-ATT-2-multiplier-ignored",
        "granite-RES-1-multiplier-ignored",
        "granite-BLK-1-multiplier-ignored", "cohere-OUT-1-logit-scale-ignored", "gemma2-ATT-2-softcap-ignored",
        "gemma2-ATT-2-pre-attn-scalar-ignored"])
def test_a_port_that_ignores_its_declaration_fails(family: str, claim: str, edit: Callable[[nn.Module], None]) -> None:
    r = _run(claim, _target(family, edit), FAIL)
    assert r.status == "failed", (r.status, r.detail)


@pytest.mark.parametrize(("family", "tokens"), [("qwen3", 5), ("phi", 5), ("phi", 4)],
                         ids=["qwen3-token-major", "phi-head-major", "phi-heads-equal-tokens"])
def test_projections_are_the_q_and_k_projections_outputs(family: str, tokens: int) -> None:
    """projections() is what q_proj and k_proj computed from the layer's normalised input, by HF's own modules,
    token-major whichever layout the norm took (Qwen 3: [B, T, H, d_head]; Phi: [B, H, T, d_head], and with 4 heads
    and 4 tokens the axis is told by a pass with one token more)."""
    target = _target(family)
    ids = torch.tensor([[3, 14, 15, 92, 65][:tokens]])
    layer = target.model.model.layers[1]
    x = layer.input_layernorm(target.residual_states(ids)[1])
    q, k = target.projections(1, ids)
    torch.testing.assert_close(q, layer.self_attn.q_proj(x), atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(k, layer.self_attn.k_proj(x), atol=1e-6, rtol=1e-6)
    assert q.shape == (1, tokens, 4 * 8) and k.shape[:2] == (1, tokens)
    assert not math.isclose(float(q.norm()), float(target.queries_keys(1, ids)[0].norm()))  # not the normed ones


def test_a_config_the_converter_cannot_express_is_not_exposed() -> None:
    """Llama 3.1's scaled rotary embedding (rope_type llama3) has a converter family but no reference config: config
    is not exposed (naming the field) and the claims take their paths without it. The converter's error used to
    escape from config() and fail 14 claims of a correct model (EMB-1, ATT-2, BLK-1 among them)."""
    rope = {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
            "original_max_position_embeddings": 16}
    target = HFTarget(random_hf_model(transformers.LlamaConfig(**TINY, rope_scaling=rope), seed=0))
    assert not {"config", "reference_model", "build"} & target.capabilities
    with pytest.raises(NotExposed, match="rope_type"):
        target.config()
    assert target.departures() == Departures()
    for claim in ("EMB-1", "ATT-2", "BLK-1"):
        r = _run(claim, target, PASS)
        assert r.status == "passed", (claim, r.status, r.detail)


class _SinksMisread(HFTarget):
    """An adapter that declares sinks but hands ATT-2 logits of 0 instead of the model's."""

    def attention_sinks(self, layer: int) -> torch.Tensor:
        return torch.zeros_like(super().attention_sinks(layer))


def test_sinks_are_the_models_own() -> None:
    """ATT-2 computes with the sink logits the target gives, the model's own ``sinks`` parameter: other values fail,
    and so does a model with sinks that does not declare them (the documents' rows sum to 1)."""
    target = _target("gpt_oss")
    layer = target.model.model.layers[1].self_attn
    torch.testing.assert_close(target.attention_sinks(1), layer.sinks.detach(), atol=0, rtol=0)
    assert _run("ATT-2", _SinksMisread(target.model), FAIL).status == "failed"

    class Undeclared(HFTarget):
        def departures(self) -> Departures:
            return Departures()

    for claim in ("ATT-2", "ATT-3"):
        assert _run(claim, Undeclared(target.model), FAIL).status == "failed", claim


@pytest.mark.parametrize("claim", ["ATT-1", "SOFT-7"])
def test_a_sub_norm_skips_only_the_half_it_breaks(claim: str) -> None:
    """BitNet normalises the heads' mix before W_O: ATT-1's values half and SOFT-7's scaling half are skipped by name
    (they failed a correct model), the rest of each claim runs; undeclared, the claim fails as before."""
    target = _target("bitnet")
    r = _run(claim, target, PASS)
    assert r.status == "partly run" and "attn_sub_norm" in r.detail, (r.status, r.detail)

    class Undeclared(HFTarget):
        def departures(self) -> Departures:
            return Departures()

    assert _run(claim, Undeclared(target.model), FAIL).status == "failed"


@pytest.mark.parametrize("by_layer", [True, False], ids=["declared", "ignored"])
def test_gpt2_scale_by_inverse_layer(by_layer: bool) -> None:
    """GPT-2's scale_attn_by_inverse_layer_idx divides layer l's scores by l + 1, as its config declares (the converter
    cannot express it, so only the declaration tells): ATT-2 passes; a port that ignores it fails at layer >= 1.
    scale_attn_weights = False (no 1/sqrt(d_head)) is read from the config too."""
    config = transformers.GPT2Config(vocab_size=97, n_embd=32, n_layer=2, n_head=4, n_positions=64,
                                     scale_attn_by_inverse_layer_idx=True, scale_attn_weights=False,
                                     bos_token_id=1, eos_token_id=2)
    model = random_hf_model(config, seed=0)
    target = HFTarget(model)
    assert target.departures() == Departures(attn_scale=1.0, attn_scale_by_layer=True)
    if not by_layer:  # HF divides each layer's scaling at init: a port that does not has scaling 1 everywhere
        _each("Attention", "scaling", 1.0)(model)
    r = _run("ATT-2", target, PASS if by_layer else FAIL)
    assert r.status == ("passed" if by_layer else "failed"), (r.status, r.detail)
